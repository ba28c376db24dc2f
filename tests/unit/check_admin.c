/*
 * check_admin.c - the admin socket server (admin.c) over a real unix socket in a temporary
 * directory, set up as main sets it up (the control thread with no worker thread of ctlfix.h, show
 * bound, admin_start) and served by the control thread's event base, which the test steps itself:
 * every wait is a condition polled between loop iterations, with a deadline. The clients are plain
 * sockets of the test.
 *
 * What admin.h and ARCHITECTURE.md promise, checked here: the socket is created with the
 * configured mode (and owner and group; an unknown one refused) in a directory created 0750 when
 * missing, and refused in a world-writable directory, over a live socket or over a file that is
 * not a socket (a stale socket is replaced); several lines on one connection are answered in
 * order, each reply ended by an empty line, blank lines and CRs ignored; a client that sends
 * thousands of commands and reads nothing stops being served at a MiB of unread replies, then
 * gets every reply, in order, as it reads; after a half-close every line received is answered
 * (the last even without its newline, and those behind a command that waits), then the
 * connection closes; a line over CMD_LINE_MAX is
 * refused `ERR line too long` (audited, the connection goes on) however the reads split it, and
 * one whose end does not come within the 16 KiB held is refused and the connection closed, the
 * model untouched either way; a malformed command is answered ERR and audited with the client's
 * credentials; a command that waits (drain --wait) holds the lines behind it, and its client,
 * silent meanwhile, is not closed as idle; a client that leaves with a command in flight (a
 * close, or a reset) crashes nothing, and the next client is served.
 *
 * Each test runs in its own process (Check's fork mode).
 */
#include "admin.h"
#include "adminhttp.h"
#include "ctlfix.h"
#include "report.h"
#include "show.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define WAIT_MS 5000

/*
 * api: blue-1, blue-2 (blue, 100%) and green-1 (green, 0%); no readiness
 * checks, so every backend is READY at once. The socket's directory does
 * not exist yet.
 */
#define CONF                                                                                       \
    "audit_log = \"%s/audit.log\";\n"                                                              \
    "admin = { socket = \"%s/run/admin.sock\"; mode = \"0640\"; };\n"                              \
    "listen = ( { address = \"127.0.0.1:0\"; pool = \"api\"; } );\n"                               \
    "pools = ( { name = \"api\"; backends = ("                                                     \
    "{ name = \"blue-1\"; address = \"127.0.0.1:1\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"blue-2\"; address = \"127.0.0.1:2\"; weight = 100; group = \"blue\"; },"           \
    "{ name = \"green-1\"; address = \"127.0.0.1:3\"; weight = 100; group = \"green\"; } );"       \
    "shares = { blue = 100; green = 0; }; } );\n"

#define API   0
#define BLUE  0
#define GREEN 1

/* The admin socket's path: run/admin.sock in the test's directory. */
static char sock_path[100];

/*
 * The fixture (ctlfix.h) with one per-worker slot in every backend, which
 * the test fills as that worker would; show bound, the admin HTTP side and
 * the admin socket started, as main does.
 */
static void up(void)
{
    const struct ctlfix_opts o = {.slots = 1};

    signal(SIGPIPE, SIG_IGN); /* as main: a reply to a client that left is an error event */
    ctl_up_with(CONF, &o);
    snprintf(sock_path, sizeof(sock_path), "%s/run/admin.sock", CF.dir);
    ck_assert_str_eq(CF.c->admin.socket, sock_path);
    ck_assert_int_eq(CF.c->admin.mode, 0640);
    control_set_show(show_execute);
    ck_assert_int_eq(adminhttp_start(CF.base, CF.c, CF.m, NULL, 0), VEER_OK);
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_OK);
}

static void down(void)
{
    char run[128];

    admin_stop();
    adminhttp_stop();
    unlink(sock_path);
    snprintf(run, sizeof(run), "%s/run", CF.dir);
    rmdir(run);
    ctl_down();
}

/* --- stepping the control thread ------------------------------------------------------- */

/* Step the loop until cond(arg) holds, for at most WAIT_MS. */
static bool wait_for(bool (*cond)(void *), void *arg)
{
    return ctl_wait(cond, arg, WAIT_MS);
}

/* --- clients ---------------------------------------------------------------------------- */

struct client {
    int fd;
    char in[65536];
    size_t len;
    bool eof; /* the server closed (EOF or reset) */
};

static struct client *cl_connect(void)
{
    struct client *c = calloc(1, sizeof(*c));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    ck_assert_ptr_nonnull(c);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c->fd, 0);
    /* A listening unix socket takes the connection into its queue at once. */
    ck_assert_msg(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
                  strerror(errno));
    return c;
}

static void cl_send(struct client *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);

        ck_assert_msg(k > 0, "send: %s", strerror(errno));
        s += k;
        n -= (size_t)k;
    }
}

static void cl_puts(struct client *c, const char *s)
{
    cl_send(c, s, strlen(s));
}

/* Take what the server sent so far. */
static void cl_read(struct client *c)
{
    for (;;) {
        ssize_t k;

        if (c->len == sizeof(c->in) - 1)
            return; /* full: the caller takes replies off first */
        k = recv(c->fd, c->in + c->len, sizeof(c->in) - 1 - c->len, MSG_DONTWAIT);
        if (k > 0) {
            c->len += (size_t)k;
            c->in[c->len] = '\0';
            continue;
        }
        if (k == 0 || (errno != EAGAIN && errno != EINTR))
            c->eof = true;
        return;
    }
}

/* How many replies (each ended by an empty line) came so far. */
static unsigned nreplies(const struct client *c)
{
    unsigned n = 0;

    for (const char *p = c->in; (p = strstr(p, "\n\n")) != NULL; p += 2)
        n++;
    return n;
}

struct want {
    struct client *c;
    unsigned n;
};

static bool has_replies(void *arg)
{
    struct want *w = arg;

    cl_read(w->c);
    return nreplies(w->c) >= w->n || w->c->eof;
}

/* A whole reply waits in the socket, not taken (a close now resets the server's end). */
static bool unread_reply(void *arg)
{
    struct client *c = arg;
    char buf[4096];
    ssize_t k = recv(c->fd, buf, sizeof(buf) - 1, MSG_PEEK | MSG_DONTWAIT);

    if (k <= 0)
        return false;
    buf[k] = '\0';
    return strstr(buf, "\n\n") != NULL;
}

static bool closed(void *arg)
{
    struct client *c = arg;

    cl_read(c);
    return c->eof;
}

/*
 * Wait for n replies in all (or the server closing), then return reply i
 * (from 0) without its ending empty line, in a static buffer.
 */
static const char *reply(struct client *c, unsigned i)
{
    static char out[65536];
    struct want w = {c, i + 1};
    const char *p = c->in, *e;

    ck_assert_msg(wait_for(has_replies, &w), "no reply %u after %d ms; got [%s]", i, WAIT_MS,
                  c->in);
    ck_assert_msg(nreplies(c) > i, "closed before reply %u; got [%s]", i, c->in);
    for (unsigned k = 0; k < i; k++)
        p = strstr(p, "\n\n") + 2;
    e = strstr(p, "\n\n");
    snprintf(out, sizeof(out), "%.*s", (int)(e - p + 1), p);
    return out;
}

static void cl_close(struct client *c)
{
    close(c->fd);
    free(c);
}

/* The number of descriptors this process has open. */
static unsigned nfds(void)
{
    DIR *d = opendir("/proc/self/fd");
    unsigned n = 0;

    ck_assert_ptr_nonnull(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static bool nfds_at(void *arg)
{
    return nfds() == *(unsigned *)arg;
}

/* --- the audit log ------------------------------------------------------------------- */

/* The last record is `command` refused with `result`, from this process (the client). */
static void assert_last_refusal(const char *command, const char *result)
{
    json_t *a = ctl_audit_records();
    json_t *rec = json_array_get(a, json_array_size(a) - 1);

    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "actor")), "operator");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "command")), command);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "result")), result);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "generation")),
                      CF.m->generation);
    /* The peer's credentials, as the socket gives them (SO_PEERCRED). */
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "uid")), (int)getuid());
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "gid")), (int)getgid());
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "pid")), (int)getpid());
    json_decref(a);
}

static struct rt_backend *be(const char *name)
{
    int i = model_find_backend(&CF.m->pools[API], name);

    ck_assert_int_ge(i, 0);
    return &CF.m->pools[API].b[i];
}

/* --- tests ------------------------------------------------------------------------------ */

/*
 * The socket is where the config says, a socket of the configured mode; its
 * missing directory was made 0750. It serves, and admin_listen_fd is it.
 */
START_TEST(test_socket_mode_and_directory)
{
    struct stat st;
    char dir[128];
    struct sockaddr_un sa;
    socklen_t sl = sizeof(sa);
    struct client *c;
    mode_t mask;

    up();
    ck_assert_int_eq(lstat(sock_path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    snprintf(dir, sizeof(dir), "%s/run", CF.dir);
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    mask = umask(0);
    umask(mask);
    ck_assert_uint_eq(st.st_mode & 07777, 0750 & ~mask);
    ck_assert_int_ge(admin_listen_fd(), 0);
    ck_assert_int_eq(getsockname(admin_listen_fd(), (struct sockaddr *)&sa, &sl), 0);
    ck_assert_str_eq(sa.sun_path, sock_path);

    c = cl_connect();
    cl_puts(c, "show pools\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "pool  backend  group"));
    cl_close(c);
    down();
}
END_TEST

static void set_socket(const char *path)
{
    free(CF.c->admin.socket);
    CF.c->admin.socket = veer_strdup(path);
}

/*
 * admin_start refuses a world-writable directory, a path in use by another
 * process's socket (left alone) and a path that is not a socket (left
 * alone); a stale socket (nobody listening) is replaced. admin_stop leaves
 * the path.
 */
START_TEST(test_start_refusals)
{
    char path[100], orig[100];
    struct stat st;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;
    FILE *f;
    struct client *c;

    up();
    snprintf(orig, sizeof(orig), "%s", sock_path);
    admin_stop();
    ck_assert_int_eq(admin_listen_fd(), -1);
    ck_assert_int_eq(lstat(sock_path, &st), 0); /* the path stays */

    /* A stale socket: replaced, and served. */
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_OK);
    c = cl_connect();
    cl_puts(c, "show pool api\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "group blue share 100\n"));
    cl_close(c);
    admin_stop();

    /* Another process's live socket: refused, and it keeps its path. */
    snprintf(path, sizeof(path), "%s/live.sock", CF.dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    set_socket(path);
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_ERROR);
    ck_assert_int_eq(admin_listen_fd(), -1);
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    close(fd);
    unlink(path);

    /* A file that is not a socket: refused, left as it was. */
    snprintf(path, sizeof(path), "%s/file.sock", CF.dir);
    f = fopen(path, "w");
    fputs("data", f);
    fclose(f);
    set_socket(path);
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_ERROR);
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(st.st_size, 4);
    unlink(path);

    /* A world-writable directory: refused, nothing created there. */
    snprintf(path, sizeof(path), "%s/open", CF.dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(chmod(path, 0777), 0);
    snprintf(path, sizeof(path), "%s/open/admin.sock", CF.dir);
    set_socket(path);
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_ERROR);
    ck_assert_int_eq(lstat(path, &st), -1);
    snprintf(path, sizeof(path), "%s/open", CF.dir);
    rmdir(path);

    set_socket(orig);
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_OK);
    down();
}
END_TEST

/*
 * admin.owner and admin.group: the socket is chowned to them (here this
 * process's own user and group, the only ones a test may give it); an
 * unknown user or group is refused and nothing serves.
 */
START_TEST(test_owner_and_group)
{
    struct passwd *pw = getpwuid(getuid());
    struct group *gr = getgrgid(getgid());
    struct stat st;
    struct client *c;

    up();
    ck_assert_ptr_nonnull(pw);
    ck_assert_ptr_nonnull(gr);
    admin_stop();
    CF.c->admin.owner = veer_strdup(pw->pw_name);
    CF.c->admin.group = veer_strdup(gr->gr_name);
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_OK);
    ck_assert_int_eq(lstat(sock_path, &st), 0);
    ck_assert_uint_eq(st.st_uid, getuid());
    ck_assert_uint_eq(st.st_gid, getgid());
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    c = cl_connect();
    cl_puts(c, "show pools\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "pool  backend"));
    cl_close(c);
    admin_stop();

    free(CF.c->admin.owner);
    CF.c->admin.owner = veer_strdup("no-such-user-of-veer");
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_ERROR);
    ck_assert_int_eq(admin_listen_fd(), -1);
    free(CF.c->admin.owner);
    CF.c->admin.owner = NULL;
    free(CF.c->admin.group);
    CF.c->admin.group = veer_strdup("no-such-group-of-veer");
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_ERROR);
    ck_assert_int_eq(admin_listen_fd(), -1);

    /* Back to no owner: served again (the refused attempts' path is stale, replaced). */
    free(CF.c->admin.group);
    CF.c->admin.group = NULL;
    ck_assert_int_eq(admin_start(CF.base, CF.c), VEER_OK);
    c = cl_connect();
    cl_puts(c, "show pools\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "pool  backend"));
    cl_close(c);
    down();
}
END_TEST

/*
 * Several lines in one write are answered in order, one reply each, each
 * ended by an empty line; a CR before the newline and blank lines are not
 * commands. The change among them is applied before the show after it.
 */
START_TEST(test_commands_answered_in_order)
{
    struct client *c;
    uint64_t gen;
    json_error_t e;
    json_t *doc;
    char want[64];

    up();
    gen = CF.m->generation;
    c = cl_connect();
    cl_puts(c, "show pool api\r\n\n\nshift api blue=90 green=10\nfrobnicate api\r\n"
               "show pool api --json\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "group blue share 100\ngroup green share 0\n"));
    snprintf(want, sizeof(want), "OK gen=%llu applied_us=", (unsigned long long)gen + 1);
    ck_assert_msg(strncmp(reply(c, 1), want, strlen(want)) == 0, "%s", reply(c, 1));
    ck_assert_msg(strncmp(reply(c, 2), "ERR ", 4) == 0, "%s", reply(c, 2));
    ck_assert_ptr_null(strchr(reply(c, 2), '\r'));
    doc = json_loads(reply(c, 3), 0, &e);
    ck_assert_msg(doc != NULL, "%s: %s", e.text, reply(c, 3));
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_array_get(json_object_get(doc, "groups"), BLUE), "share")),
                     90);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(doc, "generation")), gen + 1);
    json_decref(doc);
    ck_assert_uint_eq(nreplies(c), 4);
    ck_assert_uint_eq(CF.m->pools[API].g[GREEN].share, 10);

    /* The connection goes on: one more. */
    cl_puts(c, "shift api blue=60 green=40\n");
    snprintf(want, sizeof(want), "OK gen=%llu ", (unsigned long long)gen + 2);
    ck_assert_msg(strncmp(reply(c, 4), want, strlen(want)) == 0, "%s", reply(c, 4));
    ck_assert_uint_eq(CF.m->pools[API].g[GREEN].share, 40);
    cl_close(c);
    down();
}
END_TEST

/* The client's socket holds at least *arg bytes of replies not read yet. */
struct inq {
    struct client *c;
    int bytes;
};

static bool replies_waiting(void *arg)
{
    struct inq *q = arg;
    int n = 0;

    ck_assert_int_eq(ioctl(q->c->fd, FIONREAD, &n), 0);
    return n >= q->bytes;
}

/*
 * The server stopped taking the client's lines: some are still in the
 * client's socket, and the replies waiting for it have not grown over ten
 * loop steps.
 */
struct stalled {
    struct client *c;
    int last, same;
};

static bool server_stalled(void *arg)
{
    struct stalled *st = arg;
    int inq = 0, outq = 0;

    ck_assert_int_eq(ioctl(st->c->fd, FIONREAD, &inq), 0);
    ck_assert_int_eq(ioctl(st->c->fd, SIOCOUTQ, &outq), 0);
    st->same = inq == st->last ? st->same + 1 : 0;
    st->last = inq;
    return outq > 0 && inq > 0 && st->same >= 10;
}

static bool all_replies(void *arg)
{
    struct want *w = arg;

    cl_read(w->c);
    return nreplies(w->c) >= w->n || w->c->eof;
}

/*
 * A client that sends many commands and reads nothing for a while: veer
 * stops taking its lines once a MiB of replies is unread (and its input
 * beyond 16 KiB stays in the socket), then goes on as the client reads.
 * Every command is answered once, in order, none lost or cut.
 */
START_TEST(test_slow_reader_gets_every_reply_in_order)
{
    enum { N = 2400 };
    static const char *const lines[] = {"show stats --json\n", "show pools\n"};
    struct client *c;
    struct want w;
    struct inq q;
    struct stalled st = {NULL, -1, 0};
    char *all = malloc(N * 32), *p;
    size_t len = 0;
    const char *r;

    up();
    for (unsigned i = 0; i < N; i++) {
        strcpy(all + len, lines[i % 2]);
        len += strlen(lines[i % 2]);
    }
    c = cl_connect();
    st.c = c;
    cl_send(c, all, len);
    /*
     * The server runs ahead of the reader until a MiB of replies is unread,
     * then stops taking lines (some stay in the client's socket).
     */
    q = (struct inq){c, 64 * 1024};
    ck_assert_msg(wait_for(replies_waiting, &q), "no replies waiting");
    ck_assert_msg(wait_for(server_stalled, &st),
                  "the server took every line of a client that reads nothing");

    w = (struct want){c, N};
    free(all);
    all = malloc(N * 1024);
    len = 0;
    /* Read it all (the client buffer holds 64 KiB: move what came into `all` as it comes). */
    for (unsigned got = 0; got < N;) {
        uint64_t end = veer_now_us() + (uint64_t)WAIT_MS * 1000;

        w.n = 1;
        while (nreplies(c) < 1 && !c->eof && veer_now_us() < end)
            ctl_wait(all_replies, &w, WAIT_MS);
        ck_assert_msg(nreplies(c) >= 1, "%u replies of %u, then nothing", got, N);
        /* Take the complete replies off the client's buffer. */
        p = c->in;
        while ((r = strstr(p, "\n\n")) != NULL) {
            size_t n = (size_t)(r + 2 - p);

            memcpy(all + len, p, n);
            len += n;
            p += n;
            got++;
        }
        c->len -= (size_t)(p - c->in);
        memmove(c->in, p, c->len + 1);
        ck_assert_msg(got <= N, "more replies than commands");
    }
    all[len] = '\0';
    cl_read(c);
    ck_assert_uint_eq(c->len, 0);
    ck_assert(!c->eof);
    p = all;
    for (unsigned i = 0; i < N; i++) {
        r = strstr(p, "\n\n");
        ck_assert_ptr_nonnull(r);
        if (i % 2 == 0)
            ck_assert_msg(strncmp(p, "{\"version\":", 11) == 0 && r[-1] == '}', "reply %u: %.80s",
                          i, p);
        else
            ck_assert_msg(strncmp(p, "pool  backend", 13) == 0, "reply %u: %.80s", i, p);
        p = (char *)r + 2;
    }
    cl_close(c);
    free(all);
    down();
}
END_TEST

/* After a half-close every line received is answered, the last even without its newline. */
START_TEST(test_half_close_answers_every_line_then_closes)
{
    struct client *c;
    uint64_t gen;

    up();
    gen = CF.m->generation;
    c = cl_connect();
    cl_puts(c, "show pools\nshift api blue=50 green=50\nswap api");
    ck_assert_int_eq(shutdown(c->fd, SHUT_WR), 0);
    ck_assert_msg(wait_for(closed, c), "not closed after a half-close: [%s]", c->in);
    ck_assert_uint_eq(nreplies(c), 3);
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "pool  backend"));
    ck_assert_msg(strncmp(reply(c, 1), "OK gen=", 7) == 0, "%s", reply(c, 1));
    ck_assert_msg(strncmp(reply(c, 2), "OK gen=", 7) == 0, "%s", reply(c, 2));
    ck_assert_uint_eq(CF.m->generation, gen + 2);
    cl_close(c);
    down();
}
END_TEST

/*
 * A line longer than CMD_LINE_MAX is refused `ERR line too long` even when
 * what it starts with is a valid change, nothing changes, the refusal is
 * audited, and the connection goes on.
 */
START_TEST(test_line_too_long_refused)
{
    struct client *c;
    uint64_t gen;
    char *line = malloc(CMD_LINE_MAX + 64);
    size_t records;

    up();
    gen = CF.m->generation;
    records = ctl_audit_count();
    strcpy(line, "shift api blue=90 green=10");
    memset(line + strlen(line), ' ', CMD_LINE_MAX + 10 - strlen(line));
    line[CMD_LINE_MAX + 10] = '\0';
    c = cl_connect();
    cl_puts(c, line);
    cl_puts(c, "\nshow pool api\n");
    ck_assert_str_eq(reply(c, 0), "ERR line too long\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 1), "group blue share 100\ngroup green share 0\n"));
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_int_eq(CF.m->pools[API].g[BLUE].share, 100);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    line[CMD_LINE_MAX] = '\0'; /* what is kept of the line */
    assert_last_refusal(line, "ERR line too long");
    cl_close(c);
    free(line);
    down();
}
END_TEST

/* The client's bytes were all taken by the server (its socket's send queue is empty). */
static bool taken(void *arg)
{
    struct client *c = arg;
    int queued = -1;

    ck_assert_int_eq(ioctl(c->fd, SIOCOUTQ, &queued), 0);
    return queued == 0;
}

/*
 * The same over-long line, its end coming in a later read (as it may over
 * any socket): still refused `ERR line too long` and audited, and the
 * connection still goes on, rather than closed as a line without an end.
 */
START_TEST(test_line_too_long_in_two_reads)
{
    struct client *c;
    uint64_t gen;
    char *line = malloc(CMD_LINE_MAX + 1024);
    size_t records, first = CMD_LINE_MAX + 400;

    up();
    gen = CF.m->generation;
    records = ctl_audit_count();
    strcpy(line, "shift api blue=90 green=10");
    memset(line + strlen(line), ' ', CMD_LINE_MAX + 800 - strlen(line));
    line[CMD_LINE_MAX + 800] = '\0';
    c = cl_connect();
    cl_send(c, line, first);
    ck_assert_msg(wait_for(taken, c), "the server did not read the line's start");
    cl_puts(c, line + first);
    cl_puts(c, "\nshow pool api\n");
    ck_assert_str_eq(reply(c, 0), "ERR line too long\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 1), "group blue share 100\ngroup green share 0\n"));
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    line[CMD_LINE_MAX] = '\0';
    assert_last_refusal(line, "ERR line too long");
    cl_close(c);
    free(line);
    down();
}
END_TEST

/*
 * A line whose end does not come within the input the server holds for a
 * connection (16 KiB) is refused `ERR line too long`, audited, and the
 * connection closed (its framing is lost); nothing changes; the next client
 * is served.
 */
START_TEST(test_line_over_input_cap_closes)
{
    struct client *c;
    uint64_t gen;
    size_t n = 20 * 1024, records;
    char *line = malloc(n + 1);

    up();
    gen = CF.m->generation;
    records = ctl_audit_count();
    strcpy(line, "shift api blue=90 green=10 ");
    memset(line + strlen(line), 'x', n - strlen(line));
    line[n - 1] = '\n';
    c = cl_connect();
    cl_send(c, line, n);
    ck_assert_str_eq(reply(c, 0), "ERR line too long\n");
    ck_assert_msg(wait_for(closed, c), "still open after a line without its end");
    ck_assert_uint_eq(nreplies(c), 1);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_int_eq(CF.m->pools[API].g[BLUE].share, 100);
    /* Refused like any bad line: audited, with what is kept of it. */
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    line[CMD_LINE_MAX] = '\0';
    assert_last_refusal(line, "ERR line too long");
    cl_close(c);

    c = cl_connect();
    cl_puts(c, "show pool api\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "group blue share 100\n"));
    cl_close(c);
    free(line);
    down();
}
END_TEST

/* A malformed command: ERR, audited with the client's credentials, nothing changed. */
START_TEST(test_malformed_command_refused_and_audited)
{
    struct client *c;
    uint64_t gen;
    size_t records;
    char result[256];

    up();
    gen = CF.m->generation;
    records = ctl_audit_count();
    c = cl_connect();
    cl_puts(c, "set weight api/blue-1 lots\n");
    snprintf(result, sizeof(result), "%.*s", (int)strcspn(reply(c, 0), "\n"), reply(c, 0));
    ck_assert_msg(strncmp(result, "ERR ", 4) == 0, "%s", result);
    ck_assert_uint_eq(CF.m->generation, gen);
    ck_assert_int_eq(be("blue-1")->weight, 100);
    ck_assert_uint_eq(ctl_audit_count(), records + 1);
    assert_last_refusal("set weight api/blue-1 lots", result);

    /* A show is not audited; an unknown command is. */
    cl_puts(c, "show pools\nfrobnicate\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 1), "pool  backend"));
    snprintf(result, sizeof(result), "%.*s", (int)strcspn(reply(c, 2), "\n"), reply(c, 2));
    ck_assert_msg(strncmp(result, "ERR ", 4) == 0, "%s", result);
    ck_assert_uint_eq(ctl_audit_count(), records + 2);
    assert_last_refusal("frobnicate", result);
    cl_close(c);
    down();
}
END_TEST

static bool blue_drained(void *arg)
{
    return be(arg)->drained;
}

static bool draining(void *arg)
{
    return be(arg)->admin == ADMIN_DRAIN;
}

/*
 * drain --wait with a request in flight answers when the backend is
 * DRAINED; the lines behind it wait for it, so replies stay in order.
 */
START_TEST(test_waiting_command_holds_later_lines)
{
    struct client *c;

    up();
    backend_wstat_add(&be("blue-1")->be->ws[0].active, 1);
    c = cl_connect();
    cl_puts(c, "show pools\ndrain api/blue-1 --wait --timeout 20s\nshow pool api\n");
    ck_assert_ptr_nonnull(strstr(reply(c, 0), "pool  backend"));
    ck_assert(draining("blue-1"));
    /* Nothing else yet: the drain waits, the show behind it too. */
    event_base_loop(CF.base, EVLOOP_NONBLOCK);
    cl_read(c);
    ck_assert_uint_eq(nreplies(c), 1);
    ck_assert(!c->eof);

    /* The request ends: DRAINED, the drain's OK, then the show. */
    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].active);
    ck_assert_msg(strncmp(reply(c, 1), "OK gen=", 7) == 0, "%s", reply(c, 1));
    /* The requests it had when the drain began, and how long they took to end. */
    ck_assert_msg(strstr(reply(c, 1), " active=1 drained_ms=") != NULL, "%s", reply(c, 1));
    ck_assert_ptr_nonnull(strstr(reply(c, 2), "blue-1   127.0.0.1:1  blue   DRAINED"));
    ck_assert(blue_drained("blue-1"));
    cl_close(c);
    down();
}
END_TEST

/*
 * A half-close behind a command that waits: veer still answers it, and the
 * line after it (sent without its newline), when the drain ends, then
 * closes.
 */
START_TEST(test_half_close_behind_a_waiting_command)
{
    struct client *c;

    up();
    backend_wstat_add(&be("blue-1")->be->ws[0].active, 1);
    c = cl_connect();
    cl_puts(c, "drain api/blue-1 --wait\nshow pool api");
    ck_assert_int_eq(shutdown(c->fd, SHUT_WR), 0);
    ck_assert(wait_for(draining, "blue-1"));
    event_base_loop(CF.base, EVLOOP_NONBLOCK);
    cl_read(c);
    ck_assert_msg(c->len == 0 && !c->eof, "before the drain ended: [%s]%s", c->in,
                  c->eof ? " (closed)" : "");

    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].active);
    ck_assert_msg(wait_for(closed, c), "not closed after the answers: [%s]", c->in);
    ck_assert_uint_eq(nreplies(c), 2);
    ck_assert_msg(strncmp(reply(c, 0), "OK gen=", 7) == 0, "%s", reply(c, 0));
    ck_assert_ptr_nonnull(strstr(reply(c, 1), "blue-1   127.0.0.1:1  blue   DRAINED"));
    cl_close(c);
    down();
}
END_TEST

/*
 * A client waiting for its answer is not idle: with idle_ms 300, a drain
 * --wait answered after three times that still reaches a client that sent
 * nothing meanwhile. Once answered, a silent client is closed after
 * idle_ms again.
 */
START_TEST(test_waiting_client_is_not_idle)
{
    struct client *c;
    struct want w;

    up();
    CF.c->timeouts.idle_ms = 300; /* read at accept */
    backend_wstat_add(&be("blue-1")->be->ws[0].active, 1);
    c = cl_connect();
    cl_puts(c, "drain api/blue-1 --wait --timeout 20s\n");
    ck_assert(wait_for(draining, "blue-1"));

    /* Silent past the idle timeout (3 x 300 ms): still waiting, still open. */
    w = (struct want){c, 1};
    ck_assert_msg(!ctl_wait(has_replies, &w, 900), "%s while its command was in flight: [%s]",
                  c->eof ? "closed" : "answered", c->in);

    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].active);
    ck_assert_msg(strncmp(reply(c, 0), "OK gen=", 7) == 0, "%s", reply(c, 0));
    ck_assert_ptr_nonnull(strstr(reply(c, 0), " drained_ms="));

    /* Nothing in flight now: silence is idleness again. */
    ck_assert_msg(wait_for(closed, c), "a silent client with nothing in flight stays open");
    ck_assert_uint_eq(nreplies(c), 1);
    cl_close(c);
    down();
}
END_TEST

/*
 * A client that leaves with a command in flight: after a close (the server
 * reads EOF: it still owes the answer) and after a reset (the client closed
 * with a reply unread: the server drops the connection and cancels the
 * command). Neither crashes anything nor leaks (ASan); both drains end
 * DRAINED (green-1's: blue keeps blue-2 for its share); the next client is
 * served.
 */
START_TEST(test_client_leaves_with_command_in_flight)
{
    struct client *a, *b;
    unsigned base_fds;

    up();
    base_fds = nfds();
    backend_wstat_add(&be("blue-1")->be->ws[0].active, 1);
    backend_wstat_add(&be("green-1")->be->ws[0].active, 1);

    /* A close. */
    a = cl_connect();
    cl_puts(a, "drain api/blue-1 --wait\n");
    ck_assert(wait_for(draining, "blue-1"));
    cl_close(a);
    b = cl_connect();
    cl_puts(b, "show pool api\n");
    ck_assert_ptr_nonnull(strstr(reply(b, 0), "blue-1   127.0.0.1:1  blue   DRAINING"));
    report_backend_drop(0, be("blue-1")->be, &be("blue-1")->be->ws[0].active);
    ck_assert(wait_for(blue_drained, "blue-1"));
    cl_close(b);
    ck_assert_msg(wait_for(nfds_at, &base_fds), "connections left open: %u descriptors, want %u",
                  nfds(), base_fds);

    /* A reset: the client goes with a reply unread, its drain still in flight. */
    a = cl_connect();
    cl_puts(a, "show pools\ndrain api/green-1 --wait\n");
    ck_assert(wait_for(draining, "green-1"));
    ck_assert_msg(wait_for(unread_reply, a), "no reply to show pools");
    cl_close(a); /* with the reply unread: the server's end is reset */
    ck_assert_msg(wait_for(nfds_at, &base_fds), "the server kept the connection: %u, want %u",
                  nfds(), base_fds);
    report_backend_drop(0, be("green-1")->be, &be("green-1")->be->ws[0].active);
    ck_assert(wait_for(blue_drained, "green-1"));

    b = cl_connect();
    cl_puts(b, "show pool api\n");
    ck_assert_ptr_nonnull(strstr(reply(b, 0), "green-1  127.0.0.1:3  green  DRAINED"));
    cl_close(b);
    down();
}
END_TEST

static Suite *admin_suite(void)
{
    Suite *s = suite_create("admin");
    TCase *tc = tcase_create("admin");

    tcase_add_test(tc, test_socket_mode_and_directory);
    tcase_add_test(tc, test_start_refusals);
    tcase_add_test(tc, test_owner_and_group);
    tcase_add_test(tc, test_commands_answered_in_order);
    tcase_add_test(tc, test_slow_reader_gets_every_reply_in_order);
    tcase_add_test(tc, test_half_close_answers_every_line_then_closes);
    tcase_add_test(tc, test_half_close_behind_a_waiting_command);
    tcase_add_test(tc, test_line_too_long_refused);
    tcase_add_test(tc, test_line_too_long_in_two_reads);
    tcase_add_test(tc, test_line_over_input_cap_closes);
    tcase_add_test(tc, test_malformed_command_refused_and_audited);
    tcase_add_test(tc, test_waiting_command_holds_later_lines);
    tcase_add_test(tc, test_waiting_client_is_not_idle);
    tcase_add_test(tc, test_client_leaves_with_command_in_flight);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(admin_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
