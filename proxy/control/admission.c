/*
 * admission.c - who may take traffic beyond the operator's say: readiness transitions
 * from the active checks (rise/fall), the circuit breaker fed by the workers'
 * failure reports (cooldown, half-open trials, max ejection), and slow start.
 */
#include "control-i.h"
#include "metrics.h"
#include "audit.h"
#include "health.h"
#include "rollout.h"
#include "sbuf.h"
#include "state.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

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
        ctl_slow_start_begin(p, i);
    gen = control_publish();
    snprintf(line, sizeof(line), "health %s/%s", p->name, b->be->name);
    snprintf(before, sizeof(before), "{\"state\":\"%s\"}", health_name(from));
    snprintf(after, sizeof(after), "{\"state\":\"%s\"}", health_name(to));
    audit_write("health", NULL, line, "OK", gen, before, after);
    persist_sync_audit();
    control_save_state(); /* the audit chain's last record is in it */
    if (to == HEALTH_READY)
        log_info("backend %s/%s %s -> READY after %u passing checks (gen %llu)", p->name,
                 b->be->name, health_name(from), b->be->hc_pass, (unsigned long long)gen);
    else
        log_warn("backend %s/%s %s -> DOWN after %u failing checks: %s (gen %llu)", p->name,
                 b->be->name, health_name(from), b->be->hc_fail, why ? why : "failed",
                 (unsigned long long)gen);
    if (to == HEALTH_READY)
        ctl_wake_waiters(b->be, WAIT_READY, true);
}

void ctl_on_health(struct backend *be, bool ok, uint64_t took_us, const char *why)
{
    struct rt_pool *p;
    struct rt_backend *b;
    const struct conf_health *hc;

    if (be->pool < 0)
        return;
    metrics_health_check(be->pool, took_us);
    if (ctl.frozen)
        return; /* upgrade handoff: results count again after a thaw (or in the new process) */
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
        ctl_slow_start_begin(p, i);
    gen = control_publish();
    snprintf(line, sizeof(line), "breaker %s/%s", p->name, b->be->name);
    snprintf(before, sizeof(before), "{\"circuit\":\"%s\"}", breaker_state_name(from));
    snprintf(after, sizeof(after), "{\"circuit\":\"%s\"}", breaker_state_name(to));
    audit_write("breaker", NULL, line, "OK", gen, before, after);
    persist_sync_audit();
    control_save_state(); /* the audit chain's last record is in it */
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
    if (ctl.frozen) {
        /* Upgrade handoff: the trial waits for a thaw (after a handover it never comes). */
        struct timeval again = {0, 100 * 1000};

        if (!ctl.handed_over)
            evtimer_add(p->b[be->index].cooldown, &again);
        return;
    }
    if (p->b[be->index].breaker == BREAKER_OPEN)
        breaker_set(p, be->index, BREAKER_HALF_OPEN, "cooldown over, trial requests");
}

/*
 * Open the circuit: the backend leaves rotation for the cooldown. Never
 * more than max_ejection_percent of the pool's READY backends are ejected
 * at once, so a failure that hits every backend cannot empty the pool: a
 * failed half-open trial too stays half-open (its trials start over) when
 * the others already take the limit.
 */
static void breaker_trip(struct rt_pool *p, uint32_t i, const char *why)
{
    const struct conf_breaker *cb = &p->conf->breaker;
    struct rt_backend *b = &p->b[i];
    unsigned ready = 0, open = 0;
    struct timeval tv = {cb->cooldown_ms / 1000, (cb->cooldown_ms % 1000) * 1000};

    for (uint32_t k = 0; k < p->nb; k++) {
        if (p->b[k].health == HEALTH_READY && p->b[k].admin == ADMIN_READY && !p->b[k].gone)
            ready++;
        if (p->b[k].breaker == BREAKER_OPEN && k != i)
            open++;
    }
    if ((open + 1) * 100 > ready * (unsigned)cb->max_ejection_percent) {
        log_warn("backend %s/%s failing (%s) but not ejected: max_ejection_percent %d of %u "
                 "ready backends reached",
                 p->name, b->be->name, why, cb->max_ejection_percent, ready);
        b->trial_ok = 0;
        return;
    }
    if (b->cooldown == NULL)
        b->cooldown = evtimer_new(ctl.base, cooldown_cb, b->be);
    evtimer_add(b->cooldown, &tv);
    breaker_set(p, i, BREAKER_OPEN, why);
}

void ctl_breaker_event(struct backend *be, bool ok)
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
            rollout_backend_failing(be->pool, be->index, why);
            breaker_trip(p, be->index, why);
        }
        return;
    case BREAKER_HALF_OPEN:
        if (!ok) {
            rollout_backend_failing(be->pool, be->index, "trial request failed");
            breaker_trip(p, be->index, "trial request failed");
        } else if (++b->trial_ok >= (unsigned)p->conf->breaker.half_open_successes)
            breaker_set(p, be->index, BREAKER_CLOSED, "trial requests succeeded");
        return;
    case BREAKER_OPEN:
        return; /* reports of requests sent before it opened */
    }
}

/* A backend just admitted ramps its weight from 10% to 100% over slow_start_ms. */
void ctl_slow_start_begin(struct rt_pool *p, uint32_t i)
{
    if (p->conf->slow_start_ms <= 0)
        return;
    p->b[i].factor = SLOW_START_FLOOR;
    p->b[i].ready_since_us = veer_now_us();
}

/* Move every ramping backend along; one publish for all of them. */
void ctl_slow_start_tick(void)
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
