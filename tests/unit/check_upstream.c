/*
 * check_upstream.c - upstream.c on a real worker (worker_create, a config
 * with an upstream-TLS pool, its model and first snapshot, as main.c sets
 * them up), the worker's loop not run: these tests look at the connections
 * upstream.c opens, not at what goes over them.
 *
 * A connection to a backend takes its TLS settings from the pool the
 * request was routed through, as the worker's snapshot has it, never from
 * the control thread's model: a backend deleted (the model forgets its
 * pool) while a worker still reaches it through its snapshot, a request in
 * flight to it retrying on a fresh connection, still speaks TLS to it.
 * Warm-up connections (opened ahead of traffic for the control thread)
 * likewise take the pool named in the message.
 *
 * Each test runs in its own process (Check's fork mode).
 */
#include "conf.h"
#include "listener.h"
#include "model.h"
#include "tls.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"
#include "workerfix.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int backend_fd; /* the backend's listening socket (never accepts: connects stay pending) */

/* Pool "plain" first, then "secure" (TLS to its backends): pool indexes 0 and 1. */
#define CONF                                                                                       \
    "workers = 1;\n"                                                                               \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"secure\"; } );\n"                            \
    "pools = ( { name = \"plain\"; backends = ( { name = \"p-1\"; address = \"127.0.0.1:%d\"; } "  \
    "); },\n"                                                                                      \
    "  { name = \"secure\"; tls = { verify = false; };\n"                                          \
    "    backends = ( { name = \"s-1\"; address = \"127.0.0.1:%d\"; } ); } );\n"

#define PLAIN  0
#define SECURE 1

/* Config, model, first snapshot and one worker (workerfix.h); its loop is not run. */
static void start(void)
{
    char text[768];
    int port;

    backend_fd = tcp_listener(64);
    port = local_port(backend_fd);
    snprintf(text, sizeof(text), CONF, port, port);
    wfix_start(text, WFIX_TLS);
    ck_assert_int_eq(model_find_pool(fx.m, "secure"), SECURE);
}

static void stop(void)
{
    wfix_stop();
    close(backend_fd);
}

/* The backend of the snapshot's pool pi the worker routes to (the only one). */
static struct backend *snapshot_backend(int pi)
{
    const struct routing *r = fx.w->routing;

    ck_assert_uint_gt(r->npools, (uint32_t)pi);
    ck_assert_uint_eq(r->pools[pi].n, 1);
    return r->pools[pi].b[0].be;
}

/* A connection to a backend of the TLS pool speaks TLS, one of the plain pool does not. */
START_TEST(test_connection_takes_tls_from_the_pool_it_was_routed_through)
{
    struct upstream *up;

    start();
    up = upstream_connect(fx.w, snapshot_backend(SECURE), SECURE, NULL);
    ck_assert_ptr_nonnull(up);
    ck_assert_msg(up->tls != NULL, "a backend of a TLS pool got a plaintext connection");
    upstream_close(up);
    up = upstream_connect(fx.w, snapshot_backend(PLAIN), PLAIN, NULL);
    ck_assert_ptr_nonnull(up);
    ck_assert_ptr_null(up->tls);
    upstream_close(up);
    stop();
}
END_TEST

/*
 * The control thread deletes the TLS pool's backend (model_del_backend: its
 * model forgets the pool) while the worker still routes to it through its
 * snapshot, e.g. a request in flight whose pooled connection went stale
 * retries on a fresh one. That connection must still speak TLS: the pool is
 * the one the request was routed through, not what the model says now.
 */
START_TEST(test_deleted_backend_still_reached_through_the_snapshot_keeps_its_pool_tls)
{
    struct backend *be;
    struct upstream *up;

    start();
    be = snapshot_backend(SECURE);
    ck_assert_ptr_eq(model_del_backend(fx.m, SECURE, 0), be);
    /* Not published: the worker's snapshot still routes to it. */
    ck_assert_ptr_eq(snapshot_backend(SECURE), be);
    up = upstream_connect(fx.w, be, SECURE, NULL);
    ck_assert_ptr_nonnull(up);
    ck_assert_msg(up->tls != NULL,
                  "a deleted backend reached through the snapshot got a plaintext connection");
    upstream_close(up);
    /* The model no longer has it: free it as the control thread would once unreachable. */
    stop();
    backend_destroy(be);
}
END_TEST

static unsigned warming(bool tls)
{
    unsigned n = 0;

    for (struct upstream *up = fx.w->warming; up; up = up->next) {
        ck_assert_msg((up->tls != NULL) == tls, "a warm-up connection %s TLS",
                      tls ? "without" : "with");
        n++;
    }
    return n;
}

/*
 * A warm-up (WMSG_WARM) opens its connections with the TLS settings of the
 * pool the message names; a pool the snapshot does not have gets none (a
 * connection pooled without its pool's TLS would serve requests later).
 */
START_TEST(test_warm_up_takes_tls_from_the_pool_the_message_names)
{
    struct backend *be;

    start();
    be = snapshot_backend(SECURE);
    upstream_warm(fx.w, 1, SECURE, &be, 1);
    ck_assert_uint_eq(warming(true), WARM_CONNS);
    upstream_abort_warming(fx.w);
    be = snapshot_backend(PLAIN);
    upstream_warm(fx.w, 2, PLAIN, &be, 1);
    ck_assert_uint_eq(warming(false), WARM_CONNS);
    upstream_abort_warming(fx.w);
    upstream_warm(fx.w, 3, 7, &be, 1);
    ck_assert_uint_eq(warming(false), 0);
    stop();
}
END_TEST

static Suite *upstream_suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("tls");

    tcase_add_test(tc, test_connection_takes_tls_from_the_pool_it_was_routed_through);
    tcase_add_test(tc, test_deleted_backend_still_reached_through_the_snapshot_keeps_its_pool_tls);
    tcase_add_test(tc, test_warm_up_takes_tls_from_the_pool_the_message_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(upstream_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
