/*
 * mirror.c - shadow traffic: the shadow transaction's client side, the
 * copy of the request, the summaries of both answers and the judgement of
 * the pair (see mirror.h).
 */
#include "mirror.h"
#include "balance.h"
#include "mirrorstat.h"
#include "module.h"
#include "veer.h"
#include "worker.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MIRROR_MAGIC   0x6d697272u
#define MIRROR_CMP_MAX 8 /* compared headers */

/* One side's answer, summarised as it streams. */
struct mirror_sum {
    int status;
    uint64_t bytes;
    EVP_MD_CTX *sha;
    uint8_t digest[32];
    uint64_t hdr[MIRROR_CMP_MAX]; /* per compared header: 0 absent, else 1 + a hash of its value */
    uint64_t us;                  /* first byte sent to the backend to the response's end */
};

struct mirror {
    struct txn_client c; /* first: the shadow transaction's client side */
    unsigned magic;
    struct mirror *next, *prev; /* the worker's pairs not judged yet */
    struct txn *t;              /* the shadow; NULL once it ended */
    struct txn *primary;        /* NULL once it ended */
    struct mirror_site *site;
    struct event timer; /* the shadow's timeout_ms */
    uint64_t max_body;
    uint64_t timeout_us; /* what a shadow that timed out or failed counts as its latency */
    uint64_t start_us;   /* the shadow began */
    uint64_t limit;      /* largest request buffer: head and max_body of body, framing included */
    enum mirror_result fate; /* once the shadow ended: MR_MATCH (it answered whole) or why not */
    bool shadow_ended, primary_ended, dropped;
    bool batched;              /* on the worker's batch: its bytes wait to be written */
    struct mirror *bnext;      /* the next one on the batch */
    struct mirror_sum side[2]; /* 0: the primary, 1: the shadow */
    char cmp[MIRROR_CMP_BYTES];
    char request_id[64], method[16], path[128];
};

/*
 * SHA-256, fetched once: OpenSSL 3 looks an algorithm up (under a lock)
 * every time EVP_sha256() is used to initialise a digest.
 */
static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void sum_body(void *ctx, const char *at, size_t len)
{
    struct mirror_sum *s = ctx;

    s->bytes += len;
    EVP_DigestUpdate(s->sha, at, len);
}

/* The status and compared headers of a final response head at t->rin->start. */
static void sum_head(struct mirror_sum *s, const char *cmp, const struct txn *t)
{
    const char *head = t->rin->data + t->rin->start;
    unsigned k = 0;

    s->status = t->res->status;
    for (const char *h = cmp; *h && k < MIRROR_CMP_MAX; h += strlen(h) + 1, k++) {
        size_t n;
        const char *v = http_find_header(t->res, head, h, &n);

        s->hdr[k] = v ? 1 + veer_fnv1a(v, n) : 0;
    }
}

static void sum_end(struct mirror_sum *s, const struct txn *t)
{
    unsigned len = 0;

    EVP_DigestFinal_ex(s->sha, s->digest, &len);
    if (t->up_end_us && t->up_start_us && t->up_end_us >= t->up_start_us)
        s->us = t->up_end_us - t->up_start_us;
    else
        s->us = veer_now_us() - t->start_us;
}

/* --- the judgement --------------------------------------------------------- */

static void copy_bytes(char *dst, size_t dlen, const char *src, size_t n)
{
    n = n < dlen - 1 ? n : dlen - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Both sides ended: count the pair, keep a difference, free it after the send phase. */
static void judge(struct mirror *m)
{
    struct worker *w = m->c.w;
    enum mirror_result r = m->dropped ? MR_DROPPED : m->fate;
    const struct mirror_sum *p = &m->side[0], *s = &m->side[1];
    const char *header = "";

    if (r == MR_MATCH) {
        if (p->status != s->status) {
            r = MR_STATUS_DIFF;
        } else if (p->bytes != s->bytes || memcmp(p->digest, s->digest, 32) != 0) {
            r = MR_BODY_DIFF;
        } else {
            unsigned k = 0;

            for (const char *h = m->cmp; *h && k < MIRROR_CMP_MAX; h += strlen(h) + 1, k++) {
                if (p->hdr[k] != s->hdr[k]) {
                    r = MR_BODY_DIFF;
                    header = h;
                    break;
                }
            }
        }
    }
    mirror_count(m->site, w->idx, p->status, r, (int64_t)s->us - (int64_t)p->us,
                 r == MR_TIMEOUT || r == MR_ERROR ? m->timeout_us : s->us);
    if (r == MR_STATUS_DIFF || r == MR_BODY_DIFF) {
        struct mirror_mismatch mm = {.result = r,
                                     .primary_status = p->status,
                                     .shadow_status = s->status,
                                     .primary_bytes = p->bytes,
                                     .shadow_bytes = s->bytes,
                                     .at_us = m->start_us};

        memcpy(mm.request_id, m->request_id, sizeof(mm.request_id));
        memcpy(mm.method, m->method, sizeof(mm.method));
        memcpy(mm.path, m->path, sizeof(mm.path));
        memcpy(mm.primary_sha, p->digest, 32);
        memcpy(mm.shadow_sha, s->digest, 32);
        copy_bytes(mm.header, sizeof(mm.header), header, strlen(header));
        mirror_note(m->site, &mm);
    }
    /* Off the worker's list, onto its dead list: freed once no queued flush names it. */
    if (m->prev)
        m->prev->next = m->next;
    else
        w->mirrors = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->next = w->dead_mirrors;
    w->dead_mirrors = m;
}

/* Off the worker's batch (see shadow_flush), if it is on it. */
static void unbatch(struct mirror *m)
{
    struct worker *w = m->c.w;
    struct mirror **pp = &w->shadow_batch, *prev = NULL;

    if (!m->batched)
        return;
    while (*pp != m) {
        prev = *pp;
        pp = &prev->bnext;
    }
    *pp = m->bnext;
    if (w->shadow_batch_last == m)
        w->shadow_batch_last = prev;
    w->shadow_batch_n--;
    m->batched = false;
}

/* Mirrors a worker keeps for the next ones, with their digest contexts. */
#define MIRROR_CACHE 64

static void mirror_release(struct mirror *m)
{
    for (int k = 0; k < 2; k++)
        EVP_MD_CTX_free(m->side[k].sha);
    m->magic = 0;
    free(m);
}

static void mirror_free(struct worker *w, struct mirror *m)
{
    m->magic = 0;
    if (w->nfree_mirrors >= MIRROR_CACHE) {
        mirror_release(m);
        return;
    }
    m->next = w->free_mirrors;
    w->free_mirrors = m;
    w->nfree_mirrors++;
}

/* A cleared mirror (from the worker's cache, else new) with both digests begun. */
static struct mirror *mirror_alloc(struct worker *w)
{
    struct mirror *m = w->free_mirrors;
    EVP_MD_CTX *sha[2] = {NULL, NULL};

    if (m) {
        w->free_mirrors = m->next;
        w->nfree_mirrors--;
        sha[0] = m->side[0].sha;
        sha[1] = m->side[1].sha;
        memset(m, 0, sizeof(*m));
    } else {
        m = veer_calloc(1, sizeof(*m));
        pthread_once(&sha256_once, sha256_fetch);
    }
    for (int k = 0; k < 2; k++) {
        m->side[k].sha = sha[k] ? sha[k] : EVP_MD_CTX_new();
        if (sha256 == NULL || m->side[k].sha == NULL ||
            !EVP_DigestInit_ex(m->side[k].sha, sha256, NULL))
            veer_panic(__FILE__, __LINE__, "SHA-256");
    }
    m->magic = MIRROR_MAGIC;
    return m;
}

void mirror_reap(struct worker *w)
{
    while (w->dead_mirrors) {
        struct mirror *m = w->dead_mirrors;

        w->dead_mirrors = m->next;
        mirror_free(w, m);
    }
}

void mirror_cache_destroy(struct worker *w)
{
    if (w->shadow_batch_ev)
        event_free(w->shadow_batch_ev);
    w->shadow_batch_ev = NULL;
    while (w->free_mirrors) {
        struct mirror *m = w->free_mirrors;

        w->free_mirrors = m->next;
        mirror_release(m);
    }
    w->nfree_mirrors = 0;
}

/*
 * The shadow ended, answered whole (MR_MATCH) or not: its transaction goes
 * (its connection back to the idle pool when clean), and the pair is
 * judged once the primary ended too.
 */
static void shadow_end(struct mirror *m, enum mirror_result fate)
{
    struct worker *w = m->c.w;
    struct txn *t = m->t;

    if (m->shadow_ended)
        return;
    unbatch(m);
    m->shadow_ended = true;
    m->fate = fate;
    m->c.dead = true; /* a flush still queued for it is skipped */
    event_del(&m->timer);
    if (t) {
        m->t = NULL;
        if (fate == MR_MATCH)
            sum_end(&m->side[1], t);
        t->res->on_body = NULL;
        txn_free(t, fate == MR_MATCH && txn_upstream_reusable(t));
        w->mirrors_inflight--;
    }
    vbuf_put(&w->bufs, m->c.in);
    m->c.in = NULL;
    if (m->primary_ended)
        judge(m);
}

/* --- the shadow's client side ------------------------------------------- */

static struct mirror *mirror_of(struct txn_client *c)
{
    struct mirror *m = (struct mirror *)c;

    CHECK_OBJ(m, MIRROR_MAGIC);
    return m;
}

static void shadow_response_head(struct txn *t, bool final)
{
    struct mirror *m = mirror_of(t->s);

    t->res_head = NULL; /* nothing goes anywhere */
    if (final)
        sum_head(&m->side[1], m->cmp, t);
}

static void shadow_want_read(struct txn_client *c, bool on)
{
    (void)c;
    (void)on; /* the copy never waits: mirror_tee drops what does not fit */
}

static void shadow_resume(struct txn_client *c)
{
    struct mirror *m = mirror_of(c);

    if (m->t && m->t->res_done)
        shadow_end(m, MR_MATCH);
}

static void shadow_cut(struct txn *t)
{
    shadow_end(mirror_of(t->s), MR_ERROR);
}

static void shadow_abort(struct txn_client *c)
{
    shadow_end(mirror_of(c), MR_ERROR);
}

/* Response bytes are summarised as parsed: drop them, read on, end when whole. */
static void shadow_take_response(struct mirror *m)
{
    struct txn *t = m->t;
    struct vbuf *b = t->rin;

    if (t->phase == TXN_LOCAL) {
        /* veer answered for the backend: connect failure, reset, bad or late response. */
        shadow_end(m, t->res_status == 504 ? MR_TIMEOUT : MR_ERROR);
        return;
    }
    if (b) {
        b->start += t->res_parsed;
        t->res_parsed = 0;
        if (b->start == b->end)
            b->start = b->end = 0;
    }
    if (t->res_done) {
        /* Answered whole, but after timeout_ms (the timer runs a little longer: see below). */
        shadow_end(m, veer_now_us() - m->start_us > m->timeout_us ? MR_TIMEOUT : MR_MATCH);
        return;
    }
    if (!t->res_head_done && b && b->end > b->start) {
        /* An interim 1xx went "out": parse what waits behind it. */
        if (txn_process_response(t) == VEER_ERROR)
            return;
        if (m->t == NULL)
            return;
    }
    txn_response_resume(t);
}

/*
 * Shadow requests leave in batches: what a shadow has to write waits up
 * to MIRROR_BATCH_US, or until MIRROR_BATCH_MAX shadows wait, then the
 * worker writes every waiting shadow at once (when many are mirrored, the
 * batch fills at once and nothing waits long, nor adds to max_inflight).
 * A write to a standby that sleeps wakes it, and when the standby shares
 * the host that wakeup is paid by the writer: written one by one, 10 % of
 * requests mirrored to an otherwise idle standby cost veer 17 % more CPU
 * per request on the bench machine (the loopback send's wakeup was 40 %
 * of a whole request's CPU), 8 % in batches (bench/README.md). The primary
 * never waits for this; the shadow's latency counts from its first byte
 * written, so the wait is not compared; timeout_ms runs from the request's
 * start. A mirror with a timeout_ms under MIRROR_BATCH_MIN_TIMEOUT_US
 * writes at once. Only writes on a connection the shadow took from the
 * idle pool wait: a new connection writes when it connects (the connect
 * woke the standby anyway), and bytes left after a partial write go when
 * the connection is writable, as for any transaction.
 */
#define MIRROR_BATCH_US             5000
#define MIRROR_BATCH_MAX            16
#define MIRROR_BATCH_MIN_TIMEOUT_US (20 * MIRROR_BATCH_US)

/* Write every shadow of the batch, oldest first (in the order they began). */
static void batch_flush(struct worker *w)
{
    while (w->shadow_batch) {
        struct mirror *m = w->shadow_batch;

        w->shadow_batch = m->bnext;
        if (w->shadow_batch == NULL)
            w->shadow_batch_last = NULL;
        w->shadow_batch_n--;
        m->batched = false;
        if (m->t)
            txn_flush_upstream(m->t); /* an error ends the shadow (shadow_cut, shadow_abort) */
    }
    if (w->shadow_batch_ev)
        evtimer_del(w->shadow_batch_ev); /* written before its time: the next batch waits anew */
}

static void batch_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    batch_flush(arg);
}

static void batch_add(struct mirror *m)
{
    struct worker *w = m->c.w;
    static const struct timeval tv = {0, MIRROR_BATCH_US};

    if (m->batched)
        return;
    m->batched = true;
    m->bnext = NULL;
    if (w->shadow_batch_last)
        w->shadow_batch_last->bnext = m;
    else
        w->shadow_batch = m;
    w->shadow_batch_last = m;
    if (++w->shadow_batch_n >= MIRROR_BATCH_MAX) {
        batch_flush(w); /* full: it wakes the standby once for all of them anyway */
        return;
    }
    if (w->shadow_batch_ev == NULL)
        w->shadow_batch_ev = evtimer_new(w->base, batch_cb, w);
    if (w->shadow_batch_ev == NULL)
        batch_flush(w); /* no timer to write them later: now */
    else if (!evtimer_pending(w->shadow_batch_ev, NULL))
        evtimer_add(w->shadow_batch_ev, &tv);
}

static void shadow_flush(struct txn_client *c, unsigned what)
{
    struct mirror *m = mirror_of(c);

    if ((what & TXN_FLUSH_UPSTREAM) && m->t) {
        if (m->timeout_us >= MIRROR_BATCH_MIN_TIMEOUT_US)
            batch_add(m);
        else if (txn_flush_upstream(m->t) == VEER_ERROR || m->shadow_ended)
            return;
    }
    if ((what & TXN_FLUSH_CLIENT) && m->t)
        shadow_take_response(m);
}

static const struct txn_client_ops shadow_ops = {
    .response_head = shadow_response_head,
    .want_read = shadow_want_read,
    .resume = shadow_resume,
    .cut = shadow_cut,
    .abort = shadow_abort,
    .flush = shadow_flush,
};

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mirror *m = arg;

    (void)fd;
    (void)what;
    CHECK_OBJ(m, MIRROR_MAGIC);
    if (m->t && m->t->up)
        m->t->up->dead = true;
    shadow_end(m, MR_TIMEOUT);
}

/* --- the primary's side ------------------------------------------------- */

/* The mirror of t's request and the site it is counted in (the snapshot t was routed through). */
static const struct snap_mirror *mirror_for(const struct txn *t, struct mirror_site **site)
{
    const struct routing *r = t->s->w->routing;

    if (t->route >= 0 && (uint32_t)t->route < r->nroutes) {
        *site = r->route[t->route].msite;
        return r->route[t->route].mirror;
    }
    if ((uint32_t)t->pool < r->npools) {
        *site = r->pools[t->pool].msite;
        return r->pools[t->pool].mirror;
    }
    return NULL;
}

static bool method_listed(const struct conf_mirror *c, const char *m, size_t n)
{
    for (int i = 0; i < c->methods.n; i++)
        if (strlen(c->methods.v[i]) == n && memcmp(c->methods.v[i], m, n) == 0)
            return true;
    return false;
}

const char *mirror_sample(struct txn *t, struct http_fwd_info *fi, char *idbuf, size_t idlen)
{
    struct mirror_site *site = NULL;
    const struct snap_mirror *sm = mirror_for(t, &site);
    struct txn_log *log = txn_log(t);
    const char *head = t->s->in->data + t->s->in->start, *id, *m;
    size_t n;

    if (sm == NULL || sm->threshold == 0 || (t->req->flags & HF_UPGRADE))
        return NULL;
    m = txn_method(t, &n);
    if (!method_listed(sm->conf, m, n))
        return NULL;
    if (log) {
        id = log->request_id; /* the access log's: the one it logs, generated when absent */
        n = strlen(id);
    } else if ((id = http_find_header(t->req, head, "x-request-id", &n)) == NULL || n == 0) {
        txn_new_request_id(t, idbuf, idlen);
        /* The id that decided goes to the backend, mirrored or not: it can be traced. */
        fi->request_id = id = idbuf;
        n = strlen(idbuf);
    }
    if (veer_fnv1a(id, n) % 10000 >= sm->threshold)
        return NULL;
    if (id != idbuf)
        copy_bytes(idbuf, idlen, id, n); /* the header's value is not NUL-terminated */
    return idbuf;
}

/* Count a mirror that was never sent, once the primary's status is known. */
static void fate_at_end(struct txn *t, struct mirror_site *site, enum mirror_result r)
{
    t->msite = site;
    t->mfate = (uint8_t)(r + 1);
}

static struct lb *mirror_lb(struct worker *w, const struct snap_mirror *sm)
{
    if (w->mlbs == NULL)
        w->mlbs = veer_calloc(w->routing->nmirrors + 1, sizeof(*w->mlbs));
    if (w->mlbs[sm->id].sp == NULL)
        lb_init(&w->mlbs[sm->id], &sm->view, w->idx);
    return &w->mlbs[sm->id];
}

void mirror_begin(struct txn *t, const char *request_id)
{
    struct worker *w = t->s->w;
    struct mirror_site *site = NULL;
    const struct snap_mirror *sm = mirror_for(t, &site);
    /* The head's bytes left the buffer (start moved past them) but are still there. */
    const char *head = t->s->in->data + t->s->in->start - t->req->head_len;
    const struct conf_mirror *c;
    struct vbuf *in = t->s->in;
    struct mirror *m;
    struct txn *st;
    const char *v;
    uint32_t shift;
    int idx;
    size_t n;

    if (sm == NULL || site == NULL)
        return;
    c = sm->conf;
    if (((t->req->flags & HF_HAS_CL) && t->req->content_length > (uint64_t)c->max_body_bytes) ||
        t->req->body_seen > (uint64_t)c->max_body_bytes ||
        w->mirrors_inflight >= (unsigned)c->max_inflight) {
        fate_at_end(t, site, MR_DROPPED);
        return;
    }
    if (sm->view.n == 0 || (idx = lb_pick(mirror_lb(w, sm))) < 0) {
        fate_at_end(t, site, MR_ERROR); /* no backend of the group may take it */
        return;
    }
    m = mirror_alloc(w);
    m->c.ops = &shadow_ops;
    m->c.w = w;
    m->c.peer = t->s->peer;
    m->c.tls = t->s->tls;
    m->c.reading = true; /* never asked to read: the copy comes from the primary */
    m->site = site;
    m->max_body = (uint64_t)c->max_body_bytes;
    m->timeout_us = (uint64_t)c->timeout_ms * 1000;
    m->start_us = veer_now_us();
    m->limit = vbuf_len(t->req_head) + m->max_body + VBUF_SIZE;
    memcpy(m->cmp, sm->cmp, sizeof(m->cmp));
    copy_bytes(m->request_id, sizeof(m->request_id), request_id, strlen(request_id));
    copy_bytes(m->method, sizeof(m->method), head + t->req->method.off, t->req->method.len);
    v = http_target_path(t->req, head, &n);
    copy_bytes(m->path, sizeof(m->path), v, n);
    /* The copy: the head veer sent the primary, then the body framed so far. */
    m->c.in = vbuf_get(&w->bufs);
    if (t->req_parsed && vbuf_reserve(&w->bufs, &m->c.in, t->req_parsed, m->limit, &shift) < 0) {
        vbuf_put(&w->bufs, m->c.in);
        mirror_free(w, m);
        fate_at_end(t, site, MR_DROPPED);
        return;
    }
    vbuf_add(m->c.in, in->data + in->start, t->req_parsed);
    m->primary = t;
    t->mirror = m;
    t->msite = site;
    t->res->on_body = sum_body;
    t->res->on_body_ctx = &m->side[0];
    m->next = w->mirrors;
    if (w->mirrors)
        w->mirrors->prev = m;
    w->mirrors = m;
    w->mirrors_inflight++;

    st = txn_new(&m->c, sm->pool);
    m->t = st;
    st->req_head = txn_head_buf(w, vbuf_len(t->req_head));
    vbuf_add(st->req_head, t->req_head->data + t->req_head->start, vbuf_len(t->req_head));
    st->req_parsed = vbuf_len(m->c.in);
    st->req_done = t->req_done;
    st->res_limits = t->res_limits;
    evtimer_assign(&m->timer, w->base, timer_cb, m);
    {
        /*
         * timeout_ms and up to 1/16 more: shadows that began together (a
         * burst, or the wave that replaces shadows a black hole timed out
         * together) would otherwise end together, and their closes and the
         * connects of the next wave would stall the loop at once. A shadow
         * answered after timeout_ms is still a timeout (shadow_take_response).
         */
        uint64_t us = m->timeout_us + (veer_fnv1a((const char *)&m, sizeof(m)) ^ m->start_us) %
                                          (m->timeout_us / 16 + 1);
        struct timeval tv = {.tv_sec = (time_t)(us / 1000000),
                             .tv_usec = (suseconds_t)(us % 1000000)};

        event_add(&m->timer, &tv);
    }
    txn_start_shadow(st, sm->view.b[idx].be, sm->pool, t->req->parser.method == HTTP_HEAD, sum_body,
                     &m->side[1]);
}

void mirror_tee(struct txn *t, const char *data, size_t len)
{
    struct mirror *m = t->mirror;
    struct worker *w = t->s->w;
    uint32_t shift;

    if (m == NULL || m->shadow_ended || m->t == NULL)
        return;
    if (t->req->body_seen > m->max_body ||
        (len && vbuf_reserve(&w->bufs, &m->c.in, len, m->limit, &shift) < 0)) {
        m->dropped = true; /* over max_body_bytes: the shadow would get half a request */
        if (m->t->up)
            m->t->up->dead = true;
        shadow_end(m, MR_DROPPED);
        return;
    }
    vbuf_add(m->c.in, data, len);
    m->t->req_parsed += (uint32_t)len;
    m->t->req_done = t->req_done;
    txn_defer(&m->c, TXN_FLUSH_UPSTREAM);
}

void mirror_primary_head(struct txn *t)
{
    sum_head(&t->mirror->side[0], t->mirror->cmp, t);
}

void mirror_primary_end(struct txn *t)
{
    struct mirror *m = t->mirror;

    if (m == NULL) {
        if (t->mfate && t->msite)
            mirror_count(t->msite, t->s->w->idx, t->res_status, (enum mirror_result)(t->mfate - 1),
                         0, 0);
        return;
    }
    t->mirror = NULL;
    t->res->on_body = NULL;
    m->primary = NULL;
    m->primary_ended = true;
    m->side[0].status = t->res_status;
    if (!t->req_done || t->res_status < 100 || !t->res_done) {
        /*
         * The request was cut short (the shadow cannot have had it whole), or
         * the primary's answer was (the client left, the backend failed
         * mid-body): nothing to compare.
         */
        m->dropped = true;
        if (!m->shadow_ended) {
            if (m->t->up)
                m->t->up->dead = true;
            shadow_end(m, MR_DROPPED);
            return; /* judged there */
        }
    } else {
        sum_end(&m->side[0], t);
    }
    if (m->shadow_ended)
        judge(m);
}

void mirror_abort_all(struct worker *w)
{
    w->shadow_batch = w->shadow_batch_last = NULL; /* every mirror goes below */
    w->shadow_batch_n = 0;
    while (w->mirrors) {
        struct mirror *m = w->mirrors;

        w->mirrors = m->next;
        if (m->primary) {
            m->primary->mirror = NULL;
            m->primary->res->on_body = NULL;
        }
        if (m->t) {
            event_del(&m->timer);
            txn_free(m->t, false);
            w->mirrors_inflight--;
        }
        vbuf_put(&w->bufs, m->c.in);
        mirror_release(m);
    }
}
