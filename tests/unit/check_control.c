/*
 * check_control.c - the edit path of the control thread (control.c), set
 * up as main.c sets it up but with no worker at all (ctlfix.h): admin
 * lines go through control_execute and are answered at once.
 *
 * Every accepted change (shift, swap, set weight, set state, drain,
 * maintenance, rollback) answers `OK gen=N applied_us=T`, N one more than
 * before; the model holds the new values and the published snapshot
 * (routing_current) is a new one of generation N that routes by them; the
 * audit log gets one record of the command with result OK and generation
 * N. A warm-up with no worker to open connections ends at once. A refused
 * change answers `ERR ...`, leaves the model, the generation and the
 * snapshot as they were, and is audited with its ERR line. `rollback`
 * restores the values of the previous operator change, one change at a
 * time, until there is nothing left to roll back, and not across a
 * membership change. add backend joins READY (no checks) and routed; del
 * backend waits for it to be out of rotation. A change that cannot be
 * audited (the log held) is not made. The audit chain then verifies.
 *
 * Each test runs in its own process (Check's fork mode); nothing waits.
 */
#include "ctlfix.h"

/*
 * api: blue-1, blue-2 (blue, 100%) and green-1 (green, 0%); no readiness
 * checks, so every backend is READY at once.
 */
#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; } );\n"

#define API   0
#define BLUE  0 /* group indexes: order of first appearance */
#define GREEN 1

/* --- the model and the snapshot -------------------------------------------------------- */

static struct rt_pool *pool(void)
{
    return &CF.m->pools[API];
}

static struct rt_backend *be(const char *name)
{
    int i = model_find_backend(pool(), name);

    ck_assert_int_ge(i, 0);
    return &pool()->b[i];
}

/* The operator's values of pool api, to tell whether a command changed any. */
struct values {
    int share[8];
    int weight[8];
    enum admin_state admin[8];
    bool maint;
};

static struct values values(void)
{
    struct values v;

    memset(&v, 0, sizeof(v));
    ck_assert_uint_le(pool()->ng, 8);
    ck_assert_uint_le(pool()->nb, 8);
    for (uint32_t g = 0; g < pool()->ng; g++)
        v.share[g] = pool()->g[g].share;
    for (uint32_t i = 0; i < pool()->nb; i++) {
        v.weight[i] = pool()->b[i].weight;
        v.admin[i] = pool()->b[i].admin;
    }
    v.maint = pool()->maint;
    return v;
}

/* The model holds these values. */
static void assert_values(struct values v)
{
    struct values now = values();

    for (unsigned k = 0; k < 8; k++) {
        ck_assert_int_eq(now.share[k], v.share[k]);
        ck_assert_int_eq(now.weight[k], v.weight[k]);
        ck_assert_int_eq(now.admin[k], v.admin[k]);
    }
    ck_assert_int_eq(now.maint, v.maint);
}

/* The snapshot's entry for a backend of api, or NULL when it routes nothing to it. */
static const struct snap_backend *routed(const char *name)
{
    const struct snap_pool *sp = &routing_current()->pools[API];

    for (uint32_t i = 0; i < sp->n; i++)
        if (strcmp(sp->b[i].be->name, name) == 0)
            return &sp->b[i];
    return NULL;
}

/* The published snapshot is the model's: generation, shares, maintenance. */
static void assert_published(void)
{
    const struct routing *r = routing_current();

    ck_assert_uint_eq(r->generation, CF.m->generation);
    ck_assert_uint_eq(r->pools[API].ng, pool()->ng);
    for (uint32_t g = 0; g < pool()->ng; g++)
        ck_assert_int_eq(r->pools[API].share[g], pool()->g[g].share);
    ck_assert_int_eq(r->pools[API].maint, pool()->maint);
}

/* A change that must be accepted (ctl_change), and the snapshot is the model's. */
static void change(const char *line, const char *more)
{
    ctl_change(line, more);
    assert_published();
}

/* A change that must be refused (ctl_refused), and the model's values untouched. */
static void refused(const char *line, const char *want)
{
    struct values v = values();

    ctl_refused(line, want);
    assert_values(v);
}

/* --- tests ------------------------------------------------------------------------------ */

/*
 * shift sets the shares in one publish; green-1 starts receiving traffic,
 * so the change warms connections first: with no worker that ends at once
 * (warm_us follows applied_us). swap exchanges the shares; twice is
 * identity.
 */
START_TEST(test_shift_and_swap_publish_one_generation_each)
{
    ctl_up(CONF);
    ck_assert_ptr_null(routed("green-1"));
    change("shift api blue=90 green=10", " warm_us=");
    ck_assert_int_eq(pool()->g[BLUE].share, 90);
    ck_assert_int_eq(pool()->g[GREEN].share, 10);
    ck_assert_ptr_nonnull(routed("green-1"));
    ck_assert_ptr_nonnull(routed("blue-1"));

    change("shift api blue=60 green=40", NULL);
    change("swap api", NULL);
    ck_assert_int_eq(pool()->g[BLUE].share, 40);
    ck_assert_int_eq(pool()->g[GREEN].share, 60);
    change("swap api", NULL);
    ck_assert_int_eq(pool()->g[BLUE].share, 60);
    ck_assert_int_eq(pool()->g[GREEN].share, 40);

    /* Green alone (past its capacity, hence --force) takes blue out of the snapshot. */
    change("shift api green=100 blue=0 --force", NULL);
    ck_assert_ptr_null(routed("blue-1"));
    ck_assert_ptr_null(routed("blue-2"));
    ck_assert_ptr_nonnull(routed("green-1"));
    ctl_down();
}
END_TEST

/* set weight divides the group's share among its backends: 300 and 100 route 3:1. */
START_TEST(test_set_weight_divides_the_group_share)
{
    ctl_up(CONF);
    change("set weight api/blue-1 300", NULL);
    ck_assert_int_eq(be("blue-1")->weight, 300);
    ck_assert_int_eq(be("blue-2")->weight, 100);
    ck_assert_uint_eq(routed("blue-1")->weight, 3 * routed("blue-2")->weight);

    /* Weight 0 takes a backend out of the snapshot while its group keeps the share. */
    change("set weight api/blue-2 0", NULL);
    ck_assert_ptr_null(routed("blue-2"));
    ck_assert_ptr_nonnull(routed("blue-1"));
    ctl_down();
}
END_TEST

/*
 * set state maint takes a backend out of rotation (MAINT) and ready puts it
 * back; drain with no request in flight anywhere is DRAINED at once, and
 * drain --wait is answered at once.
 */
START_TEST(test_set_state_and_drain)
{
    ctl_up(CONF);
    change("set state api/blue-2 maint", NULL);
    ck_assert_int_eq(be("blue-2")->admin, ADMIN_MAINT);
    ck_assert_int_eq(model_state(pool(), (uint32_t)model_find_backend(pool(), "blue-2")), BE_MAINT);
    ck_assert_ptr_null(routed("blue-2"));
    change("set state api/blue-2 ready", NULL);
    ck_assert_int_eq(be("blue-2")->admin, ADMIN_READY);
    ck_assert_ptr_nonnull(routed("blue-2"));

    change("drain api/blue-1", " active=0");
    ck_assert_int_eq(be("blue-1")->admin, ADMIN_DRAIN);
    ck_assert(atomic_load(&be("blue-1")->be->draining));
    ck_assert_int_eq(model_state(pool(), (uint32_t)model_find_backend(pool(), "blue-1")),
                     BE_DRAINED);
    ck_assert_ptr_null(routed("blue-1"));
    change("set state api/blue-1 ready", NULL);
    ck_assert(!atomic_load(&be("blue-1")->be->draining));
    change("drain api/blue-2 --wait", " active=0");
    ck_assert_int_eq(model_state(pool(), (uint32_t)model_find_backend(pool(), "blue-2")),
                     BE_DRAINED);
    ctl_down();
}
END_TEST

/* maintenance on|off for a pool: one publish each, the snapshot says so. */
START_TEST(test_maintenance_on_and_off)
{
    ctl_up(CONF);
    change("maintenance on api --retry-after 7", NULL);
    ck_assert(pool()->maint);
    ck_assert(routing_current()->pools[API].maint);
    ck_assert_int_eq(routing_current()->pools[API].retry_after, 7);
    change("maintenance off api", NULL);
    ck_assert(!pool()->maint);
    ck_assert(!routing_current()->pools[API].maint);
    ctl_down();
}
END_TEST

/* Refusals change nothing: not the model, not the generation, not the snapshot. */
START_TEST(test_refused_changes_leave_model_and_generation)
{
    ctl_up(CONF);
    refused("shift api blue=90 green=20", "100");
    refused("shift api red=10", "unknown group red");
    refused("shift nope blue=100", "unknown pool nope");
    refused("set weight api/nope 5", "unknown backend nope");
    refused("set state api/nope maint", "unknown backend nope");
    refused("drain api/nope", "unknown backend nope");
    refused("rollback api", "nothing to roll back");
    /* A group with a share and no eligible weight left. */
    change("shift api blue=90 green=10", NULL);
    refused("set weight api/green-1 0", "green");
    refused("set state api/green-1 maint", "green");
    /* A share past what the group's READY backends can carry (capacity_headroom), unless --force.
     */
    refused("shift api blue=0 green=100", "capacity_headroom");
    change("shift api blue=0 green=100 --force", NULL);
    ck_assert_int_eq(pool()->g[GREEN].share, 100);
    ctl_down();
}
END_TEST

/*
 * rollback restores the shares, weights and admin states of the previous
 * operator change, one change per rollback, each a publish of its own,
 * until there is nothing left to roll back.
 */
START_TEST(test_rollback_restores_previous_values)
{
    struct values v0, v1, v2;

    ctl_up(CONF);
    v0 = values();
    change("shift api blue=90 green=10", NULL);
    v1 = values();
    change("set weight api/blue-1 50", NULL);
    v2 = values();
    change("set state api/blue-2 maint", NULL);
    ck_assert_ptr_null(routed("blue-2"));

    change("rollback api", NULL);
    assert_values(v2);
    ck_assert_int_eq(be("blue-2")->admin, ADMIN_READY);
    ck_assert_ptr_nonnull(routed("blue-2"));
    change("rollback api", NULL);
    assert_values(v1);
    ck_assert_int_eq(be("blue-1")->weight, 100);
    change("rollback api", NULL);
    assert_values(v0);
    ck_assert_int_eq(pool()->g[GREEN].share, 0);
    ck_assert_ptr_null(routed("green-1"));
    refused("rollback api", "nothing to roll back");
    ctl_down();
}
END_TEST

/*
 * add backend joins at once (no readiness checks: READY) and is routed;
 * del backend is refused until it is out of rotation (MAINT here), then
 * takes it out of the model and the snapshot. A rollback across a
 * membership change is refused: there is no safe undo.
 */
/*
 * Membership that DNS discovery changed (it adds and drains backends on its
 * own, with no operator command) does not block a rollback: the previous
 * change is laid over the pool as it is now. Added and gone backends keep
 * their values; the rest get the values from before the change.
 */
START_TEST(test_rollback_across_discovery)
{
    struct conf_addr a;
    char err[100];
    uint32_t i;

    ctl_up(CONF);
    change("set weight api/blue-2 7", NULL);
    change("shift api blue=60 green=40", NULL);
    ck_assert_int_eq(conf_parse_addr("127.0.0.1:9", false, &a, err, sizeof(err)), 0);
    i = model_add_backend(CF.m, API, "dns-127.0.0.1:9", &a, 300, "green");
    pool()->b[i].disc_id = 1; /* what discovery.c does, without DNS */
    control_publish();
    change("rollback api", NULL);
    ck_assert_int_eq(pool()->g[BLUE].share, 100);
    ck_assert_int_eq(pool()->g[GREEN].share, 0);
    ck_assert_int_eq(be("blue-2")->weight, 7);
    ck_assert_int_eq(be("dns-127.0.0.1:9")->weight, 300);
    change("rollback api", NULL); /* and once more, across it too */
    ck_assert_int_eq(be("blue-2")->weight, 100);
    /* An operator's own add is different: no safe undo across it. */
    change("shift api blue=50 green=50", NULL);
    change("add backend api blue-3 127.0.0.1:10", " state=READY");
    refused("rollback api", "changed membership");
    ctl_down();
}
END_TEST

START_TEST(test_add_and_delete_backend)
{
    ctl_up(CONF);
    change("shift api blue=90 green=10", NULL);
    change("add backend api blue-3 127.0.0.1:9 weight 50 group blue", " state=READY");
    ck_assert_int_eq(be("blue-3")->weight, 50);
    ck_assert_int_eq(be("blue-3")->group, BLUE);
    ck_assert_ptr_nonnull(routed("blue-3"));
    refused("add backend api blue-1 127.0.0.1:9", "already exists");
    refused("rollback api", "changed membership");
    refused("del backend api blue-3", "drain it");
    change("set state api/blue-3 maint", NULL);
    ck_assert_ptr_null(routed("blue-3"));
    change("del backend api blue-3", NULL);
    ck_assert_int_lt(model_find_backend(pool(), "blue-3"), 0);
    ck_assert_uint_eq(pool()->nb, 3);
    ck_assert_ptr_null(routed("blue-3"));
    ctl_down();
}
END_TEST

/*
 * A change that cannot be audited is not made: with the log held (as for
 * an upgrade's handoff) a shift is refused, and neither the model, the
 * generation, the snapshot nor the log changes. Released, it goes through.
 */
START_TEST(test_unauditable_change_is_refused)
{
    uint64_t gen;
    const struct routing *before;
    struct values v;
    size_t records;

    ctl_up(CONF);
    gen = CF.m->generation;
    before = routing_current();
    v = values();
    records = ctl_audit_count();
    audit_hold(true);
    ctl_run("shift api blue=90 green=10");
    ck_assert_msg(!CF.reply.ok &&
                      strncmp(CF.reply.text, "ERR audit log cannot be written", 31) == 0,
                  "%s", CF.reply.text);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), before);
    assert_values(v);
    ck_assert_uint_eq(ctl_audit_count(), records);
    audit_hold(false);
    change("shift api blue=90 green=10", NULL);
    ctl_down();
}
END_TEST

static Suite *control_suite(void)
{
    Suite *s = suite_create("control");
    TCase *tc = tcase_create("edit");

    tcase_add_test(tc, test_shift_and_swap_publish_one_generation_each);
    tcase_add_test(tc, test_set_weight_divides_the_group_share);
    tcase_add_test(tc, test_set_state_and_drain);
    tcase_add_test(tc, test_maintenance_on_and_off);
    tcase_add_test(tc, test_refused_changes_leave_model_and_generation);
    tcase_add_test(tc, test_rollback_restores_previous_values);
    tcase_add_test(tc, test_add_and_delete_backend);
    tcase_add_test(tc, test_rollback_across_discovery);
    tcase_add_test(tc, test_unauditable_change_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(control_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
