/*
 * health.c - active readiness checks on the control thread. See health.h.
 *
 * One check at a time per backend: non-blocking connect, one write of the
 * request, read until the status line is in, close; over TLS (handshake
 * first) when the pool talks TLS to its backends. Every step shares one
 * deadline (timeout_ms from the start of the check). Nothing here blocks.
 */
#include "health.h"
#include "tls.h"
#include "veer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct hcheck {
    struct backend *be;
    struct conf_health hc;
    struct event *timer; /* next check */
    struct event *io;    /* the check in progress */
    int fd;
    const struct conf_pool *tls_pool; /* TLS to the backend, else NULL */
    struct ssl_st *tls;
    bool connected;
    bool handshaken;
    char buf[128];
    size_t len;
    uint64_t started_us;
    struct hcheck *next;
};

static struct {
    struct event_base *base;
    health_cb cb;
    struct hcheck *checks;
    uint64_t rng;
} hs;

static uint64_t rnd(void)
{
    uint64_t x = hs.rng ? hs.rng : (veer_now_us() | 1);

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return hs.rng = x;
}

static void schedule(struct hcheck *c, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    evtimer_add(c->timer, &tv);
}

/* interval_ms +/- 10%, so checks of many backends spread out (64 bits: up to 1.1 * INT_MAX). */
static int64_t jittered(const struct hcheck *c)
{
    int64_t spread = c->hc.interval_ms / 10;

    return c->hc.interval_ms - spread +
           (spread ? (int64_t)(rnd() % (uint64_t)(2 * spread + 1)) : 0);
}

static void end_check(struct hcheck *c, bool ok, const char *why)
{
    uint64_t took = veer_now_us() - c->started_us;

    if (c->io) {
        event_free(c->io);
        c->io = NULL;
    }
    if (c->tls) {
        tls_free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    schedule(c, jittered(c));
    hs.cb(c->be, ok, took, why);
}

/* Remaining time of the check, for the next wait. */
static struct timeval remaining(const struct hcheck *c)
{
    uint64_t end = c->started_us + (uint64_t)c->hc.timeout_ms * 1000, now = veer_now_us();
    uint64_t left = end > now ? end - now : 1;

    return (struct timeval){(time_t)(left / 1000000), (suseconds_t)(left % 1000000)};
}

static void io_cb(evutil_socket_t fd, short what, void *arg);
static void handshake(struct hcheck *c);

static void wait_io(struct hcheck *c, short what)
{
    struct timeval tv = remaining(c);

    if (c->io)
        event_free(c->io);
    c->io = event_new(hs.base, c->fd, what, io_cb, c);
    event_add(c->io, &tv);
}

#define HEALTH_REQUEST                                                                             \
    "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: veer-health\r\nConnection: close\r\n\r\n"

/* The request, from a heap buffer when the path does not fit the stack one. */
static void send_request(struct hcheck *c)
{
    char small[512], *req = small;
    int n = snprintf(small, sizeof(small), HEALTH_REQUEST, c->hc.path, c->be->addr.text);
    struct iovec iov;
    bool sent;

    if (n >= (int)sizeof(small)) {
        req = veer_malloc((size_t)n + 1);
        snprintf(req, (size_t)n + 1, HEALTH_REQUEST, c->hc.path, c->be->addr.text);
    }
    iov = (struct iovec){req, n < 0 ? 0 : (size_t)n};
    sent = n >= 0 &&
           (c->tls ? tls_writev(c->tls, &iov, 1) : send(c->fd, req, (size_t)n, MSG_NOSIGNAL)) == n;
    if (req != small)
        free(req);
    if (!sent) {
        end_check(c, false, "cannot send the request");
        return;
    }
    wait_io(c, EV_READ);
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/*
 * Judge the status line: "HTTP/1.x SP 3DIGIT", then SP or the end of the
 * line (RFC 9112 4); 2xx passes. Nothing looser: "HTTP/1.1 2000" is not 200.
 */
static void judge(struct hcheck *c)
{
    const char *b = c->buf;
    char why[96];
    int status;

    if (c->len < 12 || memcmp(b, "HTTP/1.", 7) != 0 || !is_digit(b[7]) || b[8] != ' ' ||
        !is_digit(b[9]) || !is_digit(b[10]) || !is_digit(b[11]) ||
        (c->len > 12 && b[12] != ' ' && b[12] != '\r' && b[12] != '\n')) {
        end_check(c, false, "malformed response");
        return;
    }
    status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    if (status >= 200 && status < 300) {
        end_check(c, true, NULL);
        return;
    }
    snprintf(why, sizeof(why), "status %d", status);
    end_check(c, false, why);
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hcheck *c = arg;
    char why[96];
    ssize_t n;

    if (what & EV_TIMEOUT) {
        end_check(c, false, c->connected ? "timeout waiting for the response" : "connect timeout");
        return;
    }
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof(err);

        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            snprintf(why, sizeof(why), "connect: %s", strerror(err));
            end_check(c, false, why);
            return;
        }
        c->connected = true;
        if (c->tls_pool)
            handshake(c);
        else
            send_request(c);
        return;
    }
    if (c->tls_pool && !c->handshaken) {
        handshake(c);
        return;
    }
    if (c->tls) {
        enum tls_want want;

        n = tls_read(c->tls, c->buf + c->len, sizeof(c->buf) - 1 - c->len, &want);
    } else {
        n = recv(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        wait_io(c, EV_READ);
        return;
    }
    if (n <= 0) {
        if (c->len)
            judge(c);
        else
            end_check(c, false, n == 0 ? "closed without a response" : strerror(errno));
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (memchr(c->buf, '\n', c->len) || c->len == sizeof(c->buf) - 1)
        judge(c);
    else
        wait_io(c, EV_READ);
}

/* The TLS handshake, one step; the request goes out when it is done. */
static void handshake(struct hcheck *c)
{
    const struct conf_addr *a = &c->be->addr;
    char why[160], host[INET6_ADDRSTRLEN] = "";
    enum tls_want want;
    int rc;

    if (c->tls == NULL) {
        inet_ntop(a->ss.ss_family,
                  a->ss.ss_family == AF_INET6
                      ? (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr
                      : (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr,
                  host, sizeof(host));
        c->tls = tls_connect(c->tls_pool, c->fd, host);
        if (c->tls == NULL) {
            end_check(c, false, "cannot set up TLS");
            return;
        }
    }
    rc = tls_handshake(c->tls, &want, why + 5, sizeof(why) - 5);
    if (rc == VEER_AGAIN) {
        wait_io(c, want == TLS_WANT_WRITE ? EV_WRITE : EV_READ);
        return;
    }
    if (rc == VEER_ERROR) {
        memcpy(why, "TLS: ", 5);
        end_check(c, false, why);
        return;
    }
    c->handshaken = true;
    send_request(c);
}

static void start_check(evutil_socket_t fd0, short what, void *arg)
{
    struct hcheck *c = arg;
    const struct conf_addr *a = &c->be->addr;
    char why[96];

    c->started_us = veer_now_us();
    c->connected = false;
    c->handshaken = false;
    c->len = 0;
    c->fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        end_check(c, false, why);
        return;
    }
    if (connect(c->fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
        c->connected = true;
        if (c->tls_pool)
            handshake(c);
        else
            send_request(c);
        return;
    }
    if (errno != EINPROGRESS) {
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        end_check(c, false, why);
        return;
    }
    wait_io(c, EV_WRITE);
}

void health_init(struct event_base *base, health_cb cb)
{
    hs.base = base;
    hs.cb = cb;
}

void health_watch(struct backend *be, const struct conf_pool *cp)
{
    const struct conf_health *hc = &cp->health;
    struct hcheck *c = veer_calloc(1, sizeof(*c));

    c->be = be;
    c->hc = *hc;
    c->tls_pool = cp->has_tls ? cp : NULL;
    c->fd = -1;
    c->timer = evtimer_new(hs.base, start_check, c);
    c->next = hs.checks;
    hs.checks = c;
    /* First check soon, spread over a tenth of the interval. */
    schedule(c, (int)(rnd() % (uint64_t)(hc->interval_ms / 10 + 1)));
}

static void check_free(struct hcheck *c)
{
    if (c->io)
        event_free(c->io);
    if (c->tls)
        tls_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    event_free(c->timer);
    free(c);
}

void health_rebind(struct backend *be, const struct conf_pool *cp)
{
    for (struct hcheck *c = hs.checks; c; c = c->next) {
        if (c->be == be) {
            c->hc = cp->health;
            c->tls_pool = cp->has_tls ? cp : NULL;
            return;
        }
    }
}

void health_unwatch(struct backend *be)
{
    for (struct hcheck **pp = &hs.checks; *pp; pp = &(*pp)->next) {
        if ((*pp)->be == be) {
            struct hcheck *c = *pp;

            *pp = c->next;
            check_free(c);
            return;
        }
    }
}

void health_shutdown(void)
{
    while (hs.checks) {
        struct hcheck *c = hs.checks;

        hs.checks = c->next;
        check_free(c);
    }
}
