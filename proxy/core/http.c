/*
 * http.c - llhttp wrapper: parses heads into spans, runs veer's own RFC 9112
 * checks on top of strict llhttp, frames bodies, and writes the heads veer
 * forwards. See http.h for the model.
 */
#include "http.h"
#include "conf.h"
#include "path.h"
#include "veer.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { CB_NONE = 0, CB_FIELD, CB_VALUE };

static llhttp_settings_t settings;
static int settings_ready;

size_t http_msg_size(uint32_t max_headers)
{
    return sizeof(struct http_msg) + (size_t)max_headers * sizeof(struct http_hdr);
}

static int fail(struct http_msg *msg, int status, const char *what)
{
    if (msg->err_status == 0) {
        msg->err_status = (uint16_t)status;
        msg->err_what = what;
    }
    return -1;
}

/* A new message starts on this parser: forget the previous head. */
static int cb_message_begin(llhttp_t *p)
{
    struct http_msg *msg = p->data;

    msg->phase = HMSG_HEAD;
    msg->head_len = 0;
    msg->head_pending = false;
    msg->line_len = 0;
    msg->flags = 0;
    msg->method = msg->url = msg->reason = (struct http_span){0, 0};
    msg->status = 0;
    msg->last_cb = CB_NONE;
    msg->host = msg->xff = msg->via = -1;
    msg->ext_bytes = 0;
    msg->tname_len = 0;
    msg->content_length = 0;
    msg->body_seen = 0;
    msg->nhdr = 0;
    return 0;
}

/* Extend a span with a piece the parser handed us; pieces must be adjacent. */
static int span_add(struct http_msg *msg, struct http_span *s, const char *at, size_t len)
{
    uint32_t off = (uint32_t)(at - msg->base);

    if (s->len == 0)
        s->off = off;
    else if (off != s->off + s->len)
        return fail(msg, 400, "malformed request line");
    s->len += (uint32_t)len;
    return 0;
}

static int cb_method(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;

    return span_add(msg, &msg->method, at, len);
}

static int cb_url(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;

    return span_add(msg, &msg->url, at, len);
}

static int cb_status(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;

    return span_add(msg, &msg->reason, at, len);
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;
    struct http_hdr *h;
    uint32_t off = (uint32_t)(at - msg->base);

    if (msg->phase != HMSG_HEAD) {
        msg->last_cb = CB_FIELD; /* trailer fields: forwarded as framed, checked for shape */
        msg->tname_len += (uint32_t)len;
        return 0;
    }
    if (msg->last_cb != CB_FIELD) {
        if (msg->nhdr == 0)
            msg->line_len = off;
        if (msg->nhdr >= msg->limits->header_count)
            return fail(msg, 431, "too many header fields");
        h = &msg->hdr[msg->nhdr++];
        h->name = (struct http_span){off, 0};
        h->value = (struct http_span){0, 0};
        h->drop = 0;
    }
    h = &msg->hdr[msg->nhdr - 1];
    if (off != h->name.off + h->name.len)
        return fail(msg, 400, "malformed header field name");
    h->name.len += (uint32_t)len;
    msg->last_cb = CB_FIELD;
    return 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Whether the value span at `at` begins a line (only whitespace since the
 * last LF): a continuation line, not the value after the field's colon.
 * Looks back into this read, then at how the reads before it ended.
 */
static bool starts_a_line(const struct http_msg *msg, const char *at)
{
    const char *p = at;

    while (p > msg->in_start && is_ows(p[-1]))
        p--;
    if (p > msg->in_start)
        return p[-1] == '\n';
    return msg->bol;
}

/* A trailer field's name is complete: it must have one (llhttp lets ": x" through there). */
static int cb_header_field_complete(llhttp_t *p)
{
    struct http_msg *msg = p->data;

    if (msg->phase == HMSG_HEAD)
        return 0;
    if (msg->tname_len == 0)
        return fail(msg, p->type == HTTP_REQUEST ? 400 : 502, "empty trailer field name");
    msg->tname_len = 0;
    return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;
    struct http_hdr *h;
    uint32_t off = (uint32_t)(at - msg->base);

    if (msg->phase != HMSG_HEAD) {
        /*
         * A trailer value comes in one span per read; another span without
         * a new field in between is a folded line (llhttp lets it through
         * in trailers), which the next hop might read differently.
         */
        if ((msg->last_cb == CB_VALUE && !(msg->tval_at_end && at == msg->in_start)) ||
            memchr(at, '\n', len) || memchr(at, '\r', len) ||
            (msg->last_cb == CB_FIELD && starts_a_line(msg, at)))
            return fail(msg, p->type == HTTP_REQUEST ? 400 : 502,
                        "obsolete line folding in a trailer field");
        msg->tval_at_end = at + len == msg->in_end;
        msg->last_cb = CB_VALUE;
        return 0;
    }
    h = &msg->hdr[msg->nhdr - 1];
    if (msg->last_cb != CB_VALUE)
        h->value = (struct http_span){off, 0};
    else if (off != h->value.off + h->value.len)
        return fail(msg, 400, "obsolete line folding in header field");
    h->value.len += (uint32_t)len;
    msg->last_cb = CB_VALUE;
    return 0;
}

static bool name_is(const char *head, const struct http_hdr *h, const char *lit)
{
    size_t n = strlen(lit);

    return h->name.len == n && strncasecmp(head + h->name.off, lit, n) == 0;
}

/*
 * Check what lies between a field name and its value: exactly ':' then
 * optional whitespace. A CR or LF there is obs-fold of an empty first line,
 * which llhttp lets through. Also trims trailing whitespace off the value.
 */
static int check_field_layout(struct http_msg *msg, struct http_hdr *h)
{
    const char *head = msg->base;
    uint32_t i = h->name.off + h->name.len;

    if (h->name.len == 0)
        return fail(msg, 400, "empty header field name");
    if (head[i] != ':')
        return fail(msg, 400, "malformed header field");
    if (h->value.len == 0) {
        /* Empty value: llhttp may place it after the CRLF; nothing can fold here. */
        h->value.off = i + 1;
        return 0;
    }
    for (i++; i < h->value.off; i++)
        if (!is_ows(head[i]))
            return fail(msg, 400, "obsolete line folding in header field");
    while (h->value.len > 0 && is_ows(head[h->value.off + h->value.len - 1]))
        h->value.len--;
    return 0;
}

/* Call fn on each comma-separated token of a list-valued field. */
static void for_each_token(const char *v, uint32_t len,
                           void (*fn)(struct http_msg *, const char *, uint32_t),
                           struct http_msg *msg)
{
    uint32_t i = 0;

    while (i < len) {
        uint32_t s, e;

        while (i < len && (is_ows(v[i]) || v[i] == ','))
            i++;
        s = i;
        while (i < len && v[i] != ',')
            i++;
        e = i;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e > s)
            fn(msg, v + s, e - s);
    }
}

static bool tok_is(const char *t, uint32_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(t, lit, n) == 0;
}

/*
 * One token of a Connection field: close, keep-alive and upgrade set flags;
 * any other names a header that is hop-by-hop for this message. A request
 * must not make us drop its own framing or Host that way.
 */
static void connection_token(struct http_msg *msg, const char *t, uint32_t n)
{
    const char *head = msg->base;

    if (tok_is(t, n, "close")) {
        msg->flags |= HF_CONN_CLOSE;
        return;
    }
    if (tok_is(t, n, "keep-alive")) {
        msg->flags |= HF_CONN_KA;
        return;
    }
    if (tok_is(t, n, "upgrade")) {
        msg->flags |= HF_CONN_UPGRADE;
        return;
    }
    if (tok_is(t, n, "content-length") || tok_is(t, n, "transfer-encoding") ||
        tok_is(t, n, "host")) {
        if (msg->parser.type == HTTP_REQUEST)
            fail(msg, 400, "Connection names a framing header");
        return;
    }
    for (uint32_t i = 0; i < msg->nhdr; i++) {
        struct http_hdr *h = &msg->hdr[i];

        if (h->name.len == n && strncasecmp(head + h->name.off, t, n) == 0)
            h->drop = 1;
    }
}

/* reg-name / IP-literal characters and an optional port (RFC 3986 host). */
static bool valid_authority(const char *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (strchr("-._~!$&'()*+,;=:[]%", c) == NULL || c == 0)
            return false;
    }
    return true;
}

/*
 * The request line must be exactly METHOD SP target SP HTTP/1.x CRLF: llhttp
 * tolerates repeated spaces, which some servers read differently.
 */
static int check_request_line(struct http_msg *msg)
{
    const char *head = msg->base;
    uint32_t e = msg->url.off + msg->url.len;

    if (msg->major != 1 || msg->minor > 1) {
        if (msg->major == 0)
            return fail(msg, 400, "HTTP/0.9 is not supported");
        return fail(msg, 505, "unsupported HTTP version");
    }
    if (msg->method.off != 0 || msg->url.off != msg->method.len + 1 ||
        head[msg->method.len] != ' ' || head[e] != ' ' || memcmp(head + e + 1, "HTTP/1.", 7) != 0 ||
        head[e + 9] != '\r' || head[e + 10] != '\n')
        return fail(msg, 400, "malformed request line");
    if (msg->parser.method == HTTP_CONNECT)
        return fail(msg, 501, "CONNECT is not supported");
    if (memchr(head + msg->url.off, '#', msg->url.len))
        return fail(msg, 400, "fragment in request target");
    if (head[msg->url.off] == '/')
        return 0;
    if (msg->url.len == 1 && head[msg->url.off] == '*')
        return msg->parser.method == HTTP_OPTIONS ? 0 : fail(msg, 400, "bad request target");
    if ((msg->url.len > 7 && strncasecmp(head + msg->url.off, "http://", 7) == 0) ||
        (msg->url.len > 8 && strncasecmp(head + msg->url.off, "https://", 8) == 0)) {
        msg->flags |= HF_ABSOLUTE;
        return 0;
    }
    return fail(msg, 400, "bad request target");
}

/* Authority of an absolute-form target, as a span. */
static struct http_span absolute_authority(const struct http_msg *msg, const char *head)
{
    uint32_t s = msg->url.off, e = msg->url.off + msg->url.len, i;

    s += (head[s + 4] == ':') ? 7 : 8;
    for (i = s; i < e && head[i] != '/' && head[i] != '?' && head[i] != '#'; i++)
        ;
    return (struct http_span){s, i - s};
}

/* Path (origin-form) of an absolute-form target; "/" when empty. */
static struct http_span absolute_path(const struct http_msg *msg, const char *head)
{
    struct http_span a = absolute_authority(msg, head);
    uint32_t s = a.off + a.len, e = msg->url.off + msg->url.len;

    return (struct http_span){s, e - s};
}

/*
 * The target's path (before '?') and query ('?' and the rest, or empty), as
 * they came: an origin-form target, the part of an absolute-form one after
 * its authority, or "*".
 */
static void raw_target(const struct http_msg *req, const char *head, struct http_span *path,
                       struct http_span *query)
{
    struct http_span t = (req->flags & HF_ABSOLUTE) ? absolute_path(req, head) : req->url;
    const char *q = memchr(head + t.off, '?', t.len);

    path->off = t.off;
    path->len = q ? (uint32_t)(q - (head + t.off)) : t.len;
    query->off = t.off + path->len;
    query->len = t.len - path->len;
}

/* The target's path and query: canonical with HF_PATH, else as they came. */
static void target(const struct http_msg *req, const char *head, struct http_span *path,
                   struct http_span *query)
{
    if (req->flags & HF_PATH) {
        *path = req->path;
        *query = req->query;
    } else {
        raw_target(req, head, path, query);
    }
}

/*
 * The slow part of http_canonicalize_path(), for a path the scan found
 * '%', "//" or "/." in: into a copy first, so that a refused path stays as
 * it came (for the access log), then over the old one. Out of line: the
 * common path keeps a small frame.
 */
__attribute__((noinline)) static int canonicalize(struct http_msg *req, char *head)
{
    struct http_span *path = &req->path;
    char stack[512], *tmp = path->len <= sizeof(stack) ? stack : veer_malloc(path->len);
    size_t n;
    int st = path_canonical(head + path->off, path->len, tmp, path->len, &n);

    if (st == PATH_OK) {
        memcpy(head + path->off, tmp, n);
        path->len = (uint32_t)n;
    }
    if (tmp != stack)
        free(tmp);
    if (st == PATH_OK)
        return 0;
    req->flags &= ~(uint32_t)HF_PATH;
    return fail(req, 400, path_status_name(st));
}

/* The bytes the scan of http_canonicalize_path stops at; every other is 0. */
enum { PB_SLASH = 1, PB_PERCENT, PB_QUERY };
static const uint8_t path_byte[256] = {['/'] = PB_SLASH, ['%'] = PB_PERCENT, ['?'] = PB_QUERY};

#define BYTES(c) (0x0101010101010101ULL * (unsigned char)(c))

/* The high bit of each byte of v that is zero, and only of those. */
static inline uint64_t zero_bytes(uint64_t v)
{
    const uint64_t low7 = BYTES(0x7F);

    return ~(((v & low7) + low7) | v | low7);
}

/*
 * How many bytes at the start of p[0..n) may be skipped eight at a time: no
 * '?', no '%', no '/' followed by '/' or '.' ('.' is '/' but for the low
 * bit). Stops 9 bytes before n at the latest (a word and the byte after).
 */
static uint32_t skip_plain(const char *p, uint32_t n)
{
    uint32_t i = 0;
    uint64_t w, x;

    for (; i + 9 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        memcpy(&x, p + i + 1, 8);
        if (zero_bytes(w ^ BYTES('?')) | zero_bytes(w ^ BYTES('%')) |
            (zero_bytes(w ^ BYTES('/')) & zero_bytes((x | BYTES(1)) ^ BYTES('/'))))
            break;
    }
    return i;
}

int http_canonicalize_path(struct http_msg *req, char *head)
{
    struct http_span t;
    const char *p, *q;
    uint32_t i;
    bool plain = true;

    if (req->flags & HF_PATH)
        return 0;
    t = (req->flags & HF_ABSOLUTE) ? absolute_path(req, head) : req->url;
    p = head + t.off;
    /*
     * One scan finds where the query starts and whether the path may be
     * canonical already: no '%' (an escape to decode or refuse), no "//"
     * (slashes to merge) and no "/." (a dot-segment, or a segment that only
     * starts with a dot). Most paths are; they cost this scan (a word at a
     * time while none of those can be in it, then a byte at a time: at most
     * 9 bytes to the end, the '?', or the first sign of work) and no write.
     */
    for (i = skip_plain(p, t.len); i < t.len; i++) {
        uint8_t c = path_byte[(unsigned char)p[i]];

        if (c == PB_QUERY)
            break;
        if (c == PB_PERCENT ||
            (c == PB_SLASH && i + 1 < t.len && (p[i + 1] == '/' || p[i + 1] == '.'))) {
            plain = false;
            q = memchr(p + i, '?', t.len - i);
            i = q ? (uint32_t)(q - p) : t.len;
            break;
        }
    }
    req->path = (struct http_span){t.off, i};
    req->query = (struct http_span){t.off + i, t.len - i};
    req->flags |= HF_PATH;
    /* "*" (OPTIONS) and an empty absolute-form path ("/" is forwarded) are left alone. */
    if (plain || i == 0 || p[0] != '/')
        return 0;
    return canonicalize(req, head);
}

const char *http_target_path(const struct http_msg *req, const char *head, size_t *len)
{
    struct http_span path, query;

    target(req, head, &path, &query);
    if (path.len == 0) {
        *len = 1;
        return "/";
    }
    *len = path.len;
    return head + path.off;
}

const char *http_target_query(const struct http_msg *req, const char *head, size_t *len)
{
    struct http_span path, query;

    target(req, head, &path, &query);
    *len = query.len;
    return query.len ? head + query.off : "";
}

const char *http_request_host(const struct http_msg *req, const char *head, size_t *len)
{
    if (req->flags & HF_ABSOLUTE) {
        struct http_span a = absolute_authority(req, head);

        *len = a.len;
        return head + a.off;
    }
    if (req->host < 0)
        return NULL;
    *len = req->hdr[req->host].value.len;
    return head + req->hdr[req->host].value.off;
}

static int check_request_headers(struct http_msg *msg)
{
    const char *head = msg->base;
    int te = -1, upgrade = -1, conn[8], nconn = 0;

    for (uint32_t i = 0; i < msg->nhdr; i++) {
        struct http_hdr *h = &msg->hdr[i];
        const char *v = head + h->value.off;

        if (check_field_layout(msg, h) < 0)
            return -1;
        switch (h->name.len) {
        case 2:
            if (name_is(head, h, "te"))
                h->drop = 1;
            break;
        case 3:
            if (name_is(head, h, "via")) {
                if (msg->via < 0)
                    msg->via = (int)i;
                h->drop = 1;
            }
            break;
        case 4:
            if (name_is(head, h, "host")) {
                if (msg->host >= 0)
                    return fail(msg, 400, "duplicate Host");
                if (!valid_authority(v, h->value.len))
                    return fail(msg, 400, "invalid Host");
                msg->host = (int)i;
            }
            break;
        case 6:
            if (name_is(head, h, "expect")) {
                if (!tok_is(v, h->value.len, "100-continue"))
                    return fail(msg, 417, "unsupported expectation");
                msg->flags |= HF_EXPECT_100;
            }
            break;
        case 7:
            if (name_is(head, h, "upgrade"))
                upgrade = (int)i;
            else if (name_is(head, h, "trailer"))
                h->drop = 1;
            break;
        case 10:
            if (name_is(head, h, "connection")) {
                if (nconn == (int)ARRAY_SIZE(conn))
                    return fail(msg, 400, "too many Connection fields");
                conn[nconn++] = (int)i;
                h->drop = 1;
            } else if (name_is(head, h, "keep-alive")) {
                h->drop = 1;
            }
            break;
        case 14:
            if (name_is(head, h, "content-length"))
                msg->flags |= HF_HAS_CL;
            break;
        case 15:
            if (name_is(head, h, "x-forwarded-for")) {
                if (msg->xff < 0)
                    msg->xff = (int)i;
                h->drop = 1;
            }
            break;
        case 16:
            if (name_is(head, h, "proxy-connection"))
                h->drop = 1;
            break;
        case 17:
            if (name_is(head, h, "transfer-encoding")) {
                if (msg->minor == 0)
                    return fail(msg, 400, "Transfer-Encoding in HTTP/1.0");
                if (te >= 0)
                    return fail(msg, 400, "duplicate Transfer-Encoding");
                if (!tok_is(v, h->value.len, "chunked"))
                    return fail(msg, 400, "unsupported Transfer-Encoding");
                te = (int)i;
                msg->flags |= HF_CHUNKED;
            } else if (name_is(head, h, "x-forwarded-proto")) {
                h->drop = 1;
            }
            break;
        }
    }
    for (int i = 0; i < nconn; i++)
        for_each_token(head + msg->hdr[conn[i]].value.off, msg->hdr[conn[i]].value.len,
                       connection_token, msg);
    if (msg->err_status)
        return -1;
    if ((msg->flags & HF_CHUNKED) && !(msg->parser.flags & F_CHUNKED))
        return fail(msg, 400, "Transfer-Encoding llhttp does not frame as chunked");
    if (msg->host < 0 && msg->minor == 1)
        return fail(msg, 400, "missing Host");
    if (upgrade >= 0) {
        if ((msg->flags & HF_CONN_UPGRADE) && msg->minor == 1)
            msg->flags |= HF_UPGRADE;
        else
            msg->hdr[upgrade].drop = 1;
    }
    if (msg->flags & HF_ABSOLUTE) {
        struct http_span a = absolute_authority(msg, head);

        if (a.len == 0 || memchr(head + a.off, '@', a.len) || !valid_authority(head + a.off, a.len))
            return fail(msg, 400, "bad authority in request target");
        if (msg->host >= 0)
            msg->hdr[msg->host].drop = 1; /* RFC 9112 3.2.2: the target wins */
    }
    if (msg->limits->body_bytes && (msg->flags & HF_HAS_CL) &&
        msg->parser.content_length > msg->limits->body_bytes)
        return fail(msg, 413, "request body too large");
    msg->content_length = msg->parser.content_length;
    return 0;
}

static int check_response_headers(struct http_msg *msg)
{
    const char *head = msg->base;
    int conn[8], nconn = 0;

    if (msg->major != 1 || msg->minor > 1)
        return fail(msg, 502, "unsupported HTTP version from backend");
    for (uint32_t i = 0; i < msg->nhdr; i++) {
        struct http_hdr *h = &msg->hdr[i];

        if (check_field_layout(msg, h) < 0) {
            msg->err_status = 502;
            return -1;
        }
        if (name_is(head, h, "connection")) {
            if (nconn == (int)ARRAY_SIZE(conn))
                return fail(msg, 502, "too many Connection fields");
            conn[nconn++] = (int)i;
            h->drop = 1;
        } else if (name_is(head, h, "keep-alive") || name_is(head, h, "proxy-connection") ||
                   name_is(head, h, "te") || name_is(head, h, "trailer")) {
            h->drop = 1;
        } else if (name_is(head, h, "upgrade")) {
            h->drop = msg->status != 101;
        } else if (name_is(head, h, "via")) {
            if (msg->via < 0)
                msg->via = (int)i;
            h->drop = 1;
        } else if (name_is(head, h, "transfer-encoding")) {
            /*
             * Only chunked, as llhttp frames it. Anything else (a close-
             * delimited coding, or "chunked" spelled so llhttp misses it)
             * would reach the client with framing veer did not follow.
             */
            if (!(msg->parser.flags & F_CHUNKED) ||
                !tok_is(head + h->value.off, h->value.len, "chunked"))
                return fail(msg, 502, "Transfer-Encoding other than chunked from backend");
            msg->flags |= HF_CHUNKED;
        } else if (name_is(head, h, "content-length")) {
            msg->flags |= HF_HAS_CL;
        }
    }
    for (int i = 0; i < nconn; i++)
        for_each_token(head + msg->hdr[conn[i]].value.off, msg->hdr[conn[i]].value.len,
                       connection_token, msg);
    if (msg->status == 101)
        msg->flags |= HF_UPGRADE;
    msg->content_length = msg->parser.content_length;
    return 0;
}

/*
 * The head is complete: run veer's checks, then pause so the caller sees
 * exactly where the head ends before any body byte is framed.
 */
static int cb_headers_complete(llhttp_t *p)
{
    struct http_msg *msg = p->data;
    int rc;

    msg->major = p->http_major;
    msg->minor = p->http_minor;
    if (msg->nhdr == 0)
        msg->line_len = 0; /* set from the head length by http_parse */
    if (p->type == HTTP_REQUEST) {
        rc = check_request_line(msg);
        if (rc == 0)
            rc = check_request_headers(msg);
    } else {
        msg->status = p->status_code;
        rc = check_response_headers(msg);
        if (msg->head_request || msg->status == 204 || msg->status == 304 ||
            (msg->status >= 100 && msg->status < 200 && msg->status != 101)) {
            /* No body whatever the headers say (RFC 9112 6.3): llhttp would read a CL one. */
            msg->flags |= HF_NO_BODY;
            p->flags |= F_SKIPBODY;
        }
    }
    if (rc < 0)
        return -1;
    msg->phase = HMSG_BODY;
    msg->head_pending = true;
    return HPE_PAUSED;
}

static int cb_body(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;

    msg->body_seen += len;
    if (p->type == HTTP_REQUEST && msg->limits->body_bytes &&
        msg->body_seen > msg->limits->body_bytes)
        return fail(msg, 413, "request body too large");
    if (msg->on_body)
        msg->on_body(msg->on_body_ctx, at, len);
    if (msg->dechunk) {
        memmove(msg->dechunk_dst, at, len);
        msg->dechunk_dst += len;
    }
    return 0;
}

/*
 * Chunk extensions are parsed and dropped by nobody downstream but cost
 * memory and time at the backend: at most CHUNK_EXT_MAX bytes per chunk.
 */
static int cb_chunk_ext(llhttp_t *p, const char *at, size_t len)
{
    struct http_msg *msg = p->data;

    (void)at;
    msg->ext_bytes += (uint32_t)len;
    if (msg->ext_bytes > CHUNK_EXT_MAX)
        return fail(msg, p->type == HTTP_REQUEST ? 400 : 502, "chunk extensions too long");
    return 0;
}

static int cb_chunk_complete(llhttp_t *p)
{
    ((struct http_msg *)p->data)->ext_bytes = 0;
    return 0;
}

static int cb_message_complete(llhttp_t *p)
{
    struct http_msg *msg = p->data;

    msg->phase = HMSG_DONE;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = cb_message_begin;
    settings.on_method = cb_method;
    settings.on_url = cb_url;
    settings.on_status = cb_status;
    settings.on_header_field = cb_header_field;
    settings.on_header_value = cb_header_value;
    settings.on_header_field_complete = cb_header_field_complete;
    settings.on_headers_complete = cb_headers_complete;
    settings.on_body = cb_body;
    settings.on_message_complete = cb_message_complete;
    settings.on_chunk_extension_name = cb_chunk_ext;
    settings.on_chunk_extension_value = cb_chunk_ext;
    settings.on_chunk_complete = cb_chunk_complete;
    settings_ready = 1;
}

void http_msg_init(struct http_msg *msg, llhttp_type_t type, const struct http_limits *lim)
{
    uint32_t max = lim->header_count;

    if (!settings_ready)
        settings_init(); /* idempotent and race-free: same values every time */
    memset(msg, 0, sizeof(*msg));
    llhttp_init(&msg->parser, type, &settings);
    msg->parser.data = msg;
    msg->limits = lim;
    msg->max_hdr = max;
    msg->host = msg->xff = msg->via = -1;
}

static enum http_result parse_error(struct http_msg *msg, llhttp_errno_t e)
{
    if (msg->err_status == 0) {
        if (msg->parser.type == HTTP_RESPONSE) {
            msg->err_status = 502;
        } else if (e == HPE_PAUSED_H2_UPGRADE) {
            msg->err_status = 505;
        } else {
            msg->err_status = 400;
        }
        msg->err_what = llhttp_get_error_reason(&msg->parser);
    }
    return HTTP_INVALID;
}

/*
 * A complete first line without " HTTP/": an HTTP/0.9 request, which llhttp
 * would keep waiting on. Only looked at until the first header arrives.
 */
static bool http09_line(const char *head, size_t len)
{
    const char *nl = memchr(head, '\n', len);

    return nl && !memmem(head, (size_t)(nl - head), " HTTP/", 6);
}

/* The last three bytes parsed, across reads (for the end of a chunked body). */
static void keep_tail(struct http_msg *msg, const char *data, size_t n)
{
    const char *p = data + n;

    /* Whether the bytes so far end with a line start and whitespace (bol). */
    while (p > data && is_ows(p[-1]))
        p--;
    if (p > data)
        msg->bol = p[-1] == '\n';
    if (n >= 3) {
        memcpy(msg->tail, data + n - 3, 3);
    } else if (n) {
        memmove(msg->tail, msg->tail + n, 3 - n);
        memcpy(msg->tail + 3 - n, data, n);
    }
}

/* Request/status line and header section size limits, while the head grows. */
static enum http_result check_head_limits(struct http_msg *msg)
{
    const struct http_limits *lim = msg->limits;
    bool req = msg->parser.type == HTTP_REQUEST;
    /* The line's length so far: known once headers start, else all we have. */
    uint32_t line = msg->line_len ? msg->line_len : (msg->nhdr ? 0 : msg->head_len);
    uint32_t fields = msg->line_len ? msg->head_len - msg->line_len : 0;

    if (line > lim->line_bytes + 2) {
        fail(msg, req ? 414 : 502, req ? "request line too long" : "status line too long");
        return HTTP_INVALID;
    }
    if (fields > lim->header_bytes + 2) {
        fail(msg, req ? 431 : 502, "header section too large");
        return HTTP_INVALID;
    }
    return HTTP_NEED_MORE;
}

enum http_result http_parse(struct http_msg *msg, const char *head, const char *data, size_t len,
                            size_t *used)
{
    llhttp_errno_t e;
    const char *stop;

    *used = 0;
    if (llhttp_get_errno(&msg->parser) == HPE_PAUSED)
        llhttp_resume(&msg->parser);
    if (msg->parser.type == HTTP_REQUEST && msg->phase == HMSG_HEAD && msg->nhdr == 0 &&
        http09_line(head, (size_t)(data + len - head))) {
        fail(msg, 400, "HTTP/0.9 request (no version)");
        return HTTP_INVALID;
    }
    msg->base = head;
    msg->in_start = data;
    msg->in_end = data + len;
    if (msg->dechunk)
        msg->dechunk_dst = (char *)data;
    e = llhttp_execute(&msg->parser, data, len);
    if (e == HPE_OK) {
        *used = len;
        keep_tail(msg, data, len);
        if (msg->phase == HMSG_HEAD) {
            msg->head_len = (uint32_t)(data + len - head);
            return check_head_limits(msg);
        }
        return HTTP_NEED_MORE;
    }
    stop = llhttp_get_error_pos(&msg->parser);
    if (e == HPE_PAUSED) {
        *used = (size_t)(stop - data);
        if (msg->head_pending) {
            msg->head_pending = false;
            msg->head_len = (uint32_t)(stop - head);
            if (msg->line_len == 0)
                msg->line_len = msg->head_len - 2;
            if (check_head_limits(msg) == HTTP_INVALID)
                return HTTP_INVALID;
            return HTTP_HEAD_DONE;
        }
        keep_tail(msg, data, *used);
        /* A chunked body ends with CRLF after the last line: llhttp also takes a bare LF there. */
        if ((msg->parser.flags & F_CHUNKED) && memcmp(msg->tail, "\n\r\n", 3) != 0) {
            fail(msg, msg->parser.type == HTTP_REQUEST ? 400 : 502,
                 "chunked body not ended by CRLF");
            return HTTP_INVALID;
        }
        return HTTP_MSG_DONE;
    }
    if (e == HPE_PAUSED_UPGRADE) {
        *used = (size_t)(stop - data);
        return HTTP_UPGRADED;
    }
    /* Consumed up to the error: de-chunked bytes before it stay valid. */
    if (stop >= data && stop <= data + len)
        *used = (size_t)(stop - data);
    if (msg->phase == HMSG_HEAD) {
        msg->head_len = (uint32_t)(stop - head);
        if (check_head_limits(msg) == HTTP_INVALID)
            return HTTP_INVALID;
    }
    return parse_error(msg, e);
}

enum http_result http_parse_eof(struct http_msg *msg)
{
    llhttp_errno_t e;

    if (llhttp_get_errno(&msg->parser) == HPE_PAUSED)
        llhttp_resume(&msg->parser);
    if (msg->phase == HMSG_BODY && llhttp_message_needs_eof(&msg->parser)) {
        e = llhttp_finish(&msg->parser);
        if (e == HPE_OK || e == HPE_PAUSED) {
            msg->phase = HMSG_DONE;
            return HTTP_MSG_DONE;
        }
    }
    return HTTP_INVALID;
}

bool http_method_idempotent(const struct http_msg *req)
{
    switch (req->parser.method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE:
        return true;
    default:
        return false;
    }
}

bool http_keep_alive(const struct http_msg *msg)
{
    if (msg->flags & HF_CONN_CLOSE)
        return false;
    if (msg->minor == 0)
        return (msg->flags & HF_CONN_KA) != 0;
    return true;
}

/* --- writing heads ------------------------------------------------------ */

#define VIA_TOKEN "1.1 veer"

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static char *put_span(char *o, const char *head, struct http_span s)
{
    return put(o, head + s.off, s.len);
}

static char *put_header(char *o, const char *head, const struct http_hdr *h)
{
    o = put_span(o, head, h->name);
    *o++ = ':';
    *o++ = ' ';
    o = put_span(o, head, h->value);
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

/*
 * One combined list field from every field named `name` (X-Forwarded-For,
 * Via), followed by our own element.
 */
static char *put_list(char *o, const struct http_msg *msg, const char *head, int first,
                      const char *name, const char *mine)
{
    size_t nlen = strlen(name);

    o = put(o, name, nlen);
    *o++ = ':';
    *o++ = ' ';
    if (first >= 0) {
        for (uint32_t i = (uint32_t)first; i < msg->nhdr; i++) {
            const struct http_hdr *h = &msg->hdr[i];

            if (h->name.len == nlen && strncasecmp(head + h->name.off, name, nlen) == 0 &&
                h->value.len) {
                o = put_span(o, head, h->value);
                *o++ = ',';
                *o++ = ' ';
            }
        }
    }
    o = put(o, mine, strlen(mine));
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

size_t http_request_bound(const struct http_msg *req, const struct http_fwd_info *fi)
{
    /* Every kept byte, our own fields, separators per field. */
    size_t n = req->head_len + 4 * req->nhdr + strlen(fi->client_ip) +
               (fi->request_id ? strlen(fi->request_id) : 0) + 320;

    n += fi->target ? fi->target_len : 0;
    for (size_t i = 0; i < fi->nset; i++)
        n += strlen(fi->set[i].name) + strlen(fi->set[i].value) + 4;
    for (size_t i = 0; i < fi->nedit; i++)
        if (fi->edit[i].value)
            n += strlen(fi->edit[i].name) + strlen(fi->edit[i].value) + 4;
    return n;
}

/* Whether a route's request_headers set the Host field. */
static bool fwd_sets_host(const struct http_fwd_info *fi)
{
    for (size_t i = 0; i < fi->nset; i++)
        if (strcasecmp(fi->set[i].name, "host") == 0)
            return true;
    return false;
}

/*
 * Whether a route's request_headers or a module's edits leave the client's
 * field h out (removed or set anew).
 */
static bool fwd_replaced(const struct http_fwd_info *fi, const char *head, const struct http_hdr *h)
{
    for (size_t i = 0; i < fi->nset; i++)
        if (name_is(head, h, fi->set[i].name))
            return true;
    for (int i = 0; fi->remove && i < fi->remove->n; i++)
        if (name_is(head, h, fi->remove->v[i]))
            return true;
    for (size_t i = 0; i < fi->nedit; i++)
        if (name_is(head, h, fi->edit[i].name))
            return true;
    return false;
}

/* Whether a route's request_headers set or remove the field `name` (then a module's edit yields).
 */
static bool fwd_route_claims(const struct http_fwd_info *fi, const char *name)
{
    for (size_t i = 0; i < fi->nset; i++)
        if (strcasecmp(fi->set[i].name, name) == 0)
            return true;
    for (int i = 0; fi->remove && i < fi->remove->n; i++)
        if (strcasecmp(fi->remove->v[i], name) == 0)
            return true;
    return false;
}

const char *http_find_header(const struct http_msg *msg, const char *head, const char *name,
                             size_t *len)
{
    for (uint32_t i = 0; i < msg->nhdr; i++)
        if (name_is(head, &msg->hdr[i], name)) {
            *len = msg->hdr[i].value.len;
            return head + msg->hdr[i].value.off;
        }
    return NULL;
}

const char *http_find_header_count(const struct http_msg *msg, const char *head, const char *name,
                                   size_t *len, unsigned *count)
{
    const char *v = NULL;
    size_t nlen = strlen(name);
    unsigned k = 0;

    for (uint32_t i = 0; i < msg->nhdr; i++) {
        const struct http_hdr *h = &msg->hdr[i];

        if (h->drop || h->name.len != nlen || strncasecmp(head + h->name.off, name, nlen) != 0)
            continue;
        if (k++ == 0) {
            *len = h->value.len;
            v = head + h->value.off;
        }
    }
    *count = k;
    return v;
}

size_t http_response_bound(const struct http_msg *res)
{
    return res->head_len + 4 * res->nhdr + 160;
}

size_t http_build_request(const struct http_msg *req, const char *head,
                          const struct http_fwd_info *fi, char *out)
{
    char *o = out;
    struct http_span path, query;

    o = put_span(o, head, req->method);
    *o++ = ' ';
    if (fi->target) {
        /* A route's rewrite_prefix: the target built from the canonical path and the query. */
        o = put(o, fi->target, fi->target_len);
    } else {
        target(req, head, &path, &query);
        if (path.len == 0)
            *o++ = '/'; /* "http://host" or "http://host?q" */
        if (path.off + path.len == query.off) {
            /* Not rewritten: the query still follows the path. */
            path.len += query.len;
            query.len = 0;
        }
        o = put_span(o, head, path);
        if (query.len)
            o = put_span(o, head, query);
    }
    o = PUT_LIT(o, " HTTP/1.1\r\n");
    if (fwd_sets_host(fi)) {
        /* A route's request_headers set Host: that one, below, is the only one. */
    } else if (req->flags & HF_ABSOLUTE) {
        o = PUT_LIT(o, "Host: ");
        o = put_span(o, head, absolute_authority(req, head));
        o = PUT_LIT(o, "\r\n");
    } else if (req->host < 0) {
        /* HTTP/1.0 without Host, forwarded as HTTP/1.1: RFC 9112 3.2, empty when unknown. */
        o = PUT_LIT(o, "Host: \r\n");
    }
    for (uint32_t i = 0; i < req->nhdr; i++)
        if (!req->hdr[i].drop &&
            !((fi->nset || fi->remove || fi->nedit) && fwd_replaced(fi, head, &req->hdr[i])))
            o = put_header(o, head, &req->hdr[i]);
    for (size_t i = 0; i < fi->nset; i++) {
        o = put(o, fi->set[i].name, strlen(fi->set[i].name));
        o = PUT_LIT(o, ": ");
        o = put(o, fi->set[i].value, strlen(fi->set[i].value));
        o = PUT_LIT(o, "\r\n");
    }
    for (size_t i = 0; i < fi->nedit; i++) {
        const struct conf_header *e = &fi->edit[i];

        if (e->value == NULL || ((fi->nset || fi->remove) && fwd_route_claims(fi, e->name)))
            continue;
        o = put(o, e->name, strlen(e->name));
        o = PUT_LIT(o, ": ");
        o = put(o, e->value, strlen(e->value));
        o = PUT_LIT(o, "\r\n");
    }
    o = put_list(o, req, head, req->xff, "X-Forwarded-For", fi->client_ip);
    o = fi->tls ? PUT_LIT(o, "X-Forwarded-Proto: https\r\n")
                : PUT_LIT(o, "X-Forwarded-Proto: http\r\n");
    o = put_list(o, req, head, req->via, "Via", req->minor ? VIA_TOKEN : "1.0 veer");
    if (fi->request_id) {
        o = PUT_LIT(o, "X-Request-Id: ");
        o = put(o, fi->request_id, strlen(fi->request_id));
        o = PUT_LIT(o, "\r\n");
    }
    if (req->flags & HF_UPGRADE)
        o = PUT_LIT(o, "Connection: upgrade\r\n");
    o = PUT_LIT(o, "\r\n");
    return (size_t)(o - out);
}

size_t http_build_response(const struct http_msg *res, const char *head, bool close, bool ka10,
                           char *out)
{
    char *o = out;
    int st = res->status;

    o = PUT_LIT(o, "HTTP/1.1 ");
    *o++ = (char)('0' + st / 100 % 10);
    *o++ = (char)('0' + st / 10 % 10);
    *o++ = (char)('0' + st % 10);
    *o++ = ' ';
    o = put_span(o, head, res->reason);
    o = PUT_LIT(o, "\r\n");
    for (uint32_t i = 0; i < res->nhdr; i++) {
        const struct http_hdr *h = &res->hdr[i];

        if (h->drop)
            continue;
        if (res->dechunk && h->name.len == 17 && name_is(head, h, "transfer-encoding"))
            continue;
        o = put_header(o, head, h);
    }
    o = put_list(o, res, head, res->via, "Via", res->minor ? VIA_TOKEN : "1.0 veer");
    if (res->flags & HF_UPGRADE)
        o = PUT_LIT(o, "Connection: upgrade\r\n");
    else if (close)
        o = PUT_LIT(o, "Connection: close\r\n");
    else if (ka10)
        o = PUT_LIT(o, "Connection: keep-alive\r\n");
    o = PUT_LIT(o, "\r\n");
    return (size_t)(o - out);
}

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static const char *error_slug(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 408:
        return "request_timeout";
    case 413:
        return "content_too_large";
    case 414:
        return "uri_too_long";
    case 417:
        return "expectation_failed";
    case 431:
        return "request_header_fields_too_large";
    case 501:
        return "not_implemented";
    case 502:
        return "bad_gateway";
    case 503:
        return "service_unavailable";
    case 504:
        return "gateway_timeout";
    case 505:
        return "http_version_not_supported";
    default:
        return "error";
    }
}

size_t http_error_response(int status, const char *detail, bool close, const char *extra, char *out,
                           size_t outlen)
{
    char body[256], safe[160];
    int blen, n;
    size_t j = 0;

    /* The detail is ours, but may quote a system or parser message: keep JSON valid. */
    for (const char *d = detail ? detail : ""; *d && j < sizeof(safe) - 1; d++)
        safe[j++] = (*d == '"' || *d == '\\' || (unsigned char)*d < 0x20) ? '\'' : *d;
    safe[j] = '\0';
    blen = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":%d,\"detail\":\"%s\"}\n",
                    error_slug(status), status, safe);
    if (blen < 0 || blen >= (int)sizeof(body))
        blen = (int)sizeof(body) - 1;
    n = snprintf(out, outlen,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 "Cache-Control: no-store\r\n%s%s\r\n%.*s",
                 status, http_reason(status), blen, close ? "Connection: close\r\n" : "",
                 extra ? extra : "", blen, body);
    if (n < 0)
        return 0;
    return (size_t)n < outlen ? (size_t)n : outlen - 1;
}
