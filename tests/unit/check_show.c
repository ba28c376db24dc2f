/*
 * check_show.c - the read-only admin commands of show.c (show pools, show
 * pool [--json], show stats [--json]), driven the way main drives them:
 * the control thread with no worker thread (ctlfix.h),
 * control_set_show(show_execute), then admin lines parsed by cmd_parse and
 * run through control_execute, which answers at once.
 *
 * The tables are compared to the text they must be, column for column
 * (every cell of a column starts at the same offset, two spaces after the
 * widest cell before it). `show pool P --json` is read with jansson and held
 * to the contract's shape (ARCHITECTURE.md) field by field: the keys, their
 * types and their values. What they show follows the model: shares after a
 * shift, weights and effective weights (share x weight / the group's
 * eligible weight) after set weight, the states PENDING (a pool with
 * readiness checks), READY, MAINT, DRAINING (a request in flight on the one
 * per-worker slot the test plays) and DRAINED (once the test, as that
 * worker, reports it idle), an open circuit. An unknown pool is refused with
 * ERR and changes nothing; show commands are never audited. route explain
 * (same path, read-only) shows the canonical path, the route and its pool or
 * the fallback (the first listener's pool, or the 404 without one), and
 * routes_explain's reasons for the routes ranked above; a path veer answers
 * 400 is refused with ERR bad path. show routes (table and --json) shows
 * each route's match, the pool it sends to now and its state, which route
 * set and route maintenance change (and route explain names them).
 *
 * Each test runs in its own process (Check's fork mode). The only waits are
 * for the control thread's mailbox, stepped here with a deadline.
 */
#include "adminhttp.h"
#include "ctlfix.h"
#include "report.h"
#include "show.h"

#define WAIT_MS 5000

/*
 * api (swrr): blue-1 (100) and blue-2 (300) in blue, green-1 (100) in
 * green; shares blue 100, green 0; no readiness checks, so READY at once.
 * hc (leastconn): h-1 with readiness checks, so PENDING (nothing listens on
 * port 4, and no check passes here anyway).
 */
#define CONF_AUDIT  "audit_log = \"%s/audit.log\";\n"
#define CONF_LISTEN "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
#define CONF        CONF_AUDIT CONF_LISTEN CONF_POOLS
#define CONF_POOLS                                                                                 \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 300; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; },\n"                                                    \
    "{ name = \"hc\"; balance = \"leastconn\";"                                                    \
    "health = { path = \"/ready\"; interval_ms = 60000; };"                                        \
    "backends = ( { name = \"h-1\"; address = \"127.0.0.1:4\"; } ); } );\n"

/*
 * Routes over the same pools: payments (host and prefix) and users-v2
 * (GET/HEAD with X-Api-Version: 2) to hc, users (the prefix alone) to api.
 */
#define CONF_ROUTES                                                                                \
    "routes = ( { name = \"payments\"; pool = \"hc\";"                                             \
    "match = { host = \"api.example.com\"; path_prefix = \"/payments\"; }; },"                     \
    "{ name = \"users-v2\"; pool = \"hc\"; match = { path_prefix = \"/users\";"                    \
    "methods = ( \"GET\", \"HEAD\" ); headers = ( { name = \"X-Api-Version\"; value = \"2\"; } );" \
    "}; },"                                                                                        \
    "{ name = \"users\"; pool = \"api\"; match = { path_prefix = \"/users\"; }; } );\n"

#define API 0
#define HC  1

/*
 * The fixture (ctlfix.h), its file kept for a reload, with one per-worker
 * slot in every backend, which the test fills as that worker would
 * (requests in flight), but no worker thread: nobody reads snapshots, and a
 * warm-up ends at once. show bound, as main does.
 */
static void up_with(const char *conf_fmt)
{
    const struct ctlfix_opts o = {.slots = 1, .readers = 0, .keep_file = true};

    ctl_up_with(conf_fmt, &o);
    control_set_show(show_execute);
    /* As main does: show stats --json renders the status document of the admin HTTP side. */
    ck_assert_int_eq(adminhttp_start(CF.base, CF.c, CF.m, NULL, 0), VEER_OK);
}

static void up(void)
{
    up_with(CONF);
}

static void down(void)
{
    adminhttp_stop();
    ctl_down();
}

/* --- commands ------------------------------------------------------------------------- */

/*
 * Run an admin line (ctl_run: answered at once, ended by exactly one empty
 * line). Returns the reply without that empty line.
 */
static const char *run(const char *line)
{
    ctl_run(line);
    CF.reply.text[strlen(CF.reply.text) - 1] = '\0'; /* keep the last line's own newline */
    return CF.reply.text;
}

/* A show command: answered OK, changing nothing (no generation, no audit record). */
static const char *show(const char *line)
{
    uint64_t gen = CF.m->generation;
    const struct routing *snap = routing_current();
    off_t size = 0;
    FILE *f = fopen(CF.audit, "r");

    ck_assert_ptr_nonnull(f);
    fseeko(f, 0, SEEK_END);
    size = ftello(f);
    run(line);
    ck_assert_msg(CF.reply.ok, "%s: %s", line, CF.reply.text);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), snap);
    fseeko(f, 0, SEEK_END);
    ck_assert_msg(ftello(f) == size, "%s was audited", line);
    fclose(f);
    return CF.reply.text;
}

/* A change that must be accepted (ctlfix.h; its own suite checks the details). */
static void change(const char *line)
{
    ctl_change(line, NULL);
}

/* Step the control thread's loop until cond() holds, for at most WAIT_MS. */
static bool wait_for(bool (*cond)(void *))
{
    return ctl_wait(cond, NULL, WAIT_MS);
}

/* --- reading what came back ---------------------------------------------------------------- */

static struct rt_pool *pool(int pi)
{
    return &CF.m->pools[pi];
}

static struct rt_backend *be(const char *name)
{
    int i = model_find_backend(pool(API), name);

    ck_assert_int_ge(i, 0);
    return &pool(API)->b[i];
}

/* The text with every "G" standing alone (a generation cell or word) made the model's. */
static char *with_gen(const char *want)
{
    static char out[8192];
    char g[32];
    size_t k = 0;

    snprintf(g, sizeof(g), "%llu", (unsigned long long)CF.m->generation);
    for (const char *s = want; *s; s++) {
        bool alone = *s == 'G' && (s == want || s[-1] == ' ') && (s[1] == '\n' || s[1] == ' ');

        if (alone) {
            memcpy(out + k, g, strlen(g));
            k += strlen(g);
        } else {
            out[k++] = *s;
        }
        ck_assert_uint_lt(k, sizeof(out) - 32);
    }
    out[k] = '\0';
    return out;
}

/*
 * Every line of a table (from its header line on) has its cells at the
 * header's offsets: each column starts two spaces after the widest cell of
 * the column before it.
 */
static void assert_aligned(const char *text, const char *header)
{
    const char *t = strstr(text, header);
    unsigned ncols = 0, offs[16], width[16] = {0};

    ck_assert_ptr_nonnull(t);
    /* Widths first: the widest cell of each column over all rows. */
    for (const char *l = t; *l; l = strchr(l, '\n') + 1) {
        const char *e = strchr(l, '\n');
        unsigned c = 0;

        ck_assert_ptr_nonnull(e);
        for (const char *p = l; p < e; c++) {
            size_t n = strcspn(p, " \n");

            ck_assert_uint_lt(c, 16);
            if (n > width[c])
                width[c] = (unsigned)n;
            p += n;
            p += strspn(p, " ");
        }
        if (ncols == 0)
            ncols = c;
        ck_assert_msg(c == ncols, "row with %u cells, header %u: %.*s", c, ncols, (int)(e - l), l);
    }
    offs[0] = 0;
    for (unsigned c = 1; c < ncols; c++)
        offs[c] = offs[c - 1] + width[c - 1] + 2;
    for (const char *l = t; *l; l = strchr(l, '\n') + 1) {
        const char *p = l;

        for (unsigned c = 0; c < ncols; c++) {
            ck_assert_msg((unsigned)(p - l) == offs[c], "column %u at %u, want %u: %.*s", c,
                          (unsigned)(p - l), offs[c], (int)strcspn(l, "\n"), l);
            p += strcspn(p, " \n");
            p += strspn(p, " ");
        }
        ck_assert_msg(*p == '\n', "trailing text: %.*s", (int)strcspn(l, "\n"), l);
        ck_assert_msg(p == l || p[-1] != ' ', "trailing space: %.*s", (int)strcspn(l, "\n"), l);
    }
}

/* The JSON object o has exactly these keys. */
static void assert_keys(json_t *o, const char *const *keys, size_t n)
{
    ck_assert_msg(json_is_object(o), "not an object");
    ck_assert_uint_eq(json_object_size(o), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(json_object_get(o, keys[i]) != NULL, "no key %s", keys[i]);
}

static json_t *show_json(const char *line)
{
    json_error_t e;
    json_t *j;

    show(line);
    j = json_loads(CF.reply.text, 0, &e);
    ck_assert_msg(j != NULL, "%s: not one JSON document: %s: [%s]", line, e.text, CF.reply.text);
    return j;
}

static const char *const pool_keys[] = {"pool", "generation", "balance", "groups", "backends"};
static const char *const group_keys[] = {"name", "share"};
static const char *const backend_keys[] = {"name",   "address",          "group",  "state",
                                           "weight", "effective_weight", "active", "conns"};

/* The backend object of `name` in a show pool --json document, checked against the model. */
static json_t *json_backend(json_t *doc, const char *name)
{
    json_t *a = json_object_get(doc, "backends"), *b;
    size_t i;

    json_array_foreach (a, i, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")), name) == 0)
            return b;
    }
    ck_abort_msg("no backend %s in the document", name);
    return NULL;
}

/*
 * A show pool --json document is the contract's shape for pool pi: the
 * keys and types of ARCHITECTURE.md, and every value the model's, in the
 * model's order.
 */
static void assert_pool_doc(json_t *doc, int pi)
{
    const struct rt_pool *p = pool(pi);
    double *ew = model_effective_weights(p);
    json_t *groups, *backends;

    assert_keys(doc, pool_keys, ARRAY_SIZE(pool_keys));
    ck_assert_str_eq(json_string_value(json_object_get(doc, "pool")), p->name);
    ck_assert(json_is_integer(json_object_get(doc, "generation")));
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(doc, "generation")),
                      CF.m->generation);
    ck_assert(json_is_string(json_object_get(doc, "balance")));
    groups = json_object_get(doc, "groups");
    ck_assert(json_is_array(groups));
    ck_assert_uint_eq(json_array_size(groups), p->ng);
    for (uint32_t g = 0; g < p->ng; g++) {
        json_t *o = json_array_get(groups, g);

        assert_keys(o, group_keys, ARRAY_SIZE(group_keys));
        ck_assert_str_eq(json_string_value(json_object_get(o, "name")), p->g[g].name);
        ck_assert(json_is_integer(json_object_get(o, "share")));
        ck_assert_int_eq(json_integer_value(json_object_get(o, "share")), p->g[g].share);
    }
    backends = json_object_get(doc, "backends");
    ck_assert(json_is_array(backends));
    ck_assert_uint_eq(json_array_size(backends), p->nb);
    for (uint32_t i = 0; i < p->nb; i++) {
        json_t *o = json_array_get(backends, i);
        const struct rt_backend *b = &p->b[i];

        assert_keys(o, backend_keys, ARRAY_SIZE(backend_keys));
        ck_assert_str_eq(json_string_value(json_object_get(o, "name")), b->be->name);
        ck_assert_str_eq(json_string_value(json_object_get(o, "address")), b->be->addr.text);
        ck_assert_str_eq(json_string_value(json_object_get(o, "group")), p->g[b->group].name);
        ck_assert_str_eq(json_string_value(json_object_get(o, "state")),
                         backend_state_name(model_state(p, i)));
        ck_assert(json_is_integer(json_object_get(o, "weight")));
        ck_assert_int_eq(json_integer_value(json_object_get(o, "weight")), b->weight);
        ck_assert(json_is_number(json_object_get(o, "effective_weight")));
        ck_assert_double_eq_tol(json_number_value(json_object_get(o, "effective_weight")), ew[i],
                                1e-4);
        ck_assert(json_is_integer(json_object_get(o, "active")));
        ck_assert_uint_eq((uint32_t)json_integer_value(json_object_get(o, "active")),
                          backend_active(b->be));
        ck_assert(json_is_integer(json_object_get(o, "conns")));
        ck_assert_uint_eq((uint32_t)json_integer_value(json_object_get(o, "conns")),
                          backend_conns(b->be));
    }
    free(ew);
}

/* A backend's number in a JSON document. */
static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_number(v), "%s is not a number", key);
    return json_number_value(v);
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

/* --- tests ------------------------------------------------------------------------------ */

/*
 * show pools: the contract's columns (pool backend group state weight share
 * active conns gen), one row per backend of every pool in the model's
 * order, padded into columns; the share is the backend's group's.
 */
START_TEST(test_show_pools_table)
{
    up();
    ck_assert_str_eq(
        show("show pools"),
        with_gen("pool  backend  group    state    weight  share  active  conns  gen\n"
                 "api   blue-1   blue     READY    100     100    0       0      G\n"
                 "api   blue-2   blue     READY    300     100    0       0      G\n"
                 "api   green-1  green    READY    100     0      0       0      G\n"
                 "hc    h-1      default  PENDING  100     100    0       0      G\n"));
    assert_aligned(CF.reply.text, "pool  backend");

    /* Columns widen to their widest cell; a new group starts at 0%. */
    change("add backend api a-much-longer-backend-name 127.0.0.1:5 weight 7 group canary-long");
    show("show pools");
    assert_aligned(CF.reply.text, "pool  backend");
    ck_assert_ptr_nonnull(strstr(
        CF.reply.text,
        with_gen("api   a-much-longer-backend-name  canary-long  READY    7       0      0   "
                 "    0      G\n")));
    down();
}
END_TEST

/*
 * show pool P: a line naming the pool, its generation and balancer, a line
 * per group with its share, then a table of its backends with address,
 * effective weight and circuit. Effective weight = share x weight / the
 * group's eligible weight: blue 100% over 100 and 300 is 25 and 75; green
 * at 0% gives green-1 nothing.
 */
START_TEST(test_show_pool_table)
{
    up();
    ck_assert_str_eq(
        show("show pool api"),
        with_gen("pool api generation G balance swrr\n"
                 "group blue share 100\n"
                 "group green share 0\n"
                 "backend  address      group  state  weight  effective  active  conns  circuit\n"
                 "blue-1   127.0.0.1:1  blue   READY  100     25         0       0      closed\n"
                 "blue-2   127.0.0.1:2  blue   READY  300     75         0       0      closed\n"
                 "green-1  127.0.0.1:3  green  READY  100     0          0       0      closed\n"));
    assert_aligned(CF.reply.text, "backend  address");
    ck_assert_str_eq(
        show("show pool hc"),
        with_gen(
            "pool hc generation G balance leastconn\n"
            "group default share 100\n"
            "backend  address      group    state    weight  effective  active  conns  circuit\n"
            "h-1      127.0.0.1:4  default  PENDING  100     0          0       0      closed\n"));
    down();
}
END_TEST

/*
 * show pool P --json: one JSON document (then the empty line), the
 * contract's keys and no others, each of its type, every value the model's.
 */
START_TEST(test_show_pool_json_is_the_contract)
{
    json_t *doc;

    up();
    doc = show_json("show pool api --json");
    /* One line: the document, then the reply's empty line. */
    ck_assert_ptr_eq(strchr(CF.reply.text, '\n'), CF.reply.text + strlen(CF.reply.text) - 1);
    assert_pool_doc(doc, API);
    ck_assert_str_eq(str(doc, "balance"), "swrr");
    ck_assert_str_eq(str(json_array_get(json_object_get(doc, "groups"), 0), "name"), "blue");
    ck_assert_double_eq(num(json_backend(doc, "blue-1"), "effective_weight"), 25);
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 75);
    ck_assert_double_eq(num(json_backend(doc, "green-1"), "effective_weight"), 0);
    ck_assert_str_eq(str(json_backend(doc, "green-1"), "address"), "127.0.0.1:3");
    ck_assert_str_eq(str(json_backend(doc, "green-1"), "state"), "READY");
    /* A whole effective weight is written as the contract's example writes it: 25, not 25.0. */
    ck_assert_ptr_nonnull(strstr(CF.reply.text, "\"effective_weight\":25,"));
    json_decref(doc);

    doc = show_json("show pool hc --json");
    assert_pool_doc(doc, HC);
    ck_assert_str_eq(str(doc, "balance"), "leastconn");
    ck_assert_str_eq(str(json_backend(doc, "h-1"), "state"), "PENDING");
    ck_assert_double_eq(num(json_backend(doc, "h-1"), "effective_weight"), 0);
    json_decref(doc);
    down();
}
END_TEST

/*
 * After a shift and a weight change, every show renders the new shares,
 * weights, effective weights and generation; rollback brings the old ones
 * back.
 */
START_TEST(test_show_follows_shift_and_weight)
{
    json_t *doc;

    up();
    change("shift api blue=80 green=20");
    ck_assert_str_eq(
        show("show pools"),
        with_gen("pool  backend  group    state    weight  share  active  conns  gen\n"
                 "api   blue-1   blue     READY    100     80     0       0      G\n"
                 "api   blue-2   blue     READY    300     80     0       0      G\n"
                 "api   green-1  green    READY    100     20     0       0      G\n"
                 "hc    h-1      default  PENDING  100     100    0       0      G\n"));
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_double_eq(num(json_backend(doc, "blue-1"), "effective_weight"), 20);
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 60);
    ck_assert_double_eq(num(json_backend(doc, "green-1"), "effective_weight"), 20);
    json_decref(doc);

    change("set weight api/blue-2 100");
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_int_eq(json_integer_value(json_object_get(json_backend(doc, "blue-2"), "weight")),
                     100);
    ck_assert_double_eq(num(json_backend(doc, "blue-1"), "effective_weight"), 40);
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 40);
    json_decref(doc);
    ck_assert_ptr_nonnull(
        strstr(show("show pool api"),
               "blue-2   127.0.0.1:2  blue   READY  100     40         0       0      closed\n"));

    /* A share that does not divide evenly: 6 digits, as the contract's numbers. */
    change("set weight api/blue-2 200");
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_double_eq_tol(num(json_backend(doc, "blue-1"), "effective_weight"), 80.0 / 3, 1e-4);
    ck_assert_double_eq_tol(num(json_backend(doc, "blue-2"), "effective_weight"), 160.0 / 3, 1e-4);
    json_decref(doc);
    ck_assert_ptr_nonnull(
        strstr(show("show pool api"),
               "blue-1   127.0.0.1:1  blue   READY  100     26.6667    0       0      closed\n"));
    ck_assert_ptr_nonnull(
        strstr(CF.reply.text,
               "blue-2   127.0.0.1:2  blue   READY  200     53.3333    0       0      closed\n"));

    change("rollback api");
    change("rollback api");
    change("rollback api");
    ck_assert_ptr_nonnull(strstr(show("show pool api"), "group blue share 100\n"
                                                        "group green share 0\n"));
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 75);
    json_decref(doc);
    down();
}
END_TEST

static bool blue1_drained(void *arg)
{
    (void)arg;
    return be("blue-1")->drained;
}

static bool blue2_open(void *arg)
{
    (void)arg;
    return be("blue-2")->breaker == BREAKER_OPEN;
}

/*
 * The states as shows render them: MAINT (out of rotation, its group keeps
 * the share and blue-1 takes it all), DRAINING with the requests it still
 * has, DRAINED once the worker holding them reports it idle; a circuit
 * opened by a breaker report shows `open` with the backend still READY but
 * given no traffic.
 */
START_TEST(test_show_states)
{
    json_t *doc;

    up();
    change("set state api/blue-2 maint");
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_str_eq(str(json_backend(doc, "blue-2"), "state"), "MAINT");
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 0);
    ck_assert_double_eq(num(json_backend(doc, "blue-1"), "effective_weight"), 100);
    json_decref(doc);
    ck_assert_ptr_nonnull(
        strstr(show("show pools"), "api   blue-2   blue     MAINT    300     100"));
    change("set state api/blue-2 ready");

    /* Two requests in flight on blue-1, as worker 0 counts them. */
    backend_wstat_add(&be("blue-1")->be->ws[0].active, 2);
    backend_wstat_add(&be("blue-1")->be->ws[0].conns, 1);
    change("drain api/blue-1");
    ck_assert_str_eq(
        show("show pools"),
        with_gen("pool  backend  group    state     weight  share  active  conns  gen\n"
                 "api   blue-1   blue     DRAINING  100     100    2       1      G\n"
                 "api   blue-2   blue     READY     300     100    0       0      G\n"
                 "api   green-1  green    READY     100     0      0       0      G\n"
                 "hc    h-1      default  PENDING   100     100    0       0      G\n"));
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_str_eq(str(json_backend(doc, "blue-1"), "state"), "DRAINING");
    ck_assert_int_eq(json_integer_value(json_object_get(json_backend(doc, "blue-1"), "active")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_backend(doc, "blue-1"), "conns")), 1);
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 100);
    json_decref(doc);

    /* The worker finishes them and closes the connection: the last drop reports it idle. */
    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].active);
    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].active);
    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].conns);
    ck_assert_msg(wait_for(blue1_drained), "blue-1 never DRAINED");
    ck_assert_ptr_nonnull(strstr(show("show pool api"),
                                 "blue-1   127.0.0.1:1  blue   DRAINED  100     0          0       "
                                 "0      closed\n"));
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_str_eq(str(json_backend(doc, "blue-1"), "state"), "DRAINED");
    json_decref(doc);
    change("set state api/blue-1 ready");

    /* A breaker report of a run of failures opens blue-2's circuit. */
    report_breaker(0, be("blue-2")->be, false);
    ck_assert_msg(wait_for(blue2_open), "blue-2's circuit never opened");
    ck_assert_ptr_nonnull(strstr(show("show pool api"),
                                 "blue-2   127.0.0.1:2  blue   READY  300     0          0       0 "
                                 "     open\n"));
    ck_assert_ptr_nonnull(strstr(CF.reply.text,
                                 "blue-1   127.0.0.1:1  blue   READY  100     100        0  "
                                 "     0      closed\n"));
    doc = show_json("show pool api --json");
    assert_pool_doc(doc, API);
    ck_assert_str_eq(str(json_backend(doc, "blue-2"), "state"), "READY");
    ck_assert_double_eq(num(json_backend(doc, "blue-2"), "effective_weight"), 0);
    json_decref(doc);
    down();
}
END_TEST

/* An unknown pool is refused with ERR, as text and as --json, and changes nothing. */
START_TEST(test_unknown_pool_refused)
{
    uint64_t gen;
    const struct routing *snap;

    up();
    gen = CF.m->generation;
    snap = routing_current();
    ck_assert_str_eq(run("show pool nope"), "ERR unknown pool nope\n");
    ck_assert(!CF.reply.ok);
    ck_assert_str_eq(run("show pool nope --json"), "ERR unknown pool nope\n");
    ck_assert(!CF.reply.ok);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), snap);

    /* show_execute is for show commands only. */
    show_execute(ctl_req("swap api", &CF.reply));
    ck_assert(CF.reply.done && !CF.reply.ok);
    ck_assert_str_eq(CF.reply.text, "ERR not a show command\n\n");
    ck_assert_int_eq(pool(API)->g[0].share, 100);
    down();
}
END_TEST

static bool hc_reaped(void *arg)
{
    (void)arg;
    return pool(HC)->nb == 0;
}

/*
 * A pool a reload took out of the configuration is gone for the shows too
 * (as for /status): show pool answers ERR unknown pool at once, and show
 * pools lists none of it once its backends are reaped.
 */
START_TEST(test_removed_pool_is_unknown)
{
    char text[2048];
    FILE *f;

    up();
    snprintf(text, sizeof(text), CONF, CF.dir);
    *strstr(text, "},\n{ name = \"hc\"") = '\0';
    strcat(text, "} );\n");
    f = fopen(CF.c->path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    run("reload");
    ck_assert_msg(CF.reply.ok && strstr(CF.reply.text, "pools_removed=1") != NULL, "%s",
                  CF.reply.text);
    ck_assert_str_eq(run("show pool hc"), "ERR unknown pool hc\n");
    /* Its backend, idle, is DRAINED at once and reaped from the loop. */
    ck_assert_msg(wait_for(hc_reaped), "h-1 not reaped");
    ck_assert_msg(strstr(show("show pools"), "hc ") == NULL, "%s", CF.reply.text);
    ck_assert_str_eq(run("show pool hc"), "ERR unknown pool hc\n");
    ck_assert(!CF.reply.ok);
    ck_assert_str_eq(run("show pool hc --json"), "ERR unknown pool hc\n");
    ck_assert_ptr_nonnull(strstr(show("show pool api"), "group blue share 100\n"));
    down();
}
END_TEST

/*
 * show stats: the last second's figures per backend (rps, error percent,
 * p99 in ms, the circuit) in the columns veerctl top draws; --json is the
 * /status document of the admin HTTP side for the same model.
 */
START_TEST(test_show_stats)
{
    json_t *doc, *pools, *b;

    up();
    /* The figures stats.c computed over the last second. */
    be("blue-1")->rate.rps = 1234.4;
    be("blue-1")->rate.error_rate = 0.0525;
    be("blue-1")->rate.p99_ms = 3.456;
    show("show stats");
    ck_assert_str_eq(
        CF.reply.text,
        with_gen(
            "pool  backend  group    state    weight  rps   err%  p99ms  active  conns  circuit  "
            "gen\n"
            "api   blue-1   blue     READY    100     1234  5.25  3.46   0       0      closed   "
            "G\n"
            "api   blue-2   blue     READY    300     0     0.00  0.00   0       0      closed   "
            "G\n"
            "api   green-1  green    READY    100     0     0.00  0.00   0       0      closed   "
            "G\n"
            "hc    h-1      default  PENDING  100     0     0.00  0.00   0       0      closed   "
            "G\n"));
    assert_aligned(CF.reply.text, "pool  backend");

    doc = show_json("show stats --json");
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(doc, "generation")),
                      CF.m->generation);
    pools = json_object_get(doc, "pools");
    ck_assert_uint_eq(json_array_size(pools), 2);
    ck_assert_str_eq(str(json_array_get(pools, 0), "name"), "api");
    b = json_array_get(json_object_get(json_array_get(pools, 0), "backends"), 0);
    ck_assert_str_eq(str(b, "name"), "blue-1");
    ck_assert_str_eq(str(b, "state"), "READY");
    ck_assert_double_eq_tol(num(b, "rps"), 1234.4, 0.05);
    ck_assert_double_eq_tol(num(b, "error_rate"), 0.0525, 1e-4);
    ck_assert_double_eq_tol(num(b, "p99_ms"), 3.456, 1e-3);
    ck_assert_str_eq(
        str(json_array_get(json_object_get(json_array_get(pools, 1), "backends"), 0), "state"),
        "PENDING");
    json_decref(doc);
    down();
}
END_TEST

/* route explain without routes: the canonical path and the listener's pool. */
START_TEST(test_route_explain_without_routes)
{
    up();
    ck_assert_str_eq(show("route explain GET h //a/./b/%7e"),
                     "OK\n"
                     "canonical_path /a/b/~\n"
                     "route none pool api (listener fallback)\n"
                     "no routes configured\n");
    down();
}
END_TEST

/*
 * route explain with routes: the winner, its pool, the routes ranked above it
 * and why each failed; the query is shown and not matched on; a path veer
 * would answer 400 is refused with the reason, and nothing is audited.
 */
START_TEST(test_route_explain_with_routes)
{
    up_with(CONF CONF_ROUTES);
    ck_assert_str_eq(show("route explain GET api.example.com:8080 /payments/../payments/x?a=1"),
                     "OK\n"
                     "canonical_path /payments/x\n"
                     "query ?a=1 (ignored for matching)\n"
                     "route payments pool hc\n");
    ck_assert_str_eq(show("route explain GET api.example.com /users/7 X-Api-Version:2"),
                     "OK\n"
                     "canonical_path /users/7\n"
                     "route users-v2 pool hc\n"
                     "skip payments: path_prefix /payments does not cover /users/7\n");
    ck_assert_str_eq(show("route explain POST - /users X-Api-Version:2"),
                     "OK\n"
                     "canonical_path /users\n"
                     "route users pool api\n"
                     "skip users-v2: method POST not in GET HEAD\n"
                     "skip 1 route for other hosts\n");
    ck_assert_str_eq(show("route explain GET other /x"),
                     "OK\n"
                     "canonical_path /x\n"
                     "route none pool api (listener fallback)\n"
                     "skip users-v2: path_prefix /users does not cover /x\n"
                     "skip users: path_prefix /users does not cover /x\n"
                     "skip 1 route for other hosts\n");
    ck_assert_str_eq(run("route explain GET h /a/%2Fb"), "ERR bad path: encoded slash (%2F)\n");
    ck_assert(!CF.reply.ok);
    ck_assert_str_eq(run("route explain GET h /.."), "ERR bad path: path climbs above '/'\n");
    ck_assert(!CF.reply.ok);
    down();
}
END_TEST

/* A listener without a pool: what no route matches gets 404, and explain says so. */
START_TEST(test_route_explain_without_a_fallback_pool)
{
    up_with(CONF_AUDIT "listen = ( { address = \"127.0.0.1:0\"; } );\n" CONF_POOLS CONF_ROUTES);
    ck_assert_str_eq(show("route explain DELETE api.example.com /"),
                     "OK\n"
                     "canonical_path /\n"
                     "route none (no pool: 404 no_route)\n"
                     "skip payments: path_prefix /payments does not cover /\n"
                     "skip users-v2: path_prefix /users does not cover /\n"
                     "skip users: path_prefix /users does not cover /\n");
    down();
}
END_TEST

/*
 * show routes: a row per route with its match, the pool it sends to now and
 * its state; --json the same as objects with the last second's figures. A
 * route set and route maintenance show in both, and in route explain.
 */
START_TEST(test_show_routes)
{
    json_t *doc, *routes, *r;
    json_error_t e;

    up_with(CONF CONF_ROUTES);
    ck_assert_str_eq(show("show routes"),
                     "route     match                                             "
                     "          pool  state    rps  err%  p99ms\n"
                     "payments  host=api.example.com path_prefix=/payments        "
                     "          hc    serving  0    0.00  0.00\n"
                     "users-v2  path_prefix=/users methods=GET,HEAD header=X-Api-V"
                     "ersion:2  hc    serving  0    0.00  0.00\n"
                     "users     path_prefix=/users                                "
                     "          api   serving  0    0.00  0.00\n");
    run("route set payments pool api");
    ck_assert(CF.reply.ok);
    run("route maintenance users on --retry-after 9");
    ck_assert(CF.reply.ok);
    doc = json_loads(show("show routes --json"), 0, &e);
    ck_assert_msg(doc != NULL, "%s", e.text);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "generation")),
                     (json_int_t)CF.m->generation);
    routes = json_object_get(doc, "routes");
    ck_assert_uint_eq(json_array_size(routes), 3);
    r = json_array_get(routes, 0);
    ck_assert_str_eq(str(r, "name"), "payments");
    ck_assert_str_eq(str(r, "pool"), "api");
    ck_assert_str_eq(str(r, "state"), "serving");
    ck_assert_str_eq(str(json_object_get(r, "match"), "host"), "api.example.com");
    ck_assert_str_eq(str(json_object_get(r, "match"), "path_prefix"), "/payments");
    ck_assert_uint_eq(json_object_size(json_object_get(r, "match")), 2);
    ck_assert(json_is_real(json_object_get(r, "rps")));
    ck_assert(json_is_real(json_object_get(r, "error_rate")));
    ck_assert(json_is_real(json_object_get(r, "p99_ms")));
    r = json_array_get(routes, 1);
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(r, "match"), "methods"), 1)),
                     "HEAD");
    ck_assert_str_eq(
        str(json_array_get(json_object_get(json_object_get(r, "match"), "headers"), 0), "value"),
        "2");
    ck_assert_str_eq(str(json_array_get(routes, 2), "state"), "maintenance");
    json_decref(doc);
    ck_assert_str_eq(show("route explain GET - /users/1"),
                     "OK\n"
                     "canonical_path /users/1\n"
                     "route users pool api\n"
                     "state maintenance (503, Retry-After: 9)\n"
                     "skip users-v2: header X-Api-Version is not \"2\"\n"
                     "skip 1 route for other hosts\n");
    down();
}
END_TEST

/* show pools --json: every pool's show pool --json document, in one. */
START_TEST(test_show_pools_json)
{
    json_t *doc, *pools, *one;
    json_error_t e;
    char *a, *b;

    up();
    doc = json_loads(show("show pools --json"), 0, &e);
    ck_assert_msg(doc != NULL, "%s", e.text);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "generation")),
                     (json_int_t)CF.m->generation);
    pools = json_object_get(doc, "pools");
    ck_assert_uint_eq(json_array_size(pools), 2);
    one = json_loads(show("show pool hc --json"), 0, &e);
    ck_assert_msg(one != NULL, "%s", e.text);
    a = json_dumps(json_array_get(pools, 1), JSON_SORT_KEYS);
    b = json_dumps(one, JSON_SORT_KEYS);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    json_decref(one);
    json_decref(doc);
    down();
}
END_TEST

/* Without routes: a header line and an empty list. */
START_TEST(test_show_routes_without_routes)
{
    up();
    ck_assert_str_eq(show("show routes"), "route  match  pool  state  rps  err%  p99ms\n");
    ck_assert_str_eq(show("show routes --json"), "{\"generation\":1,\"routes\":[]}\n");
    down();
}
END_TEST

static Suite *show_suite(void)
{
    Suite *s = suite_create("show");
    TCase *tc = tcase_create("show");

    tcase_add_test(tc, test_show_pools_table);
    tcase_add_test(tc, test_show_pool_table);
    tcase_add_test(tc, test_show_pool_json_is_the_contract);
    tcase_add_test(tc, test_show_follows_shift_and_weight);
    tcase_add_test(tc, test_show_states);
    tcase_add_test(tc, test_unknown_pool_refused);
    tcase_add_test(tc, test_removed_pool_is_unknown);
    tcase_add_test(tc, test_show_stats);
    tcase_add_test(tc, test_route_explain_without_routes);
    tcase_add_test(tc, test_route_explain_with_routes);
    tcase_add_test(tc, test_route_explain_without_a_fallback_pool);
    tcase_add_test(tc, test_show_routes);
    tcase_add_test(tc, test_show_routes_without_routes);
    tcase_add_test(tc, test_show_pools_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(show_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
