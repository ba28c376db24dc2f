/*
 * mailbox.c - a multi-producer, single-consumer message queue with an
 * eventfd wake-up. See mailbox.h.
 *
 * Producers push onto a list (newest first) with compare-and-swap; the
 * owner exchanges the whole list for NULL and reverses it. No node is ever
 * popped alone, the case where ABA corrupts such a list: a push only needs
 * the head it links to to be the head when it swaps, and if that node was
 * taken, freed and another pushed at its address meanwhile, linking to it
 * is still right. The order of the successful pushes is the order the owner
 * sees, which keeps each producer's own order.
 *
 * Wake-ups: a post that finds the list empty writes the eventfd; the others
 * rely on that pending write. The owner reads the eventfd, then takes the
 * list. After a take the list is empty, so the first post after it writes
 * the eventfd again, after the read: a queued message always has a wake-up
 * on its way. (Reading after taking would lose one: a post between the two
 * would write, find its wake-up read away, and wait with nothing to wake
 * the owner.)
 */
#include "mailbox.h"
#include "veer.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int mailbox_init(struct mailbox *mb)
{
    atomic_init(&mb->head, NULL);
    mb->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return mb->fd < 0 ? VEER_ERROR : VEER_OK;
}

int mailbox_fd(const struct mailbox *mb)
{
    return mb->fd;
}

void mailbox_wake(struct mailbox *mb)
{
    uint64_t one = 1;

    /* EAGAIN: the counter is at its maximum, readable anyway. */
    if (write(mb->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("mailbox: eventfd write: %s", strerror(errno));
}

void mailbox_post(struct mailbox *mb, struct mailbox_node *n)
{
    struct mailbox_node *old = atomic_load_explicit(&mb->head, memory_order_relaxed);

    do
        n->next = old;
    while (!atomic_compare_exchange_weak_explicit(&mb->head, &old, n, memory_order_release,
                                                  memory_order_relaxed));
    if (old == NULL)
        mailbox_wake(mb);
}

struct mailbox_node *mailbox_take(struct mailbox *mb)
{
    struct mailbox_node *n, *oldest = NULL;
    uint64_t v;

    if (read(mb->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("mailbox: eventfd read: %s", strerror(errno));
    n = atomic_exchange_explicit(&mb->head, NULL, memory_order_acq_rel);
    while (n) {
        struct mailbox_node *next = n->next;

        n->next = oldest;
        oldest = n;
        n = next;
    }
    return oldest;
}

size_t mailbox_count(struct mailbox *mb)
{
    size_t k = 0;

    /* Only the owner unlinks nodes, and a pushed node's next never changes until then. */
    for (struct mailbox_node *n = atomic_load_explicit(&mb->head, memory_order_acquire); n;
         n = n->next)
        k++;
    return k;
}

void mailbox_free(struct mailbox *mb, void (*drop)(struct mailbox_node *n))
{
    struct mailbox_node *n;

    if (mb->fd < 0)
        return;
    n = mailbox_take(mb);
    while (n) {
        struct mailbox_node *next = n->next;

        if (drop)
            drop(n);
        n = next;
    }
    close(mb->fd);
    mb->fd = -1;
}
