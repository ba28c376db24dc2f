/*
 * check_maintenance.c - maintenance mode, driven through the module's
 * on_request_head hook and the whole module chain with a worker, listeners,
 * a session and a parsed request filled the way worker.c and session.c
 * fill them, and routing snapshots built from a real config and published
 * the way `veerctl maintenance on|off [POOL] [--retry-after S] [--hold T]`
 * publishes them: while it is on for every pool or for the request's pool,
 * a new request gets 503 with Retry-After and
 * {"error":"maintenance","status":503,"retry_after":S}; a pool's own
 * setting wins over the global one; maintenance.allow prefixes are proxied
 * and veer's health endpoints keep answering (only they: a root prefix
 * does not exempt every path); --hold parks the request until its deadline,
 * then 503; off again, requests pass.
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

extern const struct veer_module module_maintenance;

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
    strcpy(fx.dir, "/tmp/check_maintenance.XXXXXX");
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
    ck_assert_int_eq(module_init_all(fx.c), VEER_OK);
}

/* A change as control_publish() makes it: the next generation, a new snapshot. */
static void publish(void)
{
    routing_free(fx.w.routing);
    fx.m->generation++;
    fx.w.routing = routing_build(fx.m);
}

/*
 * `maintenance on|off [POOL] [--retry-after S] [--hold MS]` as
 * maintenance_apply() sets the model (pool NULL: every pool; retry < 0:
 * maintenance.retry_after), then published.
 */
static void maintenance(bool on, const char *pool, int retry, int64_t hold_ms)
{
    bool *flag = &fx.m->maint;
    int *ra = &fx.m->maint_retry_after;
    int64_t *hold = &fx.m->maint_hold_ms;

    if (pool) {
        int pi = model_find_pool(fx.m, pool);

        ck_assert_int_ge(pi, 0);
        flag = &fx.m->pools[pi].maint;
        ra = &fx.m->pools[pi].maint_retry_after;
        hold = &fx.m->pools[pi].maint_hold_ms;
    }
    *flag = on;
    *ra = on ? (retry >= 0 ? retry : fx.c->maintenance.retry_after) : 0;
    *hold = on && hold_ms > 0 ? hold_ms : 0;
    publish();
}

/*
 * A session on listener li holding the request bytes `raw`, and its
 * transaction with the head parsed and what came of the body framed, as
 * session_process() has it when it calls handle_request_head(). The request
 * is complete unless its body is still on its way.
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
    ck_assert(r == HTTP_MSG_DONE || r == HTTP_NEED_MORE);
    t->req_parsed += (uint32_t)used;
    t->bytes_in += used;
    t->req_done = r == HTTP_MSG_DONE;
    s->nreq++;
    t->bytes_in += t->req->head_len;
    return t;
}

/* Run the whole module chain on a request; it must be answered (VEER_DONE). */
static struct resp ask(int li, const char *raw)
{
    struct txn *t = request(li, raw);
    struct resp r;

    ck_assert_msg(module_request_head(t) == VEER_DONE, "not answered: %s", raw);
    r = answer(t);
    txn_drop(t);
    return r;
}

/* The module and the whole chain leave this request alone: it goes on to a backend. */
static void assert_proxied(int li, const char *raw)
{
    struct txn *t = request(li, raw);

    ck_assert_msg(module_maintenance.on_request_head(t) == VEER_DECLINED, "answered: %s", raw);
    ck_assert_msg(module_request_head(t) == VEER_DECLINED, "chain answered: %s", raw);
    ck_assert_ptr_null(t->res_head);
    ck_assert_int_eq(t->res_status, 0);
    ck_assert_int_eq(t->phase, TXN_REQ_HEAD);
    ck_assert_uint_eq(t->hold_deadline_us, 0);
    txn_drop(t);
}

/* The header's value in a response head, or NULL. */
static const char *header(const struct resp *r, const char *name, char *out, size_t len)
{
    char key[64];
    const char *p, *e;

    snprintf(key, sizeof(key), "\r\n%s: ", name);
    p = strstr(r->head, key);
    if (p == NULL)
        return NULL;
    p += strlen(key);
    e = strstr(p, "\r\n");
    ck_assert_ptr_nonnull(e);
    snprintf(out, len, "%.*s", (int)(e - p), p);
    return out;
}

/* r is the documented maintenance answer with Retry-After: retry. */
static void assert_maintenance_answer(const struct resp *r, int retry)
{
    char v[64], body[128];

    ck_assert_int_eq(r->status, 503);
    ck_assert_ptr_nonnull(strstr(r->head, "HTTP/1.1 503 Service Unavailable\r\n"));
    ck_assert_ptr_nonnull(header(r, "Retry-After", v, sizeof(v)));
    ck_assert_int_eq(atoi(v), retry);
    snprintf(body, sizeof(body), "%d", retry);
    ck_assert_str_eq(v, body);
    ck_assert_str_eq(header(r, "Content-Type", v, sizeof(v)), "application/json");
    snprintf(body, sizeof(body), "{\"error\":\"maintenance\",\"status\":503,\"retry_after\":%d}\n",
             retry);
    ck_assert_str_eq(r->body, body);
}

#define LISTEN_API "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
#define LISTEN_API_WEB                                                                             \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; },"                                   \
    "{ address = \"127.0.0.1:0\"; pool = \"web\"; } );\n"
#define POOL_API     "{ name = \"api\"; backends = ( { name = \"a1\"; address = \"127.0.0.1:1\"; } ); }"
#define POOL_WEB     "{ name = \"web\"; backends = ( { name = \"w1\"; address = \"127.0.0.1:2\"; } ); }"
#define CONF_API     LISTEN_API "pools = ( " POOL_API " );\n"
#define CONF_API_WEB LISTEN_API_WEB "pools = ( " POOL_API ", " POOL_WEB " );\n"

START_TEST(test_off_requests_pass)
{
    start(CONF_API);
    assert_proxied(0, GET("/orders"));
    assert_proxied(0, GET("/admin"));
}
END_TEST

START_TEST(test_on_answers_503_with_retry_after_and_body)
{
    struct txn *t;
    struct resp r;

    start(CONF_API);
    maintenance(true, NULL, -1, 0);
    t = request(0, GET("/orders/42?token=x"));
    ck_assert_int_eq(module_maintenance.on_request_head(t), VEER_DONE);
    r = answer(t);
    assert_maintenance_answer(&r, 30); /* maintenance.retry_after's default */
    /* The request was read whole: the connection stays open for the next one. */
    ck_assert_ptr_null(strstr(r.head, "Connection: close"));
    ck_assert(!t->close_client);
    ck_assert_ptr_null(t->be);
    txn_drop(t);
}
END_TEST

START_TEST(test_retry_after_comes_from_command_or_config)
{
    struct resp r;

    start("maintenance = { retry_after = 90; };\n" CONF_API);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/"));
    assert_maintenance_answer(&r, 90);
    maintenance(true, NULL, 7, 0);
    r = ask(0, GET("/"));
    assert_maintenance_answer(&r, 7);
    maintenance(true, NULL, 0, 0);
    r = ask(0, GET("/"));
    assert_maintenance_answer(&r, 0);
}
END_TEST

START_TEST(test_every_method_gets_it_and_head_has_no_body)
{
    struct resp r;
    char v[32];

    start(CONF_API);
    maintenance(true, NULL, 5, 0);
    r = ask(0, "POST /orders HTTP/1.1\r\nHost: veer.test\r\nContent-Length: 5\r\n\r\nhello");
    assert_maintenance_answer(&r, 5);
    r = ask(0, "DELETE /orders/1 HTTP/1.1\r\nHost: veer.test\r\n\r\n");
    assert_maintenance_answer(&r, 5);
    r = ask(0, "HEAD /orders HTTP/1.1\r\nHost: veer.test\r\n\r\n");
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(header(&r, "Retry-After", v, sizeof(v)), "5");
    ck_assert_uint_eq(r.body_len, 0);
    /* Content-Length of the body a GET would get */
    ck_assert_str_eq(header(&r, "Content-Length", v, sizeof(v)), "53");
}
END_TEST

START_TEST(test_body_still_coming_closes_connection_after_503)
{
    struct txn *t;
    struct resp r;

    start(CONF_API);
    maintenance(true, NULL, 5, 0);
    t = request(0, "POST /upload HTTP/1.1\r\nHost: veer.test\r\nContent-Length: 100\r\n\r\npart");
    ck_assert(!t->req_done);
    ck_assert_int_eq(module_request_head(t), VEER_DONE);
    r = answer(t);
    assert_maintenance_answer(&r, 5);
    /* The rest of the body would be read as the next request: the connection closes. */
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nConnection: close\r\n"));
    ck_assert(t->close_client);
    txn_drop(t);
}
END_TEST

START_TEST(test_pool_maintenance_only_affects_that_pool)
{
    struct resp r;

    start(CONF_API_WEB);
    maintenance(true, "api", 7, 0);
    r = ask(0, GET("/x"));
    assert_maintenance_answer(&r, 7);
    assert_proxied(1, GET("/x"));
    maintenance(false, "api", -1, 0);
    assert_proxied(0, GET("/x"));
    maintenance(true, "web", 9, 0);
    assert_proxied(0, GET("/x"));
    r = ask(1, GET("/x"));
    assert_maintenance_answer(&r, 9);
}
END_TEST

START_TEST(test_pool_retry_after_wins_over_global)
{
    struct resp r;

    start(CONF_API_WEB);
    maintenance(true, NULL, 30, 0);
    maintenance(true, "api", 120, 0);
    r = ask(0, GET("/x"));
    assert_maintenance_answer(&r, 120);
    r = ask(1, GET("/x"));
    assert_maintenance_answer(&r, 30);
    /* Global off: the pool's own setting stays. */
    maintenance(false, NULL, -1, 0);
    r = ask(0, GET("/x"));
    assert_maintenance_answer(&r, 120);
    assert_proxied(1, GET("/x"));
}
END_TEST

START_TEST(test_off_again_requests_pass)
{
    struct resp r;

    start(CONF_API_WEB);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/x"));
    assert_maintenance_answer(&r, 30);
    r = ask(1, GET("/x"));
    assert_maintenance_answer(&r, 30);
    maintenance(false, NULL, -1, 0);
    assert_proxied(0, GET("/x"));
    assert_proxied(1, GET("/x"));
    ck_assert_int_eq(fx.w.routing->retry_after, 0);
}
END_TEST

START_TEST(test_health_endpoints_keep_answering)
{
    struct resp r;
    json_t *doc;

    start(CONF_API);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/api/health/liveness"));
    ck_assert_int_eq(r.status, 200);
    r = ask(0, GET("/api/health/readiness"));
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ready\"}\n");
    r = ask(0, GET("/api/health/status?x=1"));
    ck_assert_int_eq(r.status, 200);
    doc = json_loads(r.body, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert(json_is_true(json_object_get(json_object_get(doc, "maintenance"), "all")));
    json_decref(doc);
}
END_TEST

START_TEST(test_health_endpoints_exempt_even_when_module_runs_alone)
{
    struct txn *t;

    /* Whatever the table order, maintenance itself lets veer's own endpoints through. */
    start(CONF_API);
    maintenance(true, NULL, -1, 0);
    t = request(0, GET("/api/health/readiness"));
    ck_assert_int_eq(module_maintenance.on_request_head(t), VEER_DECLINED);
    ck_assert_ptr_null(t->res_head);
    txn_drop(t);
    t = request(0, GET("/api/health/liveness"));
    ck_assert_int_eq(module_maintenance.on_request_head(t), VEER_DECLINED);
    txn_drop(t);
}
END_TEST

START_TEST(test_custom_health_prefix_is_exempt)
{
    struct resp r;

    start("health_endpoints = { prefix = \"/_veer/\"; };\n" CONF_API);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/_veer/readiness"));
    ck_assert_int_eq(r.status, 200);
    /* The default prefix is an ordinary path now. */
    r = ask(0, GET("/api/health/readiness"));
    assert_maintenance_answer(&r, 30);
}
END_TEST

START_TEST(test_root_health_prefix_does_not_exempt_every_path)
{
    struct resp r;

    start("health_endpoints = { prefix = \"/\"; };\n" CONF_API);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/liveness"));
    ck_assert_int_eq(r.status, 200);
    r = ask(0, GET("/orders"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/"));
    assert_maintenance_answer(&r, 30);
}
END_TEST

START_TEST(test_other_paths_under_health_prefix_are_not_exempt)
{
    struct resp r;

    start(CONF_API);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/api/health/deep"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/api/healthz"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/api/health"));
    assert_maintenance_answer(&r, 30);
}
END_TEST

START_TEST(test_disabled_health_paths_stay_exempt_and_are_proxied)
{
    start("health_endpoints = { enabled = false; };\n" CONF_API);
    maintenance(true, NULL, -1, 0);
    assert_proxied(0, GET("/api/health/readiness"));
    assert_proxied(0, GET("/api/health/liveness"));
}
END_TEST

START_TEST(test_default_allow_prefix_admin_is_proxied)
{
    struct resp r;

    start(CONF_API);
    maintenance(true, NULL, -1, 0);
    assert_proxied(0, GET("/admin"));
    assert_proxied(0, GET("/admin/users?page=2"));
    assert_proxied(0, "POST /admin/flush HTTP/1.1\r\nHost: veer.test\r\nContent-Length: 0\r\n\r\n");
    r = ask(0, GET("/adm"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/x/admin"));
    assert_maintenance_answer(&r, 30);
}
END_TEST

START_TEST(test_configured_allow_list_replaces_default)
{
    struct resp r;

    start("maintenance = { allow = ( \"/ops\", \"/static/\" ); };\n" CONF_API_WEB);
    maintenance(true, "api", -1, 0);
    assert_proxied(0, GET("/ops/deploy"));
    assert_proxied(0, GET("/static/app.css"));
    r = ask(0, GET("/static"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/admin/users"));
    assert_maintenance_answer(&r, 30);
}
END_TEST

START_TEST(test_empty_allow_list_exempts_only_health_endpoints)
{
    struct resp r;

    start("maintenance = { allow = ( ); };\n" CONF_API);
    maintenance(true, NULL, -1, 0);
    r = ask(0, GET("/admin/users"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/api/health/liveness"));
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_hold_parks_request_until_deadline_then_503)
{
    struct txn *t;
    struct resp r;
    uint64_t before, deadline;

    start(CONF_API);
    maintenance(true, "api", 7, 5000);
    t = request(0, GET("/x"));
    before = veer_now_us();
    ck_assert_int_eq(module_request_head(t), VEER_AGAIN);
    deadline = t->hold_deadline_us;
    ck_assert_uint_ge(deadline, before + 5000 * 1000);
    ck_assert_uint_le(deadline, veer_now_us() + 5000 * 1000);
    ck_assert_ptr_null(t->res_head);
    /* Tried again before the deadline (a new snapshot): still held, same deadline. */
    ck_assert_int_eq(module_request_head(t), VEER_AGAIN);
    ck_assert_uint_eq(t->hold_deadline_us, deadline);
    /* At the deadline: the documented 503. */
    t->hold_deadline_us = veer_now_us() - 1;
    ck_assert_int_eq(module_request_head(t), VEER_DONE);
    r = answer(t);
    assert_maintenance_answer(&r, 7);
    txn_drop(t);
}
END_TEST

START_TEST(test_held_request_passes_when_maintenance_ends)
{
    struct txn *t;

    start(CONF_API);
    maintenance(true, NULL, -1, 2000);
    t = request(0, GET("/x"));
    ck_assert_int_eq(module_request_head(t), VEER_AGAIN);
    maintenance(false, NULL, -1, 0);
    /* session_retry_held() runs the modules again on the new snapshot. */
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    ck_assert_ptr_null(t->res_head);
    ck_assert_int_eq(t->res_status, 0);
    txn_drop(t);
}
END_TEST

START_TEST(test_allow_prefix_covers_whole_segments_only)
{
    struct resp r;

    start("maintenance = { allow = ( \"/admin\", \"/static/\" ); };\n" CONF_API);
    maintenance(true, NULL, -1, 0);
    assert_proxied(0, GET("/admin"));
    assert_proxied(0, GET("/admin/"));
    assert_proxied(0, GET("/admin/x"));
    assert_proxied(0, GET("/admin?x=1"));
    assert_proxied(0, GET("/static/app.css"));
    r = ask(0, GET("/administrator"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/admin-panel/x"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/adminx?/admin"));
    assert_maintenance_answer(&r, 30);
    r = ask(0, GET("/staticx/app.css"));
    assert_maintenance_answer(&r, 30);
}
END_TEST

START_TEST(test_hold_does_not_apply_to_allowed_paths)
{
    start(CONF_API);
    maintenance(true, NULL, -1, 2000);
    assert_proxied(0, GET("/admin/x"));
}
END_TEST

static Suite *maintenance_suite(void)
{
    Suite *s = suite_create("maintenance");
    TCase *tc = tcase_create("maintenance");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_off_requests_pass);
    tcase_add_test(tc, test_on_answers_503_with_retry_after_and_body);
    tcase_add_test(tc, test_retry_after_comes_from_command_or_config);
    tcase_add_test(tc, test_every_method_gets_it_and_head_has_no_body);
    tcase_add_test(tc, test_body_still_coming_closes_connection_after_503);
    tcase_add_test(tc, test_pool_maintenance_only_affects_that_pool);
    tcase_add_test(tc, test_pool_retry_after_wins_over_global);
    tcase_add_test(tc, test_off_again_requests_pass);
    tcase_add_test(tc, test_health_endpoints_keep_answering);
    tcase_add_test(tc, test_health_endpoints_exempt_even_when_module_runs_alone);
    tcase_add_test(tc, test_custom_health_prefix_is_exempt);
    tcase_add_test(tc, test_root_health_prefix_does_not_exempt_every_path);
    tcase_add_test(tc, test_other_paths_under_health_prefix_are_not_exempt);
    tcase_add_test(tc, test_disabled_health_paths_stay_exempt_and_are_proxied);
    tcase_add_test(tc, test_default_allow_prefix_admin_is_proxied);
    tcase_add_test(tc, test_configured_allow_list_replaces_default);
    tcase_add_test(tc, test_allow_prefix_covers_whole_segments_only);
    tcase_add_test(tc, test_empty_allow_list_exempts_only_health_endpoints);
    tcase_add_test(tc, test_hold_parks_request_until_deadline_then_503);
    tcase_add_test(tc, test_held_request_passes_when_maintenance_ends);
    tcase_add_test(tc, test_hold_does_not_apply_to_allowed_paths);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(maintenance_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
