/*
 * check_rollout.c - canary rollouts (rollout.c) driven on a control plane
 * set up as control_init sets it up (a model from a config text, routing,
 * real workers made by worker_create (workerfix.h) but never started, so
 * that what the control plane sends them waits in their mailbox to be read
 * back):
 * start and its refusals, steps taken by firing the step timer by hand,
 * the capacity guard pausing a step, pause/resume/abort, the analysis fed
 * from per-worker backend counters and histograms one rollout_tick (one
 * 100 ms slot) at a time (error rate, p99, min-requests, the sliding
 * window, which figures count), rollback to the pre-rollout shares,
 * weights and admin states in one publish, `rollout status`, the /status
 * JSON, and the state file line (render, restore, refusal of bad lines).
 * Nothing waits for a clock: the periodic tick is stopped, the analysis is
 * ticked by hand and the step timer is made active and run at once.
 */
#include "audit.h"
#include "cmd.h"
#include "control-i.h"
#include "metrics.h"
#include "model.h"
#include "rollout.h"
#include "sbuf.h"
#include "state.h"
#include "veer.h"
#include "worker.h"
#include "workerfix.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define NW 2

#define LISTEN "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"

/*
 * api: blue-1, blue-2 (blue) and green-1, green-2 (green), blue 100%: a
 * canary may take any share (2 of 4 READY backends, headroom 2).
 * tri: three groups. cap: four blue and one green: green may take 40%.
 */
#define CONF                                                                                       \
    LISTEN                                                                                         \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; },"         \
    "{ name = \"green-2\"; address = \"127.0.0.1:4\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; },"                                                      \
    "{ name = \"tri\"; backends = ("                                                               \
    "{ name = \"b\"; address = \"127.0.0.1:5\"; group = \"blue\"; },"                              \
    "{ name = \"g\"; address = \"127.0.0.1:6\"; group = \"green\"; },"                             \
    "{ name = \"r\"; address = \"127.0.0.1:7\"; group = \"red\"; } );"                             \
    "shares = { blue = 100; green = 0; red = 0; }; },"                                             \
    "{ name = \"cap\"; backends = ("                                                               \
    "{ name = \"c1\"; address = \"127.0.0.1:11\"; group = \"blue\"; },"                            \
    "{ name = \"c2\"; address = \"127.0.0.1:12\"; group = \"blue\"; },"                            \
    "{ name = \"c3\"; address = \"127.0.0.1:13\"; group = \"blue\"; },"                            \
    "{ name = \"c4\"; address = \"127.0.0.1:14\"; group = \"blue\"; },"                            \
    "{ name = \"cg\"; address = \"127.0.0.1:15\"; group = \"green\"; } );"                         \
    "shares = { blue = 100; green = 0; }; } );\n"

#define API   0
#define TRI   1
#define CAP   2
#define BLUE  0 /* group indexes: order of first appearance */
#define GREEN 1

/* Status classes as counted per backend (requests[cls]: 1xx..5xx). */
#define C2XX 1
#define C3XX 2
#define C4XX 3
#define C5XX 4

#define FAST_US 200    /* <= 0.5 ms: the first latency bucket */
#define P500_US 500000 /* exactly 500 ms: the 0.5 s bucket */
#define SLOW_US 600000 /* the 1 s bucket: p99 reads 1000 ms */

/* The control plane under test. */
static struct {
    struct veer_conf *c;
    struct model *m;
    struct worker *w[NW];
    struct event_base *base;
    char audit[64];
} F;

/*
 * Bring the control plane up as veer does: model (with state text applied
 * first, like the state file at start), routing, audit log, workers
 * (created, never started), control_init. The 100 ms tick is stopped so
 * that the tests drive rollout_tick themselves.
 */
static void up_conf(const char *text, const char *state)
{
    char err[256];
    int fd;

    memset(&F, 0, sizeof(F));
    veer_nworkers = NW;
    F.c = wfix_conf(text);
    F.m = model_from_conf(F.c);
    if (state)
        ck_assert_int_ge(state_apply(F.m, state, err, sizeof(err)), 0);
    routing_init(NW, routing_build(F.m));
    snprintf(F.audit, sizeof(F.audit), "/tmp/check_rollout_audit_XXXXXX");
    fd = mkstemp(F.audit);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(audit_open(F.audit, err, sizeof(err)), 0);
    wfix_workers(F.c, NW, F.w);
    F.base = event_base_new();
    ck_assert_ptr_nonnull(F.base);
    ck_assert_int_eq(control_init(F.base, F.c, F.m, F.w, NW), VEER_OK);
    event_del(ctl.tick);
}

static void up_with_state(const char *state)
{
    up_conf(CONF, state);
}

static void up(void)
{
    up_with_state(NULL);
}

/* Free what the control plane queued for worker i; how many messages of type named be. */
static unsigned drain_mq(unsigned i, enum wmsg_type type, const char *be)
{
    struct mailbox_node *node = mailbox_take(&F.w[i]->inbox);
    unsigned n = 0;

    while (node) {
        struct wmsg *m = container_of(node, struct wmsg, node);

        node = node->next;
        for (unsigned k = 0; k < m->n; k++)
            if (m->type == type && be && strcmp(m->be[k]->name, be) == 0)
                n++;
        wmsg_free(m);
    }
    return n;
}

static void down(void)
{
    control_shutdown();
    event_base_free(F.base);
    for (unsigned i = 0; i < NW; i++) {
        drain_mq(i, WMSG_WARM, NULL);
        worker_destroy(F.w[i]); /* before the snapshot its balancers point into */
    }
    routing_shutdown();
    model_free(F.m);
    conf_free(F.c);
    audit_close();
    unlink(F.audit);
}

/* --- commands ------------------------------------------------------------------------- */

static char reply[8192];
static bool replied, reply_ok;

static void on_done(struct ctl_req *r, const char *text, bool ok)
{
    (void)r;
    snprintf(reply, sizeof(reply), "%s", text);
    replied = true;
    reply_ok = ok;
}

/* Run an admin line through control_execute; its reply comes at once. */
static const char *run(const char *line)
{
    struct ctl_req *r = calloc(1, sizeof(*r));
    char err[256];

    ck_assert_msg(cmd_parse(line, &r->cmd, err, sizeof(err)) == 0, "%s: %s", line, err);
    snprintf(r->line, sizeof(r->line), "%s", line);
    r->peer = (struct audit_peer){1000, 1000, 4242};
    r->t_read_us = veer_now_us();
    r->done = on_done;
    replied = false;
    control_execute(r);
    ck_assert_msg(replied, "no reply to %s", line);
    ck_assert_msg(strlen(reply) >= 2 && strcmp(reply + strlen(reply) - 2, "\n\n") == 0,
                  "reply not ended by an empty line: %s", reply);
    return reply;
}

static void run_ok(const char *line)
{
    run(line);
    ck_assert_msg(reply_ok && strncmp(reply, "OK gen=", 7) == 0, "%s: %s", line, reply);
}

static void run_refused(const char *line, const char *want)
{
    run(line);
    ck_assert_msg(!reply_ok && strncmp(reply, "ERR ", 4) == 0, "%s: %s", line, reply);
    ck_assert_msg(strstr(reply, want) != NULL, "%s: %s (want %s)", line, reply, want);
}

/* --- the model ---------------------------------------------------------------------------- */

static struct rt_pool *pool(int pi)
{
    return &F.m->pools[pi];
}

static int share(int pi, int g)
{
    return pool(pi)->g[g].share;
}

static struct rt_backend *be(int pi, const char *name)
{
    int i = model_find_backend(pool(pi), name);

    ck_assert_int_ge(i, 0);
    return &pool(pi)->b[i];
}

/* The published snapshot agrees with the model: generation and shares. */
static void assert_published(int pi, int blue, int green)
{
    const struct routing *r = routing_current();

    ck_assert_int_eq(share(pi, BLUE), blue);
    ck_assert_int_eq(share(pi, GREEN), green);
    ck_assert_uint_eq(r->generation, F.m->generation);
    ck_assert_int_eq(r->pools[pi].share[BLUE], blue);
    ck_assert_int_eq(r->pools[pi].share[GREEN], green);
}

/* --- traffic: what workers count per backend ---------------------------------------------- */

/* n requests answered with status class cls, each taking us, on backend name, by worker w. */
static void traffic(int pi, const char *name, unsigned w, unsigned cls, unsigned n, uint64_t us)
{
    struct backend_wstat *ws = &be(pi, name)->be->ws[w];

    for (unsigned i = 0; i < n; i++) {
        counter_add(&ws->fb.requests[cls], 1);
        hist_observe(&ws->fb.latency, us);
    }
}

static void upstream_errors(int pi, const char *name, unsigned w, enum upstream_err kind,
                            unsigned n)
{
    counter_add(&be(pi, name)->be->ws[w].errors[kind], n);
}

static void ticks(unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        rollout_tick();
}

/* --- the step timer ---------------------------------------------------------------------- */

struct evlist {
    struct event *ev[16];
    int n;
};

static int collect_timer(const struct event_base *b, const struct event *ev, void *arg)
{
    struct evlist *l = arg;

    (void)b;
    if (ev != ctl.tick && event_get_fd(ev) < 0 && l->n < 16)
        l->ev[l->n++] = (struct event *)ev;
    return 0;
}

/* Timers pending on the control base besides the stopped tick: the rollouts' step timers. */
static struct evlist step_timers(void)
{
    struct evlist l = {.n = 0};

    event_base_foreach_event(F.base, collect_timer, &l);
    return l;
}

/* How long until the only step timer fires, in ms. */
static long step_due_ms(void)
{
    struct evlist l = step_timers();
    struct timeval due, now;

    ck_assert_int_eq(l.n, 1);
    ck_assert(event_pending(l.ev[0], EV_TIMEOUT, &due));
    gettimeofday(&now, NULL);
    return (due.tv_sec - now.tv_sec) * 1000L + (due.tv_usec - now.tv_usec) / 1000L;
}

/* The step timer armed for the whole interval (allowing a busy machine 2 s of delay). */
static void assert_step_armed(long interval_ms)
{
    long ms = step_due_ms();

    ck_assert_msg(ms > interval_ms - 2000 && ms <= interval_ms + 100,
                  "step timer due in %ld ms, interval %ld ms", ms, interval_ms);
}

/* The interval is over: run the step timer's callback now. */
static void fire_step(void)
{
    struct evlist l = step_timers();

    ck_assert_int_eq(l.n, 1);
    event_active(l.ev[0], EV_TIMEOUT, 1);
    ck_assert_int_ge(event_base_loop(F.base, EVLOOP_NONBLOCK), 0);
}

/* --- the audit log ------------------------------------------------------------------------ */

/* The audit records of actor, as a JSON array (caller decrefs). */
static json_t *audit_of(const char *actor)
{
    FILE *f = fopen(F.audit, "r");
    json_t *out = json_array();
    char line[8192];

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t e;
        json_t *rec = json_loads(line, 0, &e);

        ck_assert_msg(rec != NULL, "audit line: %s: %s", e.text, line);
        if (strcmp(json_string_value(json_object_get(rec, "actor")), actor) == 0)
            json_array_append(out, rec);
        json_decref(rec);
    }
    fclose(f);
    return out;
}

static const char *rec_str(json_t *a, size_t i, const char *key)
{
    const char *s = json_string_value(json_object_get(json_array_get(a, i), key));

    ck_assert_msg(s != NULL, "record %zu has no %s", i, key);
    return s;
}

static uint64_t rec_gen(json_t *a, size_t i)
{
    return (uint64_t)json_integer_value(json_object_get(json_array_get(a, i), "generation"));
}

/* --- rollout status ------------------------------------------------------------------------ */

/* A line of `rollout status` starting with prefix (the prefix's own line), copied. */
static char *status_line(const char *status, const char *prefix)
{
    static char line[512];

    for (const char *s = status; *s;) {
        size_t n = strcspn(s, "\n");

        if (strncmp(s, prefix, strlen(prefix)) == 0) {
            snprintf(line, sizeof(line), "%.*s", (int)n, s);
            return line;
        }
        s += n + (s[n] == '\n');
    }
    ck_abort_msg("no '%s' line in %s", prefix, status);
    return NULL;
}

/* s starts / ends with x. */
#define ck_assert_prefix(s, x)                                                                     \
    ck_assert_msg(strncmp((s), (x), strlen(x)) == 0, "'%s' does not start with '%s'", (s), (x))
#define ck_assert_suffix(s, x)                                                                     \
    ck_assert_msg(strlen(s) >= strlen(x) && strcmp((s) + strlen(s) - strlen(x), (x)) == 0,         \
                  "'%s' does not end with '%s'", (s), (x))

static const char *verdict(const char *pool_name)
{
    char line[128];

    snprintf(line, sizeof(line), "rollout status %s", pool_name);
    run(line);
    ck_assert_msg(reply_ok, "%s", reply);
    return status_line(reply, "verdict ") + strlen("verdict ");
}

/* The `state` line of the pool's `rollout status`: running, paused or ended. */
static void assert_state(const char *pool_name, const char *want)
{
    char line[128];

    snprintf(line, sizeof(line), "rollout status %s", pool_name);
    run(line);
    ck_assert_msg(reply_ok, "%s", reply);
    ck_assert_str_eq(status_line(reply, "state "), want);
}

/* --- start, steps, completion ---------------------------------------------------------- */

START_TEST(test_start_applies_the_first_step_in_one_publish)
{
    unsigned long long gen, us;
    uint64_t gen0;
    unsigned retired0;
    char step[16], *text;
    int sh = -1;
    json_t *ro, *op;

    up();
    gen0 = F.m->generation;
    retired0 = routing_retired_count();
    ck_assert_ptr_null(rollout_render(API));
    ck_assert_int_eq(rollout_canary(API), -1);
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s");
    ck_assert_int_eq(
        sscanf(reply, "OK gen=%llu applied_us=%llu step=%15s share=%d", &gen, &us, step, &sh), 4);
    ck_assert_uint_eq(gen, gen0 + 1);
    ck_assert_str_eq(step, "1/3");
    ck_assert_int_eq(sh, 10);
    assert_published(API, 90, 10);
    ck_assert_uint_eq(routing_retired_count(), retired0 + 1); /* exactly one snapshot stored */
    ck_assert_int_eq(rollout_canary(API), GREEN);
    ck_assert_int_eq(routing_current()->pools[API].canary, GREEN);
    assert_step_armed(30000);

    /* The state file line follows the rollout, defaults filled in. */
    text = rollout_render(API);
    ck_assert_str_eq(text, "canary=green;step=0;steps=10,50,100;interval=30000;err=5;p99=500;"
                           "min=50;paused=0;pre=blue:100,green:0;prew=blue-1:100:ready,"
                           "blue-2:100:ready,green-1:100:ready,green-2:100:ready");
    ck_assert_str_eq(pool(API)->rollout, text);
    free(text);
    text = state_render(F.m);
    ck_assert_ptr_nonnull(strstr(text, "\npool api\nrollout canary=green;step=0;steps=10,50,100;"));
    free(text);

    /* Audited: the step by the rollout engine, the command by the operator. */
    ro = audit_of("rollout");
    op = audit_of("operator");
    ck_assert_uint_eq(json_array_size(ro), 1);
    ck_assert_str_eq(rec_str(ro, 0, "command"), "rollout api step 1/3: green=10 blue=90");
    ck_assert_str_eq(rec_str(ro, 0, "result"), "OK");
    ck_assert_uint_eq(rec_gen(ro, 0), gen);
    ck_assert_int_eq(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(json_array_get(ro, 0), "before"), "shares"), "green")),
        0);
    ck_assert_int_eq(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(json_array_get(ro, 0), "after"), "shares"), "green")),
        10);
    ck_assert_uint_eq(json_array_size(op), 1);
    ck_assert_str_eq(rec_str(op, 0, "command"),
                     "rollout start api canary=green steps=10,50,100 interval=30s");
    ck_assert_str_eq(rec_str(op, 0, "result"), "OK");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(op, 0), "uid")), 1000);
    json_decref(ro);
    json_decref(op);
    down();
}
END_TEST

START_TEST(test_refused_starts_change_nothing)
{
    uint64_t gen0;
    json_t *op;

    up();
    gen0 = F.m->generation;
    run_refused("rollout start nope canary=green steps=10,100 interval=1s", "unknown pool nope");
    run_refused("rollout start api canary=purple steps=10,100 interval=1s",
                "unknown group purple in pool api");
    run_refused("rollout start tri canary=green steps=10,100 interval=1s",
                "a rollout needs exactly two groups; pool tri has 3");
    /* The capacity guard refuses a first step over the bound: 1 of 5 READY x 2 = 40%. */
    run_refused("rollout start cap canary=green steps=50,100 interval=1s", "capacity_headroom");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    assert_published(CAP, 100, 0);
    ck_assert_int_eq(share(TRI, 0) + share(TRI, 1) + share(TRI, 2), 100);
    ck_assert_int_eq(share(TRI, 0), 100);
    run_refused("rollout status cap", "no rollout in pool cap");
    run_refused("rollout status tri", "no rollout in pool tri");
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_ptr_null(pool(CAP)->rollout);

    /* One at a time per pool. */
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s");
    gen0 = F.m->generation;
    run_refused("rollout start api canary=green steps=5,100 interval=1s", "already running");
    run_refused("rollout start api canary=blue steps=5,100 interval=1s", "already running");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 90, 10);
    ck_assert_int_eq(rollout_canary(API), GREEN);
    assert_step_armed(30000);

    /* Every refusal was audited with its reason. */
    op = audit_of("operator");
    ck_assert_uint_eq(json_array_size(op), 7);
    ck_assert_str_eq(rec_str(op, 0, "result"), "ERR unknown pool nope");
    ck_assert_str_eq(rec_str(op, 4, "result"), "OK");
    ck_assert_str_eq(rec_str(op, 5, "result"),
                     "ERR a rollout is already running in pool api (rollout abort api first)");
    json_decref(op);
    down();
}
END_TEST

START_TEST(test_commands_need_a_rollout_that_has_not_ended)
{
    uint64_t gen0;

    up();
    run_refused("rollout status api", "no rollout in pool api");
    run_refused("rollout pause api", "no rollout in pool api");
    run_refused("rollout resume api", "no rollout in pool api");
    run_refused("rollout abort api", "no rollout in pool api");
    run_refused("rollout abort nope", "unknown pool nope");
    run_ok("rollout start api canary=green steps=10,100 interval=30s");
    run_ok("rollout abort api");
    gen0 = F.m->generation;
    run_refused("rollout pause api",
                "the rollout in pool api has ended (rolled back: aborted by operator)");
    run_refused("rollout resume api", "has ended");
    run_refused("rollout abort api", "has ended");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_state("api", "state ended"); /* status still shows the last one */
    ck_assert_str_eq(verdict("api"), "rolled back: aborted by operator");
    ck_assert_int_eq(step_timers().n, 0);
    down();
}
END_TEST

START_TEST(test_each_interval_takes_the_next_step_then_completes)
{
    uint64_t gen0;
    char *text;
    json_t *ro;

    up();
    gen0 = F.m->generation;
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s");
    fire_step();
    assert_published(API, 50, 50);
    ck_assert_uint_eq(F.m->generation, gen0 + 2);
    assert_step_armed(30000); /* the next step a whole interval later */
    text = rollout_render(API);
    ck_assert_ptr_nonnull(strstr(text, ";step=1;steps=10,50,100;"));
    ck_assert_str_eq(pool(API)->rollout, text);
    free(text);
    run("rollout status api");
    ck_assert_str_eq(status_line(reply, "state "), "state running");
    ck_assert_prefix(status_line(reply, "step "), "step 2/3 share 50 ");

    fire_step();
    assert_published(API, 0, 100);
    ck_assert_uint_eq(F.m->generation, gen0 + 3);
    assert_state("api", "state running"); /* the last step is judged for an interval too */
    assert_step_armed(30000);

    fire_step();
    ck_assert_uint_eq(F.m->generation, gen0 + 3); /* already at 100%: no publish */
    assert_published(API, 0, 100);
    assert_state("api", "state ended");
    ck_assert_prefix(status_line(reply, "step "), "step 3/3 share 100 ");
    ck_assert_str_eq(verdict("api"), "complete: green has 100%");
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_ptr_null(pool(API)->rollout);
    ck_assert_ptr_null(rollout_render(API));
    ck_assert_int_eq(rollout_canary(API), -1);

    ro = audit_of("rollout");
    ck_assert_uint_eq(json_array_size(ro), 4);
    ck_assert_str_eq(rec_str(ro, 0, "command"), "rollout api step 1/3: green=10 blue=90");
    ck_assert_str_eq(rec_str(ro, 1, "command"), "rollout api step 2/3: green=50 blue=50");
    ck_assert_str_eq(rec_str(ro, 2, "command"), "rollout api step 3/3: green=100 blue=0");
    ck_assert_str_eq(rec_str(ro, 3, "command"), "rollout complete");
    for (size_t i = 0; i < 3; i++)
        ck_assert_uint_eq(rec_gen(ro, i), gen0 + 1 + i);
    json_decref(ro);
    down();
}
END_TEST

START_TEST(test_steps_below_100_end_with_the_canary_at_100)
{
    uint64_t gen0;

    up();
    gen0 = F.m->generation;
    run_ok("rollout start api canary=green steps=10,50 interval=30s");
    fire_step();
    assert_published(API, 50, 50);
    fire_step();
    assert_published(API, 0, 100);
    ck_assert_uint_eq(F.m->generation, gen0 + 3); /* one publish for the move to 100% */
    assert_state("api", "state ended");
    ck_assert_str_eq(verdict("api"), "complete: green has 100%");
    down();
}
END_TEST

START_TEST(test_step_over_the_capacity_bound_pauses_the_rollout)
{
    uint64_t gen;
    char *text;

    up();
    run_ok("rollout start cap canary=green steps=20,40,60 interval=30s");
    fire_step();
    assert_published(CAP, 60, 40); /* equal to the bound: allowed */
    gen = F.m->generation;
    fire_step(); /* 60% > 40%: refused */
    ck_assert_uint_eq(F.m->generation, gen);
    assert_published(CAP, 60, 40);
    assert_state("cap", "state paused");
    ck_assert_prefix(status_line(reply, "step "), "step 2/3 share 40 ");
    ck_assert_prefix(verdict("cap"), "paused: step 3 refused: ");
    ck_assert_ptr_nonnull(strstr(verdict("cap"), "capacity_headroom"));
    ck_assert_int_eq(step_timers().n, 0);
    /* Paused as the state file says, so a restart does not take the refused step on its own. */
    text = rollout_render(CAP);
    ck_assert_ptr_nonnull(strstr(text, ";step=1;"));
    ck_assert_ptr_nonnull(strstr(text, ";paused=1;"));
    ck_assert_str_eq(pool(CAP)->rollout, text);
    free(text);
    /* Resuming tries the step again an interval later: refused again, paused again. */
    run_ok("rollout resume cap");
    assert_step_armed(30000);
    fire_step();
    assert_state("cap", "state paused");
    ck_assert_uint_eq(F.m->generation, gen);
    run_ok("rollout abort cap");
    assert_published(CAP, 100, 0);
    down();
}
END_TEST

START_TEST(test_completion_to_100_respects_the_capacity_guard)
{
    uint64_t gen;

    up();
    run_ok("rollout start cap canary=green steps=20,40 interval=30s");
    fire_step();
    assert_published(CAP, 60, 40);
    gen = F.m->generation;
    fire_step(); /* the move to 100% would give green 100% with 1 of 5 READY backends */
    ck_assert_uint_eq(F.m->generation, gen);
    assert_published(CAP, 60, 40);
    assert_state("cap", "state paused");
    ck_assert_ptr_nonnull(strstr(verdict("cap"), "capacity_headroom"));
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_ptr_nonnull(strstr(pool(CAP)->rollout, ";paused=1;"));
    run_ok("rollout abort cap");
    assert_published(CAP, 100, 0);
    down();
}
END_TEST

START_TEST(test_snapshot_names_the_rollouts_canary)
{
    up();
    /* Without a rollout the second group of a two-group pool is the canary. */
    ck_assert_int_eq(routing_current()->pools[API].canary, GREEN);
    run_ok("rollout start api canary=blue steps=10,100 interval=30s");
    assert_published(API, 10, 90);
    ck_assert_int_eq(routing_current()->pools[API].canary, BLUE);
    run_ok("rollout abort api");
    assert_published(API, 100, 0);
    ck_assert_int_eq(routing_current()->pools[API].canary, GREEN);
    down();
}
END_TEST

/* --- pause, resume, abort ------------------------------------------------------------------ */

START_TEST(test_pause_stops_steps_and_analysis_until_resume)
{
    uint64_t gen;

    up();
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s min-requests=20");
    ticks(1);
    gen = F.m->generation;
    run_ok("rollout pause api");
    ck_assert_uint_eq(F.m->generation, gen); /* no publish */
    assert_state("api", "state paused");
    ck_assert_str_eq(verdict("api"), "paused by operator");
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_ptr_nonnull(strstr(pool(API)->rollout, ";paused=1;"));

    /* A failing canary while paused is not judged, then or after the resume. */
    traffic(API, "green-1", 0, C5XX, 100, FAST_US);
    ticks(5);
    assert_state("api", "state paused");
    assert_published(API, 90, 10);
    run_ok("rollout pause api"); /* pausing twice is harmless */
    run_ok("rollout resume api");
    ck_assert_uint_eq(F.m->generation, gen);
    assert_state("api", "state running");
    ck_assert_str_eq(verdict("api"), "running");
    assert_step_armed(30000); /* a new whole interval */
    ck_assert_ptr_nonnull(strstr(pool(API)->rollout, ";paused=0;"));
    ticks(3);
    assert_state("api", "state running");
    ck_assert_prefix(status_line(reply, "group green "), "group green share 10 ");
    ck_assert_suffix(status_line(reply, "group green "), " requests 0");

    /*
     * Resuming a running rollout is refused: it would restart the window (hiding
     * what failed in it) and the step clock.
     */
    traffic(API, "green-2", 1, C5XX, 10, FAST_US);
    run_refused("rollout resume api", "the rollout in pool api is not paused");
    assert_state("api", "state running");
    ck_assert_str_eq(verdict("api"), "running");

    /* What fails after the resume is judged, the failures before that refusal included. */
    traffic(API, "green-2", 1, C5XX, 10, FAST_US);
    ticks(1);
    assert_state("api", "state ended");
    assert_published(API, 100, 0);
    ck_assert_str_eq(verdict("api"),
                     "rolled back: green error rate 100.00% over 20 requests > max-error-rate "
                     "5.00%");
    down();
}
END_TEST

START_TEST(test_abort_restores_pre_rollout_shares_weights_and_states_in_one_publish)
{
    uint64_t gen;
    unsigned retired;
    json_t *ro;

    up();
    /* Operator decisions before the rollout: they are what a rollback goes back to. */
    run_ok("set weight api/blue-1 50");
    run_ok("drain api/blue-2");
    ck_assert(atomic_load(&be(API, "blue-2")->be->draining));
    for (unsigned i = 0; i < NW; i++)
        ck_assert_uint_eq(drain_mq(i, WMSG_CLOSE_IDLE, "blue-2"), 1);
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s");
    fire_step();
    assert_published(API, 50, 50);

    /* Changes during it: green-1's weight, green-2 drained, blue-2 back in rotation. */
    run_ok("set weight api/green-1 30");
    run_ok("drain api/green-2");
    ck_assert(atomic_load(&be(API, "green-2")->be->draining));
    be(API, "blue-2")->admin = ADMIN_READY;
    ctl_sync_draining(pool(API));
    ck_assert(!atomic_load(&be(API, "blue-2")->be->draining));
    for (unsigned i = 0; i < NW; i++)
        drain_mq(i, WMSG_WARM, NULL);

    gen = F.m->generation;
    retired = routing_retired_count();
    run_ok("rollout abort api");
    ck_assert_uint_eq(F.m->generation, gen + 1);
    ck_assert_uint_eq(routing_retired_count(), retired + 1);
    assert_published(API, 100, 0);
    ck_assert_int_eq(be(API, "blue-1")->weight, 50);
    ck_assert_int_eq(be(API, "blue-2")->weight, 100);
    ck_assert_int_eq(be(API, "green-1")->weight, 100);
    ck_assert_int_eq(be(API, "green-2")->weight, 100);
    ck_assert_int_eq(be(API, "blue-1")->admin, ADMIN_READY);
    ck_assert_int_eq(be(API, "blue-2")->admin, ADMIN_DRAIN);
    ck_assert_int_eq(be(API, "green-1")->admin, ADMIN_READY);
    ck_assert_int_eq(be(API, "green-2")->admin, ADMIN_READY);
    /* The workers' view of draining follows the restored admin states. */
    ck_assert(atomic_load(&be(API, "blue-2")->be->draining));
    ck_assert(!atomic_load(&be(API, "green-2")->be->draining));
    for (unsigned i = 0; i < NW; i++)
        ck_assert_uint_eq(drain_mq(i, WMSG_CLOSE_IDLE, "blue-2"), 1);
    /* The snapshot routes as the restored values say. */
    ck_assert_uint_eq(routing_current()->pools[API].n, 1);
    ck_assert_str_eq(routing_current()->pools[API].b[0].be->name, "blue-1");

    assert_state("api", "state ended");
    ck_assert_str_eq(verdict("api"), "rolled back: aborted by operator");
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_ptr_null(pool(API)->rollout);
    ro = audit_of("rollout");
    ck_assert_uint_eq(json_array_size(ro), 3);
    ck_assert_str_eq(rec_str(ro, 2, "command"), "rollout api rolled back: aborted by operator");
    ck_assert_uint_eq(rec_gen(ro, 2), gen + 1);
    json_decref(ro);
    down();
}
END_TEST

/* --- analysis ---------------------------------------------------------------------------- */

/* A rollout of green at 10% with these extra arguments, its window primed. */
static void start_green(const char *extra)
{
    char line[256];

    snprintf(line, sizeof(line), "rollout start api canary=green steps=10,50,100 interval=30s%s",
             extra);
    run_ok(line);
    ticks(1); /* the first slot takes the counters as they are */
}

START_TEST(test_error_rate_above_the_threshold_rolls_back_at_once)
{
    uint64_t gen;
    unsigned retired;
    json_t *ro;
    const char *why = "green error rate 5.94% over 101 requests > max-error-rate 5.00%";
    char want[200];

    up();
    start_green("");
    /* Exactly 5%: not above the default max-error-rate. */
    traffic(API, "green-1", 0, C2XX, 50, FAST_US);
    traffic(API, "green-1", 1, C2XX, 45, FAST_US);
    traffic(API, "green-2", 0, C5XX, 3, FAST_US);
    traffic(API, "green-2", 1, C5XX, 2, FAST_US);
    ticks(1);
    assert_state("api", "state running");
    ck_assert_ptr_nonnull(strstr(status_line(reply, "group green "), "error_rate 5.00%"));
    ck_assert_suffix(status_line(reply, "group green "), " requests 100");
    /* One more failure: 6 of 101. Rolled back in the middle of the step, one publish. */
    gen = F.m->generation;
    retired = routing_retired_count();
    traffic(API, "green-1", 1, C5XX, 1, FAST_US);
    ticks(1);
    ck_assert_uint_eq(F.m->generation, gen + 1);
    ck_assert_uint_eq(routing_retired_count(), retired + 1);
    assert_published(API, 100, 0);
    assert_state("api", "state ended");
    snprintf(want, sizeof(want), "rolled back: %s", why);
    ck_assert_str_eq(verdict("api"), want);
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_int_eq(rollout_canary(API), -1);
    ck_assert_ptr_null(pool(API)->rollout);
    ro = audit_of("rollout");
    ck_assert_uint_eq(json_array_size(ro), 2);
    snprintf(want, sizeof(want), "rollout api rolled back: %s", why);
    ck_assert_str_eq(rec_str(ro, 1, "command"), want);
    ck_assert_str_eq(rec_str(ro, 1, "result"), "OK");
    ck_assert_uint_eq(rec_gen(ro, 1), gen + 1);
    json_decref(ro);
    /* Ended: later figures change nothing. */
    traffic(API, "green-1", 0, C5XX, 500, SLOW_US);
    ticks(3);
    ck_assert_uint_eq(F.m->generation, gen + 1);
    down();
}
END_TEST

START_TEST(test_p99_above_the_threshold_rolls_back)
{
    up();
    start_green(" max-error-rate=50% max-p99=500ms min-requests=100");
    /* 98 fast and 2 at exactly 500 ms: p99 is 500 ms, not above max-p99. */
    traffic(API, "green-1", 0, C2XX, 98, FAST_US);
    traffic(API, "green-2", 1, C2XX, 2, P500_US);
    ticks(1);
    assert_state("api", "state running");
    ck_assert_ptr_nonnull(strstr(status_line(reply, "group green "), "p99_ms 500.0 requests 100"));
    /* Two more in the 1 s bucket: the 99th percentile is in it. */
    traffic(API, "green-1", 1, C2XX, 2, SLOW_US);
    ticks(1);
    assert_published(API, 100, 0);
    ck_assert_str_eq(verdict("api"),
                     "rolled back: green p99 1000.0 ms over 102 requests > max-p99 500 ms");
    down();
}
END_TEST

START_TEST(test_no_verdict_below_min_requests)
{
    up();
    start_green(" min-requests=50");
    traffic(API, "green-1", 0, C5XX, 49, SLOW_US);
    ticks(3);
    assert_state("api", "state running");
    ck_assert_str_eq(verdict("api"), "running");
    assert_published(API, 90, 10);
    traffic(API, "green-2", 1, C5XX, 1, SLOW_US);
    ticks(1);
    assert_state("api", "state ended");
    ck_assert_str_eq(verdict("api"),
                     "rolled back: green error rate 100.00% over 50 requests > max-error-rate "
                     "5.00%");
    down();
}
END_TEST

START_TEST(test_default_min_requests_is_50)
{
    up();
    start_green("");
    traffic(API, "green-1", 0, C5XX, 49, FAST_US);
    ticks(1);
    assert_state("api", "state running");
    traffic(API, "green-1", 0, C5XX, 1, FAST_US);
    ticks(1);
    assert_state("api", "state ended");
    down();
}
END_TEST

START_TEST(test_only_5xx_and_upstream_errors_count)
{
    up();
    start_green(" min-requests=20");
    /* 1xx, 3xx and 4xx answers are not failures of the canary. */
    traffic(API, "green-1", 0, 0, 10, FAST_US);
    traffic(API, "green-1", 0, C2XX, 60, FAST_US);
    traffic(API, "green-1", 1, C3XX, 20, FAST_US);
    traffic(API, "green-2", 1, C4XX, 40, FAST_US);
    ticks(1);
    assert_state("api", "state running");
    ck_assert_ptr_nonnull(
        strstr(status_line(reply, "group green "), "error_rate 0.00% p99_ms 0.5 requests 130"));
    /* Upstream errors (a reset after a 200 head, say) are failures: 7 of 130 = 5.38%. */
    upstream_errors(API, "green-1", 0, UERR_RESET, 4);
    upstream_errors(API, "green-2", 1, UERR_TIMEOUT, 3);
    ticks(1);
    assert_published(API, 100, 0);
    ck_assert_str_eq(verdict("api"),
                     "rolled back: green error rate 5.38% over 130 requests > max-error-rate "
                     "5.00%");
    down();
}
END_TEST

/* A backend failure veer answered with its own 502/504, as session.c counts it: in both. */
static void answered_failures(int pi, const char *name, unsigned w, unsigned n)
{
    struct backend_wstat *ws = &be(pi, name)->be->ws[w];

    traffic(pi, name, w, C5XX, n, FAST_US);
    counter_add(&ws->errors[UERR_CONNECT], n);
    counter_add(&ws->answered, n);
}

START_TEST(test_a_failure_answered_with_a_502_counts_once)
{
    up();
    start_green(" min-requests=20");
    /* 4 of 104 = 3.85 %: counted twice it would be 7.69 % and roll a healthy canary back. */
    traffic(API, "green-1", 0, C2XX, 100, FAST_US);
    answered_failures(API, "green-1", 1, 4);
    ticks(1);
    assert_state("api", "state running");
    ck_assert_ptr_nonnull(
        strstr(status_line(reply, "group green "), "error_rate 3.85% p99_ms 0.5 requests 104"));
    /* Two more: 6 of 106 = 5.66 % > 5 %. */
    answered_failures(API, "green-2", 0, 2);
    ticks(1);
    assert_published(API, 100, 0);
    ck_assert_str_eq(verdict("api"),
                     "rolled back: green error rate 5.66% over 106 requests > max-error-rate "
                     "5.00%");
    down();
}
END_TEST

START_TEST(test_only_the_canary_is_judged)
{
    up();
    start_green(" min-requests=20");
    /* The stable group failing and slow is shown, not judged: it is not what is rolled out. */
    traffic(API, "blue-1", 0, C5XX, 500, 3000000);
    traffic(API, "blue-2", 1, C5XX, 500, 3000000);
    traffic(API, "green-1", 0, C2XX, 100, FAST_US);
    ticks(2);
    assert_state("api", "state running");
    ck_assert_str_eq(status_line(reply, "group blue "),
                     "group blue share 90 rps 100.0 error_rate 100.00% p99_ms 5000.0 "
                     "requests 1000");
    assert_published(API, 90, 10);
    down();
}
END_TEST

START_TEST(test_requests_before_the_start_are_not_judged)
{
    up();
    traffic(API, "green-1", 0, C5XX, 1000, SLOW_US); /* an earlier, failed attempt */
    start_green(" min-requests=20");
    ticks(5);
    assert_state("api", "state running");
    ck_assert_suffix(status_line(reply, "group green "), " requests 0");
    traffic(API, "green-1", 0, C2XX, 20, FAST_US);
    ticks(1);
    assert_state("api", "state running");
    ck_assert_suffix(status_line(reply, "group green "), " requests 20");
    down();
}
END_TEST

/*
 * The window is the interval in 100 ms slots, at most 100 (10 s). Nine
 * failures at slot T (min-requests 10: no verdict), k empty slots, then one
 * failure: judged with the nine only while slot T is still in the window,
 * that is k <= W - 2.
 */
static const struct {
    const char *interval;
    unsigned slots;
} windows[] = {{"100ms", 1}, {"250ms", 2}, {"1s", 10}, {"2500ms", 25}, {"10s", 100}, {"60s", 100}};

START_TEST(test_window_is_the_interval_up_to_10s)
{
    unsigned w = windows[_i / 2].slots, k = _i % 2 ? w - 1 : w - 2;
    bool in = !(_i % 2);
    char line[256];

    if (w < 2 && in)
        return; /* a one-slot window: nothing older than the current slot */
    up();
    snprintf(line, sizeof(line),
             "rollout start api canary=green steps=10,100 interval=%s min-requests=10",
             windows[_i / 2].interval);
    run_ok(line);
    ticks(1);
    traffic(API, "green-1", 0, C5XX, 9, FAST_US);
    ticks(1);
    ticks(k);
    assert_state("api", "state running");
    traffic(API, "green-2", 1, C5XX, 1, FAST_US);
    ticks(1);
    assert_state("api", in ? "state ended" : "state running");
    if (!in) {
        /* Judged on one request only: the nine have left the window. */
        ck_assert_suffix(status_line(reply, "group green "), " requests 1");
        traffic(API, "green-1", 1, C5XX, 9, FAST_US);
        ticks(1);
        assert_state("api", w > 1 ? "state ended" : "state running");
    }
    down();
}
END_TEST

/* --- rollout status and the /status JSON --------------------------------------------------- */

START_TEST(test_status_reply_has_the_documented_lines_and_window_figures)
{
    double t;
    char *s;

    up();
    start_green(" max-error-rate=10% max-p99=1s min-requests=1000");
    traffic(API, "green-1", 0, C2XX, 38, FAST_US);
    traffic(API, "green-2", 1, C5XX, 2, FAST_US);
    traffic(API, "blue-1", 0, C2XX, 200, FAST_US);
    traffic(API, "blue-2", 1, C2XX, 160, 20000);
    ticks(1);
    run("rollout status api");
    ck_assert(reply_ok);
    s = strdup(reply);
    ck_assert_int_eq(
        sscanf(status_line(s, "step "), "step 1/3 share 10 time_in_step_s %lf interval_s 30.0", &t),
        1);
    ck_assert(t >= 0 && t < 60);
    /* The window of a 30 s step is 10 s: 40 requests are 4 per second. */
    ck_assert_str_eq(status_line(s, "pool "), "pool api canary green stable blue");
    ck_assert_str_eq(status_line(s, "state "), "state running");
    ck_assert_str_eq(status_line(s, "group green "),
                     "group green share 10 rps 4.0 error_rate 5.00% p99_ms 0.5 requests 40");
    ck_assert_str_eq(status_line(s, "group blue "),
                     "group blue share 90 rps 36.0 error_rate 0.00% p99_ms 25.0 requests 360");
    ck_assert_str_eq(status_line(s, "thresholds "),
                     "thresholds max-error-rate 10.00% max-p99 1000ms min-requests 1000");
    ck_assert_str_eq(status_line(s, "verdict "), "verdict running");
    /* Seven lines, canary first, then the empty line. */
    ck_assert_prefix(s, "pool api canary green stable blue\nstate running\nstep 1/3 ");
    ck_assert_ptr_nonnull(strstr(s, "requests 40\ngroup blue "));
    ck_assert_str_eq(strstr(s, "\nverdict "), "\nverdict running\n\n");
    free(s);
    down();
}
END_TEST

/* rollout_status_json(pi) as a JSON value. */
static json_t *status_json(int pi)
{
    struct sbuf o;
    json_error_t e;
    json_t *v;

    sb_init(&o);
    rollout_status_json(pi, &o);
    v = json_loads(o.s, JSON_DECODE_ANY, &e);
    ck_assert_msg(v != NULL, "%s: %s", e.text, o.s);
    sb_free(&o);
    return v;
}

/* The preflight object: {"name","state","duration_ms","result"}, nothing else. */
static void assert_preflight_shape(json_t *pf)
{
    ck_assert(json_is_object(pf));
    ck_assert_uint_eq(json_object_size(pf), 4);
    ck_assert(json_is_string(json_object_get(pf, "name")));
    ck_assert(json_is_string(json_object_get(pf, "state")));
    ck_assert(json_is_number(json_object_get(pf, "duration_ms")));
    ck_assert(json_number_value(json_object_get(pf, "duration_ms")) >= 0);
    ck_assert(json_is_string(json_object_get(pf, "result")));
}

/* The shadow object: {"duration_ms","percent","max_diff_rate","state","result"}. */
static void assert_shadow_shape(json_t *sh)
{
    ck_assert(json_is_object(sh));
    ck_assert_uint_eq(json_object_size(sh), 5);
    ck_assert(json_is_integer(json_object_get(sh, "duration_ms")));
    ck_assert(json_is_number(json_object_get(sh, "percent")));
    ck_assert(json_is_number(json_object_get(sh, "max_diff_rate")));
    ck_assert(json_is_string(json_object_get(sh, "state")));
    ck_assert(json_is_string(json_object_get(sh, "result")));
}

/* The documented keys with their types, and nothing else. */
static void assert_json_shape(json_t *v)
{
    static const char *const keys[] = {"canary",         "stable",  "state", "step",      "steps",
                                       "time_in_step_s", "verdict", "share", "preflight", "shadow"};
    const char *key;
    json_t *val;

    ck_assert(json_is_object(v));
    ck_assert_uint_eq(json_object_size(v), 10);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        ck_assert_msg(json_object_get(v, keys[i]) != NULL, "no %s", keys[i]);
    json_object_foreach (v, key, val) {
        if (strcmp(key, "step") == 0 || strcmp(key, "steps") == 0 || strcmp(key, "share") == 0)
            ck_assert_msg(json_is_integer(val), "%s", key);
        else if (strcmp(key, "time_in_step_s") == 0)
            ck_assert(json_is_number(val) && json_number_value(val) >= 0);
        else if (strcmp(key, "preflight") == 0)
            json_is_null(val) ? (void)0 : assert_preflight_shape(val);
        else if (strcmp(key, "shadow") == 0)
            json_is_null(val) ? (void)0 : assert_shadow_shape(val);
        else
            ck_assert_msg(json_is_string(val), "%s", key);
    }
}

static void assert_json(json_t *v, const char *state, int step, int share, const char *verdict_)
{
    assert_json_shape(v);
    ck_assert_str_eq(json_string_value(json_object_get(v, "canary")), "green");
    ck_assert_str_eq(json_string_value(json_object_get(v, "stable")), "blue");
    ck_assert_str_eq(json_string_value(json_object_get(v, "state")), state);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "step")), step);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "steps")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "share")), share);
    ck_assert_str_eq(json_string_value(json_object_get(v, "verdict")), verdict_);
    ck_assert(json_is_null(json_object_get(v, "preflight"))); /* none asked for */
    json_decref(v);
}

START_TEST(test_status_json_has_the_documented_keys)
{
    json_t *v;

    up();
    for (int pi = -1; pi <= 3; pi++) {
        v = status_json(pi);
        ck_assert(json_is_null(v));
        json_decref(v);
    }
    v = status_json(METRIC_POOLS);
    ck_assert(json_is_null(v));
    json_decref(v);
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s");
    assert_json(status_json(API), "running", 1, 10, "running");
    fire_step();
    assert_json(status_json(API), "running", 2, 50, "running");
    run_ok("rollout pause api");
    assert_json(status_json(API), "paused", 2, 50, "paused by operator");
    run_ok("rollout abort api");
    /* An ended rollout stays visible with its verdict (what the status page shows). */
    assert_json(status_json(API), "ended", 2, 0, "rolled back: aborted by operator");
    v = status_json(CAP);
    ck_assert(json_is_null(v));
    json_decref(v);
    down();
}
END_TEST

/* --- preflight ------------------------------------------------------------------------------ */

/*
 * A fake backend served from the control loop: it answers every request
 * with 200 "ok" (/v1/ping with `ping` when set), or never (silent). The
 * preflight runs on the control base; the tests run that loop.
 */
struct pfake {
    int lfd;
    char addr[32];
    struct event *lev;
    bool silent;
    const char *ping;
    struct {
        int fd;
        struct event *ev;
        char req[1024];
        size_t len;
        bool head, eof;
    } c[16];
    int n;
};

static void pfake_conn_close(struct pfake *f, int i)
{
    if (f->c[i].ev)
        event_free(f->c[i].ev);
    f->c[i].ev = NULL;
    if (f->c[i].fd >= 0)
        close(f->c[i].fd);
    f->c[i].fd = -1;
}

static void pfake_read(evutil_socket_t fd, short what, void *arg)
{
    struct pfake *f = arg;
    int i = 0;
    ssize_t n;

    (void)what;
    while (i < f->n && f->c[i].fd != fd)
        i++;
    ck_assert_int_lt(i, f->n);
    n = recv(fd, f->c[i].req + f->c[i].len, sizeof(f->c[i].req) - 1 - f->c[i].len, 0);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        f->c[i].eof = true;
        pfake_conn_close(f, i);
        return;
    }
    f->c[i].len += (size_t)n;
    f->c[i].req[f->c[i].len] = '\0';
    if (!f->c[i].head && strstr(f->c[i].req, "\r\n\r\n")) {
        const char *out = f->ping && strncmp(f->c[i].req, "GET /v1/ping ", 13) == 0
                              ? f->ping
                              : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

        f->c[i].head = true;
        if (f->silent)
            return;
        ck_assert_int_eq(send(fd, out, strlen(out), MSG_NOSIGNAL), (ssize_t)strlen(out));
        pfake_conn_close(f, i);
    }
}

static void pfake_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct pfake *f = arg;
    int fd;

    (void)what;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        ck_assert_int_lt(f->n, 16);
        f->c[f->n].fd = fd;
        f->c[f->n].ev = event_new(F.base, fd, EV_READ | EV_PERSIST, pfake_read, f);
        event_add(f->c[f->n].ev, NULL);
        f->n++;
    }
}

/* Listening before the control plane is up (its address goes in the config). */
static void pfake_listen(struct pfake *f)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);

    memset(f, 0, sizeof(*f));
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->lfd, 0);
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(f->lfd, 16), 0);
    ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&sin, &len), 0);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
}

/* Served from the control loop (once it exists). */
static void pfake_serve(struct pfake *f)
{
    f->lev = event_new(F.base, f->lfd, EV_READ | EV_PERSIST, pfake_accept, f);
    event_add(f->lev, NULL);
}

static void pfake_stop(struct pfake *f)
{
    for (int i = 0; i < f->n; i++)
        pfake_conn_close(f, i);
    if (f->lev)
        event_free(f->lev);
    close(f->lfd);
}

static int pfake_heads(const struct pfake *f)
{
    int n = 0;

    for (int i = 0; i < f->n; i++)
        n += f->c[i].head;
    return n;
}

static bool pfake_all_closed(const struct pfake *f)
{
    for (int i = 0; i < f->n; i++)
        if (!f->c[i].eof && f->c[i].fd >= 0)
            return false;
    return true;
}

#define PREFLIGHTS                                                                                 \
    "preflight = ( { name = \"smoke\"; timeout_ms = 5000; requests = ( { path = \"/health\"; },"   \
    " { path = \"/v1/ping\"; expect_body_contains = \"ok\"; } ); } );\n"

/* The control plane on CONF with api's green-1 and green-2 at g1 and g2, and PREFLIGHTS. */
static void up_preflight(struct pfake *g1, struct pfake *g2)
{
    char text[8192], *at;
    const char *from[2] = {"\"127.0.0.1:3\"", "\"127.0.0.1:4\""};
    const struct pfake *to[2] = {g1, g2};

    snprintf(text, sizeof(text), "%s%s", CONF, PREFLIGHTS);
    for (int i = 0; i < 2; i++) {
        char rest[8192];

        at = strstr(text, from[i]);
        ck_assert_ptr_nonnull(at);
        snprintf(rest, sizeof(rest), "%s", at + strlen(from[i]));
        snprintf(at, sizeof(text) - (size_t)(at - text), "\"%s\"%s", to[i]->addr, rest);
    }
    up_conf(text, NULL);
    pfake_serve(g1);
    pfake_serve(g2);
}

/* A command whose reply may come later (a start with a preflight). */
struct answer {
    int n; /* replies: must end at 1 */
    bool ok;
    char text[1024];
};

static void on_answer(struct ctl_req *r, const char *text, bool ok)
{
    struct answer *a = r->arg;

    a->n++;
    a->ok = ok;
    snprintf(a->text, sizeof(a->text), "%s", text);
}

static void submit(const char *line, struct answer *a)
{
    struct ctl_req *r = calloc(1, sizeof(*r));
    char err[256];

    memset(a, 0, sizeof(*a));
    ck_assert_msg(cmd_parse(line, &r->cmd, err, sizeof(err)) == 0, "%s: %s", line, err);
    snprintf(r->line, sizeof(r->line), "%s", line);
    r->peer = (struct audit_peer){1000, 1000, 4242};
    r->t_read_us = veer_now_us();
    r->done = on_answer;
    r->arg = a;
    control_execute(r);
}

static void loop_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

static void loop_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run the control loop until *n reaches want or (when n is NULL) f has want request heads. */
static bool loop_until(const int *n, const struct pfake *f, int want)
{
    struct timeval dl = {5, 0}, tk = {0, 5000};
    bool expired = false;
    struct event *d = evtimer_new(F.base, loop_deadline, &expired);
    struct event *t = event_new(F.base, -1, EV_PERSIST, loop_tick, NULL);

    evtimer_add(d, &dl);
    event_add(t, &tk);
    while (!expired && (n ? *n : pfake_heads(f)) < want)
        event_base_loop(F.base, EVLOOP_ONCE);
    event_free(d);
    event_free(t);
    return (n ? *n : pfake_heads(f)) >= want;
}

static bool loop_until_closed(const struct pfake *f)
{
    for (int i = 0; i < 1000 && !pfake_all_closed(f); i++)
        event_base_loop(F.base, EVLOOP_NONBLOCK), usleep(1000);
    return pfake_all_closed(f);
}

/* The "preflight" object of the pool's rollout JSON, checked: name, state, result. */
static double assert_json_preflight(const char *state, const char *result_prefix,
                                    const char *rollout_state, const char *verdict_)
{
    json_t *v = status_json(API), *pf;
    double ms;

    assert_json_shape(v);
    ck_assert_str_eq(json_string_value(json_object_get(v, "state")), rollout_state);
    ck_assert_str_eq(json_string_value(json_object_get(v, "verdict")), verdict_);
    pf = json_object_get(v, "preflight");
    assert_preflight_shape(pf);
    ck_assert_str_eq(json_string_value(json_object_get(pf, "name")), "smoke");
    ck_assert_str_eq(json_string_value(json_object_get(pf, "state")), state);
    ck_assert_prefix(json_string_value(json_object_get(pf, "result")), result_prefix);
    ms = json_number_value(json_object_get(pf, "duration_ms"));
    json_decref(v);
    return ms;
}

START_TEST(test_unknown_preflight_is_refused_and_nothing_changes)
{
    struct pfake g1, g2;
    uint64_t gen0;
    json_t *op, *v;

    pfake_listen(&g1);
    pfake_listen(&g2);
    up_preflight(&g1, &g2);
    gen0 = F.m->generation;
    run("rollout start api canary=green steps=10,100 interval=30s preflight=nope");
    ck_assert(!reply_ok);
    ck_assert_str_eq(reply, "ERR unknown preflight nope (the config's preflight lists name "
                            "them)\n\n");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    run_refused("rollout status api", "no rollout in pool api");
    v = status_json(API);
    ck_assert(json_is_null(v));
    json_decref(v);
    ck_assert_int_eq(step_timers().n, 0);
    ck_assert_int_eq(g1.n + g2.n, 0);
    /* An ended rollout before it stays as it was. */
    run_ok("rollout start api canary=green steps=10,100 interval=30s");
    run_ok("rollout abort api");
    gen0 = F.m->generation;
    run_refused("rollout start api canary=green steps=10,100 interval=30s preflight=smok",
                "unknown preflight smok");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    ck_assert_str_eq(verdict("api"), "rolled back: aborted by operator");
    op = audit_of("operator");
    ck_assert_str_eq(rec_str(op, 0, "result"),
                     "ERR unknown preflight nope (the config's preflight lists name them)");
    ck_assert_str_eq(rec_str(op, json_array_size(op) - 1, "result"),
                     "ERR unknown preflight smok (the config's preflight lists name them)");
    json_decref(op);
    down();
    pfake_stop(&g1);
    pfake_stop(&g2);
}
END_TEST

START_TEST(test_preflight_under_way_blocks_start_pause_resume_and_abort_answers_both)
{
    struct pfake g1, g2;
    struct answer a, ab;
    uint64_t gen0;
    json_t *op;

    pfake_listen(&g1);
    pfake_listen(&g2);
    g1.silent = g2.silent = true; /* the first request is never answered: it stays under way */
    up_preflight(&g1, &g2);
    gen0 = F.m->generation;
    submit("rollout start api canary=green steps=10,100 interval=30s preflight=smoke", &a);
    ck_assert_int_eq(a.n, 0); /* the command waits for the preflight */
    ck_assert(loop_until(NULL, &g1, 1));
    ck_assert(loop_until(NULL, &g2, 1));
    ck_assert_int_eq(a.n, 0);
    assert_state("api", "state preflight");
    ck_assert_str_eq(status_line(reply, "preflight "),
                     "preflight smoke running against 2 backends");
    /* No step has begun: no time in it (as the JSON says), not the clock's own reading. */
    ck_assert_str_eq(status_line(reply, "step "),
                     "step 1/2 share 0 time_in_step_s 0.0 interval_s 30.0");
    ck_assert_str_eq(verdict("api"), "preflight smoke running");
    assert_json_preflight("running", "running against 2 backends", "preflight",
                          "preflight smoke running");

    run("rollout start api canary=green steps=5,100 interval=1s");
    ck_assert_str_eq(reply, "ERR a rollout is already running in pool api (rollout abort api "
                            "first)\n\n");
    run("rollout start api canary=green steps=5,100 interval=1s preflight=smoke");
    ck_assert(!reply_ok && strstr(reply, "already running"));
    run("rollout pause api");
    ck_assert_str_eq(reply, "ERR the rollout in pool api is in its preflight (rollout abort api to "
                            "stop it)\n\n");
    run("rollout resume api");
    ck_assert_str_eq(reply, "ERR the rollout in pool api is in its preflight (rollout abort api to "
                            "stop it)\n\n");
    ck_assert_int_eq(a.n, 0);
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    ck_assert_int_eq(rollout_canary(API), -1);
    ck_assert_ptr_null(pool(API)->rollout); /* no state file line: nothing to resume */
    ck_assert_int_eq(step_timers().n, 2);   /* the preflight's own (one per backend), no step */

    /* abort: the start is answered ERR, the abort OK, nothing published. */
    submit("rollout abort api", &ab);
    ck_assert_int_eq(a.n, 1);
    ck_assert(!a.ok);
    ck_assert_str_eq(a.text, "ERR preflight smoke stopped: aborted by operator; no traffic "
                             "moved\n\n");
    ck_assert_int_eq(ab.n, 1);
    ck_assert_msg(ab.ok && strncmp(ab.text, "OK gen=", 7) == 0, "%s", ab.text);
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    ck_assert_int_eq(step_timers().n, 0); /* the preflight's timers are gone, no step armed */
    ck_assert(loop_until_closed(&g1));    /* its connections are closed */
    ck_assert(loop_until_closed(&g2));
    assert_state("api", "state ended");
    ck_assert_str_eq(status_line(reply, "preflight "),
                     "preflight smoke stopped: aborted by operator");
    ck_assert_str_eq(verdict("api"),
                     "preflight smoke stopped: aborted by operator; no traffic moved");
    assert_json_preflight("stopped", "stopped: aborted by operator", "ended",
                          "preflight smoke stopped: aborted by operator; no traffic moved");
    run_refused("rollout abort api", "has ended");
    op = audit_of("operator");
    {
        size_t n = json_array_size(op);
        bool start_err = false, abort_ok = false;

        for (size_t i = 0; i < n; i++) {
            const char *cmd = rec_str(op, i, "command"), *res = rec_str(op, i, "result");

            start_err |= strcmp(cmd, "rollout start api canary=green steps=10,100 interval=30s "
                                     "preflight=smoke") == 0 &&
                         strcmp(res, "ERR preflight smoke stopped: aborted by operator; no "
                                     "traffic moved") == 0;
            abort_ok |= strcmp(cmd, "rollout abort api") == 0 && strcmp(res, "OK") == 0;
        }
        ck_assert(start_err);
        ck_assert(abort_ok);
    }
    json_decref(op);
    /* Nothing of it is left: a new start (without preflight) is taken. */
    run_ok("rollout start api canary=green steps=10,100 interval=30s");
    assert_published(API, 90, 10);
    down();
    pfake_stop(&g1);
    pfake_stop(&g2);
}
END_TEST

START_TEST(test_stop_preflights_answers_the_start_err)
{
    struct pfake g1, g2;
    struct answer a;
    uint64_t gen0;

    pfake_listen(&g1);
    pfake_listen(&g2);
    g1.silent = g2.silent = true;
    up_preflight(&g1, &g2);
    gen0 = F.m->generation;
    submit("rollout start api canary=green steps=10,100 interval=30s preflight=smoke", &a);
    ck_assert(loop_until(NULL, &g1, 1));
    rollout_stop_preflights("the configuration was reloaded");
    ck_assert_int_eq(a.n, 1);
    ck_assert(!a.ok);
    ck_assert_str_eq(a.text, "ERR preflight smoke stopped: the configuration was reloaded; no "
                             "traffic moved\n\n");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    ck_assert(loop_until_closed(&g1));
    assert_json_preflight("stopped", "stopped: the configuration was reloaded", "ended",
                          "preflight smoke stopped: the configuration was reloaded; no traffic "
                          "moved");
    /* Again: nothing under way, nothing answered twice. */
    rollout_stop_preflights("again");
    ck_assert_int_eq(a.n, 1);
    /* Shutting down with one under way answers it too (and leaves nothing behind: ASan). */
    submit("rollout start api canary=green steps=10,100 interval=30s preflight=smoke", &a);
    ck_assert(loop_until(NULL, &g1, 2));
    down();
    ck_assert_int_eq(a.n, 1);
    ck_assert_str_eq(a.text, "ERR preflight smoke stopped: shutting down; no traffic moved\n\n");
    pfake_stop(&g1);
    pfake_stop(&g2);
}
END_TEST

START_TEST(test_passed_preflight_starts_the_rollout_and_shows_in_json)
{
    struct pfake g1, g2;
    struct answer a;
    double ms, took;
    char want[64];

    pfake_listen(&g1);
    pfake_listen(&g2);
    up_preflight(&g1, &g2);
    submit("rollout start api canary=green steps=10,100 interval=30s preflight=smoke", &a);
    ck_assert_int_eq(a.n, 0);
    ck_assert(loop_until(&a.n, NULL, 1));
    ck_assert_msg(a.ok && strncmp(a.text, "OK gen=", 7) == 0, "%s", a.text);
    ck_assert_msg(strstr(a.text, " step=1/2 share=10 preflight=smoke preflight_ms=") != NULL, "%s",
                  a.text);
    took = strtod(strstr(a.text, "preflight_ms=") + strlen("preflight_ms="), NULL);
    ck_assert(took > 0);
    assert_published(API, 90, 10);
    ck_assert_int_eq(rollout_canary(API), GREEN);
    assert_step_armed(30000);
    /* Each green backend got both requests, in order. */
    ck_assert_int_eq(g1.n, 2);
    ck_assert_int_eq(g2.n, 2);
    ck_assert_prefix(g1.c[0].req, "GET /health HTTP/1.1\r\n");
    ck_assert_prefix(g1.c[1].req, "GET /v1/ping HTTP/1.1\r\n");
    ms = assert_json_preflight("passed", "passed in ", "running", "running");
    ck_assert(ms > 0);
    snprintf(want, sizeof(want), "%.1f", ms);
    ck_assert_msg(fabs(ms - took) < 0.051, "duration_ms %.3f, the reply said %.1f", ms, took);
    assert_state("api", "state running");
    ck_assert_suffix(status_line(reply, "preflight "), " ms: 2 backends, 4 requests");
    ck_assert_prefix(status_line(reply, "preflight "), "preflight smoke passed in ");
    /* It stays with the rollout to its end. */
    run_ok("rollout abort api");
    ck_assert(assert_json_preflight("passed", "passed in ", "ended",
                                    "rolled back: aborted by operator") == ms);
    down();
    pfake_stop(&g1);
    pfake_stop(&g2);
}
END_TEST

START_TEST(test_failed_preflight_moves_nothing_and_shows_in_json)
{
    struct pfake g1, g2;
    struct answer a;
    uint64_t gen0;
    double ms;
    json_t *op;
    char want[300];

    pfake_listen(&g1);
    pfake_listen(&g2);
    g2.ping = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    up_preflight(&g1, &g2);
    gen0 = F.m->generation;
    submit("rollout start api canary=green steps=10,100 interval=30s preflight=smoke", &a);
    ck_assert(loop_until(&a.n, NULL, 1));
    ck_assert(!a.ok);
    ck_assert_prefix(a.text, "ERR preflight smoke failed on backend green-2: GET /v1/ping: status "
                             "503, expected 200 (");
    ck_assert_suffix(a.text, " ms); no traffic moved\n\n");
    ck_assert_uint_eq(F.m->generation, gen0);
    assert_published(API, 100, 0);
    ck_assert_int_eq(rollout_canary(API), -1);
    ck_assert_int_eq(step_timers().n, 0);
    ms = assert_json_preflight("failed", "failed in ", "ended",
                               "preflight smoke failed; no traffic moved");
    ck_assert(ms > 0);
    snprintf(want, sizeof(want),
             "failed in %.1f ms: backend green-2: GET /v1/ping: status 503, expected 200", ms);
    {
        json_t *v = status_json(API);

        ck_assert_str_eq(
            json_string_value(json_object_get(json_object_get(v, "preflight"), "result")), want);
        json_decref(v);
    }
    assert_state("api", "state ended");
    ck_assert_str_eq(status_line(reply, "preflight ") + strlen("preflight smoke "), want);
    ck_assert_str_eq(status_line(reply, "step "),
                     "step 1/2 share 0 time_in_step_s 0.0 interval_s 30.0");
    op = audit_of("operator");
    ck_assert_str_eq(rec_str(op, json_array_size(op) - 1, "command"),
                     "rollout start api canary=green steps=10,100 interval=30s preflight=smoke");
    ck_assert_prefix(rec_str(op, json_array_size(op) - 1, "result"),
                     "ERR preflight smoke failed on backend green-2: GET /v1/ping: status 503, "
                     "expected 200 (");
    json_decref(op);
    /* The pool may start again at once. */
    run_ok("rollout start api canary=green steps=10,100 interval=30s");
    down();
    pfake_stop(&g1);
    pfake_stop(&g2);
}
END_TEST

START_TEST(test_no_ready_canary_backend_fails_the_preflight)
{
    struct pfake g1, g2;
    struct answer a;

    pfake_listen(&g1);
    pfake_listen(&g2);
    up_preflight(&g1, &g2);
    run_ok("set state api/green-1 maint");
    run_ok("set state api/green-2 drain");
    submit("rollout start api canary=green steps=10,100 interval=30s preflight=smoke", &a);
    ck_assert_int_eq(a.n, 0); /* from the loop */
    ck_assert(loop_until(&a.n, NULL, 1));
    ck_assert(!a.ok);
    ck_assert_prefix(a.text, "ERR preflight smoke failed on backend -: -: no READY backend in the "
                             "canary group (");
    ck_assert_int_eq(g1.n + g2.n, 0);
    assert_published(API, 100, 0);
    assert_json_preflight("failed", "failed in ", "ended",
                          "preflight smoke failed; no traffic moved");
    down();
    pfake_stop(&g1);
    pfake_stop(&g2);
}
END_TEST

/* --- the state file ------------------------------------------------------------------------- */

#define SAVED                                                                                      \
    "canary=green;step=2;steps=1,5,20,100;interval=45000;err=2.5;p99=250;min=20;paused=1;"         \
    "pre=blue:100,green:0;prew=blue-1:100:ready,blue-2:50:ready,green-1:100:ready,"                \
    "green-2:100:ready"

START_TEST(test_render_restore_round_trip_across_a_restart)
{
    char *text, *state;
    json_t *v;

    up();
    run_ok("set weight api/blue-2 50"); /* before: part of what a rollback restores */
    run_ok("rollout start api canary=green steps=1,5,20,100 interval=45s max-error-rate=2.5% "
           "max-p99=250ms min-requests=20");
    fire_step();
    fire_step();
    run_ok("set weight api/green-1 30"); /* during: not */
    run_ok("rollout pause api");
    text = rollout_render(API);
    ck_assert_str_eq(text, SAVED);
    state = state_render(F.m);
    down();

    /* A restart: the state file is applied to a fresh model, control_init restores the rollout. */
    up_with_state(state);
    ck_assert_str_eq(pool(API)->rollout, SAVED);
    free(text);
    text = rollout_render(API);
    ck_assert_str_eq(text, SAVED);
    free(text);
    assert_published(API, 80, 20);
    ck_assert_int_eq(be(API, "green-1")->weight, 30);
    ck_assert_int_eq(rollout_canary(API), GREEN);
    ck_assert_int_eq(routing_current()->pools[API].canary, GREEN);
    run("rollout status api");
    ck_assert_str_eq(status_line(reply, "state "), "state paused");
    ck_assert_prefix(status_line(reply, "step "), "step 3/4 share 20 ");
    ck_assert_ptr_nonnull(strstr(status_line(reply, "step "), " interval_s 45.0"));
    ck_assert_str_eq(status_line(reply, "thresholds "),
                     "thresholds max-error-rate 2.50% max-p99 250ms min-requests 20");
    ck_assert_str_eq(status_line(reply, "verdict "), "verdict paused");
    ck_assert_int_eq(step_timers().n, 0); /* paused: no step timer */
    v = status_json(API);
    ck_assert_str_eq(json_string_value(json_object_get(v, "state")), "paused");
    json_decref(v);

    run_ok("rollout pause api"); /* a restored paused rollout has never had a timer */
    run_ok("rollout resume api");
    assert_step_armed(45000);
    fire_step();
    assert_published(API, 0, 100);
    run_ok("rollout abort api");
    assert_published(API, 100, 0);
    ck_assert_int_eq(be(API, "blue-1")->weight, 100);
    ck_assert_int_eq(be(API, "blue-2")->weight, 50);
    ck_assert_int_eq(be(API, "green-1")->weight, 100);
    free(state);
    down();
}
END_TEST

START_TEST(test_restored_running_rollout_keeps_its_thresholds)
{
    const char *saved = "canary=green;step=0;steps=10,50,100;interval=20000;err=2.5;p99=250;"
                        "min=20;paused=0;pre=blue:100,green:0;prew=";
    char *text;

    up();
    ck_assert_int_eq(rollout_restore(API, saved), 0);
    text = rollout_render(API);
    ck_assert_str_eq(text, "canary=green;step=0;steps=10,50,100;interval=20000;err=2.5;p99=250;"
                           "min=20;paused=0;pre=blue:100,green:0;prew=blue-1:100:ready,"
                           "blue-2:100:ready,green-1:100:ready,green-2:100:ready");
    free(text);
    assert_step_armed(20000); /* the step's clock restarts */
    ck_assert_str_eq(verdict("api"), "running (restored)");
    /* 1 of 20 is 5%: above 2.5%. The window of a 20 s interval is 10 s. */
    ticks(1);
    traffic(API, "green-1", 0, C2XX, 19, FAST_US);
    traffic(API, "green-1", 1, C5XX, 1, FAST_US);
    ticks(1);
    ck_assert_str_eq(verdict("api"),
                     "rolled back: green error rate 5.00% over 20 requests > max-error-rate "
                     "2.50%");
    down();
}
END_TEST

START_TEST(test_fractional_thresholds_survive_the_state_file_exactly)
{
    char *text, *again;

    up();
    run_ok("rollout start api canary=green steps=10,100 interval=30s max-error-rate=12.345678%");
    text = rollout_render(API);
    ck_assert_ptr_nonnull(strstr(text, ";err=12.345678;"));
    ck_assert_int_eq(rollout_restore(API, text), 0);
    again = rollout_render(API);
    ck_assert_str_eq(again, text);
    free(again);
    free(text);
    run_ok("rollout abort api");
    run_ok("rollout start api canary=green steps=10,100 interval=30s max-error-rate=0.1");
    text = rollout_render(API);
    ck_assert_ptr_nonnull(strstr(text, ";err=0.1;"));
    free(text);
    down();
}
END_TEST

#define GOOD_RESTORE                                                                               \
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"                  \
    "pre=blue:100,green:0;prew=green-1:7:maint"

/* Each differs from GOOD_RESTORE in one way that makes it malformed or inconsistent. */
static const char *const bad_restores[] = {
    "",
    "garbage",
    "canary=green;step=1",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0",
    "canary=purple;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=2;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=-1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=0;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=-1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=abc;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=50,5;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=0,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,101;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5x,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100,;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=-1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=101;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=0;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=0;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=2;"
    "pre=blue:100,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:x,green:0;prew=green-1:7:maint",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0",
    "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;paused=0;"
    "pre=blue:100,green:0;prew=green-1:7",
};

START_TEST(test_restore_refuses_a_bad_line_and_keeps_the_running_rollout)
{
    char *before, *after;

    up();
    run_ok("rollout start api canary=green steps=10,50,100 interval=30s");
    before = rollout_render(API);
    ck_assert_msg(rollout_restore(API, bad_restores[_i]) < 0, "accepted: %s", bad_restores[_i]);
    after = rollout_render(API);
    ck_assert_str_eq(after, before);
    ck_assert_str_eq(pool(API)->rollout, before);
    ck_assert_int_eq(rollout_canary(API), GREEN);
    assert_step_armed(30000);
    assert_published(API, 90, 10);
    ck_assert_str_eq(verdict("api"), "running");
    /* Where there was none, there is still none. */
    ck_assert_int_lt(rollout_restore(CAP, bad_restores[_i]), 0);
    ck_assert_ptr_null(rollout_render(CAP));
    run_refused("rollout status cap", "no rollout in pool cap");
    free(before);
    free(after);
    down();
}
END_TEST

START_TEST(test_restore_accepts_the_base_of_the_bad_lines)
{
    char *text;

    up();
    ck_assert_int_eq(rollout_restore(API, GOOD_RESTORE), 0);
    text = rollout_render(API);
    ck_assert_str_eq(text, "canary=green;step=1;steps=5,100;interval=1000;err=1;p99=100;min=5;"
                           "paused=0;pre=blue:100,green:0;prew=blue-1:100:ready,blue-2:100:ready,"
                           "green-1:7:maint,green-2:100:ready");
    free(text);
    /* Restoring replaces what ran: one rollout, one timer. */
    ck_assert_int_eq(rollout_restore(API, GOOD_RESTORE), 0);
    ck_assert_int_eq(step_timers().n, 1);
    run_ok("rollout abort api");
    ck_assert_int_eq(be(API, "green-1")->weight, 7);
    ck_assert_int_eq(be(API, "green-1")->admin, ADMIN_MAINT);
    /* Not in a pool without exactly two groups, nor past the pools rollouts are kept for. */
    ck_assert_int_lt(rollout_restore(TRI, "canary=green;step=0;steps=10,100;interval=1000;err=1;"
                                          "p99=100;min=5;paused=0;pre=blue:100;prew="),
                     0);
    ck_assert_int_lt(rollout_restore(METRIC_POOLS, GOOD_RESTORE), 0);
    down();
}
END_TEST

START_TEST(test_bad_rollout_line_in_the_state_file_is_dropped_at_start)
{
    const char *state = "veer-state 1\ngeneration 7\npool api\nshare blue 100\nshare green 0\n"
                        "backend blue-1 weight 100 admin ready\n"
                        "rollout canary=green;step=9;steps=10,100;interval=1000;err=1;p99=100;"
                        "min=5;paused=0;pre=blue:100,green:0;prew=\nend\n";

    up_with_state(state);
    ck_assert_ptr_null(pool(API)->rollout);
    ck_assert_ptr_null(rollout_render(API));
    run_refused("rollout status api", "no rollout in pool api");
    ck_assert_int_eq(step_timers().n, 0);
    assert_published(API, 100, 0);
    down();
}
END_TEST

static Suite *rollout_suite(void)
{
    Suite *s = suite_create("rollout");
    TCase *tc = tcase_create("commands");
    TCase *ta = tcase_create("analysis");
    TCase *ts = tcase_create("status");
    TCase *tp = tcase_create("persistence");
    TCase *tf = tcase_create("preflight");

    tcase_add_test(tc, test_start_applies_the_first_step_in_one_publish);
    tcase_add_test(tc, test_refused_starts_change_nothing);
    tcase_add_test(tc, test_commands_need_a_rollout_that_has_not_ended);
    tcase_add_test(tc, test_each_interval_takes_the_next_step_then_completes);
    tcase_add_test(tc, test_steps_below_100_end_with_the_canary_at_100);
    tcase_add_test(tc, test_step_over_the_capacity_bound_pauses_the_rollout);
    tcase_add_test(tc, test_completion_to_100_respects_the_capacity_guard);
    tcase_add_test(tc, test_snapshot_names_the_rollouts_canary);
    tcase_add_test(tc, test_pause_stops_steps_and_analysis_until_resume);
    tcase_add_test(tc, test_abort_restores_pre_rollout_shares_weights_and_states_in_one_publish);
    tcase_add_test(ta, test_error_rate_above_the_threshold_rolls_back_at_once);
    tcase_add_test(ta, test_p99_above_the_threshold_rolls_back);
    tcase_add_test(ta, test_no_verdict_below_min_requests);
    tcase_add_test(ta, test_default_min_requests_is_50);
    tcase_add_test(ta, test_only_5xx_and_upstream_errors_count);
    tcase_add_test(ta, test_a_failure_answered_with_a_502_counts_once);
    tcase_add_test(ta, test_only_the_canary_is_judged);
    tcase_add_test(ta, test_requests_before_the_start_are_not_judged);
    tcase_add_loop_test(ta, test_window_is_the_interval_up_to_10s, 0,
                        (int)(2 * sizeof(windows) / sizeof(windows[0])));
    tcase_add_test(ts, test_status_reply_has_the_documented_lines_and_window_figures);
    tcase_add_test(ts, test_status_json_has_the_documented_keys);
    tcase_add_test(tf, test_unknown_preflight_is_refused_and_nothing_changes);
    tcase_add_test(tf, test_preflight_under_way_blocks_start_pause_resume_and_abort_answers_both);
    tcase_add_test(tf, test_stop_preflights_answers_the_start_err);
    tcase_add_test(tf, test_passed_preflight_starts_the_rollout_and_shows_in_json);
    tcase_add_test(tf, test_failed_preflight_moves_nothing_and_shows_in_json);
    tcase_add_test(tf, test_no_ready_canary_backend_fails_the_preflight);
    tcase_add_test(tp, test_render_restore_round_trip_across_a_restart);
    tcase_add_test(tp, test_restored_running_rollout_keeps_its_thresholds);
    tcase_add_test(tp, test_fractional_thresholds_survive_the_state_file_exactly);
    tcase_add_loop_test(tp, test_restore_refuses_a_bad_line_and_keeps_the_running_rollout, 0,
                        (int)(sizeof(bad_restores) / sizeof(bad_restores[0])));
    tcase_add_test(tp, test_restore_accepts_the_base_of_the_bad_lines);
    tcase_add_test(tp, test_bad_rollout_line_in_the_state_file_is_dropped_at_start);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, ta);
    suite_add_tcase(s, ts);
    suite_add_tcase(s, tp);
    suite_add_tcase(s, tf);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rollout_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
