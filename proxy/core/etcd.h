/*
 * etcd.h - a small asynchronous client for etcd's v3 JSON gateway
 * (POST /v3/kv/range, /v3/kv/txn, /v3/lease/..., and the /v3/watch
 * stream) on the control thread's event base, with libevent's HTTP client
 * and jansson. Keys and values are base64 in etcd's JSON; the helpers here
 * take and give plain strings.
 *
 * Endpoints are "http://HOST:PORT" with a numeric host (or localhost): no
 * DNS lookup ever blocks the control thread. A failed request moves on to
 * the next endpoint for the next one.
 */
#ifndef VEER_ETCD_H
#define VEER_ETCD_H

#include <event2/event.h>
#include <jansson.h>
#include <stdint.h>

struct etcd;
struct etcd_watch;

/* A finished request: res is the decoded reply (borrowed), or NULL with err set. */
typedef void (*etcd_done_cb)(void *arg, json_t *res, const char *err);
/* One message of a watch stream ({"result": {...}}), borrowed. */
typedef void (*etcd_watch_cb)(void *arg, json_t *msg);
/* The watch stream ended (etcd went away, or it was cancelled by etcd). */
typedef void (*etcd_watch_end_cb)(void *arg, const char *why);

/* NULL with err set when an endpoint cannot be used. */
struct etcd *etcd_new(struct event_base *base, char *const *endpoints, int n, char *err,
                      size_t len);
/* Drop every connection; no callback runs afterwards. */
void etcd_free(struct etcd *e);

/* POST body (taken) to path ("/v3/kv/range"); cb runs exactly once, later. */
void etcd_post(struct etcd *e, const char *path, json_t *body, int timeout_ms, etcd_done_cb cb,
               void *arg);

/* Open a watch with this create_request (taken); callbacks until it ends or is stopped. */
struct etcd_watch *etcd_watch_start(struct etcd *e, json_t *create_request, etcd_watch_cb cb,
                                    etcd_watch_end_cb end, void *arg);
/* Close it; no callback runs afterwards. Allowed from its own callbacks. NULL is ignored. */
void etcd_watch_stop(struct etcd_watch *w);

/* The endpoint in use ("http://127.0.0.1:2379"). */
const char *etcd_endpoint(const struct etcd *e);

/* base64 of n bytes of s, as a JSON string (new reference). */
json_t *etcd_b64(const char *s, size_t n);
/* Decode a base64 JSON string: malloc'd, NUL-terminated, *n bytes; NULL if not base64. */
char *etcd_unb64(const json_t *v, size_t *n);
/* An int64 that etcd sends as a JSON string ("42"); 0 when absent. */
int64_t etcd_int(const json_t *v);

#endif
