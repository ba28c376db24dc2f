/*
 * module.c - runs the module hooks in table order. See module.h.
 */
#include "module.h"
#include "veer.h"

int module_init_all(const struct veer_conf *conf)
{
    for (const struct veer_module *const *m = veer_modules; *m; m++) {
        if ((*m)->init && (*m)->init(conf) != VEER_OK) {
            log_err("module %s failed to start", (*m)->name);
            return VEER_ERROR;
        }
    }
    return VEER_OK;
}

int module_request_head(struct txn *t)
{
    for (const struct veer_module *const *m = veer_modules; *m; m++) {
        int rc;

        if ((*m)->on_request_head == NULL)
            continue;
        rc = (*m)->on_request_head(t);
        if (rc != VEER_DECLINED)
            return rc;
    }
    return VEER_DECLINED;
}

void module_txn_end(struct txn *t)
{
    for (const struct veer_module *const *m = veer_modules; *m; m++)
        if ((*m)->on_txn_end)
            (*m)->on_txn_end(t);
}

void module_reopen_all(void)
{
    for (const struct veer_module *const *m = veer_modules; *m; m++)
        if ((*m)->on_reopen)
            (*m)->on_reopen();
}

void module_shutdown_all(uint64_t deadline_us)
{
    unsigned n = 0, k = 0;

    for (const struct veer_module *const *m = veer_modules; *m; m++)
        if ((*m)->on_shutdown)
            n++;
    for (const struct veer_module *const *m = veer_modules; *m; m++) {
        uint64_t now = veer_now_us(), share;

        if ((*m)->on_shutdown == NULL)
            continue;
        share = deadline_us > now ? (deadline_us - now) / (n - k) : 0;
        (*m)->on_shutdown(now + share);
        k++;
    }
}
