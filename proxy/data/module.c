/*
 * module.c - runs the module hooks in table order, and the accessors
 * through which a module sees a transaction and its worker (module.h):
 * the one place outside the data path's own files that knows struct txn,
 * struct session and struct worker on a module's behalf.
 */
#include "module.h"
#include "session.h"
#include "veer.h"
#include "worker.h"

#include <string.h>
#include <strings.h>

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

int module_check_all(const struct veer_conf *old, const struct veer_conf *conf, char *err,
                     size_t errlen)
{
    for (const struct veer_module *const *m = veer_modules; *m; m++)
        if ((*m)->check && (*m)->check(old, conf, err, errlen) != VEER_OK)
            return VEER_ERROR;
    return VEER_OK;
}

bool module_own_path(const struct veer_conf *conf, const char *path, size_t len)
{
    for (const struct veer_module *const *m = veer_modules; *m; m++)
        if ((*m)->own_path && (*m)->own_path(conf, path, len))
            return true;
    return false;
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

/* --- accessors ------------------------------------------------------------------------- */

const char *txn_header(const struct txn *t, const char *name, size_t *len)
{
    const struct vbuf *in = t->s->in;

    return http_find_header(t->req, in->data + in->start, name, len);
}

const char *txn_header_count(const struct txn *t, const char *name, size_t *len, unsigned *count)
{
    const struct vbuf *in = t->s->in;

    return http_find_header_count(t->req, in->data + in->start, name, len, count);
}

/*
 * Fields a module may not edit: they frame the message or route it. By
 * length first: this runs per edit, on the request path.
 */
static bool edit_forbidden(const char *name)
{
#define F(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *name;
        size_t len;
    } fields[] = {F("host"), F("content-length"), F("transfer-encoding"), F("connection"),
                  F("upgrade")};
#undef F
    size_t n = strlen(name);

    for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
        if (n == fields[i].len && strcasecmp(name, fields[i].name) == 0)
            return true;
    return false;
}

/* Names are the modules' lower-case literals: the same one is mostly the same pointer. */
static struct conf_header *find_edit(const struct txn *t, const char *name)
{
    for (unsigned i = 0; i < t->nedit; i++)
        if (t->edit[i].name == name || strcmp(t->edit[i].name, name) == 0)
            return (struct conf_header *)&t->edit[i];
    return NULL;
}

int txn_set_request_header(struct txn *t, const char *name, const char *value, size_t len)
{
    struct conf_header *e = find_edit(t, name);
    char *copy = NULL;

    if (edit_forbidden(name) ||
        (value && (memchr(value, '\r', len) || memchr(value, '\n', len) || memchr(value, 0, len))))
        return VEER_ERROR;
    if (e == NULL && t->nedit == TXN_EDITS)
        return VEER_ERROR;
    if (value) {
        /* Values are only added: a replaced one's bytes stay taken until the transaction ends. */
        if (len + 1 > (size_t)(TXN_EDIT_BYTES - t->edit_used))
            return VEER_ERROR;
        copy = t->edit_buf + t->edit_used;
        memcpy(copy, value, len);
        copy[len] = '\0';
        t->edit_used += (uint16_t)(len + 1);
    }
    if (e == NULL)
        e = &t->edit[t->nedit++];
    e->name = (char *)name;
    e->value = copy;
    e->line = 0;
    return VEER_OK;
}

const char *txn_request_edit(const struct txn *t, const char *name, size_t *len)
{
    const struct conf_header *e = find_edit(t, name);

    if (e == NULL || e->value == NULL)
        return NULL;
    *len = strlen(e->value);
    return e->value;
}

uint64_t txn_hold(struct txn *t, uint64_t hold_us)
{
    if (t->hold_deadline_us == 0)
        t->hold_deadline_us = veer_now_us() + hold_us;
    return t->hold_deadline_us;
}

struct txn_log *txn_log(const struct txn *t)
{
    return t->log;
}

void txn_set_log(struct txn *t, struct txn_log *log)
{
    t->log = log;
}

void txn_summarize(const struct txn *t, struct txn_summary *out)
{
    out->client = &t->s->peer.sa;
    out->status = t->res_status;
    out->bytes_in = t->bytes_in;
    out->bytes_out = t->bytes_out;
    out->start_us = t->start_us;
    out->upstream_us =
        t->up_start_us && t->up_end_us > t->up_start_us ? t->up_end_us - t->up_start_us : 0;
    out->pool = t->pool;
    out->be = t->be;
}

/* Write the low `digits` hex digits of v at p (no NUL). */
static void hex_digits(char *p, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";

    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        p[i] = hex[v & 15];
}

void txn_new_request_id(const struct txn *t, char *buf, size_t len)
{
    struct worker *w = t->s->w;

    /* "%08x%02x%014llx" without printf's cost: this runs for every request of a mirroring pool. */
    if (len < 25) {
        if (len)
            buf[0] = '\0';
        return;
    }
    hex_digits(buf, w->pid, 8);
    hex_digits(buf + 8, w->idx & 0xff, 2);
    hex_digits(buf + 10, ++w->request_ids, 14);
    buf[24] = '\0';
}

unsigned txn_worker_index(const struct txn *t)
{
    return t->s->w->idx;
}

struct event_base *txn_event_base(const struct txn *t)
{
    return t->s->w->base;
}

const struct routing *txn_routing(const struct txn *t)
{
    return t->s->w->routing;
}

const struct veer_conf *txn_conf(const struct txn *t)
{
    return t->s->w->conf;
}

bool txn_shutting_down(const struct txn *t)
{
    return t->s->w->shutting_down;
}

int txn_listener_pool(const struct txn *t, unsigned i)
{
    const struct worker *w = t->s->w;

    if (i >= w->nlisteners)
        return -2;
    return w->listeners[i]->pool < 0 ? -1 : w->listeners[i]->pool;
}
