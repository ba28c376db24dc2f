/*
 * trace_context.c - W3C Trace Context for the requests veer forwards, so
 * that a request can be followed from veer's access log into the
 * backends' traces:
 *   - one valid traceparent: forwarded unchanged, and its tracestate
 *     fields with it, as they came. veer records no spans, so it has no
 *     parent-id of its own to put in: it is a forwarding participant in
 *     the specification's terms ("Processing Model in Forwarding Mode"),
 *     and the backend's span is the child of the client's;
 *   - none: veer starts a trace, a new traceparent with a random trace-id
 *     and parent-id and flags 00 (01 with sampled = true), and drops any
 *     tracestate, which without a traceparent belongs to no trace;
 *   - an invalid one, or several (one only is valid): never forwarded.
 *     The trace is restarted as when there is none, and its tracestate
 *     dropped (section 3.3: a vendor that failed to parse traceparent
 *     must not use tracestate).
 * With generate = false veer starts no trace: a valid traceparent still
 * goes through unchanged, an invalid one and its tracestate are still
 * removed, and nothing is added.
 * The trace-id forwarded is the access log's trace_id field.
 *
 * Its keys: trace_context = { generate = true; sampled = false; };
 */
#include "module.h"
#include "routing.h"

#include <errno.h>
#include <string.h>

struct tc_keys {
    bool generate; /* start a trace when the request has no valid traceparent */
    bool sampled;  /* the sampled flag of the traces veer starts */
};

struct tc_conf {
    struct tc_keys trace_context;
};

static const struct conf_field tc_fields[] = {
    CF_BOOL(struct tc_keys, generate),
    CF_BOOL(struct tc_keys, sampled),
    CF_END,
};

static const struct conf_field keys[] = {
    CF_GROUP(struct tc_conf, trace_context, tc_fields),
    CF_END,
};

static void defaults(void *obj)
{
    struct tc_conf *c = obj;

    c->trace_context.generate = true;
    c->trace_context.sampled = false;
}

extern const struct veer_module module_trace_context;

/*
 * Each worker's random source, made by the worker on its first trace (one
 * getrandom call in its life); freed at shutdown, when the workers are gone.
 */
static struct tracectx_rng *rngs[256];

static struct tracectx_rng *worker_rng(const struct txn *t)
{
    unsigned idx = txn_worker_index(t);
    struct tracectx_rng *r;

    if (idx >= ARRAY_SIZE(rngs))
        return NULL;
    if (rngs[idx])
        return rngs[idx];
    r = veer_malloc(sizeof(*r));
    if (tracectx_rng_init(r) != VEER_OK) {
        log_err("trace_context: no random bytes from the kernel: %s", strerror(errno));
        free(r);
        return NULL;
    }
    rngs[idx] = r;
    return r;
}

static void log_trace_id(struct txn *t, const char *id)
{
    struct txn_log *l = txn_log(t);

    if (l == NULL)
        return;
    memcpy(l->trace_id, id, TRACECTX_ID_LEN);
    l->trace_id[TRACECTX_ID_LEN] = '\0';
}

static int on_request_head(struct txn *t)
{
    const struct tc_conf *c = conf_section(txn_conf(t), &module_trace_context.conf);
    const struct tc_keys *k = &c->trace_context;
    struct tracectx tc;
    struct tracectx_rng *r;
    char tp[TRACECTX_LEN + 1];
    const char *v;
    unsigned count;
    size_t n;

    if (txn_request_edit(t, "traceparent", &n))
        return VEER_DECLINED; /* a held request coming back: its trace is started already */
    v = txn_header_count(t, "traceparent", &n, &count);
    if (count == 1 && tracectx_parse(v, n, &tc) == VEER_OK) {
        log_trace_id(t, tc.trace_id);
        return VEER_DECLINED;
    }
    if (count == 0 && !k->generate)
        return VEER_DECLINED; /* no trace, and veer starts none: nothing to do */
    /*
     * The client's traceparent (if any) goes, replaced by a new one or by
     * nothing, and so does its tracestate. The two edits always fit.
     */
    txn_set_request_header(t, "tracestate", NULL, 0);
    if (!k->generate || (r = worker_rng(t)) == NULL) {
        txn_set_request_header(t, "traceparent", NULL, 0);
        return VEER_DECLINED;
    }
    tracectx_new(r, k->sampled, tp);
    txn_set_request_header(t, "traceparent", tp, TRACECTX_LEN);
    log_trace_id(t, tp + 3);
    return VEER_DECLINED;
}

static void on_shutdown(uint64_t deadline_us)
{
    for (unsigned i = 0; i < ARRAY_SIZE(rngs); i++) {
        free(rngs[i]);
        rngs[i] = NULL;
    }
}

const struct veer_module module_trace_context = {
    .name = "trace_context",
    .conf = {.keys = keys, .size = sizeof(struct tc_conf), .defaults = defaults},
    .on_request_head = on_request_head,
    .on_shutdown = on_shutdown,
};
