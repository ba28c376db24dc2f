/*
 * prometheus.c - the Prometheus text rendering (exposition format 0.0.4) of
 * everything veer counts. See prometheus.h.
 */
#include "discovery.h"
#include "prometheus.h"
#include "mirrorstat.h"
#include "cluster.h"
#include "model.h"
#include "sbuf.h"
#include "veer.h"
#include "worker.h"

#include <string.h>

/* --- rendering ----------------------------------------------------------------------- */

static uint64_t ld(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void header(struct sbuf *o, const char *name, const char *type, const char *help)
{
    sb_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the text format wants. */
static void label(struct sbuf *o, const char *key, const char *value, bool first)
{
    sb_printf(o, "%s%s=\"", first ? "" : ",", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            sb_printf(o, "\\%c", *p);
        else if (*p == '\n')
            sb_puts(o, "\\n");
        else
            sb_add(o, p, 1);
    }
    sb_puts(o, "\"");
}

static void le(struct sbuf *o, double bound)
{
    sb_printf(o, ",le=\"%g\"} ", bound);
}

/* Sum of a histogram over workers, added into acc (LAT_BUCKETS + 3 values: buckets, count, sum). */
static void hist_add(uint64_t *acc, struct hist *h)
{
    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        acc[i] += ld(&h->bucket[i]);
    acc[LAT_BUCKETS + 1] += ld(&h->count);
    acc[LAT_BUCKETS + 2] += ld(&h->sum_us);
}

/*
 * The series of one histogram. Its _count is the +Inf bucket, not acc[nb + 1]: a scrape racing
 * a worker's hist_observe can load the new count but an old bucket, and the text format wants
 * the two equal.
 */
static void hist_lines(struct sbuf *o, const char *name, const char *labels, const uint64_t *acc,
                       const double *bounds, unsigned nb)
{
    uint64_t cum = 0;

    for (unsigned i = 0; i < nb; i++) {
        cum += acc[i];
        sb_printf(o, "%s_bucket{%s", name, labels);
        le(o, bounds[i]);
        sb_printf(o, "%llu\n", (unsigned long long)cum);
    }
    cum += acc[nb];
    sb_printf(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    sb_printf(o, "%s_sum{%s} %.6f\n", name, labels, (double)acc[nb + 2] / 1e6);
    sb_printf(o, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

static const char *const class_names[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *const err_names[UERR_KINDS] = {"connect", "timeout", "reset", "response"};

/*
 * The families with a line (or a few) per backend, rendered row by row so that a render can
 * stop after any row and go on later (metrics_render_step): a row is one backend of a pool,
 * or for the duration histogram one group (its sum over the group's backends), and a
 * family's pool may end with lines of its own.
 */
struct family {
    const char *name, *type, *help;
    unsigned k; /* which value, for families that share a row function */
    uint32_t (*rows)(const struct rt_pool *rp);
    void (*row)(struct sbuf *o, const struct family *f, const struct model *m, uint32_t p,
                uint32_t i, struct worker **ws, unsigned nw);
    void (*pool_end)(struct sbuf *o, const struct model *m, uint32_t p, struct worker **ws,
                     unsigned nw);
    /* Lines after every pool's. */
    void (*end)(struct sbuf *o, const struct model *m, struct worker **ws, unsigned nw);
};

static uint32_t backend_rows(const struct rt_pool *rp)
{
    return rp->nb;
}

static uint32_t group_rows(const struct rt_pool *rp)
{
    return rp->ng + 1; /* the groups, then veer's own answers (empty group) */
}

/*
 * A row's series of requests on routes, summed over workers by route metric slot: cells
 * gathered, sorted by slot and merged, so a series comes once, in slot order.
 */
struct slot_sum {
    uint32_t slot;
    uint64_t req[5];
    uint64_t lat[LAT_BUCKETS + 3]; /* as hist_add sums them */
};

struct slot_sums {
    struct slot_sum *a;
    size_t n, cap;
};

static void sums_add(struct slot_sums *s, uint32_t slot, struct req_wstat *st)
{
    struct slot_sum *e;

    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->a = veer_realloc(s->a, s->cap * sizeof(*s->a));
    }
    e = &s->a[s->n++];
    memset(e, 0, sizeof(*e));
    e->slot = slot;
    for (unsigned c = 0; c < 5; c++)
        e->req[c] = ld(&st->requests[c]);
    hist_add(e->lat, &st->latency);
}

/* A backend's cells (key: the slot), every worker. */
static void sums_backend(struct slot_sums *s, struct backend *be, unsigned nw)
{
    for (unsigned w = 0; w < nw; w++)
        for (struct metrics_cell *c = metrics_cells_first(&be->ws[w].routed); c; c = c->next)
            sums_add(s, (uint32_t)c->key, &c->st);
}

/* veer's own answers to requests of a route in pool p, every worker. */
static void sums_own(struct slot_sums *s, uint32_t p, struct worker **ws, unsigned nw)
{
    for (unsigned w = 0; w < nw; w++)
        for (struct metrics_cell *c = metrics_cells_first(&ws[w]->local_routed); c; c = c->next)
            if ((uint32_t)c->key == p)
                sums_add(s, (uint32_t)(c->key >> 32), &c->st);
}

static int slot_cmp(const void *a, const void *b)
{
    const struct slot_sum *x = a, *y = b;

    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* Sort by slot and merge the entries of one slot into one. */
static void sums_merge(struct slot_sums *s)
{
    size_t k = 0;

    if (s->n == 0)
        return;
    qsort(s->a, s->n, sizeof(*s->a), slot_cmp);
    for (size_t i = 1; i < s->n; i++) {
        if (s->a[i].slot != s->a[k].slot) {
            s->a[++k] = s->a[i];
            continue;
        }
        for (unsigned c = 0; c < 5; c++)
            s->a[k].req[c] += s->a[i].req[c];
        for (unsigned j = 0; j < LAT_BUCKETS + 3; j++)
            s->a[k].lat[j] += s->a[i].lat[j];
    }
    s->n = k + 1;
}

static const char *slot_name(const struct model *m, uint32_t slot)
{
    return slot < m->nslots && m->slot_names[slot] ? m->slot_names[slot] : "";
}

/*
 * One veer_requests_total line; the 2xx line of requests on no route is there even at 0 (a
 * backend shows up before its first request), the other series only once counted.
 */
static void request_lines(struct sbuf *o, const char *pool, const char *group, const char *backend,
                          const char *route, const uint64_t *req, bool keep_2xx)
{
    for (unsigned c = 0; c < 5; c++) {
        if (req[c] == 0 && !(c == 1 && keep_2xx))
            continue;
        sb_puts(o, "veer_requests_total{");
        label(o, "pool", pool, true);
        label(o, "group", group, false);
        label(o, "backend", backend, false);
        label(o, "route", route, false);
        label(o, "code_class", class_names[c], false);
        sb_printf(o, "} %llu\n", (unsigned long long)req[c]);
    }
}

static void request_row(struct sbuf *o, const struct family *f, const struct model *m, uint32_t p,
                        uint32_t i, struct worker **ws, unsigned nw)
{
    const struct rt_pool *rp = &m->pools[p];
    struct backend *be = rp->b[i].be;
    const char *group = rp->g[rp->b[i].group].name;
    struct slot_sums s = {0};
    uint64_t req[5] = {0};

    for (unsigned c = 0; c < 5; c++)
        for (unsigned w = 0; w < nw; w++)
            req[c] += ld(&be->ws[w].fb.requests[c]);
    request_lines(o, rp->name, group, be->name, "", req, true);
    sums_backend(&s, be, nw);
    sums_merge(&s);
    for (size_t k = 0; k < s.n; k++)
        request_lines(o, rp->name, group, be->name, slot_name(m, s.a[k].slot), s.a[k].req, false);
    free(s.a);
}

/* veer's own answers in pool p: empty group and backend, on no route then by route. */
static void requests_own(struct sbuf *o, const struct model *m, uint32_t p, struct worker **ws,
                         unsigned nw)
{
    const struct rt_pool *rp = &m->pools[p];
    struct slot_sums s = {0};
    uint64_t req[5] = {0};

    for (unsigned c = 0; c < 5 && p < METRIC_POOLS; c++)
        for (unsigned w = 0; w < nw; w++)
            req[c] += ld(&ws[w]->local[p].requests[c]);
    request_lines(o, rp->name, "", "", "", req, false);
    sums_own(&s, p, ws, nw);
    sums_merge(&s);
    for (size_t k = 0; k < s.n; k++)
        request_lines(o, rp->name, "", "", slot_name(m, s.a[k].slot), s.a[k].req, false);
    free(s.a);
}

/* veer's answers without a pool (no route matched and the listener has none): all empty. */
static void requests_nopool(struct sbuf *o, const struct model *m, struct worker **ws, unsigned nw)
{
    uint64_t req[5] = {0};

    for (unsigned c = 0; c < 5; c++)
        for (unsigned w = 0; w < nw; w++)
            req[c] += ld(&ws[w]->nopool.requests[c]);
    request_lines(o, "", "", "", "", req, false);
}

static void duration_lines(struct sbuf *o, const char *pool, const char *group, const char *route,
                           const uint64_t *acc)
{
    struct sbuf l;

    sb_init(&l);
    label(&l, "pool", pool, true);
    label(&l, "group", group, false);
    label(&l, "route", route, false);
    hist_lines(o, "veer_request_duration_seconds", l.s, acc, lat_bounds, LAT_BUCKETS);
    sb_free(&l);
}

/*
 * Group g of pool p (its requests on no route, then by route), or for g == ng veer's own
 * answers in p (series only once counted).
 */
static void duration_row(struct sbuf *o, const struct family *f, const struct model *m, uint32_t p,
                         uint32_t g, struct worker **ws, unsigned nw)
{
    const struct rt_pool *rp = &m->pools[p];
    uint64_t acc[LAT_BUCKETS + 3] = {0};
    struct slot_sums s = {0};

    if (g < rp->ng) {
        for (uint32_t i = 0; i < rp->nb; i++)
            if (rp->b[i].group == g) {
                for (unsigned w = 0; w < nw; w++)
                    hist_add(acc, &rp->b[i].be->ws[w].fb.latency);
                sums_backend(&s, rp->b[i].be, nw);
            }
        duration_lines(o, rp->name, rp->g[g].name, "", acc);
    } else {
        if (p < METRIC_POOLS)
            for (unsigned w = 0; w < nw; w++)
                hist_add(acc, &ws[w]->local[p].latency);
        if (acc[LAT_BUCKETS + 1] != 0)
            duration_lines(o, rp->name, "", "", acc);
        sums_own(&s, p, ws, nw);
    }
    sums_merge(&s);
    for (size_t k = 0; k < s.n; k++)
        if (s.a[k].lat[LAT_BUCKETS + 1] != 0)
            duration_lines(o, rp->name, g < rp->ng ? rp->g[g].name : "", slot_name(m, s.a[k].slot),
                           s.a[k].lat);
    free(s.a);
}

static void duration_nopool(struct sbuf *o, const struct model *m, struct worker **ws, unsigned nw)
{
    uint64_t acc[LAT_BUCKETS + 3] = {0};

    for (unsigned w = 0; w < nw; w++)
        hist_add(acc, &ws[w]->nopool.latency);
    if (acc[LAT_BUCKETS + 1] != 0)
        duration_lines(o, "", "", "", acc);
}

/*
 * A backend's effective weight. They are computed for a whole pool at once
 * (one pass; one call per backend would scan the pool each time) and kept
 * while the rows of that pool at that generation are rendered, across slices.
 */
static double effective_weight(const struct model *m, const struct rt_pool *rp, uint32_t i)
{
    static double *ew;
    static const struct rt_pool *ew_pool;
    static uint64_t ew_gen;
    static uint32_t ew_n;

    if (ew == NULL || rp != ew_pool || m->generation != ew_gen || rp->nb != ew_n) {
        free(ew);
        ew = model_effective_weights(rp);
        ew_pool = rp;
        ew_gen = m->generation;
        ew_n = rp->nb;
    }
    return ew[i];
}

/* veer_backend_weight, _effective_weight, veer_circuit_state, _active_requests (f->k). */
static void gauge_row(struct sbuf *o, const struct family *f, const struct model *m, uint32_t p,
                      uint32_t i, struct worker **ws, unsigned nw)
{
    const struct rt_pool *rp = &m->pools[p];
    double v = f->k == 0   ? rp->b[i].weight
               : f->k == 1 ? effective_weight(m, rp, i)
               : f->k == 2 ? rp->b[i].breaker
                           : backend_active(rp->b[i].be);

    sb_printf(o, "%s{", f->name);
    label(o, "pool", rp->name, true);
    label(o, "group", rp->g[rp->b[i].group].name, false);
    label(o, "backend", rp->b[i].be->name, false);
    sb_printf(o, "} %.6g\n", v);
}

static void state_row(struct sbuf *o, const struct family *f, const struct model *m, uint32_t p,
                      uint32_t i, struct worker **ws, unsigned nw)
{
    const struct rt_pool *rp = &m->pools[p];

    for (int s = BE_PENDING; s <= BE_MAINT; s++) {
        sb_puts(o, "veer_backend_state{");
        label(o, "pool", rp->name, true);
        label(o, "group", rp->g[rp->b[i].group].name, false);
        label(o, "backend", rp->b[i].be->name, false);
        label(o, "state", backend_state_name(s), false);
        sb_printf(o, "} %d\n", model_state(rp, i) == (enum backend_state)s);
    }
}

static void error_row(struct sbuf *o, const struct family *f, const struct model *m, uint32_t p,
                      uint32_t i, struct worker **ws, unsigned nw)
{
    const struct rt_pool *rp = &m->pools[p];

    for (unsigned k = 0; k < UERR_KINDS; k++) {
        uint64_t n = 0;

        for (unsigned w = 0; w < nw; w++)
            n += ld(&rp->b[i].be->ws[w].errors[k]);
        sb_puts(o, "veer_upstream_errors_total{");
        label(o, "pool", rp->name, true);
        label(o, "backend", rp->b[i].be->name, false);
        label(o, "kind", err_names[k], false);
        sb_printf(o, "} %llu\n", (unsigned long long)n);
    }
}

static const struct family families[] = {
    {"veer_requests_total", "counter",
     "Requests answered, by pool, group, backend, route and status class (veer's own answers "
     "have an empty backend, requests that matched no route an empty route).",
     0, backend_rows, request_row, requests_own, requests_nopool},
    {"veer_request_duration_seconds", "histogram",
     "Time from a request's first byte to the end of its response, by pool, group and route.", 0,
     group_rows, duration_row, NULL, duration_nopool},
    {"veer_backend_weight", "gauge", "Configured or operator-set weight (0-1000).", 0, backend_rows,
     gauge_row, NULL, NULL},
    {"veer_backend_effective_weight", "gauge",
     "Share of the pool's traffic in percent: group share x weight / group weight.", 1,
     backend_rows, gauge_row, NULL, NULL},
    {"veer_circuit_state", "gauge", "Circuit breaker: 0 closed, 1 open, 2 half-open.", 2,
     backend_rows, gauge_row, NULL, NULL},
    {"veer_backend_active_requests", "gauge", "Requests in flight to the backend.", 3, backend_rows,
     gauge_row, NULL, NULL},
    {"veer_backend_state", "gauge", "1 for the backend's current state, 0 for the others.", 0,
     backend_rows, state_row, NULL, NULL},
    {"veer_upstream_errors_total", "counter",
     "Failed upstream exchanges, by kind: connect, timeout, reset, response.", 0, backend_rows,
     error_row, NULL, NULL},
};

static void pool_gauges(struct sbuf *o, const struct model *m)
{
    unsigned drains = 0;

    header(o, "veer_group_share", "gauge",
           "Share of the pool's traffic given to the group, percent.");
    for (uint32_t p = 0; p < m->npools; p++)
        for (uint32_t g = 0; g < m->pools[p].ng; g++) {
            sb_puts(o, "veer_group_share{");
            label(o, "pool", m->pools[p].name, true);
            label(o, "group", m->pools[p].g[g].name, false);
            sb_printf(o, "} %d\n", m->pools[p].g[g].share);
        }
    header(o, "veer_maintenance", "gauge", "1 while the pool is in maintenance mode.");
    for (uint32_t p = 0; p < m->npools; p++) {
        sb_puts(o, "veer_maintenance{");
        label(o, "pool", m->pools[p].name, true);
        sb_printf(o, "} %d\n", m->maint || m->pools[p].maint);
    }
    header(o, "veer_pool_eligible_backends", "gauge", "Backends that may take new requests.");
    for (uint32_t p = 0; p < m->npools; p++) {
        unsigned n = 0;

        for (uint32_t i = 0; i < m->pools[p].nb; i++) {
            n += model_eligible(&m->pools[p], i);
            drains += rt_draining(&m->pools[p].b[i]) && !m->pools[p].b[i].drained;
        }
        sb_puts(o, "veer_pool_eligible_backends{");
        label(o, "pool", m->pools[p].name, true);
        sb_printf(o, "} %u\n", n);
    }
    header(o, "veer_drains_in_progress", "gauge", "Backends draining that still have work.");
    sb_printf(o, "veer_drains_in_progress %u\n", drains);
    header(o, "veer_generation", "gauge", "Generation of the routing snapshot in force.");
    sb_printf(o, "veer_generation %llu\n", (unsigned long long)m->generation);
}

static void control_figures(struct sbuf *o, const struct model *m)
{
    uint64_t acc[SHIFT_BUCKETS + 3];

    header(o, "veer_shift_applied_seconds", "histogram",
           "Time from reading a change to storing its snapshot (applied_us).");
    memcpy(acc, metrics_ctl.shift_bucket, sizeof(metrics_ctl.shift_bucket));
    acc[SHIFT_BUCKETS + 1] = metrics_ctl.shift_count;
    acc[SHIFT_BUCKETS + 2] = metrics_ctl.shift_sum_us;
    {
        uint64_t cum = 0;

        for (unsigned i = 0; i < SHIFT_BUCKETS; i++) {
            cum += acc[i];
            sb_printf(o, "veer_shift_applied_seconds_bucket{le=\"%g\"} %llu\n", shift_bounds[i],
                      (unsigned long long)cum);
        }
        cum += acc[SHIFT_BUCKETS];
        sb_printf(o, "veer_shift_applied_seconds_bucket{le=\"+Inf\"} %llu\n",
                  (unsigned long long)cum);
        sb_printf(o, "veer_shift_applied_seconds_sum %.6f\nveer_shift_applied_seconds_count %llu\n",
                  (double)metrics_ctl.shift_sum_us / 1e6,
                  (unsigned long long)metrics_ctl.shift_count);
    }
    header(o, "veer_shifts_refused_total", "counter", "Admin changes refused (ERR).");
    sb_printf(o, "veer_shifts_refused_total %llu\n", (unsigned long long)metrics_ctl.refused);
    header(o, "veer_health_check_seconds", "histogram", "Duration of readiness checks, by pool.");
    for (uint32_t p = 0; p < m->npools && p < METRIC_POOLS; p++) {
        uint64_t h[LAT_BUCKETS + 3];
        struct sbuf l;

        if (!m->pools[p].conf->has_health)
            continue;
        memcpy(h, metrics_ctl.health[p].bucket, sizeof(metrics_ctl.health[p].bucket));
        h[LAT_BUCKETS + 1] = metrics_ctl.health[p].count;
        h[LAT_BUCKETS + 2] = metrics_ctl.health[p].sum_us;
        sb_init(&l);
        label(&l, "pool", m->pools[p].name, true);
        hist_lines(o, "veer_health_check_seconds", l.s, h, lat_bounds, LAT_BUCKETS);
        sb_free(&l);
    }
}

/* DNS discovery, per discover entry (its name is unique across the file). */
static void discovery_figures(struct sbuf *o)
{
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"veer_discovery_errors_total", "counter",
         "Failed DNS resolutions (timeout, SERVFAIL, refused, over max_backends), by entry."},
        {"veer_discovery_resolutions_total", "counter",
         "DNS resolutions that answered (empty answers included), by entry."},
        {"veer_discovery_backends", "gauge",
         "Addresses in an entry's current set (the last good answer)."},
    };
    unsigned n = discovery_count();
    struct discovery_info d;

    for (unsigned f = 0; n > 0 && f < ARRAY_SIZE(fams); f++) {
        header(o, fams[f].name, fams[f].type, fams[f].help);
        for (unsigned i = 0; i < n; i++) {
            uint64_t v;

            discovery_get(i, &d);
            v = f == 0 ? d.errors : f == 1 ? d.resolutions : d.naddrs;
            sb_printf(o, "%s{", fams[f].name);
            label(o, "name", d.name, true);
            sb_printf(o, "} %llu\n", (unsigned long long)v);
        }
    }
}

/* Shadow traffic, per site: results, and the latency difference shadow minus primary. */
static void mirror_figures(struct sbuf *o)
{
    struct mirror_site *first = mirror_sites_first();

    if (first == NULL)
        return;
    header(o, "veer_mirror_requests_total", "counter",
           "Mirrored requests by result (match, status_diff, body_diff, timeout, error, dropped).");
    for (struct mirror_site *s = first; s; s = s->next) {
        struct mirror_totals t;

        mirror_site_sum(s, &t);
        for (unsigned r = 0; r < MR_RESULTS; r++) {
            uint64_t n = 0;

            for (unsigned c = 0; c < 5; c++)
                n += t.n[c][r];
            sb_puts(o, "veer_mirror_requests_total{");
            label(o, "pool", s->pool, true);
            label(o, "route", s->route, false);
            label(o, "result", mirror_result_name((enum mirror_result)r), false);
            sb_printf(o, "} %llu\n", (unsigned long long)n);
        }
    }
    header(o, "veer_mirror_latency_delta_seconds", "histogram",
           "Shadow latency minus primary latency of the mirrored requests both answered.");
    for (struct mirror_site *s = first; s; s = s->next) {
        struct mirror_totals t;
        uint64_t b[MIRROR_DELTA_BOUNDS + 1], cum = 0;
        struct sbuf l;

        mirror_site_sum(s, &t);
        mirror_delta_classes(t.delta, b);
        sb_init(&l);
        label(&l, "pool", s->pool, true);
        label(&l, "route", s->route, false);
        for (unsigned i = 0; i < MIRROR_DELTA_BOUNDS; i++) {
            cum += b[i];
            sb_printf(o, "veer_mirror_latency_delta_seconds_bucket{%s", l.s);
            le(o, mirror_delta_bounds[i]);
            sb_printf(o, "%llu\n", (unsigned long long)cum);
        }
        cum += b[MIRROR_DELTA_BOUNDS];
        sb_printf(o, "veer_mirror_latency_delta_seconds_bucket{%s,le=\"+Inf\"} %llu\n", l.s,
                  (unsigned long long)cum);
        sb_printf(o, "veer_mirror_latency_delta_seconds_sum{%s} %.6f\n", l.s,
                  (double)t.delta_sum_us / 1e6);
        sb_printf(o, "veer_mirror_latency_delta_seconds_count{%s} %llu\n", l.s,
                  (unsigned long long)cum);
        sb_free(&l);
    }
}

/* Everything after the per-backend families: small, rendered in one go. */
static void render_tail(struct sbuf *o, const struct model *m, struct worker **ws, unsigned nw)
{
    uint64_t retries = 0, upstreams = 0, held = 0;

    pool_gauges(o, m);
    control_figures(o, m);
    discovery_figures(o);
    mirror_figures(o);
    for (unsigned w = 0; w < nw; w++) {
        retries += ld(&ws[w]->mstat.retries);
        upstreams += atomic_load_explicit(&ws[w]->mstat.upstreams, memory_order_relaxed);
        held += atomic_load_explicit(&ws[w]->mstat.held, memory_order_relaxed);
    }
    header(o, "veer_retries_total", "counter", "Requests sent again to another backend.");
    sb_printf(o, "veer_retries_total %llu\n", (unsigned long long)retries);
    header(o, "veer_open_connections", "gauge", "Open connections, client side and upstream side.");
    sb_printf(o, "veer_open_connections{side=\"client\"} %d\n",
              atomic_load_explicit(&veer_client_connections, memory_order_relaxed));
    sb_printf(o, "veer_open_connections{side=\"upstream\"} %llu\n", (unsigned long long)upstreams);
    header(o, "veer_requests_held", "gauge",
           "Requests waiting for maintenance to end or for an eligible backend (hold).");
    sb_printf(o, "veer_requests_held %llu\n", (unsigned long long)held);
    if (m->conf && m->conf->cluster.enabled) {
        header(o, "veer_cluster_connected", "gauge", "1 while this instance is connected to etcd.");
        sb_printf(o, "veer_cluster_connected %d\n", cluster_connected() ? 1 : 0);
        header(o, "veer_cluster_revision", "gauge",
               "The etcd revision of the intent applied last.");
        sb_printf(o, "veer_cluster_revision %lld\n", (long long)cluster_revision());
    }
}

/* Which backends the model has, as one number: a render restarts when it changes. */
static uint64_t membership(const struct model *m)
{
    uint64_t h = m->npools;

    for (uint32_t p = 0; p < m->npools; p++) {
        h = h * 1000003u + m->pools[p].nb + ((uint64_t)m->pools[p].ng << 32);
        for (uint32_t i = 0; i < m->pools[p].nb; i++)
            h = h * 31u + m->pools[p].b[i].be->id;
    }
    return h;
}

/* Restarts a render tolerates before it finishes in one go (backends keep changing). */
#define RENDER_RESTARTS 3

bool metrics_render_step(struct metrics_cursor *c, struct sbuf *o, const struct model *m,
                         struct worker **ws, unsigned nw, uint64_t budget_us)
{
    uint64_t t0 = veer_now_us(), fp = membership(m);
    unsigned rows = 0;

    if (c->fam == 0 && c->p == 0 && c->i == 0 && !c->begun) {
        c->begun = true;
        c->fp = fp;
        header(o, "veer_info", "gauge", "veer's version.");
        sb_printf(o, "veer_info{version=\"%s\"} 1\n", VEER_VERSION);
    } else if (fp != c->fp) {
        /* Backends came or went between two slices: rows would be missed or doubled. */
        o->len = 0;
        *c = (struct metrics_cursor){.restarts = c->restarts + 1};
        if (c->restarts > RENDER_RESTARTS)
            budget_us = 0;
        return metrics_render_step(c, o, m, ws, nw, budget_us);
    }
    while (c->fam < ARRAY_SIZE(families)) {
        const struct family *f = &families[c->fam];

        if (c->p == 0 && c->i == 0 && !c->headed) {
            header(o, f->name, f->type, f->help);
            c->headed = true;
        }
        if (c->p >= m->npools) {
            if (f->end)
                f->end(o, m, ws, nw);
            c->fam++;
            c->p = c->i = 0;
            c->headed = false;
            continue;
        }
        if (c->i < f->rows(&m->pools[c->p])) {
            if (budget_us && rows++ > 0 && rows % 16 == 0 && veer_now_us() - t0 >= budget_us)
                return false;
            f->row(o, f, m, c->p, c->i++, ws, nw);
            continue;
        }
        if (f->pool_end)
            f->pool_end(o, m, c->p, ws, nw);
        c->p++;
        c->i = 0;
    }
    render_tail(o, m, ws, nw);
    return true;
}

void metrics_render(struct sbuf *o, const struct model *m, struct worker **ws, unsigned nw)
{
    struct metrics_cursor c = {0};

    metrics_render_step(&c, o, m, ws, nw, 0);
}
