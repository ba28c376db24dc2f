/*
 * veerctl.c - admin client: joins its arguments into one command line,
 * sends it to veer's admin socket, prints the reply (which ends with an
 * empty line) and exits 0 on success or data, 1 on "ERR", 2 when it cannot
 * connect.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/veer/admin.sock"

static void usage(FILE *out)
{
    fprintf(out, "usage: veerctl [-s SOCKET] COMMAND [ARGS...]\n"
                 "  -s SOCKET  admin socket (default $VEER_SOCKET or " DEFAULT_SOCKET ")\n"
                 "  veerctl top: a live view of traffic per backend (refreshes every second)\n"
                 "  try: veerctl help\n");
}

static int connect_socket(const char *path)
{
    struct sockaddr_un sa;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "veerctl: socket path too long: %s\n", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "veerctl: socket: %s\n", strerror(errno));
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "veerctl: cannot connect to %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * veerctl top: `show stats` once a second, drawn over the previous frame,
 * until interrupted. Exits 2 when veer cannot be reached.
 */
static int top(const char *path)
{
    for (;;) {
        char buf[65536];
        int fd = connect_socket(path);
        size_t total = 0;
        ssize_t n;
        time_t now = time(NULL);

        if (fd < 0)
            return 2;
        if (write_all(fd, "show stats\n", 11) < 0) {
            close(fd);
            return 2;
        }
        shutdown(fd, SHUT_WR);
        while (total < sizeof(buf) - 1 && (n = read(fd, buf + total, sizeof(buf) - 1 - total)) > 0)
            total += (size_t)n;
        close(fd);
        buf[total] = '\0';
        printf("\033[H\033[2Jveer top - %s - %s (Ctrl-C to quit)\n\n%s", path, ctime(&now), buf);
        fflush(stdout);
        sleep(1);
    }
}

int main(int argc, char **argv)
{
    const char *path = getenv("VEER_SOCKET");
    char *line = NULL, buf[65536], last[8] = "";
    size_t len = 0, total = 0, col = 0;
    int i = 1, fd, rc = 0;
    ssize_t n;

    if (path == NULL || *path == '\0')
        path = DEFAULT_SOCKET;
    if (argc > 2 && strcmp(argv[1], "-s") == 0) {
        path = argv[2];
        i = 3;
    } else if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[i], "top") == 0 && i + 1 == argc)
        return top(path);
    for (int j = i; j < argc; j++)
        len += strlen(argv[j]) + 1;
    line = malloc(len + 1);
    if (line == NULL)
        return 2;
    line[0] = '\0';
    for (int j = i; j < argc; j++) {
        if (strchr(argv[j], '\n')) {
            fprintf(stderr, "veerctl: arguments must not contain newlines\n");
            free(line);
            return 2;
        }
        strcat(line, argv[j]);
        strcat(line, j + 1 < argc ? " " : "\n");
    }
    fd = connect_socket(path);
    if (fd < 0) {
        free(line);
        return 2;
    }
    if (write_all(fd, line, strlen(line)) < 0) {
        fprintf(stderr, "veerctl: write: %s\n", strerror(errno));
        close(fd);
        free(line);
        return 2;
    }
    free(line);
    shutdown(fd, SHUT_WR);
    /* The reply ends with an empty line; veer closes after answering. */
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "veerctl: read: %s\n", strerror(errno));
            close(fd);
            return 2;
        }
        /* The status is the last non-empty line (progress lines may come first). */
        for (ssize_t k = 0; k < n; k++) {
            if (buf[k] == '\n') {
                if (col)
                    rc = strncmp(last, "ERR", 3) == 0;
                col = 0;
            } else if (col < sizeof(last) - 1) {
                last[col++] = buf[k];
                last[col] = '\0';
            }
        }
        total += (size_t)n;
        if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
            break;
    }
    close(fd);
    if (total == 0) {
        fprintf(stderr, "veerctl: veer closed the connection without a reply\n");
        return 2;
    }
    return rc;
}
