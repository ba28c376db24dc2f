/*
 * check_session.c - session.c on a real worker (worker_create, its own
 * listening socket, config, model and routing snapshot as main.c sets them
 * up), its event loop run step by step by the test thread the way
 * worker_main runs it, over real loopback sockets: a client, veer's
 * listener, and a backend the test accepts and answers itself.
 *
 * A tunnel (after a 101) whose client half-closes while veer's writes to
 * the backend are stalled (EAGAIN from the first byte, or a short write then
 * EAGAIN) passes the half-close on only after its last byte: the backend
 * sees every byte the client sent, then EOF, never EOF first; the way back
 * still works and nothing is counted against the backend. The stall is
 * forced: this executable is linked with --wrap=send and --wrap=sendmsg
 * (tests/meson.build), so every send in veer's code goes through
 * __wrap_send/__wrap_sendmsg below, which refuse or shorten writes to one
 * chosen descriptor while the test says so. Loopback send buffers are far
 * too large (and autotuned) to stall on their own at a chosen moment.
 * txn.c's call of module_request_head is wrapped as well, to publish
 * a snapshot from inside a routing decision.
 *
 * Held requests (maintenance on with --hold) stay held across a publish
 * that does not release them, and the pass over them returns at once
 * instead of spinning until their deadline; the publish that releases them
 * routes each exactly once, even when another publish lands while the
 * first of them is being routed: one connection and one request per held
 * request at the backend, one answer per client, nothing left held or
 * counted active.
 *
 * Each test runs in its own process (Check's fork mode). Every wait is a
 * loop step with a deadline.
 */
#include "conf.h"
#include "listener.h"
#include "module.h"
#include "model.h"
#include "session.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"
#include "workerfix.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* --- the send gate: linker-wrapped send(2) and sendmsg(2) ------------------------------- */

ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
ssize_t __real_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_sendmsg(int fd, const struct msghdr *msg, int flags);

/*
 * While gate.fd is a descriptor, writes to it take at most gate.budget
 * bytes in all (a short write when a call asks for more), then fail with
 * EAGAIN as a full socket would; gate.refused counts those failures. Other
 * descriptors are never touched.
 */
static struct {
    int fd;
    size_t budget;
    unsigned refused;
} gate = {.fd = -1};

/* Bytes of len the gate lets through to fd now; 0 means refuse with EAGAIN. */
static size_t gate_allows(int fd, size_t len)
{
    if (fd != gate.fd || gate.fd < 0)
        return len;
    if (gate.budget == 0)
        gate.refused++;
    return len < gate.budget ? len : gate.budget;
}

static void gate_spent(int fd, ssize_t n)
{
    if (fd == gate.fd && gate.fd >= 0 && n > 0)
        gate.budget -= (size_t)n;
}

ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
    size_t allow = gate_allows(fd, len);
    ssize_t n;

    if (len && allow == 0) {
        errno = EAGAIN;
        return -1;
    }
    n = __real_send(fd, buf, allow, flags);
    gate_spent(fd, n);
    return n;
}

ssize_t __wrap_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct iovec iov[16];
    struct msghdr m = *msg;
    size_t len = 0, allow;
    ssize_t n;

    for (size_t i = 0; i < msg->msg_iovlen; i++)
        len += msg->msg_iov[i].iov_len;
    allow = gate_allows(fd, len);
    if (allow == len)
        return __real_sendmsg(fd, msg, flags);
    if (allow == 0) {
        errno = EAGAIN;
        return -1;
    }
    /* A short write: the same iovecs, cut after `allow` bytes. */
    m.msg_iov = iov;
    m.msg_iovlen = 0;
    for (size_t i = 0; i < msg->msg_iovlen && allow && i < 16; i++) {
        iov[i] = msg->msg_iov[i];
        if (iov[i].iov_len > allow)
            iov[i].iov_len = allow;
        allow -= iov[i].iov_len;
        m.msg_iovlen++;
    }
    n = __real_sendmsg(fd, &m, flags);
    gate_spent(fd, n);
    return n;
}

/* --- a worker run by the test thread (workerfix.h) ----------------------------------------- */

static int backend_fd; /* the backend's listening socket */

#define CONF                                                                                       \
    "workers = 1;\n"                                                                               \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ( { name = \"api-1\"; address = \"127.0.0.1:%d\"; } "  \
    "); %s"                                                                                        \
    "} );\n"

/*
 * A backend listener, a config pointing at it, its model and first snapshot,
 * the modules, and one worker on its own listening socket, as main.c's run()
 * sets them up, minus the thread: the test runs the loop (step()).
 */
static void start_pool(const char *pool_extra)
{
    char text[512];

    gate.fd = -1;
    backend_fd = tcp_listener(16);
    snprintf(text, sizeof(text), CONF, local_port(backend_fd), pool_extra);
    wfix_start(text, WFIX_MODULES | WFIX_LISTEN | WFIX_TICK);
}

static void start(void)
{
    start_pool("");
}

static void stop(void)
{
    wfix_stop();
    close(backend_fd);
}

/*
 * A publish from inside a routing decision: txn.c's call to
 * module_request_head (the first step of route()) is wrapped too, and
 * publishes once when asked, as the control thread may at any moment (a
 * slow-start tick, a shift). The pick right after it then switches the
 * worker to the new snapshot, in the middle of whatever is routing.
 */
int __real_module_request_head(struct txn *t);
int __wrap_module_request_head(struct txn *t);

static bool publish_in_route;

int __wrap_module_request_head(struct txn *t)
{
    if (publish_in_route) {
        publish_in_route = false;
        publish();
    }
    return __real_module_request_head(t);
}

static int connect_client(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)fx.port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_msg(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    ck_assert_int_eq(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* What a peer received so far; eof once it read the end of the stream. */
struct inbox {
    int fd;
    char data[32768];
    size_t len;
    bool eof;
};

/* Take what is readable now; fails the test on an error other than EAGAIN. */
static void inbox_read(struct inbox *b)
{
    for (;;) {
        ssize_t n;

        if (b->eof)
            return;
        ck_assert_msg(b->len < sizeof(b->data) - 1, "%zu bytes came, more than this suite sends",
                      b->len);
        n = recv(b->fd, b->data + b->len, sizeof(b->data) - 1 - b->len, MSG_DONTWAIT);
        if (n > 0) {
            b->len += (size_t)n;
            b->data[b->len] = '\0';
            continue;
        }
        if (n == 0) {
            b->eof = true;
            return;
        }
        ck_assert_msg(errno == EAGAIN, "recv: %s", strerror(errno));
        return;
    }
}

static bool has_head(void *arg)
{
    struct inbox *b = arg;

    inbox_read(b);
    return strstr(b->data, "\r\n\r\n") != NULL || b->eof;
}

static bool has_eof(void *arg)
{
    struct inbox *b = arg;

    inbox_read(b);
    return b->eof;
}

static bool accepted(void *arg)
{
    int *fd = arg;

    *fd = accept4(backend_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return *fd >= 0;
}

static int accept_backend(void)
{
    int fd = -1;

    ck_assert_msg(run_until(accepted, &fd), "veer did not connect to the backend");
    return fd;
}

/* --- tunnels ------------------------------------------------------------------------------ */

#define UPGRADE                                                                                    \
    "GET /chat HTTP/1.1\r\nHost: veer.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
#define SWITCHING                                                                                  \
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

#define TUNNEL_BYTES 8000 /* fits veer's client buffer: it reads on to the EOF while stalled */

static bool client_eof_read(void *arg)
{
    struct session *s = arg;

    return s->c.client_eof;
}

/*
 * Client <-> veer <-> backend, tunnelled after a 101. With veer's writes to
 * the backend stalled, the client sends TUNNEL_BYTES and half-closes; veer
 * reads the half-close while bytes are still queued for the backend. The
 * backend must not see EOF then (only what got through, if anything); once
 * the backend's socket takes bytes again it gets all of them, in order, and
 * then EOF. The backend's answer and close still reach the client, and the
 * tunnel closes with no failure counted. _i = 0: every write refused from
 * the first; _i = 1: a short write of 3000 bytes, then refused.
 */
START_TEST(test_tunnel_half_close_follows_the_last_byte_written)
{
    size_t budget = _i ? 3000 : 0;
    struct inbox up = {0}, client = {0};
    char payload[TUNNEL_BYTES];
    struct session *s;
    struct txn *t;
    struct backend *be;

    start();
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (char)('a' + i * 7 % 26);
    client.fd = connect_client();
    send_all(client.fd, UPGRADE, strlen(UPGRADE));
    up.fd = accept_backend();
    ck_assert_msg(run_until(has_head, &up), "no request head at the backend: %s", up.data);
    ck_assert_msg(strncmp(up.data, "GET /chat HTTP/1.1\r\n", 20) == 0, "%s", up.data);
    ck_assert_msg(strcasestr(up.data, "\r\nUpgrade: websocket\r\n") != NULL, "%s", up.data);
    send_all(up.fd, SWITCHING, strlen(SWITCHING));
    ck_assert_msg(run_until(has_head, &client), "no 101 at the client: %s", client.data);
    ck_assert_msg(strncmp(client.data, "HTTP/1.1 101 ", 13) == 0, "%s", client.data);
    up.len = client.len = 0;
    up.data[0] = client.data[0] = '\0';

    s = fx.w->sessions;
    ck_assert_ptr_nonnull(s);
    t = s->txn;
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->phase, TXN_TUNNEL);
    ck_assert_ptr_nonnull(t->up);
    be = t->be;

    /* The backend's socket is "full" from now on; the client sends and half-closes. */
    gate.fd = t->up->fd;
    gate.budget = budget;
    gate.refused = 0;
    send_all(client.fd, payload, sizeof(payload));
    ck_assert_int_eq(shutdown(client.fd, SHUT_WR), 0);
    ck_assert_msg(run_until(client_eof_read, s), "veer did not read the client's half-close");
    ck_assert_msg(gate.refused > 0, "veer never tried to write to the backend");
    ck_assert_ptr_eq(s->txn, t);
    ck_assert_uint_eq(t->req_parsed - t->req_sent, sizeof(payload) - budget); /* still queued */

    /* Only what got through, and no EOF: the half-close waits for the rest. */
    inbox_read(&up);
    ck_assert_msg(!up.eof, "the backend got EOF with %zu of %zu bytes written", up.len,
                  sizeof(payload));
    ck_assert_uint_eq(up.len, budget);
    ck_assert_int_eq(memcmp(up.data, payload, up.len), 0);

    /* Room again: the rest goes out, then the half-close. */
    gate.fd = -1;
    ck_assert_msg(run_until(has_eof, &up), "no EOF at the backend after %zu bytes", up.len);
    ck_assert_uint_eq(up.len, sizeof(payload));
    ck_assert_int_eq(memcmp(up.data, payload, sizeof(payload)), 0);

    /* The other direction is untouched: the backend answers and closes. */
    send_all(up.fd, "bye", 3);
    close(up.fd);
    ck_assert_msg(run_until(has_eof, &client), "the client got no EOF: %s", client.data);
    ck_assert_str_eq(client.data, "bye");
    ck_assert_uint_eq(fx.w->nsessions, 0);
    ck_assert_uint_eq(backend_wstat_failures(&be->ws[0]), 0);
    close(client.fd);
    stop();
}
END_TEST

/* --- the hold queue ----------------------------------------------------------------------- */

#define NHELD   3
#define HOLD_MS 10000 /* far beyond what the test takes: only a publish may release them */

/*
 * The backend side of the hold test: every connection veer opens, and
 * every request head on them, answered with its path as the body.
 */
static struct {
    struct inbox c[2 * NHELD];
    int nconns;
    int nreqs;
    size_t done[2 * NHELD]; /* bytes of c[i] already answered */
    char paths[4 * NHELD][32];
} srv;

static void serve(void)
{
    int fd;

    while (srv.nconns < 2 * NHELD && accepted(&fd))
        srv.c[srv.nconns++].fd = fd;
    for (int i = 0; i < srv.nconns; i++) {
        struct inbox *b = &srv.c[i];
        char *end, resp[256];

        inbox_read(b);
        while ((end = strstr(b->data + srv.done[i], "\r\n\r\n")) != NULL) {
            char *path = &srv.paths[srv.nreqs < 4 * NHELD ? srv.nreqs : 4 * NHELD - 1][0];

            ck_assert_int_eq(sscanf(b->data + srv.done[i], "GET %31s HTTP/1.1", path), 1);
            srv.nreqs++;
            srv.done[i] = (size_t)(end + 4 - b->data);
            snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%.31s",
                     strlen(path), path);
            send_all(b->fd, resp, strlen(resp));
        }
    }
}

/* A whole response in b (Content-Length framing), or EOF. */
static bool response_in(struct inbox *b)
{
    const char *end, *cl;

    inbox_read(b);
    if (b->eof)
        return true;
    end = strstr(b->data, "\r\n\r\n");
    if (end == NULL)
        return false;
    cl = strcasestr(b->data, "\r\nContent-Length: ");
    ck_assert_ptr_nonnull(cl);
    return b->len - (size_t)(end + 4 - b->data) >= strtoul(cl + 18, NULL, 10);
}

static bool all_answered(void *arg)
{
    struct inbox *clients = arg;
    bool all = true;

    serve();
    for (int k = 0; k < NHELD; k++)
        all = response_in(&clients[k]) && all;
    return all;
}

static bool held_n(void *arg)
{
    return fx.w->held.n == *(unsigned *)arg;
}

static bool switched(void *arg)
{
    return fx.w->routing == routing_current();
}

/* `maintenance on|off --hold MS` for every pool, as maintenance_apply() sets the model, published.
 */
static void maintenance(bool on, int64_t hold_ms)
{
    fx.m->maint = on;
    fx.m->maint_retry_after = on ? 5 : 0;
    fx.m->maint_hold_ms = on ? hold_ms : 0;
    publish();
}

/*
 * NHELD requests, on a connection each, held by maintenance --hold. A
 * publish that leaves maintenance on (a weight change, say) retries them:
 * they stay held, the pass returns at once, nothing reaches a client or
 * the backend. Maintenance off, with one more publish landing inside the
 * first request's routing decision (the worker switches snapshots there):
 * each is routed exactly once, gets its own answer, and nothing is left
 * held or counted active on the backend.
 */
START_TEST(test_held_requests_are_routed_once_when_a_snapshot_releases_them)
{
    struct inbox clients[NHELD];
    unsigned want = NHELD;
    struct backend *be;
    uint64_t t0, took;
    char req[128];
    int fd;

    start();
    memset(&srv, 0, sizeof(srv));
    memset(clients, 0, sizeof(clients));
    be = fx.m->pools[0].b[0].be;
    maintenance(true, HOLD_MS);
    for (int k = 0; k < NHELD; k++) {
        clients[k].fd = connect_client();
        snprintf(req, sizeof(req), "GET /held-%d HTTP/1.1\r\nHost: veer.test\r\n\r\n", k);
        send_all(clients[k].fd, req, strlen(req));
    }
    ck_assert_msg(run_until(held_n, &want), "held: %u of %u", fx.w->held.n, want);

    /* A publish that does not release them. */
    publish();
    t0 = now_ms();
    ck_assert(run_until(switched, NULL));
    for (int i = 0; i < 3; i++)
        step(); /* the retry pass runs from the loop, after the switch */
    took = now_ms() - t0;
    ck_assert_msg(took < HOLD_MS / 4, "the retry pass took %llu ms", (unsigned long long)took);
    ck_assert_uint_eq(fx.w->held.n, NHELD);
    ck_assert_uint_eq(atomic_load(&fx.w->mstat.held), NHELD);
    for (int k = 0; k < NHELD; k++) {
        inbox_read(&clients[k]);
        ck_assert_msg(clients[k].len == 0 && !clients[k].eof, "client %d got: %s", k,
                      clients[k].data);
    }
    ck_assert(!accepted(&fd));

    /*
     * Maintenance off: each goes to the backend once, even with another
     * publish arriving while the first of them is being routed.
     */
    publish_in_route = true;
    maintenance(false, 0);
    ck_assert_msg(run_until(all_answered, clients), "answered: %d requests at the backend",
                  srv.nreqs);
    for (int i = 0; i < 3; i++) {
        step();
        serve(); /* a second routing of one would show up here */
    }
    ck_assert(!publish_in_route);
    ck_assert_ptr_eq(fx.w->routing, routing_current()); /* it switched to that one */
    ck_assert_int_eq(srv.nconns, NHELD);
    ck_assert_int_eq(srv.nreqs, NHELD);
    for (int k = 0; k < NHELD; k++) {
        char path[32];
        int seen = 0;

        snprintf(path, sizeof(path), "/held-%d", k);
        for (int i = 0; i < srv.nreqs; i++)
            seen += strcmp(srv.paths[i], path) == 0;
        ck_assert_msg(seen == 1, "%s reached the backend %d times", path, seen);
        ck_assert_msg(strncmp(clients[k].data, "HTTP/1.1 200 ", 13) == 0, "client %d: %s", k,
                      clients[k].data);
        ck_assert_str_eq(strstr(clients[k].data, "\r\n\r\n") + 4, path);
    }
    ck_assert_uint_eq(fx.w->held.n, 0);
    ck_assert_uint_eq(atomic_load(&fx.w->mstat.held), 0);
    ck_assert_uint_eq(fx.w->stats.requests, NHELD);
    ck_assert_uint_eq(backend_active(be), 0);
    for (int i = 0; i < srv.nconns; i++)
        close(srv.c[i].fd);
    for (int k = 0; k < NHELD; k++)
        close(clients[k].fd);
    stop();
}
END_TEST

/* --- a local answer during a retry's backoff ---------------------------------------- */

/* txn.c's worker_rand, to choose a seed whose first backoff is long. */
static uint64_t xorshift(uint64_t x)
{
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

#define BACKOFF_MS 400 /* retries.base_ms and cap_ms: the first backoff is in [0, 400] ms */

static bool retry_armed(void *arg)
{
    struct session *s = fx.w->sessions;

    (void)arg;
    return s && s->txn && s->txn->retry_armed;
}

static bool armed_off(void *arg)
{
    struct txn *t = arg;

    return !t->retry_armed;
}

/*
 * A chunked GET whose first attempt fails (the backend closes without a
 * byte) waits out its retry backoff; meanwhile the client sends a malformed
 * chunk and veer answers 400 itself. That answer ends the request: the retry
 * timer must go with it, or it fires while the 400 is still going out (the
 * client's socket is full here) and sends the request to the backend again
 * from a transaction that is already answering.
 */
START_TEST(test_local_answer_during_retry_backoff_disarms_the_retry)
{
    static const char head[] = "GET /r HTTP/1.1\r\nHost: veer.test\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    struct inbox client = {0};
    uint64_t seed = 1, waited;
    struct session *s;
    struct txn *t;
    int up, again = -1;

    start_pool("retries = { count = 2; base_ms = 400; cap_ms = 400; budget_percent = 100; };");
    /* A seed whose first backoff is at least 200 ms, so the test sees it armed. */
    while (xorshift(seed) % (BACKOFF_MS * 1000 + 1) < 200 * 1000)
        seed++;
    fx.w->rng = seed;
    client.fd = connect_client();
    send_all(client.fd, head, strlen(head));
    up = accept_backend();
    close(up); /* the first attempt fails before any response byte */
    ck_assert_msg(run_until(retry_armed, NULL), "the failed attempt was not retried later");
    s = fx.w->sessions;
    t = s->txn;
    /* The client reads nothing for now; its bad chunk gets veer's own 400. */
    gate.fd = s->fd;
    gate.budget = 0;
    gate.refused = 0;
    send_all(client.fd, "zz\r\n", 4);
    ck_assert_msg(run_until(armed_off, t), "the retry timer stayed armed after the 400");
    ck_assert_int_eq(t->phase, TXN_LOCAL);
    ck_assert_int_eq(t->res_status, 400);
    /* Past the longest backoff: nothing may reach the backend again. */
    waited = now_ms() + BACKOFF_MS + 200;
    while (now_ms() < waited) {
        step();
        again = accept4(backend_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        ck_assert_msg(again < 0, "the request was sent to the backend again after the 400");
    }
    gate.fd = -1;
    ck_assert_msg(run_until(has_eof, &client), "the client got no answer: %s", client.data);
    ck_assert_msg(strncmp(client.data, "HTTP/1.1 400 ", 13) == 0, "%s", client.data);
    close(client.fd);
    stop();
}
END_TEST

static Suite *session_suite(void)
{
    Suite *s = suite_create("session");
    TCase *tt = tcase_create("tunnel");
    TCase *th = tcase_create("hold");
    TCase *tr = tcase_create("retry");

    tcase_add_loop_test(tt, test_tunnel_half_close_follows_the_last_byte_written, 0, 2);
    tcase_add_test(th, test_held_requests_are_routed_once_when_a_snapshot_releases_them);
    tcase_add_test(tr, test_local_answer_during_retry_backoff_disarms_the_retry);
    suite_add_tcase(s, tt);
    suite_add_tcase(s, th);
    suite_add_tcase(s, tr);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(session_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
