/* Tracing: spans, their queue, and the OTLP/HTTP JSON exporter (trace.h).
 *
 * The exporter speaks HTTP/1.1 itself (a POST per batch, a connection per
 * POST, every step under a deadline) rather than through civetweb's client,
 * whose connect has no deadline: the stop must not wait minutes for a
 * collector that does not answer. An https:// endpoint is reached over TLS
 * (tls_compat.h: OpenSSL in evhost's libssl.so), the collector's
 * certificate checked against [tracing] otlp_ca_file or the system's CAs. */
#include "trace.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "events.h"
#include "httpc.h"
#include "log.h"
#include "loopback.h"
#include "redact.h"
#include "textbuf.h"
#include "tls_compat.h"

#define RETRIES 3          /* further attempts after failures the collector set no time for */
#define RETRY_FIRST_MS 500 /* then twice as long each time */
#define DROP_LOG_MS 60000  /* at most one line a minute about dropped spans, per reason */
#define RESPONSE_MAX 4096  /* of the collector's answer, kept for the log */
#define RETRY_AFTER_MAX_S 60 /* the longest wait a collector's Retry-After gets */

/* Why spans were dropped: each reason has its own line a minute, so one
 * that keeps happening (a full queue) does not hide another (the refusals
 * that fill it). */
typedef enum drop_reason {
	DROP_QUEUE_FULL,
	DROP_UNREACHABLE, /* no connection, or no HTTP answer */
	DROP_TLS,         /* the handshake, the collector's certificate */
	DROP_REFUSED,     /* an answer other than 2xx */
	DROP_NO_MEMORY,   /* for the request's body */
	DROP_REASONS
} drop_reason;

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	trace_span *ring; /* cap spans; n queued from head */
	size_t cap, head, n;
	trace_span *batch; /* the exporter's copy of what it sends */
	size_t batch_max;
	int stopping;
	pthread_t thread;
	int started;
	/* settings, fixed while running */
	char *host, *port, *path, *endpoint;
	char *req_head;    /* the request's headers after Host, up to its Content-Length */
	tls_client *tls;   /* https://, else NULL */
	int interval_ms, timeout_ms;
	int retry_max_ms;     /* retry_max_time: no try of a batch starts later after its first */
	uint64_t ratio_bound; /* sampled when the trace id's low 64 bits are below it */
	int ratio_all;        /* sample_ratio 1: every trace */
	char *resource;       /* the "resource" and "scope" JSON, rendered once */
	/* The exporter's own: no request before this (clock_mono_ms), as the
	 * collector's Retry-After asked, and what it answered then. */
	int64_t not_before;
	int asked_status, asked_s;
} ex = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .ratio_all = 1};
static pthread_once_t ex_cv_once = PTHREAD_ONCE_INIT;

/* ex.cv's waits are on the monotonic clock: made so by the first
 * trace_start, before anything waits on it. */
static void ex_cv_init(void) { clock_cond_init(&ex.cv); }

static atomic_int enabled;
static _Atomic uint64_t n_exported, n_queue_full, n_export_failed;
static _Atomic int64_t stop_deadline; /* clock_mono_ms by which the stop sends nothing more */
static _Atomic int64_t drop_logged[DROP_REASONS]; /* when each reason was last said */
static atomic_int stop_limit_ms;       /* what trace_stop allowed, for the log */

static _Thread_local trace_ctx current;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int trace_enabled(void) { return atomic_load_explicit(&enabled, memory_order_relaxed); }

void trace_stats(uint64_t *exported, uint64_t *queue_full, uint64_t *export_failed)
{
	*exported = atomic_load(&n_exported);
	*queue_full = atomic_load(&n_queue_full);
	*export_failed = atomic_load(&n_export_failed);
}

/* ------------------------------------------------------------- spans */

static int valid_trace_id(const char *t)
{
	return t && strlen(t) == 32 && strspn(t, "0123456789abcdef") == 32 && strspn(t, "0") < 32;
}

/* TraceIdRatioBased, as OpenTelemetry's SDKs decide it: by the trace id's
 * last 8 bytes, so every participant decides a trace alike. */
static int sample(const char *trace_id)
{
	char low[17];
	if (ex.ratio_all)
		return 1;
	memcpy(low, trace_id + 16, 16);
	low[16] = '\0';
	return strtoull(low, NULL, 16) < ex.ratio_bound;
}

__attribute__((format(printf, 2, 0))) static void set_name(trace_span *sp, const char *fmt,
                                                         va_list ap)
{
	if (vsnprintf(sp->name, sizeof sp->name, fmt, ap) < 0)
		sp->name[0] = '\0';
}

void trace_begin(trace_span *sp, trace_kind kind, const char *parent, const char *trace_id,
                 const char *name_fmt, ...)
{
	int flags = 0;
	va_list ap;

	sp->kind = (unsigned char)kind;
	sp->error = 0;
	sp->nattrs = 0;
	sp->status_at = -1;
	sp->used = 0;
	sp->end_ns = 0;
	if (parent && events_traceparent_parse(parent, sp->trace_id, sp->parent_id, &flags) == 0) {
		sp->sampled = flags & 1;
	} else if (!parent && current.set) {
		memcpy(sp->trace_id, current.trace_id, sizeof sp->trace_id);
		memcpy(sp->parent_id, current.span_id, sizeof sp->parent_id);
		sp->sampled = current.sampled;
	} else {
		if (valid_trace_id(trace_id))
			memcpy(sp->trace_id, trace_id, 33);
		else
			events_random_hex(sp->trace_id, 16);
		sp->parent_id[0] = '\0';
		/* With tracing off, every one (ratio_all): the services after
		 * this one that follow the flag record the trace, without this
		 * one's spans; on purpose (operations.md, "Tracing"). */
		sp->sampled = (unsigned char)sample(sp->trace_id);
	}
	sp->recording = sp->sampled && trace_enabled();
	if (!sp->recording) {
		/* A span nobody records passes its parent's id on, so the events
		 * published under it name a span a backend may have (the caller's,
		 * or the event's creator), and costs no random bytes. */
		if (sp->parent_id[0])
			memcpy(sp->span_id, sp->parent_id, sizeof sp->span_id);
		else
			events_random_hex(sp->span_id, 8);
		sp->name[0] = '\0';
		return;
	}
	events_random_hex(sp->span_id, 8);
	sp->start_ns = now_ns();
	va_start(ap, name_fmt);
	set_name(sp, name_fmt, ap);
	va_end(ap);
}

void trace_drop(trace_span *sp) { sp->recording = 0; }

void trace_rename(trace_span *sp, const char *fmt, ...)
{
	va_list ap;
	if (!sp->recording)
		return;
	va_start(ap, fmt);
	set_name(sp, fmt, ap);
	va_end(ap);
}

/* `value`, escaped, into the span's text: its offset, or -1 when no room is
 * left (not even for an empty string). */
static short put_text(trace_span *sp, const char *value)
{
	size_t room = sizeof sp->text - sp->used;
	short at = (short)sp->used;
	if (room == 0)
		return -1;
	if (room > TRACE_VALUE_MAX + 1)
		room = TRACE_VALUE_MAX + 1; /* so one long value leaves room for others */
	sp->used += log_json_escape(sp->text + sp->used, room, value) + 1;
	return at;
}

/* A new attribute with its key, or NULL when there is no room for one. */
static int add_attr(trace_span *sp, const char *key)
{
	short k;
	if (!sp->recording || !key || sp->nattrs >= TRACE_MAX_ATTRS || (k = put_text(sp, key)) < 0)
		return -1;
	sp->attrs[sp->nattrs].key = k;
	sp->attrs[sp->nattrs].at = -1;
	sp->attrs[sp->nattrs].num = 0;
	return sp->nattrs++;
}

void trace_attr(trace_span *sp, const char *key, const char *value)
{
	size_t used = sp->used;
	int i;
	if (!value || (i = add_attr(sp, key)) < 0)
		return;
	if ((sp->attrs[i].at = put_text(sp, value)) < 0) {
		sp->nattrs--; /* no room for the value: not the key either */
		sp->used = used;
	}
}

void trace_attr_int(trace_span *sp, const char *key, int64_t value)
{
	int i = add_attr(sp, key);
	if (i >= 0)
		sp->attrs[i].num = value;
}

void trace_error(trace_span *sp, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	if (!sp->recording)
		return;
	sp->error = 1;
	va_start(ap, fmt);
	if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
		msg[0] = '\0';
	va_end(ap);
	sp->status_at = put_text(sp, msg);
}

void trace_traceparent(const trace_span *sp, char out[56])
{
	snprintf(out, 56, "00-%s-%s-%02x", sp->trace_id, sp->span_id, sp->sampled ? 1u : 0u);
}

void trace_current_set(const trace_span *sp)
{
	memcpy(current.trace_id, sp->trace_id, sizeof current.trace_id);
	memcpy(current.span_id, sp->span_id, sizeof current.span_id);
	current.sampled = sp->sampled;
	current.set = 1;
}

void trace_current_clear(void) { current.set = 0; }

void trace_current_save(trace_ctx *out) { *out = current; }

void trace_current_restore(const trace_ctx *in) { current = *in; }

/* Any thread, outside ex.mu. Without the thread's log context: the request
 * that meets a full queue has nothing to do with it. */
static void log_drops(drop_reason reason, const char *why)
{
	if (!log_due_shared(&drop_logged[reason], clock_mono_ms(), DROP_LOG_MS))
		return;
	log_msg_no_context(EVH_LOG_WARN, "trace",
	                   "spans dropped: %s (evhost_trace_spans_total counts them; at most one "
	                   "such line a minute for each reason)",
	                   why);
}

void trace_end(trace_span *sp)
{
	int full = 0;
	if (!sp->recording)
		return;
	sp->end_ns = now_ns();
	pthread_mutex_lock(&ex.mu);
	if (ex.stopping || !ex.ring) {
		pthread_mutex_unlock(&ex.mu);
		return;
	}
	if (ex.n == ex.cap) {
		/* The oldest queued span makes room: once the collector takes
		 * spans again, the latest ones (what is going on now) are the
		 * ones it gets, not those from when it stopped taking them. */
		ex.head = (ex.head + 1) % ex.cap;
		ex.n--;
		atomic_fetch_add(&n_queue_full, 1);
		full = 1;
	}
	/* Only the used part of the text: most spans use little of it. */
	memcpy(&ex.ring[(ex.head + ex.n++) % ex.cap], sp, offsetof(trace_span, text) + sp->used);
	if (ex.n >= ex.batch_max)
		pthread_cond_signal(&ex.cv);
	pthread_mutex_unlock(&ex.mu);
	if (full)
		log_drops(DROP_QUEUE_FULL,
		          "the queue is full ([tracing] queue_size): the oldest queued spans make "
		          "room for new ones; the collector does not keep up, or spans come faster "
		          "than one exporter sends them (sample_ratio)");
}

/* ----------------------------------------------------------- encoding */

/* A JSON string of raw text. */
static void put_string(textbuf *b, const char *s)
{
	char esc[1024];
	tb_puts(b, "\"");
	log_json_escape(esc, sizeof esc, s);
	tb_puts(b, esc);
	tb_puts(b, "\"");
}


static void put_span(textbuf *b, const trace_span *sp)
{
	tb_printf(b, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", sp->trace_id, sp->span_id);
	if (sp->parent_id[0])
		tb_printf(b, "\"parentSpanId\":\"%s\",", sp->parent_id);
	tb_puts(b, "\"name\":");
	put_string(b, sp->name);
	tb_printf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRIu64 "\",\"endTimeUnixNano\":\"%" PRIu64
	        "\",\"attributes\":[",
	     sp->kind, sp->start_ns, sp->end_ns);
	for (int i = 0; i < sp->nattrs; i++) {
		tb_puts(b, i ? ",{\"key\":\"" : "{\"key\":\"");
		tb_puts(b, sp->text + sp->attrs[i].key);
		if (sp->attrs[i].at >= 0) {
			tb_puts(b, "\",\"value\":{\"stringValue\":\"");
			tb_puts(b, sp->text + sp->attrs[i].at);
			tb_puts(b, "\"}}");
		} else {
			tb_printf(b, "\",\"value\":{\"intValue\":\"%" PRId64 "\"}}", sp->attrs[i].num);
		}
	}
	tb_puts(b, "]");
	if (sp->error) {
		tb_puts(b, ",\"status\":{\"code\":2");
		if (sp->status_at >= 0) {
			tb_puts(b, ",\"message\":\"");
			tb_puts(b, sp->text + sp->status_at);
			tb_puts(b, "\"");
		}
		tb_puts(b, "}");
	}
	tb_puts(b, "}");
}

/* service.name and the rest of the resource, then the scope: the part of
 * every request body before the spans. */
static char *render_resource(const char *service)
{
	char host[256], pid[32];
	textbuf b = {0};
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	tb_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
	tb_puts(&b, "{\"key\":\"service.name\",\"value\":{\"stringValue\":");
	put_string(&b, service);
	tb_puts(&b, "}},{\"key\":\"service.version\",\"value\":{\"stringValue\":\"" EVHOST_VERSION
	          "\"}},{\"key\":\"host.name\",\"value\":{\"stringValue\":");
	put_string(&b, host);
	tb_printf(&b, "}},{\"key\":\"process.pid\",\"value\":{\"intValue\":\"%s\"}}", pid);
	tb_puts(&b, ",{\"key\":\"telemetry.sdk.name\",\"value\":{\"stringValue\":\"evhost\"}}"
	          ",{\"key\":\"telemetry.sdk.language\",\"value\":{\"stringValue\":\"c\"}}]},"
	          "\"scopeSpans\":[{\"scope\":{\"name\":\"evhost\",\"version\":\"" EVHOST_VERSION
	          "\"},\"spans\":[");
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

char *trace_encode(const trace_span *v, size_t n, size_t *len)
{
	textbuf b = {0};
	char *own = NULL;
	const char *head = ex.resource;
	if (!head && !(head = own = render_resource("evhost")))
		return NULL;
	tb_puts(&b, head);
	free(own);
	for (size_t i = 0; i < n; i++) {
		if (i)
			tb_puts(&b, ",");
		put_span(&b, &v[i]);
	}
	tb_puts(&b, "]}]}]}");
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.n;
	return b.p;
}

/* -------------------------------------------------------------- HTTP */

/* What post() keeps of the collector's answer, for the retries and the log. */
typedef struct answer {
	char body[300];     /* its start, escaped (cut short: leaves room for the endpoint) */
	char location[200]; /* a redirect's Location, bytes other than printable ASCII as '?' */
	int retry_after;    /* seconds (Retry-After's delay-seconds form), or -1 */
	int early;          /* it came before the whole request could be sent */
} answer;

/* POST `body` to the collector: its HTTP status (and what `a` keeps of its
 * answer), or -1 with `err` set when there was no answer, -2 when the
 * collector's certificate did not verify (httpc_open). */
static int post(const char *body, size_t len, answer *a, char *err, size_t errlen)
{
	int64_t start = clock_mono_ms(), deadline = start + ex.timeout_ms,
	        stop = atomic_load(&stop_deadline);
	char tail[96], resp[RESPONSE_MAX], why[256];
	httpc_conn c;
	int status = -1, n;
	const char *v;
	char *end;
	size_t vlen;

	a->body[0] = a->location[0] = '\0';
	a->retry_after = -1;
	a->early = 0;
	if (stop && stop < deadline)
		deadline = stop;
	if ((n = httpc_open(&c, ex.host, ex.port, ex.tls, deadline, err, errlen)) != 0)
		return n;
	n = snprintf(tail, sizeof tail, "Content-Length: %zu\r\nConnection: close\r\n\r\n", len);
	if (httpc_send_head(&c, "POST", ex.host, ex.port, ex.path, ex.req_head, deadline, why,
	                    sizeof why) ||
	    httpc_send(&c, tail, (size_t)n, deadline, why, sizeof why) ||
	    httpc_send(&c, body, len, deadline, why, sizeof why)) {
		/* A collector may answer before it has read the whole body (413
		 * for a batch too large) and close: the send then fails (EPIPE,
		 * ECONNRESET), but its answer waits on the socket, and it is
		 * what counts (413 is not tried again). Read without waiting
		 * past the deadline. Not over TLS: after a failed write OpenSSL
		 * allows no read. */
		char early_why[256];
		n = c.tls ? 0
		          : (int)httpc_recv_answer(&c, resp, sizeof resp, deadline, early_why,
		                                   sizeof early_why);
		if (httpc_status(resp, (size_t)n) < 0) {
			snprintf(err, errlen, "sending to %s failed: %s", ex.endpoint, why);
			httpc_close(&c);
			return -1;
		}
		a->early = 1;
	} else {
		/* Up to the answer's end, not the close: a collector that keeps
		 * the connection open despite Connection: close must not cost
		 * every export its export_timeout. */
		n = (int)httpc_recv_answer(&c, resp, sizeof resp, deadline, why, sizeof why);
	}
	httpc_close(&c);
	/* Only a whole status line of 100-599 is an answer: "HTTP/1.1 20" cut
	 * by the close is none (and is tried again). */
	if ((status = httpc_status(resp, (size_t)n)) < 0) {
		stop = atomic_load(&stop_deadline);
		if (strcmp(why, "timed out") != 0)
			snprintf(err, errlen, "%s gave no HTTP answer: %s", ex.endpoint,
			         n ? "what came does not begin with a status line of 100-599" : why);
		else if (stop && stop < start + ex.timeout_ms)
			/* The stop's deadline cut it (httpc_cut_off_at), not export_timeout. */
			snprintf(err, errlen,
			         "%s gave no HTTP answer before the stop's deadline (%d ms: [host] "
			         "stop_timeout)",
			         ex.endpoint, atomic_load(&stop_limit_ms));
		else
			snprintf(err, errlen, "%s gave no HTTP answer within %d ms (export_timeout)",
			         ex.endpoint, ex.timeout_ms);
		return -1;
	}
	if ((end = strstr(resp, "\r\n\r\n")))
		log_json_escape(a->body, sizeof a->body, end + 4);
	a->retry_after = httpc_retry_after(resp, (size_t)n);
	if ((v = httpc_header(resp, (size_t)n, "Location", &vlen))) {
		char whole[2048], *shown;
		size_t i;
		for (i = 0; i < vlen && i + 1 < sizeof whole; i++)
			whole[i] = v[i] > 0x20 && v[i] < 0x7f ? v[i] : '?';
		whole[i] = '\0';
		/* For the log: a signed URL's query (?sig=...) or a USER:PASSWORD@
		 * there is another service's secret; hidden before the cut to the
		 * length shown (one cut first could hide a long one no more). */
		shown = redact_url(whole);
		snprintf(a->location, sizeof a->location, "%s", shown ? shown : "");
		free(shown);
	}
	return status;
}

/* OTLP/HTTP: 429, 502, 503 and 504 are worth another try, as is no answer;
 * a certificate that did not verify (-2) is not: it will not pass by itself,
 * and three more tries would only hold the queue up. */
static int retryable(int status)
{
	return status == -1 || status == 429 || status == 502 || status == 503 || status == 504;
}

/* Wait `ms`, or less when the stop comes; 1 when stopping. */
static int pause_ms(int ms)
{
	struct timespec until = clock_after_ms(CLOCK_MONOTONIC, ms);
	int stop;
	pthread_mutex_lock(&ex.mu);
	while (!ex.stopping && pthread_cond_timedwait(&ex.cv, &ex.mu, &until) == 0)
		;
	stop = ex.stopping;
	pthread_mutex_unlock(&ex.mu);
	return stop;
}

/* OTLP/HTTP: a 429 or 503 with Retry-After (seconds) says when to send
 * again; nothing is sent before then, for at most RETRY_AFTER_MAX_S.
 * 1 when it did. */
static int note_retry_after(int status, const answer *a)
{
	int s = a->retry_after < RETRY_AFTER_MAX_S ? a->retry_after : RETRY_AFTER_MAX_S;
	if ((status != 429 && status != 503) || s <= 0)
		return 0;
	ex.not_before = clock_mono_ms() + (int64_t)s * 1000;
	ex.asked_status = status;
	ex.asked_s = a->retry_after;
	return 1;
}

/* Wait until the collector said it takes requests again (Retry-After), if
 * that is still to come: 0, or 1 when the stop's deadline comes first (the
 * collector is not asked sooner than it said, and the stop does not wait
 * longer than it allows). */
static int wait_for_collector(void)
{
	for (;;) {
		int64_t now = clock_mono_ms(), stop = atomic_load(&stop_deadline),
		        left = ex.not_before - now;
		struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
		if (left <= 0)
			return 0;
		if (!stop) {
			pause_ms((int)left); /* or until the stop: then its deadline rules */
			continue;
		}
		if (ex.not_before > stop)
			return 1;
		nanosleep(&ts, NULL); /* over before the stop's deadline */
		return 0;
	}
}

/* The reason a batch that met `status` (and `err`) is dropped for. */
static drop_reason reason_of(int status, const char *err)
{
	if (status >= 100)
		return DROP_REFUSED;
	if (status == -2 || (ex.tls && !strncmp(err, "TLS with ", 9)))
		return DROP_TLS;
	return DROP_UNREACHABLE;
}

/* `err` for an answer of `status` that is not 2xx, to a batch of `spans`
 * spans in `bytes`. */
static void describe_refusal(int status, const answer *a, size_t spans, size_t bytes, char *err,
                             size_t errlen)
{
	char more[300] = "";
	if (status == 413) /* OTLP/HTTP: not to be tried again as it is */
		snprintf(more, sizeof more, " (the batch is larger than the collector takes: %zu "
		                            "spans, %zu bytes%s; not tried again: lower [tracing] "
		                            "batch_size, or raise the collector's limit)",
		         spans, bytes, a->early ? ", refused before it was all sent" : "");
	else if (status == 407) /* a proxy's (http_proxy): say where its credentials go */
		snprintf(more, sizeof more, " (from the proxy: it wants credentials, "
		                            "http_proxy=http://USER:PASSWORD@HOST:PORT)");
	else if (status >= 300 && status < 400)
		snprintf(more, sizeof more, " (a redirect%s%s: not followed; set otlp_endpoint to "
		                            "where the collector is)",
		         a->location[0] ? " to " : "", a->location);
	else if ((status == 429 || status == 503) && a->retry_after > RETRY_AFTER_MAX_S)
		snprintf(more, sizeof more, " (Retry-After %d s: nothing sent for %d s, the most "
		                            "evhost waits)",
		         a->retry_after, RETRY_AFTER_MAX_S);
	else if ((status == 429 || status == 503) && a->retry_after > 0)
		snprintf(more, sizeof more, " (Retry-After %d s: nothing sent before then)",
		         a->retry_after);
	snprintf(err, errlen, "%s answered %d%s%s%s", ex.endpoint, status, more,
	         a->body[0] ? ": " : "", a->body);
}

static void export_batch(size_t n, int final)
{
	char err[1024];
	answer a;
	size_t len;
	char *body;
	int status = -1, delay = RETRY_FIRST_MS, failures = 0, tries = 0, out_of_time = 0;
	int64_t first, give_up_at;

	if (wait_for_collector()) {
		atomic_fetch_add(&n_export_failed, n);
		snprintf(err, sizeof err,
		         "%s answered %d with Retry-After %d s, which ends after the stop's deadline "
		         "(%d ms: [host] stop_timeout, [tracing] export_timeout); not sent",
		         ex.endpoint, ex.asked_status, ex.asked_s, atomic_load(&stop_limit_ms));
		log_drops(DROP_REFUSED, err);
		return;
	}
	if (!(body = trace_encode(ex.batch, n, &len))) {
		atomic_fetch_add(&n_export_failed, n);
		if (log_due_shared(&drop_logged[DROP_NO_MEMORY], clock_mono_ms(), DROP_LOG_MS))
			log_error("trace", "out of memory encoding %zu spans; they are dropped (at most "
			                   "one such line a minute)",
			          n);
		return;
	}
	/* A collector's Retry-After is an answer, not a failure: the wait it
	 * asks for does not use up the retries (a collector shedding load
	 * asks each client to wait, and then takes what they send). What
	 * bounds a batch is time: no try starts later than retry_max_time
	 * after its first, so a collector that keeps asking to wait does not
	 * hold the exporter (and every span queued behind the batch) longer. */
	first = clock_mono_ms();
	give_up_at = first + ex.retry_max_ms;
	for (;;) {
		int wait;
		err[0] = '\0';
		status = post(body, len, &a, err, sizeof err);
		tries++;
		if (status >= 200 && status < 300)
			break;
		if (!retryable(status) || final)
			break;
		if (note_retry_after(status, &a)) {
			wait = 0; /* wait_for_collector: until then */
		} else {
			if (failures++ == RETRIES)
				break;
			wait = delay;
			delay *= 2;
		}
		if ((wait && clock_mono_ms() + wait > give_up_at) || ex.not_before > give_up_at) {
			out_of_time = 1;
			break;
		}
		if (wait && pause_ms(wait)) {
			/* The stop came during the wait: this batch gets one more try
			 * within its deadline, as each queued batch does; none once the
			 * deadline has passed (the try it had may have been cut by it). */
			if (clock_mono_ms() >= atomic_load(&stop_deadline))
				break;
			final = 1;
			continue;
		}
		if (wait_for_collector())
			break;
	}
	free(body);
	if (status >= 200 && status < 300) {
		atomic_fetch_add(&n_exported, n);
		return;
	}
	atomic_fetch_add(&n_export_failed, n);
	if (status == -2) {
		size_t used = strlen(err);
		snprintf(err + used, sizeof err - used,
		         "; not tried again ([tracing] otlp_ca_file, or the collector's certificate)");
	} else if (status >= 0) {
		describe_refusal(status, &a, n, len, err, sizeof err);
	}
	if (out_of_time) {
		size_t used = strlen(err);
		snprintf(err + used, sizeof err - used,
		         "; %d tries in %" PRId64 " s, and the next would start later than [tracing] "
		         "retry_max_time (%d ms) after the first",
		         tries, (clock_mono_ms() - first) / 1000, ex.retry_max_ms);
	}
	log_drops(reason_of(status, err), err);
}

static void *exporter_main(void *arg)
{
	(void)arg;
	log_thread_name("evh-trace", NULL);
	/* The stop's deadline also cuts a request already in flight: [host]
	 * stop_timeout bounds the stop whatever the collector does. */
	httpc_cut_off_at(&stop_deadline);
	pthread_mutex_lock(&ex.mu);
	for (;;) {
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, ex.interval_ms);
		size_t n;
		int stopping;
		while (!ex.stopping && ex.n < ex.batch_max &&
		       pthread_cond_timedwait(&ex.cv, &ex.mu, &until) == 0)
			;
		stopping = ex.stopping;
		if (stopping && ex.n && clock_mono_ms() >= atomic_load(&stop_deadline)) {
			atomic_fetch_add(&n_export_failed, ex.n);
			log_warn("trace", "stopping: %zu spans not sent in the time the stop allows "
			                  "([tracing] export_timeout, [host] stop_timeout)",
			         ex.n);
			ex.n = 0;
		}
		if (!ex.n && stopping)
			break;
		/* One batch per turn; when the queue held more, the next turn
		 * does not wait (ex.n is still at least a batch, or stopping). */
		n = ex.n < ex.batch_max ? ex.n : ex.batch_max;
		for (size_t i = 0; i < n; i++) {
			const trace_span *s = &ex.ring[(ex.head + i) % ex.cap];
			memcpy(&ex.batch[i], s, offsetof(trace_span, text) + s->used);
		}
		ex.head = (ex.head + n) % ex.cap;
		ex.n -= n;
		pthread_mutex_unlock(&ex.mu);
		if (n)
			export_batch(n, stopping);
		pthread_mutex_lock(&ex.mu);
	}
	pthread_mutex_unlock(&ex.mu);
	return NULL;
}

/* The request's headers after Host, up to its Content-Length: and
 * [tracing] otlp_headers_file's (each line ending in CRLF). */
static char *render_head(const char *headers)
{
	textbuf b = {0};
	tb_puts(&b, "User-Agent: evhost/" EVHOST_VERSION "\r\nContent-Type: application/json\r\n");
	if (headers)
		tb_puts(&b, headers);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* "; ..." for the start's log line: how the collector is checked, the
 * client certificate, how many headers come from where (never their values). */
static const char *describe_tls(const settings *s, char *buf, size_t n)
{
	int headers = 0, used;
	for (const char *h = s->trace_headers; h && (h = strstr(h, "\r\n")); h += 2)
		headers++;
	buf[0] = '\0';
	used = s->trace_tls ? snprintf(buf, n, "; its certificate checked against %s",
	                               s->trace_ca_file ? s->trace_ca_file : "the system's CAs")
	                    : 0;
	if (s->trace_client_cert && used >= 0 && (size_t)used < n)
		used += snprintf(buf + used, n - (size_t)used, "; client certificate %s",
		                 s->trace_client_cert);
	if (headers && used >= 0 && (size_t)used < n)
		snprintf(buf + used, n - (size_t)used, "; %d header(s) from %s", headers,
		         s->trace_headers_file);
	return buf;
}

int trace_start(const settings *s, void *tls)
{
	char err[1024];
	int rc;
	if (!s->trace_endpoint) {
		tls_client_free(tls);
		return 0;
	}
	pthread_once(&ex_cv_once, ex_cv_init);
	ex.tls = tls; /* trace_stop frees it, whatever happens below */
	ex.cap = (size_t)s->trace_queue_size;
	/* A batch is at most the whole queue. */
	ex.batch_max = s->trace_batch_size < s->trace_queue_size ? (size_t)s->trace_batch_size
	                                                          : ex.cap;
	ex.ring = calloc(ex.cap, sizeof *ex.ring);
	ex.batch = calloc(ex.batch_max, sizeof *ex.batch);
	ex.host = strdup(s->trace_host);
	ex.port = strdup(s->trace_port);
	ex.path = strdup(s->trace_path);
	ex.endpoint = strdup(s->trace_endpoint);
	ex.resource = render_resource(s->trace_service);
	if (ex.host && ex.port && ex.path)
		ex.req_head = render_head(s->trace_headers);
	if (!ex.ring || !ex.batch || !ex.host || !ex.port || !ex.path || !ex.endpoint ||
	    !ex.resource || !ex.req_head) {
		log_error("trace", "out of memory for the span queue ([tracing] queue_size %d)",
		          s->trace_queue_size);
		trace_stop(0);
		return -1;
	}
	if (s->trace_tls && !ex.tls) {
		log_error("trace", "[tracing] otlp_endpoint %s: no TLS client", s->trace_endpoint);
		trace_stop(0);
		return -1;
	}
	ex.interval_ms = s->trace_interval_ms;
	ex.timeout_ms = s->trace_timeout_ms;
	ex.retry_max_ms = s->trace_retry_max_ms;
	ex.ratio_all = s->trace_sample_ratio >= 1.0;
	ex.ratio_bound = (uint64_t)(s->trace_sample_ratio * 18446744073709551616.0);
	ex.head = ex.n = 0;
	ex.stopping = 0;
	ex.not_before = 0;
	for (int i = 0; i < DROP_REASONS; i++)
		atomic_store(&drop_logged[i], 0);
	if ((rc = pthread_create(&ex.thread, NULL, exporter_main, NULL)) != 0) {
		log_error("trace", "cannot start the exporter thread: %s", strerror(rc));
		trace_stop(0);
		return -1;
	}
	ex.started = 1;
	atomic_store(&enabled, 1);
	log_info("trace", "exporting spans to %s (service.name %s, sample_ratio %g%s)", ex.endpoint,
	         s->trace_service, s->trace_sample_ratio, describe_tls(s, err, sizeof err));
	/* Allowed (a collector beside the host on a private network), but its
	 * headers are most often an API key. */
	if (s->trace_headers && !s->trace_tls && !loopback_host(s->trace_host))
		log_warn("trace",
		         "[tracing] otlp_headers_file's headers (an API key?) go in clear with every "
		         "export to %s, which is not this host: use https:// unless the network "
		         "between them is private",
		         ex.endpoint);
	return 0;
}

void trace_stop(int timeout_ms)
{
	atomic_store(&enabled, 0);
	atomic_store(&stop_limit_ms, timeout_ms < ex.timeout_ms ? timeout_ms : ex.timeout_ms);
	atomic_store(&stop_deadline, clock_mono_ms() + atomic_load(&stop_limit_ms));
	pthread_mutex_lock(&ex.mu);
	ex.stopping = 1;
	pthread_cond_broadcast(&ex.cv);
	pthread_mutex_unlock(&ex.mu);
	if (ex.started)
		pthread_join(ex.thread, NULL);
	ex.started = 0;
	free(ex.ring);
	free(ex.batch);
	free(ex.host);
	free(ex.port);
	free(ex.path);
	free(ex.endpoint);
	free(ex.resource);
	if (ex.req_head)
		explicit_bzero(ex.req_head, strlen(ex.req_head)); /* otlp_headers_file's secrets */
	free(ex.req_head);
	tls_client_free(ex.tls);
	ex.req_head = NULL;
	ex.tls = NULL;
	ex.ring = ex.batch = NULL;
	ex.host = ex.port = ex.path = ex.endpoint = ex.resource = NULL;
	ex.n = ex.head = 0;
	/* The sampling settings stay: threads that outlive the stop may still
	 * begin spans (not recorded) and read them. */
	atomic_store(&stop_deadline, 0);
}
