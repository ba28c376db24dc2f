/*
 * check_routectl.c - runtime route changes (routectl.c) on the control path
 * with no worker (ctlfix.h): route maintenance and route set each publish
 * one snapshot whose route entry says so, are audited with the route's
 * state before and after, and leave other routes alone; rollback undoes
 * route sets newest first, by route name, and a name shared by a pool and a
 * route goes to whichever changed last; refusals publish nothing.
 */
#include "ctlfix.h"

#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "maintenance = { retry_after = 17; };\n"                                                       \
    "pools = ( { name = \"api\"; backends = ( { name = \"a1\"; address = \"127.0.0.1:1\"; } ); }," \
    "{ name = \"pay\"; backends = ( { name = \"p1\"; address = \"127.0.0.1:2\"; } ); },"           \
    "{ name = \"pay2\"; backends = ( { name = \"q1\"; address = \"127.0.0.1:3\"; } ); } );\n"      \
    "routes = ( { name = \"pay\"; pool = \"pay\"; match = { path_prefix = \"/pay\"; }; },"         \
    "{ name = \"users\"; pool = \"api\"; match = { path_prefix = \"/users\"; }; } );\n"

#define API  0
#define PAY  1
#define PAY2 2

/* The published snapshot's entry for route i. */
static const struct snap_route *snap(uint32_t i)
{
    ck_assert_uint_lt(i, routing_current()->nroutes);
    return &routing_current()->route[i];
}

START_TEST(test_route_maintenance_on_and_off)
{
    char before[512], after[512];

    ctl_up(CONF);
    ck_assert(!snap(0)->maint);
    ctl_change("route maintenance pay on --hold 2s", NULL);
    ck_assert(snap(0)->maint);
    ck_assert_int_eq(snap(0)->retry_after, 17); /* maintenance.retry_after by default */
    ck_assert_int_eq(snap(0)->maint_hold_ms, 2000);
    ck_assert(!snap(1)->maint);
    ck_assert(!routing_current()->pools[PAY].maint); /* the route's, not its pool's */
    ctl_last_before_after(before, after, sizeof(before));
    ck_assert_str_eq(
        before, "{\"route\":\"pay\",\"pool\":\"pay\",\"maintenance\":false,\"retry_after\":0}");
    ck_assert_str_eq(
        after, "{\"route\":\"pay\",\"pool\":\"pay\",\"maintenance\":true,\"retry_after\":17}");
    ctl_change("route maintenance pay on --retry-after 5", NULL);
    ck_assert_int_eq(snap(0)->retry_after, 5);
    ck_assert_int_eq(snap(0)->maint_hold_ms, 0);
    ctl_change("route maintenance pay off", NULL);
    ck_assert(!snap(0)->maint);
    ck_assert_int_eq(snap(0)->retry_after, 0);
    ctl_down();
}
END_TEST

START_TEST(test_route_set_points_the_route_at_another_pool)
{
    ctl_up(CONF);
    ck_assert_int_eq(snap(0)->pool, PAY);
    ctl_change("route set pay pool pay2", " route=pay pool=pay2 previous=pay");
    ck_assert_int_eq(snap(0)->pool, PAY2);
    ck_assert_int_eq(snap(1)->pool, API);
    ck_assert_int_eq(CF.m->routes[0].pool, PAY2);
    ck_assert_uint_eq(CF.m->routes[0].nhistory, 1);
    ctl_change("route set pay pool api", " route=pay pool=api previous=pay2");
    ck_assert_int_eq(snap(0)->pool, API);
    ctl_down();
}
END_TEST

START_TEST(test_rollback_route_goes_back_newest_first)
{
    ctl_up(CONF);
    ctl_change("route set pay pool pay2", NULL);
    ctl_change("route set pay pool api", NULL);
    ctl_change("rollback route pay", " route=pay pool=pay2 previous=api");
    ck_assert_int_eq(snap(0)->pool, PAY2);
    ctl_change("rollback route pay", " route=pay pool=pay previous=pay2");
    ck_assert_int_eq(snap(0)->pool, PAY);
    ctl_refused("rollback route pay", "nothing to roll back in route pay");
    ctl_down();
}
END_TEST

/*
 * "rollback pay": both a pool and a route are named pay. The one whose
 * operator change is the newer is rolled back.
 */
START_TEST(test_rollback_of_a_shared_name_takes_the_newer_change)
{
    ctl_up(CONF);
    ctl_change("route set pay pool pay2", NULL);
    ctl_change("set weight pay/p1 5", NULL);
    ctl_change("rollback pay", NULL); /* the pool's weight: the newer change */
    ck_assert_int_eq(CF.m->pools[PAY].b[0].weight, 100);
    ck_assert_int_eq(snap(0)->pool, PAY2);
    ctl_change("set weight pay/p1 6", NULL);
    ctl_change("route set pay pool api", NULL);
    ctl_change("rollback pay", " route=pay pool=pay2"); /* now the route's is newer */
    ck_assert_int_eq(CF.m->pools[PAY].b[0].weight, 6);
    /* A name only a route has: the route. */
    ctl_change("route set users pool pay", NULL);
    ctl_change("rollback users", " route=users pool=api");
    ctl_down();
}
END_TEST

START_TEST(test_refusals_publish_nothing)
{
    ctl_up(CONF);
    ctl_refused("route set nope pool api", "unknown route nope");
    ctl_refused("route set pay pool nope", "unknown pool nope");
    ctl_refused("route set pay pool pay", "route pay already sends to pool pay");
    ctl_refused("route maintenance nope on", "unknown route nope");
    ctl_refused("rollback route nope", "unknown route nope");
    ctl_refused("rollback route users", "nothing to roll back in route users");
    ck_assert_int_eq(snap(0)->pool, PAY);
    ck_assert(!snap(0)->maint);
    ctl_down();
}
END_TEST

/* A reload keeps route state unless the file changed the route's pool (model_bind_routes). */
START_TEST(test_runtime_state_is_carried_by_name_across_a_rebind)
{
    ctl_up(CONF);
    ctl_change("route set pay pool pay2", NULL);
    ctl_change("route maintenance users on", NULL);
    model_bind_routes(CF.m); /* the same configuration again */
    ck_assert_int_eq(CF.m->routes[0].pool, PAY2);
    ck_assert(CF.m->routes[1].maint);
    ck_assert_uint_eq(CF.m->routes[0].nhistory, 1);
    ck_assert_uint_eq(CF.m->routes[0].slot, 0);
    ck_assert_uint_eq(CF.m->routes[1].slot, 1);
    ck_assert_int_eq(model_find_route(CF.m, "users"), 1);
    ck_assert_int_eq(model_find_route(CF.m, "nope"), -1);
    ctl_down();
}
END_TEST

static Suite *routectl_suite(void)
{
    Suite *s = suite_create("routectl");
    TCase *tc = tcase_create("changes");

    tcase_add_test(tc, test_route_maintenance_on_and_off);
    tcase_add_test(tc, test_route_set_points_the_route_at_another_pool);
    tcase_add_test(tc, test_rollback_route_goes_back_newest_first);
    tcase_add_test(tc, test_rollback_of_a_shared_name_takes_the_newer_change);
    tcase_add_test(tc, test_refusals_publish_nothing);
    tcase_add_test(tc, test_runtime_state_is_carried_by_name_across_a_rebind);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(routectl_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
