/*
 * check_drain.c - draining with completion (drain.c), on the control
 * thread with no worker thread (ctlfix.h) but one worker's figures:
 * veer_nworkers is 1, so every backend has a slot ws[0] the test sets as a
 * worker would (requests in flight, connections), and the routing has one
 * reader whose announcement the test makes (the worker moving to the
 * newest snapshot). The worker's reports go through data/report.h
 * (report_backend_drop) into the control thread's mailbox, and the control
 * loop is run to read them.
 *
 * `drain` makes a backend DRAINING (out of the snapshot, `draining` set
 * for the workers, the requests in flight counted) and DRAINED only when
 * its last request and connection are gone and no worker can still pick
 * it from an older snapshot; `drain --wait` is answered then, or with
 * `ERR timeout active=<n>` at its timeout, leaving the backend DRAINING;
 * waiters are answered when the backend is deleted. A DRAINED backend set
 * ready rejoins the rotation. Backends a reload dropped go away once
 * DRAINED, together, in one publish, even when a worker moves on in the
 * middle of the sweep that finds them idle. Frozen for an upgrade, nothing is
 * DRAINED until the thaw.
 *
 * Each test runs in its own process (Check's fork mode).
 */
#include "control-i.h"
#include "ctlfix.h"
#include "report.h"
#include "worker.h"

/* api: blue-1, blue-2, blue-3 in one group; no readiness checks, so all READY at once. */
#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; },"                                           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; },"                                           \
    "{ name = \"blue-3\"; address = \"127.0.0.1:3\"; } ); } );\n"

#define API 0

static void up(void)
{
    /* One slot of figures per backend, written by the test, and one snapshot reader. */
    const struct ctlfix_opts one_worker = {.slots = 1, .readers = 1};

    ctl_up_with(CONF, &one_worker);
}

static void down(void)
{
    ctl_down();
}

/* --- the model, the snapshot, the worker ------------------------------------------------ */

static struct rt_pool *pool(void)
{
    return &CF.m->pools[API];
}

static uint32_t idx(const char *name)
{
    int i = model_find_backend(pool(), name);

    ck_assert_msg(i >= 0, "no backend %s", name);
    return (uint32_t)i;
}

static struct rt_backend *rb(const char *name)
{
    return &pool()->b[idx(name)];
}

static struct backend *be(const char *name)
{
    return rb(name)->be;
}

static enum backend_state state(const char *name)
{
    return model_state(pool(), idx(name));
}

/* Whether the published snapshot routes new requests of api to this backend. */
static bool routed(const struct backend *b)
{
    const struct snap_pool *sp = &routing_current()->pools[API];

    for (uint32_t i = 0; i < sp->n; i++)
        if (sp->b[i].be == b)
            return true;
    return false;
}

/* The worker switches to the newest snapshot (what its refresh does). */
static void worker_moves_on(void)
{
    routing_announce(0, routing_current()->generation);
}

/* The worker ends a request on b (its last one there may be reported). */
static void request_ends(struct backend *b)
{
    ck_assert_uint_gt(b->ws[0].active, 0);
    report_backend_drop(0, b, &b->ws[0].active);
}

static void connection_closes(struct backend *b)
{
    ck_assert_uint_gt(b->ws[0].conns, 0);
    report_backend_drop(0, b, &b->ws[0].conns);
}

static size_t reports_queued(void)
{
    return mailbox_count(&ctl.reports);
}

/*
 * The control thread's read of the oldest generation a worker still reads
 * (linked with --wrap): when armed, the worker catches up with the newest
 * snapshot right after the next read, as a real worker may at any moment.
 */
uint64_t __real_routing_min_seen(void);
uint64_t __wrap_routing_min_seen(void);
static bool catch_up_after_next_read;
static unsigned min_seen_reads;

uint64_t __wrap_routing_min_seen(void)
{
    uint64_t seen = __real_routing_min_seen();

    min_seen_reads++;
    if (catch_up_after_next_read) {
        catch_up_after_next_read = false;
        worker_moves_on();
    }
    return seen;
}

/* --- tests ------------------------------------------------------------------------------ */

/*
 * Two requests in flight: drain takes blue-1 out of the snapshot at once
 * (DRAINING, `draining` set for the workers, `active=2` in the answer), and
 * it is DRAINED when the report of the second one ending is read, not
 * before: not after the first, not while the report waits in the queue.
 */
START_TEST(test_drained_when_the_last_request_ends)
{
    struct backend *b = be("blue-1");
    uint64_t gen;

    b->ws[0].active = 2;
    gen = ctl_change("drain api/blue-1", " active=2");
    ctl_assert_last_record("drain api/blue-1", "OK", gen);
    ck_assert_int_eq(state("blue-1"), BE_DRAINING);
    ck_assert(atomic_load(&b->draining));
    ck_assert(!routed(b));
    ck_assert(routed(be("blue-2")));
    ck_assert_uint_eq(rb("blue-1")->drain_inflight, 2);
    worker_moves_on();

    request_ends(b);
    ck_assert_uint_eq(reports_queued(), 0); /* not its last request on the worker */
    ctl_loop_once();
    ck_assert_int_eq(state("blue-1"), BE_DRAINING);

    request_ends(b);
    ck_assert_uint_eq(reports_queued(), 1);
    ck_assert_int_eq(state("blue-1"), BE_DRAINING); /* not before the report is read */
    ctl_loop_once();
    ck_assert_uint_eq(reports_queued(), 0);
    ck_assert_int_eq(state("blue-1"), BE_DRAINED);
    ck_assert_uint_eq(atomic_load(&b->refs), 0); /* the report's reference was dropped */
    ck_assert(!routed(b));
    ck_assert_uint_eq(CF.m->generation, gen); /* DRAINED changes no routing */
}
END_TEST

/* DRAINED means no request in flight and no upstream connection left either. */
START_TEST(test_drained_only_when_connections_are_gone_too)
{
    struct backend *b = be("blue-2");

    b->ws[0].active = 1;
    b->ws[0].conns = 1;
    ctl_change("drain api/blue-2", " active=1");
    worker_moves_on();
    request_ends(b);
    ck_assert_uint_eq(reports_queued(), 1);
    ctl_loop_once();
    ck_assert_int_eq(state("blue-2"), BE_DRAINING);
    connection_closes(b);
    ck_assert_uint_eq(reports_queued(), 1);
    ctl_loop_once();
    ck_assert_int_eq(state("blue-2"), BE_DRAINED);
}
END_TEST

/*
 * A worker still on the snapshot from before the drain may pick the
 * backend again: the last request ending is not DRAINED yet. Once the
 * worker moved on, the control thread's tick finds it DRAINED.
 */
START_TEST(test_not_drained_while_a_worker_may_still_pick_it)
{
    struct backend *b = be("blue-1");

    b->ws[0].active = 1;
    ctl_change("drain api/blue-1", NULL);
    request_ends(b); /* the worker is still on the generation before the drain */
    ck_assert_uint_eq(reports_queued(), 1);
    ctl_loop_once();
    ck_assert_int_eq(state("blue-1"), BE_DRAINING);
    worker_moves_on();
    CTL_LOOP_UNTIL(state("blue-1") == BE_DRAINED);
}
END_TEST

/*
 * Frozen for an upgrade's handoff, the last request ending does not make
 * the backend DRAINED (nothing is decided); after the thaw the control
 * thread's tick finds it idle and it is.
 */
START_TEST(test_not_drained_while_frozen_then_after_thaw)
{
    struct backend *b = be("blue-2");
    char msg[256];

    b->ws[0].active = 1;
    ctl_change("drain api/blue-2", " active=1");
    worker_moves_on();
    ck_assert_int_eq(control_freeze(NULL, NULL, msg, sizeof(msg)), VEER_OK);
    request_ends(b);
    ctl_loop_once();
    ck_assert_uint_eq(reports_queued(), 0);
    ck_assert_int_eq(state("blue-2"), BE_DRAINING);
    ctl_sweep_drained_all();
    ck_assert_int_eq(state("blue-2"), BE_DRAINING);
    control_thaw("test: upgrade abandoned");
    CTL_LOOP_UNTIL(state("blue-2") == BE_DRAINED);
}
END_TEST

/*
 * drain --wait holds its answer until the backend is DRAINED: then
 * `OK gen=N applied_us=T active=1 drained_ms=D`. The change itself was
 * published and audited when it was made.
 */
START_TEST(test_drain_wait_answers_when_drained)
{
    struct backend *b = be("blue-1");
    uint64_t gen = CF.m->generation + 1;
    unsigned long long n, t, active;
    double ms;
    struct ctl_answer a;
    int end = 0;

    b->ws[0].active = 1;
    ctl_start("drain api/blue-1 --wait", &a);
    ck_assert_msg(!a.done, "answered before DRAINED: %s", a.text);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_uint_eq(routing_current()->generation, gen);
    ck_assert(!routed(b));
    ctl_assert_last_record("drain api/blue-1 --wait", "OK", gen);
    worker_moves_on();
    ctl_loop_once();
    ck_assert(!a.done);

    request_ends(b);
    ctl_loop_once();
    ck_assert_msg(a.done, "no answer once DRAINED");
    ck_assert_msg(a.ok, "%s", a.text);
    ck_assert_msg(sscanf(a.text, "OK gen=%llu applied_us=%llu active=%llu drained_ms=%lf\n\n%n", &n,
                         &t, &active, &ms, &end) == 4 &&
                      end == (int)strlen(a.text),
                  "%s", a.text);
    ck_assert_uint_eq(n, gen);
    ck_assert_uint_eq(active, 1);
    ck_assert(ms >= 0);
    ck_assert_int_eq(state("blue-1"), BE_DRAINED);
}
END_TEST

/*
 * At its --timeout, drain --wait answers `ERR timeout active=<n>` (n still
 * in flight), not earlier, and the backend stays DRAINING: the change is
 * kept, and DRAINED still comes when the request ends.
 */
START_TEST(test_drain_wait_timeout_leaves_it_draining)
{
    struct backend *b = be("blue-3");
    uint64_t gen = CF.m->generation + 1, t0;
    struct ctl_answer a;

    b->ws[0].active = 1;
    ctl_start("drain api/blue-3 --wait --timeout 200ms", &a);
    ck_assert(!a.done);
    ck_assert_ptr_nonnull(ctl.waiters);
    t0 = ctl.waiters->start_us; /* when the wait began */
    worker_moves_on();
    CTL_LOOP_UNTIL(a.done);
    ck_assert_uint_ge(veer_now_us() - t0, 200 * 1000);
    ck_assert(!a.ok);
    ck_assert_str_eq(a.text, "ERR timeout active=1\n\n");
    ck_assert_int_eq(rb("blue-3")->admin, ADMIN_DRAIN);
    ck_assert_int_eq(state("blue-3"), BE_DRAINING);
    ck_assert(!routed(b));
    ck_assert_uint_eq(CF.m->generation, gen);
    ctl_assert_last_record("drain api/blue-3 --wait --timeout 200ms", "OK", gen);

    request_ends(b);
    ctl_loop_once();
    ck_assert_int_eq(state("blue-3"), BE_DRAINED);
}
END_TEST

/*
 * Never early: each of five drain --wait --timeout 100ms answers its ERR no
 * sooner than 100 ms after the wait began (libevent times its timers by a
 * clock that may be a kernel tick behind veer's).
 */
START_TEST(test_drain_wait_timeout_never_early)
{
    struct backend *b = be("blue-1");

    b->ws[0].active = 1;
    for (int k = 0; k < 5; k++) {
        struct ctl_answer a;
        uint64_t t0;

        ctl_start("drain api/blue-1 --wait --timeout 100ms", &a);
        ck_assert(!a.done);
        ck_assert_ptr_nonnull(ctl.waiters);
        t0 = ctl.waiters->start_us;
        CTL_LOOP_UNTIL(a.done);
        ck_assert_msg(veer_now_us() - t0 >= 100 * 1000, "wait %d answered after %llu us", k,
                      (unsigned long long)(veer_now_us() - t0));
        ck_assert_str_eq(a.text, "ERR timeout active=1\n\n");
        ctl_change("set state api/blue-1 ready", NULL);
    }
}
END_TEST

/*
 * A backend deleted while someone waits for it to drain: the waiter is
 * answered (ERR, with what is still in flight) at the deletion, not left
 * for its timeout.
 */
START_TEST(test_waiter_answered_when_the_backend_is_deleted)
{
    struct backend *b = be("blue-1");
    struct ctl_answer a;

    b->ws[0].active = 1;
    ctl_start("drain api/blue-1 --wait", &a);
    ck_assert(!a.done);
    ctl_change("set state api/blue-1 maint", NULL);
    ck_assert(!a.done);
    ctl_change("del backend api blue-1", NULL);
    ck_assert_msg(a.done, "the drain --wait of a deleted backend was not answered");
    ck_assert(!a.ok);
    ck_assert_msg(strncmp(a.text, "ERR ", 4) == 0 && strstr(a.text, "active=1") != NULL, "%s",
                  a.text);
    ck_assert_ptr_null(ctl.waiters);
}
END_TEST

/*
 * Two waiting for the same backend to drain: an operator's drain --wait
 * and a replace (whose answer deletes the backend, at once). When it is
 * DRAINED both are answered as such: drain --wait with OK, the replace
 * with its OK after deleting it; neither is answered twice, and the
 * waiter the delete would have told "deleted" is not touched after.
 */
START_TEST(test_drained_answers_every_waiter_when_one_deletes_it)
{
    struct backend *b = be("blue-1");
    struct ctl_answer drain, replace;

    b->ws[0].active = 1;
    ctl_start("drain api/blue-1 --wait", &drain);
    ctl_start("replace api blue-1 blue-9 127.0.0.1:9", &replace);
    ck_assert(!drain.done);
    ck_assert(!replace.done);
    ck_assert_int_ge(model_find_backend(pool(), "blue-9"), 0);
    worker_moves_on();

    request_ends(b);
    ctl_loop_once();
    ck_assert_msg(drain.done, "drain --wait not answered");
    ck_assert_msg(drain.ok && strncmp(drain.text, "OK gen=", 7) == 0 &&
                      strstr(drain.text, " drained_ms=") != NULL,
                  "drain --wait of a backend that drained: %s", drain.text);
    ck_assert_msg(replace.done, "replace not answered");
    ck_assert_msg(replace.ok && strstr(replace.text, "replaced=blue-1 with=blue-9") != NULL, "%s",
                  replace.text);
    ck_assert_int_lt(model_find_backend(pool(), "blue-1"), 0);
    ck_assert_ptr_null(ctl.waiters);
}
END_TEST

/*
 * ctl_sync_draining follows the admin states for the workers: entering
 * DRAIN sets `draining` and tells every worker to close its idle
 * connections to the backend (one message naming it, with a reference);
 * --force also tells them to cut the requests left on it; leaving DRAIN
 * clears `draining`.
 */
START_TEST(test_workers_told_to_close_idle_connections)
{
    struct worker w, *workers[1] = {&w};
    struct backend *b = be("blue-2");
    enum wmsg_type want[] = {WMSG_CLOSE_IDLE, WMSG_ABORT_BACKEND};
    struct mailbox_node *n;
    unsigned k = 0;

    memset(&w, 0, sizeof(w));
    ck_assert_int_eq(mailbox_init(&w.inbox), VEER_OK);
    ctl.workers = workers; /* a worker's queue only: never run */
    ctl.nworkers = 1;
    b->ws[0].active = 1;

    ck_assert(!atomic_load(&b->draining));
    ctl_change("drain api/blue-2 --force", " active=1");
    ck_assert(atomic_load(&b->draining));
    ck_assert_uint_eq(rb("blue-2")->drain_inflight, 1);
    ck_assert_uint_eq(atomic_load(&b->refs), 2);
    for (n = mailbox_take(&w.inbox); n; k++) {
        struct wmsg *m = container_of(n, struct wmsg, node);

        n = n->next;
        ck_assert_uint_lt(k, 2);
        ck_assert_int_eq(m->type, want[k]);
        ck_assert_uint_eq(m->n, 1);
        ck_assert_ptr_eq(m->be[0], b);
        wmsg_free(m);
    }
    ck_assert_uint_eq(k, 2);
    ck_assert_uint_eq(atomic_load(&b->refs), 0);

    /* Draining again changes nothing for the workers: no second message. */
    ctl_change("set state api/blue-2 drain", NULL);
    ck_assert_uint_eq(mailbox_count(&w.inbox), 0);

    ctl.workers = NULL; /* ready again gains traffic: with a worker, that would wait for warm-up */
    ctl.nworkers = 0;
    ctl_change("set state api/blue-2 ready", NULL);
    ck_assert(!atomic_load(&b->draining));
    mailbox_free(&w.inbox, NULL);
}
END_TEST

/*
 * A DRAINED backend set ready again is READY and back in the snapshot;
 * drained again, it is counted afresh (DRAINING until its new request ends).
 */
START_TEST(test_drained_backend_set_ready_rejoins_rotation)
{
    struct backend *b = be("blue-1");

    ctl_change("drain api/blue-1", " active=0");
    worker_moves_on();
    CTL_LOOP_UNTIL(state("blue-1") == BE_DRAINED);
    ck_assert(!routed(b));

    ctl_change("set state api/blue-1 ready", NULL);
    ck_assert_int_eq(state("blue-1"), BE_READY);
    ck_assert(!atomic_load(&b->draining));
    ck_assert(routed(b));

    b->ws[0].active = 1; /* picked again */
    ctl_change("drain api/blue-1", " active=1");
    worker_moves_on();
    ck_assert_int_eq(state("blue-1"), BE_DRAINING);
    request_ends(b);
    ctl_loop_once();
    ck_assert_int_eq(state("blue-1"), BE_DRAINED);
}
END_TEST

/*
 * The report of a drain's last request, read after the operator set the
 * backend ready again, changes nothing: READY, not DRAINED.
 */
START_TEST(test_late_idle_report_after_ready_again)
{
    struct backend *b = be("blue-1");

    b->ws[0].active = 1;
    ctl_change("drain api/blue-1", NULL);
    worker_moves_on();
    request_ends(b);
    ck_assert_uint_eq(reports_queued(), 1);
    ctl_change("set state api/blue-1 ready", NULL);
    ctl_loop_once();
    ck_assert_uint_eq(reports_queued(), 0);
    ck_assert_int_eq(state("blue-1"), BE_READY);
    ck_assert(!rb("blue-1")->drained);
    ck_assert(routed(b));
}
END_TEST

/*
 * Backends a reload dropped (remove_when_drained, set here as reload.c
 * sets it) stay until DRAINED, then go away together: out of the model in
 * one publish, however many drained in the same turn.
 */
START_TEST(test_dropped_backends_removed_together_once_drained)
{
    struct backend *b2 = be("blue-2"), *b3 = be("blue-3");
    uint64_t gen;

    b2->ws[0].active = 1;
    b3->ws[0].active = 1;
    ctl_change("drain api/blue-2", NULL);
    ctl_change("drain api/blue-3", NULL);
    rb("blue-2")->remove_when_drained = true;
    rb("blue-3")->remove_when_drained = true;
    worker_moves_on();
    gen = CF.m->generation;

    request_ends(b2);
    request_ends(b3);
    ck_assert_uint_eq(reports_queued(), 2);
    CTL_LOOP_UNTIL(pool()->nb == 1);
    ck_assert_int_lt(model_find_backend(pool(), "blue-2"), 0);
    ck_assert_int_lt(model_find_backend(pool(), "blue-3"), 0);
    ck_assert_int_ge(model_find_backend(pool(), "blue-1"), 0);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    ck_assert(routed(be("blue-1")));
}
END_TEST

/*
 * A reload drops many backends at once; a worker moving to the new
 * snapshot in the middle of the control thread's sweep made the sweep
 * judge the first ones against the old generation (not DRAINED yet) and
 * the rest against the new (DRAINED, removed): two publishes. The sweep
 * reads the workers' generation once, so they go together.
 */
START_TEST(test_dropped_backends_stay_together_when_a_worker_catches_up_mid_sweep)
{
    uint64_t gen;
    unsigned reads;

    ctl_change("drain api/blue-2", NULL);
    ctl_change("drain api/blue-3", NULL);
    rb("blue-2")->remove_when_drained = true;
    rb("blue-3")->remove_when_drained = true;
    ck_assert_int_eq(state("blue-2"), BE_DRAINING);
    ck_assert_int_eq(state("blue-3"), BE_DRAINING);
    gen = CF.m->generation;

    reads = min_seen_reads;
    catch_up_after_next_read = true;
    ctl_sweep_drained_all();
    ck_assert_uint_eq(min_seen_reads, reads + 1); /* one read for the whole sweep */
    ck_assert(!catch_up_after_next_read);
    ck_assert_int_eq(state("blue-2"), BE_DRAINING);
    ck_assert_int_eq(state("blue-3"), BE_DRAINING);

    /* The worker is on the newest snapshot now: the next sweep (the tick) takes both. */
    CTL_LOOP_UNTIL(pool()->nb == 1);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert(routed(be("blue-1")));
}
END_TEST

static Suite *drain_suite(void)
{
    Suite *s = suite_create("drain");
    TCase *tc = tcase_create("drain");

    tcase_add_checked_fixture(tc, up, down);
    tcase_add_test(tc, test_drained_when_the_last_request_ends);
    tcase_add_test(tc, test_drained_only_when_connections_are_gone_too);
    tcase_add_test(tc, test_not_drained_while_a_worker_may_still_pick_it);
    tcase_add_test(tc, test_not_drained_while_frozen_then_after_thaw);
    tcase_add_test(tc, test_drain_wait_answers_when_drained);
    tcase_add_test(tc, test_drain_wait_timeout_leaves_it_draining);
    tcase_add_test(tc, test_drain_wait_timeout_never_early);
    tcase_add_test(tc, test_waiter_answered_when_the_backend_is_deleted);
    tcase_add_test(tc, test_drained_answers_every_waiter_when_one_deletes_it);
    tcase_add_test(tc, test_workers_told_to_close_idle_connections);
    tcase_add_test(tc, test_drained_backend_set_ready_rejoins_rotation);
    tcase_add_test(tc, test_late_idle_report_after_ready_again);
    tcase_add_test(tc, test_dropped_backends_removed_together_once_drained);
    tcase_add_test(tc, test_dropped_backends_stay_together_when_a_worker_catches_up_mid_sweep);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(drain_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
