/*
 * module.h - request/response modules, compiled in through one static
 * table (modules/meson.build generates it; order is the table order). Core
 * code never calls a module by name: it runs the hooks in order.
 *
 * A hook returns VEER_DECLINED (next module), VEER_DONE (it answered the
 * request itself, e.g. a 503) or VEER_ERROR.
 */
#ifndef VEER_MODULE_H
#define VEER_MODULE_H

#include "conf.h"

#include <stddef.h>
#include <stdint.h>

struct txn;
struct worker;

struct veer_module {
    const char *name;
    /* Once at start (and on reload with the new config); VEER_OK or VEER_ERROR. */
    int (*init)(const struct veer_conf *conf);
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
int module_request_head(struct txn *t);
void module_txn_end(struct txn *t);

/* on_shutdown hooks in order, each with an equal share of what is left of the deadline. */
void module_shutdown_all(uint64_t deadline_us);
void module_reopen_all(void);

/* --- what a hook may look at and do with a transaction --------------------------------- */

/* session.c: the transaction's accessors for modules */

/* Request path (without the query), method name, pool name; not NUL-terminated spans. */
const char *txn_path(const struct txn *t, size_t *len);
const char *txn_method(const struct txn *t, size_t *len);
int txn_pool_index(const struct txn *t);
const struct worker *txn_worker(const struct txn *t);

/*
 * Answer the request from the module: status, extra header lines (each
 * ending in "\r\n", may be NULL), a body with its content type. The hook
 * then returns VEER_DONE.
 */
int txn_respond(struct txn *t, int status, const char *extra_headers, const char *content_type,
                const char *body, size_t body_len);

#endif
