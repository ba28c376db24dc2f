/*
 * session.c - a client connection speaking HTTP/1: accept, TLS, read and
 * frame requests (pipelined ones in order), hand each to its transaction
 * (txn.c), write its response, keep the connection alive, linger before
 * closing, tunnel after a 101, hand idle connections over in an upgrade.
 * See session.h for the buffer model and txn.h for the interface with the
 * transaction.
 *
 * Internal steps return VEER_OK (the transaction goes on), VEER_DONE (it
 * ended and the session may start the next one) or VEER_ERROR (the session
 * was closed: touch nothing). Only session_process() loops over pipelined
 * requests, so a burst of them never recurses.
 */
#include "session.h"
#include "mirror.h"
#include "tls.h"
#include "inherit.h"
#include "txn.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static void client_read_cb(evutil_socket_t fd, short what, void *arg);
static void client_write_cb(evutil_socket_t fd, short what, void *arg);
static int session_process(struct session *s);
static int flush_client(struct txn *t);
static const struct txn_client_ops session_ops;

static inline struct session *session_of(struct txn_client *c)
{
    return container_of(c, struct session, c);
}

/* A new transaction for the next request on s. */
static struct txn *session_txn_start(struct session *s)
{
    struct txn *t = txn_new(&s->c, s->l->pool);

    event_assign(&t->cwev, s->c.w->base, s->fd, EV_WRITE | EV_PERSIST, client_write_cb, s);
    s->txn = t;
    return t;
}

/* The transaction of s is over: free it (see txn_free). */
static void session_txn_free(struct session *s, bool upstream_reusable)
{
    struct txn *t = s->txn;

    event_del(&t->cwev);
    txn_free(t, upstream_reusable);
    s->txn = NULL;
}

/* --- session lifecycle -------------------------------------------------- */

/*
 * Watch the client for bytes, with a timeout. Re-arming with the timeout
 * already set is skipped: a persistent event restarts its timer on every
 * read anyway, and this is on the path of every request.
 */
static void client_want_read(struct session *s, bool on, const struct timeval *tv)
{
    if (on) {
        /* Bytes TLS already decrypted will not make the socket readable. */
        if (s->tls && !s->handshaking && tls_pending(s->tls))
            event_active(&s->rev, EV_READ, 0);
        if (s->c.reading && s->rev_tv == tv && tv)
            return;
        event_add(&s->rev, tv);
        s->c.reading = true;
        s->rev_tv = tv;
    } else if (s->c.reading) {
        event_del(&s->rev);
        s->c.reading = false;
        s->rev_tv = NULL;
    }
}

void session_accept(struct wlistener *l, int fd, const struct sockaddr *peer, socklen_t plen)
{
    struct worker *w = l->w;
    struct session *s = veer_calloc(1, sizeof(*s));

    s->magic = SESSION_MAGIC;
    s->c.ops = &session_ops;
    s->c.w = w;
    s->l = l;
    s->fd = fd;
    if (plen > sizeof(s->c.peer))
        plen = sizeof(s->c.peer);
    memcpy(&s->c.peer, peer, plen);
    event_assign(&s->rev, w->base, fd, EV_READ | EV_PERSIST, client_read_cb, s);
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    if (l->lc->tls) {
        s->tls = tls_accept(l->lc, fd);
        if (s->tls == NULL) {
            log_err("TLS listener %s: cannot set up a connection", l->lc->addr.text);
            session_close(s);
            return;
        }
        s->handshaking = true;
        s->c.tls = true;
    }
    client_want_read(s, true, w->tv_header);
}

/*
 * Point rev at readability or, while TLS must write before it can read on
 * (a handshake flight, a post-handshake message), at writability. Armed
 * or not, with the same timeout, as before.
 */
static void client_rev_mode(struct session *s, bool write)
{
    bool on = s->c.reading;

    if (s->rev_write == write)
        return;
    event_del(&s->rev);
    event_assign(&s->rev, s->c.w->base, s->fd, (write ? EV_WRITE : EV_READ) | EV_PERSIST,
                 client_read_cb, s);
    s->rev_write = write;
    if (on)
        event_add(&s->rev, s->rev_tv);
}

/* Read the client's bytes into s->c.in: read(2) semantics, TLS or not. */
static ssize_t client_read(struct session *s)
{
    enum tls_want want;
    ssize_t n;

    if (s->tls == NULL)
        return vbuf_read(s->c.in, s->fd);
    n = tls_read(s->tls, s->c.in->data + s->c.in->end, vbuf_room(s->c.in), &want);
    if (n > 0)
        s->c.in->end += (uint32_t)n;
    else if (n < 0 && errno == EAGAIN)
        client_rev_mode(s, want == TLS_WANT_WRITE);
    return n;
}

static ssize_t client_writev(struct session *s, const struct iovec *iov, int cnt)
{
    if (s->tls)
        return tls_writev(s->tls, iov, cnt);
    return vbuf_sendv(s->fd, iov, cnt);
}

/* Half-close towards the client: close_notify first on TLS. */
static void client_shutdown_write(struct session *s)
{
    if (s->tls)
        tls_close_notify(s->tls);
    shutdown(s->fd, SHUT_WR);
}

void session_close(struct session *s)
{
    struct worker *w = s->c.w;

    if (s->c.dead)
        return;
    s->c.dead = true;
    if (s->txn)
        session_txn_free(s, false);
    event_del(&s->rev);
    if (s->tls) {
        tls_close_notify(s->tls); /* the client's close_notify, answered; or ours, first */
        tls_free(s->tls);
        s->tls = NULL;
    }
    close(s->fd);
    s->fd = -1;
    vbuf_put(&w->bufs, s->c.in);
    s->c.in = NULL;
    atomic_fetch_sub_explicit(&veer_client_connections, 1, memory_order_relaxed);
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    s->next = w->dead_sessions;
    w->dead_sessions = s;
}

void session_free(struct session *s)
{
    s->magic = 0;
    free(s);
}

/*
 * Close after the last response without racing the client: stop sending,
 * then read and discard what the client still sends until it closes or a
 * short while passes, so unread bytes never turn our close into a reset
 * that would destroy the response in flight (nginx's lingering close).
 */
static int session_linger(struct session *s)
{
    struct worker *w = s->c.w;

    if (s->txn)
        session_txn_free(s, false);
    if (s->c.client_eof) {
        session_close(s);
        return VEER_ERROR;
    }
    client_shutdown_write(s);
    s->c.closing = true;
    vbuf_put(&w->bufs, s->c.in);
    s->c.in = NULL;
    client_want_read(s, true, w->tv_quiet);
    return VEER_ERROR;
}

static void linger_read(struct session *s)
{
    char sink[4096];
    ssize_t n;

    do {
        n = read(s->fd, sink, sizeof(sink));
    } while (n > 0);
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
        session_close(s);
}

/* Between requests: give the buffer back, wait for the next request. */
static void session_idle(struct session *s)
{
    struct worker *w = s->c.w;

    if (vbuf_len(s->c.in) == 0) {
        vbuf_put(&w->bufs, s->c.in);
        s->c.in = NULL;
    }
    client_want_read(s, true, w->shutting_down ? w->tv_quiet : w->tv_idle);
}

/*
 * Upgrade: pass an idle connection (no request in progress, nothing
 * buffered) to the new process, which adopts it as its own session. Bytes
 * the client sends meanwhile wait in the socket for the new owner. Returns
 * true when the session is gone from this process.
 */
bool session_try_handover(struct session *s)
{
    struct worker *w = s->c.w;

    if (!w->handover || s->txn || vbuf_len(s->c.in) || s->c.closing || s->c.dead ||
        s->c.client_eof || s->tls)
        return false; /* a TLS connection's keys cannot move: it closes at a request boundary */
    if (handover_send(w->handover_chan, s->fd, s->l->addr, &s->c.peer.sa,
                      s->c.peer.sa.sa_family == AF_INET6 ? sizeof(s->c.peer.in6)
                                                         : sizeof(s->c.peer.in4)) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            worker_handover_full(w); /* offered again when there is room */
        return false;
    }
    w->handed_over++;
    session_close(s); /* closes our copy only: the socket lives on in the new process */
    return true;
}

void session_shutdown_notice(struct session *s)
{
    if (session_try_handover(s))
        return;
    if (s->txn == NULL && !s->c.closing)
        client_want_read(s, true, s->c.w->tv_quiet);
}

/* --- ending a transaction ----------------------------------------------- */

/*
 * The response is fully written. Give the upstream connection back to the
 * pool when it is clean, then keep the client connection for the next
 * request or close it.
 */
static int txn_end(struct txn *t)
{
    struct session *s = session_of(t->s);
    bool reusable = txn_upstream_reusable(t);

    s->c.w->stats.responses++;
    if (t->close_client || s->c.client_eof) {
        txn_release_upstream(t, reusable);
        return session_linger(s);
    }
    /* Whatever of this request is still buffered (a body never sent) goes. */
    s->c.in->start += t->req_parsed;
    session_txn_free(s, reusable);
    if (session_try_handover(s))
        return VEER_ERROR; /* moved to the new process */
    return VEER_DONE;
}

/* --- writing to the client ---------------------------------------------- */

static void client_want_write(struct txn *t, bool on)
{
    struct worker *w = t->s->w;

    if (on)
        event_add(&t->cwev, w->tv_idle);
    else
        event_del(&t->cwev);
}

/*
 * Write the pending response head and body bytes to the client. Under
 * backpressure, stop reading the backend until the client drains.
 */
static int flush_client(struct txn *t)
{
    struct session *s = session_of(t->s);
    struct vbuf *h = t->res_head, *b = t->rin;
    struct iovec iov[2];
    int cnt = 0;
    uint32_t hlen = h ? vbuf_len(h) - t->res_head_sent : 0;
    ssize_t n;

    if (hlen) {
        iov[cnt].iov_base = h->data + h->start + t->res_head_sent;
        iov[cnt++].iov_len = hlen;
    }
    if (t->res_parsed) {
        iov[cnt].iov_base = b->data + b->start;
        iov[cnt++].iov_len = t->res_parsed;
    }
    if (cnt) {
        n = client_writev(s, iov, cnt);
        if (n < 0) {
            if (errno != EAGAIN) {
                session_close(s);
                return VEER_ERROR;
            }
            n = 0;
        }
        t->bytes_out += (uint64_t)n;
        if ((uint32_t)n >= hlen) {
            t->res_head_sent += hlen;
            n -= hlen;
            b = t->rin;
            if (n) {
                b->start += (uint32_t)n;
                t->res_parsed -= (uint32_t)n;
            }
        } else {
            t->res_head_sent += (uint32_t)n;
        }
        if ((h && t->res_head_sent < vbuf_len(h)) || t->res_parsed) {
            client_want_write(t, true);
            txn_response_pause(t);
            return VEER_OK;
        }
    }
    client_want_write(t, false);
    if (b && b->start == b->end)
        b->start = b->end = 0;
    if (t->res_done)
        return txn_end(t);
    if (t->phase == TXN_TUNNEL && t->up_eof) {
        client_shutdown_write(s);
        if (s->c.client_eof) {
            session_close(s);
            return VEER_ERROR;
        }
        return VEER_OK;
    }
    txn_response_resume(t);
    return VEER_OK;
}

/*
 * After a write to the client: a 1xx that went out lets the final head be
 * parsed; a transaction that ended lets the next pipelined request start.
 */
static void client_flushed(struct session *s, struct txn *t, int rc)
{
    /* t may be gone (ended and freed): look at it only while it is s's. */
    if (rc == VEER_OK && s->txn == t && !t->res_head_done && t->phase == TXN_FORWARD && t->rin &&
        t->rin->end > t->rin->start + t->res_parsed)
        rc = txn_process_response(t);
    if (rc == VEER_DONE)
        session_process(s);
}

static void client_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    struct txn *t = s->txn;

    CHECK_OBJ(s, SESSION_MAGIC);
    CHECK_OBJ(t, TXN_MAGIC);
    if (what & EV_TIMEOUT) {
        session_close(s); /* client stopped reading */
        return;
    }
    client_flushed(s, t, flush_client(t));
}

/* --- reading from the client -------------------------------------------- */

static int parse_request_body(struct txn *t)
{
    struct vbuf *in = t->s->in;
    char *data = in->data + in->start + t->req_parsed;
    size_t len = in->end - (in->start + t->req_parsed), used;
    enum http_result r;

    if (t->req_done)
        return VEER_OK; /* len may be 0: that completes a bodiless request */
    r = http_parse(t->req, in->data + in->start, data, len, &used);
    t->req_parsed += (uint32_t)used;
    t->bytes_in += used;
    if (r == HTTP_MSG_DONE || r == HTTP_UPGRADED) {
        t->req_done = true;
    } else if (r == HTTP_INVALID) {
        return txn_request_invalid(t);
    }
    if (unlikely(t->mirror != NULL))
        mirror_tee(t, data, used);
    return VEER_OK;
}

/*
 * The request head is not complete yet. The client gets client_header_ms
 * from the request's first byte for the whole head, however slowly it
 * trickles in (slowloris): the timer is set to what is left of it.
 */
static int wait_request_head(struct txn *t)
{
    struct session *s = session_of(t->s);
    uint64_t deadline = t->start_us + (uint64_t)s->c.w->conf->timeouts.client_header_ms * 1000;
    uint64_t now = veer_now_us();
    struct timeval tv;

    if (now >= deadline)
        return txn_local_response(t, 408, "request head not received in time", true);
    tv.tv_sec = (time_t)((deadline - now) / 1000000);
    tv.tv_usec = (suseconds_t)((deadline - now) % 1000000);
    event_add(&s->rev, &tv);
    s->c.reading = true;
    s->rev_tv = NULL;
    return VEER_OK;
}

/*
 * A request head is in, with what came of its body framed: the
 * connection's part (keep-alive), then the transaction routes it.
 */
static int request_head(struct session *s, struct txn *t)
{
    struct worker *w = s->c.w;

    s->nreq++;
    if (!http_keep_alive(t->req) || (w->shutting_down && (!w->handover || s->tls)))
        t->close_client = true;
    return txn_head_ready(t);
}

/*
 * Run the session forward with the bytes it has: parse heads, hand off to
 * the backend, start the next pipelined request when one ends.
 */
static int session_process(struct session *s)
{
    int rc;

    for (;;) {
        struct txn *t = s->txn;
        struct vbuf *in = s->c.in;

        if (s->c.dead || s->c.closing)
            return VEER_ERROR;
        if (t == NULL) {
            if (vbuf_len(in) == 0) {
                session_idle(s);
                return VEER_OK;
            }
            t = session_txn_start(s);
        }
        switch (t->phase) {
        case TXN_REQ_HEAD: {
            size_t used;
            enum http_result r;

            r = http_parse(t->req, in->data + in->start, in->data + in->start + t->req_parsed,
                           in->end - (in->start + t->req_parsed), &used);
            t->req_parsed += (uint32_t)used;
            if (r == HTTP_NEED_MORE)
                return wait_request_head(t);
            if (r == HTTP_INVALID) {
                rc = txn_request_invalid(t);
            } else {
                /* Frame the body bytes that came along (0 bytes completes a bodiless request). */
                rc = parse_request_body(t);
                /* A body refused in this same read was answered: nothing is routed. */
                if (rc == VEER_OK && s->txn == t && t->phase == TXN_REQ_HEAD)
                    rc = request_head(s, t);
            }
            break;
        }
        case TXN_FORWARD:
            rc = parse_request_body(t);
            if (rc == VEER_OK && s->txn == t)
                rc = txn_defer(&s->c, TXN_FLUSH_UPSTREAM);
            break;
        case TXN_TUNNEL:
            t->last_io_us = veer_now_us();
            t->req_parsed = vbuf_len(in);
            rc = txn_defer(&s->c, TXN_FLUSH_UPSTREAM);
            break;
        case TXN_HELD:
            rc = parse_request_body(t); /* frame what arrives while it waits */
            break;
        default:
            rc = VEER_OK;
            break;
        }
        if (rc != VEER_DONE)
            return rc;
    }
}

/* The client closed its side. */
static void client_eof(struct session *s)
{
    struct txn *t = s->txn;

    s->c.client_eof = true;
    client_want_read(s, false, NULL);
    if (t == NULL || t->phase == TXN_REQ_HEAD ||
        (!t->req_done && (t->phase == TXN_FORWARD || t->phase == TXN_HELD))) {
        /* Nothing asked, or the request is cut short: nothing to answer. */
        session_close(s);
        return;
    }
    if (t->phase == TXN_TUNNEL) {
        /* The backend's half-close follows the last byte, in flush_upstream. */
        if (t->up && txn_flush_upstream(t) == VEER_ERROR)
            return;
        if (t->up_eof)
            session_close(s);
    }
    /* Otherwise the response still goes out; the session closes after it. */
}

static void client_timeout(struct session *s)
{
    struct worker *w = s->c.w;
    struct txn *t = s->txn;
    int rc;

    if (s->c.closing || t == NULL) {
        session_close(s); /* idle, quiet period over, or lingering done */
        return;
    }
    switch (t->phase) {
    case TXN_REQ_HEAD:
        rc = txn_local_response(t, 408, "request head not received in time", true);
        break;
    case TXN_FORWARD:
        if (t->req_done)
            return; /* waiting for the backend: its own timeouts apply */
        rc = t->res_head_done
                 ? (session_close(s), VEER_ERROR)
                 : txn_local_response(t, 408, "request body not received in time", true);
        break;
    case TXN_TUNNEL:
        if (veer_now_us() - t->last_io_us >= (uint64_t)w->conf->timeouts.idle_ms * 1000)
            session_close(s);
        return;
    default:
        return;
    }
    if (rc == VEER_DONE)
        session_process(s);
}

/*
 * Make room in the client buffer. A head may grow the buffer up to the
 * configured limits; body or pipelined bytes never do: the caller stops
 * reading until the backend has taken what is there.
 */
static int client_room(struct session *s)
{
    struct worker *w = s->c.w;
    struct txn *t = s->txn;
    uint32_t shift;

    if (vbuf_room(s->c.in))
        return VEER_OK;
    if (t && t->phase == TXN_REQ_HEAD) {
        if (vbuf_reserve(&w->bufs, &s->c.in, 1, w->head_buf_limit, &shift) == 0)
            return VEER_OK;
        return txn_local_response(t, t->req->line_len ? 431 : 414,
                                  t->req->line_len ? "header section too large"
                                                   : "request line too long",
                                  true) == VEER_ERROR
                   ? VEER_ERROR
                   : VEER_AGAIN;
    }
    if (s->c.in->start)
        vbuf_compact(s->c.in);
    if (vbuf_room(s->c.in))
        return VEER_OK;
    if (t && t->req_held) {
        /* Holding for a retry would stall the upload: give up the retry. */
        txn_release_held(t);
        vbuf_compact(s->c.in);
        if (vbuf_room(s->c.in))
            return VEER_OK;
    }
    client_want_read(s, false, NULL);
    return VEER_AGAIN;
}

/*
 * TLS before reading: finish the handshake (the client's first bytes may
 * come with its last flight), and put rev back on readability after TLS
 * waited to write. VEER_OK when the connection is ready to be read.
 */
static int tls_step(struct session *s)
{
    enum tls_want want;
    char why[160];
    int rc;

    if (s->rev_write)
        client_rev_mode(s, false);
    if (!s->handshaking)
        return VEER_OK;
    rc = tls_handshake(s->tls, &want, why, sizeof(why));
    if (rc == VEER_AGAIN) {
        client_rev_mode(s, want == TLS_WANT_WRITE);
        return VEER_AGAIN;
    }
    if (rc == VEER_ERROR) {
        log_debug("TLS handshake on %s failed: %s", s->l->addr, why);
        session_close(s);
        return VEER_ERROR;
    }
    s->handshaking = false;
    return VEER_OK;
}

static void client_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    struct worker *w = s->c.w;
    ssize_t n;
    int rc;

    CHECK_OBJ(s, SESSION_MAGIC);
    if (what & EV_TIMEOUT) {
        client_timeout(s);
        return;
    }
    if (s->c.closing) {
        linger_read(s);
        return;
    }
    if (s->tls && tls_step(s) != VEER_OK)
        return;
    if (s->c.in == NULL)
        s->c.in = vbuf_get(&w->bufs);
    rc = client_room(s);
    if (rc != VEER_OK) {
        if (rc == VEER_DONE)
            session_process(s);
        return;
    }
    n = client_read(s);
    if (n > 0) {
        session_process(s);
        /* A full buffer may have left decrypted bytes behind: come back for them. */
        if (!s->c.dead && s->tls && s->c.reading && tls_pending(s->tls))
            event_active(&s->rev, EV_READ, 0);
        return;
    }
    if (n == 0) {
        client_eof(s);
        return;
    }
    if (errno == EAGAIN || errno == EINTR)
        return;
    session_close(s);
}

/*
 * The send phase reached s (txn_run_flushes): write what its transaction
 * queued while the sockets were read, the request side first.
 */
static void session_flush(struct txn_client *c, unsigned what)
{
    struct session *s = session_of(c);
    struct txn *t = s->txn;
    int rc = VEER_OK;

    if (t == NULL)
        return;
    if ((what & TXN_FLUSH_UPSTREAM) && t->up)
        rc = txn_flush_upstream(t);
    if (rc == VEER_OK && s->txn == t && (what & TXN_FLUSH_CLIENT)) {
        client_flushed(s, t, flush_client(t));
        return;
    }
    if (rc == VEER_DONE)
        session_process(s);
}

/* --- what a transaction asks of its session (txn.h, struct txn_client_ops) ---------- */

/*
 * The client's head of a response: HTTP/1 framing for this client. The
 * final head decides whether the connection closes after the response (the
 * request was not read whole, shutdown without a handover, a response
 * delimited by the close, an HTTP/1.0 client of a chunked response, which
 * gets it de-chunked). A 1xx is relayed to HTTP/1.1 clients only.
 */
static void session_response_head(struct txn *t, bool final)
{
    struct session *s = session_of(t->s);
    struct worker *w = s->c.w;
    struct http_msg *res = t->res, *req = t->req;
    const char *head = t->rin->data + t->rin->start;
    bool close;

    vbuf_put(&w->bufs, t->res_head);
    t->res_head = NULL;
    if (!final) {
        if (req->minor == 1) {
            t->res_head = txn_head_buf(w, http_response_bound(res));
            t->res_head->end =
                (uint32_t)http_build_response(res, head, false, false, t->res_head->data);
            t->res_head_sent = 0;
        }
        return;
    }
    if (!t->req_done || (w->shutting_down && (!w->handover || s->tls)) ||
        llhttp_message_needs_eof(&res->parser))
        t->close_client = true;
    if (req->minor == 0 && (res->flags & HF_CHUNKED) && !(res->flags & HF_NO_BODY)) {
        res->dechunk = true; /* HTTP/1.0 client: strip chunk framing */
        t->close_client = true;
    }
    close = t->close_client;
    t->res_head = txn_head_buf(w, http_response_bound(res));
    t->res_head->end = (uint32_t)http_build_response(res, head, close, req->minor == 0 && !close,
                                                     t->res_head->data);
    t->res_head_sent = 0;
}

static void session_want_read(struct txn_client *c, bool on)
{
    struct session *s = session_of(c);

    client_want_read(s, on, on ? s->c.w->tv_idle : NULL);
}

static void session_resume(struct txn_client *c)
{
    session_process(session_of(c));
}

/* Truncate: what the response has goes out, then the connection closes. */
static void session_cut(struct txn *t)
{
    struct session *s = session_of(t->s);

    if (flush_client(t) == VEER_OK)
        session_close(s);
}

static void session_abort(struct txn_client *c)
{
    session_close(session_of(c));
}

static const struct txn_client_ops session_ops = {
    .response_head = session_response_head,
    .want_read = session_want_read,
    .resume = session_resume,
    .cut = session_cut,
    .abort = session_abort,
    .flush = session_flush,
};
