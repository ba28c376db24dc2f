/*
 * discjson.h - DNS discovery as operators see it: the JSON object of one
 * discover entry, which `show discovery --json` lists under "discovery" and
 * /status does too. Control thread (it reads the model and discovery.c).
 */
#ifndef VEER_DISCJSON_H
#define VEER_DISCJSON_H

struct model;
struct sbuf;

/*
 * Append entry i (i < discovery_count()) as one JSON object:
 *   {"pool":"api","name":"api","kind":"dns","query":"api.internal:8080","group":"blue",
 *    "addresses":[{"backend":"api-127.0.0.2:8080","address":"127.0.0.2:8080","weight":100,
 *                  "state":"READY"}],
 *    "draining":["api-127.0.0.3:8080"],"ttl_s":30,"next_resolution_ms":850,
 *    "last_success":1765140000.123,"failing":false,"last_error":null,"last_error_at":null,
 *    "errors":0,"resolutions":12,"unconfirmed_empty":0}
 * addresses is the last good answer, each with its backend's state now ("absent" when a
 * backend of another origin holds the name); draining lists the backends whose address
 * left DNS and that are still draining; ttl_s is null before the first answer with
 * records, next_resolution_ms null while one is under way; times are unix seconds.
 */
void discjson_entry(struct sbuf *o, const struct model *m, unsigned i);

/* The whole list, as "[...]". */
void discjson_list(struct sbuf *o, const struct model *m);

#endif
