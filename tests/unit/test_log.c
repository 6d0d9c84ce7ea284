/* The log (log.c): control characters never reach a line raw, and lines of
 * concurrent threads never interleave, whatever stderr is. A pipe takes at
 * most 4096 bytes at once when it is full, so a longer line written while
 * the reader lags went out in parts, with other threads' lines between them
 * (a log shipper reading JSON lines then met lines it could not parse). The
 * reader here lags on purpose. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

enum {
	WRITERS = 3,
	LINES = 40,       /* each writer's */
	MSG_BYTES = 4000, /* each a control byte, escaped to six: a line of 24 KB */
	READ_BYTES = 4096,
};

static void *writer_main(void *arg)
{
	char byte = *(const char *)arg, msg[MSG_BYTES + 1];
	memset(msg, byte, MSG_BYTES);
	msg[MSG_BYTES] = '\0';
	for (int i = 0; i < LINES; i++)
		log_msg(EVH_LOG_INFO, "test", "%s", msg);
	return NULL;
}

struct reader {
	int fd;
	char *text;
	size_t n, cap;
};

/* Reads in small bites with a pause between them (so that the pipe is full
 * while the writers write), to the end of the pipe. */
static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct timespec pause = {0, 1000 * 1000};
	for (;;) {
		ssize_t got;
		if (r->cap - r->n < READ_BYTES) {
			r->cap = r->cap * 2 + READ_BYTES;
			r->text = realloc(r->text, r->cap);
			if (!r->text)
				return NULL;
		}
		got = read(r->fd, r->text + r->n, READ_BYTES);
		if (got <= 0)
			return NULL;
		r->n += (size_t)got;
		nanosleep(&pause, NULL);
	}
}

/* Whether `line` is a whole JSON line of one writer's message: its text is
 * one escape (\u0001, \u0002 or \u0003) MSG_BYTES times. */
static int whole(const char *line, const char *end)
{
	const char *msg = strstr(line, "\"msg\":\"");
	if (line[0] != '{' || end[-1] != '}' || !msg)
		return 0;
	msg += 7;
	if (end - msg < 6 * MSG_BYTES + 1 || strncmp(msg, "\\u000", 5) || msg[5] < '1' ||
	    msg[5] > '3')
		return 0;
	for (int i = 1; i < MSG_BYTES; i++)
		if (memcmp(msg + 6 * i, msg, 6))
			return 0;
	return msg[6 * MSG_BYTES] == '"';
}

/* Three writers' lines into a pipe (set non-blocking with `nonblocking`)
 * whose reader lags: each line whole, none lost. */
static void lines_into_a_lagging_pipe(int nonblocking)
{
	static const char letters[WRITERS] = {1, 2, 3};
	pthread_t writers[WRITERS], reader;
	struct reader r = {0};
	int fds[2], saved, lines = 0, bad = 0;
	char *line, *next;
	unsetenv("JOURNAL_STREAM");
	log_setup(EVH_LOG_INFO, LOG_FORMAT_JSON);
	assert_int_equal(pipe(fds), 0);
	if (nonblocking)
		assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
	close(fds[1]);
	r.fd = fds[0];
	assert_int_equal(pthread_create(&reader, NULL, reader_main, &r), 0);
	for (int i = 0; i < WRITERS; i++)
		assert_int_equal(pthread_create(&writers[i], NULL, writer_main, (void *)&letters[i]),
		                 0);
	for (int i = 0; i < WRITERS; i++)
		pthread_join(writers[i], NULL);
	/* The pipe's last writer gone: the reader meets its end. */
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	pthread_join(reader, NULL);
	close(fds[0]);
	assert_non_null(r.text);

	for (line = r.text; line < r.text + r.n; line = next + 1) {
		next = memchr(line, '\n', (size_t)(r.text + r.n - line));
		assert_non_null(next);
		*next = '\0';
		lines++;
		if (!whole(line, next) && bad++ < 3)
			fprintf(stderr, "a broken line: %.120s ... %s\n", line,
			        next - line > 60 ? next - 60 : line);
	}
	free(r.text);
	assert_int_equal(bad, 0);
	assert_int_equal(lines, WRITERS * LINES);
}

static void lines_of_concurrent_threads_do_not_interleave(void **state)
{
	(void)state;
	lines_into_a_lagging_pipe(0);
}

/* A stderr set non-blocking (O_NONBLOCK is the file description's: whoever
 * shares it may set it) answered a full pipe EAGAIN, and the line was
 * dropped; it waits for room now, as a blocking one does. */
static void a_non_blocking_stderr_loses_no_line(void **state)
{
	(void)state;
	lines_into_a_lagging_pipe(1);
}

/* C1 controls (U+0080 to U+009F, "\xc2\x85" is NEL) are escaped as C0
 * ones are: journald counts them as control and journalctl showed the
 * whole line as "[N blob data]". Other characters stay as they are. */
static void c1_controls_are_escaped(void **state)
{
	char out[64];
	(void)state;
	log_json_escape(out, sizeof out, "a\xc2\x85" "b\xc2\x9f\xc2\x80|\xc2\xa0\xc3\xa9\x01");
	assert_string_equal(out, "a\\u0085b\\u009f\\u0080|\xc2\xa0\xc3\xa9\\u0001");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(c1_controls_are_escaped),
		cmocka_unit_test(lines_of_concurrent_threads_do_not_interleave),
		cmocka_unit_test(a_non_blocking_stderr_loses_no_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
