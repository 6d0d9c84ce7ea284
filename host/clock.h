/* Time for timeouts and durations: the monotonic clock in milliseconds,
 * and absolute deadlines for pthread_cond_timedwait; the wall clock for
 * timestamps. Header-only, so every
 * program (evhostd, evhostctl, tests) shares one definition. */
#ifndef EVHOST_CLOCK_H
#define EVHOST_CLOCK_H
#include <stdint.h>
#include <time.h>

/* Milliseconds of CLOCK_MONOTONIC: for durations and deadlines that the
 * wall clock's jumps must not move. */
static inline int64_t clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds since the epoch (CLOCK_REALTIME): for times shown to
 * people and monitoring, never for durations. */
static inline int64_t clock_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `ms` from now on `clock` (the one the condition variable waits on), as
 * pthread_cond_timedwait takes it. */
static inline struct timespec clock_after_ms(clockid_t clock, int64_t ms)
{
	struct timespec t;
	clock_gettime(clock, &t);
	t.tv_sec += (time_t)(ms / 1000);
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}
#endif
