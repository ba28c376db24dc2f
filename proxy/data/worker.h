/*
 * worker.h - one worker thread: its own event_base, its own listening
 * sockets (SO_REUSEPORT), its client sessions, its idle upstream
 * connections and its balancer state. Nothing here is shared with another
 * worker, so the request path takes no lock. The control thread talks to a
 * worker only through its mailbox (messages, oldest first) and an atomic
 * command word, both woken by the mailbox's eventfd.
 */
#ifndef VEER_WORKER_H
#define VEER_WORKER_H

#include "balance.h"
#include "buf.h"
#include "conf.h"
#include "http.h"
#include "mailbox.h"
#include "metrics.h"
#include "routing.h"
#include "session.h"
#include "inherit.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <pthread.h>
#include <stdatomic.h>

struct session;
struct upstream;
struct txn;

/* A listening socket of one worker. */
struct wlistener {
    int fd;
    struct event ev;
    struct worker *w;
    const struct conf_listen *lc; /* NULL once a reload removed it (its config may be freed) */
    char addr[64];                /* lc->addr.text, for its sessions' whole life */
    int pool;                     /* index into the snapshot's pools */
    struct wlistener *next_retired;
};

/* A reload's listener set: for each listener, keep an existing one or take new sockets. */
struct wreconf_listener {
    int keep;       /* index of the worker's listener to keep, or -1 */
    const int *fds; /* new sockets, one per worker, when keep < 0 */
    const struct conf_listen *lc;
    int pool;
};

struct wreconf {
    const struct veer_conf *conf;
    struct wreconf_listener *l;
    unsigned n;
    _Atomic unsigned refs; /* one per worker that got it */
    /*
     * Workers still on the previous configuration: each decrements it once
     * switched (release), after which it reads nothing of the previous one
     * (reload.c frees it once this is 0 and the snapshots moved on).
     */
    _Atomic unsigned *left;
};

/* Idle upstream connections to one backend address, most recent first. */
struct idle_list {
    struct upstream *head, *tail;
    uint32_t n;
    uint32_t low; /* the fewest idle since the last reclaim tick: never needed (reclaim.h) */
};

/* Messages from the control thread (queued, unlike the command bits). */
enum wmsg_type {
    WMSG_WARM = 0,      /* open idle connections to these backends, then report the ticket */
    WMSG_CLOSE_IDLE,    /* close idle connections to these backends (drain, delete) */
    WMSG_ABORT_BACKEND, /* close the sessions with a request on these backends (drain --force) */
    WMSG_RECONF,        /* switch to a reloaded configuration and listener set */
    WMSG_HANDOVER, /* upgrade: the new process is ready; hand connections over (ticket = chan) */
    WMSG_ADOPT,    /* upgrade, new side: a connection from the old process */
};

struct wmsg {
    struct mailbox_node node; /* in the worker's inbox */
    enum wmsg_type type;
    uint64_t ticket;
    int pool; /* WMSG_WARM: the backends' pool, an index into the snapshot */
    unsigned n;
    struct backend **be; /* each with a reference (backend_hold), dropped by wmsg_free */
    struct wreconf *reconf;
    struct handover_msg *adopt; /* WMSG_ADOPT, with the fd in ticket */
};

/* Commands from the control thread (bits of worker.cmd). */
enum {
    WCMD_REFRESH = 1u << 0,  /* a new routing snapshot was published */
    WCMD_SHUTDOWN = 1u << 1, /* stop accepting, finish in-flight work, exit */
    WCMD_ABORT = 1u << 2,    /* close everything now and exit */
};

struct worker_stats {
    uint64_t accepted;
    uint64_t requests;
    uint64_t responses;
    uint64_t errors;
    uint64_t upstream_connects;
    uint64_t upstream_reused;
    uint64_t retries;
};

struct worker {
    unsigned idx;
    pthread_t thread;
    struct event_base *base;
    const struct veer_conf *conf;
    struct http_limits req_limits;
    struct http_limits res_limits;
    size_t head_buf_limit; /* largest buffer a request head may need */

    struct vbuf_cache bufs;
    struct txn *free_txns;
    unsigned txn_low;          /* the fewest cached since the last reclaim tick (reclaim.h) */
    struct slab_pool txn_slab; /* transactions beyond the cache come from here (slab.h) */
    unsigned nfree_txns;

    struct wlistener **listeners;
    unsigned nlisteners;
    struct wlistener *retired_listeners; /* removed by a reload, freed at the end */

    struct session *sessions; /* all live sessions (doubly linked) */
    unsigned nsessions;
    struct session *dead_sessions;
    struct upstream *dead_upstreams;
    struct txn_client *flush_list; /* clients with queued writes (txn_defer), in queue order */
    struct txn_client *flush_tail;
    bool exit;                 /* leave the loop after this iteration */
    struct event accept_pause; /* out of fds: accepting resumes on this timer */

    struct idle_list *idle; /* indexed by backend addr_id */
    uint32_t nidle;
    unsigned nupstreams;      /* open upstream connections, idle or busy */
    struct upstream *warming; /* connections opened ahead of traffic, not connected yet */

    struct routing *routing;     /* snapshot this worker switched to */
    struct lb *lbs;              /* per pool of `routing` */
    struct lb **glbs;            /* per pool, per group (made when first needed) */
    struct lb *mlbs;             /* per mirror of `routing` (made when first needed) */
    struct mirror *mirrors;      /* pairs of primary and shadow not judged yet (mirror.h) */
    struct mirror *dead_mirrors; /* judged: freed after the send phase */
    struct mirror *free_mirrors; /* kept for the next ones (mirror.c) */
    unsigned nfree_mirrors;
    unsigned mirrors_inflight;        /* shadows in flight */
    struct mirror *shadow_batch;      /* shadows whose bytes wait to be written (mirror.c), */
    struct mirror *shadow_batch_last; /* oldest first */
    unsigned shadow_batch_n;
    struct event *shadow_batch_ev; /* writes them */
    uint64_t request_ids;          /* request ids generated (txn_new_request_id) */
    unsigned pid;                  /* getpid(), once */
    struct txn_queue held;         /* requests waiting for a backend or maintenance, oldest first */
    struct event held_ev;          /* runs txn_retry_held from the loop after a snapshot switch */

    const struct timeval *tv_idle;
    const struct timeval *tv_header;
    const struct timeval *tv_connect;
    const struct timeval *tv_response;
    const struct timeval *tv_upstream_idle;
    const struct timeval *tv_quiet;

    struct mailbox inbox; /* struct wmsg from the control thread; its eventfd also wakes for cmd */
    struct event wake_ev; /* the inbox's eventfd */
    _Atomic unsigned cmd;
    _Atomic bool exited; /* the thread left its loop */
    bool shutting_down;
    bool handover;             /* upgrade: idle connections go to the new process */
    int handover_chan;         /* its socket */
    bool handover_full;        /* it pushed back: idle sessions wait for room */
    struct event handover_wev; /* room again on it */
    unsigned handed_over;
    struct event shutdown_timer;
    struct event reclaim_ev; /* once a second: see reclaim.h */

    struct worker_stats stats;
    struct {
        unsigned inflight;          /* requests in flight when shutdown began */
        unsigned tunnels_at_signal; /* tunnels open then */
        unsigned aborted;           /* requests cut at the deadline or a second signal */
        unsigned tunnels;           /* tunnels closed */
    } sd;
    int64_t retry_tokens;    /* retry budget, in thousandths of a retry */
    struct req_wstat *local; /* METRIC_POOLS: requests on no route answered by veer itself */
    /* Those of requests on a route, by worker_local_key(route's metric slot, pool). */
    struct metrics_cells local_routed;
    struct req_wstat nopool; /* answered without a pool: no route and the listener has none */
    struct {
        _Atomic uint64_t retries;
        _Atomic uint64_t upstreams; /* open upstream connections */
        _Atomic uint64_t held;      /* requests on the hold queue */
    } mstat;
    uint64_t rng;
};

/* The key of veer's own answers to requests of a route in a pool (worker.local_routed). */
static inline uint64_t worker_local_key(uint32_t slot, int pool)
{
    return (uint64_t)slot << 32 | (uint32_t)pool;
}

#define RETRY_TOKEN     1000               /* one retry */
#define RETRY_TOKEN_MAX (10 * RETRY_TOKEN) /* at most ten retries in a burst */

extern _Atomic int veer_client_connections;

/*
 * Create a worker with its event base and listening sockets (fds already
 * bound by the listener module, one per conf listener). Returns NULL on
 * error (logged).
 */
struct worker *worker_create(unsigned idx, const struct veer_conf *conf, const int *listen_fds);
int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* Upgrade, new side: hand a connection from the old process to a worker (any thread). */
void worker_adopt(struct worker *w, int fd, const struct handover_msg *hm);

/* Post a command to a worker (any thread). */
void worker_post(struct worker *w, unsigned cmd);

/* Queue a message to a worker (any thread; the worker frees it). */
void worker_send(struct worker *w, struct wmsg *m);
void wmsg_free(struct wmsg *m);

/*
 * The balancer state of pool `pool` for the current snapshot; switches the
 * worker to the newest snapshot first if one was published.
 */
struct lb *worker_lb(struct worker *w, int pool);

/*
 * Upgrade: the handover channel is full (the new process is behind). Idle
 * sessions are offered again as soon as it has room; meanwhile they wait as
 * in any graceful shutdown.
 */
void worker_handover_full(struct worker *w);

/*
 * Shutting down: leave the loop once no session is left (tunnels, which
 * have no request boundary, are closed once they are all that is left).
 */
void worker_check_done(struct worker *w);

/* The balancer of group g of pool `pool` in the current snapshot (made on first use). */
struct lb *worker_group_lb(struct worker *w, int pool, uint32_t g);

/* Idle upstream connection pool, per backend address. */
struct upstream *worker_idle_pop(struct worker *w, uint32_t addr_id);
void worker_idle_push(struct worker *w, struct upstream *up);
void worker_idle_remove(struct worker *w, struct upstream *up);

#endif
