/*
 * control-i.h - what the control plane's files share: the control state and
 * the helpers every part of it uses. Control thread only; not for the
 * rest of veer (that is control.h). Declarations are grouped by the file
 * that defines them:
 *
 *   control.c     the change path: queue, edits, warm-up, commit, publish
 *   drain.c       draining with completion, waiting for a backend's state
 *   admission.c   readiness transitions, circuit breaker, slow start
 *   membership.c  add, delete, replace; retiring deleted backends
 *   reload.c      re-reading the configuration; freeing replaced ones
 *   verify.c      audit verify, on a thread of its own
 *   routectl.c    route maintenance, route set, rolling a route back
 *
 * Files of this folder with a header of their own declare their functions
 * there: rollout.c (rollout.h), cluster.c (cluster.h), health.c, state.c,
 * stats.c, upgrade.c, model.c.
 */
#ifndef VEER_CONTROL_I_H
#define VEER_CONTROL_I_H

#include "control.h"
#include "mailbox.h"
#include "model.h"
#include "sbuf.h"
#include "report.h"
#include "worker.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* The longest a change waits for warm connections before publishing anyway. */
#define WARM_DEADLINE_MS 100

/* Operator changes kept per pool for `rollback`. */
#define ROLLBACK_DEPTH 32

/* A pool's operator-controlled values, as a copy that can be edited and checked. */
struct pool_edit {
    int pool;
    uint32_t ng, nb;
    int *share;
    uint32_t *id; /* backend ids, to tell whether membership changed since */
    int *weight;
    enum admin_state *admin;
};

/* Someone waiting for a backend to become READY or DRAINED (drain --wait, replace). */
enum wait_for { WAIT_READY, WAIT_DRAINED };

struct waiter {
    struct backend *be;
    enum wait_for what;
    struct event *timer;
    uint64_t start_us;
    uint64_t deadline_us;                  /* ok false no sooner than this (veer_now_us) */
    void (*cb)(struct waiter *w, bool ok); /* ok false: timed out or backend deleted */
    void *arg;
    struct waiter *next;
};

struct history {
    struct pool_edit *e[ROLLBACK_DEPTH];
    unsigned n;
    uint64_t seq; /* when the last one was pushed (model->change_seq) */
};

/* The control plane's state (one per process). */
struct ctl_state {
    struct event_base *base;
    const struct veer_conf *conf;
    struct model *model;
    struct worker **workers;
    unsigned nworkers;

    struct mailbox reports; /* struct report from the workers, read by reports_cb */
    struct event *reports_ev;

    struct ctl_req *busy; /* the change in progress (waiting for warm-up) */
    struct ctl_req *queue_head, *queue_tail;
    uint64_t next_ticket;
    struct history *history; /* per pool */
    struct waiter *waiters;
    struct backend *retired; /* deleted backends not freed yet */
    struct event *tick;
    uint64_t last_store_us; /* when the last snapshot was stored */
    int (*upgrade)(const struct audit_peer *peer, const char *line, char *msg, size_t len);
    /*
     * Upgrade handoff (control_freeze): while frozen this process makes no
     * decision that would be persisted or audited, and writes nothing;
     * handed_over: for good, the new process owns the state.
     */
    bool frozen;
    bool handed_over;
    unsigned replacing;              /* replace jobs under way (an upgrade waits for them) */
    void (*show)(struct ctl_req *r); /* the show commands (control_set_show) */
};

extern struct ctl_state ctl;

/* control.c */

/* Answer r (reply without its final empty line) and free it. */
void ctl_finish(struct ctl_req *r, const char *text, bool ok);
/* Refuse r with "ERR ...": audited when it was a change; nothing touched. */
void ctl_refuse(struct ctl_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Audit r's change before it is made, naming the generation it will have
 * (model->generation + 1 when it publishes). 0 when written; -1 when the
 * log cannot take it: r is then answered "ERR audit log cannot be written
 * ..." and freed, and the caller must leave everything as it was (a change
 * that cannot be audited is not made).
 */
int ctl_audit_change(struct ctl_req *r, uint64_t gen, const char *before_json,
                     const char *after_json);
/* OK gen=N applied_us=T (time to the last store) plus extra. */
void ctl_reply_change(struct ctl_req *r, uint64_t gen, const char *extra);
/* The pool / backend the command names, or -1 after refusing r. */
int ctl_find_pool(struct ctl_req *r);
int ctl_find_backend(struct ctl_req *r, const struct rt_pool *p);

/* Copies of a pool's operator values (rollouts keep one to roll back to). */
struct pool_edit *ctl_edit_save(int pi);
void ctl_edit_restore(int pi, const struct pool_edit *e);
void ctl_edit_free(struct pool_edit *e);
void ctl_edit_render(const struct pool_edit *e, struct sbuf *o);
struct pool_edit *ctl_edit_parse(int pi, const char *text);
/* Would these shares (one per group) pass the checks a shift passes? 0 or -1 with err. */
int ctl_check_shares(int pi, const int *shares, char *err, size_t len);

/* The end of a change the cluster carried (r->edit applied by the fleet). */
void ctl_cluster_committed(struct ctl_req *r, uint64_t gen, uint64_t applied_us, const char *extra);
void ctl_cluster_refused(struct ctl_req *r, const char *why);
void ctl_next_change(void);

/* drain.c */

/* Tell every worker something about these backends. */
void ctl_send_backends(enum wmsg_type type, struct backend **list, unsigned n);
void ctl_wait_backend(struct backend *be, enum wait_for what, int64_t timeout_ms,
                      void (*cb)(struct waiter *, bool), void *arg);
void ctl_waiter_done(struct waiter *w, bool ok);
void ctl_wake_waiters(struct backend *be, enum wait_for what, bool ok);
void ctl_sync_draining(struct rt_pool *p);
/* Every pool's (a reload, the start), then one sweep that judges them all alike. */
void ctl_sync_draining_all(void);
/* The tick's look at every draining backend, against one read of the workers' generation. */
void ctl_sweep_drained_all(void);
void ctl_backend_idle(struct backend *be);
void ctl_drain_wait_cb(struct waiter *w, bool ok);

/* admission.c */
void ctl_on_health(struct backend *be, bool ok, uint64_t took_us, const char *why);
void ctl_breaker_event(struct backend *be, bool ok);
void ctl_slow_start_begin(struct rt_pool *p, uint32_t i);
void ctl_slow_start_tick(void);

/* membership.c */
void ctl_add_backend(struct ctl_req *r, int pi);
void ctl_del_backend(struct ctl_req *r, int pi);
void ctl_replace_start(struct ctl_req *r);
void ctl_retire_backend(struct backend *be);
/* Free deleted backends no worker can reach any more. */
void ctl_reclaim_backends(void);
void ctl_remove_backend(struct rt_pool *p, uint32_t i);
/* The same for every backend of p that gone() picks, in one pass; returns how many. */
uint32_t ctl_remove_backends(struct rt_pool *p, bool (*gone)(const struct rt_backend *b));

/* reload.c */
int ctl_reload(const struct audit_peer *peer, char *msg, size_t len);
void ctl_free_old_confs(void);
/* Free configurations a reload replaced once nothing can read them (see reload.c). */
void ctl_reclaim_confs(void);
/* Replaced configurations not freed yet (the one veer started with included). */
unsigned ctl_old_confs(void);

/* routectl.c */
void ctl_route_maintenance(struct ctl_req *r);
void ctl_route_set(struct ctl_req *r);
/* Roll route ri back to the pool it had before its last route set. */
void ctl_route_rollback(struct ctl_req *r, int ri);

/* mirrorctl.c */
void ctl_mirror(struct ctl_req *r);
/* Set pool p's mirror switch: on to group at percent, or off (the caller publishes). */
void ctl_mirror_set(struct rt_pool *p, bool on, const char *group, double percent);
/* p's mirror as audit records show it: {"pool":..,"mirror":true,"group":..,"percent":..}. */
void ctl_mirror_json(char *buf, size_t len, const struct rt_pool *p);

/* verify.c */
void ctl_audit_verify(struct ctl_req *r); /* answers later, from its own thread's result */
void ctl_audit_verify_shutdown(void);

#endif
