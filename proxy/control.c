/*
 * control.c - the control plane: admin commands against the model, and the
 * single path every state change takes (see control.h).
 *
 * A change is made on a copy of the pool's decisions (a pool_edit), checked,
 * preceded by warming connections to backends that gain traffic, then
 * committed: written into the model, published as a new snapshot with one
 * atomic store, audited, persisted, and only then acknowledged. Changes are
 * serialised: one at a time, later ones queue behind a change that waits
 * for warm connections.
 */
#include "control.h"
#include "audit.h"
#include "health.h"
#include "sbuf.h"
#include "state.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
    void (*cb)(struct waiter *w, bool ok); /* ok false: timed out or backend deleted */
    void *arg;
    struct waiter *next;
};

struct history {
    struct pool_edit *e[ROLLBACK_DEPTH];
    unsigned n;
};

static struct {
    struct event_base *base;
    const struct veer_conf *conf;
    struct model *model;
    struct worker **workers;
    unsigned nworkers;

    pthread_mutex_t mq_lock;
    struct cmsg *mq;
    int mq_fd;
    struct event *mq_ev;

    struct ctl_req *busy; /* the change in progress (waiting for warm-up) */
    struct ctl_req *queue_head, *queue_tail;
    uint64_t next_ticket;
    struct history *history; /* per pool */
    struct waiter *waiters;
    struct backend *retired; /* deleted backends not freed yet */
    struct event *tick;
    uint64_t last_store_us; /* when the last snapshot was stored */
} ctl = {.mq_fd = -1};

static void backend_idle(struct backend *be);
static void breaker_event(struct backend *be, bool ok);
static void slow_start_begin(struct rt_pool *p, uint32_t i);
static void slow_start_tick(void);
static void sync_draining(struct rt_pool *p);
static void drain_wait_cb(struct waiter *w, bool ok);
static void wait_backend(struct backend *be, enum wait_for what, int64_t timeout_ms,
                         void (*cb)(struct waiter *, bool), void *arg);
static void send_backends(enum wmsg_type type, struct backend **list, unsigned n);
static void add_backend(struct ctl_req *r, int pi);
static void del_backend(struct ctl_req *r, int pi);
static void replace_start(struct ctl_req *r);
static void reply_change(struct ctl_req *r, uint64_t gen, const char *extra);
static void tick_cb(evutil_socket_t fd, short what, void *arg);
static void on_health(struct backend *be, bool ok, uint64_t took_us, const char *why);
static void wake_waiters(struct backend *be, enum wait_for what, bool ok);

static void commit(struct ctl_req *r, bool async);

/* --- replies ---------------------------------------------------------------- */

/* Answer r (reply text without the final empty line) and let it go. */
static void finish(struct ctl_req *r, const char *text, bool ok)
{
    struct sbuf b;

    sb_init(&b);
    sb_puts(&b, text);
    if (b.len == 0 || b.s[b.len - 1] != '\n')
        sb_puts(&b, "\n");
    sb_puts(&b, "\n");
    if (r->done)
        r->done(r, b.s, ok);
    sb_free(&b);
    if (r->warm_timer)
        event_free(r->warm_timer);
    free(r);
}

/* Refuse a change: audited, nothing touched. */
static void refuse(struct ctl_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void refuse(struct ctl_req *r, const char *fmt, ...)
{
    char why[512], line[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(line, sizeof(line), "ERR %s", why);
    if (r->cmd.is_change) {
        audit_write("operator", &r->peer, r->line, line, ctl.model->generation, NULL, NULL);
        persist_sync_audit();
    }
    finish(r, line, false);
}

void control_refuse(struct ctl_req *r, const char *why)
{
    char line[600];

    /* Malformed commands are audited too: someone tried something. */
    snprintf(line, sizeof(line), "ERR %s", why);
    audit_write("operator", &r->peer, r->line, line, ctl.model->generation, NULL, NULL);
    persist_sync_audit();
    finish(r, line, false);
}

/* --- messages from workers ---------------------------------------------------- */

void control_post(struct cmsg *m)
{
    uint64_t one = 1;

    pthread_mutex_lock(&ctl.mq_lock);
    m->next = ctl.mq;
    ctl.mq = m;
    pthread_mutex_unlock(&ctl.mq_lock);
    if (write(ctl.mq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("control: eventfd write: %s", strerror(errno));
}

void control_breaker(unsigned worker, struct backend *be, bool ok)
{
    struct cmsg *m = veer_calloc(1, sizeof(*m));

    m->type = CMSG_BREAKER;
    m->worker = worker;
    m->be = be;
    m->ticket = ok;
    control_post(m);
}

void control_backend_idle(unsigned worker, struct backend *be)
{
    struct cmsg *m = veer_calloc(1, sizeof(*m));

    m->type = CMSG_BACKEND_IDLE;
    m->worker = worker;
    m->be = be;
    control_post(m);
}

static void warm_done(uint64_t ticket)
{
    struct ctl_req *r = ctl.busy;

    if (r == NULL || r->ticket != ticket || r->warm_pending == 0)
        return; /* a late report for a change that already went out */
    if (--r->warm_pending == 0)
        commit(r, true);
}

static void mq_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cmsg *m;
    uint64_t v;

    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("control: eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&ctl.mq_lock);
    m = ctl.mq;
    ctl.mq = NULL;
    pthread_mutex_unlock(&ctl.mq_lock);
    while (m) {
        struct cmsg *next = m->next;

        if (m->type == CMSG_WARM_DONE)
            warm_done(m->ticket);
        else if (m->type == CMSG_BACKEND_IDLE)
            backend_idle(m->be);
        else if (m->type == CMSG_BREAKER)
            breaker_event(m->be, m->ticket != 0);
        free(m);
        m = next;
    }
}

/* --- pool edits ---------------------------------------------------------------- */

static struct pool_edit *edit_of(int pool)
{
    const struct rt_pool *p = &ctl.model->pools[pool];
    struct pool_edit *e = veer_calloc(1, sizeof(*e));

    e->pool = pool;
    e->ng = p->ng;
    e->nb = p->nb;
    e->share = veer_calloc(p->ng ? p->ng : 1, sizeof(*e->share));
    e->id = veer_calloc(p->nb ? p->nb : 1, sizeof(*e->id));
    e->weight = veer_calloc(p->nb ? p->nb : 1, sizeof(*e->weight));
    e->admin = veer_calloc(p->nb ? p->nb : 1, sizeof(*e->admin));
    for (uint32_t g = 0; g < p->ng; g++)
        e->share[g] = p->g[g].share;
    for (uint32_t i = 0; i < p->nb; i++) {
        e->id[i] = p->b[i].be->id;
        e->weight[i] = p->b[i].weight;
        e->admin[i] = p->b[i].admin;
    }
    return e;
}

static struct pool_edit *edit_dup(const struct pool_edit *s)
{
    struct pool_edit *e = veer_calloc(1, sizeof(*e));

    *e = *s;
    e->share = veer_malloc((s->ng ? s->ng : 1) * sizeof(*e->share));
    e->id = veer_malloc((s->nb ? s->nb : 1) * sizeof(*e->id));
    e->weight = veer_malloc((s->nb ? s->nb : 1) * sizeof(*e->weight));
    e->admin = veer_malloc((s->nb ? s->nb : 1) * sizeof(*e->admin));
    memcpy(e->share, s->share, s->ng * sizeof(*e->share));
    memcpy(e->id, s->id, s->nb * sizeof(*e->id));
    memcpy(e->weight, s->weight, s->nb * sizeof(*e->weight));
    memcpy(e->admin, s->admin, s->nb * sizeof(*e->admin));
    return e;
}

static void edit_free(struct pool_edit *e)
{
    if (e == NULL)
        return;
    free(e->share);
    free(e->id);
    free(e->weight);
    free(e->admin);
    free(e);
}

/* Whether backend i would take new requests under the edited values. */
static bool edit_eligible(const struct rt_pool *p, const struct pool_edit *e, uint32_t i)
{
    return e->admin[i] == ADMIN_READY && p->b[i].health == HEALTH_READY && e->weight[i] > 0 &&
           e->share[p->b[i].group] > 0;
}

static bool group_has_capacity(const struct rt_pool *p, const struct pool_edit *e, uint32_t g)
{
    for (uint32_t i = 0; i < p->nb; i++)
        if (p->b[i].group == g && e->admin[i] == ADMIN_READY && p->b[i].health == HEALTH_READY &&
            e->weight[i] > 0)
            return true;
    return false;
}

/*
 * Refuse what would strand traffic: shares not totalling 100, or a group
 * left with a share but no eligible backend where the change caused that
 * (it gave the group a share, or took its last eligible backend away). A
 * group already stranded before the change (backends went DOWN) does not
 * block unrelated changes.
 */
static int edit_check(const struct rt_pool *p, const struct pool_edit *before,
                      const struct pool_edit *after, char *err, size_t len)
{
    int total = 0;

    for (uint32_t g = 0; g < after->ng; g++)
        total += after->share[g];
    if (after->ng && total != 100) {
        snprintf(err, len, "shares of pool %s must total 100 (got %d)", p->name, total);
        return -1;
    }
    for (uint32_t g = 0; g < after->ng; g++) {
        bool now = after->share[g] > 0 && !group_has_capacity(p, after, g);
        bool was = before->share[g] > 0 && !group_has_capacity(p, before, g);

        if (now && !was) {
            snprintf(err, len,
                     "group %s would have a share of %d%% but no eligible backend (--force to "
                     "override)",
                     p->g[g].name, after->share[g]);
            return -1;
        }
    }
    return 0;
}

static void edit_apply(struct rt_pool *p, const struct pool_edit *e)
{
    for (uint32_t g = 0; g < e->ng && g < p->ng; g++)
        p->g[g].share = e->share[g];
    for (uint32_t i = 0; i < e->nb && i < p->nb; i++) {
        if (p->b[i].admin != e->admin[i])
            p->b[i].drained = false;
        if (p->b[i].admin != ADMIN_READY && e->admin[i] == ADMIN_READY &&
            p->b[i].health == HEALTH_READY)
            slow_start_begin(p, i);
        p->b[i].weight = e->weight[i];
        p->b[i].admin = e->admin[i];
    }
}

/* What changed, as two JSON objects (before, after) for the audit record. */
static void edit_diff(const struct rt_pool *p, const struct pool_edit *a, const struct pool_edit *b,
                      struct sbuf *before, struct sbuf *after)
{
    bool first_share = true, first_be = true;

    for (int k = 0; k < 2; k++) {
        struct sbuf *o = k ? after : before;

        sb_puts(o, "{\"pool\":");
        sb_json_str(o, p->name);
    }
    for (uint32_t g = 0; g < a->ng; g++) {
        if (a->share[g] == b->share[g])
            continue;
        for (int k = 0; k < 2; k++) {
            struct sbuf *o = k ? after : before;

            sb_puts(o, first_share ? ",\"shares\":{" : ",");
            sb_json_str(o, p->g[g].name);
            sb_printf(o, ":%d", k ? b->share[g] : a->share[g]);
        }
        first_share = false;
    }
    if (!first_share) {
        sb_puts(before, "}");
        sb_puts(after, "}");
    }
    for (uint32_t i = 0; i < a->nb; i++) {
        if (a->weight[i] == b->weight[i] && a->admin[i] == b->admin[i])
            continue;
        for (int k = 0; k < 2; k++) {
            struct sbuf *o = k ? after : before;
            const struct pool_edit *e = k ? b : a;

            sb_puts(o, first_be ? ",\"backends\":{" : ",");
            sb_json_str(o, p->b[i].be->name);
            sb_printf(o, ":{\"weight\":%d,\"admin\":\"%s\"}", e->weight[i],
                      admin_state_name(e->admin[i]));
        }
        first_be = false;
    }
    if (!first_be) {
        sb_puts(before, "}");
        sb_puts(after, "}");
    }
    sb_puts(before, "}");
    sb_puts(after, "}");
}

static void history_push(int pool, struct pool_edit *e)
{
    struct history *h = &ctl.history[pool];

    if (h->n == ROLLBACK_DEPTH) {
        edit_free(h->e[0]);
        memmove(h->e, h->e + 1, (ROLLBACK_DEPTH - 1) * sizeof(h->e[0]));
        h->n--;
    }
    h->e[h->n++] = e;
}

/* --- publishing ------------------------------------------------------------------ */

uint64_t control_publish(void)
{
    ctl.model->generation++;
    routing_publish(routing_build(ctl.model));
    ctl.last_store_us = veer_now_us();
    for (unsigned i = 0; i < ctl.nworkers; i++)
        worker_post(ctl.workers[i], WCMD_REFRESH);
    return ctl.model->generation;
}

void control_save_state(void)
{
    if (ctl.conf->state_file)
        persist_state(state_render(ctl.model));
}

/* --- changes ---------------------------------------------------------------------- */

static void next_change(void);

/* drain: how many requests it waits for; --force cuts them. */
static void drain_reply(struct ctl_req *r, struct rt_pool *p, struct sbuf *reply)
{
    int bi = model_find_backend(p, r->cmd.backend);

    if (bi < 0)
        return;
    sb_printf(reply, " active=%u", p->b[bi].drain_inflight);
    if (r->cmd.force && !p->b[bi].drained) {
        struct backend *be = p->b[bi].be;

        send_backends(WMSG_ABORT_BACKEND, &be, 1);
    }
}

static bool drained_now(struct rt_pool *p, struct ctl_req *r)
{
    int bi = model_find_backend(p, r->cmd.backend);

    return bi < 0 || p->b[bi].drained;
}

/* drain --wait: answer the moment the backend is DRAINED, or ERR at the timeout. */
static void wait_drained(struct ctl_req *r, struct rt_pool *p, const char *ok)
{
    int bi = model_find_backend(p, r->cmd.backend);
    int64_t t = r->cmd.timeout_ms > 0 ? r->cmd.timeout_ms : ctl.conf->timeouts.drain_ms;

    snprintf(r->line_ok, sizeof(r->line_ok), "%s", ok);
    wait_backend(p->b[bi].be, WAIT_DRAINED, t, drain_wait_cb, r);
}

/*
 * Write the edit into the model and publish: the reply is sent only after
 * the snapshot store, so a request parsed after the OK sees the change.
 * After an asynchronous wait (warm-up), queued changes are started.
 */
static void commit(struct ctl_req *r, bool async)
{
    struct rt_pool *p = &ctl.model->pools[r->edit->pool];
    struct pool_edit *before = edit_of(r->edit->pool);
    uint64_t gen, t_store, warm_us = 0, applied_us;
    struct sbuf jb, ja, reply;

    if (r->warm_timer) {
        event_free(r->warm_timer);
        r->warm_timer = NULL;
    }
    if (r->warm_checked)
        warm_us = veer_now_us() - r->t_warm_us;
    edit_apply(p, r->edit);
    gen = control_publish();
    t_store = veer_now_us();
    applied_us = t_store - r->t_read_us - warm_us;
    sync_draining(p);

    sb_init(&jb);
    sb_init(&ja);
    sb_init(&reply);
    edit_diff(p, before, r->edit, &jb, &ja);
    sb_printf(&reply, "OK gen=%llu applied_us=%llu", (unsigned long long)gen,
              (unsigned long long)applied_us);
    if (r->warm_checked)
        sb_printf(&reply, " warm_us=%llu", (unsigned long long)warm_us);
    if (r->cmd.kind == CMD_DRAIN)
        drain_reply(r, p, &reply);
    audit_write("operator", &r->peer, r->line, "OK", gen, jb.s, ja.s);
    persist_sync_audit();
    control_save_state();
    if (r->cmd.kind != CMD_ROLLBACK)
        history_push(r->edit->pool, before);
    else
        edit_free(before);
    edit_free(r->edit);
    r->edit = NULL;
    sb_free(&jb);
    sb_free(&ja);
    if (ctl.busy == r)
        ctl.busy = NULL;
    if (r->cmd.kind == CMD_DRAIN && r->cmd.wait && !drained_now(p, r))
        wait_drained(r, p, reply.s);
    else
        finish(r, reply.s, true);
    sb_free(&reply);
    if (async)
        next_change();
}

static void warm_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ctl_req *r = arg;

    log_info("warm-up for \"%s\" not done after %d ms: publishing anyway", r->line,
             WARM_DEADLINE_MS);
    r->warm_pending = 0;
    commit(r, true);
}

/*
 * Before publishing, have every worker open a few connections to backends
 * that start receiving traffic, so the first requests after a shift do not
 * pay for connects. Bounded by WARM_DEADLINE_MS: a dead backend never holds
 * a shift back for long.
 */
static bool start_warm(struct ctl_req *r, const struct pool_edit *before)
{
    const struct rt_pool *p = &ctl.model->pools[r->edit->pool];
    struct backend **list = veer_malloc((p->nb ? p->nb : 1) * sizeof(*list));
    struct timeval tv = {0, WARM_DEADLINE_MS * 1000};
    unsigned gaining = 0;

    for (uint32_t i = 0; i < p->nb; i++)
        if (edit_eligible(p, r->edit, i) && !edit_eligible(p, before, i))
            list[gaining++] = p->b[i].be;
    r->warm_checked = gaining > 0;
    r->t_warm_us = veer_now_us();
    for (unsigned w = 0; w < ctl.nworkers && gaining; w++) {
        struct wmsg *m = veer_calloc(1, sizeof(*m));

        /* Only what this worker lacks: connections kept from earlier traffic count. */
        m->be = veer_malloc(gaining * sizeof(*m->be));
        for (unsigned k = 0; k < gaining; k++)
            if (atomic_load_explicit(&list[k]->ws[w].conns, memory_order_relaxed) < WARM_CONNS)
                m->be[m->n++] = list[k];
        if (m->n == 0) {
            wmsg_free(m);
            continue;
        }
        if (r->ticket == 0)
            r->ticket = ++ctl.next_ticket;
        m->type = WMSG_WARM;
        m->ticket = r->ticket;
        r->warm_pending++;
        worker_send(ctl.workers[w], m);
    }
    free(list);
    if (r->warm_pending == 0)
        return false;
    r->warm_timer = evtimer_new(ctl.base, warm_timeout_cb, r);
    evtimer_add(r->warm_timer, &tv);
    return true;
}

static int find_pool(struct ctl_req *r)
{
    int pi = model_find_pool(ctl.model, r->cmd.pool);

    if (pi < 0)
        refuse(r, "unknown pool %s", r->cmd.pool);
    return pi;
}

static int find_backend(struct ctl_req *r, const struct rt_pool *p)
{
    int bi = model_find_backend(p, r->cmd.backend);

    if (bi < 0)
        refuse(r, "unknown backend %s in pool %s", r->cmd.backend, p->name);
    return bi;
}

/* Edit the copy as the command says; -1 when refused (r answered). */
static int edit_by_command(struct ctl_req *r, const struct rt_pool *p, struct pool_edit *e)
{
    const struct cmd *c = &r->cmd;
    int bi, gi;

    switch (c->kind) {
    case CMD_SET_WEIGHT:
        if ((bi = find_backend(r, p)) < 0)
            return -1;
        e->weight[bi] = c->weight;
        return 0;
    case CMD_SET_STATE:
        if ((bi = find_backend(r, p)) < 0)
            return -1;
        e->admin[bi] = c->state == CMD_STATE_READY   ? ADMIN_READY
                       : c->state == CMD_STATE_DRAIN ? ADMIN_DRAIN
                                                     : ADMIN_MAINT;
        return 0;
    case CMD_DRAIN:
        if ((bi = find_backend(r, p)) < 0)
            return -1;
        e->admin[bi] = ADMIN_DRAIN;
        return 0;
    case CMD_SHIFT:
        for (int k = 0; k < c->nshares; k++) {
            if ((gi = model_find_group(p, c->shares[k].group)) < 0) {
                refuse(r, "unknown group %s in pool %s", c->shares[k].group, p->name);
                return -1;
            }
            e->share[gi] = c->shares[k].share;
        }
        return 0;
    case CMD_SWAP: {
        int t;

        if (p->ng != 2) {
            refuse(r, "swap needs exactly two groups; pool %s has %u", p->name, p->ng);
            return -1;
        }
        t = e->share[0];
        e->share[0] = e->share[1];
        e->share[1] = t;
        return 0;
    }
    default:
        refuse(r, "not a change");
        return -1;
    }
}

static bool same_members(const struct pool_edit *e, const struct rt_pool *p)
{
    for (uint32_t i = 0; i < e->nb; i++)
        if (e->id[i] != p->b[i].be->id)
            return false;
    return true;
}

/* Take the pool's previous operator change off the history, as the new values. */
static int edit_by_rollback(struct ctl_req *r, int pi, struct pool_edit **out)
{
    struct history *h = &ctl.history[pi];
    const struct rt_pool *p = &ctl.model->pools[pi];
    struct pool_edit *prev;

    if (h->n == 0) {
        refuse(r, "nothing to roll back in pool %s", p->name);
        return -1;
    }
    prev = h->e[h->n - 1];
    if (prev->ng != p->ng || prev->nb != p->nb || !same_members(prev, p)) {
        /* Membership changed since (backends added or removed): no safe undo. */
        refuse(r, "pool %s changed membership since its previous change", p->name);
        return -1;
    }
    *out = edit_dup(prev);
    return 0;
}

/* maintenance on|off [P] [--retry-after S]: one publish; requests in flight finish. */
static void maintenance_change(struct ctl_req *r)
{
    const struct cmd *c = &r->cmd;
    int pi = -1, retry = c->retry_after >= 0 ? c->retry_after : ctl.conf->maintenance.retry_after;
    bool *flag = &ctl.model->maint;
    int *ra = &ctl.model->maint_retry_after;
    char before[128], after[128];
    uint64_t gen;

    if (c->hold_ms >= 0) {
        refuse(r, "--hold is not available in this version");
        return;
    }
    if (c->pool[0]) {
        if ((pi = find_pool(r)) < 0)
            return;
        flag = &ctl.model->pools[pi].maint;
        ra = &ctl.model->pools[pi].maint_retry_after;
    }
    snprintf(before, sizeof(before), "{\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             pi >= 0 ? ctl.model->pools[pi].name : "*", *flag ? "true" : "false", *ra);
    *flag = c->on;
    *ra = c->on ? retry : 0;
    snprintf(after, sizeof(after), "{\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             pi >= 0 ? ctl.model->pools[pi].name : "*", *flag ? "true" : "false", *ra);
    gen = control_publish();
    audit_write("operator", &r->peer, r->line, "OK", gen, before, after);
    persist_sync_audit();
    control_save_state();
    log_info("maintenance %s for %s (gen %llu)", c->on ? "on" : "off",
             pi >= 0 ? ctl.model->pools[pi].name : "every pool", (unsigned long long)gen);
    reply_change(r, gen, NULL);
}

static void start_change(struct ctl_req *r)
{
    int pi;

    if (r->cmd.kind == CMD_MAINTENANCE)
        return maintenance_change(r);
    pi = find_pool(r);
    struct pool_edit *before, *after = NULL;
    char err[300];
    const struct rt_pool *p;

    if (pi < 0)
        return;
    if (r->cmd.kind == CMD_ADD_BACKEND)
        return add_backend(r, pi);
    if (r->cmd.kind == CMD_DEL_BACKEND)
        return del_backend(r, pi);
    p = &ctl.model->pools[pi];
    before = edit_of(pi);
    if (r->cmd.kind == CMD_ROLLBACK) {
        if (edit_by_rollback(r, pi, &after) < 0)
            goto refused;
    } else {
        after = edit_dup(before);
        if (edit_by_command(r, p, after) < 0)
            goto refused;
    }
    if (!r->cmd.force && edit_check(p, before, after, err, sizeof(err)) < 0) {
        refuse(r, "%s", err);
        goto refused;
    }
    if (r->cmd.kind == CMD_ROLLBACK) {
        struct history *h = &ctl.history[pi];

        edit_free(h->e[--h->n]);
    }
    r->edit = after;
    ctl.busy = r;
    if (start_warm(r, before)) {
        edit_free(before);
        return; /* commit() runs when the workers report, or at the deadline */
    }
    edit_free(before);
    commit(r, false);
    return;
refused:
    edit_free(before);
    edit_free(after);
}

/* Start queued changes until one has to wait. */
static void next_change(void)
{
    while (ctl.busy == NULL && ctl.queue_head) {
        struct ctl_req *r = ctl.queue_head;

        ctl.queue_head = r->next;
        if (ctl.queue_head == NULL)
            ctl.queue_tail = NULL;
        r->next = NULL;
        start_change(r); /* answers r, or leaves it in ctl.busy waiting for warm-up */
    }
}

/* --- waiting for a backend ---------------------------------------------------------- */

static void waiter_done(struct waiter *w, bool ok)
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

static void waiter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    waiter_done(arg, false);
}

/* Call cb when be becomes READY / DRAINED, or with ok false after timeout_ms. */
static void wait_backend(struct backend *be, enum wait_for what, int64_t timeout_ms,
                         void (*cb)(struct waiter *, bool), void *arg)
{
    struct waiter *w = veer_calloc(1, sizeof(*w));
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};

    w->be = be;
    w->what = what;
    w->cb = cb;
    w->arg = arg;
    w->start_us = veer_now_us();
    w->timer = evtimer_new(ctl.base, waiter_timeout_cb, w);
    evtimer_add(w->timer, &tv);
    w->next = ctl.waiters;
    ctl.waiters = w;
}

/* be reached a state: wake who waits for it (or everyone waiting on it, when deleted). */
static void wake_waiters(struct backend *be, enum wait_for what, bool ok)
{
    struct waiter *w = ctl.waiters;

    while (w) {
        struct waiter *next = w->next;

        if (w->be == be && (w->what == what || !ok))
            waiter_done(w, ok);
        w = next;
    }
}

/* --- draining ------------------------------------------------------------------------ */

/* Tell every worker to do something about these backends. */
static void send_backends(enum wmsg_type type, struct backend **list, unsigned n)
{
    for (unsigned w = 0; w < ctl.nworkers && n; w++) {
        struct wmsg *m = veer_calloc(1, sizeof(*m));

        m->type = type;
        m->n = n;
        m->be = veer_malloc(n * sizeof(*m->be));
        memcpy(m->be, list, n * sizeof(*list));
        worker_send(ctl.workers[w], m);
    }
}

/*
 * A draining backend with no request in flight and no connection left is
 * DRAINED: said once, the moment it happens (workers report the last
 * request ending), and whoever waits for it is answered.
 */
static void check_drained(struct rt_pool *p, uint32_t i)
{
    struct rt_backend *b = &p->b[i];
    uint32_t active, conns;

    if (b->admin != ADMIN_DRAIN || b->drained)
        return;
    if (routing_min_seen() < b->drain_gen)
        return; /* a worker may still pick it from an older snapshot */
    active = backend_active(b->be);
    conns = backend_conns(b->be);
    if (active || conns)
        return;
    b->drained = true;
    log_info("backend %s/%s DRAINED: %u requests finished in %.1f ms", p->name, b->be->name,
             b->drain_inflight, (double)(veer_now_us() - b->drain_start_us) / 1000.0);
    wake_waiters(b->be, WAIT_DRAINED, true);
}

static void backend_idle(struct backend *be)
{
    if (be->pool >= 0)
        check_drained(&ctl.model->pools[be->pool], be->index);
}

/*
 * Make the workers' view of draining follow the admin states: a backend
 * entering DRAIN stops having its connections pooled, its idle ones close
 * at once, and the count of requests still in flight is taken.
 */
static void sync_draining(struct rt_pool *p)
{
    struct backend **closing = NULL;
    unsigned n = 0;

    for (uint32_t i = 0; i < p->nb; i++) {
        struct rt_backend *b = &p->b[i];
        bool want = b->admin == ADMIN_DRAIN;

        if (want == atomic_load(&b->be->draining))
            continue;
        atomic_store(&b->be->draining, want); /* seq_cst: pairs with the workers' fence */
        if (!want)
            continue;
        b->drained = false;
        b->drain_gen = ctl.model->generation;
        b->drain_start_us = veer_now_us();
        b->drain_inflight = backend_active(b->be);
        closing = veer_realloc(closing, (n + 1) * sizeof(*closing));
        closing[n++] = b->be;
    }
    send_backends(WMSG_CLOSE_IDLE, closing, n);
    free(closing);
    for (uint32_t i = 0; i < p->nb; i++)
        check_drained(p, i);
}

static void drain_wait_cb(struct waiter *w, bool ok)
{
    struct ctl_req *r = w->arg;
    char line[300];

    if (ok)
        snprintf(line, sizeof(line), "%s drained_ms=%.1f", r->line_ok,
                 (double)(veer_now_us() - w->start_us) / 1000.0);
    else
        snprintf(line, sizeof(line), "ERR timeout active=%u", backend_active(w->be));
    finish(r, line, ok);
}

/* --- health transitions -------------------------------------------------------------- */

static const char *health_name(enum health_state h)
{
    return h == HEALTH_READY ? "READY" : h == HEALTH_DOWN ? "DOWN" : "PENDING";
}

/* A readiness transition: publish, log, audit (actor health). Never rolled back. */
static void health_transition(struct rt_pool *p, uint32_t i, enum health_state to, const char *why)
{
    struct rt_backend *b = &p->b[i];
    enum health_state from = b->health;
    char line[200], before[64], after[64];
    uint64_t gen;

    b->health = to;
    if (to == HEALTH_READY)
        slow_start_begin(p, i);
    gen = control_publish();
    snprintf(line, sizeof(line), "health %s/%s", p->name, b->be->name);
    snprintf(before, sizeof(before), "{\"state\":\"%s\"}", health_name(from));
    snprintf(after, sizeof(after), "{\"state\":\"%s\"}", health_name(to));
    audit_write("health", NULL, line, "OK", gen, before, after);
    persist_sync_audit();
    if (to == HEALTH_READY)
        log_info("backend %s/%s %s -> READY after %u passing checks (gen %llu)", p->name,
                 b->be->name, health_name(from), b->be->hc_pass, (unsigned long long)gen);
    else
        log_warn("backend %s/%s %s -> DOWN after %u failing checks: %s (gen %llu)", p->name,
                 b->be->name, health_name(from), b->be->hc_fail, why ? why : "failed",
                 (unsigned long long)gen);
    if (to == HEALTH_READY)
        wake_waiters(b->be, WAIT_READY, true);
}

static void on_health(struct backend *be, bool ok, uint64_t took_us, const char *why)
{
    struct rt_pool *p;
    struct rt_backend *b;
    const struct conf_health *hc;

    if (be->pool < 0)
        return;
    p = &ctl.model->pools[be->pool];
    b = &p->b[be->index];
    hc = &p->conf->health;
    if (b->admin == ADMIN_MAINT)
        return; /* no checks in maintenance */
    if (ok) {
        be->hc_fail = 0;
        be->hc_pass++;
        if (b->health != HEALTH_READY && be->hc_pass >= (unsigned)hc->rise)
            health_transition(p, be->index, HEALTH_READY, NULL);
        return;
    }
    be->hc_pass = 0;
    be->hc_fail++;
    if (b->health == HEALTH_PENDING && be->hc_fail == 1)
        log_info("backend %s/%s not ready yet: %s", p->name, be->name, why ? why : "failed");
    if (b->health == HEALTH_READY && be->hc_fail >= (unsigned)hc->fall)
        health_transition(p, be->index, HEALTH_DOWN, why);
}

/* --- membership ---------------------------------------------------------------------- */

static void retire_backend(struct backend *be)
{
    be->retired_gen = ctl.model->generation;
    be->retired_next = ctl.retired;
    ctl.retired = be;
}

/* Free deleted backends no worker can reach any more. */
static void reclaim_backends(void)
{
    uint64_t seen = routing_min_seen();

    for (struct backend **pp = &ctl.retired; *pp;) {
        struct backend *be = *pp;

        if (be->retired_gen <= seen && backend_active(be) == 0 && backend_conns(be) == 0) {
            *pp = be->retired_next;
            backend_destroy(be);
        } else {
            pp = &be->retired_next;
        }
    }
}

static void reply_change(struct ctl_req *r, uint64_t gen, const char *extra)
{
    char line[300];

    snprintf(line, sizeof(line), "OK gen=%llu applied_us=%llu%s", (unsigned long long)gen,
             (unsigned long long)(ctl.last_store_us - r->t_read_us), extra ? extra : "");
    finish(r, line, true);
}

/* add backend P NAME ADDR [weight W] [group G]: PENDING until its checks pass. */
static void add_backend(struct ctl_req *r, int pi)
{
    struct rt_pool *p = &ctl.model->pools[pi];
    const struct cmd *c = &r->cmd;
    struct conf_addr addr;
    char err[200], after[400];
    uint32_t i;
    uint64_t gen;

    if (model_find_backend(p, c->backend) >= 0) {
        refuse(r, "backend %s already exists in pool %s", c->backend, p->name);
        return;
    }
    if (conf_parse_addr(c->addr, false, &addr, err, sizeof(err)) < 0) {
        refuse(r, "bad address %s: %s", c->addr, err);
        return;
    }
    i = model_add_backend(ctl.model, pi, c->backend, &addr, c->weight < 0 ? 100 : c->weight,
                          c->group[0] ? c->group : "default");
    if (p->conf->has_health)
        health_watch(p->b[i].be, &p->conf->health);
    gen = control_publish();
    snprintf(after, sizeof(after),
             "{\"pool\":\"%s\",\"backend\":\"%s\",\"address\":\"%s\",\"weight\":%d,"
             "\"group\":\"%s\",\"state\":\"%s\"}",
             p->name, c->backend, addr.text, p->b[i].weight, p->g[p->b[i].group].name,
             backend_state_name(model_state(p, i)));
    audit_write("operator", &r->peer, r->line, "OK", gen, NULL, after);
    persist_sync_audit();
    control_save_state();
    log_info("backend %s/%s %s added (%s)", p->name, c->backend, addr.text,
             backend_state_name(model_state(p, i)));
    snprintf(err, sizeof(err), " state=%s", backend_state_name(model_state(p, i)));
    reply_change(r, gen, err);
}

/* del backend P NAME: only once DRAINED or in MAINT; the object lives on until unreachable. */
static void del_backend(struct ctl_req *r, int pi)
{
    struct rt_pool *p = &ctl.model->pools[pi];
    struct backend *be;
    enum backend_state st;
    char before[300];
    int bi = find_backend(r, p);
    uint64_t gen;

    if (bi < 0)
        return;
    st = model_state(p, (uint32_t)bi);
    if (st != BE_DRAINED && st != BE_MAINT && !r->cmd.force) {
        refuse(r, "backend %s is %s: drain it (or set state maint) first", r->cmd.backend,
               backend_state_name(st));
        return;
    }
    snprintf(before, sizeof(before),
             "{\"pool\":\"%s\",\"backend\":\"%s\",\"address\":\"%s\",\"weight\":%d,"
             "\"state\":\"%s\"}",
             p->name, r->cmd.backend, p->b[bi].be->addr.text, p->b[bi].weight,
             backend_state_name(st));
    health_unwatch(p->b[bi].be);
    if (p->b[bi].cooldown)
        event_free(p->b[bi].cooldown);
    be = model_del_backend(ctl.model, pi, (uint32_t)bi);
    atomic_store(&be->draining, true);
    send_backends(WMSG_CLOSE_IDLE, &be, 1);
    wake_waiters(be, WAIT_READY, false);
    gen = control_publish();
    retire_backend(be);
    audit_write("operator", &r->peer, r->line, "OK", gen, before, NULL);
    persist_sync_audit();
    control_save_state();
    log_info("backend %s/%s deleted", p->name, r->cmd.backend);
    reply_change(r, gen, NULL);
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
    audit_write("operator", &j->r->peer, j->r->line, result, ctl.model->generation, NULL, NULL);
    persist_sync_audit();
    finish(j->r, result, ok);
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
            wait_backend(job_backend(j, j->new), WAIT_READY, j->timeout_ms, replace_ready, j);
        return;
    case RS_DRAIN:
        progress(j, "draining %s (%u in flight)", j->old, backend_active(job_backend(j, j->old)));
        if (backend_is(j, j->old, BE_DRAINED))
            replace_drained(&(struct waiter){.arg = j, .be = NULL, .start_us = veer_now_us()},
                            true);
        else
            wait_backend(job_backend(j, j->old), WAIT_DRAINED, j->timeout_ms, replace_drained, j);
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
static void replace_start(struct ctl_req *r)
{
    struct replace_job *j;
    const struct rt_pool *p;
    int pi = find_pool(r), bi;

    if (pi < 0)
        return;
    p = &ctl.model->pools[pi];
    if ((bi = find_backend(r, p)) < 0)
        return;
    if (model_find_backend(p, r->cmd.backend2) >= 0) {
        refuse(r, "backend %s already exists in pool %s", r->cmd.backend2, p->name);
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
    submit(j, RS_ADD, "add backend %s %s %s weight %d group %s", j->pool, j->new, j->addr,
           j->weight, j->group);
}

/* --- periodic work -------------------------------------------------------------------- */

/*
 * Every 100 ms: free snapshots and deleted backends nobody holds, and
 * catch a drain whose last request ended while a worker had not yet moved
 * to the snapshot without it (the normal path is the workers' report).
 */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    routing_reclaim();
    reclaim_backends();
    slow_start_tick();
    for (uint32_t i = 0; i < ctl.model->npools; i++) {
        struct rt_pool *p = &ctl.model->pools[i];

        for (uint32_t k = 0; k < p->nb; k++)
            if (p->b[k].admin == ADMIN_DRAIN && !p->b[k].drained)
                check_drained(p, k);
    }
}

/* --- passive health: circuit breaker, and slow start ---------------------------------- */

/* Weight factor of a half-open backend: a trickle of trial requests. */
#define HALF_OPEN_FACTOR 0.1
/* Slow start begins at this fraction of the weight. */
#define SLOW_START_FLOOR 0.1

static void breaker_set(struct rt_pool *p, uint32_t i, enum breaker_state to, const char *why)
{
    struct rt_backend *b = &p->b[i];
    char line[200], before[64], after[64];
    enum breaker_state from = b->breaker;
    uint64_t gen;

    b->breaker = to;
    atomic_store(&b->be->breaker, (int)to);
    b->factor = to == BREAKER_HALF_OPEN ? HALF_OPEN_FACTOR : 1.0;
    b->trial_ok = 0;
    if (to == BREAKER_CLOSED && p->conf->slow_start_ms > 0)
        slow_start_begin(p, i);
    gen = control_publish();
    snprintf(line, sizeof(line), "breaker %s/%s", p->name, b->be->name);
    snprintf(before, sizeof(before), "{\"circuit\":\"%s\"}", breaker_state_name(from));
    snprintf(after, sizeof(after), "{\"circuit\":\"%s\"}", breaker_state_name(to));
    audit_write("breaker", NULL, line, "OK", gen, before, after);
    persist_sync_audit();
    log_write(to == BREAKER_OPEN ? LOG_WARN : LOG_INFO,
              "backend %s/%s circuit %s -> %s: %s (gen %llu)", p->name, b->be->name,
              breaker_state_name(from), breaker_state_name(to), why, (unsigned long long)gen);
}

static void cooldown_cb(evutil_socket_t fd, short what, void *arg)
{
    struct backend *be = arg;
    struct rt_pool *p;

    if (be->pool < 0)
        return;
    p = &ctl.model->pools[be->pool];
    if (p->b[be->index].breaker == BREAKER_OPEN)
        breaker_set(p, be->index, BREAKER_HALF_OPEN, "cooldown over, trial requests");
}

/*
 * Open the circuit: the backend leaves rotation for the cooldown. Never
 * more than max_ejection_percent of the pool's READY backends are ejected
 * at once, so a failure that hits every backend cannot empty the pool.
 */
static void breaker_trip(struct rt_pool *p, uint32_t i, const char *why)
{
    const struct conf_breaker *cb = &p->conf->breaker;
    struct rt_backend *b = &p->b[i];
    unsigned ready = 0, open = 0;
    struct timeval tv = {cb->cooldown_ms / 1000, (cb->cooldown_ms % 1000) * 1000};

    for (uint32_t k = 0; k < p->nb; k++) {
        if (p->b[k].health == HEALTH_READY && p->b[k].admin == ADMIN_READY)
            ready++;
        if (p->b[k].breaker == BREAKER_OPEN && k != i)
            open++;
    }
    if (b->breaker != BREAKER_HALF_OPEN &&
        (open + 1) * 100 > ready * (unsigned)cb->max_ejection_percent) {
        log_warn("backend %s/%s failing (%s) but not ejected: max_ejection_percent %d of %u "
                 "ready backends reached",
                 p->name, b->be->name, why, cb->max_ejection_percent, ready);
        return;
    }
    if (b->cooldown == NULL)
        b->cooldown = evtimer_new(ctl.base, cooldown_cb, b->be);
    evtimer_add(b->cooldown, &tv);
    breaker_set(p, i, BREAKER_OPEN, why);
}

static void breaker_event(struct backend *be, bool ok)
{
    struct rt_pool *p;
    struct rt_backend *b;
    char why[96];

    if (be->pool < 0)
        return;
    p = &ctl.model->pools[be->pool];
    b = &p->b[be->index];
    switch (b->breaker) {
    case BREAKER_CLOSED:
        if (!ok) {
            snprintf(why, sizeof(why), "%d consecutive failures", p->conf->breaker.failures);
            breaker_trip(p, be->index, why);
        }
        return;
    case BREAKER_HALF_OPEN:
        if (!ok)
            breaker_trip(p, be->index, "trial request failed");
        else if (++b->trial_ok >= (unsigned)p->conf->breaker.half_open_successes)
            breaker_set(p, be->index, BREAKER_CLOSED, "trial requests succeeded");
        return;
    case BREAKER_OPEN:
        return; /* reports of requests sent before it opened */
    }
}

/* A backend just admitted ramps its weight from 10% to 100% over slow_start_ms. */
static void slow_start_begin(struct rt_pool *p, uint32_t i)
{
    if (p->conf->slow_start_ms <= 0)
        return;
    p->b[i].factor = SLOW_START_FLOOR;
    p->b[i].ready_since_us = veer_now_us();
}

/* Move every ramping backend along; one publish for all of them. */
static void slow_start_tick(void)
{
    bool changed = false;
    uint64_t now = veer_now_us();

    for (uint32_t k = 0; k < ctl.model->npools; k++) {
        struct rt_pool *p = &ctl.model->pools[k];
        double span = (double)p->conf->slow_start_ms * 1000.0;

        if (p->conf->slow_start_ms <= 0)
            continue;
        for (uint32_t i = 0; i < p->nb; i++) {
            struct rt_backend *b = &p->b[i];
            double f;

            if (b->breaker != BREAKER_CLOSED || b->factor >= 1.0 || b->ready_since_us == 0)
                continue;
            f = SLOW_START_FLOOR +
                (1.0 - SLOW_START_FLOOR) * (double)(now - b->ready_since_us) / span;
            b->factor = f >= 1.0 ? 1.0 : f;
            changed = true;
        }
    }
    if (changed)
        control_publish();
}

/* --- reading ---------------------------------------------------------------------- */

/* Pad cells into aligned columns: rows of n cells each. */
static void table(struct sbuf *o, char **cells, unsigned rows, unsigned n)
{
    size_t w[16] = {0};

    for (unsigned r = 0; r < rows; r++)
        for (unsigned c = 0; c < n; c++)
            if (strlen(cells[r * n + c]) > w[c])
                w[c] = strlen(cells[r * n + c]);
    for (unsigned r = 0; r < rows; r++) {
        for (unsigned c = 0; c < n; c++) {
            if (c + 1 < n)
                sb_printf(o, "%-*s  ", (int)w[c], cells[r * n + c]);
            else
                sb_puts(o, cells[r * n + c]);
        }
        sb_puts(o, "\n");
    }
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, f);
    n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    s = veer_malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static const char *const pool_columns[] = {"pool",  "backend", "group", "state", "weight",
                                           "share", "active",  "conns", "gen"};

/* show pools: one row per backend, every pool. */
static void show_pools(struct ctl_req *r)
{
    unsigned rows = 1, n = ARRAY_SIZE(pool_columns), k = 0;
    char **cells;
    struct sbuf o;

    for (uint32_t i = 0; i < ctl.model->npools; i++)
        rows += ctl.model->pools[i].nb;
    cells = veer_calloc(rows * n, sizeof(*cells));
    for (unsigned c = 0; c < n; c++)
        cells[k++] = veer_strdup(pool_columns[c]);
    for (uint32_t i = 0; i < ctl.model->npools; i++) {
        const struct rt_pool *p = &ctl.model->pools[i];

        for (uint32_t j = 0; j < p->nb; j++) {
            const struct rt_backend *b = &p->b[j];

            cells[k++] = veer_strdup(p->name);
            cells[k++] = veer_strdup(b->be->name);
            cells[k++] = veer_strdup(p->g[b->group].name);
            cells[k++] = veer_strdup(backend_state_name(model_state(p, j)));
            cells[k++] = fmt("%d", b->weight);
            cells[k++] = fmt("%d", p->g[b->group].share);
            cells[k++] = fmt("%u", backend_active(b->be));
            cells[k++] = fmt("%u", backend_conns(b->be));
            cells[k++] = fmt("%llu", (unsigned long long)ctl.model->generation);
        }
    }
    sb_init(&o);
    table(&o, cells, rows, n);
    for (unsigned i = 0; i < rows * n; i++)
        free(cells[i]);
    free(cells);
    finish(r, o.s, true);
    sb_free(&o);
}

static void show_pool_json(const struct rt_pool *p, struct sbuf *o)
{
    sb_puts(o, "{\"pool\":");
    sb_json_str(o, p->name);
    sb_printf(o, ",\"generation\":%llu,\"balance\":", (unsigned long long)ctl.model->generation);
    sb_json_str(o, p->conf->balance == BALANCE_LEASTCONN ? "leastconn"
                   : p->conf->balance == BALANCE_P2C     ? "p2c"
                                                         : "swrr");
    sb_puts(o, ",\"groups\":[");
    for (uint32_t g = 0; g < p->ng; g++) {
        sb_puts(o, g ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, p->g[g].name);
        sb_printf(o, ",\"share\":%d}", p->g[g].share);
    }
    sb_puts(o, "],\"backends\":[");
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];

        sb_puts(o, i ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, b->be->name);
        sb_puts(o, ",\"address\":");
        sb_json_str(o, b->be->addr.text);
        sb_puts(o, ",\"group\":");
        sb_json_str(o, p->g[b->group].name);
        sb_printf(o,
                  ",\"state\":\"%s\",\"weight\":%d,\"effective_weight\":%.6g,\"active\":%u,"
                  "\"conns\":%u}",
                  backend_state_name(model_state(p, i)), b->weight, model_effective_weight(p, i),
                  backend_active(b->be), backend_conns(b->be));
    }
    sb_puts(o, "]}");
}

static void show_pool_text(const struct rt_pool *p, struct sbuf *o)
{
    static const char *const cols[] = {"backend",   "address", "group", "state",  "weight",
                                       "effective", "active",  "conns", "circuit"};
    unsigned n = ARRAY_SIZE(cols), rows = p->nb + 1, k = 0;
    char **cells = veer_calloc(rows * n, sizeof(*cells));

    sb_printf(o, "pool %s generation %llu balance %s\n", p->name,
              (unsigned long long)ctl.model->generation,
              p->conf->balance == BALANCE_LEASTCONN ? "leastconn"
              : p->conf->balance == BALANCE_P2C     ? "p2c"
                                                    : "swrr");
    for (uint32_t g = 0; g < p->ng; g++)
        sb_printf(o, "group %s share %d\n", p->g[g].name, p->g[g].share);
    for (unsigned c = 0; c < n; c++)
        cells[k++] = veer_strdup(cols[c]);
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];

        cells[k++] = veer_strdup(b->be->name);
        cells[k++] = veer_strdup(b->be->addr.text);
        cells[k++] = veer_strdup(p->g[b->group].name);
        cells[k++] = veer_strdup(backend_state_name(model_state(p, i)));
        cells[k++] = fmt("%d", b->weight);
        cells[k++] = fmt("%.6g", model_effective_weight(p, i));
        cells[k++] = fmt("%u", backend_active(b->be));
        cells[k++] = fmt("%u", backend_conns(b->be));
        cells[k++] = veer_strdup(breaker_state_name(b->breaker));
    }
    table(o, cells, rows, n);
    for (unsigned i = 0; i < rows * n; i++)
        free(cells[i]);
    free(cells);
}

static void show_pool(struct ctl_req *r)
{
    int pi = model_find_pool(ctl.model, r->cmd.pool);
    struct sbuf o;

    if (pi < 0) {
        finish(r, "ERR unknown pool", false);
        return;
    }
    sb_init(&o);
    if (r->cmd.json)
        show_pool_json(&ctl.model->pools[pi], &o);
    else
        show_pool_text(&ctl.model->pools[pi], &o);
    finish(r, o.s, true);
    sb_free(&o);
}

static void audit_verify_cmd(struct ctl_req *r)
{
    const char *path = r->cmd.file[0] ? r->cmd.file : ctl.conf->audit_log;
    char msg[512], line[600];
    int rc;

    if (path == NULL) {
        finish(r, "ERR no audit log configured (audit_log) and no FILE given", false);
        return;
    }
    rc = audit_verify(path, msg, sizeof(msg));
    snprintf(line, sizeof(line), "%s %s", rc == 0 ? "OK" : "ERR", msg);
    finish(r, line, rc == 0);
}

void control_execute(struct ctl_req *r)
{
    switch (r->cmd.kind) {
    case CMD_HELP:
        finish(r, cmd_help(), true);
        return;
    case CMD_SHOW_POOLS:
        show_pools(r);
        return;
    case CMD_SHOW_POOL:
        show_pool(r);
        return;
    case CMD_AUDIT_VERIFY:
        audit_verify_cmd(r);
        return;
    case CMD_REPLACE:
        replace_start(r);
        return;
    case CMD_SET_WEIGHT:
    case CMD_SET_STATE:
    case CMD_SHIFT:
    case CMD_SWAP:
    case CMD_ROLLBACK:
    case CMD_DRAIN:
    case CMD_ADD_BACKEND:
    case CMD_DEL_BACKEND:
    case CMD_MAINTENANCE:
        if (ctl.queue_tail)
            ctl.queue_tail->next = r;
        else
            ctl.queue_head = r;
        ctl.queue_tail = r;
        next_change();
        return;
    default:
        refuse(r, "%s is not available in this version", cmd_kind_name(r->cmd.kind));
        return;
    }
}

void control_cancel(struct ctl_req *r)
{
    r->done = NULL;
}

/* --- set-up ------------------------------------------------------------------------- */

int control_init(struct event_base *base, const struct veer_conf *conf, struct model *m,
                 struct worker **workers, unsigned nworkers)
{
    struct timeval tick_tv = {0, 100 * 1000};

    ctl.base = base;
    ctl.conf = conf;
    ctl.model = m;
    ctl.workers = workers;
    ctl.nworkers = nworkers;
    ctl.history = veer_calloc(m->npools ? m->npools : 1, sizeof(*ctl.history));
    pthread_mutex_init(&ctl.mq_lock, NULL);
    ctl.mq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctl.mq_fd < 0) {
        log_err("control: eventfd: %s", strerror(errno));
        return VEER_ERROR;
    }
    ctl.mq_ev = event_new(base, ctl.mq_fd, EV_READ | EV_PERSIST, mq_cb, NULL);
    event_add(ctl.mq_ev, NULL);
    ctl.tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    event_add(ctl.tick, &tick_tv);
    health_init(base, on_health);
    for (uint32_t i = 0; i < m->npools; i++)
        sync_draining(&m->pools[i]); /* drains restored from the state file */
    for (uint32_t i = 0; i < m->npools; i++)
        if (m->pools[i].conf->has_health)
            for (uint32_t k = 0; k < m->pools[i].nb; k++)
                health_watch(m->pools[i].b[k].be, &m->pools[i].conf->health);
    return VEER_OK;
}

void control_shutdown(void)
{
    health_shutdown();
    for (uint32_t i = 0; ctl.model && i < ctl.model->npools; i++)
        for (uint32_t k = 0; k < ctl.model->pools[i].nb; k++)
            if (ctl.model->pools[i].b[k].cooldown) {
                event_free(ctl.model->pools[i].b[k].cooldown);
                ctl.model->pools[i].b[k].cooldown = NULL;
            }
    if (ctl.tick)
        event_free(ctl.tick);
    ctl.tick = NULL;
    while (ctl.waiters)
        waiter_done(ctl.waiters, false);
    while (ctl.queue_head) {
        struct ctl_req *r = ctl.queue_head;

        ctl.queue_head = r->next;
        r->done = NULL;
        edit_free(r->edit);
        finish(r, "ERR shutting down", false);
    }
    ctl.queue_tail = NULL;
    if (ctl.busy) {
        ctl.busy->done = NULL;
        edit_free(ctl.busy->edit);
        finish(ctl.busy, "ERR shutting down", false);
        ctl.busy = NULL;
    }
    if (ctl.mq_ev)
        event_free(ctl.mq_ev);
    ctl.mq_ev = NULL;
    while (ctl.mq) {
        struct cmsg *m = ctl.mq;

        ctl.mq = m->next;
        free(m);
    }
    if (ctl.mq_fd >= 0)
        close(ctl.mq_fd);
    ctl.mq_fd = -1;
    if (ctl.history) {
        for (uint32_t i = 0; i < ctl.model->npools; i++)
            for (unsigned k = 0; k < ctl.history[i].n; k++)
                edit_free(ctl.history[i].e[k]);
        free(ctl.history);
        ctl.history = NULL;
    }
    pthread_mutex_destroy(&ctl.mq_lock);
    while (ctl.retired) {
        struct backend *be = ctl.retired;

        ctl.retired = be->retired_next;
        backend_destroy(be);
    }
}
