/*
 * check_reload.c - re-reading the configuration file (reload.c,
 * ctl_reload) on the control thread with no worker (ctlfix.h), the file
 * kept on disk in the test's directory so that a reload reads it again
 * after the test rewrote it. Each reload goes through the `reload` admin
 * command (control_execute) unless it is the SIGHUP path
 * (control_reload_signal).
 *
 * A reload merges the new file into the running model by name: a backend
 * new in the file joins (READY: no readiness checks), one gone from it
 * drains and leaves the model once nothing is in flight on it; a new pool
 * appears and routes; a pool gone from the file stops routing. Runtime
 * decisions (shares of a shift, weights, admin states) survive a reload of
 * the same file; a value whose text changed in the file wins. A file with
 * an error is refused with `file:line: ...` and changes nothing (model,
 * generation, snapshot, configuration in force). Configurations a reload
 * replaced are freed (ctl_reclaim_confs) once nothing reads them, the one
 * veer started with never.
 *
 * The backends get one per-worker slot (veer_nworkers = 1) while no worker
 * reads snapshots (routing_init(0)): a test sets a request in flight on a
 * backend through that slot. Each test runs in its own process.
 */
#include "control-i.h"
#include "ctlfix.h"

#define HEAD                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"

/* Pool api: blue-1, blue-2 (blue, 100%), green-1 (green, 0%). */
#define API_POOL                                                                                   \
    "{ name = \"api\"; backends = (\n"                                                             \
    "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"       \
    "  { name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },\n"       \
    "  { name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );\n"   \
    "  shares = { blue = 100; green = 0; }; }"

#define WEB_POOL                                                                                   \
    "{ name = \"web\"; backends = (\n"                                                             \
    "  { name = \"web-1\"; address = \"127.0.0.1:4\"; weight = 100; group = \"main\"; } ); }"

#define BLUE  0 /* group indexes of api: order of first appearance */
#define GREEN 1

/* Write the config file: HEAD, then pools = ( <pools> ); */
static void write_conf(const char *pools)
{
    FILE *f = fopen(CF.path, "w");

    ck_assert_ptr_nonnull(f);
    fprintf(f, HEAD, CF.dir);
    fprintf(f, "pools = ( %s );\n", pools);
    ck_assert_int_eq(fclose(f), 0);
}

/* The fixture with the file HEAD, then pools = ( <pools> ); (write_conf's). */
static void up(const char *pools)
{
    const struct ctlfix_opts o = {.slots = 1, .readers = 0, .keep_file = true};
    char fmt[4096];

    ck_assert_uint_lt((size_t)snprintf(fmt, sizeof(fmt), "%spools = ( %s );\n", HEAD, pools),
                      sizeof(fmt));
    ctl_up_with(fmt, &o);
}

/* --- commands ------------------------------------------------------------------------- */

static void ok(const char *line)
{
    ctl_run(line);
    ck_assert_msg(CF.reply.ok && strncmp(CF.reply.text, "OK ", 3) == 0, "%s: %s", line,
                  CF.reply.text);
}

/* What a reload answered. */
struct counts {
    unsigned long long gen, added, removed, changed, pools_added, pools_removed;
};

/* `reload`, which must be accepted: one more generation, published; its counts. */
static struct counts reload(void)
{
    uint64_t gen = CF.m->generation;
    unsigned long long t, la, lr;
    struct counts c;

    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    ck_assert_msg(sscanf(CF.reply.text,
                         "OK gen=%llu applied_us=%llu backends_added=%llu backends_removed=%llu "
                         "changed=%llu pools_added=%llu pools_removed=%llu listeners_added=%llu "
                         "listeners_removed=%llu",
                         &c.gen, &t, &c.added, &c.removed, &c.changed, &c.pools_added,
                         &c.pools_removed, &la, &lr) == 9,
                  "reload: %s", CF.reply.text);
    ck_assert_uint_eq(c.gen, gen + 1);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    ck_assert_uint_eq(la, 0); /* the one listener stays */
    ck_assert_uint_eq(lr, 0);
    ck_assert_ptr_eq(control_conf(), CF.m->conf);
    return c;
}

/* Run the control loop until nothing is left to do now (a reap scheduled by a drain). */
static void run_pending(void)
{
    ck_assert_int_ge(event_base_loop(CF.base, EVLOOP_NONBLOCK), 0);
}

/* --- the model and the snapshot -------------------------------------------------------- */

static struct rt_pool *pool(const char *name)
{
    int i = model_find_pool(CF.m, name);

    ck_assert_msg(i >= 0, "no pool %s", name);
    return &CF.m->pools[i];
}

static struct rt_backend *be(const char *pool_name, const char *name)
{
    struct rt_pool *p = pool(pool_name);
    int i = model_find_backend(p, name);

    ck_assert_msg(i >= 0, "no backend %s/%s", pool_name, name);
    return &p->b[i];
}

/* The snapshot's entry for a backend, or NULL when it routes nothing to it. */
static const struct snap_backend *routed(const char *pool_name, const char *name)
{
    const struct snap_pool *sp = &routing_current()->pools[model_find_pool(CF.m, pool_name)];

    for (uint32_t i = 0; i < sp->n; i++)
        if (strcmp(sp->b[i].be->name, name) == 0)
            return &sp->b[i];
    return NULL;
}

/* The last audit record. */
static json_t *last_record(void)
{
    json_t *a = ctl_audit_records();
    json_t *rec = json_incref(json_array_get(a, json_array_size(a) - 1));

    json_decref(a);
    ck_assert_ptr_nonnull(rec);
    return rec;
}

static void assert_last_record(const char *actor, const char *command, const char *result,
                               uint64_t gen)
{
    json_t *rec = last_record();

    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), actor);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "command")), command);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "result")), result);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "generation")), gen);
    json_decref(rec);
}

/* --- tests ------------------------------------------------------------------------------ */

/*
 * A backend new in the file joins READY and routed; one gone from it
 * drains: out of the snapshot at once, in the model (DRAIN, to be removed)
 * while a request is in flight on it, and out of the model when that
 * request ends (one more publish).
 */
START_TEST(test_backends_added_and_removed)
{
    struct counts c;
    struct backend *gone;
    uint64_t gen;

    up(API_POOL);
    gone = be("api", "blue-2")->be;
    atomic_store(&gone->ws[0].active, 1); /* a request in flight on blue-2 */
    write_conf(
        "{ name = \"api\"; backends = (\n"
        "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"blue-3\"; address = \"127.0.0.1:5\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; }"
        " );\n"
        "  shares = { blue = 100; green = 0; }; }");
    c = reload();
    ck_assert_uint_eq(c.added, 1);
    ck_assert_uint_eq(c.removed, 1);
    ck_assert_uint_eq(c.pools_added, 0);
    ck_assert_uint_eq(c.pools_removed, 0);
    assert_last_record("operator", "reload", "OK", c.gen);

    ck_assert_int_eq(model_state(pool("api"), (uint32_t)model_find_backend(pool("api"), "blue-3")),
                     BE_READY);
    ck_assert_int_eq(be("api", "blue-3")->group, BLUE);
    ck_assert_ptr_nonnull(routed("api", "blue-3"));
    ck_assert_ptr_nonnull(routed("api", "blue-1"));

    ck_assert_int_eq(be("api", "blue-2")->admin, ADMIN_DRAIN);
    ck_assert(be("api", "blue-2")->remove_when_drained);
    ck_assert(!be("api", "blue-2")->drained);
    ck_assert(atomic_load(&gone->draining));
    ck_assert_ptr_null(routed("api", "blue-2"));
    run_pending();
    ck_assert_int_ge(model_find_backend(pool("api"), "blue-2"), 0); /* still in flight */

    gen = CF.m->generation;
    atomic_store(&gone->ws[0].active, 0);
    ctl_backend_idle(gone); /* as a worker's report of the last request ending */
    run_pending();
    ck_assert_int_lt(model_find_backend(pool("api"), "blue-2"), 0);
    ck_assert_uint_eq(pool("api")->nb, 3);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    ck_assert_ptr_null(routed("api", "blue-2"));
    ck_assert_ptr_nonnull(routed("api", "blue-3"));
    ctl_down();
}
END_TEST

/* A backend whose address changed is a new backend: the old one leaves, the new one joins. */
START_TEST(test_new_address_is_a_new_backend)
{
    struct counts c;
    struct backend *old;

    up(API_POOL);
    old = be("api", "green-1")->be;
    write_conf(
        "{ name = \"api\"; backends = (\n"
        "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"green-1\"; address = \"127.0.0.1:7\"; weight = 100; group = \"green\"; }"
        " );\n"
        "  shares = { blue = 100; green = 0; }; }");
    c = reload();
    ck_assert_uint_eq(c.added, 1);
    ck_assert_ptr_ne(be("api", "green-1")->be, old);
    ck_assert_str_eq(be("api", "green-1")->be->addr.text, "127.0.0.1:7");
    ck_assert_uint_eq(pool("api")->nb, 3);
    ctl_down();
}
END_TEST

/* Pool api without blue-2. */
#define API_POOL_NO_BLUE2                                                                          \
    "{ name = \"api\"; backends = (\n"                                                             \
    "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"       \
    "  { name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );\n"   \
    "  shares = { blue = 100; green = 0; }; }"

/*
 * A backend put back in the file before it left (a request still in
 * flight) is a backend of the pool again: it is not removed when that
 * request ends. It stays draining (the reload's drain is kept, as
 * test_lifecycle's pool added back expects) until an operator puts it back
 * in rotation.
 */
START_TEST(test_backend_put_back_before_it_left_stays)
{
    struct backend *b2;

    up(API_POOL);
    b2 = be("api", "blue-2")->be;
    atomic_store(&b2->ws[0].active, 1); /* a request in flight on blue-2 */
    write_conf(API_POOL_NO_BLUE2);
    ck_assert_uint_eq(reload().removed, 1);
    ck_assert_int_eq(be("api", "blue-2")->admin, ADMIN_DRAIN);
    ck_assert_ptr_null(routed("api", "blue-2"));

    write_conf(API_POOL);
    reload();
    ck_assert_ptr_eq(be("api", "blue-2")->be, b2);
    ck_assert(!be("api", "blue-2")->remove_when_drained);
    ck_assert_int_eq(be("api", "blue-2")->admin, ADMIN_DRAIN);

    /* Its request ends: drained, and it stays. */
    atomic_store(&b2->ws[0].active, 0);
    ctl_backend_idle(b2);
    run_pending();
    ck_assert_ptr_eq(be("api", "blue-2")->be, b2);
    ck_assert_uint_eq(pool("api")->nb, 3);
    ck_assert_int_eq(model_state(pool("api"), b2->index), BE_DRAINED);
    ok("set state api/blue-2 ready");
    ck_assert_ptr_nonnull(routed("api", "blue-2"));
    ctl_down();
}
END_TEST

/* The same for a pool put back before its backends left. */
START_TEST(test_pool_put_back_before_it_left_stays)
{
    struct backend *w1;

    up(API_POOL ", " WEB_POOL);
    w1 = be("web", "web-1")->be;
    atomic_store(&w1->ws[0].active, 1);
    write_conf(API_POOL);
    ck_assert_uint_eq(reload().pools_removed, 1);
    ck_assert_ptr_null(routed("web", "web-1"));
    write_conf(API_POOL ", " WEB_POOL);
    reload();
    ck_assert(!pool("web")->removed);
    ck_assert_ptr_eq(be("web", "web-1")->be, w1);
    ck_assert(!be("web", "web-1")->remove_when_drained);
    ck_assert_int_eq(be("web", "web-1")->admin, ADMIN_DRAIN);
    atomic_store(&w1->ws[0].active, 0);
    ctl_backend_idle(w1);
    run_pending();
    ck_assert_ptr_eq(be("web", "web-1")->be, w1);
    ok("set state web/web-1 ready");
    ck_assert_ptr_nonnull(routed("web", "web-1"));
    ctl_down();
}
END_TEST

/*
 * A pool new in the file appears and routes to its backends; a pool gone
 * from it stops routing (its backends drain and leave) but keeps its index.
 */
START_TEST(test_pool_added_and_removed)
{
    struct counts c;
    int web;

    up(API_POOL ", " WEB_POOL);
    web = model_find_pool(CF.m, "web");
    ck_assert_ptr_nonnull(routed("web", "web-1"));
    write_conf(API_POOL ",\n"
                        "{ name = \"img\"; backends = (\n"
                        "  { name = \"img-1\"; address = \"127.0.0.1:6\"; weight = 100; group = "
                        "\"main\"; } ); }");
    c = reload();
    ck_assert_uint_eq(c.pools_added, 1);
    ck_assert_uint_eq(c.pools_removed, 1);
    ck_assert_uint_eq(c.added, 1);
    ck_assert_uint_eq(routing_current()->npools, CF.m->npools);

    ck_assert_ptr_nonnull(routed("img", "img-1"));
    ck_assert_int_eq(be("img", "img-1")->admin, ADMIN_READY);

    ck_assert_int_eq(model_find_pool(CF.m, "web"), web);
    ck_assert(pool("web")->removed);
    ck_assert_uint_eq(routing_current()->pools[web].n, 0);
    run_pending(); /* nothing in flight: drained at once, then removed */
    ck_assert_uint_eq(pool("web")->nb, 0);
    ck_assert_uint_eq(routing_current()->pools[web].n, 0);
    /* api is as it was. */
    ck_assert_ptr_nonnull(routed("api", "blue-1"));
    ck_assert_ptr_nonnull(routed("api", "blue-2"));
    ctl_down();
}
END_TEST

/* A pool a reload removed is unknown to changes, as to show pool and /status: nothing is edited. */
START_TEST(test_removed_pool_refuses_changes)
{
    static const char *const lines[] = {"shift web main=100", "add backend web web-2 127.0.0.1:7",
                                        "maintenance on web", "set weight web/web-1 50"};

    up(API_POOL ", " WEB_POOL);
    write_conf(API_POOL);
    reload();
    ck_assert(pool("web")->removed);
    for (unsigned i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        uint64_t gen = CF.m->generation;
        uint32_t nb = pool("web")->nb;

        ctl_run(lines[i]);
        ck_assert_msg(!CF.reply.ok && strcmp(CF.reply.text, "ERR unknown pool web\n\n") == 0,
                      "%s: %s", lines[i], CF.reply.text);
        ck_assert_uint_eq(CF.m->generation, gen);
        ck_assert_uint_eq(pool("web")->nb, nb);
        ck_assert(!pool("web")->maint);
    }
    ctl_down();
}
END_TEST

/*
 * The operator's decisions (a shift's shares, a weight, an admin state)
 * survive a reload of the same file; a value whose text changed in the
 * file wins, the others keep theirs.
 */
START_TEST(test_runtime_decisions_survive_a_reload)
{
    struct counts c;

    up(API_POOL);
    ok("shift api blue=90 green=10");
    ok("set weight api/blue-1 50");
    ok("set state api/blue-2 maint");
    c = reload();
    ck_assert_uint_eq(c.added + c.removed + c.changed + c.pools_added + c.pools_removed, 0);
    ck_assert_int_eq(pool("api")->g[BLUE].share, 90);
    ck_assert_int_eq(pool("api")->g[GREEN].share, 10);
    ck_assert_int_eq(be("api", "blue-1")->weight, 50);
    ck_assert_int_eq(be("api", "blue-2")->admin, ADMIN_MAINT);
    ck_assert_ptr_nonnull(routed("api", "green-1"));
    ck_assert_ptr_null(routed("api", "blue-2"));
    ck_assert_int_eq(routing_current()->pools[0].share[GREEN], 10);

    /* blue-2's weight edited in the file: it wins; the rest keeps its runtime value. */
    write_conf(
        "{ name = \"api\"; backends = (\n"
        "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 30; group = \"blue\"; },\n"
        "  { name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; }"
        " );\n"
        "  shares = { blue = 100; green = 0; }; }");
    c = reload();
    ck_assert_uint_eq(c.changed, 1);
    ck_assert_int_eq(be("api", "blue-2")->weight, 30);
    ck_assert_int_eq(be("api", "blue-1")->weight, 50);
    ck_assert_int_eq(be("api", "blue-2")->admin, ADMIN_MAINT);
    ck_assert_int_eq(pool("api")->g[BLUE].share, 90);

    /* The shares edited in the file: they win. */
    write_conf(
        "{ name = \"api\"; backends = (\n"
        "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 30; group = \"blue\"; },\n"
        "  { name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; }"
        " );\n"
        "  shares = { blue = 50; green = 50; }; }");
    c = reload();
    ck_assert_uint_eq(c.changed, 1);
    ck_assert_int_eq(pool("api")->g[BLUE].share, 50);
    ck_assert_int_eq(pool("api")->g[GREEN].share, 50);
    ck_assert_int_eq(routing_current()->pools[0].share[BLUE], 50);
    ck_assert_int_eq(be("api", "blue-1")->weight, 50);
    ctl_down();
}
END_TEST

/*
 * A file with an error is refused with `file:line: ...` and changes
 * nothing: not the model, the generation, the snapshot nor the
 * configuration in force; the refusal is audited. The same through SIGHUP.
 * Fixed, the file reloads.
 */
START_TEST(test_bad_file_is_refused_and_changes_nothing)
{
    const struct routing *before;
    const struct veer_conf *conf;
    uint64_t gen;
    char want[160];
    json_t *rec;

    up(API_POOL);
    ok("shift api blue=90 green=10");
    gen = CF.m->generation;
    before = routing_current();
    conf = control_conf();
    /* Line 5 (HEAD is two lines, then "pools = ( { name..." and blue-1): a weight of -1. */
    write_conf(
        "{ name = \"api\"; backends = (\n"
        "  { name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },\n"
        "  { name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = -1; group = \"blue\"; },\n"
        "  { name = \"blue-9\"; address = \"127.0.0.1:9\"; weight = 100; group = \"blue\"; }"
        " ); }");
    ctl_run("reload");
    snprintf(want, sizeof(want), "ERR %s:5: ", CF.path);
    ck_assert_msg(!CF.reply.ok && strncmp(CF.reply.text, want, strlen(want)) == 0, "%s (want %s)",
                  CF.reply.text, want);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), before);
    ck_assert_ptr_eq(control_conf(), conf);
    ck_assert_ptr_eq(CF.m->conf, conf);
    ck_assert_uint_eq(ctl_old_confs(), 0);
    ck_assert_int_lt(model_find_backend(pool("api"), "blue-9"), 0);
    ck_assert_int_eq(be("api", "blue-2")->weight, 100);
    ck_assert_int_eq(pool("api")->g[BLUE].share, 90);
    rec = last_record();
    ck_assert_str_eq(json_string_value(json_object_get(rec, "command")), "reload");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), "operator");
    ck_assert_msg(
        strncmp(json_string_value(json_object_get(rec, "result")), want + 4, strlen(want + 4)) == 0,
        "audited %s", json_string_value(json_object_get(rec, "result")));
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "generation")), gen);
    json_decref(rec);

    /* A syntax error, through SIGHUP. */
    write_conf(API_POOL " oops");
    control_reload_signal();
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), before);
    ck_assert_ptr_eq(control_conf(), conf);
    rec = last_record();
    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), "signal");
    ck_assert_msg(strncmp(json_string_value(json_object_get(rec, "result")), want + 4,
                          strlen(CF.path) + 1) == 0,
                  "audited %s", json_string_value(json_object_get(rec, "result")));
    json_decref(rec);

    write_conf(API_POOL);
    reload();
    ck_assert_ptr_ne(control_conf(), conf);
    ck_assert_int_eq(pool("api")->g[BLUE].share, 90);
    ctl_down();
}
END_TEST

/* SIGHUP reloads as the command does, audited as the signal's. */
START_TEST(test_sighup_reloads)
{
    uint64_t gen;

    up(API_POOL);
    gen = CF.m->generation;
    write_conf(API_POOL ", " WEB_POOL);
    control_reload_signal();
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    ck_assert_ptr_nonnull(routed("web", "web-1"));
    assert_last_record("signal", "reload", "OK", gen + 1);
    ctl_down();
}
END_TEST

/*
 * Replaced configurations are kept until nothing reads them: the one veer
 * started with always (the admin socket uses it); a later one while a
 * pool removed from the file still points into it, freed once that pool
 * is back (its configuration then the new file's).
 */
START_TEST(test_replaced_configurations_are_reclaimed)
{
    up(API_POOL ", " WEB_POOL);
    ck_assert_uint_eq(ctl_old_confs(), 0);
    reload(); /* conf 2: the started one is kept */
    ck_assert_uint_eq(ctl_old_confs(), 1);
    ctl_reclaim_confs();
    ck_assert_uint_eq(ctl_old_confs(), 1);

    reload(); /* conf 3: conf 2 is read by nothing */
    ck_assert_uint_eq(ctl_old_confs(), 2);
    ctl_reclaim_confs();
    ck_assert_uint_eq(ctl_old_confs(), 1);

    write_conf(API_POOL);
    reload(); /* conf 4: web is removed, its configuration is conf 3's */
    ck_assert(pool("web")->removed);
    run_pending();
    ctl_reclaim_confs();
    ck_assert_uint_eq(ctl_old_confs(), 2);

    write_conf(API_POOL ", " WEB_POOL);
    reload(); /* conf 5: web is back */
    ck_assert(!pool("web")->removed);
    ck_assert_ptr_nonnull(routed("web", "web-1"));
    ck_assert_uint_eq(ctl_old_confs(), 3);
    ctl_reclaim_confs();
    ck_assert_uint_eq(ctl_old_confs(), 1);
    ck_assert_ptr_eq(pool("web")->conf, &control_conf()->pools[1]);
    ctl_down();
}
END_TEST

static Suite *reload_suite(void)
{
    Suite *s = suite_create("reload");
    TCase *tc = tcase_create("reload");

    tcase_add_test(tc, test_backends_added_and_removed);
    tcase_add_test(tc, test_new_address_is_a_new_backend);
    tcase_add_test(tc, test_backend_put_back_before_it_left_stays);
    tcase_add_test(tc, test_pool_put_back_before_it_left_stays);
    tcase_add_test(tc, test_pool_added_and_removed);
    tcase_add_test(tc, test_removed_pool_refuses_changes);
    tcase_add_test(tc, test_runtime_decisions_survive_a_reload);
    tcase_add_test(tc, test_bad_file_is_refused_and_changes_nothing);
    tcase_add_test(tc, test_sighup_reloads);
    tcase_add_test(tc, test_replaced_configurations_are_reclaimed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(reload_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
