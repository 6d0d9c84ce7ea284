/* Time for timeouts and durations: the monotonic clock in milliseconds,
 * and absolute deadlines for pthread_cond_timedwait on condition variables
 * made by clock_cond_init; the wall clock for timestamps only. Every timed
 * wait of the daemon is on the monotonic clock: a step of the wall clock (NTP
 * at boot, an admin's date) would otherwise stretch a wait by the step, or
 * cut it short. Header-only, so every
 * program (evhostd, evhostctl, tests) shares one definition. */
#ifndef EVHOST_CLOCK_H
#define EVHOST_CLOCK_H
#include <pthread.h>
#include <stdatomic.h>
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

/* Raise `*latest` to `ms` unless it is later already; returns the later of
 * the two: a time never earlier than one given before, whatever the wall
 * clock did meanwhile. */
static inline int64_t clock_raise_ms(_Atomic int64_t *latest, int64_t ms)
{
	int64_t seen = atomic_load(latest);
	while (ms > seen && !atomic_compare_exchange_weak(latest, &seen, ms))
		;
	return ms > seen ? ms : seen;
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

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines
 * (clock_after_ms(CLOCK_MONOTONIC, ...)), so that a step of the wall clock
 * (NTP at boot, an admin's date) neither stretches nor cuts them: 0, or
 * pthread_cond_init's error. */
static inline int clock_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	int e = pthread_condattr_init(&ca);
	if (e)
		return e;
	e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!e)
		e = pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
	return e;
}

#endif
