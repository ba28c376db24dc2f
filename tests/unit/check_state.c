/*
 * check_state.c - the state file: exact rendering, a render/apply round
 * trip onto a fresh model, names that no longer exist, corrupt texts that
 * must change nothing, shares that no longer total 100, loading from disk,
 * and the persistence thread (atomic writes, coalescing, flush on stop,
 * audit fsync, retry after a failed write), and the readiness an upgrade
 * hands to the new process (never in the state file).
 */
#include "audit.h"
#include "sbuf.h"
#include "state.h"
#include "veer.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Load a config text through a temporary file, as the daemon would. */
static struct veer_conf *load(const char *text)
{
    char path[] = "/tmp/check_state_XXXXXX";
    char err[512];
    int fd = mkstemp(path);
    struct veer_conf *c;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "config: %s", err);
    return c;
}

#define LISTEN "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"

/* Two pools: api with blue (2 backends) and green (1), web with one backend. */
#define CONF                                                                                       \
    LISTEN                                                                                         \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; },"                                                      \
    "{ name = \"web\"; backends = ( { name = \"w1\"; address = \"127.0.0.1:4\"; } ); } );"

/* A valid text for CONF that changes every kind of value. */
#define GOOD                                                                                       \
    "veer-state 1\n"                                                                               \
    "generation 42\n"                                                                              \
    "pool api\n"                                                                                   \
    "share blue 30\n"                                                                              \
    "share green 70\n"                                                                             \
    "backend blue-1 weight 5 admin drain\n"                                                        \
    "backend blue-2 weight 0 admin maint\n"                                                        \
    "backend green-1 weight 1000 admin ready\n"                                                    \
    "pool web\n"                                                                                   \
    "share default 100\n"                                                                          \
    "backend w1 weight 7 admin maint\n"                                                            \
    "end\n"

/* Every field of the model, so that "unchanged" can be checked in one compare. */
static char *dump(const struct model *m)
{
    struct sbuf b;

    sb_init(&b);
    sb_printf(&b, "gen=%llu npools=%u\n", (unsigned long long)m->generation, m->npools);
    for (uint32_t i = 0; i < m->npools; i++) {
        const struct rt_pool *p = &m->pools[i];

        sb_printf(&b, "pool %s conf=%p ng=%u nb=%u\n", p->name, (const void *)p->conf, p->ng,
                  p->nb);
        for (uint32_t g = 0; g < p->ng; g++)
            sb_printf(&b, " group %s %d\n", p->g[g].name, p->g[g].share);
        for (uint32_t j = 0; j < p->nb; j++)
            sb_printf(&b, " be %s id=%u w=%d g=%u admin=%d health=%d drained=%d\n",
                      p->b[j].be->name, p->b[j].be->id, p->b[j].weight, p->b[j].group,
                      p->b[j].admin, p->b[j].health, p->b[j].drained);
    }
    for (uint32_t i = 0; i < m->nroutes; i++)
        sb_printf(&b, "route %s pool=%d maint=%d retry=%d hold=%lld\n", m->routes[i].name,
                  m->routes[i].pool, m->routes[i].maint, m->routes[i].maint_retry_after,
                  (long long)m->routes[i].maint_hold_ms);
    return sb_steal(&b);
}

/* Release a model and its config, and routing.c's global tables (LSan). */
static void done(struct model *m, struct veer_conf *c)
{
    model_free(m);
    conf_free(c);
    routing_shutdown();
}

/*
 * m2 holds the same values as m1 (backend ids differ: each model creates
 * its own, so they are aligned before the compare).
 */
static void assert_same_values(const struct model *m1, struct model *m2)
{
    char *d1, *d2;

    for (uint32_t i = 0; i < m1->npools; i++)
        for (uint32_t j = 0; j < m1->pools[i].nb; j++)
            m2->pools[i].b[j].be->id = m1->pools[i].b[j].be->id;
    d1 = dump(m1);
    d2 = dump(m2);
    ck_assert_str_eq(d1, d2);
    free(d1);
    free(d2);
}

START_TEST(test_render_is_the_documented_format)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char *text;

    m->generation = 42;
    m->pools[0].g[0].share = 90;
    m->pools[0].g[1].share = 10;
    m->pools[0].b[2].admin = ADMIN_DRAIN;
    m->pools[0].b[1].weight = 3;
    text = state_render(m);
    ck_assert_str_eq(text, "veer-state 1\n"
                           "generation 42\n"
                           "pool api\n"
                           "share blue 90\n"
                           "share green 10\n"
                           "backend blue-1 weight 100 admin ready\n"
                           "backend blue-2 weight 3 admin ready\n"
                           "backend green-1 weight 100 admin drain\n"
                           "pool web\n"
                           "share default 100\n"
                           "backend w1 weight 100 admin ready\n"
                           "end\n");
    free(text);
    done(m, c);
}
END_TEST

START_TEST(test_round_trip_restores_every_value)
{
    struct veer_conf *c = load(CONF);
    struct model *m1 = model_from_conf(c), *m2 = model_from_conf(c);
    char msg[256], *text, *d1;

    m1->generation = 42;
    m1->pools[0].g[0].share = 25;
    m1->pools[0].g[1].share = 75;
    m1->pools[0].b[0].weight = 0;
    m1->pools[0].b[1].admin = ADMIN_MAINT;
    m1->pools[0].b[2].weight = 1000;
    m1->pools[0].b[2].admin = ADMIN_DRAIN;
    m1->pools[1].b[0].weight = 1;
    text = state_render(m1);
    ck_assert_int_eq(state_apply(m2, text, msg, sizeof(msg)), 4);
    ck_assert_str_eq(msg, "restored 4 backends in 2 pools (generation 42)");
    assert_same_values(m1, m2);
    free(text);
    text = state_render(m2);
    d1 = state_render(m1);
    ck_assert_str_eq(text, d1); /* and it renders back to the same text */
    free(d1);
    free(text);
    model_free(m2);
    done(m1, c);
}
END_TEST

START_TEST(test_generation_keeps_the_higher)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char msg[256];

    m->generation = 100;
    ck_assert_int_eq(state_apply(m, GOOD, msg, sizeof(msg)), 4);
    ck_assert_uint_eq(m->generation, 100);
    ck_assert_str_eq(msg, "restored 4 backends in 2 pools (generation 100)");
    m->generation = 7;
    ck_assert_int_eq(state_apply(m, GOOD, msg, sizeof(msg)), 4);
    ck_assert_uint_eq(m->generation, 42);
    done(m, c);
}
END_TEST

START_TEST(test_unknown_names_are_skipped_and_counted)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char msg[256];

    ck_assert_int_eq(state_apply(m,
                                 "veer-state 1\ngeneration 5\n"
                                 "pool api\nshare blue 40\nshare green 60\nshare gone 0\n"
                                 "backend blue-1 weight 9 admin ready\n"
                                 "backend old-1 weight 9 admin maint\n"
                                 "pool ghost\nshare x 100\nbackend g weight 1 admin ready\n"
                                 "end\n",
                                 msg, sizeof(msg)),
                     1);
    ck_assert_str_eq(msg, "restored 1 backends in 1 pools (generation 5); skipped 3 unknown");
    ck_assert_int_eq(m->pools[0].g[0].share, 40);
    ck_assert_int_eq(m->pools[0].g[1].share, 60);
    ck_assert_int_eq(m->pools[0].b[0].weight, 9);
    ck_assert_int_eq(m->pools[0].b[1].weight, 100);
    ck_assert_int_eq(m->pools[0].b[1].admin, ADMIN_READY);
    done(m, c);
}
END_TEST

/* A text that must be refused, and the line its error must name. */
struct corrupt {
    const char *what;
    const char *text;
    int line;
};

static const struct corrupt corrupt_texts[] = {
    {"empty", "", 1},
    {"only a newline", "\n", 1},
    {"missing header", "generation 42\npool api\nshare blue 30\nshare green 70\nend\n", 1},
    {"bad version", "veer-state 2\ngeneration 42\npool api\nend\n", 1},
    {"header with extra field", "veer-state 1 x\ngeneration 42\nend\n", 1},
    {"missing generation", "veer-state 1\npool api\nshare blue 30\nshare green 70\nend\n", 2},
    {"bad generation", "veer-state 1\ngeneration 4x2\npool api\nend\n", 2},
    {"generation overflow", "veer-state 1\ngeneration 99999999999999999999\nend\n", 2},
    {"negative generation", "veer-state 1\ngeneration -1\nend\n", 2},
    {"garbage line",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\nhello world\nend\n", 6},
    {"weight 1001",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\n"
     "backend blue-1 weight 1001 admin ready\nend\n",
     6},
    {"negative weight",
     "veer-state 1\ngeneration 42\npool api\nbackend blue-1 weight -1 admin ready\nend\n", 4},
    {"weight with suffix",
     "veer-state 1\ngeneration 42\npool api\nbackend blue-1 weight 10k admin ready\nend\n", 4},
    {"empty-looking weight",
     "veer-state 1\ngeneration 42\npool api\nbackend blue-1 weight admin ready\nend\n", 4},
    {"share 101", "veer-state 1\ngeneration 42\npool api\nshare blue 101\nshare green 0\nend\n", 4},
    {"unknown admin",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\n"
     "backend blue-1 weight 5 admin paused\nend\n",
     6},
    {"misspelt keyword field",
     "veer-state 1\ngeneration 42\npool api\nbackend blue-1 wieght 5 admin ready\nend\n", 4},
    {"missing end",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\n"
     "backend blue-1 weight 5 admin drain\n",
     7},
    {"truncated mid-line",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\n"
     "backend blue-1 weight 5 adm",
     6},
    {"end without newline",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\nend", 6},
    {"binary junk",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\n"
     "\x01\xff\xfe\x7f junk\nend\n",
     6},
    {"binary in a name",
     "veer-state 1\ngeneration 42\npool api\nbackend blue\xc3\xa9 weight 5 admin ready\nend\n", 4},
    {"CRLF line ends", "veer-state 1\r\ngeneration 42\r\nend\r\n", 1},
    {"duplicate pool",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare green 70\npool web\n"
     "pool api\nend\n",
     7},
    {"duplicate backend",
     "veer-state 1\ngeneration 42\npool api\nbackend blue-1 weight 5 admin ready\n"
     "backend blue-1 weight 6 admin ready\nend\n",
     5},
    {"duplicate group",
     "veer-state 1\ngeneration 42\npool api\nshare blue 30\nshare blue 70\nend\n", 5},
    {"share before pool", "veer-state 1\ngeneration 42\nshare blue 30\nend\n", 3},
    {"backend before pool", "veer-state 1\ngeneration 42\nbackend b weight 1 admin ready\nend\n",
     3},
    {"pool without name", "veer-state 1\ngeneration 42\npool\nend\n", 3},
    {"empty line in body", "veer-state 1\ngeneration 42\npool api\n\nend\n", 4},
    {"data after end", "veer-state 1\ngeneration 42\npool api\nend\npool web\n", 5},
    {"two ends", "veer-state 1\ngeneration 42\nend\nend\n", 4},
    {"end with extra field", "veer-state 1\ngeneration 42\nend now\n", 3},
    {"backend with too many fields",
     "veer-state 1\ngeneration 42\npool api\nbackend b weight 1 admin ready extra\nend\n", 4},
    {"route without conf", "veer-state 1\ngeneration 42\npool api\nroute r1 pool web\nend\n", 4},
    {"route with a bad maint",
     "veer-state 1\ngeneration 42\nroute r1 pool web conf api maint x 0\nend\n", 3},
    {"route with a short maint",
     "veer-state 1\ngeneration 42\nroute r1 pool web conf api maint 30\nend\n", 3},
    {"route retry above a day",
     "veer-state 1\ngeneration 42\nroute r1 pool web conf api maint 86401 0\nend\n", 3},
    {"duplicate route",
     "veer-state 1\ngeneration 42\nroute r1 pool web conf api\nroute r1 pool api conf api\n"
     "end\n",
     4},
    {"audit with a short hash", "veer-state 1\ngeneration 42\naudit 1 00 3 00\nend\n", 3},
    {"audit with a field missing",
     "veer-state 1\ngeneration 42\naudit 1 "
     "0000000000000000000000000000000000000000000000000000000000000000 3\nend\n",
     3},
    {"audit hash in capitals",
     "veer-state 1\ngeneration 42\naudit 1 "
     "0000000000000000000000000000000000000000000000000000000000000000 3 "
     "ABCDEF0000000000000000000000000000000000000000000000000000000000\nend\n",
     3},
};

/* CONF with two routes: r1 to api, r2 to web. */
#define ROUTES                                                                                     \
    CONF "routes = ( { name = \"r1\"; pool = \"api\"; match = { path_prefix = \"/a\"; }; },"       \
         "{ name = \"r2\"; pool = \"web\"; match = { path_prefix = \"/w\"; }; } );"

START_TEST(test_route_state_round_trip)
{
    struct veer_conf *c = load(ROUTES);
    struct model *m1 = model_from_conf(c), *m2 = model_from_conf(c);
    char msg[256], *text;

    /* As configured: no route line, so an older binary still reads the file. */
    text = state_render(m1);
    ck_assert_ptr_null(strstr(text, "route"));
    free(text);
    m1->routes[0].pool = 1; /* route set r1 pool web */
    m1->routes[1].maint = true;
    m1->routes[1].maint_retry_after = 30;
    m1->routes[1].maint_hold_ms = 5000;
    text = state_render(m1);
    ck_assert_ptr_nonnull(strstr(text, "route r1 pool web conf api\n"
                                       "route r2 pool web conf web maint 30 5000\nend\n"));
    ck_assert_int_eq(state_apply(m2, text, msg, sizeof(msg)), 4);
    ck_assert_str_eq(msg, "restored 4 backends in 2 pools, 2 routes (generation 1)");
    assert_same_values(m1, m2);
    free(text);
    model_free(m2);
    done(m1, c);
}
END_TEST

START_TEST(test_route_state_yields_to_an_edited_config)
{
    struct veer_conf *c = load(ROUTES);
    struct model *m = model_from_conf(c);
    char msg[256];

    /* Saved when r1's config named web; the config now names api: the config wins. */
    ck_assert_int_eq(state_apply(m,
                                 "veer-state 1\ngeneration 3\n"
                                 "route r1 pool web conf web maint 9 0\n"
                                 "route r2 pool gone conf web\n"
                                 "route r3 pool api conf api\nend\n",
                                 msg, sizeof(msg)),
                     0);
    ck_assert_str_eq(msg, "restored 0 backends in 0 pools, 2 routes (generation 3); skipped 1 "
                          "unknown");
    ck_assert_int_eq(m->routes[0].pool, 0);
    ck_assert(m->routes[0].maint); /* its maintenance still applies */
    ck_assert_int_eq(m->routes[0].maint_retry_after, 9);
    ck_assert_int_eq(m->routes[1].pool, 1); /* its saved pool is gone: the config's */
    ck_assert(!m->routes[1].maint);
    done(m, c);
}
END_TEST

START_TEST(test_corrupt_text_is_refused_and_changes_nothing)
{
    const struct corrupt *t = &corrupt_texts[_i];
    struct veer_conf *c = load(ROUTES);
    struct model *m = model_from_conf(c);
    char msg[256], want[32], *before, *after;

    m->pools[0].b[0].drained = true; /* a value apply would never produce */
    before = dump(m);
    ck_assert_msg(state_apply(m, t->text, msg, sizeof(msg)) == -1, "%s: accepted", t->what);
    snprintf(want, sizeof(want), "line %d: ", t->line);
    ck_assert_msg(strncmp(msg, want, strlen(want)) == 0, "%s: msg '%s', want '%s...'", t->what, msg,
                  want);
    after = dump(m);
    ck_assert_msg(strcmp(before, after) == 0, "%s: model changed", t->what);
    free(before);
    free(after);
    done(m, c);
}
END_TEST

START_TEST(test_the_valid_base_of_the_corrupt_texts_is_accepted)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char msg[256];

    ck_assert_int_eq(state_apply(m, GOOD, msg, sizeof(msg)), 4);
    ck_assert_int_eq(m->pools[0].g[1].share, 70);
    ck_assert_int_eq(m->pools[0].b[0].admin, ADMIN_DRAIN);
    ck_assert_int_eq(m->pools[0].b[1].admin, ADMIN_MAINT);
    ck_assert_int_eq(m->pools[0].b[2].weight, 1000);
    ck_assert_int_eq(m->pools[1].b[0].weight, 7);
    /* Runs of spaces are tolerated, as a hand edit might leave them. */
    ck_assert_int_eq(state_apply(m,
                                 "veer-state 1\ngeneration  43\npool api\n"
                                 "backend  blue-1 weight 6  admin ready\nend\n",
                                 msg, sizeof(msg)),
                     1);
    ck_assert_int_eq(m->pools[0].b[0].weight, 6);
    ck_assert_uint_eq(m->generation, 43);
    /* A NULL message buffer is allowed. */
    ck_assert_int_eq(state_apply(m, GOOD, NULL, 0), 4);
    ck_assert_int_eq(state_apply(m, "junk\n", NULL, 0), -1);
    done(m, c);
}
END_TEST

START_TEST(test_shares_not_totalling_100_are_skipped_but_weights_apply)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char msg[256];

    /* green is not saved and keeps its current 0: 50 + 0 != 100. */
    ck_assert_int_eq(state_apply(m,
                                 "veer-state 1\ngeneration 3\npool api\nshare blue 50\n"
                                 "backend blue-1 weight 11 admin maint\nend\n",
                                 msg, sizeof(msg)),
                     1);
    ck_assert_int_eq(m->pools[0].g[0].share, 100);
    ck_assert_int_eq(m->pools[0].g[1].share, 0);
    ck_assert_int_eq(m->pools[0].b[0].weight, 11);
    ck_assert_int_eq(m->pools[0].b[0].admin, ADMIN_MAINT);
    ck_assert_uint_eq(m->generation, 3);
    /* A group removed from the config held 60: the rest totals 40. */
    ck_assert_int_eq(state_apply(m,
                                 "veer-state 1\ngeneration 4\npool api\nshare blue 40\n"
                                 "share green 0\nshare removed 60\n"
                                 "backend blue-2 weight 12 admin drain\nend\n",
                                 msg, sizeof(msg)),
                     1);
    ck_assert_int_eq(m->pools[0].g[0].share, 100);
    ck_assert_int_eq(m->pools[0].b[1].weight, 12);
    ck_assert_str_eq(msg, "restored 1 backends in 1 pools (generation 4); skipped 1 unknown");
    /* Saving only some groups is fine when the merge totals 100. */
    ck_assert_int_eq(state_apply(m,
                                 "veer-state 1\ngeneration 4\npool api\nshare blue 100\n"
                                 "pool web\nend\n",
                                 msg, sizeof(msg)),
                     0);
    ck_assert_int_eq(m->pools[0].g[0].share, 100);
    done(m, c);
}
END_TEST

/* A fresh private directory for files of one test. */
static char *temp_dir(void)
{
    char *dir = strdup("/tmp/check_state_dir_XXXXXX");

    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

static char *path_in(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);

    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* The whole file as a string (caller frees), NULL when it cannot be read. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct sbuf b;
    char chunk[4096];
    size_t n;

    if (f == NULL)
        return NULL;
    sb_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sb_add(&b, chunk, n);
    fclose(f);
    return sb_steal(&b);
}

static void spit(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Remove dir and the files a test may have left in it. */
static void remove_dir(char *dir)
{
    const char *names[] = {"state", "state.tmp", "audit", "sub/state", "sub/state.tmp", "sub"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *p = path_in(dir, names[i]);

        if (unlink(p) < 0)
            rmdir(p);
        free(p);
    }
    ck_assert_int_eq(rmdir(dir), 0);
    free(dir);
}

/*
 * The audit chain's ends go into the state file and come back at the next start: an empty
 * (rotated) audit log then continues the chain after the saved last record.
 */
START_TEST(test_audit_chain_ends_round_trip)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char dir[] = "/tmp/check_state_audit_XXXXXX", path[64], err[128], msg[256], *text, *line;
    struct audit_anchor a, b;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    ck_assert_int_eq(audit_open(path, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(audit_write("operator", NULL, "shift", "OK", 1, NULL, NULL), 0);
    ck_assert(audit_anchor(&a));
    text = state_render(m);
    line = strstr(text, "\naudit 1 ");
    ck_assert_ptr_nonnull(line);
    ck_assert(strncmp(line + 9, a.first_prev, 64) == 0);
    ck_assert(strncmp(line + 9 + 64, " 3 ", 3) == 0);
    ck_assert(strncmp(line + 9 + 64 + 3, a.last_hash, 64) == 0);
    audit_close();
    unlink(path);
    ck_assert_int_ge(state_apply(m, text, msg, sizeof(msg)), 0);
    ck_assert_int_eq(audit_open(path, err, sizeof(err)), 0);
    ck_assert(audit_anchor(&b));
    ck_assert_uint_eq(b.first_seq, 4);
    ck_assert_str_eq(b.first_prev, a.last_hash);
    ck_assert_uint_eq(b.last_seq, 3);
    audit_close();
    unlink(path);
    rmdir(dir);
    free(text);
    done(m, c);
}
END_TEST

START_TEST(test_load_of_a_missing_file_is_not_an_error)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char msg[256], *before = dump(m), *after;

    ck_assert_int_eq(state_load(m, "/nonexistent/veer/state", msg, sizeof(msg)), 0);
    ck_assert_str_eq(msg, "no state file");
    after = dump(m);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    done(m, c);
}
END_TEST

START_TEST(test_load_applies_a_good_file_and_refuses_a_corrupt_one)
{
    struct veer_conf *c = load(CONF);
    struct model *m = model_from_conf(c);
    char *dir = temp_dir(), *path = path_in(dir, "state"), msg[512], *before, *after;
    static const char nul[] = "veer-state 1\ngeneration 42\npool api\0\nend\n";
    static const char bad[] = "veer-state 1\ngeneration 1\npool api\n"
                              "backend blue-1 weight 2000 admin ready\n";

    spit(path, GOOD, strlen(GOOD));
    ck_assert_int_eq(state_load(m, path, msg, sizeof(msg)), 4);
    ck_assert_str_eq(msg, "restored 4 backends in 2 pools (generation 42)");
    ck_assert_int_eq(m->pools[0].g[0].share, 30);
    before = dump(m);
    spit(path, nul, sizeof(nul) - 1);
    ck_assert_int_eq(state_load(m, path, msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, "line 3: NUL byte"));
    ck_assert_ptr_nonnull(strstr(msg, path));
    spit(path, bad, strlen(bad));
    ck_assert_int_eq(state_load(m, path, msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ": line 4: bad weight"));
    ck_assert_int_eq(state_load(m, dir, msg, sizeof(msg)), -1); /* a directory */
    after = dump(m);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    free(path);
    remove_dir(dir);
    done(m, c);
}
END_TEST

/* Poll until more than `above` state writes completed, or ms passed. */
static bool wait_writes(unsigned long above, int ms)
{
    uint64_t deadline = veer_now_us() + (uint64_t)ms * 1000;
    struct timespec tick = {0, 1000000};

    while (persist_writes() <= above) {
        if (veer_now_us() > deadline)
            return false;
        nanosleep(&tick, NULL);
    }
    return true;
}

/* Poll until the file at path holds exactly want, or ms passed. */
static bool wait_content(const char *path, const char *want, int ms)
{
    uint64_t deadline = veer_now_us() + (uint64_t)ms * 1000;
    struct timespec tick = {0, 1000000};

    for (;;) {
        char *got = slurp(path);
        bool same = got != NULL && strcmp(got, want) == 0;

        free(got);
        if (same)
            return true;
        if (veer_now_us() > deadline)
            return false;
        nanosleep(&tick, NULL);
    }
}

START_TEST(test_persist_writes_the_file_atomically_and_promptly)
{
    char *dir = temp_dir(), *path = path_in(dir, "state"), *tmp = path_in(dir, "state.tmp");
    unsigned long w0 = persist_writes();
    struct stat st;
    char *got;
    uint64_t t0;

    ck_assert_int_eq(persist_start(path, -1), 0);
    ck_assert_int_eq(persist_start(path, -1), -1); /* only one thread */
    t0 = veer_now_us();
    persist_state(strdup(GOOD));
    ck_assert(wait_writes(w0, 5000));
    /* The contract is 100 ms; leave room for a loaded machine under ASan. */
    ck_assert_uint_lt(veer_now_us() - t0, 1000000);
    got = slurp(path);
    ck_assert_str_eq(got, GOOD);
    free(got);
    ck_assert_int_eq(access(tmp, F_OK), -1);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777 & ~0640, 0);
    persist_stop();
    ck_assert_int_eq(access(tmp, F_OK), -1);
    free(path);
    free(tmp);
    remove_dir(dir);
}
END_TEST

START_TEST(test_rapid_updates_leave_the_last_text)
{
    char *dir = temp_dir(), *path = path_in(dir, "state"), *tmp = path_in(dir, "state.tmp");
    char last[64];
    unsigned long w0 = persist_writes();
    const int n = 500;

    ck_assert_int_eq(persist_start(path, -1), 0);
    for (int i = 1; i <= n; i++) {
        char text[64];

        snprintf(text, sizeof(text), "veer-state 1\ngeneration %d\nend\n", i);
        persist_state(strdup(text));
        if (i == n)
            strcpy(last, text);
    }
    ck_assert(wait_content(path, last, 5000));
    ck_assert_uint_le(persist_writes() - w0, (unsigned long)n);
    ck_assert_int_eq(access(tmp, F_OK), -1);
    persist_stop();
    free(path);
    free(tmp);
    remove_dir(dir);
}
END_TEST

START_TEST(test_stop_flushes_what_is_pending)
{
    char *dir = temp_dir(), *path = path_in(dir, "state"), *got;

    ck_assert_int_eq(persist_start(path, -1), 0);
    persist_state(strdup("veer-state 1\ngeneration 1\nend\n"));
    persist_state(strdup(GOOD));
    persist_stop();
    got = slurp(path);
    ck_assert_str_eq(got, GOOD);
    free(got);
    /* Stopped: new texts are freed, not written; a restart works. */
    persist_state(strdup("dropped"));
    got = slurp(path);
    ck_assert_str_eq(got, GOOD);
    free(got);
    ck_assert_int_eq(persist_start(path, -1), 0);
    persist_state(strdup("veer-state 1\ngeneration 2\nend\n"));
    persist_stop();
    got = slurp(path);
    ck_assert_str_eq(got, "veer-state 1\ngeneration 2\nend\n");
    free(got);
    free(path);
    remove_dir(dir);
}
END_TEST

START_TEST(test_audit_fsync_on_request)
{
    char *dir = temp_dir(), *audit = path_in(dir, "audit"), *path = path_in(dir, "state");
    int fd = open(audit, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    unsigned long w0 = persist_writes();

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "{}\n", 3), 3);
    /* Audit only, no state file: texts are freed, fsync requests served. */
    ck_assert_int_eq(persist_start(NULL, fd), 0);
    persist_sync_audit();
    persist_state(strdup(GOOD));
    persist_sync_audit();
    persist_stop();
    ck_assert_uint_eq(persist_writes(), w0);
    ck_assert_int_ne(fcntl(fd, F_GETFD), -1); /* still ours, still open */
    /* Both at once, then an fd that fails fsync: logged, never fatal. */
    ck_assert_int_eq(persist_start(path, fd), 0);
    persist_sync_audit();
    persist_state(strdup(GOOD));
    ck_assert(wait_writes(w0, 5000));
    persist_stop();
    close(fd);
    ck_assert_int_eq(persist_start(path, fd), 0); /* now a closed fd */
    persist_sync_audit();
    persist_state(strdup("veer-state 1\ngeneration 9\nend\n"));
    ck_assert(wait_content(path, "veer-state 1\ngeneration 9\nend\n", 5000));
    persist_stop();
    free(audit);
    free(path);
    remove_dir(dir);
}
END_TEST

START_TEST(test_calls_without_a_thread_are_harmless)
{
    unsigned long w0 = persist_writes();

    persist_state(strdup(GOOD)); /* freed: LSan would report it otherwise */
    persist_state(NULL);
    persist_sync_audit();
    persist_stop();
    ck_assert_uint_eq(persist_writes(), w0);
}
END_TEST

START_TEST(test_failed_write_is_retried_not_fatal)
{
    char *dir = temp_dir(), *sub = path_in(dir, "sub"), *path = path_in(dir, "sub/state");
    unsigned long w0 = persist_writes();

    ck_assert_int_eq(persist_start(path, -1), 0);
    persist_state(strdup(GOOD)); /* the directory does not exist yet */
    ck_assert(!wait_writes(w0, 100));
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert(wait_content(path, GOOD, 5000)); /* retried within a second or so */
    persist_stop();
    free(sub);
    free(path);
    remove_dir(dir);
}
END_TEST

/* --- readiness carried across an upgrade ------------------------------------------------- */

/* api has readiness checks (blue-1, blue-2, green-1), web has none (w1). */
#define CONF_H                                                                                     \
    LISTEN                                                                                         \
    "pools = ( { name = \"api\"; health = { path = \"/ready\"; interval_ms = 500;"                 \
    " timeout_ms = 1000; rise = 2; fall = 3; }; backends = ("                                      \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; },"                                                      \
    "{ name = \"web\"; backends = ( { name = \"w1\"; address = \"127.0.0.1:4\"; } ); } );"

/* The old process's view: blue-1 READY, blue-2 DOWN, green-1 still PENDING. */
#define HEALTH_TEXT                                                                                \
    "veer-health 1\n"                                                                              \
    "pool api\n"                                                                                   \
    "backend blue-1 127.0.0.1:1 ready\n"                                                           \
    "backend blue-2 127.0.0.1:2 down\n"                                                            \
    "backend green-1 127.0.0.1:3 pending\n"                                                        \
    "pool web\n"                                                                                   \
    "backend w1 127.0.0.1:4 ready\n"                                                               \
    "end\n"

START_TEST(test_health_render_is_the_documented_format)
{
    struct veer_conf *c = load(CONF_H);
    struct model *m = model_from_conf(c);
    char *text;

    ck_assert_int_eq(m->pools[0].b[0].health, HEALTH_PENDING); /* config load: PENDING */
    ck_assert_int_eq(m->pools[1].b[0].health, HEALTH_READY);   /* no checks: READY */
    m->pools[0].b[0].health = HEALTH_READY;
    m->pools[0].b[1].health = HEALTH_DOWN;
    text = state_render_health(m);
    ck_assert_str_eq(text, HEALTH_TEXT);
    free(text);
    done(m, c);
}
END_TEST

/*
 * Upgrade mode (a readiness text handed over) starts READY backends READY
 * and DOWN ones DOWN; a plain start (the state file only) leaves every
 * checked backend PENDING, whatever the old process saw: the state file
 * carries no health.
 */
START_TEST(test_readiness_is_carried_only_by_an_upgrade)
{
    struct veer_conf *c = load(CONF_H);
    struct model *old = model_from_conf(c), *up = model_from_conf(c), *plain = model_from_conf(c);
    char msg[256], *state, *again;

    old->pools[0].b[0].health = HEALTH_READY;
    old->pools[0].b[1].health = HEALTH_DOWN;
    old->pools[0].b[2].admin = ADMIN_MAINT;
    state = state_render(old);
    old->pools[0].b[0].health = old->pools[0].b[1].health = HEALTH_PENDING;
    again = state_render(old);
    ck_assert_str_eq(state, again); /* the state file does not carry health */
    free(again);

    /* Plain restart: the state file alone. */
    ck_assert_int_eq(state_apply(plain, state, msg, sizeof(msg)), 4);
    for (uint32_t i = 0; i < 3; i++)
        ck_assert_int_eq(plain->pools[0].b[i].health, HEALTH_PENDING);
    ck_assert_int_eq(plain->pools[0].b[2].admin, ADMIN_MAINT);

    /* Upgrade: the state file, then the readiness the old process handed over. */
    ck_assert_int_eq(state_apply(up, state, msg, sizeof(msg)), 4);
    ck_assert_int_eq(state_apply_health(up, HEALTH_TEXT, msg, sizeof(msg)), 3);
    ck_assert_msg(strstr(msg, "1 ready, 1 down, 1 pending") != NULL, "%s", msg);
    ck_assert_int_eq(up->pools[0].b[0].health, HEALTH_READY);
    ck_assert_int_eq(up->pools[0].b[1].health, HEALTH_DOWN);
    ck_assert_int_eq(up->pools[0].b[2].health, HEALTH_PENDING);
    ck_assert_int_eq(up->pools[0].b[2].admin, ADMIN_MAINT); /* admin states untouched */
    ck_assert_int_eq(model_state(&up->pools[0], 0), BE_READY);
    ck_assert_int_eq(model_state(&up->pools[0], 1), BE_DOWN);
    ck_assert_int_eq(model_state(&up->pools[0], 2), BE_MAINT);
    ck_assert(model_eligible(&up->pools[0], 0));
    ck_assert(!model_eligible(&up->pools[0], 1));
    ck_assert_int_eq(up->pools[0].b[0].breaker, BREAKER_CLOSED);
    free(state);
    model_free(old);
    model_free(plain);
    done(up, c);
}
END_TEST

/*
 * Only a backend of the same pool, name and address takes the carried
 * readiness; a moved one, an unknown one and a pool without checks here
 * keep what the config gave them.
 */
START_TEST(test_carried_readiness_needs_same_pool_name_and_address)
{
    struct veer_conf *c = load(CONF_H);
    struct model *m = model_from_conf(c);
    char msg[256];

    ck_assert_int_eq(state_apply_health(m,
                                        "veer-health 1\n"
                                        "pool api\n"
                                        "backend green-1 127.0.0.1:3 ready\n" /* out of order */
                                        "backend blue-1 127.0.0.1:9 ready\n"  /* moved */
                                        "backend gone 127.0.0.1:2 ready\n"    /* unknown */
                                        "pool web\n"
                                        "backend w1 127.0.0.1:4 down\n" /* no checks here */
                                        "pool old\n"
                                        "backend x 127.0.0.1:5 ready\n"
                                        "end\n",
                                        msg, sizeof(msg)),
                     1);
    ck_assert_msg(strstr(msg, "1 at a new address start PENDING") != NULL, "%s", msg);
    ck_assert_int_eq(m->pools[0].b[0].health, HEALTH_PENDING);
    ck_assert_int_eq(m->pools[0].b[1].health, HEALTH_PENDING);
    ck_assert_int_eq(m->pools[0].b[2].health, HEALTH_READY);
    ck_assert_int_eq(m->pools[1].b[0].health, HEALTH_READY);
    done(m, c);
}
END_TEST

/* A readiness text that is not whole and well formed changes nothing. */
static const char *const bad_health[] = {
    "",
    "veer-health 2\npool api\nend\n",
    "veer-state 1\nend\n",
    "veer-health 1\npool api\nbackend blue-1 127.0.0.1:1 ready\n",         /* no end */
    "veer-health 1\npool api\nbackend blue-1 127.0.0.1:1 ready\nend",      /* cut */
    "veer-health 1\npool api\nbackend blue-1 127.0.0.1:1 ready",           /* cut mid-line */
    "veer-health 1\nbackend blue-1 127.0.0.1:1 ready\nend\n",              /* no pool */
    "veer-health 1\npool api\nbackend blue-1 127.0.0.1:1 up\nend\n",       /* bad word */
    "veer-health 1\npool api\nbackend blue-1 ready\nend\n",                /* no address */
    "veer-health 1\npool api\nbackend blue-1 127.0.0.1:1 ready\nend\nx\n", /* after end */
    "veer-health 1\npool api\nbackend blue-1 127.0.0.1:1 ready\x01\nend\n",
};

START_TEST(test_malformed_readiness_changes_nothing)
{
    struct veer_conf *c = load(CONF_H);
    struct model *m = model_from_conf(c);
    char msg[256], *before = dump(m), *after;

    msg[0] = '\0';
    ck_assert_int_eq(state_apply_health(m, bad_health[_i], msg, sizeof(msg)), -1);
    ck_assert_msg(strncmp(msg, "line ", 5) == 0, "%s", msg);
    after = dump(m);
    ck_assert_str_eq(after, before);
    free(before);
    free(after);
    done(m, c);
}
END_TEST

/* The new process reads the text from an inherited fd whose offset the writer left at the end. */
START_TEST(test_readiness_loads_from_an_fd)
{
    struct veer_conf *c = load(CONF_H);
    struct model *m = model_from_conf(c);
    char path[] = "/tmp/check_state_health_XXXXXX", msg[256];
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fd, HEALTH_TEXT, strlen(HEALTH_TEXT)), (ssize_t)strlen(HEALTH_TEXT));
    ck_assert_int_eq(state_load_health_fd(m, fd, msg, sizeof(msg)), 3);
    ck_assert_int_eq(m->pools[0].b[0].health, HEALTH_READY);
    ck_assert_int_eq(ftruncate(fd, 0), 0);
    ck_assert_int_eq(write(fd, "veer-health 1\0\n", 15), 15);
    ck_assert_int_eq(state_load_health_fd(m, fd, msg, sizeof(msg)), -1);
    close(fd);
    done(m, c);
}
END_TEST

/* --- scale: restoring a large pool in linear time ----------------------------------- */

static double cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * A pool of n backends and a state file naming them in reverse order (so
 * no backend is where the file's order hints); returns the CPU time of
 * state_apply alone, after checking every weight was restored.
 */
static double restore_reversed(int n)
{
    struct sbuf conf, st;
    struct veer_conf *c;
    struct model *m;
    char msg[256];
    double t;

    sb_init(&conf);
    sb_printf(&conf, LISTEN "pools = ( { name = \"api\"; backends = (");
    for (int i = 0; i < n; i++)
        sb_printf(&conf, "%s{ name = \"b%d\"; address = \"10.%d.%d.%d:80\"; }", i ? "," : "", i,
                  (i >> 16) & 255, (i >> 8) & 255, i & 255);
    sb_printf(&conf, "); } );");
    sb_init(&st);
    sb_printf(&st, "veer-state 1\ngeneration 7\npool api\nshare default 100\n");
    for (int i = n - 1; i >= 0; i--)
        sb_printf(&st, "backend b%d weight %d admin ready\n", i, 1 + i % 1000);
    sb_printf(&st, "end\n");
    c = load(conf.s);
    m = model_from_conf(c);
    t = cpu_seconds();
    ck_assert_int_eq(state_apply(m, st.s, msg, sizeof(msg)), n);
    t = cpu_seconds() - t;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(m->pools[0].b[i].weight, 1 + i % 1000);
    sb_free(&conf);
    sb_free(&st);
    done(m, c);
    return t;
}

/*
 * Eight times the backends may cost about eight times the CPU, not 64:
 * parsing the file and finding each backend by name must not be quadratic
 * (a table grown one entry at a time copies it all each time under ASan).
 * Sizes large enough to measure (the small one takes milliseconds), the
 * best of three of each, and a bound (40x) between linear with cache
 * effects (measured 23-26x in a plain build, where 5,000 fit the caches and
 * 40,000 do not; 10x under ASan) and quadratic (64x).
 */
START_TEST(test_restore_is_linear_in_backends)
{
    double small = restore_reversed(5000), big = restore_reversed(40000);

    for (int k = 0; k < 2; k++) {
        small = fmin(small, restore_reversed(5000));
        big = fmin(big, restore_reversed(40000));
    }
    ck_assert_msg(big < small * 40, "5,000 backends: %.4f s CPU; 40,000: %.4f s (%.1fx)", small,
                  big, big / small);
}
END_TEST

static Suite *state_suite(void)
{
    Suite *s = suite_create("state");
    TCase *tf = tcase_create("format");
    TCase *tp = tcase_create("persist");
    TCase *tl = tcase_create("scale");

    tcase_set_timeout(tf, 60);
    tcase_set_timeout(tl, 30);
    tcase_set_timeout(tp, 60);
    tcase_add_test(tf, test_render_is_the_documented_format);
    tcase_add_test(tf, test_round_trip_restores_every_value);
    tcase_add_test(tf, test_generation_keeps_the_higher);
    tcase_add_test(tf, test_unknown_names_are_skipped_and_counted);
    tcase_add_test(tf, test_route_state_round_trip);
    tcase_add_test(tf, test_route_state_yields_to_an_edited_config);
    tcase_add_loop_test(tf, test_corrupt_text_is_refused_and_changes_nothing, 0,
                        (int)(sizeof(corrupt_texts) / sizeof(corrupt_texts[0])));
    tcase_add_test(tf, test_the_valid_base_of_the_corrupt_texts_is_accepted);
    tcase_add_test(tf, test_shares_not_totalling_100_are_skipped_but_weights_apply);
    tcase_add_test(tf, test_audit_chain_ends_round_trip);
    tcase_add_test(tf, test_load_of_a_missing_file_is_not_an_error);
    tcase_add_test(tf, test_load_applies_a_good_file_and_refuses_a_corrupt_one);
    tcase_add_test(tf, test_health_render_is_the_documented_format);
    tcase_add_test(tf, test_readiness_is_carried_only_by_an_upgrade);
    tcase_add_test(tf, test_carried_readiness_needs_same_pool_name_and_address);
    tcase_add_loop_test(tf, test_malformed_readiness_changes_nothing, 0,
                        (int)(sizeof(bad_health) / sizeof(bad_health[0])));
    tcase_add_test(tf, test_readiness_loads_from_an_fd);
    tcase_add_test(tl, test_restore_is_linear_in_backends);
    tcase_add_test(tp, test_persist_writes_the_file_atomically_and_promptly);
    tcase_add_test(tp, test_rapid_updates_leave_the_last_text);
    tcase_add_test(tp, test_stop_flushes_what_is_pending);
    tcase_add_test(tp, test_audit_fsync_on_request);
    tcase_add_test(tp, test_calls_without_a_thread_are_harmless);
    tcase_add_test(tp, test_failed_write_is_retried_not_fatal);
    suite_add_tcase(s, tf);
    suite_add_tcase(s, tl);
    suite_add_tcase(s, tp);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(state_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
