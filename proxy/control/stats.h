/*
 * stats.h - traffic figures over the last second per backend, group and
 * pool (requests per second, error rate, p99), computed by the control
 * thread from the workers' counters. They feed the status view, `veerctl
 * top` and the admin HTTP page.
 */
#ifndef VEER_STATS_H
#define VEER_STATS_H

#include "model.h"

struct worker;

/* Take this second's figures (call once a second); m->seconds counts the calls. */
void stats_tick(struct model *m, unsigned nworkers);

/*
 * The last STATS_HISTORY seconds of a group and of a route (rps, error rate,
 * p99), kept by stats_tick so that the status page, opened mid-deploy, draws
 * five minutes at once. One point is 8 bytes (rps up to 2^32-1, the error
 * rate in 1/10,000, p99 as its latency bucket: /status writes them with that
 * precision), a ring 2,404 bytes, allocated at its first point and never
 * grown: 1,000 groups hold 2.4 MB. Every ring gets a point at every tick, so
 * the newest point of each is second m->seconds.
 */
#define STATS_HISTORY 300

struct stats_point {
    uint32_t rps;
    uint16_t error_bp; /* error rate in basis points: 0..10000 */
    uint8_t p99;       /* 0: none, k+1: lat_bounds[k], LAT_BUCKETS+1: beyond the last bound */
};

struct stats_ring {
    uint16_t head; /* where the next point goes */
    uint16_t len;  /* points held, at most STATS_HISTORY */
    struct stats_point p[STATS_HISTORY];
};

/* Append this second's figures r to *ring (allocated at the first point). */
void stats_ring_push(struct stats_ring **ring, const struct rate *r);
/* The points a ring holds (0 for NULL). */
unsigned stats_ring_len(const struct stats_ring *ring);
/* Point k of ring, oldest first (k < stats_ring_len), as /status writes figures. */
void stats_ring_get(const struct stats_ring *ring, unsigned k, double *rps, double *error_rate,
                    double *p99_ms);

/* p99 in ms from latency bucket counts (the bucket's upper bound), 0 with no data. */
double stats_p99_ms(const uint64_t *buckets);

#endif
