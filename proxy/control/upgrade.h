/*
 * upgrade.h - binary upgrade (SIGUSR2, `veerctl upgrade`): start the new
 * binary on the same listening sockets and admin socket, and hand it the
 * idle keep-alive client connections, so an upgrade drops nothing.
 *
 * Old process (O)                          New process (N)
 *   freezes its control plane, writes
 *   the state file, fsyncs the audit log
 *   (control_freeze), stops accepting on
 *   the admin socket;
 *   socketpair, fork, exec the binary  -->   inherits the fds named in
 *   with VEER_INHERIT / VEER_UPGRADE_FD       VEER_INHERIT, loads config and
 *                                             the final state, starts
 *                                             accepting on the very same
 *                                             sockets, control plane frozen,
 *                                   <--       admin socket not served, "READY"
 *   "GO": O never writes state or audit -->   takes decisions, serves the
 *   again;                                    admin socket
 *   workers stop accepting (the sockets
 *   stay open in N: nothing queued is lost),
 *   hand idle connections over (SCM_RIGHTS,
 *   at a request boundary, nothing
 *   buffered), finish the busy ones and hand
 *   them over after their response, exit     adopts each connection on a
 *                                             worker as a new session
 * If N fails to start or does not say READY in time, O sends "NO", stops N
 * (SIGTERM), thaws and keeps serving, and logs why. One process owns the
 * state file and the audit chain at any time; in between, neither does.
 * O never unlinks the admin socket path.
 */
#ifndef VEER_UPGRADE_H
#define VEER_UPGRADE_H

#include "inherit.h"

#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

struct worker;

/* Remember how veer was started (binary path and argv) for a later upgrade. */
void upgrade_remember_argv(int argc, char **argv);

/*
 * Old side: start the new binary. Returns 0 when started or -1 (msg). Later
 * exactly one of on_ready (N took over) or on_failed (N is stopped; why).
 */
int upgrade_start(struct event_base *base, struct worker **workers, unsigned nworkers, int admin_fd,
                  void (*on_ready)(void), void (*on_failed)(const char *why), char *msg,
                  size_t len);

/*
 * Old side, before upgrade_start: hand text (state_render_health) to the new
 * binary in an inherited memory file. upgrade_start passes it on to the one
 * binary it starts, and drops it whatever the outcome.
 */
void upgrade_carry(const char *text);

/* Whether an upgrade is under way or done (the old process must not save state after). */
bool upgrade_handed_over(void);

/*
 * New side: say READY to the old process and start adopting its
 * connections. on_handoff(true) once the old process handed the state over
 * ("GO", or it went away before), false when it abandoned the upgrade
 * (a SIGTERM follows).
 */
void upgrade_child_ready(struct event_base *base, struct worker **workers, unsigned nworkers,
                         void (*on_handoff)(bool go));

/* Free what the upgrade machinery holds (exit). */
void upgrade_shutdown(void);

#endif
