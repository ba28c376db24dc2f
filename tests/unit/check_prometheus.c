/*
 * check_prometheus.c - latency histograms and the Prometheus text rendering of a small model.
 */
#include "prometheus.h"
#include "mirrorstat.h"
#include "model.h"
#include "sbuf.h"
#include "stats.h"
#include "veer.h"
#include "worker.h"

#include <check.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The bounds of lat_bounds in microseconds, and as the renderer writes them in `le`. */
static const uint64_t bound_us[LAT_BUCKETS] = {500,     1000,    2500,    5000,    10000,
                                               25000,   50000,   100000,  250000,  500000,
                                               1000000, 2500000, 5000000, 10000000};
static const char *const le_text[LAT_BUCKETS] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                                 "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                                 "1",      "2.5",   "5",      "10"};

#define SHIFT_LE 8
static const char *const shift_le_text[SHIFT_LE] = {"1e-05", "5e-05", "0.0001", "0.0005",
                                                    "0.001", "0.005", "0.01",   "0.05"};

static uint64_t ld(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static struct veer_conf *load(const char *text)
{
    char path[] = "/tmp/check_metrics_XXXXXX";
    char err[512];
    int fd = mkstemp(path);
    struct veer_conf *c;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(c != NULL, "config: %s", err);
    return c;
}

/*
 * Pool "api": b1 and b2 in group blue (weights 100 and 300), g1 in green (weight 7), shares
 * 80/20. Pool "hc": one backend in group "default" with readiness checks (so PENDING).
 */
#define LISTEN "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"
#define POOLS                                                                                      \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"b1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"               \
    "{ name = \"b2\"; address = \"127.0.0.1:2\"; weight = 300; group = \"blue\"; },"               \
    "{ name = \"g1\"; address = \"127.0.0.1:3\"; weight = 7; group = \"green\"; } );"              \
    "shares = { blue = 80; green = 20; }; },"                                                      \
    "{ name = \"hc\"; health = { path = \"/ready\"; }; backends = ("                               \
    "{ name = \"a\"; address = \"127.0.0.1:4\"; } ); } );\n"

#define NW 2

/* A model from a config and NW fake workers carrying only what metrics read. */
struct fx {
    struct veer_conf *c;
    struct model *m;
    struct worker *w[NW];
};

static void fx_init(struct fx *f, const char *conf)
{
    veer_nworkers = NW; /* per-backend figures get one slot per worker */
    f->c = load(conf);
    f->m = model_from_conf(f->c);
    for (unsigned i = 0; i < NW; i++) {
        f->w[i] = calloc(1, sizeof(*f->w[i]));
        f->w[i]->idx = i;
        f->w[i]->local = calloc(METRIC_POOLS, sizeof(*f->w[i]->local));
    }
}

static void fx_free(struct fx *f)
{
    for (unsigned i = 0; i < NW; i++) {
        free(f->w[i]->local);
        metrics_cells_free(&f->w[i]->local_routed);
        free(f->w[i]);
    }
    model_free(f->m);
    conf_free(f->c);
    routing_shutdown();
}

/* Backend i of pool p's figures of worker w. */
static struct backend_wstat *bws(struct fx *f, uint32_t p, uint32_t i, unsigned w)
{
    return &f->m->pools[p].b[i].be->ws[w];
}

static char *render(struct fx *f)
{
    struct sbuf o;

    sb_init(&o);
    metrics_render(&o, f->m, f->w, NW);
    return sb_steal(&o);
}

/* --- a reader of the text format ---------------------------------------- */

#define MAX_LABELS 8

struct sample {
    char name[128];
    int nl;
    char key[MAX_LABELS][64];
    char val[MAX_LABELS][256];
    double v;
};

static bool name_char(char c, bool first)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':' ||
           (!first && isdigit((unsigned char)c));
}

/* Parse one sample line (no newline): name, optional labels with escapes unescaped, value. */
static void parse_sample(const char *line, struct sample *s)
{
    const char *p = line;
    size_t n = 0;
    char *end;

    memset(s, 0, sizeof(*s));
    while (name_char(*p, n == 0) && n < sizeof(s->name) - 1)
        s->name[n++] = *p++;
    ck_assert_msg(n > 0, "no metric name: %s", line);
    if (*p == '{') {
        p++;
        while (*p != '}') {
            size_t k = 0, v = 0;

            ck_assert_msg(s->nl < MAX_LABELS, "too many labels: %s", line);
            while (name_char(*p, k == 0) && *p != ':' && k < sizeof(s->key[0]) - 1)
                s->key[s->nl][k++] = *p++;
            ck_assert_msg(k > 0 && p[0] == '=' && p[1] == '"', "bad label: %s", line);
            p += 2;
            while (*p != '"') {
                ck_assert_msg(*p != '\0' && *p != '\n', "unterminated label value: %s", line);
                if (*p == '\\') {
                    p++;
                    ck_assert_msg(*p == '\\' || *p == '"' || *p == 'n', "bad escape: %s", line);
                    s->val[s->nl][v++] = *p == 'n' ? '\n' : *p;
                } else {
                    s->val[s->nl][v++] = *p;
                }
                p++;
                ck_assert(v < sizeof(s->val[0]) - 1);
            }
            p++;
            for (int j = 0; j < s->nl; j++)
                ck_assert_msg(strcmp(s->key[j], s->key[s->nl]) != 0, "label twice: %s", line);
            s->nl++;
            ck_assert_msg(*p == ',' || *p == '}', "bad label list: %s", line);
            if (*p == ',')
                p++;
        }
        p++;
    }
    ck_assert_msg(*p == ' ', "no space before the value: %s", line);
    p++;
    if (strcmp(p, "+Inf") == 0) {
        s->v = INFINITY;
        return;
    }
    s->v = strtod(p, &end);
    ck_assert_msg(end != p && *end == '\0', "bad value (or a timestamp): %s", line);
}

static const char *label_of(const struct sample *s, const char *key)
{
    for (int i = 0; i < s->nl; i++)
        if (strcmp(s->key[i], key) == 0)
            return s->val[i];
    return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);

    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* One histogram series (a family and its labels other than le) as read so far. */
struct hseries {
    char family[128];
    char base[1024];
    double last_le, last_cum, inf, count;
    bool has_inf, has_sum, has_count;
};

/* The labels of s other than le, as one string (escapes undone, so only for comparison). */
static void base_labels(const struct sample *s, char *out, size_t size)
{
    size_t n = 0;

    out[0] = '\0';
    for (int i = 0; i < s->nl; i++)
        if (strcmp(s->key[i], "le") != 0)
            n += (size_t)snprintf(out + n, size - n, "%s=\"%s\",", s->key[i], s->val[i]);
    ck_assert(n < size);
}

/*
 * Check a whole exposition against the text format 0.0.4: each family has one # HELP and one
 * # TYPE, then its samples together; counters end in _total; no series twice; each histogram
 * series has increasing le bounds with non-decreasing counts, ending with le="+Inf" equal to its
 * _count, and a _sum. Returns the number of samples.
 */
static unsigned check_text_format(const char *text)
{
    static char families[64][128];
    static char seen[1024][1200];
    static struct hseries hs[256];
    unsigned nfam = 0, nseen = 0, nhs = 0, nsamples = 0;
    char family[128] = "", type[16] = "";
    const char *p = text;

    ck_assert_msg(*text != '\0' && text[strlen(text) - 1] == '\n', "must end with a newline");
    while (*p) {
        const char *nl = strchr(p, '\n');
        char line[2048];
        struct sample s;
        char key[1200], base[1024];
        char fam[128];

        ck_assert((size_t)(nl - p) < sizeof(line));
        memcpy(line, p, (size_t)(nl - p));
        line[nl - p] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            char tline[256];
            const char *help = strchr(line + 7, ' ');
            const char *tnl = strchr(p, '\n');

            ck_assert_msg(help != NULL && help[1] != '\0', "HELP without text: %s", line);
            ck_assert_msg(strchr(help, '\\') == NULL, "backslash in HELP: %s", line);
            ck_assert((size_t)(help - line - 7) < sizeof(family));
            memcpy(family, line + 7, (size_t)(help - line - 7));
            family[help - line - 7] = '\0';
            for (unsigned i = 0; i < nfam; i++)
                ck_assert_msg(strcmp(families[i], family) != 0, "family %s twice", family);
            ck_assert(nfam < 64);
            strcpy(families[nfam++], family);
            /* The TYPE line follows at once. */
            ck_assert_msg(tnl != NULL && (size_t)(tnl - p) < sizeof(tline), "no TYPE for %s",
                          family);
            memcpy(tline, p, (size_t)(tnl - p));
            tline[tnl - p] = '\0';
            p = tnl + 1;
            ck_assert_msg(strncmp(tline, "# TYPE ", 7) == 0 &&
                              strncmp(tline + 7, family, strlen(family)) == 0 &&
                              tline[7 + strlen(family)] == ' ',
                          "TYPE line for %s: %s", family, tline);
            snprintf(type, sizeof(type), "%s", tline + 8 + strlen(family));
            ck_assert_msg(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                              strcmp(type, "histogram") == 0,
                          "type of %s: %s", family, type);
            if (strcmp(type, "counter") == 0)
                ck_assert_msg(ends_with(family, "_total"), "counter %s", family);
            continue;
        }
        ck_assert_msg(line[0] != '#', "stray comment: %s", line);
        ck_assert_msg(family[0] != '\0', "sample before any HELP: %s", line);
        parse_sample(line, &s);
        nsamples++;
        /* Its family: the current one (samples of a family come together, after its TYPE). */
        snprintf(fam, sizeof(fam), "%s", s.name);
        if (strcmp(type, "histogram") == 0) {
            ck_assert_msg(ends_with(fam, "_bucket") || ends_with(fam, "_sum") ||
                              ends_with(fam, "_count"),
                          "histogram sample %s", line);
            *strrchr(fam, '_') = '\0';
        }
        ck_assert_msg(strcmp(fam, family) == 0, "sample outside its family %s: %s", family, line);
        /* A histogram of negative observations has a negative sum (the shadow was faster). */
        ck_assert_msg(s.v >= 0 || strcmp(s.name, "veer_mirror_latency_delta_seconds_sum") == 0,
                      "negative value: %s", line);
        ck_assert_msg((label_of(&s, "le") != NULL) == ends_with(s.name, "_bucket"),
                      "le on a non-bucket or missing: %s", line);
        /* No series twice. */
        base_labels(&s, base, sizeof(base));
        snprintf(key, sizeof(key), "%s{%s%s}", s.name, base,
                 label_of(&s, "le") ? label_of(&s, "le") : "");
        for (unsigned i = 0; i < nseen; i++)
            ck_assert_msg(strcmp(seen[i], key) != 0, "series twice: %s", line);
        ck_assert(nseen < 1024);
        strcpy(seen[nseen++], key);
        if (strcmp(type, "histogram") == 0) {
            struct hseries *h = NULL;

            for (unsigned i = 0; i < nhs && !h; i++)
                if (strcmp(hs[i].family, family) == 0 && strcmp(hs[i].base, base) == 0)
                    h = &hs[i];
            if (!h) {
                ck_assert(nhs < 256);
                h = &hs[nhs++];
                memset(h, 0, sizeof(*h));
                strcpy(h->family, family);
                strcpy(h->base, base);
                h->last_le = -INFINITY;
            }
            if (ends_with(s.name, "_bucket")) {
                const char *lt = label_of(&s, "le");
                char *end;
                double bound = strcmp(lt, "+Inf") == 0 ? INFINITY : strtod(lt, &end);

                ck_assert_msg(isinf(bound) || (end != lt && *end == '\0'), "le: %s", line);
                ck_assert_msg(!h->has_inf && !h->has_count && !h->has_sum,
                              "bucket after +Inf, _sum or _count: %s", line);
                ck_assert_msg(bound > h->last_le, "le not increasing: %s", line);
                ck_assert_msg(s.v >= h->last_cum, "buckets not cumulative: %s", line);
                ck_assert_msg(s.v == floor(s.v), "fractional bucket count: %s", line);
                h->last_le = bound;
                h->last_cum = s.v;
                if (isinf(bound)) {
                    h->has_inf = true;
                    h->inf = s.v;
                }
            } else if (ends_with(s.name, "_sum")) {
                ck_assert_msg(!h->has_sum, "_sum twice: %s", line);
                h->has_sum = true;
            } else {
                ck_assert_msg(!h->has_count, "_count twice: %s", line);
                h->has_count = true;
                h->count = s.v;
            }
        }
    }
    for (unsigned i = 0; i < nhs; i++) {
        ck_assert_msg(hs[i].has_inf && hs[i].has_sum && hs[i].has_count,
                      "%s{%s}: +Inf bucket, _sum or _count missing", hs[i].family, hs[i].base);
        ck_assert_msg(hs[i].inf == hs[i].count, "%s{%s}: +Inf bucket %.0f but _count %.0f",
                      hs[i].family, hs[i].base, hs[i].inf, hs[i].count);
    }
    return nsamples;
}

/* Lines of text that start with prefix. */
static unsigned lines_starting(const char *text, const char *prefix)
{
    unsigned n = 0;
    size_t len = strlen(prefix);

    for (const char *p = text; *p; p = strchr(p, '\n') + 1)
        n += strncmp(p, prefix, len) == 0;
    return n;
}

/* Whether the series written exactly as `series` (name{labels}) is in text. */
static bool has_series(const char *text, const char *series)
{
    char prefix[1200];

    snprintf(prefix, sizeof(prefix), "%s ", series);
    return lines_starting(text, prefix) > 0;
}

/* The value of the series written exactly as `series`; it must appear exactly once. */
static double value_of(const char *text, const char *series)
{
    char prefix[1200];
    size_t len;

    len = (size_t)snprintf(prefix, sizeof(prefix), "%s ", series);
    ck_assert_msg(lines_starting(text, prefix) == 1, "%s: %u lines, want 1", series,
                  lines_starting(text, prefix));
    for (const char *p = text; *p; p = strchr(p, '\n') + 1)
        if (strncmp(p, prefix, len) == 0) {
            char *end;
            double v = strtod(p + len, &end);

            ck_assert_msg(*end == '\n', "value of %s", series);
            return v;
        }
    return -1;
}

static double valuef(const char *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static double valuef(const char *text, const char *fmt, ...)
{
    char series[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(series, sizeof(series), fmt, ap);
    va_end(ap);
    return value_of(text, series);
}

/*
 * A latency histogram as rendered: cumulative counts at each le of lat_bounds then +Inf
 * (LAT_BUCKETS + 1 values), the count and the sum in seconds.
 */
static void expect_hist(const char *text, const char *name, const char *labels, const uint64_t *cum,
                        uint64_t count, double sum)
{
    for (unsigned i = 0; i < LAT_BUCKETS; i++)
        ck_assert_msg(
            valuef(text, "%s_bucket{%s,le=\"%s\"}", name, labels, le_text[i]) == (double)cum[i],
            "%s{%s} le=%s: want %llu", name, labels, le_text[i], (unsigned long long)cum[i]);
    ck_assert_double_eq(valuef(text, "%s_bucket{%s,le=\"+Inf\"}", name, labels),
                        (double)cum[LAT_BUCKETS]);
    ck_assert_double_eq(valuef(text, "%s_count{%s}", name, labels), (double)count);
    ck_assert_double_eq_tol(valuef(text, "%s_sum{%s}", name, labels), sum, 1e-9);
}

/* --- hist_observe --------------------------------------------------------- */

START_TEST(test_bounds_are_the_documented_ones)
{
    static const double want[LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5,     10};

    for (unsigned i = 0; i < LAT_BUCKETS; i++) {
        ck_assert_double_eq(lat_bounds[i], want[i]);
        ck_assert_double_eq(lat_bounds[i], (double)bound_us[i] / 1e6);
        if (i > 0)
            ck_assert(lat_bounds[i] > lat_bounds[i - 1]);
    }
}
END_TEST

START_TEST(test_value_on_a_bound_lands_in_that_bucket)
{
    for (unsigned i = 0; i < LAT_BUCKETS; i++) {
        /* Just under, exactly on (le is <=), then just over the bound. */
        uint64_t v[3] = {bound_us[i] - 1, bound_us[i], bound_us[i] + 1};
        unsigned want[3] = {i, i, i + 1}; /* i + 1 == LAT_BUCKETS: the +Inf bucket */

        for (unsigned k = 0; k < 3; k++) {
            struct hist h;

            memset(&h, 0, sizeof(h));
            hist_observe(&h, v[k]);
            for (unsigned b = 0; b <= LAT_BUCKETS; b++)
                ck_assert_msg(ld(&h.bucket[b]) == (b == want[k]), "%llu us: bucket %u holds %llu",
                              (unsigned long long)v[k], b, (unsigned long long)ld(&h.bucket[b]));
            ck_assert_uint_eq(ld(&h.count), 1);
            ck_assert_uint_eq(ld(&h.sum_us), v[k]);
        }
    }
}
END_TEST

START_TEST(test_observations_accumulate_count_and_sum)
{
    static const uint64_t v[] = {0, 1, 499, 750, 10000000, 10000001, 3600000000ULL};
    uint64_t sum = 0;
    struct hist h;

    memset(&h, 0, sizeof(h));
    for (unsigned i = 0; i < ARRAY_SIZE(v); i++) {
        hist_observe(&h, v[i]);
        sum += v[i];
        ck_assert_uint_eq(ld(&h.count), i + 1);
        ck_assert_uint_eq(ld(&h.sum_us), sum);
    }
    ck_assert_uint_eq(ld(&h.bucket[0]), 3);               /* 0, 1 and 499 us */
    ck_assert_uint_eq(ld(&h.bucket[1]), 1);               /* 750 us */
    ck_assert_uint_eq(ld(&h.bucket[LAT_BUCKETS - 1]), 1); /* exactly 10 s */
    ck_assert_uint_eq(ld(&h.bucket[LAT_BUCKETS]), 2);     /* beyond: +Inf */
    for (unsigned b = 2; b < LAT_BUCKETS - 1; b++)
        ck_assert_uint_eq(ld(&h.bucket[b]), 0);
}
END_TEST

START_TEST(test_p99_reads_the_bound_of_the_observed_bucket)
{
    struct hist h;
    uint64_t b[LAT_BUCKETS + 1];

    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 99; i++)
        hist_observe(&h, 2500); /* on the 2.5 ms bound */
    hist_observe(&h, 2000000);
    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        b[i] = ld(&h.bucket[i]);
    ck_assert_double_eq_tol(stats_p99_ms(b), 2.5, 1e-9);
    hist_observe(&h, 2000000); /* 2 of 101 above 2.5 ms: p99 is now the 2.5 s bucket */
    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        b[i] = ld(&h.bucket[i]);
    ck_assert_double_eq_tol(stats_p99_ms(b), 2500, 1e-9);
}
END_TEST

/* --- rendering in slices ------------------------------------------------- */

/* A config with one pool of n backends (two groups), for renders that take a while. */
static char *big_conf(unsigned n)
{
    struct sbuf b;

    sb_init(&b);
    sb_puts(&b, LISTEN "pools = ( { name = \"api\"; backends = (");
    for (unsigned i = 0; i < n; i++)
        sb_printf(&b, "%s{ name = \"b%u\"; address = \"127.0.0.1:%u\"; group = \"%s\"; }",
                  i ? "," : "", i, 1000 + i, i % 2 ? "green" : "blue");
    sb_puts(&b, "); } );\n");
    return sb_steal(&b);
}

/* Render with a tiny budget: many slices, and exactly the text one render gives. */
START_TEST(test_a_render_in_slices_is_the_render_in_one)
{
    struct metrics_cursor c = {0};
    struct sbuf o;
    struct fx f;
    char *conf = big_conf(300), *whole;
    unsigned steps = 1;

    fx_init(&f, conf);
    counter_add(&bws(&f, 0, 17, 1)->fb.requests[4], 3);
    hist_observe(&bws(&f, 0, 299, 0)->fb.latency, 700);
    whole = render(&f);
    sb_init(&o);
    while (!metrics_render_step(&c, &o, f.m, f.w, NW, 1))
        steps++;
    ck_assert_uint_gt(steps, 10);
    ck_assert_uint_eq(o.len, strlen(whole));
    ck_assert(memcmp(o.s, whole, o.len) == 0);
    sb_free(&o);
    free(whole);
    free(conf);
    fx_free(&f);
}
END_TEST

/* A slice stops once its budget is spent (checked every 16 rows), not at the model's end. */
START_TEST(test_a_slice_stops_after_its_budget)
{
    struct metrics_cursor c = {0};
    struct sbuf o;
    struct fx f;
    char *conf = big_conf(300), *whole;

    fx_init(&f, conf);
    whole = render(&f);
    sb_init(&o);
    ck_assert(!metrics_render_step(&c, &o, f.m, f.w, NW, 1));
    ck_assert_uint_lt(o.len, strlen(whole) / 20);
    ck_assert(memcmp(o.s, whole, o.len) == 0);
    sb_free(&o);
    free(whole);
    free(conf);
    fx_free(&f);
}
END_TEST

/* Backends that come or go between slices restart the render: no series twice or missed. */
START_TEST(test_a_render_restarts_when_backends_change_between_slices)
{
    struct metrics_cursor c = {0};
    struct conf_addr addr;
    struct sbuf o;
    struct fx f;
    char *conf = big_conf(300), *whole, err[64];
    struct backend *gone;

    fx_init(&f, conf);
    sb_init(&o);
    ck_assert(!metrics_render_step(&c, &o, f.m, f.w, NW, 1));
    ck_assert(!metrics_render_step(&c, &o, f.m, f.w, NW, 1));
    gone = model_del_backend(f.m, 0, 1); /* every later index moves down by one */
    ck_assert_int_eq(conf_parse_addr("127.0.0.1:9", false, &addr, err, sizeof(err)), 0);
    model_add_backend(f.m, 0, "late", &addr, 5, "green");
    while (!metrics_render_step(&c, &o, f.m, f.w, NW, 1))
        ;
    whole = render(&f);
    ck_assert_uint_eq(o.len, strlen(whole));
    ck_assert(memcmp(o.s, whole, o.len) == 0);
    ck_assert_ptr_null(strstr(o.s, "backend=\"b1\""));
    ck_assert_ptr_nonnull(strstr(o.s, "backend=\"late\""));
    backend_destroy(gone);
    sb_free(&o);
    free(whole);
    free(conf);
    fx_free(&f);
}
END_TEST

/* --- metrics_render ------------------------------------------------------- */

START_TEST(test_render_follows_the_text_format_with_every_contract_family)
{
    static const struct {
        const char *name, *type;
    } want[] = {
        {"veer_info", "gauge"},
        {"veer_requests_total", "counter"},
        {"veer_request_duration_seconds", "histogram"},
        {"veer_backend_weight", "gauge"},
        {"veer_backend_effective_weight", "gauge"},
        {"veer_circuit_state", "gauge"},
        {"veer_backend_active_requests", "gauge"},
        {"veer_backend_state", "gauge"},
        {"veer_upstream_errors_total", "counter"},
        {"veer_group_share", "gauge"},
        {"veer_maintenance", "gauge"},
        {"veer_pool_eligible_backends", "gauge"},
        {"veer_drains_in_progress", "gauge"},
        {"veer_generation", "gauge"},
        {"veer_shift_applied_seconds", "histogram"},
        {"veer_shifts_refused_total", "counter"},
        {"veer_health_check_seconds", "histogram"},
        {"veer_retries_total", "counter"},
        {"veer_open_connections", "gauge"},
    };
    struct fx f;
    char *text;
    char info[64];

    fx_init(&f, LISTEN POOLS);
    /* Some traffic on every kind of figure, in both workers. */
    hist_observe(&bws(&f, 0, 0, 0)->fb.latency, 700);
    hist_observe(&bws(&f, 0, 2, 1)->fb.latency, 30000);
    hist_observe(&f.w[1]->local[0].latency, 100);
    counter_add(&bws(&f, 0, 0, 1)->fb.requests[1], 1);
    counter_add(&f.w[0]->local[1].requests[4], 1);
    counter_add(&bws(&f, 0, 1, 0)->errors[UERR_TIMEOUT], 1);
    metrics_shift_applied(40);
    metrics_health_check(1, 1500);
    text = render(&f);
    ck_assert_uint_gt(check_text_format(text), 100);
    for (unsigned i = 0; i < ARRAY_SIZE(want); i++) {
        char type[160];

        snprintf(type, sizeof(type), "# TYPE %s %s", want[i].name, want[i].type);
        ck_assert_msg(lines_starting(text, type) == 1, "missing: %s", type);
    }
    /* Fleet mode is off: no cluster families. */
    ck_assert_uint_eq(lines_starting(text, "# HELP veer_cluster_"), 0);
    ck_assert_uint_eq(lines_starting(text, "veer_cluster_"), 0);
    snprintf(info, sizeof(info), "veer_info{version=\"%s\"}", VEER_VERSION);
    ck_assert_double_eq(value_of(text, info), 1);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_requests_are_summed_across_workers)
{
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS);
    counter_add(&bws(&f, 0, 0, 0)->fb.requests[1], 3); /* b1 2xx: 3 + 4 */
    counter_add(&bws(&f, 0, 0, 1)->fb.requests[1], 4);
    counter_add(&bws(&f, 0, 0, 1)->fb.requests[4], 2); /* b1 5xx */
    counter_add(&bws(&f, 0, 2, 0)->fb.requests[0], 1); /* g1 1xx */
    counter_add(&bws(&f, 0, 2, 1)->fb.requests[2], 5); /* g1 3xx */
    counter_add(&bws(&f, 0, 2, 0)->fb.requests[3], 1); /* g1 4xx: 1 + 1 */
    counter_add(&bws(&f, 0, 2, 1)->fb.requests[3], 1);
    counter_add(&f.w[0]->local[0].requests[4], 5); /* api answered by veer: 503s */
    counter_add(&f.w[1]->local[0].requests[4], 1);
    counter_add(&f.w[0]->local[1].requests[3], 9); /* hc answered by veer: 4xx */
    text = render(&f);
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"blue\","
                                       "backend=\"b1\",route=\"\",code_class=\"2xx\"}"),
                        7);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"blue\","
                                       "backend=\"b1\",route=\"\",code_class=\"5xx\"}"),
                        2);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"green\","
                                       "backend=\"g1\",route=\"\",code_class=\"1xx\"}"),
                        1);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"green\","
                                       "backend=\"g1\",route=\"\",code_class=\"3xx\"}"),
                        5);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"green\","
                                       "backend=\"g1\",route=\"\",code_class=\"4xx\"}"),
                        2);
    /* 2xx is always there, even at 0, so rate() has a series from the start. */
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"blue\","
                                       "backend=\"b2\",route=\"\",code_class=\"2xx\"}"),
                        0);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"green\","
                                       "backend=\"g1\",route=\"\",code_class=\"2xx\"}"),
                        0);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"hc\",group=\"default\","
                                       "backend=\"a\",route=\"\",code_class=\"2xx\"}"),
                        0);
    /* veer's own answers: empty group and backend, only classes seen. */
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"\","
                                       "backend=\"\",route=\"\",code_class=\"5xx\"}"),
                        6);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"hc\",group=\"\","
                                       "backend=\"\",route=\"\",code_class=\"4xx\"}"),
                        9);
    ck_assert(!has_series(text, "veer_requests_total{pool=\"api\",group=\"\",backend=\"\","
                                "route=\"\",code_class=\"2xx\"}"));
    ck_assert(!has_series(text, "veer_requests_total{pool=\"api\",group=\"blue\","
                                "backend=\"b2\",route=\"\",code_class=\"5xx\"}"));
    /* Nothing else: b1 2xx 5xx, b2 2xx, g1 1xx..4xx, a 2xx, two of veer's own. */
    ck_assert_uint_eq(lines_starting(text, "veer_requests_total{"), 10);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_duration_histograms_sum_group_backends_and_workers)
{
    struct fx f;
    char *text;
    uint64_t blue[LAT_BUCKETS + 1], green[LAT_BUCKETS + 1], own[LAT_BUCKETS + 1],
        none[LAT_BUCKETS + 1] = {0};

    fx_init(&f, LISTEN POOLS);
    hist_observe(&bws(&f, 0, 0, 0)->fb.latency, 400);      /* b1, worker 0: le 0.0005 */
    hist_observe(&bws(&f, 0, 0, 1)->fb.latency, 800);      /* b1, worker 1: le 0.001 */
    hist_observe(&bws(&f, 0, 1, 1)->fb.latency, 3000);     /* b2, worker 1: le 0.005 */
    hist_observe(&bws(&f, 0, 1, 0)->fb.latency, 20000000); /* b2, worker 0: +Inf */
    hist_observe(&bws(&f, 0, 2, 0)->fb.latency, 1000);     /* g1: on the 1 ms bound */
    hist_observe(&f.w[1]->local[0].latency, 100);          /* api, answered by veer */
    for (unsigned i = 0; i <= LAT_BUCKETS; i++) {
        blue[i] = i == 0 ? 1 : i < 3 ? 2 : i < LAT_BUCKETS ? 3 : 4;
        green[i] = i == 0 ? 0 : 1;
        own[i] = 1;
    }
    text = render(&f);
    check_text_format(text);
    expect_hist(text, "veer_request_duration_seconds", "pool=\"api\",group=\"blue\",route=\"\"",
                blue, 4, 20.0042);
    expect_hist(text, "veer_request_duration_seconds", "pool=\"api\",group=\"green\",route=\"\"",
                green, 1, 0.001);
    expect_hist(text, "veer_request_duration_seconds", "pool=\"api\",group=\"\",route=\"\"", own, 1,
                0.0001);
    /* A group without traffic has its series at 0; veer's own answers only once there are some. */
    expect_hist(text, "veer_request_duration_seconds", "pool=\"hc\",group=\"default\",route=\"\"",
                none, 0, 0);
    ck_assert_uint_eq(lines_starting(text, "veer_request_duration_seconds_count{pool=\"hc\","
                                           "group=\"\",route=\"\"}"),
                      0);
    ck_assert_uint_eq(lines_starting(text, "veer_request_duration_seconds_count{"), 4);
    /* The sum keeps microseconds. */
    ck_assert_ptr_nonnull(strstr(text, "\nveer_request_duration_seconds_sum{pool=\"api\","
                                       "group=\"blue\",route=\"\"} 20.004200\n"));
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_histogram_count_is_its_inf_bucket_while_an_observation_races)
{
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS);
    hist_observe(&f.w[0]->local[0].latency, 2000);
    hist_observe(&f.w[0]->local[0].latency, 2000);
    /*
     * A scrape on the control thread racing worker 1's hist_observe (relaxed stores: bucket,
     * count, sum) can load the new count but the old bucket. The rendered histogram must still
     * be one: its +Inf bucket equal to its _count.
     */
    counter_add(&f.w[1]->local[0].latency.count, 1);
    counter_add(&f.w[1]->local[0].latency.sum_us, 2000);
    text = render(&f);
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_request_duration_seconds_bucket{pool=\"api\","
                                       "group=\"\",route=\"\",le=\"+Inf\"}"),
                        value_of(text, "veer_request_duration_seconds_count{pool=\"api\","
                                       "group=\"\",route=\"\"}"));
    free(text);
    fx_free(&f);
}
END_TEST

/* Routes "pay" to api and "check" to hc, over the pools above. */
#define ROUTES                                                                                     \
    "routes = ( { name = \"pay\"; pool = \"api\"; match = { path_prefix = \"/pay\"; }; },"         \
    "{ name = \"check\"; pool = \"hc\"; match = { path_prefix = \"/check\"; }; } );\n"

/* The figures worker w keeps for backend i of pool p's requests on route r (a config route). */
static struct req_wstat *routed(struct fx *f, uint32_t p, uint32_t i, unsigned w, unsigned r)
{
    return &metrics_cell_get(&bws(f, p, i, w)->routed, f->m->routes[r].slot)->st;
}

/* veer's own answers of worker w to requests on route r in pool p. */
static struct req_wstat *own_routed(struct fx *f, unsigned w, unsigned r, int p)
{
    return &metrics_cell_get(&f->w[w]->local_routed, worker_local_key(f->m->routes[r].slot, p))->st;
}

static double total_of(const char *text, const char *prefix)
{
    double sum = 0;
    size_t len = strlen(prefix);

    for (const char *p = text; *p; p = strchr(p, '\n') + 1)
        if (strncmp(p, prefix, len) == 0)
            sum += strtod(strchr(p, '}') + 2, NULL);
    return sum;
}

/*
 * A request on a route is counted under its route, one on none under route="", each in one
 * series only: the route's cells of every worker summed, veer's own answers on a route by
 * route (empty group and backend), those without a pool (404 no_route) with everything empty.
 */
START_TEST(test_requests_have_their_route_label)
{
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS ROUTES);
    ck_assert_uint_eq(f.m->nroutes, 2);
    counter_add(&bws(&f, 0, 0, 0)->fb.requests[1], 1);    /* b1, no route */
    counter_add(&routed(&f, 0, 0, 0, 0)->requests[1], 3); /* b1, pay: 3 + 2 */
    counter_add(&routed(&f, 0, 0, 1, 0)->requests[1], 2);
    counter_add(&routed(&f, 0, 2, 1, 0)->requests[4], 6);  /* g1, pay, 5xx */
    counter_add(&routed(&f, 1, 0, 0, 1)->requests[3], 7);  /* a, check, 4xx */
    counter_add(&routed(&f, 0, 0, 1, 1)->requests[1], 8);  /* b1, check (sent there before) */
    counter_add(&own_routed(&f, 0, 0, 0)->requests[4], 4); /* api, pay: maintenance 503s */
    counter_add(&own_routed(&f, 1, 0, 0)->requests[4], 1);
    counter_add(&f.w[0]->local[0].requests[4], 9); /* api, no route: 503s */
    counter_add(&f.w[1]->nopool.requests[3], 2);   /* 404 no_route */
    text = render(&f);
    check_text_format(text);
    ck_assert_ptr_nonnull(strstr(text, "\nveer_requests_total{pool=\"api\",group=\"blue\","
                                       "backend=\"b1\",route=\"pay\",code_class=\"2xx\"} 5\n"));
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"blue\","
                                       "backend=\"b1\",route=\"\",code_class=\"2xx\"}"),
                        1);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"blue\","
                                       "backend=\"b1\",route=\"check\",code_class=\"2xx\"}"),
                        8);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"green\","
                                       "backend=\"g1\",route=\"pay\",code_class=\"5xx\"}"),
                        6);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"hc\",group=\"default\","
                                       "backend=\"a\",route=\"check\",code_class=\"4xx\"}"),
                        7);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"\","
                                       "backend=\"\",route=\"pay\",code_class=\"5xx\"}"),
                        5);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"api\",group=\"\","
                                       "backend=\"\",route=\"\",code_class=\"5xx\"}"),
                        9);
    ck_assert_double_eq(value_of(text, "veer_requests_total{pool=\"\",group=\"\","
                                       "backend=\"\",route=\"\",code_class=\"4xx\"}"),
                        2);
    /* A route's series only once counted: no 2xx at 0 for g1 on pay, none of pay in hc. */
    ck_assert(!has_series(text, "veer_requests_total{pool=\"api\",group=\"green\","
                                "backend=\"g1\",route=\"pay\",code_class=\"2xx\"}"));
    ck_assert_uint_eq(lines_starting(text, "veer_requests_total{pool=\"hc\",group=\"default\","
                                           "backend=\"a\",route=\"pay\""),
                      0);
    /* Each request once: the sum over every series is what was counted. */
    ck_assert_double_eq(total_of(text, "veer_requests_total{"), 1 + 5 + 6 + 7 + 8 + 5 + 9 + 2);
    /* No route: 2xx of b1, b2, g1, a; routes: b1 pay, b1 check, g1 pay, a check; own: pay,
     * none; no pool. */
    ck_assert_uint_eq(lines_starting(text, "veer_requests_total{"), 4 + 4 + 2 + 1);
    free(text);
    fx_free(&f);
}
END_TEST

/* The duration histograms by route too: a group's requests on each route, veer's own. */
START_TEST(test_duration_histograms_by_route)
{
    struct fx f;
    char *text;
    uint64_t pay[LAT_BUCKETS + 1], own[LAT_BUCKETS + 1], none[LAT_BUCKETS + 1];

    fx_init(&f, LISTEN POOLS ROUTES);
    hist_observe(&routed(&f, 0, 0, 0, 0)->latency, 400); /* b1, pay: le 0.0005 */
    hist_observe(&routed(&f, 0, 1, 1, 0)->latency, 800); /* b2, pay: le 0.001 */
    hist_observe(&own_routed(&f, 1, 0, 0)->latency, 100);
    hist_observe(&f.w[0]->nopool.latency, 100);
    for (unsigned i = 0; i <= LAT_BUCKETS; i++) {
        pay[i] = i == 0 ? 1 : 2;
        own[i] = none[i] = 1;
    }
    text = render(&f);
    check_text_format(text);
    expect_hist(text, "veer_request_duration_seconds", "pool=\"api\",group=\"blue\",route=\"pay\"",
                pay, 2, 0.0012);
    expect_hist(text, "veer_request_duration_seconds", "pool=\"api\",group=\"\",route=\"pay\"", own,
                1, 0.0001);
    expect_hist(text, "veer_request_duration_seconds", "pool=\"\",group=\"\",route=\"\"", none, 1,
                0.0001);
    /* The groups' series of requests on no route stay, at 0; nothing on the green group. */
    ck_assert_double_eq(value_of(text, "veer_request_duration_seconds_count{pool=\"api\","
                                       "group=\"blue\",route=\"\"}"),
                        0);
    ck_assert_uint_eq(lines_starting(text, "veer_request_duration_seconds_count{pool=\"api\","
                                           "group=\"green\",route=\"pay\"}"),
                      0);
    /* Groups blue, green, default on no route; blue on pay, own on pay, no pool. */
    ck_assert_uint_eq(lines_starting(text, "veer_request_duration_seconds_count{"), 3 + 3);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_backend_gauges_follow_the_model)
{
    static const char *const states[] = {"PENDING",  "READY",   "DOWN",
                                         "DRAINING", "DRAINED", "MAINT"};
    struct fx f;
    struct rt_pool *api;
    char *text;

    fx_init(&f, LISTEN POOLS);
    api = &f.m->pools[0];
    api->b[1].weight = 200; /* as `set weight api/b2 200` leaves it */
    backend_wstat_add(&bws(&f, 0, 0, 0)->active, 2);
    backend_wstat_add(&bws(&f, 0, 0, 1)->active, 3);
    text = render(&f);
    check_text_format(text);
#define B1 "{pool=\"api\",group=\"blue\",backend=\"b1\"}"
#define B2 "{pool=\"api\",group=\"blue\",backend=\"b2\"}"
#define G1 "{pool=\"api\",group=\"green\",backend=\"g1\"}"
#define A  "{pool=\"hc\",group=\"default\",backend=\"a\"}"
    ck_assert_double_eq(value_of(text, "veer_backend_weight" B1), 100);
    ck_assert_double_eq(value_of(text, "veer_backend_weight" B2), 200);
    ck_assert_double_eq(value_of(text, "veer_backend_weight" G1), 7);
    ck_assert_double_eq(value_of(text, "veer_backend_weight" A), 100);
    /* Blue's 80% split 100:200, green's 20% to g1 alone, nothing to a PENDING backend. */
    ck_assert_double_eq_tol(value_of(text, "veer_backend_effective_weight" B1), 80.0 / 3, 1e-4);
    ck_assert_double_eq_tol(value_of(text, "veer_backend_effective_weight" B2), 160.0 / 3, 1e-4);
    ck_assert_double_eq(value_of(text, "veer_backend_effective_weight" G1), 20);
    ck_assert_double_eq(value_of(text, "veer_backend_effective_weight" A), 0);
    ck_assert_double_eq(value_of(text, "veer_backend_active_requests" B1), 5);
    ck_assert_double_eq(value_of(text, "veer_backend_active_requests" B2), 0);
    ck_assert_double_eq(value_of(text, "veer_circuit_state" G1), 0);
    ck_assert_uint_eq(lines_starting(text, "veer_backend_weight{"), 4);
    free(text);

    api->b[1].admin = ADMIN_MAINT;
    api->b[2].breaker = BREAKER_HALF_OPEN;
    api->b[0].admin = ADMIN_DRAIN;
    f.m->pools[1].b[0].health = HEALTH_DOWN;
    text = render(&f);
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_circuit_state" B1), 0);
    ck_assert_double_eq(value_of(text, "veer_circuit_state" G1), 2);
    ck_assert_double_eq(value_of(text, "veer_backend_effective_weight" B1), 0);
    ck_assert_double_eq(value_of(text, "veer_backend_effective_weight" B2), 0);
    ck_assert_double_eq(value_of(text, "veer_backend_effective_weight" G1), 20);
    /* veer_backend_state: one series per state, 1 for the current one only. */
    for (unsigned s = 0; s < ARRAY_SIZE(states); s++) {
        ck_assert_double_eq(valuef(text,
                                   "veer_backend_state{pool=\"api\",group=\"blue\",backend=\"b1\","
                                   "state=\"%s\"}",
                                   states[s]),
                            s == BE_DRAINING);
        ck_assert_double_eq(valuef(text,
                                   "veer_backend_state{pool=\"api\",group=\"blue\",backend=\"b2\","
                                   "state=\"%s\"}",
                                   states[s]),
                            s == BE_MAINT);
        ck_assert_double_eq(valuef(text,
                                   "veer_backend_state{pool=\"api\",group=\"green\",backend=\"g1\","
                                   "state=\"%s\"}",
                                   states[s]),
                            s == BE_READY);
        ck_assert_double_eq(valuef(text,
                                   "veer_backend_state{pool=\"hc\",group=\"default\",backend=\"a\","
                                   "state=\"%s\"}",
                                   states[s]),
                            s == BE_DOWN);
    }
    ck_assert_uint_eq(lines_starting(text, "veer_backend_state{"), 4 * ARRAY_SIZE(states));
    free(text);
#undef B1
#undef B2
#undef G1
#undef A
    fx_free(&f);
}
END_TEST

START_TEST(test_upstream_errors_by_kind_summed_across_workers)
{
    static const char *const kinds[UERR_KINDS] = {"connect", "timeout", "reset", "response"};
    static const char *const backends[4][2] = {
        {"api", "b1"}, {"api", "b2"}, {"api", "g1"}, {"hc", "a"}};
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS);
    counter_add(&bws(&f, 0, 0, 0)->errors[UERR_CONNECT], 1);
    counter_add(&bws(&f, 0, 0, 1)->errors[UERR_CONNECT], 2);
    counter_add(&bws(&f, 0, 2, 1)->errors[UERR_RESPONSE], 4);
    counter_add(&bws(&f, 1, 0, 0)->errors[UERR_RESET], 1);
    text = render(&f);
    check_text_format(text);
    for (unsigned b = 0; b < 4; b++)
        for (unsigned k = 0; k < UERR_KINDS; k++) {
            double want = b == 0 && k == UERR_CONNECT    ? 3
                          : b == 2 && k == UERR_RESPONSE ? 4
                          : b == 3 && k == UERR_RESET    ? 1
                                                         : 0;

            ck_assert_double_eq(valuef(text,
                                       "veer_upstream_errors_total{pool=\"%s\",backend=\"%s\","
                                       "kind=\"%s\"}",
                                       backends[b][0], backends[b][1], kinds[k]),
                                want);
        }
    ck_assert_uint_eq(lines_starting(text, "veer_upstream_errors_total{"), 4 * UERR_KINDS);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_pool_gauges_follow_the_model)
{
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS);
    text = render(&f);
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_group_share{pool=\"api\",group=\"blue\"}"), 80);
    ck_assert_double_eq(value_of(text, "veer_group_share{pool=\"api\",group=\"green\"}"), 20);
    ck_assert_double_eq(value_of(text, "veer_group_share{pool=\"hc\",group=\"default\"}"), 100);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"api\"}"), 0);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"hc\"}"), 0);
    ck_assert_double_eq(value_of(text, "veer_pool_eligible_backends{pool=\"api\"}"), 3);
    ck_assert_double_eq(value_of(text, "veer_pool_eligible_backends{pool=\"hc\"}"), 0);
    ck_assert_double_eq(value_of(text, "veer_drains_in_progress"), 0);
    ck_assert_double_eq(value_of(text, "veer_generation"), 1);
    free(text);

    f.m->pools[0].g[0].share = 30; /* as `set share api blue=30 green=70` leaves it */
    f.m->pools[0].g[1].share = 70;
    f.m->pools[0].b[0].admin = ADMIN_DRAIN; /* still has work */
    f.m->pools[0].b[1].admin = ADMIN_DRAIN; /* done */
    f.m->pools[0].b[1].drained = true;
    f.m->pools[1].maint = true;
    f.m->generation = 42;
    text = render(&f);
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_group_share{pool=\"api\",group=\"blue\"}"), 30);
    ck_assert_double_eq(value_of(text, "veer_group_share{pool=\"api\",group=\"green\"}"), 70);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"api\"}"), 0);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"hc\"}"), 1);
    ck_assert_double_eq(value_of(text, "veer_pool_eligible_backends{pool=\"api\"}"), 1);
    ck_assert_double_eq(value_of(text, "veer_drains_in_progress"), 1);
    ck_assert_double_eq(value_of(text, "veer_generation"), 42);
    free(text);

    f.m->maint = true; /* maintenance for every pool */
    text = render(&f);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"api\"}"), 1);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"hc\"}"), 1);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_retries_and_connections_summed_across_workers)
{
    struct fx f;
    char *text;
    int clients = atomic_load(&veer_client_connections);

    fx_init(&f, LISTEN POOLS);
    counter_add(&f.w[0]->mstat.retries, 2);
    counter_add(&f.w[1]->mstat.retries, 5);
    counter_add(&f.w[0]->mstat.upstreams, 3);
    counter_add(&f.w[1]->mstat.upstreams, 4);
    atomic_store(&veer_client_connections, 11);
    text = render(&f);
    atomic_store(&veer_client_connections, clients);
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_retries_total"), 7);
    ck_assert_double_eq(value_of(text, "veer_open_connections{side=\"client\"}"), 11);
    ck_assert_double_eq(value_of(text, "veer_open_connections{side=\"upstream\"}"), 7);
    free(text);
    fx_free(&f);
}
END_TEST

/* The shift histogram's values (cumulative buckets, then +Inf, count, sum) and refusals. */
static void read_shift(const char *text, double *v)
{
    for (unsigned i = 0; i < SHIFT_LE; i++)
        v[i] = valuef(text, "veer_shift_applied_seconds_bucket{le=\"%s\"}", shift_le_text[i]);
    v[SHIFT_LE] = value_of(text, "veer_shift_applied_seconds_bucket{le=\"+Inf\"}");
    v[SHIFT_LE + 1] = value_of(text, "veer_shift_applied_seconds_count");
    v[SHIFT_LE + 2] = value_of(text, "veer_shift_applied_seconds_sum");
    v[SHIFT_LE + 3] = value_of(text, "veer_shifts_refused_total");
}

START_TEST(test_shift_times_on_their_own_bounds_and_refusals)
{
    /* 10 us and 50 ms sit on bounds (their bucket); 11 us and 50.001 ms just above. */
    static const double delta[SHIFT_LE + 1] = {1, 2, 2, 2, 2, 2, 2, 3, 4};
    struct fx f;
    char *text;
    double before[SHIFT_LE + 4], after[SHIFT_LE + 4];

    fx_init(&f, LISTEN POOLS);
    text = render(&f);
    read_shift(text, before);
    free(text);
    metrics_shift_applied(10);
    metrics_shift_applied(11);
    metrics_shift_applied(50000);
    metrics_shift_applied(50001);
    metrics_shift_refused();
    metrics_shift_refused();
    text = render(&f);
    check_text_format(text);
    read_shift(text, after);
    for (unsigned i = 0; i <= SHIFT_LE; i++)
        ck_assert_msg(after[i] - before[i] == delta[i], "bucket %u: +%.0f, want +%.0f", i,
                      after[i] - before[i], delta[i]);
    ck_assert_double_eq(after[SHIFT_LE + 1] - before[SHIFT_LE + 1], 4);
    ck_assert_double_eq_tol(after[SHIFT_LE + 2] - before[SHIFT_LE + 2], 0.100022, 1e-9);
    ck_assert_double_eq(after[SHIFT_LE + 3] - before[SHIFT_LE + 3], 2);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_health_check_histogram_only_for_checked_pools)
{
    struct fx f;
    char *text;
    double below0, b0, b1, inf0, inf1, n0, n1, s0, s1;

#define HC "veer_health_check_seconds"
    fx_init(&f, LISTEN POOLS);
    text = render(&f);
    below0 = value_of(text, HC "_bucket{pool=\"hc\",le=\"0.001\"}");
    b0 = value_of(text, HC "_bucket{pool=\"hc\",le=\"0.0025\"}");
    inf0 = value_of(text, HC "_bucket{pool=\"hc\",le=\"+Inf\"}");
    n0 = value_of(text, HC "_count{pool=\"hc\"}");
    s0 = value_of(text, HC "_sum{pool=\"hc\"}");
    free(text);
    metrics_health_check(1, 2500);    /* on the 2.5 ms bound */
    metrics_health_check(1, 7000000); /* le 10 */
    metrics_health_check(-1, 5);      /* no such pool: ignored */
    metrics_health_check(METRIC_POOLS, 5);
    text = render(&f);
    check_text_format(text);
    b1 = value_of(text, HC "_bucket{pool=\"hc\",le=\"0.0025\"}");
    inf1 = value_of(text, HC "_bucket{pool=\"hc\",le=\"+Inf\"}");
    n1 = value_of(text, HC "_count{pool=\"hc\"}");
    s1 = value_of(text, HC "_sum{pool=\"hc\"}");
    ck_assert_double_eq(b1 - b0, 1);
    ck_assert_double_eq(inf1 - inf0, 2);
    ck_assert_double_eq(n1 - n0, 2);
    ck_assert_double_eq_tol(s1 - s0, 7.0025, 1e-9);
    ck_assert_double_eq(value_of(text, HC "_bucket{pool=\"hc\",le=\"0.001\"}"), below0);
    ck_assert_double_eq(value_of(text, HC "_bucket{pool=\"hc\",le=\"10\"}"), inf1);
    /* Pool api has no readiness checks: no series at all. */
    ck_assert_uint_eq(lines_starting(text, HC "_bucket{pool=\"api\""), 0);
    ck_assert_uint_eq(lines_starting(text, HC "_count{"), 1);
#undef HC
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_label_values_are_escaped)
{
    static const char *const odd_backend = "q\"b\\s\nn"; /* q"b\s, newline, n */
    static const char *const odd_group = "gr\"een";
    struct fx f;
    char *text;
    const char *p;
    struct sample s;
    char line[512];
    size_t n;

    fx_init(&f, LISTEN POOLS);
    free(f.m->pools[0].b[0].be->name);
    f.m->pools[0].b[0].be->name = strdup(odd_backend);
    free(f.m->pools[0].g[1].name);
    f.m->pools[0].g[1].name = strdup(odd_group);
    free(f.m->pools[1].name);
    f.m->pools[1].name = strdup("h\\c");
    text = render(&f);
    /* Still one sample per line, every value well formed. */
    check_text_format(text);
    ck_assert_double_eq(value_of(text, "veer_backend_weight{pool=\"api\",group=\"blue\","
                                       "backend=\"q\\\"b\\\\s\\nn\"}"),
                        100);
    ck_assert_double_eq(value_of(text, "veer_group_share{pool=\"api\",group=\"gr\\\"een\"}"), 20);
    ck_assert_double_eq(value_of(text, "veer_maintenance{pool=\"h\\\\c\"}"), 0);
    /* Read back, the label values are the names again. */
    p = strstr(text, "\nveer_backend_weight{pool=\"api\",group=\"blue\",backend=\"q");
    ck_assert_ptr_nonnull(p);
    p++;
    n = (size_t)(strchr(p, '\n') - p);
    ck_assert_uint_lt(n, sizeof(line));
    memcpy(line, p, n);
    line[n] = '\0';
    parse_sample(line, &s);
    ck_assert_str_eq(label_of(&s, "backend"), odd_backend);
    p = strstr(text, "\nveer_group_share{pool=\"api\",group=\"gr");
    ck_assert_ptr_nonnull(p);
    p++;
    n = (size_t)(strchr(p, '\n') - p);
    memcpy(line, p, n);
    line[n] = '\0';
    parse_sample(line, &s);
    ck_assert_str_eq(label_of(&s, "group"), odd_group);
    free(text);
    fx_free(&f);
}
END_TEST

START_TEST(test_cluster_families_in_fleet_mode)
{
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS "cluster = { instance = \"edge-1\"; };\n");
    text = render(&f);
    check_text_format(text);
    ck_assert_uint_eq(lines_starting(text, "# TYPE veer_cluster_connected gauge"), 1);
    ck_assert_uint_eq(lines_starting(text, "# TYPE veer_cluster_revision gauge"), 1);
    ck_assert_double_eq(value_of(text, "veer_cluster_connected"), 0); /* never connected */
    ck_assert_double_eq(value_of(text, "veer_cluster_revision"), 0);
    free(text);
    fx_free(&f);
}
END_TEST

/* --- shadow traffic (issue 19) ---------------------------------------------- */

/* The bounds of mirror_delta_bounds as `le` values, negative ones first. */
static const char *const mirror_le[MIRROR_DELTA_BOUNDS] = {
    "-10",     "-5",     "-2.5",   "-1",      "-0.5",   "-0.25",   "-0.1",     "-0.05",
    "-0.025",  "-0.01",  "-0.005", "-0.0025", "-0.001", "-0.0005", "-0.00025", "0",
    "0.00025", "0.0005", "0.001",  "0.0025",  "0.005",  "0.01",    "0.025",    "0.05",
    "0.1",     "0.25",   "0.5",    "1",       "2.5",    "5",       "10"};

/* The delta histogram of one site: cumulative at each le (cum: MIRROR_DELTA_BOUNDS + 1). */
static void expect_delta_hist(const char *text, const char *labels, const uint64_t *cum, double sum)
{
    for (unsigned i = 0; i < MIRROR_DELTA_BOUNDS; i++)
        ck_assert_msg(valuef(text, "veer_mirror_latency_delta_seconds_bucket{%s,le=\"%s\"}", labels,
                             mirror_le[i]) == (double)cum[i],
                      "{%s} le=%s: want %llu", labels, mirror_le[i], (unsigned long long)cum[i]);
    ck_assert_double_eq(
        valuef(text, "veer_mirror_latency_delta_seconds_bucket{%s,le=\"+Inf\"}", labels),
        (double)cum[MIRROR_DELTA_BOUNDS]);
    ck_assert_double_eq(valuef(text, "veer_mirror_latency_delta_seconds_count{%s}", labels),
                        (double)cum[MIRROR_DELTA_BOUNDS]);
    ck_assert_double_eq_tol(valuef(text, "veer_mirror_latency_delta_seconds_sum{%s}", labels), sum,
                            1e-9);
}

START_TEST(test_mirror_families_by_site_with_negative_bounds)
{
    static const char *const results[] = {"match",   "status_diff", "body_diff",
                                          "timeout", "error",       "dropped"};
    const uint64_t want_pool[] = {1, 1, 0, 1, 0, 1}, want_route[] = {0, 0, 1, 0, 0, 0};
    uint64_t cum[MIRROR_DELTA_BOUNDS + 1] = {0};
    struct mirror_site *a, *b;
    struct fx f;
    char *text;

    fx_init(&f, LISTEN POOLS);
    text = render(&f);
    ck_assert_ptr_null(strstr(text, "veer_mirror_")); /* no site: no family */
    free(text);
    a = mirror_site_get("api", "");
    b = mirror_site_get("api", "v2");
    mirror_count(a, 0, 200, MR_MATCH, -300000, 1000);    /* the shadow 300 ms faster */
    mirror_count(a, 1, 200, MR_STATUS_DIFF, 2000, 3000); /* 2 ms slower */
    mirror_count(a, 1, 200, MR_TIMEOUT, 0, 0);
    mirror_count(a, 0, 404, MR_DROPPED, 0, 0);
    mirror_count(b, 1, 200, MR_BODY_DIFF, 20000000, 1); /* 20 s slower: +Inf */
    text = render(&f);
    ck_assert_uint_gt(check_text_format(text), 0);
    ck_assert_uint_eq(lines_starting(text, "# TYPE veer_mirror_requests_total counter\n"), 1);
    ck_assert_uint_eq(lines_starting(text, "# TYPE veer_mirror_latency_delta_seconds histogram\n"),
                      1);
    for (unsigned r = 0; r < 6; r++) {
        ck_assert_double_eq(
            valuef(text, "veer_mirror_requests_total{pool=\"api\",route=\"\",result=\"%s\"}",
                   results[r]),
            (double)want_pool[r]);
        ck_assert_double_eq(
            valuef(text, "veer_mirror_requests_total{pool=\"api\",route=\"v2\",result=\"%s\"}",
                   results[r]),
            (double)want_route[r]);
    }
    /* -0.3 s in (-0.5, -0.25]; 0.002 s in (0.001, 0.0025]. */
    for (unsigned i = 0; i <= MIRROR_DELTA_BOUNDS; i++)
        cum[i] = (i >= 5) + (i >= 19);
    expect_delta_hist(text, "pool=\"api\",route=\"\"", cum, -0.298);
    for (unsigned i = 0; i <= MIRROR_DELTA_BOUNDS; i++)
        cum[i] = i == MIRROR_DELTA_BOUNDS;
    expect_delta_hist(text, "pool=\"api\",route=\"v2\"", cum, 20.0);
    free(text);
    mirror_sites_free();
    fx_free(&f);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *th = tcase_create("histogram");
    TCase *tr = tcase_create("render");

    tcase_add_test(th, test_bounds_are_the_documented_ones);
    tcase_add_test(th, test_value_on_a_bound_lands_in_that_bucket);
    tcase_add_test(th, test_observations_accumulate_count_and_sum);
    tcase_add_test(th, test_p99_reads_the_bound_of_the_observed_bucket);
    tcase_add_test(tr, test_render_follows_the_text_format_with_every_contract_family);
    tcase_add_test(tr, test_requests_are_summed_across_workers);
    tcase_add_test(tr, test_duration_histograms_sum_group_backends_and_workers);
    tcase_add_test(tr, test_histogram_count_is_its_inf_bucket_while_an_observation_races);
    tcase_add_test(tr, test_requests_have_their_route_label);
    tcase_add_test(tr, test_duration_histograms_by_route);
    tcase_add_test(tr, test_backend_gauges_follow_the_model);
    tcase_add_test(tr, test_upstream_errors_by_kind_summed_across_workers);
    tcase_add_test(tr, test_pool_gauges_follow_the_model);
    tcase_add_test(tr, test_retries_and_connections_summed_across_workers);
    tcase_add_test(tr, test_shift_times_on_their_own_bounds_and_refusals);
    tcase_add_test(tr, test_health_check_histogram_only_for_checked_pools);
    tcase_add_test(tr, test_label_values_are_escaped);
    tcase_add_test(tr, test_cluster_families_in_fleet_mode);
    tcase_add_test(tr, test_a_render_in_slices_is_the_render_in_one);
    tcase_add_test(tr, test_mirror_families_by_site_with_negative_bounds);
    tcase_add_test(tr, test_a_slice_stops_after_its_budget);
    tcase_add_test(tr, test_a_render_restarts_when_backends_change_between_slices);
    suite_add_tcase(s, th);
    suite_add_tcase(s, tr);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
