/*
 * txn.h - one transaction: one request and its response, from the moment
 * its head is ready to the moment its response is handed back. The
 * transaction owns everything about the exchange that does not depend on
 * how the client speaks: routing (the modules, the pool and group from the
 * snapshot), the pick, the upstream connection and its HTTP/1 framing,
 * retries, the hold queue, breaker reports, the access-log fields and the
 * metrics. It never touches the client's socket, TLS or framing.
 *
 * The client side is whatever carries the request in and the response out:
 * today session.c (one HTTP/1 connection, one transaction at a time). Each
 * transaction has one, a `struct txn_client` that the client side embeds
 * and fills; an HTTP/2 stream or a mirror's sink would be another. The two
 * talk through a narrow interface:
 *
 *   client -> txn (functions below):
 *     txn_new           a request begins
 *     txn_head_ready    its head is parsed and framed: route it
 *     txn_defer(UPSTREAM) more request bytes are framed in c->in: send them
 *     txn_flush_upstream  the send phase: write them now
 *     txn_process_response a 1xx went out: parse what waits behind it
 *     txn_local_response / txn_request_invalid  the client side answers itself
 *     txn_response_pause / txn_response_resume  the client stopped / resumed
 *                       taking response bytes (backpressure on the backend)
 *     txn_release_held  bytes kept for a retry must go (the buffer is full)
 *     txn_upstream_reusable, txn_release_upstream, txn_free  the exchange is
 *                       over (answered, or aborted)
 *
 *   txn -> client (struct txn_client_ops, one indirect call at most per
 *   event):
 *     response_head     build the client's head of a response (final or 1xx)
 *     txn_defer(CLIENT) response bytes are ready (a direct call: the send
 *                       phase's queue is shared), then, in the send phase,
 *     flush             write what was queued
 *     want_read         the request body may flow again / must stop
 *     resume            a step ended the transaction: go on with the next
 *     cut               a response cannot be completed: send what is there
 *                       and close
 *     abort             close the client side at once
 *
 * Buffers (see session.h): the request head and body are read by the
 * client side into c->in and stay there; the transaction rewrites the head
 * for the backend into t->req_head and writes body bytes out of c->in. The
 * backend's bytes go into t->rin; the client side writes t->res_head, then
 * t->res_parsed bytes of t->rin.
 *
 * Not yet codec-neutral: local answers (error pages, module answers through
 * txn_respond) are written by the transaction as HTTP/1 bytes into
 * t->res_head, and the request is parsed into t->req (struct http_msg) by
 * the client side; a second codec would translate both.
 *
 * Internal steps return VEER_OK (the transaction goes on), VEER_DONE (it
 * ended and the client side may start the next one) or VEER_ERROR (the
 * client side was closed: touch nothing).
 */
#ifndef VEER_TXN_H
#define VEER_TXN_H

#include "buf.h"
#include "conf.h"
#include "http.h"
#include "upstream.h"

#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;
struct txn;
struct backend;
struct txn_client;
struct mirror;
struct mirror_site;

#define TXN_MAGIC 0x7a4e0001u

/* A list of held transactions, oldest first (see txn.c's hold queue). */
struct txn_queue {
    struct txn *head, *tail;
    unsigned n;
};

enum txn_phase {
    TXN_REQ_HEAD = 0, /* reading the request head */
    TXN_FORWARD,      /* request head done: forwarding request and response */
    TXN_LOCAL,        /* answering locally (error, health), then done */
    TXN_TUNNEL,       /* after 101: bytes both ways */
    TXN_HELD,         /* waiting for a backend or for maintenance to end (hold queue) */
};

struct txn_log; /* module.h: the access log's record */

/* What a transaction asks of its client side. Each may free the transaction. */
struct txn_client_ops {
    /*
     * Build the client's head for the response head at t->rin->start (t->res
     * parsed it) into t->res_head, res_head_sent = 0: the final head (decide
     * t->close_client, de-chunking) or, for a 1xx, an interim head or none
     * (t->res_head NULL) when the client cannot take one.
     */
    void (*response_head)(struct txn *t, bool final);
    /* Read the request on (the backend took what was buffered) or stop reading. */
    void (*want_read)(struct txn_client *c, bool on);
    /* A step of the transaction returned VEER_DONE: run the client side on. */
    void (*resume)(struct txn_client *c);
    /* The response cannot be completed: send what it has, then close. */
    void (*cut)(struct txn *t);
    /* Close the client side now; its transaction is freed with it. */
    void (*abort)(struct txn_client *c);
    /*
     * The send phase reached c (txn_run_flushes): write what was queued,
     * `what` TXN_FLUSH_* bits (txn_flush_upstream for TXN_FLUSH_UPSTREAM).
     */
    void (*flush)(struct txn_client *c, unsigned what);
};

/*
 * The client side of a transaction, as the transaction sees it: embedded
 * (first) in what the client side is, filled by it. The transaction reads
 * these fields and changes only in->start (bytes it consumed) and the send
 * phase's queue.
 */
struct txn_client {
    const struct txn_client_ops *ops;
    struct worker *w;
    struct vbuf *in; /* request bytes: the head at in->start, then body; NULL while idle */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
    bool tls;        /* the client came over TLS */
    bool reading;    /* the client side is reading (not paused) */
    bool closing;    /* lingering after the last response: no more requests */
    bool client_eof; /* the client half-closed */
    bool dead;       /* closed: touch nothing */
    /* The send phase (txn_defer): queued on w->flush_list, with TXN_FLUSH_* to write. */
    bool flush_queued;
    uint8_t flush;
    struct txn_client *flush_next;
};

/* Directions of the send phase. */
enum { TXN_FLUSH_CLIENT = 1u << 0, TXN_FLUSH_UPSTREAM = 1u << 1 };

#define TXN_EDITS      4   /* request header edits per transaction */
#define TXN_EDIT_BYTES 192 /* for their values, each with its NUL */

struct txn {
    unsigned magic;
    struct txn *next_free;
    struct txn_client *s; /* the client side */
    enum txn_phase phase;
    struct event cwev; /* the client side's writability for this response (its to use) */

    /* request: client -> backend */
    struct http_msg *req;
    uint32_t req_parsed;   /* bytes at s->in->start parsed as this message */
    uint32_t req_sent;     /* of those, bytes already written upstream */
    struct vbuf *req_head; /* rewritten head for the backend */
    uint32_t req_head_sent;
    bool req_done;             /* whole request parsed */
    bool req_held;             /* keep sent bytes until the response starts (retry) */
    bool retried;              /* a stale pooled connection was retried */
    bool be_failed;            /* an upstream error of t->be was counted */
    bool retry_armed;          /* retry_ev is pending */
    struct txn_queue *held_on; /* the hold queue t is on, or NULL */
    struct txn *held_next, *held_prev;
    uint64_t hold_deadline_us; /* a held request gets its 503 then */
    uint8_t attempts;          /* retries on another backend so far */
    struct event retry_ev;

    /* response: backend -> client */
    struct http_msg *res;
    struct vbuf *rin;      /* bytes read from the backend */
    uint32_t res_parsed;   /* bytes at rin->start parsed and to forward */
    struct vbuf *res_head; /* head (or whole local response) for the client */
    uint32_t res_head_sent;
    bool res_started; /* a response byte arrived from the backend */
    bool res_head_done;
    bool res_done;
    bool close_client; /* close the client connection after this response */
    bool up_eof;       /* backend closed (tunnel) */
    bool up_shut;      /* tunnel: the client's half-close was passed to the backend */

    struct upstream *up;
    struct backend *be;
    int pool;                      /* the route's pool, else the listener's; -1: none */
    int lpool;                     /* the listener's pool: the fallback when no route matches */
    int route;                     /* index into the snapshot's routes; -1: none matched */
    int slot;                      /* that route's metric slot (snap_route.slot); -1: none */
    const char *route_name;        /* its name, "": none; valid in the callback that matched */
    bool budget_earned;            /* the retry budget got its share of this request */
    struct conf_retries retries;   /* the route's (or pool's), as matched */
    int hold_ms;                   /* the route's (or pool's) hold_ms, as matched */
    int response_ms;               /* the route's upstream_response_ms, or -1 */
    struct timeval tv_response;    /* response_ms as a timeval, when set */
    int res_status;                /* status sent to the client (0 until known) */
    struct http_limits limits;     /* the request's, with its pool's body limit */
    struct http_limits res_limits; /* the response's, as when the request started */
    uint32_t hdr_cap;              /* header table size this allocation has room for */
    bool from_slab;                /* a slot of the worker's txn_slab (else malloc) */
    uint64_t bytes_in, bytes_out;  /* from and to the client, this request */
    uint64_t up_start_us;          /* request first sent upstream */
    uint64_t up_end_us;            /* response complete from upstream */
    struct txn_log *log;           /* access log fields, when the log is on */
    struct mirror *mirror;         /* its shadow's pair (mirror.h), while both live */
    struct mirror_site *msite;     /* where a mirror of it is counted */
    uint8_t mfate;                 /* a mirror never sent: 1 + its enum mirror_result */
    bool shadow;                   /* it is a shadow: counted by its pair, not as a request */
    uint64_t start_us;
    uint64_t last_io_us; /* tunnel: last byte either way */

    /*
     * The modules' edits of the request head veer forwards (module.h
     * txn_set_request_header; http.h struct http_fwd_info edit): names are
     * the modules' literals, values copied into edit_buf. Last in the
     * struct: txn_new clears the struct up to edit_buf, whose bytes mean
     * nothing while nedit is 0.
     */
    struct conf_header edit[TXN_EDITS];
    uint8_t nedit;
    uint16_t edit_used; /* bytes of edit_buf taken */
    char edit_buf[TXN_EDIT_BYTES];
};

/*
 * A new transaction for client c on pool `pool` (the listener's), from the
 * worker's cache: phase TXN_REQ_HEAD, its request parser ready. The caller
 * assigns t->cwev and keeps t; txn_free gives it back.
 */
struct txn *txn_new(struct txn_client *c, int pool);

/*
 * End the transaction: count it (when something was asked), tell the
 * modules, give its upstream connection back (to the idle pool when
 * upstream_reusable), its buffers and itself to the cache. The caller
 * deletes t->cwev first and forgets t.
 */
void txn_free(struct txn *t, bool upstream_reusable);

/* A buffer from the worker's cache with room for a head of n bytes (the client side's heads too).
 */
struct vbuf *txn_head_buf(struct worker *w, size_t n);

/* Drop the worker's cached transactions (worker exit). */
/*
 * The worker's transaction memory: a cache of up to TXN_CACHE_MAX freed
 * transactions and a slab pool (slab.h) behind it. txn_cache_trim (once a
 * second, see reclaim.h) frees half of those the cache held all second unused.
 */
#define TXN_CACHE_MAX 4096
void txn_cache_init(struct worker *w);
void txn_cache_trim(struct worker *w);
void txn_cache_destroy(struct worker *w);

/*
 * The request head is parsed and what came of its body framed (t->req_done
 * when that was all): canonicalize its path in c->in (a path with no
 * canonical form is answered 400 and the client closed), earn the retry
 * budget, then route it (modules, hold, pick) and send it to a backend.
 */
int txn_head_ready(struct txn *t);

/*
 * Queue writes of c's transaction for the send phase: TXN_FLUSH_UPSTREAM
 * (request bytes framed in c->in), TXN_FLUSH_CLIENT (response bytes ready).
 * Writes run once every ready socket of the loop iteration was read, in the
 * order they were queued. Returns VEER_OK.
 */
int txn_defer(struct txn_client *c, unsigned what);

/*
 * The send phase after each loop iteration: every client with queued writes,
 * in the order they queued, gets its flush (one indirect call each). Work a
 * write unblocks may queue more; the loop runs until nothing is left.
 */
void txn_run_flushes(struct worker *w);

/* Write the rewritten head and the request bytes framed so far to the backend. */
int txn_flush_upstream(struct txn *t);

/* Parse what the backend sent and relay it (after a 1xx went out). */
int txn_process_response(struct txn *t);

/*
 * Answer the client locally with an error page; close the connection after
 * it when `close` (or when the request was not read whole). The answer goes
 * out through the send phase.
 */
int txn_local_response(struct txn *t, int status, const char *detail, bool close);

/* The request is malformed (t->req's error): answer it and close after. */
int txn_request_invalid(struct txn *t);

/*
 * Start t as a shadow (mirror.h): its head is in t->req_head, its body
 * bytes in its client's buffer (t->req_parsed of them, t->req_done when
 * whole). It goes to backend be of pool `pool` with no retry elsewhere and
 * counts nowhere; on_body(ctx, ...) is told each response body byte.
 */
int txn_start_shadow(struct txn *t, struct backend *be, int pool, bool head_request,
                     void (*on_body)(void *ctx, const char *at, size_t len), void *ctx);

/* Whether the upstream connection is clean for the next request (response written whole). */
bool txn_upstream_reusable(const struct txn *t);

/* Give the upstream connection back now (the client side closes after this response). */
void txn_release_upstream(struct txn *t, bool reusable);

/*
 * Request bytes kept for a retry are given up: the retry is no longer
 * possible, and the client buffer may take new bytes in their place.
 */
void txn_release_held(struct txn *t);

/* The client stopped taking response bytes: stop reading the backend until it does. */
static inline void txn_response_pause(struct txn *t)
{
    if (t->up)
        upstream_want_read(t->up, false);
}

/* The client took every response byte: read the backend on. */
static inline void txn_response_resume(struct txn *t)
{
    if (t->up && !t->up->connecting && !t->up_eof)
        upstream_want_read(t->up, true);
}

/* Events from the transaction's upstream connection. */
void txn_upstream_readable(struct txn *t);
void txn_upstream_writable(struct txn *t);
void txn_upstream_timeout(struct txn *t, bool connecting);

/*
 * A new snapshot: held requests try again, in order, each once. Call it from
 * the event loop, never from inside a routing decision: it routes requests,
 * and routing may switch snapshots.
 */
void txn_retry_held(struct worker *w);

/* Ask for txn_retry_held() to run from the loop, after the current callback. */
void txn_schedule_retry_held(struct worker *w);

#endif
