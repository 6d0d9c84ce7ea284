/* Diagnostics: a list of "file:line: message" lines collected while
 * validating configuration or loading plugins, printed by the caller. */
#ifndef EVHOST_DIAG_H
#define EVHOST_DIAG_H
#include <stddef.h>
#include <stdio.h>

typedef struct diag {
	char **msgs;
	size_t n, cap;
	size_t lost; /* problems that could not be recorded, for want of memory */
} diag;

/* Append "file:line: message" (file NULL: just the message; line 0: "file: message").
 * Without the memory to record it, the problem is counted in `lost` instead:
 * it still counts (diag_count), so nothing passes for valid. */
void diag_add(diag *d, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* How many problems: those recorded and those lost. */
static inline size_t diag_count(const diag *d)
{
	return d->n + d->lost;
}
/* Drop the problems recorded after the first `n`. */
void diag_truncate(diag *d, size_t n);
/* The recorded problems one per line, then how many were lost if any. */
void diag_print(const diag *d, FILE *out);
/* The same, each line after `prefix` (a syslog priority, "<3>", on the
 * journal's stream: log_stderr_is_journal). */
void diag_print_as(const diag *d, FILE *out, const char *prefix);
void diag_free(diag *d);
#endif
