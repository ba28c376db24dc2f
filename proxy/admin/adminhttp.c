/*
 * adminhttp.c - the read-only admin HTTP address (admin.http, on the control
 * thread, libevent's evhttp): /metrics (Prometheus text 0.0.4), /status
 * (JSON) and / (a self-contained HTML page that refreshes from /status
 * every second). Nothing here changes state.
 */
#include "adminhttp.h"
#include "control.h"
#include "prometheus.h"
#include "model.h"
#include "rollout.h"
#include "routejson.h"
#include "discjson.h"
#include "mirrorjson.h"
#include "sbuf.h"
#include "stats.h"
#include "veer.h"
#include "worker.h"

#include "tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <string.h>

/*
 * What one admin connection may make the control thread hold: a request head of 32 KiB and
 * a body of 4 KiB (evhttp answers 400 or 413 beyond, a larger declared body at once), and no
 * wait without progress longer than timeouts.client_header_ms. evhttp's defaults are no limit
 * and no timeout: any peer could grow veer's memory or pin its descriptors for ever.
 */
#define ADMIN_HEAD_BYTES 32768
#define ADMIN_BODY_BYTES 4096

/*
 * The most connections the admin address holds at once (there is no config key for it).
 * At the cap veer stops accepting: later connections wait in the listen backlog until one
 * closes, so scrapers are served late rather than refused, and a flood of idle connections
 * costs at most this many descriptors.
 */
#define ADMIN_HTTP_MAX_CONNS 64

/* The longest one slice of a /metrics or /status render holds the control thread (about). */
#define ADMIN_RENDER_SLICE_US 5000

/*
 * A /status render begun over the route table restarts from the top when the table changes
 * between two slices (a reload); after this many restarts it finishes in one go.
 */
#define STATUS_RESTARTS 3

/*
 * Where the history part of a /status?history=1 render stands: the groups of every pool,
 * then the routes, a few per slice (1,000 groups make megabytes). Every series ends at the
 * second the document began with, however many ticks pass before it is done.
 */
struct history_cursor {
    bool begun;
    uint64_t second; /* the last second rendered (m->seconds when the document began) */
    uint64_t since;  /* only the seconds after this one (&since=N) */
    uint32_t pool, group, route;
    bool in_routes, pool_open;
};

/*
 * Where a /status render stands: the head and every pool go in the first slice, the routes
 * in slices of their own (10,000 routes are many), then the history when it was asked for.
 * Zero it to start (history and since set).
 */
struct status_cursor {
    bool begun;
    uint32_t route; /* the next route to render */
    unsigned restarts;
    /* the route table the render began with: a reload changes conf */
    const struct model *model;
    const struct veer_conf *conf;
    uint32_t nroutes;
    bool history; /* ?history=1 */
    bool routes_done;
    struct history_cursor h;
};

/* A /metrics or /status request waiting for its turn to be rendered. */
struct pending {
    struct evhttp_request *req;
    bool metrics;                 /* /metrics; else /status */
    struct metrics_cursor cursor; /* how far a /metrics render got */
    struct status_cursor status;  /* how far a /status render got */
    struct sbuf out;
    struct pending *next;
};

/* A bufferevent evhttp is about to wrap in a connection, kept alive until we saw it. */
struct newconn {
    struct bufferevent *bev;
    struct newconn *next;
};

static struct {
    struct evhttp *http;
    struct evconnlistener *listener; /* evhttp's, paused at the cap */
    struct event_base *base;
    const struct model *model;
    struct worker **workers;
    unsigned nworkers;
    uint64_t start_us;
    const struct veer_conf *conf;
    unsigned conns;        /* connections open now (accepted, not yet closed) */
    bool paused;           /* the listener is disabled: conns reached the cap */
    struct newconn *fresh; /* accepted this loop pass, not adopted yet */
    struct event *adopt_ev;
    struct pending *head, *tail;
    struct event *render_ev;
    uint64_t renders;
    uint64_t slice_us;
} ah = {.slice_us = ADMIN_RENDER_SLICE_US};

static void send_text(struct evhttp_request *req, int code, const char *ctype, const char *body,
                      size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evbuffer_new();

    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* The length GET would have and no body: evhttp 2.1 sends any body it is given. */
        char n[24];

        snprintf(n, sizeof(n), "%zu", len);
        evhttp_add_header(h, "Content-Length", n);
    } else {
        evbuffer_add(out, body, len);
    }
    evhttp_send_reply(req, code, NULL, out);
    evbuffer_free(out);
}

/* Read only: GET and HEAD; any other method is answered 405 naming them (RFC 9110 15.5.6). */
static bool refuse_method(struct evhttp_request *req)
{
    enum evhttp_cmd_type t = evhttp_request_get_command(req);

    if (t == EVHTTP_REQ_GET || t == EVHTTP_REQ_HEAD)
        return false;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    send_text(req, 405, "text/plain", "method not allowed\n", 19);
    return true;
}

static bool status_step(struct status_cursor *c, struct sbuf *o, const struct model *m,
                        uint64_t budget_us);

/*
 * Rendering /metrics or /status is the costly part of a scrape (it walks every backend of
 * every pool, every route), and it runs on the control thread. So requests for them queue,
 * and the one at the head is worked on once per pass of the event loop, from a timer that
 * fires after the pass's I/O, for one slice of ADMIN_RENDER_SLICE_US (a pool of 10,000
 * backends takes many for /metrics, 10,000 routes several for /status). The admin socket,
 * health checks and worker reports are always served between two slices, however many
 * scrapers wait and however big the model.
 */
static void render_cb(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval now = {0, 0};
    struct pending *p = ah.head;
    bool done = true;

    if (p == NULL)
        return;
    if (evhttp_request_get_connection(p->req) == NULL) {
        evhttp_request_free(p->req); /* the client went away while it waited */
    } else if (p->metrics) {
        done = metrics_render_step(&p->cursor, &p->out, ah.model, ah.workers, ah.nworkers,
                                   ah.slice_us);
    } else {
        done = status_step(&p->status, &p->out, ah.model, ah.slice_us);
    }
    if (done && evhttp_request_get_connection(p->req) != NULL) {
        ah.renders++;
        send_text(p->req, 200,
                  p->metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
                  p->out.s ? p->out.s : "", p->out.len);
    }
    if (done) {
        ah.head = p->next;
        if (ah.head == NULL)
            ah.tail = NULL;
        sb_free(&p->out);
        free(p);
    }
    if (ah.head)
        evtimer_add(ah.render_ev, &now);
}

static struct pending *enqueue(struct evhttp_request *req, bool metrics)
{
    static const struct timeval now = {0, 0};
    struct pending *p = veer_calloc(1, sizeof(*p));

    p->req = req;
    p->metrics = metrics;
    sb_init(&p->out);
    if (ah.tail)
        ah.tail->next = p;
    else
        ah.head = p;
    ah.tail = p;
    if (!evtimer_pending(ah.render_ev, NULL))
        evtimer_add(ah.render_ev, &now);
    return p;
}

static void metrics_cb(struct evhttp_request *req, void *arg)
{
    if (refuse_method(req))
        return;
    enqueue(req, true);
}

static void rate_json(struct sbuf *o, const struct rate *r)
{
    sb_printf(o, "\"rps\":%.1f,\"error_rate\":%.4f,\"p99_ms\":%.3f", r->rps, r->error_rate,
              r->p99_ms);
}

/* The status document up to its route table: the head and every pool. */
static void status_head(struct sbuf *o, const struct model *m)
{
    bool shutting = false;
    double *ew;

    for (unsigned w = 0; w < ah.nworkers; w++)
        shutting |= ah.workers[w]->shutting_down;
    sb_printf(o,
              "{\"version\":\"%s\",\"uptime_s\":%.1f,\"workers\":%u,\"generation\":%llu,"
              "\"shutting_down\":%s,\"maintenance\":%s,\"pools\":[",
              VEER_VERSION, (double)(veer_now_us() - ah.start_us) / 1e6, ah.nworkers,
              (unsigned long long)m->generation, shutting ? "true" : "false",
              m->maint ? "true" : "false");
    for (uint32_t p = 0, first = 1; p < m->npools; p++) {
        const struct rt_pool *rp = &m->pools[p];
        int retry;
        int64_t hold;

        if (rp->removed)
            continue;
        sb_puts(o, first ? "{\"name\":" : ",{\"name\":");
        first = 0;
        sb_json_str(o, rp->name);
        /* What maintenance answers with (the pool's own, else every pool's): 0 when off. */
        if (rp->maint) {
            retry = rp->maint_retry_after;
            hold = rp->maint_hold_ms;
        } else if (m->maint) {
            retry = m->maint_retry_after;
            hold = m->maint_hold_ms;
        } else {
            retry = 0;
            hold = 0;
        }
        sb_printf(o,
                  ",\"maintenance\":%s,\"maintenance_retry_after\":%d,"
                  "\"maintenance_hold_ms\":%lld,\"groups\":[",
                  rp->maint || m->maint ? "true" : "false", retry, (long long)hold);
        for (uint32_t g = 0; g < rp->ng; g++) {
            sb_puts(o, g ? ",{\"name\":" : "{\"name\":");
            sb_json_str(o, rp->g[g].name);
            sb_printf(o, ",\"share\":%d,", rp->g[g].share);
            rate_json(o, &rp->g[g].rate);
            sb_puts(o, "}");
        }
        sb_puts(o, "],\"backends\":[");
        ew = model_effective_weights(rp);
        for (uint32_t i = 0; i < rp->nb; i++) {
            const struct rt_backend *b = &rp->b[i];
            bool draining = rt_draining(b) && !b->drained;

            sb_puts(o, i ? ",{\"name\":" : "{\"name\":");
            sb_json_str(o, b->be->name);
            sb_puts(o, ",\"address\":");
            sb_json_str(o, b->be->addr.text);
            sb_puts(o, ",\"group\":");
            sb_json_str(o, rp->g[b->group].name);
            sb_printf(o,
                      ",\"state\":\"%s\",\"weight\":%d,\"effective_weight\":%.6g,"
                      "\"active\":%u,\"conns\":%u,\"circuit\":\"%s\",\"weight_factor\":%.4g,",
                      backend_state_name(model_state(rp, i)), b->weight, ew[i],
                      backend_active(b->be), backend_conns(b->be), breaker_state_name(b->breaker),
                      b->factor);
            rate_json(o, &b->rate);
            if (draining)
                sb_printf(o, ",\"drain\":{\"left\":%u,\"elapsed_ms\":%.0f}", backend_active(b->be),
                          (double)(veer_now_us() - b->drain_start_us) / 1000.0);
            sb_puts(o, "}");
        }
        free(ew);
        sb_puts(o, "],\"rollout\":");
        rollout_status_json((int)p, o);
        sb_puts(o, ",\"rollout_plan\":");
        rollout_plan_json((int)p, o);
        sb_puts(o, "}");
    }
    sb_puts(o, "],\"discovery\":");
    discjson_list(o, m);
    sb_puts(o, ",\"mirror\":");
    mirrorjson_list(o, m);
    sb_puts(o, ",\"routes\":[");
}

/*
 * One series of the history: the points of ring for the seconds after c->since up to
 * c->second, oldest first, as "first" (the second of the first point) and three arrays.
 * The ring's newest point is second m->seconds (stats.h), which may be past c->second.
 */
static void series_json(struct sbuf *o, const struct stats_ring *ring,
                        const struct history_cursor *c, uint64_t now)
{
    static const char *const names[] = {"rps", "error_rate", "p99_ms"};
    unsigned len = stats_ring_len(ring);
    uint64_t first, last = c->second < now ? c->second : now, k0;

    if (len > now) /* never: one point per tick at most */
        len = 0;
    first = now + 1 - len;
    if (first <= c->since)
        first = c->since + 1;
    if (first > last) {
        sb_printf(o, "\"first\":%llu,\"rps\":[],\"error_rate\":[],\"p99_ms\":[]",
                  (unsigned long long)c->second + 1);
        return;
    }
    k0 = first - (now + 1 - len);
    sb_printf(o, "\"first\":%llu", (unsigned long long)first);
    for (unsigned which = 0; which < 3; which++) {
        sb_printf(o, ",\"%s\":[", names[which]);
        for (uint64_t k = k0; k <= k0 + (last - first); k++) {
            double v[3];

            stats_ring_get(ring, (unsigned)k, &v[0], &v[1], &v[2]);
            if (k > k0)
                sb_puts(o, ",");
            sb_printf(o, which == 0 ? "%.0f" : "%g", v[which]); /* rps: a whole number */
        }
        sb_puts(o, "]");
    }
}

static void history_pool_open(struct history_cursor *c, struct sbuf *o, const struct rt_pool *rp)
{
    sb_puts(o, c->pool_open ? ",{\"name\":" : "{\"name\":");
    c->pool_open = true;
    sb_json_str(o, rp->name);
    sb_puts(o, ",\"groups\":[");
}

/*
 * Render the history object on from c into o for about budget_us from t0 (0: to the end):
 * true when it is complete. Pools (removed ones left out) and their groups in the model's
 * order, then the routes. The caller starts over when the model changed in between.
 */
static bool history_step(struct history_cursor *c, struct sbuf *o, const struct model *m,
                         uint64_t t0, uint64_t budget_us)
{
    uint32_t n = 0;

    if (!c->begun) {
        c->begun = true;
        sb_printf(o,
                  "{\"second\":%llu,\"since\":%llu,\"interval_s\":1,\"capacity\":%d,"
                  "\"pools\":[",
                  (unsigned long long)c->second, (unsigned long long)c->since, STATS_HISTORY);
    }
    for (; !c->in_routes && c->pool < m->npools; c->pool++, c->group = 0) {
        const struct rt_pool *rp = &m->pools[c->pool];

        if (rp->removed)
            continue;
        for (; c->group < rp->ng; c->group++, n++) {
            if (budget_us && n > 0 && n % 8 == 0 && veer_now_us() - t0 >= budget_us)
                return false;
            if (c->group == 0)
                history_pool_open(c, o, rp);
            sb_puts(o, c->group ? ",{\"name\":" : "{\"name\":");
            sb_json_str(o, rp->g[c->group].name);
            sb_puts(o, ",");
            series_json(o, rp->g[c->group].ring, c, m->seconds);
            sb_puts(o, "}");
        }
        if (rp->ng == 0)
            history_pool_open(c, o, rp);
        sb_puts(o, "]}");
    }
    if (!c->in_routes) {
        c->in_routes = true;
        sb_puts(o, "],\"routes\":[");
    }
    for (; c->route < m->nroutes; c->route++, n++) {
        if (budget_us && n > 0 && n % 8 == 0 && veer_now_us() - t0 >= budget_us)
            return false;
        sb_puts(o, c->route ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, m->routes[c->route].name);
        sb_puts(o, ",");
        series_json(o, m->routes[c->route].ring, c, m->seconds);
        sb_puts(o, "}");
    }
    sb_puts(o, "]}");
    return true;
}

/*
 * Render the status document on from c into o for about budget_us (0: to the end): true when
 * o is complete, false to be called again later with the same c and o. The head and the
 * pools are rendered whole in the first call; then the routes (routejson_route), whose
 * figures are read when each is rendered; then, when asked for, the history. When the route
 * table changed between two calls (a reload, another model) the render starts over, so no
 * route is missed, doubled or rendered against another table's match.
 */
static bool status_step(struct status_cursor *c, struct sbuf *o, const struct model *m,
                        uint64_t budget_us)
{
    uint64_t t0 = veer_now_us();
    uint32_t n = 0;

    if (c->begun && (c->model != m || c->conf != m->conf || c->nroutes != m->nroutes)) {
        sb_reset(o);
        *c = (struct status_cursor){
            .restarts = c->restarts + 1, .history = c->history, .h = {.since = c->h.since}};
        if (c->restarts > STATUS_RESTARTS)
            budget_us = 0;
    }
    if (!c->begun) {
        c->begun = true;
        c->model = m;
        c->conf = m->conf;
        c->nroutes = m->nroutes;
        c->h.second = m->seconds; /* the history ends at the second the document began */
        status_head(o, m);
    }
    for (; c->route < m->nroutes; c->route++, n++) {
        if (budget_us && n > 0 && n % 16 == 0 && veer_now_us() - t0 >= budget_us)
            return false;
        if (c->route > 0)
            sb_puts(o, ",");
        routejson_route(o, m, c->route);
    }
    if (c->history) {
        if (!c->routes_done) {
            c->routes_done = true;
            sb_puts(o, "],\"history\":");
        }
        if (!history_step(&c->h, o, m, t0, budget_us))
            return false;
        sb_puts(o, "}\n");
        return true;
    }
    sb_puts(o, "]}\n");
    return true;
}

/* The status document, whole: what the HTML page and operators' scripts read. */
void adminhttp_status_json(struct sbuf *o)
{
    struct status_cursor c = {0};

    status_step(&c, o, ah.model, 0);
}

void adminhttp_status_history_json(struct sbuf *o, uint64_t since)
{
    struct status_cursor c = {.history = true, .h = {.since = since}};

    status_step(&c, o, ah.model, 0);
}

/*
 * /status, or /status?history=1[&since=N] for the document with the last STATS_HISTORY
 * seconds of every group and route (only those after second N: a page that has the rest).
 * Other query parameters change nothing.
 */
static void status_cb(struct evhttp_request *req, void *arg)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params;
    struct pending *p;
    const char *hist = NULL, *since = NULL;
    uint64_t n = 0;
    bool bad = false;

    if (refuse_method(req))
        return;
    /* evhttp_parse_query_str initialises params, and leaves it empty when it fails. */
    if (q != NULL && evhttp_parse_query_str(q, &params) == 0) {
        hist = evhttp_find_header(&params, "history");
        since = evhttp_find_header(&params, "since");
        if (hist != NULL && since != NULL) {
            char *end;

            errno = 0;
            n = strtoull(since, &end, 10);
            bad = *since < '0' || *since > '9' || *end != '\0' || errno != 0;
        }
        if (bad) {
            evhttp_clear_headers(&params);
            send_text(req, 400, "text/plain", "since: a second number\n", 23);
            return;
        }
        p = enqueue(req, false);
        p->status.history = hist != NULL && strcmp(hist, "0") != 0;
        p->status.h.since = n;
        evhttp_clear_headers(&params);
        return;
    }
    enqueue(req, false);
}

/*
 * The page (proxy/admin/statuspage.html, built in as statuspage.h): share bars, sparklines
 * from /status?history=1, the rollout, backend chips and the tables, refreshed from /status
 * every second; every name is HTML-escaped; no external assets.
 */
#include "statuspage.h"

static void page_cb(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);

    if (refuse_method(req))
        return;
    if (strcmp(uri, "/") != 0 && strncmp(uri, "/?", 2) != 0) {
        send_text(req, 404, "text/plain", "not found\n", 10);
        return;
    }
    /* Nothing but the page itself and what it fetches from here. */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                      "default-src 'self' 'unsafe-inline'");
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Content-Type-Options", "nosniff");
    send_text(req, 200, "text/html; charset=utf-8", page, sizeof(page) - 1);
}

/* --- the connection cap ------------------------------------------------------------ */

/* evhttp closed a connection (closecb): one more may come in. */
static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    ah.conns--;
    if (ah.paused && ah.conns < ADMIN_HTTP_MAX_CONNS && ah.listener) {
        evconnlistener_enable(ah.listener);
        ah.paused = false;
    }
}

/*
 * evhttp 2.1 has no connection limit, and only tells about a closed connection through a
 * close callback set on its connection object, which exists only after our bufferevent
 * callback returned. So each new bufferevent is held (one reference) until the end of this
 * loop pass; by then evhttp has wrapped it (its callbacks' argument is the connection) and
 * the close callback is set, or it already freed it (its callbacks are gone).
 */
static void adopt_cb(evutil_socket_t fd, short what, void *arg)
{
    while (ah.fresh) {
        struct newconn *n = ah.fresh;
        bufferevent_data_cb rd;
        bufferevent_event_cb ev;
        void *evcon = NULL;

        ah.fresh = n->next;
        bufferevent_getcb(n->bev, &rd, NULL, &ev, &evcon);
        if (rd != NULL && evcon != NULL)
            evhttp_connection_set_closecb(evcon, conn_closed_cb, NULL);
        else
            conn_closed_cb(NULL, NULL); /* gone before we saw it */
        bufferevent_decref(n->bev);
        free(n);
    }
}

/*
 * Every connection evhttp accepts starts here (plain or TLS): count it, pause accepting at
 * the cap (the listener checks between two accepts), and have it adopted at the end of the
 * pass. Its events run like any other on the control thread; renders are what is deferred.
 */
static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    const struct veer_conf *conf = arg;
    struct bufferevent *bev;
    struct newconn *n;

    if (conf->admin.http_tls) {
        SSL *ssl = tls_admin_new(conf);

        /* Returning NULL would make evhttp serve this connection in plain text. */
        if (ssl == NULL)
            veer_panic(__FILE__, __LINE__, "admin.http_tls: SSL_new failed");
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL)
        veer_panic(__FILE__, __LINE__, "admin.http: bufferevent_socket_new failed");
    if (++ah.conns >= ADMIN_HTTP_MAX_CONNS && ah.listener && !ah.paused) {
        evconnlistener_disable(ah.listener);
        ah.paused = true;
        log_info("admin http: %d connections open; new ones wait until one closes",
                 ADMIN_HTTP_MAX_CONNS);
    }
    bufferevent_incref(bev);
    n = veer_calloc(1, sizeof(*n));
    n->bev = bev;
    n->next = ah.fresh;
    ah.fresh = n;
    event_active(ah.adopt_ev, EV_TIMEOUT, 0);
    return bev;
}

unsigned adminhttp_connections(void)
{
    return ah.conns;
}

uint64_t adminhttp_renders(void)
{
    return ah.renders;
}

void adminhttp_set_render_slice(uint64_t us)
{
    ah.slice_us = us;
}

int adminhttp_start(struct event_base *base, const struct veer_conf *conf, const struct model *m,
                    struct worker **workers, unsigned nworkers)
{
    char host[64];
    const char *colon;
    int port;
    struct timeval tv;

    ah.model = m;
    ah.workers = workers;
    ah.nworkers = nworkers;
    ah.start_us = veer_now_us();
    if (!conf->admin.has_http)
        return VEER_OK;
    ah.base = base;
    ah.conf = conf;
    ah.conns = 0;
    ah.paused = false;
    if (conf->admin.http_tls && conf->admin.http_tls->ctx == NULL) {
        log_err("admin.http %s: admin.http_tls has no TLS context: not serving it in plain text",
                conf->admin.http.text);
        return VEER_ERROR;
    }
    /* "host:port" or "[v6]:port", numeric, validated by conf.c. */
    colon = strrchr(conf->admin.http.text, ':');
    port = atoi(colon + 1);
    snprintf(host, sizeof(host), "%.*s", (int)(colon - conf->admin.http.text),
             conf->admin.http.text);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    ah.http = evhttp_new(base);
    /* The callbacks answer 405 to all but GET and HEAD (evhttp would say 501). */
    evhttp_set_allowed_methods(
        ah.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                     EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(ah.http, ADMIN_HEAD_BYTES);
    evhttp_set_max_body_size(ah.http, ADMIN_BODY_BYTES);
    tv.tv_sec = conf->timeouts.client_header_ms / 1000;
    tv.tv_usec = (conf->timeouts.client_header_ms % 1000) * 1000;
    evhttp_set_timeout_tv(ah.http, &tv);
    evhttp_set_cb(ah.http, "/metrics", metrics_cb, NULL);
    evhttp_set_cb(ah.http, "/status", status_cb, NULL);
    evhttp_set_gencb(ah.http, page_cb, NULL);
    evhttp_set_bevcb(ah.http, bev_cb, (void *)conf);
    ah.adopt_ev = event_new(base, -1, 0, adopt_cb, NULL);
    ah.render_ev = evtimer_new(base, render_cb, NULL);
    {
        struct evhttp_bound_socket *bs =
            evhttp_bind_socket_with_handle(ah.http, host, (uint16_t)port);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char text[80];

        if (bs == NULL) {
            int e = errno;

            log_err("admin.http %s: cannot listen: %s", conf->admin.http.text, strerror(e));
            adminhttp_stop();
            return VEER_ERROR;
        }
        ah.listener = evhttp_bound_socket_get_listener(bs);
        getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl);
        snprintf(text, sizeof(text), conf->admin.http.text[0] == '[' ? "[%s]:%d" : "%s:%d", host,
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));
        log_info("admin http on %s (read-only: /metrics, /status, /%s)", text,
                 conf->admin.http_tls ? conf->admin.http_tls->client_ca
                                            ? "; TLS, client certificates required"
                                            : "; TLS"
                                      : "");
    }
    return VEER_OK;
}

/*
 * Close the listener and every connection. Queued requests on live connections are freed
 * with them by evhttp; those whose client already went are ours to free.
 */
void adminhttp_stop(void)
{
    while (ah.head) {
        struct pending *p = ah.head;

        ah.head = p->next;
        if (evhttp_request_get_connection(p->req) == NULL)
            evhttp_request_free(p->req);
        sb_free(&p->out);
        free(p);
    }
    ah.tail = NULL;
    ah.listener = NULL; /* evhttp_free closes it first; close callbacks must not enable it */
    if (ah.http)
        evhttp_free(ah.http);
    ah.http = NULL;
    adopt_cb(-1, 0, NULL);
    if (ah.adopt_ev)
        event_free(ah.adopt_ev);
    if (ah.render_ev)
        event_free(ah.render_ev);
    ah.adopt_ev = ah.render_ev = NULL;
    ah.conns = 0;
    ah.paused = false;
}

void adminhttp_set_model(const struct model *m)
{
    ah.model = m;
}
