/*
 * mirrorstat.h - what shadow traffic found (issue 19): per site (a pool's
 * requests on no route, or one route's requests to a pool), counts of the
 * mirrored requests by the primary's status class and by result, the
 * latency difference shadow minus primary, the shadow's own latency, and
 * the last MIRROR_MISMATCHES differences.
 *
 * Sites are created by the control thread when a snapshot first needs one
 * and live until the process exits, so a site's counts survive reloads and
 * `mirror off`/`on`. Workers count into their own slot (one writer per
 * slot, relaxed atomics); readers sum the slots. Mismatch records, rare by
 * nature, go into a ring under a mutex.
 */
#ifndef VEER_MIRRORSTAT_H
#define VEER_MIRRORSTAT_H

#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum mirror_result {
    MR_MATCH = 0,
    MR_STATUS_DIFF, /* the statuses differ */
    MR_BODY_DIFF,   /* same status; body length, body SHA-256 or a compared header differs */
    MR_TIMEOUT,     /* the shadow did not answer whole within timeout_ms */
    MR_ERROR,       /* the shadow failed: no READY backend, connect, reset, bad response */
    MR_DROPPED,     /* not sent: max_inflight, body over max_body_bytes, request cut short */
    MR_RESULTS,
};

/* "match", "status_diff", "body_diff", "timeout", "error", "dropped" */
const char *mirror_result_name(enum mirror_result r);

/* Bounds (seconds, ascending, negative ones first) of the latency difference histogram. */
#define MIRROR_DELTA_BOUNDS 31
extern const double mirror_delta_bounds[MIRROR_DELTA_BOUNDS];

/* One worker's counts of one site. */
struct mirror_wstat {
    _Atomic uint64_t n[5][MR_RESULTS];                  /* by primary status class */
    _Atomic uint64_t delta[5][MIRROR_DELTA_BOUNDS + 1]; /* last: +Inf */
    _Atomic int64_t delta_sum_us;                       /* of the pairs counted in delta */
    struct hist shadow; /* the shadow's own latency (a timeout or an error at timeout_ms) */
} __attribute__((aligned(64)));

#define MIRROR_MISMATCHES 50

/* One difference, as the report lists it. */
struct mirror_mismatch {
    enum mirror_result result; /* MR_STATUS_DIFF or MR_BODY_DIFF */
    char request_id[64];
    char method[16];
    char path[128]; /* without the query string; cut at 127 bytes */
    int primary_status, shadow_status;
    uint8_t primary_sha[32], shadow_sha[32];
    uint64_t primary_bytes, shadow_bytes;
    char header[48]; /* the compared header that differs, "" when none */
    uint64_t at_us;  /* when its request began (veer_now_us); 0: now, set by mirror_note */
};

struct mirror_site {
    char *pool;
    char *route;             /* "" for requests on no route */
    struct mirror_wstat *ws; /* one per worker (veer_nworkers) */
    pthread_mutex_t lock;    /* the ring */
    struct mirror_mismatch ring[MIRROR_MISMATCHES];
    unsigned ring_first, ring_n; /* oldest first, by at_us */
    struct mirror_site *next;    /* the site created before it */
};

/*
 * The site of (pool, route), created the first time (control thread only;
 * veer_nworkers must be set).
 */
struct mirror_site *mirror_site_get(const char *pool, const char *route);

/* The newest site, then follow ->next. Any thread. */
struct mirror_site *mirror_sites_first(void);

/* Free every site (exit, once no thread counts). */
void mirror_sites_free(void);

/*
 * Count one mirrored request in worker widx's slot: `status` the primary's,
 * delta_us shadow minus primary when the pair completed (match,
 * status_diff, body_diff), else ignored; shadow_us the shadow's latency,
 * counted for every result but dropped (a timeout or an error is counted
 * at the timeout: the caller says so).
 */
void mirror_count(struct mirror_site *s, unsigned widx, int status, enum mirror_result r,
                  int64_t delta_us, uint64_t shadow_us);

/*
 * Keep a difference among the MIRROR_MISMATCHES whose requests began last
 * (shadows end out of order: a later one may be judged first). Any worker.
 */
void mirror_note(struct mirror_site *s, const struct mirror_mismatch *m);

/* The sums of every worker's slot of a site. */
struct mirror_totals {
    uint64_t n[5][MR_RESULTS];
    uint64_t delta[5][MIRROR_DELTA_BOUNDS + 1];
    int64_t delta_sum_us;
    uint64_t shadow[LAT_BUCKETS + 1], shadow_count, shadow_sum_us;
};

void mirror_site_sum(const struct mirror_site *s, struct mirror_totals *t);

/* Add b into a. */
void mirror_totals_add(struct mirror_totals *a, const struct mirror_totals *b);

/* Copy the ring, oldest first; returns how many (at most MIRROR_MISMATCHES). */
unsigned mirror_site_mismatches(struct mirror_site *s, struct mirror_mismatch *out);

/*
 * The q-quantile (0 < q <= 1) of a latency-difference histogram (buckets
 * MIRROR_DELTA_BOUNDS + 1), in seconds, by linear interpolation within the
 * bucket; false when it holds nothing.
 */
bool mirror_delta_quantile(const uint64_t *bucket, double q, double *out);

/* Sum the class rows of a delta histogram into one (MIRROR_DELTA_BOUNDS + 1). */
void mirror_delta_classes(const uint64_t delta[5][MIRROR_DELTA_BOUNDS + 1], uint64_t *out);

#endif
