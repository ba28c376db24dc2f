/*
 * balance.h - per-worker backend selection over one snapshot pool.
 *
 * Smooth weighted round robin: exact proportions over every full cycle
 * (sum of effective weights picks) and smooth interleaving. Small pools use
 * nginx's algorithm (O(n) per pick, the reference order: 5/1/1 gives
 * a a b a c a a); large pools use an earliest-deadline-first heap with the
 * same guarantees at O(log n) per pick. The state is mutable and owned by
 * one worker; the snapshot it reads is immutable.
 */
#ifndef VEER_BALANCE_H
#define VEER_BALANCE_H

#include "pool.h"

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
    int64_t total;
    int64_t *cw;         /* SWRR current weights, sp->n entries */
    struct lb_edf *heap; /* EDF heap, sp->n entries */
};

/* Prepare state for sp. Any previous state in lb is freed first. */
void lb_init(struct lb *lb, const struct snap_pool *sp);
void lb_free(struct lb *lb);

/* Index into sp->b of the next backend, or -1 when the pool is empty. */
int lb_pick(struct lb *lb);

#endif
