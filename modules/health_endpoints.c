/*
 * health_endpoints.c - veer's own health endpoints on every listener,
 * under health_endpoints.prefix (default /api/health):
 *   liveness   200 while the event loops run
 *   readiness  200 when veer accepts traffic and every listener's pool has
 *              an eligible backend; 503 while shutting down or when one has none
 *   status     JSON: version, uptime, workers, generation, maintenance (for
 *              every pool, per pool and per route) and per pool the backends
 *              by state
 * Readiness looks at the listeners' pools only, never at the pools routes
 * send to: it tells the outer load balancer whether to send this veer any
 * traffic at all, and one API service without a backend must not take the
 * whole front door out. A route whose pool has no eligible backend answers
 * 503 on that route alone; the others keep serving.
 * With `enabled = false;` the paths are proxied like any other.
 *
 * Its keys: health_endpoints = { prefix = "/api/health"; enabled = true; };
 */
#include "module.h"
#include "routing.h"

#include <string.h>

struct he_keys {
    char *prefix;
    bool enabled;
};

struct he_conf {
    struct he_keys health_endpoints;
};

static const struct conf_field he_fields[] = {
    CF_STR(struct he_keys, prefix, conf_check_path_prefix),
    CF_BOOL(struct he_keys, enabled),
    CF_END,
};

static const struct conf_field keys[] = {
    CF_GROUP(struct he_conf, health_endpoints, he_fields),
    CF_END,
};

static void defaults(void *obj)
{
    struct he_conf *c = obj;

    c->health_endpoints.prefix = veer_strdup("/api/health");
    c->health_endpoints.enabled = true;
}

extern const struct veer_module module_health_endpoints;

static const struct he_keys *he_keys(const struct veer_conf *conf)
{
    const struct he_conf *c = conf_section(conf, &module_health_endpoints.conf);

    return &c->health_endpoints;
}

/* When veer started, for the uptime (set once, before any worker runs). */
static uint64_t start_us;

static int init(const struct veer_conf *conf)
{
    if (start_us == 0)
        start_us = veer_now_us();
    return VEER_OK;
}

/* Why veer is not ready, or NULL when it is. */
static const char *not_ready(const struct txn *t, const struct routing *r, char *buf, size_t len)
{
    int p;

    if (txn_shutting_down(t))
        return "shutting down";
    for (unsigned i = 0; (p = txn_listener_pool(t, i)) != -2; i++) {
        if ((uint32_t)p < r->npools && r->pools[p].n == 0) {
            snprintf(buf, len, "pool %s has no eligible backend", r->pools[p].name);
            return buf;
        }
    }
    return NULL;
}

static int readiness(struct txn *t, const struct routing *r)
{
    char why[160], body[256];
    const char *no = not_ready(t, r, why, sizeof(why));
    struct sbuf b;
    int rc;

    if (no == NULL) {
        snprintf(body, sizeof(body), "{\"status\":\"ready\"}\n");
        return txn_respond(t, 200, NULL, "application/json", body, strlen(body));
    }
    sb_init(&b);
    sb_puts(&b, "{\"status\":\"not ready\",\"reason\":");
    sb_json_str(&b, no);
    sb_puts(&b, "}\n");
    rc = txn_respond(t, 503, NULL, "application/json", b.s, b.len);
    sb_free(&b);
    return rc;
}

/*
 * Whether route i's requests get the maintenance 503: its own route maintenance, its pool's,
 * or the one for every pool (the maintenance module's rule), as the pools map says it.
 */
static bool route_maint(const struct routing *r, uint32_t i)
{
    const struct snap_route *sr = &r->route[i];

    if (sr->maint || r->maint)
        return true;
    return sr->pool >= 0 && (uint32_t)sr->pool < r->npools && r->pools[sr->pool].maint;
}

static int status(struct txn *t, const struct routing *r)
{
    struct sbuf b;
    int rc;

    sb_init(&b);
    sb_printf(&b,
              "{\"version\":\"%s\",\"uptime_s\":%.3f,\"workers\":%d,\"generation\":%llu,"
              "\"shutting_down\":%s,\"maintenance\":{\"all\":%s,\"pools\":{",
              VEER_VERSION, (double)(veer_now_us() - start_us) / 1e6, txn_conf(t)->workers,
              (unsigned long long)r->generation, txn_shutting_down(t) ? "true" : "false",
              r->maint ? "true" : "false");
    for (uint32_t i = 0; i < r->npools; i++) {
        sb_puts(&b, i ? "," : "");
        sb_json_str(&b, r->pools[i].name);
        sb_puts(&b, r->pools[i].maint || r->maint ? ":true" : ":false");
    }
    sb_puts(&b, "}");
    if (r->nroutes) {
        /* Only with routes: the document of a config without them keeps its shape. */
        sb_puts(&b, ",\"routes\":{");
        for (uint32_t i = 0; i < r->nroutes; i++) {
            sb_puts(&b, i ? "," : "");
            sb_json_str(&b, r->conf->routes[i].name);
            sb_puts(&b, route_maint(r, i) ? ":true" : ":false");
        }
        sb_puts(&b, "}");
    }
    sb_puts(&b, "},\"pools\":[");
    for (uint32_t i = 0; i < r->npools; i++) {
        const struct snap_pool *p = &r->pools[i];

        sb_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        sb_json_str(&b, p->name);
        sb_printf(&b, ",\"eligible\":%u,\"backends\":{", p->n);
        for (int s = BE_PENDING; s <= BE_MAINT; s++)
            sb_printf(&b, "%s\"%s\":%u", s ? "," : "", backend_state_name(s), p->nstate[s]);
        sb_puts(&b, "}}");
    }
    sb_puts(&b, "]}\n");
    rc = txn_respond(t, 200, NULL, "application/json", b.s, b.len);
    sb_free(&b);
    return rc;
}

static bool is(const char *p, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(p, word, n) == 0;
}

/*
 * The endpoint name path[0..len) asks for under the prefix ("liveness" for
 * "/api/health/liveness"), or NULL when it is not under it. The prefix
 * covers whole segments of the canonical path, as maintenance.allow and
 * route prefixes do; "/ops/" is "/ops", and "/" puts the endpoints at the
 * top level ("/liveness").
 */
static const char *endpoint(const char *prefix, const char *path, size_t len, size_t *n)
{
    size_t plen = strlen(prefix);

    while (plen > 0 && prefix[plen - 1] == '/')
        plen--;
    if (len <= plen + 1 || path[plen] != '/' || !path_prefix_match(path, len, prefix, plen))
        return NULL;
    *n = len - plen - 1;
    return path + plen + 1;
}

/*
 * PREFIX/liveness, PREFIX/readiness and PREFIX/status, whether answered or
 * (enabled = false) proxied: maintenance never closes them. Only these, not
 * every path under the prefix: with prefix "/" that would be every path.
 */
static bool own_path(const struct veer_conf *conf, const char *path, size_t len)
{
    static const char *const names[] = {"liveness", "readiness", "status"};
    size_t n;
    const char *name = endpoint(he_keys(conf)->prefix, path, len, &n);

    if (name == NULL)
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (is(name, n, names[i]))
            return true;
    return false;
}

static int on_request_head(struct txn *t)
{
    const struct routing *r = txn_routing(t);
    const struct he_keys *hc = he_keys(txn_conf(t));
    size_t len;
    const char *path = txn_path(t, &len);

    if (!hc->enabled || (path = endpoint(hc->prefix, path, len, &len)) == NULL)
        return VEER_DECLINED;
    if (is(path, len, "liveness"))
        return txn_respond(t, 200, NULL, "application/json", "{\"status\":\"alive\"}\n", 19);
    if (is(path, len, "readiness"))
        return readiness(t, r);
    if (is(path, len, "status"))
        return status(t, r);
    return VEER_DECLINED;
}

const struct veer_module module_health_endpoints = {
    .name = "health_endpoints",
    .conf = {.keys = keys, .size = sizeof(struct he_conf), .defaults = defaults},
    .init = init,
    .own_path = own_path,
    .on_request_head = on_request_head,
};
