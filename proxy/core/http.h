/*
 * http.h - HTTP/1.1 message heads on top of llhttp (strict mode).
 *
 * An http_msg parses one message at a time out of a contiguous buffer. The
 * head must be contiguous in that buffer; header names and values are kept
 * as spans relative to the head's first byte, so the buffer may be compacted
 * or grown between reads (the caller moves `head_off` along). After the head
 * is complete, veer's own RFC 9112 checks run (llhttp, even strict, accepts
 * obs-fold, Transfer-Encoding in HTTP/1.0, TE lists, extra spaces in the
 * request line, HTTP/0.9 and HTTP/2.0 request lines). Body bytes are then
 * run through the same parser only to find where the message ends; they are
 * forwarded as they came (chunked framing included, already validated).
 */
#ifndef VEER_HTTP_H
#define VEER_HTTP_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <strings.h>

struct vbuf;
struct conf_header;
struct conf_strings;

struct http_span {
    uint32_t off; /* relative to the head's first byte */
    uint32_t len;
};

struct http_hdr {
    struct http_span name;
    struct http_span value;
    uint8_t drop; /* hop-by-hop or replaced: not forwarded */
};

/* Limits applied while parsing a head. */
struct http_limits {
    uint32_t line_bytes;   /* request line or status line; over it: 414 (request) */
    uint32_t header_bytes; /* header section; over it: 431 */
    uint32_t header_count; /* over it: 431 */
    uint64_t body_bytes;   /* request body; over it: 413; 0 = unlimited */
};

/* msg->flags */
enum {
    HF_CHUNKED = 1u << 0,      /* Transfer-Encoding: chunked */
    HF_HAS_CL = 1u << 1,       /* Content-Length present */
    HF_CONN_CLOSE = 1u << 2,   /* Connection: close */
    HF_CONN_KA = 1u << 3,      /* Connection: keep-alive */
    HF_CONN_UPGRADE = 1u << 4, /* Connection: upgrade */
    HF_UPGRADE = 1u << 5,      /* Upgrade requested (request) or granted (101) */
    HF_EXPECT_100 = 1u << 6,   /* Expect: 100-continue */
    HF_ABSOLUTE = 1u << 7,     /* absolute-form request target */
    HF_PATH = 1u << 8,         /* path and query set: http_canonicalize_path ran */
    HF_NO_BODY = 1u << 9,      /* message has no body whatever its headers say */
};

/* Phases of a message. */
enum http_phase {
    HMSG_HEAD = 0, /* reading the head */
    HMSG_BODY,     /* head done, body bytes being framed */
    HMSG_DONE,     /* message complete */
};

/* Results of http_parse(). */
enum http_result {
    HTTP_NEED_MORE = 0, /* all bytes consumed, message not complete */
    HTTP_HEAD_DONE,     /* head complete; *used stops right after it */
    HTTP_MSG_DONE,      /* message complete; *used stops right after it */
    HTTP_UPGRADED,      /* 101 received: the rest of the stream is a tunnel */
    HTTP_INVALID,       /* malformed: msg->err_status says what to answer */
};

/* Chunk extension bytes allowed per chunk (the rest of a message has limits too). */
#define CHUNK_EXT_MAX 4096

struct http_msg {
    llhttp_t parser;
    const struct http_limits *limits;
    const char *base;  /* head's first byte, valid during http_parse() only */
    uint32_t head_len; /* bytes of the head so far; final once phase > HEAD */
    uint32_t line_len; /* request/status line, CRLF included, once known */
    enum http_phase phase;
    uint32_t flags;
    uint16_t err_status; /* 400, 413, 414, 431, 501, 505 ... */
    const char *err_what;
    struct http_span method; /* request */
    struct http_span url;    /* request: the target as it came (its path may be rewritten) */
    struct http_span path;   /* request, with HF_PATH: the canonical path (empty: "/") */
    struct http_span query;  /* request, with HF_PATH: '?' and the rest of the target, or empty */
    struct http_span reason; /* response */
    int status;              /* response */
    uint8_t major, minor;
    uint8_t last_cb;   /* parser bookkeeping */
    bool head_pending; /* head complete, not reported yet */
    bool head_request; /* response parser: answering a HEAD */
    bool dechunk;      /* response body: strip chunk framing in place */
    /* When set, told every body byte (payload, de-chunked) as it is parsed. */
    void (*on_body)(void *ctx, const char *at, size_t len);
    void *on_body_ctx;
    char *dechunk_dst; /* next byte of de-chunked body */
    int host;          /* index of Host header, -1 if none */
    int xff;           /* first X-Forwarded-For, -1 if none */
    int via;           /* first Via, -1 if none */
    uint64_t content_length;
    uint64_t body_seen;            /* body bytes counted (payload, not framing) */
    uint32_t ext_bytes;            /* chunk extension bytes of the current chunk */
    const char *in_start, *in_end; /* the bytes of the http_parse() call in progress */
    bool tval_at_end;              /* the last trailer value span ended with them */
    char tail[3];                  /* the last bytes parsed */
    bool bol;                      /* they end with LF and whitespace only */
    uint32_t tname_len;            /* name bytes of the trailer field being parsed */
    uint32_t nhdr;
    uint32_t max_hdr;
    struct http_hdr hdr[];
};

size_t http_msg_size(uint32_t max_headers);

/* Prepare msg (allocated with http_msg_size) to parse a new request/response. */
void http_msg_init(struct http_msg *msg, llhttp_type_t type, const struct http_limits *lim);

/*
 * Parse len new bytes at data. `head` is the message's first byte (where
 * the head starts in the buffer; data lies at or after it). Sets *used to
 * the bytes consumed. See enum http_result.
 */
enum http_result http_parse(struct http_msg *msg, const char *head, const char *data, size_t len,
                            size_t *used);

/* Tell the parser the peer closed: completes a close-delimited body. */
enum http_result http_parse_eof(struct http_msg *msg);

/*
 * Canonicalize the request's path in place (path.h: dot-segments removed,
 * slashes merged, escaped unreserved characters decoded), once its head is
 * parsed and before anything reads the path: route matching, the modules
 * and the access log all see, and the backend is sent, that one spelling.
 * The path is the origin-form target before its '?', or the path part of an
 * absolute-form target; the query is kept as it came. The asterisk-form
 * "*" of OPTIONS and an absolute-form target without a path ("/" is
 * forwarded) are left alone; authority-form (CONNECT) never gets here (501).
 *
 * head must be the writable head http_parse() parsed. The canonical path is
 * written over the start of the old one (never longer); the bytes between
 * its end and the query are left stale, so from here on only req->path and
 * req->query (HF_PATH) describe the target, never req->url. A path that is
 * already canonical costs one scan and no write. Returns 0, or -1 with
 * err_status 400 and err_what saying why (%2F, %5C, %00, an invalid escape,
 * a climb above "/"): then the head is left as it came, for the log.
 * Calling it again does nothing.
 */
int http_canonicalize_path(struct http_msg *req, char *head);

/*
 * The request's path, without the query; "/" for an empty absolute-form
 * path. Canonical once http_canonicalize_path() accepted it, as it came
 * before (or when it refused it).
 */
const char *http_target_path(const struct http_msg *req, const char *head, size_t *len);

/* The query of the request target, from its '?' on; "" (len 0) when it has none. */
const char *http_target_query(const struct http_msg *req, const char *head, size_t *len);

/*
 * The host the request names: the authority of an absolute-form target,
 * else the Host field's value; NULL when it has neither.
 */
const char *http_request_host(const struct http_msg *req, const char *head, size_t *len);

/* Is this request method idempotent (RFC 9110 §9.2.2)? */
bool http_method_idempotent(const struct http_msg *req);

/* Whether the message asks to keep its connection open after it. */
bool http_keep_alive(const struct http_msg *msg);

/* Span helpers; `head` is the head's first byte. */
static inline bool http_span_eq(const char *head, struct http_span s, const char *lit, size_t n)
{
    return s.len == n && strncasecmp(head + s.off, lit, n) == 0;
}

/* Everything the request head builder needs to know about the connection. */
struct http_fwd_info {
    const char *client_ip;  /* textual address for X-Forwarded-For */
    bool tls;               /* client side is TLS: X-Forwarded-Proto https */
    const char *request_id; /* X-Request-Id to add (the request had none), or NULL */
    /* A route's rewrite: the request target to send instead of the client's (NULL: as is). */
    const char *target;
    size_t target_len;
    /*
     * A route's request_headers: fields of the client's request with one of
     * these names are left out (remove), or replaced by the given value
     * (set, added after the client's fields). veer's own forwarding fields
     * (X-Forwarded-For/-Proto, Via, X-Request-Id) are added after them.
     */
    const struct conf_header *set;
    size_t nset;
    const struct conf_strings *remove;
    /*
     * The modules' edits (module.h txn_set_request_header): the client's
     * fields with one of these names are left out, and an edit with a value
     * is added after the route's set. A name the route's request_headers set
     * or remove is the route's: the operator's rewrite wins.
     */
    const struct conf_header *edit;
    size_t nedit;
};

/* Value of the first header named `name` (case-insensitive), or NULL. */
const char *http_find_header(const struct http_msg *msg, const char *head, const char *name,
                             size_t *len);

/*
 * Among the fields that are forwarded (not hop-by-hop), the value of the
 * first one named `name` (NULL when none is), and in *count how many there are.
 */
const char *http_find_header_count(const struct http_msg *msg, const char *head, const char *name,
                                   size_t *len, unsigned *count);

/*
 * Upper bound of the bytes http_build_request() / http_build_response()
 * may write for this message.
 */
size_t http_request_bound(const struct http_msg *req, const struct http_fwd_info *fi);
size_t http_response_bound(const struct http_msg *res);

/*
 * Write the request head veer sends upstream (HTTP/1.1, origin-form target:
 * the canonical path and the query once http_canonicalize_path() ran,
 * hop-by-hop headers removed, Host from an absolute-form target,
 * X-Forwarded-For/-Proto and Via added) at out, which has room for
 * http_request_bound() bytes. Returns the length.
 */
size_t http_build_request(const struct http_msg *req, const char *head,
                          const struct http_fwd_info *fi, char *out);

/*
 * Write the response head veer sends the client. `close` adds Connection:
 * close; `ka10` adds Connection: keep-alive for an HTTP/1.0 client.
 */
size_t http_build_response(const struct http_msg *res, const char *head, bool close, bool ka10,
                           char *out);

/*
 * A complete error response with a small JSON body, e.g.
 * {"error":"bad_gateway","status":502,"detail":"..."}. Returns the length
 * written to out (at most outlen). `close` adds Connection: close;
 * `extra` (may be NULL) is inserted verbatim as extra header lines.
 */
size_t http_error_response(int status, const char *detail, bool close, const char *extra, char *out,
                           size_t outlen);

const char *http_reason(int status);

#endif
