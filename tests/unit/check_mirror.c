/*
 * check_mirror.c - shadow traffic on the data path (mirror.c): transactions
 * driven as in check_txn.c, by a fake client side that hands them request
 * bytes and takes their responses into memory, on a real worker whose loop
 * the test thread runs step by step (workerfix.h), against two loopback
 * backends the test thread serves itself: blue-1 (the pool's share) and
 * green-1 (the standby the pool mirrors to).
 *
 * - a GET answered alike by both is mirrored to green-1 with the same
 *   X-Request-Id (given or generated) and counted a match;
 * - a different body is a body_diff, a different status a status_diff,
 *   each kept in the site's ring with its method, path (no query) and id;
 * - a compared header that differs is a body_diff naming the header;
 * - a POST whose body is over max_body_bytes is not sent: dropped;
 * - a method not listed is not mirrored; a shadow that does not answer
 *   within timeout_ms is a timeout; one that refuses is an error.
 *
 * Each test runs in its own process (Check's fork mode). Every wait is a
 * loop step with a deadline.
 */
#include "conf.h"
#include "mirror.h"
#include "mirrorstat.h"
#include "model.h"
#include "module.h"
#include "routing.h"
#include "txn.h"
#include "veer.h"
#include "worker.h"
#include "txnfix.h"
#include "workerfix.h"

#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBACKENDS 2
#define NCONNS    8
#define NREQS     48
#define BLUE      0
#define GREEN     1

/* --- backends the test thread serves -------------------------------------------------------- */

/*
 * Backend i answers each whole request (head and Content-Length body) with
 * `status`, `body` and, when set, an ETag; it records what it received.
 * `silent`: it reads but never answers. `refuse`: bound, not listening.
 */
static struct backend_srv {
    char name[16];
    int fd;
    bool refuse, silent;
    int status;
    char body[64];
    char etag[16];
    int conns[NCONNS];
    char buf[NCONNS][8192];
    size_t len[NCONNS], done[NCONNS];
    int nconns;
    int nreqs;
    struct {
        char method[16], target[64], request_id[64], body[64];
    } req[NREQS];
} srv[NBACKENDS];

static void backend_open(int i, const char *name, bool refuse)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct backend_srv *b = &srv[i];

    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    snprintf(b->body, sizeof(b->body), "same answer");
    b->status = 200;
    b->refuse = refuse;
    b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ck_assert_int_ge(b->fd, 0);
    ck_assert_msg(bind(b->fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
    if (!refuse)
        ck_assert_int_eq(listen(b->fd, 16), 0);
}

/* The value of header `name` in head (up to its end), copied into out; false when absent. */
static bool head_value(const char *head, const char *end, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);

    for (const char *l = strstr(head, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
        const char *v = l + 2, *e;

        if (strncasecmp(v, name, n) != 0 || v[n] != ':')
            continue;
        v += n + 1;
        while (*v == ' ')
            v++;
        e = strstr(v, "\r\n");
        snprintf(out, len, "%.*s", (int)(e - v), v);
        return true;
    }
    return false;
}

/* One whole request at b->buf[k] + b->done[k]: recorded and answered. False when not whole yet. */
static bool serve_one(struct backend_srv *b, int k)
{
    char *start = b->buf[k] + b->done[k], *end = strstr(start, "\r\n\r\n"), cl[32], resp[512];
    size_t clen = 0, have;

    if (end == NULL)
        return false;
    if (head_value(start, end, "content-length", cl, sizeof(cl)))
        clen = strtoul(cl, NULL, 10);
    have = b->len[k] - (size_t)(end + 4 - b->buf[k]);
    if (have < clen)
        return false;
    ck_assert_int_lt(b->nreqs, NREQS);
    ck_assert_int_eq(
        sscanf(start, "%15s %63s HTTP/1.1", b->req[b->nreqs].method, b->req[b->nreqs].target), 2);
    head_value(start, end, "x-request-id", b->req[b->nreqs].request_id,
               sizeof(b->req[0].request_id));
    snprintf(b->req[b->nreqs].body, sizeof(b->req[0].body), "%.*s", (int)clen, end + 4);
    b->nreqs++;
    b->done[k] = (size_t)(end + 4 - b->buf[k]) + clen;
    if (b->silent)
        return true;
    snprintf(resp, sizeof(resp),
             "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\n%s%s%sContent-Length: %zu\r\n\r\n%s",
             b->status, b->etag[0] ? "ETag: " : "", b->etag, b->etag[0] ? "\r\n" : "",
             strlen(b->body), b->body);
    ck_assert_int_eq(send(b->conns[k], resp, strlen(resp), MSG_NOSIGNAL), (ssize_t)strlen(resp));
    return true;
}

/* Accept what is waiting, answer every whole request received so far. */
static void serve(void)
{
    for (int i = 0; i < NBACKENDS; i++) {
        struct backend_srv *b = &srv[i];
        int fd;

        if (b->fd < 0 || b->refuse)
            continue;
        while (b->nconns < NCONNS &&
               (fd = accept4(b->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
            b->conns[b->nconns++] = fd;
        for (int k = 0; k < b->nconns; k++) {
            ssize_t n;

            while ((n = recv(b->conns[k], b->buf[k] + b->len[k], sizeof(b->buf[k]) - 1 - b->len[k],
                             MSG_DONTWAIT)) > 0) {
                b->len[k] += (size_t)n;
                b->buf[k][b->len[k]] = '\0';
            }
            while (serve_one(b, k))
                ;
        }
    }
}

static void backends_close(void)
{
    for (int i = 0; i < NBACKENDS; i++) {
        for (int k = 0; k < srv[i].nconns; k++)
            close(srv[i].conns[k]);
        if (srv[i].fd >= 0)
            close(srv[i].fd);
    }
}

/* --- a worker run by the test thread (workerfix.h) ----------------------------------------- */

/*
 * Pool api: blue-1 (share 100) and green-1 (share 0), mirror = { group =
 * "green"; MIRROR }, then `extra` (routes).
 */
static void start_with(const char *mirror, const char *extra)
{
    char text[2048];

    snprintf(text, sizeof(text),
             "workers = 1;\n"
             "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
             "pools = ( { name = \"api\"; backends = ( "
             "{ name = \"blue-1\"; address = \"127.0.0.1:%d\"; group = \"blue\"; }, "
             "{ name = \"green-1\"; address = \"127.0.0.1:%d\"; group = \"green\"; } );"
             " shares = { blue = 100; green = 0; };"
             " mirror = { group = \"green\"; %s }; } );\n%s",
             local_port(srv[BLUE].fd), local_port(srv[GREEN].fd), mirror, extra);
    wfix_start(text, WFIX_MODULES | WFIX_TICK);
    fx.serve = serve;
    ck_assert_ptr_nonnull(routing_current()->pools[0].mirror);
    ck_assert_ptr_nonnull(routing_current()->pools[0].msite);
}

static void start(const char *mirror)
{
    start_with(mirror, "");
}

static void stop(void)
{
    wfix_stop();
    backends_close();
    mirror_sites_free();
}

/* --- the fake client side: txnfix.h ------------------------------------------------------ */

static struct fake client;

/*
 * The client asks `method target` with `headers` (each ending CRLF) and
 * `body` (a Content-Length body when not NULL), framed whole as the HTTP/1
 * codec frames it, handed to a new transaction.
 */
static void ask(const char *method, const char *target, const char *headers, const char *body)
{
    char raw[1024];
    size_t n;

    if (body)
        n = (size_t)snprintf(raw, sizeof(raw),
                             "%s %s HTTP/1.1\r\nHost: veer.test\r\n%sContent-Length: %zu\r\n\r\n%s",
                             method, target, headers, strlen(body), body);
    else
        n = (size_t)snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: veer.test\r\n%s\r\n",
                             method, target, headers);
    ck_assert_uint_lt(n, sizeof(raw));
    fake_ask(&client, raw, n);
}

/* The figures of the pool's requests on no route, summed. */
static void totals(struct mirror_totals *t)
{
    mirror_site_sum(routing_current()->pools[0].msite, t);
}

static uint64_t counted(void)
{
    struct mirror_totals t;
    uint64_t n = 0;

    totals(&t);
    for (unsigned c = 0; c < 5; c++)
        for (unsigned r = 0; r < MR_RESULTS; r++)
            n += t.n[c][r];
    return n;
}

static bool judged(void *arg)
{
    return client.answers + client.aborts > 0 && counted() >= *(uint64_t *)arg;
}

/* Ask, wait for the client's answer and for the pair to be counted (one more count). */
static void ask_judged(const char *method, const char *target, const char *headers,
                       const char *body)
{
    uint64_t want = counted() + 1;

    ask(method, target, headers, body);
    ck_assert_msg(run_until(judged, &want), "%s %s: not answered and counted", method, target);
    ck_assert_int_eq(client.answers, 1);
    ck_assert_int_eq(client.aborts, 0);
    ck_assert_uint_eq(counted(), want);
    mirror_reap(fx.w);
}

static uint64_t n_of(unsigned cls, enum mirror_result r)
{
    struct mirror_totals t;

    totals(&t);
    return t.n[cls][r];
}

static unsigned mismatches(struct mirror_mismatch *out)
{
    return mirror_site_mismatches(routing_current()->pools[0].msite, out);
}

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* The SHA-256 of s, in hex (a static buffer). */
static const char *sha_hex(const char *s)
{
    static char out[65];
    uint8_t d[32];

    ck_assert_ptr_nonnull(SHA256((const unsigned char *)s, strlen(s), d));
    hex(d, out);
    return out;
}

/* --- tests ---------------------------------------------------------------------------------- */

START_TEST(test_same_answers_are_a_match_with_one_request_id)
{
    struct mirror_mismatch mm[MIRROR_MISMATCHES];
    struct mirror_totals t;

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    start("");
    ask_judged("GET", "/x?q=1", "X-Request-Id: abc-123\r\n", NULL);
    ck_assert_int_eq(client.status, 200);
    ck_assert_ptr_nonnull(strstr(client.out, "\r\n\r\nsame answer"));
    ck_assert_int_eq(srv[BLUE].nreqs, 1);
    ck_assert_int_eq(srv[GREEN].nreqs, 1);
    ck_assert_str_eq(srv[GREEN].req[0].method, "GET");
    ck_assert_str_eq(srv[GREEN].req[0].target, "/x?q=1");
    ck_assert_str_eq(srv[BLUE].req[0].request_id, "abc-123");
    ck_assert_str_eq(srv[GREEN].req[0].request_id, "abc-123");
    ck_assert_uint_eq(n_of(1, MR_MATCH), 1);
    totals(&t);
    ck_assert_uint_eq(t.shadow_count, 1);
    ck_assert_uint_eq(mismatches(mm), 0);

    /* Without X-Request-Id: one is generated, the same on both sides. */
    ask_judged("GET", "/y", "", NULL);
    ck_assert_int_eq(srv[GREEN].nreqs, 2);
    ck_assert_uint_gt(strlen(srv[BLUE].req[1].request_id), 0);
    ck_assert_str_eq(srv[GREEN].req[1].request_id, srv[BLUE].req[1].request_id);
    ck_assert_uint_eq(n_of(1, MR_MATCH), 2);
    stop();
}
END_TEST

START_TEST(test_a_different_body_is_a_body_diff_with_its_path)
{
    struct mirror_mismatch mm[MIRROR_MISMATCHES];
    char a[65], b[65];

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    snprintf(srv[GREEN].body, sizeof(srv[GREEN].body), "other answer!");
    start("");
    ask_judged("GET", "/items/7?full=1", "X-Request-Id: r-1\r\n", NULL);
    ck_assert_ptr_nonnull(strstr(client.out, "\r\n\r\nsame answer")); /* the primary's */
    ck_assert_uint_eq(n_of(1, MR_BODY_DIFF), 1);
    ck_assert_uint_eq(n_of(1, MR_MATCH), 0);
    ck_assert_uint_eq(mismatches(mm), 1);
    ck_assert_int_eq(mm[0].result, MR_BODY_DIFF);
    ck_assert_str_eq(mm[0].method, "GET");
    ck_assert_str_eq(mm[0].path, "/items/7"); /* without the query */
    /* Its request id: test_a_mismatch_keeps_the_request_id_as_received (a known bug). */
    ck_assert(strncmp(mm[0].request_id, "r-1", 3) == 0);
    ck_assert_int_eq(mm[0].primary_status, 200);
    ck_assert_int_eq(mm[0].shadow_status, 200);
    ck_assert_uint_eq(mm[0].primary_bytes, strlen("same answer"));
    ck_assert_uint_eq(mm[0].shadow_bytes, strlen("other answer!"));
    ck_assert_str_eq(mm[0].header, "");
    hex(mm[0].primary_sha, a);
    hex(mm[0].shadow_sha, b);
    /* SHA-256 of the bodies. */
    ck_assert_str_eq(a, sha_hex("same answer"));
    ck_assert_str_eq(b, sha_hex("other answer!"));
    ck_assert_str_ne(a, b);
    stop();
}
END_TEST

/*
 * With no access log the id is the X-Request-Id value as received: a
 * value in the head is not NUL-terminated, and the record must take its
 * bytes only, not what follows it ("r-1\r\n...").
 */
START_TEST(test_a_mismatch_keeps_the_request_id_as_received)
{
    struct mirror_mismatch mm[MIRROR_MISMATCHES];

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    srv[GREEN].status = 500;
    start("methods = ( \"POST\" );");
    ask_judged("POST", "/k", "X-Request-Id: r-1\r\nX-After: more\r\n", "body");
    ck_assert_uint_eq(mismatches(mm), 1);
    ck_assert_str_eq(mm[0].request_id, "r-1");
    stop();
}
END_TEST

START_TEST(test_a_different_status_is_a_status_diff)
{
    struct mirror_mismatch mm[MIRROR_MISMATCHES];

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    srv[GREEN].status = 503;
    start("");
    ask_judged("GET", "/s", "X-Request-Id: r-2\r\n", NULL);
    ck_assert_int_eq(client.status, 200);
    ck_assert_uint_eq(n_of(1, MR_STATUS_DIFF), 1); /* the primary's class */
    ck_assert_uint_eq(mismatches(mm), 1);
    ck_assert_int_eq(mm[0].result, MR_STATUS_DIFF);
    ck_assert_int_eq(mm[0].primary_status, 200);
    ck_assert_int_eq(mm[0].shadow_status, 503);
    ck_assert_str_eq(mm[0].path, "/s");
    stop();
}
END_TEST

START_TEST(test_a_compared_header_that_differs_is_named)
{
    struct mirror_mismatch mm[MIRROR_MISMATCHES];

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    snprintf(srv[BLUE].etag, sizeof(srv[BLUE].etag), "\"v1\"");
    snprintf(srv[GREEN].etag, sizeof(srv[GREEN].etag), "\"v2\"");
    start("compare = { headers = ( \"ETag\" ); };");
    ask_judged("GET", "/e", "X-Request-Id: r-3\r\n", NULL);
    ck_assert_uint_eq(n_of(1, MR_BODY_DIFF), 1);
    ck_assert_uint_eq(mismatches(mm), 1);
    ck_assert_str_eq(mm[0].header, "etag");
    ck_assert_uint_eq(mm[0].primary_bytes, mm[0].shadow_bytes);
    ck_assert_int_eq(memcmp(mm[0].primary_sha, mm[0].shadow_sha, 32), 0);
    stop();
}
END_TEST

START_TEST(test_an_ignored_header_is_not_compared)
{
    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    snprintf(srv[BLUE].etag, sizeof(srv[BLUE].etag), "\"v1\"");
    snprintf(srv[GREEN].etag, sizeof(srv[GREEN].etag), "\"v2\"");
    start(""); /* etag not compared */
    ask_judged("GET", "/e", "", NULL);
    ck_assert_uint_eq(n_of(1, MR_MATCH), 1);
    stop();
}
END_TEST

START_TEST(test_a_post_body_over_max_body_bytes_is_dropped)
{
    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    start("max_body_bytes = 4; methods = ( \"GET\", \"POST\" );");
    ask_judged("POST", "/upload", "", "hello world");
    ck_assert_int_eq(client.status, 200);
    ck_assert_int_eq(srv[BLUE].nreqs, 1);
    ck_assert_str_eq(srv[BLUE].req[0].body, "hello world");
    ck_assert_int_eq(srv[GREEN].nreqs, 0); /* never sent */
    ck_assert_uint_eq(n_of(1, MR_DROPPED), 1);
    /* Within the limit: mirrored with its body. */
    ask_judged("POST", "/upload", "", "ok");
    ck_assert_int_eq(srv[GREEN].nreqs, 1);
    ck_assert_str_eq(srv[GREEN].req[0].method, "POST");
    ck_assert_str_eq(srv[GREEN].req[0].body, "ok");
    ck_assert_uint_eq(n_of(1, MR_MATCH), 1);
    stop();
}
END_TEST

static bool answered(void *arg)
{
    (void)arg;
    return client.answers + client.aborts > 0;
}

START_TEST(test_a_method_not_listed_is_not_mirrored)
{
    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    start("");
    ask("POST", "/p", "", "x");
    ck_assert_ptr_nonnull(client.t);
    ck_assert_ptr_null(client.t->mirror);  /* no shadow started */
    ck_assert_uint_eq(client.t->mfate, 0); /* nor counted as not sent */
    ck_assert(run_until(answered, NULL));
    ck_assert_int_eq(client.answers, 1);
    ck_assert_int_eq(srv[GREEN].nreqs, 0);
    ck_assert_uint_eq(counted(), 0);
    stop();
}
END_TEST

START_TEST(test_a_silent_shadow_is_a_timeout)
{
    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    srv[GREEN].silent = true;
    start("timeout_ms = 100;");
    ask_judged("GET", "/slow", "", NULL);
    ck_assert_int_eq(client.status, 200);
    ck_assert_int_eq(srv[GREEN].nreqs, 1);
    ck_assert_uint_eq(n_of(1, MR_TIMEOUT), 1);
    stop();
}
END_TEST

START_TEST(test_a_refusing_shadow_is_an_error)
{
    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", true);
    start("");
    ask_judged("GET", "/r", "", NULL);
    ck_assert_int_eq(client.status, 200);
    ck_assert_uint_eq(n_of(1, MR_ERROR), 1);
    stop();
}
END_TEST

/* FNV-1a, 64 bits, as the contract names it: written out here, not veer's. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 14695981039346656037ull;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static bool green_has_route(void *arg)
{
    struct mirror_totals t;
    uint64_t n = 0;

    mirror_site_sum(routing_current()->route[0].msite, &t);
    for (unsigned r = 0; r < MR_RESULTS; r++)
        n += t.n[1][r];
    return n >= (uint64_t) * (int *)arg;
}

static bool green_has(void *arg)
{
    return srv[GREEN].nreqs >= *(int *)arg && counted() >= (uint64_t) * (int *)arg;
}

START_TEST(test_sampling_is_fnv1a_of_the_request_id_mod_10000)
{
    char hdr[64], id[16];
    int want = 0, sampled[40];

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    start("percent = 50.0;");
    ck_assert_uint_eq(routing_current()->pools[0].mirror->threshold, 5000);
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof(id), "s-%d", i);
        snprintf(hdr, sizeof(hdr), "X-Request-Id: %s\r\n", id);
        sampled[i] = fnv1a64(id) % 10000 < 5000;
        ask("GET", "/s", hdr, NULL);
        ck_assert_int_eq(client.t->mirror != NULL, sampled[i]);
        ck_assert(run_until(answered, NULL));
        want += sampled[i];
        ck_assert_msg(run_until(green_has, &want), "%s: shadow not counted", id);
        ck_assert_int_eq(srv[GREEN].nreqs, want);
        ck_assert_uint_eq(counted(), (uint64_t)want);
    }
    ck_assert_int_gt(want, 5); /* both kinds were seen */
    ck_assert_int_lt(want, 35);
    for (int i = 0, k = 0; i < 40; i++) {
        if (!sampled[i])
            continue;
        snprintf(id, sizeof(id), "s-%d", i);
        ck_assert_str_eq(srv[GREEN].req[k++].request_id, id);
    }
    stop();
}
END_TEST

static bool counted_at_least(void *arg)
{
    return counted() >= *(uint64_t *)arg;
}

START_TEST(test_over_max_inflight_is_dropped)
{
    uint64_t two = 2;

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    srv[GREEN].silent = true;
    start("max_inflight = 1; timeout_ms = 300;");
    ask("GET", "/a", "", NULL);
    ck_assert_ptr_nonnull(client.t->mirror);
    ck_assert(run_until(answered, NULL));
    ck_assert_uint_eq(counted(), 0); /* its shadow still waits */
    ask("GET", "/b", "", NULL);
    ck_assert_ptr_null(client.t->mirror); /* one in flight already */
    ck_assert(run_until(answered, NULL));
    ck_assert_uint_eq(n_of(1, MR_DROPPED), 1);
    ck_assert(run_until(counted_at_least, &two));
    ck_assert_uint_eq(n_of(1, MR_TIMEOUT), 1);
    ck_assert_int_eq(srv[GREEN].nreqs, 1);
    stop();
}
END_TEST

START_TEST(test_a_routes_own_mirror_is_counted_in_its_site)
{
    struct mirror_totals t;

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    start_with("percent = 0.0;", "routes = ( { name = \"v2\"; pool = \"api\";"
                                 " match = { path_prefix = \"/v2\"; };"
                                 " mirror = { group = \"green\"; }; } );\n");
    ck_assert_uint_eq(routing_current()->pools[0].mirror->threshold, 0);
    ck_assert_uint_eq(routing_current()->route[0].mirror->threshold, 10000);
    ask("GET", "/other", "", NULL); /* no route: the pool's 0% */
    ck_assert_ptr_null(client.t->mirror);
    ck_assert(run_until(answered, NULL));
    ask("GET", "/v2/x", "", NULL);
    ck_assert_ptr_nonnull(client.t->mirror);
    ck_assert(run_until(answered, NULL));
    {
        int one = 1;

        ck_assert(run_until(green_has_route, &one));
    }
    mirror_site_sum(routing_current()->route[0].msite, &t);
    ck_assert_uint_eq(t.n[1][MR_MATCH], 1);
    ck_assert_uint_eq(counted(), 0); /* not in the pool's own site */
    ck_assert_str_eq(srv[GREEN].req[0].target, "/v2/x");
    stop();
}
END_TEST

/* The worker took the snapshot whose mirror has no backend to send to. */
static bool snapshot_has_no_view(void *arg)
{
    (void)arg;
    return fx.w->routing == routing_current() && routing_current()->pools[0].mirror &&
           routing_current()->pools[0].mirror->view.n == 0;
}

START_TEST(test_no_ready_backend_in_the_group_is_an_error)
{
    struct rt_pool *p;

    backend_open(BLUE, "blue-1", false);
    backend_open(GREEN, "green-1", false);
    start("");
    p = &fx.m->pools[0];
    for (uint32_t i = 0; i < p->nb; i++)
        if (strcmp(p->b[i].be->name, "green-1") == 0)
            p->b[i].admin = ADMIN_MAINT;
    publish();
    ck_assert(run_until(snapshot_has_no_view, NULL));
    ask_judged("GET", "/n", "", NULL);
    ck_assert_int_eq(client.status, 200);
    ck_assert_uint_eq(n_of(1, MR_ERROR), 1);
    ck_assert_int_eq(srv[GREEN].nreqs, 0);
    stop();
}
END_TEST

static Suite *mirror_suite(void)
{
    Suite *s = suite_create("mirror");
    TCase *tc = tcase_create("pairs");

    tcase_add_test(tc, test_same_answers_are_a_match_with_one_request_id);
    tcase_add_test(tc, test_a_different_body_is_a_body_diff_with_its_path);
    tcase_add_test(tc, test_a_different_status_is_a_status_diff);
    tcase_add_test(tc, test_a_compared_header_that_differs_is_named);
    tcase_add_test(tc, test_an_ignored_header_is_not_compared);
    tcase_add_test(tc, test_a_post_body_over_max_body_bytes_is_dropped);
    tcase_add_test(tc, test_a_method_not_listed_is_not_mirrored);
    tcase_add_test(tc, test_a_silent_shadow_is_a_timeout);
    tcase_add_test(tc, test_a_refusing_shadow_is_an_error);
    tcase_add_test(tc, test_sampling_is_fnv1a_of_the_request_id_mod_10000);
    tcase_add_test(tc, test_over_max_inflight_is_dropped);
    tcase_add_test(tc, test_a_routes_own_mirror_is_counted_in_its_site);
    tcase_add_test(tc, test_no_ready_backend_in_the_group_is_an_error);
    tcase_add_test(tc, test_a_mismatch_keeps_the_request_id_as_received);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mirror_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
