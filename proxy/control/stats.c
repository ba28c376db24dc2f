/*
 * stats.c - per-second traffic figures. See stats.h.
 */
#include "stats.h"
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

static void backend_tick(struct rt_backend *b, unsigned nw, uint64_t *dreq, uint64_t *derr)
{
    struct rate *r = &b->rate;
    uint64_t total = 0, errors = 0, cur[LAT_BUCKETS + 1] = {0};

    for (unsigned w = 0; w < nw; w++) {
        struct backend_wstat *ws = &b->be->ws[w];

        for (unsigned c = 0; c < 5; c++)
            total += atomic_load_explicit(&ws->requests[c], memory_order_relaxed);
        errors += backend_wstat_failures(ws);
        for (unsigned i = 0; i <= LAT_BUCKETS; i++)
            cur[i] += atomic_load_explicit(&ws->latency.bucket[i], memory_order_relaxed);
    }
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

void stats_tick(struct model *m, unsigned nworkers)
{
    for (uint32_t p = 0; p < m->npools; p++) {
        struct rt_pool *rp = &m->pools[p];

        for (uint32_t g = 0; g < rp->ng; g++)
            memset(&rp->g[g].rate, 0, sizeof(rp->g[g].rate));
        for (uint32_t i = 0; i < rp->nb; i++) {
            uint64_t dreq, derr;

            backend_tick(&rp->b[i], nworkers, &dreq, &derr);
            accumulate(&rp->g[rp->b[i].group].rate, &rp->b[i].rate, dreq, derr);
        }
        for (uint32_t g = 0; g < rp->ng; g++)
            finish_rate(&rp->g[g].rate);
    }
}
