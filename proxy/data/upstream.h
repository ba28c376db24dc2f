/*
 * upstream.h - connections from a worker to backends: non-blocking connect
 * with a timeout, and the per-worker keep-alive pool keyed by backend
 * address (entries that share an address share connections). While idle in
 * the pool a connection watches for the backend closing it; while busy it
 * belongs to exactly one transaction, which drives its events.
 */
#ifndef VEER_UPSTREAM_H
#define VEER_UPSTREAM_H

#include "buf.h"
#include "routing.h"

#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;
struct txn;
struct ssl_st;
struct iovec;

#define UPSTREAM_MAGIC 0x0bc0ffeeu

struct upstream {
    unsigned magic;
    int fd;
    struct event rev;
    struct event wev;
    struct worker *w;
    struct backend *be;      /* backend of the current (or last) request */
    struct backend *counted; /* backend whose `conns` counts this connection */
    uint32_t addr_id;
    struct txn *txn; /* owner while busy; NULL while idle or dead */
    struct upstream *next, *prev;
    bool connecting;
    bool reused; /* taken from the idle pool for the current request */
    bool idle;
    bool dead;
    bool reading;          /* rev is pending */
    int conn_err;          /* connect failed with this errno */
    struct ssl_st *tls;    /* TLS to the backend (pool `tls`), else NULL */
    bool handshaking;      /* TCP connected, TLS handshake started */
    struct warm_job *warm; /* opened ahead of traffic for this job */
    uint32_t nreq;
};

/*
 * A connection to be for txn: an idle pooled one when there is one (reused
 * = true), else a new non-blocking connect, with the TLS settings of pool
 * `pool` (an index into the worker's snapshot: the pool txn was routed
 * through). Returns NULL with errno set when the connect failed at once.
 */
struct upstream *upstream_get(struct worker *w, struct backend *be, int pool, struct txn *txn);

/* A new connection even when idle ones exist (retry of a stale one). */
struct upstream *upstream_connect(struct worker *w, struct backend *be, int pool, struct txn *txn);

/* The transaction is done with up: back to the idle pool, or closed. */
void upstream_release(struct upstream *up, bool reusable);

/* Close now; freed after the current callbacks (deferred). */
void upstream_close(struct upstream *up);

/*
 * Read response bytes into b / write request bytes, like read(2) and
 * writev(2) (-1 with errno EAGAIN when it would block), over TLS when the
 * pool asks for it.
 */
ssize_t upstream_read(struct upstream *up, struct vbuf *b);
ssize_t upstream_writev(struct upstream *up, const struct iovec *iov, int cnt);

/* Half-close towards the backend (a tunnel's client side ended). */
void upstream_shutdown_write(struct upstream *up);

/* Start/stop watching for readability (response bytes) with a timeout. */
void upstream_want_read(struct upstream *up, bool on);

/* Start/stop waiting for writability (timeout: connect or response). */
void upstream_want_write(struct upstream *up, bool on);

/*
 * Open idle connections ahead of traffic to backends of pool `pool` (an
 * index into the snapshot): up to a few per backend on this worker, minus
 * those already pooled. When every attempt has connected or failed, the
 * control thread gets REPORT_WARM_DONE with the ticket.
 */
void upstream_warm(struct worker *w, uint64_t ticket, int pool, struct backend **be, unsigned n);

/* Give up every warm-up in progress (shutdown). */
void upstream_abort_warming(struct worker *w);

/* Connections a warm-up keeps ready per backend and worker. */
#define WARM_CONNS 4

/* Free a dead connection (reaper). */
void upstream_free(struct upstream *up);

#endif
