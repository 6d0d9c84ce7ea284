/* A growing NUL-terminated text buffer for building responses and request
 * bodies (metrics exposition, OTLP JSON). An allocation failure is
 * remembered (oom) and every later append does nothing, so a builder checks
 * once at the end. Also tb_dup, a terminated copy of bytes received as text. */
#ifndef EVHOST_TEXTBUF_H
#define EVHOST_TEXTBUF_H
#include <stddef.h>

typedef struct textbuf {
	char *p; /* NULL until the first append; malloc'd */
	size_t n, cap;
	int oom;
} textbuf;

void tb_put(textbuf *b, const char *s, size_t n);
void tb_puts(textbuf *b, const char *s);
/* For numbers and other short text only: at most 255 bytes are appended. */
void tb_printf(textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A malloc'd copy of the n bytes at p with a NUL after them (a Kafka key,
 * payload or header value as text); NULL when out of memory. */
char *tb_dup(const void *p, size_t n);
#endif
