/*
 * check_routes.c - the route matcher: every precedence rule and its
 * tie-break, whole-segment prefixes, wildcard hosts, the Host's case, port
 * and trailing dot, methods and headers that let a less specific route win,
 * the explain text, the build errors, and a randomized cross-check against
 * a linear reference matcher written from routes.h's definition.
 */
#include "routes.h"
#include "sbuf.h"

#include <check.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- Helpers ------------------------------------------------------------- */

static const char *GET[] = {"GET"};
static const char *GET_HEAD[] = {"GET", "HEAD"};
static const char *POST[] = {"POST"};

#define METHODS(a) .methods = (a), .nmethods = sizeof(a) / sizeof((a)[0])
#define HEADERS(a) .headers = (a), .nheaders = sizeof(a) / sizeof((a)[0])

static struct routes *build(const struct routes_spec *s, size_t n)
{
    struct routes_error err = {0};
    struct routes *rt = routes_build(s, n, &err);

    ck_assert_msg(rt != NULL, "route %d: %s", err.index, err.msg);
    return rt;
}

#define BUILD(specs) build((specs), sizeof(specs) / sizeof((specs)[0]))

struct req_store {
    struct routes_req req;
    struct routes_hdr hdrs[8];
};

/* A request; each header is "Name: value", the list ends with NULL. */
static struct routes_req *req_v(struct req_store *st, const char *method, const char *host,
                                const char *path, va_list ap)
{
    const char *h;
    size_t n = 0;

    memset(st, 0, sizeof(*st));
    st->req.method = method;
    st->req.method_len = strlen(method);
    st->req.host = host;
    st->req.host_len = host ? strlen(host) : 0;
    st->req.path = path;
    st->req.path_len = strlen(path);
    while ((h = va_arg(ap, const char *)) != NULL) {
        const char *colon = strchr(h, ':');

        ck_assert(colon != NULL && n < 8);
        st->hdrs[n].name = h;
        st->hdrs[n].name_len = (size_t)(colon - h);
        st->hdrs[n].value = colon + 2;
        st->hdrs[n].value_len = strlen(colon + 2);
        n++;
    }
    st->req.hdrs = st->hdrs;
    st->req.nhdrs = n;
    return &st->req;
}

/* The winning route's name, or "-" when none matches. */
static const char *match(const struct routes *rt, const char *method, const char *host,
                         const char *path, ...)
{
    struct req_store st;
    va_list ap;
    int i;

    va_start(ap, path);
    i = routes_match(rt, req_v(&st, method, host, path, ap));
    va_end(ap);
    return i < 0 ? "-" : routes_name(rt, i);
}

/* ---- Precedence ------------------------------------------------------------ */

START_TEST(test_exact_host_beats_wildcard_beats_no_host)
{
    struct routes_spec s[] = {
        {.name = "none", .path_prefix = "/"},
        {.name = "wild", .host = "*.example.com", .path_prefix = "/"},
        {.name = "exact", .host = "api.example.com", .path_prefix = "/"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "api.example.com", "/x", NULL), "exact");
    ck_assert_str_eq(match(rt, "GET", "web.example.com", "/x", NULL), "wild");
    ck_assert_str_eq(match(rt, "GET", "example.org", "/x", NULL), "none");
    ck_assert_str_eq(match(rt, "GET", NULL, "/x", NULL), "none");
    routes_free(rt);
}
END_TEST

START_TEST(test_longer_wildcard_wins_whatever_the_order)
{
    struct routes_spec s[] = {
        {.name = "short", .host = "*.example.com"},
        {.name = "long", .host = "*.eu.example.com"},
        {.name = "longest", .host = "*.db.eu.example.com"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "a.db.eu.example.com", "/", NULL), "longest");
    ck_assert_str_eq(match(rt, "GET", "x.a.db.eu.example.com", "/", NULL), "longest");
    ck_assert_str_eq(match(rt, "GET", "db.eu.example.com", "/", NULL), "long");
    ck_assert_str_eq(match(rt, "GET", "a.eu.example.com", "/", NULL), "long");
    ck_assert_str_eq(match(rt, "GET", "eu.example.com", "/", NULL), "short");
    ck_assert_str_eq(match(rt, "GET", "example.com", "/", NULL), "-");
    routes_free(rt);
}
END_TEST

START_TEST(test_host_outranks_path)
{
    struct routes_spec s[] = {
        {.name = "login", .path = "/login"},
        {.name = "wild-any", .host = "*.example.com"},
        {.name = "api-any", .host = "api.example.com"},
    };
    struct routes *rt = BUILD(s);

    /* An exact path without a host loses to any host that fits, even one without a path. */
    ck_assert_str_eq(match(rt, "GET", "api.example.com", "/login", NULL), "api-any");
    ck_assert_str_eq(match(rt, "GET", "www.example.com", "/login", NULL), "wild-any");
    ck_assert_str_eq(match(rt, "GET", "example.com", "/login", NULL), "login");
    routes_free(rt);
}
END_TEST

START_TEST(test_exact_path_beats_longest_prefix_beats_no_path)
{
    struct routes_spec s[] = {
        {.name = "nopath"},
        {.name = "root", .path_prefix = "/"},
        {.name = "users", .path_prefix = "/users"},
        {.name = "users-me", .path_prefix = "/users/me"},
        {.name = "users-exact", .path = "/users"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "h", "/users", NULL), "users-exact");
    ck_assert_str_eq(match(rt, "GET", "h", "/users/", NULL), "users");
    ck_assert_str_eq(match(rt, "GET", "h", "/users/7", NULL), "users");
    ck_assert_str_eq(match(rt, "GET", "h", "/users/me", NULL), "users-me");
    ck_assert_str_eq(match(rt, "GET", "h", "/users/me/x", NULL), "users-me");
    /* "/" is a prefix (of length 1): it ranks above no path. */
    ck_assert_str_eq(match(rt, "GET", "h", "/other", NULL), "root");
    ck_assert_str_eq(match(rt, "GET", "h", "/", NULL), "root");
    /* A target that is not a path ("*" of OPTIONS) meets only routes without a path. */
    ck_assert_str_eq(match(rt, "OPTIONS", "h", "*", NULL), "nopath");
    ck_assert_str_eq(match(rt, "GET", "h", "", NULL), "nopath");
    routes_free(rt);
}
END_TEST

START_TEST(test_method_condition_beats_header_count)
{
    static const struct routes_header two[] = {{"X-A", "1"}, {"X-B", "1"}};
    struct routes_spec s[] = {
        {.name = "headers", .path_prefix = "/api", HEADERS(two)},
        {.name = "get", .path_prefix = "/api", METHODS(GET)},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "h", "/api", "X-A: 1", "X-B: 1", NULL), "get");
    ck_assert_str_eq(match(rt, "POST", "h", "/api", "X-A: 1", "X-B: 1", NULL), "headers");
    ck_assert_str_eq(match(rt, "POST", "h", "/api", "X-A: 1", NULL), "-");
    routes_free(rt);
}
END_TEST

START_TEST(test_list_length_of_methods_does_not_matter)
{
    struct routes_spec s[] = {
        {.name = "two", .path_prefix = "/api", METHODS(GET_HEAD)},
        {.name = "one", .path_prefix = "/api", METHODS(GET)},
    };
    struct routes *rt = BUILD(s);

    /* One method condition each: file order decides. */
    ck_assert_str_eq(match(rt, "GET", "h", "/api", NULL), "two");
    ck_assert_str_eq(match(rt, "HEAD", "h", "/api", NULL), "two");
    ck_assert_str_eq(match(rt, "POST", "h", "/api", NULL), "-");
    routes_free(rt);
}
END_TEST

START_TEST(test_more_headers_win_then_file_order)
{
    static const struct routes_header a[] = {{"X-A", "1"}};
    static const struct routes_header b[] = {{"X-B", "1"}};
    static const struct routes_header ab[] = {{"X-A", "1"}, {"X-B", "1"}};
    struct routes_spec s[] = {
        {.name = "plain", .path_prefix = "/"},
        {.name = "a", .path_prefix = "/", HEADERS(a)},
        {.name = "b", .path_prefix = "/", HEADERS(b)},
        {.name = "ab", .path_prefix = "/", HEADERS(ab)},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-A: 1", "X-B: 1", NULL), "ab");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-B: 1", NULL), "b");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-A: 1", NULL), "a");
    ck_assert_str_eq(match(rt, "GET", "h", "/", NULL), "plain");
    routes_free(rt);
}
END_TEST

START_TEST(test_earlier_route_wins_a_full_tie)
{
    struct routes_spec s[] = {
        {.name = "first", .host = "API.example.com", .path_prefix = "/p"},
        {.name = "second", .host = "api.example.com", .path_prefix = "/p/"},
        {.name = "third", .host = "api.example.com", .path_prefix = "/p"},
    };
    struct routes_spec t[] = {s[2], s[1], s[0]};
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "api.example.com", "/p/x", NULL), "first");
    routes_free(rt);
    rt = BUILD(t);
    ck_assert_str_eq(match(rt, "GET", "api.example.com", "/p/x", NULL), "third");
    routes_free(rt);
}
END_TEST

/* ---- Paths, hosts ---------------------------------------------------------- */

START_TEST(test_prefix_matches_whole_segments_only)
{
    struct routes_spec s[] = {
        {.name = "payments", .path_prefix = "/payments"},
        {.name = "slash", .path_prefix = "/admin/"},
        {.name = "login", .path = "/login"},
        {.name = "dir", .path = "/dir/"},
        {.name = "root", .path = "/"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "h", "/payments", NULL), "payments");
    ck_assert_str_eq(match(rt, "GET", "h", "/payments/", NULL), "payments");
    ck_assert_str_eq(match(rt, "GET", "h", "/payments/x/y", NULL), "payments");
    ck_assert_str_eq(match(rt, "GET", "h", "/paymentsx", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "h", "/payment", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "h", "/x/payments", NULL), "-");
    /* A trailing "/" of a prefix is ignored. */
    ck_assert_str_eq(match(rt, "GET", "h", "/admin", NULL), "slash");
    ck_assert_str_eq(match(rt, "GET", "h", "/admin/x", NULL), "slash");
    ck_assert_str_eq(match(rt, "GET", "h", "/administrator", NULL), "-");
    /* Exact paths are exact, a trailing "/" included. */
    ck_assert_str_eq(match(rt, "GET", "h", "/login", NULL), "login");
    ck_assert_str_eq(match(rt, "GET", "h", "/login/", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "h", "/login/x", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "h", "/dir/", NULL), "dir");
    ck_assert_str_eq(match(rt, "GET", "h", "/dir", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "h", "/", NULL), "root");
    ck_assert_str_eq(match(rt, "GET", "h", "/x", NULL), "-");
    routes_free(rt);
}
END_TEST

START_TEST(test_wildcard_takes_one_or_more_labels_never_the_bare_domain)
{
    struct routes_spec s[] = {
        {.name = "wild", .host = "*.Example.com"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "a.example.com", "/", NULL), "wild");
    ck_assert_str_eq(match(rt, "GET", "a.b.c.example.com", "/", NULL), "wild");
    ck_assert_str_eq(match(rt, "GET", "A.EXAMPLE.COM:443", "/", NULL), "wild");
    ck_assert_str_eq(match(rt, "GET", "example.com", "/", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", ".example.com", "/", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "aexample.com", "/", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "a.example.com.evil", "/", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "com", "/", NULL), "-");
    routes_free(rt);
}
END_TEST

START_TEST(test_host_ignores_case_port_and_a_trailing_dot)
{
    struct routes_spec s[] = {
        {.name = "api", .host = "api.example.com"},
        {.name = "ip", .host = "10.0.0.1"},
        {.name = "fallback"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "api.example.com", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "API.Example.COM", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "api.example.com:8080", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "api.example.com:", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "api.example.com.", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "api.example.com.:80", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "10.0.0.1:80", "/", NULL), "ip");
    ck_assert_str_eq(match(rt, "GET", "api.example.com..", "/", NULL), "fallback");
    ck_assert_str_eq(match(rt, "GET", "api.example.com:http", "/", NULL), "fallback");
    ck_assert_str_eq(match(rt, "GET", "api.example.co", "/", NULL), "fallback");
    ck_assert_str_eq(match(rt, "GET", "[::1]:8080", "/", NULL), "fallback");
    ck_assert_str_eq(match(rt, "GET", "", "/", NULL), "fallback");
    /* Lowercased eight bytes at a time: '@' and '[' (either side of A-Z) stay themselves. */
    ck_assert_str_eq(match(rt, "GET", "api.example.coM", "/", NULL), "api");
    ck_assert_str_eq(match(rt, "GET", "api.example.co@", "/", NULL), "fallback");
    ck_assert_str_eq(match(rt, "GET", "api.example.co[", "/", NULL), "fallback");
    ck_assert_str_eq(match(rt, "GET", NULL, "/", NULL), "fallback");
    routes_free(rt);
}
END_TEST

/* Every letter, in both cases, at every place of an eight-byte word and in the tail. */
START_TEST(test_host_case_folding_of_every_letter)
{
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz";
    char lower[64], upper[64];
    struct routes_spec s[2] = {{.name = "h", .host = lower}, {.name = "fallback"}};
    struct routes *rt;

    for (size_t shift = 0; shift < 8; shift++) {
        size_t n = 0;

        for (size_t k = 0; k < shift; k++)
            lower[n++] = 'x';
        memcpy(lower + n, alpha, 26);
        n += 26;
        memcpy(lower + n, ".example.com", 13);
        for (size_t k = 0; lower[k]; k++)
            upper[k] = lower[k] >= 'a' && lower[k] <= 'z' ? (char)(lower[k] - 32) : lower[k];
        upper[strlen(lower)] = '\0';
        rt = BUILD(s);
        ck_assert_str_eq(match(rt, "GET", upper, "/", NULL), "h");
        upper[shift] = '@'; /* 'A' - 1 */
        ck_assert_str_eq(match(rt, "GET", upper, "/", NULL), "fallback");
        upper[shift] = '['; /* 'Z' + 1 */
        ck_assert_str_eq(match(rt, "GET", upper, "/", NULL), "fallback");
        upper[shift] = (char)0xc1; /* 'A' with the high bit: not a letter */
        ck_assert_str_eq(match(rt, "GET", upper, "/", NULL), "fallback");
        routes_free(rt);
    }
}
END_TEST

START_TEST(test_overlong_host_matches_only_routes_without_host)
{
    char host[400];
    struct routes_spec s[] = {
        {.name = "wild", .host = "*.example.com"},
        {.name = "any"},
    };
    struct routes *rt = BUILD(s);

    memset(host, 'a', sizeof(host));
    strcpy(host + 255 - strlen(".example.com"), ".example.com");
    ck_assert_str_eq(match(rt, "GET", host, "/", NULL), "wild"); /* 255 bytes */
    memset(host, 'a', sizeof(host));
    strcpy(host + 256 - strlen(".example.com"), ".example.com");
    ck_assert_str_eq(match(rt, "GET", host, "/", NULL), "any"); /* 256 bytes */
    routes_free(rt);
}
END_TEST

/* ---- Methods and headers ----------------------------------------------------- */

START_TEST(test_method_or_header_miss_falls_through_to_less_specific)
{
    static const struct routes_header v2[] = {{"X-Api-Version", "2"}};
    struct routes_spec s[] = {
        {.name = "users-v1", .path_prefix = "/users"},
        {.name = "users-v2", .path_prefix = "/users", METHODS(GET_HEAD), HEADERS(v2)},
        {.name = "users-get", .path_prefix = "/users", METHODS(GET)},
        {.name = "host-post", .host = "api.example.com", .path = "/users/7", METHODS(POST)},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "h", "/users/7", "X-Api-Version: 2", NULL), "users-v2");
    ck_assert_str_eq(match(rt, "HEAD", "h", "/users/7", "X-Api-Version: 2", NULL), "users-v2");
    ck_assert_str_eq(match(rt, "GET", "h", "/users/7", "X-Api-Version: 1", NULL), "users-get");
    ck_assert_str_eq(match(rt, "GET", "h", "/users/7", NULL), "users-get");
    ck_assert_str_eq(match(rt, "HEAD", "h", "/users/7", NULL), "users-v1");
    ck_assert_str_eq(match(rt, "POST", "h", "/users/7", "X-Api-Version: 2", NULL), "users-v1");
    /* Methods are case-sensitive. */
    ck_assert_str_eq(match(rt, "get", "h", "/users/7", "X-Api-Version: 2", NULL), "users-v1");
    /* Falls through a host bucket too: the exact host's POST-only route, then no host. */
    ck_assert_str_eq(match(rt, "POST", "api.example.com", "/users/7", NULL), "host-post");
    ck_assert_str_eq(match(rt, "GET", "api.example.com", "/users/7", NULL), "users-get");
    routes_free(rt);
}
END_TEST

START_TEST(test_header_name_is_case_insensitive_value_exact_any_line)
{
    static const struct routes_header v2[] = {{"X-Api-Version", "2"}};
    static const struct routes_header empty[] = {{"X-Empty", ""}};
    struct routes_spec s[] = {
        {.name = "v2", HEADERS(v2)},
        {.name = "empty", HEADERS(empty)},
        {.name = "other"},
    };
    struct routes *rt = BUILD(s);

    ck_assert_str_eq(match(rt, "GET", "h", "/", "x-api-version: 2", NULL), "v2");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-API-VERSION: 2", NULL), "v2");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-Api-Version: 1", "X-Api-Version: 2", NULL),
                     "v2");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-Api-Version: 22", NULL), "other");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-Api-Version: ", NULL), "other");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-Api-Versio: 2", NULL), "other");
    /* An empty value is a value: the field must be there, empty. */
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-Empty: ", NULL), "empty");
    ck_assert_str_eq(match(rt, "GET", "h", "/", "X-Empty: 0", NULL), "other");
    routes_free(rt);
}
END_TEST

static int header_calls;

static bool only_beta(const void *ctx, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    header_calls++;
    ck_assert_ptr_eq(ctx, &header_calls);
    return name_len == 6 && strncasecmp(name, "x-beta", 6) == 0 && value_len == 3 &&
           memcmp(value, "yes", 3) == 0;
}

START_TEST(test_header_callback_replaces_the_array)
{
    static const struct routes_header beta[] = {{"X-Beta", "yes"}};
    static const struct routes_header gamma[] = {{"X-Gamma", "yes"}};
    struct routes_spec s[] = {
        {.name = "gamma", HEADERS(gamma)},
        {.name = "beta", HEADERS(beta)},
        {.name = "other"},
    };
    struct routes *rt = BUILD(s);
    struct routes_req req = {.method = "GET", .method_len = 3, .path = "/", .path_len = 1};

    req.header_is = only_beta;
    req.ctx = &header_calls;
    ck_assert_int_eq(routes_match(rt, &req), 1);
    ck_assert_int_eq(header_calls, 2);
    routes_free(rt);
}
END_TEST

/* ---- Explain --------------------------------------------------------------- */

static char *explain(const struct routes *rt, int *win, const char *method, const char *host,
                     const char *path, ...)
{
    struct req_store st;
    struct sbuf out;
    va_list ap;

    sb_init(&out);
    va_start(ap, path);
    *win = routes_explain(rt, req_v(&st, method, host, path, ap), &out);
    va_end(ap);
    return sb_steal(&out);
}

START_TEST(test_explain_names_the_winner_and_why_each_better_route_lost)
{
    static const struct routes_header v2[] = {{"X-Api-Version", "2"}};
    struct routes_spec s[] = {
        {.name = "fallback-ish"},
        {.name = "users-v1", .path_prefix = "/users"},
        {.name = "users-v2", .path_prefix = "/users", METHODS(GET_HEAD), HEADERS(v2)},
        {.name = "users-post", .path_prefix = "/users", METHODS(POST)},
        {.name = "user-7", .path = "/users/7/"},
        {.name = "payments", .path_prefix = "/payments"},
        {.name = "admin-users", .host = "admin.example.com", .path_prefix = "/users"},
        {.name = "admin-all", .host = "admin.example.com"},
        {.name = "wild-pay", .host = "*.example.com", .path_prefix = "/payments"},
        {.name = "admin-pay", .host = "admin.example.com", .path_prefix = "/payments"},
    };
    struct routes *rt = BUILD(s);
    int win;
    char *text =
        explain(rt, &win, "GET", "API.example.com:8080", "/users/7", "X-Api-Version: 1", NULL);

    ck_assert_int_eq(win, 1);
    ck_assert_str_eq(text, "match users-v1\n"
                           "skip admin-users: host admin.example.com does not match "
                           "api.example.com\n"
                           "skip admin-all: host admin.example.com does not match "
                           "api.example.com\n"
                           "skip wild-pay: path_prefix /payments does not cover /users/7\n"
                           "skip user-7: path /users/7/ is not /users/7\n"
                           "skip payments: path_prefix /payments does not cover /users/7\n"
                           "skip users-v2: header X-Api-Version is not \"2\"\n"
                           "skip users-post: method GET not in POST\n"
                           "skip 1 route for other hosts\n");
    free(text);

    text = explain(rt, &win, "DELETE", "admin.example.com", "/users", NULL);
    ck_assert_int_eq(win, 6);
    ck_assert_str_eq(text, "match admin-users\n"
                           "skip admin-pay: path_prefix /payments does not cover /users\n");
    free(text);

    text = explain(rt, &win, "PUT", NULL, "/users", NULL);
    ck_assert_int_eq(win, 1);
    ck_assert_str_eq(text, "match users-v1\n"
                           "skip admin-users: host admin.example.com does not match (none)\n"
                           "skip admin-all: host admin.example.com does not match (none)\n"
                           "skip user-7: path /users/7/ is not /users\n"
                           "skip payments: path_prefix /payments does not cover /users\n"
                           "skip users-v2: method PUT not in GET HEAD\n"
                           "skip users-post: method PUT not in POST\n"
                           "skip 2 routes for other hosts\n");
    free(text);
    routes_free(rt);

    struct routes_spec one[] = {{.name = "only", .host = "a.example.com", .path = "/x"}};
    struct routes_req bare = {0};
    struct sbuf out;

    rt = BUILD(one);
    text = explain(rt, &win, "GET", "a.example.com", "/y", NULL);
    ck_assert_int_eq(win, -1);
    ck_assert_str_eq(text, "no route\nskip only: path /x is not /y\n");
    free(text);
    /* No method, host, path or header at all. */
    sb_init(&out);
    ck_assert_int_eq(routes_explain(rt, &bare, &out), -1);
    ck_assert_str_eq(out.s, "no route\nskip 1 route for other hosts\n");
    sb_free(&out);
    routes_free(rt);
}
END_TEST

/* ---- Build errors ---------------------------------------------------------- */

static void refused(const struct routes_spec *s, size_t n, int index, const char *words)
{
    struct routes_error err = {.index = -7};
    struct routes *rt = routes_build(s, n, &err);

    ck_assert_msg(rt == NULL, "built a table that has \"%s\"", words);
    ck_assert_int_eq(err.index, index);
    ck_assert_msg(strstr(err.msg, words) != NULL, "\"%s\" lacks \"%s\"", err.msg, words);
}

START_TEST(test_build_refuses_invalid_routes_with_their_index)
{
    static const char *empty_method[] = {"GET", ""};
    static const char *bad_method[] = {"GE T"};
    static const struct routes_header dup[] = {{"X-A", "1"}, {"x-a", "2"}};
    static const struct routes_header noname[] = {{"", "1"}};
    static const struct routes_header novalue[] = {{"X-A", NULL}};
    struct routes_spec ok = {.name = "ok"};
    struct {
        struct routes_spec s;
        const char *words;
    } cases[] = {
        {{.name = "ok"}, "already used by route 0"},
        {{.name = ""}, "no name"},
        {{.name = NULL}, "no name"},
        {{.name = "x", .path = "/a", .path_prefix = "/a"}, "both path and path_prefix"},
        {{.name = "x", .host = "api..example.com"}, "empty label"},
        {{.name = "x", .host = ".example.com"}, "empty label"},
        {{.name = "x", .host = "example.com."}, "empty label"},
        {{.name = "x", .host = ""}, "host is empty"},
        {{.name = "x", .host = "api.*.com"}, "only as the leftmost label"},
        {{.name = "x", .host = "*api.example.com"}, "whole label"},
        {{.name = "x", .host = "*"}, "whole label"},
        {{.name = "x", .host = "*."}, "needs a domain"},
        {{.name = "x", .host = "*.*.example.com"}, "only as the leftmost label"},
        {{.name = "x", .host = "api.example.com:8080"}, "cannot have: ':'"},
        {{.name = "x", .path = "users"}, "must start with \"/\""},
        {{.name = "x", .path_prefix = ""}, "must start with \"/\""},
        {{.name = "x", .path_prefix = "/a//b"}, "not canonical"},
        {{.name = "x", .path = "/a/../b"}, "not canonical"},
        {{.name = "x", .path_prefix = "/a/."}, "not canonical"},
        {{.name = "x", .path = "/a?b=1"}, "query"},
        {{.name = "x", METHODS(empty_method)}, "method 2"},
        {{.name = "x", METHODS(bad_method)}, "method 1"},
        {{.name = "x", HEADERS(dup)}, "listed twice"},
        {{.name = "x", HEADERS(noname)}, "header 1"},
        {{.name = "x", HEADERS(novalue)}, "no value"},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct routes_spec s[3] = {ok, {.name = "fine", .host = "*.example.com"}, cases[k].s};

        refused(s, 3, 2, cases[k].words);
    }
}
END_TEST

START_TEST(test_empty_table_matches_nothing)
{
    struct routes *rt = routes_build(NULL, 0, NULL);

    ck_assert_ptr_nonnull(rt);
    ck_assert_uint_eq(routes_count(rt), 0);
    ck_assert_str_eq(match(rt, "GET", "h", "/", NULL), "-");
    routes_free(rt);
}
END_TEST

/* ---- Randomized cross-check against a linear reference ----------------------- */

/*
 * The reference: routes.h's definition read literally, one route at a time.
 * It shares no code with routes.c.
 */
struct ref_key {
    int host_class, host_len, path_class, path_len, methods, headers, index;
};

static size_t ref_host(const char *h, char *out)
{
    size_t n;
    const char *colon;

    if (h == NULL)
        return 0;
    n = strlen(h);
    if (h[0] == '[') {
        const char *e = strchr(h, ']');

        if (e)
            n = (size_t)(e - h) + 1;
    } else if ((colon = strrchr(h, ':')) != NULL &&
               strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
        n = (size_t)(colon - h);
    }
    if (n > 0 && h[n - 1] == '.')
        n--;
    if (n == 0 || n > 255)
        return 0;
    for (size_t k = 0; k < n; k++)
        out[k] = (char)((h[k] >= 'A' && h[k] <= 'Z') ? h[k] + 32 : h[k]);
    out[n] = '\0';
    return n;
}

static bool ref_matches(const struct routes_spec *s, const char *method, const char *host,
                        const char *path, const char *const *hn, const char *const *hv, size_t nh,
                        struct ref_key *key)
{
    char h[300], rh[300];
    size_t n = ref_host(host, h);

    memset(key, 0, sizeof(*key));
    if (s->host != NULL) {
        size_t rn = strlen(s->host);

        for (size_t k = 0; k <= rn; k++)
            rh[k] = (char)((s->host[k] >= 'A' && s->host[k] <= 'Z') ? s->host[k] + 32 : s->host[k]);
        if (n == 0)
            return false;
        if (rh[0] == '*') {
            size_t sl = rn - 1;

            if (!(n > sl && strcmp(h + n - sl, rh + 1) == 0))
                return false;
            key->host_class = 1;
            key->host_len = (int)rn;
        } else {
            if (strcmp(h, rh) != 0)
                return false;
            key->host_class = 2;
        }
    }
    if (s->path != NULL) {
        if (strcmp(path, s->path) != 0)
            return false;
        key->path_class = 2;
    } else if (s->path_prefix != NULL) {
        size_t pl = strlen(s->path_prefix);

        if (pl > 1 && s->path_prefix[pl - 1] == '/')
            pl--;
        if (pl == 1) {
            if (path[0] != '/')
                return false;
        } else if (strncmp(path, s->path_prefix, pl) != 0 ||
                   (path[pl] != '\0' && path[pl] != '/')) {
            return false;
        }
        key->path_class = 1;
        key->path_len = (int)pl;
    }
    if (s->nmethods > 0) {
        bool any = false;

        for (size_t k = 0; k < s->nmethods; k++)
            any |= strcmp(s->methods[k], method) == 0;
        if (!any)
            return false;
        key->methods = 1;
    }
    for (size_t k = 0; k < s->nheaders; k++) {
        bool any = false;

        for (size_t j = 0; j < nh; j++)
            any |= strcasecmp(hn[j], s->headers[k].name) == 0 &&
                   strcmp(hv[j], s->headers[k].value) == 0;
        if (!any)
            return false;
    }
    key->headers = (int)s->nheaders;
    return true;
}

static bool ref_above(const struct ref_key *a, const struct ref_key *b)
{
    int x[] = {a->host_class, a->host_len, a->path_class, a->path_len,
               a->methods,    a->headers,  -a->index};
    int y[] = {b->host_class, b->host_len, b->path_class, b->path_len,
               b->methods,    b->headers,  -b->index};

    for (size_t k = 0; k < sizeof(x) / sizeof(x[0]); k++)
        if (x[k] != y[k])
            return x[k] > y[k];
    return false;
}

static int ref_match(const struct routes_spec *s, size_t n, const char *method, const char *host,
                     const char *path, const char *const *hn, const char *const *hv, size_t nh)
{
    struct ref_key best = {0}, key;
    int win = -1;

    for (size_t i = 0; i < n; i++) {
        if (!ref_matches(&s[i], method, host, path, hn, hv, nh, &key))
            continue;
        key.index = (int)i;
        if (win < 0 || ref_above(&key, &best)) {
            best = key;
            win = (int)i;
        }
    }
    return win;
}

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

#define PICK(a) (a)[rnd(sizeof(a) / sizeof((a)[0]))]

static const char *const r_hosts[] = {
    "a.com",   "b.a.com",   "x.b.a.com", "A.com",       "c.com",
    "*.a.com", "*.b.a.com", "*.com",     "*.x.b.a.com",
};
static const char *const q_hosts[] = {
    "a.com",   "A.COM:80", "b.a.com", "x.b.a.com", "y.x.b.a.com", "q.a.com.", "com",
    "c.com:1", "a.com:x",  ".a.com",  "b.A.com.",  "[::1]:80",    "",         "z.c.com",
};
static const char *const segs[] = {"a", "b", "ab", "c"};
static const char *const meths[] = {"GET", "POST", "HEAD"};
static const char *const hnames[] = {"X-A", "X-B", "X-C"};
static const char *const hvals[] = {"1", "2"};

static void rnd_path(char *p, bool canonical)
{
    int depth = (int)rnd(4);

    strcpy(p, "");
    for (int d = 0; d < depth; d++) {
        strcat(p, "/");
        strcat(p, PICK(segs));
    }
    if (depth == 0 || rnd(4) == 0)
        strcat(p, "/");
    if (!canonical && rnd(10) == 0)
        strcpy(p, PICK(((const char *[]){"*", "", "//a", "/a//b", "/abc", "/a/b/c/a/b"})));
}

struct rnd_route {
    char path[64];
    const char *methods[3];
    struct routes_header headers[3];
    char name[16];
};

START_TEST(test_random_tables_agree_with_linear_reference)
{
    enum { SETS = 3000, REQS = 60, MAXR = 24 };
    struct rnd_route rr[MAXR];
    struct routes_spec s[MAXR];
    long checked = 0, matched = 0;

    rng_state = 0x9e3779b97f4a7c15ull;
    for (int set = 0; set < SETS; set++) {
        size_t n = rnd(MAXR) + 1;
        struct routes *rt;

        for (size_t i = 0; i < n; i++) {
            struct rnd_route *r = &rr[i];
            uint32_t kind = rnd(3);

            memset(&s[i], 0, sizeof(s[i]));
            snprintf(r->name, sizeof(r->name), "r%zu", i);
            s[i].name = r->name;
            if (rnd(3) != 0)
                s[i].host = PICK(r_hosts);
            rnd_path(r->path, true);
            if (kind == 1)
                s[i].path = r->path;
            else if (kind == 2)
                s[i].path_prefix = r->path;
            s[i].nmethods = rnd(3) == 0 ? rnd(3) + 1 : 0;
            for (size_t k = 0; k < s[i].nmethods; k++)
                r->methods[k] = PICK(meths);
            s[i].methods = r->methods;
            s[i].nheaders = rnd(2) == 0 ? rnd(3) + 1 : 0;
            for (size_t k = 0; k < s[i].nheaders; k++)
                r->headers[k] = (struct routes_header){hnames[k], PICK(hvals)};
            s[i].headers = r->headers;
        }
        rt = build(s, n);
        for (int q = 0; q < REQS; q++) {
            char path[64];
            const char *hn[4], *hv[4];
            struct routes_hdr hd[4];
            size_t nh = rnd(5);
            const char *host = rnd(8) == 0 ? NULL : PICK(q_hosts);
            const char *method = PICK(meths);
            struct routes_req req;
            int want, got;

            rnd_path(path, false);
            for (size_t k = 0; k < nh; k++) {
                hn[k] = PICK(((const char *[]){"X-A", "x-a", "X-B", "x-c", "X-D"}));
                hv[k] = PICK(hvals);
                hd[k] = (struct routes_hdr){hn[k], strlen(hn[k]), hv[k], 1};
            }
            req = (struct routes_req){.method = method,
                                      .method_len = strlen(method),
                                      .host = host,
                                      .host_len = host ? strlen(host) : 0,
                                      .path = path,
                                      .path_len = strlen(path),
                                      .hdrs = hd,
                                      .nhdrs = nh};
            want = ref_match(s, n, method, host, path, hn, hv, nh);
            got = routes_match(rt, &req);
            ck_assert_msg(want == got, "set %d req %d: %s %s %s: reference %d, matcher %d", set, q,
                          method, host ? host : "(none)", path, want, got);
            if (q % 8 == 0) {
                struct sbuf out;

                sb_init(&out);
                ck_assert_int_eq(routes_explain(rt, &req, &out), got);
                sb_free(&out);
            }
            checked++;
            matched += got >= 0;
        }
        routes_free(rt);
    }
    /* The sets are not degenerate: many requests match, many do not. */
    ck_assert_int_gt(matched, checked / 5);
    ck_assert_int_lt(matched, checked * 4 / 5);
}
END_TEST

/* 10,000 routes (1,000 hosts x 10 prefixes): each request finds its own. */
START_TEST(test_large_table_finds_every_route)
{
    enum { HOSTS = 1000, PREFIXES = 10 };
    struct routes_spec *s = calloc(HOSTS * PREFIXES, sizeof(*s));
    char(*names)[24] = calloc(HOSTS * PREFIXES, 24);
    char(*hosts)[32] = calloc(HOSTS, 32);
    char(*paths)[16] = calloc(PREFIXES, 16);
    struct routes *rt;

    for (int p = 0; p < PREFIXES; p++)
        snprintf(paths[p], 16, "/svc%d", p);
    for (int h = 0; h < HOSTS; h++) {
        snprintf(hosts[h], 32, "h%d.example.com", h);
        for (int p = 0; p < PREFIXES; p++) {
            int i = h * PREFIXES + p;

            snprintf(names[i], 24, "h%d-svc%d", h, p);
            s[i] =
                (struct routes_spec){.name = names[i], .host = hosts[h], .path_prefix = paths[p]};
        }
    }
    rt = build(s, HOSTS * PREFIXES);
    for (int h = 0; h < HOSTS; h++) {
        for (int p = 0; p < PREFIXES; p++) {
            char host[40], path[40], name[24];

            snprintf(host, sizeof(host), "H%d.Example.com:8080", h);
            snprintf(path, sizeof(path), "/svc%d/items/%d", p, h);
            snprintf(name, sizeof(name), "h%d-svc%d", h, p);
            ck_assert_str_eq(match(rt, "GET", host, path, NULL), name);
        }
    }
    ck_assert_str_eq(match(rt, "GET", "h1000.example.com", "/svc1", NULL), "-");
    ck_assert_str_eq(match(rt, "GET", "h1.example.com", "/svc10", NULL), "-");
    routes_free(rt);
    free(s);
    free(names);
    free(hosts);
    free(paths);
}
END_TEST

static Suite *routes_suite(void)
{
    Suite *s = suite_create("routes");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_exact_host_beats_wildcard_beats_no_host);
    tcase_add_test(tc, test_longer_wildcard_wins_whatever_the_order);
    tcase_add_test(tc, test_host_outranks_path);
    tcase_add_test(tc, test_exact_path_beats_longest_prefix_beats_no_path);
    tcase_add_test(tc, test_method_condition_beats_header_count);
    tcase_add_test(tc, test_list_length_of_methods_does_not_matter);
    tcase_add_test(tc, test_more_headers_win_then_file_order);
    tcase_add_test(tc, test_earlier_route_wins_a_full_tie);
    tcase_add_test(tc, test_prefix_matches_whole_segments_only);
    tcase_add_test(tc, test_wildcard_takes_one_or_more_labels_never_the_bare_domain);
    tcase_add_test(tc, test_host_ignores_case_port_and_a_trailing_dot);
    tcase_add_test(tc, test_host_case_folding_of_every_letter);
    tcase_add_test(tc, test_overlong_host_matches_only_routes_without_host);
    tcase_add_test(tc, test_method_or_header_miss_falls_through_to_less_specific);
    tcase_add_test(tc, test_header_name_is_case_insensitive_value_exact_any_line);
    tcase_add_test(tc, test_header_callback_replaces_the_array);
    tcase_add_test(tc, test_explain_names_the_winner_and_why_each_better_route_lost);
    tcase_add_test(tc, test_build_refuses_invalid_routes_with_their_index);
    tcase_add_test(tc, test_empty_table_matches_nothing);
    tcase_add_test(tc, test_random_tables_agree_with_linear_reference);
    tcase_add_test(tc, test_large_table_finds_every_route);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(routes_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
