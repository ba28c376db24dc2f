/*
 * slab.c - fixed-size objects in slabs of their own (slab.h).
 *
 * A slab is SLAB_BYTES mapped at an address aligned to its size, so an
 * object finds its slab by masking its address. Slot 0 holds the header;
 * a bitmap says which slots are free.
 */
#include "slab.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_ON 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_ON 0
#endif
#endif
#ifndef SLAB_ON
#define SLAB_ON 1
#endif

#define PAGE     4096u
#define MAXSLOTS (SLAB_BYTES / PAGE)

struct slab {
    struct slab *next, *prev;
    uint64_t free[MAXSLOTS / 64]; /* bit i: slot i is free */
    unsigned used;
};

_Static_assert(sizeof(struct slab) <= PAGE, "a slab's header fits its first slot");

void slab_pool_init(struct slab_pool *p, size_t size)
{
    memset(p, 0, sizeof(*p));
    p->slot = (size + PAGE - 1) / PAGE * PAGE;
    if (p->slot > SLAB_BYTES / 4)
        p->slot = SLAB_BYTES / 4;
    p->nslots = (unsigned)(SLAB_BYTES / p->slot);
}

static void unlink_slab(struct slab_pool *p, struct slab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        p->slabs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    p->nslabs--;
}

static void push_slab(struct slab_pool *p, struct slab *s)
{
    s->prev = NULL;
    s->next = p->slabs;
    if (p->slabs)
        p->slabs->prev = s;
    p->slabs = s;
    p->nslabs++;
}

void slab_pool_destroy(struct slab_pool *p)
{
    while (p->slabs) {
        struct slab *s = p->slabs;

        unlink_slab(p, s);
        munmap(s, SLAB_BYTES);
    }
    p->used = 0;
}

static struct slab *new_slab(struct slab_pool *p)
{
    /* Twice the size, then the unaligned ends go: an aligned slab. */
    char *m = mmap(NULL, 2 * (size_t)SLAB_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uintptr_t a, end;
    struct slab *s;

    if (m == MAP_FAILED)
        return NULL;
    a = ((uintptr_t)m + SLAB_BYTES - 1) & ~(uintptr_t)(SLAB_BYTES - 1);
    end = (uintptr_t)m + 2 * (size_t)SLAB_BYTES;
    if (a > (uintptr_t)m)
        munmap(m, a - (uintptr_t)m);
    if (end > a + SLAB_BYTES)
        munmap((char *)a + SLAB_BYTES, end - a - SLAB_BYTES);
    s = (struct slab *)a;
    memset(s->free, 0, sizeof(s->free));
    for (unsigned i = 1; i < p->nslots; i++)
        s->free[i / 64] |= (uint64_t)1 << (i % 64);
    s->used = 0;
    push_slab(p, s);
    return s;
}

static int first_free(const struct slab *s)
{
    for (unsigned k = 0; k < MAXSLOTS / 64; k++)
        if (s->free[k])
            return (int)(k * 64 + (unsigned)__builtin_ctzll(s->free[k]));
    return -1;
}

void *slab_alloc(struct slab_pool *p)
{
    struct slab *s = p->slabs;
    int i;

    if (!SLAB_ON || p->slot == 0)
        return NULL;
    /* Slabs with room are kept first: the first one has room, or none has. */
    if (s == NULL || (i = first_free(s)) < 0) {
        if ((s = new_slab(p)) == NULL)
            return NULL;
        i = first_free(s);
    }
    s->free[i / 64] &= ~((uint64_t)1 << (i % 64));
    s->used++;
    p->used++;
    if (first_free(s) < 0 && s->next) { /* full: behind the ones with room */
        struct slab *last = s->next;

        while (last->next)
            last = last->next;
        unlink_slab(p, s);
        p->nslabs++;
        s->prev = last;
        last->next = s;
    }
    return (char *)s + (size_t)i * p->slot;
}

void slab_free(struct slab_pool *p, void *obj)
{
    struct slab *s = (struct slab *)((uintptr_t)obj & ~(uintptr_t)(SLAB_BYTES - 1));
    unsigned i = (unsigned)(((char *)obj - (char *)s) / p->slot);
    bool was_full = first_free(s) < 0;

    madvise(obj, p->slot, MADV_DONTNEED);
    s->free[i / 64] |= (uint64_t)1 << (i % 64);
    p->used--;
    if (--s->used == 0) {
        unlink_slab(p, s);
        munmap(s, SLAB_BYTES);
        return;
    }
    if (was_full && s != p->slabs) { /* room again: to the front */
        unlink_slab(p, s);
        push_slab(p, s);
    }
}
