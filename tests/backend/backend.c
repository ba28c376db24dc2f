/*
 * veer-backend: a small single-threaded HTTP backend for demos, tests and benchmarks (evhttp).
 *
 *   veer-backend --name NAME --listen HOST:PORT [--port-file FILE] [--variant] [--delay-ms N]
 *
 * Every response carries "X-Backend: NAME". Routes: /delay?ms=N (200 "NAME\n" after N ms, on a
 * timer), /status?code=N, /size?bytes=N (streamed in 64 KiB chunks), /echo (the request body),
 * /api/health/readiness (200 "ready"), anything else 200 "NAME\n". With port 0 the kernel picks
 * the port: it is printed as "listening on HOST:PORT" and written atomically to --port-file.
 * --delay-ms N holds every request N ms (on a timer) before it is routed as above: a slow copy of
 * a service (bench/mirror's slow standby).
 * SIGTERM and SIGINT end the loop; everything is freed before exit.
 *
 * Paths under /v/ are for comparing two backends (the mirroring tests): /v/status/... answers
 * 200, or 503 with --variant; /v/body/... answers "NAME\n", or "NAME variant\n" with --variant;
 * /v/type/... answers text/plain, or text/html with --variant; /v/etag/... answers ETag "a", or
 * "b" with --variant. Everything else is the same with or without --variant.
 */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#define CHUNK_BYTES  (64 * 1024)
#define MAX_DELAY_MS (3600LL * 1000)
#define JOB_MAGIC    0x6a6f6231u

static const char *backend_name = "backend";
static int variant;
static long long delay_all_ms;
static char chunk[CHUNK_BYTES];

/* A reply that outlives the request callback (a delay or a streamed body). It is freed when the
 * reply ends or when the client connection goes away, whichever comes first. */
struct job {
    unsigned magic;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *timer;
    struct event_base *base;
    long long remaining;
};

static void job_free(struct job *job)
{
    if (job->evcon != NULL)
        evhttp_connection_set_closecb(job->evcon, NULL, NULL);
    if (job->timer != NULL)
        event_free(job->timer);
    job->magic = 0;
    free(job);
}

/* The connection is going away (client gone, or shutdown) before the reply ended. evhttp detaches
 * an unfinished request from a failed connection and leaves it to us; a request still attached is
 * freed by evhttp right after this callback. */
static void job_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct job *job = arg;

    (void)evcon;
    if (job == NULL || job->magic != JOB_MAGIC)
        abort();
    if (evhttp_request_get_connection(job->req) == NULL)
        evhttp_request_free(job->req);
    job->evcon = NULL;
    job_free(job);
}

static struct job *job_new(struct evhttp_request *req)
{
    struct job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return NULL;
    job->magic = JOB_MAGIC;
    job->req = req;
    job->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(job->evcon, job_on_close, job);
    return job;
}

/* Send a complete reply; BODY NULL means "NAME\n". */
static void reply(struct evhttp_request *req, int code, const char *body)
{
    struct evbuffer *buf = evbuffer_new();

    if (buf != NULL)
        evbuffer_add_printf(buf, "%s%s", body ? body : backend_name, body ? "" : "\n");
    evhttp_send_reply(req, code, NULL, buf);
    if (buf != NULL)
        evbuffer_free(buf);
}

/* Integer query parameter KEY clamped to [min, max]; DEF when absent or malformed. */
static long long query_num(struct evhttp_request *req, const char *key, long long def,
                           long long min, long long max)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq kv;
    const char *v;
    char *end;
    long long n = def;

    if (q == NULL || evhttp_parse_query_str(q, &kv) != 0)
        return def;
    v = evhttp_find_header(&kv, key);
    if (v != NULL && *v != '\0') {
        n = strtoll(v, &end, 10);
        n = *end == '\0' ? n : def;
    }
    evhttp_clear_headers(&kv);
    return n < min ? min : n > max ? max : n;
}

static void delay_done(evutil_socket_t fd, short what, void *arg)
{
    struct job *job = arg;
    struct evhttp_request *req = job->req;

    (void)fd, (void)what;
    job_free(job);
    reply(req, 200, NULL);
}

/* Queue the next chunk of a /size body; evhttp calls this again once the chunk has been sent, so
 * at most one chunk per connection is ever buffered. */
static void size_next(struct evhttp_connection *evcon, void *arg)
{
    struct job *job = arg;
    struct evhttp_request *req = job->req;
    size_t n = job->remaining < CHUNK_BYTES ? (size_t)job->remaining : CHUNK_BYTES;
    struct evbuffer *buf;

    (void)evcon;
    if (n == 0) {
        job_free(job);
        evhttp_send_reply_end(req);
        return;
    }
    job->remaining -= (long long)n;
    buf = evbuffer_new();
    evbuffer_add_reference(buf, chunk, n, NULL, NULL);
    evhttp_send_reply_chunk_with_cb(req, buf, size_next, job);
    evbuffer_free(buf);
}

static void set_type(struct evkeyvalq *headers, const char *type)
{
    evhttp_remove_header(headers, "Content-Type");
    evhttp_add_header(headers, "Content-Type", type);
}

/* The /v/ paths: the same answer as a backend without --variant, except in the one respect the
 * path names. */
static void variant_reply(struct evhttp_request *req, struct evkeyvalq *out, const char *what)
{
    struct evbuffer *buf;

    if (strncmp(what, "status/", 7) == 0) {
        reply(req, variant ? 503 : 200, NULL);
    } else if (strncmp(what, "body/", 5) == 0 && variant) {
        if ((buf = evbuffer_new()) != NULL)
            evbuffer_add_printf(buf, "%s variant\n", backend_name);
        evhttp_send_reply(req, 200, NULL, buf);
        if (buf != NULL)
            evbuffer_free(buf);
    } else {
        if (strncmp(what, "type/", 5) == 0 && variant)
            set_type(out, "text/html");
        if (strncmp(what, "etag/", 5) == 0)
            evhttp_add_header(out, "ETag", variant ? "\"b\"" : "\"a\"");
        reply(req, 200, NULL);
    }
}

static void route(struct evhttp_request *req, struct event_base *base)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct job *job = NULL;
    struct timeval tv;
    long long n;
    char len[24];

    evhttp_add_header(out, "X-Backend", backend_name);
    set_type(out, "text/plain");
    path = path != NULL ? path : "/";
    if (strcmp(path, "/delay") == 0) {
        n = query_num(req, "ms", 0, 0, MAX_DELAY_MS);
        tv.tv_sec = (time_t)(n / 1000);
        tv.tv_usec = (suseconds_t)(n % 1000) * 1000;
        if ((job = job_new(req)) == NULL || !(job->timer = evtimer_new(base, delay_done, job)))
            goto oom;
        evtimer_add(job->timer, &tv);
    } else if (strcmp(path, "/status") == 0) {
        reply(req, (int)query_num(req, "code", 200, 100, 599), NULL);
    } else if (strcmp(path, "/size") == 0) {
        n = query_num(req, "bytes", 0, 0, LLONG_MAX);
        snprintf(len, sizeof(len), "%lld", n);
        evhttp_add_header(out, "Content-Length", len);
        set_type(out, "application/octet-stream");
        if (n == 0 || evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
            evhttp_send_reply(req, 200, NULL, NULL);
            return;
        }
        if ((job = job_new(req)) == NULL)
            goto oom;
        job->remaining = n;
        evhttp_send_reply_start(req, 200, NULL);
        size_next(NULL, job);
    } else if (strcmp(path, "/echo") == 0) {
        if (evhttp_find_header(in, "Content-Type") != NULL)
            set_type(out, evhttp_find_header(in, "Content-Type"));
        evhttp_send_reply(req, 200, NULL, evhttp_request_get_input_buffer(req));
    } else if (strncmp(path, "/v/", 3) == 0) {
        variant_reply(req, out, path + 3);
    } else {
        reply(req, 200, strcmp(path, "/api/health/readiness") == 0 ? "ready" : NULL);
    }
    return;
oom:
    if (job != NULL)
        job_free(job);
    reply(req, 500, "out of memory\n");
}

static void delay_all_done(evutil_socket_t fd, short what, void *arg)
{
    struct job *job = arg;
    struct evhttp_request *req = job->req;
    struct event_base *base = job->base;

    (void)fd, (void)what;
    job_free(job);
    route(req, base);
}

/* Every request goes through route(), after --delay-ms when it is set. */
static void on_request(struct evhttp_request *req, void *arg)
{
    struct timeval tv = {(time_t)(delay_all_ms / 1000), (suseconds_t)(delay_all_ms % 1000) * 1000};
    struct job *job;

    if (delay_all_ms == 0) {
        route(req, arg);
        return;
    }
    if ((job = job_new(req)) == NULL || !(job->timer = evtimer_new(arg, delay_all_done, job))) {
        if (job != NULL)
            job_free(job);
        reply(req, 500, "out of memory\n");
        return;
    }
    job->base = arg;
    evtimer_add(job->timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    event_base_loopexit(arg, NULL);
}

/* Write PORT to PATH through a temporary file and rename(), so a reader never sees half of it. */
static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    FILE *f;
    int ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return -1;
    if ((f = fopen(tmp, "w")) == NULL)
        return -1;
    ok = fprintf(f, "%d\n", port) > 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Split "HOST:PORT" or "[V6]:PORT" in place; returns the port, or -1 if malformed. */
static int split_listen(char *spec, char **host)
{
    char *colon = strrchr(spec, ':'), *end;
    long port;

    if (colon == NULL || colon[1] == '\0')
        return -1;
    *colon = '\0';
    port = strtol(colon + 1, &end, 10);
    *host = spec;
    if (spec[0] == '[' && colon > spec + 1 && colon[-1] == ']') {
        colon[-1] = '\0';
        *host = spec + 1;
    }
    return *end != '\0' || port < 0 || port > 65535 ? -1 : (int)port;
}

static int bound_port(struct evhttp_bound_socket *bound)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/*
 * Listen with the kernel's largest backlog: evhttp_bind_socket listens with
 * 128, and a proxy releasing thousands of held requests at once connects
 * faster than that; the SYNs beyond it would wait for retransmits (1 s, 3 s).
 */
static struct evhttp_bound_socket *bind_with_backlog(struct evhttp *http, const char *host,
                                                     int port)
{
    struct evutil_addrinfo hints = {0}, *ai = NULL;
    struct evhttp_bound_socket *bound;
    char service[8];
    int fd, one = 1;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%d", port);
    if (evutil_getaddrinfo(host, service, &hints, &ai) != 0)
        return NULL;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        if (fd >= 0)
            close(fd);
        evutil_freeaddrinfo(ai);
        return NULL;
    }
    evutil_freeaddrinfo(ai);
    bound = evhttp_accept_socket_with_handle(http, fd);
    if (bound == NULL)
        close(fd);
    return bound;
}

/* A whole number of milliseconds, 0..MAX_DELAY_MS; -1 if TEXT is anything else. */
static long long parse_ms(const char *text)
{
    char *end;
    long long n = strtoll(text, &end, 10);

    return *text == '\0' || *end != '\0' || n < 0 || n > MAX_DELAY_MS ? -1 : n;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},      {"listen", required_argument, NULL, 'l'},
        {"port-file", required_argument, NULL, 'p'}, {"variant", no_argument, NULL, 'v'},
        {"delay-ms", required_argument, NULL, 'd'},  {NULL, 0, NULL, 0},
    };
    const char *port_file = NULL;
    char *spec = NULL, *host = NULL;
    struct event_base *base;
    struct evhttp *http = NULL;
    struct evhttp_bound_socket *bound;
    struct event *sigs[2] = {NULL, NULL};
    int c, port = -1, rc = 1;

    while ((c = getopt_long(argc, argv, "n:l:p:vd:", opts, NULL)) != -1) {
        if (c == 'n')
            backend_name = optarg;
        else if (c == 'l')
            spec = optarg;
        else if (c == 'p')
            port_file = optarg;
        else if (c == 'v')
            variant = 1;
        else if (c == 'd')
            delay_all_ms = parse_ms(optarg);
        else
            port = -2;
    }
    if (port == -2 || delay_all_ms < 0 || spec == NULL || optind != argc ||
        (port = split_listen(spec, &host)) < 0) {
        fprintf(stderr, "usage: veer-backend --name NAME --listen HOST:PORT [--port-file FILE] "
                        "[--variant] [--delay-ms N]\n");
        return 2;
    }
    memset(chunk, 'x', sizeof(chunk));
    signal(SIGPIPE, SIG_IGN);
    if ((base = event_base_new()) == NULL || (http = evhttp_new(base)) == NULL)
        goto out;
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(http, on_request, base);
    if ((bound = bind_with_backlog(http, host, port)) == NULL) {
        fprintf(stderr, "veer-backend: cannot listen on %s:%d\n", host, port);
        goto out;
    }
    port = bound_port(bound);
    if (port_file != NULL && write_port_file(port_file, port) != 0) {
        perror("veer-backend: port file");
        goto out;
    }
    sigs[0] = evsignal_new(base, SIGTERM, on_signal, base);
    sigs[1] = evsignal_new(base, SIGINT, on_signal, base);
    if (!sigs[0] || !sigs[1] || evsignal_add(sigs[0], NULL) || evsignal_add(sigs[1], NULL))
        goto out;
    printf(strchr(host, ':') ? "listening on [%s]:%d\n" : "listening on %s:%d\n", host, port);
    fflush(stdout);
    rc = event_base_dispatch(base) == 0 ? 0 : 1;
out:
    for (c = 0; c < 2; c++)
        if (sigs[c] != NULL)
            event_free(sigs[c]);
    if (http != NULL)
        evhttp_free(http);
    if (base != NULL)
        event_base_free(base);
    libevent_global_shutdown();
    return rc;
}
