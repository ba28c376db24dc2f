/*
 * admin.h - the admin socket: a unix socket on the control thread speaking
 * the line protocol of ARCHITECTURE.md (one command per line, each reply
 * ending with an empty line; on half-close every complete line is answered,
 * then the connection closes). Slow or stuck admin clients never block
 * the data path or each other. A client that sends nothing for
 * timeouts.idle_ms is closed, unless it waits for the answer to a command
 * in flight (drain --wait, replace).
 */
#ifndef VEER_ADMIN_H
#define VEER_ADMIN_H

#include "conf.h"

#include <event2/event.h>

/*
 * Create the socket (mode and owner from the config) and start serving.
 * Refuses (returns -1, logged) when the socket's directory is
 * world-writable, when another process answers on the path, or when the
 * path exists and is not a socket.
 */
int admin_start(struct event_base *base, const struct veer_conf *conf);

/* The listening socket (handed to a new binary at an upgrade), or -1. */
int admin_listen_fd(void);

/*
 * The upgrade handoff. admin_pause: accept no more connections (they wait
 * in the socket's queue for whichever process serves next); connections
 * already open are still served. admin_resume: accept again (the upgrade
 * failed). admin_handover: the new process serves the socket now: this one
 * closes its copy of the listener and answers every command on the
 * connections it still has `ERR upgrading, retry`.
 */
void admin_pause(void);
void admin_resume(void);
void admin_handover(void);

/* Stop serving and close every admin connection (the path stays). */
void admin_stop(void);

#endif
