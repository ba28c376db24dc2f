/*
 * check_hmap.c - the hash index: every key found after inserts, duplicates
 * refused with the existing value, removal that keeps every other key of a
 * probe run reachable, and growth.
 */
#include "hmap.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 20000

static char keys[N][16];

static void make_keys(void)
{
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "b%d", i);
}

START_TEST(test_insert_then_find_every_key)
{
    struct hmap m = {0};

    make_keys();
    ck_assert_ptr_null(hmap_find_str(&m, "absent")); /* empty map */
    for (int i = 0; i < N; i++)
        ck_assert_ptr_null(hmap_insert_str(&m, keys[i], (uintptr_t)i));
    ck_assert_uint_eq(m.n, N);
    ck_assert_uint_le(m.n * 2, m.cap);
    for (int i = 0; i < N; i++) {
        uintptr_t *v = hmap_find_str(&m, keys[i]);

        ck_assert_ptr_nonnull(v);
        ck_assert_uint_eq(*v, (uintptr_t)i);
    }
    ck_assert_ptr_null(hmap_find_str(&m, "b-1"));
    ck_assert_ptr_null(hmap_find(&m, "b1", 1)); /* "b", a prefix */
    hmap_free(&m);
    ck_assert_uint_eq(m.n, 0);
}
END_TEST

START_TEST(test_duplicate_is_refused_with_the_existing_value)
{
    struct hmap m = {0};
    char again[] = "api";
    uintptr_t *v;

    ck_assert_ptr_null(hmap_insert_str(&m, "api", 7));
    v = hmap_insert_str(&m, again, 9); /* equal bytes, another pointer */
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(*v, 7);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_uint_eq(*hmap_find_str(&m, "api"), 7);
    hmap_free(&m);
}
END_TEST

START_TEST(test_remove_keeps_every_other_key_reachable)
{
    struct hmap m = {0};

    make_keys();
    for (int i = 0; i < N; i++)
        hmap_insert_str(&m, keys[i], (uintptr_t)i);
    /* Every third key, in an order unrelated to the slots. */
    for (int j = 0; j < N; j++)
        if ((j * 7919) % N % 3 == 0)
            ck_assert(hmap_remove_str(&m, keys[(j * 7919) % N]));
    ck_assert(!hmap_remove_str(&m, keys[0])); /* already gone */
    ck_assert(!hmap_remove_str(&m, "absent"));
    for (int i = 0; i < N; i++) {
        uintptr_t *v = hmap_find_str(&m, keys[i]);

        if (i % 3 == 0) {
            ck_assert_ptr_null(v);
        } else {
            ck_assert_ptr_nonnull(v);
            ck_assert_uint_eq(*v, (uintptr_t)i);
        }
    }
    ck_assert_uint_eq(m.n, N - (N + 2) / 3);
    /* Removed keys can come back. */
    for (int i = 0; i < N; i += 3)
        ck_assert_ptr_null(hmap_insert_str(&m, keys[i], (uintptr_t)i + 1));
    ck_assert_uint_eq(*hmap_find_str(&m, keys[3]), 4);
    ck_assert_uint_eq(m.n, N);
    hmap_free(&m);
}
END_TEST

START_TEST(test_binary_keys)
{
    struct hmap m = {0};
    unsigned char a[8] = {1, 0, 0, 0, 0, 0, 0, 2}, b[8] = {1, 0, 0, 0, 0, 0, 0, 3};

    ck_assert_ptr_null(hmap_insert(&m, a, sizeof(a), 1));
    ck_assert_ptr_null(hmap_insert(&m, b, sizeof(b), 2));
    ck_assert_uint_eq(*hmap_find(&m, b, sizeof(b)), 2);
    ck_assert_ptr_null(hmap_find(&m, a, 4));
    hmap_free(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hmap");
    TCase *tc = tcase_create("hmap");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_insert_then_find_every_key);
    tcase_add_test(tc, test_duplicate_is_refused_with_the_existing_value);
    tcase_add_test(tc, test_remove_keeps_every_other_key_reachable);
    tcase_add_test(tc, test_binary_keys);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
