/*
 * buf.h - contiguous byte buffers for one direction of a connection.
 *
 * A vbuf holds bytes read from a socket in data[start, end). Bodies are
 * forwarded straight out of the buffer they were read into (no copy), so
 * one buffer per direction is all a transaction needs. Buffers of the
 * standard size come from a per-worker cache (no locking, no malloc in
 * steady state) and go back to it as soon as a connection is idle, which is
 * what keeps an idle keep-alive connection at a few hundred bytes.
 *
 * Standard buffers live apart from the heap, in a slab pool of 16 KiB
 * slots per cache (slab.h): a burst's buffers never sit between small
 * objects that outlive them, so once freed their pages go back to the
 * system at once instead of being pinned in the heap by a neighbour.
 */
#ifndef VEER_BUF_H
#define VEER_BUF_H

#include "slab.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct vbuf {
    struct vbuf *next; /* free-list link while cached */
    uint32_t size;     /* bytes of data[] */
    uint32_t start;    /* first unconsumed byte */
    uint32_t end;      /* one past the last byte */
    uint32_t slab;     /* 1: a slot of a slab (standard size, not from malloc) */
    char data[];
};

/* A standard buffer with its header is one 16 KiB slot. */
#define VBUF_SLOT (16 * 1024)
#define VBUF_SIZE (VBUF_SLOT - 24)
_Static_assert(sizeof(struct vbuf) == 24, "VBUF_SIZE assumes a 24-byte header");

struct vbuf_cache {
    struct vbuf *free;
    unsigned nfree;
    unsigned max_free;
    struct slab_pool slabs; /* where standard buffers come from (slab.h) */
    unsigned low;           /* the fewest cached since the last vbuf_cache_trim: never needed */
    unsigned allocated;     /* standard-size buffers in existence (in use or cached) */
    unsigned peak;          /* the most allocated since the last vbuf_cache_trim said "trim" */
};

void vbuf_cache_init(struct vbuf_cache *c, unsigned max_free);
void vbuf_cache_destroy(struct vbuf_cache *c);

/*
 * Give back what a burst left (data/reclaim.c, once a second): half of the
 * cached buffers that stayed unused since the last call are freed. Returns
 * true when, since the call that last returned true, the buffers in
 * existence fell by TRIM_BUFFERS or more from their peak: the allocator then
 * holds that much free memory worth returning to the system (malloc_trim).
 */
#define VBUF_TRIM_BUFFERS 64 /* 1 MiB of standard buffers */
bool vbuf_cache_trim(struct vbuf_cache *c);

/* A standard-size empty buffer, from the cache when possible. */
struct vbuf *vbuf_get(struct vbuf_cache *c);

/* Return a buffer (any size) to the cache or to the allocator. NULL is fine. */
void vbuf_put(struct vbuf_cache *c, struct vbuf *b);

/*
 * Make room for at least `want` bytes after end. Moves live data to the
 * front first; if that is not enough, replaces *bp with a larger buffer of
 * at most `limit` bytes. Live bytes move down by *shift (offsets the caller
 * keeps relative to data[] must be reduced by it). Returns 0, or -1 when
 * `limit` does not allow that much room (the buffer is then compacted but
 * otherwise unchanged).
 */
int vbuf_reserve(struct vbuf_cache *c, struct vbuf **bp, size_t want, size_t limit,
                 uint32_t *shift);

/* Move data[start, end) to the front. Returns how far it moved. */
uint32_t vbuf_compact(struct vbuf *b);

static inline uint32_t vbuf_len(const struct vbuf *b)
{
    return b ? b->end - b->start : 0;
}

static inline uint32_t vbuf_room(const struct vbuf *b)
{
    return b->size - b->end;
}

static inline char *vbuf_tail(struct vbuf *b)
{
    return b->data + b->end;
}

/* Append bytes; the caller made room. */
void vbuf_add(struct vbuf *b, const void *p, size_t n);

/* Read once from socket fd into the free tail. Returns recv(2)'s result. */
ssize_t vbuf_read(struct vbuf *b, int fd);

struct iovec;

/*
 * Write iov to socket fd once, as writev(2) would. send(2) and sendmsg(2)
 * go straight to the socket layer (no file position, no VFS checks), which
 * is measurably cheaper per call on a proxy's data path than read/writev.
 */
ssize_t vbuf_sendv(int fd, const struct iovec *iov, int cnt);

#endif
