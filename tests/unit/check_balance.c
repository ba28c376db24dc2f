/*
 * check_balance.c - smooth weighted round robin: nginx's reference order,
 * exact proportions over every full cycle, smoothness, and the same
 * guarantees from the EDF heap used for large pools.
 */
#include "balance.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static struct backend be[20000];
static struct backend_wstat ws[20000]; /* one worker's figures per backend */

/* A snapshot pool over the first n static backends with the given weights. */
static struct snap_pool *make_pool_balance(const uint64_t *weights, uint32_t n,
                                           enum conf_balance balance)
{
    struct snap_pool *sp = calloc(1, sizeof(*sp));

    sp->b = calloc(n, sizeof(*sp->b));
    sp->n = n;
    sp->balance = balance;
    memset(ws, 0, sizeof(ws));
    for (uint32_t i = 0; i < n; i++) {
        be[i].ws = &ws[i];
        sp->b[i].be = &be[i];
        sp->b[i].weight = weights[i];
    }
    return sp;
}

static struct snap_pool *make_pool(const uint64_t *weights, uint32_t n)
{
    return make_pool_balance(weights, n, BALANCE_SWRR);
}

static void free_pool(struct snap_pool *sp)
{
    free(sp->b);
    free(sp);
}

static void add_active(uint32_t i, int d)
{
    backend_wstat_add(&ws[i].active, d);
}

START_TEST(test_swrr_matches_nginx_reference_order)
{
    uint64_t w[] = {5, 1, 1};
    struct snap_pool *sp = make_pool(w, 3);
    struct lb lb = {0};
    const char *expect = "aabacaa";
    char got[32] = {0};

    lb_init(&lb, sp, 0);
    for (int cycle = 0; cycle < 3; cycle++) {
        for (int i = 0; i < 7; i++)
            got[i] = (char)('a' + lb_pick(&lb));
        ck_assert_str_eq(got, expect);
    }
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

/*
 * Over every full cycle (sum of weights picks) each backend is picked exactly
 * its weight; and at every prefix of a cycle a backend's count stays within
 * one pick of its ideal share (smoothness).
 */
static void check_exact_and_smooth(const uint64_t *w, uint32_t n, int cycles)
{
    struct snap_pool *sp = make_pool(w, n);
    struct lb lb = {0};
    uint64_t total = 0;
    uint64_t *count = calloc(n, sizeof(*count));

    for (uint32_t i = 0; i < n; i++)
        total += w[i];
    lb_init(&lb, sp, 0);
    for (int c = 0; c < cycles; c++) {
        memset(count, 0, n * sizeof(*count));
        for (uint64_t k = 1; k <= total; k++) {
            int idx = lb_pick(&lb);

            ck_assert_int_ge(idx, 0);
            ck_assert_int_lt(idx, (int)n);
            count[idx]++;
            for (uint32_t i = 0; i < n; i++) {
                double ideal = (double)k * (double)w[i] / (double)total;

                ck_assert_msg((double)count[i] <= ideal + 1.0 && (double)count[i] >= ideal - 1.0,
                              "backend %u: %llu picks after %llu, ideal %.2f", i,
                              (unsigned long long)count[i], (unsigned long long)k, ideal);
            }
        }
        for (uint32_t i = 0; i < n; i++)
            ck_assert_uint_eq(count[i], w[i]);
    }
    free(count);
    lb_free(&lb);
    free_pool(sp);
}

START_TEST(test_swrr_exact_proportions_small_pool)
{
    uint64_t w1[] = {5, 1, 1};
    uint64_t w2[] = {3, 1};
    uint64_t w3[] = {1, 1, 1, 1};
    uint64_t w4[] = {90, 10};
    uint64_t w5[] = {7, 13, 2, 100, 1};

    check_exact_and_smooth(w1, 3, 5);
    check_exact_and_smooth(w2, 2, 5);
    check_exact_and_smooth(w3, 4, 5);
    check_exact_and_smooth(w4, 2, 3);
    check_exact_and_smooth(w5, 5, 3);
}
END_TEST

START_TEST(test_edf_exact_proportions_large_pool)
{
    uint32_t n = LB_SWRR_MAX * 3 + 7;
    uint64_t *w = calloc(n, sizeof(*w));

    for (uint32_t i = 0; i < n; i++)
        w[i] = 1 + (i * 7) % 11;
    check_exact_and_smooth(w, n, 2);
    free(w);
}
END_TEST

START_TEST(test_edf_ten_thousand_backends_every_one_picked_once_per_cycle)
{
    uint32_t n = 10000;
    uint64_t *w = calloc(n, sizeof(*w));
    struct snap_pool *sp;
    struct lb lb = {0};
    char *seen = calloc(n, 1);

    for (uint32_t i = 0; i < n; i++)
        w[i] = 1;
    sp = make_pool(w, n);
    lb_init(&lb, sp, 0);
    ck_assert_ptr_null(lb.cw); /* large pools use the heap */
    for (uint32_t k = 0; k < n; k++) {
        int idx = lb_pick(&lb);

        ck_assert_int_eq(seen[idx], 0);
        seen[idx] = 1;
    }
    free(seen);
    free(w);
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

START_TEST(test_empty_pool_picks_nothing)
{
    struct snap_pool sp = {0};
    struct lb lb = {0};

    lb_init(&lb, &sp, 0);
    ck_assert_int_eq(lb_pick(&lb), -1);
    lb_free(&lb);
}
END_TEST

START_TEST(test_single_backend_always_picked)
{
    uint64_t w[] = {100};
    struct snap_pool *sp = make_pool(w, 1);
    struct lb lb = {0};

    lb_init(&lb, sp, 0);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(lb_pick(&lb), 0);
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

START_TEST(test_reinit_on_new_snapshot_follows_new_weights)
{
    uint64_t w1[] = {1, 0 + 1};
    uint64_t w2[] = {9, 1};
    struct snap_pool *a = make_pool(w1, 2), *b = make_pool(w2, 2);
    struct lb lb = {0};
    int count[2] = {0, 0};

    lb_init(&lb, a, 0);
    lb_pick(&lb);
    lb_init(&lb, b, 0); /* a new generation: state rebuilt for the new weights */
    for (int i = 0; i < 10; i++)
        count[lb_pick(&lb)]++;
    ck_assert_int_eq(count[0], 9);
    ck_assert_int_eq(count[1], 1);
    lb_free(&lb);
    free_pool(a);
    free_pool(b);
}
END_TEST

/* Requests that pile up (none completing) spread in proportion to weight. */
START_TEST(test_leastconn_fills_in_proportion_to_weight)
{
    uint64_t w[] = {3, 1, 2};
    struct snap_pool *sp = make_pool_balance(w, 3, BALANCE_LEASTCONN);
    struct lb lb = {0};

    lb_init(&lb, sp, 0);
    for (int k = 0; k < 60; k++)
        add_active((uint32_t)lb_pick(&lb), 1);
    ck_assert_int_le(abs((int)ws[0].active - 30), 1);
    ck_assert_int_le(abs((int)ws[1].active - 10), 1);
    ck_assert_int_le(abs((int)ws[2].active - 20), 1);
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

/* A backend that is busy gets nothing until the others catch up; idle ones take turns. */
START_TEST(test_leastconn_avoids_busy_backend_and_rotates_ties)
{
    uint64_t w[] = {1, 1, 1};
    struct snap_pool *sp = make_pool_balance(w, 3, BALANCE_LEASTCONN);
    struct lb lb = {0};
    int seen[3] = {0, 0, 0};

    lb_init(&lb, sp, 0);
    add_active(1, 5);
    for (int k = 0; k < 10; k++)
        seen[lb_pick(&lb)]++; /* completes at once: counts do not move */
    ck_assert_int_eq(seen[1], 0);
    ck_assert_int_eq(seen[0], 5);
    ck_assert_int_eq(seen[2], 5);
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

START_TEST(test_p2c_follows_weights_when_idle)
{
    uint64_t w[] = {90, 10};
    struct snap_pool *sp = make_pool_balance(w, 2, BALANCE_P2C);
    struct lb lb = {0};
    int seen[2] = {0, 0};

    lb_init(&lb, sp, 0);
    for (int k = 0; k < 100000; k++)
        seen[lb_pick(&lb)]++;
    /* Equal cost: the first draw wins, drawn in proportion to weight. */
    ck_assert_int_gt(seen[0], 88000);
    ck_assert_int_lt(seen[0], 92000);
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

START_TEST(test_p2c_prefers_less_loaded_and_faster)
{
    uint64_t w[] = {1, 1, 1, 1};
    struct snap_pool *sp = make_pool_balance(w, 4, BALANCE_P2C);
    struct lb lb = {0};
    int seen[4] = {0, 0, 0, 0};

    lb_init(&lb, sp, 0);
    add_active(0, 10);     /* busy */
    ws[1].ewma_us = 50000; /* slow */
    ws[0].ewma_us = ws[2].ewma_us = ws[3].ewma_us = 500;
    for (int k = 0; k < 10000; k++)
        seen[lb_pick(&lb)]++;
    /* The busy and the slow backend only win when drawn against each other. */
    ck_assert_int_lt(seen[0] + seen[1], 10000 / 6 + 500);
    ck_assert_int_gt(seen[2], 3500);
    ck_assert_int_gt(seen[3], 3500);
    lb_free(&lb);
    free_pool(sp);
}
END_TEST

START_TEST(test_all_balancers_honour_zero_share_by_absence)
{
    /* A group at 0% is not in the snapshot at all: whatever the balancer, only the rest is picked.
     */
    uint64_t w[] = {5};
    enum conf_balance kinds[] = {BALANCE_SWRR, BALANCE_LEASTCONN, BALANCE_P2C};

    for (unsigned k = 0; k < 3; k++) {
        struct snap_pool *sp = make_pool_balance(w, 1, kinds[k]);
        struct lb lb = {0};

        lb_init(&lb, sp, 0);
        for (int i = 0; i < 100; i++)
            ck_assert_int_eq(lb_pick(&lb), 0);
        lb_free(&lb);
        free_pool(sp);
    }
}
END_TEST

static Suite *balance_suite(void)
{
    Suite *s = suite_create("balance");
    TCase *tc = tcase_create("swrr");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_swrr_matches_nginx_reference_order);
    tcase_add_test(tc, test_swrr_exact_proportions_small_pool);
    tcase_add_test(tc, test_edf_exact_proportions_large_pool);
    tcase_add_test(tc, test_edf_ten_thousand_backends_every_one_picked_once_per_cycle);
    tcase_add_test(tc, test_empty_pool_picks_nothing);
    tcase_add_test(tc, test_single_backend_always_picked);
    tcase_add_test(tc, test_reinit_on_new_snapshot_follows_new_weights);
    tcase_add_test(tc, test_leastconn_fills_in_proportion_to_weight);
    tcase_add_test(tc, test_leastconn_avoids_busy_backend_and_rotates_ties);
    tcase_add_test(tc, test_p2c_follows_weights_when_idle);
    tcase_add_test(tc, test_p2c_prefers_less_loaded_and_faster);
    tcase_add_test(tc, test_all_balancers_honour_zero_share_by_absence);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(balance_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
