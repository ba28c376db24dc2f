/*
 * check_discjson.c - a discover entry as JSON (discjson.c), parsed with
 * jansson: every key of the shape discjson.h documents, with its type and
 * value, as the entry goes through its life on the control thread with no
 * worker (ctlfix.h): before any answer (adopted backends, a resolver where
 * nothing listens: refused), then against a real dnsmasq (dnsfix.h):
 * the addresses with their backends' states (READY, PENDING, DRAINED,
 * "absent" when a backend of another origin holds the name), the draining
 * backends whose address left DNS, the TTL, the next resolution (null while
 * one is under way), an unconfirmed empty answer. Each test runs in its own
 * process.
 */
#include "control-i.h"
#include "ctlfix.h"
#include "discjson.h"
#include "discovery.h"
#include "dnsfix.h"
#include "sbuf.h"

#include <sys/time.h>

#define RESOLVERS "interval_ms = 200; min_interval_ms = 50; timeout_ms = 200;"

/* The keys of an entry, in order, and of an address. */
static const char *const ENTRY_KEYS[] = {
    "pool",
    "name",
    "kind",
    "query",
    "group",
    "addresses",
    "draining",
    "ttl_s",
    "next_resolution_ms",
    "last_success",
    "failing",
    "last_error",
    "last_error_at",
    "errors",
    "resolutions",
    "unconfirmed_empty",
};
static const char *const ADDR_KEYS[] = {"backend", "address", "weight", "state"};

#define NKEYS(a) (sizeof(a) / sizeof(*(a)))

/* Exactly these keys, in this order. */
static void assert_keys(json_t *o, const char *const *keys, size_t n)
{
    const char *key;
    json_t *v;
    size_t i = 0;

    ck_assert(json_is_object(o));
    json_object_foreach (o, key, v) {
        (void)v;
        ck_assert_msg(i < n, "extra key %s", key);
        ck_assert_str_eq(key, keys[i]);
        i++;
    }
    ck_assert_uint_eq(i, n);
}

/* Entry i as JSON, parsed (keys in order); also element i of the whole list (discjson_list). */
static json_t *entry(unsigned i)
{
    struct sbuf o, l;
    json_error_t e;
    json_t *j, *list;

    sb_init(&o);
    sb_init(&l);
    discjson_entry(&o, CF.m, i);
    j = json_loads(o.s, JSON_PRESERVE_ORDER, &e);
    ck_assert_msg(j != NULL, "%s: %s", e.text, o.s);
    assert_keys(j, ENTRY_KEYS, NKEYS(ENTRY_KEYS));
    discjson_list(&l, CF.m);
    list = json_loads(l.s, 0, &e);
    ck_assert_msg(list != NULL, "%s: %s", e.text, l.s);
    ck_assert(json_is_array(list));
    ck_assert_uint_eq(json_array_size(list), discovery_count());
    {
        /* The same, but for the time to the next resolution, taken a moment later. */
        json_t *a = json_deep_copy(json_array_get(list, i)), *b = json_deep_copy(j);

        ck_assert_ptr_nonnull(a);
        ck_assert_int_eq(json_typeof(json_object_get(a, "next_resolution_ms")),
                         json_typeof(json_object_get(b, "next_resolution_ms")));
        json_object_del(a, "next_resolution_ms");
        json_object_del(b, "next_resolution_ms");
        ck_assert(json_equal(a, b));
        json_decref(a);
        json_decref(b);
    }
    json_decref(list);
    sb_free(&o);
    sb_free(&l);
    return j;
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

static long long num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

static bool is_null(json_t *o, const char *key)
{
    return json_is_null(json_object_get(o, key));
}

static double now_s(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* A time in unix seconds, within the last minute. */
static void assert_recent(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    ck_assert_msg(json_is_real(v) || json_is_integer(v), "%s is not a number", key);
    ck_assert_msg(json_number_value(v) > now_s() - 60 && json_number_value(v) <= now_s() + 1,
                  "%s = %f", key, json_number_value(v));
}

/* Address k of entry j: backend, address, weight, state. */
static void assert_addr(json_t *j, size_t k, const char *backend, const char *address, int weight,
                        const char *state)
{
    json_t *a = json_array_get(json_object_get(j, "addresses"), k);

    ck_assert_ptr_nonnull(a);
    assert_keys(a, ADDR_KEYS, NKEYS(ADDR_KEYS));
    ck_assert_str_eq(str(a, "backend"), backend);
    ck_assert_str_eq(str(a, "address"), address);
    ck_assert_int_eq(num(a, "weight"), weight);
    ck_assert_str_eq(str(a, "state"), state);
}

static size_t naddrs(json_t *j)
{
    ck_assert(json_is_array(json_object_get(j, "addresses")));
    return json_array_size(json_object_get(j, "addresses"));
}

/* The draining list of entry j, as one text "a,b". */
static void assert_draining(json_t *j, const char *want)
{
    json_t *d = json_object_get(j, "draining"), *v;
    char got[512] = "";
    size_t i;

    ck_assert(json_is_array(d));
    json_array_foreach (d, i, v) {
        ck_assert(json_is_string(v));
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? "," : "",
                 json_string_value(v));
    }
    ck_assert_str_eq(got, want);
}

static struct discovery_info info(unsigned i)
{
    struct discovery_info d;

    discovery_get(i, &d);
    return d;
}

static struct rt_backend *be(const char *pool, const char *name)
{
    int pi = model_find_pool(CF.m, pool), bi;

    ck_assert_int_ge(pi, 0);
    bi = model_find_backend(&CF.m->pools[pi], name);
    ck_assert_msg(bi >= 0, "no backend %s/%s", pool, name);
    return &CF.m->pools[pi].b[bi];
}

/* --- before any answer ---------------------------------------------------------------------- */

static void adopt(void)
{
    int pi = model_find_pool(CF.m, "api");

    ck_assert_int_ge(discovery_adopt(CF.m, CF.c, pi, "api-127.0.0.3:8080", "127.0.0.3:8080"), 0);
    ck_assert_int_ge(discovery_adopt(CF.m, CF.c, pi, "api-127.0.0.2:8080", "127.0.0.2:8080"), 0);
}

/*
 * Adopted backends (an upgrade's) are the entry's addresses before any
 * answer; ttl_s, last_success, last_error and last_error_at are null, the
 * counters 0, the first resolution due now. The resolver refuses (nothing
 * listens on its port): failing, last_error and last_error_at set, errors
 * counted, the addresses kept, still no success.
 */
START_TEST(test_entry_before_the_first_answer)
{
    const struct ctlfix_opts o = {.slots = 1, .before_control = adopt};
    char fmt[4096];
    json_t *j;

    /* A port nothing listens on: the resolver's queries are refused. */
    DNS.port = dns_free_port();
    snprintf(fmt, sizeof(fmt),
             "audit_log = \"%%s/audit.log\";\n"
             "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
             "resolvers = { servers = ( \"127.0.0.1:%d\" ); %s };\n"
             "pools = ( { name = \"api\"; discover = ( { name = \"api\"; dns = "
             "\"api.internal:8080\"; group = \"blue\"; weight = 70; } ); } );\n",
             DNS.port, RESOLVERS);
    ctl_up_with(fmt, &o);

    ck_assert_uint_eq(discovery_count(), 1);
    j = entry(0);
    ck_assert_str_eq(str(j, "pool"), "api");
    ck_assert_str_eq(str(j, "name"), "api");
    ck_assert_str_eq(str(j, "kind"), "dns");
    ck_assert_str_eq(str(j, "query"), "api.internal:8080");
    ck_assert_str_eq(str(j, "group"), "blue");
    ck_assert_uint_eq(naddrs(j), 2);
    assert_addr(j, 0, "api-127.0.0.2:8080", "127.0.0.2:8080", 70, "READY"); /* sorted */
    assert_addr(j, 1, "api-127.0.0.3:8080", "127.0.0.3:8080", 70, "READY");
    assert_draining(j, "");
    ck_assert(is_null(j, "ttl_s"));
    ck_assert_int_eq(num(j, "next_resolution_ms"), 0); /* due now: started at once */
    ck_assert(is_null(j, "last_success"));
    ck_assert(json_is_false(json_object_get(j, "failing")));
    ck_assert(is_null(j, "last_error"));
    ck_assert(is_null(j, "last_error_at"));
    ck_assert_int_eq(num(j, "errors"), 0);
    ck_assert_int_eq(num(j, "resolutions"), 0);
    ck_assert_int_eq(num(j, "unconfirmed_empty"), 0);
    json_decref(j);

    CTL_LOOP_UNTIL(info(0).errors >= 1);
    j = entry(0);
    ck_assert(json_is_true(json_object_get(j, "failing")));
    ck_assert_msg(strlen(str(j, "last_error")) > 0, "empty last_error");
    assert_recent(j, "last_error_at");
    ck_assert_int_ge(num(j, "errors"), 1);
    ck_assert_int_eq(num(j, "resolutions"), 0);
    ck_assert(is_null(j, "last_success"));
    ck_assert(is_null(j, "ttl_s"));
    ck_assert_uint_eq(naddrs(j), 2); /* a failure keeps the set */
    assert_addr(j, 0, "api-127.0.0.2:8080", "127.0.0.2:8080", 70, "READY");
    ck_assert_int_ge(num(j, "next_resolution_ms"), 0);
    ck_assert_int_le(num(j, "next_resolution_ms"), 50); /* retried at min_interval_ms */
    json_decref(j);
    ctl_down();
}
END_TEST

/* --- against dnsmasq ------------------------------------------------------------------------ */

#define A2 "api-127.0.0.2:8080"
#define A3 "api-127.0.0.3:8080"
#define A4 "api-127.0.0.4:8080"

/*
 * Pool api (no checks): entry api (weight 70, confirm 3), and a backend
 * the operator adds before the first answer, named as the entry would name
 * 127.0.0.4 (weight 5). Pool hc (checks, nothing
 * answers them): entry hc.
 */
#define CONF_DNS                                                                                   \
    "audit_log = \"%%s/audit.log\";\n"                                                             \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "resolvers = { servers = ( \"127.0.0.1:%d\" ); " RESOLVERS " };\n"                             \
    "pools = ( { name = \"api\"; discover = ( { name = \"api\"; dns = \"api.internal:8080\"; "     \
    "group = \"blue\"; weight = 70; confirm = 3; } ); },\n"                                        \
    "  { name = \"hc\"; health = { path = \"/health\"; interval_ms = 50; timeout_ms = 200; };\n"   \
    "    discover = ( { name = \"hc\"; dns = \"hc.internal:1\"; group = \"green\"; } ); } );\n"

#define HOSTS                                                                                      \
    "127.0.0.2 api.internal\n127.0.0.3 api.internal\n127.0.0.4 api.internal\n"                     \
    "127.0.0.5 hc.internal\n"

static void up_dns(void)
{
    const struct ctlfix_opts o = {.slots = 1};
    char fmt[4096];

    dns_up(HOSTS, NULL);
    snprintf(fmt, sizeof(fmt), CONF_DNS, DNS.port);
    ctl_up_with(fmt, &o);
    /* Before the first answer: a backend of the operator's holds a name of the entry's. */
    ctl_run("add backend api " A4 " 127.0.0.9:1 weight 5");
    ck_assert_msg(CF.reply.ok, "%s", CF.reply.text);
    ck_assert_uint_eq(info(0).resolutions, 0);
}

/*
 * After an answer: the addresses in address order with their backends'
 * states and weights; the one whose name a static backend holds is
 * "absent" with the answer's weight; ttl_s 1; the next resolution within
 * interval_ms; last_success now. With checks, a new address is PENDING.
 */
START_TEST(test_entry_after_an_answer)
{
    json_t *j;

    up_dns();
    CTL_LOOP_UNTIL(info(0).resolutions >= 1 && info(1).resolutions >= 1);
    j = entry(0);
    ck_assert_str_eq(str(j, "pool"), "api");
    ck_assert_uint_eq(naddrs(j), 3);
    assert_addr(j, 0, A2, "127.0.0.2:8080", 70, "READY");
    assert_addr(j, 1, A3, "127.0.0.3:8080", 70, "READY");
    assert_addr(j, 2, A4, "127.0.0.4:8080", 70, "absent");
    ck_assert_int_eq(be("api", A4)->weight, 5); /* the operator's, untouched */
    ck_assert_uint_eq(be("api", A4)->disc_id, 0);
    assert_draining(j, "");
    ck_assert_int_eq(num(j, "ttl_s"), 1);
    ck_assert_int_ge(num(j, "next_resolution_ms"), 0);
    ck_assert_int_le(num(j, "next_resolution_ms"), 200);
    assert_recent(j, "last_success");
    ck_assert(json_is_false(json_object_get(j, "failing")));
    ck_assert(is_null(j, "last_error"));
    ck_assert(is_null(j, "last_error_at"));
    ck_assert_int_eq(num(j, "errors"), 0);
    ck_assert_int_ge(num(j, "resolutions"), 1);
    ck_assert_int_eq(num(j, "unconfirmed_empty"), 0);
    json_decref(j);

    j = entry(1);
    ck_assert_str_eq(str(j, "pool"), "hc");
    ck_assert_str_eq(str(j, "group"), "green");
    ck_assert_uint_eq(naddrs(j), 1);
    assert_addr(j, 0, "hc-127.0.0.5:1", "127.0.0.5:1", 100, "PENDING");
    json_decref(j);
    ctl_down();
    dns_down();
}
END_TEST

/*
 * An operator's drain shows in the address's state (DRAINED: nothing in
 * flight); an address that left DNS leaves the addresses and is listed
 * under draining while a request runs on it; while a resolution is under
 * way next_resolution_ms is null; an empty answer not yet confirmed is
 * counted (the addresses stay).
 */
START_TEST(test_entry_draining_and_empty)
{
    json_t *j;

    up_dns();
    CTL_LOOP_UNTIL(info(0).naddrs == 3);
    ctl_run("drain api/" A2);
    ck_assert_msg(CF.reply.ok, "%s", CF.reply.text);
    j = entry(0);
    assert_addr(j, 0, A2, "127.0.0.2:8080", 70, "DRAINED");
    assert_draining(j, ""); /* the operator's drain is not discovery's */
    json_decref(j);

    atomic_store(&be("api", A3)->be->ws[0].active, 1);
    dns_set_hosts("127.0.0.2 api.internal\n127.0.0.4 api.internal\n127.0.0.5 hc.internal\n");
    CTL_LOOP_UNTIL(info(0).naddrs == 2);
    j = entry(0);
    assert_addr(j, 0, A2, "127.0.0.2:8080", 70, "DRAINED");
    assert_addr(j, 1, A4, "127.0.0.4:8080", 70, "absent");
    assert_draining(j, A3);
    json_decref(j);

    /* A resolution under way: no next one yet. */
    dns_pause();
    CTL_LOOP_UNTIL(info(0).next_ms < 0);
    j = entry(0);
    ck_assert(is_null(j, "next_resolution_ms"));
    json_decref(j);
    dns_set_hosts("127.0.0.5 hc.internal\n"); /* read once it runs again */
    dns_resume();

    /* The request ends: A3 goes, and with it from draining. */
    atomic_store(&be("api", A3)->be->ws[0].active, 0);
    ctl_backend_idle(be("api", A3)->be);
    CTL_LOOP_UNTIL(model_find_backend(&CF.m->pools[0], A3) < 0);

    CTL_LOOP_UNTIL(info(0).unconfirmed_empty >= 1);
    j = entry(0);
    ck_assert_int_eq(num(j, "unconfirmed_empty"), 1);
    ck_assert_uint_eq(naddrs(j), 2); /* one empty answer is not yet "no instances" */
    assert_draining(j, "");
    ck_assert(json_is_false(json_object_get(j, "failing")));
    json_decref(j);
    ctl_down();
    dns_down();
}
END_TEST

static Suite *discjson_suite(void)
{
    Suite *s = suite_create("discjson");
    TCase *tc = tcase_create("entry");

    tcase_add_test(tc, test_entry_before_the_first_answer);
    tcase_add_test(tc, test_entry_after_an_answer);
    tcase_add_test(tc, test_entry_draining_and_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(discjson_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
