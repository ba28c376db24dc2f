/*
 * check_worker.c - worker.c on a real worker (workerfix.h: config, model
 * and routing snapshot as main.c sets them up), its loop run step by step
 * by the test thread, or on its own thread where the test is about leaving
 * the loop:
 *
 * - the mailbox: messages sent with worker_send run oldest first, all of
 *   those waiting in one wake-up (configurations switched in the order they
 *   were sent), and a WMSG_CLOSE_IDLE closes the idle connections of the
 *   backends it names and no other;
 * - snapshots: worker_post(WCMD_REFRESH) switches the worker to the newest
 *   snapshot (skipping any published in between) and announces its
 *   generation (routing_min_seen), so that older ones can be reclaimed;
 *   worker_lb switches by itself when a snapshot was published, and the
 *   balancer state (pool and group balancers) is rebuilt for each generation;
 * - the idle upstream pool: per backend address, most recent first,
 *   worker_idle_remove takes one out of the middle, pop of an address with
 *   none (or never seen) is NULL;
 * - WCMD_SHUTDOWN with no session: the thread closes its listeners and
 *   idle connections and leaves its loop;
 * - out of descriptors: accepting pauses (no spinning on the ready
 *   listener) and resumes by itself; the waiting client is then accepted;
 *   a listener a reload adds meanwhile waits for the pause to end too.
 *
 * Each test runs in its own process (Check's fork mode). Every wait has a
 * deadline.
 */
#include "routing.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"
#include "workerfix.h"

#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/*
 * Pool "api": backends a and b on two listening sockets (two addresses);
 * pool "other": backend c at a's address. The sockets never accept:
 * connects just queue.
 */
#define CONF                                                                                       \
    "workers = 1;\n"                                                                               \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ( "                                                    \
    "{ name = \"a\"; address = \"127.0.0.1:%d\"; group = \"blue\"; }, "                            \
    "{ name = \"b\"; address = \"127.0.0.1:%d\"; group = \"blue\"; } ); },\n"                      \
    "  { name = \"other\"; backends = ( { name = \"c\"; address = \"127.0.0.1:%d\"; } ); } );\n"

static int backend_fd[2];
static char conf_text[1024];

static void start_with(unsigned flags)
{
    backend_fd[0] = tcp_listener(64);
    backend_fd[1] = tcp_listener(64);
    snprintf(conf_text, sizeof(conf_text), CONF, local_port(backend_fd[0]),
             local_port(backend_fd[1]), local_port(backend_fd[0]));
    wfix_start(conf_text, flags);
}

static void start(void)
{
    start_with(WFIX_TICK);
}

static void stop(void)
{
    wfix_stop();
    close(backend_fd[0]);
    close(backend_fd[1]);
}

/* Backend i of the worker's snapshot (pool 0: "a" is 0, "b" is 1; pool 1: "c" is 2). */
static struct backend *snap_be(int i)
{
    ck_assert_uint_eq(fx.w->routing->npools, 2);
    ck_assert_uint_eq(fx.w->routing->pools[0].n, 2);
    ck_assert_uint_eq(fx.w->routing->pools[1].n, 1);
    return i < 2 ? fx.w->routing->pools[0].b[i].be : fx.w->routing->pools[1].b[0].be;
}

/* --- the mailbox ---------------------------------------------------------------------- */

/*
 * A reload message switching to configuration c: the worker's one listener
 * is kept; when new_fd >= 0, a second listener (c's second) takes that socket.
 */
static struct wmsg *reconf_msg(const struct veer_conf *c, _Atomic unsigned *left, int new_fd)
{
    struct wmsg *m = calloc(1, sizeof(*m));
    struct wreconf *rc = calloc(1, sizeof(*rc));

    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(rc);
    rc->conf = c;
    rc->n = new_fd >= 0 ? 2 : 1;
    rc->l = calloc(rc->n, sizeof(*rc->l));
    ck_assert_ptr_nonnull(rc->l);
    rc->l[0] = (struct wreconf_listener){.keep = 0, .lc = &c->listens[0], .pool = 0};
    if (new_fd >= 0) {
        int *fds = malloc(sizeof(*fds)); /* one per worker; freed by wmsg_free */

        ck_assert_ptr_nonnull(fds);
        fds[0] = new_fd;
        rc->l[1] = (struct wreconf_listener){.keep = -1, .fds = fds, .lc = &c->listens[1]};
    }
    rc->refs = 1;
    rc->left = left;
    m->type = WMSG_RECONF;
    m->reconf = rc;
    return m;
}

static bool none_left(void *arg)
{
    return atomic_load((_Atomic unsigned *)arg) == 0;
}

/*
 * Three reloads sent before the worker runs: one wake-up takes them all and
 * runs them in the order they were sent, so the worker ends on the last one.
 */
START_TEST(test_messages_run_oldest_first)
{
    struct veer_conf *c[3];
    _Atomic unsigned left = 3;

    start();
    for (int i = 0; i < 3; i++)
        c[i] = wfix_conf(conf_text);
    for (int i = 0; i < 3; i++)
        worker_send(fx.w, reconf_msg(c[i], &left, -1));
    ck_assert_ptr_eq(fx.w->conf, fx.c); /* nothing runs before the worker's loop does */
    ck_assert_msg(run_until(none_left, &left), "the worker did not run its messages");
    ck_assert_msg(fx.w->conf == c[2],
                  "the worker ended on configuration %d of 3, not the last sent",
                  fx.w->conf == c[0]   ? 1
                  : fx.w->conf == c[1] ? 2
                                       : 0);
    ck_assert_ptr_eq(fx.w->listeners[0]->lc, &c[2]->listens[0]);
    ck_assert_uint_eq(fx.w->nlisteners, 1);
    stop();
    for (int i = 0; i < 3; i++)
        conf_free(c[i]);
}
END_TEST

/* A new connection to be (of its pool), put in the idle pool as upstream_park does. */
static struct upstream *idle_conn(struct backend *be)
{
    struct upstream *up = upstream_connect(fx.w, be, be == snap_be(2) ? 1 : 0, NULL);

    ck_assert_ptr_nonnull(up);
    worker_idle_push(fx.w, up);
    ck_assert(up->idle);
    return up;
}

static uint32_t idle_n(struct backend *be)
{
    return be->addr_id < fx.w->nidle ? fx.w->idle[be->addr_id].n : 0;
}

static bool no_more_than_one(void *arg)
{
    return idle_n(arg) <= 1;
}

/*
 * WMSG_CLOSE_IDLE (drain, delete) closes the named backend's idle
 * connections and no other: not those of another address, nor those of
 * another backend at the same address (pooled together).
 */
START_TEST(test_close_idle_closes_only_the_named_backends_connections)
{
    struct backend *a, *b, *c;
    struct upstream *a1, *a2, *b1, *c1;
    struct wmsg *m;

    start();
    a = snap_be(0);
    b = snap_be(1);
    c = snap_be(2);
    ck_assert_uint_ne(a->addr_id, b->addr_id);
    ck_assert_uint_eq(a->addr_id, c->addr_id);
    a1 = idle_conn(a);
    c1 = idle_conn(c);
    a2 = idle_conn(a);
    b1 = idle_conn(b);
    ck_assert_uint_eq(idle_n(a), 3); /* a1, c1, a2: one address */
    m = calloc(1, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    m->type = WMSG_CLOSE_IDLE;
    m->n = 1;
    m->be = calloc(1, sizeof(*m->be));
    ck_assert_ptr_nonnull(m->be);
    backend_hold(a);
    m->be[0] = a;
    worker_send(fx.w, m);
    ck_assert_msg(run_until(no_more_than_one, a), "%u idle connections at a's address left",
                  idle_n(a));
    ck_assert(a1->dead && a2->dead); /* closed; freed once the loop reaps */
    ck_assert(!c1->dead && c1->idle);
    ck_assert(!b1->dead && b1->idle);
    ck_assert_uint_eq(idle_n(b), 1);
    ck_assert_ptr_eq(worker_idle_pop(fx.w, c->addr_id), c1);
    ck_assert_ptr_eq(worker_idle_pop(fx.w, b->addr_id), b1);
    upstream_close(b1);
    upstream_close(c1);
    stop();
}
END_TEST

/* --- snapshots ------------------------------------------------------------------------- */

static bool switched(void *arg)
{
    (void)arg;
    return fx.w->routing == routing_current();
}

/*
 * Two publishes, then the wake-up: the worker goes straight to the newest,
 * announces it, and both older snapshots can then be reclaimed.
 */
START_TEST(test_refresh_switches_to_the_newest_snapshot_and_announces_it)
{
    struct routing *first;
    uint64_t g0;

    start();
    first = fx.w->routing;
    g0 = first->generation;
    ck_assert_uint_eq(routing_min_seen(), g0);
    publish();
    publish();
    ck_assert_uint_eq(routing_current()->generation, g0 + 2);
    /* Until its loop runs, the worker holds the first one, and says so. */
    ck_assert_ptr_eq(fx.w->routing, first);
    ck_assert_uint_eq(routing_min_seen(), g0);
    routing_reclaim();
    ck_assert_uint_eq(routing_retired_count(), 2);
    ck_assert_msg(run_until(switched, NULL), "the worker stayed on generation %llu",
                  (unsigned long long)fx.w->routing->generation);
    ck_assert_uint_eq(fx.w->routing->generation, g0 + 2);
    ck_assert_uint_eq(routing_min_seen(), g0 + 2);
    ck_assert_uint_eq(atomic_load(&fx.w->cmd), 0);
    routing_reclaim();
    ck_assert_uint_eq(routing_retired_count(), 0);
    stop();
}
END_TEST

/* How many of n picks of the worker's balancer for pool 0 go to backend "a". */
static unsigned picks_of_a(unsigned n)
{
    unsigned k = 0;

    for (unsigned i = 0; i < n; i++) {
        struct lb *lb = worker_lb(fx.w, 0);
        int bi = lb_pick(lb);

        ck_assert_int_ge(bi, 0);
        k += lb->sp->b[bi].be == snap_be(0);
    }
    return k;
}

/*
 * worker_lb switches to a published snapshot by itself (a routing decision
 * never uses an older one than it must) and its balancers, for the pool and
 * for its groups, are made for that snapshot: the new weights count from
 * the first pick.
 */
START_TEST(test_lb_is_rebuilt_for_each_generation)
{
    struct routing *r0, *r1;
    struct lb *lb;

    start();
    r0 = fx.w->routing;
    lb = worker_lb(fx.w, 0);
    ck_assert_ptr_nonnull(lb);
    ck_assert_ptr_eq(lb->sp, &r0->pools[0]);
    ck_assert_uint_eq(lb->widx, fx.w->idx);
    ck_assert_ptr_eq(worker_lb(fx.w, 1)->sp, &r0->pools[1]);
    ck_assert_ptr_null(worker_lb(fx.w, 2)); /* no such pool */
    ck_assert_ptr_null(worker_lb(fx.w, -1));
    ck_assert_ptr_eq(worker_group_lb(fx.w, 0, 0)->sp, &r0->pools[0].groups[0]);
    ck_assert_uint_eq(picks_of_a(4), 2); /* equal weights */

    /* a weighs 3 to b's 1 from now on. */
    fx.m->pools[0].b[0].weight = 300;
    fx.m->pools[0].b[1].weight = 100;
    publish();
    r1 = routing_current();
    ck_assert_ptr_ne(r1, r0);
    lb = worker_lb(fx.w, 0); /* no loop step: the pick itself switches */
    ck_assert_ptr_eq(fx.w->routing, r1);
    ck_assert_ptr_eq(lb->sp, &r1->pools[0]);
    ck_assert_uint_eq(routing_min_seen(), r1->generation);
    ck_assert_ptr_eq(worker_group_lb(fx.w, 0, 0)->sp, &r1->pools[0].groups[0]);
    ck_assert_uint_eq(picks_of_a(4), 3);
    ck_assert_uint_eq(picks_of_a(400), 300);
    stop();
}
END_TEST

/* --- the idle upstream pool ------------------------------------------------------------- */

/* Per address, most recent first; remove takes one from anywhere; pops of nothing are NULL. */
START_TEST(test_idle_pool_is_per_address_most_recent_first)
{
    struct backend *a, *b;
    struct upstream *a1, *a2, *a3, *b1, *up;

    start();
    a = snap_be(0);
    b = snap_be(1);
    ck_assert_ptr_null(worker_idle_pop(fx.w, a->addr_id)); /* never pooled */
    a1 = idle_conn(a);
    a2 = idle_conn(a);
    a3 = idle_conn(a);
    b1 = idle_conn(b);
    ck_assert_uint_eq(idle_n(a), 3);
    ck_assert_uint_eq(idle_n(b), 1);
    ck_assert_ptr_null(worker_idle_pop(fx.w, fx.w->nidle)); /* an address past the table */

    worker_idle_remove(fx.w, a2);
    ck_assert(!a2->idle);
    ck_assert_uint_eq(idle_n(a), 2);
    worker_idle_remove(fx.w, a2); /* not idle: nothing happens */
    ck_assert_uint_eq(idle_n(a), 2);

    up = worker_idle_pop(fx.w, a->addr_id);
    ck_assert_ptr_eq(up, a3);
    ck_assert(!up->idle);
    /* Taken for a request: watched for the response from now on. */
    ck_assert(event_pending(&up->rev, EV_READ | EV_TIMEOUT, NULL));
    worker_idle_push(fx.w, a2);
    ck_assert_ptr_eq(worker_idle_pop(fx.w, a->addr_id), a2);
    ck_assert_ptr_eq(worker_idle_pop(fx.w, a->addr_id), a1);
    ck_assert_ptr_null(worker_idle_pop(fx.w, a->addr_id));
    ck_assert_uint_eq(idle_n(a), 0);
    ck_assert_ptr_eq(worker_idle_pop(fx.w, b->addr_id), b1);
    ck_assert_ptr_null(worker_idle_pop(fx.w, b->addr_id));
    upstream_close(a1);
    upstream_close(a2);
    upstream_close(a3);
    upstream_close(b1);
    stop();
}
END_TEST

/* --- leaving the loop ------------------------------------------------------------------ */

/*
 * On its own thread, no session: WCMD_SHUTDOWN makes it close its listener
 * and its idle connections and leave the loop (joined within a deadline).
 */
START_TEST(test_shutdown_with_no_session_leaves_the_loop)
{
    struct backend *a;
    struct timespec until;
    int rc;

    start_with(0);
    a = snap_be(0);
    idle_conn(a);
    ck_assert_int_ge(fx.w->listeners[0]->fd, 0);
    ck_assert_int_eq(worker_start(fx.w), VEER_OK);
    worker_post(fx.w, WCMD_SHUTDOWN);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WFIX_WAIT_MS / 1000;
    rc = pthread_timedjoin_np(fx.w->thread, NULL, &until);
    ck_assert_msg(rc == 0, "the worker did not leave its loop: %s", strerror(rc));
    ck_assert(atomic_load(&fx.w->exited));
    ck_assert(fx.w->shutting_down);
    ck_assert_int_lt(fx.w->listeners[0]->fd, 0);
    ck_assert_uint_eq(idle_n(a), 0); /* a1 closed (and freed by the loop) */
    stop();
}
END_TEST

/* --- out of descriptors ----------------------------------------------------------------- */

static struct rlimit saved_nofile;

/*
 * Out of descriptors from now on: the limit at the lowest free descriptor
 * number, so that every lower one is in use (open ones above it stay
 * usable; only new ones are refused). fd: any open descriptor.
 */
static void exhaust_fds(int fd)
{
    struct rlimit lim;
    int lowest = dup(fd);

    ck_assert_int_ge(lowest, 0);
    close(lowest);
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
    lim = saved_nofile;
    lim.rlim_cur = (rlim_t)lowest;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    ck_assert_int_eq(dup(fd), -1);
    ck_assert_int_eq(errno, EMFILE);
}

static void restore_fds(void)
{
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
}

static bool paused(void *arg)
{
    (void)arg;
    return evtimer_pending(&fx.w->accept_pause, NULL);
}

static bool accepted(void *arg)
{
    (void)arg;
    return fx.w->nsessions == 1;
}

static bool accepted_two(void *arg)
{
    (void)arg;
    return fx.w->nsessions == 2;
}

/*
 * A client waits in the backlog while the process is out of descriptors:
 * the worker stops watching its listener (instead of waking up for it in a
 * loop) until the pause timer, then accepts the client.
 */
START_TEST(test_out_of_fds_pauses_accepting_then_resumes)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int client, rc;

    start_with(WFIX_LISTEN | WFIX_TICK);
    client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(client, 0);
    sa.sin_port = htons((uint16_t)fx.port);
    ck_assert_int_eq(connect(client, (struct sockaddr *)&sa, sizeof(sa)), 0);

    exhaust_fds(client);
    rc = run_until(paused, NULL);
    restore_fds(); /* before any assertion: a failing test must still report */
    ck_assert_msg(rc, "accepting did not pause");
    ck_assert(!event_pending(&fx.w->listeners[0]->ev, EV_READ, NULL));
    ck_assert_uint_eq(fx.w->stats.accepted, 0);
    ck_assert_uint_eq(fx.w->nsessions, 0);

    ck_assert_msg(run_until(accepted, NULL), "the client was never accepted");
    ck_assert(event_pending(&fx.w->listeners[0]->ev, EV_READ, NULL));
    ck_assert_uint_eq(fx.w->stats.accepted, 1);
    close(client);
    stop();
}
END_TEST

/*
 * A reload that adds a listener while accepting is paused (out of
 * descriptors) does not arm the new listener before the pause ends: it
 * would be ready at once (a client waits on it) and every accept would
 * fail again, the worker waking for it in a loop until the pause ends.
 * Once descriptors are back, both listeners accept.
 */
START_TEST(test_listener_added_while_paused_waits_for_the_pause)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char text[1024];
    struct veer_conf *c2;
    struct wmsg *m;
    _Atomic unsigned left = 1;
    int client[2], lfd, ran, still_paused = 0, armed = 0;

    start_with(WFIX_LISTEN | WFIX_TICK);
    snprintf(text, sizeof(text), "%s", conf_text);
    /* The same configuration with a second listener. */
    {
        const char *one = "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );";
        char *at = strstr(text, one);

        ck_assert_ptr_nonnull(at);
        snprintf(at, sizeof(text) - (size_t)(at - text),
                 "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; }, "
                 "{ address = \"127.0.0.1:0\"; pool = \"api\"; } );%s",
                 strstr(conf_text, one) + strlen(one));
    }
    c2 = wfix_conf(text);
    ck_assert_int_eq(c2->nlistens, 2);
    lfd = tcp_listener(16);
    for (int i = 0; i < 2; i++) {
        client[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(client[i], 0);
        sa.sin_port = htons((uint16_t)(i == 0 ? fx.port : local_port(lfd)));
        ck_assert_int_eq(connect(client[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
    }
    m = reconf_msg(c2, &left, lfd);

    exhaust_fds(client[0]);
    ran = run_until(paused, NULL);
    if (ran) {
        worker_send(fx.w, m);
        ran = run_until(none_left, &left);
        /* A machine stalled past the pause would only hide the fault, never fake it. */
        still_paused = evtimer_pending(&fx.w->accept_pause, NULL);
        armed = fx.w->nlisteners == 2 && event_pending(&fx.w->listeners[1]->ev, EV_READ, NULL);
    }
    restore_fds();
    ck_assert_msg(ran, "accepting did not pause, or the reload did not run");
    ck_assert_uint_eq(fx.w->nlisteners, 2);
    ck_assert_msg(!(still_paused && armed),
                  "the new listener was armed while accepting was paused");

    ck_assert_msg(run_until(accepted_two, NULL), "accepted %u of 2 clients", fx.w->nsessions);
    ck_assert(event_pending(&fx.w->listeners[0]->ev, EV_READ, NULL));
    ck_assert(event_pending(&fx.w->listeners[1]->ev, EV_READ, NULL));
    close(client[0]);
    close(client[1]);
    stop();
    conf_free(c2);
}
END_TEST

static Suite *worker_suite(void)
{
    Suite *s = suite_create("worker");
    TCase *tc = tcase_create("mailbox");

    tcase_add_test(tc, test_messages_run_oldest_first);
    tcase_add_test(tc, test_close_idle_closes_only_the_named_backends_connections);
    suite_add_tcase(s, tc);
    tc = tcase_create("snapshots");
    tcase_add_test(tc, test_refresh_switches_to_the_newest_snapshot_and_announces_it);
    tcase_add_test(tc, test_lb_is_rebuilt_for_each_generation);
    suite_add_tcase(s, tc);
    tc = tcase_create("idle");
    tcase_add_test(tc, test_idle_pool_is_per_address_most_recent_first);
    suite_add_tcase(s, tc);
    tc = tcase_create("loop");
    tcase_add_test(tc, test_shutdown_with_no_session_leaves_the_loop);
    tcase_add_test(tc, test_out_of_fds_pauses_accepting_then_resumes);
    tcase_add_test(tc, test_listener_added_while_paused_waits_for_the_pause);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(worker_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
