/*
 * check_sdnotify.c - the sd_notify datagram without libsystemd: with
 * NOTIFY_SOCKET naming a datagram socket by path or in the abstract
 * namespace ("@name"), each call is one datagram holding exactly the
 * message, sent by this process (systemd attributes it by the sender's
 * credentials); without NOTIFY_SOCKET, or with a relative or empty one,
 * nothing is sent; a NOTIFY_SOCKET that names nothing, a file, a stream
 * socket or too long a path costs a warning at most, never a crash, a
 * hang or a descriptor.
 *
 * Receivers are bound in a mkdtemp directory or under a name unique to
 * this process; every wait is a poll() with a deadline.
 */
#include "sdnotify.h"
#include "veer.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* How long a datagram may take to arrive. */
#define WAIT_MS 3000

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

static char *make_dir(void)
{
    char *dir = veer_strdup("/tmp/check_sdnotify_XXXXXX");

    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

/* Remove dir and the entries in it. */
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

/* stderr into an unnamed temporary file, to read what was logged. */
struct capture {
    int saved, fd;
};

static struct capture capture_start(void)
{
    struct capture c;

    c.fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    ck_assert_int_ge(c.fd, 0);
    fflush(stderr);
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

    fflush(stderr);
    ck_assert_int_eq(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
    close(c->saved);
    n = pread(c->fd, text, 4095, 0);
    close(c->fd);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

/*
 * A datagram socket bound to name (a path, or "@name" in the abstract
 * namespace, bound with its exact length as systemd does), passing
 * credentials, non-blocking.
 */
static int receiver(const char *name)
{
    struct sockaddr_un sa;
    size_t len = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

    ck_assert_int_ge(fd, 0);
    ck_assert_uint_lt(len, sizeof(sa.sun_path));
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == 0,
                  "bind %s: %s", name, strerror(errno));
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
    return fd;
}

/* The next datagram on fd, within WAIT_MS, must be exactly want, sent by this process. */
static void expect_datagram(int fd, const char *want)
{
    char buf[512];
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf, sizeof(buf)};
    struct msghdr mh;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    struct cmsghdr *c;
    struct ucred cred = {0};
    bool have_cred = false;
    ssize_t n;

    ck_assert_msg(poll(&p, 1, WAIT_MS) == 1, "no datagram came (wanted \"%s\")", want);
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    n = recvmsg(fd, &mh, MSG_DONTWAIT);
    ck_assert_msg(n >= 0, "recvmsg: %s", strerror(errno));
    ck_assert(!(mh.msg_flags & MSG_TRUNC));
    ck_assert_int_eq(n, (ssize_t)strlen(want));
    ck_assert_int_eq(memcmp(buf, want, (size_t)n), 0);
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            memcpy(&cred, CMSG_DATA(c), sizeof(cred));
            have_cred = true;
        }
    ck_assert(have_cred);
    ck_assert_int_eq(cred.pid, getpid());
    ck_assert_uint_eq(cred.uid, getuid());
}

/* Nothing (more) arrived on fd. */
static void expect_nothing(int fd)
{
    char buf[64];

    ck_assert_int_eq(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
}

/* A name in the abstract namespace no other process uses. */
static void abstract_name(char *buf, size_t len, const char *what)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(buf, len, "@check_sdnotify/%d/%s/%ld", (int)getpid(), what, (long)ts.tv_nsec);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------------------------------ */

START_TEST(test_path_socket_gets_each_message_as_one_exact_datagram)
{
    char *dir = make_dir(), path[512];
    int fd, before;

    snprintf(path, sizeof(path), "%s/notify", dir);
    fd = receiver(path);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
    before = count_fds();
    sd_notify_send("READY=1\nMAINPID=4242");
    sd_notify_send("RELOADING=1");
    sd_notify_send("READY=1");
    sd_notify_send("STOPPING=1");
    ck_assert_int_eq(count_fds(), before);
    expect_datagram(fd, "READY=1\nMAINPID=4242");
    expect_datagram(fd, "RELOADING=1");
    expect_datagram(fd, "READY=1");
    expect_datagram(fd, "STOPPING=1");
    expect_nothing(fd);
    ck_assert_str_eq(getenv("NOTIFY_SOCKET"), path); /* kept for the next message */
    close(fd);
    unsetenv("NOTIFY_SOCKET");
    rm_dir(dir);
}
END_TEST

/*
 * "@name" is "\0name" with exactly that length: a sender padding the
 * address to the full sun_path would name another socket and reach no one.
 */
START_TEST(test_abstract_socket_gets_the_exact_message)
{
    char name[108], longer[120], *log;
    struct capture cap;
    int fd, before;

    abstract_name(name, sizeof(name), "notify");
    fd = receiver(name);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
    before = count_fds();
    sd_notify_send("READY=1\nMAINPID=1");
    sd_notify_send("STOPPING=1");
    ck_assert_int_eq(count_fds(), before);
    expect_datagram(fd, "READY=1\nMAINPID=1");
    expect_datagram(fd, "STOPPING=1");
    expect_nothing(fd);

    /* A name that merely starts with ours is another socket: refused, and logged. */
    snprintf(longer, sizeof(longer), "%sx", name);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", longer, 1), 0);
    cap = capture_start();
    sd_notify_send("READY=1");
    log = capture_stop(&cap);
    ck_assert_msg(strstr(log, "sd_notify READY=1: ") != NULL, "no warning logged:\n%s", log);
    free(log);
    expect_nothing(fd);
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

/*
 * Not under systemd (no NOTIFY_SOCKET), or a NOTIFY_SOCKET that is empty or
 * relative (the protocol allows neither): nothing is sent, nothing logged,
 * no descriptor made. A receiver bound at the relative name hears nothing.
 */
START_TEST(test_unset_empty_or_relative_notify_socket_sends_nothing)
{
    char *dir = make_dir(), cwd[512], *log;
    const char *values[] = {NULL, "", "notify", "./notify"};
    struct capture cap;
    int fd, before;

    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    ck_assert_int_eq(chdir(dir), 0);
    fd = receiver("notify");
    cap = capture_start();
    before = count_fds();
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        if (values[i])
            ck_assert_int_eq(setenv("NOTIFY_SOCKET", values[i], 1), 0);
        else
            unsetenv("NOTIFY_SOCKET");
        sd_notify_send("READY=1");
        sd_notify_send("STOPPING=1");
    }
    ck_assert_int_eq(count_fds(), before);
    log = capture_stop(&cap);
    ck_assert_msg(log[0] == '\0', "logged: %s", log);
    free(log);
    expect_nothing(fd);
    close(fd);
    ck_assert_int_eq(chdir(cwd), 0);
    unsetenv("NOTIFY_SOCKET");
    rm_dir(dir);
}
END_TEST

/*
 * NOTIFY_SOCKET naming nothing (a missing path, an unbound abstract name),
 * a regular file, a stream socket, or a path too long for sun_path: the
 * call returns at once, with a warning when the send failed, and leaves no
 * descriptor behind.
 */
START_TEST(test_notify_socket_naming_nothing_neither_crashes_nor_blocks)
{
    char *dir = make_dir(), missing[512], file[512], stream[100], toolong[300], abs[108];
    const char *values[] = {missing, file, stream, toolong, abs, "/", "@"};
    struct pollfd p;
    struct sockaddr_un sa;
    struct capture cap;
    int f, st, before;
    uint64_t t0;
    char *log;

    snprintf(missing, sizeof(missing), "%s/nobody-here", dir);
    snprintf(file, sizeof(file), "%s/a-file", dir);
    f = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ck_assert_int_ge(f, 0);
    close(f);
    snprintf(stream, sizeof(stream), "%s/stream", dir);
    st = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(st, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", stream);
    ck_assert_int_eq(bind(st, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(st, 1), 0);
    memset(toolong, 'x', sizeof(toolong) - 1);
    toolong[0] = '/';
    toolong[sizeof(toolong) - 1] = '\0';
    abstract_name(abs, sizeof(abs), "unbound");

    cap = capture_start();
    before = count_fds();
    t0 = now_ms();
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", values[i], 1), 0);
        sd_notify_send("READY=1");
    }
    ck_assert_uint_lt(now_ms() - t0, WAIT_MS);
    ck_assert_int_eq(count_fds(), before);
    log = capture_stop(&cap);
    ck_assert_msg(strstr(log, "sd_notify READY=1") != NULL, "no warning logged:\n%s", log);
    free(log);

    /* The stream socket was not connected to: nothing waits in its queue. */
    p = (struct pollfd){.fd = st, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    close(st);
    unsetenv("NOTIFY_SOCKET");
    rm_dir(dir);
}
END_TEST

static Suite *sdnotify_suite(void)
{
    Suite *s = suite_create("sdnotify");
    TCase *tc = tcase_create("notify");

    tcase_add_test(tc, test_path_socket_gets_each_message_as_one_exact_datagram);
    tcase_add_test(tc, test_abstract_socket_gets_the_exact_message);
    tcase_add_test(tc, test_unset_empty_or_relative_notify_socket_sends_nothing);
    tcase_add_test(tc, test_notify_socket_naming_nothing_neither_crashes_nor_blocks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sdnotify_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
