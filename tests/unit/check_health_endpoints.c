/*
 * check_health_endpoints.c - veer's own health endpoints, driven through the
 * module's on_request_head hook (and the whole module chain) with a worker,
 * listeners, a session and a parsed request filled the way worker.c and
 * session.c fill them, and a routing snapshot built from a real config:
 * liveness answers 200; readiness answers 200, or 503 with the reason while
 * shutting down or while a listener's pool has no eligible backend; status
 * is JSON of the documented shape (read back with jansson); the prefix is
 * configurable (a trailing slash is the same prefix); other paths, and
 * every path once `enabled = false;`, are declined, i.e. proxied.
 */
#include "conf.h"
#include "modcheck.h"
#include "module.h"
#include "model.h"
#include "session.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const struct veer_module module_health_endpoints;

#define MAX_LISTENERS 4

/* A config, its model and snapshot, and one worker with a listener per `listen` entry. */
static struct {
    char dir[64];
    struct veer_conf *c;
    struct model *m;
    struct worker w;
    struct wlistener l[MAX_LISTENERS];
    struct wlistener *ls[MAX_LISTENERS];
} fx;

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    strcpy(fx.dir, "/tmp/check_health_endpoints.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(fx.dir));
}

static void teardown(void)
{
    if (fx.w.base) {
        routing_free(fx.w.routing);
        vbuf_cache_destroy(&fx.w.bufs);
        event_base_free(fx.w.base);
    }
    model_free(fx.m);
    conf_free(fx.c);
    rmdir(fx.dir);
}

/*
 * Load the config text, build its model and first snapshot, and a worker as
 * worker_create() leaves it (limits, buffer cache, one listener per
 * `listen` entry bound to its pool), minus the thread and the sockets.
 */
static void start(const char *text)
{
    char path[128], err[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/veer.conf", fx.dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    fx.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(fx.c != NULL, "config: %s", err);
    ck_assert_int_le(fx.c->nlistens, MAX_LISTENERS);
    veer_nworkers = 1;
    fx.m = model_from_conf(fx.c);
    fx.w.idx = 0;
    fx.w.base = event_base_new();
    fx.w.conf = fx.c;
    fx.w.req_limits = (struct http_limits){
        .line_bytes = (uint32_t)fx.c->limits.request_line_bytes,
        .header_bytes = (uint32_t)fx.c->limits.header_bytes,
        .header_count = (uint32_t)fx.c->limits.header_count,
        .body_bytes = (uint64_t)fx.c->limits.body_bytes,
    };
    vbuf_cache_init(&fx.w.bufs, 8);
    for (int i = 0; i < fx.c->nlistens; i++) {
        fx.l[i].fd = -1;
        fx.l[i].w = &fx.w;
        fx.l[i].lc = &fx.c->listens[i];
        fx.l[i].pool = fx.c->listens[i].pool_index;
        fx.ls[i] = &fx.l[i];
    }
    fx.w.listeners = fx.ls;
    fx.w.nlisteners = (unsigned)fx.c->nlistens;
    fx.w.routing = routing_build(fx.m);
    ck_assert_int_eq(module_health_endpoints.init(fx.c), VEER_OK);
}

/* A change as control_publish() makes it: the next generation, a new snapshot. */
static void publish(void)
{
    routing_free(fx.w.routing);
    fx.m->generation++;
    fx.w.routing = routing_build(fx.m);
}

/*
 * A session on listener li holding the request bytes `raw`, and its
 * transaction with the head parsed, as session_process() has it when it
 * calls handle_request_head() (a bodiless request: complete).
 */
static struct txn *request(int li, const char *raw)
{
    struct worker *w = &fx.w;
    struct session *s = calloc(1, sizeof(*s));
    size_t msz = http_msg_size(w->req_limits.header_count), n = strlen(raw), used;
    struct txn *t = calloc(1, sizeof(*t) + 2 * msz);
    enum http_result r;

    s->magic = SESSION_MAGIC;
    s->c.w = w;
    s->l = &fx.l[li];
    s->fd = -1;
    s->c.peer.in4.sin_family = AF_INET;
    s->c.in = vbuf_get(&w->bufs);
    ck_assert_uint_le(n, s->c.in->size);
    vbuf_add(s->c.in, raw, n);
    t->magic = TXN_MAGIC;
    t->s = &s->c;
    t->phase = TXN_REQ_HEAD;
    t->pool = s->l->pool;
    t->req = (struct http_msg *)(t + 1);
    t->res = (struct http_msg *)((char *)t->req + msz);
    t->start_us = veer_now_us();
    t->limits = w->req_limits;
    http_msg_init(t->req, HTTP_REQUEST, &t->limits);
    s->txn = t;
    r = http_parse(t->req, s->c.in->data, s->c.in->data, n, &used);
    ck_assert_int_eq(r, HTTP_HEAD_DONE);
    t->req_parsed = (uint32_t)used;
    r = http_parse(t->req, s->c.in->data, s->c.in->data + used, n - used, &used);
    ck_assert_int_eq(r, HTTP_MSG_DONE);
    t->req_parsed += (uint32_t)used;
    t->req_done = true;
    s->nreq++;
    t->bytes_in += t->req->head_len;
    return t;
}

/* Run the whole module chain on a request for path; the answer must be VEER_DONE. */
static struct resp ask(int li, const char *raw)
{
    struct txn *t = request(li, raw);
    struct resp r;

    ck_assert_int_eq(module_request_head(t), VEER_DONE);
    r = answer(t);
    txn_drop(t);
    return r;
}

/* The module and the whole chain leave this request alone: it goes on to a backend. */
static void assert_proxied(int li, const char *raw)
{
    struct txn *t = request(li, raw);

    ck_assert_msg(module_health_endpoints.on_request_head(t) == VEER_DECLINED, "answered: %s", raw);
    ck_assert_msg(module_request_head(t) == VEER_DECLINED, "chain answered: %s", raw);
    ck_assert_ptr_null(t->res_head);
    ck_assert_int_eq(t->res_status, 0);
    ck_assert_int_eq(t->phase, TXN_REQ_HEAD);
    txn_drop(t);
}

#define LISTEN_API "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
#define POOL_API                                                                                   \
    "{ name = \"api\"; backends = ("                                                               \
    "{ name = \"a1\"; address = \"127.0.0.1:1\"; },"                                               \
    "{ name = \"a2\"; address = \"127.0.0.1:2\"; } ); }"
/* Readiness-checked: its backends start PENDING, so it has no eligible one. */
#define POOL_HC                                                                                    \
    "{ name = \"hc\"; health = { path = \"/ready\"; }; backends = ("                               \
    "{ name = \"h1\"; address = \"127.0.0.1:3\"; } ); }"
#define CONF_API LISTEN_API "pools = ( " POOL_API " );\n"

START_TEST(test_liveness_answers_200_alive)
{
    struct txn *t;
    struct resp r;

    start("workers = 3;\n" CONF_API);
    t = request(0, GET("/api/health/liveness"));
    ck_assert_int_eq(module_health_endpoints.on_request_head(t), VEER_DONE);
    r = answer(t);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"alive\"}\n");
    ck_assert_ptr_nonnull(strstr(r.head, "HTTP/1.1 200 OK\r\n"));
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nContent-Type: application/json\r\n"));
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nCache-Control: no-store\r\n"));
    ck_assert_ptr_null(strstr(r.head, "Connection: close"));
    ck_assert(!t->close_client);
    txn_drop(t);
}
END_TEST

START_TEST(test_liveness_ignores_query_and_absolute_form)
{
    struct resp r;

    start(CONF_API);
    r = ask(0, GET("/api/health/liveness?probe=k8s&x=1"));
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"alive\"}\n");
    r = ask(0, "GET http://veer.test/api/health/liveness HTTP/1.1\r\nHost: veer.test\r\n\r\n");
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_head_request_gets_headers_without_body)
{
    struct resp r;

    start(CONF_API);
    r = ask(0, "HEAD /api/health/liveness HTTP/1.1\r\nHost: veer.test\r\n\r\n");
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 0);
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nContent-Length: 19\r\n"));
}
END_TEST

START_TEST(test_readiness_200_when_every_listener_pool_has_eligible_backend)
{
    struct resp r;

    start(CONF_API);
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ready\"}\n");
}
END_TEST

START_TEST(test_readiness_503_while_shutting_down)
{
    struct resp r;

    start(CONF_API);
    fx.w.shutting_down = true;
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body, "{\"status\":\"not ready\",\"reason\":\"shutting down\"}\n");
    /* A draining veer closes the connection after answering. */
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nConnection: close\r\n"));
    /* Liveness is about the event loops, which still run. */
    r = ask(0, GET("/api/health/liveness"));
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_readiness_503_names_listener_pool_without_eligible_backend)
{
    struct resp r;

    start("listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; },"
          "{ address = \"127.0.0.1:0\"; pool = \"hc\"; } );\n"
          "pools = ( " POOL_API ", " POOL_HC " );\n");
    /* Asked on either listener: veer as a whole is not ready. */
    for (int li = 0; li < 2; li++) {
        r = ask(li, GET("/api/health/readiness"));
        ck_assert_int_eq(r.status, 503);
        ck_assert_str_eq(
            r.body, "{\"status\":\"not ready\",\"reason\":\"pool hc has no eligible backend\"}\n");
        ck_assert_ptr_null(strstr(r.head, "Connection: close"));
    }
    /* Its backend passes its checks: ready. */
    fx.m->pools[1].b[0].health = HEALTH_READY;
    publish();
    r = ask(1, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_readiness_follows_snapshot_when_last_backend_leaves)
{
    struct resp r;

    start(CONF_API);
    fx.m->pools[0].b[0].admin = ADMIN_MAINT;
    publish();
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200); /* a2 still takes traffic */
    fx.m->pools[0].b[1].admin = ADMIN_DRAIN;
    publish();
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(
        r.body, "{\"status\":\"not ready\",\"reason\":\"pool api has no eligible backend\"}\n");
    fx.m->pools[0].b[1].admin = ADMIN_READY;
    publish();
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_readiness_ignores_pools_no_listener_uses)
{
    struct resp r;

    start(LISTEN_API "pools = ( " POOL_API ", " POOL_HC " );\n");
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200);
}
END_TEST

/* The value of key in obj, which must exist and have the given type. */
static json_t *field(json_t *obj, const char *key, json_type type)
{
    json_t *v = json_object_get(obj, key);

    ck_assert_msg(v != NULL, "no key %s", key);
    ck_assert_msg(json_typeof(v) == type, "key %s has type %d", key, (int)json_typeof(v));
    return v;
}

/* The object's keys, in the order they were written, joined with ','. */
static void keys_of(json_t *obj, char *out, size_t len)
{
    const char *k;
    json_t *v;

    out[0] = '\0';
    json_object_foreach (obj, k, v) {
        strncat(out, k, len - strlen(out) - 2);
        strcat(out, ",");
    }
}

START_TEST(test_status_json_has_documented_shape)
{
    struct resp r;
    json_error_t err;
    json_t *doc, *maint, *pools, *p, *states;
    char keys[256];
    const char *k;
    json_t *v;
    unsigned total;

    start("workers = 3;\n" LISTEN_API "pools = ( " POOL_API ", " POOL_HC " );\n");
    fx.m->pools[0].b[1].admin = ADMIN_MAINT;
    publish();
    r = ask(0, GET("/api/health/status"));
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nContent-Type: application/json\r\n"));
    ck_assert_uint_gt(r.body_len, 0);
    ck_assert_int_eq(r.body[r.body_len - 1], '\n');
    doc = json_loads(r.body, JSON_REJECT_DUPLICATES, &err);
    ck_assert_msg(doc != NULL, "status is not JSON (%s): %s", err.text, r.body);
    keys_of(doc, keys, sizeof(keys));
    ck_assert_str_eq(keys, "version,uptime_s,workers,generation,shutting_down,maintenance,pools,");
    ck_assert_str_eq(json_string_value(field(doc, "version", JSON_STRING)), VEER_VERSION);
    ck_assert(json_number_value(field(doc, "uptime_s", JSON_REAL)) >= 0.0);
    ck_assert(json_number_value(field(doc, "uptime_s", JSON_REAL)) < 60.0);
    ck_assert_int_eq(json_integer_value(field(doc, "workers", JSON_INTEGER)), 3);
    ck_assert_int_eq(json_integer_value(field(doc, "generation", JSON_INTEGER)), 2);
    ck_assert(json_is_false(json_object_get(doc, "shutting_down")));
    maint = field(doc, "maintenance", JSON_OBJECT);
    keys_of(maint, keys, sizeof(keys));
    /* No routes configured: no routes map, the shape it had before routes. */
    ck_assert_str_eq(keys, "all,pools,");
    ck_assert(json_is_false(json_object_get(maint, "all")));
    keys_of(field(maint, "pools", JSON_OBJECT), keys, sizeof(keys));
    ck_assert_str_eq(keys, "api,hc,");
    pools = field(doc, "pools", JSON_ARRAY);
    ck_assert_uint_eq(json_array_size(pools), 2);
    p = json_array_get(pools, 0);
    keys_of(p, keys, sizeof(keys));
    ck_assert_str_eq(keys, "name,eligible,backends,");
    ck_assert_str_eq(json_string_value(field(p, "name", JSON_STRING)), "api");
    ck_assert_int_eq(json_integer_value(field(p, "eligible", JSON_INTEGER)), 1);
    states = field(p, "backends", JSON_OBJECT);
    keys_of(states, keys, sizeof(keys));
    ck_assert_str_eq(keys, "PENDING,READY,DOWN,DRAINING,DRAINED,MAINT,");
    ck_assert_int_eq(json_integer_value(json_object_get(states, "READY")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(states, "MAINT")), 1);
    total = 0;
    json_object_foreach (states, k, v)
        total += (unsigned)json_integer_value(v);
    ck_assert_uint_eq(total, 2);
    p = json_array_get(pools, 1);
    ck_assert_str_eq(json_string_value(field(p, "name", JSON_STRING)), "hc");
    ck_assert_int_eq(json_integer_value(field(p, "eligible", JSON_INTEGER)), 0);
    ck_assert_int_eq(
        json_integer_value(json_object_get(field(p, "backends", JSON_OBJECT), "PENDING")), 1);
    json_decref(doc);
}
END_TEST

START_TEST(test_status_reports_maintenance_and_shutdown)
{
    struct resp r;
    json_t *doc, *mp;

    start(LISTEN_API "pools = ( " POOL_API ", " POOL_HC " );\n");
    /* maintenance on hc: that pool only */
    fx.m->pools[1].maint = true;
    fx.m->pools[1].maint_retry_after = 30;
    publish();
    r = ask(0, GET("/api/health/status"));
    doc = json_loads(r.body, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    mp = json_object_get(json_object_get(doc, "maintenance"), "pools");
    ck_assert(json_is_false(json_object_get(json_object_get(doc, "maintenance"), "all")));
    ck_assert(json_is_false(json_object_get(mp, "api")));
    ck_assert(json_is_true(json_object_get(mp, "hc")));
    json_decref(doc);
    /* maintenance on for every pool, and shutdown begun */
    fx.m->maint = true;
    publish();
    fx.w.shutting_down = true;
    r = ask(0, GET("/api/health/status"));
    ck_assert_int_eq(r.status, 200);
    doc = json_loads(r.body, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    mp = json_object_get(json_object_get(doc, "maintenance"), "pools");
    ck_assert(json_is_true(json_object_get(json_object_get(doc, "maintenance"), "all")));
    ck_assert(json_is_true(json_object_get(mp, "api")));
    ck_assert(json_is_true(json_object_get(mp, "hc")));
    ck_assert(json_is_true(json_object_get(doc, "shutting_down")));
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "generation")), 3);
    json_decref(doc);
}
END_TEST

/* Three routes: two to api, one to hc; in the config's order. */
#define ROUTES                                                                                     \
    "routes = ( { name = \"pay\"; pool = \"api\"; match = { path_prefix = \"/pay\"; }; },"         \
    "{ name = \"users\"; pool = \"hc\"; match = { path_prefix = \"/users\"; }; },"                 \
    "{ name = \"q.x_1-2\"; pool = \"api\"; match = { path = \"/q\"; }; } );\n"

/* maintenance.routes of the status document, as "name=bool," in the order written. */
static void route_maint_map(char *out, size_t len)
{
    struct resp r = ask(0, GET("/api/health/status"));
    json_t *doc, *routes, *v;
    const char *k;

    ck_assert_int_eq(r.status, 200);
    doc = json_loads(r.body, JSON_REJECT_DUPLICATES, NULL);
    ck_assert_msg(doc != NULL, "not JSON: %s", r.body);
    routes = field(field(doc, "maintenance", JSON_OBJECT), "routes", JSON_OBJECT);
    out[0] = '\0';
    json_object_foreach (routes, k, v) {
        ck_assert_msg(json_is_boolean(v), "route %s: not a boolean", k);
        snprintf(out + strlen(out), len - strlen(out), "%s=%s,", k,
                 json_is_true(v) ? "true" : "false");
    }
    json_decref(doc);
}

/*
 * maintenance.routes names every route with whether its requests get the maintenance 503
 * now: its route maintenance, its pool's (the pool it sends to after a route set), or the
 * one for every pool, as the pools map counts the latter.
 */
START_TEST(test_status_reports_route_maintenance)
{
    char map[256];

    start(LISTEN_API "pools = ( " POOL_API ", " POOL_HC " );\n" ROUTES);
    route_maint_map(map, sizeof(map));
    ck_assert_str_eq(map, "pay=false,users=false,q.x_1-2=false,");
    /* route maintenance pay on */
    fx.m->routes[0].maint = true;
    fx.m->routes[0].maint_retry_after = 30;
    publish();
    route_maint_map(map, sizeof(map));
    ck_assert_str_eq(map, "pay=true,users=false,q.x_1-2=false,");
    /* maintenance on hc: the route sending there */
    fx.m->pools[1].maint = true;
    publish();
    route_maint_map(map, sizeof(map));
    ck_assert_str_eq(map, "pay=true,users=true,q.x_1-2=false,");
    /* route set users pool api: hc's maintenance is not its own any more */
    fx.m->routes[1].pool = 0;
    publish();
    route_maint_map(map, sizeof(map));
    ck_assert_str_eq(map, "pay=true,users=false,q.x_1-2=false,");
    /* maintenance for every pool */
    fx.m->maint = true;
    publish();
    route_maint_map(map, sizeof(map));
    ck_assert_str_eq(map, "pay=true,users=true,q.x_1-2=true,");
}
END_TEST

/*
 * Readiness gates whether the outer load balancer sends this veer anything: a pool only
 * routes send to, with no eligible backend, leaves veer ready (that route answers 503 alone).
 */
START_TEST(test_readiness_ignores_pools_only_routes_use)
{
    struct resp r;

    start(LISTEN_API "pools = ( " POOL_API ", " POOL_HC " );\n" ROUTES);
    ck_assert_uint_eq(fx.w.routing->pools[1].n, 0); /* hc: nothing eligible */
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ready\"}\n");
}
END_TEST

START_TEST(test_prefix_is_configurable)
{
    struct resp r;

    start("health_endpoints = { prefix = \"/_veer/hc\"; };\n" CONF_API);
    r = ask(0, GET("/_veer/hc/liveness"));
    ck_assert_int_eq(r.status, 200);
    r = ask(0, GET("/_veer/hc/readiness"));
    ck_assert_int_eq(r.status, 200);
    r = ask(0, GET("/_veer/hc/status"));
    ck_assert_int_eq(r.status, 200);
    /* The default prefix is an ordinary path now. */
    assert_proxied(0, GET("/api/health/liveness"));
    assert_proxied(0, GET("/_veer/liveness"));
}
END_TEST

START_TEST(test_prefix_with_trailing_slash_is_the_same_prefix)
{
    struct resp r;

    start("health_endpoints = { prefix = \"/ops/\"; };\n" CONF_API);
    r = ask(0, GET("/ops/liveness"));
    ck_assert_int_eq(r.status, 200);
    assert_proxied(0, GET("/ops//liveness"));
}
END_TEST

START_TEST(test_root_prefix_puts_endpoints_at_top_level)
{
    struct resp r;

    start("health_endpoints = { prefix = \"/\"; };\n" CONF_API);
    r = ask(0, GET("/liveness"));
    ck_assert_int_eq(r.status, 200);
    r = ask(0, GET("/readiness"));
    ck_assert_int_eq(r.status, 200);
    assert_proxied(0, GET("/"));
    assert_proxied(0, GET("/index.html"));
}
END_TEST

START_TEST(test_other_paths_under_prefix_are_proxied)
{
    start(CONF_API);
    assert_proxied(0, GET("/api/health"));
    assert_proxied(0, GET("/api/health/"));
    assert_proxied(0, GET("/api/health/metrics"));
    assert_proxied(0, GET("/api/health/liveness/extra"));
    assert_proxied(0, GET("/api/health/livenes"));
    assert_proxied(0, GET("/api/health/livenessx"));
    assert_proxied(0, GET("/api/health/Liveness"));
    assert_proxied(0, GET("/api/healthliveness"));
    assert_proxied(0, GET("/api/healthz/liveness"));
    assert_proxied(0, GET("/x/api/health/liveness"));
    assert_proxied(0, GET("/"));
}
END_TEST

START_TEST(test_disabled_endpoints_are_proxied)
{
    start("health_endpoints = { enabled = false; };\n" CONF_API);
    assert_proxied(0, GET("/api/health/liveness"));
    assert_proxied(0, GET("/api/health/readiness"));
    assert_proxied(0, GET("/api/health/status"));
    /* Even while veer would not be ready. */
    fx.w.shutting_down = true;
    assert_proxied(0, GET("/api/health/readiness"));
}
END_TEST

/* What maintenance asks: the three endpoints under the prefix are veer's own, on or off. */
START_TEST(test_own_paths_are_the_three_endpoints_enabled_or_not)
{
    static const char *const own[] = {"/ops/liveness", "/ops/readiness", "/ops/status"};
    static const char *const not_own[] = {
        "/ops", "/ops/", "/ops/deep", "/opsx/status", "/api/health/liveness", "/ops/liveness/x"};

    start("health_endpoints = { prefix = \"/ops/\"; enabled = false; };\n" CONF_API);
    for (size_t i = 0; i < ARRAY_SIZE(own); i++) {
        ck_assert_msg(module_health_endpoints.own_path(fx.c, own[i], strlen(own[i])), "%s", own[i]);
        ck_assert(module_own_path(fx.c, own[i], strlen(own[i])));
    }
    for (size_t i = 0; i < ARRAY_SIZE(not_own); i++)
        ck_assert_msg(!module_own_path(fx.c, not_own[i], strlen(not_own[i])), "%s", not_own[i]);
    /* A span of a longer buffer: only its length counts. */
    ck_assert(module_own_path(fx.c, "/ops/status?x=1", 11));
}
END_TEST

/*
 * The transaction canonicalizes the path before the modules run
 * (txn_head_ready): a non-canonical spelling of an endpoint reaches it, and
 * a prefix is matched on whole segments.
 */
START_TEST(test_endpoints_answer_the_canonical_path)
{
    static const char *const spellings[] = {"/api//health/./liveness", "/api/x/../health/liveness",
                                            "/%61pi/health/%6Civeness", "/api/health//liveness"};
    struct resp r;

    start(CONF_API);
    for (size_t i = 0; i < ARRAY_SIZE(spellings); i++) {
        char raw[256];
        struct txn *t;

        snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: veer.test\r\n\r\n", spellings[i]);
        t = request(0, raw);
        ck_assert_int_eq(http_canonicalize_path(t->req, t->s->in->data + t->s->in->start), 0);
        ck_assert_msg(module_request_head(t) == VEER_DONE, "not answered: %s", spellings[i]);
        r = answer(t);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "{\"status\":\"alive\"}\n");
        txn_drop(t);
    }
    assert_proxied(0, GET("/api/healthx/liveness"));
    assert_proxied(0, GET("/apix/health/liveness"));
}
END_TEST

static Suite *health_endpoints_suite(void)
{
    Suite *s = suite_create("health_endpoints");
    TCase *tc = tcase_create("health_endpoints");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_liveness_answers_200_alive);
    tcase_add_test(tc, test_liveness_ignores_query_and_absolute_form);
    tcase_add_test(tc, test_head_request_gets_headers_without_body);
    tcase_add_test(tc, test_readiness_200_when_every_listener_pool_has_eligible_backend);
    tcase_add_test(tc, test_readiness_503_while_shutting_down);
    tcase_add_test(tc, test_readiness_503_names_listener_pool_without_eligible_backend);
    tcase_add_test(tc, test_readiness_follows_snapshot_when_last_backend_leaves);
    tcase_add_test(tc, test_readiness_ignores_pools_no_listener_uses);
    tcase_add_test(tc, test_status_json_has_documented_shape);
    tcase_add_test(tc, test_status_reports_maintenance_and_shutdown);
    tcase_add_test(tc, test_status_reports_route_maintenance);
    tcase_add_test(tc, test_readiness_ignores_pools_only_routes_use);
    tcase_add_test(tc, test_prefix_is_configurable);
    tcase_add_test(tc, test_prefix_with_trailing_slash_is_the_same_prefix);
    tcase_add_test(tc, test_root_prefix_puts_endpoints_at_top_level);
    tcase_add_test(tc, test_other_paths_under_prefix_are_proxied);
    tcase_add_test(tc, test_disabled_endpoints_are_proxied);
    tcase_add_test(tc, test_own_paths_are_the_three_endpoints_enabled_or_not);
    tcase_add_test(tc, test_endpoints_answer_the_canonical_path);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(health_endpoints_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
