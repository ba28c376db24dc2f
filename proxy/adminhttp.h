/*
 * adminhttp.h - the read-only admin HTTP address: /metrics, /status, /.
 */
#ifndef VEER_ADMINHTTP_H
#define VEER_ADMINHTTP_H

#include "conf.h"
#include "pool.h"

#include <event2/event.h>

struct worker;
struct sbuf;

/* Serve admin.http when configured (logged "admin http on ADDR:PORT"). */
int adminhttp_start(struct event_base *base, const struct veer_conf *conf, const struct model *m,
                    struct worker **workers, unsigned nworkers);
void adminhttp_stop(void);
void adminhttp_set_model(const struct model *m);

/* The /status document. */
void adminhttp_status_json(struct sbuf *o);

#endif
