/*
 * discjson.c - one discover entry as JSON (discjson.h).
 */
#include "discjson.h"
#include "discovery.h"
#include "model.h"
#include "sbuf.h"

#include <string.h>

static void time_or_null(struct sbuf *o, double t)
{
    if (t > 0)
        sb_printf(o, "%.3f", t);
    else
        sb_puts(o, "null");
}

void discjson_entry(struct sbuf *o, const struct model *m, unsigned i)
{
    struct discovery_info d;
    const struct rt_pool *p = NULL;
    int pi;
    bool first = true;

    discovery_get(i, &d);
    pi = model_find_pool(m, d.pool);
    if (pi >= 0)
        p = &m->pools[pi];
    sb_puts(o, "{\"pool\":");
    sb_json_str(o, d.pool);
    sb_puts(o, ",\"name\":");
    sb_json_str(o, d.name);
    sb_printf(o, ",\"kind\":\"%s\",\"query\":", d.kind);
    sb_json_str(o, d.query);
    sb_puts(o, ",\"group\":");
    sb_json_str(o, d.group);
    sb_puts(o, ",\"addresses\":[");
    for (uint32_t k = 0; k < d.naddrs; k++) {
        int bi = p ? model_find_backend(p, d.addrs[k].backend) : -1;
        /* A backend of another origin that holds the name says nothing of this address. */
        bool own = bi >= 0 && p->b[bi].disc_id == d.id;
        const char *state = own ? backend_state_name(model_state(p, (uint32_t)bi)) : "absent";

        sb_puts(o, k ? ",{\"backend\":" : "{\"backend\":");
        sb_json_str(o, d.addrs[k].backend);
        sb_puts(o, ",\"address\":");
        sb_json_str(o, d.addrs[k].addr.text);
        sb_printf(o, ",\"weight\":%d,\"state\":\"%s\"}", own ? p->b[bi].weight : d.addrs[k].weight,
                  state);
    }
    sb_puts(o, "],\"draining\":[");
    for (uint32_t k = 0; p && k < p->nb; k++) {
        if (p->b[k].disc_id != d.id || !p->b[k].gone)
            continue;
        sb_puts(o, first ? "" : ",");
        sb_json_str(o, p->b[k].be->name);
        first = false;
    }
    sb_puts(o, "],\"ttl_s\":");
    if (d.has_ttl)
        sb_printf(o, "%u", d.ttl_s);
    else
        sb_puts(o, "null");
    sb_puts(o, ",\"next_resolution_ms\":");
    if (d.next_ms >= 0)
        sb_printf(o, "%lld", (long long)d.next_ms);
    else
        sb_puts(o, "null");
    sb_puts(o, ",\"last_success\":");
    time_or_null(o, d.last_success);
    sb_printf(o, ",\"failing\":%s,\"last_error\":", d.failing ? "true" : "false");
    if (d.last_error)
        sb_json_str(o, d.last_error);
    else
        sb_puts(o, "null");
    sb_puts(o, ",\"last_error_at\":");
    time_or_null(o, d.last_error_at);
    sb_printf(o, ",\"errors\":%llu,\"resolutions\":%llu,\"unconfirmed_empty\":%u}",
              (unsigned long long)d.errors, (unsigned long long)d.resolutions, d.unconfirmed_empty);
}

void discjson_list(struct sbuf *o, const struct model *m)
{
    unsigned n = discovery_count();

    sb_puts(o, "[");
    for (unsigned i = 0; i < n; i++) {
        sb_puts(o, i ? "," : "");
        discjson_entry(o, m, i);
    }
    sb_puts(o, "]");
}
