/*
 * verify.c - `audit verify`: the audit log's chain checked on a thread of
 * its own, the reply written from the control thread.
 */
#include "control-i.h"
#include "audit.h"
#include "veer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/*
 * audit verify runs on a thread of its own, one at a time (others wait in
 * order): a big log takes as long as reading it, and the control thread
 * must go on answering, checking health and publishing meanwhile. The
 * thread reads at most the file's size at the time of the command (the
 * live log's size as the control thread knew it, with the chain's ends it
 * holds), never a FIFO or a device (audit_verify_ex). It tells the
 * control thread through an eventfd; the reply is written from there.
 */
struct verify_job {
    struct ctl_req *r;
    char path[sizeof(((struct cmd *)0)->file) + 1024];
    struct audit_live live;
    bool has_live;
    atomic_bool cancel;
    int rc;
    char msg[512];
    int efd;
    struct event *ev;
    pthread_t tid;
    struct verify_job *next;
};

static struct {
    struct verify_job *running, *head, *tail;
} vq;

static void verify_start_next(void);

static void *verify_main(void *arg)
{
    struct verify_job *j = arg;
    uint64_t one = 1;

    j->rc =
        audit_verify_ex(j->path, j->has_live ? &j->live : NULL, &j->cancel, j->msg, sizeof(j->msg));
    if (write(j->efd, &one, sizeof(one)) < 0)
        log_warn("audit verify: eventfd write: %s", strerror(errno));
    return NULL;
}

/* The thread is done (or cancelled): answer and free the job. */
static void verify_end(struct verify_job *j, const char *override)
{
    char line[600];

    pthread_join(j->tid, NULL);
    event_free(j->ev);
    close(j->efd);
    if (override)
        snprintf(line, sizeof(line), "%s", override);
    else
        snprintf(line, sizeof(line), "%s %s", j->rc == 0 ? "OK" : "ERR", j->msg);
    ctl_finish(j->r, line, j->rc == 0 && !override);
    free(j);
}

static void verify_done_cb(evutil_socket_t fd, short what, void *arg)
{
    vq.running = NULL;
    verify_end(arg, NULL);
    verify_start_next();
}

static void verify_start_next(void)
{
    while (vq.running == NULL && vq.head) {
        struct verify_job *j = vq.head;

        vq.head = j->next;
        if (vq.head == NULL)
            vq.tail = NULL;
        j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (j->efd < 0 || pthread_create(&j->tid, NULL, verify_main, j) != 0) {
            log_err("audit verify: cannot start its thread: %s", strerror(errno));
            if (j->efd >= 0)
                close(j->efd);
            ctl_finish(j->r, "ERR audit verify: cannot start its thread", false);
            free(j);
            continue;
        }
        j->ev = event_new(ctl.base, j->efd, EV_READ, verify_done_cb, j);
        event_add(j->ev, NULL);
        vq.running = j;
    }
}

void ctl_audit_verify(struct ctl_req *r)
{
    const char *path = r->cmd.file[0] ? r->cmd.file : ctl.conf->audit_log;
    struct verify_job *j;

    if (path == NULL) {
        ctl_finish(r, "ERR no audit log configured (audit_log) and no FILE given", false);
        return;
    }
    j = veer_calloc(1, sizeof(*j));
    j->r = r;
    snprintf(j->path, sizeof(j->path), "%s", path);
    j->has_live = audit_live(&j->live);
    atomic_init(&j->cancel, false);
    j->efd = -1;
    if (vq.tail)
        vq.tail->next = j;
    else
        vq.head = j;
    vq.tail = j;
    verify_start_next();
}

/* Shutdown: stop a running verify (it checks between reads) and drop the waiting ones. */
void ctl_audit_verify_shutdown(void)
{
    if (vq.running) {
        atomic_store(&vq.running->cancel, true);
        vq.running->r->done = NULL;
        verify_end(vq.running, "ERR shutting down");
        vq.running = NULL;
    }
    while (vq.head) {
        struct verify_job *j = vq.head;

        vq.head = j->next;
        j->r->done = NULL;
        ctl_finish(j->r, "ERR shutting down", false);
        free(j);
    }
    vq.tail = NULL;
}
