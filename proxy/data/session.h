/*
 * session.h - one client connection and the transaction (one request and
 * its response) it is running. A session never migrates between workers.
 *
 * Data flows through two buffers, one per direction: the client's bytes in
 * session.in (request heads, bodies, pipelined requests, tunnel bytes) and
 * the backend's bytes in txn.rin. Heads are rewritten into small separate
 * buffers and written with writev ahead of the body bytes, which go out of
 * the buffer they were read into. A side whose peer cannot take more stops
 * reading (backpressure), so memory per transaction is bounded by two
 * buffers whatever the body size.
 */
#ifndef VEER_SESSION_H
#define VEER_SESSION_H

#include "buf.h"
#include "http.h"

#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;
struct wlistener;
struct txn;
struct upstream;
struct backend;
struct ssl_st;
struct txn_log; /* module.h: the access log's record */

#define SESSION_MAGIC 0x5e55104eu
#define TXN_MAGIC     0x7a4e0001u

/* A list of held transactions, oldest first (see session.c's hold queue). */
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

struct txn {
    unsigned magic;
    struct txn *next_free;
    struct session *s;
    enum txn_phase phase;
    struct event cwev; /* client writability */

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
    int pool;
    int res_status;                /* status sent to the client (0 until known) */
    struct http_limits limits;     /* the request's, with its pool's body limit */
    struct http_limits res_limits; /* the response's, as when the request started */
    uint32_t hdr_cap;              /* header table size this allocation has room for */
    uint64_t bytes_in, bytes_out;  /* from and to the client, this request */
    uint64_t up_start_us;          /* request first sent upstream */
    uint64_t up_end_us;            /* response complete from upstream */
    struct txn_log *log;           /* access log fields, when the log is on */
    uint64_t start_us;
    uint64_t last_io_us; /* tunnel: last byte either way */
};

struct session {
    unsigned magic;
    struct worker *w;
    struct wlistener *l;
    int fd;
    struct event rev;
    struct vbuf *in; /* client bytes; NULL while idle and empty */
    struct txn *txn; /* NULL between requests */
    struct session *next, *prev;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
    uint32_t nreq;
    bool reading;                 /* rev is pending */
    const struct timeval *rev_tv; /* timeout rev was armed with */
    bool client_eof;              /* client half-closed */
    struct ssl_st *tls;           /* TLS listener: the connection's TLS, else NULL */
    bool handshaking;             /* TLS handshake not finished */
    bool rev_write;               /* rev waits for writability (TLS wants to write to read) */
    bool closing;
    bool dead;
    bool flush_queued; /* on the worker's flush list */
    uint8_t flush;     /* FLUSH_* directions to write */
    struct session *flush_next;
};

/* A new client connection accepted on l. Takes ownership of fd. */
void session_accept(struct wlistener *l, int fd, const struct sockaddr *peer, socklen_t plen);

/* Close at once (shutdown deadline, abort): deferred free. */
void session_close(struct session *s);

/* Free a dead session (reaper). */
void session_free(struct session *s);

/* Upgrade: hand an idle session to the new process; true when it left. */
bool session_try_handover(struct session *s);

/* Shutdown started: close idle sessions after the quiet period. */
void session_shutdown_notice(struct session *s);

/* Events from the transaction's upstream connection. */
void txn_upstream_readable(struct txn *t);
void txn_upstream_writable(struct txn *t);
void txn_upstream_timeout(struct txn *t, bool connecting);

/* The send phase after each loop iteration: write what sessions queued. */
void session_run_flushes(struct worker *w);

/*
 * A new snapshot: held requests try again, in order, each once. Call it from
 * the event loop, never from inside a routing decision: it routes requests,
 * and routing may switch snapshots.
 */
void session_retry_held(struct worker *w);

/* Ask for session_retry_held() to run from the loop, after the current callback. */
void session_schedule_retry_held(struct worker *w);

/* Per-worker transaction cache. */
void txn_cache_destroy(struct worker *w);

#endif
