/*
 * session.h - one client connection speaking HTTP/1: its socket, its TLS,
 * and the HTTP/1 codec (request framing, pipelining order, keep-alive,
 * lingering close, tunnels after a 101). It runs one transaction at a time
 * (txn.h), which does everything about the exchange itself: routing,
 * picking, the backend. A session never migrates between workers.
 *
 * Data flows through two buffers, one per direction: the client's bytes in
 * c.in (request heads, bodies, pipelined requests, tunnel bytes) and
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
#include "txn.h"

#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;
struct wlistener;
struct txn;
struct ssl_st;

#define SESSION_MAGIC 0x5e55104eu

struct session {
    struct txn_client c; /* what its transaction sees of it: worker, buffer, peer, flags */
    unsigned magic;
    int fd;
    struct wlistener *l;
    struct event rev;
    struct txn *txn; /* NULL between requests */
    struct session *next, *prev;
    const struct timeval *rev_tv; /* timeout rev was armed with */
    struct ssl_st *tls;           /* TLS listener: the connection's TLS, else NULL */
    uint32_t nreq;
    bool handshaking; /* TLS handshake not finished */
    bool rev_write;   /* rev waits for writability (TLS wants to write to read) */
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

#endif
