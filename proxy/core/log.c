/*
 * log.c - the error log: one line per message on stderr, with a UTC time,
 * a level and the message, written with a single write(2) so lines from
 * different threads never interleave. Also the allocation wrappers and the
 * monotonic clock every subsystem uses.
 */
#include "veer.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n, m;
    int saved = errno;

    if (level > log_threshold)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%d] %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                 (int)getpid(), level_names[level]);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* Nowhere left to report it. */
    }
    errno = saved;
}

void veer_panic(const char *file, int line, const char *what)
{
    log_err("panic at %s:%d: %s", file, line, what);
    abort();
}

void *veer_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        veer_panic(__FILE__, __LINE__, "out of memory");
    return p;
}

void *veer_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        veer_panic(__FILE__, __LINE__, "out of memory");
    return p;
}

void *veer_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        veer_panic(__FILE__, __LINE__, "out of memory");
    return q;
}

char *veer_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = veer_malloc(n);

    memcpy(p, s, n);
    return p;
}

uint64_t veer_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
