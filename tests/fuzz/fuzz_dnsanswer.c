/*
 * fuzz_dnsanswer.c - libFuzzer target: reading DNS answers (dnsanswer.c).
 * The input is a DNS message as the resolver library hands it over; it is
 * read as A, as AAAA and as SRV answers, each once without room (max 0,
 * out NULL) and once with room for a few, into arrays of exactly that size
 * so ASan sees any write past them. The port comes from a hash of the input.
 *
 * Always checked: no memory error; the count does not depend on the room;
 * no more than the room is written (ASan), and for addresses nothing past
 * the count when the answer is accepted (a refused answer may have been
 * written to: the caller drops it; an SRV table may keep entries that a
 * better priority replaced past the count); the TTL is set when and only
 * when there were records, and the same either way; each stored address's
 * text is NUL-terminated and parses back with conf_parse_addr to the same
 * address, text and port; each stored SRV target is NUL-terminated and not
 * empty, its port not 0, and every stored record has the same priority;
 * weights scale into 1..1000 with the largest at 1000.
 *
 * With -DVEER_FUZZ_ORACLE, an accepted answer is also walked by a
 * reference written the plain way (labels and pointers skipped by hand, no
 * libresolv): the same count of IN records of the type, the same bytes in
 * each address, the same smallest TTL; for SRV, the same lowest priority
 * among the records with a target other than "." and a port other than 0,
 * the same ports and weights, and every SRV target ending where its record
 * does.
 */
#include "dnsanswer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROOM     3
#define TTL_NONE 0xdeadbeefu

static void check(int ok, const char *what, const uint8_t *in, size_t len)
{
    if (!ok) {
        fprintf(stderr, "fuzz_dnsanswer: %s (%zu bytes:", what, len);
        for (size_t i = 0; i < len && i < 512; i++)
            fprintf(stderr, " %02x", in[i]);
        fprintf(stderr, ")\n");
        abort();
    }
}

static uint32_t fnv(const uint8_t *d, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 16777619u;
    return h;
}

static bool untouched(const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != 0xa5)
            return false;
    return true;
}

#ifdef VEER_FUZZ_ORACLE
/* Skip the name at *off (labels, ending with the root or a pointer); false when it runs out. */
static bool skip_name(const uint8_t *m, size_t len, size_t *off)
{
    while (*off < len) {
        uint8_t c = m[*off];

        if (c == 0) {
            *off += 1;
            return true;
        }
        if ((c & 0xc0) == 0xc0) {
            *off += 2;
            return *off <= len;
        }
        if (c & 0xc0)
            return false;
        *off += 1u + c;
    }
    return false;
}

/* Whether the name at off is the root: pointers followed (bounded) to the first label. */
static bool is_root(const uint8_t *m, size_t len, size_t off)
{
    for (int hops = 0; hops < 256 && off < len; hops++) {
        if ((m[off] & 0xc0) != 0xc0)
            return m[off] == 0;
        if (off + 1 >= len)
            return false;
        off = (size_t)(m[off] & 0x3f) << 8 | m[off + 1];
    }
    return false;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* One answer record as the reference sees it. */
struct ref_rr {
    uint16_t type, class, rdlen;
    uint32_t ttl;
    size_t rdata; /* offset */
};

/*
 * The answer section's records into rr (room for max); returns their
 * count, or -1 when the walk runs out of message.
 */
static int ref_answers(const uint8_t *m, size_t len, struct ref_rr *rr, int max)
{
    size_t off = 12;
    int qd, an;

    if (len < 12)
        return -1;
    qd = get16(m + 4);
    an = get16(m + 6);
    for (int i = 0; i < qd; i++) {
        if (!skip_name(m, len, &off) || off + 4 > len)
            return -1;
        off += 4;
    }
    for (int i = 0; i < an; i++) {
        struct ref_rr r;

        if (!skip_name(m, len, &off) || off + 10 > len)
            return -1;
        r.type = get16(m + off);
        r.class = get16(m + off + 2);
        r.ttl = (uint32_t)get16(m + off + 4) << 16 | get16(m + off + 6);
        if (r.ttl > 0x7fffffffu)
            r.ttl = 0; /* RFC 2181 8: a TTL with the top bit set is read as 0 */
        r.rdlen = get16(m + off + 8);
        r.rdata = off + 10;
        off += 10u + r.rdlen;
        if (off > len)
            return -1;
        if (i < max)
            rr[i] = r;
    }
    return an;
}

static void oracle_addrs(const uint8_t *m, size_t len, int type, int n, const struct conf_addr *out,
                         int stored, uint32_t ttl)
{
    int room = get16(m + 6), an, k = 0, alen = type == DNSANSWER_TYPE_A ? 4 : 16;
    struct ref_rr *rr = malloc((size_t)(room + 1) * sizeof(*rr));
    uint32_t min = TTL_NONE;

    an = ref_answers(m, len, rr, room);
    check(an >= 0, "the reference cannot walk an accepted answer", m, len);
    for (int i = 0; i < an; i++) {
        const unsigned char *want = m + rr[i].rdata;
        const void *got;

        if (rr[i].type != type || rr[i].class != 1)
            continue;
        check(rr[i].rdlen == alen, "an address of the wrong length accepted", m, len);
        if (k == 0 || rr[i].ttl < min)
            min = rr[i].ttl;
        if (k < stored) {
            got = type == DNSANSWER_TYPE_A
                      ? (const void *)&((const struct sockaddr_in *)&out[k].ss)->sin_addr
                      : (const void *)&((const struct sockaddr_in6 *)&out[k].ss)->sin6_addr;
            check(memcmp(got, want, (size_t)alen) == 0, "address differs from the record", m, len);
        }
        k++;
    }
    check(k == n, "count differs from the reference", m, len);
    check(ttl == min, "TTL differs from the reference", m, len);
    free(rr);
}

static void oracle_srv(const uint8_t *m, size_t len, int n, const struct dnsanswer_srv *out,
                       int stored, uint32_t ttl)
{
    int room = get16(m + 6), an, k = 0, seen = 0, best = -1;
    struct ref_rr *rr = malloc((size_t)(room + 1) * sizeof(*rr));
    uint32_t min = TTL_NONE;

    an = ref_answers(m, len, rr, room);
    check(an >= 0, "the reference cannot walk an accepted answer", m, len);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < an; i++) {
            const uint8_t *d = m + rr[i].rdata;
            size_t end = rr[i].rdata + 6;

            if (rr[i].type != DNSANSWER_TYPE_SRV || rr[i].class != 1)
                continue;
            if (pass == 0) {
                check(rr[i].rdlen >= 7 && skip_name(m, len, &end) &&
                          end == rr[i].rdata + rr[i].rdlen,
                      "an SRV target not ending with its record accepted", m, len);
                if (seen++ == 0 || rr[i].ttl < min)
                    min = rr[i].ttl;
            }
            if (get16(d + 4) == 0 || is_root(m, len, rr[i].rdata + 6))
                continue;
            if (pass == 0) {
                if (best < 0 || get16(d) < best)
                    best = get16(d);
                continue;
            }
            if (get16(d) != best)
                continue;
            if (k < stored) {
                check(out[k].priority == get16(d) && out[k].weight == get16(d + 2) &&
                          out[k].port == get16(d + 4),
                      "SRV fields differ from the record", m, len);
            }
            k++;
        }
    }
    check(k == n, "SRV count differs from the reference", m, len);
    check(ttl == min, "SRV TTL differs from the reference", m, len);
    free(rr);
}
#endif

static void addrs(const uint8_t *data, size_t size, int type, int port)
{
    struct conf_addr *out = malloc(ROOM * sizeof(*out)), back;
    uint32_t ttl0 = TTL_NONE, ttl = TTL_NONE;
    int n0, n, stored;
    char why[256];

    memset(out, 0xa5, ROOM * sizeof(*out));
    n0 = dnsanswer_addrs(data, (int)size, type, port, NULL, 0, &ttl0);
    n = dnsanswer_addrs(data, (int)size, type, port, out, ROOM, &ttl);
    check(n >= -1 && n0 == n, "count depends on the room", data, size);
    check(ttl0 == ttl, "TTL depends on the room", data, size);
    check(n > 0 || ttl == TTL_NONE, "TTL set without records", data, size);
    stored = n < ROOM ? (n < 0 ? 0 : n) : ROOM;
    for (int i = stored; i < ROOM && n >= 0; i++)
        check(untouched(&out[i], sizeof(out[i])), "written past the records", data, size);
    for (int i = 0; i < stored; i++) {
        const struct conf_addr *a = &out[i];
        int family = type == DNSANSWER_TYPE_A ? AF_INET : AF_INET6;

        check(memchr(a->text, '\0', sizeof(a->text)) != NULL, "text not NUL-terminated", data,
              size);
        check(a->ss.ss_family == family, "wrong family", data, size);
        check(conf_parse_addr(a->text, false, &back, why, sizeof(why)) == 0,
              "text does not parse back", data, size);
        check(strcmp(back.text, a->text) == 0, "text is not conf_parse_addr's", data, size);
        check(back.len == a->len && memcmp(&back.ss, &a->ss, a->len) == 0,
              "text parses back to another address", data, size);
        check(ntohs(((const struct sockaddr_in *)&a->ss)->sin_port) == port, "port not applied",
              data, size);
    }
#ifdef VEER_FUZZ_ORACLE
    if (n >= 0)
        oracle_addrs(data, size, type, n, out, stored, ttl);
#endif
    free(out);
}

static void srvs(const uint8_t *data, size_t size)
{
    struct dnsanswer_srv *out = malloc(ROOM * sizeof(*out));
    uint32_t ttl0 = TTL_NONE, ttl = TTL_NONE;
    uint16_t max_weight = 0;
    int n0, n, stored;

    memset(out, 0xa5, ROOM * sizeof(*out));
    n0 = dnsanswer_srv(data, (int)size, NULL, 0, &ttl0);
    n = dnsanswer_srv(data, (int)size, out, ROOM, &ttl);
    check(n >= -1 && n0 == n, "SRV count depends on the room", data, size);
    check(ttl0 == ttl, "SRV TTL depends on the room", data, size);
    stored = n < ROOM ? (n < 0 ? 0 : n) : ROOM;
    for (int i = 0; i < stored; i++) {
        check(memchr(out[i].target, '\0', sizeof(out[i].target)) != NULL,
              "target not NUL-terminated", data, size);
        check(out[i].target[0] != '\0', "empty target kept", data, size);
        check(out[i].port != 0, "port 0 kept", data, size);
        check(out[i].priority == out[0].priority, "priorities differ", data, size);
        if (out[i].weight > max_weight)
            max_weight = out[i].weight;
    }
    for (int i = 0; i < stored; i++) {
        int w = dnsanswer_weight(out[i].weight, max_weight, 100);

        check(max_weight == 0 ? w == 100 : (w >= 1 && w <= 1000), "weight out of range", data,
              size);
        check(out[i].weight != max_weight || max_weight == 0 || w == 1000,
              "largest weight not 1000", data, size);
    }
#ifdef VEER_FUZZ_ORACLE
    if (n >= 0)
        oracle_srv(data, size, n, out, stored, ttl);
#endif
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int port = 1 + (int)(fnv(data, size) % 65535);

    if (size > 65535)
        return 0;
    addrs(data, size, DNSANSWER_TYPE_A, port);
    addrs(data, size, DNSANSWER_TYPE_AAAA, port);
    srvs(data, size);
    return 0;
}
