/*
 * check_rolloutshadow.c - a rollout's shadow phase (rollout.c: shadow_begin,
 * shadow_timer_cb, shadow_stop) on the control thread with no worker
 * (ctlfix.h), its timer run by the control loop: `rollout start ...
 * shadow=200ms` mirrors the pool's requests to the canary (one snapshot,
 * no share moved); the figures the workers would count are counted into
 * the pool's mirror site by the test. At the end of the phase, differences
 * over max-diff-rate (or a shadow p99 over max-p99) end the rollout before
 * step 1, audited, with no share moved; only matches lead to step 1. An
 * abort or a reload during the phase stops the mirror and moves nothing.
 * Figures counted before the start are not judged.
 */
#include "ctlfix.h"
#include "mirrorstat.h"

#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; group = \"blue\"; },"                         \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; group = \"blue\"; },"                         \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; group = \"green\"; },"                       \
    "{ name = \"green-2\"; address = \"127.0.0.1:4\"; group = \"green\"; } );"                     \
    "shares = { blue = 100; green = 0; }; } );\n"                                                  \
    "routes = ( { name = \"users\"; pool = \"api\"; match = { path_prefix = \"/users\"; }; } );\n"

#define API   0
#define BLUE  0
#define GREEN 1

#define START "rollout start api canary=green steps=10,100 interval=30s shadow=200ms"

static void down(void)
{
    ctl_down();
    mirror_sites_free();
}

static int share(uint32_t g)
{
    return CF.m->pools[API].g[g].share;
}

/* The `rollout status api` reply. */
static const char *status(void)
{
    ctl_run("rollout status api");
    ck_assert_msg(CF.reply.ok, "%s", CF.reply.text);
    return CF.reply.text;
}

static bool status_has(const char *want)
{
    return strstr(status(), want) != NULL;
}

/* Count n results r (primary 200, shadow latency us) into site s, worker 0. */
static void count(struct mirror_site *s, unsigned n, enum mirror_result r, uint64_t us)
{
    for (unsigned i = 0; i < n; i++)
        mirror_count(s, 0, 200, r, 1000, us);
}

/* The last audit record: by actor, its command starting with prefix. */
static void assert_last_audit(const char *actor, const char *prefix)
{
    json_t *a = ctl_audit_records();
    json_t *rec = json_array_get(a, json_array_size(a) - 1);
    const char *cmd = json_string_value(json_object_get(rec, "command"));

    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), actor);
    ck_assert_msg(cmd && strncmp(cmd, prefix, strlen(prefix)) == 0, "audited %s, want %s...", cmd,
                  prefix);
    json_decref(a);
}

/* Start the phase: one publish that mirrors all of api's requests to green, no share moved. */
static void start(const char *line, uint32_t threshold)
{
    ctl_change(line, " state=shadow shadow_ms=200");
    ck_assert_ptr_nonnull(routing_current()->pools[API].mirror);
    ck_assert_str_eq(routing_current()->pools[API].mirror->group, "green");
    ck_assert_uint_eq(routing_current()->pools[API].mirror->threshold, threshold);
    ck_assert_uint_eq(routing_current()->pools[API].mirror->view.n, 2);
    ck_assert_ptr_eq(routing_current()->route[0].mirror, routing_current()->pools[API].mirror);
    ck_assert_int_eq(share(GREEN), 0);
    ck_assert_int_eq(share(BLUE), 100);
    ck_assert(status_has("state shadow\n"));
}

static bool phase_over(void)
{
    return routing_current()->pools[API].mirror == NULL;
}

START_TEST(test_diffs_abort_in_the_shadow_phase_with_no_share_moved)
{
    struct mirror_site *s, *u;
    uint64_t gen;

    ctl_up(CONF);
    start(START, 10000);
    gen = CF.m->generation;
    s = routing_current()->pools[API].msite;
    u = routing_current()->route[0].msite;
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(u);
    count(s, 6, MR_MATCH, 1000);
    count(u, 2, MR_MATCH, 1000);
    count(s, 1, MR_STATUS_DIFF, 1000);
    count(u, 1, MR_BODY_DIFF, 1000);
    count(s, 3, MR_DROPPED, 0); /* not sent: not judged */
    CTL_LOOP_UNTIL(phase_over());
    ck_assert_uint_eq(CF.m->generation, gen + 1); /* the mirror off, one publish */
    ck_assert_int_eq(share(GREEN), 0);
    ck_assert_int_eq(share(BLUE), 100);
    ck_assert(status_has("state ended\n"));
    ck_assert_msg(status_has("verdict aborted in its shadow phase: green diff rate 20.00% (2 of 10 "
                             "answered) > max-diff-rate 1.00%; no traffic moved\n"),
                  "%s", CF.reply.text);
    ck_assert_msg(status_has("shadow 200ms percent 100 max-diff-rate 1.00% failed after "), "%s",
                  CF.reply.text);
    ck_assert(status_has(": 10 mirrored, 10 answered, 2 differed (20.00%)"));
    assert_last_audit("rollout", "rollout api aborted in its shadow phase: green diff rate 20.00%");
    /* Ended: a new start is allowed, pause is refused. */
    ctl_refused("rollout pause api", "has ended");
    down();
}
END_TEST

START_TEST(test_only_matches_lead_to_step_1_after_the_phase)
{
    struct mirror_site *s;
    uint64_t gen;

    ctl_up(CONF);
    /* Differences counted before the start are not the canary's. */
    count(mirror_site_get("api", ""), 50, MR_STATUS_DIFF, 1000);
    start(START " shadow-percent=25", 2500);
    gen = CF.m->generation;
    s = routing_current()->pools[API].msite;
    ck_assert_ptr_eq(s, mirror_site_get("api", ""));
    count(s, 20, MR_MATCH, 1000);
    count(s, 4, MR_DROPPED, 0);
    CTL_LOOP_UNTIL(share(GREEN) == 10);
    ck_assert_int_eq(share(BLUE), 90);
    ck_assert_ptr_null(routing_current()->pools[API].mirror); /* the config has none */
    ck_assert_ptr_null(routing_current()->route[0].mirror);
    ck_assert_uint_ge(CF.m->generation, gen + 1);
    ck_assert_msg(status_has("state running\n"), "%s", CF.reply.text);
    ck_assert(status_has("step 1/2 share 10 "));
    ck_assert_msg(status_has("shadow 200ms percent 25 max-diff-rate 1.00% passed after "), "%s",
                  CF.reply.text);
    ck_assert(status_has(": 20 mirrored, 20 answered, 0 differed (0.00%)"));
    down();
}
END_TEST

START_TEST(test_diff_rate_at_the_threshold_passes)
{
    struct mirror_site *s;

    ctl_up(CONF);
    start(START " max-diff-rate=10", 10000);
    s = routing_current()->pools[API].msite;
    count(s, 9, MR_MATCH, 1000);
    count(s, 1, MR_BODY_DIFF, 1000); /* 10%: not over */
    CTL_LOOP_UNTIL(share(GREEN) == 10);
    ck_assert(status_has(": 10 mirrored, 10 answered, 1 differed (10.00%)"));
    down();
}
END_TEST

START_TEST(test_shadow_p99_over_max_p99_aborts)
{
    struct mirror_site *s;

    ctl_up(CONF);
    start(START " max-p99=500ms", 10000);
    s = routing_current()->pools[API].msite;
    count(s, 10, MR_MATCH, 600000); /* the shadow answers in 600 ms: p99 reads 1000 ms */
    CTL_LOOP_UNTIL(phase_over());
    ck_assert_int_eq(share(GREEN), 0);
    ck_assert_msg(status_has("verdict aborted in its shadow phase: green shadow p99 1000.0 ms over "
                             "10 mirrored > max-p99 500 ms; no traffic moved\n"),
                  "%s", CF.reply.text);
    assert_last_audit("rollout", "rollout api aborted in its shadow phase: green shadow p99");
    down();
}
END_TEST

/* Whether green's share moved (it must not). */
static bool share_moved(void *arg)
{
    (void)arg;
    return share(GREEN) != 0;
}

START_TEST(test_abort_during_the_phase_stops_the_mirror_and_moves_nothing)
{
    struct mirror_site *s;
    uint64_t gen;
    size_t records;
    char want[64];

    ctl_up(CONF);
    start(START, 10000);
    s = routing_current()->pools[API].msite;
    count(s, 10, MR_MATCH, 1000);
    ctl_refused("rollout pause api", "is in its shadow phase (rollout abort api to stop it)");
    gen = CF.m->generation;
    records = ctl_audit_count();
    ctl_run("rollout abort api");
    ck_assert_msg(CF.reply.ok, "%s", CF.reply.text);
    snprintf(want, sizeof(want), "OK gen=%llu ", (unsigned long long)gen + 1);
    ck_assert_msg(strncmp(CF.reply.text, want, strlen(want)) == 0, "%s", CF.reply.text);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    /* The operator's command, then the rollout's verdict. */
    ck_assert_uint_eq(ctl_audit_count(), records + 2);
    {
        json_t *a = ctl_audit_records();
        json_t *rec = json_array_get(a, records);

        ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), "operator");
        ck_assert_str_eq(json_string_value(json_object_get(rec, "command")), "rollout abort api");
        ck_assert_str_eq(json_string_value(json_object_get(rec, "result")), "OK");
        ck_assert_int_eq(json_integer_value(json_object_get(rec, "generation")), (int)gen + 1);
        json_decref(a);
    }
    assert_last_audit("rollout",
                      "rollout api aborted by operator in its shadow phase; no traffic moved");
    ck_assert(phase_over());
    ck_assert_int_eq(share(GREEN), 0);
    ck_assert(status_has("state ended\n"));
    ck_assert(status_has("verdict aborted by operator in its shadow phase; no traffic moved\n"));
    ck_assert(status_has("stopped: aborted by operator"));
    /* Past the phase's end: its timer is gone, nothing moves. */
    ck_assert(!ctl_wait(share_moved, NULL, 400));
    ck_assert(phase_over());
    ck_assert(status_has("state ended\n"));
    down();
}
END_TEST

START_TEST(test_reload_stops_the_phase)
{
    const struct ctlfix_opts keep = {.keep_file = true};

    ctl_up_with(CONF, &keep);
    start(START, 10000);
    count(routing_current()->pools[API].msite, 10, MR_MATCH, 1000);
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    ck_assert(phase_over());
    ck_assert_int_eq(share(GREEN), 0);
    ck_assert_msg(status_has("verdict shadow phase stopped: the configuration was reloaded; no "
                             "traffic moved\n"),
                  "%s", CF.reply.text);
    ck_assert(!ctl_wait(share_moved, NULL, 400));
    ck_assert(phase_over());
    down();
}
END_TEST

/*
 * The contract: diff rate = (status_diff + body_diff) / completed pairs.
 * Timeouts and errors are not completed pairs, so 10 matches and 10
 * timeouts are a 0% diff rate. (They are in the shadow's p99, at the
 * latency the caller gives: 0 here, so the p99 passes too.)
 */
START_TEST(test_timeouts_are_not_differences_in_the_diff_rate)
{
    struct mirror_site *s;

    ctl_up(CONF);
    start(START, 10000);
    s = routing_current()->pools[API].msite;
    count(s, 10, MR_MATCH, 1000);
    count(s, 10, MR_TIMEOUT, 0);
    CTL_LOOP_UNTIL(phase_over());
    ck_assert_msg(share(GREEN) == 10, "%s", status());
    down();
}
END_TEST

static Suite *rolloutshadow_suite(void)
{
    Suite *s = suite_create("rolloutshadow");
    TCase *tc = tcase_create("shadow");

    tcase_add_test(tc, test_diffs_abort_in_the_shadow_phase_with_no_share_moved);
    tcase_add_test(tc, test_only_matches_lead_to_step_1_after_the_phase);
    tcase_add_test(tc, test_diff_rate_at_the_threshold_passes);
    tcase_add_test(tc, test_shadow_p99_over_max_p99_aborts);
    tcase_add_test(tc, test_abort_during_the_phase_stops_the_mirror_and_moves_nothing);
    tcase_add_test(tc, test_reload_stops_the_phase);
    tcase_add_test(tc, test_timeouts_are_not_differences_in_the_diff_rate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rolloutshadow_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
