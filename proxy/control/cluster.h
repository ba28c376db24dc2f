/*
 * cluster.h - fleet mode on etcd: what main.c and the metrics need. The
 * change path's side is in control-i.h; the design is in cluster.c.
 */
#ifndef VEER_CLUSTER_H
#define VEER_CLUSTER_H

#include "conf.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

/* With a `cluster` block: connect (in the background) on the control base. */
int cluster_start(struct event_base *base, const struct veer_conf *conf, char *err, size_t len);

/* Start-up: run the control base until the first full read of etcd, at most timeout_ms. */
void cluster_wait_sync(int timeout_ms);

/* Shutdown begins: leave the fleet's live set (revoke the lease). */
void cluster_leave(void);

void cluster_stop(void);

bool cluster_connected(void);
int64_t cluster_revision(void);
bool cluster_synced(void);

#endif
