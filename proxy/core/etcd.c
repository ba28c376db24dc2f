/*
 * etcd.c - asynchronous client for etcd's v3 JSON gateway. See etcd.h.
 *
 * Requests share one keep-alive connection (libevent queues them); a watch
 * has a connection of its own, read as a stream of newline-separated JSON
 * messages through libevent's chunked-response callback. A request that
 * fails hands its callback the reason, and the next request tries the
 * next endpoint.
 */
#include "etcd.h"
#include "veer.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct endpoint {
    char host[64];
    int port;
    char text[96];
};

struct call {
    struct etcd *e;
    etcd_done_cb cb;
    void *arg;
    struct evhttp_request *req;
    int ep; /* the endpoint it went to */
    enum evhttp_request_error error;
    bool failed;
    struct call *next, *prev;
};

struct etcd_watch {
    struct etcd *e;
    struct evhttp_connection *conn;
    struct evhttp_request *req;
    struct evbuffer *pending; /* bytes of a message not complete yet */
    etcd_watch_cb cb;
    etcd_watch_end_cb end;
    void *arg;
    bool ended;
    bool in_chunk_cb; /* etcd_watch_stop from a callback leaves the freeing to watch_chunk_cb */
    bool stopped;
};

struct etcd {
    struct event_base *base;
    struct endpoint *ep;
    int nep, cur;
    struct evhttp_connection **conns; /* requests, one keep-alive connection per endpoint */
    struct call *calls;               /* in flight */
};

/* --- encoding ------------------------------------------------------------------- */

json_t *etcd_b64(const char *s, size_t n)
{
    char *out = veer_malloc(4 * ((n + 2) / 3) + 1);
    json_t *v;

    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    v = json_string(out);
    free(out);
    return v;
}

char *etcd_unb64(const json_t *v, size_t *n)
{
    const char *s = json_string_value(v);
    size_t len, pad = 0;
    char *out;
    int got;

    if (s == NULL)
        return NULL;
    len = strlen(s);
    if (len % 4)
        return NULL;
    if (len >= 1 && s[len - 1] == '=')
        pad++;
    if (len >= 2 && s[len - 2] == '=')
        pad++;
    if (strcspn(s, "=") < len - pad) /* '=' only as the final padding */
        return NULL;
    out = veer_malloc(len / 4 * 3 + 1);
    got = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
    if (got < 0) {
        free(out);
        return NULL;
    }
    *n = (size_t)got - pad;
    out[*n] = '\0';
    return out;
}

int64_t etcd_int(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

/* --- connections ---------------------------------------------------------------- */

static int parse_endpoint(const char *url, struct endpoint *ep)
{
    const char *p = url, *colon;
    unsigned char addr[sizeof(struct in6_addr)];
    size_t hl;

    if (strncmp(p, "http://", 7) != 0)
        return -1;
    p += 7;
    colon = strrchr(p, ':');
    if (colon == NULL || colon == p)
        return -1;
    hl = (size_t)(colon - p);
    if (hl >= sizeof(ep->host))
        return -1;
    memcpy(ep->host, p, hl);
    ep->host[hl] = '\0';
    if (strcmp(ep->host, "localhost") == 0)
        strcpy(ep->host, "127.0.0.1");
    if (inet_pton(AF_INET, ep->host, addr) != 1 && inet_pton(AF_INET6, ep->host, addr) != 1)
        return -1; /* a name would need a blocking DNS lookup */
    ep->port = atoi(colon + 1);
    if (ep->port <= 0 || ep->port > 65535)
        return -1;
    snprintf(ep->text, sizeof(ep->text), "http://%s:%d", ep->host, ep->port);
    return 0;
}

struct etcd *etcd_new(struct event_base *base, char *const *endpoints, int n, char *err, size_t len)
{
    struct etcd *e = veer_calloc(1, sizeof(*e));

    e->base = base;
    e->ep = veer_calloc((size_t)n, sizeof(*e->ep));
    for (int i = 0; i < n; i++) {
        if (parse_endpoint(endpoints[i], &e->ep[i]) < 0) {
            snprintf(err, len,
                     "etcd endpoint \"%s\": expected http://HOST:PORT with a numeric host",
                     endpoints[i]);
            free(e->ep);
            free(e);
            return NULL;
        }
    }
    e->nep = n;
    e->conns = veer_calloc((size_t)n, sizeof(*e->conns));
    return e;
}

const char *etcd_endpoint(const struct etcd *e)
{
    return e->ep[e->cur].text;
}

static struct evhttp_connection *connect_ep(struct etcd *e, int timeout_s)
{
    const struct endpoint *ep = &e->ep[e->cur];
    struct evhttp_connection *c =
        evhttp_connection_base_new(e->base, NULL, ep->host, (unsigned short)ep->port);

    if (c)
        evhttp_connection_set_timeout(c, timeout_s);
    return c;
}

/* The endpoint failed: the next request tries the next one (its connection reconnects). */
static void next_endpoint(struct etcd *e)
{
    e->cur = (e->cur + 1) % e->nep;
}

static const char *request_error_name(enum evhttp_request_error err)
{
    switch (err) {
    case EVREQ_HTTP_TIMEOUT:
        return "timeout";
    case EVREQ_HTTP_EOF:
        return "connection closed";
    case EVREQ_HTTP_INVALID_HEADER:
        return "bad response";
    case EVREQ_HTTP_BUFFER_ERROR:
        return "connection failed";
    case EVREQ_HTTP_REQUEST_CANCEL:
        return "cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG:
        return "response too long";
    }
    return "error";
}

static void call_unlink(struct call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->e->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void call_error_cb(enum evhttp_request_error err, void *arg)
{
    struct call *c = arg;

    c->failed = true;
    c->error = err;
}

static void call_done_cb(struct evhttp_request *req, void *arg)
{
    struct call *c = arg;
    struct etcd *e = c->e;
    char err[200];
    json_t *res = NULL;

    call_unlink(c);
    if (req == NULL || c->failed || evhttp_request_get_response_code(req) == 0) {
        snprintf(err, sizeof(err), "etcd %s: %s", e->ep[c->ep].text,
                 c->failed ? request_error_name(c->error) : "connection failed");
        if (e->cur == c->ep) /* not again for each request that was queued on it */
            next_endpoint(e);
        c->cb(c->arg, NULL, err);
        free(c);
        return;
    }
    {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        json_error_t je;
        int code = evhttp_request_get_response_code(req);

        res = json_loadb((const char *)evbuffer_pullup(in, (ssize_t)n), n, 0, &je);
        if (code != 200 || res == NULL) {
            const char *msg = res ? json_string_value(json_object_get(res, "message")) : NULL;

            if (msg == NULL)
                msg = json_string_value(json_object_get(res, "error"));
            snprintf(err, sizeof(err), "etcd %s: HTTP %d%s%s", e->ep[c->ep].text, code,
                     msg ? ": " : "", msg ? msg : "");
            json_decref(res);
            c->cb(c->arg, NULL, err);
            free(c);
            return;
        }
    }
    c->cb(c->arg, res, NULL);
    json_decref(res);
    free(c);
}

static struct evhttp_request *new_request(struct etcd *e, json_t *body,
                                          void (*cb)(struct evhttp_request *, void *), void *arg)
{
    struct evhttp_request *req = evhttp_request_new(cb, arg);
    char *text = json_dumps(body, JSON_COMPACT);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Host", e->ep[e->cur].host);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), text, strlen(text));
    free(text);
    json_decref(body);
    return req;
}

void etcd_post(struct etcd *e, const char *path, json_t *body, int timeout_ms, etcd_done_cb cb,
               void *arg)
{
    struct call *c = veer_calloc(1, sizeof(*c));

    c->e = e;
    c->cb = cb;
    c->arg = arg;
    c->ep = e->cur;
    if (e->conns[e->cur] == NULL)
        e->conns[e->cur] = connect_ep(e, (timeout_ms + 999) / 1000);
    c->req = new_request(e, body, call_done_cb, c);
    evhttp_request_set_error_cb(c->req, call_error_cb);
    c->next = e->calls;
    if (e->calls)
        e->calls->prev = c;
    e->calls = c;
    if (e->conns[e->cur] == NULL)
        evhttp_request_free(c->req);
    if (e->conns[e->cur] == NULL ||
        evhttp_make_request(e->conns[e->cur], c->req, EVHTTP_REQ_POST, path) != 0) {
        /* (evhttp_make_request frees the request when it fails) */
        call_unlink(c);
        next_endpoint(e);
        c->cb(c->arg, NULL, "etcd: cannot send the request");
        free(c);
    }
}

/* --- watch ---------------------------------------------------------------------- */

static void watch_finish(struct etcd_watch *w, const char *why)
{
    if (w->ended)
        return;
    w->ended = true;
    w->end(w->arg, why);
}

static void watch_free(struct etcd_watch *w)
{
    evbuffer_free(w->pending);
    free(w);
}

/*
 * Each complete line of the stream is one JSON message. The callbacks may stop
 * the watch: its connection goes at once (libevent defers freeing the request
 * it is delivering), the watch itself when this function is done with it.
 */
static void watch_chunk_cb(struct evhttp_request *req, void *arg)
{
    struct etcd_watch *w = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);

    evbuffer_add_buffer(w->pending, in);
    w->in_chunk_cb = true;
    while (!w->ended) {
        struct evbuffer_ptr nl = evbuffer_search(w->pending, "\n", 1, NULL);
        size_t n;
        char *line;
        json_t *msg;
        json_error_t je;

        if (nl.pos < 0)
            break;
        n = (size_t)nl.pos;
        line = veer_malloc(n + 1);
        evbuffer_remove(w->pending, line, n);
        evbuffer_drain(w->pending, 1);
        line[n] = '\0';
        msg = n ? json_loadb(line, n, 0, &je) : NULL;
        free(line);
        if (n && msg == NULL) {
            watch_finish(w, "etcd: malformed watch message");
            break;
        }
        if (msg) {
            w->cb(w->arg, msg);
            json_decref(msg);
        }
    }
    w->in_chunk_cb = false;
    if (w->stopped)
        watch_free(w);
}

static void watch_done_cb(struct evhttp_request *req, void *arg)
{
    struct etcd_watch *w = arg;

    w->req = NULL; /* libevent frees it */
    watch_finish(w, req && evhttp_request_get_response_code(req) != 200
                        ? "etcd: watch refused"
                        : "etcd: watch stream ended");
}

struct etcd_watch *etcd_watch_start(struct etcd *e, json_t *create_request, etcd_watch_cb cb,
                                    etcd_watch_end_cb end, void *arg)
{
    struct etcd_watch *w = veer_calloc(1, sizeof(*w));
    json_t *body = json_pack("{s:o}", "create_request", create_request);

    w->e = e;
    w->cb = cb;
    w->end = end;
    w->arg = arg;
    w->pending = evbuffer_new();
    /* A long read timeout: liveness comes from the lease keep-alive, not from this stream. */
    w->conn = connect_ep(e, 3600);
    w->req = new_request(e, body, watch_done_cb, w);
    evhttp_request_set_chunked_cb(w->req, watch_chunk_cb);
    if (w->conn == NULL)
        evhttp_request_free(w->req);
    if (w->conn == NULL || evhttp_make_request(w->conn, w->req, EVHTTP_REQ_POST, "/v3/watch")) {
        w->req = NULL;
        w->ended = true; /* the caller sees NULL and retries later */
        etcd_watch_stop(w);
        next_endpoint(e);
        return NULL;
    }
    return w;
}

void etcd_watch_stop(struct etcd_watch *w)
{
    if (w == NULL)
        return;
    w->ended = true;
    if (w->conn)
        evhttp_connection_free(w->conn); /* cancels the request without calling back */
    w->conn = NULL;
    if (w->in_chunk_cb)
        w->stopped = true; /* watch_chunk_cb frees it on its way out */
    else
        watch_free(w);
}

void etcd_free(struct etcd *e)
{
    if (e == NULL)
        return;
    for (int i = 0; i < e->nep; i++)
        if (e->conns[i])
            evhttp_connection_free(e->conns[i]);
    free(e->conns);
    while (e->calls) {
        struct call *c = e->calls;

        e->calls = c->next;
        free(c);
    }
    free(e->ep);
    free(e);
}
