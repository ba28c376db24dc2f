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

void lb_init(struct lb *lb, const struct snap_pool *sp)
{
    lb_free(lb);
    lb->sp = sp;
    for (uint32_t i = 0; i < sp->n; i++)
        lb->total += (int64_t)sp->b[i].weight;
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

int lb_pick(struct lb *lb)
{
    if (lb->sp == NULL || lb->sp->n == 0)
        return -1;
    if (lb->cw)
        return swrr_pick(lb);
    return edf_pick(lb);
}
