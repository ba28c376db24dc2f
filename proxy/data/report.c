/*
 * report.c - a worker's reports to the control thread. See report.h.
 */
#include "report.h"
#include "veer.h"

#include <stdlib.h>

static report_sink_fn sink;
static void *sink_arg;

void report_bind(report_sink_fn fn, void *arg)
{
    sink = fn;
    sink_arg = arg;
}

static void post(struct report *m)
{
    if (sink == NULL) {
        /* Nothing listens (a worker run without a control plane): drop it. */
        if (m->be)
            backend_put(m->be);
        free(m);
        return;
    }
    sink(m, sink_arg);
}

/* The message holds a reference on be (backend_hold): the caller still counts a request on it. */
void report_breaker(unsigned worker, struct backend *be, bool ok)
{
    struct report *m = veer_calloc(1, sizeof(*m));

    backend_hold(be);
    m->type = REPORT_BREAKER;
    m->worker = worker;
    m->be = be;
    m->ticket = ok;
    post(m);
}

/*
 * A worker drops one of its counts of be: `count` is its own slot of
 * `active` (a request ended) or `conns` (a connection closed). When be is
 * draining and that was the worker's last one, the control thread is told
 * (REPORT_BACKEND_IDLE), and the message holds a reference (backend_hold).
 *
 * The count may be all that keeps a deleted backend alive, so the
 * reference is taken before it drops whenever be is draining already. When
 * be only turns out to be draining after the drop, it was deleted while we
 * were here: this worker has not yet moved to the snapshot that leaves it
 * out (that snapshot is published after `draining` is stored, and the
 * worker does not switch snapshots in here), so be cannot be freed before
 * the late reference is taken either.
 */
void report_backend_drop(unsigned worker, struct backend *be, _Atomic uint32_t *count)
{
    bool held = atomic_load_explicit(&be->draining, memory_order_relaxed);
    struct report *m;

    if (held)
        backend_hold(be);
    backend_wstat_add(count, -1);
    /* Pairs with the control thread's store of `draining`: one of us sees the other. */
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&be->draining, memory_order_relaxed) ||
        atomic_load_explicit(count, memory_order_relaxed) != 0) {
        if (held)
            backend_put(be);
        return;
    }
    if (!held)
        backend_hold(be);
    m = veer_calloc(1, sizeof(*m));
    m->type = REPORT_BACKEND_IDLE;
    m->worker = worker;
    m->be = be;
    post(m);
}

void report_warm_done(unsigned worker, uint64_t ticket)
{
    struct report *m = veer_calloc(1, sizeof(*m));

    m->type = REPORT_WARM_DONE;
    m->worker = worker;
    m->ticket = ticket;
    post(m);
}
