/*
 * mirrorjson.h - what shadow traffic found, as operators read it: the
 * report of one pool (`mirror report POOL --json`, /status "mirror") and
 * its text form. Control thread (it reads the model; the figures are the
 * workers' atomics and the sites' rings, mirrorstat.h).
 */
#ifndef VEER_MIRRORJSON_H
#define VEER_MIRRORJSON_H

#include <stdbool.h>

struct model;
struct sbuf;

/*
 * Pool pi's report as one JSON object:
 *   {"pool":"api","on":true,"group":"green","percent":10,
 *    "routes":[{"route":"","totals":{FIGURES},"classes":[{"class":"2xx",FIGURES...}]}],
 *    "mismatches":[{"request_id":"..","route":"","method":"GET","path":"/x",
 *                   "result":"status_diff","primary_status":200,"shadow_status":500,
 *                   "primary_sha256":"..","shadow_sha256":"..","primary_bytes":2,
 *                   "shadow_bytes":2,"header":null}]}
 * FIGURES: "mirrored","dropped","match","status_diff","body_diff","timeout","error",
 * "delta_p50_ms","delta_p99_ms" (null when no pair completed). A route row per route
 * whose requests to the pool were mirrored ("" = requests on no route); classes only
 * those with counts; mismatches the last 50 over every row, oldest first.
 */
void mirrorjson_report(struct sbuf *o, const struct model *m, unsigned pi);

/* "[...]": the report of every pool that mirrors now or has mirrored. */
void mirrorjson_list(struct sbuf *o, const struct model *m);

/* The same report as text lines (the reply of `mirror report POOL`). */
void mirrorjson_text(struct sbuf *o, const struct model *m, unsigned pi);

/* Whether pool pi mirrors now or has mirrored (a report has something to say). */
bool mirrorjson_has(const struct model *m, unsigned pi);

#endif
