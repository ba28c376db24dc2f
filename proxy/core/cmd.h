/*
 * cmd.h - admin command lines (the veerctl / admin socket protocol of
 * ARCHITECTURE.md) parsed into a struct cmd. Pure: no state is read or
 * changed here, so every good and bad line is testable on its own. Whether
 * a named pool, backend or group exists is checked by the caller.
 */
#ifndef VEER_CMD_H
#define VEER_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMD_NAME_MAX    64
#define CMD_MAX_SHARES  32
#define CMD_MAX_STEPS   32
#define CMD_LINE_MAX    4096 /* longer lines are refused */
#define CMD_MAX_HEADERS 32   /* route explain: header arguments */

enum cmd_kind {
    CMD_HELP = 0,
    CMD_SHOW_POOLS,     /* show pools */
    CMD_SHOW_POOL,      /* show pool P [--json] */
    CMD_SET_WEIGHT,     /* set weight P/B N */
    CMD_SET_STATE,      /* set state P/B ready|drain|maint */
    CMD_SHIFT,          /* shift P g1=S1 [g2=S2 ...] [--force] */
    CMD_SWAP,           /* swap P [--force] */
    CMD_ROLLBACK,       /* rollback P [--force] | rollback route R */
    CMD_ADD_BACKEND,    /* add backend P NAME ADDR [weight W] [group G] */
    CMD_DEL_BACKEND,    /* del backend P NAME */
    CMD_DRAIN,          /* drain P/B [--wait] [--timeout T] [--force] */
    CMD_REPLACE,        /* replace P OLD NEWNAME NEWADDR [--timeout T] */
    CMD_MAINTENANCE,    /* maintenance on|off [P] [--retry-after S] [--hold T] */
    CMD_ROLLOUT_START,  /* rollout start P canary=G steps=1,5,20,100 interval=30s [...] */
    CMD_ROLLOUT_STATUS, /* rollout status P */
    CMD_ROLLOUT_PAUSE,  /* rollout pause P */
    CMD_ROLLOUT_RESUME, /* rollout resume P */
    CMD_ROLLOUT_ABORT,  /* rollout abort P */
    CMD_AUDIT_VERIFY,   /* audit verify [FILE] */
    CMD_RELOAD,         /* reload */
    CMD_UPGRADE,        /* upgrade */
    CMD_SHOW_CLUSTER,   /* show cluster [--json] */
    CMD_SHOW_STATS,     /* show stats [--json]: traffic over the last second (veerctl top) */
    CMD_ROUTE_EXPLAIN,  /* route explain METHOD HOST PATH [Name:Value ...] */
    CMD_SHOW_ROUTES,    /* show routes [--json] */
    CMD_ROUTE_MAINT,    /* route maintenance ROUTE on|off [--retry-after S] [--hold T] */
    CMD_ROUTE_SET,      /* route set ROUTE pool POOL */
    CMD_SHOW_DISCOVERY, /* show discovery [--json] */
    CMD_MIRROR,         /* mirror P on [group=G] [percent=X] | mirror P off */
    CMD_MIRROR_REPORT,  /* mirror report P [--json] */
};

enum cmd_state_target {
    CMD_STATE_READY = 0,
    CMD_STATE_DRAIN,
    CMD_STATE_MAINT,
};

struct cmd_share {
    char group[CMD_NAME_MAX];
    int share; /* 0..100 */
};

struct cmd {
    enum cmd_kind kind;
    bool is_change; /* changes state (audited as a change, applied on the control path) */

    char pool[CMD_NAME_MAX];     /* "" when not given (maintenance without pool) */
    char route[CMD_NAME_MAX];    /* route maintenance/set, rollback route: ROUTE */
    char backend[CMD_NAME_MAX];  /* set weight/state, drain, del, add: NAME, replace: OLD */
    char backend2[CMD_NAME_MAX]; /* replace: NEWNAME */
    char addr[80];               /* add backend ADDR, replace NEWADDR (syntax checked) */
    char group[CMD_NAME_MAX];    /* add backend [group G]; "" = default */
    int weight;                  /* set weight N; add backend [weight W] (-1 = not given) */
    enum cmd_state_target state; /* set state */

    struct cmd_share shares[CMD_MAX_SHARES]; /* shift */
    int nshares;

    bool json;          /* --json */
    bool force;         /* --force */
    bool wait;          /* --wait */
    int64_t timeout_ms; /* --timeout T; -1 when not given */

    bool on;         /* maintenance on|off */
    int retry_after; /* --retry-after S; -1 when not given */
    int64_t hold_ms; /* --hold T; -1 when not given */

    /* rollout start */
    char canary[CMD_NAME_MAX];
    int steps[CMD_MAX_STEPS]; /* percents, strictly increasing, 1..100, last may be 100 */
    int nsteps;
    int64_t interval_ms;
    double max_error_rate;        /* percent; -1 when not given */
    int64_t max_p99_ms;           /* -1 when not given */
    int min_requests;             /* -1 when not given */
    char preflight[CMD_NAME_MAX]; /* preflight=NAME; "" when not given */
    int64_t shadow_ms;            /* shadow=T: the shadow phase; -1 when not given */
    double shadow_percent;        /* shadow-percent=PCT; -1 when not given */
    double max_diff_rate;         /* max-diff-rate=PCT; -1 when not given */

    /* mirror P on: group=G (in group, "" = the pool's config), percent=X (-1 = the config's) */
    double percent;

    char file[256]; /* audit verify [FILE]; "" = the configured audit log */

    /*
     * route explain: the request's strings, NUL-terminated, at offsets into
     * buf (offsets, not pointers, so a struct cmd may be copied). host is
     * absent (has_host false) when HOST was "-". path is PATH up to the
     * first '?', query the rest ("" when none). Header i is buf + hname[i]
     * (the text before the first ':') and buf + hvalue[i] (the rest).
     */
    struct {
        uint16_t method, host, path, query;
        bool has_host;
        uint16_t hname[CMD_MAX_HEADERS], hvalue[CMD_MAX_HEADERS];
        int nheaders;
        char buf[CMD_LINE_MAX + 8];
    } x;
};

/*
 * Parse one command line (without its newline). Returns 0 and fills *c, or
 * -1 with a one-line reason in err (e.g. "unknown command 'foo' (try
 * help)", "usage: set weight POOL/BACKEND WEIGHT", "weight must be 0..1000
 * (got 1001)"). Tokens are separated by spaces or tabs; names are
 * [A-Za-z0-9._-]+ (at most CMD_NAME_MAX - 1 bytes).
 */
int cmd_parse(const char *line, struct cmd *c, char *err, size_t errlen);

/*
 * A duration: "250ms", "30s", "2m", or a plain number of seconds. Returns
 * milliseconds, or -1 when malformed or not positive.
 */
int64_t cmd_parse_duration(const char *s);

/* The help text (every command with its usage), lines ending in '\n'. */
const char *cmd_help(void);

/* Canonical name of a kind, e.g. "set weight" (for logs). */
const char *cmd_kind_name(enum cmd_kind k);

#endif
