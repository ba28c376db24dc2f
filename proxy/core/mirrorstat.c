/*
 * mirrorstat.c - the figures of shadow traffic (see mirrorstat.h).
 */
#include "mirrorstat.h"
#include "routing.h"
#include "veer.h"

#include <stdlib.h>
#include <string.h>

static const char *const result_names[MR_RESULTS] = {
    "match", "status_diff", "body_diff", "timeout", "error", "dropped",
};

const char *mirror_result_name(enum mirror_result r)
{
    return (unsigned)r < MR_RESULTS ? result_names[r] : "?";
}

const double mirror_delta_bounds[MIRROR_DELTA_BOUNDS] = {
    -10,     -5,     -2.5,    -1,       -0.5, -0.25,   -0.1,   -0.05, -0.025, -0.01, -0.005,
    -0.0025, -0.001, -0.0005, -0.00025, 0,    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,     0.5,  1,       2.5,    5,     10,
};

static _Atomic(struct mirror_site *) sites;

struct mirror_site *mirror_sites_first(void)
{
    return atomic_load_explicit(&sites, memory_order_acquire);
}

struct mirror_site *mirror_site_get(const char *pool, const char *route)
{
    struct mirror_site *s;

    for (s = mirror_sites_first(); s; s = s->next)
        if (strcmp(s->pool, pool) == 0 && strcmp(s->route, route) == 0)
            return s;
    s = veer_calloc(1, sizeof(*s));
    s->pool = veer_strdup(pool);
    s->route = veer_strdup(route);
    if (posix_memalign((void **)&s->ws, 64, (veer_nworkers ? veer_nworkers : 1) * sizeof(*s->ws)))
        veer_panic(__FILE__, __LINE__, "out of memory");
    memset(s->ws, 0, (veer_nworkers ? veer_nworkers : 1) * sizeof(*s->ws));
    pthread_mutex_init(&s->lock, NULL);
    s->next = atomic_load_explicit(&sites, memory_order_relaxed);
    atomic_store_explicit(&sites, s, memory_order_release);
    return s;
}

void mirror_sites_free(void)
{
    struct mirror_site *s = atomic_exchange_explicit(&sites, NULL, memory_order_acq_rel);

    while (s) {
        struct mirror_site *next = s->next;

        pthread_mutex_destroy(&s->lock);
        free(s->ws);
        free(s->pool);
        free(s->route);
        free(s);
        s = next;
    }
}

static unsigned status_class(int status)
{
    unsigned c = status >= 100 ? (unsigned)(status / 100 - 1) : 4; /* none: counted as 5xx */

    return c > 4 ? 4 : c;
}

void mirror_count(struct mirror_site *s, unsigned widx, int status, enum mirror_result r,
                  int64_t delta_us, uint64_t shadow_us)
{
    struct mirror_wstat *ws = &s->ws[widx];
    unsigned c = status_class(status), i = 0;
    double d = (double)delta_us / 1e6;

    counter_add(&ws->n[c][r], 1);
    if (r == MR_DROPPED)
        return;
    hist_observe(&ws->shadow, shadow_us);
    if (r > MR_BODY_DIFF)
        return;
    while (i < MIRROR_DELTA_BOUNDS && d > mirror_delta_bounds[i])
        i++;
    counter_add(&ws->delta[c][i], 1);
    atomic_store_explicit(&ws->delta_sum_us,
                          atomic_load_explicit(&ws->delta_sum_us, memory_order_relaxed) + delta_us,
                          memory_order_relaxed);
}

#define RING(s, i) ((s)->ring[((s)->ring_first + (i)) % MIRROR_MISMATCHES])

void mirror_note(struct mirror_site *s, const struct mirror_mismatch *m)
{
    uint64_t at = m->at_us ? m->at_us : veer_now_us();
    unsigned k = 0;

    pthread_mutex_lock(&s->lock);
    /* Kept in the order the requests began: k of them began after this one (a few at most). */
    while (k < s->ring_n && RING(s, s->ring_n - 1 - k).at_us > at)
        k++;
    if (s->ring_n == MIRROR_MISMATCHES) {
        if (k == s->ring_n) {
            pthread_mutex_unlock(&s->lock); /* older than every one kept */
            return;
        }
        s->ring_first = (s->ring_first + 1) % MIRROR_MISMATCHES; /* the oldest goes */
        s->ring_n--;
    }
    for (unsigned i = s->ring_n; i > s->ring_n - k; i--)
        RING(s, i) = RING(s, i - 1);
    RING(s, s->ring_n - k) = *m;
    RING(s, s->ring_n - k).at_us = at;
    s->ring_n++;
    pthread_mutex_unlock(&s->lock);
}

unsigned mirror_site_mismatches(struct mirror_site *s, struct mirror_mismatch *out)
{
    unsigned n;

    pthread_mutex_lock(&s->lock);
    n = s->ring_n;
    for (unsigned k = 0; k < n; k++)
        out[k] = RING(s, k);
    pthread_mutex_unlock(&s->lock);
    return n;
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void mirror_site_sum(const struct mirror_site *s, struct mirror_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (unsigned w = 0; w < (veer_nworkers ? veer_nworkers : 1); w++) {
        const struct mirror_wstat *ws = &s->ws[w];

        for (unsigned c = 0; c < 5; c++) {
            for (unsigned r = 0; r < MR_RESULTS; r++)
                t->n[c][r] += LOAD(ws->n[c][r]);
            for (unsigned b = 0; b <= MIRROR_DELTA_BOUNDS; b++)
                t->delta[c][b] += LOAD(ws->delta[c][b]);
        }
        t->delta_sum_us += LOAD(ws->delta_sum_us);
        for (unsigned b = 0; b <= LAT_BUCKETS; b++)
            t->shadow[b] += LOAD(ws->shadow.bucket[b]);
        t->shadow_count += LOAD(ws->shadow.count);
        t->shadow_sum_us += LOAD(ws->shadow.sum_us);
    }
}

void mirror_totals_add(struct mirror_totals *a, const struct mirror_totals *b)
{
    for (unsigned c = 0; c < 5; c++) {
        for (unsigned r = 0; r < MR_RESULTS; r++)
            a->n[c][r] += b->n[c][r];
        for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++)
            a->delta[c][k] += b->delta[c][k];
    }
    a->delta_sum_us += b->delta_sum_us;
    for (unsigned k = 0; k <= LAT_BUCKETS; k++)
        a->shadow[k] += b->shadow[k];
    a->shadow_count += b->shadow_count;
    a->shadow_sum_us += b->shadow_sum_us;
}

void mirror_delta_classes(const uint64_t delta[5][MIRROR_DELTA_BOUNDS + 1], uint64_t *out)
{
    for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++) {
        out[k] = 0;
        for (unsigned c = 0; c < 5; c++)
            out[k] += delta[c][k];
    }
}

bool mirror_delta_quantile(const uint64_t *bucket, double q, double *out)
{
    uint64_t total = 0, acc = 0;
    double rank;

    for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++)
        total += bucket[k];
    if (total == 0)
        return false;
    rank = q * (double)total;
    for (unsigned k = 0; k <= MIRROR_DELTA_BOUNDS; k++) {
        double lo, hi;

        if (bucket[k] == 0 || (double)(acc + bucket[k]) < rank) {
            acc += bucket[k];
            continue;
        }
        /* The outer buckets are open: their one finite bound stands for them. */
        if (k == 0) {
            *out = mirror_delta_bounds[0];
            return true;
        }
        if (k == MIRROR_DELTA_BOUNDS) {
            *out = mirror_delta_bounds[MIRROR_DELTA_BOUNDS - 1];
            return true;
        }
        lo = mirror_delta_bounds[k - 1];
        hi = mirror_delta_bounds[k];
        *out = lo + (hi - lo) * ((rank - (double)acc) / (double)bucket[k]);
        return true;
    }
    *out = mirror_delta_bounds[MIRROR_DELTA_BOUNDS - 1];
    return true;
}
