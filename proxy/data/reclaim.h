/*
 * reclaim.h - what a burst leaves behind, given back once it has passed.
 *
 * A burst of N concurrent requests leaves a worker with up to N idle
 * upstream connections per backend and 2N buffers' worth of memory that the
 * allocator keeps after they are freed. Once a second each worker closes
 * half of the idle connections to each backend address that no request
 * needed during that second (beyond a floor it always keeps), frees half of
 * the cached buffers and transactions that stayed unused, and, once the buffers in existence
 * have fallen 1 MiB below their peak, returns the allocator's free pages to
 * the system (malloc_trim). Steady traffic keeps its connections and
 * buffers (they are needed every second); what a burst opened goes within
 * about ten seconds. The work is per backend address, not per connection.
 */
#ifndef VEER_RECLAIM_H
#define VEER_RECLAIM_H

struct worker;

/* Idle connections per backend address a worker keeps whatever the traffic. */
#define RECLAIM_IDLE_FLOOR 8

/* Start w's once-a-second reclaim (on its event base; worker thread from then on). */
void reclaim_init(struct worker *w);

/* One reclaim pass, as the timer runs it (tests call it directly). */
void reclaim_run(struct worker *w);

#endif
