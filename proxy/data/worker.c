/*
 * worker.c - worker threads: event loop, accept, commands from the control
 * thread, deferred frees, idle upstream pools and per-worker balancer
 * state. See worker.h.
 */
#include "worker.h"
#include "mirror.h"
#include "reclaim.h"
#include "session.h"
#include "upstream.h"
#include "veer.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

_Atomic int veer_client_connections;

/*
 * Buffers a worker keeps for reuse: what its busiest second needed (reclaim.c
 * gives back what a second did not use), so steady traffic at any concurrency
 * never goes to the allocator; the bound only caps a pathological burst.
 */
#define WORKER_BUF_CACHE 4096

/*
 * Idle upstream connections kept per backend address per worker. Closing
 * connections that the next burst needs again only trades them for
 * connects; extras go away with the idle timeout instead.
 */
#define IDLE_PER_ADDR 4096

/* Connections accepted per readiness event, for fairness between listeners. */
#define ACCEPT_BATCH 64

/* Unsent bytes a client socket holds before it stops being writable. */
#define CLIENT_NOTSENT_LOWAT (32 * 1024)

static const struct timeval *common_tv(struct event_base *base, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    return event_base_init_common_timeout(base, &tv);
}

/*
 * Over the connection limit: answer 503 and close rather than leaving the
 * client hanging in the backlog, so it can go elsewhere at once.
 */
static void refuse_connection(int fd, bool tls)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                               "application/json\r\nContent-Length: 70\r\nConnection: close\r\n"
                               "Retry-After: 1\r\n\r\n"
                               "{\"error\":\"service_unavailable\",\"status\":503,\"detail\":\"too "
                               "many conns\"}\n";
    ssize_t n;

    if (!tls) { /* a TLS client cannot read a plain answer: it only sees the close */
        n = send(fd, resp, sizeof(resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    close(fd);
}

/* Out of descriptors: stop accepting for a moment instead of spinning on a ready listener. */
#define ACCEPT_PAUSE_MS 100

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (w->shutting_down)
        return;
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (w->listeners[i]->fd >= 0)
            event_add(&w->listeners[i]->ev, NULL);
}

static void pause_accepting(struct worker *w, int err)
{
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};

    if (evtimer_pending(&w->accept_pause, NULL))
        return;
    log_warn("worker %u: accept: %s; pausing accepts for %d ms", w->idx, strerror(err),
             ACCEPT_PAUSE_MS);
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (w->listeners[i]->fd >= 0)
            event_del(&w->listeners[i]->ev);
    evtimer_add(&w->accept_pause, &tv);
}

/*
 * Options of every client socket. TCP_NOTSENT_LOWAT keeps the bytes a
 * client has not been sent yet at one buffer or so: the socket stops
 * being writable there instead of soaking up a whole response in kernel
 * memory, which a slow reader (or a thousand of them) would pin.
 */
static void client_socket_options(int fd)
{
    int one = 1, lowat = CLIENT_NOTSENT_LOWAT;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
}

/* A client connection this worker takes on without the accept limits (upgrade paths). */
static void take_client(struct wlistener *l, int fd, const struct sockaddr *sa, socklen_t len)
{
    atomic_fetch_add_explicit(&veer_client_connections, 1, memory_order_relaxed);
    client_socket_options(fd);
    session_accept(l, fd, sa, len);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct wlistener *l = arg;
    struct worker *w = l->w;
    const struct conf_limits *lim = &w->conf->limits;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd;

        fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(w, errno);
            return;
        }
        w->stats.accepted++;
        if (atomic_fetch_add_explicit(&veer_client_connections, 1, memory_order_relaxed) >=
                lim->max_connections ||
            (lim->max_connections_per_worker &&
             w->nsessions >= (unsigned)lim->max_connections_per_worker)) {
            atomic_fetch_sub_explicit(&veer_client_connections, 1, memory_order_relaxed);
            refuse_connection(fd, l->lc->tls != NULL);
            continue;
        }
        client_socket_options(fd);
        session_accept(l, fd, (struct sockaddr *)&ss, sl);
    }
}

/* Free what was closed during the iteration, now that no callback can hold it. */
static void reap(struct worker *w)
{
    while (w->dead_sessions) {
        struct session *s = w->dead_sessions;

        w->dead_sessions = s->next;
        session_free(s);
    }
    while (w->dead_upstreams) {
        struct upstream *up = w->dead_upstreams;

        w->dead_upstreams = up->next;
        upstream_free(up);
    }
    mirror_reap(w);
}

static void close_listener(struct wlistener *l)
{
    if (l->fd < 0)
        return;
    event_del(&l->ev);
    close(l->fd);
    l->fd = -1;
}

static void close_listeners(struct worker *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++)
        close_listener(w->listeners[i]);
}

static struct wlistener *listener_new(struct worker *w, int fd, const struct conf_listen *lc,
                                      int pool)
{
    struct wlistener *l = veer_calloc(1, sizeof(*l));

    l->fd = fd;
    l->w = w;
    l->lc = lc;
    snprintf(l->addr, sizeof(l->addr), "%s", lc->addr.text);
    l->pool = pool;
    event_assign(&l->ev, w->base, fd, EV_READ | EV_PERSIST, accept_cb, l);
    return l;
}

/* Limits and timeouts of a configuration, for requests that start from now on. */
static void apply_conf(struct worker *w, const struct veer_conf *conf)
{
    const struct conf_timeouts *to = &conf->timeouts;

    w->conf = conf;
    w->req_limits = (struct http_limits){
        .line_bytes = (uint32_t)conf->limits.request_line_bytes,
        .header_bytes = (uint32_t)conf->limits.header_bytes,
        .header_count = (uint32_t)conf->limits.header_count,
        .body_bytes = (uint64_t)conf->limits.body_bytes,
    };
    w->res_limits = w->req_limits;
    w->res_limits.body_bytes = 0;
    w->head_buf_limit =
        (size_t)conf->limits.request_line_bytes + (size_t)conf->limits.header_bytes + 1024;
    if (w->head_buf_limit < VBUF_SIZE)
        w->head_buf_limit = VBUF_SIZE;
    w->tv_idle = common_tv(w->base, to->idle_ms);
    w->tv_header = common_tv(w->base, to->client_header_ms);
    w->tv_connect = common_tv(w->base, to->connect_ms);
    w->tv_response = common_tv(w->base, to->upstream_response_ms);
    w->tv_upstream_idle = common_tv(w->base, to->idle_ms);
    w->tv_quiet = common_tv(w->base, to->quiet_ms);
}

/*
 * A reload: switch to the new configuration and listener set. Listeners on
 * an address that stays keep their socket (and their accept queue); new
 * ones start accepting (when the accept pause ends, if one is on); removed
 * ones stop (their connections finish as usual). A removed listener's
 * struct stays allocated until the worker ends: sessions accepted on it
 * still point to it.
 */
static void reconfigure(struct worker *w, const struct wreconf *rc)
{
    struct wlistener **next = veer_calloc(rc->n ? rc->n : 1, sizeof(*next));
    bool *kept = veer_calloc(w->nlisteners ? w->nlisteners : 1, sizeof(*kept));

    apply_conf(w, rc->conf);
    for (unsigned i = 0; i < rc->n; i++) {
        const struct wreconf_listener *p = &rc->l[i];

        if (p->keep >= 0 && (unsigned)p->keep < w->nlisteners) {
            next[i] = w->listeners[p->keep];
            next[i]->lc = p->lc;
            next[i]->pool = p->pool;
            kept[p->keep] = true;
        } else {
            next[i] = listener_new(w, p->fds[w->idx], p->lc, p->pool);
            /* Out of descriptors: it starts with the others when the pause ends. */
            if (!w->shutting_down && !evtimer_pending(&w->accept_pause, NULL))
                event_add(&next[i]->ev, NULL);
        }
    }
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (kept[i])
            continue;
        close_listener(w->listeners[i]);
        w->listeners[i]->lc = NULL;
        w->listeners[i]->next_retired = w->retired_listeners;
        w->retired_listeners = w->listeners[i];
    }
    free(kept);
    free(w->listeners);
    w->listeners = next;
    w->nlisteners = rc->n;
}

static void close_idle_upstreams(struct worker *w)
{
    upstream_abort_warming(w);
    for (uint32_t a = 0; a < w->nidle; a++)
        while (w->idle[a].head) {
            struct upstream *up = w->idle[a].head;

            worker_idle_remove(w, up);
            upstream_close(up);
        }
}

static void abort_all(struct worker *w)
{
    while (w->sessions)
        session_close(w->sessions);
    close_idle_upstreams(w);
}

/* Sessions with a request in flight (tunnels counted apart). */
static unsigned count_busy(const struct worker *w, unsigned *tunnels)
{
    unsigned n = 0;

    *tunnels = 0;
    for (const struct session *s = w->sessions; s; s = s->next) {
        if (s->txn == NULL || s->txn->phase == TXN_REQ_HEAD)
            continue;
        if (s->txn->phase == TXN_TUNNEL)
            (*tunnels)++;
        else
            n++;
    }
    return n;
}

/* Close what is left, counting what was cut short. */
static void abort_rest(struct worker *w)
{
    unsigned tunnels, busy = count_busy(w, &tunnels);

    w->sd.aborted += busy;
    w->sd.tunnels += tunnels;
    abort_all(w);
}

static void shutdown_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (w->nsessions)
        log_warn("worker %u: shutdown deadline reached, closing %u connections", w->idx,
                 w->nsessions);
    abort_rest(w);
}

/*
 * Shutting down, leave the loop when no session is left. Tunnels cannot
 * end at a request boundary: once they are all that is left they are
 * closed (and counted in the summary).
 */
void worker_check_done(struct worker *w)
{
    unsigned tunnels;

    if (!w->shutting_down)
        return;
    if (w->nsessions && count_busy(w, &tunnels) == 0 && tunnels) {
        bool only_tunnels = true;

        for (const struct session *s = w->sessions; s && only_tunnels; s = s->next)
            only_tunnels = s->txn && s->txn->phase == TXN_TUNNEL;
        if (only_tunnels) {
            w->sd.tunnels += tunnels;
            abort_all(w);
        }
    }
    if (w->nsessions == 0)
        w->exit = true;
}

/*
 * Graceful shutdown of this worker: stop accepting, let every session
 * finish its current request and close at a request boundary, close idle
 * upstream connections, and leave the loop when no session is left (or
 * at the deadline).
 */
static void begin_shutdown(struct worker *w)
{
    struct timeval tv = {.tv_sec = w->conf->timeouts.shutdown_ms / 1000,
                         .tv_usec = (w->conf->timeouts.shutdown_ms % 1000) * 1000};

    if (w->shutting_down)
        return;
    w->shutting_down = true;
    w->sd.inflight = count_busy(w, &w->sd.tunnels_at_signal);
    event_del(&w->accept_pause);
    close_listeners(w);
    close_idle_upstreams(w);
    for (struct session *s = w->sessions, *next; s; s = next) {
        next = s->next;
        session_shutdown_notice(s);
    }
    evtimer_assign(&w->shutdown_timer, w->base, shutdown_timer_cb, w);
    evtimer_add(&w->shutdown_timer, &tv);
    worker_check_done(w);
}

void wmsg_free(struct wmsg *m)
{
    for (unsigned i = 0; m->be && i < m->n; i++)
        backend_put(m->be[i]); /* the sender's reference (backend_hold) */
    free(m->be);
    free(m->adopt);
    if (m->reconf && --m->reconf->refs == 0) {
        for (unsigned i = 0; i < m->reconf->n; i++)
            if (m->reconf->l[i].keep < 0)
                free((void *)m->reconf->l[i].fds);
        free(m->reconf->l);
        free(m->reconf);
    }
    free(m);
}

/* Close idle connections opened for be or last used by it. */
static void close_idle_of(struct worker *w, struct backend *be)
{
    struct upstream *up, *next;

    if (be->addr_id >= w->nidle)
        return;
    for (up = w->idle[be->addr_id].head; up; up = next) {
        next = up->next;
        if (up->counted == be || up->be == be) {
            worker_idle_remove(w, up);
            upstream_close(up);
        }
    }
}

/* Cut every session whose request is on be (drain --force). */
static void abort_backend(struct worker *w, struct backend *be)
{
    struct session *s, *next;

    for (s = w->sessions; s; s = next) {
        next = s->next;
        if (s->txn && s->txn->be == be)
            session_close(s);
    }
}

/* Upgrade: the handover channel has room again: offer the idle sessions once more. */
static void handover_writable_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    w->handover_full = false;
    for (struct session *s = w->sessions, *next; s && !w->handover_full; s = next) {
        next = s->next;
        session_try_handover(s);
    }
}

void worker_handover_full(struct worker *w)
{
    if (w->handover_full)
        return;
    w->handover_full = true;
    event_add(&w->handover_wev, NULL);
}

/*
 * Upgrade, old side: the new process runs on the same listening sockets.
 * Stop accepting (connections still queued are accepted here and passed
 * on, so none waits in a queue we close), then shut down with idle
 * connections handed over rather than closed.
 */
static void start_handover(struct worker *w, int chan)
{
    w->handover = true;
    w->handover_chan = chan;
    event_assign(&w->handover_wev, w->base, chan, EV_WRITE, handover_writable_cb, w);
    for (unsigned i = 0; i < w->nlisteners; i++) {
        struct wlistener *l = w->listeners[i];

        while (l->fd >= 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

            if (fd < 0)
                break;
            if (handover_send(chan, fd, l->lc->addr.text, (struct sockaddr *)&ss, sl) == 0) {
                w->handed_over++;
                close(fd);
                continue;
            }
            /*
             * The channel is full (the new process is behind) or gone: this
             * client is ours until there is room (it is offered again then,
             * as an idle session), served here meanwhile, never dropped.
             */
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                worker_handover_full(w);
            take_client(l, fd, (struct sockaddr *)&ss, sl);
        }
    }
    begin_shutdown(w);
}

/* Whether an accepted socket came in through listening socket lfd. */
static bool same_local_address(int lfd, int fd)
{
    struct sockaddr_storage a, b;
    socklen_t al = sizeof(a), bl = sizeof(b);

    if (lfd < 0 || getsockname(lfd, (struct sockaddr *)&a, &al) < 0 ||
        getsockname(fd, (struct sockaddr *)&b, &bl) < 0 || al != bl || a.ss_family != b.ss_family)
        return false;
    if (a.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a, *y = (const void *)&b;

        return x->sin_port == y->sin_port &&
               (x->sin_addr.s_addr == INADDR_ANY || x->sin_addr.s_addr == y->sin_addr.s_addr);
    }
    if (a.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a, *y = (const void *)&b;

        return x->sin6_port == y->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
                memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0);
    }
    return false;
}

/* Upgrade, new side: a connection the old process passed, as one of ours. */
static void adopt(struct worker *w, int fd, const struct handover_msg *hm)
{
    struct wlistener *l = NULL;

    /*
     * The listener whose socket has the connection's local address: two
     * listeners may share an address text (port 0), never a bound address.
     * By text only when the addresses cannot be read.
     */
    for (unsigned i = 0; i < w->nlisteners && l == NULL; i++)
        if (same_local_address(w->listeners[i]->fd, fd))
            l = w->listeners[i];
    for (unsigned i = 0; i < w->nlisteners && l == NULL; i++)
        if (strcmp(w->listeners[i]->lc->addr.text, hm->listen) == 0)
            l = w->listeners[i];
    if (l == NULL && w->nlisteners)
        l = w->listeners[0];
    if (l == NULL || w->shutting_down) {
        close(fd);
        return;
    }
    take_client(l, fd, (const struct sockaddr *)&hm->peer, hm->peer_len);
}

void worker_adopt(struct worker *w, int fd, const struct handover_msg *hm)
{
    struct wmsg *m = veer_calloc(1, sizeof(*m));

    m->type = WMSG_ADOPT;
    m->ticket = (uint64_t)fd;
    m->adopt = veer_malloc(sizeof(*hm));
    *m->adopt = *hm;
    worker_send(w, m);
}

/* Act on the messages taken from the inbox (oldest first), and free them. */
static void run_messages(struct worker *w, struct mailbox_node *n)
{
    while (n) {
        struct wmsg *m = container_of(n, struct wmsg, node);

        n = n->next;
        switch (m->type) {
        case WMSG_WARM:
            upstream_warm(w, m->ticket, m->pool, m->be, m->n);
            break;
        case WMSG_CLOSE_IDLE:
            for (unsigned i = 0; i < m->n; i++)
                close_idle_of(w, m->be[i]);
            break;
        case WMSG_ABORT_BACKEND:
            for (unsigned i = 0; i < m->n; i++)
                abort_backend(w, m->be[i]);
            break;
        case WMSG_RECONF:
            reconfigure(w, m->reconf);
            if (m->reconf->left)
                atomic_fetch_sub_explicit(m->reconf->left, 1, memory_order_release);
            break;
        case WMSG_HANDOVER:
            start_handover(w, (int)m->ticket);
            break;
        case WMSG_ADOPT:
            adopt(w, (int)m->ticket, m->adopt);
            break;
        }
        wmsg_free(m);
    }
}

void worker_send(struct worker *w, struct wmsg *m)
{
    mailbox_post(&w->inbox, &m->node);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    /* Taken (and the eventfd read) before the command bits: a bit set later wakes us again. */
    struct mailbox_node *msgs = mailbox_take(&w->inbox);
    unsigned cmd = atomic_exchange_explicit(&w->cmd, 0, memory_order_acq_rel);

    /* Switch snapshots first: what the messages report is then about the new one. */
    if (cmd & WCMD_REFRESH)
        worker_lb(w, -1);
    run_messages(w, msgs);
    if (cmd & WCMD_SHUTDOWN)
        begin_shutdown(w);
    if (cmd & WCMD_ABORT) {
        begin_shutdown(w);
        abort_rest(w);
    }
}

void worker_post(struct worker *w, unsigned cmd)
{
    atomic_fetch_or_explicit(&w->cmd, cmd, memory_order_acq_rel);
    mailbox_wake(&w->inbox);
}

/* Switch to the newest snapshot: rebuild balancer state, announce. */
static void free_lbs(struct worker *w)
{
    if (w->lbs == NULL)
        return;
    for (uint32_t i = 0; i < w->routing->npools; i++) {
        lb_free(&w->lbs[i]);
        if (w->glbs && w->glbs[i]) {
            for (uint32_t g = 0; g < w->routing->pools[i].ng; g++)
                lb_free(&w->glbs[i][g]);
            free(w->glbs[i]);
        }
    }
    for (uint32_t i = 0; w->mlbs && i < w->routing->nmirrors; i++)
        lb_free(&w->mlbs[i]);
    free(w->lbs);
    free(w->glbs);
    free(w->mlbs);
    w->lbs = NULL;
    w->glbs = NULL;
    w->mlbs = NULL;
}

static void switch_routing(struct worker *w, struct routing *r)
{
    bool first = w->routing == NULL;

    free_lbs(w);
    w->routing = r;
    w->lbs = veer_calloc(r->npools ? r->npools : 1, sizeof(*w->lbs));
    for (uint32_t i = 0; i < r->npools; i++)
        lb_init(&w->lbs[i], &r->pools[i], w->idx);
    routing_announce(w->idx, r->generation);
    /*
     * The new snapshot may have a backend for them. Not from here: this runs
     * inside a routing decision (worker_lb), and retrying routes requests.
     */
    if (!first)
        txn_schedule_retry_held(w);
}

struct lb *worker_group_lb(struct worker *w, int pool, uint32_t g)
{
    const struct snap_pool *sp = &w->routing->pools[pool];

    if (w->glbs == NULL)
        w->glbs = veer_calloc(w->routing->npools ? w->routing->npools : 1, sizeof(*w->glbs));
    if (w->glbs[pool] == NULL) {
        w->glbs[pool] = veer_calloc(sp->ng ? sp->ng : 1, sizeof(**w->glbs));
        for (uint32_t k = 0; k < sp->ng; k++)
            lb_init(&w->glbs[pool][k], &sp->groups[k], w->idx);
    }
    return &w->glbs[pool][g];
}

struct lb *worker_lb(struct worker *w, int pool)
{
    struct routing *r = routing_current();

    if (unlikely(r != w->routing))
        switch_routing(w, r);
    if (pool < 0 || (uint32_t)pool >= r->npools)
        return NULL;
    return &w->lbs[pool];
}

struct upstream *worker_idle_pop(struct worker *w, uint32_t addr_id)
{
    struct upstream *up;

    if (addr_id >= w->nidle || (up = w->idle[addr_id].head) == NULL)
        return NULL;
    worker_idle_remove(w, up);
    event_add(&up->rev, w->tv_response);
    return up;
}

void worker_idle_push(struct worker *w, struct upstream *up)
{
    struct idle_list *il;

    if (up->addr_id >= w->nidle) {
        uint32_t n = up->addr_id + 16;

        w->idle = veer_realloc(w->idle, n * sizeof(*w->idle));
        memset(w->idle + w->nidle, 0, (n - w->nidle) * sizeof(*w->idle));
        w->nidle = n;
    }
    il = &w->idle[up->addr_id];
    if (il->n >= IDLE_PER_ADDR) {
        upstream_close(up);
        return;
    }
    up->idle = true;
    up->prev = NULL;
    up->next = il->head;
    if (il->head)
        il->head->prev = up;
    else
        il->tail = up;
    il->head = up;
    il->n++;
}

void worker_idle_remove(struct worker *w, struct upstream *up)
{
    struct idle_list *il = &w->idle[up->addr_id];

    if (!up->idle)
        return;
    if (up->prev)
        up->prev->next = up->next;
    else
        il->head = up->next;
    if (up->next)
        up->next->prev = up->prev;
    else
        il->tail = up->prev;
    up->next = up->prev = NULL;
    up->idle = false;
    if (--il->n < il->low)
        il->low = il->n;
}

/*
 * The worker loop: wait for events and run their callbacks (reads, parsing,
 * picks), then the send phase writes everything they queued, then what was
 * closed is freed.
 */
static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (unsigned i = 0; i < w->nlisteners; i++)
        event_add(&w->listeners[i]->ev, NULL);
    while (!w->exit) {
        if (event_base_loop(w->base, EVLOOP_ONCE) < 0) {
            log_err("worker %u: event loop failed", w->idx);
            break;
        }
        txn_run_flushes(w);
        reap(w);
        worker_check_done(w);
    }
    atomic_store_explicit(&w->exited, true, memory_order_release);
    return NULL;
}

struct worker *worker_create(unsigned idx, const struct veer_conf *conf, const int *listen_fds)
{
    struct worker *w = veer_calloc(1, sizeof(*w));
    struct event_config *cfg = event_config_new();

    w->idx = idx;
    w->pid = (unsigned)getpid();
    w->conf = conf;
    w->inbox = (struct mailbox)MAILBOX_INITIALIZER;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (w->base == NULL) {
        log_err("worker %u: cannot create event base", idx);
        goto fail;
    }
    w->local = veer_calloc(METRIC_POOLS, sizeof(*w->local));
    apply_conf(w, conf);
    vbuf_cache_init(&w->bufs, WORKER_BUF_CACHE);
    txn_cache_init(w);
    w->retry_tokens = RETRY_TOKEN_MAX; /* a first failure can be retried at once */

    evtimer_assign(&w->accept_pause, w->base, resume_accepting, w);
    reclaim_init(w);
    if (mailbox_init(&w->inbox) < 0) {
        log_err("worker %u: eventfd: %s", idx, strerror(errno));
        goto fail;
    }
    event_assign(&w->wake_ev, w->base, mailbox_fd(&w->inbox), EV_READ | EV_PERSIST, wake_cb, w);
    event_add(&w->wake_ev, NULL);

    w->nlisteners = (unsigned)conf->nlistens;
    w->listeners = veer_calloc(w->nlisteners ? w->nlisteners : 1, sizeof(*w->listeners));
    for (unsigned i = 0; i < w->nlisteners; i++)
        w->listeners[i] =
            listener_new(w, listen_fds[i], &conf->listens[i], conf->listens[i].pool_index);
    switch_routing(w, routing_current());
    return w;
fail:
    worker_destroy(w);
    return NULL;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);

    if (rc) {
        log_err("worker %u: pthread_create: %s", w->idx, strerror(rc));
        return VEER_ERROR;
    }
    return VEER_OK;
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}

static void drop_wmsg(struct mailbox_node *n)
{
    wmsg_free(container_of(n, struct wmsg, node));
}

void worker_destroy(struct worker *w)
{
    if (w == NULL)
        return;
    if (w->base) {
        abort_all(w);
        mirror_abort_all(w);
        reap(w);
        mirror_cache_destroy(w);
        close_listeners(w);
        if (mailbox_fd(&w->inbox) >= 0)
            event_del(&w->wake_ev);
        if (w->shutting_down)
            event_del(&w->shutdown_timer);
        if (w->handover)
            event_del(&w->handover_wev);
        event_del(&w->accept_pause);
        event_del(&w->reclaim_ev);
        event_base_free(w->base);
    }
    mailbox_free(&w->inbox, drop_wmsg);
    free_lbs(w);
    txn_cache_destroy(w);
    vbuf_cache_destroy(&w->bufs);
    free(w->idle);
    free(w->local);
    metrics_cells_free(&w->local_routed);
    for (unsigned i = 0; i < w->nlisteners; i++)
        free(w->listeners[i]);
    free(w->listeners);
    while (w->retired_listeners) {
        struct wlistener *l = w->retired_listeners;

        w->retired_listeners = l->next_retired;
        free(l);
    }
    free(w);
}
