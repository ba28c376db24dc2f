/*
 * check_upgrade.c - the binary upgrade's handover machinery. Old side:
 * handover_send passes the very socket (SCM_RIGHTS) with the listener's
 * text and the peer as given (IPv4, IPv6), and fails at once, keeping
 * nothing, on a closed or full channel; upgrade_start runs the binary (this
 * test, as a stand-in) with exactly the listening and admin sockets named in
 * VEER_INHERIT and a channel, answers GO and hands over when it says READY,
 * and keeps serving (child reaped, nothing handed over, on_failed told
 * why) when it exits or says anything else. New side: upgrade_child_ready
 * says READY, takes over on GO or on a hang-up without a word, never after
 * NO; then each
 * connection is queued round robin to the workers (and, on real worker
 * threads, served as a session of the listener it came from, the peer
 * address as sent); messages without a socket or of the wrong size are
 * dropped without leaking the socket; the old process hanging up ends the
 * adoption. VEER_INHERIT is parsed with "@admin=", malformed parts and
 * malformed descriptors ignored; inherit_close_unclaimed closes only the sets
 * no listener took, once; upgrade_shutdown frees and closes what it holds
 * (ASan checks the rest). How listener_open takes inherited sets is
 * check_listener.c's.
 *
 * Each test runs in its own process (Check's fork mode), so upgrade.c's
 * state starts fresh. Every wait is a poll() or an event loop with a
 * deadline.
 */
#include "conf.h"
#include "listener.h"
#include "module.h"
#include "model.h"
#include "upgrade.h"
#include "veer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long anything this suite waits for may take. */
#define WAIT_MS 3000

extern char **environ;

/* --- descriptors, directories, logs ------------------------------------------------------ */

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

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static bool fd_closed(int fd)
{
    return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

/* A fresh directory for this test's files (caller frees the path with rm_dir). */
static char *make_dir(void)
{
    char *dir = veer_strdup("/tmp/check_upgrade_XXXXXX");

    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

/* Remove dir and the files in it. */
static void rm_dir(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ck_assert_int_eq(unlink(path), 0);
    }
    closedir(d);
    ck_assert_int_eq(rmdir(dir), 0);
    free(dir);
}

/* stderr into a file in dir, to read what veer logged. */
struct capture {
    int saved, fd;
};

static struct capture capture_start(const char *dir)
{
    char path[512];
    struct capture c;

    snprintf(path, sizeof(path), "%s/stderr", dir);
    c.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(c.fd, 0);
    unlink(path);
    fflush(stderr);
    c.saved = dup(STDERR_FILENO);
    ck_assert_int_ge(c.saved, 0);
    ck_assert_int_eq(dup2(c.fd, STDERR_FILENO), STDERR_FILENO);
    return c;
}

/* Restore stderr, return what was written (caller frees). */
static char *capture_stop(struct capture *c)
{
    char *text = veer_malloc(8192);
    ssize_t n;

    fflush(stderr);
    ck_assert_int_eq(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
    close(c->saved);
    n = pread(c->fd, text, 8191, 0);
    close(c->fd);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

static void expect_log(const char *log, const char *what)
{
    ck_assert_msg(strstr(log, what) != NULL, "log lacks \"%s\":\n%s", what, log);
}

/* --- sockets ------------------------------------------------------------------------------ */

static bool wait_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, ms) == 1;
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

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return port_of(&ss);
}

static bool have_ipv6_loopback(void)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(AF_INET6, 0, &ss);
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

/* A TCP socket listening on loopback, port chosen by the kernel. */
static int tcp_listener(int family)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, 0, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_msg(bind(fd, (struct sockaddr *)&ss, len) == 0, "bind: %s", strerror(errno));
    ck_assert_int_eq(listen(fd, 16), 0);
    return fd;
}

/* Accept a connection on lfd within WAIT_MS, non-blocking like veer's client sockets. */
static int accept_within(int lfd)
{
    int fd;

    ck_assert_msg(wait_readable(lfd, WAIT_MS), "no connection came");
    fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ck_assert_msg(fd >= 0, "accept: %s", strerror(errno));
    return fd;
}

/*
 * A connected TCP loopback pair of family: the client's end and the
 * server's (non-blocking, as veer accepts them), with the client's address
 * as the server sees it in *peer.
 */
static void tcp_pair(int family, int *client, int *server, struct sockaddr_storage *peer,
                     socklen_t *plen)
{
    int l = tcp_listener(family);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&ss, &len), 0);
    *client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(*client, 0);
    ck_assert_int_eq(connect(*client, (struct sockaddr *)&ss, len), 0);
    *server = accept_within(l);
    close(l);
    *plen = sizeof(*peer);
    ck_assert_int_eq(getpeername(*server, (struct sockaddr *)peer, plen), 0);
}

/* Read exactly len bytes from fd (non-blocking or not) within WAIT_MS. */
static void expect_bytes(int fd, const char *want, size_t len)
{
    char buf[256];
    size_t got = 0;

    ck_assert_uint_le(len, sizeof(buf));
    while (got < len) {
        ssize_t n;

        ck_assert_msg(wait_readable(fd, WAIT_MS), "only %zu of %zu bytes came", got, len);
        n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        ck_assert_msg(n > 0, "recv: %zd (%s)", n, n < 0 ? strerror(errno) : "EOF");
        got += (size_t)n;
    }
    ck_assert_int_eq(memcmp(buf, want, len), 0);
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s);

    ck_assert_int_eq(send(fd, s, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Bytes flow both ways between a and b: they are the two ends of one connection. */
static void expect_connected(int a, int b)
{
    send_all(a, "ping");
    expect_bytes(b, "ping", 4);
    send_all(b, "pong!");
    expect_bytes(a, "pong!", 5);
}

/* The other end of fd closed: it reads EOF within WAIT_MS. */
static void expect_eof(int fd)
{
    char c;

    ck_assert_msg(wait_readable(fd, WAIT_MS), "the other end is still open");
    ck_assert_int_eq(recv(fd, &c, 1, MSG_DONTWAIT), 0);
}

/* The SOCK_SEQPACKET channel between the old process ([0]) and the new one ([1]). */
static void channel(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/*
 * Receive one message from chan as the new process does: its payload into
 * *hm (returns the length), the descriptor it carried in *fd (-1 when none).
 */
static ssize_t recv_handover(int chan, struct handover_msg *hm, int *fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {hm, sizeof(*hm)};
    struct msghdr mh;
    struct cmsghdr *c;
    ssize_t n;

    memset(&mh, 0, sizeof(mh));
    memset(hm, 0, sizeof(*hm));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    ck_assert_msg(wait_readable(chan, WAIT_MS), "nothing on the channel");
    n = recvmsg(chan, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    ck_assert_msg(n >= 0, "recvmsg: %s", strerror(errno));
    ck_assert(!(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)));
    *fd = -1;
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        ck_assert_int_eq(c->cmsg_level, SOL_SOCKET);
        ck_assert_int_eq(c->cmsg_type, SCM_RIGHTS);
        ck_assert_uint_eq(c->cmsg_len, CMSG_LEN(sizeof(int))); /* one descriptor */
        memcpy(fd, CMSG_DATA(c), sizeof(int));
    }
    return n;
}

/* Send a raw message on chan: len bytes of payload, with fd attached unless it is -1. */
static void send_raw(int chan, const void *payload, size_t len, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {(void *)payload, len};
    struct msghdr mh;

    memset(&mh, 0, sizeof(mh));
    memset(&ctl, 0, sizeof(ctl));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        struct cmsghdr *c;

        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ck_assert_int_eq(sendmsg(chan, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* Synthetic peers, as a client on the far side of the old process would have. */
static socklen_t peer4(struct sockaddr_storage *ss, const char *ip, int port)
{
    struct sockaddr_in *a = (struct sockaddr_in *)ss;

    memset(ss, 0, sizeof(*ss));
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    return sizeof(*a);
}

static socklen_t peer6(struct sockaddr_storage *ss, const char *ip, int port)
{
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    a->sin6_flowinfo = htonl(0x12345);
    a->sin6_scope_id = 7;
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    return sizeof(*a);
}

/* --- the event loop: run until a condition holds or a deadline passes --------------------- */

typedef bool (*cond_fn)(const void *arg);

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    /* Only wakes the loop, so conditions that no event of ours changes are seen too. */
}

static bool run_until(struct event_base *base, cond_fn done, const void *arg)
{
    struct timeval dl = {WAIT_MS / 1000, (WAIT_MS % 1000) * 1000}, tk = {0, 5000};
    bool expired = false;
    struct event *d = evtimer_new(base, deadline_cb, &expired);
    struct event *t = event_new(base, -1, EV_PERSIST, tick_cb, NULL);

    evtimer_add(d, &dl);
    event_add(t, &tk);
    while (!done(arg) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(d);
    event_free(t);
    return done(arg);
}

static int events_on(struct event_base *base)
{
    return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
}

/* --- stand-in workers: the message queue a real worker reads ------------------------------ */

static struct worker *fake_worker(unsigned idx)
{
    struct worker *w = veer_calloc(1, sizeof(*w));

    w->idx = idx;
    ck_assert_int_eq(mailbox_init(&w->inbox), VEER_OK);
    return w;
}

static unsigned queued(struct worker *w)
{
    return (unsigned)mailbox_count(&w->inbox);
}

/* Take w's queued messages, oldest first, into out (at most max of them); returns how many. */
static unsigned take_msgs(struct worker *w, struct wmsg **out, unsigned max)
{
    struct mailbox_node *m = mailbox_take(&w->inbox);
    unsigned n = 0;

    for (; m; m = m->next) {
        ck_assert_uint_lt(n, max);
        out[n++] = container_of(m, struct wmsg, node);
    }
    return n;
}

/*
 * How many times w was woken since its last take (its inbox's eventfd
 * counter: a post to an empty inbox, or a bare wake-up).
 */
static uint64_t wakeups(struct worker *w)
{
    uint64_t v = 0;

    if (read(mailbox_fd(&w->inbox), &v, sizeof(v)) < 0)
        ck_assert_int_eq(errno, EAGAIN);
    return v;
}

static void free_fake_worker(struct worker *w)
{
    struct wmsg *m[64];
    unsigned n = take_msgs(w, m, 64);

    for (unsigned i = 0; i < n; i++) {
        if (m[i]->type == WMSG_ADOPT)
            close((int)m[i]->ticket);
        wmsg_free(m[i]);
    }
    for (unsigned i = 0; i < w->nlisteners; i++)
        free(w->listeners[i]);
    free(w->listeners);
    mailbox_free(&w->inbox, NULL);
    free(w);
}

/* Start as the new process of an upgrade: channel chan, VEER_INHERIT inherit. */
static void child_init(int chan, const char *inherit)
{
    char text[16];

    snprintf(text, sizeof(text), "%d", chan);
    ck_assert_int_eq(setenv("VEER_UPGRADE_FD", text, 1), 0);
    ck_assert_int_eq(setenv("VEER_INHERIT", inherit, 1), 0);
    inherit_init();
    ck_assert_ptr_null(getenv("VEER_UPGRADE_FD"));
    ck_assert_ptr_null(getenv("VEER_INHERIT"));
}

/* The new process says READY: the old one reads exactly that, as one message. */
static void expect_ready(int old)
{
    char buf[32];
    ssize_t n;

    ck_assert_msg(wait_readable(old, WAIT_MS), "the new process did not say READY");
    n = recv(old, buf, sizeof(buf), MSG_DONTWAIT);
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(memcmp(buf, "READY", 5), 0);
}

/* ------------------------------------------------------------------------------------------ */
/* old side: handover_send                                                                */

/* _i: 0 IPv4, 1 IPv6 */
START_TEST(test_send_conn_passes_the_connection_itself)
{
    int family = _i ? AF_INET6 : AF_INET, sv[2], client, server, got, before;
    struct sockaddr_storage peer, a, b;
    socklen_t plen, alen = sizeof(a), blen = sizeof(b);
    struct handover_msg hm;
    const char *listen = _i ? "[::1]:8443" : "127.0.0.1:8080";

    if (_i && !have_ipv6_loopback()) {
        fprintf(stderr, "check_upgrade: no IPv6 loopback here, IPv6 test skipped\n");
        return;
    }
    channel(sv);
    tcp_pair(family, &client, &server, &peer, &plen);
    before = count_fds();
    ck_assert_int_eq(handover_send(sv[0], server, listen, (struct sockaddr *)&peer, plen), VEER_OK);
    ck_assert_int_eq(count_fds(), before); /* the sender keeps its copy, and only it */

    ck_assert_int_eq(recv_handover(sv[1], &hm, &got), (ssize_t)sizeof(hm));
    ck_assert_int_ge(got, 0);
    ck_assert_int_ne(got, server);
    ck_assert_str_eq(hm.listen, listen);
    ck_assert_uint_eq(hm.peer_len, plen);
    ck_assert_int_eq(hm.peer.ss_family, family);
    ck_assert_int_eq(memcmp(&hm.peer, &peer, plen), 0);

    /* The same connection: same ends, and the old process's copy is no longer needed. */
    ck_assert_int_eq(getsockname(got, (struct sockaddr *)&a, &alen), 0);
    ck_assert_int_eq(getsockname(server, (struct sockaddr *)&b, &blen), 0);
    ck_assert_uint_eq(alen, blen);
    ck_assert_int_eq(memcmp(&a, &b, alen), 0);
    alen = sizeof(a);
    ck_assert_int_eq(getpeername(got, (struct sockaddr *)&a, &alen), 0);
    ck_assert_int_eq(memcmp(&a, &peer, plen), 0);
    close(server);
    expect_connected(client, got);
    ck_assert(fcntl(got, F_GETFL) & O_NONBLOCK); /* the open file, shared: still non-blocking */
    close(got);
    expect_eof(client);

    close(client);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(test_send_conn_carries_the_listener_text_and_peer_as_given)
{
    int sv[2], fd = open("/dev/null", O_RDONLY | O_CLOEXEC), got;
    struct sockaddr_storage p4, p6, big[2];
    socklen_t l4 = peer4(&p4, "192.0.2.7", 4242), l6 = peer6(&p6, "2001:db8::5", 4343);
    struct handover_msg hm;
    char longest[64], too_long[101];

    ck_assert_int_ge(fd, 0);
    channel(sv);
    memset(longest, 'a', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    memset(too_long, 'b', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';

    ck_assert_int_eq(handover_send(sv[0], fd, "10.0.0.1:80", (struct sockaddr *)&p4, l4), VEER_OK);
    ck_assert_int_eq(recv_handover(sv[1], &hm, &got), (ssize_t)sizeof(hm));
    ck_assert_int_ge(got, 0);
    close(got);
    ck_assert_str_eq(hm.listen, "10.0.0.1:80");
    ck_assert_uint_eq(hm.peer_len, sizeof(struct sockaddr_in));
    ck_assert_int_eq(memcmp(&hm.peer, &p4, l4), 0);

    ck_assert_int_eq(handover_send(sv[0], fd, longest, (struct sockaddr *)&p6, l6), VEER_OK);
    ck_assert_int_eq(recv_handover(sv[1], &hm, &got), (ssize_t)sizeof(hm));
    close(got);
    ck_assert_str_eq(hm.listen, longest); /* 63 characters: the whole of it */
    ck_assert_uint_eq(hm.peer_len, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(memcmp(&hm.peer, &p6, l6), 0);
    ck_assert_uint_eq(((struct sockaddr_in6 *)&hm.peer)->sin6_scope_id, 7);

    /* Too long a text is cut (NUL-terminated), too long an address is cut to the storage. */
    memset(big, 0x5a, sizeof(big));
    big[0].ss_family = AF_INET6;
    ck_assert_int_eq(
        handover_send(sv[0], fd, too_long, (struct sockaddr *)big, (socklen_t)sizeof(big)),
        VEER_OK);
    ck_assert_int_eq(recv_handover(sv[1], &hm, &got), (ssize_t)sizeof(hm));
    close(got);
    ck_assert_uint_eq(strlen(hm.listen), sizeof(hm.listen) - 1);
    ck_assert_int_eq(strncmp(hm.listen, too_long, sizeof(hm.listen) - 1), 0);
    ck_assert_uint_eq(hm.peer_len, sizeof(hm.peer));
    ck_assert_int_eq(memcmp(&hm.peer, big, sizeof(hm.peer)), 0);

    close(fd);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/*
 * The new process is gone (its end closed), or the channel is no socket:
 * -1 at once, no SIGPIPE (the test would die of it), no descriptor made,
 * and the connection still the caller's to serve or close.
 */
START_TEST(test_send_conn_on_a_closed_channel_fails_and_keeps_the_connection)
{
    int sv[2], client, server, before, nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct sockaddr_storage peer;
    socklen_t plen;

    ck_assert_int_ge(nul, 0);
    channel(sv);
    tcp_pair(AF_INET, &client, &server, &peer, &plen);
    close(sv[1]);
    before = count_fds();
    ck_assert_int_eq(handover_send(sv[0], server, "127.0.0.1:80", (struct sockaddr *)&peer, plen),
                     VEER_ERROR);
    ck_assert_int_eq(handover_send(-1, server, "127.0.0.1:80", (struct sockaddr *)&peer, plen),
                     VEER_ERROR);
    ck_assert_int_eq(handover_send(nul, server, "127.0.0.1:80", (struct sockaddr *)&peer, plen),
                     VEER_ERROR);
    ck_assert_int_eq(count_fds(), before);
    expect_connected(client, server);
    close(server);
    expect_eof(client); /* no copy of it survives anywhere */
    close(client);
    close(nul);
    close(sv[0]);
}
END_TEST

/*
 * A new process that does not read fast enough: once the channel's buffer
 * is full, a send fails at once (a worker never blocks on it) and leaves
 * the connection with the caller; what went before arrives intact.
 */
START_TEST(test_send_conn_on_a_full_channel_fails_at_once)
{
    int sv[2], client, server, before, sent = 0;
    struct sockaddr_storage peer;
    socklen_t plen;
    struct handover_msg hm;

    channel(sv);
    tcp_pair(AF_INET, &client, &server, &peer, &plen);
    before = count_fds();
    for (;;) {
        int rc = handover_send(sv[0], server, "127.0.0.1:80", (struct sockaddr *)&peer, plen);

        if (rc != VEER_OK) {
            ck_assert_int_eq(rc, VEER_ERROR);
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        ck_assert_int_lt(++sent, 100000);
    }
    ck_assert_int_gt(sent, 0);
    fprintf(stderr, "check_upgrade: the channel took %d connections before it was full\n", sent);
    ck_assert_int_eq(count_fds(), before);
    for (int i = 0; i < sent; i++) {
        int got;

        ck_assert_int_eq(recv_handover(sv[1], &hm, &got), (ssize_t)sizeof(hm));
        ck_assert_int_ge(got, 0);
        ck_assert_str_eq(hm.listen, "127.0.0.1:80");
        ck_assert_int_eq(memcmp(&hm.peer, &peer, plen), 0);
        ck_assert_int_eq(local_port(got), local_port(server));
        close(got);
    }
    ck_assert(!wait_readable(sv[1], 0));
    ck_assert_int_eq(count_fds(), before);
    /* Room again. */
    ck_assert_int_eq(handover_send(sv[0], server, "127.0.0.1:80", (struct sockaddr *)&peer, plen),
                     VEER_OK);
    close(server);
    close(client);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* new side: READY, then adoption (adopt_cb, worker_adopt)                                    */

struct queue_goal {
    struct worker **w;
    unsigned nw, want;
};

static bool all_queued(const void *arg)
{
    const struct queue_goal *g = arg;
    unsigned n = 0;

    for (unsigned i = 0; i < g->nw; i++)
        n += queued(g->w[i]);
    return n >= g->want;
}

static bool is_closed(const void *arg)
{
    return fd_closed(*(const int *)arg);
}

/* The new process read everything the old one sent. */
static bool drained(const void *arg)
{
    return !wait_readable(*(const int *)arg, 0);
}

/*
 * Four connections from the old process go to three workers in turn, each
 * as a WMSG_ADOPT carrying a descriptor of that very connection (close on
 * exec) and a copy of the message; each worker is woken once for its
 * messages (a post to a non-empty inbox finds the wake-up pending).
 */
START_TEST(test_child_ready_says_ready_then_adopts_round_robin)
{
    struct worker *w[3] = {fake_worker(0), fake_worker(1), fake_worker(2)};
    struct queue_goal goal = {w, 3, 4};
    struct event_base *base = event_base_new();
    struct sockaddr_storage peers[4];
    socklen_t plens[4];
    int sv[2], client[4], server[4];
    const char *listen[4] = {"127.0.0.1:8080", "[::1]:8443", "127.0.0.1:9090", "127.0.0.1:8080"};
    /* Connection k goes to worker k % 3, and is the (k / 3)-th message there. */

    ck_assert_ptr_nonnull(base);
    channel(sv);
    child_init(sv[1], "@admin=-1");
    ck_assert_int_eq(events_on(base), 0);
    upgrade_child_ready(base, w, 3, NULL);
    expect_ready(sv[0]);
    ck_assert_int_eq(events_on(base), 1); /* reading the channel */

    for (int k = 0; k < 4; k++) {
        tcp_pair(AF_INET, &client[k], &server[k], &peers[k], &plens[k]);
        if (k == 1)
            plens[k] = peer6(&peers[k], "2001:db8::1", 5000 + k);
        ck_assert_int_eq(
            handover_send(sv[0], server[k], listen[k], (struct sockaddr *)&peers[k], plens[k]),
            VEER_OK);
        close(server[k]); /* the old process's copy */
    }
    ck_assert(run_until(base, all_queued, &goal));

    for (unsigned wi = 0; wi < 3; wi++) {
        struct wmsg *m[4];
        uint64_t woken = wakeups(w[wi]);
        unsigned n = take_msgs(w[wi], m, 4);

        ck_assert_uint_eq(n, wi == 0 ? 2 : 1);
        ck_assert_uint_eq(woken, 1);
        for (unsigned j = 0; j < n; j++) {
            int k = (int)(wi + 3 * j), fd = (int)m[j]->ticket;

            ck_assert_int_eq(m[j]->type, WMSG_ADOPT);
            ck_assert_ptr_nonnull(m[j]->adopt);
            ck_assert_str_eq(m[j]->adopt->listen, listen[k]);
            ck_assert_uint_eq(m[j]->adopt->peer_len, plens[k]);
            ck_assert_int_eq(memcmp(&m[j]->adopt->peer, &peers[k], plens[k]), 0);
            ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
            expect_connected(client[k], fd);
            close(fd);
            expect_eof(client[k]);
            close(client[k]);
            wmsg_free(m[j]);
        }
    }
    ck_assert_uint_eq(queued(w[0]) + queued(w[1]) + queued(w[2]), 0);

    upgrade_shutdown();
    ck_assert(fd_closed(sv[1]));
    ck_assert_int_eq(events_on(base), 0);
    event_base_free(base);
    for (int i = 0; i < 3; i++)
        free_fake_worker(w[i]);
    close(sv[0]);
}
END_TEST

/*
 * What the new process cannot use is skipped: a message without a socket,
 * and a socket with a message of the wrong size, which is closed (its
 * client sees the connection end) rather than leaked. The connection after
 * them is adopted as usual, by the first worker.
 */
START_TEST(test_adopt_drops_messages_without_a_socket_or_of_the_wrong_size)
{
    struct worker *w[2] = {fake_worker(0), fake_worker(1)};
    struct queue_goal goal = {w, 2, 1};
    struct event_base *base = event_base_new();
    struct sockaddr_storage peer;
    socklen_t plen;
    struct handover_msg hm;
    struct wmsg *m[2];
    int sv[2], c_short, s_short, c_ok, s_ok, before;

    channel(sv);
    child_init(sv[1], "@admin=-1");
    upgrade_child_ready(base, w, 2, NULL);
    expect_ready(sv[0]);
    before = count_fds();

    memset(&hm, 0, sizeof(hm));
    snprintf(hm.listen, sizeof(hm.listen), "127.0.0.1:8080");
    send_raw(sv[0], &hm, sizeof(hm), -1);
    tcp_pair(AF_INET, &c_short, &s_short, &peer, &plen);
    send_raw(sv[0], &hm, sizeof(hm) / 2, s_short);
    close(s_short);
    tcp_pair(AF_INET, &c_ok, &s_ok, &peer, &plen);
    ck_assert_int_eq(handover_send(sv[0], s_ok, "127.0.0.1:8080", (struct sockaddr *)&peer, plen),
                     VEER_OK);
    close(s_ok);

    ck_assert(run_until(base, all_queued, &goal));
    ck_assert_uint_eq(take_msgs(w[0], m, 2), 1);
    ck_assert_uint_eq(queued(w[1]), 0);
    ck_assert_int_eq(m[0]->type, WMSG_ADOPT);
    expect_connected(c_ok, (int)m[0]->ticket);
    close((int)m[0]->ticket);
    wmsg_free(m[0]);
    /* The short message's socket was closed, not kept: only the two clients are new. */
    expect_eof(c_short);
    ck_assert_int_eq(count_fds(), before + 2);
    ck_assert_int_eq(events_on(base), 1); /* still adopting */

    close(c_short);
    close(c_ok);
    upgrade_shutdown();
    event_base_free(base);
    free_fake_worker(w[0]);
    free_fake_worker(w[1]);
    close(sv[0]);
}
END_TEST

/* The old process exits (its end closes): the channel is closed and no event is left. */
START_TEST(test_adopt_ends_when_the_old_process_hangs_up)
{
    struct worker *w = fake_worker(0);
    struct event_base *base = event_base_new();
    int sv[2], other;

    channel(sv);
    child_init(sv[1], "@admin=-1");
    upgrade_child_ready(base, &w, 1, NULL);
    expect_ready(sv[0]);
    close(sv[0]);
    ck_assert(run_until(base, is_closed, &sv[1]));
    ck_assert_int_eq(events_on(base), 0);
    ck_assert_uint_eq(queued(w), 0);

    /* Its number may be reused; shutting down must not close it a second time. */
    other = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(other, 0);
    ck_assert_int_eq(dup3(other, sv[1], O_CLOEXEC), sv[1]);
    close(other);
    upgrade_shutdown();
    ck_assert(fd_open(sv[1]));
    close(sv[1]);
    event_base_free(base);
    free_fake_worker(w);
}
END_TEST

static int handoff_calls;
static bool handoff_go;

static void on_handoff(bool go)
{
    handoff_calls++;
    handoff_go = go;
}

static bool handoff_called(const void *arg)
{
    return handoff_calls > 0;
}

static bool chan_closed(const void *arg)
{
    return events_on((struct event_base *)arg) == 0;
}

/*
 * The handoff as the new process sees it, after READY. _i 0: GO: it takes
 * over (once). 1: NO, then the hang-up: it does not take over, and the
 * hang-up after NO changes nothing. 2: a hang-up without a word (the old
 * process went away after writing its last): it takes over, and says so.
 */
START_TEST(test_child_takes_over_on_go_or_a_silent_hang_up_never_after_no)
{
    struct worker *w = fake_worker(0);
    struct event_base *base = event_base_new();
    char *dir = make_dir(), *log;
    struct capture cap;
    int sv[2];

    channel(sv);
    child_init(sv[1], "@admin=-1");
    upgrade_child_ready(base, &w, 1, on_handoff);
    expect_ready(sv[0]);
    cap = capture_start(dir);
    if (_i == 0)
        ck_assert_int_eq(send(sv[0], "GO", 2, 0), 2);
    if (_i == 1) {
        ck_assert_int_eq(send(sv[0], "NO", 2, 0), 2);
        ck_assert(run_until(base, handoff_called, NULL));
        close(sv[0]);
    }
    if (_i == 2)
        close(sv[0]);
    ck_assert(run_until(base, handoff_called, NULL));
    if (_i != 0)
        ck_assert(run_until(base, chan_closed, base)); /* the hang-up is read too */
    log = capture_stop(&cap);
    ck_assert_int_eq(handoff_calls, 1);
    ck_assert(handoff_go == (_i != 1));
    if (_i == 2)
        expect_log(log, "the old process went away before handing over; taking over");
    free(log);
    upgrade_shutdown();
    if (_i == 0)
        close(sv[0]);
    event_base_free(base);
    free_fake_worker(w);
    rm_dir(dir);
}
END_TEST

/* The old process died before the new one was ready: nothing to adopt, nothing waited on. */
START_TEST(test_child_ready_without_an_old_process_adopts_nothing)
{
    struct worker *w = fake_worker(0);
    struct event_base *base = event_base_new();
    char epipe[64];
    char *dir = make_dir(), *log;
    struct capture cap;
    int sv[2];

    channel(sv);
    child_init(sv[1], "@admin=-1");
    close(sv[0]);
    cap = capture_start(dir);
    upgrade_child_ready(base, &w, 1, NULL); /* EPIPE, and no SIGPIPE */
    log = capture_stop(&cap);
    snprintf(epipe, sizeof(epipe), "%s", strerror(EPIPE));
    expect_log(log, "cannot tell the old process we are ready");
    expect_log(log, epipe);
    free(log);
    ck_assert_int_eq(events_on(base), 0);
    upgrade_shutdown();
    ck_assert(fd_closed(sv[1]));
    event_base_free(base);
    free_fake_worker(w);
    rm_dir(dir);
}
END_TEST

/* A plain start (no VEER_UPGRADE_FD / VEER_INHERIT): nothing inherited, no READY, no event. */
START_TEST(test_a_plain_start_inherits_nothing)
{
    struct worker *w = fake_worker(0);
    struct event_base *base = event_base_new();
    unsigned n = 99;

    unsetenv("VEER_UPGRADE_FD");
    unsetenv("VEER_INHERIT");
    inherit_init();
    ck_assert_int_eq(inherit_admin(), -1);
    ck_assert_ptr_null(inherit_listener("127.0.0.1:8080", &n));
    ck_assert_uint_eq(n, 0);
    ck_assert(!upgrade_handed_over());
    inherit_close_unclaimed();
    upgrade_child_ready(base, &w, 1, NULL);
    ck_assert_int_eq(events_on(base), 0);
    upgrade_shutdown();
    event_base_free(base);
    free_fake_worker(w);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* new side, end to end: adopted connections served by real worker threads                    */

/* The response a fake backend named name sends, with its name as the body. */
static void backend_answer(int up, const char *name)
{
    char resp[128];

    snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(name),
             name);
    send_all(up, resp);
}

/* Read a request head from fd (up to the blank line) within WAIT_MS, into buf. */
static void read_head(int fd, char *buf, size_t cap)
{
    size_t got = 0;

    buf[0] = '\0';
    while (strstr(buf, "\r\n\r\n") == NULL) {
        ssize_t n;

        ck_assert_msg(got + 1 < cap, "head too long: %s", buf);
        ck_assert_msg(wait_readable(fd, WAIT_MS), "no request head came: %s", buf);
        n = recv(fd, buf + got, cap - 1 - got, MSG_DONTWAIT);
        ck_assert_msg(n > 0, "backend read: %zd", n);
        got += (size_t)n;
        buf[got] = '\0';
    }
}

/*
 * A request on the adopted connection client reaches the backend behind
 * lfd (on a new upstream connection, or *up when the worker reuses it),
 * with xff as X-Forwarded-For; the client gets that backend's answer.
 */
static void expect_served(int client, int lfd, int *up, const char *path, const char *xff,
                          const char *backend)
{
    struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = *up, .events = POLLIN}};
    char req[128], head[2048], want[128], resp[256];
    size_t got = 0, len;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    send_all(client, req);
    ck_assert_msg(poll(p, *up >= 0 ? 2 : 1, WAIT_MS) > 0, "request %s reached no backend", path);
    if (p[0].revents & POLLIN) {
        if (*up >= 0)
            close(*up);
        *up = accept_within(lfd);
    }
    read_head(*up, head, sizeof(head));
    snprintf(want, sizeof(want), "GET %s HTTP/1.1\r\n", path);
    ck_assert_msg(strncmp(head, want, strlen(want)) == 0, "backend %s got:\n%s", backend, head);
    snprintf(want, sizeof(want), "\r\nX-Forwarded-For: %s\r\n", xff);
    ck_assert_msg(strstr(head, want) != NULL, "backend %s got, without %s:\n%s", backend, want,
                  head);
    backend_answer(*up, backend);

    snprintf(want, sizeof(want), "HTTP/1.1 200 OK\r\n");
    len = strlen(backend);
    memset(resp, 0, sizeof(resp));
    while (got < 4 || strstr(resp, "\r\n\r\n") == NULL ||
           strlen(strstr(resp, "\r\n\r\n") + 4) < len) {
        ssize_t n;

        ck_assert_msg(wait_readable(client, WAIT_MS), "no full response for %s: %s", path, resp);
        n = recv(client, resp + got, sizeof(resp) - 1 - got, MSG_DONTWAIT);
        ck_assert_msg(n > 0, "client read: %zd", n);
        got += (size_t)n;
    }
    ck_assert_msg(strncmp(resp, want, strlen(want)) == 0, "response: %s", resp);
    ck_assert_str_eq(strstr(resp, "\r\n\r\n") + 4, backend);
}

#define SERVE_CONF                                                                                 \
    "workers = 2;\n"                                                                               \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"a\"; },\n"                                   \
    "           { address = \"127.0.0.2:0\"; pool = \"b\"; } );\n"                                 \
    "pools = ( { name = \"a\"; backends = ( { name = \"a-1\"; address = \"127.0.0.1:%d\"; } ); "   \
    "},\n"                                                                                         \
    "          { name = \"b\"; backends = ( { name = \"b-1\"; address = \"127.0.0.1:%d\"; } ); "   \
    "} );\n"

/*
 * Two worker threads, two listeners with a pool each. Connections handed
 * over with the second listener's text go to its pool's backend, with the
 * first's or an unknown text to the first's; the peer address sent is the
 * client's address for X-Forwarded-For; workers take them in turn; an
 * adopted connection is kept alive for the next request.
 */
START_TEST(test_adopted_connections_are_served_as_sessions_of_their_listener)
{
    char *dir = make_dir(), path[512], text[1024], err[512] = "";
    int ba = tcp_listener(AF_INET), bb = tcp_listener(AF_INET), up_a = -1, up_b = -1;
    int sv[2], client[3], server[3], *fds, f;
    struct sockaddr_storage peers[3], real;
    socklen_t plens[3], rlen;
    struct veer_conf *conf;
    struct model *model;
    struct worker *w[2];
    struct event_base *base = event_base_new();
    const char *listen[3];

    signal(SIGPIPE, SIG_IGN);
    snprintf(path, sizeof(path), "%s/veer.conf", dir);
    snprintf(text, sizeof(text), SERVE_CONF, local_port(ba), local_port(bb));
    f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(f, 0);
    ck_assert_int_eq(write(f, text, strlen(text)), (ssize_t)strlen(text));
    close(f);
    conf = conf_load(path, err, sizeof(err));
    ck_assert_msg(conf != NULL, "config refused: %s", err);
    veer_nworkers = 2;
    model = model_from_conf(conf);
    routing_init(2, routing_build(model));
    ck_assert_int_eq(module_init_all(conf), VEER_OK);
    fds = listener_open_all(conf, 2);
    ck_assert_ptr_nonnull(fds);
    for (unsigned i = 0; i < 2; i++) {
        w[i] = worker_create(i, conf, fds + i * 2);
        ck_assert_ptr_nonnull(w[i]);
    }
    free(fds);
    for (unsigned i = 0; i < 2; i++)
        ck_assert_int_eq(worker_start(w[i]), VEER_OK);

    channel(sv);
    child_init(sv[1], "@admin=-1");
    upgrade_child_ready(base, w, 2, NULL);
    expect_ready(sv[0]);

    listen[0] = conf->listens[1].addr.text; /* -> worker 0, pool b */
    listen[1] = conf->listens[0].addr.text; /* -> worker 1, pool a */
    listen[2] = "10.9.9.9:1";               /* not ours: the first listener's; worker 0 */
    for (int k = 0; k < 3; k++) {
        tcp_pair(AF_INET, &client[k], &server[k], &real, &rlen);
        plens[k] = k == 1 ? peer6(&peers[k], "2001:db8::5", 4343)
                          : peer4(&peers[k], k ? "198.51.100.1" : "192.0.2.7", 4242);
        ck_assert_int_eq(
            handover_send(sv[0], server[k], listen[k], (struct sockaddr *)&peers[k], plens[k]),
            VEER_OK);
        close(server[k]);
    }
    /* The control loop passes them on to the workers, which serve them from then on. */
    ck_assert(run_until(base, drained, &sv[1]));

    expect_served(client[0], bb, &up_b, "/one", "192.0.2.7", "b-1");
    expect_served(client[1], ba, &up_a, "/two", "2001:db8::5", "a-1");
    expect_served(client[2], ba, &up_a, "/three", "198.51.100.1", "a-1");
    expect_served(client[0], bb, &up_b, "/one-again", "192.0.2.7", "b-1");

    for (unsigned i = 0; i < 2; i++)
        worker_post(w[i], WCMD_ABORT);
    for (unsigned i = 0; i < 2; i++)
        worker_join(w[i]);
    /* Round robin: connections 0 and 2 on worker 0, connection 1 on worker 1. */
    ck_assert_uint_eq(w[0]->stats.requests, 3);
    ck_assert_uint_eq(w[1]->stats.requests, 1);
    ck_assert_uint_eq(w[0]->stats.accepted + w[1]->stats.accepted, 0); /* none via accept() */
    for (int k = 0; k < 3; k++) {
        expect_eof(client[k]);
        close(client[k]);
    }

    for (unsigned i = 0; i < 2; i++)
        worker_destroy(w[i]);
    upgrade_shutdown();
    event_base_free(base);
    routing_shutdown();
    model_free(model);
    conf_free(conf);
    if (up_a >= 0)
        close(up_a);
    if (up_b >= 0)
        close(up_b);
    close(ba);
    close(bb);
    close(sv[0]);
    rm_dir(dir);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* new side: VEER_INHERIT and the inherited sockets table                                     */

/* n descriptors the new process inherited (sockets, as they would be). */
static void some_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fds[i], 0);
    }
}

static void expect_set(const char *addr, const int *want, unsigned n)
{
    unsigned got_n = 99;
    const int *got = inherit_listener(addr, &got_n);

    ck_assert_msg(got != NULL, "no set for %s", addr);
    ck_assert_uint_eq(got_n, n);
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(got[i], want[i]);
}

static void expect_no_set(const char *addr)
{
    unsigned n = 99;

    ck_assert_msg(inherit_listener(addr, &n) == NULL, "a set for %s", addr);
    ck_assert_uint_eq(n, 0);
}

START_TEST(test_inherit_gives_the_admin_socket_and_a_set_per_listener)
{
    int sv[2], fds[6];
    char env[256];

    channel(sv);
    some_fds(fds, 6);
    snprintf(env, sizeof(env), "@admin=%d;127.0.0.1:8080=%d,%d,%d;[::1]:8443=%d;0.0.0.0:0=%d,%d",
             fds[0], fds[1], fds[2], fds[3], fds[4], fds[5], fds[0]);
    child_init(sv[1], env);
    ck_assert_int_eq(inherit_admin(), fds[0]);
    expect_set("[::1]:8443", &fds[4], 1);
    expect_set("127.0.0.1:8080", &fds[1], 3);
    expect_set("0.0.0.0:0", (int[]){fds[5], fds[0]}, 2);
    /* Each set once; addresses never named get none. */
    expect_no_set("127.0.0.1:8080");
    expect_no_set("[::1]:8443");
    expect_no_set("127.0.0.1:8081");
    expect_no_set("@admin");
    expect_no_set("");
    upgrade_shutdown();
    for (int i = 0; i < 6; i++)
        ck_assert(fd_open(fds[i])); /* taken ones are the listeners' to close */
    for (int i = 0; i < 6; i++)
        close(fds[i]);
    close(sv[0]);
}
END_TEST

/*
 * Parts without '=' and descriptors that are not numbers are ignored: no
 * set holds -1 or a half-parsed number for a listener to listen on, and a
 * set left with no descriptor is no set at all.
 */
START_TEST(test_inherit_ignores_malformed_parts)
{
    int sv[2], fds[3];
    char env[512];

    channel(sv);
    some_fds(fds, 3);
    snprintf(env, sizeof(env),
             ";;garbage;=;@admin=;127.0.0.1:1=;127.0.0.1:2=x,%d,,-4,%d;"
             "127.0.0.1:3=4y;127.0.0.1:4=99999999999999999999;127.0.0.1:5=%d",
             fds[0], fds[1], fds[2]);
    child_init(sv[1], env);
    ck_assert_int_eq(inherit_admin(), -1);
    expect_set("127.0.0.1:2", fds, 2);
    expect_set("127.0.0.1:5", &fds[2], 1);
    expect_no_set("127.0.0.1:1");
    expect_no_set("127.0.0.1:3");
    expect_no_set("127.0.0.1:4");
    expect_no_set("garbage");
    expect_no_set("");
    upgrade_shutdown();

    /* A malformed admin descriptor is none, whatever number it starts with. */
    snprintf(env, sizeof(env), "@admin=%dz", fds[0]);
    child_init(sv[1], env);
    ck_assert_int_eq(inherit_admin(), -1);
    upgrade_shutdown();
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    close(sv[0]);
}
END_TEST

/*
 * "@health=FD" is the old process's readiness (upgrade_carry): handed out
 * once, never as a listener set, made close-on-exec so a later upgrade does
 * not pass it on; one nobody took is closed at shutdown.
 */
START_TEST(test_inherit_gives_the_readiness_file_once)
{
    int sv[2], fds[3];
    char env[256];

    channel(sv);
    some_fds(fds, 3);
    ck_assert_int_eq(fcntl(fds[1], F_SETFD, 0), 0); /* as exec leaves it */
    snprintf(env, sizeof(env), "@admin=%d;@health=%d;127.0.0.1:8080=%d", fds[0], fds[1], fds[2]);
    child_init(sv[1], env);
    ck_assert_int_eq(inherit_health(), fds[1]);
    ck_assert_int_eq(inherit_health(), -1);
    ck_assert(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);
    expect_no_set("@health");
    expect_set("127.0.0.1:8080", &fds[2], 1);
    upgrade_shutdown();
    ck_assert(fd_open(fds[1])); /* taken: the caller's to close */

    snprintf(env, sizeof(env), "@admin=%d;@health=%d", fds[0], fds[1]);
    child_init(sv[1], env);
    upgrade_shutdown();
    ck_assert(fd_closed(fds[1])); /* not taken: closed with the rest */
    child_init(sv[1], "@admin=-1");
    ck_assert_int_eq(inherit_health(), -1); /* a plain upgrade without one */
    upgrade_shutdown();
    close(fds[0]);
    close(fds[2]);
    close(sv[0]);
}
END_TEST

/* VEER_INHERIT without the channel is not an upgrade: nothing is taken from it. */
START_TEST(test_inherit_needs_the_upgrade_channel_too)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char env[64];

    snprintf(env, sizeof(env), "@admin=%d;127.0.0.1:8080=%d", fd, fd);
    unsetenv("VEER_UPGRADE_FD");
    ck_assert_int_eq(setenv("VEER_INHERIT", env, 1), 0);
    inherit_init();
    ck_assert_int_eq(inherit_admin(), -1);
    expect_no_set("127.0.0.1:8080");
    inherit_close_unclaimed();
    ck_assert(fd_open(fd));
    upgrade_shutdown();
    close(fd);
    unsetenv("VEER_INHERIT");
}
END_TEST

/*
 * After the listeners took their sets, the sets of addresses the new
 * config dropped are closed, and only those: the sets taken and the admin
 * socket stay open. Once: numbers reused afterwards are left alone, and a
 * closed set is never handed out.
 */
START_TEST(test_close_unclaimed_closes_only_the_sets_no_listener_took)
{
    int sv[2], fds[7], reused[4];
    char env[512], *dir = make_dir(), *log;
    struct capture cap;

    channel(sv);
    some_fds(fds, 7);
    snprintf(env, sizeof(env),
             "@admin=%d;127.0.0.1:8080=%d,%d;127.0.0.1:9090=%d,%d;[::1]:80=%d;127.0.0.1:8080=%d",
             fds[0], fds[1], fds[2], fds[3], fds[4], fds[5], fds[6]);
    child_init(sv[1], env);
    expect_set("127.0.0.1:8080", &fds[1], 2); /* the first of the two sets for that text */

    cap = capture_start(dir);
    inherit_close_unclaimed();
    log = capture_stop(&cap);
    expect_log(log, "closing the 2 inherited sockets of 127.0.0.1:9090");
    expect_log(log, "closing the 1 inherited sockets of [::1]:80");
    expect_log(log, "closing the 1 inherited sockets of 127.0.0.1:8080");
    free(log);

    ck_assert(fd_open(fds[0])); /* admin */
    ck_assert(fd_open(fds[1]));
    ck_assert(fd_open(fds[2]));
    for (int i = 3; i < 7; i++)
        ck_assert_msg(fd_closed(fds[i]), "fd %d of an unclaimed set is open", fds[i]);
    ck_assert(fd_open(sv[1])); /* the channel is not a listener's */

    for (int i = 0; i < 4; i++) {
        reused[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(reused[i], 0);
    }
    expect_no_set("127.0.0.1:9090");
    expect_no_set("[::1]:80");
    expect_no_set("127.0.0.1:8080");
    inherit_close_unclaimed();
    for (int i = 0; i < 4; i++) {
        ck_assert(fd_open(reused[i]));
        close(reused[i]);
    }
    upgrade_shutdown();
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    close(sv[0]);
    rm_dir(dir);
}
END_TEST

/*
 * Shutdown frees the table and closes the channel, leaves no event on the
 * loop, hands nothing out afterwards, and may be called again. ASan (the
 * sanitizer build runs this suite) reports anything left allocated.
 */
START_TEST(test_shutdown_frees_and_closes_what_it_holds)
{
    struct worker *w = fake_worker(0);
    struct event_base *base = event_base_new();
    int sv[2], fds[4];
    char env[256];

    channel(sv);
    some_fds(fds, 4);
    snprintf(env, sizeof(env), "@admin=%d;127.0.0.1:8080=%d,%d;127.0.0.1:9090=%d", fds[0], fds[1],
             fds[2], fds[3]);
    child_init(sv[1], env);
    upgrade_child_ready(base, &w, 1, NULL);
    expect_ready(sv[0]);
    ck_assert_int_eq(events_on(base), 1);

    upgrade_shutdown();
    ck_assert_int_eq(events_on(base), 0);
    ck_assert(fd_closed(sv[1]));
    expect_eof(sv[0]); /* the old process sees us go */
    expect_no_set("127.0.0.1:8080");
    expect_no_set("127.0.0.1:9090");
    inherit_close_unclaimed(); /* nothing left to close */
    for (int i = 0; i < 4; i++)
        ck_assert(fd_open(fds[i]));
    upgrade_shutdown();
    event_base_free(base);
    free_fake_worker(w);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    close(sv[0]);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* old side: upgrade_start, with this test binary as the new binary                          */

/*
 * The stand-in new binary (this program with --upgrade-child REPORT MODE):
 * writes to REPORT what it inherited, then, in mode "ready", says READY (in
 * mode "garbage" something else) and waits for the old process to hang up;
 * in mode "exit" it exits at once with status 3.
 */
static int upgrade_child_main(const char *report, const char *mode)
{
    const char *inh = getenv("VEER_INHERIT"), *chan = getenv("VEER_UPGRADE_FD");
    int n_inh = 0, n_chan = 0, cfd, type = -1;
    socklen_t tl = sizeof(type);
    struct pollfd p;
    char *copy, *save = NULL;
    FILE *f;

    if (strcmp(mode, "exit") == 0)
        return 3;
    if (inh == NULL || chan == NULL)
        return 4;
    cfd = atoi(chan);
    for (char **e = environ; *e; e++) {
        n_inh += strncmp(*e, "VEER_INHERIT=", 13) == 0;
        n_chan += strncmp(*e, "VEER_UPGRADE_FD=", 16) == 0;
    }
    f = fopen(report, "w");
    if (f == NULL)
        return 5;
    getsockopt(cfd, SOL_SOCKET, SO_TYPE, &type, &tl);
    fprintf(f, "inherit=%s\nenv_inherit=%d env_chan=%d\nchan type=%d cloexec=%d\n", inh, n_inh,
            n_chan, type, fcntl(cfd, F_GETFD));
    copy = strdup(inh);
    for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
        char *save2 = NULL, *eq = strrchr(part, '=');

        if (eq == NULL)
            continue;
        for (char *n = strtok_r(eq + 1, ",", &save2); n; n = strtok_r(NULL, ",", &save2)) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            int fd = atoi(n);

            memset(&ss, 0, sizeof(ss));
            getsockname(fd, (struct sockaddr *)&ss, &sl);
            if (ss.ss_family == AF_UNIX)
                fprintf(f, "fd=%d cloexec=%d path=%s\n", fd, fcntl(fd, F_GETFD),
                        ((struct sockaddr_un *)&ss)->sun_path);
            else
                fprintf(f, "fd=%d cloexec=%d port=%d\n", fd, fcntl(fd, F_GETFD), port_of(&ss));
        }
    }
    free(copy);
    fclose(f);
    send(cfd, strcmp(mode, "garbage") == 0 ? "HELLO" : "READY", 5, MSG_NOSIGNAL);
    p = (struct pollfd){.fd = cfd, .events = POLLIN};
    poll(&p, 1, 10000); /* the old process's first word (GO), or its hang-up (or 10 s) */
    {
        char first[16] = "", path[600];
        ssize_t n = recv(cfd, first, sizeof(first) - 1, MSG_DONTWAIT);

        snprintf(path, sizeof(path), "%s.first", report);
        f = fopen(path, "w");
        if (f == NULL)
            return 5;
        fprintf(f, "%.*s", n > 0 ? (int)n : 0, first);
        fclose(f);
    }
    poll(&p, 1, 10000); /* until the old process hangs up (or 10 s) */
    return 0;
}

static bool ready_called;

static void on_ready(void)
{
    ready_called = true;
}

static char failed_why[256];

static void on_failed(const char *why)
{
    snprintf(failed_why, sizeof(failed_why), "%s", why);
}

/* The old process's two workers, each with a socket per listener, and its admin socket. */
struct old_proc {
    struct conf_listen lc[2];
    struct worker *w[2];
    int admin;
    char admin_path[100]; /* fits sun_path */
};

static void old_proc_init(struct old_proc *o, const char *dir)
{
    const char *text[2] = {"127.0.0.1:0", "[::1]:8443"};
    struct sockaddr_un sa;

    for (unsigned l = 0; l < 2; l++) {
        char err[128];

        memset(&o->lc[l], 0, sizeof(o->lc[l]));
        ck_assert_int_eq(conf_parse_addr(text[l], true, &o->lc[l].addr, err, sizeof(err)), 0);
    }
    for (unsigned i = 0; i < 2; i++) {
        o->w[i] = fake_worker(i);
        o->w[i]->nlisteners = 2;
        o->w[i]->listeners = veer_calloc(2, sizeof(*o->w[i]->listeners));
        for (unsigned l = 0; l < 2; l++) {
            struct wlistener *wl = veer_calloc(1, sizeof(*wl));

            wl->fd = tcp_listener(AF_INET);
            wl->w = o->w[i];
            wl->lc = &o->lc[l];
            o->w[i]->listeners[l] = wl;
        }
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(o->admin_path, sizeof(o->admin_path), "%s/admin.sock", dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", o->admin_path);
    o->admin = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(o->admin, 0);
    ck_assert_int_eq(bind(o->admin, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(o->admin, 4), 0);
}

static void old_proc_free(struct old_proc *o)
{
    for (unsigned i = 0; i < 2; i++) {
        for (unsigned l = 0; l < 2; l++) {
            ck_assert(fcntl(o->w[i]->listeners[l]->fd, F_GETFD) & FD_CLOEXEC);
            close(o->w[i]->listeners[l]->fd);
        }
        free_fake_worker(o->w[i]);
    }
    ck_assert(fcntl(o->admin, F_GETFD) & FD_CLOEXEC); /* only the new binary's copy changed */
    close(o->admin);
}

/* The report the stand-in new binary must write for o. */
static void expected_report(const struct old_proc *o, char *buf, size_t len)
{
    size_t at = 0;

    at += (size_t)snprintf(buf + at, len - at, "inherit=@admin=%d", o->admin);
    for (unsigned l = 0; l < 2; l++) {
        at += (size_t)snprintf(buf + at, len - at, ";%s=", o->lc[l].addr.text);
        for (unsigned i = 0; i < 2; i++)
            at += (size_t)snprintf(buf + at, len - at, "%s%d", i ? "," : "",
                                   o->w[i]->listeners[l]->fd);
    }
    at += (size_t)snprintf(buf + at, len - at,
                           "\nenv_inherit=1 env_chan=1\nchan type=%d cloexec=0\n", SOCK_SEQPACKET);
    at +=
        (size_t)snprintf(buf + at, len - at, "fd=%d cloexec=0 path=%s\n", o->admin, o->admin_path);
    for (unsigned l = 0; l < 2; l++)
        for (unsigned i = 0; i < 2; i++)
            at +=
                (size_t)snprintf(buf + at, len - at, "fd=%d cloexec=0 port=%d\n",
                                 o->w[i]->listeners[l]->fd, local_port(o->w[i]->listeners[l]->fd));
}

static char *read_file(const char *path)
{
    char *text = veer_calloc(1, 4096);
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert_int_ge(read(fd, text, 4095), 0);
    close(fd);
    return text;
}

static pid_t pid_in(const char *msg)
{
    const char *p = strstr(msg, " as pid ");

    ck_assert_msg(p != NULL, "no pid in \"%s\"", msg);
    return (pid_t)atoi(p + 8);
}

/*
 * The new binary gets exactly the listening sockets (every worker's, by
 * listener, in the old process's order) and the admin socket, open across
 * exec, with one VEER_INHERIT and one VEER_UPGRADE_FD however the old
 * process was started; when it says READY every worker is told to hand
 * over on the channel, and on_ready runs.
 */
START_TEST(test_start_runs_the_new_binary_on_our_sockets_and_hands_over_on_ready)
{
    char *dir = make_dir(), report[512], want[2048], msg[512], *got;
    char *argv[] = {"check_upgrade", "--upgrade-child", report, "ready", NULL};
    struct event_base *base = event_base_new();
    struct old_proc o;
    struct wmsg *m[2];
    socklen_t tl = sizeof(int);
    pid_t pid;
    int st = -1, chan = -1, type = -1;

    snprintf(report, sizeof(report), "%s/report", dir);
    old_proc_init(&o, dir);
    ck_assert_int_eq(setenv("VEER_INHERIT", "@admin=1;stale=2", 1), 0);
    ck_assert_int_eq(setenv("VEER_UPGRADE_FD", "99", 1), 0);
    upgrade_remember_argv(4, argv);
    ck_assert(!upgrade_handed_over());
    ck_assert_int_eq(upgrade_start(base, o.w, 2, o.admin, on_ready, on_failed, msg, sizeof(msg)),
                     VEER_OK);
    pid = pid_in(msg);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(upgrade_start(base, o.w, 2, o.admin, on_ready, on_failed, msg, sizeof(msg)),
                     VEER_ERROR);
    ck_assert_str_eq(msg, "an upgrade is already under way");
    ck_assert_int_eq(events_on(base), 2); /* the channel, the ready timeout */

    failed_why[0] = '\0';
    ck_assert_int_eq(event_base_dispatch(base), 1); /* runs until nothing is left to wait on */
    ck_assert(ready_called);
    ck_assert_str_eq(failed_why, "");
    ck_assert(upgrade_handed_over());
    got = read_file(report);
    expected_report(&o, want, sizeof(want));
    ck_assert_str_eq(got, want);
    free(got);

    /* Every worker: hand over on the one channel to the new binary. */
    for (unsigned i = 0; i < 2; i++) {
        ck_assert_uint_eq(take_msgs(o.w[i], m, 2), 1);
        ck_assert_int_eq(m[0]->type, WMSG_HANDOVER);
        if (i == 0)
            chan = (int)m[0]->ticket;
        ck_assert_int_eq((int)m[0]->ticket, chan);
        wmsg_free(m[0]);
    }
    ck_assert_int_eq(getsockopt(chan, SOL_SOCKET, SO_TYPE, &type, &tl), 0);
    ck_assert_int_eq(type, SOCK_SEQPACKET);
    ck_assert(fcntl(chan, F_GETFD) & FD_CLOEXEC); /* not passed on to a later exec */
    /* Hanging up on the new binary lets it go (it waits for that). */
    upgrade_shutdown();
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    /* Before any connection: GO, the old process's word that the state is final and the new one's.
     */
    snprintf(want, sizeof(want), "%s.first", report);
    got = read_file(want);
    ck_assert_str_eq(got, "GO");
    free(got);
    event_base_free(base);
    old_proc_free(&o);
    rm_dir(dir);
}
END_TEST

/*
 * _i 0: the new binary exits before it is ready; 1: it says something
 * other than READY. Either way the old process keeps serving: nothing is
 * handed over, on_ready does not run, the child is reaped (killed first if
 * alive), the reason is logged, and a later upgrade may start.
 */
START_TEST(test_start_keeps_serving_when_the_new_binary_fails)
{
    char *dir = make_dir(), report[512], msg[512], *log;
    char *argv[] = {"check_upgrade", "--upgrade-child", report, _i ? "garbage" : "exit", NULL};
    struct event_base *base = event_base_new();
    struct old_proc o;
    struct capture cap;
    pid_t pid;
    int st;

    snprintf(report, sizeof(report), "%s/report", dir);
    old_proc_init(&o, dir);
    upgrade_remember_argv(4, argv);
    ck_assert_int_eq(upgrade_start(base, o.w, 2, o.admin, on_ready, on_failed, msg, sizeof(msg)),
                     VEER_OK);
    pid = pid_in(msg);
    cap = capture_start(dir);
    ck_assert_int_eq(event_base_dispatch(base), 1);
    log = capture_stop(&cap);
    expect_log(log, _i ? "upgrade failed: unexpected message from the new binary"
                       : "upgrade failed: the new binary exited before it was ready");
    expect_log(log, "this process keeps serving");
    free(log);
    ck_assert(!ready_called);
    /* on_failed thaws the old process's control plane: it runs with the reason. */
    ck_assert_str_eq(failed_why, _i ? "unexpected message from the new binary"
                                    : "the new binary exited before it was ready (see its log)");
    ck_assert(!upgrade_handed_over());
    ck_assert_uint_eq(queued(o.w[0]) + queued(o.w[1]), 0);
    ck_assert_int_eq(waitpid(pid, &st, WNOHANG), -1); /* reaped: no zombie left */
    ck_assert_int_eq(errno, ECHILD);

    /* Not "already under way": another attempt starts (and this one fails the same way). */
    ck_assert_int_eq(upgrade_start(base, o.w, 2, o.admin, on_ready, on_failed, msg, sizeof(msg)),
                     VEER_OK);
    cap = capture_start(dir);
    ck_assert_int_eq(event_base_dispatch(base), 1);
    free(capture_stop(&cap));
    ck_assert(!upgrade_handed_over());
    ck_assert(!ready_called);

    upgrade_shutdown();
    event_base_free(base);
    old_proc_free(&o);
    rm_dir(dir);
}
END_TEST

/* No binary to run: refused with the reason, no child, no channel, nothing waited on. */
START_TEST(test_start_without_a_binary_is_refused)
{
    struct event_base *base = event_base_new();
    char *dir = make_dir(), msg[512];
    struct old_proc o;
    int before;

    old_proc_init(&o, dir);
    before = count_fds();
    upgrade_carry("veer-health 1\nend\n");
    ck_assert_int_eq(count_fds(), before + 1);
    ck_assert_int_eq(upgrade_start(base, o.w, 2, o.admin, on_ready, on_failed, msg, sizeof(msg)),
                     VEER_ERROR);
    ck_assert_msg(strncmp(msg, "cannot run ", 11) == 0, "%s", msg);
    ck_assert_int_eq(count_fds(), before); /* the readiness file too */
    ck_assert_int_eq(events_on(base), 0);
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    upgrade_shutdown();
    event_base_free(base);
    old_proc_free(&o);
    rm_dir(dir);
}
END_TEST

static Suite *upgrade_suite(void)
{
    Suite *s = suite_create("upgrade");
    TCase *ts = tcase_create("send");
    TCase *ta = tcase_create("adopt");
    TCase *tw = tcase_create("serve");
    TCase *ti = tcase_create("inherit");
    TCase *to = tcase_create("start");

    tcase_add_loop_test(ts, test_send_conn_passes_the_connection_itself, 0, 2);
    tcase_add_test(ts, test_send_conn_carries_the_listener_text_and_peer_as_given);
    tcase_add_test(ts, test_send_conn_on_a_closed_channel_fails_and_keeps_the_connection);
    tcase_add_test(ts, test_send_conn_on_a_full_channel_fails_at_once);
    tcase_add_test(ta, test_child_ready_says_ready_then_adopts_round_robin);
    tcase_add_test(ta, test_adopt_drops_messages_without_a_socket_or_of_the_wrong_size);
    tcase_add_test(ta, test_adopt_ends_when_the_old_process_hangs_up);
    tcase_add_test(ta, test_child_ready_without_an_old_process_adopts_nothing);
    tcase_add_loop_test(ta, test_child_takes_over_on_go_or_a_silent_hang_up_never_after_no, 0, 3);
    tcase_add_test(ta, test_a_plain_start_inherits_nothing);
    tcase_add_test(tw, test_adopted_connections_are_served_as_sessions_of_their_listener);
    tcase_add_test(ti, test_inherit_gives_the_admin_socket_and_a_set_per_listener);
    tcase_add_test(ti, test_inherit_ignores_malformed_parts);
    tcase_add_test(ti, test_inherit_needs_the_upgrade_channel_too);
    tcase_add_test(ti, test_inherit_gives_the_readiness_file_once);
    tcase_add_test(ti, test_close_unclaimed_closes_only_the_sets_no_listener_took);
    tcase_add_test(ti, test_shutdown_frees_and_closes_what_it_holds);
    tcase_add_test(to, test_start_runs_the_new_binary_on_our_sockets_and_hands_over_on_ready);
    tcase_add_loop_test(to, test_start_keeps_serving_when_the_new_binary_fails, 0, 2);
    tcase_add_test(to, test_start_without_a_binary_is_refused);
    suite_add_tcase(s, ts);
    suite_add_tcase(s, ta);
    suite_add_tcase(s, tw);
    suite_add_tcase(s, ti);
    suite_add_tcase(s, to);
    return s;
}

int main(int argc, char **argv)
{
    SRunner *sr;
    int failed;

    if (argc == 4 && strcmp(argv[1], "--upgrade-child") == 0)
        return upgrade_child_main(argv[2], argv[3]);
    sr = srunner_create(upgrade_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
