/*
 * check_audit.c - the audit log: exact record format and hash (recomputed
 * here with OpenSSL's SHA256), JSON escaping, resuming the chain on reopen,
 * and `audit verify` naming the first broken record after tampering
 * (edited, deleted, swapped, truncated, garbage lines).
 */
#include "audit.h"

#include <check.h>
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZEROS "0000000000000000000000000000000000000000000000000000000000000000"

static char dir[64];
static char path[128];

/* Each test gets a fresh directory and a log path inside it. */
static void setup(void)
{
    strcpy(dir, "/tmp/check_audit.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/audit.log", dir);
}

static void teardown(void)
{
    audit_close();
    unlink(path);
    rmdir(dir);
}

/* The whole file as a NUL-terminated string (free it); *len its size. */
static char *slurp(size_t *len)
{
    FILE *f = fopen(path, "r");
    char *s;
    long n;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    s = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return s;
}

/* Replace the file's content with s. */
static void spit(const char *s, size_t n)
{
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(s, 1, n, f), n);
    fclose(f);
}

/* Line n (1-based) of the file, without its newline (free it). */
static char *line_of(int n)
{
    char *all = slurp(NULL), *p = all, *end, *out;

    for (int i = 1; i < n; i++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    end = strchr(p, '\n');
    out = strndup(p, end ? (size_t)(end - p) : strlen(p));
    free(all);
    return out;
}

/* Offset of the start of line n (1-based) in s. */
static size_t line_start(const char *s, int n)
{
    const char *p = s;

    for (int i = 1; i < n; i++)
        p = strchr(p, '\n') + 1;
    return (size_t)(p - s);
}

/* The 64-hex value of "key" in a record line, copied into out. */
static void field_hex(const char *line, const char *key, char out[65])
{
    char k[32];
    const char *p;

    snprintf(k, sizeof(k), "\"%s\":\"", key);
    p = strstr(line, k);
    ck_assert_ptr_nonnull(p);
    memcpy(out, p + strlen(k), 64);
    out[64] = '\0';
}

/* Lowercase hex SHA-256 of s[0..n), computed independently of audit.c. */
static void sha_hex(const char *s, size_t n, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)s, n, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

/* Append a record with a correct hash but the given seq and prev. */
static void forge_record(int seq, const char *prev)
{
    char rec[512], hash[65];
    FILE *f;
    int n;

    n = snprintf(rec, sizeof(rec),
                 "{\"seq\":%d,\"time\":\"2026-01-01T00:00:00.000Z\",\"actor\":\"x\",\"uid\":0,"
                 "\"gid\":0,\"pid\":1,\"user\":\"root\",\"command\":\"c\",\"result\":\"OK\","
                 "\"generation\":1,\"before\":null,\"after\":null,\"prev\":\"%s\"",
                 seq, prev);
    sha_hex(rec, (size_t)n, hash);
    f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s,\"hash\":\"%s\"}\n", rec, hash);
    fclose(f);
}

static void open_log(void)
{
    char err[256];

    ck_assert_int_eq(audit_open(path, err, sizeof(err)), 0);
    ck_assert_int_ge(audit_fd(), 0);
}

/* Write n shift records as an operator with pid 1000 + i. */
static void write_shifts(int n)
{
    for (int i = 0; i < n; i++) {
        struct audit_peer peer = {(int)getuid(), (int)getgid(), 1000 + i};
        char cmd[64];

        snprintf(cmd, sizeof(cmd), "shift api blue=%d green=%d", 100 - i, i);
        ck_assert_int_eq(audit_write("operator", &peer, cmd, "OK", (uint64_t)i + 1,
                                     "{\"shares\":{\"blue\":100}}", "{\"shares\":{\"blue\":90}}"),
                         0);
    }
}

/* Run verify and check its result code and that msg contains want. */
static void expect_verify(int rc, const char *want)
{
    char msg[256];

    ck_assert_int_eq(audit_verify(path, msg, sizeof(msg)), rc);
    ck_assert_msg(strstr(msg, want) != NULL, "verify said \"%s\", wanted \"%s\"", msg, want);
}

/* Redirect stderr (the log) to a file for the duration of a call. */
static int capture_begin(char *cap, size_t caplen)
{
    int saved = dup(STDERR_FILENO);
    int fd;

    snprintf(cap, caplen, "%s/stderr", dir);
    fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    return saved;
}

/* Restore stderr and return what was logged (free it). */
static char *capture_end(int saved, const char *cap)
{
    char buf[4096];
    FILE *f;
    size_t n;

    dup2(saved, STDERR_FILENO);
    close(saved);
    f = fopen(cap, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(cap);
    return strdup(buf);
}

START_TEST(test_written_records_verify_with_count)
{
    open_log();
    write_shifts(5);
    ck_assert_uint_eq(audit_seq(), 5);
    expect_verify(0, "records=5");
}
END_TEST

START_TEST(test_log_is_created_mode_0640)
{
    struct stat st;

    umask(022);
    open_log();
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0640);
    ck_assert_int_ne(fcntl(audit_fd(), F_GETFD) & FD_CLOEXEC, 0);
}
END_TEST

/* Rebuild the expected line from its parts and recompute the hash. */
START_TEST(test_record_has_exact_format_and_hash)
{
    struct audit_peer peer = {(int)getuid(), (int)getgid(), 4242};
    struct passwd *pw = getpwuid(getuid());
    char *line, want[1024], user[32], hash[65], mine[65], tm[25];
    const char *p;
    size_t prefix;

    if (pw)
        snprintf(user, sizeof(user), "%s", pw->pw_name);
    else
        snprintf(user, sizeof(user), "%d", peer.uid);
    open_log();
    ck_assert_int_eq(audit_write("operator", &peer, "shift api blue=0 green=100", "OK", 12,
                                 "{\"blue\":100,\"green\":0}", "{\"blue\":0,\"green\":100}"),
                     0);
    line = line_of(1);
    p = strstr(line, "\"time\":\"");
    ck_assert_ptr_nonnull(p);
    memcpy(tm, p + 8, 24);
    tm[24] = '\0';
    for (int i = 0; i < 24; i++) {
        const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

        if (shape[i] == 'd')
            ck_assert_msg(isdigit((unsigned char)tm[i]), "time %s", tm);
        else
            ck_assert_int_eq(tm[i], shape[i]);
    }
    snprintf(want, sizeof(want),
             "{\"seq\":1,\"time\":\"%s\",\"actor\":\"operator\",\"uid\":%d,\"gid\":%d,"
             "\"pid\":4242,\"user\":\"%s\",\"command\":\"shift api blue=0 green=100\","
             "\"result\":\"OK\",\"generation\":12,\"before\":{\"blue\":100,\"green\":0},"
             "\"after\":{\"blue\":0,\"green\":100},\"prev\":\"" ZEROS "\",\"hash\":\"",
             tm, peer.uid, peer.gid, user);
    ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "got  %s\nwant %s", line, want);
    prefix = strlen(want) - strlen(",\"hash\":\"");
    ck_assert_uint_eq(strlen(line), strlen(want) + 64 + 2);
    ck_assert_str_eq(line + strlen(line) - 2, "\"}");
    field_hex(line, "hash", hash);
    sha_hex(line, prefix, mine);
    ck_assert_str_eq(hash, mine);
    free(line);
}
END_TEST

/* Keys appear once each, in the documented order. */
START_TEST(test_keys_are_in_documented_order)
{
    static const char *const keys[] = {"seq",    "time",  "actor",   "uid",    "gid",
                                       "pid",    "user",  "command", "result", "generation",
                                       "before", "after", "prev",    "hash"};
    const char *at;
    char *line;

    open_log();
    write_shifts(1);
    line = line_of(1);
    at = line;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char k[32];
        const char *p;

        snprintf(k, sizeof(k), "\"%s\":", keys[i]);
        p = strstr(at, k);
        ck_assert_msg(p != NULL, "key %s missing or out of order", keys[i]);
        ck_assert_msg(strstr(p + 1, k) == NULL, "key %s twice", keys[i]);
        at = p + strlen(k);
    }
    free(line);
}
END_TEST

START_TEST(test_command_is_json_escaped)
{
    char *all, *line;

    open_log();
    ck_assert_int_eq(
        audit_write("operator", NULL, "set \"x\" a\\b\nnext\t\x01", "ERR bad \"x\"", 3, NULL, NULL),
        0);
    all = slurp(NULL);
    ck_assert_ptr_eq(strchr(all, '\n'), all + strlen(all) - 1); /* still one line */
    line = line_of(1);
    ck_assert_ptr_nonnull(strstr(line, ",\"command\":\"set \\\"x\\\" a\\\\b\\nnext\\t\\u0001\","));
    ck_assert_ptr_nonnull(strstr(line, ",\"result\":\"ERR bad \\\"x\\\"\","));
    expect_verify(0, "records=1");
    free(line);
    free(all);
}
END_TEST

/* veer's own changes carry -1 ids and the user "veer"; null before/after. */
START_TEST(test_veer_itself_and_unknown_users)
{
    struct audit_peer ghost = {2147480000, 5, 6};
    char *line;

    open_log();
    ck_assert_int_eq(audit_write("health", NULL, "set state api/b1 down", "OK", 7, NULL, ""), 0);
    line = line_of(1);
    ck_assert_ptr_nonnull(
        strstr(line, ",\"actor\":\"health\",\"uid\":-1,\"gid\":-1,\"pid\":-1,\"user\":\"veer\","));
    ck_assert_ptr_nonnull(strstr(line, ",\"before\":null,\"after\":null,\"prev\":"));
    free(line);
    if (getpwuid((uid_t)ghost.uid) == NULL) {
        ck_assert_int_eq(audit_write("operator", &ghost, "help", "OK", 7, NULL, NULL), 0);
        line = line_of(2);
        ck_assert_ptr_nonnull(strstr(line, ",\"uid\":2147480000,\"gid\":5,\"pid\":6,"
                                           "\"user\":\"2147480000\","));
        free(line);
    }
    expect_verify(0, "records=");
}
END_TEST

/* Pretty-printed before/after JSON must not split the record. */
START_TEST(test_line_breaks_in_json_values_keep_one_line)
{
    char *all;

    open_log();
    ck_assert_int_eq(audit_write("operator", NULL, "c", "OK", 1, "{\n  \"a\": 1\r\n}", "[1,\n2]"),
                     0);
    all = slurp(NULL);
    ck_assert_ptr_eq(strchr(all, '\n'), all + strlen(all) - 1);
    ck_assert_ptr_nonnull(strstr(all, "\"before\":{   \"a\": 1  },\"after\":[1, 2],"));
    free(all);
    expect_verify(0, "records=1");
}
END_TEST

START_TEST(test_reopen_continues_chain)
{
    char *l3, *l4, h3[65], p4[65];

    open_log();
    write_shifts(3);
    audit_close();
    open_log();
    ck_assert_uint_eq(audit_seq(), 0);
    write_shifts(2);
    ck_assert_uint_eq(audit_seq(), 2);
    l3 = line_of(3);
    l4 = line_of(4);
    ck_assert(strncmp(l4, "{\"seq\":4,", 9) == 0);
    field_hex(l3, "hash", h3);
    field_hex(l4, "prev", p4);
    ck_assert_str_eq(h3, p4);
    expect_verify(0, "records=5");
    free(l3);
    free(l4);
}
END_TEST

/* Records far longer than the read-back chunk still resume and verify. */
START_TEST(test_long_records_resume_and_verify)
{
    size_t big = 1 << 20;
    char *json = malloc(big + 3);

    json[0] = '"';
    memset(json + 1, 'x', big);
    strcpy(json + 1 + big, "\"");
    open_log();
    ck_assert_int_eq(audit_write("operator", NULL, "big", "OK", 1, json, json), 0);
    audit_close();
    open_log();
    ck_assert_int_eq(audit_write("operator", NULL, "after big", "OK", 2, NULL, NULL), 0);
    expect_verify(0, "records=2");
    free(json);
}
END_TEST

START_TEST(test_edited_command_names_record_2)
{
    size_t len;
    char *all, *p;

    open_log();
    write_shifts(4);
    all = slurp(&len);
    p = strstr(all + line_start(all, 2), "blue=99");
    ck_assert_ptr_nonnull(p);
    p[5] = '8'; /* one byte: blue=98 */
    spit(all, len);
    expect_verify(1, "record 2 (line 2): hash does not match its content");
    free(all);
}
END_TEST

START_TEST(test_deleted_record_names_the_next_one)
{
    size_t len, a, b;
    char *all;

    open_log();
    write_shifts(4);
    all = slurp(&len);
    a = line_start(all, 2);
    b = line_start(all, 3);
    memmove(all + a, all + b, len - b);
    spit(all, len - (b - a));
    expect_verify(1, "record 3 (line 2): prev does not match record 1");
    free(all);
}
END_TEST

START_TEST(test_swapped_records_are_detected)
{
    size_t len, a, b, c;
    char *all, *out;

    open_log();
    write_shifts(4);
    all = slurp(&len);
    a = line_start(all, 2);
    b = line_start(all, 3);
    c = line_start(all, 4);
    out = malloc(len);
    memcpy(out, all, a);
    memcpy(out + a, all + b, c - b);
    memcpy(out + a + (c - b), all + a, b - a);
    memcpy(out + c, all + c, len - c);
    spit(out, len);
    expect_verify(1, "record 3 (line 2): prev does not match record 1");
    free(out);
    free(all);
}
END_TEST

/* A hash-consistent record with the wrong seq is still caught. */
START_TEST(test_seq_gap_is_detected)
{
    char prev[65];
    char *l2;

    open_log();
    write_shifts(2);
    l2 = line_of(2);
    field_hex(l2, "hash", prev);
    forge_record(5, prev);
    expect_verify(1, "record 5 (line 3): seq 5 after 2");
    free(l2);
}
END_TEST

/*
 * A last line cut short (a crash mid-write, or a truncation) is reported.
 * Reopening ends the partial line, starts a new chain (with a warning) and
 * appends after it; verify keeps reporting the cut line.
 */
START_TEST(test_truncated_last_line_is_reported)
{
    char cap[128], *logged, *l4;
    size_t len;
    char *all;
    int saved;

    open_log();
    write_shifts(3);
    audit_close();
    all = slurp(&len);
    spit(all, len - 40);
    expect_verify(1, "record 3 (line 3): truncated");
    saved = capture_begin(cap, sizeof(cap));
    open_log();
    logged = capture_end(saved, cap);
    ck_assert_ptr_nonnull(strstr(logged, "warn"));
    ck_assert_ptr_nonnull(strstr(logged, "incomplete"));
    write_shifts(1);
    l4 = line_of(4);
    ck_assert(strncmp(l4, "{\"seq\":1,", 9) == 0);
    ck_assert_ptr_nonnull(strstr(l4, "\"prev\":\"" ZEROS "\""));
    expect_verify(1, "record 3 (line 3): not a record");
    free(l4);
    free(logged);
    free(all);
}
END_TEST

/*
 * Garbage as the last line: audit_open warns and starts a new chain (seq
 * 1, prev zeros) rather than refusing to start. The file then fails verify
 * at the garbage line, which is the point: the history was tampered with,
 * and the new chain does not paper over it.
 */
START_TEST(test_garbage_last_line_starts_new_chain)
{
    char cap[128], *logged, *l4;
    FILE *f;
    int saved;

    open_log();
    write_shifts(2);
    audit_close();
    f = fopen(path, "a");
    fputs("this is not a record\n", f);
    fclose(f);
    saved = capture_begin(cap, sizeof(cap));
    open_log();
    logged = capture_end(saved, cap);
    ck_assert_ptr_nonnull(strstr(logged, "warn"));
    ck_assert_ptr_nonnull(strstr(logged, "new hash chain"));
    write_shifts(1);
    l4 = line_of(4);
    ck_assert(strncmp(l4, "{\"seq\":1,", 9) == 0);
    ck_assert_ptr_nonnull(strstr(l4, "\"prev\":\"" ZEROS "\""));
    expect_verify(1, "record 3 (line 3): not a record");
    free(l4);
    free(logged);
}
END_TEST

/*
 * Call audit_write with the size of files this process may write capped at
 * max (the test runs forked). No Check call may happen under the cap: Check
 * itself reports through a file.
 */
static int write_capped(rlim_t max, const char *command)
{
    struct rlimit rl, old;
    int rc = -2;

    signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &old) < 0)
        return rc;
    rl = old;
    rl.rlim_cur = max;
    if (setrlimit(RLIMIT_FSIZE, &rl) == 0) {
        rc = audit_write("operator", NULL, command, "OK", 2, NULL, NULL);
        setrlimit(RLIMIT_FSIZE, &old);
    }
    return rc;
}

/* A refused write leaves the file and the chain as they were. */
START_TEST(test_failed_write_does_not_advance_chain)
{
    char cap[128], *all, *logged;
    size_t len;
    int saved, rc;

    open_log();
    write_shifts(1);
    all = slurp(&len);
    saved = capture_begin(cap, sizeof(cap));
    rc = write_capped(len, "lost");
    logged = capture_end(saved, cap);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_nonnull(strstr(logged, "cannot write record 2"));
    free(logged);
    ck_assert_int_eq(audit_write("operator", NULL, "kept", "OK", 2, NULL, NULL), 0);
    ck_assert_uint_eq(audit_seq(), 2);
    expect_verify(0, "records=2");
    free(all);
}
END_TEST

/*
 * A write cut short (disk full) leaves a partial line: the next record
 * starts on a new line and continues the chain from the last whole record,
 * and verify reports the partial one.
 */
START_TEST(test_partial_write_is_not_glued_to_next_record)
{
    char cap[128], *all, *l3, *logged;
    size_t len;
    int saved, rc;

    open_log();
    write_shifts(1);
    all = slurp(&len);
    saved = capture_begin(cap, sizeof(cap));
    rc = write_capped(len + 50, "lost");
    logged = capture_end(saved, cap);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_nonnull(strstr(logged, "cannot write record 2"));
    free(logged);
    ck_assert_int_eq(audit_write("operator", NULL, "kept", "OK", 2, NULL, NULL), 0);
    l3 = line_of(3);
    ck_assert(strncmp(l3, "{\"seq\":2,", 9) == 0);
    ck_assert_ptr_nonnull(strstr(l3, "\"command\":\"kept\""));
    expect_verify(1, "record 2 (line 2): not a record");
    free(l3);
    free(all);
}
END_TEST

/* A log that cannot take a record (a full disk: /dev/full) says why, for the refusal. */
START_TEST(test_failed_write_says_why)
{
    char err[256], cap[128], *logged;
    int saved, rc;

    ck_assert_int_eq(audit_open("/dev/full", err, sizeof(err)), 0);
    saved = capture_begin(cap, sizeof(cap));
    rc = audit_write("operator", NULL, "shift api blue=0 green=100", "OK", 2, NULL, NULL);
    logged = capture_end(saved, cap);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_nonnull(strstr(logged, "cannot write record 1"));
    ck_assert_str_eq(audit_error(), "No space left on device");
    ck_assert_uint_eq(audit_seq(), 0);
    free(logged);
}
END_TEST

/* A log whose head was rotated away may start at a later seq. */
START_TEST(test_rotated_log_may_start_after_seq_1)
{
    size_t len, a;
    char *all;

    open_log();
    write_shifts(3);
    all = slurp(&len);
    a = line_start(all, 2);
    spit(all + a, len - a);
    expect_verify(0, "records=2");
    free(all);
}
END_TEST

/* Without a rotation, record 1 must start from zeros. */
START_TEST(test_first_record_needs_zero_prev)
{
    forge_record(1, "1111111111111111111111111111111111111111111111111111111111111111");
    expect_verify(1, "record 1 (line 1): first record but prev is not zeros");
}
END_TEST

/* Run verify as veer does for its live log (its ends against the chain held). */
static void expect_verify_live(const struct audit_live *live, int rc, const char *want)
{
    char msg[256];

    ck_assert_int_eq(audit_verify_ex(path, live, NULL, msg, sizeof(msg)), rc);
    ck_assert_msg(strstr(msg, want) != NULL, "verify said \"%s\", wanted \"%s\"", msg, want);
}

/* A FIFO is refused at once: opening it for reading must not wait for a writer. */
START_TEST(test_verify_refuses_a_fifo_without_waiting)
{
    char msg[256];

    ck_assert_int_eq(mkfifo(path, 0600), 0);
    alarm(5); /* the old verify blocked in open(2) here for ever */
    ck_assert_int_eq(audit_verify(path, msg, sizeof(msg)), -1);
    alarm(0);
    ck_assert_ptr_nonnull(strstr(msg, "not a regular file"));
}
END_TEST

/* A device never ends (/dev/zero: one endless line): refused, nothing read. */
START_TEST(test_verify_refuses_a_device)
{
    char msg[256];

    alarm(5);
    ck_assert_int_eq(audit_verify("/dev/zero", msg, sizeof(msg)), -1);
    alarm(0);
    ck_assert_str_eq(msg, "cannot read /dev/zero: not a regular file");
}
END_TEST

/* The live log is read up to the size the control thread saw: later records wait. */
START_TEST(test_verify_of_the_live_log_stops_at_its_size_then)
{
    struct audit_live live;

    open_log();
    write_shifts(3);
    ck_assert(audit_live(&live));
    ck_assert_uint_eq(live.anchor.first_seq, 1);
    ck_assert_str_eq(live.anchor.first_prev, ZEROS);
    ck_assert_uint_eq(live.anchor.last_seq, 3);
    write_shifts(2);
    expect_verify_live(&live, 0, "records=3");
    ck_assert(audit_live(&live));
    expect_verify_live(&live, 0, "records=5");
}
END_TEST

/* The last records removed: the file's chain is whole, but it ends before veer's. */
START_TEST(test_live_log_missing_its_last_records_is_reported)
{
    struct audit_live live;
    size_t len, a;
    char *all;

    open_log();
    write_shifts(3);
    all = slurp(&len);
    a = line_start(all, 3);
    spit(all, a);
    ck_assert(audit_live(&live));
    live.size = a;
    expect_verify(0, "records=2"); /* as a file on its own it is a good chain */
    expect_verify_live(&live, 1,
                       "record 3 (line 3): missing: the log ends at record 2 but veer wrote up to "
                       "record 3");
    free(all);
}
END_TEST

/* The first records removed: it looks like a rotated log, but veer knows where it starts. */
START_TEST(test_live_log_missing_its_first_records_is_reported)
{
    struct audit_live live;
    size_t len, a;
    char *all;

    open_log();
    write_shifts(3);
    all = slurp(&len);
    a = line_start(all, 2);
    spit(all + a, len - a);
    ck_assert(audit_live(&live));
    live.size = len - a;
    expect_verify(0, "records=2");
    expect_verify_live(&live, 1,
                       "record 1 (line 1): missing: the log starts at record 2 (records were "
                       "removed from its start)");
    free(all);
}
END_TEST

/* Reopening (a restart) finds the first record again: the live check still holds. */
START_TEST(test_reopen_knows_where_the_log_starts)
{
    struct audit_live live;
    struct audit_anchor a;

    open_log();
    write_shifts(2);
    audit_close();
    open_log();
    ck_assert(audit_anchor(&a));
    ck_assert_uint_eq(a.first_seq, 1);
    ck_assert_uint_eq(a.last_seq, 2);
    write_shifts(1);
    ck_assert(audit_live(&live));
    expect_verify_live(&live, 0, "records=3");
}
END_TEST

/*
 * Records cut off the end while veer was down: the state file's anchor says
 * record 3 was written, so the chain goes on from it and the gap is named.
 */
START_TEST(test_saved_anchor_catches_records_cut_while_down)
{
    struct audit_anchor saved;
    struct audit_live live;
    char cap[128], *all, *logged;
    size_t len, a;
    int fd;

    open_log();
    write_shifts(3);
    ck_assert(audit_anchor(&saved));
    audit_close();
    all = slurp(&len);
    a = line_start(all, 3);
    spit(all, a);
    audit_expect(&saved);
    fd = capture_begin(cap, sizeof(cap));
    open_log();
    logged = capture_end(fd, cap);
    ck_assert_ptr_nonnull(strstr(logged, "records were removed"));
    write_shifts(1);
    ck_assert(audit_live(&live));
    ck_assert_uint_eq(live.anchor.last_seq, 4);
    expect_verify_live(&live, 1, "record 4 (line 3): prev does not match record 2");
    free(logged);
    free(all);
}
END_TEST

/* The same for records cut off the start while down. */
START_TEST(test_saved_anchor_catches_a_start_cut_while_down)
{
    struct audit_anchor saved;
    struct audit_live live;
    char cap[128], *all, *logged;
    size_t len, a;
    int fd;

    open_log();
    write_shifts(3);
    ck_assert(audit_anchor(&saved));
    audit_close();
    all = slurp(&len);
    a = line_start(all, 2);
    spit(all + a, len - a);
    audit_expect(&saved);
    fd = capture_begin(cap, sizeof(cap));
    open_log();
    logged = capture_end(fd, cap);
    ck_assert_ptr_nonnull(strstr(logged, "removed from its start"));
    ck_assert(audit_live(&live));
    expect_verify_live(&live, 1, "record 1 (line 1): missing: the log starts at record 2");
    free(logged);
    free(all);
}
END_TEST

/*
 * Rotation: the log moved away while veer was down; the new, empty log
 * continues the chain (seq and prev), so each file verifies and the first
 * prev of the new one is the last hash of the old one.
 */
START_TEST(test_rotated_log_continues_the_chain)
{
    struct audit_anchor saved, now;
    struct audit_live live;
    char old[160], *l1, prev[65];

    open_log();
    write_shifts(3);
    ck_assert(audit_anchor(&saved));
    audit_close();
    snprintf(old, sizeof(old), "%s.1", path);
    ck_assert_int_eq(rename(path, old), 0);
    audit_expect(&saved);
    open_log();
    ck_assert(audit_live(&live));
    expect_verify_live(&live, 0, "records=0"); /* nothing written to the new file yet */
    write_shifts(1);
    l1 = line_of(1);
    ck_assert(strncmp(l1, "{\"seq\":4,", 9) == 0);
    field_hex(l1, "prev", prev);
    ck_assert_str_eq(prev, saved.last_hash);
    ck_assert(audit_anchor(&now));
    ck_assert_uint_eq(now.first_seq, 4);
    ck_assert_str_eq(now.first_prev, saved.last_hash);
    ck_assert(audit_live(&live));
    expect_verify_live(&live, 0, "records=1");
    unlink(old);
    free(l1);
}
END_TEST

START_TEST(test_empty_log_verifies_with_zero_records)
{
    open_log();
    expect_verify(0, "records=0");
}
END_TEST

START_TEST(test_missing_log_cannot_be_read)
{
    expect_verify(-1, "cannot read");
}
END_TEST

START_TEST(test_unopenable_log_is_an_error)
{
    char err[256], bad[200];

    snprintf(bad, sizeof(bad), "%s/no/such/dir/audit.log", dir);
    ck_assert_int_eq(audit_open(bad, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
    ck_assert_int_eq(audit_fd(), -1);
}
END_TEST

START_TEST(test_null_path_turns_auditing_off)
{
    char err[64];

    ck_assert_int_eq(audit_open(NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(audit_fd(), -1);
    ck_assert_int_eq(audit_write("operator", NULL, "help", "OK", 1, NULL, NULL), 0);
    ck_assert_uint_eq(audit_seq(), 0);
    ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("audit");
    TCase *tc = tcase_create("audit");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_written_records_verify_with_count);
    tcase_add_test(tc, test_log_is_created_mode_0640);
    tcase_add_test(tc, test_record_has_exact_format_and_hash);
    tcase_add_test(tc, test_keys_are_in_documented_order);
    tcase_add_test(tc, test_command_is_json_escaped);
    tcase_add_test(tc, test_veer_itself_and_unknown_users);
    tcase_add_test(tc, test_line_breaks_in_json_values_keep_one_line);
    tcase_add_test(tc, test_reopen_continues_chain);
    tcase_add_test(tc, test_long_records_resume_and_verify);
    tcase_add_test(tc, test_edited_command_names_record_2);
    tcase_add_test(tc, test_deleted_record_names_the_next_one);
    tcase_add_test(tc, test_swapped_records_are_detected);
    tcase_add_test(tc, test_seq_gap_is_detected);
    tcase_add_test(tc, test_truncated_last_line_is_reported);
    tcase_add_test(tc, test_garbage_last_line_starts_new_chain);
    tcase_add_test(tc, test_failed_write_does_not_advance_chain);
    tcase_add_test(tc, test_partial_write_is_not_glued_to_next_record);
    tcase_add_test(tc, test_failed_write_says_why);
    tcase_add_test(tc, test_verify_refuses_a_fifo_without_waiting);
    tcase_add_test(tc, test_verify_refuses_a_device);
    tcase_add_test(tc, test_verify_of_the_live_log_stops_at_its_size_then);
    tcase_add_test(tc, test_live_log_missing_its_last_records_is_reported);
    tcase_add_test(tc, test_live_log_missing_its_first_records_is_reported);
    tcase_add_test(tc, test_reopen_knows_where_the_log_starts);
    tcase_add_test(tc, test_saved_anchor_catches_records_cut_while_down);
    tcase_add_test(tc, test_saved_anchor_catches_a_start_cut_while_down);
    tcase_add_test(tc, test_rotated_log_continues_the_chain);
    tcase_add_test(tc, test_rotated_log_may_start_after_seq_1);
    tcase_add_test(tc, test_first_record_needs_zero_prev);
    tcase_add_test(tc, test_empty_log_verifies_with_zero_records);
    tcase_add_test(tc, test_missing_log_cannot_be_read);
    tcase_add_test(tc, test_unopenable_log_is_an_error);
    tcase_add_test(tc, test_null_path_turns_auditing_off);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
