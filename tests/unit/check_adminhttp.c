/*
 * check_adminhttp.c - the admin HTTP address (admin.http), served from the test's own
 * event_base on an ephemeral loopback port (read back from its "admin http on" log line) and
 * requested over loopback by a small bufferevent client on the same loop, every wait with a
 * deadline: /metrics (status, Content-Type 0.0.4, the contract families of the model, exactly
 * what metrics_render writes), /status (JSON read with jansson: keys, types and values for a
 * model, states, shares, drains, circuits, rates, maintenance, generation, removed pools, a
 * worker shutting down), / (the page), 404s, HEAD, 405 with Allow for other methods, query
 * strings, pipelined requests; adminhttp_set_model swapping what both show; adminhttp_stop
 * closing the listener and open connections (ASan: nothing left behind); no admin.http; start
 * failures (port in use, an address not on this host, an address conf.c refuses) with the
 * reason; IPv6; the limits on what a peer may make it hold (head and body sizes, a silent
 * connection); and admin.http_tls with client certificates made here with OpenSSL's API
 * (refused without one or with one from another CA, served with one signed by client_ca; a
 * configuration without a prepared TLS context is refused rather than served in plain text).
 */
#include "adminhttp.h"
#include "conf.h"
#include "prometheus.h"
#include "model.h"
#include "sbuf.h"
#include "stats.h"
#include "tls.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <jansson.h>
#include <malloc.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* The deadline of every wait: the exchanges take milliseconds. */
#define WAIT_MS     5000
#define NW          2
#define MAX_CLIENTS 16
#define MAX_HEADERS 32

/*
 * Pool "api": b1 and b2 in group blue (weights 100 and 300), g1 in green (weight 7), shares
 * 80/20. Pool "hc": one backend in group "default" with readiness checks (so PENDING).
 */
#define LISTEN "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
#define POOLS                                                                                      \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"b1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"               \
    "{ name = \"b2\"; address = \"127.0.0.1:2\"; weight = 300; group = \"blue\"; },"               \
    "{ name = \"g1\"; address = \"127.0.0.1:3\"; weight = 7; group = \"green\"; } );"              \
    "shares = { blue = 80; green = 20; }; },"                                                      \
    "{ name = \"hc\"; health = { path = \"/ready\"; }; backends = ("                               \
    "{ name = \"a\"; address = \"127.0.0.1:4\"; } ); } );\n"
#define ADMIN "admin = { http = \"127.0.0.1:0\"; };\n"

/* A client connection on the test's loop. */
struct client {
    struct bufferevent *bev;
    struct evbuffer *in; /* everything received */
    bool tls;
    bool connected; /* TCP connected (plain) or TLS handshake done */
    bool done;      /* EOF, error or timeout */
    bool eof, error;
    int err;               /* the socket error at an error */
    unsigned long ssl_err; /* the first OpenSSL error at an error (TLS) */
};

static struct {
    struct event_base *base;
    struct veer_conf *c, *c2;
    struct model *m, *m2;
    struct worker *w[NW];
    char host[64]; /* as the log line gives it, e.g. 127.0.0.1 or [::1] */
    int port;
    struct client *cl[MAX_CLIENTS];
    int ncl;
    bool deadline_hit;
} fx;

/* --- configuration, model, fake workers ------------------------------------------- */

static struct veer_conf *load(const char *text, char *err, size_t len)
{
    char path[] = "/tmp/check_adminhttp_XXXXXX";
    int fd = mkstemp(path);
    struct veer_conf *c;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = conf_load(path, err, len);
    unlink(path);
    return c;
}

static struct veer_conf *load_ok(const char *text)
{
    char err[512] = "";
    struct veer_conf *c = load(text, err, sizeof(err));

    ck_assert_msg(c != NULL, "config: %s", err);
    return c;
}

/* stderr (the log) into a temporary file, to read what adminhttp_start said. */
struct capture {
    int saved, fd;
};

static struct capture capture_start(void)
{
    char path[] = "/tmp/check_adminhttp_log_XXXXXX";
    struct capture c;

    c.fd = mkstemp(path);
    ck_assert_int_ge(c.fd, 0);
    unlink(path);
    c.saved = dup(STDERR_FILENO);
    ck_assert_int_ge(c.saved, 0);
    ck_assert_int_eq(dup2(c.fd, STDERR_FILENO), STDERR_FILENO);
    return c;
}

/* Restore stderr, return what was written (caller frees). */
static char *capture_stop(struct capture *c)
{
    char *text = veer_malloc(8192);
    ssize_t n;

    ck_assert_int_eq(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
    close(c->saved);
    n = pread(c->fd, text, 8191, 0);
    close(c->fd);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

/*
 * Start the admin address of fx.c for fx.m on fx.base. Returns what adminhttp_start returned;
 * *logp gets what it logged (caller frees) when not NULL. On success with an address, fx.host
 * and fx.port are read back from its "admin http on HOST:PORT" line.
 */
static int start_only(char **logp)
{
    struct capture cap;
    char *log;
    const char *on;
    int rc;

    fx.port = 0;
    cap = capture_start();
    rc = adminhttp_start(fx.base, fx.c, fx.m, fx.w, NW);
    log = capture_stop(&cap);
    on = strstr(log, "admin http on ");
    if (rc == VEER_OK && on != NULL) {
        const char *addr = on + strlen("admin http on ");
        const char *colon = strchr(addr, ' ');

        ck_assert_ptr_nonnull(colon);
        while (colon > addr && *colon != ':')
            colon--;
        ck_assert_msg(*colon == ':' && (size_t)(colon - addr) < sizeof(fx.host), "log: %s", log);
        memcpy(fx.host, addr, (size_t)(colon - addr));
        fx.host[colon - addr] = '\0';
        fx.port = atoi(colon + 1);
        ck_assert_msg(fx.port > 0 && fx.port < 65536, "log: %s", log);
    }
    if (logp)
        *logp = log;
    else
        free(log);
    return rc;
}

/* Load conf_text, build its model (NW fake workers are ready) and start_only(). */
static int start_with(const char *conf_text, char **logp)
{
    fx.c = load_ok(conf_text);
    fx.m = model_from_conf(fx.c);
    return start_only(logp);
}

/* Start on 127.0.0.1:0 with the two pools; it must work. */
static void start(const char *extra)
{
    char text[4096];
    char *log;

    snprintf(text, sizeof(text), LISTEN POOLS ADMIN "%s", extra ? extra : "");
    ck_assert_msg(start_with(text, &log) == VEER_OK, "adminhttp_start failed: %s", log);
    ck_assert_msg(fx.port > 0, "no \"admin http on\" line: %s", log);
    free(log);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    signal(SIGPIPE, SIG_IGN); /* a peer that closed first is an error event, not a signal */
    fx.base = event_base_new();
    ck_assert_ptr_nonnull(fx.base);
    veer_nworkers = NW; /* per-backend figures get one slot per worker */
    for (unsigned i = 0; i < NW; i++) {
        fx.w[i] = veer_calloc(1, sizeof(*fx.w[i]));
        fx.w[i]->idx = i;
        fx.w[i]->local = veer_calloc(METRIC_POOLS, sizeof(*fx.w[i]->local));
    }
}

static void client_free(struct client *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    evbuffer_free(c->in);
    free(c);
}

static void teardown(void)
{
    adminhttp_stop();
    for (int i = 0; i < fx.ncl; i++)
        client_free(fx.cl[i]);
    for (unsigned i = 0; i < NW; i++) {
        free(fx.w[i]->local);
        free(fx.w[i]);
    }
    model_free(fx.m);
    model_free(fx.m2);
    conf_free(fx.c);
    conf_free(fx.c2);
    routing_shutdown();
    event_base_free(fx.base);
}

/* --- the loop and its deadlines --------------------------------------------------- */

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    fx.deadline_hit = true;
}

/* Run the loop until cond holds; fail the test if ms pass first. */
#define RUN_UNTIL(cond, ms)                                                                        \
    do {                                                                                           \
        struct event *dl_ = evtimer_new(fx.base, deadline_cb, NULL);                               \
        struct timeval tv_ = {(ms) / 1000, ((ms) % 1000) * 1000};                                  \
                                                                                                   \
        fx.deadline_hit = false;                                                                   \
        evtimer_add(dl_, &tv_);                                                                    \
        while (!(cond) && !fx.deadline_hit)                                                        \
            event_base_loop(fx.base, EVLOOP_ONCE);                                                 \
        event_free(dl_);                                                                           \
        ck_assert_msg(cond, "no %s after %d ms", #cond, (ms));                                     \
    } while (0)

/* --- a small HTTP client on the same loop ---------------------------------------- */

static void cl_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;

    evbuffer_add_buffer(c->in, bufferevent_get_input(bev));
}

static void cl_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        c->error = true;
        c->err = EVUTIL_SOCKET_ERROR();
        if (c->tls)
            c->ssl_err = bufferevent_get_openssl_error(bev);
    } else {
        c->eof = true;
    }
    evbuffer_add_buffer(c->in, bufferevent_get_input(bev));
    if (!c->tls && bufferevent_getfd(bev) >= 0) {
        /* A reset may follow data already queued: keep what the kernel still holds. */
        char b[4096];
        ssize_t n;

        while ((n = recv(bufferevent_getfd(bev), b, sizeof(b), MSG_DONTWAIT)) > 0)
            evbuffer_add(c->in, b, (size_t)n);
    }
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    c->done = true;
}

/* The socket address of host (127.0.0.1, [::1], ...) and port. */
static socklen_t sockaddr_of(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        char h[64];

        snprintf(h, sizeof(h), "%.*s", (int)strlen(host) - 2, host + 1);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        ck_assert_int_eq(inet_pton(AF_INET6, h, &s6->sin6_addr), 1);
        return sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        ck_assert_int_eq(inet_pton(AF_INET, host, &s4->sin_addr), 1);
        return sizeof(*s4);
    }
}

/* Connect to the admin address (over TLS with ssl, which the client then owns). */
static struct client *client_open(SSL *ssl)
{
    struct client *c = veer_calloc(1, sizeof(*c));
    struct sockaddr_storage ss;
    socklen_t sl = sockaddr_of(fx.host, fx.port, &ss);

    ck_assert_int_lt(fx.ncl, MAX_CLIENTS);
    fx.cl[fx.ncl++] = c;
    c->in = evbuffer_new();
    c->tls = ssl != NULL;
    if (ssl) {
        c->bev = bufferevent_openssl_socket_new(fx.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(fx.base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    ck_assert_ptr_nonnull(c->bev);
    bufferevent_setcb(c->bev, cl_read, NULL, cl_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    ck_assert_int_eq(bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)sl), 0);
    return c;
}

static void client_send(struct client *c, const char *data, size_t len)
{
    ck_assert_int_eq(bufferevent_write(c->bev, data, len), 0);
}

static void client_puts(struct client *c, const char *text)
{
    client_send(c, text, strlen(text));
}

/* A response as read off the wire. */
struct resp {
    int code; /* 0: no status line */
    char reason[64];
    int nh;
    char name[MAX_HEADERS][64];
    char value[MAX_HEADERS][256];
    bool has_length;
    size_t length;
    char *body; /* NUL-terminated */
    size_t body_len;
};

static const char *header(const struct resp *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->name[i], name) == 0)
            return r->value[i];
    return NULL;
}

static int header_count(const struct resp *r, const char *name)
{
    int n = 0;

    for (int i = 0; i < r->nh; i++)
        n += strcasecmp(r->name[i], name) == 0;
    return n;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

/*
 * Parse one response from data[*off, len): status line, headers, then a body of
 * Content-Length bytes (none for a HEAD request; the rest of the data without a length).
 * It must be whole. *off moves past it.
 */
static void parse_resp(const char *data, size_t len, size_t *off, bool head, struct resp *r)
{
    const char *p = data + *off, *end = data + len;
    const char *eoh;
    char line[512];
    size_t n;

    memset(r, 0, sizeof(*r));
    eoh = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
    ck_assert_msg(eoh != NULL, "no whole response head in %zu bytes: %.*s", (size_t)(end - p),
                  (int)(end - p > 300 ? 300 : end - p), p);
    /* The data is not NUL-terminated: search only up to the end of the head. */
    n = (size_t)((const char *)memmem(p, (size_t)(eoh + 2 - p), "\r\n", 2) - p);
    ck_assert_uint_lt(n, sizeof(line));
    memcpy(line, p, n);
    line[n] = '\0';
    ck_assert_msg(sscanf(line, "HTTP/1.1 %d %63[^\r]", &r->code, r->reason) >= 1, "status line: %s",
                  line);
    p += n + 2;
    while (p < eoh + 2) {
        const char *colon;

        n = (size_t)((const char *)memmem(p, (size_t)(eoh + 2 - p), "\r\n", 2) - p);
        colon = memchr(p, ':', n);
        ck_assert_msg(colon != NULL, "header line: %.*s", (int)n, p);
        ck_assert_int_lt(r->nh, MAX_HEADERS);
        snprintf(r->name[r->nh], sizeof(r->name[0]), "%.*s", (int)(colon - p), p);
        colon++;
        while (*colon == ' ')
            colon++;
        snprintf(r->value[r->nh], sizeof(r->value[0]), "%.*s", (int)(p + n - colon), colon);
        r->nh++;
        p += n + 2;
    }
    p = eoh + 4;
    if (header(r, "Content-Length")) {
        r->has_length = true;
        r->length = strtoul(header(r, "Content-Length"), NULL, 10);
    }
    r->body_len = head ? 0 : r->has_length ? r->length : (size_t)(end - p);
    ck_assert_msg((size_t)(end - p) >= r->body_len, "body cut: %zu of %zu bytes", (size_t)(end - p),
                  r->body_len);
    r->body = veer_malloc(r->body_len + 1);
    memcpy(r->body, p, r->body_len);
    r->body[r->body_len] = '\0';
    *off = (size_t)(p - data) + r->body_len;
}

/* Wait for the server to close c; its data (linearised) and length. */
static const char *client_wait(struct client *c, size_t *len)
{
    RUN_UNTIL(c->done, WAIT_MS);
    *len = evbuffer_get_length(c->in);
    return (const char *)evbuffer_pullup(c->in, -1);
}

/* Send raw request bytes on a new connection, read the one response until the server closes. */
static void exchange(const char *raw, bool head, struct resp *r)
{
    struct client *c = client_open(NULL);
    size_t len, off = 0;
    const char *data;

    client_puts(c, raw);
    data = client_wait(c, &len);
    ck_assert_msg(!c->error, "connection error %s", strerror(c->err));
    parse_resp(data, len, &off, head, r);
    ck_assert_msg(off == len, "%zu bytes after the response", len - off);
}

/* METHOD target on its own connection (Connection: close). */
static void request(const char *method, const char *target, struct resp *r)
{
    char raw[512];

    snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             method, target);
    exchange(raw, strcmp(method, "HEAD") == 0, r);
}

static json_t *get_status(void)
{
    struct resp r;
    json_error_t e;
    json_t *j;

    request("GET", "/status", &r);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    j = json_loadb(r.body, r.body_len, 0, &e);
    ck_assert_msg(j != NULL, "/status is not JSON (%s): %s", e.text, r.body);
    resp_free(&r);
    return j;
}

static char *get_metrics(void)
{
    struct resp r;

    request("GET", "/metrics", &r);
    ck_assert_int_eq(r.code, 200);
    return r.body; /* caller frees */
}

/* Whether a connect to the admin port is refused now (loopback: answered at once). */
static bool connect_refused(void)
{
    struct sockaddr_storage ss;
    socklen_t sl = sockaddr_of(fx.host, fx.port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    int rc, e;

    ck_assert_int_ge(fd, 0);
    rc = connect(fd, (struct sockaddr *)&ss, sl);
    e = errno;
    close(fd);
    return rc < 0 && e == ECONNREFUSED;
}

/* --- /status as JSON -------------------------------------------------------------- */

static json_t *member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    ck_assert_msg(v != NULL, "no \"%s\" in %s", key, json_dumps(o, JSON_COMPACT));
    return v;
}

static const char *str_of(json_t *o, const char *key)
{
    json_t *v = member(o, key);

    ck_assert_msg(json_is_string(v), "\"%s\" is not a string", key);
    return json_string_value(v);
}

static double num_of(json_t *o, const char *key)
{
    json_t *v = member(o, key);

    ck_assert_msg(json_is_number(v), "\"%s\" is not a number", key);
    return json_number_value(v);
}

static json_int_t int_of(json_t *o, const char *key)
{
    json_t *v = member(o, key);

    ck_assert_msg(json_is_integer(v), "\"%s\" is not an integer", key);
    return json_integer_value(v);
}

static bool bool_of(json_t *o, const char *key)
{
    json_t *v = member(o, key);

    ck_assert_msg(json_is_boolean(v), "\"%s\" is not a boolean", key);
    return json_is_true(v);
}

/* The element of array arr whose "name" is name. */
static json_t *named(json_t *arr, const char *name)
{
    size_t i;
    json_t *v;

    ck_assert(json_is_array(arr));
    json_array_foreach (arr, i, v) {
        if (strcmp(str_of(v, "name"), name) == 0)
            return v;
    }
    ck_abort_msg("no \"%s\" in %s", name, json_dumps(arr, JSON_COMPACT));
    return NULL;
}

static json_t *pool_of(json_t *st, const char *name)
{
    return named(member(st, "pools"), name);
}

static json_t *backend_of(json_t *st, const char *pool, const char *name)
{
    return named(member(pool_of(st, pool), "backends"), name);
}

static json_t *group_of(json_t *st, const char *pool, const char *name)
{
    return named(member(pool_of(st, pool), "groups"), name);
}

/* Every field the README promises for a group and a backend, of the right type. */
static void check_shapes(json_t *st)
{
    size_t i, j;
    json_t *p, *g, *b;

    ck_assert(json_is_string(member(st, "version")));
    ck_assert(json_is_number(member(st, "uptime_s")));
    ck_assert(json_is_integer(member(st, "workers")));
    ck_assert(json_is_integer(member(st, "generation")));
    ck_assert(json_is_boolean(member(st, "shutting_down")));
    ck_assert(json_is_boolean(member(st, "maintenance")));
    ck_assert(json_is_array(member(st, "pools")));
    ck_assert(json_is_array(member(st, "routes")));
    json_array_foreach (member(st, "pools"), i, p) {
        ck_assert(json_is_string(member(p, "name")));
        ck_assert(json_is_boolean(member(p, "maintenance")));
        ck_assert(json_is_null(member(p, "rollout"))); /* no rollout here */
        json_array_foreach (member(p, "groups"), j, g) {
            static const char *const num[] = {"rps", "error_rate", "p99_ms"};

            ck_assert(json_is_string(member(g, "name")));
            ck_assert(json_is_integer(member(g, "share")));
            for (size_t k = 0; k < ARRAY_SIZE(num); k++)
                ck_assert_msg(json_is_number(member(g, num[k])), "group %s", num[k]);
        }
        json_array_foreach (member(p, "backends"), j, b) {
            static const char *const strs[] = {"name", "address", "group", "state", "circuit"};
            static const char *const ints[] = {"weight", "active", "conns"};
            static const char *const num[] = {"effective_weight", "weight_factor", "rps",
                                              "error_rate", "p99_ms"};

            for (size_t k = 0; k < ARRAY_SIZE(strs); k++)
                ck_assert_msg(json_is_string(member(b, strs[k])), "backend %s", strs[k]);
            for (size_t k = 0; k < ARRAY_SIZE(ints); k++)
                ck_assert_msg(json_is_integer(member(b, ints[k])), "backend %s", ints[k]);
            for (size_t k = 0; k < ARRAY_SIZE(num); k++)
                ck_assert_msg(json_is_number(member(b, num[k])), "backend %s", num[k]);
        }
    }
}

/* --- /metrics --------------------------------------------------------------------- */

START_TEST(test_metrics_is_prometheus_text_with_the_contract_families)
{
    static const char *const types[] = {
        "veer_info gauge",
        "veer_requests_total counter",
        "veer_request_duration_seconds histogram",
        "veer_backend_weight gauge",
        "veer_backend_effective_weight gauge",
        "veer_backend_state gauge",
        "veer_backend_active_requests gauge",
        "veer_group_share gauge",
        "veer_generation gauge",
        "veer_upstream_errors_total counter",
        "veer_retries_total counter",
        "veer_open_connections gauge",
        "veer_shift_applied_seconds histogram",
        "veer_shifts_refused_total counter",
        "veer_maintenance gauge",
        "veer_circuit_state gauge",
        "veer_health_check_seconds histogram",
        "veer_pool_eligible_backends gauge",
        "veer_drains_in_progress gauge",
    };
    struct resp r;
    struct sbuf want;
    char line[128];

    start(NULL);
    counter_add(&fx.m->pools[0].b[0].be->ws[1].fb.requests[1], 3); /* b1: three 2xx on worker 1 */
    request("GET", "/metrics", &r);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.reason, "OK");
    ck_assert_str_eq(header(&r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_str_eq(header(&r, "Cache-Control"), "no-store");
    ck_assert(r.has_length);
    for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
        snprintf(line, sizeof(line), "\n# TYPE %s\n", types[i]);
        ck_assert_msg(strstr(r.body, line) != NULL, "no \"%s\"", line + 1);
    }
    /* The model's own figures. */
    ck_assert_ptr_nonnull(strstr(r.body, "\nveer_group_share{pool=\"api\",group=\"blue\"} 80\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nveer_group_share{pool=\"api\",group=\"green\"} 20\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nveer_generation 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nveer_backend_state{pool=\"hc\",group=\"default\","
                                         "backend=\"a\",state=\"PENDING\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nveer_requests_total{pool=\"api\",group=\"blue\","
                                         "backend=\"b1\",route=\"\",code_class=\"2xx\"} 3\n"));
    /* Exactly what metrics_render writes, with every worker's figures. */
    sb_init(&want);
    metrics_render(&want, fx.m, fx.w, NW);
    ck_assert_uint_eq(r.body_len, want.len);
    ck_assert_str_eq(r.body, want.s);
    sb_free(&want);
    resp_free(&r);
}
END_TEST

START_TEST(test_metrics_follow_the_model_between_scrapes)
{
    char *text;

    start(NULL);
    text = get_metrics();
    ck_assert_ptr_nonnull(strstr(text, "\nveer_maintenance{pool=\"hc\"} 0\n"));
    free(text);
    fx.m->pools[0].g[0].share = 30; /* as `shift api blue=30 green=70` leaves it */
    fx.m->pools[0].g[1].share = 70;
    fx.m->pools[1].maint = true;
    fx.m->generation = 7;
    text = get_metrics();
    ck_assert_ptr_nonnull(strstr(text, "\nveer_group_share{pool=\"api\",group=\"blue\"} 30\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nveer_group_share{pool=\"api\",group=\"green\"} 70\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nveer_maintenance{pool=\"hc\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nveer_generation 7\n"));
    free(text);
}
END_TEST

/* --- /status ---------------------------------------------------------------------- */

START_TEST(test_status_is_json_with_pools_groups_and_backends_of_the_model)
{
    json_t *st, *api, *hc, *b;

    start(NULL);
    st = get_status();
    check_shapes(st);
    ck_assert_str_eq(str_of(st, "version"), VEER_VERSION);
    ck_assert_int_eq(int_of(st, "workers"), NW);
    ck_assert_int_eq(int_of(st, "generation"), 1);
    ck_assert(!bool_of(st, "shutting_down"));
    ck_assert(!bool_of(st, "maintenance"));
    ck_assert(num_of(st, "uptime_s") >= 0 && num_of(st, "uptime_s") < 60);
    ck_assert_uint_eq(json_array_size(member(st, "pools")), 2);
    api = json_array_get(member(st, "pools"), 0); /* in the config's order */
    hc = json_array_get(member(st, "pools"), 1);
    ck_assert_str_eq(str_of(api, "name"), "api");
    ck_assert_str_eq(str_of(hc, "name"), "hc");
    ck_assert(!bool_of(api, "maintenance"));

    ck_assert_uint_eq(json_array_size(member(api, "groups")), 2);
    ck_assert_int_eq(int_of(group_of(st, "api", "blue"), "share"), 80);
    ck_assert_int_eq(int_of(group_of(st, "api", "green"), "share"), 20);
    ck_assert_int_eq(int_of(group_of(st, "hc", "default"), "share"), 100);
    ck_assert_double_eq(num_of(group_of(st, "api", "blue"), "rps"), 0);

    ck_assert_uint_eq(json_array_size(member(api, "backends")), 3);
    b = backend_of(st, "api", "b1");
    ck_assert_str_eq(str_of(b, "address"), "127.0.0.1:1");
    ck_assert_str_eq(str_of(b, "group"), "blue");
    ck_assert_str_eq(str_of(b, "state"), "READY");
    ck_assert_int_eq(int_of(b, "weight"), 100);
    /* Blue's 80% split 100:300; green's 20% to g1 alone. */
    ck_assert_double_eq_tol(num_of(b, "effective_weight"), 20, 1e-4);
    ck_assert_double_eq_tol(num_of(backend_of(st, "api", "b2"), "effective_weight"), 60, 1e-4);
    ck_assert_double_eq_tol(num_of(backend_of(st, "api", "g1"), "effective_weight"), 20, 1e-4);
    ck_assert_int_eq(int_of(b, "active"), 0);
    ck_assert_int_eq(int_of(b, "conns"), 0);
    ck_assert_str_eq(str_of(b, "circuit"), "closed");
    ck_assert_double_eq(num_of(b, "weight_factor"), 1);
    ck_assert_ptr_null(json_object_get(b, "drain")); /* only while draining */
    b = backend_of(st, "hc", "a");
    ck_assert_str_eq(str_of(b, "state"), "PENDING"); /* readiness-gated */
    ck_assert_str_eq(str_of(b, "group"), "default");
    ck_assert_double_eq(num_of(b, "effective_weight"), 0);
    ck_assert_uint_eq(json_array_size(member(st, "routes")), 0); /* none configured */
    json_decref(st);
}
END_TEST

START_TEST(test_status_shows_states_drains_circuits_rates_and_maintenance)
{
    struct rt_pool *api;
    json_t *st, *b;

    start(NULL);
    api = &fx.m->pools[0];
    api->b[0].admin = ADMIN_DRAIN; /* b1 draining, two requests left on worker 1 */
    api->b[0].drain_start_us = veer_now_us() - 1500000;
    backend_wstat_add(&api->b[0].be->ws[1].active, 2);
    backend_wstat_add(&api->b[0].be->ws[0].conns, 3);
    api->b[1].admin = ADMIN_MAINT;
    api->b[2].breaker = BREAKER_HALF_OPEN;
    api->b[2].factor = 0.1;
    api->b[2].rate.rps = 12.5;
    api->b[2].rate.error_rate = 0.25;
    api->b[2].rate.p99_ms = 7.5;
    api->g[1].rate.rps = 12.5;
    api->g[0].share = 0;
    api->g[1].share = 100;
    fx.m->pools[1].b[0].health = HEALTH_DOWN;
    fx.m->pools[1].maint = true;
    fx.m->generation = 42;
    fx.w[1]->shutting_down = true;

    st = get_status();
    check_shapes(st);
    ck_assert_int_eq(int_of(st, "generation"), 42);
    ck_assert(bool_of(st, "shutting_down"));
    ck_assert(!bool_of(st, "maintenance"));
    ck_assert(!bool_of(pool_of(st, "api"), "maintenance"));
    ck_assert(bool_of(pool_of(st, "hc"), "maintenance"));
    ck_assert_int_eq(int_of(group_of(st, "api", "blue"), "share"), 0);
    ck_assert_int_eq(int_of(group_of(st, "api", "green"), "share"), 100);
    ck_assert_double_eq(num_of(group_of(st, "api", "green"), "rps"), 12.5);

    b = backend_of(st, "api", "b1");
    ck_assert_str_eq(str_of(b, "state"), "DRAINING");
    ck_assert_int_eq(int_of(b, "active"), 2);
    ck_assert_int_eq(int_of(b, "conns"), 3);
    ck_assert_double_eq(num_of(b, "effective_weight"), 0);
    ck_assert_int_eq(int_of(member(b, "drain"), "left"), 2);
    ck_assert(num_of(member(b, "drain"), "elapsed_ms") >= 1500);
    ck_assert(num_of(member(b, "drain"), "elapsed_ms") < 60000);
    b = backend_of(st, "api", "b2");
    ck_assert_str_eq(str_of(b, "state"), "MAINT");
    ck_assert_ptr_null(json_object_get(b, "drain"));
    b = backend_of(st, "api", "g1");
    ck_assert_str_eq(str_of(b, "state"), "READY");
    ck_assert_str_eq(str_of(b, "circuit"), "half_open");
    ck_assert_double_eq_tol(num_of(b, "weight_factor"), 0.1, 1e-9);
    ck_assert_double_eq(num_of(b, "rps"), 12.5);
    ck_assert_double_eq_tol(num_of(b, "error_rate"), 0.25, 1e-9);
    ck_assert_double_eq_tol(num_of(b, "p99_ms"), 7.5, 1e-9);
    ck_assert_str_eq(str_of(backend_of(st, "hc", "a"), "state"), "DOWN");
    json_decref(st);

    /* Drained: the state says so and the drain block goes. */
    api->b[0].drained = true;
    backend_wstat_add(&api->b[0].be->ws[1].active, -2);
    /* Maintenance for every pool; a pool removed by a reload is not shown. */
    fx.m->maint = true;
    fx.m->pools[1].removed = true;
    st = get_status();
    check_shapes(st);
    ck_assert(bool_of(st, "maintenance"));
    ck_assert(bool_of(pool_of(st, "api"), "maintenance"));
    ck_assert_uint_eq(json_array_size(member(st, "pools")), 1);
    b = backend_of(st, "api", "b1");
    ck_assert_str_eq(str_of(b, "state"), "DRAINED");
    ck_assert_ptr_null(json_object_get(b, "drain"));
    json_decref(st);
}
END_TEST

START_TEST(test_status_rates_are_zero_before_the_first_stats_tick)
{
    struct conf_addr addr;
    char err[128];
    json_t *st, *v;
    size_t i, j;

    start(NULL);
    /* A group first created at runtime (`add backend api n1 ... group new`). */
    ck_assert_int_eq(conf_parse_addr("127.0.0.1:6", false, &addr, err, sizeof(err)), 0);
    model_add_backend(fx.m, 0, "n1", &addr, 10, "new");
    st = get_status();
    check_shapes(st);
    ck_assert_int_eq(int_of(group_of(st, "api", "new"), "share"), 0);
    json_array_foreach (member(st, "pools"), i, v) {
        json_t *g, *b;

        json_array_foreach (member(v, "groups"), j, g) {
            ck_assert_msg(num_of(g, "rps") == 0 && num_of(g, "error_rate") == 0 &&
                              num_of(g, "p99_ms") == 0,
                          "group %s: %s", str_of(g, "name"), json_dumps(g, JSON_COMPACT));
        }
        json_array_foreach (member(v, "backends"), j, b) {
            ck_assert_msg(num_of(b, "rps") == 0 && num_of(b, "error_rate") == 0 &&
                              num_of(b, "p99_ms") == 0,
                          "backend %s: %s", str_of(b, "name"), json_dumps(b, JSON_COMPACT));
        }
    }
    json_decref(st);
}
END_TEST

START_TEST(test_status_names_are_json_escaped)
{
    json_t *st;

    start(NULL);
    free(fx.m->pools[0].b[0].be->name);
    fx.m->pools[0].b[0].be->name = veer_strdup("q\"b\\s\nn</script>");
    free(fx.m->pools[0].g[1].name);
    fx.m->pools[0].g[1].name = veer_strdup("gr\"een");
    st = get_status();
    check_shapes(st);
    ck_assert_str_eq(str_of(backend_of(st, "api", "q\"b\\s\nn</script>"), "group"), "blue");
    ck_assert_str_eq(str_of(backend_of(st, "api", "g1"), "group"), "gr\"een");
    json_decref(st);
}
END_TEST

START_TEST(test_set_model_swaps_what_status_and_metrics_show)
{
    json_t *st, *web;
    char *text;

    start(NULL);
    fx.c2 = load_ok("listen = ( { address = \"127.0.0.1:0\"; pool = \"web\"; } );\n"
                    "pools = ( { name = \"web\"; backends = ("
                    "{ name = \"w1\"; address = \"127.0.0.1:5\"; weight = 5; } ); } );\n");
    fx.m2 = model_from_conf(fx.c2);
    fx.m2->generation = 9;
    adminhttp_set_model(fx.m2);
    st = get_status();
    check_shapes(st);
    ck_assert_int_eq(int_of(st, "generation"), 9);
    ck_assert_uint_eq(json_array_size(member(st, "pools")), 1);
    web = pool_of(st, "web");
    ck_assert_uint_eq(json_array_size(member(web, "backends")), 1);
    ck_assert_str_eq(str_of(backend_of(st, "web", "w1"), "address"), "127.0.0.1:5");
    ck_assert_int_eq(int_of(group_of(st, "web", "default"), "share"), 100);
    json_decref(st);
    text = get_metrics();
    ck_assert_ptr_nonnull(strstr(text, "\nveer_group_share{pool=\"web\",group=\"default\"} 100\n"));
    ck_assert_ptr_null(strstr(text, "pool=\"api\""));
    ck_assert_ptr_nonnull(strstr(text, "\nveer_generation 9\n"));
    free(text);

    adminhttp_set_model(fx.m); /* and back */
    st = get_status();
    ck_assert_int_eq(int_of(st, "generation"), 1);
    ck_assert_uint_eq(json_array_size(member(st, "pools")), 2);
    pool_of(st, "api");
    json_decref(st);
}
END_TEST

START_TEST(test_status_json_is_what_the_address_serves)
{
    struct sbuf o;
    json_t *direct, *served;
    json_error_t e;

    start(NULL);
    fx.m->pools[0].g[0].share = 55;
    fx.m->pools[0].g[1].share = 45;
    sb_init(&o);
    adminhttp_status_json(&o);
    ck_assert(o.len > 0 && o.s[o.len - 1] == '\n');
    direct = json_loadb(o.s, o.len, 0, &e);
    ck_assert_msg(direct != NULL, "%s: %s", e.text, o.s);
    sb_free(&o);
    served = get_status();
    /* The same document but for the uptime, which moves. */
    json_object_del(direct, "uptime_s");
    json_object_del(served, "uptime_s");
    ck_assert(json_equal(direct, served));
    json_decref(direct);
    json_decref(served);
}
END_TEST

/* --- the page, other paths and methods ---------------------------------------------- */

START_TEST(test_page_is_self_contained_html_refreshing_from_status)
{
    static const char *const targets[] = {"/", "/?refresh=1"};

    start(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(targets); i++) {
        struct resp r;

        request("GET", targets[i], &r);
        ck_assert_int_eq(r.code, 200);
        ck_assert_str_eq(header(&r, "Content-Type"), "text/html; charset=utf-8");
        ck_assert_str_eq(header(&r, "Cache-Control"), "no-store");
        ck_assert(strncmp(r.body, "<!doctype html>", 15) == 0);
        ck_assert_ptr_nonnull(strstr(r.body, "fetch('/status'"));
        ck_assert_ptr_nonnull(strstr(r.body, "setInterval(tick,1000)"));
        /* No external assets. */
        ck_assert_ptr_null(strstr(r.body, "src="));
        ck_assert_ptr_null(strstr(r.body, "<link"));
        ck_assert_ptr_null(strstr(r.body, "http://"));
        ck_assert_ptr_null(strstr(r.body, "https://"));
        resp_free(&r);
    }
}
END_TEST

START_TEST(test_unknown_paths_are_404)
{
    static const char *const targets[] = {
        "/nope",         "/index.html", "/metrics/",         "/statusx",
        "/status/pools", "//",          "/%2e%2e/etc/passwd"};

    start(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(targets); i++) {
        struct resp r;

        request("GET", targets[i], &r);
        ck_assert_msg(r.code == 404, "%s: %d", targets[i], r.code);
        ck_assert_str_eq(r.reason, "Not Found");
        ck_assert_str_eq(header(&r, "Content-Type"), "text/plain");
        ck_assert_str_eq(r.body, "not found\n");
        resp_free(&r);
    }
}
END_TEST

START_TEST(test_query_strings_do_not_change_the_route)
{
    struct resp r;
    json_error_t e;
    json_t *j;

    start(NULL);
    request("GET", "/metrics?name[]=veer_generation", &r);
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\nveer_generation 1\n"));
    resp_free(&r);
    request("GET", "/status?pretty=1", &r);
    ck_assert_int_eq(r.code, 200);
    j = json_loadb(r.body, r.body_len, 0, &e);
    ck_assert_msg(j != NULL, "%s", e.text);
    json_decref(j);
    resp_free(&r);
}
END_TEST

START_TEST(test_head_gives_the_head_without_a_body)
{
    static const struct {
        const char *target;
        int code;
        const char *ctype;
    } cases[] = {
        {"/metrics", 200, "text/plain; version=0.0.4; charset=utf-8"},
        {"/status", 200, "application/json"},
        {"/", 200, "text/html; charset=utf-8"},
        {"/nope", 404, "text/plain"},
    };

    start(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct resp r;

        /* exchange() checks nothing follows the head. */
        request("HEAD", cases[i].target, &r);
        ck_assert_msg(r.code == cases[i].code, "HEAD %s: %d", cases[i].target, r.code);
        ck_assert_str_eq(header(&r, "Content-Type"), cases[i].ctype);
        ck_assert_uint_eq(r.body_len, 0);
        ck_assert(r.has_length);
        if (strcmp(cases[i].target, "/") == 0 || strcmp(cases[i].target, "/nope") == 0) {
            struct resp g; /* the length GET has (these two bodies never change) */

            request("GET", cases[i].target, &g);
            ck_assert_uint_eq(r.length, g.body_len);
            resp_free(&g);
        }
        resp_free(&r);
    }
}
END_TEST

START_TEST(test_other_methods_are_405_with_allow)
{
    static const char *const raws[] = {
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        "PUT /status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        "DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "PATCH /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "OPTIONS /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    };
    json_t *st;

    start(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(raws); i++) {
        struct resp r;

        exchange(raws[i], false, &r);
        ck_assert_msg(r.code == 405, "%.*s: %d", (int)strcspn(raws[i], "\r"), raws[i], r.code);
        ck_assert_str_eq(r.reason, "Method Not Allowed");
        ck_assert_msg(header(&r, "Allow") && strcmp(header(&r, "Allow"), "GET, HEAD") == 0,
                      "Allow: %s", header(&r, "Allow") ? header(&r, "Allow") : "(none)");
        resp_free(&r);
    }
    /* A method nobody knows is not implemented (RFC 9110 9.1). */
    {
        struct resp r;

        exchange("FOO /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false, &r);
        ck_assert_int_eq(r.code, 501);
        resp_free(&r);
    }
    /* Nothing changed. */
    st = get_status();
    ck_assert_int_eq(int_of(st, "generation"), 1);
    json_decref(st);
}
END_TEST

START_TEST(test_pipelined_requests_on_one_connection_are_answered_in_order)
{
    static const char raw[] = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
                              "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct client *c;
    struct resp r[4];
    size_t len, off = 0;
    const char *data;
    json_error_t e;
    json_t *j;

    start(NULL);
    c = client_open(NULL);
    client_send(c, raw, sizeof(raw) - 1);
    data = client_wait(c, &len);
    ck_assert(!c->error);
    for (int i = 0; i < 4; i++) {
        parse_resp(data, len, &off, i == 1, &r[i]);
        ck_assert_msg(i == 1 || r[i].has_length, "response %d has no Content-Length", i);
    }
    ck_assert_uint_eq(off, len);
    ck_assert_int_eq(r[0].code, 200);
    j = json_loadb(r[0].body, r[0].body_len, 0, &e);
    ck_assert_msg(j != NULL, "%s", e.text);
    json_decref(j);
    ck_assert_int_eq(r[1].code, 200);
    ck_assert_int_eq(r[2].code, 404);
    ck_assert_int_eq(r[3].code, 200);
    ck_assert_ptr_nonnull(strstr(r[3].body, "# TYPE veer_generation gauge"));
    ck_assert_int_eq(header_count(&r[3], "Content-Type"), 1);
    for (int i = 0; i < 4; i++)
        resp_free(&r[i]);
}
END_TEST

/* --- what a peer may make it hold ---------------------------------------------------- */

START_TEST(test_a_huge_declared_body_is_refused_at_once)
{
    static const char *const raws[] = {
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n",
        "GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n",
    };

    start(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(raws); i++) {
        struct client *c = client_open(NULL);
        size_t len, off = 0;
        const char *data;
        struct resp r;

        /* The body never comes: the answer must not wait for it. */
        client_puts(c, raws[i]);
        data = client_wait(c, &len);
        parse_resp(data, len, &off, false, &r);
        ck_assert_msg(r.code == 413, "%.*s: %d", (int)strcspn(raws[i], "\r"), raws[i], r.code);
        resp_free(&r);
    }
}
END_TEST

START_TEST(test_an_endless_head_is_cut_off)
{
    size_t big = 1 << 20, len;
    char *raw = veer_malloc(big + 64);
    const char *data;
    struct client *c;
    size_t n;

    start(NULL);
    n = (size_t)snprintf(raw, 64, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    while (n + 80 < big) {
        memcpy(raw + n, "X-Pad: ", 7);
        memset(raw + n + 7, 'a', 70);
        memcpy(raw + n + 77, "\r\n", 2);
        n += 79;
    }
    memcpy(raw + n, "\r\n", 2);
    n += 2;
    c = client_open(NULL);
    client_send(c, raw, n);
    free(raw);
    /* The server gives up on it (an error status, or a reset as it closes on unread bytes). */
    data = client_wait(c, &len);
    if (len > 0) {
        struct resp r;
        size_t off = 0;

        parse_resp(data, len, &off, false, &r);
        ck_assert_msg(r.code == 400 || r.code == 413 || r.code == 431, "a 1 MiB head: %d", r.code);
        resp_free(&r);
    } else {
        ck_assert_msg(c->error, "closed without an answer nor a reset");
    }
}
END_TEST

START_TEST(test_a_silent_connection_is_closed)
{
    struct client *quiet, *half;
    uint64_t t0;
    struct resp r;

    start("timeouts = { client_header_ms = 300; };\n");
    t0 = veer_now_us();
    quiet = client_open(NULL);
    half = client_open(NULL);
    client_puts(half, "GET /sta");
    RUN_UNTIL(quiet->done && half->done, WAIT_MS);
    ck_assert_uint_eq(evbuffer_get_length(quiet->in), 0);
    ck_assert(veer_now_us() - t0 >= 250000);
    /* A request in time is still served. */
    request("GET", "/status", &r);
    ck_assert_int_eq(r.code, 200);
    resp_free(&r);
}
END_TEST

/* A plain blocking connection to the admin address (loopback: the backlog completes it). */
static int raw_connect(void)
{
    struct sockaddr_storage ss;
    socklen_t sl = sockaddr_of(fx.host, fx.port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&ss, sl), 0);
    return fd;
}

static void raw_send(int fd, const char *text)
{
    ck_assert_int_eq(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* Whether the server sent anything on fd yet (nothing is taken off). */
static bool raw_has_data(int fd)
{
    char c;

    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static bool all_have_data(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (!raw_has_data(fds[i]))
            return false;
    return true;
}

/* Run the loop for ms (to see that something does not happen meanwhile). */
static void run_for(int ms)
{
    struct event *dl = evtimer_new(fx.base, deadline_cb, NULL);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    fx.deadline_hit = false;
    evtimer_add(dl, &tv);
    while (!fx.deadline_hit)
        event_base_loop(fx.base, EVLOOP_ONCE);
    event_free(dl);
}

#define CAP 64 /* ADMIN_HTTP_MAX_CONNS, as the README says */

/*
 * At the cap the address stops accepting: one more connection waits (in the backlog, not
 * refused) until one of the others closes, and is served then.
 */
START_TEST(test_connections_over_the_cap_wait_until_one_closes)
{
    static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    int fds[CAP + 1];
    char buf[64];

    start(NULL);
    for (int i = 0; i < CAP; i++) {
        fds[i] = raw_connect();
        raw_send(fds[i], get);
    }
    RUN_UNTIL(all_have_data(fds, CAP), WAIT_MS);
    ck_assert_uint_eq(adminhttp_connections(), CAP);
    fds[CAP] = raw_connect();
    raw_send(fds[CAP], get);
    run_for(300);
    ck_assert_msg(!raw_has_data(fds[CAP]), "a connection over the cap was served");
    ck_assert_uint_eq(adminhttp_connections(), CAP);
    close(fds[0]);
    RUN_UNTIL(raw_has_data(fds[CAP]), WAIT_MS);
    ck_assert_int_eq(recv(fds[CAP], buf, 12, 0), 12);
    ck_assert(memcmp(buf, "HTTP/1.1 200", 12) == 0);
    ck_assert_uint_eq(adminhttp_connections(), CAP);
    for (int i = 1; i <= CAP; i++)
        close(fds[i]);
    RUN_UNTIL(adminhttp_connections() == 0, WAIT_MS);
}
END_TEST

/* A socket that is always readable: its event fires once in every pass of the loop. */
static struct {
    uint64_t last_renders;
    unsigned passes;
    uint64_t most_between; /* renders between two passes' "other work" */
} other;

static void other_work_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = adminhttp_renders();

    if (other.passes++ > 0 && now - other.last_renders > other.most_between)
        other.most_between = now - other.last_renders;
    other.last_renders = now;
}

/*
 * Renders of /metrics and /status take turns with the control thread's other work (the admin
 * socket, health checks): with many scrapes ready at once, at most one is rendered between
 * two passes of that work, instead of all of them in a row.
 */
START_TEST(test_scrapes_are_rendered_one_per_loop_pass)
{
    static const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    enum { N = 12 };
    int fds[N], sp[2];
    struct event *ev;
    uint64_t base;

    start(NULL);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "x", 1), 1);
    memset(&other, 0, sizeof(other));
    ev = event_new(fx.base, sp[0], EV_READ | EV_PERSIST, other_work_cb, NULL);
    event_add(ev, NULL);
    base = adminhttp_renders();
    /* Every request is in the kernel before the loop runs: all ready in the same pass. */
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect();
        raw_send(fds[i], get);
    }
    RUN_UNTIL(adminhttp_renders() - base == N && all_have_data(fds, N), WAIT_MS);
    ck_assert_uint_le(other.most_between, 1);
    ck_assert_uint_gt(other.passes, N);
    for (int i = 0; i < N; i++) {
        char buf[12];

        ck_assert_int_eq(recv(fds[i], buf, sizeof(buf), 0), 12);
        ck_assert(memcmp(buf, "HTTP/1.1 200", 12) == 0);
        close(fds[i]);
    }
    event_free(ev);
    close(sp[0]);
    close(sp[1]);
}
END_TEST

/*
 * One scrape of a big model is rendered in slices with the loop's other work in between, not
 * in one long callback (slices of 1 us here, so 300 backends make many).
 */
START_TEST(test_a_big_render_is_cut_into_slices)
{
    static const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    struct sbuf conf;
    struct event *ev;
    uint64_t base;
    unsigned passes;
    int fd, sp[2];
    char *log;

    sb_init(&conf);
    sb_puts(&conf, LISTEN ADMIN "pools = ( { name = \"api\"; backends = (");
    for (unsigned i = 0; i < 300; i++)
        sb_printf(&conf, "%s{ name = \"b%u\"; address = \"127.0.0.1:%u\"; }", i ? "," : "", i,
                  1000 + i);
    sb_puts(&conf, "); } );\n");
    ck_assert_msg(start_with(conf.s, &log) == VEER_OK, "%s", log);
    free(log);
    sb_free(&conf);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "x", 1), 1);
    memset(&other, 0, sizeof(other));
    ev = event_new(fx.base, sp[0], EV_READ | EV_PERSIST, other_work_cb, NULL);
    event_add(ev, NULL);
    adminhttp_set_render_slice(1);
    fd = raw_connect();
    raw_send(fd, get);
    passes = other.passes;
    base = adminhttp_renders();
    RUN_UNTIL(adminhttp_renders() > base && raw_has_data(fd), 30000);
    /* In one callback it would be 3 or 4 passes: accept, read, render, write. */
    ck_assert_msg(other.passes - passes >= 10, "only %u passes of other work during the render",
                  other.passes - passes);
    event_free(ev);
    close(sp[0]);
    close(sp[1]);
    close(fd);
}
END_TEST

/* --- /status: routes ------------------------------------------------------------------ */

#define ROUTES                                                                                     \
    "routes = (\n"                                                                                 \
    "  { name = \"payments\"; pool = \"hc\";\n"                                                    \
    "    match = { host = \"api.example.com\"; path_prefix = \"/payments\"; methods = ( \"GET\" "  \
    ");"                                                                                           \
    "              headers = ( { name = \"X-Api-Version\"; value = \"2\"; } ); }; },\n"            \
    "  { name = \"login\"; pool = \"api\"; match = { path = \"/login\"; }; }\n"                    \
    ");\n"

/* The "routes" array of /status, as served. */
static json_t *status_routes(json_t **st)
{
    *st = get_status();
    check_shapes(*st);
    return member(*st, "routes");
}

static void assert_json_eq(json_t *got, const char *want_text)
{
    json_error_t e;
    json_t *want = json_loads(want_text, 0, &e);

    ck_assert_msg(want != NULL, "bad expectation (%s): %s", e.text, want_text);
    ck_assert_msg(json_equal(got, want), "got %s\nwant %s", json_dumps(got, JSON_COMPACT),
                  json_dumps(want, JSON_COMPACT));
    json_decref(want);
}

/*
 * /status lists the routes in the config's order, each with the match keys it sets, the pool
 * it sends to now, its state and its figures (routejson_route): route maintenance, route
 * set and the stats tick show at the next request.
 */
START_TEST(test_status_lists_the_routes_with_match_pool_state_and_figures)
{
    json_t *st, *routes;

    start(ROUTES);
    routes = status_routes(&st);
    assert_json_eq(routes,
                   "[{\"name\":\"payments\",\"match\":{\"host\":\"api.example.com\","
                   "\"path_prefix\":\"/payments\",\"methods\":[\"GET\"],\"headers\":[{\"name\":"
                   "\"X-Api-Version\",\"value\":\"2\"}]},\"pool\":\"hc\",\"state\":\"serving\","
                   "\"maintenance_retry_after\":0,\"maintenance_hold_ms\":0,\"rps\":0.0,\"error_"
                   "rate\":0.0,\"p99_ms\":0.0},"
                   "{\"name\":\"login\",\"match\":{\"path\":\"/login\"},\"pool\":\"api\","
                   "\"state\":\"serving\",\"maintenance_retry_after\":0,\"maintenance_hold_ms\":0,"
                   "\"rps\":0.0,\"error_rate\":0.0,\"p99_ms\":0.0}]");
    json_decref(st);

    fx.m->routes[0].maint = true; /* route maintenance payments on */
    fx.m->routes[1].pool = 1;     /* route set login pool hc */
    fx.m->routes[1].rate.rps = 40;
    fx.m->routes[1].rate.error_rate = 0.025;
    fx.m->routes[1].rate.p99_ms = 12.5;
    routes = status_routes(&st);
    ck_assert_str_eq(str_of(named(routes, "payments"), "state"), "maintenance");
    ck_assert_str_eq(str_of(named(routes, "payments"), "pool"), "hc");
    assert_json_eq(named(routes, "login"),
                   "{\"name\":\"login\",\"match\":{\"path\":\"/login\"},\"pool\":\"hc\","
                   "\"state\":\"serving\",\"maintenance_retry_after\":0,\"maintenance_hold_ms\":0,"
                   "\"rps\":40.0,\"error_rate\":0.025,\"p99_ms\":12.5}");
    json_decref(st);

    fx.m->routes[0].maint = false;
    fx.m->pools[1].maint = true; /* maintenance on hc: both routes send there now */
    routes = status_routes(&st);
    ck_assert_str_eq(str_of(named(routes, "payments"), "state"), "maintenance");
    ck_assert_str_eq(str_of(named(routes, "login"), "state"), "maintenance");
    json_decref(st);
}
END_TEST

/* A config with n routes to pool api, "<prefix>0".."<prefix><n-1>", on hosts h0.example.com... */
static char *many_routes(unsigned n, const char *prefix)
{
    struct sbuf conf;

    sb_init(&conf);
    sb_puts(&conf, LISTEN POOLS ADMIN "routes = (");
    for (unsigned i = 0; i < n; i++)
        sb_printf(&conf,
                  "%s{ name = \"%s%u\"; pool = \"api\"; match = { host = \"h%u.example.com\";"
                  " path_prefix = \"/p\"; }; }",
                  i ? "," : "", prefix, i, i);
    sb_puts(&conf, ");\n");
    return sb_steal(&conf);
}

/*
 * The route table of /status is rendered in slices with the loop's other work in between
 * (10,000 routes take about 20 ms in one go here, more under ASan), and the slices make one
 * document: the same as adminhttp_status_json writes in one go.
 */
START_TEST(test_a_status_with_many_routes_is_cut_into_slices)
{
    enum { N = 10000 };
    struct sbuf whole;
    struct event *ev;
    unsigned passes;
    json_t *st, *direct, *routes;
    json_error_t e;
    int sp[2];
    char *text = many_routes(N, "r"), *log, name[16];

    ck_assert_msg(start_with(text, &log) == VEER_OK, "%s", log);
    free(log);
    free(text);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "x", 1), 1);
    memset(&other, 0, sizeof(other));
    ev = event_new(fx.base, sp[0], EV_READ | EV_PERSIST, other_work_cb, NULL);
    event_add(ev, NULL);
    adminhttp_set_render_slice(1);
    passes = other.passes;
    st = get_status();
    /* In one callback it would be 3 or 4 passes: 10,000 routes at 16 a slice are hundreds. */
    ck_assert_msg(other.passes - passes >= 100, "only %u passes of other work during the render",
                  other.passes - passes);
    event_free(ev);
    close(sp[0]);
    close(sp[1]);
    check_shapes(st);
    routes = member(st, "routes");
    ck_assert_uint_eq(json_array_size(routes), N);
    for (unsigned i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "r%u", i);
        ck_assert_str_eq(str_of(json_array_get(routes, i), "name"), name);
    }
    sb_init(&whole);
    adminhttp_status_json(&whole);
    direct = json_loadb(whole.s, whole.len, 0, &e);
    ck_assert_msg(direct != NULL, "%s", e.text);
    sb_free(&whole);
    json_object_del(direct, "uptime_s");
    json_object_del(st, "uptime_s");
    ck_assert(json_equal(direct, st));
    json_decref(direct);
    json_decref(st);
}
END_TEST

/* Swap the model adminhttp shows (as a reload's new table) on the 20th pass of the loop. */
static void swap_model_cb(evutil_socket_t fd, short what, void *arg)
{
    if (++other.passes == 20)
        adminhttp_set_model(fx.m2);
}

/*
 * When the route table changes between two slices (a reload, another model), the render
 * starts over: the document is the new model's alone, its head and its routes, none of the
 * old table's and none twice. (Rendering 10,000 routes takes hundreds of slices of 16; the
 * swap comes 20 passes after the request, in the middle of it.)
 */
START_TEST(test_a_status_render_restarts_when_the_route_table_changes)
{
    enum { N = 10000 };
    struct event *ev;
    json_t *st, *routes;
    int sp[2];
    char *text = many_routes(N, "r"), *log, name[16];

    ck_assert_msg(start_with(text, &log) == VEER_OK, "%s", log);
    free(log);
    free(text);
    text = many_routes(N / 2, "s");
    fx.c2 = load_ok(text);
    free(text);
    fx.m2 = model_from_conf(fx.c2);
    fx.m2->generation = 9;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "x", 1), 1);
    memset(&other, 0, sizeof(other));
    adminhttp_set_render_slice(1);
    ev = event_new(fx.base, sp[0], EV_READ | EV_PERSIST, swap_model_cb, NULL);
    event_add(ev, NULL);
    st = get_status();
    ck_assert_uint_ge(other.passes, 20);
    event_free(ev);
    close(sp[0]);
    close(sp[1]);
    check_shapes(st);
    ck_assert_int_eq(int_of(st, "generation"), 9);
    routes = member(st, "routes");
    ck_assert_uint_eq(json_array_size(routes), N / 2);
    for (unsigned i = 0; i < N / 2; i++) {
        snprintf(name, sizeof(name), "s%u", i);
        ck_assert_str_eq(str_of(json_array_get(routes, i), "name"), name);
    }
    json_decref(st);
}
END_TEST

/*
 * A pool's maintenance says what it answers with: its own Retry-After and hold, else every
 * pool's, 0 when off; rollout_plan is null for a pool that never had a rollout.
 */
START_TEST(test_status_pool_maintenance_says_retry_after_and_hold)
{
    json_t *st;

    start(NULL);
    fx.m->pools[1].maint = true; /* maintenance on hc --retry-after 30 --hold 2s */
    fx.m->pools[1].maint_retry_after = 30;
    fx.m->pools[1].maint_hold_ms = 2000;
    st = get_status();
    ck_assert(bool_of(pool_of(st, "hc"), "maintenance"));
    ck_assert_int_eq(int_of(pool_of(st, "hc"), "maintenance_retry_after"), 30);
    ck_assert_int_eq(int_of(pool_of(st, "hc"), "maintenance_hold_ms"), 2000);
    ck_assert(!bool_of(pool_of(st, "api"), "maintenance"));
    ck_assert_int_eq(int_of(pool_of(st, "api"), "maintenance_retry_after"), 0);
    ck_assert_int_eq(int_of(pool_of(st, "api"), "maintenance_hold_ms"), 0);
    ck_assert(json_is_null(member(pool_of(st, "api"), "rollout_plan")));
    json_decref(st);
    fx.m->maint = true; /* maintenance on --retry-after 5: every pool, hc keeps its own */
    fx.m->maint_retry_after = 5;
    st = get_status();
    ck_assert(bool_of(pool_of(st, "api"), "maintenance"));
    ck_assert_int_eq(int_of(pool_of(st, "api"), "maintenance_retry_after"), 5);
    ck_assert_int_eq(int_of(pool_of(st, "api"), "maintenance_hold_ms"), 0);
    ck_assert_int_eq(int_of(pool_of(st, "hc"), "maintenance_retry_after"), 30);
    json_decref(st);
}
END_TEST

/* --- the history (/status?history=1) ------------------------------------------------ */

/*
 * n more seconds of figures in every ring of fx.m, as stats_tick would leave them: second s
 * of group g (counted over the pools) has rps 1000 * g + s, error rate s / 10000 and p99 the
 * bound of bucket s % LAT_BUCKETS; route r has rps 5000 + 1000 * r + s.
 */
static void history_push(struct model *m, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        unsigned gi = 0;

        m->seconds++;
        for (uint32_t p = 0; p < m->npools; p++)
            for (uint32_t g = 0; g < m->pools[p].ng; g++, gi++) {
                struct rate r = {.rps = 1000.0 * gi + (double)m->seconds,
                                 .error_rate = (double)(m->seconds % 10000) / 10000.0,
                                 .p99_ms = lat_bounds[m->seconds % LAT_BUCKETS] * 1000.0};

                stats_ring_push(&m->pools[p].g[g].ring, &r);
            }
        for (uint32_t i = 0; i < m->nroutes; i++) {
            struct rate r = {.rps = 5000.0 + 1000.0 * i + (double)m->seconds};

            stats_ring_push(&m->routes[i].ring, &r);
        }
    }
}

static json_t *get_json(const char *target, int want_code)
{
    struct resp r;
    json_error_t e;
    json_t *j;

    request("GET", target, &r);
    ck_assert_msg(r.code == want_code, "%s: %d", target, r.code);
    if (want_code != 200) {
        resp_free(&r);
        return NULL;
    }
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    j = json_loadb(r.body, r.body_len, 0, &e);
    ck_assert_msg(j != NULL, "%s is not JSON (%s): %s", target, e.text, r.body);
    resp_free(&r);
    return j;
}

/*
 * One series of a history: first is its first second, its three arrays as long as count, the
 * values those history_push wrote for group (or route) index gi at each second.
 */
static void check_series(json_t *s, uint64_t first, unsigned count, double rps_base, bool group)
{
    json_t *rps = member(s, "rps"), *err = member(s, "error_rate"), *p99 = member(s, "p99_ms");

    ck_assert_int_eq(int_of(s, "first"), (json_int_t)first);
    ck_assert_uint_eq(json_array_size(rps), count);
    ck_assert_uint_eq(json_array_size(err), count);
    ck_assert_uint_eq(json_array_size(p99), count);
    for (unsigned k = 0; k < count; k++) {
        uint64_t sec = first + k;

        ck_assert_double_eq_tol(json_number_value(json_array_get(rps, k)), rps_base + (double)sec,
                                1e-9);
        if (!group)
            continue;
        ck_assert_double_eq_tol(json_number_value(json_array_get(err, k)),
                                (double)(sec % 10000) / 10000.0, 1e-9);
        ck_assert_double_eq_tol(json_number_value(json_array_get(p99, k)),
                                lat_bounds[sec % LAT_BUCKETS] * 1000.0, 1e-9);
    }
}

static void check_history(json_t *h, uint64_t second, uint64_t since, uint64_t first,
                          unsigned count)
{
    json_t *pools = member(h, "pools"), *routes = member(h, "routes");

    ck_assert_int_eq(int_of(h, "second"), (json_int_t)second);
    ck_assert_int_eq(int_of(h, "since"), (json_int_t)since);
    ck_assert_int_eq(int_of(h, "capacity"), STATS_HISTORY);
    ck_assert_int_eq(int_of(h, "interval_s"), 1);
    ck_assert_uint_eq(json_array_size(pools), 2);
    ck_assert_str_eq(str_of(json_array_get(pools, 0), "name"), "api");
    ck_assert_str_eq(str_of(json_array_get(pools, 1), "name"), "hc");
    check_series(named(member(json_array_get(pools, 0), "groups"), "blue"), first, count, 0, true);
    check_series(named(member(json_array_get(pools, 0), "groups"), "green"), first, count, 1000,
                 true);
    check_series(named(member(json_array_get(pools, 1), "groups"), "default"), first, count, 2000,
                 true);
    ck_assert_uint_eq(json_array_size(routes), 2);
    check_series(named(routes, "payments"), first, count, 5000, false);
    check_series(named(routes, "login"), first, count, 6000, false);
}

/*
 * /status?history=1 is /status with a "history" member: the seconds held of every group and
 * route, oldest first, each series ending at "second"; &since=N gives only the seconds after
 * N (none when N is the last). /status itself stays as it was, and a since that is not a
 * number is refused.
 */
START_TEST(test_status_history_is_there_only_when_asked)
{
    json_t *st;

    start(ROUTES);
    history_push(fx.m, 5);
    st = get_json("/status", 200);
    ck_assert_ptr_null(json_object_get(st, "history"));
    json_decref(st);
    st = get_json("/status?history=0", 200);
    ck_assert_ptr_null(json_object_get(st, "history"));
    json_decref(st);

    st = get_json("/status?history=1", 200);
    check_shapes(st);
    ck_assert_uint_eq(json_array_size(member(st, "routes")), 2);
    check_history(member(st, "history"), 5, 0, 1, 5);
    json_decref(st);
    st = get_json("/status?history=1&since=3", 200);
    check_history(member(st, "history"), 5, 3, 4, 2);
    json_decref(st);
    st = get_json("/status?since=0&history=1", 200);
    check_history(member(st, "history"), 5, 0, 1, 5);
    json_decref(st);
    st = get_json("/status?history=1&since=5", 200);
    check_history(member(st, "history"), 5, 5, 6, 0);
    json_decref(st);
    st = get_json("/status?history=1&since=99", 200); /* a page ahead of this veer: nothing */
    check_history(member(st, "history"), 5, 99, 6, 0);
    json_decref(st);
    get_json("/status?history=1&since=abc", 400);
    get_json("/status?history=1&since=-1", 400);
    get_json("/status?history=1&since=99999999999999999999999", 400);
}
END_TEST

/* Past STATS_HISTORY seconds only the last ones are there, the oldest first. */
START_TEST(test_status_history_holds_the_last_300_seconds)
{
    json_t *st;

    start(ROUTES);
    history_push(fx.m, STATS_HISTORY + 10);
    st = get_json("/status?history=1", 200);
    check_history(member(st, "history"), STATS_HISTORY + 10, 0, 11, STATS_HISTORY);
    json_decref(st);
    st = get_json("/status?history=1&since=3", 200); /* older than what is held */
    check_history(member(st, "history"), STATS_HISTORY + 10, 3, 11, STATS_HISTORY);
    json_decref(st);
}
END_TEST

/* A second taken on the 20th pass of the loop, in the middle of a sliced render. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    if (++other.passes == 20)
        history_push(fx.m, 1);
}

/*
 * With many routes the history is rendered in slices too (other work runs between them), and
 * every series ends at the second the render began with, even when a second is taken in the
 * middle of it; once done it is what one render in one go writes.
 */
START_TEST(test_a_status_history_is_cut_into_slices_at_one_second)
{
    enum { N = 2000 };
    struct event *ev;
    struct sbuf whole;
    json_t *st, *direct, *routes;
    json_error_t e;
    int sp[2];
    char *text = many_routes(N, "r"), *log;

    ck_assert_msg(start_with(text, &log) == VEER_OK, "%s", log);
    free(log);
    free(text);
    history_push(fx.m, 30);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "x", 1), 1);
    memset(&other, 0, sizeof(other));
    ev = event_new(fx.base, sp[0], EV_READ | EV_PERSIST, tick_cb, NULL);
    event_add(ev, NULL);
    adminhttp_set_render_slice(1);
    st = get_json("/status?history=1&since=10", 200);
    /* 2,000 routes at 16 (then 8) a slice: far more passes than 20. */
    ck_assert_uint_ge(other.passes, 100);
    event_free(ev);
    close(sp[0]);
    close(sp[1]);
    ck_assert_int_eq(fx.m->seconds, 31); /* the second was taken during the render */
    routes = member(member(st, "history"), "routes");
    ck_assert_uint_eq(json_array_size(routes), N);
    for (unsigned i = 0; i < N; i++)
        check_series(json_array_get(routes, i), 11, 20, 5000.0 + 1000.0 * i, false);
    /* Now in one go (second 31): the same but one more point per series. */
    sb_init(&whole);
    adminhttp_status_history_json(&whole, 10);
    direct = json_loadb(whole.s, whole.len, 0, &e);
    ck_assert_msg(direct != NULL, "%s", e.text);
    sb_free(&whole);
    check_series(json_array_get(member(member(direct, "history"), "routes"), N - 1), 11, 21,
                 5000.0 + 1000.0 * (N - 1), false);
    json_decref(direct);
    json_decref(st);
}
END_TEST

/*
 * Pools of many groups are cut into slices too: 3 pools of 400 groups (one backend each),
 * with 300 seconds each (2.4 MB of rings, megabytes of JSON); the document served in slices
 * is the one rendered in one go, every pool whole and in order.
 */
START_TEST(test_a_status_history_of_many_groups_is_cut_into_slices)
{
    enum { NPOOLS = 3, NGROUPS = 400 };
    struct sbuf conf, whole;
    struct event *ev;
    json_t *st, *direct, *pools;
    json_error_t e;
    int sp[2];
    char *log;

    sb_init(&conf);
    sb_puts(&conf,
            "listen = ( { address = \"127.0.0.1:0\"; pool = \"p0\"; } );\n" ADMIN "pools = (");
    for (unsigned p = 0; p < NPOOLS; p++) {
        sb_printf(&conf, "%s{ name = \"p%u\"; backends = (", p ? "," : "", p);
        for (unsigned g = 0; g < NGROUPS; g++)
            sb_printf(&conf,
                      "%s{ name = \"b%u\"; address = \"127.0.0.1:%u\"; weight = 1;"
                      " group = \"g%u\"; }",
                      g ? "," : "", g, 1000 + g, g);
        sb_puts(&conf, "); }");
    }
    sb_puts(&conf, ");\n");
    ck_assert_msg(start_with(conf.s, &log) == VEER_OK, "%s", log);
    free(log);
    sb_free(&conf);
    history_push(fx.m, STATS_HISTORY);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "x", 1), 1);
    memset(&other, 0, sizeof(other));
    ev = event_new(fx.base, sp[0], EV_READ | EV_PERSIST, other_work_cb, NULL);
    event_add(ev, NULL);
    adminhttp_set_render_slice(1);
    st = get_json("/status?history=1", 200);
    /* 1,200 groups at 8 a slice. */
    ck_assert_msg(other.passes >= 100, "only %u passes of other work", other.passes);
    event_free(ev);
    close(sp[0]);
    close(sp[1]);
    pools = member(member(st, "history"), "pools");
    ck_assert_uint_eq(json_array_size(pools), NPOOLS);
    for (unsigned p = 0; p < NPOOLS; p++) {
        json_t *groups = member(json_array_get(pools, p), "groups");
        char name[16];

        snprintf(name, sizeof(name), "p%u", p);
        ck_assert_str_eq(str_of(json_array_get(pools, p), "name"), name);
        ck_assert_uint_eq(json_array_size(groups), NGROUPS);
        for (unsigned g = 0; g < NGROUPS; g++) {
            snprintf(name, sizeof(name), "g%u", g);
            ck_assert_str_eq(str_of(json_array_get(groups, g), "name"), name);
            check_series(json_array_get(groups, g), 1, STATS_HISTORY, 1000.0 * (p * NGROUPS + g),
                         true);
        }
    }
    sb_init(&whole);
    adminhttp_status_history_json(&whole, 0);
    direct = json_loadb(whole.s, whole.len, 0, &e);
    ck_assert_msg(direct != NULL, "%s", e.text);
    sb_free(&whole);
    json_object_del(direct, "uptime_s");
    json_object_del(st, "uptime_s");
    ck_assert(json_equal(direct, st));
    json_decref(direct);
    json_decref(st);
}
END_TEST

/* A scraper that leaves before its turn costs nothing, and stop frees what still waits. */
START_TEST(test_scrapes_whose_client_left_are_dropped)
{
    static const char get[] = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    enum { N = 6 };
    int fds[N];

    start(NULL);
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect();
        raw_send(fds[i], get);
    }
    RUN_UNTIL(adminhttp_connections() == N, WAIT_MS);
    for (int i = 0; i < N; i += 2)
        close(fds[i]);
    RUN_UNTIL(raw_has_data(fds[1]) && raw_has_data(fds[3]) && raw_has_data(fds[5]), WAIT_MS);
    RUN_UNTIL(adminhttp_connections() == N / 2, WAIT_MS);
    raw_send(fds[1], get);
    raw_send(fds[3], get);
    adminhttp_stop(); /* with requests possibly still queued: ASan says nothing is left */
    for (int i = 1; i < N; i += 2)
        close(fds[i]);
}
END_TEST

/* --- stop, no address, failures -------------------------------------------------------- */

START_TEST(test_stop_closes_the_listener_and_open_connections)
{
    struct client *idle, *partial;
    struct resp r;

    start(NULL);
    request("GET", "/status", &r);
    ck_assert_int_eq(r.code, 200);
    resp_free(&r);
    /* One connection between requests (keep-alive), one in the middle of a head. */
    idle = client_open(NULL);
    client_puts(idle, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(evbuffer_search(idle->in, "\r\n\r\n{", 5, NULL).pos >= 0, WAIT_MS);
    partial = client_open(NULL);
    client_puts(partial, "GET /metrics HTTP/1.1\r\n");
    RUN_UNTIL(partial->connected, WAIT_MS);
    ck_assert(!connect_refused());

    adminhttp_stop();
    ck_assert(connect_refused());
    RUN_UNTIL(idle->done && partial->done, WAIT_MS);
    adminhttp_stop(); /* twice is harmless */
    ck_assert(connect_refused());
}
END_TEST

START_TEST(test_stop_then_start_again_serves_again)
{
    json_t *st;

    start(NULL);
    adminhttp_stop();
    ck_assert(connect_refused());
    fx.m->generation = 3;
    ck_assert_int_eq(start_only(NULL), VEER_OK);
    ck_assert_int_gt(fx.port, 0);
    st = get_status();
    ck_assert_int_eq(int_of(st, "generation"), 3);
    json_decref(st);
}
END_TEST

START_TEST(test_without_admin_http_nothing_listens_but_status_json_works)
{
    struct sbuf o;
    json_t *st;
    json_error_t e;
    char *log;

    ck_assert_int_eq(start_with(LISTEN POOLS, &log), VEER_OK);
    ck_assert_msg(strstr(log, "admin http") == NULL, "logged: %s", log);
    free(log);
    sb_init(&o);
    adminhttp_status_json(&o); /* what `show status` replies on the admin socket */
    st = json_loadb(o.s, o.len, 0, &e);
    ck_assert_msg(st != NULL, "%s: %s", e.text, o.s);
    check_shapes(st);
    ck_assert_int_eq(int_of(st, "workers"), NW);
    ck_assert_int_eq(int_of(group_of(st, "api", "blue"), "share"), 80);
    json_decref(st);
    sb_free(&o);
    adminhttp_stop(); /* nothing to stop */
}
END_TEST

/* A listening socket on 127.0.0.1, on an ephemeral port. */
static int occupy(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

START_TEST(test_a_port_in_use_fails_naming_address_and_reason)
{
    char text[4096], want[128];
    char *log;
    int port, fd = occupy(&port);
    json_t *st;

    snprintf(text, sizeof(text), LISTEN POOLS "admin = { http = \"127.0.0.1:%d\"; };\n", port);
    ck_assert_int_eq(start_with(text, &log), VEER_ERROR);
    snprintf(want, sizeof(want), "admin.http 127.0.0.1:%d: cannot listen: %s", port,
             strerror(EADDRINUSE));
    ck_assert_msg(strstr(log, want) != NULL, "log lacks \"%s\":\n%s", want, log);
    ck_assert_ptr_null(strstr(log, "admin http on"));
    free(log);
    close(fd);
    /* Nothing left half started: a start on a free port works and serves. */
    model_free(fx.m);
    conf_free(fx.c);
    fx.m = NULL;
    fx.c = NULL;
    start(NULL);
    st = get_status();
    ck_assert_int_eq(int_of(st, "workers"), NW);
    json_decref(st);
}
END_TEST

START_TEST(test_an_address_not_on_this_host_fails_naming_it)
{
    char *log, want[128];

    /* 192.0.2.0/24 is TEST-NET-1: never a local address. */
    ck_assert_int_eq(start_with(LISTEN POOLS "admin = { http = \"192.0.2.1:9900\"; };\n", &log),
                     VEER_ERROR);
    snprintf(want, sizeof(want), "admin.http 192.0.2.1:9900: cannot listen: %s",
             strerror(EADDRNOTAVAIL));
    ck_assert_msg(strstr(log, want) != NULL, "log lacks \"%s\":\n%s", want, log);
    free(log);
}
END_TEST

START_TEST(test_a_malformed_address_is_a_config_error_with_its_line)
{
    static const char *const bad[] = {"db.internal:9900", "127.0.0.1", "127.0.0.1:65536",
                                      "127.0.0.1:-1",     "::1:9900",  "1.2.3:9900"};

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char text[4096], err[512] = "";
        struct veer_conf *c;

        snprintf(text, sizeof(text), LISTEN POOLS "admin = {\n  http = \"%s\"; };\n", bad[i]);
        c = load(text, err, sizeof(err));
        ck_assert_msg(c == NULL, "%s accepted", bad[i]);
        /* FILE:LINE: ...: line 4, where http is. */
        ck_assert_msg(strstr(err, ":4: ") != NULL, "%s: %s", bad[i], err);
        ck_assert_msg(strstr(err, "admin.http") != NULL, "%s: %s", bad[i], err);
    }
}
END_TEST

START_TEST(test_localhost_is_127_0_0_1_never_resolved)
{
    char *log;
    json_t *st;

    ck_assert_int_eq(start_with(LISTEN POOLS "admin = { http = \"localhost:0\"; };\n", &log),
                     VEER_OK);
    ck_assert_msg(strstr(log, "admin http on 127.0.0.1:") != NULL, "log: %s", log);
    free(log);
    st = get_status();
    ck_assert_int_eq(int_of(st, "workers"), NW);
    json_decref(st);
}
END_TEST

START_TEST(test_ipv6_loopback_is_served_and_logged_as_such)
{
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    char *log;
    json_t *st;

    if (probe < 0 || bind(probe, (struct sockaddr *)&s6, sizeof(s6)) < 0) {
        const char *no6 = getenv("VEER_NO_IPV6");

        /* A skip must be asked for: otherwise a CI without ::1 passes untested. */
        ck_assert_msg(no6 && strcmp(no6, "1") == 0,
                      "no IPv6 loopback here (%s); set VEER_NO_IPV6=1 where there is none",
                      strerror(errno));
        fprintf(stderr, "check_adminhttp: VEER_NO_IPV6=1, IPv6 test skipped\n");
        if (probe >= 0)
            close(probe);
        return;
    }
    close(probe);
    ck_assert_int_eq(start_with(LISTEN POOLS "admin = { http = \"[::1]:0\"; };\n", &log), VEER_OK);
    ck_assert_msg(strstr(log, "admin http on [::1]:") != NULL, "log: %s", log);
    free(log);
    ck_assert_str_eq(fx.host, "[::1]");
    st = get_status();
    ck_assert_int_eq(int_of(st, "generation"), 1);
    json_decref(st);
}
END_TEST

/* --- admin.http_tls ----------------------------------------------------------------- */

static char dir[] = "/tmp/veer-check-adminhttp-XXXXXX";

struct cert {
    X509 *x;
    EVP_PKEY *k;
};

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    ck_assert_ptr_nonnull(e);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* NAME.pem / NAME.key in dir: a P-256 certificate signed by issuer (self-signed without). */
static struct cert make_cert(const char *name, const struct cert *issuer, bool ca)
{
    static long serial = 1;
    struct cert c = {X509_new(), EVP_EC_gen("P-256")};
    X509_NAME *n;
    char path[256];
    FILE *f;

    ck_assert_ptr_nonnull(c.k);
    X509_set_version(c.x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c.x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c.x), -60);
    X509_gmtime_adj(X509_getm_notAfter(c.x), 86400);
    X509_set_pubkey(c.x, c.k);
    n = X509_get_subject_name(c.x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(c.x, issuer ? X509_get_subject_name(issuer->x) : n);
    if (ca) {
        add_ext(c.x, issuer ? issuer->x : c.x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(c.x, issuer ? issuer->x : c.x, NID_key_usage, "critical,keyCertSign,cRLSign");
    }
    ck_assert_int_gt(X509_sign(c.x, issuer ? issuer->k : c.k, EVP_sha256()), 0);
    snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_X509(f, c.x);
    fclose(f);
    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_PrivateKey(f, c.k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return c;
}

static void cert_free(struct cert *c)
{
    X509_free(c->x);
    EVP_PKEY_free(c->k);
}

/* ca signs the server's certificate (admin) and an operator's (ops); rogue signs itself. */
static void tls_setup(void)
{
    struct cert ca, admin, ops, rogue;

    setup();
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ca = make_cert("ca", NULL, true);
    admin = make_cert("admin", &ca, false);
    ops = make_cert("ops", &ca, false);
    rogue = make_cert("rogue", NULL, false);
    cert_free(&ca);
    cert_free(&admin);
    cert_free(&ops);
    cert_free(&rogue);
}

static void tls_teardown(void)
{
    char cmd[300];

    teardown();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    strcpy(dir, "/tmp/veer-check-adminhttp-XXXXXX");
}

/* The admin address over TLS (client certificates required with client_ca), prepared. */
static void start_tls(bool client_ca, const char *extra)
{
    char text[4096], err[512] = "", *log;

    snprintf(text, sizeof(text),
             LISTEN POOLS "admin = { http = \"127.0.0.1:0\";\n"
                          "  http_tls = { cert = \"%s/admin.pem\"; key = \"%s/admin.key\"; "
                          "%s%s%s }; };\n%s",
             dir, dir, client_ca ? "client_ca = \"" : "", client_ca ? dir : "",
             client_ca ? "/ca.pem\";" : "", extra ? extra : "");
    fx.c = load_ok(text);
    ck_assert_msg(tls_conf_prepare(fx.c, err, sizeof(err)) == VEER_OK, "%s", err);
    fx.m = model_from_conf(fx.c);
    ck_assert_int_eq(start_only(&log), VEER_OK);
    ck_assert_str_eq(fx.host, "127.0.0.1");
    ck_assert_msg(strstr(log, client_ca ? "; TLS, client certificates required)" : "; TLS)"), "%s",
                  log);
    free(log);
}

/* A TLS client checking the server against ca.pem, presenting NAME.pem when name is set. */
static SSL *client_ssl(const char *name)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char path[256], key[256];
    SSL *ssl;

    ck_assert_ptr_nonnull(ctx);
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, path, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (name) {
        snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
        snprintf(key, sizeof(key), "%s/%s.key", dir, name);
        ck_assert_int_eq(SSL_CTX_use_certificate_file(ctx, path, SSL_FILETYPE_PEM), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    }
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL keeps its reference */
    ck_assert_ptr_nonnull(ssl);
    return ssl;
}

/* GET /status over TLS as `name`; the client is left for the caller to look at. */
static struct client *tls_get_status(const char *name)
{
    static const char raw[] = "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct client *c = client_open(client_ssl(name));
    size_t len;

    client_send(c, raw, sizeof(raw) - 1);
    client_wait(c, &len);
    return c;
}

static void expect_status_200(struct client *c)
{
    size_t len = evbuffer_get_length(c->in), off = 0;
    const char *data = (const char *)evbuffer_pullup(c->in, -1);
    struct resp r;
    json_t *j;
    json_error_t e;

    ck_assert_msg(c->connected, "no handshake");
    parse_resp(data, len, &off, false, &r);
    ck_assert_int_eq(r.code, 200);
    j = json_loadb(r.body, r.body_len, 0, &e);
    ck_assert_msg(j != NULL, "%s", e.text);
    check_shapes(j);
    ck_assert_int_eq(int_of(group_of(j, "api", "blue"), "share"), 80);
    json_decref(j);
    resp_free(&r);
}

static void expect_refused(struct client *c, const char *who)
{
    ck_assert_msg(evbuffer_get_length(c->in) == 0, "%s: got %zu bytes", who,
                  evbuffer_get_length(c->in));
    ck_assert_msg(c->error, "%s: no TLS error", who);
    ck_assert_msg(c->ssl_err != 0, "%s: closed without a TLS alert", who);
}

START_TEST(test_tls_client_certificate_signed_by_client_ca_is_served)
{
    start_tls(true, NULL);
    expect_status_200(tls_get_status("ops"));
}
END_TEST

START_TEST(test_tls_without_a_client_certificate_is_refused)
{
    struct client *c;

    start_tls(true, NULL);
    c = tls_get_status(NULL);
    expect_refused(c, "no certificate");
    ck_assert_int_eq(ERR_GET_REASON(c->ssl_err), SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);
    /* And the address still serves the next one. */
    expect_status_200(tls_get_status("ops"));
}
END_TEST

START_TEST(test_tls_client_certificate_from_another_ca_is_refused)
{
    struct client *c;

    start_tls(true, NULL);
    c = tls_get_status("rogue");
    expect_refused(c, "rogue certificate");
    ck_assert_int_eq(ERR_GET_REASON(c->ssl_err), SSL_R_TLSV1_ALERT_UNKNOWN_CA);
}
END_TEST

START_TEST(test_tls_without_client_ca_serves_any_client_and_never_plain_http)
{
    struct client *c;
    size_t len;
    const char *data;

    start_tls(false, NULL);
    expect_status_200(tls_get_status(NULL));
    /* Plain HTTP on the TLS address gets no HTTP answer. */
    c = client_open(NULL);
    client_puts(c, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    data = client_wait(c, &len);
    ck_assert_msg(len < 5 || memcmp(data, "HTTP/", 5) != 0, "plain HTTP answered: %.*s", (int)len,
                  data);
}
END_TEST

START_TEST(test_tls_a_handshake_that_never_comes_is_cut_off)
{
    struct client *quiet, *c;

    start_tls(true, "timeouts = { client_header_ms = 300; };\n");
    quiet = client_open(NULL); /* connects, never says hello */
    RUN_UNTIL(quiet->done, WAIT_MS);
    ck_assert_uint_eq(evbuffer_get_length(quiet->in), 0);
    c = tls_get_status("ops");
    expect_status_200(c);
}
END_TEST

START_TEST(test_tls_without_a_prepared_context_is_refused_not_served_plain)
{
    char text[4096], *log;
    int rc;

    /* http_tls configured but tls_conf_prepare never ran: no context to make connections. */
    snprintf(text, sizeof(text),
             LISTEN POOLS "admin = { http = \"127.0.0.1:0\";\n"
                          "  http_tls = { cert = \"%s/admin.pem\"; key = \"%s/admin.key\"; }; };\n",
             dir, dir);
    rc = start_with(text, &log);
    if (rc == VEER_OK && fx.port > 0) {
        struct resp r;

        request("GET", "/status", &r);
        resp_free(&r);
        ck_abort_msg("admin.http_tls served plain HTTP (%d): %s", r.code, log);
    }
    ck_assert_int_eq(rc, VEER_ERROR);
    ck_assert_msg(strstr(log, "admin.http_tls") != NULL, "log: %s", log);
    free(log);
}
END_TEST

static Suite *adminhttp_suite(void)
{
    Suite *s = suite_create("adminhttp");
    TCase *tm = tcase_create("metrics");
    TCase *ts = tcase_create("status");
    TCase *th = tcase_create("http");
    TCase *tl = tcase_create("limits");
    TCase *tc = tcase_create("lifecycle");
    TCase *tt = tcase_create("tls");

    tcase_add_checked_fixture(tm, setup, teardown);
    tcase_add_test(tm, test_metrics_is_prometheus_text_with_the_contract_families);
    tcase_add_test(tm, test_metrics_follow_the_model_between_scrapes);
    tcase_add_checked_fixture(ts, setup, teardown);
    tcase_add_test(ts, test_status_is_json_with_pools_groups_and_backends_of_the_model);
    tcase_add_test(ts, test_status_shows_states_drains_circuits_rates_and_maintenance);
    tcase_add_test(ts, test_status_rates_are_zero_before_the_first_stats_tick);
    tcase_add_test(ts, test_status_pool_maintenance_says_retry_after_and_hold);
    tcase_add_test(ts, test_status_history_is_there_only_when_asked);
    tcase_add_test(ts, test_status_history_holds_the_last_300_seconds);
    tcase_add_test(ts, test_status_names_are_json_escaped);
    tcase_add_test(ts, test_set_model_swaps_what_status_and_metrics_show);
    tcase_add_test(ts, test_status_json_is_what_the_address_serves);
    tcase_add_test(ts, test_status_lists_the_routes_with_match_pool_state_and_figures);
    tcase_add_checked_fixture(th, setup, teardown);
    tcase_add_test(th, test_page_is_self_contained_html_refreshing_from_status);
    tcase_add_test(th, test_unknown_paths_are_404);
    tcase_add_test(th, test_query_strings_do_not_change_the_route);
    tcase_add_test(th, test_head_gives_the_head_without_a_body);
    tcase_add_test(th, test_other_methods_are_405_with_allow);
    tcase_add_test(th, test_pipelined_requests_on_one_connection_are_answered_in_order);
    tcase_add_checked_fixture(tl, setup, teardown);
    tcase_add_test(tl, test_a_huge_declared_body_is_refused_at_once);
    tcase_add_test(tl, test_an_endless_head_is_cut_off);
    tcase_add_test(tl, test_a_silent_connection_is_closed);
    tcase_add_test(tl, test_connections_over_the_cap_wait_until_one_closes);
    tcase_add_test(tl, test_scrapes_are_rendered_one_per_loop_pass);
    tcase_add_test(tl, test_scrapes_whose_client_left_are_dropped);
    tcase_add_test(tl, test_a_big_render_is_cut_into_slices);
    tcase_add_test(tl, test_a_status_with_many_routes_is_cut_into_slices);
    tcase_add_test(tl, test_a_status_render_restarts_when_the_route_table_changes);
    tcase_add_test(tl, test_a_status_history_is_cut_into_slices_at_one_second);
    tcase_add_test(tl, test_a_status_history_of_many_groups_is_cut_into_slices);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_stop_closes_the_listener_and_open_connections);
    tcase_add_test(tc, test_stop_then_start_again_serves_again);
    tcase_add_test(tc, test_without_admin_http_nothing_listens_but_status_json_works);
    tcase_add_test(tc, test_a_port_in_use_fails_naming_address_and_reason);
    tcase_add_test(tc, test_an_address_not_on_this_host_fails_naming_it);
    tcase_add_test(tc, test_a_malformed_address_is_a_config_error_with_its_line);
    tcase_add_test(tc, test_localhost_is_127_0_0_1_never_resolved);
    tcase_add_test(tc, test_ipv6_loopback_is_served_and_logged_as_such);
    tcase_add_checked_fixture(tt, tls_setup, tls_teardown);
    tcase_add_test(tt, test_tls_client_certificate_signed_by_client_ca_is_served);
    tcase_add_test(tt, test_tls_without_a_client_certificate_is_refused);
    tcase_add_test(tt, test_tls_client_certificate_from_another_ca_is_refused);
    tcase_add_test(tt, test_tls_without_client_ca_serves_any_client_and_never_plain_http);
    tcase_add_test(tt, test_tls_a_handshake_that_never_comes_is_cut_off);
    tcase_add_test(tt, test_tls_without_a_prepared_context_is_refused_not_served_plain);
    suite_add_tcase(s, tm);
    suite_add_tcase(s, ts);
    suite_add_tcase(s, th);
    suite_add_tcase(s, tl);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tt);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(adminhttp_suite());
    int failed;

    /* Fresh allocations filled with 0x7f (a huge double): what is never set shows. */
    mallopt(M_PERTURB, 0x80);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
