/*
 * state.h - the state file: runtime decisions (group shares, backend
 * weights and admin states, the generation) survive a restart.
 *
 * The file is text, one fact per line:
 *   veer-state 1
 *   generation 42
 *   audit 1 <64 hex> 57 <64 hex>    (the audit chain: first seq and prev, last seq and hash)
 *   pool api
 *   share blue 100
 *   share green 0
 *   backend blue-1 weight 100 admin ready
 *   backend green-1 weight 100 admin drain
 *   route payments pool payments-v2 conf payments maint 30 0
 *   end
 * (a route line only for a route whose runtime state differs from its
 * configuration: a route set, route maintenance.)
 * It is written atomically (temp file, fsync, rename, fsync of the
 * directory) by a persistence thread, off the admin reply path, within
 * 100 ms of a change; the same thread fsyncs the audit log.
 */
#ifndef VEER_STATE_H
#define VEER_STATE_H

#include "model.h"

#include <stdbool.h>
#include <stddef.h>

/* The model's runtime decisions as state file text (caller frees). */
char *state_render(const struct model *m);

/*
 * Apply state text to m: for pools, groups and backends that still exist,
 * set shares, weights and admin states; m->generation becomes the saved one
 * when that is higher. Names that no longer exist are skipped and counted.
 * Nothing is applied when the text is malformed (a corrupt file is
 * reported and ignored, never fatal) or when the shares of a pool would not
 * total 100. Returns the number of backends restored, or -1 with the reason
 * (with its line number) in msg.
 */
int state_apply(struct model *m, const char *text, char *msg, size_t msglen);

/*
 * Read and apply the state file at path. Returns what state_apply returns,
 * 0 with msg "no state file" when it does not exist, -1 when unreadable or
 * corrupt (msg says why).
 */
int state_load(struct model *m, const char *path, char *msg, size_t msglen);

/*
 * Readiness across a binary upgrade (HAProxy's server-state-file, in
 * miniature). Health is not in the state file: after a restart the fleet
 * may have changed, so every checked backend starts PENDING. An upgrade is
 * different: the old process was routing to its READY backends a moment
 * ago, so at freeze it renders every backend's readiness with its address
 * (state_render_health, its own small format "veer-health 1") and hands the
 * text to the new binary in an inherited memory file; the state file's
 * format is unchanged, so an older binary loads a newer one's file.
 *
 * state_apply_health: for pools that have checks, a backend of the same
 * pool, name and address starts with the carried readiness (READY, DOWN,
 * PENDING) instead of PENDING; the checks go on from there (a READY one
 * falls after `fall` failures, a DOWN one rises after `rise` passes).
 * Admin states are the state file's business and are not touched; circuit
 * breakers start closed and a carried READY backend at full weight (no
 * slow-start ramp: it was taking traffic). A malformed text changes nothing (-1, msg);
 * otherwise returns the number of backends carried, summary in msg.
 * state_load_health_fd reads the text from fd (from its start) first.
 */
char *state_render_health(const struct model *m);
int state_apply_health(struct model *m, const char *text, char *msg, size_t msglen);
int state_load_health_fd(struct model *m, int fd, char *msg, size_t msglen);

/* --- persistence thread ---------------------------------------------------- */

/*
 * Start the thread. state_path may be NULL (no state file); audit_fd may be
 * -1 (no audit log).
 */
int persist_start(const char *state_path, int audit_fd);

/* Queue state text to be written (takes ownership; a newer text replaces an unwritten one). */
void persist_state(char *text);

/* Ask for an fsync of the audit log. */
void persist_sync_audit(void);

/*
 * Wait (at most timeout_ms) until the newest state text is written and the
 * audit log fsynced: 0, or -1 when a write failed or the time ran out.
 */
int persist_flush(int timeout_ms);

/*
 * Hold (true) or allow writes again. While held, state texts and audit
 * fsyncs are dropped with a warning: after an upgrade hands over, the new
 * process owns the state file, and nothing here may overwrite it.
 */
void persist_hold(bool held);

/* Write what is pending, then stop the thread. */
void persist_stop(void);

/* Completed state writes (tests: wait for a write to land). */
unsigned long persist_writes(void);

#endif
