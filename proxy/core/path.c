/*
 * path.c - the canonical request path and whole-segment prefix matching
 * (path.h says what the canonical form is and why).
 */
#include "path.h"

#include <string.h>

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/*
 * One pass. out[0..o) always holds "" or "/s1/.../sk": each segment
 * non-empty, decoded, and neither "." nor "..". A segment is decoded
 * straight after its '/' in out, then looked at: "." is dropped, ".." is
 * dropped with the segment before it (a walk back over bytes written once, so
 * the whole stays O(len)). Every byte written stands for at least one byte
 * read, so o never passes i and the output may be the input.
 */
int path_canonical(const char *in, size_t len, char *out, size_t cap, size_t *out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0, o = 0;
    bool dir = false; /* the last segment was "." or "..": the path ends with '/' */

    if (cap < len)
        return PATH_NO_ROOM;
    if (len == 0 || in[0] != '/')
        return PATH_NOT_ABSOLUTE;
    while (i < len) {
        size_t seg;

        while (i < len && in[i] == '/')
            i++;
        if (i == len) {
            dir = true;
            break;
        }
        seg = o;
        out[o++] = '/';
        while (i < len && in[i] != '/') {
            unsigned char c = (unsigned char)in[i];
            int hi, lo;

            if (c != '%') {
                out[o++] = (char)c;
                i++;
                continue;
            }
            if (len - i < 3 || (hi = hex_value((unsigned char)in[i + 1])) < 0 ||
                (lo = hex_value((unsigned char)in[i + 2])) < 0)
                return PATH_BAD_ESCAPE;
            c = (unsigned char)(hi << 4 | lo);
            i += 3;
            if (c == '/')
                return PATH_ENCODED_SLASH;
            if (c == '\\')
                return PATH_ENCODED_BACKSLASH;
            if (c == 0)
                return PATH_ENCODED_NUL;
            if (unreserved(c)) {
                out[o++] = (char)c;
            } else {
                out[o++] = '%';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 15];
            }
        }
        dir = false;
        if (o - seg == 2 && out[seg + 1] == '.') {
            o = seg;
            dir = true;
        } else if (o - seg == 3 && out[seg + 1] == '.' && out[seg + 2] == '.') {
            if (seg == 0)
                return PATH_ABOVE_ROOT;
            o = seg - 1;
            while (out[o] != '/')
                o--;
            dir = true;
        }
    }
    if (dir)
        out[o++] = '/';
    *out_len = o;
    return PATH_OK;
}

const char *path_status_name(int status)
{
    switch (status) {
    case PATH_OK:
        return "ok";
    case PATH_NOT_ABSOLUTE:
        return "path does not start with '/'";
    case PATH_BAD_ESCAPE:
        return "invalid percent escape";
    case PATH_ENCODED_SLASH:
        return "encoded slash (%2F)";
    case PATH_ENCODED_BACKSLASH:
        return "encoded backslash (%5C)";
    case PATH_ENCODED_NUL:
        return "encoded NUL (%00)";
    case PATH_ABOVE_ROOT:
        return "path climbs above '/'";
    case PATH_NO_ROOM:
        return "output buffer shorter than the path";
    }
    return "unknown path status";
}

bool path_prefix_match(const char *path, size_t len, const char *prefix, size_t plen)
{
    if (plen == 0)
        return true;
    if (len < plen || memcmp(path, prefix, plen) != 0)
        return false;
    return len == plen || prefix[plen - 1] == '/' || path[plen] == '/';
}
