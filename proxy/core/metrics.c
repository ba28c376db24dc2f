/*
 * metrics.c - recording what veer counts: histograms, and the control
 * thread's own figures. Rendering them is admin/prometheus.c's job.
 */
#include "metrics.h"
#include "veer.h"

const double lat_bounds[LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};

const double shift_bounds[SHIFT_BUCKETS] = {0.00001, 0.00005, 0.0001, 0.0005,
                                            0.001,   0.005,   0.01,   0.05};

void hist_observe(struct hist *h, uint64_t us)
{
    double s = (double)us / 1e6;
    unsigned i = 0;

    while (i < LAT_BUCKETS && s > lat_bounds[i])
        i++;
    counter_add(&h->bucket[i], 1);
    counter_add(&h->count, 1);
    counter_add(&h->sum_us, us);
}

struct control_figures metrics_ctl;

void metrics_shift_applied(uint64_t us)
{
    double s = (double)us / 1e6;
    unsigned i = 0;

    while (i < SHIFT_BUCKETS && s > shift_bounds[i])
        i++;
    metrics_ctl.shift_bucket[i]++;
    metrics_ctl.shift_count++;
    metrics_ctl.shift_sum_us += us;
}

void metrics_shift_refused(void)
{
    metrics_ctl.refused++;
}

void metrics_health_check(int pool, uint64_t us)
{
    double s = (double)us / 1e6;
    unsigned i = 0;

    if (pool < 0 || pool >= METRIC_POOLS)
        return;
    while (i < LAT_BUCKETS && s > lat_bounds[i])
        i++;
    metrics_ctl.health[pool].bucket[i]++;
    metrics_ctl.health[pool].count++;
    metrics_ctl.health[pool].sum_us += us;
}
