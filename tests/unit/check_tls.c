/*
 * check_tls.c - TLS termination: certificates and their errors, SNI choice
 * (exact, one-label wildcards, CN fallback, default), ALPN, the protocol
 * floor, session resumption through the rotating ticket keys and the
 * session cache, and non-blocking reads and writes with retries.
 *
 * Certificates are made here with OpenSSL's API; handshakes run over a
 * non-blocking socketpair between a plain OpenSSL client and veer's side.
 */
#include "conf.h"
#include "tls.h"
#include "veer.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char dir[] = "/tmp/veer-check-tls-XXXXXX";

/* Write NAME.pem / NAME.key: a self-signed P-256 certificate with CN name and optional SANs. */
static void make_cert(const char *name, const char *san)
{
    static long serial = 1;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *n;
    char path[256];
    FILE *f;

    ck_assert_ptr_nonnull(k);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    if (san) {
        X509V3_CTX ctx;
        X509_EXTENSION *e;

        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        ck_assert_ptr_nonnull(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
    snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
    f = fopen(path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    f = fopen(path, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    make_cert("a", "DNS:a.test");
    make_cert("b", "DNS:b.test,DNS:*.wild.test");
    make_cert("c", NULL); /* CN only */
    make_cert("other", "DNS:other.test");
}

static void teardown(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    strcpy(dir, "/tmp/veer-check-tls-XXXXXX");
}

/* Load a config whose listener has tls = { certificates = ( CERTS ); EXTRA } and prepare it. */
static struct veer_conf *load(const char *certs, const char *extra, char *err, size_t len)
{
    char path[300], text[2048];
    struct veer_conf *c;
    FILE *f;

    snprintf(text, sizeof(text),
             "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\";\n"
             "  tls = { certificates = ( %s ); %s }; } );\n"
             "pools = ( { name = \"api\"; backends = ( ); } );\n",
             certs, extra ? extra : "");
    snprintf(path, sizeof(path), "%s/veer.conf", dir);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    c = conf_load(path, err, len);
    ck_assert_msg(c != NULL, "config refused: %s", err);
    if (tls_conf_prepare(c, err, len) != VEER_OK) {
        conf_free(c);
        return NULL;
    }
    return c;
}

static char certs_abc[600];

static struct veer_conf *load_abc(const char *extra)
{
    char err[512];
    struct veer_conf *c;

    snprintf(certs_abc, sizeof(certs_abc),
             "{ cert = \"%1$s/a.pem\"; key = \"%1$s/a.key\"; },"
             "{ cert = \"%1$s/b.pem\"; key = \"%1$s/b.key\"; },"
             "{ cert = \"%1$s/c.pem\"; key = \"%1$s/c.key\"; }",
             dir);
    c = load(certs_abc, extra, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

struct pair {
    int fds[2];
    SSL_CTX *cctx;
    SSL *client;
    struct ssl_st *server;
};

static void pair_open(struct pair *p, const struct veer_conf *c, int max_version)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fds), 0);
    fcntl(p->fds[0], F_SETFL, O_NONBLOCK);
    fcntl(p->fds[1], F_SETFL, O_NONBLOCK);
    p->cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(p->cctx, TLS1_VERSION);
    SSL_CTX_set_security_level(p->cctx, 0);
    SSL_CTX_set_max_proto_version(p->cctx, max_version);
    p->client = SSL_new(p->cctx);
    SSL_set_fd(p->client, p->fds[0]);
    SSL_set_connect_state(p->client);
    p->server = tls_accept(&c->listens[0], p->fds[1]);
    ck_assert_ptr_nonnull(p->server);
}

static void pair_close(struct pair *p)
{
    /* A clean end: OpenSSL would otherwise mark the client's session unusable. */
    SSL_set_shutdown(p->client, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(p->client);
    SSL_CTX_free(p->cctx);
    tls_free(p->server);
    close(p->fds[0]);
    close(p->fds[1]);
}

/* Run both sides of the handshake: VEER_OK, or VEER_ERROR when either side failed. */
static int pair_handshake(struct pair *p)
{
    bool cdone = false, sdone = false;

    for (int i = 0; i < 200 && !(cdone && sdone); i++) {
        enum tls_want want;
        char why[200];
        int rc;

        if (!cdone) {
            rc = SSL_do_handshake(p->client);
            if (rc == 1)
                cdone = true;
            else if (SSL_get_error(p->client, rc) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(p->client, rc) != SSL_ERROR_WANT_WRITE)
                return VEER_ERROR;
        }
        if (!sdone) {
            rc = tls_handshake(p->server, &want, why, sizeof(why));
            if (rc == VEER_OK)
                sdone = true;
            else if (rc == VEER_ERROR)
                return VEER_ERROR;
        }
    }
    return cdone && sdone ? VEER_OK : VEER_ERROR;
}

/* The CN of the certificate the server presented to the client after a handshake with sni. */
static const char *presented(const struct veer_conf *c, const char *sni)
{
    static char cn[64];
    struct pair p;
    X509 *x;

    pair_open(&p, c, 0);
    if (sni)
        SSL_set_tlsext_host_name(p.client, sni);
    ck_assert_int_eq(pair_handshake(&p), VEER_OK);
    x = SSL_get0_peer_certificate(p.client);
    ck_assert_ptr_nonnull(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    pair_close(&p);
    return cn;
}

START_TEST(test_sni_picks_exact_then_wildcard_then_default)
{
    struct veer_conf *c = load_abc(NULL);

    ck_assert_str_eq(presented(c, NULL), "a");
    ck_assert_str_eq(presented(c, "a.test"), "a");
    ck_assert_str_eq(presented(c, "b.test"), "b");
    ck_assert_str_eq(presented(c, "B.Test"), "b");
    ck_assert_str_eq(presented(c, "x.wild.test"), "b");
    ck_assert_str_eq(presented(c, "x.y.wild.test"), "a"); /* one label only */
    ck_assert_str_eq(presented(c, "wild.test"), "a");
    ck_assert_str_eq(presented(c, "c"), "c"); /* no SAN: the CN names it */
    ck_assert_str_eq(presented(c, "unknown.test"), "a");
    conf_free(c);
}
END_TEST

static const char *alpn_of(const struct veer_conf *c, const unsigned char *offer, unsigned len)
{
    static char got[32];
    const unsigned char *sel;
    unsigned sl = 0;
    struct pair p;

    pair_open(&p, c, 0);
    SSL_set_alpn_protos(p.client, offer, len);
    ck_assert_int_eq(pair_handshake(&p), VEER_OK);
    SSL_get0_alpn_selected(p.client, &sel, &sl);
    snprintf(got, sizeof(got), "%.*s", (int)sl, sl ? (const char *)sel : "");
    pair_close(&p);
    return got;
}

START_TEST(test_alpn_http11_or_nothing)
{
    struct veer_conf *c = load_abc(NULL);

    ck_assert_str_eq(alpn_of(c, (const unsigned char *)"\x02h2\x08http/1.1", 12), "http/1.1");
    ck_assert_str_eq(alpn_of(c, (const unsigned char *)"\x02h2", 3), "");
    conf_free(c);
}
END_TEST

static int handshake_with_max(const struct veer_conf *c, int max_version, int *version)
{
    struct pair p;
    int rc;

    pair_open(&p, c, max_version);
    rc = pair_handshake(&p);
    *version = SSL_version(p.client);
    pair_close(&p);
    return rc;
}

START_TEST(test_protocol_floor_and_ceiling)
{
    struct veer_conf *c = load_abc(NULL);
    int v;

    ck_assert_int_eq(handshake_with_max(c, TLS1_1_VERSION, &v), VEER_ERROR);
    ck_assert_int_eq(handshake_with_max(c, TLS1_VERSION, &v), VEER_ERROR);
    ck_assert_int_eq(handshake_with_max(c, TLS1_2_VERSION, &v), VEER_OK);
    ck_assert_int_eq(v, TLS1_2_VERSION);
    ck_assert_int_eq(handshake_with_max(c, 0, &v), VEER_OK);
    ck_assert_int_eq(v, TLS1_3_VERSION);
    conf_free(c);
    c = load_abc("protocols = \"TLSv1.3\";");
    ck_assert_int_eq(handshake_with_max(c, TLS1_2_VERSION, &v), VEER_ERROR);
    conf_free(c);
    c = load_abc("protocols = \"TLSv1.2\";");
    ck_assert_int_eq(handshake_with_max(c, 0, &v), VEER_OK);
    ck_assert_int_eq(v, TLS1_2_VERSION);
    conf_free(c);
}
END_TEST

/* A TLS 1.2 handshake offering session s (may be NULL); whether it resumed; *out gets the new one.
 */
static bool resumed(const struct veer_conf *c, SSL_SESSION *s, bool tickets, SSL_SESSION **out)
{
    struct pair p;
    bool r;

    pair_open(&p, c, TLS1_2_VERSION);
    if (!tickets)
        SSL_set_options(p.client, SSL_OP_NO_TICKET);
    if (s)
        SSL_set_session(p.client, s);
    ck_assert_int_eq(pair_handshake(&p), VEER_OK);
    r = SSL_session_reused(p.client) == 1;
    if (out)
        *out = SSL_get1_session(p.client);
    pair_close(&p);
    return r;
}

START_TEST(test_tickets_survive_one_rotation_not_two)
{
    struct veer_conf *c = load_abc(NULL);
    SSL_SESSION *s = NULL, *s2 = NULL;

    ck_assert(!resumed(c, NULL, true, &s));
    ck_assert(resumed(c, s, true, NULL));
    tls_rotate_ticket_keys(); /* the ticket's key is now the previous one: still accepted */
    ck_assert(resumed(c, s, true, &s2));
    tls_rotate_ticket_keys();
    tls_rotate_ticket_keys(); /* gone from the ring */
    ck_assert(!resumed(c, s, true, NULL));
    SSL_SESSION_free(s);
    SSL_SESSION_free(s2);
    conf_free(c);
}
END_TEST

START_TEST(test_session_cache_without_tickets)
{
    struct veer_conf *c = load_abc(NULL);
    SSL_SESSION *s = NULL;

    ck_assert(!resumed(c, NULL, false, &s));
    ck_assert(resumed(c, s, false, NULL));
    ck_assert(resumed(c, s, false, NULL));
    SSL_SESSION_free(s);
    conf_free(c);
}
END_TEST

/*
 * 1 MiB written with tls_writev in two uneven pieces over a socketpair too
 * small to take it at once: every EAGAIN is retried from the first byte not
 * written (the bytes left only grow), and the reader gets them in order.
 */
START_TEST(test_large_writes_and_reads_with_retries)
{
    struct veer_conf *c = load_abc(NULL);
    size_t total = 1 << 20, sent = 0, got = 0, head = 1000;
    unsigned char *src = malloc(total), *dst = malloc(total);
    int eagain = 0, sndbuf = 16384;
    struct pair p;

    for (size_t i = 0; i < total; i++)
        src[i] = (unsigned char)(i * 7 + (i >> 11));
    pair_open(&p, c, 0);
    setsockopt(p.fds[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    ck_assert_int_eq(pair_handshake(&p), VEER_OK);
    while (got < total) {
        if (sent < total) {
            struct iovec iov[2];
            int cnt = 0;
            ssize_t n;

            if (sent < head) {
                iov[cnt].iov_base = src + sent;
                iov[cnt++].iov_len = head - sent;
            }
            iov[cnt].iov_base = src + (sent < head ? head : sent);
            iov[cnt++].iov_len = total - (sent < head ? head : sent);
            n = tls_writev(p.server, iov, cnt);
            if (n < 0) {
                ck_assert_int_eq(errno, EAGAIN);
                eagain++;
            } else {
                if ((size_t)n < total - sent)
                    eagain++; /* a partial write: the rest is offered again */
                sent += (size_t)n;
            }
        }
        for (;;) {
            int n = SSL_read(p.client, dst + got, (int)(total - got));

            if (n <= 0) {
                ck_assert_int_eq(SSL_get_error(p.client, n), SSL_ERROR_WANT_READ);
                break;
            }
            got += (size_t)n;
        }
    }
    ck_assert_int_gt(eagain, 0); /* the retry path did run */
    ck_assert_uint_eq(sent, total);
    ck_assert(memcmp(src, dst, total) == 0);
    pair_close(&p);
    free(src);
    free(dst);
    conf_free(c);
}
END_TEST

/* tls_read fills a small buffer and says when decrypted bytes are left inside TLS. */
START_TEST(test_read_reports_pending_bytes_and_close)
{
    struct veer_conf *c = load_abc(NULL);
    enum tls_want want;
    char buf[10];
    struct pair p;
    ssize_t n;

    pair_open(&p, c, 0);
    ck_assert_int_eq(pair_handshake(&p), VEER_OK);
    n = tls_read(p.server, buf, sizeof(buf), &want);
    ck_assert_int_eq(n, -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(want, TLS_WANT_READ);
    ck_assert_int_eq(SSL_write(p.client, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    n = tls_read(p.server, buf, sizeof(buf), &want);
    ck_assert_int_eq(n, 10);
    ck_assert(tls_pending(p.server)); /* the socket is empty, the rest is inside TLS */
    n = tls_read(p.server, buf, sizeof(buf), &want);
    ck_assert_int_eq(n, 8);
    ck_assert(memcmp(buf, "/1.1\r\n\r\n", 8) == 0);
    ck_assert(!tls_pending(p.server));
    SSL_shutdown(p.client); /* close_notify reads as end of stream */
    n = tls_read(p.server, buf, sizeof(buf), &want);
    ck_assert_int_eq(n, 0);
    pair_close(&p);
    conf_free(c);
}
END_TEST

static void expect_prepare_error(const char *certs, const char *extra, const char *msg)
{
    char err[512] = "", prefix[400];
    struct veer_conf *c = load(certs, extra, err, sizeof(err));

    ck_assert_ptr_null(c);
    snprintf(prefix, sizeof(prefix), "%s/veer.conf:", dir);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "no FILE:LINE in \"%s\"", err);
    ck_assert_msg(strstr(err, msg) != NULL, "\"%s\" lacks \"%s\"", err, msg);
}

START_TEST(test_bad_files_name_the_file_and_line)
{
    char certs[600], msg[300];

    snprintf(certs, sizeof(certs), "{ cert = \"%1$s/a.pem\"; key = \"%1$s/nope.key\"; }", dir);
    snprintf(msg, sizeof(msg), ":2: cannot read key %s/nope.key: No such file", dir);
    expect_prepare_error(certs, NULL, msg);
    snprintf(certs, sizeof(certs),
             "{ cert = \"%1$s/a.pem\"; key = \"%1$s/a.key\"; },\n"
             "{ cert = \"%1$s/b.pem\"; key = \"%1$s/a.key\"; }",
             dir);
    snprintf(msg, sizeof(msg), ":3: key %1$s/a.key does not match certificate %1$s/b.pem", dir);
    expect_prepare_error(certs, NULL, msg);
    snprintf(certs, sizeof(certs), "{ cert = \"%1$s/a.key\"; key = \"%1$s/a.key\"; }", dir);
    snprintf(msg, sizeof(msg), ":2: cannot load certificate %s/a.key: ", dir);
    expect_prepare_error(certs, NULL, msg);
    snprintf(certs, sizeof(certs),
             "{ cert = \"%1$s/a.pem\"; key = \"%1$s/a.key\"; ocsp = \"%1$s/none.der\"; }", dir);
    snprintf(msg, sizeof(msg), "cannot read OCSP response %s/none.der", dir);
    expect_prepare_error(certs, NULL, msg);
    snprintf(certs, sizeof(certs), "{ cert = \"%1$s/a.pem\"; key = \"%1$s/a.key\"; }", dir);
    expect_prepare_error(certs, "ciphers = \"NOPE-NOTHING\";", "ciphers: no usable cipher");
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_sni_picks_exact_then_wildcard_then_default);
    tcase_add_test(tc, test_alpn_http11_or_nothing);
    tcase_add_test(tc, test_protocol_floor_and_ceiling);
    tcase_add_test(tc, test_tickets_survive_one_rotation_not_two);
    tcase_add_test(tc, test_session_cache_without_tickets);
    tcase_add_test(tc, test_large_writes_and_reads_with_retries);
    tcase_add_test(tc, test_read_reports_pending_bytes_and_close);
    tcase_add_test(tc, test_bad_files_name_the_file_and_line);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(tls_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
