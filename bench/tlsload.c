/*
 * tlsload: the full-handshake load generator of bench/tls (libc and OpenSSL; epoll directly).
 *
 *   tlsload --port PORT [--conns 50] [--duration-ms 10000] [--warmup-ms 2000]
 *           [--sni bench.test] [--path /] [--max-version 1.2|1.3]
 *
 * CONNS connections to 127.0.0.1:PORT run in one thread. Each one, again and again: connects,
 * does a full TLS handshake (a new SSL object per connection, the client session cache off and
 * no session ever offered, so nothing is resumed), sends "GET PATH HTTP/1.1" with "Connection:
 * close", reads the whole response (Content-Length), closes, and starts over. That is the
 * cost of a new client: TCP accept, ECDHE and the certificate's private-key signature, the
 * request through the proxy, the close.
 *
 * After WARMUP ms of the same load (not counted), requests completed within the next DURATION
 * ms are counted; latency is from the start of connect() to the last byte of the response.
 * One line on stdout:
 *   requests N errors E seconds S rps R p50_us P p99_us Q resumed K non200 M
 * (resumed counts handshakes OpenSSL reports as resumed: 0 by construction, printed as proof).
 * Exit 0, or 1 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

enum state { CONNECTING, HANDSHAKE, WRITING, READING };

struct conn {
    int fd;
    SSL *ssl;
    enum state st;
    uint64_t t0;
    char buf[16384];
    size_t len;
    size_t sent;
    int idle; /* closed, to be started again by the main loop */
};

static struct {
    int port, conns, duration_ms, warmup_ms, max_version;
    const char *sni, *path;
    char req[512];
    size_t reqlen;
    SSL_CTX *ctx;
    int ep;
    struct sockaddr_in addr;
    uint64_t t_measure, t_end;
    uint64_t requests, errors, resumed, non200;
    uint32_t *lat;
    size_t nlat, cap;
} g = {.conns = 50, .duration_ms = 10000, .warmup_ms = 2000, .sni = "bench.test", .path = "/"};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "tlsload: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void arm(struct conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    if (epoll_ctl(g.ep, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

/* The connection is over (done or failed): count it if it ended in the window; the main loop
 * starts it again. */
static void finish(struct conn *c, int ok, int status)
{
    uint64_t t = now_ns();

    if (t >= g.t_measure && t < g.t_end) {
        if (!ok) {
            g.errors++;
        } else {
            g.requests++;
            if (status != 200)
                g.non200++;
            if (SSL_session_reused(c->ssl))
                g.resumed++;
            if (g.nlat == g.cap) {
                g.cap = g.cap ? g.cap * 2 : 65536;
                g.lat = realloc(g.lat, g.cap * sizeof(*g.lat));
                if (g.lat == NULL)
                    die("realloc");
            }
            g.lat[g.nlat++] = (uint32_t)((t - c->t0) / 1000);
        }
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->idle = 1;
}

static void start(struct conn *c)
{
    c->t0 = now_ns();
    c->len = c->sent = 0;
    c->idle = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    c->ssl = SSL_new(g.ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        die("SSL_new");
    SSL_set_tlsext_host_name(c->ssl, g.sni);
    SSL_set_connect_state(c->ssl);
    c->st = CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&g.addr, sizeof(g.addr)) < 0 && errno != EINPROGRESS) {
        finish(c, 0, 0);
        return;
    }
    arm(c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* Wait for what OpenSSL asked for; 0, or -1 when the error is fatal. */
static int want(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        arm(c, EPOLLIN, EPOLL_CTL_MOD);
        return 0;
    case SSL_ERROR_WANT_WRITE:
        arm(c, EPOLLOUT, EPOLL_CTL_MOD);
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

/* 1 with *status when buf holds a whole response, 0 when more is needed, -1 if malformed. */
static int complete(struct conn *c, int *status)
{
    char *end, *cl;
    size_t head, body = 0;

    c->buf[c->len] = '\0';
    end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL)
        return c->len >= sizeof(c->buf) - 1 ? -1 : 0;
    head = (size_t)(end - c->buf) + 4;
    if (sscanf(c->buf, "HTTP/1.%*d %d", status) != 1)
        return -1;
    for (cl = c->buf; (cl = strcasestr(cl, "\r\ncontent-length:")) != NULL && cl < end; cl++) {
        body = strtoul(cl + 17, NULL, 10);
        break;
    }
    if (head + body >= sizeof(c->buf))
        return -1;
    return c->len >= head + body ? 1 : 0;
}

static void step(struct conn *c)
{
    int r, status = 0;

    for (;;) {
        switch (c->st) {
        case CONNECTING: {
            int err = 0;
            socklen_t len = sizeof(err);

            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
                finish(c, 0, 0);
                return;
            }
            c->st = HANDSHAKE;
            continue;
        }
        case HANDSHAKE:
            r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                if (want(c, r) < 0)
                    finish(c, 0, 0);
                return;
            }
            c->st = WRITING;
            continue;
        case WRITING:
            r = SSL_write(c->ssl, g.req + c->sent, (int)(g.reqlen - c->sent));
            if (r <= 0) {
                if (want(c, r) < 0)
                    finish(c, 0, 0);
                return;
            }
            c->sent += (size_t)r;
            if (c->sent < g.reqlen)
                continue;
            c->st = READING;
            continue;
        case READING:
            r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - 1 - c->len));
            if (r <= 0) {
                if (want(c, r) < 0)
                    finish(c, 0, 0); /* EOF or error before the whole response */
                return;
            }
            c->len += (size_t)r;
            switch (complete(c, &status)) {
            case 1:
                finish(c, 1, status);
                return;
            case -1:
                finish(c, 0, 0);
                return;
            }
            continue;
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static uint32_t pct(double p)
{
    size_t i;

    if (g.nlat == 0)
        return 0;
    i = (size_t)(p * (double)g.nlat + 0.999999);
    if (i == 0)
        i = 1;
    return g.lat[(i > g.nlat ? g.nlat : i) - 1];
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},        {"conns", required_argument, NULL, 'c'},
        {"duration-ms", required_argument, NULL, 'd'}, {"warmup-ms", required_argument, NULL, 'w'},
        {"sni", required_argument, NULL, 's'},         {"path", required_argument, NULL, 'P'},
        {"max-version", required_argument, NULL, 'm'}, {NULL, 0, NULL, 0},
    };
    struct conn *cs;
    struct epoll_event evs[256];
    int o;
    double secs;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            g.port = atoi(optarg);
            break;
        case 'c':
            g.conns = atoi(optarg);
            break;
        case 'd':
            g.duration_ms = atoi(optarg);
            break;
        case 'w':
            g.warmup_ms = atoi(optarg);
            break;
        case 's':
            g.sni = optarg;
            break;
        case 'P':
            g.path = optarg;
            break;
        case 'm':
            g.max_version = strcmp(optarg, "1.2") == 0 ? TLS1_2_VERSION : 0;
            break;
        default:
            fprintf(stderr, "usage: tlsload --port PORT [--conns N] [--duration-ms MS] "
                            "[--warmup-ms MS] [--sni NAME] [--path P] [--max-version 1.2]\n");
            return 1;
        }
    }
    if (g.port <= 0 || g.conns <= 0 || g.duration_ms <= 0 || g.warmup_ms < 0) {
        fprintf(stderr, "tlsload: --port, --conns, --duration-ms must be positive\n");
        return 1;
    }
    g.reqlen =
        (size_t)snprintf(g.req, sizeof(g.req),
                         "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", g.path, g.sni);
    g.ctx = SSL_CTX_new(TLS_client_method());
    if (g.ctx == NULL)
        die("SSL_CTX_new");
    SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_min_proto_version(g.ctx, TLS1_2_VERSION);
    if (g.max_version)
        SSL_CTX_set_max_proto_version(g.ctx, g.max_version);
    SSL_CTX_set_alpn_protos(g.ctx, (const unsigned char *)"\x08http/1.1", 9);
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)g.port);
    g.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0)
        die("epoll_create1");
    g.t_measure = now_ns() + (uint64_t)g.warmup_ms * 1000000u;
    g.t_end = g.t_measure + (uint64_t)g.duration_ms * 1000000u;
    cs = calloc((size_t)g.conns, sizeof(*cs));
    if (cs == NULL)
        die("calloc");
    for (int i = 0; i < g.conns; i++)
        start(&cs[i]);
    while (now_ns() < g.t_end) {
        int n = epoll_wait(g.ep, evs, 256, 100);

        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++)
            step(evs[i].data.ptr);
        for (int i = 0; i < g.conns; i++)
            if (cs[i].idle && now_ns() < g.t_end)
                start(&cs[i]);
    }
    secs = g.duration_ms / 1000.0;
    qsort(g.lat, g.nlat, sizeof(*g.lat), cmp_u32);
    printf("requests %llu errors %llu seconds %.3f rps %.2f p50_us %u p99_us %u resumed %llu "
           "non200 %llu\n",
           (unsigned long long)g.requests, (unsigned long long)g.errors, secs,
           (double)g.requests / secs, pct(0.50), pct(0.99), (unsigned long long)g.resumed,
           (unsigned long long)g.non200);
    return 0;
}
