/*
 * prometheus.h - the Prometheus text rendering (exposition format 0.0.4) of
 * what veer counts (core/metrics.h), the model and the workers.
 */
#ifndef VEER_PROMETHEUS_H
#define VEER_PROMETHEUS_H

#include "metrics.h"

#include <stdbool.h>
#include <stdint.h>

struct sbuf;
struct model;
struct worker;

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
