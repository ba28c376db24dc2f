/*
 * check_verify.c - `audit verify [FILE]` (verify.c) on the control thread
 * with no worker, set up as check_control.c sets it up: the chain is
 * checked on a thread of its own and the reply written from the control
 * loop, which the test runs (with a deadline) until the replies came.
 *
 * An intact log answers `OK records=N`; a byte changed in a record, a log
 * cut short or its last records removed answer `ERR record N (line L):
 * why` (audit.h's contract for audit_verify_ex). Without FILE the
 * configured audit_log is verified, up to its size at the time of the
 * command; with FILE, that file. Verifies run one at a time and are
 * answered in the order asked; the control thread answers other commands
 * meanwhile. At shutdown a running verify is stopped and the waiting ones
 * dropped, none answered (the requester is gone) and nothing left behind.
 */
#include "audit.h"
#include "cmd.h"
#include "control.h"
#include "model.h"
#include "routing.h"
#include "veer.h"

#include <check.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUDIT_LINE "audit_log = \"%s/audit.log\";\n"
#define CONF                                                                                       \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; } );\n"

static struct {
    char dir[64];
    char audit[96];
    char other[96]; /* a log of its own, for FILE */
    struct veer_conf *c;
    struct model *m;
    struct event_base *base;
    bool down;
} F;

/* with_log: the config names an audit_log. */
static void up(bool with_log)
{
    char path[128], err[512] = "";
    FILE *f;

    memset(&F, 0, sizeof(F));
    strcpy(F.dir, "/tmp/check_verify.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(F.dir));
    snprintf(F.audit, sizeof(F.audit), "%s/audit.log", F.dir);
    snprintf(F.other, sizeof(F.other), "%s/other.log", F.dir);
    snprintf(path, sizeof(path), "%s/veer.conf", F.dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    if (with_log)
        fprintf(f, AUDIT_LINE, F.dir);
    fputs(CONF, f);
    fclose(f);
    F.c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(F.c != NULL, "config: %s", err);

    veer_nworkers = 0;
    F.m = model_from_conf(F.c);
    routing_init(0, routing_build(F.m));
    ck_assert_int_eq(audit_open(F.c->audit_log, err, sizeof(err)), 0);
    F.base = event_base_new();
    ck_assert_ptr_nonnull(F.base);
    ck_assert_int_eq(control_init(F.base, F.c, F.m, NULL, 0), VEER_OK);
}

static void down(void)
{
    if (!F.down)
        control_shutdown();
    event_base_free(F.base);
    routing_shutdown();
    model_free(F.m);
    conf_free(F.c);
    audit_close();
    unlink(F.audit);
    unlink(F.other);
    rmdir(F.dir);
}

/* --- commands and replies ---------------------------------------------------------------- */

#define MAXR 8

/* Replies in the order they came, with the FILE of the command they answer. */
static struct {
    char text[MAXR][1024];
    char file[MAXR][256];
    bool ok[MAXR];
    unsigned n;
} R;

static void on_done(struct ctl_req *r, const char *text, bool ok)
{
    ck_assert_uint_lt(R.n, MAXR);
    snprintf(R.text[R.n], sizeof(R.text[R.n]), "%s", text);
    snprintf(R.file[R.n], sizeof(R.file[R.n]), "%s", r->cmd.file);
    R.ok[R.n] = ok;
    R.n++;
}

/* Hand an admin line to the control thread; its reply may come later. */
static void send_line(const char *line)
{
    struct ctl_req *r = calloc(1, sizeof(*r));
    char err[256];

    ck_assert_ptr_nonnull(r);
    ck_assert_msg(cmd_parse(line, &r->cmd, err, sizeof(err)) == 0, "%s: %s", line, err);
    snprintf(r->line, sizeof(r->line), "%s", line);
    r->peer = (struct audit_peer){1000, 1000, 4242};
    r->t_read_us = veer_now_us();
    r->done = on_done;
    control_execute(r);
}

/* Run the control loop until n replies came in all (10 s at most: the tick wakes it). */
static void wait_replies(unsigned n)
{
    uint64_t deadline = veer_now_us() + 10 * 1000 * 1000;

    while (R.n < n && veer_now_us() < deadline)
        ck_assert_int_ge(event_base_loop(F.base, EVLOOP_ONCE), 0);
    ck_assert_msg(R.n >= n, "%u replies of %u in 10 s", R.n, n);
    ck_assert_uint_eq(R.n, n);
}

/* `audit verify [file]`, waited for: its reply is this one. */
static void verify(const char *file, const char *want)
{
    char line[512];
    unsigned n = R.n;

    snprintf(line, sizeof(line), "audit verify%s%s", file ? " " : "", file ? file : "");
    send_line(line);
    wait_replies(n + 1);
    ck_assert_msg(strcmp(R.text[n], want) == 0, "%s: %s(want %s)", line, R.text[n], want);
    ck_assert_int_eq(R.ok[n], strncmp(want, "OK ", 3) == 0);
}

/* An accepted change, answered at once (its audit record is the log's next). */
static void change(const char *line)
{
    unsigned n = R.n;

    send_line(line);
    ck_assert_uint_eq(R.n, n + 1);
    ck_assert_msg(R.ok[n], "%s: %s", line, R.text[n]);
}

/* Three records in the live log. */
static void three_changes(void)
{
    change("shift api blue=90 green=10");
    change("shift api blue=80 green=20");
    change("shift api blue=70 green=30");
}

/* --- files ------------------------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return s;
}

static void spit(const char *path, const char *s, size_t len)
{
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(s, 1, len, f), len);
    fclose(f);
}

/* Offset of the start of line n (1-based). */
static size_t line_start(const char *s, unsigned n)
{
    const char *p = s;

    while (--n)
        p = strchr(p, '\n') + 1;
    return (size_t)(p - s);
}

/* Change one byte of the file in place (the same file, the same size): "blue=80" -> "blue=81". */
static void tamper(const char *path)
{
    size_t len;
    char *all = slurp(path, &len);
    char *p = strstr(all + line_start(all, 2), "blue=80");
    int fd = open(path, O_WRONLY);

    ck_assert_ptr_nonnull(p);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, "1", 1, (off_t)(p + 6 - all)), 1);
    close(fd);
    free(all);
}

/* Cut the file at offset len, in place. */
static void cut(const char *path, size_t len)
{
    ck_assert_int_eq(truncate(path, (off_t)len), 0);
}

/* --- tests ------------------------------------------------------------------------------- */

/* An intact log verifies: the records it has, counted. */
START_TEST(test_intact_log_verifies)
{
    up(true);
    three_changes();
    verify(NULL, "OK records=3\n\n");
    change("swap api");
    verify(NULL, "OK records=4\n\n");
    down();
}
END_TEST

/* A byte changed in a record: the record is named, its hash does not match. */
START_TEST(test_tampered_record_is_reported)
{
    up(true);
    three_changes();
    tamper(F.audit);
    verify(NULL, "ERR record 2 (line 2): hash does not match its content\n\n");
    down();
}
END_TEST

/*
 * The live log cut short: its last record cut mid-line is reported
 * truncated; its last record removed whole is reported missing (veer
 * knows it wrote it).
 */
START_TEST(test_truncated_log_is_reported)
{
    size_t len;
    char *all;

    up(true);
    three_changes();
    all = slurp(F.audit, &len);
    cut(F.audit, len - 40);
    verify(NULL, "ERR record 3 (line 3): truncated (no end of line)\n\n");
    cut(F.audit, line_start(all, 3));
    verify(NULL, "ERR record 3 (line 3): missing: the log ends at record 2 but veer wrote up to "
                 "record 3 (records were removed from its end)\n\n");
    free(all);
    down();
}
END_TEST

/*
 * FILE names the log to verify instead of the configured one: a tampered
 * copy fails while the configured log still verifies; a missing FILE
 * cannot be read.
 */
START_TEST(test_file_argument_instead_of_the_configured_log)
{
    size_t len;
    char *all, missing[128];

    up(true);
    three_changes();
    all = slurp(F.audit, &len);
    spit(F.other, all, len);
    verify(F.other, "OK records=3\n\n");
    tamper(F.other);
    verify(F.other, "ERR record 2 (line 2): hash does not match its content\n\n");
    verify(NULL, "OK records=3\n\n");
    snprintf(missing, sizeof(missing), "%s/nope.log", F.dir);
    {
        char want[256];

        snprintf(want, sizeof(want), "ERR cannot read %s: No such file or directory\n\n", missing);
        verify(missing, want);
    }
    free(all);
    down();
}
END_TEST

/* With no audit_log configured, FILE is needed. */
START_TEST(test_no_configured_log_needs_a_file)
{
    up(false);
    verify(NULL, "ERR no audit log configured (audit_log) and no FILE given\n\n");
    spit(F.other, "", 0);
    verify(F.other, "OK records=0\n\n");
    down();
}
END_TEST

/*
 * The live log is verified up to its size at the time of the command: a
 * record written after it (the control thread answers changes meanwhile)
 * is not counted.
 */
START_TEST(test_verify_reads_the_log_as_it_was_asked)
{
    up(true);
    three_changes();
    send_line("audit verify");
    ck_assert_uint_eq(R.n, 3); /* its answer comes from the loop */
    change("swap api");        /* answered while the verify runs */
    ck_assert(strncmp(R.text[3], "OK gen=", 7) == 0);
    wait_replies(5);
    ck_assert_str_eq(R.text[4], "OK records=3\n\n");
    verify(NULL, "OK records=4\n\n");
    down();
}
END_TEST

/* A second and a third verify wait behind the first and are answered in order. */
START_TEST(test_verifies_are_queued_and_answered_in_order)
{
    size_t len;
    char *all;

    up(true);
    three_changes();
    all = slurp(F.audit, &len);
    spit(F.other, all, len);
    tamper(F.other);
    R.n = 0;
    send_line("audit verify");
    {
        char line[256];

        snprintf(line, sizeof(line), "audit verify %s", F.other);
        send_line(line);
    }
    send_line("audit verify");
    ck_assert_uint_eq(R.n, 0);
    wait_replies(3);
    ck_assert_str_eq(R.file[0], "");
    ck_assert_str_eq(R.text[0], "OK records=3\n\n");
    ck_assert_str_eq(R.file[1], F.other);
    ck_assert_str_eq(R.text[1], "ERR record 2 (line 2): hash does not match its content\n\n");
    ck_assert(!R.ok[1]);
    ck_assert_str_eq(R.file[2], "");
    ck_assert_str_eq(R.text[2], "OK records=3\n\n");
    free(all);
    down();
}
END_TEST

/*
 * Shutdown with a verify running and one waiting: both end there, neither
 * answered (whoever asked is gone); the thread is joined and nothing is
 * left allocated (ASan's leak check).
 */
START_TEST(test_shutdown_stops_running_and_waiting_verifies)
{
    up(true);
    three_changes();
    R.n = 0;
    send_line("audit verify");
    send_line("audit verify");
    control_shutdown();
    F.down = true;
    ck_assert_uint_eq(R.n, 0);
    /* Nothing was left for the loop either. */
    ck_assert_int_ge(event_base_loop(F.base, EVLOOP_NONBLOCK), 0);
    ck_assert_uint_eq(R.n, 0);
    down();
}
END_TEST

static Suite *verify_suite(void)
{
    Suite *s = suite_create("verify");
    TCase *tc = tcase_create("verify");

    tcase_add_test(tc, test_intact_log_verifies);
    tcase_add_test(tc, test_tampered_record_is_reported);
    tcase_add_test(tc, test_truncated_log_is_reported);
    tcase_add_test(tc, test_file_argument_instead_of_the_configured_log);
    tcase_add_test(tc, test_no_configured_log_needs_a_file);
    tcase_add_test(tc, test_verify_reads_the_log_as_it_was_asked);
    tcase_add_test(tc, test_verifies_are_queued_and_answered_in_order);
    tcase_add_test(tc, test_shutdown_stops_running_and_waiting_verifies);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(verify_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
