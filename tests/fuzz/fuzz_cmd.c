/*
 * fuzz_cmd.c - libFuzzer target: one admin command line through cmd_parse(),
 * as the admin socket hands it over (a NUL-terminated line, up to the first
 * NUL of the input). Also cmd_parse_duration() on the same text.
 *
 * Always checked: the reason of a refusal is one NUL-terminated line that
 * fits the buffer; an accepted command has NUL-terminated names made of
 * [A-Za-z0-9._-] and numbers in the ranges cmd.h documents. With
 * -DVEER_FUZZ_ORACLE, an accepted line also gives the same struct cmd
 * whatever the struct held before (cmd_parse fills every field) and a
 * refused one the same reason, and a small error buffer only truncates.
 */
#include "cmd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, const char *line)
{
    if (!ok) {
        fprintf(stderr, "fuzz_cmd: %s: '%s'\n", what, line);
        abort();
    }
}

/* Names: [A-Za-z0-9._-]; a backend's may also hold ':[]' (discovery's "<entry>-<address>"). */
static void name_ok_in(const char *s, size_t cap, bool may_be_empty, const char *line,
                       const char *extra)
{
    size_t n = strnlen(s, cap);

    check(n < cap, "name not terminated", line);
    check(may_be_empty || n > 0, "empty name", line);
    for (size_t i = 0; i < n; i++)
        check(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]) !=
                      NULL ||
                  (s[i] != '\0' && strchr(extra, s[i]) != NULL),
              "bad character in a name", line);
}

static void name_ok(const char *s, size_t cap, bool may_be_empty, const char *line)
{
    name_ok_in(s, cap, may_be_empty, line, "");
}

static void accepted_ok(const struct cmd *c, const char *line)
{
    check(cmd_kind_name(c->kind) != NULL, "no name for the kind", line);
    name_ok(c->pool, sizeof(c->pool), true, line);
    name_ok_in(c->backend, sizeof(c->backend), true, line, ":[]");
    name_ok_in(c->backend2, sizeof(c->backend2), true, line, ":[]");
    name_ok(c->route, sizeof(c->route), true, line);
    name_ok(c->preflight, sizeof(c->preflight), true, line);
    name_ok(c->group, sizeof(c->group), true, line);
    name_ok(c->canary, sizeof(c->canary), true, line);
    check(strnlen(c->addr, sizeof(c->addr)) < sizeof(c->addr), "addr not terminated", line);
    check(strnlen(c->file, sizeof(c->file)) < sizeof(c->file), "file not terminated", line);
    check(c->weight >= -1 && c->weight <= 1000, "weight out of range", line);
    check(c->nshares >= 0 && c->nshares <= CMD_MAX_SHARES, "share count out of range", line);
    for (int i = 0; i < c->nshares; i++) {
        name_ok(c->shares[i].group, sizeof(c->shares[i].group), false, line);
        check(c->shares[i].share >= 0 && c->shares[i].share <= 100, "share out of range", line);
    }
    check(c->nsteps >= 0 && c->nsteps <= CMD_MAX_STEPS, "step count out of range", line);
    for (int i = 0; i < c->nsteps; i++) {
        check(c->steps[i] >= 1 && c->steps[i] <= 100, "step out of range", line);
        check(i == 0 || c->steps[i] > c->steps[i - 1], "steps not increasing", line);
    }
    check(c->timeout_ms == -1 || c->timeout_ms > 0, "timeout out of range", line);
    check(c->hold_ms == -1 || c->hold_ms > 0, "hold out of range", line);
    check(c->retry_after >= -1 && c->retry_after <= 86400, "retry-after out of range", line);
    if (c->kind == CMD_ROLLOUT_START) {
        check(c->nsteps > 0 && c->interval_ms > 0, "rollout without steps or interval", line);
        check(c->max_error_rate == -1 || (c->max_error_rate >= 0 && c->max_error_rate <= 100),
              "max-error-rate out of range", line);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1), err[256];
    struct cmd c;
    int rc;

    memcpy(line, data, size);
    line[size] = '\0';
    memset(&c, 0xA5, sizeof(c));
    memset(err, 'X', sizeof(err));
    rc = cmd_parse(line, &c, err, sizeof(err));
    check(memchr(err, '\0', sizeof(err)) != NULL, "reason not terminated", line);
    check(strchr(err, '\n') == NULL, "reason spans lines", line);
    if (rc == 0) {
        accepted_ok(&c, line);
    } else {
        check(rc == -1, "cmd_parse returned neither 0 nor -1", line);
        check(err[0] != '\0', "refused without a reason", line);
    }
#ifdef VEER_FUZZ_ORACLE
    {
        struct cmd c2;
        char err2[256], small[8];
        int rc2;

        memset(&c2, 0x00, sizeof(c2));
        rc2 = cmd_parse(line, &c2, err2, sizeof(err2));
        check(rc2 == rc, "a second parse disagrees", line);
        if (rc == 0)
            check(memcmp(&c, &c2, sizeof(c)) == 0, "fields left as they were (not filled)", line);
        else
            check(strcmp(err, err2) == 0, "a second parse gives another reason", line);
        memset(small, 'X', sizeof(small));
        rc2 = cmd_parse(line, &c2, small, sizeof(small));
        check(rc2 == rc, "the error buffer size changes the outcome", line);
        check(memchr(small, '\0', sizeof(small)) != NULL, "short reason not terminated", line);
        if (rc != 0)
            check(strncmp(small, err, sizeof(small) - 1) == 0, "short reason is not a prefix",
                  line);
    }
#endif
    cmd_parse_duration(line);
    free(line);
    return 0;
}
