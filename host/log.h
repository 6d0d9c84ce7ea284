/* Logging: one line per event. Text on a terminal, JSON lines otherwise
 * (or when [log] format says so). Never log secrets. Thread-safe. */
#ifndef EVHOST_LOG_H
#define EVHOST_LOG_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <evhost/evhost.h>

typedef enum log_format { LOG_FORMAT_AUTO = 0, LOG_FORMAT_TEXT, LOG_FORMAT_JSON } log_format;

void log_setup(evh_log_level level, log_format format);
/* Whether stderr is the journal's stream (JOURNAL_STREAM names its device
 * and inode, systemd.exec(5); a stream redirected elsewhere is not): lines
 * then begin with their syslog priority, "<3>" for an error, which journald
 * takes for the line's (SyslogLevelPrefix=, on by default) instead of
 * storing every line at info. Looked up now. */
int log_stderr_is_journal(void);
int log_level_parse(const char *s, evh_log_level *out);
/* The name log_level_parse takes ("error" .. "debug"). */
const char *log_level_name(evh_log_level level);
/* The [log] format key's value for `format` ("auto", "text", "json"). */
const char *log_format_name(log_format format);
/* `component` is "host", "http", "kafka", or a plugin name. */
void log_msg(evh_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Per-thread context added to every line of this thread (request id, trace id). NULL clears. */
void log_set_context(const char *request_id, const char *trace_id);
/* log_msg without the calling thread's context: for a line about something
 * shared, not the request or event the thread happens to be handling (a
 * full span queue, met by whichever request ends a span then). */
void log_msg_no_context(evh_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* `s` (NULL: "") as the inside of a JSON string, escaped as JSON log lines
 * are (control characters escaped, invalid UTF-8 as \ufffd), into
 * out[cap], NUL-terminated, cut before the first character that would not
 * fit whole. Returns its length. */
size_t log_json_escape(char *out, size_t cap, const char *s);

/* The same with the threshold given (a plugin's own log_level); a negative
 * threshold means the [log] level. */
void log_msg_at(int threshold, evh_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* One plugin's share of the log: at most [log] plugin_rate_limit_burst of
 * its lines (those its level shows) per plugin_rate_limit_interval, as
 * journald rations a whole service. The rest of the interval's lines are
 * dropped, said when the first is and counted when the interval ends, so
 * that a plugin logging in a loop cannot use up journald's budget for the
 * host's lines and the other plugins'. */
/* [log] plugin_rate_limit_burst and _interval by default: half of
 * journald's default budget for a whole service (10000 per 30 s). */
#define LOG_RATE_BURST_DEFAULT 5000
#define LOG_RATE_INTERVAL_MS_DEFAULT 30000

typedef struct log_budget {
	char owner[72];                 /* the plugin's name: its notices' component */
	pthread_mutex_t mu;
	int64_t window_ms;              /* when the interval began (clock_mono_ms); 0: none yet */
	int64_t lines;                  /* written in it */
	int64_t dropped, dropped_errors; /* in it, not yet said */
	_Atomic uint64_t dropped_total; /* since the plugin was started (/metrics) */
} log_budget;

void log_budget_init(log_budget *b, const char *owner);
/* Says what the last interval dropped, if that is unsaid, and frees b's
 * mutex. */
void log_budget_fini(log_budget *b);
/* The [log] plugin_rate_limit_* settings, for every budget: `burst` lines
 * (0: no limit) per `interval_ms`. Applied at once (a reload). */
void log_set_rate_limit(int64_t burst, int64_t interval_ms);

/* `ms` (≥ 0) as seconds for a log line, into buf[0..n): "30", "1.5",
 * "0.25" (a duration key given in ms is said as it is, not rounded).
 * Returns buf. */
char *log_seconds(char *buf, size_t n, int64_t ms);
/* log_msg_at for a line counted against `b` (dropped when over it), the
 * plugin's own or the host's about it (`component`: its name, "kafka"). */
void log_msg_budget(log_budget *b, int threshold, evh_log_level level, const char *component,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Says the drops of an interval that has ended with no line since (the
 * main thread calls it every few seconds). */
void log_budget_sweep(log_budget *b);

/* Name the calling thread "<prefix><name>", cut to the kernel's 15
 * characters, as top -H, ps -L, perf and gdb show it (prctl: no file is
 * written, which the systemd unit's sandbox checks). Best effort: a
 * failure changes nothing else. */
void log_thread_name(const char *prefix, const char *name);

/* For lines said at most once every `every_ms`: 1, and *last_ms = now, when
 * none was said yet (*last_ms is 0) or the last one is `every_ms` or more
 * before `now` (clock_mono_ms()); else 0. Calls on one `last_ms` must not
 * race (the caller's lock or thread). */
static inline int log_due(int64_t *last_ms, int64_t now, int64_t every_ms)
{
	if (*last_ms && now - *last_ms < every_ms)
		return 0;
	*last_ms = now;
	return 1;
}

/* log_due for a line any thread may say: the thread that moves *last_ms
 * says it. */
static inline int log_due_shared(_Atomic int64_t *last_ms, int64_t now, int64_t every_ms)
{
	int64_t last = atomic_load(last_ms);
	return (!last || now - last >= every_ms) &&
	       atomic_compare_exchange_strong(last_ms, &last, now);
}

/* A line that stands for many (one refusal of a burst): said at most once
 * every `every_ms`, with how many were not said since. Zero-initialised;
 * any thread. */
typedef struct log_every {
	_Atomic int64_t last_ms;
	_Atomic int64_t unsaid;
} log_every;

/* 1 when the line is due (log_due_shared), with *unsaid how many were not
 * said since the last; else 0, and this one is counted as not said. */
static inline int log_every_due(log_every *e, int64_t now, int64_t every_ms, int64_t *unsaid)
{
	if (!log_due_shared(&e->last_ms, now, every_ms)) {
		atomic_fetch_add(&e->unsaid, 1);
		return 0;
	}
	*unsaid = atomic_exchange(&e->unsaid, 0);
	return 1;
}

#define log_error(c, ...) log_msg(EVH_LOG_ERROR, c, __VA_ARGS__)
#define log_warn(c, ...) log_msg(EVH_LOG_WARN, c, __VA_ARGS__)
#define log_info(c, ...) log_msg(EVH_LOG_INFO, c, __VA_ARGS__)
#define log_debug(c, ...) log_msg(EVH_LOG_DEBUG, c, __VA_ARGS__)
#endif
