/*
 * check_http.c - request/response head parsing, veer's RFC 9112 checks on
 * top of strict llhttp, body framing, and the heads veer forwards.
 */
#include "conf.h"
#include "http.h"
#include "path.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct http_limits limits = {
    .line_bytes = 8192, .header_bytes = 32768, .header_count = 100, .body_bytes = 0};

static struct http_msg *new_msg(llhttp_type_t type, const struct http_limits *lim)
{
    struct http_msg *m = malloc(http_msg_size(lim->header_count));

    http_msg_init(m, type, lim);
    return m;
}

/* Parse a whole head held in s; returns the result of the head stage. */
static enum http_result parse_head(struct http_msg *m, const char *s, size_t *used)
{
    return http_parse(m, s, s, strlen(s), used);
}

/* Expect s (a request) to be refused with status. */
static void expect_refused(const char *s, int status)
{
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used;
    enum http_result r = parse_head(m, s, &used);

    ck_assert_msg(r == HTTP_INVALID, "accepted: %s", s);
    ck_assert_msg(m->err_status == status, "status %d, want %d for: %s", m->err_status, status, s);
    free(m);
}

static void expect_accepted(const char *s)
{
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used;
    enum http_result r = parse_head(m, s, &used);

    ck_assert_msg(r == HTTP_HEAD_DONE, "refused (%d %s): %s", m->err_status,
                  m->err_what ? m->err_what : "", s);
    free(m);
}

START_TEST(test_simple_get_head_spans)
{
    const char *s = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Y:  v  \r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_uint_eq(used, strlen(s));
    ck_assert_uint_eq(m->head_len, strlen(s));
    ck_assert_uint_eq(m->nhdr, 2);
    ck_assert(http_span_eq(s, m->url, "/a?b=1", 6));
    ck_assert(http_span_eq(s, m->hdr[1].value, "v", 1)); /* trailing OWS trimmed */
    ck_assert_int_eq(m->host, 0);
    ck_assert_int_eq(m->minor, 1);
    ck_assert(http_keep_alive(m));
    /* Bodiless: parsing zero more bytes completes the message. */
    ck_assert_int_eq(http_parse(m, s, s + used, 0, &used), HTTP_MSG_DONE);
    free(m);
}
END_TEST

START_TEST(test_head_split_across_reads)
{
    const char *s = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used, off = 0, hl;

    for (; off < 20; off += used)
        ck_assert_int_eq(http_parse(m, s, s + off, 1, &used), HTTP_NEED_MORE);
    ck_assert_int_eq(http_parse(m, s, s + off, strlen(s) - off, &used), HTTP_HEAD_DONE);
    ck_assert_uint_eq(m->head_len, strlen(s) - 5);
    hl = off + used;
    ck_assert_uint_eq(hl, strlen(s) - 5);
    ck_assert(m->flags & HF_HAS_CL);
    ck_assert_uint_eq(m->content_length, 5);
    ck_assert_int_eq(http_parse(m, s, s + hl, 3, &used), HTTP_NEED_MORE);
    ck_assert_int_eq(http_parse(m, s, s + hl + 3, 2, &used), HTTP_MSG_DONE);
    ck_assert_uint_eq(m->body_seen, 5);
    free(m);
}
END_TEST

START_TEST(test_pipelined_request_stops_at_message_end)
{
    const char *s = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used, used2;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_uint_eq(used, 28);
    ck_assert_int_eq(http_parse(m, s, s + used, strlen(s) - used, &used2), HTTP_MSG_DONE);
    ck_assert_uint_eq(used2, 0); /* the next request is left alone */
    free(m);
}
END_TEST

START_TEST(test_chunked_body_framing)
{
    const char *s = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5;ext=1\r\nhello\r\n0\r\nTrailer-X: 1\r\n\r\nGET";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used, used2;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert(m->flags & HF_CHUNKED);
    ck_assert_int_eq(http_parse(m, s, s + used, strlen(s) - used, &used2), HTTP_MSG_DONE);
    ck_assert_uint_eq(used + used2, strlen(s) - 3);
    ck_assert_uint_eq(m->body_seen, 5);
    ck_assert_uint_eq(m->nhdr, 2); /* trailers are not head fields */
    free(m);
}
END_TEST

START_TEST(test_framing_ambiguities_are_refused)
{
    /* llhttp (strict) catches these itself. */
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                   400);
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: "
                   "chunked\r\n\r\n",
                   400);
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400);
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400);
    expect_refused("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.1\nHost: a\n\n", 400);
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400);
    /* llhttp lets these through; veer's own checks refuse them. */
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nX:\r\n b\r\n\r\n", 400);
    expect_refused("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400);
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n",
                   400);
    expect_refused("GET /\r\n\r\n", 400);
    expect_refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    expect_refused("GET / HTTP/1.1\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n", 400);
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, Transfer-Encoding\r\n\r\n",
                   400);
    expect_refused("GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_refused("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_refused("GET http://u@evil/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_refused("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501);
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417);
    expect_refused("get / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
}
END_TEST

START_TEST(test_unambiguous_requests_are_accepted)
{
    expect_accepted("GET / HTTP/1.0\r\n\r\n");
    expect_accepted("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_accepted("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n");
    expect_accepted("GET http://example.com:8080/p HTTP/1.1\r\nHost: other\r\n\r\n");
    expect_accepted("GET / HTTP/1.1\r\nHost: [::1]:80\r\nX:\r\n\r\n");
    expect_accepted("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
}
END_TEST

START_TEST(test_limits_give_414_and_431)
{
    struct http_limits small = {.line_bytes = 64, .header_bytes = 256, .header_count = 4};
    struct http_msg *m = new_msg(HTTP_REQUEST, &small);
    char buf[2048];
    size_t used;

    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    ck_assert_int_eq(http_parse(m, buf, buf, 200, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 414);
    free(m);

    m = new_msg(HTTP_REQUEST, &small);
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n");
    ck_assert_int_eq(parse_head(m, buf, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 431);
    free(m);

    m = new_msg(HTTP_REQUEST, &small);
    memset(buf, 'b', sizeof(buf));
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    ck_assert_int_eq(http_parse(m, buf, buf, 400, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 431);
    free(m);
}
END_TEST

START_TEST(test_body_limit_gives_413)
{
    struct http_limits lim = limits;
    struct http_msg *m;
    const char *cl = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    const char *ch = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "b\r\nhello world\r\n0\r\n\r\n";
    size_t used, used2;

    lim.body_bytes = 10;
    m = new_msg(HTTP_REQUEST, &lim);
    ck_assert_int_eq(parse_head(m, cl, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 413);
    free(m);
    m = new_msg(HTTP_REQUEST, &lim);
    ck_assert_int_eq(http_parse(m, ch, ch, 56, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(http_parse(m, ch, ch + used, strlen(ch) - used, &used2), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 413);
    free(m);
}
END_TEST

START_TEST(test_request_rewrite_drops_hop_by_hop_and_adds_forwarding)
{
    const char *s = "GET /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n"
                    "X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\n"
                    "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
                    "X-Forwarded-Proto: https\r\nVia: 1.0 edge\r\nAccept: */*\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "10.0.0.9", .tls = false};
    char out[2048];
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_uint_le(0, http_request_bound(m, &fi));
    n = http_build_request(m, s, &fi, out);
    ck_assert_uint_le(n, http_request_bound(m, &fi));
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                          "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"
                          "X-Forwarded-Proto: http\r\nVia: 1.0 edge, 1.1 veer\r\n\r\n");
    free(m);
}
END_TEST

START_TEST(test_absolute_form_target_sets_host)
{
    const char *s = "GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    const char *s2 = "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "1.2.3.4", .tls = true};
    char out[1024];
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    n = http_build_request(m, s, &fi, out);
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
                          "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
                          "Via: 1.1 veer\r\n\r\n");
    http_msg_init(m, HTTP_REQUEST, &limits);
    ck_assert_int_eq(parse_head(m, s2, &used), HTTP_HEAD_DONE);
    n = http_build_request(m, s2, &fi, out);
    out[n] = '\0';
    ck_assert_ptr_nonnull(strstr(out, "GET / HTTP/1.1\r\nHost: example.com\r\n"));
    free(m);
}
END_TEST

/* A route's rewrite and request_headers: the new target, fields removed or set once. */
START_TEST(test_route_rewrite_sets_and_removes_fields)
{
    const char *s = "GET /old/a?q=1 HTTP/1.1\r\nHost: h\r\nX-Debug: 1\r\nx-route: client\r\n"
                    "Accept: */*\r\nX-ROUTE: again\r\n\r\n";
    const char *abs = "GET http://example.com/p HTTP/1.1\r\nHost: example.com\r\n\r\n";
    const char *h10 = "GET /p HTTP/1.0\r\n\r\n";
    struct conf_header set[] = {{.name = "X-Route", .value = "r"}};
    struct conf_header host[] = {{.name = "Host", .value = "inner"}};
    char *rm_v[] = {"x-debug"};
    struct conf_strings rm = {.v = rm_v, .n = 1};
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "10.0.0.9",
                               .target = "/new/a?q=1",
                               .target_len = 10,
                               .set = set,
                               .nset = 1,
                               .remove = &rm};
    char out[2048];
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    n = http_build_request(m, s, &fi, out);
    ck_assert_uint_le(n, http_request_bound(m, &fi));
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /new/a?q=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Route: r\r\n"
                          "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 veer\r\n\r\n");
    /* setting Host replaces the one an absolute-form target or HTTP/1.0 would get */
    fi = (struct http_fwd_info){.client_ip = "1.2.3.4", .set = host, .nset = 1};
    http_msg_init(m, HTTP_REQUEST, &limits);
    ck_assert_int_eq(parse_head(m, abs, &used), HTTP_HEAD_DONE);
    n = http_build_request(m, abs, &fi, out);
    ck_assert_uint_le(n, http_request_bound(m, &fi));
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /p HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 1.2.3.4\r\n"
                          "X-Forwarded-Proto: http\r\nVia: 1.1 veer\r\n\r\n");
    http_msg_init(m, HTTP_REQUEST, &limits);
    ck_assert_int_eq(parse_head(m, h10, &used), HTTP_HEAD_DONE);
    n = http_build_request(m, h10, &fi, out);
    out[n] = '\0';
    ck_assert_ptr_nonnull(strstr(out, "GET /p HTTP/1.1\r\nHost: inner\r\n"));
    ck_assert_ptr_null(strstr(out, "Host: \r\n"));
    free(m);
}
END_TEST

/*
 * The modules' edits (trace_context's): a field replaced (every client field
 * of that name left out, the new one after the route's set) or only removed;
 * a name the route's request_headers set or remove stays the route's.
 */
START_TEST(test_module_edits_replace_and_remove_fields)
{
    const char *s = "GET /p HTTP/1.1\r\nHost: h\r\ntraceparent: bad\r\nTraceState: a=1\r\n"
                    "Accept: */*\r\nTRACEPARENT: again\r\ntracestate: b=2\r\n\r\n";
    struct conf_header edit[] = {{.name = "traceparent", .value = "00-new"},
                                 {.name = "tracestate", .value = NULL}};
    struct conf_header set[] = {{.name = "X-Route", .value = "r"}};
    char *rm_v[] = {"traceparent"};
    struct conf_strings rm = {.v = rm_v, .n = 1};
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "10.0.0.9", .edit = edit, .nedit = 2};
    char out[2048];
    size_t used, n;
    unsigned count;
    const char *v;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    v = http_find_header_count(m, s, "traceparent", &n, &count);
    ck_assert_uint_eq(count, 2);
    ck_assert_int_eq(memcmp(v, "bad", n), 0);
    n = http_build_request(m, s, &fi, out);
    ck_assert_uint_le(n, http_request_bound(m, &fi));
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\ntraceparent: 00-new\r\n"
                          "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 veer\r\n\r\n");
    /* with a route's request_headers: its set comes first; its remove beats the edit */
    fi.set = set;
    fi.nset = 1;
    fi.remove = &rm;
    n = http_build_request(m, s, &fi, out);
    ck_assert_uint_le(n, http_request_bound(m, &fi));
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Route: r\r\n"
                          "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 veer\r\n\r\n");
    free(m);
}
END_TEST

/* Hop-by-hop fields are not counted: Connection: traceparent makes it absent. */
START_TEST(test_header_count_skips_hop_by_hop_fields)
{
    const char *s = "GET /p HTTP/1.1\r\nHost: h\r\ntraceparent: x\r\nConnection: traceparent\r\n"
                    "\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used, n = 0;
    unsigned count = 9;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_ptr_null(http_find_header_count(m, s, "traceparent", &n, &count));
    ck_assert_uint_eq(count, 0);
    ck_assert_ptr_null(http_find_header_count(m, s, "tracestate", &n, &count));
    ck_assert_uint_eq(count, 0);
    free(m);
}
END_TEST

/* The host a request names, and its query. */
START_TEST(test_request_host_and_query)
{
    const char *s = "GET /p?x=1&y HTTP/1.1\r\nHost: API.example.com:80\r\n\r\n";
    const char *abs = "GET http://a.example.com:8/q HTTP/1.1\r\nHost: other\r\n\r\n";
    const char *h10 = "GET / HTTP/1.0\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    const char *v;
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    v = http_request_host(m, s, &n);
    ck_assert_int_eq((int)n, 18);
    ck_assert_int_eq(memcmp(v, "API.example.com:80", n), 0);
    v = http_target_query(m, s, &n);
    ck_assert_int_eq((int)n, 6);
    ck_assert_int_eq(memcmp(v, "?x=1&y", n), 0);
    http_msg_init(m, HTTP_REQUEST, &limits);
    ck_assert_int_eq(parse_head(m, abs, &used), HTTP_HEAD_DONE);
    v = http_request_host(m, abs, &n);
    ck_assert_int_eq(memcmp(v, "a.example.com:8", n), 0);
    ck_assert_int_eq((int)n, 15);
    http_target_query(m, abs, &n);
    ck_assert_int_eq((int)n, 0);
    http_msg_init(m, HTTP_REQUEST, &limits);
    ck_assert_int_eq(parse_head(m, h10, &used), HTTP_HEAD_DONE);
    ck_assert_ptr_null(http_request_host(m, h10, &n));
    free(m);
}
END_TEST

START_TEST(test_upgrade_request_keeps_upgrade)
{
    const char *s =
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "1.2.3.4"};
    char out[1024];
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert(m->flags & HF_UPGRADE);
    n = http_build_request(m, s, &fi, out);
    out[n] = '\0';
    ck_assert_ptr_nonnull(strstr(out, "Upgrade: websocket\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "Connection: upgrade\r\n"));
    free(m);
}
END_TEST

START_TEST(test_response_rewrite)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Bar\r\nX-Bar: 1\r\n"
                    "Keep-Alive: timeout=5\r\nServer: s\r\n\r\nok";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    char out[1024];
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(m->status, 200);
    n = http_build_response(m, s, true, false, out);
    out[n] = '\0';
    ck_assert_str_eq(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: s\r\nVia: 1.1 veer\r\n"
                          "Connection: close\r\n\r\n");
    free(m);
}
END_TEST

START_TEST(test_response_to_head_has_no_body)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    size_t used, used2;

    m->head_request = true;
    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(http_parse(m, s, s + used, 0, &used2), HTTP_MSG_DONE);
    free(m);
}
END_TEST

START_TEST(test_interim_then_final_response)
{
    const char *s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    size_t used, used2, used3;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(m->status, 100);
    ck_assert_int_eq(http_parse(m, s, s + used, strlen(s) - used, &used2), HTTP_MSG_DONE);
    ck_assert_int_eq(
        http_parse(m, s + used + used2, s + used + used2, strlen(s) - used - used2, &used3),
        HTTP_HEAD_DONE);
    ck_assert_int_eq(m->status, 204);
    free(m);
}
END_TEST

START_TEST(test_conflicting_response_length_is_bad_gateway)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    size_t used;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 502);
    free(m);
}
END_TEST

START_TEST(test_close_delimited_response_ends_at_eof)
{
    const char *s = "HTTP/1.1 200 OK\r\n\r\nsome body";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    size_t used, used2;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert(llhttp_message_needs_eof(&m->parser));
    ck_assert_int_eq(http_parse(m, s, s + used, strlen(s) - used, &used2), HTTP_NEED_MORE);
    ck_assert_int_eq(http_parse_eof(m), HTTP_MSG_DONE);
    free(m);
}
END_TEST

START_TEST(test_dechunk_in_place)
{
    char s[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    size_t used, used2;
    char *body;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    m->dechunk = true;
    body = s + used;
    ck_assert_int_eq(http_parse(m, s, body, strlen(body), &used2), HTTP_MSG_DONE);
    ck_assert_int_eq((int)(m->dechunk_dst - body), 7);
    ck_assert(memcmp(body, "abcdefg", 7) == 0);
    free(m);
}
END_TEST

START_TEST(test_error_response_is_json)
{
    char out[1024];
    size_t n = http_error_response(503, "no eligible backend", true, "Retry-After: 5\r\n", out,
                                   sizeof(out));

    out[n] = '\0';
    ck_assert_ptr_nonnull(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "Content-Type: application/json\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "Connection: close\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "Retry-After: 5\r\n"));
    ck_assert_ptr_nonnull(
        strstr(out, "{\"error\":\"service_unavailable\",\"status\":503,\"detail\":\"no eligible "
                    "backend\"}\n"));
}
END_TEST

START_TEST(test_method_idempotency)
{
    const char *g = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *p = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used;

    parse_head(m, g, &used);
    ck_assert(http_method_idempotent(m));
    http_msg_init(m, HTTP_REQUEST, &limits);
    parse_head(m, p, &used);
    ck_assert(!http_method_idempotent(m));
    free(m);
}
END_TEST

/* A complete head that arrives in one read is held to the same limits. */
START_TEST(test_limits_apply_to_a_head_complete_in_one_read)
{
    struct http_limits small = {.line_bytes = 64, .header_bytes = 256, .header_count = 100};
    struct http_msg *m = new_msg(HTTP_REQUEST, &small);
    char buf[2048];
    size_t used;

    snprintf(buf, sizeof(buf), "GET /%0100d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    ck_assert_int_eq(parse_head(m, buf, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 414);
    http_msg_init(m, HTTP_REQUEST, &small);
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: %0300d\r\n\r\n", 0);
    ck_assert_int_eq(parse_head(m, buf, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 431);
    http_msg_init(m, HTTP_REQUEST, &small);
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: %0200d\r\n\r\n", 0);
    ck_assert_int_eq(parse_head(m, buf, &used), HTTP_HEAD_DONE);
    free(m);
}
END_TEST

/* 204 and 304 never have a body, even when they carry a Content-Length. */
START_TEST(test_304_with_content_length_has_no_body)
{
    const char *s = "HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\n\r\nHTTP/1.1";
    struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
    size_t used, used2;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(http_parse(m, s, s + used, strlen(s) - used, &used2), HTTP_MSG_DONE);
    ck_assert_uint_eq(used2, 0);
    free(m);
}
END_TEST

START_TEST(test_fuzz_and_corpus_findings_are_refused)
{
    /* Each of these once got through (tests/integration/test_smuggling.py, tests/fuzz). */
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400); /* empty name */
    expect_refused("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400);  /* fragment */
    expect_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n",
                   400); /* llhttp does not frame it as chunked */
}
END_TEST

START_TEST(test_http09_line_is_refused_at_once)
{
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    const char *s = "GET /\r\n";
    size_t used;

    /* No more bytes will come: the verdict cannot wait for them. */
    ck_assert_int_eq(parse_head(m, s, &used), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 400);
    free(m);
}
END_TEST

START_TEST(test_chunk_extensions_are_bounded)
{
    static char body[CHUNK_EXT_MAX + 200];
    const char *h = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used, used2, n;

    ck_assert_int_eq(parse_head(m, h, &used), HTTP_HEAD_DONE);
    n = (size_t)snprintf(body, sizeof(body), "5;a=%0*d\r\nhello\r\n", CHUNK_EXT_MAX / 2, 0);
    ck_assert_int_eq(http_parse(m, body, body, n, &used2), HTTP_NEED_MORE); /* under the cap */
    n = (size_t)snprintf(body, sizeof(body), "5;a=%0*d\r\nhello\r\n", CHUNK_EXT_MAX, 0);
    ck_assert_int_eq(http_parse(m, body, body, n, &used2), HTTP_INVALID);
    ck_assert_int_eq(m->err_status, 400);
    free(m);
}
END_TEST

START_TEST(test_response_transfer_encoding_must_be_chunked)
{
    const char *bad[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct http_msg *m = new_msg(HTTP_RESPONSE, &limits);
        size_t used;

        ck_assert_msg(parse_head(m, bad[i], &used) == HTTP_INVALID, "accepted: %s", bad[i]);
        ck_assert_int_eq(m->err_status, 502);
        free(m);
    }
}
END_TEST

START_TEST(test_http10_without_host_gets_an_empty_host)
{
    const char *s = "GET /h HTTP/1.0\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "10.0.0.9", .tls = false};
    char out[1024];
    size_t used, n;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    n = http_build_request(m, s, &fi, out);
    out[n] = '\0';
    ck_assert_str_eq(out, "GET /h HTTP/1.1\r\nHost: \r\nX-Forwarded-For: 10.0.0.9\r\n"
                          "X-Forwarded-Proto: http\r\nVia: 1.0 veer\r\n\r\n");
    free(m);
}
END_TEST

/*
 * Canonicalize the path of a request for `target` (in a writable copy) and build
 * the forwarded head; returns the forwarded request line (static), or NULL
 * when the path is refused (then *status, *what say why).
 */
static const char *forwarded_line(const char *target, int *status, const char **what)
{
    static char line[1024];
    char head[512], out[1024];
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    struct http_fwd_info fi = {.client_ip = "1.2.3.4"};
    size_t used, n;
    int rc;

    snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", target);
    ck_assert_int_eq(parse_head(m, head, &used), HTTP_HEAD_DONE);
    rc = http_canonicalize_path(m, head);
    *status = m->err_status;
    *what = m->err_what;
    if (rc < 0) {
        ck_assert(!(m->flags & HF_PATH));
        free(m);
        return NULL;
    }
    ck_assert(m->flags & HF_PATH);
    ck_assert_int_eq(http_canonicalize_path(m, head), 0); /* once is enough */
    n = http_build_request(m, head, &fi, out);
    ck_assert_uint_le(n, http_request_bound(m, &fi));
    out[n] = '\0';
    *strstr(out, "\r\n") = '\0';
    snprintf(line, sizeof(line), "%s", out);
    free(m);
    return line;
}

START_TEST(test_canonical_path_is_forwarded_with_the_query_as_it_came)
{
    static const struct {
        const char *target, *line;
    } cases[] = {
        {"/", "GET / HTTP/1.1"},
        {"/a/b?x=1", "GET /a/b?x=1 HTTP/1.1"},
        {"/a/./b/../c", "GET /a/c HTTP/1.1"},
        {"//a///b//", "GET /a/b/ HTTP/1.1"},
        {"/a/b/..", "GET /a/ HTTP/1.1"},
        {"/%7Euser/%41", "GET /~user/A HTTP/1.1"},
        {"/a%20b/%2a", "GET /a%20b/%2A HTTP/1.1"},
        {"/a/%2e%2E/b", "GET /b HTTP/1.1"},
        {"/x/../y?q=/../a&r=%2F//", "GET /y?q=/../a&r=%2F// HTTP/1.1"},
        {"/.hidden/x", "GET /.hidden/x HTTP/1.1"},
        {"/a?", "GET /a? HTTP/1.1"},
        {"http://example.com//p/./q?z=%7E", "GET /p/q?z=%7E HTTP/1.1"},
        {"http://example.com?q", "GET /?q HTTP/1.1"},
        {"http://example.com", "GET / HTTP/1.1"},
    };
    int st;
    const char *what;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = forwarded_line(cases[i].target, &st, &what);

        ck_assert_msg(got != NULL, "%s refused: %s", cases[i].target, what);
        ck_assert_msg(strcmp(got, cases[i].line) == 0, "%s: got \"%s\", want \"%s\"",
                      cases[i].target, got, cases[i].line);
    }
}
END_TEST

START_TEST(test_path_without_canonical_form_is_refused_with_400)
{
    static const char *const bad[] = {
        "/a%2Fb", "/a%2fb", "/a%5Cb",     "/a%5cb",    "/a%00",          "/a%zz",         "/a%4",
        "/a%",    "/..",    "/a/../../b", "/%2e%2e/x", "http://h/a%2Fb", "http://h/../x",
    };
    int st;
    const char *what;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(forwarded_line(bad[i], &st, &what) == NULL, "%s accepted", bad[i]);
        ck_assert_int_eq(st, 400);
        ck_assert_ptr_nonnull(what);
    }
}
END_TEST

START_TEST(test_target_path_is_the_canonical_one)
{
    char s[] = "GET /a//b/./c/../d%7e?q=/./ HTTP/1.1\r\nHost: h\r\n\r\n";
    char bad[] = "GET /a/b%2F/c/./d HTTP/1.1\r\nHost: h\r\n\r\n";
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    const char *p;
    size_t used, len;

    ck_assert_int_eq(parse_head(m, s, &used), HTTP_HEAD_DONE);
    p = http_target_path(m, s, &len);
    ck_assert_int_eq((int)len, (int)strlen("/a//b/./c/../d%7e")); /* as it came, before */
    ck_assert_int_eq(http_canonicalize_path(m, s), 0);
    p = http_target_path(m, s, &len);
    ck_assert_int_eq((int)len, 7);
    ck_assert(memcmp(p, "/a/b/d~", 7) == 0);
    /* Refused: the head is left as it came (the access log shows what was sent). */
    http_msg_init(m, HTTP_REQUEST, &limits);
    ck_assert_int_eq(parse_head(m, bad, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(http_canonicalize_path(m, bad), -1);
    ck_assert_str_eq(bad, "GET /a/b%2F/c/./d HTTP/1.1\r\nHost: h\r\n\r\n");
    p = http_target_path(m, bad, &len);
    ck_assert_int_eq((int)len, (int)strlen("/a/b%2F/c/./d"));
    /* OPTIONS *: left alone. */
    {
        char o[] = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";

        http_msg_init(m, HTTP_REQUEST, &limits);
        ck_assert_int_eq(parse_head(m, o, &used), HTTP_HEAD_DONE);
        ck_assert_int_eq(http_canonicalize_path(m, o), 0);
        p = http_target_path(m, o, &len);
        ck_assert(len == 1 && p[0] == '*');
    }
    free(m);
}
END_TEST

START_TEST(test_long_non_canonical_path_is_canonicalized)
{
    /* Longer than the stack copy: the path goes through a heap copy. */
    char head[4096], want[2048];
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);
    size_t used, len, o = 0, w = 0;
    const char *p;

    o += (size_t)snprintf(head, sizeof(head), "GET ");
    for (int i = 0; i < 300; i++) {
        o += (size_t)snprintf(head + o, sizeof(head) - o, "//%%61b");
        w += (size_t)snprintf(want + w, sizeof(want) - w, "/ab");
    }
    snprintf(head + o, sizeof(head) - o, "/./x/.. HTTP/1.1\r\nHost: h\r\n\r\n");
    snprintf(want + w, sizeof(want) - w, "/");
    ck_assert_int_eq(parse_head(m, head, &used), HTTP_HEAD_DONE);
    ck_assert_int_eq(http_canonicalize_path(m, head), 0);
    p = http_target_path(m, head, &len);
    ck_assert_uint_eq(len, strlen(want));
    ck_assert(memcmp(p, want, len) == 0);
    free(m);
}
END_TEST

/*
 * The scan that skips canonical paths goes a word at a time: whatever work
 * a path needs ("//", "/.", an escape) and wherever the query starts, at
 * every offset, the result is path_canonical's and the query is kept.
 */
START_TEST(test_scan_sees_work_at_every_offset)
{
    static const char *const marks[] = {"//", "/.", "/..", "/./", "%7E", "%2a", "?q", "/?", "/.?"};
    struct http_msg *m = new_msg(HTTP_REQUEST, &limits);

    for (size_t k = 0; k < sizeof(marks) / sizeof(marks[0]); k++) {
        for (size_t len = 2; len < 40; len++) {
            for (size_t at = 1; at < len; at++) {
                char target[64], head[128], want[64];
                size_t used, plen, wlen, hl;
                const char *p, *q;
                int st;

                memset(target, 'a', len);
                target[0] = '/';
                target[len] = '\0';
                memcpy(target + at, marks[k], strlen(marks[k]));
                if (at + strlen(marks[k]) > len)
                    target[at + strlen(marks[k])] = '\0';
                for (size_t i = at + strlen(marks[k]); i < len; i += 5)
                    target[i] = '/'; /* more segments after it */
                hl = (size_t)snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: h\r\n\r\n",
                                      target);
                ck_assert_uint_lt(hl, sizeof(head));
                q = strchr(target, '?');
                plen = q ? (size_t)(q - target) : strlen(target);
                st = path_canonical(target, plen, want, sizeof(want), &wlen);
                http_msg_init(m, HTTP_REQUEST, &limits);
                ck_assert_int_eq(parse_head(m, head, &used), HTTP_HEAD_DONE);
                ck_assert_int_eq(http_canonicalize_path(m, head), st == PATH_OK ? 0 : -1);
                if (st != PATH_OK)
                    continue; /* "/.." climbing above "/" */
                p = http_target_path(m, head, &plen);
                ck_assert_msg(plen == wlen && memcmp(p, want, wlen) == 0, "%s: got %.*s want %.*s",
                              target, (int)plen, p, (int)wlen, want);
                ck_assert_uint_eq(m->query.len, q ? strlen(q) : 0);
                if (q)
                    ck_assert(memcmp(head + m->query.off, q, strlen(q)) == 0);
            }
        }
    }
    free(m);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");

    tcase_add_test(tc, test_simple_get_head_spans);
    tcase_add_test(tc, test_route_rewrite_sets_and_removes_fields);
    tcase_add_test(tc, test_module_edits_replace_and_remove_fields);
    tcase_add_test(tc, test_header_count_skips_hop_by_hop_fields);
    tcase_add_test(tc, test_request_host_and_query);
    tcase_add_test(tc, test_head_split_across_reads);
    tcase_add_test(tc, test_pipelined_request_stops_at_message_end);
    tcase_add_test(tc, test_chunked_body_framing);
    tcase_add_test(tc, test_framing_ambiguities_are_refused);
    tcase_add_test(tc, test_unambiguous_requests_are_accepted);
    tcase_add_test(tc, test_limits_give_414_and_431);
    tcase_add_test(tc, test_body_limit_gives_413);
    tcase_add_test(tc, test_request_rewrite_drops_hop_by_hop_and_adds_forwarding);
    tcase_add_test(tc, test_absolute_form_target_sets_host);
    tcase_add_test(tc, test_upgrade_request_keeps_upgrade);
    tcase_add_test(tc, test_response_rewrite);
    tcase_add_test(tc, test_response_to_head_has_no_body);
    tcase_add_test(tc, test_interim_then_final_response);
    tcase_add_test(tc, test_conflicting_response_length_is_bad_gateway);
    tcase_add_test(tc, test_close_delimited_response_ends_at_eof);
    tcase_add_test(tc, test_dechunk_in_place);
    tcase_add_test(tc, test_error_response_is_json);
    tcase_add_test(tc, test_method_idempotency);
    tcase_add_test(tc, test_limits_apply_to_a_head_complete_in_one_read);
    tcase_add_test(tc, test_304_with_content_length_has_no_body);
    tcase_add_test(tc, test_fuzz_and_corpus_findings_are_refused);
    tcase_add_test(tc, test_http09_line_is_refused_at_once);
    tcase_add_test(tc, test_chunk_extensions_are_bounded);
    tcase_add_test(tc, test_response_transfer_encoding_must_be_chunked);
    tcase_add_test(tc, test_http10_without_host_gets_an_empty_host);
    tcase_add_test(tc, test_canonical_path_is_forwarded_with_the_query_as_it_came);
    tcase_add_test(tc, test_path_without_canonical_form_is_refused_with_400);
    tcase_add_test(tc, test_target_path_is_the_canonical_one);
    tcase_add_test(tc, test_long_non_canonical_path_is_canonicalized);
    tcase_add_test(tc, test_scan_sees_work_at_every_offset);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
