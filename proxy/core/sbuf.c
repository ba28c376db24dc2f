/*
 * sbuf.c - growable strings. See sbuf.h.
 */
#include "sbuf.h"
#include "veer.h"

#include <stdarg.h>
#include <string.h>

void sb_init(struct sbuf *b)
{
    b->s = NULL;
    b->len = b->cap = 0;
}

void sb_free(struct sbuf *b)
{
    free(b->s);
    sb_init(b);
}

void sb_reset(struct sbuf *b)
{
    b->len = 0;
    if (b->s)
        b->s[0] = '\0';
}

char *sb_steal(struct sbuf *b)
{
    char *s = b->s ? b->s : veer_strdup("");

    sb_init(b);
    return s;
}

static void grow(struct sbuf *b, size_t more)
{
    size_t need = b->len + more + 1;

    if (need <= b->cap)
        return;
    if (b->cap == 0)
        b->cap = 128;
    while (b->cap < need)
        b->cap *= 2;
    b->s = veer_realloc(b->s, b->cap);
}

void sb_add(struct sbuf *b, const char *p, size_t n)
{
    grow(b, n);
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void sb_puts(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* s as a JSON string; with latin1, bytes from 0x80 as \u00XX too (valid UTF-8 whatever s is). */
static void json_str(struct sbuf *b, const char *s, bool latin1)
{
    static const char hex[] = "0123456789abcdef";

    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c == '"' || c == '\\') {
            sb_add(b, "\\", 1);
            sb_add(b, (const char *)&c, 1);
        } else if (c == '\n') {
            sb_add(b, "\\n", 2);
        } else if (c == '\t') {
            sb_add(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f || (latin1 && c > 0x7f)) {
            sb_add(b, esc, 6);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_add(b, "\"", 1);
}

void sb_json_str(struct sbuf *b, const char *s)
{
    json_str(b, s, false);
}

void sb_json_latin1(struct sbuf *b, const char *s)
{
    json_str(b, s, true);
}
