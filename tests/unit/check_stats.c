/*
 * check_stats.c - the per-second traffic figures (stats.c): requests per
 * second, error rate and p99 of every backend, group and route, computed
 * from the workers' counters and latency histograms (a route's: its cells
 * on every backend and veer's own answers on it, read from ctl.workers).
 *
 * A model of two groups is built with two per-worker slots per backend
 * (veer_nworkers = 2); a test sets the slots' counters and histogram
 * buckets as workers would have counted, calls stats_tick once (the
 * figures since the start) and again after more traffic (that second's
 * figures only), and reads the rates off the model.
 */
#include "control-i.h"
#include "model.h"
#include "stats.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* api: blue-1, blue-2 (blue) and green-1 (green). */
static const char text[] =
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
    "pools = ( { name = \"api\"; backends = ("
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },"
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"
    "shares = { blue = 90; green = 10; }; } );\n"
    "routes = ( { name = \"pay\"; pool = \"api\"; match = { path_prefix = \"/pay\"; }; },\n"
    "  { name = \"users\"; pool = \"api\"; match = { path_prefix = \"/users\"; }; } );\n";
#define PAY   0 /* route indexes */
#define USERS 1

#define NW     2
#define BLUE   0
#define GREEN  1
#define BLUE1  0 /* backend indexes: file order */
#define BLUE2  1
#define GREEN1 2

static struct {
    char path[64];
    struct veer_conf *c;
    struct model *m;
} F;

static void setup(void)
{
    char err[512] = "";
    int fd;
    FILE *f;

    strcpy(F.path, "/tmp/check_stats.XXXXXX");
    fd = mkstemp(F.path);
    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    F.c = conf_load(F.path, err, sizeof(err));
    unlink(F.path);
    ck_assert_msg(F.c != NULL, "config: %s", err);
    veer_nworkers = NW;
    F.m = model_from_conf(F.c);
    ck_assert_uint_eq(F.m->pools[0].nb, 3);
    ck_assert_uint_eq(F.m->pools[0].ng, 2);
    ck_assert_uint_eq(F.m->nroutes, 2);
    /* The workers whose own answers the routes' figures read (veer's own 503s...). */
    ctl.workers = calloc(NW, sizeof(*ctl.workers));
    for (unsigned w = 0; w < NW; w++)
        ctl.workers[w] = calloc(1, sizeof(*ctl.workers[w]));
    ctl.nworkers = NW;
}

static void teardown(void)
{
    for (unsigned w = 0; ctl.workers && w < NW; w++) {
        metrics_cells_free(&ctl.workers[w]->local_routed);
        free(ctl.workers[w]);
    }
    free(ctl.workers);
    ctl.workers = NULL;
    ctl.nworkers = 0;
    model_free(F.m);
    conf_free(F.c);
}

static struct rt_backend *b(unsigned i)
{
    return &F.m->pools[0].b[i];
}

static struct rt_group *g(unsigned i)
{
    return &F.m->pools[0].g[i];
}

static struct backend_wstat *ws(unsigned backend, unsigned worker)
{
    return &b(backend)->be->ws[worker];
}

/* Worker w answered n requests of status class cls (2 for 2xx) from backend i, each in bucket k. */
static void answered(unsigned i, unsigned w, unsigned cls, uint64_t n, unsigned k)
{
    counter_add(&ws(i, w)->fb.requests[cls - 1], n);
    counter_add(&ws(i, w)->fb.latency.bucket[k], n);
    counter_add(&ws(i, w)->fb.latency.count, n);
}

/* Worker w answered n requests of class cls from backend i on route r, each in bucket k. */
static void routed(unsigned i, unsigned w, unsigned r, unsigned cls, uint64_t n, unsigned k)
{
    struct req_wstat *st = &metrics_cell_get(&ws(i, w)->routed, F.m->routes[r].slot)->st;

    counter_add(&st->requests[cls - 1], n);
    counter_add(&st->latency.bucket[k], n);
    counter_add(&st->latency.count, n);
}

/* Worker w answered n requests on route r itself (class cls, bucket k), in pool 0. */
static void own(unsigned w, unsigned r, unsigned cls, uint64_t n, unsigned k)
{
    struct req_wstat *st =
        &metrics_cell_get(&ctl.workers[w]->local_routed, worker_local_key(F.m->routes[r].slot, 0))
             ->st;

    counter_add(&st->requests[cls - 1], n);
    counter_add(&st->latency.bucket[k], n);
    counter_add(&st->latency.count, n);
}

static void tick(void)
{
    stats_tick(F.m, NW);
}

#define EPS 1e-9

/* --- stats_p99_ms ---------------------------------------------------------------------- */

/* p99 is the upper bound of the bucket where 99% of the requests are reached. */
START_TEST(test_p99_is_the_bound_of_the_99th_percentile_bucket)
{
    uint64_t bk[LAT_BUCKETS + 1] = {0};

    ck_assert_double_eq_tol(stats_p99_ms(bk), 0, EPS); /* no data */
    bk[0] = 99;
    bk[5] = 1;
    ck_assert_double_eq_tol(stats_p99_ms(bk), lat_bounds[0] * 1000, EPS); /* 0.5 ms */
    bk[0] = 98;
    bk[5] = 2;
    ck_assert_double_eq_tol(stats_p99_ms(bk), lat_bounds[5] * 1000, EPS); /* 25 ms */
    /* Past the last bound (+Inf): twice the last bound. */
    memset(bk, 0, sizeof(bk));
    bk[LAT_BUCKETS] = 10;
    ck_assert_double_eq_tol(stats_p99_ms(bk), lat_bounds[LAT_BUCKETS - 1] * 2000, EPS);
    bk[3] = 990;
    ck_assert_double_eq_tol(stats_p99_ms(bk), lat_bounds[3] * 1000, EPS);
}
END_TEST

/* --- stats_tick -------------------------------------------------------------------------- */

/*
 * Requests per second sum every worker's slots and every status class; the
 * first tick counts everything so far, the next only what came after it.
 */
START_TEST(test_rps_sums_workers_and_counts_each_second_once)
{
    answered(BLUE1, 0, 2, 60, 0);
    answered(BLUE1, 1, 2, 30, 0);
    answered(BLUE1, 1, 4, 10, 0);
    answered(BLUE2, 0, 2, 50, 0);
    answered(GREEN1, 1, 3, 7, 0);
    tick();
    ck_assert_double_eq_tol(b(BLUE1)->rate.rps, 100, EPS);
    ck_assert_double_eq_tol(b(BLUE2)->rate.rps, 50, EPS);
    ck_assert_double_eq_tol(b(GREEN1)->rate.rps, 7, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.rps, 150, EPS);
    ck_assert_double_eq_tol(g(GREEN)->rate.rps, 7, EPS);

    answered(BLUE1, 0, 2, 20, 0);
    answered(BLUE2, 1, 2, 5, 0);
    tick();
    ck_assert_double_eq_tol(b(BLUE1)->rate.rps, 20, EPS);
    ck_assert_double_eq_tol(b(BLUE2)->rate.rps, 5, EPS);
    ck_assert_double_eq_tol(b(GREEN1)->rate.rps, 0, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.rps, 25, EPS);
    ck_assert_double_eq_tol(g(GREEN)->rate.rps, 0, EPS);

    /* A quiet second: nothing. */
    tick();
    ck_assert_double_eq_tol(b(BLUE1)->rate.rps, 0, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.rps, 0, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.p99_ms, 0, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.error_rate, 0, EPS);
}
END_TEST

/* Only the workers the control thread was given are read. */
START_TEST(test_only_the_given_workers_are_read)
{
    answered(BLUE1, 0, 2, 10, 0);
    answered(BLUE1, 1, 2, 90, 0);
    stats_tick(F.m, 1);
    ck_assert_double_eq_tol(b(BLUE1)->rate.rps, 10, EPS);
}
END_TEST

/*
 * The error rate is failures over requests: 5xx answers plus upstream
 * errors, a 5xx veer answered for an upstream error counted once.
 */
START_TEST(test_error_rate_counts_5xx_and_upstream_errors_once)
{
    /* blue-1: 90 2xx, 10 5xx of which 4 are veer's 502s for failed connects. */
    answered(BLUE1, 0, 2, 90, 0);
    answered(BLUE1, 1, 5, 10, 0);
    counter_add(&ws(BLUE1, 1)->errors[UERR_CONNECT], 4);
    counter_add(&ws(BLUE1, 1)->answered, 4);
    /* blue-2: 100 2xx and 5 timeouts retried elsewhere (not answered as 5xx). */
    answered(BLUE2, 0, 2, 100, 0);
    counter_add(&ws(BLUE2, 0)->errors[UERR_TIMEOUT], 5);
    tick();
    ck_assert_double_eq_tol(b(BLUE1)->rate.error_rate, 0.10, EPS);
    ck_assert_double_eq_tol(b(BLUE2)->rate.error_rate, 0.05, EPS);
    ck_assert_double_eq_tol(b(GREEN1)->rate.error_rate, 0, EPS); /* no requests */
    ck_assert_double_eq_tol(g(BLUE)->rate.error_rate, 15.0 / 200.0, EPS);

    /* The next second: 10 requests, 1 reset answered 502. */
    answered(BLUE1, 0, 2, 9, 0);
    answered(BLUE1, 0, 5, 1, 0);
    counter_add(&ws(BLUE1, 0)->errors[UERR_RESET], 1);
    counter_add(&ws(BLUE1, 0)->answered, 1);
    tick();
    ck_assert_double_eq_tol(b(BLUE1)->rate.error_rate, 0.1, EPS);
    ck_assert_double_eq_tol(b(BLUE2)->rate.error_rate, 0, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.error_rate, 0.1, EPS);
}
END_TEST

/*
 * Upstream errors of attempts retried on another backend can outnumber a
 * backend's requests: a rate is at most 1, for a backend and for its group.
 */
START_TEST(test_error_rate_is_at_most_one)
{
    answered(GREEN1, 0, 2, 2, 0);
    counter_add(&ws(GREEN1, 0)->errors[UERR_CONNECT], 5);
    tick();
    ck_assert_double_eq_tol(b(GREEN1)->rate.error_rate, 1, EPS);
    ck_assert_double_eq_tol(g(GREEN)->rate.error_rate, 1, EPS);
}
END_TEST

/*
 * p99 comes from the second's latency buckets, merged over the workers
 * (and over a group's backends): slow requests of the first second do not
 * weigh on the next.
 */
START_TEST(test_p99_from_this_seconds_buckets)
{
    /* blue-1: 99 fast (<= 0.5 ms) on worker 0, 1 slow (<= 25 ms) on worker 1. */
    answered(BLUE1, 0, 2, 99, 0);
    answered(BLUE1, 1, 2, 1, 5);
    /* blue-2: 90 at <= 5 ms, 10 at <= 250 ms. */
    answered(BLUE2, 0, 2, 90, 3);
    answered(BLUE2, 1, 2, 10, 8);
    tick();
    ck_assert_double_eq_tol(b(BLUE1)->rate.p99_ms, lat_bounds[0] * 1000, EPS);
    ck_assert_double_eq_tol(b(BLUE2)->rate.p99_ms, lat_bounds[8] * 1000, EPS);
    /* The group: 200 requests, 11 above 5 ms, 10 of them at <= 250 ms. */
    ck_assert_double_eq_tol(g(BLUE)->rate.p99_ms, lat_bounds[8] * 1000, EPS);
    ck_assert_double_eq_tol(g(GREEN)->rate.p99_ms, 0, EPS);

    /* The next second: blue-2 only fast ones; blue-1 only slow ones. */
    answered(BLUE2, 1, 2, 500, 1);
    answered(BLUE1, 0, 2, 3, 10);
    tick();
    ck_assert_double_eq_tol(b(BLUE2)->rate.p99_ms, lat_bounds[1] * 1000, EPS);
    ck_assert_double_eq_tol(b(BLUE1)->rate.p99_ms, lat_bounds[10] * 1000, EPS);
    /* The group: 503 requests, the 3 slow ones under 1%: the fast bucket. */
    ck_assert_double_eq_tol(g(BLUE)->rate.p99_ms, lat_bounds[1] * 1000, EPS);
    ck_assert_double_eq_tol(g(BLUE)->rate.rps, 503, EPS);
}
END_TEST

/*
 * A route's figures sum its cells over every backend and worker and veer's
 * own answers on it; its errors are the 5xx, veer's own included; p99 from
 * this second's buckets. Another route's requests are not in them.
 */
START_TEST(test_route_rates_sum_its_cells_and_veers_own_answers)
{
    struct rate *pay = &F.m->routes[PAY].rate, *users = &F.m->routes[USERS].rate;

    tick(); /* a route's first tick takes its totals */
    routed(BLUE1, 0, PAY, 2, 10, 0);
    routed(GREEN1, 1, PAY, 5, 5, 3); /* 5xx from the backend */
    own(0, PAY, 5, 5, 0);            /* maintenance 503s */
    routed(BLUE2, 0, USERS, 2, 4, 0);
    answered(BLUE1, 0, 2, 100, 0); /* no route: in no route's figures */
    tick();
    ck_assert_double_eq_tol(pay->rps, 20, EPS);
    ck_assert_double_eq_tol(pay->error_rate, 0.5, EPS);
    ck_assert_double_eq_tol(pay->p99_ms, lat_bounds[3] * 1000, EPS);
    ck_assert_double_eq_tol(users->rps, 4, EPS);
    ck_assert_double_eq_tol(users->error_rate, 0, EPS);
    ck_assert_double_eq_tol(users->p99_ms, lat_bounds[0] * 1000, EPS);
    /* The backends' figures count their requests on routes too. */
    ck_assert_double_eq_tol(b(BLUE1)->rate.rps, 110, EPS);
    ck_assert_double_eq_tol(b(GREEN1)->rate.rps, 5, EPS);
    ck_assert_double_eq_tol(b(GREEN1)->rate.error_rate, 1, EPS);
    /* Only this second's: nothing new, nothing to show. */
    routed(BLUE1, 1, USERS, 2, 3, 0);
    tick();
    ck_assert_double_eq_tol(pay->rps, 0, EPS);
    ck_assert_double_eq_tol(pay->p99_ms, 0, EPS);
    ck_assert_double_eq_tol(users->rps, 3, EPS);
}
END_TEST

/*
 * A route's first tick only takes its totals: a route configured again
 * (its name keeps its metric slot, and the slot its counts) does not show
 * every request it ever had as this second's.
 */
START_TEST(test_a_routes_first_tick_shows_no_old_requests)
{
    routed(BLUE1, 0, PAY, 2, 1000, 0);
    own(1, PAY, 5, 50, 0);
    tick();
    ck_assert_double_eq_tol(F.m->routes[PAY].rate.rps, 0, EPS);
    ck_assert_double_eq_tol(F.m->routes[PAY].rate.error_rate, 0, EPS);
    routed(BLUE1, 0, PAY, 2, 7, 0);
    tick();
    ck_assert_double_eq_tol(F.m->routes[PAY].rate.rps, 7, EPS);
}
END_TEST

/* --- the history: the last STATS_HISTORY seconds per group and route ------------------- */

/* Point k of ring (oldest first) as doubles. */
static void point(const struct stats_ring *ring, unsigned k, double *rps, double *err, double *p99)
{
    ck_assert_uint_lt(k, stats_ring_len(ring));
    stats_ring_get(ring, k, rps, err, p99);
}

/*
 * Every tick appends one point to every group's ring, this second's figures; past
 * STATS_HISTORY seconds the oldest go (the ring wraps around) and its memory stays the one
 * allocation of a fixed size: 8 bytes a point, 2.4 MB for 1,000 groups.
 */
START_TEST(test_group_history_holds_the_last_300_seconds)
{
    const struct stats_ring *ring;
    double rps, err, p99;

    ck_assert_uint_eq(stats_ring_len(g(BLUE)->ring), 0); /* nothing before the first tick */
    ck_assert_uint_eq(F.m->seconds, 0);
    for (unsigned s = 1; s <= STATS_HISTORY + 25; s++) {
        answered(BLUE1, s % NW, 2, s, 0); /* second s: s requests */
        tick();
        ck_assert_uint_eq(F.m->seconds, s);
        ck_assert_uint_eq(stats_ring_len(g(BLUE)->ring), s < STATS_HISTORY ? s : STATS_HISTORY);
        ck_assert_uint_eq(stats_ring_len(g(GREEN)->ring), stats_ring_len(g(BLUE)->ring));
        if (s == 1)
            ring = g(BLUE)->ring;
        ck_assert_ptr_eq(g(BLUE)->ring, ring); /* never reallocated */
    }
    /* The oldest held is second 26, the newest second 325 (this second's figures). */
    point(ring, 0, &rps, &err, &p99);
    ck_assert_double_eq_tol(rps, 26, EPS);
    for (unsigned k = 0; k < STATS_HISTORY; k++) {
        point(ring, k, &rps, &err, &p99);
        ck_assert_double_eq_tol(rps, 26 + k, EPS);
        ck_assert_double_eq_tol(err, 0, EPS);
        ck_assert_double_eq_tol(p99, lat_bounds[0] * 1000, EPS);
        point(g(GREEN)->ring, k, &rps, &err, &p99);
        ck_assert_double_eq_tol(rps, 0, EPS);
        ck_assert_double_eq_tol(p99, 0, EPS);
    }
    point(ring, STATS_HISTORY - 1, &rps, &err, &p99);
    ck_assert_double_eq_tol(rps, g(BLUE)->rate.rps, EPS);
    /* Bounded: one fixed-size block per ring, 8 bytes a point. */
    ck_assert_uint_eq(sizeof(struct stats_point), 8);
    ck_assert_uint_le(sizeof(struct stats_ring), 8 * STATS_HISTORY + 8);
    ck_assert_uint_ge(malloc_usable_size(g(BLUE)->ring), sizeof(struct stats_ring));
    ck_assert_uint_le(malloc_usable_size(g(BLUE)->ring), sizeof(struct stats_ring) + 64);
}
END_TEST

/*
 * A point keeps what /status writes: the error rate to 1/10,000 and p99 as the bound of its
 * bucket (beyond the last bound: twice it), the same as the group's figures that second.
 */
START_TEST(test_history_points_are_the_seconds_figures)
{
    double rps, err, p99;

    answered(BLUE1, 0, 2, 9990, 0); /* blue: 10,000 requests, 7 of them 5xx, slow ones */
    answered(BLUE2, 1, 5, 7, 9);
    answered(BLUE2, 1, 2, 3, 9);
    answered(GREEN1, 0, 2, 1, LAT_BUCKETS); /* green: one beyond the last bound */
    tick();
    point(g(BLUE)->ring, 0, &rps, &err, &p99);
    ck_assert_double_eq_tol(rps, 10000, EPS);
    ck_assert_double_eq_tol(err, 0.0007, EPS);
    ck_assert_double_eq_tol(err, g(BLUE)->rate.error_rate, EPS);
    ck_assert_double_eq_tol(p99, lat_bounds[0] * 1000, EPS);
    point(g(GREEN)->ring, 0, &rps, &err, &p99);
    ck_assert_double_eq_tol(rps, 1, EPS);
    ck_assert_double_eq_tol(p99, lat_bounds[LAT_BUCKETS - 1] * 2000, EPS);
    ck_assert_double_eq_tol(p99, g(GREEN)->rate.p99_ms, EPS);
    /* Every bucket comes back as its bound; an error rate of 1 as 1. */
    for (unsigned k = 0; k < LAT_BUCKETS; k++) {
        answered(GREEN1, 1, 5, 1, k);
        tick();
        point(g(GREEN)->ring, k + 1, &rps, &err, &p99);
        ck_assert_double_eq_tol(p99, lat_bounds[k] * 1000, EPS);
        ck_assert_double_eq_tol(p99, g(GREEN)->rate.p99_ms, EPS);
        ck_assert_double_eq_tol(err, 1, EPS);
    }
}
END_TEST

/* stats_ring_push on its own: a rate that does not fit is clamped, not wrapped. */
START_TEST(test_ring_push_clamps_and_wraps)
{
    struct stats_ring *ring = NULL;
    struct rate r = {.rps = 1e12, .error_rate = 0.12345, .p99_ms = 0};
    double rps, err, p99;

    stats_ring_push(&ring, &r);
    ck_assert_ptr_nonnull(ring);
    point(ring, 0, &rps, &err, &p99);
    ck_assert_double_eq_tol(rps, 4294967295.0, EPS);
    ck_assert_double_eq_tol(err, 0.1235, EPS); /* rounded to 1/10,000 */
    ck_assert_double_eq_tol(p99, 0, EPS);
    for (unsigned i = 0; i < 3 * STATS_HISTORY + 7; i++) {
        r.rps = i;
        stats_ring_push(&ring, &r);
    }
    ck_assert_uint_eq(stats_ring_len(ring), STATS_HISTORY);
    for (unsigned k = 0; k < STATS_HISTORY; k++) {
        point(ring, k, &rps, &err, &p99);
        ck_assert_double_eq_tol(rps, 2 * STATS_HISTORY + 7 + k, EPS);
    }
    free(ring);
}
END_TEST

/*
 * A route's ring gets a point at every tick after its first (which only takes its totals),
 * this second's figures; it goes with the route.
 */
START_TEST(test_route_history_follows_its_figures)
{
    double rps, err, p99;

    tick(); /* the routes' first tick takes their totals */
    ck_assert_uint_eq(stats_ring_len(F.m->routes[PAY].ring), 0);
    for (unsigned s = 1; s <= 5; s++) {
        routed(BLUE1, 0, PAY, 2, s * 10, 0);
        routed(BLUE1, 0, PAY, 5, s, 0);
        tick();
        ck_assert_uint_eq(stats_ring_len(F.m->routes[PAY].ring), s);
        ck_assert_uint_eq(stats_ring_len(F.m->routes[USERS].ring), s);
    }
    for (unsigned k = 0; k < 5; k++) {
        point(F.m->routes[PAY].ring, k, &rps, &err, &p99);
        ck_assert_double_eq_tol(rps, (k + 1) * 11, EPS);
        ck_assert_double_eq_tol(err, 1.0 / 11, 0.00005);
        point(F.m->routes[USERS].ring, k, &rps, &err, &p99);
        ck_assert_double_eq_tol(rps, 0, EPS);
    }
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("stats");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_p99_is_the_bound_of_the_99th_percentile_bucket);
    tcase_add_test(tc, test_rps_sums_workers_and_counts_each_second_once);
    tcase_add_test(tc, test_only_the_given_workers_are_read);
    tcase_add_test(tc, test_error_rate_counts_5xx_and_upstream_errors_once);
    tcase_add_test(tc, test_error_rate_is_at_most_one);
    tcase_add_test(tc, test_p99_from_this_seconds_buckets);
    tcase_add_test(tc, test_route_rates_sum_its_cells_and_veers_own_answers);
    tcase_add_test(tc, test_a_routes_first_tick_shows_no_old_requests);
    tcase_add_test(tc, test_group_history_holds_the_last_300_seconds);
    tcase_add_test(tc, test_history_points_are_the_seconds_figures);
    tcase_add_test(tc, test_ring_push_clamps_and_wraps);
    tcase_add_test(tc, test_route_history_follows_its_figures);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stats_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
