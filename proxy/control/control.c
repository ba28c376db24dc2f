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
#include "control-i.h"
#include "metrics.h"
#include "audit.h"
#include "cluster.h"
#include "discovery.h"
#include "health.h"
#include "rollout.h"
#include "sbuf.h"
#include "state.h"
#include "sdnotify.h"
#include "stats.h"
#include "tls.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

struct ctl_state ctl = {.reports = MAILBOX_INITIALIZER};

static void tick_cb(evutil_socket_t fd, short what, void *arg);
static void commit(struct ctl_req *r, bool async);

/* --- replies ---------------------------------------------------------------- */

/* Answer r (reply text without the final empty line) and let it go. */
void ctl_finish(struct ctl_req *r, const char *text, bool ok)
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

/*
 * Answer a change made outside the edit path (add, del, a rollout command):
 * OK gen=N applied_us=T, T from reading the command to the last snapshot
 * store, then extra.
 */
void ctl_reply_change(struct ctl_req *r, uint64_t gen, const char *extra)
{
    /* A change that stored no snapshot (rollout pause, resume) took no time to one. */
    uint64_t applied = ctl.last_store_us > r->t_read_us ? ctl.last_store_us - r->t_read_us : 0;
    char line[300];

    snprintf(line, sizeof(line), "OK gen=%llu applied_us=%llu%s", (unsigned long long)gen,
             (unsigned long long)applied, extra ? extra : "");
    ctl_finish(r, line, true);
}

/* Audit a refused command, unless an upgrade is handing the chain over (frozen). */
static void audit_refusal(struct ctl_req *r, const char *line)
{
    if (ctl.frozen)
        return;
    audit_write("operator", &r->peer, r->line, line, ctl.model->generation, NULL, NULL);
    persist_sync_audit();
    control_save_state(); /* the audit chain's last record is in it */
}

/* Refuse a change: audited, nothing touched. */
void ctl_refuse(struct ctl_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void ctl_refuse(struct ctl_req *r, const char *fmt, ...)
{
    char why[512], line[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(line, sizeof(line), "ERR %s", why);
    if (r->cmd.is_change && !ctl.frozen) {
        metrics_shift_refused();
        audit_refusal(r, line);
    }
    ctl_finish(r, line, false);
}

void control_refuse(struct ctl_req *r, const char *why)
{
    char line[600];

    /* Malformed commands are audited too: someone tried something. */
    snprintf(line, sizeof(line), "ERR %s", why);
    audit_refusal(r, line);
    ctl_finish(r, line, false);
}

int ctl_audit_change(struct ctl_req *r, uint64_t gen, const char *before_json,
                     const char *after_json)
{
    char line[300];

    if (audit_write("operator", &r->peer, r->line, "OK", gen, before_json, after_json) == 0) {
        persist_sync_audit();
        return 0;
    }
    metrics_shift_refused();
    snprintf(line, sizeof(line), "ERR audit log cannot be written (%s): nothing changed",
             audit_error());
    ctl_finish(r, line, false);
    return -1;
}

/* --- messages from workers ---------------------------------------------------- */

/* The report sink (any thread): reports wait in the mailbox for reports_cb. */
static void control_post(struct report *m, void *arg)
{
    mailbox_post(&ctl.reports, &m->node);
}

static void warm_done(uint64_t ticket)
{
    struct ctl_req *r = ctl.busy;

    if (r == NULL || r->ticket != ticket || r->warm_pending == 0)
        return; /* a late report for a change that already went out */
    if (--r->warm_pending == 0)
        commit(r, true);
}

/*
 * The workers' reports, in the order they were posted: a half-open
 * breaker's trials must be judged in the order they ended.
 */
static void reports_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mailbox_node *n = mailbox_take(&ctl.reports);

    while (n) {
        struct report *m = container_of(n, struct report, node);

        n = n->next;

        if (m->type == REPORT_WARM_DONE)
            warm_done(m->ticket);
        else if (ctl.frozen)
            ; /* upgrade: no breaker or drain decisions (the tick catches drains after a thaw) */
        else if (m->type == REPORT_BACKEND_IDLE)
            ctl_backend_idle(m->be);
        else if (m->type == REPORT_BREAKER)
            ctl_breaker_event(m->be, m->ticket != 0);
        if (m->be)
            backend_put(m->be);
        free(m);
    }
}

static void report_free(struct mailbox_node *n)
{
    free(container_of(n, struct report, node));
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
    return e->admin[i] == ADMIN_READY && !p->b[i].gone && p->b[i].health == HEALTH_READY &&
           e->weight[i] > 0 && e->share[p->b[i].group] > 0;
}

static bool group_has_capacity(const struct rt_pool *p, const struct pool_edit *e, uint32_t g)
{
    for (uint32_t i = 0; i < p->nb; i++)
        if (p->b[i].group == g && e->admin[i] == ADMIN_READY && !p->b[i].gone &&
            p->b[i].health == HEALTH_READY && e->weight[i] > 0)
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
/* READY backends (admitted, operator-ready) of group g, or of the pool with g = -1. */
static unsigned ready_count(const struct rt_pool *p, const struct pool_edit *e, int g)
{
    unsigned n = 0;

    for (uint32_t i = 0; i < p->nb; i++)
        if ((g < 0 || p->b[i].group == (uint32_t)g) && e->admin[i] == ADMIN_READY &&
            !p->b[i].gone && p->b[i].health == HEALTH_READY)
            n++;
    return n;
}

/*
 * The capacity guard: a group whose share grows may not take more than its
 * part of the pool's READY backends times capacity_headroom (a share equal
 * to the bound is allowed): 1 READY green of 4 with headroom 2 may take 50%.
 */
static int capacity_check(const struct rt_pool *p, const struct pool_edit *before,
                          const struct pool_edit *after, char *err, size_t len)
{
    unsigned total = ready_count(p, after, -1);
    double headroom = p->conf->capacity_headroom;

    for (uint32_t g = 0; g < after->ng && total; g++) {
        unsigned ready = ready_count(p, after, (int)g);
        double bound = (double)ready / (double)total * headroom * 100.0;

        if (after->share[g] <= before->share[g] || after->share[g] <= bound + 1e-9)
            continue;
        snprintf(err, len,
                 "group %s would get %d%% of pool %s with %u of its %u READY backends: at most "
                 "%.0f%% with capacity_headroom %g (--force to override)",
                 p->g[g].name, after->share[g], p->name, ready, total, bound, headroom);
        return -1;
    }
    return 0;
}

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
    return capacity_check(p, before, after, err, len);
}

/*
 * Write e's values into p. Backends are matched by id: membership may have
 * changed since e was taken (discovery, a reload's reap, while a change
 * waited for warm connections). Ids grow with creation and a pool keeps its
 * backends in creation order (additions append, removals close the gap), so
 * one walk over both lists pairs them; a backend e does not know keeps its
 * values, one p no longer has is skipped.
 */
static void edit_apply(struct rt_pool *p, const struct pool_edit *e)
{
    uint32_t i = 0;

    for (uint32_t g = 0; g < e->ng && g < p->ng; g++)
        p->g[g].share = e->share[g];
    for (uint32_t k = 0; k < e->nb; k++) {
        while (i < p->nb && p->b[i].be->id < e->id[k])
            i++;
        if (i == p->nb)
            break;
        if (p->b[i].be->id != e->id[k])
            continue;
        if (p->b[i].admin != e->admin[k])
            p->b[i].drained = false;
        if (p->b[i].admin != ADMIN_READY && e->admin[k] == ADMIN_READY &&
            p->b[i].health == HEALTH_READY)
            ctl_slow_start_begin(p, i);
        p->b[i].weight = e->weight[k];
        p->b[i].admin = e->admin[k];
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

static bool same_members(const struct pool_edit *e, const struct rt_pool *p)
{
    for (uint32_t i = 0; i < e->nb; i++)
        if (e->id[i] != p->b[i].be->id)
            return false;
    return true;
}

struct pool_edit *ctl_edit_save(int pi)
{
    return edit_of(pi);
}

void ctl_edit_free(struct pool_edit *e)
{
    edit_free(e);
}

void ctl_edit_restore(int pi, const struct pool_edit *e)
{
    edit_apply(&ctl.model->pools[pi], e); /* by id: what still matches */
}

/* "pre=g:share,...;prew=backend:weight:admin,..." (names, so it survives a restart). */
void ctl_edit_render(const struct pool_edit *e, struct sbuf *o)
{
    const struct rt_pool *p = &ctl.model->pools[e->pool];

    sb_puts(o, "pre=");
    for (uint32_t g = 0; g < e->ng && g < p->ng; g++)
        sb_printf(o, "%s%s:%d", g ? "," : "", p->g[g].name, e->share[g]);
    sb_puts(o, ";prew=");
    for (uint32_t k = 0, first = 1; k < e->nb; k++)
        for (uint32_t i = 0; i < p->nb; i++)
            if (p->b[i].be->id == e->id[k]) {
                sb_printf(o, "%s%s:%d:%s", first ? "" : ",", p->b[i].be->name, e->weight[k],
                          admin_state_name(e->admin[k]));
                first = 0;
            }
}

struct pool_edit *ctl_edit_parse(int pi, const char *text)
{
    struct rt_pool *p = &ctl.model->pools[pi];
    struct pool_edit *e = edit_of(pi);
    const char *w = strstr(text, ";prew=");
    char name[CMD_NAME_MAX], admin[16];
    int v, n;

    if (strncmp(text, "pre=", 4) != 0 || w == NULL) {
        edit_free(e);
        return NULL;
    }
    for (const char *s = text + 4; s < w; s += n + (s[n] == ',')) {
        int g;

        if (sscanf(s, "%63[^:]:%d%n", name, &v, &n) != 2) {
            edit_free(e);
            return NULL;
        }
        if ((g = model_find_group(p, name)) >= 0)
            e->share[g] = v;
    }
    for (const char *s = w + 6; *s; s += n + (s[n] == ',')) {
        int b;

        if (sscanf(s, "%63[^:]:%d:%15[a-z]%n", name, &v, admin, &n) != 3) {
            edit_free(e);
            return NULL;
        }
        if ((b = model_find_backend(p, name)) >= 0 && admin_state_parse(admin) >= 0) {
            e->weight[b] = v;
            e->admin[b] = (enum admin_state)admin_state_parse(admin);
        }
    }
    return e;
}

int ctl_check_shares(int pi, const int *shares, char *err, size_t len)
{
    struct pool_edit *before = edit_of(pi), *after = edit_dup(before);
    int rc;

    memcpy(after->share, shares, after->ng * sizeof(*shares));
    rc = edit_check(&ctl.model->pools[pi], before, after, err, len);
    edit_free(before);
    edit_free(after);
    return rc;
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
    h->seq = ++ctl.model->change_seq;
}

/* --- publishing ------------------------------------------------------------------ */

/* The group the override header and sticky cohorts treat as canary, per pool. */
static void set_canaries(void)
{
    for (uint32_t i = 0; i < ctl.model->npools; i++) {
        int c = rollout_canary((int)i);

        ctl.model->pools[i].canary = c >= 0 ? c : ctl.model->pools[i].ng == 2 ? 1 : -1;
    }
}

uint64_t control_publish(void)
{
    set_canaries();
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

        ctl_send_backends(WMSG_ABORT_BACKEND, &be, 1);
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
    ctl_wait_backend(p->b[bi].be, WAIT_DRAINED, t, ctl_drain_wait_cb, r);
}

/*
 * Write the edit into the model and publish: the reply is sent only after
 * the snapshot store, so a request parsed after the OK sees the change.
 * After an asynchronous wait (warm-up), queued changes are started.
 */
/*
 * r's change is published (gen, applied_us from reading the command to the
 * snapshot store): audit it, keep `before` for rollback, and answer (after
 * the drain for drain --wait). extra follows applied_us on the OK line.
 */
static void change_done(struct ctl_req *r, struct pool_edit *before, uint64_t gen,
                        uint64_t applied_us, const char *extra, bool audited)
{
    struct rt_pool *p = &ctl.model->pools[r->edit->pool];
    struct sbuf jb, ja, reply;

    metrics_shift_applied(applied_us);
    sb_init(&jb);
    sb_init(&ja);
    sb_init(&reply);
    edit_diff(p, before, r->edit, &jb, &ja);
    sb_printf(&reply, "OK gen=%llu applied_us=%llu%s", (unsigned long long)gen,
              (unsigned long long)applied_us, extra ? extra : "");
    if (r->cmd.kind == CMD_DRAIN)
        drain_reply(r, p, &reply);
    if (!audited) {
        audit_write("operator", &r->peer, r->line, "OK", gen, jb.s, ja.s);
        persist_sync_audit();
    }
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
        ctl_finish(r, reply.s, true);
    sb_free(&reply);
}

/*
 * The change is audited first, then applied and published: a change the
 * audit log cannot take is refused with the model untouched (no rollback
 * needed, nothing was published).
 */
static void commit(struct ctl_req *r, bool async)
{
    struct rt_pool *p = &ctl.model->pools[r->edit->pool];
    struct pool_edit *before = edit_of(r->edit->pool);
    struct pool_edit *edit = r->edit;
    bool rollback = r->cmd.kind == CMD_ROLLBACK;
    uint64_t gen, warm_us = 0;
    char extra[64] = "";
    struct sbuf jb, ja;
    int rc;

    if (r->warm_timer) {
        event_free(r->warm_timer);
        r->warm_timer = NULL;
    }
    if (r->warm_checked)
        warm_us = veer_now_us() - r->t_warm_us;
    sb_init(&jb);
    sb_init(&ja);
    edit_diff(p, before, r->edit, &jb, &ja);
    if (ctl.busy == r)
        ctl.busy = NULL;
    rc = ctl_audit_change(r, ctl.model->generation + 1, jb.s, ja.s);
    sb_free(&jb);
    sb_free(&ja);
    if (rc < 0) {
        /* r was answered and freed; a rollback's undo goes back for the next one. */
        if (rollback)
            history_push(before->pool, edit);
        else
            edit_free(edit);
        edit_free(before);
        if (async)
            next_change();
        return;
    }
    ctl.busy = r;
    edit_apply(p, r->edit);
    gen = control_publish();
    ctl_sync_draining(p);
    if (r->warm_checked)
        snprintf(extra, sizeof(extra), " warm_us=%llu", (unsigned long long)warm_us);
    change_done(r, before, gen, ctl.last_store_us - r->t_read_us - warm_us, extra, true);
    if (async)
        next_change();
}

void ctl_cluster_committed(struct ctl_req *r, uint64_t gen, uint64_t applied_us, const char *extra)
{
    struct pool_edit *before = r->before;

    r->before = NULL;
    change_done(r, before, gen, applied_us, extra, false);
    next_change();
}

void ctl_cluster_refused(struct ctl_req *r, const char *why)
{
    edit_free(r->edit);
    edit_free(r->before);
    r->edit = r->before = NULL;
    if (ctl.busy == r)
        ctl.busy = NULL;
    ctl_refuse(r, "%s", why);
    next_change();
}

void ctl_next_change(void)
{
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
            if (atomic_load_explicit(&list[k]->ws[w].conns, memory_order_relaxed) < WARM_CONNS) {
                backend_hold(list[k]); /* dropped by wmsg_free once the worker is done */
                m->be[m->n++] = list[k];
            }
        if (m->n == 0) {
            wmsg_free(m);
            continue;
        }
        if (r->ticket == 0)
            r->ticket = ++ctl.next_ticket;
        m->type = WMSG_WARM;
        m->ticket = r->ticket;
        m->pool = r->edit->pool;
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

int ctl_find_pool(struct ctl_req *r)
{
    int pi = model_find_pool(ctl.model, r->cmd.pool);

    /* A pool a reload removed keeps its index until reused, but is no one's to edit. */
    if (pi < 0 || ctl.model->pools[pi].removed) {
        ctl_refuse(r, "unknown pool %s", r->cmd.pool);
        return -1;
    }
    return pi;
}

int ctl_find_backend(struct ctl_req *r, const struct rt_pool *p)
{
    int bi = model_find_backend(p, r->cmd.backend);

    if (bi < 0)
        ctl_refuse(r, "unknown backend %s in pool %s", r->cmd.backend, p->name);
    return bi;
}

/* Edit the copy as the command says; -1 when refused (r answered). */
static int edit_by_command(struct ctl_req *r, const struct rt_pool *p, struct pool_edit *e)
{
    const struct cmd *c = &r->cmd;
    int bi, gi;

    switch (c->kind) {
    case CMD_SET_WEIGHT:
        if ((bi = ctl_find_backend(r, p)) < 0)
            return -1;
        e->weight[bi] = c->weight;
        return 0;
    case CMD_SET_STATE:
        if ((bi = ctl_find_backend(r, p)) < 0)
            return -1;
        e->admin[bi] = c->state == CMD_STATE_READY   ? ADMIN_READY
                       : c->state == CMD_STATE_DRAIN ? ADMIN_DRAIN
                                                     : ADMIN_MAINT;
        return 0;
    case CMD_DRAIN:
        if ((bi = ctl_find_backend(r, p)) < 0)
            return -1;
        e->admin[bi] = ADMIN_DRAIN;
        return 0;
    case CMD_SHIFT:
        for (int k = 0; k < c->nshares; k++) {
            if ((gi = model_find_group(p, c->shares[k].group)) < 0) {
                ctl_refuse(r, "unknown group %s in pool %s", c->shares[k].group, p->name);
                return -1;
            }
            e->share[gi] = c->shares[k].share;
        }
        return 0;
    case CMD_SWAP: {
        int t;

        if (p->ng != 2) {
            ctl_refuse(r, "swap needs exactly two groups; pool %s has %u", p->name, p->ng);
            return -1;
        }
        t = e->share[0];
        e->share[0] = e->share[1];
        e->share[1] = t;
        return 0;
    }
    default:
        ctl_refuse(r, "not a change");
        return -1;
    }
}

/*
 * src's values over dst, which describes the pool as it is now: shares of
 * the groups src knows, and the weights and admin states of the backends
 * both have, matched by id in one walk (ids grow along a pool's list, see
 * edit_apply). Backends src does not know keep dst's values.
 */
static void edit_overlay(struct pool_edit *dst, const struct pool_edit *src)
{
    uint32_t i = 0;

    for (uint32_t g = 0; g < src->ng && g < dst->ng; g++)
        dst->share[g] = src->share[g];
    for (uint32_t k = 0; k < src->nb; k++) {
        while (i < dst->nb && dst->id[i] < src->id[k])
            i++;
        if (i == dst->nb)
            break;
        if (dst->id[i] != src->id[k])
            continue;
        dst->weight[i] = src->weight[k];
        dst->admin[i] = src->admin[k];
    }
}

/*
 * Take the pool's previous operator change off the history, as the new
 * values. When DNS discovery added or removed backends since, the undo is
 * laid over the pool as it is now (the instances that came keep their
 * values); an operator's own membership change since (add, del, replace, a
 * reload) leaves no safe undo.
 */
static int edit_by_rollback(struct ctl_req *r, int pi, struct pool_edit **out)
{
    struct history *h = &ctl.history[pi];
    const struct rt_pool *p = &ctl.model->pools[pi];
    struct pool_edit *prev;

    if (h->n == 0) {
        ctl_refuse(r, "nothing to roll back in pool %s", p->name);
        return -1;
    }
    prev = h->e[h->n - 1];
    if (prev->ng == p->ng && prev->nb == p->nb && same_members(prev, p)) {
        *out = edit_dup(prev);
        return 0;
    }
    if (p->members_seq > h->seq || prev->ng > p->ng) {
        ctl_refuse(r, "pool %s changed membership since its previous change", p->name);
        return -1;
    }
    *out = edit_of(pi);
    edit_overlay(*out, prev);
    return 0;
}

/* maintenance on|off [P] [--retry-after S]: one publish; requests in flight finish. */
static void maintenance_apply(struct ctl_req *r);

static void maintenance_change(struct ctl_req *r)
{
    if (cluster_on()) {
        ctl.busy = r;
        cluster_propose_maintenance(r);
        return;
    }
    maintenance_apply(r);
}

/* maintenance on|off [POOL]: set it in the model, publish, answer. */
static void maintenance_apply(struct ctl_req *r)
{
    const struct cmd *c = &r->cmd;
    int pi = -1, retry = c->retry_after >= 0 ? c->retry_after : ctl.conf->maintenance.retry_after;
    bool *flag = &ctl.model->maint;
    int *ra = &ctl.model->maint_retry_after;
    int64_t *hold = &ctl.model->maint_hold_ms;
    char before[128], after[128];
    uint64_t gen;

    if (c->pool[0]) {
        if ((pi = ctl_find_pool(r)) < 0)
            return;
        flag = &ctl.model->pools[pi].maint;
        ra = &ctl.model->pools[pi].maint_retry_after;
        hold = &ctl.model->pools[pi].maint_hold_ms;
    }
    snprintf(before, sizeof(before), "{\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             pi >= 0 ? ctl.model->pools[pi].name : "*", *flag ? "true" : "false", *ra);
    snprintf(after, sizeof(after), "{\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             pi >= 0 ? ctl.model->pools[pi].name : "*", c->on ? "true" : "false",
             c->on ? retry : 0);
    if (ctl_audit_change(r, ctl.model->generation + 1, before, after) < 0)
        return;
    *flag = c->on;
    *ra = c->on ? retry : 0;
    *hold = c->on && c->hold_ms > 0 ? c->hold_ms : 0;
    gen = control_publish();
    control_save_state();
    log_info("maintenance %s for %s (gen %llu)", c->on ? "on" : "off",
             pi >= 0 ? ctl.model->pools[pi].name : "every pool", (unsigned long long)gen);
    ctl_reply_change(r, gen, NULL);
}

/*
 * Whether a rollback names a route: "rollback route R", or "rollback NAME"
 * where NAME is a route and not a pool, or both and the route changed last.
 * *ri is the route; -1 with r refused when "route R" names none.
 */
static bool rollback_of_route(struct ctl_req *r, int *ri)
{
    int pi;

    if (r->cmd.route[0]) {
        if ((*ri = model_find_route(ctl.model, r->cmd.route)) < 0)
            ctl_refuse(r, "unknown route %s", r->cmd.route);
        return true;
    }
    if ((*ri = model_find_route(ctl.model, r->cmd.pool)) < 0)
        return false;
    pi = model_find_pool(ctl.model, r->cmd.pool);
    return pi < 0 || ctl.model->routes[*ri].history_seq > ctl.history[pi].seq;
}

static void start_change(struct ctl_req *r)
{
    int pi;

    switch (r->cmd.kind) {
    case CMD_MAINTENANCE:
        return maintenance_change(r);
    case CMD_ROUTE_MAINT:
        return ctl_route_maintenance(r);
    case CMD_ROUTE_SET:
        return ctl_route_set(r);
    case CMD_MIRROR:
        return ctl_mirror(r);
    case CMD_ROLLBACK:
        if (rollback_of_route(r, &pi)) {
            if (pi >= 0)
                ctl_route_rollback(r, pi);
            return;
        }
        break;
    default:
        break;
    }
    pi = ctl_find_pool(r);
    struct pool_edit *before, *after = NULL;
    char err[300];
    const struct rt_pool *p;

    if (pi < 0)
        return;
    if (r->cmd.kind == CMD_ADD_BACKEND)
        return ctl_add_backend(r, pi);
    if (r->cmd.kind == CMD_DEL_BACKEND)
        return ctl_del_backend(r, pi);
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
        ctl_refuse(r, "%s", err);
        goto refused;
    }
    if (r->cmd.kind == CMD_ROLLBACK) {
        struct history *h = &ctl.history[pi];

        edit_free(h->e[--h->n]);
    }
    r->edit = after;
    ctl.busy = r;
    if (cluster_on()) {
        /* The fleet's intent lives in etcd: every instance (this one too) applies it from there. */
        r->before = before;
        cluster_propose(r);
        return;
    }
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

/* --- periodic work -------------------------------------------------------------------- */

/*
 * Every 100 ms: free snapshots and deleted backends nobody holds, and
 * catch a drain whose last request ended while a worker had not yet moved
 * to the snapshot without it (the normal path is the workers' report).
 */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    static unsigned ticks;

    if (!ctl.frozen)
        rollout_tick();
    if (++ticks % 10 == 0)
        stats_tick(ctl.model, ctl.nworkers); /* once a second */
    if (ticks % (TLS_TICKET_ROTATE_S * 10) == 0)
        tls_rotate_ticket_keys();
    routing_reclaim();
    ctl_reclaim_backends();
    ctl_reclaim_confs();
    ctl_slow_start_tick();
    if (!ctl.frozen)
        ctl_sweep_drained_all();
}

void control_set_show(void (*fn)(struct ctl_req *r))
{
    ctl.show = fn;
}

struct model *control_model(void)
{
    return ctl.model;
}

struct event_base *control_base(void)
{
    return ctl.base;
}

void control_answer(struct ctl_req *r, const char *text, bool ok)
{
    ctl_finish(r, text, ok);
}

/* --- commands ------------------------------------------------------------------------ */

void control_execute(struct ctl_req *r)
{
    if (ctl.frozen && r->cmd.is_change) {
        /* The upgrade handoff: nothing is applied, so nothing is audited either. */
        ctl_finish(r, "ERR upgrading, retry", false);
        return;
    }
    switch (r->cmd.kind) {
    case CMD_HELP:
        ctl_finish(r, cmd_help(), true);
        return;
    case CMD_SHOW_POOLS:
    case CMD_SHOW_POOL:
    case CMD_SHOW_STATS:
    case CMD_SHOW_ROUTES:
    case CMD_SHOW_DISCOVERY:
    case CMD_MIRROR_REPORT:
    case CMD_ROUTE_EXPLAIN:
        if (ctl.show)
            ctl.show(r);
        else
            ctl_finish(r, "ERR show commands are not available", false);
        return;
    case CMD_SHOW_CLUSTER:
        cluster_show(r);
        return;
    case CMD_AUDIT_VERIFY:
        ctl_audit_verify(r);
        return;
    case CMD_REPLACE:
        ctl_replace_start(r);
        return;
    case CMD_ROLLOUT_START:
    case CMD_ROLLOUT_STATUS:
    case CMD_ROLLOUT_PAUSE:
    case CMD_ROLLOUT_RESUME:
    case CMD_ROLLOUT_ABORT:
        rollout_command(r);
        return;
    case CMD_UPGRADE: {
        char msg[600], line[700];
        int rc = ctl.upgrade ? ctl.upgrade(&r->peer, r->line, msg, sizeof(msg)) : VEER_ERROR;

        if (ctl.upgrade == NULL)
            snprintf(msg, sizeof(msg), "upgrade is not available");
        snprintf(line, sizeof(line), "%s %s", rc == VEER_OK ? "OK" : "ERR", msg);
        /* Started: control_freeze audited it before the state was handed over. */
        if (rc != VEER_OK)
            audit_write("operator", &r->peer, r->line, line, ctl.model->generation, NULL, NULL);
        ctl_finish(r, line, rc == VEER_OK);
        return;
    }
    case CMD_RELOAD: {
        char msg[1200], line[1300];
        int rc;

        sd_notify_send("RELOADING=1");
        rc = ctl_reload(&r->peer, msg, sizeof(msg));
        sd_notify_send("READY=1");
        snprintf(line, sizeof(line), "%s %s", rc == VEER_OK ? "OK" : "ERR", msg);
        ctl_finish(r, line, rc == VEER_OK);
        return;
    }
    case CMD_SET_WEIGHT:
    case CMD_SET_STATE:
    case CMD_SHIFT:
    case CMD_SWAP:
    case CMD_ROLLBACK:
    case CMD_DRAIN:
    case CMD_ADD_BACKEND:
    case CMD_DEL_BACKEND:
    case CMD_MAINTENANCE:
    case CMD_ROUTE_MAINT:
    case CMD_ROUTE_SET:
    case CMD_MIRROR:
        if (ctl.queue_tail)
            ctl.queue_tail->next = r;
        else
            ctl.queue_head = r;
        ctl.queue_tail = r;
        next_change();
        return;
    default:
        ctl_refuse(r, "%s is not available in this version", cmd_kind_name(r->cmd.kind));
        return;
    }
}

void control_cancel(struct ctl_req *r)
{
    r->done = NULL;
}

void control_reload_signal(void)
{
    char msg[1200];

    if (ctl.frozen) {
        log_warn("SIGHUP ignored: an upgrade is handing over (reload the new process)");
        return;
    }
    sd_notify_send("RELOADING=1");
    ctl_reload(NULL, msg, sizeof(msg));
    sd_notify_send("READY=1");
}

void control_set_upgrade(int (*fn)(const struct audit_peer *peer, const char *line, char *msg,
                                   size_t len))
{
    ctl.upgrade = fn;
}

/* How long freezing waits for the state file and the audit fsync. */
#define FREEZE_FLUSH_MS 5000

static void hold_writes(bool held)
{
    ctl.frozen = held;
    audit_hold(held);
    persist_hold(held);
}

int control_freeze(const struct audit_peer *peer, const char *line, char *msg, size_t len)
{
    if (ctl.frozen) {
        snprintf(msg, len, "an upgrade is already under way");
        return VEER_ERROR;
    }
    if (ctl.replacing) {
        snprintf(msg, len, "a replace is under way; upgrade when it has ended");
        return VEER_ERROR;
    }
    if (ctl.busy && cluster_on()) {
        snprintf(msg, len, "a change is waiting for the fleet; retry");
        return VEER_ERROR;
    }
    rollout_stop_preflights("upgrading");
    if (ctl.busy) {
        /* Waiting for warm connections: publish it now rather than lose it. */
        ctl.busy->warm_pending = 0;
        commit(ctl.busy, false);
    }
    while (ctl.queue_head) {
        struct ctl_req *r = ctl.queue_head;

        ctl.queue_head = r->next;
        ctl_finish(r, "ERR upgrading, retry", false);
    }
    ctl.queue_tail = NULL;
    if (line)
        audit_write("operator", peer, line, "OK", ctl.model->generation, NULL, NULL);
    control_save_state();
    if (persist_flush(FREEZE_FLUSH_MS) < 0) {
        snprintf(msg, len, "the state file or the audit log could not be written (see the log)");
        return VEER_ERROR;
    }
    hold_writes(true);
    log_info("upgrade: control plane frozen at generation %llu; state file and audit log "
             "flushed for the new process",
             (unsigned long long)ctl.model->generation);
    return VEER_OK;
}

void control_thaw(const char *why)
{
    char result[600];

    if (!ctl.frozen || ctl.handed_over)
        return;
    hold_writes(false);
    if (why == NULL) {
        log_info("upgrade: the old process handed over; this one takes decisions now");
        return;
    }
    snprintf(result, sizeof(result), "ERR %s", why);
    audit_write("upgrade", NULL, "upgrade abandoned", result, ctl.model->generation, NULL, NULL);
    persist_sync_audit();
    log_warn("upgrade abandoned (%s): this process takes decisions again", why);
}

void control_handed_over(void)
{
    ctl.handed_over = true;
    if (!ctl.frozen)
        hold_writes(true);
    health_shutdown();
}

void control_await_handoff(void)
{
    hold_writes(true);
}

bool control_owns_state(void)
{
    return !ctl.frozen;
}

const struct veer_conf *control_conf(void)
{
    return ctl.base ? ctl.conf : NULL;
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
    if (mailbox_init(&ctl.reports) < 0) {
        log_err("control: eventfd: %s", strerror(errno));
        return VEER_ERROR;
    }
    ctl.reports_ev =
        event_new(base, mailbox_fd(&ctl.reports), EV_READ | EV_PERSIST, reports_cb, NULL);
    event_add(ctl.reports_ev, NULL);
    report_bind(control_post, NULL);
    ctl.tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    event_add(ctl.tick, &tick_tv);
    health_init(base, ctl_on_health);
    ctl_sync_draining_all(); /* drains restored from the state file */
    for (uint32_t i = 0; i < m->npools; i++) {
        if (m->pools[i].rollout && rollout_restore((int)i, m->pools[i].rollout) < 0) {
            log_warn("state file: rollout of pool %s not restored (bad line)", m->pools[i].name);
            free(m->pools[i].rollout);
            m->pools[i].rollout = NULL;
        }
    }
    for (uint32_t i = 0; i < m->npools; i++)
        if (m->pools[i].conf->has_health)
            for (uint32_t k = 0; k < m->pools[i].nb; k++)
                health_watch(m->pools[i].b[k].be, m->pools[i].conf);
    /*
     * The first snapshot was built before the canaries (a restored rollout's
     * included) were known: the same generation again, with them.
     */
    set_canaries();
    routing_publish(routing_build(ctl.model));
    if (discovery_start(base, conf) < 0)
        return VEER_ERROR;
    return VEER_OK;
}

void control_shutdown(void)
{
    report_bind(NULL, NULL);
    ctl_audit_verify_shutdown();
    discovery_stop();
    health_shutdown();
    rollout_shutdown();
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
        ctl_waiter_done(ctl.waiters, false);
    while (ctl.queue_head) {
        struct ctl_req *r = ctl.queue_head;

        ctl.queue_head = r->next;
        r->done = NULL;
        edit_free(r->edit);
        ctl_finish(r, "ERR shutting down", false);
    }
    ctl.queue_tail = NULL;
    if (ctl.busy) {
        ctl.busy->done = NULL;
        edit_free(ctl.busy->edit);
        ctl_finish(ctl.busy, "ERR shutting down", false);
        ctl.busy = NULL;
    }
    if (ctl.reports_ev)
        event_free(ctl.reports_ev);
    ctl.reports_ev = NULL;
    mailbox_free(&ctl.reports, report_free);
    if (ctl.history) {
        for (uint32_t i = 0; i < ctl.model->npools; i++)
            for (unsigned k = 0; k < ctl.history[i].n; k++)
                edit_free(ctl.history[i].e[k]);
        free(ctl.history);
        ctl.history = NULL;
    }
    while (ctl.retired) {
        struct backend *be = ctl.retired;

        ctl.retired = be->retired_next;
        backend_destroy(be);
    }
    ctl_free_old_confs();
}
