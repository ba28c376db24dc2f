/*
 * mirror.h - shadow traffic (issue 19): a sample of the requests is copied,
 * as it streams to its backend, to the mirror group of its pool (or route),
 * and the two answers are compared.
 *
 * A mirrored request is two transactions. The primary is the client's, as
 * always; the shadow is a second transaction whose client side is a struct
 * mirror: its request buffer is a copy of the head veer sent the primary
 * and of each body byte as it is framed (mirror_tee), its "client" takes
 * the response and keeps only a summary (status, compared headers, body
 * length and SHA-256, latency). The primary never waits for the shadow:
 * nothing of the shadow is on the primary's path but the copy, which is
 * bounded (max_body_bytes) and dropped, not waited for, when over.
 *
 * The pair is judged once both ended (or the shadow timed out), counted in
 * the site of the request's pool and route (mirrorstat.h), and a
 * difference is kept for the report.
 */
#ifndef VEER_MIRROR_H
#define VEER_MIRROR_H

#include "http.h"
#include "txn.h"

#include <stddef.h>

struct worker;

/*
 * route(), before the head for the backend is built: whether t is to be
 * mirrored (its pool or route mirrors, the method is listed, the request id
 * samples in). Returns the request id when so (copied into idbuf, of idlen
 * bytes, cut to fit), else NULL; a request without one gets one (set as
 * fi->request_id too, so primary and shadow carry the same X-Request-Id).
 */
const char *mirror_sample(struct txn *t, struct http_fwd_info *fi, char *idbuf, size_t idlen);

/*
 * route(), once the head is built and its bytes left the client buffer
 * (the body framed so far is at in->start): start the shadow, or count
 * the mirror dropped (no room, body too large) or failed (no backend).
 */
void mirror_begin(struct txn *t, const char *request_id);

/* The client side framed `len` more request bytes at `data` (len may be 0 at the end). */
void mirror_tee(struct txn *t, const char *data, size_t len);

/* The primary's final response head is in (at t->rin->start). */
void mirror_primary_head(struct txn *t);

/* The primary ends (txn_free): its summary goes to the pair. */
void mirror_primary_end(struct txn *t);

/* Free mirrors whose pair was judged (the worker's reap, after the send phase). */
void mirror_reap(struct worker *w);

/* Worker exit: end every shadow at once, uncounted; then (after the reap) free the cache. */
void mirror_abort_all(struct worker *w);
void mirror_cache_destroy(struct worker *w);

#endif
