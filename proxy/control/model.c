/*
 * model.c - the traffic model the control thread edits (pools, groups,
 * shares, weights, states) and building a routing snapshot from it.
 * Publishing and reclaiming snapshots is core/routing.c's job.
 */
#include "model.h"
#include "mirrorstat.h"
#include "veer.h"

#include <string.h>
#include <strings.h>

/* Make room for one more element in *v (n used of *cap, each size bytes), doubling. */
static void *grow_array(void *v, uint32_t n, uint32_t *cap, size_t size)
{
    if (n < *cap)
        return v;
    *cap = *cap ? *cap * 2 : 8;
    return veer_realloc(v, (size_t)*cap * size);
}

static uint32_t group_index(struct rt_pool *p, const char *name)
{
    uintptr_t *i = hmap_find_str(&p->g_byname, name);

    if (i != NULL)
        return (uint32_t)*i;
    p->g = grow_array(p->g, p->ng, &p->cap_g, sizeof(*p->g));
    memset(&p->g[p->ng], 0, sizeof(p->g[p->ng])); /* its rates too, until stats' first tick */
    p->g[p->ng].name = veer_strdup(name);
    hmap_insert_str(&p->g_byname, p->g[p->ng].name, p->ng);
    return p->ng++;
}

uint32_t model_group(struct rt_pool *p, const char *name)
{
    return group_index(p, name);
}

/*
 * Shares at config load: the pool's `shares` when given, else each group's
 * configured weight as a percent of the pool's, rounded by largest
 * remainder so they sum to exactly 100.
 */
static void initial_shares(struct rt_pool *p, const struct conf_pool *cp)
{
    int64_t total = 0, sum = 0, *gw;

    if (p->ng == 0)
        return;
    if (cp->has_shares) {
        for (int i = 0; i < cp->nshares; i++)
            p->g[group_index(p, cp->shares[i].group)].share = cp->shares[i].share;
        return;
    }
    gw = veer_calloc(p->ng, sizeof(*gw));
    for (uint32_t i = 0; i < p->nb; i++) {
        if (p->b[i].disc_id)
            continue; /* its entry counts instead, below */
        gw[p->b[i].group] += p->b[i].weight;
        total += p->b[i].weight;
    }
    /* A discover entry counts as one backend of its weight (conf.c's share check agrees). */
    for (int i = 0; i < cp->ndiscover; i++) {
        gw[group_index(p, cp->discover[i].group)] += cp->discover[i].weight;
        total += cp->discover[i].weight;
    }
    if (total == 0) {
        p->g[0].share = 100;
        free(gw);
        return;
    }
    for (uint32_t g = 0; g < p->ng; g++) {
        p->g[g].share = (int)(gw[g] * 100 / total);
        sum += p->g[g].share;
    }
    while (sum < 100) {
        /* Largest remainder first; ties to the earlier group. */
        uint32_t best = 0;
        int64_t best_rem = -1;

        for (uint32_t g = 0; g < p->ng; g++) {
            int64_t rem = gw[g] * 100 - (int64_t)p->g[g].share * total;

            if (rem > best_rem) {
                best_rem = rem;
                best = g;
            }
        }
        p->g[best].share++;
        gw[best] = -1000000000; /* one extra point per group at most */
        sum++;
    }
    free(gw);
}

/* Fill pool slot i of m from its config: backends as the config says, shares from it. */
static void pool_from_conf(struct model *m, uint32_t i, const struct conf_pool *cp)
{
    struct rt_pool *p = &m->pools[i];

    memset(p, 0, sizeof(*p));
    p->canary = -1;
    p->name = veer_strdup(cp->name);
    p->conf = cp;
    for (int j = 0; j < cp->nbackends; j++)
        model_add_backend(m, (int)i, cp->backends[j].name, &cp->backends[j].addr,
                          cp->backends[j].weight, cp->backends[j].group);
    model_reset_shares(p);
}

void model_reset_shares(struct rt_pool *p)
{
    const struct conf_pool *cp = p->conf;

    if (cp->has_shares)
        for (int s = 0; s < cp->nshares; s++)
            group_index(p, cp->shares[s].group);
    for (int d = 0; d < cp->ndiscover; d++)
        group_index(p, cp->discover[d].group);
    for (uint32_t g = 0; g < p->ng; g++)
        p->g[g].share = 0;
    initial_shares(p, cp);
}

int model_add_pool(struct model *m, const struct conf_pool *cp)
{
    m->pools = veer_realloc(m->pools, (m->npools + 1) * sizeof(*m->pools));
    pool_from_conf(m, m->npools, cp);
    return (int)m->npools++;
}

struct model *model_from_conf(const struct veer_conf *conf)
{
    struct model *m = veer_calloc(1, sizeof(*m));

    m->conf = conf;
    m->generation = 1;
    for (int i = 0; i < conf->npools; i++)
        model_add_pool(m, &conf->pools[i]);
    model_bind_routes(m);
    return m;
}

/* The metric slot of a route name: the one it had, or the next. */
static uint32_t route_slot(struct model *m, const char *name)
{
    uintptr_t *v = hmap_find_str(&m->slot_byname, name);

    if (v)
        return (uint32_t)(*v - 1);
    if (m->nslots == m->cap_slots) {
        m->cap_slots = m->cap_slots ? m->cap_slots * 2 : 16;
        m->slot_names = veer_realloc(m->slot_names, m->cap_slots * sizeof(*m->slot_names));
    }
    m->slot_names[m->nslots] = veer_strdup(name);
    hmap_insert_str(&m->slot_byname, m->slot_names[m->nslots], m->nslots + 1);
    return m->nslots++;
}

static void route_free(struct rt_route *r)
{
    free(r->name);
    free(r->conf_pool);
    for (unsigned k = 0; k < r->nhistory; k++)
        free(r->history[k]);
    free(r->ring); /* one allocation (stats.c) */
}

void model_bind_routes(struct model *m)
{
    const struct veer_conf *c = m->conf;
    struct rt_route *old = m->routes;
    uint32_t nold = m->nroutes;
    struct hmap old_byname = m->route_byname;

    m->nroutes = (uint32_t)c->nroutes;
    m->routes = veer_calloc(m->nroutes ? m->nroutes : 1, sizeof(*m->routes));
    memset(&m->route_byname, 0, sizeof(m->route_byname));
    for (uint32_t i = 0; i < m->nroutes; i++) {
        const struct conf_route *cr = &c->routes[i];
        struct rt_route *r = &m->routes[i];
        uintptr_t *v = hmap_find_str(&old_byname, cr->name);

        if (v) {
            struct rt_route *o = &old[*v - 1];

            *r = *o;                   /* maintenance, history, rate, slot and a route set's pool */
            *o = (struct rt_route){0}; /* its strings are r's now */
            if (strcmp(r->conf_pool, cr->pool) != 0 || r->pool < 0 || m->pools[r->pool].removed) {
                /* The operator edited the route's pool in the file: the file wins. */
                free(r->conf_pool);
                r->conf_pool = veer_strdup(cr->pool);
                r->pool = model_find_pool(m, cr->pool);
            }
        } else {
            r->name = veer_strdup(cr->name);
            r->conf_pool = veer_strdup(cr->pool);
            r->pool = model_find_pool(m, cr->pool);
            r->slot = route_slot(m, cr->name);
        }
        hmap_insert_str(&m->route_byname, r->name, i + 1);
    }
    for (uint32_t i = 0; i < nold; i++)
        route_free(&old[i]);
    free(old);
    hmap_free(&old_byname);
}

int model_find_route(const struct model *m, const char *name)
{
    uintptr_t *v = hmap_find_str(&m->route_byname, name);

    return v ? (int)(*v - 1) : -1;
}

void model_free(struct model *m)
{
    if (m == NULL)
        return;
    for (uint32_t i = 0; i < m->npools; i++) {
        struct rt_pool *p = &m->pools[i];

        for (uint32_t j = 0; j < p->nb; j++)
            backend_destroy(p->b[j].be);
        for (uint32_t g = 0; g < p->ng; g++) {
            free(p->g[g].name);
            free(p->g[g].ring); /* one allocation (stats.c) */
        }
        free(p->b);
        free(p->g);
        hmap_free(&p->b_byname);
        hmap_free(&p->g_byname);
        free(p->name);
        free(p->rollout);
        free(p->mirror_group);
    }
    free(m->pools);
    for (uint32_t i = 0; i < m->nroutes; i++)
        route_free(&m->routes[i]);
    free(m->routes);
    hmap_free(&m->route_byname);
    for (uint32_t i = 0; i < m->nslots; i++)
        free(m->slot_names[i]);
    free(m->slot_names);
    hmap_free(&m->slot_byname);
    free(m);
}

uint32_t model_add_backend(struct model *m, int pi, const char *name, const struct conf_addr *addr,
                           int weight, const char *group)
{
    struct rt_pool *p = &m->pools[pi];
    struct rt_backend *b;
    uint32_t g = model_group(p, group);

    p->b = grow_array(p->b, p->nb, &p->cap_b, sizeof(*p->b));
    b = &p->b[p->nb];
    memset(b, 0, sizeof(*b));
    b->be = backend_create(name, addr);
    hmap_insert_str(&p->b_byname, b->be->name, (uintptr_t)b->be);
    b->be->pool = pi;
    b->be->index = p->nb;
    b->weight = weight;
    b->group = g;
    b->admin = ADMIN_READY;
    b->factor = 1.0;
    b->health = p->conf->has_health ? HEALTH_PENDING : HEALTH_READY;
    return p->nb++;
}

struct backend *model_del_backend(struct model *m, int pi, uint32_t i)
{
    struct rt_pool *p = &m->pools[pi];
    struct backend *be = p->b[i].be;

    hmap_remove_str(&p->b_byname, be->name);
    memmove(&p->b[i], &p->b[i + 1], (p->nb - i - 1) * sizeof(*p->b));
    p->nb--;
    for (uint32_t j = i; j < p->nb; j++)
        p->b[j].be->index = j;
    be->pool = -1;
    return be;
}

uint32_t model_del_backends(struct model *m, int pi, bool (*gone)(const struct rt_backend *b),
                            struct backend **out)
{
    struct rt_pool *p = &m->pools[pi];
    uint32_t k = 0, n = 0;

    for (uint32_t i = 0; i < p->nb; i++) {
        if (gone(&p->b[i])) {
            hmap_remove_str(&p->b_byname, p->b[i].be->name);
            p->b[i].be->pool = -1;
            out[n++] = p->b[i].be;
            continue;
        }
        if (k != i)
            p->b[k] = p->b[i];
        p->b[k].be->index = k;
        k++;
    }
    p->nb = k;
    return n;
}

int model_find_pool(const struct model *m, const char *name)
{
    for (uint32_t i = 0; i < m->npools; i++)
        if (strcmp(m->pools[i].name, name) == 0)
            return (int)i;
    return -1;
}

enum backend_state model_state(const struct rt_pool *p, uint32_t i)
{
    const struct rt_backend *b = &p->b[i];

    if (b->gone)
        return b->drained ? BE_DRAINED : BE_DRAINING;
    switch (b->admin) {
    case ADMIN_MAINT:
        return BE_MAINT;
    case ADMIN_DRAIN:
        return b->drained ? BE_DRAINED : BE_DRAINING;
    default:
        break;
    }
    switch (b->health) {
    case HEALTH_PENDING:
        return BE_PENDING;
    case HEALTH_DOWN:
        return BE_DOWN;
    default:
        return BE_READY;
    }
}

/* Whether backend i of p may take requests, its group's share aside. */
static bool backend_serves(const struct rt_pool *p, uint32_t i)
{
    const struct rt_backend *b = &p->b[i];

    return b->admin == ADMIN_READY && !b->gone && b->health == HEALTH_READY && b->weight > 0 &&
           b->breaker != BREAKER_OPEN;
}

bool model_eligible(const struct rt_pool *p, uint32_t i)
{
    return backend_serves(p, i) && p->g[p->b[i].group].share > 0;
}

int model_find_backend(const struct rt_pool *p, const char *name)
{
    uintptr_t *v = hmap_find_str(&p->b_byname, name);

    return v ? (int)((const struct backend *)*v)->index : -1;
}

int model_find_group(const struct rt_pool *p, const char *name)
{
    uintptr_t *v = hmap_find_str(&p->g_byname, name);

    return v ? (int)*v : -1;
}

/*
 * A backend's weight as routing uses it: the configured weight scaled by
 * its factor (slow start ramp, half-open trial), in hundredths so a
 * reduced weight keeps its precision; never 0 for an eligible backend.
 */
static int64_t routing_weight(const struct rt_backend *b)
{
    int64_t w = (int64_t)((double)b->weight * 100.0 * (b->factor > 0 ? b->factor : 1.0) + 0.5);

    return w > 0 ? w : 1;
}

/* Sum of the weights of group g's eligible backends. */
static int64_t group_weight(const struct rt_pool *p, uint32_t g)
{
    int64_t sum = 0;

    for (uint32_t i = 0; i < p->nb; i++)
        if (p->b[i].group == g && model_eligible(p, i))
            sum += routing_weight(&p->b[i]);
    return sum;
}

/* The same for every group at once, in one pass: a new array by group (at least 1 long). */
static int64_t *group_weights(const struct rt_pool *p)
{
    int64_t *gw = veer_calloc(p->ng ? p->ng : 1, sizeof(*gw));

    for (uint32_t i = 0; i < p->nb; i++)
        if (model_eligible(p, i))
            gw[p->b[i].group] += routing_weight(&p->b[i]);
    return gw;
}

static double effective_weight(const struct rt_pool *p, uint32_t i, int64_t gw)
{
    return (double)p->g[p->b[i].group].share * (double)routing_weight(&p->b[i]) / (double)gw;
}

double model_effective_weight(const struct rt_pool *p, uint32_t i)
{
    if (!model_eligible(p, i))
        return 0;
    return effective_weight(p, i, group_weight(p, p->b[i].group));
}

double *model_effective_weights(const struct rt_pool *p)
{
    double *w = veer_calloc(p->nb ? p->nb : 1, sizeof(*w));
    int64_t *gw = group_weights(p);

    for (uint32_t i = 0; i < p->nb; i++)
        if (model_eligible(p, i))
            w[i] = effective_weight(p, i, gw[p->b[i].group]);
    free(gw);
    return w;
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;

        a = b;
        b = t;
    }
    return a;
}

/* Above this, effective weights are rounded to a fixed scale instead. */
#define EXACT_SCALE_MAX 1000000u
#define ROUNDED_SCALE   1000000u

/*
 * Integer effective weights for one pool, exact when possible: with L the
 * lcm of the groups' eligible weight sums, share x weight x L / sum is an
 * integer. When L would be too large, a fixed scale is used and every
 * eligible backend keeps at least 1, so rounding never zeroes a backend.
 */
static void pool_weights(const struct rt_pool *p, struct snap_pool *sp)
{
    int64_t *gw = group_weights(p);
    uint64_t lcm = 1, g = 0;
    uint32_t n = 0;

    for (uint32_t k = 0; k < p->ng; k++) {
        if (gw[k] > 0 && lcm <= EXACT_SCALE_MAX)
            lcm = lcm / gcd64(lcm, (uint64_t)gw[k]) * (uint64_t)gw[k];
    }
    if (lcm > EXACT_SCALE_MAX)
        lcm = 0;
    sp->b = veer_calloc(p->nb ? p->nb : 1, sizeof(*sp->b));
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];
        uint64_t w;

        if (!model_eligible(p, i))
            continue;
        if (lcm)
            w = (uint64_t)p->g[b->group].share * (uint64_t)routing_weight(b) *
                (lcm / (uint64_t)gw[b->group]);
        else
            w = (uint64_t)((double)p->g[b->group].share * (double)routing_weight(b) *
                           ROUNDED_SCALE / (double)gw[b->group]);
        if (w == 0)
            w = 1;
        sp->b[n].be = b->be;
        sp->b[n].group = b->group;
        sp->b[n].weight = w;
        g = gcd64(g, w);
        n++;
    }
    for (uint32_t i = 0; i < n && g > 1; i++)
        sp->b[i].weight /= g;
    sp->n = n;
    free(gw);
}

/*
 * Per group, the same eligible backends and weights as the pool's: what a
 * request already bound to a group (sticky cohort, override header) is
 * balanced over. One pass to count each group's backends, one to place
 * them, in the pool's order.
 */
static void group_views(const struct rt_pool *p, struct snap_pool *sp)
{
    uint32_t *count = veer_calloc(p->ng + 1, sizeof(*count));

    sp->ng = p->ng;
    sp->share = veer_calloc(p->ng + 1, sizeof(*sp->share));
    sp->groups = veer_calloc(p->ng + 1, sizeof(*sp->groups));
    for (uint32_t i = 0; i < sp->n; i++)
        count[sp->b[i].group]++;
    for (uint32_t g = 0; g < p->ng; g++) {
        struct snap_pool *v = &sp->groups[g];

        sp->share[g] = p->g[g].share;
        *v = *sp;
        v->groups = NULL;
        v->share = NULL;
        v->n = 0;
        v->b = veer_calloc(count[g] + 1, sizeof(*v->b));
    }
    for (uint32_t i = 0; i < sp->n; i++) {
        struct snap_pool *v = &sp->groups[sp->b[i].group];

        v->b[v->n++] = sp->b[i];
    }
    free(count);
}

/* --- shadow traffic (issue 19) ------------------------------------------ */

static char *safe_methods[] = {"GET", "HEAD", "OPTIONS"};

/* The limits of `mirror P on` for a pool whose config has no mirror. */
static const struct conf_mirror mirror_defaults = {
    .percent = 100,
    .max_body_bytes = 65536,
    .max_inflight = 256,
    .timeout_ms = 2000,
    .methods = {safe_methods, 3},
};

static bool in_strings(const struct conf_strings *l, const char *v)
{
    for (int i = 0; i < l->n; i++)
        if (strcasecmp(l->v[i], v) == 0)
            return true;
    return false;
}

/* Add name to the compared headers unless ignored, present, or out of room. */
static void cmp_add(char *cmp, size_t *used, const struct conf_mirror *c, const char *name)
{
    size_t n = strlen(name);

    if (in_strings(&c->ignore, name) || *used + n + 2 > MIRROR_CMP_BYTES)
        return;
    for (const char *h = cmp; *h; h += strlen(h) + 1)
        if (strcasecmp(h, name) == 0)
            return;
    memcpy(cmp + *used, name, n + 1);
    *used += n + 1;
    cmp[*used] = '\0';
}

/*
 * The mirror group's backends that may take requests, whatever its share,
 * with their routing weights reduced by their gcd: the shadow's balance.
 */
static void mirror_view(const struct rt_pool *p, int g, struct snap_pool *v)
{
    uint64_t d = 0;

    v->name = p->name;
    v->conf = p->conf;
    v->balance = p->conf->balance;
    v->canary = -1;
    v->b = veer_calloc(p->nb + 1, sizeof(*v->b));
    for (uint32_t i = 0; g >= 0 && i < p->nb; i++) {
        if (p->b[i].group != (uint32_t)g || !backend_serves(p, i))
            continue;
        v->b[v->n].be = p->b[i].be;
        v->b[v->n].group = (uint32_t)g;
        v->b[v->n].weight = (uint64_t)routing_weight(&p->b[i]);
        d = gcd64(d, v->b[v->n].weight);
        v->n++;
    }
    for (uint32_t i = 0; i < v->n && d > 1; i++)
        v->b[i].weight /= d;
}

static const struct snap_mirror *add_mirror(const struct model *m, struct routing *r, uint32_t pool,
                                            const struct conf_mirror *c, const char *group,
                                            double percent)
{
    const struct rt_pool *p = &m->pools[pool];
    struct snap_mirror *sm = &r->mirrors[r->nmirrors];
    int g = model_find_group(p, group);
    size_t used = 0;

    sm->id = r->nmirrors++;
    sm->conf = c;
    sm->pool = (int)pool;
    sm->group = g >= 0 ? p->g[g].name : NULL; /* lives as long as the model */
    sm->threshold = (uint32_t)(percent * 100 + 0.5);
    mirror_view(p, g, &sm->view);
    cmp_add(sm->cmp, &used, c, "content-type");
    for (int i = 0; i < c->headers.n; i++)
        cmp_add(sm->cmp, &used, c, c->headers.v[i]);
    return sm;
}

bool model_mirror(const struct rt_pool *p, const char **group, double *percent)
{
    if (p->shadow_on && p->shadow_group < p->ng) {
        *group = p->g[p->shadow_group].name; /* a rollout's shadow phase */
        *percent = p->shadow_percent;
        return true;
    }
    if (p->mirror == MIRROR_ON) {
        *group = p->mirror_group;
        *percent = p->mirror_percent;
        return true;
    }
    if (p->mirror == MIRROR_OFF || !p->conf->has_mirror)
        return false;
    *group = p->conf->mirror.group;
    *percent = p->conf->mirror.percent;
    return true;
}

/* The mirror of pool i's requests on no route, as the config and the operator set it, or NULL. */
static const struct snap_mirror *pool_mirror(const struct model *m, struct routing *r, uint32_t i)
{
    const struct rt_pool *p = &m->pools[i];
    const struct conf_pool *cp = p->conf;

    if (p->shadow_on && p->shadow_group < p->ng)
        return add_mirror(m, r, i, cp->has_mirror ? &cp->mirror : &mirror_defaults,
                          p->g[p->shadow_group].name, p->shadow_percent);
    if (p->mirror == MIRROR_OFF)
        return NULL;
    if (p->mirror == MIRROR_ON)
        return add_mirror(m, r, i, cp->has_mirror ? &cp->mirror : &mirror_defaults, p->mirror_group,
                          p->mirror_percent);
    if (!cp->has_mirror)
        return NULL;
    return add_mirror(m, r, i, &cp->mirror, cp->mirror.group, cp->mirror.percent);
}

static void build_mirrors(const struct model *m, struct routing *r)
{
    r->mirrors = veer_calloc(r->npools + r->nroutes + 1, sizeof(*r->mirrors));
    for (uint32_t i = 0; i < r->npools; i++) {
        r->pools[i].mirror = pool_mirror(m, r, i);
        if (r->pools[i].mirror)
            r->pools[i].msite = mirror_site_get(r->pools[i].name, "");
    }
    for (uint32_t i = 0; i < r->nroutes; i++) {
        struct snap_route *sr = &r->route[i];
        const struct conf_route *cr = &m->conf->routes[i];

        if (sr->pool < 0 ||
            (m->pools[sr->pool].mirror == MIRROR_OFF && !m->pools[sr->pool].shadow_on))
            continue;
        /* Its own mirror, unless a route set sent it to a pool without that group. */
        if (cr->has_mirror && !m->pools[sr->pool].shadow_on &&
            model_find_group(&m->pools[sr->pool], cr->mirror.group) >= 0)
            sr->mirror = add_mirror(m, r, (uint32_t)sr->pool, &cr->mirror, cr->mirror.group,
                                    cr->mirror.percent);
        else
            sr->mirror = r->pools[sr->pool].mirror;
        if (sr->mirror)
            sr->msite = mirror_site_get(m->pools[sr->pool].name, sr->name);
    }
}

struct routing *routing_build(const struct model *m)
{
    struct routing *r = veer_calloc(1, sizeof(*r));

    r->generation = m->generation;
    r->maint = m->maint;
    r->retry_after = m->maint_retry_after;
    r->maint_hold_ms = m->maint_hold_ms;
    r->conf = m->conf;
    r->routes = m->conf && m->nroutes ? m->conf->routes_table : NULL;
    r->nroutes = r->routes ? m->nroutes : 0;
    r->route = veer_calloc(r->nroutes ? r->nroutes : 1, sizeof(*r->route));
    for (uint32_t i = 0; i < r->nroutes; i++) {
        const struct rt_route *rr = &m->routes[i];

        r->route[i] = (struct snap_route){.pool = rr->pool,
                                          .slot = rr->slot,
                                          .name = m->conf->routes[i].name,
                                          .plain = conf_route_plain(&m->conf->routes[i]),
                                          .maint = rr->maint,
                                          .retry_after = rr->maint_retry_after,
                                          .maint_hold_ms = rr->maint_hold_ms};
    }
    r->npools = m->npools;
    r->pools = veer_calloc(m->npools ? m->npools : 1, sizeof(*r->pools));
    for (uint32_t i = 0; i < m->npools; i++) {
        r->pools[i].name = m->pools[i].name;
        r->pools[i].conf = m->pools[i].conf;
        r->pools[i].balance = m->pools[i].conf->balance;
        r->pools[i].maint = m->pools[i].maint;
        r->pools[i].maint_hold_ms = m->pools[i].maint_hold_ms;
        r->pools[i].canary = m->pools[i].canary;
        r->pools[i].group_names = veer_calloc(m->pools[i].ng + 1, sizeof(char *));
        for (uint32_t g = 0; g < m->pools[i].ng; g++)
            r->pools[i].group_names[g] = m->pools[i].g[g].name;
        r->pools[i].retry_after = m->pools[i].maint_retry_after;
        for (uint32_t k = 0; k < m->pools[i].nb; k++)
            r->pools[i].nstate[model_state(&m->pools[i], k)]++;
        pool_weights(&m->pools[i], &r->pools[i]);
        group_views(&m->pools[i], &r->pools[i]);
    }
    build_mirrors(m, r);
    return r;
}
