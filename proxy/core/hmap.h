/*
 * hmap.h - a hash index from byte-string keys (names, addresses) to one
 * value each: open addressing with linear probing, kept at most half full,
 * so lookups, inserts and removals take O(1) on average. It replaces the
 * linear scans that made loading a config, building the model and finding a
 * backend by name quadratic in the number of backends.
 *
 * Keys are not copied: the caller keeps each key's bytes alive and
 * unchanged while it is in the map (a backend's name, a config string, an
 * interned address). A zeroed struct hmap is an empty map.
 */
#ifndef VEER_HMAP_H
#define VEER_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct hmap_slot {
    const void *key; /* NULL = empty */
    size_t len;
    uint64_t hash;
    uintptr_t val;
};

struct hmap {
    struct hmap_slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t n;
};

/* The value stored for key, or NULL when it is absent; valid until the map changes. */
uintptr_t *hmap_find(const struct hmap *m, const void *key, size_t len);

/*
 * Add key with val unless it is already there. Returns NULL when added;
 * otherwise the map is unchanged and the existing value is returned.
 */
uintptr_t *hmap_insert(struct hmap *m, const void *key, size_t len, uintptr_t val);

/* Remove key; false when it was absent. */
bool hmap_remove(struct hmap *m, const void *key, size_t len);

/* Free the table (not the keys); the map is empty and usable again. */
void hmap_free(struct hmap *m);

/* The same for NUL-terminated strings (the terminator is not part of the key). */
static inline uintptr_t *hmap_find_str(const struct hmap *m, const char *s)
{
    return hmap_find(m, s, strlen(s));
}

static inline uintptr_t *hmap_insert_str(struct hmap *m, const char *s, uintptr_t val)
{
    return hmap_insert(m, s, strlen(s), val);
}

static inline bool hmap_remove_str(struct hmap *m, const char *s)
{
    return hmap_remove(m, s, strlen(s));
}

#endif
