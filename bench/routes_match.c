/*
 * routes_match.c - the cost of one route match (proxy/core/routes.c) in
 * ns per request, with 1, 1,000 (100 hosts x 10 prefixes) and 10,000
 * (1,000 hosts x 10 prefixes) routes, and the ratio 10k/1. Built by meson
 * (build/bench/routes_match), not installed, not a test: run it by hand.
 *
 *   build/bench/routes_match [ROUNDS [MATCHES_PER_ROUND]]
 *
 * Each table gets its own traffic: requests spread evenly at random over
 * its hosts and prefixes, every one routed ("H17.Example.com:8080",
 * "/svc3/items/42": a port to drop, a host to lowercase, a path two
 * segments deeper than the prefix), matched in a fixed random order so the
 * 10,000-route table is not read from a hot cache line by line. One more
 * row gives the 10,000-route traffic to a single catch-all route
 * (path_prefix "/", no host): the same requests with one route. Each round
 * times MATCHES_PER_ROUND matches; the median round is reported (and the
 * fastest). Correctness is checked once before timing.
 */
#include "routes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NREQ 16384

struct table {
    const char *label;
    int hosts, prefixes;
    bool catch_all; /* one route, path_prefix "/"; traffic as for hosts x prefixes */
};

struct sample {
    struct routes_req req;
    char host[32];
    char path[40];
    int want;
};

static const struct routes_hdr hdrs[] = {
    {"Accept", 6, "*/*", 3},
    {"User-Agent", 10, "bench/1.0", 9},
};

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static struct routes *build(const struct table *t, double *build_ms)
{
    size_t n = t->catch_all ? 1 : (size_t)t->hosts * (size_t)t->prefixes;
    struct routes_spec *s = calloc(n, sizeof(*s));
    char(*names)[24] = calloc(n, 24);
    char(*hosts)[32] = calloc((size_t)t->hosts, 32);
    char(*paths)[16] = calloc((size_t)t->prefixes, 16);
    struct routes_error err;
    struct routes *rt;
    double t0;

    if (t->catch_all) {
        s[0] = (struct routes_spec){.name = "all", .path_prefix = "/"};
    } else {
        for (int p = 0; p < t->prefixes; p++)
            snprintf(paths[p], 16, "/svc%d", p);
        for (int h = 0; h < t->hosts; h++) {
            snprintf(hosts[h], 32, "h%d.example.com", h);
            for (int p = 0; p < t->prefixes; p++) {
                size_t i = (size_t)h * (size_t)t->prefixes + (size_t)p;

                snprintf(names[i], 32, "h%d-svc%d", h, p);
                s[i] = (struct routes_spec){
                    .name = names[i], .host = hosts[h], .path_prefix = paths[p]};
            }
        }
    }
    t0 = now_ns();
    rt = routes_build(s, n, &err);
    *build_ms = (now_ns() - t0) / 1e6;
    if (rt == NULL) {
        fprintf(stderr, "routes_match: route %d: %s\n", err.index, err.msg);
        exit(1);
    }
    free(s);
    free(names);
    free(hosts);
    free(paths);
    return rt;
}

static void traffic(const struct table *t, struct sample *smp)
{
    for (int k = 0; k < NREQ; k++) {
        struct sample *x = &smp[k];
        int h = (int)rnd((uint32_t)t->hosts), p = (int)rnd((uint32_t)t->prefixes);

        snprintf(x->host, sizeof(x->host), "H%d.Example.com:8080", h);
        snprintf(x->path, sizeof(x->path), "/svc%d/items/%u", p, rnd(100000));
        x->want = t->catch_all ? 0 : h * t->prefixes + p;
        x->req = (struct routes_req){.method = "GET",
                                     .method_len = 3,
                                     .host = x->host,
                                     .host_len = strlen(x->host),
                                     .path = x->path,
                                     .path_len = strlen(x->path),
                                     .hdrs = hdrs,
                                     .nhdrs = 2};
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Median and fastest ns per match over `rounds` rounds of `per_round` matches. */
static void measure(const struct table *t, int rounds, long per_round, double *median, double *best,
                    double *build_ms)
{
    struct sample *smp = calloc(NREQ, sizeof(*smp));
    struct routes *rt = build(t, build_ms);
    double *ns = calloc((size_t)rounds, sizeof(*ns));
    volatile long sink = 0;

    traffic(t, smp);
    for (int k = 0; k < NREQ; k++) {
        int got = routes_match(rt, &smp[k].req);

        if (got != smp[k].want) {
            fprintf(stderr, "routes_match: %s %s: route %d, want %d\n", smp[k].host, smp[k].path,
                    got, smp[k].want);
            exit(1);
        }
    }
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        long acc = 0;

        for (long m = 0; m < per_round; m++)
            acc += routes_match(rt, &smp[m & (NREQ - 1)].req);
        ns[r] = (now_ns() - t0) / (double)per_round;
        sink += acc;
    }
    qsort(ns, (size_t)rounds, sizeof(*ns), cmp_double);
    *median = ns[rounds / 2];
    *best = ns[0];
    (void)sink;
    routes_free(rt);
    free(ns);
    free(smp);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 7;
    long per_round = argc > 2 ? atol(argv[2]) : 1000000;
    const struct table tables[] = {
        {"1 route (1 host x 1 prefix)", 1, 1, false},
        {"1,000 routes (100 hosts x 10 prefixes)", 100, 10, false},
        {"10,000 routes (1,000 hosts x 10 prefixes)", 1000, 10, false},
        {"1 catch-all route, the 10,000 table's traffic", 1000, 10, true},
    };
    double med[4], best[4], build_ms[4];

    if (rounds < 1 || per_round < 1) {
        fprintf(stderr, "usage: routes_match [ROUNDS [MATCHES_PER_ROUND]]\n");
        return 2;
    }
    printf("routes_match: %d rounds of %ld matches per table, median (fastest) ns per match\n\n",
           rounds, per_round);
    printf("%-48s %12s %12s %10s\n", "table", "ns/match", "fastest", "build ms");
    for (size_t k = 0; k < sizeof(tables) / sizeof(tables[0]); k++) {
        measure(&tables[k], rounds, per_round, &med[k], &best[k], &build_ms[k]);
        printf("%-48s %12.1f %12.1f %10.2f\n", tables[k].label, med[k], best[k], build_ms[k]);
    }
    printf("\nratio 10k/1: %.2f (median), %.2f (fastest)\n", med[2] / med[0], best[2] / best[0]);
    printf("ratio 10k/1 catch-all, same traffic: %.2f (median)\n", med[2] / med[3]);
    return 0;
}
