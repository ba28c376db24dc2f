/*
 * dnsanswer.h - what discovery reads out of a DNS answer: the addresses of
 * A and AAAA records, the targets of SRV records, and how long the answer
 * may be trusted (the smallest TTL of the records used). The message comes
 * from the resolver library (c-ares) as received; it is parsed with glibc's
 * libresolv (ns_initparse, ns_parserr, ns_name_uncompress), and anything it
 * cannot parse is an error, never a partial set. Pure functions: any thread.
 */
#ifndef VEER_DNSANSWER_H
#define VEER_DNSANSWER_H

#include "conf.h"

#include <stdint.h>

#define DNSANSWER_TYPE_A    1
#define DNSANSWER_TYPE_AAAA 28
#define DNSANSWER_TYPE_SRV  33

/* One SRV record: where an instance listens, and its place in the order. */
struct dnsanswer_srv {
    char target[256]; /* the host to resolve, without the trailing dot */
    uint16_t priority, weight, port;
};

/*
 * The addresses of the records of type `type` (DNSANSWER_TYPE_A or _AAAA)
 * in the answer section of msg, each with `port`, into out (room for max;
 * more are counted but not stored). *ttl becomes the smallest TTL of those
 * records (unchanged when there are none). Returns how many records there
 * were, or -1 when msg is malformed.
 */
int dnsanswer_addrs(const unsigned char *msg, int len, int type, int port, struct conf_addr *out,
                    int max, uint32_t *ttl);

/*
 * The SRV records of the answer section with the lowest priority (RFC 2782:
 * the others are for when those fail, which the readiness checks judge
 * here), into out (room for max). *ttl as above, over every SRV record.
 * Returns how many of the lowest priority there were, or -1 when msg is
 * malformed.
 */
int dnsanswer_srv(const unsigned char *msg, int len, struct dnsanswer_srv *out, int max,
                  uint32_t *ttl);

/*
 * veer's weight (0..1000) for an SRV weight, given the largest SRV weight
 * of the set: proportional with the largest at 1000, at least 1 (RFC 2782
 * gives weight 0 "a very small chance"), and `fallback` (the entry's
 * weight) when every weight of the set is 0.
 */
int dnsanswer_weight(uint16_t weight, uint16_t max_weight, int fallback);

#endif
