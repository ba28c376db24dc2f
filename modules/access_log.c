/*
 * access_log.c - the access log: one JSON line per request (time, client,
 * method, path, status, bytes in and out, total and upstream time, pool,
 * route, backend, group, generation, request id, trace id). Lines are buffered per worker
 * and written at least once a second from the worker's timer, never on the
 * request path; SIGUSR1 (logrotate) reopens the file. X-Request-Id is
 * passed through, or generated and forwarded to the backend.
 *
 * Its key: access_log = "PATH"; (absent: no log).
 */
#include "module.h"
#include "routing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ALOG_FLUSH_BYTES (64 * 1024)

/* One worker's pending lines. */
struct alog {
    struct sbuf buf;
    struct event timer;
    bool timer_on;
};

static struct {
    _Atomic int fd;
    char path[4096];
    struct alog bufs[256]; /* per worker index */
} al = {.fd = -1};

struct alog_conf {
    char *access_log; /* NULL = off */
};

static const struct conf_field keys[] = {
    CF_STR(struct alog_conf, access_log, NULL),
    CF_END,
};

extern const struct veer_module module_access_log;

/* The configured path, or NULL. */
static const char *log_path(const struct veer_conf *conf)
{
    const struct alog_conf *c = conf_section(conf, &module_access_log.conf);

    return c->access_log;
}

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

    if (fd < 0)
        log_err("access log %s: %s", path, strerror(errno));
    return fd;
}

/*
 * Point the log's descriptor at the newly opened fd. Workers load al.fd and
 * then write without a lock, so the number they hold must never be closed
 * under them (or reused by the next open(), sending log lines into another
 * file or a client's socket): once there is a descriptor, the new file is
 * moved onto its number with dup3(), which is atomic, and that number stays.
 */
static void install(int fd)
{
    int cur = atomic_load(&al.fd);

    if (cur >= 0 && dup3(fd, cur, O_CLOEXEC) == cur) {
        close(fd);
        return;
    }
    cur = atomic_exchange(&al.fd, fd);
    if (cur >= 0)
        close(cur);
}

/* (Re)open when the path is new; a reload with the same path keeps the file. */
static int init(const struct veer_conf *conf)
{
    const char *path = log_path(conf);
    int fd, old;

    if (path == NULL) {
        old = atomic_exchange(&al.fd, -1);
        if (old >= 0)
            close(old);
        al.path[0] = '\0';
        return VEER_OK;
    }
    if (strcmp(path, al.path) == 0 && atomic_load(&al.fd) >= 0)
        return VEER_OK;
    fd = open_log(path);
    if (fd < 0)
        return VEER_ERROR;
    snprintf(al.path, sizeof(al.path), "%s", path);
    install(fd);
    return VEER_OK;
}

/*
 * A reload to a log file that cannot be opened is refused whole (init would
 * keep the old file while the reload said OK). The same path as now is
 * kept open by init, so it is not tried again.
 */
static int check(const struct veer_conf *old, const struct veer_conf *conf, char *err,
                 size_t errlen)
{
    const char *path = log_path(conf), *was = log_path(old);
    int fd;

    if (path == NULL || (was && strcmp(was, path) == 0))
        return VEER_OK;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s: access_log %s: %s", conf->path, path, strerror(errno));
        return VEER_ERROR;
    }
    close(fd);
    return VEER_OK;
}

static void on_reopen(void)
{
    int fd;

    if (al.path[0] == '\0')
        return;
    fd = open_log(al.path);
    if (fd < 0)
        return;
    install(fd);
    log_info("access log %s reopened", al.path);
}

static void flush(struct alog *a)
{
    int fd = atomic_load(&al.fd);
    size_t off = 0;

    while (fd >= 0 && off < a->buf.len) {
        ssize_t n = write(fd, a->buf.s + off, a->buf.len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    sb_reset(&a->buf);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    flush(arg);
}

static void copy_span(char *dst, size_t cap, const char *p, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, p, n);
    dst[n] = '\0';
}

/* Keep what the line needs while the head is still in the buffer. */
static int on_request_head(struct txn *t)
{
    struct txn_log *l;
    const char *v;
    size_t n;

    if (atomic_load_explicit(&al.fd, memory_order_relaxed) < 0 || txn_log(t))
        return VEER_DECLINED; /* off, or a held request coming back */
    l = veer_calloc(1, sizeof(*l));
    v = txn_method(t, &n);
    copy_span(l->method, sizeof(l->method), v, n);
    v = txn_path(t, &n);
    copy_span(l->path, sizeof(l->path), v, n);
    v = txn_header(t, "x-request-id", &n);
    if (v && n) {
        copy_span(l->request_id, sizeof(l->request_id), v, n);
    } else {
        txn_new_request_id(t, l->request_id, sizeof(l->request_id));
        l->id_generated = true;
    }
    snprintf(l->route, sizeof(l->route), "%s", txn_route_name(t));
    l->generation = txn_routing(t)->generation;
    txn_set_log(t, l);
    return VEER_DECLINED;
}

static void on_txn_end(struct txn *t)
{
    const struct txn_log *l = txn_log(t);
    const struct routing *r;
    unsigned idx;
    struct txn_summary x;
    struct alog *a;
    struct timeval tv;
    struct tm tm;
    char ip[INET6_ADDRSTRLEN] = "-";
    uint64_t now = veer_now_us();
    const char *pool, *group = "";

    if (l == NULL)
        return; /* the log is off (or was when the request began) */
    idx = txn_worker_index(t);
    if (idx >= ARRAY_SIZE(al.bufs))
        return;
    r = txn_routing(t);
    txn_summarize(t, &x);
    a = &al.bufs[idx];
    if (!a->timer_on) {
        struct timeval sec = {1, 0};

        event_assign(&a->timer, txn_event_base(t), -1, EV_PERSIST, timer_cb, a);
        event_add(&a->timer, &sec);
        a->timer_on = true;
    }
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    if (x.client->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)x.client)->sin6_addr, ip, sizeof(ip));
    else if (x.client->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)x.client)->sin_addr, ip, sizeof(ip));
    pool = (uint32_t)x.pool < r->npools ? r->pools[x.pool].name : "";
    if (x.be) {
        const struct snap_pool *sp = &r->pools[x.pool];

        for (uint32_t i = 0; i < sp->n; i++)
            if (sp->b[i].be == x.be)
                group = sp->group_names[sp->b[i].group];
    }
    sb_printf(&a->buf, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"client\":\"%s\",",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              (int)(tv.tv_usec / 1000), ip);
    sb_puts(&a->buf, "\"method\":");
    sb_json_latin1(&a->buf, l->method);
    sb_puts(&a->buf, ",\"path\":");
    sb_json_latin1(&a->buf, l->path);
    sb_printf(&a->buf,
              ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,\"total_ms\":%.3f,"
              "\"upstream_ms\":%.3f,\"pool\":",
              x.status, (unsigned long long)x.bytes_in, (unsigned long long)x.bytes_out,
              (double)(now - x.start_us) / 1000.0, (double)x.upstream_us / 1000.0);
    sb_json_latin1(&a->buf, pool);
    sb_puts(&a->buf, ",\"route\":");
    sb_json_latin1(&a->buf, l->route);
    sb_puts(&a->buf, ",\"backend\":");
    sb_json_latin1(&a->buf, x.be ? x.be->name : "");
    sb_puts(&a->buf, ",\"group\":");
    sb_json_latin1(&a->buf, group);
    sb_printf(&a->buf, ",\"generation\":%llu,\"request_id\":", (unsigned long long)l->generation);
    sb_json_latin1(&a->buf, l->request_id);
    sb_puts(&a->buf, ",\"trace_id\":\""); /* hex digits (trace_context), or empty */
    sb_puts(&a->buf, l->trace_id);
    sb_puts(&a->buf, "\"}\n");
    if (a->buf.len >= ALOG_FLUSH_BYTES)
        flush(a);
}

/* Workers are gone by now: write what they left and close. */
static void on_shutdown(uint64_t deadline_us)
{
    int fd;

    for (unsigned i = 0; i < ARRAY_SIZE(al.bufs); i++) {
        flush(&al.bufs[i]);
        sb_free(&al.bufs[i].buf);
        al.bufs[i].timer_on = false;
    }
    fd = atomic_exchange(&al.fd, -1);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    al.path[0] = '\0';
}

const struct veer_module module_access_log = {
    .name = "access_log",
    .conf = {.keys = keys, .size = sizeof(struct alog_conf)},
    .init = init,
    .check = check,
    .on_request_head = on_request_head,
    .on_txn_end = on_txn_end,
    .on_shutdown = on_shutdown,
    .on_reopen = on_reopen,
};
