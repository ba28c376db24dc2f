/*
 * listener.h - listening sockets: one per worker per configured address,
 * all bound with SO_REUSEPORT so the kernel spreads connections across
 * workers without a shared accept lock. Port 0 lets the kernel pick a port
 * (tests); every worker then binds that same port.
 */
#ifndef VEER_LISTENER_H
#define VEER_LISTENER_H

#include "conf.h"

/*
 * Bind conf->nlistens addresses for `nworkers` workers. On success returns
 * an array fds[w * nlistens + i] (caller frees) and logs each address.
 * On failure logs why, closes what it opened and returns NULL.
 */
int *listener_open_all(const struct veer_conf *conf, unsigned nworkers);

/* One listener for `nworkers` workers: fds[w] (caller frees), or NULL (logged). */
int *listener_open(const struct conf_listen *lc, unsigned nworkers);

#endif
