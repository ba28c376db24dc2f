/*
 * preflight.h - a rollout's pre-flight checks (issue 19): the requests of a
 * `preflight` list sent to every READY backend of the canary group before
 * any traffic moves. Each backend gets the requests in order, one
 * connection each (Connection: close), the backends in parallel; a request
 * passes when its status is expect_status and, when set, its body holds
 * expect_body_contains. The first failure ends the whole run. Control
 * thread only; nothing blocks.
 */
#ifndef VEER_PREFLIGHT_H
#define VEER_PREFLIGHT_H

#include "conf.h"
#include "routing.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

struct preflight;

struct preflight_result {
    bool ok;
    unsigned backends; /* checked */
    unsigned requests; /* answered as expected */
    uint64_t took_us;
    /* On failure: which backend, which request, what came back (or why nothing did). */
    char backend[96];
    char request[300];
    char answer[300];
};

/* Called once, when the run ends (never for a cancelled run). */
typedef void (*preflight_done_fn)(void *arg, const struct preflight_result *res);

/*
 * Start the run of pf against the n backends of pool cp (held until the run
 * ends). With n == 0 the run fails at once, from the event loop. Returns
 * the run, which frees itself after done.
 */
struct preflight *preflight_start(struct event_base *base, const struct conf_preflight *pf,
                                  const struct conf_pool *cp, struct backend *const *bes,
                                  unsigned n, preflight_done_fn done, void *arg);

/* Stop a run under way: connections closed, done not called. */
void preflight_cancel(struct preflight *run);

#endif
