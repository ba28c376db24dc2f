/*
 * model.h - the traffic model the control thread edits: pools, groups,
 * shares, weights, admin and health states. Control thread only; workers
 * see it only as the snapshots built from it (routing.h).
 */
#ifndef VEER_MODEL_H
#define VEER_MODEL_H

#include "routing.h"

#include <event2/event.h>

/* Traffic figures over the last second, computed by the control thread. */
struct rate {
    uint64_t last[LAT_BUCKETS + 1]; /* latency buckets at the previous tick */
    uint64_t last_total, last_errors;
    uint64_t delta[LAT_BUCKETS + 1]; /* this second's buckets */
    double rps;
    double error_rate; /* 5xx and upstream errors over requests */
    double p99_ms;
    bool primed; /* routes: the totals were taken once (stats.c) */
};

/* Runtime model, control thread only. */
struct rt_backend {
    struct backend *be;
    int weight;
    uint32_t group;
    enum admin_state admin;
    enum health_state health;
    bool drained;             /* admin is DRAIN and nothing is left in flight */
    bool remove_when_drained; /* gone from the config at a reload: deleted once DRAINED */
    uint32_t disc_id;         /* the discovery entry that added it (discovery.c); 0: none */
    bool gone;                /* its address left DNS: draining whatever its admin state */
    enum breaker_state breaker;
    double factor;           /* weight multiplier: slow start, half-open trial (1 = none) */
    uint64_t ready_since_us; /* slow start: when it was admitted */
    unsigned trial_ok;       /* half-open: successes so far */
    struct event *cooldown;  /* open: when to go half-open */
    struct rate rate;        /* figures over the last second (stats.c) */
    uint64_t drain_start_us; /* when the drain began */
    uint64_t drain_gen;      /* generation that took it out of rotation */
    uint32_t drain_inflight; /* requests in flight when it began */
};

/*
 * Whether b is draining: the operator's drain, or discovery's when its
 * address left DNS (admin stays the operator's, so the fleet's intent and
 * rollbacks never carry discovery's decision).
 */
static inline bool rt_draining(const struct rt_backend *b)
{
    return b->admin == ADMIN_DRAIN || b->gone;
}

struct stats_ring; /* stats.h */

struct rt_group {
    char *name;
    int share; /* percent */
    struct rate rate;
    struct stats_ring *ring; /* its last STATS_HISTORY seconds (stats.c), NULL before the first */
};

struct rt_pool {
    char *name;
    const struct conf_pool *conf;
    char *rollout; /* a running rollout as its state file line, or NULL */
    int canary;    /* group index the override header and sticky cohorts treat as canary */
    bool removed;  /* gone from the config: kept (indexes stay) until reused */
    /*
     * model->change_seq at the last membership change an operator made (add,
     * del, replace, a reload): a rollback does not reach across one.
     * Discovery's changes do not count.
     */
    uint64_t members_seq;
    bool maint;
    int maint_retry_after;
    int64_t maint_hold_ms;
    /*
     * Shadow traffic as the operator set it (`mirror P on|off`, a rollout's
     * shadow phase): MIRROR_CONF follows the config; MIRROR_ON mirrors to
     * mirror_group at mirror_percent with the config's limits (or the
     * defaults); MIRROR_OFF mirrors nothing, routes' own mirrors included.
     */
    enum { MIRROR_CONF = 0, MIRROR_ON, MIRROR_OFF } mirror;
    char *mirror_group;
    double mirror_percent;
    /*
     * A rollout's shadow phase (rollout.c): every request to the pool is
     * sampled at shadow_percent to group shadow_group, whatever the switch
     * above says. Never saved: a restart ends the phase.
     */
    bool shadow_on;
    uint32_t shadow_group;
    double shadow_percent;
    struct rt_backend *b;
    uint32_t nb;
    uint32_t cap_b;       /* room in b: it grows by doubling */
    struct hmap b_byname; /* backend name -> struct backend * (its index is be->index) */
    struct rt_group *g;
    uint32_t ng;
    uint32_t cap_g;
    struct hmap g_byname; /* group name -> index into g */
};

/* ROUTE_HISTORY previous pools of a route are kept for `rollback`. */
#define ROUTE_HISTORY 32

/*
 * A route of the configuration with its runtime decisions, control thread
 * only. Carried by name across reloads (model_bind_routes).
 */
struct rt_route {
    char *name;
    char *conf_pool; /* the pool its configuration names, as written */
    int pool;        /* index of the pool it sends to now (route set), -1 when none */
    bool maint;      /* route maintenance */
    int maint_retry_after;
    int64_t maint_hold_ms;
    uint32_t slot;                /* its metric slot: one per route name, for the process */
    char *history[ROUTE_HISTORY]; /* pool names before each route set, newest last */
    unsigned nhistory;
    uint64_t history_seq;    /* when its last route set was (model->change_seq) */
    struct rate rate;        /* figures over the last second (stats.c) */
    struct stats_ring *ring; /* its last STATS_HISTORY seconds (stats.c), NULL before the first */
};

struct model {
    const struct veer_conf *conf;
    struct rt_pool *pools;
    uint32_t npools;
    uint64_t generation;
    bool maint; /* maintenance for every pool */
    int maint_retry_after;
    int64_t maint_hold_ms;
    struct rt_route *routes; /* by route of conf (conf->routes[i] is routes[i]) */
    uint32_t nroutes;
    struct hmap route_byname; /* route name -> index + 1 */
    /*
     * Metric slots: one per route name ever configured, never reused, so a
     * route's counters survive reloads; slot_names[s] is its name.
     */
    struct hmap slot_byname; /* name -> slot + 1 */
    char **slot_names;
    uint32_t nslots, cap_slots;
    uint64_t change_seq; /* counts operator changes: which of a pool and a route changed last */
    uint64_t seconds;    /* stats_tick calls so far: the number of the last second taken */
};

/* Build the runtime model from a validated config. */
struct model *model_from_conf(const struct veer_conf *conf);

/*
 * Build m->routes from the routes of m->conf, after m->conf changed (a
 * reload) and every pool it names is in the model. A route that was there
 * before (same name) keeps its maintenance, its history and the pool a
 * route set gave it, unless the pool its configuration names changed (the
 * operator edited it) or that pool is gone.
 */
void model_bind_routes(struct model *m);

/* Index of a route by name, or -1. */
int model_find_route(const struct model *m, const char *name);

/* Append a pool built from its config (reload); returns its index. */
int model_add_pool(struct model *m, const struct conf_pool *cp);

/* Shares of pool p as its config gives them (explicit, or from the weights). */
void model_reset_shares(struct rt_pool *p);

/* Index of group `name` in p, created with a 0% share when new. */
uint32_t model_group(struct rt_pool *p, const char *name);
void model_free(struct model *m);

/*
 * Whether p's requests on no route are mirrored now, and where to
 * (*group, *percent): a rollout's shadow phase, else the operator's
 * switch, else the config.
 */
bool model_mirror(const struct rt_pool *p, const char **group, double *percent);

/* Index of a pool by name, or -1. */
int model_find_pool(const struct model *m, const char *name);

/*
 * Effective weight of backend i of pool p as the operator sees it:
 * share(g) x weight(b) / sum of the weights of g's eligible backends.
 * 0 when not eligible.
 */
double model_effective_weight(const struct rt_pool *p, uint32_t i);

/*
 * The same for every backend of p, by index, in one pass (a loop over
 * model_effective_weight would be quadratic). A new array; the caller frees it.
 */
double *model_effective_weights(const struct rt_pool *p);

/* Whether backend i of pool p may receive new requests. */
bool model_eligible(const struct rt_pool *p, uint32_t i);

/* The state operators see: admin decisions first, then health. */
enum backend_state model_state(const struct rt_pool *p, uint32_t i);

/*
 * Add a backend to pool pi: PENDING when the pool has health checks, READY
 * otherwise; a new group starts with a 0% share. Returns its index.
 */
uint32_t model_add_backend(struct model *m, int pi, const char *name, const struct conf_addr *addr,
                           int weight, const char *group);

/*
 * Remove backend i of pool pi from the model. The backend object itself is
 * returned for the caller to retire (workers may still hold it).
 */
struct backend *model_del_backend(struct model *m, int pi, uint32_t i);

/*
 * Remove every backend of pool pi that gone() picks, in one pass that keeps
 * the others in order (deleting many one by one would be quadratic). Their
 * objects go into out (room for the pool's count), for the caller to
 * retire; returns how many.
 */
uint32_t model_del_backends(struct model *m, int pi, bool (*gone)(const struct rt_backend *b),
                            struct backend **out);

/* Index of a backend / group of pool p by name, or -1. */
int model_find_backend(const struct rt_pool *p, const char *name);
int model_find_group(const struct rt_pool *p, const char *name);

/* A new snapshot of the model, generation m->generation. */
struct routing *routing_build(const struct model *m);

#endif
