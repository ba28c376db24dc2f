/*
 * adminhttp.h - the read-only admin HTTP address: /metrics, /status, /.
 */
#ifndef VEER_ADMINHTTP_H
#define VEER_ADMINHTTP_H

#include "conf.h"
#include "model.h"

#include <event2/event.h>
#include <stdint.h>

struct worker;
struct sbuf;

/* Serve admin.http when configured (logged "admin http on ADDR:PORT"). */
int adminhttp_start(struct event_base *base, const struct veer_conf *conf, const struct model *m,
                    struct worker **workers, unsigned nworkers);
void adminhttp_stop(void);
void adminhttp_set_model(const struct model *m);

/* The /status document. */
void adminhttp_status_json(struct sbuf *o);
/*
 * The /status?history=1&since=N document, whole: /status with a "history" member, the last
 * STATS_HISTORY seconds of every group and route (only the seconds after since).
 */
void adminhttp_status_history_json(struct sbuf *o, uint64_t since);

/* Connections open on the admin address now (at most 64: more wait to be accepted). */
unsigned adminhttp_connections(void);
/* /metrics and /status documents rendered since start (tests). */
uint64_t adminhttp_renders(void);
/* How long one slice of a /metrics render may take (default 5 ms; tests make it tiny). */
void adminhttp_set_render_slice(uint64_t us);

#endif
