/*
 * cluster.h - fleet mode on etcd: what main.c and the metrics need, and the
 * change path's side (control thread, control/ only). The design is in
 * cluster.c.
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

/* --- the change path's side: changes go through etcd when a `cluster` block is configured --- */

struct ctl_req;

bool cluster_on(void);
void cluster_propose(struct ctl_req *r);             /* r->edit, r->before; ctl.busy == r */
void cluster_propose_maintenance(struct ctl_req *r); /* ctl.busy == r */
void cluster_push_pool(int pi);                      /* a local publish of intent (rollouts) */
void cluster_reapply(void);                          /* after a reload: the fleet's intent wins */
void cluster_show(struct ctl_req *r);                /* show cluster */

#endif
