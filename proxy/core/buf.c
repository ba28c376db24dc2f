/*
 * buf.c - per-worker buffer cache and the few buffer operations the data
 * path needs. See buf.h for the model.
 */
#include "buf.h"
#include "veer.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* --- the cache ---------------------------------------------------------------------------- */

void vbuf_cache_init(struct vbuf_cache *c, unsigned max_free)
{
    c->free = NULL;
    c->nfree = 0;
    c->max_free = max_free;
    slab_pool_init(&c->slabs, VBUF_SLOT);
    c->low = c->allocated = c->peak = 0;
}

/* Free a buffer that is not cached: a slot to its slab, else to malloc. */
static void release(struct vbuf_cache *c, struct vbuf *b)
{
    if (b->slab)
        slab_free(&c->slabs, b);
    else
        free(b);
}

void vbuf_cache_destroy(struct vbuf_cache *c)
{
    while (c->free) {
        struct vbuf *b = c->free;

        c->free = b->next;
        release(c, b);
    }
    c->nfree = 0;
    slab_pool_destroy(&c->slabs); /* buffers still out (none when the worker is done) go too */
}

static struct vbuf *vbuf_alloc(uint32_t size)
{
    struct vbuf *b = veer_malloc(sizeof(*b) + size);

    b->next = NULL;
    b->size = size;
    b->start = b->end = 0;
    b->slab = 0;
    return b;
}

/* A new standard buffer: a slab's slot, or from malloc (sanitizers, or mmap failing). */
static struct vbuf *standard_alloc(struct vbuf_cache *c)
{
    struct vbuf *b = slab_alloc(&c->slabs);

    if (b == NULL)
        return vbuf_alloc(VBUF_SIZE);
    b->slab = 1;
    b->next = NULL;
    b->size = VBUF_SIZE;
    b->start = b->end = 0;
    return b;
}

struct vbuf *vbuf_get(struct vbuf_cache *c)
{
    struct vbuf *b = c->free;

    if (b == NULL) {
        if (++c->allocated > c->peak)
            c->peak = c->allocated;
        return standard_alloc(c);
    }
    c->free = b->next;
    if (--c->nfree < c->low)
        c->low = c->nfree;
    b->next = NULL;
    b->start = b->end = 0;
    return b;
}

void vbuf_put(struct vbuf_cache *c, struct vbuf *b)
{
    if (b == NULL)
        return;
    if (b->size != VBUF_SIZE || c->nfree >= c->max_free) {
        if (b->size == VBUF_SIZE && c->allocated > 0)
            c->allocated--;
        release(c, b);
        return;
    }
    b->next = c->free;
    c->free = b;
    c->nfree++;
}

bool vbuf_cache_trim(struct vbuf_cache *c)
{
    unsigned drop = (c->low + 1) / 2;
    bool trim;

    for (; drop > 0 && c->free; drop--) {
        struct vbuf *b = c->free;

        c->free = b->next;
        c->nfree--;
        c->allocated--;
        release(c, b);
    }
    c->low = c->nfree;
    trim = c->peak >= c->allocated + VBUF_TRIM_BUFFERS;
    if (trim)
        c->peak = c->allocated;
    return trim;
}

uint32_t vbuf_compact(struct vbuf *b)
{
    uint32_t shift = b->start;

    if (shift == 0)
        return 0;
    memmove(b->data, b->data + b->start, b->end - b->start);
    b->end -= shift;
    b->start = 0;
    return shift;
}

int vbuf_reserve(struct vbuf_cache *c, struct vbuf **bp, size_t want, size_t limit, uint32_t *shift)
{
    struct vbuf *b = *bp, *nb;
    size_t live, size;

    *shift = 0;
    if (vbuf_room(b) >= want)
        return 0;
    *shift = vbuf_compact(b);
    if (vbuf_room(b) >= want)
        return 0;
    live = b->end;
    if (live + want > limit)
        return -1;
    size = b->size;
    while (size < live + want)
        size *= 2;
    if (size > limit)
        size = limit;
    nb = vbuf_alloc((uint32_t)size);
    memcpy(nb->data, b->data, live);
    nb->end = (uint32_t)live;
    vbuf_put(c, b);
    *bp = nb;
    return 0;
}

void vbuf_add(struct vbuf *b, const void *p, size_t n)
{
    memcpy(b->data + b->end, p, n);
    b->end += (uint32_t)n;
}

ssize_t vbuf_read(struct vbuf *b, int fd)
{
    ssize_t n;

    do {
        n = recv(fd, b->data + b->end, b->size - b->end, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        b->end += (uint32_t)n;
    return n;
}

ssize_t vbuf_sendv(int fd, const struct iovec *iov, int cnt)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
    ssize_t n;

    do {
        n = cnt == 1 ? send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                     : sendmsg(fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}
