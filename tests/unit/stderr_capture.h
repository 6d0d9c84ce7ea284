/* Capturing what code under test writes to stderr (the log), for unit
 * tests: stderr_begin redirects it to an unnamed temporary file (tmpfile) until
 * stderr_end, which restores it and returns what was written (malloc'd).
 * Include after <cmocka.h>. */
#ifndef EVHOST_TEST_STDERR_CAPTURE_H
#define EVHOST_TEST_STDERR_CAPTURE_H
#include <stdio.h>
#include <stdlib.h>
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

static inline char *stderr_end(stderr_capture c)
{
	off_t len;
	char *out;
	fflush(stderr);
	dup2(c.saved, STDERR_FILENO);
	close(c.saved);
	len = lseek(fileno(c.file), 0, SEEK_END);
	assert_true(len >= 0);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(fileno(c.file), out, (size_t)len, 0), len);
	fclose(c.file);
	return out;
}
#endif
