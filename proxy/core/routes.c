/*
 * routes.c - the route matcher of routes.h.
 *
 * The compiled table has one bucket per host condition: a hash from exact
 * host (lowercased) to its bucket, a hash from wildcard suffix (".example.com",
 * leading dot kept) to its bucket, and one bucket for routes without a host.
 * A bucket is the root of a trie of path segments: a node is the path up to
 * one segment; it lists the routes whose path_prefix ends there and the
 * routes whose exact path ends there (without and with a trailing "/"); the
 * root also lists its routes without a path. Every list is sorted once by
 * the keys that remain after host and path (a method condition, then more
 * header conditions, then file order), so matching tries buckets in host
 * order, lists in path order and entries in list order, and the first entry
 * whose method and headers hold is the winner.
 *
 * For the cache: a node carries its own key (the segment, or for a root the
 * host key) so the hash's key compare reads the node it then uses, and a
 * list keeps only the routes with conditions that come before its first
 * route without any, plus that route's index: a route without conditions
 * wins when it is reached, so the routes after it are never tried and
 * matching it reads no route.
 */
#include "routes.h"
#include "hmap.h"
#include "sbuf.h"
#include "veer.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROUTES_MAGIC  0x726f7574u
#define HOST_MAX      255 /* longer request hosts match no route with a host */
#define SPEC_HOST_MAX 253

enum host_kind { HOST_NONE, HOST_WILD, HOST_EXACT };
enum path_kind { PATH_NONE, PATH_PREFIX, PATH_EXACT };

struct route_hdr {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
};

struct route {
    char *name;
    char *host; /* lowercased; a wildcard keeps its "*" */
    size_t host_len;
    enum host_kind host_kind;
    char *path; /* a prefix without its trailing "/" ("/" stays "/") */
    size_t path_len;
    enum path_kind path_kind;
    char **methods;
    size_t *method_lens;
    size_t nmethods;
    struct route_hdr *hdrs;
    size_t nhdrs;
};

/*
 * Route indexes, sorted by the keys after host and path. Once built: idx[0..n)
 * are the routes with a method or header condition that rank above the
 * first route without one, which is `uncond` (-1: none).
 */
struct cand {
    uint32_t *idx;
    uint32_t n;
    uint32_t cap;
    int32_t uncond;
};

/* The lists a node rarely has. */
struct pnode_more {
    struct cand exact[2]; /* exact path ending here: [1] with a trailing "/" */
    struct cand nopath;   /* a root only: routes without a path */
};

/* A trie node; a root is a host bucket. */
struct pnode {
    struct hmap kids; /* segment -> struct pnode * (keys: the kids' seg) */
    struct pnode *parent;
    struct cand prefix;
    struct pnode_more *more; /* NULL: no exact path ends here, no route without a path */
    size_t seg_len;
    char seg[]; /* the segment; a root's host key */
};

struct routes {
    unsigned magic;
    struct route *r;
    size_t n;
    struct hmap exact;    /* lowercased host -> its root struct pnode * */
    struct hmap wild;     /* ".example.com" -> its root struct pnode * */
    uint64_t wild_dots;   /* bit d: some wildcard suffix has d dots (63: 63 or more) */
    struct pnode *any;    /* the root of routes without a host; NULL if none */
    struct pnode **nodes; /* every trie node, roots included, to sort and free */
    size_t nnodes;
    size_t nodes_cap;
};

/* ---- Validation ---------------------------------------------------------- */

static bool fail(struct routes_error *err, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(struct routes_error *err, size_t i, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return false;
    err->index = (int)i;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return false;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static bool check_host(const char *h, size_t i, struct routes_error *err)
{
    size_t n = strlen(h);
    size_t label = 0;

    if (n == 0)
        return fail(err, i, "host is empty");
    if (n > SPEC_HOST_MAX)
        return fail(err, i, "host is longer than %d bytes", SPEC_HOST_MAX);
    if (h[0] == '*') {
        if (n == 1 || h[1] != '.')
            return fail(err, i, "host \"%s\": \"*\" must be a whole label, as in \"*.example.com\"",
                        h);
        if (n == 2)
            return fail(err, i, "host \"%s\": a wildcard needs a domain after \"*.\"", h);
        h += 2;
        n -= 2;
    }
    for (size_t k = 0; k <= n; k++) {
        if (k == n || h[k] == '.') {
            if (label == 0)
                return fail(err, i, "host has an empty label");
            label = 0;
        } else if (h[k] == '*') {
            return fail(err, i, "host: \"*\" is allowed only as the leftmost label");
        } else if (!host_char(h[k])) {
            return fail(err, i, "host has a character a host name cannot have: '%c'", h[k]);
        } else {
            label++;
        }
    }
    return true;
}

static bool check_path(const char *key, const char *p, size_t i, struct routes_error *err)
{
    size_t n = strlen(p);

    if (n == 0 || p[0] != '/')
        return fail(err, i, "%s must start with \"/\"", key);
    if (strpbrk(p, "?#") != NULL)
        return fail(err, i, "%s has a query or a fragment", key);
    for (size_t k = 0; k < n; k++) {
        size_t len;

        if (p[k] != '/')
            continue;
        len = strcspn(p + k + 1, "/");
        if (len == 0 && k + 1 < n)
            return fail(err, i, "%s is not canonical: \"//\"", key);
        if ((len == 1 && p[k + 1] == '.') || (len == 2 && p[k + 1] == '.' && p[k + 2] == '.'))
            return fail(err, i, "%s is not canonical: a \".\" or \"..\" segment", key);
    }
    return true;
}

/* RFC 9110 5.6.2 tchar. */
static bool token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!host_char(*s) && strchr("!#$%&'*+.^`|~", *s) == NULL)
            return false;
    return true;
}

static bool check_spec(const struct routes_spec *s, size_t i, struct hmap *names,
                       struct routes_error *err)
{
    uintptr_t *other;

    if (s->name == NULL || s->name[0] == '\0')
        return fail(err, i, "route has no name");
    other = hmap_insert_str(names, s->name, i);
    if (other != NULL)
        return fail(err, i, "route name \"%s\" is already used by route %zu", s->name,
                    (size_t)*other);
    if (s->host != NULL && !check_host(s->host, i, err))
        return false;
    if (s->path != NULL && s->path_prefix != NULL)
        return fail(err, i, "route has both path and path_prefix: give one");
    if (s->path != NULL && !check_path("path", s->path, i, err))
        return false;
    if (s->path_prefix != NULL && !check_path("path_prefix", s->path_prefix, i, err))
        return false;
    for (size_t k = 0; k < s->nmethods; k++)
        if (s->methods[k] == NULL || !token(s->methods[k]))
            return fail(err, i, "method %zu is empty or not a token", k + 1);
    for (size_t k = 0; k < s->nheaders; k++) {
        const struct routes_header *h = &s->headers[k];

        if (h->name == NULL || !token(h->name))
            return fail(err, i, "header %zu: the name is empty or not a token", k + 1);
        if (h->value == NULL)
            return fail(err, i, "header \"%s\" has no value", h->name);
        for (size_t j = 0; j < k; j++)
            if (strcasecmp(s->headers[j].name, h->name) == 0)
                return fail(err, i, "header \"%s\" is listed twice", h->name);
    }
    return true;
}

/* ---- Building -------------------------------------------------------------- */

static char *lower_dup(const char *s)
{
    char *d = veer_strdup(s);

    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

static void copy_route(struct route *r, const struct routes_spec *s)
{
    r->name = veer_strdup(s->name);
    if (s->host != NULL) {
        r->host = lower_dup(s->host);
        r->host_len = strlen(r->host);
        r->host_kind = r->host[0] == '*' ? HOST_WILD : HOST_EXACT;
    }
    if (s->path != NULL) {
        r->path = veer_strdup(s->path);
        r->path_kind = PATH_EXACT;
    } else if (s->path_prefix != NULL) {
        r->path = veer_strdup(s->path_prefix);
        r->path_kind = PATH_PREFIX;
    }
    if (r->path != NULL) {
        r->path_len = strlen(r->path);
        if (r->path_kind == PATH_PREFIX && r->path_len > 1 && r->path[r->path_len - 1] == '/')
            r->path[--r->path_len] = '\0';
    }
    r->nmethods = s->nmethods;
    if (s->nmethods > 0) {
        r->methods = veer_calloc(s->nmethods, sizeof(*r->methods));
        r->method_lens = veer_calloc(s->nmethods, sizeof(*r->method_lens));
    }
    for (size_t k = 0; k < s->nmethods; k++) {
        r->methods[k] = veer_strdup(s->methods[k]);
        r->method_lens[k] = strlen(r->methods[k]);
    }
    r->nhdrs = s->nheaders;
    if (s->nheaders > 0)
        r->hdrs = veer_calloc(s->nheaders, sizeof(*r->hdrs));
    for (size_t k = 0; k < s->nheaders; k++) {
        r->hdrs[k].name = veer_strdup(s->headers[k].name);
        r->hdrs[k].name_len = strlen(r->hdrs[k].name);
        r->hdrs[k].value = veer_strdup(s->headers[k].value);
        r->hdrs[k].value_len = strlen(r->hdrs[k].value);
    }
}

static void cand_add(struct cand *c, uint32_t i)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 2;
        c->idx = veer_realloc(c->idx, c->cap * sizeof(*c->idx));
    }
    c->idx[c->n++] = i;
}

static struct pnode *node_new(struct routes *rt, struct pnode *parent, const char *seg, size_t len)
{
    struct pnode *nd = veer_calloc(1, sizeof(*nd) + len + 1);

    nd->parent = parent;
    nd->prefix.uncond = -1;
    nd->seg_len = len;
    memcpy(nd->seg, seg, len);
    if (rt->nnodes == rt->nodes_cap) {
        rt->nodes_cap = rt->nodes_cap ? rt->nodes_cap * 2 : 16;
        rt->nodes = veer_realloc(rt->nodes, rt->nodes_cap * sizeof(*rt->nodes));
    }
    rt->nodes[rt->nnodes++] = nd;
    return nd;
}

static struct pnode_more *more_of(struct pnode *nd)
{
    if (nd->more == NULL) {
        nd->more = veer_calloc(1, sizeof(*nd->more));
        nd->more->exact[0].uncond = nd->more->exact[1].uncond = nd->more->nopath.uncond = -1;
    }
    return nd->more;
}

/* The root of route r's host condition, made on first use. */
static struct pnode *bucket_of(struct routes *rt, const struct route *r)
{
    struct hmap *m;
    const char *key;
    size_t len;
    uintptr_t *v;
    struct pnode *b;

    if (r->host_kind == HOST_NONE) {
        if (rt->any == NULL)
            rt->any = node_new(rt, NULL, "", 0);
        return rt->any;
    }
    if (r->host_kind == HOST_EXACT) {
        m = &rt->exact;
        key = r->host;
        len = r->host_len;
    } else {
        size_t dots = 0;

        m = &rt->wild;
        key = r->host + 1; /* ".example.com" */
        len = r->host_len - 1;
        for (size_t k = 0; k < len; k++)
            dots += key[k] == '.';
        rt->wild_dots |= 1ull << (dots < 63 ? dots : 63);
    }
    v = hmap_find(m, key, len);
    if (v != NULL)
        return (struct pnode *)*v;
    b = node_new(rt, NULL, key, len);
    hmap_insert(m, b->seg, len, (uintptr_t)b);
    return b;
}

/*
 * The trie node of path p (canonical, starting with "/"), made on demand;
 * *slash tells whether p ends with "/" after its last segment ("/" itself
 * is the root with a slash).
 */
static struct pnode *node_of(struct routes *rt, struct pnode *root, const char *p, size_t n,
                             int *slash)
{
    struct pnode *nd = root;
    size_t k = 1;

    *slash = 1;
    while (k < n) {
        size_t len = strcspn(p + k, "/");
        uintptr_t *v = hmap_find(&nd->kids, p + k, len);
        struct pnode *kid;

        if (v != NULL) {
            kid = (struct pnode *)*v;
        } else {
            kid = node_new(rt, nd, p + k, len);
            hmap_insert(&nd->kids, kid->seg, len, (uintptr_t)kid);
        }
        nd = kid;
        k += len;
        *slash = k < n; /* a "/" follows; canonical: it is the last byte or a segment follows */
        k++;
    }
    return nd;
}

static void add_route(struct routes *rt, uint32_t i)
{
    const struct route *r = &rt->r[i];
    struct pnode *b = bucket_of(rt, r);
    struct pnode *nd;
    int slash;

    if (r->path_kind == PATH_NONE) {
        cand_add(&more_of(b)->nopath, i);
        return;
    }
    nd = node_of(rt, b, r->path, r->path_len, &slash);
    if (r->path_kind == PATH_PREFIX)
        cand_add(&nd->prefix, i);
    else
        cand_add(&more_of(nd)->exact[slash], i);
}

/* Keys 3 to 5 of the precedence (routes.h): methods, header count, file order. */
static int cand_cmp(const void *a, const void *b, void *arg)
{
    const struct route *r = arg;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    int mi = r[i].nmethods > 0, mj = r[j].nmethods > 0;

    if (mi != mj)
        return mj - mi;
    if (r[i].nhdrs != r[j].nhdrs)
        return r[i].nhdrs > r[j].nhdrs ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Sort c, then keep the routes with conditions before the first one without. */
static void cand_sort(struct routes *rt, struct cand *c)
{
    if (c->n > 1)
        qsort_r(c->idx, c->n, sizeof(*c->idx), cand_cmp, rt->r);
    for (uint32_t k = 0; k < c->n; k++) {
        const struct route *r = &rt->r[c->idx[k]];

        if (r->nmethods == 0 && r->nhdrs == 0) {
            c->uncond = (int32_t)c->idx[k];
            c->n = k;
            break;
        }
    }
    if (c->n == 0) {
        free(c->idx);
        c->idx = NULL;
        c->cap = 0;
    }
}

struct routes *routes_build(const struct routes_spec *specs, size_t n, struct routes_error *err)
{
    struct hmap names = {0};
    struct routes *rt;

    if (n > INT32_MAX) {
        fail(err, 0, "too many routes");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!check_spec(&specs[i], i, &names, err)) {
            hmap_free(&names);
            return NULL;
        }
    }
    hmap_free(&names);

    rt = veer_calloc(1, sizeof(*rt));
    rt->magic = ROUTES_MAGIC;
    rt->n = n;
    rt->r = veer_calloc(n ? n : 1, sizeof(*rt->r));
    for (size_t i = 0; i < n; i++) {
        copy_route(&rt->r[i], &specs[i]);
        add_route(rt, (uint32_t)i);
    }
    for (size_t k = 0; k < rt->nnodes; k++) {
        struct pnode *nd = rt->nodes[k];

        cand_sort(rt, &nd->prefix);
        if (nd->more != NULL) {
            cand_sort(rt, &nd->more->exact[0]);
            cand_sort(rt, &nd->more->exact[1]);
            cand_sort(rt, &nd->more->nopath);
        }
    }
    return rt;
}

void routes_free(struct routes *rt)
{
    if (rt == NULL)
        return;
    CHECK_OBJ(rt, ROUTES_MAGIC);
    for (size_t k = 0; k < rt->nnodes; k++) {
        struct pnode *nd = rt->nodes[k];

        hmap_free(&nd->kids);
        free(nd->prefix.idx);
        if (nd->more != NULL) {
            free(nd->more->exact[0].idx);
            free(nd->more->exact[1].idx);
            free(nd->more->nopath.idx);
            free(nd->more);
        }
        free(nd);
    }
    free(rt->nodes);
    hmap_free(&rt->exact);
    hmap_free(&rt->wild);
    for (size_t i = 0; i < rt->n; i++) {
        struct route *r = &rt->r[i];

        free(r->name);
        free(r->host);
        free(r->path);
        for (size_t k = 0; k < r->nmethods; k++)
            free(r->methods[k]);
        free(r->methods);
        free(r->method_lens);
        for (size_t k = 0; k < r->nhdrs; k++) {
            free(r->hdrs[k].name);
            free(r->hdrs[k].value);
        }
        free(r->hdrs);
    }
    free(rt->r);
    rt->magic = 0;
    free(rt);
}

size_t routes_count(const struct routes *rt)
{
    return rt->n;
}

const char *routes_name(const struct routes *rt, int i)
{
    return rt->r[i].name;
}

/* ---- Matching -------------------------------------------------------------- */

/*
 * ASCII lowercase of s[0..n) into out, eight bytes at a time: in each byte
 * without its high bit, adding 0x3f sets bit 7 from 'A' up and adding 0x25
 * from 'Z' + 1 up, so the two differ exactly for 'A'..'Z', which gain 0x20.
 * Bytes with the high bit set are left alone.
 */
static void lower_into(char *out, const char *s, size_t n)
{
    size_t k = 0;

    for (; k + 8 <= n; k += 8) {
        uint64_t x, low, upper;

        memcpy(&x, s + k, 8);
        low = x & 0x7f7f7f7f7f7f7f7full;
        upper = ((low + 0x3f3f3f3f3f3f3f3full) ^ (low + 0x2525252525252525ull)) & ~x &
                0x8080808080808080ull;
        x |= upper >> 2;
        memcpy(out + k, &x, 8);
    }
    for (; k < n; k++)
        out[k] = (s[k] >= 'A' && s[k] <= 'Z') ? (char)(s[k] - 'A' + 'a') : s[k];
}

/*
 * The request's host as routes compare it, into buf: the port and one
 * trailing dot dropped, lowercased. 0 when there is none to compare (no
 * Host, empty, or longer than HOST_MAX).
 */
static size_t req_host(const struct routes_req *req, char *buf)
{
    const char *h = req->host;
    size_t n = req->host_len;

    if (h == NULL || n == 0)
        return 0;
    if (h[0] == '[') {
        const char *e = memchr(h, ']', n);

        if (e != NULL)
            n = (size_t)(e - h) + 1;
    } else {
        const char *c = memrchr(h, ':', n);

        if (c != NULL) {
            size_t k = (size_t)(c - h) + 1;

            while (k < n && h[k] >= '0' && h[k] <= '9')
                k++;
            if (k == n)
                n = (size_t)(c - h);
        }
    }
    if (n > 0 && h[n - 1] == '.')
        n--;
    if (n == 0 || n > HOST_MAX)
        return 0;
    lower_into(buf, h, n);
    return n;
}

static bool name_eq(const char *a, const char *b, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        unsigned char x = (unsigned char)a[k], y = (unsigned char)b[k];

        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

static bool header_holds(const struct routes_req *req, const struct route_hdr *c)
{
    if (req->header_is != NULL)
        return req->header_is(req->ctx, c->name, c->name_len, c->value, c->value_len);
    for (size_t k = 0; k < req->nhdrs; k++) {
        const struct routes_hdr *h = &req->hdrs[k];

        if (h->name_len == c->name_len && h->value_len == c->value_len &&
            name_eq(h->name, c->name, c->name_len) &&
            (c->value_len == 0 || memcmp(h->value, c->value, c->value_len) == 0))
            return true;
    }
    return false;
}

static bool method_holds(const struct routes_req *req, const struct route *r)
{
    if (r->nmethods == 0)
        return true;
    for (size_t k = 0; k < r->nmethods; k++)
        if (r->method_lens[k] == req->method_len &&
            memcmp(r->methods[k], req->method, req->method_len) == 0)
            return true;
    return false;
}

/* The first header condition of r that req fails, or NULL. */
static const struct route_hdr *header_fails(const struct routes_req *req, const struct route *r)
{
    for (size_t k = 0; k < r->nhdrs; k++)
        if (!header_holds(req, &r->hdrs[k]))
            return &r->hdrs[k];
    return NULL;
}

static int cand_pick(const struct routes *rt, const struct cand *c, const struct routes_req *req)
{
    for (uint32_t k = 0; k < c->n; k++) {
        const struct route *r = &rt->r[c->idx[k]];

        if (method_holds(req, r) && header_fails(req, r) == NULL)
            return (int)c->idx[k];
    }
    return c->uncond;
}

/* The winner among one bucket's routes, in path order, or -1. */
static int bucket_pick(const struct routes *rt, const struct pnode *root,
                       const struct routes_req *req)
{
    const char *p = req->path, *end = req->path + req->path_len;
    const struct pnode *nd = root;
    const struct cand *exact = NULL;
    int i;

    if (req->path_len > 0 && p[0] == '/') {
        p++;
        for (;;) {
            const char *q = memchr(p, '/', (size_t)(end - p));
            uintptr_t *v;

            if (q == NULL)
                q = end;
            if (q == p) { /* the end after a "/", or "//" */
                if (p == end && nd->more != NULL)
                    exact = &nd->more->exact[1];
                break;
            }
            v = hmap_find(&nd->kids, p, (size_t)(q - p));
            if (v == NULL)
                break;
            nd = (const struct pnode *)*v;
            if (q == end) {
                if (nd->more != NULL)
                    exact = &nd->more->exact[0];
                break;
            }
            p = q + 1;
        }
        if (exact != NULL && (i = cand_pick(rt, exact, req)) >= 0)
            return i;
        for (; nd != NULL; nd = nd->parent)
            if ((i = cand_pick(rt, &nd->prefix, req)) >= 0)
                return i;
    }
    return root->more != NULL ? cand_pick(rt, &root->more->nopath, req) : -1;
}

int routes_match(const struct routes *rt, const struct routes_req *req)
{
    char host[HOST_MAX];
    size_t n = req_host(req, host);
    int i;

    CHECK_OBJ(rt, ROUTES_MAGIC);
    if (n > 0) {
        uintptr_t *v = hmap_find(&rt->exact, host, n);
        size_t dots = 0;

        if (v != NULL && (i = bucket_pick(rt, (const struct pnode *)*v, req)) >= 0)
            return i;
        if (rt->wild_dots != 0) {
            for (size_t k = 0; k < n; k++)
                dots += host[k] == '.';
            /* Longest suffix first; a "." at 0 would leave an empty label for the "*". */
            for (size_t k = 0; k < n; k++) {
                if (host[k] != '.')
                    continue;
                if (k > 0 && (rt->wild_dots & (1ull << (dots < 63 ? dots : 63))) &&
                    (v = hmap_find(&rt->wild, host + k, n - k)) != NULL &&
                    (i = bucket_pick(rt, (const struct pnode *)*v, req)) >= 0)
                    return i;
                dots--;
            }
        }
    }
    if (rt->any != NULL)
        return bucket_pick(rt, rt->any, req);
    return -1;
}

/* ---- Explaining ------------------------------------------------------------ */

static bool host_fits(const struct route *r, const char *host, size_t n)
{
    size_t sl;

    if (r->host_kind == HOST_NONE)
        return true;
    if (n == 0)
        return false;
    if (r->host_kind == HOST_EXACT)
        return r->host_len == n && memcmp(r->host, host, n) == 0;
    sl = r->host_len - 1; /* ".example.com" */
    return n > sl && memcmp(host + n - sl, r->host + 1, sl) == 0;
}

static bool path_fits(const struct route *r, const struct routes_req *req)
{
    const char *p = req->path;
    size_t n = req->path_len;

    switch (r->path_kind) {
    case PATH_NONE:
        return true;
    case PATH_EXACT:
        return n == r->path_len && memcmp(p, r->path, n) == 0;
    case PATH_PREFIX:
        if (r->path_len == 1)
            return n > 0 && p[0] == '/';
        return n >= r->path_len && memcmp(p, r->path, r->path_len) == 0 &&
               (n == r->path_len || p[r->path_len] == '/');
    }
    return false;
}

/*
 * Does route a rank above route b (routes.h precedence), both assumed to
 * match? Exact hosts rank alike whatever the host, wildcards by suffix
 * length, exact paths alike, prefixes by length.
 */
static bool ranks_above(const struct route *r, uint32_t a, uint32_t b)
{
    const struct route *x = &r[a], *y = &r[b];

    if (x->host_kind != y->host_kind)
        return x->host_kind > y->host_kind;
    if (x->host_kind == HOST_WILD && x->host_len != y->host_len)
        return x->host_len > y->host_len;
    if (x->path_kind != y->path_kind)
        return x->path_kind > y->path_kind;
    if (x->path_kind == PATH_PREFIX && x->path_len != y->path_len)
        return x->path_len > y->path_len;
    if ((x->nmethods > 0) != (y->nmethods > 0))
        return x->nmethods > 0;
    if (x->nhdrs != y->nhdrs)
        return x->nhdrs > y->nhdrs;
    return a < b;
}

static int rank_cmp(const void *a, const void *b, void *arg)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;

    if (i == j)
        return 0;
    return ranks_above(arg, i, j) ? -1 : 1;
}

/*
 * Write the "skip" line of route r, which does not match req. False, and
 * nothing written, when its host does not fit and something else fails too:
 * the caller counts those.
 */
static bool explain_skip(const struct route *r, const struct routes_req *req, const char *host,
                         size_t hn, struct sbuf *out)
{
    const struct route_hdr *h;

    if (!host_fits(r, host, hn)) {
        if (!path_fits(r, req) || !method_holds(req, r) || header_fails(req, r) != NULL)
            return false;
        if (hn == 0)
            sb_printf(out, "skip %s: host %s does not match (none)\n", r->name, r->host);
        else
            sb_printf(out, "skip %s: host %s does not match %.*s\n", r->name, r->host, (int)hn,
                      host);
    } else if (!path_fits(r, req)) {
        sb_printf(out, "skip %s: %s %s %s %.*s\n", r->name,
                  r->path_kind == PATH_EXACT ? "path" : "path_prefix", r->path,
                  r->path_kind == PATH_EXACT ? "is not" : "does not cover", (int)req->path_len,
                  req->path_len ? req->path : "");
    } else if (!method_holds(req, r)) {
        sb_printf(out, "skip %s: method %.*s not in", r->name, (int)req->method_len,
                  req->method ? req->method : "");
        for (size_t k = 0; k < r->nmethods; k++)
            sb_printf(out, " %s", r->methods[k]);
        sb_puts(out, "\n");
    } else if ((h = header_fails(req, r)) != NULL) {
        sb_printf(out, "skip %s: header %s is not \"%s\"\n", r->name, h->name, h->value);
    }
    return true;
}

int routes_explain(const struct routes *rt, const struct routes_req *req, struct sbuf *out)
{
    char host[HOST_MAX];
    size_t hn = req_host(req, host);
    int win = routes_match(rt, req);
    uint32_t *order = veer_calloc(rt->n ? rt->n : 1, sizeof(*order));
    size_t m = 0, other_hosts = 0;

    if (win >= 0)
        sb_printf(out, "match %s\n", rt->r[win].name);
    else
        sb_puts(out, "no route\n");
    for (size_t i = 0; i < rt->n; i++)
        if (win < 0 || ranks_above(rt->r, (uint32_t)i, (uint32_t)win))
            order[m++] = (uint32_t)i;
    qsort_r(order, m, sizeof(*order), rank_cmp, rt->r);
    for (size_t k = 0; k < m; k++)
        if (!explain_skip(&rt->r[order[k]], req, host, hn, out))
            other_hosts++;
    if (other_hosts > 0)
        sb_printf(out, "skip %zu route%s for other hosts\n", other_hosts,
                  other_hosts > 1 ? "s" : "");
    free(order);
    return win;
}
