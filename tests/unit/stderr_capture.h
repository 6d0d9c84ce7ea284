/* Capturing what code under test writes to stderr (the log), for unit
 * tests: stderr_begin redirects it to an unnamed temporary file (tmpfile) until
 * stderr_end, which restores it and returns what was written (malloc'd).
 * Include after <cmocka.h>. */
#ifndef EVHOST_TEST_STDERR_CAPTURE_H
#define EVHOST_TEST_STDERR_CAPTURE_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct stderr_capture {
	FILE *file;
	int saved;
} stderr_capture;

static inline stderr_capture stderr_begin(void)
{
	stderr_capture c = {tmpfile(), dup(STDERR_FILENO)};
	assert_true(c.file != NULL && c.saved >= 0);
	fflush(stderr);
	dup2(fileno(c.file), STDERR_FILENO);
	return c;
}

/* What was written so far, capturing on (malloc'd). */
static inline char *stderr_peek(stderr_capture c)
{
	off_t len;
	char *out;
	fflush(stderr);
	len = lseek(fileno(c.file), 0, SEEK_END);
	assert_true(len >= 0);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(fileno(c.file), out, (size_t)len, 0), len);
	return out;
}

/* Waits up to `ms` for `needle` in what was written so far: 1 once seen. */
static inline int stderr_wait_for(stderr_capture c, const char *needle, int ms)
{
	for (int waited = 0;; waited += 50) {
		char *now = stderr_peek(c);
		int seen = strstr(now, needle) != NULL;
		free(now);
		if (seen || waited >= ms)
			return seen;
		usleep(50 * 1000);
	}
}

static inline char *stderr_end(stderr_capture c)
{
	char *out;
	fflush(stderr);
	dup2(c.saved, STDERR_FILENO);
	close(c.saved);
	out = stderr_peek(c);
	fclose(c.file);
	return out;
}
#endif
