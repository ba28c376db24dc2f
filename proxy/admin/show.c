/*
 * show.c - the read-only admin commands: show pools (a table), show pool
 * (table or the JSON of the contract), show stats. They run on the control
 * thread (control_execute hands them over, see show.h) and read the model
 * through control.h.
 */
#include "show.h"
#include "adminhttp.h"
#include "control.h"
#include "model.h"
#include "path.h"
#include "routejson.h"
#include "discjson.h"
#include "mirrorjson.h"
#include "discovery.h"
#include "routes.h"
#include "audit.h"
#include "conf.h"
#include "health.h"
#include "sbuf.h"
#include "state.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* --- reading ---------------------------------------------------------------------- */

/*
 * A table being filled: n columns, a header row, then one cell at a time
 * (each cell a string the grid owns). grid_render pads the cells into
 * aligned columns, two spaces apart, and frees them.
 */
struct grid {
    char **cells;
    unsigned n, rows, k;
};

static void grid_start(struct grid *g, const char *const *cols, unsigned n, unsigned rows)
{
    g->n = n;
    g->rows = rows + 1;
    g->k = 0;
    g->cells = veer_calloc((size_t)g->rows * n, sizeof(*g->cells));
    for (unsigned c = 0; c < n; c++)
        g->cells[g->k++] = veer_strdup(cols[c]);
}

/* Add a cell (taken, not copied). */
static void grid_put(struct grid *g, char *cell)
{
    g->cells[g->k++] = cell;
}

static void grid_render(struct grid *g, struct sbuf *o)
{
    size_t w[16] = {0};
    unsigned n = g->n;

    for (unsigned r = 0; r < g->rows; r++)
        for (unsigned c = 0; c < n; c++)
            if (strlen(g->cells[r * n + c]) > w[c])
                w[c] = strlen(g->cells[r * n + c]);
    for (unsigned r = 0; r < g->rows; r++) {
        for (unsigned c = 0; c < n; c++) {
            if (c + 1 < n)
                sb_printf(o, "%-*s  ", (int)w[c], g->cells[r * n + c]);
            else
                sb_puts(o, g->cells[r * n + c]);
        }
        sb_puts(o, "\n");
    }
    for (unsigned i = 0; i < g->rows * n; i++)
        free(g->cells[i]);
    free(g->cells);
}

/* Answer r with the grid as a table. */
static void grid_answer(struct ctl_req *r, struct grid *g)
{
    struct sbuf o;

    sb_init(&o);
    grid_render(g, &o);
    control_answer(r, o.s, true);
    sb_free(&o);
}

/* Answer r with what render writes (a JSON document). */
static void json_answer(struct ctl_req *r, void (*render)(struct sbuf *o))
{
    struct sbuf o;

    sb_init(&o);
    render(&o);
    control_answer(r, o.s, true);
    sb_free(&o);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, f);
    n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    s = veer_malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static const char *const pool_columns[] = {"pool",  "backend", "group", "state", "weight",
                                           "share", "active",  "conns", "gen"};

static void show_pool_json(const struct rt_pool *p, struct sbuf *o);

/* show pools --json: {"generation":N,"pools":[ each pool as show pool --json ]}. */
static void show_pools_json(struct sbuf *o)
{
    const struct model *m = control_model();
    bool first = true;

    sb_printf(o, "{\"generation\":%llu,\"pools\":[", (unsigned long long)m->generation);
    for (uint32_t i = 0; i < m->npools; i++) {
        if (m->pools[i].removed)
            continue; /* gone from the configuration (as for show pool and /status) */
        sb_puts(o, first ? "" : ",");
        first = false;
        show_pool_json(&m->pools[i], o);
    }
    sb_puts(o, "]}");
}

/* show pools: one row per backend, every pool (--json: every pool's show pool document). */
void show_pools(struct ctl_req *r)
{
    unsigned rows = 0;
    struct grid g;

    if (r->cmd.json)
        return json_answer(r, show_pools_json);

    for (uint32_t i = 0; i < control_model()->npools; i++)
        rows += control_model()->pools[i].nb;
    grid_start(&g, pool_columns, ARRAY_SIZE(pool_columns), rows);
    for (uint32_t i = 0; i < control_model()->npools; i++) {
        const struct rt_pool *p = &control_model()->pools[i];

        for (uint32_t j = 0; j < p->nb; j++) {
            const struct rt_backend *b = &p->b[j];

            grid_put(&g, veer_strdup(p->name));
            grid_put(&g, veer_strdup(b->be->name));
            grid_put(&g, veer_strdup(p->g[b->group].name));
            grid_put(&g, veer_strdup(backend_state_name(model_state(p, j))));
            grid_put(&g, fmt("%d", b->weight));
            grid_put(&g, fmt("%d", p->g[b->group].share));
            grid_put(&g, fmt("%u", backend_active(b->be)));
            grid_put(&g, fmt("%u", backend_conns(b->be)));
            grid_put(&g, fmt("%llu", (unsigned long long)control_model()->generation));
        }
    }
    grid_answer(r, &g);
}

static void show_pool_json(const struct rt_pool *p, struct sbuf *o)
{
    double *ew;

    sb_puts(o, "{\"pool\":");
    sb_json_str(o, p->name);
    sb_printf(o,
              ",\"generation\":%llu,\"balance\":", (unsigned long long)control_model()->generation);
    sb_json_str(o, p->conf->balance == BALANCE_LEASTCONN ? "leastconn"
                   : p->conf->balance == BALANCE_P2C     ? "p2c"
                                                         : "swrr");
    sb_puts(o, ",\"groups\":[");
    for (uint32_t g = 0; g < p->ng; g++) {
        sb_puts(o, g ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, p->g[g].name);
        sb_printf(o, ",\"share\":%d}", p->g[g].share);
    }
    sb_puts(o, "],\"backends\":[");
    ew = model_effective_weights(p);
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];

        sb_puts(o, i ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, b->be->name);
        sb_puts(o, ",\"address\":");
        sb_json_str(o, b->be->addr.text);
        sb_puts(o, ",\"group\":");
        sb_json_str(o, p->g[b->group].name);
        sb_printf(o,
                  ",\"state\":\"%s\",\"weight\":%d,\"effective_weight\":%.6g,\"active\":%u,"
                  "\"conns\":%u}",
                  backend_state_name(model_state(p, i)), b->weight, ew[i], backend_active(b->be),
                  backend_conns(b->be));
    }
    free(ew);
    sb_puts(o, "]}");
}

static void show_pool_text(const struct rt_pool *p, struct sbuf *o)
{
    static const char *const cols[] = {"backend",   "address", "group", "state",  "weight",
                                       "effective", "active",  "conns", "circuit"};
    double *ew = model_effective_weights(p);
    struct grid g;

    sb_printf(o, "pool %s generation %llu balance %s\n", p->name,
              (unsigned long long)control_model()->generation,
              p->conf->balance == BALANCE_LEASTCONN ? "leastconn"
              : p->conf->balance == BALANCE_P2C     ? "p2c"
                                                    : "swrr");
    for (uint32_t gi = 0; gi < p->ng; gi++)
        sb_printf(o, "group %s share %d\n", p->g[gi].name, p->g[gi].share);
    grid_start(&g, cols, ARRAY_SIZE(cols), p->nb);
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];

        grid_put(&g, veer_strdup(b->be->name));
        grid_put(&g, veer_strdup(b->be->addr.text));
        grid_put(&g, veer_strdup(p->g[b->group].name));
        grid_put(&g, veer_strdup(backend_state_name(model_state(p, i))));
        grid_put(&g, fmt("%d", b->weight));
        grid_put(&g, fmt("%.6g", ew[i]));
        grid_put(&g, fmt("%u", backend_active(b->be)));
        grid_put(&g, fmt("%u", backend_conns(b->be)));
        grid_put(&g, veer_strdup(breaker_state_name(b->breaker)));
    }
    grid_render(&g, o);
    free(ew);
}

/*
 * The pool r names, or -1 once r is answered ERR. A pool a reload took out
 * of the configuration is unknown (as for /status).
 */
static int live_pool(struct ctl_req *r)
{
    int pi = model_find_pool(control_model(), r->cmd.pool);
    char line[128];

    if (pi >= 0 && !control_model()->pools[pi].removed)
        return pi;
    snprintf(line, sizeof(line), "ERR unknown pool %s", r->cmd.pool);
    control_answer(r, line, false);
    return -1;
}

void show_pool(struct ctl_req *r)
{
    int pi = live_pool(r);
    struct sbuf o;

    if (pi < 0)
        return;
    sb_init(&o);
    if (r->cmd.json)
        show_pool_json(&control_model()->pools[pi], &o);
    else
        show_pool_text(&control_model()->pools[pi], &o);
    control_answer(r, o.s, true);
    sb_free(&o);
}

/* show stats: the last second's traffic per backend, what `veerctl top` draws. */
void show_stats(struct ctl_req *r)
{
    static const char *const cols[] = {"pool", "backend", "group",  "state", "weight",  "rps",
                                       "err%", "p99ms",   "active", "conns", "circuit", "gen"};
    unsigned rows = 0;
    struct grid g;

    if (r->cmd.json)
        return json_answer(r, adminhttp_status_json);
    for (uint32_t i = 0; i < control_model()->npools; i++)
        rows += control_model()->pools[i].nb;
    grid_start(&g, cols, ARRAY_SIZE(cols), rows);
    for (uint32_t i = 0; i < control_model()->npools; i++) {
        const struct rt_pool *p = &control_model()->pools[i];

        for (uint32_t j = 0; j < p->nb; j++) {
            const struct rt_backend *b = &p->b[j];

            grid_put(&g, veer_strdup(p->name));
            grid_put(&g, veer_strdup(b->be->name));
            grid_put(&g, veer_strdup(p->g[b->group].name));
            grid_put(&g, veer_strdup(backend_state_name(model_state(p, j))));
            grid_put(&g, fmt("%d", b->weight));
            grid_put(&g, fmt("%.0f", b->rate.rps));
            grid_put(&g, fmt("%.2f", 100.0 * b->rate.error_rate));
            grid_put(&g, fmt("%.2f", b->rate.p99_ms));
            grid_put(&g, fmt("%u", backend_active(b->be)));
            grid_put(&g, fmt("%u", backend_conns(b->be)));
            grid_put(&g, veer_strdup(breaker_state_name(b->breaker)));
            grid_put(&g, fmt("%llu", (unsigned long long)control_model()->generation));
        }
    }
    grid_answer(r, &g);
}

/*
 * route explain: what the data path would do with the request, against the
 * configuration the control thread holds (the one the newest snapshot was
 * built from): the canonical path, the route and its pool (or the fallback:
 * the first listener's pool), then routes_explain's lines for the routes
 * that ranked above the winner.
 */
void show_route_explain(struct ctl_req *r)
{
    const struct cmd *c = &r->cmd;
    const struct veer_conf *conf = control_conf();
    const struct model *m = control_model();
    const char *path = c->x.buf + c->x.path;
    size_t plen = strlen(path), clen = 0;
    char *canon = veer_malloc(plen + 1);
    struct routes_hdr hdrs[CMD_MAX_HEADERS];
    struct sbuf o, ex;
    int st, i = -1;

    st = path_canonical(path, plen, canon, plen + 1, &clen);
    if (st != PATH_OK) {
        char line[160];

        snprintf(line, sizeof(line), "ERR bad path: %s", path_status_name(st));
        free(canon);
        control_answer(r, line, false);
        return;
    }
    canon[clen] = '\0';
    sb_init(&o);
    sb_init(&ex);
    sb_printf(&o, "OK\ncanonical_path %s\n", canon);
    if (c->x.buf[c->x.query] != '\0')
        sb_printf(&o, "query %s (ignored for matching)\n", c->x.buf + c->x.query);
    if (conf->routes_table != NULL) {
        struct routes_req q = {.method = c->x.buf + c->x.method,
                               .method_len = strlen(c->x.buf + c->x.method),
                               .host = c->x.has_host ? c->x.buf + c->x.host : NULL,
                               .host_len = c->x.has_host ? strlen(c->x.buf + c->x.host) : 0,
                               .path = canon,
                               .path_len = clen,
                               .hdrs = hdrs,
                               .nhdrs = (size_t)c->x.nheaders};

        for (int k = 0; k < c->x.nheaders; k++)
            hdrs[k] = (struct routes_hdr){.name = c->x.buf + c->x.hname[k],
                                          .name_len = strlen(c->x.buf + c->x.hname[k]),
                                          .value = c->x.buf + c->x.hvalue[k],
                                          .value_len = strlen(c->x.buf + c->x.hvalue[k])};
        i = routes_explain(conf->routes_table, &q, &ex);
    }
    if (i >= 0 && (uint32_t)i < m->nroutes) {
        const struct rt_route *rt = &m->routes[i];

        /* The pool it sends to now (route set), and its maintenance. */
        sb_printf(&o, "route %s pool %s\n", rt->name,
                  rt->pool >= 0 ? m->pools[rt->pool].name : "(none)");
        if (rt->maint)
            sb_printf(&o, "state maintenance (503, Retry-After: %d)\n", rt->maint_retry_after);
    } else if (conf->nlistens > 0 && conf->listens[0].pool != NULL) {
        sb_printf(&o, "route none pool %s (listener fallback)\n", conf->listens[0].pool);
    } else {
        sb_puts(&o, "route none (no pool: 404 no_route)\n");
    }
    if (conf->routes_table == NULL) {
        sb_puts(&o, "no routes configured\n");
    } else {
        /* routes_explain's first line ("match NAME" / "no route") is the route line above. */
        const char *rest = ex.len ? memchr(ex.s, '\n', ex.len) : NULL;

        if (rest != NULL && rest[1] != '\0')
            sb_puts(&o, rest + 1);
    }
    control_answer(r, o.s, true);
    sb_free(&ex);
    sb_free(&o);
    free(canon);
}

static void show_routes_json(struct sbuf *o)
{
    const struct model *m = control_model();

    sb_printf(o, "{\"generation\":%llu,\"routes\":[", (unsigned long long)m->generation);
    for (uint32_t i = 0; i < m->nroutes; i++) {
        sb_puts(o, i ? "," : "");
        routejson_route(o, m, i);
    }
    sb_puts(o, "]}");
}

static char *match_text(const struct conf_route *cr)
{
    struct sbuf b;

    sb_init(&b);
    routejson_match_text(&b, cr);
    return sb_steal(&b);
}

/* show routes: each route, what it matches, where it sends, its last second. */
void show_routes(struct ctl_req *r)
{
    static const char *const cols[] = {"route", "match", "pool", "state", "rps", "err%", "p99ms"};
    const struct model *m = control_model();
    struct grid g;

    if (r->cmd.json)
        return json_answer(r, show_routes_json);
    grid_start(&g, cols, ARRAY_SIZE(cols), m->nroutes);
    for (uint32_t i = 0; i < m->nroutes; i++) {
        const struct rt_route *rt = &m->routes[i];

        grid_put(&g, veer_strdup(rt->name));
        grid_put(&g, match_text(&m->conf->routes[i]));
        grid_put(&g, veer_strdup(rt->pool >= 0 ? m->pools[rt->pool].name : "-"));
        grid_put(&g, veer_strdup(routejson_in_maintenance(m, i) ? "maintenance" : "serving"));
        grid_put(&g, fmt("%.0f", rt->rate.rps));
        grid_put(&g, fmt("%.2f", 100.0 * rt->rate.error_rate));
        grid_put(&g, fmt("%.2f", rt->rate.p99_ms));
    }
    grid_answer(r, &g);
}

static void show_discovery_json(struct sbuf *o)
{
    sb_puts(o, "{\"discovery\":");
    discjson_list(o, control_model());
    sb_puts(o, "}");
}

/* show discovery: each discover entry, its addresses and their states, its last resolution. */
static void show_discovery(struct ctl_req *r)
{
    static const char *const cols[] = {"pool",  "name",    "query",  "addresses", "draining",
                                       "ttl_s", "next_ms", "errors", "last_error"};
    const struct model *m = control_model();
    unsigned n = discovery_count();
    struct grid g;
    struct sbuf o;

    if (r->cmd.json)
        return json_answer(r, show_discovery_json);
    grid_start(&g, cols, ARRAY_SIZE(cols), n);
    for (unsigned i = 0; i < n; i++) {
        struct discovery_info d;
        int pi, draining = 0;

        discovery_get(i, &d);
        pi = model_find_pool(m, d.pool);
        for (uint32_t k = 0; pi >= 0 && k < m->pools[pi].nb; k++)
            draining += m->pools[pi].b[k].disc_id == d.id && m->pools[pi].b[k].gone;
        grid_put(&g, veer_strdup(d.pool));
        grid_put(&g, veer_strdup(d.name));
        grid_put(&g, fmt("%s %s", d.kind, d.query));
        grid_put(&g, fmt("%u", d.naddrs));
        grid_put(&g, fmt("%d", draining));
        grid_put(&g, d.has_ttl ? fmt("%u", d.ttl_s) : veer_strdup("-"));
        grid_put(&g, d.next_ms >= 0 ? fmt("%lld", (long long)d.next_ms) : veer_strdup("-"));
        grid_put(&g, fmt("%llu", (unsigned long long)d.errors));
        grid_put(&g, veer_strdup(d.failing && d.last_error ? d.last_error : "-"));
    }
    sb_init(&o);
    grid_render(&g, &o);
    for (unsigned i = 0; i < n; i++) {
        struct discovery_info d;
        int pi;

        discovery_get(i, &d);
        pi = model_find_pool(m, d.pool);
        for (uint32_t k = 0; k < d.naddrs; k++) {
            int bi = pi >= 0 ? model_find_backend(&m->pools[pi], d.addrs[k].backend) : -1;

            sb_printf(&o, "  %s/%s  %s  %s\n", d.pool, d.addrs[k].backend, d.addrs[k].addr.text,
                      bi >= 0 ? backend_state_name(model_state(&m->pools[pi], (uint32_t)bi))
                              : "absent");
        }
    }
    control_answer(r, o.s ? o.s : "", true);
    sb_free(&o);
}

/* mirror report POOL [--json]: what the shadow answered differently. */
static void show_mirror_report(struct ctl_req *r)
{
    const struct model *m = control_model();
    int pi = live_pool(r);
    struct sbuf o;

    if (pi < 0)
        return;
    sb_init(&o);
    if (r->cmd.json)
        mirrorjson_report(&o, m, (unsigned)pi);
    else
        mirrorjson_text(&o, m, (unsigned)pi);
    /* The reply's end is an empty line: the text must not end with its own newline. */
    if (!r->cmd.json && o.len && o.s[o.len - 1] == '\n')
        o.s[--o.len] = '\0';
    control_answer(r, o.s, true);
    sb_free(&o);
}

void show_execute(struct ctl_req *r)
{
    switch (r->cmd.kind) {
    case CMD_SHOW_POOLS:
        show_pools(r);
        return;
    case CMD_SHOW_POOL:
        show_pool(r);
        return;
    case CMD_SHOW_STATS:
        show_stats(r);
        return;
    case CMD_ROUTE_EXPLAIN:
        show_route_explain(r);
        return;
    case CMD_SHOW_ROUTES:
        show_routes(r);
        return;
    case CMD_SHOW_DISCOVERY:
        show_discovery(r);
        return;
    case CMD_MIRROR_REPORT:
        show_mirror_report(r);
        return;
    default:
        control_answer(r, "ERR not a show command", false);
        return;
    }
}
