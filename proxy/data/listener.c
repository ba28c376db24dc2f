/*
 * listener.c - bind and listen on every configured address, once per
 * worker. See listener.h.
 */
#include "listener.h"
#include "inherit.h"
#include "veer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int open_one(const struct sockaddr_storage *ss, socklen_t len, const char *text)
{
    int fd, one = 1;

    fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_err("listen %s: socket: %s", text, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        log_err("listen %s: SO_REUSEPORT: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) < 0) {
        log_err("listen %s: bind: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        log_err("listen %s: listen: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        snprintf(out, len, "%s:%d", host, port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(out, len, "[%s]:%d", host, port);
    }
}

int *listener_open(const struct conf_listen *lc, unsigned nworkers)
{
    int *fds = veer_malloc(sizeof(int) * (nworkers ? nworkers : 1));
    struct sockaddr_storage ss = lc->addr.ss;
    socklen_t len = lc->addr.len;
    char text[80];
    unsigned ninh;
    const int *inh = inherit_listener(lc->addr.text, &ninh);

    if (inh && ninh == nworkers) {
        /* An upgrade: the very sockets the old process listened on, queues and all. */
        for (unsigned w = 0; w < nworkers; w++) {
            fds[w] = inh[w];
            fcntl(fds[w], F_SETFD, FD_CLOEXEC);
        }
        len = sizeof(ss);
        getsockname(fds[0], (struct sockaddr *)&ss, &len);
        format_addr(&ss, text, sizeof(text));
        log_info("listening on %s (pool %s, %u workers, inherited%s)", text,
                 lc->pool ? lc->pool : "none, routes only", nworkers, lc->tls ? ", tls" : "");
        return fds;
    }
    if (inh) {
        /*
         * Ours are copies: the old process passes on what its queues hold.
         * Kept open they would stay in the port's SO_REUSEPORT group after it
         * exits, taking connections that nobody accepts.
         */
        log_warn("listener %s: %u inherited sockets for %u workers; binding new ones (the old "
                 "process passes on what its queues hold)",
                 lc->addr.text, ninh, nworkers);
        for (unsigned i = 0; i < ninh; i++)
            close(inh[i]);
    }

    for (unsigned w = 0; w < nworkers; w++) {
        fds[w] = open_one(&ss, len, lc->addr.text);
        if (fds[w] < 0) {
            while (w-- > 0)
                close(fds[w]);
            free(fds);
            return NULL;
        }
        if (w == 0) {
            /* Port 0: every other worker binds the port the kernel chose. */
            len = sizeof(ss);
            getsockname(fds[0], (struct sockaddr *)&ss, &len);
        }
    }
    format_addr(&ss, text, sizeof(text));
    log_info("listening on %s (pool %s, %u workers%s)", text,
             lc->pool ? lc->pool : "none, routes only", nworkers, lc->tls ? ", tls" : "");
    return fds;
}

int *listener_open_all(const struct veer_conf *conf, unsigned nworkers)
{
    unsigned n = (unsigned)conf->nlistens;
    int *fds = veer_malloc(sizeof(int) * (n * nworkers + 1));

    for (unsigned i = 0; i < n; i++) {
        int *one = listener_open(&conf->listens[i], nworkers);

        if (one == NULL) {
            for (unsigned k = 0; k < i; k++)
                for (unsigned w = 0; w < nworkers; w++)
                    close(fds[w * n + k]);
            free(fds);
            return NULL;
        }
        for (unsigned w = 0; w < nworkers; w++)
            fds[w * n + i] = one[w];
        free(one);
    }
    return fds;
}
