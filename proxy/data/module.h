/*
 * module.h - request/response modules, compiled in through one static
 * table (modules/meson.build generates it; order is the table order). Core
 * code never calls a module by name: it runs the hooks in order.
 *
 * A hook returns VEER_DECLINED (next module), VEER_DONE (it answered the
 * request itself, e.g. a 503) or VEER_ERROR.
 *
 * This header and routing.h (the snapshot) are all a module includes
 * (tests/layers.sh checks it): a module sees a transaction and its worker
 * only through the accessors below, never their structs, so the connection,
 * the transaction and the worker can change without touching a module. For
 * logging, allocation and clocks (veer.h), building text (sbuf.h), the
 * configuration (conf.h) and whole-segment path prefixes (path.h:
 * path_prefix_match, the rule maintenance.allow, the health endpoints and
 * routes share) and W3C trace context (tracectx.h: the traceparent
 * validator, the random source) it gets those headers through this one.
 */
#ifndef VEER_MODULE_H
#define VEER_MODULE_H

#include "conf.h"
#include "path.h"
#include "sbuf.h"
#include "tracectx.h"
#include "veer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct backend;
struct event_base;
struct routing;
struct sockaddr;
struct txn;
struct worker;

struct veer_module {
    const char *name;
    /*
     * The module's configuration keys (conf.h: rows, defaults; keys: NULL
     * when it has none). conf_load parses them with the rest of the file;
     * conf_section(conf, &module_x.conf) is what they parsed to.
     */
    struct conf_section conf;
    /* Once at start (and on reload with the new config); VEER_OK or VEER_ERROR. */
    int (*init)(const struct veer_conf *conf);
    /*
     * A reload is about to apply conf (old is the running one): VEER_ERROR,
     * with why in err, when init would fail on it, so that the reload is
     * refused whole. Control thread, before anything of it is applied.
     */
    int (*check)(const struct veer_conf *old, const struct veer_conf *conf, char *err,
                 size_t errlen);
    /*
     * Is path (not NUL-terminated) one of the module's own endpoints,
     * which maintenance never closes (answered or, when turned off,
     * proxied)? Worker thread.
     */
    bool (*own_path)(const struct veer_conf *conf, const char *path, size_t len);
    /* A request head arrived, before a backend is picked. Worker thread. */
    int (*on_request_head)(struct txn *t);
    /* A transaction ended (response sent or connection lost). Worker thread. */
    void (*on_txn_end)(struct txn *t);
    /* Graceful shutdown: flush and finish by deadline_us (monotonic). Control thread. */
    void (*on_shutdown)(uint64_t deadline_us);
    /* SIGUSR1: reopen log files (logrotate). Control thread. */
    void (*on_reopen)(void);
};

/* The table, NULL-terminated (generated). */
extern const struct veer_module *const veer_modules[];

int module_init_all(const struct veer_conf *conf);

/* check hooks in order; the first VEER_ERROR stops (its reason in err). */
int module_check_all(const struct veer_conf *old, const struct veer_conf *conf, char *err,
                     size_t errlen);

/* Whether any module's own_path hook claims path. */
bool module_own_path(const struct veer_conf *conf, const char *path, size_t len);

int module_request_head(struct txn *t);
void module_txn_end(struct txn *t);

/* on_shutdown hooks in order, each with an equal share of what is left of the deadline. */
void module_shutdown_all(uint64_t deadline_us);
void module_reopen_all(void);

/* --- what a hook may look at and do with a transaction --------------------------------- */

/* txn.c: the transaction's accessors for modules */

/*
 * Request path (without the query; canonical, path.h) and method name, not NUL-terminated
 * spans of the request head: valid in on_request_head only (the head leaves
 * the buffer once it is forwarded). The request's pool: an index into the
 * snapshot's pools.
 */
const char *txn_path(const struct txn *t, size_t *len);
const char *txn_method(const struct txn *t, size_t *len);
int txn_pool_index(const struct txn *t);
/*
 * The name of the route the request matched (issue 17), "" when none did
 * (the listener's pool). Valid in on_request_head only, as txn_path.
 */
const char *txn_route_name(const struct txn *t);
/* The index of that route in the snapshot's route table (routing.h), -1 when none. */
int txn_route_index(const struct txn *t);
/* The worker, opaque to a module (its accessors are below). */
const struct worker *txn_worker(const struct txn *t);

/* module.c: the accessors modules use besides those above */

/*
 * The value of request header NAME (lower case), not NUL-terminated, or NULL
 * when absent; the first one when repeated. In on_request_head only, as
 * txn_path.
 */
const char *txn_header(const struct txn *t, const char *name, size_t *len);

/*
 * As txn_header, over the fields veer forwards (not hop-by-hop ones), and
 * in *count how many fields have that name: a field that must appear once
 * (traceparent) is told from a repeated one. In on_request_head only.
 */
const char *txn_header_count(const struct txn *t, const char *name, size_t *len, unsigned *count);

/*
 * Edit the request head veer forwards (on_request_head): every field of
 * the client's named `name` is left out and, when value is not NULL, one
 * "name: value" field (value: len bytes, copied) is sent in their place,
 * after the client's fields -- the mechanism of a route's
 * request_headers, whose set and remove win over a module's edit of the
 * same name. name must outlive the transaction (a literal, lower case). A
 * second edit of the same name replaces the first. veer's own forwarding
 * fields (X-Forwarded-For/-Proto, Via, X-Request-Id) are not a module's to
 * edit: they are added after, as they would be. VEER_ERROR, and no change,
 * for a field that frames the message or routes it (host, content-length,
 * transfer-encoding, connection, upgrade), a value with CR, LF or NUL, or
 * when the transaction's room for edits is full (txn.h: TXN_EDITS fields,
 * TXN_EDIT_BYTES bytes of values).
 */
int txn_set_request_header(struct txn *t, const char *name, const char *value, size_t len);

/*
 * The value an edit gave `name` (NUL-terminated, *len its length), or NULL
 * when there is none or it only removes: a module tells a held request
 * coming back to on_request_head from a new one.
 */
const char *txn_request_edit(const struct txn *t, const char *name, size_t *len);

/*
 * Hold the request (on_request_head returns VEER_AGAIN): the first call
 * sets its deadline hold_us from now, later calls (the request coming back
 * from the hold queue) keep it. Returns the deadline (monotonic us); the
 * hook answers once veer_now_us() reaches it.
 */
uint64_t txn_hold(struct txn *t, uint64_t hold_us);

/* What the access log needs of a request after its head left the buffer. */
struct txn_log {
    char method[16];
    char path[512];
    char request_id[64];
    char route[64];    /* the route's name, "" for none */
    char trace_id[33]; /* W3C trace-id forwarded (trace_context), "" for none */
    bool id_generated; /* veer made it: forwarded upstream as X-Request-Id */
    uint64_t generation;
};

/*
 * The transaction's access-log record, NULL until set. txn_set_log hands
 * it a record from veer_calloc; the transaction frees it when it ends.
 */
struct txn_log *txn_log(const struct txn *t);
void txn_set_log(struct txn *t, struct txn_log *log);

/* What an ended transaction did, in one call (on_txn_end). */
struct txn_summary {
    const struct sockaddr *client; /* the client's address, AF_INET or AF_INET6 */
    int status;                    /* sent to the client; 0 when none was */
    uint64_t bytes_in, bytes_out;  /* from and to the client, this request */
    uint64_t start_us;             /* when the request began (monotonic) */
    uint64_t upstream_us;          /* first byte sent upstream to response complete; 0: none */
    int pool;                      /* index into the snapshot's pools (may be out of range) */
    const struct backend *be;      /* the backend picked, or NULL */
};

void txn_summarize(const struct txn *t, struct txn_summary *out);

/* --- the worker a transaction runs on ------------------------------------------------- */

/*
 * A new request id into buf (24 hex digits and a NUL: len >= 25): the
 * process, the worker and a counter of the worker's, so ids are unique
 * across workers and processes without a shared counter or a syscall.
 */
void txn_new_request_id(const struct txn *t, char *buf, size_t len);

/* Index of the worker (0 .. workers - 1) and its event loop, for a module's per-worker timer. */
unsigned txn_worker_index(const struct txn *t);
struct event_base *txn_event_base(const struct txn *t);

/* The snapshot the worker routes with and the configuration it runs. */
const struct routing *txn_routing(const struct txn *t);
const struct veer_conf *txn_conf(const struct txn *t);

/* veer is shutting down (the worker stopped accepting). */
bool txn_shutting_down(const struct txn *t);

/*
 * The pool of the worker's listener i (an index into the snapshot's pools):
 * -1 when it has none (routes only), -2 past the last.
 */
int txn_listener_pool(const struct txn *t, unsigned i);

/* txn.c */

/*
 * Answer the request from the module: status, extra header lines (each
 * ending in "\r\n", may be NULL), a body with its content type. The hook
 * then returns VEER_DONE.
 */
int txn_respond(struct txn *t, int status, const char *extra_headers, const char *content_type,
                const char *body, size_t body_len);

#endif
