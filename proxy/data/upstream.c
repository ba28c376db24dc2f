/*
 * upstream.c - backend connections and the per-worker keep-alive pool.
 * See upstream.h.
 */
#include "upstream.h"
#include "report.h"
#include "txn.h"
#include "tls.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct warm_job {
    uint64_t ticket;
    unsigned pending;
    unsigned worker;
};

static void upstream_read_cb(evutil_socket_t fd, short what, void *arg);
static void upstream_write_cb(evutil_socket_t fd, short what, void *arg);

/*
 * An idle pooled connection became readable or timed out: the backend
 * closed it, sent something unsolicited, or it sat unused too long. In
 * every case it can no longer be trusted with a request.
 */
static void idle_event(struct upstream *up, short what)
{
    char sink[64];
    enum tls_want want;

    /* TLS 1.3 backends send session tickets after the handshake: not a reason to go. */
    if (up->tls && !(what & EV_TIMEOUT) && tls_read(up->tls, sink, sizeof(sink), &want) < 0 &&
        errno == EAGAIN && want == TLS_WANT_READ)
        return;
    worker_idle_remove(up->w, up);
    upstream_close(up);
}

static void connect_progress(struct upstream *up, short what);

static void upstream_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;

    CHECK_OBJ(up, UPSTREAM_MAGIC);
    if (up->connecting) {
        connect_progress(up, what); /* a TLS handshake waiting for the backend */
        return;
    }
    if (up->txn == NULL) {
        idle_event(up, what);
        return;
    }
    if (what & EV_TIMEOUT) {
        txn_upstream_timeout(up->txn, false);
        return;
    }
    txn_upstream_readable(up->txn);
}

static void warm_finished(struct upstream *up, bool ok);

/*
 * The TLS handshake towards the backend, one step: VEER_AGAIN while it
 * waits (rev or wev armed with the connect timeout), else done, with *err
 * set when it failed.
 */
static int tls_step(struct upstream *up, int *err)
{
    enum tls_want want;
    char why[160];
    const struct conf_addr *a = &up->be->addr;
    int rc;

    up->handshaking = true;
    rc = tls_handshake(up->tls, &want, why, sizeof(why));
    if (rc == VEER_AGAIN) {
        if (want == TLS_WANT_READ) {
            event_del(&up->wev);
            event_add(&up->rev, up->w->tv_connect);
            up->reading = true;
        } else {
            upstream_want_write(up, true);
        }
        return VEER_AGAIN;
    }
    if (up->reading) {
        event_del(&up->rev);
        up->reading = false;
    }
    if (rc == VEER_ERROR) {
        log_warn("backend %s (%s): TLS handshake failed: %s", up->be->name, a->text, why);
        *err = EPROTO;
    }
    return rc;
}

/*
 * A connection in progress moved (or timed out): the TCP connect ended,
 * then, for a TLS pool, the handshake. Only when both are done does the
 * transaction (or the warm-up) see the connection, as connected or failed.
 */
static void connect_progress(struct upstream *up, short what)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (!(what & EV_TIMEOUT)) {
        if (!up->handshaking && getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && up->tls && tls_step(up, &err) == VEER_AGAIN)
            return;
    }
    if (up->warm) {
        up->connecting = false;
        warm_finished(up, !(what & EV_TIMEOUT) && err == 0);
        return;
    }
    if (up->txn == NULL)
        return;
    if (what & EV_TIMEOUT) {
        txn_upstream_timeout(up->txn, true);
        return;
    }
    up->connecting = false;
    up->conn_err = err; /* the transaction sees it on write */
    txn_upstream_writable(up->txn);
}

static void upstream_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;

    CHECK_OBJ(up, UPSTREAM_MAGIC);
    if (up->connecting || up->warm) {
        connect_progress(up, what);
        return;
    }
    if (up->txn == NULL)
        return;
    if (what & EV_TIMEOUT) {
        txn_upstream_timeout(up->txn, false);
        return;
    }
    txn_upstream_writable(up->txn);
}

ssize_t upstream_read(struct upstream *up, struct vbuf *b)
{
    enum tls_want want;
    ssize_t n;

    if (up->tls == NULL)
        return vbuf_read(b, up->fd);
    n = tls_read(up->tls, b->data + b->end, vbuf_room(b), &want);
    if (n > 0)
        b->end += (uint32_t)n;
    else if (n < 0 && errno == EAGAIN && want == TLS_WANT_WRITE)
        errno = EPROTO; /* renegotiation is off: a backend that needs a write to read is broken */
    return n;
}

ssize_t upstream_writev(struct upstream *up, const struct iovec *iov, int cnt)
{
    if (up->tls)
        return tls_writev(up->tls, iov, cnt);
    return vbuf_sendv(up->fd, iov, cnt);
}

void upstream_shutdown_write(struct upstream *up)
{
    if (up->tls)
        tls_close_notify(up->tls);
    shutdown(up->fd, SHUT_WR);
}

static struct upstream *upstream_new(struct worker *w, struct backend *be, int fd)
{
    struct upstream *up = veer_calloc(1, sizeof(*up));

    up->magic = UPSTREAM_MAGIC;
    up->fd = fd;
    up->w = w;
    up->be = be;
    up->addr_id = be->addr_id;
    event_assign(&up->rev, w->base, fd, EV_READ | EV_PERSIST, upstream_read_cb, up);
    event_assign(&up->wev, w->base, fd, EV_WRITE | EV_PERSIST, upstream_write_cb, up);
    w->nupstreams++;
    atomic_store_explicit(&w->mstat.upstreams, w->nupstreams, memory_order_relaxed);
    up->counted = be;
    backend_wstat_add(&be->ws[w->idx].conns, 1);
    return up;
}

/* The TLS connection to a backend at a, verified as pool cp says. */
static struct ssl_st *upstream_tls(const struct conf_pool *cp, int fd, const struct conf_addr *a)
{
    char host[INET6_ADDRSTRLEN] = "";

    if (a->ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, host, sizeof(host));
    return tls_connect(cp, fd, host);
}

/*
 * The configuration of pool `pool` as this worker's snapshot has it (NULL
 * when the snapshot has no such pool). The caller names the pool: the one
 * its request was routed through, or the one a warm-up message names. The
 * backend's own pool index is the control thread's (routing.h): it is -1
 * once the backend is deleted, while workers may still reach it.
 */
static const struct conf_pool *snapshot_pool(const struct worker *w, int pool)
{
    const struct routing *r = w->routing;

    return r && pool >= 0 && (uint32_t)pool < r->npools ? r->pools[pool].conf : NULL;
}

struct upstream *upstream_connect(struct worker *w, struct backend *be, int pool, struct txn *txn)
{
    const struct conf_addr *a = &be->addr;
    const struct conf_pool *cp = snapshot_pool(w, pool);
    struct upstream *up;
    int fd, one = 1;

    fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    up = upstream_new(w, be, fd);
    up->txn = txn;
    /*
     * TLS is set up now, from the configuration in force: the SSL holds its
     * own reference on the pool's context, so nothing of the configuration
     * is needed once this returns (a reload may free it meanwhile).
     */
    if (cp && cp->has_tls && (up->tls = upstream_tls(cp, fd, a)) == NULL) {
        up->txn = NULL;
        upstream_close(up);
        errno = ENOMEM;
        return NULL;
    }
    w->stats.upstream_connects++;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
        if (up->tls == NULL)
            return up;
        /* connected at once: the handshake starts when the socket is writable */
    } else if (errno != EINPROGRESS) {
        int err = errno;

        up->txn = NULL;
        upstream_close(up);
        errno = err;
        return NULL;
    }
    up->connecting = true;
    upstream_want_write(up, true);
    return up;
}

/* How long the backend may stay silent: the request's route may set it (upstream_response_ms). */
static const struct timeval *response_tv(const struct upstream *up)
{
    if (up->txn && up->txn->response_ms > 0)
        return &up->txn->tv_response;
    return up->w->tv_response;
}

struct upstream *upstream_get(struct worker *w, struct backend *be, int pool, struct txn *txn)
{
    struct upstream *up = worker_idle_pop(w, be->addr_id);

    if (up == NULL)
        return upstream_connect(w, be, pool, txn);
    up->txn = txn;
    up->be = be;
    up->reused = true;
    if (txn->response_ms > 0)
        event_add(&up->rev, &txn->tv_response); /* worker_idle_pop armed the default */
    w->stats.upstream_reused++;
    return up;
}

void upstream_want_read(struct upstream *up, bool on)
{
    if (on) {
        /* Bytes TLS already decrypted will not make the socket readable. */
        if (up->tls && tls_pending(up->tls))
            event_active(&up->rev, EV_READ, 0);
        if (up->reading)
            return; /* persistent: its timer restarts on every read */
        event_add(&up->rev, response_tv(up));
        up->reading = true;
    } else if (up->reading) {
        event_del(&up->rev);
        up->reading = false;
    }
}

void upstream_want_write(struct upstream *up, bool on)
{
    if (on)
        event_add(&up->wev, up->connecting ? up->w->tv_connect : response_tv(up));
    else
        event_del(&up->wev);
}

/* Into the idle pool, watched: any event there means it is no longer usable. */
static void upstream_park(struct upstream *up)
{
    struct worker *w = up->w;

    event_add(&up->rev, w->tv_upstream_idle);
    up->reading = true;
    worker_idle_push(w, up);
}

void upstream_release(struct upstream *up, bool reusable)
{
    struct worker *w = up->w;

    up->txn = NULL;
    up->reused = false;
    up->nreq++;
    event_del(&up->wev);
    if (!reusable || up->dead || w->shutting_down ||
        atomic_load_explicit(&up->be->draining, memory_order_relaxed) ||
        atomic_load_explicit(&up->counted->draining, memory_order_relaxed)) {
        upstream_close(up);
        return;
    }
    upstream_park(up);
}

/* Drop one reference to a warm-up job; the last one reports to the control thread. */
static void warm_job_put(struct warm_job *job)
{
    if (--job->pending)
        return;
    report_warm_done(job->worker, job->ticket);
    free(job);
}

/* A warm-up connection is done: pooled when it connected, closed when not. */
static void warm_finished(struct upstream *up, bool ok)
{
    struct worker *w = up->w;
    struct warm_job *job = up->warm;

    /* Off the worker's list of warming connections. */
    if (up->prev)
        up->prev->next = up->next;
    else
        w->warming = up->next;
    if (up->next)
        up->next->prev = up->prev;
    up->next = up->prev = NULL;
    up->warm = NULL;
    event_del(&up->wev);
    if (ok && !up->w->shutting_down)
        upstream_park(up);
    else
        upstream_close(up);
    warm_job_put(job);
}

void upstream_warm(struct worker *w, uint64_t ticket, int pool, struct backend **be, unsigned n)
{
    struct warm_job *job = veer_calloc(1, sizeof(*job));

    /*
     * The control thread names a pool of the snapshot it published last;
     * switch to that one if this worker has not yet. A pool it still lacks
     * gets no connections: none may be pooled without the pool's TLS.
     */
    if (worker_lb(w, pool) == NULL)
        n = 0;
    job->ticket = ticket;
    job->worker = w->idx;
    job->pending = 1; /* our own reference, so the job cannot report before every start */
    for (unsigned i = 0; i < n && !w->shutting_down; i++) {
        uint32_t have = be[i]->addr_id < w->nidle ? w->idle[be[i]->addr_id].n : 0;

        for (uint32_t k = have; k < WARM_CONNS; k++) {
            struct upstream *up = upstream_connect(w, be[i], pool, NULL);

            if (up == NULL)
                break; /* refused at once: no point trying again now */
            job->pending++;
            up->warm = job;
            up->prev = NULL;
            up->next = w->warming;
            if (w->warming)
                w->warming->prev = up;
            w->warming = up;
            if (!up->connecting)
                warm_finished(up, true);
        }
    }
    warm_job_put(job);
}

void upstream_abort_warming(struct worker *w)
{
    while (w->warming)
        warm_finished(w->warming, false);
}

void upstream_close(struct upstream *up)
{
    struct worker *w = up->w;

    if (up->fd < 0)
        return;
    event_del(&up->rev);
    event_del(&up->wev);
    if (up->tls) {
        tls_free(up->tls);
        up->tls = NULL;
    }
    close(up->fd);
    up->fd = -1;
    up->txn = NULL;
    up->dead = true;
    w->nupstreams--;
    atomic_store_explicit(&w->mstat.upstreams, w->nupstreams, memory_order_relaxed);
    report_backend_drop(w->idx, up->counted, &up->counted->ws[w->idx].conns);
    up->next = w->dead_upstreams;
    w->dead_upstreams = up;
}

void upstream_free(struct upstream *up)
{
    up->magic = 0;
    free(up);
}
