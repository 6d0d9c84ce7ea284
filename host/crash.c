#define _GNU_SOURCE /* REG_RSP */
#include "crash.h"

#include <ctype.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "log.h"

/* Pointers only: setting them costs nothing per request or event; the line
 * is made in the handler, with async-signal-safe steps alone. */
enum crash_kind { CRASH_NONE, CRASH_HTTP, CRASH_EVENT, CRASH_CALL };
static _Thread_local struct {
	enum crash_kind kind;
	const char *plugin, *a, *b, *c;
	int64_t n1, n2;
} ctx;

void crash_enter_http(const char *plugin, const char *method, const char *path,
                      const char *request_id)
{
	ctx.plugin = plugin;
	ctx.a = method;
	ctx.b = path;
	ctx.c = request_id;
	ctx.kind = CRASH_HTTP;
}

void crash_enter_event(const char *plugin, const char *topic, int32_t partition,
                       int64_t offset, const char *event_id)
{
	ctx.plugin = plugin;
	ctx.a = topic;
	ctx.n1 = partition;
	ctx.n2 = offset;
	ctx.c = event_id;
	ctx.kind = CRASH_EVENT;
}

void crash_enter_call(const char *plugin, const char *what)
{
	ctx.plugin = plugin;
	ctx.a = what;
	ctx.kind = CRASH_CALL;
}

void crash_leave(void) { ctx.kind = CRASH_NONE; }

const char *crash_plugin(void) { return ctx.kind == CRASH_NONE ? NULL : ctx.plugin; }

/* ------------------------------------------------------ the crash record */

/* The event a crash of the last run happened on (read at start), and where
 * the handler writes the next one: "COUNT PARTITION OFFSET PLUGIN TOPIC
 * ID\n", COUNT the starts in a row that crashed on that event, ID "h:" and
 * the event id's bytes in hex (an id is any bytes: one that began with a
 * space or held a newline came back another id, and its copies were not
 * known), or "-" for none or one of RECORD_ID_MAX bytes or more. The id
 * also finds the event's copies at other offsets (the relay sends an event
 * again when it crashed before the broker's acknowledgement was recorded). */
#define RECORD_ID_MAX 256
static char record_path[PATH_MAX];
static struct {
	long count;
	int32_t partition;
	int64_t offset;
	int64_t at_ms; /* the record's mtime: when the crash was recorded */
	char plugin[128], topic[256], id[RECORD_ID_MAX];
} last;
static atomic_int last_set; /* `last` holds a record not cleared yet */

/* The ID field of a record into last.id: 0, or -1 when it is not one. An
 * older evhostd wrote the id as it was (its copies were matched when it held
 * no space or newline): taken as it is. */
static int record_id_read(const char *field)
{
	size_t n = strlen(field);
	if (!strcmp(field, "-")) {
		last.id[0] = '\0';
		return 0;
	}
	if (strncmp(field, "h:", 2)) {
		if (n >= sizeof last.id)
			return -1;
		memcpy(last.id, field, n + 1);
		return 0;
	}
	field += 2;
	n -= 2;
	if (n % 2 || n / 2 >= sizeof last.id)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (!isxdigit((unsigned char)field[2 * i]) ||
		    !isxdigit((unsigned char)field[2 * i + 1]) ||
		    sscanf(field + 2 * i, "%2x", &v) != 1 || !v)
			return -1;
		last.id[i] = (char)v;
	}
	last.id[n / 2] = '\0';
	return 0;
}

void crash_record_open(const char *state_dir)
{
	char line[2048], id[2 * RECORD_ID_MAX + 8];
	struct stat st;
	FILE *f;
	int n = -1;
	atomic_store(&last_set, 0);
	if (snprintf(record_path, sizeof record_path, "%s/" CRASH_RECORD_FILE, state_dir) >=
	    (int)sizeof record_path) {
		record_path[0] = '\0';
		return;
	}
	if (!(f = fopen(record_path, "re")))
		return;
	last.at_ms = fstat(fileno(f), &st) ? 0
	                                   : (int64_t)st.st_mtim.tv_sec * 1000 +
	                                         st.st_mtim.tv_nsec / 1000000;
	if (fgets(line, sizeof line, f))
		n = sscanf(line, "%ld %" SCNd32 " %" SCNd64 " %127s %255s %519s", &last.count,
		           &last.partition, &last.offset, last.plugin, last.topic, id);
	fclose(f);
	if (n == 6 && last.count > 0 && record_id_read(id) == 0) {
		atomic_store(&last_set, 1);
		log_warn("host", "the last run crashed in plugin '%s' handling event %s of %s [%d] "
		                 "at offset %" PRId64 " (%ld start%s in a row)%s",
		         last.plugin, last.id, last.topic, (int)last.partition, last.offset,
		         last.count, last.count == 1 ? "" : "s",
		         last.count >= CRASH_RECORD_LIMIT
		             ? ": that event is dead-lettered without calling the handler again"
		             : ": it is handled again; should it crash again, the next start "
		               "dead-letters it");
	} else {
		unlink(record_path); /* not one of ours, or cut short: no event to name */
	}
}

/* Is the event at topic [partition] @offset with id `id` the recorded one:
 * RECORD_HERE at its place, RECORD_COPY a copy of it (its id; an id longer
 * than the record keeps is not compared), else 0. */
enum { RECORD_COPY = 1, RECORD_HERE };
static int record_is(const char *plugin, const char *topic, int64_t partition, int64_t offset,
                     const char *id)
{
	if (strcmp(last.plugin, plugin))
		return 0;
	if (last.partition == partition && last.offset == offset && !strcmp(last.topic, topic))
		return RECORD_HERE;
	return id && *id && strlen(id) < RECORD_ID_MAX && !strcmp(last.id, id) ? RECORD_COPY : 0;
}

long crash_record_match(const char *plugin, const char *topic, int32_t partition,
                        int64_t offset, const char *id, int *at_place)
{
	int where = atomic_load(&last_set) ? record_is(plugin, topic, partition, offset, id) : 0;
	*at_place = where == RECORD_HERE;
	return where ? last.count : 0;
}

int64_t crash_record_time_ms(void)
{
	return atomic_load(&last_set) ? last.at_ms : 0;
}

void crash_record_clear(void)
{
	if (atomic_exchange(&last_set, 0) && record_path[0])
		unlink(record_path);
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)

/* Room for the FATAL line's longest: its own text, a plugin's name, a
 * topic's, and each field that came from outside cut at SHOWN_MAX. */
typedef struct {
	char buf[2048];
	size_t n;
} line;
#define SHOWN_MAX 256

/* How far above the handler's frame a fault counts as on this thread's
 * stack: a large local array in a plugin's handler jumps past the stack's
 * end by its size. */
#define STACK_HINT_BYTES (4u << 20)
#define ALTSTACK_BYTES (64 * 1024)
#define ALTSTACK_GUARD 4096

static void put(line *l, const char *s)
{
	size_t k = s ? strlen(s) : 6;
	if (!s)
		s = "(null)";
	if (k > sizeof l->buf - 1 - l->n)
		k = sizeof l->buf - 1 - l->n;
	memcpy(l->buf + l->n, s, k);
	l->n += k;
}

/* put() of text that came from outside (a request's decoded path, an
 * event's id): a byte below 0x20 or 0x7f as \xNN, so that a path holding
 * "%0A{...}" neither splits the line nor forges a second one; past
 * SHOWN_MAX bytes of it, "...", so that what follows it (the event's place,
 * the line's end) is not cut off. */
static void put_escaped(line *l, const char *s)
{
	size_t end = l->n + SHOWN_MAX;
	for (; s && *s && l->n + 4 < sizeof l->buf - 1; s++) {
		if (l->n + 4 > end) {
			put(l, "...");
			return;
		}
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c != 0x7f) {
			l->buf[l->n++] = (char)c;
			continue;
		}
		l->buf[l->n++] = '\\';
		l->buf[l->n++] = 'x';
		l->buf[l->n++] = "0123456789abcdef"[c >> 4];
		l->buf[l->n++] = "0123456789abcdef"[c & 15];
	}
	if (!s)
		put(l, NULL);
}

/* put() each string argument in turn, up to a NULL. */
static void put_all(line *l, ...)
{
	va_list ap;
	const char *s;
	va_start(ap, l);
	while ((s = va_arg(ap, const char *)))
		put(l, s);
	va_end(ap);
}

static void put_int(line *l, int64_t v)
{
	char d[24];
	int i = (int)sizeof d;
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	d[--i] = '\0';
	do
		d[--i] = (char)('0' + u % 10);
	while ((u /= 10) && i > 1);
	if (v < 0)
		d[--i] = '-';
	put(l, d + i);
}

static void put_hex(line *l, uintptr_t v)
{
	char d[2 + 2 * sizeof v + 1];
	int i = (int)sizeof d;
	d[--i] = '\0';
	do
		d[--i] = "0123456789abcdef"[v & 15];
	while ((v >>= 4) && i > 2);
	d[--i] = 'x';
	d[--i] = '0';
	put(l, d + i);
}

/* The record's ID field (crash_record_open's). */
static void put_record_id(line *l, const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (!n || n >= RECORD_ID_MAX) {
		put(l, "-");
		return;
	}
	put(l, "h:");
	for (size_t i = 0; i < n && l->n + 2 < sizeof l->buf - 1; i++) {
		unsigned char c = (unsigned char)id[i];
		l->buf[l->n++] = "0123456789abcdef"[c >> 4];
		l->buf[l->n++] = "0123456789abcdef"[c & 15];
	}
}

/* The event this thread crashed on, for the next start (crash_record_*):
 * open, write, clock_gettime, futimens and fsync are async-signal-safe.
 * Said on the line. The record's time is the crash's to the nanosecond: the
 * file system stamps a write from a clock up to a tick (4 ms) behind, and a
 * copy redriven a moment before the crash (with the one it crashed on) would
 * look redriven after it, a new try (crash_record_time_ms). */
static void record_event(line *l)
{
	line r = {.n = 0};
	long count = 1;
	struct timespec when[2];
	int fd, written;
	if (!record_path[0])
		return;
	if (atomic_load(&last_set) && record_is(ctx.plugin, ctx.a, ctx.n1, ctx.n2, ctx.c))
		count = last.count + 1;
	put_int(&r, count);
	put(&r, " ");
	put_int(&r, ctx.n1);
	put(&r, " ");
	put_int(&r, ctx.n2);
	put_all(&r, " ", ctx.plugin, " ", ctx.a, " ", (char *)NULL);
	put_record_id(&r, ctx.c);
	put(&r, "\n");
	fd = open(record_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	written = fd >= 0 && write(fd, r.buf, r.n) == (ssize_t)r.n;
	if (written && clock_gettime(CLOCK_REALTIME, &when[0]) == 0) {
		when[1] = when[0];
		(void)futimens(fd, when); /* else the file system's stamp, a tick at most off */
	}
	if (!written || fsync(fd) != 0) {
		put(l, " (the crash could not be recorded for the next start)");
	} else if (count >= CRASH_RECORD_LIMIT) {
		put(l, "; it crashed on this event at ");
		put_int(l, count);
		put(l, " starts in a row: the next start dead-letters it without calling the "
		       "handler");
	}
	if (fd >= 0)
		close(fd);
}

static const char *signal_name(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGILL: return "SIGILL";
	case SIGFPE: return "SIGFPE";
	case SIGABRT: return "SIGABRT";
	default: return "a fatal signal";
	}
}

/* The stack pointer of the code the signal interrupted (the handler runs
 * on a stack of its own, crash_thread_enter); where it is not known, the
 * handler's own frame, which is on that stack when there is no other. */
static uintptr_t interrupted_sp(const void *uc, const void *frame)
{
#if defined(__x86_64__)
	return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
	return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.sp;
#else
	(void)uc;
	return (uintptr_t)frame;
#endif
}

/* stderr is the journal's stream (crash_handlers_install looked). */
static int to_journal;

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
	line l = {.n = 0};
	void *frames[48];
	int n;
	if (to_journal) /* syslog's crit, for journald (log_stderr_is_journal) */
		put(&l, "<2>");
	put(&l, "evhostd: FATAL: ");
	put(&l, signal_name(sig));
	if (sig == SIGSEGV || sig == SIGBUS) {
		uintptr_t at = (uintptr_t)si->si_addr, sp = interrupted_sp(uc, &l);
		put(&l, " at address ");
		put_hex(&l, at);
		/* At the stack pointer of the code that faulted, or just above
		 * it: the thread's stack, grown past its end. */
		if (sig == SIGSEGV && (at >= sp ? at - sp < STACK_HINT_BYTES : sp - at <= 4096))
			put(&l, " (this thread's stack: a stack overflow? HTTP workers have 100 KiB "
			        "stacks; keep large buffers on the heap)");
	}
	switch (ctx.kind) {
	case CRASH_NONE: put(&l, " outside any plugin call"); break;
	case CRASH_HTTP:
		put_all(&l, " in plugin '", ctx.plugin, "', handling HTTP ", ctx.a, " ", (char *)NULL);
		put_escaped(&l, ctx.b);
		put(&l, " (request id ");
		put_escaped(&l, ctx.c);
		put(&l, ")");
		break;
	case CRASH_EVENT:
		put_all(&l, " in plugin '", ctx.plugin, "', handling event ", (char *)NULL);
		put_escaped(&l, ctx.c);
		put_all(&l, " of ", ctx.a, " [", (char *)NULL);
		put_int(&l, ctx.n1);
		put(&l, "] at offset ");
		put_int(&l, ctx.n2);
		put(&l, " (not committed: it is handled again after the restart)");
		break;
	case CRASH_CALL: put_all(&l, " in plugin '", ctx.plugin, "', in its ", ctx.a, (char *)NULL);
	}
	if (ctx.kind == CRASH_EVENT)
		record_event(&l);
	put(&l, "; the daemon stops. Backtrace:\n");
	if (l.buf[l.n - 1] != '\n') /* cut short: still one line */
		l.buf[l.n - 1] = '\n';
	(void)!write(STDERR_FILENO, l.buf, l.n);
	n = backtrace(frames, (int)(sizeof frames / sizeof frames[0]));
	backtrace_symbols_fd(frames, n, STDERR_FILENO);
	/* SA_RESETHAND put the default action back: a fault recurs when this
	 * returns; a signal sent (abort, kill) is raised again. A core dump
	 * either way. */
	if (si->si_code <= 0)
		raise(sig);
}

/* The handler's own stack, per thread that runs plugin code: a stack that
 * overflowed has no room left for the handler, which the kernel could not
 * start then (the daemon died without its line). Guarded below. */
void *crash_thread_enter(void)
{
	stack_t ss;
	char *m = mmap(NULL, ALTSTACK_GUARD + ALTSTACK_BYTES, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return NULL; /* the thread's own stack, as before */
	(void)mprotect(m, ALTSTACK_GUARD, PROT_NONE);
	memset(&ss, 0, sizeof ss);
	ss.ss_sp = m + ALTSTACK_GUARD;
	ss.ss_size = ALTSTACK_BYTES;
	if (sigaltstack(&ss, NULL) != 0) {
		munmap(m, ALTSTACK_GUARD + ALTSTACK_BYTES);
		return NULL;
	}
	return m;
}

void crash_thread_leave(void *stack)
{
	stack_t ss;
	if (!stack)
		return;
	memset(&ss, 0, sizeof ss);
	ss.ss_flags = SS_DISABLE;
	(void)sigaltstack(&ss, NULL);
	munmap(stack, ALTSTACK_GUARD + ALTSTACK_BYTES);
}

void crash_handlers_install(void)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
	struct sigaction sa;
	void *warm[1];
	/* backtrace() loads libgcc on its first call, which allocates: not in
	 * a signal handler. */
	(void)backtrace(warm, 1);
	to_journal = log_stderr_is_journal(); /* not in the handler: getenv, sscanf */
	(void)crash_thread_enter(); /* the main thread's (init, fini): for good */
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_fatal;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
}
#else
void crash_handlers_install(void) {}
void *crash_thread_enter(void) { return NULL; }
void crash_thread_leave(void *stack) { (void)stack; }
#endif
