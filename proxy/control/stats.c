/*
 * stats.c - per-second traffic figures. See stats.h.
 */
#include "stats.h"
#include "control-i.h"
#include "veer.h"

#include <string.h>

double stats_p99_ms(const uint64_t *b)
{
    uint64_t total = 0, seen = 0;

    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        total += b[i];
    if (total == 0)
        return 0;
    for (unsigned i = 0; i < LAT_BUCKETS; i++) {
        seen += b[i];
        if (seen * 100 >= total * 99)
            return lat_bounds[i] * 1000.0;
    }
    return lat_bounds[LAT_BUCKETS - 1] * 1000.0 * 2; /* beyond the last bound */
}

void stats_ring_push(struct stats_ring **ring, const struct rate *r)
{
    struct stats_ring *q = *ring;
    struct stats_point *pt;
    unsigned k = 0;

    if (q == NULL)
        q = *ring = veer_calloc(1, sizeof(*q));
    pt = &q->p[q->head];
    pt->rps = r->rps >= 4294967295.0 ? UINT32_MAX : (uint32_t)r->rps;
    pt->error_bp = (uint16_t)(r->error_rate * 10000 + 0.5);
    if (r->p99_ms > 0) {
        /* p99_ms is a bucket's bound (stats_p99_ms): find which. */
        while (k < LAT_BUCKETS && r->p99_ms > lat_bounds[k] * 1000.0)
            k++;
        k++;
    }
    pt->p99 = (uint8_t)k;
    q->head = (uint16_t)((q->head + 1) % STATS_HISTORY);
    if (q->len < STATS_HISTORY)
        q->len++;
}

unsigned stats_ring_len(const struct stats_ring *ring)
{
    return ring ? ring->len : 0;
}

void stats_ring_get(const struct stats_ring *ring, unsigned k, double *rps, double *error_rate,
                    double *p99_ms)
{
    const struct stats_point *pt =
        &ring->p[(ring->head + STATS_HISTORY - ring->len + k) % STATS_HISTORY];

    *rps = pt->rps;
    *error_rate = pt->error_bp / 10000.0;
    if (pt->p99 == 0)
        *p99_ms = 0;
    else if (pt->p99 <= LAT_BUCKETS)
        *p99_ms = lat_bounds[pt->p99 - 1] * 1000.0;
    else
        *p99_ms = lat_bounds[LAT_BUCKETS - 1] * 1000.0 * 2; /* as stats_p99_ms */
}

/* Add one second's backend deltas into a group/pool rate being summed. */
static void accumulate(struct rate *into, const struct rate *from, uint64_t dreq, uint64_t derr)
{
    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        into->delta[i] += from->delta[i];
    into->last_total += dreq; /* used as "requests this second" while summing */
    into->last_errors += derr;
}

static void finish_rate(struct rate *r)
{
    r->rps = (double)r->last_total;
    r->error_rate = r->last_total ? (double)r->last_errors / (double)r->last_total : 0;
    if (r->error_rate > 1)
        r->error_rate = 1; /* as a backend's: errors of attempts retried elsewhere add up */
    r->p99_ms = stats_p99_ms(r->delta);
}

/*
 * Take this second's figures into r from the totals now (requests, errors,
 * duration buckets): the deltas since the last tick, in *dreq and *derr.
 * A total that went down (a backend deleted from a sum) counts as 0 this
 * second, then from there.
 */
static void rate_update(struct rate *r, uint64_t total, uint64_t errors, const uint64_t *cur,
                        uint64_t *dreq, uint64_t *derr)
{
    *dreq = total >= r->last_total ? total - r->last_total : 0;
    *derr = errors >= r->last_errors ? errors - r->last_errors : 0;
    for (unsigned i = 0; i <= LAT_BUCKETS; i++) {
        r->delta[i] = cur[i] >= r->last[i] ? cur[i] - r->last[i] : 0;
        r->last[i] = cur[i];
    }
    r->last_total = total;
    r->last_errors = errors;
    r->rps = (double)*dreq;
    r->error_rate = *dreq ? (double)*derr / (double)*dreq : 0;
    if (r->error_rate > 1)
        r->error_rate = 1;
    r->p99_ms = stats_p99_ms(r->delta);
}

static void backend_tick(struct rt_backend *b, unsigned nw, uint64_t *dreq, uint64_t *derr)
{
    uint64_t total = 0, errors = 0, cur[LAT_BUCKETS + 1] = {0};

    for (unsigned w = 0; w < nw; w++) {
        struct backend_wstat *ws = &b->be->ws[w];
        uint64_t req[5] = {0};

        backend_wstat_requests(ws, req, cur);
        for (unsigned c = 0; c < 5; c++)
            total += req[c];
        errors += backend_wstat_failures(ws);
    }
    rate_update(&b->rate, total, errors, cur, dreq, derr);
}

/* A route's totals being summed: requests, 5xx, duration buckets. */
struct route_sum {
    uint64_t total, errors, cur[LAT_BUCKETS + 1];
};

static void route_add(struct route_sum *sums, uint32_t nslots, uint32_t slot,
                      const struct req_wstat *st)
{
    struct route_sum *s = &sums[slot];

    if (slot >= nslots)
        return;
    for (unsigned c = 0; c < 5; c++)
        s->total += atomic_load_explicit(&st->requests[c], memory_order_relaxed);
    s->errors += atomic_load_explicit(&st->requests[4], memory_order_relaxed);
    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        s->cur[i] += atomic_load_explicit(&st->latency.bucket[i], memory_order_relaxed);
}

/*
 * The routes' figures: for each metric slot, the sum of its cells over
 * every backend of every pool (a route set leaves the route's figures in
 * the pool it sent to before) and over veer's own answers of each worker;
 * errors are the 5xx, veer's own included. A route's first tick only
 * takes its totals: a route name configured again finds its slot's old
 * counts, which are not this second's.
 */
static void routes_tick(struct model *m, unsigned nw)
{
    struct route_sum *sums;

    if (m->nroutes == 0 || m->nslots == 0)
        return;
    sums = veer_calloc(m->nslots, sizeof(*sums));
    for (uint32_t p = 0; p < m->npools; p++)
        for (uint32_t i = 0; i < m->pools[p].nb; i++)
            for (unsigned w = 0; w < nw; w++)
                for (const struct metrics_cell *c =
                         metrics_cells_first(&m->pools[p].b[i].be->ws[w].routed);
                     c; c = c->next)
                    route_add(sums, m->nslots, (uint32_t)c->key, &c->st);
    for (unsigned w = 0; ctl.workers && w < ctl.nworkers; w++)
        for (const struct metrics_cell *c = metrics_cells_first(&ctl.workers[w]->local_routed); c;
             c = c->next)
            route_add(sums, m->nslots, (uint32_t)(c->key >> 32), &c->st);
    for (uint32_t i = 0; i < m->nroutes; i++) {
        struct rt_route *rr = &m->routes[i];
        struct route_sum *s = &sums[rr->slot < m->nslots ? rr->slot : 0];
        uint64_t dreq, derr;

        if (rr->slot >= m->nslots)
            continue;
        if (!rr->rate.primed) {
            memset(&rr->rate, 0, sizeof(rr->rate));
            rr->rate.primed = true;
            memcpy(rr->rate.last, s->cur, sizeof(s->cur));
            rr->rate.last_total = s->total;
            rr->rate.last_errors = s->errors;
            continue;
        }
        rate_update(&rr->rate, s->total, s->errors, s->cur, &dreq, &derr);
        stats_ring_push(&rr->ring, &rr->rate);
    }
    free(sums);
}

void stats_tick(struct model *m, unsigned nworkers)
{
    m->seconds++;
    routes_tick(m, nworkers);
    for (uint32_t p = 0; p < m->npools; p++) {
        struct rt_pool *rp = &m->pools[p];

        for (uint32_t g = 0; g < rp->ng; g++)
            memset(&rp->g[g].rate, 0, sizeof(rp->g[g].rate));
        for (uint32_t i = 0; i < rp->nb; i++) {
            uint64_t dreq, derr;

            backend_tick(&rp->b[i], nworkers, &dreq, &derr);
            accumulate(&rp->g[rp->b[i].group].rate, &rp->b[i].rate, dreq, derr);
        }
        for (uint32_t g = 0; g < rp->ng; g++) {
            finish_rate(&rp->g[g].rate);
            stats_ring_push(&rp->g[g].ring, &rp->g[g].rate);
        }
    }
}
