/* Failing the host's allocations on purpose. A test program linked with
 *   ld --wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
 * (tests/CMakeLists.txt) includes this once; the host's calls (evhost_core
 * is a static library, so its references are rewritten too) and the
 * program's own then come here, and cJSON's once alloc_faults_cjson() has
 * set its hooks. Other libraries (civetweb, SQLite, librdkafka) and the
 * plugins (shared objects) allocate on their own, unaffected.
 *
 * alloc_faults_arm(n, ALLOC_THIS_THREAD) fails the nth allocation (from 0)
 * made by the calling thread from now on; ALLOC_OTHER_THREADS the nth made
 * by any thread but the caller (an HTTP worker serving the caller's
 * requests, say). alloc_faults_disarm() stops counting and says whether an
 * allocation was failed. With ALLOC_FAULTS_TRACE set in the environment,
 * the stack of each failed allocation goes to stderr. */
#ifndef EVH_ALLOC_FAULTS_H
#define EVH_ALLOC_FAULTS_H
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

enum { ALLOC_OFF, ALLOC_THIS_THREAD, ALLOC_OTHER_THREADS };

static atomic_int alloc_mode;
static atomic_long alloc_seen, alloc_fail_at;
static atomic_int alloc_failed;
static _Thread_local int alloc_armer; /* the thread that armed */

static int alloc_refuse(void)
{
	int mode = atomic_load(&alloc_mode);
	if (mode == ALLOC_OFF || (mode == ALLOC_THIS_THREAD) != alloc_armer)
		return 0;
	if (atomic_fetch_add(&alloc_seen, 1) != atomic_load(&alloc_fail_at))
		return 0;
	atomic_store(&alloc_failed, 1);
	if (getenv("ALLOC_FAULTS_TRACE")) { /* where it failed, to stderr */
		void *frames[32];
		backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
	}
	return 1;
}

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

static inline void alloc_faults_arm(long n, int mode)
{
	atomic_store(&alloc_seen, 0);
	atomic_store(&alloc_fail_at, n);
	atomic_store(&alloc_failed, 0);
	alloc_armer = 1;
	atomic_store(&alloc_mode, mode);
}

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

/* Whether it was failed, while still armed. */
static inline int alloc_faults_hit(void) { return atomic_load(&alloc_failed); }
#endif
