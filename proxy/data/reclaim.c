/*
 * reclaim.c - giving back what a burst left (reclaim.h).
 */
#include "reclaim.h"
#include "txn.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <malloc.h>

static void reclaim_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reclaim_run(arg);
}

void reclaim_init(struct worker *w)
{
    static const struct timeval second = {1, 0};

    event_assign(&w->reclaim_ev, w->base, -1, EV_PERSIST, reclaim_cb, w);
    event_add(&w->reclaim_ev, &second);
}

/*
 * Close half (rounded up) of the connections to one address that sat idle
 * the whole second beyond the floor, least recently used first: a run of
 * quiet seconds halves the surplus each time, and a connection a request
 * took during the second is not surplus.
 */
static void trim_idle(struct worker *w, struct idle_list *il)
{
    uint32_t surplus = il->low > RECLAIM_IDLE_FLOOR ? il->low - RECLAIM_IDLE_FLOOR : 0;

    for (uint32_t k = (surplus + 1) / 2; k > 0 && il->tail; k--) {
        struct upstream *up = il->tail;

        worker_idle_remove(w, up);
        upstream_close(up);
    }
    il->low = il->n;
}

void reclaim_run(struct worker *w)
{
    for (uint32_t a = 0; a < w->nidle; a++)
        trim_idle(w, &w->idle[a]);
    txn_cache_trim(w);
    if (vbuf_cache_trim(&w->bufs))
        malloc_trim(0); /* the burst's buffers are free in the allocator: give the pages back */
}
