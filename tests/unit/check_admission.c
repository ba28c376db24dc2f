/*
 * check_admission.c - who may take traffic beyond the operator's say
 * (admission.c), on the control thread with no worker thread (ctlfix.h).
 * Readiness check results are fed to ctl_on_health as the checker would
 * (the checker itself is stopped: the test is the only source of
 * results); the workers' breaker reports go through
 * data/report.h (report_breaker) into the control thread's mailbox, and
 * the control loop is run to read them. The control thread's periodic
 * tick is stopped too: the slow start ramp moves when the test calls
 * ctl_slow_start_tick, time being moved by backdating when the backend
 * was admitted.
 *
 * Readiness: PENDING until `rise` consecutive passing checks (then who
 * waits for it, a replace, moves on), READY until `fall` consecutive
 * failing ones, then DOWN until `rise` passing ones; each transition is
 * one publish and one audit record (actor health).
 * Breaker: a failure report opens the circuit (out of the snapshot) for
 * cooldown_ms, then it is half-open (a tenth of its weight) until
 * half_open_successes trials succeed (closed) or one fails (open again),
 * reports judged in the order they were posted; never more than
 * max_ejection_percent of the READY backends opened at once. Slow start:
 * an admitted backend's weight ramps from 10% to 100% over slow_start_ms.
 * Frozen for an upgrade, nothing of this is decided until the thaw.
 *
 * Each test runs in its own process (Check's fork mode).
 */
#include "control-i.h"
#include "ctlfix.h"
#include "health.h"
#include "report.h"

/*
 * api: four backends, no readiness checks, a breaker with a long cooldown
 * (the test ends it) that ejects at most half of them. checked: readiness
 * checks rise 2, fall 3, and a 10 s slow start. quick: a 200 ms cooldown.
 */
#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\";"                                                                  \
    " breaker = { failures = 3; cooldown_ms = 600000; half_open_successes = 2;"                    \
    " max_ejection_percent = 50; };"                                                               \
    " backends = ( { name = \"a-1\"; address = \"127.0.0.1:1\"; },"                                \
    " { name = \"a-2\"; address = \"127.0.0.1:2\"; },"                                             \
    " { name = \"a-3\"; address = \"127.0.0.1:3\"; },"                                             \
    " { name = \"a-4\"; address = \"127.0.0.1:4\"; } ); },"                                        \
    " { name = \"checked\";"                                                                       \
    " health = { path = \"/ready\"; interval_ms = 600000; rise = 2; fall = 3; };"                  \
    " slow_start_ms = 10000;"                                                                      \
    " breaker = { cooldown_ms = 600000; half_open_successes = 1; };"                               \
    " backends = ( { name = \"c-1\"; address = \"127.0.0.1:5\"; },"                                \
    " { name = \"c-2\"; address = \"127.0.0.1:6\"; } ); },"                                        \
    " { name = \"quick\"; breaker = { cooldown_ms = 200; };"                                       \
    " backends = ( { name = \"q-1\"; address = \"127.0.0.1:7\"; },"                                \
    " { name = \"q-2\"; address = \"127.0.0.1:8\"; } ); } );\n"

#define API     0
#define CHECKED 1
#define QUICK   2

#define SLOW_START_US (10 * 1000 * 1000)

/* How early a libevent timer may fire by veer_now_us (see test_cooldown_lasts_cooldown_ms). */
#define TICK_US (10 * 1000)

static void up(void)
{
    ctl_up(CONF);
    health_shutdown();   /* no real checks: the test gives the results */
    event_del(ctl.tick); /* no tick: the test moves slow start along */
}

static void down(void)
{
    ctl_down();
}

/* --- the model, the snapshot ------------------------------------------------------------ */

static struct rt_pool *pool(int pi)
{
    return &CF.m->pools[pi];
}

static uint32_t idx(int pi, const char *name)
{
    int i = model_find_backend(pool(pi), name);

    ck_assert_msg(i >= 0, "no backend %s", name);
    return (uint32_t)i;
}

static struct rt_backend *rb(int pi, const char *name)
{
    return &pool(pi)->b[idx(pi, name)];
}

static struct backend *be(int pi, const char *name)
{
    return rb(pi, name)->be;
}

static enum backend_state state(int pi, const char *name)
{
    return model_state(pool(pi), idx(pi, name));
}

/* The snapshot's weight for a backend of pool pi; 0 when it routes nothing to it. */
static uint64_t routed(int pi, const char *name)
{
    const struct snap_pool *sp = &routing_current()->pools[pi];

    for (uint32_t i = 0; i < sp->n; i++)
        if (strcmp(sp->b[i].be->name, name) == 0)
            return sp->b[i].weight;
    return 0;
}

static uint64_t gen(void)
{
    ck_assert_uint_eq(routing_current()->generation, CF.m->generation);
    return CF.m->generation;
}

/* --- the audit log ------------------------------------------------------------------- */

/*
 * Record k from the end (0: the last) is by `actor`, for `command`, at
 * generation g, and its before/after hold `key` from one value to the other.
 */
static void assert_record(size_t k, const char *actor, const char *command, uint64_t g,
                          const char *key, const char *from, const char *to)
{
    json_t *a = ctl_audit_records();
    json_t *rec;

    ck_assert_uint_gt(json_array_size(a), k);
    rec = json_array_get(a, json_array_size(a) - 1 - k);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), actor);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "command")), command);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "result")), "OK");
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "generation")), g);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(rec, "before"), key)), from);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(rec, "after"), key)), to);
    json_decref(a);
}

/* --- inputs ----------------------------------------------------------------------------- */

static void check(const char *name, bool ok)
{
    ctl_on_health(be(CHECKED, name), ok, 1000, ok ? NULL : "HTTP 503");
}

/* rise passing checks: a PENDING or DOWN backend of checked becomes READY. */
static void admit(const char *name)
{
    check(name, true);
    check(name, true);
    ck_assert_int_eq(state(CHECKED, name), BE_READY);
}

/* A worker's breaker report, read by the control loop. */
static void breaker_report(int pi, const char *name, bool ok)
{
    report_breaker(0, be(pi, name), ok);
    ck_assert_uint_eq(mailbox_count(&ctl.reports), 1);
    ctl_loop_once();
    ck_assert_uint_eq(mailbox_count(&ctl.reports), 0);
}

/* The cooldown of an open backend ends now (its timer fires). */
static void cooldown_ends(int pi, const char *name)
{
    struct rt_backend *b = rb(pi, name);

    ck_assert_int_eq(b->breaker, BREAKER_OPEN);
    ck_assert_ptr_nonnull(b->cooldown);
    ck_assert(evtimer_pending(b->cooldown, NULL));
    event_active(b->cooldown, EV_TIMEOUT, 1);
    ctl_loop_once();
}

/* Backdate when a ramping backend was admitted by `us`, as if that much time had gone by. */
static void time_passes(int pi, const char *name, uint64_t us)
{
    struct rt_backend *b = rb(pi, name);

    ck_assert_uint_gt(b->ready_since_us, us);
    b->ready_since_us -= us;
}

/*
 * One slow start tick: the factor must be the ramp's value at a moment
 * during the call, 0.1 + 0.9 x (time since admitted) / slow_start_ms,
 * capped at 1. Returns it.
 */
static double tick(int pi, const char *name)
{
    struct rt_backend *b = rb(pi, name);
    uint64_t t0 = veer_now_us(), t1;
    double lo, hi;

    ctl_slow_start_tick();
    t1 = veer_now_us();
    lo = 0.1 + 0.9 * (double)(t0 - b->ready_since_us) / SLOW_START_US;
    hi = 0.1 + 0.9 * (double)(t1 - b->ready_since_us) / SLOW_START_US;
    lo = lo > 1.0 ? 1.0 : lo;
    hi = hi > 1.0 ? 1.0 : hi;
    ck_assert_msg(b->factor >= lo - 1e-9 && b->factor <= hi + 1e-9, "factor %f not in [%f, %f]",
                  b->factor, lo, hi);
    return b->factor;
}

/* --- readiness ------------------------------------------------------------------------ */

/*
 * A backend of a pool with checks starts PENDING and out of the snapshot;
 * `rise` (2) consecutive passing checks make it READY, in one publish and
 * one audit record. A failure in between starts the count again.
 */
START_TEST(test_pending_until_rise_passing_checks)
{
    uint64_t g = gen();
    size_t records = ctl_audit_count();

    ck_assert_int_eq(state(CHECKED, "c-1"), BE_PENDING);
    ck_assert_uint_eq(routed(CHECKED, "c-1"), 0);
    check("c-1", true);
    check("c-1", false);
    check("c-1", true);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_PENDING);
    ck_assert_uint_eq(gen(), g);
    ck_assert_uint_eq(ctl_audit_count(), records);

    check("c-1", true);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_READY);
    ck_assert_uint_eq(gen(), g + 1);
    ck_assert_uint_gt(routed(CHECKED, "c-1"), 0);
    ck_assert_uint_eq(routed(CHECKED, "c-2"), 0); /* still PENDING */
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    assert_record(0, "health", "health checked/c-1", g + 1, "state", "PENDING", "READY");
}
END_TEST

/*
 * READY stays READY through fewer than `fall` (3) consecutive failures; the
 * third makes it DOWN (out of the snapshot, one publish, audited); `rise`
 * passing checks bring it back.
 */
START_TEST(test_down_after_fall_failures_and_back)
{
    uint64_t g;

    admit("c-1");
    admit("c-2");
    g = gen();
    check("c-1", false);
    check("c-1", false);
    check("c-1", true);
    check("c-1", false);
    check("c-1", false);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_READY);
    ck_assert_uint_gt(routed(CHECKED, "c-1"), 0);
    ck_assert_uint_eq(gen(), g);

    check("c-1", false);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_DOWN);
    ck_assert_uint_eq(routed(CHECKED, "c-1"), 0);
    ck_assert_uint_gt(routed(CHECKED, "c-2"), 0);
    ck_assert_uint_eq(gen(), g + 1);
    assert_record(0, "health", "health checked/c-1", g + 1, "state", "READY", "DOWN");

    check("c-1", false); /* DOWN stays DOWN: no more transitions */
    ck_assert_uint_eq(gen(), g + 1);
    check("c-1", true);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_DOWN);
    check("c-1", true);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_READY);
    ck_assert_uint_gt(routed(CHECKED, "c-1"), 0);
    ck_assert_uint_eq(gen(), g + 2);
    assert_record(0, "health", "health checked/c-1", g + 2, "state", "DOWN", "READY");
}
END_TEST

/* A backend in maintenance is not checked: results that come anyway change nothing. */
START_TEST(test_results_ignored_in_maintenance)
{
    uint64_t g;

    rb(CHECKED, "c-1")->admin = ADMIN_MAINT; /* as `set state checked/c-1 maint` leaves it */
    g = gen();
    check("c-1", true);
    check("c-1", true);
    check("c-1", true);
    ck_assert_int_eq(rb(CHECKED, "c-1")->health, HEALTH_PENDING);
    ck_assert_uint_eq(be(CHECKED, "c-1")->hc_pass, 0);
    ck_assert_uint_eq(gen(), g);
}
END_TEST

/*
 * Whoever waits for a backend to be READY (replace) is answered by the
 * transition: replace adds the new backend PENDING, and the rise-th
 * passing check moves the replace on (old drained and deleted at once,
 * nothing being in flight).
 */
START_TEST(test_ready_transition_wakes_who_waits_for_it)
{
    struct ctl_answer a;

    admit("c-1");
    ctl_start("replace checked c-1 c-9 127.0.0.1:9", &a);
    health_shutdown(); /* the check replace started for c-9: the test gives the results */
    ck_assert_msg(!a.done, "%s", a.text);
    ck_assert_int_eq(state(CHECKED, "c-9"), BE_PENDING);
    ck_assert_ptr_nonnull(ctl.waiters);
    check("c-9", true);
    ck_assert(!a.done);
    check("c-9", true);
    ck_assert_msg(a.done, "replace not moved on by c-9 READY");
    ck_assert_msg(a.ok && strstr(a.text, "replaced=c-1 with=c-9") != NULL, "%s", a.text);
    ck_assert_int_eq(state(CHECKED, "c-9"), BE_READY);
    ck_assert_int_lt(model_find_backend(pool(CHECKED), "c-1"), 0);
    ck_assert_ptr_null(ctl.waiters);
}
END_TEST

/* --- slow start --------------------------------------------------------------------------- */

/*
 * An admitted backend of a pool with slow_start_ms starts at a tenth of
 * its weight and ramps, never backwards, to its whole weight at
 * slow_start_ms; each tick that moves it publishes, and a finished ramp
 * publishes nothing more.
 */
START_TEST(test_slow_start_ramps_from_a_tenth_to_whole)
{
    double f, prev;
    uint64_t g;

    admit("c-1");
    time_passes(CHECKED, "c-1", SLOW_START_US);
    ck_assert(tick(CHECKED, "c-1") == 1.0);

    g = gen();
    admit("c-2");
    ck_assert_uint_eq(gen(), g + 1);
    ck_assert(rb(CHECKED, "c-2")->factor == 0.1);
    /* Same configured weight: the newcomer gets a tenth of what c-1 gets. */
    ck_assert_uint_eq(routed(CHECKED, "c-1"), 10 * routed(CHECKED, "c-2"));

    prev = tick(CHECKED, "c-2");
    ck_assert_uint_eq(gen(), g + 2);
    time_passes(CHECKED, "c-2", SLOW_START_US / 2);
    f = tick(CHECKED, "c-2");
    ck_assert(f >= 0.55 && f > prev && f < 1.0);
    ck_assert_uint_eq(gen(), g + 3);
    ck_assert_uint_gt(routed(CHECKED, "c-2"), 0);
    ck_assert_uint_lt(routed(CHECKED, "c-2"), routed(CHECKED, "c-1"));
    for (int k = 0; k < 3; k++) {
        prev = f;
        f = tick(CHECKED, "c-2");
        ck_assert(f >= prev);
    }

    time_passes(CHECKED, "c-2", SLOW_START_US / 2);
    ck_assert(tick(CHECKED, "c-2") == 1.0);
    ck_assert_uint_eq(routed(CHECKED, "c-1"), routed(CHECKED, "c-2"));
    g = gen();
    ctl_slow_start_tick();
    ck_assert_uint_eq(gen(), g);
    ck_assert(rb(CHECKED, "c-2")->factor == 1.0);
}
END_TEST

/* A pool without slow_start_ms admits at the whole weight, and ticks publish nothing. */
START_TEST(test_no_slow_start_without_slow_start_ms)
{
    uint64_t g;

    breaker_report(API, "a-1", false);
    cooldown_ends(API, "a-1");
    breaker_report(API, "a-1", true);
    breaker_report(API, "a-1", true);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_CLOSED);
    ck_assert(rb(API, "a-1")->factor == 1.0);
    ck_assert_uint_eq(routed(API, "a-1"), routed(API, "a-2"));
    g = gen();
    ctl_slow_start_tick();
    ck_assert_uint_eq(gen(), g);
}
END_TEST

/* --- circuit breaker ------------------------------------------------------------------- */

/*
 * A failure report (a worker's run of failures reached the threshold)
 * opens the circuit when the control loop reads it: out of the snapshot,
 * the workers' `breaker` says open, one publish, one audit record, the
 * cooldown timer armed. Reports read while it is open change nothing.
 */
START_TEST(test_failure_report_opens_the_circuit)
{
    struct backend *b = be(API, "a-1");
    uint64_t g = gen();
    size_t records;

    report_breaker(0, b, false);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_CLOSED); /* not before it is read */
    ctl_loop_once();
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
    ck_assert_int_eq(atomic_load(&b->breaker), BREAKER_OPEN);
    ck_assert_uint_eq(atomic_load(&b->refs), 0);
    ck_assert_uint_eq(routed(API, "a-1"), 0);
    ck_assert_uint_gt(routed(API, "a-2"), 0);
    ck_assert_uint_eq(gen(), g + 1);
    assert_record(0, "breaker", "breaker api/a-1", g + 1, "circuit", "closed", "open");
    ck_assert(evtimer_pending(rb(API, "a-1")->cooldown, NULL));

    records = ctl_audit_count();
    breaker_report(API, "a-1", true);
    breaker_report(API, "a-1", false);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
    ck_assert_uint_eq(gen(), g + 1);
    ck_assert_uint_eq(ctl_audit_count(), records);
}
END_TEST

/*
 * After the cooldown the circuit is half-open: back in the snapshot at a
 * tenth of its weight; half_open_successes (2) successful trials close it
 * (whole weight again), each transition a publish and an audit record.
 */
START_TEST(test_cooldown_half_open_then_trials_close_it)
{
    struct backend *b = be(API, "a-1");
    uint64_t g;

    breaker_report(API, "a-1", false);
    g = gen();
    cooldown_ends(API, "a-1");
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_HALF_OPEN);
    ck_assert_int_eq(atomic_load(&b->breaker), BREAKER_HALF_OPEN);
    ck_assert_uint_eq(gen(), g + 1);
    assert_record(0, "breaker", "breaker api/a-1", g + 1, "circuit", "open", "half_open");
    ck_assert_uint_gt(routed(API, "a-1"), 0);
    ck_assert_uint_eq(routed(API, "a-2"), 10 * routed(API, "a-1"));

    breaker_report(API, "a-1", true);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_HALF_OPEN);
    ck_assert_uint_eq(gen(), g + 1);
    breaker_report(API, "a-1", true);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_CLOSED);
    ck_assert_int_eq(atomic_load(&b->breaker), BREAKER_CLOSED);
    ck_assert_uint_eq(gen(), g + 2);
    assert_record(0, "breaker", "breaker api/a-1", g + 2, "circuit", "half_open", "closed");
    ck_assert_uint_eq(routed(API, "a-1"), routed(API, "a-2"));
}
END_TEST

/* A failed trial opens the circuit again, for another cooldown; the trial count starts over. */
START_TEST(test_failed_trial_opens_again)
{
    uint64_t g;

    breaker_report(API, "a-1", false);
    cooldown_ends(API, "a-1");
    breaker_report(API, "a-1", true);
    g = gen();
    breaker_report(API, "a-1", false);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
    ck_assert_uint_eq(routed(API, "a-1"), 0);
    ck_assert_uint_eq(gen(), g + 1);
    assert_record(0, "breaker", "breaker api/a-1", g + 1, "circuit", "half_open", "open");
    ck_assert(evtimer_pending(rb(API, "a-1")->cooldown, NULL));

    cooldown_ends(API, "a-1");
    breaker_report(API, "a-1", true);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_HALF_OPEN); /* one success of two */
    breaker_report(API, "a-1", true);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_CLOSED);
}
END_TEST

/*
 * Trials are judged in the order they ended: a failure, then two
 * successes, all read in one turn of the loop, open the circuit again and
 * nothing more (read newest first they would close it, then open it).
 */
START_TEST(test_trials_judged_in_the_order_they_ended)
{
    struct backend *b = be(API, "a-1");
    size_t records;
    uint64_t g;

    breaker_report(API, "a-1", false);
    cooldown_ends(API, "a-1");
    records = ctl_audit_count();
    g = gen();
    report_breaker(0, b, false);
    report_breaker(1, b, true);
    report_breaker(0, b, true);
    ck_assert_uint_eq(mailbox_count(&ctl.reports), 3);
    ctl_loop_once();
    ck_assert_uint_eq(mailbox_count(&ctl.reports), 0);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    ck_assert_uint_eq(gen(), g + 1);
    assert_record(0, "breaker", "breaker api/a-1", g + 1, "circuit", "half_open", "open");
    ck_assert_uint_eq(atomic_load(&b->refs), 0);
}
END_TEST

/*
 * max_ejection_percent 50 of four READY backends: two may be open at
 * once; a third failing one stays in (closed, routed, nothing published
 * or audited) until one of the others has closed again.
 */
START_TEST(test_max_ejection_percent_respected)
{
    size_t records;
    uint64_t g;

    breaker_report(API, "a-1", false);
    breaker_report(API, "a-2", false);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
    ck_assert_int_eq(rb(API, "a-2")->breaker, BREAKER_OPEN);
    records = ctl_audit_count();
    g = gen();
    breaker_report(API, "a-3", false);
    ck_assert_int_eq(rb(API, "a-3")->breaker, BREAKER_CLOSED);
    ck_assert_int_eq(atomic_load(&be(API, "a-3")->breaker), BREAKER_CLOSED);
    ck_assert_uint_gt(routed(API, "a-3"), 0);
    ck_assert_uint_eq(gen(), g);
    ck_assert_uint_eq(ctl_audit_count(), records);

    /* Half-open is not open: with a-1 on trial, a-3 may be ejected. */
    cooldown_ends(API, "a-1");
    breaker_report(API, "a-3", false);
    ck_assert_int_eq(rb(API, "a-3")->breaker, BREAKER_OPEN);
    ck_assert_uint_eq(routed(API, "a-3"), 0);
    ck_assert_uint_gt(routed(API, "a-4"), 0);
}
END_TEST

/*
 * The limit holds for failed trials too, so a failure hitting every
 * backend cannot empty the pool: a-1 and a-2 open, then half-open; a-3
 * and a-4 open meanwhile (half-open is not ejected); a-1's and a-2's trials
 * then fail, with two of the four already open: they stay half-open (the
 * trial count starting over), in the snapshot at a tenth of their weight.
 */
START_TEST(test_failed_trials_respect_max_ejection_percent)
{
    static const char *const names[] = {"a-1", "a-2", "a-3", "a-4"};
    unsigned open = 0;

    breaker_report(API, "a-1", false);
    breaker_report(API, "a-2", false);
    cooldown_ends(API, "a-1");
    cooldown_ends(API, "a-2");
    breaker_report(API, "a-3", false);
    breaker_report(API, "a-4", false);
    ck_assert_int_eq(rb(API, "a-3")->breaker, BREAKER_OPEN);
    ck_assert_int_eq(rb(API, "a-4")->breaker, BREAKER_OPEN);

    breaker_report(API, "a-1", true);
    breaker_report(API, "a-1", false);
    breaker_report(API, "a-2", false);
    for (unsigned k = 0; k < 4; k++)
        open += rb(API, names[k])->breaker == BREAKER_OPEN;
    ck_assert_msg(open <= 2, "%u of 4 READY backends open with max_ejection_percent 50", open);
    ck_assert_uint_gt(routing_current()->pools[API].n, 0);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_HALF_OPEN);
    ck_assert_int_eq(rb(API, "a-2")->breaker, BREAKER_HALF_OPEN);
    ck_assert_uint_eq(rb(API, "a-1")->trial_ok, 0);
    ck_assert_uint_gt(routed(API, "a-1"), 0);
    ck_assert_uint_gt(routed(API, "a-2"), 0);

    /* Once another closes again, a failed trial opens it as usual. */
    cooldown_ends(API, "a-3");
    breaker_report(API, "a-3", true);
    breaker_report(API, "a-3", true);
    ck_assert_int_eq(rb(API, "a-3")->breaker, BREAKER_CLOSED);
    breaker_report(API, "a-1", false);
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
}
END_TEST

/*
 * Frozen for an upgrade's handoff (control_freeze), this process decides
 * nothing: check results and breaker reports do not count, and a cooldown
 * that ends waits for the thaw; thawed (the upgrade abandoned), they count
 * again and the waiting cooldown ends. After a handover it never does.
 */
START_TEST(test_nothing_decided_while_frozen)
{
    char msg[256];
    uint64_t g;

    breaker_report(API, "a-1", false);
    ck_assert_int_eq(control_freeze(NULL, NULL, msg, sizeof(msg)), VEER_OK);
    g = gen();
    check("c-1", true);
    check("c-1", true);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_PENDING);
    breaker_report(API, "a-3", false); /* would open it: one of four is open */
    ck_assert_int_eq(rb(API, "a-3")->breaker, BREAKER_CLOSED);
    cooldown_ends(API, "a-1");
    ck_assert_int_eq(rb(API, "a-1")->breaker, BREAKER_OPEN);
    ck_assert(evtimer_pending(rb(API, "a-1")->cooldown, NULL)); /* looks again soon */
    ck_assert_uint_eq(gen(), g);

    control_thaw("test: upgrade abandoned");
    CTL_LOOP_UNTIL(rb(API, "a-1")->breaker == BREAKER_HALF_OPEN);
    check("c-1", true);
    check("c-1", true);
    ck_assert_int_eq(state(CHECKED, "c-1"), BE_READY);

    breaker_report(API, "a-2", false);
    ck_assert_int_eq(control_freeze(NULL, NULL, msg, sizeof(msg)), VEER_OK);
    control_handed_over();
    cooldown_ends(API, "a-2");
    ck_assert_int_eq(rb(API, "a-2")->breaker, BREAKER_OPEN);
    ck_assert(!evtimer_pending(rb(API, "a-2")->cooldown, NULL));
}
END_TEST

/*
 * The cooldown is a real timer of cooldown_ms: half-open no sooner than
 * that, give or take TICK_US: libevent times its timers by
 * CLOCK_MONOTONIC_COARSE, up to a kernel tick (4 ms at HZ=250) behind the
 * clock the test reads (the rollout steps' timers are held to the same).
 */
START_TEST(test_cooldown_lasts_cooldown_ms)
{
    uint64_t t0 = veer_now_us();

    breaker_report(QUICK, "q-1", false);
    ck_assert_int_eq(rb(QUICK, "q-1")->breaker, BREAKER_OPEN);
    CTL_LOOP_UNTIL(rb(QUICK, "q-1")->breaker != BREAKER_OPEN);
    ck_assert_uint_ge(veer_now_us() - t0, 200 * 1000 - TICK_US);
    ck_assert_int_eq(rb(QUICK, "q-1")->breaker, BREAKER_HALF_OPEN);
}
END_TEST

/* A circuit closing in a pool with slow_start_ms ramps up again from a tenth. */
START_TEST(test_closed_circuit_starts_slow)
{
    admit("c-1");
    admit("c-2");
    time_passes(CHECKED, "c-1", SLOW_START_US);
    time_passes(CHECKED, "c-2", SLOW_START_US);
    ck_assert(tick(CHECKED, "c-1") == 1.0);
    ck_assert(rb(CHECKED, "c-2")->factor == 1.0);

    breaker_report(CHECKED, "c-1", false);
    ck_assert_int_eq(rb(CHECKED, "c-1")->breaker, BREAKER_OPEN);
    cooldown_ends(CHECKED, "c-1");
    ck_assert(rb(CHECKED, "c-1")->factor == 0.1);
    breaker_report(CHECKED, "c-1", true); /* half_open_successes 1 */
    ck_assert_int_eq(rb(CHECKED, "c-1")->breaker, BREAKER_CLOSED);
    ck_assert(rb(CHECKED, "c-1")->factor == 0.1);
    ck_assert_uint_eq(routed(CHECKED, "c-2"), 10 * routed(CHECKED, "c-1"));
    ck_assert(tick(CHECKED, "c-1") < 1.0);
    time_passes(CHECKED, "c-1", SLOW_START_US);
    ck_assert(tick(CHECKED, "c-1") == 1.0);
}
END_TEST

static Suite *admission_suite(void)
{
    Suite *s = suite_create("admission");
    TCase *tc = tcase_create("admission");

    tcase_add_checked_fixture(tc, up, down);
    tcase_add_test(tc, test_pending_until_rise_passing_checks);
    tcase_add_test(tc, test_down_after_fall_failures_and_back);
    tcase_add_test(tc, test_results_ignored_in_maintenance);
    tcase_add_test(tc, test_ready_transition_wakes_who_waits_for_it);
    tcase_add_test(tc, test_slow_start_ramps_from_a_tenth_to_whole);
    tcase_add_test(tc, test_no_slow_start_without_slow_start_ms);
    tcase_add_test(tc, test_failure_report_opens_the_circuit);
    tcase_add_test(tc, test_cooldown_half_open_then_trials_close_it);
    tcase_add_test(tc, test_failed_trial_opens_again);
    tcase_add_test(tc, test_trials_judged_in_the_order_they_ended);
    tcase_add_test(tc, test_max_ejection_percent_respected);
    tcase_add_test(tc, test_failed_trials_respect_max_ejection_percent);
    tcase_add_test(tc, test_nothing_decided_while_frozen);
    tcase_add_test(tc, test_cooldown_lasts_cooldown_ms);
    tcase_add_test(tc, test_closed_circuit_starts_slow);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(admission_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
