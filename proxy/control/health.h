/*
 * health.h - active readiness checks, run by the control thread: an
 * HTTP/1.1 GET of the pool's `health.path` to every backend every
 * `interval_ms` (with jitter, so checks do not fire in lockstep), a 2xx
 * within `timeout_ms` passes, anything else fails. Results go to the
 * control plane, which counts `rise`/`fall` and makes the transitions.
 */
#ifndef VEER_HEALTH_H
#define VEER_HEALTH_H

#include "conf.h"
#include "model.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

/* Called with every check's outcome: be, pass or fail, time taken, and why it failed. */
typedef void (*health_cb)(struct backend *be, bool ok, uint64_t took_us, const char *why);

void health_init(struct event_base *base, health_cb cb);

/* Start checking be with the pool's settings; the first check comes soon, jittered. */
void health_watch(struct backend *be, const struct conf_pool *cp);

/*
 * Point be's checks at pool cp of a newer configuration with the same
 * checks (a reload): the one they used may be freed. A check in progress
 * goes on.
 */
void health_rebind(struct backend *be, const struct conf_pool *cp);

/* Stop checking be (deleted, or the pool lost its health block). */
void health_unwatch(struct backend *be);

/* Stop every check. */
void health_shutdown(void);

#endif
