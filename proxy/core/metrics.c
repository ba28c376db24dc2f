/*
 * metrics.c - recording what veer counts: histograms, and the control
 * thread's own figures. Rendering them is admin/prometheus.c's job.
 */
#include "metrics.h"
#include "veer.h"

#include <stdlib.h>
#include <string.h>

const double lat_bounds[LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};

const double shift_bounds[SHIFT_BUCKETS] = {0.00001, 0.00005, 0.0001, 0.0005,
                                            0.001,   0.005,   0.01,   0.05};

void hist_observe(struct hist *h, uint64_t us)
{
    double s = (double)us / 1e6;
    unsigned i = 0;

    while (i < LAT_BUCKETS && s > lat_bounds[i])
        i++;
    counter_add(&h->bucket[i], 1);
    counter_add(&h->count, 1);
    counter_add(&h->sum_us, us);
}

static uint32_t cell_hash(uint64_t key, uint32_t cap)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static void cells_place(struct metrics_cell **tab, uint32_t cap, struct metrics_cell *cell)
{
    uint32_t i = cell_hash(cell->key, cap);

    while (tab[i])
        i = (i + 1) & (cap - 1);
    tab[i] = cell;
}

/*
 * A zeroed cell on a cache line of its own: a request then touches two
 * lines of it (its key, the counters, the count; the sum and the first
 * buckets), whichever cells its neighbours in memory belong to.
 */
static struct metrics_cell *cell_new(void)
{
    size_t size = (sizeof(struct metrics_cell) + 63) & ~(size_t)63;
    void *p = NULL;

    if (posix_memalign(&p, 64, size) != 0)
        veer_panic(__FILE__, __LINE__, "out of memory");
    memset(p, 0, size);
    return p;
}

/* Add a zeroed cell for key, then publish it: a reader sees it whole or not at all. */
static struct metrics_cell *cells_add(struct metrics_cells *c, uint64_t key)
{
    struct metrics_cell *cell = cell_new();

    if ((c->n + 1) * 2 > c->cap) {
        uint32_t cap = c->cap ? c->cap * 2 : 8;
        struct metrics_cell **tab = veer_calloc(cap, sizeof(*tab));

        for (uint32_t i = 0; i < c->cap; i++)
            if (c->tab[i])
                cells_place(tab, cap, c->tab[i]);
        free(c->tab);
        c->tab = tab;
        c->cap = cap;
    }
    cell->key = key;
    cell->next = atomic_load_explicit(&c->head, memory_order_relaxed);
    cells_place(c->tab, c->cap, cell);
    c->n++;
    atomic_store_explicit(&c->head, cell, memory_order_release);
    return cell;
}

struct metrics_cell *metrics_cell_get(struct metrics_cells *c, uint64_t key)
{
    if (c->cap) {
        for (uint32_t i = cell_hash(key, c->cap);; i = (i + 1) & (c->cap - 1)) {
            struct metrics_cell *cell = c->tab[i];

            if (cell == NULL)
                break;
            if (cell->key == key)
                return cell;
        }
    }
    return cells_add(c, key);
}

void metrics_cells_free(struct metrics_cells *c)
{
    struct metrics_cell *cell = atomic_load_explicit(&c->head, memory_order_acquire);

    while (cell) {
        struct metrics_cell *next = cell->next;

        free(cell);
        cell = next;
    }
    free(c->tab);
    memset(c, 0, sizeof(*c));
}

struct control_figures metrics_ctl;

void metrics_shift_applied(uint64_t us)
{
    double s = (double)us / 1e6;
    unsigned i = 0;

    while (i < SHIFT_BUCKETS && s > shift_bounds[i])
        i++;
    metrics_ctl.shift_bucket[i]++;
    metrics_ctl.shift_count++;
    metrics_ctl.shift_sum_us += us;
}

void metrics_shift_refused(void)
{
    metrics_ctl.refused++;
}

void metrics_health_check(int pool, uint64_t us)
{
    double s = (double)us / 1e6;
    unsigned i = 0;

    if (pool < 0 || pool >= METRIC_POOLS)
        return;
    while (i < LAT_BUCKETS && s > lat_bounds[i])
        i++;
    metrics_ctl.health[pool].bucket[i]++;
    metrics_ctl.health[pool].count++;
    metrics_ctl.health[pool].sum_us += us;
}
