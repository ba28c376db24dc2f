/*
 * metrics.h - counters and histograms, and their Prometheus text rendering
 * (exposition format 0.0.4).
 *
 * Request figures are counted per worker (each worker writes only its own
 * slots, so hot counters never bounce cache lines) and summed when scraped;
 * control-plane figures (shift times, health check times) are kept by the
 * control thread.
 */
#ifndef VEER_METRICS_H
#define VEER_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct sbuf;
struct model;
struct worker;

/* Request duration buckets (seconds): a proxy's own latency is sub-millisecond. */
#define LAT_BUCKETS 14
extern const double lat_bounds[LAT_BUCKETS];

/* A histogram with one writer; readers sum several with relaxed loads. */
struct hist {
    _Atomic uint64_t bucket[LAT_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
};

/* Pools whose locally answered requests are counted (by pool index). */
#define METRIC_POOLS 256

/* Single writer: plain load and store, no read-modify-write. */
static inline void counter_add(_Atomic uint64_t *c, uint64_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

void hist_observe(struct hist *h, uint64_t us);

/* A worker's figures for the requests it answered itself, per pool. */
struct pool_wstat {
    _Atomic uint64_t requests[5];
    struct hist latency;
};

/* Control-thread figures. */
void metrics_shift_applied(uint64_t us);
void metrics_health_check(int pool, uint64_t us);
void metrics_shift_refused(void);

/* Render every metric (control thread). */
void metrics_render(struct sbuf *out, const struct model *m, struct worker **workers,
                    unsigned nworkers);

/* Where a render that was cut into slices stands; zero it to start. */
struct metrics_cursor {
    unsigned fam;
    uint32_t p, i;
    bool begun, headed;
    unsigned restarts;
    uint64_t fp;
};

/*
 * Render on from c into out for about budget_us (0: to the end), so a big model never holds
 * the control thread for long: returns true when out is complete, false to be called again
 * (with the same c and out) later. The model may change between calls: values are read when
 * their row is rendered, and when backends come or go the render starts over (out is
 * emptied), so no series is missed or doubled; after a few restarts it finishes in one go.
 */
bool metrics_render_step(struct metrics_cursor *c, struct sbuf *out, const struct model *m,
                         struct worker **workers, unsigned nworkers, uint64_t budget_us);

#endif
