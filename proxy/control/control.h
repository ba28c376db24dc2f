/*
 * control.h - the control plane, run by the control thread: executes admin
 * commands against the model, and is the one place every state change goes
 * through (admin command, later health transitions, reload, rollout step,
 * cluster event): edit a copy, validate, warm connections, publish the
 * snapshot, audit, persist, reply.
 *
 * Workers and the control thread talk through message queues with an
 * eventfd each; nothing here is on the request path.
 */
#ifndef VEER_CONTROL_H
#define VEER_CONTROL_H

#include "audit.h"
#include "cmd.h"
#include "model.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;

/*
 * One admin command in flight. The admin server fills line, peer and
 * t_read_us, parses cmd, and gets the reply (ending with an empty line)
 * through done(), possibly later (a shift waits for warm connections).
 */
struct ctl_req {
    char line[CMD_LINE_MAX + 1];
    struct cmd cmd;
    struct audit_peer peer;
    uint64_t t_read_us;
    void (*done)(struct ctl_req *r, const char *reply, bool ok);
    /* Optional: a line of progress before the reply (replace). */
    void (*progress)(struct ctl_req *r, const char *line);
    void *arg;

    /* control.c private */
    struct ctl_req *next;
    struct pool_edit *edit;
    struct pool_edit *before; /* cluster: the values replaced, until the fleet applied it */
    uint64_t ticket;
    unsigned warm_pending;
    uint64_t t_warm_us;
    bool warm_checked; /* some backend gains traffic: warm_us is reported */
    struct event *warm_timer;
    char line_ok[200]; /* an OK held back until a wait ends (drain --wait) */
    struct replace_job *job;
};

/* Set up the control plane on the control thread's base. */
int control_init(struct event_base *base, const struct veer_conf *conf, struct model *m,
                 struct worker **workers, unsigned nworkers);
void control_shutdown(void);

/* Run a parsed command; r->done is called exactly once (maybe at once). */
void control_execute(struct ctl_req *r);

/* A command that did not parse: answered with ERR and audited. */
void control_refuse(struct ctl_req *r, const char *why);

/* The request's answer is no longer wanted (its connection closed). */
void control_cancel(struct ctl_req *r);

/* SIGHUP: reload the configuration file (errors are logged, nothing changes). */
void control_reload_signal(void);

/*
 * How `upgrade` reaches the lifecycle (set by main): 0 started, -1 with msg.
 * peer and line are the operator's command (NULL for SIGUSR2).
 */
void control_set_upgrade(int (*fn)(const struct audit_peer *peer, const char *line, char *msg,
                                   size_t len));

/*
 * The upgrade handoff. The state file and the audit chain have one owner
 * at a time:
 *
 *  old process: control_freeze() before it starts the new binary: a change
 *  waiting for warm connections is published now, queued ones are answered
 *  `ERR upgrading, retry`, the upgrade command itself is audited, the state
 *  file is written and the audit log fsynced (waited for), and from then on
 *  nothing is written: changes are answered `ERR upgrading, retry` (without
 *  an audit record), and rollout steps and analysis, breaker transitions,
 *  health transitions, drain completion and reloads wait. Returns -1 (msg)
 *  when it cannot freeze (a replace under way, a fleet change in flight,
 *  the state could not be written, an upgrade already under way); nothing
 *  is frozen then.
 *  control_thaw(why): the new binary failed: the old one takes decisions
 *  again (audited "upgrade abandoned: why"); nothing acknowledged was lost,
 *  as nothing was acknowledged while frozen.
 *  control_handed_over(): the new process took over: frozen for good.
 *
 *  new process: control_await_handoff() right after control_init: frozen
 *  the same way from the start; control_thaw(NULL) once the old process
 *  said it is done (it never writes again).
 */
int control_freeze(const struct audit_peer *peer, const char *line, char *msg, size_t len);
void control_thaw(const char *why);
void control_handed_over(void);
void control_await_handoff(void);

/* Whether this process owns the state file and audit log (not frozen for an upgrade). */
bool control_owns_state(void);

/* The configuration in force (changes at a reload). */
const struct veer_conf *control_conf(void);

/*
 * The read-only commands that render the model (show pools, show pool, show
 * stats) live in the admin layer (admin/show.h); main binds them here.
 */
void control_set_show(void (*fn)(struct ctl_req *r));

/* For those commands, on the control thread: the model, the base, and the reply (r is freed). */
struct model *control_model(void);
struct event_base *control_base(void);
void control_answer(struct ctl_req *r, const char *text, bool ok);

/* Publish the model as a new snapshot; returns the generation. */
uint64_t control_publish(void);

/* Persist the model's runtime decisions (state file), off the reply path. */
void control_save_state(void);

#endif
