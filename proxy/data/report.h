/*
 * report.h - the only way a worker tells the control thread something: a
 * warm-up finished, a draining backend has nothing left on this worker, a
 * breaker event. Reports go to the sink bound at start (report_bind: the
 * control thread's mailbox), so the data path compiles against no part of
 * the control plane, and a test can bind its own sink.
 *
 * A report naming a backend holds a reference on it (backend_hold), dropped
 * by the receiver (backend_put): a deleted backend is not freed while one is
 * queued.
 */
#ifndef VEER_REPORT_H
#define VEER_REPORT_H

#include "mailbox.h"
#include "routing.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum report_type {
    REPORT_WARM_DONE = 0, /* a worker finished warming for a ticket */
    REPORT_BACKEND_IDLE,  /* a draining backend has nothing left on a worker */
    REPORT_BREAKER,       /* breaker report: ticket 1 = success, 0 = failure */
};

struct report {
    struct mailbox_node node; /* in the sink's mailbox */
    enum report_type type;
    unsigned worker;
    uint64_t ticket;
    struct backend *be; /* with a reference (backend_hold), or NULL */
};

/* Where reports go (any thread; the sink takes ownership of m). Bound before workers start. */
typedef void (*report_sink_fn)(struct report *m, void *arg);
void report_bind(report_sink_fn sink, void *arg);

/* A worker's breaker report: a run of failures reached the threshold, or a half-open trial. */
void report_breaker(unsigned worker, struct backend *be, bool ok);

/*
 * A worker drops one of its counts of be (`count`: its slot of `active` or
 * `conns`); when be is draining and that was the worker's last, the control
 * thread is told (REPORT_BACKEND_IDLE). Nothing of be may be read after it.
 */
void report_backend_drop(unsigned worker, struct backend *be, _Atomic uint32_t *count);

/* A worker finished the warm-up of change `ticket`. */
void report_warm_done(unsigned worker, uint64_t ticket);

#endif
