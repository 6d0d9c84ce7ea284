/* The events both publish benchmarks send (evhost's bench plugin through the
 * SDK, bench_kafka straight through librdkafka), so the two sides move the
 * same bytes: key "k<seq>", a JSON value of exactly the requested size, and
 * CloudEvents type BENCH_EVENT_TYPE. Header-only; no state. */
#ifndef EVHOST_BENCH_EVENT_H
#define EVHOST_BENCH_EVENT_H
#include <stdio.h>
#include <string.h>

#define BENCH_EVENT_TYPE "bench.event"
/* Room for {"seq":<20 digits>,"pad":""}. */
#define BENCH_EVENT_MIN_SIZE 40

static inline void bench_event_key(char *out, size_t cap, long seq)
{
	snprintf(out, cap, "k%ld", seq);
}

/* Write {"seq":SEQ,"pad":"xxx..."} of exactly `size` bytes (size >=
 * BENCH_EVENT_MIN_SIZE, cap > size) and return its length. */
static inline size_t bench_event_value(char *out, size_t cap, long seq, size_t size)
{
	int head = snprintf(out, cap, "{\"seq\":%ld,\"pad\":\"", seq);
	size_t n = (size_t)head;
	if (head < 0 || size + 1 > cap || n + 2 > size)
		return 0;
	memset(out + n, 'x', size - n - 2);
	memcpy(out + size - 2, "\"}", 3);
	return size;
}
#endif
