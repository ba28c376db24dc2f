/*
 * upgrade.c - binary upgrade on inherited sockets, with idle connections
 * handed over. See upgrade.h for the sequence.
 */
#include "upgrade.h"
#include "inherit.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* How long the new binary has to say READY. */
#define READY_TIMEOUT_MS 10000
/* How long a new binary that failed has to exit after SIGTERM before SIGKILL. */
#define STOP_GRACE_MS 2000
#define REAP_POLL_MS  20

static struct {
    char exe[PATH_MAX];
    char **argv;
    /* old side */
    int chan;
    struct event *ev, *timer;
    pid_t child;
    bool started, handed_over;
    struct event_base *base;
    /* a child that failed, being stopped (see reap_cb) */
    struct event *reap_ev;
    pid_t reap_pid;
    uint64_t kill_at_us;
    struct worker **workers;
    unsigned nworkers;
    int carry_fd; /* readiness for the next new binary (upgrade_carry), or -1 */
    void (*on_ready)(void);
    void (*on_failed)(const char *why);
    /* new side */
    struct event *adopt_ev;
    unsigned next_worker;
    void (*on_handoff)(bool go);
    bool handoff_done; /* GO or NO came (or the old process went away) */
} up = {.chan = -1, .carry_fd = -1};

void upgrade_remember_argv(int argc, char **argv)
{
    ssize_t n = readlink("/proc/self/exe", up.exe, sizeof(up.exe) - 1);

    /* The path as it is now: an upgrade replaces the file there with the new binary. */
    if (n > 0 && (size_t)n < sizeof(up.exe)) {
        up.exe[n] = '\0';
        if (strstr(up.exe, " (deleted)"))
            *strstr(up.exe, " (deleted)") = '\0';
    } else {
        snprintf(up.exe, sizeof(up.exe), "%s", argv[0]);
    }
    up.argv = argv;
    (void)argc;
}

bool upgrade_handed_over(void)
{
    return up.handed_over;
}

/* --- old side --------------------------------------------------------------------- */

static void stop_waiting(void)
{
    if (up.ev)
        event_free(up.ev);
    if (up.timer)
        event_free(up.timer);
    up.ev = up.timer = NULL;
}

/* Reap the stopped child without blocking; SIGKILL it once its grace is over. */
static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    int st;
    pid_t r = waitpid(up.reap_pid, &st, WNOHANG);

    (void)fd;
    (void)what;
    (void)arg;
    if (r == up.reap_pid || (r < 0 && errno != EINTR)) {
        event_free(up.reap_ev);
        up.reap_ev = NULL;
        up.reap_pid = 0;
        return;
    }
    if (up.kill_at_us && veer_now_us() >= up.kill_at_us) {
        log_warn("upgrade: pid %d did not exit on SIGTERM; killing it", (int)up.reap_pid);
        kill(up.reap_pid, SIGKILL);
        up.kill_at_us = 0;
    }
}

/* Kill and reap at once a child still being stopped (SIGKILL ends it promptly). */
static void reap_now(void)
{
    int st;

    if (up.reap_pid <= 0)
        return;
    kill(up.reap_pid, SIGKILL);
    while (waitpid(up.reap_pid, &st, 0) < 0 && errno == EINTR)
        ;
    event_free(up.reap_ev);
    up.reap_ev = NULL;
    up.reap_pid = 0;
}

/*
 * Stop a child that failed the upgrade: SIGTERM, then SIGKILL after
 * STOP_GRACE_MS, reaped from a timer. The control thread never waits for it:
 * a child that ignores SIGTERM must not stop the admin socket, the health
 * checks and the timers of the process that keeps serving.
 */
static void stop_child(pid_t pid)
{
    struct timeval tv = {0, REAP_POLL_MS * 1000};

    reap_now(); /* an earlier failed child, if still there */
    kill(pid, SIGTERM);
    up.reap_pid = pid;
    up.kill_at_us = veer_now_us() + (uint64_t)STOP_GRACE_MS * 1000;
    up.reap_ev = event_new(up.base, -1, EV_PERSIST, reap_cb, NULL);
    event_add(up.reap_ev, &tv);
}

/*
 * The new binary will not take over: tell it so (it must not take
 * decisions), stop it, and let this process carry on (on_failed thaws it).
 */
static void failed(const char *why)
{
    log_err("upgrade failed: %s; this process keeps serving", why);
    stop_waiting();
    if (up.chan >= 0) {
        (void)send(up.chan, "NO", 2, MSG_DONTWAIT | MSG_NOSIGNAL);
        close(up.chan);
    }
    up.chan = -1;
    if (up.child > 0)
        stop_child(up.child);
    up.child = 0;
    up.started = false;
    if (up.on_failed)
        up.on_failed(why);
}

static void ready_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    failed("the new binary did not report ready in time");
}

/* The new binary wrote READY (or died): hand over, or carry on. */
static void chan_cb(evutil_socket_t fd, short what, void *arg)
{
    char buf[16];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        failed("the new binary exited before it was ready (see its log)");
        return;
    }
    buf[n] = '\0';
    if (strncmp(buf, "READY", 5) != 0) {
        failed("unexpected message from the new binary");
        return;
    }
    /* The handoff: from GO on the new process owns the state; this one never writes again. */
    if (send(fd, "GO", 2, MSG_DONTWAIT | MSG_NOSIGNAL) != 2) {
        char why[160];

        snprintf(why, sizeof(why), "cannot tell the new binary to take over: %s", strerror(errno));
        failed(why);
        return;
    }
    stop_waiting();
    up.handed_over = true;
    log_info("upgrade: new binary pid %d is ready; handing over", (int)up.child);
    for (unsigned i = 0; i < up.nworkers; i++) {
        struct wmsg *m = veer_calloc(1, sizeof(*m));

        m->type = WMSG_HANDOVER;
        m->ticket = (uint64_t)up.chan;
        worker_send(up.workers[i], m);
    }
    if (up.on_ready)
        up.on_ready();
}

static void carry_close(void)
{
    if (up.carry_fd >= 0)
        close(up.carry_fd);
    up.carry_fd = -1;
}

/*
 * Old side: text (the old process's readiness) goes to the next new binary
 * in a memory file it inherits, named "@health" in VEER_INHERIT (a binary
 * that predates it closes it as an unclaimed set). Without memfd the new
 * binary starts its checked backends PENDING, as after a restart (logged).
 */
void upgrade_carry(const char *text)
{
    size_t len = strlen(text), off = 0;

    carry_close();
    up.carry_fd = memfd_create("veer-health", MFD_CLOEXEC);
    while (up.carry_fd >= 0 && off < len) {
        ssize_t w = write(up.carry_fd, text + off, len - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (up.carry_fd < 0 || off < len || lseek(up.carry_fd, 0, SEEK_SET) < 0) {
        log_warn("upgrade: cannot hand readiness over (%s): the new binary starts its checked "
                 "backends PENDING",
                 strerror(errno));
        carry_close();
    }
}

/* "VEER_INHERIT=@admin=FD[;@health=FD];ADDR=FD,FD,...;..." naming every fd the new binary takes. */
static char *inherit_env(int admin_fd, int **fds_out, unsigned *nfds)
{
    size_t cap = 256, len;
    char *s = veer_malloc(cap);
    int *fds = veer_malloc(sizeof(int) * 1024);
    unsigned nf = 0;

    len = (size_t)snprintf(s, cap, "VEER_INHERIT=@admin=%d", admin_fd);
    fds[nf++] = admin_fd;
    if (up.carry_fd >= 0) {
        len += (size_t)snprintf(s + len, cap - len, ";@health=%d", up.carry_fd);
        fds[nf++] = up.carry_fd;
    }
    for (unsigned l = 0; up.nworkers && l < up.workers[0]->nlisteners; l++) {
        const char *addr = up.workers[0]->listeners[l]->lc->addr.text;
        char part[96];
        int n = snprintf(part, sizeof(part), ";%s=", addr);

        s = veer_realloc(s, cap = cap + (size_t)n + 16 * up.nworkers + 16);
        memcpy(s + len, part, (size_t)n + 1);
        len += (size_t)n;
        for (unsigned w = 0; w < up.nworkers && nf < 1024; w++) {
            int fd = up.workers[w]->listeners[l]->fd;

            len += (size_t)snprintf(s + len, cap - len, "%s%d", w ? "," : "", fd);
            fds[nf++] = fd;
        }
    }
    *fds_out = fds;
    *nfds = nf;
    return s;
}

/* The environment of the new binary: ours, without stale VEER_ variables, plus two. */
static char **child_env(char *inherit, char *chan)
{
    size_t n = 0, k = 0;
    char **env;

    while (environ[n])
        n++;
    env = veer_calloc(n + 3, sizeof(*env));
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "VEER_INHERIT=", 13) != 0 &&
            strncmp(environ[i], "VEER_UPGRADE_FD=", 16) != 0)
            env[k++] = environ[i];
    env[k++] = inherit;
    env[k++] = chan;
    env[k] = NULL;
    return env;
}

int upgrade_start(struct event_base *base, struct worker **workers, unsigned nworkers, int admin_fd,
                  void (*on_ready)(void), void (*on_failed)(const char *why), char *msg, size_t len)
{
    struct timeval tv = {READY_TIMEOUT_MS / 1000, 0};
    char chanvar[40], *inherit, **env;
    int sv[2], *fds;
    unsigned nfds;
    pid_t pid;

    if (up.started) {
        snprintf(msg, len, "an upgrade is already under way");
        carry_close();
        return VEER_ERROR;
    }
    if (access(up.exe, X_OK) < 0) {
        snprintf(msg, len, "cannot run %s: %s", up.exe, strerror(errno));
        carry_close();
        return VEER_ERROR;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(msg, len, "socketpair: %s", strerror(errno));
        carry_close();
        return VEER_ERROR;
    }
    up.workers = workers;
    up.nworkers = nworkers;
    up.on_ready = on_ready;
    up.on_failed = on_failed;
    up.base = base;
    inherit = inherit_env(admin_fd, &fds, &nfds);
    snprintf(chanvar, sizeof(chanvar), "VEER_UPGRADE_FD=%d", sv[1]);
    env = child_env(inherit, chanvar);
    pid = fork();
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        for (unsigned i = 0; i < nfds; i++)
            fcntl(fds[i], F_SETFD, 0);
        fcntl(sv[1], F_SETFD, 0);
        execve(up.exe, up.argv, env);
        _exit(127);
    }
    free(env);
    free(inherit);
    free(fds);
    close(sv[1]);
    carry_close(); /* the child has its copy; a later attempt renders its own */
    if (pid < 0) {
        close(sv[0]);
        snprintf(msg, len, "fork: %s", strerror(errno));
        return VEER_ERROR;
    }
    up.child = pid;
    up.chan = sv[0];
    up.started = true;
    up.ev = event_new(base, up.chan, EV_READ | EV_PERSIST, chan_cb, NULL);
    up.timer = evtimer_new(base, ready_timeout_cb, NULL);
    event_add(up.ev, NULL);
    evtimer_add(up.timer, &tv);
    snprintf(msg, len, "started %s as pid %d", up.exe, (int)pid);
    log_info("upgrade: %s", msg);
    return VEER_OK;
}

/* --- new side ------------------------------------------------------------------------- */

static void handoff(bool go)
{
    up.handoff_done = true;
    if (up.on_handoff)
        up.on_handoff(go);
}

/*
 * From the old process: "GO" (it wrote its last; the state is ours), "NO"
 * (the upgrade was abandoned), then connections, each to a worker, round
 * robin, as a new session.
 */
static void adopt_cb(evutil_socket_t chan, short what, void *arg)
{
    for (;;) {
        struct handover_msg hm;
        struct msghdr mh;
        struct iovec iov = {&hm, sizeof(hm)};
        char ctl[CMSG_SPACE(sizeof(int))];
        struct cmsghdr *c;
        ssize_t n;
        int fd = -1;

        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl;
        mh.msg_controllen = sizeof(ctl);
        n = recvmsg(chan, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            /* The old process is done with us (or gone before handing over: it wrote its last). */
            event_free(up.adopt_ev);
            up.adopt_ev = NULL;
            inherit_close_chan();
            if (!up.handoff_done) {
                log_warn("upgrade: the old process went away before handing over; taking over");
                handoff(true);
            }
            return;
        }
        if (n == 2 && (memcmp(&hm, "GO", 2) == 0 || memcmp(&hm, "NO", 2) == 0)) {
            if (!up.handoff_done)
                handoff(memcmp(&hm, "GO", 2) == 0);
            continue;
        }
        c = CMSG_FIRSTHDR(&mh);
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
        if (fd < 0 || (size_t)n != sizeof(hm)) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        worker_adopt(up.workers[up.next_worker++ % up.nworkers], fd, &hm);
    }
}

void upgrade_child_ready(struct event_base *base, struct worker **workers, unsigned nworkers,
                         void (*on_handoff)(bool go))
{
    if (inherit_chan() < 0)
        return;
    up.workers = workers;
    up.nworkers = nworkers;
    up.on_handoff = on_handoff;
    if (send(inherit_chan(), "READY", 5, MSG_NOSIGNAL) != 5) {
        char no[2];

        log_err("upgrade: cannot tell the old process we are ready: %s", strerror(errno));
        /* It gave up on us (NO, and a SIGTERM follows), or went away after writing its last. */
        if (recv(inherit_chan(), no, sizeof(no), MSG_DONTWAIT) == 2 && memcmp(no, "NO", 2) == 0) {
            handoff(false);
        } else {
            log_warn("upgrade: the old process went away before handing over; taking over");
            handoff(true);
        }
        return;
    }
    up.adopt_ev = event_new(base, inherit_chan(), EV_READ | EV_PERSIST, adopt_cb, NULL);
    event_add(up.adopt_ev, NULL);
}

void upgrade_shutdown(void)
{
    stop_waiting();
    reap_now();
    if (up.adopt_ev)
        event_free(up.adopt_ev);
    up.adopt_ev = NULL;
    if (up.chan >= 0)
        close(up.chan);
    up.chan = -1;
    carry_close();
    inherit_shutdown();
}
