/*
 * check_mirrorstat.c - the figures of shadow traffic (mirrorstat.c): a
 * mirrored request counted by the primary's status class and its result;
 * the latency difference placed in its bucket (bounds inclusive, negative
 * deltas below zero, the open outer buckets), summed, and the shadow's own
 * latency observed, for completed pairs only; quantiles interpolated within
 * a bucket; one site per (pool, route); the ring of the last 50
 * differences, oldest first; every worker's slot summed; totals added.
 */
#include "mirrorstat.h"
#include "routing.h"
#include "veer.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#define TOL 1e-12

/* Index of the bucket whose upper bound is v (seconds): mirror_delta_bounds[i] == v. */
static unsigned bound_index(double v)
{
    for (unsigned i = 0; i < MIRROR_DELTA_BOUNDS; i++)
        if (mirror_delta_bounds[i] == v)
            return i;
    ck_abort_msg("no bound %g", v);
    return 0;
}

static uint64_t delta_total(const struct mirror_totals *t)
{
    uint64_t n = 0;

    for (unsigned c = 0; c < 5; c++)
        for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++)
            n += t->delta[c][k];
    return n;
}

START_TEST(test_result_names)
{
    ck_assert_str_eq(mirror_result_name(MR_MATCH), "match");
    ck_assert_str_eq(mirror_result_name(MR_STATUS_DIFF), "status_diff");
    ck_assert_str_eq(mirror_result_name(MR_BODY_DIFF), "body_diff");
    ck_assert_str_eq(mirror_result_name(MR_TIMEOUT), "timeout");
    ck_assert_str_eq(mirror_result_name(MR_ERROR), "error");
    ck_assert_str_eq(mirror_result_name(MR_DROPPED), "dropped");
    ck_assert_str_eq(mirror_result_name(MR_RESULTS), "?");
}
END_TEST

START_TEST(test_bounds_ascend_with_zero_in_the_middle)
{
    for (unsigned i = 1; i < MIRROR_DELTA_BOUNDS; i++)
        ck_assert(mirror_delta_bounds[i - 1] < mirror_delta_bounds[i]);
    ck_assert(mirror_delta_bounds[0] == -10);
    ck_assert(mirror_delta_bounds[MIRROR_DELTA_BOUNDS - 1] == 10);
    ck_assert_uint_eq(bound_index(0), 15);
    for (unsigned i = 0; i < 15; i++) /* symmetric: as many negative bounds as positive */
        ck_assert(mirror_delta_bounds[i] == -mirror_delta_bounds[MIRROR_DELTA_BOUNDS - 1 - i]);
}
END_TEST

START_TEST(test_count_by_primary_class_and_result)
{
    struct mirror_site *s;
    struct mirror_totals t;

    veer_nworkers = 1;
    s = mirror_site_get("api", "");
    mirror_count(s, 0, 200, MR_MATCH, 100, 1000);
    mirror_count(s, 0, 204, MR_MATCH, 100, 1000);
    mirror_count(s, 0, 301, MR_STATUS_DIFF, 100, 1000);
    mirror_count(s, 0, 101, MR_BODY_DIFF, 100, 1000);
    mirror_count(s, 0, 404, MR_TIMEOUT, 0, 0);
    mirror_count(s, 0, 503, MR_ERROR, 0, 0);
    mirror_count(s, 0, 200, MR_DROPPED, 0, 0);
    mirror_count(s, 0, 0, MR_ERROR, 0, 0);   /* no primary status: counted as 5xx */
    mirror_count(s, 0, 799, MR_ERROR, 0, 0); /* beyond 5xx: 5xx */
    mirror_site_sum(s, &t);
    ck_assert_uint_eq(t.n[1][MR_MATCH], 2);
    ck_assert_uint_eq(t.n[2][MR_STATUS_DIFF], 1);
    ck_assert_uint_eq(t.n[0][MR_BODY_DIFF], 1);
    ck_assert_uint_eq(t.n[3][MR_TIMEOUT], 1);
    ck_assert_uint_eq(t.n[4][MR_ERROR], 3);
    ck_assert_uint_eq(t.n[1][MR_DROPPED], 1);
    {
        uint64_t all = 0;

        for (unsigned c = 0; c < 5; c++)
            for (unsigned r = 0; r < MR_RESULTS; r++)
                all += t.n[c][r];
        ck_assert_uint_eq(all, 9);
    }
    /*
     * Only completed pairs (match, status_diff, body_diff) have a delta; every
     * result but dropped has a shadow latency (timeouts and errors: what the
     * caller gives, 0 here).
     */
    ck_assert_uint_eq(delta_total(&t), 4);
    ck_assert_uint_eq(t.shadow_count, 8);
    ck_assert_uint_eq(t.shadow_sum_us, 4000);
    ck_assert_int_eq(t.delta_sum_us, 400);
    mirror_sites_free();
}
END_TEST

/* Where a delta of `us` microseconds is counted: its bucket index. */
static unsigned bucket_of(int64_t us)
{
    struct mirror_site *s;
    struct mirror_totals t;
    int found = -1;

    s = mirror_site_get("b", "");
    mirror_count(s, 0, 200, MR_MATCH, us, 1);
    mirror_site_sum(s, &t);
    for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++) {
        if (t.delta[1][k] == 0)
            continue;
        ck_assert_uint_eq(t.delta[1][k], 1);
        ck_assert_int_eq(found, -1);
        found = (int)k;
    }
    ck_assert_int_eq(t.delta_sum_us, us);
    mirror_sites_free();
    ck_assert_int_ge(found, 0);
    return (unsigned)found;
}

START_TEST(test_delta_buckets_include_their_upper_bound)
{
    veer_nworkers = 1;
    ck_assert_uint_eq(bucket_of(0), bound_index(0));
    ck_assert_uint_eq(bucket_of(1), bound_index(0.00025));
    ck_assert_uint_eq(bucket_of(250), bound_index(0.00025)); /* (0, 0.25 ms] */
    ck_assert_uint_eq(bucket_of(251), bound_index(0.0005));
    ck_assert_uint_eq(bucket_of(3000), bound_index(0.005));
    ck_assert_uint_eq(bucket_of(10000000), bound_index(10));
}
END_TEST

START_TEST(test_negative_deltas_fall_below_zero)
{
    veer_nworkers = 1;
    /* The shadow was faster: (-0.5, -0.25] holds -300 ms, (-0.25 ms, 0] holds -1 us. */
    ck_assert_uint_eq(bucket_of(-300000), bound_index(-0.25));
    ck_assert_uint_eq(bucket_of(-1), bound_index(0));
    ck_assert_uint_eq(bucket_of(-249), bound_index(0));        /* (-0.25 ms, 0] */
    ck_assert_uint_eq(bucket_of(-250), bound_index(-0.00025)); /* (-0.5 ms, -0.25 ms] */
    ck_assert_uint_eq(bucket_of(-251), bound_index(-0.00025));
    ck_assert_uint_eq(bucket_of(-501), bound_index(-0.0005)); /* (-1 ms, -0.5 ms] */
    ck_assert_uint_eq(bucket_of(-1000000), bound_index(-1));
}
END_TEST

START_TEST(test_outer_buckets_are_open)
{
    veer_nworkers = 1;
    ck_assert_uint_eq(bucket_of(-10000000), 0); /* -10 s: the first bucket, (-inf, -10] */
    ck_assert_uint_eq(bucket_of(-60000000), 0);
    ck_assert_uint_eq(bucket_of(10000001), MIRROR_DELTA_BOUNDS); /* (10, +inf) */
    ck_assert_uint_eq(bucket_of(3600000000LL), MIRROR_DELTA_BOUNDS);
}
END_TEST

START_TEST(test_quantile_of_nothing_is_false)
{
    uint64_t b[MIRROR_DELTA_BOUNDS + 1] = {0};
    double v = 42;

    ck_assert(!mirror_delta_quantile(b, 0.5, &v));
    ck_assert(!mirror_delta_quantile(b, 0.99, &v));
    ck_assert(v == 42); /* untouched */
}
END_TEST

START_TEST(test_quantile_interpolates_within_the_bucket)
{
    uint64_t b[MIRROR_DELTA_BOUNDS + 1] = {0};
    double v = 0;

    /* 10 deltas in (0.25 ms, 0.5 ms]. */
    b[bound_index(0.0005)] = 10;
    ck_assert(mirror_delta_quantile(b, 0.5, &v));
    ck_assert_double_eq_tol(v, 0.00025 + 0.00025 * 0.5, TOL);
    ck_assert(mirror_delta_quantile(b, 1.0, &v));
    ck_assert_double_eq_tol(v, 0.0005, TOL);
    ck_assert(mirror_delta_quantile(b, 0.1, &v));
    ck_assert_double_eq_tol(v, 0.00025 + 0.00025 * 0.1, TOL);

    /* 4 in (0, 0.25 ms], 6 in (0.5 ms, 1 ms]. */
    memset(b, 0, sizeof(b));
    b[bound_index(0.00025)] = 4;
    b[bound_index(0.001)] = 6;
    ck_assert(mirror_delta_quantile(b, 0.4, &v));
    ck_assert_double_eq_tol(v, 0.00025, TOL); /* rank 4: the top of the first bucket */
    ck_assert(mirror_delta_quantile(b, 0.5, &v));
    ck_assert_double_eq_tol(v, 0.0005 + 0.0005 * (1.0 / 6.0), TOL);
    ck_assert(mirror_delta_quantile(b, 0.99, &v));
    ck_assert_double_eq_tol(v, 0.0005 + 0.0005 * (5.9 / 6.0), TOL);
    ck_assert(mirror_delta_quantile(b, 0.2, &v));
    ck_assert_double_eq_tol(v, 0.00025 * 0.5, TOL);
}
END_TEST

START_TEST(test_quantile_of_negative_deltas)
{
    uint64_t b[MIRROR_DELTA_BOUNDS + 1] = {0};
    double v = 0;

    /* All 8 in (-1 s, -0.5 s]: the shadow is 0.5 to 1 s faster. */
    b[bound_index(-0.5)] = 8;
    ck_assert(mirror_delta_quantile(b, 0.5, &v));
    ck_assert_double_eq_tol(v, -0.75, TOL);
    ck_assert(mirror_delta_quantile(b, 0.25, &v));
    ck_assert_double_eq_tol(v, -0.875, TOL);
    /* And 2 more in (0.1 s, 0.25 s]: p50 still negative, p99 positive. */
    b[bound_index(0.25)] = 2;
    ck_assert(mirror_delta_quantile(b, 0.5, &v));
    ck_assert_double_eq_tol(v, -1 + 0.5 * (5.0 / 8.0), TOL);
    ck_assert(mirror_delta_quantile(b, 0.99, &v));
    ck_assert_double_eq_tol(v, 0.1 + 0.15 * (1.9 / 2.0), TOL);
}
END_TEST

START_TEST(test_quantile_in_an_open_bucket_is_its_finite_bound)
{
    uint64_t b[MIRROR_DELTA_BOUNDS + 1] = {0};
    double v = 0;

    b[0] = 3;
    ck_assert(mirror_delta_quantile(b, 0.5, &v));
    ck_assert(v == -10);
    memset(b, 0, sizeof(b));
    b[MIRROR_DELTA_BOUNDS] = 3;
    ck_assert(mirror_delta_quantile(b, 0.5, &v));
    ck_assert(v == 10);
    /* 99 fast and one beyond 10 s: p99 inside the fast bucket, p100 at the open bound. */
    memset(b, 0, sizeof(b));
    b[bound_index(0.001)] = 99;
    b[MIRROR_DELTA_BOUNDS] = 1;
    ck_assert(mirror_delta_quantile(b, 0.99, &v));
    ck_assert_double_eq_tol(v, 0.001, TOL);
    ck_assert(mirror_delta_quantile(b, 1.0, &v));
    ck_assert(v == 10);
}
END_TEST

START_TEST(test_site_is_one_per_pool_and_route)
{
    struct mirror_site *a, *b, *c, *d;

    veer_nworkers = 2;
    ck_assert_ptr_null(mirror_sites_first());
    a = mirror_site_get("api", "");
    ck_assert_ptr_eq(mirror_sites_first(), a);
    b = mirror_site_get("api", "users");
    c = mirror_site_get("pay", "");
    d = mirror_site_get("pay", "users");
    ck_assert_ptr_ne(a, b);
    ck_assert_ptr_ne(a, c);
    ck_assert_ptr_ne(b, d);
    ck_assert_ptr_ne(c, d);
    ck_assert_ptr_eq(mirror_site_get("api", ""), a);
    ck_assert_ptr_eq(mirror_site_get("api", "users"), b);
    ck_assert_ptr_eq(mirror_site_get("pay", ""), c);
    ck_assert_ptr_eq(mirror_site_get("pay", "users"), d);
    ck_assert_str_eq(b->pool, "api");
    ck_assert_str_eq(b->route, "users");
    ck_assert_str_eq(c->route, "");
    /* Newest first, each created once. */
    ck_assert_ptr_eq(mirror_sites_first(), d);
    ck_assert_ptr_eq(d->next, c);
    ck_assert_ptr_eq(c->next, b);
    ck_assert_ptr_eq(b->next, a);
    ck_assert_ptr_null(a->next);
    /* Counts stay with their site. */
    mirror_count(b, 1, 200, MR_MATCH, 5, 5);
    {
        struct mirror_totals t;

        mirror_site_sum(mirror_site_get("api", "users"), &t);
        ck_assert_uint_eq(t.n[1][MR_MATCH], 1);
        mirror_site_sum(a, &t);
        ck_assert_uint_eq(t.n[1][MR_MATCH], 0);
    }
    mirror_sites_free();
    ck_assert_ptr_null(mirror_sites_first());
}
END_TEST

static void mismatch(struct mirror_mismatch *m, unsigned i)
{
    memset(m, 0, sizeof(*m));
    m->result = i % 2 ? MR_BODY_DIFF : MR_STATUS_DIFF;
    snprintf(m->request_id, sizeof(m->request_id), "req-%u", i);
    snprintf(m->method, sizeof(m->method), "GET");
    snprintf(m->path, sizeof(m->path), "/p/%u", i);
    m->primary_status = 200;
    m->shadow_status = 200 + (int)i;
    m->primary_bytes = i;
    m->at_us = 0; /* now: set by mirror_note */
}

/* Note a mismatch once the clock has moved past `after`; returns the time it was noted after. */
static uint64_t note_after(struct mirror_site *s, unsigned i, uint64_t after)
{
    struct mirror_mismatch m;
    uint64_t deadline = veer_now_us() + 1000000;

    while (veer_now_us() <= after)
        ck_assert_msg(veer_now_us() < deadline, "the clock does not move");
    mismatch(&m, i);
    mirror_note(s, &m);
    return veer_now_us();
}

START_TEST(test_ring_keeps_the_last_50_oldest_first)
{
    struct mirror_mismatch out[MIRROR_MISMATCHES];
    struct mirror_site *s;
    uint64_t t = 0, start = veer_now_us();

    veer_nworkers = 1;
    s = mirror_site_get("api", "");
    ck_assert_uint_eq(mirror_site_mismatches(s, out), 0);
    for (unsigned i = 0; i < 3; i++)
        t = note_after(s, i, t);
    ck_assert_uint_eq(mirror_site_mismatches(s, out), 3);
    ck_assert_str_eq(out[0].request_id, "req-0");
    ck_assert_str_eq(out[2].request_id, "req-2");
    for (unsigned i = 3; i < 60; i++)
        t = note_after(s, i, t);
    ck_assert_uint_eq(mirror_site_mismatches(s, out), MIRROR_MISMATCHES);
    for (unsigned k = 0; k < MIRROR_MISMATCHES; k++) {
        char want[32];

        snprintf(want, sizeof(want), "req-%u", 10 + k);
        ck_assert_str_eq(out[k].request_id, want);
        snprintf(want, sizeof(want), "/p/%u", 10 + k);
        ck_assert_str_eq(out[k].path, want);
        ck_assert_int_eq(out[k].shadow_status, 210 + (int)k);
        ck_assert_uint_eq(out[k].primary_bytes, 10 + k);
        ck_assert_int_eq(out[k].result, (10 + k) % 2 ? MR_BODY_DIFF : MR_STATUS_DIFF);
        ck_assert_uint_ge(out[k].at_us, start); /* set when noted, not the caller's */
        ck_assert_uint_le(out[k].at_us, veer_now_us());
        if (k)
            ck_assert_uint_gt(out[k].at_us, out[k - 1].at_us);
    }
    mirror_sites_free();
}
END_TEST

START_TEST(test_sum_adds_every_worker_slot)
{
    struct mirror_site *s;
    struct mirror_totals t;

    veer_nworkers = 3;
    s = mirror_site_get("api", "r");
    mirror_count(s, 0, 200, MR_MATCH, 1000, 2000);
    mirror_count(s, 1, 200, MR_MATCH, -400, 300);
    mirror_count(s, 2, 200, MR_STATUS_DIFF, 2000, 7000);
    mirror_count(s, 2, 500, MR_TIMEOUT, 0, 0);
    mirror_count(s, 1, 404, MR_DROPPED, 0, 0);
    mirror_site_sum(s, &t);
    ck_assert_uint_eq(t.n[1][MR_MATCH], 2);
    ck_assert_uint_eq(t.n[1][MR_STATUS_DIFF], 1);
    ck_assert_uint_eq(t.n[4][MR_TIMEOUT], 1);
    ck_assert_uint_eq(t.n[3][MR_DROPPED], 1);
    ck_assert_int_eq(t.delta_sum_us, 1000 - 400 + 2000);
    ck_assert_uint_eq(t.delta[1][bound_index(0.001)], 1);
    ck_assert_uint_eq(t.delta[1][bound_index(-0.00025)], 1);
    ck_assert_uint_eq(t.delta[1][bound_index(0.0025)], 1);
    ck_assert_uint_eq(delta_total(&t), 3);
    ck_assert_uint_eq(t.shadow_count, 4); /* the timeout too, at 0 */
    ck_assert_uint_eq(t.shadow_sum_us, 2000 + 300 + 7000);
    ck_assert_uint_eq(t.shadow[0], 2); /* 0.3 ms and the timeout's 0 <= 0.5 ms */
    ck_assert_uint_eq(t.shadow[2], 1); /* 2 ms: (1, 2.5] ms */
    ck_assert_uint_eq(t.shadow[4], 1); /* 7 ms: (5, 10] ms */
    /* Each slot is its own: a fresh sum sees the same. */
    ck_assert_uint_eq(s->ws[0].n[1][MR_MATCH], 1);
    ck_assert_uint_eq(s->ws[1].n[1][MR_MATCH], 1);
    ck_assert_uint_eq(s->ws[2].n[1][MR_MATCH], 0);
    mirror_sites_free();
}
END_TEST

START_TEST(test_totals_add_and_classes)
{
    struct mirror_site *s1, *s2;
    struct mirror_totals a, b;
    uint64_t all[MIRROR_DELTA_BOUNDS + 1];

    veer_nworkers = 2;
    s1 = mirror_site_get("api", "");
    s2 = mirror_site_get("api", "x");
    mirror_count(s1, 0, 200, MR_MATCH, 100, 100);
    mirror_count(s1, 1, 500, MR_BODY_DIFF, -100, 50);
    mirror_count(s2, 1, 200, MR_MATCH, 100, 20000);
    mirror_count(s2, 0, 200, MR_ERROR, 0, 0);
    mirror_site_sum(s1, &a);
    mirror_site_sum(s2, &b);
    mirror_totals_add(&a, &b);
    ck_assert_uint_eq(a.n[1][MR_MATCH], 2);
    ck_assert_uint_eq(a.n[4][MR_BODY_DIFF], 1);
    ck_assert_uint_eq(a.n[1][MR_ERROR], 1);
    ck_assert_uint_eq(a.delta[1][bound_index(0.00025)], 2);
    ck_assert_uint_eq(a.delta[4][bound_index(-0.00025)], 0);
    ck_assert_uint_eq(a.delta[4][bound_index(0)], 1); /* -0.1 ms: (-0.25 ms, 0] */
    ck_assert_int_eq(a.delta_sum_us, 100);
    ck_assert_uint_eq(a.shadow_count, 4); /* the error too, at 0 */
    ck_assert_uint_eq(a.shadow_sum_us, 20150);
    ck_assert_uint_eq(a.shadow[0], 3);
    ck_assert_uint_eq(a.shadow[5], 1); /* 20 ms: (10, 25] ms */
    /* Adding leaves b alone; adding zeros changes nothing. */
    ck_assert_uint_eq(b.n[1][MR_MATCH], 1);
    memset(&b, 0, sizeof(b));
    mirror_totals_add(&a, &b);
    ck_assert_uint_eq(a.n[1][MR_MATCH], 2);
    ck_assert_uint_eq(a.shadow_count, 4);
    /* The classes summed into one histogram. */
    mirror_delta_classes(a.delta, all);
    ck_assert_uint_eq(all[bound_index(0.00025)], 2);
    ck_assert_uint_eq(all[bound_index(0)], 1);
    {
        uint64_t n = 0;

        for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++)
            n += all[k];
        ck_assert_uint_eq(n, 3);
    }
    mirror_sites_free();
}
END_TEST

/*
 * Shadows end out of order (a later request's shadow judged first): the
 * ring keeps the differences of the requests that began last, in the
 * order they began; one older than all 50 kept is not kept.
 */
START_TEST(test_ring_keeps_the_requests_that_began_last_in_their_order)
{
    struct mirror_mismatch m, out[MIRROR_MISMATCHES];
    struct mirror_site *s;
    /* began at 1000 + 10 i; noted in pairs swapped: 1, 0, 3, 2, ... */
    unsigned order[60];

    veer_nworkers = 1;
    s = mirror_site_get("api", "");
    for (unsigned i = 0; i < 60; i++)
        order[i] = i ^ 1u;
    for (unsigned i = 0; i < 60; i++) {
        mismatch(&m, order[i]);
        m.at_us = 1000 + 10 * (uint64_t)order[i];
        mirror_note(s, &m);
    }
    ck_assert_uint_eq(mirror_site_mismatches(s, out), MIRROR_MISMATCHES);
    for (unsigned k = 0; k < MIRROR_MISMATCHES; k++) {
        char want[32];

        snprintf(want, sizeof(want), "req-%u", 10 + k);
        ck_assert_str_eq(out[k].request_id, want);
        ck_assert_uint_eq(out[k].at_us, 1000 + 10 * (uint64_t)(10 + k));
    }
    /* older than every one kept: not kept */
    mismatch(&m, 5);
    m.at_us = 1000 + 10 * 5;
    mirror_note(s, &m);
    ck_assert_uint_eq(mirror_site_mismatches(s, out), MIRROR_MISMATCHES);
    ck_assert_str_eq(out[0].request_id, "req-10");
    /* one that began between two kept ones goes between them; the oldest goes */
    mismatch(&m, 99);
    m.at_us = 1000 + 10 * 30 + 5;
    mirror_note(s, &m);
    ck_assert_uint_eq(mirror_site_mismatches(s, out), MIRROR_MISMATCHES);
    ck_assert_str_eq(out[0].request_id, "req-11");
    ck_assert_str_eq(out[19].request_id, "req-30");
    ck_assert_str_eq(out[20].request_id, "req-99");
    ck_assert_str_eq(out[21].request_id, "req-31");
    ck_assert_str_eq(out[49].request_id, "req-59");
}
END_TEST

static Suite *mirrorstat_suite(void)
{
    Suite *s = suite_create("mirrorstat");
    TCase *tc = tcase_create("counts");
    TCase *tq = tcase_create("quantiles");
    TCase *ts = tcase_create("sites");

    tcase_add_test(tc, test_result_names);
    tcase_add_test(tc, test_bounds_ascend_with_zero_in_the_middle);
    tcase_add_test(tc, test_count_by_primary_class_and_result);
    tcase_add_test(tc, test_delta_buckets_include_their_upper_bound);
    tcase_add_test(tc, test_negative_deltas_fall_below_zero);
    tcase_add_test(tc, test_outer_buckets_are_open);
    tcase_add_test(tq, test_quantile_of_nothing_is_false);
    tcase_add_test(tq, test_quantile_interpolates_within_the_bucket);
    tcase_add_test(tq, test_quantile_of_negative_deltas);
    tcase_add_test(tq, test_quantile_in_an_open_bucket_is_its_finite_bound);
    tcase_add_test(ts, test_site_is_one_per_pool_and_route);
    tcase_add_test(ts, test_ring_keeps_the_last_50_oldest_first);
    tcase_add_test(ts, test_ring_keeps_the_requests_that_began_last_in_their_order);
    tcase_add_test(ts, test_sum_adds_every_worker_slot);
    tcase_add_test(ts, test_totals_add_and_classes);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tq);
    suite_add_tcase(s, ts);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mirrorstat_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
