/* Diagnostics: collected "file:line: message" lines. */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static char *diag_vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *diag_vformat(const char *fmt, va_list ap)
{
	va_list ap2;
	char *buf;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		n = 0;
	buf = malloc((size_t)n + 1);
	if (!buf)
		return NULL;
	vsnprintf(buf, (size_t)n + 1, fmt, ap);
	return buf;
}

static char *diag_prefix(const char *file, int line, const char *msg)
{
	size_t len;
	char *out;

	if (!file)
		return strdup(msg);
	len = strlen(file) + strlen(msg) + 32;
	out = malloc(len);
	if (!out)
		return NULL;
	if (line > 0)
		snprintf(out, len, "%s:%d: %s", file, line, msg);
	else
		snprintf(out, len, "%s: %s", file, msg);
	return out;
}

void diag_add(diag *d, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	char *msg, *full;

	va_start(ap, fmt);
	msg = diag_vformat(fmt, ap);
	va_end(ap);
	full = msg ? diag_prefix(file, line, msg) : NULL;
	free(msg);
	if (full && d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 8;
		char **v = realloc(d->msgs, cap * sizeof *v);
		if (v) {
			d->msgs = v;
			d->cap = cap;
		} else {
			free(full);
			full = NULL;
		}
	}
	if (full)
		d->msgs[d->n++] = full;
	else
		d->lost++;
}

void diag_truncate(diag *d, size_t n)
{
	while (d->n > n)
		free(d->msgs[--d->n]);
}

void diag_print(const diag *d, FILE *out) { diag_print_as(d, out, ""); }

void diag_print_as(const diag *d, FILE *out, const char *prefix)
{
	for (size_t i = 0; i < d->n; i++) {
		fputs(prefix, out);
		fputs(d->msgs[i], out);
		fputc('\n', out);
	}
	if (d->lost)
		fprintf(out, "%s(%zu more problem%s not recorded: out of memory)\n", prefix, d->lost,
		        d->lost == 1 ? "" : "s");
	fflush(out);
}

void diag_free(diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->msgs[i]);
	free(d->msgs);
	d->msgs = NULL;
	d->n = d->cap = d->lost = 0;
}
