/*
 * check_model.c - the traffic model (shares from weights, effective
 * weights, eligibility) and the routing snapshot: build, publish with one
 * atomic store, and reclaim only after every reader moved past it, with
 * reader threads running against a publisher under ASan.
 */
#include "model.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct veer_conf *load(const char *text)
{
    char path[] = "/tmp/check_pool_XXXXXX";
    char err[512];
    int fd = mkstemp(path);
    struct veer_conf *c;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "config: %s", err);
    return c;
}

#define LISTEN "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"

START_TEST(test_shares_follow_configured_weights)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; backends = ("
                                      "{ name = \"b1\"; address = \"127.0.0.1:1\"; weight = 100; "
                                      "group = \"blue\"; },"
                                      "{ name = \"g1\"; address = \"127.0.0.1:2\"; weight = 0; "
                                      "group = \"green\"; } ); } );");
    struct model *m = model_from_conf(c);
    struct rt_pool *p = &m->pools[0];

    ck_assert_uint_eq(p->ng, 2);
    ck_assert_str_eq(p->g[0].name, "blue");
    ck_assert_int_eq(p->g[0].share, 100);
    ck_assert_int_eq(p->g[1].share, 0);
    ck_assert(model_eligible(p, 0));
    ck_assert(!model_eligible(p, 1));
    ck_assert_double_eq(model_effective_weight(p, 0), 100.0);
    model_free(m);
    conf_free(c);
    routing_shutdown();
}
END_TEST

START_TEST(test_shares_round_to_exactly_100)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; backends = ("
                                      "{ name = \"a\"; address = \"127.0.0.1:1\"; weight = 1; "
                                      "group = \"x\"; },"
                                      "{ name = \"b\"; address = \"127.0.0.1:2\"; weight = 1; "
                                      "group = \"y\"; },"
                                      "{ name = \"c\"; address = \"127.0.0.1:3\"; weight = 1; "
                                      "group = \"z\"; } ); } );");
    struct model *m = model_from_conf(c);
    struct rt_pool *p = &m->pools[0];

    ck_assert_int_eq(p->g[0].share + p->g[1].share + p->g[2].share, 100);
    ck_assert_int_eq(p->g[0].share, 34);
    ck_assert_int_eq(p->g[1].share, 33);
    model_free(m);
    conf_free(c);
    routing_shutdown();
}
END_TEST

START_TEST(test_explicit_shares_and_effective_weights)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; backends = ("
                                      "{ name = \"b1\"; address = \"127.0.0.1:1\"; weight = 100; "
                                      "group = \"blue\"; },"
                                      "{ name = \"b2\"; address = \"127.0.0.1:2\"; weight = 300; "
                                      "group = \"blue\"; },"
                                      "{ name = \"g1\"; address = \"127.0.0.1:3\"; weight = 7; "
                                      "group = \"green\"; } );"
                                      "shares = { blue = 80; green = 20; }; } );");
    struct model *m = model_from_conf(c);
    struct rt_pool *p = &m->pools[0];
    struct routing *r;

    ck_assert_double_eq(model_effective_weight(p, 0), 20.0);
    ck_assert_double_eq(model_effective_weight(p, 1), 60.0);
    ck_assert_double_eq(model_effective_weight(p, 2), 20.0);
    r = routing_build(m);
    ck_assert_uint_eq(r->pools[0].n, 3);
    /* Integer weights in the same ratio 20:60:20, reduced. */
    ck_assert_uint_eq(r->pools[0].b[0].weight, 1);
    ck_assert_uint_eq(r->pools[0].b[1].weight, 3);
    ck_assert_uint_eq(r->pools[0].b[2].weight, 1);
    routing_free(r);
    model_free(m);
    conf_free(c);
    routing_shutdown();
}
END_TEST

START_TEST(test_rounding_never_zeroes_a_backend)
{
    char *text = malloc(1 << 20);
    int n = 0;
    struct veer_conf *c;
    struct model *m;
    struct routing *r;

    n += sprintf(text + n, LISTEN "pools = ( { name = \"api\"; backends = (");
    /* One heavy blue backend and 10,000 light green ones at 1% share. */
    n += sprintf(text + n, "{ name = \"blue\"; address = \"127.0.0.1:1\"; weight = 1000; "
                           "group = \"blue\"; }");
    for (int i = 0; i < 10000; i++)
        n += sprintf(text + n,
                     ", { name = \"g%d\"; address = \"127.0.0.1:2\"; weight = %d; "
                     "group = \"green\"; }",
                     i, 1 + i % 997);
    sprintf(text + n, "); shares = { blue = 99; green = 1; }; } );");
    c = load(text);
    m = model_from_conf(c);
    r = routing_build(m);
    ck_assert_uint_eq(r->pools[0].n, 10001);
    for (uint32_t i = 0; i < r->pools[0].n; i++)
        ck_assert_uint_gt(r->pools[0].b[i].weight, 0);
    routing_free(r);
    model_free(m);
    conf_free(c);
    routing_shutdown();
    free(text);
}
END_TEST

START_TEST(test_pool_without_health_admits_at_once_with_health_pending)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; backends = ("
                                      "{ name = \"a\"; address = \"127.0.0.1:1\"; } ); },"
                                      "{ name = \"hc\"; health = { path = \"/ready\"; };"
                                      " backends = ( { name = \"a\"; address = \"127.0.0.1:1\"; "
                                      "} ); } );");
    struct model *m = model_from_conf(c);
    struct routing *r = routing_build(m);

    ck_assert_int_eq(model_state(&m->pools[0], 0), BE_READY);
    ck_assert_int_eq(model_state(&m->pools[1], 0), BE_PENDING);
    ck_assert_uint_eq(r->pools[0].n, 1);
    ck_assert_uint_eq(r->pools[1].n, 0);
    /* Same address in two pools: one interned address, shared idle connections. */
    ck_assert_uint_eq(m->pools[0].b[0].be->addr_id, m->pools[1].b[0].be->addr_id);
    routing_free(r);
    model_free(m);
    conf_free(c);
    routing_shutdown();
}
END_TEST

/*
 * Discovery (issue 20): a pool of discover entries only, no shares: each
 * entry counts as one backend of its weight, so blue (100) and green (300)
 * get 25% and 75% before any instance is known, and keep them however many
 * instances each entry finds.
 */
START_TEST(test_discover_entries_give_shares_by_their_weight)
{
    struct veer_conf *c =
        load(LISTEN "pools = ( { name = \"api\"; discover = ("
                    "{ name = \"b\"; dns = \"b.internal:80\"; group = \"blue\"; },"
                    "{ name = \"g\"; dns = \"g.internal:80\"; group = \"green\"; "
                    "weight = 300; } ); } );");
    struct model *m = model_from_conf(c);
    struct rt_pool *p = &m->pools[0];
    const char *names[] = {"b-127.0.0.2:80", "b-127.0.0.3:80", "b-127.0.0.4:80", "g-127.0.0.5:80"};
    struct conf_addr a;
    char why[128];
    int blue, green;

    ck_assert_uint_eq(p->nb, 0);
    ck_assert_uint_eq(p->ng, 2);
    blue = model_find_group(p, "blue");
    green = model_find_group(p, "green");
    ck_assert_int_ge(blue, 0);
    ck_assert_int_ge(green, 0);
    ck_assert_int_eq(p->g[blue].share, 25);
    ck_assert_int_eq(p->g[green].share, 75);
    for (int i = 0; i < 4; i++) {
        uint32_t k;

        ck_assert_int_eq(conf_parse_addr(strchr(names[i], '-') + 1, false, &a, why, sizeof(why)),
                         0);
        k = model_add_backend(m, 0, names[i], &a, 100, i < 3 ? "blue" : "green");
        p->b[k].disc_id = i < 3 ? 1 : 2;
    }
    model_reset_shares(p);
    ck_assert_int_eq(p->g[blue].share, 25); /* three blue instances, one green: the same */
    ck_assert_int_eq(p->g[green].share, 75);
    ck_assert_double_eq_tol(model_effective_weight(p, 0), 25.0 / 3, 1e-9);
    ck_assert_double_eq_tol(model_effective_weight(p, 3), 75.0, 1e-9);
    model_free(m);
    conf_free(c);
    routing_shutdown();
}
END_TEST

/*
 * A backend whose address left DNS (gone) is DRAINING, then DRAINED once
 * nothing is in flight, whatever its admin state, and takes no new
 * requests; the rest of its group shares its traffic.
 */
START_TEST(test_gone_backend_drains_and_is_not_eligible)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; discover = ("
                                      "{ name = \"b\"; dns = \"b.internal:80\"; } ); } );");
    struct model *m = model_from_conf(c);
    struct rt_pool *p = &m->pools[0];
    struct conf_addr a;
    char why[128];
    uint32_t k[3];

    for (int i = 0; i < 3; i++) {
        char name[32];

        snprintf(name, sizeof(name), "127.0.0.%d:80", 2 + i);
        ck_assert_int_eq(conf_parse_addr(name, false, &a, why, sizeof(why)), 0);
        snprintf(name, sizeof(name), "b-127.0.0.%d:80", 2 + i);
        k[i] = model_add_backend(m, 0, name, &a, 100, "default");
        p->b[k[i]].disc_id = 1;
    }
    model_reset_shares(p);
    ck_assert_int_eq(model_state(p, k[0]), BE_READY); /* no health checks: READY at once */
    ck_assert(model_eligible(p, k[0]));
    ck_assert_double_eq_tol(model_effective_weight(p, k[1]), 100.0 / 3, 1e-9);

    p->b[k[0]].gone = true;
    ck_assert_int_eq(p->b[k[0]].admin, ADMIN_READY); /* the operator's decision is kept */
    ck_assert_int_eq(model_state(p, k[0]), BE_DRAINING);
    ck_assert(!model_eligible(p, k[0]));
    ck_assert(rt_draining(&p->b[k[0]]));
    ck_assert_double_eq(model_effective_weight(p, k[0]), 0.0);
    ck_assert_double_eq_tol(model_effective_weight(p, k[1]), 50.0, 1e-9);
    p->b[k[0]].drained = true;
    ck_assert_int_eq(model_state(p, k[0]), BE_DRAINED);
    ck_assert(!model_eligible(p, k[0]));

    /* in maintenance, or unhealthy, a gone backend still shows as draining */
    p->b[k[1]].admin = ADMIN_MAINT;
    p->b[k[1]].gone = true;
    ck_assert_int_eq(model_state(p, k[1]), BE_DRAINING);
    p->b[k[2]].health = HEALTH_DOWN;
    p->b[k[2]].gone = true;
    ck_assert_int_eq(model_state(p, k[2]), BE_DRAINING);
    p->b[k[2]].drained = true;
    ck_assert_int_eq(model_state(p, k[2]), BE_DRAINED);
    ck_assert(!model_eligible(p, k[2]));

    /* back in DNS before removal: eligible again with its checks passing */
    p->b[k[0]].gone = false;
    p->b[k[0]].drained = false;
    ck_assert_int_eq(model_state(p, k[0]), BE_READY);
    ck_assert(model_eligible(p, k[0]));
    model_free(m);
    conf_free(c);
    routing_shutdown();
}
END_TEST

/* --- scale: config -> model -> snapshot in linear time ------------------- */

/* CPU time of this process (the forked test), so a busy machine does not count. */
static double cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Load a config of one pool of n backends, each with its own name and
 * address, in 50 groups; build the model and a snapshot; find every
 * backend by name and compute every effective weight. Returns the CPU time
 * it took.
 */
static double config_to_snapshot(int n)
{
    size_t cap = (size_t)n * 96 + 4096;
    char *text = malloc(cap), name[32];
    size_t len = 0;
    struct veer_conf *c;
    struct model *m;
    struct routing *r;
    double t0, *ew;

    len +=
        (size_t)snprintf(text + len, cap - len, LISTEN "pools = ( { name = \"api\"; backends = (");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(
            text + len, cap - len,
            "%s{ name = \"b%d\"; address = \"10.%d.%d.%d:%d\"; group = \"g%d\"; }", i ? "," : "", i,
            (i >> 16) & 255, (i >> 8) & 255, i & 255, 1 + i % 50000, i % 50);
    snprintf(text + len, cap - len, "); } );");
    t0 = cpu_seconds();
    c = load(text);
    m = model_from_conf(c);
    r = routing_build(m);
    ck_assert_uint_eq(r->pools[0].n, (uint32_t)n);
    ck_assert_uint_eq(r->pools[0].ng, 50);
    ck_assert_uint_eq(r->pools[0].groups[7].n, (uint32_t)n / 50);
    ck_assert_uint_eq(addr_count(), (uint32_t)n);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        ck_assert_int_eq(model_find_backend(&m->pools[0], name), i);
    }
    ck_assert_int_eq(model_find_group(&m->pools[0], "g49"), 49);
    ew = model_effective_weights(&m->pools[0]);
    ck_assert_double_eq_tol(ew[0], 2.0 / (n / 50), 1e-9);
    t0 = cpu_seconds() - t0;
    free(ew);
    routing_free(r);
    model_free(m);
    conf_free(c);
    routing_shutdown();
    free(text);
    return t0;
}

/*
 * Eight times the backends may cost about eight times the CPU, not 64: no
 * step from the config file to the snapshot may be quadratic (duplicate
 * name checks, address interning, growing the backend table one slot at a
 * time, per-group passes). The bound leaves room for caches and the
 * allocator: a linear build measures 8-13x on a quiet machine and up to 31x
 * on a fresh CI machine (2,500 backends fit the caches, 20,000 do not); the
 * quadratic one measured 61x in a plain build and ran out of time under
 * ASan, which CI runs too. The best of three runs of each size evens out
 * noise.
 */
START_TEST(test_config_to_snapshot_is_linear_in_backends)
{
    double small = config_to_snapshot(2500), big = config_to_snapshot(20000);

    for (int k = 0; k < 2; k++) {
        small = fmin(small, config_to_snapshot(2500));
        big = fmin(big, config_to_snapshot(20000));
    }
    ck_assert_msg(big < small * 48, "2,500 backends: %.3f s CPU; 20,000: %.3f s (%.1fx)", small,
                  big, big / small);
}
END_TEST

/* --- publish / reclaim under concurrent readers ------------------------- */

#define READERS 3

static struct model *pub_model;
static _Atomic int stop_readers;

static void *reader_main(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    uint64_t last = 0, sum = 0;

    while (!atomic_load(&stop_readers)) {
        struct routing *r = routing_current();

        /* Use the snapshot the way a worker does, then announce it. */
        ck_assert_uint_ge(r->generation, last);
        last = r->generation;
        for (uint32_t i = 0; i < r->npools; i++)
            for (uint32_t j = 0; j < r->pools[i].n; j++)
                sum += r->pools[i].b[j].weight + r->pools[i].b[j].be->id;
        routing_announce(idx, r->generation);
    }
    return (void *)(uintptr_t)(sum & 1);
}

START_TEST(test_publish_and_reclaim_with_concurrent_readers)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; backends = ("
                                      "{ name = \"a\"; address = \"127.0.0.1:1\"; },"
                                      "{ name = \"b\"; address = \"127.0.0.1:2\"; } ); } );");
    pthread_t th[READERS];

    pub_model = model_from_conf(c);
    routing_init(READERS, routing_build(pub_model));
    atomic_store(&stop_readers, 0);
    for (uintptr_t i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader_main, (void *)i);
    for (int k = 0; k < 20000; k++) {
        pub_model->generation++;
        pub_model->pools[0].b[k % 2].weight = 1 + k % 1000;
        routing_publish(routing_build(pub_model));
        if (k % 16 == 0)
            routing_reclaim();
    }
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    /* Every reader announced a recent generation: almost everything is reclaimable. */
    for (unsigned i = 0; i < READERS; i++)
        routing_announce(i, pub_model->generation);
    routing_reclaim();
    ck_assert_uint_eq(routing_retired_count(), 0);
    ck_assert_uint_eq(routing_current()->generation, pub_model->generation);
    routing_shutdown();
    model_free(pub_model);
    conf_free(c);
}
END_TEST

START_TEST(test_snapshot_held_by_a_reader_is_not_freed)
{
    struct veer_conf *c = load(LISTEN "pools = ( { name = \"api\"; backends = ("
                                      "{ name = \"a\"; address = \"127.0.0.1:1\"; } ); } );");
    struct model *m = model_from_conf(c);
    struct routing *first = routing_build(m);

    routing_init(2, first);
    routing_announce(0, 1);
    routing_announce(1, 1);
    m->generation = 2;
    routing_publish(routing_build(m));
    routing_announce(0, 2); /* reader 1 still holds generation 1 */
    routing_reclaim();
    ck_assert_uint_eq(routing_retired_count(), 1);
    ck_assert_uint_eq(first->generation, 1); /* still valid memory */
    routing_announce(1, 2);
    routing_reclaim();
    ck_assert_uint_eq(routing_retired_count(), 0);
    routing_shutdown();
    model_free(m);
    conf_free(c);
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("model");
    TCase *tp = tcase_create("publish");
    TCase *tl = tcase_create("scale");

    tcase_set_timeout(tc, 60);
    tcase_set_timeout(tp, 120);
    tcase_set_timeout(tl, 30);
    tcase_add_test(tc, test_shares_follow_configured_weights);
    tcase_add_test(tc, test_shares_round_to_exactly_100);
    tcase_add_test(tc, test_explicit_shares_and_effective_weights);
    tcase_add_test(tc, test_rounding_never_zeroes_a_backend);
    tcase_add_test(tc, test_pool_without_health_admits_at_once_with_health_pending);
    tcase_add_test(tc, test_discover_entries_give_shares_by_their_weight);
    tcase_add_test(tc, test_gone_backend_drains_and_is_not_eligible);
    tcase_add_test(tl, test_config_to_snapshot_is_linear_in_backends);
    tcase_add_test(tp, test_publish_and_reclaim_with_concurrent_readers);
    tcase_add_test(tp, test_snapshot_held_by_a_reader_is_not_freed);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tl);
    suite_add_tcase(s, tp);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pool_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
