/*
 * rollout.c - canary rollouts with built-in analysis and automatic rollback.
 *
 * A rollout moves a pool's canary group through steps of share (the stable
 * group gets the rest), each step one atomic shift. Every 100 ms the
 * canary's own requests over a sliding window (the last 10 s, or the step
 * interval when shorter) are judged against max-error-rate and max-p99
 * once min-requests of them are in the window; a breach rolls the pool back
 * at once to its pre-rollout shares, weights and admin states, in one
 * publish, audited with the figures. The step timer only moves forward;
 * reacting does not wait for the end of a step. A rollout lives in the
 * state file, so it survives a reload and a restart.
 */
#include "control-i.h"
#include "audit.h"
#include "cluster.h"
#include "metrics.h"
#include "mirrorstat.h"
#include "preflight.h"
#include "rollout.h"
#include "sbuf.h"
#include "state.h"
#include "stats.h"
#include "veer.h"

#include <stdio.h>
#include <string.h>

#define SLOT_US    100000 /* one analysis slot: 100 ms */
#define WINDOW_MAX 100    /* slots: 10 s */

struct slot {
    uint64_t req, err;
    uint64_t b[LAT_BUCKETS + 1];
};

/* Figures of one group, over the window. */
struct gwin {
    struct slot ring[WINDOW_MAX];
    uint64_t last_req, last_err, last_b[LAT_BUCKETS + 1];
    bool primed;
};

struct rollout {
    bool active, paused;
    int pool;
    uint32_t canary, stable;
    int steps[CMD_MAX_STEPS];
    int nsteps, step;
    int64_t interval_ms;
    double max_error_rate; /* percent */
    int64_t max_p99_ms;
    int min_requests;
    uint64_t step_start_us;
    struct pool_edit *pre; /* what a rollback restores */
    struct event *timer;
    struct gwin win[2]; /* canary, stable */
    unsigned pos, window;
    char verdict[256];
    struct audit_peer peer;
    /* preflight=NAME: run before step 1; the operator's command waits for it. */
    struct preflight *pf_run; /* under way, else NULL */
    struct ctl_req *pf_req;
    char pf_name[CMD_NAME_MAX];
    char pf_result[1100]; /* "" when the rollout had none */
    double pf_ms;
    /* shadow=T: after the preflight, before step 1, the canary takes mirrored requests only. */
    int64_t sh_ms;                /* 0: no shadow phase */
    double sh_percent;            /* of the pool's requests mirrored */
    double max_diff_rate;         /* percent of the mirrored requests */
    bool sh_run;                  /* under way */
    struct mirror_totals sh_base; /* the pool's mirror figures when it began */
    uint64_t sh_start_us;
    struct event *sh_timer;
    char sh_result[400]; /* "" when the rollout had none */
};

static struct rollout *ro[METRIC_POOLS];

/* --- figures ------------------------------------------------------------------------ */

/* This group's totals now (all its backends, every worker). */
static void group_totals(const struct rt_pool *p, uint32_t g, uint64_t *req, uint64_t *err,
                         uint64_t *b)
{
    *req = *err = 0;
    memset(b, 0, sizeof(uint64_t) * (LAT_BUCKETS + 1));
    for (uint32_t i = 0; i < p->nb; i++) {
        if (p->b[i].group != g)
            continue;
        for (unsigned w = 0; w < ctl.nworkers; w++) {
            struct backend_wstat *ws = &p->b[i].be->ws[w];
            uint64_t r[5] = {0};

            backend_wstat_requests(ws, r, b);
            for (unsigned c = 0; c < 5; c++)
                *req += r[c];
            *err += backend_wstat_failures(ws);
        }
    }
}

/* Push this slot's deltas for group g into its ring. */
static void win_push(struct rollout *r, const struct rt_pool *p, unsigned which, uint32_t g)
{
    struct gwin *gw = &r->win[which];
    struct slot *s = &gw->ring[r->pos];
    uint64_t req, err, b[LAT_BUCKETS + 1];

    group_totals(p, g, &req, &err, b);
    if (!gw->primed) {
        gw->last_req = req;
        gw->last_err = err;
        memcpy(gw->last_b, b, sizeof(b));
        gw->primed = true;
    }
    s->req = req - gw->last_req;
    s->err = err - gw->last_err;
    for (unsigned k = 0; k <= LAT_BUCKETS; k++)
        s->b[k] = b[k] - gw->last_b[k];
    gw->last_req = req;
    gw->last_err = err;
    memcpy(gw->last_b, b, sizeof(b));
}

static void win_sum(const struct rollout *r, unsigned which, struct slot *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < r->window; i++) {
        const struct slot *s = &r->win[which].ring[i];

        out->req += s->req;
        out->err += s->err;
        for (unsigned k = 0; k <= LAT_BUCKETS; k++)
            out->b[k] += s->b[k];
    }
}

static void win_reset(struct rollout *r)
{
    for (unsigned w = 0; w < 2; w++) {
        memset(r->win[w].ring, 0, sizeof(r->win[w].ring));
        r->win[w].primed = false;
    }
    r->pos = 0;
}

/* --- steps and rollback ----------------------------------------------------------------- */

static void step_timer_cb(evutil_socket_t fd, short what, void *arg);

static void arm(struct rollout *r, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    if (r->timer == NULL)
        r->timer = evtimer_new(ctl.base, step_timer_cb, r);
    evtimer_add(r->timer, &tv);
}

static void ro_free(struct rollout *r)
{
    if (r->pf_run)
        preflight_cancel(r->pf_run);
    if (r->timer)
        event_free(r->timer);
    if (r->sh_timer)
        event_free(r->sh_timer);
    ctl_edit_free(r->pre);
    free(r);
}

/* Keep the pool's rollout line for the state file in step with the rollout. */
static void sync_text(struct rollout *r)
{
    struct rt_pool *p = &ctl.model->pools[r->pool];

    free(p->rollout);
    p->rollout = rollout_render(r->pool);
}

/* Shares of the pool with the canary at pct and the stable group the rest: one publish. */
static int apply_share(struct rollout *r, int pct, bool check, char *err, size_t len)
{
    struct rt_pool *p = &ctl.model->pools[r->pool];
    int before[2] = {p->g[r->canary].share, p->g[r->stable].share};
    char line[200], jb[200], ja[200];
    uint64_t gen;

    if (check) {
        int shares[2];

        shares[r->canary] = pct;
        shares[r->stable] = 100 - pct;
        if (ctl_check_shares(r->pool, shares, err, len) < 0)
            return -1;
    }
    p->g[r->canary].share = pct;
    p->g[r->stable].share = 100 - pct;
    gen = control_publish();
    snprintf(line, sizeof(line), "rollout %s step %d/%d: %s=%d %s=%d", p->name, r->step + 1,
             r->nsteps, p->g[r->canary].name, pct, p->g[r->stable].name, 100 - pct);
    snprintf(jb, sizeof(jb), "{\"pool\":\"%s\",\"shares\":{\"%s\":%d,\"%s\":%d}}", p->name,
             p->g[r->canary].name, before[0], p->g[r->stable].name, before[1]);
    snprintf(ja, sizeof(ja), "{\"pool\":\"%s\",\"shares\":{\"%s\":%d,\"%s\":%d}}", p->name,
             p->g[r->canary].name, pct, p->g[r->stable].name, 100 - pct);
    audit_write("rollout", &r->peer, line, "OK", gen, jb, ja);
    persist_sync_audit();
    log_info("%s (gen %llu)", line, (unsigned long long)gen);
    cluster_push_pool(r->pool);
    return 0;
}

/* End the rollout: put back what it changed (one publish), say why. */
static void rollback(struct rollout *r, const char *why)
{
    struct rt_pool *p = &ctl.model->pools[r->pool];
    char line[400];
    uint64_t gen;

    r->active = false; /* before the publish: the snapshot no longer names its canary */
    ctl_edit_restore(r->pool, r->pre);
    gen = control_publish();
    ctl_sync_draining(p); /* as after any change of admin states (commit) */
    cluster_push_pool(r->pool);
    snprintf(r->verdict, sizeof(r->verdict), "rolled back: %s", why);
    snprintf(line, sizeof(line), "rollout %s rolled back: %s", p->name, why);
    audit_write("rollout", &r->peer, line, "OK", gen, NULL, NULL);
    persist_sync_audit();
    log_warn("%s (gen %llu)", line, (unsigned long long)gen);
    if (r->timer)
        evtimer_del(r->timer);
    sync_text(r);
    control_save_state();
}

/* A move the shift checks refused (capacity guard): paused, in the state file too. */
static void pause_refused(struct rollout *r, const char *what, const char *err)
{
    r->paused = true;
    snprintf(r->verdict, sizeof(r->verdict), "paused: %s refused: %.200s", what, err);
    log_warn("rollout %s %s", ctl.model->pools[r->pool].name, r->verdict);
    sync_text(r);
    control_save_state();
}

static void complete(struct rollout *r)
{
    struct rt_pool *p = &ctl.model->pools[r->pool];
    char err[300];

    /* The move to 100% after a last step below it is a step like the others: guarded. */
    if (p->g[r->canary].share != 100 && apply_share(r, 100, true, err, sizeof(err)) < 0) {
        pause_refused(r, "completion to 100%", err);
        return;
    }
    snprintf(r->verdict, sizeof(r->verdict), "complete: %s has 100%%", p->g[r->canary].name);
    log_info("rollout %s complete", p->name);
    audit_write("rollout", &r->peer, "rollout complete", "OK", ctl.model->generation, NULL, NULL);
    r->active = false;
    sync_text(r);
    control_save_state();
}

static void next_step(struct rollout *r)
{
    char err[300];

    if (r->step + 1 >= r->nsteps) {
        complete(r);
        return;
    }
    r->step++;
    if (apply_share(r, r->steps[r->step], true, err, sizeof(err)) < 0) {
        char what[32];

        r->step--;
        snprintf(what, sizeof(what), "step %d", r->step + 2);
        pause_refused(r, what, err);
        return;
    }
    r->step_start_us = veer_now_us();
    snprintf(r->verdict, sizeof(r->verdict), "running");
    arm(r, r->interval_ms);
    sync_text(r);
    control_save_state();
}

static void step_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rollout *r = arg;

    if (ctl.frozen) {
        /* Upgrade handoff: the step is due after a thaw; after a handover, the new process's. */
        if (!ctl.handed_over)
            arm(r, 100);
        return;
    }
    if (r->active && !r->paused)
        next_step(r);
}

/* Every 100 ms: the canary's window against the thresholds. */
void rollout_tick(void)
{
    for (unsigned k = 0; k < METRIC_POOLS; k++) {
        struct rollout *r = ro[k];
        struct rt_pool *p;
        struct slot c;
        char why[300];
        double rate, p99;

        if (r == NULL || !r->active || r->paused)
            continue;
        p = &ctl.model->pools[r->pool];
        win_push(r, p, 0, r->canary);
        win_push(r, p, 1, r->stable);
        r->pos = (r->pos + 1) % r->window;
        win_sum(r, 0, &c);
        if (c.req < (uint64_t)r->min_requests)
            continue;
        rate = 100.0 * (double)c.err / (double)c.req;
        p99 = stats_p99_ms(c.b);
        if (r->max_error_rate >= 0 && rate > r->max_error_rate) {
            snprintf(why, sizeof(why),
                     "%s error rate %.2f%% over %llu requests > max-error-rate %.2f%%",
                     p->g[r->canary].name, rate, (unsigned long long)c.req, r->max_error_rate);
            rollback(r, why);
        } else if (r->max_p99_ms >= 0 && p99 > (double)r->max_p99_ms) {
            snprintf(why, sizeof(why), "%s p99 %.1f ms over %llu requests > max-p99 %lld ms",
                     p->g[r->canary].name, p99, (unsigned long long)c.req,
                     (long long)r->max_p99_ms);
            rollback(r, why);
        }
    }
}

/*
 * A canary backend crossed its circuit breaker's threshold. That is the
 * canary failing, whether or not the breaker may eject it: once ejected it
 * takes no traffic, its window stays empty and the analysis would see no
 * errors while the steps went on. Roll back at once.
 */
void rollout_backend_failing(int pi, uint32_t i, const char *why)
{
    struct rollout *r = pi >= 0 && pi < METRIC_POOLS ? ro[pi] : NULL;
    struct rt_pool *p;
    char line[240];

    if (r == NULL || !r->active || r->paused || ctl.frozen)
        return;
    p = &ctl.model->pools[pi];
    if (i >= p->nb || p->b[i].group != r->canary)
        return;
    snprintf(line, sizeof(line), "%s backend %s circuit breaker: %s", p->g[r->canary].name,
             p->b[i].be->name, why);
    rollback(r, line);
}

/* --- commands -------------------------------------------------------------------------- */

static struct rollout *of_cmd(struct ctl_req *r, int *pi)
{
    *pi = ctl_find_pool(r);
    if (*pi < 0)
        return NULL;
    if (*pi >= METRIC_POOLS || ro[*pi] == NULL) {
        ctl_refuse(r, "no rollout in pool %s", r->cmd.pool);
        *pi = -1;
        return NULL;
    }
    return ro[*pi];
}

/*
 * Step 1: checked, then audited, then made; a start the audit log cannot
 * take changes nothing. After a preflight, `extra` reports it on the OK line.
 */
/* Step 1 was applied: its clock, its timer, the state file. */
static void first_step_started(struct rollout *r)
{
    r->step_start_us = veer_now_us();
    snprintf(r->verdict, sizeof(r->verdict), "running");
    arm(r, r->interval_ms);
    sync_text(r);
    control_save_state();
}

/*
 * Step 1's shares pass the shift checks, then the start is audited (for
 * the next generation); 0. Else r is freed and req refused: -1.
 */
static int start_checked(struct ctl_req *req, struct rollout *r)
{
    int pi = r->pool, shares[2];
    char err[300] = "";

    shares[r->canary] = r->steps[0];
    shares[r->stable] = 100 - r->steps[0];
    if (ctl_check_shares(pi, shares, err, sizeof(err)) < 0 ||
        ctl_audit_change(req, ctl.model->generation + 1, NULL, NULL) < 0) {
        ro_free(r);
        ro[pi] = NULL;
        if (err[0])
            ctl_refuse(req, "%s", err);
        return -1;
    }
    return 0;
}

static void begin(struct ctl_req *req, struct rollout *r, const char *extra)
{
    char err[300] = "", line[400];

    r->active = true;
    r->pre = ctl_edit_save(r->pool);
    r->step = 0;
    if (start_checked(req, r) < 0)
        return;
    apply_share(r, r->steps[0], false, err, sizeof(err));
    first_step_started(r);
    snprintf(line, sizeof(line), " step=1/%d share=%d%s", r->nsteps, r->steps[0], extra);
    ctl_reply_change(req, ctl.model->generation, line);
}

/* --- the shadow phase ------------------------------------------------------------------ */

/* The mirror figures of every site of pool p (each route's and the pool's own), summed. */
static void pool_mirror_totals(const struct rt_pool *p, struct mirror_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (struct mirror_site *s = mirror_sites_first(); s; s = s->next) {
        struct mirror_totals x;

        if (strcmp(s->pool, p->name) != 0)
            continue;
        mirror_site_sum(s, &x);
        mirror_totals_add(t, &x);
    }
}

/* Mirror the pool's requests to the canary (on) or stop (off): one publish. */
static uint64_t shadow_switch(struct rollout *r, bool on)
{
    struct rt_pool *p = &ctl.model->pools[r->pool];

    p->shadow_on = on;
    p->shadow_group = r->canary;
    p->shadow_percent = r->sh_percent;
    return control_publish();
}

/* End the phase (no traffic moved) for `why`: audited. */
static void shadow_stop(struct rollout *r, const char *verdict)
{
    struct rt_pool *p = &ctl.model->pools[r->pool];
    char line[600];
    uint64_t gen;

    r->sh_run = false;
    if (r->sh_timer)
        evtimer_del(r->sh_timer);
    gen = shadow_switch(r, false);
    snprintf(r->verdict, sizeof(r->verdict), "%s", verdict);
    snprintf(line, sizeof(line), "rollout %s %s", p->name, verdict);
    audit_write("rollout", &r->peer, line, "OK", gen, NULL, NULL);
    persist_sync_audit();
    log_warn("%s (gen %llu)", line, (unsigned long long)gen);
}

/*
 * The end of the shadow phase: the canary's answers to the mirrored
 * requests are judged. The diff rate, differences (status, body, compared
 * header) over the pairs both sides answered, over max-diff-rate, or the
 * shadow's p99 over max-p99 (a timeout or an error counts there as an
 * answer at timeout_ms: a canary that does not answer cannot pass), ends
 * the rollout before step 1; else step 1 begins.
 */
static void shadow_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rollout *r = arg;
    struct rt_pool *p = &ctl.model->pools[r->pool];
    struct mirror_totals now;
    uint64_t mirrored = 0, pairs = 0, diffs = 0, lat[LAT_BUCKETS + 1];
    double rate, p99;
    char why[300], err[300];

    (void)fd;
    (void)what;
    if (ctl.frozen) {
        if (!ctl.handed_over)
            event_add(r->sh_timer, &(struct timeval){0, 100000});
        return;
    }
    pool_mirror_totals(p, &now);
    for (unsigned c = 0; c < 5; c++)
        for (unsigned k = 0; k < MR_DROPPED; k++) {
            uint64_t d = now.n[c][k] - r->sh_base.n[c][k];

            mirrored += d;
            if (k <= MR_BODY_DIFF)
                pairs += d;
            if (k == MR_STATUS_DIFF || k == MR_BODY_DIFF)
                diffs += d;
        }
    /* A timeout or an error is in the shadow's latency at timeout_ms (mirror.c). */
    for (unsigned b = 0; b <= LAT_BUCKETS; b++)
        lat[b] = now.shadow[b] - r->sh_base.shadow[b];
    rate = pairs ? 100.0 * (double)diffs / (double)pairs : 0;
    p99 = stats_p99_ms(lat);
    if (pairs && r->max_diff_rate >= 0 && rate > r->max_diff_rate) {
        snprintf(why, sizeof(why),
                 "aborted in its shadow phase: %s diff rate %.2f%% (%llu of %llu answered) > "
                 "max-diff-rate %.2f%%; no traffic moved",
                 p->g[r->canary].name, rate, (unsigned long long)diffs, (unsigned long long)pairs,
                 r->max_diff_rate);
    } else if (mirrored && r->max_p99_ms >= 0 && p99 > (double)r->max_p99_ms) {
        snprintf(why, sizeof(why),
                 "aborted in its shadow phase: %s shadow p99 %.1f ms over %llu mirrored > "
                 "max-p99 %lld ms; no traffic moved",
                 p->g[r->canary].name, p99, (unsigned long long)mirrored, (long long)r->max_p99_ms);
    } else {
        why[0] = '\0';
    }
    snprintf(r->sh_result, sizeof(r->sh_result),
             "%s after %.1f s: %llu mirrored, %llu answered, %llu differed (%.2f%%), shadow p99 "
             "%.1f ms",
             why[0] ? "failed" : "passed", (double)(veer_now_us() - r->sh_start_us) / 1e6,
             (unsigned long long)mirrored, (unsigned long long)pairs, (unsigned long long)diffs,
             rate, p99);
    if (why[0]) {
        shadow_stop(r, why);
        return;
    }
    r->sh_run = false;
    shadow_switch(r, false);
    log_info("rollout %s: shadow phase %s", p->name, r->sh_result);
    r->active = true;
    r->pre = ctl_edit_save(r->pool);
    r->step = 0;
    if (apply_share(r, r->steps[0], true, err, sizeof(err)) < 0) {
        r->active = false;
        snprintf(why, sizeof(why), "ended: shadow phase passed but step 1 was refused: %.200s",
                 err);
        shadow_stop(r, why);
        return;
    }
    first_step_started(r);
}

/*
 * Instead of step 1: audited, then the canary gets the mirrored requests
 * for sh_ms; the command is answered at once (the phase ends on its own).
 */
static void shadow_begin(struct ctl_req *req, struct rollout *r, const char *extra)
{
    int pi = r->pool;
    char line[300];
    uint64_t gen;

    if (start_checked(req, r) < 0)
        return;
    pool_mirror_totals(&ctl.model->pools[pi], &r->sh_base);
    r->sh_run = true;
    r->sh_start_us = veer_now_us();
    gen = shadow_switch(r, true);
    if (r->sh_timer == NULL)
        r->sh_timer = evtimer_new(ctl.base, shadow_timer_cb, r);
    {
        struct timeval tv = {(time_t)(r->sh_ms / 1000), (suseconds_t)(r->sh_ms % 1000) * 1000};

        evtimer_add(r->sh_timer, &tv);
    }
    snprintf(r->sh_result, sizeof(r->sh_result), "running: %g%% of the requests to %s for %.1f s",
             r->sh_percent, ctl.model->pools[pi].g[r->canary].name, (double)r->sh_ms / 1e3);
    snprintf(r->verdict, sizeof(r->verdict), "shadow phase");
    log_info("rollout %s: shadow phase: %g%% of the requests mirrored to %s for %.1f s",
             ctl.model->pools[pi].name, r->sh_percent, ctl.model->pools[pi].g[r->canary].name,
             (double)r->sh_ms / 1e3);
    snprintf(line, sizeof(line), " state=shadow shadow_ms=%lld shadow_percent=%g%s",
             (long long)r->sh_ms, r->sh_percent, extra);
    ctl_reply_change(req, gen, line);
}

/*
 * The preflight ended: on success the rollout begins (step 1); on failure
 * it ends before any traffic moved, the operator's command refused (and
 * so audited) with the failing backend, request and answer.
 */
static void preflight_done(void *arg, const struct preflight_result *res)
{
    struct rollout *r = arg;
    struct ctl_req *req = r->pf_req;
    struct rt_pool *p = &ctl.model->pools[r->pool];
    char extra[200];

    r->pf_run = NULL;
    r->pf_req = NULL;
    r->pf_ms = (double)res->took_us / 1000.0;
    if (!res->ok) {
        snprintf(r->pf_result, sizeof(r->pf_result), "failed in %.1f ms: backend %s: %s: %s",
                 r->pf_ms, res->backend[0] ? res->backend : "-",
                 res->request[0] ? res->request : "-", res->answer);
        snprintf(r->verdict, sizeof(r->verdict), "preflight %s failed; no traffic moved",
                 r->pf_name);
        log_warn("rollout %s: preflight %s %s", p->name, r->pf_name, r->pf_result);
        ctl_refuse(req, "preflight %s failed on backend %s: %s: %s (%.1f ms); no traffic moved",
                   r->pf_name, res->backend[0] ? res->backend : "-",
                   res->request[0] ? res->request : "-", res->answer, r->pf_ms);
        return;
    }
    snprintf(r->pf_result, sizeof(r->pf_result), "passed in %.1f ms: %u backends, %u requests",
             r->pf_ms, res->backends, res->requests);
    log_info("rollout %s: preflight %s %s", p->name, r->pf_name, r->pf_result);
    snprintf(extra, sizeof(extra), " preflight=%s preflight_ms=%.1f", r->pf_name, r->pf_ms);
    if (r->sh_ms > 0)
        shadow_begin(req, r, extra);
    else
        begin(req, r, extra);
}

/* Every READY backend of group g of p: what a preflight checks. */
static unsigned ready_backends(const struct rt_pool *p, uint32_t g, struct backend **out)
{
    unsigned n = 0;

    for (uint32_t i = 0; i < p->nb; i++)
        if (p->b[i].group == g && model_state(p, i) == BE_READY)
            out[n++] = p->b[i].be;
    return n;
}

static void start(struct ctl_req *req)
{
    const struct cmd *c = &req->cmd;
    const struct conf_preflight *pf = NULL;
    struct rollout *r;
    struct rt_pool *p;
    int pi = ctl_find_pool(req), g;

    if (pi < 0)
        return;
    p = &ctl.model->pools[pi];
    if (pi >= METRIC_POOLS) {
        ctl_refuse(req, "too many pools for rollouts");
        return;
    }
    if (ro[pi] && (ro[pi]->active || ro[pi]->pf_run || ro[pi]->sh_run)) {
        ctl_refuse(req, "a rollout is already running in pool %s (rollout abort %s first)", p->name,
                   p->name);
        return;
    }
    if ((g = model_find_group(p, c->canary)) < 0) {
        ctl_refuse(req, "unknown group %s in pool %s", c->canary, p->name);
        return;
    }
    if (p->ng != 2) {
        ctl_refuse(req, "a rollout needs exactly two groups; pool %s has %u", p->name, p->ng);
        return;
    }
    if (c->preflight[0] && (pf = conf_find_preflight(ctl.conf, c->preflight)) == NULL) {
        ctl_refuse(req, "unknown preflight %s (the config's preflight lists name them)",
                   c->preflight);
        return;
    }
    if (ro[pi])
        ro_free(ro[pi]);
    r = ro[pi] = veer_calloc(1, sizeof(*r));
    r->pool = pi;
    r->canary = (uint32_t)g;
    r->stable = (uint32_t)(1 - g);
    r->nsteps = c->nsteps;
    memcpy(r->steps, c->steps, sizeof(r->steps));
    r->interval_ms = c->interval_ms;
    r->max_error_rate = c->max_error_rate >= 0 ? c->max_error_rate : 5.0;
    r->max_p99_ms = c->max_p99_ms >= 0 ? c->max_p99_ms : 500;
    r->min_requests = c->min_requests >= 0 ? c->min_requests : 50;
    r->window = (unsigned)(r->interval_ms * 1000 / SLOT_US);
    if (r->window == 0)
        r->window = 1;
    if (r->window > WINDOW_MAX)
        r->window = WINDOW_MAX;
    r->peer = req->peer;
    r->sh_ms = c->shadow_ms > 0 ? c->shadow_ms : 0;
    r->sh_percent = c->shadow_percent >= 0 ? c->shadow_percent : 100;
    r->max_diff_rate = c->max_diff_rate >= 0 ? c->max_diff_rate : 1.0;
    if (pf == NULL) {
        if (r->sh_ms > 0)
            shadow_begin(req, r, "");
        else
            begin(req, r, "");
        return;
    }
    {
        struct backend **list = veer_malloc((p->nb ? p->nb : 1) * sizeof(*list));
        unsigned n = ready_backends(p, r->canary, list);

        snprintf(r->pf_name, sizeof(r->pf_name), "%s", pf->name);
        snprintf(r->pf_result, sizeof(r->pf_result), "running against %u backends", n);
        snprintf(r->verdict, sizeof(r->verdict), "preflight %s running", pf->name);
        r->pf_req = req;
        r->pf_run = preflight_start(ctl.base, pf, p->conf, list, n, preflight_done, r);
        free(list);
        log_info("rollout %s: preflight %s: %zu requests to each of %u READY backends of %s",
                 p->name, pf->name, (size_t)pf->nrequests, n, p->g[r->canary].name);
    }
}

/*
 * A preflight under way is stopped (a reload replaces the configuration it
 * reads, an upgrade hands over, shutdown): its command is answered ERR and
 * nothing moved.
 */
static void rollout_stop_preflights_of(struct rollout *r, const char *why)
{
    struct ctl_req *req = r->pf_req;

    preflight_cancel(r->pf_run);
    r->pf_run = NULL;
    r->pf_req = NULL;
    snprintf(r->pf_result, sizeof(r->pf_result), "stopped: %s", why);
    snprintf(r->verdict, sizeof(r->verdict), "preflight %s stopped: %s; no traffic moved",
             r->pf_name, why);
    log_info("rollout %s: preflight %s stopped: %s", ctl.model->pools[r->pool].name, r->pf_name,
             why);
    ctl_refuse(req, "preflight %s stopped: %s; no traffic moved", r->pf_name, why);
}

void rollout_stop_preflights(const char *why)
{
    char verdict[256];

    for (unsigned k = 0; k < METRIC_POOLS; k++) {
        if (ro[k] && ro[k]->pf_run)
            rollout_stop_preflights_of(ro[k], why);
        if (ro[k] && ro[k]->sh_run) {
            snprintf(verdict, sizeof(verdict), "shadow phase stopped: %s; no traffic moved", why);
            snprintf(ro[k]->sh_result, sizeof(ro[k]->sh_result), "stopped: %s", why);
            shadow_stop(ro[k], verdict);
        }
    }
}

static void status(struct ctl_req *req)
{
    struct rollout *r;
    struct rt_pool *p;
    struct sbuf o;
    struct slot w[2];
    int pi;

    if ((r = of_cmd(req, &pi)) == NULL)
        return;
    p = &ctl.model->pools[pi];
    win_sum(r, 0, &w[0]);
    win_sum(r, 1, &w[1]);
    sb_init(&o);
    sb_printf(&o, "pool %s canary %s stable %s\n", p->name, p->g[r->canary].name,
              p->g[r->stable].name);
    sb_printf(&o, "state %s\n",
              r->pf_run   ? "preflight"
              : r->sh_run ? "shadow"
              : r->active ? (r->paused ? "paused" : "running")
                          : "ended");
    /* Before step 1 (a preflight under way, or one that failed) no step has begun: 0. */
    sb_printf(&o, "step %d/%d share %d time_in_step_s %.1f interval_s %.1f\n", r->step + 1,
              r->nsteps, p->g[r->canary].share,
              r->step_start_us ? (double)(veer_now_us() - r->step_start_us) / 1e6 : 0.0,
              (double)r->interval_ms / 1e3);
    for (unsigned k = 0; k < 2; k++) {
        uint32_t g = k ? r->stable : r->canary;
        double win_s = (double)r->window * SLOT_US / 1e6;

        sb_printf(&o, "group %s share %d rps %.1f error_rate %.2f%% p99_ms %.1f requests %llu\n",
                  p->g[g].name, p->g[g].share, (double)w[k].req / win_s,
                  w[k].req ? 100.0 * (double)w[k].err / (double)w[k].req : 0.0,
                  stats_p99_ms(w[k].b), (unsigned long long)w[k].req);
    }
    sb_printf(&o, "thresholds max-error-rate %.2f%% max-p99 %lldms min-requests %d\n",
              r->max_error_rate, (long long)r->max_p99_ms, r->min_requests);
    if (r->pf_name[0])
        sb_printf(&o, "preflight %s %s\n", r->pf_name, r->pf_result);
    if (r->sh_ms > 0)
        sb_printf(&o, "shadow %lldms percent %g max-diff-rate %.2f%% %s\n", (long long)r->sh_ms,
                  r->sh_percent, r->max_diff_rate, r->sh_result);
    sb_printf(&o, "verdict %s\n", r->verdict);
    ctl_finish(req, o.s, true);
    sb_free(&o);
}

void rollout_command(struct ctl_req *req)
{
    struct rollout *r;
    bool publishes;
    int pi;

    switch (req->cmd.kind) {
    case CMD_ROLLOUT_START:
        start(req);
        return;
    case CMD_ROLLOUT_STATUS:
        status(req);
        return;
    default:
        break;
    }
    if ((r = of_cmd(req, &pi)) == NULL)
        return;
    if (r->pf_run && req->cmd.kind == CMD_ROLLOUT_ABORT) {
        /* Nothing moved yet: the preflight stops, its command is answered, this one too. */
        if (ctl_audit_change(req, ctl.model->generation, NULL, NULL) < 0)
            return;
        rollout_stop_preflights_of(r, "aborted by operator");
        ctl_reply_change(req, ctl.model->generation, NULL);
        return;
    }
    if (r->sh_run && req->cmd.kind == CMD_ROLLOUT_ABORT) {
        /* Nothing moved yet: the mirror stops (one publish). */
        if (ctl_audit_change(req, ctl.model->generation + 1, NULL, NULL) < 0)
            return;
        snprintf(r->sh_result, sizeof(r->sh_result), "stopped: aborted by operator");
        shadow_stop(r, "aborted by operator in its shadow phase; no traffic moved");
        ctl_reply_change(req, ctl.model->generation, NULL);
        return;
    }
    if (r->pf_run || r->sh_run) {
        ctl_refuse(req, "the rollout in pool %s is in its %s (rollout abort %s to stop it)",
                   req->cmd.pool, r->pf_run ? "preflight" : "shadow phase", req->cmd.pool);
        return;
    }
    if (!r->active) {
        ctl_refuse(req, "the rollout in pool %s has ended (%s)", req->cmd.pool, r->verdict);
        return;
    }
    if (req->cmd.kind == CMD_ROLLOUT_RESUME && !r->paused) {
        /* Resuming restarts the window and the step clock: never for a running one. */
        ctl_refuse(req, "the rollout in pool %s is not paused", req->cmd.pool);
        return;
    }
    /* Audited before it is done; an abort publishes the rollback (the next generation). */
    publishes = req->cmd.kind == CMD_ROLLOUT_ABORT;
    if (ctl_audit_change(req, ctl.model->generation + publishes, NULL, NULL) < 0)
        return;
    switch (req->cmd.kind) {
    case CMD_ROLLOUT_PAUSE:
        r->paused = true;
        if (r->timer) /* none yet when restored paused */
            evtimer_del(r->timer);
        snprintf(r->verdict, sizeof(r->verdict), "paused by operator");
        break;
    case CMD_ROLLOUT_RESUME:
        r->paused = false;
        win_reset(r);
        r->step_start_us = veer_now_us();
        arm(r, r->interval_ms);
        snprintf(r->verdict, sizeof(r->verdict), "running");
        break;
    default: /* abort */
        rollback(r, "aborted by operator");
        break;
    }
    sync_text(r);
    control_save_state();
    ctl_reply_change(req, ctl.model->generation, NULL);
}

/* The canary group of pool pi while a rollout runs, else -1. */
void rollout_status_json(int pi, struct sbuf *o)
{
    const struct rollout *r = pi >= 0 && pi < METRIC_POOLS ? ro[pi] : NULL;
    const struct rt_pool *p;

    if (r == NULL) {
        sb_puts(o, "null");
        return;
    }
    p = &ctl.model->pools[pi];
    sb_puts(o, "{\"canary\":");
    sb_json_str(o, p->g[r->canary].name);
    sb_puts(o, ",\"stable\":");
    sb_json_str(o, p->g[r->stable].name);
    sb_printf(o,
              ",\"state\":\"%s\",\"step\":%d,\"steps\":%d,\"share\":%d,"
              "\"time_in_step_s\":%.1f,\"verdict\":",
              r->pf_run   ? "preflight"
              : r->sh_run ? "shadow"
              : r->active ? (r->paused ? "paused" : "running")
                          : "ended",
              r->step + 1, r->nsteps, p->g[r->canary].share,
              r->step_start_us ? (double)(veer_now_us() - r->step_start_us) / 1e6 : 0.0);
    sb_json_str(o, r->verdict);
    sb_puts(o, ",\"preflight\":");
    if (r->pf_name[0]) {
        sb_puts(o, "{\"name\":");
        sb_json_str(o, r->pf_name);
        sb_printf(o, ",\"state\":\"%s\",\"duration_ms\":%.1f,\"result\":",
                  r->pf_run                                 ? "running"
                  : strncmp(r->pf_result, "passed", 6) == 0 ? "passed"
                  : strncmp(r->pf_result, "failed", 6) == 0 ? "failed"
                                                            : "stopped",
                  r->pf_ms);
        sb_json_str(o, r->pf_result);
        sb_puts(o, "}");
    } else {
        sb_puts(o, "null");
    }
    sb_puts(o, ",\"shadow\":");
    if (r->sh_ms > 0) {
        sb_printf(o,
                  "{\"duration_ms\":%lld,\"percent\":%g,\"max_diff_rate\":%g,\"state\":\"%s\","
                  "\"result\":",
                  (long long)r->sh_ms, r->sh_percent, r->max_diff_rate,
                  r->sh_run                                 ? "running"
                  : strncmp(r->sh_result, "passed", 6) == 0 ? "passed"
                  : strncmp(r->sh_result, "failed", 6) == 0 ? "failed"
                                                            : "stopped");
        sb_json_str(o, r->sh_result);
        sb_puts(o, "}");
    } else {
        sb_puts(o, "null");
    }
    sb_puts(o, "}");
}

void rollout_plan_json(int pi, struct sbuf *o)
{
    const struct rollout *r = pi >= 0 && pi < METRIC_POOLS ? ro[pi] : NULL;

    if (r == NULL) {
        sb_puts(o, "null");
        return;
    }
    sb_puts(o, "{\"step_shares\":[");
    for (int i = 0; i < r->nsteps; i++)
        sb_printf(o, "%s%d", i ? "," : "", r->steps[i]);
    sb_printf(o, "],\"interval_s\":%.3f,\"max_error_rate\":", (double)r->interval_ms / 1000.0);
    /* A threshold below 0 is not checked: null. The error rate is a fraction, as error_rate. */
    if (r->max_error_rate >= 0)
        sb_printf(o, "%.8g", r->max_error_rate / 100.0);
    else
        sb_puts(o, "null");
    sb_puts(o, ",\"max_p99_ms\":");
    if (r->max_p99_ms >= 0)
        sb_printf(o, "%lld", (long long)r->max_p99_ms);
    else
        sb_puts(o, "null");
    sb_printf(o, ",\"min_requests\":%d}", r->min_requests);
}

int rollout_canary(int pi)
{
    return pi >= 0 && pi < METRIC_POOLS && ro[pi] && ro[pi]->active ? (int)ro[pi]->canary : -1;
}

/* --- the state file ---------------------------------------------------------------------- */

/* "rollout canary=G;step=N;steps=1,5;interval=MS;err=X;p99=MS;min=N;paused=0;pre=..." */
char *rollout_render(int pi)
{
    struct rollout *r = pi < METRIC_POOLS ? ro[pi] : NULL;
    const struct rt_pool *p = &ctl.model->pools[pi];
    struct sbuf o;

    if (r == NULL || !r->active)
        return NULL;
    sb_init(&o);
    sb_printf(&o, "canary=%s;step=%d;steps=", p->g[r->canary].name, r->step);
    for (int i = 0; i < r->nsteps; i++)
        sb_printf(&o, "%s%d", i ? "," : "", r->steps[i]);
    /* %.15g: a percent with up to 6 decimals (what start takes) comes back as written. */
    sb_printf(&o, ";interval=%lld;err=%.15g;p99=%lld;min=%d;paused=%d;", (long long)r->interval_ms,
              r->max_error_rate, (long long)r->max_p99_ms, r->min_requests, r->paused);
    ctl_edit_render(r->pre, &o);
    return sb_steal(&o);
}

/* "1,5,20,100" as rollout start takes it (1..100, strictly increasing): the count, or -1. */
static int parse_steps(const char *s, int *steps)
{
    int n = 0;

    for (;;) {
        char *end;
        long v = strtol(s, &end, 10);

        if (end == s || (*end != ',' && *end != '\0') || v < 1 || v > 100 ||
            (n > 0 && v <= steps[n - 1]) || n == CMD_MAX_STEPS)
            return -1;
        steps[n++] = (int)v;
        if (*end == '\0')
            return n;
        s = end + 1;
    }
}

/*
 * Resume a rollout saved in the state file (at its step; the step's clock
 * restarts). A line that is malformed, or holds what `rollout start` would
 * never have taken, is refused (-1) and nothing changes.
 */
int rollout_restore(int pi, const char *text)
{
    struct rollout *r;
    char canary[CMD_NAME_MAX] = "", steps[256] = "";
    int step = 0, paused = 0, g, n, nsteps, steps_v[CMD_MAX_STEPS];
    long long interval = 0, p99 = 0;
    double err = 0;
    int minreq = 0;
    const char *pre;
    struct pool_edit *edit;

    if (pi >= METRIC_POOLS)
        return -1;
    n = sscanf(text,
               "canary=%63[^;];step=%d;steps=%255[^;];interval=%lld;err=%lf;p99=%lld;"
               "min=%d;paused=%d;",
               canary, &step, steps, &interval, &err, &p99, &minreq, &paused);
    pre = strstr(text, ";pre=");
    if (n != 8 || pre == NULL || (g = model_find_group(&ctl.model->pools[pi], canary)) < 0 ||
        ctl.model->pools[pi].ng != 2)
        return -1;
    nsteps = parse_steps(steps, steps_v);
    if (nsteps < 0 || step < 0 || step >= nsteps || interval <= 0 || !(err >= 0 && err <= 100) ||
        p99 <= 0 || minreq < 1 || (paused != 0 && paused != 1))
        return -1;
    if ((edit = ctl_edit_parse(pi, pre + 1)) == NULL)
        return -1;
    r = veer_calloc(1, sizeof(*r));
    r->pre = edit;
    r->nsteps = nsteps;
    memcpy(r->steps, steps_v, (size_t)nsteps * sizeof(*steps_v));
    r->active = true;
    r->paused = paused != 0;
    r->pool = pi;
    r->canary = (uint32_t)g;
    r->stable = (uint32_t)(1 - g);
    r->step = step;
    r->interval_ms = interval;
    r->max_error_rate = err;
    r->max_p99_ms = p99;
    r->min_requests = minreq;
    r->window = (unsigned)(interval * 1000 / SLOT_US);
    r->window = r->window == 0 ? 1 : r->window > WINDOW_MAX ? WINDOW_MAX : r->window;
    r->peer = (struct audit_peer){-1, -1, -1};
    r->step_start_us = veer_now_us();
    snprintf(r->verdict, sizeof(r->verdict), "%s", r->paused ? "paused" : "running (restored)");
    if (ro[pi])
        ro_free(ro[pi]);
    ro[pi] = r;
    if (!r->paused)
        arm(r, r->interval_ms);
    log_info("rollout of pool %s restored at step %d/%d", ctl.model->pools[pi].name, step + 1,
             r->nsteps);
    return 0;
}

void rollout_shutdown(void)
{
    rollout_stop_preflights("shutting down");
    for (unsigned k = 0; k < METRIC_POOLS; k++)
        if (ro[k]) {
            ro_free(ro[k]);
            ro[k] = NULL;
        }
}
