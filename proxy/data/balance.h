/*
 * balance.h - per-worker backend selection over one snapshot pool.
 *
 * swrr (default): smooth weighted round robin, exact proportions over every
 * full cycle (sum of effective weights picks) and smooth interleaving.
 * Small pools use nginx's algorithm (O(n) per pick, the reference order:
 * 5/1/1 gives a a b a c a a); large pools use an earliest-deadline-first
 * heap with the same guarantees at O(log n) per pick.
 *
 * leastconn: fewest requests in flight relative to effective weight, i.e.
 * the lowest (active + 1) / weight, ties broken round robin. O(n) per pick.
 *
 * p2c: two backends drawn at random in proportion to effective weight, the
 * one with the lower (active + 1) x latency EWMA taken. O(log n) per pick.
 *
 * In-flight counts and latencies are this worker's own (backend_wstat), so
 * picks touch no shared cache line. The state is owned by one worker; the
 * snapshot it reads is immutable.
 */
#ifndef VEER_BALANCE_H
#define VEER_BALANCE_H

#include "routing.h"

#include <stdint.h>

/* Pools up to this many eligible backends use nginx's O(n) algorithm. */
#define LB_SWRR_MAX 64

struct lb_edf {
    uint32_t idx;   /* backend index in the snap pool */
    uint64_t k;     /* picks of this backend in its current cycle */
    uint64_t cycle; /* cycle number */
};

struct lb {
    const struct snap_pool *sp;
    unsigned widx; /* worker whose figures leastconn and p2c read */
    int64_t total;
    int64_t *cw;         /* SWRR current weights, sp->n entries */
    struct lb_edf *heap; /* EDF heap, sp->n entries */
    uint64_t *cum;       /* p2c: cumulative effective weights */
    uint32_t cursor;     /* leastconn: where the tie-breaking scan starts */
    uint64_t rng;        /* p2c: xorshift state */
};

/* Prepare state for sp for worker widx. Any previous state in lb is freed first. */
void lb_init(struct lb *lb, const struct snap_pool *sp, unsigned widx);
void lb_free(struct lb *lb);

/* Index into sp->b of the next backend, or -1 when the pool is empty. */
int lb_pick(struct lb *lb);

#endif
