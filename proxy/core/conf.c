/*
 * conf.c - load a libconfig file into a validated struct veer_conf.
 *
 * The schema is a set of tables of struct conf_field, one per libconfig
 * group: each row names a key, its type, its range and where the value
 * lands in the C struct. parse_group() walks the members of a group against
 * its table, so an unknown key, a wrong type or a value out of range is
 * reported with the file and line of the offending setting. Checks that
 * involve several keys (shares against backends, listeners against pools,
 * duplicate names) run after the walk of the group that holds them.
 * Addresses are numeric: nothing here resolves a name.
 *
 * The modules' keys are not in these tables: each module declares its own
 * rows in a struct conf_section, and conf_sections[] (the modules' table)
 * lists them. A key of the top level, or of one of the top-level groups,
 * that is not in conf.c's table is looked up there; what it parses to goes
 * into that section's object in veer_conf.sections.
 */
#include "conf.h"
#include "path.h"
#include "routes.h"
#include "veer.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Where we are while loading one file, and where errors go. */
struct conf_loader {
    const char *file; /* the path as the caller gave it */
    char *err;
    size_t errlen;
    char where[256];        /* scratch for where() */
    struct veer_conf *conf; /* being filled: its sections' objects take the modules' keys */
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/* Write "FILE:LINE: message" into the caller's buffer, if it gave one. */
static void verror(struct conf_loader *ld, const char *file, int line, const char *fmt, va_list ap)
{
    int n;

    if (ld->err == NULL || ld->errlen == 0)
        return;
    n = snprintf(ld->err, ld->errlen, "%s:%d: ", file, line);
    if (n < 0 || (size_t)n >= ld->errlen)
        return;
    vsnprintf(ld->err + n, ld->errlen - n, fmt, ap);
}

/*
 * Report an error at setting s: its own file (it may come from an
 * @include) and line. The root group has no line of its own; errors about
 * the file as a whole point at line 1. Always returns -1.
 */
__attribute__((format(printf, 3, 4))) static int
fail(struct conf_loader *ld, const config_setting_t *s, const char *fmt, ...)
{
    const char *file = ld->file;
    int line = 1;
    va_list ap;

    if (s != NULL && !config_setting_is_root(s)) {
        line = (int)config_setting_source_line(s);
        if (config_setting_source_file(s) != NULL)
            file = config_setting_source_file(s);
    }
    va_start(ap, fmt);
    verror(ld, file, line, fmt, ap);
    va_end(ap);
    return -1;
}

/* Same, at an explicit file and line (syntax errors, unreadable files). */
__attribute__((format(printf, 4, 5))) static int fail_at(struct conf_loader *ld, const char *file,
                                                         int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror(ld, file, line, fmt, ap);
    va_end(ap);
    return -1;
}

/* Append the dotted path of s ("pools[0].backends[1].weight") to buf. */
static void build_path(const config_setting_t *s, char *buf, size_t len)
{
    size_t n;

    if (config_setting_is_root(s))
        return;
    build_path(config_setting_parent(s), buf, len);
    n = strlen(buf);
    if (n >= len - 1)
        return;
    if (config_setting_name(s) != NULL)
        snprintf(buf + n, len - n, "%s%s", n ? "." : "", config_setting_name(s));
    else
        snprintf(buf + n, len - n, "[%d]", config_setting_index(s));
}

/*
 * The path of s for an error message, in a buffer owned by the loader and
 * valid until the next call (so one per message).
 */
static const char *where(struct conf_loader *ld, const config_setting_t *s)
{
    ld->where[0] = '\0';
    build_path(s, ld->where, sizeof(ld->where));
    return ld->where;
}

/* ------------------------------------------------------------------------ */
/* Checks on string values: NULL when fine, else what is wrong              */

/* Pool, backend, listener-pool and instance names travel in admin commands
 * ("set weight api/green-1 10"), metric labels and JSON, so keep them plain. */
static const char *check_name(const char *v)
{
    for (; *v != '\0'; v++)
        if (!isalnum((unsigned char)*v) && strchr("._-", *v) == NULL)
            return "may contain only letters, digits, '.', '_' and '-'";
    return NULL;
}

/* Group names must also be valid libconfig names, so `shares` can name them. */
static const char *check_group(const char *v)
{
    if (!isalpha((unsigned char)v[0]))
        return "must start with a letter, so that shares can name it";
    for (; *v != '\0'; v++)
        if (!isalnum((unsigned char)*v) && *v != '_' && *v != '-')
            return "may contain only letters, digits, '_' and '-'";
    return NULL;
}

const char *conf_check_path(const char *v)
{
    return v[0] == '/' ? NULL : "must start with '/'";
}

const char *conf_check_path_prefix(const char *v)
{
    size_t len = strlen(v), n;
    char *c;
    int st;
    bool same;

    if (v[0] != '/')
        return "must start with '/'";
    if (strpbrk(v, "?#") != NULL)
        return "must be a path, without '?' or '#'";
    c = veer_malloc(len + 1);
    st = path_canonical(v, len, c, len, &n);
    same = st == PATH_OK && n == len && memcmp(c, v, len) == 0;
    free(c);
    if (st != PATH_OK)
        return "can never match (a request path with %2F, %5C, %00, a bad escape or \"..\" above "
               "\"/\" gets 400)";
    if (!same)
        return "is not canonical (requests are matched on their canonical path: no \"//\", "
               "\".\" or \"..\" segment, unreserved characters unescaped, escapes in upper case)";
    return NULL;
}

/* A preflight request's path, sent as the request target as it is: no space, no CTL (no CR LF). */
static const char *check_request_target(const char *v)
{
    const char *why = conf_check_path(v);

    if (why != NULL)
        return why;
    for (; *v != '\0'; v++)
        if ((unsigned char)*v <= 0x20 || *v == 0x7f)
            return "must not contain spaces or control characters";
    return NULL;
}

/* RFC 9110 token: header and cookie names. */
static const char *check_token(const char *v)
{
    for (; *v != '\0'; v++)
        if (!isalnum((unsigned char)*v) && strchr("!#$%&'*+-.^_`|~", *v) == NULL)
            return "must be a valid HTTP token (letters, digits and !#$%&'*+-.^_`|~)";
    return NULL;
}

static const char *check_url(const char *v)
{
    if (strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0)
        return NULL;
    return "must be a URL starting with http:// or https://";
}

static const char *check_protocols(const char *v)
{
    static const char *const known[] = {"TLSv1.2", "TLSv1.2+", "TLSv1.3", "TLSv1.3+"};
    size_t i;

    for (i = 0; i < ARRAY_SIZE(known); i++)
        if (strcmp(v, known[i]) == 0)
            return NULL;
    return "must be one of TLSv1.2, TLSv1.2+, TLSv1.3, TLSv1.3+";
}

static const char *check_socket_path(const char *v)
{
    struct sockaddr_un sun;

    if (strlen(v) >= sizeof(sun.sun_path))
        return "is too long for a unix socket path, the limit is 107 bytes";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Scalars                                                                  */

static int range_error(struct conf_loader *ld, const config_setting_t *s, long long lo,
                       long long hi, long long v)
{
    if (hi >= INT_MAX)
        return fail(ld, s, "%s must be >= %lld (got %lld)", where(ld, s), lo, v);
    return fail(ld, s, "%s must be between %lld and %lld (got %lld)", where(ld, s), lo, hi, v);
}

/* An integer (libconfig int or int64) within lo..hi. */
static int get_int(struct conf_loader *ld, const config_setting_t *s, long long lo, long long hi,
                   long long *out)
{
    long long v;

    if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
        return fail(ld, s, "%s must be an integer", where(ld, s));
    v = config_setting_get_int64(s);
    if (v < lo || v > hi)
        return range_error(ld, s, lo, hi, v);
    *out = v;
    return 0;
}

static int get_bool(struct conf_loader *ld, const config_setting_t *s, bool *out)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return fail(ld, s, "%s must be true or false", where(ld, s));
    *out = config_setting_get_bool(s);
    return 0;
}

/* A non-empty string that passes check (if any), without allocating. */
static int peek_string(struct conf_loader *ld, const config_setting_t *s, conf_check_fn check,
                       const char **out)
{
    const char *v, *why;

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return fail(ld, s, "%s must be a string", where(ld, s));
    v = config_setting_get_string(s);
    if (v[0] == '\0')
        return fail(ld, s, "%s must not be empty", where(ld, s));
    why = check ? check(v) : NULL;
    if (why != NULL) {
        /* Quote it on one line: a control character shows as '?'. */
        char shown[128];
        size_t i;

        for (i = 0; v[i] != '\0' && i < sizeof(shown) - 1; i++)
            shown[i] = (unsigned char)v[i] < 0x20 || v[i] == 0x7f ? '?' : v[i];
        shown[i] = '\0';
        return fail(ld, s, "%s %s (got \"%s\"%s)", where(ld, s), why, shown,
                    v[i] != '\0' ? "..." : "");
    }
    *out = v;
    return 0;
}

/* As peek_string, then replace *out (freeing a default) with a copy. */
static int get_string(struct conf_loader *ld, const config_setting_t *s, conf_check_fn check,
                      char **out)
{
    const char *v;

    if (peek_string(ld, s, check, &v) < 0)
        return -1;
    free(*out);
    *out = veer_strdup(v);
    return 0;
}

/* A list of groups, as used for listen, pools, backends and certificates. */
static bool is_group_list(const config_setting_t *s)
{
    return config_setting_is_list(s) ||
           (config_setting_is_array(s) && config_setting_length(s) == 0);
}

/*
 * Replace *out (freeing the previous list, e.g. a default) with the
 * strings of a list or array; each element must pass check.
 */
static int get_string_list(struct conf_loader *ld, const config_setting_t *s, conf_check_fn check,
                           char ***out, int *count)
{
    int i, n;

    if (!config_setting_is_list(s) && !config_setting_is_array(s))
        return fail(ld, s, "%s must be a list of strings, e.g. ( \"a\", \"b\" )", where(ld, s));
    for (i = 0; i < *count; i++)
        free((*out)[i]);
    free(*out);
    n = config_setting_length(s);
    *out = veer_calloc(n, sizeof(char *));
    *count = n;
    for (i = 0; i < n; i++)
        if (get_string(ld, config_setting_get_elem(s, i), check, &(*out)[i]) < 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Groups against tables                                                    */

static int parse_group(struct conf_loader *ld, const config_setting_t *s,
                       const struct conf_field *fields, void *obj);

static int parse_member(struct conf_loader *ld, const config_setting_t *s,
                        const struct conf_field *f, void *obj)
{
    char *p = (char *)obj + f->off;
    long long v;

    switch (f->kind) {
    case CONF_K_INT:
        if (get_int(ld, s, f->min, f->max, &v) < 0)
            return -1;
        *(int *)p = (int)v;
        return 0;
    case CONF_K_INT64:
        if (get_int(ld, s, f->min, f->max, &v) < 0)
            return -1;
        *(int64_t *)p = v;
        return 0;
    case CONF_K_BOOL:
        return get_bool(ld, s, (bool *)p);
    case CONF_K_STRING:
        return get_string(ld, s, f->check, (char **)p);
    case CONF_K_STRINGS:
        return get_string_list(ld, s, f->check, &((struct conf_strings *)p)->v,
                               &((struct conf_strings *)p)->n);
    case CONF_K_GROUP:
        return parse_group(ld, s, f->sub, p);
    case CONF_K_CUSTOM:
        return f->parse(ld, s, obj);
    }
    return -1;
}

static const struct conf_field *find_field(const struct conf_field *fields, const char *name)
{
    for (; fields->name != NULL; fields++)
        if (strcmp(fields->name, name) == 0)
            return fields;
    return NULL;
}

/*
 * The row of a module's key NAME in group s (the top level, or one of the
 * top-level groups) and, in *obj, the object of the section it belongs to;
 * NULL when no section has that key there.
 */
static const struct conf_field *section_field(struct conf_loader *ld, const config_setting_t *s,
                                              const char *name, void **obj)
{
    const char *group = NULL;
    const struct conf_field *f;

    if (!config_setting_is_root(s)) {
        if (!config_setting_is_root(config_setting_parent(s)))
            return NULL;
        group = config_setting_name(s);
    }
    for (int i = 0; conf_sections[i] != NULL; i++) {
        const struct conf_section *sec = conf_sections[i];

        if (sec->keys == NULL || (sec->group == NULL) != (group == NULL) ||
            (group != NULL && strcmp(sec->group, group) != 0))
            continue;
        f = find_field(sec->keys, name);
        if (f != NULL) {
            *obj = ld->conf->sections[i];
            return f;
        }
    }
    return NULL;
}

static int unknown_key(struct conf_loader *ld, const config_setting_t *group,
                       const config_setting_t *m)
{
    if (config_setting_is_root(group))
        return fail(ld, m, "unknown key '%s'", config_setting_name(m));
    return fail(ld, m, "unknown key '%s' in %s", config_setting_name(m), where(ld, group));
}

/*
 * Fill obj from the group s: every member must be a key of fields (or of a
 * module's section, which fills the section's object instead) and valid;
 * every required key of fields must be present. Defaults are whatever obj
 * held before the call.
 */
static int parse_group(struct conf_loader *ld, const config_setting_t *s,
                       const struct conf_field *fields, void *obj)
{
    const struct conf_field *f;
    int i;

    if (!config_setting_is_group(s))
        return fail(ld, s, "%s must be a group: { key = value; ... }", where(ld, s));
    for (i = 0; i < config_setting_length(s); i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);
        void *target = obj;

        f = find_field(fields, config_setting_name(m));
        if (f == NULL)
            f = section_field(ld, s, config_setting_name(m), &target);
        if (f == NULL)
            return unknown_key(ld, s, m);
        if (parse_member(ld, m, f, target) < 0)
            return -1;
    }
    for (f = fields; f->name != NULL; f++) {
        if (!f->required || config_setting_get_member(s, f->name) != NULL)
            continue;
        if (config_setting_is_root(s))
            return fail(ld, s, "missing required key '%s'", f->name);
        return fail(ld, s, "missing required key '%s' in %s", f->name, where(ld, s));
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Addresses                                                                */

__attribute__((format(printf, 3, 4))) static int addr_error(char *err, size_t errlen,
                                                            const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A port of decimal digits; -1 when empty or not a number, 65536 when too big. */
static long parse_port(const char *p)
{
    const char *start = p;
    long v = 0;

    for (; isdigit((unsigned char)*p); p++)
        v = v > 65535 ? v : v * 10 + (*p - '0');
    return *p != '\0' || p == start ? -1 : v;
}

static int fill_v4(const char *text, const char *host, long port, struct conf_addr *out, char *err,
                   size_t errlen)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    char buf[INET_ADDRSTRLEN];

    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return addr_error(err, errlen,
                          "'%s': host must be a numeric IPv4 address, [IPv6] address or "
                          "localhost (no DNS names)",
                          text);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    out->len = sizeof(*sin);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    snprintf(out->text, sizeof(out->text), "%s:%ld", buf, port);
    return 0;
}

static int fill_v6(const char *text, const char *host, long port, struct conf_addr *out, char *err,
                   size_t errlen)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    char buf[INET6_ADDRSTRLEN];

    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
        return addr_error(err, errlen, "'%s': '%s' is not a numeric IPv6 address", text, host);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    out->len = sizeof(*sin6);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
    snprintf(out->text, sizeof(out->text), "[%s]:%ld", buf, port);
    return 0;
}

/*
 * Split "a.b.c.d:port", "[v6]:port" or "localhost:port" and parse it
 * without DNS. On failure out is zeroed and err says why, quoting text.
 */
int conf_parse_addr(const char *text, bool allow_port0, struct conf_addr *out, char *err,
                    size_t errlen)
{
    char host[64];
    const char *port, *end;
    size_t hlen;
    int family = AF_INET;
    long pnum;

    memset(out, 0, sizeof(*out));
    if (text == NULL || text[0] == '\0')
        return addr_error(err, errlen, "empty address");
    if (strlen(text) >= sizeof(out->text))
        return addr_error(err, errlen, "'%.20s...': address too long", text);
    if (text[0] == '[') {
        end = strchr(text, ']');
        if (end == NULL)
            return addr_error(err, errlen, "'%s': missing ']' after the IPv6 address", text);
        family = AF_INET6;
        hlen = end - text - 1;
        memcpy(host, text + 1, hlen);
        port = end + 1;
        if (*port != ':')
            return addr_error(err, errlen, "'%s': missing port (expected [IPv6]:PORT)", text);
    } else {
        port = strchr(text, ':');
        if (port == NULL)
            return addr_error(err, errlen, "'%s': missing port (expected HOST:PORT)", text);
        if (strchr(port + 1, ':') != NULL)
            return addr_error(err, errlen,
                              "'%s': IPv6 addresses must be in brackets, e.g. [::1]:8080", text);
        hlen = port - text;
        memcpy(host, text, hlen);
    }
    host[hlen] = '\0';
    port++;
    if (hlen == 0)
        return addr_error(err, errlen, "'%s': missing host", text);
    if (*port == '\0')
        return addr_error(err, errlen, "'%s': missing port", text);
    pnum = parse_port(port);
    if (pnum < 0)
        return addr_error(err, errlen, "'%s': port must be a number", text);
    if (pnum < (allow_port0 ? 0 : 1) || pnum > 65535)
        return addr_error(err, errlen, "'%s': port must be between %d and 65535", text,
                          allow_port0 ? 0 : 1);
    if (family == AF_INET && strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if ((family == AF_INET ? fill_v4 : fill_v6)(text, host, pnum, out, err, errlen) < 0) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    return 0;
}

static int get_addr(struct conf_loader *ld, const config_setting_t *s, bool allow_port0,
                    struct conf_addr *out)
{
    char why[256];
    const char *v;

    if (peek_string(ld, s, NULL, &v) < 0)
        return -1;
    if (conf_parse_addr(v, allow_port0, out, why, sizeof(why)) < 0)
        return fail(ld, s, "%s %s", where(ld, s), why);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* admin, timeouts, limits, maintenance, cluster                            */

/* admin.mode: a string of octal digits, as chmod takes it ("0660"). */
static int parse_admin_mode(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_admin *admin = obj;
    const char *v, *p;
    int mode = 0;

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return fail(ld, s, "%s must be a string of octal digits, e.g. \"0660\"", where(ld, s));
    v = config_setting_get_string(s);
    for (p = v; *p != '\0'; p++) {
        if (*p < '0' || *p > '7')
            return fail(ld, s, "%s must be a string of octal digits, e.g. \"0660\" (got \"%s\")",
                        where(ld, s), v);
        mode = mode * 8 + (*p - '0');
        if (mode > 0777)
            return fail(ld, s, "%s must be between 0000 and 0777 (got \"%s\")", where(ld, s), v);
    }
    if (p == v)
        return fail(ld, s, "%s must not be empty", where(ld, s));
    admin->mode = mode;
    return 0;
}

static int parse_admin_http(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_admin *admin = obj;

    if (get_addr(ld, s, true, &admin->http) < 0)
        return -1;
    admin->has_http = true;
    return 0;
}

static const struct conf_field admin_tls_fields[] = {
    CF_REQ_STR(struct conf_admin_tls, cert, NULL),
    CF_REQ_STR(struct conf_admin_tls, key, NULL),
    CF_STR(struct conf_admin_tls, client_ca, NULL),
    CF_END,
};

static int parse_admin_tls(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_admin *admin = obj;

    admin->http_tls = veer_calloc(1, sizeof(*admin->http_tls));
    admin->http_tls->line = (int)config_setting_source_line(s);
    return parse_group(ld, s, admin_tls_fields, admin->http_tls);
}

static const struct conf_field admin_fields[] = {
    CF_STR(struct conf_admin, socket, check_socket_path),
    CF_CUSTOM("mode", parse_admin_mode),
    CF_STR(struct conf_admin, owner, NULL),
    CF_STR(struct conf_admin, group, NULL),
    CF_CUSTOM("http", parse_admin_http),
    CF_CUSTOM("http_tls", parse_admin_tls),
    CF_END,
};

static const struct conf_field timeout_fields[] = {
    CF_INT(struct conf_timeouts, connect_ms, 1, INT_MAX),
    CF_INT(struct conf_timeouts, client_header_ms, 1, INT_MAX),
    CF_INT(struct conf_timeouts, idle_ms, 1, INT_MAX),
    CF_INT(struct conf_timeouts, quiet_ms, 1, INT_MAX),
    CF_INT(struct conf_timeouts, upstream_response_ms, 1, INT_MAX),
    CF_INT(struct conf_timeouts, drain_ms, 1, INT_MAX),
    CF_INT(struct conf_timeouts, shutdown_ms, 1, INT_MAX),
    CF_END,
};

static const struct conf_field limit_fields[] = {
    CF_INT(struct conf_limits, max_connections, 1, INT_MAX),
    CF_INT(struct conf_limits, max_connections_per_worker, 0, INT_MAX),
    CF_INT(struct conf_limits, request_line_bytes, 64, CONF_HEAD_BYTES_MAX),
    CF_INT(struct conf_limits, header_bytes, 256, CONF_HEAD_BYTES_MAX),
    CF_INT(struct conf_limits, header_count, 1, 10000),
    CF_INT64(struct conf_limits, body_bytes, 0, INT64_MAX),
    CF_END,
};

/* maintenance.allow is in the maintenance module's section. */
static const struct conf_field maintenance_fields[] = {
    CF_INT(struct conf_maintenance, retry_after, 0, INT_MAX),
    CF_END,
};

static int parse_etcd(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_cluster *c = obj;

    if (get_string_list(ld, s, check_url, &c->etcd, &c->netcd) < 0)
        return -1;
    if (c->netcd == 0)
        return fail(ld, s, "%s must name at least one etcd endpoint", where(ld, s));
    return 0;
}

static const struct conf_field cluster_fields[] = {
    CF_CUSTOM("etcd", parse_etcd),
    CF_STR(struct conf_cluster, prefix, NULL),
    CF_STR(struct conf_cluster, instance, check_name),
    CF_END,
};

/*
 * A cluster block turns fleet mode on. Its keys default to a local etcd,
 * the prefix of the reference config and this host's name as the instance
 * (a fixed default would give every instance of a fleet the same identity).
 */
static int parse_cluster(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_cluster *c = &((struct veer_conf *)obj)->cluster;
    char host[256] = "";

    c->enabled = true;
    c->etcd = veer_calloc(1, sizeof(char *));
    c->etcd[0] = veer_strdup("http://127.0.0.1:2379");
    c->netcd = 1;
    c->prefix = veer_strdup("/veer/prod");
    if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0' || check_name(host) != NULL)
        strcpy(host, "veer");
    c->instance = veer_strdup(host);
    return parse_group(ld, s, cluster_fields, c);
}

/* ------------------------------------------------------------------------ */
/* listen                                                                   */

static const struct conf_field cert_fields[] = {
    CF_REQ_STR(struct conf_tls_cert, cert, NULL),
    CF_REQ_STR(struct conf_tls_cert, key, NULL),
    CF_STR(struct conf_tls_cert, ocsp, NULL),
    CF_END,
};

static int parse_certificates(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_tls *tls = obj;
    int i, n;

    if (!is_group_list(s))
        return fail(ld, s, "%s must be a list of groups: ( { cert = ...; key = ...; } )",
                    where(ld, s));
    n = config_setting_length(s);
    if (n == 0)
        return fail(ld, s, "%s must hold at least one certificate", where(ld, s));
    tls->certs = veer_calloc(n, sizeof(*tls->certs));
    tls->ncerts = n;
    for (i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);

        tls->certs[i].line = (int)config_setting_source_line(e);
        if (parse_group(ld, e, cert_fields, &tls->certs[i]) < 0)
            return -1;
    }
    return 0;
}

static const struct conf_field listen_tls_fields[] = {
    CF_REQ_CUSTOM("certificates", parse_certificates),
    CF_STR(struct conf_tls, protocols, check_protocols),
    CF_STR(struct conf_tls, ciphers, NULL),
    CF_END,
};

static int parse_listen_tls(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_listen *l = obj;

    l->tls = veer_calloc(1, sizeof(*l->tls));
    l->tls->protocols = veer_strdup("TLSv1.2+");
    l->tls->line = (int)config_setting_source_line(s);
    return parse_group(ld, s, listen_tls_fields, l->tls);
}

static int parse_listen_address(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    return get_addr(ld, s, true, &((struct conf_listen *)obj)->addr);
}

static const struct conf_field listen_fields[] = {
    CF_REQ_CUSTOM("address", parse_listen_address),
    CF_STR(struct conf_listen, pool, check_name),
    CF_CUSTOM("tls", parse_listen_tls),
    CF_END,
};

static unsigned addr_port(const struct conf_addr *a)
{
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

/*
 * Two listeners on one address and port (port 0 excepted: each gets its
 * own). seen indexes the addresses of the listeners before i.
 */
static int check_listen_duplicate(struct conf_loader *ld, const struct veer_conf *conf, int i,
                                  const config_setting_t *e, struct hmap *seen)
{
    const struct conf_addr *a = &conf->listens[i].addr;
    uintptr_t *j;

    if (addr_port(a) == 0)
        return 0;
    j = hmap_insert_str(seen, a->text, (uintptr_t)i);
    if (j == NULL)
        return 0;
    return fail(ld, config_setting_get_member(e, "address"),
                "duplicate listen address %s (also at line %d)", a->text, conf->listens[*j].line);
}

static int parse_listens(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct veer_conf *conf = obj;
    struct hmap seen = {0};
    int i, rc = 0, n = config_setting_length(s);

    if (!is_group_list(s))
        return fail(ld, s,
                    "%s must be a list of groups: ( { address = \"0.0.0.0:8080\"; pool = "
                    "\"api\"; } )",
                    where(ld, s));
    if (n == 0)
        return fail(ld, s, "%s must hold at least one listener", where(ld, s));
    conf->listens = veer_calloc(n, sizeof(*conf->listens));
    conf->nlistens = n;
    for (i = 0; i < n && rc == 0; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);

        conf->listens[i].line = (int)config_setting_source_line(e);
        conf->listens[i].pool_index = -1;
        if (parse_group(ld, e, listen_fields, &conf->listens[i]) < 0 ||
            check_listen_duplicate(ld, conf, i, e, &seen) < 0)
            rc = -1;
    }
    hmap_free(&seen);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* pools                                                                    */

static const struct conf_field health_fields[] = {
    CF_STR(struct conf_health, path, conf_check_path),
    CF_INT(struct conf_health, interval_ms, 1, INT_MAX),
    CF_INT(struct conf_health, timeout_ms, 1, INT_MAX),
    CF_INT(struct conf_health, rise, 1, INT_MAX),
    CF_INT(struct conf_health, fall, 1, INT_MAX),
    CF_END,
};

static const struct conf_field retries_fields[] = {
    CF_INT(struct conf_retries, count, 0, 10),
    CF_INT(struct conf_retries, base_ms, 1, INT_MAX),
    CF_INT(struct conf_retries, cap_ms, 1, INT_MAX),
    CF_INT(struct conf_retries, budget_percent, 0, 100),
    CF_END,
};

static const struct conf_field breaker_fields[] = {
    CF_INT(struct conf_breaker, failures, 1, INT_MAX),
    CF_INT(struct conf_breaker, window_ms, 1, INT_MAX),
    CF_INT(struct conf_breaker, cooldown_ms, 1, INT_MAX),
    CF_INT(struct conf_breaker, half_open_successes, 1, INT_MAX),
    CF_INT(struct conf_breaker, max_ejection_percent, 0, 100),
    CF_END,
};

static const struct conf_field sticky_fields[] = {
    CF_STR(struct conf_sticky, header, check_token),
    CF_STR(struct conf_sticky, cookie, check_token),
    CF_BOOL(struct conf_sticky, client_address),
    CF_END,
};

static const struct conf_field upstream_tls_fields[] = {
    CF_BOOL(struct conf_upstream_tls, verify),
    CF_STR(struct conf_upstream_tls, ca, NULL),
    CF_STR(struct conf_upstream_tls, sni, NULL),
    CF_END,
};

static int parse_balance(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    static const char *const names[] = {
        [BALANCE_SWRR] = "swrr",
        [BALANCE_LEASTCONN] = "leastconn",
        [BALANCE_P2C] = "p2c",
    };
    struct conf_pool *p = obj;
    const char *v;
    size_t i;

    if (peek_string(ld, s, NULL, &v) < 0)
        return -1;
    for (i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcmp(v, names[i]) == 0) {
            p->balance = (enum conf_balance)i;
            return 0;
        }
    }
    return fail(ld, s, "%s must be one of swrr, leastconn, p2c (got \"%s\")", where(ld, s), v);
}

static int parse_health(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;

    p->has_health = true;
    return parse_group(ld, s, health_fields, &p->health);
}

static int parse_retries(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_retries *r = &((struct conf_pool *)obj)->retries;
    const config_setting_t *cap;

    if (parse_group(ld, s, retries_fields, r) < 0)
        return -1;
    if (r->cap_ms >= r->base_ms)
        return 0;
    cap = config_setting_get_member(s, "cap_ms");
    return fail(ld, cap ? cap : s, "%s.cap_ms (%d) must be >= base_ms (%d)", where(ld, s),
                r->cap_ms, r->base_ms);
}

static int parse_sticky(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;
    struct conf_sticky *st = &p->sticky;

    p->has_sticky = true;
    if (parse_group(ld, s, sticky_fields, st) < 0)
        return -1;
    if ((st->header != NULL) + (st->cookie != NULL) + st->client_address != 1)
        return fail(ld, s, "%s must set exactly one of header, cookie or client_address = true",
                    where(ld, s));
    return 0;
}

static int parse_headroom(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;
    double v;

    if (!config_setting_is_number(s))
        return fail(ld, s, "%s must be a number", where(ld, s));
    if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else
        v = (double)config_setting_get_int64(s);
    if (!(v > 0))
        return fail(ld, s, "%s must be greater than 0 (got %g)", where(ld, s), v);
    p->capacity_headroom = v;
    return 0;
}

static int parse_upstream_tls(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;

    p->has_tls = true;
    return parse_group(ld, s, upstream_tls_fields, &p->tls);
}

static int parse_backend_address(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    return get_addr(ld, s, false, &((struct conf_backend *)obj)->addr);
}

static const struct conf_field backend_fields[] = {
    CF_REQ_STR(struct conf_backend, name, check_name),
    CF_REQ_CUSTOM("address", parse_backend_address),
    CF_INT(struct conf_backend, weight, 0, 1000),
    CF_STR(struct conf_backend, group, check_group),
    CF_END,
};

/* Index backend i of p by name; an error when an earlier backend has that name. */
static int check_backend_duplicate(struct conf_loader *ld, struct conf_pool *p, int i,
                                   const config_setting_t *e)
{
    uintptr_t *j = hmap_insert_str(&p->backend_index, p->backends[i].name, (uintptr_t)i);

    if (j == NULL)
        return 0;
    return fail(ld, config_setting_get_member(e, "name"),
                "duplicate backend name '%s' in %s (also at line %d)", p->backends[i].name,
                where(ld, config_setting_parent(e)), p->backends[*j].line);
}

static int parse_backends(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;
    int i, n = config_setting_length(s);

    if (!is_group_list(s))
        return fail(ld, s, "%s must be a list of groups: ( { name = ...; address = ...; } )",
                    where(ld, s));
    p->backends = veer_calloc(n, sizeof(*p->backends));
    p->nbackends = n;
    for (i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        struct conf_backend *b = &p->backends[i];

        b->line = (int)config_setting_source_line(e);
        b->weight = 100;
        b->group = veer_strdup("default");
        if (parse_group(ld, e, backend_fields, b) < 0 || check_backend_duplicate(ld, p, i, e) < 0)
            return -1;
    }
    return 0;
}

/* shares = { blue = 90; green = 10; }: whole percent per group. */
static int parse_shares(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;
    int i, n;
    long long v;

    if (!config_setting_is_group(s))
        return fail(ld, s, "%s must be a group: { blue = 90; green = 10; }", where(ld, s));
    n = config_setting_length(s);
    p->has_shares = true;
    p->shares = veer_calloc(n, sizeof(*p->shares));
    p->nshares = n;
    for (i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);

        if (get_int(ld, m, 0, 100, &v) < 0)
            return -1;
        p->shares[i].group = veer_strdup(config_setting_name(m));
        p->shares[i].share = (int)v;
        p->shares[i].line = (int)config_setting_source_line(m);
    }
    return 0;
}

/* A DNS name to resolve: letters, digits, '-', '_' and '.', not an address. */
static const char *check_dns_name(const char *v)
{
    size_t n = strlen(v);
    bool alpha = false;

    if (n > 253)
        return "is longer than a DNS name may be (253 bytes)";
    for (const char *c = v; *c != '\0'; c++) {
        if (!isalnum((unsigned char)*c) && strchr("._-", *c) == NULL)
            return "must be a DNS name (letters, digits, '.', '-', '_')";
        alpha |= isalpha((unsigned char)*c) != 0;
    }
    if (!alpha)
        return "is an address, not a name: list it under backends";
    return NULL;
}

/* discover[].name: a backend name's prefix ("<name>-<address>" must stay a name). */
static const char *check_discover_name(const char *v)
{
    const char *why = check_name(v);

    if (why != NULL)
        return why;
    return strlen(v) > CONF_DISCOVER_NAME_MAX ? "must be at most 24 bytes (backend names are "
                                                "\"<name>-<address>\")"
                                              : NULL;
}

/* discover[].dns = "NAME:PORT". */
static int parse_discover_dns(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_discover *d = obj;
    const char *v, *colon, *why;
    char host[256];
    long port;

    if (peek_string(ld, s, NULL, &v) < 0)
        return -1;
    colon = strrchr(v, ':');
    if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof(host))
        return fail(ld, s, "%s must be NAME:PORT, e.g. \"api.internal:8080\" (got \"%s\")",
                    where(ld, s), v);
    memcpy(host, v, (size_t)(colon - v));
    host[colon - v] = '\0';
    if ((why = check_dns_name(host)) != NULL)
        return fail(ld, s, "%s: '%s' %s", where(ld, s), host, why);
    port = parse_port(colon + 1);
    if (port < 1 || port > 65535)
        return fail(ld, s, "%s: port must be between 1 and 65535 (got \"%s\")", where(ld, s),
                    colon + 1);
    free(d->dns);
    free(d->host);
    d->dns = veer_strdup(v);
    d->host = veer_strdup(host);
    d->port = (int)port;
    return 0;
}

static const struct conf_field discover_fields[] = {
    CF_REQ_STR(struct conf_discover, name, check_discover_name),
    CF_CUSTOM("dns", parse_discover_dns),
    CF_STR(struct conf_discover, srv, check_dns_name),
    CF_STR(struct conf_discover, group, check_group),
    CF_INT(struct conf_discover, weight, 0, 1000),
    CF_INT(struct conf_discover, confirm, 1, 100),
    CF_INT(struct conf_discover, max_backends, 1, 10000),
    CF_END,
};

/* discover = ( { name; dns | srv; group; weight; } ): backends that follow DNS names. */
static int parse_discover(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;
    int n = config_setting_length(s);

    if (!is_group_list(s))
        return fail(ld, s,
                    "%s must be a list of groups: ( { name = \"api\"; dns = \"api.internal:8080\"; "
                    "} )",
                    where(ld, s));
    p->discover = veer_calloc(n ? n : 1, sizeof(*p->discover));
    p->ndiscover = n;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        struct conf_discover *d = &p->discover[i];

        d->line = (int)config_setting_source_line(e);
        d->group = veer_strdup("default");
        d->weight = 100;
        d->confirm = -1;
        d->max_backends = -1;
        if (parse_group(ld, e, discover_fields, d) < 0)
            return -1;
        if ((d->dns != NULL) == (d->srv != NULL))
            return fail(ld, e, "%s must set exactly one of dns = \"NAME:PORT\" or srv = \"NAME\"",
                        where(ld, e));
        if (d->srv) {
            free(d->host);
            d->host = veer_strdup(d->srv);
        }
    }
    return 0;
}

/* mirror = { group; percent; ... } (issue 19), of a pool or a route. */
static int parse_mirror_percent(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_mirror *m = obj;
    double v;

    if (!config_setting_is_number(s))
        return fail(ld, s, "%s must be a number between 0 and 100", where(ld, s));
    v = config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                    : (double)config_setting_get_int64(s);
    if (!(v >= 0 && v <= 100))
        return fail(ld, s, "%s must be between 0 and 100 (got %g)", where(ld, s), v);
    m->percent = v;
    return 0;
}

static const struct conf_field mirror_compare_fields[] = {
    CF_STRS(struct conf_mirror, headers, check_token),
    {.name = "ignore_headers",
     .kind = CONF_K_STRINGS,
     .off = offsetof(struct conf_mirror, ignore),
     .check = check_token},
    CF_END,
};

static int parse_mirror_compare(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    return parse_group(ld, s, mirror_compare_fields, obj);
}

static const struct conf_field mirror_fields[] = {
    CF_REQ_STR(struct conf_mirror, group, check_name),
    CF_CUSTOM("percent", parse_mirror_percent),
    CF_INT64(struct conf_mirror, max_body_bytes, 0, INT64_MAX),
    CF_INT(struct conf_mirror, max_inflight, 1, 1000000),
    CF_INT(struct conf_mirror, timeout_ms, 1, 600000),
    CF_STRS(struct conf_mirror, methods, check_token),
    CF_CUSTOM("compare", parse_mirror_compare),
    CF_END,
};

static const char *const mirror_safe_methods[] = {"GET", "HEAD", "OPTIONS"};

static int parse_mirror_into(struct conf_loader *ld, const config_setting_t *s,
                             struct conf_mirror *m, bool *has)
{
    if (!config_setting_is_group(s))
        return fail(ld, s, "%s must be a group: { group = \"green\"; percent = 10.0; }",
                    where(ld, s));
    *has = true;
    m->line = (int)config_setting_source_line(s);
    m->percent = 100;
    m->max_body_bytes = 65536;
    m->max_inflight = 256;
    m->timeout_ms = 2000;
    m->methods.n = 3;
    m->methods.v = veer_calloc(3, sizeof(char *));
    for (int i = 0; i < 3; i++)
        m->methods.v[i] = veer_strdup(mirror_safe_methods[i]);
    if (parse_group(ld, s, mirror_fields, m) < 0)
        return -1;
    /* content-type and up to 7 more are compared; a mismatch names one (47 bytes). */
    if (m->headers.n > 7)
        return fail(ld,
                    config_setting_get_member(config_setting_get_member(s, "compare"), "headers"),
                    "%s: at most 7 headers are compared besides content-type (got %d)",
                    where(ld, s), m->headers.n);
    for (int i = 0; i < m->headers.n; i++)
        if (strlen(m->headers.v[i]) > 47)
            return fail(ld, s, "%s: compared header name '%.47s...' is longer than 47 bytes",
                        where(ld, s), m->headers.v[i]);
    /* Compared names are matched case-insensitively: keep them lower case. */
    for (int i = 0; i < m->headers.n; i++)
        for (char *c = m->headers.v[i]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    for (int i = 0; i < m->ignore.n; i++)
        for (char *c = m->ignore.v[i]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    return 0;
}

static int parse_pool_mirror(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_pool *p = obj;

    return parse_mirror_into(ld, s, &p->mirror, &p->has_mirror);
}

bool conf_pool_has_group(const struct conf_pool *p, const char *group)
{
    for (int i = 0; i < p->nbackends; i++)
        if (strcmp(p->backends[i].group, group) == 0)
            return true;
    for (int i = 0; i < p->ndiscover; i++)
        if (strcmp(p->discover[i].group, group) == 0)
            return true;
    for (int i = 0; i < p->nshares; i++)
        if (strcmp(p->shares[i].group, group) == 0)
            return true;
    return false;
}

/* A mirror's group must be one of the pool's (`e` is the pool or route holding it). */
static int check_mirror_group(struct conf_loader *ld, const config_setting_t *e,
                              const struct conf_mirror *m, const struct conf_pool *p)
{
    const config_setting_t *ms = config_setting_get_member(e, "mirror");
    const config_setting_t *g = ms ? config_setting_get_member(ms, "group") : NULL;

    if (conf_pool_has_group(p, m->group))
        return 0;
    return fail(ld, g ? g : e, "%s: pool '%s' has no group '%s'", where(ld, g ? g : e), p->name,
                m->group);
}

static const struct conf_field pool_fields[] = {
    CF_REQ_STR(struct conf_pool, name, check_name),
    CF_CUSTOM("balance", parse_balance),
    CF_CUSTOM("health", parse_health),
    CF_CUSTOM("retries", parse_retries),
    CF_GROUP(struct conf_pool, breaker, breaker_fields),
    CF_INT(struct conf_pool, slow_start_ms, 0, INT_MAX),
    CF_INT(struct conf_pool, hold_ms, 0, INT_MAX),
    CF_INT64(struct conf_pool, body_bytes, 0, INT64_MAX),
    CF_STR(struct conf_pool, override_header, check_token),
    CF_CUSTOM("sticky", parse_sticky),
    CF_CUSTOM("capacity_headroom", parse_headroom),
    CF_CUSTOM("tls", parse_upstream_tls),
    CF_CUSTOM("backends", parse_backends),
    CF_CUSTOM("shares", parse_shares),
    CF_CUSTOM("discover", parse_discover),
    CF_CUSTOM("mirror", parse_pool_mirror),
    CF_END,
};

/*
 * The configured weight of each share's group (-1 when no backend is in
 * it) into gw, by share, in one pass over the backends; the first backend
 * whose group has no share into *missing (-1 when none).
 */
static void share_weights(const struct conf_pool *p, int64_t *gw, int *missing)
{
    struct hmap idx = {0};
    uintptr_t *k;
    int i;

    for (i = 0; i < p->nshares; i++) {
        gw[i] = -1;
        hmap_insert_str(&idx, p->shares[i].group, (uintptr_t)i);
    }
    *missing = -1;
    for (i = 0; i < p->nbackends; i++) {
        k = hmap_find_str(&idx, p->backends[i].group);
        if (k == NULL) {
            if (*missing < 0)
                *missing = i;
            continue;
        }
        gw[*k] = (gw[*k] < 0 ? 0 : gw[*k]) + p->backends[i].weight;
    }
    /* A discover entry counts as one backend of its weight: its instances are not known yet. */
    for (i = 0; i < p->ndiscover; i++) {
        k = hmap_find_str(&idx, p->discover[i].group);
        if (k == NULL) {
            if (*missing < 0)
                *missing = p->nbackends + i;
            continue;
        }
        gw[*k] = (gw[*k] < 0 ? 0 : gw[*k]) + p->discover[i].weight;
    }
    hmap_free(&idx);
}

/*
 * Explicit shares must describe the pool's groups exactly: one share per
 * group that has backends, no share for a group without any, a total of
 * 100, and no share > 0 for a group whose weights are all 0 (its traffic
 * would have nowhere to go).
 */
static int check_shares(struct conf_loader *ld, const struct conf_pool *p,
                        const config_setting_t *s)
{
    int64_t *gw = veer_calloc(p->nshares ? p->nshares : 1, sizeof(*gw));
    int i, sum = 0, missing, rc = 0;

    share_weights(p, gw, &missing);
    for (i = 0; i < p->nshares && rc == 0; i++) {
        if (gw[i] < 0)
            rc = fail(ld, config_setting_get_elem(s, i),
                      "%s names group '%s' but no backend of the pool is in it", where(ld, s),
                      p->shares[i].group);
        sum += p->shares[i].share;
    }
    if (rc == 0 && missing >= 0)
        rc = fail(ld, s, "%s has no share for group '%s' (every group with backends needs one)",
                  where(ld, s),
                  missing < p->nbackends ? p->backends[missing].group
                                         : p->discover[missing - p->nbackends].group);
    if (rc == 0 && sum != 100)
        rc = fail(ld, s, "%s must add up to 100 (got %d)", where(ld, s), sum);
    for (i = 0; i < p->nshares && rc == 0; i++)
        if (p->shares[i].share > 0 && gw[i] == 0)
            rc = fail(ld, config_setting_get_elem(s, i),
                      "%s gives group '%s' %d%% but all its backends have weight 0", where(ld, s),
                      p->shares[i].group, p->shares[i].share);
    free(gw);
    return rc;
}

static void pool_defaults(struct conf_pool *p)
{
    p->balance = BALANCE_SWRR;
    p->health = (struct conf_health){
        .path = veer_strdup("/"), .interval_ms = 500, .timeout_ms = 1000, .rise = 2, .fall = 3};
    p->retries =
        (struct conf_retries){.count = 2, .base_ms = 10, .cap_ms = 200, .budget_percent = 20};
    p->breaker = (struct conf_breaker){.failures = 5,
                                       .window_ms = 10000,
                                       .cooldown_ms = 30000,
                                       .half_open_successes = 2,
                                       .max_ejection_percent = 50};
    p->body_bytes = -1;
    p->capacity_headroom = 2.0;
    p->tls.verify = true;
}

static int parse_pool(struct conf_loader *ld, const config_setting_t *e, struct conf_pool *p)
{
    const config_setting_t *shares;

    p->line = (int)config_setting_source_line(e);
    pool_defaults(p);
    if (parse_group(ld, e, pool_fields, p) < 0)
        return -1;
    shares = config_setting_get_member(e, "shares");
    if (shares && check_shares(ld, p, shares) < 0)
        return -1;
    return p->has_mirror ? check_mirror_group(ld, e, &p->mirror, p) : 0;
}

static int parse_pools(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct veer_conf *conf = obj;
    int i, n = config_setting_length(s);
    uintptr_t *j;

    if (!is_group_list(s))
        return fail(ld, s, "%s must be a list of groups: ( { name = \"api\"; ... } )",
                    where(ld, s));
    if (n == 0)
        return fail(ld, s, "%s must hold at least one pool", where(ld, s));
    conf->pools = veer_calloc(n, sizeof(*conf->pools));
    conf->npools = n;
    for (i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);

        if (parse_pool(ld, e, &conf->pools[i]) < 0)
            return -1;
        j = hmap_insert_str(&conf->pool_index, conf->pools[i].name, (uintptr_t)i);
        if (j != NULL)
            return fail(ld, config_setting_get_member(e, "name"),
                        "duplicate pool name '%s' (also at line %d)", conf->pools[i].name,
                        conf->pools[*j].line);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* routes                                                                   */

/* A header value goes into a request head as it is: no control characters but tab. */
static const char *check_field_value(const char *v)
{
    for (; *v != '\0'; v++)
        if ((unsigned char)*v < 0x20 && *v != '\t')
            return "may not contain control characters";
        else if (*v == 0x7f)
            return "may not contain control characters";
    return NULL;
}

/*
 * A field a route may set or remove: a token, and not one that frames the
 * request or the connection (veer writes those itself; a route changing
 * them would let the backend read the body differently from veer), nor
 * Host for removal (set it instead).
 */
static const char *check_route_field(const char *v, bool removing)
{
    static const char *const framing[] = {"content-length",   "transfer-encoding",
                                          "connection",       "keep-alive",
                                          "proxy-connection", "te",
                                          "trailer",          "upgrade"};
    const char *why = check_token(v);
    size_t i;

    if (why != NULL)
        return why;
    for (i = 0; i < ARRAY_SIZE(framing); i++)
        if (strcasecmp(v, framing[i]) == 0)
            return "is a framing or hop-by-hop field: veer writes it itself";
    if (removing && strcasecmp(v, "host") == 0)
        return "cannot be removed (a request needs one): set it instead";
    return NULL;
}

static const char *check_set_field(const char *v)
{
    return check_route_field(v, false);
}

static const char *check_removed_field(const char *v)
{
    return check_route_field(v, true);
}

static const struct conf_field set_header_fields[] = {
    CF_REQ_STR(struct conf_header, name, check_set_field),
    CF_REQ_STR(struct conf_header, value, check_field_value),
    CF_END,
};

static const struct conf_field header_fields[] = {
    CF_REQ_STR(struct conf_header, name, check_token),
    CF_REQ_STR(struct conf_header, value, check_field_value),
    CF_END,
};

/* ( { name = "X-Api-Version"; value = "2"; }, ... ) into *out, *n. */
static int parse_header_list(struct conf_loader *ld, const config_setting_t *s,
                             const struct conf_field *fields, struct conf_header **out, int *n)
{
    int i, len = config_setting_length(s);

    if (!is_group_list(s))
        return fail(ld, s, "%s must be a list of groups: ( { name = \"X-Name\"; value = \"v\"; } )",
                    where(ld, s));
    *out = veer_calloc(len ? len : 1, sizeof(**out));
    *n = len;
    for (i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);

        (*out)[i].line = (int)config_setting_source_line(e);
        if (parse_group(ld, e, fields, &(*out)[i]) < 0)
            return -1;
    }
    return 0;
}

static int parse_match_headers(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_route *r = obj;

    return parse_header_list(ld, s, header_fields, &r->headers, &r->nheaders);
}

static int parse_match_methods(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_route *r = obj;

    if (get_string_list(ld, s, check_token, &r->methods.v, &r->methods.n) < 0)
        return -1;
    if (r->methods.n == 0)
        return fail(ld, s, "%s must name at least one method", where(ld, s));
    return 0;
}

static const struct conf_field match_fields[] = {
    CF_STR(struct conf_route, host, NULL),
    /* Requests are matched on their canonical path: a path written otherwise could never match. */
    CF_STR(struct conf_route, path, conf_check_path_prefix),
    CF_STR(struct conf_route, path_prefix, conf_check_path_prefix),
    CF_CUSTOM("methods", parse_match_methods),
    CF_CUSTOM("headers", parse_match_headers),
    CF_END,
};

static int parse_route_match(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_route *r = obj;

    if (parse_group(ld, s, match_fields, r) < 0)
        return -1;
    if (r->path != NULL && r->path_prefix != NULL)
        return fail(ld, s, "%s may set path or path_prefix, not both", where(ld, s));
    return 0;
}

static const struct conf_field route_timeout_fields[] = {
    CF_INT(struct conf_route, upstream_response_ms, 1, INT_MAX),
    CF_END,
};

static int parse_route_timeouts(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    return parse_group(ld, s, route_timeout_fields, obj);
}

static int parse_route_retries(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    return parse_group(ld, s, retries_fields, &((struct conf_route *)obj)->retries_set);
}

static int parse_set_headers(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_route *r = obj;

    return parse_header_list(ld, s, set_header_fields, &r->set_headers, &r->nset_headers);
}

static const struct conf_field request_header_fields[] = {
    CF_CUSTOM("set", parse_set_headers),
    {.name = "remove",
     .kind = CONF_K_STRINGS,
     .off = offsetof(struct conf_route, remove_headers),
     .check = check_removed_field},
    CF_END,
};

static int parse_request_headers(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    return parse_group(ld, s, request_header_fields, obj);
}

static int parse_route_mirror(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_route *r = obj;

    return parse_mirror_into(ld, s, &r->mirror, &r->has_mirror);
}

static const struct conf_field route_fields[] = {
    CF_REQ_STR(struct conf_route, name, check_name),
    CF_REQ_STR(struct conf_route, pool, check_name),
    CF_CUSTOM("match", parse_route_match),
    CF_CUSTOM("timeouts", parse_route_timeouts),
    CF_INT64(struct conf_route, body_bytes, 0, INT64_MAX),
    CF_CUSTOM("retries", parse_route_retries),
    CF_INT(struct conf_route, hold_ms, 0, INT_MAX),
    CF_STR(struct conf_route, rewrite_prefix, conf_check_path),
    CF_CUSTOM("request_headers", parse_request_headers),
    CF_CUSTOM("mirror", parse_route_mirror),
    CF_END,
};

static void route_defaults(struct conf_route *r, int line)
{
    r->line = line;
    r->pool_index = -1;
    r->upstream_response_ms = -1;
    r->body_bytes = -1;
    r->hold_ms = -1;
    r->retries_set = (struct conf_retries){-1, -1, -1, -1};
}

static int parse_routes(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct veer_conf *conf = obj;
    struct hmap seen = {0};
    int i, rc = 0, n = config_setting_length(s);
    uintptr_t *j;

    if (!is_group_list(s))
        return fail(ld, s,
                    "%s must be a list of groups: ( { name = \"payments\"; pool = \"payments\"; "
                    "match = { ... }; } )",
                    where(ld, s));
    conf->routes = veer_calloc(n ? n : 1, sizeof(*conf->routes));
    conf->nroutes = n;
    for (i = 0; i < n && rc == 0; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        struct conf_route *r = &conf->routes[i];

        route_defaults(r, (int)config_setting_source_line(e));
        if (parse_group(ld, e, route_fields, r) < 0) {
            rc = -1;
            break;
        }
        j = hmap_insert_str(&seen, r->name, (uintptr_t)i);
        if (j != NULL)
            rc =
                fail(ld, config_setting_get_member(e, "name"),
                     "duplicate route name '%s' (also at line %d)", r->name, conf->routes[*j].line);
    }
    hmap_free(&seen);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* preflight (rollouts)                                                     */

static const struct conf_field preflight_req_fields[] = {
    CF_STR(struct conf_preflight_req, method, check_token),
    CF_REQ_STR(struct conf_preflight_req, path, check_request_target),
    CF_INT(struct conf_preflight_req, expect_status, 100, 599),
    CF_STR(struct conf_preflight_req, expect_body_contains, NULL),
    CF_END,
};

static int parse_preflight_requests(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_preflight *pf = obj;
    int n = config_setting_length(s);

    if (!is_group_list(s) || n == 0)
        return fail(ld, s,
                    "%s must be a non-empty list of groups: ( { method = \"GET\"; path = "
                    "\"/health\"; expect_status = 200; } )",
                    where(ld, s));
    pf->requests = veer_calloc(n, sizeof(*pf->requests));
    pf->nrequests = n;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        struct conf_preflight_req *q = &pf->requests[i];

        q->line = (int)config_setting_source_line(e);
        q->method = veer_strdup("GET");
        q->expect_status = 200;
        if (parse_group(ld, e, preflight_req_fields, q) < 0)
            return -1;
    }
    return 0;
}

/* A preflight name: `rollout start ... preflight=NAME` must be able to name it (63 bytes). */
static const char *check_preflight_name(const char *v)
{
    const char *why = check_name(v);

    if (why != NULL)
        return why;
    return strlen(v) > 63 ? "must be at most 63 bytes (rollout start names it)" : NULL;
}

static const struct conf_field preflight_fields[] = {
    CF_REQ_STR(struct conf_preflight, name, check_preflight_name),
    CF_INT(struct conf_preflight, timeout_ms, 10, 600000),
    CF_REQ_CUSTOM("requests", parse_preflight_requests),
    CF_END,
};

/* preflight = ( { name = "smoke"; requests = ( ... ); } ), names unique. */
static int parse_preflights(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct veer_conf *conf = obj;
    struct hmap seen = {0};
    int n = config_setting_length(s), rc = 0;

    if (!is_group_list(s))
        return fail(ld, s,
                    "%s must be a list of groups: ( { name = \"smoke\"; requests = ( ... ); } )",
                    where(ld, s));
    conf->preflights = veer_calloc(n ? n : 1, sizeof(*conf->preflights));
    conf->npreflights = n;
    for (int i = 0; i < n && rc == 0; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        struct conf_preflight *pf = &conf->preflights[i];
        uintptr_t *j;

        pf->line = (int)config_setting_source_line(e);
        pf->timeout_ms = 2000;
        if (parse_group(ld, e, preflight_fields, pf) < 0) {
            rc = -1;
            break;
        }
        j = hmap_insert_str(&seen, pf->name, (uintptr_t)i);
        if (j != NULL)
            rc = fail(ld, config_setting_get_member(e, "name"),
                      "duplicate preflight name '%s' (also at line %d)", pf->name,
                      conf->preflights[*j].line);
    }
    hmap_free(&seen);
    return rc;
}

const struct conf_preflight *conf_find_preflight(const struct veer_conf *c, const char *name)
{
    for (int i = 0; i < c->npreflights; i++)
        if (strcmp(c->preflights[i].name, name) == 0)
            return &c->preflights[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* resolvers (discovery)                                                    */

/* resolvers.servers: "ADDRESS" (port 53) or "ADDRESS:PORT", "[v6]:PORT". */
static int parse_resolver_servers(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_resolvers *r = obj;
    int n = config_setting_length(s);

    if (!config_setting_is_list(s) && !config_setting_is_array(s))
        return fail(ld, s, "%s must be a list of strings, e.g. ( \"127.0.0.1:53\" )", where(ld, s));
    free(r->servers);
    r->servers = veer_calloc(n ? n : 1, sizeof(*r->servers));
    r->nservers = n;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        char text[80], why[256];
        const char *v;

        if (peek_string(ld, e, NULL, &v) < 0)
            return -1;
        /* Without a port: 53. A bare IPv6 address has several ':'. */
        if (v[0] != '[' && strchr(v, ':') == NULL)
            snprintf(text, sizeof(text), "%s:53", v);
        else if (v[0] != '[' && strchr(v, ':') != strrchr(v, ':'))
            snprintf(text, sizeof(text), "[%s]:53", v);
        else
            snprintf(text, sizeof(text), "%s", v);
        if (conf_parse_addr(text, false, &r->servers[i], why, sizeof(why)) < 0)
            return fail(ld, e, "%s must be a nameserver's address: %s", where(ld, e), why);
    }
    return 0;
}

static const struct conf_field resolver_fields[] = {
    CF_CUSTOM("servers", parse_resolver_servers),
    CF_INT(struct conf_resolvers, interval_ms, 10, 86400000),
    CF_INT(struct conf_resolvers, min_interval_ms, 10, 86400000),
    CF_INT(struct conf_resolvers, timeout_ms, 10, 60000),
    CF_INT(struct conf_resolvers, confirm, 1, 100),
    CF_INT(struct conf_resolvers, max_backends, 1, 10000),
    CF_END,
};

static int parse_resolvers(struct conf_loader *ld, const config_setting_t *s, void *obj)
{
    struct conf_resolvers *r = &((struct veer_conf *)obj)->resolvers;

    r->line = (int)config_setting_source_line(s);
    r->min_interval_ms = -1; /* not set: the default, or interval_ms when that is shorter */
    if (parse_group(ld, s, resolver_fields, r) < 0)
        return -1;
    if (r->min_interval_ms < 0)
        r->min_interval_ms = r->interval_ms < 1000 ? r->interval_ms : 1000;
    if (r->min_interval_ms > r->interval_ms)
        return fail(ld, s, "%s.min_interval_ms (%d) must be <= interval_ms (%d)", where(ld, s),
                    r->min_interval_ms, r->interval_ms);
    return 0;
}

/*
 * Discover entry names are unique across the file: they name the entry's
 * metrics (veer_discovery_errors_total{name}) and prefix its backends.
 */
static int resolve_discover(struct conf_loader *ld, struct veer_conf *conf)
{
    struct hmap seen = {0};
    int rc = 0;

    for (int i = 0; i < conf->npools && rc == 0; i++)
        for (int j = 0; j < conf->pools[i].ndiscover && rc == 0; j++) {
            const struct conf_discover *d = &conf->pools[i].discover[j];
            uintptr_t *k = hmap_insert_str(&seen, d->name, (uintptr_t)d->line);

            if (k != NULL)
                rc = fail_at(ld, ld->file, d->line,
                             "duplicate discover name '%s' (also at line %d): discover names "
                             "are unique across pools",
                             d->name, (int)*k);
        }
    hmap_free(&seen);
    return rc;
}

int conf_discover_confirm(const struct veer_conf *c, const struct conf_discover *d)
{
    return d->confirm > 0 ? d->confirm : c->resolvers.confirm;
}

int conf_discover_max(const struct veer_conf *c, const struct conf_discover *d)
{
    return d->max_backends > 0 ? d->max_backends : c->resolvers.max_backends;
}

/* ------------------------------------------------------------------------ */
/* The file                                                                 */

static const struct conf_field top_fields[] = {
    CF_INT(struct veer_conf, workers, 1, 256),
    CF_REQ_CUSTOM("listen", parse_listens),
    CF_GROUP(struct veer_conf, admin, admin_fields),
    CF_GROUP(struct veer_conf, timeouts, timeout_fields),
    CF_GROUP(struct veer_conf, limits, limit_fields),
    CF_STR(struct veer_conf, state_file, NULL),
    CF_STR(struct veer_conf, audit_log, NULL),
    CF_GROUP(struct veer_conf, maintenance, maintenance_fields),
    CF_CUSTOM("cluster", parse_cluster),
    CF_CUSTOM("resolvers", parse_resolvers),
    CF_REQ_CUSTOM("pools", parse_pools),
    CF_CUSTOM("routes", parse_routes),
    CF_CUSTOM("preflight", parse_preflights),
    CF_END,
};

static void conf_defaults(struct veer_conf *conf)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    conf->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (int)ncpu;
    conf->admin.socket = veer_strdup("/run/veer/admin.sock");
    conf->admin.mode = 0660;
    conf->timeouts = (struct conf_timeouts){.connect_ms = 2000,
                                            .client_header_ms = 10000,
                                            .idle_ms = 60000,
                                            .quiet_ms = 1000,
                                            .upstream_response_ms = 30000,
                                            .drain_ms = 30000,
                                            .shutdown_ms = 30000};
    conf->limits = (struct conf_limits){.max_connections = 10000,
                                        .max_connections_per_worker = 0,
                                        .request_line_bytes = 8192,
                                        .header_bytes = 32768,
                                        .header_count = 100,
                                        .body_bytes = 0};
    conf->maintenance.retry_after = 30;
    conf->resolvers = (struct conf_resolvers){.interval_ms = 5000,
                                              .min_interval_ms = 1000,
                                              .timeout_ms = 1000,
                                              .confirm = 2,
                                              .max_backends = 256};
}

/* One object per section, zeroed, then its defaults. */
static void sections_create(struct veer_conf *conf)
{
    int i, n = 0;

    while (conf_sections[n] != NULL)
        n++;
    conf->sections = veer_calloc((size_t)n + 1, sizeof(void *));
    for (i = 0; i < n; i++) {
        if (conf_sections[i]->keys == NULL)
            continue;
        conf->sections[i] = veer_calloc(1, conf_sections[i]->size);
        if (conf_sections[i]->defaults)
            conf_sections[i]->defaults(conf->sections[i]);
    }
}

/*
 * Every listener names a pool, or has none when routes exist (what no route
 * matches then gets 404); remember its index.
 */
static int resolve_listeners(struct conf_loader *ld, const config_setting_t *root,
                             struct veer_conf *conf)
{
    const config_setting_t *list = config_setting_get_member(root, "listen");
    const config_setting_t *e, *m;
    const struct conf_pool *p;
    int i;

    for (i = 0; i < conf->nlistens; i++) {
        e = config_setting_get_elem(list, i);
        if (conf->listens[i].pool == NULL) {
            if (conf->nroutes > 0)
                continue;
            return fail(ld, e,
                        "missing required key 'pool' in %s (only a config with routes may "
                        "leave it out)",
                        where(ld, e));
        }
        p = conf_find_pool(conf, conf->listens[i].pool);
        if (p != NULL) {
            conf->listens[i].pool_index = (int)(p - conf->pools);
            continue;
        }
        m = config_setting_get_member(e, "pool");
        return fail(ld, m, "%s: unknown pool '%s'", where(ld, m), conf->listens[i].pool);
    }
    return 0;
}

/*
 * The route's retries are its pool's with the keys the route sets over them
 * (txn.c merges them per request, against the pool the route sends to
 * then); here: that the result with its configured pool is consistent.
 */
static int check_route_retries(struct conf_loader *ld, const config_setting_t *e,
                               const struct conf_route *r, const struct conf_pool *p)
{
    const config_setting_t *s = config_setting_get_member(e, "retries"), *cap;
    const struct conf_retries *set = &r->retries_set;
    int base = set->base_ms >= 0 ? set->base_ms : p->retries.base_ms;
    int capv = set->cap_ms >= 0 ? set->cap_ms : p->retries.cap_ms;

    if (s == NULL || capv >= base)
        return 0;
    cap = config_setting_get_member(s, "cap_ms");
    return fail(ld, cap ? cap : s, "%s.cap_ms (%d) must be >= base_ms (%d, with the pool's)",
                where(ld, s), capv, base);
}

bool conf_route_plain(const struct conf_route *r)
{
    const struct conf_retries *set = &r->retries_set;

    return r->upstream_response_ms < 0 && r->body_bytes < 0 && r->hold_ms < 0 && set->count < 0 &&
           set->base_ms < 0 && set->cap_ms < 0 && set->budget_percent < 0 &&
           r->rewrite_prefix == NULL && r->nset_headers == 0 && r->remove_headers.n == 0;
}

void conf_route_effective(const struct veer_conf *c, const struct conf_route *r,
                          const struct conf_pool *p, struct conf_route_eff *out)
{
    const struct conf_retries *set = &r->retries_set;

    out->retries = p->retries;
    if (set->count >= 0)
        out->retries.count = set->count;
    if (set->base_ms >= 0)
        out->retries.base_ms = set->base_ms;
    if (set->cap_ms >= 0)
        out->retries.cap_ms = set->cap_ms;
    if (set->budget_percent >= 0)
        out->retries.budget_percent = set->budget_percent;
    if (out->retries.cap_ms < out->retries.base_ms)
        out->retries.cap_ms = out->retries.base_ms; /* another pool's base over the route's cap */
    out->hold_ms = r->hold_ms >= 0 ? r->hold_ms : p->hold_ms;
    out->body_bytes = r->body_bytes >= 0   ? r->body_bytes
                      : p->body_bytes >= 0 ? p->body_bytes
                                           : c->limits.body_bytes;
}

/* Pool, and the keys that need others, for route i. */
static int resolve_route(struct conf_loader *ld, const config_setting_t *e, struct veer_conf *conf,
                         struct conf_route *r)
{
    const config_setting_t *m;
    const struct conf_pool *p = conf_find_pool(conf, r->pool);

    if (p == NULL) {
        m = config_setting_get_member(e, "pool");
        return fail(ld, m, "%s: unknown pool '%s'", where(ld, m), r->pool);
    }
    r->pool_index = (int)(p - conf->pools);
    if (r->rewrite_prefix != NULL && r->path == NULL && r->path_prefix == NULL) {
        m = config_setting_get_member(e, "rewrite_prefix");
        return fail(ld, m,
                    "%s needs match.path or match.path_prefix: it replaces what they matched",
                    where(ld, m));
    }
    if (r->has_mirror && check_mirror_group(ld, e, &r->mirror, p) < 0)
        return -1;
    return check_route_retries(ld, e, r, p);
}

/*
 * Check every route against the pools, then compile the table (routes.h)
 * once, for every snapshot of this configuration; what routes_build refuses
 * is reported at the route's match (or the route when it has none).
 */
static int resolve_routes(struct conf_loader *ld, const config_setting_t *root,
                          struct veer_conf *conf)
{
    const config_setting_t *list = config_setting_get_member(root, "routes"), *e, *m;
    struct routes_spec *specs;
    struct routes_header *hdrs;
    struct routes_error rerr = {0};
    int i, k, nh = 0;

    for (i = 0; i < conf->nroutes; i++) {
        if (resolve_route(ld, config_setting_get_elem(list, i), conf, &conf->routes[i]) < 0)
            return -1;
        nh += conf->routes[i].nheaders;
    }
    if (conf->nroutes == 0)
        return 0;
    specs = veer_calloc((size_t)conf->nroutes, sizeof(*specs));
    hdrs = veer_calloc(nh ? (size_t)nh : 1, sizeof(*hdrs));
    for (i = 0, nh = 0; i < conf->nroutes; i++) {
        const struct conf_route *r = &conf->routes[i];

        specs[i] = (struct routes_spec){.name = r->name,
                                        .host = r->host,
                                        .path = r->path,
                                        .path_prefix = r->path_prefix,
                                        .methods = (const char *const *)r->methods.v,
                                        .nmethods = (size_t)r->methods.n,
                                        .headers = hdrs + nh,
                                        .nheaders = (size_t)r->nheaders};
        for (k = 0; k < r->nheaders; k++)
            hdrs[nh++] = (struct routes_header){r->headers[k].name, r->headers[k].value};
    }
    conf->routes_table = routes_build(specs, (size_t)conf->nroutes, &rerr);
    free(specs);
    free(hdrs);
    if (conf->routes_table != NULL)
        return 0;
    e = config_setting_get_elem(list, (unsigned)(rerr.index >= 0 ? rerr.index : 0));
    m = config_setting_get_member(e, "match");
    return fail(ld, m ? m : e, "%s: %s", where(ld, m ? m : e), rerr.msg);
}

/* Skip a comment, string or directive at p; returns p itself if there is none. */
static const char *skip_non_code(const char *p, const char *end, int *line)
{
    if (*p == '#' || *p == '@' || (*p == '/' && p + 1 < end && p[1] == '/')) {
        while (p < end && *p != '\n')
            p++;
    } else if (*p == '/' && p + 1 < end && p[1] == '*') {
        for (p += 2; p < end && !(*p == '*' && p + 1 < end && p[1] == '/'); p++)
            *line += *p == '\n';
        p = p + 2 < end ? p + 2 : end;
    } else if (*p == '"') {
        for (p++; p < end && *p != '"'; p++) {
            p += *p == '\\' && p + 1 < end;
            *line += *p == '\n'; /* libconfig takes a string over several lines */
        }
        p = p < end ? p + 1 : end;
    }
    return p;
}

/*
 * Scan the number at p (a digit); set *bad when it is an integer without
 * an L suffix that libconfig 1.5 cannot hold in 32 bits. Returns its end.
 */
static const char *scan_number(const char *p, const char *end, bool neg, bool *bad)
{
    const char *start = p;
    bool hex = end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    bool flt = false, wide = false;
    unsigned long long v;

    for (p += hex ? 2 : 0; p < end; p++) {
        bool exp_sign = !hex && (*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E');

        if (!isalnum((unsigned char)*p) && *p != '.' && !exp_sign)
            break;
        flt |= !hex && (*p == '.' || *p == 'e' || *p == 'E');
        wide |= *p == 'L';
    }
    *bad = false;
    if (flt || wide)
        return p;
    errno = 0;
    v = strtoull(start, NULL, hex ? 16 : 10);
    *bad = errno == ERANGE || v > (neg ? 2147483648ull : 2147483647ull);
    return p;
}

/*
 * libconfig 1.5 silently wraps an integer literal that does not fit in 32
 * bits unless it carries an L suffix (3000000000 reads as -1294967296).
 * Scan the text libconfig accepted and refuse such literals, rather than
 * run with a value the operator never wrote.
 */
static int scan_wide_ints(struct conf_loader *ld, const char *file, const char *text,
                          const char *end)
{
    const char *p = text, *next;
    int line = 1;
    bool neg, bad;

    while (p < end) {
        next = skip_non_code(p, end, &line);
        if (next != p) {
            p = next;
        } else if (isalpha((unsigned char)*p) || *p == '*' || *p == '.') {
            /* a name, a keyword, or the fraction of a float like .5 */
            while (p < end && (isalnum((unsigned char)*p) || strchr("-_*.", *p) != NULL))
                p++;
        } else if (isdigit((unsigned char)*p)) {
            neg = p > text && p[-1] == '-';
            next = scan_number(p, end, neg, &bad);
            if (bad)
                return fail_at(ld, file, line,
                               "integer %s%.*s does not fit in 32 bits: write %s%.*sL for a "
                               "64-bit value",
                               neg ? "-" : "", (int)(next - p), p, neg ? "-" : "", (int)(next - p),
                               p);
            p = next;
        } else {
            line += *p++ == '\n';
        }
    }
    return 0;
}

static int read_all(const char *name, char **out, size_t *len)
{
    FILE *f = fopen(name, "r");
    size_t cap = 4096, n = 0, got;
    char *buf;

    if (f == NULL)
        return -1;
    buf = veer_malloc(cap);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = veer_realloc(buf, cap *= 2);
    }
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
}

/* libconfig 1.5's limit on nested @include (deeper, it reports an error itself). */
#define INCLUDE_DEPTH_MAX 10

/*
 * The files `file` @includes must be regular files: given a directory,
 * libconfig 1.5's scanner fails to read it and calls exit() ("input in
 * flex scanner failed"), so veer would die, and a reload would take the
 * running process down, without saying where. Checked before libconfig
 * parses, through nested includes; a missing file is left to libconfig
 * ("cannot open include file"). Paths are taken as libconfig takes them
 * (no include directory set: relative to the working directory). Returns
 * 0, -1 (error set) or 1 (nested deeper than libconfig goes: it reports
 * that itself, and the scan stops at once).
 */
static int check_includes(struct conf_loader *ld, const char *file, int depth)
{
    char *text, path[PATH_MAX];
    const char *p, *end, *next;
    size_t len, n;
    struct stat st;
    int line = 1, rc = 0;
    bool bol = true;

    if (depth > INCLUDE_DEPTH_MAX)
        return 1; /* too deep: libconfig says so; stop here (a file including itself N times
                     would otherwise be scanned N^10 times) */
    if (read_all(file, &text, &len) < 0)
        return 0;
    for (p = text, end = text + len; p < end && rc == 0;) {
        const char *d = p;

        while (bol && d < end && (*d == ' ' || *d == '\t'))
            d++;
        if (bol && end - d > 8 && memcmp(d, "@include", 8) == 0 && (d[8] == ' ' || d[8] == '\t')) {
            for (d += 8; d < end && (*d == ' ' || *d == '\t'); d++)
                ;
            for (n = 0, d += d < end && *d == '"'; d < end && *d != '"' && *d != '\n'; d++) {
                d += *d == '\\' && d + 1 < end;
                if (n + 1 < sizeof(path))
                    path[n++] = *d;
            }
            path[n] = '\0';
            if (n > 0 && stat(path, &st) == 0 && !S_ISREG(st.st_mode))
                rc = fail_at(ld, file, line, "@include \"%s\": %s", path,
                             S_ISDIR(st.st_mode) ? "is a directory, not a file"
                                                 : "not a regular file");
            else if (n > 0 && stat(path, &st) == 0)
                rc = check_includes(ld, path, depth + 1);
        }
        next = skip_non_code(p, end, &line);
        if (next == p) {
            bol = *p == '\n';
            line += bol;
            p++;
        } else {
            bol = false;
            p = next;
        }
    }
    free(text);
    return rc;
}

static int check_wide_ints(struct conf_loader *ld, const config_t *cf)
{
    unsigned int i;
    char *text;
    size_t len;
    int rc = 0;

    for (i = 0; i < cf->num_filenames && rc == 0; i++) {
        if (read_all(cf->filenames[i], &text, &len) < 0)
            continue; /* libconfig just read it; nothing better to say */
        rc = scan_wide_ints(ld, cf->filenames[i], text, text + len);
        free(text);
    }
    return rc;
}

/* Parse the file; syntax and I/O errors become "FILE:LINE: message". */
static int read_config(struct conf_loader *ld, config_t *cf)
{
    FILE *f;

    if (check_includes(ld, ld->file, 1) < 0) /* 1: stopped, too deep */
        return -1;
    if (config_read_file(cf, ld->file) == CONFIG_TRUE)
        return check_wide_ints(ld, cf);
    if (config_error_type(cf) != CONFIG_ERR_FILE_IO)
        return fail_at(ld, config_error_file(cf) ? config_error_file(cf) : ld->file,
                       config_error_line(cf), "%s", config_error_text(cf));
    f = fopen(ld->file, "r");
    if (f == NULL)
        return fail_at(ld, ld->file, 0, "cannot read config: %s", strerror(errno));
    fclose(f);
    return fail_at(ld, ld->file, 0, "cannot read config: %s", config_error_text(cf));
}

struct veer_conf *conf_load(const char *path, char *err, size_t errlen)
{
    struct conf_loader ld = {.file = path, .err = err, .errlen = errlen};
    struct veer_conf *conf = NULL;
    config_t cf;

    config_init(&cf);
    if (read_config(&ld, &cf) < 0)
        goto fail;
    conf = veer_calloc(1, sizeof(*conf));
    conf->path = veer_strdup(path);
    conf_defaults(conf);
    sections_create(conf);
    ld.conf = conf;
    if (parse_group(&ld, config_root_setting(&cf), top_fields, conf) < 0 ||
        resolve_listeners(&ld, config_root_setting(&cf), conf) < 0 ||
        resolve_routes(&ld, config_root_setting(&cf), conf) < 0 || resolve_discover(&ld, conf) < 0)
        goto fail;
    config_destroy(&cf);
    return conf;
fail:
    config_destroy(&cf);
    conf_free(conf);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Freeing and lookups                                                      */

static void free_strings(char **v, int n)
{
    int i;

    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_listen(struct conf_listen *l)
{
    int i;

    free(l->pool);
    if (l->tls == NULL)
        return;
    for (i = 0; i < l->tls->ncerts; i++) {
        free(l->tls->certs[i].cert);
        free(l->tls->certs[i].key);
        free(l->tls->certs[i].ocsp);
    }
    if (l->tls->server_free)
        l->tls->server_free(l->tls->server);
    free(l->tls->certs);
    free(l->tls->protocols);
    free(l->tls->ciphers);
    free(l->tls);
}

static void free_mirror(struct conf_mirror *m)
{
    free(m->group);
    free_strings(m->methods.v, m->methods.n);
    free_strings(m->headers.v, m->headers.n);
    free_strings(m->ignore.v, m->ignore.n);
}

static void free_pool(struct conf_pool *p)
{
    int i;

    free(p->name);
    free(p->health.path);
    free(p->override_header);
    free(p->sticky.header);
    free(p->sticky.cookie);
    if (p->tls.client_free)
        p->tls.client_free(p->tls.client);
    free(p->tls.ca);
    free(p->tls.sni);
    for (i = 0; i < p->nbackends; i++) {
        free(p->backends[i].name);
        free(p->backends[i].group);
    }
    free(p->backends);
    hmap_free(&p->backend_index);
    for (i = 0; i < p->nshares; i++)
        free(p->shares[i].group);
    free(p->shares);
    for (i = 0; i < p->ndiscover; i++) {
        free(p->discover[i].name);
        free(p->discover[i].dns);
        free(p->discover[i].host);
        free(p->discover[i].srv);
        free(p->discover[i].group);
    }
    free(p->discover);
    free_mirror(&p->mirror);
}

static void free_headers(struct conf_header *h, int n)
{
    for (int i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void free_route(struct conf_route *r)
{
    free(r->name);
    free(r->pool);
    free(r->host);
    free(r->path);
    free(r->path_prefix);
    free_strings(r->methods.v, r->methods.n);
    free_headers(r->headers, r->nheaders);
    free(r->rewrite_prefix);
    free_headers(r->set_headers, r->nset_headers);
    free_strings(r->remove_headers.v, r->remove_headers.n);
    free_mirror(&r->mirror);
}

/* Free the strings and string lists the rows of fields filled in obj. */
static void free_fields(const struct conf_field *fields, char *obj)
{
    const struct conf_field *f;

    for (f = fields; f->name != NULL; f++) {
        if (f->kind == CONF_K_STRING) {
            free(*(char **)(obj + f->off));
        } else if (f->kind == CONF_K_STRINGS) {
            struct conf_strings *l = (struct conf_strings *)(obj + f->off);

            free_strings(l->v, l->n);
        } else if (f->kind == CONF_K_GROUP) {
            free_fields(f->sub, obj + f->off);
        }
    }
}

static void sections_free(struct veer_conf *conf)
{
    int i;

    if (conf->sections == NULL)
        return;
    for (i = 0; conf_sections[i] != NULL; i++) {
        if (conf->sections[i] == NULL)
            continue;
        free_fields(conf_sections[i]->keys, conf->sections[i]);
        if (conf_sections[i]->free)
            conf_sections[i]->free(conf->sections[i]);
        free(conf->sections[i]);
    }
    free(conf->sections);
}

/* Free conf and everything it owns; conf may be partly filled, or NULL. */
void conf_free(struct veer_conf *conf)
{
    int i;

    if (conf == NULL)
        return;
    for (i = 0; i < conf->nlistens; i++)
        free_listen(&conf->listens[i]);
    free(conf->listens);
    for (i = 0; i < conf->npools; i++)
        free_pool(&conf->pools[i]);
    free(conf->pools);
    hmap_free(&conf->pool_index);
    for (i = 0; i < conf->nroutes; i++)
        free_route(&conf->routes[i]);
    free(conf->routes);
    routes_free(conf->routes_table);
    if (conf->admin.http_tls) {
        if (conf->admin.http_tls->ctx_free)
            conf->admin.http_tls->ctx_free(conf->admin.http_tls->ctx);
        free(conf->admin.http_tls->cert);
        free(conf->admin.http_tls->key);
        free(conf->admin.http_tls->client_ca);
        free(conf->admin.http_tls);
    }
    free(conf->admin.socket);
    free(conf->admin.owner);
    free(conf->admin.group);
    free(conf->state_file);
    free(conf->audit_log);
    sections_free(conf);
    free_strings(conf->cluster.etcd, conf->cluster.netcd);
    free(conf->cluster.prefix);
    free(conf->cluster.instance);
    free(conf->resolvers.servers);
    for (i = 0; i < conf->npreflights; i++) {
        struct conf_preflight *pf = &conf->preflights[i];

        for (int k = 0; k < pf->nrequests; k++) {
            free(pf->requests[k].method);
            free(pf->requests[k].path);
            free(pf->requests[k].expect_body_contains);
        }
        free(pf->requests);
        free(pf->name);
    }
    free(conf->preflights);
    free(conf->path);
    free(conf);
}

const struct conf_pool *conf_find_pool(const struct veer_conf *conf, const char *name)
{
    uintptr_t *i = hmap_find_str(&conf->pool_index, name);

    return i ? &conf->pools[*i] : NULL;
}

const struct conf_backend *conf_find_backend(const struct conf_pool *p, const char *name)
{
    uintptr_t *i = p ? hmap_find_str(&p->backend_index, name) : NULL;

    return i ? &p->backends[*i] : NULL;
}

const void *conf_section(const struct veer_conf *conf, const struct conf_section *sec)
{
    for (int i = 0; conf_sections[i] != NULL; i++)
        if (conf_sections[i] == sec)
            return conf->sections[i];
    return NULL;
}

/* The value of dotted key in obj, filled by the rows of fields; NULL when none has it. */
static const void *field_value(const struct conf_field *fields, const char *obj, const char *key)
{
    const char *dot = strchr(key, '.');
    size_t n = dot ? (size_t)(dot - key) : strlen(key);
    const struct conf_field *f;

    for (f = fields; f->name != NULL; f++) {
        if (strlen(f->name) != n || memcmp(f->name, key, n) != 0)
            continue;
        if (f->kind == CONF_K_CUSTOM)
            return NULL;
        if (dot == NULL)
            return obj + f->off;
        return f->kind == CONF_K_GROUP ? field_value(f->sub, obj + f->off, dot + 1) : NULL;
    }
    return NULL;
}

const void *conf_value(const struct veer_conf *conf, const char *key)
{
    for (int i = 0; conf_sections[i] != NULL; i++) {
        const struct conf_section *sec = conf_sections[i];
        const char *k = key;
        const void *v;

        if (conf->sections[i] == NULL)
            continue;
        if (sec->group != NULL) {
            size_t n = strlen(sec->group);

            if (strncmp(k, sec->group, n) != 0 || k[n] != '.')
                continue;
            k += n + 1;
        }
        v = field_value(sec->keys, conf->sections[i], k);
        if (v != NULL)
            return v;
    }
    return NULL;
}
