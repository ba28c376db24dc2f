/*
 * modcheck.h - what the module suites (check_access_log, check_maintenance,
 * check_health_endpoints) share for driving a transaction by hand: taking a
 * queued answer off the worker's flush list as the send phase would, freeing
 * a transaction as txn_free would, and reading back the local answer a
 * module queued, with its framing checked.
 */
#ifndef VEER_MODCHECK_H
#define VEER_MODCHECK_H

#include "buf.h"
#include "http.h"
#include "session.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GET(path) "GET " path " HTTP/1.1\r\nHost: veer.test\r\n\r\n"

/*
 * The send phase (txn_run_flushes) takes a client with a queued answer
 * off its worker's flush list, as it writes the answer out.
 */
static inline void unqueue(struct txn_client *c)
{
    if (!c->flush_queued)
        return;
    ck_assert_ptr_eq(c->w->flush_list, c);
    c->w->flush_list = c->flush_next;
    if (c->w->flush_list == NULL)
        c->w->flush_tail = NULL;
    c->flush_queued = false;
    c->flush = 0;
}

/* Free a transaction and its session (the modules' end hook is the caller's business). */
static inline void txn_drop(struct txn *t)
{
    struct session *s = container_of(t->s, struct session, c);

    unqueue(&s->c);
    free(t->log);
    vbuf_put(&s->c.w->bufs, t->res_head);
    vbuf_put(&s->c.w->bufs, s->c.in);
    free(t);
    free(s);
}

/* What the client would receive, split up. */
struct resp {
    int status;
    char head[1024];
    char body[4096];
    size_t body_len;
};

/* The local answer queued for the client: status line, headers and body, checked for framing. */
static inline struct resp answer(const struct txn *t)
{
    struct resp r;
    const struct vbuf *b = t->res_head;
    char all[8192], *sep;
    size_t n = vbuf_len(b);
    const char *cl;

    memset(&r, 0, sizeof(r));
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_lt(n, sizeof(all));
    memcpy(all, b->data + b->start, n);
    all[n] = '\0';
    sep = strstr(all, "\r\n\r\n");
    ck_assert_ptr_nonnull(sep);
    ck_assert_uint_lt((size_t)(sep + 2 - all), sizeof(r.head));
    memcpy(r.head, all, (size_t)(sep + 2 - all));
    r.body_len = n - (size_t)(sep + 4 - all);
    memcpy(r.body, sep + 4, r.body_len);
    ck_assert_int_eq(sscanf(all, "HTTP/1.1 %d ", &r.status), 1);
    ck_assert_int_eq(r.status, t->res_status);
    ck_assert_int_eq(t->phase, TXN_LOCAL);
    /* Queued for the send phase, towards the client. */
    ck_assert(t->s->flush_queued);
    ck_assert_ptr_eq(t->s->w->flush_list, t->s);
    ck_assert_uint_ne(t->s->flush & TXN_FLUSH_CLIENT, 0);
    cl = strstr(r.head, "\r\nContent-Length: ");
    ck_assert_ptr_nonnull(cl);
    if (t->req->parser.method != HTTP_HEAD)
        ck_assert_uint_eq(strtoul(cl + 18, NULL, 10), r.body_len);
    return r;
}

#endif
