/*
 * drain.c - draining with completion: a draining backend is DRAINED the moment its last
 * request ends (workers report it), and whoever waits for a backend to be READY
 * or DRAINED (drain --wait, replace) is answered then or at its timeout.
 */
#include "control-i.h"
#include "audit.h"
#include "health.h"
#include "sbuf.h"
#include "state.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

/* --- waiting for a backend ---------------------------------------------------------- */

void ctl_waiter_done(struct waiter *w, bool ok)
{
    for (struct waiter **pp = &ctl.waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    event_free(w->timer);
    w->cb(w, ok);
    free(w);
}

/* Arm w's timer for what is left of its wait. */
static void waiter_arm(struct waiter *w, uint64_t left_us)
{
    struct timeval tv = {(time_t)(left_us / 1000000), (suseconds_t)(left_us % 1000000)};

    /* Time the wait from now, not from the loop iteration's cached clock. */
    event_base_update_cache_time(ctl.base);
    evtimer_add(w->timer, &tv);
}

/*
 * Never early: libevent times its timers by CLOCK_MONOTONIC_COARSE, up to
 * a kernel tick behind veer_now_us, so the timer may fire a few ms before
 * the deadline; the rest is waited again.
 */
static void waiter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    uint64_t now = veer_now_us();

    (void)fd;
    (void)what;
    if (now < w->deadline_us) {
        waiter_arm(w, w->deadline_us - now);
        return;
    }
    ctl_waiter_done(w, false);
}

/* Call cb when be becomes READY / DRAINED, or with ok false after timeout_ms. */
void ctl_wait_backend(struct backend *be, enum wait_for what, int64_t timeout_ms,
                      void (*cb)(struct waiter *, bool), void *arg)
{
    struct waiter *w = veer_calloc(1, sizeof(*w));
    uint64_t wait_us = timeout_ms > 0 ? (uint64_t)timeout_ms * 1000 : 0;

    w->be = be;
    w->what = what;
    w->cb = cb;
    w->arg = arg;
    w->start_us = veer_now_us();
    w->deadline_us = w->start_us + wait_us;
    w->timer = evtimer_new(ctl.base, waiter_timeout_cb, w);
    waiter_arm(w, wait_us);
    w->next = ctl.waiters;
    ctl.waiters = w;
}

/*
 * be reached a state: wake who waits for it (or everyone waiting on it,
 * when deleted). They are all taken off the list before the first is
 * answered: an answer may change the list (a replace deletes the DRAINED
 * backend at once, which would tell the others it was deleted, and free
 * them under this loop).
 */
void ctl_wake_waiters(struct backend *be, enum wait_for what, bool ok)
{
    struct waiter *woken = NULL, **tail = &woken, **pp = &ctl.waiters;

    while (*pp) {
        struct waiter *w = *pp;

        if (w->be != be || (w->what != what && ok)) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        w->next = NULL;
        *tail = w;
        tail = &w->next;
    }
    while (woken) {
        struct waiter *w = woken;

        woken = w->next;
        ctl_waiter_done(w, ok); /* no longer listed: only its timer and answer are left */
    }
}

/* --- draining ------------------------------------------------------------------------ */

/* Tell every worker to do something about these backends. */
void ctl_send_backends(enum wmsg_type type, struct backend **list, unsigned n)
{
    for (unsigned w = 0; w < ctl.nworkers && n; w++) {
        struct wmsg *m = veer_calloc(1, sizeof(*m));

        m->type = type;
        m->n = n;
        m->be = veer_malloc(n * sizeof(*m->be));
        memcpy(m->be, list, n * sizeof(*list));
        for (unsigned k = 0; k < n; k++)
            backend_hold(list[k]); /* dropped by wmsg_free once the worker is done */
        worker_send(ctl.workers[w], m);
    }
}

static bool reap_scheduled;

static bool gone_from_config(const struct rt_backend *b)
{
    return b->remove_when_drained && b->drained;
}

/*
 * Backends a reload dropped that are now DRAINED go away together, once the
 * loop that found them is done: one pass over each pool, one publish and one
 * state write, however many there are (one at a time, dropping half of a
 * pool of 10,000 held the control thread for seconds).
 */
/*
 * The audit record of backends whose address left DNS and that go now, one
 * per pool (actor discovery, as the drain that began it): {"pool","removed":[...]}.
 * NULL when there are none.
 */
static char *gone_record(const struct rt_pool *p)
{
    struct sbuf o;
    bool first = true;

    sb_init(&o);
    for (uint32_t k = 0; k < p->nb; k++) {
        if (!p->b[k].gone || !gone_from_config(&p->b[k]))
            continue;
        if (first) {
            sb_puts(&o, "{\"pool\":");
            sb_json_str(&o, p->name);
            sb_puts(&o, ",\"removed\":[");
        }
        sb_puts(&o, first ? "" : ",");
        sb_json_str(&o, p->b[k].be->name);
        first = false;
    }
    if (first) {
        sb_free(&o);
        return NULL;
    }
    sb_puts(&o, "]}");
    return sb_steal(&o);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    uint32_t n = 0;
    char **records = veer_calloc(ctl.model->npools ? ctl.model->npools : 1, sizeof(*records));
    uint64_t gen;

    (void)fd;
    (void)what;
    (void)arg;
    reap_scheduled = false;
    for (uint32_t i = 0; i < ctl.model->npools; i++) {
        records[i] = gone_record(&ctl.model->pools[i]);
        n += ctl_remove_backends(&ctl.model->pools[i], gone_from_config);
    }
    if (n > 0) {
        gen = control_publish();
        for (uint32_t i = 0; i < ctl.model->npools; i++) {
            char line[CMD_NAME_MAX + 16];

            if (records[i] == NULL)
                continue;
            snprintf(line, sizeof(line), "discover %s", ctl.model->pools[i].name);
            audit_write("discovery", NULL, line, "OK", gen, NULL, records[i]);
            persist_sync_audit();
        }
        control_save_state();
    }
    for (uint32_t i = 0; i < ctl.model->npools; i++)
        free(records[i]);
    free(records);
}

static void schedule_reap(void)
{
    static const struct timeval now = {0, 0};

    if (reap_scheduled)
        return;
    reap_scheduled =
        ctl.base != NULL && event_base_once(ctl.base, -1, EV_TIMEOUT, reap_cb, NULL, &now) == 0;
    if (!reap_scheduled)
        reap_cb(-1, 0, NULL);
}

/*
 * A draining backend with no request in flight and no connection left is
 * DRAINED: said once, the moment it happens (workers report the last
 * request ending), and whoever waits for it is answered. `seen` is the
 * oldest generation a worker may still read: a sweep reads it once, so the
 * backends a reload dropped together are judged together and go in one
 * publish (read per backend, a worker catching up mid-sweep split them).
 */
static void check_drained(struct rt_pool *p, uint32_t i, uint64_t seen)
{
    struct rt_backend *b = &p->b[i];
    uint32_t active, conns;

    if (!rt_draining(b) || b->drained || ctl.frozen)
        return; /* frozen for an upgrade: the tick looks again after a thaw */
    if (seen < b->drain_gen)
        return; /* a worker may still pick it from an older snapshot */
    active = backend_active(b->be);
    conns = backend_conns(b->be);
    if (active || conns)
        return;
    b->drained = true;
    log_info("backend %s/%s DRAINED: %u requests finished in %.1f ms", p->name, b->be->name,
             b->drain_inflight, (double)(veer_now_us() - b->drain_start_us) / 1000.0);
    ctl_wake_waiters(b->be, WAIT_DRAINED, true);
    if (b->remove_when_drained) {
        /* Gone from the config at a reload, or from DNS: it goes away now that it is idle. */
        log_info("backend %s/%s removed (%s)", p->name, b->be->name,
                 b->gone ? "its address left DNS" : "no longer in the configuration");
        schedule_reap();
    }
}

static void sweep(struct rt_pool *p, uint64_t seen)
{
    for (uint32_t i = 0; i < p->nb; i++)
        check_drained(p, i, seen);
}

void ctl_sweep_drained_all(void)
{
    uint64_t seen = routing_min_seen(); /* once for every pool: see check_drained */

    for (uint32_t i = 0; i < ctl.model->npools; i++)
        sweep(&ctl.model->pools[i], seen);
}

void ctl_backend_idle(struct backend *be)
{
    if (be->pool >= 0)
        check_drained(&ctl.model->pools[be->pool], be->index, routing_min_seen());
}

/*
 * Make the workers' view of draining follow the admin states: a backend
 * entering DRAIN stops having its connections pooled, its idle ones close
 * at once, and the count of requests still in flight is taken.
 */
static void start_drains(struct rt_pool *p)
{
    struct backend **closing = NULL;
    unsigned n = 0;

    for (uint32_t i = 0; i < p->nb; i++) {
        struct rt_backend *b = &p->b[i];
        bool want = rt_draining(b);

        if (want == atomic_load(&b->be->draining))
            continue;
        atomic_store(&b->be->draining, want); /* seq_cst: pairs with the workers' fence */
        if (!want)
            continue;
        b->drained = false;
        b->drain_gen = ctl.model->generation;
        b->drain_start_us = veer_now_us();
        b->drain_inflight = backend_active(b->be);
        if (closing == NULL) /* one table for all of them: a reload may drain thousands */
            closing = veer_malloc(p->nb * sizeof(*closing));
        closing[n++] = b->be;
    }
    ctl_send_backends(WMSG_CLOSE_IDLE, closing, n);
    free(closing);
}

void ctl_sync_draining(struct rt_pool *p)
{
    start_drains(p);
    sweep(p, routing_min_seen());
}

void ctl_sync_draining_all(void)
{
    for (uint32_t i = 0; i < ctl.model->npools; i++)
        start_drains(&ctl.model->pools[i]);
    ctl_sweep_drained_all();
}

void ctl_drain_wait_cb(struct waiter *w, bool ok)
{
    struct ctl_req *r = w->arg;
    char line[300];

    if (ok)
        snprintf(line, sizeof(line), "%s drained_ms=%.1f", r->line_ok,
                 (double)(veer_now_us() - w->start_us) / 1000.0);
    else
        snprintf(line, sizeof(line), "ERR timeout active=%u", backend_active(w->be));
    ctl_finish(r, line, ok);
}
