/*
 * path.h - the canonical request path that route matching sees (issue 17,
 * "Matching sees one canonical path"), and whole-segment prefix matching.
 *
 * A backend must never see a path that would have matched another route, so
 * the proxy matches on one canonical spelling and forwards that spelling.
 * path_canonical() computes it in one pass, without allocating; it is pure
 * (no state, any thread) and sits in core so that the data path (routing),
 * the control plane (checking configured prefixes) and the admin surface
 * (`route explain`) share it.
 *
 * Not wired into the request path yet: nothing calls it outside its tests.
 */
#ifndef VEER_PATH_H
#define VEER_PATH_H

#include <stdbool.h>
#include <stddef.h>

/*
 * What path_canonical() returns. Every value but PATH_OK means the request
 * is refused with 400, except PATH_NO_ROOM, which is the caller's mistake
 * (an output buffer shorter than the input).
 */
enum path_status {
    PATH_OK = 0,
    PATH_NOT_ABSOLUTE,      /* empty, or does not start with '/' ("*", "a/b") */
    PATH_BAD_ESCAPE,        /* '%' not followed by two hex digits: "%", "%4", "%GZ" */
    PATH_ENCODED_SLASH,     /* %2F or %2f */
    PATH_ENCODED_BACKSLASH, /* %5C or %5c */
    PATH_ENCODED_NUL,       /* %00 */
    PATH_ABOVE_ROOT,        /* a ".." with nothing left to remove: "/..", "/a/../../x" */
    PATH_NO_ROOM,           /* cap < len */
};

/*
 * Write the canonical form of the path in[0..len) to out and its length to
 * *out_len; return PATH_OK, or why the path is refused (then out holds
 * garbage and *out_len is not set).
 *
 * in is the path part of an origin-form request-target (or the path of an
 * absolute-form one): the caller cuts it at the first '?' (as
 * http_target_path does), canonicalizes the part before, and forwards the
 * query ('?' and what follows) unchanged after the canonical path. The
 * asterisk-form "*" of OPTIONS is the caller's to recognize before calling:
 * here it is PATH_NOT_ABSOLUTE, like any path not starting with '/' and like
 * an empty one (http_target_path already turns an empty path into "/").
 *
 * The canonical form, left to right over the path's segments (the first
 * problem met is the one returned):
 * - a percent escape that is not '%' and two hex digits is refused, and so
 *   are %2F, %5C and %00 (a backend that decodes them would see another
 *   path, or the end of it);
 * - escapes of unreserved characters (ALPHA DIGIT - . _ ~) are decoded
 *   ("%7e" -> "~", "%41" -> "A"); every other escape stays encoded, with
 *   upper-case hex ("%2a" -> "%2A", "%20" stays);
 * - repeated slashes are merged ("//a///b" -> "/a/b");
 * - then dot-segments are removed as RFC 3986 section 5.2.4 does, on the
 *   decoded segment: "%2E%2E" is a ".." like "..", since a backend that
 *   decodes it would treat it so. Decoding before removing is the safe
 *   order: removing first would let "/a/%2e%2e/b" through as a path that
 *   matches under "/a" and reaches "/b". A ".." with no segment left to
 *   remove is refused (RFC 3986 would clamp it at "/"; the issue refuses
 *   it), and a path ending in "." or ".." ends with '/' ("/a/b/.." -> "/a/").
 * - a trailing slash is kept ("/a/" stays "/a/", "/a//" -> "/a/").
 * Bytes other than '%' are copied as they are: the HTTP parser has already
 * refused those a request-target may not hold.
 *
 * The result starts with '/', has no empty, "." or ".." segment, no %2F,
 * %5C or %00, only upper-case escapes and no escaped unreserved character;
 * canonicalizing it again gives it back unchanged. It is never longer than
 * the input: cap >= len always suffices, and cap < len is refused
 * (PATH_NO_ROOM) whatever the path. out may be in itself (canonicalizing in
 * place); otherwise the two must not overlap. O(len) time.
 */
int path_canonical(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

/* A short phrase for a path_status, for logs and `route explain`. */
const char *path_status_name(int status);

/*
 * Whether prefix[0..plen) is a prefix of path[0..len) on whole segments:
 * "/payments" matches "/payments", "/payments/" and "/payments/x" but never
 * "/paymentsx"; a prefix ending with '/' matches what starts with it ("/a/"
 * matches "/a/" and "/a/x", not "/a"), so "/" matches every path. An empty
 * prefix matches every path too (the config refuses one). Bytes compare
 * exactly: both sides are expected canonical (path_canonical).
 */
bool path_prefix_match(const char *path, size_t len, const char *prefix, size_t plen);

#endif
