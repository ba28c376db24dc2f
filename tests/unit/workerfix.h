/*
 * workerfix.h - what the suites that run a real worker in-process share
 * (check_session, check_txn, check_upstream, check_worker): a config from
 * a text, its model and first routing snapshot, the modules, and one worker
 * on its own listening socket, as main.c's run() sets them up minus the
 * thread; the test thread runs the worker's loop step by step (step(),
 * run_until() with a deadline) and publishes snapshots as the control
 * thread does (publish()). Loopback helpers for the backends a suite serves
 * itself: tcp_listener(), local_port(). check_rollout takes only the
 * config loader and real, never started workers (wfix_conf, wfix_workers).
 *
 * One fixture per process (Check's fork mode runs each test in its own):
 * fx. A suite adds its own turn to every loop step with fx.serve.
 */
#ifndef VEER_WORKERFIX_H
#define VEER_WORKERFIX_H

#include "conf.h"
#include "listener.h"
#include "model.h"
#include "module.h"
#include "routing.h"
#include "tls.h"
#include "txn.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How long anything a run_until waits for may take. */
#define WFIX_WAIT_MS 5000

/* What wfix_start sets up beyond config, model, snapshot and worker. */
#define WFIX_TLS     (1u << 0) /* tls_conf_prepare: pools with TLS to their backends */
#define WFIX_MODULES (1u << 1) /* module_init_all */
#define WFIX_LISTEN  (1u << 2) /* the worker accepts on its listener (as worker_main arms it) */
#define WFIX_TICK    (1u << 3) /* a 5 ms timer bounds each loop step (else step() may block) */

static struct {
    struct veer_conf *c;
    struct model *m;
    struct worker *w;
    struct event *tick;  /* WFIX_TICK: bounds each loop step */
    int port;            /* WFIX_LISTEN: veer's listening port */
    void (*serve)(void); /* the suite's own turn after every loop step, or NULL */
} fx __attribute__((unused));

static inline uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

/* A non-blocking socket listening on an ephemeral loopback port. */
static inline int tcp_listener(int backlog)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_msg(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
    ck_assert_int_eq(listen(fd, backlog), 0);
    return fd;
}

/* A configuration from its text, loaded from a file as veer loads it. */
static inline struct veer_conf *wfix_conf(const char *text)
{
    char path[] = "/tmp/check_workerfix_XXXXXX";
    char err[512] = "";
    int fd = mkstemp(path);
    struct veer_conf *c;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "config: %s\n%s", err, text);
    return c;
}

/* n workers of configuration c (created, not started), each on its own listening sockets. */
static inline void wfix_workers(const struct veer_conf *c, unsigned n, struct worker **w)
{
    int *fds = listener_open_all(c, n);

    ck_assert_ptr_nonnull(fds);
    for (unsigned i = 0; i < n; i++) {
        w[i] = worker_create(i, c, fds + (size_t)i * (size_t)c->nlistens);
        ck_assert_ptr_nonnull(w[i]);
    }
    free(fds);
}

static inline void wfix_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/*
 * Config `text`, its model and first snapshot (one reader), and one worker
 * (fx.w) as main.c's run() sets them up, minus the thread; `flags` adds the
 * rest (WFIX_*).
 */
static inline void wfix_start(const char *text, unsigned flags)
{
    char err[512] = "";

    memset(&fx, 0, sizeof(fx));
    signal(SIGPIPE, SIG_IGN);
    fx.c = wfix_conf(text);
    if (flags & WFIX_TLS)
        ck_assert_msg(tls_conf_prepare(fx.c, err, sizeof(err)) == VEER_OK, "tls: %s", err);
    veer_nworkers = 1;
    fx.m = model_from_conf(fx.c);
    routing_init(1, routing_build(fx.m));
    if (flags & WFIX_MODULES)
        ck_assert_int_eq(module_init_all(fx.c), VEER_OK);
    wfix_workers(fx.c, 1, &fx.w);
    if (flags & WFIX_LISTEN) {
        ck_assert_uint_eq(fx.w->nlisteners, 1);
        event_add(&fx.w->listeners[0]->ev, NULL); /* as worker_main does */
        fx.port = local_port(fx.w->listeners[0]->fd);
    }
    if (flags & WFIX_TICK) {
        struct timeval tk = {0, 5000};

        fx.tick = event_new(fx.w->base, -1, EV_PERSIST, wfix_tick_cb, NULL);
        event_add(fx.tick, &tk);
    }
}

/* Free what wfix_start made (the worker first: it closes its sessions and connections). */
static inline void wfix_stop(void)
{
    if (fx.tick)
        event_free(fx.tick);
    worker_destroy(fx.w);
    routing_shutdown();
    model_free(fx.m);
    conf_free(fx.c);
    memset(&fx, 0, sizeof(fx));
}

/* One iteration of worker_main (callbacks, then the send phase), then the suite's turn. */
static inline void step(void)
{
    ck_assert_int_ge(event_base_loop(fx.w->base, EVLOOP_ONCE), 0);
    txn_run_flushes(fx.w);
    if (fx.serve)
        fx.serve();
}

typedef bool (*cond_fn)(void *arg);

/* Step until done(arg), or WFIX_WAIT_MS pass. */
static inline bool run_until(cond_fn done, void *arg)
{
    uint64_t deadline = now_ms() + WFIX_WAIT_MS;

    while (!done(arg)) {
        if (now_ms() > deadline)
            return false;
        step();
    }
    return true;
}

/* The control thread's publish (control_publish) and its wake-up of the worker. */
static inline void publish(void)
{
    fx.m->generation++;
    routing_publish(routing_build(fx.m));
    worker_post(fx.w, WCMD_REFRESH);
}

#endif
