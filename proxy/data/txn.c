/*
 * txn.c - one request/response exchange, whatever the client speaks:
 * routing (modules, hold queue, sticky groups, pick), the upstream
 * connection and the backend's HTTP/1 framing, retries (a stale pooled
 * connection, another backend after a failure), breaker reports, local
 * answers and the per-request metrics. See txn.h for the interface with the
 * client side and the buffer model.
 */
#include "txn.h"
#include "mirror.h"
#include "module.h"
#include "routes.h"
#include "report.h"
#include "tls.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static void unhold(struct txn *t);
static void disarm_retry(struct txn *t);

/*
 * Queue a write instead of doing it now. Writes run once every ready
 * socket of the iteration has been read, like HAProxy's send phase: a
 * backend or client woken by our writes then finds a batch of work instead
 * of being woken once per write, which is what costs most on a shared CPU.
 * txn_run_flushes runs the queue, calling each client's flush.
 */
int txn_defer(struct txn_client *c, unsigned what)
{
    struct worker *w = c->w;

    c->flush |= what;
    if (!c->flush_queued) {
        /* First come, first written: requests released together reach backends in order. */
        c->flush_queued = true;
        c->flush_next = NULL;
        if (w->flush_list)
            w->flush_tail->flush_next = c;
        else
            w->flush_list = c;
        w->flush_tail = c;
    }
    return VEER_OK;
}

void txn_run_flushes(struct worker *w)
{
    while (w->flush_list) {
        struct txn_client *c = w->flush_list;
        unsigned what = c->flush;

        w->flush_list = c->flush_next;
        if (w->flush_list == NULL)
            w->flush_tail = NULL;
        c->flush_queued = false;
        c->flush = 0;
        if (!c->dead)
            c->ops->flush(c, what);
    }
}

/* --- transactions ------------------------------------------------------- */

/*
 * A transaction and its two header tables are one allocation, sized for the
 * header_count in force when it was made (t->hdr_cap). A reload may change
 * the count: a cached transaction too small for the new one is dropped, and
 * a transaction in flight keeps the limits it started with (t->limits,
 * t->res_limits), whatever the worker's are now.
 */
static size_t txn_size(uint32_t hdr_cap)
{
    return sizeof(struct txn) + 2 * http_msg_size(hdr_cap);
}

/* Free a transaction's memory: to its slab or to malloc. */
static void txn_release(struct worker *w, struct txn *t)
{
    if (t->from_slab)
        slab_free(&w->txn_slab, t);
    else
        free(t);
}

struct txn *txn_new(struct txn_client *s, int pool)
{
    struct worker *w = s->w;
    struct txn *t = w->free_txns;
    uint32_t cap = w->req_limits.header_count;
    size_t msz;

    bool from_slab = false;

    if (t) {
        w->free_txns = t->next_free;
        if (--w->nfree_txns < w->txn_low)
            w->txn_low = w->nfree_txns;
        if (t->hdr_cap < cap) {
            txn_release(w, t);
            t = NULL;
        } else {
            cap = t->hdr_cap;
            from_slab = t->from_slab;
        }
    }
    if (t == NULL) {
        /* A slab's slot when one is big enough (the configuration sized them), else malloc. */
        if (txn_size(cap) <= w->txn_slab.slot && (t = slab_alloc(&w->txn_slab)) != NULL)
            from_slab = true;
        else
            t = veer_malloc(txn_size(cap));
    }
    msz = http_msg_size(cap);
    memset(t, 0, offsetof(struct txn, edit_buf));
    t->from_slab = from_slab;
    t->magic = TXN_MAGIC;
    t->hdr_cap = cap;
    t->s = s;
    t->phase = TXN_REQ_HEAD;
    t->pool = pool;
    t->lpool = pool;
    t->route = -1;
    t->slot = -1;
    t->route_name = "";
    t->response_ms = -1;
    t->req = (struct http_msg *)(t + 1);
    t->res = (struct http_msg *)((char *)t->req + msz);
    t->start_us = veer_now_us();
    /* The pool may lower or raise the body limit (pool body_bytes; -1 = the global one). */
    t->limits = w->req_limits;
    if ((uint32_t)t->pool < w->routing->npools && w->routing->pools[t->pool].conf->body_bytes >= 0)
        t->limits.body_bytes = (uint64_t)w->routing->pools[t->pool].conf->body_bytes;
    /* With routes, the route decides the limit: route_match applies it once the head is in. */
    if (w->routing->routes)
        t->limits.body_bytes = 0;
    t->res_limits = w->res_limits;
    http_msg_init(t->req, HTTP_REQUEST, &t->limits);
    return t;
}

/* Response time EWMA for p2c, weight 1/8 for the newest sample. */
static void ewma_update(_Atomic uint32_t *v, uint64_t us)
{
    uint32_t old = atomic_load_explicit(v, memory_order_relaxed);
    uint32_t sample = us > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)us;

    atomic_store_explicit(v, old ? old - old / 8 + sample / 8 : sample, memory_order_relaxed);
}

/*
 * Count the answered request, in one series: under its backend when one was
 * picked (a 502 for a backend failure counts against that backend), else as
 * veer's own answer for the pool, or for no pool (no route matched and the
 * listener has none). A request that matched a route goes to its route's
 * cell instead of the backend's or pool's series of requests on no route: a
 * config without routes costs no more than the one test of t->slot.
 */
static void txn_record(const struct txn *t, struct worker *w)
{
    struct req_wstat *st;
    unsigned cls;
    uint64_t us;

    if (t->res_status < 100)
        return; /* nothing was answered */
    cls = (unsigned)(t->res_status / 100 - 1);
    if (cls > 4)
        cls = 4;
    us = veer_now_us() - t->start_us;
    if (t->be) {
        struct backend_wstat *ws = &t->be->ws[w->idx];

        st = t->slot < 0 ? &ws->fb : &metrics_cell_get(&ws->routed, (uint32_t)t->slot)->st;
        if (cls == 4 && t->be_failed)
            counter_add(&ws->answered, 1); /* one failure, not two */
    } else if (t->slot >= 0 && t->pool >= 0) {
        st = &metrics_cell_get(&w->local_routed, worker_local_key((uint32_t)t->slot, t->pool))->st;
    } else if ((unsigned)t->pool < METRIC_POOLS) {
        st = &w->local[t->pool];
    } else if (t->pool < 0) {
        st = &w->nopool;
    } else {
        return;
    }
    counter_add(&st->requests[cls], 1);
    hist_observe(&st->latency, us);
}

/* Count an upstream failure of the transaction's backend. */
static void txn_upstream_error(struct txn *t, enum upstream_err kind)
{
    if (t->be && !t->shadow) {
        counter_add(&t->be->ws[t->s->w->idx].errors[kind], 1);
        t->be_failed = true;
    }
}

void txn_free(struct txn *t, bool upstream_reusable)
{
    struct txn_client *s = t->s;
    struct worker *w = s->w;

    CHECK_OBJ(t, TXN_MAGIC);
    unhold(t);
    if (unlikely(t->mirror || t->mfate))
        mirror_primary_end(t);
    if ((t->phase != TXN_REQ_HEAD || t->res_status) && !t->shadow) {
        txn_record(t, w);
        module_txn_end(t);
    }
    if (t->retry_armed)
        event_del(&t->retry_ev);
    if (t->up)
        upstream_release(t->up, upstream_reusable);
    if (t->be) {
        struct backend_wstat *ws = &t->be->ws[w->idx];

        if (t->res_done)
            ewma_update(&ws->ewma_us, veer_now_us() - t->start_us);
        /* Last: a deleted backend may be freed once its count drops. */
        report_backend_drop(w->idx, t->be, &ws->active);
    }
    vbuf_put(&w->bufs, t->rin);
    vbuf_put(&w->bufs, t->req_head);
    vbuf_put(&w->bufs, t->res_head);
    free(t->log);
    t->magic = 0;
    if (w->nfree_txns < TXN_CACHE_MAX) {
        t->next_free = w->free_txns;
        w->free_txns = t;
        w->nfree_txns++;
    } else {
        txn_release(w, t);
    }
}

void txn_cache_trim(struct worker *w)
{
    for (unsigned k = (w->txn_low + 1) / 2; k > 0 && w->free_txns; k--) {
        struct txn *t = w->free_txns;

        w->free_txns = t->next_free;
        w->nfree_txns--;
        txn_release(w, t);
    }
    w->txn_low = w->nfree_txns;
}

void txn_cache_init(struct worker *w)
{
    /* Slots for the configured header count (a reload asking for more uses malloc). */
    slab_pool_init(&w->txn_slab, txn_size(w->req_limits.header_count));
}

void txn_cache_destroy(struct worker *w)
{
    while (w->free_txns) {
        struct txn *t = w->free_txns;

        w->free_txns = t->next_free;
        txn_release(w, t);
    }
    w->nfree_txns = 0;
    slab_pool_destroy(&w->txn_slab);
}

struct vbuf *txn_head_buf(struct worker *w, size_t n)
{
    struct vbuf *b;
    uint32_t shift;

    b = vbuf_get(&w->bufs);
    if (n > b->size && vbuf_reserve(&w->bufs, &b, n, n + VBUF_SIZE, &shift) < 0)
        veer_panic(__FILE__, __LINE__, "head buffer");
    return b;
}

/* --- local responses ---------------------------------------------------- */

/*
 * Start a local answer: give up the backend side, decide whether the
 * connection closes after it. Returns the buffer to write the response
 * into, or NULL when a response already started (the client side was closed).
 */
static struct vbuf *local_begin(struct txn *t, bool close)
{
    struct txn_client *s = t->s;
    struct worker *w = s->w;

    unhold(t);       /* a held request answered (its body was refused while it waited) */
    disarm_retry(t); /* an answer during a retry's backoff ends the retry */
    if (t->res_head_done) {
        /* Part of a response already went out: all we can do is cut it. */
        s->ops->abort(s);
        return NULL;
    }
    if (t->up) {
        upstream_release(t->up, false);
        t->up = NULL;
    }
    if (!t->req_done)
        close = true;
    if (close || w->shutting_down)
        t->close_client = true;
    vbuf_put(&w->bufs, t->res_head);
    t->res_head = vbuf_get(&w->bufs);
    return t->res_head;
}

/* The local answer is in res_head: send it and end the transaction after it. */
static int local_send(struct txn *t, int status)
{
    struct txn_client *s = t->s;

    t->res_head_sent = 0;
    t->res_parsed = 0;
    t->res_done = true;
    t->res_head_done = true;
    t->res_status = status;
    t->phase = TXN_LOCAL;
    if (status >= 500 && !t->shadow)
        s->w->stats.errors++;
    if (t->close_client && s->reading)
        s->ops->want_read(s, false);
    return txn_defer(s, TXN_FLUSH_CLIENT);
}

/*
 * Answer the client ourselves (an error). Any upstream connection is given
 * up. When the request was not read whole, framing is in doubt and the
 * connection closes after the response.
 */
static int local_response(struct txn *t, int status, const char *detail, bool close)
{
    struct vbuf *b = local_begin(t, close);

    if (b == NULL)
        return VEER_ERROR;
    b->end = (uint32_t)http_error_response(status, detail, t->close_client, NULL, b->data, b->size);
    return local_send(t, status);
}

int txn_respond(struct txn *t, int status, const char *extra_headers, const char *content_type,
                const char *body, size_t body_len)
{
    struct vbuf *b = local_begin(t, false);
    bool head = t->req->parser.method == HTTP_HEAD;
    int n;

    if (b == NULL)
        return VEER_ERROR;
    n = snprintf(b->data, b->size,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n%s%s\r\n",
                 status, http_reason(status), content_type, body_len,
                 extra_headers ? extra_headers : "",
                 t->close_client ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n + body_len > b->size) {
        local_response(t, 500, "module response too large", false);
        return VEER_DONE;
    }
    b->end = (uint32_t)n;
    if (!head)
        vbuf_add(b, body, body_len);
    return local_send(t, status) == VEER_ERROR ? VEER_ERROR : VEER_DONE;
}

const char *txn_path(const struct txn *t, size_t *len)
{
    const struct vbuf *in = t->s->in;

    return http_target_path(t->req, in->data + in->start, len);
}

const char *txn_method(const struct txn *t, size_t *len)
{
    const struct vbuf *in = t->s->in;

    *len = t->req->method.len;
    return in->data + in->start + t->req->method.off;
}

int txn_pool_index(const struct txn *t)
{
    return t->pool;
}

const char *txn_route_name(const struct txn *t)
{
    return t->route_name ? t->route_name : "";
}

int txn_route_index(const struct txn *t)
{
    return t->route;
}

const struct worker *txn_worker(const struct txn *t)
{
    return t->s->w;
}

/* --- the backend side --------------------------------------------------- */

/*
 * The client's address as text (X-Forwarded-For, sticky keys), for every
 * request: IPv4 is written digit by digit (glibc's inet_ntop goes through
 * sprintf, a measurable part of a request's user time).
 */
static void fmt_peer(const struct txn_client *s, char *out, size_t len)
{
    if (s->peer.sa.sa_family == AF_INET && len >= INET_ADDRSTRLEN) {
        const uint8_t *a = (const uint8_t *)&s->peer.in4.sin_addr;
        char *o = out;

        for (int i = 0; i < 4; i++) {
            if (a[i] >= 100)
                *o++ = (char)('0' + a[i] / 100);
            if (a[i] >= 10)
                *o++ = (char)('0' + a[i] / 10 % 10);
            *o++ = (char)('0' + a[i] % 10);
            *o++ = i < 3 ? '.' : '\0';
        }
    } else if (s->peer.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &s->peer.in6.sin6_addr, out, (socklen_t)len);
    } else if (s->peer.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &s->peer.in4.sin_addr, out, (socklen_t)len);
    } else {
        snprintf(out, len, "unknown");
    }
}

static int upstream_failed(struct txn *t, const char *what, int err);

/* Open (or reuse) an upstream connection for the picked backend and send. */
static int connect_upstream(struct txn *t, bool fresh)
{
    struct worker *w = t->s->w;

    t->up = fresh ? upstream_connect(w, t->be, t->pool, t) : upstream_get(w, t->be, t->pool, t);
    if (t->up == NULL)
        return upstream_failed(t, "refused connection", errno);
    /* Keep the request's bytes until the response starts: a retry can resend them. */
    t->req_held = !t->res_started && (t->req_held || t->req_sent == 0);
    if (t->up->connecting)
        return VEER_OK;
    upstream_want_read(t->up, true);
    return txn_defer(t->s, TXN_FLUSH_UPSTREAM);
}

/*
 * The request head is complete and valid: pick a backend, write the head
 * veer forwards, and start talking to the backend. Body bytes that came
 * with the head stay in the client buffer and follow it.
 */
/* The value of cookie `name` in the request's Cookie field, or NULL. */
static const char *find_cookie(const struct txn *t, const char *head, const char *name, size_t *len)
{
    size_t n, nl = strlen(name);
    const char *v = http_find_header(t->req, head, "cookie", &n), *end;

    for (end = v ? v + n : NULL; v && v < end;) {
        const char *semi = memchr(v, ';', (size_t)(end - v));
        const char *pair_end = semi ? semi : end;

        while (v < pair_end && *v == ' ')
            v++;
        if ((size_t)(pair_end - v) > nl && memcmp(v, name, nl) == 0 && v[nl] == '=') {
            *len = (size_t)(pair_end - v) - nl - 1;
            return v + nl + 1;
        }
        v = semi ? semi + 1 : end;
    }
    return NULL;
}

/*
 * The group a request is bound to, or -1 for the pool's plain balance:
 * the override header (always / never: canary / the other group), else the
 * sticky cohort. A user's key hashes to a point in [0,100); groups own
 * consecutive intervals sized by their shares, the canary's first, so a
 * user in the canary at 5% stays in it at 20% and never flips back.
 */
static int bound_group(const struct txn *t, const struct snap_pool *sp, const char *head)
{
    const struct conf_pool *cp = sp->conf;
    const char *key = NULL;
    size_t n = 0;
    char ip[INET6_ADDRSTRLEN];
    double point, acc = 0;

    if (cp->override_header && sp->canary >= 0 && sp->ng == 2) {
        const char *v = http_find_header(t->req, head, cp->override_header, &n);

        if (v && n == 6 && strncasecmp(v, "always", 6) == 0)
            return sp->canary;
        if (v && n == 5 && strncasecmp(v, "never", 5) == 0)
            return 1 - sp->canary;
    }
    if (!cp->has_sticky)
        return -1;
    if (cp->sticky.header)
        key = http_find_header(t->req, head, cp->sticky.header, &n);
    else if (cp->sticky.cookie)
        key = find_cookie(t, head, cp->sticky.cookie, &n);
    else if (cp->sticky.client_address) {
        fmt_peer(t->s, ip, sizeof(ip));
        key = ip;
        n = strlen(ip);
    }
    if (key == NULL || n == 0)
        return -1;
    point = (double)(veer_fnv1a(key, n) % 10000) / 100.0;
    for (uint32_t k = 0; k < sp->ng; k++) {
        uint32_t g = sp->canary >= 0
                         ? (k == 0 ? (uint32_t)sp->canary : (k <= (uint32_t)sp->canary ? k - 1 : k))
                         : k;

        acc += sp->share[g];
        if (point < acc)
            return (int)g;
    }
    return -1;
}

/* Pick a backend for t; NULL when the pool has none for it right now. */
static struct backend *pick(struct txn *t)
{
    struct worker *w = t->s->w;
    struct lb *lb = worker_lb(w, t->pool);
    const char *head = t->s->in->data + t->s->in->start;
    int g, idx;

    if (lb == NULL)
        return NULL;
    g = (lb->sp->conf->has_sticky || lb->sp->conf->override_header) ? bound_group(t, lb->sp, head)
                                                                    : -1;
    if (g >= 0 && (uint32_t)g < lb->sp->ng && lb->sp->groups[g].n) {
        struct lb *gl = worker_group_lb(w, t->pool, (uint32_t)g);

        idx = lb_pick(gl);
        return idx < 0 ? NULL : gl->sp->b[idx].be;
    }
    idx = lb_pick(lb);
    return idx < 0 ? NULL : lb->sp->b[idx].be;
}

/* --- the hold queue: requests waiting for a backend (hold_ms) or maintenance to end ---- */

#define HOLD_MAX 4096 /* requests held per worker; beyond, they get their 503 at once */

/*
 * A held transaction is on exactly one queue (t->held_on): the worker's, or
 * the batch txn_retry_held is working through. Whoever takes it off (its
 * timer, an answer, the client side closing, a retry) uses the queue it is on,
 * so taking one off never disturbs a walk over another.
 */
static void queue_append(struct txn_queue *q, struct txn *t)
{
    t->held_on = q;
    t->held_prev = q->tail;
    t->held_next = NULL;
    if (q->tail)
        q->tail->held_next = t;
    else
        q->head = t;
    q->tail = t;
    q->n++;
}

static void queue_remove(struct txn *t)
{
    struct txn_queue *q = t->held_on;

    if (t->held_prev)
        t->held_prev->held_next = t->held_next;
    else
        q->head = t->held_next;
    if (t->held_next)
        t->held_next->held_prev = t->held_prev;
    else
        q->tail = t->held_prev;
    t->held_next = t->held_prev = NULL;
    t->held_on = NULL;
    q->n--;
}

/* Stop a pending retry or hold timer (both use retry_ev). */
static void disarm_retry(struct txn *t)
{
    if (t->retry_armed) {
        event_del(&t->retry_ev);
        t->retry_armed = false;
    }
}

static void unhold(struct txn *t)
{
    if (t->held_on == NULL)
        return;
    queue_remove(t);
    disarm_retry(t);
    atomic_fetch_sub_explicit(&t->s->w->mstat.held, 1, memory_order_relaxed);
}

static int route(struct txn *t);

static void hold_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct txn *t = arg;
    struct txn_client *s = t->s;

    CHECK_OBJ(t, TXN_MAGIC);
    t->retry_armed = false;
    unhold(t);
    if (route(t) == VEER_DONE) /* the deadline passed: route answers 503 */
        s->ops->resume(s);
}

/* Park t until a new snapshot may have what it needs, or until the deadline. */
static int hold(struct txn *t)
{
    struct worker *w = t->s->w;
    uint64_t now = veer_now_us();
    struct timeval tv;

    if (w->held.n >= HOLD_MAX || now >= t->hold_deadline_us)
        return VEER_DECLINED;
    t->phase = TXN_HELD;
    queue_append(&w->held, t);
    atomic_fetch_add_explicit(&w->mstat.held, 1, memory_order_relaxed);
    tv.tv_sec = (time_t)((t->hold_deadline_us - now) / 1000000);
    tv.tv_usec = (suseconds_t)((t->hold_deadline_us - now) % 1000000);
    evtimer_assign(&t->retry_ev, w->base, hold_timer_cb, t);
    evtimer_add(&t->retry_ev, &tv);
    t->retry_armed = true;
    return VEER_OK;
}

/*
 * Held requests try again, oldest first, so they go in order. The queue is
 * taken whole first: a request that must still wait goes back on the
 * worker's (now empty) queue and is not seen again in this pass, so one
 * pass routes each request at most once, however many are held.
 */
void txn_retry_held(struct worker *w)
{
    struct txn_queue batch = w->held;

    w->held = (struct txn_queue){0};
    for (struct txn *t = batch.head; t; t = t->held_next)
        t->held_on = &batch;
    while (batch.head) {
        struct txn *t = batch.head;
        struct txn_client *s = t->s;

        unhold(t);
        if (route(t) == VEER_DONE)
            s->ops->resume(s);
    }
}

static void retry_held_cb(evutil_socket_t fd, short what, void *arg)
{
    txn_retry_held(arg);
}

void txn_schedule_retry_held(struct worker *w)
{
    if (w->held.n == 0)
        return;
    if (!event_initialized(&w->held_ev))
        event_assign(&w->held_ev, w->base, -1, 0, retry_held_cb, w);
    event_active(&w->held_ev, EV_TIMEOUT, 0); /* once, however often it is asked */
}

int txn_head_ready(struct txn *t)
{
    struct worker *w = t->s->w;

    /*
     * Once, before anything reads the path: routing, the modules, the access
     * log and the backend all see its canonical spelling, and a path that
     * has none (%2F, a climb above "/" ...) is refused like a malformed head.
     */
    if (http_canonicalize_path(t->req, t->s->in->data + t->s->in->start) < 0)
        return txn_request_invalid(t);
    w->stats.requests++;
    t->bytes_in += t->req->head_len; /* body bytes that came along are counted already */
    return route(t);
}

/* Does some field line of t's request named name have exactly value? (routes.h) */
static bool request_header_is(const void *ctx, const char *name, size_t name_len, const char *value,
                              size_t value_len)
{
    const struct txn *t = ctx;
    const char *head = t->s->in->data + t->s->in->start;

    for (uint32_t i = 0; i < t->req->nhdr; i++) {
        const struct http_hdr *h = &t->req->hdr[i];

        if (h->name.len == name_len && h->value.len == value_len &&
            strncasecmp(head + h->name.off, name, name_len) == 0 &&
            memcmp(head + h->value.off, value, value_len) == 0)
            return true;
    }
    return false;
}

/*
 * Match t against the route table of the newest snapshot: the route's pool
 * (else the listener's) and what the route overrides, copied into t so that
 * nothing of the table is read after this event. Returns the route's
 * configuration, valid until the current callback returns (a configuration
 * outlives every snapshot a worker held in a callback: reload.c), or NULL.
 */
static const struct conf_route *route_match(struct txn *t)
{
    struct worker *w = t->s->w;
    const struct routing *r;
    const struct conf_route *cr = NULL;
    const struct conf_pool *cp;
    const char *head = t->s->in->data + t->s->in->start;

    worker_lb(w, -1); /* switch to the newest snapshot: its table and its pools */
    r = w->routing;
    t->route = -1;
    t->slot = -1;
    t->route_name = "";
    t->pool = t->lpool;
    if (r->routes) {
        struct routes_req q = {.method = head + t->req->method.off,
                               .method_len = t->req->method.len,
                               .header_is = request_header_is,
                               .ctx = t};
        int i;

        q.host = http_request_host(t->req, head, &q.host_len);
        q.path = http_target_path(t->req, head, &q.path_len);
        i = routes_match(r->routes, &q);
        if (i >= 0 && (uint32_t)i < r->nroutes && r->route[i].pool >= 0) {
            const struct snap_route *sr = &r->route[i];

            t->route = i;
            t->slot = (int)sr->slot;
            t->pool = sr->pool;
            t->route_name = sr->name;
            /* A route that overrides nothing: its configuration stays out of the cache. */
            cr = sr->plain ? NULL : &r->conf->routes[i];
        }
    }
    cp = (uint32_t)t->pool < r->npools ? r->pools[t->pool].conf : NULL;
    t->response_ms = cr ? cr->upstream_response_ms : -1;
    if (t->response_ms > 0)
        t->tv_response = (struct timeval){.tv_sec = t->response_ms / 1000,
                                          .tv_usec = (t->response_ms % 1000) * 1000};
    if (cr && cp) {
        /* Against the pool the route sends to now: a route set may have changed it. */
        struct conf_route_eff eff;

        conf_route_effective(r->conf, cr, cp, &eff);
        t->retries = eff.retries;
        t->hold_ms = eff.hold_ms;
        t->limits.body_bytes = (uint64_t)eff.body_bytes;
        return cr;
    }
    t->retries = cp ? cp->retries : (struct conf_retries){0};
    t->hold_ms = cp ? cp->hold_ms : 0;
    if (r->routes) {
        int64_t body = cp && cp->body_bytes >= 0 ? cp->body_bytes : w->conf->limits.body_bytes;

        t->limits.body_bytes = (uint64_t)body;
    }
    return cr;
}

/* Whether the request's body, as far as it is known, is over its (route's) limit. */
static bool body_too_large(const struct txn *t)
{
    const struct http_msg *req = t->req;
    uint64_t max = t->limits.body_bytes;

    return max && (((req->flags & HF_HAS_CL) && req->content_length > max) || req->body_seen > max);
}

/*
 * The request target a route's rewrite_prefix makes: the prefix in place of
 * what path or path_prefix matched, the rest of the path and the query
 * after it. A new string the caller frees.
 */
static char *rewrite_target(const struct txn *t, const struct conf_route *cr, size_t *len)
{
    const char *head = t->s->in->data + t->s->in->start;
    size_t plen, qlen, mlen, rlen = strlen(cr->rewrite_prefix);
    const char *path = http_target_path(t->req, head, &plen);
    const char *query = http_target_query(t->req, head, &qlen);
    const char *rest;
    char *out;

    if (cr->path != NULL) {
        mlen = plen; /* exact: the whole path */
    } else {
        mlen = strlen(cr->path_prefix);
        while (mlen > 0 && cr->path_prefix[mlen - 1] == '/')
            mlen--; /* "/payments/" is "/payments"; "/" matched nothing of the path */
    }
    rest = path + (mlen < plen ? mlen : plen);
    if (rlen > 0 && cr->rewrite_prefix[rlen - 1] == '/' && *rest == '/' && rest < path + plen)
        rest++; /* "/v1/" + "/x" is "/v1/x" */
    out = veer_malloc(rlen + (size_t)(path + plen - rest) + qlen + 1);
    memcpy(out, cr->rewrite_prefix, rlen);
    memcpy(out + rlen, rest, (size_t)(path + plen - rest));
    memcpy(out + rlen + (size_t)(path + plen - rest), query, qlen);
    *len = rlen + (size_t)(path + plen - rest) + qlen;
    out[*len] = '\0';
    return out;
}

static const char no_route_body[] = "{\"error\":\"no_route\",\"status\":404}\n";

/*
 * The modules (which may answer or hold the request), then a backend, then
 * off to it. Without a backend: held while the pool's hold_ms lasts, else
 * 503. A held request comes back here when a new snapshot arrives.
 */
static int route(struct txn *t)
{
    struct txn_client *s = t->s;
    struct worker *w = s->w;
    struct http_msg *req = t->req;
    const char *head = s->in->data + s->in->start;
    struct http_fwd_info fi = {0};
    char ip[INET6_ADDRSTRLEN], idbuf[64];
    const struct conf_route *cr;
    const char *mirror_id = NULL;
    char *target = NULL;
    int rc;

    t->phase = TXN_REQ_HEAD;
    cr = route_match(t);
    if (!t->budget_earned) {
        /* The retry budget: each request earns budget_percent of one retry. */
        t->budget_earned = true;
        w->retry_tokens += t->retries.budget_percent * (RETRY_TOKEN / 100);
        if (w->retry_tokens > RETRY_TOKEN_MAX)
            w->retry_tokens = RETRY_TOKEN_MAX;
    }
    rc = module_request_head(t);
    if (rc == VEER_DONE)
        return s->dead ? VEER_ERROR : VEER_OK; /* answered by the module, on its way out */
    if (rc == VEER_AGAIN) {
        if (hold(t) == VEER_OK)
            return VEER_OK;
        /*
         * Not held: its deadline passed since the module read the clock, or
         * the queue is full. The module answers as it does at the deadline
         * (maintenance: its 503 with Retry-After), not with a generic 503.
         */
        t->hold_deadline_us = 1;
        rc = module_request_head(t);
        if (rc == VEER_DONE)
            return s->dead ? VEER_ERROR : VEER_OK;
        return local_response(t, 503, "held too long", false);
    }
    if (rc != VEER_DECLINED)
        return s->dead ? VEER_ERROR : local_response(t, 500, "module error", true);
    if ((uint32_t)t->pool >= w->routing->npools) {
        /* No route matched and the listener has no pool. */
        rc =
            txn_respond(t, 404, NULL, "application/json", no_route_body, sizeof(no_route_body) - 1);
        return rc == VEER_ERROR ? VEER_ERROR : VEER_OK;
    }
    if (body_too_large(t))
        return local_response(t, 413, "request body too large", true);
    t->be = pick(t);
    if (t->be == NULL) {
        if (t->hold_ms > 0) {
            if (t->hold_deadline_us == 0)
                t->hold_deadline_us = veer_now_us() + (uint64_t)t->hold_ms * 1000;
            if (hold(t) == VEER_OK)
                return VEER_OK;
        }
        return local_response(t, 503, "no eligible backend", false);
    }
    backend_wstat_add(&t->be->ws[w->idx].active, 1);

    fmt_peer(s, ip, sizeof(ip));
    fi.client_ip = ip;
    fi.tls = s->tls;
    fi.request_id = t->log && t->log->id_generated ? t->log->request_id : NULL;
    fi.edit = t->edit;
    fi.nedit = t->nedit;
    if (cr) {
        if (cr->rewrite_prefix)
            fi.target = target = rewrite_target(t, cr, &fi.target_len);
        fi.set = cr->set_headers;
        fi.nset = (size_t)cr->nset_headers;
        fi.remove = cr->remove_headers.n ? &cr->remove_headers : NULL;
    }
    if (unlikely(w->routing->nmirrors))
        mirror_id = mirror_sample(t, &fi, idbuf, sizeof(idbuf));
    t->req_head = txn_head_buf(w, http_request_bound(req, &fi));
    t->req_head->end = (uint32_t)http_build_request(req, head, &fi, t->req_head->data);
    free(target);
    /* The head is rewritten: its bytes leave the client buffer. */
    s->in->start += req->head_len;
    t->req_parsed -= req->head_len;

    http_msg_init(t->res, HTTP_RESPONSE, &t->res_limits);
    t->res->head_request = req->parser.method == HTTP_HEAD;
    t->phase = TXN_FORWARD;
    if (unlikely(mirror_id != NULL))
        mirror_begin(t, mirror_id);
    return connect_upstream(t, false);
}

int txn_start_shadow(struct txn *t, struct backend *be, int pool, bool head_request,
                     void (*on_body)(void *ctx, const char *at, size_t len), void *ctx)
{
    struct worker *w = t->s->w;

    t->shadow = true;
    t->pool = t->lpool = pool;
    t->be = be;
    backend_wstat_add(&be->ws[w->idx].active, 1);
    t->retries = (struct conf_retries){0};
    http_msg_init(t->res, HTTP_RESPONSE, &t->res_limits);
    t->res->head_request = head_request;
    t->res->on_body = on_body;
    t->res->on_body_ctx = ctx;
    t->phase = TXN_FORWARD;
    return connect_upstream(t, false);
}

/*
 * Retry a request whose reused (pooled) connection failed before any
 * response byte: the backend closed it while idle. The request head and any
 * body bytes were kept, so the request is sent again, once, on a fresh
 * connection.
 */
static bool can_retry(const struct txn *t)
{
    return t->up && t->up->reused && !t->retried && !t->res_started && t->req_held;
}

static int retry_fresh(struct txn *t)
{
    t->s->w->stats.retries++;
    upstream_release(t->up, false);
    t->up = NULL;
    t->retried = true;
    t->req_head_sent = 0;
    t->req_sent = 0;
    return connect_upstream(t, true);
}

static const struct conf_pool *txn_pool(const struct txn *t)
{
    const struct routing *r = t->s->w->routing;

    return (uint32_t)t->pool < r->npools ? r->pools[t->pool].conf : NULL;
}

/*
 * The outcome of a request for the backend's circuit breaker: a connect
 * error, a reset or a 5xx is a failure. A worker counts its own run of
 * consecutive failures and tells the control thread when it reaches the
 * threshold; while the breaker is half-open every outcome is reported.
 */
static void breaker_report(struct txn *t, bool ok)
{
    struct worker *w = t->s->w;
    struct backend_wstat *ws = &t->be->ws[w->idx];
    int state = atomic_load_explicit(&t->be->breaker, memory_order_relaxed);
    const struct conf_pool *cp = txn_pool(t);
    uint64_t now;

    if (t->shadow)
        return; /* a standby's outcome is the pair's, not the breaker's */
    if (ok) {
        ws->fails = 0;
        if (state == BREAKER_HALF_OPEN)
            report_breaker(w->idx, t->be, true);
        return;
    }
    if (state == BREAKER_HALF_OPEN) {
        report_breaker(w->idx, t->be, false);
        return;
    }
    if (state == BREAKER_OPEN || cp == NULL)
        return;
    now = veer_now_us();
    if (ws->fails == 0 || now - ws->first_fail_us > (uint64_t)cp->breaker.window_ms * 1000) {
        ws->fails = 0;
        ws->first_fail_us = now;
    }
    if (++ws->fails == (uint32_t)cp->breaker.failures)
        report_breaker(w->idx, t->be, false);
}

/* xorshift per worker, for retry jitter */
static uint64_t worker_rand(struct worker *w)
{
    uint64_t x = w->rng ? w->rng : (veer_now_us() << 8 | (w->idx + 1));

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rng = x;
}

static void retry_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct txn *t = arg;
    struct txn_client *s = t->s;

    CHECK_OBJ(t, TXN_MAGIC);
    t->retry_armed = false;
    if (connect_upstream(t, false) == VEER_DONE)
        s->ops->resume(s);
}

/*
 * Whether a failed attempt may go to another backend: before any response
 * byte; when no request byte reached the backend (a refused or timed-out
 * connect) for any method, otherwise only for idempotent methods whose
 * bytes are still held; within `retries.count`, and within the retry
 * budget, so retries cannot multiply an outage.
 */
static bool may_retry_elsewhere(const struct txn *t)
{
    const struct conf_pool *cp = txn_pool(t);
    bool nothing_sent = t->req_head_sent == 0 && t->req_sent == 0;

    if (cp == NULL || t->res_started || t->res_head_done || t->phase != TXN_FORWARD)
        return false;
    if ((int)t->attempts >= t->retries.count || t->s->w->retry_tokens < RETRY_TOKEN)
        return false;
    return nothing_sent || (http_method_idempotent(t->req) && t->req_held);
}

/*
 * Send the request again, to a different backend when the pool has one,
 * after a backoff with full jitter: random(0, min(cap, base x 2^attempt)).
 */
static int retry_elsewhere(struct txn *t)
{
    struct worker *w = t->s->w;
    const struct conf_retries *rt = &t->retries;
    struct lb *lb = worker_lb(w, t->pool);
    struct backend *old = t->be;
    uint64_t ceiling, delay_us;
    struct timeval tv;
    int idx = -1;

    for (int k = 0; lb && k < 4; k++) {
        idx = lb_pick(lb);
        if (idx < 0 || lb->sp->b[idx].be != old)
            break;
    }
    if (idx < 0)
        return VEER_DECLINED;
    w->stats.retries++;
    counter_add(&w->mstat.retries, 1);
    w->retry_tokens -= RETRY_TOKEN;
    t->attempts++;
    if (t->up) {
        upstream_release(t->up, false);
        t->up = NULL;
    }
    backend_wstat_add(&old->ws[w->idx].active, -1);
    t->be = lb->sp->b[idx].be;
    t->be_failed = false;
    backend_wstat_add(&t->be->ws[w->idx].active, 1);
    t->req_head_sent = 0;
    t->req_sent = 0;
    ceiling = ((uint64_t)rt->base_ms * 1000) << (t->attempts < 20 ? t->attempts - 1 : 19);
    if (ceiling > (uint64_t)rt->cap_ms * 1000)
        ceiling = (uint64_t)rt->cap_ms * 1000;
    delay_us = ceiling ? worker_rand(w) % (ceiling + 1) : 0;
    if (delay_us == 0)
        return connect_upstream(t, false);
    tv.tv_sec = (time_t)(delay_us / 1000000);
    tv.tv_usec = (suseconds_t)(delay_us % 1000000);
    evtimer_assign(&t->retry_ev, w->base, retry_timer_cb, t);
    evtimer_add(&t->retry_ev, &tv);
    t->retry_armed = true;
    return VEER_OK;
}

/* The metric kind of an upstream failure described by `what`. */
static enum upstream_err error_kind(const struct txn *t, const char *what)
{
    if (t->up == NULL || t->up->connecting || strstr(what, "refused") ||
        strstr(what, "TLS handshake"))
        return UERR_CONNECT;
    if (strstr(what, "bad") || strstr(what, "101") || strstr(what, "head"))
        return UERR_RESPONSE;
    return UERR_RESET;
}

/* The backend failed us (reset, refused, closed before a whole response). */
static int upstream_failed(struct txn *t, const char *what, int err)
{
    char detail[160];
    int rc;

    if (can_retry(t))
        return retry_fresh(t);
    txn_upstream_error(t, error_kind(t, what));
    breaker_report(t, false);
    if (may_retry_elsewhere(t) && (rc = retry_elsewhere(t)) != VEER_DECLINED)
        return rc;
    if (t->up == NULL) {
        snprintf(detail, sizeof(detail), "cannot connect to backend %s: %s", t->be->name,
                 strerror(err));
        return local_response(t, 502, detail, false);
    }
    t->up->dead = true;
    if (t->res_head_done) {
        /* Mid-response: the client must see a truncated response, not a complete one. */
        t->s->ops->abort(t->s);
        return VEER_ERROR;
    }
    snprintf(detail, sizeof(detail), "backend %s %s%s%s", t->be->name, what, err ? ": " : "",
             err ? strerror(err) : "");
    return local_response(t, 502, detail, false);
}

/*
 * A tunnel whose client half-closed passes the half-close on once every
 * byte the client sent is written, never before: bytes still queued after
 * EAGAIN would be cut off by the FIN.
 */
static void tunnel_half_close(struct txn *t)
{
    if (t->phase == TXN_TUNNEL && t->s->client_eof && !t->up_shut && t->up) {
        upstream_shutdown_write(t->up);
        t->up_shut = true;
    }
}

/*
 * Write the rewritten head and the request body bytes parsed so far to the
 * backend. Bytes of a request on a reused connection are held (not
 * dropped) until the response starts, so a stale connection can be retried.
 */
int txn_flush_upstream(struct txn *t)
{
    struct txn_client *s = t->s;
    struct upstream *up = t->up;
    struct vbuf *h = t->req_head, *in = s->in;
    struct iovec iov[2];
    uint32_t hlen = h ? vbuf_len(h) - t->req_head_sent : 0;
    uint32_t blen = t->req_parsed - t->req_sent;
    int cnt = 0;
    ssize_t n;

    if (up == NULL || up->connecting)
        return VEER_OK;
    if (hlen) {
        iov[cnt].iov_base = h->data + h->start + t->req_head_sent;
        iov[cnt++].iov_len = hlen;
    }
    if (blen) {
        iov[cnt].iov_base = in->data + in->start + t->req_sent;
        iov[cnt++].iov_len = blen;
    }
    if (cnt == 0) {
        upstream_want_write(up, false);
        tunnel_half_close(t);
        return VEER_OK;
    }
    n = upstream_writev(up, iov, cnt);
    if (n < 0) {
        if (errno == EAGAIN) {
            upstream_want_write(up, true);
            return VEER_OK;
        }
        return upstream_failed(t, "write failed", errno);
    }
    if (t->up_start_us == 0)
        t->up_start_us = veer_now_us();
    if ((uint32_t)n >= hlen) {
        t->req_head_sent += hlen;
        n -= hlen;
        t->req_sent += (uint32_t)n;
        if (!t->req_held) {
            in->start += t->req_sent;
            t->req_parsed -= t->req_sent;
            t->req_sent = 0;
        }
    } else {
        t->req_head_sent += (uint32_t)n;
    }
    if (t->req_head_sent < vbuf_len(h) || t->req_sent < t->req_parsed) {
        upstream_want_write(up, true);
        return VEER_OK;
    }
    upstream_want_write(up, false);
    tunnel_half_close(t);
    if (in && in->start == in->end)
        in->start = in->end = 0;
    if (!s->reading && !s->client_eof && !s->closing)
        s->ops->want_read(s, true);
    return VEER_OK;
}

void txn_upstream_writable(struct txn *t)
{
    struct txn_client *s = t->s;
    int rc;

    CHECK_OBJ(t, TXN_MAGIC);
    if (t->up->conn_err) {
        int err = t->up->conn_err;

        t->up->conn_err = 0;
        rc = upstream_failed(t, err == EPROTO ? "TLS handshake failed" : "refused connection", err);
    } else {
        if (!t->up->reading)
            upstream_want_read(t->up, true);
        rc = txn_flush_upstream(t);
    }
    if (rc == VEER_DONE)
        s->ops->resume(s);
}

void txn_upstream_timeout(struct txn *t, bool connecting)
{
    struct txn_client *s = t->s;
    int rc;

    CHECK_OBJ(t, TXN_MAGIC);
    if (t->phase == TXN_TUNNEL)
        return; /* the client side's idle timer decides */
    txn_upstream_error(t, UERR_TIMEOUT);
    breaker_report(t, false);
    if (connecting && may_retry_elsewhere(t) && retry_elsewhere(t) != VEER_DECLINED)
        return;
    t->up->dead = true;
    rc = local_response(t, 504, connecting ? "backend connect timeout" : "backend timeout", false);
    if (rc == VEER_DONE)
        s->ops->resume(s);
}

/* Bytes the client may still need, before a tunnel replaces the exchange. */
static int start_tunnel(struct txn *t)
{
    struct txn_client *s = t->s;

    t->phase = TXN_TUNNEL;
    t->req_done = true;
    t->req_held = false;
    t->req_parsed = vbuf_len(s->in);
    t->req_sent = 0;
    t->res_parsed = vbuf_len(t->rin);
    t->close_client = true;
    if (!s->reading && !s->client_eof)
        s->ops->want_read(s, true);
    t->last_io_us = veer_now_us();
    event_add(&t->up->rev, s->w->tv_idle);
    t->up->reading = true;
    return txn_defer(s, TXN_FLUSH_UPSTREAM | TXN_FLUSH_CLIENT);
}

/* The final response head is in: the breaker learns the outcome, the client side gets the head. */
static int final_response_head(struct txn *t)
{
    struct http_msg *res = t->res;

    if (res->status == 101 && !(t->req->flags & HF_UPGRADE))
        return upstream_failed(t, "sent an unrequested 101", 0);
    breaker_report(t, res->status < 500);
    if (unlikely(t->mirror != NULL))
        mirror_primary_head(t);
    t->res_status = res->status;
    t->s->ops->response_head(t, true);
    t->rin->start += res->head_len;
    t->res_parsed -= res->head_len;
    t->res_head_done = true;
    if (res->status == 101)
        return start_tunnel(t);
    return VEER_OK;
}

/* An interim 1xx head: relayed as the client side can (see txn_client_ops). */
static void interim_head(struct txn *t)
{
    struct http_msg *res = t->res;

    t->s->ops->response_head(t, false);
    t->rin->start += res->head_len;
    t->res_parsed -= res->head_len;
}

/*
 * Parse what the backend sent and relay it. Returns after writing as much
 * as the client takes.
 */
int txn_process_response(struct txn *t)
{
    struct vbuf *b = t->rin;
    struct http_msg *res = t->res;
    enum http_result r;
    size_t used;
    int rc;

    for (;;) {
        char *data = b->data + b->start + t->res_parsed;
        size_t len = b->end - (b->start + t->res_parsed);

        if (t->res_done)
            break;
        if (!t->res_head_done && t->res_head && t->res_head_sent < vbuf_len(t->res_head))
            return VEER_OK; /* a 1xx is still going out */
        r = http_parse(res, b->data + b->start, data, len, &used);
        if (res->dechunk && res->phase != HMSG_HEAD && t->res_head_done) {
            uint32_t kept = (uint32_t)(res->dechunk_dst - data);

            t->res_parsed += kept;
            /*
             * On bad framing `used` says nothing about what was consumed (the
             * de-chunked bytes are still good): the buffer is cut after
             * them below, nothing moves.
             */
            if (r != HTTP_INVALID) {
                memmove(data + kept, data + used, len - used);
                b->end -= (uint32_t)(used - kept);
            }
        } else {
            t->res_parsed += (uint32_t)used;
        }
        switch (r) {
        case HTTP_NEED_MORE:
            break;
        case HTTP_INVALID:
            if (t->res_head_done) {
                /* Bad framing mid-body: end the client response as truncated. */
                t->up->dead = true;
                b->end = b->start + t->res_parsed;
                t->close_client = true;
                t->s->ops->cut(t);
                return VEER_ERROR;
            }
            return upstream_failed(t, res->err_what ? res->err_what : "sent a bad response", 0);
        case HTTP_HEAD_DONE:
            if (res->status >= 100 && res->status < 200 && res->status != 101) {
                interim_head(t);
                return txn_defer(t->s, TXN_FLUSH_CLIENT); /* the final head waits for it */
            }
            rc = final_response_head(t);
            if (rc != VEER_OK || t->phase == TXN_TUNNEL)
                return rc;
            continue;
        case HTTP_MSG_DONE:
            if (!t->res_head_done)
                continue; /* the end of a 1xx: parse the next head */
            t->res_done = true;
            t->up_end_us = veer_now_us();
            if (b->start + t->res_parsed != b->end)
                t->up->dead = true; /* bytes after the response: never reuse */
            b->end = b->start + t->res_parsed;
            break;
        case HTTP_UPGRADED:
            break;
        }
        break;
    }
    if (t->res_parsed || t->res_done || (t->res_head && t->res_head_sent < vbuf_len(t->res_head)))
        return txn_defer(t->s, TXN_FLUSH_CLIENT);
    return VEER_OK;
}

/* The backend closed its side. */
static int upstream_eof(struct txn *t)
{
    t->up_eof = true;
    if (t->phase == TXN_TUNNEL) {
        upstream_want_read(t->up, false);
        return txn_defer(t->s, TXN_FLUSH_CLIENT);
    }
    if (!t->res_started)
        return upstream_failed(t, "closed the connection", 0);
    if (!t->res_head_done)
        return upstream_failed(t, "closed the connection mid-head", 0);
    t->up->dead = true;
    if (!t->res_done && http_parse_eof(t->res) == HTTP_MSG_DONE) {
        t->res_done = true;
        return txn_defer(t->s, TXN_FLUSH_CLIENT);
    }
    if (t->res_done)
        return txn_defer(t->s, TXN_FLUSH_CLIENT);
    /* Truncated: send what we have, then close so the client sees it cut. */
    t->close_client = true;
    t->s->ops->cut(t);
    return VEER_ERROR;
}

void txn_upstream_readable(struct txn *t)
{
    struct txn_client *s = t->s;
    struct worker *w = s->w;
    struct upstream *up = t->up;
    ssize_t n;
    int rc;

    CHECK_OBJ(t, TXN_MAGIC);
    if (t->rin == NULL)
        t->rin = vbuf_get(&w->bufs);
    if (vbuf_room(t->rin) == 0) {
        uint32_t shift;

        if (vbuf_reserve(&w->bufs, &t->rin, 1, t->res_head_done ? VBUF_SIZE : w->head_buf_limit,
                         &shift) < 0) {
            if (!t->res_head_done) {
                t->up->dead = true;
                rc = local_response(t, 502, "response head too large", false);
                if (rc == VEER_DONE)
                    s->ops->resume(s);
                return;
            }
            upstream_want_read(up, false); /* full: wait for the client */
            return;
        }
    }
    n = upstream_read(up, t->rin);
    if (n > 0) {
        if (!t->res_started) {
            t->res_started = true;
            if (t->req_held)
                txn_release_held(t); /* the backend answers: bytes kept for a retry can go */
        }
        if (t->phase == TXN_TUNNEL) {
            t->last_io_us = veer_now_us();
            t->res_parsed = vbuf_len(t->rin);
            rc = txn_defer(s, TXN_FLUSH_CLIENT);
        } else {
            rc = txn_process_response(t);
        }
    } else if (n == 0) {
        rc = upstream_eof(t);
    } else if (errno == EAGAIN || errno == EINTR) {
        return;
    } else if (t->phase == TXN_TUNNEL) {
        s->ops->abort(s);
        return;
    } else {
        rc = upstream_failed(t, "reset the connection", errno);
    }
    if (rc == VEER_DONE)
        s->ops->resume(s);
    /* A full buffer may have left decrypted bytes behind: come back for them. */
    if (up->tls && !up->dead && up->reading && tls_pending(up->tls))
        event_active(&up->rev, EV_READ, 0);
}

/* --- what the client side asks of the transaction ------------------------------- */

int txn_local_response(struct txn *t, int status, const char *detail, bool close)
{
    return local_response(t, status, detail, close);
}

int txn_request_invalid(struct txn *t)
{
    const struct http_msg *req = t->req;

    if (t->up)
        t->up->dead = true;
    return local_response(t, req->err_status ? req->err_status : 400,
                          req->err_what ? req->err_what : "malformed request", true);
}

bool txn_upstream_reusable(const struct txn *t)
{
    return t->up && t->req_done && t->res_done && !t->up->dead &&
           t->req_head_sent == vbuf_len(t->req_head) && t->req_sent == t->req_parsed &&
           vbuf_len(t->rin) == 0 && llhttp_should_keep_alive(&t->res->parser);
}

void txn_release_upstream(struct txn *t, bool reusable)
{
    if (t->up)
        upstream_release(t->up, reusable);
    t->up = NULL;
}

void txn_release_held(struct txn *t)
{
    t->s->in->start += t->req_sent;
    t->req_parsed -= t->req_sent;
    t->req_sent = 0;
    t->req_held = false;
}
