/*
 * discovery.c - backends that follow DNS names (discovery.h).
 *
 * The resolver is c-ares, driven by the control thread's event base: its
 * sockets become libevent events (ARES_OPT_SOCK_STATE_CB) and one timer
 * follows ares_timeout. libevent's evdns was the other candidate, already
 * linked; it has no SRV queries and hides the TTLs and the answer itself,
 * and c-ares hands over the raw answer, which dnsanswer.c reads.
 *
 * A resolution is a round: for a `dns` entry an A and an AAAA query; for a
 * `srv` entry the SRV query, then an A and an AAAA query per target of the
 * lowest priority. The round ends when its last query answers; only then
 * is its result judged, as a whole: one failed query (timeout, SERVFAIL,
 * refused, a malformed answer) fails the round and the last good answer
 * stays; NXDOMAIN and NODATA are empty parts. The entry's set then follows
 * the answer in one model change (apply).
 *
 * Queries can outlive their entry (a reload removed it) or the channel (a
 * reload changed the resolvers, shutdown): a round whose entry is gone is
 * abandoned (entry NULL) and freed by its last callback; destroying the
 * channel answers every query with ARES_EDESTRUCTION.
 */
#include "discovery.h"
#include "control-i.h"
#include "audit.h"
#include "dnsanswer.h"
#include "health.h"
#include "sbuf.h"
#include "state.h"
#include "veer.h"

#include <ares.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* Addresses one round gathers at most, before duplicates and the cap. */
#define COLLECT_MAX 16384
/* While resolutions keep failing, a warning this often. */
#define WARN_EVERY_US (60 * 1000000ull)
/* Names listed per kind in an audit record; the rest are counted. */
#define AUDIT_NAMES 32

struct round;

struct entry {
    uint32_t id; /* rt_backend.disc_id of its backends; never reused */
    char *pool;
    const struct conf_discover *conf; /* in the running configuration */
    struct discovery_addr *set;       /* the last good answer, sorted by address text */
    uint32_t nset;
    struct round *round; /* under way, or NULL */
    struct event *timer;
    bool has_ttl;
    uint32_t ttl_s;
    uint64_t next_us; /* when the timer fires; 0 while a round is under way */
    double last_success, last_error_at;
    char last_error[600];
    bool failing;       /* the last resolution failed */
    unsigned failures;  /* in a row */
    uint64_t warned_us; /* when a failure was last logged */
    uint64_t errors, resolutions;
    unsigned empties; /* empty answers in a row */
    bool warned_long; /* an address was skipped for a name too long: said once */
};

struct round {
    struct entry *e; /* NULL once abandoned */
    unsigned pending;
    bool failed;
    char err[600];
    struct discovery_addr *a;
    uint32_t n, cap;
    bool has_ttl;
    uint32_t ttl;
};

struct query {
    struct round *r;
    int type, port, weight;
    char name[256];
};

struct sockev {
    ares_socket_t fd;
    struct event *ev;
    struct sockev *next;
};

static struct {
    struct event_base *base;
    const struct veer_conf *conf;
    ares_channel chan;
    bool chan_ok, lib_ok;
    struct event *timer; /* ares_timeout */
    struct sockev *socks;
    struct entry **e;
    unsigned n;
    uint32_t next_id;
    bool set_up;
} D;

static void start_round(struct entry *e);
static void name_round(struct entry *e, struct round *r);

static double wall_now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* --- c-ares on libevent ---------------------------------------------------------------- */

static void arm_timer(void)
{
    struct timeval tv, *t;

    if (!D.chan_ok || D.timer == NULL)
        return;
    t = ares_timeout(D.chan, NULL, &tv);
    if (t == NULL)
        event_del(D.timer);
    else
        evtimer_add(D.timer, t);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    ares_process_fd(D.chan, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer();
}

static void sock_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)arg;
    ares_process_fd(D.chan, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    arm_timer();
}

/* c-ares opens, watches and closes its sockets through this. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct sockev **pp = &D.socks, *s;

    (void)data;
    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    s = *pp;
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            event_free(s->ev);
            free(s);
        }
        return;
    }
    if (s == NULL) {
        s = veer_calloc(1, sizeof(*s));
        s->fd = fd;
        s->next = D.socks;
        D.socks = s;
    } else {
        event_free(s->ev);
    }
    s->ev = event_new(D.base, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0) | EV_PERSIST,
                      sock_cb, NULL);
    event_add(s->ev, NULL);
}

static int channel_open(const struct conf_resolvers *rc)
{
    struct ares_options o = {0};
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES, rc2;

    o.sock_state_cb = sock_state_cb;
    o.timeout = rc->timeout_ms;
    o.tries = 1;
    rc2 = ares_init_options(&D.chan, &o, mask);
    if (rc2 != ARES_SUCCESS) {
        log_err("discovery: resolver: %s", ares_strerror(rc2));
        return -1;
    }
    if (rc->nservers > 0) {
        struct ares_addr_port_node *nodes = veer_calloc(rc->nservers, sizeof(*nodes));

        for (int i = 0; i < rc->nservers; i++) {
            const struct sockaddr *sa = (const struct sockaddr *)&rc->servers[i].ss;

            nodes[i].next = i + 1 < rc->nservers ? &nodes[i + 1] : NULL;
            nodes[i].family = sa->sa_family;
            if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

                nodes[i].addr.addr4 = sin->sin_addr;
                nodes[i].udp_port = nodes[i].tcp_port = ntohs(sin->sin_port);
            } else {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

                memcpy(&nodes[i].addr.addr6, &sin6->sin6_addr, sizeof(sin6->sin6_addr));
                nodes[i].udp_port = nodes[i].tcp_port = ntohs(sin6->sin6_port);
            }
        }
        rc2 = ares_set_servers_ports(D.chan, nodes);
        free(nodes);
        if (rc2 != ARES_SUCCESS) {
            log_err("discovery: resolvers.servers: %s", ares_strerror(rc2));
            ares_destroy(D.chan);
            return -1;
        }
    }
    D.chan_ok = true;
    return 0;
}

/* Every query under way is answered ARES_EDESTRUCTION, now. */
static void channel_close(void)
{
    if (!D.chan_ok)
        return;
    D.chan_ok = false;
    ares_destroy(D.chan);
    while (D.socks) {
        struct sockev *s = D.socks;

        D.socks = s->next;
        event_free(s->ev);
        free(s);
    }
    if (D.timer)
        event_del(D.timer);
}

static bool same_resolvers(const struct conf_resolvers *a, const struct conf_resolvers *b)
{
    if (a->timeout_ms != b->timeout_ms || a->nservers != b->nservers)
        return false;
    for (int i = 0; i < a->nservers; i++)
        if (strcmp(a->servers[i].text, b->servers[i].text) != 0)
            return false;
    return true;
}

/* --- entries ------------------------------------------------------------------------- */

static int cmp_addr(const void *a, const void *b)
{
    return strcmp(((const struct discovery_addr *)a)->addr.text,
                  ((const struct discovery_addr *)b)->addr.text);
}

static const struct discovery_addr *find_addr(const struct discovery_addr *v, uint32_t n,
                                              const char *text)
{
    struct discovery_addr key;

    snprintf(key.addr.text, sizeof(key.addr.text), "%s", text);
    return n ? bsearch(&key, v, n, sizeof(*v), cmp_addr) : NULL;
}

static struct entry *entry_new(const char *pool, const struct conf_discover *d)
{
    struct entry *e = veer_calloc(1, sizeof(*e));

    e->id = ++D.next_id;
    e->pool = veer_strdup(pool);
    e->conf = d;
    D.e = veer_realloc(D.e, (D.n + 1) * sizeof(*D.e));
    D.e[D.n++] = e;
    return e;
}

/* The entries of conf, before any resolution (discovery_adopt may come first). */
static void set_up(const struct veer_conf *conf)
{
    if (D.set_up)
        return;
    D.set_up = true;
    D.conf = conf;
    for (int i = 0; i < conf->npools; i++)
        for (int j = 0; j < conf->pools[i].ndiscover; j++)
            entry_new(conf->pools[i].name, &conf->pools[i].discover[j]);
}

static void round_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_round(arg);
}

static void schedule(struct entry *e, int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (e->timer == NULL)
        e->timer = evtimer_new(D.base, round_timer_cb, e);
    e->next_us = veer_now_us() + (uint64_t)ms * 1000;
    evtimer_add(e->timer, &tv);
}

/* Abandon e's round: its queries answer into nothing. */
static void abandon(struct entry *e)
{
    if (e->round) {
        e->round->e = NULL;
        e->round = NULL;
    }
}

/* The name a backend of e at address text gets; false when it would be too long. */
static bool backend_name(const struct entry *e, const char *text, char *out, size_t len)
{
    int n = snprintf(out, len, "%s-%s", e->conf->name, text);

    return n > 0 && (size_t)n < len && (size_t)n < CMD_NAME_MAX;
}

/* --- applying an answer -------------------------------------------------------------- */

struct changes {
    struct sbuf added, left, back;
    unsigned nadded, nleft, nback, nweight;
};

static void note(struct sbuf *b, unsigned *n, const char *name)
{
    if (*n < AUDIT_NAMES) {
        sb_puts(b, *n ? "," : "");
        sb_json_str(b, name);
    }
    (*n)++;
}

static void close_list(struct sbuf *o, const char *key, struct sbuf *b, unsigned n)
{
    sb_printf(o, ",\"%s\":[%s]", key, b->s ? b->s : "");
    if (n > AUDIT_NAMES)
        sb_printf(o, ",\"%s_more\":%u", key, n - AUDIT_NAMES);
}

/* Mark backend i of p as gone from DNS: it drains, then goes (drain.c's reap). */
static bool mark_gone(struct rt_pool *p, uint32_t i)
{
    struct rt_backend *b = &p->b[i];

    if (b->gone)
        return false;
    b->gone = true;
    b->remove_when_drained = true;
    b->drained = false;
    return true;
}

/* The publish, audit and state write for one entry's change. */
static void commit_changes(struct entry *e, struct rt_pool *p, struct changes *c)
{
    struct sbuf after, line;
    uint64_t gen;

    gen = control_publish();
    ctl_sync_draining(p); /* drains start against the snapshot that no longer routes to them */
    sb_init(&after);
    sb_init(&line);
    sb_printf(&after, "{\"pool\":");
    sb_json_str(&after, p->name);
    sb_puts(&after, ",\"discover\":");
    sb_json_str(&after, e->conf->name);
    close_list(&after, "added", &c->added, c->nadded);
    close_list(&after, "removed", &c->left, c->nleft);
    close_list(&after, "readmitted", &c->back, c->nback);
    sb_printf(&after, ",\"weights_changed\":%u}", c->nweight);
    sb_printf(&line, "discover %s/%s", p->name, e->conf->name);
    audit_write("discovery", NULL, line.s, "OK", gen, NULL, after.s);
    persist_sync_audit();
    control_save_state();
    log_info("discovery %s/%s: %u addresses; %u added, %u draining, %u readmitted, %u "
             "reweighted (gen %llu)",
             p->name, e->conf->name, e->nset, c->nadded, c->nleft, c->nback, c->nweight,
             (unsigned long long)gen);
    sb_free(&after);
    sb_free(&line);
}

/*
 * Make e's backends follow want (sorted, deduplicated, capped): add the
 * new addresses, readmit the ones that came back, drain the ones that
 * left; one publish when anything changed. want becomes e's set (taken).
 */
static void apply(struct entry *e, struct discovery_addr *want, uint32_t n)
{
    int pi = model_find_pool(ctl.model, e->pool);
    struct rt_pool *p;
    struct changes c = {0};

    if (pi < 0 || ctl.model->pools[pi].removed) {
        free(want);
        return;
    }
    p = &ctl.model->pools[pi];
    sb_init(&c.added);
    sb_init(&c.left);
    sb_init(&c.back);
    for (uint32_t k = 0; k < n; k++) {
        const struct discovery_addr *w = &want[k], *old;
        int bi = model_find_backend(p, w->backend);

        if (bi < 0) {
            uint32_t i =
                model_add_backend(ctl.model, pi, w->backend, &w->addr, w->weight, e->conf->group);

            p->b[i].disc_id = e->id;
            if (p->conf->has_health)
                health_watch(p->b[i].be, p->conf);
            note(&c.added, &c.nadded, w->backend);
            continue;
        }
        if (p->b[bi].disc_id != e->id) {
            if (!find_addr(e->set, e->nset, w->addr.text))
                log_warn("discovery %s/%s: backend %s exists and was not discovered by this "
                         "entry; address %s skipped",
                         p->name, e->conf->name, w->backend, w->addr.text);
            continue;
        }
        if (p->b[bi].gone) {
            p->b[bi].gone = false;
            p->b[bi].remove_when_drained = false;
            p->b[bi].drained = false;
            note(&c.back, &c.nback, w->backend);
        }
        old = find_addr(e->set, e->nset, w->addr.text);
        if (old && old->weight != w->weight) { /* the records' weight moved; the operator's stays */
            p->b[bi].weight = w->weight;
            c.nweight++;
        }
    }
    for (uint32_t k = 0; k < e->nset; k++) {
        int bi;

        if (find_addr(want, n, e->set[k].addr.text))
            continue;
        bi = model_find_backend(p, e->set[k].backend);
        if (bi >= 0 && p->b[bi].disc_id == e->id && mark_gone(p, (uint32_t)bi))
            note(&c.left, &c.nleft, e->set[k].backend);
    }
    free(e->set);
    e->set = want;
    e->nset = n;
    if (c.nadded + c.nleft + c.nback + c.nweight > 0)
        commit_changes(e, p, &c);
    sb_free(&c.added);
    sb_free(&c.left);
    sb_free(&c.back);
}

/* --- judging a round ----------------------------------------------------------------- */

static void fail_entry(struct entry *e, const char *why)
{
    e->errors++;
    e->failures++;
    e->failing = true;
    e->last_error_at = wall_now();
    snprintf(e->last_error, sizeof(e->last_error), "%s", why);
}

/* Sort, drop duplicates (an address twice keeps its largest weight). */
static uint32_t dedupe(struct discovery_addr *a, uint32_t n)
{
    uint32_t k = 0;

    if (n == 0)
        return 0;
    if (n > 1)
        qsort(a, n, sizeof(*a), cmp_addr);
    for (uint32_t i = 1; i < n; i++) {
        if (strcmp(a[i].addr.text, a[k].addr.text) == 0) {
            if (a[i].weight > a[k].weight)
                a[k].weight = a[i].weight;
            continue;
        }
        a[++k] = a[i];
    }
    return k + 1;
}

/*
 * Keep at most max addresses: the ones e already has first (a bad record
 * set must not churn a running pool), then new ones in address order.
 * Returns the count kept; the result stays sorted.
 */
static uint32_t cap_set(const struct entry *e, struct discovery_addr *a, uint32_t n, uint32_t max)
{
    struct discovery_addr *keep = veer_malloc(max * sizeof(*keep));
    uint32_t k = 0;

    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < n && k < max; i++)
            if ((find_addr(e->set, e->nset, a[i].addr.text) != NULL) == (pass == 0))
                keep[k++] = a[i];
    if (k > 1)
        qsort(keep, k, sizeof(*keep), cmp_addr);
    memcpy(a, keep, k * sizeof(*keep));
    free(keep);
    return k;
}

static int64_t clamp_ms(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void conclude(struct entry *e, struct round *r)
{
    const struct conf_resolvers *rc = &D.conf->resolvers;
    int confirm = conf_discover_confirm(D.conf, e->conf);
    uint32_t max = (uint32_t)conf_discover_max(D.conf, e->conf), n;
    struct discovery_addr *want;

    if (r->failed) {
        fail_entry(e, r->err);
        /* Said when it starts, then once a minute while it lasts: not at every retry. */
        if (e->failures == 1 || veer_now_us() - e->warned_us >= WARN_EVERY_US) {
            log_warn("discovery %s/%s: %s; keeping the last answer (%u addresses; %u failures "
                     "in a row)",
                     e->pool, e->conf->name, r->err, e->nset, e->failures);
            e->warned_us = veer_now_us();
        }
        schedule(e, rc->min_interval_ms);
        return;
    }
    if (e->failures > 0) {
        log_info("discovery %s/%s: resolves again after %u failures", e->pool, e->conf->name,
                 e->failures);
        e->failures = 0;
    }
    name_round(e, r);
    n = dedupe(r->a, r->n);
    if (n == 0 && ++e->empties < (unsigned)confirm) {
        /* One empty answer is not yet "no instances": a flapping resolver must not empty a pool. */
        log_info("discovery %s/%s: empty answer (%u of %d in a row before the %u addresses go)",
                 e->pool, e->conf->name, e->empties, confirm, e->nset);
        e->resolutions++;
        e->failing = false;
        e->last_success = wall_now();
        schedule(e, rc->min_interval_ms);
        return;
    }
    if (n > 0)
        e->empties = 0;
    if (n > max) {
        char why[200];

        snprintf(why, sizeof(why), "%u addresses, over max_backends = %u: %u kept", n, max, max);
        n = cap_set(e, r->a, n, max);
        fail_entry(e, why); /* counted and shown, but the answer is applied */
        e->failures = 0;
        log_warn("discovery %s/%s: %s", e->pool, e->conf->name, why);
    }
    e->failing = false;
    if (ctl.frozen) {
        /* An upgrade is handing over: no decision now; the next round applies. */
        schedule(e, rc->min_interval_ms);
        return;
    }
    e->resolutions++;
    e->last_success = wall_now();
    e->has_ttl = r->has_ttl;
    e->ttl_s = r->ttl;
    want = veer_malloc((n ? n : 1) * sizeof(*want));
    if (n > 0)
        memcpy(want, r->a, n * sizeof(*want));
    apply(e, want, n);
    schedule(e, clamp_ms(r->has_ttl ? (int64_t)r->ttl * 1000 : rc->interval_ms, rc->min_interval_ms,
                         rc->interval_ms));
}

static void round_unref(struct round *r)
{
    if (--r->pending > 0)
        return;
    if (r->e) {
        struct entry *e = r->e;

        e->round = NULL;
        conclude(e, r);
    }
    free(r->a);
    free(r);
}

static void round_fail(struct round *r, const char *fmt, const char *a, const char *b)
{
    if (r->failed)
        return;
    r->failed = true;
    snprintf(r->err, sizeof(r->err), fmt, a, b);
}

static void round_ttl(struct round *r, uint32_t ttl)
{
    if (!r->has_ttl || ttl < r->ttl)
        r->ttl = ttl;
    r->has_ttl = true;
}

static void send_query(struct round *r, const char *name, int type, int port, int weight);

static const char *type_name(int type)
{
    return type == DNSANSWER_TYPE_A ? "A" : type == DNSANSWER_TYPE_AAAA ? "AAAA" : "SRV";
}

static void got_addrs(struct round *r, const struct query *q, const unsigned char *buf, int len)
{
    struct conf_addr *addrs;
    uint32_t ttl = 0;
    int n = dnsanswer_addrs(buf, len, q->type, q->port, NULL, 0, &ttl);

    if (n < 0) {
        round_fail(r, "malformed %s answer for %s", type_name(q->type), q->name);
        return;
    }
    if (n == 0)
        return;
    round_ttl(r, ttl);
    addrs = veer_malloc((size_t)n * sizeof(*addrs));
    n = dnsanswer_addrs(buf, len, q->type, q->port, addrs, n, &ttl);
    for (int i = 0; i < n && r->n < COLLECT_MAX; i++) {
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 16;
            r->a = veer_realloc(r->a, r->cap * sizeof(*r->a));
        }
        memset(&r->a[r->n], 0, sizeof(r->a[r->n]));
        r->a[r->n].addr = addrs[i];
        r->a[r->n].weight = q->weight;
        r->n++;
    }
    free(addrs);
}

static void got_srv(struct round *r, const struct query *q, const unsigned char *buf, int len)
{
    struct dnsanswer_srv *v;
    uint32_t ttl = UINT32_MAX; /* stays so when the answer has no SRV record */
    uint16_t maxw = 0;
    int n = dnsanswer_srv(buf, len, NULL, 0, &ttl);

    if (n < 0) {
        round_fail(r, "malformed %s answer for %s", "SRV", q->name);
        return;
    }
    if (ttl != UINT32_MAX)
        round_ttl(r, ttl);
    if (n == 0)
        return;
    v = veer_malloc((size_t)n * sizeof(*v));
    n = dnsanswer_srv(buf, len, v, n, &ttl);
    for (int i = 0; i < n; i++)
        if (v[i].weight > maxw)
            maxw = v[i].weight;
    for (int i = 0; i < n; i++) {
        int w = dnsanswer_weight(v[i].weight, maxw, r->e->conf->weight);

        send_query(r, v[i].target, DNSANSWER_TYPE_A, v[i].port, w);
        send_query(r, v[i].target, DNSANSWER_TYPE_AAAA, v[i].port, w);
    }
    free(v);
}

static void query_cb(void *arg, int status, int timeouts, unsigned char *buf, int len)
{
    struct query *q = arg;
    struct round *r = q->r;

    (void)timeouts;
    if (r->e == NULL || r->failed) {
        /* abandoned, or already failed: nothing to learn */
    } else if (status == ARES_SUCCESS) {
        if (q->type == DNSANSWER_TYPE_SRV)
            got_srv(r, q, buf, len);
        else
            got_addrs(r, q, buf, len);
    } else if (status != ARES_ENODATA && status != ARES_ENOTFOUND) {
        char what[300];

        snprintf(what, sizeof(what), "%s %s", type_name(q->type), q->name);
        round_fail(r, "%s (%s)", ares_strerror(status), what);
    }
    free(q);
    round_unref(r);
}

static void send_query(struct round *r, const char *name, int type, int port, int weight)
{
    struct query *q = veer_calloc(1, sizeof(*q));

    q->r = r;
    q->type = type;
    q->port = port;
    q->weight = weight;
    snprintf(q->name, sizeof(q->name), "%s", name);
    r->pending++;
    ares_query(D.chan, q->name, 1 /* IN */, type, query_cb, q); /* may answer at once */
    arm_timer();
}

static void start_round(struct entry *e)
{
    struct round *r;

    if (e->round)
        return;
    if (!D.chan_ok) {
        fail_entry(e, "no resolver (see the log)");
        schedule(e, D.conf->resolvers.interval_ms);
        return;
    }
    r = veer_calloc(1, sizeof(*r));
    r->e = e;
    r->pending = 1; /* the sender's own: the round cannot end while it sends */
    e->round = r;
    e->next_us = 0;
    if (e->conf->srv) {
        send_query(r, e->conf->srv, DNSANSWER_TYPE_SRV, 0, e->conf->weight);
    } else {
        send_query(r, e->conf->host, DNSANSWER_TYPE_A, e->conf->port, e->conf->weight);
        send_query(r, e->conf->host, DNSANSWER_TYPE_AAAA, e->conf->port, e->conf->weight);
    }
    round_unref(r);
}

/* --- the backends an address names ---------------------------------------------------- */

/* Fill the names of a round's addresses; drop the ones whose name would be too long. */
static void name_round(struct entry *e, struct round *r)
{
    uint32_t k = 0;

    for (uint32_t i = 0; i < r->n; i++) {
        if (!backend_name(e, r->a[i].addr.text, r->a[i].backend, sizeof(r->a[i].backend))) {
            if (!e->warned_long)
                log_warn("discovery %s/%s: address %s skipped: the backend name would be longer "
                         "than %d bytes",
                         e->pool, e->conf->name, r->a[i].addr.text, CMD_NAME_MAX - 1);
            e->warned_long = true;
            continue;
        }
        r->a[k++] = r->a[i];
    }
    r->n = k;
}

/* --- lifecycle ------------------------------------------------------------------------ */

/* c-ares itself and the timer that follows it, once. */
static int ensure_lib(void)
{
    int rc;

    if (D.lib_ok)
        return 0;
    rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        log_err("discovery: c-ares: %s", ares_strerror(rc));
        return -1;
    }
    D.lib_ok = true;
    D.timer = evtimer_new(D.base, timer_cb, NULL);
    return 0;
}

int discovery_start(struct event_base *base, const struct veer_conf *conf)
{
    D.base = base;
    set_up(conf);
    if (D.n == 0)
        return 0;
    if (ensure_lib() < 0)
        return -1;
    channel_open(&conf->resolvers); /* a failure is reported per entry; a reload retries */
    for (unsigned i = 0; i < D.n; i++) {
        if (D.e[i]->nset > 1) /* adopted in the old process's order */
            qsort(D.e[i]->set, D.e[i]->nset, sizeof(*D.e[i]->set), cmp_addr);
        schedule(D.e[i], 0);
    }
    return 0;
}

static void entry_free(struct entry *e)
{
    abandon(e);
    if (e->timer)
        event_free(e->timer);
    free(e->set);
    free(e->pool);
    free(e);
}

/* A removed entry's backends drain and go. */
static void drop_backends(struct entry *e)
{
    int pi = model_find_pool(ctl.model, e->pool);

    if (pi < 0)
        return;
    for (uint32_t i = 0; i < ctl.model->pools[pi].nb; i++)
        if (ctl.model->pools[pi].b[i].disc_id == e->id)
            mark_gone(&ctl.model->pools[pi], i);
}

/* A kept entry whose configuration changed: its backends follow the group and weight. */
static bool rebind(struct entry *e, const struct conf_discover *d)
{
    const struct conf_discover *o = e->conf;
    bool requery =
        (o->srv != NULL) != (d->srv != NULL) || strcmp(o->host, d->host) != 0 || o->port != d->port;
    int pi = model_find_pool(ctl.model, e->pool);

    e->conf = d;
    if (pi >= 0) {
        struct rt_pool *p = &ctl.model->pools[pi];
        uint32_t g = model_group(p, d->group);

        for (uint32_t i = 0; i < p->nb; i++) {
            if (p->b[i].disc_id != e->id)
                continue;
            p->b[i].group = g;
            if (!d->srv && o->weight != d->weight)
                p->b[i].weight = d->weight;
        }
        if (!d->srv)
            for (uint32_t k = 0; k < e->nset; k++)
                e->set[k].weight = d->weight;
    }
    return requery;
}

void discovery_reload(const struct veer_conf *nc)
{
    struct entry **old = D.e;
    unsigned nold = D.n;
    bool new_channel = !same_resolvers(&D.conf->resolvers, &nc->resolvers) || !D.chan_ok;
    int total = 0;

    for (int i = 0; i < nc->npools; i++)
        total += nc->pools[i].ndiscover;
    if (total > 0 && ensure_lib() < 0)
        return;
    D.e = NULL;
    D.n = 0;
    for (int i = 0; i < nc->npools; i++)
        for (int j = 0; j < nc->pools[i].ndiscover; j++) {
            const struct conf_discover *d = &nc->pools[i].discover[j];
            struct entry *e = NULL;

            for (unsigned k = 0; k < nold && e == NULL; k++)
                if (old[k] && strcmp(old[k]->pool, nc->pools[i].name) == 0 &&
                    strcmp(old[k]->conf->name, d->name) == 0) {
                    e = old[k];
                    old[k] = NULL;
                }
            if (e == NULL) {
                e = entry_new(nc->pools[i].name, d);
                schedule(e, 0);
                continue;
            }
            D.e = veer_realloc(D.e, (D.n + 1) * sizeof(*D.e));
            D.e[D.n++] = e;
            if (rebind(e, d)) {
                abandon(e);
                schedule(e, 0);
            }
        }
    for (unsigned k = 0; k < nold; k++)
        if (old[k]) {
            log_info("discovery %s/%s: removed from the configuration; its %u backends drain",
                     old[k]->pool, old[k]->conf->name, old[k]->nset);
            drop_backends(old[k]);
            entry_free(old[k]);
        }
    free(old);
    D.conf = nc;
    if (new_channel) {
        /* Abandoned first: the old channel's queries answer ARES_EDESTRUCTION, not a failure. */
        for (unsigned i = 0; i < D.n; i++)
            abandon(D.e[i]);
        /* Closed even with no entry left: one a later reload adds must not find the old one. */
        channel_close();
        if (D.n > 0 && channel_open(&nc->resolvers) == 0)
            for (unsigned i = 0; i < D.n; i++)
                schedule(D.e[i], 0);
    }
}

void discovery_stop(void)
{
    for (unsigned i = 0; i < D.n; i++)
        abandon(D.e[i]);
    channel_close();
    for (unsigned i = 0; i < D.n; i++)
        entry_free(D.e[i]);
    free(D.e);
    D.e = NULL;
    D.n = 0;
    if (D.timer)
        event_free(D.timer);
    D.timer = NULL;
    if (D.lib_ok)
        ares_library_cleanup();
    D.lib_ok = false;
    D.set_up = false;
}

int discovery_adopt(struct model *m, const struct veer_conf *conf, int pi, const char *name,
                    const char *addr)
{
    const char *pool = m->pools[pi].name;

    set_up(conf);
    for (unsigned i = 0; i < D.n; i++) {
        struct entry *e = D.e[i];
        size_t len = strlen(e->conf->name);
        const char *at;
        struct conf_addr a;
        char err[128];
        uint32_t bi;

        if (strcmp(e->pool, pool) != 0 || strncmp(name, e->conf->name, len) != 0 ||
            name[len] != '-')
            continue;
        at = addr ? addr : name + len + 1; /* NULL: the address the name carries */
        if (strcmp(name + len + 1, at) != 0)
            continue;
        if (conf_parse_addr(at, false, &a, err, sizeof(err)) < 0 ||
            (e->conf->port && ntohs(((struct sockaddr_in *)&a.ss)->sin_port) != e->conf->port))
            continue; /* another entry's name may start like this one's ("api", "api-v2") */
        bi = model_add_backend(m, pi, name, &a, e->conf->weight, e->conf->group);
        m->pools[pi].b[bi].disc_id = e->id;
        e->set = veer_realloc(e->set, (e->nset + 1) * sizeof(*e->set));
        memset(&e->set[e->nset], 0, sizeof(e->set[e->nset]));
        snprintf(e->set[e->nset].backend, sizeof(e->set[e->nset].backend), "%s", name);
        e->set[e->nset].addr = a;
        e->set[e->nset].weight = e->conf->weight;
        e->nset++;
        return (int)bi;
    }
    return -1;
}

/* --- reading -------------------------------------------------------------------------- */

unsigned discovery_count(void)
{
    return D.n;
}

void discovery_get(unsigned i, struct discovery_info *out)
{
    const struct entry *e = D.e[i];
    uint64_t now = veer_now_us();

    memset(out, 0, sizeof(*out));
    out->pool = e->pool;
    out->name = e->conf->name;
    out->kind = e->conf->srv ? "srv" : "dns";
    out->query = e->conf->srv ? e->conf->srv : e->conf->dns;
    out->group = e->conf->group;
    out->id = e->id;
    out->addrs = e->set;
    out->naddrs = e->nset;
    out->has_ttl = e->has_ttl;
    out->ttl_s = e->ttl_s;
    out->next_ms = e->round || e->next_us == 0 ? -1
                   : e->next_us > now          ? (int64_t)((e->next_us - now) / 1000)
                                               : 0;
    out->last_success = e->last_success;
    out->failing = e->failing;
    out->last_error = e->last_error[0] ? e->last_error : NULL;
    out->last_error_at = e->last_error_at;
    out->errors = e->errors;
    out->resolutions = e->resolutions;
    /* Once confirmed, the empty answers are the set (none), not a doubt any more. */
    out->unconfirmed_empty =
        e->empties < (unsigned)conf_discover_confirm(D.conf, e->conf) ? e->empties : 0;
}
