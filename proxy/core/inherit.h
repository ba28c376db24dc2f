/*
 * inherit.h - the new process's side of a binary upgrade (control/upgrade.h
 * has the whole sequence): the descriptors it inherits from the old process
 * (listening sockets, the admin socket, readiness carried over, the
 * handover channel), and the message one handed-over client connection
 * travels in, which the old process's workers send (handover_send).
 */
#ifndef VEER_INHERIT_H
#define VEER_INHERIT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

/* What a handed-over connection carries besides its fd. */
struct handover_msg {
    char listen[64]; /* the listener's address as written in the config */
    struct sockaddr_storage peer;
    socklen_t peer_len;
};

/* Old side, worker thread: pass one idle client connection to the new process. */
int handover_send(int chan, int fd, const char *listen, const struct sockaddr *peer,
                  socklen_t plen);

/*
 * New side, at start: read VEER_INHERIT / VEER_UPGRADE_FD. inherit_listener
 * returns the fds inherited for a listener address (n of them), or NULL;
 * each set once (two listeners on "host:0" have a set each; an address a
 * reload adds again gets none). inherit_admin: the admin socket or -1.
 */
void inherit_init(void);
const int *inherit_listener(const char *addr_text, unsigned *n);

/*
 * Close the inherited sets no listener took (addresses the new config no
 * longer has): left open they would stay in their port's SO_REUSEPORT group
 * after the old process exits, queueing connections nobody accepts.
 */
void inherit_close_unclaimed(void);
int inherit_admin(void);

/* The old process's readiness text (upgrade_carry) as an fd the caller closes, or -1. */
int inherit_health(void);

/* Whether this process was started by an upgrade (after inherit_init). */
bool inherit_is_child(void);

/* The channel to the old process, or -1; closing it. */
int inherit_chan(void);
void inherit_close_chan(void);

/* Free what was inherited and not taken (exit). */
void inherit_shutdown(void);

#endif
