/*
 * cluster.c - fleet mode: the routing intent of a fleet of veer instances
 * lives in etcd, and every instance applies it through the same publish as
 * a local change (ARCHITECTURE.md, "Fleet mode").
 *
 * Keys under the configured prefix:
 *   pools/NAME    {"shares":{G:n},"backends":{B:{"weight":w,"admin":"ready"}},
 *                  "maintenance":{"on":b,"retry_after":n,"hold_ms":n}}
 *   maintenance   {"on":b,"retry_after":n,"hold_ms":n}    (every pool)
 *   instances/ID  {"revision":R,"generation":G,"pid":P}   (bound to the instance's lease)
 *
 * An operator change on any instance is computed and checked as usual,
 * then written as one transaction guarded by the mod revision of the key
 * as this instance last applied it (compare-and-swap): a concurrent change
 * makes it fail with "ERR conflict" and nothing changes. The writer does
 * not publish it itself: like every instance, it applies the revision
 * when its watch delivers it, then records the revision it applied under
 * instances/ID. The writer answers once every live instance (every record
 * under instances/, which vanish with their lease) shows the revision, or
 * at the timeout, naming the laggards.
 *
 * Health and circuit breakers stay local. Losing etcd never touches
 * routing: the instance keeps the last state it applied, reports
 * veer_cluster_connected 0, refuses changes, and reconnects with backoff;
 * every (re)connection reads the whole prefix before watching again, so
 * nothing made meanwhile (or compacted away) is missed. At start-up veer
 * waits briefly for that first read before it reports ready; without etcd
 * it starts from its state file and says so.
 */
#include "control-i.h"
#include "audit.h"
#include "cluster.h"
#include "etcd.h"
#include "state.h"
#include "veer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEASE_TTL_S     5
#define KEEPALIVE_MS    1500
#define CALL_TIMEOUT_MS 2000
#define ACK_TIMEOUT_MS  5000
#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  2000

struct instance {
    char *id;
    int64_t rev;
    uint64_t gen;
    int pid;
    struct instance *next;
};

/* The mod revision of an intent key as last applied, and its value (for a reload). */
struct intent {
    char *key; /* after the prefix: "pools/api", "maintenance" */
    int64_t mod;
    json_t *value;
    struct intent *next;
};

struct ack {
    char id[64];
    double ms;
};

struct proposal {
    struct ctl_req *r;
    bool maint;
    int64_t rev;      /* revision of the committed change, 0 until etcd answered */
    uint64_t t_ok_us; /* when etcd answered */
    uint64_t gen, applied_us;
    bool applied_here;
    char *before, *after; /* maintenance: audit JSON */
    struct ack *acks;
    unsigned nacks;
    struct event *timer;
    unsigned epoch;
    struct proposal *next;
};

static struct {
    bool on;
    const struct conf_cluster *conf;
    struct event_base *base;
    struct etcd *etcd;
    char prefix[200];
    unsigned epoch; /* bumped at every (re)connection: stale callbacks see a different one */
    bool connected, synced;
    char last_err[256];
    int64_t lease;
    int64_t rev; /* revision of the intent applied last */
    struct etcd_watch *watch;
    struct event *keepalive, *retry;
    int backoff_ms;
    struct intent *intents;
    struct instance *insts;
    struct proposal *props;
    bool record_busy, record_dirty;
    unsigned long applied_count;
} cl;

static void reconnect_later(const char *why);
static void check_proposals(void);

bool cluster_on(void)
{
    return cl.on;
}

bool cluster_connected(void)
{
    return cl.connected;
}

int64_t cluster_revision(void)
{
    return cl.rev;
}

bool cluster_synced(void)
{
    return !cl.on || cl.synced;
}

/* --- keys and values -------------------------------------------------------------- */

static json_t *key_json(const char *rel)
{
    char k[512];

    snprintf(k, sizeof(k), "%s%s", cl.prefix, rel);
    return etcd_b64(k, strlen(k));
}

/* The key after the prefix, or NULL when it is not under it. */
static char *rel_key(const json_t *kv)
{
    size_t n, pl = strlen(cl.prefix);
    char *k = etcd_unb64(json_object_get(kv, "key"), &n), *rel;

    if (k == NULL || n < pl || memcmp(k, cl.prefix, pl) != 0) {
        free(k);
        return NULL;
    }
    rel = veer_strdup(k + pl);
    free(k);
    return rel;
}

static struct intent *intent_of(const char *rel, bool create)
{
    struct intent *i;

    for (i = cl.intents; i; i = i->next)
        if (strcmp(i->key, rel) == 0)
            return i;
    if (!create)
        return NULL;
    i = veer_calloc(1, sizeof(*i));
    i->key = veer_strdup(rel);
    i->next = cl.intents;
    cl.intents = i;
    return i;
}

static int64_t mod_of(const char *rel)
{
    const struct intent *i = intent_of(rel, false);

    return i ? i->mod : 0;
}

static json_t *maint_json(bool on, int retry_after, int64_t hold_ms)
{
    return json_pack("{s:b,s:i,s:I}", "on", on, "retry_after", retry_after, "hold_ms",
                     (json_int_t)hold_ms);
}

/* A pool's intent: the edit's shares, weights and admin states (the model's when e is NULL). */
static json_t *pool_json(int pi, const struct pool_edit *e, bool maint, int retry, int64_t hold)
{
    const struct rt_pool *p = &ctl.model->pools[pi];
    json_t *shares = json_object(), *bes = json_object();

    for (uint32_t g = 0; g < p->ng; g++)
        json_object_set_new(shares, p->g[g].name,
                            json_integer(e && g < e->ng ? e->share[g] : p->g[g].share));
    for (uint32_t i = 0; i < p->nb; i++) {
        int w = e && i < e->nb ? e->weight[i] : p->b[i].weight;
        enum admin_state a = e && i < e->nb ? e->admin[i] : p->b[i].admin;

        json_object_set_new(bes, p->b[i].be->name,
                            json_pack("{s:i,s:s}", "weight", w, "admin", admin_state_name(a)));
    }
    return json_pack("{s:o,s:o,s:o}", "shares", shares, "backends", bes, "maintenance",
                     maint_json(maint, retry, hold));
}

static void maint_from_json(const json_t *m, bool *on, int *retry, int64_t *hold)
{
    if (!json_is_object(m))
        return;
    *on = json_is_true(json_object_get(m, "on"));
    *retry = (int)json_integer_value(json_object_get(m, "retry_after"));
    *hold = (int64_t)json_integer_value(json_object_get(m, "hold_ms"));
}

/*
 * Apply a pool's intent to the model (not published yet). Names the local
 * configuration does not have are skipped; shares that do not total 100
 * are refused as a whole. True when something changed.
 */
static bool apply_pool(const char *name, const json_t *v)
{
    int pi = model_find_pool(ctl.model, name), total = 0;
    struct rt_pool *p;
    struct pool_edit *e;
    const char *k;
    json_t *x;
    bool changed = false, maint;
    int retry;
    int64_t hold;

    if (pi < 0 || ctl.model->pools[pi].removed) {
        log_debug("cluster: pool %s is not in this instance's configuration", name);
        return false;
    }
    p = &ctl.model->pools[pi];
    e = ctl_edit_save(pi);
    json_object_foreach (json_object_get(v, "shares"), k, x) {
        int g = model_find_group(p, k);

        if (g >= 0)
            e->share[g] = (int)json_integer_value(x);
    }
    for (uint32_t g = 0; g < e->ng; g++)
        total += e->share[g];
    if (total != 100) {
        log_warn("cluster: pool %s: shares in etcd total %d, not 100 here; ignored", name, total);
        ctl_edit_free(e);
        return false;
    }
    json_object_foreach (json_object_get(v, "backends"), k, x) {
        int b = model_find_backend(p, k), a;

        if (b < 0)
            continue;
        e->weight[b] = (int)json_integer_value(json_object_get(x, "weight"));
        a = admin_state_parse(json_string_value(json_object_get(x, "admin")));
        if (a >= 0)
            e->admin[b] = (enum admin_state)a;
    }
    for (uint32_t g = 0; g < p->ng && !changed; g++)
        changed = e->share[g] != p->g[g].share;
    for (uint32_t i = 0; i < p->nb && !changed; i++)
        changed = e->weight[i] != p->b[i].weight || e->admin[i] != p->b[i].admin;
    if (changed) {
        ctl_edit_restore(pi, e);
        ctl_sync_draining(p);
    }
    ctl_edit_free(e);
    maint = p->maint;
    retry = p->maint_retry_after;
    hold = p->maint_hold_ms;
    maint_from_json(json_object_get(v, "maintenance"), &maint, &retry, &hold);
    if (maint != p->maint || retry != p->maint_retry_after || hold != p->maint_hold_ms) {
        p->maint = maint;
        p->maint_retry_after = retry;
        p->maint_hold_ms = hold;
        changed = true;
    }
    return changed;
}

static bool apply_maintenance(const json_t *v)
{
    struct model *m = ctl.model;
    bool on = m->maint;
    int retry = m->maint_retry_after;
    int64_t hold = m->maint_hold_ms;

    maint_from_json(v, &on, &retry, &hold);
    if (on == m->maint && retry == m->maint_retry_after && hold == m->maint_hold_ms)
        return false;
    m->maint = on;
    m->maint_retry_after = retry;
    m->maint_hold_ms = hold;
    return true;
}

/* An intent key's new value (NULL: deleted, nothing to apply). True when the model changed. */
static bool apply_intent(const char *rel, int64_t mod, json_t *v)
{
    struct intent *in = intent_of(rel, true);

    in->mod = mod;
    json_decref(in->value);
    in->value = json_incref(v);
    if (v == NULL)
        return false;
    if (strncmp(rel, "pools/", 6) == 0)
        return apply_pool(rel + 6, v);
    if (strcmp(rel, "maintenance") == 0)
        return apply_maintenance(v);
    return false;
}

static void instance_set(const char *id, const json_t *v)
{
    struct instance **pp, *i;

    for (pp = &cl.insts; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0)
            break;
    if (v == NULL) {
        if ((i = *pp) != NULL) {
            *pp = i->next;
            free(i->id);
            free(i);
        }
        return;
    }
    if ((i = *pp) == NULL) {
        i = veer_calloc(1, sizeof(*i));
        i->id = veer_strdup(id);
        *pp = i;
    }
    i->rev = (int64_t)json_integer_value(json_object_get(v, "revision"));
    i->gen = (uint64_t)json_integer_value(json_object_get(v, "generation"));
    i->pid = (int)json_integer_value(json_object_get(v, "pid"));
}

/*
 * One key-value from a range or a watch event (deleted when del). Returns
 * true when it was intent (the model may have changed); *changed says
 * whether it did.
 */
static bool handle_kv(const json_t *kv, bool del, bool *changed)
{
    char *rel = rel_key(kv), *text = NULL;
    json_t *v = NULL;
    bool intent = false;
    size_t n;

    if (rel == NULL)
        return false;
    if (!del) {
        json_error_t je;

        text = etcd_unb64(json_object_get(kv, "value"), &n);
        v = text ? json_loadb(text, n, 0, &je) : NULL;
        if (v == NULL)
            log_warn("cluster: %s%s is not JSON; ignored", cl.prefix, rel);
    }
    if (strncmp(rel, "instances/", 10) == 0) {
        if (del || v)
            instance_set(rel + 10, v);
    } else if (strncmp(rel, "pools/", 6) == 0 || strcmp(rel, "maintenance") == 0) {
        intent = true;
        if (del || v)
            *changed |= apply_intent(rel, etcd_int(json_object_get(kv, "mod_revision")), v);
    }
    json_decref(v);
    free(text);
    free(rel);
    return intent;
}

/* --- this instance's record ---------------------------------------------------------- */

static void put_record(void);

static void record_done(void *arg, json_t *res, const char *err)
{
    unsigned epoch = (unsigned)(uintptr_t)arg;

    if (epoch != cl.epoch)
        return;
    cl.record_busy = false;
    if (res == NULL) {
        reconnect_later(err);
        return;
    }
    if (cl.record_dirty)
        put_record();
}

/* instances/ID = the revision applied, bound to the lease; one write at a time. */
static void put_record(void)
{
    char rel[128], *text;
    json_t *v, *body;

    if (!cl.connected && !cl.synced)
        return;
    if (cl.record_busy) {
        cl.record_dirty = true;
        return;
    }
    cl.record_busy = true;
    cl.record_dirty = false;
    snprintf(rel, sizeof(rel), "instances/%s", cl.conf->instance);
    v = json_pack("{s:I,s:I,s:i}", "revision", (json_int_t)cl.rev, "generation",
                  (json_int_t)ctl.model->generation, "pid", (int)getpid());
    text = json_dumps(v, JSON_COMPACT);
    body = json_pack("{s:o,s:o,s:I}", "key", key_json(rel), "value", etcd_b64(text, strlen(text)),
                     "lease", (json_int_t)cl.lease);
    etcd_post(cl.etcd, "/v3/kv/put", body, CALL_TIMEOUT_MS, record_done,
              (void *)(uintptr_t)cl.epoch);
    free(text);
    json_decref(v);
}

/* Intent up to revision rev is in the model: publish it once, say so, record it. */
static void applied(int64_t rev, bool changed, uint64_t t0)
{
    uint64_t gen = ctl.model->generation;

    if (changed) {
        gen = control_publish();
        control_save_state();
    }
    cl.rev = rev;
    cl.applied_count++;
    for (struct proposal *p = cl.props; p; p = p->next) {
        if (p->rev && rev >= p->rev && !p->applied_here) {
            p->applied_here = true;
            p->gen = gen;
            p->applied_us = ctl.last_store_us - p->r->t_read_us;
        }
    }
    log_info("cluster: applied revision %lld (gen %llu%s) in %.0f us", (long long)rev,
             (unsigned long long)gen, changed ? "" : ", no change", (double)(veer_now_us() - t0));
    put_record();
    check_proposals();
}

/* --- connection: lease, full read, watch, keep-alive ------------------------------------ */

static void watch_msg(void *arg, json_t *msg)
{
    json_t *res = json_object_get(msg, "result"), *ev;
    bool changed = false, intent = false;
    uint64_t t0 = veer_now_us();
    size_t i;

    if ((unsigned)(uintptr_t)arg != cl.epoch || res == NULL)
        return;
    if (json_is_true(json_object_get(res, "canceled"))) {
        reconnect_later("etcd cancelled the watch (compacted?)");
        return;
    }
    json_array_foreach (json_object_get(res, "events"), i, ev) {
        bool del = json_is_string(json_object_get(ev, "type")) &&
                   strcmp(json_string_value(json_object_get(ev, "type")), "DELETE") == 0;

        intent |= handle_kv(json_object_get(ev, "kv"), del, &changed);
    }
    if (intent)
        applied(etcd_int(json_object_get(json_object_get(res, "header"), "revision")), changed, t0);
    else
        check_proposals(); /* an instance recorded a revision */
}

static void watch_end(void *arg, const char *why)
{
    if ((unsigned)(uintptr_t)arg == cl.epoch)
        reconnect_later(why);
}

static void keepalive_done(void *arg, json_t *res, const char *err)
{
    json_t *r;

    if ((unsigned)(uintptr_t)arg != cl.epoch)
        return;
    if (res == NULL) {
        reconnect_later(err);
        return;
    }
    r = json_object_get(res, "result");
    if (etcd_int(json_object_get(r ? r : res, "TTL")) <= 0)
        reconnect_later("the lease expired");
}

static void keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    etcd_post(cl.etcd, "/v3/lease/keepalive", json_pack("{s:I}", "ID", (json_int_t)cl.lease),
              CALL_TIMEOUT_MS, keepalive_done, (void *)(uintptr_t)cl.epoch);
}

static void range_done(void *arg, json_t *res, const char *err)
{
    uint64_t t0 = veer_now_us();
    json_t *kv, *create;
    bool changed = false;
    struct timeval tv = {KEEPALIVE_MS / 1000, (KEEPALIVE_MS % 1000) * 1000};
    char end[256];
    int64_t rev;
    size_t i;

    if ((unsigned)(uintptr_t)arg != cl.epoch)
        return;
    if (res == NULL) {
        reconnect_later(err);
        return;
    }
    /* The instance table is rebuilt from this read. */
    while (cl.insts)
        instance_set(cl.insts->id, NULL);
    json_array_foreach (json_object_get(res, "kvs"), i, kv)
        handle_kv(kv, false, &changed);
    rev = etcd_int(json_object_get(json_object_get(res, "header"), "revision"));
    cl.connected = true;
    cl.backoff_ms = BACKOFF_MIN_MS;
    log_info("cluster: connected to %s, read %s at revision %lld", etcd_endpoint(cl.etcd),
             cl.prefix, (long long)rev);
    snprintf(end, sizeof(end), "%s", cl.prefix);
    end[strlen(end) - 1]++;
    create = json_pack("{s:o,s:o,s:I}", "key", key_json(""), "range_end",
                       etcd_b64(end, strlen(end)), "start_revision", (json_int_t)(rev + 1));
    cl.watch = etcd_watch_start(cl.etcd, create, watch_msg, watch_end, arg);
    if (cl.watch == NULL) {
        reconnect_later("cannot open the watch");
        return;
    }
    cl.keepalive = event_new(cl.base, -1, EV_PERSIST, keepalive_cb, NULL);
    event_add(cl.keepalive, &tv);
    cl.synced = true;
    applied(rev, changed, t0);
}

static void lease_done(void *arg, json_t *res, const char *err)
{
    char end[256];

    if ((unsigned)(uintptr_t)arg != cl.epoch)
        return;
    if (res == NULL || etcd_int(json_object_get(res, "ID")) == 0) {
        reconnect_later(err ? err : "no lease granted");
        return;
    }
    cl.lease = etcd_int(json_object_get(res, "ID"));
    snprintf(end, sizeof(end), "%s", cl.prefix);
    end[strlen(end) - 1]++; /* the prefix's range end: its last byte plus one */
    etcd_post(cl.etcd, "/v3/kv/range",
              json_pack("{s:o,s:o}", "key", key_json(""), "range_end", etcd_b64(end, strlen(end))),
              CALL_TIMEOUT_MS, range_done, arg);
}

static void connect_etcd(evutil_socket_t fd, short what, void *arg)
{
    cl.epoch++;
    cl.record_busy = false;
    etcd_post(cl.etcd, "/v3/lease/grant", json_pack("{s:i}", "TTL", LEASE_TTL_S), CALL_TIMEOUT_MS,
              lease_done, (void *)(uintptr_t)cl.epoch);
}

static void fail_proposals(const char *why);

/* Lost etcd (or never had it): keep routing as it is, try again with backoff. */
static void reconnect_later(const char *why)
{
    struct timeval tv;

    if (why == NULL)
        why = "unknown error";
    if (cl.connected)
        log_warn("cluster: lost etcd (%s); serving the last applied state (revision %lld), "
                 "changes are refused until it is back",
                 why, (long long)cl.rev);
    else if (strcmp(cl.last_err, why) != 0)
        log_warn("cluster: etcd unreachable: %s; retrying", why);
    snprintf(cl.last_err, sizeof(cl.last_err), "%s", why);
    cl.connected = false;
    cl.epoch++; /* every callback of the old connection is now stale */
    etcd_watch_stop(cl.watch);
    cl.watch = NULL;
    if (cl.keepalive) {
        event_free(cl.keepalive);
        cl.keepalive = NULL;
    }
    fail_proposals("cluster: lost etcd while waiting for the fleet");
    tv.tv_sec = cl.backoff_ms / 1000;
    tv.tv_usec = (cl.backoff_ms % 1000) * 1000;
    evtimer_add(cl.retry, &tv);
    cl.backoff_ms = cl.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cl.backoff_ms * 2;
}

/* --- proposals --------------------------------------------------------------------------- */

static void proposal_free(struct proposal *p)
{
    struct proposal **pp;

    for (pp = &cl.props; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (p->timer)
        event_free(p->timer);
    free(p->before);
    free(p->after);
    free(p->acks);
    free(p);
}

static void refuse(struct proposal *p, const char *why)
{
    struct ctl_req *r = p->r;
    bool maint = p->maint;

    proposal_free(p);
    if (maint) {
        ctl.busy = NULL;
        ctl_refuse(r, "%s", why);
        ctl_next_change();
    } else {
        ctl_cluster_refused(r, why);
    }
}

static void fail_proposals(const char *why)
{
    while (cl.props) {
        char msg[300];

        if (cl.props->rev)
            snprintf(msg, sizeof(msg), "%s (revision %lld is committed; see show cluster)", why,
                     (long long)cl.props->rev);
        else
            snprintf(msg, sizeof(msg), "%s; the change may not have been made (see show cluster)",
                     why);
        refuse(cl.props, msg);
    }
}

static const struct ack *ack_of(const struct proposal *p, const char *id)
{
    for (unsigned i = 0; i < p->nacks; i++)
        if (strcmp(p->acks[i].id, id) == 0)
            return &p->acks[i];
    return NULL;
}

/* Answer p when this instance and every live one applied its revision. */
static void try_finish(struct proposal *p)
{
    struct sbuf extra;
    double fleet = 0;
    unsigned n = 0;

    if (p->rev == 0 || !p->applied_here)
        return;
    for (const struct instance *i = cl.insts; i; i = i->next) {
        if (i->rev < p->rev)
            return;
        if (ack_of(p, i->id) == NULL) {
            p->acks = veer_realloc(p->acks, (p->nacks + 1) * sizeof(*p->acks));
            snprintf(p->acks[p->nacks].id, sizeof(p->acks[p->nacks].id), "%s", i->id);
            p->acks[p->nacks++].ms = (double)(veer_now_us() - p->t_ok_us) / 1000.0;
        }
    }
    sb_init(&extra);
    sb_printf(&extra, " revision=%lld", (long long)p->rev);
    for (const struct instance *i = cl.insts; i; i = i->next) {
        const struct ack *a = ack_of(p, i->id);

        sb_printf(&extra, "%s%s:%.2fms", n++ ? "," : " applied=", i->id, a->ms);
        if (a->ms > fleet)
            fleet = a->ms;
    }
    sb_printf(&extra, " instances=%u fleet_ms=%.2f", n, fleet);
    {
        struct ctl_req *r = p->r;
        bool maint = p->maint;
        uint64_t gen = p->gen, applied_us = p->applied_us;
        char *before = p->before, *after = p->after;

        p->before = p->after = NULL;
        proposal_free(p);
        if (maint) {
            char line[700];

            audit_write("operator", &r->peer, r->line, "OK", gen, before, after);
            persist_sync_audit();
            snprintf(line, sizeof(line), "OK gen=%llu applied_us=%llu%s", (unsigned long long)gen,
                     (unsigned long long)applied_us, extra.s);
            ctl.busy = NULL;
            ctl_finish(r, line, true);
            ctl_next_change();
        } else {
            ctl_cluster_committed(r, gen, applied_us, extra.s);
        }
        free(before);
        free(after);
    }
    sb_free(&extra);
}

static void check_proposals(void)
{
    struct proposal *p = cl.props, *next;

    for (; p; p = next) {
        next = p->next;
        /* Acks as they come: an instance's latency is when its record showed the revision. */
        if (p->rev) {
            for (const struct instance *i = cl.insts; i; i = i->next) {
                if (i->rev >= p->rev && ack_of(p, i->id) == NULL) {
                    p->acks = veer_realloc(p->acks, (p->nacks + 1) * sizeof(*p->acks));
                    snprintf(p->acks[p->nacks].id, sizeof(p->acks[p->nacks].id), "%s", i->id);
                    p->acks[p->nacks++].ms = (double)(veer_now_us() - p->t_ok_us) / 1000.0;
                }
            }
        }
        try_finish(p);
    }
}

static void ack_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proposal *p = arg;
    struct sbuf o;
    unsigned n = 0;

    sb_init(&o);
    sb_printf(&o, "timeout: revision %lld is committed but not applied by", (long long)p->rev);
    if (!p->applied_here)
        sb_printf(&o, " %s (this instance)", cl.conf->instance), n++;
    for (const struct instance *i = cl.insts; i; i = i->next)
        if (i->rev < p->rev)
            sb_printf(&o, "%s %s (at %lld)", n++ ? "," : "", i->id, (long long)i->rev);
    sb_printf(&o, " after %lld ms",
              (long long)(p->r->cmd.timeout_ms > 0 ? p->r->cmd.timeout_ms : ACK_TIMEOUT_MS));
    refuse(p, o.s);
    sb_free(&o);
}

static void txn_done(void *arg, json_t *res, const char *err)
{
    struct proposal *p = arg;
    int64_t t = p->r->cmd.timeout_ms > 0 ? p->r->cmd.timeout_ms : ACK_TIMEOUT_MS;
    struct timeval tv = {t / 1000, (t % 1000) * 1000};
    char msg[400];

    if (res == NULL) {
        snprintf(msg, sizeof(msg),
                 "cluster: %s; the change may not have been made (see show cluster)", err);
        refuse(p, msg);
        return;
    }
    if (!json_is_true(json_object_get(res, "succeeded"))) {
        snprintf(msg, sizeof(msg),
                 "conflict: the cluster state changed since this instance read it (revision "
                 "%lld; now %lld); nothing changed, retry",
                 (long long)cl.rev,
                 (long long)etcd_int(json_object_get(json_object_get(res, "header"), "revision")));
        refuse(p, msg);
        return;
    }
    p->rev = etcd_int(json_object_get(json_object_get(res, "header"), "revision"));
    p->t_ok_us = veer_now_us();
    if (cl.rev >= p->rev && !p->applied_here) {
        /* The watch was faster than this reply. */
        p->applied_here = true;
        p->gen = ctl.model->generation;
        p->applied_us = ctl.last_store_us - p->r->t_read_us;
    }
    p->timer = evtimer_new(cl.base, ack_timeout_cb, p);
    evtimer_add(p->timer, &tv);
    check_proposals();
}

/* One transaction: rel = v (taken) if its mod revision is still the one applied here. */
static void cas_put(const char *rel, json_t *v, etcd_done_cb cb, void *arg)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    json_t *cmp, *put;

    cmp = json_pack("[{s:o,s:s,s:s,s:I}]", "key", key_json(rel), "target", "MOD", "result", "EQUAL",
                    "mod_revision", (json_int_t)mod_of(rel));
    put = json_pack("[{s:{s:o,s:o}}]", "requestPut", "key", key_json(rel), "value",
                    etcd_b64(text, strlen(text)));
    etcd_post(cl.etcd, "/v3/kv/txn", json_pack("{s:o,s:o}", "compare", cmp, "success", put),
              CALL_TIMEOUT_MS, cb, arg);
    free(text);
    json_decref(v);
}

/* Propose rel = v for r; NULL when it was refused at once (r answered). */
static struct proposal *propose(struct ctl_req *r, bool maint, const char *rel, json_t *v)
{
    struct proposal *p;

    if (!cl.connected) {
        char msg[400];

        snprintf(msg, sizeof(msg), "cluster: etcd is unreachable (%s); nothing changed",
                 cl.last_err[0] ? cl.last_err : "not connected yet");
        json_decref(v);
        if (maint) {
            ctl.busy = NULL;
            ctl_refuse(r, "%s", msg);
            ctl_next_change();
        } else {
            ctl_cluster_refused(r, msg);
        }
        return NULL;
    }
    p = veer_calloc(1, sizeof(*p));
    p->r = r;
    p->maint = maint;
    p->epoch = cl.epoch;
    p->next = cl.props;
    cl.props = p;
    cas_put(rel, v, txn_done, p);
    return p;
}

void cluster_propose(struct ctl_req *r)
{
    int pi = r->edit->pool;
    const struct rt_pool *p = &ctl.model->pools[pi];
    char rel[200];

    snprintf(rel, sizeof(rel), "pools/%s", p->name);
    propose(r, false, rel,
            pool_json(pi, r->edit, p->maint, p->maint_retry_after, p->maint_hold_ms));
}

void cluster_propose_maintenance(struct ctl_req *r)
{
    const struct cmd *c = &r->cmd;
    int pi = -1, retry = c->retry_after >= 0 ? c->retry_after : ctl.conf->maintenance.retry_after;
    int64_t hold = c->on && c->hold_ms > 0 ? c->hold_ms : 0;
    struct proposal *prop;
    char rel[200], before[160], after[160];
    bool was;
    int was_ra;

    if (c->pool[0] &&
        ((pi = model_find_pool(ctl.model, c->pool)) < 0 || ctl.model->pools[pi].removed)) {
        ctl.busy = NULL;
        ctl_refuse(r, "unknown pool %s", c->pool);
        ctl_next_change();
        return;
    }
    was = pi >= 0 ? ctl.model->pools[pi].maint : ctl.model->maint;
    was_ra = pi >= 0 ? ctl.model->pools[pi].maint_retry_after : ctl.model->maint_retry_after;
    snprintf(before, sizeof(before), "{\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             pi >= 0 ? ctl.model->pools[pi].name : "*", was ? "true" : "false", was_ra);
    snprintf(after, sizeof(after), "{\"pool\":\"%s\",\"maintenance\":%s,\"retry_after\":%d}",
             pi >= 0 ? ctl.model->pools[pi].name : "*", c->on ? "true" : "false",
             c->on ? retry : 0);
    if (pi >= 0) {
        snprintf(rel, sizeof(rel), "pools/%s", ctl.model->pools[pi].name);
        prop = propose(r, true, rel, pool_json(pi, NULL, c->on, c->on ? retry : 0, hold));
    } else {
        prop = propose(r, true, "maintenance", maint_json(c->on, c->on ? retry : 0, hold));
    }
    if (prop) {
        prop->before = veer_strdup(before);
        prop->after = veer_strdup(after);
    }
}

static void push_done(void *arg, json_t *res, const char *err)
{
    char *rel = arg;

    if (res == NULL)
        log_warn("cluster: could not write %s: %s", rel, err);
    else if (!json_is_true(json_object_get(res, "succeeded")))
        log_warn("cluster: %s changed in the cluster meanwhile; the cluster's value wins", rel);
    free(rel);
}

void cluster_push_pool(int pi)
{
    const struct rt_pool *p = &ctl.model->pools[pi];
    char rel[200];

    if (!cl.on || !cl.connected)
        return;
    snprintf(rel, sizeof(rel), "pools/%s", p->name);
    cas_put(rel, pool_json(pi, NULL, p->maint, p->maint_retry_after, p->maint_hold_ms), push_done,
            veer_strdup(rel));
}

void cluster_reapply(void)
{
    bool changed = false;

    if (!cl.on)
        return;
    for (struct intent *i = cl.intents; i; i = i->next)
        if (i->value)
            changed |= apply_intent(i->key, i->mod, i->value);
    if (changed) {
        uint64_t gen = control_publish();

        log_info("cluster: the fleet's intent (revision %lld) re-applied after the reload "
                 "(gen %llu)",
                 (long long)cl.rev, (unsigned long long)gen);
    }
}

/* --- show cluster ------------------------------------------------------------------------ */

void cluster_show(struct ctl_req *r)
{
    struct sbuf o;

    if (!cl.on) {
        ctl_refuse(r, "no cluster block in the configuration: this instance runs alone");
        return;
    }
    sb_init(&o);
    if (r->cmd.json) {
        unsigned n = 0;

        sb_puts(&o, "{\"instance\":");
        sb_json_str(&o, cl.conf->instance);
        sb_puts(&o, ",\"prefix\":");
        sb_json_str(&o, cl.prefix);
        sb_puts(&o, ",\"etcd\":");
        sb_json_str(&o, etcd_endpoint(cl.etcd));
        sb_printf(&o, ",\"connected\":%s,\"revision\":%lld,\"generation\":%llu,\"instances\":[",
                  cl.connected ? "true" : "false", (long long)cl.rev,
                  (unsigned long long)ctl.model->generation);
        for (const struct instance *i = cl.insts; i; i = i->next) {
            sb_puts(&o, n++ ? ",{\"id\":" : "{\"id\":");
            sb_json_str(&o, i->id);
            sb_printf(&o, ",\"revision\":%lld,\"generation\":%llu,\"pid\":%d,\"self\":%s}",
                      (long long)i->rev, (unsigned long long)i->gen, i->pid,
                      strcmp(i->id, cl.conf->instance) == 0 ? "true" : "false");
        }
        sb_puts(&o, "]}");
    } else {
        sb_printf(&o, "cluster %s etcd %s %s revision %lld instance %s\n", cl.prefix,
                  etcd_endpoint(cl.etcd), cl.connected ? "connected" : "DISCONNECTED",
                  (long long)cl.rev, cl.conf->instance);
        sb_puts(&o, "instance  revision  generation  pid\n");
        for (const struct instance *i = cl.insts; i; i = i->next)
            sb_printf(&o, "%-9s %-9lld %-11llu %d%s\n", i->id, (long long)i->rev,
                      (unsigned long long)i->gen, i->pid,
                      strcmp(i->id, cl.conf->instance) == 0 ? " (this one)" : "");
        if (!cl.connected && cl.last_err[0])
            sb_printf(&o, "last error: %s\n", cl.last_err);
    }
    ctl_finish(r, o.s, true);
    sb_free(&o);
}

/* --- life cycle -------------------------------------------------------------------------- */

int cluster_start(struct event_base *base, const struct veer_conf *conf, char *err, size_t len)
{
    if (!conf->cluster.enabled)
        return VEER_OK;
    cl.conf = &conf->cluster;
    cl.base = base;
    cl.etcd = etcd_new(base, conf->cluster.etcd, conf->cluster.netcd, err, len);
    if (cl.etcd == NULL)
        return VEER_ERROR;
    snprintf(cl.prefix, sizeof(cl.prefix), "%s/", conf->cluster.prefix);
    cl.on = true;
    cl.backoff_ms = BACKOFF_MIN_MS;
    cl.retry = evtimer_new(base, connect_etcd, NULL);
    connect_etcd(-1, 0, NULL);
    return VEER_OK;
}

static void nothing_cb(evutil_socket_t fd, short what, void *arg)
{
}

void cluster_wait_sync(int timeout_ms)
{
    uint64_t end = veer_now_us() + (uint64_t)timeout_ms * 1000;

    if (!cl.on)
        return;
    while (!cl.synced && veer_now_us() < end) {
        struct timeval tv = {0, 10 * 1000};
        struct event *tick = evtimer_new(cl.base, nothing_cb, NULL);

        evtimer_add(tick, &tv); /* so that one loop iteration never waits longer */
        event_base_loop(cl.base, EVLOOP_ONCE);
        event_free(tick);
    }
    if (cl.synced)
        log_info("cluster: instance %s starts at revision %lld", cl.conf->instance,
                 (long long)cl.rev);
    else
        log_warn("cluster: etcd unreachable at start (%s); serving from the state file until it "
                 "is back",
                 cl.last_err[0] ? cl.last_err : "no answer");
}

static void revoke_done(void *arg, json_t *res, const char *err)
{
    (void)arg;
    (void)res;
    (void)err;
}

void cluster_leave(void)
{
    if (!cl.on || !cl.connected)
        return;
    /* Leave the live set now rather than when the lease runs out. */
    etcd_post(cl.etcd, "/v3/lease/revoke", json_pack("{s:I}", "ID", (json_int_t)cl.lease),
              CALL_TIMEOUT_MS, revoke_done, NULL);
}

void cluster_stop(void)
{
    if (!cl.on)
        return;
    while (cl.props)
        refuse(cl.props, "cluster: shutting down");
    etcd_watch_stop(cl.watch);
    cl.watch = NULL;
    if (cl.keepalive)
        event_free(cl.keepalive);
    if (cl.retry)
        event_free(cl.retry);
    etcd_free(cl.etcd);
    while (cl.insts)
        instance_set(cl.insts->id, NULL);
    while (cl.intents) {
        struct intent *i = cl.intents;

        cl.intents = i->next;
        json_decref(i->value);
        free(i->key);
        free(i);
    }
    memset(&cl, 0, sizeof(cl));
}
