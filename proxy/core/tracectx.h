/*
 * tracectx.h - W3C Trace Context (https://www.w3.org/TR/trace-context/,
 * Level 1): telling a valid traceparent field value from an invalid one,
 * and making new ones from a fast random source (ChaCha20 with fast key
 * erasure, keyed from getrandom), one per thread that calls it.
 */
#ifndef VEER_TRACECTX_H
#define VEER_TRACECTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACECTX_LEN        55 /* a version 00 traceparent: "00-" 32 "-" 16 "-" 2 */
#define TRACECTX_ID_LEN     32 /* the trace-id in hex */
#define TRACECTX_SAMPLED    1  /* the sampled bit of trace-flags */
#define TRACECTX_RNG_BLOCKS 16
#define TRACECTX_RNG_ROUNDS 8

/* What a valid traceparent says. trace_id points into the value parsed (not NUL-terminated). */
struct tracectx {
    const char *trace_id; /* TRACECTX_ID_LEN lower-case hex characters, not all zero */
    uint8_t version;      /* 00 .. fe */
    uint8_t flags;        /* trace-flags as received (only TRACECTX_SAMPLED has a meaning) */
};

/*
 * Is v[0..n) a traceparent veer may forward as is? VEER_OK (and *out
 * filled) or VEER_ERROR. The rules of the specification's section 3.2:
 * lower-case hex only; version ff is invalid; version 00 is exactly
 * "00-<trace-id>-<parent-id>-<flags>" (55 characters, nothing after);
 * trace-id and parent-id not all zero. A higher version is read as the
 * version 00 fields it starts with (forward compatibility, "Versioning of
 * traceparent"): at least 55 characters, and after the flags either the end
 * or a '-' with whatever the future put there.
 */
int tracectx_parse(const char *v, size_t n, struct tracectx *out);

/*
 * The random source: ChaCha with 8 rounds (ChaCha8, the generator of Go's
 * math/rand/v2 and runtime; ChaCha20's 20 rounds were half of the cost of a
 * started trace: trace ids must be unpredictable enough and unique, not
 * keys) and fast key erasure, the design of OpenBSD's arc4random and
 * Linux's get_random_bytes: each refill makes
 * TRACECTX_RNG_BLOCKS blocks under the current key, the first 32 bytes
 * become the next key and the rest is handed out once, each byte wiped as
 * it goes, so the state never holds what it gave before. Not thread-safe:
 * one per thread (veer's workers each have their own).
 */
struct tracectx_rng {
    uint32_t key[8];
    uint8_t out[64 * TRACECTX_RNG_BLOCKS];
    unsigned avail; /* bytes at the end of out not handed out yet */
};

/* Key the source from getrandom(2). VEER_OK, or VEER_ERROR (errno set) when the kernel has none. */
int tracectx_rng_init(struct tracectx_rng *r);

/* Key the source with key (tests: a known stream). */
void tracectx_rng_seed(struct tracectx_rng *r, const uint8_t key[32]);

/* n random bytes into buf. */
void tracectx_rng_bytes(struct tracectx_rng *r, void *buf, size_t n);

/* One ChaCha20 block (RFC 8439 section 2.3): the source's core, exported for its test vector. */
void tracectx_chacha20_block(const uint32_t key[8], uint32_t counter, const uint32_t nonce[3],
                             uint8_t out[64]);

/*
 * A new version 00 traceparent at out (TRACECTX_LEN characters, then a
 * NUL): a random trace-id and parent-id, neither all zero, and flags 01
 * when sampled, else 00.
 */
void tracectx_new(struct tracectx_rng *r, bool sampled, char out[TRACECTX_LEN + 1]);

#endif
