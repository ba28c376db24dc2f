/*
 * state.c - the state file: rendering the model's runtime decisions as
 * text, parsing and applying that text at start, and the persistence
 * thread that writes it atomically (and fsyncs the audit log) off the
 * admin reply path. See state.h for the format.
 *
 * Applying is two-phase: the whole text is parsed into a temporary
 * structure first, so a corrupt or truncated file changes nothing; only a
 * text that parsed completely is merged into the model by name.
 */
#include "state.h"
#include "audit.h"
#include "discovery.h"
#include "sbuf.h"
#include "veer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_VERSION   "1"
#define STATE_MAX_BYTES (64u << 20) /* far above 10,000 backends per pool */
#define STATE_MAX_NAME  255
#define STATE_MAX_TOKS  9 /* "route NAME pool P conf C maint R H" */
#define WEIGHT_MAX      1000
#define SHARE_MAX       100

/* --- rendering --------------------------------------------------------------- */

/* One pool's block: its name, its groups' shares, its backends' decisions. */
static void render_pool(struct sbuf *b, const struct rt_pool *p)
{
    sb_printf(b, "pool %s\n", p->name);
    if (p->maint)
        sb_printf(b, "maint on %d\n", p->maint_retry_after);
    if (p->rollout)
        sb_printf(b, "rollout %s\n", p->rollout);
    if (p->mirror == MIRROR_OFF)
        sb_puts(b, "mirror off\n");
    else if (p->mirror == MIRROR_ON)
        sb_printf(b, "mirror on %s %.4f\n", p->mirror_group, p->mirror_percent);
    for (uint32_t g = 0; g < p->ng; g++)
        sb_printf(b, "share %s %d\n", p->g[g].name, p->g[g].share);
    for (uint32_t i = 0; i < p->nb; i++)
        sb_printf(b, "backend %s weight %d admin %s\n", p->b[i].be->name, p->b[i].weight,
                  admin_state_name(p->b[i].admin));
}

/*
 * A route whose runtime state differs from its configuration (a route set,
 * route maintenance): "route NAME pool P conf C [maint RETRY HOLD_MS]", C
 * being the pool its configuration named then. Routes as configured are not
 * written, so a file without runtime route decisions stays readable by a
 * binary that predates routes (a downgrade).
 */
static void render_route(struct sbuf *b, const struct model *m, const struct rt_route *r)
{
    const char *pool = r->pool >= 0 ? m->pools[r->pool].name : NULL;

    if (pool == NULL || (!r->maint && strcmp(pool, r->conf_pool) == 0))
        return;
    sb_printf(b, "route %s pool %s conf %s", r->name, pool, r->conf_pool);
    if (r->maint)
        sb_printf(b, " maint %d %" PRId64, r->maint_retry_after, r->maint_hold_ms);
    sb_puts(b, "\n");
}

/*
 * The model's runtime decisions (shares, weights, admin states, the
 * generation) in the format of state.h. Health is not saved: it is
 * observed again after a restart. The caller owns the returned string.
 */
char *state_render(const struct model *m)
{
    struct sbuf b;
    struct audit_anchor a;

    sb_init(&b);
    sb_printf(&b, "veer-state " STATE_VERSION "\ngeneration %" PRIu64 "\n", m->generation);
    if (audit_anchor(&a))
        sb_printf(&b, "audit %" PRIu64 " %s %" PRIu64 " %s\n", a.first_seq, a.first_prev,
                  a.last_seq, a.last_hash);
    if (m->maint)
        sb_printf(&b, "maintenance on %d\n", m->maint_retry_after);
    for (uint32_t i = 0; i < m->npools; i++)
        render_pool(&b, &m->pools[i]);
    for (uint32_t i = 0; i < m->nroutes; i++)
        render_route(&b, m, &m->routes[i]);
    sb_puts(&b, "end\n");
    return sb_steal(&b);
}

/* --- parsing into a temporary structure ------------------------------------------ */

/* A name as written in the file, with its line for duplicate reports. */
struct st_name {
    const char *name; /* points into st_file.buf */
    int line;
};

struct st_share {
    struct st_name id;
    int share;
};

struct st_backend {
    struct st_name id;
    int weight;
    enum admin_state admin;
};

struct st_pool {
    struct st_name id;
    const char *rollout;      /* points into st_file.buf */
    int mirror;               /* MIRROR_CONF, MIRROR_ON, MIRROR_OFF */
    const char *mirror_group; /* points into st_file.buf */
    double mirror_percent;
    bool maint;
    int retry_after;
    struct st_share *s;
    uint32_t ns, cap_s;
    struct st_backend *b;
    uint32_t nb, cap_b;
};

struct st_route {
    struct st_name id;
    const char *pool, *conf_pool; /* point into st_file.buf */
    bool maint;
    int retry_after;
    int64_t hold_ms;
};

/* A parsed state file; nothing in it has touched the model yet. */
struct st_file {
    char *buf; /* private copy of the text, tokenised in place */
    uint64_t generation;
    bool has_audit;
    struct audit_anchor audit; /* "audit FIRST PREV LAST HASH": the audit chain's ends */
    bool maint;
    int retry_after;
    struct st_pool *p;
    uint32_t np, cap_p;
    struct st_route *r;
    uint32_t nr, cap_r;
};

enum st_phase {
    PH_HEADER = 0,
    PH_GENERATION,
    PH_BODY,
    PH_DONE,
};

struct parser {
    struct st_file *f;
    enum st_phase phase;
    int line;
    char *msg;
    size_t msglen;
};

/* Record "line N: what" in the caller's buffer; always returns -1. */
static int __attribute__((format(printf, 2, 3))) fail(struct parser *ps, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (ps->msg == NULL || ps->msglen == 0)
        return -1;
    n = snprintf(ps->msg, ps->msglen, "line %d: ", ps->line);
    if (n < 0 || (size_t)n >= ps->msglen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(ps->msg + n, ps->msglen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Free what st_parse allocated (the names point into buf and go with it). */
static void st_free(struct st_file *f)
{
    for (uint32_t i = 0; i < f->np; i++) {
        free(f->p[i].s);
        free(f->p[i].b);
    }
    free(f->p);
    free(f->r);
    free(f->buf);
}

/*
 * A decimal number made only of digits (no sign, no spaces, no suffix),
 * at most max. Returns 0, or -1 when it is not one.
 */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/*
 * Split a line in place into space-separated tokens. Only printable ASCII
 * is accepted, so binary junk is refused here rather than matched as a
 * name. Returns the number of tokens, or -1 (reason in msg).
 */
static int tokenize(struct parser *ps, char *s, char **tok)
{
    int n = 0;

    for (char *c = s; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            return fail(ps, "invalid byte 0x%02x", (unsigned char)*c);
    for (;;) {
        while (*s == ' ')
            s++;
        if (*s == '\0')
            return n;
        if (n == STATE_MAX_TOKS)
            return fail(ps, "too many fields");
        tok[n++] = s;
        while (*s != ' ' && *s != '\0')
            s++;
        if (*s == ' ')
            *s++ = '\0';
    }
}

/* A pool, group or backend name: not empty (guaranteed) and not too long. */
static int check_name(struct parser *ps, const char *what, const char *name)
{
    if (strlen(name) > STATE_MAX_NAME)
        return fail(ps, "%s name too long", what);
    return 0;
}

/* The first line: "veer-state 1". */
static int parse_header(struct parser *ps, char **tok, int n)
{
    if (n < 1 || strcmp(tok[0], "veer-state") != 0)
        return fail(ps, "not a veer state file (expected 'veer-state " STATE_VERSION "')");
    if (n != 2)
        return fail(ps, "expected 'veer-state " STATE_VERSION "'");
    if (strcmp(tok[1], STATE_VERSION) != 0)
        return fail(ps, "unsupported version '%s' (expected " STATE_VERSION ")", tok[1]);
    ps->phase = PH_GENERATION;
    return 0;
}

/* The second line: "generation N". */
static int parse_generation(struct parser *ps, char **tok, int n)
{
    if (n < 1 || strcmp(tok[0], "generation") != 0)
        return fail(ps, "expected 'generation N'");
    if (n != 2 || parse_uint(tok[1], UINT64_MAX, &ps->f->generation) < 0)
        return fail(ps, "bad generation (expected 'generation N')");
    ps->phase = PH_BODY;
    return 0;
}

/*
 * Room for one more element in v (n used of *cap, each size bytes): tables
 * grow by doubling, so a pool of many backends is not copied once per line.
 */
static void *grow(void *v, uint32_t n, uint32_t *cap, size_t size)
{
    if (n < *cap)
        return v;
    *cap = *cap ? *cap * 2 : 8;
    return veer_realloc(v, (size_t)*cap * size);
}

/* "pool NAME": opens a new pool block. */
static int parse_pool(struct parser *ps, char **tok, int n)
{
    struct st_file *f = ps->f;

    if (n != 2)
        return fail(ps, "expected 'pool NAME'");
    if (check_name(ps, "pool", tok[1]) < 0)
        return -1;
    f->p = grow(f->p, f->np, &f->cap_p, sizeof(*f->p));
    memset(&f->p[f->np], 0, sizeof(f->p[f->np]));
    f->p[f->np].id.name = tok[1];
    f->p[f->np].id.line = ps->line;
    f->np++;
    return 0;
}

/* "share GROUP PCT" inside a pool block, PCT 0..100. */
static int parse_share(struct parser *ps, char **tok, int n)
{
    struct st_pool *p;
    uint64_t v;

    if (ps->f->np == 0)
        return fail(ps, "'share' before any 'pool'");
    if (n != 3)
        return fail(ps, "expected 'share GROUP PERCENT'");
    if (check_name(ps, "group", tok[1]) < 0)
        return -1;
    if (parse_uint(tok[2], SHARE_MAX, &v) < 0)
        return fail(ps, "bad share '%s' (0..%d)", tok[2], SHARE_MAX);
    p = &ps->f->p[ps->f->np - 1];
    p->s = grow(p->s, p->ns, &p->cap_s, sizeof(*p->s));
    p->s[p->ns].id.name = tok[1];
    p->s[p->ns].id.line = ps->line;
    p->s[p->ns].share = (int)v;
    p->ns++;
    return 0;
}

/* "backend NAME weight W admin ready|drain|maint" inside a pool block. */
static int parse_backend(struct parser *ps, char **tok, int n)
{
    struct st_pool *p;
    uint64_t w;
    int admin;

    if (ps->f->np == 0)
        return fail(ps, "'backend' before any 'pool'");
    if (n != 6 || strcmp(tok[2], "weight") != 0 || strcmp(tok[4], "admin") != 0)
        return fail(ps, "expected 'backend NAME weight W admin ready|drain|maint'");
    if (check_name(ps, "backend", tok[1]) < 0)
        return -1;
    if (parse_uint(tok[3], WEIGHT_MAX, &w) < 0)
        return fail(ps, "bad weight '%s' (0..%d)", tok[3], WEIGHT_MAX);
    admin = admin_state_parse(tok[5]);
    if (admin < 0)
        return fail(ps, "bad admin state '%s' (ready, drain or maint)", tok[5]);
    p = &ps->f->p[ps->f->np - 1];
    p->b = grow(p->b, p->nb, &p->cap_b, sizeof(*p->b));
    p->b[p->nb].id.name = tok[1];
    p->b[p->nb].id.line = ps->line;
    p->b[p->nb].weight = (int)w;
    p->b[p->nb].admin = (enum admin_state)admin;
    p->nb++;
    return 0;
}

/*
 * "maintenance on SECONDS" before the pools (every pool) or "maint on
 * SECONDS" inside a pool block; maintenance that is off is not written.
 */
static int parse_maint(struct parser *ps, char **tok, int n, bool pool)
{
    uint64_t v;

    if (pool && ps->f->np == 0)
        return fail(ps, "'maint' before any 'pool'");
    if (!pool && ps->f->np)
        return fail(ps, "'maintenance' after a 'pool'");
    if (n != 3 || strcmp(tok[1], "on") != 0 || parse_uint(tok[2], 86400, &v) < 0)
        return fail(ps, "expected '%s on SECONDS'", tok[0]);
    if (pool) {
        ps->f->p[ps->f->np - 1].maint = true;
        ps->f->p[ps->f->np - 1].retry_after = (int)v;
    } else {
        ps->f->maint = true;
        ps->f->retry_after = (int)v;
    }
    return 0;
}

/* "route NAME pool P conf C [maint RETRY HOLD_MS]" (render_route). */
static int parse_route(struct parser *ps, char **tok, int n)
{
    struct st_file *f = ps->f;
    struct st_route *r;
    uint64_t retry = 0, hold = 0;

    if ((n != 6 && n != 9) || strcmp(tok[2], "pool") != 0 || strcmp(tok[4], "conf") != 0 ||
        (n == 9 && (strcmp(tok[6], "maint") != 0 || parse_uint(tok[7], 86400, &retry) < 0 ||
                    parse_uint(tok[8], INT64_MAX / 1000, &hold) < 0)))
        return fail(ps, "expected 'route NAME pool POOL conf POOL [maint RETRY_AFTER HOLD_MS]'");
    if (check_name(ps, "route", tok[1]) < 0 || check_name(ps, "pool", tok[3]) < 0 ||
        check_name(ps, "pool", tok[5]) < 0)
        return -1;
    f->r = grow(f->r, f->nr, &f->cap_r, sizeof(*f->r));
    r = &f->r[f->nr++];
    *r = (struct st_route){.id = {.name = tok[1], .line = ps->line},
                           .pool = tok[3],
                           .conf_pool = tok[5],
                           .maint = n == 9,
                           .retry_after = (int)retry,
                           .hold_ms = (int64_t)hold};
    return 0;
}

/* "audit FIRST_SEQ FIRST_PREV LAST_SEQ LAST_HASH": where the audit log's chain starts and ends. */
static int parse_audit(struct parser *ps, char **tok, int n)
{
    struct audit_anchor *a = &ps->f->audit;

    if (n != 5 || parse_uint(tok[1], UINT64_MAX, &a->first_seq) < 0 ||
        parse_uint(tok[3], UINT64_MAX, &a->last_seq) < 0 || strlen(tok[2]) != 64 ||
        strlen(tok[4]) != 64 || strspn(tok[2], "0123456789abcdef") != 64 ||
        strspn(tok[4], "0123456789abcdef") != 64)
        return fail(ps, "expected 'audit FIRST_SEQ PREV LAST_SEQ HASH'");
    memcpy(a->first_prev, tok[2], 65);
    memcpy(a->last_hash, tok[4], 65);
    ps->f->has_audit = true;
    return 0;
}

/* "mirror off" or "mirror on GROUP PERCENT", inside a pool. */
static int parse_mirror(struct parser *ps, char **tok, int n)
{
    struct st_pool *p;
    char *end;
    double v;

    if (ps->f->np == 0)
        return fail(ps, "expected 'mirror ...' inside a pool");
    p = &ps->f->p[ps->f->np - 1];
    if (n == 2 && strcmp(tok[1], "off") == 0) {
        p->mirror = MIRROR_OFF;
        return 0;
    }
    if (n != 4 || strcmp(tok[1], "on") != 0 || check_name(ps, "group", tok[2]) < 0)
        return fail(ps, "expected 'mirror off' or 'mirror on GROUP PERCENT'");
    v = strtod(tok[3], &end);
    if (*end != '\0' || end == tok[3] || !(v >= 0 && v <= 100))
        return fail(ps, "bad mirror percent '%s' (0..100)", tok[3]);
    p->mirror = MIRROR_ON;
    p->mirror_group = tok[2];
    p->mirror_percent = v;
    return 0;
}

/* One line of the body: audit, maintenance, pool, share, backend or the closing end. */
static int parse_body(struct parser *ps, char **tok, int n)
{
    if (n == 0)
        return fail(ps, "empty line");
    if (strcmp(tok[0], "audit") == 0)
        return parse_audit(ps, tok, n);
    if (strcmp(tok[0], "maintenance") == 0)
        return parse_maint(ps, tok, n, false);
    if (strcmp(tok[0], "maint") == 0)
        return parse_maint(ps, tok, n, true);
    if (strcmp(tok[0], "rollout") == 0) {
        if (ps->f->np == 0 || n != 2)
            return fail(ps, "expected 'rollout STATE' inside a pool");
        ps->f->p[ps->f->np - 1].rollout = tok[1];
        return 0;
    }
    if (strcmp(tok[0], "mirror") == 0)
        return parse_mirror(ps, tok, n);
    if (strcmp(tok[0], "pool") == 0)
        return parse_pool(ps, tok, n);
    if (strcmp(tok[0], "route") == 0)
        return parse_route(ps, tok, n);
    if (strcmp(tok[0], "share") == 0)
        return parse_share(ps, tok, n);
    if (strcmp(tok[0], "backend") == 0)
        return parse_backend(ps, tok, n);
    if (strcmp(tok[0], "end") == 0) {
        if (n != 1)
            return fail(ps, "expected 'end'");
        ps->phase = PH_DONE;
        return 0;
    }
    return fail(ps, "unknown keyword '%.32s'", tok[0]);
}

/* Dispatch one complete line (its newline already removed) by phase. */
static int parse_line(struct parser *ps, char *line)
{
    char *tok[STATE_MAX_TOKS];
    int n = tokenize(ps, line, tok);

    if (n < 0)
        return -1;
    switch (ps->phase) {
    case PH_HEADER:
        return parse_header(ps, tok, n);
    case PH_GENERATION:
        return parse_generation(ps, tok, n);
    case PH_BODY:
        return parse_body(ps, tok, n);
    default:
        return fail(ps, "data after 'end'");
    }
}

/* qsort order: by name, then by line, so the earlier of two equal names comes first. */
static int cmp_names(const void *a, const void *b)
{
    const struct st_name *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/*
 * Refuse a name given twice among n (stride apart, each starting with a
 * struct st_name), naming the line of the second. Sorting keeps this
 * O(n log n) for pools of 10,000 backends.
 */
static int check_unique(struct parser *ps, const void *items, uint32_t n, size_t stride,
                        const char *what)
{
    struct st_name *v;
    int rc = 0;

    if (n < 2)
        return 0;
    v = veer_malloc(n * sizeof(*v));
    for (uint32_t i = 0; i < n; i++)
        memcpy(&v[i], (const char *)items + i * stride, sizeof(*v));
    qsort(v, n, sizeof(*v), cmp_names);
    for (uint32_t i = 1; i < n && rc == 0; i++) {
        if (strcmp(v[i - 1].name, v[i].name) != 0)
            continue;
        ps->line = v[i].line;
        rc = fail(ps, "duplicate %s '%s' (also at line %d)", what, v[i].name, v[i - 1].line);
    }
    free(v);
    return rc;
}

/* No pool twice, and within a pool no group or backend twice. */
static int check_duplicates(struct parser *ps)
{
    struct st_file *f = ps->f;

    if (check_unique(ps, f->p, f->np, sizeof(*f->p), "pool") < 0 ||
        check_unique(ps, f->r, f->nr, sizeof(*f->r), "route") < 0)
        return -1;
    for (uint32_t i = 0; i < f->np; i++) {
        if (check_unique(ps, f->p[i].s, f->p[i].ns, sizeof(*f->p[i].s), "group") < 0 ||
            check_unique(ps, f->p[i].b, f->p[i].nb, sizeof(*f->p[i].b), "backend") < 0)
            return -1;
    }
    return 0;
}

/*
 * Parse the whole text into f. Every line must end with a newline (a
 * missing one means the file was cut mid-line) and the final line must be
 * "end" (a missing one means it was cut between lines). Returns 0, or -1
 * with "line N: what" in msg; f is filled either way and must be freed.
 */
static int st_parse(struct st_file *f, const char *text, char *msg, size_t msglen)
{
    struct parser ps = {.f = f, .phase = PH_HEADER, .line = 0, .msg = msg, .msglen = msglen};
    char *s, *end;

    memset(f, 0, sizeof(*f));
    f->buf = veer_strdup(text);
    end = f->buf + strlen(f->buf);
    for (s = f->buf; *s != '\0';) {
        /* memchr over what is left, not strchr: linear however long the file is. */
        char *nl = memchr(s, '\n', (size_t)(end - s));

        ps.line++;
        if (nl == NULL)
            return fail(&ps, "truncated line (no newline at end of file)");
        *nl = '\0';
        if (parse_line(&ps, s) < 0)
            return -1;
        s = nl + 1;
    }
    ps.line++;
    if (ps.phase == PH_HEADER)
        return fail(&ps, "empty state file");
    if (ps.phase != PH_DONE)
        return fail(&ps, "missing 'end' (file truncated)");
    return check_duplicates(&ps);
}

/* --- applying ------------------------------------------------------------------ */

struct apply_stats {
    int backends; /* restored */
    uint32_t pools;
    uint32_t routes;
    uint32_t unknown; /* pools, groups and backends that no longer exist */
};

/* Index of a backend of p by name; the saved order usually matches, so try `hint` first. */
static int find_backend(const struct rt_pool *p, const char *name, uint32_t hint)
{
    if (hint < p->nb && strcmp(p->b[hint].be->name, name) == 0)
        return (int)hint;
    return model_find_backend(p, name);
}

/*
 * Merge the saved shares into a copy of p's current ones; apply them only
 * when the result still totals 100 (a group may have been added or removed
 * in the config since the file was written), else warn and keep p's.
 */
static void apply_shares(struct rt_pool *p, const struct st_pool *sp, struct apply_stats *st)
{
    int *share, total = 0;

    if (sp->ns == 0)
        return; /* nothing saved: the current shares stand */
    share = veer_calloc(p->ng, sizeof(*share));
    for (uint32_t g = 0; g < p->ng; g++)
        share[g] = p->g[g].share;
    for (uint32_t i = 0; i < sp->ns; i++) {
        int g = model_find_group(p, sp->s[i].id.name);

        if (g < 0) {
            log_info("state file: group '%s' of pool '%s' no longer exists, skipped",
                     sp->s[i].id.name, p->name);
            st->unknown++;
            continue;
        }
        share[g] = sp->s[i].share;
    }
    for (uint32_t g = 0; g < p->ng; g++)
        total += share[g];
    if (total == 100) {
        for (uint32_t g = 0; g < p->ng; g++)
            p->g[g].share = share[g];
    } else {
        log_warn("state file: shares of pool '%s' would total %d, not 100; keeping the "
                 "current shares",
                 p->name, total);
    }
    free(share);
}

/*
 * Weights and admin states of the saved backends that still exist in pool
 * pk. One found by DNS (named "<entry>-<address>" by a discover entry of
 * the pool) is recreated first, as for an upgrade (discovery_adopt): a
 * backend the operator drained or put in maintenance stays so across a
 * restart, instead of coming back ready with the first resolution (and the
 * pool serves before it); the first resolution removes it if DNS no longer
 * names it.
 */
static void apply_backends(struct model *m, int pk, const struct st_pool *sp,
                           struct apply_stats *st)
{
    struct rt_pool *p = &m->pools[pk];

    for (uint32_t i = 0; i < sp->nb; i++) {
        const struct st_backend *sb = &sp->b[i];
        int j = find_backend(p, sb->id.name, i);

        if (j < 0 && p->conf->ndiscover > 0)
            j = discovery_adopt(m, m->conf, pk, sb->id.name, NULL);
        if (j < 0) {
            log_info("state file: backend '%s/%s' no longer exists, skipped", p->name, sb->id.name);
            st->unknown++;
            continue;
        }
        p->b[j].weight = sb->weight;
        if (p->b[j].admin != sb->admin)
            p->b[j].drained = false; /* the drain tracker decides anew */
        p->b[j].admin = sb->admin;
        st->backends++;
    }
}

/*
 * The saved routes that still exist: their maintenance, and the pool a
 * route set gave them unless the configuration now names another pool than
 * it did then (the operator edited it: the file wins, as on a reload).
 */
static void apply_routes(struct model *m, const struct st_file *f, struct apply_stats *st)
{
    for (uint32_t i = 0; i < f->nr; i++) {
        const struct st_route *sr = &f->r[i];
        int ri = model_find_route(m, sr->id.name), pi;
        struct rt_route *r;

        if (ri < 0) {
            log_info("state file: route '%s' no longer exists, skipped", sr->id.name);
            st->unknown++;
            continue;
        }
        r = &m->routes[ri];
        r->maint = sr->maint;
        r->maint_retry_after = sr->retry_after;
        r->maint_hold_ms = sr->hold_ms;
        pi = model_find_pool(m, sr->pool);
        if (strcmp(sr->conf_pool, r->conf_pool) != 0)
            log_info("state file: route '%s' now names pool '%s' in the config (was '%s'): the "
                     "config wins over the saved pool '%s'",
                     r->name, r->conf_pool, sr->conf_pool, sr->pool);
        else if (pi < 0 || m->pools[pi].removed)
            log_info("state file: pool '%s' of route '%s' no longer exists, kept '%s'", sr->pool,
                     r->name, r->conf_pool);
        else
            r->pool = pi;
        st->routes++;
    }
}

/* Merge a parsed file into m by name; it cannot fail. */
static void st_apply(struct model *m, const struct st_file *f, struct apply_stats *st)
{
    for (uint32_t i = 0; i < f->np; i++) {
        const struct st_pool *sp = &f->p[i];
        int k = model_find_pool(m, sp->id.name);

        if (k < 0) {
            log_info("state file: pool '%s' no longer exists, skipped", sp->id.name);
            st->unknown++;
            continue;
        }
        apply_shares(&m->pools[k], sp, st);
        apply_backends(m, k, sp, st);
        m->pools[k].maint = sp->maint;
        m->pools[k].maint_retry_after = sp->retry_after;
        free(m->pools[k].rollout);
        m->pools[k].rollout = sp->rollout ? veer_strdup(sp->rollout) : NULL;
        free(m->pools[k].mirror_group);
        m->pools[k].mirror_group = NULL;
        m->pools[k].mirror = sp->mirror;
        if (sp->mirror == MIRROR_ON && model_find_group(&m->pools[k], sp->mirror_group) < 0) {
            log_info("state file: mirror group '%s' of pool '%s' no longer exists, mirror as "
                     "configured",
                     sp->mirror_group, sp->id.name);
            m->pools[k].mirror = MIRROR_CONF;
        } else if (sp->mirror == MIRROR_ON) {
            m->pools[k].mirror_group = veer_strdup(sp->mirror_group);
            m->pools[k].mirror_percent = sp->mirror_percent;
        }
        st->pools++;
    }
    apply_routes(m, f, st);
    if (f->generation > m->generation)
        m->generation = f->generation;
    if (f->has_audit)
        audit_expect(&f->audit);
    m->maint = f->maint;
    m->maint_retry_after = f->retry_after;
}

/*
 * Parse text completely, then merge it into m (see state.h). A malformed
 * text changes nothing and returns -1 with "line N: what" in msg; otherwise
 * returns the number of backends restored with a summary in msg.
 */
int state_apply(struct model *m, const char *text, char *msg, size_t msglen)
{
    struct st_file f;
    struct apply_stats st = {0};
    int n;

    if (st_parse(&f, text, msg, msglen) < 0) {
        st_free(&f);
        return -1;
    }
    st_apply(m, &f, &st);
    st_free(&f);
    if (msg != NULL && msglen > 0) {
        n = snprintf(msg, msglen, "restored %d backends in %u pools", st.backends, st.pools);
        if (st.routes && n >= 0 && (size_t)n < msglen)
            n += snprintf(msg + n, msglen - (size_t)n, ", %u routes", st.routes);
        if (n >= 0 && (size_t)n < msglen)
            n += snprintf(msg + n, msglen - (size_t)n, " (generation %" PRIu64 ")", m->generation);
        if (st.unknown && n >= 0 && (size_t)n < msglen)
            snprintf(msg + n, msglen - (size_t)n, "; skipped %u unknown", st.unknown);
    }
    return st.backends;
}

/* --- loading ------------------------------------------------------------------- */

/* Line number of the first NUL byte in buf[0..len), or 0 when there is none. */
static int nul_line(const char *buf, size_t len)
{
    const char *z = memchr(buf, '\0', len);
    int line = 1;

    if (z == NULL)
        return 0;
    for (const char *c = buf; c < z; c++)
        line += *c == '\n';
    return line;
}

/*
 * Read the whole regular file behind fd into a NUL-terminated buffer
 * (caller frees). Returns NULL with a reason in msg.
 */
static char *read_all(int fd, const char *path, size_t *lenp, char *msg, size_t msglen)
{
    struct stat sb;
    size_t len = 0;
    char *buf;

    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > STATE_MAX_BYTES) {
        snprintf(msg, msglen, "%s: not a regular file of at most %u bytes", path, STATE_MAX_BYTES);
        return NULL;
    }
    buf = veer_malloc((size_t)sb.st_size + 1);
    for (;;) {
        ssize_t r = read(fd, buf + len, (size_t)sb.st_size - len);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(msg, msglen, "%s: read: %s", path, strerror(errno));
            free(buf);
            return NULL;
        }
        len += (size_t)r;
        if (r == 0 || len == (size_t)sb.st_size)
            break;
    }
    buf[len] = '\0';
    *lenp = len;
    return buf;
}

/*
 * Read and apply the state file at path (see state.h). Errors name the
 * file: "PATH: line N: what". A missing file is the normal first start.
 */
int state_load(struct model *m, const char *path, char *msg, size_t msglen)
{
    char why[512];
    size_t len = 0;
    char *buf;
    int fd, rc, line;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        snprintf(msg, msglen, "no state file");
        return 0;
    }
    if (fd < 0) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        return -1;
    }
    buf = read_all(fd, path, &len, msg, msglen);
    close(fd);
    if (buf == NULL)
        return -1;
    line = nul_line(buf, len);
    if (line) {
        snprintf(msg, msglen, "%s: line %d: NUL byte (binary data)", path, line);
        free(buf);
        return -1;
    }
    rc = state_apply(m, buf, why, sizeof(why));
    free(buf);
    if (rc < 0)
        snprintf(msg, msglen, "%s: %s", path, why);
    else
        snprintf(msg, msglen, "%s", why);
    return rc;
}

/* --- readiness handed to an upgrade successor ---------------------------------------- */

#define HEALTH_VERSION "1"

static const char *const health_words[] = {
    [HEALTH_PENDING] = "pending",
    [HEALTH_READY] = "ready",
    [HEALTH_DOWN] = "down",
};

/*
 * Every backend's readiness as the checks see it now, with its address:
 *   veer-health 1
 *   pool api
 *   backend blue-1 127.0.0.1:9001 ready
 *   end
 * Pools without checks are written too (their backends are READY: they take
 * traffic). The caller owns the returned string.
 */
char *state_render_health(const struct model *m)
{
    struct sbuf b;

    sb_init(&b);
    sb_puts(&b, "veer-health " HEALTH_VERSION "\n");
    for (uint32_t i = 0; i < m->npools; i++) {
        const struct rt_pool *p = &m->pools[i];

        if (p->removed)
            continue;
        sb_printf(&b, "pool %s\n", p->name);
        for (uint32_t k = 0; k < p->nb; k++)
            sb_printf(&b, "backend %s %s %s\n", p->b[k].be->name, p->b[k].be->addr.text,
                      health_words[p->b[k].health]);
    }
    sb_puts(&b, "end\n");
    return sb_steal(&b);
}

/* One "backend NAME ADDRESS HEALTH" line of a readiness text, and its pool. */
struct hl_entry {
    const char *pool, *name, *addr; /* point into the parsed copy of the text */
    enum health_state health;
};

struct hl_file {
    char *buf;
    struct hl_entry *e;
    uint32_t n;
};

static int health_word(const char *w)
{
    for (size_t i = 0; i < ARRAY_SIZE(health_words); i++)
        if (strcmp(w, health_words[i]) == 0)
            return (int)i;
    return -1;
}

/* One line of a readiness text after its header; *pool is the current block's name. */
static int hl_line(struct parser *ps, struct hl_file *f, char **tok, int n, const char **pool)
{
    int h;

    if (n == 2 && strcmp(tok[0], "pool") == 0)
        return check_name(ps, "pool", tok[1]) < 0 ? -1 : (*pool = tok[1], 0);
    if (n == 1 && strcmp(tok[0], "end") == 0) {
        ps->phase = PH_DONE;
        return 0;
    }
    if (n != 4 || strcmp(tok[0], "backend") != 0)
        return fail(ps, "expected 'pool NAME', 'backend NAME ADDRESS HEALTH' or 'end'");
    if (*pool == NULL)
        return fail(ps, "'backend' before any 'pool'");
    if (check_name(ps, "backend", tok[1]) < 0)
        return -1;
    h = health_word(tok[3]);
    if (h < 0)
        return fail(ps, "bad health '%.32s' (ready, down or pending)", tok[3]);
    f->e = veer_realloc(f->e, (f->n + 1) * sizeof(*f->e));
    f->e[f->n++] = (struct hl_entry){*pool, tok[1], tok[2], (enum health_state)h};
    return 0;
}

/* Parse a whole readiness text into f; -1 (msg) when it is not complete and well formed. */
static int hl_parse(struct hl_file *f, const char *text, char *msg, size_t msglen)
{
    struct parser ps = {.phase = PH_HEADER, .msg = msg, .msglen = msglen};
    const char *pool = NULL;
    char *tok[STATE_MAX_TOKS], *s, *end;

    memset(f, 0, sizeof(*f));
    f->buf = veer_strdup(text);
    end = f->buf + strlen(f->buf);
    for (s = f->buf; *s != '\0';) {
        char *nl = memchr(s, '\n', (size_t)(end - s));
        int n;

        ps.line++;
        if (nl == NULL)
            return fail(&ps, "truncated line (no newline at end)");
        *nl = '\0';
        n = tokenize(&ps, s, tok);
        if (n < 0)
            return -1;
        if (ps.phase == PH_DONE)
            return fail(&ps, "data after 'end'");
        if (ps.phase == PH_HEADER) {
            if (n != 2 || strcmp(tok[0], "veer-health") != 0 || strcmp(tok[1], HEALTH_VERSION) != 0)
                return fail(&ps, "expected 'veer-health " HEALTH_VERSION "'");
            ps.phase = PH_BODY;
        } else if (hl_line(&ps, f, tok, n, &pool) < 0) {
            return -1;
        }
        s = nl + 1;
    }
    ps.line++;
    if (ps.phase != PH_DONE)
        return fail(&ps, "missing 'end' (truncated)");
    return 0;
}

/*
 * Start backends with the readiness the old process saw (see state.h): only
 * in pools that have checks here, only for a backend of the same pool, name
 * and address. Everything else keeps what the config gave it (PENDING).
 * A backend this configuration does not list but a discover entry of its
 * pool names ("<entry>-<address>") is recreated first (discovery_adopt), so
 * a pool fed by DNS serves from its first request, before any resolution.
 */
int state_apply_health(struct model *m, const char *text, char *msg, size_t msglen)
{
    struct hl_file f;
    unsigned carried[HEALTH_DOWN + 1] = {0}, moved = 0;
    const char *pool = NULL;
    int pk = -1;
    struct rt_pool *p = NULL;
    uint32_t hint = 0;

    if (hl_parse(&f, text, msg, msglen) < 0) {
        free(f.e);
        free(f.buf);
        return -1;
    }
    for (uint32_t i = 0; i < f.n; i++, hint++) {
        const struct hl_entry *e = &f.e[i];
        int j;

        if (e->pool != pool) {
            pk = model_find_pool(m, e->pool);
            pool = e->pool;
            p = pk < 0 || m->pools[pk].removed ? NULL : &m->pools[pk];
            hint = 0;
        }
        if (p == NULL)
            continue; /* a pool gone */
        j = find_backend(p, e->name, hint);
        if (j < 0 && p->conf->ndiscover > 0)
            j = discovery_adopt(m, m->conf, pk, e->name, e->addr); /* found by DNS there */
        if (!p->conf->has_health)
            continue; /* without checks here: its backends are READY anyway */
        if (j < 0 || strcmp(p->b[j].be->addr.text, e->addr) != 0) {
            moved += j >= 0; /* same name, another address: a new backend, checked anew */
            continue;
        }
        p->b[j].health = e->health;
        carried[e->health]++;
    }
    free(f.e);
    free(f.buf);
    if (msg != NULL && msglen > 0)
        snprintf(msg, msglen,
                 "readiness carried over: %u ready, %u down, %u pending; %u at a new address "
                 "start PENDING",
                 carried[HEALTH_READY], carried[HEALTH_DOWN], carried[HEALTH_PENDING], moved);
    return (int)(carried[HEALTH_READY] + carried[HEALTH_DOWN] + carried[HEALTH_PENDING]);
}

/* Read a readiness text from fd (an upgrade's inherited memfd, from its start) and apply it. */
int state_load_health_fd(struct model *m, int fd, char *msg, size_t msglen)
{
    size_t len = 0;
    char *buf;
    int rc;

    if (lseek(fd, 0, SEEK_SET) < 0) {
        snprintf(msg, msglen, "readiness handoff: lseek: %s", strerror(errno));
        return -1;
    }
    buf = read_all(fd, "readiness handoff", &len, msg, msglen);
    if (buf == NULL)
        return -1;
    if (nul_line(buf, len)) {
        snprintf(msg, msglen, "readiness handoff: NUL byte (binary data)");
        free(buf);
        return -1;
    }
    rc = state_apply_health(m, buf, msg, msglen);
    free(buf);
    return rc;
}

/* --- persistence thread ------------------------------------------------------------ */

#define PERSIST_RETRY_MS 1000 /* a failed state write is retried this often */

/*
 * Shared between the control thread (producer) and the persistence
 * thread, under mu. The text of a failed write is kept by the thread and
 * retried until a newer one arrives.
 */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running;
    bool stop;
    bool sync_audit;
    bool held; /* another process owns the files now (an upgrade): nothing is written */
    char *pending;
    char *path; /* NULL: no state file */
    int audit_fd;
    /* persist_flush: asked counts requests, done the last one served, ok its outcome */
    pthread_cond_t done_cv;
    unsigned long flush_asked, flush_done;
    bool flush_ok;
} ps_ctl = {.mu = PTHREAD_MUTEX_INITIALIZER, .audit_fd = -1};

static atomic_ulong ps_writes;

/* State files written and made durable since the process started (tests wait on it). */
unsigned long persist_writes(void)
{
    return atomic_load_explicit(&ps_writes, memory_order_acquire);
}

/* write(2) all of buf, retrying short writes and EINTR. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path, so that a rename in it is durable. */
static int fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = veer_malloc(n + 2);
    int fd, rc;

    if (n == 0) {
        strcpy(dir, ".");
    } else {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/*
 * Replace the file at path with text atomically: a reader (or a crash)
 * sees the old file or the new one, never a mix. Returns 0, or -1 with the
 * failing step in *what and errno set.
 */
static int write_atomic(const char *path, const char *text, const char **what)
{
    size_t len = strlen(path) + sizeof(".tmp");
    char *tmp = veer_malloc(len);
    int fd, saved;

    snprintf(tmp, len, "%s.tmp", path);
    *what = "open";
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        goto fail;
    *what = "write";
    if (write_all(fd, text, strlen(text)) < 0)
        goto fail_close;
    *what = "fsync";
    if (fsync(fd) < 0)
        goto fail_close;
    *what = "close";
    if (close(fd) < 0)
        goto fail_unlink;
    *what = "rename";
    if (rename(tmp, path) < 0)
        goto fail_unlink;
    free(tmp);
    *what = "fsync of the directory";
    return fsync_dir(path);

fail_close:
    saved = errno;
    close(fd);
    errno = saved;
fail_unlink:
    saved = errno;
    unlink(tmp);
    errno = saved;
fail:
    free(tmp);
    return -1;
}

/*
 * Write one state text. A failure is logged once until the next success
 * (a full disk must not flood the log) and never stops the daemon.
 * Returns 0 when the file is in place and durable.
 */
static int persist_write(const char *path, const char *text)
{
    static bool failing;
    const char *what = "";

    if (write_atomic(path, text, &what) < 0) {
        if (!failing)
            log_err("state file %s: %s: %s (will retry)", path, what, strerror(errno));
        failing = true;
        return -1;
    }
    if (failing)
        log_info("state file %s written again", path);
    failing = false;
    atomic_fetch_add_explicit(&ps_writes, 1, memory_order_release);
    return 0;
}

/* Absolute CLOCK_MONOTONIC time ms from now, for the condvar. */
static struct timespec deadline_ms(long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/*
 * Wait (mu held) for work: a new text, an audit fsync or stop. The wait is
 * bounded so that a text whose write failed (*retry) is tried again.
 */
static void wait_for_work(char **retry)
{
    while (ps_ctl.pending == NULL && !ps_ctl.sync_audit && !ps_ctl.stop &&
           ps_ctl.flush_done == ps_ctl.flush_asked) {
        struct timespec until = deadline_ms(PERSIST_RETRY_MS);

        if (pthread_cond_timedwait(&ps_ctl.cv, &ps_ctl.mu, &until) == ETIMEDOUT && *retry) {
            ps_ctl.pending = *retry;
            *retry = NULL;
        }
    }
}

/*
 * The persistence thread: take the newest pending text and the audit
 * flag under the lock, do the slow disk work outside it, so producers
 * never wait for a disk. On stop it finishes what is pending, then exits.
 */
static void *persist_main(void *arg)
{
    char *retry = NULL;

    (void)arg;
    for (;;) {
        char *text;
        bool sync, stop, ok = true;
        unsigned long asked;

        pthread_mutex_lock(&ps_ctl.mu);
        wait_for_work(&retry);
        text = ps_ctl.pending;
        ps_ctl.pending = NULL;
        sync = ps_ctl.sync_audit;
        ps_ctl.sync_audit = false;
        stop = ps_ctl.stop;
        asked = ps_ctl.flush_asked;
        pthread_mutex_unlock(&ps_ctl.mu);
        if (text == NULL && retry && asked != ps_ctl.flush_done) {
            text = retry; /* a flush tries a failed text again now */
            retry = NULL;
        }
        if (text == NULL && !sync && stop && asked == ps_ctl.flush_done)
            break;
        if (text) {
            free(retry);
            retry = persist_write(ps_ctl.path, text) < 0 ? text : NULL;
            if (retry == NULL)
                free(text);
        }
        if (sync && fsync(ps_ctl.audit_fd) < 0) {
            log_err("audit log: fsync: %s", strerror(errno));
            ok = false;
        }
        pthread_mutex_lock(&ps_ctl.mu);
        if (asked != ps_ctl.flush_done) {
            ps_ctl.flush_ok = ok && retry == NULL;
            ps_ctl.flush_done = asked;
            pthread_cond_broadcast(&ps_ctl.done_cv);
        }
        pthread_mutex_unlock(&ps_ctl.mu);
    }
    free(retry);
    return NULL;
}

/* A condvar that times out on CLOCK_MONOTONIC (wall clock jumps do not matter). */
static int init_cond(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc;

    if (pthread_condattr_init(&attr) != 0)
        return -1;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

/*
 * Start the persistence thread (see state.h). It blocks every signal so
 * signals keep reaching the threads that handle them. Returns 0, or -1
 * when already running or the thread cannot be created (logged).
 */
int persist_start(const char *state_path, int audit_fd)
{
    sigset_t all, old;
    int rc;

    if (ps_ctl.running || init_cond(&ps_ctl.cv) < 0) {
        log_err("persistence thread: %s", ps_ctl.running ? "already running" : "condvar");
        return -1;
    }
    if (init_cond(&ps_ctl.done_cv) < 0) {
        log_err("persistence thread: condvar");
        pthread_cond_destroy(&ps_ctl.cv);
        return -1;
    }
    pthread_mutex_lock(&ps_ctl.mu);
    ps_ctl.path = state_path ? veer_strdup(state_path) : NULL;
    ps_ctl.audit_fd = audit_fd;
    ps_ctl.stop = ps_ctl.sync_audit = false;
    pthread_mutex_unlock(&ps_ctl.mu);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&ps_ctl.thread, NULL, persist_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_err("persistence thread: %s", strerror(rc));
        free(ps_ctl.path);
        ps_ctl.path = NULL;
        pthread_cond_destroy(&ps_ctl.cv);
        pthread_cond_destroy(&ps_ctl.done_cv);
        return -1;
    }
    pthread_mutex_lock(&ps_ctl.mu);
    ps_ctl.running = true;
    pthread_mutex_unlock(&ps_ctl.mu);
    return 0;
}

/*
 * Hand text to the thread (ownership passes here). An unwritten older
 * text is dropped: the file only ever needs the newest state. Without a
 * running thread or a state file the text is freed at once.
 */
void persist_state(char *text)
{
    pthread_mutex_lock(&ps_ctl.mu);
    if (ps_ctl.held && ps_ctl.path) {
        pthread_mutex_unlock(&ps_ctl.mu);
        free(text);
        log_warn("state file not written: this process has handed it over (upgrade)");
        return;
    }
    if (!ps_ctl.running || ps_ctl.path == NULL) {
        pthread_mutex_unlock(&ps_ctl.mu);
        free(text);
        return;
    }
    free(ps_ctl.pending);
    ps_ctl.pending = text;
    pthread_cond_signal(&ps_ctl.cv);
    pthread_mutex_unlock(&ps_ctl.mu);
}

/* Ask the thread for an fsync of the audit log; a no-op without one. */
void persist_sync_audit(void)
{
    pthread_mutex_lock(&ps_ctl.mu);
    if (ps_ctl.running && ps_ctl.audit_fd >= 0 && !ps_ctl.held) {
        ps_ctl.sync_audit = true;
        pthread_cond_signal(&ps_ctl.cv);
    }
    pthread_mutex_unlock(&ps_ctl.mu);
}

/*
 * Wait until everything handed over so far is on disk: the newest state
 * text written (tried again if an earlier write failed) and the audit log
 * fsynced. Returns 0, or -1 when a write failed or timeout_ms passed.
 * Without a running thread there is nothing to wait for.
 */
int persist_flush(int timeout_ms)
{
    struct timespec until = deadline_ms(timeout_ms);
    unsigned long want;
    int rc = 0;

    pthread_mutex_lock(&ps_ctl.mu);
    if (!ps_ctl.running) {
        pthread_mutex_unlock(&ps_ctl.mu);
        return 0;
    }
    want = ++ps_ctl.flush_asked;
    if (ps_ctl.audit_fd >= 0)
        ps_ctl.sync_audit = true;
    pthread_cond_signal(&ps_ctl.cv);
    while (rc == 0 && ps_ctl.flush_done < want)
        if (pthread_cond_timedwait(&ps_ctl.done_cv, &ps_ctl.mu, &until) == ETIMEDOUT)
            rc = -1;
    if (rc == 0 && !ps_ctl.flush_ok)
        rc = -1;
    pthread_mutex_unlock(&ps_ctl.mu);
    return rc;
}

void persist_hold(bool held)
{
    pthread_mutex_lock(&ps_ctl.mu);
    ps_ctl.held = held;
    pthread_mutex_unlock(&ps_ctl.mu);
}

/*
 * Stop the thread after it wrote what is pending (one attempt; a failure
 * is logged), and release everything, so persist_start may run again.
 */
void persist_stop(void)
{
    pthread_mutex_lock(&ps_ctl.mu);
    if (!ps_ctl.running) {
        pthread_mutex_unlock(&ps_ctl.mu);
        return;
    }
    ps_ctl.stop = true;
    pthread_cond_signal(&ps_ctl.cv);
    pthread_mutex_unlock(&ps_ctl.mu);
    pthread_join(ps_ctl.thread, NULL);
    pthread_mutex_lock(&ps_ctl.mu);
    free(ps_ctl.pending); /* nothing: the thread drained it */
    ps_ctl.pending = NULL;
    free(ps_ctl.path);
    ps_ctl.path = NULL;
    ps_ctl.audit_fd = -1;
    ps_ctl.running = false;
    ps_ctl.stop = false;
    ps_ctl.flush_asked = ps_ctl.flush_done = 0;
    pthread_cond_destroy(&ps_ctl.cv);
    pthread_cond_destroy(&ps_ctl.done_cv);
    pthread_mutex_unlock(&ps_ctl.mu);
}
