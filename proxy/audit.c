/*
 * audit.c - the append-only, hash-chained audit log. See audit.h for the
 * record format. Only the control thread writes, so the chain state below
 * needs no lock.
 */
#include "audit.h"
#include "sbuf.h"
#include "veer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HASH_HEX 64

/* A record ends with ,"prev":"<64 hex>","hash":"<64 hex>"} */
#define PREV_KEY    ",\"prev\":\""
#define HASH_KEY    ",\"hash\":\""
#define SEQ_KEY     "{\"seq\":"
#define HASH_TAIL   (sizeof(HASH_KEY) - 1 + HASH_HEX + 2)
#define RECORD_TAIL (sizeof(PREV_KEY) - 1 + HASH_HEX + 1 + HASH_TAIL)

/* Past this, a last line is not worth scanning back for at open. */
#define MAX_LAST_LINE (64u << 20)

static const char zero_hash[HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static struct {
    int fd;
    uint64_t seq;            /* seq of the last record in the chain */
    uint64_t written;        /* records written since audit_open */
    char prev[HASH_HEX + 1]; /* hash of the last record */
    bool torn;               /* a failed write left a partial line */
    int last_errno;          /* why the last audit_write failed */
} audit = {.fd = -1};

/* The fields a reader needs from a record: its seq, prev and hash. */
struct record {
    uint64_t seq;
    char prev[HASH_HEX + 1];
    char hash[HASH_HEX + 1];
};

/* Lowercase hex SHA-256 of p[0..n) into out (65 bytes). */
static void sha256_hex(const void *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL))
        veer_panic(__FILE__, __LINE__, "SHA-256 failed");
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * mdlen] = '\0';
}

/* True when p holds exactly HASH_HEX lowercase hex digits. */
static bool is_hash_hex(const char *p)
{
    for (int i = 0; i < HASH_HEX; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

/*
 * Parse the seq at the start of a record ({"seq":N,). head may be any
 * prefix of the line; false when it does not start like a record.
 */
static bool parse_seq(const char *head, size_t n, uint64_t *seq)
{
    size_t klen = sizeof(SEQ_KEY) - 1;
    uint64_t v = 0;
    size_t i;

    if (n <= klen || memcmp(head, SEQ_KEY, klen) != 0)
        return false;
    for (i = klen; i < n && head[i] >= '0' && head[i] <= '9'; i++) {
        if (i - klen >= 19)
            return false;
        v = v * 10 + (uint64_t)(head[i] - '0');
    }
    if (i == klen || i == n || head[i] != ',')
        return false;
    *seq = v;
    return true;
}

/*
 * Parse the fixed-size end of a record (tail holds its last RECORD_TAIL
 * bytes) into prev and hash. Parsing from the end means a "prev" key inside
 * the before/after JSON can never be mistaken for the chain's.
 */
static bool parse_tail(const char *tail, struct record *r)
{
    const char *p = tail;

    if (memcmp(p, PREV_KEY, sizeof(PREV_KEY) - 1) != 0)
        return false;
    p += sizeof(PREV_KEY) - 1;
    if (!is_hash_hex(p) || p[HASH_HEX] != '"')
        return false;
    memcpy(r->prev, p, HASH_HEX);
    r->prev[HASH_HEX] = '\0';
    p += HASH_HEX + 1;
    if (memcmp(p, HASH_KEY, sizeof(HASH_KEY) - 1) != 0)
        return false;
    p += sizeof(HASH_KEY) - 1;
    if (!is_hash_hex(p) || memcmp(p + HASH_HEX, "\"}", 2) != 0)
        return false;
    memcpy(r->hash, p, HASH_HEX);
    r->hash[HASH_HEX] = '\0';
    return true;
}

/* Write all of p, retrying on EINTR and short writes. *done gets the count. */
static int write_all(int fd, const char *p, size_t n, size_t *done)
{
    *done = 0;
    while (*done < n) {
        ssize_t w = write(fd, p + *done, n - *done);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        *done += (size_t)w;
    }
    return 0;
}

/* pread exactly n bytes at off, retrying on EINTR and short reads. */
static int pread_all(int fd, char *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

/*
 * Find where the line ending at end (the offset of its '\n') starts, by
 * reading backwards in chunks: the cost is the length of the last line,
 * never the size of the file. Returns the offset, or -1 on a read error or
 * a line longer than MAX_LAST_LINE.
 */
static off_t last_line_start(int fd, off_t end)
{
    char chunk[4096];
    off_t pos = end;

    while (pos > 0) {
        size_t n = pos < (off_t)sizeof(chunk) ? (size_t)pos : sizeof(chunk);

        if (end - pos > (off_t)MAX_LAST_LINE)
            return -1;
        pos -= (off_t)n;
        if (pread_all(fd, chunk, n, pos) < 0)
            return -1;
        for (size_t i = n; i > 0; i--)
            if (chunk[i - 1] == '\n')
                return pos + (off_t)i;
    }
    return 0;
}

static const char last_incomplete[] = "its last line is incomplete";
static const char last_not_record[] = "its last line is not a record";
static const char last_unreadable[] = "cannot read its last line";

/*
 * Read back the seq and hash of the last complete line of the log open for
 * reading on fd into r. Returns NULL when r was filled in or the file is
 * empty (*found tells which), else why the last line cannot be read back.
 */
static const char *read_last_record(int fd, struct record *r, bool *found)
{
    char head[32], tail[RECORD_TAIL], last;
    struct stat st;
    off_t start, end;

    *found = false;
    if (fstat(fd, &st) < 0)
        return last_unreadable;
    if (st.st_size == 0)
        return NULL;
    if (pread_all(fd, &last, 1, st.st_size - 1) < 0)
        return last_unreadable;
    if (last != '\n')
        return last_incomplete;
    end = st.st_size - 1;
    start = last_line_start(fd, end);
    if (start < 0)
        return last_unreadable;
    if ((size_t)(end - start) < sizeof(SEQ_KEY) + RECORD_TAIL)
        return last_not_record;
    if (pread_all(fd, head, sizeof(head), start) < 0 ||
        pread_all(fd, tail, sizeof(tail), end - (off_t)sizeof(tail)) < 0)
        return last_unreadable;
    if (!parse_seq(head, sizeof(head), &r->seq) || !parse_tail(tail, r))
        return last_not_record;
    *found = true;
    return NULL;
}

/*
 * Pick up the chain from the end of the log at path (fd is the append
 * descriptor). Anything unreadable starts a new chain with a warning; a
 * partial last line is ended with '\n' first so the next record is not
 * glued to it (verify still reports that line: a record was lost).
 */
static void resume_chain(const char *path, int fd)
{
    struct record r;
    const char *why = last_unreadable;
    bool found = false;
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    size_t done;

    if (rfd >= 0) {
        why = read_last_record(rfd, &r, &found);
        close(rfd);
    }
    audit.seq = 0;
    memcpy(audit.prev, zero_hash, sizeof(zero_hash));
    if (found) {
        audit.seq = r.seq;
        memcpy(audit.prev, r.hash, sizeof(r.hash));
        log_debug("audit log %s: chain continues after seq %" PRIu64, path, r.seq);
        return;
    }
    if (why == NULL)
        return;
    log_warn("audit log %s: %s; starting a new hash chain (audit verify will report the break)",
             path, why);
    if (why == last_incomplete && write_all(fd, "\n", 1, &done) < 0)
        audit.torn = true;
}

/*
 * Open the log for appending (any previous one is closed first) and resume
 * its chain. Only an open failure is an error; the daemon runs on with
 * auditing off in that case if the caller chooses to.
 */
int audit_open(const char *path, char *err, size_t errlen)
{
    int fd;

    audit_close();
    if (path == NULL)
        return 0;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open audit log %s: %s", path, strerror(errno));
        return -1;
    }
    audit.fd = fd;
    resume_chain(path, fd);
    return 0;
}

/* Back to "off": no file, a fresh chain state for the next audit_open. */
void audit_close(void)
{
    if (audit.fd >= 0)
        close(audit.fd);
    audit.fd = -1;
    audit.seq = 0;
    audit.written = 0;
    audit.torn = false;
    memcpy(audit.prev, zero_hash, sizeof(zero_hash));
}

/* The append descriptor, for the persistence thread's fsync; -1 when off. */
int audit_fd(void)
{
    return audit.fd;
}

/* Records written since audit_open (not the chain's seq, which may resume). */
uint64_t audit_seq(void)
{
    return audit.written;
}

/* Append the current UTC wall-clock time with milliseconds as a JSON string. */
static void add_time(struct sbuf *b)
{
    struct timespec ts;
    struct tm tm;
    char date[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    sb_printf(b, "\"%s.%03ldZ\"", date, ts.tv_nsec / 1000000);
}

/*
 * Append the user name of uid as a JSON string: "veer" for veer itself
 * (-1), the number when the password database does not know it.
 */
static void add_user(struct sbuf *b, int uid)
{
    struct passwd pw, *res = NULL;
    size_t len = 1024;
    char *buf = NULL;
    int rc;

    if (uid == -1) {
        sb_json_str(b, "veer");
        return;
    }
    do {
        len *= 2;
        buf = veer_realloc(buf, len);
        rc = getpwuid_r((uid_t)uid, &pw, buf, len, &res);
    } while (rc == ERANGE && len < (1u << 20));
    if (rc == 0 && res != NULL)
        sb_json_str(b, res->pw_name);
    else
        sb_printf(b, "\"%d\"", uid);
    free(buf);
}

/*
 * Append a JSON value given as text, or null when absent or empty. Raw line
 * breaks (only valid as whitespace in JSON) become spaces so the record
 * stays one line.
 */
static void add_json_value(struct sbuf *b, const char *json)
{
    size_t start = b->len;

    if (json == NULL || *json == '\0') {
        sb_puts(b, "null");
        return;
    }
    sb_puts(b, json);
    for (size_t i = start; i < b->len; i++)
        if (b->s[i] == '\n' || b->s[i] == '\r')
            b->s[i] = ' ';
}

/* Append s as a JSON string; NULL is written as "". */
static void add_str(struct sbuf *b, const char *s)
{
    sb_json_str(b, s ? s : "");
}

/* Build the record for seq up to and including "prev" (the hashed part). */
static void build_record(struct sbuf *b, const char *actor, const struct audit_peer *peer,
                         const char *command, const char *result, uint64_t generation,
                         const char *before_json, const char *after_json)
{
    struct audit_peer self = {-1, -1, -1};

    if (peer == NULL)
        peer = &self;
    sb_printf(b, "{\"seq\":%" PRIu64 ",\"time\":", audit.seq + 1);
    add_time(b);
    sb_puts(b, ",\"actor\":");
    add_str(b, actor);
    sb_printf(b, ",\"uid\":%d,\"gid\":%d,\"pid\":%d,\"user\":", peer->uid, peer->gid, peer->pid);
    add_user(b, peer->uid);
    sb_puts(b, ",\"command\":");
    add_str(b, command);
    sb_puts(b, ",\"result\":");
    add_str(b, result);
    sb_printf(b, ",\"generation\":%" PRIu64 ",\"before\":", generation);
    add_json_value(b, before_json);
    sb_puts(b, ",\"after\":");
    add_json_value(b, after_json);
    sb_printf(b, PREV_KEY "%s\"", audit.prev);
}

/*
 * Build, hash and append one record with a single write(2), without fsync.
 * The chain only advances when the whole line reached the file; a partial
 * write makes the next record start on a new line.
 */
int audit_write(const char *actor, const struct audit_peer *peer, const char *command,
                const char *result, uint64_t generation, const char *before_json,
                const char *after_json)
{
    struct sbuf b;
    char hash[HASH_HEX + 1];
    size_t skip, done;
    int rc;

    if (audit.fd < 0)
        return 0;
    sb_init(&b);
    if (audit.torn)
        sb_add(&b, "\n", 1);
    skip = b.len;
    build_record(&b, actor, peer, command, result, generation, before_json, after_json);
    sha256_hex(b.s + skip, b.len - skip, hash);
    sb_printf(&b, HASH_KEY "%s\"}\n", hash);
    errno = 0;
    rc = write_all(audit.fd, b.s, b.len, &done);
    if (rc < 0) {
        audit.last_errno = errno ? errno : EIO;
        log_err("audit log: cannot write record %" PRIu64 ": %s", audit.seq + 1, strerror(errno));
        if (done > 0)
            audit.torn = true;
    } else {
        audit.torn = false;
        audit.seq++;
        audit.written++;
        memcpy(audit.prev, hash, sizeof(hash));
    }
    sb_free(&b);
    return rc;
}

/* Why the last audit_write failed (a short write without errno reads as EIO). */
const char *audit_error(void)
{
    return strerror(audit.last_errno ? audit.last_errno : EIO);
}

/* Where verification stands after the records read so far. */
struct verify {
    uint64_t records;
    uint64_t line;
    bool have_prev;
    struct record last;
};

/* Put "record N (line L): why" in msg and return 1 (a broken chain). */
__attribute__((format(printf, 5, 6))) static int broken(char *msg, size_t msglen, uint64_t n,
                                                        uint64_t line, const char *fmt, ...)
{
    va_list ap;
    int k = snprintf(msg, msglen, "record %" PRIu64 " (line %" PRIu64 "): ", n, line);

    if (k >= 0 && (size_t)k < msglen) {
        va_start(ap, fmt);
        vsnprintf(msg + k, msglen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return 1;
}

/*
 * Check one line (len bytes, its '\n' removed; complete tells whether it
 * had one) against the chain so far: hash, then prev, then seq. Returns 0
 * and advances v, or 1 with the reason in msg. A record is named by its
 * own seq when it has one, else by the seq it should have had.
 */
static int verify_line(struct verify *v, const char *line, size_t len, bool complete, char *msg,
                       size_t msglen)
{
    struct record r = {0};
    char hash[HASH_HEX + 1];
    bool has_seq = parse_seq(line, len, &r.seq);
    uint64_t n = has_seq ? r.seq : v->have_prev ? v->last.seq + 1 : 1;

    if (!complete)
        return broken(msg, msglen, n, v->line, "truncated (no end of line)");
    if (!has_seq || len < sizeof(SEQ_KEY) + RECORD_TAIL ||
        !parse_tail(line + len - RECORD_TAIL, &r))
        return broken(msg, msglen, n, v->line, "not a record");
    sha256_hex(line, len - HASH_TAIL, hash);
    if (strcmp(hash, r.hash) != 0)
        return broken(msg, msglen, n, v->line, "hash does not match its content");
    if (v->have_prev && strcmp(r.prev, v->last.hash) != 0)
        return broken(msg, msglen, n, v->line, "prev does not match record %" PRIu64, v->last.seq);
    /* A first record with a later seq is the head of a rotated log. */
    if (!v->have_prev && r.seq <= 1 && strcmp(r.prev, zero_hash) != 0)
        return broken(msg, msglen, n, v->line, "first record but prev is not zeros");
    if (v->have_prev && r.seq != v->last.seq + 1)
        return broken(msg, msglen, n, v->line, "seq %" PRIu64 " after %" PRIu64, r.seq,
                      v->last.seq);
    v->last = r;
    v->have_prev = true;
    v->records++;
    return 0;
}

/*
 * Stream the log line by line (getline: any line length, any file size,
 * memory bounded by the longest line) and check the chain.
 */
int audit_verify(const char *path, char *msg, size_t msglen)
{
    struct verify v = {0};
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;

    if (f == NULL) {
        snprintf(msg, msglen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        bool complete = line[n - 1] == '\n';

        v.line++;
        rc = verify_line(&v, line, (size_t)n - (complete ? 1 : 0), complete, msg, msglen);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(msg, msglen, "cannot read %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0)
        snprintf(msg, msglen, "records=%" PRIu64, v.records);
    free(line);
    fclose(f);
    return rc;
}
