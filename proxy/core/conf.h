/*
 * conf.h - the configuration file (libconfig) as a validated, immutable
 * struct veer_conf. Every key of the operator contract (ARCHITECTURE.md,
 * "Config") is parsed and checked here, including keys whose feature arrives
 * later, so that a config written for the full product always loads --
 * except the modules' keys: a module declares its own (struct
 * conf_section, below) and gets them back parsed, with the same checks and
 * the same "FILE:LINE: message" errors, in an object of its own that this
 * file never looks inside.
 */
#ifndef VEER_CONF_H
#define VEER_CONF_H

#include "hmap.h"

struct routes;

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A numeric socket address parsed from "host:port" or "[v6]:port". */
struct conf_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* as written by the operator, normalised: "127.0.0.1:8080" */
};

enum conf_balance {
    BALANCE_SWRR = 0,
    BALANCE_LEASTCONN,
    BALANCE_P2C,
};

struct conf_tls_cert {
    char *cert;
    char *key;
    char *ocsp; /* NULL when absent */
    int line;
};

struct conf_tls {
    struct conf_tls_cert *certs;
    int ncerts;
    char *protocols; /* default "TLSv1.2+" */
    char *ciphers;   /* NULL = built-in default */
    int line;
    /* Built by tls_conf_prepare() after loading, freed with the config. */
    void *server;
    void (*server_free)(void *server);
};

struct conf_listen {
    struct conf_addr addr;
    char *pool;           /* NULL: no fallback pool (allowed when routes exist): 404 */
    int pool_index;       /* index into veer_conf.pools, -1 without a pool */
    struct conf_tls *tls; /* NULL when plain HTTP */
    int line;
};

struct conf_backend {
    char *name;
    struct conf_addr addr;
    int weight;  /* 0..1000, default 100 */
    char *group; /* default "default" */
    int line;
};

struct conf_share {
    char *group;
    int share; /* 0..100 */
    int line;
};

struct conf_health {
    char *path;      /* default "/" */
    int interval_ms; /* default 500 */
    int timeout_ms;  /* default 1000 */
    int rise;        /* default 2 */
    int fall;        /* default 3 */
};

struct conf_retries {
    int count;          /* default 2 */
    int base_ms;        /* default 10 */
    int cap_ms;         /* default 200 */
    int budget_percent; /* default 20 */
};

struct conf_breaker {
    int failures;             /* default 5 */
    int window_ms;            /* default 10000 */
    int cooldown_ms;          /* default 30000 */
    int half_open_successes;  /* default 2 */
    int max_ejection_percent; /* default 50 */
};

struct conf_sticky {
    char *header; /* exactly one of header, cookie, client_address is set */
    char *cookie;
    bool client_address;
};

struct conf_upstream_tls {
    bool verify; /* default true */
    char *ca;    /* NULL = system default */
    char *sni;   /* NULL = none */
    /* Built by tls_conf_prepare() after loading, freed with the config. */
    void *client;
    void (*client_free)(void *client);
};

/*
 * One entry of a pool's `discover` list (issue 20): backends that follow a
 * DNS name. Exactly one of dns ("NAME:PORT": A and AAAA) and srv (an SRV
 * name) is set. Each address becomes a backend "<name>-<address>".
 */
#define CONF_DISCOVER_NAME_MAX 24

struct conf_discover {
    char *name;       /* unique across the file: the metric label */
    char *dns;        /* as written, "api.internal:8080"; NULL for srv */
    char *host;       /* the name queried: dns's host part, or srv */
    int port;         /* dns's port; 0 for srv (the records give it) */
    char *srv;        /* NULL for dns */
    char *group;      /* default "default" */
    int weight;       /* 0..1000, default 100 (srv: when every record's weight is 0) */
    int confirm;      /* -1: resolvers.confirm */
    int max_backends; /* -1: resolvers.max_backends */
    int line;
};

/* resolvers = { ... }: how discovery resolves (issue 20). */
struct conf_resolvers {
    struct conf_addr *servers; /* none: the nameservers of /etc/resolv.conf */
    int nservers;
    int interval_ms;     /* default 5000: the longest between two resolutions */
    int min_interval_ms; /* default 1000 (interval_ms when shorter): the shortest (a TTL of 0,
                            a retry after an error) */
    int timeout_ms;      /* default 1000 */
    int confirm;         /* default 2: empty answers in a row before a set is emptied */
    int max_backends;    /* default 256 per entry */
    int line;
};

/* A list of strings (CONF_K_STRINGS). */
struct conf_strings {
    char **v;
    int n;
};

/*
 * mirror = { ... } of a pool or a route (issue 19): a sample of the
 * requests is copied to another group of the pool (the shadow) and the two
 * answers are compared. Absent: has_mirror false.
 */
struct conf_mirror {
    char *group;                 /* required: a group of the pool */
    double percent;              /* 0..100, default 100 */
    int64_t max_body_bytes;      /* default 65536: larger request bodies are not mirrored */
    int max_inflight;            /* default 256, per worker */
    int timeout_ms;              /* default 2000 */
    struct conf_strings methods; /* default GET, HEAD, OPTIONS */
    struct conf_strings headers; /* compare.headers: compared besides content-type */
    struct conf_strings ignore;  /* compare.ignore_headers */
    int line;
};

struct conf_pool {
    char *name;
    int line;
    enum conf_balance balance;
    bool has_health;
    struct conf_health health;
    struct conf_retries retries;
    struct conf_breaker breaker;
    int slow_start_ms;     /* default 0 */
    int hold_ms;           /* default 0 */
    int64_t body_bytes;    /* -1 = not set (use limits.body_bytes), 0 = unlimited */
    char *override_header; /* NULL = off */
    bool has_sticky;
    struct conf_sticky sticky;
    double capacity_headroom; /* default 2.0 */
    bool has_tls;
    struct conf_upstream_tls tls;
    struct conf_backend *backends;
    int nbackends;
    struct hmap backend_index; /* name -> index into backends */
    bool has_shares;
    struct conf_share *shares;
    int nshares;
    struct conf_discover *discover;
    int ndiscover;
    bool has_mirror;
    struct conf_mirror mirror;
};

/* TLS on the admin HTTP address (an extension of the contract). */
struct conf_admin_tls {
    char *cert;
    char *key;
    char *client_ca; /* NULL = no client certificate asked */
    int line;
    /* Built by tls_conf_prepare() after loading, freed with the config. */
    void *ctx;
    void (*ctx_free)(void *ctx);
};

struct conf_admin {
    char *socket; /* default "/run/veer/admin.sock" */
    int mode;     /* default 0660 */
    char *owner;  /* NULL = unchanged */
    char *group;  /* NULL = unchanged */
    bool has_http;
    struct conf_addr http;
    struct conf_admin_tls *http_tls; /* NULL = plain HTTP */
};

struct conf_timeouts {
    int connect_ms;           /* 2000 */
    int client_header_ms;     /* 10000 */
    int idle_ms;              /* 60000 */
    int quiet_ms;             /* 1000 */
    int upstream_response_ms; /* 30000 */
    int drain_ms;             /* 30000 */
    int shutdown_ms;          /* 30000 */
};

/*
 * Largest limits.request_line_bytes and limits.header_bytes: a request head
 * is held whole in one buffer of up to their sum (plus slack) per
 * connection, and buffer sizes are 32-bit. 1 MiB each is well past what
 * clients send (HAProxy's whole buffer is 16 KiB by default, nginx's
 * header buffers 8 KiB) and keeps a head buffer far from 4 GiB.
 */
#define CONF_HEAD_BYTES_MAX (1024 * 1024)

struct conf_limits {
    int max_connections;            /* 10000 */
    int max_connections_per_worker; /* 0 = no cap */
    int request_line_bytes;         /* 8192, 64..CONF_HEAD_BYTES_MAX */
    int header_bytes;               /* 32768, 256..CONF_HEAD_BYTES_MAX */
    int header_count;               /* 100 */
    int64_t body_bytes;             /* 0 = unlimited */
};

/* maintenance.allow is the maintenance module's key (modules/maintenance.c). */
struct conf_maintenance {
    int retry_after; /* default 30: the Retry-After of `maintenance on` without one */
};

/* A header name and value of a route (match.headers, request_headers.set). */
struct conf_header {
    char *name;
    char *value;
    int line;
};

/*
 * One entry of `routes` (issue 17). The match keys are what routes_build
 * compiles (veer_conf.routes_table, route i is routes[i]); the overrides
 * are kept as written (-1: not set) and resolved per request against the
 * pool the route sends to then (conf_route_effective), which a route set
 * may have changed since the load.
 */
struct conf_route {
    char *name;
    char *pool;
    int pool_index; /* index into veer_conf.pools */
    int line;
    /* match = { ... } */
    char *host;
    char *path;
    char *path_prefix;
    struct conf_strings methods;
    struct conf_header *headers;
    int nheaders;
    /* overrides as written: -1 = not set */
    int upstream_response_ms;
    int64_t body_bytes; /* 0 = unlimited */
    int hold_ms;
    struct conf_retries retries_set; /* each field -1 when not set */
    char *rewrite_prefix;            /* NULL = forward the path as it is */
    struct conf_header *set_headers; /* request_headers.set */
    int nset_headers;
    struct conf_strings remove_headers; /* request_headers.remove */
    bool has_mirror;                    /* its own mirror, instead of the pool's */
    struct conf_mirror mirror;
};

/* One request of a preflight list (issue 19). */
struct conf_preflight_req {
    char *method;               /* default "GET" */
    char *path;                 /* required: what is sent as the request target */
    int expect_status;          /* default 200 */
    char *expect_body_contains; /* NULL: any body */
    int line;
};

/*
 * preflight = ( { name; timeout_ms; requests = ( ... ); } ): requests a
 * rollout sends to every READY backend of its canary group before it moves
 * any traffic (`rollout start ... preflight=NAME`).
 */
struct conf_preflight {
    char *name;
    int timeout_ms; /* per request, default 2000 */
    struct conf_preflight_req *requests;
    int nrequests;
    int line;
};

struct conf_cluster {
    bool enabled;
    char **etcd;
    int netcd;
    char *prefix;
    char *instance;
};

struct veer_conf {
    char *path;  /* file it was loaded from */
    int workers; /* default: number of online CPUs */
    struct conf_listen *listens;
    int nlistens;
    struct conf_admin admin;
    struct conf_timeouts timeouts;
    struct conf_limits limits;
    char *state_file; /* NULL = off */
    char *audit_log;  /* NULL = off */
    struct conf_maintenance maintenance;
    struct conf_cluster cluster;
    struct conf_resolvers resolvers;
    struct conf_pool *pools;
    int npools;
    struct hmap pool_index; /* name -> index into pools */
    struct conf_route *routes;
    int nroutes;
    struct conf_preflight *preflights;
    int npreflights;
    struct routes *routes_table; /* compiled from routes (routes.h); NULL when there are none */
    void **sections; /* the object of each conf_sections[] entry, in order (see below) */
};

/*
 * Load and validate FILE. On success returns a new veer_conf owned by the
 * caller (free with conf_free) and leaves err untouched. On failure returns
 * NULL and writes "FILE:LINE: message" (no trailing newline) into err.
 */
struct veer_conf *conf_load(const char *path, char *err, size_t errlen);

void conf_free(struct veer_conf *conf);

/* Find a pool by name; NULL when absent. */
const struct conf_pool *conf_find_pool(const struct veer_conf *conf, const char *name);

/* Whether some backend, discover entry or share of p is in group `group`. */
bool conf_pool_has_group(const struct conf_pool *p, const char *group);

/* A preflight list by name; NULL when absent. */
const struct conf_preflight *conf_find_preflight(const struct veer_conf *c, const char *name);

/* An entry's confirm and max_backends, its own or the resolvers' ones. */
int conf_discover_confirm(const struct veer_conf *c, const struct conf_discover *d);
int conf_discover_max(const struct veer_conf *c, const struct conf_discover *d);

/* Find a backend of pool p by name; NULL when absent (or p is NULL). */
const struct conf_backend *conf_find_backend(const struct conf_pool *p, const char *name);

/*
 * Parse "host:port" or "[v6]:port" with a numeric address (or "localhost",
 * meaning 127.0.0.1) into out. Port 0 is allowed only when allow_port0 is
 * true (listeners: the kernel picks a port). Returns 0 or -1 with a reason
 * in err.
 */
int conf_parse_addr(const char *text, bool allow_port0, struct conf_addr *out, char *err,
                    size_t errlen);

/* --- the schema, and keys parsed for someone else ------------------------------------- */

/*
 * A group of the file is read against a table of struct conf_field, one
 * row per key: its type, its range or check, and where the value lands in
 * the object the group fills. An unknown key, a wrong type or a value out
 * of range is an error at the key's file and line. conf.c describes its
 * own keys so, and a module describes its keys with the same rows (a
 * struct conf_section) -- that is how a module parses its own keys.
 */
struct conf_loader;      /* one file being loaded (conf.c) */
struct config_setting_t; /* libconfig's */

typedef int (*conf_parse_fn)(struct conf_loader *ld, const struct config_setting_t *s, void *obj);
/* NULL when the (non-empty) value is fine, else what is wrong with it: "must start with '/'". */
typedef const char *(*conf_check_fn)(const char *value);

enum conf_kind {
    CONF_K_INT,     /* int, min..max */
    CONF_K_INT64,   /* int64_t, min..max */
    CONF_K_BOOL,    /* bool */
    CONF_K_STRING,  /* char *, non-empty, passing check; replaces (and frees) a default */
    CONF_K_STRINGS, /* struct conf_strings, each passing check; replaces (and frees) a default */
    CONF_K_GROUP,   /* the sub-object at off, against the table sub */
    CONF_K_CUSTOM,  /* parse(ld, setting, the whole object) */
};

/*
 * One key of a group. off is the offset of the target in the object the
 * group fills; a CONF_K_GROUP fills the sub-object at off with the table
 * sub; a CONF_K_CUSTOM parser gets the whole object, so it may set several
 * fields.
 */
struct conf_field {
    const char *name;
    enum conf_kind kind;
    bool required;
    size_t off;
    long long min, max;
    conf_check_fn check;
    const struct conf_field *sub;
    conf_parse_fn parse;
};

/* Rows of the tables; the key is the member's name unless given. */
// clang-format off
#define CF_INT(T, m, lo, hi)   {.name = #m, .kind = CONF_K_INT, .off = offsetof(T, m), \
                                .min = (lo), .max = (hi)}
#define CF_INT64(T, m, lo, hi) {.name = #m, .kind = CONF_K_INT64, .off = offsetof(T, m), \
                                .min = (lo), .max = (hi)}
#define CF_BOOL(T, m)          {.name = #m, .kind = CONF_K_BOOL, .off = offsetof(T, m)}
#define CF_STR(T, m, chk)      {.name = #m, .kind = CONF_K_STRING, .off = offsetof(T, m), \
                                .check = (chk)}
#define CF_REQ_STR(T, m, chk)  {.name = #m, .kind = CONF_K_STRING, .off = offsetof(T, m), \
                                .check = (chk), .required = true}
#define CF_STRS(T, m, chk)     {.name = #m, .kind = CONF_K_STRINGS, .off = offsetof(T, m), \
                                .check = (chk)}
#define CF_GROUP(T, m, tbl)    {.name = #m, .kind = CONF_K_GROUP, .off = offsetof(T, m), \
                                .sub = (tbl)}
#define CF_CUSTOM(key, fn)     {.name = (key), .kind = CONF_K_CUSTOM, .parse = (fn)}
#define CF_REQ_CUSTOM(key, fn) {.name = (key), .kind = CONF_K_CUSTOM, .parse = (fn), \
                                .required = true}
#define CF_END                 {.name = NULL}
// clang-format on

/* A check for rows: the value must start with '/'. */
const char *conf_check_path(const char *value);

/*
 * A check for rows that hold a path prefix matched against request paths
 * (maintenance.allow, health_endpoints.prefix): it must start with '/', have
 * no '?' or '#', and be canonical (path.h), since requests are matched on
 * their canonical path and a prefix spelled otherwise ("/a//b", "/a/./b",
 * "/%7Ea") would never match; one with %2F and the like could only match
 * requests that are refused.
 */
const char *conf_check_path_prefix(const char *value);

/*
 * Keys parsed for a module. The keys sit at the top level of the file
 * (group NULL) or inside one of conf.c's own top-level groups (group
 * "maintenance": maintenance.allow beside conf.c's maintenance.retry_after);
 * a key that is neither conf.c's nor a section's is an unknown key like
 * any other. A section's keys are optional (required is not checked). Each
 * configuration gets one object of size bytes per section, zeroed, filled
 * by defaults, then by the keys present; conf_free frees the strings and
 * string lists the rows filled, then calls free (if set) for anything else
 * the object holds, then the object.
 */
struct conf_section {
    const char *group;             /* NULL, or the name of one of conf.c's top-level groups */
    const struct conf_field *keys; /* NULL: no keys (the section is skipped) */
    size_t size;
    void (*defaults)(void *obj); /* may be NULL: all zero */
    void (*free)(void *obj);     /* may be NULL */
};

/*
 * Every section, NULL-terminated, in the order of veer_conf.sections.
 * Defined by the modules' generated table (modules/table.c.in): conf.c
 * calls the modules' parsers through it without knowing a module.
 */
extern const struct conf_section *const conf_sections[];

/* The object conf parsed for sec (an entry of conf_sections); NULL when sec has none. */
const void *conf_section(const struct veer_conf *conf, const struct conf_section *sec);

/*
 * Where a module's key landed, by its dotted name ("access_log",
 * "health_endpoints.prefix", "maintenance.allow"): a pointer to the int,
 * int64_t, bool, char * or struct conf_strings its row fills. NULL when no
 * section has that key (conf.c's own keys are struct members) or its row is
 * CONF_K_CUSTOM. For tests and diagnostics; a module reads its own object.
 */
const void *conf_value(const struct veer_conf *conf, const char *key);

/* What a request on route r gets when r sends to pool p (conf_route_effective). */
struct conf_route_eff {
    struct conf_retries retries; /* p's, with the keys r sets over them */
    int hold_ms;                 /* r's, else p's */
    int64_t body_bytes;          /* r's, else p's, else limits.body_bytes; 0 = unlimited */
};

/* Whether route r sets none of the per-route keys: its requests get their pool's values. */
bool conf_route_plain(const struct conf_route *r);

/* The values of route r of c for a request it sends to pool p (any pool of c). */
void conf_route_effective(const struct veer_conf *c, const struct conf_route *r,
                          const struct conf_pool *p, struct conf_route_eff *out);

#endif
