/*
 * balance.c - smooth weighted round robin (nginx's algorithm for small
 * pools, an EDF heap for large ones). See balance.h.
 */
#include "balance.h"
#include "veer.h"

#include <string.h>

void lb_free(struct lb *lb)
{
    free(lb->cw);
    free(lb->heap);
    free(lb->cum);
    memset(lb, 0, sizeof(*lb));
}

/*
 * Deadline order of two EDF entries: the k-th pick of a backend of weight w
 * in a cycle is due at (2k + 1) / 2w of the cycle (midpoints, so backends
 * interleave evenly); compare by cross-multiplication, exactly.
 */
static int edf_before(const struct lb *lb, const struct lb_edf *a, const struct lb_edf *b)
{
    unsigned __int128 da, db;

    if (a->cycle != b->cycle)
        return a->cycle < b->cycle;
    da = (unsigned __int128)(2u * (uint64_t)a->k + 1) * lb->sp->b[b->idx].weight;
    db = (unsigned __int128)(2u * (uint64_t)b->k + 1) * lb->sp->b[a->idx].weight;
    if (da != db)
        return da < db;
    return a->idx < b->idx;
}

static void edf_sift_down(struct lb *lb, uint32_t i)
{
    uint32_t n = lb->sp->n;
    struct lb_edf *h = lb->heap;

    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        struct lb_edf t;

        if (l < n && edf_before(lb, &h[l], &h[m]))
            m = l;
        if (r < n && edf_before(lb, &h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

void lb_init(struct lb *lb, const struct snap_pool *sp, unsigned widx)
{
    lb_free(lb);
    lb->sp = sp;
    lb->widx = widx;
    lb->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)widx << 32) ^ (uint64_t)(uintptr_t)sp;
    for (uint32_t i = 0; i < sp->n; i++)
        lb->total += (int64_t)sp->b[i].weight;
    if (sp->balance == BALANCE_LEASTCONN)
        return;
    if (sp->balance == BALANCE_P2C) {
        uint64_t sum = 0;

        lb->cum = veer_malloc((sp->n ? sp->n : 1) * sizeof(*lb->cum));
        for (uint32_t i = 0; i < sp->n; i++)
            lb->cum[i] = sum += sp->b[i].weight;
        return;
    }
    if (sp->n <= LB_SWRR_MAX) {
        lb->cw = veer_calloc(sp->n ? sp->n : 1, sizeof(*lb->cw));
        return;
    }
    lb->heap = veer_malloc(sp->n * sizeof(*lb->heap));
    for (uint32_t i = 0; i < sp->n; i++)
        lb->heap[i] = (struct lb_edf){.idx = i, .k = 0, .cycle = 0};
    for (uint32_t i = sp->n / 2; i-- > 0;)
        edf_sift_down(lb, i);
}

/* nginx ngx_http_upstream_get_peer(): raise all, take the highest, lower it by the total. */
static int swrr_pick(struct lb *lb)
{
    const struct snap_pool *sp = lb->sp;
    int best = -1;

    for (uint32_t i = 0; i < sp->n; i++) {
        lb->cw[i] += (int64_t)sp->b[i].weight;
        if (best < 0 || lb->cw[i] > lb->cw[best])
            best = (int)i;
    }
    lb->cw[best] -= lb->total;
    return best;
}

static int edf_pick(struct lb *lb)
{
    struct lb_edf *top = &lb->heap[0];
    int idx = (int)top->idx;

    if (++top->k == lb->sp->b[idx].weight) {
        top->k = 0;
        top->cycle++;
    }
    edf_sift_down(lb, 0);
    return idx;
}

static uint32_t active_of(const struct lb *lb, uint32_t i)
{
    return atomic_load_explicit(&lb->sp->b[i].be->ws[lb->widx].active, memory_order_relaxed);
}

/*
 * Lowest (active + 1) / weight, compared exactly by cross-multiplication;
 * the scan starts one past the previous pick so equal candidates take
 * turns.
 */
static int leastconn_pick(struct lb *lb)
{
    const struct snap_pool *sp = lb->sp;
    uint32_t best = lb->cursor % sp->n;
    unsigned __int128 best_num = active_of(lb, best) + 1, best_w = sp->b[best].weight;

    for (uint32_t k = 1; k < sp->n; k++) {
        uint32_t i = (lb->cursor + k) % sp->n;
        unsigned __int128 num = active_of(lb, i) + 1, w = sp->b[i].weight;

        if (num * best_w < best_num * w) {
            best = i;
            best_num = num;
            best_w = w;
        }
    }
    lb->cursor = best + 1;
    return (int)best;
}

static uint64_t xorshift(struct lb *lb)
{
    uint64_t x = lb->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return lb->rng = x;
}

/* A backend drawn with probability proportional to its effective weight. */
static uint32_t weighted_draw(struct lb *lb)
{
    const struct snap_pool *sp = lb->sp;
    uint64_t r = xorshift(lb) % (uint64_t)lb->total;
    uint32_t lo = 0, hi = sp->n - 1;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (lb->cum[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Power of two choices on in-flight requests x latency EWMA. */
static int p2c_pick(struct lb *lb)
{
    const struct snap_pool *sp = lb->sp;
    uint32_t a, b;
    uint64_t ca, cb;

    a = weighted_draw(lb);
    if (sp->n == 1)
        return 0;
    b = weighted_draw(lb);
    for (int tries = 0; b == a && tries < 4; tries++)
        b = weighted_draw(lb);
    ca = (uint64_t)(active_of(lb, a) + 1) *
         (atomic_load_explicit(&sp->b[a].be->ws[lb->widx].ewma_us, memory_order_relaxed) + 1);
    cb = (uint64_t)(active_of(lb, b) + 1) *
         (atomic_load_explicit(&sp->b[b].be->ws[lb->widx].ewma_us, memory_order_relaxed) + 1);
    return (int)(cb < ca ? b : a);
}

int lb_pick(struct lb *lb)
{
    if (lb->sp == NULL || lb->sp->n == 0)
        return -1;
    switch (lb->sp->balance) {
    case BALANCE_LEASTCONN:
        return leastconn_pick(lb);
    case BALANCE_P2C:
        return p2c_pick(lb);
    default:
        return lb->cw ? swrr_pick(lb) : edf_pick(lb);
    }
}
