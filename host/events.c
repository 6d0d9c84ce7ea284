/* Event envelope: ids, timestamps, trace context and the CloudEvents 1.0
 * binary-mode Kafka headers. No shared state (each thread has its own pool
 * of random bytes); safe from any thread. */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define EVENTS_SPECVERSION "1.0"
#define EVENTS_CONTENT_TYPE "application/json"

/* Read from /dev/urandom when getrandom() is unavailable (ENOSYS in odd
 * sandboxes). Returns 0 when `n` bytes were read. */
static int urandom_fill(unsigned char *buf, size_t n)
{
	size_t got = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	return got == n ? 0 : -1;
}

/* Ids must never repeat, so there is no weak fallback: without a kernel
 * random source the process cannot publish events at all. */
static void random_fill(unsigned char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(buf + got, n - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		got += (size_t)r;
	}
	if (got == n || urandom_fill(buf, n) == 0)
		return;
	fprintf(stderr, "evhost: no kernel random source (getrandom, /dev/urandom): %s\n",
	        strerror(errno));
	abort();
}

/* Ids need kernel randomness, not a system call each: every thread keeps a
 * pool that one getrandom() refills, and each byte is used once. A forked
 * child starts with an empty pool (the parent's copy would repeat its ids). */
#define RANDOM_POOL_BYTES 512

static atomic_uint fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static _Thread_local struct {
	unsigned char b[RANDOM_POOL_BYTES];
	size_t used; /* bytes of b already handed out */
	unsigned generation;
	int filled;
} pool;

static void on_fork_child(void) { atomic_fetch_add(&fork_generation, 1); }

static void register_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

static void random_bytes(unsigned char *out, size_t n)
{
	unsigned gen;
	pthread_once(&atfork_once, register_atfork);
	gen = atomic_load(&fork_generation);
	if (n > sizeof pool.b) {
		random_fill(out, n);
		return;
	}
	if (!pool.filled || pool.generation != gen || sizeof pool.b - pool.used < n) {
		random_fill(pool.b, sizeof pool.b);
		pool.used = 0;
		pool.generation = gen;
		pool.filled = 1;
	}
	memcpy(out, pool.b + pool.used, n);
	pool.used += n;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

/* UUIDv7 (RFC 9562): 48 bits of Unix time in milliseconds, then 74 random
 * bits. Ids of events published close together sort close together, so the
 * indexes keyed by them (a consumer's inbox, the event log) grow at their
 * end instead of touching a random page for every event. */
void events_uuid(char out[37])
{
	unsigned char b[16];
	char hex[33];
	struct timespec ts;
	uint64_t ms;
	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	random_bytes(b + 6, sizeof b - 6);
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x70); /* version 7 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
	hex_encode(b, sizeof b, hex);
	/* 8-4-4-4-12 (no snprintf: this runs once per event published) */
	memcpy(out, hex, 8);
	out[8] = '-';
	memcpy(out + 9, hex + 8, 4);
	out[13] = '-';
	memcpy(out + 14, hex + 12, 4);
	out[18] = '-';
	memcpy(out + 19, hex + 16, 4);
	out[23] = '-';
	memcpy(out + 24, hex + 20, 13); /* with the NUL */
}

/* The latest time events_now_rfc3339 gave, in ms since the epoch. */
static _Atomic int64_t latest_given_ms;

void events_now_rfc3339(char out[40])
{
	struct tm tm;
	time_t sec;
	size_t n;
	/* Never earlier than a time given before: a wall clock set back (NTP's
	 * step) stamped an event published after another with an earlier
	 * ce_time, which consumers that order by it (notifications' recipients)
	 * took for the older one, and ignored, for as long as the step. Held at
	 * the latest until the clock catches up; ties are told apart by
	 * evhost_seq. */
	int64_t ms = clock_raise_ms(&latest_given_ms, clock_wall_ms());
	sec = (time_t)(ms / 1000);
	gmtime_r(&sec, &tm);
	n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 40 - n, ".%03uZ", (unsigned)(ms % 1000));
}

long long events_time_held_ms(void)
{
	int64_t ahead = atomic_load(&latest_given_ms) - clock_wall_ms();
	return ahead > 0 ? (long long)ahead : 0;
}

static int all_zero(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

void events_random_hex(char *out, size_t bytes)
{
	unsigned char b[16];
	/* W3C trace context: an all-zero trace-id or parent-id is invalid. */
	do
		random_bytes(b, bytes);
	while (all_zero(b, bytes));
	hex_encode(b, bytes, out);
}

/* in[0..n) as lowercase hex into out (NUL-terminated): 1, or 0 when all
 * digits are zero, or -1 (out unfinished) at a character that is not a hex
 * digit. Without <ctype.h>: this runs for every event consumed. */
static int hex_copy(const char *in, size_t n, char *out)
{
	int nonzero = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
		out[i] = c;
		nonzero |= c != '0';
	}
	out[n] = '\0';
	return nonzero;
}

int events_traceparent_parse(const char *tp, char trace_id[33], char span_id[17], int *flags)
{
	char v[3], t[33], sp[17], f[3];
	/* Version 00 is exactly 55 characters; a later version may add fields
	 * after a '-', and its first four are read the same way (W3C). Ids may
	 * not be all zero; version ff is invalid. */
	if (!tp || strnlen(tp, 56) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' ||
	    (tp[55] && (tp[55] != '-' || !strncmp(tp, "00", 2))) || hex_copy(tp, 2, v) < 0 ||
	    !strcmp(v, "ff") || hex_copy(tp + 3, 32, t) != 1 || hex_copy(tp + 36, 16, sp) != 1 ||
	    hex_copy(tp + 53, 2, f) < 0)
		return -1;
	if (trace_id)
		memcpy(trace_id, t, 33);
	if (span_id)
		memcpy(span_id, sp, 17);
	if (flags)
		*flags = (int)strtol(f, NULL, 16);
	return 0;
}

int events_trace_id(const char *tp, char out[33])
{
	return events_traceparent_parse(tp, out, NULL, NULL);
}

static int add_header(rd_kafka_headers_t *hdrs, const char *name, const char *value)
{
	if (!value || !*value)
		return 0;
	return rd_kafka_header_add(hdrs, name, -1, value, -1) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0
	                                                                                     : -1;
}

int events_headers_encode(const ce_meta *m, rd_kafka_headers_t *hdrs)
{
	const char *spec = m->specversion[0] ? m->specversion : EVENTS_SPECVERSION;
	const char *ctype = m->content_type[0] ? m->content_type : EVENTS_CONTENT_TYPE;
	if (add_header(hdrs, "ce_id", m->id) || add_header(hdrs, "ce_type", m->type) ||
	    add_header(hdrs, "ce_source", m->source) || add_header(hdrs, "ce_specversion", spec) ||
	    add_header(hdrs, "ce_time", m->time) || add_header(hdrs, "content-type", ctype) ||
	    add_header(hdrs, "traceparent", m->traceparent))
		return -1;
	return 0;
}

/* Header values are raw bytes without a terminator: copy at most cap-1 of
 * them and stop at an embedded NUL, so the result is always a C string.
 * Returns 1 when that cut the value short. */
static int copy_value(const void *val, size_t size, char *dst, size_t cap)
{
	size_t n = size < cap - 1 ? size : cap - 1;
	const char *nul;
	dst[0] = '\0';
	if (!val)
		return 0;
	nul = memchr(val, '\0', n);
	if (nul)
		n = (size_t)(nul - (const char *)val);
	memcpy(dst, val, n);
	dst[n] = '\0';
	return n < size;
}

int events_id_usable(const void *v, size_t n)
{
	return v && n > 0 && n < sizeof ((ce_meta *)0)->id && !memchr(v, '\0', n);
}

/* One pass over the headers (a lookup per name would scan them all each
 * time: this runs for every consumed message). A name given twice: the
 * last one wins, as with rd_kafka_header_get_last. */
int events_headers_decode(const rd_kafka_headers_t *hdrs, ce_meta *m)
{
	const char *name;
	const void *val;
	size_t size;
	memset(m, 0, sizeof *m);
	if (!hdrs)
		return -1;
	for (size_t i = 0;
	     rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
	     i++) {
		char *dst = NULL;
		size_t cap = 0;
		if (!strncmp(name, "ce_", 3)) {
			const char *n = name + 3;
			if (!strcmp(n, "id"))
				dst = m->id, cap = sizeof m->id;
			else if (!strcmp(n, "type"))
				dst = m->type, cap = sizeof m->type;
			else if (!strcmp(n, "source"))
				dst = m->source, cap = sizeof m->source;
			else if (!strcmp(n, "specversion"))
				dst = m->specversion, cap = sizeof m->specversion;
			else if (!strcmp(n, "time"))
				dst = m->time, cap = sizeof m->time;
		} else if (!strcmp(name, "content-type")) {
			dst = m->content_type, cap = sizeof m->content_type;
		} else if (!strcmp(name, "traceparent")) {
			dst = m->traceparent, cap = sizeof m->traceparent;
		}
		if (dst == m->id) /* the last one wins, its length too */
			m->id_cut = copy_value(val, size, dst, cap);
		else if (dst == m->type)
			m->type_cut = copy_value(val, size, dst, cap);
		else if (dst == m->source)
			m->source_cut = copy_value(val, size, dst, cap);
		else if (dst == m->time)
			m->time_cut = copy_value(val, size, dst, cap);
		else if (dst)
			copy_value(val, size, dst, cap);
	}
	return m->id[0] && m->type[0] ? 0 : -1;
}
