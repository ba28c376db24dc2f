/*
 * tls.c - TLS termination with OpenSSL. See tls.h.
 *
 * A TLS listener has one SSL_CTX per certificate; the first is the
 * default and the one connections start on. Its servername callback moves
 * a handshake to the context whose certificate names the requested host
 * (exact DNS name first, then a wildcard covering one leftmost label), so
 * every later callback (OCSP stapling) sees the chosen certificate. The
 * session cache lives in the default context (OpenSSL keeps a connection's
 * session context when the SNI callback switches contexts).
 *
 * Defaults follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only,
 * ECDHE/DHE with AEAD ciphers, client cipher order. Renegotiation is off,
 * so a write never needs a read.
 *
 * Session tickets are encrypted with a process-wide key ring: a current
 * key that encrypts and the previous one that still decrypts (a ticket
 * under it is renewed). The control thread rotates the ring every
 * TLS_TICKET_ROTATE_S; workers read it under a read lock during handshakes.
 */
#include "tls.h"
#include "veer.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Mozilla "intermediate" (v5.7) TLS 1.2 suites; TLS 1.3 keeps OpenSSL's three AEAD suites. */
#define INTERMEDIATE_CIPHERS                                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

#define SESSION_CACHE_SIZE 20000
/* Largest plaintext record: heads and bodies below it go out as one record. */
#define RECORD_MAX 16384

struct tls_cert {
    SSL_CTX *ctx;
    unsigned char *ocsp; /* DER response to staple, or NULL */
    long ocsp_len;
};

struct sni_name {
    char *name; /* lower case; "*.example.com" for a wildcard */
    unsigned cert;
};

/*
 * A TLS listener's contexts. Its configuration holds one reference and
 * every connection accepted on it another (ex_data of the SSL, dropped by
 * SSL_free): the servername and OCSP callbacks of a handshake still in
 * progress use it after a reload freed the configuration. OpenSSL's own
 * references keep each SSL_CTX alive as long as a connection uses it.
 */
struct tls_server {
    _Atomic unsigned refs;
    struct tls_cert *certs; /* certs[0] is the default */
    unsigned ncerts;
    struct sni_name *names;
    unsigned nnames;
};

/* --- session tickets ------------------------------------------------------------ */

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

static struct {
    pthread_rwlock_t lock;
    struct ticket_key keys[2]; /* [0] encrypts, [1] only decrypts */
    bool ready;
} ring = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static void new_key(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
        veer_panic(__FILE__, __LINE__, "RAND_bytes for a session ticket key");
}

void tls_rotate_ticket_keys(void)
{
    pthread_rwlock_wrlock(&ring.lock);
    if (ring.ready) {
        ring.keys[1] = ring.keys[0];
    } else {
        new_key(&ring.keys[1]);
        ring.ready = true;
    }
    new_key(&ring.keys[0]);
    pthread_rwlock_unlock(&ring.lock);
}

static int key_init(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                    EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[3];

    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    if (enc)
        return EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 ? 0 : -1;
    return EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 ? 0 : -1;
}

/* OpenSSL's ticket key callback: 1 = use (and for decryption: fine), 2 = renew, 0 = unknown. */
static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    int rc = 0;

    (void)ssl;
    pthread_rwlock_rdlock(&ring.lock);
    if (enc) {
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) {
            rc = -1;
        } else {
            memcpy(name, ring.keys[0].name, sizeof(ring.keys[0].name));
            rc = key_init(&ring.keys[0], iv, cctx, hctx, 1) == 0 ? 1 : -1;
        }
    } else {
        for (unsigned k = 0; k < 2; k++) {
            if (memcmp(name, ring.keys[k].name, sizeof(ring.keys[k].name)) == 0) {
                rc = key_init(&ring.keys[k], iv, cctx, hctx, 0) == 0 ? (k ? 2 : 1) : -1;
                break;
            }
        }
    }
    pthread_rwlock_unlock(&ring.lock);
    return rc;
}

/* --- contexts ------------------------------------------------------------------- */

static void ssl_reason(char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        snprintf(out, len, "unknown error");
    else
        ERR_error_string_n(e, out, len);
    ERR_clear_error();
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* nothing in common: speak HTTP/1.1 without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int ocsp_cb(SSL *ssl, void *arg)
{
    const struct tls_cert *c = arg;
    unsigned char *copy;

    if (c == NULL || c->ocsp == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    copy = OPENSSL_memdup(c->ocsp, (size_t)c->ocsp_len);
    if (copy == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, c->ocsp_len) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

static bool name_matches(const char *pattern, const char *host)
{
    const char *dot;

    if (strcasecmp(pattern, host) == 0)
        return true;
    if (strncmp(pattern, "*.", 2) != 0 || (dot = strchr(host, '.')) == NULL || dot == host)
        return false;
    return strcasecmp(pattern + 1, dot) == 0;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_server *srv = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    unsigned pick = 0;

    (void)alert;
    if (host == NULL || srv->ncerts < 2)
        return SSL_TLSEXT_ERR_OK;
    /* Exact names first, then wildcards. */
    for (int pass = 0; pass < 2 && pick == 0; pass++) {
        for (unsigned i = 0; i < srv->nnames; i++) {
            bool wild = srv->names[i].name[0] == '*';

            if (wild == (pass == 1) && name_matches(srv->names[i].name, host)) {
                pick = srv->names[i].cert;
                break;
            }
        }
    }
    if (pick)
        SSL_set_SSL_CTX(ssl, srv->certs[pick].ctx);
    return SSL_TLSEXT_ERR_OK;
}

static void add_name(struct tls_server *srv, const char *name, size_t len, unsigned cert)
{
    char *n = veer_malloc(len + 1);

    for (size_t i = 0; i < len; i++)
        n[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    n[len] = '\0';
    srv->names = veer_realloc(srv->names, (srv->nnames + 1) * sizeof(*srv->names));
    srv->names[srv->nnames].name = n;
    srv->names[srv->nnames++].cert = cert;
}

/* The DNS names of a certificate: its subjectAltName entries, or its CN without any. */
static void collect_names(struct tls_server *srv, SSL_CTX *ctx, unsigned cert)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    GENERAL_NAMES *sans;
    int before = (int)srv->nnames;
    char cn[256];

    if (x == NULL)
        return;
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

        if (g->type == GEN_DNS)
            add_name(srv, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                     (size_t)ASN1_STRING_length(g->d.dNSName), cert);
    }
    GENERAL_NAMES_free(sans);
    if ((int)srv->nnames == before &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0)
        add_name(srv, cn, strlen(cn), cert);
}

static unsigned char *read_file(const char *path, long *len, char *why, size_t wlen)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;

    if (f == NULL) {
        snprintf(why, wlen, "%s", strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || n > (1 << 20) ||
        fseek(f, 0, SEEK_SET) != 0) {
        snprintf(why, wlen, "empty, unreadable or over 1 MiB");
        fclose(f);
        return NULL;
    }
    buf = veer_malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        snprintf(why, wlen, "short read");
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* A file OpenSSL could only report as "system lib": say why in words. */
static bool unreadable(const char *path, const char *what, char *why, size_t len)
{
    if (access(path, R_OK) == 0)
        return false;
    snprintf(why, len, "cannot read %s %s: %s", what, path, strerror(errno));
    return true;
}

static int set_protocols(SSL_CTX *ctx, const char *p)
{
    int min = TLS1_2_VERSION, max = 0;

    if (strncmp(p, "TLSv1.3", 7) == 0)
        min = TLS1_3_VERSION;
    else if (strcmp(p, "TLSv1.2") == 0)
        max = TLS1_2_VERSION;
    return SSL_CTX_set_min_proto_version(ctx, min) == 1 &&
                   SSL_CTX_set_max_proto_version(ctx, max) == 1
               ? 0
               : -1;
}

/*
 * How both sides move bytes: partial writes from a buffer that may move
 * between retries (tls_writev), buffers released while a connection is idle.
 */
static void set_io_modes(SSL_CTX *ctx)
{
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
}

static SSL_CTX *new_ctx(const struct conf_tls *t, const struct conf_tls_cert *c, char *why,
                        size_t len)
{
    static const unsigned char sid[] = "veer";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL) {
        ssl_reason(why, len);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 |
                                 SSL_OP_NO_TLSv1_1);
    set_io_modes(ctx);
    if (set_protocols(ctx, t->protocols) < 0) {
        ssl_reason(why, len);
        goto fail;
    }
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers ? t->ciphers : INTERMEDIATE_CIPHERS) != 1) {
        snprintf(why, len, "ciphers: no usable cipher in \"%s\"",
                 t->ciphers ? t->ciphers : INTERMEDIATE_CIPHERS);
        ERR_clear_error();
        goto fail;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    if (unreadable(c->cert, "certificate", why, len) || unreadable(c->key, "key", why, len))
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
        char r[200];

        ssl_reason(r, sizeof(r));
        snprintf(why, len, "cannot load certificate %s: %s", c->cert, r);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
        char r[200];

        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            snprintf(why, len, "key %s does not match certificate %s", c->key, c->cert);
            ERR_clear_error();
            goto fail;
        }
        ssl_reason(r, sizeof(r));
        snprintf(why, len, "cannot load key %s: %s", c->key, r);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(why, len, "key %s does not match certificate %s", c->key, c->cert);
        ERR_clear_error();
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_SIZE);
    SSL_CTX_set_timeout(ctx, TLS_TICKET_ROTATE_S);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void server_free(void *p)
{
    struct tls_server *srv = p;

    if (srv == NULL || atomic_fetch_sub_explicit(&srv->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < srv->ncerts; i++) {
        SSL_CTX_free(srv->certs[i].ctx);
        free(srv->certs[i].ocsp);
    }
    for (unsigned i = 0; i < srv->nnames; i++)
        free(srv->names[i].name);
    free(srv->names);
    free(srv->certs);
    free(srv);
}

static struct tls_server *server_new(const struct conf_tls *t, int *line, char *why, size_t len)
{
    struct tls_server *srv = veer_calloc(1, sizeof(*srv));

    atomic_init(&srv->refs, 1);
    srv->certs = veer_calloc((size_t)t->ncerts, sizeof(*srv->certs));
    for (int i = 0; i < t->ncerts; i++) {
        const struct conf_tls_cert *c = &t->certs[i];
        struct tls_cert *tc = &srv->certs[srv->ncerts];

        *line = c->line;
        tc->ctx = new_ctx(t, c, why, len);
        if (tc->ctx == NULL)
            goto fail;
        srv->ncerts++;
        if (c->ocsp) {
            char r[160];

            tc->ocsp = read_file(c->ocsp, &tc->ocsp_len, r, sizeof(r));
            if (tc->ocsp == NULL) {
                snprintf(why, len, "cannot read OCSP response %s: %s", c->ocsp, r);
                goto fail;
            }
            SSL_CTX_set_tlsext_status_cb(tc->ctx, ocsp_cb);
            SSL_CTX_set_tlsext_status_arg(tc->ctx, tc);
        }
        collect_names(srv, tc->ctx, (unsigned)i);
    }
    SSL_CTX_set_tlsext_servername_callback(srv->certs[0].ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(srv->certs[0].ctx, srv);
    return srv;
fail:
    server_free(srv);
    return NULL;
}

/* --- upstream (client side) contexts ----------------------------------------------- */

static void client_free(void *p)
{
    SSL_CTX_free(p);
}

static SSL_CTX *client_new(const struct conf_upstream_tls *t, char *why, size_t len)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL) {
        ssl_reason(why, len);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    set_io_modes(ctx);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    if (t->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (t->ca) {
            if (unreadable(t->ca, "CA file", why, len))
                goto fail;
            if (SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) {
                char r[200];

                ssl_reason(r, sizeof(r));
                snprintf(why, len, "cannot load CA file %s: %s", t->ca, r);
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            ssl_reason(why, len);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct ssl_st *tls_connect(const struct conf_pool *cp, int fd, const char *host)
{
    SSL *ssl;

    if (cp == NULL || !cp->has_tls || cp->tls.client == NULL ||
        (ssl = SSL_new(cp->tls.client)) == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1)
        goto fail;
    SSL_set_connect_state(ssl);
    if (cp->tls.sni && SSL_set_tlsext_host_name(ssl, cp->tls.sni) != 1)
        goto fail;
    if (cp->tls.verify) {
        /* The name to check: the configured SNI, else the backend's address. */
        if (cp->tls.sni ? SSL_set1_host(ssl, cp->tls.sni) != 1
                        : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
            goto fail;
    }
    return ssl;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* --- the admin HTTP address ----------------------------------------------------------- */

static int admin_prepare(struct veer_conf *c, char *why, size_t len)
{
    struct conf_admin_tls *a = c->admin.http_tls;
    struct conf_tls t = {.protocols = (char *)"TLSv1.2+"};
    struct conf_tls_cert cert = {.cert = a->cert, .key = a->key, .line = a->line};
    SSL_CTX *ctx;

    if (!c->admin.has_http) {
        snprintf(why, len, "admin.http_tls needs admin.http");
        return VEER_ERROR;
    }
    if ((ctx = new_ctx(&t, &cert, why, len)) == NULL)
        return VEER_ERROR;
    if (a->client_ca) {
        STACK_OF(X509_NAME) *names = NULL;
        char r[200];

        if (unreadable(a->client_ca, "client CA file", why, len))
            goto fail;
        if (SSL_CTX_load_verify_locations(ctx, a->client_ca, NULL) != 1 ||
            (names = SSL_load_client_CA_file(a->client_ca)) == NULL) {
            ssl_reason(r, sizeof(r));
            snprintf(why, len, "cannot load client CA file %s: %s", a->client_ca, r);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    a->ctx = ctx;
    a->ctx_free = client_free;
    return VEER_OK;
fail:
    SSL_CTX_free(ctx);
    return VEER_ERROR;
}

struct ssl_st *tls_admin_new(const struct veer_conf *c)
{
    const struct conf_admin_tls *a = c->admin.http_tls;

    return a && a->ctx ? SSL_new(a->ctx) : NULL;
}

int tls_conf_prepare(struct veer_conf *c, char *err, size_t len)
{
    char why[512];

    if (c->admin.http_tls && c->admin.http_tls->ctx == NULL) {
        if (admin_prepare(c, why, sizeof(why)) != VEER_OK) {
            snprintf(err, len, "%s:%d: %s", c->path, c->admin.http_tls->line, why);
            return VEER_ERROR;
        }
    }

    for (int i = 0; i < c->npools; i++) {
        struct conf_pool *p = &c->pools[i];

        if (!p->has_tls || p->tls.client)
            continue;
        p->tls.client = client_new(&p->tls, why, sizeof(why));
        if (p->tls.client == NULL) {
            snprintf(err, len, "%s:%d: pool %s tls: %s", c->path, p->line, p->name, why);
            return VEER_ERROR;
        }
        p->tls.client_free = client_free;
    }

    for (int i = 0; i < c->nlistens; i++) {
        struct conf_tls *t = c->listens[i].tls;
        int line = 0;

        if (t == NULL || t->server)
            continue;
        if (!ring.ready)
            tls_rotate_ticket_keys();
        line = t->line;
        t->server = server_new(t, &line, why, sizeof(why));
        if (t->server == NULL) {
            snprintf(err, len, "%s:%d: %s", c->path, line, why);
            return VEER_ERROR;
        }
        t->server_free = server_free;
    }
    return VEER_OK;
}

/* --- connections ---------------------------------------------------------------- */

/* Index of a connection's reference on its tls_server; SSL_free drops it. */
static int server_ref_index = -1;
static pthread_once_t server_ref_once = PTHREAD_ONCE_INIT;

static void server_ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                            void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    server_free(ptr);
}

static void server_ref_init(void)
{
    server_ref_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, server_ref_free);
}

struct ssl_st *tls_accept(const struct conf_listen *lc, int fd)
{
    struct tls_server *srv = lc->tls ? lc->tls->server : NULL;
    SSL *ssl;

    pthread_once(&server_ref_once, server_ref_init);
    if (srv == NULL || server_ref_index < 0 || (ssl = SSL_new(srv->certs[0].ctx)) == NULL)
        return NULL;
    atomic_fetch_add_explicit(&srv->refs, 1, memory_order_relaxed);
    if (SSL_set_ex_data(ssl, server_ref_index, srv) != 1) {
        server_free(srv);
        SSL_free(ssl);
        return NULL;
    }
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

/* Map an SSL_ERROR to errno / want; returns -1. */
static ssize_t io_error(SSL *ssl, int ret, enum tls_want *want)
{
    int e = SSL_get_error(ssl, ret);

    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = TLS_WANT_READ;
        errno = EAGAIN;
        break;
    case SSL_ERROR_WANT_WRITE:
        *want = TLS_WANT_WRITE;
        errno = EAGAIN;
        break;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EAGAIN)
            errno = ECONNRESET;
        break;
    default:
        errno = EPROTO;
        break;
    }
    ERR_clear_error();
    return -1;
}

int tls_handshake(struct ssl_st *ssl, enum tls_want *want, char *why, size_t len)
{
    int ret;

    ERR_clear_error();
    errno = 0;
    ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return VEER_OK;
    *want = TLS_WANT_NOTHING;
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        *want = TLS_WANT_READ;
        return VEER_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = TLS_WANT_WRITE;
        return VEER_AGAIN;
    case SSL_ERROR_SYSCALL:
        snprintf(why, len, "%s", errno ? strerror(errno) : "connection closed");
        break;
    default:
        ssl_reason(why, len);
        break;
    }
    ERR_clear_error();
    return VEER_ERROR;
}

ssize_t tls_read(struct ssl_st *ssl, char *buf, size_t len, enum tls_want *want)
{
    size_t got = 0;
    int n;

    *want = TLS_WANT_NOTHING;
    while (got < len) {
        size_t want_n = len - got;

        ERR_clear_error();
        errno = 0;
        n = SSL_read(ssl, buf + got, want_n > INT32_MAX ? INT32_MAX : (int)want_n);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            return (ssize_t)got; /* close_notify: 0 when nothing came before it */
        }
        if (got)
            break; /* report what we have; the error comes back on the next call */
        return io_error(ssl, n, want);
    }
    return (ssize_t)got;
}

/*
 * Each SSL_write takes min(RECORD_MAX, bytes left) bytes, gathered from the
 * pieces when the first one is shorter. The bytes left only grow between
 * calls, so a retry after EAGAIN always offers at least the record OpenSSL
 * already built and holds (it refuses a shorter retry).
 */
ssize_t tls_writev(struct ssl_st *ssl, const struct iovec *iov, int cnt)
{
    char rec[RECORD_MAX];
    size_t left = 0, done = 0, off = 0;
    enum tls_want want;
    int i = 0, n;

    for (int k = 0; k < cnt; k++)
        left += iov[k].iov_len;
    while (left) {
        size_t chunk = left < sizeof(rec) ? left : sizeof(rec);
        const char *p;

        while (iov[i].iov_len == off) {
            i++;
            off = 0;
        }
        if (iov[i].iov_len - off >= chunk) {
            p = (const char *)iov[i].iov_base + off;
        } else {
            size_t got = 0;

            for (int k = i, o = (int)off; got < chunk; k++, o = 0) {
                size_t take = iov[k].iov_len - (size_t)o;

                if (take > chunk - got)
                    take = chunk - got;
                memcpy(rec + got, (const char *)iov[k].iov_base + o, take);
                got += take;
            }
            p = rec;
        }
        ERR_clear_error();
        errno = 0;
        n = SSL_write(ssl, p, (int)chunk);
        if (n <= 0)
            return done ? (ssize_t)done : io_error(ssl, n, &want);
        done += (size_t)n;
        left -= (size_t)n;
        /* advance (i, off) by n */
        for (size_t adv = (size_t)n; adv;) {
            size_t here = iov[i].iov_len - off;

            if (adv < here) {
                off += adv;
                adv = 0;
            } else {
                adv -= here;
                i++;
                off = 0;
            }
        }
        if ((size_t)n < chunk)
            break;
    }
    return (ssize_t)done;
}

bool tls_pending(const struct ssl_st *ssl)
{
    return SSL_has_pending(ssl) == 1;
}

void tls_close_notify(struct ssl_st *ssl)
{
    ERR_clear_error();
    /* Once ours is out, SSL_shutdown would only wait (read) for the peer's. */
    if (SSL_is_init_finished(ssl) && !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(ssl);
    ERR_clear_error();
}

/*
 * Free a connection's TLS. A connection that ends without a fatal TLS error
 * (OpenSSL drops those sessions itself) keeps its session resumable:
 * OpenSSL would otherwise evict it from the cache, since we do not wait
 * for the client's close_notify.
 */
void tls_free(struct ssl_st *ssl)
{
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
}
