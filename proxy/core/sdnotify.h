/*
 * sdnotify.h - the sd_notify datagram protocol (READY=1, RELOADING=1,
 * STOPPING=1) without libsystemd: one datagram to $NOTIFY_SOCKET.
 */
#ifndef VEER_SDNOTIFY_H
#define VEER_SDNOTIFY_H

/* Send msg when running under systemd (Type=notify); a no-op otherwise. */
void sd_notify_send(const char *msg);

#endif
