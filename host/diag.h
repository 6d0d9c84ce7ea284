/* Diagnostics: a list of "file:line: message" lines collected while
 * validating configuration or loading plugins, printed by the caller. */
#ifndef EVHOST_DIAG_H
#define EVHOST_DIAG_H
#include <stddef.h>
#include <stdio.h>

typedef struct diag {
	char **msgs;
	size_t n, cap;
} diag;

/* Append "file:line: message" (file NULL: just the message; line 0: "file: message"). */
void diag_add(diag *d, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void diag_print(const diag *d, FILE *out);
void diag_free(diag *d);
#endif
