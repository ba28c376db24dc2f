/*
 * admin.c - admin socket server: line framing, peer credentials, replies,
 * backpressure. Commands are parsed by cmd.c and run by control.c.
 */
#include "admin.h"
#include "cmd.h"
#include "control.h"
#include "inherit.h"
#include "veer.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Stop taking commands from a client that leaves this much reply unread. */
#define ADMIN_OUT_HIGH (1024 * 1024)

/*
 * The most input held for one connection: lines waiting behind a pending
 * command (drain --wait) stay in the socket beyond this, not in veer's
 * memory. Above CMD_LINE_MAX: a longer line whose end comes within it is
 * refused like any bad line, however the reads split it; one whose end
 * does not come within it is refused too, and the connection closed.
 */
#define ADMIN_IN_HIGH (4 * CMD_LINE_MAX)

struct admin_conn {
    struct bufferevent *bev;
    struct audit_peer peer;
    struct ctl_req *pending; /* command in flight; later lines wait */
    bool eof;                /* the client half-closed: answer what came, then close */
    bool closing;            /* close once the output is flushed */
    bool in_process;
    bool waiting; /* a command answers later: no read timeout meanwhile */
    struct admin_conn *next, *prev;
};

/* The answer to every command once an upgrade handed over (see admin_handover). */
#define REPLY_UPGRADING "ERR upgrading, retry\n\n"

static struct {
    struct evconnlistener *listener;
    struct admin_conn *conns;
    const struct veer_conf *conf;
    bool handed_over; /* an upgrade: the new process serves; this one answers REPLY_UPGRADING */
} adm;

static void process_lines(struct admin_conn *c);

static void conn_free(struct admin_conn *c)
{
    if (c->pending)
        control_cancel(c->pending);
    if (c->prev)
        c->prev->next = c->next;
    else
        adm.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    free(c);
}

/* Close when everything is written, or now when nothing is pending. */
static void conn_finish(struct admin_conn *c)
{
    c->closing = true;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_free(c);
}

/*
 * The idle timeout (timeouts.idle_ms) of a connection. A client waiting for
 * the answer to a command in flight (drain --wait, replace) is not idle:
 * reads time out only while it waits for nothing, however long the command
 * takes.
 */
static void set_idle(struct admin_conn *c, bool waiting)
{
    struct timeval idle = {adm.conf->timeouts.idle_ms / 1000,
                           (adm.conf->timeouts.idle_ms % 1000) * 1000};

    c->waiting = waiting;
    bufferevent_set_timeouts(c->bev, waiting ? NULL : &idle, &idle);
}

static void reply_cb(struct ctl_req *r, const char *reply, bool ok)
{
    struct admin_conn *c = r->arg;

    bufferevent_write(c->bev, reply, strlen(reply));
    c->pending = NULL;
    if (c->waiting)
        set_idle(c, false);
    if (!c->in_process)
        process_lines(c); /* an answer that came later: go on with queued lines */
}

/* A progress line of a long command (replace), sent at once. */
static void progress_cb(struct ctl_req *r, const char *line)
{
    struct admin_conn *c = r->arg;

    bufferevent_write(c->bev, line, strlen(line));
    bufferevent_write(c->bev, "\n", 1);
}

static void run_line(struct admin_conn *c, char *line, size_t len)
{
    struct ctl_req *r;
    char err[256];

    if (len && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0)
        return; /* blank lines are not commands */
    if (adm.handed_over) {
        bufferevent_write(c->bev, REPLY_UPGRADING, strlen(REPLY_UPGRADING));
        return;
    }
    r = veer_calloc(1, sizeof(*r));
    snprintf(r->line, sizeof(r->line), "%s", line);
    r->peer = c->peer;
    r->t_read_us = veer_now_us();
    r->done = reply_cb;
    r->progress = progress_cb;
    r->arg = c;
    c->pending = r;
    if (len > CMD_LINE_MAX) {
        control_refuse(r, "line too long");
        return;
    }
    if (cmd_parse(line, &r->cmd, err, sizeof(err)) < 0) {
        control_refuse(r, err);
        return;
    }
    control_execute(r);
    if (c->pending)
        set_idle(c, true); /* answered later */
}

/*
 * Run complete lines one at a time: a command that answers later (a shift
 * warming connections) holds the lines behind it, so replies stay in order.
 */
static void process_lines(struct admin_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);

    c->in_process = true;
    while (c->pending == NULL && !c->closing) {
        size_t len;
        char *line;

        if (evbuffer_get_length(out) > ADMIN_OUT_HIGH) {
            bufferevent_disable(c->bev, EV_READ); /* resumed from write_cb */
            break;
        }
        line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (line == NULL) {
            size_t left = evbuffer_get_length(in);

            if (left >= ADMIN_IN_HIGH) {
                /*
                 * No end of line within what we hold: refused (and audited) like any
                 * line too long, then hang up: framing is lost.
                 */
                line = veer_malloc(left + 1);
                evbuffer_remove(in, line, left);
                line[left] = '\0';
                run_line(c, line, left);
                free(line);
                c->in_process = false;
                conn_finish(c);
                return;
            }
            if (!c->eof || left == 0)
                break;
            /* The client half-closed after a last line without its newline. */
            line = veer_malloc(left + 1);
            evbuffer_remove(in, line, left);
            line[left] = '\0';
            len = left;
        }
        run_line(c, line, len);
        free(line);
    }
    c->in_process = false;
    if (c->pending == NULL && c->eof && !c->closing &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        conn_finish(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    process_lines(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;

    if (c->closing) {
        conn_free(c);
        return;
    }
    if (!c->eof)
        bufferevent_enable(bev, EV_READ);
    process_lines(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct admin_conn *c = arg;

    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
        c->eof = true;
        bufferevent_disable(bev, EV_READ);
        process_lines(c);
        return;
    }
    conn_free(c); /* reset, error or idle timeout */
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct event_base *base = evconnlistener_get_base(l);
    struct admin_conn *c = veer_calloc(1, sizeof(*c));
    struct ucred cred;
    socklen_t cl = sizeof(cred);

    c->peer = (struct audit_peer){-1, -1, -1};
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
        c->peer = (struct audit_peer){(int)cred.uid, (int)cred.gid, (int)cred.pid};
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    set_idle(c, false);
    /* libevent stops reading at the mark and resumes once lines are taken off. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, ADMIN_IN_HIGH);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = adm.conns;
    if (adm.conns)
        adm.conns->prev = c;
    adm.conns = c;
}

/* The socket's directory must exist (created 0750 if missing) and not be world-writable. */
static int check_dir(const char *path)
{
    char *copy = veer_strdup(path), *dir = dirname(copy);
    struct stat st;
    int rc = VEER_ERROR;

    if (stat(dir, &st) < 0 && errno == ENOENT && mkdir(dir, 0750) < 0 && errno != EEXIST) {
        log_err("admin socket: cannot create directory %s: %s", dir, strerror(errno));
    } else if (stat(dir, &st) < 0) {
        log_err("admin socket: %s: %s", dir, strerror(errno));
    } else if (st.st_mode & S_IWOTH) {
        log_err("admin socket: directory %s is world-writable; refusing to create %s there", dir,
                path);
    } else {
        rc = VEER_OK;
    }
    free(copy);
    return rc;
}

/* An existing path: a stale socket is removed; a live one or a non-socket is an error. */
static int clear_path(const struct sockaddr_un *sa)
{
    struct stat st;
    int fd;

    if (lstat(sa->sun_path, &st) < 0)
        return errno == ENOENT ? VEER_OK : VEER_ERROR;
    if (!S_ISSOCK(st.st_mode)) {
        log_err("admin socket: %s exists and is not a socket", sa->sun_path);
        return VEER_ERROR;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
        close(fd);
        log_err("admin socket: %s is in use by another process", sa->sun_path);
        return VEER_ERROR;
    }
    if (fd >= 0)
        close(fd);
    unlink(sa->sun_path);
    return VEER_OK;
}

static int set_owner(const char *path, const struct conf_admin *a)
{
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;

    if (a->owner) {
        struct passwd *pw = getpwnam(a->owner);

        if (pw == NULL) {
            log_err("admin socket: unknown user %s (admin.owner)", a->owner);
            return VEER_ERROR;
        }
        uid = pw->pw_uid;
    }
    if (a->group) {
        struct group *gr = getgrnam(a->group);

        if (gr == NULL) {
            log_err("admin socket: unknown group %s (admin.group)", a->group);
            return VEER_ERROR;
        }
        gid = gr->gr_gid;
    }
    if ((a->owner || a->group) && chown(path, uid, gid) < 0) {
        log_err("admin socket: chown %s: %s", path, strerror(errno));
        return VEER_ERROR;
    }
    return VEER_OK;
}

int admin_listen_fd(void)
{
    return adm.listener ? (int)evconnlistener_get_fd(adm.listener) : -1;
}

int admin_start(struct event_base *base, const struct veer_conf *conf)
{
    const struct conf_admin *a = &conf->admin;
    struct sockaddr_un sa;
    mode_t old;
    int fd, rc;

    adm.conf = conf;
    fd = inherit_admin();
    if (fd >= 0) {
        /* An upgrade: the old process's socket, same path, never unlinked. */
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        adm.listener = evconnlistener_new(base, accept_cb, NULL,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
        if (adm.listener == NULL)
            return VEER_ERROR;
        log_info("admin socket %s (inherited)", a->socket);
        return VEER_OK;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", a->socket);
    if (check_dir(a->socket) < 0 || clear_path(&sa) < 0)
        return VEER_ERROR;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_err("admin socket: socket: %s", strerror(errno));
        return VEER_ERROR;
    }
    old = umask(0177); /* nobody else can connect before the chmod */
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || chmod(a->socket, (mode_t)a->mode) < 0 || set_owner(a->socket, a) < 0 ||
        listen(fd, 64) < 0) {
        log_err("admin socket %s: %s", a->socket, strerror(errno));
        close(fd);
        return VEER_ERROR;
    }
    adm.listener = evconnlistener_new(base, accept_cb, NULL,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (adm.listener == NULL) {
        close(fd);
        return VEER_ERROR;
    }
    log_info("admin socket %s (mode %04o)", a->socket, a->mode);
    return VEER_OK;
}

void admin_pause(void)
{
    if (adm.listener)
        evconnlistener_disable(adm.listener);
}

void admin_resume(void)
{
    if (adm.listener)
        evconnlistener_enable(adm.listener);
}

void admin_handover(void)
{
    struct admin_conn *c, *next;

    adm.handed_over = true;
    /* Only this process's copy closes: the new one listens on its own. */
    if (adm.listener)
        evconnlistener_free(adm.listener);
    adm.listener = NULL;
    for (c = adm.conns; c; c = next) {
        next = c->next;
        if (c->pending) {
            /* drain --wait: the drain itself was saved; its end is the new process's to see. */
            control_cancel(c->pending);
            c->pending = NULL;
            set_idle(c, false);
            bufferevent_write(c->bev, REPLY_UPGRADING, strlen(REPLY_UPGRADING));
        }
        if (!c->in_process)
            process_lines(c); /* lines already received: answered the same way */
    }
}

void admin_stop(void)
{
    if (adm.listener)
        evconnlistener_free(adm.listener);
    adm.listener = NULL;
    while (adm.conns)
        conn_free(adm.conns);
}
