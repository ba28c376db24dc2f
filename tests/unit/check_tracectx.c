/*
 * check_tracectx.c - W3C Trace Context (issue 22): the traceparent
 * validator against a table of valid and malformed values (the cases of
 * the specification's own test suite and more: wrong lengths, upper-case
 * hex, all-zero ids, version ff, bad separators, fields after a version 00
 * value, a future version with fields after its flags), each also in a
 * buffer of exactly its size so that a read past it is an ASan error; the
 * ChaCha20 block against RFC 8439's test vector; new traceparents (their
 * format, flags, that they parse, that they do not repeat and their bits
 * look random); the source never giving the same bytes twice.
 */
#include "tracectx.h"
#include "veer.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

struct parse_case {
    const char *in;
    bool ok;
    uint8_t version, flags; /* when ok */
};

static const struct parse_case cases[] = {
    /* valid */
    {"00-" TID "-" PID "-01", true, 0, 1},
    {"00-" TID "-" PID "-00", true, 0, 0},
    {"00-" TID "-" PID "-09", true, 0, 9}, /* unknown flag bits: kept, not refused */
    {"00-" TID "-" PID "-ff", true, 0, 0xff},
    {"00-00000000000000000000000000000001-0000000000000001-00", true, 0, 0},
    /* future versions: the version 00 fields, then the end or '-' */
    {"01-" TID "-" PID "-01", true, 1, 1},
    {"cc-" TID "-" PID "-01", true, 0xcc, 1},
    {"cc-" TID "-" PID "-01-what-the-future-will-be-like", true, 0xcc, 1},
    {"fe-" TID "-" PID "-00-", true, 0xfe, 0},
    {"cc-" TID "-" PID "-01.what-the-future-will-be-like", false, 0, 0},
    {"cc-" TID "-" PID "-01x", false, 0, 0},
    {"cc-" TID "-" PID, false, 0, 0}, /* shorter than 55 */
    {"cc-" TID "-" PID "-0", false, 0, 0},
    {"cc-" TID "-" PID "-0G-x", false, 0, 0},
    {"cc-" TID "-" PID "-0A-x", false, 0, 0},
    {"cc-00000000000000000000000000000000-" PID "-01-x", false, 0, 0},
    {"cc-" TID "-0000000000000000-01-x", false, 0, 0},
    /* version */
    {"ff-" TID "-" PID "-01", false, 0, 0},
    {"FF-" TID "-" PID "-01", false, 0, 0},
    {"0A-" TID "-" PID "-01", false, 0, 0},
    {"Cc-" TID "-" PID "-01", false, 0, 0},
    {".0-" TID "-" PID "-01", false, 0, 0},
    {"0.-" TID "-" PID "-01", false, 0, 0},
    {"0-" TID "-" PID "-01", false, 0, 0},
    {"000-" TID "-" PID "-01", false, 0, 0},
    {"0000-" TID "-" PID "-01", false, 0, 0},
    /* version 00 takes nothing after its flags */
    {"00-" TID "-" PID "-01.", false, 0, 0},
    {"00-" TID "-" PID "-01-", false, 0, 0},
    {"00-" TID "-" PID "-01-what-the-future-will-be-like", false, 0, 0},
    {"00-" TID "-" PID "-01 ", false, 0, 0},
    /* trace-id */
    {"00-00000000000000000000000000000000-" PID "-01", false, 0, 0},
    {"00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", false, 0, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e473A-" PID "-01", false, 0, 0},
    {"00-.bf92f3577b34da6a3ce929d0e0e4736-" PID "-01", false, 0, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e473.-" PID "-01", false, 0, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736a-" PID "-01", false, 0, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-01", false, 0, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e473g-" PID "-01", false, 0, 0},
    {"00-4bf92f3577b34da6 3ce929d0e0e4736-" PID "-01", false, 0, 0},
    /* parent-id */
    {"00-" TID "-0000000000000000-01", false, 0, 0},
    {"00-" TID "-00F067AA0BA902B7-01", false, 0, 0},
    {"00-" TID "-.0f067aa0ba902b7-01", false, 0, 0},
    {"00-" TID "-00f067aa0ba902b.-01", false, 0, 0},
    {"00-" TID "-00f067aa0ba902b71-01", false, 0, 0},
    {"00-" TID "-00f067aa0ba902b-01", false, 0, 0},
    /* trace-flags */
    {"00-" TID "-" PID "-.0", false, 0, 0},
    {"00-" TID "-" PID "-0.", false, 0, 0},
    {"00-" TID "-" PID "-0A", false, 0, 0},
    {"00-" TID "-" PID "-1", false, 0, 0},
    {"00-" TID "-" PID "-011", false, 0, 0},
    {"00-" TID "-" PID "-", false, 0, 0},
    /* separators */
    {"00_" TID "-" PID "-01", false, 0, 0},
    {"00-" TID "_" PID "-01", false, 0, 0},
    {"00-" TID "-" PID "_01", false, 0, 0},
    {"00--" TID "-" PID "-1", false, 0, 0},
    {"00-" TID "--" PID "1-01", false, 0, 0},
    {"00 " TID " " PID " 01", false, 0, 0},
    {"00-" TID PID "-01--", false, 0, 0},
    /* whitespace (the HTTP parser trims it around a value; inside, it is wrong) */
    {" 00-" TID "-" PID "-01", false, 0, 0},
    {"00-" TID "-" PID "-01\t", false, 0, 0},
    /* nothing, or nearly */
    {"", false, 0, 0},
    {"00", false, 0, 0},
    {"00-", false, 0, 0},
    {"00-" TID, false, 0, 0},
};

static int failed_cases;

static void expect(bool ok, const char *fmt, const char *in)
{
    if (!ok) {
        fprintf(stderr, fmt, in);
        fputc('\n', stderr);
        failed_cases++;
    }
}

START_TEST(test_parse_table)
{
    failed_cases = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const struct parse_case *c = &cases[i];
        size_t n = strlen(c->in);
        char *exact = malloc(n ? n : 1); /* no NUL: ASan sees a read past the value */
        struct tracectx tc = {0};
        int rc;

        memcpy(exact, c->in, n);
        rc = tracectx_parse(exact, n, &tc);
        expect((rc == VEER_OK) == c->ok, c->ok ? "refused: \"%s\"" : "accepted: \"%s\"", c->in);
        if (rc == VEER_OK && c->ok) {
            expect(tc.trace_id == exact + 3, "trace_id not in the value: \"%s\"", c->in);
            expect(tc.version == c->version, "version: \"%s\"", c->in);
            expect(tc.flags == c->flags, "flags: \"%s\"", c->in);
        }
        free(exact);
    }
    ck_assert_msg(failed_cases == 0, "%d of %zu cases failed (above)", failed_cases,
                  ARRAY_SIZE(cases));
}
END_TEST

/* Every single-character change of a valid value that leaves the lower-case hex alphabet fails. */
START_TEST(test_any_byte_out_of_place_is_refused)
{
    const char *good = "00-" TID "-" PID "-01";
    char v[TRACECTX_LEN];
    struct tracectx tc;

    for (size_t i = 0; i < TRACECTX_LEN; i++) {
        for (int c = 0; c < 256; c++) {
            bool dash = i == 2 || i == 35 || i == 52;
            bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            bool fine = dash ? c == '-' : hex;

            memcpy(v, good, sizeof(v));
            v[i] = (char)c;
            if (i < 2 && fine && (v[0] != '0' || v[1] != '0'))
                continue; /* another version: its own rules, in the table */
            ck_assert_msg((tracectx_parse(v, sizeof(v), &tc) == VEER_OK) == fine,
                          "byte %zu = 0x%02x: %s", i, c, fine ? "refused" : "accepted");
        }
    }
}
END_TEST

/* RFC 8439 section 2.3.2. */
START_TEST(test_chacha20_block_rfc8439_vector)
{
    static const uint8_t want[64] = {
        0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3,
        0x20, 0x71, 0xc4, 0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22,
        0xaa, 0x9a, 0xc3, 0xd4, 0x6c, 0x4e, 0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa,
        0x09, 0x14, 0xc2, 0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2, 0xb5, 0x12, 0x9c, 0xd1,
        0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e,
    };
    uint32_t key[8];
    const uint32_t nonce[3] = {0x09000000, 0x4a000000, 0x00000000};
    uint8_t out[64];

    for (uint32_t i = 0; i < 8; i++) {
        uint32_t b = 4 * i;

        key[i] = b | (b + 1) << 8 | (b + 2) << 16 | (b + 3) << 24; /* 00 01 02 .. 1f */
    }
    tracectx_chacha20_block(key, 1, nonce, out);
    ck_assert_mem_eq(out, want, sizeof(want));
}
END_TEST

static bool lc_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

START_TEST(test_new_traceparents_have_the_format_and_flags)
{
    struct tracectx_rng r;
    char tp[TRACECTX_LEN + 1];
    struct tracectx tc;

    ck_assert_int_eq(tracectx_rng_init(&r), VEER_OK);
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < 1000; i++) {
            memset(tp, 'x', sizeof(tp));
            tracectx_new(&r, s == 1, tp);
            ck_assert_uint_eq(strlen(tp), TRACECTX_LEN);
            ck_assert(memcmp(tp, "00-", 3) == 0);
            ck_assert(lc_hex(tp + 3, 32) && tp[35] == '-' && lc_hex(tp + 36, 16) && tp[52] == '-');
            ck_assert_str_eq(tp + 53, s ? "01" : "00");
            ck_assert_int_eq(tracectx_parse(tp, TRACECTX_LEN, &tc), VEER_OK);
            ck_assert_int_eq(tc.flags, s ? TRACECTX_SAMPLED : 0);
        }
    }
}
END_TEST

/*
 * 20000 new traceparents: no trace-id or parent-id repeats, and each of the
 * 192 bits of the ids is set in about half of them (a stuck or biased bit,
 * a counter, a source that restarts would show). For a fair bit the count
 * lies within 50% +/- 2% of 20000 except with probability about 1e-8.
 */
START_TEST(test_new_traceparents_do_not_repeat_and_look_random)
{
    enum { N = 20000 };
    struct tracectx_rng r;
    static char tids[N][33], pids[N][17];
    unsigned ones[192] = {0};
    char tp[TRACECTX_LEN + 1];

    ck_assert_int_eq(tracectx_rng_init(&r), VEER_OK);
    for (int i = 0; i < N; i++) {
        tracectx_new(&r, false, tp);
        memcpy(tids[i], tp + 3, 32);
        tids[i][32] = '\0';
        memcpy(pids[i], tp + 36, 16);
        pids[i][16] = '\0';
        for (int d = 0; d < 48; d++) {
            char c = d < 32 ? tp[3 + d] : tp[36 + d - 32];
            unsigned v = (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);

            for (int b = 0; b < 4; b++)
                ones[4 * d + b] += (v >> b) & 1;
        }
    }
    qsort(tids, N, sizeof(tids[0]), (int (*)(const void *, const void *))strcmp);
    qsort(pids, N, sizeof(pids[0]), (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < N; i++) {
        ck_assert_str_ne(tids[i - 1], tids[i]);
        ck_assert_str_ne(pids[i - 1], pids[i]);
    }
    for (int b = 0; b < 192; b++)
        ck_assert_msg(ones[b] > N * 48 / 100 && ones[b] < N * 52 / 100, "bit %d set %u of %d", b,
                      ones[b], N);
}
END_TEST

/* Two sources keyed by getrandom differ; one keyed twice the same way repeats itself. */
START_TEST(test_sources_are_independent_and_seeded)
{
    struct tracectx_rng a, b;
    uint8_t x[1000], y[1000];
    const uint8_t key[32] = {1, 2, 3};

    ck_assert_int_eq(tracectx_rng_init(&a), VEER_OK);
    ck_assert_int_eq(tracectx_rng_init(&b), VEER_OK);
    tracectx_rng_bytes(&a, x, sizeof(x));
    tracectx_rng_bytes(&b, y, sizeof(y));
    ck_assert(memcmp(x, y, sizeof(x)) != 0);
    tracectx_rng_seed(&a, key);
    tracectx_rng_seed(&b, key);
    tracectx_rng_bytes(&a, x, sizeof(x));
    tracectx_rng_bytes(&b, y, 1);
    tracectx_rng_bytes(&b, y + 1, 700); /* across a refill, in pieces: the same stream */
    tracectx_rng_bytes(&b, y + 701, sizeof(y) - 701);
    ck_assert_mem_eq(x, y, sizeof(x));
}
END_TEST

/* What is handed out is wiped from the state, and the key moves on with each refill. */
START_TEST(test_fast_key_erasure)
{
    struct tracectx_rng r;
    const uint8_t key[32] = {7};
    uint32_t first[8];
    uint8_t buf[64];
    size_t total = sizeof(r.out) - 32;

    tracectx_rng_seed(&r, key);
    memcpy(first, r.key, sizeof(first));
    tracectx_rng_bytes(&r, buf, sizeof(buf));
    ck_assert(memcmp(first, r.key, sizeof(first)) != 0);
    for (size_t i = 0; i < sizeof(r.out) - r.avail; i++)
        ck_assert_msg(r.out[i] == 0, "byte %zu of the state was handed out and kept", i);
    ck_assert_uint_eq(r.avail, total - sizeof(buf));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tracectx");
    TCase *tc = tcase_create("tracectx");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_parse_table);
    tcase_add_test(tc, test_any_byte_out_of_place_is_refused);
    tcase_add_test(tc, test_chacha20_block_rfc8439_vector);
    tcase_add_test(tc, test_new_traceparents_have_the_format_and_flags);
    tcase_add_test(tc, test_new_traceparents_do_not_repeat_and_look_random);
    tcase_add_test(tc, test_sources_are_independent_and_seeded);
    tcase_add_test(tc, test_fast_key_erasure);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("tracectx: %zu traceparent cases\n", ARRAY_SIZE(cases));
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
