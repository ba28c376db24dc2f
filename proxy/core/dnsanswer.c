/*
 * dnsanswer.c - addresses, SRV targets and TTLs out of a DNS answer
 * (dnsanswer.h). libresolv walks the message and checks every length
 * against its end; this file checks each record's own data.
 */
#include "dnsanswer.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

/*
 * Call fn for each record of the answer section of type `type`, class IN.
 * Returns -1 when the message is malformed, or when fn does.
 */
static int each_record(const unsigned char *msg, int len, int type,
                       int (*fn)(const ns_rr *rr, const ns_msg *m, void *arg), void *arg)
{
    ns_msg m;
    ns_rr rr;
    int n;

    if (msg == NULL || len <= 0 || ns_initparse(msg, len, &m) < 0)
        return -1;
    n = ns_msg_count(m, ns_s_an);
    for (int i = 0; i < n; i++) {
        if (ns_parserr(&m, ns_s_an, i, &rr) < 0)
            return -1;
        if ((int)ns_rr_type(rr) != type || ns_rr_class(rr) != ns_c_in)
            continue; /* a CNAME on the way, or a record of another kind */
        if (fn(&rr, &m, arg) < 0)
            return -1;
    }
    return 0;
}

static void min_ttl(uint32_t *ttl, uint32_t v, int seen)
{
    if (v > 0x7fffffffu)
        v = 0; /* RFC 2181 8: a TTL with the top bit set is read as 0 */
    if (seen == 0 || v < *ttl)
        *ttl = v;
}

struct addrs_walk {
    int type, port, max, n;
    struct conf_addr *out;
    uint32_t ttl;
};

static int one_addr(const ns_rr *rr, const ns_msg *m, void *arg)
{
    struct addrs_walk *w = arg;
    struct conf_addr *a;
    char ip[INET6_ADDRSTRLEN];

    (void)m;
    if (ns_rr_rdlen(*rr) != (w->type == DNSANSWER_TYPE_A ? 4 : 16))
        return -1;
    min_ttl(&w->ttl, ns_rr_ttl(*rr), w->n);
    if (w->n++ >= w->max)
        return 0;
    a = &w->out[w->n - 1];
    memset(a, 0, sizeof(*a));
    if (w->type == DNSANSWER_TYPE_A) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)w->port);
        memcpy(&sin->sin_addr, ns_rr_rdata(*rr), 4);
        a->len = sizeof(*sin);
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(a->text, sizeof(a->text), "%s:%d", ip, w->port);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)w->port);
        memcpy(&sin6->sin6_addr, ns_rr_rdata(*rr), 16);
        a->len = sizeof(*sin6);
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(a->text, sizeof(a->text), "[%s]:%d", ip, w->port);
    }
    return 0;
}

int dnsanswer_addrs(const unsigned char *msg, int len, int type, int port, struct conf_addr *out,
                    int max, uint32_t *ttl)
{
    struct addrs_walk w = {.type = type, .port = port, .max = max, .out = out};

    if (type != DNSANSWER_TYPE_A && type != DNSANSWER_TYPE_AAAA)
        return -1;
    if (each_record(msg, len, type, one_addr, &w) < 0)
        return -1;
    if (w.n > 0)
        *ttl = w.ttl;
    return w.n;
}

struct srv_walk {
    struct dnsanswer_srv *out;
    int max, n, seen;
    uint16_t best; /* the lowest priority so far */
    uint32_t ttl;
};

static int one_srv(const ns_rr *rr, const ns_msg *m, void *arg)
{
    struct srv_walk *w = arg;
    const unsigned char *d = ns_rr_rdata(*rr);
    struct dnsanswer_srv s;
    size_t tl;
    int nl;

    if (ns_rr_rdlen(*rr) < 7)
        return -1;
    s.priority = (uint16_t)(d[0] << 8 | d[1]);
    s.weight = (uint16_t)(d[2] << 8 | d[3]);
    s.port = (uint16_t)(d[4] << 8 | d[5]);
    /* The target may point anywhere before the message's end, but its own bytes end the record. */
    nl = ns_name_uncompress(ns_msg_base(*m), ns_msg_end(*m), d + 6, s.target, sizeof(s.target));
    if (nl < 0 || 6 + nl != ns_rr_rdlen(*rr))
        return -1;
    tl = strlen(s.target);
    if (tl > 0 && s.target[tl - 1] == '.')
        s.target[tl - 1] = '\0';
    min_ttl(&w->ttl, ns_rr_ttl(*rr), w->seen++);
    /* "." as the target: the service is decidedly not available there (RFC 2782). */
    if (s.target[0] == '\0' || s.port == 0)
        return 0;
    if (w->n == 0 || s.priority < w->best) {
        w->best = s.priority;
        w->n = 0; /* a better priority: the ones kept so far are backups */
    } else if (s.priority > w->best) {
        return 0;
    }
    if (w->n < w->max)
        w->out[w->n] = s;
    w->n++;
    return 0;
}

int dnsanswer_srv(const unsigned char *msg, int len, struct dnsanswer_srv *out, int max,
                  uint32_t *ttl)
{
    struct srv_walk w = {.out = out, .max = max};

    if (each_record(msg, len, DNSANSWER_TYPE_SRV, one_srv, &w) < 0)
        return -1;
    if (w.seen > 0)
        *ttl = w.ttl;
    return w.n;
}

int dnsanswer_weight(uint16_t weight, uint16_t max_weight, int fallback)
{
    uint32_t w;

    if (max_weight == 0)
        return fallback;
    w = ((uint32_t)weight * 1000u + max_weight / 2) / max_weight;
    return w < 1 ? 1 : (int)w;
}
