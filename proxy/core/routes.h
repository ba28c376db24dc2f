/*
 * routes.h - the L7 route matcher (issue 17): a table of routes compiled
 * once, for the routing snapshot, and matched per request without a scan of
 * the table. Groundwork only: nothing in the config or on the request path
 * uses it yet.
 *
 * A route matches a request when every condition it has holds:
 *   host         exact, case-insensitive ("api.example.com"), or a wildcard
 *                "*.example.com": one or more labels in place of the "*",
 *                never the bare "example.com". The request's Host port is
 *                ignored, and so is one trailing dot ("api.example.com.").
 *                A request without a Host, or with one longer than 255 bytes,
 *                matches no route that has a host.
 *   path         exact: the request path is this string, byte for byte.
 *   path_prefix  whole segments: "/payments" matches "/payments",
 *                "/payments/" and "/payments/x", never "/paymentsx". A
 *                trailing "/" of the prefix is ignored ("/payments/" is
 *                "/payments"), "/" matches every path. At most one of path
 *                and path_prefix.
 *   methods      the request method is one of these (case-sensitive, RFC
 *                9110 9.1).
 *   headers      for each (name, value): some field line of the request with
 *                that name (case-insensitive) has exactly that value
 *                (case-sensitive). All must hold.
 * The path given to the matcher is the canonical one (proxy/core/path.h),
 * without the query; a path that does not start with "/" matches only
 * routes without a path.
 *
 * Precedence, among the routes that match (the Gateway API's HTTPRoute
 * order, so the winner is predictable without reading the file's order);
 * each key only breaks the ties of the ones before it:
 *   1. host: an exact host, then a wildcard with the longer suffix
 *      ("*.eu.example.com" before "*.example.com"), then no host;
 *   2. path: an exact path, then the longer path prefix (in bytes, trailing
 *      "/" ignored; "/" is a prefix of length 1), then no path;
 *   3. a method condition: a route with `methods` before one without (how
 *      many methods it lists does not matter: it is one condition);
 *   4. more header conditions before fewer;
 *   5. the earlier route in the file.
 * Keys 3 and 4 follow the Gateway API's "method match" then "largest
 * number of header matches": a route with methods and no header condition
 * wins over one with two header conditions and no methods.
 * A route whose host and path fit but whose method or headers do not is
 * passed over and a less specific one may win (`/users` GET-only on v2,
 * `/users` any method on v1: a POST goes to v1).
 *
 * Cost: routes_build is O(routes x segments) plus sorting each node's
 * candidates. routes_match takes one hash lookup for an exact host, one per
 * label of the host for wildcards (only for label counts some wildcard
 * has), and per host bucket a walk down the path's segment trie and back up
 * it, trying only candidates whose host and path fit, in precedence order:
 * the first whose method and headers hold wins.
 */
#ifndef VEER_ROUTES_H
#define VEER_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

struct sbuf;

/* One header condition of a route. */
struct routes_header {
    const char *name;
    const char *value;
};

/* One route as the config gives it; NULL or 0 means "no such condition". */
struct routes_spec {
    const char *name; /* unique */
    const char *host; /* "api.example.com" or "*.example.com" */
    const char *path; /* exact */
    const char *path_prefix;
    const char *const *methods;
    size_t nmethods;
    const struct routes_header *headers;
    size_t nheaders;
};

/* Why a table was refused: the index of the offending spec and a sentence. */
struct routes_error {
    int index;
    char msg[160];
};

/* One header field line of a request. */
struct routes_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/*
 * A request as the matcher sees it. Strings need not be NUL-terminated.
 * Headers come either from hdrs/nhdrs or, when header_is is set, from that
 * callback: does some field line named `name` have exactly `value`?
 */
struct routes_req {
    const char *method;
    size_t method_len;
    const char *host; /* the Host header as received (a port is allowed); NULL: none */
    size_t host_len;
    const char *path; /* canonical, without the query */
    size_t path_len;
    const struct routes_hdr *hdrs;
    size_t nhdrs;
    bool (*header_is)(const void *ctx, const char *name, size_t name_len, const char *value,
                      size_t value_len);
    const void *ctx;
};

struct routes;

/*
 * Compile specs[0..n) (file order: index i is the ith route). Every string
 * is copied; the caller keeps specs. Returns NULL and fills err when a spec
 * is invalid: an empty or duplicate name, both path and path_prefix, an
 * empty host label, a "*" other than a whole leftmost label, a character a
 * host name cannot have, a path that does not start with "/" or is not
 * canonical ("//", "." or ".." segments), an empty or non-token method, an
 * empty or repeated header name. The first invalid spec is reported.
 */
struct routes *routes_build(const struct routes_spec *specs, size_t n, struct routes_error *err);

void routes_free(struct routes *rt);

size_t routes_count(const struct routes *rt);

/* The name of route i (0 <= i < routes_count). */
const char *routes_name(const struct routes *rt, int i);

/*
 * The index of the route that wins for req, or -1 when none matches (the
 * caller then uses the listener's fallback pool). Reads rt only: any number
 * of threads may match against one table.
 */
int routes_match(const struct routes *rt, const struct routes_req *req);

/*
 * Explain routes_match for req, for `route explain`: appends text lines to
 * out and returns what routes_match returns. The first line is
 * "match NAME" or "no route". Then one line per route that would have won
 * had it matched (it ranks above the winner; every route when none matched),
 * in precedence order, saying the first condition that failed, checked in
 * the order host, path, method, headers:
 *   skip NAME: host H does not match REQHOST     (REQHOST "(none)": no Host)
 *   skip NAME: path P is not REQPATH
 *   skip NAME: path_prefix P does not cover REQPATH
 *   skip NAME: method M not in LIST
 *   skip NAME: header N is not "V"
 * Routes whose host does not fit are listed by name only when nothing else
 * failed (a host is all that kept them out); the others are counted in a
 * last line, "skip K route(s) for other hosts". Linear in the table: for the
 * admin command, never the request path.
 */
int routes_explain(const struct routes *rt, const struct routes_req *req, struct sbuf *out);

#endif
