/*
 * shiftload: the load generator and shift driver of bench/shift (no dependencies but libc and
 * pthreads; epoll directly).
 *
 *   shiftload --port PORT --mode veer|haproxy --admin SOCKET --out DIR
 *             [--clients 64] [--threads 1] [--shifts 100] [--interval-ms 100]
 *             [--warmup-ms 1000] [--steady-ms 2000] [--pool api] [--groups blue,green] [--rt]
 *
 * CLIENTS keep-alive connections to 127.0.0.1:PORT, spread over THREADS epoll threads, each send
 * "GET / HTTP/1.1" back to back (one request outstanding per connection). Every request is
 * recorded: send time and completion time (CLOCK_MONOTONIC ns, relative to the start), status,
 * which group answered (the response's X-Backend header, matched against --groups) and an error
 * code for requests that got no complete response.
 *
 * A driver thread waits WARMUP + STEADY ms, then does SHIFTS full shifts, one every INTERVAL ms,
 * alternately to the second group and back to the first. Each shift opens the admin socket (unix),
 * writes one line and reads the whole reply:
 *   veer:    "shift POOL blue=0 green=100\n"; the reply ends with an empty line ("\n\n") and
 *            must start with "OK" ("OK gen=<n> applied_us=<t> [warm_us=<t>]");
 *   haproxy: "set server POOL/green weight 100; set server POOL/blue weight 0\n" on the stats
 *            socket (non-interactive mode: the commands run in order, then HAProxy closes); the
 *            group gaining traffic is raised first so that no instant has both at weight 0 (that
 *            would be a 503, not a shift). Any non-blank output is an error.
 * t_send is taken just before the write, t_ack when the whole reply has been read. With --rt the
 * driver thread runs SCHED_FIFO (when allowed), so that its own wake-up on the reply is not
 * delayed behind the busy load threads; the proxies are left as they are. A failed shift
 * ends the run (the load stops one interval later). INTERVAL ms after the last shift the load
 * stops: no request is sent after that, and those in flight get up to 2 s to finish.
 *
 * Output in DIR:
 *   requests.tsv  t_send_ns t_done_ns status group err   (group -1: none/unknown; err below)
 *   shifts.tsv    "# key value" lines (t_warm_end_ns, t_first_shift_ns, t_stop_ns, ...), then
 *                 i t_send_ns t_ack_ns old new ok gen applied_us warm_us reply
 *                 (gen, applied_us, warm_us are -1 when absent; reply is the first line of the
 *                 reply, or the error, with tabs and newlines replaced by spaces)
 * A one-line summary goes to stderr. Exit 0 when every shift got its expected reply, 3 when a
 * shift failed, 1 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
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
#include <sys/socket.h>
#include <sys/un.h>

#define BUF_BYTES        16384
#define MAX_REPLY        4096
#define INFLIGHT_NS      (10LL * 1000000000) /* a request unanswered this long is a failure */
#define DRAIN_NS         (2LL * 1000000000)  /* after the stop, in-flight requests get this long */
#define RETRY_NS         (10LL * 1000000)    /* backoff after a failed connect */
#define ADMIN_TIMEOUT_MS 5000

enum err { E_OK, E_CONNECT, E_WRITE, E_READ, E_EOF, E_PARSE, E_TIMEOUT, E_STOPPED };

enum state {
    S_IDLE,       /* no request outstanding (stopping) */
    S_RETRY,      /* closed; reconnect at t_retry */
    S_HEAD,       /* waiting for the response head */
    S_BODY_CL,    /* Content-Length body, `remaining` bytes to go */
    S_BODY_EOF,   /* body delimited by the connection close */
    S_CHUNK_SIZE, /* chunked: waiting for a chunk-size line */
    S_CHUNK_DATA, /* chunked: `remaining` bytes of data + CRLF to go */
    S_CHUNK_TRAIL /* chunked: trailer lines until the empty one */
};

struct rec {
    int64_t t_send, t_done;
    int16_t status;
    int8_t group;
    uint8_t err;
};

struct lthread;

struct conn {
    int fd;
    enum state state;
    struct lthread *lt;
    int64_t t_send, t_retry;
    int status, group, close_after;
    long long remaining;
    size_t len;
    char buf[BUF_BYTES];
};

struct lthread {
    pthread_t tid;
    int epfd, nconn, inflight;
    struct conn *conns;
    struct rec *recs;
    size_t nrecs, caprecs;
};

struct shift {
    int64_t t_send, t_ack;
    int old, new, ok;
    long long gen, applied_us, warm_us;
    char reply[256];
};

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

static struct sockaddr_in target;
static int opt_port, opt_clients = 64, opt_threads = 1, opt_shifts = 100, opt_interval_ms = 100;
static int opt_warmup_ms = 1000, opt_steady_ms = 2000, opt_rt, mode_haproxy, driver_rt;
static const char *opt_admin, *opt_out, *opt_pool = "api";
static char group_name[2][64] = {"blue", "green"};

static int64_t t0;
static atomic_int stopping;
static int64_t t_stop, t_warm_end, t_first_shift;
static struct shift *shifts;
static int nshifts_done, shift_failed;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - t0;
}

static void sleep_until(int64_t t)
{
    struct timespec ts;
    int64_t abs_ns = t + t0;

    ts.tv_sec = abs_ns / 1000000000;
    ts.tv_nsec = abs_ns % 1000000000;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void die(const char *msg)
{
    fprintf(stderr, "shiftload: %s\n", msg);
    exit(1);
}

static void record(struct lthread *lt, int64_t t_send, int64_t t_done, int status, int group,
                   enum err err)
{
    if (lt->nrecs == lt->caprecs) {
        size_t cap = lt->caprecs ? lt->caprecs * 2 : 65536;
        struct rec *r = realloc(lt->recs, cap * sizeof(*r));

        if (r == NULL)
            die("out of memory");
        lt->recs = r;
        lt->caprecs = cap;
    }
    lt->recs[lt->nrecs++] =
        (struct rec){t_send, t_done, (int16_t)status, (int8_t)group, (uint8_t)err};
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(c->lt->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->len = 0;
}

/* The outstanding request failed: record it, close, reconnect at the next turn of the loop. */
static void conn_fail(struct conn *c, enum err err, int64_t retry_delay)
{
    int64_t t = now_ns();

    if (c->state != S_IDLE && c->state != S_RETRY) {
        record(c->lt, c->t_send, t, 0, -1, err);
        c->lt->inflight--;
    }
    conn_close(c);
    c->state = S_RETRY;
    c->t_retry = t + retry_delay;
}

static void conn_send(struct conn *c)
{
    ssize_t n;

    if (atomic_load_explicit(&stopping, memory_order_acquire)) {
        c->state = S_IDLE;
        return;
    }
    c->state = S_HEAD;
    c->lt->inflight++;
    c->t_send = now_ns();
    n = write(c->fd, REQUEST, sizeof(REQUEST) - 1);
    if (n != (ssize_t)(sizeof(REQUEST) - 1))
        conn_fail(c, E_WRITE, 0);
}

static void conn_open(struct conn *c)
{
    int one = 1, fd;
    struct epoll_event ev = {.events = EPOLLIN};

    if (atomic_load_explicit(&stopping, memory_order_acquire)) {
        c->state = S_IDLE;
        return;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0) {
        int64_t t = now_ns();

        if (fd >= 0)
            close(fd);
        record(c->lt, t, t, 0, -1, E_CONNECT);
        c->state = S_RETRY;
        c->t_retry = t + RETRY_NS;
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->len = 0;
    ev.data.ptr = c;
    if (epoll_ctl(c->lt->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl");
    conn_send(c);
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static const char *find_crlf(const char *p, size_t n)
{
    return memmem(p, n, "\r\n", 2);
}

/* Parse a response head of `n` bytes (up to and including the empty line). 0, or -1 when it is
 * not a response we understand. Sets the body state. */
static int parse_head(struct conn *c, const char *p, size_t n)
{
    const char *end = p + n, *line, *eol;
    long long cl = -1;
    int chunked = 0, http10;

    if (n < 14 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' || p[9] < '0' || p[9] > '9' ||
        p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return -1;
    http10 = p[7] == '0';
    c->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    c->group = -1;
    c->close_after = http10;
    line = find_crlf(p, n) + 2;
    while (line < end && (eol = find_crlf(line, (size_t)(end - line))) != NULL && eol > line) {
        const char *colon = memchr(line, ':', (size_t)(eol - line)), *v, *ve;
        size_t nlen;

        if (colon == NULL)
            return -1;
        nlen = (size_t)(colon - line);
        v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
            cl = 0;
            for (const char *d = v; d < ve; d++) {
                if (*d < '0' || *d > '9' || cl > (1LL << 40))
                    return -1;
                cl = cl * 10 + (*d - '0');
            }
        } else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
            chunked = memmem(v, (size_t)(ve - v), "chunked", 7) != NULL;
        } else if (nlen == 9 && strncasecmp(line, "x-backend", 9) == 0) {
            for (int g = 0; g < 2; g++)
                if ((size_t)(ve - v) == strlen(group_name[g]) &&
                    memcmp(v, group_name[g], (size_t)(ve - v)) == 0)
                    c->group = g;
        } else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
            if (memmem(v, (size_t)(ve - v), "close", 5) != NULL)
                c->close_after = 1;
            else if (memmem(v, (size_t)(ve - v), "keep-alive", 10) != NULL)
                c->close_after = 0;
        }
        line = eol + 2;
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        c->remaining = 0;
        c->state = S_BODY_CL;
    } else if (chunked) {
        c->state = S_CHUNK_SIZE;
    } else if (cl >= 0) {
        c->remaining = cl;
        c->state = S_BODY_CL;
    } else {
        c->close_after = 1;
        c->state = S_BODY_EOF;
    }
    return 0;
}

static void conn_done(struct conn *c)
{
    int64_t t = now_ns();

    record(c->lt, c->t_send, t, c->status, c->group, E_OK);
    c->lt->inflight--;
    if (c->len != 0) {
        /* bytes after the response, but we never pipeline: a protocol error of its own */
        record(c->lt, t, t, 0, -1, E_PARSE);
        c->state = S_IDLE;
        conn_fail(c, E_PARSE, 0);
        return;
    }
    if (c->close_after) {
        conn_close(c);
        c->state = S_RETRY;
        c->t_retry = 0;
        return;
    }
    conn_send(c);
}

/* Advance the response state machine over the buffered bytes. */
static void conn_process(struct conn *c)
{
    for (;;) {
        const char *p;

        switch (c->state) {
        case S_HEAD:
            p = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (p == NULL) {
                if (c->len == sizeof(c->buf))
                    conn_fail(c, E_PARSE, 0);
                return;
            }
            if (parse_head(c, c->buf, (size_t)(p + 4 - c->buf)) < 0) {
                conn_fail(c, E_PARSE, 0);
                return;
            }
            consume(c, (size_t)(p + 4 - c->buf));
            if (c->status >= 100 && c->status < 200) { /* interim response: wait for the next */
                c->state = S_HEAD;
                continue;
            }
            break;
        case S_BODY_CL:
        case S_CHUNK_DATA: {
            size_t take = c->len < (size_t)c->remaining ? c->len : (size_t)c->remaining;

            consume(c, take);
            c->remaining -= (long long)take;
            if (c->remaining > 0)
                return;
            if (c->state == S_CHUNK_DATA) {
                c->state = S_CHUNK_SIZE;
                break;
            }
            conn_done(c);
            return;
        }
        case S_BODY_EOF:
            c->len = 0;
            return;
        case S_CHUNK_SIZE: {
            long long size = 0;
            int digits = 0;

            p = find_crlf(c->buf, c->len);
            if (p == NULL) {
                if (c->len == sizeof(c->buf))
                    conn_fail(c, E_PARSE, 0);
                return;
            }
            for (const char *d = c->buf; d < p; d++, digits++) {
                int v = *d >= '0' && *d <= '9'   ? *d - '0'
                        : *d >= 'a' && *d <= 'f' ? *d - 'a' + 10
                        : *d >= 'A' && *d <= 'F' ? *d - 'A' + 10
                                                 : -1;
                if (v < 0)
                    break; /* chunk extension */
                if (size > (1LL << 40)) {
                    conn_fail(c, E_PARSE, 0);
                    return;
                }
                size = size * 16 + v;
            }
            if (digits == 0) {
                conn_fail(c, E_PARSE, 0);
                return;
            }
            consume(c, (size_t)(p + 2 - c->buf));
            if (size == 0) {
                c->state = S_CHUNK_TRAIL;
            } else {
                c->remaining = size + 2;
                c->state = S_CHUNK_DATA;
            }
            break;
        }
        case S_CHUNK_TRAIL:
            p = find_crlf(c->buf, c->len);
            if (p == NULL) {
                if (c->len == sizeof(c->buf))
                    conn_fail(c, E_PARSE, 0);
                return;
            }
            consume(c, (size_t)(p + 2 - c->buf));
            if (p == c->buf) {
                conn_done(c);
                return;
            }
            break;
        default:
            return;
        }
    }
}

static void conn_readable(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);

        if (n > 0) {
            c->len += (size_t)n;
            conn_process(c);
            if (c->fd < 0)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF or error */
        if (n == 0 && c->state == S_BODY_EOF) {
            record(c->lt, c->t_send, now_ns(), c->status, c->group, E_OK);
            c->lt->inflight--;
            conn_close(c);
            c->state = S_RETRY;
            c->t_retry = 0;
        } else if (c->state == S_IDLE) {
            conn_close(c);
        } else {
            conn_fail(c, n == 0 ? E_EOF : E_READ, 0);
        }
        return;
    }
}

static void *load_main(void *arg)
{
    struct lthread *lt = arg;
    struct epoll_event evs[64];
    int64_t last_sweep = 0;

    for (int i = 0; i < lt->nconn; i++)
        conn_open(&lt->conns[i]);
    for (;;) {
        int n = epoll_wait(lt->epfd, evs, 64, 5);
        int64_t t;

        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;

            if (c->fd >= 0)
                conn_readable(c);
        }
        t = now_ns();
        for (int i = 0; i < lt->nconn; i++) {
            struct conn *c = &lt->conns[i];

            if (c->state == S_RETRY && t >= c->t_retry)
                conn_open(c);
        }
        if (atomic_load_explicit(&stopping, memory_order_acquire)) {
            if (lt->inflight == 0)
                break;
            if (t > t_stop + DRAIN_NS) {
                for (int i = 0; i < lt->nconn; i++) {
                    struct conn *c = &lt->conns[i];

                    if (c->state != S_IDLE && c->state != S_RETRY)
                        conn_fail(c, E_STOPPED, 0);
                }
                break;
            }
        }
        if (t - last_sweep > 100000000) {
            last_sweep = t;
            for (int i = 0; i < lt->nconn; i++) {
                struct conn *c = &lt->conns[i];

                if (c->state != S_IDLE && c->state != S_RETRY && t - c->t_send > INFLIGHT_NS)
                    conn_fail(c, E_TIMEOUT, 0);
            }
        }
    }
    for (int i = 0; i < lt->nconn; i++)
        conn_close(&lt->conns[i]);
    return NULL;
}

static void reply_text(struct shift *s, const char *text, size_t n)
{
    size_t j = 0;

    for (size_t i = 0; i < n && j + 1 < sizeof(s->reply); i++) {
        char ch = text[i];

        if (ch == '\n' && i + 1 < n && text[i + 1] == '\n')
            break;
        s->reply[j++] = (ch == '\t' || ch == '\n' || ch == '\r') ? ' ' : ch;
    }
    while (j > 0 && s->reply[j - 1] == ' ')
        j--;
    s->reply[j] = '\0';
}

static long long reply_value(const char *reply, const char *key)
{
    size_t klen = strlen(key);

    for (const char *p = reply; (p = strstr(p, key)) != NULL; p += klen)
        if ((p == reply || p[-1] == ' ') && p[klen] >= '0' && p[klen] <= '9')
            return strtoll(p + klen, NULL, 10);
    return -1;
}

/* One shift: 0, or -1 with s->reply holding the reason. */
static int do_shift(struct shift *s)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char cmd[512], reply[MAX_REPLY];
    size_t len = 0, cmdlen;
    int fd, eof = 0;
    const char *o = group_name[s->old], *nw = group_name[s->new];

    if (mode_haproxy)
        snprintf(cmd, sizeof(cmd), "set server %s/%s weight 100; set server %s/%s weight 0\n",
                 opt_pool, nw, opt_pool, o);
    else
        snprintf(cmd, sizeof(cmd), "shift %s %s=%d %s=%d\n", opt_pool, group_name[0],
                 s->new == 0 ? 100 : 0, group_name[1], s->new == 1 ? 100 : 0);
    cmdlen = strlen(cmd);
    if (strlen(opt_admin) >= sizeof(sa.sun_path)) {
        snprintf(s->reply, sizeof(s->reply), "admin socket path too long");
        return -1;
    }
    strcpy(sa.sun_path, opt_admin);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(s->reply, sizeof(s->reply), "connect %s: %s", opt_admin, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    s->t_send = now_ns();
    if (write(fd, cmd, cmdlen) != (ssize_t)cmdlen) {
        snprintf(s->reply, sizeof(s->reply), "write: %s", strerror(errno));
        close(fd);
        return -1;
    }
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (!mode_haproxy && len >= 2 && memmem(reply, len, "\n\n", 2) != NULL)
            break;
        if (eof)
            break;
        if (poll(&pfd, 1, ADMIN_TIMEOUT_MS) == 0) {
            snprintf(s->reply, sizeof(s->reply), "no complete reply within %d ms",
                     ADMIN_TIMEOUT_MS);
            close(fd);
            return -1;
        }
        n = read(fd, reply + len, sizeof(reply) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(s->reply, sizeof(s->reply), "read: %s", strerror(errno));
            close(fd);
            return -1;
        }
        if (n == 0 || len + (size_t)n == sizeof(reply) - 1)
            eof = 1;
        len += (size_t)n;
    }
    s->t_ack = now_ns();
    close(fd);
    reply[len] = '\0';
    reply_text(s, reply, len);
    if (mode_haproxy) {
        /* set server ... weight prints nothing when it works */
        for (size_t i = 0; i < len; i++)
            if (reply[i] != '\n' && reply[i] != ' ' && reply[i] != '\r')
                return -1;
        return 0;
    }
    if (memmem(reply, len, "\n\n", 2) == NULL) {
        if (s->reply[0] == '\0')
            snprintf(s->reply, sizeof(s->reply), "connection closed without a reply");
        return -1;
    }
    if (strncmp(reply, "OK", 2) != 0 || (reply[2] != ' ' && reply[2] != '\n'))
        return -1;
    s->gen = reply_value(s->reply, "gen=");
    s->applied_us = reply_value(s->reply, "applied_us=");
    s->warm_us = reply_value(s->reply, "warm_us=");
    if (s->applied_us < 0)
        return -1;
    return 0;
}

static void *driver_main(void *arg)
{
    int64_t interval = (int64_t)opt_interval_ms * 1000000;

    (void)arg;
    if (opt_rt) {
        /* Wake up on the reply at once rather than after the load threads' time slice: the
         * round trip should be the proxy's, not the bench client's scheduling. */
        struct sched_param sp = {.sched_priority = 1};

        driver_rt = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
        if (!driver_rt)
            fprintf(stderr, "shiftload: cannot make the driver SCHED_FIFO; it stays normal\n");
    }
    t_warm_end = (int64_t)opt_warmup_ms * 1000000;
    t_first_shift = t_warm_end + (int64_t)opt_steady_ms * 1000000;
    for (int i = 0; i < opt_shifts; i++) {
        struct shift *s = &shifts[i];

        sleep_until(t_first_shift + i * interval);
        s->new = (i % 2 == 0) ? 1 : 0;
        s->old = 1 - s->new;
        s->gen = s->applied_us = s->warm_us = -1;
        s->ok = do_shift(s) == 0;
        nshifts_done = i + 1;
        if (!s->ok) {
            shift_failed = 1;
            fprintf(stderr, "shiftload: shift %d failed: %s\n", i, s->reply);
            break;
        }
    }
    sleep_until(nshifts_done > 0 ? shifts[nshifts_done - 1].t_send + interval
                                 : t_first_shift + interval);
    t_stop = now_ns();
    atomic_store_explicit(&stopping, 1, memory_order_release);
    return NULL;
}

static int write_results(struct lthread *lts)
{
    char path[4096];
    FILE *f;
    long long total = 0, failed = 0;

    snprintf(path, sizeof(path), "%s/requests.tsv", opt_out);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    for (int t = 0; t < opt_threads; t++)
        for (size_t i = 0; i < lts[t].nrecs; i++) {
            struct rec *r = &lts[t].recs[i];

            fprintf(f, "%lld\t%lld\t%d\t%d\t%d\n", (long long)r->t_send, (long long)r->t_done,
                    r->status, r->group, r->err);
            total++;
            failed += r->err != E_OK || r->status != 200 || r->group < 0;
        }
    if (fclose(f) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/shifts.tsv", opt_out);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "# mode %s\n# clients %d\n# threads %d\n# interval_ms %d\n# shifts_planned %d\n"
            "# t_warm_end_ns %lld\n# t_first_shift_ns %lld\n# t_stop_ns %lld\n"
            "# groups %s %s\n# driver_rt %d\n",
            mode_haproxy ? "haproxy" : "veer", opt_clients, opt_threads, opt_interval_ms,
            opt_shifts, (long long)t_warm_end, (long long)t_first_shift, (long long)t_stop,
            group_name[0], group_name[1], driver_rt);
    for (int i = 0; i < nshifts_done; i++) {
        struct shift *s = &shifts[i];

        fprintf(f, "%d\t%lld\t%lld\t%d\t%d\t%d\t%lld\t%lld\t%lld\t%s\n", i, (long long)s->t_send,
                (long long)s->t_ack, s->old, s->new, s->ok, s->gen, s->applied_us, s->warm_us,
                s->reply);
    }
    if (fclose(f) != 0)
        return -1;
    fprintf(stderr, "shiftload: %lld requests in %.2f s (%.0f rps), %lld failed; %d/%d shifts%s\n",
            total, (double)t_stop / 1e9, t_stop > 0 ? (double)total * 1e9 / (double)t_stop : 0.0,
            failed, nshifts_done - shift_failed, opt_shifts, shift_failed ? " (one failed)" : "");
    return 0;
}

static int parse_int(const char *s, int min, int max, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "shiftload: bad %s: %s\n", what, s);
        exit(1);
    }
    return (int)v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"mode", required_argument, NULL, 'm'},
                                         {"admin", required_argument, NULL, 'a'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"clients", required_argument, NULL, 'c'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"shifts", required_argument, NULL, 'n'},
                                         {"interval-ms", required_argument, NULL, 'i'},
                                         {"warmup-ms", required_argument, NULL, 'w'},
                                         {"steady-ms", required_argument, NULL, 's'},
                                         {"pool", required_argument, NULL, 'P'},
                                         {"groups", required_argument, NULL, 'g'},
                                         {"rt", no_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    struct lthread *lts;
    pthread_t driver;
    struct timespec ts;
    const char *mode = NULL;
    int opt;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            opt_port = parse_int(optarg, 1, 65535, "port");
            break;
        case 'm':
            mode = optarg;
            break;
        case 'a':
            opt_admin = optarg;
            break;
        case 'o':
            opt_out = optarg;
            break;
        case 'c':
            opt_clients = parse_int(optarg, 1, 100000, "clients");
            break;
        case 't':
            opt_threads = parse_int(optarg, 1, 64, "threads");
            break;
        case 'n':
            opt_shifts = parse_int(optarg, 1, 1000000, "shifts");
            break;
        case 'i':
            opt_interval_ms = parse_int(optarg, 1, 3600000, "interval");
            break;
        case 'w':
            opt_warmup_ms = parse_int(optarg, 0, 3600000, "warm-up");
            break;
        case 's':
            opt_steady_ms = parse_int(optarg, 0, 3600000, "steady");
            break;
        case 'P':
            opt_pool = optarg;
            break;
        case 'r':
            opt_rt = 1;
            break;
        case 'g': {
            const char *comma = strchr(optarg, ',');

            if (comma == NULL || comma == optarg || comma[1] == '\0' ||
                (size_t)(comma - optarg) >= sizeof(group_name[0]) ||
                strlen(comma + 1) >= sizeof(group_name[1]))
                die("--groups wants A,B");
            memcpy(group_name[0], optarg, (size_t)(comma - optarg));
            group_name[0][comma - optarg] = '\0';
            strcpy(group_name[1], comma + 1);
            break;
        }
        default:
            die("usage: see the comment at the top of bench/shiftload.c");
        }
    }
    if (opt_port == 0 || mode == NULL || opt_admin == NULL || opt_out == NULL)
        die("--port, --mode, --admin and --out are required");
    if (strcmp(mode, "haproxy") == 0)
        mode_haproxy = 1;
    else if (strcmp(mode, "veer") != 0)
        die("--mode is veer or haproxy");
    if (opt_threads > opt_clients)
        opt_threads = opt_clients;
    signal(SIGPIPE, SIG_IGN);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt_port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    shifts = calloc((size_t)opt_shifts, sizeof(*shifts));
    lts = calloc((size_t)opt_threads, sizeof(*lts));
    if (shifts == NULL || lts == NULL)
        die("out of memory");
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    for (int t = 0; t < opt_threads; t++) {
        struct lthread *lt = &lts[t];

        lt->nconn = opt_clients / opt_threads + (t < opt_clients % opt_threads);
        lt->conns = calloc((size_t)lt->nconn, sizeof(*lt->conns));
        lt->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (lt->conns == NULL || lt->epfd < 0)
            die("setup failed");
        for (int i = 0; i < lt->nconn; i++) {
            lt->conns[i].fd = -1;
            lt->conns[i].lt = lt;
            lt->conns[i].state = S_RETRY;
        }
        if (pthread_create(&lt->tid, NULL, load_main, lt) != 0)
            die("pthread_create");
    }
    if (pthread_create(&driver, NULL, driver_main, NULL) != 0)
        die("pthread_create");
    pthread_join(driver, NULL);
    for (int t = 0; t < opt_threads; t++)
        pthread_join(lts[t].tid, NULL);
    if (write_results(lts) < 0) {
        perror("shiftload: writing results");
        return 1;
    }
    for (int t = 0; t < opt_threads; t++) {
        close(lts[t].epfd);
        free(lts[t].conns);
        free(lts[t].recs);
    }
    free(lts);
    free(shifts);
    return shift_failed ? 3 : 0;
}
