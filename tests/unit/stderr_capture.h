/* Capturing what code under test writes to stderr (the log), for unit
 * tests: stderr_begin redirects it to an unlinked temporary file until
 * stderr_end, which restores it and returns what was written (malloc'd).
 * Include after <cmocka.h>. */
#ifndef EVHOST_TEST_STDERR_CAPTURE_H
#define EVHOST_TEST_STDERR_CAPTURE_H
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct stderr_capture {
	int fd, saved;
} stderr_capture;

static inline stderr_capture stderr_begin(void)
{
	char path[] = "/tmp/evhost-test-log-XXXXXX"; /* mkstemp's template */
	stderr_capture c = {mkstemp(path), dup(STDERR_FILENO)};
	assert_true(c.fd >= 0 && c.saved >= 0);
	unlink(path);
	fflush(stderr);
	dup2(c.fd, STDERR_FILENO);
	return c;
}

static inline char *stderr_end(stderr_capture c)
{
	off_t len;
	char *out;
	fflush(stderr);
	dup2(c.saved, STDERR_FILENO);
	close(c.saved);
	len = lseek(c.fd, 0, SEEK_END);
	assert_true(len >= 0);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(c.fd, out, (size_t)len, 0), len);
	close(c.fd);
	return out;
}
#endif
