/*
 * hmap.c - the hash index of hmap.h: word-at-a-time hashes, linear probing,
 * doubling at half full, and removal by shifting the rest of the probe run
 * back (no tombstones, so a map that sees many adds and removes stays fast).
 */
#include "hmap.h"
#include "veer.h"

#include <stdlib.h>

/*
 * Eight bytes per step (a multiply and a shift each), then a 64-bit
 * finalizer (MurmurHash3's fmix64) so that every input bit reaches the low
 * bits the slot is taken from. Keys are names and hosts of 5-40 bytes:
 * FNV-1a's byte at a time was most of a lookup's cost.
 */
static uint64_t hash_bytes(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len, w;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    if (i < len) {
        w = 0;
        memcpy(&w, p + i, len - i);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static bool same_key(const struct hmap_slot *s, uint64_t h, const void *key, size_t len)
{
    return s->hash == h && s->len == len && memcmp(s->key, key, len) == 0;
}

/* The slot holding key, or the empty slot where it would go. */
static struct hmap_slot *probe(const struct hmap *m, uint64_t h, const void *key, size_t len)
{
    size_t mask = m->cap - 1;

    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct hmap_slot *s = &m->slots[i];

        if (s->key == NULL || same_key(s, h, key, len))
            return s;
    }
}

static void grow(struct hmap *m)
{
    struct hmap_slot *old = m->slots;
    size_t oldcap = m->cap;

    m->cap = oldcap ? oldcap * 2 : 16;
    m->slots = veer_calloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key != NULL)
            *probe(m, old[i].hash, old[i].key, old[i].len) = old[i];
    free(old);
}

uintptr_t *hmap_find(const struct hmap *m, const void *key, size_t len)
{
    struct hmap_slot *s;

    if (m->n == 0)
        return NULL;
    s = probe(m, hash_bytes(key, len), key, len);
    return s->key != NULL ? &s->val : NULL;
}

uintptr_t *hmap_insert(struct hmap *m, const void *key, size_t len, uintptr_t val)
{
    uint64_t h = hash_bytes(key, len);
    struct hmap_slot *s;

    if ((m->n + 1) * 2 > m->cap)
        grow(m);
    s = probe(m, h, key, len);
    if (s->key != NULL)
        return &s->val;
    *s = (struct hmap_slot){.key = key, .len = len, .hash = h, .val = val};
    m->n++;
    return NULL;
}

bool hmap_remove(struct hmap *m, const void *key, size_t len)
{
    size_t mask = m->cap - 1, i, j;
    struct hmap_slot *s;

    if (m->n == 0)
        return false;
    s = probe(m, hash_bytes(key, len), key, len);
    if (s->key == NULL)
        return false;
    /* Move back every later entry of the run that may no longer be reached past the hole. */
    i = (size_t)(s - m->slots);
    for (j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;

        /* The entry at j stays when its home lies cyclically in (i, j]. */
        if (i < j ? (home > i && home <= j) : (home > i || home <= j))
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i] = (struct hmap_slot){0};
    m->n--;
    return true;
}

void hmap_free(struct hmap *m)
{
    free(m->slots);
    *m = (struct hmap){0};
}
