/*
 * check_mirrorctl.c - `mirror P on|off` (mirrorctl.c) on the control path
 * with no worker (ctlfix.h): on publishes one snapshot whose pool carries
 * the mirror (threshold = percent x 100, the group, its view: the group's
 * eligible backends whatever its share, weights gcd-reduced), group and
 * percent defaulting to the pool's config; off publishes a snapshot with no
 * mirror for the pool nor its routes (their own mirror configs included);
 * both audited with the pool's mirror before and after; refusals publish
 * nothing; the state file line (state_render) and its restore, a group
 * that no longer exists falling back to the configuration.
 */
#include "ctlfix.h"
#include "mirrorstat.h"
#include "show.h"
#include "state.h"

#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"a1\"; address = \"127.0.0.1:1\"; group = \"blue\"; },"                             \
    "{ name = \"g1\"; address = \"127.0.0.1:2\"; group = \"green\"; weight = 100; },"              \
    "{ name = \"g2\"; address = \"127.0.0.1:3\"; group = \"green\"; weight = 50; },"               \
    "{ name = \"g3\"; address = \"127.0.0.1:4\"; group = \"green\"; },"                            \
    "{ name = \"r1\"; address = \"127.0.0.1:5\"; group = \"red\"; } );"                            \
    "shares = { blue = 100; green = 0; red = 0; };"                                                \
    "mirror = { group = \"red\"; percent = 25.0; max_inflight = 7; }; },"                          \
    "{ name = \"pay\"; backends = ("                                                               \
    "{ name = \"p1\"; address = \"127.0.0.1:6\"; group = \"blue\"; },"                             \
    "{ name = \"p2\"; address = \"127.0.0.1:7\"; group = \"green\"; } );"                          \
    "shares = { blue = 100; green = 0; }; } );\n"                                                  \
    "routes = ( { name = \"v2\"; pool = \"api\"; match = { path_prefix = \"/v2\"; };"              \
    "  mirror = { group = \"green\"; percent = 50.0; }; },"                                        \
    "{ name = \"users\"; pool = \"api\"; match = { path_prefix = \"/users\"; }; },"                \
    "{ name = \"paid\"; pool = \"pay\"; match = { path_prefix = \"/pay\"; }; } );\n"

#define API   0
#define PAY   1
#define V2    0
#define USERS 1
#define PAID  2

/* ctl_down, then the mirror sites the snapshots counted into (they live until exit in veer). */
static void down(void)
{
    ctl_down();
    mirror_sites_free();
}

static const struct snap_pool *spool(uint32_t i)
{
    ck_assert_uint_lt(i, routing_current()->npools);
    return &routing_current()->pools[i];
}

static const struct snap_route *sroute(uint32_t i)
{
    ck_assert_uint_lt(i, routing_current()->nroutes);
    return &routing_current()->route[i];
}

/* The view's backends as "name:weight,...". */
static void view_text(const struct snap_mirror *sm, char *out, size_t len)
{
    size_t n = 0;

    out[0] = '\0';
    for (uint32_t i = 0; i < sm->view.n; i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s:%llu", i ? "," : "", sm->view.b[i].be->name,
                              (unsigned long long)sm->view.b[i].weight);
}

static int backend_index(uint32_t pi, const char *name)
{
    for (uint32_t i = 0; i < CF.m->pools[pi].nb; i++)
        if (strcmp(CF.m->pools[pi].b[i].be->name, name) == 0)
            return (int)i;
    ck_abort_msg("no backend %s", name);
    return -1;
}

START_TEST(test_config_mirrors_are_in_the_first_snapshot)
{
    ctl_up(CONF);
    ck_assert_ptr_nonnull(spool(API)->mirror);
    ck_assert_uint_eq(spool(API)->mirror->threshold, 2500);
    ck_assert_str_eq(spool(API)->mirror->group, "red");
    ck_assert_int_eq(spool(API)->mirror->conf->max_inflight, 7);
    ck_assert_ptr_eq(spool(API)->msite, mirror_site_get("api", ""));
    ck_assert_ptr_null(spool(PAY)->mirror);
    ck_assert_ptr_null(spool(PAY)->msite);
    /* v2's own; users takes its pool's; paid's pool does not mirror. */
    ck_assert_uint_eq(sroute(V2)->mirror->threshold, 5000);
    ck_assert_str_eq(sroute(V2)->mirror->group, "green");
    ck_assert_ptr_eq(sroute(V2)->msite, mirror_site_get("api", "v2"));
    ck_assert_ptr_eq(sroute(USERS)->mirror, spool(API)->mirror);
    ck_assert_ptr_eq(sroute(USERS)->msite, mirror_site_get("api", "users"));
    ck_assert_ptr_null(sroute(PAID)->mirror);
    down();
}
END_TEST

START_TEST(test_mirror_on_publishes_group_threshold_and_view)
{
    const struct snap_mirror *sm;
    char before[512], after[512], view[256];

    ctl_up(CONF);
    CF.m->pools[API].b[backend_index(API, "g3")].admin = ADMIN_MAINT; /* not eligible */
    ctl_change("mirror api on group=green percent=10", NULL);
    sm = spool(API)->mirror;
    ck_assert_ptr_nonnull(sm);
    ck_assert_uint_eq(sm->threshold, 1000);
    ck_assert_str_eq(sm->group, "green");
    ck_assert_int_eq(sm->pool, API);
    ck_assert_int_eq(sm->conf->max_inflight, 7); /* the pool's limits */
    /* green's share is 0: the view still holds its eligible backends, weights 100:50 -> 2:1. */
    ck_assert_int_eq(CF.m->pools[API].g[1].share, 0);
    view_text(sm, view, sizeof(view));
    ck_assert_str_eq(view, "g1:2,g2:1");
    ck_assert_str_eq(sm->cmp, "content-type");
    ck_assert_ptr_eq(spool(API)->msite, mirror_site_get("api", ""));
    ck_assert_int_eq(CF.m->pools[API].mirror, MIRROR_ON);
    ck_assert_str_eq(CF.m->pools[API].mirror_group, "green");
    ck_assert_double_eq(CF.m->pools[API].mirror_percent, 10.0);
    /* The route without a mirror of its own follows its pool. */
    ck_assert_ptr_eq(sroute(USERS)->mirror, sm);
    ctl_last_before_after(before, after, sizeof(before));
    ck_assert_str_eq(before, "{\"pool\":\"api\",\"mirror\":true,\"group\":\"red\",\"percent\":25}");
    ck_assert_str_eq(after,
                     "{\"pool\":\"api\",\"mirror\":true,\"group\":\"green\",\"percent\":10}");
    down();
}
END_TEST

START_TEST(test_mirror_on_defaults_to_the_pool_config_then_to_100_percent)
{
    char before[512], after[512], view[256];

    ctl_up(CONF);
    ctl_change("mirror api on", NULL);
    ck_assert_uint_eq(spool(API)->mirror->threshold, 2500);
    ck_assert_str_eq(spool(API)->mirror->group, "red");
    view_text(spool(API)->mirror, view, sizeof(view));
    ck_assert_str_eq(view, "r1:1");
    ctl_change("mirror api on percent=0.5", NULL);
    ck_assert_uint_eq(spool(API)->mirror->threshold, 50);
    ck_assert_str_eq(spool(API)->mirror->group, "red");
    /* pay has no mirror config: the group given, 100 percent, the default limits. */
    ctl_change("mirror pay on group=green", NULL);
    ck_assert_uint_eq(spool(PAY)->mirror->threshold, 10000);
    ck_assert_str_eq(spool(PAY)->mirror->group, "green");
    ck_assert_int_eq(spool(PAY)->mirror->conf->max_inflight, 256);
    ck_assert_int_eq(spool(PAY)->mirror->conf->timeout_ms, 2000);
    ck_assert_int_eq(spool(PAY)->mirror->conf->max_body_bytes, 65536);
    ck_assert_int_eq(spool(PAY)->mirror->conf->methods.n, 3);
    view_text(spool(PAY)->mirror, view, sizeof(view));
    ck_assert_str_eq(view, "p2:1");
    ck_assert_ptr_eq(sroute(PAID)->mirror, spool(PAY)->mirror);
    ck_assert_ptr_eq(sroute(PAID)->msite, mirror_site_get("pay", "paid"));
    ctl_last_before_after(before, after, sizeof(before));
    ck_assert_str_eq(before, "{\"pool\":\"pay\",\"mirror\":false}");
    ck_assert_str_eq(after,
                     "{\"pool\":\"pay\",\"mirror\":true,\"group\":\"green\",\"percent\":100}");
    down();
}
END_TEST

START_TEST(test_mirror_off_stops_the_pool_and_its_routes)
{
    char before[512], after[512];

    ctl_up(CONF);
    ck_assert_ptr_nonnull(sroute(V2)->mirror);
    ctl_change("mirror api off", NULL);
    ck_assert_ptr_null(spool(API)->mirror);
    ck_assert_ptr_null(sroute(V2)->mirror); /* its own mirror config too */
    ck_assert_ptr_null(sroute(USERS)->mirror);
    ck_assert_int_eq(CF.m->pools[API].mirror, MIRROR_OFF);
    ck_assert_ptr_null(CF.m->pools[API].mirror_group);
    ctl_last_before_after(before, after, sizeof(before));
    ck_assert_str_eq(before, "{\"pool\":\"api\",\"mirror\":true,\"group\":\"red\",\"percent\":25}");
    ck_assert_str_eq(after, "{\"pool\":\"api\",\"mirror\":false}");
    /* On again: the route's own mirror is back. */
    ctl_change("mirror api on group=green percent=10", NULL);
    ck_assert_uint_eq(sroute(V2)->mirror->threshold, 5000);
    ck_assert_uint_eq(sroute(USERS)->mirror->threshold, 1000);
    ctl_change("mirror api off", NULL);
    ck_assert_ptr_null(spool(API)->mirror);
    ck_assert_ptr_null(sroute(V2)->mirror);
    ck_assert_ptr_null(sroute(USERS)->mirror);
    /* pay did not mirror: off is still one change, published. */
    ctl_change("mirror pay off", NULL);
    ck_assert_ptr_null(spool(PAY)->mirror);
    down();
}
END_TEST

START_TEST(test_refusals_leave_the_model_untouched)
{
    char err[256];
    struct cmd c;

    ctl_up(CONF);
    ctl_refused("mirror api on group=purple", "ERR unknown group purple in pool api");
    ctl_refused("mirror nope on group=green", "ERR unknown pool nope");
    ctl_refused("mirror nope off", "ERR unknown pool nope");
    ctl_refused("mirror pay on", "ERR pool pay has no mirror group: give group=G");
    ctl_refused("mirror pay on percent=5", "ERR pool pay has no mirror group: give group=G");
    ck_assert_int_eq(CF.m->pools[API].mirror, MIRROR_CONF);
    ck_assert_int_eq(CF.m->pools[PAY].mirror, MIRROR_CONF);
    ck_assert_uint_eq(spool(API)->mirror->threshold, 2500);
    ck_assert_ptr_null(spool(PAY)->mirror);
    /* A percent out of range never reaches the control thread. */
    ck_assert_int_ne(cmd_parse("mirror api on percent=101", &c, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "percent must be between 0 and 100") != NULL, "%s", err);
    ck_assert_int_ne(cmd_parse("mirror api on percent=-1", &c, err, sizeof(err)), 0);
    ck_assert_int_ne(cmd_parse("mirror api maybe", &c, err, sizeof(err)), 0);
    ck_assert_int_ne(cmd_parse("mirror api off group=green", &c, err, sizeof(err)), 0);
    down();
}
END_TEST

START_TEST(test_state_file_lines_and_their_restore)
{
    struct model *m2;
    char msg[256], *text, *p;

    ctl_up(CONF);
    text = state_render(CF.m);
    ck_assert_ptr_null(strstr(text, "mirror")); /* as configured: no line */
    free(text);
    ctl_change("mirror api on group=green percent=10", NULL);
    ctl_change("mirror pay off", NULL);
    text = state_render(CF.m);
    ck_assert_msg(strstr(text, "pool api\nmirror on green 10.0000\n") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "pool pay\nmirror off\n") != NULL, "%s", text);

    /* A restart with that file: the same decisions, published by the first snapshot. */
    m2 = model_from_conf(CF.c);
    ck_assert_int_ge(state_apply(m2, text, msg, sizeof(msg)), 0);
    ck_assert_int_eq(m2->pools[API].mirror, MIRROR_ON);
    ck_assert_str_eq(m2->pools[API].mirror_group, "green");
    ck_assert_double_eq(m2->pools[API].mirror_percent, 10.0);
    ck_assert_int_eq(m2->pools[PAY].mirror, MIRROR_OFF);
    {
        struct routing *r = routing_build(m2);

        ck_assert_uint_eq(r->pools[API].mirror->threshold, 1000);
        ck_assert_str_eq(r->pools[API].mirror->group, "green");
        ck_assert_ptr_null(r->pools[PAY].mirror);
        routing_free(r);
    }
    model_free(m2);

    /* A fractional percent keeps 4 decimals. */
    free(text);
    ctl_change("mirror api on group=green percent=0.125", NULL);
    text = state_render(CF.m);
    ck_assert_msg(strstr(text, "mirror on green 0.1250\n") != NULL, "%s", text);

    /* The group is gone from the configuration: the pool mirrors as configured. */
    p = strstr(text, "mirror on green");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "mirror on gone0", 15);
    m2 = model_from_conf(CF.c);
    ck_assert_int_ge(state_apply(m2, text, msg, sizeof(msg)), 0);
    ck_assert_int_eq(m2->pools[API].mirror, MIRROR_CONF);
    ck_assert_ptr_null(m2->pools[API].mirror_group);
    ck_assert_int_eq(m2->pools[PAY].mirror, MIRROR_OFF);
    model_free(m2);
    free(text);

    /* Bad lines: the whole file is refused. */
    m2 = model_from_conf(CF.c);
    ck_assert_int_eq(state_apply(m2,
                                 "veer-state 1\ngeneration 3\npool api\nmirror on green 101\nend\n",
                                 msg, sizeof(msg)),
                     -1);
    ck_assert_int_eq(state_apply(m2, "veer-state 1\ngeneration 3\npool api\nmirror sideways\nend\n",
                                 msg, sizeof(msg)),
                     -1);
    ck_assert_int_eq(m2->pools[API].mirror, MIRROR_CONF);
    model_free(m2);
    down();
}
END_TEST

/* `mirror report P --json`: the reply's JSON document. */
static json_t *report_json(const char *line)
{
    json_error_t e;
    json_t *j;

    ctl_run(line);
    ck_assert_msg(CF.reply.ok, "%s: %s", line, CF.reply.text);
    j = json_loadb(CF.reply.text, strlen(CF.reply.text) - 2, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(j != NULL && json_is_object(j), "%s: not JSON (%s): %s", line, e.text,
                  CF.reply.text);
    return j;
}

static json_t *row(json_t *report, size_t i)
{
    return json_array_get(json_object_get(report, "routes"), i);
}

/* The row of route `name` in a report; fails when there is none. */
static json_t *row_of(json_t *report, const char *name)
{
    json_t *routes = json_object_get(report, "routes");

    for (size_t i = 0; i < json_array_size(routes); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(routes, i), "route")), name) ==
            0)
            return json_array_get(routes, i);
    ck_abort_msg("no row for route '%s'", name);
    return NULL;
}

/*
 * mirrorjson.h: "A route row per route whose requests to the pool were
 * mirrored": build_mirrors creates a site for every route of a mirroring
 * pool, but a site that counted nothing has no row.
 */
START_TEST(test_report_rows_are_only_routes_that_were_mirrored)
{
    json_t *j;

    ctl_up(CONF);
    control_set_show(show_execute);
    mirror_count(spool(API)->msite, 0, 200, MR_MATCH, 10, 10);
    mirror_count(sroute(V2)->msite, 0, 404, MR_ERROR, 0, 0);
    j = report_json("mirror report api --json");
    ck_assert_msg(json_array_size(json_object_get(j, "routes")) == 2, "%s", CF.reply.text);
    json_decref(j);
    down();
}
END_TEST

START_TEST(test_mirror_report_through_the_admin_line)
{
    json_t *j, *totals;
    size_t records;

    ctl_up(CONF);
    control_set_show(show_execute);
    mirror_count(spool(API)->msite, 0, 200, MR_MATCH, 10, 10);
    mirror_count(spool(API)->msite, 0, 200, MR_MATCH, 10, 10);
    mirror_count(sroute(V2)->msite, 0, 404, MR_ERROR, 0, 0);
    records = ctl_audit_count();
    j = report_json("mirror report api --json");
    ck_assert_str_eq(json_string_value(json_object_get(j, "pool")), "api");
    ck_assert(json_is_true(json_object_get(j, "on")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "group")), "red");
    ck_assert_double_eq(json_number_value(json_object_get(j, "percent")), 25);
    ck_assert_str_eq(json_string_value(json_object_get(row(j, 0), "route")), ""); /* first */
    totals = json_object_get(row_of(j, ""), "totals");
    ck_assert_int_eq(json_integer_value(json_object_get(totals, "match")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(totals, "mirrored")), 2);
    totals = json_object_get(row_of(j, "v2"), "totals");
    ck_assert_int_eq(json_integer_value(json_object_get(totals, "error")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(totals, "mirrored")), 1);
    json_decref(j);
    ctl_run("mirror report api");
    ck_assert(CF.reply.ok);
    ck_assert_msg(strncmp(CF.reply.text, "pool api: mirror on, 25% to group red\n", 38) == 0, "%s",
                  CF.reply.text);
    ctl_run("mirror report nope");
    ck_assert(!CF.reply.ok);
    ck_assert_str_eq(CF.reply.text, "ERR unknown pool nope\n\n");
    ck_assert_uint_eq(ctl_audit_count(), records); /* queries are not audited */
    ctl_change("mirror api off", NULL);
    j = report_json("mirror report api --json");
    ck_assert(json_is_false(json_object_get(j, "on")));
    totals = json_object_get(row_of(j, ""), "totals"); /* the figures stay */
    ck_assert_int_eq(json_integer_value(json_object_get(totals, "match")), 2);
    json_decref(j);
    j = report_json("mirror report pay --json");
    ck_assert(json_is_false(json_object_get(j, "on")));
    ck_assert_uint_eq(json_array_size(json_object_get(j, "routes")), 0);
    json_decref(j);
    down();
}
END_TEST

static Suite *mirrorctl_suite(void)
{
    Suite *s = suite_create("mirrorctl");
    TCase *tc = tcase_create("mirror");

    tcase_add_test(tc, test_config_mirrors_are_in_the_first_snapshot);
    tcase_add_test(tc, test_mirror_on_publishes_group_threshold_and_view);
    tcase_add_test(tc, test_mirror_on_defaults_to_the_pool_config_then_to_100_percent);
    tcase_add_test(tc, test_mirror_off_stops_the_pool_and_its_routes);
    tcase_add_test(tc, test_refusals_leave_the_model_untouched);
    tcase_add_test(tc, test_state_file_lines_and_their_restore);
    tcase_add_test(tc, test_mirror_report_through_the_admin_line);
    tcase_add_test(tc, test_report_rows_are_only_routes_that_were_mirrored);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mirrorctl_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
