/*
 * maintenance.c - maintenance mode: while it is on for every pool or for
 * the request's pool, new requests get 503 with Retry-After and a small
 * JSON body; requests already in flight finish. Paths on the allowlist
 * (maintenance.allow prefixes, and veer's health endpoints always) keep
 * being proxied or answered. The switch lives in the routing snapshot, so
 * turning it on or off is one atomic publish like any other change.
 */
#include "module.h"
#include "routing.h"

#include <string.h>

static bool prefix_of(const char *prefix, const char *path, size_t len)
{
    size_t n = strlen(prefix);

    return len >= n && memcmp(path, prefix, n) == 0;
}

/*
 * veer's own health endpoints: PREFIX/liveness, PREFIX/readiness and
 * PREFIX/status, matched as health_endpoints.c matches them (a trailing
 * slash of the prefix does not count). Only these, not every path under the
 * prefix: with prefix "/" that would be every path.
 */
static bool health_endpoint(const char *prefix, const char *path, size_t len)
{
    static const char *const names[] = {"liveness", "readiness", "status"};
    size_t n = strlen(prefix);

    while (n > 0 && prefix[n - 1] == '/')
        n--;
    if (len <= n + 1 || memcmp(path, prefix, n) != 0 || path[n] != '/')
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (len - n - 1 == strlen(names[i]) && memcmp(path + n + 1, names[i], len - n - 1) == 0)
            return true;
    return false;
}

static bool allowed(const struct veer_conf *conf, const char *path, size_t len)
{
    for (int i = 0; i < conf->maintenance.nallow; i++)
        if (prefix_of(conf->maintenance.allow[i], path, len))
            return true;
    return health_endpoint(conf->health_endpoints.prefix, path, len);
}

static int on_request_head(struct txn *t)
{
    const struct routing *r = txn_routing(t);
    int pool = txn_pool_index(t);
    const struct snap_pool *p = (uint32_t)pool < r->npools ? &r->pools[pool] : NULL;
    char hdr[64], body[128];
    int64_t hold_ms;
    int retry;
    size_t len;
    const char *path;

    if (!r->maint && !(p && p->maint))
        return VEER_DECLINED;
    path = txn_path(t, &len);
    if (allowed(txn_conf(t), path, len))
        return VEER_DECLINED;
    hold_ms = p && p->maint ? p->maint_hold_ms : r->maint_hold_ms;
    if (hold_ms > 0) {
        /* Hold it for the window to end; only those still waiting at the deadline get 503. */
        uint64_t deadline = txn_hold(t, (uint64_t)hold_ms * 1000);

        if (veer_now_us() < deadline)
            return VEER_AGAIN;
    }
    retry = p && p->maint ? p->retry_after : r->retry_after;
    snprintf(hdr, sizeof(hdr), "Retry-After: %d\r\n", retry);
    snprintf(body, sizeof(body), "{\"error\":\"maintenance\",\"status\":503,\"retry_after\":%d}\n",
             retry);
    return txn_respond(t, 503, hdr, "application/json", body, strlen(body));
}

const struct veer_module module_maintenance = {
    .name = "maintenance",
    .on_request_head = on_request_head,
};
