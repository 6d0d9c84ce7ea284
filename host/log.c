/* Logging: one line per event on stderr, text for people at a terminal and
 * JSON lines for journald and log shippers. Lines from concurrent threads
 * never interleave: each goes out whole under write_mu (one write() is not
 * enough: a pipe takes at most 4096 bytes at once when full, and a longer
 * line went out in parts with other threads' lines between them). */
#include "log.h"
#include "clock.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_MSG_MAX 4096 /* longer messages are cut (and say so) */
#define LOG_CTX_MAX 128
#define LOG_COMPONENT_MAX 64
/* Room for the worst case, every byte escaped to six (\u00XX), so a line is
 * never cut in the middle of a JSON string. */
#define LOG_LINE_MAX ((LOG_MSG_MAX + 2 * LOG_CTX_MAX + LOG_COMPONENT_MAX) * 6 + 256)

static atomic_int log_level_now = EVH_LOG_INFO;
static atomic_int log_fmt_now = -1; /* -1 until resolved; then TEXT or JSON, never AUTO */
static atomic_int log_journal = -1; /* log_stderr_is_journal, -1 until looked up */
/* [log] plugin_rate_limit_burst and _interval (log_set_rate_limit) */
static _Atomic int64_t log_rate_burst = LOG_RATE_BURST_DEFAULT;
static _Atomic int64_t log_rate_interval_ms = LOG_RATE_INTERVAL_MS_DEFAULT;

static _Thread_local char log_ctx_request[LOG_CTX_MAX];
static _Thread_local char log_ctx_trace[LOG_CTX_MAX];

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};
static const char *const log_level_text[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

/* auto: JSON under systemd (journald captures stderr) and whenever nobody
 * is watching a terminal; text when a person is. */
static log_format log_resolve(log_format f)
{
	if (f == LOG_FORMAT_TEXT || f == LOG_FORMAT_JSON)
		return f;
	if (getenv("JOURNAL_STREAM"))
		return LOG_FORMAT_JSON;
	return isatty(STDERR_FILENO) ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON;
}

static int log_clamp(evh_log_level level)
{
	int l = (int)level;
	return l < EVH_LOG_ERROR ? EVH_LOG_ERROR : l > EVH_LOG_DEBUG ? EVH_LOG_DEBUG : l;
}

int log_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;
	return e && sscanf(e, "%llu:%llu%c", &dev, &ino, &tail) == 2 &&
	       fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void log_setup(evh_log_level level, log_format format)
{
	atomic_store(&log_level_now, log_clamp(level));
	atomic_store(&log_fmt_now, (int)log_resolve(format));
	atomic_store(&log_journal, log_stderr_is_journal());
}

const char *log_level_name(evh_log_level level)
{
	return log_level_names[log_clamp(level)];
}

const char *log_format_name(log_format format)
{
	return format == LOG_FORMAT_TEXT ? "text" : format == LOG_FORMAT_JSON ? "json" : "auto";
}

int log_level_parse(const char *s, evh_log_level *out)
{
	if (!s)
		return -1;
	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, log_level_names[i])) {
			*out = (evh_log_level)i;
			return 0;
		}
	}
	if (!strcasecmp(s, "warning")) {
		*out = EVH_LOG_WARN;
		return 0;
	}
	return -1;
}

static void ctx_copy(char *dst, const char *src)
{
	if (!src) {
		dst[0] = '\0';
		return;
	}
	snprintf(dst, LOG_CTX_MAX, "%s", src);
}

void log_set_context(const char *request_id, const char *trace_id)
{
	ctx_copy(log_ctx_request, request_id);
	ctx_copy(log_ctx_trace, trace_id);
}

/* A small append-only buffer that silently stops at its end. */
typedef struct line_buf {
	char *p;
	size_t len, cap;
} line_buf;

static void lb_putc(line_buf *b, char c)
{
	if (b->len + 1 < b->cap)
		b->p[b->len++] = c;
}

static void lb_puts(line_buf *b, const char *s)
{
	while (*s)
		lb_putc(b, *s++);
}

static void lb_printf(line_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lb_printf(line_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len + 1 >= b->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	b->len += (size_t)n < b->cap - b->len ? (size_t)n : b->cap - b->len - 1;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1fu;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0fu;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07u;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3fu);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* Escape for a JSON string (json != 0) or for one text line: control
 * characters never reach the output raw, so a message cannot forge lines.
 * The C1 controls (U+0080 to U+009F) are escaped too: journald counts them
 * as control, and journalctl then shows "[N blob data]" for the whole line.
 * Invalid UTF-8 becomes U+FFFD so JSON consumers can always parse it. */
static void lb_escaped(line_buf *b, const char *s, int json)
{
	const unsigned char *u = (const unsigned char *)s;

	while (*u) {
		size_t n = utf8_len(u);
		if (n == 0) {
			lb_puts(b, json ? "\\ufffd" : "\xef\xbf\xbd");
			u++;
			continue;
		}
		if (n == 2 && u[0] == 0xc2 && u[1] <= 0x9f) { /* utf8_len: u[1] >= 0x80 */
			lb_printf(b, "\\u%04x", u[1]);
			u += n;
			continue;
		}
		if (n > 1) {
			for (size_t i = 0; i < n; i++)
				lb_putc(b, (char)u[i]);
			u += n;
			continue;
		}
		switch (*u) {
		case '"':
			lb_puts(b, json ? "\\\"" : "\"");
			break;
		case '\\':
			lb_puts(b, json ? "\\\\" : "\\");
			break;
		case '\n':
			lb_puts(b, "\\n");
			break;
		case '\r':
			lb_puts(b, "\\r");
			break;
		case '\t':
			lb_puts(b, json ? "\\t" : "\t");
			break;
		default:
			if (*u < 0x20 || *u == 0x7f)
				lb_printf(b, "\\u%04x", *u);
			else
				lb_putc(b, (char)*u);
		}
		u++;
	}
}

size_t log_json_escape(char *out, size_t cap, const char *s)
{
	const unsigned char *u = (const unsigned char *)(s ? s : "");
	size_t len = 0;

	if (!cap)
		return 0;
	while (*u) {
		/* One character at a time, so none is ever cut in two. */
		char one[5] = {0}, esc[16];
		line_buf b = {esc, 0, sizeof esc};
		size_t n = utf8_len(u);
		memcpy(one, u, n ? n : 1); /* an invalid byte: lb_escaped writes U+FFFD */
		lb_escaped(&b, one, 1);
		if (len + b.len + 1 > cap)
			break;
		memcpy(out + len, esc, b.len);
		len += b.len;
		u += n ? n : 1;
	}
	out[len] = '\0';
	return len;
}

/* 2026-11-28T04:00:00.123Z */
static void log_timestamp(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03dZ", (int)(ts.tv_nsec / 1000000L) % 1000);
}

/* `req` and `trace`: the line's context ("" for none). */
static void log_format_text(line_buf *b, const char *ts, int level, const char *comp,
                            const char *msg, const char *req, const char *trace)
{
	lb_printf(b, "%s %s [", ts, log_level_text[level]);
	lb_escaped(b, comp, 0);
	lb_puts(b, "] ");
	lb_escaped(b, msg, 0);
	if (req[0] || trace[0]) {
		lb_puts(b, " (");
		if (req[0]) {
			lb_puts(b, "request_id=");
			lb_escaped(b, req, 0);
		}
		if (trace[0]) {
			lb_puts(b, req[0] ? " trace_id=" : "trace_id=");
			lb_escaped(b, trace, 0);
		}
		lb_putc(b, ')');
	}
}

static void json_field(line_buf *b, const char *name, const char *value)
{
	lb_printf(b, ",\"%s\":\"", name);
	lb_escaped(b, value, 1);
	lb_putc(b, '"');
}

static void log_format_json(line_buf *b, const char *ts, int level, const char *comp,
                            const char *msg, const char *req, const char *trace)
{
	lb_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, log_level_names[level]);
	json_field(b, "component", comp);
	json_field(b, "msg", msg);
	if (req[0])
		json_field(b, "request_id", req);
	if (trace[0])
		json_field(b, "trace_id", trace);
	lb_putc(b, '}');
}

static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

/* How long a line waits for room on a stderr set non-blocking (by whoever
 * shares its file description): a reader that lags is waited for, one that
 * is gone costs each line this much at most. */
#define LOG_WAIT_ROOM_MS 1000

/* Under write_mu. */
static void log_write_all(const char *p, size_t len)
{
	int64_t until = 0;
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd room = {.fd = STDERR_FILENO, .events = POLLOUT};
			int64_t now = clock_mono_ms();
			if (!until)
				until = now + LOG_WAIT_ROOM_MS;
			if (now < until && (poll(&room, 1, (int)(until - now)) >= 0 || errno == EINTR))
				continue;
			return; /* the line is lost: there is no one to tell */
		}
		if (n <= 0)
			return; /* nowhere left to complain to */
		p += n;
		len -= (size_t)n;
	}
}

static void log_vmsg(int threshold, int ctx, evh_log_level level, const char *component,
                     const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

/* Whether a line at `lvl` (clamped) passes `threshold` (< 0: the [log] level). */
static int log_shown(int threshold, int lvl)
{
	return lvl <= (threshold < 0 ? atomic_load(&log_level_now) : threshold);
}

/* ctx: with the thread's context (log_set_context). */
static void log_vmsg(int threshold, int ctx, evh_log_level level, const char *component,
                     const char *fmt, va_list ap)
{
	const char *req = ctx ? log_ctx_request : "", *trace = ctx ? log_ctx_trace : "";
	char msg[LOG_MSG_MAX], ts[64], comp[LOG_COMPONENT_MAX];
	line_buf b;
	int lvl = log_clamp(level), fmt_now, journal, n;
	char prio[4] = "";

	if (!log_shown(threshold, lvl))
		return;
	fmt_now = atomic_load(&log_fmt_now);
	if (fmt_now < 0) {
		fmt_now = (int)log_resolve(LOG_FORMAT_AUTO);
		atomic_store(&log_fmt_now, fmt_now);
	}
	if ((journal = atomic_load(&log_journal)) < 0) {
		journal = log_stderr_is_journal();
		atomic_store(&log_journal, journal);
	}

	n = vsnprintf(msg, sizeof msg, fmt, ap);
	if (n < 0)
		snprintf(msg, sizeof msg, "(unformattable log message: %s)", fmt);
	else if ((size_t)n >= sizeof msg)
		memcpy(msg + sizeof msg - 16, "... (truncated)", 16);
	snprintf(comp, sizeof comp, "%s", component && *component ? component : "host");

	if (journal) /* syslog's err, warning, info, debug */
		snprintf(prio, sizeof prio, "<%c>", "3467"[lvl]);
	b.cap = LOG_LINE_MAX;
	b.len = 0;
	b.p = malloc(b.cap);
	if (!b.p) {
		/* Better an unadorned line than a lost one. */
		msg[strcspn(msg, "\n")] = '\0';
		pthread_mutex_lock(&write_mu);
		log_write_all(prio, strlen(prio));
		log_write_all(msg, strlen(msg));
		log_write_all("\n", 1);
		pthread_mutex_unlock(&write_mu);
		return;
	}
	lb_puts(&b, prio);
	log_timestamp(ts, sizeof ts);
	if (fmt_now == LOG_FORMAT_TEXT)
		log_format_text(&b, ts, lvl, comp, msg, req, trace);
	else
		log_format_json(&b, ts, lvl, comp, msg, req, trace);
	b.p[b.len++] = '\n'; /* lb_* always leave room for this */
	pthread_mutex_lock(&write_mu);
	log_write_all(b.p, b.len);
	pthread_mutex_unlock(&write_mu);
	free(b.p);
}

void log_msg(evh_log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(-1, 1, level, component, fmt, ap);
	va_end(ap);
}

void log_msg_no_context(evh_log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(-1, 0, level, component, fmt, ap);
	va_end(ap);
}

void log_msg_at(int threshold, evh_log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(threshold, 1, level, component, fmt, ap);
	va_end(ap);
}

void log_set_rate_limit(int64_t burst, int64_t interval_ms)
{
	atomic_store(&log_rate_burst, burst > 0 ? burst : 0);
	atomic_store(&log_rate_interval_ms, interval_ms > 0 ? interval_ms : 1000);
}

char *log_seconds(char *buf, size_t n, int64_t ms)
{
	int64_t frac = ms % 1000;
	int digits = 3;
	if (!frac) {
		snprintf(buf, n, "%" PRId64, ms / 1000);
		return buf;
	}
	for (; frac % 10 == 0; frac /= 10)
		digits--;
	snprintf(buf, n, "%" PRId64 ".%0*" PRId64, ms / 1000, digits, frac);
	return buf;
}

void log_budget_init(log_budget *b, const char *owner)
{
	memset(b, 0, sizeof *b);
	snprintf(b->owner, sizeof b->owner, "%s", owner ? owner : "");
	pthread_mutex_init(&b->mu, NULL);
}

/* What a budget has to say, found under its lock and said after it. */
typedef struct budget_news {
	int64_t dropped, errors, over_ms; /* an interval's drops, and its length */
	int64_t first_left_ms;            /* > 0: the first drop; the interval ends in this */
} budget_news;

/* The drops of b's interval (under its lock) into *n, and a new interval
 * from `now`. */
static void budget_turn(log_budget *b, int64_t now, budget_news *n)
{
	n->dropped = b->dropped;
	n->errors = b->dropped_errors;
	n->over_ms = now - b->window_ms;
	b->dropped = b->dropped_errors = 0;
	b->lines = 0;
	b->window_ms = now;
}

static void budget_say(const log_budget *b, const budget_news *n)
{
	const char *component = b->owner;
	char every[32];
	if (n->dropped)
		log_msg(EVH_LOG_WARN, component,
		        "logging too fast: %" PRId64 " of its lines (%" PRId64 " of them errors) were "
		        "dropped in the last %" PRId64 " s ([log] plugin_rate_limit_burst)",
		        n->dropped, n->errors, (n->over_ms + 999) / 1000);
	if (n->first_left_ms > 0)
		log_msg(EVH_LOG_WARN, component,
		        "logging too fast: more than %" PRId64 " lines in %s s, its own and "
		        "the host's about its calls and events ([log] plugin_rate_limit_burst, "
		        "plugin_rate_limit_interval); the rest are dropped for the next %" PRId64
		        " s, and counted",
		        atomic_load(&log_rate_burst),
		        log_seconds(every, sizeof every, atomic_load(&log_rate_interval_ms)),
		        (n->first_left_ms + 999) / 1000);
}

/* Whether b's interval is over at `now` (under its lock): none began yet,
 * it lasted its length, or the limit is off. */
static int budget_over(const log_budget *b, int64_t now)
{
	return !b->window_ms || !atomic_load(&log_rate_burst) ||
	       now - b->window_ms >= atomic_load(&log_rate_interval_ms);
}

/* 1 when b lets a line of `level` through now; what to say into *n. */
static int budget_take(log_budget *b, int level, budget_news *n)
{
	int64_t burst = atomic_load(&log_rate_burst);
	int64_t every = atomic_load(&log_rate_interval_ms);
	int64_t now;
	int pass = 1;

	memset(n, 0, sizeof *n);
	if (!burst) /* no limit: what an interval dropped before is the sweep's to say */
		return 1;
	now = clock_mono_ms();
	pthread_mutex_lock(&b->mu);
	if (budget_over(b, now))
		budget_turn(b, now, n);
	if (b->lines < burst) {
		b->lines++;
	} else {
		if (!b->dropped++)
			n->first_left_ms = every - (now - b->window_ms);
		b->dropped_errors += level == EVH_LOG_ERROR;
		atomic_fetch_add(&b->dropped_total, 1);
		pass = 0;
	}
	pthread_mutex_unlock(&b->mu);
	return pass;
}

void log_msg_budget(log_budget *b, int threshold, evh_log_level level, const char *component,
                    const char *fmt, ...)
{
	va_list ap;
	budget_news n;
	int lvl = log_clamp(level), pass;

	if (!log_shown(threshold, lvl))
		return; /* not shown: not counted */
	pass = budget_take(b, lvl, &n);
	budget_say(b, &n);
	if (!pass)
		return;
	va_start(ap, fmt);
	log_vmsg(threshold, 1, level, component, fmt, ap);
	va_end(ap);
}

void log_budget_sweep(log_budget *b)
{
	budget_news n;
	int64_t now = clock_mono_ms();

	memset(&n, 0, sizeof n);
	pthread_mutex_lock(&b->mu);
	if (b->dropped && budget_over(b, now))
		budget_turn(b, now, &n);
	pthread_mutex_unlock(&b->mu);
	budget_say(b, &n);
}

void log_budget_fini(log_budget *b)
{
	budget_news n;

	memset(&n, 0, sizeof n);
	if (b->dropped)
		budget_turn(b, clock_mono_ms(), &n);
	budget_say(b, &n);
	pthread_mutex_destroy(&b->mu);
}

void log_thread_name(const char *prefix, const char *name)
{
	char buf[16]; /* the kernel's limit, with the NUL */
	snprintf(buf, sizeof buf, "%s%s", prefix, name ? name : "");
	(void)prctl(PR_SET_NAME, buf, 0, 0, 0);
}
