/* Tracing: OpenTelemetry spans for what evhost does on a trace's way (an
 * HTTP request, an event's creation, its handling by a consumer), exported
 * to an OpenTelemetry collector with OTLP/HTTP in its JSON encoding.
 *
 * A span lives on its creator's stack: trace_begin, attributes, trace_end.
 * trace_end copies a sampled span into a bounded queue, and the exporter
 * thread sends the queue in batches. Nothing on the request or consumer
 * path waits for the collector: when the queue is full its oldest spans
 * make room for new ones, and a batch the collector has not taken within
 * [tracing] retry_max_time (or after 3 retries of failures it set no time
 * for) is dropped; both are counted (evhost_trace_spans_total). A
 * collector's Retry-After (on 429 or 503) holds the exporter's next
 * request, for at most a minute, while spans queue; it is no failure and
 * uses up no retry. Without [tracing] otlp_endpoint no span is recorded: a span is
 * then its context alone (a traceparent read, about 0.2 µs with the
 * attribute calls, which return at once), and W3C trace context is carried
 * through HTTP and Kafka headers all the same. */
#ifndef EVHOST_TRACE_H
#define EVHOST_TRACE_H
#include <stddef.h>
#include <stdint.h>

struct settings;

/* OTLP's SpanKind values. */
typedef enum trace_kind {
	TRACE_INTERNAL = 1,
	TRACE_SERVER = 2,
	TRACE_CLIENT = 3,
	TRACE_PRODUCER = 4,
	TRACE_CONSUMER = 5,
} trace_kind;

#define TRACE_MAX_ATTRS 16
#define TRACE_TEXT_MAX 2048 /* attribute keys, values and status text of one span, escaped */
#define TRACE_VALUE_MAX 256 /* bytes of one key or value, escaped; longer ones are cut */

typedef struct trace_span {
	char trace_id[33];  /* 32 lowercase hex digits */
	char span_id[17];   /* 16 */
	char parent_id[17]; /* "" for a trace's first span here */
	unsigned char sampled;   /* the W3C sampled flag, passed on to children */
	unsigned char recording; /* sampled and exported: the calls below record */
	unsigned char kind;      /* trace_kind */
	unsigned char error;     /* status ERROR */
	unsigned char nattrs;
	uint64_t start_ns, end_ns; /* since the Unix epoch */
	char name[128];
	struct {
		int64_t num; /* the value of an integer attribute */
		short key;   /* the key's offset in text */
		short at;    /* the value's offset in text; -1 for an integer */
	} attrs[TRACE_MAX_ATTRS];
	short status_at; /* the status message's offset in text; -1: none */
	size_t used;
	char text[TRACE_TEXT_MAX]; /* JSON-escaped values, each NUL-terminated */
} trace_span;

/* Start exporting per `s` ([tracing]): a no-op without otlp_endpoint.
 * `tls` (tls_compat.h's tls_client, owned from now on, NULL for http://):
 * the client host_configure set up and checked for an https:// endpoint.
 * Returns 0, or -1 after logging why (out of memory, no thread). */
int trace_start(const struct settings *s, void *tls);
/* Send what is queued (for at most `timeout_ms`, and no longer than [tracing]
 * export_timeout), then stop the exporter. Spans ended later are not
 * recorded. */
void trace_stop(int timeout_ms);
/* Whether spans are being exported. */
int trace_enabled(void);

/* Begin `sp` now, as a child of `parent` (a W3C traceparent, such as an
 * HTTP header or an event's), else of the calling thread's current span
 * (trace_current_set), else as the first span of a new trace: in the trace
 * `trace_id` when that is 32 lowercase hex digits, not all zero, else in a
 * random one. A new trace is sampled per [tracing] sample_ratio, decided by
 * its id so every evhost decides it alike; a child follows its parent. A
 * span that is not recorded takes its parent's span id (a new one when it
 * has no parent), so what it passes on never names a span no one has. */
void trace_begin(trace_span *sp, trace_kind kind, const char *parent, const char *trace_id,
                 const char *name_fmt, ...) __attribute__((format(printf, 5, 6)));
/* Do not record it (its context still passes on, as a span's that was not
 * sampled does not). */
void trace_drop(trace_span *sp);
/* Rename it (an HTTP span, once its route is known). */
void trace_rename(trace_span *sp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Attributes (at most TRACE_MAX_ATTRS; keys and text are escaped and cut to
 * TRACE_VALUE_MAX, and the attribute left out when the span's text is
 * full). NULL `key` or `value`: not set. */
void trace_attr(trace_span *sp, const char *key, const char *value);
void trace_attr_int(trace_span *sp, const char *key, int64_t value);
/* Status ERROR with a message. */
void trace_error(trace_span *sp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* End it now and queue it for export when it is recording. */
void trace_end(trace_span *sp);

/* The traceparent that makes `sp` the parent: "00-<trace>-<span>-<flags>". */
void trace_traceparent(const trace_span *sp, char out[56]);
/* The calling thread's current span, the parent of spans begun without one
 * (events published while an HTTP request or an event is handled). The span
 * must stay alive until trace_current_clear. */
void trace_current_set(const trace_span *sp);
void trace_current_clear(void);

/* The current span's context, to put back after a nested span (a plugin's
 * own, evh_span_begin) made itself current. */
typedef struct trace_ctx {
	char trace_id[33], span_id[17];
	unsigned char sampled, set;
} trace_ctx;
void trace_current_save(trace_ctx *out);
void trace_current_restore(const trace_ctx *in);

/* Counters for /metrics. */
void trace_stats(uint64_t *exported, uint64_t *queue_full, uint64_t *export_failed);

/* The OTLP/JSON request body for spans v[0..n) (tests, and the exporter):
 * malloc'd, NUL-terminated, or NULL when out of memory. */
char *trace_encode(const trace_span *v, size_t n, size_t *len);
#endif
