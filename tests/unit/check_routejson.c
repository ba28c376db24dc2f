/*
 * check_routejson.c - one route of the model as /status and `show routes`
 * present it (routejson.c), for a model built from a real config: the JSON
 * object is exactly the documented one, key for key and in order, with only
 * the match keys the route sets (path or path_prefix, methods, headers), its
 * pool after a route set (null once that pool is gone), its state after
 * route, pool and veer-wide maintenance, and its figures; names and values
 * are JSON-escaped. The match as text, in the same key order, or "*" when
 * the route sets none.
 */
#include "conf.h"
#include "model.h"
#include "routejson.h"
#include "sbuf.h"
#include "veer.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONF                                                                                       \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ( { name = \"a\"; address = \"127.0.0.1:1\"; } ); },"  \
    "{ name = \"pay\"; backends = ( { name = \"p\"; address = \"127.0.0.1:2\"; } ); } );\n"        \
    "routes = (\n"                                                                                 \
    "  { name = \"payments\"; pool = \"pay\";\n"                                                   \
    "    match = { host = \"api.example.com\"; path_prefix = \"/payments\"; }; },\n"               \
    "  { name = \"users-v2\"; pool = \"api\";\n"                                                   \
    "    match = { path_prefix = \"/users\"; methods = ( \"GET\", \"HEAD\" );\n"                   \
    "              headers = ( { name = \"X-Api-Version\"; value = \"2\"; },\n"                    \
    "                          { name = \"X-Q\"; value = \"a\\\"b\\\\c\"; } ); }; },\n"            \
    "  { name = \"login\"; pool = \"api\"; match = { path = \"/login\"; }; },\n"                   \
    "  { name = \"all\"; pool = \"api\"; match = { }; }\n"                                         \
    ");\n"

static struct {
    struct veer_conf *c;
    struct model *m;
    struct sbuf o;
} fx;

static void setup(void)
{
    char path[] = "/tmp/check_routejson_XXXXXX", err[512] = "";
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, CONF, strlen(CONF)), (ssize_t)strlen(CONF));
    close(fd);
    fx.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(fx.c != NULL, "config: %s", err);
    fx.m = model_from_conf(fx.c);
    ck_assert_uint_eq(fx.m->nroutes, 4);
    sb_init(&fx.o);
}

static void teardown(void)
{
    sb_free(&fx.o);
    model_free(fx.m);
    conf_free(fx.c);
}

/* Route i's JSON object, which must be valid JSON by itself. */
static const char *route(uint32_t i)
{
    json_error_t e;
    json_t *j;

    sb_reset(&fx.o);
    routejson_route(&fx.o, fx.m, i);
    j = json_loadb(fx.o.s, fx.o.len, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(j != NULL && json_is_object(j), "not a JSON object (%s): %s", e.text, fx.o.s);
    json_decref(j);
    return fx.o.s;
}

static const char *match_text(uint32_t i)
{
    sb_reset(&fx.o);
    routejson_match_text(&fx.o, &fx.c->routes[i]);
    return fx.o.s;
}

START_TEST(test_route_object_has_only_the_match_keys_the_route_sets)
{
    ck_assert_str_eq(route(0), "{\"name\":\"payments\",\"match\":{\"host\":\"api.example.com\","
                               "\"path_prefix\":\"/payments\"},\"pool\":\"pay\","
                               "\"state\":\"serving\",\"maintenance_retry_after\":0,\"maintenance_"
                               "hold_ms\":0,\"rps\":0.0,\"error_rate\":0.0000,"
                               "\"p99_ms\":0.000}");
    ck_assert_str_eq(route(1), "{\"name\":\"users-v2\",\"match\":{\"path_prefix\":\"/users\","
                               "\"methods\":[\"GET\",\"HEAD\"],\"headers\":["
                               "{\"name\":\"X-Api-Version\",\"value\":\"2\"},"
                               "{\"name\":\"X-Q\",\"value\":\"a\\\"b\\\\c\"}]},"
                               "\"pool\":\"api\",\"state\":\"serving\",\"maintenance_retry_after\":"
                               "0,\"maintenance_hold_ms\":0,\"rps\":0.0,"
                               "\"error_rate\":0.0000,\"p99_ms\":0.000}");
    ck_assert_str_eq(route(2), "{\"name\":\"login\",\"match\":{\"path\":\"/login\"},"
                               "\"pool\":\"api\",\"state\":\"serving\",\"maintenance_retry_after\":"
                               "0,\"maintenance_hold_ms\":0,\"rps\":0.0,"
                               "\"error_rate\":0.0000,\"p99_ms\":0.000}");
    ck_assert_str_eq(route(3), "{\"name\":\"all\",\"match\":{},\"pool\":\"api\","
                               "\"state\":\"serving\",\"maintenance_retry_after\":0,\"maintenance_"
                               "hold_ms\":0,\"rps\":0.0,\"error_rate\":0.0000,"
                               "\"p99_ms\":0.000}");
}
END_TEST

START_TEST(test_route_object_shows_the_pool_it_sends_to_now_and_its_figures)
{
    struct rt_route *rt = &fx.m->routes[0];

    rt->pool = model_find_pool(fx.m, "api"); /* route set payments pool api */
    rt->rate.rps = 12.5;
    rt->rate.error_rate = 0.25;
    rt->rate.p99_ms = 7.125;
    ck_assert_ptr_nonnull(strstr(route(0),
                                 ",\"pool\":\"api\",\"state\":\"serving\","
                                 "\"maintenance_retry_after\":0,\"maintenance_hold_ms\":0,"
                                 "\"rps\":12.5,\"error_rate\":0.2500,"
                                 "\"p99_ms\":7.125}"));
    /* The pool it sends to is gone (removed by a reload, or none): null. */
    fx.m->pools[0].removed = true;
    ck_assert_ptr_nonnull(strstr(route(0), ",\"pool\":null,"));
    rt->pool = -1;
    ck_assert_ptr_nonnull(strstr(route(0), ",\"pool\":null,\"state\":\"serving\","));
}
END_TEST

/* State: route maintenance, the maintenance of the pool it sends to, veer-wide maintenance. */
START_TEST(test_route_state_follows_every_maintenance_that_closes_it)
{
    ck_assert(!routejson_in_maintenance(fx.m, 0));
    fx.m->routes[0].maint = true; /* route maintenance payments on */
    ck_assert(routejson_in_maintenance(fx.m, 0));
    ck_assert(!routejson_in_maintenance(fx.m, 1));
    ck_assert_ptr_nonnull(strstr(route(0), ",\"state\":\"maintenance\","));
    ck_assert_ptr_nonnull(strstr(route(1), ",\"state\":\"serving\","));
    fx.m->routes[0].maint = false;
    fx.m->pools[1].maint = true; /* maintenance on pay: payments sends there */
    ck_assert(routejson_in_maintenance(fx.m, 0));
    ck_assert(!routejson_in_maintenance(fx.m, 1));
    fx.m->routes[0].pool = 0; /* route set payments pool api */
    ck_assert(!routejson_in_maintenance(fx.m, 0));
    fx.m->routes[0].pool = -1;
    ck_assert(!routejson_in_maintenance(fx.m, 0));
    fx.m->maint = true; /* maintenance on (every pool) */
    for (uint32_t i = 0; i < fx.m->nroutes; i++) {
        ck_assert(routejson_in_maintenance(fx.m, i));
        ck_assert_ptr_nonnull(strstr(route(i), ",\"state\":\"maintenance\","));
    }
}
END_TEST

START_TEST(test_match_text_names_the_keys_in_order_or_a_star)
{
    ck_assert_str_eq(match_text(0), "host=api.example.com path_prefix=/payments");
    ck_assert_str_eq(match_text(1), "path_prefix=/users methods=GET,HEAD "
                                    "header=X-Api-Version:2 header=X-Q:a\"b\\c");
    ck_assert_str_eq(match_text(2), "path=/login");
    ck_assert_str_eq(match_text(3), "*");
    /* Appended to what the buffer holds. */
    sb_reset(&fx.o);
    sb_puts(&fx.o, "match: ");
    routejson_match_text(&fx.o, &fx.c->routes[3]);
    ck_assert_str_eq(fx.o.s, "match: *");
    sb_reset(&fx.o);
    sb_puts(&fx.o, "x ");
    routejson_match_text(&fx.o, &fx.c->routes[1]);
    ck_assert(strncmp(fx.o.s, "x path_prefix=/users methods=GET,HEAD ", 38) == 0);
}
END_TEST

/* The Retry-After and hold shown are those of the maintenance that applies, route first. */
START_TEST(test_route_maintenance_retry_after_and_hold_follow_precedence)
{
    int retry;
    int64_t hold;

    fx.m->maint = true; /* every pool: 30 s */
    fx.m->maint_retry_after = 30;
    fx.m->pools[1].maint = true; /* pay, where payments sends: 20 s, held 1 s */
    fx.m->pools[1].maint_retry_after = 20;
    fx.m->pools[1].maint_hold_ms = 1000;
    fx.m->routes[0].maint = true; /* payments itself: 10 s, held 2 s */
    fx.m->routes[0].maint_retry_after = 10;
    fx.m->routes[0].maint_hold_ms = 2000;
    ck_assert(routejson_maintenance(fx.m, 0, &retry, &hold));
    ck_assert_int_eq(retry, 10);
    ck_assert_int_eq(hold, 2000);
    ck_assert_ptr_nonnull(strstr(route(0),
                                 ",\"state\":\"maintenance\",\"maintenance_retry_after\":10,"
                                 "\"maintenance_hold_ms\":2000,"));
    fx.m->routes[0].maint = false;
    ck_assert(routejson_maintenance(fx.m, 0, &retry, &hold));
    ck_assert_int_eq(retry, 20);
    ck_assert_int_eq(hold, 1000);
    fx.m->pools[1].maint = false;
    ck_assert(routejson_maintenance(fx.m, 0, &retry, &hold));
    ck_assert_int_eq(retry, 30);
    ck_assert_int_eq(hold, 0);
    fx.m->maint = false;
    ck_assert(!routejson_maintenance(fx.m, 0, &retry, &hold));
    ck_assert_int_eq(retry, 0);
    ck_assert_int_eq(hold, 0);
}
END_TEST

static Suite *routejson_suite(void)
{
    Suite *s = suite_create("routejson");
    TCase *tc = tcase_create("routejson");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_route_object_has_only_the_match_keys_the_route_sets);
    tcase_add_test(tc, test_route_object_shows_the_pool_it_sends_to_now_and_its_figures);
    tcase_add_test(tc, test_route_state_follows_every_maintenance_that_closes_it);
    tcase_add_test(tc, test_match_text_names_the_keys_in_order_or_a_star);
    tcase_add_test(tc, test_route_maintenance_retry_after_and_hold_follow_precedence);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(routejson_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
