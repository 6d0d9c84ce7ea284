/* Failing the host's allocations on purpose. A test program linked with
 *   ld --wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
 * (tests/CMakeLists.txt) includes this once; the host's calls (evhost_core
 * is a static library, so its references are rewritten too) and the
 * program's own then come here, and cJSON's once alloc_faults_cjson() has
 * set its hooks. SQLite's come to a counter of their own once
 * alloc_faults_sqlite() has installed its allocator. Other libraries
 * (civetweb, librdkafka) allocate on their own, unaffected, and so do the
 * plugins (shared objects) but for the build's tests/fault-plugins/ ones,
 * linked with the same --wrap options against a program that exports these
 * wrappers (test_services_oom).
 *
 * alloc_faults_arm(n, ALLOC_THIS_THREAD) fails the nth allocation (from 0)
 * made by the calling thread from now on; ALLOC_OTHER_THREADS the nth made
 * by any thread but the caller (an HTTP worker serving the caller's
 * requests, say); ALLOC_EVERY_THREAD the nth made by any (a whole process,
 * tests/fixtures/alloc_at.c). Either counts the host's and cJSON's allocations; with
 * ALLOC_SQLITE or'ed in, SQLite's instead. alloc_faults_disarm() stops
 * counting and says whether an allocation was failed. With
 * ALLOC_FAULTS_TRACE set in the environment, the stack of each failed
 * allocation goes to stderr. */
#ifndef EVH_ALLOC_FAULTS_H
#define EVH_ALLOC_FAULTS_H
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
/* Visible, so that a program can export them to the plugins it loads. */
#define ALLOC_WRAPPER __attribute__((visibility("default")))
ALLOC_WRAPPER void *__wrap_malloc(size_t n);
ALLOC_WRAPPER void *__wrap_calloc(size_t n, size_t size);
ALLOC_WRAPPER void *__wrap_realloc(void *p, size_t n);
ALLOC_WRAPPER char *__wrap_strdup(const char *s);
ALLOC_WRAPPER char *__wrap_strndup(const char *s, size_t n);

enum { ALLOC_OFF, ALLOC_THIS_THREAD, ALLOC_OTHER_THREADS, ALLOC_EVERY_THREAD };

/* How far the longest sweeps step from one failed allocation to the next:
 * each in turn, but one in 3 under ThreadSanitizer, whose runs take ten
 * times as long (test_answers, test_reload and test_oom took 73 to 103 s
 * and ended scripts/test's unit tests) and which looks for races, not for
 * what each failure does: the plain and ASan builds fail every one. */
#if defined(__SANITIZE_THREAD__)
#define ALLOC_SWEEP_STEP 3
#else
#define ALLOC_SWEEP_STEP 1
#endif
enum { ALLOC_SQLITE = 4 }; /* or'ed into the mode */

static atomic_int alloc_mode;
static atomic_long alloc_seen, alloc_fail_at, alloc_fail_count = 1;
static atomic_int alloc_failed;
static _Thread_local int alloc_armer; /* the thread that armed */
static const char *_Atomic alloc_thread_prefix; /* alloc_faults_threads */
static atomic_int alloc_announce; /* say "evh-fault: failing allocation N" */

/* Count only the allocations of threads whose name (log_thread_name) starts
 * with `prefix` ("evh-c:" the consumers, "evh-relay"); NULL: every thread's.
 * A sweep over a flow that crosses threads then fails its allocations on
 * one thread at a time, whatever the others do meanwhile. */
static inline void alloc_faults_threads(const char *prefix)
{
	atomic_store(&alloc_thread_prefix, prefix);
}

static int alloc_thread_counts(void)
{
	const char *prefix = atomic_load(&alloc_thread_prefix);
	char name[17] = "";
	if (!prefix)
		return 1;
	(void)prctl(PR_GET_NAME, name, 0, 0, 0);
	return !strncmp(name, prefix, strlen(prefix));
}

/* Whether to fail this allocation; `sqlite`: one of SQLite's. */
static int alloc_refuse_of(int sqlite)
{
	int mode = atomic_load(&alloc_mode), who = mode & ~ALLOC_SQLITE;
	if (who == ALLOC_OFF ||
	    (who != ALLOC_EVERY_THREAD && (who == ALLOC_THIS_THREAD) != alloc_armer) ||
	    !(mode & ALLOC_SQLITE) != !sqlite || !alloc_thread_counts())
		return 0;
	long i = atomic_fetch_add(&alloc_seen, 1), at = atomic_load(&alloc_fail_at);
	if (i < at || i - at >= atomic_load(&alloc_fail_count))
		return 0;
	atomic_store(&alloc_failed, 1);
	if (atomic_load(&alloc_announce)) { /* when, among a daemon's log lines */
		char line[64];
		int k = snprintf(line, sizeof line, "evh-fault: failing allocation %ld\n", i);
		if (write(2, line, (size_t)k) < 0) {
			/* the test then finds no such line, and says so */
		}
	}
	if (getenv("ALLOC_FAULTS_TRACE")) { /* where it failed, to stderr */
		void *frames[32];
		backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
	}
	return 1;
}

static int alloc_refuse(void) { return alloc_refuse_of(0); }

void *__wrap_malloc(size_t n) { return alloc_refuse() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size)
{
	return alloc_refuse() ? NULL : __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t n) { return alloc_refuse() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return alloc_refuse() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n)
{
	return alloc_refuse() ? NULL : __real_strndup(s, n);
}

/* Fail `count` allocations from the nth on (memory short for a while). */
static inline void alloc_faults_arm_many(long n, long count, int mode)
{
	atomic_store(&alloc_seen, 0);
	atomic_store(&alloc_fail_at, n);
	atomic_store(&alloc_fail_count, count);
	atomic_store(&alloc_failed, 0);
	alloc_armer = 1;
	atomic_store(&alloc_mode, mode);
}

static inline void alloc_faults_arm(long n, int mode) { alloc_faults_arm_many(n, 1, mode); }

/* Whether the armed allocation was failed. */
static inline int alloc_faults_disarm(void)
{
	atomic_store(&alloc_mode, ALLOC_OFF);
	alloc_armer = 0;
	return atomic_load(&alloc_failed);
}

/* cJSON (a shared library) allocates through hooks: send them here too, so
 * the host's JSON building is failed like its own allocations. */
static inline void alloc_faults_cjson(void)
{
	cJSON_Hooks hooks = {__wrap_malloc, free};
	cJSON_InitHooks(&hooks);
}

/* SQLite's allocator (SQLITE_CONFIG_MALLOC), counted and failed when armed
 * with ALLOC_SQLITE. SQLite asks an allocation's size back (xSize): it is
 * kept in the 8 bytes before the pointer handed out, which stays 8-aligned
 * as SQLite requires. What SQLite serves from a connection's lookaside
 * never comes here, as in production. */
static inline void *alloc_sqlite_malloc(int n)
{
	sqlite3_int64 *p = alloc_refuse_of(1) ? NULL : __real_malloc((size_t)n + 8);
	if (!p)
		return NULL;
	p[0] = n;
	return p + 1;
}

static inline void alloc_sqlite_free(void *p)
{
	if (p)
		free((sqlite3_int64 *)p - 1);
}

static inline void *alloc_sqlite_realloc(void *p, int n)
{
	sqlite3_int64 *q =
	    alloc_refuse_of(1) ? NULL : __real_realloc((sqlite3_int64 *)p - 1, (size_t)n + 8);
	if (!q)
		return NULL;
	q[0] = n;
	return q + 1;
}

static inline int alloc_sqlite_size(void *p) { return (int)((sqlite3_int64 *)p)[-1]; }
static inline int alloc_sqlite_roundup(int n) { return (n + 7) & ~7; }
static inline int alloc_sqlite_init(void *unused)
{
	(void)unused;
	return SQLITE_OK;
}
static inline void alloc_sqlite_shutdown(void *unused) { (void)unused; }

/* Install it: before SQLite is first used (sqlite3_config refuses after). */
static inline int alloc_faults_sqlite(void)
{
	static const sqlite3_mem_methods m = {
	    alloc_sqlite_malloc,  alloc_sqlite_free, alloc_sqlite_realloc,  alloc_sqlite_size,
	    alloc_sqlite_roundup, alloc_sqlite_init, alloc_sqlite_shutdown, NULL};
	return sqlite3_config(SQLITE_CONFIG_MALLOC, &m);
}

/* Whether it was failed, while still armed. */
static inline int alloc_faults_hit(void) { return atomic_load(&alloc_failed); }
#endif
