/*
 * fuzz_path.c - libFuzzer target: the canonical request path
 * (path_canonical) and whole-segment prefix matching (path_prefix_match).
 * The input is a request path as the caller hands it over (the query
 * already cut off); input and output live in buffers of exactly their size,
 * so ASan sees any byte read or written past them.
 *
 * Always checked: no memory error; a buffer shorter than the input is
 * refused; an accepted path's canonical form is no longer than the input,
 * starts with '/', has no "//", no "." or ".." segment, no %2F, %5C or %00,
 * only upper-case escapes and no escaped unreserved character; it
 * canonicalizes to itself; canonicalizing in place gives the same answer.
 *
 * With -DVEER_FUZZ_ORACLE, also compared with references written the slow,
 * obvious way: the path decoded in full, then slashes merged, then RFC 3986
 * section 5.2.4's remove_dot_segments step by step on strings (refusing a
 * ".." that finds nothing to remove): both accept the same paths with the
 * same output, and a refusal for a bad escape is the same escape (or a
 * climb met before it). Prefix matching is compared with a reference built
 * from string equality and "starts with prefix + '/'", for prefixes cut from
 * the canonical path and from the input.
 */
#include "path.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, const uint8_t *in, size_t len)
{
    if (!ok) {
        fprintf(stderr, "fuzz_path: %s: '%.*s'\n", what, (int)len, (const char *)in);
        abort();
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int is_unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("-._~", c) != NULL;
}

/* The properties of a canonical path, checked on their own. */
static void check_form(const char *p, size_t n, const uint8_t *in, size_t len)
{
    check(n >= 1 && p[0] == '/', "does not start with '/'", in, len);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '/') {
            size_t e = i + 1;

            while (e < n && p[e] != '/')
                e++;
            check(e != i + 1 || e == n, "empty segment (\"//\")", in, len);
            check(!(e - i - 1 == 1 && p[i + 1] == '.'), "\".\" segment left", in, len);
            check(!(e - i - 1 == 2 && p[i + 1] == '.' && p[i + 2] == '.'), "\"..\" segment left",
                  in, len);
        }
        if (p[i] == '%') {
            int hi, lo, c;

            check(i + 2 < n, "escape cut short", in, len);
            hi = hexval((unsigned char)p[i + 1]);
            lo = hexval((unsigned char)p[i + 2]);
            check(hi >= 0 && lo >= 0, "bad escape in output", in, len);
            check(!(p[i + 1] >= 'a' && p[i + 1] <= 'f') && !(p[i + 2] >= 'a' && p[i + 2] <= 'f'),
                  "lower-case escape in output", in, len);
            c = hi << 4 | lo;
            check(c != '/' && c != '\\' && c != 0, "%2F, %5C or %00 in output", in, len);
            check(!is_unreserved(c), "escaped unreserved character in output", in, len);
            i += 2;
        }
    }
}

#ifdef VEER_FUZZ_ORACLE
/*
 * Reference: decode the whole path (the first bad escape refuses it), merge
 * slashes, then RFC 3986 5.2.4 on two strings. Quadratic; inputs are small.
 */
static int ref_canonical(const char *in, size_t len, char *out, size_t *out_len)
{
    char *a = malloc(len + 1), *b = malloc(len + 1), *q;
    size_t n = 0, m = 0, o = 0;
    int rc = PATH_OK;

    if (len == 0 || in[0] != '/') {
        rc = PATH_NOT_ABSOLUTE;
        goto done;
    }
    for (size_t i = 0; i < len; i++) {
        int hi, lo, c;

        if (in[i] != '%') {
            a[n++] = in[i];
            continue;
        }
        if (i + 2 >= len || (hi = hexval((unsigned char)in[i + 1])) < 0 ||
            (lo = hexval((unsigned char)in[i + 2])) < 0) {
            rc = PATH_BAD_ESCAPE;
            goto done;
        }
        c = hi << 4 | lo;
        i += 2;
        if (c == '/' || c == '\\' || c == 0) {
            rc = c == '/'    ? PATH_ENCODED_SLASH
                 : c == '\\' ? PATH_ENCODED_BACKSLASH
                             : PATH_ENCODED_NUL;
            goto done;
        }
        if (is_unreserved(c)) {
            a[n++] = (char)c;
        } else {
            a[n++] = '%';
            a[n++] = "0123456789ABCDEF"[c >> 4];
            a[n++] = "0123456789ABCDEF"[c & 15];
        }
    }
    for (size_t i = 0; i < n; i++) /* merge slashes */
        if (a[i] != '/' || m == 0 || b[m - 1] != '/')
            b[m++] = a[i];
    /*
     * remove_dot_segments: q[0..m) is the input buffer (each step drops its
     * first bytes by moving q on), out[0..o) the output buffer.
     */
    q = b;
    while (m > 0) {
        if (m >= 3 && memcmp(q, "/./", 3) == 0) { /* B: "/./" becomes "/" */
            q += 2;
            m -= 2;
        } else if (m == 2 && memcmp(q, "/.", 2) == 0) { /* B: "/." becomes "/" */
            q[1] = '/';
            q += 1;
            m = 1;
        } else if ((m >= 4 && memcmp(q, "/../", 4) == 0) || (m == 3 && memcmp(q, "/..", 3) == 0)) {
            if (o == 0) { /* C, with no segment to remove: refused */
                rc = PATH_ABOVE_ROOT;
                goto done;
            }
            if (m == 3) { /* C: "/.." becomes "/", */
                q[2] = '/';
                q += 2;
                m = 1;
            } else { /* or "/../" becomes "/", */
                q += 3;
                m -= 3;
            }
            while (o > 0 && out[o - 1] != '/') /* and the last segment goes, */
                o--;
            o--; /* with its '/' */
        } else { /* E: "/" and the segment up to the next "/" move over */
            size_t e = 1;

            while (e < m && q[e] != '/')
                e++;
            memcpy(out + o, q, e);
            o += e;
            q += e;
            m -= e;
        }
    }
    *out_len = o;
done:
    free(a);
    free(b);
    return rc;
}

/* Reference prefix match: equal, or "prefix/" starts the path, or the prefix ends with '/'. */
static bool ref_prefix(const char *p, size_t n, const char *x, size_t xn)
{
    char *slash;
    bool r;

    if (xn == 0)
        return true;
    if (n == xn && memcmp(p, x, n) == 0)
        return true;
    if (x[xn - 1] == '/')
        return n >= xn && memcmp(p, x, xn) == 0;
    slash = malloc(xn + 1);
    memcpy(slash, x, xn);
    slash[xn] = '/';
    r = n >= xn + 1 && memcmp(p, slash, xn + 1) == 0;
    free(slash);
    return r;
}

static void check_prefix(const char *p, size_t n, const char *x, size_t xn, const uint8_t *in,
                         size_t len)
{
    char *px = malloc(xn ? xn : 1), *pp = malloc(n ? n : 1);

    memcpy(px, x, xn);
    memcpy(pp, p, n);
    check(path_prefix_match(pp, n, px, xn) == ref_prefix(pp, n, px, xn),
          "prefix match differs from the reference", in, len);
    free(px);
    free(pp);
}

static uint32_t fnv(const uint8_t *d, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 16777619u;
    return h;
}

static void oracles(const uint8_t *data, size_t size, int rc, const char *out, size_t n)
{
    char *ref = malloc(size ? size : 1);
    size_t rn = 0, nseg = 0;
    int rrc = ref_canonical((const char *)data, size, ref, &rn);
    uint32_t h = fnv(data, size);

    if (rrc == PATH_OK || rrc == PATH_ABOVE_ROOT || rrc == PATH_NOT_ABSOLUTE)
        check(rc == rrc, "status differs from the reference", data, size);
    else
        check(rc == rrc || rc == PATH_ABOVE_ROOT, "escape refusal differs from the reference", data,
              size);
    if (rc == PATH_OK && rrc == PATH_OK)
        check(n == rn && memcmp(out, ref, n) == 0, "output differs from the reference", data, size);
    free(ref);

    /* Prefixes: cuts of the canonical path (at every '/', then at hashed
     * places) against it, and cuts of the input against the input. */
    if (rc == PATH_OK) {
        for (size_t i = 0; i <= n && nseg < 16; i++) {
            if (i == n || out[i] == '/') {
                check_prefix(out, n, out, i, data, size);
                if (i < n)
                    check_prefix(out, n, out, i + 1, data, size);
                nseg++;
            }
        }
        for (int k = 0; k < 4 && n > 0; k++)
            check_prefix(out, n, out, (h >> (8 * k)) % (n + 1), data, size);
    }
    for (int k = 0; k < 4; k++) {
        size_t cut = (h >> (8 * k)) % (size + 1);

        check_prefix((const char *)data, size, (const char *)data, cut, data, size);
        check_prefix((const char *)data + cut, size - cut, (const char *)data, cut, data, size);
    }
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = malloc(size ? size : 1), *again = malloc(size ? size : 1);
    char *in_place = malloc(size ? size : 1);
    size_t n = 0, n2 = 0, n3 = 0;
    int rc;

    rc = path_canonical((const char *)data, size, out, size, &n);
    if (size > 0)
        check(path_canonical((const char *)data, size, out, size - 1, &n2) == PATH_NO_ROOM,
              "a buffer shorter than the input was not refused", data, size);
    check(rc >= PATH_OK && rc < PATH_NO_ROOM, "unknown status", data, size);

    memcpy(in_place, data, size);
    check(path_canonical(in_place, size, in_place, size, &n3) == rc,
          "in place gives another status", data, size);
    if (rc == PATH_OK) {
        check(n <= size, "output longer than the input", data, size);
        check_form(out, n, data, size);
        check(n3 == n && memcmp(in_place, out, n) == 0, "in place gives another path", data, size);
        check(path_canonical(out, n, again, n, &n2) == PATH_OK, "canonical path refused", data,
              size);
        check(n2 == n && memcmp(again, out, n) == 0, "not idempotent", data, size);
    }
#ifdef VEER_FUZZ_ORACLE
    oracles(data, size, rc, out, n);
#endif
    free(out);
    free(again);
    free(in_place);
    return 0;
}
