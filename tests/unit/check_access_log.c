/*
 * check_access_log.c - the access log, driven through the module's hooks
 * (init, on_request_head, on_txn_end, on_reopen, on_shutdown, and the
 * whole module chain) with workers, a session and a parsed request filled
 * the way worker.c and session.c fill them, and routing snapshots built
 * from a real config: one JSON line per request with exactly the documented
 * fields in order (read back with jansson), the path without its query,
 * odd characters escaped so a request cannot forge or break a line (bytes
 * outside ASCII included), X-Request-Id passed through or generated and
 * forwarded; lines are buffered per worker, written by the worker's
 * one-second timer (driven on a real event_base with a deadline), at once
 * when the buffer is full, and at on_shutdown; a reopen (SIGUSR1,
 * logrotate) or a reload to another path writes to the new file and never
 * leaves a writer holding a closed descriptor; a path that cannot be
 * opened fails init with a clear error, and a failed reopen keeps the old
 * file.
 */
#include "conf.h"
#include "modcheck.h"
#include "http.h"
#include "module.h"
#include "model.h"
#include "session.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern const struct veer_module module_access_log;

#define NW            2 /* workers */
#define MAX_LISTENERS 2

/* The keys of a line, in the documented order. */
#define KEYS                                                                                       \
    "time,client,method,path,status,bytes_in,bytes_out,total_ms,upstream_ms,pool,route,backend,"   \
    "group,generation,request_id,trace_id,"

/* A config, its model and snapshot, and NW workers with a listener per `listen` entry. */
static struct {
    char dir[64];
    char log[128]; /* dir/access.log */
    struct veer_conf *c;
    struct model *m;
    struct worker w[NW];
    struct wlistener l[NW][MAX_LISTENERS];
    struct wlistener *ls[NW][MAX_LISTENERS];
} fx;

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    strcpy(fx.dir, "/tmp/check_access_log.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(fx.dir));
    snprintf(fx.log, sizeof(fx.log), "%s/access.log", fx.dir);
}

/* Remove dir and everything in it (one level of subdirectories). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[PATH_MAX];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (unlink(p) < 0)
            remove_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

static void teardown(void)
{
    /* Flush and close what the module holds, as veer does at exit. */
    module_access_log.on_shutdown(veer_now_us());
    for (int i = 0; i < NW; i++) {
        if (fx.w[i].base == NULL)
            continue;
        vbuf_cache_destroy(&fx.w[i].bufs);
        event_base_free(fx.w[i].base);
    }
    routing_free(fx.w[0].routing);
    model_free(fx.m);
    conf_free(fx.c);
    remove_tree(fx.dir);
}

/* Load a config from text, as conf_load() reads it from a file. */
static struct veer_conf *load(const char *text)
{
    char path[128], err[512];
    struct veer_conf *c;
    FILE *f;

    snprintf(path, sizeof(path), "%s/veer.conf", fx.dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "config: %s", err);
    return c;
}

/*
 * Build the model and first snapshot of the config text, and NW workers as
 * worker_create() leaves them (limits, buffer cache, one listener per
 * `listen` entry bound to its pool), minus the threads and the sockets.
 * The modules are started as veer starts them.
 */
static void start(const char *text)
{
    fx.c = load(text);
    ck_assert_int_le(fx.c->nlistens, MAX_LISTENERS);
    veer_nworkers = NW;
    fx.m = model_from_conf(fx.c);
    for (unsigned k = 0; k < NW; k++) {
        struct worker *w = &fx.w[k];

        w->idx = k;
        w->pid = (unsigned)getpid(); /* as worker_create() sets it */
        w->base = event_base_new();
        w->conf = fx.c;
        w->req_limits = (struct http_limits){
            .line_bytes = (uint32_t)fx.c->limits.request_line_bytes,
            .header_bytes = (uint32_t)fx.c->limits.header_bytes,
            .header_count = (uint32_t)fx.c->limits.header_count,
            .body_bytes = (uint64_t)fx.c->limits.body_bytes,
        };
        vbuf_cache_init(&w->bufs, 8);
        for (int i = 0; i < fx.c->nlistens; i++) {
            fx.l[k][i].fd = -1;
            fx.l[k][i].w = w;
            fx.l[k][i].lc = &fx.c->listens[i];
            fx.l[k][i].pool = fx.c->listens[i].pool_index;
            fx.ls[k][i] = &fx.l[k][i];
        }
        w->listeners = fx.ls[k];
        w->nlisteners = (unsigned)fx.c->nlistens;
    }
    fx.w[0].routing = routing_build(fx.m);
    fx.w[1].routing = fx.w[0].routing;
    ck_assert_int_eq(module_init_all(fx.c), VEER_OK);
}

/* start() with `access_log = "<dir>/access.log";` ahead of the rest. */
static void start_logged(const char *rest)
{
    char text[4096];

    snprintf(text, sizeof(text), "access_log = \"%s\";\n%s", fx.log, rest);
    start(text);
}

/* A change as control_publish() makes it: the next generation, a new snapshot. */
static void publish(void)
{
    routing_free(fx.w[0].routing);
    fx.m->generation++;
    fx.w[0].routing = routing_build(fx.m);
    fx.w[1].routing = fx.w[0].routing;
}

/*
 * A session of worker wi on its first listener holding the request bytes
 * `raw`, from peer, and its transaction with the head parsed, as
 * session_process() has it when it calls handle_request_head().
 */
static struct txn *request_from(unsigned wi, const char *raw, const struct sockaddr *peer,
                                socklen_t plen)
{
    struct worker *w = &fx.w[wi];
    struct session *s = calloc(1, sizeof(*s));
    size_t msz = http_msg_size(w->req_limits.header_count), n = strlen(raw), used;
    struct txn *t = calloc(1, sizeof(*t) + 2 * msz);
    enum http_result r;

    s->magic = SESSION_MAGIC;
    s->c.w = w;
    s->l = &fx.l[wi][0];
    s->fd = -1;
    memcpy(&s->c.peer, peer, plen);
    s->c.in = vbuf_get(&w->bufs);
    ck_assert_uint_le(n, s->c.in->size);
    vbuf_add(s->c.in, raw, n);
    t->magic = TXN_MAGIC;
    t->s = &s->c;
    t->phase = TXN_REQ_HEAD;
    t->pool = s->l->pool;
    t->req = (struct http_msg *)(t + 1);
    t->res = (struct http_msg *)((char *)t->req + msz);
    t->start_us = veer_now_us();
    t->limits = w->req_limits;
    http_msg_init(t->req, HTTP_REQUEST, &t->limits);
    s->txn = t;
    r = http_parse(t->req, s->c.in->data, s->c.in->data, n, &used);
    ck_assert_msg(r == HTTP_HEAD_DONE, "request refused (%d): %s", r, raw);
    t->req_parsed = (uint32_t)used;
    r = http_parse(t->req, s->c.in->data, s->c.in->data + used, n - used, &used);
    ck_assert_int_eq(r, HTTP_MSG_DONE);
    t->req_parsed += (uint32_t)used;
    t->bytes_in += used;
    t->req_done = true;
    s->nreq++;
    t->bytes_in += t->req->head_len;
    return t;
}

static struct txn *request(unsigned wi, const char *raw)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(40000)};

    inet_pton(AF_INET, "192.0.2.7", &a.sin_addr);
    return request_from(wi, raw, (struct sockaddr *)&a, sizeof(a));
}

/*
 * What route() and the forwarding code do once the modules declined: the
 * backend is picked (backend bi of the request's pool in the snapshot),
 * the head is rewritten and leaves the client buffer (its bytes are gone),
 * the request goes upstream at start+1 ms and its response of `out` bytes
 * with `status` is complete 5 ms later.
 */
static void proxy(struct txn *t, uint32_t bi, int status, uint64_t out)
{
    const struct snap_pool *sp = &t->s->w->routing->pools[t->pool];
    struct vbuf *in = t->s->in;

    ck_assert_uint_lt(bi, sp->n);
    t->be = sp->b[bi].be;
    memset(in->data + in->start, 'Z', t->req->head_len);
    in->start += t->req->head_len;
    t->req_parsed -= t->req->head_len;
    t->phase = TXN_FORWARD;
    t->up_start_us = t->start_us + 1000;
    t->up_end_us = t->up_start_us + 5000;
    t->res_status = status;
    t->res_done = true;
    t->bytes_out = out;
}

/* txn_free(): the modules see the end of the transaction, then it is gone. */
static void end(struct txn *t)
{
    unqueue(t->s);
    if (t->phase != TXN_REQ_HEAD || t->res_status)
        module_txn_end(t);
    txn_drop(t);
}

/* One whole proxied request on worker wi: head hooks, backend 0, 200 with 1234 bytes, end. */
static void one(unsigned wi, const char *raw)
{
    struct txn *t = request(wi, raw);

    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    proxy(t, 0, 200, 1234);
    end(t);
}

/* The whole file at path as a string (free it); NULL when it does not exist. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    s = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static size_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

/* Complete lines in the file; every byte must belong to one (no partial line). */
static int count_lines(const char *path)
{
    char *s = slurp(path);
    int n = 0;
    size_t len;

    if (s == NULL)
        return 0;
    len = strlen(s);
    for (size_t i = 0; i < len; i++)
        n += s[i] == '\n';
    ck_assert_msg(len == 0 || s[len - 1] == '\n', "partial line in %s", path);
    free(s);
    return n;
}

/* Line k (0-based) of the file, without its newline (free it). */
static char *line_of(const char *path, int k)
{
    char *s = slurp(path), *p, *e, *out;

    ck_assert_ptr_nonnull(s);
    p = s;
    for (int i = 0; i < k; i++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    e = strchr(p, '\n');
    ck_assert_ptr_nonnull(e);
    out = strndup(p, (size_t)(e - p));
    free(s);
    return out;
}

/* The object's keys in the order they were written, joined with ','. */
static void keys_of(json_t *obj, char *out, size_t len)
{
    const char *k;
    json_t *v;

    out[0] = '\0';
    json_object_foreach (obj, k, v) {
        strncat(out, k, len - strlen(out) - 2);
        strcat(out, ",");
    }
}

/* Line k parsed strictly (valid UTF-8, no duplicate keys) with exactly the documented keys. */
static json_t *record(const char *path, int k)
{
    char *line = line_of(path, k), keys[512];
    json_error_t err;
    json_t *doc = json_loads(line, JSON_REJECT_DUPLICATES, &err);

    ck_assert_msg(doc != NULL, "line %d is not JSON (%s): %s", k, err.text, line);
    ck_assert(json_is_object(doc));
    keys_of(doc, keys, sizeof(keys));
    ck_assert_str_eq(keys, KEYS);
    free(line);
    return doc;
}

static const char *str(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

static json_int_t num(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

static double real(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    ck_assert_msg(json_is_real(v), "%s is not a real number", key);
    return json_real_value(v);
}

/* The descriptor this process has open on path, or -1. */
static int fd_of(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char link[300], target[PATH_MAX];
    int fd = -1;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL && fd < 0) {
        ssize_t n;

        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
        n = readlink(link, target, sizeof(target) - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, path) == 0)
            fd = atoi(e->d_name);
    }
    closedir(d);
    return fd;
}

/* What descriptor fd refers to now ("" when it is closed). */
static const char *target_of(int fd, char *out, size_t len)
{
    char link[64];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, out, len - 1);
    out[n < 0 ? 0 : n] = '\0';
    return out;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/*
 * Run worker wi's event loop until path holds `want` lines or timeout_ms
 * passes. Returns the milliseconds it took.
 */
static double run_until_lines(unsigned wi, const char *path, int want, int timeout_ms)
{
    struct event_base *base = fx.w[wi].base;
    bool expired = false;
    struct event *deadline = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    uint64_t t0 = veer_now_us();

    evtimer_add(deadline, &tv);
    while (count_lines(path) < want && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(deadline);
    return (double)(veer_now_us() - t0) / 1000.0;
}

#define LISTEN_API "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
#define POOLS                                                                                      \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:2\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 50; green = 50; }; } );\n"
#define CONF LISTEN_API POOLS

START_TEST(test_line_has_documented_fields_in_order)
{
    struct txn *t;
    json_t *doc;
    char *line, expect[64];
    const char *tm;
    struct tm when;
    int ms;
    time_t wall;

    start_logged(CONF);
    fx.m->generation = 41;
    publish();
    t = request(0, "POST /orders/7?sig=abc HTTP/1.1\r\nHost: veer.test\r\n"
                   "X-Request-Id: req-123\r\nContent-Length: 5\r\n\r\nhello");
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    ck_assert_ptr_nonnull(t->log);
    t->start_us -= 12345; /* the request began 12.345 ms ago */
    proxy(t, 1, 201, 4321);
    end(t);
    /* Buffered: nothing is written on the request path. */
    ck_assert_uint_eq(file_size(fx.log), 0);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    wall = time(NULL);
    ck_assert_int_eq(count_lines(fx.log), 1);
    doc = record(fx.log, 0);
    tm = str(doc, "time");
    ck_assert_uint_eq(strlen(tm), 24);
    memset(&when, 0, sizeof(when));
    ck_assert_ptr_nonnull(strptime(tm, "%Y-%m-%dT%H:%M:%S", &when));
    ck_assert_int_eq(sscanf(tm + 19, ".%3dZ", &ms), 1);
    ck_assert(tm[19] == '.' && tm[23] == 'Z');
    ck_assert_int_le(labs((long)(timegm(&when) - wall)), 5);
    ck_assert_str_eq(str(doc, "client"), "192.0.2.7");
    ck_assert_str_eq(str(doc, "method"), "POST");
    ck_assert_str_eq(str(doc, "path"), "/orders/7");
    ck_assert_int_eq(num(doc, "status"), 201);
    ck_assert_int_eq(num(doc, "bytes_in"), (json_int_t)strlen("POST /orders/7?sig=abc HTTP/1.1\r\n"
                                                              "Host: veer.test\r\n"
                                                              "X-Request-Id: req-123\r\n"
                                                              "Content-Length: 5\r\n\r\nhello"));
    ck_assert_int_eq(num(doc, "bytes_out"), 4321);
    ck_assert(real(doc, "total_ms") >= 12.345);
    ck_assert(real(doc, "total_ms") < 12.345 + 5000.0);
    ck_assert(real(doc, "upstream_ms") == 5.0);
    ck_assert_str_eq(str(doc, "pool"), "api");
    ck_assert_str_eq(str(doc, "route"), ""); /* no routes: the listener's pool */
    ck_assert_str_eq(str(doc, "backend"), "green-1");
    ck_assert_str_eq(str(doc, "group"), "green");
    ck_assert_int_eq(num(doc, "generation"), 42);
    ck_assert_str_eq(str(doc, "request_id"), "req-123");
    /* Durations in milliseconds with three decimals; one object, one line. */
    line = line_of(fx.log, 0);
    ck_assert_ptr_nonnull(strstr(line, ",\"upstream_ms\":5.000,"));
    ck_assert_int_eq(line[0], '{');
    ck_assert_int_eq(line[strlen(line) - 1], '}');
    snprintf(expect, sizeof(expect), "{\"time\":\"%s\",\"client\":", tm);
    ck_assert(strncmp(line, expect, strlen(expect)) == 0);
    free(line);
    json_decref(doc);
}
END_TEST

START_TEST(test_path_is_logged_without_query)
{
    json_t *doc;
    char *all;

    start_logged(CONF);
    one(0, GET("/search?token=s3cr3t&q=1"));
    one(0, "GET http://veer.test/p/q?token=s3cr3t HTTP/1.1\r\nHost: veer.test\r\n\r\n");
    one(0, GET("/plain"));
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(fx.log), 3);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "path"), "/search");
    json_decref(doc);
    doc = record(fx.log, 1);
    ck_assert_str_eq(str(doc, "path"), "/p/q");
    json_decref(doc);
    doc = record(fx.log, 2);
    ck_assert_str_eq(str(doc, "path"), "/plain");
    json_decref(doc);
    all = slurp(fx.log);
    ck_assert_ptr_null(strstr(all, "s3cr3t"));
    free(all);
}
END_TEST

START_TEST(test_odd_characters_cannot_forge_a_line)
{
    static const char path[] = "/x\",\"status\":200,\"backend\":\"evil\"}{\"a\\\\";
    static const char id[] = "id\",\"status\":200}\t\\";
    char raw[512];
    json_t *doc;
    struct txn *t;

    start_logged(CONF);
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: veer.test\r\nX-Request-Id: %s\r\n\r\n",
             path, id);
    t = request(0, raw);
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    proxy(t, 0, 404, 10);
    end(t);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(fx.log), 1);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "path"), path);
    ck_assert_str_eq(str(doc, "request_id"), id);
    ck_assert_int_eq(num(doc, "status"), 404);
    ck_assert_str_eq(str(doc, "backend"), "blue-1");
    json_decref(doc);
}
END_TEST

START_TEST(test_non_ascii_request_id_keeps_line_valid_json)
{
    json_t *doc;

    start_logged(CONF);
    /* obs-text is allowed in a field value; a JSON line must be UTF-8. */
    one(0, "GET /a HTTP/1.1\r\nHost: veer.test\r\nX-Request-Id: ab\xff\xfe\xc3\r\n\r\n");
    one(0, "GET /b HTTP/1.1\r\nHost: veer.test\r\nX-Request-Id: caf\xc3\xa9\r\n\r\n");
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(fx.log), 2);
    /* Each byte is logged as its ISO-8859-1 reading (RFC 9110 section 5.5): no byte is lost. */
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "request_id"), "ab\xc3\xbf\xc3\xbe\xc3\x83");
    json_decref(doc);
    doc = record(fx.log, 1);
    ck_assert_str_eq(str(doc, "request_id"), "caf\xc3\x83\xc2\xa9");
    json_decref(doc);
}
END_TEST

START_TEST(test_long_values_are_cut_and_stay_valid)
{
    char raw[4096], path[3001], id[201];
    json_t *doc;

    start_logged(CONF);
    path[0] = '/';
    memset(path + 1, 'p', sizeof(path) - 2);
    path[sizeof(path) - 1] = '\0';
    memset(id, '\xe9', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    snprintf(raw, sizeof(raw), "GET %s?q HTTP/1.1\r\nHost: veer.test\r\nX-Request-Id: %s\r\n\r\n",
             path, id);
    one(0, raw);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    doc = record(fx.log, 0);
    ck_assert_uint_eq(strlen(str(doc, "path")), sizeof(((struct txn_log *)0)->path) - 1);
    ck_assert(strncmp(str(doc, "path"), path, strlen(str(doc, "path"))) == 0);
    ck_assert_uint_gt(strlen(str(doc, "request_id")), 0);
    json_decref(doc);
}
END_TEST

START_TEST(test_request_id_passed_through_unchanged)
{
    struct txn *t;
    struct http_fwd_info fi = {.client_ip = "192.0.2.7"};
    char out[2048];
    size_t n;
    json_t *doc;

    start_logged(CONF);
    t = request(0, "GET /a HTTP/1.1\r\nHost: veer.test\r\nx-request-id: abc-1\r\n\r\n");
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    ck_assert_str_eq(t->log->request_id, "abc-1");
    ck_assert(!t->log->id_generated);
    /* route() adds no second one: the client's header goes upstream as it came. */
    fi.request_id = t->log->id_generated ? t->log->request_id : NULL;
    n = http_build_request(t->req, t->s->in->data + t->s->in->start, &fi, out);
    out[n] = '\0';
    ck_assert_ptr_nonnull(strstr(out, "\r\nx-request-id: abc-1\r\n"));
    ck_assert_ptr_null(strstr(out, "X-Request-Id"));
    proxy(t, 0, 200, 1);
    end(t);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "request_id"), "abc-1");
    json_decref(doc);
}
END_TEST

START_TEST(test_request_id_generated_unique_and_forwarded)
{
    struct txn *t[3];
    struct http_fwd_info fi = {.client_ip = "192.0.2.7"};
    char out[2048], hdr[128], pid[16];
    size_t n;

    start_logged(CONF);
    for (unsigned i = 0; i < 3; i++) {
        t[i] = request(i == 2 ? 1 : 0, GET("/a"));
        ck_assert_int_eq(module_request_head(t[i]), VEER_DECLINED);
        ck_assert(t[i]->log->id_generated);
        ck_assert_uint_eq(strlen(t[i]->log->request_id), 24);
        ck_assert_uint_eq(strspn(t[i]->log->request_id, "0123456789abcdef"), 24);
    }
    /* pid, worker, then a counter */
    snprintf(pid, sizeof(pid), "%08x", (unsigned)getpid());
    ck_assert(strncmp(t[0]->log->request_id, pid, 8) == 0);
    ck_assert(strncmp(t[0]->log->request_id + 8, "00", 2) == 0);
    ck_assert(strncmp(t[2]->log->request_id + 8, "01", 2) == 0);
    ck_assert_str_ne(t[0]->log->request_id, t[1]->log->request_id);
    ck_assert_str_ne(t[1]->log->request_id, t[2]->log->request_id);
    ck_assert_str_ne(t[0]->log->request_id, t[2]->log->request_id);
    /* route() forwards the generated id to the backend. */
    fi.request_id = t[0]->log->id_generated ? t[0]->log->request_id : NULL;
    n = http_build_request(t[0]->req, t[0]->s->in->data + t[0]->s->in->start, &fi, out);
    out[n] = '\0';
    snprintf(hdr, sizeof(hdr), "\r\nX-Request-Id: %s\r\n", t[0]->log->request_id);
    ck_assert_ptr_nonnull(strstr(out, hdr));
    for (unsigned i = 0; i < 3; i++) {
        proxy(t[i], 0, 200, 1);
        end(t[i]);
    }
}
END_TEST

START_TEST(test_held_request_keeps_its_first_record)
{
    struct txn *t;
    struct txn_log *first;
    char id[64];

    start_logged(CONF);
    t = request(0, GET("/a"));
    ck_assert_int_eq(module_access_log.on_request_head(t), VEER_DECLINED);
    first = t->log;
    snprintf(id, sizeof(id), "%s", first->request_id);
    /* A held request runs the modules again when a snapshot arrives. */
    publish();
    ck_assert_int_eq(module_access_log.on_request_head(t), VEER_DECLINED);
    ck_assert_ptr_eq(t->log, first);
    ck_assert_str_eq(t->log->request_id, id);
    ck_assert_uint_eq(t->log->generation, 1);
    proxy(t, 0, 200, 1);
    end(t);
}
END_TEST

START_TEST(test_generation_is_the_one_the_request_was_routed_with)
{
    struct txn *t;
    json_t *doc;

    start_logged(CONF);
    t = request(0, GET("/a"));
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    proxy(t, 0, 200, 1);
    publish(); /* a change while the response is on its way */
    end(t);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    doc = record(fx.log, 0);
    ck_assert_int_eq(num(doc, "generation"), 1);
    json_decref(doc);
}
END_TEST

START_TEST(test_ipv6_client_and_connection_lost_before_response)
{
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
    struct txn *t;
    json_t *doc;

    start_logged(CONF);
    inet_pton(AF_INET6, "2001:db8::17", &a6.sin6_addr);
    t = request_from(0, GET("/a"), (struct sockaddr *)&a6, sizeof(a6));
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    /* Sent upstream, then the client went away: no status, no response bytes. */
    proxy(t, 0, 0, 0);
    t->res_done = false;
    t->up_end_us = 0;
    end(t);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "client"), "2001:db8::17");
    ck_assert_int_eq(num(doc, "status"), 0);
    ck_assert_int_eq(num(doc, "bytes_out"), 0);
    ck_assert(real(doc, "upstream_ms") == 0.0);
    ck_assert_str_eq(str(doc, "backend"), "blue-1");
    ck_assert_str_eq(str(doc, "group"), "blue");
    json_decref(doc);
}
END_TEST

START_TEST(test_veers_own_answers_are_logged_without_backend)
{
    struct txn *t;
    json_t *doc;

    start_logged(CONF);
    /* A health endpoint, answered by the next module in the table. */
    t = request(0, GET("/api/health/liveness?from=lb"));
    ck_assert_int_eq(module_request_head(t), VEER_DONE);
    t->bytes_out = vbuf_len(t->res_head);
    end(t);
    /* Maintenance: 503. */
    fx.m->maint = true;
    fx.m->maint_retry_after = 30;
    publish();
    t = request(0, GET("/orders"));
    ck_assert_int_eq(module_request_head(t), VEER_DONE);
    t->bytes_out = vbuf_len(t->res_head);
    end(t);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(fx.log), 2);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "path"), "/api/health/liveness");
    ck_assert_int_eq(num(doc, "status"), 200);
    ck_assert_int_gt(num(doc, "bytes_out"), 0);
    ck_assert_str_eq(str(doc, "pool"), "api");
    ck_assert_str_eq(str(doc, "backend"), "");
    ck_assert_str_eq(str(doc, "group"), "");
    ck_assert(real(doc, "upstream_ms") == 0.0);
    json_decref(doc);
    doc = record(fx.log, 1);
    ck_assert_str_eq(str(doc, "path"), "/orders");
    ck_assert_int_eq(num(doc, "status"), 503);
    ck_assert_str_eq(str(doc, "backend"), "");
    ck_assert_int_eq(num(doc, "generation"), 2);
    json_decref(doc);
}
END_TEST

START_TEST(test_off_logs_nothing)
{
    struct txn *t;

    start(CONF);
    t = request(0, GET("/a"));
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    ck_assert_ptr_null(t->log);
    proxy(t, 0, 200, 1);
    end(t);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_ne(access(fx.log, F_OK), 0);
}
END_TEST

START_TEST(test_log_is_created_mode_0640)
{
    struct stat st;

    umask(022);
    start_logged(CONF);
    ck_assert_int_eq(stat(fx.log, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0640);
    ck_assert_int_eq(count_lines(fx.log), 0);
}
END_TEST

START_TEST(test_timer_writes_buffered_lines_within_a_second)
{
    double ms;

    start_logged(CONF);
    one(0, GET("/a"));
    one(0, GET("/b"));
    ck_assert_uint_eq(file_size(fx.log), 0);
    /* The worker's own loop writes them: at least once a second. */
    ms = run_until_lines(0, fx.log, 2, 3000);
    ck_assert_int_eq(count_lines(fx.log), 2);
    ck_assert_msg(ms < 2500.0, "took %.0f ms", ms);
    /* The timer keeps running: a later line is written by it too. */
    one(0, GET("/c"));
    ck_assert_int_eq(count_lines(fx.log), 2);
    run_until_lines(0, fx.log, 3, 3000);
    ck_assert_int_eq(count_lines(fx.log), 3);
}
END_TEST

START_TEST(test_full_buffer_is_written_at_once)
{
    char raw[1024], path[600];
    int n = 0, lines;
    json_t *doc;

    start_logged(CONF);
    path[0] = '/';
    memset(path + 1, 'a', 500);
    path[501] = '\0';
    snprintf(raw, sizeof(raw), GET("%s"), path);
    while (file_size(fx.log) == 0 && n < 1000) {
        one(0, raw);
        n++;
    }
    /* Well before the timer: 64 KiB of lines went out, each one whole. */
    ck_assert_uint_gt(file_size(fx.log), 0);
    ck_assert_uint_ge(file_size(fx.log), 64 * 1024);
    ck_assert_uint_lt(file_size(fx.log), 64 * 1024 + 1024);
    lines = count_lines(fx.log);
    ck_assert_int_eq(lines, n);
    ck_assert_int_gt(lines, 1);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "path"), path);
    json_decref(doc);
    doc = record(fx.log, lines - 1);
    ck_assert_str_eq(str(doc, "path"), path);
    json_decref(doc);
    one(0, raw);
    ck_assert_int_eq(count_lines(fx.log), n);
}
END_TEST

START_TEST(test_shutdown_flushes_every_worker_and_closes)
{
    struct txn *t;
    int fd;
    json_t *doc;

    start_logged(CONF);
    fd = fd_of(fx.log);
    ck_assert_int_ge(fd, 0);
    one(0, GET("/w0-a"));
    one(1, GET("/w1-a"));
    one(0, GET("/w0-b"));
    ck_assert_uint_eq(file_size(fx.log), 0);
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(fx.log), 3);
    /* Worker by worker, each in its order. */
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "path"), "/w0-a");
    json_decref(doc);
    doc = record(fx.log, 1);
    ck_assert_str_eq(str(doc, "path"), "/w0-b");
    json_decref(doc);
    doc = record(fx.log, 2);
    ck_assert_str_eq(str(doc, "path"), "/w1-a");
    json_decref(doc);
    /* The file is closed; a request after it is not logged. */
    ck_assert_int_lt(fd_of(fx.log), 0);
    t = request(0, GET("/late"));
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    ck_assert_ptr_null(t->log);
    end(t);
    ck_assert_int_eq(count_lines(fx.log), 3);
}
END_TEST

START_TEST(test_reopen_writes_to_new_file)
{
    char rotated[160];
    json_t *doc;

    start_logged(CONF);
    snprintf(rotated, sizeof(rotated), "%s.1", fx.log);
    one(0, GET("/before"));
    run_until_lines(0, fx.log, 1, 3000);
    ck_assert_int_eq(count_lines(fx.log), 1);
    /* logrotate: move the file away, then SIGUSR1. */
    ck_assert_int_eq(rename(fx.log, rotated), 0);
    module_reopen_all();
    ck_assert_int_eq(access(fx.log, F_OK), 0);
    one(0, GET("/after"));
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(rotated), 1);
    ck_assert_int_eq(count_lines(fx.log), 1);
    doc = record(rotated, 0);
    ck_assert_str_eq(str(doc, "path"), "/before");
    json_decref(doc);
    doc = record(fx.log, 0);
    ck_assert_str_eq(str(doc, "path"), "/after");
    json_decref(doc);
}
END_TEST

/*
 * A worker's flush loads the descriptor, then writes: a reopen on the
 * control thread in between must not leave it writing to a closed
 * descriptor, or to whatever file reuses the number next.
 */
START_TEST(test_reopen_never_closes_the_descriptor_writers_hold)
{
    char rotated[160], now[PATH_MAX], *all;
    int fd, other;

    start_logged(CONF);
    snprintf(rotated, sizeof(rotated), "%s.1", fx.log);
    fd = fd_of(fx.log); /* what a worker loaded just before the reopen */
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(rename(fx.log, rotated), 0);
    module_reopen_all();
    other = open("/dev/null", O_RDONLY); /* takes a freed number */
    ck_assert_str_eq(target_of(fd, now, sizeof(now)), fx.log);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0); /* not inherited by an upgrade */
    ck_assert_int_eq(write(fd, "{}\n", 3), 3);
    all = slurp(fx.log);
    ck_assert_str_eq(all, "{}\n");
    free(all);
    close(other);
}
END_TEST

START_TEST(test_reload_to_new_path_switches_file)
{
    char text[4096], other[160], now[PATH_MAX];
    struct veer_conf *nc;
    json_t *doc;
    int fd;

    start_logged(CONF);
    snprintf(other, sizeof(other), "%s/other.log", fx.dir);
    one(0, GET("/before"));
    run_until_lines(0, fx.log, 1, 3000);
    fd = fd_of(fx.log);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, other);
    nc = load(text);
    ck_assert_int_eq(module_init_all(nc), VEER_OK);
    ck_assert_str_eq(target_of(fd, now, sizeof(now)), other);
    one(0, GET("/after"));
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(fx.log), 1);
    ck_assert_int_eq(count_lines(other), 1);
    doc = record(other, 0);
    ck_assert_str_eq(str(doc, "path"), "/after");
    json_decref(doc);
    conf_free(nc);
}
END_TEST

START_TEST(test_reload_with_same_path_keeps_file)
{
    char rotated[160];
    struct veer_conf *nc;
    char text[4096];

    start_logged(CONF);
    snprintf(rotated, sizeof(rotated), "%s.1", fx.log);
    ck_assert_int_eq(rename(fx.log, rotated), 0);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, fx.log);
    nc = load(text);
    ck_assert_int_eq(module_init_all(nc), VEER_OK);
    /* Not reopened: that is SIGUSR1's job. */
    ck_assert_int_ne(access(fx.log, F_OK), 0);
    one(0, GET("/a"));
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    ck_assert_int_eq(count_lines(rotated), 1);
    conf_free(nc);
}
END_TEST

START_TEST(test_reload_without_log_turns_it_off)
{
    struct veer_conf *nc;
    struct txn *t;

    start_logged(CONF);
    nc = load(CONF);
    ck_assert_int_eq(module_init_all(nc), VEER_OK);
    ck_assert_int_lt(fd_of(fx.log), 0);
    t = request(0, GET("/a"));
    ck_assert_int_eq(module_request_head(t), VEER_DECLINED);
    ck_assert_ptr_null(t->log);
    end(t);
    /* SIGUSR1 with the log off opens nothing. */
    module_reopen_all();
    ck_assert_int_lt(fd_of(fx.log), 0);
    conf_free(nc);
}
END_TEST

/* SIGUSR1, shaped like an init hook for stderr_of(). */
static int reopen(const struct veer_conf *c)
{
    module_reopen_all();
    return VEER_OK;
}

/* Run fn with stderr going to a file; returns what it wrote (free it). */
static char *stderr_of(int (*fn)(const struct veer_conf *), const struct veer_conf *c, int *rc)
{
    char path[128];
    int saved = dup(STDERR_FILENO), fd;
    char *out;

    snprintf(path, sizeof(path), "%s/stderr", fx.dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    *rc = fn(c);
    dup2(saved, STDERR_FILENO);
    close(saved);
    out = slurp(path);
    unlink(path);
    return out;
}

START_TEST(test_unopenable_path_fails_init_with_clear_error)
{
    char text[4096], bad[160], want[256];
    struct veer_conf *c;
    char *err;
    int rc;

    snprintf(bad, sizeof(bad), "%s/no/such/dir/access.log", fx.dir);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, bad);
    c = load(text);
    err = stderr_of(module_init_all, c, &rc);
    ck_assert_int_eq(rc, VEER_ERROR);
    snprintf(want, sizeof(want), "error: access log %s: No such file or directory\n", bad);
    ck_assert_msg(strstr(err, want) != NULL, "stderr: %s", err);
    ck_assert_ptr_nonnull(strstr(err, "error: module access_log failed to start\n"));
    free(err);
    conf_free(c);
}
END_TEST

/*
 * Before a reload applies anything (module_check_all): a new path that
 * cannot be opened refuses the reload, naming the file, the key and the OS
 * error; the running path, another that opens, or none are accepted.
 */
START_TEST(test_reload_check_refuses_a_log_that_cannot_open)
{
    char text[4096], bad[160], err[512] = "", want[512];
    struct veer_conf *none, *oc, *nc;

    snprintf(bad, sizeof(bad), "%s/no/such/dir/access.log", fx.dir);
    none = load(CONF);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, fx.log);
    oc = load(text);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, bad);
    nc = load(text);
    ck_assert_int_eq(module_check_all(oc, nc, err, sizeof(err)), VEER_ERROR);
    snprintf(want, sizeof(want), "%s/veer.conf: access_log %s: No such file or directory", fx.dir,
             bad);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(module_access_log.check(none, nc, err, sizeof(err)), VEER_ERROR);
    /* The running path is kept open by init: nothing to try. */
    ck_assert_int_eq(module_access_log.check(nc, nc, err, sizeof(err)), VEER_OK);
    /* A path that opens (the check creates the file, as init would), or no log. */
    ck_assert_int_ne(access(fx.log, F_OK), 0);
    ck_assert_int_eq(module_check_all(none, oc, err, sizeof(err)), VEER_OK);
    ck_assert_int_eq(access(fx.log, F_OK), 0);
    ck_assert_int_eq(module_check_all(oc, none, err, sizeof(err)), VEER_OK);
    ck_assert_int_eq(module_check_all(none, none, err, sizeof(err)), VEER_OK);
    conf_free(none);
    conf_free(oc);
    conf_free(nc);
}
END_TEST

START_TEST(test_failed_reload_or_reopen_keeps_old_file)
{
    char sub[128], moved[128], log[160], bad[160], text[4096], *err;
    struct veer_conf *nc;
    json_t *doc;
    int rc;

    snprintf(sub, sizeof(sub), "%s/logs", fx.dir);
    snprintf(moved, sizeof(moved), "%s/logs.old", fx.dir);
    snprintf(log, sizeof(log), "%s/access.log", sub);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, log);
    start(text);
    /* A reload naming a path that cannot be opened fails and changes nothing. */
    snprintf(bad, sizeof(bad), "%s/missing/access.log", fx.dir);
    snprintf(text, sizeof(text), "access_log = \"%s\";\n" CONF, bad);
    nc = load(text);
    err = stderr_of(module_access_log.init, nc, &rc);
    ck_assert_int_eq(rc, VEER_ERROR);
    free(err);
    conf_free(nc);
    /* The directory goes away: the reopen fails, lines keep going to the open file. */
    ck_assert_int_eq(rename(sub, moved), 0);
    err = stderr_of(reopen, fx.c, &rc);
    ck_assert_ptr_nonnull(strstr(err, "error: access log "));
    ck_assert_ptr_nonnull(strstr(err, "No such file or directory"));
    free(err);
    one(0, GET("/still"));
    module_access_log.on_shutdown(veer_now_us() + 1000000);
    snprintf(log, sizeof(log), "%s/access.log", moved);
    ck_assert_int_eq(count_lines(log), 1);
    doc = record(log, 0);
    ck_assert_str_eq(str(doc, "path"), "/still");
    json_decref(doc);
}
END_TEST

static Suite *access_log_suite(void)
{
    Suite *s = suite_create("access_log");
    TCase *tc = tcase_create("access_log");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_line_has_documented_fields_in_order);
    tcase_add_test(tc, test_path_is_logged_without_query);
    tcase_add_test(tc, test_odd_characters_cannot_forge_a_line);
    tcase_add_test(tc, test_non_ascii_request_id_keeps_line_valid_json);
    tcase_add_test(tc, test_long_values_are_cut_and_stay_valid);
    tcase_add_test(tc, test_request_id_passed_through_unchanged);
    tcase_add_test(tc, test_request_id_generated_unique_and_forwarded);
    tcase_add_test(tc, test_held_request_keeps_its_first_record);
    tcase_add_test(tc, test_generation_is_the_one_the_request_was_routed_with);
    tcase_add_test(tc, test_ipv6_client_and_connection_lost_before_response);
    tcase_add_test(tc, test_veers_own_answers_are_logged_without_backend);
    tcase_add_test(tc, test_off_logs_nothing);
    tcase_add_test(tc, test_log_is_created_mode_0640);
    tcase_add_test(tc, test_timer_writes_buffered_lines_within_a_second);
    tcase_add_test(tc, test_full_buffer_is_written_at_once);
    tcase_add_test(tc, test_shutdown_flushes_every_worker_and_closes);
    tcase_add_test(tc, test_reopen_writes_to_new_file);
    tcase_add_test(tc, test_reopen_never_closes_the_descriptor_writers_hold);
    tcase_add_test(tc, test_reload_to_new_path_switches_file);
    tcase_add_test(tc, test_reload_with_same_path_keeps_file);
    tcase_add_test(tc, test_reload_without_log_turns_it_off);
    tcase_add_test(tc, test_unopenable_path_fails_init_with_clear_error);
    tcase_add_test(tc, test_reload_check_refuses_a_log_that_cannot_open);
    tcase_add_test(tc, test_failed_reload_or_reopen_keeps_old_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(access_log_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
