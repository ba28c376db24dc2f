/*
 * check_conf.c - unit tests for conf.c: the reference config of the
 * operator contract loads with every field right, a minimal config gets
 * every default, and each kind of bad config is refused with the file and
 * line of the offending setting and a message that names it.
 */
#include "conf.h"
#include "module.h"
#include "routes.h"
#include "veer.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

/* 64 bytes: one more than `rollout start ... preflight=NAME` takes. */
#define N64_NAME "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij0123"

#ifndef SRCDIR
#define SRCDIR "."
#endif

/* Write text to a new temporary file; the caller unlinks and frees the path. */
static char *write_tmp(const char *text)
{
    char *path = veer_strdup("/tmp/check_conf_XXXXXX.conf");
    int fd = mkstemps(path, 5);
    size_t len = strlen(text);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Load text as a config file that must be valid. */
static struct veer_conf *load_ok(const char *text)
{
    char err[512] = "";
    char *path = write_tmp(text);
    struct veer_conf *conf = conf_load(path, err, sizeof(err));

    unlink(path);
    free(path);
    ck_assert_msg(conf != NULL, "config refused: %s", err);
    return conf;
}

/*
 * A module's key as its section parsed it (conf_value), which every module
 * key has, present or not.
 */
static const char *mod_str(const struct veer_conf *c, const char *key)
{
    char *const *v = conf_value(c, key);

    ck_assert_msg(v != NULL, "no module key %s", key);
    return *v;
}

static bool mod_bool(const struct veer_conf *c, const char *key)
{
    const bool *v = conf_value(c, key);

    ck_assert_msg(v != NULL, "no module key %s", key);
    return *v;
}

static const struct conf_strings *mod_strs(const struct veer_conf *c, const char *key)
{
    const struct conf_strings *v = conf_value(c, key);

    ck_assert_msg(v != NULL, "no module key %s", key);
    return v;
}

/* Load text, expect "PATH:LINE: ..." containing msg. */
static void expect_error(const char *text, int line, const char *msg)
{
    char err[512] = "", prefix[512];
    char *path = write_tmp(text);
    struct veer_conf *conf = conf_load(path, err, sizeof(err));

    snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
    unlink(path);
    free(path);
    if (conf != NULL) {
        conf_free(conf);
        ck_abort_msg("config loaded, expected an error with \"%s\"", msg);
    }
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "error \"%s\" lacks prefix \"%s\"",
                  err, prefix);
    ck_assert_msg(strstr(err, msg) != NULL, "error \"%s\" lacks \"%s\"", err, msg);
    ck_assert_msg(strchr(err, '\n') == NULL, "error \"%s\" has a newline", err);
}

/* Load text, expect exactly "PATH:LINE: msg". */
static void expect_error_exact(const char *text, int line, const char *msg)
{
    char err[512] = "", want[1024];
    char *path = write_tmp(text);
    struct veer_conf *conf = conf_load(path, err, sizeof(err));

    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
    unlink(path);
    free(path);
    if (conf != NULL) {
        conf_free(conf);
        ck_abort_msg("config loaded, expected \"%s\"", msg);
    }
    ck_assert_str_eq(err, want);
}

/* The config block of ARCHITECTURE.md ("Config"), verbatim. */
static const char reference_conf[] =
    "workers = 2;                                     # default: number of CPUs\n"
    "listen = ( { address = \"0.0.0.0:8080\"; pool = \"api\";\n"
    "             tls = { certificates = ( { cert = \"a.pem\"; key = \"a.key\"; ocsp = "
    "\"a.ocsp\"; } );\n"
    "                     protocols = \"TLSv1.2+\"; ciphers = \"...\"; }; } );   # tls optional\n"
    "admin = { socket = \"/run/veer/admin.sock\"; mode = \"0660\"; owner = \"veer\"; group = "
    "\"veer\";\n"
    "          http = \"127.0.0.1:9900\"; };            # optional read-only HTTP: / (HTML), "
    "/status, /metrics\n"
    "timeouts = { connect_ms = 2000; client_header_ms = 10000; idle_ms = 60000; quiet_ms = 1000;\n"
    "             upstream_response_ms = 30000; drain_ms = 30000; shutdown_ms = 30000; };\n"
    "limits = { max_connections = 10000; max_connections_per_worker = 0;   # 0 = no per-worker "
    "cap\n"
    "           request_line_bytes = 8192; header_bytes = 32768; header_count = 100;  # 414 / "
    "431\n"
    "           body_bytes = 0; };                    # 0 = unlimited; a pool may override "
    "body_bytes\n"
    "health_endpoints = { prefix = \"/api/health\"; };  # veer's own; `enabled = false;` to proxy "
    "them\n"
    "state_file = \"/var/lib/veer/state\";\n"
    "audit_log  = \"/var/log/veer/audit.log\";\n"
    "access_log = \"/var/log/veer/access.log\";\n"
    "maintenance = { allow = ( \"/admin\" ); retry_after = 30; };\n"
    "cluster = { etcd = ( \"http://127.0.0.1:2379\" ); prefix = \"/veer/prod\"; instance = "
    "\"edge-1\"; };\n"
    "pools = (\n"
    "  { name = \"api\"; balance = \"swrr\";              # swrr | leastconn | p2c\n"
    "    health = { path = \"/api/health/readiness\"; interval_ms = 500;\n"
    "               timeout_ms = 1000; rise = 2; fall = 3; };\n"
    "    retries = { count = 2; base_ms = 10; cap_ms = 200; budget_percent = 20; };\n"
    "    breaker = { failures = 5; window_ms = 10000; cooldown_ms = 30000; half_open_successes = "
    "2;\n"
    "                max_ejection_percent = 50; };\n"
    "    slow_start_ms = 0; hold_ms = 0; body_bytes = 0;\n"
    "    override_header = \"X-Canary\";                # always|never forces the canary group\n"
    "    sticky = { header = \"X-User-Id\"; };          # or cookie = \"uid\"; or client_address = "
    "true;\n"
    "    capacity_headroom = 2.0;\n"
    "    tls = { verify = true; ca = \"/etc/ssl/certs/ca-certificates.crt\"; sni = "
    "\"api.internal\"; };  # upstream TLS\n"
    "    backends = (\n"
    "      { name = \"blue-1\";  address = \"127.0.0.1:9001\"; weight = 100; group = \"blue\"; },\n"
    "      { name = \"green-1\"; address = \"127.0.0.1:9002\"; weight = 100; group = \"green\"; }\n"
    "    );\n"
    "    shares = { blue = 100; green = 0; }; }       # optional; see the traffic model\n"
    ");\n";

static void check_reference_top(const struct veer_conf *c)
{
    const struct conf_listen *l = &c->listens[0];

    ck_assert_int_eq(c->workers, 2);
    ck_assert_int_eq(c->nlistens, 1);
    ck_assert_str_eq(l->addr.text, "0.0.0.0:8080");
    ck_assert_int_eq(l->addr.ss.ss_family, AF_INET);
    ck_assert_int_eq(l->addr.len, sizeof(struct sockaddr_in));
    ck_assert_str_eq(l->pool, "api");
    ck_assert_int_eq(l->pool_index, 0);
    ck_assert_int_eq(l->line, 2);
    ck_assert_ptr_nonnull(l->tls);
    ck_assert_int_eq(l->tls->ncerts, 1);
    ck_assert_str_eq(l->tls->certs[0].cert, "a.pem");
    ck_assert_str_eq(l->tls->certs[0].key, "a.key");
    ck_assert_str_eq(l->tls->certs[0].ocsp, "a.ocsp");
    ck_assert_int_eq(l->tls->certs[0].line, 3);
    ck_assert_str_eq(l->tls->protocols, "TLSv1.2+");
    ck_assert_str_eq(l->tls->ciphers, "...");
    ck_assert_int_eq(l->tls->line, 3);
    ck_assert_str_eq(c->admin.socket, "/run/veer/admin.sock");
    ck_assert_int_eq(c->admin.mode, 0660);
    ck_assert_str_eq(c->admin.owner, "veer");
    ck_assert_str_eq(c->admin.group, "veer");
    ck_assert(c->admin.has_http);
    ck_assert_str_eq(c->admin.http.text, "127.0.0.1:9900");
}

static void check_reference_globals(const struct veer_conf *c)
{
    ck_assert_int_eq(c->timeouts.connect_ms, 2000);
    ck_assert_int_eq(c->timeouts.client_header_ms, 10000);
    ck_assert_int_eq(c->timeouts.idle_ms, 60000);
    ck_assert_int_eq(c->timeouts.quiet_ms, 1000);
    ck_assert_int_eq(c->timeouts.upstream_response_ms, 30000);
    ck_assert_int_eq(c->timeouts.drain_ms, 30000);
    ck_assert_int_eq(c->timeouts.shutdown_ms, 30000);
    ck_assert_int_eq(c->limits.max_connections, 10000);
    ck_assert_int_eq(c->limits.max_connections_per_worker, 0);
    ck_assert_int_eq(c->limits.request_line_bytes, 8192);
    ck_assert_int_eq(c->limits.header_bytes, 32768);
    ck_assert_int_eq(c->limits.header_count, 100);
    ck_assert_int_eq(c->limits.body_bytes, 0);
    ck_assert_str_eq(mod_str(c, "health_endpoints.prefix"), "/api/health");
    ck_assert(mod_bool(c, "health_endpoints.enabled"));
    ck_assert_str_eq(c->state_file, "/var/lib/veer/state");
    ck_assert_str_eq(c->audit_log, "/var/log/veer/audit.log");
    ck_assert_str_eq(mod_str(c, "access_log"), "/var/log/veer/access.log");
    ck_assert_int_eq(mod_strs(c, "maintenance.allow")->n, 1);
    ck_assert_str_eq(mod_strs(c, "maintenance.allow")->v[0], "/admin");
    ck_assert_int_eq(c->maintenance.retry_after, 30);
    ck_assert(c->cluster.enabled);
    ck_assert_int_eq(c->cluster.netcd, 1);
    ck_assert_str_eq(c->cluster.etcd[0], "http://127.0.0.1:2379");
    ck_assert_str_eq(c->cluster.prefix, "/veer/prod");
    ck_assert_str_eq(c->cluster.instance, "edge-1");
}

static void check_reference_pool(const struct conf_pool *p)
{
    ck_assert_str_eq(p->name, "api");
    ck_assert_int_eq(p->line, 19);
    ck_assert_int_eq(p->balance, BALANCE_SWRR);
    ck_assert(p->has_health);
    ck_assert_str_eq(p->health.path, "/api/health/readiness");
    ck_assert_int_eq(p->health.interval_ms, 500);
    ck_assert_int_eq(p->health.timeout_ms, 1000);
    ck_assert_int_eq(p->health.rise, 2);
    ck_assert_int_eq(p->health.fall, 3);
    ck_assert_int_eq(p->retries.count, 2);
    ck_assert_int_eq(p->retries.base_ms, 10);
    ck_assert_int_eq(p->retries.cap_ms, 200);
    ck_assert_int_eq(p->retries.budget_percent, 20);
    ck_assert_int_eq(p->breaker.failures, 5);
    ck_assert_int_eq(p->breaker.window_ms, 10000);
    ck_assert_int_eq(p->breaker.cooldown_ms, 30000);
    ck_assert_int_eq(p->breaker.half_open_successes, 2);
    ck_assert_int_eq(p->breaker.max_ejection_percent, 50);
    ck_assert_int_eq(p->slow_start_ms, 0);
    ck_assert_int_eq(p->hold_ms, 0);
    ck_assert_int_eq(p->body_bytes, 0);
    ck_assert_str_eq(p->override_header, "X-Canary");
    ck_assert(p->has_sticky);
    ck_assert_str_eq(p->sticky.header, "X-User-Id");
    ck_assert_ptr_null(p->sticky.cookie);
    ck_assert(!p->sticky.client_address);
    ck_assert_double_eq(p->capacity_headroom, 2.0);
    ck_assert(p->has_tls);
    ck_assert(p->tls.verify);
    ck_assert_str_eq(p->tls.ca, "/etc/ssl/certs/ca-certificates.crt");
    ck_assert_str_eq(p->tls.sni, "api.internal");
}

static void check_reference_backends(const struct conf_pool *p)
{
    ck_assert_int_eq(p->nbackends, 2);
    ck_assert_str_eq(p->backends[0].name, "blue-1");
    ck_assert_str_eq(p->backends[0].addr.text, "127.0.0.1:9001");
    ck_assert_int_eq(p->backends[0].weight, 100);
    ck_assert_str_eq(p->backends[0].group, "blue");
    ck_assert_int_eq(p->backends[0].line, 31);
    ck_assert_str_eq(p->backends[1].name, "green-1");
    ck_assert_str_eq(p->backends[1].addr.text, "127.0.0.1:9002");
    ck_assert_int_eq(p->backends[1].weight, 100);
    ck_assert_str_eq(p->backends[1].group, "green");
    ck_assert_int_eq(p->backends[1].line, 32);
    ck_assert(p->has_shares);
    ck_assert_int_eq(p->nshares, 2);
    ck_assert_str_eq(p->shares[0].group, "blue");
    ck_assert_int_eq(p->shares[0].share, 100);
    ck_assert_int_eq(p->shares[0].line, 34);
    ck_assert_str_eq(p->shares[1].group, "green");
    ck_assert_int_eq(p->shares[1].share, 0);
}

START_TEST(test_reference_config_loads_every_field)
{
    struct veer_conf *c = load_ok(reference_conf);

    check_reference_top(c);
    check_reference_globals(c);
    ck_assert_int_eq(c->npools, 1);
    check_reference_pool(&c->pools[0]);
    check_reference_backends(&c->pools[0]);
    conf_free(c);
}
END_TEST

#define LISTEN "listen = ( { address = \"127.0.0.1:8080\"; pool = \"api\"; } );\n"
#define POOLS  "pools = ( { name = \"api\"; } );\n"
#define BASE   LISTEN POOLS
/* With LISTEN first: "pools" on line 2, "name" on 3, the next line is 4. */
#define POOL_OPEN  LISTEN "pools = ( {\n  name = \"api\";\n"
#define POOL_CLOSE "} );\n"
/* A pool with one blue backend (line 5) and one green backend (line 6); next line 8. */
#define BLUE_GREEN                                                                                 \
    POOL_OPEN "  backends = (\n"                                                                   \
              "    { name = \"b1\"; address = \"127.0.0.1:9001\"; group = \"blue\"; },\n"          \
              "    { name = \"g1\"; address = \"127.0.0.1:9002\"; group = \"green\"; }\n"          \
              "  );\n"

/* A pool whose discover list opens on line 4; its first entry is on line 5. */
#define DISC_OPEN  POOL_OPEN "  discover = (\n"
#define DISC_CLOSE "  );\n" POOL_CLOSE
#define DISC_BOTH  "must set exactly one of dns = \"NAME:PORT\" or srv = \"NAME\""

/* Canonical prefixes load as written (a trailing '/', "/", an escape that stays escaped). */
START_TEST(test_canonical_path_prefixes_load)
{
    struct veer_conf *c = load_ok(BASE "maintenance = { allow = ( \"/\", \"/admin/\", \"/a%20b\", "
                                       "\"/.well-known\", \"/x%2A\" ); };\n"
                                       "health_endpoints = { prefix = \"/ops/\"; };\n");
    const struct conf_strings *allow = mod_strs(c, "maintenance.allow");

    ck_assert_int_eq(allow->n, 5);
    ck_assert_str_eq(allow->v[2], "/a%20b");
    conf_free(c);
}
END_TEST

START_TEST(test_minimal_config_has_defaults)
{
    struct veer_conf *c = load_ok(BASE);
    const struct conf_pool *p = &c->pools[0];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    ck_assert_int_eq(c->workers, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    ck_assert_ptr_null(c->listens[0].tls);
    ck_assert_str_eq(c->admin.socket, "/run/veer/admin.sock");
    ck_assert_int_eq(c->admin.mode, 0660);
    ck_assert_ptr_null(c->admin.owner);
    ck_assert_ptr_null(c->admin.group);
    ck_assert(!c->admin.has_http);
    ck_assert_int_eq(c->timeouts.connect_ms, 2000);
    ck_assert_int_eq(c->timeouts.client_header_ms, 10000);
    ck_assert_int_eq(c->timeouts.idle_ms, 60000);
    ck_assert_int_eq(c->timeouts.quiet_ms, 1000);
    ck_assert_int_eq(c->timeouts.upstream_response_ms, 30000);
    ck_assert_int_eq(c->timeouts.drain_ms, 30000);
    ck_assert_int_eq(c->timeouts.shutdown_ms, 30000);
    ck_assert_int_eq(c->limits.max_connections, 10000);
    ck_assert_int_eq(c->limits.max_connections_per_worker, 0);
    ck_assert_int_eq(c->limits.request_line_bytes, 8192);
    ck_assert_int_eq(c->limits.header_bytes, 32768);
    ck_assert_int_eq(c->limits.header_count, 100);
    ck_assert_int_eq(c->limits.body_bytes, 0);
    ck_assert_str_eq(mod_str(c, "health_endpoints.prefix"), "/api/health");
    ck_assert(mod_bool(c, "health_endpoints.enabled"));
    ck_assert_ptr_null(c->state_file);
    ck_assert_ptr_null(c->audit_log);
    ck_assert_ptr_null(mod_str(c, "access_log"));
    ck_assert(mod_bool(c, "trace_context.generate"));
    ck_assert(!mod_bool(c, "trace_context.sampled"));
    ck_assert_int_eq(mod_strs(c, "maintenance.allow")->n, 1);
    ck_assert_str_eq(mod_strs(c, "maintenance.allow")->v[0], "/admin");
    ck_assert_int_eq(c->maintenance.retry_after, 30);
    ck_assert(!c->cluster.enabled);
    ck_assert_int_eq(c->cluster.netcd, 0);
    ck_assert_ptr_null(c->cluster.prefix);
    ck_assert_ptr_null(c->cluster.instance);
    ck_assert_int_eq(p->balance, BALANCE_SWRR);
    ck_assert(!p->has_health);
    ck_assert_str_eq(p->health.path, "/");
    ck_assert_int_eq(p->health.interval_ms, 500);
    ck_assert_int_eq(p->health.timeout_ms, 1000);
    ck_assert_int_eq(p->health.rise, 2);
    ck_assert_int_eq(p->health.fall, 3);
    ck_assert_int_eq(p->retries.count, 2);
    ck_assert_int_eq(p->retries.base_ms, 10);
    ck_assert_int_eq(p->retries.cap_ms, 200);
    ck_assert_int_eq(p->retries.budget_percent, 20);
    ck_assert_int_eq(p->breaker.failures, 5);
    ck_assert_int_eq(p->breaker.window_ms, 10000);
    ck_assert_int_eq(p->breaker.cooldown_ms, 30000);
    ck_assert_int_eq(p->breaker.half_open_successes, 2);
    ck_assert_int_eq(p->breaker.max_ejection_percent, 50);
    ck_assert_int_eq(p->slow_start_ms, 0);
    ck_assert_int_eq(p->hold_ms, 0);
    ck_assert_int_eq(p->body_bytes, -1);
    ck_assert_ptr_null(p->override_header);
    ck_assert(!p->has_sticky);
    ck_assert_double_eq(p->capacity_headroom, 2.0);
    ck_assert(!p->has_tls);
    ck_assert(p->tls.verify);
    ck_assert_ptr_null(p->tls.ca);
    ck_assert_ptr_null(p->tls.sni);
    ck_assert_int_eq(p->nbackends, 0);
    ck_assert(!p->has_shares);
    ck_assert_int_eq(p->nshares, 0);
    conf_free(c);
}
END_TEST

struct bad_conf {
    const char *text;
    int line;
    const char *msg;
};

/* Each bad config, the line its error must name, and part of the message. */
static const struct bad_conf bad_confs[] = {
    /* syntax and the file as a whole */
    {"workers = 2;\nlisten = ;\n", 2, "syntax error"},
    {BASE "workers = 1;\nworkers = 2;\n", 4, "duplicate setting name"},
    {"", 1, "missing required key 'listen'"},
    {POOLS, 1, "missing required key 'listen'"},
    {LISTEN, 1, "missing required key 'pools'"},
    {BASE "foo = 1;\n", 3, "unknown key 'foo'"},
    {BASE "limits = { body_bytes = 3000000000; };\n", 3, "does not fit in 32 bits"},
    {BASE "\n\nlimits = { body_bytes = -3000000000; };\n", 5, "write -3000000000L"},
    /* workers */
    {BASE "workers = 0;\n", 3, "workers must be between 1 and 256 (got 0)"},
    {BASE "workers = 257;\n", 3, "workers must be between 1 and 256"},
    {BASE "workers = \"2\";\n", 3, "workers must be an integer"},
    /* listen */
    {"listen = \"127.0.0.1:8080\";\n" POOLS, 1, "listen must be a list of groups"},
    {"listen = ();\n" POOLS, 1, "listen must hold at least one listener"},
    {"listen = ( { pool = \"api\"; } );\n" POOLS, 1, "missing required key 'address' in listen[0]"},
    {"listen = ( { address = \"127.0.0.1:80\"; } );\n" POOLS, 1,
     "missing required key 'pool' in listen[0]"},
    {"listen = (\n  { address = \"127.0.0.1:80\"; pool = \"api\";\n    backlog = 5; }\n);\n" POOLS,
     3, "unknown key 'backlog' in listen[0]"},
    {"listen = (\n  { address = \"127.0.0.1:80\"; pool = \"api\"; },\n"
     "  { address = \"localhost:80\"; pool = \"api\"; }\n);\n" POOLS,
     3, "duplicate listen address 127.0.0.1:80 (also at line 2)"},
    {"listen = ( {\n  address = \"127.0.0.1:80\";\n  pool = \"web\";\n} );\n" POOLS, 3,
     "listen[0].pool: unknown pool 'web'"},
    {"listen = ( { address = \"127.0.0.1\"; pool = \"api\"; } );\n" POOLS, 1,
     "listen[0].address '127.0.0.1': missing port"},
    {"listen = ( { address = \"example.com:80\"; pool = \"api\"; } );\n" POOLS, 1,
     "host must be a numeric IPv4 address"},
    {"listen = ( { address = \"127.0.0.1:70000\"; pool = \"api\"; } );\n" POOLS, 1,
     "port must be between 0 and 65535"},
    {"listen = ( { address = 8080; pool = \"api\"; } );\n" POOLS, 1,
     "listen[0].address must be a string"},
    {"listen = ( { address = \"127.0.0.1:80\"; pool = \"api\";\n"
     "  tls = { protocols = \"TLSv1.2+\"; }; } );\n" POOLS,
     2, "missing required key 'certificates' in listen[0].tls"},
    {"listen = ( { address = \"127.0.0.1:80\"; pool = \"api\";\n"
     "  tls = {\n    certificates = ();\n  }; } );\n" POOLS,
     3, "listen[0].tls.certificates must hold at least one certificate"},
    {"listen = ( { address = \"127.0.0.1:80\"; pool = \"api\";\n"
     "  tls = { certificates = (\n    { cert = \"a.pem\"; }\n  ); }; } );\n" POOLS,
     3, "missing required key 'key' in listen[0].tls.certificates[0]"},
    {"listen = ( { address = \"127.0.0.1:80\"; pool = \"api\";\n"
     "  tls = { certificates = (\n    { cert = \"a.pem\"; key = \"a.key\"; chain = \"c\"; }\n"
     "  ); }; } );\n" POOLS,
     3, "unknown key 'chain' in listen[0].tls.certificates[0]"},
    {"listen = ( { address = \"127.0.0.1:80\"; pool = \"api\";\n"
     "  tls = { certificates = ( { cert = \"a\"; key = \"b\"; } );\n"
     "    protocols = \"SSLv3\"; }; } );\n" POOLS,
     3, "listen[0].tls.protocols must be one of TLSv1.2, TLSv1.2+, TLSv1.3, TLSv1.3+"},
    /* admin */
    {BASE "admin = {\n  mode = \"0999\";\n};\n", 4, "admin.mode must be a string of octal digits"},
    {BASE "admin = { mode = \"1777\"; };\n", 3, "admin.mode must be between 0000 and 0777"},
    {BASE "admin = { mode = 660; };\n", 3, "admin.mode must be a string of octal digits"},
    {BASE "admin = { mode = \"\"; };\n", 3, "admin.mode must not be empty"},
    {BASE "admin = { http = \"127.0.0.1\"; };\n", 3, "admin.http '127.0.0.1': missing port"},
    {BASE "admin = { user = \"veer\"; };\n", 3, "unknown key 'user' in admin"},
    {BASE "admin = \"/run/veer/admin.sock\";\n", 3, "admin must be a group"},
    {BASE "admin = { socket = \"/run/veer/"
          "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234"
          "56789/0123456789.sock\"; };\n",
     3, "admin.socket is too long for a unix socket path"},
    {BASE "admin = { owner = 0; };\n", 3, "admin.owner must be a string"},
    /* timeouts */
    {BASE "timeouts = {\n  connect_ms = 0;\n};\n", 4, "timeouts.connect_ms must be >= 1 (got 0)"},
    {BASE "timeouts = { idle_ms = -5; };\n", 3, "timeouts.idle_ms must be >= 1 (got -5)"},
    {BASE "timeouts = { drain_ms = 0; };\n", 3, "timeouts.drain_ms must be >= 1"},
    {BASE "timeouts = { shutdown_ms = 1.5; };\n", 3, "timeouts.shutdown_ms must be an integer"},
    {BASE "timeouts = { read_ms = 5; };\n", 3, "unknown key 'read_ms' in timeouts"},
    /* limits */
    {BASE "limits = { max_connections = 0; };\n", 3, "limits.max_connections must be >= 1"},
    {BASE "limits = { max_connections_per_worker = -1; };\n", 3,
     "limits.max_connections_per_worker must be >= 0"},
    {BASE "limits = { request_line_bytes = 63; };\n", 3,
     "limits.request_line_bytes must be between 64 and 1048576 (got 63)"},
    {BASE "limits = { header_bytes = 255; };\n", 3,
     "limits.header_bytes must be between 256 and 1048576 (got 255)"},
    /* a head buffer holds both: past 1 MiB each its 32-bit size could wrap */
    {BASE "limits = { request_line_bytes = 1048577; };\n", 3,
     "limits.request_line_bytes must be between 64 and 1048576 (got 1048577)"},
    {BASE "limits = {\n  header_bytes = 2147483647;\n};\n", 4,
     "limits.header_bytes must be between 256 and 1048576 (got 2147483647)"},
    {BASE "limits = { request_line_bytes = 2147483647; header_bytes = 2147483647; };\n", 3,
     "limits.request_line_bytes must be between 64 and 1048576 (got 2147483647)"},
    {BASE "limits = { header_count = 0; };\n", 3,
     "limits.header_count must be between 1 and 10000 (got 0)"},
    {BASE "limits = { header_count = 10001; };\n", 3, "limits.header_count must be between 1"},
    {BASE "limits = { body_bytes = -1; };\n", 3, "limits.body_bytes must be >= 0 (got -1)"},
    {BASE "limits = { body_bytes = \"1M\"; };\n", 3, "limits.body_bytes must be an integer"},
    /* health_endpoints, files, maintenance, cluster */
    {BASE "health_endpoints = { enabled = 1; };\n", 3,
     "health_endpoints.enabled must be true or false"},
    {BASE "health_endpoints = { prefix = \"api\"; };\n", 3,
     "health_endpoints.prefix must start with '/'"},
    {BASE "health_endpoints = { path = \"/x\"; };\n", 3, "unknown key 'path' in health_endpoints"},
    {BASE "state_file = 5;\n", 3, "state_file must be a string"},
    {BASE "audit_log = \"\";\n", 3, "audit_log must not be empty"},
    {BASE "access_log = true;\n", 3, "access_log must be a string"},
    {BASE "maintenance = { allow = \"/admin\"; };\n", 3,
     "maintenance.allow must be a list of strings"},
    {BASE "maintenance = { allow = (\n  \"/ok\",\n  1 ); };\n", 5,
     "maintenance.allow[1] must be a string"},
    {BASE "maintenance = { allow = [ \"admin\" ]; };\n", 3,
     "maintenance.allow[0] must start with '/'"},
    /* prefixes are matched on canonical request paths (path.h): spelled otherwise, never */
    {BASE "maintenance = { allow = ( \"/ok\", \"/a//b\" ); };\n", 3,
     "maintenance.allow[1] is not canonical"},
    {BASE "maintenance = { allow = ( \"/a/./b\" ); };\n", 3,
     "maintenance.allow[0] is not canonical"},
    {BASE "maintenance = { allow = ( \"/a/b/..\" ); };\n", 3,
     "maintenance.allow[0] is not canonical"},
    {BASE "maintenance = { allow = ( \"/%7Eadmin\" ); };\n", 3,
     "maintenance.allow[0] is not canonical"},
    {BASE "maintenance = { allow = ( \"/a%2fb\" ); };\n", 3,
     "maintenance.allow[0] can never match"},
    {BASE "maintenance = { allow = ( \"/../a\" ); };\n", 3, "maintenance.allow[0] can never match"},
    {BASE "maintenance = { allow = ( \"/a?b\" ); };\n", 3,
     "maintenance.allow[0] must be a path, without '?' or '#'"},
    {BASE "health_endpoints = { prefix = \"/api//health\"; };\n", 3,
     "health_endpoints.prefix is not canonical"},
    {BASE "health_endpoints = { prefix = \"/ops/.\"; };\n", 3,
     "health_endpoints.prefix is not canonical"},
    {BASE "maintenance = { retry_after = -1; };\n", 3, "maintenance.retry_after must be >= 0"},
    /* a module's keys only where the module declares them */
    {BASE "allow = ( \"/a\" );\n", 3, "unknown key 'allow'"},
    {BASE "maintenance = { prefix = \"/x\"; };\n", 3, "unknown key 'prefix' in maintenance"},
    {BASE "admin = { access_log = \"/x\"; };\n", 3, "unknown key 'access_log' in admin"},
    {BASE "health_endpoints = { allow = ( \"/a\" ); };\n", 3,
     "unknown key 'allow' in health_endpoints"},
    {POOL_OPEN "  access_log = \"/x\";\n" POOL_CLOSE, 4, "unknown key 'access_log' in pools[0]"},
    {BASE "cluster = { etcd = (); };\n", 3, "cluster.etcd must name at least one etcd endpoint"},
    {BASE "cluster = { etcd = ( \"127.0.0.1:2379\" ); };\n", 3,
     "cluster.etcd[0] must be a URL starting with http:// or https://"},
    {BASE "cluster = { lease_ms = 5; };\n", 3, "unknown key 'lease_ms' in cluster"},
    {BASE "cluster = { instance = \"edge 1\"; };\n", 3, "cluster.instance may contain only"},
    /* pools */
    {LISTEN "pools = { name = \"api\"; };\n", 2, "pools must be a list of groups"},
    {LISTEN "pools = ();\n", 2, "pools must hold at least one pool"},
    {LISTEN "pools = (\n  { balance = \"swrr\"; }\n);\n", 3,
     "missing required key 'name' in pools[0]"},
    {LISTEN "pools = (\n  { name = \"api\"; },\n  { name = \"web\"; },\n  {\n    name = \"api\";\n"
            "  }\n);\n",
     6, "duplicate pool name 'api' (also at line 3)"},
    {POOL_OPEN "  helth = { path = \"/\"; };\n" POOL_CLOSE, 4, "unknown key 'helth' in pools[0]"},
    {POOL_OPEN "  balance = \"rr\";\n" POOL_CLOSE, 4,
     "pools[0].balance must be one of swrr, leastconn, p2c (got \"rr\")"},
    {POOL_OPEN "  balance = 1;\n" POOL_CLOSE, 4, "pools[0].balance must be a string"},
    {LISTEN "pools = ( { name = \"a/b\"; } );\n", 2,
     "pools[0].name may contain only letters, digits, '.', '_' and '-'"},
    {LISTEN "pools = ( { name = \"\"; } );\n", 2, "pools[0].name must not be empty"},
    {POOL_OPEN "  health = { rise = 0; };\n" POOL_CLOSE, 4,
     "pools[0].health.rise must be >= 1 (got 0)"},
    {POOL_OPEN "  health = {\n    fall = 0;\n  };\n" POOL_CLOSE, 5,
     "pools[0].health.fall must be >= 1"},
    {POOL_OPEN "  health = { interval_ms = 0; };\n" POOL_CLOSE, 4,
     "pools[0].health.interval_ms must be >= 1"},
    {POOL_OPEN "  health = { timeout_ms = -1; };\n" POOL_CLOSE, 4,
     "pools[0].health.timeout_ms must be >= 1"},
    {POOL_OPEN "  health = { path = \"ready\"; };\n" POOL_CLOSE, 4,
     "pools[0].health.path must start with '/'"},
    {POOL_OPEN "  health = { uri = \"/\"; };\n" POOL_CLOSE, 4,
     "unknown key 'uri' in pools[0].health"},
    {POOL_OPEN "  health = \"/ready\";\n" POOL_CLOSE, 4, "pools[0].health must be a group"},
    {POOL_OPEN "  retries = { count = 11; };\n" POOL_CLOSE, 4,
     "pools[0].retries.count must be between 0 and 10 (got 11)"},
    {POOL_OPEN "  retries = { budget_percent = 101; };\n" POOL_CLOSE, 4,
     "pools[0].retries.budget_percent must be between 0 and 100"},
    {POOL_OPEN "  retries = { base_ms = 0; };\n" POOL_CLOSE, 4,
     "pools[0].retries.base_ms must be >= 1"},
    {POOL_OPEN "  retries = {\n    base_ms = 100;\n    cap_ms = 50; };\n" POOL_CLOSE, 6,
     "pools[0].retries.cap_ms (50) must be >= base_ms (100)"},
    {POOL_OPEN "  breaker = { max_ejection_percent = 101; };\n" POOL_CLOSE, 4,
     "pools[0].breaker.max_ejection_percent must be between 0 and 100"},
    {POOL_OPEN "  breaker = { failures = 0; };\n" POOL_CLOSE, 4,
     "pools[0].breaker.failures must be >= 1"},
    {POOL_OPEN "  breaker = { cooldown_ms = 0; };\n" POOL_CLOSE, 4,
     "pools[0].breaker.cooldown_ms must be >= 1"},
    {POOL_OPEN "  breaker = { trips = 1; };\n" POOL_CLOSE, 4,
     "unknown key 'trips' in pools[0].breaker"},
    {POOL_OPEN "  slow_start_ms = -1;\n" POOL_CLOSE, 4, "pools[0].slow_start_ms must be >= 0"},
    {POOL_OPEN "  hold_ms = -1;\n" POOL_CLOSE, 4, "pools[0].hold_ms must be >= 0"},
    {POOL_OPEN "  body_bytes = -1;\n" POOL_CLOSE, 4, "pools[0].body_bytes must be >= 0"},
    {POOL_OPEN "  override_header = \"X Canary\";\n" POOL_CLOSE, 4,
     "pools[0].override_header must be a valid HTTP token"},
    {POOL_OPEN "  sticky = { };\n" POOL_CLOSE, 4,
     "pools[0].sticky must set exactly one of header, cookie or client_address"},
    {POOL_OPEN "  sticky = { header = \"X-User\"; cookie = \"uid\"; };\n" POOL_CLOSE, 4,
     "pools[0].sticky must set exactly one of"},
    {POOL_OPEN "  sticky = { client_address = false; };\n" POOL_CLOSE, 4,
     "pools[0].sticky must set exactly one of"},
    {POOL_OPEN "  sticky = { cookie = \"a;b\"; };\n" POOL_CLOSE, 4,
     "pools[0].sticky.cookie must be a valid HTTP token"},
    {POOL_OPEN "  sticky = { ip = true; };\n" POOL_CLOSE, 4, "unknown key 'ip' in pools[0].sticky"},
    {POOL_OPEN "  capacity_headroom = 0;\n" POOL_CLOSE, 4,
     "pools[0].capacity_headroom must be greater than 0"},
    {POOL_OPEN "  capacity_headroom = -1.5;\n" POOL_CLOSE, 4,
     "pools[0].capacity_headroom must be greater than 0 (got -1.5)"},
    {POOL_OPEN "  capacity_headroom = \"2\";\n" POOL_CLOSE, 4,
     "pools[0].capacity_headroom must be a number"},
    {POOL_OPEN "  tls = { verify = \"yes\"; };\n" POOL_CLOSE, 4,
     "pools[0].tls.verify must be true or false"},
    {POOL_OPEN "  tls = { cert = \"c.pem\"; };\n" POOL_CLOSE, 4,
     "unknown key 'cert' in pools[0].tls"},
    /* backends */
    {POOL_OPEN "  backends = { name = \"a\"; };\n" POOL_CLOSE, 4,
     "pools[0].backends must be a list of groups"},
    {POOL_OPEN "  backends = (\n    { address = \"127.0.0.1:9001\"; }\n  );\n" POOL_CLOSE, 5,
     "missing required key 'name' in pools[0].backends[0]"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; }\n  );\n" POOL_CLOSE, 5,
     "missing required key 'address' in pools[0].backends[0]"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:9001\";\n"
               "      weight = \"10\"; }\n  );\n" POOL_CLOSE,
     6, "pools[0].backends[0].weight must be an integer"},
    {POOL_OPEN
     "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:9001\"; weight = 1001; }\n"
     "  );\n" POOL_CLOSE,
     5, "pools[0].backends[0].weight must be between 0 and 1000 (got 1001)"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:9001\"; weight = -1; }\n"
               "  );\n" POOL_CLOSE,
     5, "pools[0].backends[0].weight must be between 0 and 1000 (got -1)"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:9001\"; },\n"
               "    { name = \"b\"; address = \"127.0.0.1:9002\"; },\n"
               "    { address = \"127.0.0.1:9003\";\n      name = \"a\"; }\n  );\n" POOL_CLOSE,
     8, "duplicate backend name 'a' in pools[0].backends (also at line 5)"},
    {POOL_OPEN
     "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:0\"; }\n  );\n" POOL_CLOSE,
     5, "pools[0].backends[0].address '127.0.0.1:0': port must be between 1 and 65535"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; address = \"[::1:9001\"; }\n  );\n" POOL_CLOSE,
     5, "missing ']'"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; address = \"::1:9001\"; }\n  );\n" POOL_CLOSE,
     5, "IPv6 addresses must be in brackets"},
    {POOL_OPEN
     "  backends = (\n    { name = \"a\"; address = \"db.internal:5432\"; }\n  );\n" POOL_CLOSE,
     5, "'db.internal:5432': host must be a numeric IPv4 address"},
    {POOL_OPEN
     "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:http\"; }\n  );\n" POOL_CLOSE,
     5, "port must be a number"},
    {POOL_OPEN
     "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:9001\"; group = \"1blue\"; }\n"
     "  );\n" POOL_CLOSE,
     5, "pools[0].backends[0].group must start with a letter"},
    {POOL_OPEN
     "  backends = (\n    { name = \"a b\"; address = \"127.0.0.1:9001\"; }\n  );\n" POOL_CLOSE,
     5, "pools[0].backends[0].name may contain only"},
    {POOL_OPEN "  backends = (\n    { name = \"a\"; address = \"127.0.0.1:9001\"; port = 1; }\n"
               "  );\n" POOL_CLOSE,
     5, "unknown key 'port' in pools[0].backends[0]"},
    {POOL_OPEN "  backends = ( \"127.0.0.1:9001\" );\n" POOL_CLOSE, 4,
     "pools[0].backends[0] must be a group"},
    /* shares */
    {BLUE_GREEN "  shares = { blue = 50; green = 50;\n    red = 0; };\n" POOL_CLOSE, 9,
     "pools[0].shares names group 'red' but no backend of the pool is in it"},
    {BLUE_GREEN "  shares = {\n    blue = 80; green = 10; };\n" POOL_CLOSE, 8,
     "pools[0].shares must add up to 100 (got 90)"},
    {BLUE_GREEN "  shares = { blue = 101; green = 0; };\n" POOL_CLOSE, 8,
     "pools[0].shares.blue must be between 0 and 100 (got 101)"},
    {BLUE_GREEN "  shares = { blue = 110;\n    green = -10; };\n" POOL_CLOSE, 8,
     "pools[0].shares.blue must be between 0 and 100"},
    {BLUE_GREEN "  shares = { blue = 100;\n    green = -10; };\n" POOL_CLOSE, 9,
     "pools[0].shares.green must be between 0 and 100 (got -10)"},
    {BLUE_GREEN "  shares = { blue = 100; };\n" POOL_CLOSE, 8,
     "pools[0].shares has no share for group 'green'"},
    {BLUE_GREEN "  shares = { blue = \"50\"; green = 50; };\n" POOL_CLOSE, 8,
     "pools[0].shares.blue must be an integer"},
    {BLUE_GREEN "  shares = ( 50, 50 );\n" POOL_CLOSE, 8, "pools[0].shares must be a group"},
    {POOL_OPEN
     "  backends = (\n    { name = \"b1\"; address = \"127.0.0.1:9001\"; group = \"blue\"; },\n"
     "    { name = \"g1\"; address = \"127.0.0.1:9002\"; group = \"green\"; weight = 0; }\n"
     "  );\n"
     "  shares = { blue = 75;\n    green = 25; };\n" POOL_CLOSE,
     9, "pools[0].shares gives group 'green' 25% but all its backends have weight 0"},
    {POOL_OPEN "  shares = { blue = 100; };\n" POOL_CLOSE, 4, "names group 'blue' but no backend"},
    {POOL_OPEN "  backends = ( { name = \"a\"; address = \"127.0.0.1:9001\"; } );\n"
               "  shares = { blue = 100; };\n" POOL_CLOSE,
     5, "pools[0].shares names group 'blue'"},
    /* routes (BASE: lines 1-2; the routes list opens on line 3) */
    {BASE "routes = { name = \"r\"; };\n", 3, "routes must be a list of groups"},
    {BASE "routes = (\n  { pool = \"api\"; }\n);\n", 4, "missing required key 'name' in routes[0]"},
    {BASE "routes = (\n  { name = \"r\"; }\n);\n", 4, "missing required key 'pool' in routes[0]"},
    {BASE "routes = (\n  { name = \"r s\"; pool = \"api\"; }\n);\n", 4,
     "routes[0].name may contain only letters, digits"},
    {BASE "routes = (\n  { name = \"r\";\n    pool = \"web\"; }\n);\n", 5,
     "routes[0].pool: unknown pool 'web'"},
    {BASE
     "routes = (\n  { name = \"r\"; pool = \"api\"; },\n  { name = \"r\"; pool = \"api\"; }\n);\n",
     5, "duplicate route name 'r' (also at line 4)"},
    {BASE "routes = (\n  { name = \"r\"; pool = \"api\"; color = 1; }\n);\n", 4,
     "unknown key 'color' in routes[0]"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path = \"/a\";\n"
          "    path_prefix = \"/b\"; }; } );\n",
     4, "routes[0].match may set path or path_prefix, not both"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path = \"a\"; }; } );\n", 4,
     "routes[0].match.path must start with '/'"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path_prefix = \"\"; }; } );\n",
     4, "routes[0].match.path_prefix must not be empty"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { uri = \"/a\"; }; } );\n", 4,
     "unknown key 'uri' in routes[0].match"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { methods = (); }; } );\n", 4,
     "routes[0].match.methods must name at least one method"},
    {BASE
     "routes = ( { name = \"r\"; pool = \"api\";\n  match = { methods = ( \"GE T\" ); }; } );\n",
     4, "routes[0].match.methods[0] must be a valid HTTP token"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\"; match = {\n"
          "  headers = ( { name = \"X-A\"; } ); }; } );\n",
     4, "missing required key 'value' in routes[0].match.headers[0]"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\"; match = {\n"
          "  headers = { name = \"X-A\"; value = \"1\"; }; }; } );\n",
     4, "routes[0].match.headers must be a list of groups"},
    {BASE
     "routes = ( { name = \"r\"; pool = \"api\";\n  match = { host = \"a..example.com\"; }; } );\n",
     4, "routes[0].match: host has an empty label"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { host = \"api.*.com\"; }; } );\n",
     4, "routes[0].match: host"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path = \"/a//b\"; }; } );\n", 4,
     "routes[0].match.path is not canonical"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path = \"/%7Eu\"; }; } );\n", 4,
     "routes[0].match.path is not canonical"},
    {BASE
     "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path_prefix = \"/a%2fb\"; }; } );\n",
     4, "routes[0].match.path_prefix can never match"},
    {BASE
     "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path_prefix = \"/a%3fb\"; }; } );\n",
     4, "routes[0].match.path_prefix is not canonical"},
    {BASE
     "routes = ( { name = \"r\"; pool = \"api\";\n  match = { path_prefix = \"/a/./b\"; }; } );\n",
     4, "routes[0].match.path_prefix is not canonical"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\"; match = {\n"
          "  headers = ( { name = \"X-A\"; value = \"1\"; }, { name = \"x-a\"; value = \"2\"; } );"
          " }; } );\n",
     3, "routes[0].match: header \"x-a\" is listed twice"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  timeouts = { upstream_response_ms = 0; };"
          " } );\n",
     4, "routes[0].timeouts.upstream_response_ms must be >= 1 (got 0)"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  timeouts = { connect_ms = 5; }; } );\n", 4,
     "unknown key 'connect_ms' in routes[0].timeouts"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  body_bytes = -1; } );\n", 4,
     "routes[0].body_bytes must be >= 0 (got -1)"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  hold_ms = -5; } );\n", 4,
     "routes[0].hold_ms must be >= 0 (got -5)"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  retries = { count = 11; }; } );\n", 4,
     "routes[0].retries.count must be between 0 and 10 (got 11)"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n  retries = {\n    cap_ms = 5; }; } );\n", 5,
     "routes[0].retries.cap_ms (5) must be >= base_ms (10, with the pool's)"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\"; match = { host = \"a\"; };\n"
          "  rewrite_prefix = \"/v1\"; } );\n",
     4, "routes[0].rewrite_prefix needs match.path or match.path_prefix"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\"; match = { path = \"/a\"; };\n"
          "  rewrite_prefix = \"v1\"; } );\n",
     4, "routes[0].rewrite_prefix must start with '/'"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n"
          "  request_headers = { set = ( { name = \"X:Y\"; value = \"1\"; } ); }; } );\n",
     4, "routes[0].request_headers.set[0].name must be a valid HTTP token"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n"
          "  request_headers = { set = ( { name = \"X-Y\"; value = \"a\\nb\"; } ); }; } );\n",
     4, "routes[0].request_headers.set[0].value may not contain control characters"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n"
          "  request_headers = { remove = ( \"X Y\" ); }; } );\n",
     4, "routes[0].request_headers.remove[0] must be a valid HTTP token"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n"
          "  request_headers = { add = (); }; } );\n",
     4, "unknown key 'add' in routes[0].request_headers"},
    {BASE
     "routes = ( { name = \"r\"; pool = \"api\";\n"
     "  request_headers = { set = ( { name = \"Content-Length\"; value = \"1\"; } ); }; } );\n",
     4, "routes[0].request_headers.set[0].name is a framing or hop-by-hop field"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n"
          "  request_headers = { remove = ( \"X-A\", \"transfer-encoding\" ); }; } );\n",
     4, "routes[0].request_headers.remove[1] is a framing or hop-by-hop field"},
    {BASE "routes = ( { name = \"r\"; pool = \"api\";\n"
          "  request_headers = { remove = ( \"Host\" ); }; } );\n",
     4, "routes[0].request_headers.remove[0] cannot be removed (a request needs one)"},
    /* a listener without a pool needs routes */
    {"listen = (\n  { address = \"127.0.0.1:80\"; }\n);\n" POOLS, 2,
     "missing required key 'pool' in listen[0] (only a config with routes may leave it out)"},
    /* discover (issue 20): entry-wide errors name the entry's line (5), a key's its own (6) */
    {DISC_OPEN "    { name = \"a\"; dns = \"api.internal:80\";\n"
               "      srv = \"_http._tcp.api.internal\"; }\n" DISC_CLOSE,
     5, "pools[0].discover[0] " DISC_BOTH},
    {DISC_OPEN "    { name = \"a\";\n      group = \"blue\"; }\n" DISC_CLOSE, 5,
     "pools[0].discover[0] " DISC_BOTH},
    {DISC_OPEN "    { dns = \"api.internal:80\"; }\n" DISC_CLOSE, 5,
     "missing required key 'name' in pools[0].discover[0]"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"api.internal\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns must be NAME:PORT, e.g. \"api.internal:8080\" (got "
     "\"api.internal\")"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \":80\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns must be NAME:PORT"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"api.internal:0\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: port must be between 1 and 65535 (got \"0\")"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"api.internal:70000\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: port must be between 1 and 65535 (got \"70000\")"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"api.internal:http\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: port must be between 1 and 65535 (got \"http\")"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"api.internal:\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: port must be between 1 and 65535 (got \"\")"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"127.0.0.1:80\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: '127.0.0.1' is an address, not a name: list it under backends"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"[::1]:80\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: '[::1]' must be a DNS name (letters, digits, '.', '-', '_')"},
    {DISC_OPEN "    { name = \"a\";\n      dns = \"api internal:80\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns: 'api internal' must be a DNS name"},
    {DISC_OPEN "    { name = \"a\";\n      dns = 8080; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].dns must be a string"},
    {DISC_OPEN "    { name = \"a\";\n      srv = \"10.0.0.1\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].srv is an address, not a name: list it under backends"},
    {DISC_OPEN "    { name = \"a\";\n      srv = \"_http._tcp/api\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].srv must be a DNS name"},
    {DISC_OPEN
     "    { dns = \"api.internal:80\";\n      name = \"abcdefghijklmnopqrstuvwxy\"; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].name must be at most 24 bytes"},
    {DISC_OPEN "    { dns = \"api.internal:80\";\n      name = \"a b\"; }\n" DISC_CLOSE, 6,
     "pools[0].discover[0].name may contain only"},
    {DISC_OPEN
     "    { name = \"a\"; dns = \"api.internal:80\";\n      group = \"1blue\"; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].group must start with a letter"},
    {DISC_OPEN
     "    { name = \"a\"; dns = \"api.internal:80\";\n      group = \"blue.2\"; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].group may contain only letters, digits, '_' and '-'"},
    {DISC_OPEN
     "    { name = \"a\"; dns = \"api.internal:80\";\n      weight = 1001; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].weight must be between 0 and 1000 (got 1001)"},
    {DISC_OPEN "    { name = \"a\"; dns = \"api.internal:80\";\n      weight = -1; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].weight must be between 0 and 1000 (got -1)"},
    {DISC_OPEN "    { name = \"a\"; dns = \"api.internal:80\";\n      confirm = 0; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].confirm must be between 1 and 100 (got 0)"},
    {DISC_OPEN
     "    { name = \"a\"; dns = \"api.internal:80\";\n      max_backends = 0; }\n" DISC_CLOSE,
     6, "pools[0].discover[0].max_backends must be between 1 and 10000 (got 0)"},
    {DISC_OPEN "    { name = \"a\"; dns = \"api.internal:80\";\n      port = 80; }\n" DISC_CLOSE, 6,
     "unknown key 'port' in pools[0].discover[0]"},
    {POOL_OPEN "  discover = { name = \"a\"; dns = \"api.internal:80\"; };\n" POOL_CLOSE, 4,
     "pools[0].discover must be a list of groups"},
    /* discover names are unique across the file: the error names the other line */
    {LISTEN "pools = ( { name = \"api\";\n"
            "  discover = ( { name = \"web\"; dns = \"a.internal:80\"; } ); },\n"
            "  { name = \"b\";\n"
            "  discover = ( { name = \"x\"; srv = \"_h._tcp.b.internal\"; },\n"
            "    { name = \"web\"; dns = \"c.internal:80\"; } ); } );\n",
     6, "duplicate discover name 'web' (also at line 3): discover names are unique across pools"},
    {DISC_OPEN "    { name = \"web\"; dns = \"a.internal:80\"; },\n"
               "    { name = \"web\"; srv = \"_h._tcp.b.internal\"; }\n" DISC_CLOSE,
     6, "duplicate discover name 'web' (also at line 5)"},
    /* a discover entry's group needs a share like a backend's */
    {BLUE_GREEN "  discover = ( { name = \"c\"; dns = \"c.internal:80\"; group = \"canary\"; } );\n"
                "  shares = { blue = 50; green = 50; };\n" POOL_CLOSE,
     9, "pools[0].shares has no share for group 'canary' (every group with backends needs one)"},
    {POOL_OPEN "  shares = { blue = 100; };\n"
               "  discover = ( { name = \"d\"; dns = \"d.internal:80\"; group = \"blue\"; },\n"
               "    { name = \"e\"; dns = \"e.internal:80\"; } );\n" POOL_CLOSE,
     4, "pools[0].shares has no share for group 'default'"},
    /* resolvers */
    {BASE "resolvers = {\n  interval_ms = 5000;\n  min_interval_ms = 6000; };\n", 3,
     "resolvers.min_interval_ms (6000) must be <= interval_ms (5000)"},
    {BASE "resolvers = { servers = (\n  \"127.0.0.1\",\n  \"dns.example\" ); };\n", 5,
     "resolvers.servers[1] must be a nameserver's address: 'dns.example:53': host must be a "
     "numeric IPv4 address"},
    {BASE "resolvers = { servers = (\n  \"127.0.0.1:0\" ); };\n", 4,
     "resolvers.servers[0] must be a nameserver's address: '127.0.0.1:0': port must be between 1 "
     "and 65535"},
    {BASE "resolvers = { servers = (\n  \"[::1\" ); };\n", 4,
     "resolvers.servers[0] must be a nameserver's address: '[::1': missing ']'"},
    {BASE "resolvers = { servers = (\n  \"\" ); };\n", 4, "resolvers.servers[0] must not be empty"},
    {BASE "resolvers = { servers = (\n  53 ); };\n", 4, "resolvers.servers[0] must be a string"},
    {BASE "resolvers = {\n  servers = \"127.0.0.1\"; };\n", 4,
     "resolvers.servers must be a list of strings"},
    {BASE "resolvers = {\n  timeout_ms = 5; };\n", 4,
     "resolvers.timeout_ms must be between 10 and 60000 (got 5)"},
    {BASE "resolvers = {\n  confirm = 0; };\n", 4,
     "resolvers.confirm must be between 1 and 100 (got 0)"},
    {BASE "resolvers = {\n  max_backends = 10001; };\n", 4,
     "resolvers.max_backends must be between 1 and 10000 (got 10001)"},
    {BASE "resolvers = {\n  retries = 3; };\n", 4, "unknown key 'retries' in resolvers"},
};

/* The routes block of issue 17's contract, verbatim, with the pools it names. */
static const char routes_conf[] =
    "routes = (\n"
    "  { name = \"payments\"; pool = \"payments\";\n"
    "    match = { host = \"api.example.com\"; path_prefix = \"/payments\"; }; },\n"
    "  { name = \"users-v2\"; pool = \"users-v2\";\n"
    "    match = { path_prefix = \"/users\"; methods = ( \"GET\", \"HEAD\" );\n"
    "              headers = ( { name = \"X-Api-Version\"; value = \"2\"; } ); }; },\n"
    "  { name = \"login\"; pool = \"auth\"; match = { path = \"/login\"; };\n"
    "    timeouts = { upstream_response_ms = 5000; }; body_bytes = 65536;\n"
    "    retries = { count = 0; }; rewrite_prefix = \"/v1/login\"; }\n"
    ");\n"
    "listen = ( { address = \"0.0.0.0:8080\"; pool = \"api\"; } );   # pool: the fallback\n"
    "pools = ( { name = \"api\"; }, { name = \"payments\"; body_bytes = 100; hold_ms = 7; },\n"
    "  { name = \"users-v2\"; retries = { count = 3; base_ms = 20; cap_ms = 400; }; },\n"
    "  { name = \"auth\"; } );\n"
    "limits = { body_bytes = 1000; };\n";

/* The values a request on route r gets with the pool its configuration names. */
static struct conf_route_eff eff(const struct veer_conf *c, const struct conf_route *r)
{
    struct conf_route_eff e;

    conf_route_effective(c, r, &c->pools[r->pool_index], &e);
    return e;
}

START_TEST(test_routes_of_the_contract_load)
{
    struct veer_conf *c = load_ok(routes_conf);
    const struct conf_route *r;

    ck_assert_int_eq(c->nroutes, 3);
    ck_assert_ptr_nonnull(c->routes_table);
    ck_assert_uint_eq(routes_count(c->routes_table), 3);
    ck_assert_str_eq(routes_name(c->routes_table, 2), "login");
    r = &c->routes[0];
    ck_assert_str_eq(r->name, "payments");
    ck_assert_int_eq(r->line, 2);
    ck_assert_int_eq(r->pool_index, 1);
    ck_assert_str_eq(r->host, "api.example.com");
    ck_assert_str_eq(r->path_prefix, "/payments");
    ck_assert_ptr_null(r->path);
    ck_assert_int_eq(r->methods.n, 0);
    ck_assert_int_eq(r->nheaders, 0);
    /* nothing overridden: the pool's, then the globals */
    ck_assert_int_eq(r->upstream_response_ms, -1);
    ck_assert_int_eq(eff(c, r).body_bytes, 100);
    ck_assert_int_eq(eff(c, r).hold_ms, 7);
    ck_assert_int_eq(eff(c, r).retries.count, 2);
    ck_assert_ptr_null(r->rewrite_prefix);
    r = &c->routes[1];
    ck_assert_int_eq(r->pool_index, 2);
    ck_assert_int_eq(r->methods.n, 2);
    ck_assert_str_eq(r->methods.v[1], "HEAD");
    ck_assert_int_eq(r->nheaders, 1);
    ck_assert_str_eq(r->headers[0].name, "X-Api-Version");
    ck_assert_str_eq(r->headers[0].value, "2");
    ck_assert_int_eq(eff(c, r).body_bytes, 1000);
    ck_assert_int_eq(eff(c, r).hold_ms, 0);
    ck_assert_int_eq(eff(c, r).retries.count, 3);
    ck_assert_int_eq(eff(c, r).retries.base_ms, 20);
    ck_assert_int_eq(eff(c, r).retries.cap_ms, 400);
    r = &c->routes[2];
    ck_assert_int_eq(r->pool_index, 3);
    ck_assert_str_eq(r->path, "/login");
    ck_assert_int_eq(r->upstream_response_ms, 5000);
    ck_assert_int_eq(r->body_bytes, 65536);
    ck_assert_int_eq(eff(c, r).body_bytes, 65536);
    ck_assert_int_eq(r->retries_set.count, 0);
    ck_assert_int_eq(r->retries_set.base_ms, -1);
    ck_assert_int_eq(eff(c, r).retries.count, 0);
    ck_assert_int_eq(eff(c, r).retries.base_ms, 10); /* the rest from the pool */
    ck_assert_int_eq(eff(c, r).retries.budget_percent, 20);
    ck_assert_str_eq(r->rewrite_prefix, "/v1/login");
    ck_assert_int_eq(c->listens[0].pool_index, 0);
    conf_free(c);
}
END_TEST

/*
 * After a route set the route's requests go to another pool: the keys the
 * route sets stay, the others are that pool's; a base over the route's cap
 * from the other pool lifts the cap to it.
 */
START_TEST(test_route_effective_with_another_pool)
{
    struct veer_conf *c =
        load_ok("listen = ( { address = \"127.0.0.1:0\"; pool = \"a\"; } );\n"
                "pools = ( { name = \"a\"; hold_ms = 5; body_bytes = 10;\n"
                "            retries = { count = 1; base_ms = 10; cap_ms = 50; }; },\n"
                "          { name = \"b\"; hold_ms = 9; retries = { count = 4; base_ms = 80;\n"
                "            cap_ms = 900; budget_percent = 7; }; } );\n"
                "limits = { body_bytes = 33; };\n"
                "routes = ( { name = \"r\"; pool = \"a\"; retries = { cap_ms = 60; }; } );\n");
    struct conf_route_eff e;

    conf_route_effective(c, &c->routes[0], &c->pools[0], &e);
    ck_assert_int_eq(e.hold_ms, 5);
    ck_assert_int_eq(e.body_bytes, 10);
    ck_assert_int_eq(e.retries.count, 1);
    ck_assert_int_eq(e.retries.cap_ms, 60);
    conf_route_effective(c, &c->routes[0], &c->pools[1], &e);
    ck_assert_int_eq(e.hold_ms, 9);
    ck_assert_int_eq(e.body_bytes, 33); /* b sets none: the global limit */
    ck_assert_int_eq(e.retries.count, 4);
    ck_assert_int_eq(e.retries.base_ms, 80);
    ck_assert_int_eq(e.retries.cap_ms, 80); /* the route's 60 under b's base 80: lifted */
    ck_assert_int_eq(e.retries.budget_percent, 7);
    conf_free(c);
}
END_TEST

START_TEST(test_route_request_headers_and_hold)
{
    struct veer_conf *c =
        load_ok("listen = ( { address = \"127.0.0.1:0\"; } );\n"
                "pools = ( { name = \"api\"; hold_ms = 5; body_bytes = 0; } );\n"
                "limits = { body_bytes = 50; };\n"
                "routes = ( { name = \"r\"; pool = \"api\"; hold_ms = 300;\n"
                "  request_headers = { set = ( { name = \"X-Route\"; value = \"r 1\"; },\n"
                "                              { name = \"Host\"; value = \"inner\"; } );\n"
                "                      remove = ( \"X-Debug\", \"Cookie\" ); }; } );\n");
    const struct conf_route *r = &c->routes[0];

    /* a listener may leave its pool out when routes exist */
    ck_assert_ptr_null(c->listens[0].pool);
    ck_assert_int_eq(c->listens[0].pool_index, -1);
    ck_assert_int_eq(r->hold_ms, 300);
    ck_assert_int_eq(eff(c, r).hold_ms, 300);
    ck_assert_int_eq(eff(c, r).body_bytes, 0); /* the pool's 0: unlimited, over the global 50 */
    ck_assert_int_eq(r->nset_headers, 2);
    ck_assert_str_eq(r->set_headers[0].name, "X-Route");
    ck_assert_str_eq(r->set_headers[0].value, "r 1");
    ck_assert_int_eq(r->set_headers[1].line, 6);
    ck_assert_int_eq(r->remove_headers.n, 2);
    ck_assert_str_eq(r->remove_headers.v[1], "Cookie");
    ck_assert_ptr_null(r->host);
    conf_free(c);
}
END_TEST

START_TEST(test_no_routes_means_no_table)
{
    struct veer_conf *c = load_ok(BASE "routes = ();\n");

    ck_assert_int_eq(c->nroutes, 0);
    ck_assert_ptr_null(c->routes_table);
    conf_free(c);
    c = load_ok(BASE);
    ck_assert_int_eq(c->nroutes, 0);
    ck_assert_ptr_null(c->routes_table);
    conf_free(c);
}
END_TEST

START_TEST(test_bad_config_is_refused_with_file_and_line)
{
    expect_error(bad_confs[_i].text, bad_confs[_i].line, bad_confs[_i].msg);
}
END_TEST

START_TEST(test_shipped_reference_config_loads)
{
    char err[512] = "";
    struct veer_conf *c = conf_load(SRCDIR "/conf/veer.conf", err, sizeof(err));

    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_ge(c->nlistens, 1);
    ck_assert_ptr_nonnull(conf_find_pool(c, "api"));
    ck_assert_str_eq(c->admin.socket, "/run/veer/admin.sock");
    ck_assert_str_eq(c->state_file, "/var/lib/veer/state");
    ck_assert_str_eq(c->audit_log, "/var/log/veer/audit.log");
    ck_assert_str_eq(mod_str(c, "access_log"), "/var/log/veer/access.log");
    ck_assert(c->cluster.enabled);
    ck_assert_int_eq(c->nroutes, 1);
    ck_assert_str_eq(c->routes[0].pool, "static");
    conf_free(c);
}
END_TEST

START_TEST(test_shipped_demo_config_loads)
{
    char err[512] = "";
    struct veer_conf *c = conf_load(SRCDIR "/conf/demo.conf", err, sizeof(err));
    const struct conf_pool *p;

    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->workers, 2);
    ck_assert_int_eq(c->nlistens, 1);
    ck_assert_str_eq(c->listens[0].addr.text, "127.0.0.1:8080");
    ck_assert_str_eq(c->admin.socket, "/tmp/veer-demo/admin.sock");
    p = conf_find_pool(c, "api");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(p->balance, BALANCE_SWRR);
    ck_assert(!p->has_health);
    ck_assert_int_eq(p->nbackends, 2);
    ck_assert_str_eq(p->backends[0].name, "blue-1");
    ck_assert_str_eq(p->backends[0].addr.text, "127.0.0.1:9001");
    ck_assert_int_eq(p->backends[0].weight, 3);
    ck_assert_str_eq(p->backends[0].group, "blue");
    ck_assert_str_eq(p->backends[1].name, "green-1");
    ck_assert_str_eq(p->backends[1].addr.text, "127.0.0.1:9002");
    ck_assert_int_eq(p->backends[1].weight, 1);
    ck_assert_str_eq(p->backends[1].group, "green");
    ck_assert(p->has_shares);
    ck_assert_int_eq(p->nshares, 2);
    ck_assert_str_eq(p->shares[0].group, "blue");
    ck_assert_int_eq(p->shares[0].share, 75);
    ck_assert_str_eq(p->shares[1].group, "green");
    ck_assert_int_eq(p->shares[1].share, 25);
    conf_free(c);
}
END_TEST

START_TEST(test_missing_file_names_the_os_error)
{
    char err[512] = "";

    ck_assert_ptr_null(conf_load("/nonexistent/veer.conf", err, sizeof(err)));
    ck_assert_str_eq(err,
                     "/nonexistent/veer.conf:0: cannot read config: No such file or directory");
}
END_TEST

START_TEST(test_error_in_include_names_the_included_file)
{
    char *inc = write_tmp("workers = 2;\n\nbogus = 1;\n");
    char main_text[256], err[512] = "", prefix[300];
    char *path;
    struct veer_conf *c;

    snprintf(main_text, sizeof(main_text), BASE "@include \"%s\"\n", inc);
    path = write_tmp(main_text);
    c = conf_load(path, err, sizeof(err));
    snprintf(prefix, sizeof(prefix), "%s:3: unknown key 'bogus'", inc);
    unlink(path);
    unlink(inc);
    free(path);
    free(inc);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(err, prefix);
}
END_TEST

/* The number of lines of a text that ends with a newline. */
static int lines(const char *text)
{
    int n = 0;

    for (; *text; text++)
        n += *text == '\n';
    return n;
}

/*
 * An @include of a directory made libconfig 1.5's scanner call exit()
 * ("input in flex scanner failed"): veer died, a reload took the running
 * process down. Now it is an error at the @include's line, also when the
 * directory is included from an included file; one in a comment is not.
 */
START_TEST(test_include_of_a_directory_is_an_error_at_its_line)
{
    char dir[] = "/tmp/veer-conf-dir-XXXXXX";
    char *inc, *path, text[512], err[512] = "", want[400];
    struct veer_conf *c;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(text, sizeof(text), BASE "workers = 2;\n  @include \"%s\"\n", dir);
    snprintf(want, sizeof(want), "@include \"%s\": is a directory, not a file", dir);
    expect_error_exact(text, lines(text), want); /* the @include is on the last line */

    /* one level down: the error names the included file and its line */
    snprintf(text, sizeof(text), "workers = 2;\n\n@include \"%s\"\n", dir);
    inc = write_tmp(text);
    snprintf(text, sizeof(text), BASE "/* @include \"%s\" */\n@include \"%s\"\n", dir, inc);
    path = write_tmp(text);
    err[0] = '\0';
    c = conf_load(path, err, sizeof(err));
    snprintf(want, sizeof(want), "%s:3: @include \"%s\": is a directory, not a file", inc, dir);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(err, want);
    unlink(path);
    unlink(inc);
    free(path);
    free(inc);

    /* a file that includes itself 8 times: libconfig's "too deep", at once (not 8^10 scans) */
    {
        char self[] = "/tmp/veer-conf-self-XXXXXX";
        int fd = mkstemp(self);
        FILE *f;

        ck_assert_int_ge(fd, 0);
        f = fdopen(fd, "w");
        for (int i = 0; i < 8; i++)
            fprintf(f, "@include \"%s\"\n", self);
        fclose(f);
        err[0] = '\0';
        c = conf_load(self, err, sizeof(err));
        ck_assert_ptr_null(c);
        ck_assert_msg(strstr(err, "include file nesting too deep") != NULL, "%s", err);
        unlink(self);
    }

    /* after a string that spans two lines, the line is still the @include's */
    snprintf(text, sizeof(text), BASE "workers = 2;\nx_note = \"a\nb\";\n@include \"%s\"\n", dir);
    snprintf(want, sizeof(want), "@include \"%s\": is a directory, not a file", dir);
    expect_error_exact(text, lines(text), want);

    /* commented out, it is not read: the config loads */
    snprintf(text, sizeof(text), BASE "/*\n@include \"%s\"\n*/\n# @include \"%s\"\n", dir, dir);
    conf_free(load_ok(text));
    rmdir(dir);
}
END_TEST

START_TEST(test_error_in_a_module_key_of_an_include_names_the_included_file)
{
    char *inc = write_tmp("workers = 2;\nhealth_endpoints = {\n  prefix = \"api\"; };\n");
    char main_text[256], err[512] = "", want[400];
    char *path;
    struct veer_conf *c;

    snprintf(main_text, sizeof(main_text), BASE "@include \"%s\"\n", inc);
    path = write_tmp(main_text);
    c = conf_load(path, err, sizeof(err));
    snprintf(want, sizeof(want), "%s:3: health_endpoints.prefix must start with '/' (got \"api\")",
             inc);
    unlink(path);
    unlink(inc);
    free(path);
    free(inc);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(err, want);
}
END_TEST

extern const struct veer_module module_access_log, module_health_endpoints, module_maintenance;

START_TEST(test_module_keys_fill_their_modules_sections)
{
    struct veer_conf *c = load_ok(BASE "access_log = \"/l\";\n"
                                       "health_endpoints = { prefix = \"/p\"; enabled = false; };\n"
                                       "maintenance = { retry_after = 7; allow = ( \"/m\" ); };\n");
    const void *al = conf_section(c, &module_access_log.conf);
    const void *he = conf_section(c, &module_health_endpoints.conf);
    const void *ma = conf_section(c, &module_maintenance.conf);
    const struct conf_section other = {.keys = NULL};

    /* One object per module, each holding its own keys. */
    ck_assert_ptr_nonnull(al);
    ck_assert_ptr_nonnull(he);
    ck_assert_ptr_nonnull(ma);
    ck_assert_ptr_ne(al, he);
    ck_assert_ptr_ne(he, ma);
    ck_assert_ptr_ne(al, ma);
    ck_assert_ptr_null(conf_section(c, &other));
    ck_assert_ptr_eq(conf_value(c, "access_log"), al);
    ck_assert_ptr_eq(conf_value(c, "health_endpoints"), he);
    ck_assert_ptr_eq(conf_value(c, "maintenance.allow"), ma);
    ck_assert_str_eq(mod_str(c, "access_log"), "/l");
    ck_assert_str_eq(mod_str(c, "health_endpoints.prefix"), "/p");
    ck_assert(!mod_bool(c, "health_endpoints.enabled"));
    ck_assert_int_eq(mod_strs(c, "maintenance.allow")->n, 1);
    ck_assert_str_eq(mod_strs(c, "maintenance.allow")->v[0], "/m");
    /* maintenance.retry_after beside it stays conf.c's (the control plane reads it). */
    ck_assert_int_eq(c->maintenance.retry_after, 7);
    ck_assert_ptr_null(conf_value(c, "maintenance.retry_after"));
    /* Not a module key, or not there. */
    ck_assert_ptr_null(conf_value(c, "workers"));
    ck_assert_ptr_null(conf_value(c, "allow"));
    ck_assert_ptr_null(conf_value(c, "health_endpoints.path"));
    ck_assert_ptr_null(conf_value(c, "health_endpoints.prefix.x"));
    ck_assert_ptr_null(conf_value(c, "access_log.x"));
    ck_assert_ptr_null(conf_value(c, "maintenance"));
    conf_free(c);
}
END_TEST

START_TEST(test_each_config_has_its_own_module_objects)
{
    struct veer_conf *a = load_ok(BASE "maintenance = { allow = ( \"/a\" ); };\n");
    struct veer_conf *b = load_ok(BASE);

    ck_assert_ptr_ne(conf_section(a, &module_maintenance.conf),
                     conf_section(b, &module_maintenance.conf));
    ck_assert_str_eq(mod_strs(a, "maintenance.allow")->v[0], "/a");
    /* b has the default, which a's key replaced (and freed) in a's object only. */
    ck_assert_str_eq(mod_strs(b, "maintenance.allow")->v[0], "/admin");
    conf_free(a);
    ck_assert_str_eq(mod_strs(b, "maintenance.allow")->v[0], "/admin");
    conf_free(b);
}
END_TEST

START_TEST(test_success_leaves_err_untouched)
{
    char err[16] = "untouched";
    char *path = write_tmp(BASE);
    struct veer_conf *c = conf_load(path, err, sizeof(err));

    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->path, path);
    ck_assert_str_eq(err, "untouched");
    conf_free(c);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(test_error_without_buffer_and_truncation_are_safe)
{
    char small[12];
    char *path = write_tmp(BASE "foo = 1;\n");

    ck_assert_ptr_null(conf_load(path, NULL, 0));
    ck_assert_ptr_null(conf_load(path, small, sizeof(small)));
    ck_assert_int_eq(strlen(small), sizeof(small) - 1);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(test_find_pool_by_name)
{
    struct veer_conf *c = load_ok(LISTEN "pools = ( { name = \"web\"; }, { name = \"api\"; } );\n");

    ck_assert_ptr_eq(conf_find_pool(c, "api"), &c->pools[1]);
    ck_assert_ptr_eq(conf_find_pool(c, "web"), &c->pools[0]);
    ck_assert_ptr_null(conf_find_pool(c, "nope"));
    ck_assert_int_eq(c->listens[0].pool_index, 1);
    conf_free(c);
}
END_TEST

START_TEST(test_conf_free_accepts_null)
{
    conf_free(NULL);
}
END_TEST

START_TEST(test_wide_integers_with_l_suffix_load)
{
    struct veer_conf *c = load_ok(LISTEN "limits = { body_bytes = 3000000000L; };\n"
                                         "pools = ( { name = \"api\"; body_bytes = 0x100000000L; "
                                         "slow_start_ms = 5L; } );\n");

    ck_assert_int_eq(c->limits.body_bytes, 3000000000LL);
    ck_assert_int_eq(c->pools[0].body_bytes, 0x100000000LL);
    ck_assert_int_eq(c->pools[0].slow_start_ms, 5);
    conf_free(c);
}
END_TEST

START_TEST(test_wide_integer_scan_ignores_comments_strings_and_floats)
{
    struct veer_conf *c = load_ok("# 99999999999 in a comment\n"
                                  "/* 99999999999\n 88888888888 */ // 77777777777\n" BASE
                                  "state_file = \"/var/lib/99999999999\";\n"
                                  "workers = 0x2;\n"
                                  "limits = { max_connections = 2147483647; };\n");

    ck_assert_int_eq(c->workers, 2);
    conf_free(c);
}
END_TEST

START_TEST(test_int_limits_are_exact)
{
    struct veer_conf *c = load_ok(BASE "limits = { max_connections = 2147483647;\n"
                                       "  header_count = 10000; request_line_bytes = 64;\n"
                                       "  header_bytes = 256; };\n"
                                       "workers = 256;\n");

    ck_assert_int_eq(c->limits.max_connections, 2147483647);
    ck_assert_int_eq(c->limits.header_count, 10000);
    ck_assert_int_eq(c->limits.request_line_bytes, 64);
    ck_assert_int_eq(c->limits.header_bytes, 256);
    ck_assert_int_eq(c->workers, 256);
    conf_free(c);
    c = load_ok(BASE "limits = { request_line_bytes = 1048576; header_bytes = 1048576; };\n");
    ck_assert_int_eq(c->limits.request_line_bytes, 1048576);
    ck_assert_int_eq(c->limits.header_bytes, 1048576);
    conf_free(c);
}
END_TEST

START_TEST(test_pool_without_backends_is_allowed)
{
    struct veer_conf *c =
        load_ok(LISTEN "pools = ( { name = \"api\"; backends = (); },\n"
                       "  { name = \"b\"; backends = []; }, { name = \"c\"; } );\n");

    ck_assert_int_eq(c->npools, 3);
    ck_assert_int_eq(c->pools[0].nbackends, 0);
    ck_assert_int_eq(c->pools[1].nbackends, 0);
    ck_assert_int_eq(c->pools[2].nbackends, 0);
    conf_free(c);
}
END_TEST

START_TEST(test_backend_defaults_and_ipv6)
{
    struct veer_conf *c = load_ok(POOL_OPEN "  backends = (\n"
                                            "    { name = \"a\"; address = \"[::1]:9001\"; },\n"
                                            "    { name = \"b\"; address = \"localhost:9002\"; "
                                            "weight = 0; group = \"canary_2\"; }\n"
                                            "  );\n" POOL_CLOSE);
    const struct conf_backend *b = c->pools[0].backends;

    ck_assert_str_eq(b[0].addr.text, "[::1]:9001");
    ck_assert_int_eq(b[0].addr.ss.ss_family, AF_INET6);
    ck_assert_int_eq(b[0].weight, 100);
    ck_assert_str_eq(b[0].group, "default");
    ck_assert_int_eq(b[0].line, 5);
    ck_assert_str_eq(b[1].addr.text, "127.0.0.1:9002");
    ck_assert_int_eq(b[1].weight, 0);
    ck_assert_str_eq(b[1].group, "canary_2");
    conf_free(c);
}
END_TEST

START_TEST(test_sticky_cookie_and_client_address)
{
    struct veer_conf *c = load_ok(LISTEN "pools = ( { name = \"api\"; sticky = { cookie = \"uid\"; "
                                         "client_address = false; }; },\n"
                                         "  { name = \"b\"; sticky = { client_address = true; }; "
                                         "balance = \"p2c\"; },\n"
                                         "  { name = \"c\"; balance = \"leastconn\"; } );\n");

    ck_assert(c->pools[0].has_sticky);
    ck_assert_str_eq(c->pools[0].sticky.cookie, "uid");
    ck_assert_ptr_null(c->pools[0].sticky.header);
    ck_assert(!c->pools[0].sticky.client_address);
    ck_assert(c->pools[1].sticky.client_address);
    ck_assert_int_eq(c->pools[1].balance, BALANCE_P2C);
    ck_assert_int_eq(c->pools[2].balance, BALANCE_LEASTCONN);
    conf_free(c);
}
END_TEST

START_TEST(test_capacity_headroom_accepts_int_and_float)
{
    struct veer_conf *c = load_ok(LISTEN "pools = ( { name = \"api\"; capacity_headroom = 3; },\n"
                                         "  { name = \"b\"; capacity_headroom = 1.25; },\n"
                                         "  { name = \"c\"; capacity_headroom = 4L; } );\n");

    ck_assert_double_eq(c->pools[0].capacity_headroom, 3.0);
    ck_assert_double_eq(c->pools[1].capacity_headroom, 1.25);
    ck_assert_double_eq(c->pools[2].capacity_headroom, 4.0);
    conf_free(c);
}
END_TEST

START_TEST(test_admin_mode_is_octal)
{
    struct veer_conf *c = load_ok(BASE "admin = { mode = \"600\"; http = \"[::1]:0\"; };\n");

    ck_assert_int_eq(c->admin.mode, 0600);
    ck_assert(c->admin.has_http);
    ck_assert_str_eq(c->admin.http.text, "[::1]:0");
    conf_free(c);
    c = load_ok(BASE "admin = { mode = \"0777\"; };\n");
    ck_assert_int_eq(c->admin.mode, 0777);
    conf_free(c);
    c = load_ok(BASE "admin = { mode = \"0\"; };\n");
    ck_assert_int_eq(c->admin.mode, 0);
    conf_free(c);
}
END_TEST

START_TEST(test_cluster_block_defaults)
{
    struct veer_conf *c = load_ok(BASE "cluster = { };\n");
    char host[256] = "";

    ck_assert(c->cluster.enabled);
    ck_assert_int_eq(c->cluster.netcd, 1);
    ck_assert_str_eq(c->cluster.etcd[0], "http://127.0.0.1:2379");
    ck_assert_str_eq(c->cluster.prefix, "/veer/prod");
    ck_assert_ptr_nonnull(c->cluster.instance);
    if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0' && strchr(host, ' ') == NULL)
        ck_assert_str_eq(c->cluster.instance, host);
    conf_free(c);
    c = load_ok(BASE "cluster = { etcd = [ \"https://a:2379\", \"https://b:2379\" ]; };\n");
    ck_assert_int_eq(c->cluster.netcd, 2);
    ck_assert_str_eq(c->cluster.etcd[1], "https://b:2379");
    conf_free(c);
}
END_TEST

START_TEST(test_maintenance_allow_may_be_emptied)
{
    struct veer_conf *c = load_ok(BASE "maintenance = { allow = (); retry_after = 0; };\n");

    ck_assert_int_eq(mod_strs(c, "maintenance.allow")->n, 0);
    ck_assert_int_eq(c->maintenance.retry_after, 0);
    conf_free(c);
    c = load_ok(BASE "maintenance = { allow = [ \"/a\", \"/b\" ]; };\n");
    ck_assert_int_eq(mod_strs(c, "maintenance.allow")->n, 2);
    ck_assert_str_eq(mod_strs(c, "maintenance.allow")->v[1], "/b");
    conf_free(c);
}
END_TEST

START_TEST(test_listeners_on_port_zero_are_not_duplicates)
{
    struct veer_conf *c = load_ok("listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; },\n"
                                  "  { address = \"127.0.0.1:0\"; pool = \"api\"; },\n"
                                  "  { address = \"[::]:8080\"; pool = \"api\"; } );\n" POOLS);

    ck_assert_int_eq(c->nlistens, 3);
    ck_assert_str_eq(c->listens[1].addr.text, "127.0.0.1:0");
    ck_assert_str_eq(c->listens[2].addr.text, "[::]:8080");
    ck_assert_int_eq(c->listens[2].line, 3);
    conf_free(c);
}
END_TEST

START_TEST(test_shares_may_give_a_group_zero)
{
    struct veer_conf *c = load_ok(BLUE_GREEN "  shares = { green = 100; blue = 0; };\n" POOL_CLOSE);

    ck_assert_int_eq(c->pools[0].nshares, 2);
    ck_assert_str_eq(c->pools[0].shares[0].group, "green");
    ck_assert_int_eq(c->pools[0].shares[0].share, 100);
    ck_assert_int_eq(c->pools[0].shares[0].line, 8);
    conf_free(c);
}
END_TEST

/* Discovery (issue 20): with no resolvers block, every default; an entry's own defaults. */
START_TEST(test_discover_and_resolvers_defaults)
{
    struct veer_conf *c =
        load_ok(DISC_OPEN "    { name = \"api\"; dns = \"api.internal:8080\"; },\n"
                          "    { name = \"grpc\";\n"
                          "      srv = \"_grpc._tcp.api.internal\"; }\n" DISC_CLOSE);
    const struct conf_pool *p = &c->pools[0];
    const struct conf_discover *d = p->discover;

    ck_assert_int_eq(c->resolvers.nservers, 0); /* /etc/resolv.conf's */
    ck_assert_int_eq(c->resolvers.interval_ms, 5000);
    ck_assert_int_eq(c->resolvers.min_interval_ms, 1000);
    ck_assert_int_eq(c->resolvers.timeout_ms, 1000);
    ck_assert_int_eq(c->resolvers.confirm, 2);
    ck_assert_int_eq(c->resolvers.max_backends, 256);
    ck_assert_int_eq(p->ndiscover, 2);
    ck_assert_int_eq(p->nbackends, 0);
    ck_assert_str_eq(d[0].name, "api");
    ck_assert_str_eq(d[0].dns, "api.internal:8080");
    ck_assert_str_eq(d[0].host, "api.internal");
    ck_assert_int_eq(d[0].port, 8080);
    ck_assert_ptr_null(d[0].srv);
    ck_assert_str_eq(d[0].group, "default");
    ck_assert_int_eq(d[0].weight, 100);
    ck_assert_int_eq(d[0].confirm, -1);
    ck_assert_int_eq(d[0].max_backends, -1);
    ck_assert_int_eq(conf_discover_confirm(c, &d[0]), 2);
    ck_assert_int_eq(conf_discover_max(c, &d[0]), 256);
    ck_assert_int_eq(d[0].line, 5);
    ck_assert_str_eq(d[1].name, "grpc");
    ck_assert_ptr_null(d[1].dns);
    ck_assert_str_eq(d[1].srv, "_grpc._tcp.api.internal");
    ck_assert_str_eq(d[1].host, "_grpc._tcp.api.internal");
    ck_assert_int_eq(d[1].port, 0);
    ck_assert_int_eq(d[1].line, 6);
    conf_free(c);
}
END_TEST

/* The resolvers' confirm and max_backends apply to the entries that set none; an entry's own win.
 */
START_TEST(test_discover_overrides_and_resolvers)
{
    struct veer_conf *c = load_ok(
        LISTEN "resolvers = { interval_ms = 30000; min_interval_ms = 10; timeout_ms = 250;\n"
               "  confirm = 5; max_backends = 40; };\n"
               "pools = ( { name = \"api\"; discover = (\n"
               "  { name = \"a\"; dns = \"a.internal:1\"; confirm = 1; max_backends = 10000;\n"
               "    group = \"blue-2\"; weight = 0; },\n"
               "  { name = \"b\"; dns = \"b-1.svc_x.internal:65535\"; weight = 1000; },\n"
               "  { name = \"abcdefghijklmnopqrstuvwx\"; srv = \"_h._tcp.x\"; } ); } );\n");
    const struct conf_discover *d = c->pools[0].discover;

    ck_assert_int_eq(c->resolvers.interval_ms, 30000);
    ck_assert_int_eq(c->resolvers.min_interval_ms, 10);
    ck_assert_int_eq(c->resolvers.timeout_ms, 250);
    ck_assert_int_eq(conf_discover_confirm(c, &d[0]), 1);
    ck_assert_int_eq(conf_discover_max(c, &d[0]), 10000);
    ck_assert_str_eq(d[0].group, "blue-2");
    ck_assert_int_eq(d[0].weight, 0);
    ck_assert_int_eq(conf_discover_confirm(c, &d[1]), 5);
    ck_assert_int_eq(conf_discover_max(c, &d[1]), 40);
    ck_assert_str_eq(d[1].host, "b-1.svc_x.internal");
    ck_assert_int_eq(d[1].port, 65535);
    ck_assert_int_eq(d[1].weight, 1000);
    ck_assert_int_eq((int)strlen(d[2].name), CONF_DISCOVER_NAME_MAX); /* 24 bytes: the most */
    conf_free(c);
    /* min_interval_ms may equal interval_ms */
    c = load_ok(BASE "resolvers = { interval_ms = 1000; };\n");
    ck_assert_int_eq(c->resolvers.min_interval_ms, 1000);
    conf_free(c);
    /* an interval under the default minimum brings the minimum down with it */
    c = load_ok(BASE "resolvers = { interval_ms = 500; };\n");
    ck_assert_int_eq(c->resolvers.interval_ms, 500);
    ck_assert_int_eq(c->resolvers.min_interval_ms, 500);
    conf_free(c);
}
END_TEST

/* A nameserver without a port gets 53; a bare IPv6 address is bracketed. */
START_TEST(test_resolver_servers_with_and_without_port)
{
    struct veer_conf *c =
        load_ok(BASE "resolvers = { servers = ( \"127.0.0.1\", \"127.0.0.1:5353\",\n"
                     "  \"[::1]:53\", \"::1\", \"[fd00::53]:5300\" ); };\n");
    const struct conf_addr *sv = c->resolvers.servers;

    ck_assert_int_eq(c->resolvers.nservers, 5);
    ck_assert_str_eq(sv[0].text, "127.0.0.1:53");
    ck_assert_int_eq(sv[0].ss.ss_family, AF_INET);
    ck_assert_int_eq(ntohs(((const struct sockaddr_in *)&sv[0].ss)->sin_port), 53);
    ck_assert_str_eq(sv[1].text, "127.0.0.1:5353");
    ck_assert_int_eq(ntohs(((const struct sockaddr_in *)&sv[1].ss)->sin_port), 5353);
    ck_assert_str_eq(sv[2].text, "[::1]:53");
    ck_assert_int_eq(sv[2].ss.ss_family, AF_INET6);
    ck_assert_str_eq(sv[3].text, "[::1]:53");
    ck_assert_int_eq(sv[3].ss.ss_family, AF_INET6);
    ck_assert_int_eq(ntohs(((const struct sockaddr_in6 *)&sv[3].ss)->sin6_port), 53);
    ck_assert_str_eq(sv[4].text, "[fd00::53]:5300");
    conf_free(c);
    c = load_ok(BASE "resolvers = { servers = [ \"10.0.0.53\" ]; };\n"); /* an array too */
    ck_assert_int_eq(c->resolvers.nservers, 1);
    ck_assert_str_eq(c->resolvers.servers[0].text, "10.0.0.53:53");
    conf_free(c);
}
END_TEST

/* A share may name a group that only a discover entry has: its instances will come. */
START_TEST(test_shares_may_name_a_group_only_discover_has)
{
    struct veer_conf *c = load_ok(
        BLUE_GREEN "  discover = ( { name = \"c\"; dns = \"c.internal:80\"; group = \"canary\"; "
                   "} );\n"
                   "  shares = { blue = 80; green = 10; canary = 10; };\n" POOL_CLOSE);

    ck_assert_int_eq(c->pools[0].nshares, 3);
    ck_assert_str_eq(c->pools[0].shares[2].group, "canary");
    ck_assert_int_eq(c->pools[0].shares[2].share, 10);
    conf_free(c);
    c = load_ok(POOL_OPEN "  discover = ( { name = \"g\"; srv = \"_h._tcp.g.internal\"; group = "
                          "\"green\"; } );\n"
                          "  shares = { green = 100; };\n" POOL_CLOSE);
    ck_assert_int_eq(c->pools[0].shares[0].share, 100);
    conf_free(c);
}
END_TEST

START_TEST(test_listen_tls_defaults)
{
    struct veer_conf *c =
        load_ok("listen = ( { address = \"127.0.0.1:8443\"; pool = \"api\";\n"
                "  tls = { certificates = ( { cert = \"a\"; key = \"b\"; },\n"
                "    { cert = \"c\"; key = \"d\"; ocsp = \"e\"; } ); }; } );\n" POOLS);
    const struct conf_tls *tls = c->listens[0].tls;

    ck_assert_int_eq(tls->ncerts, 2);
    ck_assert_ptr_null(tls->certs[0].ocsp);
    ck_assert_str_eq(tls->certs[1].ocsp, "e");
    ck_assert_int_eq(tls->certs[1].line, 3);
    ck_assert_str_eq(tls->protocols, "TLSv1.2+");
    ck_assert_ptr_null(tls->ciphers);
    conf_free(c);
}
END_TEST

START_TEST(test_admin_http_tls)
{
    struct veer_conf *c = load_ok(BASE "admin = { http = \"127.0.0.1:0\";\n"
                                       "  http_tls = { cert = \"s.pem\"; key = \"s.key\"; "
                                       "client_ca = \"ca.pem\"; }; };\n");

    ck_assert_ptr_nonnull(c->admin.http_tls);
    ck_assert_str_eq(c->admin.http_tls->cert, "s.pem");
    ck_assert_str_eq(c->admin.http_tls->key, "s.key");
    ck_assert_str_eq(c->admin.http_tls->client_ca, "ca.pem");
    ck_assert_int_eq(c->admin.http_tls->line, 4);
    conf_free(c);
    c = load_ok(BASE "admin = { http = \"127.0.0.1:0\"; };\n");
    ck_assert_ptr_null(c->admin.http_tls);
    conf_free(c);
}
END_TEST

/* preflight (rollouts) */

START_TEST(test_preflight_defaults_and_find)
{
    struct veer_conf *c = load_ok(
        BASE "preflight = (\n"
             "  { name = \"smoke\"; requests = (\n"
             "      { path = \"/api/health/status\"; },\n"
             "      { method = \"HEAD\"; path = \"/v1/ping?x=1\"; expect_status = 204;\n"
             "        expect_body_contains = \"pong\"; } ); },\n"
             "  { name = \"deep\"; timeout_ms = 10; requests = (\n"
             "      { method = \"DELETE\"; path = \"/\"; expect_status = 599; },\n"
             "      { path = \"/x\"; expect_status = 100; } ); },\n"
             "  { name = \"slow\"; timeout_ms = 600000; requests = ( { path = \"/\"; } ); }\n"
             ");\n");
    const struct conf_preflight *pf;

    ck_assert_int_eq(c->npreflights, 3);
    pf = conf_find_preflight(c, "smoke");
    ck_assert_ptr_eq(pf, &c->preflights[0]);
    ck_assert_str_eq(pf->name, "smoke");
    ck_assert_int_eq(pf->timeout_ms, 2000);
    ck_assert_int_eq(pf->line, 4);
    ck_assert_int_eq(pf->nrequests, 2);
    ck_assert_str_eq(pf->requests[0].method, "GET");
    ck_assert_str_eq(pf->requests[0].path, "/api/health/status");
    ck_assert_int_eq(pf->requests[0].expect_status, 200);
    ck_assert_ptr_null(pf->requests[0].expect_body_contains);
    ck_assert_int_eq(pf->requests[0].line, 5);
    ck_assert_str_eq(pf->requests[1].method, "HEAD");
    ck_assert_str_eq(pf->requests[1].path, "/v1/ping?x=1");
    ck_assert_int_eq(pf->requests[1].expect_status, 204);
    ck_assert_str_eq(pf->requests[1].expect_body_contains, "pong");
    ck_assert_int_eq(pf->requests[1].line, 6);
    pf = conf_find_preflight(c, "deep");
    ck_assert_ptr_eq(pf, &c->preflights[1]);
    ck_assert_int_eq(pf->timeout_ms, 10);
    ck_assert_int_eq(pf->line, 8);
    ck_assert_str_eq(pf->requests[0].method, "DELETE");
    ck_assert_int_eq(pf->requests[0].expect_status, 599);
    ck_assert_str_eq(pf->requests[1].method, "GET");
    ck_assert_int_eq(pf->requests[1].expect_status, 100);
    pf = conf_find_preflight(c, "slow");
    ck_assert_ptr_eq(pf, &c->preflights[2]);
    ck_assert_int_eq(pf->timeout_ms, 600000);
    ck_assert_ptr_null(conf_find_preflight(c, "nope"));
    ck_assert_ptr_null(conf_find_preflight(c, "Smoke"));
    ck_assert_ptr_null(conf_find_preflight(c, ""));
    conf_free(c);
    /* None at all, and an empty list. */
    c = load_ok(BASE);
    ck_assert_int_eq(c->npreflights, 0);
    ck_assert_ptr_null(conf_find_preflight(c, "smoke"));
    conf_free(c);
    c = load_ok(BASE "preflight = ( );\n");
    ck_assert_int_eq(c->npreflights, 0);
    ck_assert_ptr_null(conf_find_preflight(c, "smoke"));
    conf_free(c);
}
END_TEST

/* Each bad preflight list: the line its error names and the message after "FILE:LINE: ", exactly.
 */
static const struct bad_conf bad_preflights[] = {
    {BASE "preflight = ( { name = \"s\"; requests = ( ); } );\n", 3,
     "preflight[0].requests must be a non-empty list of groups: ( { method = \"GET\"; path = "
     "\"/health\"; expect_status = 200; } )"},
    {BASE "preflight = ( { name = \"s\"; requests = \"/\"; } );\n", 3,
     "preflight[0].requests must be a non-empty list of groups: ( { method = \"GET\"; path = "
     "\"/health\"; expect_status = 200; } )"},
    {BASE "preflight = ( { name = \"s\";\n requests = ( { path = \"x\"; } ); } );\n", 4,
     "preflight[0].requests[0].path must start with '/' (got \"x\")"},
    /* The path is sent as the request target: no space, no control character (no CR LF). */
    {BASE "preflight = ( { name = \"s\";\n requests = ( { path = \"/a b\"; } ); } );\n", 4,
     "preflight[0].requests[0].path must not contain spaces or control characters (got \"/a b\")"},
    {BASE
     "preflight = ( { name = \"s\";\n requests = ( { path = \"/a\\r\\nX-Evil: 1\"; } ); } );\n",
     4,
     "preflight[0].requests[0].path must not contain spaces or control characters (got "
     "\"/a??X-Evil: 1\")"},
    {BASE "preflight = ( { name = \"s\";\n requests = ( { path = \"/a\\tb\"; } ); } );\n", 4,
     "preflight[0].requests[0].path must not contain spaces or control characters (got \"/a?b\")"},
    {BASE
     "preflight = ( { name = \"s\"; requests = (\n { path = \"/\"; expect_status = 99; } ); } );\n",
     4, "preflight[0].requests[0].expect_status must be between 100 and 599 (got 99)"},
    {BASE "preflight = ( { name = \"s\"; requests = ( { path = \"/\"; },\n"
          " { path = \"/\"; expect_status = 600; } ); } );\n",
     4, "preflight[0].requests[1].expect_status must be between 100 and 599 (got 600)"},
    {BASE
     "preflight = ( { name = \"s\"; requests = (\n { method = \"GE T\"; path = \"/\"; } ); } );\n",
     4,
     "preflight[0].requests[0].method must be a valid HTTP token (letters, digits and "
     "!#$%&'*+-.^_`|~) (got \"GE T\")"},
    {BASE "preflight = ( { name = \"s\"; requests = (\n { method = \"\"; path = \"/\"; } ); } );\n",
     4, "preflight[0].requests[0].method must not be empty"},
    {BASE "preflight = ( { name = \"s\"; requests = ( { path = \"/\"; } ); },\n"
          " { name = \"s\"; requests = ( { path = \"/\"; } ); } );\n",
     4, "duplicate preflight name 's' (also at line 3)"},
    {BASE "preflight = ( { requests = ( { path = \"/\"; } ); } );\n", 3,
     "missing required key 'name' in preflight[0]"},
    {BASE "preflight = ( {\n name = \"" N64_NAME "\"; requests = ( { path = \"/\"; } ); } );\n", 4,
     "preflight[0].name must be at most 63 bytes (rollout start names it) (got \"" N64_NAME "\")"},
    {BASE "preflight = ( { name = \"s\"; } );\n", 3,
     "missing required key 'requests' in preflight[0]"},
    {BASE "preflight = ( { name = \"s\"; requests = (\n { method = \"GET\"; } ); } );\n", 4,
     "missing required key 'path' in preflight[0].requests[0]"},
    {BASE
     "preflight = ( { name = \"s\";\n timeout_ms = 5; requests = ( { path = \"/\"; } ); } );\n",
     4, "preflight[0].timeout_ms must be between 10 and 600000 (got 5)"},
    {BASE
     "preflight = ( { name = \"s\"; timeout_ms = 600001; requests = ( { path = \"/\"; } ); } );\n",
     3, "preflight[0].timeout_ms must be between 10 and 600000 (got 600001)"},
    {BASE "preflight = ( { name = \"s\"; requests = (\n { path = \"/\"; body = \"x\"; } ); } );\n",
     4, "unknown key 'body' in preflight[0].requests[0]"},
    {BASE "preflight = ( { name = \"a b\"; requests = ( { path = \"/\"; } ); } );\n", 3,
     "preflight[0].name may contain only letters, digits, '.', '_' and '-' (got \"a b\")"},
    {BASE "preflight = { name = \"s\"; };\n", 3,
     "preflight must be a list of groups: ( { name = \"smoke\"; requests = ( ... ); } )"},
};

START_TEST(test_bad_preflight_is_refused_with_file_line_and_message)
{
    expect_error_exact(bad_preflights[_i].text, bad_preflights[_i].line, bad_preflights[_i].msg);
}
END_TEST

/* conf_parse_addr */

struct addr_case {
    const char *text;
    bool port0;
    const char *want; /* normalised text, or NULL when it must fail */
    const char *msg;  /* part of the error when it fails */
};

static const struct addr_case addr_cases[] = {
    {"127.0.0.1:8080", false, "127.0.0.1:8080", NULL},
    {"0.0.0.0:1", false, "0.0.0.0:1", NULL},
    {"10.1.2.3:65535", false, "10.1.2.3:65535", NULL},
    {"localhost:80", false, "127.0.0.1:80", NULL},
    {"[::1]:8080", false, "[::1]:8080", NULL},
    {"[0:0:0:0:0:0:0:1]:443", false, "[::1]:443", NULL},
    {"[::ffff:10.0.0.1]:80", false, "[::ffff:10.0.0.1]:80", NULL},
    {"127.0.0.1:0", true, "127.0.0.1:0", NULL},
    {"127.0.0.1:080", false, "127.0.0.1:80", NULL},
    {"127.0.0.1:0", false, NULL, "port must be between 1 and 65535"},
    {"127.0.0.1:65536", true, NULL, "port must be between 0 and 65535"},
    {"127.0.0.1:99999999999", false, NULL, "port must be between 1 and 65535"},
    {"127.0.0.1", false, NULL, "missing port"},
    {"127.0.0.1:", false, NULL, "missing port"},
    {"[::1]", false, NULL, "missing port"},
    {"[::1]8080", false, NULL, "missing port"},
    {"[::1:8080", false, NULL, "missing ']'"},
    {"::1:8080", false, NULL, "must be in brackets"},
    {":8080", false, NULL, "missing host"},
    {"[]:8080", false, NULL, "missing host"},
    {"example.com:80", false, NULL, "numeric"},
    {"256.1.1.1:80", false, NULL, "numeric"},
    {"1.2.3:80", false, NULL, "numeric"},
    {"[localhost]:80", false, NULL, "is not a numeric IPv6 address"},
    {"127.0.0.1:-1", false, NULL, "port must be a number"},
    {"127.0.0.1:80x", false, NULL, "port must be a number"},
    {"", false, NULL, "empty address"},
    {"[1111:2222:3333:4444:5555:6666:7777:8888]:65535:1234567890123456", false, NULL, "too long"},
};

START_TEST(test_parse_addr)
{
    const struct addr_case *t = &addr_cases[_i];
    struct conf_addr a;
    char err[256] = "";
    int rc = conf_parse_addr(t->text, t->port0, &a, err, sizeof(err));

    if (t->want != NULL) {
        ck_assert_msg(rc == 0, "'%s' refused: %s", t->text, err);
        ck_assert_str_eq(a.text, t->want);
        return;
    }
    ck_assert_msg(rc == -1, "'%s' accepted", t->text);
    ck_assert_msg(strstr(err, t->msg) != NULL, "'%s': error \"%s\" lacks \"%s\"", t->text, err,
                  t->msg);
    ck_assert_int_eq(a.len, 0);
}
END_TEST

START_TEST(test_parse_addr_fills_sockaddr)
{
    struct conf_addr a;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;
    char buf[64];

    ck_assert_int_eq(conf_parse_addr("10.0.0.7:9001", false, &a, NULL, 0), 0);
    ck_assert_int_eq(sin->sin_family, AF_INET);
    ck_assert_int_eq(ntohs(sin->sin_port), 9001);
    ck_assert_int_eq(sin->sin_addr.s_addr, inet_addr("10.0.0.7"));
    ck_assert_int_eq(a.len, sizeof(struct sockaddr_in));
    ck_assert_int_eq(conf_parse_addr("[fe80::1]:443", false, &a, NULL, 0), 0);
    ck_assert_int_eq(sin6->sin6_family, AF_INET6);
    ck_assert_int_eq(ntohs(sin6->sin6_port), 443);
    ck_assert_str_eq(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)), "fe80::1");
    ck_assert_int_eq(a.len, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(conf_parse_addr("nope", false, &a, NULL, 0), -1);
}
END_TEST

/* mirror (issue 19), of a pool and of a route */

#define MIRROR_OPEN BLUE_GREEN "  mirror = {\n"

START_TEST(test_mirror_defaults)
{
    struct veer_conf *c = load_ok(BLUE_GREEN "  mirror = { group = \"green\"; };\n" POOL_CLOSE);
    const struct conf_mirror *m = &c->pools[0].mirror;

    ck_assert(c->pools[0].has_mirror);
    ck_assert_str_eq(m->group, "green");
    ck_assert_double_eq(m->percent, 100);
    ck_assert_int_eq(m->max_body_bytes, 65536);
    ck_assert_int_eq(m->max_inflight, 256);
    ck_assert_int_eq(m->timeout_ms, 2000);
    ck_assert_int_eq(m->methods.n, 3);
    ck_assert_str_eq(m->methods.v[0], "GET");
    ck_assert_str_eq(m->methods.v[1], "HEAD");
    ck_assert_str_eq(m->methods.v[2], "OPTIONS");
    ck_assert_int_eq(m->headers.n, 0);
    ck_assert_int_eq(m->ignore.n, 0);
    ck_assert_int_eq(m->line, 8);
    conf_free(c);
    c = load_ok(BLUE_GREEN POOL_CLOSE);
    ck_assert(!c->pools[0].has_mirror);
    conf_free(c);
}
END_TEST

START_TEST(test_mirror_values_and_lowercased_compare_headers)
{
    struct veer_conf *c =
        load_ok(MIRROR_OPEN
                "    group = \"green\"; percent = 10; max_body_bytes = 0;\n"
                "    max_inflight = 1; timeout_ms = 600000; methods = ( \"GET\", \"POST\" );\n"
                "    compare = { headers = ( \"ETag\", \"X-Version\" );\n"
                "                ignore_headers = ( \"Content-Type\" ); };\n"
                "  };\n" POOL_CLOSE "routes = ( { name = \"v2\"; pool = \"api\";\n"
                "  match = { path_prefix = \"/v2\"; };\n"
                "  mirror = { group = \"blue\"; percent = 0.5; }; },\n"
                "  { name = \"v1\"; pool = \"api\"; match = { path_prefix = \"/v1\"; }; } );\n");
    const struct conf_mirror *m = &c->pools[0].mirror;

    ck_assert_double_eq(m->percent, 10.0); /* an integer is a percent too */
    ck_assert_int_eq(m->max_body_bytes, 0);
    ck_assert_int_eq(m->max_inflight, 1);
    ck_assert_int_eq(m->timeout_ms, 600000);
    ck_assert_int_eq(m->methods.n, 2); /* replaces the defaults */
    ck_assert_str_eq(m->methods.v[0], "GET");
    ck_assert_str_eq(m->methods.v[1], "POST");
    ck_assert_int_eq(m->headers.n, 2);
    ck_assert_str_eq(m->headers.v[0], "etag");
    ck_assert_str_eq(m->headers.v[1], "x-version");
    ck_assert_int_eq(m->ignore.n, 1);
    ck_assert_str_eq(m->ignore.v[0], "content-type");
    ck_assert_int_eq(c->nroutes, 2);
    ck_assert(c->routes[0].has_mirror);
    ck_assert_str_eq(c->routes[0].mirror.group, "blue");
    ck_assert_double_eq(c->routes[0].mirror.percent, 0.5);
    ck_assert_int_eq(c->routes[0].mirror.max_inflight, 256); /* the route's own defaults */
    ck_assert(!c->routes[1].has_mirror);
    conf_free(c);
}
END_TEST

/* Two pools: api (blue, green) and pay (blue only); a route to pay on line 11. */
#define MIRROR_TWO_POOLS                                                                           \
    LISTEN "pools = ( {\n  name = \"api\";\n  backends = (\n"                                      \
           "    { name = \"b1\"; address = \"127.0.0.1:9001\"; group = \"blue\"; },\n"             \
           "    { name = \"g1\"; address = \"127.0.0.1:9002\"; group = \"green\"; }\n"             \
           "  ); },\n"                                                                             \
           "  { name = \"pay\"; backends = (\n"                                                    \
           "    { name = \"p1\"; address = \"127.0.0.1:9003\"; group = \"blue\"; } ); } );\n"      \
           "routes = ( { name = \"r\"; pool = \"pay\"; match = { path_prefix = \"/p\"; };\n"

static const struct {
    const char *text;
    int line;
    const char *msg;
} bad_mirrors[] = {
    {MIRROR_OPEN "    group = \"red\"; };\n" POOL_CLOSE, 9, "pool 'api' has no group 'red'"},
    {MIRROR_OPEN "    group = \"green\";\n    percent = 101; };\n" POOL_CLOSE, 10,
     "must be between 0 and 100 (got 101)"},
    {MIRROR_OPEN "    group = \"green\";\n    percent = -1; };\n" POOL_CLOSE, 10,
     "must be between 0 and 100 (got -1)"},
    {MIRROR_OPEN "    group = \"green\";\n    percent = 100.5; };\n" POOL_CLOSE, 10,
     "must be between 0 and 100 (got 100.5)"},
    {MIRROR_OPEN "    group = \"green\";\n    percent = \"10\"; };\n" POOL_CLOSE, 10,
     "must be a number between 0 and 100"},
    {MIRROR_OPEN "    group = \"green\";\n    colour = 1; };\n" POOL_CLOSE, 10,
     "unknown key 'colour'"},
    {MIRROR_OPEN "    group = \"green\";\n    max_inflight = 0; };\n" POOL_CLOSE, 10,
     "max_inflight must be between 1 and 1000000 (got 0)"},
    {MIRROR_OPEN "    group = \"green\";\n    timeout_ms = 0; };\n" POOL_CLOSE, 10,
     "timeout_ms must be between 1 and 600000 (got 0)"},
    {MIRROR_OPEN "    group = \"green\";\n    max_body_bytes = -1; };\n" POOL_CLOSE, 10,
     "pools[0].mirror.max_body_bytes must be >= 0 (got -1)"},
    {MIRROR_OPEN
     "    group = \"green\";\n    compare = { headers = ( \"a b\" ); }; };\n" POOL_CLOSE,
     10, "valid HTTP token"},
    {MIRROR_OPEN "    group = \"green\";\n    compare = { body = true; }; };\n" POOL_CLOSE, 10,
     "unknown key 'body'"},
    {MIRROR_OPEN "    percent = 5.0; };\n" POOL_CLOSE, 8, "missing required key 'group'"},
    {BLUE_GREEN "  mirror = 5;\n" POOL_CLOSE, 8, "must be a group"},
    {MIRROR_TWO_POOLS "  mirror = {\n  group = \"green\"; }; } );\n", 12,
     "pool 'pay' has no group 'green'"},
    {MIRROR_TWO_POOLS "  mirror = { percent = 1.0;\n  colour = 2; }; } );\n", 12,
     "unknown key 'colour'"},
};

START_TEST(test_bad_mirror_is_refused_with_file_line_and_message)
{
    expect_error(bad_mirrors[_i].text, bad_mirrors[_i].line, bad_mirrors[_i].msg);
}
END_TEST

static Suite *conf_suite(void)
{
    Suite *s = suite_create("conf");
    TCase *load = tcase_create("load");
    TCase *bad = tcase_create("bad");
    TCase *addr = tcase_create("addr");

    tcase_add_test(load, test_reference_config_loads_every_field);
    tcase_add_test(load, test_minimal_config_has_defaults);
    tcase_add_test(load, test_canonical_path_prefixes_load);
    tcase_add_test(load, test_shipped_reference_config_loads);
    tcase_add_test(load, test_shipped_demo_config_loads);
    tcase_add_test(load, test_missing_file_names_the_os_error);
    tcase_add_test(load, test_error_in_include_names_the_included_file);
    tcase_add_test(load, test_include_of_a_directory_is_an_error_at_its_line);
    tcase_add_test(load, test_error_in_a_module_key_of_an_include_names_the_included_file);
    tcase_add_test(load, test_success_leaves_err_untouched);
    tcase_add_test(load, test_error_without_buffer_and_truncation_are_safe);
    tcase_add_test(load, test_find_pool_by_name);
    tcase_add_test(load, test_conf_free_accepts_null);
    tcase_add_test(load, test_wide_integers_with_l_suffix_load);
    tcase_add_test(load, test_wide_integer_scan_ignores_comments_strings_and_floats);
    tcase_add_test(load, test_int_limits_are_exact);
    tcase_add_test(load, test_pool_without_backends_is_allowed);
    tcase_add_test(load, test_backend_defaults_and_ipv6);
    tcase_add_test(load, test_sticky_cookie_and_client_address);
    tcase_add_test(load, test_capacity_headroom_accepts_int_and_float);
    tcase_add_test(load, test_admin_mode_is_octal);
    tcase_add_test(load, test_cluster_block_defaults);
    tcase_add_test(load, test_maintenance_allow_may_be_emptied);
    tcase_add_test(load, test_listeners_on_port_zero_are_not_duplicates);
    tcase_add_test(load, test_shares_may_give_a_group_zero);
    tcase_add_test(load, test_discover_and_resolvers_defaults);
    tcase_add_test(load, test_discover_overrides_and_resolvers);
    tcase_add_test(load, test_resolver_servers_with_and_without_port);
    tcase_add_test(load, test_shares_may_name_a_group_only_discover_has);
    tcase_add_test(load, test_listen_tls_defaults);
    tcase_add_test(load, test_admin_http_tls);
    tcase_add_test(load, test_module_keys_fill_their_modules_sections);
    tcase_add_test(load, test_each_config_has_its_own_module_objects);
    tcase_add_test(load, test_routes_of_the_contract_load);
    tcase_add_test(load, test_route_request_headers_and_hold);
    tcase_add_test(load, test_route_effective_with_another_pool);
    tcase_add_test(load, test_no_routes_means_no_table);
    tcase_add_test(load, test_preflight_defaults_and_find);
    tcase_add_loop_test(bad, test_bad_preflight_is_refused_with_file_line_and_message, 0,
                        (int)ARRAY_SIZE(bad_preflights));
    tcase_add_loop_test(bad, test_bad_config_is_refused_with_file_and_line, 0,
                        (int)ARRAY_SIZE(bad_confs));
    tcase_add_test(load, test_mirror_defaults);
    tcase_add_test(load, test_mirror_values_and_lowercased_compare_headers);
    tcase_add_loop_test(bad, test_bad_mirror_is_refused_with_file_line_and_message, 0,
                        (int)ARRAY_SIZE(bad_mirrors));
    tcase_add_loop_test(addr, test_parse_addr, 0, (int)ARRAY_SIZE(addr_cases));
    tcase_add_test(addr, test_parse_addr_fills_sockaddr);
    suite_add_tcase(s, load);
    suite_add_tcase(s, bad);
    suite_add_tcase(s, addr);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conf_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
