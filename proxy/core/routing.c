/*
 * routing.c - backend identity (struct backend, interned addresses) and the
 * routing snapshot's publication: one atomic store to publish, per-worker
 * announcements, and reclaiming old snapshots once every worker has moved
 * past them. Building a snapshot from the model is control/model.c's job.
 */
#include "routing.h"
#include "veer.h"

#include <string.h>

_Atomic(struct routing *) routing_now;
unsigned veer_nworkers = 1;

static struct routing_reader *readers;
static unsigned nreaders;
static struct routing *retired;

static struct conf_addr **addrs; /* by id; each apart, so the index can point at it */
static uint32_t naddrs, cap_addrs;
static struct hmap addr_index; /* address bytes -> id */
static uint32_t next_backend_id;

const char *backend_state_name(enum backend_state s)
{
    static const char *const names[] = {"PENDING", "READY", "DOWN", "DRAINING", "DRAINED", "MAINT"};

    return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "?";
}

const char *admin_state_name(enum admin_state a)
{
    static const char *const names[] = {"ready", "drain", "maint"};

    return (unsigned)a < ARRAY_SIZE(names) ? names[a] : "?";
}

const char *breaker_state_name(enum breaker_state b)
{
    static const char *const names[] = {"closed", "open", "half_open"};

    return (unsigned)b < ARRAY_SIZE(names) ? names[b] : "?";
}

int admin_state_parse(const char *s)
{
    if (strcmp(s, "ready") == 0)
        return ADMIN_READY;
    if (strcmp(s, "drain") == 0)
        return ADMIN_DRAIN;
    if (strcmp(s, "maint") == 0)
        return ADMIN_MAINT;
    return -1;
}

uint32_t backend_active(const struct backend *be)
{
    uint32_t n = 0;

    for (unsigned i = 0; i < veer_nworkers; i++)
        n += atomic_load_explicit(&be->ws[i].active, memory_order_relaxed);
    return n;
}

uint32_t backend_conns(const struct backend *be)
{
    uint32_t n = 0;

    for (unsigned i = 0; i < veer_nworkers; i++)
        n += atomic_load_explicit(&be->ws[i].conns, memory_order_relaxed);
    return n;
}

/* Make room for one more element in *v (n used of *cap, each size bytes), doubling. */
static void *grow_array(void *v, uint32_t n, uint32_t *cap, size_t size)
{
    if (n < *cap)
        return v;
    *cap = *cap ? *cap * 2 : 8;
    return veer_realloc(v, (size_t)*cap * size);
}

uint32_t addr_intern(const struct conf_addr *a)
{
    uintptr_t *id = hmap_find(&addr_index, &a->ss, a->len);
    struct conf_addr *copy;

    if (id != NULL)
        return (uint32_t)*id;
    copy = veer_malloc(sizeof(*copy));
    *copy = *a;
    addrs = grow_array(addrs, naddrs, &cap_addrs, sizeof(*addrs));
    addrs[naddrs] = copy;
    hmap_insert(&addr_index, &copy->ss, copy->len, naddrs);
    return naddrs++;
}

uint32_t addr_count(void)
{
    return naddrs;
}

struct backend *backend_create(const char *name, const struct conf_addr *addr)
{
    struct backend *be = veer_calloc(1, sizeof(*be));

    be->magic = BACKEND_MAGIC;
    be->id = next_backend_id++;
    be->addr_id = addr_intern(addr);
    be->name = veer_strdup(name);
    be->addr = *addr;
    /* Cache-line aligned: each worker's slot has lines of its own. */
    if (posix_memalign((void **)&be->ws, 64, veer_nworkers * sizeof(*be->ws)) != 0)
        veer_panic(__FILE__, __LINE__, "out of memory");
    memset(be->ws, 0, veer_nworkers * sizeof(*be->ws));
    return be;
}

void backend_wstat_requests(const struct backend_wstat *ws, uint64_t req[5], uint64_t *lat)
{
    const struct req_wstat *st = &ws->fb;
    const struct metrics_cell *cell = metrics_cells_first(&ws->routed);

    for (;;) {
        for (unsigned c = 0; c < 5; c++)
            req[c] += atomic_load_explicit(&st->requests[c], memory_order_relaxed);
        for (unsigned i = 0; lat && i <= LAT_BUCKETS; i++)
            lat[i] += atomic_load_explicit(&st->latency.bucket[i], memory_order_relaxed);
        if (cell == NULL)
            break;
        st = &cell->st;
        cell = cell->next;
    }
}

void backend_destroy(struct backend *be)
{
    if (be == NULL)
        return;
    for (unsigned w = 0; w < veer_nworkers; w++)
        metrics_cells_free(&be->ws[w].routed);
    free(be->name);
    free(be->ws);
    be->magic = 0;
    free(be);
}
void routing_free(struct routing *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->npools; i++) {
        free(r->pools[i].b);
        free(r->pools[i].group_names);
        for (uint32_t g = 0; r->pools[i].groups && g < r->pools[i].ng; g++)
            free(r->pools[i].groups[g].b);
        free(r->pools[i].groups);
        free(r->pools[i].share);
    }
    for (uint32_t i = 0; i < r->nmirrors; i++)
        free(r->mirrors[i].view.b);
    free(r->mirrors);
    free(r->pools);
    free(r->route);
    free(r);
}

void routing_init(unsigned n, struct routing *first)
{
    nreaders = n;
    readers = veer_calloc(n ? n : 1, sizeof(*readers));
    for (unsigned i = 0; i < n; i++)
        atomic_store_explicit(&readers[i].seen, 0, memory_order_relaxed);
    atomic_store_explicit(&routing_now, first, memory_order_release);
}

void routing_publish(struct routing *r)
{
    struct routing *old = atomic_exchange_explicit(&routing_now, r, memory_order_acq_rel);

    if (old) {
        old->retired_next = retired;
        retired = old;
    }
}

void routing_announce(unsigned idx, uint64_t gen)
{
    atomic_store_explicit(&readers[idx].seen, gen, memory_order_release);
}

uint64_t routing_min_seen(void)
{
    uint64_t min_seen = UINT64_MAX;

    for (unsigned i = 0; i < nreaders; i++) {
        uint64_t s = atomic_load_explicit(&readers[i].seen, memory_order_acquire);

        if (s < min_seen)
            min_seen = s;
    }
    return min_seen;
}

void routing_reclaim(void)
{
    uint64_t min_seen = routing_min_seen();
    struct routing **pp = &retired;

    while (*pp) {
        struct routing *r = *pp;

        if (r->generation < min_seen) {
            *pp = r->retired_next;
            routing_free(r);
        } else {
            pp = &r->retired_next;
        }
    }
}

void routing_shutdown(void)
{
    while (retired) {
        struct routing *r = retired;

        retired = r->retired_next;
        routing_free(r);
    }
    routing_free(atomic_exchange_explicit(&routing_now, NULL, memory_order_acq_rel));
    free(readers);
    readers = NULL;
    nreaders = 0;
    for (uint32_t i = 0; i < naddrs; i++)
        free(addrs[i]);
    free(addrs);
    addrs = NULL;
    naddrs = cap_addrs = 0;
    hmap_free(&addr_index);
}

unsigned routing_retired_count(void)
{
    unsigned n = 0;

    for (struct routing *r = retired; r; r = r->retired_next)
        n++;
    return n;
}
