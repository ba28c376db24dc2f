/*
 * preflight.c - a rollout's pre-flight checks (preflight.h).
 *
 * One probe per backend walks the list: connect (non-blocking), TLS when
 * the pool talks TLS to its backends, write the request, read the answer
 * with llhttp (response mode: Content-Length, chunked or until close),
 * judge it, close, next request. The answer to a HEAD has no body,
 * whatever its Content-Length says; a close before the answer's end fails
 * it. Each request has its own deadline (timeout_ms from its connect). The
 * body is not kept: expect_body_contains is looked for as the body
 * streams, with the last len-1 bytes carried over so a match across two
 * reads is found. A body is read up to BODY_MAX bytes; a longer one fails
 * the request.
 */
#include "preflight.h"
#include "sbuf.h"
#include "tls.h"
#include "veer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <llhttp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY_MAX (1u << 20)

struct req {
    char *method, *path, *contains;
    int status;
};

struct probe {
    struct preflight *run;
    struct backend *be;
    unsigned next; /* the request under way */
    int fd;
    struct event *io, *timer;
    struct ssl_st *tls;
    bool connected, handshaken, sent;
    struct sbuf out; /* the request, whatever the path's length */
    size_t out_off;
    llhttp_t parser;
    int status;
    bool got, head_done, complete, found; /* got: a byte of the answer */
    /* The tail of the body read so far (len(contains) - 1 bytes), and room to join it to the
     * start of the next piece: each sized for the longest text of the list. */
    char *carry, *join;
    size_t carry_len, body;
    char err[160]; /* a failure found while starting, told from the loop (timeout_cb) */
};

struct preflight {
    struct event_base *base;
    const struct conf_pool *cp;
    struct req *reqs;
    unsigned nreqs;
    int timeout_ms;
    struct probe *p;
    unsigned n, left;
    preflight_done_fn done;
    void *arg;
    struct preflight_result res;
    uint64_t t0;
    struct event *later; /* n == 0: the failure is told from the loop */
};

static llhttp_settings_t settings;

static void probe_close(struct probe *p)
{
    if (p->io)
        event_free(p->io);
    p->io = NULL;
    if (p->tls)
        tls_free(p->tls);
    p->tls = NULL;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

static void run_free(struct preflight *run)
{
    for (unsigned i = 0; i < run->n; i++) {
        probe_close(&run->p[i]);
        if (run->p[i].timer)
            event_free(run->p[i].timer);
        backend_put(run->p[i].be);
        sb_free(&run->p[i].out);
        free(run->p[i].carry);
        free(run->p[i].join);
    }
    for (unsigned i = 0; i < run->nreqs; i++) {
        free(run->reqs[i].method);
        free(run->reqs[i].path);
        free(run->reqs[i].contains);
    }
    if (run->later)
        event_free(run->later);
    free(run->reqs);
    free(run->p);
    free(run);
}

static void finish(struct preflight *run)
{
    run->res.took_us = veer_now_us() - run->t0;
    run->done(run->arg, &run->res);
    run_free(run);
}

/* p's request failed: the run ends with what came back. */
static void fail(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct probe *p, const char *fmt, ...)
{
    struct preflight *run = p->run;
    const struct req *q = &run->reqs[p->next];
    va_list ap;

    run->res.ok = false;
    snprintf(run->res.backend, sizeof(run->res.backend), "%s", p->be->name);
    snprintf(run->res.request, sizeof(run->res.request), "%s %s", q->method, q->path);
    va_start(ap, fmt);
    vsnprintf(run->res.answer, sizeof(run->res.answer), fmt, ap);
    va_end(ap);
    finish(run);
}

static void start_request(struct probe *p);
static void timeout_cb(evutil_socket_t fd, short what, void *arg);

/* p's request passed: the next one, or this backend is done (and maybe the run). */
static void passed(struct probe *p)
{
    struct preflight *run = p->run;

    probe_close(p);
    event_del(p->timer);
    run->res.requests++;
    if (++p->next < run->nreqs) {
        start_request(p);
        return;
    }
    if (--run->left == 0) {
        run->res.ok = true;
        finish(run);
    }
}

/* --- the answer ---------------------------------------------------------------------- */

static int on_status_complete(llhttp_t *h)
{
    struct probe *p = h->data;

    p->status = llhttp_get_status_code(h);
    return 0;
}

/* The answer's head is in. The answer to a HEAD has no body whatever it says: 1 tells llhttp so. */
static int on_headers_complete(llhttp_t *h)
{
    struct probe *p = h->data;

    p->head_done = true;
    return strcmp(p->run->reqs[p->next].method, "HEAD") == 0;
}

static int on_body(llhttp_t *h, const char *at, size_t len)
{
    struct probe *p = h->data;
    const char *want = p->run->reqs[p->next].contains;
    size_t wl, keep;

    p->body += len;
    if (p->body > BODY_MAX)
        return -1;
    if (want == NULL || p->found)
        return 0;
    wl = strlen(want);
    /* Across the boundary: the carry and the start of this piece (wl - 1 bytes of each at most). */
    if (p->carry_len > 0) {
        size_t take = len < wl - 1 ? len : wl - 1;

        memcpy(p->join, p->carry, p->carry_len);
        memcpy(p->join + p->carry_len, at, take);
        p->found = memmem(p->join, p->carry_len + take, want, wl) != NULL;
    }
    if (!p->found)
        p->found = memmem(at, len, want, wl) != NULL;
    if (p->found)
        return 0;
    /* Keep the last wl - 1 bytes of carry + piece. */
    if (len >= wl - 1) {
        memcpy(p->carry, at + len - (wl - 1), wl - 1);
        p->carry_len = wl - 1;
    } else {
        keep = p->carry_len < wl - 1 - len ? p->carry_len : wl - 1 - len;
        memmove(p->carry, p->carry + p->carry_len - keep, keep);
        memcpy(p->carry + keep, at, len);
        p->carry_len = keep + len;
    }
    return 0;
}

static int on_message_complete(llhttp_t *h)
{
    struct probe *p = h->data;

    if (p->status >= 100 && p->status < 200 && p->status != 101) {
        /* An interim answer (100 Continue, 103 Early Hints): the final one follows. */
        p->status = 0;
        p->head_done = false;
        return 0;
    }
    p->complete = true;
    return HPE_PAUSED;
}

static void judge(struct probe *p)
{
    const struct req *q = &p->run->reqs[p->next];

    if (p->status != q->status) {
        fail(p, "status %d, expected %d", p->status, q->status);
        return;
    }
    if (q->contains && !p->found) {
        fail(p, "status %d, but the body does not contain \"%.100s\"", p->status, q->contains);
        return;
    }
    passed(p);
}

/* --- the connection ------------------------------------------------------------------ */

static void io_cb(evutil_socket_t fd, short what, void *arg);

static void want_io(struct probe *p, short what)
{
    if (p->io)
        event_free(p->io);
    p->io = event_new(p->run->base, p->fd, what, io_cb, p);
    event_add(p->io, NULL);
}

static int do_write(struct probe *p)
{
    while (p->out_off < p->out.len) {
        ssize_t n;

        if (p->tls) {
            struct iovec iov = {p->out.s + p->out_off, p->out.len - p->out_off};

            n = tls_writev(p->tls, &iov, 1);
        } else {
            n = send(p->fd, p->out.s + p->out_off, p->out.len - p->out_off, MSG_NOSIGNAL);
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0) {
            fail(p, "send: %s", n < 0 ? strerror(errno) : "connection closed");
            return -1;
        }
        p->out_off += (size_t)n;
    }
    p->sent = true;
    return 1;
}

/* Read what there is; 1 when the answer is complete, 0 for more, -1 after failing. */
static int do_read(struct probe *p)
{
    char buf[16384];

    for (;;) {
        ssize_t n;
        enum tls_want tw = TLS_WANT_NOTHING;
        llhttp_errno_t e;

        n = p->tls ? tls_read(p->tls, buf, sizeof(buf), &tw) : recv(p->fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0) {
            fail(p, "recv: %s", strerror(errno));
            return -1;
        }
        if (n == 0) {
            /* The close ends an answer without a length; any other is cut short. */
            llhttp_finish(&p->parser);
            if (p->complete)
                return 1;
            if (p->head_done)
                fail(p, "connection closed in the body (status %d)", p->status);
            else if (p->got)
                fail(p, "connection closed in the answer's head");
            else
                fail(p, "connection closed before an answer");
            return -1;
        }
        p->got = true;
        e = llhttp_execute(&p->parser, buf, (size_t)n);
        if (p->complete)
            return 1;
        if (e != HPE_OK) {
            if (p->body > BODY_MAX)
                fail(p, "status %d, body over %u bytes", p->status, BODY_MAX);
            else
                fail(p, "malformed answer: %s", llhttp_errno_name(e));
            return -1;
        }
    }
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    int rc;

    (void)fd;
    (void)what;
    if (!p->connected) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            fail(p, "connect: %s", strerror(err ? err : errno));
            return;
        }
        p->connected = true;
        if (p->run->cp->has_tls) {
            char host[INET6_ADDRSTRLEN] = "";
            const struct sockaddr_storage *ss = &p->be->addr.ss;

            inet_ntop(ss->ss_family,
                      ss->ss_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)ss)->sin_addr,
                      host, sizeof(host));
            p->tls = tls_connect(p->run->cp, p->fd, host);
            if (p->tls == NULL) {
                fail(p, "TLS: cannot start");
                return;
            }
        }
    }
    if (p->tls && !p->handshaken) {
        enum tls_want want = TLS_WANT_NOTHING;
        char why[200] = "";

        rc = tls_handshake(p->tls, &want, why, sizeof(why));
        if (rc == VEER_ERROR) {
            fail(p, "TLS handshake: %s", why);
            return;
        }
        if (rc == VEER_AGAIN) {
            want_io(p, want == TLS_WANT_WRITE ? EV_WRITE : EV_READ);
            return;
        }
        p->handshaken = true;
    }
    if (!p->sent) {
        rc = do_write(p);
        if (rc < 0)
            return;
        if (rc == 0) {
            want_io(p, EV_WRITE);
            return;
        }
    }
    rc = do_read(p);
    if (rc == 0)
        want_io(p, EV_READ);
    else if (rc == 1)
        judge(p);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;

    (void)fd;
    (void)what;
    if (p->err[0])
        fail(p, "%s", p->err);
    else
        fail(p, "no answer within %d ms", p->run->timeout_ms);
}

/* A failure while starting a request: told from the loop, never inside the caller. */
static void fail_soon(struct probe *p, const char *what)
{
    static const struct timeval now = {0, 0};

    snprintf(p->err, sizeof(p->err), "%s: %s", what, strerror(errno));
    evtimer_add(p->timer, &now);
}

static void start_request(struct probe *p)
{
    struct preflight *run = p->run;
    const struct req *q = &run->reqs[p->next];
    struct timeval tv = {run->timeout_ms / 1000, (run->timeout_ms % 1000) * 1000};

    p->connected = p->handshaken = p->sent = p->got = p->head_done = p->complete = p->found = false;
    p->err[0] = '\0';
    p->status = 0;
    p->carry_len = p->body = 0;
    p->out_off = 0;
    sb_reset(&p->out);
    sb_printf(&p->out,
              "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: veer-preflight\r\n"
              "Connection: close\r\n\r\n",
              q->method, q->path, p->be->addr.text);
    llhttp_init(&p->parser, HTTP_RESPONSE, &settings);
    p->parser.data = p;
    evtimer_add(p->timer, &tv);
    p->fd = socket(p->be->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        fail_soon(p, "socket");
        return;
    }
    if (connect(p->fd, (const struct sockaddr *)&p->be->addr.ss, p->be->addr.len) < 0 &&
        errno != EINPROGRESS) {
        fail_soon(p, "connect");
        return;
    }
    want_io(p, EV_WRITE);
}

/* The run begins from the loop, so nothing it does can end it inside preflight_start. */
static void begin(evutil_socket_t fd, short what, void *arg)
{
    struct preflight *run = arg;

    (void)fd;
    (void)what;
    if (run->n == 0) {
        run->res.ok = false;
        snprintf(run->res.answer, sizeof(run->res.answer), "no READY backend in the canary group");
        finish(run);
        return;
    }
    for (unsigned i = 0; i < run->n; i++)
        start_request(&run->p[i]); /* never ends the run itself (fail_soon) */
}

struct preflight *preflight_start(struct event_base *base, const struct conf_preflight *pf,
                                  const struct conf_pool *cp, struct backend *const *bes,
                                  unsigned n, preflight_done_fn done, void *arg)
{
    struct preflight *run = veer_calloc(1, sizeof(*run));
    size_t maxw = 1; /* the longest expect_body_contains */

    if (settings.on_status_complete == NULL) {
        llhttp_settings_init(&settings);
        settings.on_status_complete = on_status_complete;
        settings.on_headers_complete = on_headers_complete;
        settings.on_body = on_body;
        settings.on_message_complete = on_message_complete;
    }
    run->base = base;
    run->cp = cp;
    run->timeout_ms = pf->timeout_ms;
    run->done = done;
    run->arg = arg;
    run->t0 = veer_now_us();
    run->nreqs = (unsigned)pf->nrequests;
    run->reqs = veer_calloc(run->nreqs, sizeof(*run->reqs));
    for (unsigned i = 0; i < run->nreqs; i++) {
        const struct conf_preflight_req *q = &pf->requests[i];

        run->reqs[i].method = veer_strdup(q->method);
        run->reqs[i].path = veer_strdup(q->path);
        run->reqs[i].contains = q->expect_body_contains && q->expect_body_contains[0]
                                    ? veer_strdup(q->expect_body_contains)
                                    : NULL;
        if (run->reqs[i].contains && strlen(run->reqs[i].contains) > maxw)
            maxw = strlen(run->reqs[i].contains);
        run->reqs[i].status = q->expect_status;
    }
    run->n = run->left = n;
    run->res.backends = n;
    run->p = veer_calloc(n ? n : 1, sizeof(*run->p));
    for (unsigned i = 0; i < n; i++) {
        run->p[i].run = run;
        run->p[i].be = bes[i];
        run->p[i].fd = -1;
        run->p[i].carry = veer_malloc(maxw);
        run->p[i].join = veer_malloc(2 * maxw);
        backend_hold(bes[i]);
        run->p[i].timer = evtimer_new(base, timeout_cb, &run->p[i]);
    }
    {
        static const struct timeval now = {0, 0};

        run->later = evtimer_new(base, begin, run);
        evtimer_add(run->later, &now);
    }
    return run;
}

void preflight_cancel(struct preflight *run)
{
    run_free(run);
}
