/*
 * veer.h - common types, return codes, logging and debug checks shared by
 * every subsystem of the daemon. Its functions are defined in log.c.
 */
#ifndef VEER_H
#define VEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define VEER_VERSION "0.1.0"

/* Return codes, in the spirit of nginx's NGX_OK/NGX_ERROR/... */
enum {
    VEER_OK = 0,
    VEER_ERROR = -1,
    VEER_AGAIN = -2,
    VEER_DECLINED = -3,
    VEER_DONE = -4,
};

/* log.c: the error log, panics, allocation, the clock */

enum log_level {
    LOG_ERR = 0,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
};

/* Current threshold; messages above it are dropped before formatting. */
extern enum log_level log_threshold;

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)  log_write(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_threshold >= LOG_DEBUG)                                                            \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

/*
 * Objects whose lifetime crosses callbacks carry a magic number, checked in
 * debug builds (Varnish's CHECK_OBJ_NOTNULL): a use-after-free or a pointer
 * of the wrong type fails loudly instead of corrupting state.
 */
#ifdef NDEBUG
#define CHECK_OBJ(ptr, m) ((void)(ptr))
#else
#define CHECK_OBJ(ptr, m)                                                                          \
    do {                                                                                           \
        if ((ptr) == NULL || (ptr)->magic != (m))                                                  \
            veer_panic(__FILE__, __LINE__, #ptr " has bad magic");                                 \
    } while (0)
#endif

void veer_panic(const char *file, int line, const char *what) __attribute__((noreturn));

/* Allocation that never returns NULL: running out of memory aborts. */
#define VEER_ALLOC __attribute__((returns_nonnull, warn_unused_result))
void *veer_malloc(size_t n) VEER_ALLOC;
void *veer_calloc(size_t n, size_t size) VEER_ALLOC;
void *veer_realloc(void *p, size_t n) VEER_ALLOC;
char *veer_strdup(const char *s) VEER_ALLOC;

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Monotonic clock in microseconds. */
uint64_t veer_now_us(void);

/*
 * FNV-1a, 64 bits: a stable hash of a key whose point must not move between
 * requests, workers or processes (sticky cohorts, mirror sampling).
 */
static inline uint64_t veer_fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
