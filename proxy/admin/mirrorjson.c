/*
 * mirrorjson.c - the shadow traffic report of a pool (mirrorjson.h).
 */
#include "mirrorjson.h"
#include "mirrorstat.h"
#include "model.h"
#include "sbuf.h"
#include "veer.h"

#include <stdlib.h>
#include <string.h>

static const char *const class_names[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

/* A site of the pool and its figures summed over the workers (once per report). */
struct counted {
    struct mirror_site *site;
    struct mirror_totals t;
};

/* Whether anything was counted (totals t) or kept in site s. */
static bool site_counted(struct mirror_site *s, const struct mirror_totals *t)
{
    unsigned kept;

    pthread_mutex_lock(&s->lock);
    kept = s->ring_n;
    pthread_mutex_unlock(&s->lock);
    if (kept)
        return true;
    for (unsigned c = 0; c < 5; c++)
        for (unsigned r = 0; r < MR_RESULTS; r++)
            if (t->n[c][r])
                return true;
    return false;
}

/*
 * The sites of pool `name` that counted something (a route none of whose
 * requests was mirrored has no row), each with its totals, sorted by route
 * ("" first); the caller frees the array.
 */
static struct counted *pool_sites(const char *name, unsigned *n)
{
    struct counted *v = NULL;
    unsigned k = 0, cap = 0;

    for (struct mirror_site *s = mirror_sites_first(); s; s = s->next) {
        if (strcmp(s->pool, name) != 0)
            continue;
        if (k == cap) {
            cap = cap ? 2 * cap : 8;
            v = veer_realloc(v, cap * sizeof(*v));
        }
        v[k].site = s;
        mirror_site_sum(s, &v[k].t);
        if (site_counted(s, &v[k].t))
            k++;
    }
    for (unsigned i = 1; i < k; i++) /* few: insertion sort */
        for (unsigned j = i; j > 0 && strcmp(v[j - 1].site->route, v[j].site->route) > 0; j--) {
            struct counted t = v[j];

            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *n = k;
    return v;
}

bool mirrorjson_has(const struct model *m, unsigned pi)
{
    const char *group;
    double percent;
    unsigned n;
    struct counted *v;

    if (model_mirror(&m->pools[pi], &group, &percent))
        return true;
    v = pool_sites(m->pools[pi].name, &n);
    free(v);
    return n > 0;
}

struct figures {
    uint64_t n[MR_RESULTS];
    uint64_t delta[MIRROR_DELTA_BOUNDS + 1];
};

static uint64_t mirrored(const struct figures *f)
{
    uint64_t t = 0;

    for (unsigned r = 0; r < MR_DROPPED; r++)
        t += f->n[r];
    return t;
}

/* The q-quantile of a delta histogram in ms, or `none` when it holds nothing. */
static void delta_ms(struct sbuf *o, const uint64_t *delta, double q, const char *none)
{
    double v;

    if (mirror_delta_quantile(delta, q, &v))
        sb_printf(o, "%.3f", v * 1000.0);
    else
        sb_puts(o, none);
}

static void figures_json(struct sbuf *o, const struct figures *f)
{
    sb_printf(o, "\"mirrored\":%llu", (unsigned long long)mirrored(f));
    for (unsigned r = 0; r < MR_RESULTS; r++)
        sb_printf(o, ",\"%s\":%llu", mirror_result_name((enum mirror_result)r),
                  (unsigned long long)f->n[r]);
    sb_puts(o, ",\"delta_p50_ms\":");
    delta_ms(o, f->delta, 0.5, "null");
    sb_puts(o, ",\"delta_p99_ms\":");
    delta_ms(o, f->delta, 0.99, "null");
}

/* The figures of class c (0..4), or of every class (c == 5), of totals t. */
static void figures_of(const struct mirror_totals *t, unsigned c, struct figures *f)
{
    memset(f, 0, sizeof(*f));
    for (unsigned k = 0; k < 5; k++) {
        if (c < 5 && k != c)
            continue;
        for (unsigned r = 0; r < MR_RESULTS; r++)
            f->n[r] += t->n[k][r];
        for (unsigned b = 0; b <= MIRROR_DELTA_BOUNDS; b++)
            f->delta[b] += t->delta[k][b];
    }
}

static void hex(struct sbuf *o, const uint8_t *d)
{
    for (int i = 0; i < 32; i++)
        sb_printf(o, "%02x", d[i]);
}

struct noted {
    struct mirror_mismatch mm;
    const char *route;
};

static int by_time(const void *a, const void *b)
{
    const struct noted *x = a, *y = b;

    return x->mm.at_us < y->mm.at_us ? -1 : x->mm.at_us > y->mm.at_us;
}

/* The last MIRROR_MISMATCHES over the sites, oldest first; the caller frees *out. */
static unsigned last_mismatches(const struct counted *v, unsigned n, struct noted **out)
{
    struct noted *all = veer_calloc((size_t)n * MIRROR_MISMATCHES + 1, sizeof(*all));
    struct mirror_mismatch ring[MIRROR_MISMATCHES];
    unsigned k = 0, first;

    for (unsigned i = 0; i < n; i++) {
        unsigned got = mirror_site_mismatches(v[i].site, ring);

        for (unsigned j = 0; j < got; j++) {
            all[k].mm = ring[j];
            all[k++].route = v[i].site->route;
        }
    }
    qsort(all, k, sizeof(*all), by_time);
    first = k > MIRROR_MISMATCHES ? k - MIRROR_MISMATCHES : 0;
    memmove(all, all + first, (k - first) * sizeof(*all));
    *out = all;
    return k - first;
}

/* Pool p's report over its counted sites v[0..n). */
static void report(struct sbuf *o, const struct rt_pool *p, const struct counted *v, unsigned n)
{
    const char *group = NULL;
    double percent = 0;
    bool on = model_mirror(p, &group, &percent);
    unsigned nm;
    struct noted *mm;

    sb_puts(o, "{\"pool\":");
    sb_json_str(o, p->name);
    sb_printf(o, ",\"on\":%s,\"group\":", on ? "true" : "false");
    if (on)
        sb_json_str(o, group);
    else
        sb_puts(o, "null");
    if (on)
        sb_printf(o, ",\"percent\":%g", percent);
    else
        sb_puts(o, ",\"percent\":null");
    sb_puts(o, ",\"routes\":[");
    for (unsigned i = 0; i < n; i++) {
        struct figures f;
        bool first = true;

        sb_puts(o, i ? ",{\"route\":" : "{\"route\":");
        sb_json_str(o, v[i].site->route);
        figures_of(&v[i].t, 5, &f);
        sb_puts(o, ",\"totals\":{");
        figures_json(o, &f);
        sb_puts(o, "},\"classes\":[");
        for (unsigned c = 0; c < 5; c++) {
            figures_of(&v[i].t, c, &f);
            if (mirrored(&f) + f.n[MR_DROPPED] == 0)
                continue;
            sb_printf(o, "%s{\"class\":\"%s\",", first ? "" : ",", class_names[c]);
            figures_json(o, &f);
            sb_puts(o, "}");
            first = false;
        }
        sb_puts(o, "]}");
    }
    sb_puts(o, "],\"mismatches\":[");
    nm = last_mismatches(v, n, &mm);
    for (unsigned i = 0; i < nm; i++) {
        const struct mirror_mismatch *x = &mm[i].mm;

        sb_puts(o, i ? ",{\"request_id\":" : "{\"request_id\":");
        sb_json_latin1(o, x->request_id);
        sb_puts(o, ",\"route\":");
        sb_json_str(o, mm[i].route);
        sb_puts(o, ",\"method\":");
        sb_json_latin1(o, x->method);
        sb_puts(o, ",\"path\":");
        sb_json_latin1(o, x->path);
        sb_printf(o,
                  ",\"result\":\"%s\",\"primary_status\":%d,\"shadow_status\":%d,"
                  "\"primary_sha256\":\"",
                  mirror_result_name(x->result), x->primary_status, x->shadow_status);
        hex(o, x->primary_sha);
        sb_puts(o, "\",\"shadow_sha256\":\"");
        hex(o, x->shadow_sha);
        sb_printf(o, "\",\"primary_bytes\":%llu,\"shadow_bytes\":%llu,\"header\":",
                  (unsigned long long)x->primary_bytes, (unsigned long long)x->shadow_bytes);
        if (x->header[0])
            sb_json_latin1(o, x->header);
        else
            sb_puts(o, "null");
        sb_puts(o, "}");
    }
    sb_puts(o, "]}");
    free(mm);
}

void mirrorjson_report(struct sbuf *o, const struct model *m, unsigned pi)
{
    unsigned n;
    struct counted *v = pool_sites(m->pools[pi].name, &n);

    report(o, &m->pools[pi], v, n);
    free(v);
}

void mirrorjson_list(struct sbuf *o, const struct model *m)
{
    bool first = true;

    sb_puts(o, "[");
    for (unsigned i = 0; i < m->npools; i++) {
        const char *group;
        double percent;
        unsigned n;
        struct counted *v;

        if (m->pools[i].removed)
            continue;
        v = pool_sites(m->pools[i].name, &n); /* each site summed once */
        if (n > 0 || model_mirror(&m->pools[i], &group, &percent)) {
            sb_puts(o, first ? "" : ",");
            report(o, &m->pools[i], v, n);
            first = false;
        }
        free(v);
    }
    sb_puts(o, "]");
}

static void row_text(struct sbuf *o, const char *route, const char *cls, const struct figures *f)
{
    sb_printf(o, "%-16s %-5s %9llu %8llu %8llu %11llu %9llu %8llu %6llu ", route[0] ? route : "-",
              cls, (unsigned long long)mirrored(f), (unsigned long long)f->n[MR_DROPPED],
              (unsigned long long)f->n[MR_MATCH], (unsigned long long)f->n[MR_STATUS_DIFF],
              (unsigned long long)f->n[MR_BODY_DIFF], (unsigned long long)f->n[MR_TIMEOUT],
              (unsigned long long)f->n[MR_ERROR]);
    delta_ms(o, f->delta, 0.5, "-");
    sb_puts(o, " ");
    delta_ms(o, f->delta, 0.99, "-");
    sb_puts(o, "\n");
}

void mirrorjson_text(struct sbuf *o, const struct model *m, unsigned pi)
{
    const struct rt_pool *p = &m->pools[pi];
    const char *group = NULL;
    double percent = 0;
    unsigned n, nm;
    struct counted *v = pool_sites(p->name, &n);
    struct noted *mm;

    if (model_mirror(p, &group, &percent))
        sb_printf(o, "pool %s: mirror on, %g%% to group %s\n", p->name, percent, group);
    else
        sb_printf(o, "pool %s: mirror off\n", p->name);
    sb_puts(o, "route            class  mirrored  dropped    match status_diff body_diff  timeout "
               " error delta_p50_ms delta_p99_ms\n");
    for (unsigned i = 0; i < n; i++) {
        struct figures f;

        for (unsigned c = 0; c < 5; c++) {
            figures_of(&v[i].t, c, &f);
            if (mirrored(&f) + f.n[MR_DROPPED])
                row_text(o, v[i].site->route, class_names[c], &f);
        }
        figures_of(&v[i].t, 5, &f);
        row_text(o, v[i].site->route, "all", &f);
    }
    nm = last_mismatches(v, n, &mm);
    if (nm)
        sb_printf(o, "last %u mismatches (oldest first):\n", nm);
    for (unsigned i = 0; i < nm; i++) {
        const struct mirror_mismatch *x = &mm[i].mm;

        sb_printf(o, "%s %s %s %s primary %d %llu bytes ", x->request_id, x->method, x->path,
                  mirror_result_name(x->result), x->primary_status,
                  (unsigned long long)x->primary_bytes);
        hex(o, x->primary_sha);
        sb_printf(o, " shadow %d %llu bytes ", x->shadow_status,
                  (unsigned long long)x->shadow_bytes);
        hex(o, x->shadow_sha);
        if (x->header[0])
            sb_printf(o, " header %s", x->header);
        sb_puts(o, "\n");
    }
    free(mm);
    free(v);
}
