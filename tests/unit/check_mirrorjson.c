/*
 * check_mirrorjson.c - the shadow traffic report of a pool (mirrorjson.c)
 * for a model built from a real config, with figures counted into the
 * pool's sites as workers count them: the JSON object (read back with
 * jansson) says whether the pool mirrors, to which group at which percent,
 * one row per route whose requests were mirrored ("" first), totals and
 * the classes that have counts, p50/p99 of the latency difference (null
 * without a completed pair), the mismatches oldest first over every row;
 * the text form says the same in lines; mirrorjson_list lists only the
 * pools that mirror now or have mirrored.
 */
#include "conf.h"
#include "mirrorjson.h"
#include "mirrorstat.h"
#include "model.h"
#include "routing.h"
#include "sbuf.h"
#include "veer.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONF                                                                                       \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"a1\"; address = \"127.0.0.1:1\"; group = \"blue\"; },"                             \
    "{ name = \"g1\"; address = \"127.0.0.1:2\"; group = \"green\"; } );"                          \
    "shares = { blue = 100; green = 0; };"                                                         \
    "mirror = { group = \"green\"; percent = 10.0; }; },"                                          \
    "{ name = \"pay\"; backends = ("                                                               \
    "{ name = \"p1\"; address = \"127.0.0.1:3\"; group = \"blue\"; },"                             \
    "{ name = \"p2\"; address = \"127.0.0.1:4\"; group = \"green\"; } );"                          \
    "shares = { blue = 100; green = 0; }; },"                                                      \
    "{ name = \"web\"; backends = ( { name = \"w1\"; address = \"127.0.0.1:5\"; } ); } );\n"       \
    "routes = ( { name = \"users\"; pool = \"api\"; match = { path_prefix = \"/users\"; }; } );\n"

#define API 0
#define PAY 1
#define WEB 2

#define TOL 1e-9

static struct {
    struct veer_conf *c;
    struct model *m;
    struct sbuf o;
} fx;

static void setup(void)
{
    char path[] = "/tmp/check_mirrorjson_XXXXXX", err[512] = "";
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, CONF, strlen(CONF)), (ssize_t)strlen(CONF));
    close(fd);
    fx.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(fx.c != NULL, "config: %s", err);
    veer_nworkers = 2;
    fx.m = model_from_conf(fx.c);
    ck_assert_uint_eq(fx.m->npools, 3);
    sb_init(&fx.o);
}

static void teardown(void)
{
    sb_free(&fx.o);
    model_free(fx.m);
    conf_free(fx.c);
    mirror_sites_free();
}

/* Wait until the clock has moved past the last note, so that notes are ordered by time. */
static void note(struct mirror_site *s, const struct mirror_mismatch *m)
{
    static uint64_t last;
    uint64_t deadline = veer_now_us() + 1000000;

    while (veer_now_us() <= last)
        ck_assert_msg(veer_now_us() < deadline, "the clock does not move");
    mirror_note(s, m);
    last = veer_now_us();
}

static void mismatch(struct mirror_mismatch *m, enum mirror_result r, const char *id,
                     const char *path, int ps, int ss, uint8_t psha, uint8_t ssha,
                     const char *header)
{
    memset(m, 0, sizeof(*m));
    m->result = r;
    snprintf(m->request_id, sizeof(m->request_id), "%s", id);
    snprintf(m->method, sizeof(m->method), "GET");
    snprintf(m->path, sizeof(m->path), "%s", path);
    m->primary_status = ps;
    m->shadow_status = ss;
    memset(m->primary_sha, psha, sizeof(m->primary_sha));
    memset(m->shadow_sha, ssha, sizeof(m->shadow_sha));
    m->primary_bytes = 12;
    m->shadow_bytes = 34;
    snprintf(m->header, sizeof(m->header), "%s", header);
}

/*
 * api's figures: on no route, 3 matches and a status_diff (2xx, the shadow
 * 1 ms slower), 2 dropped (2xx), a timeout (5xx); on route users, a
 * body_diff (4xx, the shadow 300 ms faster). Three mismatches, the route's
 * in the middle.
 */
static void count_api(void)
{
    struct mirror_site *s = mirror_site_get("api", "");
    struct mirror_site *u = mirror_site_get("api", "users");
    struct mirror_mismatch m;

    mirror_count(s, 0, 200, MR_MATCH, 1000, 2000);
    mirror_count(s, 1, 200, MR_MATCH, 1000, 2000);
    mirror_count(s, 1, 201, MR_MATCH, 1000, 2000);
    mirror_count(s, 0, 200, MR_STATUS_DIFF, 1000, 2000);
    mirror_count(s, 0, 200, MR_DROPPED, 0, 0);
    mirror_count(s, 1, 204, MR_DROPPED, 0, 0);
    mirror_count(s, 1, 503, MR_TIMEOUT, 0, 0);
    mirror_count(u, 0, 404, MR_BODY_DIFF, -300000, 1000);
    mismatch(&m, MR_STATUS_DIFF, "id-1", "/x", 200, 500, 0xab, 0xcd, "");
    note(s, &m);
    mismatch(&m, MR_BODY_DIFF, "id-2", "/users/\"q\"", 404, 404, 0x01, 0x02, "etag");
    note(u, &m);
    mismatch(&m, MR_STATUS_DIFF, "id-3", "/y", 200, 502, 0x00, 0xff, "");
    note(s, &m);
}

static json_t *report(unsigned pi)
{
    json_error_t e;
    json_t *j;

    sb_reset(&fx.o);
    mirrorjson_report(&fx.o, fx.m, pi);
    j = json_loadb(fx.o.s, fx.o.len, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(j != NULL && json_is_object(j), "not a JSON object (%s): %s", e.text, fx.o.s);
    return j;
}

static uint64_t num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return (uint64_t)json_integer_value(v);
}

static void assert_figures(const json_t *f, uint64_t mirrored, uint64_t dropped, uint64_t match,
                           uint64_t status_diff, uint64_t body_diff, uint64_t timeout,
                           uint64_t error)
{
    static const char *const keys[] = {"mirrored",    "dropped",      "match",
                                       "status_diff", "body_diff",    "timeout",
                                       "error",       "delta_p50_ms", "delta_p99_ms"};

    /* The nine figures, and "class" in a class row. */
    ck_assert_uint_eq(json_object_size(f), json_object_get(f, "class") ? 10 : 9);
    for (unsigned i = 0; i < 9; i++)
        ck_assert_msg(json_object_get(f, keys[i]) != NULL, "no %s", keys[i]);
    ck_assert_uint_eq(num(f, "mirrored"), mirrored);
    ck_assert_uint_eq(num(f, "dropped"), dropped);
    ck_assert_uint_eq(num(f, "match"), match);
    ck_assert_uint_eq(num(f, "status_diff"), status_diff);
    ck_assert_uint_eq(num(f, "body_diff"), body_diff);
    ck_assert_uint_eq(num(f, "timeout"), timeout);
    ck_assert_uint_eq(num(f, "error"), error);
}

static void assert_ms(const json_t *f, const char *key, double want)
{
    const json_t *v = json_object_get(f, key);

    ck_assert_msg(json_is_number(v), "%s is not a number", key);
    ck_assert_double_eq_tol(json_number_value(v), want, TOL);
}

static const char *str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

START_TEST(test_report_of_a_pool_with_counts_and_mismatches)
{
    json_t *j, *routes, *r, *classes, *c, *mm, *x;

    count_api();
    j = report(API);
    ck_assert_uint_eq(json_object_size(j), 6);
    ck_assert_str_eq(str(j, "pool"), "api");
    ck_assert(json_is_true(json_object_get(j, "on")));
    ck_assert_str_eq(str(j, "group"), "green");
    ck_assert_double_eq_tol(json_number_value(json_object_get(j, "percent")), 10.0, TOL);

    routes = json_object_get(j, "routes");
    ck_assert_uint_eq(json_array_size(routes), 2);
    r = json_array_get(routes, 0);
    ck_assert_str_eq(str(r, "route"), ""); /* requests on no route first */
    assert_figures(json_object_get(r, "totals"), 5, 2, 3, 1, 0, 1, 0);
    /* 4 pairs in (0.5 ms, 1 ms]: p50 at rank 2 of 4, p99 at rank 3.96. */
    assert_ms(json_object_get(r, "totals"), "delta_p50_ms", 0.75);
    assert_ms(json_object_get(r, "totals"), "delta_p99_ms", 0.995);
    classes = json_object_get(r, "classes");
    ck_assert_uint_eq(json_array_size(classes), 2); /* only classes with counts */
    c = json_array_get(classes, 0);
    ck_assert_str_eq(str(c, "class"), "2xx");
    ck_assert_uint_eq(json_object_size(c), 10);
    assert_figures(c, 4, 2, 3, 1, 0, 0, 0);
    assert_ms(c, "delta_p50_ms", 0.75);
    c = json_array_get(classes, 1);
    ck_assert_str_eq(str(c, "class"), "5xx");
    assert_figures(c, 1, 0, 0, 0, 0, 1, 0);
    ck_assert(json_is_null(json_object_get(c, "delta_p50_ms"))); /* no pair completed */
    ck_assert(json_is_null(json_object_get(c, "delta_p99_ms")));

    r = json_array_get(routes, 1);
    ck_assert_str_eq(str(r, "route"), "users");
    assert_figures(json_object_get(r, "totals"), 1, 0, 0, 0, 1, 0, 0);
    assert_ms(json_object_get(r, "totals"), "delta_p50_ms", -375.0); /* in (-500, -250] ms */
    assert_ms(json_object_get(r, "totals"), "delta_p99_ms", -252.5);
    classes = json_object_get(r, "classes");
    ck_assert_uint_eq(json_array_size(classes), 1);
    ck_assert_str_eq(str(json_array_get(classes, 0), "class"), "4xx");

    mm = json_object_get(j, "mismatches");
    ck_assert_uint_eq(json_array_size(mm), 3);
    x = json_array_get(mm, 0);
    ck_assert_uint_eq(json_object_size(x), 12);
    ck_assert_str_eq(str(x, "request_id"), "id-1");
    ck_assert_str_eq(str(x, "route"), "");
    ck_assert_str_eq(str(x, "method"), "GET");
    ck_assert_str_eq(str(x, "path"), "/x");
    ck_assert_str_eq(str(x, "result"), "status_diff");
    ck_assert_uint_eq(num(x, "primary_status"), 200);
    ck_assert_uint_eq(num(x, "shadow_status"), 500);
    ck_assert_str_eq(str(x, "primary_sha256"),
                     "abababababababababababababababababababababababababababababababab");
    ck_assert_str_eq(str(x, "shadow_sha256"),
                     "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    ck_assert_uint_eq(num(x, "primary_bytes"), 12);
    ck_assert_uint_eq(num(x, "shadow_bytes"), 34);
    ck_assert(json_is_null(json_object_get(x, "header")));
    x = json_array_get(mm, 1); /* the route's, noted between the two others */
    ck_assert_str_eq(str(x, "request_id"), "id-2");
    ck_assert_str_eq(str(x, "route"), "users");
    ck_assert_str_eq(str(x, "path"), "/users/\"q\"");
    ck_assert_str_eq(str(x, "result"), "body_diff");
    ck_assert_str_eq(str(x, "header"), "etag");
    ck_assert_str_eq(str(x, "primary_sha256"),
                     "0101010101010101010101010101010101010101010101010101010101010101");
    x = json_array_get(mm, 2);
    ck_assert_str_eq(str(x, "request_id"), "id-3");
    ck_assert_uint_eq(num(x, "shadow_status"), 502);
    ck_assert_str_eq(str(x, "primary_sha256"),
                     "0000000000000000000000000000000000000000000000000000000000000000");
    ck_assert_str_eq(str(x, "shadow_sha256"),
                     "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    json_decref(j);
}
END_TEST

START_TEST(test_report_keeps_the_last_50_mismatches_over_every_route)
{
    struct mirror_site *s = mirror_site_get("api", "");
    struct mirror_site *u = mirror_site_get("api", "users");
    struct mirror_mismatch m;
    json_t *j, *mm;
    char id[32];

    for (unsigned i = 0; i < 70; i++) {
        snprintf(id, sizeof(id), "id-%u", i);
        mismatch(&m, MR_STATUS_DIFF, id, "/", 200, 500, 0, 0, "");
        note(i % 2 ? u : s, &m);
    }
    j = report(API);
    mm = json_object_get(j, "mismatches");
    ck_assert_uint_eq(json_array_size(mm), MIRROR_MISMATCHES);
    for (unsigned k = 0; k < MIRROR_MISMATCHES; k++) {
        snprintf(id, sizeof(id), "id-%u", 20 + k);
        ck_assert_str_eq(str(json_array_get(mm, k), "request_id"), id);
        ck_assert_str_eq(str(json_array_get(mm, k), "route"), (20 + k) % 2 ? "users" : "");
    }
    json_decref(j);
}
END_TEST

START_TEST(test_report_of_a_pool_that_stopped_mirroring)
{
    json_t *j;

    count_api();
    fx.m->pools[API].mirror = MIRROR_OFF;
    j = report(API);
    ck_assert(json_is_false(json_object_get(j, "on")));
    ck_assert(json_is_null(json_object_get(j, "group")));
    ck_assert(json_is_null(json_object_get(j, "percent")));
    ck_assert_uint_eq(json_array_size(json_object_get(j, "routes")), 2); /* the figures stay */
    ck_assert_uint_eq(json_array_size(json_object_get(j, "mismatches")), 3);
    json_decref(j);
    /* Switched on at runtime to another percent: the operator's values. */
    fx.m->pools[PAY].mirror = MIRROR_ON;
    fx.m->pools[PAY].mirror_group = veer_strdup("green");
    fx.m->pools[PAY].mirror_percent = 2.5;
    j = report(PAY);
    ck_assert(json_is_true(json_object_get(j, "on")));
    ck_assert_str_eq(str(j, "group"), "green");
    ck_assert_double_eq_tol(json_number_value(json_object_get(j, "percent")), 2.5, TOL);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "routes")), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "mismatches")), 0);
    json_decref(j);
}
END_TEST

/* The next line of the text report (without its newline) into line; false at the end. */
static bool next_line(const char **p, char *line, size_t len)
{
    const char *nl = strchr(*p, '\n');

    if (nl == NULL)
        return false;
    ck_assert_uint_lt((size_t)(nl - *p), len);
    memcpy(line, *p, (size_t)(nl - *p));
    line[nl - *p] = '\0';
    *p = nl + 1;
    return true;
}

/* A figures row: its words. */
static void assert_row(const char *line, const char *route, const char *cls, const char *figures)
{
    char want[256], got[256];
    const char *w = line;
    size_t n = 0;

    snprintf(want, sizeof(want), "%s %s %s", route, cls, figures);
    /* Columns are padded: compare word for word. */
    while (*w) {
        while (*w == ' ')
            w++;
        while (*w && *w != ' ' && n < sizeof(got) - 2)
            got[n++] = *w++;
        while (*w == ' ')
            w++;
        if (*w)
            got[n++] = ' ';
    }
    got[n] = '\0';
    ck_assert_str_eq(got, want);
}

START_TEST(test_text_report_lines)
{
    const char *p;
    char line[512];

    count_api();
    sb_reset(&fx.o);
    mirrorjson_text(&fx.o, fx.m, API);
    p = fx.o.s;
    ck_assert(next_line(&p, line, sizeof(line)));
    ck_assert_str_eq(line, "pool api: mirror on, 10% to group green");
    ck_assert(next_line(&p, line, sizeof(line)));
    assert_row(line, "route", "class",
               "mirrored dropped match status_diff body_diff timeout error delta_p50_ms "
               "delta_p99_ms");
    ck_assert(next_line(&p, line, sizeof(line)));
    assert_row(line, "-", "2xx", "4 2 3 1 0 0 0 0.750 0.995");
    ck_assert(next_line(&p, line, sizeof(line)));
    assert_row(line, "-", "5xx", "1 0 0 0 0 1 0 - -");
    ck_assert(next_line(&p, line, sizeof(line)));
    assert_row(line, "-", "all", "5 2 3 1 0 1 0 0.750 0.995");
    ck_assert(next_line(&p, line, sizeof(line)));
    assert_row(line, "users", "4xx", "1 0 0 0 1 0 0 -375.000 -252.500");
    ck_assert(next_line(&p, line, sizeof(line)));
    assert_row(line, "users", "all", "1 0 0 0 1 0 0 -375.000 -252.500");
    ck_assert(next_line(&p, line, sizeof(line)));
    ck_assert_str_eq(line, "last 3 mismatches (oldest first):");
    ck_assert(next_line(&p, line, sizeof(line)));
    ck_assert_str_eq(line, "id-1 GET /x status_diff primary 200 12 bytes "
                           "abababababababababababababababababababababababababababababababab "
                           "shadow 500 34 bytes "
                           "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    ck_assert(next_line(&p, line, sizeof(line)));
    ck_assert_str_eq(line, "id-2 GET /users/\"q\" body_diff primary 404 12 bytes "
                           "0101010101010101010101010101010101010101010101010101010101010101 "
                           "shadow 404 34 bytes "
                           "0202020202020202020202020202020202020202020202020202020202020202 "
                           "header etag");
    ck_assert(next_line(&p, line, sizeof(line)));
    ck_assert(strncmp(line, "id-3 GET /y status_diff primary 200 ", 36) == 0);
    ck_assert(!next_line(&p, line, sizeof(line)));
    ck_assert_str_eq(p, "");
}
END_TEST

START_TEST(test_text_report_of_a_pool_that_does_not_mirror)
{
    sb_reset(&fx.o);
    mirrorjson_text(&fx.o, fx.m, WEB);
    ck_assert(strncmp(fx.o.s, "pool web: mirror off\nroute ", 27) == 0);
    {
        unsigned lines = 0;

        for (const char *c = fx.o.s; *c; c++)
            lines += *c == '\n';
        ck_assert_uint_eq(lines, 2); /* the state and the column names: no row, no mismatch */
    }
}
END_TEST

/* The pool names of mirrorjson_list, comma-separated. */
static void list_names(char *out, size_t len)
{
    json_error_t e;
    json_t *j;
    size_t n = 0;

    sb_reset(&fx.o);
    mirrorjson_list(&fx.o, fx.m);
    j = json_loadb(fx.o.s, fx.o.len, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(j != NULL && json_is_array(j), "not a JSON array (%s): %s", e.text, fx.o.s);
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(j); i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s", i ? "," : "",
                              json_string_value(json_object_get(json_array_get(j, i), "pool")));
    json_decref(j);
}

START_TEST(test_list_has_only_pools_that_mirror_or_have_mirrored)
{
    char names[256];

    /* api mirrors by its config; pay and web neither mirror nor have mirrored. */
    list_names(names, sizeof(names));
    ck_assert_str_eq(names, "api");
    ck_assert(mirrorjson_has(fx.m, API));
    ck_assert(!mirrorjson_has(fx.m, PAY));
    ck_assert(!mirrorjson_has(fx.m, WEB));
    /* pay switched on at runtime. */
    fx.m->pools[PAY].mirror = MIRROR_ON;
    fx.m->pools[PAY].mirror_group = veer_strdup("green");
    fx.m->pools[PAY].mirror_percent = 1;
    list_names(names, sizeof(names));
    ck_assert_str_eq(names, "api,pay");
    /* api and pay off: api has no site yet, so it has nothing to say; pay neither. */
    fx.m->pools[API].mirror = MIRROR_OFF;
    free(fx.m->pools[PAY].mirror_group);
    fx.m->pools[PAY].mirror_group = NULL;
    fx.m->pools[PAY].mirror = MIRROR_OFF;
    list_names(names, sizeof(names));
    ck_assert_str_eq(names, "");
    ck_assert_str_eq(fx.o.s, "[]");
    /* web mirrored once (a site of its own): listed, off, with its figures. */
    mirror_count(mirror_site_get("web", ""), 0, 200, MR_MATCH, 0, 0);
    list_names(names, sizeof(names));
    ck_assert_str_eq(names, "web");
    /* A site of a pool whose name only begins like another's is not that pool's. */
    mirror_site_get("pay2", "");
    list_names(names, sizeof(names));
    ck_assert_str_eq(names, "web");
}
END_TEST

static Suite *mirrorjson_suite(void)
{
    Suite *s = suite_create("mirrorjson");
    TCase *tc = tcase_create("report");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_report_of_a_pool_with_counts_and_mismatches);
    tcase_add_test(tc, test_report_keeps_the_last_50_mismatches_over_every_route);
    tcase_add_test(tc, test_report_of_a_pool_that_stopped_mirroring);
    tcase_add_test(tc, test_text_report_lines);
    tcase_add_test(tc, test_text_report_of_a_pool_that_does_not_mirror);
    tcase_add_test(tc, test_list_has_only_pools_that_mirror_or_have_mirrored);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mirrorjson_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
