/* The crash record (crash.c): what a fatal signal on an event, or a kill
 * while one is in hand, leaves in the state directory for the next start.
 * Each crash or kill happens in a child process (a crash's handler ends it
 * with the signal's default action); the parent reads the record as the
 * next start would. Sanitized builds install no handler (their runtimes
 * report fatal signals): the crashes are skipped there, not the kills. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"
#include "test_files.h"

typedef struct fixture {
	char dir[64];
	char path[128];
	struct timespec *before; /* shared with the child: its clock just before the signal */
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->before = mmap(NULL, sizeof *f->before, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                 -1, 0);
	assert_true(f->before != MAP_FAILED);
	test_make_dir(f->dir, sizeof f->dir, "crash");
	snprintf(f->path, sizeof f->path, "%s/" CRASH_RECORD_FILE, f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	test_remove_tree(f->dir);
	munmap(f->before, sizeof *f->before);
	free(f);
	return 0;
}

/* A child that starts as evhostd does (handlers, the last run's record), then
 * dies of SIGSEGV while handling event `id` at `offset`; the child's clock
 * just before the signal goes to f->before. */
static void crash_on(fixture *f, int64_t offset, const char *id)
{
	int status;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		(void)setrlimit(RLIMIT_CORE, &no_core);
		crash_handlers_install();
		crash_record_open(f->dir);
		crash_enter_event("probe", "orders", 1, offset, id);
		clock_gettime(CLOCK_REALTIME, f->before);
		raise(SIGSEGV);
		_exit(0); /* not reached */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
}

static void skip_if_sanitized(void)
{
#ifdef EVHOST_TEST_SANITIZED
	skip(); /* crash_handlers_install installs nothing there */
#endif
}

/* The record says when the crash was, to better than the file system's
 * clock, which stamps a write up to a tick (4 ms) late: a copy of the event
 * redriven a moment before the crash must not look redriven after it. */
static void the_record_has_the_crash_time(void **state)
{
	fixture *f = *state;
	struct stat st;
	int64_t before_ms;
	crash_match m;
	skip_if_sanitized();
	crash_on(f, 5, "ev-1");
	assert_int_equal(stat(f->path, &st), 0);
	assert_true(st.st_mtim.tv_sec > f->before->tv_sec ||
	            (st.st_mtim.tv_sec == f->before->tv_sec &&
	             st.st_mtim.tv_nsec >= f->before->tv_nsec));
	/* And not later than now. */
	assert_true(st.st_mtim.tv_sec <= time(NULL));

	crash_record_open(f->dir);
	before_ms = (int64_t)f->before->tv_sec * 1000 + f->before->tv_nsec / 1000000;
	assert_int_equal(crash_record_match("probe", "orders", 1, 5, "ev-1", &m), 1);
	assert_true(m.at_ms >= before_ms);
	assert_true(m.at_ms - before_ms < 60 * 1000);
	assert_false(m.killed);
	crash_record_stopped(1);
}

/* The record names the event at its place and its copies by id, and a crash
 * on a copy counts the starts in a row on. */
static void a_crash_on_a_copy_counts_on(void **state)
{
	fixture *f = *state;
	crash_match m;
	skip_if_sanitized();
	crash_on(f, 5, "ev-2");
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 5, "ev-2", &m), 1);
	assert_int_equal(m.at_place, 1);
	assert_int_equal(crash_record_match("probe", "orders", 1, 9, "ev-2", &m), 1);
	assert_int_equal(m.at_place, 0);
	assert_int_equal(crash_record_match("probe", "orders", 1, 9, "ev-3", &m), 0);
	assert_int_equal(crash_record_match("other", "orders", 1, 5, "ev-2", &m), 0);

	crash_on(f, 9, "ev-2"); /* the copy, at the next start */
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 9, "ev-2", &m),
	                 CRASH_RECORD_LIMIT);
	assert_int_equal(m.at_place, 1);
	assert_int_equal(crash_record_match("probe", "orders", 1, 5, "ev-2", &m),
	                 CRASH_RECORD_LIMIT);
	assert_int_equal(m.at_place, 0);
	crash_record_stopped(1);
	assert_int_equal(access(f->path, F_OK), -1);
}

/* An event id is any bytes but NUL: one that began with a space or held a
 * newline was read back as another id (the record kept it as it was, and
 * the reader skipped the space, stopped at the newline), so a copy of the
 * event at another offset crashed the daemon twice more. */
static void a_copy_of_an_event_with_any_id_is_known(void **state)
{
	static const char *const ids[] = {" ev-4", "ev\n4", "ev 4\t", "-", "h:41"};
	fixture *f = *state;
	crash_match m;
	skip_if_sanitized();
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		crash_on(f, 5, ids[i]);
		crash_record_open(f->dir);
		assert_int_equal(crash_record_match("probe", "orders", 1, 9, ids[i], &m), 1);
		assert_int_equal(m.at_place, 0);
		assert_int_equal(crash_record_match("probe", "orders", 1, 9, "ev-4", &m), 0);
		crash_record_stopped(1);
	}
}

/* The FATAL line a child writes to stderr (a file) as it dies of SIGSEGV
 * handling HTTP GET `path` (request id r-1), or, with `path` NULL, event
 * `id` of orders [1] at offset 5; stderr the journal's stream (the file's
 * JOURNAL_STREAM) with `journal`. Into text (cap bytes). */
static void first_fatal_line(fixture *f, int journal, const char *path, const char *id,
                             char *text, size_t cap)
{
	char out[128], env[64], *line;
	struct stat st;
	FILE *fp;
	size_t n;
	int status, fd;
	pid_t pid;
	snprintf(out, sizeof out, "%s/stderr", f->dir);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		(void)setrlimit(RLIMIT_CORE, &no_core);
		dup2(fd, STDERR_FILENO);
		if (journal)
			setenv("JOURNAL_STREAM", env, 1);
		else
			unsetenv("JOURNAL_STREAM");
		crash_handlers_install();
		crash_record_open(f->dir);
		if (path)
			crash_enter_http("probe", "GET", path, "r-1");
		else
			crash_enter_event("probe", "orders", 1, 5, id);
		raise(SIGSEGV);
		_exit(0); /* not reached */
	}
	close(fd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	fp = fopen(out, "r");
	assert_non_null(fp);
	n = fread(text, 1, cap - 1, fp);
	fclose(fp);
	text[n] = '\0';
	/* The FATAL line, after any the start logged (a run before in this
	 * directory that did not stop cleanly is said). */
	line = strstr(text, "evhostd: FATAL: ");
	assert_non_null(line);
	while (line > text && line[-1] != '\n')
		line--;
	memmove(text, line, strlen(line) + 1);
	text[strcspn(text, "\n")] = '\0';
}

/* The FATAL line: one line whatever the crashed request's path holds (a
 * decoded "%0A" forged a second line, plain text among JSON ones), and, on
 * the journal's stream, at syslog's crit ("<2>"), not at info with the
 * rest. */
static void the_fatal_line_is_one_line_at_its_priority(void **state)
{
	char text[4096];
	skip_if_sanitized();
	first_fatal_line(*state, 1, "/users/x\n{\"level\":\"info\"}", NULL, text, sizeof text);
	assert_true(strncmp(text, "<2>evhostd: FATAL: SIGSEGV", 26) == 0);
	assert_non_null(strstr(text, "handling HTTP GET /users/x\\x0a{\"level\":\"info\"} "
	                             "(request id r-1)"));
}

/* However long the fields that came from outside (a path of 1500 bytes, an
 * id of 255 control bytes, 4 characters each on the line), the FATAL line
 * keeps its end: the event's place, the record's note, the newline before
 * the backtrace. The line was cut at 1023 bytes, and the first frame of
 * the backtrace glued onto it. */
static void the_fatal_line_keeps_its_end(void **state)
{
	char text[8192], path[1501], id[256];
	skip_if_sanitized();
	memset(path, 'p', sizeof path - 1);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	memset(id, 1, sizeof id - 1);
	id[sizeof id - 1] = '\0';
	first_fatal_line(*state, 0, path, NULL, text, sizeof text);
	assert_non_null(strstr(text, "p... (request id r-1); the daemon stops. Backtrace:"));
	first_fatal_line(*state, 0, NULL, id, text, sizeof text);
	assert_non_null(strstr(text, "\\x01... of orders [1] at offset 5 (not committed"));
	assert_non_null(strstr(text, "; the daemon stops. Backtrace:"));
	crash_record_stopped(1);
}

/* ------------------------------------------------------ events in hand */

/* In a child that starts as evhostd does (the last run's record): body(),
 * then a kill (SIGKILL: the OOM killer), with no handler of ours to run. */
typedef struct kill_case {
	int64_t offset;
	const char *id;
	int handled;       /* the handler returned, and the record naming it was forgotten */
	const char *topic; /* NULL: "orders" */
} kill_case;

static void killed_after(fixture *f, void (*body)(const kill_case *), const kill_case *k)
{
	int status;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		crash_record_open(f->dir);
		body(k);
		raise(SIGKILL);
		_exit(0); /* not reached */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* Event k->id at k->offset in hand (or handled, as kafka.c does). */
static void in_hand(const kill_case *k)
{
	const char *topic = k->topic ? k->topic : "orders";
	crash_match m;
	(void)crash_record_match("probe", topic, 1, k->offset, k->id, &m);
	crash_enter_event("probe", topic, 1, k->offset, k->id);
	if (k->handled) {
		crash_leave();
		crash_record_forget(&m);
	}
}

static void killed_on(fixture *f, int64_t offset, const char *id, int handled)
{
	kill_case k = {offset, id, handled, NULL};
	killed_after(f, in_hand, &k);
}

/* An event a handler had in hand when the daemon was killed counts as a
 * crash on it: a handler that uses up the memory on an event (the OOM
 * killer) or never returns on it (the stop's guard) ended every start on
 * it, its partition held for good. Its copies too, and the place moves to
 * where it was in hand. */
static void an_event_in_hand_at_a_kill_counts_as_a_crash(void **state)
{
	fixture *f = *state;
	crash_match m;
	char text[512];
	FILE *fp;
	killed_on(f, 7, "ev-k", 0);
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 7, "ev-k", &m), 1);
	assert_true(m.at_place && m.killed && m.at_ms > 0);
	assert_int_equal(crash_record_match("probe", "orders", 1, 8, "ev-x", &m), 0);
	fp = fopen(f->path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(text, sizeof text, fp));
	fclose(fp);
	assert_non_null(strstr(text, " probe orders h:65762d6b "));
	assert_non_null(strstr(text, " killed\n"));

	killed_on(f, 7, "ev-k", 0);
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 7, "ev-k", &m),
	                 CRASH_RECORD_LIMIT);
	killed_on(f, 9, "ev-k", 0); /* a copy, by its id */
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 9, "ev-k", &m),
	                 CRASH_RECORD_LIMIT + 1);
	assert_true(m.at_place && m.killed);
	crash_record_stopped(1);
	assert_int_equal(access(f->path, F_OK), -1);
}

/* A copy of a recorded event in hand on another topic (one CloudEvent sent
 * to two topics the plugin consumes): the record moves to where it was in
 * hand, its topic too (it kept the first topic with the copy's partition
 * and offset, a place that did not hold the event). */
static void a_copy_in_hand_elsewhere_moves_the_record(void **state)
{
	fixture *f = *state;
	kill_case k = {9, "ev-c", 0, "returns"};
	crash_match m;
	killed_on(f, 5, "ev-c", 0);
	killed_after(f, in_hand, &k);
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "returns", 1, 9, "ev-c", &m), 2);
	assert_true(m.at_place);
	assert_int_equal(crash_record_match("probe", "orders", 1, 9, "ev-x", &m), 0);
	crash_record_stopped(1);
}

/* Killed between events, or after the event was handled: nothing held
 * against it; and a record the handler got past is forgotten for good. */
static void an_event_handled_before_a_kill_is_not_counted(void **state)
{
	fixture *f = *state;
	crash_match m;
	killed_on(f, 7, "ev-h", 0);
	killed_on(f, 7, "ev-h", 1); /* handled this time */
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 7, "ev-h", &m), 0);
	assert_int_equal(access(f->path, F_OK), -1);
	crash_record_stopped(1);
}

/* A clean stop leaves nothing in hand to hold against an event, whatever
 * ends the process after it. */
static void in_hand_then_stopped(const kill_case *k)
{
	in_hand(k);
	crash_record_stopped(0);
}

static void nothing_is_held_after_a_stop(void **state)
{
	fixture *f = *state;
	kill_case k = {7, "ev-s", 0, NULL};
	crash_match m;
	killed_after(f, in_hand_then_stopped, &k);
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 7, "ev-s", &m), 0);
	crash_record_stopped(1);
}

static void *other_in_hand(void *arg)
{
	volatile int *ready = arg;
	crash_enter_event("probe", "orders", 2, 70, "ev-other");
	*ready = 1;
	for (;;)
		pause();
	return NULL;
}

/* A crash names its own event: the one another thread had in hand at that
 * moment is not held against it. */
static void a_crash_holds_only_its_own_event(void **state)
{
	fixture *f = *state;
	crash_match m;
	int status;
	pid_t pid;
	skip_if_sanitized();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static volatile int ready;
		struct rlimit no_core = {0, 0};
		pthread_t t;
		(void)setrlimit(RLIMIT_CORE, &no_core);
		crash_handlers_install();
		crash_record_open(f->dir);
		if (pthread_create(&t, NULL, other_in_hand, (void *)&ready) != 0)
			_exit(2);
		while (!ready)
			usleep(1000);
		crash_enter_event("probe", "orders", 1, 5, "ev-mine");
		raise(SIGSEGV);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 5, "ev-mine", &m), 1);
	assert_false(m.killed);
	assert_int_equal(crash_record_match("probe", "orders", 2, 70, "ev-other", &m), 0);
	crash_record_stopped(1);
}

static void *take_and_end(void *arg)
{
	(void)arg;
	crash_enter_event("probe", "orders", 3, 1, "ev-t");
	crash_leave();
	crash_thread_leave(NULL);
	return NULL;
}

/* A thread's slot is free again when it ends: consumers come and go with
 * reloads, and a daemon reloaded 64 times kept no event in hand. */
static void threads_come_and_go(const kill_case *k)
{
	for (int i = 0; i < 100; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, take_and_end, NULL) != 0 || pthread_join(t, NULL))
			_exit(2);
	}
	in_hand(k);
}

static void slots_are_given_back(void **state)
{
	fixture *f = *state;
	kill_case k = {7, "ev-last", 0, NULL};
	crash_match m;
	killed_after(f, threads_come_and_go, &k);
	crash_record_open(f->dir);
	assert_int_equal(crash_record_match("probe", "orders", 1, 7, "ev-last", &m), 1);
	assert_int_equal(crash_record_match("probe", "orders", 3, 1, "ev-t", &m), 0);
	crash_record_stopped(1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(the_fatal_line_is_one_line_at_its_priority, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(the_record_has_the_crash_time, setup, teardown),
		cmocka_unit_test_setup_teardown(a_crash_on_a_copy_counts_on, setup, teardown),
		cmocka_unit_test_setup_teardown(a_copy_of_an_event_with_any_id_is_known, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(the_fatal_line_keeps_its_end, setup, teardown),
		cmocka_unit_test_setup_teardown(an_event_in_hand_at_a_kill_counts_as_a_crash, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(an_event_handled_before_a_kill_is_not_counted, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(nothing_is_held_after_a_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(a_copy_in_hand_elsewhere_moves_the_record, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(a_crash_holds_only_its_own_event, setup, teardown),
		cmocka_unit_test_setup_teardown(slots_are_given_back, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
