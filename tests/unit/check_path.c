/*
 * check_path.c - the canonical request path (issue 17): a table of paths
 * with their canonical form or the reason they are refused (dot-segments,
 * repeated slashes, escapes decoded, kept and refused, RFC 3986 section 5.4's
 * examples as paths), the same answers in place, idempotence, the
 * output-size rule, linear time on megabyte inputs; and whole-segment prefix
 * matching.
 */
#include "path.h"
#include "veer.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct canon_case {
    const char *in;
    int rc;
    const char *out; /* when rc == PATH_OK */
};

static const struct canon_case cases[] = {
    /* already canonical */
    {"/", PATH_OK, "/"},
    {"/a", PATH_OK, "/a"},
    {"/a/", PATH_OK, "/a/"},
    {"/a/b/c", PATH_OK, "/a/b/c"},
    {"/payments/v1/charge", PATH_OK, "/payments/v1/charge"},
    /* repeated slashes */
    {"//", PATH_OK, "/"},
    {"///", PATH_OK, "/"},
    {"//a///b", PATH_OK, "/a/b"},
    {"/a//", PATH_OK, "/a/"},
    {"/a//b//", PATH_OK, "/a/b/"},
    {"//payments", PATH_OK, "/payments"},
    /* dot-segments */
    {"/.", PATH_OK, "/"},
    {"/./", PATH_OK, "/"},
    {"/./././", PATH_OK, "/"},
    {"/a/.", PATH_OK, "/a/"},
    {"/a/..", PATH_OK, "/"},
    {"/a/../", PATH_OK, "/"},
    {"/a/./b/../c", PATH_OK, "/a/c"},
    {"/a/b/..", PATH_OK, "/a/"},
    {"/a/b/../", PATH_OK, "/a/"},
    {"/a/b/../..", PATH_OK, "/"},
    {"/a/b/./../c/./d/..", PATH_OK, "/a/c/"},
    {"/a//../b", PATH_OK, "/b"},
    {"/a/.//b", PATH_OK, "/a/b"},
    {"/a/..//", PATH_OK, "/"},
    {"/.../a", PATH_OK, "/.../a"},
    {"/.a/b.", PATH_OK, "/.a/b."},
    {"/a/..b/c", PATH_OK, "/a/..b/c"},
    {"/a/b../c", PATH_OK, "/a/b../c"},
    /* climbing above "/" */
    {"/..", PATH_ABOVE_ROOT, NULL},
    {"/../", PATH_ABOVE_ROOT, NULL},
    {"/../x", PATH_ABOVE_ROOT, NULL},
    {"/a/../../x", PATH_ABOVE_ROOT, NULL},
    {"/a/b/../../..", PATH_ABOVE_ROOT, NULL},
    {"/./../x", PATH_ABOVE_ROOT, NULL},
    {"//..//x", PATH_ABOVE_ROOT, NULL},
    /* escapes of unreserved characters are decoded, whatever the case of the hex */
    {"/%41", PATH_OK, "/A"},
    {"/%7E", PATH_OK, "/~"},
    {"/%7e", PATH_OK, "/~"},
    {"/%61%62%63", PATH_OK, "/abc"},
    {"/%2D%2e%5F%7E", PATH_OK, "/-._~"},
    {"/%30%39", PATH_OK, "/09"},
    {"/%7a%5A", PATH_OK, "/zZ"},
    {"/pay%6Dents/x", PATH_OK, "/payments/x"},
    /* other escapes stay, in upper case */
    {"/%20", PATH_OK, "/%20"},
    {"/a%2ab", PATH_OK, "/a%2Ab"},
    {"/%3b", PATH_OK, "/%3B"},
    {"/%3F", PATH_OK, "/%3F"},
    {"/%25", PATH_OK, "/%25"},
    {"/%25%32%46", PATH_OK, "/%252F"},
    {"/%ff", PATH_OK, "/%FF"},
    {"/%c3%a9t%C3%a9", PATH_OK, "/%C3%A9t%C3%A9"},
    {"/%e2%82%ac", PATH_OK, "/%E2%82%AC"},
    {"/%01%1f%7f%80", PATH_OK, "/%01%1F%7F%80"},
    /* encoded dots are dots: decoded before dot-segments are removed */
    {"/%2e", PATH_OK, "/"},
    {"/%2E/", PATH_OK, "/"},
    {"/a/%2e/b", PATH_OK, "/a/b"},
    {"/a/%2e%2e/b", PATH_OK, "/b"},
    {"/a/%2E./b", PATH_OK, "/b"},
    {"/a/.%2e/b", PATH_OK, "/b"},
    {"/a/b/%2E%2E", PATH_OK, "/a/"},
    {"/a/%2e%2e%2e", PATH_OK, "/a/..."},
    {"/%2e%2e", PATH_ABOVE_ROOT, NULL},
    {"/%2e%2e/x", PATH_ABOVE_ROOT, NULL},
    {"/a/%2E%2e/%2e%2E/x", PATH_ABOVE_ROOT, NULL},
    /* refused escapes */
    {"/%2F", PATH_ENCODED_SLASH, NULL},
    {"/%2f", PATH_ENCODED_SLASH, NULL},
    {"/a%2fb", PATH_ENCODED_SLASH, NULL},
    {"/a/..%2f..%2fetc", PATH_ENCODED_SLASH, NULL},
    {"/%5C", PATH_ENCODED_BACKSLASH, NULL},
    {"/a%5cb", PATH_ENCODED_BACKSLASH, NULL},
    {"/%00", PATH_ENCODED_NUL, NULL},
    {"/a%00.html", PATH_ENCODED_NUL, NULL},
    {"/%", PATH_BAD_ESCAPE, NULL},
    {"/a%", PATH_BAD_ESCAPE, NULL},
    {"/%4", PATH_BAD_ESCAPE, NULL},
    {"/%4/", PATH_BAD_ESCAPE, NULL},
    {"/%GZ", PATH_BAD_ESCAPE, NULL},
    {"/%4G", PATH_BAD_ESCAPE, NULL},
    {"/%G4", PATH_BAD_ESCAPE, NULL},
    {"/%%41", PATH_BAD_ESCAPE, NULL},
    {"/% 1", PATH_BAD_ESCAPE, NULL},
    {"/%+1", PATH_BAD_ESCAPE, NULL},
    {"/%-1", PATH_BAD_ESCAPE, NULL},
    {"/%0x", PATH_BAD_ESCAPE, NULL},
    {"/ok/%", PATH_BAD_ESCAPE, NULL},
    /* not starting with '/': the caller answers OPTIONS * itself */
    {"", PATH_NOT_ABSOLUTE, NULL},
    {"*", PATH_NOT_ABSOLUTE, NULL},
    {"a/b", PATH_NOT_ABSOLUTE, NULL},
    {"./a", PATH_NOT_ABSOLUTE, NULL},
    {"%2Fa", PATH_NOT_ABSOLUTE, NULL},
    {"..", PATH_NOT_ABSOLUTE, NULL},
    /* the first problem met, left to right, is the one returned */
    {"/../%zz", PATH_ABOVE_ROOT, NULL},
    {"/%zz/..", PATH_BAD_ESCAPE, NULL},
    {"/%2F/%00", PATH_ENCODED_SLASH, NULL},
    /* other bytes are copied: ";" params, raw backslash, raw non-ASCII */
    {"/a;b/..;/c", PATH_OK, "/a;b/..;/c"},
    {"/a\\b", PATH_OK, "/a\\b"},
    {"/caf\xc3\xa9", PATH_OK, "/caf\xc3\xa9"},
    /* RFC 3986 section 5.2.4's own examples, as absolute paths */
    {"/a/b/c/./../../g", PATH_OK, "/a/g"},
    {"/mid/content=5/../6", PATH_OK, "/mid/6"},
    /*
     * RFC 3986 section 5.4: each reference against the base
     * http://a/b/c/d;p?q, written as the path after merging (5.2.3), the
     * input remove_dot_segments gets. Normal examples (5.4.1):
     */
    {"/b/c/g", PATH_OK, "/b/c/g"},     /* "g", "./g" (merged "/b/c/./g" below) */
    {"/b/c/./g", PATH_OK, "/b/c/g"},   /* "./g" */
    {"/b/c/g/", PATH_OK, "/b/c/g/"},   /* "g/" */
    {"/g", PATH_OK, "/g"},             /* "/g" */
    {"/b/c/;x", PATH_OK, "/b/c/;x"},   /* ";x" */
    {"/b/c/g;x", PATH_OK, "/b/c/g;x"}, /* "g;x" */
    {"/b/c/d;p", PATH_OK, "/b/c/d;p"}, /* "" and "?y" */
    {"/b/c/.", PATH_OK, "/b/c/"},      /* "." */
    {"/b/c/./", PATH_OK, "/b/c/"},     /* "./" */
    {"/b/c/..", PATH_OK, "/b/"},       /* ".." */
    {"/b/c/../", PATH_OK, "/b/"},      /* "../" */
    {"/b/c/../g", PATH_OK, "/b/g"},    /* "../g" */
    {"/b/c/../..", PATH_OK, "/"},      /* "../.." */
    {"/b/c/../../", PATH_OK, "/"},     /* "../../" */
    {"/b/c/../../g", PATH_OK, "/g"},   /* "../../g" */
    /* Abnormal examples (5.4.2): */
    {"/b/c/../../../g", PATH_ABOVE_ROOT, NULL},    /* RFC: "/g"; refused here */
    {"/b/c/../../../../g", PATH_ABOVE_ROOT, NULL}, /* RFC: "/g"; refused here */
    {"/./g", PATH_OK, "/g"},
    {"/../g", PATH_ABOVE_ROOT, NULL}, /* RFC: "/g"; refused here */
    {"/b/c/g.", PATH_OK, "/b/c/g."},
    {"/b/c/.g", PATH_OK, "/b/c/.g"},
    {"/b/c/g..", PATH_OK, "/b/c/g.."},
    {"/b/c/..g", PATH_OK, "/b/c/..g"},
    {"/b/c/./../g", PATH_OK, "/b/g"},            /* "./../g" */
    {"/b/c/./g/.", PATH_OK, "/b/c/g/"},          /* "./g/." */
    {"/b/c/g/./h", PATH_OK, "/b/c/g/h"},         /* "g/./h" */
    {"/b/c/g/../h", PATH_OK, "/b/c/h"},          /* "g/../h" */
    {"/b/c/g;x=1/./y", PATH_OK, "/b/c/g;x=1/y"}, /* "g;x=1/./y" */
    {"/b/c/g;x=1/../y", PATH_OK, "/b/c/y"},      /* "g;x=1/../y" */
};

/* The input in a buffer of exactly its length, so that ASan sees a read past it. */
static char *exact_copy(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);

    memcpy(p, s, len);
    return p;
}

static int canon(const char *s, size_t len, char **out, size_t *out_len)
{
    char *in = exact_copy(s, len);
    int rc;

    *out = malloc(len ? len : 1); /* exactly cap = len: a write past it is caught */
    rc = path_canonical(in, len, *out, len, out_len);
    free(in);
    return rc;
}

/*
 * The table tests run every case in one test (one fork, not one per case)
 * and name each case that fails before failing, so that one run lists them all.
 */
static int failed_cases;

#define expect(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failed_cases++;                                                                        \
        }                                                                                          \
    } while (0)

START_TEST(test_canonical_table)
{
    failed_cases = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const struct canon_case *c = &cases[i];
        size_t len = strlen(c->in), n = 12345;
        char *out;
        int rc = canon(c->in, len, &out, &n);

        expect(rc == c->rc, "\"%s\": got %s, want %s", c->in, path_status_name(rc),
               path_status_name(c->rc));
        if (rc == PATH_OK && c->rc == PATH_OK)
            expect(n == strlen(c->out) && memcmp(out, c->out, n) == 0 && n <= len,
                   "\"%s\": got \"%.*s\", want \"%s\"", c->in, (int)n, out, c->out);
        if (rc != PATH_OK)
            expect(n == 12345, "\"%s\": *out_len set on refusal", c->in);
        free(out);
    }
    ck_assert_msg(failed_cases == 0, "%d of %zu cases failed (above)", failed_cases,
                  ARRAY_SIZE(cases));
}
END_TEST

START_TEST(test_canonical_form_is_idempotent)
{
    failed_cases = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const struct canon_case *c = &cases[i];
        size_t n = 0, n2 = 0;
        char *out, *again;
        int rc;

        if (canon(c->in, strlen(c->in), &out, &n) != PATH_OK) {
            free(out);
            continue;
        }
        rc = canon(out, n, &again, &n2);
        expect(rc == PATH_OK && n2 == n && memcmp(out, again, n) == 0,
               "\"%s\" then \"%.*s\" then %s \"%.*s\"", c->in, (int)n, out, path_status_name(rc),
               rc == PATH_OK ? (int)n2 : 0, again);
        free(out);
        free(again);
    }
    ck_assert_msg(failed_cases == 0, "%d cases not idempotent (above)", failed_cases);
}
END_TEST

START_TEST(test_in_place_gives_the_same_answer)
{
    failed_cases = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const struct canon_case *c = &cases[i];
        size_t len = strlen(c->in), n = 0;
        char *buf = exact_copy(c->in, len);
        int rc = path_canonical(buf, len, buf, len, &n);

        expect(rc == c->rc, "\"%s\" in place: got %s", c->in, path_status_name(rc));
        if (rc == PATH_OK && c->rc == PATH_OK)
            expect(n == strlen(c->out) && memcmp(buf, c->out, n) == 0, "\"%s\" in place: \"%.*s\"",
                   c->in, (int)n, buf);
        free(buf);
    }
    ck_assert_msg(failed_cases == 0, "%d cases differ in place (above)", failed_cases);
}
END_TEST

START_TEST(test_output_buffer_shorter_than_input_is_refused)
{
    char out[16];
    size_t n = 0;

    /* "/a/./b" canonicalizes to 4 bytes, but cap must cover the input's 6 */
    ck_assert_int_eq(path_canonical("/a/./b", 6, out, 5, &n), PATH_NO_ROOM);
    ck_assert_int_eq(path_canonical("/a/./b", 6, out, 6, &n), PATH_OK);
    ck_assert_uint_eq(n, 4);
    ck_assert_int_eq(memcmp(out, "/a/b", 4), 0);
    ck_assert_int_eq(path_canonical("", 0, out, 0, &n), PATH_NOT_ABSOLUTE);
}
END_TEST

START_TEST(test_every_status_has_its_own_name)
{
    for (int a = PATH_OK; a <= PATH_NO_ROOM; a++) {
        ck_assert_str_ne(path_status_name(a), "unknown path status");
        for (int b = PATH_OK; b < a; b++)
            ck_assert_str_ne(path_status_name(a), path_status_name(b));
    }
    ck_assert_str_eq(path_status_name(PATH_NO_ROOM + 1), "unknown path status");
}
END_TEST

/* s repeated to fill exactly n bytes (n a multiple of its length) in a malloc'd buffer. */
static char *repeat(const char *s, size_t n)
{
    size_t k = strlen(s);
    char *p = malloc(n);

    ck_assert_uint_eq(n % k, 0);
    for (size_t i = 0; i < n; i += k)
        memcpy(p + i, s, k);
    return p;
}

START_TEST(test_long_paths_of_64k)
{
    size_t n = 0, len = 64 * 1024;
    char *in = repeat("/abcdefg", len), *out = malloc(len);

    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK); /* unchanged */
    ck_assert_uint_eq(n, len);
    ck_assert_int_eq(memcmp(in, out, len), 0);
    free(in);

    len = 3 * 21845; /* "/" then %41 to just under 64 KiB */
    in = repeat("%41", len);
    in[0] = '/';
    in[1] = '/';
    in[2] = '/';
    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK);
    ck_assert_uint_eq(n, 1 + 21844);
    ck_assert_int_eq(out[0], '/');
    for (size_t i = 1; i < n; i++)
        ck_assert_int_eq(out[i], 'A');
    free(in);

    len = 64 * 1024; /* 32 KiB of "/a" (16384 segments), then 10922 "/..", then slashes */
    in = malloc(len);
    for (size_t i = 0; i < len / 2; i += 2)
        memcpy(in + i, "/a", 2);
    size_t j = len / 2, ups = 0;
    for (; j + 3 <= len; j += 3, ups++)
        memcpy(in + j, "/..", 3);
    memset(in + j, '/', len - j);
    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK);
    ck_assert_uint_eq(n, 2 * (len / 4 - ups) + 1);
    free(in);
    free(out);
}
END_TEST

/*
 * Megabyte inputs shaped to make a careless implementation quadratic (a
 * memmove per removed segment, a rescan per "..") finish in well under the
 * deadline: a quadratic pass over 1 MiB is ~10^11-10^12 steps, minutes; the
 * linear one is milliseconds even under ASan on a loaded machine.
 */
START_TEST(test_megabyte_inputs_take_linear_time)
{
    const size_t len = 3 * 349525; /* just under 1 MiB */
    char *out = malloc(len), *in;
    size_t n = 0;
    uint64_t t0 = veer_now_us();

    in = repeat("/./", len);
    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK);
    ck_assert_uint_eq(n, 1);
    free(in);

    in = repeat("//.", len); /* "//./" merged runs */
    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK);
    ck_assert_uint_eq(n, 1);
    free(in);

    in = repeat("%2e", len); /* one segment of 349525 dots */
    in[0] = '/';
    in[1] = '/';
    in[2] = '/';
    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK);
    ck_assert_uint_eq(n, 1 + 349524);
    free(in);

    /* half "/ab", then as many "/.." as there were segments: each ".." walks back once */
    in = malloc(len);
    for (size_t i = 0; i < len / 2 - 1; i += 3)
        memcpy(in + i, "/ab", 3);
    size_t segs = (len / 2 - 1 + 2) / 3, j = segs * 3;
    for (size_t k = 0; k < segs; k++, j += 3)
        memcpy(in + j, "/..", 3);
    memset(in + j, '/', len - j);
    ck_assert_int_eq(path_canonical(in, len, out, len, &n), PATH_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(out[0], '/');
    free(in);

    ck_assert_msg(veer_now_us() - t0 < 10 * 1000 * 1000, "4 MiB took %.1f s",
                  (double)(veer_now_us() - t0) / 1e6);
    free(out);
}
END_TEST

struct prefix_case {
    const char *path, *prefix;
    bool match;
};

static const struct prefix_case prefixes[] = {
    {"/payments", "/payments", true},
    {"/payments/", "/payments", true},
    {"/payments/x", "/payments", true},
    {"/payments/x/y", "/payments", true},
    {"/paymentsx", "/payments", false},
    {"/payments.json", "/payments", false},
    {"/payments;v=1", "/payments", false},
    {"/payment", "/payments", false},
    {"/pay", "/payments", false},
    {"/", "/", true},
    {"/anything/at/all", "/", true},
    {"/a/", "/a/", true},
    {"/a/x", "/a/", true},
    {"/a", "/a/", false},
    {"/ab", "/a/", false},
    {"/admin", "/admin", true},
    {"/admin/users", "/admin", true},
    {"/administrator", "/admin", false},
    {"/a/b/c", "/a/b", true},
    {"/a/bc", "/a/b", false},
    {"/A", "/a", false},
    {"/x", "", true},
    {"", "", true},
    {"", "/", false},
};

START_TEST(test_prefix_matches_whole_segments)
{
    failed_cases = 0;
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
        const struct prefix_case *c = &prefixes[i];
        size_t len = strlen(c->path), plen = strlen(c->prefix);
        char *path = exact_copy(c->path, len), *prefix = exact_copy(c->prefix, plen);

        expect(path_prefix_match(path, len, prefix, plen) == c->match,
               "\"%s\" under \"%s\": want %s", c->path, c->prefix, c->match ? "yes" : "no");
        free(path);
        free(prefix);
    }
    ck_assert_msg(failed_cases == 0, "%d of %zu prefix cases failed (above)", failed_cases,
                  ARRAY_SIZE(prefixes));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("path");
    TCase *tc = tcase_create("path");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_canonical_table);
    tcase_add_test(tc, test_canonical_form_is_idempotent);
    tcase_add_test(tc, test_in_place_gives_the_same_answer);
    tcase_add_test(tc, test_output_buffer_shorter_than_input_is_refused);
    tcase_add_test(tc, test_every_status_has_its_own_name);
    tcase_add_test(tc, test_long_paths_of_64k);
    tcase_add_test(tc, test_megabyte_inputs_take_linear_time);
    tcase_add_test(tc, test_prefix_matches_whole_segments);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("path: %zu canonical-path cases, %zu prefix cases\n", ARRAY_SIZE(cases),
           ARRAY_SIZE(prefixes));
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
