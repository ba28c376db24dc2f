/*
 * conf.h - the configuration file (libconfig) as a validated, immutable
 * struct veer_conf. Every key of the operator contract (ARCHITECTURE.md,
 * "Config") is parsed and checked here, including keys whose feature arrives
 * later, so that a config written for the full product always loads.
 */
#ifndef VEER_CONF_H
#define VEER_CONF_H

#include "hmap.h"

#include <stdbool.h>
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
    char *pool;
    int pool_index;       /* index into veer_conf.pools */
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

struct conf_health_endpoints {
    char *prefix; /* default "/api/health" */
    bool enabled; /* default true */
};

struct conf_maintenance {
    char **allow; /* path prefixes */
    int nallow;
    int retry_after; /* default 30 */
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
    struct conf_health_endpoints health_endpoints;
    char *state_file; /* NULL = off */
    char *audit_log;  /* NULL = off */
    char *access_log; /* NULL = off */
    struct conf_maintenance maintenance;
    struct conf_cluster cluster;
    struct conf_pool *pools;
    int npools;
    struct hmap pool_index; /* name -> index into pools */
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

#endif
