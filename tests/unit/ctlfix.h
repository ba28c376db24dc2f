/*
 * ctlfix.h - the control thread with no worker, as the control-plane suites
 * use it: a model from a config text, its first snapshot, the audit log the
 * config names, control_init; admin lines go through control_execute and,
 * with no worker to wait for, are answered at once (ctl_run).
 *
 * The config text is a printf format with one %s: the test's directory
 * (for audit_log, state_file). ctl_change() runs a line that must be
 * accepted (OK gen=N+1, a new snapshot of that generation, one audit record
 * of it); ctl_refused() one that must be refused (ERR, generation and
 * snapshot untouched, the refusal audited). ctl_down() checks that the audit
 * chain still verifies.
 *
 * One fixture per process (Check's fork mode): CF.
 */
#ifndef VEER_CTLFIX_H
#define VEER_CTLFIX_H

#include "audit.h"
#include "cmd.h"
#include "control.h"
#include "model.h"
#include "routing.h"
#include "veer.h"

#include <check.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    char dir[64];
    char audit[96];
    struct veer_conf *c;
    struct model *m;
    struct event_base *base;
    char reply[8192];
    bool replied, ok;
} CF;

static void ctl_up(const char *conf_format)
{
    char path[128], text[8192], err[512] = "";
    FILE *f;

    memset(&CF, 0, sizeof(CF));
    strcpy(CF.dir, "/tmp/ctlfix.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(CF.dir));
    snprintf(path, sizeof(path), "%s/veer.conf", CF.dir);
    snprintf(text, sizeof(text), conf_format, CF.dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    CF.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(CF.c != NULL, "config: %s", err);
    snprintf(CF.audit, sizeof(CF.audit), "%s/audit.log", CF.dir);
    veer_nworkers = 0; /* no worker: no per-worker slots, nobody to announce a snapshot */
    CF.m = model_from_conf(CF.c);
    routing_init(0, routing_build(CF.m));
    ck_assert_int_eq(audit_open(CF.audit, err, sizeof(err)), 0);
    CF.base = event_base_new();
    ck_assert_ptr_nonnull(CF.base);
    ck_assert_int_eq(control_init(CF.base, CF.c, CF.m, NULL, 0), VEER_OK);
}

static void ctl_down(void)
{
    char msg[256];

    ck_assert_msg(audit_verify_ex(CF.audit, NULL, NULL, msg, sizeof(msg)) == 0, "audit: %s", msg);
    control_shutdown();
    event_base_free(CF.base);
    routing_shutdown();
    model_free(CF.m);
    conf_free(CF.c);
    audit_close();
    unlink(CF.audit);
    rmdir(CF.dir);
}

static void ctl_on_done(struct ctl_req *r, const char *text, bool ok)
{
    (void)r;
    snprintf(CF.reply, sizeof(CF.reply), "%s", text);
    CF.replied = true;
    CF.ok = ok;
}

/* Run an admin line through control_execute; with no worker its reply comes at once. */
static const char *ctl_run(const char *line)
{
    struct ctl_req *r = calloc(1, sizeof(*r));
    char err[256];

    ck_assert_ptr_nonnull(r);
    ck_assert_msg(cmd_parse(line, &r->cmd, err, sizeof(err)) == 0, "%s: %s", line, err);
    snprintf(r->line, sizeof(r->line), "%s", line);
    r->peer = (struct audit_peer){1000, 1000, 4242};
    r->t_read_us = veer_now_us();
    r->done = ctl_on_done;
    CF.replied = false;
    control_execute(r);
    ck_assert_msg(CF.replied, "no reply to %s", line);
    ck_assert_msg(strlen(CF.reply) >= 2 && strcmp(CF.reply + strlen(CF.reply) - 2, "\n\n") == 0,
                  "reply not ended by an empty line: %s", CF.reply);
    return CF.reply;
}

/* The records of the audit log, in order. */
static json_t *ctl_audit_records(void)
{
    FILE *f = fopen(CF.audit, "r");
    json_t *out = json_array();
    char line[8192];

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t e;
        json_t *rec = json_loads(line, 0, &e);

        ck_assert_msg(rec != NULL, "audit line: %s: %s", e.text, line);
        json_array_append_new(out, rec);
    }
    fclose(f);
    return out;
}

/* The last audit record: the operator's line, this result (prefix), this generation. */
static void ctl_assert_last_record(const char *line, const char *result, uint64_t gen)
{
    json_t *a = ctl_audit_records();
    json_t *rec = json_array_get(a, json_array_size(a) - 1);

    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), "operator");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "command")), line);
    ck_assert_msg(
        strncmp(json_string_value(json_object_get(rec, "result")), result, strlen(result)) == 0,
        "%s: audited result %s, want %s", line, json_string_value(json_object_get(rec, "result")),
        result);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "generation")), gen);
    json_decref(a);
}

static size_t ctl_audit_count(void)
{
    json_t *a = ctl_audit_records();
    size_t n = json_array_size(a);

    json_decref(a);
    return n;
}

/*
 * A change that must be accepted: `OK gen=N applied_us=T` with N one more
 * than before, then `more` when given; a new snapshot of generation N; one
 * audit record of it.
 */
static void ctl_change(const char *line, const char *more)
{
    uint64_t gen = CF.m->generation;
    size_t records = ctl_audit_count();
    unsigned long long n, t;
    int end = 0;

    ctl_run(line);
    ck_assert_msg(CF.ok, "%s: %s", line, CF.reply);
    ck_assert_msg(sscanf(CF.reply, "OK gen=%llu applied_us=%llu%n", &n, &t, &end) == 2 && end > 0,
                  "%s: %s", line, CF.reply);
    ck_assert_uint_eq(n, gen + 1);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    if (more)
        ck_assert_msg(strncmp(CF.reply + end, more, strlen(more)) == 0, "%s: %s (want %s)", line,
                      CF.reply, more);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    ctl_assert_last_record(line, "OK", gen + 1);
}

/* A change that must be refused with want in its ERR line; nothing published; audited. */
static void ctl_refused(const char *line, const char *want)
{
    uint64_t gen = CF.m->generation;
    const struct routing *before = routing_current();
    size_t records = ctl_audit_count();

    ctl_run(line);
    ck_assert_msg(!CF.ok && strncmp(CF.reply, "ERR ", 4) == 0, "%s: %s", line, CF.reply);
    ck_assert_msg(strstr(CF.reply, want) != NULL, "%s: %s (want %s)", line, CF.reply, want);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), before);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    ctl_assert_last_record(line, "ERR ", gen);
}

#endif
