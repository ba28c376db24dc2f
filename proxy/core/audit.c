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
#include <pthread.h>
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
    bool held;               /* an upgrade handed the log over: nothing is appended */
    int last_errno;          /* why the last audit_write failed */
    /* Where this file's part of the chain starts: its first record (or the next one). */
    uint64_t first_seq;
    char first_prev[HASH_HEX + 1];
} audit = {.fd = -1};

/* The chain as the state file last saw it (audit_expect), for the next audit_open. */
static struct audit_anchor expected;

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
 * Read the seq and prev of the first line of the log open on fd into r
 * (*found false when the file is empty or its first line is no record).
 */
static void read_first_record(int fd, struct record *r, bool *found)
{
    char chunk[4096], head[32], tail[RECORD_TAIL];
    off_t end = -1, pos = 0;

    *found = false;
    while (end < 0 && pos < (off_t)MAX_LAST_LINE) {
        ssize_t n = pread(fd, chunk, sizeof(chunk), pos);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        for (ssize_t i = 0; i < n; i++)
            if (chunk[i] == '\n') {
                end = pos + i;
                break;
            }
        pos += n;
    }
    if (end < (off_t)(sizeof(SEQ_KEY) + RECORD_TAIL))
        return;
    if (pread_all(fd, head, sizeof(head), 0) < 0 ||
        pread_all(fd, tail, sizeof(tail), end - (off_t)sizeof(tail)) < 0)
        return;
    *found = parse_seq(head, sizeof(head), &r->seq) && parse_tail(tail, r);
}

/*
 * Hold the chain to what the state file saw (expected): a log that ends
 * before the state file's last record lost records at its end, one that
 * starts elsewhere than the state file's first lost them at its start.
 * The chain then continues from the state file's last record, so the gap
 * stays visible to audit verify; an empty log (moved away for rotation)
 * continues the chain too, its first record linking to the old file's last.
 */
static void hold_to_expected(const char *path, bool have_first, const struct record *first,
                             bool have_last, const struct record *last)
{
    const struct audit_anchor *e = &expected;
    bool lost_end = !have_last || last->seq < e->last_seq ||
                    (last->seq == e->last_seq && strcmp(last->hash, e->last_hash) != 0);

    if (e->last_seq == 0)
        return;
    if (!have_first && !have_last) {
        log_info("audit log %s has no records: the chain continues after record %" PRIu64, path,
                 e->last_seq);
        audit.seq = e->last_seq;
        memcpy(audit.prev, e->last_hash, sizeof(audit.prev));
        audit.first_seq = e->last_seq + 1;
        memcpy(audit.first_prev, e->last_hash, sizeof(audit.first_prev));
        return;
    }
    if (lost_end) {
        if (have_last && last->seq >= e->last_seq)
            log_err("audit log %s: record %" PRIu64 " is not the one the state file saw written; "
                    "the chain continues from the state file's, so audit verify reports the break",
                    path, e->last_seq);
        else
            log_err("audit log %s ends before record %" PRIu64 " the state file saw written: "
                    "records were removed from its end; the chain continues after it, so audit "
                    "verify reports the gap",
                    path, e->last_seq);
        audit.seq = e->last_seq;
        memcpy(audit.prev, e->last_hash, sizeof(audit.prev));
    }
    if (e->first_seq &&
        (!have_first || first->seq != e->first_seq || strcmp(first->prev, e->first_prev) != 0)) {
        log_err("audit log %s does not start with record %" PRIu64 " as the state file says it "
                "did: records were removed from its start",
                path, e->first_seq);
        audit.first_seq = e->first_seq;
        memcpy(audit.first_prev, e->first_prev, sizeof(audit.first_prev));
    }
}

/*
 * Pick up the chain from the end of the log at path (fd is the append
 * descriptor). Anything unreadable starts a new chain with a warning; a
 * partial last line is ended with '\n' first so the next record is not
 * glued to it (verify still reports that line: a record was lost).
 */
static void resume_chain(const char *path, int fd)
{
    struct record r, first;
    const char *why = last_unreadable;
    bool found = false, have_first = false;
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    size_t done;

    if (rfd >= 0) {
        why = read_last_record(rfd, &r, &found);
        read_first_record(rfd, &first, &have_first);
        close(rfd);
    }
    audit.seq = 0;
    memcpy(audit.prev, zero_hash, sizeof(zero_hash));
    audit.first_seq = 0;
    if (found) {
        audit.seq = r.seq;
        memcpy(audit.prev, r.hash, sizeof(r.hash));
        log_debug("audit log %s: chain continues after seq %" PRIu64, path, r.seq);
    } else if (why != NULL) {
        log_warn("audit log %s: %s; starting a new hash chain (audit verify will report the break)",
                 path, why);
        if (why == last_incomplete && write_all(fd, "\n", 1, &done) < 0)
            audit.torn = true;
    }
    if (have_first) {
        audit.first_seq = first.seq;
        memcpy(audit.first_prev, first.prev, sizeof(audit.first_prev));
    } else if (why == NULL && !found) {
        audit.first_seq = audit.seq + 1; /* an empty log: its first record is the next one */
        memcpy(audit.first_prev, audit.prev, sizeof(audit.first_prev));
    }
    hold_to_expected(path, have_first, &first, found, &r);
    memset(&expected, 0, sizeof(expected));
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
    audit.first_seq = 0;
    memcpy(audit.prev, zero_hash, sizeof(zero_hash));
}

void audit_expect(const struct audit_anchor *a)
{
    expected = *a;
}

bool audit_anchor(struct audit_anchor *a)
{
    if (audit.fd < 0 || audit.first_seq == 0)
        return false;
    a->first_seq = audit.first_seq;
    memcpy(a->first_prev, audit.first_prev, sizeof(a->first_prev));
    a->last_seq = audit.seq;
    memcpy(a->last_hash, audit.prev, sizeof(a->last_hash));
    return true;
}

bool audit_live(struct audit_live *live)
{
    struct stat st;

    if (!audit_anchor(&live->anchor) || fstat(audit.fd, &st) < 0)
        return false;
    live->dev = st.st_dev;
    live->ino = st.st_ino;
    live->size = (uint64_t)st.st_size;
    return true;
}

/* The append descriptor, for the persistence thread's fsync; -1 when off. */
void audit_hold(bool held)
{
    audit.held = held;
}

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
 * User names by uid, looked up at most once a minute per uid: the lookup
 * reads /etc/passwd (or asks NSS), and it sits on the path of every admin
 * change between reading the command and answering it.
 */
#define USER_CACHE     8
#define USER_CACHE_TTL (60 * 1000000ull)

static struct {
    pthread_mutex_t lock;
    struct {
        int uid;
        uint64_t at_us; /* 0: empty */
        char name[64];  /* "" when the database does not know the uid */
    } e[USER_CACHE];
    unsigned next;
} users = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* uid's name into out ("" when unknown), from the database. */
static void lookup_user(int uid, char *out, size_t outlen)
{
    struct passwd pw, *res = NULL;
    size_t len = 1024;
    char *buf = NULL;
    int rc;

    do {
        len *= 2;
        buf = veer_realloc(buf, len);
        rc = getpwuid_r((uid_t)uid, &pw, buf, len, &res);
    } while (rc == ERANGE && len < (1u << 20));
    snprintf(out, outlen, "%s", rc == 0 && res != NULL ? res->pw_name : "");
    free(buf);
}

/*
 * Append the user name of uid as a JSON string: "veer" for veer itself
 * (-1), the number when the password database does not know it.
 */
static void add_user(struct sbuf *b, int uid)
{
    uint64_t now = veer_now_us();
    char name[64] = "";
    unsigned i;

    if (uid == -1) {
        sb_json_str(b, "veer");
        return;
    }
    pthread_mutex_lock(&users.lock);
    for (i = 0; i < USER_CACHE; i++)
        if (users.e[i].at_us && users.e[i].uid == uid && now - users.e[i].at_us < USER_CACHE_TTL)
            break;
    if (i < USER_CACHE) {
        snprintf(name, sizeof(name), "%s", users.e[i].name);
    } else {
        lookup_user(uid, name, sizeof(name));
        i = users.next++ % USER_CACHE;
        users.e[i].uid = uid;
        users.e[i].at_us = now;
        snprintf(users.e[i].name, sizeof(users.e[i].name), "%s", name);
    }
    pthread_mutex_unlock(&users.lock);
    if (name[0])
        sb_json_str(b, name);
    else
        sb_printf(b, "\"%d\"", uid);
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
    if (audit.held) {
        /* Another process continues the chain: a record here would fork it. */
        log_warn("audit log: record \"%s\" not written: this process has handed the log over "
                 "(upgrade)",
                 command);
        audit.last_errno = EBUSY;
        return -1;
    }
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
        if (audit.first_seq == 0) {
            audit.first_seq = audit.seq + 1;
            memcpy(audit.first_prev, audit.prev, sizeof(audit.first_prev));
        }
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
    struct record first;
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
    if (!v->have_prev)
        v->first = r;
    v->last = r;
    v->have_prev = true;
    v->records++;
    return 0;
}

/* Check what the live log's ends say against the chain veer holds (live). */
static int verify_ends(const struct verify *v, const struct audit_live *live, char *msg,
                       size_t msglen)
{
    const struct audit_anchor *a = &live->anchor;

    if (v->records > 0 &&
        (v->first.seq != a->first_seq || strcmp(v->first.prev, a->first_prev) != 0))
        return broken(msg, msglen, a->first_seq, 1,
                      "missing: the log starts at record %" PRIu64
                      " (records were removed from its start)",
                      v->first.seq);
    if (a->last_seq < a->first_seq)
        return 0; /* nothing written to this file yet */
    if (v->records == 0)
        return broken(msg, msglen, a->first_seq, 1,
                      "missing: the log has no records but veer wrote %" PRIu64 " to %" PRIu64,
                      a->first_seq, a->last_seq);
    if (v->last.seq != a->last_seq || strcmp(v->last.hash, a->last_hash) != 0)
        return broken(msg, msglen, a->last_seq, v->line + 1,
                      "missing: the log ends at record %" PRIu64
                      " but veer wrote up to record %" PRIu64
                      " (records were removed from its end)",
                      v->last.seq, a->last_seq);
    return 0;
}

/* A line being read: grows up to MAX_LAST_LINE. */
struct linebuf {
    char *s;
    size_t len, cap;
};

static bool line_add(struct linebuf *l, const char *p, size_t n)
{
    if (l->len + n > MAX_LAST_LINE)
        return false;
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 4096;

        while (cap < l->len + n)
            cap *= 2;
        l->s = veer_realloc(l->s, cap);
        l->cap = cap;
    }
    memcpy(l->s + l->len, p, n);
    l->len += n;
    return true;
}

/*
 * Read fd up to limit bytes, one line at a time, and check the chain. A
 * line longer than MAX_LAST_LINE is reported, not held; cancel (may be
 * NULL) stops the reading early with -1.
 */
static int verify_stream(int fd, uint64_t limit, struct verify *v, const atomic_bool *cancel,
                         const char *path, char *msg, size_t msglen)
{
    struct linebuf l = {0};
    char chunk[65536];
    uint64_t off = 0;
    int rc = 0;

    while (rc == 0 && off < limit) {
        size_t want = limit - off < sizeof(chunk) ? (size_t)(limit - off) : sizeof(chunk);
        ssize_t n = read(fd, chunk, want);

        if (cancel && atomic_load(cancel)) {
            snprintf(msg, msglen, "cancelled");
            rc = -1;
            break;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(msg, msglen, "cannot read %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        if (n == 0)
            break; /* the file shrank since it was measured */
        off += (uint64_t)n;
        for (size_t at = 0; rc == 0 && at < (size_t)n;) {
            char *nl = memchr(chunk + at, '\n', (size_t)n - at);
            size_t k = nl ? (size_t)(nl - chunk) - at : (size_t)n - at;

            if (!line_add(&l, chunk + at, k)) {
                rc = broken(msg, msglen, v->have_prev ? v->last.seq + 1 : 1, v->line + 1,
                            "longer than %u MiB", MAX_LAST_LINE >> 20);
                break;
            }
            at += k;
            if (nl == NULL)
                break;
            at++;
            v->line++;
            rc = verify_line(v, l.s ? l.s : "", l.len, true, msg, msglen);
            l.len = 0;
        }
    }
    if (rc == 0 && l.len > 0) {
        v->line++;
        rc = verify_line(v, l.s, l.len, false, msg, msglen);
    }
    free(l.s);
    return rc;
}

/*
 * Open path without blocking (a FIFO would hang an ordinary open), refuse
 * anything but a regular file (a device such as /dev/zero never ends), and
 * read no further than its size at open, or than live->size when it is the
 * live log, whose ends are then checked against the chain veer holds.
 */
int audit_verify_ex(const char *path, const struct audit_live *live, const atomic_bool *cancel,
                    char *msg, size_t msglen)
{
    struct verify v = {0};
    struct stat st;
    uint64_t limit;
    bool is_live;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    int rc;

    if (fd < 0) {
        snprintf(msg, msglen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        snprintf(msg, msglen, "cannot read %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, msglen, "cannot read %s: not a regular file", path);
        close(fd);
        return -1;
    }
    is_live = live && st.st_dev == live->dev && st.st_ino == live->ino;
    limit = is_live ? live->size : (uint64_t)st.st_size;
    rc = verify_stream(fd, limit, &v, cancel, path, msg, msglen);
    close(fd);
    if (rc == 0 && is_live)
        rc = verify_ends(&v, live, msg, msglen);
    if (rc == 0)
        snprintf(msg, msglen, "records=%" PRIu64, v.records);
    return rc;
}

int audit_verify(const char *path, char *msg, size_t msglen)
{
    return audit_verify_ex(path, NULL, NULL, msg, msglen);
}
