/*
 * routejson.h - one route of the model as operators see it: the JSON object
 * /status lists under "routes" and `show routes --json` prints, and its match
 * as one line of text for tables. Control thread (it reads the model).
 */
#ifndef VEER_ROUTEJSON_H
#define VEER_ROUTEJSON_H

#include <stdbool.h>
#include <stdint.h>

struct conf_route;
struct model;
struct sbuf;

/*
 * Append route i of m (i < m->nroutes) as one JSON object:
 *   {"name":"payments","match":{"host":"api.example.com","path_prefix":"/payments",
 *    "methods":["GET"],"headers":[{"name":"X-Api-Version","value":"2"}]},
 *    "pool":"payments","state":"serving","maintenance_retry_after":0,"maintenance_hold_ms":0,
 *    "rps":0.0,"error_rate":0.0,"p99_ms":0.0}
 * match holds only the keys the route's configuration sets (path or path_prefix, never
 * both); pool is the pool it sends to now (after `route set`), null when that pool is gone;
 * state is "maintenance" when its requests get the maintenance 503 (routejson_in_maintenance)
 * and "serving" otherwise, with that maintenance's Retry-After and hold (0 when serving); the
 * figures are over the last second (stats.c).
 */
void routejson_route(struct sbuf *o, const struct model *m, uint32_t i);

/*
 * Whether route i's requests get the maintenance 503 now: route maintenance, or
 * maintenance of the pool it sends to, or of every pool (the maintenance module's rule;
 * maintenance.allow paths and veer's own endpoints are exempt either way).
 */
bool routejson_in_maintenance(const struct model *m, uint32_t i);

/*
 * The same, with the Retry-After and hold of the maintenance that applies
 * (0 and 0 when none does): the route's own, else its pool's, else every
 * pool's.
 */
bool routejson_maintenance(const struct model *m, uint32_t i, int *retry_after, int64_t *hold_ms);

/*
 * Append the match of cr as one line of text: its keys in the order host, path or
 * path_prefix, methods, headers, as "host=api.example.com path_prefix=/payments
 * methods=GET,HEAD header=X-Api-Version:2", or "*" when it sets none. Values are written
 * as configured (no quoting: config values hold no newline).
 */
void routejson_match_text(struct sbuf *o, const struct conf_route *cr);

#endif
