/*
 * check_health.c - active readiness checks, driven on a real event_base
 * against fake backends served from that same loop on ephemeral loopback
 * ports: 2xx passes; other statuses, malformed status lines, a hang-up, a
 * refused port, a silent backend and a full accept queue fail with a
 * reason (the last two after timeout_ms, never before); the request is a GET of the configured
 * path with a Host header, whatever the path's length; checks repeat every
 * interval_ms and are spread by jitter; unwatch and shutdown stop them and
 * close their sockets, and nothing is left behind (ASan).
 */
#include "health.h"
#include "veer.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS   64
#define MAX_RESULTS 128

static struct event_base *base;

/* The test's own monotonic clock, independent of what health.c measures. */
static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --- results, as health_cb reports them ----------------------------------------------- */

struct result {
    struct backend *be;
    bool ok;
    uint64_t took_us;
    uint64_t at_us; /* now_us() when reported */
    bool why_null;
    char why[128];
};

static struct {
    struct result r[MAX_RESULTS];
    int n;                         /* every result, also those past MAX_RESULTS */
    struct backend *unwatch_in_cb; /* unwatched from inside its own callback */
} rec;

static void on_health(struct backend *be, bool ok, uint64_t took_us, const char *why)
{
    if (rec.n < MAX_RESULTS) {
        struct result *r = &rec.r[rec.n];

        r->be = be;
        r->ok = ok;
        r->took_us = took_us;
        r->at_us = now_us();
        r->why_null = why == NULL;
        snprintf(r->why, sizeof(r->why), "%s", why ? why : "");
    }
    rec.n++;
    if (be == rec.unwatch_in_cb)
        health_unwatch(be);
}

static int results_for(const struct backend *be)
{
    int n = 0;

    for (int i = 0; i < rec.n && i < MAX_RESULTS; i++)
        n += rec.r[i].be == be;
    return n;
}

/* The k-th result (from 0) reported for be. */
static const struct result *result_of(const struct backend *be, int k)
{
    for (int i = 0, seen = 0; i < rec.n && i < MAX_RESULTS; i++)
        if (rec.r[i].be == be && seen++ == k)
            return &rec.r[i];
    ck_abort_msg("no result #%d for %s", k, be->name);
    return NULL;
}

/* --- the loop: run until a condition holds or a deadline passes ----------------------- */

typedef bool (*cond_fn)(const void *arg);

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    /* Only wakes the loop, so conditions that no event of ours changes are seen too. */
}

static bool run_until(cond_fn done, const void *arg, int deadline_ms)
{
    struct timeval dl = {deadline_ms / 1000, (deadline_ms % 1000) * 1000}, tk = {0, 5000};
    bool expired = false;
    struct event *d = evtimer_new(base, deadline_cb, &expired);
    struct event *t = event_new(base, -1, EV_PERSIST, tick_cb, NULL);

    evtimer_add(d, &dl);
    event_add(t, &tk);
    while (!done(arg) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(d);
    event_free(t);
    return done(arg);
}

static bool never(const void *arg)
{
    return false;
}

/* Let the loop run for ms, whatever happens (to see that nothing does). */
static void run_for(int ms)
{
    run_until(never, NULL, ms);
}

static bool enough_results(const void *arg)
{
    return rec.n >= *(const int *)arg;
}

static bool wait_results(int n, int deadline_ms)
{
    return run_until(enough_results, &n, deadline_ms);
}

struct be_want {
    const struct backend *be;
    int n;
};

static bool enough_results_for(const void *arg)
{
    const struct be_want *w = arg;

    return results_for(w->be) >= w->n;
}

static bool wait_results_for(const struct backend *be, int n, int deadline_ms)
{
    struct be_want w = {be, n};

    return run_until(enough_results_for, &w, deadline_ms);
}

/* --- a fake backend on 127.0.0.1, served from the same event_base --------------------- */

struct fake;

struct fake_conn {
    struct fake *f;
    int fd; /* -1 once closed */
    struct event *ev;
    struct event *later; /* the rest of a split reply */
    char req[4096];
    size_t len;
    bool head;    /* the request head is complete */
    bool eof;     /* the checker closed its end */
    bool hung_up; /* we closed it without answering */
};

struct fake {
    int lfd;
    char addr[64];     /* "127.0.0.1:PORT" */
    struct event *lev; /* NULL: not accepting (a full backlog) */
    const char *reply; /* sent once the request head is in; NULL: never answer */
    size_t split;      /* > 0: send that many bytes, the rest 50 ms later */
    bool hang_up;      /* close without a byte once the request head is in */
    struct fake_conn c[MAX_CONNS];
    int nconns;
};

static void conn_close(struct fake_conn *fc)
{
    if (fc->later) {
        event_free(fc->later);
        fc->later = NULL;
    }
    if (fc->ev) {
        event_free(fc->ev);
        fc->ev = NULL;
    }
    if (fc->fd >= 0) {
        close(fc->fd);
        fc->fd = -1;
    }
}

static void send_rest(evutil_socket_t fd0, short what, void *arg)
{
    struct fake_conn *fc = arg;
    const char *rest = fc->f->reply + fc->f->split;

    if (fc->fd >= 0)
        ck_assert_int_eq(send(fc->fd, rest, strlen(rest), MSG_NOSIGNAL), (ssize_t)strlen(rest));
}

static void respond(struct fake_conn *fc)
{
    struct fake *f = fc->f;
    struct timeval tv = {0, 50 * 1000};
    size_t len;

    if (f->hang_up) {
        fc->hung_up = true;
        conn_close(fc);
        return;
    }
    if (f->reply == NULL)
        return;
    len = f->split ? f->split : strlen(f->reply);
    ck_assert_int_eq(send(fc->fd, f->reply, len, MSG_NOSIGNAL), (ssize_t)len);
    if (f->split) {
        fc->later = evtimer_new(base, send_rest, fc);
        evtimer_add(fc->later, &tv);
    }
}

static void conn_read(evutil_socket_t fd, short what, void *arg)
{
    struct fake_conn *fc = arg;
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    size_t room = sizeof(fc->req) - 1 - fc->len;

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fc->eof = true;
        conn_close(fc);
        return;
    }
    memcpy(fc->req + fc->len, tmp, (size_t)n < room ? (size_t)n : room);
    fc->len += (size_t)n < room ? (size_t)n : room;
    fc->req[fc->len] = '\0';
    if (!fc->head && strstr(fc->req, "\r\n\r\n")) {
        fc->head = true;
        respond(fc);
    }
}

static void fake_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct fake *f = arg;
    int fd;

    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct fake_conn *fc;

        ck_assert_msg(f->nconns < MAX_CONNS, "fake backend %s: too many connections", f->addr);
        fc = &f->c[f->nconns++];
        fc->f = f;
        fc->fd = fd;
        fc->ev = event_new(base, fd, EV_READ | EV_PERSIST, conn_read, fc);
        event_add(fc->ev, NULL);
    }
}

/* A socket bound to an ephemeral port of 127.0.0.1; its "127.0.0.1:PORT" in addr. */
static int bind_ephemeral(char *addr, size_t len)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
    snprintf(addr, len, "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
    return fd;
}

static void fake_start(struct fake *f, const char *reply)
{
    memset(f, 0, sizeof(*f));
    f->reply = reply;
    f->lfd = bind_ephemeral(f->addr, sizeof(f->addr));
    ck_assert_int_eq(evutil_make_socket_nonblocking(f->lfd), 0);
    ck_assert_int_eq(listen(f->lfd, 64), 0);
    f->lev = event_new(base, f->lfd, EV_READ | EV_PERSIST, fake_accept, f);
    event_add(f->lev, NULL);
}

static void fake_stop(struct fake *f)
{
    for (int i = 0; i < f->nconns; i++)
        conn_close(&f->c[i]);
    if (f->lev)
        event_free(f->lev);
    close(f->lfd);
}

static int fake_heads(const struct fake *f)
{
    int n = 0;

    for (int i = 0; i < f->nconns; i++)
        n += f->c[i].head;
    return n;
}

static int fake_eofs(const struct fake *f)
{
    int n = 0;

    for (int i = 0; i < f->nconns; i++)
        n += f->c[i].eof;
    return n;
}

struct fake_want {
    const struct fake *f;
    int n;
};

static bool enough_heads(const void *arg)
{
    const struct fake_want *w = arg;

    return fake_heads(w->f) >= w->n;
}

static bool enough_eofs(const void *arg)
{
    const struct fake_want *w = arg;

    return fake_eofs(w->f) >= w->n;
}

/* Wait until the fake got n request heads. */
static bool wait_heads(const struct fake *f, int n, int deadline_ms)
{
    struct fake_want w = {f, n};

    return run_until(enough_heads, &w, deadline_ms);
}

/* Wait until the checker closed n of its connections to the fake. */
static bool wait_eofs(const struct fake *f, int n, int deadline_ms)
{
    struct fake_want w = {f, n};

    return run_until(enough_eofs, &w, deadline_ms);
}

/* --- backends and pools ---------------------------------------------------------------- */

static void backend_at(struct backend *be, const char *name, const char *addr)
{
    char err[200];

    memset(be, 0, sizeof(*be));
    be->name = (char *)name;
    ck_assert_msg(conf_parse_addr(addr, false, &be->addr, err, sizeof(err)) == 0, "%s: %s", addr,
                  err);
}

static void pool_with_health(struct conf_pool *cp, const char *path, int interval_ms,
                             int timeout_ms)
{
    memset(cp, 0, sizeof(*cp));
    cp->name = (char *)"api";
    cp->has_health = true;
    cp->health = (struct conf_health){
        .path = (char *)path,
        .interval_ms = interval_ms,
        .timeout_ms = timeout_ms,
        .rise = 1,
        .fall = 1,
    };
}

/* Check one backend at a fake answering reply; return its first result. */
static const struct result *check_once(const char *reply)
{
    static struct fake f;
    static struct backend be;
    struct conf_pool cp;
    int n0 = rec.n;

    fake_start(&f, reply);
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert_msg(wait_results(n0 + 1, 5000), "no result for reply %s", reply);
    ck_assert_int_eq(rec.n, n0 + 1);
    ck_assert_int_eq(fake_heads(&f), 1);
    health_unwatch(&be);
    fake_stop(&f);
    ck_assert_ptr_eq(rec.r[n0].be, &be);
    return &rec.r[n0];
}

static void setup(void)
{
    memset(&rec, 0, sizeof(rec));
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    health_init(base, on_health);
}

static void teardown(void)
{
    health_shutdown();
    event_base_free(base);
    base = NULL;
}

/* --- outcomes -------------------------------------------------------------------------- */

START_TEST(test_200_passes_and_the_connection_is_closed)
{
    struct fake f;
    struct backend be;
    struct conf_pool cp;
    const struct result *r;
    uint64_t t0 = now_us();

    fake_start(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert(wait_results(1, 5000));
    r = &rec.r[0];
    ck_assert_ptr_eq(r->be, &be);
    ck_assert_msg(r->ok, "200 failed: %s", r->why);
    ck_assert(r->why_null);
    ck_assert_uint_le(r->took_us, r->at_us - t0);
    ck_assert_int_eq(f.nconns, 1);
    ck_assert_int_eq(fake_heads(&f), 1);
    /* One check, one connection: the checker closes it once it has judged. */
    ck_assert_msg(wait_eofs(&f, 1, 2000), "the checker kept its connection open");
    fake_stop(&f);
}
END_TEST

START_TEST(test_other_2xx_pass)
{
    static const char *const replies[] = {
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 299 Odd But Fine\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 200 OK\r\n\r\n",
        "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", /* no reason phrase */
    };

    for (size_t i = 0; i < ARRAY_SIZE(replies); i++) {
        const struct result *r = check_once(replies[i]);

        ck_assert_msg(r->ok, "%s failed: %s", replies[i], r->why);
        ck_assert(r->why_null);
    }
}
END_TEST

START_TEST(test_503_fails_with_its_status)
{
    const struct result *r =
        check_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");

    ck_assert(!r->ok);
    ck_assert(!r->why_null);
    ck_assert_str_eq(r->why, "status 503");
}
END_TEST

START_TEST(test_302_fails_with_its_status)
{
    const struct result *r =
        check_once("HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n");

    ck_assert(!r->ok);
    ck_assert_str_eq(r->why, "status 302");
}
END_TEST

START_TEST(test_statuses_around_2xx_fail)
{
    static const struct {
        const char *reply, *why;
    } cases[] = {
        {"HTTP/1.1 199 Early\r\n\r\n", "status 199"},
        {"HTTP/1.1 300 Multiple Choices\r\n\r\n", "status 300"},
        {"HTTP/1.1 404 Not Found\r\n\r\n", "status 404"},
        {"HTTP/1.1 500 Internal Server Error\r\n\r\n", "status 500"},
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const struct result *r = check_once(cases[i].reply);

        ck_assert_msg(!r->ok, "%s passed", cases[i].reply);
        ck_assert_str_eq(r->why, cases[i].why);
    }
}
END_TEST

START_TEST(test_malformed_status_lines_fail)
{
    static const char *const replies[] = {
        "garbage\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",    /* four digits: not "200" */
        "HTTP/1.1 200x OK\r\n\r\n",    /* a letter glued to the code */
        "HTTP/1.1x200 OK\r\n\r\n",     /* no SP after the version */
        "HTTP/1.1  200 OK\r\n\r\n",    /* two SPs */
        "HTTP/2.0 200 OK\r\n\r\n",     /* not HTTP/1.x */
        "ICY 200 OK\r\n\r\n",          /* not HTTP at all */
        "HTTP/1.1 -200 OK\r\n\r\n",    /* a sign is not a digit */
        "HTTP/1.1 +200 OK\r\n\r\n",    /* nor is this one */
        "\r\nHTTP/1.1 200 OK\r\n\r\n", /* the status line must come first */
    };

    for (size_t i = 0; i < ARRAY_SIZE(replies); i++) {
        const struct result *r = check_once(replies[i]);

        ck_assert_msg(!r->ok, "malformed reply \"%s\" passed", replies[i]);
        ck_assert_msg(strstr(r->why, "malformed") != NULL, "\"%s\": why = \"%s\"", replies[i],
                      r->why);
    }
}
END_TEST

START_TEST(test_truncated_status_line_fails)
{
    /* Five bytes of a status line, then the backend closes. */
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, "HTTP/");
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert(wait_heads(&f, 1, 5000));
    conn_close(&f.c[0]);
    ck_assert(wait_results(1, 5000));
    ck_assert(!rec.r[0].ok);
    ck_assert_str_eq(rec.r[0].why, "malformed response");
    fake_stop(&f);
}
END_TEST

START_TEST(test_status_line_split_across_reads_passes)
{
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    f.split = 10; /* "HTTP/1.1 2", then "00 OK..." 50 ms later */
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert(wait_results(1, 5000));
    ck_assert_msg(rec.r[0].ok, "split 200 failed: %s", rec.r[0].why);
    /* It waited for the rest of the line rather than judging half of it. */
    ck_assert_uint_ge(rec.r[0].took_us, 40 * 1000);
    fake_stop(&f);
}
END_TEST

START_TEST(test_close_without_response_fails)
{
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, NULL);
    f.hang_up = true;
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert(wait_results(1, 5000));
    ck_assert(f.c[0].hung_up);
    ck_assert(!rec.r[0].ok);
    ck_assert_str_eq(rec.r[0].why, "closed without a response");
    ck_assert_uint_lt(rec.r[0].took_us, 2000 * 1000); /* at once, not at the timeout */
    fake_stop(&f);
}
END_TEST

START_TEST(test_refused_connection_fails)
{
    /* Bound but not listening: the port stays ours, and a connect is refused. */
    char addr[64];
    int fd = bind_ephemeral(addr, sizeof(addr));
    struct backend be;
    struct conf_pool cp;

    backend_at(&be, "b1", addr);
    pool_with_health(&cp, "/health", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert(wait_results(1, 5000));
    ck_assert(!rec.r[0].ok);
    ck_assert_ptr_eq(rec.r[0].be, &be);
    ck_assert_msg(strstr(rec.r[0].why, "connect") && strstr(rec.r[0].why, "refused"),
                  "why = \"%s\"", rec.r[0].why);
    ck_assert_uint_lt(rec.r[0].took_us, 2000 * 1000);
    close(fd);
}
END_TEST

/* --- timeouts -------------------------------------------------------------------------- */

/*
 * libevent may fire a timer a little early against CLOCK_MONOTONIC (a coarse
 * clock, a cached loop time): this much slack, far below any real mistake.
 */
#define EARLY_SLACK_MS 15

START_TEST(test_silent_backend_times_out_after_timeout_ms)
{
    const int timeout_ms = 300;
    struct fake f;
    struct backend be;
    struct conf_pool cp;
    uint64_t t0, elapsed;

    fake_start(&f, NULL); /* reads the request, never answers */
    backend_at(&be, "b1", f.addr);
    /* interval < 10 ms: no spread, the first check starts at once, so t0 bounds its start. */
    pool_with_health(&cp, "/health", 9, timeout_ms);
    t0 = now_us();
    health_watch(&be, &cp);
    ck_assert(wait_results(1, timeout_ms + 5000));
    elapsed = rec.r[0].at_us - t0;
    ck_assert_int_eq(fake_heads(&f), 1); /* it got the request, and said nothing */
    ck_assert(!rec.r[0].ok);
    ck_assert_str_eq(rec.r[0].why, "timeout waiting for the response");
    ck_assert_uint_ge(elapsed, (uint64_t)(timeout_ms - EARLY_SLACK_MS) * 1000);
    ck_assert_uint_ge(rec.r[0].took_us, (uint64_t)(timeout_ms - EARLY_SLACK_MS) * 1000);
    ck_assert_uint_le(rec.r[0].took_us, elapsed);
    ck_assert_uint_lt(elapsed, (uint64_t)(timeout_ms + 3000) * 1000);
    health_unwatch(&be);
    /* The timed-out check let go of its connection. */
    ck_assert(wait_eofs(&f, 1, 2000));
    fake_stop(&f);
}
END_TEST

/* Queued connections waiting for accept() on a listening socket (Linux TCP_INFO). */
static bool backlog_full(const void *arg)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    return getsockopt(*(const int *)arg, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
           ti.tcpi_unacked >= 2;
}

START_TEST(test_connect_timeout_when_the_backlog_is_full)
{
    /*
     * A listener with a backlog of 1 that never accepts, with two connections
     * queued: the kernel drops the checker's SYN, so its connect never
     * completes and the check ends at timeout_ms as a connect timeout.
     */
    const int timeout_ms = 300;
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    char addr[64];
    int lfd = bind_ephemeral(addr, sizeof(addr)), cl[2];
    struct backend be;
    struct conf_pool cp;
    uint64_t t0, elapsed;

    ck_assert_int_eq(listen(lfd, 1), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
    for (int i = 0; i < 2; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(connect(cl[i], (struct sockaddr *)&sin, slen), 0);
    }
    ck_assert_msg(run_until(backlog_full, &lfd, 2000), "the accept queue did not fill");
    backend_at(&be, "b1", addr);
    pool_with_health(&cp, "/health", 9, timeout_ms);
    t0 = now_us();
    health_watch(&be, &cp);
    ck_assert(wait_results(1, timeout_ms + 5000));
    elapsed = rec.r[0].at_us - t0;
    ck_assert(!rec.r[0].ok);
    ck_assert_str_eq(rec.r[0].why, "connect timeout");
    ck_assert_uint_ge(elapsed, (uint64_t)(timeout_ms - EARLY_SLACK_MS) * 1000);
    ck_assert_uint_ge(rec.r[0].took_us, (uint64_t)(timeout_ms - EARLY_SLACK_MS) * 1000);
    ck_assert_uint_lt(elapsed, (uint64_t)(timeout_ms + 3000) * 1000);
    health_unwatch(&be);
    close(cl[0]);
    close(cl[1]);
    close(lfd);
}
END_TEST

/* --- the request ----------------------------------------------------------------------- */

/* Assert that the fake's first connection got exactly one GET of path with a Host of be. */
static void assert_request(const struct fake *f, const struct backend *be, const char *path)
{
    const char *req = f->c[0].req, *end;
    char line[8192], host[128];

    ck_assert_int_ge(f->nconns, 1);
    ck_assert(f->c[0].head);
    snprintf(line, sizeof(line), "GET %s HTTP/1.1\r\n", path);
    ck_assert_msg(strncmp(req, line, strlen(line)) == 0, "request line: %.200s", req);
    snprintf(host, sizeof(host), "\r\nHost: %s\r\n", be->addr.text);
    end = strstr(req, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    ck_assert_msg(strstr(req, host) != NULL && strstr(req, host) < end, "no %s in %s", host + 2,
                  req);
    /* A head and nothing after it: no body, no second request. */
    ck_assert_uint_eq(f->c[0].len, (size_t)(end - req) + 4);
    ck_assert_uint_eq(strlen(req), f->c[0].len);
}

START_TEST(test_request_is_a_get_of_the_path_with_a_host)
{
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/ready/deep?probe=1", 1000, 2000);
    health_watch(&be, &cp);
    ck_assert(wait_results(1, 5000));
    ck_assert(rec.r[0].ok);
    assert_request(&f, &be, "/ready/deep?probe=1");
    /* The Host names the backend as configured. */
    ck_assert_str_eq(be.addr.text, f.addr);
    fake_stop(&f);
}
END_TEST

START_TEST(test_long_path_is_sent_whole)
{
    /* A path longer than any fixed request buffer must not be cut (or over-read). */
    static char path[2001];
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    path[0] = '/';
    for (size_t i = 1; i < sizeof(path) - 1; i++)
        path[i] = (char)('a' + i % 26);
    path[sizeof(path) - 1] = '\0';
    fake_start(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, path, 1000, 2000);
    health_watch(&be, &cp);
    ck_assert_msg(wait_heads(&f, 1, 5000), "no complete request; got %zu bytes: %.80s",
                  f.nconns ? f.c[0].len : 0, f.nconns ? f.c[0].req : "");
    ck_assert(wait_results(1, 5000));
    assert_request(&f, &be, path);
    ck_assert_msg(rec.r[0].ok, "why = %s", rec.r[0].why);
    fake_stop(&f);
}
END_TEST

/* --- scheduling ------------------------------------------------------------------------ */

START_TEST(test_checks_repeat_every_interval)
{
    const int interval_ms = 100, n = 6;
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", interval_ms, 1000);
    health_watch(&be, &cp);
    ck_assert_msg(wait_results(n, 5000), "only %d checks in 5 s at a %d ms interval", rec.n,
                  interval_ms);
    for (int i = 0; i < n; i++)
        ck_assert_msg(rec.r[i].ok, "check %d: %s", i, rec.r[i].why);
    /*
     * The next check is scheduled when one ends, interval_ms - 10% at the
     * earliest: consecutive results are never closer than that.
     */
    for (int i = 1; i < n; i++) {
        uint64_t gap = rec.r[i].at_us - rec.r[i - 1].at_us;

        ck_assert_msg(gap >= (uint64_t)(interval_ms * 9 / 10 - EARLY_SLACK_MS) * 1000,
                      "checks %d and %d only %llu us apart", i - 1, i, (unsigned long long)gap);
    }
    /* A connection per check, each closed by the checker. */
    ck_assert_int_ge(f.nconns, n);
    ck_assert(wait_eofs(&f, n, 2000));
    fake_stop(&f);
}
END_TEST

START_TEST(test_first_checks_are_spread_by_jitter)
{
    /*
     * 16 backends watched at the same moment: their first checks are spread
     * over a tenth of the interval (here 400 ms), not fired in one burst. Were
     * they uniform, all 16 landing within 80 ms of each other has a chance of
     * about 1e-9.
     */
    enum { N = 16 };
    const int interval_ms = 4000;
    struct fake f;
    static struct backend be[N];
    struct conf_pool cp;
    uint64_t t0, first = UINT64_MAX, last = 0;

    fake_start(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    pool_with_health(&cp, "/health", interval_ms, 2000);
    t0 = now_us();
    for (int i = 0; i < N; i++) {
        backend_at(&be[i], "b", f.addr);
        health_watch(&be[i], &cp);
    }
    ck_assert(wait_results(N, 5000));
    for (int i = 0; i < N; i++) {
        const struct result *r = result_of(&be[i], 0);

        ck_assert(r->ok);
        first = r->at_us < first ? r->at_us : first;
        last = r->at_us > last ? r->at_us : last;
    }
    ck_assert_int_eq(rec.n, N); /* one each: the next ones are ~4 s away */
    ck_assert_msg(last - first >= 80 * 1000, "16 first checks within %llu us",
                  (unsigned long long)(last - first));
    ck_assert_uint_lt(last - t0, (uint64_t)(interval_ms / 10 + 3000) * 1000);
    fake_stop(&f);
}
END_TEST

/* --- stopping -------------------------------------------------------------------------- */

START_TEST(test_unwatch_stops_checks_of_that_backend_only)
{
    struct fake f1, f2;
    struct backend b1, b2;
    struct conf_pool cp;
    int n1, n2, conns1;

    fake_start(&f1, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    fake_start(&f2, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    backend_at(&b1, "b1", f1.addr);
    backend_at(&b2, "b2", f2.addr);
    pool_with_health(&cp, "/health", 50, 1000);
    health_watch(&b1, &cp);
    health_watch(&b2, &cp);
    ck_assert(wait_results_for(&b1, 2, 5000));
    health_unwatch(&b1);
    n1 = results_for(&b1);
    n2 = results_for(&b2);
    conns1 = f1.nconns;
    run_for(400);
    ck_assert_int_eq(results_for(&b1), n1);
    /* At most the check that was under way when it was unwatched reached the backend. */
    ck_assert_int_le(f1.nconns, conns1 + 1);
    ck_assert_msg(wait_eofs(&f1, f1.nconns, 1000), "a connection of b1 stayed open");
    /* b2 is still checked. */
    ck_assert(wait_results_for(&b2, n2 + 2, 5000));
    /* Unwatching something never watched, or twice, changes nothing. */
    health_unwatch(&b1);
    n2 = results_for(&b2);
    ck_assert(wait_results_for(&b2, n2 + 1, 5000));
    ck_assert_int_eq(results_for(&b1), n1);
    fake_stop(&f1);
    fake_stop(&f2);
}
END_TEST

START_TEST(test_unwatch_during_a_check_closes_it_silently)
{
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, NULL);
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 9, 300);
    health_watch(&be, &cp);
    ck_assert(wait_heads(&f, 1, 5000)); /* the check is waiting for the response */
    ck_assert_int_eq(rec.n, 0);
    health_unwatch(&be);
    ck_assert_msg(wait_eofs(&f, 1, 1000), "the check's socket stayed open");
    run_for(500); /* past its timeout */
    ck_assert_int_eq(rec.n, 0);
    ck_assert_int_eq(f.nconns, 1);
    fake_stop(&f);
}
END_TEST

START_TEST(test_unwatch_from_its_own_callback)
{
    struct fake f;
    struct backend be;
    struct conf_pool cp;

    fake_start(&f, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    backend_at(&be, "b1", f.addr);
    pool_with_health(&cp, "/health", 20, 1000);
    rec.unwatch_in_cb = &be; /* as the control thread does when it deletes a backend */
    health_watch(&be, &cp);
    ck_assert(wait_results(1, 5000));
    run_for(300);
    ck_assert_int_eq(rec.n, 1);
    ck_assert_int_eq(f.nconns, 1);
    ck_assert(wait_eofs(&f, 1, 1000));
    fake_stop(&f);
}
END_TEST

START_TEST(test_shutdown_stops_every_check_and_frees_them)
{
    struct fake silent, fine;
    struct backend b1, b2, b3;
    struct conf_pool cp;
    char refused[64];
    int rfd = bind_ephemeral(refused, sizeof(refused)), n;
    int before = event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);

    fake_start(&silent, NULL);
    fake_start(&fine, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    backend_at(&b1, "b1", silent.addr);
    backend_at(&b2, "b2", fine.addr);
    backend_at(&b3, "b3", refused);
    pool_with_health(&cp, "/health", 50, 2000);
    health_watch(&b1, &cp);
    health_watch(&b2, &cp);
    health_watch(&b3, &cp);
    /* b1 mid-check, b2 and b3 between checks. */
    ck_assert(wait_heads(&silent, 1, 5000));
    ck_assert(wait_results_for(&b2, 1, 5000));
    ck_assert(wait_results_for(&b3, 1, 5000));
    ck_assert_int_eq(results_for(&b1), 0);
    health_shutdown();
    n = rec.n;
    ck_assert_msg(wait_eofs(&silent, 1, 1000), "the check under way kept its socket");
    run_for(300);
    ck_assert_int_eq(rec.n, n);
    fake_stop(&silent);
    fake_stop(&fine);
    close(rfd);
    /* Not one timer or socket event of the checks is left on the base. */
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), before);
    /* And checking can start again afterwards. */
    fake_start(&fine, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    backend_at(&b2, "b2", fine.addr);
    health_watch(&b2, &cp);
    ck_assert(wait_results(n + 1, 5000));
    ck_assert(rec.r[n].ok);
    health_shutdown();
    fake_stop(&fine);
}
END_TEST

static Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *to = tcase_create("outcomes");
    TCase *tt = tcase_create("timeouts");
    TCase *tr = tcase_create("request");
    TCase *ts = tcase_create("scheduling");
    TCase *tp = tcase_create("stopping");

    TCase *all[] = {to, tt, tr, ts, tp};

    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], 30);
    }
    tcase_add_test(to, test_200_passes_and_the_connection_is_closed);
    tcase_add_test(to, test_other_2xx_pass);
    tcase_add_test(to, test_503_fails_with_its_status);
    tcase_add_test(to, test_302_fails_with_its_status);
    tcase_add_test(to, test_statuses_around_2xx_fail);
    tcase_add_test(to, test_malformed_status_lines_fail);
    tcase_add_test(to, test_truncated_status_line_fails);
    tcase_add_test(to, test_status_line_split_across_reads_passes);
    tcase_add_test(to, test_close_without_response_fails);
    tcase_add_test(to, test_refused_connection_fails);
    tcase_add_test(tt, test_silent_backend_times_out_after_timeout_ms);
    tcase_add_test(tt, test_connect_timeout_when_the_backlog_is_full);
    tcase_add_test(tr, test_request_is_a_get_of_the_path_with_a_host);
    tcase_add_test(tr, test_long_path_is_sent_whole);
    tcase_add_test(ts, test_checks_repeat_every_interval);
    tcase_add_test(ts, test_first_checks_are_spread_by_jitter);
    tcase_add_test(tp, test_unwatch_stops_checks_of_that_backend_only);
    tcase_add_test(tp, test_unwatch_during_a_check_closes_it_silently);
    tcase_add_test(tp, test_unwatch_from_its_own_callback);
    tcase_add_test(tp, test_shutdown_stops_every_check_and_frees_them);
    for (size_t i = 0; i < ARRAY_SIZE(all); i++)
        suite_add_tcase(s, all[i]);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(health_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
