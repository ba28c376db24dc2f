/*
 * fuzz_traceparent.c - libFuzzer target: the W3C traceparent validator
 * (tracectx_parse). The input is a field value as the HTTP parser hands it
 * over, in a buffer of exactly its size, so ASan sees any byte read past it.
 *
 * Always checked: no memory error; an accepted value has its trace-id at
 * offset 3, 32 lower-case hex digits not all zero, and the version and
 * flags its text says; the verdict does not depend on bytes past the
 * first 56 when the version is not 00 (forward compatibility: what follows
 * the version 00 fields and a '-' is the future's); a new traceparent made
 * from the input's bytes as a key is accepted and says what it was made
 * with.
 *
 * With -DVEER_FUZZ_ORACLE, also compared with a reference written the
 * slow, obvious way from the specification's ABNF: split the value on '-',
 * then check each field's length and alphabet.
 */
#include "tracectx.h"
#include "veer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, const uint8_t *in, size_t len)
{
    if (!ok) {
        fprintf(stderr, "fuzz_traceparent: %s: '%.*s'\n", what, (int)len, (const char *)in);
        abort();
    }
}

static bool lc_hex(const char *p, size_t n, bool nonzero)
{
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
        any |= p[i] != '0';
    }
    return !nonzero || any;
}

#ifdef VEER_FUZZ_ORACLE
/*
 * Reference: version "-" then, split on '-', trace-id, parent-id, flags,
 * and for a version other than 00 any number of further fields.
 */
static bool ref_valid(const char *v, size_t n)
{
    size_t start[64], len[64], k = 0, i = 3, s = 3;

    if (n < 3 || !lc_hex(v, 2, false) || v[2] != '-' || (v[0] == 'f' && v[1] == 'f'))
        return false;
    for (; i <= n; i++) {
        if (i == n || v[i] == '-') {
            if (k == 64)
                break; /* more fields than the checks below look at */
            start[k] = s;
            len[k++] = i - s;
            s = i + 1;
        }
    }
    if (k < 3 || (v[0] == '0' && v[1] == '0' && k != 3))
        return false;
    return len[0] == 32 && lc_hex(v + start[0], 32, true) && len[1] == 16 &&
           lc_hex(v + start[1], 16, true) && len[2] == 2 && lc_hex(v + start[2], 2, false);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = malloc(size ? size : 1);
    struct tracectx tc, tc2;
    struct tracectx_rng r;
    uint8_t key[32] = {0};
    char tp[TRACECTX_LEN + 1];
    int rc;

    memcpy(v, data, size);
    rc = tracectx_parse(v, size, &tc);
    check(rc == VEER_OK || rc == VEER_ERROR, "unknown status", data, size);
    if (rc == VEER_OK) {
        check(size >= TRACECTX_LEN, "accepted a value shorter than 55", data, size);
        check(tc.trace_id == v + 3, "trace-id not at offset 3", data, size);
        check(lc_hex(tc.trace_id, TRACECTX_ID_LEN, true), "trace-id not valid", data, size);
        check(tc.version == strtoul((char[]){v[0], v[1], 0}, NULL, 16), "version", data, size);
        check(tc.flags == strtoul((char[]){v[53], v[54], 0}, NULL, 16), "flags", data, size);
        check(tc.version != 0xff, "version ff accepted", data, size);
        check(tc.version != 0 || size == TRACECTX_LEN, "version 00 with more", data, size);
    }
    /* What the future puts after "-" is not looked at. */
    if (size > TRACECTX_LEN + 1 && !(data[0] == '0' && data[1] == '0') && data[TRACECTX_LEN] == '-')
        check(tracectx_parse(v, TRACECTX_LEN + 1, &tc2) == rc, "looked past the future's '-'", data,
              size);
#ifdef VEER_FUZZ_ORACLE
    check((rc == VEER_OK) == ref_valid(v, size), "verdict differs from the reference", data, size);
#endif
    memcpy(key, data, size < sizeof(key) ? size : sizeof(key));
    tracectx_rng_seed(&r, key);
    tracectx_new(&r, size & 1, tp);
    check(strlen(tp) == TRACECTX_LEN, "new traceparent length", data, size);
    check(tracectx_parse(tp, TRACECTX_LEN, &tc2) == VEER_OK, "new traceparent refused", data, size);
    check(tc2.version == 0 && tc2.flags == (size & 1), "new traceparent's version or flags", data,
          size);
    free(v);
    return 0;
}
