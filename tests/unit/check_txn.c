/*
 * check_txn.c - txn.c without a client connection: transactions driven
 * through their interface (txn.h) by a fake client side that hands them
 * request bytes and takes their responses into memory, on a real worker
 * (worker_create, config, model and routing snapshots as main.c sets them
 * up) whose event loop the test thread runs step by step, against backends
 * the test thread serves itself over loopback, with the report sink bound
 * to a recorder (report_bind) instead of the control thread.
 *
 * - pick: requests go to the backends the snapshot gives, in proportion to
 *   their groups' shares, and a published snapshot with other shares moves
 *   the next ones;
 * - retry: a backend whose port refuses connections costs a counted connect
 *   error, and the request is answered 200, once, by another backend;
 * - hold: a request with no eligible backend (hold_ms), or held by
 *   maintenance --hold, waits, unanswered, through a publish that changes
 *   nothing for it; the publish that gives it a backend sends it to that
 *   backend once, and it is answered once;
 * - breaker: half-open backends report every outcome, in the order the
 *   outcomes happened; a closed breaker reports a run of failures once, when
 *   the run reaches the threshold.
 *
 * Each test runs in its own process (Check's fork mode). Every wait is a
 * loop step with a deadline.
 */
#include "conf.h"
#include "listener.h"
#include "model.h"
#include "module.h"
#include "report.h"
#include "routing.h"
#include "txn.h"
#include "veer.h"
#include "worker.h"
#include "txnfix.h"
#include "workerfix.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NBACKENDS 3
#define NCLIENTS  16

/* --- the report sink ------------------------------------------------------------------- */

/* Reports as the control thread would receive them, in order. */
static struct {
    struct {
        enum report_type type;
        char backend[32];
        bool ok;
    } r[64];
    unsigned n;
} reports;

static void record_report(struct report *m, void *arg)
{
    (void)arg;
    ck_assert_uint_lt(reports.n, 64);
    reports.r[reports.n].type = m->type;
    reports.r[reports.n].ok = m->ticket != 0;
    if (m->be)
        snprintf(reports.r[reports.n].backend, sizeof(reports.r[0].backend), "%s", m->be->name);
    reports.n++;
    if (m->be)
        backend_put(m->be);
    free(m);
}

/* --- backends the test thread serves -------------------------------------------------------- */

/*
 * Backend i: a listening socket answering every request head with 200 and
 * the backend's name as the body; or, when `refuse`, a socket bound to its
 * port but not listening, so that connecting to it is refused.
 */
static struct backend_srv {
    char name[16];
    int fd;
    bool refuse;
    int conns[NCLIENTS];
    char buf[NCLIENTS][4096];
    size_t len[NCLIENTS], done[NCLIENTS];
    int nconns;
    int nreqs;
    char paths[NCLIENTS][32];
} srv[NBACKENDS];

static void backend_open(int i, const char *name, bool refuse)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct backend_srv *b = &srv[i];

    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->refuse = refuse;
    b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ck_assert_int_ge(b->fd, 0);
    ck_assert_msg(bind(b->fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
    if (!refuse)
        ck_assert_int_eq(listen(b->fd, 16), 0);
}

/* Accept what is waiting, answer every whole request head received so far. */
static void serve(void)
{
    for (int i = 0; i < NBACKENDS; i++) {
        struct backend_srv *b = &srv[i];
        int fd;

        if (b->fd < 0 || b->refuse)
            continue;
        while (b->nconns < NCLIENTS &&
               (fd = accept4(b->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
            b->conns[b->nconns++] = fd;
        for (int k = 0; k < b->nconns; k++) {
            char *end, resp[256];
            ssize_t n;

            while ((n = recv(b->conns[k], b->buf[k] + b->len[k], sizeof(b->buf[k]) - 1 - b->len[k],
                             MSG_DONTWAIT)) > 0) {
                b->len[k] += (size_t)n;
                b->buf[k][b->len[k]] = '\0';
            }
            while ((end = strstr(b->buf[k] + b->done[k], "\r\n\r\n")) != NULL) {
                ck_assert_int_lt(b->nreqs, NCLIENTS);
                ck_assert_int_eq(
                    sscanf(b->buf[k] + b->done[k], "GET %31s HTTP/1.1", b->paths[b->nreqs]), 1);
                b->nreqs++;
                b->done[k] = (size_t)(end + 4 - b->buf[k]);
                snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
                         strlen(b->name), b->name);
                ck_assert_int_eq(send(b->conns[k], resp, strlen(resp), MSG_NOSIGNAL),
                                 (ssize_t)strlen(resp));
            }
        }
    }
}

static void backends_close(void)
{
    for (int i = 0; i < NBACKENDS; i++) {
        for (int k = 0; k < srv[i].nconns; k++)
            close(srv[i].conns[k]);
        if (srv[i].fd >= 0)
            close(srv[i].fd);
    }
}

/* --- a worker run by the test thread (workerfix.h) ----------------------------------------- */

/*
 * A config whose one pool "api" has the backends opened above (backend i
 * in group groups[i]), plus `pool_extra`; its model and first snapshot, the
 * modules, the report recorder, and one worker as main.c's run() sets them
 * up, minus the thread: the test runs the loop (step()), the backends take
 * their turn after each step (serve()).
 */
static void start_with(int nb, const char *const groups[], const char *pool_extra,
                       const char *extra)
{
    char text[2048];
    size_t off;

    memset(&reports, 0, sizeof(reports));
    off = (size_t)snprintf(text, sizeof(text),
                           "workers = 1;\n"
                           "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
                           "pools = ( { name = \"api\"; backends = ( ");
    for (int i = 0; i < nb; i++)
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "%s{ name = \"%s\"; address = \"127.0.0.1:%d\"; group = \"%s\"; }",
                                i ? ", " : "", srv[i].name, local_port(srv[i].fd), groups[i]);
    snprintf(text + off, sizeof(text) - off, " ); %s } );\n%s", pool_extra, extra);
    report_bind(record_report, NULL);
    wfix_start(text, WFIX_MODULES | WFIX_TICK);
    fx.serve = serve;
}

static void start(int nb, const char *const groups[], const char *pool_extra)
{
    start_with(nb, groups, pool_extra, "");
}

static void stop(void)
{
    wfix_stop();
    backends_close();
}

/* --- the fake client side: txnfix.h ------------------------------------------------------ */

static struct fake clients[NCLIENTS];

/*
 * Client k asks GET path: its bytes framed as the HTTP/1 codec frames them
 * (head parsed, the empty body completing the request), then handed to a
 * new transaction (txn_new, txn_head_ready).
 */
static void ask(int k, const char *path)
{
    char raw[128];
    size_t n =
        (size_t)snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: veer.test\r\n\r\n", path);

    fake_ask(&clients[k], raw, n);
}

static bool answered(void *arg)
{
    return clients[*(int *)arg].answers > 0;
}

/* Ask and wait for the answer; the body names the backend that answered. */
static struct fake *ask_wait(int k, const char *path)
{
    ask(k, path);
    ck_assert_msg(run_until(answered, &k), "request %s not answered", path);
    ck_assert_int_eq(clients[k].answers, 1);
    ck_assert_int_eq(clients[k].aborts, 0);
    return &clients[k];
}

static const char *body(const struct fake *f)
{
    const char *b = strstr(f->out, "\r\n\r\n");

    ck_assert_msg(b != NULL, "no head in: %s", f->out);
    return b + 4;
}

static struct rt_backend *model_backend(const char *name)
{
    struct rt_pool *p = &fx.m->pools[0];

    for (uint32_t i = 0; i < p->nb; i++)
        if (strcmp(p->b[i].be->name, name) == 0)
            return &p->b[i];
    ck_abort_msg("no backend %s", name);
    return NULL;
}

/* --- pick -------------------------------------------------------------------------------- */

static void set_share(const char *group, int share)
{
    struct rt_pool *p = &fx.m->pools[0];

    p->g[model_group(p, group)].share = share;
}

/*
 * Shares blue 75 / green 25: of 8 requests, blue-1 answers 6 and green-1 2
 * (swrr is exact over each cycle). The snapshot then says 0 / 100: the next
 * 4 all go to green-1.
 */
START_TEST(test_requests_go_to_the_backends_the_snapshot_gives_by_share)
{
    static const char *const groups[] = {"blue", "green"};
    int blue = 0, green = 0;
    char path[32];

    backend_open(0, "blue-1", false);
    backend_open(1, "green-1", false);
    srv[2].fd = -1;
    start(2, groups, "shares = { blue = 75; green = 25; };");
    for (int k = 0; k < 8; k++) {
        struct fake *f;

        snprintf(path, sizeof(path), "/a%d", k);
        f = ask_wait(k, path);
        ck_assert_int_eq(f->status, 200);
        blue += strcmp(body(f), "blue-1") == 0;
        green += strcmp(body(f), "green-1") == 0;
    }
    ck_assert_int_eq(blue, 6);
    ck_assert_int_eq(green, 2);
    ck_assert_int_eq(srv[0].nreqs, 6);
    ck_assert_int_eq(srv[1].nreqs, 2);

    set_share("blue", 0);
    set_share("green", 100);
    publish();
    for (int k = 0; k < 4; k++) {
        struct fake *f;

        snprintf(path, sizeof(path), "/b%d", k);
        f = ask_wait(k, path);
        ck_assert_int_eq(f->status, 200);
        ck_assert_str_eq(body(f), "green-1");
    }
    ck_assert_int_eq(srv[0].nreqs, 6);
    ck_assert_int_eq(srv[1].nreqs, 6);
    ck_assert_uint_eq(reports.n, 0); /* nothing failed */
    stop();
}
END_TEST

/* --- the series a request is counted in ------------------------------------------------- */

/* The cells of c as (key, 2xx, 5xx, duration count) in one string, newest first. */
static void cells_text(const struct metrics_cells *c, char *out, size_t len)
{
    size_t off = 0;

    out[0] = '\0';
    for (const struct metrics_cell *cell = metrics_cells_first(c); cell; cell = cell->next)
        off += (size_t)snprintf(
            out + off, len - off, "[%llx %llu %llu %llu]", (unsigned long long)cell->key,
            (unsigned long long)cell->st.requests[1], (unsigned long long)cell->st.requests[4],
            (unsigned long long)cell->st.latency.count);
}

/*
 * Route "pay" to api: its requests are counted in the backend's cell of the
 * route's metric slot, the others in the backend's figures of requests on
 * no route, each request once; with the route in maintenance, veer's own
 * 503s in the worker's cell of (slot, pool). The backend's totals are the sum.
 */
START_TEST(test_a_request_is_counted_in_its_routes_series_only)
{
    static const char *const groups[] = {"main"};
    struct backend_wstat *ws;
    uint64_t req[5] = {0}, lat[LAT_BUCKETS + 1] = {0}, n = 0;
    uint32_t slot;
    char got[256], want[256];

    backend_open(0, "one", false);
    srv[1].fd = srv[2].fd = -1;
    start_with(1, groups, "",
               "routes = ( { name = \"other\"; pool = \"api\"; match = { path = \"/o\"; }; },\n"
               "  { name = \"pay\"; pool = \"api\"; match = { path_prefix = \"/pay\"; }; } );\n");
    slot = fx.m->routes[1].slot;
    ws = &model_backend("one")->be->ws[0];
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(ask_wait(k, "/pay/x")->status, 200);
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(ask_wait(k, "/else")->status, 200);
    ck_assert_uint_eq(ws->fb.requests[1], 2);
    ck_assert_uint_eq(ws->fb.latency.count, 2);
    cells_text(&ws->routed, got, sizeof(got));
    snprintf(want, sizeof(want), "[%x 3 0 3]", slot);
    ck_assert_str_eq(got, want);
    backend_wstat_requests(ws, req, lat);
    ck_assert_uint_eq(req[1], 5);
    for (unsigned b = 0; b <= LAT_BUCKETS; b++)
        n += lat[b];
    ck_assert_uint_eq(n, 5);
    cells_text(&fx.w->local_routed, got, sizeof(got));
    ck_assert_str_eq(got, "");

    fx.m->routes[1].maint = true;
    publish();
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(ask_wait(k, "/pay")->status, 503);
    ck_assert_int_eq(ask_wait(0, "/else")->status, 200);
    cells_text(&fx.w->local_routed, got, sizeof(got));
    snprintf(want, sizeof(want), "[%llx 0 4 4]", (unsigned long long)worker_local_key(slot, 0));
    ck_assert_str_eq(got, want);
    ck_assert_uint_eq(fx.w->local[0].requests[4], 0);
    ck_assert_uint_eq(ws->fb.requests[1], 3);
    cells_text(&ws->routed, got, sizeof(got));
    snprintf(want, sizeof(want), "[%x 3 0 3]", slot);
    ck_assert_str_eq(got, want);
    stop();
}
END_TEST

/* --- retry on connect failure ------------------------------------------------------------ */

/*
 * bad-1 refuses connections, good-1 answers; retries allowed. Each of 4
 * requests is answered 200 by good-1, once; every time bad-1 was tried
 * counts one connect error on it, and one retry.
 */
START_TEST(test_a_refused_connect_is_retried_on_another_backend_and_answered_once)
{
    static const char *const groups[] = {"main", "main"};
    struct backend *bad;
    uint64_t errs, retries;
    char path[32];

    backend_open(0, "bad-1", true);
    backend_open(1, "good-1", false);
    srv[2].fd = -1;
    start(2, groups,
          "retries = { count = 2; base_ms = 1; cap_ms = 1; budget_percent = 100; };"
          "breaker = { failures = 100; };");
    bad = model_backend("bad-1")->be;
    for (int k = 0; k < 4; k++) {
        struct fake *f;

        snprintf(path, sizeof(path), "/r%d", k);
        f = ask_wait(k, path);
        ck_assert_int_eq(f->status, 200);
        ck_assert_str_eq(body(f), "good-1");
    }
    /* A few more steps: a second answer or a late retry would show up. */
    for (int i = 0; i < 5; i++)
        step();
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(clients[k].answers, 1);
    ck_assert_int_eq(srv[1].nreqs, 4);
    for (int k = 0; k < 4; k++) {
        char want[32];

        snprintf(want, sizeof(want), "/r%d", k);
        ck_assert_str_eq(srv[1].paths[k], want);
    }
    errs = atomic_load(&bad->ws[0].errors[UERR_CONNECT]);
    retries = atomic_load(&fx.w->mstat.retries);
    ck_assert_uint_ge(errs, 1); /* swrr over equal weights tries bad-1 for every other request */
    ck_assert_uint_eq(errs, retries);
    ck_assert_uint_eq(backend_wstat_failures(&bad->ws[0]), errs);
    ck_assert_uint_eq(atomic_load(&bad->ws[0].active), 0);
    ck_assert_uint_eq(atomic_load(&model_backend("good-1")->be->ws[0].active), 0);
    ck_assert_uint_eq(reports.n, 0); /* below the breaker's threshold */
    stop();
}
END_TEST

/* --- hold until a snapshot ------------------------------------------------------------- */

static bool held_n(void *arg)
{
    return fx.w->held.n == *(unsigned *)arg;
}

static bool switched(void *arg)
{
    (void)arg;
    return fx.w->routing == routing_current();
}

/*
 * The pool's only backend is in maintenance (admin MAINT) and the pool holds
 * requests (hold_ms): a request waits on the hold queue, unanswered and not
 * sent, through a publish that changes nothing for it. The publish that puts
 * the backend back releases it: the backend gets it once, the client one 200.
 */
START_TEST(test_a_request_with_no_eligible_backend_is_held_until_a_snapshot_releases_it)
{
    static const char *const groups[] = {"main"};
    unsigned one = 1;

    backend_open(0, "api-1", false);
    srv[1].fd = srv[2].fd = -1;
    start(1, groups, "hold_ms = 10000;");
    model_backend("api-1")->admin = ADMIN_MAINT;
    publish();
    ck_assert(run_until(switched, NULL));
    ask(0, "/held");
    ck_assert_msg(run_until(held_n, &one), "not held");
    ck_assert_int_eq(clients[0].t->phase, TXN_HELD);

    publish(); /* still no eligible backend */
    ck_assert(run_until(switched, NULL));
    for (int i = 0; i < 5; i++)
        step();
    ck_assert_uint_eq(fx.w->held.n, 1);
    ck_assert_int_eq(clients[0].answers, 0);
    ck_assert_uint_eq(clients[0].outlen, 0);
    ck_assert_int_eq(srv[0].nconns, 0);

    model_backend("api-1")->admin = ADMIN_READY;
    publish();
    ck_assert_msg(run_until(answered, &(int){0}), "the held request was not answered");
    for (int i = 0; i < 5; i++)
        step();
    ck_assert_int_eq(clients[0].answers, 1);
    ck_assert_int_eq(clients[0].status, 200);
    ck_assert_str_eq(body(&clients[0]), "api-1");
    ck_assert_int_eq(srv[0].nreqs, 1);
    ck_assert_str_eq(srv[0].paths[0], "/held");
    ck_assert_uint_eq(fx.w->held.n, 0);
    ck_assert_uint_eq(atomic_load(&fx.w->mstat.held), 0);
    ck_assert_int_eq(clients[0].resumes, 0);
    stop();
}
END_TEST

/*
 * Maintenance with --hold (the maintenance module answers VEER_AGAIN): the
 * request waits on the hold queue through a publish that leaves maintenance
 * on; the publish that ends it sends the request to the backend once, and
 * its client gets one 200.
 */
START_TEST(test_a_request_held_by_maintenance_is_answered_once_when_it_ends)
{
    static const char *const groups[] = {"main"};
    unsigned one = 1;

    backend_open(0, "api-1", false);
    srv[1].fd = srv[2].fd = -1;
    start(1, groups, "");
    fx.m->maint = true;
    fx.m->maint_retry_after = 5;
    fx.m->maint_hold_ms = 10000;
    publish();
    ck_assert(run_until(switched, NULL));
    ask(0, "/maint");
    ck_assert_msg(run_until(held_n, &one), "not held");

    publish(); /* maintenance still on */
    ck_assert(run_until(switched, NULL));
    for (int i = 0; i < 5; i++)
        step();
    ck_assert_uint_eq(fx.w->held.n, 1);
    ck_assert_int_eq(clients[0].answers, 0);
    ck_assert_int_eq(srv[0].nconns, 0);

    fx.m->maint = false;
    fx.m->maint_retry_after = 0;
    fx.m->maint_hold_ms = 0;
    publish();
    ck_assert_msg(run_until(answered, &(int){0}), "the held request was not answered");
    for (int i = 0; i < 5; i++)
        step();
    ck_assert_int_eq(clients[0].answers, 1);
    ck_assert_int_eq(clients[0].status, 200);
    ck_assert_str_eq(body(&clients[0]), "api-1");
    ck_assert_int_eq(srv[0].nreqs, 1);
    ck_assert_str_eq(srv[0].paths[0], "/maint");
    ck_assert_uint_eq(fx.w->held.n, 0);
    ck_assert_uint_eq(atomic_load(&fx.w->mstat.held), 0);
    stop();
}
END_TEST

/* --- breaker report order ----------------------------------------------------------------- */

/*
 * Half-open backends report every outcome. bad-1 and bad-2 refuse, good-1
 * answers, no retries: each request's outcome (its 502 names the backend
 * that failed it, a 200's body the one that answered) is one REPORT_BREAKER,
 * and the reports come in the order the requests had their outcomes.
 */
START_TEST(test_breaker_reports_arrive_in_the_order_the_outcomes_happened)
{
    static const char *const groups[] = {"main", "main", "main"};
    char path[32];
    int n = 9;

    backend_open(0, "bad-1", true);
    backend_open(1, "good-1", false);
    backend_open(2, "bad-2", true);
    start(3, groups, "retries = { count = 0; };");
    for (int i = 0; i < NBACKENDS; i++)
        atomic_store(&model_backend(srv[i].name)->be->breaker, BREAKER_HALF_OPEN);
    for (int k = 0; k < n; k++) {
        struct fake *f;

        snprintf(path, sizeof(path), "/o%d", k);
        f = ask_wait(k, path);
        ck_assert_msg(f->status == 200 || f->status == 502, "%d", f->status);
    }
    ck_assert_uint_eq(reports.n, (unsigned)n);
    for (int k = 0; k < n; k++) {
        const struct fake *f = &clients[k];
        char want[64];

        ck_assert_int_eq(reports.r[k].type, REPORT_BREAKER);
        if (f->status == 200) {
            ck_assert_str_eq(reports.r[k].backend, body(f));
            ck_assert_msg(reports.r[k].ok, "report %d: a success reported as a failure", k);
        } else {
            const char *at;

            /* "cannot connect to backend NAME: ..." or "backend NAME refused connection: ..." */
            snprintf(want, sizeof(want), "backend %s", reports.r[k].backend);
            at = strstr(f->out, want);
            ck_assert_msg(at != NULL && (at[strlen(want)] == ':' || at[strlen(want)] == ' '),
                          "report %d names %s, the answer: %s", k, reports.r[k].backend, f->out);
            ck_assert_msg(!reports.r[k].ok, "report %d: a failure reported as a success", k);
        }
    }
    /* Every backend had its turn: the order covers all three. */
    for (int i = 0; i < NBACKENDS; i++) {
        int seen = 0;

        for (int k = 0; k < n; k++)
            seen += strcmp(reports.r[k].backend, srv[i].name) == 0;
        ck_assert_msg(seen == n / NBACKENDS, "%s reported %d times", srv[i].name, seen);
    }
    stop();
}
END_TEST

/*
 * A closed breaker: one worker's run of failures on a backend is reported
 * once, when it reaches `failures`, not before and not again after.
 */
START_TEST(test_a_run_of_failures_is_reported_once_at_the_threshold)
{
    static const char *const groups[] = {"main"};
    char path[32];

    backend_open(0, "bad-1", true);
    srv[1].fd = srv[2].fd = -1;
    start(1, groups, "retries = { count = 0; }; breaker = { failures = 3; window_ms = 60000; };");
    for (int k = 0; k < 5; k++) {
        struct fake *f;

        snprintf(path, sizeof(path), "/f%d", k);
        f = ask_wait(k, path);
        ck_assert_int_eq(f->status, 502);
        ck_assert_uint_eq(reports.n, k < 2 ? 0u : 1u);
    }
    ck_assert_int_eq(reports.r[0].type, REPORT_BREAKER);
    ck_assert_str_eq(reports.r[0].backend, "bad-1");
    ck_assert(!reports.r[0].ok);
    ck_assert_uint_eq(atomic_load(&model_backend("bad-1")->be->ws[0].errors[UERR_CONNECT]), 5);
    stop();
}
END_TEST

static Suite *txn_suite(void)
{
    Suite *s = suite_create("txn");
    TCase *tp = tcase_create("pick");
    TCase *tr = tcase_create("retry");
    TCase *th = tcase_create("hold");
    TCase *tb = tcase_create("breaker");

    tcase_add_test(tp, test_requests_go_to_the_backends_the_snapshot_gives_by_share);
    tcase_add_test(tp, test_a_request_is_counted_in_its_routes_series_only);
    tcase_add_test(tr, test_a_refused_connect_is_retried_on_another_backend_and_answered_once);
    tcase_add_test(th,
                   test_a_request_with_no_eligible_backend_is_held_until_a_snapshot_releases_it);
    tcase_add_test(th, test_a_request_held_by_maintenance_is_answered_once_when_it_ends);
    tcase_add_test(tb, test_breaker_reports_arrive_in_the_order_the_outcomes_happened);
    tcase_add_test(tb, test_a_run_of_failures_is_reported_once_at_the_threshold);
    suite_add_tcase(s, tp);
    suite_add_tcase(s, tr);
    suite_add_tcase(s, th);
    suite_add_tcase(s, tb);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(txn_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
