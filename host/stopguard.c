/* The stop's outer bound (stopguard.h). */
#include "stopguard.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include "clock.h"
#include "crash.h"
#include "log.h"

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int cv_ready, armed, done;
	int64_t deadline; /* clock_mono_ms */
	int budget_ms;
	char why[32];
	char at[256];
} guard = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *guard_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&guard.mu);
	while (!guard.done && clock_mono_ms() < guard.deadline) {
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, guard.deadline - clock_mono_ms());
		pthread_cond_timedwait(&guard.cv, &guard.mu, &until);
	}
	if (guard.done) {
		pthread_mutex_unlock(&guard.mu);
		return NULL;
	}
	/* The lock is kept: stopguard_at and stopguard_done wait for the exit. */
	log_error("host",
	          "%s: the stop has not ended within [host] stop_timeout (%d ms) and %d s more: "
	          "still waiting for %s; exiting now (status %d) without the plugins' fini. "
	          "Nothing committed is lost: a transaction still open is rolled back, events "
	          "not committed are handled again at the next start, the outboxes are on disk",
	          guard.why, guard.budget_ms, STOP_GRACE_MS / 1000,
	          guard.at[0] ? guard.at : "the stop's first step", STOP_FORCED_EXIT);
	crash_inhand_log(); /* which events the handlers that hold it have */
	/* Not exit(): the plugins' fini and atexit handlers would wait for
	 * what holds the stop. The log is written unbuffered. */
	_exit(STOP_FORCED_EXIT);
}

int stopguard_arm(int budget_ms, const char *why)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc = 0;

	pthread_mutex_lock(&guard.mu);
	if (guard.armed || guard.done) {
		pthread_mutex_unlock(&guard.mu);
		return 0;
	}
	if (!guard.cv_ready && clock_cond_init(&guard.cv) == 0)
		guard.cv_ready = 1;
	guard.budget_ms = budget_ms;
	guard.deadline = clock_mono_ms() + budget_ms + STOP_GRACE_MS;
	snprintf(guard.why, sizeof guard.why, "%s", why);
	if (!guard.cv_ready || pthread_attr_init(&attr) != 0) {
		rc = -1;
	} else {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, guard_main, NULL) != 0)
			rc = -1;
		pthread_attr_destroy(&attr);
	}
	guard.armed = rc == 0;
	pthread_mutex_unlock(&guard.mu);
	if (rc)
		log_warn("host", "%s: cannot start the stop's guard thread: the stop is bounded only "
		                 "by what it waits for",
		         why);
	return rc;
}

void stopguard_at(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&guard.mu);
	va_start(ap, fmt);
	vsnprintf(guard.at, sizeof guard.at, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&guard.mu);
}

void stopguard_done(void)
{
	pthread_mutex_lock(&guard.mu);
	guard.done = 1;
	if (guard.cv_ready)
		pthread_cond_signal(&guard.cv);
	pthread_mutex_unlock(&guard.mu);
}
