/*
 * check_metrics.c - recording (metrics.c): the cell tables that keep one
 * series per key (a route's metric slot...) for one writer. The writer
 * finds a key's cell again, whatever number of keys came since; a reader
 * walking the published list sees every cell once, newest first, each
 * with what was counted in it.
 */
#include "metrics.h"
#include "veer.h"

#include <check.h>
#include <stdlib.h>

/* A cell per key, the same one every time: through the table's growth and its probing. */
START_TEST(test_a_key_finds_its_cell_again_as_the_table_grows)
{
    struct metrics_cells c = {.tab = NULL};
    struct metrics_cell *first[1000];

    ck_assert_ptr_null(metrics_cells_first(&c));
    for (uint64_t k = 0; k < 1000; k++) {
        /* keys as txn.c makes them: slots, and slot << 32 | pool */
        uint64_t key = k % 2 ? k : k << 32 | 1000003;

        first[k] = metrics_cell_get(&c, key);
        ck_assert_uint_eq(first[k]->key, key);
        ck_assert_uint_eq(first[k]->st.requests[1], 0);
        counter_add(&first[k]->st.requests[1], k + 1);
        ck_assert_ptr_eq(metrics_cells_first(&c), first[k]); /* published at once */
    }
    ck_assert_uint_eq(c.n, 1000);
    ck_assert_uint_le(c.n * 2, c.cap); /* at most half full */
    for (uint64_t k = 0; k < 1000; k++)
        ck_assert_ptr_eq(metrics_cell_get(&c, k % 2 ? k : k << 32 | 1000003), first[k]);
    ck_assert_uint_eq(c.n, 1000);
    metrics_cells_free(&c);
    ck_assert_ptr_null(metrics_cells_first(&c));
    ck_assert_uint_eq(c.n, 0);
}
END_TEST

/* The list a reader walks: every cell once, newest first, with its counts. */
START_TEST(test_a_reader_sees_every_cell_once_newest_first)
{
    struct metrics_cells c = {.tab = NULL};
    uint64_t want = 99;
    unsigned n = 0;

    for (uint64_t k = 0; k < 100; k++) {
        struct metrics_cell *cell = metrics_cell_get(&c, k);

        hist_observe(&cell->st.latency, 1000);
        counter_add(&cell->st.requests[4], k);
        metrics_cell_get(&c, k / 2); /* an old key again adds nothing */
    }
    for (const struct metrics_cell *cell = metrics_cells_first(&c); cell; cell = cell->next) {
        ck_assert_uint_eq(cell->key, want);
        ck_assert_uint_eq(cell->st.requests[4], want);
        ck_assert_uint_eq(cell->st.latency.count, 1);
        want--;
        n++;
    }
    ck_assert_uint_eq(n, 100);
    metrics_cells_free(&c);
    /* Freed, it is an empty table again, usable. */
    ck_assert_uint_eq(metrics_cell_get(&c, 7)->key, 7);
    metrics_cells_free(&c);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("cells");

    tcase_add_test(tc, test_a_key_finds_its_cell_again_as_the_table_grows);
    tcase_add_test(tc, test_a_reader_sees_every_cell_once_newest_first);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
