/*
 * maintenance.c - maintenance mode: while it is on for every pool, for
 * the request's pool or for its route (route maintenance), new requests get 503 with Retry-After
 * and a small JSON body; requests already in flight finish. Paths on the allowlist
 * (maintenance.allow prefixes, on whole segments, and always the modules'
 * own endpoints: veer's health endpoints, module_own_path) keep being
 * proxied or answered. The switch lives in the routing snapshot, so turning
 * it on or off is one atomic publish like any other change.
 *
 * Its key: maintenance = { allow = ( "/admin" ); }; (maintenance.retry_after,
 * the default of `maintenance on`, is the control plane's: conf.h).
 */
#include "module.h"
#include "routing.h"

#include <string.h>

struct maint_conf {
    struct conf_strings allow; /* path prefixes */
};

static const struct conf_field keys[] = {
    CF_STRS(struct maint_conf, allow, conf_check_path_prefix),
    CF_END,
};

static void defaults(void *obj)
{
    struct maint_conf *c = obj;

    c->allow.v = veer_calloc(1, sizeof(char *));
    c->allow.v[0] = veer_strdup("/admin");
    c->allow.n = 1;
}

extern const struct veer_module module_maintenance;

/*
 * Exempt: veer's own endpoints, and the paths under maintenance.allow
 * prefixes, on whole segments ("/admin" covers "/admin" and "/admin/x", not
 * "/administrator") of the canonical path, the rule routes use.
 */
static bool allowed(const struct veer_conf *conf, const char *path, size_t len)
{
    const struct maint_conf *c = conf_section(conf, &module_maintenance.conf);

    for (int i = 0; i < c->allow.n; i++)
        if (path_prefix_match(path, len, c->allow.v[i], strlen(c->allow.v[i])))
            return true;
    return module_own_path(conf, path, len);
}

/*
 * The maintenance that applies to the request, if any: its route's (route
 * maintenance), else its pool's, else the one for every pool. Its
 * Retry-After and hold come with it.
 */
static bool in_maintenance(const struct txn *t, int *retry, int64_t *hold_ms)
{
    const struct routing *r = txn_routing(t);
    int pool = txn_pool_index(t), ri = txn_route_index(t);
    const struct snap_pool *p = (uint32_t)pool < r->npools ? &r->pools[pool] : NULL;
    const struct snap_route *sr = ri >= 0 && (uint32_t)ri < r->nroutes ? &r->route[ri] : NULL;

    if (sr && sr->maint) {
        *retry = sr->retry_after;
        *hold_ms = sr->maint_hold_ms;
    } else if (p && p->maint) {
        *retry = p->retry_after;
        *hold_ms = p->maint_hold_ms;
    } else if (r->maint) {
        *retry = r->retry_after;
        *hold_ms = r->maint_hold_ms;
    } else {
        return false;
    }
    return true;
}

static int on_request_head(struct txn *t)
{
    char hdr[64], body[128];
    int64_t hold_ms;
    int retry;
    size_t len;
    const char *path;

    if (!in_maintenance(t, &retry, &hold_ms))
        return VEER_DECLINED;
    path = txn_path(t, &len);
    if (allowed(txn_conf(t), path, len))
        return VEER_DECLINED;
    if (hold_ms > 0) {
        /* Hold it for the window to end; only those still waiting at the deadline get 503. */
        uint64_t deadline = txn_hold(t, (uint64_t)hold_ms * 1000);

        if (veer_now_us() < deadline)
            return VEER_AGAIN;
    }
    snprintf(hdr, sizeof(hdr), "Retry-After: %d\r\n", retry);
    snprintf(body, sizeof(body), "{\"error\":\"maintenance\",\"status\":503,\"retry_after\":%d}\n",
             retry);
    return txn_respond(t, 503, hdr, "application/json", body, strlen(body));
}

const struct veer_module module_maintenance = {
    .name = "maintenance",
    .conf = {.group = "maintenance",
             .keys = keys,
             .size = sizeof(struct maint_conf),
             .defaults = defaults},
    .on_request_head = on_request_head,
};
