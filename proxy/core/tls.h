/*
 * tls.h - TLS termination with OpenSSL: listener contexts (certificates,
 * SNI, ALPN, resumption, OCSP stapling) and non-blocking I/O on a client
 * connection for session.c, which stays free of OpenSSL types.
 */
#ifndef VEER_TLS_H
#define VEER_TLS_H

#include "conf.h"

#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

struct ssl_st;

enum tls_want {
    TLS_WANT_NOTHING = 0,
    TLS_WANT_READ,
    TLS_WANT_WRITE,
};

/*
 * Build the contexts of every TLS listener of c, reading the certificate,
 * key and OCSP files. On error returns VEER_ERROR with "FILE:LINE: what is
 * wrong" in err and c unchanged in meaning (free it as usual). The contexts
 * are freed with the configuration.
 */
int tls_conf_prepare(struct veer_conf *c, char *err, size_t len);

/* A server-side TLS object for a connection accepted on lc (NULL on failure). */
struct ssl_st *tls_accept(const struct conf_listen *lc, int fd);

/*
 * A client-side TLS object towards a backend of pool cp (connected on fd,
 * numeric address host): SNI and the name verified are the pool's `sni`,
 * else the certificate must name the address. NULL on failure.
 */
struct ssl_st *tls_connect(const struct conf_pool *cp, int fd, const char *host);

/*
 * Drive the handshake: VEER_OK when done, VEER_AGAIN with *want set, or
 * VEER_ERROR (reason in why).
 */
int tls_handshake(struct ssl_st *ssl, enum tls_want *want, char *why, size_t len);

/*
 * Read decrypted bytes into buf until it is full or the socket is empty:
 * like read(2): n > 0, 0 at the peer's close, -1 with errno EAGAIN (and
 * *want saying which readiness to wait for) or another errno on error.
 */
ssize_t tls_read(struct ssl_st *ssl, char *buf, size_t len, enum tls_want *want);

/*
 * Write iov like writev(2), encrypting; -1 with errno EAGAIN when nothing
 * could be written. A partial write must be retried starting with the
 * bytes that were not written (the buffer may have moved).
 */
ssize_t tls_writev(struct ssl_st *ssl, const struct iovec *iov, int cnt);

/* Decrypted bytes (or a record) wait inside the TLS object, not in the socket. */
bool tls_pending(const struct ssl_st *ssl);

/* Send close_notify, once, without waiting for the peer's. */
void tls_close_notify(struct ssl_st *ssl);

void tls_free(struct ssl_st *ssl);

/* A TLS object for a connection to the admin HTTP address (NULL without admin.http_tls). */
struct ssl_st *tls_admin_new(const struct veer_conf *c);

/* Start a new session-ticket key; the previous one still decrypts (control thread). */
void tls_rotate_ticket_keys(void);

/* Seconds between two rotations: tickets live at most two periods. */
#define TLS_TICKET_ROTATE_S 3600

#endif
