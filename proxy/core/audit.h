/*
 * audit.h - the append-only audit log: one JSON line per change or refused
 * change, hash-chained with SHA-256 (OpenSSL) so that editing, removing or
 * reordering a record is detected by `audit verify`.
 *
 * A record is one line:
 *   {"seq":N,"time":"2026-11-23T15:04:05.123Z","actor":"operator","uid":0,
 *    "gid":0,"pid":123,"user":"root","command":"shift api blue=0 green=100",
 *    "result":"OK","generation":12,"before":{...},"after":{...},
 *    "prev":"<64 hex>","hash":"<64 hex>"}
 * where hash is the SHA-256 of the line up to (not including) ',"hash":'
 * and prev is the hash of the previous record (64 zeros for the first).
 * Records are written with one write(2), no fsync, before the admin reply;
 * the fsync happens off the reply path (see state.h, persistence thread).
 */
#ifndef VEER_AUDIT_H
#define VEER_AUDIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Who asked (SO_PEERCRED of the admin connection; -1 for veer itself). */
struct audit_peer {
    int uid;
    int gid;
    int pid;
};

/*
 * Open (create, mode 0640) the audit log at path for appending and pick up
 * the chain from its last record. A log whose last record cannot be read
 * back is reported and a new chain starts (prev of zeros), never fatal.
 * path NULL: auditing off (audit_write does nothing). Returns 0, or -1 with
 * a reason in err when the file cannot be opened.
 */
int audit_open(const char *path, char *err, size_t errlen);
void audit_close(void);

/*
 * Append a record. actor is "operator", "health", "rollout", ...; before
 * and after are JSON values as text (NULL writes null). result is "OK" or
 * the ERR line. Returns 0, or -1 when the write failed (logged).
 */
int audit_write(const char *actor, const struct audit_peer *peer, const char *command,
                const char *result, uint64_t generation, const char *before_json,
                const char *after_json);

/*
 * Hold (true) or allow appends again. While held, audit_write appends
 * nothing and returns -1 with a warning: during an upgrade the chain
 * passes to the new process, and two writers would fork it.
 */
void audit_hold(bool held);
/* Why the last audit_write returned -1 (strerror text). */
const char *audit_error(void);

/* File descriptor of the open log, -1 when off (for fsync elsewhere). */
int audit_fd(void);

/* Records written since open (tests). */
uint64_t audit_seq(void);

/*
 * Where the open log's part of the chain starts (its first record, or the
 * next one to be written into an empty file: seq and prev) and where it ends
 * (the last record written: seq and hash). The state file keeps it, so a log
 * cut at either end while veer was down is caught at the next start.
 */
struct audit_anchor {
    uint64_t first_seq; /* 0: unknown */
    char first_prev[65];
    uint64_t last_seq;
    char last_hash[65];
};

/* The open log's anchor; false when auditing is off or nothing is known. */
bool audit_anchor(struct audit_anchor *a);

/*
 * The anchor the state file saved, for the next audit_open: a log that ends
 * before its last record, or does not start with its first, lost records
 * (logged; the chain continues from the saved last record so the gap stays
 * visible); an empty log continues the chain (rotation).
 */
void audit_expect(const struct audit_anchor *a);

/* The live log as the control thread sees it now, for audit_verify_ex. */
struct audit_live {
    struct audit_anchor anchor;
    dev_t dev;
    ino_t ino;
    uint64_t size; /* verify reads no further: records written later are not its business */
};
bool audit_live(struct audit_live *live);

/*
 * Check the chain of the log at path. Returns 0 and "records=N" in msg when
 * every record's hash and prev match; 1 with "record N (line L): why" naming
 * the first broken record; -1 with a reason when the file cannot be read.
 * Only regular files are read (never blocking on a FIFO), up to their size
 * at open. When path is the live log (same file as live), its first and
 * last records must also be the ones veer holds: records removed from
 * either end are named ("record N (line L): missing ..."). cancel, when
 * set, stops a long verify early (-1). Any thread.
 */
int audit_verify_ex(const char *path, const struct audit_live *live, const atomic_bool *cancel,
                    char *msg, size_t msglen);
int audit_verify(const char *path, char *msg, size_t msglen);

#endif
