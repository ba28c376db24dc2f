/*
 * check_listener.c - listening sockets: one per worker per address, all
 * non-blocking, close-on-exec, SO_REUSEPORT and listening with the full
 * backlog on the one port (the kernel's pick for port 0), IPv6 only on IPv6
 * addresses; a port taken by a socket without SO_REUSEPORT, or a failure
 * at any worker or listener, is refused with a message and leaves no
 * socket behind; on a binary upgrade the inherited sockets are taken as
 * they are, each inherited set once, and a set for another worker count is
 * replaced rather than left in the port's group.
 *
 * Everything binds loopback on ports the kernel picks; every wait for a
 * connection is a poll() with a deadline.
 */
#include "conf.h"
#include "listener.h"
#include "inherit.h"
#include "veer.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a queued connection may take to show up on a listening socket. */
#define ACCEPT_WAIT_MS 5000

static char pool_name[] = "api";

/* Open descriptors of this process, as /proc/self/fd lists them. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* A conf_listen for text, as the config loader builds it. */
static struct conf_listen make_listen(const char *text)
{
    struct conf_listen lc;
    char err[256] = "";

    memset(&lc, 0, sizeof(lc));
    ck_assert_msg(conf_parse_addr(text, true, &lc.addr, err, sizeof(err)) == 0, "%s: %s", text,
                  err);
    lc.pool = pool_name;
    lc.pool_index = 0;
    return lc;
}

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static struct sockaddr_storage local_addr(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    memset(&ss, 0, sizeof(ss));
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return ss;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss = local_addr(fd);

    return port_of(&ss);
}

static int sockopt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    ck_assert_int_eq(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

/* A loopback address of family on port. */
static socklen_t loopback(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons((uint16_t)port);
        return sizeof(*a);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;

    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons((uint16_t)port);
    return sizeof(*a);
}

/*
 * A TCP socket bound to loopback on port (0: the kernel picks), with
 * SO_REUSEPORT when reuseport, listening when listening. Blocking, and
 * inheritable across exec like the sockets an upgrading veer passes on.
 */
static int plain_socket(int family, int port, bool reuseport, bool listening)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM, 0), one = 1;

    ck_assert_int_ge(fd, 0);
    if (reuseport)
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    ck_assert_msg(bind(fd, (struct sockaddr *)&ss, len) == 0, "bind port %d: %s", port,
                  strerror(errno));
    if (listening)
        ck_assert_int_eq(listen(fd, 16), 0);
    return fd;
}

/* An ephemeral port that was free a moment ago: bound by the kernel, then released. */
static int free_port(int family)
{
    int fd = plain_socket(family, 0, false, false);
    int port = local_port(fd);

    close(fd);
    return port;
}

/*
 * Whether no socket listens on port any more: a bind with SO_REUSEADDR (so
 * that connections in TIME_WAIT do not count) and a listen succeed.
 */
static bool no_listener_on(int family, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM, 0), one = 1;
    bool ok;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
    ok = bind(fd, (struct sockaddr *)&ss, len) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

static bool have_ipv6_loopback(void)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(AF_INET6, 0, &ss);
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0)
        return false;
    ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

/* A blocking client connected to loopback:port. */
static int connect_to(int family, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_msg(connect(fd, (struct sockaddr *)&ss, len) == 0, "connect port %d: %s", port,
                  strerror(errno));
    return fd;
}

/*
 * Wait (up to ACCEPT_WAIT_MS) for a connection on one of fds[0..n) and
 * accept it. Returns the index of the socket that had it, the accepted
 * socket in *conn; -1 when none came.
 */
static int accept_any(const int *fds, unsigned n, int *conn)
{
    struct pollfd pfd[16];

    ck_assert_uint_le(n, 16);
    for (unsigned i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    if (poll(pfd, n, ACCEPT_WAIT_MS) <= 0)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        if (!(pfd[i].revents & POLLIN))
            continue;
        *conn = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
        ck_assert_msg(*conn >= 0, "accept: %s", strerror(errno));
        return (int)i;
    }
    return -1;
}

/* Whether any of fds[0..n) has a connection waiting right now. */
static bool any_pending(const int *fds, unsigned n)
{
    struct pollfd pfd[16];

    ck_assert_uint_le(n, 16);
    for (unsigned i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    return poll(pfd, n, 0) > 0;
}

/*
 * Connect nconn clients to port and check that each is accepted, once, on
 * one of fds[0..n), with the client's address as its peer.
 */
static void expect_accepted(const int *fds, unsigned n, int family, int port, int nconn)
{
    for (int c = 0; c < nconn; c++) {
        int client = connect_to(family, port), conn = -1;
        int i = accept_any(fds, n, &conn);
        struct sockaddr_storage mine = local_addr(client), peer;
        socklen_t plen = sizeof(peer);

        ck_assert_msg(i >= 0, "connection %d to port %d accepted by none of %u sockets", c, port,
                      n);
        ck_assert_int_eq(local_port(conn), port);
        ck_assert_int_eq(getpeername(conn, (struct sockaddr *)&peer, &plen), 0);
        ck_assert_int_eq(port_of(&peer), port_of(&mine));
        close(client);
        close(conn);
    }
    ck_assert_msg(!any_pending(fds, n), "a connection is left in a queue");
}

static void close_all(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
}

/* stderr into a temporary file, to read what veer logged. */
struct capture {
    int saved, fd;
};

static struct capture capture_start(void)
{
    char path[] = "/tmp/check_listener_XXXXXX";
    struct capture c;

    c.fd = mkstemp(path);
    ck_assert_int_ge(c.fd, 0);
    unlink(path);
    c.saved = dup(STDERR_FILENO);
    ck_assert_int_ge(c.saved, 0);
    ck_assert_int_eq(dup2(c.fd, STDERR_FILENO), STDERR_FILENO);
    return c;
}

/* Restore stderr, return what was written (caller frees). */
static char *capture_stop(struct capture *c)
{
    char *text = veer_malloc(4096);
    ssize_t n;

    ck_assert_int_eq(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
    close(c->saved);
    n = pread(c->fd, text, 4095, 0);
    close(c->fd);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

static void expect_log(const char *log, const char *what)
{
    ck_assert_msg(strstr(log, what) != NULL, "log lacks \"%s\":\n%s", what, log);
}

/* Load text as a config that must be valid. */
static struct veer_conf *load_conf(const char *text)
{
    char path[] = "/tmp/check_listener_XXXXXX.conf", err[512] = "";
    int fd = mkstemps(path, 5);
    size_t len = strlen(text);
    struct veer_conf *conf;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    conf = conf_load(path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(conf != NULL, "config refused: %s", err);
    return conf;
}

/* ------------------------------------------------------------------------ */
/* binding                                                                  */

START_TEST(test_each_worker_gets_a_nonblocking_reuseport_socket_on_one_port)
{
    unsigned nworkers = (unsigned)_i;
    int port = free_port(AF_INET), before = count_fds();
    char text[64];
    struct conf_listen lc;
    int *fds;

    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    lc = make_listen(text);
    fds = listener_open(&lc, nworkers);
    ck_assert_ptr_nonnull(fds);
    ck_assert_int_eq(count_fds(), before + (int)nworkers);
    for (unsigned w = 0; w < nworkers; w++) {
        struct sockaddr_storage ss = local_addr(fds[w]);
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;

        for (unsigned v = 0; v < w; v++)
            ck_assert_int_ne(fds[w], fds[v]);
        ck_assert(fcntl(fds[w], F_GETFL) & O_NONBLOCK);
        ck_assert(fcntl(fds[w], F_GETFD) & FD_CLOEXEC);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_TYPE), SOCK_STREAM);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_REUSEPORT), 1);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_REUSEADDR), 1);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_ACCEPTCONN), 1);
        ck_assert_int_eq(ss.ss_family, AF_INET);
        ck_assert_uint_eq(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
        ck_assert_int_eq(ntohs(a->sin_port), port);
    }
    expect_accepted(fds, nworkers, AF_INET, port, 8);
    ck_assert(!no_listener_on(AF_INET, port));
    close_all(fds, nworkers);
    ck_assert_int_eq(count_fds(), before);
    ck_assert(no_listener_on(AF_INET, port));
}
END_TEST

START_TEST(test_port_zero_binds_every_worker_to_the_port_the_kernel_chose)
{
    struct conf_listen lc = make_listen("127.0.0.1:0");
    int *fds = listener_open(&lc, 4);
    int port;

    ck_assert_ptr_nonnull(fds);
    port = local_port(fds[0]);
    ck_assert_int_ne(port, 0);
    for (unsigned w = 1; w < 4; w++)
        ck_assert_int_eq(local_port(fds[w]), port);
    /* The conf keeps what the operator wrote. */
    ck_assert_str_eq(lc.addr.text, "127.0.0.1:0");
    expect_accepted(fds, 4, AF_INET, port, 8);
    close_all(fds, 4);
}
END_TEST

/* The kernel's view of a listener: TCP_INFO gives the backlog of a LISTEN socket in tcpi_sacked. */
START_TEST(test_backlog_is_somaxconn_capped_by_the_sysctl)
{
    struct conf_listen lc = make_listen("127.0.0.1:0");
    int *fds = listener_open(&lc, 2);
    unsigned expect = SOMAXCONN;
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");

    if (f) {
        unsigned sys;

        if (fscanf(f, "%u", &sys) == 1 && sys < expect)
            expect = sys;
        fclose(f);
    }
    ck_assert_ptr_nonnull(fds);
    for (unsigned w = 0; w < 2; w++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        memset(&ti, 0, sizeof(ti));
        ck_assert_int_eq(getsockopt(fds[w], IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
        ck_assert_int_eq(ti.tcpi_state, TCP_LISTEN);
        ck_assert_uint_eq(ti.tcpi_sacked, expect);
        ck_assert_uint_eq(ti.tcpi_unacked, 0); /* nothing queued yet */
    }
    close_all(fds, 2);
}
END_TEST

START_TEST(test_ipv6_loopback_is_bound_v6only)
{
    struct conf_listen lc;
    int *fds, port;

    if (!have_ipv6_loopback()) {
        fprintf(stderr, "check_listener: no IPv6 loopback here, IPv6 test skipped\n");
        return;
    }
    lc = make_listen("[::1]:0");
    ck_assert_int_eq(lc.addr.ss.ss_family, AF_INET6);
    fds = listener_open(&lc, 3);
    ck_assert_ptr_nonnull(fds);
    port = local_port(fds[0]);
    ck_assert_int_ne(port, 0);
    for (unsigned w = 0; w < 3; w++) {
        struct sockaddr_storage ss = local_addr(fds[w]);
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;

        ck_assert_int_eq(ss.ss_family, AF_INET6);
        ck_assert(IN6_IS_ADDR_LOOPBACK(&a->sin6_addr));
        ck_assert_int_eq(ntohs(a->sin6_port), port);
        ck_assert(fcntl(fds[w], F_GETFL) & O_NONBLOCK);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_REUSEPORT), 1);
        ck_assert_int_eq(sockopt(fds[w], IPPROTO_IPV6, IPV6_V6ONLY), 1);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_ACCEPTCONN), 1);
    }
    expect_accepted(fds, 3, AF_INET6, port, 6);
    close_all(fds, 3);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* failures                                                                 */

/* What holds the port: 0 a listener, 1 a socket only bound, 2 a listener with SO_REUSEADDR. */
START_TEST(test_port_held_without_reuseport_is_refused_and_leaks_nothing)
{
    int occupant = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_storage ss;
    socklen_t len = loopback(AF_INET, 0, &ss);
    struct conf_listen lc;
    struct capture cap;
    char text[64], want[128], *log;
    int port, before, *fds;

    ck_assert_int_ge(occupant, 0);
    if (_i == 2)
        ck_assert_int_eq(setsockopt(occupant, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
    ck_assert_int_eq(bind(occupant, (struct sockaddr *)&ss, len), 0);
    if (_i != 1)
        ck_assert_int_eq(listen(occupant, 4), 0);
    port = local_port(occupant);
    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    lc = make_listen(text);

    cap = capture_start();
    before = count_fds();
    fds = listener_open(&lc, 3);
    ck_assert_int_eq(count_fds(), before);
    log = capture_stop(&cap);
    ck_assert_ptr_null(fds);
    snprintf(want, sizeof(want), "listen %s: bind: %s", text, strerror(EADDRINUSE));
    expect_log(log, want);
    free(log);

    /* The occupant is untouched: still bound there, and a listener still gets its clients. */
    ck_assert_int_eq(local_port(occupant), port);
    if (_i != 1)
        expect_accepted(&occupant, 1, AF_INET, port, 1);
    close(occupant);
}
END_TEST

/*
 * The third worker's socket() fails (no descriptor left): the two sockets
 * already bound are closed, so the port is free again and nothing leaks.
 */
START_TEST(test_a_late_worker_failure_closes_the_sockets_already_bound)
{
    int port = free_port(AF_INET), before, *fds;
    struct conf_listen lc;
    struct capture cap;
    struct rlimit saved, lim;
    char text[64], want[128], *log;
    bool open_fd[4096];
    rlim_t limit, nfree = 0;

    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    lc = make_listen(text);
    cap = capture_start();
    before = count_fds();

    /* The lowest limit that leaves exactly two descriptors to allocate. */
    memset(open_fd, 0, sizeof(open_fd));
    for (int fd = 0; fd < 4096; fd++)
        open_fd[fd] = fcntl(fd, F_GETFD) >= 0;
    for (limit = 0; limit < 4096 && nfree < 2; limit++)
        nfree += !open_fd[limit];
    ck_assert_uint_eq(nfree, 2);
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
    lim = saved;
    lim.rlim_cur = limit;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    fds = listener_open(&lc, 3);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);

    ck_assert_int_eq(count_fds(), before);
    log = capture_stop(&cap);
    ck_assert_ptr_null(fds);
    snprintf(want, sizeof(want), "listen %s: socket: %s", text, strerror(EMFILE));
    expect_log(log, want);
    free(log);
    ck_assert_msg(no_listener_on(AF_INET, port), "port %d still held after the failure", port);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* listener_open_all                                                        */

#define TWO_LISTENERS                                                                              \
    "workers = 3;\n"                                                                               \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; },\n"                                 \
    "           { address = \"127.0.0.1:%d\"; pool = \"web\"; } );\n"                              \
    "pools = ( { name = \"api\"; }, { name = \"web\"; } );\n"

START_TEST(test_open_all_binds_every_listener_for_every_worker)
{
    char text[512];
    struct veer_conf *conf;
    unsigned nw;
    int port1 = free_port(AF_INET), port0, before, *fds;
    int per[2][16];

    snprintf(text, sizeof(text), TWO_LISTENERS, port1);
    conf = load_conf(text);
    ck_assert_int_eq(conf->nlistens, 2);
    ck_assert_int_eq(conf->workers, 3);
    nw = (unsigned)conf->workers;
    before = count_fds();
    fds = listener_open_all(conf, nw);
    ck_assert_ptr_nonnull(fds);
    ck_assert_int_eq(count_fds(), before + 2 * (int)nw);

    /* fds[w * nlistens + i]: worker w's socket for listener i. */
    port0 = local_port(fds[0]);
    ck_assert_int_ne(port0, 0);
    ck_assert_int_ne(port0, port1);
    for (unsigned w = 0; w < nw; w++) {
        per[0][w] = fds[w * 2 + 0];
        per[1][w] = fds[w * 2 + 1];
        ck_assert_int_eq(local_port(per[0][w]), port0);
        ck_assert_int_eq(local_port(per[1][w]), port1);
        for (unsigned i = 0; i < 2; i++) {
            ck_assert(fcntl(per[i][w], F_GETFL) & O_NONBLOCK);
            ck_assert_int_eq(sockopt(per[i][w], SOL_SOCKET, SO_REUSEPORT), 1);
            ck_assert_int_eq(sockopt(per[i][w], SOL_SOCKET, SO_ACCEPTCONN), 1);
        }
    }
    /* Each listener's clients arrive on that listener's sockets, and only there. */
    expect_accepted(per[0], nw, AF_INET, port0, 6);
    ck_assert(!any_pending(per[1], nw));
    expect_accepted(per[1], nw, AF_INET, port1, 6);
    ck_assert(!any_pending(per[0], nw));

    close_all(fds, 2 * nw);
    ck_assert_int_eq(count_fds(), before);
    conf_free(conf);
}
END_TEST

START_TEST(test_open_all_failure_closes_the_listeners_already_open)
{
    char text[512], want[128], *log;
    struct veer_conf *conf;
    struct capture cap;
    int occupant = plain_socket(AF_INET, 0, false, true), port1 = local_port(occupant);
    int before, *fds;

    snprintf(text, sizeof(text), TWO_LISTENERS, port1);
    conf = load_conf(text);
    cap = capture_start();
    before = count_fds();
    fds = listener_open_all(conf, 3);
    ck_assert_int_eq(count_fds(), before);
    log = capture_stop(&cap);
    ck_assert_ptr_null(fds);

    /* The first listener was up (logged), then closed when the second could not bind. */
    expect_log(log, "listening on 127.0.0.1:");
    snprintf(want, sizeof(want), "listen 127.0.0.1:%d: bind: %s", port1, strerror(EADDRINUSE));
    expect_log(log, want);
    free(log);
    expect_accepted(&occupant, 1, AF_INET, port1, 1);
    close(occupant);
    conf_free(conf);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* binary upgrade: inherited sockets                                        */

/*
 * Play the old process: n listening SO_REUSEPORT sockets on port (0: one
 * the kernel picks, then that one), inheritable like after exec.
 */
static int old_listeners(int *fds, unsigned n, int port)
{
    for (unsigned i = 0; i < n; i++) {
        fds[i] = plain_socket(AF_INET, port, true, true);
        ck_assert_int_eq(fcntl(fds[i], F_SETFL, O_NONBLOCK), 0);
        port = local_port(fds[i]);
    }
    return port;
}

/* Append ";addr=fd,fd,..." to the VEER_INHERIT value in env. */
static void inherit_part(char *env, size_t len, const char *addr, const int *fds, unsigned n)
{
    size_t at = strlen(env);

    at += (size_t)snprintf(env + at, len - at, ";%s=", addr);
    for (unsigned i = 0; i < n; i++)
        at += (size_t)snprintf(env + at, len - at, "%s%d", i ? "," : "", fds[i]);
}

/* Start as the new process of an upgrade, with VEER_INHERIT = "@admin=-1" env. */
static void child_init(const char *env)
{
    char chan[16];
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    ck_assert_int_ge(fd, 0);
    snprintf(chan, sizeof(chan), "%d", fd);
    ck_assert_int_eq(setenv("VEER_UPGRADE_FD", chan, 1), 0);
    ck_assert_int_eq(setenv("VEER_INHERIT", env, 1), 0);
    inherit_init();
    ck_assert_ptr_null(getenv("VEER_INHERIT"));
}

START_TEST(test_inherited_sockets_are_taken_as_they_are)
{
    int old[3], port = old_listeners(old, 3, 0), before, *fds;
    char env[256] = "@admin=-1", text[64], *log;
    struct conf_listen lc;
    struct capture cap;

    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    inherit_part(env, sizeof(env), text, old, 3);
    child_init(env);
    lc = make_listen(text);

    cap = capture_start();
    before = count_fds();
    fds = listener_open(&lc, 3);
    ck_assert_int_eq(count_fds(), before); /* nothing new bound */
    log = capture_stop(&cap);
    ck_assert_ptr_nonnull(fds);
    expect_log(log, "inherited");
    free(log);
    for (unsigned w = 0; w < 3; w++) {
        ck_assert_int_eq(fds[w], old[w]);
        ck_assert(fcntl(fds[w], F_GETFD) & FD_CLOEXEC); /* not passed on to a later exec */
        ck_assert(fcntl(fds[w], F_GETFL) & O_NONBLOCK);
    }
    expect_accepted(fds, 3, AF_INET, port, 6);
    close_all(fds, 3);
    inherit_shutdown();
}
END_TEST

/*
 * The old process had three workers, this one has two: two new sockets,
 * and the three inherited ones are closed here. Left open, they would stay
 * in the port's SO_REUSEPORT group once the old process is gone and take
 * their share of new connections, which nobody would ever accept.
 */
START_TEST(test_inherited_sockets_for_another_worker_count_are_replaced)
{
    int old[3], inh[3], port = old_listeners(old, 3, 0), before, *fds;
    char env[256] = "@admin=-1", text[64];
    struct conf_listen lc;

    /* The new process's copies of the old process's sockets. */
    for (unsigned i = 0; i < 3; i++)
        inh[i] = dup(old[i]);
    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    inherit_part(env, sizeof(env), text, inh, 3);
    child_init(env);
    lc = make_listen(text);

    before = count_fds();
    fds = listener_open(&lc, 2);
    ck_assert_ptr_nonnull(fds);
    for (unsigned w = 0; w < 2; w++) {
        ck_assert_int_eq(local_port(fds[w]), port);
        ck_assert_int_eq(sockopt(fds[w], SOL_SOCKET, SO_REUSEPORT), 1);
        ck_assert(fcntl(fds[w], F_GETFL) & O_NONBLOCK);
    }
    /* The old process passes on what its queues hold (nothing here) and exits. */
    for (unsigned i = 0; i < 3; i++)
        close(old[i]);
    expect_accepted(fds, 2, AF_INET, port, 24);
    ck_assert_int_eq(count_fds(), before - 3 + 2 - 3);
    close_all(fds, 2);
    inherit_shutdown();
}
END_TEST

/*
 * Two listeners on "127.0.0.1:0" (allowed: each gets its own port) are
 * inherited as two sets under one address text: each listener takes its
 * own set, and a third listener on that text (added by a reload) binds
 * new sockets rather than taking a set again.
 */
START_TEST(test_each_inherited_set_serves_one_listener)
{
    int a[2], b[2], pa = old_listeners(a, 2, 0), pb = old_listeners(b, 2, 0), *fds, *more;
    char env[256] = "@admin=-1";
    struct conf_listen lc = make_listen("127.0.0.1:0");
    struct veer_conf *conf =
        load_conf("workers = 2;\n"
                  "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; },\n"
                  "           { address = \"127.0.0.1:0\"; pool = \"web\"; } );\n"
                  "pools = ( { name = \"api\"; }, { name = \"web\"; } );\n");

    ck_assert_int_ne(pa, pb);
    inherit_part(env, sizeof(env), "127.0.0.1:0", a, 2);
    inherit_part(env, sizeof(env), "127.0.0.1:0", b, 2);
    child_init(env);

    fds = listener_open_all(conf, 2);
    ck_assert_ptr_nonnull(fds);
    ck_assert_int_eq(fds[0 * 2 + 0], a[0]);
    ck_assert_int_eq(fds[1 * 2 + 0], a[1]);
    ck_assert_int_eq(fds[0 * 2 + 1], b[0]);
    ck_assert_int_eq(fds[1 * 2 + 1], b[1]);

    more = listener_open(&lc, 2);
    ck_assert_ptr_nonnull(more);
    for (unsigned w = 0; w < 2; w++) {
        for (unsigned k = 0; k < 4; k++)
            ck_assert_int_ne(more[w], fds[k]);
        ck_assert_int_ne(local_port(more[w]), pa);
        ck_assert_int_ne(local_port(more[w]), pb);
        ck_assert_int_eq(sockopt(more[w], SOL_SOCKET, SO_ACCEPTCONN), 1);
    }
    ck_assert_int_eq(local_port(more[0]), local_port(more[1]));
    close_all(more, 2);
    close_all(fds, 4);
    inherit_shutdown();
    conf_free(conf);
}
END_TEST

static Suite *listener_suite(void)
{
    Suite *s = suite_create("listener");
    TCase *tb = tcase_create("bind");
    TCase *tf = tcase_create("failures");
    TCase *ta = tcase_create("open_all");
    TCase *tu = tcase_create("upgrade");

    tcase_add_loop_test(tb, test_each_worker_gets_a_nonblocking_reuseport_socket_on_one_port, 1, 5);
    tcase_add_test(tb, test_port_zero_binds_every_worker_to_the_port_the_kernel_chose);
    tcase_add_test(tb, test_backlog_is_somaxconn_capped_by_the_sysctl);
    tcase_add_test(tb, test_ipv6_loopback_is_bound_v6only);
    tcase_add_loop_test(tf, test_port_held_without_reuseport_is_refused_and_leaks_nothing, 0, 3);
    tcase_add_test(tf, test_a_late_worker_failure_closes_the_sockets_already_bound);
    tcase_add_test(ta, test_open_all_binds_every_listener_for_every_worker);
    tcase_add_test(ta, test_open_all_failure_closes_the_listeners_already_open);
    tcase_add_test(tu, test_inherited_sockets_are_taken_as_they_are);
    tcase_add_test(tu, test_inherited_sockets_for_another_worker_count_are_replaced);
    tcase_add_test(tu, test_each_inherited_set_serves_one_listener);
    suite_add_tcase(s, tb);
    suite_add_tcase(s, tf);
    suite_add_tcase(s, ta);
    suite_add_tcase(s, tu);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(listener_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
