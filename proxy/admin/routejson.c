/*
 * routejson.c - one route of the model as /status and `show routes` present
 * it (routejson.h): its JSON object, whether it is in maintenance, its match
 * as text. One renderer, so that every place shows a route the same way.
 */
#include "routejson.h"
#include "conf.h"
#include "model.h"
#include "sbuf.h"

bool routejson_in_maintenance(const struct model *m, uint32_t i)
{
    int retry;
    int64_t hold;

    return routejson_maintenance(m, i, &retry, &hold);
}

bool routejson_maintenance(const struct model *m, uint32_t i, int *retry_after, int64_t *hold_ms)
{
    const struct rt_route *rt = &m->routes[i];
    const struct rt_pool *p =
        rt->pool >= 0 && (uint32_t)rt->pool < m->npools ? &m->pools[rt->pool] : NULL;

    /* The maintenance module's order: the route's, then its pool's, then every pool's. */
    if (rt->maint) {
        *retry_after = rt->maint_retry_after;
        *hold_ms = rt->maint_hold_ms;
    } else if (p && p->maint) {
        *retry_after = p->maint_retry_after;
        *hold_ms = p->maint_hold_ms;
    } else if (m->maint) {
        *retry_after = m->maint_retry_after;
        *hold_ms = m->maint_hold_ms;
    } else {
        *retry_after = 0;
        *hold_ms = 0;
        return false;
    }
    return true;
}

/* The "match" object: the keys the route's configuration sets, in a fixed order. */
static void match_json(struct sbuf *o, const struct conf_route *cr)
{
    const char *sep = "";

    sb_puts(o, "{");
    if (cr->host) {
        sb_puts(o, "\"host\":");
        sb_json_str(o, cr->host);
        sep = ",";
    }
    if (cr->path) {
        sb_printf(o, "%s\"path\":", sep);
        sb_json_str(o, cr->path);
        sep = ",";
    }
    if (cr->path_prefix) {
        sb_printf(o, "%s\"path_prefix\":", sep);
        sb_json_str(o, cr->path_prefix);
        sep = ",";
    }
    if (cr->methods.n > 0) {
        sb_printf(o, "%s\"methods\":[", sep);
        for (int k = 0; k < cr->methods.n; k++) {
            sb_puts(o, k ? "," : "");
            sb_json_str(o, cr->methods.v[k]);
        }
        sb_puts(o, "]");
        sep = ",";
    }
    if (cr->nheaders > 0) {
        sb_printf(o, "%s\"headers\":[", sep);
        for (int k = 0; k < cr->nheaders; k++) {
            sb_puts(o, k ? ",{\"name\":" : "{\"name\":");
            sb_json_str(o, cr->headers[k].name);
            sb_puts(o, ",\"value\":");
            sb_json_str(o, cr->headers[k].value);
            sb_puts(o, "}");
        }
        sb_puts(o, "]");
    }
    sb_puts(o, "}");
}

void routejson_route(struct sbuf *o, const struct model *m, uint32_t i)
{
    const struct rt_route *rt = &m->routes[i];
    const struct rate *r = &rt->rate;
    int64_t hold;
    bool maint;
    int retry;

    sb_puts(o, "{\"name\":");
    sb_json_str(o, rt->name);
    sb_puts(o, ",\"match\":");
    match_json(o, &m->conf->routes[i]);
    sb_puts(o, ",\"pool\":");
    if (rt->pool >= 0 && (uint32_t)rt->pool < m->npools && !m->pools[rt->pool].removed)
        sb_json_str(o, m->pools[rt->pool].name);
    else
        sb_puts(o, "null");
    maint = routejson_maintenance(m, i, &retry, &hold);
    sb_printf(o,
              ",\"state\":\"%s\",\"maintenance_retry_after\":%d,\"maintenance_hold_ms\":%lld,"
              "\"rps\":%.1f,\"error_rate\":%.4f,\"p99_ms\":%.3f}",
              maint ? "maintenance" : "serving", retry, (long long)hold, r->rps, r->error_rate,
              r->p99_ms);
}

void routejson_match_text(struct sbuf *o, const struct conf_route *cr)
{
    size_t start = o->len;

    if (cr->host)
        sb_printf(o, "host=%s", cr->host);
    if (cr->path)
        sb_printf(o, "%spath=%s", o->len > start ? " " : "", cr->path);
    if (cr->path_prefix)
        sb_printf(o, "%spath_prefix=%s", o->len > start ? " " : "", cr->path_prefix);
    for (int k = 0; k < cr->methods.n; k++)
        sb_printf(o, "%s%s", k ? "," : o->len > start ? " methods=" : "methods=", cr->methods.v[k]);
    for (int k = 0; k < cr->nheaders; k++)
        sb_printf(o, "%sheader=%s:%s", o->len > start ? " " : "", cr->headers[k].name,
                  cr->headers[k].value);
    if (o->len == start)
        sb_puts(o, "*");
}
