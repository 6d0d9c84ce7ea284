/* A fatal signal (a plugin's bad pointer, an abort) ends the daemon, as it
 * must: its memory can no longer be trusted. Before it does, one line on
 * standard error (the journal) says which plugin the thread was running and
 * what for (an HTTP request, an event, init, fini), with a backtrace; then
 * the signal's default action (a core dump) follows and systemd restarts
 * the daemon. Not installed in sanitized builds, whose runtimes report such
 * signals themselves. */
#ifndef EVHOST_CRASH_H
#define EVHOST_CRASH_H
#include <stdint.h>

void crash_handlers_install(void);
/* A stack of the handler's own for this thread (one that runs plugin code:
 * its stack may overflow), until crash_thread_leave with what it returned
 * (NULL: none, the thread's stack serves, as in sanitized builds). */
void *crash_thread_enter(void);
void crash_thread_leave(void *stack);

/* What this thread runs of a plugin from now until crash_leave. The
 * strings must outlive the call (they are read only if a signal comes). */
void crash_enter_http(const char *plugin, const char *method, const char *path,
                      const char *request_id);
void crash_enter_event(const char *plugin, const char *topic, int32_t partition,
                       int64_t offset, const char *event_id);
void crash_enter_call(const char *plugin, const char *what); /* "init", "fini" */
void crash_leave(void);
/* The plugin this thread runs a call of (from crash_enter_* to crash_leave),
 * or NULL: for lines about a call that has no evh_plugin to name. */
const char *crash_plugin(void);

/* A plugin that crashes on an event crashes again on it at every start
 * (the offset was never committed): a crash loop. The handler records the
 * event it crashed on in state_dir/CRASH_RECORD_FILE, counting the starts
 * in a row that crashed on it; at CRASH_RECORD_LIMIT the consumer dead-
 * letters it without calling the handler again (kafka.c). So too an event
 * a handler had in hand when the daemon was killed (SIGKILL: the OOM
 * killer, systemd's stop timeout) or ended by the stop's guard: each
 * thread's event in hand is kept in a file the next start reads
 * (crash.c, "events in hand"). */
#define CRASH_RECORD_FILE "evhostd.crashed"
#define CRASH_RECORD_LIMIT 2
/* At start, before any consumer: read the last run's record and events in
 * hand (if any), say them, and note where the next go. */
void crash_record_open(const char *state_dir);
typedef struct crash_match {
	int index;    /* the record's (crash_record_forget), -1 for none */
	int at_place; /* found at its place, not a copy by its id */
	int killed;   /* one of the ends was not a crash: a kill or the stop's guard */
	int64_t at_ms; /* when the last end on it was recorded (ms since the epoch;
	                * 0 when unknown): a copy redriven before it was redriven with
	                * the one that crashed, not after the plugin was mended */
} crash_match;
/* How many starts in a row ended on this event, found at its place or by
 * its id (a copy elsewhere): 0 when no record names it. *m says more. */
long crash_record_match(const char *plugin, const char *topic, int32_t partition,
                        int64_t offset, const char *id, crash_match *m);
/* The event m found was handled this time: its record forgotten. */
void crash_record_forget(const crash_match *m);
/* A line (at error) for each event a handler has in hand now: for the
 * stop's guard, as it ends the daemon on a handler that does not return. */
void crash_inhand_log(void);
/* A stop's consumers have all stopped and left their groups: what the next
 * start reads of this run (crash_record_open) holds nothing in hand, and
 * says the run stopped cleanly as far as Kafka's groups go. */
void crash_record_consumers_left(void);
/* The stop ended (no handler runs): nothing in hand is held against its
 * event at the next start; and, when it was clean, every record forgotten
 * (the last run did not crash, whatever the one before did). */
void crash_record_stopped(int clean);

#endif
