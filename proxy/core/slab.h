/*
 * slab.h - fixed-size objects in slabs of their own, apart from the heap.
 *
 * A burst allocates many short-lived objects (buffers, transactions) at
 * the same time as a few long-lived small ones (a session, libevent's
 * record of a new descriptor). From one heap, the long-lived ones end up
 * between the short-lived ones and pin their pages after the burst: the
 * allocator holds the memory and cannot give it back. A slab pool keeps
 * one size of object in 1 MiB mappings of page-aligned slots: a freed
 * slot's pages go back to the system at once (MADV_DONTNEED), an empty
 * slab is unmapped. One pool per thread; no locks.
 *
 * Sanitizer builds get NULL from slab_alloc (callers use malloc), so ASan
 * keeps checking every object's bounds.
 */
#ifndef VEER_SLAB_H
#define VEER_SLAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLAB_BYTES (1u << 20)

struct slab;

struct slab_pool {
    size_t slot;        /* bytes per slot: the object size rounded up to pages */
    unsigned nslots;    /* slots per slab, the first one the slab's header */
    struct slab *slabs; /* slabs with a free slot first */
    unsigned nslabs;
    unsigned used; /* slots handed out */
};

/* A pool of objects of at most `size` bytes (up to SLAB_BYTES / 4). */
void slab_pool_init(struct slab_pool *p, size_t size);

/* Unmap every slab (objects still out go with them). */
void slab_pool_destroy(struct slab_pool *p);

/*
 * An object (its pages may be fresh zeroes or what it held before: not
 * cleared), or NULL when mmap fails or in a sanitizer build.
 */
void *slab_alloc(struct slab_pool *p);

/* Give an object of p back: its pages to the system now, its slab too once empty. */
void slab_free(struct slab_pool *p, void *obj);

#endif
