/*
 * reload.c - re-read the configuration file (SIGHUP, `veerctl reload`) and
 * apply the difference without dropping a connection.
 *
 * The new file is parsed and validated on the control thread, off the data
 * path; an invalid one changes nothing. A valid one is merged into the
 * running model by name: new backends enter PENDING (readiness-gated),
 * backends gone from the file drain and then go away, and a value whose text
 * changed in the file wins while everything else keeps its runtime value
 * (ARCHITECTURE.md, "Precedence"). Listeners on addresses that stay keep
 * their sockets; new ones open, removed ones stop accepting. Workers switch
 * to the new limits and timeouts for requests that start afterwards. It is
 * all published as one snapshot.
 */
#include "control-i.h"
#include "audit.h"
#include "cluster.h"
#include "discovery.h"
#include "health.h"
#include "listener.h"
#include "module.h"
#include "rollout.h"
#include "sbuf.h"
#include "state.h"
#include "tls.h"
#include "veer.h"
#include "worker.h"

#include <string.h>
#include <unistd.h>

/*
 * Configurations replaced by a reload, until nothing can read them any
 * more (ctl_reclaim_confs), the same way snapshots are reclaimed: once
 * every worker has switched to the new configuration (wreconf.left) and
 * announced a snapshot that does not point into the old one (gen), and
 * the model no longer points into it (a pool removed from the file keeps
 * its configuration while it lasts; it is reused by name at a later
 * reload). Nothing else keeps a pointer into a configuration across
 * events: listeners a reload removed drop theirs, health checks are
 * pointed at the new one, and TLS connections hold references on their
 * contexts (OpenSSL's on the SSL_CTX, tls.c's on the listener's contexts)
 * rather than on the configuration.
 *
 * The configuration veer started with stays: the admin socket, the admin
 * HTTP address and fleet mode keep using it until a restart.
 */
struct old_conf {
    struct veer_conf *conf;
    uint64_t gen;          /* first generation of snapshots that do not point into it */
    _Atomic unsigned left; /* workers not switched off it yet */
    bool pinned;           /* the configuration veer started with */
    bool in_use;           /* the model pointed into it before the reload in progress */
    struct old_conf *next;
};

static struct old_conf *old_confs;
static bool reloaded;

static bool model_uses(const struct veer_conf *c);

struct reload_stats {
    unsigned added, removed, changed, pools_added, pools_removed, listeners_added,
        listeners_removed;
};

static bool same_addr(const struct conf_addr *a, const struct conf_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/*
 * Whether the pool's shares as the file states them changed: the shares
 * block itself, or, without one, the weights and groups they derive from.
 */
static bool shares_changed(const struct conf_pool *a, const struct conf_pool *b)
{
    if (a->has_shares != b->has_shares)
        return true;
    if (a->has_shares) {
        if (a->nshares != b->nshares)
            return true;
        for (int i = 0; i < a->nshares; i++)
            if (strcmp(a->shares[i].group, b->shares[i].group) != 0 ||
                a->shares[i].share != b->shares[i].share)
                return true;
        return false;
    }
    if (a->nbackends != b->nbackends || a->ndiscover != b->ndiscover)
        return true;
    for (int i = 0; i < a->ndiscover; i++)
        if (a->discover[i].weight != b->discover[i].weight ||
            strcmp(a->discover[i].group, b->discover[i].group) != 0)
            return true;
    for (int i = 0; i < a->nbackends; i++) {
        const struct conf_backend *x = &a->backends[i], *y = conf_find_backend(b, x->name);

        if (y == NULL || y->weight != x->weight || strcmp(y->group, x->group) != 0)
            return true;
    }
    return false;
}

static bool health_changed(const struct conf_pool *a, const struct conf_pool *b)
{
    const struct conf_health *x = &a->health, *y = &b->health;

    if (a->has_health != b->has_health)
        return true;
    return a->has_health &&
           (strcmp(x->path, y->path) != 0 || x->interval_ms != y->interval_ms ||
            x->timeout_ms != y->timeout_ms || x->rise != y->rise || x->fall != y->fall);
}

static bool strings_differ(const struct conf_strings *x, const struct conf_strings *y)
{
    if (x->n != y->n)
        return true;
    for (int i = 0; i < x->n; i++)
        if (strcmp(x->v[i], y->v[i]) != 0)
            return true;
    return false;
}

/* Whether the pool's mirror block as the file states it changed (added, removed or edited). */
static bool mirror_changed(const struct conf_pool *a, const struct conf_pool *b)
{
    const struct conf_mirror *x = &a->mirror, *y = &b->mirror;

    if (a->has_mirror != b->has_mirror)
        return true;
    return a->has_mirror &&
           (strcmp(x->group, y->group) != 0 || x->percent != y->percent ||
            x->max_body_bytes != y->max_body_bytes || x->max_inflight != y->max_inflight ||
            x->timeout_ms != y->timeout_ms || strings_differ(&x->methods, &y->methods) ||
            strings_differ(&x->headers, &y->headers) || strings_differ(&x->ignore, &y->ignore));
}

/* Backends of the new file: new ones added, kept ones take the values whose text changed. */
static void merge_backends(struct rt_pool *p, int pi, const struct conf_pool *ocp,
                           const struct conf_pool *ncp, struct reload_stats *st)
{
    for (int j = 0; j < ncp->nbackends; j++) {
        const struct conf_backend *nb = &ncp->backends[j], *ob = conf_find_backend(ocp, nb->name);
        int k = model_find_backend(p, nb->name);
        struct rt_backend *rb;
        uint32_t g;

        if (k >= 0 && !same_addr(&p->b[k].be->addr, &nb->addr)) {
            ctl_remove_backend(p, (uint32_t)k); /* a new address is a new backend */
            k = -1;
        }
        if (k < 0) {
            uint32_t i =
                model_add_backend(ctl.model, pi, nb->name, &nb->addr, nb->weight, nb->group);

            if (ncp->has_health)
                health_watch(p->b[i].be, ncp);
            st->added++;
            continue;
        }
        rb = &p->b[k];
        rb->remove_when_drained = false;
        if ((ob == NULL || ob->weight != nb->weight) && rb->weight != nb->weight) {
            rb->weight = nb->weight;
            st->changed++;
        }
        g = model_group(p, nb->group);
        if ((ob == NULL || strcmp(ob->group, nb->group) != 0) && rb->group != g) {
            rb->group = g;
            st->changed++;
        }
    }
    /* Backends the old file had and the new one has not: drain, then remove. */
    for (uint32_t k = 0; ocp && k < p->nb; k++) {
        struct rt_backend *rb = &p->b[k];

        if (conf_find_backend(ncp, rb->be->name) || !conf_find_backend(ocp, rb->be->name) ||
            rb->remove_when_drained)
            continue;
        rb->admin = ADMIN_DRAIN;
        rb->remove_when_drained = true;
        st->removed++;
    }
}

static void merge_pool(int pi, const struct conf_pool *ocp, const struct conf_pool *ncp,
                       struct reload_stats *st)
{
    struct rt_pool *p = &ctl.model->pools[pi];
    unsigned members = st->added + st->removed;
    /* Against what its checks run with now (a pool removed earlier: its last configuration). */
    bool rewatch = health_changed(p->conf, ncp);

    p->conf = ncp;
    p->removed = false;
    if (rewatch)
        for (uint32_t k = 0; k < p->nb; k++)
            health_unwatch(p->b[k].be);
    merge_backends(p, pi, ocp, ncp, st);
    if (st->added + st->removed != members)
        p->members_seq = ++ctl.model->change_seq; /* a rollback does not reach across it */
    if (ocp == NULL || shares_changed(ocp, ncp)) {
        model_reset_shares(p);
        st->changed++;
    }
    if (ocp != NULL && mirror_changed(ocp, ncp) && p->mirror != MIRROR_CONF) {
        /* The mirror block's text changed: the file wins over `mirror P on|off`. */
        free(p->mirror_group);
        p->mirror_group = NULL;
        p->mirror = MIRROR_CONF;
        st->changed++;
    }
    if (p->mirror == MIRROR_ON && model_find_group(p, p->mirror_group) < 0) {
        free(p->mirror_group); /* its group is gone: as configured */
        p->mirror_group = NULL;
        p->mirror = MIRROR_CONF;
    }
    for (uint32_t k = 0; k < p->nb; k++) {
        if (!rewatch)
            health_rebind(p->b[k].be, ncp); /* the configuration they used goes away */
        else if (ncp->has_health)
            health_watch(p->b[k].be, ncp);
        else
            p->b[k].health = HEALTH_READY; /* no checks: admitted */
    }
}

/* Merge every pool of nc into the model; pools gone from the file drain. */
static void merge_model(const struct veer_conf *oc, const struct veer_conf *nc,
                        struct reload_stats *st)
{
    struct model *m = ctl.model;

    for (int j = 0; j < nc->npools; j++) {
        const struct conf_pool *ncp = &nc->pools[j];
        int pi = model_find_pool(m, ncp->name);

        if (pi < 0) {
            pi = model_add_pool(m, ncp);
            for (uint32_t k = 0; ncp->has_health && k < m->pools[pi].nb; k++)
                health_watch(m->pools[pi].b[k].be, ncp);
            st->pools_added++;
            st->added += m->pools[pi].nb;
            continue;
        }
        merge_pool(pi, conf_find_pool(oc, ncp->name), ncp, st);
    }
    for (uint32_t i = 0; i < m->npools; i++) {
        struct rt_pool *p = &m->pools[i];

        if (p->removed || conf_find_pool(nc, p->name))
            continue;
        p->removed = true;
        st->pools_removed++;
        for (uint32_t k = 0; k < p->nb; k++) {
            p->b[k].admin = ADMIN_DRAIN;
            p->b[k].remove_when_drained = true;
        }
    }
}

/*
 * The listener set for the workers: an address that stays keeps its
 * sockets (index into the running config's listeners), a new one gets
 * sockets now. NULL when a new address cannot be bound (nothing changed).
 */
static struct wreconf *plan_listeners(const struct veer_conf *oc, const struct veer_conf *nc,
                                      struct reload_stats *st)
{
    struct wreconf *rc = veer_calloc(1, sizeof(*rc));

    rc->conf = nc;
    rc->n = (unsigned)nc->nlistens;
    rc->l = veer_calloc(rc->n ? rc->n : 1, sizeof(*rc->l));
    for (unsigned j = 0; j < rc->n; j++) {
        const struct conf_listen *nl = &nc->listens[j];

        rc->l[j].keep = -1;
        rc->l[j].lc = nl;
        for (int i = 0; i < oc->nlistens && rc->l[j].keep < 0; i++) {
            bool taken = false;

            /* Each running listener can be kept once (two may share "127.0.0.1:0"). */
            for (unsigned k = 0; k < j; k++)
                taken |= rc->l[k].keep == i;
            if (!taken && strcmp(oc->listens[i].addr.text, nl->addr.text) == 0)
                rc->l[j].keep = i;
        }
        if (rc->l[j].keep >= 0)
            continue;
        rc->l[j].fds = listener_open(nl, ctl.nworkers);
        if (rc->l[j].fds == NULL)
            goto fail;
        st->listeners_added++;
    }
    st->listeners_removed = (unsigned)oc->nlistens + st->listeners_added - rc->n;
    return rc;
fail:
    for (unsigned j = 0; j < rc->n; j++) {
        if (rc->l[j].keep >= 0 || rc->l[j].fds == NULL)
            continue;
        for (unsigned w = 0; w < ctl.nworkers; w++)
            close(rc->l[j].fds[w]);
        free((void *)rc->l[j].fds);
    }
    free(rc->l);
    free(rc);
    return NULL;
}

static void send_reconf(struct wreconf *rc)
{
    if (ctl.nworkers == 0) {
        /* No worker to switch, so none to let it go after switching (wmsg_free): now. */
        for (unsigned j = 0; j < rc->n; j++)
            if (rc->l[j].keep < 0)
                free((void *)rc->l[j].fds);
        free(rc->l);
        free(rc);
        return;
    }
    rc->refs = ctl.nworkers;
    for (unsigned w = 0; w < ctl.nworkers; w++) {
        struct wmsg *m = veer_calloc(1, sizeof(*m));

        m->type = WMSG_RECONF;
        m->reconf = rc;
        worker_send(ctl.workers[w], m);
    }
}

int ctl_reload(const struct audit_peer *peer, char *msg, size_t len)
{
    const struct veer_conf *oc = ctl.conf;
    struct reload_stats st = {0};
    struct veer_conf *nc;
    struct old_conf *keep;
    struct wreconf *rc;
    char err[1024];
    uint64_t gen, t0 = veer_now_us();
    uint32_t npools;

    nc = conf_load(oc->path, err, sizeof(err));
    if (nc && tls_conf_prepare(nc, err, sizeof(err)) != VEER_OK) {
        conf_free(nc);
        nc = NULL; /* a bad certificate keeps the running ones */
    }
    if (nc && module_check_all(oc, nc, err, sizeof(err)) != VEER_OK) {
        conf_free(nc);
        nc = NULL;
    }
    if (nc == NULL) {
        log_err("reload failed, keeping the running configuration: %s", err);
        snprintf(msg, len, "%s", err);
        audit_write(peer ? "operator" : "signal", peer, "reload", err, ctl.model->generation, NULL,
                    NULL);
        return VEER_ERROR;
    }
    if (nc->workers != oc->workers)
        log_warn("reload: workers = %d takes effect at the next restart (running %d)", nc->workers,
                 oc->workers);
    if (strcmp(nc->admin.socket, oc->admin.socket) != 0)
        log_warn("reload: admin.socket %s takes effect at the next restart", nc->admin.socket);
    rc = plan_listeners(oc, nc, &st);
    if (rc == NULL) {
        snprintf(msg, len, "cannot open a new listener (see the log); nothing changed");
        conf_free(nc);
        return VEER_ERROR;
    }
    /* A preflight reads the running configuration's pool and lists: it stops here. */
    rollout_stop_preflights("the configuration was reloaded");
    keep = veer_calloc(1, sizeof(*keep));
    keep->conf = (struct veer_conf *)oc;
    keep->pinned = !reloaded;
    reloaded = true;
    keep->next = old_confs;
    old_confs = keep;
    for (struct old_conf *o = old_confs; o; o = o->next)
        o->in_use = model_uses(o->conf);
    npools = ctl.model->npools;
    merge_model(oc, nc, &st);
    if (ctl.model->npools > npools) {
        /* Pools this reload added get their rollback history too (indexed by pool). */
        ctl.history = veer_realloc(ctl.history, ctl.model->npools * sizeof(*ctl.history));
        memset(ctl.history + npools, 0, (ctl.model->npools - npools) * sizeof(*ctl.history));
    }
    /* A listener may name a pool this reload added: indexes once the model has it. */
    for (unsigned j = 0; j < rc->n; j++)
        rc->l[j].pool = rc->l[j].lc->pool ? model_find_pool(ctl.model, rc->l[j].lc->pool) : -1;
    cluster_reapply(); /* in a fleet, etcd's intent wins over the file */
    ctl.conf = nc;
    ctl.model->conf = nc;
    model_bind_routes(ctl.model);
    discovery_reload(nc); /* its changes go out with this reload's publish */
    module_init_all(nc);
    gen = control_publish();
    /* Snapshots from gen on point into oc only through pools the model still has from it. */
    for (struct old_conf *o = old_confs; o; o = o->next)
        if (o->in_use)
            o->gen = gen;
    atomic_init(&keep->left, ctl.nworkers);
    rc->left = &keep->left;
    /* Drains start against the snapshot that no longer routes to them. */
    ctl_sync_draining_all();
    send_reconf(rc);
    snprintf(msg, len,
             "gen=%llu applied_us=%llu backends_added=%u backends_removed=%u changed=%u "
             "pools_added=%u pools_removed=%u listeners_added=%u listeners_removed=%u",
             (unsigned long long)gen, (unsigned long long)(veer_now_us() - t0), st.added,
             st.removed, st.changed, st.pools_added, st.pools_removed, st.listeners_added,
             st.listeners_removed);
    log_info("reloaded %s: %s", nc->path, msg);
    audit_write(peer ? "operator" : "signal", peer, "reload", "OK", gen, NULL, NULL);
    persist_sync_audit();
    control_save_state();
    return VEER_OK;
}

/* Whether the model (a pool, or the model itself) points into configuration c. */
static bool model_uses(const struct veer_conf *c)
{
    if (ctl.model->conf == c)
        return true;
    for (uint32_t i = 0; i < ctl.model->npools; i++)
        if (ctl.model->pools[i].conf >= c->pools && ctl.model->pools[i].conf < c->pools + c->npools)
            return true;
    return false;
}

void ctl_reclaim_confs(void)
{
    uint64_t seen = routing_min_seen();

    for (struct old_conf **pp = &old_confs; *pp;) {
        struct old_conf *o = *pp;

        if (o->pinned || atomic_load_explicit(&o->left, memory_order_acquire) != 0 ||
            seen < o->gen || model_uses(o->conf)) {
            pp = &o->next;
            continue;
        }
        *pp = o->next;
        conf_free(o->conf);
        free(o);
    }
}

unsigned ctl_old_confs(void)
{
    unsigned n = 0;

    for (const struct old_conf *o = old_confs; o; o = o->next)
        n++;
    return n;
}

void ctl_free_old_confs(void)
{
    while (old_confs) {
        struct old_conf *o = old_confs;

        old_confs = o->next;
        conf_free(o->conf);
        free(o);
    }
    reloaded = false;
}
