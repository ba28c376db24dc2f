/*
 * manyload: the load generator of bench/many_clients (no dependencies but libc; epoll and a
 * timerfd directly, one thread).
 *
 *   manyload --port PORT --conns N --rate R --duration S [--warmup S] [--idle S]
 *            [--base-idle S] [--settle S] [--pid PID] [--seed N] [--timeout S] [--out FILE]
 *
 * Phases, in order (each one measured on the proxy process tree PID when --pid is given: CPU
 * time from /proc/<pid>/task/<tid>/schedstat, which is utime + stime in ns, and context
 * switches, i.e. how often its threads went to sleep and woke up again):
 *   base_idle  BASE_IDLE s with no client connection at all (the proxy's own timers)
 *   open       N keep-alive connections to 127.0.0.1:PORT, at most 128 connects under way at
 *              a time; each sends one request ("GET / HTTP/1.1") as soon as it is connected
 *              and reads the whole response, so the proxy holds N connections that have each
 *              served a request (not half-open ones waiting for a first request head)
 *   settle     SETTLE s with the N connections open and no request, not counted as idle: the
 *              proxy may still be giving back what the opening burst took (veer's reclaim
 *              closes surplus upstream connections and trims buffers over a few seconds)
 *   idle       IDLE s with the N connections open and no request: whatever the proxy does
 *              per idle connection on timers shows up here
 *   warmup     WARMUP s of load as below, not recorded
 *   load       DURATION s of load: requests at a fixed total rate R, request i scheduled at
 *              t0 + i/R, each on a connection chosen at random among the N (another one is
 *              drawn when the chosen one still waits for a response; after 16 draws the
 *              request queues behind one). Latency runs from the scheduled time to the last
 *              byte of the response, so a late generator or a stalled proxy is counted in
 *              full (no coordinated omission). The proxy's CPU is read when the first
 *              measured request is due and again once the last one is answered.
 * A connection the proxy closes is counted (closed_idle, or an error if a request was on it)
 * and not reopened. Every response must be a complete 200.
 *
 * Output: one JSON object on stdout (or in FILE): counts, latency percentiles (nearest rank,
 * ms) from the scheduled time and from the actual send, the generator's own lateness (send -
 * scheduled), CPU per phase, per-thread CPU of the
 * idle phase. Exit 0 when every request got a 200, 3 when some failed, 1 on setup errors.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#define REQ                  "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: veer-manyload\r\n\r\n"
#define CONN_BUF             2048
#define QCAP                 8
#define MAX_PENDING_CONNECTS 128
#define MAX_THREADS          512

enum cstate { C_CONNECTING, C_READY, C_DEAD };

struct conn {
    int fd;
    enum cstate st;
    bool busy;       /* a request is on the wire, its response not complete */
    bool want_out;   /* EPOLLOUT registered */
    uint32_t sent;   /* bytes of REQ written of the current request */
    uint32_t len;    /* bytes in buf */
    int64_t q[QCAP]; /* scheduled times (ns) of the requests for this connection, FIFO;
                        q[qh] is the one on the wire when busy; -1: the opening request */
    bool qrec[QCAP]; /* recorded (measured phase) */
    int64_t sent_at; /* when the request on the wire was sent (ns) */
    uint8_t qh, qn;
    char buf[CONN_BUF];
};

static struct conn *conns;
static int nconns, port, epfd, tfd;
static double rate = 2000, duration = 20, warmup = 3, idle_s = 60, base_idle = 10, settle = 10,
              timeout_s = 10;
static int proxy_pid;
static uint64_t rng = 88172645463325252ull;

/* counters */
static uint64_t n_sched, n_ok, n_err, n_non200, n_closed_idle, n_queued, n_open_failed;
static uint64_t n_rec_sched, n_rec_done;
static int64_t *lat_ns, *lag_ns, *svc_ns;
static size_t nlat, nlag, nsvc, cap_rec;
static int ready_conns, pending_connects, opened_ok;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t xrand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *what)
{
    fprintf(stderr, "manyload: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* --- CPU of the proxy's process tree ------------------------------------------------------- */

struct tsample {
    int tid;
    char comm[32];
    uint64_t ns, vcs, nvcs;
};

struct sample {
    int n;
    struct tsample t[MAX_THREADS];
    uint64_t ns, vcs, nvcs;
};

static int read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return -1;
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    return (int)n;
}

static void sample_task(struct sample *s, int pid, int tid)
{
    char path[128], buf[2048], *p;
    struct tsample *t;

    if (s->n >= MAX_THREADS)
        return;
    t = &s->t[s->n];
    memset(t, 0, sizeof(*t));
    t->tid = tid;
    snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", pid, tid);
    if (read_file(path, buf, sizeof(buf)) < 0)
        return;
    t->ns = strtoull(buf, NULL, 10);
    snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", pid, tid);
    if (read_file(path, t->comm, sizeof(t->comm)) > 0)
        t->comm[strcspn(t->comm, "\n")] = 0;
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
    if (read_file(path, buf, sizeof(buf)) > 0) {
        if ((p = strstr(buf, "\nvoluntary_ctxt_switches:")))
            t->vcs = strtoull(p + 25, NULL, 10);
        if ((p = strstr(buf, "\nnonvoluntary_ctxt_switches:")))
            t->nvcs = strtoull(p + 28, NULL, 10);
    }
    s->ns += t->ns;
    s->vcs += t->vcs;
    s->nvcs += t->nvcs;
    s->n++;
}

static int ppid_of(int pid)
{
    char path[64], buf[1024], *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (read_file(path, buf, sizeof(buf)) < 0 || !(p = strrchr(buf, ')')))
        return -1;
    return atoi(p + 4); /* ") S PPID" */
}

static void sample_proc(struct sample *s, int pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;

    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    if (!(d = opendir(path)))
        return;
    while ((e = readdir(d)))
        if (isdigit((unsigned char)e->d_name[0]))
            sample_task(s, pid, atoi(e->d_name));
    closedir(d);
}

/* PID and its children (nginx's workers). */
static void sample_tree(struct sample *s)
{
    DIR *d;
    struct dirent *e;

    memset(s, 0, sizeof(*s));
    if (proxy_pid <= 0)
        return;
    sample_proc(s, proxy_pid);
    if (!(d = opendir("/proc")))
        return;
    while ((e = readdir(d)))
        if (isdigit((unsigned char)e->d_name[0]) && ppid_of(atoi(e->d_name)) == proxy_pid)
            sample_proc(s, atoi(e->d_name));
    closedir(d);
}

static void print_phase(FILE *o, const char *name, const struct sample *a, const struct sample *b,
                        double secs, bool last)
{
    fprintf(o,
            "  \"%s\": {\"seconds\": %.3f, \"cpu_s\": %.6f, \"cpu_s_per_min\": %.4f, "
            "\"wakeups\": %" PRIu64 ", \"wakeups_per_s\": %.1f, \"involuntary_switches\": %" PRIu64
            "}%s\n",
            name, secs, (double)(b->ns - a->ns) / 1e9,
            secs > 0 ? (double)(b->ns - a->ns) / 1e9 * 60.0 / secs : 0.0, b->vcs - a->vcs,
            secs > 0 ? (double)(b->vcs - a->vcs) / secs : 0.0, b->nvcs - a->nvcs, last ? "" : ",");
}

/* --- connections --------------------------------------------------------------------------- */

static void set_events(struct conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - conns)};

    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->want_out = out;
}

static void conn_dead(struct conn *c, bool error)
{
    if (c->st == C_DEAD)
        return;
    if (c->st == C_CONNECTING) {
        pending_connects--;
        n_open_failed++;
    } else {
        ready_conns--;
    }
    /* requests queued on it fail */
    for (int i = 0; i < c->qn; i++)
        if (c->q[(c->qh + i) % QCAP] >= 0)
            n_err++;
    if (!error && c->qn == 0)
        n_closed_idle++;
    c->qn = 0;
    c->busy = false;
    c->st = C_DEAD;
    close(c->fd);
    c->fd = -1;
}

static void conn_open(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(c - conns)};
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->st = C_CONNECTING;
    c->want_out = true;
    c->len = c->sent = 0;
    c->qh = c->qn = 0;
    pending_connects++;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl add");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
        conn_dead(c, true);
}

/* Put the head of c's queue on the wire. */
static void conn_send(struct conn *c)
{
    int64_t now;
    ssize_t n;

    if (!c->busy) {
        c->busy = true;
        c->sent = 0;
        c->len = 0;
        now = now_ns();
        c->sent_at = now;
        if (c->q[c->qh] >= 0 && c->qrec[c->qh] && nlag < cap_rec)
            lag_ns[nlag++] = now - c->q[c->qh];
    }
    while (c->sent < sizeof(REQ) - 1) {
        n = send(c->fd, REQ + c->sent, sizeof(REQ) - 1 - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->want_out)
                    set_events(c, true);
                return;
            }
            conn_dead(c, true);
            return;
        }
        c->sent += (uint32_t)n;
    }
    if (c->want_out)
        set_events(c, false);
}

static void enqueue(struct conn *c, int64_t sched, bool rec)
{
    int slot = (c->qh + c->qn) % QCAP;

    c->q[slot] = sched;
    c->qrec[slot] = rec;
    c->qn++;
    if (!c->busy)
        conn_send(c);
}

/* A response is complete in c->buf: returns its status, or 0 while incomplete, -1 if broken. */
static int response_complete(struct conn *c)
{
    char *end, *p, *hdr = c->buf;
    size_t hlen;
    long cl = -1;
    bool chunked = false;
    int status;

    c->buf[c->len] = 0;
    if (!(end = strstr(hdr, "\r\n\r\n")))
        return c->len >= CONN_BUF - 1 ? -1 : 0;
    hlen = (size_t)(end - hdr) + 4;
    if (strncmp(hdr, "HTTP/1.", 7) != 0)
        return -1;
    status = atoi(hdr + 9);
    for (p = strstr(hdr, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "content-length:", 15) == 0)
            cl = strtol(p + 17, NULL, 10);
        else if (strncasecmp(p + 2, "transfer-encoding:", 18) == 0 && strstr(p + 2, "chunked") &&
                 strstr(p + 2, "chunked") < strstr(p + 2, "\r\n"))
            chunked = true;
    }
    if (chunked) {
        if (c->len - hlen >= 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0)
            return status;
        return c->len >= CONN_BUF - 1 ? -1 : 0;
    }
    if (cl < 0)
        cl = 0;
    if (hlen + (size_t)cl > CONN_BUF - 1)
        return -1;
    return c->len >= hlen + (size_t)cl ? status : 0;
}

static void on_readable(struct conn *c)
{
    ssize_t n;
    int st;

    for (;;) {
        n = recv(c->fd, c->buf + c->len, CONN_BUF - 1 - c->len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_dead(c, c->busy);
            return;
        }
        if (n < 0)
            return;
        if (!c->busy) { /* bytes nobody asked for */
            conn_dead(c, true);
            n_err++;
            return;
        }
        c->len += (uint32_t)n;
        st = response_complete(c);
        if (st == 0)
            continue;
        /* one response done */
        {
            int64_t sched = c->q[c->qh], done = now_ns();
            bool rec = c->qrec[c->qh];

            if (st == 200) {
                if (sched >= 0)
                    n_ok++;
            } else {
                n_err++;
                if (st > 0)
                    n_non200++;
            }
            if (sched >= 0 && rec) {
                n_rec_done++;
                if (st == 200 && nlat < cap_rec)
                    lat_ns[nlat++] = done - sched;
                if (st == 200 && nsvc < cap_rec)
                    svc_ns[nsvc++] = done - c->sent_at;
            }
            if (sched < 0 && st == 200)
                opened_ok++;
            c->qh = (uint8_t)((c->qh + 1) % QCAP);
            c->qn--;
            c->busy = false;
            c->len = 0;
            if (st != 200) {
                conn_dead(c, true);
                return;
            }
            if (c->qn > 0)
                conn_send(c);
            return;
        }
    }
}

static void on_event(struct conn *c, uint32_t ev)
{
    if (c->st == C_DEAD)
        return;
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
            conn_dead(c, true);
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        c->st = C_READY;
        pending_connects--;
        ready_conns++;
        set_events(c, false);
        enqueue(c, -1, false); /* the opening request */
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
    if (c->st != C_DEAD && (ev & EPOLLOUT) && c->busy)
        conn_send(c);
}

/* --- the loop ------------------------------------------------------------------------------ */

static void arm(int64_t at)
{
    struct itimerspec it = {.it_value = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000}};

    if (it.it_value.tv_sec == 0 && it.it_value.tv_nsec == 0)
        it.it_value.tv_nsec = 1;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL) < 0)
        die("timerfd_settime");
}

/* Run the loop until `until` (ns, monotonic), waking at `wake` too; returns on either. */
static void poll_once(int64_t wake)
{
    struct epoll_event evs[256];
    int n;

    arm(wake);
    n = epoll_wait(epfd, evs, 256, -1);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 == UINT32_MAX) {
            uint64_t x;
            ssize_t r = read(tfd, &x, sizeof(x));
            (void)r;
            continue;
        }
        on_event(&conns[evs[i].data.u32], evs[i].events);
    }
}

static void run_idle_until(int64_t until)
{
    while (now_ns() < until)
        poll_once(until);
}

/* Pick a connection for a request: a random ready one that is not busy, else a ready one. */
static struct conn *pick(void)
{
    struct conn *fallback = NULL;

    if (ready_conns == 0)
        return NULL;
    for (int tries = 0; tries < 64; tries++) {
        struct conn *c = &conns[xrand() % (uint64_t)nconns];

        if (c->st != C_READY || c->qn >= QCAP)
            continue;
        if (!c->busy && tries < 16)
            return c;
        if (!fallback || c->qn < fallback->qn)
            fallback = c;
        if (tries >= 16)
            break;
    }
    if (fallback)
        n_queued++;
    return fallback;
}

/* Paced load from t0 for secs; requests recorded when rec. Returns the next schedule index time. */
static void run_load(int64_t t0, double secs, bool rec)
{
    int64_t end = t0 + (int64_t)(secs * 1e9);
    double step = 1e9 / rate;
    uint64_t i = 0;

    for (;;) {
        int64_t next = t0 + (int64_t)((double)i * step), now = now_ns();

        if (next >= end)
            break;
        while (next <= now && next < end) {
            struct conn *c = pick();

            n_sched++;
            if (rec)
                n_rec_sched++;
            if (c)
                enqueue(c, next, rec);
            else
                n_err++;
            i++;
            next = t0 + (int64_t)((double)i * step);
        }
        if (next >= end)
            break;
        poll_once(next);
    }
}

static int outstanding(void)
{
    int n = 0;

    for (int i = 0; i < nconns; i++)
        if (conns[i].st == C_READY)
            n += conns[i].qn;
    return n;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, size_t n, double p)
{
    size_t k;

    if (n == 0)
        return NAN;
    k = (size_t)ceil(p * (double)n);
    if (k < 1)
        k = 1;
    return (double)v[k - 1] / 1e6;
}

static void print_dist(FILE *o, const char *name, int64_t *v, size_t n, bool last)
{
    qsort(v, n, sizeof(*v), cmp64);
    if (n == 0) {
        fprintf(o, "  \"%s\": null%s\n", name, last ? "" : ",");
        return;
    }
    fprintf(o,
            "  \"%s\": {\"n\": %zu, \"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"p999\": %.4f, "
            "\"max\": %.4f}%s\n",
            name, n, pct(v, n, 0.50), pct(v, n, 0.90), pct(v, n, 0.99), pct(v, n, 0.999),
            (double)v[n - 1] / 1e6, last ? "" : ",");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", 1, 0, 'p'},
        {"conns", 1, 0, 'c'},
        {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},
        {"idle", 1, 0, 'i'},
        {"base-idle", 1, 0, 'b'},
        {"pid", 1, 0, 'P'},
        {"seed", 1, 0, 's'},
        {"timeout", 1, 0, 't'},
        {"out", 1, 0, 'o'},
        {"settle", 1, 0, 'S'},
        {0, 0, 0, 0},
    };
    static struct sample s_b0, s_b1, s_s0, s_s1, s_i0, s_i1, s_l0, s_l1;
    const char *out = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    int64_t t_open0, t_open1, t_b0, t_b1, t_s0, t_s1, t_i0, t_i1, t_l0, t_l1, t_w0, deadline;
    struct rusage ru0, ru1;
    int opt, next_open = 0;
    FILE *o = stdout;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            duration = atof(optarg);
            break;
        case 'w':
            warmup = atof(optarg);
            break;
        case 'i':
            idle_s = atof(optarg);
            break;
        case 'b':
            base_idle = atof(optarg);
            break;
        case 'P':
            proxy_pid = atoi(optarg);
            break;
        case 's':
            rng = strtoull(optarg, NULL, 10) * 2654435761ull + 1;
            break;
        case 't':
            timeout_s = atof(optarg);
            break;
        case 'o':
            out = optarg;
            break;
        case 'S':
            settle = atof(optarg);
            break;
        default:
            fprintf(stderr, "usage: see the comment at the top of manyload.c\n");
            return 1;
        }
    }
    if (port <= 0 || nconns <= 0 || rate <= 0 || duration <= 0 || warmup < 0 || idle_s < 0 ||
        base_idle < 0 || settle < 0) {
        fprintf(stderr, "manyload: --port, --conns, --rate, --duration are required and > 0\n");
        return 1;
    }
    {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
            if (rl.rlim_cur < (rlim_t)nconns + 64) {
                fprintf(stderr, "manyload: fd limit %lu too low for %d connections\n",
                        (unsigned long)rl.rlim_cur, nconns);
                return 1;
            }
        }
    }
    cap_rec = (size_t)(rate * duration) + 16;
    lat_ns = calloc(cap_rec, sizeof(*lat_ns));
    lag_ns = calloc(cap_rec, sizeof(*lag_ns));
    svc_ns = calloc(cap_rec, sizeof(*svc_ns));
    conns = calloc((size_t)nconns, sizeof(*conns));
    if (!lat_ns || !lag_ns || !svc_ns || !conns)
        die("calloc");
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    if ((tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
        die("timerfd_create");
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev) < 0)
        die("epoll_ctl timerfd");

    /* base_idle: no client connection */
    sample_tree(&s_b0);
    t_b0 = now_ns();
    run_idle_until(t_b0 + (int64_t)(base_idle * 1e9));
    t_b1 = now_ns();
    sample_tree(&s_b1);

    /* open */
    t_open0 = now_ns();
    deadline = t_open0 + (int64_t)(60 * 1e9);
    while (now_ns() < deadline) {
        while (next_open < nconns && pending_connects < MAX_PENDING_CONNECTS)
            conn_open(&conns[next_open++]);
        if (next_open == nconns && pending_connects == 0 && outstanding() == 0)
            break;
        poll_once(now_ns() + 100000000);
    }
    t_open1 = now_ns();
    fprintf(stderr, "manyload: %d of %d connections open and answered in %.2f s\n", opened_ok,
            nconns, (double)(t_open1 - t_open0) / 1e9);
    sample_tree(&s_s0);
    t_s0 = now_ns();
    run_idle_until(t_s0 + (int64_t)(settle * 1e9));
    t_s1 = now_ns();
    sample_tree(&s_s1);

    /* idle */
    sample_tree(&s_i0);
    t_i0 = now_ns();
    run_idle_until(t_i0 + (int64_t)(idle_s * 1e9));
    t_i1 = now_ns();
    sample_tree(&s_i1);
    fprintf(stderr, "manyload: idle %.1f s: proxy CPU %.4f s, %d connections still open\n",
            (double)(t_i1 - t_i0) / 1e9, (double)(s_i1.ns - s_i0.ns) / 1e9, ready_conns);

    /* warmup, then load */
    t_w0 = now_ns() + 1000000;
    if (warmup > 0)
        run_load(t_w0, warmup, false);
    t_l0 = t_w0 + (int64_t)(warmup * 1e9);
    while (now_ns() < t_l0)
        poll_once(t_l0);
    sample_tree(&s_l0);
    getrusage(RUSAGE_SELF, &ru0);
    run_load(t_l0, duration, true);
    deadline = now_ns() + (int64_t)(timeout_s * 1e9);
    while (outstanding() > 0 && now_ns() < deadline)
        poll_once(now_ns() + 10000000);
    t_l1 = now_ns();
    sample_tree(&s_l1);
    getrusage(RUSAGE_SELF, &ru1);
    n_err += (uint64_t)outstanding(); /* no answer in time */

    if (out && !(o = fopen(out, "w")))
        die(out);
    fprintf(o, "{\n");
    fprintf(o,
            "  \"connections\": %d, \"opened\": %d, \"open_failed\": %" PRIu64
            ", \"open_seconds\": %.3f, \"open_at_end\": %d, \"closed_idle\": %" PRIu64 ",\n",
            nconns, opened_ok, n_open_failed, (double)(t_open1 - t_open0) / 1e9, ready_conns,
            n_closed_idle);
    fprintf(o,
            "  \"rate\": %.1f, \"duration_s\": %.3f, \"warmup_s\": %.3f, \"requests\": %" PRIu64
            ", \"ok\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"non200\": %" PRIu64
            ", \"queued_behind_another\": %" PRIu64 ",\n",
            rate, duration, warmup, n_sched, n_ok, n_err, n_non200, n_queued);
    fprintf(o, "  \"measured_requests\": %" PRIu64 ", \"measured_answered\": %" PRIu64 ",\n",
            n_rec_sched, n_rec_done);
    fprintf(o, "  \"loadgen_cpu_s\": %.4f,\n",
            (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
                     ru0.ru_stime.tv_sec) +
                (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                         ru0.ru_stime.tv_usec) /
                    1e6);
    print_dist(o, "latency_ms", lat_ns, nlat, false);
    print_dist(o, "from_send_ms", svc_ns, nsvc, false);
    print_dist(o, "send_lag_ms", lag_ns, nlag, false);
    fprintf(o, "  \"cpu_us_per_request\": %.3f,\n",
            n_rec_sched ? (double)(s_l1.ns - s_l0.ns) / 1e3 / (double)n_rec_sched : 0.0);
    fprintf(o, "  \"phases\": {\n");
    print_phase(o, "base_idle", &s_b0, &s_b1, (double)(t_b1 - t_b0) / 1e9, false);
    print_phase(o, "settle", &s_s0, &s_s1, (double)(t_s1 - t_s0) / 1e9, false);
    print_phase(o, "idle", &s_i0, &s_i1, (double)(t_i1 - t_i0) / 1e9, false);
    print_phase(o, "load", &s_l0, &s_l1, (double)(t_l1 - t_l0) / 1e9, true);
    fprintf(o, "  },\n  \"idle_threads\": [");
    for (int k = 0; k < s_i1.n; k++) {
        const struct tsample *b = &s_i1.t[k], *a = NULL;

        for (int j = 0; j < s_i0.n; j++)
            if (s_i0.t[j].tid == b->tid)
                a = &s_i0.t[j];
        fprintf(o, "%s\n    {\"tid\": %d, \"comm\": \"", k ? "," : "", b->tid);
        for (const char *p = b->comm; *p; p++)
            fputc(*p == '"' || *p == '\\' || (unsigned char)*p < 32 ? '_' : *p, o);
        fprintf(o, "\", \"cpu_ms\": %.3f, \"wakeups\": %" PRIu64 "}",
                a ? (double)(b->ns - a->ns) / 1e6 : (double)b->ns / 1e6,
                a ? b->vcs - a->vcs : b->vcs);
    }
    fprintf(o, "\n  ]\n}\n");
    if (o != stdout)
        fclose(o);
    return n_err ? 3 : 0;
}
