/*
 * check_report.c - a worker's reports (report.c) as the control thread
 * receives them through the sink control_init binds: reports posted in one
 * batch are acted on in the order they were posted (the circuit breaker's
 * half-open decisions depend on it), each report's backend reference is
 * dropped once read, and a report with no sink bound is dropped at once.
 *
 * The control plane is set up as control_init sets it up (a model from a
 * config text, routing, an audit log, unstarted workers reduced to their
 * mailbox); its event loop is run by hand, once, after the posts.
 */
#include "audit.h"
#include "control-i.h"
#include "model.h"
#include "report.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NW 2

/*
 * One trial success closes a half-open circuit. In api, max_ejection_percent
 * 0 keeps the circuit from opening at all; in trial, one of its two
 * backends may be open. The breaker's state after a batch, and how many
 * transitions it took (one publish each), tell the order its reports were
 * read in.
 */
#define CONF                                                                                       \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\";"                                                                  \
    "breaker = { failures = 1; cooldown_ms = 60000; half_open_successes = 1;"                      \
    " max_ejection_percent = 0; };"                                                                \
    "backends = ( { name = \"a\"; address = \"127.0.0.1:1\"; },"                                   \
    "{ name = \"b\"; address = \"127.0.0.1:2\"; } ); },"                                           \
    "{ name = \"trial\";"                                                                          \
    "breaker = { failures = 1; cooldown_ms = 60000; half_open_successes = 1;"                      \
    " max_ejection_percent = 50; };"                                                               \
    "backends = ( { name = \"c\"; address = \"127.0.0.1:3\"; },"                                   \
    "{ name = \"d\"; address = \"127.0.0.1:4\"; } ); } );\n"

#define API   0
#define TRIAL 1

static struct {
    struct veer_conf *c;
    struct model *m;
    struct worker *w[NW];
    struct event_base *base;
    char audit[64];
} F;

static struct worker *fake_worker(unsigned idx)
{
    struct worker *w = veer_calloc(1, sizeof(*w));

    w->idx = idx;
    ck_assert_int_eq(mailbox_init(&w->inbox), VEER_OK);
    return w;
}

static void free_wmsg(struct mailbox_node *n)
{
    wmsg_free(container_of(n, struct wmsg, node));
}

static void free_fake_worker(struct worker *w)
{
    mailbox_free(&w->inbox, free_wmsg);
    free(w);
}

static void setup(void)
{
    char path[] = "/tmp/check_report_XXXXXX", err[512];
    int fd = mkstemp(path);

    memset(&F, 0, sizeof(F));
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, CONF, strlen(CONF)), (ssize_t)strlen(CONF));
    close(fd);
    F.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(F.c != NULL, "config: %s", err);
    veer_nworkers = NW;
    F.m = model_from_conf(F.c);
    routing_init(NW, routing_build(F.m));
    snprintf(F.audit, sizeof(F.audit), "/tmp/check_report_audit_XXXXXX");
    fd = mkstemp(F.audit);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(audit_open(F.audit, err, sizeof(err)), 0);
    for (unsigned i = 0; i < NW; i++)
        F.w[i] = fake_worker(i);
    F.base = event_base_new();
    ck_assert_ptr_nonnull(F.base);
    ck_assert_int_eq(control_init(F.base, F.c, F.m, F.w, NW), VEER_OK);
    event_del(ctl.tick);
}

static void teardown(void)
{
    control_shutdown();
    event_base_free(F.base);
    routing_shutdown();
    model_free(F.m);
    for (unsigned i = 0; i < NW; i++)
        free_fake_worker(F.w[i]);
    conf_free(F.c);
    audit_close();
    unlink(F.audit);
}

/* Put backend i of pool pi in the breaker state `to`, as the control thread keeps it. */
static struct backend *breaker_state(int pi, uint32_t i, enum breaker_state to)
{
    struct rt_backend *b = &ctl.model->pools[pi].b[i];

    b->breaker = to;
    atomic_store(&b->be->breaker, (int)to);
    return b->be;
}

/* One turn of the control thread's loop: it reads what the workers posted. */
static void control_turn(void)
{
    ck_assert_int_ge(event_base_loop(F.base, EVLOOP_NONBLOCK), 0);
}

/*
 * A half-open backend: a worker reports a failed trial, then another
 * worker a successful one, before the control thread runs. Read in that
 * order the failure reopens the circuit and the success (of a request sent
 * before that) changes nothing: one transition. Read newest first, the
 * success would close the circuit and the failure open it again: two.
 */
START_TEST(test_breaker_reports_of_one_batch_are_read_in_posted_order)
{
    struct backend *be = breaker_state(TRIAL, 0, BREAKER_HALF_OPEN);
    uint64_t gen = ctl.model->generation;

    report_breaker(0, be, false);
    report_breaker(1, be, true);
    control_turn();
    ck_assert_msg(ctl.model->pools[TRIAL].b[0].breaker == BREAKER_OPEN,
                  "breaker %s after a failed then a successful trial (want OPEN)",
                  breaker_state_name(ctl.model->pools[TRIAL].b[0].breaker));
    ck_assert_msg(ctl.model->generation == gen + 1,
                  "%llu transitions for a failed then a successful trial (want 1: OPEN)",
                  (unsigned long long)(ctl.model->generation - gen));
    ck_assert_uint_eq(atomic_load(&be->refs), 0);
}
END_TEST

/* The other order: a successful trial closes the circuit, the failure after it cannot eject. */
START_TEST(test_breaker_success_then_failure_leaves_the_circuit_closed)
{
    struct backend *be = breaker_state(API, 1, BREAKER_HALF_OPEN);

    report_breaker(1, be, true);
    report_breaker(0, be, false);
    control_turn();
    ck_assert_msg(ctl.model->pools[0].b[1].breaker == BREAKER_CLOSED,
                  "breaker %s after a successful then a failed trial (want CLOSED)",
                  breaker_state_name(ctl.model->pools[0].b[1].breaker));
    ck_assert_uint_eq(atomic_load(&be->refs), 0);
}
END_TEST

/* With no sink bound (a worker run without a control plane) a report is dropped with its hold. */
START_TEST(test_report_without_a_sink_is_dropped)
{
    struct backend *be = ctl.model->pools[0].b[0].be;

    report_bind(NULL, NULL);
    report_breaker(0, be, false);
    ck_assert_uint_eq(atomic_load(&be->refs), 0);
    control_turn();
    ck_assert_int_eq(ctl.model->pools[0].b[0].breaker, BREAKER_CLOSED);
}
END_TEST

static Suite *report_suite(void)
{
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("control sink");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_breaker_reports_of_one_batch_are_read_in_posted_order);
    tcase_add_test(tc, test_breaker_success_then_failure_leaves_the_circuit_closed);
    tcase_add_test(tc, test_report_without_a_sink_is_dropped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(report_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
