"""Request smuggling and framing: a corpus of raw-byte vectors through veer.

Every vector is one data row: a name, the exact bytes a client sends, the
outcome(s) RFC 9112 / RFC 9110 allow (with the section that says so), and
the test checks both ends:

- the client: the status, and for a refusal that veer closed the
  connection (read until EOF with a deadline) and sent nothing after the one
  error response;
- a recording backend that keeps every byte veer sends it and parses it with
  a strict parser of its own: either nothing reached it at all, or exactly
  one request arrived with the expected method, target, Host and body,
  framed unambiguously (one Content-Length or "Transfer-Encoding: chunked",
  never both, no obs-fold, no bare CR/LF/NUL), and no second request ever
  appears. Where the connection stays open, a follow-up "GET /canary" on the
  same connection must be answered as /canary: a desync shows as the wrong
  answer, an extra request at the backend or a stray response.

Where the RFC allows more than one behaviour (e.g. reject a message with
obs-fold, or replace the fold with SP and forward), the row lists each
allowed outcome, the preferred (strictest) first; the test passes when the
observed behaviour is one of them in every detail. Where the RFC is the
authority and veer differs, the row keeps the RFC's answer and fails.

Sources: RFC 9112 sections 2.2, 2.3, 3, 3.2, 5.1, 5.2, 6.1, 6.3, 7.1, 9.6;
RFC 9110 sections 4.2, 5.5, 5.6.1, 7.2, 8.6, 9.1; James Kettle, "HTTP Desync
Attacks: Request Smuggling Reborn" (PortSwigger, 2019) and "HTTP/2: The
Sequel is Always Worse" (2021) for CL.TE, TE.CL and the Transfer-Encoding
obfuscations; Bishop Fox's h2c smuggling note (2020); the chunk-extension
and bare-LF chunk vectors of Kallus et al., "HTTP Garden" (2024).

Run: VEER_BIN=build/veer python3 -m unittest -v test_smuggling
"""

import collections
import threading
import unittest

import helpers
import veertest
from helpers import SMUGGLE_DEADLINE, RawClient, RecordingBackend

HOST = b"Host: victim.example"
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
CANARY = b"GET /canary HTTP/1.1\r\nHost: canary.example\r\n\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: victim.example\r\n\r\n"


def msg(start, *fields, body=b""):
    """A request: start line, field lines, the empty line, then body."""
    return b"".join(l + b"\r\n" for l in (start,) + fields) + b"\r\n" + body


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


ANY = object()  # Host: present exactly once, any value


class Reject(collections.namedtuple("Reject", "statuses streamed no_response")):
    """An error response with one of statuses, then the connection closed;
    nothing forwarded. streamed=True: the error is in the body, and a proxy
    that streams may already have sent the head (and some body) upstream;
    then the backend may hold an incomplete request, never a complete one.
    no_response=True: closing without any response is allowed too."""


def reject(*statuses, streamed=False, no_response=False):
    return Reject(statuses or (400,), streamed, no_response)


class Forward(collections.namedtuple("Forward", "method target host body keepalive")):
    """Exactly one request forwarded, normalised; the client gets the
    backend's 200. keepalive=False: the client connection must close after
    the response (HTTP/1.0, or a framing the RFC says to close after)."""


def forward(method="POST", target="/", host="victim.example", body=b"", keepalive=True):
    return Forward(method, target, host, body, keepalive)


V = collections.namedtuple("V", "name raw expect why half_close")


def v(name, raw, expect, why, half_close=False):
    if isinstance(expect, (Reject, Forward)):
        expect = (expect,)
    return V(name, raw, expect, why, half_close)


# A request carrying SMUGGLED as a body in chunked framing (TE.CL payload).
TECL_BODY = chunk(SMUGGLED) + b"0\r\n\r\n"

VECTORS = [
    # --- controls: the harness sees clean requests pass -------------------------------
    v("control_get", msg(b"GET /control HTTP/1.1", HOST),
      forward("GET", "/control"), "a plain request is forwarded once"),
    v("control_post_length", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5", body=b"hello"),
      forward(body=b"hello"), "RFC 9112 6.2"),
    v("control_post_chunked",
      msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked", body=CHUNKED_HELLO),
      forward(body=b"hello"), "RFC 9112 7.1"),

    # --- Content-Length together with Transfer-Encoding (CL.TE / TE.CL) ---------------
    # RFC 9112 6.1: a server MAY reject such a request or process it by
    # Transfer-Encoding alone, and MUST close the connection after responding;
    # 6.3(3): an intermediary that forwards it MUST first remove Content-Length.
    v("cl_te", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 6",
                   b"Transfer-Encoding: chunked", body=b"0\r\n\r\nG"),
      (reject(), forward(body=b"", keepalive=False)), "RFC 9112 6.1, 6.3(3); Kettle CL.TE"),
    v("te_cl", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                   b"Content-Length: 4", body=TECL_BODY),
      (reject(), forward(body=SMUGGLED, keepalive=False)), "RFC 9112 6.1, 6.3(3); Kettle TE.CL"),
    v("cl_te_smuggled_get", msg(b"POST / HTTP/1.1", HOST,
                                b"Content-Length: %d" % (5 + len(SMUGGLED)),
                                b"Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
      (reject(), forward(body=b"", keepalive=False)), "RFC 9112 6.1; Kettle CL.TE full request"),
    v("cl0_te", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 0", b"Transfer-Encoding: chunked",
                    body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello", keepalive=False)), "RFC 9112 6.1"),

    # --- Transfer-Encoding obfuscations -----------------------------------------------
    v("te_case_Chunked", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: Chunked",
                             body=CHUNKED_HELLO),
      forward(body=b"hello"), "RFC 9112 7: transfer-coding names are case-insensitive"),
    v("te_all_upper", msg(b"POST / HTTP/1.1", HOST, b"TRANSFER-ENCODING: CHUNKED",
                          body=CHUNKED_HELLO),
      forward(body=b"hello"),
      "RFC 9110 5.1 (field names) and RFC 9112 7 (codings) are case-insensitive"),
    v("te_tab_before_value", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding:\tchunked",
                                 body=CHUNKED_HELLO),
      forward(body=b"hello"), "RFC 9112 5: HTAB is OWS around the value"),
    v("te_trailing_space", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked ",
                               body=CHUNKED_HELLO),
      forward(body=b"hello"), "RFC 9112 5: trailing OWS is not part of the value"),
    v("te_trailing_tab", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked\t",
                             body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello")),
      "RFC 9112 5: trailing OWS (HTAB too) is not part of the value; llhttp (strict) does not "
      "frame it as chunked, so veer refuses rather than forward framing its parser disagrees "
      "with (issue 8: a 4xx with nothing forwarded, or one normalised request)"),
    v("te_space_before_colon", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding : chunked",
                                   b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 5.1: MUST reject whitespace between field name and colon with 400"),
    v("te_tab_before_colon", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding\t: chunked",
                                 b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 5.1"),
    v("te_underscore_name", msg(b"POST / HTTP/1.1", HOST, b"Transfer_Encoding: chunked",
                                b"Content-Length: 5", body=b"hello"),
      forward(body=b"hello"),
      "RFC 9110 5.1: Transfer_Encoding is another (unknown) field; framing is Content-Length"),
    v("te_xchunked_with_cl", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: xchunked",
                                 b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 6.3(4): chunked not final in a request: MUST 400 and close"),
    v("te_xchunked", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: xchunked",
                         body=CHUNKED_HELLO),
      reject(), "RFC 9112 6.3(4)"),
    v("te_folded_onto_host", msg(b"POST / HTTP/1.1", HOST, b" Transfer-Encoding: chunked",
                                 b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 5.2: obs-fold: reject, or unfold giving an invalid Host (400)"),
    v("te_ws_line_after_start", msg(b"POST / HTTP/1.1", b" Transfer-Encoding: chunked", HOST,
                                    b"Content-Length: 5", body=b"hello"),
      (reject(), forward(body=b"hello")),
      "RFC 9112 2.2: whitespace-preceded line after the start-line: reject or ignore it"),
    v("te_lf_in_name", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding\n: chunked",
                           b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 5.1: no whitespace (LF) between name and colon"),
    v("te_after_bare_lf", msg(b"POST / HTTP/1.1", HOST, b"X: X\nTransfer-Encoding: chunked",
                              body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello")),
      "RFC 9112 2.2: a recipient MAY treat bare LF as a line terminator; RFC 9110 5.5 else"),
    v("te_vertical_tab", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding:\x0bchunked",
                             b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9110 5.5: VT is not OWS nor field-vchar; RFC 9112 6.3(4)"),
    v("te_obs_fold_value", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding:", b" chunked",
                               body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello")),
      "RFC 9112 5.2: obs-fold: reject 400, or replace with SP (= chunked) and forward"),
    v("te_obs_fold_value_with_cl", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5",
                                       b"Transfer-Encoding:", b" chunked", body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello", keepalive=False)), "RFC 9112 5.2 then 6.1"),
    v("te_gzip_chunked", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: gzip, chunked",
                             body=CHUNKED_HELLO),
      reject(400, 501), "RFC 9112 6.1: unknown transfer coding: SHOULD 501"),
    v("te_chunked_gzip", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked, gzip",
                             body=CHUNKED_HELLO),
      reject(), "RFC 9112 6.3(4): chunked not final: MUST 400 and close"),
    v("te_duplicate_chunked", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                  b"Transfer-Encoding: chunked", body=CHUNKED_HELLO),
      reject(400, 501), "RFC 9112 6.1: chunked MUST NOT be applied twice (chunked, chunked)"),
    v("te_duplicate_chunked_then_x", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                         b"Transfer-Encoding: x", body=CHUNKED_HELLO),
      reject(), "RFC 9110 5.3 combines to 'chunked, x'; RFC 9112 6.3(4): MUST 400"),
    v("te_duplicate_x_then_chunked", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: x",
                                         b"Transfer-Encoding: chunked", body=CHUNKED_HELLO),
      reject(400, 501), "RFC 9112 6.1: unknown coding x: SHOULD 501"),
    v("te_identity", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: identity",
                         b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 6.3(4): identity is no longer a coding; chunked not final"),
    v("te_empty_value", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: ",
                            b"Content-Length: 5", body=b"hello"),
      (reject(), forward(body=b"hello")),
      "RFC 9112 6.3(4) reject, or an empty list dropped with Content-Length framing"),
    v("te_empty_list_element", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: , chunked",
                                   body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello")),
      "RFC 9110 5.6.1: a recipient MUST accept and ignore empty list elements; veer forwards "
      "only a Transfer-Encoding that is exactly chunked, so refusing (nothing forwarded) is its "
      "safe answer (issue 8: a 4xx, or one normalised request)"),
    v("te_quoted", msg(b"POST / HTTP/1.1", HOST, b'Transfer-Encoding: "chunked"',
                       b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 6.3(4): a quoted-string is not the chunked coding"),
    v("te_nul_after_value", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked\x00",
                                b"Content-Length: 5", body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello", keepalive=False)),
      "RFC 9110 5.5: NUL: reject, or SP then RFC 9112 6.1"),
    v("te_http10", msg(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked", body=CHUNKED_HELLO),
      reject(), "RFC 9112 6.1: TE in HTTP/1.0: framing is faulty; close"),
    v("te_http10_with_cl", msg(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked",
                               b"Content-Length: 5", body=b"hello"),
      reject(), "RFC 9112 6.1: faulty even if a Content-Length is present"),

    # --- malformed or conflicting Content-Length --------------------------------------
    # RFC 9112 6.3(5): an invalid Content-Length in a request is an unrecoverable
    # framing error: 400 and close.
    v("cl_plus", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: +5", body=b"hello"),
      reject(), "RFC 9110 8.6: 1*DIGIT; RFC 9112 6.3(5)"),
    v("cl_minus", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: -5", body=b"hello"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_space_inside", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 1 0", body=b"helloworld"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_hex", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 0x5", body=b"hello"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_overflow_2_64", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 18446744073709551621",
                              body=b"hello"),
      reject(400, 413), "RFC 9112 6.3(5): 2^64+5 wraps to 5 in a 64-bit parser"),
    v("cl_overflow_long", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: " + b"9" * 40,
                              body=b"hello"),
      reject(400, 413), "RFC 9112 6.3(5)"),
    v("cl_list_same", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5, 5", body=b"hello"),
      (reject(), forward(body=b"hello")),
      "RFC 9110 8.6: MAY reject or replace by one valid Content-Length"),
    v("cl_list_different", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5, 6",
                               body=b"hello!"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_duplicate_same", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5",
                               b"Content-Length: 5", body=b"hello"),
      (reject(), forward(body=b"hello")), "RFC 9110 8.6"),
    v("cl_duplicate_different", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5",
                                    b"Content-Length: 6", body=b"hello!"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_empty", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: ", body=b"hello"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_decimal_point", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5.0", body=b"hello"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_trailing_garbage", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 5abc",
                                 body=b"hello"),
      reject(), "RFC 9112 6.3(5)"),
    v("cl_vertical_tab", msg(b"POST / HTTP/1.1", HOST, b"Content-Length:\x0b5", body=b"hello"),
      reject(), "RFC 9110 5.5, 8.6"),
    v("cl_space_before_colon", msg(b"POST / HTTP/1.1", HOST, b"Content-Length : 5",
                                   body=b"hello"),
      reject(), "RFC 9112 5.1: MUST 400"),
    v("cl_leading_zeros", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 0005", body=b"hello"),
      forward(body=b"hello"), "RFC 9110 8.6: 1*DIGIT, leading zeros are valid"),
    v("cl_get_with_request_body", msg(b"GET /cl0 HTTP/1.1", HOST,
                                      b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
      forward("GET", "/cl0", body=SMUGGLED),
      "RFC 9110 9.3.1, RFC 9112 6.3(6): a GET body framed by Content-Length (Kettle CL.0)"),
    v("post_body_is_a_request", msg(b"POST / HTTP/1.1", HOST,
                                    b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
      forward(body=SMUGGLED), "a second request inside the first one's body is just body"),
    v("connection_names_content_length",
      msg(b"POST / HTTP/1.1", HOST, b"Connection: Content-Length",
          b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
      (reject(), forward(body=SMUGGLED)),
      "RFC 9110 7.6.1: dropping the listed Content-Length must not unframe the body"),
    v("connection_names_transfer_encoding",
      msg(b"POST / HTTP/1.1", HOST, b"Connection: Transfer-Encoding",
          b"Transfer-Encoding: chunked", body=CHUNKED_HELLO),
      (reject(), forward(body=b"hello")), "RFC 9110 7.6.1"),

    # --- control characters, bare CR and LF -------------------------------------------
    v("bare_lf_line_ends", b"GET /lf HTTP/1.1\nHost: victim.example\n\n",
      (reject(), forward("GET", "/lf")), "RFC 9112 2.2: a recipient MAY accept bare LF"),
    v("bare_cr_after_version", b"GET /cr HTTP/1.1\rHost: victim.example\r\n\r\n",
      reject(), "RFC 9112 2.2: bare CR invalid, or SP (still an invalid request-line)"),
    v("nul_in_target", msg(b"GET /a\x00b HTTP/1.1", HOST),
      reject(), "RFC 9112 3.2: not a request-target"),
    v("ctl_in_target", msg(b"GET /a\x01b HTTP/1.1", HOST), reject(), "RFC 9112 3.2"),
    v("del_in_target", msg(b"GET /a\x7fb HTTP/1.1", HOST), reject(), "RFC 9112 3.2"),
    v("nul_in_method", msg(b"G\x00ET / HTTP/1.1", HOST), reject(), "RFC 9110 9.1: token"),
    v("tab_separates_request_line", msg(b"GET\t/tab HTTP/1.1", HOST),
      (reject(), forward("GET", "/tab")),
      "RFC 9112 3: MAY parse on whitespace, at the risk of smuggling"),
    v("double_space_request_line", msg(b"GET  /ds HTTP/1.1", HOST),
      (reject(), forward("GET", "/ds")), "RFC 9112 3"),
    v("trailing_space_request_line", msg(b"GET /ts HTTP/1.1 ", HOST),
      (reject(), forward("GET", "/ts")), "RFC 9112 3"),
    v("fragment_in_target", msg(b"GET /a#frag HTTP/1.1", HOST),
      reject(), "RFC 9112 3.2: origin-form has no fragment; SHOULD 400"),
    v("bare_cr_in_value", msg(b"GET /v HTTP/1.1", HOST, b"X-A: a\rb"),
      (reject(), forward("GET", "/v")), "RFC 9110 5.5: reject, or replace CR by SP"),
    v("bare_cr_in_name", msg(b"GET / HTTP/1.1", HOST, b"X-A\r: b"), reject(), "RFC 9110 5.1"),
    v("nul_in_value", msg(b"GET /v HTTP/1.1", HOST, b"X-A: a\x00b"),
      (reject(), forward("GET", "/v")), "RFC 9110 5.5: reject, or replace NUL by SP"),
    v("nul_in_name", msg(b"GET / HTTP/1.1", HOST, b"X-\x00A: b"), reject(), "RFC 9110 5.1"),
    v("ctl_in_value", msg(b"GET /v HTTP/1.1", HOST, b"X-A: a\x01b"),
      (reject(), forward("GET", "/v")),
      "RFC 9110 5.5: other CTLs invalid (kept only in a safe context a proxy cannot know)"),
    v("space_in_name", msg(b"GET / HTTP/1.1", HOST, b"X A: b"), reject(), "RFC 9110 5.1"),
    v("field_without_colon", msg(b"GET / HTTP/1.1", HOST, b"X-A b"), reject(), "RFC 9112 5"),
    v("empty_field_name", msg(b"GET / HTTP/1.1", HOST, b": b"), reject(), "RFC 9112 5"),
    v("high_bit_in_name", msg(b"GET / HTTP/1.1", HOST, b"X-\xffA: b"), reject(), "RFC 9110 5.1"),
    v("obs_text_in_value", msg(b"GET /v HTTP/1.1", HOST, b"X-A: caf\xe9"),
      forward("GET", "/v"), "RFC 9110 5.5: obs-text is allowed in values"),
    v("obs_fold_other_field", msg(b"GET /v HTTP/1.1", HOST, b"X-A: a", b" b"),
      (reject(), forward("GET", "/v")), "RFC 9112 5.2: reject 400 or replace by SP"),
    v("obs_fold_empty_first_line", msg(b"GET /v HTTP/1.1", HOST, b"X-A:", b" b"),
      (reject(), forward("GET", "/v")), "RFC 9112 5.2"),

    # --- chunked framing errors ---------------------------------------------------------
    v("chunk_size_overflow", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                 body=b"FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
      reject(400, 413, streamed=True), "RFC 9112 7.1: overflow is a framing error"),
    v("chunk_size_2_64_plus_5", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                    body=b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
      reject(400, 413, streamed=True), "RFC 9112 7.1: wraps to 5 in 64 bits"),
    v("chunk_size_0x_prefix", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                  body=b"0x5\r\nhello\r\n0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1: chunk-size = 1*HEXDIG"),
    v("chunk_size_negative", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                 body=b"-5\r\nhello\r\n0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1"),
    v("chunk_size_leading_space", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                      body=b" 5\r\nhello\r\n0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1"),
    v("chunk_size_trailing_space", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                       body=b"5 \r\nhello\r\n0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1: BWS only before ';' of an extension"),
    v("chunk_ext_5k", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                          body=b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"),
      (reject(400, 413, 431, streamed=True), forward(body=b"hello")),
      "RFC 9112 7.1.1: a server ought to limit extensions (4xx); 5 KB may be in bounds"),
    v("chunk_ext_64k", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                           body=b"5;" + b"a" * 65536 + b"\r\nhello\r\n0\r\n\r\n"),
      reject(400, 413, 431, streamed=True),
      "RFC 9112 7.1.1: limit extensions like other parts of a message (headers: 32 KiB)"),
    v("chunk_many_extensions", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                   body=b"1" + b";a=b" * 20000 + b"\r\nx\r\n0\r\n\r\n"),
      reject(400, 413, 431, streamed=True), "RFC 9112 7.1.1: 80 KB of extensions on one chunk"),
    v("chunk_bad_terminator", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                  body=b"5\r\nhelloXX0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1: chunk-data CRLF"),
    v("chunk_data_longer_than_size", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                         body=b"3\r\nhello\r\n0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1"),
    v("chunk_bare_lf_lines", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                 body=b"5\nhello\n0\n\n"),
      reject(streamed=True),
      "RFC 9112 7.1: chunk lines end in CRLF (the 2.2 LF leniency is for fields)"),
    v("chunk_bare_cr_terminator", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                      body=b"5\r\nhello\r0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1"),
    v("chunk_ext_bare_lf", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                               body=b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
      reject(streamed=True), "RFC 9112 7.1.1"),
    v("last_chunk_then_request_as_trailer",
      msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
          body=b"5\r\nhello\r\n0\r\n" + SMUGGLED),
      reject(streamed=True), "RFC 9112 7.1.2: a request line is not a trailer field"),
    v("missing_final_crlf_then_eof",
      msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n"),
      reject(400, streamed=True, no_response=True),
      "RFC 9112 8: an incomplete message is never forwarded complete", half_close=True),
    v("content_length_in_trailer",
      msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
          body=b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
      forward(body=b"hello"), "RFC 9110 6.5.1: trailers never change framing"),

    # --- Host -----------------------------------------------------------------------
    v("host_missing", msg(b"GET / HTTP/1.1"), reject(), "RFC 9112 3.2: MUST 400"),
    v("host_duplicate_same", msg(b"GET / HTTP/1.1", HOST, HOST),
      reject(), "RFC 9112 3.2: MUST 400"),
    v("host_duplicate_different", msg(b"GET / HTTP/1.1", HOST, b"Host: evil.example"),
      reject(), "RFC 9112 3.2: MUST 400"),
    v("host_absolute_form_differs", msg(b"GET http://good.example/path?q=1 HTTP/1.1",
                                        b"Host: evil.example"),
      forward("GET", "/path?q=1", "good.example"),
      "RFC 9112 3.2.2: the target's authority wins; Host replaced"),
    v("host_absolute_form_https_port", msg(b"GET https://good.example:8443/x HTTP/1.1",
                                           b"Host: evil.example"),
      forward("GET", "/x", "good.example:8443"), "RFC 9112 3.2.2"),
    v("host_absolute_form_userinfo", msg(b"GET http://evil.example@good.example/ HTTP/1.1",
                                         b"Host: good.example"),
      reject(), "RFC 9110 4.2.4: userinfo SHOULD be treated as an error"),
    v("host_absolute_form_without_host", msg(b"GET http://good.example/ HTTP/1.1"),
      reject(), "RFC 9112 3.2: any HTTP/1.1 request without Host: MUST 400"),
    v("host_absolute_form_empty_authority", msg(b"GET http:///x HTTP/1.1", HOST),
      reject(), "RFC 9110 4.2.1: an http URI with an empty host MUST be rejected"),
    v("host_with_at_sign", msg(b"GET / HTTP/1.1", b"Host: evil.example@good.example"),
      reject(), "RFC 9110 7.2: Host = uri-host [ \":\" port ]"),
    v("host_with_path", msg(b"GET / HTTP/1.1", b"Host: good.example/evil"),
      reject(), "RFC 9110 7.2"),
    v("host_absent_http10", msg(b"GET /h10 HTTP/1.0"),
      forward("GET", "/h10", ANY, keepalive=False),
      "RFC 9112 3.2: forwarded as HTTP/1.1, the request MUST then carry a Host field"),

    # --- versions and methods -------------------------------------------------------------
    v("http09", b"GET /\r\n", reject(400, 505, no_response=True),
      "RFC 9112 2.3/3: no HTTP/0.9; the request line has no version"),
    v("http09_with_empty_line", b"GET /\r\n\r\n", reject(400, 505, no_response=True),
      "RFC 9112 2.3/3"),
    v("http20_version", msg(b"GET / HTTP/2.0", HOST), reject(400, 505), "RFC 9110 15.6.6"),
    v("http11x_version", msg(b"GET / HTTP/1.1x", HOST), reject(), "RFC 9112 2.3"),
    v("http_lowercase_version", msg(b"GET / http/1.1", HOST),
      reject(), "RFC 9112 2.3: HTTP-name is case-sensitive"),
    v("http_leading_zero_version", msg(b"GET / HTTP/01.1", HOST), reject(), "RFC 9112 2.3"),
    v("http12_version", msg(b"GET /v12 HTTP/1.2", HOST),
      (reject(400, 505), forward("GET", "/v12")),
      "RFC 9112 2.3: a higher minor version SHOULD be processed as HTTP/1.1; llhttp (strict) "
      "refuses HTTP/1.2, and veer does not second-guess its parser"),
    v("method_lowercase", msg(b"get /m HTTP/1.1", HOST),
      (reject(400, 501), forward("get", "/m")),
      "RFC 9110 9.1: methods are case-sensitive; unknown: forward or SHOULD 501"),
    v("method_unknown_token", msg(b"FOO /m HTTP/1.1", HOST),
      (reject(400, 501), forward("FOO", "/m")), "RFC 9110 9.1"),
    v("method_not_a_token", msg(b"GE(T / HTTP/1.1", HOST), reject(), "RFC 9110 9.1"),
    v("connect", msg(b"CONNECT good.example:443 HTTP/1.1", b"Host: good.example:443"),
      reject(400, 405, 501), "RFC 9110 9.3.6: a gateway need not tunnel; never to a backend"),
    v("get_asterisk", msg(b"GET * HTTP/1.1", HOST), reject(), "RFC 9112 3.2.4: OPTIONS only"),
    v("options_asterisk", msg(b"OPTIONS * HTTP/1.1", HOST),
      forward("OPTIONS", "*"), "RFC 9112 3.2.4"),
    v("h2c_upgrade_answered_200", msg(b"GET /h2c HTTP/1.1", HOST,
                                      b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                                      b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
      forward("GET", "/h2c"),
      "Bishop Fox h2c smuggling: a 200 answer keeps HTTP/1.1; no tunnel"),
]


class SmugglingCorpusTest(veertest.VeerTestCase):
    """One test per vector (generated below)."""

    def start(self, respond=None):
        be = RecordingBackend(respond)
        self._cleanup.append(be.close)
        vr = self.veer(helpers.quick_config([("b", be.address)]), workers=1)
        return be, vr

    def client(self, port):
        c = RawClient(port)
        self._cleanup.append(c.close)
        return c

    def fail_with(self, vec, what, be, extra=""):
        self.fail("%s: %s\n  sent: %r\n  allowed: %r\n  why: %s\n  backend:\n%s%s"
                  % (vec.name, what, vec.raw[:300], vec.expect, vec.why, be.describe(), extra))

    def warm(self, vr, be):
        """One request first, so veer holds an idle upstream connection: what
        it forwards for the vector goes out at once, not after a connect."""
        w = self.client(vr.port)
        w.send(b"GET /warm HTTP/1.1\r\nHost: warm.example\r\n\r\n")
        r = w.read_response()
        self.assertEqual((r.status, r.header("X-Echo-Target")), (200, "/warm"), r)
        w.close()
        conns, _ = be.snapshot()
        self.baseline = {conn.index: len(conn.raw) for conn in conns}

    def traffic(self, be):
        """[(conn, bytes after the warm-up, its requests but /warm)], all requests but /warm."""
        conns, reqs = be.snapshot()
        out = [(conn, bytes(conn.raw[self.baseline.get(conn.index, 0):]),
                [r for r in conn.requests if r.target != "/warm"]) for conn in conns]
        return out, [r for r in reqs if r.target != "/warm"]

    def run_vector(self, vec):
        be, vr = self.start()
        self.warm(vr, be)
        c = self.client(vr.port)
        c.send(vec.raw)
        if vec.half_close:
            c.half_close()
        res = c.read_response()
        rejects = [e for e in vec.expect if isinstance(e, Reject)]
        forwards = [e for e in vec.expect if isinstance(e, Forward)]
        if res is None:
            if not any(r.no_response for r in rejects):
                self.fail_with(vec, "connection closed without a response", be)
            self.check_rejected(vec, rejects, be, vr, c, res)
        elif res.status is not None and 200 <= res.status < 300:
            if not forwards:
                self.fail_with(vec, "forwarded (client got %r) where the RFC says reject" % res,
                               be)
            self.check_forwarded(vec, forwards, be, vr, c, res)
        else:
            if not rejects:
                self.fail_with(vec, "refused with %r where the RFC says forward" % res, be)
            self.check_rejected(vec, rejects, be, vr, c, res)
        vr.stop()

    def sentinel(self, vr):
        """A clean request on a new connection: veer still serves, and it marks
        the point by which anything veer forwarded for the vector has arrived."""
        s = self.client(vr.port)
        s.send(b"GET /sentinel HTTP/1.1\r\nHost: sentinel.example\r\nConnection: close\r\n\r\n")
        r = s.read_response()
        self.assertIsNotNone(r, "sentinel request got no response")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Echo-Target"), "/sentinel", r)

    def check_rejected(self, vec, rejects, be, vr, c, res):
        st = None if res is None else res.status
        ok = [r for r in rejects if st in r.statuses or (st is None and r.no_response)]
        if not ok:
            self.fail_with(vec, "status %r, allowed %r" % (st, [r.statuses for r in rejects]), be,
                           "\n  response: %r" % res)
        rest, eof = c.read_to_eof()
        if not eof:
            self.fail_with(vec, "connection left open after the %s refusal (framing in doubt)" % st,
                           be)
        if rest:
            self.fail_with(vec, "bytes after the error response: %r" % rest[:300], be)
        self.sentinel(vr)
        traffic, reqs = self.traffic(be)
        targets = [r.target for r in reqs]
        if targets != ["/sentinel"]:
            self.fail_with(vec, "backend got requests %r, expected only /sentinel" % targets, be)
        streamed = any(r.streamed for r in ok)
        for conn, extra, rq in traffic:
            if rq and rq[-1].target == "/sentinel":
                if extra != rq[-1].raw:
                    self.fail_with(vec, "bytes before the sentinel: %r" % extra[:300], be)
                continue
            if extra and not streamed:
                self.fail_with(vec, "bytes reached the backend: %r" % extra[:300], be)
            if extra:
                # A streamed head whose body then proved bad: veer must have
                # cut that backend connection, leaving the request incomplete.
                veertest.wait_for(lambda: conn.eof, timeout=SMUGGLE_DEADLINE,
                                  what="veer to close the backend connection of a bad body")
                if rq:
                    self.fail_with(vec, "a complete request reached the backend", be)

    def check_forwarded(self, vec, forwards, be, vr, c, res):
        errors = []
        for exp in forwards:
            err = self.forward_matches(exp, res, be)
            if err is None:
                break
            errors.append(err)
        else:
            self.fail_with(vec, "forwarded, but not as allowed: %s" % "; ".join(errors), be,
                           "\n  response: %r" % res)
        # Exactly one request so far, the expected one; now the connection.
        if exp.keepalive:
            c.send(CANARY)
            r2 = c.read_response()
            if r2 is None or r2.status != 200 or r2.header("X-Echo-Target") != "/canary":
                self.fail_with(vec, "follow-up GET /canary answered %r (desync)" % r2, be)
            c.half_close()
        rest, eof = c.read_to_eof()
        if rest:
            self.fail_with(vec, "stray bytes after the last response: %r" % rest[:300], be)
        if not eof:
            self.fail_with(vec, "connection not closed after the exchange ended", be)
        traffic, reqs = self.traffic(be)
        want = ["/canary"] if exp.keepalive else []
        got = [r.target for r in reqs[1:]]
        if got != want:
            self.fail_with(vec, "after the vector the backend got %r, expected %r" % (got, want),
                           be)
        for conn, _, rq in traffic:
            if conn.error or conn.leftover:
                self.fail_with(vec, "backend connection %d: error=%r leftover=%r"
                               % (conn.index, conn.error, conn.leftover[:200]), be)
            for r in rq:
                if r.anomalies:
                    self.fail_with(vec, "forwarded request is not clean: %r" % r.anomalies, be)

    def forward_matches(self, exp, res, be):
        """None when the first response and the first backend request are exp."""
        _, reqs = self.traffic(be)
        if not reqs:
            return "no request reached the backend"
        r = reqs[0]
        if res.status != 200 or res.header("X-Echo-Target") != exp.target:
            return "client got %r for target %r" % (res, exp.target)
        if r.method != exp.method or r.target != exp.target:
            return "backend got %s %s, expected %s %s" % (r.method, r.target, exp.method,
                                                          exp.target)
        hosts = r.values("Host")
        if exp.host is ANY:
            if len(hosts) != 1:
                return "forwarded with %d Host fields (HTTP/1.1 requires one)" % len(hosts)
        elif [h.lower() for h in hosts] != [exp.host.encode()]:
            return "forwarded Host %r, expected %r" % (hosts, exp.host)
        if r.body != exp.body:
            return "forwarded body %r, expected %r" % (r.body[:200], exp.body[:200])
        return None


def _add_vector_tests():
    seen = set()
    for i, vec in enumerate(VECTORS, 1):
        assert vec.name not in seen, vec.name
        seen.add(vec.name)
        name = "test_%03d_%s" % (i, vec.name)

        def t(self, vec=vec):
            self.run_vector(vec)
        t.__doc__ = None
        setattr(SmugglingCorpusTest, name, t)


_add_vector_tests()


# --- a body refused in the same read as its head ----------------------------------------


class RefusedWithItsHeadTest(veertest.VeerTestCase):
    """When the head and a bad body arrive in one read, veer knows the request
    is refused before it picks a backend (the session frames the body bytes
    that came along before it routes): nothing may reach the backend, even
    over an idle keep-alive upstream connection that would take it at once."""

    def refused_with_warm_pool(self, raw, status, extra_top=""):
        be = RecordingBackend()
        self._cleanup.append(be.close)
        vr = self.veer(helpers.quick_config([("b", be.address)], extra_top=extra_top), workers=1)
        w = RawClient(vr.port)
        self._cleanup.append(w.close)
        w.send(b"GET /warm HTTP/1.1\r\nHost: warm.example\r\n\r\n")
        self.assertEqual(w.read_response().status, 200)
        w.close()
        base = len(be.snapshot()[0][0].raw)
        c = RawClient(vr.port)
        self._cleanup.append(c.close)
        c.send(raw)
        r = c.read_response()
        self.assertIsNotNone(r)
        self.assertEqual(r.status, status, r)
        _, eof = c.read_to_eof()
        self.assertTrue(eof, "connection not closed after the refusal")
        s = RawClient(vr.port)
        self._cleanup.append(s.close)
        s.send(b"GET /sentinel HTTP/1.1\r\nHost: sentinel.example\r\n\r\n")
        self.assertEqual(s.read_response().header("X-Echo-Target"), "/sentinel")
        conns, _ = be.snapshot()
        sent = bytes(conns[0].raw[base:])
        for conn in conns[1:]:
            sent += bytes(conn.raw)
        self.assertNotIn(b"/refused", sent, "the refused request reached the backend:\n"
                         + be.describe())
        vr.stop()

    def test_bad_chunk_size_with_the_head_forwards_nothing(self):
        self.refused_with_warm_pool(
            msg(b"POST /refused HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                body=b"zz\r\nhello\r\n0\r\n\r\n"), 400)

    def test_chunked_body_over_the_limit_with_the_head_forwards_nothing(self):
        self.refused_with_warm_pool(
            msg(b"POST /refused HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                body=b"a\r\n0123456789\r\n0\r\n\r\n"), 413,
            extra_top="limits = { body_bytes = 4; };\n")


# --- response side ------------------------------------------------------------------


class ResponseFramingTest(veertest.VeerTestCase):
    """What a backend sends back: veer never forwards an ambiguous response, never
    tunnels on a 101 nobody asked for, and cuts a response whose framing breaks."""

    def start(self, respond):
        be = RecordingBackend(respond)
        self._cleanup.append(be.close)
        vr = self.veer(helpers.quick_config([("b", be.address)]), workers=1)
        return be, vr

    def client(self, port):
        c = RawClient(port)
        self._cleanup.append(c.close)
        return c

    @staticmethod
    def scripted(first):
        """A responder: the first request gets `first` (bytes or callable(sock)),
        then the connection is kept open and read; later requests are echoed."""
        def respond(sock, req, conn):
            if req.target == "/bad":
                if callable(first):
                    return first(sock)
                sock.sendall(first)
                return True
            return helpers.echo_response(sock, req)
        return respond

    def canary_after(self, c, be, bad_conn):
        """The client connection, when still open, gets a correct /canary answer
        over a different backend connection than the bad response's."""
        c.send(CANARY)
        r = c.read_response()
        if r is None:
            return  # veer closed the client connection: also fine
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Echo-Target"), "/canary", r)
        conns, reqs = be.snapshot()
        self.assertEqual([q.target for q in reqs], ["/bad", "/canary"], be.describe())
        self.assertNotEqual(reqs[1].conn, bad_conn, "the bad backend connection was reused")

    def bad_request(self, c):
        c.send(b"GET /bad HTTP/1.1\r\nHost: victim.example\r\n\r\n")
        return c.read_response()

    def test_conflicting_content_length_is_502_and_not_forwarded(self):
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nSECRETS"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        self.assertIsNotNone(r)
        self.assertEqual(r.status, 502, r)
        self.assertNotIn(b"SECRET", r.body)
        self.assertEqual(len(be.snapshot()[1]), 1, "retried: %s" % be.describe())
        self.canary_after(c, be, 0)
        vr.stop()

    def test_content_length_list_of_different_values_is_502(self):
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\nSECRETS"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        self.assertEqual(r.status, 502, r)
        self.assertNotIn(b"SECRET", r.body)
        self.canary_after(c, be, 0)
        vr.stop()

    def test_negative_content_length_is_502(self):
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nSECRETS"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        self.assertEqual(r.status, 502, r)
        self.assertNotIn(b"SECRET", r.body)
        self.canary_after(c, be, 0)
        vr.stop()

    def test_content_length_and_chunked_response_is_not_forwarded_ambiguous(self):
        # RFC 9112 6.3(3): Transfer-Encoding overrides; an intermediary that
        # forwards MUST remove Content-Length first. Or it is an error: 502.
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        if r.status == 502:
            self.canary_after(c, be, 0)
        else:
            self.assertEqual(r.status, 200, r)
            self.assertIsNone(r.header("Content-Length"), "forwarded with both: %r" % r)
            self.assertEqual(r.body, b"hello")
            self.canary_after(c, be, 0)
        vr.stop()

    def test_unrequested_101_is_502_and_no_tunnel(self):
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"TUNNEL-BYTES-FROM-BACKEND"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        self.assertIsNotNone(r)
        self.assertEqual(r.status, 502, r)
        self.assertNotIn(b"TUNNEL", r.raw)
        c.send(CANARY)
        r2 = c.read_response()
        conns, reqs = be.snapshot()
        self.assertEqual(len(conns[0].requests), 1, be.describe())
        if r2 is not None:
            self.assertEqual(r2.status, 200, r2)
            self.assertEqual(r2.header("X-Echo-Target"), "/canary", r2)
            self.assertNotIn(b"TUNNEL", r2.raw)
        rest, _ = c.read_to_eof(timeout=0.5) if r2 is None else (b"", True)
        self.assertNotIn(b"TUNNEL", rest)
        # Nothing the client sent after the 101 went down the 101's connection.
        veertest.wait_for(lambda: conns[0].eof, timeout=SMUGGLE_DEADLINE,
                          what="veer to close the connection that answered 101")
        self.assertEqual(bytes(conns[0].raw), conns[0].requests[0].raw, be.describe())
        vr.stop()

    def test_bad_chunk_mid_body_cuts_the_client_response(self):
        go_on = threading.Event()

        def first(sock):
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            go_on.wait(SMUGGLE_DEADLINE)
            sock.sendall(b"ZZ\r\nmore!\r\n0\r\n\r\n")
            return True

        be, vr = self.start(self.scripted(first))
        c = self.client(vr.port)
        c.send(b"GET /bad HTTP/1.1\r\nHost: victim.example\r\n\r\n")
        # The head and the first chunk reach the client before the bad chunk exists.
        c.wait_bytes(b"5\r\nhello\r\n")
        self.assertIn(b"HTTP/1.1 200", c.peek())
        go_on.set()
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertFalse(r.complete, "the response ended cleanly: %r" % r)
        rest, eof = c.read_to_eof()
        self.assertTrue(eof, "client connection not closed after the cut")
        self.assertNotIn(b"more!", r.raw + rest)
        self.assertNotIn(b"0\r\n\r\n", r.raw + rest, "a terminating chunk was made up")
        vr.stop()

    def test_empty_field_name_in_a_response_is_not_forwarded(self):
        # RFC 9110 5.1 / RFC 9112 5: a field name is a token; ": x" is not a
        # field line. Either the response is refused (502) or the line dropped.
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\n: injected\r\nContent-Length: 2\r\n\r\nok"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        if r.status != 502:
            self.assertEqual(r.status, 200, r)
            self.assertNotIn(b"injected", r.raw, "an empty-named field line was forwarded")
        if r.status == 502:
            self.canary_after(c, be, 0)
        vr.stop()

    def test_chunked_with_trailing_tab_is_framed_as_the_client_is_told(self):
        # "chunked<HTAB>" is chunked (RFC 9112 5: trailing OWS is not part of the
        # value). Whatever veer makes of it, the client must be told the framing
        # veer itself used: bytes after the chunked body's end are not part of it.
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nX-Echo-Target: /canary\r\nContent-Length: 8\r\n\r\nINJECTED"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        if r.status == 502:
            self.canary_after(c, be, 0)
        else:
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"hello", r)
            rest, _ = c.read_to_eof(timeout=1)
            self.assertNotIn(b"INJECTED", rest,
                             "veer relayed bytes past the chunked end the client was told about")
        vr.stop()

    def test_bad_chunk_to_an_http10_client_is_cut_cleanly(self):
        # An HTTP/1.0 client gets the body de-chunked (close-delimited). The
        # backend's framing breaks after a 16000-byte chunk, in the same read
        # as the head: veer must stop there (no byte after the break reaches
        # the client), close, and keep serving, with no memory error.
        n = 16000
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % n + b"A" * n +
            b"XX" + b"B" * 40000))
        c = self.client(vr.port)
        c.send(b"GET /bad HTTP/1.0\r\nHost: victim.example\r\n\r\n")
        data, eof = c.read_to_eof()
        self.assertTrue(eof, "client connection not closed")
        self.assertNotIn(b"B", data.split(b"\r\n\r\n", 1)[-1])
        self.assertNotIn(b"XX", data)
        try:
            s = self.client(vr.port)
            s.send(b"GET /after HTTP/1.1\r\nHost: victim.example\r\n\r\n")
            r = s.read_response()
        except OSError as e:
            vr.proc.poll()
            self.fail("veer died (exit %s) after the bad chunk: %r\n%s"
                      % (vr.proc.returncode, e, "\n".join(vr.log()[-40:])))
        if r is None:
            veertest.wait_for(lambda: vr.proc.poll() is not None, timeout=1,
                              what="(veer closed the request without answering)")
            self.fail("veer died (exit %s) after the bad chunk:\n%s"
                      % (vr.proc.returncode, "\n".join(vr.log()[-40:])))
        self.assertEqual(r.header("X-Echo-Target"), "/after", r)
        vr.stop()

    def test_bytes_after_a_response_never_answer_the_next_request(self):
        # Response splitting into the pool: the backend sends a second,
        # unrequested response after the first one's body.
        be, vr = self.start(self.scripted(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nX-Echo-Target: /canary\r\nContent-Length: 8\r\n\r\nINJECTED"))
        c = self.client(vr.port)
        r = self.bad_request(c)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok")
        c.send(CANARY)
        r2 = c.read_response()
        self.assertIsNotNone(r2)
        self.assertNotIn(b"INJECTED", r2.raw)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.header("X-Echo-Target"), "/canary", r2)
        _, reqs = be.snapshot()
        self.assertEqual([q.target for q in reqs], ["/bad", "/canary"], be.describe())
        vr.stop()


if __name__ == "__main__":
    unittest.main()
