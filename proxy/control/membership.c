/*
 * membership.c - pool membership at runtime: add backend (PENDING until ready), del
 * backend (only DRAINED or MAINT; the object lives on until no worker can
 * reach it), and replace, one command for a rolling step.
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

/* --- membership ---------------------------------------------------------------------- */

void ctl_retire_backend(struct backend *be)
{
    be->retired_gen = ctl.model->generation;
    be->retired_next = ctl.retired;
    ctl.retired = be;
}

/*
 * Free deleted backends no worker can reach any more (see backend_hold in
 * routing.h). retired_gen is the last generation whose snapshot routes to the
 * backend, so a worker that announced exactly that generation may still
 * pick it: only a strictly newer announcement counts. The announcements
 * are read first (acquire), so a count a worker took before moving on is
 * seen; then the counts, then, after an acquire fence, the references.
 */
void ctl_reclaim_backends(void)
{
    uint64_t seen = routing_min_seen();

    for (struct backend **pp = &ctl.retired; *pp;) {
        struct backend *be = *pp;
        bool idle = be->retired_gen < seen && backend_active(be) == 0 && backend_conns(be) == 0;

        atomic_thread_fence(memory_order_acquire);
        if (idle && atomic_load_explicit(&be->refs, memory_order_relaxed) == 0) {
            *pp = be->retired_next;
            backend_destroy(be);
        } else {
            pp = &be->retired_next;
        }
    }
}

/*
 * Take backend i out of its pool (the caller publishes): no more checks or
 * breaker timers, its idle connections close, waiters are told, and the
 * object is retired until no worker can reach it.
 */
void ctl_remove_backend(struct rt_pool *p, uint32_t i)
{
    struct backend *be = p->b[i].be;

    health_unwatch(be);
    if (p->b[i].cooldown)
        event_free(p->b[i].cooldown);
    model_del_backend(ctl.model, be->pool, i);
    atomic_store(&be->draining, true);
    ctl_send_backends(WMSG_CLOSE_IDLE, &be, 1);
    ctl_wake_waiters(be, WAIT_READY, false);
    ctl_wake_waiters(be, WAIT_DRAINED, false);
    ctl_retire_backend(be);
}

uint32_t ctl_remove_backends(struct rt_pool *p, bool (*gone)(const struct rt_backend *b))
{
    struct backend **list;
    uint32_t n;

    for (uint32_t i = 0; i < p->nb; i++) {
        if (!gone(&p->b[i]))
            continue;
        health_unwatch(p->b[i].be);
        if (p->b[i].cooldown)
            event_free(p->b[i].cooldown);
        p->b[i].cooldown = NULL;
    }
    list = veer_malloc((p->nb ? p->nb : 1) * sizeof(*list));
    n = model_del_backends(ctl.model, (int)(p - ctl.model->pools), gone, list);
    for (uint32_t i = 0; i < n; i++)
        atomic_store(&list[i]->draining, true);
    ctl_send_backends(WMSG_CLOSE_IDLE, list, n);
    for (uint32_t i = 0; i < n; i++) {
        ctl_wake_waiters(list[i], WAIT_READY, false);
        ctl_wake_waiters(list[i], WAIT_DRAINED, false);
        ctl_retire_backend(list[i]);
    }
    free(list);
    return n;
}

/* add backend P NAME ADDR [weight W] [group G]: PENDING until its checks pass. */
void ctl_add_backend(struct ctl_req *r, int pi)
{
    struct rt_pool *p = &ctl.model->pools[pi];
    const struct cmd *c = &r->cmd;
    struct conf_addr addr;
    char err[200], after[400];
    uint32_t i;
    uint64_t gen;

    if (model_find_backend(p, c->backend) >= 0) {
        ctl_refuse(r, "backend %s already exists in pool %s", c->backend, p->name);
        return;
    }
    if (conf_parse_addr(c->addr, false, &addr, err, sizeof(err)) < 0) {
        ctl_refuse(r, "bad address %s: %s", c->addr, err);
        return;
    }
    /* Audited before it is made: what the new backend will be (PENDING with checks). */
    snprintf(after, sizeof(after),
             "{\"pool\":\"%s\",\"backend\":\"%s\",\"address\":\"%s\",\"weight\":%d,"
             "\"group\":\"%s\",\"state\":\"%s\"}",
             p->name, c->backend, addr.text, c->weight < 0 ? 100 : c->weight,
             c->group[0] ? c->group : "default",
             backend_state_name(p->conf->has_health ? BE_PENDING : BE_READY));
    if (ctl_audit_change(r, ctl.model->generation + 1, NULL, after) < 0)
        return;
    i = model_add_backend(ctl.model, pi, c->backend, &addr, c->weight < 0 ? 100 : c->weight,
                          c->group[0] ? c->group : "default");
    p->members_seq = ++ctl.model->change_seq;
    if (p->conf->has_health)
        health_watch(p->b[i].be, p->conf);
    gen = control_publish();
    control_save_state();
    log_info("backend %s/%s %s added (%s)", p->name, c->backend, addr.text,
             backend_state_name(model_state(p, i)));
    snprintf(err, sizeof(err), " state=%s", backend_state_name(model_state(p, i)));
    ctl_reply_change(r, gen, err);
}

/* del backend P NAME: only once DRAINED or in MAINT; the object lives on until unreachable. */
void ctl_del_backend(struct ctl_req *r, int pi)
{
    struct rt_pool *p = &ctl.model->pools[pi];
    struct backend *be;
    enum backend_state st;
    char before[300];
    int bi = ctl_find_backend(r, p);
    uint64_t gen;

    if (bi < 0)
        return;
    st = model_state(p, (uint32_t)bi);
    (void)be;
    if (st != BE_DRAINED && st != BE_MAINT && !r->cmd.force) {
        ctl_refuse(r, "backend %s is %s: drain it (or set state maint) first", r->cmd.backend,
                   backend_state_name(st));
        return;
    }
    snprintf(before, sizeof(before),
             "{\"pool\":\"%s\",\"backend\":\"%s\",\"address\":\"%s\",\"weight\":%d,"
             "\"state\":\"%s\"}",
             p->name, r->cmd.backend, p->b[bi].be->addr.text, p->b[bi].weight,
             backend_state_name(st));
    if (ctl_audit_change(r, ctl.model->generation + 1, before, NULL) < 0)
        return;
    ctl_remove_backend(p, (uint32_t)bi);
    p->members_seq = ++ctl.model->change_seq;
    gen = control_publish();
    control_save_state();
    log_info("backend %s/%s deleted", p->name, r->cmd.backend);
    ctl_reply_change(r, gen, NULL);
}

/* --- replace: add new, wait READY, drain old, wait DRAINED, delete old ----------------- */

struct replace_job {
    struct ctl_req *r; /* the operator's command: progress lines, then the reply */
    char pool[CMD_NAME_MAX], old[CMD_NAME_MAX], new[CMD_NAME_MAX], addr[80], group[CMD_NAME_MAX];
    int weight;
    int64_t timeout_ms;
    uint64_t start_us;
    int step;
};

enum { RS_ADD = 1, RS_DRAIN, RS_DEL_OLD, RS_MAINT_NEW, RS_DEL_NEW };

static void replace_step(struct ctl_req *ir, const char *reply, bool ok);

static void progress(struct replace_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void progress(struct replace_job *j, const char *fmt, ...)
{
    char line[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_info("replace %s/%s: %s", j->pool, j->old, line);
    if (j->r->done && j->r->progress)
        j->r->progress(j->r, line);
}

static void replace_end(struct replace_job *j, const char *result, bool ok)
{
    ctl.replacing--;
    audit_write("operator", &j->r->peer, j->r->line, result, ctl.model->generation, NULL, NULL);
    persist_sync_audit();
    ctl_finish(j->r, result, ok);
    free(j);
}

/* One step of the replace, as an ordinary (queued, audited) change. */
static void submit(struct replace_job *j, int step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void submit(struct replace_job *j, int step, const char *fmt, ...)
{
    struct ctl_req *ir = veer_calloc(1, sizeof(*ir));
    char err[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ir->line, sizeof(ir->line), fmt, ap);
    va_end(ap);
    j->step = step;
    ir->peer = j->r->peer;
    ir->t_read_us = veer_now_us();
    ir->done = replace_step;
    ir->arg = j;
    if (cmd_parse(ir->line, &ir->cmd, err, sizeof(err)) < 0) {
        char line[300];

        snprintf(line, sizeof(line), "ERR internal: %s", err);
        free(ir);
        replace_end(j, line, false);
        return;
    }
    control_execute(ir);
}

static struct backend *job_backend(const struct replace_job *j, const char *name)
{
    int pi = model_find_pool(ctl.model, j->pool), bi;

    if (pi < 0 || (bi = model_find_backend(&ctl.model->pools[pi], name)) < 0)
        return NULL;
    return ctl.model->pools[pi].b[bi].be;
}

static void replace_drained(struct waiter *w, bool ok)
{
    struct replace_job *j = w->arg;
    char line[300];

    if (!ok) {
        snprintf(line, sizeof(line), "ERR timeout active=%u: %s still draining, %s serving",
                 backend_active(w->be), j->old, j->new);
        replace_end(j, line, false);
        return;
    }
    progress(j, "%s DRAINED after %.1f ms", j->old, (double)(veer_now_us() - w->start_us) / 1000.0);
    submit(j, RS_DEL_OLD, "del backend %s %s", j->pool, j->old);
}

static void replace_ready(struct waiter *w, bool ok)
{
    struct replace_job *j = w->arg;

    if (!ok) {
        progress(j, "%s did not become READY within %lld ms; removing it, %s keeps serving", j->new,
                 (long long)j->timeout_ms, j->old);
        submit(j, RS_MAINT_NEW, "set state %s/%s maint", j->pool, j->new);
        return;
    }
    progress(j, "%s READY after %.1f ms", j->new, (double)(veer_now_us() - w->start_us) / 1000.0);
    submit(j, RS_DRAIN, "drain %s/%s", j->pool, j->old);
}

static bool backend_is(const struct replace_job *j, const char *name, enum backend_state st)
{
    int pi = model_find_pool(ctl.model, j->pool), bi;

    if (pi < 0 || (bi = model_find_backend(&ctl.model->pools[pi], name)) < 0)
        return false;
    return model_state(&ctl.model->pools[pi], (uint32_t)bi) == st;
}

/* A step finished: go on, or stop with the step's error. */
static void replace_step(struct ctl_req *ir, const char *reply, bool ok)
{
    struct replace_job *j = ir->arg;
    char line[400];
    size_t n = strcspn(reply, "\n");

    if (!ok) {
        snprintf(line, sizeof(line), "%.*s (step: %.200s)", (int)(n > 150 ? 150 : n), reply,
                 ir->line);
        replace_end(j, line, false);
        return;
    }
    switch (j->step) {
    case RS_ADD:
        progress(j, "added %s %s to group %s", j->new, j->addr, j->group);
        if (backend_is(j, j->new, BE_READY))
            replace_ready(&(struct waiter){.arg = j, .be = NULL, .start_us = veer_now_us()}, true);
        else
            ctl_wait_backend(job_backend(j, j->new), WAIT_READY, j->timeout_ms, replace_ready, j);
        return;
    case RS_DRAIN:
        progress(j, "draining %s (%u in flight)", j->old, backend_active(job_backend(j, j->old)));
        if (backend_is(j, j->old, BE_DRAINED))
            replace_drained(&(struct waiter){.arg = j, .be = NULL, .start_us = veer_now_us()},
                            true);
        else
            ctl_wait_backend(job_backend(j, j->old), WAIT_DRAINED, j->timeout_ms, replace_drained,
                             j);
        return;
    case RS_DEL_OLD:
        progress(j, "deleted %s", j->old);
        snprintf(line, sizeof(line), "OK gen=%llu replaced=%s with=%s total_ms=%.1f",
                 (unsigned long long)ctl.model->generation, j->old, j->new,
                 (double)(veer_now_us() - j->start_us) / 1000.0);
        replace_end(j, line, true);
        return;
    case RS_MAINT_NEW:
        submit(j, RS_DEL_NEW, "del backend %s %s", j->pool, j->new);
        return;
    case RS_DEL_NEW:
        snprintf(line, sizeof(line), "ERR %s did not become ready within %lld ms; %s left serving",
                 j->new, (long long)j->timeout_ms, j->old);
        replace_end(j, line, false);
        return;
    }
}

/* replace P OLD NEWNAME NEWADDR [--timeout T]: one command for a rolling step. */
void ctl_replace_start(struct ctl_req *r)
{
    struct replace_job *j;
    const struct rt_pool *p;
    int pi = ctl_find_pool(r), bi;

    if (pi < 0)
        return;
    p = &ctl.model->pools[pi];
    if ((bi = ctl_find_backend(r, p)) < 0)
        return;
    if (model_find_backend(p, r->cmd.backend2) >= 0) {
        ctl_refuse(r, "backend %s already exists in pool %s", r->cmd.backend2, p->name);
        return;
    }
    j = veer_calloc(1, sizeof(*j));
    j->r = r;
    snprintf(j->pool, sizeof(j->pool), "%s", p->name);
    snprintf(j->old, sizeof(j->old), "%s", r->cmd.backend);
    snprintf(j->new, sizeof(j->new), "%s", r->cmd.backend2);
    snprintf(j->addr, sizeof(j->addr), "%s", r->cmd.addr);
    snprintf(j->group, sizeof(j->group), "%s", p->g[p->b[bi].group].name);
    j->weight = p->b[bi].weight;
    j->timeout_ms = r->cmd.timeout_ms > 0 ? r->cmd.timeout_ms : ctl.conf->timeouts.drain_ms;
    j->start_us = veer_now_us();
    r->job = j;
    ctl.replacing++;
    submit(j, RS_ADD, "add backend %s %s %s weight %d group %s", j->pool, j->new, j->addr,
           j->weight, j->group);
}
