/*
 * check_trace_context.c - W3C trace context (issue 22), driven through the
 * module's on_request_head hook with a worker, a session and a parsed
 * request filled the way worker.c and session.c fill them: a valid
 * traceparent is left alone (no edit, its trace-id in the log record); none
 * starts a trace (the new traceparent as an edit, tracestate removed, flags
 * from trace_context.sampled); a malformed or repeated one is replaced; with
 * generate = false nothing is added and a malformed one is still removed; a
 * request coming back to the hook (held) keeps its trace. And the accessors
 * the module edits the head with (module.c): framing fields refused, values
 * with CR, LF or NUL refused, the room for edits bounded, a second edit of a
 * name replacing the first.
 */
#include "conf.h"
#include "modcheck.h"
#include "module.h"
#include "session.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const struct veer_module module_trace_context;

#define TID   "4bf92f3577b34da6a3ce929d0e0e4736"
#define VALID "00-" TID "-00f067aa0ba902b7-01"
#define POOLS                                                                                      \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ( { name = \"b\"; address = \"127.0.0.1:9\"; } ); "    \
    "} );\n"

static struct {
    struct veer_conf *c;
    struct worker w;
} fx;

static void teardown(void)
{
    if (fx.c) {
        module_trace_context.on_shutdown(0);
        vbuf_cache_destroy(&fx.w.bufs);
        conf_free(fx.c);
    }
    memset(&fx, 0, sizeof(fx));
}

/* A worker running the config POOLS + extra, as worker_create() leaves it (minus thread, sockets).
 */
static void start(const char *extra)
{
    char path[] = "/tmp/check_trace_context.XXXXXX", err[512];
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s%s", POOLS, extra);
    fclose(f);
    fx.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(fx.c != NULL, "config: %s", err);
    fx.w.idx = 0;
    fx.w.conf = fx.c;
    fx.w.req_limits =
        (struct http_limits){.line_bytes = 8192, .header_bytes = 32768, .header_count = 100};
    vbuf_cache_init(&fx.w.bufs, 8);
}

/* A session holding the request head `raw`, and its transaction with the head parsed. */
static struct txn *request(const char *raw)
{
    struct worker *w = &fx.w;
    struct session *s = calloc(1, sizeof(*s));
    size_t msz = http_msg_size(w->req_limits.header_count), n = strlen(raw), used;
    struct txn *t = calloc(1, sizeof(*t) + 2 * msz);

    s->magic = SESSION_MAGIC;
    s->c.w = w;
    s->fd = -1;
    s->c.in = vbuf_get(&w->bufs);
    vbuf_add(s->c.in, raw, n);
    t->magic = TXN_MAGIC;
    t->s = &s->c;
    t->phase = TXN_REQ_HEAD;
    t->req = (struct http_msg *)(t + 1);
    t->res = (struct http_msg *)((char *)t->req + msz);
    t->limits = w->req_limits;
    http_msg_init(t->req, HTTP_REQUEST, &t->limits);
    s->txn = t;
    ck_assert_int_eq(http_parse(t->req, s->c.in->data, s->c.in->data, n, &used), HTTP_HEAD_DONE);
    return t;
}

/* The request with the given extra header lines ("Name: value\r\n" each), run through the hook. */
static struct txn *run(const char *fields, bool with_log)
{
    char raw[2048];
    struct txn *t;

    snprintf(raw, sizeof(raw), "GET /p HTTP/1.1\r\nHost: h\r\n%s\r\n", fields);
    t = request(raw);
    if (with_log)
        txn_set_log(t, calloc(1, sizeof(struct txn_log)));
    ck_assert_int_eq(module_trace_context.on_request_head(t), VEER_DECLINED);
    return t;
}

/* The edit of name: its value, or NULL when it only removes; fails when there is none. */
static const char *edit_of(const struct txn *t, const char *name)
{
    for (unsigned i = 0; i < t->nedit; i++)
        if (strcmp(t->edit[i].name, name) == 0)
            return t->edit[i].value;
    ck_abort_msg("no edit of %s", name);
    return NULL;
}

/* A new traceparent as an edit, tracestate removed, the log naming the new trace-id. */
static void assert_started(const struct txn *t, const char *flags)
{
    const char *tp;
    struct tracectx tc;

    ck_assert_uint_eq(t->nedit, 2);
    tp = edit_of(t, "traceparent");
    ck_assert_ptr_nonnull(tp);
    ck_assert_uint_eq(strlen(tp), TRACECTX_LEN);
    ck_assert_int_eq(tracectx_parse(tp, strlen(tp), &tc), VEER_OK);
    ck_assert(memcmp(tp, "00-", 3) == 0);
    ck_assert_str_eq(tp + 53, flags);
    ck_assert(memcmp(tp + 3, TID, 32) != 0);
    ck_assert_ptr_null(edit_of(t, "tracestate"));
    if (t->log) {
        ck_assert_uint_eq(strlen(t->log->trace_id), 32);
        ck_assert(memcmp(t->log->trace_id, tp + 3, 32) == 0);
    }
}

START_TEST(test_valid_traceparent_is_left_alone_and_logged)
{
    struct txn *t;

    start("");
    t = run("traceparent: " VALID "\r\ntracestate: congo=1\r\ntracestate: rojo=2\r\n", true);
    ck_assert_uint_eq(t->nedit, 0);
    ck_assert_str_eq(t->log->trace_id, TID);
    txn_drop(t);
    /* upper-case field name, a later version with more fields */
    t = run("TraceParent: cc-" TID "-00f067aa0ba902b7-01-future\r\n", false);
    ck_assert_uint_eq(t->nedit, 0);
    txn_drop(t);
}
END_TEST

START_TEST(test_no_traceparent_starts_a_trace)
{
    struct txn *t;
    char first[TRACECTX_LEN + 1];

    start("");
    t = run("", true);
    assert_started(t, "00");
    snprintf(first, sizeof(first), "%s", edit_of(t, "traceparent"));
    txn_drop(t);
    t = run("tracestate: congo=1\r\n", true);
    assert_started(t, "00");
    ck_assert_str_ne(edit_of(t, "traceparent"), first);
    txn_drop(t);
}
END_TEST

START_TEST(test_malformed_or_repeated_traceparent_is_replaced)
{
    static const char *const bad[] = {
        "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\r\n",
        "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n",
        "traceparent: ff-" TID "-00f067aa0ba902b7-01\r\n",
        "traceparent: 00-" TID "-00f067aa0ba902b7-01-x\r\n",
        "traceparent: \r\n",
        "traceparent: " VALID "\r\ntraceparent: " VALID "\r\n",
        "traceparent: " VALID "\r\nX-A: 1\r\nTRACEPARENT: junk\r\n",
    };

    start("");
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct txn *t = run(bad[i], true);

        assert_started(t, "00");
        txn_drop(t);
    }
}
END_TEST

/* Connection: traceparent makes the field hop-by-hop: it is not forwarded, so it is absent. */
START_TEST(test_hop_by_hop_traceparent_counts_as_absent)
{
    struct txn *t;

    start("");
    t = run("traceparent: " VALID "\r\nConnection: traceparent\r\n", true);
    assert_started(t, "00");
    txn_drop(t);
}
END_TEST

START_TEST(test_sampled_sets_the_flag_of_started_traces)
{
    struct txn *t;

    start("trace_context = { sampled = true; };\n");
    t = run("", false);
    assert_started(t, "01");
    txn_drop(t);
    t = run("traceparent: 00-" TID "-00f067aa0ba902b7-00\r\n", false);
    ck_assert_uint_eq(t->nedit, 0);
    txn_drop(t);
}
END_TEST

START_TEST(test_generate_off_adds_nothing_and_removes_malformed)
{
    struct txn *t;

    start("trace_context = { generate = false; };\n");
    t = run("tracestate: congo=1\r\n", true);
    ck_assert_uint_eq(t->nedit, 0);
    ck_assert_str_eq(t->log->trace_id, "");
    txn_drop(t);
    t = run("traceparent: " VALID "\r\n", true);
    ck_assert_uint_eq(t->nedit, 0);
    ck_assert_str_eq(t->log->trace_id, TID);
    txn_drop(t);
    t = run("traceparent: junk\r\ntracestate: congo=1\r\n", true);
    ck_assert_uint_eq(t->nedit, 2);
    ck_assert_ptr_null(edit_of(t, "traceparent"));
    ck_assert_ptr_null(edit_of(t, "tracestate"));
    ck_assert_str_eq(t->log->trace_id, "");
    txn_drop(t);
}
END_TEST

/* A held request runs the hook again at every publish: its trace stays, its edits do not grow. */
START_TEST(test_request_back_from_hold_keeps_its_trace)
{
    struct txn *t;
    char first[TRACECTX_LEN + 1];
    uint16_t used;

    start("");
    t = run("", true);
    snprintf(first, sizeof(first), "%s", edit_of(t, "traceparent"));
    used = t->edit_used;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(module_trace_context.on_request_head(t), VEER_DECLINED);
    ck_assert_str_eq(edit_of(t, "traceparent"), first);
    ck_assert_uint_eq(t->nedit, 2);
    ck_assert_uint_eq(t->edit_used, used);
    ck_assert(memcmp(t->log->trace_id, first + 3, 32) == 0);
    txn_drop(t);
}
END_TEST

START_TEST(test_edits_refuse_framing_fields_and_bad_values)
{
    static const char *const framing[] = {"host", "Content-Length", "transfer-encoding",
                                          "connection", "UPGRADE"};
    struct txn *t;
    size_t n;

    start("");
    t = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    for (size_t i = 0; i < ARRAY_SIZE(framing); i++) {
        ck_assert_int_eq(txn_set_request_header(t, framing[i], "x", 1), VEER_ERROR);
        ck_assert_int_eq(txn_set_request_header(t, framing[i], NULL, 0), VEER_ERROR);
    }
    ck_assert_int_eq(txn_set_request_header(t, "x-a", "a\r\nX-Evil: 1", 12), VEER_ERROR);
    ck_assert_int_eq(txn_set_request_header(t, "x-a", "a\nb", 3), VEER_ERROR);
    ck_assert_int_eq(txn_set_request_header(t, "x-a", "a\0b", 3), VEER_ERROR);
    ck_assert_uint_eq(t->nedit, 0);
    ck_assert_uint_eq(t->edit_used, 0);
    /* a second edit of a name replaces the first; a removal has no value */
    ck_assert_int_eq(txn_set_request_header(t, "x-a", "one", 3), VEER_OK);
    ck_assert_int_eq(txn_set_request_header(t, "x-a", "two!", 3), VEER_OK);
    ck_assert_str_eq(txn_request_edit(t, "x-a", &n), "two");
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(txn_set_request_header(t, "x-a", NULL, 0), VEER_OK);
    ck_assert_ptr_null(txn_request_edit(t, "x-a", &n));
    ck_assert_ptr_null(txn_request_edit(t, "x-none", &n));
    ck_assert_uint_eq(t->nedit, 1);
    txn_drop(t);
}
END_TEST

START_TEST(test_edits_are_bounded)
{
    static const char *const names[] = {"x-1", "x-2", "x-3", "x-4", "x-5"};
    char big[TXN_EDIT_BYTES];
    struct txn *t;

    start("");
    t = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    for (int i = 0; i < TXN_EDITS; i++)
        ck_assert_int_eq(txn_set_request_header(t, names[i], NULL, 0), VEER_OK);
    ck_assert_int_eq(txn_set_request_header(t, names[TXN_EDITS], NULL, 0), VEER_ERROR);
    /* the values' room: exactly full, then one byte over */
    memset(big, 'v', sizeof(big));
    ck_assert_int_eq(txn_set_request_header(t, "x-1", big, sizeof(big)), VEER_ERROR);
    ck_assert_int_eq(txn_set_request_header(t, "x-1", big, sizeof(big) - 1), VEER_OK);
    ck_assert_int_eq(txn_set_request_header(t, "x-2", "v", 1), VEER_ERROR);
    ck_assert_uint_eq(t->nedit, TXN_EDITS);
    txn_drop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("trace_context");
    TCase *tc = tcase_create("trace_context");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_valid_traceparent_is_left_alone_and_logged);
    tcase_add_test(tc, test_no_traceparent_starts_a_trace);
    tcase_add_test(tc, test_malformed_or_repeated_traceparent_is_replaced);
    tcase_add_test(tc, test_hop_by_hop_traceparent_counts_as_absent);
    tcase_add_test(tc, test_sampled_sets_the_flag_of_started_traces);
    tcase_add_test(tc, test_generate_off_adds_nothing_and_removes_malformed);
    tcase_add_test(tc, test_request_back_from_hold_keeps_its_trace);
    tcase_add_test(tc, test_edits_refuse_framing_fields_and_bad_values);
    tcase_add_test(tc, test_edits_are_bounded);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
