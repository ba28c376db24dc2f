/*
 * metrics.h - recording counters and histograms (rendering them:
 * admin/prometheus.h).
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

/* Shift applied_us is microseconds-scale: its own finer buckets. */
#define SHIFT_BUCKETS 8
extern const double shift_bounds[SHIFT_BUCKETS];

/* Control-thread figures: one writer, no atomics needed, the scrape being on that thread. */
struct control_figures {
    uint64_t shift_bucket[SHIFT_BUCKETS + 1];
    uint64_t shift_count, shift_sum_us;
    uint64_t refused;
    struct {
        uint64_t bucket[LAT_BUCKETS + 1], count, sum_us;
    } health[METRIC_POOLS];
};
extern struct control_figures metrics_ctl;

/* Record control-thread figures. */
void metrics_shift_applied(uint64_t us);
void metrics_health_check(int pool, uint64_t us);
void metrics_shift_refused(void);

#endif
