/*
 * fuzz_request.c - libFuzzer target: request heads and body framing as the
 * session drives them (proxy/core/http.c on top of strict llhttp).
 *
 * The input is the byte stream a client sends. It is delivered in pieces,
 * at cut points derived from the input itself, and before each call the
 * bytes received so far are copied into a buffer of exactly their size, as
 * the session's input buffer may be moved or grown between reads: a read
 * past what has arrived is a heap overflow ASan reports. A complete head is
 * rewritten with http_build_request() into a buffer of exactly
 * http_request_bound() bytes. Pipelined requests are parsed one after the
 * other, as the session does.
 *
 * Built with -DVEER_FUZZ_ORACLE, more properties are checked (and abort on
 * failure):
 * - the outcome (which messages complete, where a stream is refused) does
 *   not depend on how the stream was cut into reads; the error status may
 *   (a head over a limit that is also malformed gets 414/431 or 400);
 * - veer's framing flags (what it forwards) agree with llhttp's (where it
 *   thinks the body ends);
 * - the head veer forwards parses again, as a valid request with the same
 *   method and the same framing (chunked, or the same Content-Length):
 *   normalising never changes or breaks the framing; no forwarded field has
 *   an empty name;
 * - its path is the canonical path veer matched on, and canonical: it
 *   canonicalizes to itself (http_canonicalize_path, which runs on every
 *   complete head as the transaction runs it; a refused path ends the
 *   stream as a 400 does).
 * -DVEER_FUZZ_SKIP_KNOWN steps over the bugs already reported, each named
 * where it is skipped.
 */
#include "http.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_MSGS  8
#define MAX_TRACE 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct trace {
    int n;
    int ev[MAX_TRACE]; /* result and status of each message's end */
};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_request: %s\n", what);
        abort();
    }
}

static uint32_t fnv(const uint8_t *d, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 16777619u;
    return h;
}

static void span_in(struct http_span s, uint32_t len, const char *what)
{
    check((uint64_t)s.off + s.len <= len, what);
}

#ifdef VEER_FUZZ_ORACLE
/* A field veer forwards has a name: ": x" is not a field line (RFC 9112 5). */
static void names_not_empty(const struct http_msg *m)
{
#ifdef VEER_FUZZ_SKIP_KNOWN
    (void)m; /* known: a field line ": x" is accepted and forwarded */
#else
    for (uint32_t i = 0; i < m->nhdr; i++)
        check(m->hdr[i].drop || m->hdr[i].name.len > 0, "a field with an empty name is forwarded");
#endif
}
#endif

#ifdef VEER_FUZZ_ORACLE
/* Does the raw Transfer-Encoding value end in whitespace containing an HTAB? */
static bool te_trailing_htab(const struct http_msg *req, const char *head)
{
    for (uint32_t i = 0; i < req->nhdr; i++) {
        const struct http_hdr *h = &req->hdr[i];
        uint32_t e = h->value.off + h->value.len;

        if (h->name.len != 17 || strncasecmp(head + h->name.off, "transfer-encoding", 17) != 0)
            continue;
        for (; e < req->head_len && (head[e] == ' ' || head[e] == '\t'); e++)
            if (head[e] == '\t')
                return true;
    }
    return false;
}

/*
 * veer's view of the framing (its flags, which decide what it forwards) must
 * be llhttp's (which decides where it thinks the body ends).
 */
static void same_framing(const struct http_msg *req, const char *head)
{
    bool veer_chunked = req->flags & HF_CHUNKED, ll_chunked = req->parser.flags & F_CHUNKED;

#ifdef VEER_FUZZ_SKIP_KNOWN
    if (veer_chunked && !ll_chunked && te_trailing_htab(req, head))
        return; /* known: "chunked<HTAB>" is chunked to veer, invalid to llhttp */
#else
    (void)te_trailing_htab;
#endif
    if (veer_chunked != ll_chunked) {
        fprintf(stderr, "veer says %schunked, llhttp says %schunked:\n%.*s\n",
                veer_chunked ? "" : "not ", ll_chunked ? "" : "not ", (int)req->head_len, head);
        abort();
    }
    check(!(req->flags & HF_HAS_CL) == !(req->parser.flags & F_CONTENT_LENGTH),
          "veer and llhttp disagree on Content-Length");
}

/* The forwarded head must parse as a request with the same method and framing. */
static void reparse(const struct http_msg *req, const char *head, const char *out, size_t n)
{
    static const struct http_limits big = {1 << 20, 1 << 20, 1000, 0};
    struct http_msg *m = malloc(http_msg_size(big.header_count));
    char *copy = malloc(n);
    size_t used;
    enum http_result r;

    memcpy(copy, out, n);
    http_msg_init(m, HTTP_REQUEST, &big);
    r = http_parse(m, copy, copy, n, &used);
    if (r != HTTP_HEAD_DONE) {
        fprintf(stderr, "forwarded head refused (%d %s):\n%.*s\n", m->err_status,
                m->err_what ? m->err_what : "", (int)n, out);
        abort();
    }
    check(used == n, "forwarded head: not all bytes are head");
    {
        size_t len0, len1, len2;
        const char *p0 = http_target_path(req, head, &len0);
        const char *p1 = http_target_path(m, copy, &len1);
        char *was = malloc(len1 ? len1 : 1);

        check(len0 == len1 && memcmp(p0, p1, len0) == 0, "forwarded path is not the matched one");
        memcpy(was, p1, len1);
        check(http_canonicalize_path(m, copy) == 0, "forwarded path refused");
        p1 = http_target_path(m, copy, &len2);
        check(len2 == len1 && memcmp(p1, was, len1) == 0, "forwarded path is not canonical");
        free(was);
    }
    check(m->method.len == req->method.len &&
              memcmp(copy + m->method.off, head + req->method.off, req->method.len) == 0,
          "forwarded method differs");
    check((m->flags & HF_CHUNKED) == (req->flags & HF_CHUNKED), "forwarded chunked flag differs");
    check((m->flags & HF_HAS_CL) == (req->flags & HF_HAS_CL), "forwarded Content-Length differs");
    if (req->flags & HF_HAS_CL)
        check(m->content_length == req->content_length, "forwarded Content-Length value differs");
    free(copy);
    free(m);
}
#endif

/*
 * What the session does with a complete head: canonicalize its path, read
 * it, rewrite it. false: the path is refused (400).
 */
static bool use_head(struct http_msg *req, char *head, uint32_t seed)
{
    static const char *const ips[] = {"127.0.0.1", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"};
    struct http_fwd_info fi = {
        .client_ip = ips[seed & 1],
        .tls = (seed >> 1) & 1,
        .request_id = (seed >> 2) & 1 ? "0123456789abcdef0123456789abcdef" : NULL,
    };
    size_t bound, n, len;
    const char *p;
    char *out;

    check(req->nhdr <= req->limits->header_count, "more headers than the limit");
    span_in(req->method, req->head_len, "method outside the head");
    span_in(req->url, req->head_len, "target outside the head");
    for (uint32_t i = 0; i < req->nhdr; i++) {
        span_in(req->hdr[i].name, req->head_len, "field name outside the head");
        span_in(req->hdr[i].value, req->head_len, "field value outside the head");
    }
    if (http_canonicalize_path(req, head) < 0) {
        check(req->err_status == 400 && req->err_what != NULL, "refused path without 400");
        return false;
    }
    check(req->flags & HF_PATH, "canonical path not set");
    p = http_target_path(req, head, &len);
    check(p != NULL && len > 0, "empty path");
    if ((uintptr_t)p < (uintptr_t)head || (uintptr_t)p >= (uintptr_t)head + req->head_len)
        check(len == 1 && p[0] == '/', "path neither in the head nor \"/\"");
    else
        check((uintptr_t)p + len <= (uintptr_t)head + req->head_len, "path outside the head");
    http_find_header(req, head, "host", &len);
    http_keep_alive(req);
    http_method_idempotent(req);
    bound = http_request_bound(req, &fi);
    out = malloc(bound);
    n = http_build_request(req, head, &fi, out);
    check(n <= bound, "http_build_request wrote past its bound");
#ifdef VEER_FUZZ_ORACLE
    same_framing(req, head);
    names_not_empty(req);
#ifdef VEER_FUZZ_SKIP_KNOWN
    if (!(req->minor == 0 && req->host < 0))
#endif
        reparse(req, head, out, n);
#endif
    free(out);
    return true;
}

/*
 * Feed data[0..size) to a request parser, delivering it up to each cut in
 * turn (cuts ascending, the last one == size). Records each message's end.
 */
static void run(const uint8_t *data, const struct http_limits *lim, const size_t *cuts, int ncuts,
                uint32_t seed, struct trace *tr)
{
    struct http_msg *msg = malloc(http_msg_size(lim->header_count));
    size_t start = 0, parsed = 0;
    int nmsgs = 0;
    bool stop = false;

    tr->n = 0;
    http_msg_init(msg, HTTP_REQUEST, lim);
    for (int k = 0; k < ncuts && !stop; k++) {
        size_t avail = cuts[k];

        for (;;) {
            size_t have = avail - start, len = have - parsed, used = 0;
            char *buf = malloc(have ? have : 1);
            enum http_result r;

            memcpy(buf, data + start, have);
            r = http_parse(msg, buf, buf + parsed, len, &used);
            check(used <= len, "used more than given");
            parsed += used;
            if (r == HTTP_NEED_MORE) {
                check(used == len, "NEED_MORE without consuming everything");
                free(buf);
                break;
            }
            if (r == HTTP_HEAD_DONE) {
                bool ok;

                check(msg->head_len == parsed, "head_len is not where parsing stopped");
                ok = use_head(msg, buf, seed);
                free(buf);
                if (ok)
                    continue;     /* frame the body, even zero bytes of it */
                r = HTTP_INVALID; /* the path is refused: 400, and the stream ends */
            } else {
                free(buf);
            }
            if (tr->n < MAX_TRACE)
                tr->ev[tr->n++] = (int)r; /* not the status: a limit may win over another error */
            if (r == HTTP_INVALID) {
                check(msg->err_status >= 400 && msg->err_status < 600, "bad error status");
                stop = true;
                break;
            }
            if (r == HTTP_UPGRADED || ++nmsgs == MAX_MSGS) {
                stop = true;
                break;
            }
            /* HTTP_MSG_DONE: the next pipelined request starts here. */
            start += parsed;
            parsed = 0;
            http_msg_init(msg, HTTP_REQUEST, lim);
        }
    }
    if (!stop)
        http_parse_eof(msg);
    if (tr->n < MAX_TRACE)
        tr->ev[tr->n++] = stop ? -1 : (int)msg->phase;
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t h = fnv(data, size);
    struct http_limits lim = {8192, 32768, 100, 0};
    size_t whole[1] = {size}, cuts[3];
    struct trace t1, t2;

    /* Small limits now and then, so 413, 414 and 431 paths are reached too. */
    if (h & 0x100) {
        lim.line_bytes = 64;
        lim.header_bytes = 256;
        lim.header_count = 4;
    }
    if (h & 0x200)
        lim.body_bytes = 10;
    cuts[0] = size ? (h >> 12) % size : 0;
    cuts[1] = cuts[0] + (size - cuts[0] ? (h >> 20) % (size - cuts[0] + 1) : 0);
    cuts[2] = size;
    run(data, &lim, whole, 1, h, &t1);
    run(data, &lim, cuts, 3, h, &t2);
#ifdef VEER_FUZZ_ORACLE
    if (t1.n != t2.n || memcmp(t1.ev, t2.ev, sizeof(int) * (size_t)t1.n) != 0) {
        fprintf(stderr, "outcome depends on read boundaries (cuts %zu %zu):", cuts[0], cuts[1]);
        for (int i = 0; i < t1.n; i++)
            fprintf(stderr, " %d", t1.ev[i]);
        fprintf(stderr, " vs");
        for (int i = 0; i < t2.n; i++)
            fprintf(stderr, " %d", t2.ev[i]);
        fprintf(stderr, "\n");
        abort();
    }
#endif
    return 0;
}
