/*
 * show.h - the read-only admin commands that render the model: show pools,
 * show pool, show stats, route explain. control_execute hands them to show_execute (bound
 * by main through control_set_show), on the control thread.
 */
#ifndef VEER_SHOW_H
#define VEER_SHOW_H

#include "control.h"

void show_execute(struct ctl_req *r);
void show_pools(struct ctl_req *r);
void show_pool(struct ctl_req *r);
void show_stats(struct ctl_req *r);
void show_route_explain(struct ctl_req *r);
void show_routes(struct ctl_req *r);

#endif
