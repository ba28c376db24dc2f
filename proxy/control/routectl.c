/*
 * routectl.c - runtime changes of routes (issue 17): route maintenance,
 * route set (a route-level blue-green swap) and rolling a route set back.
 * Each is one change on the control path like any other: audited before it
 * is made, written into the model, published with one atomic store, kept
 * in the state file, then acknowledged with OK gen=N applied_us=T.
 *
 * Fleet mode keeps its intent in etcd for pools only so far; route changes
 * there are refused rather than applied on one instance alone.
 */
#include "cluster.h"
#include "control-i.h"
#include "state.h"
#include "veer.h"

#include <stdio.h>
#include <string.h>

/* The route r names, or -1 after refusing r. */
static int find_route(struct ctl_req *r)
{
    int ri = model_find_route(ctl.model, r->cmd.route);

    if (ri < 0)
        ctl_refuse(r, "unknown route %s", r->cmd.route);
    return ri;
}

static bool refuse_in_fleet(struct ctl_req *r)
{
    if (!cluster_on())
        return false;
    ctl_refuse(r, "route changes are not kept in the fleet (cluster) yet: change the routes in the "
                  "config and reload");
    return true;
}

/* The route's state as its audit records show it. */
static void route_json(char *buf, size_t len, const struct rt_route *rt, const char *pool, bool on,
                       int retry_after)
{
    snprintf(buf, len, "{\"route\":\"%s\",\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             rt->name, pool, on ? "true" : "false", retry_after);
}

static const char *pool_name(int pi)
{
    return pi >= 0 && (uint32_t)pi < ctl.model->npools ? ctl.model->pools[pi].name : "";
}

void ctl_route_maintenance(struct ctl_req *r)
{
    const struct cmd *c = &r->cmd;
    int ri, retry = c->retry_after >= 0 ? c->retry_after : ctl.conf->maintenance.retry_after;
    struct rt_route *rt;
    char before[512], after[512];
    uint64_t gen;

    if (refuse_in_fleet(r) || (ri = find_route(r)) < 0)
        return;
    rt = &ctl.model->routes[ri];
    route_json(before, sizeof(before), rt, pool_name(rt->pool), rt->maint, rt->maint_retry_after);
    route_json(after, sizeof(after), rt, pool_name(rt->pool), c->on, c->on ? retry : 0);
    if (ctl_audit_change(r, ctl.model->generation + 1, before, after) < 0)
        return;
    rt->maint = c->on;
    rt->maint_retry_after = c->on ? retry : 0;
    rt->maint_hold_ms = c->on && c->hold_ms > 0 ? c->hold_ms : 0;
    gen = control_publish();
    control_save_state();
    log_info("route maintenance %s for %s (gen %llu)", c->on ? "on" : "off", rt->name,
             (unsigned long long)gen);
    ctl_reply_change(r, gen, NULL);
}

/* Point route ri at pool pi (audited, published, saved) and answer r. */
static void point_route(struct ctl_req *r, int ri, int pi, bool rollback)
{
    struct rt_route *rt = &ctl.model->routes[ri];
    char before[512], after[512], extra[160];
    int old = rt->pool;
    uint64_t gen;

    route_json(before, sizeof(before), rt, pool_name(old), rt->maint, rt->maint_retry_after);
    route_json(after, sizeof(after), rt, pool_name(pi), rt->maint, rt->maint_retry_after);
    if (ctl_audit_change(r, ctl.model->generation + 1, before, after) < 0)
        return;
    if (rollback) {
        free(rt->history[--rt->nhistory]);
    } else {
        if (rt->nhistory == ROUTE_HISTORY) {
            free(rt->history[0]);
            memmove(rt->history, rt->history + 1, (ROUTE_HISTORY - 1) * sizeof(rt->history[0]));
            rt->nhistory--;
        }
        rt->history[rt->nhistory++] = veer_strdup(pool_name(old));
        rt->history_seq = ++ctl.model->change_seq;
    }
    rt->pool = pi;
    gen = control_publish();
    control_save_state();
    log_info("route %s: pool %s -> %s (gen %llu)%s", rt->name, pool_name(old), pool_name(pi),
             (unsigned long long)gen, rollback ? " (rollback)" : "");
    snprintf(extra, sizeof(extra), " route=%s pool=%s previous=%s", rt->name, pool_name(pi),
             pool_name(old));
    ctl_reply_change(r, gen, extra);
}

void ctl_route_set(struct ctl_req *r)
{
    int ri, pi;

    if (refuse_in_fleet(r) || (ri = find_route(r)) < 0)
        return;
    pi = model_find_pool(ctl.model, r->cmd.pool);
    if (pi < 0 || ctl.model->pools[pi].removed) {
        ctl_refuse(r, "unknown pool %s", r->cmd.pool);
        return;
    }
    if (pi == ctl.model->routes[ri].pool) {
        ctl_refuse(r, "route %s already sends to pool %s", r->cmd.route, r->cmd.pool);
        return;
    }
    point_route(r, ri, pi, false);
}

void ctl_route_rollback(struct ctl_req *r, int ri)
{
    struct rt_route *rt = &ctl.model->routes[ri];
    int pi;

    if (refuse_in_fleet(r))
        return;
    if (rt->nhistory == 0) {
        ctl_refuse(r, "nothing to roll back in route %s", rt->name);
        return;
    }
    pi = model_find_pool(ctl.model, rt->history[rt->nhistory - 1]);
    if (pi < 0 || ctl.model->pools[pi].removed) {
        ctl_refuse(r, "route %s: its previous pool %s no longer exists", rt->name,
                   rt->history[rt->nhistory - 1]);
        return;
    }
    point_route(r, ri, pi, true);
}
