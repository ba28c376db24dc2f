/*
 * sbuf.h - a growable string for the control thread: admin replies, JSON,
 * audit records, the state file. Never on the request path.
 */
#ifndef VEER_SBUF_H
#define VEER_SBUF_H

#include <stddef.h>

struct sbuf {
    char *s; /* always NUL-terminated (empty string when len is 0) */
    size_t len;
    size_t cap;
};

void sb_init(struct sbuf *b);
void sb_free(struct sbuf *b);
void sb_reset(struct sbuf *b);

/* Hand the string to the caller (free() it); b is empty afterwards. */
char *sb_steal(struct sbuf *b);

void sb_add(struct sbuf *b, const char *p, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append s as a JSON string literal, quotes included, escaped per RFC 8259. */
void sb_json_str(struct sbuf *b, const char *s);

/*
 * The same, with every byte from 0x80 written as \u00XX, its ISO-8859-1
 * reading (RFC 9110 5.5: a field value may carry such bytes, cut anywhere):
 * the literal is valid UTF-8 whatever s holds. No byte is lost.
 */
void sb_json_latin1(struct sbuf *b, const char *s);

#endif
