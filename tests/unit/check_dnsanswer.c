/*
 * check_dnsanswer.c - reading DNS answers (dnsanswer.c): real response
 * messages built byte by byte (header, question, answer records with name
 * compression), read back as addresses with their text and port, SRV
 * targets of the lowest priority, and the smallest TTL; records of another
 * type or class, CNAMEs on the way and records beyond the caller's room are
 * stepped over; every malformed message is refused whole. And the scaling
 * of SRV weights to veer's 0..1000.
 */
#include "dnsanswer.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLASS_IN      1
#define CLASS_CH      3
#define TYPE_CNAME    5
#define TYPE_TXT      16
#define QNAME         12 /* the question's name starts right after the header */
#define TTL_UNTOUCHED 0xdeadbeefu

/* A DNS message being built: the bytes, and how many answer records so far. */
struct dns {
    unsigned char b[2048];
    int n;
    int an;
};

static void put8(struct dns *d, int v)
{
    ck_assert_int_lt(d->n, (int)sizeof(d->b));
    d->b[d->n++] = (unsigned char)v;
}

static void put16(struct dns *d, int v)
{
    put8(d, v >> 8 & 0xff);
    put8(d, v & 0xff);
}

static void put32(struct dns *d, uint32_t v)
{
    put16(d, (int)(v >> 16));
    put16(d, (int)(v & 0xffff));
}

static void put_bytes(struct dns *d, const void *p, int len)
{
    for (int i = 0; i < len; i++)
        put8(d, ((const unsigned char *)p)[i]);
}

/*
 * "web1.api.internal" as labels. With end_ptr >= 0 the name ends with a
 * compression pointer to that offset instead of the root label ("" writes
 * the pointer alone). Returns the offset where the name starts.
 */
static int put_name(struct dns *d, const char *name, int end_ptr)
{
    int start = d->n;

    while (*name != '\0') {
        const char *dot = strchr(name, '.');
        int len = dot ? (int)(dot - name) : (int)strlen(name);

        put8(d, len);
        put_bytes(d, name, len);
        name += len + (dot ? 1 : 0);
    }
    if (end_ptr >= 0)
        put16(d, 0xc000 | end_ptr);
    else
        put8(d, 0);
    return start;
}

/* A response header (QR, RD, RA, NOERROR) with one question: qname, qtype, IN. */
static void dns_begin(struct dns *d, const char *qname, int qtype)
{
    memset(d, 0, sizeof(*d));
    put16(d, 0x1234); /* id */
    put16(d, 0x8180); /* flags */
    put16(d, 1);      /* qdcount */
    put16(d, 0);      /* ancount, counted by dns_rr */
    put16(d, 0);      /* nscount */
    put16(d, 0);      /* arcount */
    ck_assert_int_eq(put_name(d, qname, -1), QNAME);
    put16(d, qtype);
    put16(d, CLASS_IN);
}

/* The fixed part of an answer record whose owner is a pointer to the question's name. */
static void rr_head(struct dns *d, int type, int class, uint32_t ttl)
{
    put16(d, 0xc000 | QNAME);
    put16(d, type);
    put16(d, class);
    put32(d, ttl);
    d->an++;
    d->b[6] = (unsigned char)(d->an >> 8);
    d->b[7] = (unsigned char)(d->an & 0xff);
}

/* An answer record with rdata as given. */
static void dns_rr(struct dns *d, int type, int class, uint32_t ttl, const void *rdata, int rdlen)
{
    rr_head(d, type, class, ttl);
    put16(d, rdlen);
    put_bytes(d, rdata, rdlen);
}

static void rr_a(struct dns *d, uint32_t ttl, const char *ip)
{
    unsigned char a[4];

    ck_assert_int_eq(inet_pton(AF_INET, ip, a), 1);
    dns_rr(d, DNSANSWER_TYPE_A, CLASS_IN, ttl, a, 4);
}

static void rr_aaaa(struct dns *d, uint32_t ttl, const char *ip)
{
    unsigned char a[16];

    ck_assert_int_eq(inet_pton(AF_INET6, ip, a), 1);
    dns_rr(d, DNSANSWER_TYPE_AAAA, CLASS_IN, ttl, a, 16);
}

/* A record whose rdata is a name (CNAME), or SRV fields then a name; rdlen patched after. */
static void rr_named(struct dns *d, int type, uint32_t ttl, const int *fields, int nfields,
                     const char *target, int end_ptr)
{
    int at;

    rr_head(d, type, CLASS_IN, ttl);
    at = d->n;
    put16(d, 0); /* rdlen, below */
    for (int i = 0; i < nfields; i++)
        put16(d, fields[i]);
    put_name(d, target, end_ptr);
    d->b[at] = (unsigned char)((d->n - at - 2) >> 8);
    d->b[at + 1] = (unsigned char)((d->n - at - 2) & 0xff);
}

static void rr_cname(struct dns *d, uint32_t ttl, const char *target)
{
    rr_named(d, TYPE_CNAME, ttl, NULL, 0, target, -1);
}

static void rr_srv(struct dns *d, uint32_t ttl, int prio, int weight, int port, const char *target)
{
    int f[3] = {prio, weight, port};

    rr_named(d, DNSANSWER_TYPE_SRV, ttl, f, 3, target, -1);
}

/* An SRV record whose target is `first` followed by a pointer to offset ptr. */
static void rr_srv_ptr(struct dns *d, uint32_t ttl, int prio, int weight, int port,
                       const char *first, int ptr)
{
    int f[3] = {prio, weight, port};

    rr_named(d, DNSANSWER_TYPE_SRV, ttl, f, 3, first, ptr);
}

static int addrs(const struct dns *d, int type, int port, struct conf_addr *out, int max,
                 uint32_t *ttl)
{
    return dnsanswer_addrs(d->b, d->n, type, port, out, max, ttl);
}

static int srvs(const struct dns *d, struct dnsanswer_srv *out, int max, uint32_t *ttl)
{
    return dnsanswer_srv(d->b, d->n, out, max, ttl);
}

/* --- A and AAAA ---------------------------------------------------------- */

START_TEST(test_a_records_give_addresses_with_the_port)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&out[1].ss;

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&d, 30, "127.0.0.2");
    rr_a(&d, 30, "10.1.2.3");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 8080, out, 4, &ttl), 2);
    ck_assert_str_eq(out[0].text, "127.0.0.2:8080");
    ck_assert_str_eq(out[1].text, "10.1.2.3:8080");
    ck_assert_int_eq(sin->sin_family, AF_INET);
    ck_assert_int_eq(ntohs(sin->sin_port), 8080);
    ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), 0x0a010203u);
    ck_assert_uint_eq(out[1].len, sizeof(struct sockaddr_in));
    ck_assert_uint_eq(ttl, 30);
}
END_TEST

START_TEST(test_aaaa_records_give_bracketed_addresses)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&out[0].ss;
    struct in6_addr one;

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_AAAA);
    rr_aaaa(&d, 60, "::1");
    rr_aaaa(&d, 60, "fd00:0:0:0:0:0:0:a");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 8080, out, 4, &ttl), 2);
    ck_assert_str_eq(out[0].text, "[::1]:8080");
    ck_assert_str_eq(out[1].text, "[fd00::a]:8080");
    ck_assert_int_eq(sin6->sin6_family, AF_INET6);
    ck_assert_int_eq(ntohs(sin6->sin6_port), 8080);
    inet_pton(AF_INET6, "::1", &one);
    ck_assert_mem_eq(&sin6->sin6_addr, &one, 16);
    ck_assert_uint_eq(out[0].len, sizeof(struct sockaddr_in6));
    ck_assert_uint_eq(ttl, 60);
}
END_TEST

/* The text is what conf_parse_addr makes of it: a discovered backend and a configured one agree. */
START_TEST(test_address_text_parses_back_to_the_same_address)
{
    struct dns d;
    struct conf_addr out[2], back;
    uint32_t ttl;
    char why[256];

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_AAAA);
    rr_aaaa(&d, 5, "2001:db8::8:800:200c:417a");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 65535, out, 2, &ttl), 1);
    ck_assert_int_eq(conf_parse_addr(out[0].text, false, &back, why, sizeof(why)), 0);
    ck_assert_str_eq(back.text, out[0].text);
    ck_assert_uint_eq(back.len, out[0].len);
    ck_assert_mem_eq(&back.ss, &out[0].ss, out[0].len);

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&d, 5, "192.168.100.200");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 1, out, 2, &ttl), 1);
    ck_assert_str_eq(out[0].text, "192.168.100.200:1");
    ck_assert_int_eq(conf_parse_addr(out[0].text, false, &back, why, sizeof(why)), 0);
    ck_assert_mem_eq(&back.ss, &out[0].ss, out[0].len);
}
END_TEST

START_TEST(test_ttl_is_the_smallest_of_the_records)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&d, 300, "127.0.0.2");
    rr_a(&d, 7, "127.0.0.3");
    rr_a(&d, 0x7fffffffu, "127.0.0.4");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 3);
    ck_assert_uint_eq(ttl, 7);

    /* TTL 0: re-resolve as soon as allowed. */
    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&d, 10, "127.0.0.2");
    rr_a(&d, 0, "127.0.0.3");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 2);
    ck_assert_uint_eq(ttl, 0);
}
END_TEST

START_TEST(test_empty_answer_leaves_ttl_alone)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 0);
    ck_assert_uint_eq(ttl, TTL_UNTOUCHED);
    /* Only records of another type: none of ours, the TTL is not theirs to set. */
    rr_aaaa(&d, 1, "::1");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 0);
    ck_assert_uint_eq(ttl, TTL_UNTOUCHED);
}
END_TEST

/* A resolver following a CNAME answers with the CNAME, then the target's records. */
START_TEST(test_cname_then_a_reads_the_addresses)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;
    int target;

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_cname(&d, 3, "lb.internal");
    target = d.n - (int)strlen("\002lb\010internal") - 1;
    ck_assert_int_eq(d.b[target], 2);
    /* The A records' owner is the CNAME's target, by a compression pointer. */
    put16(&d, 0xc000 | target);
    put16(&d, DNSANSWER_TYPE_A);
    put16(&d, CLASS_IN);
    put32(&d, 40);
    put16(&d, 4);
    put_bytes(&d, "\x7f\x00\x00\x05", 4);
    d.an++;
    d.b[7] = (unsigned char)d.an;
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 8080, out, 4, &ttl), 1);
    ck_assert_str_eq(out[0].text, "127.0.0.5:8080");
    ck_assert_uint_eq(ttl, 40); /* the CNAME's 3 is not an address's TTL */
}
END_TEST

START_TEST(test_records_of_another_type_or_class_are_ignored)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;
    unsigned char ch[4] = {10, 0, 0, 1};

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    dns_rr(&d, TYPE_TXT, CLASS_IN, 1, "\003abc", 4);
    dns_rr(&d, DNSANSWER_TYPE_A, CLASS_CH, 2, ch, 4);
    dns_rr(&d, DNSANSWER_TYPE_A, CLASS_CH, 2, "\1\2\3\4\5", 5); /* not IN: its length is not ours */
    rr_aaaa(&d, 3, "::2");
    rr_a(&d, 50, "127.0.0.9");
    rr_srv(&d, 4, 1, 1, 80, "x.internal");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 1);
    ck_assert_str_eq(out[0].text, "127.0.0.9:80");
    ck_assert_uint_eq(ttl, 50);
    ttl = TTL_UNTOUCHED;
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 80, out, 4, &ttl), 1);
    ck_assert_str_eq(out[0].text, "[::2]:80");
    ck_assert_uint_eq(ttl, 3);
}
END_TEST

START_TEST(test_more_records_than_room_are_counted_not_stored)
{
    struct dns d;
    struct conf_addr out[4];
    uint32_t ttl = TTL_UNTOUCHED;
    char ip[32];

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    for (int i = 1; i <= 6; i++) {
        snprintf(ip, sizeof(ip), "127.0.0.%d", i);
        rr_a(&d, i == 6 ? 2 : 100, ip); /* the smallest TTL on a record not stored */
    }
    memset(out, 0xa5, sizeof(out));
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 3, &ttl), 6);
    ck_assert_str_eq(out[0].text, "127.0.0.1:80");
    ck_assert_str_eq(out[2].text, "127.0.0.3:80");
    for (size_t i = 0; i < sizeof(out[3]); i++)
        ck_assert_int_eq(((unsigned char *)&out[3])[i], 0xa5);
    ck_assert_uint_eq(ttl, 2);
    /* No room at all: only the count (out is never touched). */
    ttl = TTL_UNTOUCHED;
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, NULL, 0, &ttl), 6);
    ck_assert_uint_eq(ttl, 2);
}
END_TEST

START_TEST(test_unknown_record_type_is_refused)
{
    struct dns d;
    struct conf_addr out[1];
    uint32_t ttl;

    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&d, 1, "127.0.0.1");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_SRV, 80, out, 1, &ttl), -1);
    ck_assert_int_eq(addrs(&d, TYPE_CNAME, 80, out, 1, &ttl), -1);
}
END_TEST

/* --- malformed messages: refused whole ----------------------------------- */

START_TEST(test_malformed_messages_are_refused)
{
    struct dns d, ok;
    struct conf_addr out[4];
    struct dnsanswer_srv s[4];
    uint32_t ttl = TTL_UNTOUCHED;

    dns_begin(&ok, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&ok, 9, "127.0.0.2");
    rr_a(&ok, 9, "127.0.0.3");
    ck_assert_int_eq(addrs(&ok, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 2);

    /* NULL, empty, a header cut short */
    ck_assert_int_eq(dnsanswer_addrs(NULL, 100, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
    ck_assert_int_eq(dnsanswer_addrs(ok.b, 0, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
    ck_assert_int_eq(dnsanswer_addrs(ok.b, -1, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
    ck_assert_int_eq(dnsanswer_addrs(ok.b, 11, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
    ck_assert_int_eq(dnsanswer_srv(NULL, 100, s, 4, &ttl), -1);
    ck_assert_int_eq(dnsanswer_srv(ok.b, 0, s, 4, &ttl), -1);
    ck_assert_int_eq(dnsanswer_srv(ok.b, 11, s, 4, &ttl), -1);

    /* every cut inside the last record: truncated RR (the first record alone is no answer) */
    for (int len = ok.n - 1; len > ok.n - 16; len--)
        ck_assert_msg(dnsanswer_addrs(ok.b, len, DNSANSWER_TYPE_A, 80, out, 4, &ttl) == -1,
                      "cut at %d of %d accepted", len, ok.n);
    /* ancount says 3, two are there */
    d = ok;
    d.b[7] = 3;
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);

    /* rdlen 5 for A, 3 for A, 15 and 17 for AAAA */
    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    rr_a(&d, 9, "127.0.0.2");
    dns_rr(&d, DNSANSWER_TYPE_A, CLASS_IN, 9, "\x7f\0\0\x03\x00", 5);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    dns_rr(&d, DNSANSWER_TYPE_A, CLASS_IN, 9, "\x7f\0\0", 3);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
    dns_begin(&d, "api.internal", DNSANSWER_TYPE_AAAA);
    dns_rr(&d, DNSANSWER_TYPE_AAAA, CLASS_IN, 9, "0123456789abcde", 15);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 80, out, 4, &ttl), -1);
    dns_begin(&d, "api.internal", DNSANSWER_TYPE_AAAA);
    dns_rr(&d, DNSANSWER_TYPE_AAAA, CLASS_IN, 9, "0123456789abcdefg", 17);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 80, out, 4, &ttl), -1);

    /* SRV rdata shorter than priority, weight, port and a one-byte name */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    dns_rr(&d, DNSANSWER_TYPE_SRV, CLASS_IN, 9, "\0\1\0\1\0\x50", 6);
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), -1);

    /* an owner name that points at itself: a compression loop */
    dns_begin(&d, "api.internal", DNSANSWER_TYPE_A);
    put16(&d, 0xc000 | d.n);
    put16(&d, DNSANSWER_TYPE_A);
    put16(&d, CLASS_IN);
    put32(&d, 9);
    put16(&d, 4);
    put_bytes(&d, "\x7f\0\0\x02", 4);
    d.b[7] = 1;
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);

    /* an SRV target that points at itself */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv_ptr(&d, 9, 1, 1, 80, "", d.n + 12 + 6);
    ck_assert_int_eq(d.b[d.n - 2] & 0x3f, (d.n - 2) >> 8);
    ck_assert_int_eq(d.b[d.n - 1], (d.n - 2) & 0xff);
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), -1);

    /* a pointer past the end of the message */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv_ptr(&d, 9, 1, 1, 80, "web", 1000);
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), -1);

    ck_assert_uint_eq(ttl, 9); /* only the good answer above set it */
}
END_TEST

/* --- SRV ---------------------------------------------------------------- */

START_TEST(test_srv_fields_and_target_without_trailing_dot)
{
    struct dns d;
    struct dnsanswer_srv s[4];
    uint32_t ttl = TTL_UNTOUCHED;

    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 20, 10, 60, 8080, "web1.api.internal");
    rr_srv(&d, 20, 10, 0, 8081, "web2.api.internal");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 2);
    ck_assert_str_eq(s[0].target, "web1.api.internal");
    ck_assert_uint_eq(s[0].priority, 10);
    ck_assert_uint_eq(s[0].weight, 60);
    ck_assert_uint_eq(s[0].port, 8080);
    ck_assert_str_eq(s[1].target, "web2.api.internal");
    ck_assert_uint_eq(s[1].weight, 0);
    ck_assert_uint_eq(s[1].port, 8081);
    ck_assert_uint_eq(ttl, 20);
}
END_TEST

/* The target's tail is a pointer into the question: "web1" + -> "api.internal". */
START_TEST(test_srv_compressed_target)
{
    struct dns d;
    struct dnsanswer_srv s[2];
    uint32_t ttl;
    int api = QNAME + 1 + 5 + 1 + 4; /* "_http", "_tcp", then "api.internal" */

    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    ck_assert_int_eq(d.b[api], 3);
    rr_srv_ptr(&d, 5, 0, 5, 9000, "web1", api);
    rr_srv_ptr(&d, 5, 0, 5, 9001, "", api); /* the pointer alone */
    ck_assert_int_eq(srvs(&d, s, 2, &ttl), 2);
    ck_assert_str_eq(s[0].target, "web1.api.internal");
    ck_assert_uint_eq(s[0].port, 9000);
    ck_assert_str_eq(s[1].target, "api.internal");
}
END_TEST

static void srv_lowest_of(const int *prios, int n, int want, int port_base)
{
    struct dns d;
    struct dnsanswer_srv s[8];
    uint32_t ttl;
    char name[32];
    int got, k = 0;

    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "web%d.internal", i);
        rr_srv(&d, 10, prios[i], 1, port_base + i, name);
    }
    got = srvs(&d, s, 8, &ttl);
    for (int i = 0; i < n; i++)
        k += prios[i] == want;
    ck_assert_int_eq(got, k);
    /* those of the lowest priority, in the answer's order */
    for (int i = 0, j = 0; i < n; i++) {
        if (prios[i] != want)
            continue;
        ck_assert_uint_eq(s[j].priority, (uint16_t)want);
        ck_assert_uint_eq(s[j].port, (uint16_t)(port_base + i));
        j++;
    }
}

START_TEST(test_srv_keeps_the_lowest_priority_only)
{
    const int first[] = {10, 10, 20, 30};
    const int last[] = {30, 20, 20, 10, 10};
    const int mixed[] = {20, 10, 30, 10, 20, 10};
    const int one[] = {65535, 0};
    const int same[] = {7, 7, 7};

    srv_lowest_of(first, 4, 10, 1000);
    srv_lowest_of(last, 5, 10, 2000);
    srv_lowest_of(mixed, 6, 10, 3000);
    srv_lowest_of(one, 2, 0, 4000);
    srv_lowest_of(same, 3, 7, 5000);
}
END_TEST

/* A better priority after more records than room: the count restarts, the slots are reused. */
START_TEST(test_srv_better_priority_after_a_full_table)
{
    struct dns d;
    struct dnsanswer_srv s[2];
    uint32_t ttl;

    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 10, 5, 1, 81, "a.internal");
    rr_srv(&d, 10, 5, 1, 82, "b.internal");
    rr_srv(&d, 10, 5, 1, 83, "c.internal");
    rr_srv(&d, 10, 1, 1, 84, "d.internal");
    rr_srv(&d, 10, 5, 1, 85, "e.internal");
    rr_srv(&d, 10, 1, 1, 86, "f.internal");
    rr_srv(&d, 10, 1, 1, 87, "g.internal");
    ck_assert_int_eq(srvs(&d, s, 2, &ttl), 3);
    ck_assert_str_eq(s[0].target, "d.internal");
    ck_assert_str_eq(s[1].target, "f.internal");
    ck_assert_int_eq(srvs(&d, NULL, 0, &ttl), 3);
}
END_TEST

START_TEST(test_srv_root_target_and_port_0_are_skipped)
{
    struct dns d;
    struct dnsanswer_srv s[4];
    uint32_t ttl = TTL_UNTOUCHED;

    /* "." ("decidedly not available"), even at a better priority, and port 0 */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 50, 0, 0, 80, "");
    rr_srv(&d, 50, 0, 1, 0, "zero.internal");
    rr_srv(&d, 50, 10, 1, 8080, "web1.internal");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 1);
    ck_assert_str_eq(s[0].target, "web1.internal");
    ck_assert_uint_eq(s[0].priority, 10);

    /* only "." : no instances, and the TTL still says when to ask again */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 17, 0, 0, 0, "");
    ttl = TTL_UNTOUCHED;
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 0);
    ck_assert_uint_eq(ttl, 17);
}
END_TEST

START_TEST(test_srv_ttl_is_over_every_srv_record)
{
    struct dns d;
    struct dnsanswer_srv s[4];
    uint32_t ttl = TTL_UNTOUCHED;

    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 100, 1, 1, 80, "a.internal");
    rr_srv(&d, 6, 9, 1, 80, "backup.internal"); /* a backup's TTL counts too */
    rr_srv(&d, 4, 0, 1, 80, "");                /* and a "." one's */
    rr_a(&d, 1, "127.0.0.1");                   /* an additional address is not SRV */
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 1);
    ck_assert_uint_eq(ttl, 4);

    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_a(&d, 1, "127.0.0.1");
    ttl = TTL_UNTOUCHED;
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 0);
    ck_assert_uint_eq(ttl, TTL_UNTOUCHED);
}
END_TEST

START_TEST(test_srv_target_of_253_bytes)
{
    struct dns d;
    struct dnsanswer_srv s[1];
    uint32_t ttl;
    char name[254];

    /* four labels of 62 bytes and one of 1: 253 bytes with the dots, the longest name */
    memset(name, 'a', sizeof(name));
    for (int i = 62; i < 253; i += 63)
        name[i] = '.';
    name[253] = '\0';
    ck_assert_uint_eq(strlen(name), 253);
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 5, 0, 1, 80, name);
    ck_assert_int_eq(srvs(&d, s, 1, &ttl), 1);
    ck_assert_str_eq(s[0].target, name);
}
END_TEST

/*
 * An SRV record's target ends where its data does: a target that runs on
 * into the next record, or data left after it, is a malformed record.
 */
START_TEST(test_srv_target_must_fill_its_record)
{
    struct dns d;
    struct dnsanswer_srv s[4];
    uint32_t ttl = TTL_UNTOUCHED;
    int at;

    /* rdlen 7: the fields and one byte, a label of length 1 whose byte (and end) lie beyond */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    dns_rr(&d, DNSANSWER_TYPE_SRV, CLASS_IN, 9, "\0\1\0\1\0\x50\x01", 7);
    put8(&d, 0); /* the next record: owner "." */
    put16(&d, DNSANSWER_TYPE_A);
    put16(&d, CLASS_IN);
    put32(&d, 9);
    put16(&d, 4);
    put_bytes(&d, "\x7f\0\0\x02", 4);
    d.b[7] = (unsigned char)++d.an;
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), -1);

    /* three bytes after the target's end, inside rdlen */
    dns_begin(&d, "_http._tcp.api.internal", DNSANSWER_TYPE_SRV);
    rr_srv(&d, 9, 1, 1, 80, "web1.internal");
    at = d.n - (int)strlen("\004web1\010internal") - 1 - 6 - 2;
    ck_assert_int_eq(d.b[at + 1], 6 + 15);
    put_bytes(&d, "xyz", 3);
    d.b[at + 1] += 3;
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), -1);
    ck_assert_uint_eq(ttl, TTL_UNTOUCHED);

    /* the same record without them is fine */
    d.n -= 3;
    d.b[at + 1] -= 3;
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 1);
    ck_assert_str_eq(s[0].target, "web1.internal");
}
END_TEST

/* --- weights ------------------------------------------------------------- */

START_TEST(test_srv_weight_scaling)
{
    ck_assert_int_eq(dnsanswer_weight(60, 60, 100), 1000); /* the largest */
    ck_assert_int_eq(dnsanswer_weight(65535, 65535, 100), 1000);
    ck_assert_int_eq(dnsanswer_weight(1, 1, 100), 1000);
    ck_assert_int_eq(dnsanswer_weight(30, 60, 100), 500); /* proportional */
    ck_assert_int_eq(dnsanswer_weight(10, 40, 100), 250);
    ck_assert_int_eq(dnsanswer_weight(1, 3, 100), 333); /* rounded to the nearest */
    ck_assert_int_eq(dnsanswer_weight(2, 3, 100), 667);
    ck_assert_int_eq(dnsanswer_weight(1, 1999, 100), 1); /* 0.5003 */
    ck_assert_int_eq(dnsanswer_weight(100, 65535, 100), 2);
    ck_assert_int_eq(dnsanswer_weight(0, 10, 100), 1); /* "a very small chance", never 0 */
    ck_assert_int_eq(dnsanswer_weight(1, 65535, 100), 1);
    ck_assert_int_eq(dnsanswer_weight(0, 0, 100), 100); /* all zero: the entry's weight */
    ck_assert_int_eq(dnsanswer_weight(0, 0, 0), 0);
    ck_assert_int_eq(dnsanswer_weight(0, 0, 1000), 1000);
    /* every weight of 0..max lands in 1..1000 and never decreases */
    for (int max = 1; max <= 70000; max = max * 3 + 1) {
        int prev = 1;
        uint16_t m = (uint16_t)(max > 65535 ? 65535 : max);

        for (uint32_t w = 0; w <= m; w += 1 + m / 500) {
            int v = dnsanswer_weight((uint16_t)w, m, 100);

            ck_assert_int_ge(v, prev);
            ck_assert_int_le(v, 1000);
            prev = v;
        }
        ck_assert_int_eq(dnsanswer_weight(m, m, 100), 1000);
    }
}
END_TEST

/* --- answers captured from dnsmasq (the fuzz seeds) ---------------------- */

#ifndef SRCDIR
#define SRCDIR "."
#endif

/* A seed of tests/fuzz/corpus/dnsanswer into d. */
static void seed(struct dns *d, const char *name)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), SRCDIR "/tests/fuzz/corpus/dnsanswer/%s", name);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: cannot open", path);
    memset(d, 0, sizeof(*d));
    d->n = (int)fread(d->b, 1, sizeof(d->b), f);
    fclose(f);
    ck_assert_int_gt(d->n, 0);
}

/* dnsmasq 2.90's answers, as captured for the seeds: what discovery reads from a real server. */
START_TEST(test_real_answers_from_dnsmasq)
{
    struct dns d;
    struct conf_addr out[4];
    struct dnsanswer_srv s[4];
    uint32_t ttl = TTL_UNTOUCHED;

    seed(&d, "a");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 8080, out, 4, &ttl), 3);
    ck_assert_str_eq(out[0].text, "127.0.0.3:8080");
    ck_assert_str_eq(out[1].text, "127.0.0.2:8080");
    ck_assert_str_eq(out[2].text, "10.1.2.3:8080");
    ck_assert_uint_eq(ttl, 30);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 8080, out, 4, &ttl), 0);

    seed(&d, "aaaa");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_AAAA, 8080, out, 4, &ttl), 2);
    ck_assert_str_eq(out[0].text, "[::1]:8080");
    ck_assert_str_eq(out[1].text, "[fd00::2]:8080");

    seed(&d, "cname_a"); /* alias.internal CNAME lb.internal, then lb's A */
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 1);
    ck_assert_str_eq(out[0].text, "127.0.0.20:80");

    ttl = TTL_UNTOUCHED;
    seed(&d, "nxdomain");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 0);
    seed(&d, "nodata_a");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 0);
    ck_assert_uint_eq(ttl, TTL_UNTOUCHED);

    /* backup (priority 20) first, then web2 and web1 (10); targets' A records in additional */
    seed(&d, "srv_priorities");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 2);
    ck_assert_str_eq(s[0].target, "web2.api.internal");
    ck_assert_uint_eq(s[0].port, 8081);
    ck_assert_uint_eq(s[0].weight, 20);
    ck_assert_str_eq(s[1].target, "web1.api.internal");
    ck_assert_uint_eq(s[1].port, 8080);
    ck_assert_uint_eq(s[1].weight, 60);
    ck_assert_uint_eq(ttl, 30);
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), 0); /* additional: not read */
    ck_assert_int_eq(dnsanswer_weight(s[0].weight, 60, 100), 333);
    ck_assert_int_eq(dnsanswer_weight(s[1].weight, 60, 100), 1000);

    seed(&d, "srv_root_target");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 0);
    seed(&d, "srv_zero_weights");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 2);
    ck_assert_uint_eq(s[0].weight + s[1].weight, 0);

    /* built for the seeds: compressed targets, a cut message, a pointer loop */
    seed(&d, "srv_compressed_targets");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), 2);
    ck_assert_str_eq(s[0].target, "web1.api.internal");
    ck_assert_str_eq(s[1].target, "web2.api.internal");
    ck_assert_uint_eq(ttl, 3);
    seed(&d, "srv_truncated");
    ck_assert_int_eq(srvs(&d, s, 4, &ttl), -1);
    seed(&d, "a_pointer_loop");
    ck_assert_int_eq(addrs(&d, DNSANSWER_TYPE_A, 80, out, 4, &ttl), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dnsanswer");
    TCase *a = tcase_create("addrs");
    TCase *bad = tcase_create("malformed");
    TCase *srv = tcase_create("srv");
    SRunner *sr;
    int failed;

    tcase_add_test(a, test_a_records_give_addresses_with_the_port);
    tcase_add_test(a, test_aaaa_records_give_bracketed_addresses);
    tcase_add_test(a, test_address_text_parses_back_to_the_same_address);
    tcase_add_test(a, test_ttl_is_the_smallest_of_the_records);
    tcase_add_test(a, test_empty_answer_leaves_ttl_alone);
    tcase_add_test(a, test_cname_then_a_reads_the_addresses);
    tcase_add_test(a, test_records_of_another_type_or_class_are_ignored);
    tcase_add_test(a, test_more_records_than_room_are_counted_not_stored);
    tcase_add_test(a, test_unknown_record_type_is_refused);
    tcase_add_test(bad, test_malformed_messages_are_refused);
    tcase_add_test(srv, test_srv_fields_and_target_without_trailing_dot);
    tcase_add_test(srv, test_srv_compressed_target);
    tcase_add_test(srv, test_srv_keeps_the_lowest_priority_only);
    tcase_add_test(srv, test_srv_better_priority_after_a_full_table);
    tcase_add_test(srv, test_srv_root_target_and_port_0_are_skipped);
    tcase_add_test(srv, test_srv_ttl_is_over_every_srv_record);
    tcase_add_test(srv, test_srv_target_of_253_bytes);
    tcase_add_test(bad, test_srv_target_must_fill_its_record);
    tcase_add_test(srv, test_srv_weight_scaling);
    tcase_add_test(srv, test_real_answers_from_dnsmasq);
    suite_add_tcase(s, a);
    suite_add_tcase(s, bad);
    suite_add_tcase(s, srv);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
