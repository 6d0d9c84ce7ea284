/* A growing NUL-terminated text buffer for building responses and request
 * bodies (metrics exposition, OTLP JSON). An allocation failure is
 * remembered (oom) and every later append does nothing, so a builder checks
 * once at the end. */
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
#endif
