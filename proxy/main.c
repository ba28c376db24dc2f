/*
 * main.c - veer: command line, start-up, signals and shutdown. The main
 * thread becomes the control thread once the workers run: it handles
 * signals, reclaims old routing snapshots, and joins the workers at exit.
 */
#include "admin.h"
#include "show.h"
#include "adminhttp.h"
#include "audit.h"
#include "cluster.h"
#include "conf.h"
#include "control.h"
#include "listener.h"
#include "module.h"
#include "model.h"
#include "sdnotify.h"
#include "inherit.h"
#include "upgrade.h"
#include "state.h"
#include "tls.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* How long start-up waits for the first read of etcd before serving from the state file. */
#define CLUSTER_SYNC_MS 3000

/* The control thread's nice value (when allowed): ahead of the workers for a time slice. */
#define CONTROL_NICE -10

struct lifecycle {
    struct event_base *base;
    struct veer_conf *conf;
    struct model *model;
    struct worker **workers;
    unsigned nworkers;
    unsigned signals; /* shutdown signals received */
    uint64_t shutdown_start_us;
    struct event *sigterm, *sigint, *sighup, *sigusr1, *sigusr2, *watch;
    bool aborted;
    bool joined;
    unsigned nalloc; /* workers allocated (the first config's count) */
};

static struct lifecycle *lc_self; /* for the upgrade callbacks */

static int upgrade_now(const struct audit_peer *peer, const char *line, char *msg, size_t len);

static void usage(FILE *out)
{
    fprintf(out, "usage: veer [-t] -c FILE\n"
                 "       veer -h | -v\n"
                 "  -c FILE  configuration file (libconfig)\n"
                 "  -t       check the configuration and exit: 0 if valid, else\n"
                 "           FILE:LINE: message on stderr and exit 1\n"
                 "  -d       debug logging\n"
                 "  -h       this help\n"
                 "  -v       version\n");
}

/*
 * Room for every client connection and its upstream connection, plus
 * listeners, logs and slack. Raise the hard limit too when allowed (root).
 */
static void raise_nofile(const struct veer_conf *conf)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)conf->limits.max_connections * 2 + 1024;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        struct rlimit hard = {want, want};

        if (setrlimit(RLIMIT_NOFILE, &hard) == 0)
            return;
        want = rl.rlim_max;
        if (want < (rlim_t)conf->limits.max_connections + 256)
            log_warn("RLIMIT_NOFILE hard limit %llu is below what limits.max_connections "
                     "needs",
                     (unsigned long long)rl.rlim_max);
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        log_warn("cannot raise RLIMIT_NOFILE to %llu: %s", (unsigned long long)want,
                 strerror(errno));
}

static void watch_cb(evutil_socket_t fd, short what, void *arg);

/* The configuration in force: the first one until a reload replaces it. */
static const struct veer_conf *conf_now(const struct lifecycle *c)
{
    const struct veer_conf *k = control_conf();

    return k ? k : c->conf;
}

/*
 * Graceful shutdown, phase by phase: the workers stop accepting and report
 * not ready at once, answer the next request on each keep-alive connection
 * with Connection: close, close idle ones after quiet_ms, finish what is in
 * flight up to shutdown_ms and close upstream connections as they free up.
 * The control loop watches them leave; the rest happens after it.
 */
static void begin_shutdown(struct lifecycle *c, const char *why)
{
    struct timeval watch_tv = {0, 5 * 1000};

    c->signals++;
    if (c->signals == 1) {
        c->shutdown_start_us = veer_now_us();
        sd_notify_send("STOPPING=1");
        log_info("%s: graceful shutdown (deadline %d ms): listeners closed, readiness reports "
                 "not ready, in-flight requests finishing",
                 why, conf_now(c)->timeouts.shutdown_ms);
        for (unsigned i = 0; i < c->nworkers; i++)
            worker_post(c->workers[i], WCMD_SHUTDOWN);
        cluster_leave();
        c->watch = event_new(c->base, -1, EV_PERSIST, watch_cb, c);
        event_add(c->watch, &watch_tv);
        return;
    }
    log_warn("%s again: aborting in-flight work", why);
    c->aborted = true;
    for (unsigned i = 0; i < c->nworkers; i++)
        worker_post(c->workers[i], WCMD_ABORT);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct lifecycle *c = arg;

    switch (sig) {
    case SIGTERM:
        begin_shutdown(c, "SIGTERM");
        break;
    case SIGINT:
        begin_shutdown(c, "SIGINT");
        break;
    case SIGHUP:
        if (c->signals == 0)
            control_reload_signal();
        break;
    case SIGUSR1:
        module_reopen_all();
        break;
    case SIGUSR2: {
        char msg[600];

        if (c->signals == 0 && upgrade_now(NULL, NULL, msg, sizeof(msg)) < 0)
            log_err("SIGUSR2: upgrade not started: %s", msg);
        break;
    }
    default:
        log_info("signal %d ignored", (int)sig);
        break;
    }
}

/*
 * The new binary is ready and took the state over (control_freeze made it
 * final; the new process was told GO): from here this process winds down
 * like a graceful shutdown, but without closing idle keep-alive connections
 * (they moved) and without writing the state file or the audit log.
 */
static void upgraded(void)
{
    struct lifecycle *c = lc_self;
    struct timeval watch_tv = {0, 5 * 1000};

    c->signals++;
    c->shutdown_start_us = veer_now_us();
    control_handed_over();
    admin_handover();
    log_info("upgrade: handing over to the new process; finishing requests in flight");
    c->watch = event_new(c->base, -1, EV_PERSIST, watch_cb, c);
    event_add(c->watch, &watch_tv);
}

/* The new binary failed or was not ready in time: decisions and admin commands again. */
static void upgrade_failed(const char *why)
{
    control_thaw(why);
    admin_resume();
}

/*
 * Hand every backend's readiness to the new binary (restore_health there).
 * Called once frozen: no health transition happens from then on, so this is
 * what this process routes by until it exits.
 */
static void carry_health(struct lifecycle *c)
{
    char *text = state_render_health(c->model);

    upgrade_carry(text);
    free(text);
}

/*
 * Start the new binary (SIGUSR2, `veerctl upgrade`). The handoff point:
 * the control plane freezes and the state file and audit log are flushed
 * (waited for) before the new process exists, so what it loads is final;
 * admin connections not yet accepted wait for the process that serves next.
 */
static int upgrade_now(const struct audit_peer *peer, const char *line, char *msg, size_t len)
{
    struct lifecycle *c = lc_self;

    if (c->signals) {
        snprintf(msg, len, "shutting down");
        return VEER_ERROR;
    }
    if (control_freeze(peer, line, msg, len) < 0)
        return VEER_ERROR;
    carry_health(c);
    admin_pause();
    if (upgrade_start(c->base, c->workers, c->nworkers, admin_listen_fd(), upgraded, upgrade_failed,
                      msg, len) < 0) {
        upgrade_failed(msg);
        return VEER_ERROR;
    }
    return VEER_OK;
}

/*
 * The control loop ends when every worker has left its loop. Workers exit
 * only on shutdown, so this is polled on a short timer only then.
 */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lifecycle *c = arg;
    unsigned running = 0;

    for (unsigned i = 0; i < c->nworkers; i++)
        if (!atomic_load_explicit(&c->workers[i]->exited, memory_order_acquire))
            running++;
    if (running == 0)
        event_base_loopexit(c->base, NULL);
}

/*
 * New side of an upgrade: the old process wrote its last (GO): take
 * decisions and serve the admin socket. An abandoned upgrade (NO) is
 * followed by SIGTERM; until then nothing here is ours to write.
 */
static void handoff_cb(bool go)
{
    if (!go) {
        log_warn("upgrade: the old process abandoned the upgrade; not taking over");
        return;
    }
    control_thaw(NULL);
    admin_resume();
}

/* Runtime decisions from the state file win over the config at start. */
static void restore_state(struct lifecycle *c)
{
    char msg[512];
    int rc;

    if (c->conf->state_file == NULL)
        return;
    rc = state_load(c->model, c->conf->state_file, msg, sizeof(msg));
    if (rc < 0)
        log_warn("state file %s ignored: %s", c->conf->state_file, msg);
    else
        log_info("state file %s: %s", c->conf->state_file, msg);
}

/*
 * Upgrade successor: start backends with the readiness the old process
 * routed by (upgrade_carry), not PENDING, so the first request served here
 * finds the backends the old process was sending traffic to. A plain start
 * has no such text: its checked backends start PENDING.
 */
static void restore_health(struct lifecycle *c)
{
    char msg[512];
    int fd = inherit_health(), rc;

    if (fd < 0)
        return;
    rc = state_load_health_fd(c->model, fd, msg, sizeof(msg));
    close(fd);
    if (rc < 0)
        log_warn("upgrade: readiness of the old process ignored (checked backends start "
                 "PENDING): %s",
                 msg);
    else
        log_info("upgrade: %s", msg);
}

/*
 * The workers are gone: run the modules' on_shutdown hooks and flush state
 * and logs within what is left of the deadline, then the summary line.
 * Exit status 1 when anything was cut short.
 */
static int finish_shutdown(struct lifecycle *c)
{
    unsigned inflight = 0, aborted = 0, tunnels = 0, handed = 0;
    uint64_t t_workers = veer_now_us(), deadline;

    for (unsigned i = 0; i < c->nworkers; i++) {
        worker_join(c->workers[i]);
        inflight += c->workers[i]->sd.inflight;
        aborted += c->workers[i]->sd.aborted;
        tunnels += c->workers[i]->sd.tunnels;
    }
    c->joined = true;
    if (c->shutdown_start_us == 0)
        return 1;
    log_info("in-flight work done in %.1f ms; upstream connections closed",
             (double)(t_workers - c->shutdown_start_us) / 1000.0);
    deadline = c->shutdown_start_us + (uint64_t)conf_now(c)->timeouts.shutdown_ms * 1000;
    admin_stop();
    module_shutdown_all(deadline);
    if (control_owns_state())
        control_save_state();
    persist_stop();
    log_info("modules, state and logs flushed in %.1f ms",
             (double)(veer_now_us() - t_workers) / 1000.0);
    for (unsigned i = 0; i < c->nworkers; i++)
        handed += c->workers[i]->handed_over;
    log_info("shutdown summary: in_flight=%u completed=%u aborted=%u tunnels_closed=%u "
             "handed_over=%u total_ms=%.1f",
             inflight, inflight >= aborted ? inflight - aborted : 0, aborted, tunnels, handed,
             (double)(veer_now_us() - c->shutdown_start_us) / 1000.0);
    return c->aborted || aborted ? 1 : 0;
}

/*
 * The control thread (this one) answers the admin socket: a shift must not
 * wait for a time slice behind busy workers. Nice values are per thread on
 * Linux, and the workers already exist, so only this thread gains. Without
 * CAP_SYS_NICE it stays as it is.
 */
static void raise_control_priority(void)
{
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), CONTROL_NICE) < 0)
        log_debug("control thread priority unchanged: %s", strerror(errno));
}

static int run(struct lifecycle *c)
{
    char err[512];
    int *fds;
    unsigned n = (unsigned)c->conf->workers;
    uint64_t t0 = veer_now_us();

    lc_self = c;
    control_set_upgrade(upgrade_now);
    inherit_init();
    raise_nofile(c->conf);
    veer_nworkers = n;
    c->model = model_from_conf(c->conf);
    /* Readiness first: an upgrade's text recreates discovered backends, whose state then applies.
     */
    restore_health(c);
    restore_state(c);
    routing_init(n, routing_build(c->model));
    if (audit_open(c->conf->audit_log, err, sizeof(err)) < 0) {
        log_err("audit log: %s", err);
        return 1;
    }
    persist_start(c->conf->state_file, audit_fd());
    if (module_init_all(c->conf) < 0)
        return 1;
    fds = listener_open_all(c->conf, n);
    if (fds == NULL)
        return 1;
    inherit_close_unclaimed();
    c->workers = veer_calloc(n, sizeof(*c->workers));
    c->nalloc = n;
    for (unsigned i = 0; i < n; i++) {
        c->workers[i] = worker_create(i, c->conf, fds + i * (unsigned)c->conf->nlistens);
        if (c->workers[i] == NULL) {
            free(fds);
            return 1;
        }
    }
    free(fds);
    c->base = event_base_new();
    if (control_init(c->base, c->conf, c->model, c->workers, n) < 0)
        return 1;
    control_set_show(show_execute);
    if (inherit_is_child())
        control_await_handoff(); /* the state is not ours until the old process hands over */
    if (cluster_start(c->base, c->conf, err, sizeof(err)) < 0) {
        log_err("cluster: %s", err);
        return 1;
    }
    /* An instance joining a fleet applies the fleet's state before it reports ready. */
    cluster_wait_sync(CLUSTER_SYNC_MS);
    if (admin_start(c->base, c->conf) < 0 ||
        adminhttp_start(c->base, c->conf, c->model, c->workers, n) < 0)
        return 1;
    if (inherit_is_child())
        admin_pause(); /* served once the old process hands over (handoff_cb) */
    c->sigterm = evsignal_new(c->base, SIGTERM, signal_cb, c);
    c->sigint = evsignal_new(c->base, SIGINT, signal_cb, c);
    c->sighup = evsignal_new(c->base, SIGHUP, signal_cb, c);
    c->sigusr1 = evsignal_new(c->base, SIGUSR1, signal_cb, c);
    c->sigusr2 = evsignal_new(c->base, SIGUSR2, signal_cb, c);
    event_add(c->sigterm, NULL);
    event_add(c->sigint, NULL);
    event_add(c->sighup, NULL);
    event_add(c->sigusr1, NULL);
    event_add(c->sigusr2, NULL);
    for (unsigned i = 0; i < n; i++) {
        if (worker_start(c->workers[i]) != VEER_OK) {
            c->nworkers = i;
            begin_shutdown(c, "start-up failure");
            c->aborted = true;
            break;
        }
        c->nworkers = i + 1;
    }
    if (!c->aborted) {
        char ready[64];

        raise_control_priority();

        log_info("veer %s ready: %u workers, %d pools, started in %.1f ms (pid %d)", VEER_VERSION,
                 n, c->conf->npools, (double)(veer_now_us() - t0) / 1000.0, (int)getpid());
        snprintf(ready, sizeof(ready), "READY=1\nMAINPID=%d", (int)getpid());
        sd_notify_send(ready);
        upgrade_child_ready(c->base, c->workers, n, handoff_cb);
    }
    event_base_dispatch(c->base);
    return finish_shutdown(c);
}

static void cleanup(struct lifecycle *c)
{
    struct veer_conf *current;

    for (unsigned i = 0; i < c->nworkers && !c->joined; i++)
        worker_join(c->workers[i]);
    admin_stop();
    adminhttp_stop();
    /* Workers first: closing their connections may still post to the control plane. */
    for (unsigned i = 0; c->workers && i < c->nalloc; i++)
        worker_destroy(c->workers[i]);
    free(c->workers);
    current = (struct veer_conf *)control_conf();
    cluster_stop();
    control_shutdown(); /* frees the configurations a reload replaced */
    persist_stop();
    audit_close();
    upgrade_shutdown(); /* frees events: before their base */
    if (c->base) {
        /* A start-up failure may come before the signal events exist. */
        struct event *evs[] = {c->sigterm, c->sigint, c->sighup, c->sigusr1, c->sigusr2, c->watch};

        for (size_t i = 0; i < ARRAY_SIZE(evs); i++)
            if (evs[i])
                event_free(evs[i]);
        event_base_free(c->base);
    }
    routing_shutdown();
    model_free(c->model);
    conf_free(current ? current : c->conf);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    struct lifecycle c;
    const char *path = NULL;
    bool test_only = false;
    char err[1024];
    int opt, rc;

    memset(&c, 0, sizeof(c));
    while ((opt = getopt(argc, argv, "c:tdhv")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'd':
            log_threshold = LOG_DEBUG;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("veer %s\n", VEER_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    upgrade_remember_argv(argc, argv);
    c.conf = conf_load(path, err, sizeof(err));
    if (c.conf && tls_conf_prepare(c.conf, err, sizeof(err)) != VEER_OK) {
        conf_free(c.conf);
        c.conf = NULL;
    }
    if (c.conf == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        printf("%s: configuration ok\n", path);
        conf_free(c.conf);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = run(&c);
    cleanup(&c);
    return rc;
}
