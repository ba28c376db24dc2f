/*
 * discovery.h - backends that follow DNS names (issue 20): each entry of a
 * pool's `discover` list is resolved on the control thread (c-ares on the
 * control thread's event base, never a worker), at the answer's TTL bounded
 * by resolvers.min_interval_ms and interval_ms. Each address becomes a
 * backend "<entry>-<address>" that enters PENDING and is admitted by the
 * pool's readiness checks; an address that leaves DNS drains and is removed
 * once DRAINED; one that comes back first is readmitted as it was. A failed
 * resolution never removes anything: the last good answer stays. An empty
 * answer (NXDOMAIN, no records) empties the set only after `confirm` in a
 * row. Each change is one snapshot publish and one audit record (actor
 * "discovery"). Control thread only.
 */
#ifndef VEER_DISCOVERY_H
#define VEER_DISCOVERY_H

#include "conf.h"
#include "model.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

/* Start resolving every entry of conf (called once the control plane runs). 0 or -1. */
int discovery_start(struct event_base *base, const struct veer_conf *conf);

/*
 * A reload: entries are matched by pool and name. A kept entry keeps its
 * set and counters (resolved at once when its query changed; its backends
 * move when its group did); a new one resolves at once; the backends of a
 * removed one drain and go. New resolver settings take a new channel.
 * Called after the model took the new configuration, before it publishes.
 */
void discovery_reload(const struct veer_conf *nc);

/* Cancel everything (shutdown). */
void discovery_stop(void);

/*
 * Upgrade, restart: the old process's backend NAME at ADDR (NULL: the
 * address NAME carries) in pool pi is one an entry of that pool would name
 * so: it is created now (discovered, READY or PENDING as the caller then
 * sets it) and becomes part of the entry's set, so the pool serves before
 * the first resolution here. Returns its index, or -1 when no entry of the
 * pool names it. Before discovery_start.
 */
int discovery_adopt(struct model *m, const struct veer_conf *conf, int pi, const char *name,
                    const char *addr);

/* One address of an entry's current set. */
struct discovery_addr {
    char backend[96];
    struct conf_addr addr;
    int weight;
};

/* An entry as `show discovery`, /status and /metrics see it. */
struct discovery_info {
    const char *pool, *name, *kind, *query, *group;
    uint32_t id; /* the rt_backend.disc_id of its backends */
    const struct discovery_addr *addrs;
    uint32_t naddrs;
    bool has_ttl;
    uint32_t ttl_s;
    int64_t next_ms;        /* until the next resolution; -1 while one is under way */
    double last_success;    /* unix seconds, 0 before the first */
    bool failing;           /* the last resolution failed (the set is the one before) */
    const char *last_error; /* the latest error, NULL when there was none */
    double last_error_at;
    uint64_t errors, resolutions;
    unsigned unconfirmed_empty;
};

/* How many entries there are, and entry i of them (i < discovery_count()). */
unsigned discovery_count(void);
void discovery_get(unsigned i, struct discovery_info *out);

#endif
