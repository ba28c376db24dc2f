/*
 * check_discovery.c - DNS discovery (discovery.c) on the control thread
 * with no worker (ctlfix.h), against a real dnsmasq (dnsfix.h) that the
 * test rewrites, stops (SIGSTOP: timeouts) and kills (refused).
 *
 * The first answer makes the entry's set: a backend "<entry>-<address>"
 * per address, READY at once without readiness checks, PENDING with them,
 * in the entry's group and weight, one publish and one audit record (actor
 * discovery). An address that leaves DNS drains (gone) and leaves the
 * model once drained; one that comes back first is readmitted as it was.
 * SRV: the lowest priority, weights scaled so the largest is 1000. An empty
 * answer empties the set only after `confirm` in a row; a failure keeps the
 * set. max_backends keeps the addresses the entry has first. A reload
 * drains a removed entry's backends, resolves an added one, moves a kept
 * one's backends to its new group. discovery_adopt recreates an upgrade's
 * discovered backends.
 *
 * Resolutions every 50..200 ms (TTL 1 s, interval_ms 200), 200 ms timeouts:
 * each test takes well under a second or two. One backend slot per worker
 * (veer_nworkers = 1), no worker: a test puts a request in flight on a
 * backend through that slot. Each test runs in its own process.
 */
#include "control-i.h"
#include "ctlfix.h"
#include "discovery.h"
#include "dnsfix.h"

#include <event2/event.h>

#define RESOLVERS "interval_ms = 200; min_interval_ms = 50; timeout_ms = 200;"

/* The resolvers settings of the file (RESOLVERS unless a test sets others before up). */
static const char *resolvers = RESOLVERS;

/* The port of the file's resolver: dnsmasq's (DNS.port) unless a test sets another. */
static int server_port;

/* For a test of what happens "at once": answers that last 30 s, resolved every 5 s. */
static void slow_resolutions(void)
{
    dns_ttl = 30;
    resolvers = "interval_ms = 5000; min_interval_ms = 50; timeout_ms = 200;";
}

/* An entry of pool api: name, dns, group, more settings. */
#define ENTRY(name, dns, group, more)                                                              \
    "{ name = \"" name "\"; dns = \"" dns "\"; group = \"" group "\"; " more " }"

/* The pool api with these discover entries and more settings (health). */
static void pools_text(char *out, size_t len, const char *entries, const char *more)
{
    ck_assert_uint_lt((size_t)snprintf(out, len,
                                       "pools = ( { name = \"api\"; %s discover = ( %s ); } );\n",
                                       more ? more : "", entries),
                      len);
}

/* The whole file, its audit_log at dir (or a %s for ctlfix when dir is NULL). */
static void conf_text(char *out, size_t len, const char *dir, const char *res, const char *pools)
{
    ck_assert_uint_lt(
        (size_t)snprintf(out, len,
                         "audit_log = \"%s/audit.log\";\n"
                         "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
                         "resolvers = { servers = ( \"127.0.0.1:%d\" ); %s };\n%s",
                         dir ? dir : "%s", server_port ? server_port : DNS.port,
                         res ? res : resolvers, pools),
        len);
}

/* dnsmasq with hosts (and srv lines), then the fixture with pool api of these entries. */
static void up_with(const char *hosts, const char *srv, const char *entries, const char *more,
                    void (*before_control)(void))
{
    const struct ctlfix_opts o = {.slots = 1, .keep_file = true, .before_control = before_control};
    char pools[4096], fmt[8192];

    dns_up(hosts, srv);
    pools_text(pools, sizeof(pools), entries, more);
    conf_text(fmt, sizeof(fmt), NULL, NULL, pools);
    ctl_up_with(fmt, &o);
}

static void up(const char *hosts, const char *entries)
{
    up_with(hosts, NULL, entries, NULL, NULL);
}

static void down(void)
{
    ctl_down();
    dns_down();
}

/* Rewrite the config file with these resolvers settings and pools (the text of pools = ...). */
static void write_conf_pools(const char *res, const char *pools)
{
    char text[8192];
    FILE *f;

    conf_text(text, sizeof(text), CF.dir, res, pools);
    f = fopen(CF.path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* Rewrite the config file with these resolvers settings and pool api of these entries. */
static void write_conf_with(const char *res, const char *entries)
{
    char pools[4096];

    pools_text(pools, sizeof(pools), entries, NULL);
    write_conf_pools(res, pools);
}

/* The same with the resolvers settings of the start (for a reload). */
static void write_conf(const char *entries)
{
    write_conf_with(NULL, entries);
}

/* --- what the model and discovery say ------------------------------------------------------ */

static struct rt_pool *api(void)
{
    int i = model_find_pool(CF.m, "api");

    ck_assert_int_ge(i, 0);
    return &CF.m->pools[i];
}

/* Backend name of pool api, or NULL. */
static struct rt_backend *find(const char *name)
{
    int i = model_find_backend(api(), name);

    return i >= 0 ? &api()->b[i] : NULL;
}

static struct rt_backend *be(const char *name)
{
    struct rt_backend *b = find(name);

    ck_assert_msg(b != NULL, "no backend api/%s", name);
    return b;
}

static enum backend_state state(const char *name)
{
    return model_state(api(), be(name)->be->index);
}

static const char *group_of(const char *name)
{
    return api()->g[be(name)->group].name;
}

/* Whether the published snapshot routes to backend name of pool api. */
static bool routed(const char *name)
{
    const struct snap_pool *sp = &routing_current()->pools[model_find_pool(CF.m, "api")];

    for (uint32_t i = 0; i < sp->n; i++)
        if (strcmp(sp->b[i].be->name, name) == 0)
            return true;
    return false;
}

/* The discover entry named name. */
static struct discovery_info info(const char *name)
{
    struct discovery_info d;

    for (unsigned i = 0; i < discovery_count(); i++) {
        discovery_get(i, &d);
        if (strcmp(d.name, name) == 0)
            return d;
    }
    ck_abort_msg("no discover entry %s", name);
    return d;
}

static uint64_t resolutions(const char *name)
{
    return info(name).resolutions;
}

/* Whether entry name's set is exactly these address texts (the set is sorted). */
static bool set_is(const char *name, const char *const *addrs, unsigned n)
{
    struct discovery_info d = info(name);

    if (d.naddrs != n)
        return false;
    for (unsigned k = 0; k < n; k++)
        if (strcmp(d.addrs[k].addr.text, addrs[k]) != 0)
            return false;
    return true;
}

/* The audit records of actor discovery. */
static json_t *disc_records(void)
{
    json_t *all = ctl_audit_records(), *out = json_array(), *rec;
    size_t i;

    json_array_foreach (all, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "actor")), "discovery") == 0)
            json_array_append(out, rec);
    }
    json_decref(all);
    return out;
}

static size_t disc_record_count(void)
{
    json_t *a = disc_records();
    size_t n = json_array_size(a);

    json_decref(a);
    return n;
}

/*
 * The last record of actor discovery with this command: its generation, its
 * "after" as text.
 */
static void assert_last_disc_record(const char *command, uint64_t gen, const char *after)
{
    json_t *a = disc_records(), *rec = NULL;
    char *text;

    for (size_t i = json_array_size(a); i-- > 0 && rec == NULL;)
        if (strcmp(json_string_value(json_object_get(json_array_get(a, i), "command")), command) ==
            0)
            rec = json_array_get(a, i);
    ck_assert_msg(rec != NULL, "no record %s", command);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "result")), "OK");
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "generation")), gen);
    text = json_dumps(json_object_get(rec, "after"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, after);
    free(text);
    json_decref(a);
}

/* A request in flight on backend name (through the one worker slot), or none. */
static void inflight(const char *name, unsigned n)
{
    atomic_store(&be(name)->be->ws[0].active, n);
    if (n == 0)
        ctl_backend_idle(be(name)->be);
}

/* --- tests ------------------------------------------------------------------------------ */

#define A2 "api-127.0.0.2:8080"
#define A3 "api-127.0.0.3:8080"
#define A6 "api-[::1]:8080"

/*
 * The first answer: one backend per address (A and AAAA), named
 * "<entry>-<address>", discovered by the entry (disc_id), READY at once (no
 * checks), in the entry's group and weight, routed; one publish and one
 * audit record. Later answers that change nothing publish nothing.
 */
START_TEST(test_first_answer_makes_the_set)
{
    static const char *const want[] = {"127.0.0.2:8080", "127.0.0.3:8080", "[::1]:8080"};
    struct discovery_info d;
    uint64_t gen;

    up("127.0.0.2 api.internal\n127.0.0.3 api.internal\n::1 api.internal\n",
       ENTRY("api", "api.internal:8080", "blue", "weight = 70;"));
    gen = CF.m->generation;
    d = info("api");
    ck_assert_uint_eq(d.naddrs, 0);
    ck_assert_uint_eq(d.resolutions, 0);
    ck_assert_str_eq(d.kind, "dns");
    ck_assert_str_eq(d.query, "api.internal:8080");
    ck_assert_str_eq(d.group, "blue");
    ck_assert_str_eq(d.pool, "api");
    ck_assert(d.last_success == 0);

    CTL_LOOP_UNTIL(resolutions("api") >= 1);
    d = info("api");
    ck_assert(set_is("api", want, 3));
    ck_assert_str_eq(d.addrs[0].backend, A2);
    ck_assert_str_eq(d.addrs[2].backend, A6);
    ck_assert_int_eq(d.addrs[0].weight, 70);
    ck_assert(d.has_ttl);
    ck_assert_uint_eq(d.ttl_s, 1);
    ck_assert(d.last_success > 1e9);
    ck_assert(!d.failing);
    ck_assert_ptr_null(d.last_error);
    ck_assert_uint_eq(d.errors, 0);
    ck_assert_uint_eq(d.unconfirmed_empty, 0);
    ck_assert_int_ge(d.next_ms, 0);
    ck_assert_int_le(d.next_ms, 200); /* TTL 1 s, bounded by interval_ms */
    ck_assert_uint_eq(api()->nb, 3);
    for (unsigned k = 0; k < 3; k++) {
        const char *name = d.addrs[k].backend;

        ck_assert_uint_eq(be(name)->disc_id, d.id);
        ck_assert_uint_ne(d.id, 0);
        ck_assert(!be(name)->gone);
        ck_assert_int_eq(state(name), BE_READY);
        ck_assert_str_eq(group_of(name), "blue");
        ck_assert_int_eq(be(name)->weight, 70);
        ck_assert_str_eq(be(name)->be->addr.text, want[k]);
        ck_assert(routed(name));
    }
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    ck_assert_uint_eq(disc_record_count(), 1);
    assert_last_disc_record("discover api/api", gen + 1,
                            "{\"pool\":\"api\",\"discover\":\"api\",\"added\":[\"" A2 "\",\"" A3
                            "\",\"" A6 "\"],\"removed\":[],\"readmitted\":[],"
                            "\"weights_changed\":0}");

    /* The same answer again: nothing changes, nothing is published or audited. */
    CTL_LOOP_UNTIL(resolutions("api") >= 3);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(disc_record_count(), 1);
    ck_assert_uint_eq(api()->nb, 3);
    down();
}
END_TEST

/*
 * An address that leaves DNS: its backend is gone (DRAINING, out of the
 * snapshot) while a request is in flight on it, and leaves the model
 * when that request ends (drain.c's reap: one publish, one record).
 */
START_TEST(test_scale_in_drains_then_removes)
{
    static const char *const one[] = {"127.0.0.2:8080"};
    struct backend *b3;
    uint64_t gen;

    up("127.0.0.2 api.internal\n127.0.0.3 api.internal\n",
       ENTRY("api", "api.internal:8080", "blue", ""));
    CTL_LOOP_UNTIL(info("api").naddrs == 2);
    inflight(A3, 1);
    b3 = be(A3)->be;
    gen = CF.m->generation;

    dns_set_hosts("127.0.0.2 api.internal\n");
    CTL_LOOP_UNTIL(info("api").naddrs == 1);
    ck_assert(set_is("api", one, 1));
    ck_assert(be(A3)->gone);
    ck_assert(be(A3)->remove_when_drained);
    ck_assert_int_eq(be(A3)->admin, ADMIN_READY); /* the operator's state is not discovery's */
    ck_assert_int_eq(state(A3), BE_DRAINING);
    ck_assert(!routed(A3));
    ck_assert(routed(A2));
    ck_assert(!be(A2)->gone);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    assert_last_disc_record("discover api/api", gen + 1,
                            "{\"pool\":\"api\",\"discover\":\"api\",\"added\":[],\"removed\":[\"" A3
                            "\"],\"readmitted\":[],\"weights_changed\":0}");

    /* Later answers leave it draining while its request runs. */
    {
        uint64_t r = resolutions("api");

        CTL_LOOP_UNTIL(resolutions("api") >= r + 2);
    }
    ck_assert_ptr_eq(be(A3)->be, b3);
    ck_assert_int_eq(state(A3), BE_DRAINING);

    /* The request ends: drained, then removed. */
    inflight(A3, 0);
    CTL_LOOP_UNTIL(find(A3) == NULL);
    ck_assert_uint_eq(api()->nb, 1);
    ck_assert_uint_eq(CF.m->generation, gen + 2);
    assert_last_disc_record("discover api", gen + 2, "{\"pool\":\"api\",\"removed\":[\"" A3 "\"]}");
    ck_assert(set_is("api", one, 1));
    down();
}
END_TEST

/* --- a backend that answers readiness checks ------------------------------------------------ */

/* The events of the HTTP server: its listeners and connections (freed at the end). */
static struct event *http_ev[256];

static void http_forget(struct event *ev)
{
    for (unsigned i = 0; i < sizeof(http_ev) / sizeof(*http_ev); i++)
        if (http_ev[i] == ev) {
            http_ev[i] = NULL;
            break;
        }
}

static void http_keep(struct event *ev)
{
    for (unsigned i = 0; i < sizeof(http_ev) / sizeof(*http_ev); i++)
        if (http_ev[i] == NULL) {
            http_ev[i] = ev;
            event_add(ev, NULL);
            return;
        }
    ck_abort_msg("too many connections");
}

/* Stop the HTTP server: every event freed, every socket closed. */
static void http_stop(void)
{
    for (unsigned i = 0; i < sizeof(http_ev) / sizeof(*http_ev); i++)
        if (http_ev[i]) {
            close(event_get_fd(http_ev[i]));
            event_free(http_ev[i]);
            http_ev[i] = NULL;
        }
}

static void http_conn_cb(evutil_socket_t fd, short what, void *arg)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    char buf[2048];

    (void)what;
    if (recv(fd, buf, sizeof(buf), 0) > 0)
        (void)!send(fd, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
    http_forget(arg);
    event_free(arg);
    close(fd);
}

static void http_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    int c = accept(fd, NULL, NULL);

    (void)what;
    (void)arg;
    if (c >= 0)
        http_keep(event_new(CF.base, c, EV_READ, http_conn_cb, event_self_cbarg()));
}

/* An HTTP server on CF.base at ip:port answering 200 to every request; its port, or -1. */
static int http_listen(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof(a);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;

    ck_assert_int_ge(s, 0);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 16) < 0) {
        close(s);
        return -1;
    }
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    http_keep(event_new(CF.base, s, EV_READ | EV_PERSIST, http_accept_cb, NULL));
    return ntohs(a.sin_port);
}

/* A port free for TCP on both 127.0.0.1 and 127.0.0.2 right now. */
static int free_port_on_two(void)
{
    for (int i = 0; i < 20; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof(a);
        int s1 = socket(AF_INET, SOCK_STREAM, 0), s2 = socket(AF_INET, SOCK_STREAM, 0), port = -1;

        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        ck_assert_int_eq(bind(s1, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(getsockname(s1, (struct sockaddr *)&a, &len), 0);
        inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
        if (bind(s2, (struct sockaddr *)&a, sizeof(a)) == 0)
            port = ntohs(a.sin_port);
        close(s1);
        close(s2);
        if (port > 0)
            return port;
    }
    ck_abort_msg("no port free on 127.0.0.1 and 127.0.0.2");
    return -1;
}

/*
 * With readiness checks a new address is PENDING until its checks pass.
 * An address that leaves DNS and comes back before its backend is removed
 * is readmitted: the same backend, gone cleared, READY at once (its checks
 * passed: no new rise), routed again; one record "readmitted".
 */
START_TEST(test_readmitted_before_removal_keeps_its_health)
{
    char hosts[256], entry[256], n1[64], n2[64], fmt[8192], pools[4096];
    const struct ctlfix_opts o = {.slots = 1};
    struct backend *b2;
    int port;
    uint64_t gen;

    dns_up("", NULL);
    port = free_port_on_two();
    snprintf(entry, sizeof(entry), ENTRY("api", "api.internal:%d", "blue", ""), port);
    pools_text(pools, sizeof(pools), entry,
               "health = { path = \"/health\"; interval_ms = 50; timeout_ms = 500; rise = 2; "
               "fall = 100; };");
    conf_text(fmt, sizeof(fmt), NULL, NULL, pools);
    ctl_up_with(fmt, &o);
    ck_assert_int_eq(http_listen("127.0.0.1", port), port);
    ck_assert_int_eq(http_listen("127.0.0.2", port), port);
    snprintf(n1, sizeof(n1), "api-127.0.0.1:%d", port);
    snprintf(n2, sizeof(n2), "api-127.0.0.2:%d", port);

    snprintf(hosts, sizeof(hosts), "127.0.0.1 api.internal\n127.0.0.2 api.internal\n");
    dns_set_hosts(hosts);
    CTL_LOOP_UNTIL(info("api").naddrs == 2);
    /* The round that found them: not checked yet. */
    ck_assert_int_eq(state(n1), BE_PENDING);
    ck_assert_int_eq(state(n2), BE_PENDING);
    ck_assert(!routed(n1));
    CTL_LOOP_UNTIL(state(n1) == BE_READY && state(n2) == BE_READY);
    ck_assert(routed(n2));

    /* n2 leaves DNS with a request in flight: draining, checks' verdict kept. */
    inflight(n2, 1);
    b2 = be(n2)->be;
    dns_set_hosts("127.0.0.1 api.internal\n");
    CTL_LOOP_UNTIL(find(n2)->gone);
    ck_assert_int_eq(state(n2), BE_DRAINING);
    ck_assert_int_eq(be(n2)->health, HEALTH_READY);
    ck_assert(!routed(n2));

    /* Back in DNS: the same backend, READY at once, routed; one record. */
    gen = CF.m->generation;
    dns_set_hosts(hosts);
    CTL_LOOP_UNTIL(!find(n2)->gone);
    ck_assert_ptr_eq(be(n2)->be, b2);
    ck_assert(!be(n2)->remove_when_drained);
    ck_assert_int_eq(be(n2)->health, HEALTH_READY);
    ck_assert_int_eq(state(n2), BE_READY);
    ck_assert(routed(n2));
    ck_assert_uint_eq(info("api").naddrs, 2);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    {
        char after[512];

        snprintf(after, sizeof(after),
                 "{\"pool\":\"api\",\"discover\":\"api\",\"added\":[],\"removed\":[],"
                 "\"readmitted\":[\"%s\"],\"weights_changed\":0}",
                 n2);
        assert_last_disc_record("discover api/api", gen + 1, after);
    }

    /* Its request ends: it stays. */
    inflight(n2, 0);
    ctl_step();
    ctl_step();
    ck_assert_ptr_eq(be(n2)->be, b2);
    ck_assert_int_eq(state(n2), BE_READY);
    http_stop();
    down();
}
END_TEST

/*
 * SRV: the records of the lowest priority only, each target's addresses
 * at the record's port, weights scaled so the largest is 1000.
 */
START_TEST(test_srv_lowest_priority_scaled_weights)
{
    static const char *const want[] = {"127.0.0.3:8081", "127.0.0.4:8082"};
    struct discovery_info d;

    up_with(
        "127.0.0.3 s1.internal\n127.0.0.4 s2.internal\n127.0.0.5 s3.internal\n",
        "srv-host=_grpc._tcp.api.internal,s1.internal,8081,10,30\n"
        "srv-host=_grpc._tcp.api.internal,s2.internal,8082,10,60\n"
        "srv-host=_grpc._tcp.api.internal,s3.internal,8083,20,100\n",
        "{ name = \"grpc\"; srv = \"_grpc._tcp.api.internal\"; group = \"green\"; weight = 70; }",
        NULL, NULL);
    CTL_LOOP_UNTIL(resolutions("grpc") >= 1);
    d = info("grpc");
    ck_assert_str_eq(d.kind, "srv");
    ck_assert_str_eq(d.query, "_grpc._tcp.api.internal");
    ck_assert(set_is("grpc", want, 2));
    ck_assert_str_eq(d.addrs[0].backend, "grpc-127.0.0.3:8081");
    ck_assert_int_eq(d.addrs[0].weight, 500);
    ck_assert_int_eq(d.addrs[1].weight, 1000);
    ck_assert_uint_eq(api()->nb, 2);
    ck_assert_int_eq(be("grpc-127.0.0.3:8081")->weight, 500);
    ck_assert_int_eq(be("grpc-127.0.0.4:8082")->weight, 1000);
    ck_assert_str_eq(group_of("grpc-127.0.0.4:8082"), "green");
    ck_assert_ptr_null(find("grpc-127.0.0.5:8083"));
    ck_assert_uint_eq(d.errors, 0);
    down();
}
END_TEST

/* SRV records whose weights are all 0: each address takes the entry's weight. */
START_TEST(test_srv_zero_weights_take_the_entry_weight)
{
    up_with(
        "127.0.0.3 s1.internal\n127.0.0.4 s2.internal\n",
        "srv-host=_grpc._tcp.api.internal,s1.internal,8081,5,0\n"
        "srv-host=_grpc._tcp.api.internal,s2.internal,8082,5,0\n",
        "{ name = \"grpc\"; srv = \"_grpc._tcp.api.internal\"; group = \"green\"; weight = 70; }",
        NULL, NULL);
    CTL_LOOP_UNTIL(info("grpc").naddrs == 2);
    ck_assert_int_eq(be("grpc-127.0.0.3:8081")->weight, 70);
    ck_assert_int_eq(be("grpc-127.0.0.4:8082")->weight, 70);
    down();
}
END_TEST

/*
 * An operator's weight on a discovered backend stays while the records'
 * weights stay; when the records' weight of its address moves, the backend
 * follows the records (weights_changed, one publish, one record).
 */
START_TEST(test_srv_weight_moves_with_the_records)
{
    const char *grpc = "{ name = \"grpc\"; srv = \"_grpc._tcp.api.internal\"; group = \"green\"; }";
    uint64_t gen, r;

    up_with("127.0.0.3 s1.internal\n127.0.0.4 s2.internal\n",
            "srv-host=_grpc._tcp.api.internal,s1.internal,8081,10,30\n"
            "srv-host=_grpc._tcp.api.internal,s2.internal,8082,10,60\n",
            grpc, NULL, NULL);
    CTL_LOOP_UNTIL(info("grpc").naddrs == 2);
    ck_assert_int_eq(be("grpc-127.0.0.3:8081")->weight, 500);
    ctl_change("set weight api/grpc-127.0.0.3:8081 7", NULL);
    r = resolutions("grpc");
    CTL_LOOP_UNTIL(resolutions("grpc") >= r + 2);
    ck_assert_int_eq(be("grpc-127.0.0.3:8081")->weight, 7); /* the same records: the operator's */
    gen = CF.m->generation;

    dns_restart("srv-host=_grpc._tcp.api.internal,s1.internal,8081,10,60\n"
                "srv-host=_grpc._tcp.api.internal,s2.internal,8082,10,60\n");
    CTL_LOOP_UNTIL(info("grpc").addrs[0].weight == 1000);
    ck_assert_int_eq(be("grpc-127.0.0.3:8081")->weight, 1000);
    ck_assert_int_eq(be("grpc-127.0.0.4:8082")->weight, 1000);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    assert_last_disc_record("discover api/grpc", gen + 1,
                            "{\"pool\":\"api\",\"discover\":\"grpc\",\"added\":[],\"removed\":[],"
                            "\"readmitted\":[],\"weights_changed\":1}");
    down();
}
END_TEST

/* No backend of pool api is gone. */
static void assert_none_gone(void)
{
    for (uint32_t i = 0; i < api()->nb; i++)
        ck_assert_msg(!api()->b[i].gone, "%s gone", api()->b[i].be->name);
}

/*
 * An empty answer (NXDOMAIN) is counted (unconfirmed_empty) and changes
 * nothing until `confirm` of them in a row (the entry's confirm = 4); an
 * answer with records in between starts the count again. The confirmed
 * empty answer drains everything (then it is removed: nothing in flight)
 * and unconfirmed_empty reads 0 again.
 */
START_TEST(test_empty_answer_needs_confirm)
{
    static const char *const two[] = {"127.0.0.2:8080", "127.0.0.3:8080"};
    const char *hosts = "127.0.0.2 api.internal\n127.0.0.3 api.internal\n";
    unsigned seen = 0;
    uint64_t gen, r;
    struct discovery_info d;

    up(hosts, ENTRY("api", "api.internal:8080", "blue", "confirm = 4;"));
    CTL_LOOP_UNTIL(info("api").naddrs == 2);
    gen = CF.m->generation;

    /* One empty answer, then records again: nothing changed, the count starts again. */
    dns_set_hosts("");
    CTL_LOOP_UNTIL(info("api").unconfirmed_empty >= 1);
    ck_assert(set_is("api", two, 2));
    assert_none_gone();
    dns_set_hosts(hosts);
    while (info("api").unconfirmed_empty > 0) {
        ck_assert_uint_eq(info("api").naddrs, 2);
        assert_none_gone();
        ctl_step();
    }
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_uint_eq(info("api").errors, 0);
    ck_assert(!info("api").failing);

    /* confirm empty answers in a row: each seen, nothing gone before the last. */
    r = resolutions("api");
    dns_set_hosts("");
    CTL_LOOP_UNTIL(info("api").unconfirmed_empty == 1);
    for (;;) {
        d = info("api");
        if (d.naddrs == 0)
            break;
        ck_assert_uint_eq(d.naddrs, 2);
        assert_none_gone();
        ck_assert_uint_eq(CF.m->generation, gen);
        seen |= 1u << d.unconfirmed_empty;
        ctl_step();
    }
    ck_assert_uint_eq(seen, (1u << 1) | (1u << 2) | (1u << 3)); /* 1, 2, 3 of 4 */
    ck_assert_uint_eq(d.unconfirmed_empty, 0);
    ck_assert_uint_ge(d.resolutions, r + 4);
    ck_assert_uint_eq(d.errors, 0);
    ck_assert(!d.failing);
    assert_last_disc_record("discover api/api", gen + 1,
                            "{\"pool\":\"api\",\"discover\":\"api\",\"added\":[],\"removed\":[\"" A2
                            "\",\"" A3 "\"],\"readmitted\":[],\"weights_changed\":0}");
    CTL_LOOP_UNTIL(api()->nb == 0); /* nothing in flight: drained at once, then removed */
    ck_assert_uint_eq(CF.m->generation, gen + 2);
    assert_last_disc_record("discover api", gen + 2,
                            "{\"pool\":\"api\",\"removed\":[\"" A2 "\",\"" A3 "\"]}");
    down();
}
END_TEST

/*
 * A failing resolution keeps the set: timeouts (dnsmasq stopped), then
 * refused (dnsmasq killed). Each is counted (errors), the entry is
 * failing with its last_error; nothing is published or audited. An answer
 * in between clears failing.
 */
START_TEST(test_failures_keep_the_set)
{
    static const char *const two[] = {"127.0.0.2:8080", "127.0.0.3:8080"};
    struct discovery_info d;
    uint64_t gen, r;
    size_t records;
    char timeout_error[600];

    up("127.0.0.2 api.internal\n127.0.0.3 api.internal\n",
       ENTRY("api", "api.internal:8080", "blue", ""));
    CTL_LOOP_UNTIL(info("api").naddrs == 2);
    gen = CF.m->generation;
    records = ctl_audit_count();
    r = resolutions("api");

    dns_pause();
    CTL_LOOP_UNTIL(info("api").errors >= 2);
    d = info("api");
    ck_assert(d.failing);
    ck_assert_ptr_nonnull(d.last_error);
    ck_assert_msg(strstr(d.last_error, "Timeout") != NULL, "last_error: %s", d.last_error);
    ck_assert(d.last_error_at > 1e9);
    ck_assert(set_is("api", two, 2));
    assert_none_gone();
    ck_assert(routed(A2) && routed(A3));
    snprintf(timeout_error, sizeof(timeout_error), "%s", d.last_error);

    dns_resume();
    CTL_LOOP_UNTIL(!info("api").failing);
    d = info("api");
    ck_assert_uint_gt(d.resolutions, r);
    ck_assert_ptr_nonnull(d.last_error); /* the latest error stays on show */
    ck_assert_uint_ge(d.errors, 2);

    r = d.errors;
    dns_kill();
    CTL_LOOP_UNTIL(info("api").errors >= r + 2);
    d = info("api");
    ck_assert(d.failing);
    ck_assert_ptr_nonnull(d.last_error);
    ck_assert_str_ne(d.last_error, timeout_error);
    ck_assert(set_is("api", two, 2));
    assert_none_gone();
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_uint_eq(ctl_audit_count(), records);
    /* Retried at min_interval_ms, not at interval_ms. */
    ck_assert_int_le(d.next_ms, 50);
    down();
}
END_TEST

/*
 * max_backends = 2: of a first answer of 3, the first 2 in address order;
 * counted as an error but applied. Of a later answer of 4, the address the
 * entry has first, then the new ones in address order; the one left out drains.
 */
START_TEST(test_max_backends_keeps_existing_first)
{
    static const char *const first[] = {"127.0.0.4:8080", "127.0.0.5:8080"};
    static const char *const later[] = {"127.0.0.2:8080", "127.0.0.5:8080"};
    struct discovery_info d;

    up("127.0.0.4 api.internal\n127.0.0.5 api.internal\n127.0.0.6 api.internal\n",
       ENTRY("api", "api.internal:8080", "blue", "max_backends = 2;"));
    CTL_LOOP_UNTIL(resolutions("api") >= 1);
    d = info("api");
    ck_assert(set_is("api", first, 2));
    ck_assert_uint_eq(d.errors, 1);
    ck_assert(!d.failing);
    ck_assert_ptr_nonnull(d.last_error);
    ck_assert_msg(strstr(d.last_error, "max_backends") != NULL, "%s", d.last_error);
    ck_assert_uint_eq(api()->nb, 2);
    ck_assert_ptr_null(find("api-127.0.0.6:8080"));

    dns_set_hosts("127.0.0.2 api.internal\n127.0.0.3 api.internal\n127.0.0.5 api.internal\n"
                  "127.0.0.6 api.internal\n");
    CTL_LOOP_UNTIL(set_is("api", later, 2));
    ck_assert(!be("api-127.0.0.5:8080")->gone);
    ck_assert(!be("api-127.0.0.2:8080")->gone);
    ck_assert_ptr_null(find("api-127.0.0.3:8080"));
    ck_assert_ptr_null(find("api-127.0.0.6:8080"));
    CTL_LOOP_UNTIL(find("api-127.0.0.4:8080") == NULL); /* drained at once, removed */
    ck_assert_uint_eq(api()->nb, 2);
    ck_assert_uint_ge(info("api").errors, 2);
    down();
}
END_TEST

/*
 * A reload: entry "old" removed (its backends drain, the one with a
 * request in flight stays DRAINING until it ends), entry "new" added
 * (resolved at once), entry "api" kept with another group (its backends
 * move to it, its set and counters stay).
 */
START_TEST(test_reload_removes_adds_and_moves)
{
    static const char *const two[] = {"127.0.0.2:8080", "127.0.0.3:8080"};
    struct discovery_info d;
    uint64_t r, start;
    uint32_t id;

    slow_resolutions();
    up("127.0.0.2 api.internal\n127.0.0.3 api.internal\n127.0.0.7 old.internal\n"
       "127.0.0.8 old.internal\n127.0.0.9 new.internal\n",
       ENTRY("api", "api.internal:8080", "blue", "") ", " ENTRY("old", "old.internal:8080", "blue",
                                                                ""));
    CTL_LOOP_UNTIL(info("api").naddrs == 2 && info("old").naddrs == 2);
    ck_assert_int_gt(info("api").next_ms, 4000); /* a TTL of 30 s: at interval_ms, 5 s */
    ck_assert_int_le(info("api").next_ms, 5000);
    inflight("old-127.0.0.7:8080", 1);
    id = info("api").id;
    r = resolutions("api");

    write_conf(ENTRY("api", "api.internal:8080", "green", "") ", " ENTRY("new", "new.internal:9090",
                                                                         "blue", ""));
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    start = veer_now_us();
    ck_assert_uint_eq(discovery_count(), 2);
    d = info("api");
    ck_assert_uint_eq(d.id, id);
    ck_assert_uint_eq(d.resolutions, r);
    ck_assert_str_eq(d.group, "green");
    ck_assert(set_is("api", two, 2));
    ck_assert_str_eq(group_of(A2), "green");
    ck_assert_str_eq(group_of(A3), "green");
    ck_assert(!be(A2)->gone);
    ck_assert(be("old-127.0.0.7:8080")->gone);
    ck_assert_int_eq(state("old-127.0.0.7:8080"), BE_DRAINING);
    ck_assert(!routed("old-127.0.0.7:8080"));

    CTL_LOOP_UNTIL(info("new").naddrs == 1);
    ck_assert_uint_lt(veer_now_us() - start, 2500 * 1000); /* at once, not 5 s later */
    ck_assert_str_eq(info("new").addrs[0].backend, "new-127.0.0.9:9090");
    ck_assert_str_eq(group_of("new-127.0.0.9:9090"), "blue");
    ck_assert_int_eq(state("new-127.0.0.9:9090"), BE_READY);
    ck_assert(routed("new-127.0.0.9:9090"));
    ck_assert_uint_eq(resolutions("api"), r); /* its query is the same: not resolved again */
    assert_last_disc_record("discover api/new", CF.m->generation,
                            "{\"pool\":\"api\",\"discover\":\"new\",\"added\":["
                            "\"new-127.0.0.9:9090\"],\"removed\":[],\"readmitted\":[],"
                            "\"weights_changed\":0}");
    CTL_LOOP_UNTIL(find("old-127.0.0.8:8080") == NULL); /* nothing in flight: gone already */
    ck_assert_ptr_nonnull(find("old-127.0.0.7:8080"));

    inflight("old-127.0.0.7:8080", 0);
    CTL_LOOP_UNTIL(find("old-127.0.0.7:8080") == NULL);
    ck_assert_uint_eq(api()->nb, 3);
    down();
}
END_TEST

/*
 * The next resolution comes at the answer's TTL (1 s) within
 * [min_interval_ms, interval_ms]: 1 s with [50 ms, 5 s], 2 s once a reload
 * makes min_interval_ms 2 s (new resolvers: resolved again at once).
 */
START_TEST(test_next_resolution_at_the_ttl_within_bounds)
{
    uint64_t r;

    resolvers = "interval_ms = 5000; min_interval_ms = 50; timeout_ms = 200;";
    up("127.0.0.2 api.internal\n", ENTRY("api", "api.internal:8080", "blue", ""));
    CTL_LOOP_UNTIL(resolutions("api") >= 1);
    ck_assert_int_gt(info("api").next_ms, 500);
    ck_assert_int_le(info("api").next_ms, 1000);
    ck_assert_uint_eq(info("api").ttl_s, 1);

    r = resolutions("api");
    write_conf_with("interval_ms = 5000; min_interval_ms = 2000; timeout_ms = 200;",
                    ENTRY("api", "api.internal:8080", "blue", ""));
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    CTL_LOOP_UNTIL(resolutions("api") > r);
    ck_assert_int_gt(info("api").next_ms, 1500);
    ck_assert_int_le(info("api").next_ms, 2000);
    down();
}
END_TEST

/*
 * A reload that changes a kept entry's query and weight: the entry (its id,
 * counters) stays, its backends take the new weight with the reload, it
 * resolves the new name at once; the addresses of the old name drain.
 */
START_TEST(test_reload_changing_the_query_and_weight)
{
    static const char *const now[] = {"127.0.0.7:9090"};
    uint64_t r, start;
    uint32_t id;

    slow_resolutions();
    up("127.0.0.2 api.internal\n127.0.0.7 api2.internal\n",
       ENTRY("api", "api.internal:8080", "blue", "weight = 10;"));
    CTL_LOOP_UNTIL(info("api").naddrs == 1);
    ck_assert_int_eq(be(A2)->weight, 10);
    id = info("api").id;
    r = resolutions("api");
    inflight(A2, 1);

    write_conf(ENTRY("api", "api2.internal:9090", "blue", "weight = 20;"));
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    start = veer_now_us();
    ck_assert_int_eq(be(A2)->weight, 20);
    ck_assert(!be(A2)->gone);
    ck_assert_str_eq(info("api").query, "api2.internal:9090");

    CTL_LOOP_UNTIL(set_is("api", now, 1));
    ck_assert_uint_lt(veer_now_us() - start, 2500 * 1000); /* at once, not 5 s later */
    ck_assert_uint_eq(resolutions("api"), r + 1);
    ck_assert_uint_eq(info("api").id, id);
    ck_assert_int_eq(be("api-127.0.0.7:9090")->weight, 20);
    ck_assert_int_eq(state("api-127.0.0.7:9090"), BE_READY);
    ck_assert(be(A2)->gone);
    ck_assert_int_eq(state(A2), BE_DRAINING);
    inflight(A2, 0);
    CTL_LOOP_UNTIL(find(A2) == NULL);
    down();
}
END_TEST

/*
 * A reload that changes the resolvers while a resolution is under way (its
 * server stopped): that resolution is abandoned, not failed (no error, not
 * failing), and the entry resolves again at once on the new resolvers.
 */
START_TEST(test_reload_of_the_resolvers_abandons_the_round_in_flight)
{
    static const char *const two[] = {"127.0.0.2:8080", "127.0.0.3:8080"};
    struct discovery_info d;

    up("127.0.0.2 api.internal\n127.0.0.3 api.internal\n",
       ENTRY("api", "api.internal:8080", "blue", ""));
    dns_pause();
    CTL_LOOP_UNTIL(info("api").next_ms < 0); /* the first round is under way */
    write_conf_with("interval_ms = 200; min_interval_ms = 50; timeout_ms = 150;",
                    ENTRY("api", "api.internal:8080", "blue", ""));
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    d = info("api");
    ck_assert_uint_eq(d.errors, 0);
    ck_assert(!d.failing);
    ck_assert_msg(d.last_error == NULL, "last_error: %s", d.last_error);
    ck_assert_uint_eq(d.resolutions, 0);
    dns_resume();
    CTL_LOOP_UNTIL(set_is("api", two, 2));
    down();
}
END_TEST

/*
 * The resolvers a reload names are the ones used, even when that reload
 * leaves no discover entry: the entry a later reload adds resolves on
 * them (here: the first ones refuse, the later ones are dnsmasq).
 */
START_TEST(test_resolvers_changed_while_no_entry_are_used)
{
    int dnsmasq;

    dns_up("127.0.0.2 api.internal\n", NULL);
    dnsmasq = DNS.port;
    server_port = dns_free_port(); /* nothing listens there: refused */
    {
        const struct ctlfix_opts o = {.slots = 1, .keep_file = true};
        char pools[4096], fmt[8192];

        pools_text(pools, sizeof(pools), ENTRY("api", "api.internal:8080", "blue", ""), NULL);
        conf_text(fmt, sizeof(fmt), NULL, NULL, pools);
        ctl_up_with(fmt, &o);
    }
    CTL_LOOP_UNTIL(info("api").errors >= 1);
    ck_assert_uint_eq(info("api").naddrs, 0);

    /* No entry left; the resolvers are dnsmasq now. */
    server_port = dnsmasq;
    write_conf_pools(NULL, "pools = ( { name = \"api\"; backends = ( { name = \"s1\"; address = "
                           "\"127.0.0.1:1\"; } ); } );\n");
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    ck_assert_uint_eq(discovery_count(), 0);

    /* The entry again, the same resolvers: it resolves on dnsmasq. */
    write_conf(ENTRY("api", "api.internal:8080", "blue", ""));
    ctl_run("reload");
    ck_assert_msg(CF.reply.ok, "reload: %s", CF.reply.text);
    ck_assert_uint_eq(discovery_count(), 1);
    CTL_LOOP_UNTIL(info("api").resolutions >= 1 || info("api").errors >= 3);
    ck_assert_msg(info("api").naddrs == 1, "errors %llu, last_error %s",
                  (unsigned long long)info("api").errors, info("api").last_error);
    down();
}
END_TEST

/* --- discovery_adopt ------------------------------------------------------------------------- */

static int adopt(const char *pool, const char *name, const char *addr)
{
    return discovery_adopt(CF.m, CF.c, model_find_pool(CF.m, pool), name, addr);
}

static void adopt_two(void)
{
    ck_assert_int_ge(adopt("api", A2, "127.0.0.2:8080"), 0);
    ck_assert_int_ge(adopt("api", "api-127.0.0.4:8080", "127.0.0.4:8080"), 0);
}

/*
 * An upgrade's discovered backends, recreated before discovery starts, are
 * the entry's set until the first answer: the one still in DNS stays (the
 * same backend, not added again), the other drains and goes.
 */
START_TEST(test_adopted_backends_until_the_first_answer)
{
    static const char *const adopted[] = {"127.0.0.2:8080", "127.0.0.4:8080"};
    static const char *const now[] = {"127.0.0.2:8080", "127.0.0.3:8080"};
    struct backend *b2;
    uint64_t gen;

    up_with("127.0.0.2 api.internal\n127.0.0.3 api.internal\n", NULL,
            ENTRY("api", "api.internal:8080", "blue", "weight = 30;"), NULL, adopt_two);
    gen = CF.m->generation;
    ck_assert(set_is("api", adopted, 2));
    ck_assert_uint_eq(info("api").resolutions, 0);
    ck_assert_uint_eq(be(A2)->disc_id, info("api").id);
    ck_assert_int_eq(be(A2)->weight, 30);
    ck_assert_str_eq(group_of(A2), "blue");
    ck_assert_int_eq(state(A2), BE_READY);
    ck_assert(routed(A2) && routed("api-127.0.0.4:8080"));
    b2 = be(A2)->be;
    inflight("api-127.0.0.4:8080", 1);

    CTL_LOOP_UNTIL(resolutions("api") >= 1);
    ck_assert(set_is("api", now, 2));
    ck_assert_ptr_eq(be(A2)->be, b2);
    ck_assert(be("api-127.0.0.4:8080")->gone);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    assert_last_disc_record("discover api/api", gen + 1,
                            "{\"pool\":\"api\",\"discover\":\"api\",\"added\":[\"" A3
                            "\"],\"removed\":[\"api-127.0.0.4:8080\"],\"readmitted\":[],"
                            "\"weights_changed\":0}");
    ck_assert_int_eq(state("api-127.0.0.4:8080"), BE_DRAINING);
    inflight("api-127.0.0.4:8080", 0);
    CTL_LOOP_UNTIL(find("api-127.0.0.4:8080") == NULL);
    down();
}
END_TEST

#define ADOPT_CONF                                                                                 \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; discover = ( "                                                    \
    "{ name = \"api\"; dns = \"api.internal:8080\"; group = \"blue\"; weight = 70; },"             \
    "{ name = \"grpc\"; srv = \"_grpc._tcp.api.internal\"; group = \"green\"; } ); },"             \
    "{ name = \"web\"; discover = ( { name = \"web\"; dns = \"web.internal:80\"; } ); } );\n"

/*
 * discovery_adopt on its own: a name of an entry's shape with its address
 * (and, for dns, its port) is a discovered backend of that entry; any
 * other name, address, pool or port is not (-1, nothing added).
 */
START_TEST(test_adopt_only_the_entries_shape)
{
    char path[64], err[256] = "";
    struct veer_conf *c;
    struct model *m;
    struct discovery_info d;
    int api_i, web_i, i;
    FILE *f;

    strcpy(path, "/tmp/check_discovery.XXXXXX");
    i = mkstemp(path);
    ck_assert_int_ge(i, 0);
    f = fdopen(i, "w");
    fputs(ADOPT_CONF, f);
    fclose(f);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "%s", err);
    m = model_from_conf(c);
    api_i = model_find_pool(m, "api");
    web_i = model_find_pool(m, "web");

    i = discovery_adopt(m, c, api_i, A2, "127.0.0.2:8080");
    ck_assert_int_ge(i, 0);
    ck_assert_str_eq(m->pools[api_i].b[i].be->name, A2);
    ck_assert_str_eq(m->pools[api_i].b[i].be->addr.text, "127.0.0.2:8080");
    ck_assert_int_eq(m->pools[api_i].b[i].weight, 70);
    ck_assert_str_eq(m->pools[api_i].g[m->pools[api_i].b[i].group].name, "blue");
    ck_assert_int_ge(discovery_adopt(m, c, api_i, A6, "[::1]:8080"), 0);
    i = discovery_adopt(m, c, api_i, "grpc-127.0.0.9:1234", "127.0.0.9:1234"); /* srv: any port */
    ck_assert_int_ge(i, 0);
    ck_assert_str_eq(m->pools[api_i].g[m->pools[api_i].b[i].group].name, "green");
    ck_assert_uint_eq(m->pools[api_i].nb, 3);

    ck_assert_int_eq(discovery_adopt(m, c, api_i, "apix-127.0.0.3:8080", "127.0.0.3:8080"), -1);
    ck_assert_int_eq(discovery_adopt(m, c, api_i, "api127.0.0.3:8080", "127.0.0.3:8080"), -1);
    ck_assert_int_eq(discovery_adopt(m, c, api_i, A3, "127.0.0.4:8080"), -1); /* not its address */
    ck_assert_int_eq(discovery_adopt(m, c, api_i, "api-127.0.0.3:9090", "127.0.0.3:9090"), -1);
    ck_assert_int_eq(discovery_adopt(m, c, api_i, "web-127.0.0.3:80", "127.0.0.3:80"), -1);
    ck_assert_int_eq(discovery_adopt(m, c, web_i, A3, "127.0.0.3:8080"), -1);   /* another pool */
    ck_assert_int_eq(discovery_adopt(m, c, api_i, "api-nohost", "nohost"), -1); /* no address */
    ck_assert_uint_eq(m->pools[api_i].nb, 3);
    ck_assert_uint_eq(m->pools[web_i].nb, 0);
    ck_assert_int_ge(discovery_adopt(m, c, web_i, "web-127.0.0.3:80", "127.0.0.3:80"), 0);

    ck_assert_uint_eq(discovery_count(), 3);
    discovery_get(0, &d);
    ck_assert_str_eq(d.name, "api");
    ck_assert_uint_eq(d.naddrs, 2);
    ck_assert_uint_eq(m->pools[api_i].b[0].disc_id, d.id);
    ck_assert_uint_ne(d.id, 0);
    discovery_get(1, &d);
    ck_assert_str_eq(d.name, "grpc");
    ck_assert_uint_eq(d.naddrs, 1);
    ck_assert_uint_eq(m->pools[api_i].b[2].disc_id, d.id);
    discovery_get(2, &d);
    ck_assert_uint_eq(d.naddrs, 1);

    discovery_stop();
    model_free(m);
    conf_free(c);
}
END_TEST

static Suite *discovery_suite(void)
{
    Suite *s = suite_create("discovery");
    TCase *tc = tcase_create("dnsmasq");
    TCase *ta = tcase_create("adopt");

    tcase_add_test(tc, test_first_answer_makes_the_set);
    tcase_add_test(tc, test_scale_in_drains_then_removes);
    tcase_add_test(tc, test_readmitted_before_removal_keeps_its_health);
    tcase_add_test(tc, test_srv_lowest_priority_scaled_weights);
    tcase_add_test(tc, test_srv_zero_weights_take_the_entry_weight);
    tcase_add_test(tc, test_srv_weight_moves_with_the_records);
    tcase_add_test(tc, test_empty_answer_needs_confirm);
    tcase_add_test(tc, test_failures_keep_the_set);
    tcase_add_test(tc, test_max_backends_keeps_existing_first);
    tcase_add_test(tc, test_reload_removes_adds_and_moves);
    tcase_add_test(tc, test_reload_changing_the_query_and_weight);
    tcase_add_test(tc, test_next_resolution_at_the_ttl_within_bounds);
    tcase_add_test(tc, test_reload_of_the_resolvers_abandons_the_round_in_flight);
    tcase_add_test(tc, test_resolvers_changed_while_no_entry_are_used);
    tcase_add_test(tc, test_adopted_backends_until_the_first_answer);
    suite_add_tcase(s, tc);
    tcase_add_test(ta, test_adopt_only_the_entries_shape);
    suite_add_tcase(s, ta);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(discovery_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
