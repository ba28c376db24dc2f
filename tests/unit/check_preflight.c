/*
 * check_preflight.c - a rollout's pre-flight checks (preflight.c), started
 * with preflight_start on a real event_base against fake backends served
 * from that same loop on ephemeral loopback ports: every backend gets every
 * request in order, one connection each, with the documented headers; the
 * result counts backends, requests and time; each kind of failure (another
 * status, a body without the text, a body over 1 MiB, an answer cut short,
 * a malformed one, none within timeout_ms, a refused connection, no backend
 * at all) ends the run with the backend, the request and the answer, exactly;
 * the text is found across chunks and reads; a HEAD answer has no body;
 * preflight_cancel stops a run without its callback; 10 backends x 10
 * requests run in parallel; a TLS pool is checked over TLS (a backend in a
 * thread with a certificate made here), its handshake failures told; backend
 * references are all given back (and nothing leaks, under ASan).
 */
#include "preflight.h"
#include "tls.h"
#include "veer.h"

#include <check.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS  32
#define MAX_ROUTES 8

static struct event_base *base;

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --- what the run reports --------------------------------------------------------------- */

static struct {
    int calls;
    struct preflight_result res;
    uint64_t at_us;
} done_rec;

static void on_done(void *arg, const struct preflight_result *res)
{
    ck_assert_ptr_eq(arg, &done_rec);
    done_rec.calls++;
    done_rec.res = *res;
    done_rec.at_us = now_us();
}

/* --- the loop: run until a condition holds or a deadline passes -------------------------- */

typedef bool (*cond_fn)(const void *arg);

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    /* Only wakes the loop, so that conditions no event of ours changes are seen too. */
    (void)fd;
    (void)what;
    (void)arg;
}

static bool run_until(cond_fn cond, const void *arg, int deadline_ms)
{
    struct timeval dl = {deadline_ms / 1000, (deadline_ms % 1000) * 1000}, tk = {0, 5000};
    bool expired = false;
    struct event *d = evtimer_new(base, deadline_cb, &expired);
    struct event *t = event_new(base, -1, EV_PERSIST, tick_cb, NULL);

    evtimer_add(d, &dl);
    event_add(t, &tk);
    while (!cond(arg) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(d);
    event_free(t);
    return cond(arg);
}

static bool never(const void *arg)
{
    (void)arg;
    return false;
}

static void run_for(int ms)
{
    run_until(never, NULL, ms);
}

static bool is_done(const void *arg)
{
    (void)arg;
    return done_rec.calls > 0;
}

/* Run until the callback came (5 s at most); then a little more, to see it comes once. */
static const struct preflight_result *wait_done(void)
{
    ck_assert_msg(run_until(is_done, NULL, 5000), "the run never ended");
    run_for(30);
    ck_assert_int_eq(done_rec.calls, 1);
    return &done_rec.res;
}

/* --- a fake backend on 127.0.0.1, served from the same event_base ------------------------- */

/* An answer to the requests of one path. */
struct route {
    const char *path;  /* the request target, exactly */
    const char *reply; /* NULL: never answer */
    size_t len;        /* of reply; 0: strlen */
    size_t split;      /* > 0: that many bytes, the rest later (a second write) */
    int delay_ms;      /* how much later: 30 ms unless set */
    bool keep_open;    /* do not close once it is sent */
    bool hang_up;      /* close at once, without a byte */
};

struct fake;

struct fake_conn {
    struct fake *f;
    int fd; /* -1 once closed */
    struct event *rev, *wev, *later;
    char req[8192];
    size_t len;
    bool head, eof;
    const struct route *rt;
    size_t off, stop; /* sent so far, send up to (the split, then the whole) */
};

struct fake {
    int lfd;
    char addr[64];
    struct event *lev;
    struct route routes[MAX_ROUTES];
    int nroutes;
    struct fake_conn c[MAX_CONNS];
    int nconns;
};

static const char OK_REPLY[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static void conn_close(struct fake_conn *fc)
{
    if (fc->later)
        event_free(fc->later);
    if (fc->rev)
        event_free(fc->rev);
    if (fc->wev)
        event_free(fc->wev);
    fc->later = fc->rev = fc->wev = NULL;
    if (fc->fd >= 0)
        close(fc->fd);
    fc->fd = -1;
}

static size_t route_len(const struct route *rt)
{
    return rt->len ? rt->len : strlen(rt->reply);
}

/* Send what may be sent now; the rest when the socket can take it. */
static void conn_flush(struct fake_conn *fc)
{
    const struct route *rt = fc->rt;

    while (fc->off < fc->stop) {
        ssize_t n = send(fc->fd, rt->reply + fc->off, fc->stop - fc->off, MSG_NOSIGNAL);

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(fc->wev, NULL);
            return;
        }
        if (n <= 0) { /* the client went away (a failed run closes its connections) */
            fc->eof = true;
            conn_close(fc);
            return;
        }
        fc->off += (size_t)n;
    }
    if (fc->off == route_len(rt) && !rt->keep_open)
        conn_close(fc);
}

static void conn_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_flush(arg);
}

static void send_rest(evutil_socket_t fd, short what, void *arg)
{
    struct fake_conn *fc = arg;

    (void)fd;
    (void)what;
    fc->stop = route_len(fc->rt);
    conn_flush(fc);
}

static const struct route *route_of(const struct fake *f, const char *req)
{
    for (int i = 0; i < f->nroutes; i++) {
        size_t pl = strlen(f->routes[i].path);
        const char *sp = strchr(req, ' ');

        if (sp && strncmp(sp + 1, f->routes[i].path, pl) == 0 && sp[1 + pl] == ' ')
            return &f->routes[i];
    }
    return NULL;
}

static void respond(struct fake_conn *fc)
{
    static const struct route ok = {.path = "*", .reply = OK_REPLY};
    const struct route *rt = route_of(fc->f, fc->req);

    fc->rt = rt ? rt : &ok;
    if (fc->rt->hang_up) {
        conn_close(fc);
        return;
    }
    if (fc->rt->reply == NULL)
        return;
    fc->stop = fc->rt->split ? fc->rt->split : route_len(fc->rt);
    if (fc->rt->split) {
        int ms = fc->rt->delay_ms ? fc->rt->delay_ms : 30;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

        fc->later = evtimer_new(base, send_rest, fc);
        evtimer_add(fc->later, &tv);
    }
    conn_flush(fc);
}

static void conn_read(evutil_socket_t fd, short what, void *arg)
{
    struct fake_conn *fc = arg;
    char tmp[8192];
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    size_t room = sizeof(fc->req) - 1 - fc->len, take;

    (void)what;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fc->eof = true;
        conn_close(fc);
        return;
    }
    take = (size_t)n < room ? (size_t)n : room;
    memcpy(fc->req + fc->len, tmp, take);
    fc->len += take;
    fc->req[fc->len] = '\0';
    if (!fc->head && strstr(fc->req, "\r\n\r\n")) {
        fc->head = true;
        respond(fc);
    }
}

static void fake_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct fake *f = arg;
    int fd, one = 1;

    (void)what;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct fake_conn *fc;

        ck_assert_msg(f->nconns < MAX_CONNS, "fake backend %s: too many connections", f->addr);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fc = &f->c[f->nconns++];
        fc->f = f;
        fc->fd = fd;
        fc->rev = event_new(base, fd, EV_READ | EV_PERSIST, conn_read, fc);
        fc->wev = event_new(base, fd, EV_WRITE, conn_writable, fc);
        event_add(fc->rev, NULL);
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

static void fake_start(struct fake *f)
{
    memset(f, 0, sizeof(*f));
    f->lfd = bind_ephemeral(f->addr, sizeof(f->addr));
    ck_assert_int_eq(evutil_make_socket_nonblocking(f->lfd), 0);
    ck_assert_int_eq(listen(f->lfd, 64), 0);
    f->lev = event_new(base, f->lfd, EV_READ | EV_PERSIST, fake_accept, f);
    event_add(f->lev, NULL);
}

static struct route *fake_route(struct fake *f, const char *path, const char *reply)
{
    struct route *rt;

    ck_assert_int_lt(f->nroutes, MAX_ROUTES);
    rt = &f->routes[f->nroutes++];
    memset(rt, 0, sizeof(*rt));
    rt->path = path;
    rt->reply = reply;
    return rt;
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

static bool fake_all_closed_by_client(const void *arg)
{
    const struct fake *f = arg;

    for (int i = 0; i < f->nconns; i++)
        if (f->c[i].fd >= 0 && !f->c[i].eof)
            return false;
    return true;
}

static bool has_head(const void *arg)
{
    return fake_heads(arg) >= 1;
}

static bool has_second_head(const void *arg)
{
    return fake_heads(arg) >= 2;
}

/* The k-th request the fake got is exactly "METHOD PATH" with the documented headers. */
static void assert_request(const struct fake *f, int k, const char *method, const char *path)
{
    char want[8192];

    ck_assert_int_gt(f->nconns, k);
    snprintf(want, sizeof(want),
             "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: veer-preflight\r\n"
             "Connection: close\r\n\r\n",
             method, path, f->addr);
    ck_assert_str_eq(f->c[k].req, want);
}

/* --- backends, pools and lists ------------------------------------------------------------ */

static struct conf_pool pool_plain;

static void backend_at(struct backend *be, const char *name, const char *addr)
{
    char err[200];

    memset(be, 0, sizeof(*be));
    be->name = (char *)name;
    ck_assert_msg(conf_parse_addr(addr, false, &be->addr, err, sizeof(err)) == 0, "%s: %s", addr,
                  err);
}

#define REQ(m, p, st, body)                                                                        \
    {                                                                                              \
        .method = (char *)(m), .path = (char *)(p), .expect_status = (st),                         \
        .expect_body_contains = (char *)(body)                                                     \
    }

static struct conf_preflight list_of(struct conf_preflight_req *reqs, int n, int timeout_ms)
{
    return (struct conf_preflight){
        .name = (char *)"smoke", .timeout_ms = timeout_ms, .requests = reqs, .nrequests = n};
}

/* Run pf against one fake (backend "green-1") to its end; the result. */
static const struct preflight_result *run_one(struct fake *f, const struct conf_preflight *pf,
                                              struct backend *be)
{
    struct backend *list[1] = {be};
    const struct preflight_result *res;

    backend_at(be, "green-1", f->addr);
    preflight_start(base, pf, &pool_plain, list, 1, on_done, &done_rec);
    ck_assert_int_eq(done_rec.calls, 0); /* never from inside preflight_start */
    res = wait_done();
    ck_assert_uint_eq(atomic_load(&be->refs), 0);
    return res;
}

static void assert_failed(const struct preflight_result *res, const char *backend,
                          const char *request, const char *answer)
{
    ck_assert_msg(!res->ok, "passed, expected %s", answer);
    ck_assert_str_eq(res->backend, backend);
    ck_assert_str_eq(res->request, request);
    ck_assert_str_eq(res->answer, answer);
}

static void setup(void)
{
    memset(&done_rec, 0, sizeof(done_rec));
    memset(&pool_plain, 0, sizeof(pool_plain));
    pool_plain.name = (char *)"api";
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
}

static void teardown(void)
{
    event_base_free(base);
    base = NULL;
}

/* --- passing -------------------------------------------------------------------------------- */

START_TEST(test_every_backend_gets_every_request_in_order)
{
    struct fake f[3];
    struct backend be[3];
    struct backend *list[3];
    static const char *const names[] = {"green-1", "green-2", "green-3"};
    struct conf_preflight_req reqs[] = {
        REQ("GET", "/api/health/status", 200, NULL),
        REQ("POST", "/v1/ping?x=1", 201, "pong"),
        REQ("DELETE", "/v1/thing", 204, NULL),
    };
    struct conf_preflight pf = list_of(reqs, 3, 2000);
    const struct preflight_result *res;
    uint64_t t0 = now_us();

    for (int i = 0; i < 3; i++) {
        fake_start(&f[i]);
        fake_route(&f[i], "/v1/ping?x=1",
                   "HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\nping pong");
        fake_route(&f[i], "/v1/thing", "HTTP/1.1 204 No Content\r\n\r\n");
        backend_at(&be[i], names[i], f[i].addr);
        list[i] = &be[i];
    }
    preflight_start(base, &pf, &pool_plain, list, 3, on_done, &done_rec);
    ck_assert_int_eq(done_rec.calls, 0);
    res = wait_done();
    ck_assert_msg(res->ok, "failed: %s %s %s", res->backend, res->request, res->answer);
    ck_assert_uint_eq(res->backends, 3);
    ck_assert_uint_eq(res->requests, 9);
    ck_assert_uint_gt(res->took_us, 0);
    ck_assert_uint_le(res->took_us, done_rec.at_us - t0);
    ck_assert_str_eq(res->backend, "");
    ck_assert_str_eq(res->request, "");
    ck_assert_str_eq(res->answer, "");
    for (int i = 0; i < 3; i++) {
        /* One connection per request, in the list's order, each closed by the checker. */
        ck_assert_int_eq(f[i].nconns, 3);
        assert_request(&f[i], 0, "GET", "/api/health/status");
        assert_request(&f[i], 1, "POST", "/v1/ping?x=1");
        assert_request(&f[i], 2, "DELETE", "/v1/thing");
        ck_assert_uint_eq(atomic_load(&be[i].refs), 0);
        fake_stop(&f[i]);
    }
}
END_TEST

START_TEST(test_next_request_waits_for_the_answer_before)
{
    struct fake f;
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req reqs[] = {REQ("GET", "/slow", 200, NULL),
                                        REQ("GET", "/b", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 2000);
    struct route *rt;

    fake_start(&f);
    rt = fake_route(&f, "/slow", OK_REPLY);
    rt->split = 10; /* the rest 30 ms later */
    backend_at(&be, "green-1", f.addr);
    preflight_start(base, &pf, &pool_plain, list, 1, on_done, &done_rec);
    ck_assert(run_until(has_head, &f, 5000));
    run_for(10);
    ck_assert_int_eq(f.nconns, 1); /* /b not before /slow's answer is whole */
    ck_assert(wait_done()->ok);
    ck_assert_int_eq(f.nconns, 2);
    assert_request(&f, 1, "GET", "/b");
    fake_stop(&f);
}
END_TEST

START_TEST(test_body_text_split_across_chunks_is_found)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/v1/ping", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/v1/ping",
               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nxxpon\r\n4\r\ngxx!\r\n0\r\n\r\n");
    ck_assert(run_one(&f, &pf, &be)->ok);
    fake_stop(&f);
}
END_TEST

START_TEST(test_body_text_split_across_chunks_and_writes_is_found)
{
    static const char reply[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "5\r\nxxpon\r\n4\r\ngxx!\r\n0\r\n\r\n";
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/v1/ping", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    struct route *rt;

    fake_start(&f);
    rt = fake_route(&f, "/v1/ping", reply);
    rt->split = (size_t)(strstr(reply, "pon\r\n") - reply) + 2; /* "...xxpo" | "n\r\n4..." */
    ck_assert(run_one(&f, &pf, &be)->ok);
    fake_stop(&f);
}
END_TEST

START_TEST(test_body_text_split_across_two_writes_is_found)
{
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n"
                                "status: pong ok";
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/v1/ping", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    struct route *rt;

    fake_start(&f);
    rt = fake_route(&f, "/v1/ping", reply);
    rt->split = (size_t)(strstr(reply, "pong") - reply) + 2; /* "...po" | "ng ok" */
    ck_assert(run_one(&f, &pf, &be)->ok);
    fake_stop(&f);
}
END_TEST

/* A 255-byte text (the most kept), its halves in two writes of a 100 kB body. */
START_TEST(test_long_body_text_across_writes_in_a_large_body_is_found)
{
    enum { PAD = 50000, WL = 255 };
    char want[WL + 1], *reply;
    size_t hl, len;
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/big", 200, want)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    struct route *rt;

    for (int i = 0; i < WL; i++)
        want[i] = (char)('a' + i % 26);
    want[WL] = '\0';
    reply = malloc(PAD * 2 + WL + 200);
    hl = (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", PAD * 2 + WL);
    memset(reply + hl, 'x', PAD);
    memcpy(reply + hl + PAD, want, WL);
    memset(reply + hl + PAD + WL, 'y', PAD);
    len = hl + PAD * 2 + WL;
    reply[len] = '\0';
    fake_start(&f);
    rt = fake_route(&f, "/big", reply);
    rt->split = hl + PAD + 100;
    ck_assert(run_one(&f, &pf, &be)->ok);
    fake_stop(&f);
    free(reply);
}
END_TEST

/*
 * A text of 300 bytes is looked for whole: a body with only its first 299
 * fails, one with all of it split across two writes passes.
 */
START_TEST(test_text_over_255_bytes_is_looked_for_whole)
{
    enum { WL = 300 };
    char want[WL + 1], reply[2 * WL + 200];
    size_t hl;
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/t", 200, want)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    struct route *rt;

    for (int i = 0; i < WL; i++)
        want[i] = (char)('A' + i % 26);
    want[WL] = '\0';
    /* The first 299 bytes, then another: not the text. */
    hl = (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", WL + 2);
    memcpy(reply + hl, want, WL - 1);
    memcpy(reply + hl + WL - 1, "!!!", 3);
    reply[hl + WL + 2] = '\0';
    fake_start(&f);
    fake_route(&f, "/t", reply);
    ck_assert(!run_one(&f, &pf, &be)->ok);
    ck_assert_str_eq(done_rec.res.request, "GET /t");
    fake_stop(&f);
    /* The whole text, cut in two writes at every 50th byte. */
    for (size_t cut = 1; cut < WL; cut += 50) {
        memset(&done_rec, 0, sizeof(done_rec));
        hl = (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nxx", WL + 4);
        memcpy(reply + hl, want, WL);
        memcpy(reply + hl + WL, "yy", 3);
        fake_start(&f);
        rt = fake_route(&f, "/t", reply);
        rt->split = hl + cut;
        ck_assert_msg(run_one(&f, &pf, &be)->ok, "cut at %zu: %s", cut, done_rec.res.answer);
        fake_stop(&f);
    }
}
END_TEST

START_TEST(test_body_text_in_neither_write_fails)
{
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"
                                "po--ng pon!";
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/v1/ping", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    struct route *rt;

    fake_start(&f);
    rt = fake_route(&f, "/v1/ping", reply);
    rt->split = strlen(reply) - 3; /* "...po--ng p" | "on!" */
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /v1/ping",
                  "status 200, but the body does not contain \"pong\"");
    fake_stop(&f);
}
END_TEST

/* The answer to a HEAD has no body, whatever its Content-Length says. */
START_TEST(test_head_answer_with_content_length_and_no_body_passes)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("HEAD", "/h", 200, NULL), REQ("GET", "/g", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 2000);
    struct route *rt;
    const struct preflight_result *res;
    uint64_t t0 = now_us();

    fake_start(&f);
    rt = fake_route(&f, "/h", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    rt->keep_open = true; /* the checker must not wait for 1234 bytes or the close */
    res = run_one(&f, &pf, &be);
    ck_assert_msg(res->ok, "failed: %s: %s", res->request, res->answer);
    ck_assert_uint_eq(res->requests, 2);
    ck_assert_uint_lt(done_rec.at_us - t0, 1500000);
    assert_request(&f, 0, "HEAD", "/h");
    assert_request(&f, 1, "GET", "/g");
    fake_stop(&f);
}
END_TEST

START_TEST(test_body_of_exactly_1_mib_passes)
{
    enum { MIB = 1 << 20 };
    char *reply = malloc(MIB + 200);
    size_t hl = (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MIB);
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/big", 200, "end")};
    struct conf_preflight pf = list_of(reqs, 1, 5000);

    memset(reply + hl, 'x', MIB);
    memcpy(reply + hl + MIB - 3, "end", 3);
    reply[hl + MIB] = '\0';
    fake_start(&f);
    fake_route(&f, "/big", reply);
    ck_assert(run_one(&f, &pf, &be)->ok);
    fake_stop(&f);
    free(reply);
}
END_TEST

/* Interim answers (1xx: 100 Continue, 103 Early Hints) come before the one that is judged. */
START_TEST(test_interim_answers_are_skipped)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/hints", 200, "pong"),
                                        REQ("GET", "/cont", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 2000);

    fake_start(&f);
    fake_route(&f, "/hints",
               "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong");
    fake_route(&f, "/cont",
               "HTTP/1.1 100 Continue\r\n\r\n"
               "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /cont", "status 503, expected 200");
    ck_assert_uint_eq(done_rec.res.requests, 1);
    fake_stop(&f);
}
END_TEST

/* A path of 4000 bytes (the config sets no bound) goes out whole. */
START_TEST(test_long_path_is_sent_whole)
{
    char path[4001];
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", path, 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    const struct preflight_result *res;

    path[0] = '/';
    for (size_t i = 1; i < sizeof(path) - 1; i++)
        path[i] = (char)('a' + i % 26);
    path[sizeof(path) - 1] = '\0';
    fake_start(&f);
    res = run_one(&f, &pf, &be);
    ck_assert_msg(res->ok, "failed: %s", res->answer);
    assert_request(&f, 0, "GET", path);
    fake_stop(&f);
}
END_TEST

/* --- failing -------------------------------------------------------------------------------- */

START_TEST(test_wrong_status_fails_with_backend_request_and_answer)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, NULL),
                                        REQ("GET", "/v1/ping", 200, NULL),
                                        REQ("GET", "/never", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 3, 2000);
    const struct preflight_result *res;

    fake_start(&f);
    fake_route(&f, "/v1/ping", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    res = run_one(&f, &pf, &be);
    assert_failed(res, "green-1", "GET /v1/ping", "status 503, expected 200");
    ck_assert_uint_eq(res->backends, 1);
    ck_assert_uint_eq(res->requests, 1);
    ck_assert_uint_gt(res->took_us, 0);
    ck_assert_int_eq(f.nconns, 2); /* the first failure ends the run: /never is not sent */
    fake_stop(&f);
}
END_TEST

START_TEST(test_expected_non_200_status_passes_and_200_then_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/gone", 404, NULL),
                                        REQ("GET", "/ok", 302, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 2000);

    fake_start(&f);
    fake_route(&f, "/gone", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /ok", "status 200, expected 302");
    fake_stop(&f);
}
END_TEST

START_TEST(test_body_without_the_text_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/v1/ping", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/v1/ping", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nPONG");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /v1/ping",
                  "status 200, but the body does not contain \"pong\"");
    fake_stop(&f);
}
END_TEST

START_TEST(test_wrong_status_is_told_before_a_missing_text)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/v1/ping", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/v1/ping", "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nnope");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /v1/ping", "status 500, expected 200");
    fake_stop(&f);
}
END_TEST

START_TEST(test_body_over_1_mib_fails)
{
    enum { LEN = (1 << 20) + 1 };
    char *reply = malloc(LEN + 200);
    size_t hl = (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", LEN);
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/big", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 5000);

    memset(reply + hl, 'x', LEN);
    reply[hl + LEN] = '\0';
    fake_start(&f);
    fake_route(&f, "/big", reply);
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /big",
                  "status 200, body over 1048576 bytes");
    fake_stop(&f);
    free(reply);
}
END_TEST

START_TEST(test_chunked_body_over_1_mib_fails)
{
    enum { CHUNK = 65536, NCHUNKS = 17 }; /* 1 MiB + 64 kB */
    char *reply = malloc((size_t)NCHUNKS * (CHUNK + 16) + 200), *p = reply;
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/big", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 5000);

    p += sprintf(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < NCHUNKS; i++) {
        p += sprintf(p, "%x\r\n", CHUNK);
        memset(p, 'x', CHUNK);
        p += CHUNK;
        p += sprintf(p, "\r\n");
    }
    p += sprintf(p, "0\r\n\r\n");
    fake_start(&f);
    fake_route(&f, "/big", reply);
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /big",
                  "status 200, body over 1048576 bytes");
    fake_stop(&f);
    free(reply);
}
END_TEST

START_TEST(test_answer_cut_in_the_body_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/cut", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/cut", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /cut",
                  "connection closed in the body (status 200)");
    fake_stop(&f);
}
END_TEST

START_TEST(test_chunked_answer_cut_in_the_body_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/cut", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/cut", "HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /cut",
                  "connection closed in the body (status 503)");
    fake_stop(&f);
}
END_TEST

START_TEST(test_answer_cut_in_its_head_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/cut", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/cut", "HTTP/1.1 200 OK\r\nContent-Le");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /cut",
                  "connection closed in the answer's head");
    fake_stop(&f);
}
END_TEST

START_TEST(test_close_without_an_answer_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/bye", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    fake_start(&f);
    fake_route(&f, "/bye", NULL)->hang_up = true;
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /bye",
                  "connection closed before an answer");
    fake_stop(&f);
}
END_TEST

/* An answer that ends at the close (no length, not chunked) is whole: it is judged. */
START_TEST(test_body_until_close_is_judged)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, "pong"),
                                        REQ("GET", "/b", 200, "pong")};
    struct conf_preflight pf = list_of(reqs, 2, 2000);

    fake_start(&f);
    fake_route(&f, "/a", "HTTP/1.1 200 OK\r\n\r\nping pong");
    fake_route(&f, "/b", "HTTP/1.1 200 OK\r\n\r\nping ping");
    assert_failed(run_one(&f, &pf, &be), "green-1", "GET /b",
                  "status 200, but the body does not contain \"pong\"");
    ck_assert_uint_eq(done_rec.res.requests, 1);
    fake_stop(&f);
}
END_TEST

START_TEST(test_malformed_answers_fail)
{
    static const struct {
        const char *reply, *answer;
    } cases[] = {
        {"garbage\r\n\r\n", "malformed answer: HPE_INVALID_CONSTANT"},
        {"HTTP/1.1 abc OK\r\n\r\n", "malformed answer: HPE_INVALID_STATUS"},
        {"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
         "malformed answer: HPE_INVALID_CONTENT_LENGTH"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
         "malformed answer: HPE_INVALID_CHUNK_SIZE"},
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct fake f;
        struct backend be;
        struct conf_preflight_req reqs[] = {REQ("GET", "/m", 200, NULL)};
        struct conf_preflight pf = list_of(reqs, 1, 2000);

        memset(&done_rec, 0, sizeof(done_rec));
        fake_start(&f);
        fake_route(&f, "/m", cases[i].reply)->keep_open = true;
        assert_failed(run_one(&f, &pf, &be), "green-1", "GET /m", cases[i].answer);
        fake_stop(&f);
    }
}
END_TEST

START_TEST(test_no_answer_within_timeout_ms_fails)
{
    struct fake f;
    struct backend be;
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, NULL),
                                        REQ("GET", "/v1/ping", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 200);
    const struct preflight_result *res;
    uint64_t t_head;

    fake_start(&f);
    fake_route(&f, "/v1/ping", NULL); /* read, never answered */
    backend_at(&be, "green-1", f.addr);
    {
        struct backend *list[1] = {&be};

        preflight_start(base, &pf, &pool_plain, list, 1, on_done, &done_rec);
    }
    ck_assert(run_until(has_head, &f, 5000));
    t_head = now_us();
    res = wait_done();
    assert_failed(res, "green-1", "GET /v1/ping", "no answer within 200 ms");
    ck_assert_uint_eq(res->requests, 1);
    /* The deadline is the request's own (from its connect), not the run's. */
    ck_assert_uint_ge(done_rec.at_us - t_head, 150000);
    /* libevent times from the loop's cached clock: a timer may fire a little early. */
    ck_assert_uint_ge(res->took_us, 150000);
    /* Its connection is closed when the run ends. */
    ck_assert(run_until(fake_all_closed_by_client, &f, 2000));
    ck_assert_uint_eq(atomic_load(&be.refs), 0);
    fake_stop(&f);
}
END_TEST

START_TEST(test_refused_connection_fails)
{
    char addr[64];
    int fd = bind_ephemeral(addr, sizeof(addr)); /* bound, not listening: refused */
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req reqs[] = {REQ("GET", "/api/health/status", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);

    backend_at(&be, "green-2", addr);
    preflight_start(base, &pf, &pool_plain, list, 1, on_done, &done_rec);
    assert_failed(wait_done(), "green-2", "GET /api/health/status", "connect: Connection refused");
    ck_assert_uint_eq(done_rec.res.requests, 0);
    ck_assert_uint_eq(done_rec.res.backends, 1);
    ck_assert_uint_eq(atomic_load(&be.refs), 0);
    close(fd);
}
END_TEST

START_TEST(test_no_backend_fails_from_the_loop)
{
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 2000);
    const struct preflight_result *res;

    ck_assert_ptr_nonnull(preflight_start(base, &pf, &pool_plain, NULL, 0, on_done, &done_rec));
    ck_assert_int_eq(done_rec.calls, 0);
    res = wait_done();
    assert_failed(res, "", "", "no READY backend in the canary group");
    ck_assert_uint_eq(res->backends, 0);
    ck_assert_uint_eq(res->requests, 0);
}
END_TEST

/* One failing backend ends the run for all: the others' connections are closed. */
START_TEST(test_one_failing_backend_ends_the_run)
{
    struct fake good, bad;
    struct backend be[2];
    struct backend *list[2] = {&be[0], &be[1]};
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, NULL),
                                        REQ("GET", "/slow", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 2000);

    fake_start(&good);
    fake_route(&good, "/slow", NULL); /* would take the whole timeout */
    fake_start(&bad);
    fake_route(&bad, "/a", "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    backend_at(&be[0], "green-1", good.addr);
    backend_at(&be[1], "green-2", bad.addr);
    preflight_start(base, &pf, &pool_plain, list, 2, on_done, &done_rec);
    assert_failed(wait_done(), "green-2", "GET /a", "status 500, expected 200");
    ck_assert_uint_lt(done_rec.res.took_us, 1500000);
    ck_assert(run_until(fake_all_closed_by_client, &good, 2000));
    ck_assert_uint_eq(atomic_load(&be[0].refs), 0);
    ck_assert_uint_eq(atomic_load(&be[1].refs), 0);
    fake_stop(&good);
    fake_stop(&bad);
}
END_TEST

/* --- cancel ----------------------------------------------------------------------------------- */

START_TEST(test_cancel_mid_run_closes_and_never_calls_back)
{
    struct fake f[2];
    struct backend be[2];
    struct backend *list[2] = {&be[0], &be[1]};
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, "ok"),
                                        REQ("GET", "/slow", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 2, 300);
    struct preflight *run;

    for (int i = 0; i < 2; i++) {
        fake_start(&f[i]);
        fake_route(&f[i], "/slow", NULL);
        backend_at(&be[i], i ? "green-2" : "green-1", f[i].addr);
    }
    run = preflight_start(base, &pf, &pool_plain, list, 2, on_done, &done_rec);
    ck_assert_uint_eq(atomic_load(&be[0].refs), 1);
    /* Both are in /slow's wait (their second connection) before the cancel. */
    for (int i = 0; i < 2; i++)
        ck_assert(run_until(has_second_head, &f[i], 5000));
    preflight_cancel(run);
    ck_assert_uint_eq(atomic_load(&be[0].refs), 0);
    ck_assert_uint_eq(atomic_load(&be[1].refs), 0);
    for (int i = 0; i < 2; i++)
        ck_assert(run_until(fake_all_closed_by_client, &f[i], 2000));
    run_for(400); /* past timeout_ms: no timer of the run is left */
    ck_assert_int_eq(done_rec.calls, 0);
    ck_assert_int_eq(f[0].nconns, 2);
    ck_assert_int_eq(f[1].nconns, 2);
    for (int i = 0; i < 2; i++)
        fake_stop(&f[i]);
}
END_TEST

START_TEST(test_cancel_before_it_began)
{
    struct fake f;
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req reqs[] = {REQ("GET", "/a", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 100);
    struct preflight *run;

    fake_start(&f);
    backend_at(&be, "green-1", f.addr);
    run = preflight_start(base, &pf, &pool_plain, list, 1, on_done, &done_rec);
    preflight_cancel(run);
    ck_assert_uint_eq(atomic_load(&be.refs), 0);
    run_for(200);
    ck_assert_int_eq(done_rec.calls, 0);
    ck_assert_int_eq(f.nconns, 0);
    /* With no backend too. */
    run = preflight_start(base, &pf, &pool_plain, NULL, 0, on_done, &done_rec);
    preflight_cancel(run);
    run_for(50);
    ck_assert_int_eq(done_rec.calls, 0);
    fake_stop(&f);
}
END_TEST

/* The list is copied: the config it came from may go while the run goes on. */
START_TEST(test_the_run_keeps_its_own_copy_of_the_list)
{
    struct fake f;
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req *reqs = calloc(2, sizeof(*reqs));
    struct conf_preflight *pf = calloc(1, sizeof(*pf));

    reqs[0] = (struct conf_preflight_req)REQ(strdup("GET"), strdup("/a"), 200, strdup("ok"));
    reqs[1] = (struct conf_preflight_req)REQ(strdup("HEAD"), strdup("/b"), 200, NULL);
    *pf = list_of(reqs, 2, 2000);
    fake_start(&f);
    backend_at(&be, "green-1", f.addr);
    preflight_start(base, pf, &pool_plain, list, 1, on_done, &done_rec);
    for (int i = 0; i < 2; i++) {
        free(reqs[i].method);
        free(reqs[i].path);
        free(reqs[i].expect_body_contains);
    }
    free(reqs);
    free(pf);
    ck_assert(wait_done()->ok);
    assert_request(&f, 0, "GET", "/a");
    assert_request(&f, 1, "HEAD", "/b");
    fake_stop(&f);
}
END_TEST

/* --- TLS ------------------------------------------------------------------------------------ */

/*
 * A TLS backend in a thread of its own (blocking OpenSSL, a self-signed
 * certificate made here): it takes `expect` connections, reads each
 * request head and answers `reply`; with `plain` it answers in clear text
 * instead, before any handshake.
 */
struct tls_srv {
    int lfd;
    char addr[64];
    SSL_CTX *ctx;
    pthread_t th;
    int expect, n;
    bool plain;
    const char *reply;
    char req[4][1024];
};

static void *tls_srv_main(void *arg)
{
    struct tls_srv *t = arg;
    struct timeval tv = {5, 0};

    for (int k = 0; k < t->expect; k++) {
        int fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC);
        SSL *ssl;
        size_t len = 0;

        if (fd < 0)
            break; /* shut down */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (t->plain) {
            ssize_t w = write(fd, t->reply, strlen(t->reply));

            (void)w;
            close(fd);
            t->n++;
            continue;
        }
        ssl = SSL_new(t->ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            while (len < sizeof(t->req[0]) - 1 && !strstr(t->req[k % 4], "\r\n\r\n")) {
                int r = SSL_read(ssl, t->req[k % 4] + len, (int)(sizeof(t->req[0]) - 1 - len));

                if (r <= 0)
                    break;
                len += (size_t)r;
                t->req[k % 4][len] = '\0';
            }
            SSL_write(ssl, t->reply, (int)strlen(t->reply));
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
        t->n++;
    }
    return NULL;
}

static void tls_srv_start(struct tls_srv *t, int expect, const char *reply, bool plain)
{
    X509 *x = X509_new();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_NAME *name;

    memset(t, 0, sizeof(*t));
    t->expect = expect;
    t->reply = reply;
    t->plain = plain;
    ck_assert_ptr_nonnull(k);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"backend", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
    t->ctx = SSL_CTX_new(TLS_server_method());
    ck_assert_int_eq(SSL_CTX_use_certificate(t->ctx, x), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey(t->ctx, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    t->lfd = bind_ephemeral(t->addr, sizeof(t->addr));
    ck_assert_int_eq(listen(t->lfd, 16), 0);
    ck_assert_int_eq(pthread_create(&t->th, NULL, tls_srv_main, t), 0);
}

static void tls_srv_stop(struct tls_srv *t)
{
    shutdown(t->lfd, SHUT_RDWR); /* wakes an accept still waiting */
    pthread_join(t->th, NULL);
    close(t->lfd);
    SSL_CTX_free(t->ctx);
}

/* A config whose pool "secure" talks TLS to its backends (verify as given), prepared. */
static struct veer_conf *tls_conf(bool verify)
{
    char path[] = "/tmp/check_preflight_XXXXXX", text[512], err[512] = "";
    int fd = mkstemp(path);
    struct veer_conf *c;

    snprintf(text, sizeof(text),
             "listen = ( { address = \"127.0.0.1:0\"; pool = \"secure\"; } );\n"
             "pools = ( { name = \"secure\"; tls = { verify = %s; };\n"
             "  backends = ( { name = \"s1\"; address = \"127.0.0.1:9\"; } ); } );\n",
             verify ? "true" : "false");
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_msg(tls_conf_prepare(c, err, sizeof(err)) == VEER_OK, "%s", err);
    ck_assert(conf_find_pool(c, "secure")->has_tls);
    return c;
}

START_TEST(test_tls_pool_is_checked_over_tls)
{
    struct veer_conf *c = tls_conf(false);
    struct tls_srv t;
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req reqs[] = {REQ("GET", "/health", 200, NULL),
                                        REQ("GET", "/v1/ping", 200, "ok")};
    struct conf_preflight pf = list_of(reqs, 2, 3000);
    const struct preflight_result *res;
    char want[512];

    tls_srv_start(&t, 2, OK_REPLY, false);
    backend_at(&be, "s1", t.addr);
    preflight_start(base, &pf, conf_find_pool(c, "secure"), list, 1, on_done, &done_rec);
    res = wait_done();
    ck_assert_msg(res->ok, "failed: %s: %s", res->request, res->answer);
    ck_assert_uint_eq(res->requests, 2);
    tls_srv_stop(&t);
    ck_assert_int_eq(t.n, 2);
    snprintf(want, sizeof(want),
             "GET /v1/ping HTTP/1.1\r\nHost: %s\r\nUser-Agent: veer-preflight\r\n"
             "Connection: close\r\n\r\n",
             t.addr);
    ck_assert_str_eq(t.req[1], want);
    ck_assert_uint_eq(atomic_load(&be.refs), 0);
    conf_free(c);
}
END_TEST

/* A backend of a TLS pool that answers in clear text fails the handshake. */
START_TEST(test_tls_pool_with_a_plaintext_backend_fails_the_handshake)
{
    struct veer_conf *c = tls_conf(false);
    struct tls_srv t;
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req reqs[] = {REQ("GET", "/health", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 3000);
    const struct preflight_result *res;

    tls_srv_start(&t, 1, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", true);
    backend_at(&be, "s1", t.addr);
    preflight_start(base, &pf, conf_find_pool(c, "secure"), list, 1, on_done, &done_rec);
    res = wait_done();
    ck_assert(!res->ok);
    ck_assert_str_eq(res->backend, "s1");
    ck_assert_str_eq(res->request, "GET /health");
    ck_assert_msg(strncmp(res->answer, "TLS handshake: ", 15) == 0 && strlen(res->answer) > 15,
                  "%s", res->answer);
    tls_srv_stop(&t);
    conf_free(c);
}
END_TEST

/* With verify on, a self-signed certificate is refused. */
START_TEST(test_tls_pool_verifies_the_backend_certificate)
{
    struct veer_conf *c = tls_conf(true);
    struct tls_srv t;
    struct backend be;
    struct backend *list[1] = {&be};
    struct conf_preflight_req reqs[] = {REQ("GET", "/health", 200, NULL)};
    struct conf_preflight pf = list_of(reqs, 1, 3000);
    const struct preflight_result *res;

    tls_srv_start(&t, 1, OK_REPLY, false);
    backend_at(&be, "s1", t.addr);
    preflight_start(base, &pf, conf_find_pool(c, "secure"), list, 1, on_done, &done_rec);
    res = wait_done();
    ck_assert(!res->ok);
    ck_assert_msg(strncmp(res->answer, "TLS handshake: ", 15) == 0, "%s", res->answer);
    ck_assert_msg(strstr(res->answer, "certificate") != NULL, "%s", res->answer);
    tls_srv_stop(&t);
    conf_free(c);
}
END_TEST

/* --- many ---------------------------------------------------------------------------------- */

START_TEST(test_ten_backends_ten_requests_in_parallel)
{
    enum { NB = 10, NR = 10 };
    static struct fake f[NB];
    struct backend be[NB];
    struct backend *list[NB];
    char names[NB][16], paths[NR][16];
    struct conf_preflight_req reqs[NR];
    struct conf_preflight pf;
    const struct preflight_result *res;
    int max_open = 0;

    for (int k = 0; k < NR; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/check/%d", k);
        reqs[k] = (struct conf_preflight_req)REQ("GET", paths[k], 200, k % 2 ? "ok" : NULL);
    }
    pf = list_of(reqs, NR, 2000);
    for (int i = 0; i < NB; i++) {
        struct route *rt;

        fake_start(&f[i]);
        rt = fake_route(&f[i], "/check/0", OK_REPLY);
        /* Each backend's first answer waits 300 ms: all ten are then under way at once. */
        rt->split = 5;
        rt->delay_ms = 300;
        snprintf(names[i], sizeof(names[i]), "green-%d", i + 1);
        backend_at(&be[i], names[i], f[i].addr);
        list[i] = &be[i];
    }
    preflight_start(base, &pf, &pool_plain, list, NB, on_done, &done_rec);
    while (done_rec.calls == 0) {
        int open = 0;

        for (int i = 0; i < NB; i++)
            open += fake_heads(&f[i]) == 1 && f[i].c[0].fd >= 0;
        max_open = open > max_open ? open : max_open;
        ck_assert(event_base_loop(base, EVLOOP_ONCE) == 0);
    }
    res = wait_done();
    ck_assert_msg(res->ok, "failed: %s %s %s", res->backend, res->request, res->answer);
    ck_assert_uint_eq(res->backends, NB);
    ck_assert_uint_eq(res->requests, NB * NR);
    ck_assert_uint_gt(res->took_us, 0);
    ck_assert_int_eq(max_open, NB); /* in parallel, not one backend after the other */
    for (int i = 0; i < NB; i++) {
        ck_assert_int_eq(f[i].nconns, NR);
        for (int k = 0; k < NR; k++)
            assert_request(&f[i], k, "GET", paths[k]);
        ck_assert_uint_eq(atomic_load(&be[i].refs), 0);
        fake_stop(&f[i]);
    }
}
END_TEST

static Suite *preflight_suite(void)
{
    Suite *s = suite_create("preflight");
    TCase *tp = tcase_create("pass");
    TCase *tf = tcase_create("fail");
    TCase *tc = tcase_create("cancel");
    TCase *tm = tcase_create("many");
    TCase *tt = tcase_create("tls");
    TCase *all[] = {tp, tf, tc, tm, tt};

    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], 30);
    }
    tcase_add_test(tp, test_every_backend_gets_every_request_in_order);
    tcase_add_test(tp, test_next_request_waits_for_the_answer_before);
    tcase_add_test(tp, test_body_text_split_across_chunks_is_found);
    tcase_add_test(tp, test_body_text_split_across_chunks_and_writes_is_found);
    tcase_add_test(tp, test_body_text_split_across_two_writes_is_found);
    tcase_add_test(tp, test_long_body_text_across_writes_in_a_large_body_is_found);
    tcase_add_test(tp, test_head_answer_with_content_length_and_no_body_passes);
    tcase_add_test(tp, test_body_of_exactly_1_mib_passes);
    tcase_add_test(tp, test_the_run_keeps_its_own_copy_of_the_list);
    tcase_add_test(tp, test_long_path_is_sent_whole);
    tcase_add_test(tp, test_interim_answers_are_skipped);
    tcase_add_test(tf, test_wrong_status_fails_with_backend_request_and_answer);
    tcase_add_test(tf, test_expected_non_200_status_passes_and_200_then_fails);
    tcase_add_test(tf, test_body_without_the_text_fails);
    tcase_add_test(tf, test_wrong_status_is_told_before_a_missing_text);
    tcase_add_test(tf, test_body_text_in_neither_write_fails);
    tcase_add_test(tf, test_text_over_255_bytes_is_looked_for_whole);
    tcase_add_test(tf, test_body_over_1_mib_fails);
    tcase_add_test(tf, test_chunked_body_over_1_mib_fails);
    tcase_add_test(tf, test_answer_cut_in_the_body_fails);
    tcase_add_test(tf, test_chunked_answer_cut_in_the_body_fails);
    tcase_add_test(tf, test_answer_cut_in_its_head_fails);
    tcase_add_test(tf, test_close_without_an_answer_fails);
    tcase_add_test(tf, test_body_until_close_is_judged);
    tcase_add_test(tf, test_malformed_answers_fail);
    tcase_add_test(tf, test_no_answer_within_timeout_ms_fails);
    tcase_add_test(tf, test_refused_connection_fails);
    tcase_add_test(tf, test_no_backend_fails_from_the_loop);
    tcase_add_test(tf, test_one_failing_backend_ends_the_run);
    tcase_add_test(tc, test_cancel_mid_run_closes_and_never_calls_back);
    tcase_add_test(tc, test_cancel_before_it_began);
    tcase_add_test(tm, test_ten_backends_ten_requests_in_parallel);
    tcase_add_test(tt, test_tls_pool_is_checked_over_tls);
    tcase_add_test(tt, test_tls_pool_with_a_plaintext_backend_fails_the_handshake);
    tcase_add_test(tt, test_tls_pool_verifies_the_backend_certificate);
    for (size_t i = 0; i < ARRAY_SIZE(all); i++)
        suite_add_tcase(s, all[i]);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(preflight_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
