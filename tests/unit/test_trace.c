/* trace.c: span context (parents, the current span, sampling), the OTLP/JSON
 * encoding, and the exporter's behaviour against a collector that answers
 * 503 then 200, one that refuses a batch (400), one that never answers, one
 * that asks to wait (Retry-After), one that redirects, and a full queue, with
 * what the log says of each drop. The collector here is a small HTTP server on a loopback
 * socket; tests/system/test_tracing.py runs against a real OpenTelemetry
 * Collector. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "stderr_capture.h"

#include "clock.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "plugins.h"
#include "trace.h"

#define CALLER "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/* ------------------------------------------------- a scripted collector */

typedef struct collector {
	int fd, port;
	int statuses[8]; /* the answer to each request in turn; 0: never answer */
	int nstatus;
	const char *raw[8]; /* else this answer to the request, as it is, then the close */
	int keep_open;      /* after an answer, hold the connection as a silent one */
	int early;          /* answer once the head has come, and close, the body unread */
	int hold_ms;        /* how long a silent connection is held (0: 1 s), unless the
	                     * exporter closes it first */
	_Atomic int held;   /* connections held now */
	_Atomic int requests; /* counted after bodies[i] is set: the test reads both */
	char *bodies[8];
	int64_t at_ms[8]; /* when each request had come whole (clock_mono_ms) */
	pthread_t thread;
} collector;

static void *collector_main(void *arg)
{
	collector *c = arg;
	for (int i = 0; i < c->nstatus; i++) {
		char buf[1 << 16], *body;
		size_t got = 0, want = 0;
		int fd = accept(c->fd, NULL, NULL);
		if (fd < 0)
			return NULL;
		for (;;) {
			ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
			if (r <= 0)
				break;
			got += (size_t)r;
			buf[got] = '\0';
			body = strstr(buf, "\r\n\r\n");
			if (body && !want) {
				const char *cl = strstr(buf, "Content-Length: ");
				want = (size_t)(body + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
			}
			if ((want && got >= want) || (body && c->early))
				break;
		}
		body = strstr(buf, "\r\n\r\n");
		c->bodies[i] = strdup(body ? body + 4 : "");
		c->at_ms[i] = clock_mono_ms();
		c->requests++;
		if (c->raw[i]) {
			size_t n = strlen(c->raw[i]);
			assert_true(send(fd, c->raw[i], n, 0) == (ssize_t)n);
		} else if (c->statuses[i]) {
			char resp[128];
			int n = snprintf(resp, sizeof resp,
			                 "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
			                 c->statuses[i]);
			assert_true(send(fd, resp, (size_t)n, 0) == n);
		}
		if ((!c->raw[i] && !c->statuses[i]) || (c->keep_open && !c->raw[i])) {
			/* Silent (or answered, but the connection kept open): the
			 * exporter's deadline, or its reading the answer's end, must
			 * end the wait; it closing is seen here (POLLIN, then 0). */
			struct pollfd p = {.fd = fd, .events = POLLIN};
			char b;
			c->held++;
			if (poll(&p, 1, c->hold_ms ? c->hold_ms : 1000) == 1)
				(void)!recv(fd, &b, 1, 0);
			c->held--;
		}
		close(fd);
	}
	return NULL;
}

static void collector_start(collector *c)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof a;
	int small = 4096;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	/* A collector that answers early takes little of the body in: the
	 * exporter's send then fails, not only fills the buffers. */
	if (c->early)
		assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(c->fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(c->fd, 8), 0);
	assert_int_equal(getsockname(c->fd, (struct sockaddr *)&a, &len), 0);
	c->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&c->thread, NULL, collector_main, c), 0);
}

static void collector_stop(collector *c)
{
	shutdown(c->fd, SHUT_RDWR);
	pthread_join(c->thread, NULL);
	close(c->fd);
	for (int i = 0; i < c->requests; i++)
		free(c->bodies[i]);
}

/* [tracing] retry_max_time for the next start(): 0 for its default, 1 min. */
static int retry_max_ms;

/* Tracing on, toward 127.0.0.1:port. */
static void start(int port, double ratio, int queue, int batch, int interval_ms, int timeout_ms)
{
	settings s;
	char p[16], url[64];
	memset(&s, 0, sizeof s);
	snprintf(p, sizeof p, "%d", port);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
	s.trace_endpoint = url;
	s.trace_host = "127.0.0.1";
	s.trace_port = p;
	s.trace_path = "/v1/traces";
	s.trace_service = "test \"svc\"";
	s.trace_sample_ratio = ratio;
	s.trace_queue_size = queue;
	s.trace_batch_size = batch;
	s.trace_interval_ms = interval_ms;
	s.trace_timeout_ms = timeout_ms;
	s.trace_retry_max_ms = retry_max_ms ? retry_max_ms : 60000;
	assert_int_equal(trace_start(&s, NULL), 0);
	assert_true(trace_enabled());
}

static void counts(uint64_t *exported, uint64_t *full, uint64_t *failed)
{
	trace_stats(exported, full, failed);
}

/* --------------------------------------------------------------- tests */

static const cJSON *attr(const cJSON *span, const char *key)
{
	const cJSON *a;
	cJSON_ArrayForEach(a, cJSON_GetObjectItem(span, "attributes"))
	{
		if (!strcmp(cJSON_GetObjectItem(a, "key")->valuestring, key))
			return cJSON_GetObjectItem(a, "value");
	}
	fail_msg("no attribute %s", key);
	return NULL;
}

/* A caller's traceparent makes the parent; the current span makes the
 * parent of spans begun without one; a trace id given for a new trace is
 * used; the sampled flag passes on. Off: nothing records, and a span takes
 * its parent's id (what it passes on names a span that may exist). */
static void test_context(void **state)
{
	trace_span a, b, c;
	char tp[56];
	(void)state;
	assert_false(trace_enabled());
	trace_begin(&a, TRACE_SERVER, CALLER, NULL, "GET");
	assert_false(a.recording);
	assert_string_equal(a.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_string_equal(a.parent_id, "00f067aa0ba902b7");
	assert_string_equal(a.span_id, a.parent_id);
	trace_traceparent(&a, tp);
	assert_string_equal(tp, CALLER);

	trace_current_set(&a);
	trace_begin(&b, TRACE_PRODUCER, NULL, NULL, "create t");
	assert_string_equal(b.trace_id, a.trace_id);
	assert_string_equal(b.parent_id, a.span_id);
	/* "" (an event without traceparent) is never the current span */
	trace_begin(&c, TRACE_CONSUMER, "", NULL, "process t");
	assert_string_not_equal(c.trace_id, a.trace_id);
	assert_string_equal(c.parent_id, "");
	trace_current_clear();

	trace_begin(&c, TRACE_SERVER, NULL, "0123456789abcdef0123456789abcdef", "GET");
	assert_string_equal(c.trace_id, "0123456789abcdef0123456789abcdef");
	assert_string_equal(c.parent_id, "");
	assert_true(c.sampled);
	/* no parent: a span id of its own all the same */
	assert_int_equal(strlen(c.span_id), 16);
	assert_int_equal(strspn(c.span_id, "0123456789abcdef"), 16);
	trace_traceparent(&c, tp);
	assert_int_equal(strlen(tp), 55);
	assert_memory_equal(tp + 36, c.span_id, 16);
	trace_begin(&c, TRACE_SERVER, "garbage", "not-hex", "GET");
	assert_int_equal(strlen(c.trace_id), 32);
	assert_string_not_equal(c.trace_id, "not-hex");

	/* not sampled upstream: passed on as such */
	trace_begin(&a, TRACE_SERVER, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
	            NULL, "GET");
	assert_false(a.sampled);
	trace_current_set(&a);
	trace_begin(&b, TRACE_PRODUCER, NULL, NULL, "create t");
	trace_traceparent(&b, tp);
	assert_string_equal(tp + 52, "-00");
	trace_current_clear();
}

/* One span as OTLP/JSON: ids, kind, times, attributes (text escaped, invalid
 * UTF-8 replaced, integers as strings), error status, the resource. */
static void test_encode(void **state)
{
	trace_span sp;
	cJSON *doc, *span, *rs, *res;
	char *body;
	size_t len;
	(void)state;
	start(9, 1.0, 8, 8, 3600000, 1000); /* port 9 (discard): never reached */
	trace_begin(&sp, TRACE_CONSUMER, CALLER, NULL, "process %s", "orders");
	assert_true(sp.recording);
	trace_attr(&sp, "evhost.text", "a \"quoted\"\nline\x01 \xff end");
	trace_attr(&sp, "evhost.utf8", "caf\xc3\xa9");
	trace_attr(&sp, "evhost.unset", NULL);
	trace_attr_int(&sp, "messaging.kafka.offset", 1234567890123LL);
	trace_error(&sp, "handler said %s", "no");
	sp.end_ns = sp.start_ns + 1500;
	body = trace_encode(&sp, 1, &len);
	assert_non_null(body);
	assert_int_equal(strlen(body), len);
	doc = cJSON_Parse(body);
	if (!doc)
		fail_msg("not JSON: %s", body);
	rs = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "resourceSpans"), 0);
	res = cJSON_GetObjectItem(cJSON_GetObjectItem(rs, "resource"), "attributes");
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "value"),
	                        "stringValue")
	        ->valuestring,
	    "test \"svc\"");
	span = cJSON_GetArrayItem(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(rs, "scopeSpans"), 0),
	                        "spans"),
	    0);
	assert_string_equal(cJSON_GetObjectItem(span, "traceId")->valuestring,
	                    "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_string_equal(cJSON_GetObjectItem(span, "parentSpanId")->valuestring,
	                    "00f067aa0ba902b7");
	assert_string_equal(cJSON_GetObjectItem(span, "spanId")->valuestring, sp.span_id);
	assert_string_equal(cJSON_GetObjectItem(span, "name")->valuestring, "process orders");
	assert_int_equal(cJSON_GetObjectItem(span, "kind")->valueint, 5);
	assert_int_equal(strtoull(cJSON_GetObjectItem(span, "endTimeUnixNano")->valuestring, NULL,
	                          10) -
	                     strtoull(cJSON_GetObjectItem(span, "startTimeUnixNano")->valuestring,
	                              NULL, 10),
	                 1500);
	assert_string_equal(cJSON_GetObjectItem(attr(span, "evhost.text"), "stringValue")->valuestring,
	                    "a \"quoted\"\nline\x01 \xef\xbf\xbd end");
	assert_string_equal(cJSON_GetObjectItem(attr(span, "evhost.utf8"), "stringValue")->valuestring,
	                    "caf\xc3\xa9");
	assert_string_equal(
	    cJSON_GetObjectItem(attr(span, "messaging.kafka.offset"), "intValue")->valuestring,
	    "1234567890123");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(span, "attributes")), 3);
	assert_int_equal(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(span, "status"), "code")->valueint, 2);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(span, "status"), "message")->valuestring,
	    "handler said no");
	cJSON_Delete(doc);
	free(body);
	trace_stop(0);
	assert_false(trace_enabled());
}

/* More attributes and text than a span holds: cut, still valid JSON. */
static void test_span_limits(void **state)
{
	trace_span sp;
	char big[4000];
	cJSON *doc;
	char *body;
	(void)state;
	start(9, 1.0, 8, 8, 3600000, 1000);
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	trace_begin(&sp, TRACE_SERVER, NULL, NULL, "%s", big);
	assert_int_equal(strlen(sp.name), sizeof sp.name - 1);
	trace_attr(&sp, "first", big);
	assert_string_equal(sp.text + sp.attrs[0].key, "first");
	assert_int_equal(strlen(sp.text + sp.attrs[0].at), TRACE_VALUE_MAX);
	trace_attr(&sp, big, "long key");
	assert_int_equal(strlen(sp.text + sp.attrs[1].key), TRACE_VALUE_MAX);
	trace_attr(&sp, "second", "short");
	assert_string_equal(sp.text + sp.attrs[2].at, "short");
	for (int i = 0; i < TRACE_MAX_ATTRS; i++)
		trace_attr(&sp, "k", big); /* until the text is full: then left out */
	assert_true(sp.nattrs < TRACE_MAX_ATTRS);
	assert_true(sp.used <= sizeof sp.text);
	for (int i = 0; i < sp.nattrs; i++) /* each whole: a key and a value */
		assert_true(sp.attrs[i].at > sp.attrs[i].key &&
		            memchr(sp.text + sp.attrs[i].at, '\0', sizeof sp.text - (size_t)sp.attrs[i].at));
	trace_attr(&sp, NULL, "no key");
	trace_attr(&sp, "no value", NULL);
	{
		trace_span ints;
		trace_begin(&ints, TRACE_SERVER, NULL, NULL, "ints");
		for (int i = 0; i < TRACE_MAX_ATTRS + 1; i++)
			trace_attr_int(&ints, i < TRACE_MAX_ATTRS ? "n" : "too many", i);
		assert_int_equal(ints.nattrs, TRACE_MAX_ATTRS);
		assert_int_equal(ints.attrs[TRACE_MAX_ATTRS - 1].num, TRACE_MAX_ATTRS - 1);
	}
	sp.end_ns = sp.start_ns;
	body = trace_encode(&sp, 1, NULL);
	doc = cJSON_Parse(body);
	assert_non_null(doc);
	cJSON_Delete(doc);
	free(body);
	trace_stop(0);
}

/* sample_ratio decides a new trace by its id's last 16 hex digits; a child
 * of a sampled parent records whatever the ratio. */
static void test_sampling(void **state)
{
	trace_span sp;
	(void)state;
	start(9, 0.5, 8, 8, 3600000, 1000);
	trace_begin(&sp, TRACE_SERVER, NULL, "0123456789abcdef0000000000000001", "GET");
	assert_true(sp.sampled && sp.recording);
	trace_begin(&sp, TRACE_SERVER, NULL, "0123456789abcdefffffffffffffff00", "GET");
	assert_false(sp.sampled || sp.recording);
	trace_stop(0);
	start(9, 0.0, 8, 8, 3600000, 1000);
	trace_begin(&sp, TRACE_SERVER, NULL, "0123456789abcdef0000000000000001", "GET");
	assert_false(sp.sampled || sp.recording);
	trace_begin(&sp, TRACE_SERVER, CALLER, NULL, "GET");
	assert_true(sp.sampled && sp.recording);
	trace_stop(0);
}

static void end_spans(int n)
{
	for (int i = 0; i < n; i++) {
		trace_span sp;
		trace_begin(&sp, TRACE_SERVER, CALLER, NULL, "span %d", i);
		trace_end(&sp);
	}
}

/* 503 is retried; the same batch then goes through. 400 is not retried. */
static void test_export_retry(void **state)
{
	collector c = {.statuses = {503, 200, 400}, .nstatus = 3};
	uint64_t e0, f0, x0, e, f, x;
	cJSON *doc;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 3, 3600000, 5000);
	end_spans(3); /* a full batch: sent at once */
	for (int i = 0; i < 100 && c.requests < 2; i++)
		usleep(50000);
	assert_int_equal(c.requests, 2);
	assert_string_equal(c.bodies[0], c.bodies[1]);
	doc = cJSON_Parse(c.bodies[1]);
	assert_non_null(doc);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(
	                     cJSON_GetArrayItem(
	                         cJSON_GetObjectItem(
	                             cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "resourceSpans"), 0),
	                             "scopeSpans"),
	                         0),
	                     "spans")),
	                 3);
	cJSON_Delete(doc);
	end_spans(2); /* sent by the stop: refused (400), not retried */
	trace_stop(5000);
	collector_stop(&c);
	assert_int_equal(c.requests, 3);
	counts(&e, &f, &x);
	assert_int_equal(e - e0, 3);
	assert_int_equal(x - x0, 2);
	assert_int_equal(f - f0, 0);
}

/* Wait (up to 2 s) until the collector has had `n` requests; exactly n. */
static void wait_requests(collector *c, int n)
{
	for (int i = 0; i < 100 && c->requests < n; i++)
		usleep(20000);
	assert_int_equal(c->requests, n);
}

/* A stop during a batch's wait before its retry gives it its one try
 * within the stop's deadline, as the queued batches get: it was dropped
 * (counted as failed) however much of the stop's time was left. */
static void test_stop_during_a_retry_wait_tries_once_more(void **state)
{
	collector c = {.statuses = {503, 200}, .nstatus = 2};
	uint64_t e0, f0, x0, e, f, x;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 3, 3600000, 5000);
	end_spans(3); /* a full batch: sent at once, 503, then a wait of 500 ms */
	wait_requests(&c, 1);
	trace_stop(5000);
	collector_stop(&c);
	assert_int_equal(c.requests, 2);
	counts(&e, &f, &x);
	assert_int_equal(e - e0, 3);
	assert_int_equal(x - x0, 0);
}

/* A collector that never answers holds the exporter up to export_timeout;
 * meanwhile the queue fills and the rest are dropped, counted. The stop
 * ends within its bound. Every span ended is counted once. */
static void test_queue_full_and_timeout(void **state)
{
	collector c = {.statuses = {0, 0}, .nstatus = 2};
	uint64_t e0, f0, x0, e, f, x;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 4, 4, 3600000, 400);
	end_spans(4);
	wait_requests(&c, 1);
	end_spans(10); /* 4 fit in the queue, 6 do not */
	trace_stop(400);
	counts(&e, &f, &x);
	assert_int_equal(e - e0, 0);
	assert_int_equal(f - f0, 6);
	assert_int_equal(x - x0, 8);
	collector_stop(&c);
}

/* Wait up to ms for the exported count to reach `want` (since e0). */
static int exported_within(uint64_t e0, uint64_t want, int ms)
{
	uint64_t e, f, x;
	for (int64_t until = clock_mono_ms() + ms;; usleep(10000)) {
		counts(&e, &f, &x);
		if (e - e0 >= want || clock_mono_ms() >= until)
			return e - e0 == want;
	}
}

/* The stop's bound holds for a request already in flight: export_timeout
 * is 30 s, the collector never answers, the stop allows 300 ms. */
static void test_stop_cuts_the_request_in_flight(void **state)
{
	collector c = {.statuses = {0}, .nstatus = 1, .hold_ms = 8000};
	uint64_t e0, f0, x0, e, f, x;
	int64_t t0;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 1, 3600000, 30000);
	end_spans(1);
	for (int i = 0; i < 100 && c.held < 1; i++)
		usleep(20000);
	assert_int_equal(c.held, 1);
	t0 = clock_mono_ms();
	trace_stop(300);
	if (clock_mono_ms() - t0 > 1500)
		fail_msg("the stop took %" PRId64 " ms, allowed 300", clock_mono_ms() - t0);
	counts(&e, &f, &x);
	assert_int_equal(e - e0, 0);
	assert_int_equal(x - x0, 1);
	collector_stop(&c);
}

/* A collector that answers (Content-Length) but keeps the connection open,
 * Connection: close notwithstanding: each export ends with the answer, not
 * at export_timeout. */
static void test_answer_without_the_close(void **state)
{
	collector c = {.statuses = {200, 200}, .nstatus = 2, .keep_open = 1, .hold_ms = 4000};
	uint64_t e0, f0, x0;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 1, 3600000, 3000);
	end_spans(1);
	assert_true(exported_within(e0, 1, 1000));
	end_spans(1);
	assert_true(exported_within(e0, 2, 1000));
	trace_stop(1000);
	collector_stop(&c);
}

/* Only a whole status line of 100-599 is an answer: one cut by the close,
 * or a negative "status", is no answer and is tried again. */
static void test_no_status_line_is_retried(void **state)
{
	collector c = {.raw = {"HTTP/1.1 20", "HTTP/1.1 -5\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	               .nstatus = 3};
	uint64_t e0, f0, x0, e, f, x;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 1, 3600000, 5000);
	end_spans(1);
	assert_true(exported_within(e0, 1, 5000)); /* after 0.5 and 1 s */
	trace_stop(1000);
	collector_stop(&c);
	assert_int_equal(c.requests, 3);
	counts(&e, &f, &x);
	assert_int_equal(x - x0, 0);
}

/* ------------------------------------------------- what the log says */

static int occurrences(const char *text, const char *what)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

/* The line of `text` holding `what` (cut at its end), or fail. */
static char *line_of(char *text, const char *what)
{
	char *at = strstr(text, what), *start, *end;
	if (!at)
		fail_msg("no line with '%s' in:\n%s", what, text);
	for (start = at; start > text && start[-1] != '\n'; start--)
		;
	if ((end = strchr(at, '\n')))
		*end = '\0';
	return start;
}

/* OTLP/HTTP: a 429 with Retry-After (seconds) is tried again no sooner than
 * it says, not after the exporter's own 0.5 s; spans ended meanwhile are
 * queued, and those the queue has no room for dropped and counted. */
static void test_retry_after_is_honoured(void **state)
{
	collector c = {.raw = {"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n"
	                       "Content-Length: 0\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	               .nstatus = 3};
	uint64_t e0, f0, x0, e, f, x;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 4, 4, 3600000, 5000);
	end_spans(4);
	wait_requests(&c, 1);
	end_spans(10); /* 4 fit in the queue, 6 do not */
	assert_true(exported_within(e0, 8, 6000));
	if (c.at_ms[1] - c.at_ms[0] < 1900)
		fail_msg("tried again after %" PRId64 " ms; Retry-After said 2 s",
		         c.at_ms[1] - c.at_ms[0]);
	trace_stop(1000);
	collector_stop(&c);
	assert_int_equal(c.requests, 3);
	counts(&e, &f, &x);
	assert_int_equal(f - f0, 6);
	assert_int_equal(x - x0, 0);
}

#define ASK_TO_WAIT_1S                                                                         \
	"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
#define TAKEN "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

/* A Retry-After is an answer, not a failure: a collector that asks four
 * times in a row to wait a second (more than the 3 retries) gets the
 * batch on its fifth request, within retry_max_time. */
static void test_retry_after_uses_up_no_retry(void **state)
{
	collector c = {.raw = {ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, TAKEN},
	               .nstatus = 5};
	uint64_t e0, f0, x0, e, f, x;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 1, 3600000, 5000);
	end_spans(1);
	for (int i = 0; i < 500 && c.requests < 5; i++) /* 4 s of waits */
		usleep(20000);
	assert_true(exported_within(e0, 1, 2000));
	trace_stop(1000);
	collector_stop(&c);
	assert_int_equal(c.requests, 5);
	counts(&e, &f, &x);
	assert_int_equal(x - x0, 0);
}

/* What bounds a batch is retry_max_time: a collector that keeps asking to
 * wait a second is asked at 0, 1 and 2 s with a limit of 2.5 s, and the
 * batch is then dropped, counted, and said with the key that bounds it. */
static void test_retry_max_time_bounds_a_batch(void **state)
{
	collector c = {.raw = {ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, ASK_TO_WAIT_1S,
	                       ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, ASK_TO_WAIT_1S, ASK_TO_WAIT_1S},
	               .nstatus = 8};
	uint64_t e0, f0, x0, e, f, x;
	stderr_capture cap;
	char *log;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	retry_max_ms = 2500;
	start(c.port, 1.0, 64, 1, 3600000, 5000);
	retry_max_ms = 0;
	cap = stderr_begin();
	end_spans(1);
	for (int i = 0; i < 500; i++, usleep(20000)) { /* up to 10 s */
		counts(&e, &f, &x);
		if (x - x0 >= 1)
			break;
	}
	trace_stop(0);
	log = stderr_end(cap);
	fputs(log, stderr); /* as the other tests' */
	collector_stop(&c);
	counts(&e, &f, &x);
	assert_int_equal(x - x0, 1);
	assert_int_equal(e - e0, 0);
	assert_int_equal(c.requests, 3);
	line_of(log, "answered 429 (Retry-After 1 s: nothing sent before then); 3 tries in");
	line_of(log, "later than [tracing] retry_max_time (2500 ms) after the first");
	free(log);
}

/* A full queue keeps the newest spans: once the collector takes spans
 * again, it gets those ended last, not those from when it stopped. */
static void test_full_queue_keeps_the_newest(void **state)
{
	collector c = {.statuses = {0, 200, 200}, .nstatus = 3, .hold_ms = 3000};
	uint64_t e0, f0, x0, e, f, x;
	char name[32];
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 4, 4, 3600000, 400);
	end_spans(4); /* sent at once; the collector holds them */
	wait_requests(&c, 1);
	for (int i = 0; i < 10; i++) {
		trace_span sp;
		trace_begin(&sp, TRACE_SERVER, CALLER, NULL, "newer %d", i);
		trace_end(&sp);
	}
	/* No answer within 400 ms: the first batch again (200), then the queue. */
	assert_true(exported_within(e0, 8, 5000));
	trace_stop(1000);
	assert_int_equal(c.requests, 3);
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof name, "\"newer %d\"", i);
		if ((strstr(c.bodies[2], name) != NULL) != (i >= 6))
			fail_msg("%s %s sent; the queue keeps the 4 newest:\n%s", name,
			         i >= 6 ? "not" : "was", c.bodies[2]);
	}
	collector_stop(&c); /* frees the bodies */
	counts(&e, &f, &x);
	assert_int_equal(f - f0, 6);
	assert_int_equal(x - x0, 0);
}

/* Retry-After's HTTP-date form counts as none: the exporter's own 0.5 s. */
static void test_retry_after_date_is_no_header(void **state)
{
	collector c = {.raw = {"HTTP/1.1 503 Unavailable\r\nRetry-After: Fri, 31 Dec 2027 "
	                       "23:59:59 GMT\r\nContent-Length: 0\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	               .nstatus = 2};
	uint64_t e0, f0, x0;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 4, 1, 3600000, 5000);
	end_spans(1);
	assert_true(exported_within(e0, 1, 3000));
	assert_true(c.at_ms[1] - c.at_ms[0] < 1500);
	trace_stop(1000);
	collector_stop(&c);
}

/* A Retry-After that ends after the stop's deadline: the stop does not
 * wait for it, and does not ask the collector sooner than it said either;
 * what is queued is dropped and counted. */
static void test_retry_after_and_the_stop(void **state)
{
	collector c = {.raw = {"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n"
	                       "Content-Length: 0\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	               .nstatus = 3};
	uint64_t e0, f0, x0, e, f, x;
	int64_t t0;
	stderr_capture cap;
	char *log;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 64, 1, 3600000, 5000);
	cap = stderr_begin();
	end_spans(1);
	wait_requests(&c, 1);
	end_spans(2);
	t0 = clock_mono_ms();
	trace_stop(1000);
	if (clock_mono_ms() - t0 > 1500)
		fail_msg("the stop took %" PRId64 " ms, allowed 1000", clock_mono_ms() - t0);
	log = stderr_end(cap);
	fputs(log, stderr); /* as the other tests' */
	collector_stop(&c);
	assert_int_equal(c.requests, 1);
	counts(&e, &f, &x);
	assert_int_equal(e - e0, 0);
	assert_int_equal(x - x0, 3);
	line_of(log, "answered 429 (Retry-After 30 s: nothing sent before then)");
	free(log);
}

/* A full queue is said without the log context of the thread that met it:
 * the request whose span found no room has nothing to do with the drop. */
static void test_queue_full_is_said_without_the_request(void **state)
{
	collector c = {.statuses = {0}, .nstatus = 1, .hold_ms = 3000};
	uint64_t e0, f0, x0, e, f, x;
	stderr_capture cap;
	char *log, *line;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	start(c.port, 1.0, 2, 2, 3600000, 2000);
	end_spans(2);
	for (int i = 0; i < 100 && c.held < 1; i++)
		usleep(20000);
	assert_int_equal(c.held, 1);
	cap = stderr_begin();
	log_set_context("req-of-another-thing", "0123456789abcdef0123456789abcdef");
	end_spans(3); /* 2 fit in the queue, 1 does not */
	log_set_context(NULL, NULL);
	trace_stop(0);
	log = stderr_end(cap);
	fputs(log, stderr); /* as the other tests' */
	collector_stop(&c);
	counts(&e, &f, &x);
	assert_int_equal(f - f0, 1);
	line = line_of(log, "spans dropped: the queue is full");
	if (strstr(line, "req-of-another-thing") || strstr(line, "0123456789abcdef"))
		fail_msg("the request's context in: %s", line);
	free(log);
}

/* Each reason has its line a minute of its own: the collector's refusals,
 * said, do not keep the full queue they cause from being said; a reason
 * already said is not said again within the minute. */
static void test_each_drop_reason_is_said(void **state)
{
	collector c = {.statuses = {400, 400, 0}, .nstatus = 3, .hold_ms = 3000};
	uint64_t e0, f0, x0, e, f, x;
	stderr_capture cap;
	char *log;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	cap = stderr_begin();
	start(c.port, 1.0, 4, 1, 3600000, 2000);
	end_spans(1);
	wait_requests(&c, 1);
	end_spans(1);
	wait_requests(&c, 2);
	end_spans(1); /* held by the collector: the queue fills */
	for (int i = 0; i < 100 && c.held < 1; i++)
		usleep(20000);
	assert_int_equal(c.held, 1);
	end_spans(6); /* 4 fit in the queue, 2 do not */
	trace_stop(0);
	log = stderr_end(cap);
	fputs(log, stderr); /* as the other tests' */
	collector_stop(&c);
	counts(&e, &f, &x);
	assert_int_equal(f - f0, 2);
	assert_int_equal(occurrences(log, "/v1/traces answered 400"), 1);
	assert_int_equal(occurrences(log, "spans dropped: the queue is full"), 1);
	free(log);
}

#define LONG_SECRET16 "5ecret5ecret5ecr"
#define LONG_SECRET                                                                          \
	LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16      \
	    LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 \
	        LONG_SECRET16 LONG_SECRET16 LONG_SECRET16 LONG_SECRET16

/* A redirect (3xx) is not followed: the batch is dropped at once, counted,
 * and the log names the status and where it pointed, without its query's
 * values or a user:password (a signed URL's signature is a secret). */
static void test_redirect_is_not_followed(void **state)
{
	/* The password longer than the 200 bytes of the target the log shows:
	 * hidden before that cut. */
	collector c = {.raw = {"HTTP/1.1 308 Permanent Redirect\r\nLocation: "
	                       "https://ada:pw-5ecret" LONG_SECRET
	                       "@otel.example/v1/traces?sig=5ecret-sig&t=1\r\n"
	                       "Content-Length: 0\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	               .nstatus = 2};
	uint64_t e0, f0, x0, e, f, x;
	stderr_capture cap;
	char *log;
	(void)state;
	collector_start(&c);
	counts(&e0, &f0, &x0);
	cap = stderr_begin();
	start(c.port, 1.0, 4, 1, 3600000, 2000);
	end_spans(1);
	for (int i = 0; i < 100 && (counts(&e, &f, &x), x - x0 < 1); i++)
		usleep(20000);
	usleep(700000); /* no other try after the exporter's 0.5 s */
	trace_stop(1000);
	log = stderr_end(cap);
	fputs(log, stderr); /* as the other tests' */
	counts(&e, &f, &x);
	assert_int_equal(c.requests, 1);
	collector_stop(&c);
	assert_int_equal(e - e0, 0);
	assert_int_equal(x - x0, 1);
	line_of(log, "answered 308 (a redirect to https://***@otel.example/v1/traces?sig=***&t=***: "
	             "not followed");
	assert_null(strstr(log, "5ecret"));
	free(log);
}

/* A collector that refuses a batch as too large (413) as soon as it has the
 * head, and closes without reading the body (megabytes: more than the
 * socket buffers take), has answered: the exporter's send fails, and the
 * answer waiting on the socket is read and used. 413 is not retried (OTLP/
 * HTTP): the batch is dropped, counted, and the log says the collector
 * refused its size. */
static void test_early_413_is_an_answer(void **state)
{
	enum { SPANS = 2048 };
	collector c = {.raw = {"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
	                       "Connection: close\r\n\r\n",
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	               .nstatus = 2, .early = 1}; /* a second try would be taken */
	uint64_t e0, f0, x0, e, f, x;
	stderr_capture cap;
	char value[250], *log;
	(void)state;
	memset(value, 'v', sizeof value - 1);
	value[sizeof value - 1] = '\0';
	collector_start(&c);
	counts(&e0, &f0, &x0);
	cap = stderr_begin();
	start(c.port, 1.0, SPANS, SPANS, 3600000, 3000);
	for (int i = 0; i < SPANS; i++) { /* some 2 KB each: a full batch, sent at once */
		trace_span sp;
		trace_begin(&sp, TRACE_SERVER, CALLER, NULL, "big %d", i);
		for (int k = 0; k < 7; k++) {
			char key[8];
			snprintf(key, sizeof key, "k%d", k);
			trace_attr(&sp, key, value);
		}
		trace_end(&sp);
	}
	for (int i = 0; i < 200 && (counts(&e, &f, &x), x - x0 < SPANS); i++)
		usleep(20000);
	trace_stop(1000);
	log = stderr_end(cap);
	fputs(log, stderr); /* as the other tests' */
	collector_stop(&c);
	counts(&e, &f, &x);
	assert_int_equal(c.requests, 1);
	assert_int_equal(e - e0, 0);
	assert_int_equal(x - x0, SPANS);
	line_of(log, "/v1/traces answered 413 (the batch is larger than the collector takes");
	free(log);
}

/* A plugin's own spans (SDK, ABI 1.4): children of the thread's current
 * span, current themselves until they end (nested as a stack), NULL when
 * not recorded, and the NULL handle is harmless. */
static void test_plugin_spans(void **state)
{
	const evh_api *api = host_api();
	evh_plugin p;
	trace_span req;
	trace_ctx outer, inner, now;
	evh_span *a, *b;
	(void)state;
	memset(&p, 0, sizeof p);
	p.name = "plug";
	assert_null(api->span_begin(&p, EVH_SPAN_CLIENT, "off"));
	start(9, 1.0, 64, 64, 3600000, 1000);
	trace_begin(&req, TRACE_SERVER, CALLER, NULL, "GET");
	trace_current_set(&req);
	a = api->span_begin(&p, EVH_SPAN_CLIENT, "smtp send");
	assert_non_null(a);
	trace_current_save(&outer);
	assert_string_equal(outer.trace_id, req.trace_id);
	assert_string_not_equal(outer.span_id, req.span_id);
	b = api->span_begin(&p, EVH_SPAN_INTERNAL, "render");
	assert_non_null(b);
	trace_current_save(&inner);
	assert_string_equal(inner.trace_id, req.trace_id);
	assert_string_not_equal(inner.span_id, outer.span_id);
	api->span_set(b, "k", "v");
	api->span_set(b, NULL, "v");
	api->span_end(b, NULL);
	trace_current_save(&now);
	assert_string_equal(now.span_id, outer.span_id);
	api->span_end(a, "refused");
	trace_current_save(&now);
	assert_string_equal(now.span_id, req.span_id);
	assert_null(api->span_begin(&p, (evh_span_kind)2, "a server span is the host's"));
	assert_null(api->span_begin(&p, EVH_SPAN_CLIENT, NULL));
	assert_null(api->span_begin(NULL, EVH_SPAN_CLIENT, "x"));
	api->span_set(NULL, "k", "v");
	api->span_end(NULL, "x");
	/* not sampled upstream: nothing recorded, nothing to end */
	trace_begin(&req, TRACE_SERVER, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
	            NULL, "GET");
	trace_current_set(&req);
	assert_null(api->span_begin(&p, EVH_SPAN_CLIENT, "x"));
	trace_current_clear();
	trace_stop(0);
}

/* Spans ended while tracing is off (or after the stop) are not counted. */
static void test_off(void **state)
{
	uint64_t e0, f0, x0, e, f, x;
	(void)state;
	counts(&e0, &f0, &x0);
	end_spans(5);
	counts(&e, &f, &x);
	assert_true(e == e0 && f == f0 && x == x0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_context),     cmocka_unit_test(test_encode),
	    cmocka_unit_test(test_span_limits), cmocka_unit_test(test_sampling),
	    cmocka_unit_test(test_export_retry), cmocka_unit_test(test_queue_full_and_timeout),
	    cmocka_unit_test(test_stop_during_a_retry_wait_tries_once_more),
	    cmocka_unit_test(test_stop_cuts_the_request_in_flight),
	    cmocka_unit_test(test_answer_without_the_close),
	    cmocka_unit_test(test_no_status_line_is_retried),
	    cmocka_unit_test(test_retry_after_is_honoured),
	    cmocka_unit_test(test_retry_after_date_is_no_header),
	    cmocka_unit_test(test_retry_after_uses_up_no_retry),
	    cmocka_unit_test(test_retry_max_time_bounds_a_batch),
	    cmocka_unit_test(test_full_queue_keeps_the_newest),
	    cmocka_unit_test(test_retry_after_and_the_stop),
	    cmocka_unit_test(test_queue_full_is_said_without_the_request),
	    cmocka_unit_test(test_each_drop_reason_is_said),
	    cmocka_unit_test(test_redirect_is_not_followed),
	    cmocka_unit_test(test_early_413_is_an_answer),
	    cmocka_unit_test(test_plugin_spans), cmocka_unit_test(test_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
