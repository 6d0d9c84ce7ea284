#include "notif_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nbuf_init(nbuf *b) { memset(b, 0, sizeof *b); }

void nbuf_free(nbuf *b)
{
	free(b->p);
	nbuf_init(b);
}

static int nbuf_reserve(nbuf *b, size_t extra)
{
	size_t want, cap;
	char *p;

	if (b->oom)
		return -1;
	if (extra > (size_t)-1 / 2 - b->len) {
		b->oom = 1;
		return -1;
	}
	want = b->len + extra + 1;
	if (want <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < want)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void nbuf_add(nbuf *b, const void *s, size_t n)
{
	if (nbuf_reserve(b, n) < 0)
		return;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void nbuf_adds(nbuf *b, const char *s) { nbuf_add(b, s, strlen(s)); }

void nbuf_addc(nbuf *b, char c) { nbuf_add(b, &c, 1); }

void nbuf_addf(nbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = 1;
		return;
	}
	if (nbuf_reserve(b, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

char *nbuf_take(nbuf *b, size_t *len)
{
	char *p;

	if (b->oom) {
		nbuf_free(b);
		return NULL;
	}
	if (!b->p)
		nbuf_add(b, "", 0);
	if (b->oom) {
		nbuf_free(b);
		return NULL;
	}
	p = b->p;
	if (len)
		*len = b->len;
	nbuf_init(b);
	return p;
}
