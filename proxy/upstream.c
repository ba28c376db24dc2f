/*
 * upstream.c - backend connections and the per-worker keep-alive pool.
 * See upstream.h.
 */
#include "upstream.h"
#include "session.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void upstream_read_cb(evutil_socket_t fd, short what, void *arg);
static void upstream_write_cb(evutil_socket_t fd, short what, void *arg);

/*
 * An idle pooled connection became readable or timed out: the backend
 * closed it, sent something unsolicited, or it sat unused too long. In
 * every case it can no longer be trusted with a request.
 */
static void idle_event(struct upstream *up)
{
    worker_idle_remove(up->w, up);
    upstream_close(up);
}

static void upstream_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;

    CHECK_OBJ(up, UPSTREAM_MAGIC);
    if (up->txn == NULL) {
        idle_event(up);
        return;
    }
    if (what & EV_TIMEOUT) {
        txn_upstream_timeout(up->txn, false);
        return;
    }
    txn_upstream_readable(up->txn);
}

static void upstream_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;

    CHECK_OBJ(up, UPSTREAM_MAGIC);
    if (up->txn == NULL)
        return;
    if (what & EV_TIMEOUT) {
        txn_upstream_timeout(up->txn, up->connecting);
        return;
    }
    if (up->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        up->connecting = false;
        up->conn_err = err; /* the transaction sees it on write */
    }
    txn_upstream_writable(up->txn);
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
    return up;
}

struct upstream *upstream_connect(struct worker *w, struct backend *be, struct txn *txn)
{
    const struct conf_addr *a = &be->addr;
    struct upstream *up;
    int fd, one = 1;

    fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    up = upstream_new(w, be, fd);
    up->txn = txn;
    w->stats.upstream_connects++;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
        return up;
    if (errno != EINPROGRESS) {
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

struct upstream *upstream_get(struct worker *w, struct backend *be, struct txn *txn)
{
    struct upstream *up = worker_idle_pop(w, be->addr_id);

    if (up == NULL)
        return upstream_connect(w, be, txn);
    up->txn = txn;
    up->be = be;
    up->reused = true;
    w->stats.upstream_reused++;
    return up;
}

void upstream_want_read(struct upstream *up, bool on)
{
    if (on) {
        if (up->reading)
            return; /* persistent: its timer restarts on every read */
        event_add(&up->rev, up->w->tv_response);
        up->reading = true;
    } else if (up->reading) {
        event_del(&up->rev);
        up->reading = false;
    }
}

void upstream_want_write(struct upstream *up, bool on)
{
    if (on)
        event_add(&up->wev, up->connecting ? up->w->tv_connect : up->w->tv_response);
    else
        event_del(&up->wev);
}

void upstream_release(struct upstream *up, bool reusable)
{
    struct worker *w = up->w;

    up->txn = NULL;
    up->reused = false;
    up->nreq++;
    event_del(&up->wev);
    if (!reusable || up->dead || w->shutting_down) {
        upstream_close(up);
        return;
    }
    /* Watch the idle connection: any event means it is no longer usable. */
    event_add(&up->rev, w->tv_upstream_idle);
    up->reading = true;
    worker_idle_push(w, up);
}

void upstream_close(struct upstream *up)
{
    struct worker *w = up->w;

    if (up->fd < 0)
        return;
    event_del(&up->rev);
    event_del(&up->wev);
    close(up->fd);
    up->fd = -1;
    up->txn = NULL;
    up->dead = true;
    w->nupstreams--;
    up->next = w->dead_upstreams;
    w->dead_upstreams = up;
}

void upstream_free(struct upstream *up)
{
    up->magic = 0;
    free(up);
}
