/*
 * routing.h - backends and the immutable routing snapshot the workers read.
 *
 * The control thread owns the mutable model (control/model.h). Every change
 * builds a new struct routing and publishes it with one release store;
 * workers load it with an acquire load when they pick a backend. A worker
 * announces the generation it has switched to (its quiescent point); a
 * retired snapshot is freed once every worker has announced a newer one.
 */
#ifndef VEER_ROUTING_H
#define VEER_ROUTING_H

#include "conf.h"
#include "hmap.h"
#include "metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum backend_state {
    BE_PENDING = 0,
    BE_READY,
    BE_DOWN,
    BE_DRAINING,
    BE_DRAINED,
    BE_MAINT,
};

const char *backend_state_name(enum backend_state s);

/* What the operator decided for a backend (set state, drain, maint). */
enum admin_state {
    ADMIN_READY = 0, /* in rotation when healthy */
    ADMIN_DRAIN,     /* no new requests; DRAINING until idle, then DRAINED */
    ADMIN_MAINT,     /* out of rotation, no checks */
};

/* What readiness checks observed (pools without `health` are always READY). */
enum health_state {
    HEALTH_PENDING = 0, /* not yet `rise` passing checks */
    HEALTH_READY,
    HEALTH_DOWN,
};

/* Passive health: the circuit breaker of a backend. */
enum breaker_state {
    BREAKER_CLOSED = 0, /* normal */
    BREAKER_OPEN,       /* ejected for the cooldown */
    BREAKER_HALF_OPEN,  /* trial requests at a tenth of its weight */
};

const char *breaker_state_name(enum breaker_state b); /* "closed", "open", "half_open" */

const char *admin_state_name(enum admin_state a); /* "ready", "drain", "maint" */
int admin_state_parse(const char *s);             /* -1 when unknown */

#define BACKEND_MAGIC 0x6beeb001u

/* Upstream error kinds counted per backend. */
enum upstream_err {
    UERR_CONNECT = 0, /* refused or failed connect */
    UERR_TIMEOUT,     /* connect or response timeout */
    UERR_RESET,       /* reset or closed before a whole response */
    UERR_RESPONSE,    /* malformed response */
    UERR_KINDS,
};

/*
 * Per-worker figures of one backend, each worker writing only its own slot
 * (its own cache lines), the control thread summing them when it reads.
 * The first line is what balancing and draining read on the request path.
 *
 * A request is counted once, in one series: `fb` when it matched no route
 * (every request of a config without routes), else the cell of its route's
 * metric slot in `routed` (key: the slot). A backend's totals are their sum
 * (backend_wstat_requests): each part only grows, so the sums do too.
 */
struct backend_wstat {
    _Atomic uint32_t active;  /* requests in flight */
    _Atomic uint32_t conns;   /* open upstream connections */
    _Atomic uint32_t ewma_us; /* response time, exponentially weighted (p2c) */
    uint32_t fails;           /* consecutive failures seen by this worker (breaker) */
    uint64_t first_fail_us;   /* start of that run of failures */
    char pad[64 - 4 * sizeof(uint32_t) - sizeof(uint64_t)];
    struct req_wstat fb;                 /* requests on no route: by status class, duration */
    struct metrics_cells routed;         /* requests on a route, by its metric slot */
    _Atomic uint64_t errors[UERR_KINDS]; /* upstream errors by kind */
    _Atomic uint64_t answered;           /* of the 5xx, answered by veer's own 5xx */
} __attribute__((aligned(64)));

/*
 * The totals of one worker's slot over every series (no route and each
 * route), added into req (by status class) and, unless NULL, lat (the
 * duration buckets, LAT_BUCKETS + 1). Any thread.
 */
void backend_wstat_requests(const struct backend_wstat *ws, uint64_t req[5], uint64_t *lat);
/*
 * A backend, shared by every snapshot that routes to it. Its identity (id,
 * addr_id, name, addr) never changes after creation; the per-worker figures,
 * `draining`, `breaker` and `refs` are atomics that change while it lives;
 * the fields marked control thread only are never read by a worker (a
 * worker knows a backend's pool from the snapshot it routed through).
 */
struct backend {
    unsigned magic;
    uint32_t id;      /* creation order, unique for the process lifetime */
    uint32_t addr_id; /* interned address: upstream idle pools are keyed by it */
    char *name;
    struct conf_addr addr;
    struct backend_wstat *ws; /* one per worker */
    /* Set by the control thread when draining: workers stop pooling its connections. */
    _Atomic bool draining;
    /* The breaker state workers act on (half-open: report every outcome). */
    _Atomic int breaker;
    /* Queued messages naming it, either way between threads (backend_hold). */
    _Atomic uint32_t refs;

    /* Control thread only. */
    int pool;             /* index of its pool in the model, -1 once deleted */
    uint32_t index;       /* its index in the pool's backends */
    unsigned hc_pass;     /* consecutive passing readiness checks */
    unsigned hc_fail;     /* consecutive failing readiness checks */
    uint64_t retired_gen; /* deleted at this generation (reclaimed after) */
    struct backend *retired_next;
};

/*
 * A deleted backend is freed by the control thread (ctl_reclaim_backends)
 * once nothing can reach it: every worker has announced a snapshot newer
 * than the last one routing to it (a worker reaches it through its
 * snapshot), no request or connection counts it (a worker reaches it through
 * its transactions and upstream connections), and no queued message names
 * it. That last part is this reference: whoever queues a message naming a
 * backend, in either direction, takes one while it can still reach the
 * backend by one of the other means, and the receiver drops it once done
 * with the message. A message therefore never carries a pointer that may
 * be freed before it is read, whichever thread sends it.
 *
 * Ordering: a worker that takes a reference and then drops its last count
 * does so with a release fence in between; the control thread reads the
 * counts, then an acquire fence, then the references (see
 * ctl_reclaim_backends), so it cannot see the count gone and miss the
 * reference.
 */
static inline void backend_hold(struct backend *be)
{
    atomic_fetch_add_explicit(&be->refs, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

/* Drop a reference (release: what the holder read of be comes before). */
static inline void backend_put(struct backend *be)
{
    atomic_fetch_sub_explicit(&be->refs, 1, memory_order_release);
}

/* Number of workers the per-worker tables are sized for (set before any model). */
extern unsigned veer_nworkers;

/* A worker adjusts its own slot: single writer, so no atomic read-modify-write. */
static inline void backend_wstat_add(_Atomic uint32_t *v, int d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + (uint32_t)d,
                          memory_order_relaxed);
}

/*
 * Failed requests of one worker's slot: 5xx answers plus upstream errors,
 * each failure once (an upstream error veer answered with a 502/504 is in
 * both counters; one retried elsewhere or cutting a started response only
 * in the errors).
 */
static inline uint64_t backend_wstat_failures(const struct backend_wstat *ws)
{
    uint64_t req[5] = {0}, n;

    backend_wstat_requests(ws, req, NULL);
    n = req[4];
    for (unsigned k = 0; k < UERR_KINDS; k++)
        n += atomic_load_explicit(&ws->errors[k], memory_order_relaxed);
    return n - atomic_load_explicit(&ws->answered, memory_order_relaxed);
}

/* Sums of the per-worker figures (control thread). */
uint32_t backend_active(const struct backend *be);
uint32_t backend_conns(const struct backend *be);

/* One eligible backend in a snapshot pool. */
struct snap_backend {
    struct backend *be;
    uint32_t group;  /* index into snap_pool.groups */
    uint64_t weight; /* effective weight, integer, > 0, gcd-reduced */
};

struct snap_pool {
    const char *name;
    const struct conf_pool *conf;
    enum conf_balance balance;
    uint32_t n; /* eligible backends */
    struct snap_backend *b;
    bool maint;                       /* maintenance on for this pool */
    int retry_after;                  /* its Retry-After, seconds */
    uint32_t nstate[BE_MAINT + 1];    /* backends by state, for the status endpoint */
    const char **group_names;         /* by snap_backend.group; live as long as the model */
    int canary;                       /* group treated as canary (override, sticky), or -1 */
    uint32_t ng;                      /* groups */
    int *share;                       /* by group, percent */
    struct snap_pool *groups;         /* by group: its eligible backends only */
    int64_t maint_hold_ms;            /* maintenance: hold requests this long (0 = answer 503) */
    const struct snap_mirror *mirror; /* its requests on no route are mirrored so; NULL: off */
    struct mirror_site *msite;        /* counted there */
};

struct mirror_site; /* mirrorstat.h */

/*
 * Shadow traffic as a snapshot carries it (issue 19): where a sample of
 * the requests of a pool or a route is copied to. `view` is the mirror
 * group's backends that may take requests, whatever the group's share
 * (normally 0: a standby), with their weights, balanced like the pool.
 */
#define MIRROR_CMP_BYTES 256

struct snap_mirror {
    const struct conf_mirror *conf; /* limits, methods (the pool's, a route's, or defaults) */
    uint32_t threshold;             /* percent x 100: ids hashing below it are mirrored */
    int pool;                       /* index into routing.pools: the group's pool */
    uint32_t id;                    /* index into routing.mirrors (a worker's balancer) */
    const char *group;
    struct snap_pool view;
    /* Compared response headers, lower case, each NUL-terminated, an empty one last. */
    char cmp[MIRROR_CMP_BYTES];
};

/* A route's runtime decisions as a snapshot carries them. */
struct snap_route {
    int pool;         /* index into routing.pools; -1 when its pool is gone */
    uint32_t slot;    /* metric slot, stable per route name for the process (model.h) */
    const char *name; /* the configuration's */
    bool plain;       /* it overrides nothing: its conf_route is not read per request */
    bool maint;       /* route maintenance: its requests get the maintenance 503 */
    int retry_after;
    int64_t maint_hold_ms;
    const struct snap_mirror *mirror; /* its own mirror, else its pool's, else NULL */
    struct mirror_site *msite;        /* where its mirrored requests are counted */
};

struct routing {
    uint64_t generation;
    bool maint; /* maintenance on for every pool */
    int retry_after;
    int64_t maint_hold_ms;
    const struct veer_conf *conf;
    uint32_t npools;
    struct snap_pool *pools;
    /*
     * The route table of conf (routes.h; NULL without routes), with route i
     * going to pools[route[i].pool]: both in one snapshot, so a request
     * matches against one table and its pools, never half of a reload.
     */
    const struct routes *routes;
    uint32_t nroutes;
    struct snap_route *route;
    struct snap_mirror *mirrors; /* every mirror the pools and routes use */
    uint32_t nmirrors;
    struct routing *retired_next; /* control thread: retire list */
};

/* A new backend object (control thread; model_add_backend). */
struct backend *backend_create(const char *name, const struct conf_addr *addr);

/* Free a backend object (after it was retired and nothing holds it). */
void backend_destroy(struct backend *be);

/* Free a snapshot (once no worker can hold it). */
void routing_free(struct routing *r);

/* --- publication and reclamation ---------------------------------------- */

/* Per-worker announcement slot, padded to its own cache line. */
struct routing_reader {
    _Atomic uint64_t seen;
    char pad[64 - sizeof(uint64_t)];
};

/* Set up publication for `nreaders` workers, with the first snapshot. */
void routing_init(unsigned nreaders, struct routing *first);

/* Publish r (release); the previous snapshot is retired. Control thread. */
void routing_publish(struct routing *r);

/* The current snapshot (acquire). Any thread. */
static inline struct routing *routing_current(void)
{
    extern _Atomic(struct routing *) routing_now;
    return atomic_load_explicit(&routing_now, memory_order_acquire);
}

/* Worker `idx` announces it holds no snapshot older than generation gen. */
void routing_announce(unsigned idx, uint64_t gen);

/* The oldest generation a worker may still hold. Control thread. */
uint64_t routing_min_seen(void);

/* Free retired snapshots that no worker can still hold. Control thread. */
void routing_reclaim(void);

/* Free everything (after workers stopped). */
void routing_shutdown(void);

/* Retired snapshots not freed yet (tests). */
unsigned routing_retired_count(void);

/* Interned address id for an address (control thread). */
uint32_t addr_intern(const struct conf_addr *a);
uint32_t addr_count(void);

#endif
