/* ThreadSanitizer builds only (EVHOST_TSAN): C11 threads over POSIX threads.
 *
 * librdkafka uses C11 threads (thrd_create, mtx_lock, cnd_wait...). glibc
 * implements them by calling its pthread functions internally, where neither
 * GCC 12's nor Clang 14's ThreadSanitizer runtime sees them: a thread started
 * with thrd_create has no sanitizer state (its first malloc crashes), and
 * every hand-off through librdkafka's queues looks like a data race. These
 * definitions, in the executable, take precedence over glibc's for every
 * library and call the pthread functions the runtime intercepts. glibc's C11
 * types are its pthread types under other names (same size and layout), and
 * a thread's int result travels as a pointer-sized integer, as glibc does. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <threads.h>

#define EXPORT __attribute__((visibility("default")))

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

EXPORT int thrd_create(thrd_t *thr, thrd_start_t func, void *arg);
EXPORT int thrd_join(thrd_t thr, int *res);
EXPORT int mtx_init(mtx_t *m, int type);
EXPORT int mtx_lock(mtx_t *m);
EXPORT int mtx_trylock(mtx_t *m);
EXPORT int mtx_unlock(mtx_t *m);
EXPORT void mtx_destroy(mtx_t *m);
EXPORT int cnd_init(cnd_t *c);
EXPORT int cnd_signal(cnd_t *c);
EXPORT int cnd_broadcast(cnd_t *c);
EXPORT int cnd_wait(cnd_t *c, mtx_t *m);
EXPORT int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts);
EXPORT void cnd_destroy(cnd_t *c);
EXPORT void call_once(once_flag *flag, void (*func)(void));

static int c11(int rc)
{
	switch (rc) {
	case 0:
		return thrd_success;
	case ETIMEDOUT:
		return thrd_timedout;
	case EBUSY:
		return thrd_busy;
	case ENOMEM:
	case EAGAIN:
		return thrd_nomem;
	default:
		return thrd_error;
	}
}

/* On thrd_create's stack until the new thread has copied it: no heap, so
 * that a test failing the program's allocations one by one meets none here
 * that glibc's thrd_create would not make. */
struct start {
	thrd_start_t func;
	void *arg;
	sem_t copied;
};

static void *start_main(void *p)
{
	struct start *s = p;
	thrd_start_t func = s->func;
	void *arg = s->arg;

	sem_post(&s->copied);
	return (void *)(intptr_t)func(arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
	struct start s = {.func = func, .arg = arg};
	int rc;

	if (sem_init(&s.copied, 0, 0) != 0)
		return thrd_error;
	rc = pthread_create(thr, NULL, start_main, &s);
	if (!rc)
		while (sem_wait(&s.copied) != 0 && errno == EINTR)
			;
	sem_destroy(&s.copied);
	return c11(rc);
}

int thrd_join(thrd_t thr, int *res)
{
	void *r = NULL;
	int rc = pthread_join(thr, &r);

	if (!rc && res)
		*res = (int)(intptr_t)r;
	return c11(rc);
}

int mtx_init(mtx_t *m, int type)
{
	pthread_mutexattr_t a;
	int rc;

	if (pthread_mutexattr_init(&a))
		return thrd_error;
	rc = pthread_mutexattr_settype(&a, type & mtx_recursive ? PTHREAD_MUTEX_RECURSIVE
	                                                        : PTHREAD_MUTEX_NORMAL);
	if (!rc)
		rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
	pthread_mutexattr_destroy(&a);
	return c11(rc);
}

int mtx_lock(mtx_t *m) { return c11(pthread_mutex_lock((pthread_mutex_t *)m)); }
int mtx_trylock(mtx_t *m) { return c11(pthread_mutex_trylock((pthread_mutex_t *)m)); }
int mtx_unlock(mtx_t *m) { return c11(pthread_mutex_unlock((pthread_mutex_t *)m)); }
void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) { return c11(pthread_cond_init((pthread_cond_t *)c, NULL)); }
int cnd_signal(cnd_t *c) { return c11(pthread_cond_signal((pthread_cond_t *)c)); }
int cnd_broadcast(cnd_t *c) { return c11(pthread_cond_broadcast((pthread_cond_t *)c)); }
void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

int cnd_wait(cnd_t *c, mtx_t *m)
{
	return c11(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
	return c11(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void call_once(once_flag *flag, void (*func)(void)) { pthread_once((pthread_once_t *)flag, func); }
