/*
 * cmd.c - the admin command parser: one line of the veerctl / admin socket
 * protocol (ARCHITECTURE.md, "Admin socket protocol and veerctl") becomes a
 * struct cmd, or a one-line reason why not. Nothing here reads or changes
 * routing state and nothing is allocated: the line is copied into a buffer
 * on the stack, split into words in place, and every value the caller will
 * use is copied into the fixed-size struct cmd.
 */
#include "cmd.h"
#include "veer.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_WORDS 128 /* more words than any command can use */
#define ECHO_MAX  64  /* how much of an offending word an error quotes */

/* The longest duration accepted: its value in microseconds still fits an int64_t. */
#define DURATION_MAX_MS (INT64_MAX / 1000)

#define RETRY_AFTER_MAX 86400
#define WEIGHT_MAX      1000

static const char digits[] = "0123456789";

/* Options, as bits: a command lists the ones it accepts. */
enum {
    OPT_JSON = 1u << 0,
    OPT_FORCE = 1u << 1,
    OPT_WAIT = 1u << 2,
    OPT_TIMEOUT = 1u << 3,
    OPT_RETRY_AFTER = 1u << 4,
    OPT_HOLD = 1u << 5,
};

struct cmd_def;

/* One parse in progress: the words of the line and where the result goes. */
struct parser {
    struct cmd *c;
    char *err;
    size_t errlen;
    const struct cmd_def *def;
    char *word[MAX_WORDS]; /* every word of the line */
    int nword;
    char *arg[MAX_WORDS]; /* the words after the command words that are not options */
    int narg;
    unsigned seen; /* options given */
    char buf[CMD_LINE_MAX + 1];
};

/* A command: its words, its usage (also quoted by cmd_help), the options it takes. */
struct cmd_def {
    enum cmd_kind kind;
    const char *w1;
    const char *w2; /* NULL for one-word commands */
    const char *usage;
    unsigned opts;
    bool change;
    int (*parse)(struct parser *p);
};

static const char *const kind_names[] = {
    [CMD_HELP] = "help",
    [CMD_SHOW_POOLS] = "show pools",
    [CMD_SHOW_POOL] = "show pool",
    [CMD_SET_WEIGHT] = "set weight",
    [CMD_SET_STATE] = "set state",
    [CMD_SHIFT] = "shift",
    [CMD_SWAP] = "swap",
    [CMD_ROLLBACK] = "rollback",
    [CMD_ADD_BACKEND] = "add backend",
    [CMD_DEL_BACKEND] = "del backend",
    [CMD_DRAIN] = "drain",
    [CMD_REPLACE] = "replace",
    [CMD_MAINTENANCE] = "maintenance",
    [CMD_ROLLOUT_START] = "rollout start",
    [CMD_ROLLOUT_STATUS] = "rollout status",
    [CMD_ROLLOUT_PAUSE] = "rollout pause",
    [CMD_ROLLOUT_RESUME] = "rollout resume",
    [CMD_ROLLOUT_ABORT] = "rollout abort",
    [CMD_AUDIT_VERIFY] = "audit verify",
    [CMD_RELOAD] = "reload",
    [CMD_UPGRADE] = "upgrade",
    [CMD_SHOW_CLUSTER] = "show cluster",
    [CMD_SHOW_STATS] = "show stats",
    [CMD_ROUTE_EXPLAIN] = "route explain",
    [CMD_SHOW_ROUTES] = "show routes",
    [CMD_ROUTE_MAINT] = "route maintenance",
    [CMD_ROUTE_SET] = "route set",
    [CMD_SHOW_DISCOVERY] = "show discovery",
    [CMD_MIRROR] = "mirror",
    [CMD_MIRROR_REPORT] = "mirror report",
};

_Static_assert(ARRAY_SIZE(kind_names) == CMD_MIRROR_REPORT + 1, "a kind without a name");

/*
 * Replace every byte that is not printable ASCII by '?', so a reason that
 * quotes garbage from the client is still one printable line.
 */
static void sanitize(char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch < 0x20 || ch >= 0x7f)
            *s = '?';
    }
}

/*
 * Write the reason for a refusal into the caller's buffer (truncated to
 * errlen, always NUL-terminated when errlen > 0) and return -1, so parse
 * functions can end with "return fail(...)".
 */
__attribute__((format(printf, 2, 3))) static int fail(struct parser *p, const char *fmt, ...)
{
    va_list ap;

    if (p->err == NULL || p->errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(p->err, p->errlen, fmt, ap);
    va_end(ap);
    sanitize(p->err);
    return -1;
}

static int usage(struct parser *p)
{
    return fail(p, "usage: %s", p->def->usage);
}

/* How many bytes of a word of length n an error quotes. */
static int echo_len(size_t n)
{
    return n > ECHO_MAX ? ECHO_MAX : (int)n;
}

/*
 * Strict decimal: s[0..n) is one or more digits, nothing else (no sign, no
 * space, no suffix). Returns 0 with the value in *out, -1 when s is not a
 * number, -2 when it is a number above max (overflow included).
 */
static int parse_digits(const char *s, size_t n, int64_t max, int64_t *out)
{
    int64_t v = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    for (size_t i = 0; i < n; i++) {
        int d = s[i] - '0';

        if (v > (max - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/*
 * An integer word in min..max for the value called `what`; the errors say
 * which value was bad and quote what was given.
 */
static int parse_int(struct parser *p, const char *s, const char *what, int min, int max, int *out)
{
    int64_t v;
    int r = parse_digits(s, strlen(s), max, &v);

    if (r == -1)
        return fail(p, "bad %s '%.*s': expected an integer %d..%d", what, echo_len(strlen(s)), s,
                    min, max);
    if (r == -2 || v < min)
        return fail(p, "%s must be %d..%d (got %.*s)", what, min, max, echo_len(strlen(s)), s);
    *out = (int)v;
    return 0;
}

/*
 * "250ms", "30s", "2m" or a plain number of seconds, strictly: no sign,
 * space or fraction. Values whose microseconds would not fit an int64_t are
 * refused like malformed ones, so callers may convert without overflow.
 */
int64_t cmd_parse_duration(const char *s)
{
    size_t n;
    int64_t mult, v;
    const char *unit;

    if (s == NULL)
        return -1;
    n = strspn(s, digits);
    unit = s + n;
    if (strcmp(unit, "ms") == 0)
        mult = 1;
    else if (strcmp(unit, "s") == 0 || *unit == '\0')
        mult = 1000;
    else if (strcmp(unit, "m") == 0)
        mult = 60000;
    else
        return -1;
    if (parse_digits(s, n, DURATION_MAX_MS / mult, &v) != 0 || v == 0)
        return -1;
    return v * mult;
}

/* A duration word for `what` (an option or a key), with an error naming it. */
static int parse_duration(struct parser *p, const char *s, const char *what, int64_t *out)
{
    *out = cmd_parse_duration(s);
    if (*out < 0)
        return fail(p, "bad duration '%.*s' for %s (e.g. 250ms, 30s, 2m)", echo_len(strlen(s)), s,
                    what);
    return 0;
}

static bool name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

/* Backend names also take ':', '[' and ']': discovery names them "<entry>-<address>". */
static bool backend_char(char ch)
{
    return name_char(ch) || ch == ':' || ch == '[' || ch == ']';
}

/*
 * Check that s[0..n) is a name ([A-Za-z0-9._-]+, shorter than CMD_NAME_MAX;
 * a backend's may also hold ':[]') and copy it, NUL-terminated, into dst
 * (CMD_NAME_MAX bytes). `role` says what the name is for in the error
 * ("pool", "backend", "group").
 */
static int copy_name(struct parser *p, char *dst, const char *s, size_t n, const char *role)
{
    bool backend = strcmp(role, "backend") == 0;

    if (n == 0)
        return fail(p, "bad name '': %s name is empty", role);
    for (size_t i = 0; i < n; i++)
        if (!(backend ? backend_char(s[i]) : name_char(s[i])))
            return fail(p, "bad name '%.*s' (%s names use A-Z a-z 0-9 . _ -%s)", echo_len(n), s,
                        role, backend ? " : [ ]" : "");
    if (n >= CMD_NAME_MAX)
        return fail(p, "bad name '%.*s...': %s names are at most %d bytes (got %zu)", echo_len(n),
                    s, role, CMD_NAME_MAX - 1, n);
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

static int set_name(struct parser *p, char *dst, const char *s, const char *role)
{
    return copy_name(p, dst, s, strlen(s), role);
}

/* POOL/BACKEND: exactly one '/', both sides names. */
static int set_backend_ref(struct parser *p, const char *s)
{
    const char *slash = strchr(s, '/');

    if (slash == NULL || slash == s || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
        return fail(p, "bad backend '%.*s': expected POOL/BACKEND", echo_len(strlen(s)), s);
    if (copy_name(p, p->c->pool, s, (size_t)(slash - s), "pool") < 0)
        return -1;
    return set_name(p, p->c->backend, slash + 1, "backend");
}

/* The port after the host of an address: decimal, 1..65535. */
static int check_port(struct parser *p, const char *addr, const char *port)
{
    int64_t v;
    int r = parse_digits(port, strlen(port), 65535, &v);

    if (r == -1)
        return fail(p, "bad port '%.*s' in address '%.*s'", echo_len(strlen(port)), port,
                    echo_len(strlen(addr)), addr);
    if (r == -2 || v == 0)
        return fail(p, "port must be 1..65535 (got %.*s)", echo_len(strlen(port)), port);
    return 0;
}

/*
 * A backend address, checked for syntax only (the caller resolves it):
 * "A.B.C.D:PORT", "localhost:PORT" or "[IPV6]:PORT". Copied into c->addr.
 */
static int set_addr(struct parser *p, const char *s)
{
    char host[INET6_ADDRSTRLEN + 1];
    unsigned char bin[sizeof(struct in6_addr)];
    const char *colon, *h = s;
    size_t hlen, n = strlen(s);
    int af = AF_INET;

    if (n >= sizeof(p->c->addr))
        return fail(p, "bad address '%.*s...': longer than %zu bytes", echo_len(n), s,
                    sizeof(p->c->addr) - 1);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            return fail(p, "bad address '%.*s': expected [IPV6]:PORT", echo_len(n), s);
        h = s + 1;
        colon = close + 1;
        hlen = (size_t)(close - h);
        af = AF_INET6;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return fail(p, "bad address '%.*s': expected HOST:PORT", echo_len(n), s);
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL)
            return fail(p, "bad address '%.*s': an IPv6 address goes in brackets, [IPV6]:PORT",
                        echo_len(n), s);
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return fail(p, "bad address '%.*s': expected a numeric host or localhost", echo_len(n), s);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!(af == AF_INET && strcmp(host, "localhost") == 0) && inet_pton(af, host, bin) != 1)
        return fail(p, "bad address '%.*s': expected a numeric host or localhost", echo_len(n), s);
    if (check_port(p, s, colon + 1) < 0)
        return -1;
    memcpy(p->c->addr, s, n + 1);
    return 0;
}

/* ---- options ---------------------------------------------------------- */

struct opt_def {
    const char *name;
    unsigned bit;
    bool takes_value;
};

static const struct opt_def opt_defs[] = {
    {"--json", OPT_JSON, false},
    {"--force", OPT_FORCE, false},
    {"--wait", OPT_WAIT, false},
    {"--timeout", OPT_TIMEOUT, true},
    {"--retry-after", OPT_RETRY_AFTER, true},
    {"--hold", OPT_HOLD, true},
};

static const struct opt_def *find_opt(const char *s, size_t n)
{
    for (size_t i = 0; i < ARRAY_SIZE(opt_defs); i++)
        if (strlen(opt_defs[i].name) == n && strncmp(opt_defs[i].name, s, n) == 0)
            return &opt_defs[i];
    return NULL;
}

/* Store the value of an option that takes one. */
static int set_opt_value(struct parser *p, const struct opt_def *o, const char *v)
{
    struct cmd *c = p->c;

    switch (o->bit) {
    case OPT_TIMEOUT:
        return parse_duration(p, v, o->name, &c->timeout_ms);
    case OPT_HOLD:
        return parse_duration(p, v, o->name, &c->hold_ms);
    default:
        return parse_int(p, v, o->name, 0, RETRY_AFTER_MAX, &c->retry_after);
    }
}

/* An unknown option; if it is a known one written --name=value, say how to write it. */
static int unknown_opt(struct parser *p, const char *w)
{
    const char *eq = strchr(w, '=');
    const struct opt_def *o = eq ? find_opt(w, (size_t)(eq - w)) : NULL;

    if (o != NULL && o->takes_value)
        return fail(p, "option %s takes its value as the next word (%s %.*s)", o->name, o->name,
                    echo_len(strlen(eq + 1)), eq + 1);
    return fail(p, "unknown option %.*s", echo_len(strlen(w)), w);
}

/*
 * Take the options out of the words after the command words (at index
 * `first`), checking that the command accepts each, once; what is left,
 * in order, becomes p->arg.
 */
static int split_options(struct parser *p, int first)
{
    struct cmd *c = p->c;

    for (int i = first; i < p->nword; i++) {
        const char *w = p->word[i];
        const struct opt_def *o;

        if (strncmp(w, "--", 2) != 0) {
            p->arg[p->narg++] = p->word[i];
            continue;
        }
        o = find_opt(w, strlen(w));
        if (o == NULL)
            return unknown_opt(p, w);
        if (!(p->def->opts & o->bit))
            return fail(p, "option %s is not valid for %s", o->name, cmd_kind_name(c->kind));
        if (p->seen & o->bit)
            return fail(p, "option %s given twice", o->name);
        p->seen |= o->bit;
        c->json |= o->bit == OPT_JSON;
        c->force |= o->bit == OPT_FORCE;
        c->wait |= o->bit == OPT_WAIT;
        if (!o->takes_value)
            continue;
        if (i + 1 >= p->nword || strncmp(p->word[i + 1], "--", 2) == 0)
            return fail(p, "option %s needs a value", o->name);
        if (set_opt_value(p, o, p->word[++i]) < 0)
            return -1;
    }
    return 0;
}

/* ---- commands --------------------------------------------------------- */

/* help, show pools, show cluster, reload, upgrade: no arguments. */
static int parse_none(struct parser *p)
{
    return p->narg == 0 ? 0 : usage(p);
}

/* show pool, swap, rollback, rollout status|pause|resume|abort: one pool. */
static int parse_pool(struct parser *p)
{
    if (p->narg != 1)
        return usage(p);
    return set_name(p, p->c->pool, p->arg[0], "pool");
}

/* rollback POOL, or rollback route ROUTE. */
static int parse_rollback(struct parser *p)
{
    if (p->narg == 2 && strcmp(p->arg[0], "route") == 0)
        return set_name(p, p->c->route, p->arg[1], "route");
    return parse_pool(p);
}

/* route maintenance ROUTE on|off */
static int parse_route_maint(struct parser *p)
{
    const char *s;

    if (p->narg != 2)
        return usage(p);
    if (set_name(p, p->c->route, p->arg[0], "route") < 0)
        return -1;
    s = p->arg[1];
    if (strcmp(s, "on") != 0 && strcmp(s, "off") != 0)
        return fail(p, "route maintenance takes on or off (got '%.*s')", echo_len(strlen(s)), s);
    p->c->on = strcmp(s, "on") == 0;
    return 0;
}

/* route set ROUTE pool POOL */
static int parse_route_set(struct parser *p)
{
    if (p->narg != 3 || strcmp(p->arg[1], "pool") != 0)
        return usage(p);
    if (set_name(p, p->c->route, p->arg[0], "route") < 0)
        return -1;
    return set_name(p, p->c->pool, p->arg[2], "pool");
}

static int parse_set_weight(struct parser *p)
{
    if (p->narg != 2)
        return usage(p);
    if (set_backend_ref(p, p->arg[0]) < 0)
        return -1;
    return parse_int(p, p->arg[1], "weight", 0, WEIGHT_MAX, &p->c->weight);
}

static int parse_set_state(struct parser *p)
{
    static const char *const states[] = {
        [CMD_STATE_READY] = "ready",
        [CMD_STATE_DRAIN] = "drain",
        [CMD_STATE_MAINT] = "maint",
    };
    const char *s;

    if (p->narg != 2)
        return usage(p);
    if (set_backend_ref(p, p->arg[0]) < 0)
        return -1;
    s = p->arg[1];
    for (size_t i = 0; i < ARRAY_SIZE(states); i++) {
        if (strcmp(s, states[i]) == 0) {
            p->c->state = (enum cmd_state_target)i;
            return 0;
        }
    }
    return fail(p, "state must be ready, drain or maint (got '%.*s')", echo_len(strlen(s)), s);
}

/* One GROUP=PERCENT of a shift, appended to c->shares. */
static int add_share(struct parser *p, const char *s)
{
    struct cmd *c = p->c;
    struct cmd_share *sh = &c->shares[c->nshares];
    const char *eq = strchr(s, '=');
    int64_t v;
    int r;

    if (eq == NULL || eq == s || eq[1] == '\0')
        return fail(p, "bad share '%.*s': expected GROUP=PERCENT", echo_len(strlen(s)), s);
    if (c->nshares == CMD_MAX_SHARES)
        return fail(p, "too many groups (max %d)", CMD_MAX_SHARES);
    if (copy_name(p, sh->group, s, (size_t)(eq - s), "group") < 0)
        return -1;
    r = parse_digits(eq + 1, strlen(eq + 1), 100, &v);
    if (r == -1)
        return fail(p, "bad share '%.*s': expected GROUP=PERCENT", echo_len(strlen(s)), s);
    if (r == -2)
        return fail(p, "share for '%s' must be 0..100 (got %.*s)", sh->group,
                    echo_len(strlen(eq + 1)), eq + 1);
    for (int i = 0; i < c->nshares; i++)
        if (strcmp(c->shares[i].group, sh->group) == 0)
            return fail(p, "group '%s' named twice", sh->group);
    sh->share = (int)v;
    c->nshares++;
    return 0;
}

/* shift P g1=S1 [...]: the sum is checked by the caller, against the pool's other groups. */
static int parse_shift(struct parser *p)
{
    if (p->narg < 2)
        return usage(p);
    if (set_name(p, p->c->pool, p->arg[0], "pool") < 0)
        return -1;
    for (int i = 1; i < p->narg; i++)
        if (add_share(p, p->arg[i]) < 0)
            return -1;
    return 0;
}

/* add backend P NAME ADDR [weight W] [group G]: the pairs in any order, once each. */
static int parse_add_backend(struct parser *p)
{
    struct cmd *c = p->c;
    bool have_weight = false, have_group = false;

    if (p->narg < 3 || p->narg % 2 == 0)
        return usage(p);
    if (set_name(p, c->pool, p->arg[0], "pool") < 0 ||
        set_name(p, c->backend, p->arg[1], "backend") < 0 || set_addr(p, p->arg[2]) < 0)
        return -1;
    for (int i = 3; i < p->narg; i += 2) {
        const char *key = p->arg[i], *val = p->arg[i + 1];
        bool is_weight = strcmp(key, "weight") == 0;
        bool *have = is_weight ? &have_weight : &have_group;

        if (!is_weight && strcmp(key, "group") != 0)
            return usage(p);
        if (*have)
            return fail(p, "%s given twice", key);
        *have = true;
        if (is_weight ? parse_int(p, val, "weight", 0, WEIGHT_MAX, &c->weight) < 0
                      : set_name(p, c->group, val, "group") < 0)
            return -1;
    }
    return 0;
}

static int parse_del_backend(struct parser *p)
{
    if (p->narg != 2)
        return usage(p);
    if (set_name(p, p->c->pool, p->arg[0], "pool") < 0)
        return -1;
    return set_name(p, p->c->backend, p->arg[1], "backend");
}

static int parse_drain(struct parser *p)
{
    if (p->narg != 1)
        return usage(p);
    return set_backend_ref(p, p->arg[0]);
}

/* replace P OLD NEWNAME NEWADDR: the new backend must have a name of its own. */
static int parse_replace(struct parser *p)
{
    struct cmd *c = p->c;

    if (p->narg != 4)
        return usage(p);
    if (set_name(p, c->pool, p->arg[0], "pool") < 0 ||
        set_name(p, c->backend, p->arg[1], "backend") < 0 ||
        set_name(p, c->backend2, p->arg[2], "backend") < 0 || set_addr(p, p->arg[3]) < 0)
        return -1;
    if (strcmp(c->backend, c->backend2) == 0)
        return fail(p, "the new backend needs a name other than '%s'", c->backend);
    return 0;
}

/* maintenance on|off [P]: without P, the whole listener set. */
static int parse_maintenance(struct parser *p)
{
    const char *s;

    if (p->narg < 1 || p->narg > 2)
        return usage(p);
    s = p->arg[0];
    if (strcmp(s, "on") != 0 && strcmp(s, "off") != 0)
        return fail(p, "maintenance takes on or off (got '%.*s')", echo_len(strlen(s)), s);
    p->c->on = strcmp(s, "on") == 0;
    if (p->narg == 2)
        return set_name(p, p->c->pool, p->arg[1], "pool");
    return 0;
}

static int parse_audit_verify(struct parser *p)
{
    const char *f;

    if (p->narg > 1)
        return usage(p);
    if (p->narg == 0)
        return 0;
    f = p->arg[0];
    if (strlen(f) >= sizeof(p->c->file))
        return fail(p, "file name too long (max %zu bytes)", sizeof(p->c->file) - 1);
    memcpy(p->c->file, f, strlen(f) + 1);
    return 0;
}

/* ---- rollout start ---------------------------------------------------- */

/* steps=1,5,20,100: percents 1..100, strictly increasing, at most CMD_MAX_STEPS. */
static int rollout_steps(struct parser *p, const char *val)
{
    struct cmd *c = p->c;
    const char *s = val;

    for (;;) {
        size_t n = strcspn(s, ",");
        int64_t v;
        int r = parse_digits(s, n, 100, &v);

        if (r == -1)
            return fail(p, "bad steps '%.*s': expected increasing percents like 1,5,20,100",
                        echo_len(strlen(val)), val);
        if (r == -2 || v == 0)
            return fail(p, "step must be 1..100 (got %.*s)", echo_len(n), s);
        if (c->nsteps == CMD_MAX_STEPS)
            return fail(p, "too many steps (max %d)", CMD_MAX_STEPS);
        if (c->nsteps > 0 && v <= c->steps[c->nsteps - 1])
            return fail(p, "steps must increase strictly (got %d after %d)", (int)v,
                        c->steps[c->nsteps - 1]);
        c->steps[c->nsteps++] = (int)v;
        if (s[n] == '\0')
            return 0;
        s += n + 1;
    }
}

/*
 * A percent such as "5", "5%", "0.5%" or "2.25": digits, an optional
 * fraction of at most 6 digits, an optional '%'. Returns 0, -1 when
 * malformed, -2 when above 100.
 */
static int parse_percent(const char *s, double *out)
{
    size_t n = strspn(s, digits), f = 0;
    double v = 0, frac = 0, scale = 1;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    s += n;
    if (*s == '.') {
        f = strspn(++s, digits);
        if (f == 0 || f > 6)
            return -1;
        for (size_t i = 0; i < f; i++, scale *= 10)
            frac = frac * 10 + (s[i] - '0');
        s += f;
    }
    if (*s == '%')
        s++;
    if (*s != '\0')
        return -1;
    v += frac / scale;
    if (v > 100)
        return -2;
    *out = v;
    return 0;
}

static int rollout_canary(struct parser *p, const char *val)
{
    return set_name(p, p->c->canary, val, "group");
}

static int rollout_interval(struct parser *p, const char *val)
{
    return parse_duration(p, val, "interval", &p->c->interval_ms);
}

static int rollout_error_rate(struct parser *p, const char *val)
{
    int r = parse_percent(val, &p->c->max_error_rate);

    if (r == -1)
        return fail(p, "bad max-error-rate '%.*s': expected a percent like 5%% or 0.5",
                    echo_len(strlen(val)), val);
    if (r == -2)
        return fail(p, "max-error-rate must be 0..100 (got %.*s)", echo_len(strlen(val)), val);
    return 0;
}

static int rollout_p99(struct parser *p, const char *val)
{
    return parse_duration(p, val, "max-p99", &p->c->max_p99_ms);
}

static int rollout_min_requests(struct parser *p, const char *val)
{
    return parse_int(p, val, "min-requests", 1, INT_MAX, &p->c->min_requests);
}

static int rollout_preflight(struct parser *p, const char *val)
{
    return set_name(p, p->c->preflight, val, "preflight");
}

static int rollout_shadow(struct parser *p, const char *val)
{
    return parse_duration(p, val, "shadow", &p->c->shadow_ms);
}

/* A percent argument KEY=VALUE into *out (5%, 0.5, 100). */
static int percent_arg(struct parser *p, const char *key, const char *val, double *out)
{
    int r = val[0] == '-' && parse_percent(val + 1, out) == 0 ? -2 : parse_percent(val, out);

    if (r == -1)
        return fail(p, "bad %s '%.*s': expected a percent like 5%% or 0.5", key,
                    echo_len(strlen(val)), val);
    if (r == -2)
        return fail(p, "%s must be between 0 and 100 (got %.*s)", key, echo_len(strlen(val)), val);
    return 0;
}

static int rollout_shadow_percent(struct parser *p, const char *val)
{
    return percent_arg(p, "shadow-percent", val, &p->c->shadow_percent);
}

static int rollout_diff_rate(struct parser *p, const char *val)
{
    return percent_arg(p, "max-diff-rate", val, &p->c->max_diff_rate);
}

static const struct rollout_key {
    const char *name;
    bool required;
    int (*set)(struct parser *p, const char *val);
} rollout_keys[] = {
    {"canary", true, rollout_canary},
    {"steps", true, rollout_steps},
    {"interval", true, rollout_interval},
    {"max-error-rate", false, rollout_error_rate},
    {"max-p99", false, rollout_p99},
    {"min-requests", false, rollout_min_requests},
    {"preflight", false, rollout_preflight},
    {"shadow", false, rollout_shadow},
    {"shadow-percent", false, rollout_shadow_percent},
    {"max-diff-rate", false, rollout_diff_rate},
};

/* One KEY=VALUE of rollout start; `seen` has a bit per key already given. */
static int rollout_arg(struct parser *p, const char *s, unsigned *seen)
{
    const char *eq = strchr(s, '=');
    size_t n = eq ? (size_t)(eq - s) : 0;

    if (eq == NULL || n == 0)
        return fail(p, "bad argument '%.*s': rollout start takes KEY=VALUE", echo_len(strlen(s)),
                    s);
    for (size_t i = 0; i < ARRAY_SIZE(rollout_keys); i++) {
        const struct rollout_key *k = &rollout_keys[i];

        if (strlen(k->name) != n || strncmp(k->name, s, n) != 0)
            continue;
        if (*seen & (1u << i))
            return fail(p, "%s given twice", k->name);
        *seen |= 1u << i;
        return k->set(p, eq + 1);
    }
    return fail(p,
                "unknown rollout key '%.*s' (canary, steps, interval, max-error-rate, max-p99, "
                "min-requests, preflight, shadow, shadow-percent, max-diff-rate)",
                echo_len(n), s);
}

/* rollout start P KEY=VALUE...: keys in any order; canary, steps and interval required. */
static int parse_rollout_start(struct parser *p)
{
    unsigned seen = 0;

    if (p->narg < 1)
        return usage(p);
    if (set_name(p, p->c->pool, p->arg[0], "pool") < 0)
        return -1;
    for (int i = 1; i < p->narg; i++)
        if (rollout_arg(p, p->arg[i], &seen) < 0)
            return -1;
    for (size_t i = 0; i < ARRAY_SIZE(rollout_keys); i++)
        if (rollout_keys[i].required && !(seen & (1u << i)))
            return fail(p, "rollout start needs %s= (usage: %s)", rollout_keys[i].name,
                        p->def->usage);
    if (p->c->shadow_ms < 0 && (p->c->shadow_percent >= 0 || p->c->max_diff_rate >= 0))
        return fail(p, "%s needs shadow=T (the shadow phase it sets)",
                    p->c->shadow_percent >= 0 ? "shadow-percent" : "max-diff-rate");
    return 0;
}

/* mirror POOL on [group=G] [percent=X] | mirror POOL off */
static int parse_mirror(struct parser *p)
{
    struct cmd *c = p->c;

    if (p->narg < 2)
        return usage(p);
    if (set_name(p, c->pool, p->arg[0], "pool") < 0)
        return -1;
    if (strcmp(p->arg[1], "on") != 0 && strcmp(p->arg[1], "off") != 0)
        return fail(p, "mirror takes on or off (got '%.*s')", echo_len(strlen(p->arg[1])),
                    p->arg[1]);
    c->on = strcmp(p->arg[1], "on") == 0;
    if (!c->on && p->narg > 2)
        return usage(p);
    for (int i = 2; i < p->narg; i++) {
        const char *a = p->arg[i];

        if (strncmp(a, "group=", 6) == 0 && c->group[0] == '\0') {
            if (set_name(p, c->group, a + 6, "group") < 0)
                return -1;
        } else if (strncmp(a, "percent=", 8) == 0 && c->percent < 0) {
            if (percent_arg(p, "percent", a + 8, &c->percent) < 0)
                return -1;
        } else {
            return fail(p, "bad argument '%.*s' (usage: %s)", echo_len(strlen(a)), a,
                        p->def->usage);
        }
    }
    return 0;
}

/* An RFC 9110 token character (a method, a field name). */
static bool tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Visible ASCII only: what a request line or field value of the explained request may hold. */
static bool visible(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* Append s[0..n) and a NUL to the explain buffer; its offset. */
static uint16_t x_put(struct cmd *c, size_t *used, const char *s, size_t n)
{
    uint16_t off = (uint16_t)*used;

    memcpy(c->x.buf + *used, s, n);
    c->x.buf[*used + n] = '\0';
    *used += n + 1;
    return off;
}

/*
 * route explain METHOD HOST PATH [Name:Value ...]: only the syntax here (the
 * path's canonical form is the handler's to compute). HOST "-" is a request
 * without Host. The words together are shorter than the line, so they fit
 * in x.buf with their NULs.
 */
static int parse_route_explain(struct parser *p)
{
    struct cmd *c = p->c;
    const char *m, *h, *path, *q;
    size_t used = 0;

    if (p->narg < 3)
        return usage(p);
    m = p->arg[0];
    h = p->arg[1];
    path = p->arg[2];
    if (strlen(m) > 32)
        return fail(p, "method too long (max 32 bytes)");
    for (const char *s = m; *s; s++)
        if (!tchar(*s))
            return fail(p, "bad method '%.*s'", echo_len(strlen(m)), m);
    if (strlen(h) > 255 || !visible(h, strlen(h)))
        return fail(p, "bad host '%.*s'", echo_len(strlen(h)), h);
    if (!visible(path, strlen(path)))
        return fail(p, "bad path '%.*s'", echo_len(strlen(path)), path);
    if (p->narg - 3 > CMD_MAX_HEADERS)
        return fail(p, "too many headers (max %d)", CMD_MAX_HEADERS);
    c->x.method = x_put(c, &used, m, strlen(m));
    c->x.has_host = strcmp(h, "-") != 0;
    c->x.host = x_put(c, &used, h, c->x.has_host ? strlen(h) : 0);
    q = strchr(path, '?');
    c->x.path = x_put(c, &used, path, q ? (size_t)(q - path) : strlen(path));
    c->x.query = x_put(c, &used, q ? q : "", q ? strlen(q) : 0);
    for (int i = 3; i < p->narg; i++) {
        const char *a = p->arg[i], *colon = strchr(a, ':');
        size_t nlen = colon ? (size_t)(colon - a) : 0;

        if (colon == NULL || nlen == 0)
            return fail(p, "bad header '%.*s': expected Name:Value", echo_len(strlen(a)), a);
        for (size_t k = 0; k < nlen; k++)
            if (!tchar(a[k]))
                return fail(p, "bad header name '%.*s'", echo_len(nlen), a);
        c->x.hname[c->x.nheaders] = x_put(c, &used, a, nlen);
        c->x.hvalue[c->x.nheaders] = x_put(c, &used, colon + 1, strlen(colon + 1));
        c->x.nheaders++;
    }
    return 0;
}

/* ---- the command table ------------------------------------------------ */

#define CHANGE true
#define QUERY  false

static const struct cmd_def cmd_defs[] = {
    {CMD_SHOW_POOLS, "show", "pools", "show pools [--json]", OPT_JSON, QUERY, parse_none},
    {CMD_SHOW_POOL, "show", "pool", "show pool POOL [--json]", OPT_JSON, QUERY, parse_pool},
    {CMD_SHOW_CLUSTER, "show", "cluster", "show cluster [--json]", OPT_JSON, QUERY, parse_none},
    {CMD_SHOW_STATS, "show", "stats", "show stats [--json]", OPT_JSON, QUERY, parse_none},
    {CMD_SHOW_ROUTES, "show", "routes", "show routes [--json]", OPT_JSON, QUERY, parse_none},
    {CMD_SHOW_DISCOVERY, "show", "discovery", "show discovery [--json]", OPT_JSON, QUERY,
     parse_none},
    {CMD_SET_WEIGHT, "set", "weight", "set weight POOL/BACKEND WEIGHT [--force]", OPT_FORCE, CHANGE,
     parse_set_weight},
    {CMD_SET_STATE, "set", "state", "set state POOL/BACKEND ready|drain|maint [--force]", OPT_FORCE,
     CHANGE, parse_set_state},
    {CMD_SHIFT, "shift", NULL, "shift POOL GROUP=PERCENT... [--force]", OPT_FORCE, CHANGE,
     parse_shift},
    {CMD_SWAP, "swap", NULL, "swap POOL [--force]", OPT_FORCE, CHANGE, parse_pool},
    {CMD_ROLLBACK, "rollback", NULL, "rollback POOL|route ROUTE [--force]", OPT_FORCE, CHANGE,
     parse_rollback},
    {CMD_ADD_BACKEND, "add", "backend", "add backend POOL NAME ADDR [weight W] [group G]", 0,
     CHANGE, parse_add_backend},
    {CMD_DEL_BACKEND, "del", "backend", "del backend POOL NAME [--force]", OPT_FORCE, CHANGE,
     parse_del_backend},
    {CMD_DRAIN, "drain", NULL, "drain POOL/BACKEND [--wait] [--timeout T] [--force]",
     OPT_WAIT | OPT_TIMEOUT | OPT_FORCE, CHANGE, parse_drain},
    {CMD_REPLACE, "replace", NULL, "replace POOL OLD NEWNAME NEWADDR [--timeout T]", OPT_TIMEOUT,
     CHANGE, parse_replace},
    {CMD_MAINTENANCE, "maintenance", NULL, "maintenance on|off [POOL] [--retry-after S] [--hold T]",
     OPT_RETRY_AFTER | OPT_HOLD, CHANGE, parse_maintenance},
    {CMD_ROLLOUT_START, "rollout", "start",
     "rollout start POOL canary=GROUP steps=P1,P2,... interval=T [max-error-rate=PCT] "
     "[max-p99=T] [min-requests=N] [preflight=NAME] [shadow=T] [shadow-percent=PCT] "
     "[max-diff-rate=PCT]",
     0, CHANGE, parse_rollout_start},
    {CMD_ROLLOUT_STATUS, "rollout", "status", "rollout status POOL [--json]", OPT_JSON, QUERY,
     parse_pool},
    {CMD_ROLLOUT_PAUSE, "rollout", "pause", "rollout pause POOL", 0, CHANGE, parse_pool},
    {CMD_ROLLOUT_RESUME, "rollout", "resume", "rollout resume POOL", 0, CHANGE, parse_pool},
    {CMD_ROLLOUT_ABORT, "rollout", "abort", "rollout abort POOL", 0, CHANGE, parse_pool},
    {CMD_ROUTE_EXPLAIN, "route", "explain", "route explain METHOD HOST PATH [NAME:VALUE...]", 0,
     QUERY, parse_route_explain},
    {CMD_ROUTE_MAINT, "route", "maintenance",
     "route maintenance ROUTE on|off [--retry-after S] [--hold T]", OPT_RETRY_AFTER | OPT_HOLD,
     CHANGE, parse_route_maint},
    {CMD_ROUTE_SET, "route", "set", "route set ROUTE pool POOL", 0, CHANGE, parse_route_set},
    {CMD_MIRROR_REPORT, "mirror", "report", "mirror report POOL [--json]", OPT_JSON, QUERY,
     parse_pool},
    {CMD_MIRROR, "mirror", NULL, "mirror POOL on [group=GROUP] [percent=PCT] | mirror POOL off", 0,
     CHANGE, parse_mirror},
    {CMD_AUDIT_VERIFY, "audit", "verify", "audit verify [FILE]", 0, QUERY, parse_audit_verify},
    {CMD_RELOAD, "reload", NULL, "reload", 0, CHANGE, parse_none},
    {CMD_UPGRADE, "upgrade", NULL, "upgrade", 0, CHANGE, parse_none},
    {CMD_HELP, "help", NULL, "help", 0, QUERY, parse_none},
};

/*
 * The first word names a family of two-word commands ("show", "set", ...)
 * but the second is missing: list the family's usages in one line.
 */
static int family_usage(struct parser *p, const char *w1)
{
    char buf[512];
    size_t n = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < ARRAY_SIZE(cmd_defs); i++) {
        if (strcmp(cmd_defs[i].w1, w1) != 0)
            continue;
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " | " : "", cmd_defs[i].usage);
        if (n >= sizeof(buf))
            break;
    }
    return fail(p, "usage: %s", buf);
}

/*
 * Find the command named by the first one or two words; returns how many
 * words it used, or -1 with the reason in err.
 */
static int find_cmd(struct parser *p)
{
    const char *w1 = p->word[0], *w2 = p->nword > 1 ? p->word[1] : NULL;
    bool family = false;

    for (size_t i = 0; i < ARRAY_SIZE(cmd_defs); i++) {
        const struct cmd_def *d = &cmd_defs[i];

        if (strcmp(d->w1, w1) != 0)
            continue;
        family = d->w2 != NULL;
        if (d->w2 != NULL && (w2 == NULL || strcmp(d->w2, w2) != 0))
            continue;
        p->def = d;
        return d->w2 ? 2 : 1;
    }
    if (family && w2 == NULL)
        return family_usage(p, w1);
    if (family)
        return fail(p, "unknown command '%.*s %.*s' (try help)", echo_len(strlen(w1)), w1,
                    echo_len(strlen(w2)), w2);
    return fail(p, "unknown command '%.*s' (try help)", echo_len(strlen(w1)), w1);
}

/*
 * Copy the line into p->buf (dropping one trailing '\r') and split it into
 * words on spaces and tabs, in place.
 */
static int split_words(struct parser *p, const char *line)
{
    size_t n = strnlen(line, CMD_LINE_MAX + 1);
    char *s = p->buf;

    if (n > CMD_LINE_MAX)
        return fail(p, "line too long (max %d bytes)", CMD_LINE_MAX);
    memcpy(p->buf, line, n);
    p->buf[n] = '\0';
    if (n > 0 && p->buf[n - 1] == '\r')
        p->buf[n - 1] = '\0';
    for (;;) {
        s += strspn(s, " \t");
        if (*s == '\0')
            break;
        if (p->nword == MAX_WORDS)
            return fail(p, "too many words (max %d)", MAX_WORDS);
        p->word[p->nword++] = s;
        s += strcspn(s, " \t");
        if (*s == '\0')
            break;
        *s++ = '\0';
    }
    if (p->nword == 0)
        return fail(p, "empty command");
    return 0;
}

/* Every field at its "not given" value. */
static void cmd_init(struct cmd *c)
{
    memset(c, 0, sizeof(*c));
    c->weight = -1;
    c->timeout_ms = -1;
    c->retry_after = -1;
    c->hold_ms = -1;
    c->max_error_rate = -1;
    c->max_p99_ms = -1;
    c->min_requests = -1;
    c->shadow_ms = -1;
    c->shadow_percent = -1;
    c->max_diff_rate = -1;
    c->percent = -1;
}

/*
 * The parser state (a copy of the line and its words) lives on the stack,
 * about 7 KB. On failure *c is left partly filled and must not be used.
 */
int cmd_parse(const char *line, struct cmd *c, char *err, size_t errlen)
{
    struct parser p;
    int used;

    p.c = c;
    p.err = err;
    p.errlen = errlen;
    p.def = NULL;
    p.nword = 0;
    p.narg = 0;
    p.seen = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    cmd_init(c);
    if (line == NULL)
        return fail(&p, "empty command");
    if (split_words(&p, line) < 0)
        return -1;
    used = find_cmd(&p);
    if (used < 0)
        return -1;
    c->kind = p.def->kind;
    c->is_change = p.def->change;
    if (split_options(&p, used) < 0)
        return -1;
    return p.def->parse(&p);
}

/*
 * The help text: every command with its usage, then what it does. A unit test
 * checks that each usage quoted by a parse error appears here verbatim.
 */
static const char help_text[] =
    "show pools [--json]                                  table of pools, backends, shares, load\n"
    "show pool POOL [--json]                              one pool: groups, shares, backends\n"
    "show cluster [--json]                                fleet instances and what each applied\n"
    "show stats [--json]                                  rps, error rate, p99 per backend (top)\n"
    "show routes [--json]                                 routes: match, pool, state, rps, errors, "
    "p99\n"
    "show discovery [--json]                              DNS discovery: names, addresses, TTL, "
    "errors\n"
    "set weight POOL/BACKEND WEIGHT [--force]             weight 0..1000\n"
    "set state POOL/BACKEND ready|drain|maint [--force]   admin state\n"
    "shift POOL GROUP=PERCENT... [--force]                one atomic change of group shares\n"
    "swap POOL [--force]                                  exchange the two groups' shares\n"
    "rollback POOL|route ROUTE [--force]                  undo the previous operator change "
    "(a pool's, or a route's route set)\n"
    "add backend POOL NAME ADDR [weight W] [group G]      -> PENDING; ADDR is HOST:PORT\n"
    "del backend POOL NAME [--force]                      refused unless DRAINED or MAINT\n"
    "drain POOL/BACKEND [--wait] [--timeout T] [--force]  no new requests, in-flight finish\n"
    "replace POOL OLD NEWNAME NEWADDR [--timeout T]       add new, drain old, delete old\n"
    "maintenance on|off [POOL] [--retry-after S] [--hold T]  503 + Retry-After\n"
    "rollout start POOL canary=GROUP steps=P1,P2,... interval=T [max-error-rate=PCT] [max-p99=T] "
    "[min-requests=N] [preflight=NAME] [shadow=T] [shadow-percent=PCT] [max-diff-rate=PCT]  "
    "canary steps\n"
    "rollout status POOL [--json]                         step, rps, error rate, p99, verdict\n"
    "rollout pause POOL                                   stay at the current step\n"
    "rollout resume POOL                                  continue a paused rollout\n"
    "rollout abort POOL                                   stop and roll back\n"
    "route explain METHOD HOST PATH [NAME:VALUE...]       which route a request takes and why "
    "(HOST - : no Host; no route: the first listener's pool)\n"
    "route maintenance ROUTE on|off [--retry-after S] [--hold T]  503 + Retry-After for one "
    "route\n"
    "route set ROUTE pool POOL                            point a route at another pool "
    "(atomic)\n"
    "mirror POOL on [group=GROUP] [percent=PCT] | mirror POOL off  shadow traffic to a group\n"
    "mirror report POOL [--json]                          what the shadow answered differently\n"
    "audit verify [FILE]                                  check the audit log's hash chain\n"
    "reload                                               re-read the config file (SIGHUP)\n"
    "upgrade                                              start the new binary (SIGUSR2)\n"
    "help                                                 this list (T: 250ms, 30s, 2m)\n";

/* A constant string: safe to call from any thread, never freed. */
const char *cmd_help(void)
{
    return help_text;
}

/* "unknown" for a value outside the enum, so logging a corrupt kind is safe. */
const char *cmd_kind_name(enum cmd_kind k)
{
    if ((unsigned)k >= ARRAY_SIZE(kind_names))
        return "unknown";
    return kind_names[k];
}
