/*
 * tracectx.c - W3C Trace Context: the traceparent validator and new
 * traceparents from a per-thread ChaCha20 source (tracectx.h).
 */
#include "tracectx.h"
#include "veer.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

/* Are p[0..n) lower-case hex digits (HEXDIGLC)? *nonzero: is one of them not '0'? */
static bool hex_lc(const char *p, size_t n, bool *nonzero)
{
    unsigned any = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)p[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        any |= c ^ '0';
    }
    *nonzero = any != 0;
    return true;
}

#define ONES 0x0101010101010101ull
#define HIGH 0x8080808080808080ull

/*
 * hex_lc on n bytes, n a multiple of 8, eight at a time: the ids are most
 * of a traceparent, and this runs for every request that has one. For a
 * byte b below 0x80, b >= k is the high bit of b + 0x80 - k and b > k that
 * of b + 0x7f - k, and neither sum carries into the next byte.
 */
static bool hex_lc_words(const char *p, size_t n, bool *nonzero)
{
    uint64_t any = 0;

    for (size_t i = 0; i < n; i += 8) {
        uint64_t x, digit, af;

        memcpy(&x, p + i, 8);
        if (x & HIGH)
            return false;
        digit = (x + (0x80 - '0') * ONES) & ~(x + (0x7f - '9') * ONES) & HIGH;
        af = (x + (0x80 - 'a') * ONES) & ~(x + (0x7f - 'f') * ONES) & HIGH;
        if ((digit | af) != HIGH)
            return false;
        any |= x ^ ('0' * ONES);
    }
    *nonzero = any != 0;
    return true;
}

static uint8_t hexbyte(const char *p)
{
    unsigned hi = (unsigned char)p[0], lo = (unsigned char)p[1];

    hi = hi <= '9' ? hi - '0' : hi - 'a' + 10;
    lo = lo <= '9' ? lo - '0' : lo - 'a' + 10;
    return (uint8_t)(hi << 4 | lo);
}

int tracectx_parse(const char *v, size_t n, struct tracectx *out)
{
    bool nz;
    uint8_t version;

    /* "Shorter than 55 characters": no version has fewer. */
    if (n < TRACECTX_LEN || !hex_lc(v, 2, &nz) || v[2] != '-')
        return VEER_ERROR;
    version = hexbyte(v);
    if (version == 0xff)
        return VEER_ERROR;
    /* Version 00 ends after its flags; a later one may go on after a '-'. */
    if (n > TRACECTX_LEN && (version == 0 || v[TRACECTX_LEN] != '-'))
        return VEER_ERROR;
    if (!hex_lc_words(v + 3, TRACECTX_ID_LEN, &nz) || !nz || v[35] != '-')
        return VEER_ERROR;
    if (!hex_lc_words(v + 36, 16, &nz) || !nz || v[52] != '-')
        return VEER_ERROR;
    if (!hex_lc(v + 53, 2, &nz))
        return VEER_ERROR;
    out->trace_id = v + 3;
    out->version = version;
    out->flags = hexbyte(v + 53);
    return VEER_OK;
}

/* --- the random source ---------------------------------------------------------------- */

#define ROTL(x, k) ((x) << (k) | (x) >> (32 - (k)))
#define QR(a, b, c, d)                                                                             \
    do {                                                                                           \
        a += b;                                                                                    \
        d ^= a;                                                                                    \
        d = ROTL(d, 16);                                                                           \
        c += d;                                                                                    \
        b ^= c;                                                                                    \
        b = ROTL(b, 12);                                                                           \
        a += b;                                                                                    \
        d ^= a;                                                                                    \
        d = ROTL(d, 8);                                                                            \
        c += d;                                                                                    \
        b ^= c;                                                                                    \
        b = ROTL(b, 7);                                                                            \
    } while (0)

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One ChaCha block of `rounds` rounds (20: RFC 8439; 8: the stream veer draws ids from). */
static void chacha_block(const uint32_t key[8], uint32_t counter, const uint32_t nonce[3],
                         uint8_t out[64], int rounds)
{
    uint32_t in[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574, key[0], key[1],
                       key[2],     key[3],     key[4],     key[5],     key[6], key[7],
                       counter,    nonce[0],   nonce[1],   nonce[2]};
    uint32_t x[16];

    memcpy(x, in, sizeof(x));
    for (int i = 0; i < rounds / 2; i++) {
        QR(x[0], x[4], x[8], x[12]);
        QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]);
        QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]);
        QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]);
        QR(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; i++) {
        uint32_t w = x[i] + in[i];

        out[4 * i] = (uint8_t)w;
        out[4 * i + 1] = (uint8_t)(w >> 8);
        out[4 * i + 2] = (uint8_t)(w >> 16);
        out[4 * i + 3] = (uint8_t)(w >> 24);
    }
}

void tracectx_chacha20_block(const uint32_t key[8], uint32_t counter, const uint32_t nonce[3],
                             uint8_t out[64])
{
    chacha_block(key, counter, nonce, out, 20);
}

void tracectx_rng_seed(struct tracectx_rng *r, const uint8_t key[32])
{
    for (int i = 0; i < 8; i++)
        r->key[i] = load32(key + 4 * i);
    r->avail = 0;
}

int tracectx_rng_init(struct tracectx_rng *r)
{
    uint8_t key[32];
    size_t got = 0;

    /*
     * Non-blocking first: once the kernel's pool is up (any time after early
     * boot) getrandom never blocks. Before that, waiting is what is right.
     */
    while (got < sizeof(key)) {
        ssize_t n = getrandom(key + got, sizeof(key) - got, got ? 0 : GRND_NONBLOCK);

        if (n < 0 && errno == EAGAIN)
            n = getrandom(key + got, sizeof(key) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return VEER_ERROR;
        got += (size_t)n;
    }
    tracectx_rng_seed(r, key);
    memset(key, 0, sizeof(key));
    return VEER_OK;
}

/* New blocks under the current key; their first 32 bytes are the next key (fast key erasure). */
static void refill(struct tracectx_rng *r)
{
    static const uint32_t nonce[3] = {0, 0, 0};

    for (uint32_t i = 0; i < TRACECTX_RNG_BLOCKS; i++)
        chacha_block(r->key, i, nonce, r->out + 64 * i, TRACECTX_RNG_ROUNDS);
    for (int i = 0; i < 8; i++)
        r->key[i] = load32(r->out + 4 * i);
    memset(r->out, 0, 32);
    r->avail = sizeof(r->out) - 32;
}

void tracectx_rng_bytes(struct tracectx_rng *r, void *buf, size_t n)
{
    uint8_t *o = buf;

    while (n > 0) {
        size_t take;
        uint8_t *src;

        if (r->avail == 0)
            refill(r);
        take = n < r->avail ? n : r->avail;
        src = r->out + sizeof(r->out) - r->avail;
        memcpy(o, src, take);
        memset(src, 0, take);
        r->avail -= (unsigned)take;
        o += take;
        n -= take;
    }
}

/* "00" .. "ff": one lookup per byte. */
static const char hexpair[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                              "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
                              "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                              "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                              "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
                              "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                              "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                              "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

static char *put_hex(char *o, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++, o += 2)
        memcpy(o, hexpair + 2 * p[i], 2);
    return o;
}

void tracectx_new(struct tracectx_rng *r, bool sampled, char out[TRACECTX_LEN + 1])
{
    uint64_t id[3]; /* trace-id (16 bytes), parent-id (8) */
    char *o = out;

    do
        tracectx_rng_bytes(r, id, sizeof(id));
    while ((id[0] | id[1]) == 0 || id[2] == 0); /* 2^-64 at worst: never, in practice */
    memcpy(o, "00-", 3);
    o = put_hex(o + 3, (const uint8_t *)id, 16);
    *o++ = '-';
    o = put_hex(o, (const uint8_t *)&id[2], 8);
    memcpy(o, sampled ? "-01" : "-00", 4);
}
