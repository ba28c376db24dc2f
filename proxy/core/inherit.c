/*
 * inherit.c - what a process started by a binary upgrade inherits from the
 * old one (listening sockets, the admin socket, readiness, the handover
 * channel), and sending one connection over that channel. See inherit.h.
 */
#include "inherit.h"
#include "veer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct inherited {
    char addr[64];
    int *fds;
    unsigned n;
    bool taken; /* by a listener: never handed out twice */
};

static struct {
    int admin_fd;
    int health_fd; /* the old process's readiness (inherit_health), or -1 */
    struct inherited *sets;
    unsigned nsets;
    int chan;
} st = {.admin_fd = -1, .health_fd = -1, .chan = -1};

int handover_send(int chan, int fd, const char *listen, const struct sockaddr *peer, socklen_t plen)
{
    struct handover_msg hm;
    struct msghdr mh;
    struct iovec iov = {&hm, sizeof(hm)};
    char ctl[CMSG_SPACE(sizeof(int))];
    struct cmsghdr *c;

    memset(&hm, 0, sizeof(hm));
    snprintf(hm.listen, sizeof(hm.listen), "%s", listen);
    if (plen > sizeof(hm.peer))
        plen = sizeof(hm.peer);
    memcpy(&hm.peer, peer, plen);
    hm.peer_len = plen;
    memset(&mh, 0, sizeof(mh));
    memset(ctl, 0, sizeof(ctl));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof(ctl);
    c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return sendmsg(chan, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(hm) ? VEER_OK
                                                                                  : VEER_ERROR;
}

/* A descriptor number, the whole of s; -1 for anything else ("", "x", "4y", "-4", overflow). */
static int parse_fd(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    return (end != s && *end == '\0' && errno == 0 && v >= 0 && v < INT_MAX) ? (int)v : -1;
}

void inherit_init(void)
{
    const char *chan = getenv("VEER_UPGRADE_FD"), *inh = getenv("VEER_INHERIT");
    char *copy, *save = NULL;

    if (chan == NULL || inh == NULL)
        return;
    st.chan = parse_fd(chan);
    copy = veer_strdup(inh);
    for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
        char *eq = strrchr(part, '='), *save2 = NULL;
        struct inherited *in;

        if (eq == NULL)
            continue;
        *eq = '\0';
        if (strcmp(part, "@admin") == 0) {
            st.admin_fd = parse_fd(eq + 1);
            continue;
        }
        if (strcmp(part, "@health") == 0) {
            st.health_fd = parse_fd(eq + 1);
            if (st.health_fd >= 0)
                fcntl(st.health_fd, F_SETFD, FD_CLOEXEC); /* never passed on to a later binary */
            continue;
        }
        st.sets = veer_realloc(st.sets, (st.nsets + 1) * sizeof(*st.sets));
        in = &st.sets[st.nsets++];
        memset(in, 0, sizeof(*in));
        snprintf(in->addr, sizeof(in->addr), "%s", part);
        for (char *f = strtok_r(eq + 1, ",", &save2); f; f = strtok_r(NULL, ",", &save2)) {
            int fd = parse_fd(f);

            /* A malformed one is skipped: a listener must never take -1 as a socket. */
            if (fd < 0)
                continue;
            in->fds = veer_realloc(in->fds, (in->n + 1) * sizeof(int));
            in->fds[in->n++] = fd;
        }
        if (in->n == 0)
            st.nsets--; /* nothing usable: no set */
    }
    free(copy);
    unsetenv("VEER_UPGRADE_FD");
    unsetenv("VEER_INHERIT");
    log_info("upgrade: taking over %u listeners and the admin socket from the old process",
             st.nsets);
}

const int *inherit_listener(const char *addr_text, unsigned *n)
{
    for (unsigned i = 0; i < st.nsets; i++)
        if (!st.sets[i].taken && strcmp(st.sets[i].addr, addr_text) == 0) {
            st.sets[i].taken = true;
            *n = st.sets[i].n;
            return st.sets[i].fds;
        }
    *n = 0;
    return NULL;
}

void inherit_close_unclaimed(void)
{
    for (unsigned i = 0; i < st.nsets; i++) {
        struct inherited *in = &st.sets[i];

        if (in->taken)
            continue;
        log_info("upgrade: closing the %u inherited sockets of %s (not in this config)", in->n,
                 in->addr);
        for (unsigned k = 0; k < in->n; k++)
            close(in->fds[k]);
        in->taken = true;
    }
}

int inherit_admin(void)
{
    return st.admin_fd;
}

int inherit_health(void)
{
    int fd = st.health_fd;

    st.health_fd = -1;
    return fd;
}

int inherit_chan(void)
{
    return st.chan;
}

void inherit_close_chan(void)
{
    if (st.chan >= 0)
        close(st.chan);
    st.chan = -1;
}

bool inherit_is_child(void)
{
    return st.chan >= 0;
}

void inherit_shutdown(void)
{
    inherit_close_chan();
    if (st.health_fd >= 0)
        close(st.health_fd);
    st.health_fd = -1;
    for (unsigned i = 0; i < st.nsets; i++)
        free(st.sets[i].fds);
    free(st.sets);
    st.sets = NULL;
    st.nsets = 0;
}
