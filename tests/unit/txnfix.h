/*
 * txnfix.h - a fake client side of a transaction (txn.h), shared by the
 * suites that drive transactions through their interface on a worker the
 * test thread runs (workerfix.h): check_txn, check_mirror.
 *
 * A request's bytes are framed whole as the HTTP/1 codec frames them and
 * handed to a new transaction (fake_ask); what the transaction answers is
 * taken into memory (f->out), and every call it makes of the client side
 * is counted. A complete response ends the transaction.
 */
#ifndef VEER_TXNFIX_H
#define VEER_TXNFIX_H

#include "http.h"
#include "txn.h"
#include "veer.h"
#include "workerfix.h"

#include <arpa/inet.h>
#include <check.h>
#include <string.h>

struct fake {
    struct txn_client c; /* first: the transaction's view */
    struct txn *t;       /* NULL once it ended */
    char out[4096];      /* the response bytes, as a client would receive them */
    size_t outlen;
    int status;  /* t->res_status when the response was complete */
    int answers; /* complete responses (must be 1) */
    int aborts;  /* cut or abort */
    int resumes;
};

static inline struct fake *fake_of(struct txn_client *c)
{
    return container_of(c, struct fake, c);
}

static inline void fake_end(struct fake *f, bool reusable)
{
    txn_free(f->t, reusable);
    f->t = NULL;
    vbuf_put(&fx.w->bufs, f->c.in);
    f->c.in = NULL;
}

/* The final head goes to the client unchanged but for veer's rewriting (http_build_response). */
static inline void fake_response_head(struct txn *t, bool final)
{
    const char *head = t->rin->data + t->rin->start;

    vbuf_put(&fx.w->bufs, t->res_head);
    t->res_head = NULL;
    if (!final)
        return;
    t->res_head = txn_head_buf(fx.w, http_response_bound(t->res));
    t->res_head->end = (uint32_t)http_build_response(t->res, head, false, false, t->res_head->data);
    t->res_head_sent = 0;
}

static inline void fake_want_read(struct txn_client *c, bool on)
{
    c->reading = on;
}

static inline void fake_resume(struct txn_client *c)
{
    fake_of(c)->resumes++;
}

static inline void fake_abort(struct txn_client *c)
{
    struct fake *f = fake_of(c);

    f->aborts++;
    c->dead = true;
    fake_end(f, false);
}

static inline void fake_cut(struct txn *t)
{
    fake_abort(t->s);
}

/* Take the head and the parsed response bytes; a complete response ends the transaction. */
static inline void fake_flush_client(struct fake *f)
{
    struct txn *t = f->t;
    struct vbuf *h = t->res_head, *b = t->rin;
    uint32_t hlen = h ? vbuf_len(h) - t->res_head_sent : 0;

    ck_assert_uint_lt(f->outlen + hlen + t->res_parsed, sizeof(f->out));
    if (hlen) {
        memcpy(f->out + f->outlen, h->data + h->start + t->res_head_sent, hlen);
        f->outlen += hlen;
        t->res_head_sent += hlen;
    }
    if (t->res_parsed) {
        memcpy(f->out + f->outlen, b->data + b->start, t->res_parsed);
        f->outlen += t->res_parsed;
        b->start += t->res_parsed;
        t->res_parsed = 0;
    }
    f->out[f->outlen] = '\0';
    if (b && b->start == b->end)
        b->start = b->end = 0;
    if (!t->res_done) {
        txn_response_resume(t);
        return;
    }
    f->status = t->res_status;
    f->answers++;
    fake_end(f, txn_upstream_reusable(t));
}

static inline void fake_flush(struct txn_client *c, unsigned what)
{
    struct fake *f = fake_of(c);
    struct txn *t = f->t;
    int rc = VEER_OK;

    if (t == NULL)
        return;
    if ((what & TXN_FLUSH_UPSTREAM) && t->up)
        rc = txn_flush_upstream(t);
    if (rc == VEER_OK && f->t == t && (what & TXN_FLUSH_CLIENT))
        fake_flush_client(f);
}

static const struct txn_client_ops fake_ops = {
    .response_head = fake_response_head,
    .want_read = fake_want_read,
    .resume = fake_resume,
    .cut = fake_cut,
    .abort = fake_abort,
    .flush = fake_flush,
};

/*
 * Client f sends the whole request raw[0..n) (head and body): framed as
 * the HTTP/1 codec frames it (head parsed, then the body completing the
 * request), then handed to a new transaction (txn_new, txn_head_ready) of
 * the worker's first listener's pool.
 */
static inline void fake_ask(struct fake *f, const char *raw, size_t n)
{
    struct vbuf *in;
    size_t used;
    enum http_result r;
    struct txn *t;

    memset(f, 0, sizeof(*f));
    f->c.ops = &fake_ops;
    f->c.w = fx.w;
    f->c.reading = true;
    f->c.peer.in4.sin_family = AF_INET;
    f->c.peer.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in = f->c.in = vbuf_get(&fx.w->bufs);
    vbuf_add(in, raw, n);
    t = f->t = txn_new(&f->c, fx.w->listeners[0]->pool);
    ck_assert_int_eq(t->phase, TXN_REQ_HEAD);
    r = http_parse(t->req, in->data + in->start, in->data + in->start, n, &used);
    ck_assert_int_eq(r, HTTP_HEAD_DONE);
    t->req_parsed = (uint32_t)used;
    r = http_parse(t->req, in->data + in->start, in->data + in->start + used, n - used, &used);
    ck_assert_int_eq(r, HTTP_MSG_DONE);
    t->req_parsed += (uint32_t)used;
    t->req_done = true;
    ck_assert_int_ne(txn_head_ready(t), VEER_ERROR);
}

#endif
