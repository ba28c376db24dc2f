/*
 * check_membership.c - reclaiming deleted backends (membership.c,
 * ctl_reclaim_backends): a backend is freed only once every worker has
 * announced a snapshot newer than the last one routing to it, and never
 * while a queued message, in either direction, still names it.
 *
 * The control state is set up by hand (model, routing readers, the
 * control thread's queue, workers created but not started); whether a
 * backend was freed is read from the retire list, never from the backend.
 */
#include "control-i.h"
#include "model.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NW 2

static struct {
    struct veer_conf *c;
    struct model *m;
    struct worker *w[NW];
} F;

/* The control thread's mailbox without its event loop: reports wait in it to be read. */
static void queue_report(struct report *m, void *arg)
{
    mailbox_post(&ctl.reports, &m->node);
}

/* The one report queued (the test fails if there is none or more). */
static struct report *take_report(void)
{
    struct mailbox_node *n = mailbox_take(&ctl.reports);

    ck_assert_ptr_nonnull(n);
    ck_assert_ptr_null(n->next);
    return container_of(n, struct report, node);
}

static void free_report(struct mailbox_node *n)
{
    free(container_of(n, struct report, node));
}

static void free_wmsg(struct mailbox_node *n)
{
    wmsg_free(container_of(n, struct wmsg, node));
}

static void setup(void)
{
    static const char text[] = "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
                               "pools = ( { name = \"api\"; backends = ("
                               "{ name = \"a\"; address = \"127.0.0.1:1\"; },"
                               "{ name = \"b\"; address = \"127.0.0.1:2\"; } ); } );\n";
    char path[] = "/tmp/check_membership_XXXXXX", err[512];
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    F.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(F.c != NULL, "config: %s", err);
    veer_nworkers = NW;
    F.m = model_from_conf(F.c);
    routing_init(NW, routing_build(F.m));
    for (unsigned i = 0; i < NW; i++) {
        /* Only the queue of a worker is used: created by hand, never run. */
        F.w[i] = veer_calloc(1, sizeof(*F.w[i]));
        F.w[i]->idx = i;
        ck_assert_int_eq(mailbox_init(&F.w[i]->inbox), VEER_OK);
        routing_announce(i, F.m->generation);
    }
    memset(&ctl, 0, sizeof(ctl));
    ctl.conf = F.c;
    ctl.model = F.m;
    ctl.workers = F.w;
    ctl.nworkers = NW;
    ck_assert_int_eq(mailbox_init(&ctl.reports), VEER_OK);
    report_bind(queue_report, NULL);
}

static void teardown(void)
{
    while (ctl.retired) {
        struct backend *be = ctl.retired;

        ctl.retired = be->retired_next;
        backend_destroy(be);
    }
    mailbox_free(&ctl.reports, free_report);
    for (unsigned i = 0; i < NW; i++) {
        mailbox_free(&F.w[i]->inbox, free_wmsg);
        free(F.w[i]);
    }
    routing_shutdown();
    model_free(F.m);
    conf_free(F.c);
    memset(&ctl, 0, sizeof(ctl));
    report_bind(NULL, NULL);
}

static bool retired(const struct backend *be)
{
    for (const struct backend *r = ctl.retired; r; r = r->retired_next)
        if (r == be)
            return true;
    return false;
}

/* Delete backend b as `del backend` does (retire, then publish); every worker moves on. */
static struct backend *delete_b(bool workers_move_on)
{
    struct backend *be = F.m->pools[0].b[1].be;

    ck_assert_str_eq(be->name, "b");
    model_del_backend(F.m, 0, 1);
    atomic_store(&be->draining, true);
    ctl_retire_backend(be);
    F.m->generation++;
    routing_publish(routing_build(F.m));
    for (unsigned i = 0; workers_move_on && i < NW; i++)
        routing_announce(i, F.m->generation);
    return be;
}

START_TEST(test_reclaim_waits_for_every_worker_to_pass_the_retiring_snapshot)
{
    uint64_t last = F.m->generation; /* the last snapshot routing to b */
    struct backend *be = delete_b(false);

    /* Worker 0 is still on the snapshot that routes to b: it may pick b. */
    routing_announce(0, last);
    routing_announce(1, last + 1);
    ctl_reclaim_backends();
    ck_assert_msg(retired(be), "freed while a worker was still on a snapshot routing to it");
    routing_announce(0, last + 1);
    ctl_reclaim_backends();
    ck_assert(!retired(be));
}
END_TEST

START_TEST(test_idle_report_keeps_the_backend_until_read)
{
    struct backend *be = delete_b(false);
    struct report *m;

    /* A request on b ends on worker 0 (its last one), then every worker moves on. */
    be->ws[0].active = 1;
    report_backend_drop(0, be, &be->ws[0].active);
    for (unsigned i = 0; i < NW; i++)
        routing_announce(i, F.m->generation);
    ctl_reclaim_backends();
    ck_assert_msg(retired(be), "freed while the worker's report naming it was queued");
    m = take_report();
    ck_assert_int_eq(m->type, REPORT_BACKEND_IDLE);
    ck_assert_ptr_eq(m->be, be);
    /* The control thread reads it (be->pool < 0: nothing to do), then drops the reference. */
    ctl_backend_idle(m->be);
    backend_put(m->be);
    free(m);
    ctl_reclaim_backends();
    ck_assert(!retired(be));
}
END_TEST

START_TEST(test_drop_on_a_backend_not_draining_posts_nothing)
{
    struct backend *be = F.m->pools[0].b[0].be;

    be->ws[1].active = 2;
    report_backend_drop(1, be, &be->ws[1].active);
    ck_assert_uint_eq(be->ws[1].active, 1);
    ck_assert_uint_eq(mailbox_count(&ctl.reports), 0);
    ck_assert_uint_eq(atomic_load(&be->refs), 0);
    atomic_store(&be->draining, true);
    report_backend_drop(1, be, &be->ws[1].active);
    ck_assert_uint_eq(mailbox_count(&ctl.reports), 1);
    ck_assert_uint_eq(atomic_load(&be->refs), 1);
}
END_TEST

START_TEST(test_breaker_report_keeps_the_backend_until_read)
{
    struct backend *be = delete_b(true);
    struct report *m;

    /* The report was posted while the request still counted on b. */
    report_breaker(1, be, false);
    ctl_reclaim_backends();
    ck_assert_msg(retired(be), "freed while a breaker report naming it was queued");
    m = take_report();
    ck_assert_int_eq(m->type, REPORT_BREAKER);
    backend_put(m->be);
    free(m);
    ctl_reclaim_backends();
    ck_assert(!retired(be));
}
END_TEST

START_TEST(test_message_to_workers_keeps_the_backend_until_each_is_done)
{
    struct backend *be = F.m->pools[0].b[1].be;

    /* ctl_remove_backend tells the workers to close its idle connections, then retires it. */
    ctl_send_backends(WMSG_CLOSE_IDLE, &be, 1);
    delete_b(true);
    ctl_reclaim_backends();
    ck_assert_msg(retired(be), "freed while workers had a message naming it");
    for (unsigned i = 0; i < NW; i++) {
        struct mailbox_node *n = mailbox_take(&F.w[i]->inbox);
        struct wmsg *m;

        ck_assert_ptr_nonnull(n);
        ck_assert_ptr_null(n->next);
        m = container_of(n, struct wmsg, node);
        ck_assert_ptr_eq(m->be[0], be);
        ck_assert_uint_eq(be->addr_id, m->be[0]->addr_id); /* what close_idle_of reads */
        wmsg_free(m);
        ctl_reclaim_backends();
        ck_assert(retired(be) == (i + 1 < NW));
    }
}
END_TEST

static Suite *membership_suite(void)
{
    Suite *s = suite_create("membership");
    TCase *tc = tcase_create("reclaim");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_reclaim_waits_for_every_worker_to_pass_the_retiring_snapshot);
    tcase_add_test(tc, test_idle_report_keeps_the_backend_until_read);
    tcase_add_test(tc, test_drop_on_a_backend_not_draining_posts_nothing);
    tcase_add_test(tc, test_breaker_report_keeps_the_backend_until_read);
    tcase_add_test(tc, test_message_to_workers_keeps_the_backend_until_each_is_done);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(membership_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
