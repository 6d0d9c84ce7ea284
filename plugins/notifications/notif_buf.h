/* A growable byte buffer with a sticky out-of-memory flag, so builders can
 * append many pieces and check once at the end. SDK-free; not thread-safe
 * (one buffer belongs to one caller). */
#ifndef NOTIF_BUF_H
#define NOTIF_BUF_H
#include <stddef.h>

typedef struct nbuf {
	char *p;    /* always NUL-terminated once anything was added */
	size_t len; /* bytes used, excluding the NUL */
	size_t cap;
	int oom; /* set when an allocation failed; later appends are ignored */
} nbuf;

#if defined(__GNUC__)
#define NOTIF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define NOTIF_PRINTF(f, a)
#endif

void nbuf_init(nbuf *b);
void nbuf_free(nbuf *b);
void nbuf_add(nbuf *b, const void *s, size_t n);
void nbuf_adds(nbuf *b, const char *s);
void nbuf_addc(nbuf *b, char c);
void nbuf_addf(nbuf *b, const char *fmt, ...) NOTIF_PRINTF(2, 3);
/* Hand the contents (malloc'd, NUL-terminated) to the caller and reset `b`.
 * NULL when an allocation failed along the way (then `b` is freed). */
char *nbuf_take(nbuf *b, size_t *len);
#endif
