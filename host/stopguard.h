/* The stop's outer bound. [host] stop_timeout bounds each wait of a stop
 * that can be cut short (requests in flight, dead letters on their way, the
 * outbox's flush); some cannot: an event handler that does not return (its
 * consumer is joined), a transaction held by a plugin's own thread (the
 * relay waits for the database), a plugin's fini. Once armed, a thread of
 * its own ends the process at stop_timeout + STOP_GRACE_MS unless the stop
 * has ended: one line says what the stop was still waiting for, and the
 * exit status is STOP_FORCED_EXIT, without the plugins' fini. Nothing that
 * was committed is lost: an open transaction is rolled back by SQLite at the
 * next open, an event not committed is handled again at the next start, and
 * the outboxes are on disk. */
#ifndef EVHOST_STOPGUARD_H
#define EVHOST_STOPGUARD_H

/* What the stop may take beyond [host] stop_timeout: the consumers leaving
 * their groups, the producer's and the exporter's last flush (each has at
 * least 0.5-1 s of its own past the budget). */
#define STOP_GRACE_MS 10000
/* evhostd's exit status when the guard ended the stop (evhostd(8)). */
#define STOP_FORCED_EXIT 3

/* Arm the guard: the process ends at `budget_ms` + STOP_GRACE_MS from now
 * unless stopguard_done comes first. `why` (a signal's name) is said in the
 * line. A second call keeps the first deadline. 0, or -1 when its thread
 * could not start (said; the stop is then unbounded, as before). */
int stopguard_arm(int budget_ms, const char *why);
/* What the stop waits for from now on ("plugin 'crud': its consumer, a
 * handler still running"), said should the guard end it. Cheap; may be
 * called whether or not the guard is armed. */
void stopguard_at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The stop has ended: the guard stands down for good. */
void stopguard_done(void);

#endif
