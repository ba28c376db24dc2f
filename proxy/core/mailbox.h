/*
 * mailbox.h - the one queue for messages between threads: any thread posts,
 * one thread (the owner) takes, and the owner sees the messages in the
 * order they were posted (oldest first). The control thread's reports from
 * the workers and each worker's messages from the control thread both go
 * through one.
 *
 * Messages are intrusive: a message embeds a struct mailbox_node and is
 * found again with container_of, so posting allocates nothing. Posting
 * takes no lock (a push onto a list with compare-and-swap); the owner takes
 * the whole list at once and runs it without holding anything, so a
 * message posted meanwhile waits for the next take.
 *
 * The owner waits on an eventfd (mailbox_fd) with its own event loop: a
 * post to an empty mailbox makes it readable, and a take reads it. The
 * mailbox itself knows no event library.
 */
#ifndef VEER_MAILBOX_H
#define VEER_MAILBOX_H

#include <stdatomic.h>
#include <stddef.h>

struct mailbox_node {
    struct mailbox_node *next;
};

struct mailbox {
    struct mailbox_node *_Atomic head; /* newest first, until taken */
    int fd;                            /* eventfd, or -1 */
};

/* A mailbox not initialised yet: mailbox_free does nothing to it. */
#define MAILBOX_INITIALIZER                                                                        \
    {                                                                                              \
        .head = NULL, .fd = -1                                                                     \
    }

/* Make mb empty, with its eventfd. VEER_OK, or VEER_ERROR (errno set, mb->fd -1). */
int mailbox_init(struct mailbox *mb);

/* The descriptor the owner waits on (readable: something was posted, or mailbox_wake). */
int mailbox_fd(const struct mailbox *mb);

/*
 * Queue n (any thread). The owner gets it at a later take, after everything
 * posted before it; n belongs to the owner from here on. The eventfd is
 * written only when the mailbox was empty: every later post until the next
 * take finds the same pending wake-up.
 */
void mailbox_post(struct mailbox *mb, struct mailbox_node *n);

/*
 * Make the owner's descriptor readable without a message (any thread), for
 * owners that read other signals on the same wake-up (a worker's command
 * bits). The next take returns whatever is queued, maybe nothing.
 */
void mailbox_wake(struct mailbox *mb);

/*
 * Owner only: take everything queued, oldest first, linked by next (NULL
 * when empty), and clear the descriptor's readiness. The descriptor is read
 * before the list is taken, so a post that lands after the take always
 * leaves it readable again: no message waits without a wake-up.
 */
struct mailbox_node *mailbox_take(struct mailbox *mb);

/* Owner only: how many messages are queued now (producers may add more at once). */
size_t mailbox_count(struct mailbox *mb);

/*
 * Owner only, with no producer left: hand what is still queued to drop
 * (oldest first; drop NULL when nothing can be), close the descriptor.
 * The mailbox may be initialised again afterwards.
 */
void mailbox_free(struct mailbox *mb, void (*drop)(struct mailbox_node *n));

#endif
