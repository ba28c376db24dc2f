/*
 * ctlfix.h - the control thread with no worker thread, as the control-plane
 * suites use it: a model from a config text, its first snapshot, the audit
 * log the config names, control_init; admin lines go through
 * control_execute and, with no worker to wait for, are answered at once
 * (ctl_run), or whenever they are (ctl_start, then the loop stepped).
 *
 * Used by check_control.c, check_drain.c, check_admission.c,
 * check_reload.c, check_admin.c, check_show.c, check_routectl.c,
 * check_discovery.c and check_discjson.c.
 *
 * The config text is a printf format whose every %s (two at most) is the
 * test's directory (for audit_log, state_file, the admin socket); it must
 * put audit_log at <dir>/audit.log. ctl_up_with() takes options: per-worker
 * slots in every backend, snapshot readers, the file kept for a reload, a
 * step between the model's making and control_init.
 * ctl_change() runs a line that must be accepted (OK gen=N+1, a new
 * snapshot of that generation, one audit record of it); ctl_refused() one
 * that must be refused (ERR, generation and snapshot untouched, the refusal
 * audited). ctl_down() checks that the audit chain still verifies and frees
 * all (the configuration in force, after a reload too).
 *
 * A suite that starts more (the admin socket, the admin HTTP side) does so
 * after ctl_up and stops it before ctl_down. One fixture per process
 * (Check's fork mode): CF.
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

/* How long CTL_LOOP_UNTIL waits for something the control loop does by itself (a timer). */
#define CTL_DEADLINE_US (10 * 1000 * 1000)

/* The answer to one admin line, filled in whenever it comes. */
struct ctl_answer {
    char text[16384];
    bool done, ok;
};

struct ctlfix_opts {
    unsigned slots;   /* veer_nworkers: per-worker figures in every backend, set by the test */
    unsigned readers; /* snapshot readers (routing_init), each announced on the first snapshot */
    bool keep_file;   /* veer.conf stays in the directory (CF.path), for a reload to read */
    void (*before_control)(void); /* called once the model is built, before control_init */
};

static struct {
    char dir[64];
    char path[96];
    char audit[96];
    struct veer_conf *c; /* the configuration veer started with */
    struct model *m;
    struct event_base *base;
    struct ctl_answer reply; /* of the last ctl_run */
} CF __attribute__((unused));

static inline void ctl_up_with(const char *conf_format, const struct ctlfix_opts *o)
{
    char text[8192], err[512] = "";
    FILE *f;

    memset(&CF, 0, sizeof(CF));
    strcpy(CF.dir, "/tmp/ctlfix.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(CF.dir));
    snprintf(CF.path, sizeof(CF.path), "%s/veer.conf", CF.dir);
    snprintf(CF.audit, sizeof(CF.audit), "%s/audit.log", CF.dir);
    ck_assert_uint_lt((size_t)snprintf(text, sizeof(text), conf_format, CF.dir, CF.dir),
                      sizeof(text));
    f = fopen(CF.path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    CF.c = conf_load(CF.path, err, sizeof(err));
    if (!o->keep_file)
        unlink(CF.path);
    ck_assert_msg(CF.c != NULL, "config: %s", err);
    ck_assert_str_eq(CF.c->audit_log, CF.audit);

    veer_nworkers = o->slots; /* no worker thread: nobody else writes the slots */
    CF.m = model_from_conf(CF.c);
    if (o->before_control)
        o->before_control(); /* e.g. discovery_adopt, as a state file's restore does */
    routing_init(o->readers, routing_build(CF.m));
    for (unsigned i = 0; i < o->readers; i++)
        routing_announce(i, CF.m->generation);
    ck_assert_int_eq(audit_open(CF.audit, err, sizeof(err)), 0);
    CF.base = event_base_new();
    ck_assert_ptr_nonnull(CF.base);
    ck_assert_int_eq(control_init(CF.base, CF.c, CF.m, NULL, 0), VEER_OK);
}

/* No per-worker slots, no snapshot reader, the file gone once read. */
static inline void ctl_up(const char *conf_format)
{
    const struct ctlfix_opts none = {0};

    ctl_up_with(conf_format, &none);
}

static inline void ctl_down(void)
{
    char msg[256];
    /* As main.c: the configuration in force is the caller's; those a reload replaced, control's. */
    struct veer_conf *current = (struct veer_conf *)control_conf();

    /* Whatever the test did, the audit chain it left verifies. */
    ck_assert_msg(audit_verify_ex(CF.audit, NULL, NULL, msg, sizeof(msg)) == 0, "audit: %s", msg);
    control_shutdown();
    event_base_free(CF.base);
    routing_shutdown();
    model_free(CF.m);
    conf_free(current);
    audit_close();
    unlink(CF.audit);
    unlink(CF.path);
    rmdir(CF.dir);
}

/* --- admin lines ------------------------------------------------------------------------- */

static inline void ctl_on_done(struct ctl_req *r, const char *text, bool ok)
{
    struct ctl_answer *a = r->arg;

    ck_assert_msg(!a->done, "answered twice: %s then %s", a->text, text);
    snprintf(a->text, sizeof(a->text), "%s", text);
    a->done = true;
    a->ok = ok;
}

/* A request for an admin line, from uid 1000, whose answer goes to a (emptied). */
static inline struct ctl_req *ctl_req(const char *line, struct ctl_answer *a)
{
    struct ctl_req *r = calloc(1, sizeof(*r));
    char err[256];

    ck_assert_ptr_nonnull(r);
    ck_assert_msg(cmd_parse(line, &r->cmd, err, sizeof(err)) == 0, "%s: %s", line, err);
    snprintf(r->line, sizeof(r->line), "%s", line);
    r->peer = (struct audit_peer){1000, 1000, 4242};
    r->t_read_us = veer_now_us();
    r->done = ctl_on_done;
    r->arg = a;
    memset(a, 0, sizeof(*a));
    return r;
}

/* Run an admin line through control_execute; its answer may come later, in a. */
static inline void ctl_start(const char *line, struct ctl_answer *a)
{
    control_execute(ctl_req(line, a));
}

/*
 * Run an admin line that is answered at once (with no worker, all but a
 * wait); the reply (CF.reply) is ended by exactly one empty line.
 */
static inline const char *ctl_run(const char *line)
{
    size_t n;

    ctl_start(line, &CF.reply);
    ck_assert_msg(CF.reply.done, "no reply to %s", line);
    n = strlen(CF.reply.text);
    ck_assert_msg(n >= 2 && strcmp(CF.reply.text + n - 2, "\n\n") == 0 &&
                      (n == 2 || CF.reply.text[n - 3] != '\n'),
                  "%s: reply not ended by exactly one empty line: [%s]", line, CF.reply.text);
    return CF.reply.text;
}

/* --- the audit log ------------------------------------------------------------------- */

/* The records of the audit log, in order. */
static inline json_t *ctl_audit_records(void)
{
    FILE *f = fopen(CF.audit, "r");
    json_t *out = json_array();
    char *line = NULL;
    size_t cap = 0;

    ck_assert_ptr_nonnull(f);
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *rec = json_loads(line, 0, &e);

        ck_assert_msg(rec != NULL, "audit line: %s: %s", e.text, line);
        json_array_append_new(out, rec);
    }
    free(line);
    fclose(f);
    return out;
}

/* The last audit record's before/after JSON, as text ("(none)" when absent). */
static inline void ctl_last_before_after(char *before, char *after, size_t len)
{
    json_t *a = ctl_audit_records();
    json_t *rec = json_array_get(a, json_array_size(a) - 1);
    char *b = json_dumps(json_object_get(rec, "before"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *f = json_dumps(json_object_get(rec, "after"), JSON_COMPACT | JSON_PRESERVE_ORDER);

    snprintf(before, len, "%s", b ? b : "(none)");
    snprintf(after, len, "%s", f ? f : "(none)");
    free(b);
    free(f);
    json_decref(a);
}

static inline size_t ctl_audit_count(void)
{
    json_t *a = ctl_audit_records();
    size_t n = json_array_size(a);

    json_decref(a);
    return n;
}

/* The last audit record: the operator's line (uid 1000), this result (prefix), this generation. */
static inline void ctl_assert_last_record(const char *line, const char *result, uint64_t gen)
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
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "uid")), 1000);
    json_decref(a);
}

/* --- the contract of a change -------------------------------------------------------------- */

/*
 * A change that must be accepted at once: `OK gen=N applied_us=T` with N
 * one more than before, then `more` when given; a new snapshot of
 * generation N; one audit record of it. Returns N.
 */
static inline uint64_t ctl_change(const char *line, const char *more)
{
    uint64_t gen = CF.m->generation;
    size_t records = ctl_audit_count();
    unsigned long long n, t;
    int end = 0;

    ctl_run(line);
    ck_assert_msg(CF.reply.ok, "%s: %s", line, CF.reply.text);
    ck_assert_msg(sscanf(CF.reply.text, "OK gen=%llu applied_us=%llu%n", &n, &t, &end) == 2 &&
                      end > 0,
                  "%s: %s", line, CF.reply.text);
    ck_assert_uint_eq(n, gen + 1);
    ck_assert_uint_eq(CF.m->generation, gen + 1);
    ck_assert_uint_eq(routing_current()->generation, gen + 1);
    if (more)
        ck_assert_msg(strncmp(CF.reply.text + end, more, strlen(more)) == 0, "%s: %s (want %s)",
                      line, CF.reply.text, more);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    ctl_assert_last_record(line, "OK", gen + 1);
    return n;
}

/* A change that must be refused with want in its ERR line; nothing published; audited. */
static inline void ctl_refused(const char *line, const char *want)
{
    uint64_t gen = CF.m->generation;
    const struct routing *before = routing_current();
    size_t records = ctl_audit_count();

    ctl_run(line);
    ck_assert_msg(!CF.reply.ok && strncmp(CF.reply.text, "ERR ", 4) == 0, "%s: %s", line,
                  CF.reply.text);
    ck_assert_msg(strstr(CF.reply.text, want) != NULL, "%s: %s (want %s)", line, CF.reply.text,
                  want);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_ptr_eq(routing_current(), before);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    ctl_assert_last_record(line, "ERR ", gen);
}

/* --- stepping the control loop ------------------------------------------------------------- */

/* One turn of the control loop: what is ready runs (reports queued), nothing waits. */
static inline void ctl_loop_once(void)
{
    ck_assert_int_ge(event_base_loop(CF.base, EVLOOP_ONCE | EVLOOP_NONBLOCK), 0);
}

static inline void ctl_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* One turn of the control loop that waits for something to be ready, 10 ms at the most. */
static inline void ctl_step(void)
{
    struct event *t = evtimer_new(CF.base, ctl_tick_cb, NULL);
    struct timeval tv = {0, 10 * 1000};

    ck_assert_ptr_nonnull(t);
    evtimer_add(t, &tv);
    ck_assert_int_ge(event_base_loop(CF.base, EVLOOP_ONCE), 0);
    event_free(t);
}

/* Step the control loop until cond(arg) holds, for at most ms; whether it does. */
static inline bool ctl_wait(bool (*cond)(void *), void *arg, int ms)
{
    uint64_t end = veer_now_us() + (uint64_t)ms * 1000;
    bool ok;

    while (!(ok = cond(arg)) && veer_now_us() < end)
        ctl_step();
    return ok;
}

/* Step the control loop (its timers included) until cond holds; fail at the deadline. */
#define CTL_LOOP_UNTIL(cond)                                                                       \
    do {                                                                                           \
        uint64_t until_ = veer_now_us() + CTL_DEADLINE_US;                                         \
        while (!(cond)) {                                                                          \
            ck_assert_msg(veer_now_us() < until_, "timed out waiting for %s", #cond);              \
            ctl_step();                                                                            \
        }                                                                                          \
    } while (0)

#endif
