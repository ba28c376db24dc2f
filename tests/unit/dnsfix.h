/*
 * dnsfix.h - a real DNS server for the discovery suites: Debian's dnsmasq
 * (/usr/sbin/dnsmasq, package dnsmasq-base) in the foreground on 127.0.0.1
 * and a port free for UDP and TCP, as tests/integration/dnsfix.py runs it:
 *
 * - names come from an addn-hosts file that dns_set_hosts() rewrites;
 *   dnsmasq re-reads it on SIGHUP;
 * - SRV records are srv-host= lines of the conf file (read at start only);
 * - `local=/internal/`: a name under .internal that is not in the hosts
 *   file gets NXDOMAIN; every answer has the TTL dns_ttl (1 s unless the
 *   test sets another before dns_up).
 *
 * dns_pause()/dns_resume() SIGSTOP and SIGCONT it (queries time out);
 * dns_kill() takes it down (queries are refused). It dies with the test
 * process on every path: dns_down() at the end of a test; at exit (atexit)
 * when something calls exit(); and, when the test process ends otherwise
 * (a failed assertion: Check's fork mode then runs neither atexit handlers
 * nor teardowns; a Check timeout's SIGKILL; a crash), killed by the kernel
 * (PR_SET_PDEATHSIG). Only then is its directory left behind.
 *
 * One server per process (Check's fork mode): DNS.
 */
#ifndef VEER_DNSFIX_H
#define VEER_DNSFIX_H

#include "veer.h"

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define DNSMASQ_BIN "/usr/sbin/dnsmasq"

static struct {
    char dir[64];
    char conf[96], hosts[96], out[96];
    pid_t pid;
    int port;
    bool atexit_set;
} DNS __attribute__((unused));

/* The TTL of every answer (local-ttl), seconds: set before dns_up. */
static int dns_ttl __attribute__((unused)) = 1;

/* A port free on 127.0.0.1 for both UDP and TCP right now. */
static inline int dns_free_port(void)
{
    for (int i = 0; i < 50; i++) {
        int u = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0), port = -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);

        ck_assert_int_ge(u, 0);
        ck_assert_int_ge(t, 0);
        if (bind(u, (struct sockaddr *)&a, sizeof(a)) == 0 &&
            getsockname(u, (struct sockaddr *)&a, &len) == 0 &&
            bind(t, (struct sockaddr *)&a, sizeof(a)) == 0)
            port = ntohs(a.sin_port);
        close(u);
        close(t);
        if (port > 0)
            return port;
    }
    ck_abort_msg("no port free for both UDP and TCP on 127.0.0.1");
    return -1;
}

static inline void dns_write(const char *path, const char *text)
{
    char tmp[128];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", path);
    f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(rename(tmp, path), 0);
}

/*
 * One query for probe.internal (type A) to the server: whether any answer
 * to it came within ms. Used to know dnsmasq serves.
 */
static inline bool dns_answers(int ms)
{
    static const unsigned char q[] = {0x12, 0x34, 1,   0,   0,   1,   0,   0, 0,   0,   0,
                                      0,    5,    'p', 'r', 'o', 'b', 'e', 8, 'i', 'n', 't',
                                      'e',  'r',  'n', 'a', 'l', 0,   0,   1, 0,   1};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned char buf[512];
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct pollfd p = {.fd = s, .events = POLLIN};
    bool ok = false;

    ck_assert_int_ge(s, 0);
    a.sin_port = htons((uint16_t)DNS.port);
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 && send(s, q, sizeof(q), 0) > 0 &&
        poll(&p, 1, ms) == 1) {
        ssize_t n = recv(s, buf, sizeof(buf), 0);

        ok = n >= 12 && buf[0] == 0x12 && buf[1] == 0x34 && (buf[2] & 0x80);
    }
    close(s);
    return ok;
}

/* Kill dnsmasq (SIGKILL works on a stopped one too) and reap it. */
static inline void dns_kill(void)
{
    if (DNS.pid <= 0)
        return;
    kill(DNS.pid, SIGKILL);
    waitpid(DNS.pid, NULL, 0);
    DNS.pid = 0;
}

static inline void dns_at_exit(void);

/*
 * Start dnsmasq on DNS.port with the conf file (srv: srv-host= lines, or
 * NULL) and wait until it answers; false when it exited instead (the port
 * was taken in between).
 */
static inline bool dns_try_start(const char *srv)
{
    char text[4096];
    size_t n;
    uint64_t end;
    pid_t parent;

    n = (size_t)snprintf(text, sizeof(text),
                         "no-resolv\nno-hosts\naddn-hosts=%s\nlocal=/internal/\nlocal-ttl=%d\n"
                         "bind-interfaces\nlisten-address=127.0.0.1\nport=%d\n"
                         "keep-in-foreground\npid-file=\n",
                         DNS.hosts, dns_ttl, DNS.port);
    if (getuid() == 0) /* keep root: nobody could not read the hosts file in our 0700 directory */
        n += (size_t)snprintf(text + n, sizeof(text) - n, "user=%s\n", getpwuid(0)->pw_name);
    if (srv)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", srv);
    ck_assert_uint_lt(n, sizeof(text));
    dns_write(DNS.conf, text);

    parent = getpid();
    DNS.pid = fork();
    ck_assert_int_ge(DNS.pid, 0);
    if (DNS.pid == 0) {
        int fd = open(DNS.out, O_WRONLY | O_CREAT | O_APPEND, 0600);
        char arg[128];

        /* The test process died: so does dnsmasq (already dead: never start). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(126);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        snprintf(arg, sizeof(arg), "--conf-file=%s", DNS.conf);
        execl(DNSMASQ_BIN, DNSMASQ_BIN, arg, (char *)NULL);
        _exit(127);
    }
    end = veer_now_us() + 10 * 1000000ull;
    while (veer_now_us() < end) {
        if (waitpid(DNS.pid, NULL, WNOHANG) == DNS.pid) {
            DNS.pid = 0;
            return false;
        }
        if (dns_answers(100))
            return true;
    }
    ck_abort_msg("dnsmasq on port %d does not answer", DNS.port);
    return false;
}

/*
 * A temporary directory, the hosts file ("ADDRESS NAME" lines), dnsmasq
 * serving it and the srv-host lines (or NULL) on 127.0.0.1:DNS.port.
 */
static inline void dns_up(const char *hosts, const char *srv)
{
    ck_assert_msg(access(DNSMASQ_BIN, X_OK) == 0,
                  "%s is missing: install the Debian package dnsmasq-base", DNSMASQ_BIN);
    if (!DNS.atexit_set)
        atexit(dns_at_exit);
    memset(&DNS, 0, sizeof(DNS));
    DNS.atexit_set = true;
    strcpy(DNS.dir, "/tmp/dnsfix.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(DNS.dir));
    snprintf(DNS.conf, sizeof(DNS.conf), "%s/dnsmasq.conf", DNS.dir);
    snprintf(DNS.hosts, sizeof(DNS.hosts), "%s/hosts", DNS.dir);
    snprintf(DNS.out, sizeof(DNS.out), "%s/dnsmasq.out", DNS.dir);
    dns_write(DNS.hosts, hosts);
    for (int i = 0; i < 5; i++) {
        DNS.port = dns_free_port();
        if (dns_try_start(srv))
            return;
    }
    ck_abort_msg("dnsmasq did not start (see %s)", DNS.out);
}

/*
 * New srv-host lines: dnsmasq reads them only at start, so it starts again
 * on the same port (tried a few times: the port may take a moment to be free).
 */
static inline void dns_restart(const char *srv)
{
    dns_kill();
    for (int i = 0; i < 50; i++) {
        if (dns_try_start(srv))
            return;
        usleep(20 * 1000); /* a bind retry's back-off, not a wait for a condition */
    }
    ck_abort_msg("dnsmasq did not start again on port %d (see %s)", DNS.port, DNS.out);
}

/* Replace the hosts file and have dnsmasq read it again. */
static inline void dns_set_hosts(const char *hosts)
{
    dns_write(DNS.hosts, hosts);
    ck_assert_int_eq(kill(DNS.pid, SIGHUP), 0);
}

/* Queries time out (SIGSTOP), then are answered again (SIGCONT). */
static inline void dns_pause(void)
{
    ck_assert_int_eq(kill(DNS.pid, SIGSTOP), 0);
}

static inline void dns_resume(void)
{
    ck_assert_int_eq(kill(DNS.pid, SIGCONT), 0);
}

/* dnsmasq killed, its files and directory removed (again: nothing happens). */
static inline void dns_down(void)
{
    if (DNS.dir[0] == '\0')
        return;
    char path[128];

    dns_kill();
    unlink(DNS.conf);
    unlink(DNS.hosts);
    unlink(DNS.out);
    snprintf(path, sizeof(path), "%s.new", DNS.hosts);
    unlink(path);
    rmdir(DNS.dir);
    DNS.dir[0] = '\0';
}

/* At exit, a failing test's too: dnsmasq killed, its directory removed. */
static inline void dns_at_exit(void)
{
    dns_down();
}

#endif
