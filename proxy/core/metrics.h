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
    _Atomic uint64_t count; /* first: with a cell's counters before it, one cache line */
    _Atomic uint64_t sum_us;
    _Atomic uint64_t bucket[LAT_BUCKETS + 1]; /* last: +Inf */
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

/*
 * A worker's figures for one series of requests (a backend's requests on no
 * route, its requests on one route, veer's own answers in a pool...): one
 * writer, counted once per request in exactly one of them.
 */
struct req_wstat {
    _Atomic uint64_t requests[5]; /* by status class 1xx..5xx */
    struct hist latency;
};

/*
 * One series of a cell table, created by its writer the first time it
 * counts under key and kept until the table is freed.
 */
struct metrics_cell {
    uint64_t key;
    struct metrics_cell *next; /* the cell published before it: set before, never changed */
    struct req_wstat st;
};

/*
 * A cell table: the series of one writer found by key (a route's metric
 * slot, ...) in O(1), made when first needed. The writer looks cells up
 * through `tab`, which only it touches; any thread may walk the cells from
 * `head` (metrics_cells_first): a cell is added at the head with a release
 * store once initialised, and none is removed before metrics_cells_free,
 * which runs once no thread can reach the table. A zeroed table is empty.
 */
struct metrics_cells {
    _Atomic(struct metrics_cell *) head; /* newest first */
    struct metrics_cell **tab;           /* writer only: open addressing, at most half full */
    uint32_t cap, n;
};

/* The writer's cell for key, made (zeroed) and published when it has none yet. */
struct metrics_cell *metrics_cell_get(struct metrics_cells *c, uint64_t key);

/* The newest cell of c (acquire: a cell is read whole), then follow ->next. Any thread. */
static inline struct metrics_cell *metrics_cells_first(const struct metrics_cells *c)
{
    return atomic_load_explicit((_Atomic(struct metrics_cell *) *)&c->head, memory_order_acquire);
}

/* Free every cell of c; c is empty again. Only once no thread can reach it. */
void metrics_cells_free(struct metrics_cells *c);

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
