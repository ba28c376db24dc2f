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

/* Take this second's figures (call once a second). */
void stats_tick(struct model *m, unsigned nworkers);

/* p99 in ms from latency bucket counts (the bucket's upper bound), 0 with no data. */
double stats_p99_ms(const uint64_t *buckets);

#endif
