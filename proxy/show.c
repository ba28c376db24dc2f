/*
 * show.c - the read-only admin commands: show pools (a table), show pool (table or
 * the JSON of the contract), audit verify.
 */
#include "control-i.h"
#include "adminhttp.h"
#include "audit.h"
#include "health.h"
#include "sbuf.h"
#include "state.h"
#include "upstream.h"
#include "veer.h"
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* --- reading ---------------------------------------------------------------------- */

/* Pad cells into aligned columns: rows of n cells each. */
static void table(struct sbuf *o, char **cells, unsigned rows, unsigned n)
{
    size_t w[16] = {0};

    for (unsigned r = 0; r < rows; r++)
        for (unsigned c = 0; c < n; c++)
            if (strlen(cells[r * n + c]) > w[c])
                w[c] = strlen(cells[r * n + c]);
    for (unsigned r = 0; r < rows; r++) {
        for (unsigned c = 0; c < n; c++) {
            if (c + 1 < n)
                sb_printf(o, "%-*s  ", (int)w[c], cells[r * n + c]);
            else
                sb_puts(o, cells[r * n + c]);
        }
        sb_puts(o, "\n");
    }
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, f);
    n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    s = veer_malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static const char *const pool_columns[] = {"pool",  "backend", "group", "state", "weight",
                                           "share", "active",  "conns", "gen"};

/* show pools: one row per backend, every pool. */
void ctl_show_pools(struct ctl_req *r)
{
    unsigned rows = 1, n = ARRAY_SIZE(pool_columns), k = 0;
    char **cells;
    struct sbuf o;

    for (uint32_t i = 0; i < ctl.model->npools; i++)
        rows += ctl.model->pools[i].nb;
    cells = veer_calloc(rows * n, sizeof(*cells));
    for (unsigned c = 0; c < n; c++)
        cells[k++] = veer_strdup(pool_columns[c]);
    for (uint32_t i = 0; i < ctl.model->npools; i++) {
        const struct rt_pool *p = &ctl.model->pools[i];

        for (uint32_t j = 0; j < p->nb; j++) {
            const struct rt_backend *b = &p->b[j];

            cells[k++] = veer_strdup(p->name);
            cells[k++] = veer_strdup(b->be->name);
            cells[k++] = veer_strdup(p->g[b->group].name);
            cells[k++] = veer_strdup(backend_state_name(model_state(p, j)));
            cells[k++] = fmt("%d", b->weight);
            cells[k++] = fmt("%d", p->g[b->group].share);
            cells[k++] = fmt("%u", backend_active(b->be));
            cells[k++] = fmt("%u", backend_conns(b->be));
            cells[k++] = fmt("%llu", (unsigned long long)ctl.model->generation);
        }
    }
    sb_init(&o);
    table(&o, cells, rows, n);
    for (unsigned i = 0; i < rows * n; i++)
        free(cells[i]);
    free(cells);
    ctl_finish(r, o.s, true);
    sb_free(&o);
}

static void show_pool_json(const struct rt_pool *p, struct sbuf *o)
{
    double *ew;

    sb_puts(o, "{\"pool\":");
    sb_json_str(o, p->name);
    sb_printf(o, ",\"generation\":%llu,\"balance\":", (unsigned long long)ctl.model->generation);
    sb_json_str(o, p->conf->balance == BALANCE_LEASTCONN ? "leastconn"
                   : p->conf->balance == BALANCE_P2C     ? "p2c"
                                                         : "swrr");
    sb_puts(o, ",\"groups\":[");
    for (uint32_t g = 0; g < p->ng; g++) {
        sb_puts(o, g ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, p->g[g].name);
        sb_printf(o, ",\"share\":%d}", p->g[g].share);
    }
    sb_puts(o, "],\"backends\":[");
    ew = model_effective_weights(p);
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];

        sb_puts(o, i ? ",{\"name\":" : "{\"name\":");
        sb_json_str(o, b->be->name);
        sb_puts(o, ",\"address\":");
        sb_json_str(o, b->be->addr.text);
        sb_puts(o, ",\"group\":");
        sb_json_str(o, p->g[b->group].name);
        sb_printf(o,
                  ",\"state\":\"%s\",\"weight\":%d,\"effective_weight\":%.6g,\"active\":%u,"
                  "\"conns\":%u}",
                  backend_state_name(model_state(p, i)), b->weight, ew[i], backend_active(b->be),
                  backend_conns(b->be));
    }
    free(ew);
    sb_puts(o, "]}");
}

static void show_pool_text(const struct rt_pool *p, struct sbuf *o)
{
    static const char *const cols[] = {"backend",   "address", "group", "state",  "weight",
                                       "effective", "active",  "conns", "circuit"};
    unsigned n = ARRAY_SIZE(cols), rows = p->nb + 1, k = 0;
    char **cells = veer_calloc(rows * n, sizeof(*cells));
    double *ew = model_effective_weights(p);

    sb_printf(o, "pool %s generation %llu balance %s\n", p->name,
              (unsigned long long)ctl.model->generation,
              p->conf->balance == BALANCE_LEASTCONN ? "leastconn"
              : p->conf->balance == BALANCE_P2C     ? "p2c"
                                                    : "swrr");
    for (uint32_t g = 0; g < p->ng; g++)
        sb_printf(o, "group %s share %d\n", p->g[g].name, p->g[g].share);
    for (unsigned c = 0; c < n; c++)
        cells[k++] = veer_strdup(cols[c]);
    for (uint32_t i = 0; i < p->nb; i++) {
        const struct rt_backend *b = &p->b[i];

        cells[k++] = veer_strdup(b->be->name);
        cells[k++] = veer_strdup(b->be->addr.text);
        cells[k++] = veer_strdup(p->g[b->group].name);
        cells[k++] = veer_strdup(backend_state_name(model_state(p, i)));
        cells[k++] = fmt("%d", b->weight);
        cells[k++] = fmt("%.6g", ew[i]);
        cells[k++] = fmt("%u", backend_active(b->be));
        cells[k++] = fmt("%u", backend_conns(b->be));
        cells[k++] = veer_strdup(breaker_state_name(b->breaker));
    }
    table(o, cells, rows, n);
    free(ew);
    for (unsigned i = 0; i < rows * n; i++)
        free(cells[i]);
    free(cells);
}

void ctl_show_pool(struct ctl_req *r)
{
    int pi = model_find_pool(ctl.model, r->cmd.pool);
    struct sbuf o;

    if (pi < 0) {
        {
            char line[128];

            snprintf(line, sizeof(line), "ERR unknown pool %s", r->cmd.pool);
            ctl_finish(r, line, false);
        }
        return;
    }
    sb_init(&o);
    if (r->cmd.json)
        show_pool_json(&ctl.model->pools[pi], &o);
    else
        show_pool_text(&ctl.model->pools[pi], &o);
    ctl_finish(r, o.s, true);
    sb_free(&o);
}

/* show stats: the last second's traffic per backend, what `veerctl top` draws. */
void ctl_show_stats(struct ctl_req *r)
{
    static const char *const cols[] = {"pool", "backend", "group",  "state", "weight",  "rps",
                                       "err%", "p99ms",   "active", "conns", "circuit", "gen"};
    unsigned n = ARRAY_SIZE(cols), rows = 1, k = 0;
    char **cells;
    struct sbuf o;

    sb_init(&o);
    if (r->cmd.json) {
        adminhttp_status_json(&o);
        ctl_finish(r, o.s, true);
        sb_free(&o);
        return;
    }
    for (uint32_t i = 0; i < ctl.model->npools; i++)
        rows += ctl.model->pools[i].nb;
    cells = veer_calloc(rows * n, sizeof(*cells));
    for (unsigned c = 0; c < n; c++)
        cells[k++] = veer_strdup(cols[c]);
    for (uint32_t i = 0; i < ctl.model->npools; i++) {
        const struct rt_pool *p = &ctl.model->pools[i];

        for (uint32_t j = 0; j < p->nb; j++) {
            const struct rt_backend *b = &p->b[j];

            cells[k++] = veer_strdup(p->name);
            cells[k++] = veer_strdup(b->be->name);
            cells[k++] = veer_strdup(p->g[b->group].name);
            cells[k++] = veer_strdup(backend_state_name(model_state(p, j)));
            cells[k++] = fmt("%d", b->weight);
            cells[k++] = fmt("%.0f", b->rate.rps);
            cells[k++] = fmt("%.2f", 100.0 * b->rate.error_rate);
            cells[k++] = fmt("%.2f", b->rate.p99_ms);
            cells[k++] = fmt("%u", backend_active(b->be));
            cells[k++] = fmt("%u", backend_conns(b->be));
            cells[k++] = veer_strdup(breaker_state_name(b->breaker));
            cells[k++] = fmt("%llu", (unsigned long long)ctl.model->generation);
        }
    }
    table(&o, cells, rows, n);
    for (unsigned i = 0; i < rows * n; i++)
        free(cells[i]);
    free(cells);
    ctl_finish(r, o.s, true);
    sb_free(&o);
}

/*
 * audit verify runs on a thread of its own, one at a time (others wait in
 * order): a big log takes as long as reading it, and the control thread
 * must go on answering, checking health and publishing meanwhile. The
 * thread reads at most the file's size at the time of the command (the
 * live log's size as the control thread knew it, with the chain's ends it
 * holds), never a FIFO or a device (audit_verify_ex). It tells the
 * control thread through an eventfd; the reply is written from there.
 */
struct verify_job {
    struct ctl_req *r;
    char path[sizeof(((struct cmd *)0)->file) + 1024];
    struct audit_live live;
    bool has_live;
    atomic_bool cancel;
    int rc;
    char msg[512];
    int efd;
    struct event *ev;
    pthread_t tid;
    struct verify_job *next;
};

static struct {
    struct verify_job *running, *head, *tail;
} vq;

static void verify_start_next(void);

static void *verify_main(void *arg)
{
    struct verify_job *j = arg;
    uint64_t one = 1;

    j->rc =
        audit_verify_ex(j->path, j->has_live ? &j->live : NULL, &j->cancel, j->msg, sizeof(j->msg));
    if (write(j->efd, &one, sizeof(one)) < 0)
        log_warn("audit verify: eventfd write: %s", strerror(errno));
    return NULL;
}

/* The thread is done (or cancelled): answer and free the job. */
static void verify_end(struct verify_job *j, const char *override)
{
    char line[600];

    pthread_join(j->tid, NULL);
    event_free(j->ev);
    close(j->efd);
    if (override)
        snprintf(line, sizeof(line), "%s", override);
    else
        snprintf(line, sizeof(line), "%s %s", j->rc == 0 ? "OK" : "ERR", j->msg);
    ctl_finish(j->r, line, j->rc == 0 && !override);
    free(j);
}

static void verify_done_cb(evutil_socket_t fd, short what, void *arg)
{
    vq.running = NULL;
    verify_end(arg, NULL);
    verify_start_next();
}

static void verify_start_next(void)
{
    while (vq.running == NULL && vq.head) {
        struct verify_job *j = vq.head;

        vq.head = j->next;
        if (vq.head == NULL)
            vq.tail = NULL;
        j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (j->efd < 0 || pthread_create(&j->tid, NULL, verify_main, j) != 0) {
            log_err("audit verify: cannot start its thread: %s", strerror(errno));
            if (j->efd >= 0)
                close(j->efd);
            ctl_finish(j->r, "ERR audit verify: cannot start its thread", false);
            free(j);
            continue;
        }
        j->ev = event_new(ctl.base, j->efd, EV_READ, verify_done_cb, j);
        event_add(j->ev, NULL);
        vq.running = j;
    }
}

void ctl_audit_verify(struct ctl_req *r)
{
    const char *path = r->cmd.file[0] ? r->cmd.file : ctl.conf->audit_log;
    struct verify_job *j;

    if (path == NULL) {
        ctl_finish(r, "ERR no audit log configured (audit_log) and no FILE given", false);
        return;
    }
    j = veer_calloc(1, sizeof(*j));
    j->r = r;
    snprintf(j->path, sizeof(j->path), "%s", path);
    j->has_live = audit_live(&j->live);
    atomic_init(&j->cancel, false);
    j->efd = -1;
    if (vq.tail)
        vq.tail->next = j;
    else
        vq.head = j;
    vq.tail = j;
    verify_start_next();
}

/* Shutdown: stop a running verify (it checks between reads) and drop the waiting ones. */
void ctl_audit_verify_shutdown(void)
{
    if (vq.running) {
        atomic_store(&vq.running->cancel, true);
        vq.running->r->done = NULL;
        verify_end(vq.running, "ERR shutting down");
        vq.running = NULL;
    }
    while (vq.head) {
        struct verify_job *j = vq.head;

        vq.head = j->next;
        j->r->done = NULL;
        ctl_finish(j->r, "ERR shutting down", false);
        free(j);
    }
    vq.tail = NULL;
}
