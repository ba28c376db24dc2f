/*
 * check_etcd.c - the client for etcd's v3 JSON gateway: base64 both ways
 * (RFC 4648 vectors, every byte value, what is not base64), int64 values
 * sent as strings, endpoint parsing and its errors; requests against a fake
 * etcd served from the same event_base on an ephemeral loopback port (the
 * path, headers and JSON body it receives, the decoded reply, HTTP errors
 * with etcd's message, replies that are not JSON, a server that never
 * answers, a refused port, failover to the next endpoint, and several
 * failures at once moving on only once); watch streams (the create request,
 * chunked messages delivered one by one whether split or coalesced, the
 * end of the stream, a refused or malformed stream, stopping, also from
 * inside a callback); and etcd_free with requests in flight (ASan: nothing
 * left behind).
 */
#include "etcd.h"
#include "veer.h"

#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The deadline of every wait: the tests take milliseconds, the timeout ones about 1 s. */
#define WAIT_MS  5000
#define MAX_SEEN 16
#define MAX_MSGS 16

/* --- base64 and integers -------------------------------------------------------------- */

/* etcd_unb64 of a C string, checked to be NUL-terminated at *n. */
static char *unb64(const char *text, size_t *n)
{
    json_t *v = json_string(text);
    char *out;

    *n = (size_t)-1;
    out = etcd_unb64(v, n);
    json_decref(v);
    if (out)
        ck_assert_int_eq(out[*n], '\0');
    return out;
}

START_TEST(test_b64_matches_rfc4648_vectors_both_ways)
{
    static const char *const vec[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };

    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        json_t *v = etcd_b64(vec[i][0], strlen(vec[i][0]));
        size_t n;
        char *back;

        ck_assert(json_is_string(v));
        ck_assert_str_eq(json_string_value(v), vec[i][1]);
        back = etcd_unb64(v, &n);
        ck_assert_ptr_nonnull(back);
        ck_assert_uint_eq(n, strlen(vec[i][0]));
        ck_assert_mem_eq(back, vec[i][0], n);
        ck_assert_int_eq(back[n], '\0');
        free(back);
        json_decref(v);
    }
}
END_TEST

START_TEST(test_b64_round_trips_every_byte_value_and_length_mod_3)
{
    char bytes[256];

    for (int i = 0; i < 256; i++)
        bytes[i] = (char)(255 - i); /* starts high, has a NUL at the end */
    /* 256, 255, 254: remainders 1, 0 and 2; also short ones made of NULs only */
    for (size_t len = 256; len >= 250; len--) {
        json_t *v = etcd_b64(bytes, len);
        size_t n;
        char *back = etcd_unb64(v, &n);

        ck_assert_uint_eq(strlen(json_string_value(v)), 4 * ((len + 2) / 3));
        ck_assert_ptr_nonnull(back);
        ck_assert_uint_eq(n, len);
        ck_assert_mem_eq(back, bytes, len);
        free(back);
        json_decref(v);
    }
    for (size_t len = 1; len <= 3; len++) {
        json_t *v = etcd_b64("\0\0\0", len);
        size_t n;
        char *back = etcd_unb64(v, &n);

        ck_assert_ptr_nonnull(back);
        ck_assert_uint_eq(n, len);
        ck_assert_mem_eq(back, "\0\0\0", len);
        free(back);
        json_decref(v);
    }
}
END_TEST

START_TEST(test_unb64_rejects_what_is_not_base64)
{
    static const char *const bad[] = {
        "Zg=",      /* not a multiple of 4 */
        "Zm9vY",    /* idem */
        "Zm9v\n",   /* idem, with the newline */
        "@@@@",     /* not the alphabet */
        "Zm9v!A==", /* idem, in the middle */
        "Zg==Zg==", /* padding in the middle: two encodings glued together */
        "AA=A",     /* idem */
        "A===",     /* three padding characters */
        "====",     /* padding only */
    };
    json_t *num = json_integer(1);
    size_t n = 7;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *out = unb64(bad[i], &n);

        ck_assert_msg(out == NULL, "\"%s\" decoded to %zu bytes", bad[i], n);
    }
    n = 7;
    ck_assert_ptr_null(etcd_unb64(NULL, &n));
    ck_assert_ptr_null(etcd_unb64(num, &n));
    ck_assert_uint_eq(n, 7); /* untouched on failure */
    json_decref(num);
}
END_TEST

START_TEST(test_unb64_of_empty_string_is_empty)
{
    size_t n;
    char *out = unb64("", &n);

    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(n, 0);
    free(out);
}
END_TEST

START_TEST(test_int_reads_strings_and_integers)
{
    struct {
        json_t *v;
        int64_t want;
    } cases[] = {
        {json_string("42"), 42},
        {json_string("-17"), -17},
        {json_string("0"), 0},
        {json_string("9007199254740993"), INT64_C(9007199254740993)}, /* 2^53 + 1: no double */
        {json_string("9223372036854775807"), INT64_MAX},
        {json_integer(42), 42},
        {json_integer(-5), -5},
        {json_integer(INT64_MIN), INT64_MIN},
        {json_string(""), 0},
        {json_string("garbage"), 0},
        {json_true(), 0},
        {json_null(), 0},
        {json_real(3.9), 0},
        {json_pack("{s:s}", "revision", "7"), 0},
        {json_pack("[s]", "7"), 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = json_dumps(cases[i].v, JSON_ENCODE_ANY);

        ck_assert_msg(etcd_int(cases[i].v) == cases[i].want, "etcd_int(%s) = %lld, want %lld", text,
                      (long long)etcd_int(cases[i].v), (long long)cases[i].want);
        free(text);
        json_decref(cases[i].v);
    }
    ck_assert(etcd_int(NULL) == 0); /* an absent member: json_object_get gives NULL */
}
END_TEST

/* --- the fake etcd: an evhttp server on the test's own event base ------------------------ */

enum fake_mode {
    FAKE_REPLY, /* answer code/reply at once */
    FAKE_ECHO,  /* answer 200 {"echo": BODY} */
    FAKE_HOLD,  /* never answer (until teardown) */
};

/* One request as the fake etcd received it. */
struct seen {
    char uri[128];
    char host[64];
    char ctype[64];
    bool post;
    json_t *body;               /* NULL if it was not JSON */
    int peer_port;              /* the client's port: one connection, one port */
    struct evhttp_request *req; /* held or streaming, answered at teardown */
    bool stream;
    bool closed; /* the server's connection for it went away */
    bool flushed;
};

static struct {
    struct event_base *base;
    struct evhttp *http;
    char url[64];
    enum fake_mode mode;
    int code;
    const char *reply;
    int watch_code; /* /v3/watch: 0 streams, otherwise this status with reply */
    struct seen seen[MAX_SEEN];
    int nseen;
    int dead_fd; /* bound, never listening: connections to it are refused */
    char dead_url[64];
    struct etcd *etcd;
    bool deadline_hit;
} fx;

static void closed_cb(struct evhttp_connection *conn, void *arg)
{
    struct seen *s = arg;

    s->closed = true;
}

static void reply(struct evhttp_request *req, int code, const char *body)
{
    struct evbuffer *b = evbuffer_new();

    evbuffer_add(b, body, strlen(body));
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

static void fake_cb(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const char *uri = evhttp_request_get_uri(req), *v;
    struct seen *s;
    char *peer;
    ev_uint16_t port;

    if (uri == NULL || fx.nseen == MAX_SEEN) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    s = &fx.seen[fx.nseen++];
    snprintf(s->uri, sizeof(s->uri), "%s", uri);
    s->post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    v = evhttp_find_header(h, "Host");
    snprintf(s->host, sizeof(s->host), "%s", v ? v : "");
    v = evhttp_find_header(h, "Content-Type");
    snprintf(s->ctype, sizeof(s->ctype), "%s", v ? v : "");
    s->body = json_loadb((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in), 0, NULL);
    evhttp_connection_get_peer(conn, &peer, &port);
    s->peer_port = port;
    evhttp_connection_set_closecb(conn, closed_cb, s);

    if (strcmp(uri, "/v3/watch") == 0) {
        if (fx.watch_code) {
            reply(req, fx.watch_code, fx.reply);
            return;
        }
        evhttp_send_reply_start(req, HTTP_OK, "OK");
        s->req = req;
        s->stream = true;
        return;
    }
    switch (fx.mode) {
    case FAKE_REPLY:
        reply(req, fx.code, fx.reply);
        break;
    case FAKE_ECHO: {
        json_t *o = json_pack("{s:O}", "echo", s->body ? s->body : json_null());
        char *text = json_dumps(o, JSON_COMPACT);

        reply(req, 200, text);
        free(text);
        json_decref(o);
        break;
    }
    case FAKE_HOLD:
        s->req = req;
        break;
    }
}

static void flushed_cb(struct evhttp_connection *conn, void *arg)
{
    struct seen *s = arg;

    s->flushed = true;
}

/* One chunk of the watch stream that request i opened. */
static void fake_chunk(int i, const char *text)
{
    struct evbuffer *b = evbuffer_new();

    ck_assert_ptr_nonnull(fx.seen[i].req);
    fx.seen[i].flushed = false;
    evbuffer_add(b, text, strlen(text));
    evhttp_send_reply_chunk_with_cb(fx.seen[i].req, b, flushed_cb, &fx.seen[i]);
    evbuffer_free(b);
}

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

/* --- what the client hands back ------------------------------------------------------- */

struct result {
    int calls;
    json_t *res; /* a reference kept from the borrowed reply */
    bool failed;
    char err[256];
    uint64_t at_us;
};

static struct result results[8];

static void done_cb(void *arg, json_t *res, const char *err)
{
    struct result *r = arg;

    r->calls++;
    r->at_us = veer_now_us();
    r->failed = err != NULL;
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
    if (res) {
        json_decref(r->res);
        r->res = json_incref(res);
    }
}

static struct {
    struct etcd_watch *w;
    json_t *msgs[MAX_MSGS];
    int nmsgs;
    int ends;
    char why[128];
    int stop_at;      /* etcd_watch_stop from the callback at this message (1-based; 0: never) */
    bool stop_on_end; /* etcd_watch_stop from the end callback, as cluster.c does */
} wt;

static void watch_cb(void *arg, json_t *msg)
{
    ck_assert_ptr_eq(arg, &wt);
    ck_assert_int_eq(wt.ends, 0);
    ck_assert_int_lt(wt.nmsgs, MAX_MSGS);
    wt.msgs[wt.nmsgs++] = json_incref(msg);
    if (wt.nmsgs == wt.stop_at) {
        etcd_watch_stop(wt.w);
        wt.w = NULL;
    }
}

static void watch_end_cb(void *arg, const char *why)
{
    ck_assert_ptr_eq(arg, &wt);
    wt.ends++;
    snprintf(wt.why, sizeof(wt.why), "%s", why ? why : "(null)");
    if (wt.stop_on_end) {
        etcd_watch_stop(wt.w);
        wt.w = NULL;
    }
}

/* The client under test, on the first n of these endpoints. */
static struct etcd *client(int n, const char *a, const char *b)
{
    char *eps[2] = {(char *)a, (char *)b};
    char err[256] = "";

    fx.etcd = etcd_new(fx.base, eps, n, err, sizeof(err));
    ck_assert_msg(fx.etcd != NULL, "etcd_new: %s", err);
    return fx.etcd;
}

static void setup(void)
{
    struct evhttp_bound_socket *bs;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);

    memset(&fx, 0, sizeof(fx));
    memset(results, 0, sizeof(results));
    memset(&wt, 0, sizeof(wt));
    fx.base = event_base_new();
    ck_assert_ptr_nonnull(fx.base);
    fx.http = evhttp_new(fx.base);
    evhttp_set_gencb(fx.http, fake_cb, NULL);
    bs = evhttp_bind_socket_with_handle(fx.http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(bs);
    ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    snprintf(fx.url, sizeof(fx.url), "http://127.0.0.1:%d", ntohs(sin.sin_port));

    fx.dead_fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fx.dead_fd, 0);
    sin.sin_port = 0;
    ck_assert_int_eq(bind(fx.dead_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    sl = sizeof(sin);
    ck_assert_int_eq(getsockname(fx.dead_fd, (struct sockaddr *)&sin, &sl), 0);
    snprintf(fx.dead_url, sizeof(fx.dead_url), "http://127.0.0.1:%d", ntohs(sin.sin_port));

    fx.mode = FAKE_REPLY;
    fx.code = 200;
    fx.reply = "{}";
}

static void teardown(void)
{
    etcd_watch_stop(wt.w);
    etcd_free(fx.etcd);
    for (int i = 0; i < fx.nseen; i++) {
        struct seen *s = &fx.seen[i];

        if (s->req && s->stream)
            evhttp_send_reply_end(s->req); /* frees it if its connection is gone */
        else if (s->req)
            evhttp_send_reply(s->req, 503, "Gone", NULL);
        json_decref(s->body);
    }
    evhttp_free(fx.http);
    close(fx.dead_fd);
    for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++)
        json_decref(results[i].res);
    for (int i = 0; i < wt.nmsgs; i++)
        json_decref(wt.msgs[i]);
    event_base_free(fx.base);
}

/* --- endpoints ----------------------------------------------------------------------- */

START_TEST(test_new_rejects_bad_endpoints_naming_them)
{
    static const char *const bad[] = {
        "127.0.0.1:2379",           /* no scheme */
        "https://127.0.0.1:2379",   /* not plain http */
        "http://127.0.0.1",         /* no port */
        "http://:2379",             /* no host */
        "http://127.0.0.1:0",       /* port out of range */
        "http://127.0.0.1:65536",   /* idem */
        "http://127.0.0.1:-1",      /* idem */
        "http://127.0.0.1:port",    /* not a number */
        "http://etcd.example:2379", /* a name: resolving it would block */
        "http://etcd:2379",         /* idem */
        "http://1234567890123456789012345678901234567890123456789012345678901234:2379", /* long */
    };
    struct event_base *base = event_base_new();
    char good[] = "http://127.0.0.1:2379";

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *one[] = {(char *)bad[i]};
        char *two[] = {good, (char *)bad[i]};
        char want[300], err[300] = "";

        snprintf(want, sizeof(want),
                 "etcd endpoint \"%s\": expected http://HOST:PORT with a numeric host", bad[i]);
        ck_assert_msg(etcd_new(base, one, 1, err, sizeof(err)) == NULL, "%s accepted", bad[i]);
        ck_assert_str_eq(err, want);
        err[0] = '\0';
        ck_assert_ptr_null(etcd_new(base, two, 2, err, sizeof(err))); /* the second one is bad */
        ck_assert_str_eq(err, want);
    }
    {
        char *one[] = {(char *)"nope"};
        char err[16];

        ck_assert_ptr_null(etcd_new(base, one, 1, err, sizeof(err)));
        ck_assert_str_eq(err, "etcd endpoint \""); /* cut to the buffer, terminated */
    }
    etcd_free(NULL);
    etcd_watch_stop(NULL);
    event_base_free(base);
}
END_TEST

START_TEST(test_endpoint_is_the_first_in_canonical_form)
{
    struct event_base *base = event_base_new();
    char *eps[] = {(char *)"http://localhost:2379", (char *)"http://10.1.2.3:12379",
                   (char *)"http://::1:2380"};
    char err[256] = "";
    struct etcd *e = etcd_new(base, eps, 3, err, sizeof(err));

    ck_assert_msg(e != NULL, "%s", err);
    ck_assert_str_eq(etcd_endpoint(e), "http://127.0.0.1:2379"); /* localhost, never resolved */
    etcd_free(e);
    e = etcd_new(base, eps + 1, 2, err, sizeof(err));
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(etcd_endpoint(e), "http://10.1.2.3:12379");
    etcd_free(e);
    e = etcd_new(base, eps + 2, 1, err, sizeof(err));
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(etcd_endpoint(e), "http://::1:2380");
    etcd_free(e);
    event_base_free(base);
}
END_TEST

/* --- requests ------------------------------------------------------------------------ */

START_TEST(test_post_sends_json_and_hands_back_the_reply)
{
    json_t *body = json_pack("{s:o,s:o,s:i}", "key", etcd_b64("/veer/a", 7), "range_end",
                             etcd_b64("/veer/b", 7), "limit", 10);
    json_t *sent = json_deep_copy(body), *kv;
    struct seen *s = &fx.seen[0];
    size_t n;
    char *key;

    fx.reply = "{\"header\":{\"cluster_id\":\"14841639068965178418\",\"revision\":\"42\"},"
               "\"kvs\":[{\"key\":\"L3ZlZXIvYQ==\",\"value\":\"MQ==\",\"mod_revision\":\"41\"}],"
               "\"count\":\"1\"}";
    client(1, fx.url, NULL);
    etcd_post(fx.etcd, "/v3/kv/range", body, 2000, done_cb, &results[0]);
    ck_assert_int_eq(results[0].calls, 0); /* later, never from inside etcd_post */
    RUN_UNTIL(results[0].calls == 1, WAIT_MS);

    ck_assert_int_eq(fx.nseen, 1);
    ck_assert(s->post);
    ck_assert_str_eq(s->uri, "/v3/kv/range");
    ck_assert_str_eq(s->ctype, "application/json");
    ck_assert_str_eq(s->host, "127.0.0.1");
    ck_assert_ptr_nonnull(s->body);
    ck_assert(json_equal(s->body, sent));

    ck_assert_msg(!results[0].failed, "%s", results[0].err);
    ck_assert_ptr_nonnull(results[0].res);
    ck_assert(etcd_int(json_object_get(json_object_get(results[0].res, "header"), "revision")) ==
              42);
    ck_assert(etcd_int(json_object_get(results[0].res, "count")) == 1);
    kv = json_array_get(json_object_get(results[0].res, "kvs"), 0);
    key = etcd_unb64(json_object_get(kv, "key"), &n);
    ck_assert_str_eq(key, "/veer/a");
    free(key);
    ck_assert(etcd_int(json_object_get(kv, "mod_revision")) == 41);
    ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.url);
    json_decref(sent);
}
END_TEST

START_TEST(test_posts_share_one_connection_and_get_their_own_replies)
{
    fx.mode = FAKE_ECHO;
    client(1, fx.url, NULL);
    for (int i = 0; i < 3; i++)
        etcd_post(fx.etcd, "/v3/kv/put", json_pack("{s:i}", "n", i), 2000, done_cb, &results[i]);
    RUN_UNTIL(results[0].calls && results[1].calls && results[2].calls, WAIT_MS);
    /* one more round trip: no callback runs twice */
    etcd_post(fx.etcd, "/v3/kv/put", json_pack("{s:i}", "n", 3), 2000, done_cb, &results[3]);
    RUN_UNTIL(results[3].calls == 1, WAIT_MS);

    ck_assert_int_eq(fx.nseen, 4);
    for (int i = 0; i < 4; i++) {
        json_t *echo = json_object_get(results[i].res, "echo");

        ck_assert_int_eq(results[i].calls, 1);
        ck_assert_msg(!results[i].failed, "%s", results[i].err);
        ck_assert_int_eq(json_integer_value(json_object_get(echo, "n")), i);
        ck_assert_int_eq(json_integer_value(json_object_get(fx.seen[i].body, "n")), i);
        ck_assert_int_eq(fx.seen[i].peer_port, fx.seen[0].peer_port); /* kept alive */
    }
}
END_TEST

START_TEST(test_http_error_carries_etcds_message_and_keeps_the_endpoint)
{
    static const struct {
        int code;
        const char *body, *tail;
    } cases[] = {
        {400,
         "{\"error\":\"etcdserver: requested lease not found\",\"code\":5,"
         "\"message\":\"etcdserver: requested lease not found\"}",
         "HTTP 400: etcdserver: requested lease not found"},
        {404, "{\"error\":\"unknown path\",\"code\":5}", "HTTP 404: unknown path"},
        {503, "<html>busy</html>", "HTTP 503"},
        {500, "{\"code\":13}", "HTTP 500"},
    };

    client(2, fx.url, fx.dead_url);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[300];

        fx.code = cases[i].code;
        fx.reply = cases[i].body;
        etcd_post(fx.etcd, "/v3/lease/keepalive", json_pack("{s:s}", "ID", "7"), 2000, done_cb,
                  &results[i]);
        RUN_UNTIL(results[i].calls == 1, WAIT_MS);
        snprintf(want, sizeof(want), "etcd %s: %s", fx.url, cases[i].tail);
        ck_assert(results[i].failed);
        ck_assert_ptr_null(results[i].res);
        ck_assert_str_eq(results[i].err, want);
        /* etcd answered: no reason to leave it */
        ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.url);
    }
}
END_TEST

START_TEST(test_reply_that_is_not_json_is_an_error)
{
    char want[128];

    fx.reply = "this is not JSON";
    client(1, fx.url, NULL);
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 2000, done_cb, &results[0]);
    RUN_UNTIL(results[0].calls == 1, WAIT_MS);
    snprintf(want, sizeof(want), "etcd %s: HTTP 200", fx.url);
    ck_assert(results[0].failed);
    ck_assert_ptr_null(results[0].res);
    ck_assert_str_eq(results[0].err, want);
}
END_TEST

START_TEST(test_silent_server_times_out_then_next_request_reconnects)
{
    uint64_t t0;
    char want[128];

    fx.mode = FAKE_HOLD;
    client(1, fx.url, NULL);
    t0 = veer_now_us();
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 200, done_cb, &results[0]);
    RUN_UNTIL(results[0].calls == 1, WAIT_MS);
    snprintf(want, sizeof(want), "etcd %s: timeout", fx.url);
    ck_assert_str_eq(results[0].err, want);
    ck_assert_ptr_null(results[0].res);
    ck_assert_int_eq(fx.nseen, 1); /* it did arrive: the wait was for the answer */
    ck_assert_uint_ge(results[0].at_us - t0, 200 * 1000);

    /* The same (only) endpoint again, on a new connection. */
    fx.mode = FAKE_REPLY;
    fx.reply = "{\"header\":{\"revision\":\"3\"}}";
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 200, done_cb, &results[1]);
    RUN_UNTIL(results[1].calls == 1, WAIT_MS);
    ck_assert_msg(!results[1].failed, "%s", results[1].err);
    ck_assert_int_eq(fx.nseen, 2);
    ck_assert_int_ne(fx.seen[1].peer_port, fx.seen[0].peer_port);
    ck_assert_int_eq(results[0].calls, 1);
}
END_TEST

START_TEST(test_refused_connection_fails_over_to_the_next_endpoint)
{
    char want[128];

    client(2, fx.dead_url, fx.url);
    ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.dead_url);
    etcd_post(fx.etcd, "/v3/lease/grant", json_pack("{s:i}", "TTL", 5), 2000, done_cb, &results[0]);
    RUN_UNTIL(results[0].calls == 1, WAIT_MS);
    snprintf(want, sizeof(want), "etcd %s: connection failed", fx.dead_url);
    ck_assert_str_eq(results[0].err, want);
    ck_assert_int_eq(fx.nseen, 0);
    ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.url);

    fx.reply = "{\"ID\":\"7587883116461250000\",\"TTL\":\"5\"}";
    etcd_post(fx.etcd, "/v3/lease/grant", json_pack("{s:i}", "TTL", 5), 2000, done_cb, &results[1]);
    RUN_UNTIL(results[1].calls == 1, WAIT_MS);
    ck_assert_msg(!results[1].failed, "%s", results[1].err);
    ck_assert(etcd_int(json_object_get(results[1].res, "ID")) == INT64_C(7587883116461250000));
    ck_assert_int_eq(fx.nseen, 1);
    ck_assert_str_eq(fx.seen[0].uri, "/v3/lease/grant");

    /* and round again when that one fails too */
    etcd_free(fx.etcd);
    fx.etcd = NULL;
    client(2, fx.url, fx.dead_url);
    fx.mode = FAKE_HOLD;
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 100, done_cb, &results[2]);
    RUN_UNTIL(results[2].calls == 1, WAIT_MS);
    snprintf(want, sizeof(want), "etcd %s: timeout", fx.url);
    ck_assert_str_eq(results[2].err, want);
    ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.dead_url);
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 100, done_cb, &results[3]);
    RUN_UNTIL(results[3].calls == 1, WAIT_MS);
    ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.url);
}
END_TEST

/* Requests queued on one dead endpoint all fail; that is one failure of the endpoint, not one
 * per request (which with two endpoints came back to the dead one), and each names it. */
START_TEST(test_requests_failing_together_move_on_once)
{
    char want[128];

    client(2, fx.dead_url, fx.url);
    for (int i = 0; i < 2; i++)
        etcd_post(fx.etcd, "/v3/kv/range", json_object(), 2000, done_cb, &results[i]);
    RUN_UNTIL(results[0].calls == 1 && results[1].calls == 1, WAIT_MS);
    snprintf(want, sizeof(want), "etcd %s: connection failed", fx.dead_url);
    ck_assert_str_eq(results[0].err, want);
    ck_assert_str_eq(results[1].err, want);
    ck_assert_str_eq(etcd_endpoint(fx.etcd), fx.url);

    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 2000, done_cb, &results[2]);
    RUN_UNTIL(results[2].calls == 1, WAIT_MS);
    ck_assert_msg(!results[2].failed, "%s", results[2].err);
    ck_assert_int_eq(fx.nseen, 1);
}
END_TEST

START_TEST(test_free_with_a_request_in_flight_never_calls_back)
{
    fx.mode = FAKE_HOLD;
    client(1, fx.url, NULL);
    etcd_post(fx.etcd, "/v3/kv/txn", json_object(), 2000, done_cb, &results[0]);
    etcd_post(fx.etcd, "/v3/kv/txn", json_object(), 2000, done_cb, &results[1]); /* queued */
    RUN_UNTIL(fx.nseen == 1, WAIT_MS);
    etcd_free(fx.etcd);
    fx.etcd = NULL;
    /* The answer comes after all; the server sees the connection gone. */
    reply(fx.seen[0].req, 200, "{}");
    fx.seen[0].req = NULL;
    RUN_UNTIL(fx.seen[0].closed, WAIT_MS);
    ck_assert_int_eq(results[0].calls, 0);
    ck_assert_int_eq(results[1].calls, 0);
    ck_assert_int_eq(fx.nseen, 1);
}
END_TEST

/* --- watches ------------------------------------------------------------------------- */

#define CREATED "{\"result\":{\"header\":{\"revision\":\"42\"},\"created\":true}}\n"
#define PUT_API                                                                                    \
    "{\"result\":{\"header\":{\"revision\":\"43\"},\"events\":[{\"kv\":{"                          \
    "\"key\":\"L3ZlZXIvcG9vbHMvYXBp\",\"create_revision\":\"43\",\"mod_revision\":\"43\","         \
    "\"version\":\"1\",\"value\":\"eyJzaGFyZXMiOnt9fQ==\"}}]}}\n"
#define DEL_API_1 "{\"result\":{\"header\":{\"revision\":\"44\"},\"eve"
#define DEL_API_2                                                                                  \
    "nts\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"L3ZlZXIvcG9vbHMvYXBp\","                        \
    "\"mod_revision\":\"44\"}}]}}\n"
#define REV(n) "{\"result\":{\"header\":{\"revision\":\"" #n "\"}}}\n"

/* A watch on the fake etcd, its request seen and answered with a stream. */
static void start_watch(void)
{
    json_t *create = json_pack("{s:o,s:o,s:s}", "key", etcd_b64("/veer/", 6), "range_end",
                               etcd_b64("/veer0", 6), "start_revision", "43");
    json_t *want = json_pack("{s:O}", "create_request", create);

    if (fx.etcd == NULL)
        client(1, fx.url, NULL);
    wt.w = etcd_watch_start(fx.etcd, create, watch_cb, watch_end_cb, &wt);
    ck_assert_ptr_nonnull(wt.w);
    RUN_UNTIL(fx.nseen == 1, WAIT_MS);
    ck_assert(fx.seen[0].post);
    ck_assert_str_eq(fx.seen[0].uri, "/v3/watch");
    ck_assert_str_eq(fx.seen[0].ctype, "application/json");
    ck_assert_ptr_nonnull(fx.seen[0].body);
    ck_assert(json_equal(fx.seen[0].body, want));
    json_decref(want);
}

/* A request and its answer on the client's other connection: whatever was already on the
 * loopback wire to the client before has been read and handed over by then. */
static void round_trip(void)
{
    struct result r = {0};

    etcd_post(fx.etcd, "/v3/maintenance/status", json_object(), 2000, done_cb, &r);
    RUN_UNTIL(r.calls == 1, WAIT_MS);
    ck_assert_msg(!r.failed, "%s", r.err);
    json_decref(r.res);
}

START_TEST(test_watch_delivers_each_message_split_or_coalesced)
{
    json_t *ev, *kv;
    size_t n;
    char *text;

    start_watch();
    ck_assert_int_eq(wt.nmsgs, 0);
    fake_chunk(0, CREATED);
    RUN_UNTIL(wt.nmsgs == 1, WAIT_MS);
    ck_assert(json_is_true(json_object_get(json_object_get(wt.msgs[0], "result"), "created")));

    fake_chunk(0, PUT_API);
    RUN_UNTIL(wt.nmsgs == 2, WAIT_MS);
    ev = json_array_get(json_object_get(json_object_get(wt.msgs[1], "result"), "events"), 0);
    kv = json_object_get(ev, "kv");
    ck_assert_ptr_null(json_object_get(ev, "type")); /* PUT is the default: the gateway omits it */
    text = etcd_unb64(json_object_get(kv, "key"), &n);
    ck_assert_str_eq(text, "/veer/pools/api");
    free(text);
    text = etcd_unb64(json_object_get(kv, "value"), &n);
    ck_assert_str_eq(text, "{\"shares\":{}}");
    free(text);
    ck_assert(etcd_int(json_object_get(kv, "mod_revision")) == 43);

    /* Half a message waits for the rest. */
    fake_chunk(0, DEL_API_1);
    RUN_UNTIL(fx.seen[0].flushed, WAIT_MS);
    round_trip();
    ck_assert_int_eq(wt.nmsgs, 2);
    fake_chunk(0, DEL_API_2);
    RUN_UNTIL(wt.nmsgs == 3, WAIT_MS);
    ev = json_array_get(json_object_get(json_object_get(wt.msgs[2], "result"), "events"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(ev, "type")), "DELETE");

    /* Three in one chunk, the last one finished by the next chunk. */
    fake_chunk(0, REV(45) REV(46) "{\"result\":{\"header\":");
    RUN_UNTIL(wt.nmsgs == 5, WAIT_MS);
    fake_chunk(0, "{\"revision\":\"47\"}}}\n");
    RUN_UNTIL(wt.nmsgs == 6, WAIT_MS);
    for (int i = 3; i < 6; i++)
        ck_assert(etcd_int(json_object_get(
                      json_object_get(json_object_get(wt.msgs[i], "result"), "header"),
                      "revision")) == 42 + i);
    ck_assert_int_eq(wt.ends, 0);
    ck_assert_ptr_nonnull(wt.w);
    ck_assert(!fx.seen[0].closed);
}
END_TEST

START_TEST(test_watch_stop_closes_the_stream_without_callbacks)
{
    start_watch();
    fake_chunk(0, CREATED);
    RUN_UNTIL(wt.nmsgs == 1, WAIT_MS);
    etcd_watch_stop(wt.w);
    wt.w = NULL;
    RUN_UNTIL(fx.seen[0].closed, WAIT_MS);
    ck_assert_int_eq(wt.nmsgs, 1);
    ck_assert_int_eq(wt.ends, 0);
    /* requests still work */
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 2000, done_cb, &results[0]);
    RUN_UNTIL(results[0].calls == 1, WAIT_MS);
    ck_assert_msg(!results[0].failed, "%s", results[0].err);
}
END_TEST

/* cluster.c stops the watch from the message callback when etcd cancels it (compaction). */
START_TEST(test_watch_stopped_from_its_message_callback)
{
    wt.stop_at = 2;
    start_watch();
    fake_chunk(0, CREATED "{\"result\":{\"canceled\":true,\"compact_revision\":\"40\"}}\n" REV(50));
    RUN_UNTIL(wt.nmsgs == 2, WAIT_MS);
    ck_assert_ptr_null(wt.w);
    RUN_UNTIL(fx.seen[0].closed, WAIT_MS);
    ck_assert_int_eq(wt.nmsgs, 2); /* not the one after the cancel */
    ck_assert_int_eq(wt.ends, 0);
    ck_assert(json_is_true(json_object_get(json_object_get(wt.msgs[1], "result"), "canceled")));
}
END_TEST

START_TEST(test_watch_end_of_stream_reported_once)
{
    wt.stop_on_end = true;
    start_watch();
    fake_chunk(0, CREATED);
    evhttp_send_reply_end(fx.seen[0].req);
    fx.seen[0].req = NULL;
    RUN_UNTIL(wt.ends == 1, WAIT_MS);
    ck_assert_str_eq(wt.why, "etcd: watch stream ended");
    ck_assert_int_eq(wt.nmsgs, 1);
    ck_assert_ptr_null(wt.w);
    round_trip();
    ck_assert_int_eq(wt.ends, 1);
}
END_TEST

START_TEST(test_watch_cut_by_the_server_ends)
{
    wt.stop_on_end = true;
    start_watch();
    fake_chunk(0, CREATED);
    RUN_UNTIL(wt.nmsgs == 1, WAIT_MS);
    /* etcd goes away mid-stream: its side of the connection closes */
    evhttp_connection_free(evhttp_request_get_connection(fx.seen[0].req));
    fx.seen[0].req = NULL;
    RUN_UNTIL(wt.ends == 1, WAIT_MS);
    ck_assert_str_eq(wt.why, "etcd: watch stream ended");
    ck_assert_int_eq(wt.nmsgs, 1);
}
END_TEST

START_TEST(test_watch_refused_by_etcd)
{
    fx.watch_code = 400;
    fx.reply = "{\"error\":\"invalid create_request\",\"code\":3}";
    wt.stop_on_end = true;
    start_watch();
    RUN_UNTIL(wt.ends == 1, WAIT_MS);
    ck_assert_str_eq(wt.why, "etcd: watch refused");
    ck_assert_int_eq(wt.nmsgs, 0);
}
END_TEST

START_TEST(test_watch_on_a_refused_port_ends)
{
    client(1, fx.dead_url, NULL);
    wt.stop_on_end = true;
    wt.w = etcd_watch_start(fx.etcd, json_object(), watch_cb, watch_end_cb, &wt);
    ck_assert_ptr_nonnull(wt.w);
    ck_assert_int_eq(wt.ends, 0); /* later, not from inside etcd_watch_start */
    RUN_UNTIL(wt.ends == 1, WAIT_MS);
    ck_assert_str_eq(wt.why, "etcd: watch refused");
    ck_assert_int_eq(wt.nmsgs, 0);
}
END_TEST

START_TEST(test_watch_malformed_message_ends_it)
{
    wt.stop_on_end = true;
    start_watch();
    fake_chunk(0, CREATED "{\"result\": oops}\n" REV(50));
    RUN_UNTIL(wt.ends == 1, WAIT_MS);
    ck_assert_str_eq(wt.why, "etcd: malformed watch message");
    ck_assert_int_eq(wt.nmsgs, 1);
    ck_assert_ptr_null(wt.w);
    RUN_UNTIL(fx.seen[0].closed, WAIT_MS);
}
END_TEST

START_TEST(test_watch_and_requests_use_separate_connections)
{
    start_watch();
    fake_chunk(0, CREATED);
    RUN_UNTIL(wt.nmsgs == 1, WAIT_MS);
    etcd_post(fx.etcd, "/v3/kv/range", json_object(), 2000, done_cb, &results[0]);
    RUN_UNTIL(results[0].calls == 1, WAIT_MS);
    ck_assert_msg(!results[0].failed, "%s", results[0].err);
    ck_assert_int_eq(fx.nseen, 2);
    ck_assert_int_ne(fx.seen[1].peer_port, fx.seen[0].peer_port);
    fake_chunk(0, REV(43));
    RUN_UNTIL(wt.nmsgs == 2, WAIT_MS);
    /* stop the watch, then free the client, as cluster.c does: both connections close */
    etcd_watch_stop(wt.w);
    wt.w = NULL;
    etcd_free(fx.etcd);
    fx.etcd = NULL;
    RUN_UNTIL(fx.seen[0].closed && fx.seen[1].closed, WAIT_MS);
}
END_TEST

static Suite *etcd_suite(void)
{
    Suite *s = suite_create("etcd");
    TCase *te = tcase_create("encoding");
    TCase *tc = tcase_create("client");

    tcase_add_test(te, test_b64_matches_rfc4648_vectors_both_ways);
    tcase_add_test(te, test_b64_round_trips_every_byte_value_and_length_mod_3);
    tcase_add_test(te, test_unb64_rejects_what_is_not_base64);
    tcase_add_test(te, test_unb64_of_empty_string_is_empty);
    tcase_add_test(te, test_int_reads_strings_and_integers);
    tcase_add_test(te, test_new_rejects_bad_endpoints_naming_them);
    tcase_add_test(te, test_endpoint_is_the_first_in_canonical_form);
    tcase_set_timeout(te, 30);
    suite_add_tcase(s, te);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_post_sends_json_and_hands_back_the_reply);
    tcase_add_test(tc, test_posts_share_one_connection_and_get_their_own_replies);
    tcase_add_test(tc, test_http_error_carries_etcds_message_and_keeps_the_endpoint);
    tcase_add_test(tc, test_reply_that_is_not_json_is_an_error);
    tcase_add_test(tc, test_silent_server_times_out_then_next_request_reconnects);
    tcase_add_test(tc, test_refused_connection_fails_over_to_the_next_endpoint);
    tcase_add_test(tc, test_requests_failing_together_move_on_once);
    tcase_add_test(tc, test_free_with_a_request_in_flight_never_calls_back);
    tcase_add_test(tc, test_watch_delivers_each_message_split_or_coalesced);
    tcase_add_test(tc, test_watch_stop_closes_the_stream_without_callbacks);
    tcase_add_test(tc, test_watch_stopped_from_its_message_callback);
    tcase_add_test(tc, test_watch_end_of_stream_reported_once);
    tcase_add_test(tc, test_watch_cut_by_the_server_ends);
    tcase_add_test(tc, test_watch_refused_by_etcd);
    tcase_add_test(tc, test_watch_on_a_refused_port_ends);
    tcase_add_test(tc, test_watch_malformed_message_ends_it);
    tcase_add_test(tc, test_watch_and_requests_use_separate_connections);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(etcd_suite());
    int failed;

    signal(SIGPIPE, SIG_IGN); /* the fake etcd may write to a connection the client dropped */
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
