/* stream.c: SSE framing (multi-line data, CR/LF/CRLF), fan-out by plugin
 * and channel, the per-stream bound (a slow reader is dropped, the
 * publisher is not held up), closing on plugin stop and daemon stop, the
 * max_streams limit, argument checks, resuming from a Last-Event-ID (the
 * missed frames of the same plugin name and channel only, across a reload,
 * racing publishers; the evhost.missed notice for evicted history, an
 * earlier process's id and more than a queue; malformed ids ignored),
 * finding and watching a connection's socket, cutting the connection of a
 * stream whose owner is stuck writing when a stop's grace has passed, and
 * of a closed one (its plugin reloaded) when a new stream needs its place;
 * the figures /metrics shows (open per owner, closing, the limit); and the
 * SDK wrappers on a host that predates streaming. */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <evhost/evhost.h>

#include "stream.h"
#include "toobig.h"

const evh_api *evh__api;

static int plugin_a, plugin_b; /* owners: only their addresses matter */
static int plugin_a_reloaded;  /* plugin "a" after a reload: another address */

/* The plugins' names, which the history matches on. */
static const char *name_of(const void *owner)
{
	return owner == &plugin_b ? "b" : "a";
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* `fmt` formatted into `buf`, which must be big enough. */
__attribute__((format(printf, 3, 4))) static const char *text(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < size);
	return buf;
}

/* The id of the first frame in `frames` ("id: N\n..."). */
static uint64_t id_of(const char *frames)
{
	char *end;
	unsigned long long id;
	assert_memory_equal(frames, "id: ", 4);
	id = strtoull(frames + 4, &end, 10);
	assert_true(end > frames + 4 && *end == '\n');
	return (uint64_t)id;
}

/* ------------------------------------------------------------ framing */

static void expect_frame(uint64_t id, const char *event, const char *data, const char *want)
{
	size_t len = 0;
	char *f = stream_frame(id, event, data, data ? strlen(data) : 0, &len);
	assert_non_null(f);
	assert_string_equal(f, want);
	assert_int_equal(len, strlen(want));
	free(f);
}

static void test_frame_single_line(void **st)
{
	(void)st;
	expect_frame(7, "notification", "{\"a\":1}",
	             "id: 7\nevent: notification\ndata: {\"a\":1}\n\n");
	expect_frame(8, NULL, "x", "id: 8\ndata: x\n\n");
	expect_frame(9, NULL, "", "id: 9\ndata: \n\n");
	expect_frame(10, NULL, NULL, "id: 10\ndata: \n\n");
}

static void test_frame_multi_line(void **st)
{
	(void)st;
	expect_frame(1, "e", "one\ntwo\nthree",
	             "id: 1\nevent: e\ndata: one\ndata: two\ndata: three\n\n");
	/* CRLF is one break; a lone CR is one too (the SSE parser agrees). */
	expect_frame(2, NULL, "a\r\nb\rc", "id: 2\ndata: a\ndata: b\ndata: c\n\n");
	/* A trailing break is an empty last line, so the client gets "x\n" back. */
	expect_frame(3, NULL, "x\n", "id: 3\ndata: x\ndata: \n\n");
	expect_frame(4, NULL, "\n\n", "id: 4\ndata: \ndata: \ndata: \n\n");
	/* No break ever survives inside a field: that would inject fields. */
	expect_frame(5, NULL, "ok\nid: 99\r\nevent: evil",
	             "id: 5\ndata: ok\ndata: id: 99\ndata: event: evil\n\n");
}

/* A frame is no larger in memory than its text: the history keeps frames
 * and counts their length against STREAM_HISTORY_BYTES. Each CR and LF
 * reserved 7 bytes, a CRLF 14 where it takes 7, and the buffer stayed
 * that large: 64 KiB of CRLFs held 512 KiB for a frame of 224, and the
 * history about 9 MiB where it promises 4. */
static void test_frame_holds_what_it_says(void **st)
{
	static const char *const units[] = {"\r\n", "\n", "ab"};
	enum { DATA = 64 * 1024 };
	char *data = malloc(DATA);
	(void)st;
	assert_non_null(data);
	for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
		size_t len = 0, ul = strlen(units[u]);
		char *f;
		for (size_t i = 0; i + ul <= DATA; i += ul)
			memcpy(data + i, units[u], ul);
		f = stream_frame(1, "e", data, DATA, &len);
		assert_non_null(f);
		if (malloc_usable_size(f) > len + 1 + 4096)
			fail_msg("a frame of %zu bytes holds %zu", len, malloc_usable_size(f));
		free(f);
	}
	free(data);
}

/* ------------------------------------------------------------ fan-out */

static stream_hub *started_hub(int max)
{
	stream_hub *hub = stream_hub_new();
	assert_non_null(hub);
	stream_hub_start(hub, max);
	return hub;
}

static stream *open_ok(stream_hub *hub, const void *owner, const char *channel)
{
	stream *s = NULL;
	assert_int_equal(stream_open(hub, owner, name_of(owner), channel, NULL, &s), EVH_OK);
	assert_non_null(s);
	return s;
}

/* What the stream has now (waiting at most `ms`); "" when idle. */
static char *take(stream *s, int ms, stream_wait_result *res)
{
	char *out = NULL;
	size_t len = 0;
	stream_wait_result r = stream_wait(s, ms, &out, &len);
	if (res)
		*res = r;
	if (!out)
		return strdup("");
	assert_int_equal(strlen(out), len);
	return out;
}

/* Frame `id` of event "n" with one line of `data`, as the hub writes it. */
static const char *frame_n(char *buf, size_t size, uint64_t id, const char *data)
{
	return text(buf, size, "id: %llu\nevent: n\ndata: %s\n\n", (unsigned long long)id, data);
}

/* Wait up to `ms` for the next frame of `s`, which must be the single
 * event "n" with `data`; returns its id. */
static uint64_t expect_next(stream *s, int ms, const char *data)
{
	stream_wait_result r;
	char *got = take(s, ms, &r), want[256];
	uint64_t id;
	assert_int_equal(r, STREAM_FRAMES);
	id = id_of(got);
	assert_string_equal(got, frame_n(want, sizeof want, id, data));
	free(got);
	return id;
}

static void test_fan_out_by_plugin_and_channel(void **st)
{
	stream_hub *hub = started_hub(8);
	stream *a1 = open_ok(hub, &plugin_a, "user-1"), *a1b = open_ok(hub, &plugin_a, "user-1");
	stream *a2 = open_ok(hub, &plugin_a, "user-2"), *b1 = open_ok(hub, &plugin_b, "user-1");
	stream_wait_result r;
	char *got, want[128];
	uint64_t first;
	(void)st;

	assert_int_equal(stream_publish(hub, &plugin_a, "a", "user-1", "n", "hello", 5), 2);
	first = expect_next(a1, 1000, "hello");
	got = take(a1b, 1000, &r);
	assert_string_equal(got, frame_n(want, sizeof want, first, "hello"));
	free(got);
	/* Same channel name under another plugin, another channel: nothing. */
	got = take(a2, 20, &r);
	assert_int_equal(r, STREAM_IDLE);
	assert_string_equal(got, "");
	free(got);
	got = take(b1, 20, &r);
	assert_int_equal(r, STREAM_IDLE);
	free(got);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "nobody", NULL, "x", 1), 0);

	/* Ids keep increasing across channels; queued frames come out together. */
	assert_int_equal(stream_publish(hub, &plugin_b, "b", "user-1", NULL, "b", 1), 1);
	assert_int_equal(stream_publish(hub, &plugin_b, "b", "user-1", NULL, "c", 1), 1);
	got = take(b1, 1000, &r);
	assert_string_equal(got, text(want, sizeof want, "id: %llu\ndata: b\n\nid: %llu\ndata: c\n\n",
	                              (unsigned long long)first + 2,
	                              (unsigned long long)first + 3));
	free(got);

	stream_release(a1);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "user-1", NULL, "y", 1), 1);
	stream_release(a1b);
	stream_release(a2);
	stream_release(b1);
	assert_int_equal(stream_hub_count(hub), 0);
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ slow readers */

static void test_slow_reader_is_dropped(void **st)
{
	stream_hub *hub = started_hub(4);
	stream *slow = open_ok(hub, &plugin_a, "u"), *other = open_ok(hub, &plugin_a, "u");
	stream_wait_result r;
	char *got;
	double t0;
	(void)st;

	for (int i = 0; i < STREAM_QUEUE_MAX; i++) {
		assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "x", 1), 2);
		if (i % 8 == 0) /* `other` keeps up */
			free(take(other, 0, NULL));
	}
	free(take(other, 0, NULL));
	/* `slow` is full: the next publish drops it instead of waiting. */
	t0 = now_s();
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "x", 1), 1);
	assert_true(now_s() - t0 < 0.5);
	got = take(slow, 1000, &r);
	assert_int_equal(r, STREAM_CLOSED);
	assert_string_equal(got, ": dropped: client too slow\n\n");
	free(got);
	assert_string_equal(stream_close_reason(slow), "dropped: client too slow");
	/* It no longer receives, and still counts until its owner lets go. */
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "x", 1), 1);
	assert_int_equal(stream_hub_count(hub), 2);
	got = take(slow, 0, &r);
	assert_int_equal(r, STREAM_CLOSED);
	assert_string_equal(got, "");
	free(got);
	stream_release(slow);
	got = take(other, 0, &r);
	assert_int_equal(r, STREAM_FRAMES);
	free(got);
	stream_release(other);
	assert_int_equal(stream_hub_count(hub), 0);
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ closing */

struct waiter {
	stream *s;
	stream_wait_result r;
	char *out;
	double took;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	size_t len;
	double t0 = now_s();
	w->r = stream_wait(w->s, 10000, &w->out, &len);
	w->took = now_s() - t0;
	return NULL;
}

static void test_plugin_stop_closes_its_streams(void **st)
{
	stream_hub *hub = started_hub(4);
	stream *a = open_ok(hub, &plugin_a, "u"), *a2 = open_ok(hub, &plugin_a, "v");
	stream *b = open_ok(hub, &plugin_b, "u");
	struct waiter w = {a2, STREAM_IDLE, NULL, 0};
	pthread_t t;
	stream_wait_result r;
	char *got, want[128];
	(void)st;

	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "n", "last", 4), 1);
	assert_int_equal(pthread_create(&t, NULL, wait_main, &w), 0);
	usleep(50 * 1000);
	assert_int_equal(stream_close_owner(hub, &plugin_a), 2);
	pthread_join(t, NULL);
	/* A blocked owner wakes at once, not at its timeout. */
	assert_int_equal(w.r, STREAM_CLOSED);
	assert_true(w.took < 2.0);
	assert_string_equal(w.out, ": service stopping\n\n");
	free(w.out);
	/* What was queued before the stop still goes out, then the reason. */
	got = take(a, 0, &r);
	assert_int_equal(r, STREAM_CLOSED);
	assert_string_equal(got, text(want, sizeof want,
	                              "id: %llu\nevent: n\ndata: last\n\n: service stopping\n\n",
	                              (unsigned long long)id_of(got)));
	free(got);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "x", 1), 0);
	/* The other plugin's stream is untouched. */
	assert_int_equal(stream_publish(hub, &plugin_b, "b", "u", NULL, "x", 1), 1);
	got = take(b, 0, &r);
	assert_int_equal(r, STREAM_FRAMES);
	free(got);
	stream_release(a);
	stream_release(a2);

	/* Daemon stop: everything closes and nothing new opens. */
	assert_int_equal(stream_hub_stop(hub), 1);
	got = take(b, 0, &r);
	assert_int_equal(r, STREAM_CLOSED);
	assert_string_equal(got, ": server stopping\n\n");
	free(got);
	stream_release(b);
	assert_int_equal(stream_open(hub, &plugin_a, "test", "u", NULL, &a), EVH_ESTATE);
	assert_null(a);
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ limits */

static void test_max_streams(void **st)
{
	stream_hub *hub = stream_hub_new();
	stream *s1, *s2, *s3 = NULL;
	(void)st;

	assert_int_equal(stream_open(hub, &plugin_a, "t", "u", NULL, &s1), EVH_ESTATE); /* not started */
	stream_hub_start(hub, 2);
	s1 = open_ok(hub, &plugin_a, "u");
	s2 = open_ok(hub, &plugin_b, "w");
	assert_int_equal(stream_open(hub, &plugin_a, "t", "u", NULL, &s3), EVH_EBUSY);
	assert_null(s3);
	assert_int_equal(stream_hub_count(hub), 2);
	assert_int_equal(stream_hub_wait_idle(hub, 10), 2); /* held: times out */
	stream_release(s1);
	s3 = open_ok(hub, &plugin_a, "u");
	stream_release(s2);
	stream_release(s3);
	assert_int_equal(stream_hub_wait_idle(hub, 1000), 0);
	stream_hub_free(hub);
}

static void test_bad_arguments(void **st)
{
	stream_hub *hub = started_hub(2);
	char *big = malloc(STREAM_DATA_MAX + 2), chan[STREAM_CHANNEL_MAX + 2];
	stream *s = NULL;
	(void)st;

	assert_non_null(big);
	memset(big, 'x', STREAM_DATA_MAX + 1);
	big[STREAM_DATA_MAX + 1] = '\0';
	memset(chan, 'c', sizeof chan - 1);
	chan[sizeof chan - 1] = '\0';
	assert_int_equal(stream_open(hub, &plugin_a, "t", "", NULL, &s), EVH_EINVAL);
	assert_int_equal(stream_open(hub, &plugin_a, "t", chan, NULL, &s), EVH_EINVAL);
	assert_int_equal(stream_open(hub, NULL, "t", "u", NULL, &s), EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "bad\nname", "x", 1), EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "", "x", 1), EVH_EINVAL);
	/* the host's names */
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", STREAM_MISSED_EVENT, "x", 1),
	                 EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "evhost.other", "x", 1),
	                 EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "evhost", "x", 1), 0);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "", "n", "x", 1), EVH_EINVAL);
	toobig_clear();
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "n", big, STREAM_DATA_MAX + 1),
	                 EVH_ETOOBIG);
	/* the plugin's limit, not its client's (toobig.h) */
	assert_int_equal(toobig_last(), TOOBIG_STREAM);
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "n", big, STREAM_DATA_MAX), 0);
	free(big);
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ resuming */

static stream *resume_ok(stream_hub *hub, const void *owner, const char *name,
                         const char *channel, const char *last)
{
	stream *s = NULL;
	assert_int_equal(stream_open(hub, owner, name, channel, last, &s), EVH_OK);
	assert_non_null(s);
	return s;
}

/* Publish event "n" with `data` to (owner, name, channel) and return its id,
 * read back through a stream opened for the purpose. */
static uint64_t publish_id(stream_hub *hub, const void *owner, const char *name,
                           const char *channel, const char *data)
{
	stream *probe = resume_ok(hub, owner, name, channel, NULL);
	char *got;
	uint64_t id;
	assert_true(stream_publish(hub, owner, name, channel, "n", data, strlen(data)) >= 1);
	got = take(probe, 1000, NULL);
	id = id_of(got);
	free(got);
	stream_release(probe);
	return id;
}

/* What a stream resumed from `last` holds at once ("" when nothing). */
static char *resumed(stream_hub *hub, const void *owner, const char *name, const char *channel,
                     const char *last)
{
	stream *s = resume_ok(hub, owner, name, channel, last);
	char *got = take(s, 0, NULL);
	stream_release(s);
	return got;
}

static void expect_resumed(stream_hub *hub, const void *owner, const char *name,
                           const char *channel, const char *last, const char *want)
{
	char *got = resumed(hub, owner, name, channel, last);
	assert_string_equal(got, want);
	free(got);
}

static const char *id_text(char *buf, size_t size, uint64_t id)
{
	return text(buf, size, "%llu", (unsigned long long)id);
}

static const char *missed_text(char *buf, size_t size, uint64_t id, uint64_t last,
                               const char *reason)
{
	return text(buf, size,
	            "id: %llu\nevent: " STREAM_MISSED_EVENT "\n"
	            "data: {\"last_event_id\":\"%llu\",\"reason\":\"%s\"}\n\n",
	            (unsigned long long)id, (unsigned long long)last, reason);
}

/* The ids of the frames in `frames`, in order; returns how many there are
 * (only the first `max` are stored). */
static size_t ids_in(const char *frames, uint64_t *ids, size_t max)
{
	size_t n = 0;
	for (const char *p = frames; (p = strstr(p, "id: ")) != NULL; p += 4) {
		if (p != frames && p[-1] != '\n')
			continue;
		if (n < max)
			ids[n] = strtoull(p + 4, NULL, 10);
		n++;
	}
	return n;
}

static void test_resume_replays_only_what_was_missed(void **st)
{
	stream_hub *hub = started_hub(8);
	char want[512], last[32];
	stream_wait_result r;
	stream *s;
	char *got;
	uint64_t x1, x2, x3, x4;
	(void)st;

	x1 = publish_id(hub, &plugin_a, "a", "u", "x1");
	/* Another channel of the same plugin, the same channel of another. */
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "v", "n", "other channel", 13), 0);
	assert_int_equal(stream_publish(hub, &plugin_b, "b", "u", "n", "other plugin", 12), 0);
	x2 = publish_id(hub, &plugin_a, "a", "u", "x2");
	x3 = publish_id(hub, &plugin_a, "a", "u", "x3");
	assert_true(x2 == x1 + 3 && x3 == x2 + 1);

	/* From x1: x2 and x3, in order, and nothing of the others. */
	s = resume_ok(hub, &plugin_a, "a", "u", id_text(last, sizeof last, x1));
	got = take(s, 0, &r);
	assert_int_equal(r, STREAM_FRAMES);
	assert_string_equal(got, text(want, sizeof want,
	                              "id: %llu\nevent: n\ndata: x2\n\nid: %llu\nevent: n\ndata: x3\n\n",
	                              (unsigned long long)x2, (unsigned long long)x3));
	free(got);
	/* Then the live frames, once. */
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", "n", "x4", 2), 1);
	x4 = expect_next(s, 1000, "x4");
	assert_true(x4 == x3 + 1);
	got = take(s, 20, &r);
	assert_int_equal(r, STREAM_IDLE);
	free(got);
	stream_release(s);

	/* From x3 only x4; from the newest, nothing. */
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, x3),
	               frame_n(want, sizeof want, x4, "x4"));
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, x4), "");
	/* An id from the future replays nothing and is no gap. */
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, x4 + 1000000), "");
	expect_resumed(hub, &plugin_a, "a", "u", "18446744073709551615", "");
	/* The other plugin's stream on "u" gets its own frame only. */
	expect_resumed(hub, &plugin_b, "b", "u", id_text(last, sizeof last, x1),
	               frame_n(want, sizeof want, x1 + 2, "other plugin"));
	/* And a channel nobody published to: nothing. */
	expect_resumed(hub, &plugin_a, "a", "nobody", id_text(last, sizeof last, x1), "");
	assert_int_equal(stream_hub_count(hub), 0);
	stream_hub_free(hub);
}

static void test_resume_after_reload_matches_by_name(void **st)
{
	stream_hub *hub = started_hub(8);
	char last[32];
	stream *s;
	uint64_t y1, y2;
	(void)st;

	y1 = publish_id(hub, &plugin_a, "a", "u", "y1");
	y2 = publish_id(hub, &plugin_a, "a", "u", "y2");
	/* The reload: the old instance's streams close, the new instance is
	 * another owner pointer under the same name. */
	s = open_ok(hub, &plugin_a, "u");
	assert_int_equal(stream_close_owner(hub, &plugin_a), 1);
	stream_release(s);
	s = resume_ok(hub, &plugin_a_reloaded, "a", "u", id_text(last, sizeof last, y1));
	assert_int_equal(expect_next(s, 0, "y2"), y2);
	/* Live frames come from the new instance. */
	assert_int_equal(stream_publish(hub, &plugin_a_reloaded, "a", "u", "n", "y3", 2), 1);
	assert_int_equal(expect_next(s, 1000, "y3"), y2 + 1);
	stream_release(s);
	/* The same pointer under another name is another plugin: nothing. */
	expect_resumed(hub, &plugin_a_reloaded, "a2", "u", id_text(last, sizeof last, y1), "");
	stream_hub_free(hub);
}

static void test_resume_after_eviction_says_history(void **st)
{
	stream_hub *hub = started_hub(8);
	char want[512], missed[160], last[32], *got, *big;
	uint64_t p1, p2, y, w, ids[2];
	(void)st;

	/* The count bound: STREAM_HISTORY_MAX frames on another channel push
	 * p1 and p2 out. */
	p1 = publish_id(hub, &plugin_a, "a", "u", "p1");
	p2 = publish_id(hub, &plugin_a, "a", "u", "p2");
	for (int i = 0; i < STREAM_HISTORY_MAX; i++)
		assert_int_equal(stream_publish(hub, &plugin_a, "a", "w", NULL, "x", 1), 0);
	y = publish_id(hub, &plugin_a, "a", "u", "y");
	assert_true(y == p2 + STREAM_HISTORY_MAX + 1);
	/* The ring holds p2+2 .. y now: whoever saw p1 missed p2, and is told
	 * so before the frame that is left. */
	missed_text(missed, sizeof missed, p1, p1, "history");
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, p1),
	               text(want, sizeof want, "%sid: %llu\nevent: n\ndata: y\n\n", missed,
	                    (unsigned long long)y));
	/* Who saw p2 missed nothing of "u": the evicted frames after it were
	 * all "w"'s. */
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, p2),
	               frame_n(want, sizeof want, y, "y"));
	/* ... but on "w", a client from before the evicted ones is told. */
	expect_resumed(hub, &plugin_a, "a", "w", id_text(last, sizeof last, p2),
	               missed_text(missed, sizeof missed, y, p2, "history"));
	stream_hub_free(hub);

	/* The byte bound: 80 frames of 60 KiB (far fewer than
	 * STREAM_HISTORY_MAX) are more than STREAM_HISTORY_BYTES. */
	hub = started_hub(8);
	big = malloc(60 * 1024 + 1);
	assert_non_null(big);
	memset(big, 'b', 60 * 1024);
	big[60 * 1024] = '\0';
	p1 = publish_id(hub, &plugin_a, "a", "u", "p1");
	p2 = publish_id(hub, &plugin_a, "a", "u", "p2");
	w = publish_id(hub, &plugin_a, "a", "w", "first w");
	assert_true(80 * 60 * 1024 > STREAM_HISTORY_BYTES);
	for (int i = 0; i < 80; i++)
		assert_int_equal(stream_publish(hub, &plugin_a, "a", "w", NULL, big, 60 * 1024), 0);
	free(big);
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, p1),
	               missed_text(missed, sizeof missed, p1, p1, "history"));
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, p2), "");
	/* The newest big frames are still there, without a gap before them. */
	got = resumed(hub, &plugin_a, "a", "w", id_text(last, sizeof last, w + 78));
	assert_int_equal(ids_in(got, ids, 2), 2);
	assert_true(ids[0] == w + 79 && ids[1] == w + 80);
	assert_null(strstr(got, STREAM_MISSED_EVENT));
	free(got);
	stream_hub_free(hub);
}

static void test_resume_from_an_earlier_process_says_restart(void **st)
{
	stream_hub *hub = started_hub(8), *next;
	char want[512], missed[160], last[32];
	struct timespec now;
	uint64_t z, z2, now_us, old;
	(void)st;

	/* Nothing published yet: an id is still from before this hub. */
	expect_resumed(hub, &plugin_a, "a", "u", "1", missed_text(missed, sizeof missed, 1, 1,
	                                                          "restart"));
	z = publish_id(hub, &plugin_a, "a", "u", "z");
	/* The first id is the wall clock in microseconds. */
	assert_int_equal(clock_gettime(CLOCK_REALTIME, &now), 0);
	now_us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
	assert_true(z <= now_us && now_us - z < 60u * 1000000u);
	/* The retained frames follow the notice when they fit. */
	expect_resumed(hub, &plugin_a, "a", "u", "1",
	               text(want, sizeof want, "%sid: %llu\nevent: n\ndata: z\n\n", missed,
	                    (unsigned long long)z));
	missed_text(missed, sizeof missed, z - 1, z - 1, "restart");
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, z - 1),
	               text(want, sizeof want, "%sid: %llu\nevent: n\ndata: z\n\n", missed,
	                    (unsigned long long)z));
	expect_resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, z), "");
	z2 = publish_id(hub, &plugin_a, "a", "u", "z2");

	/* The next process: its ids start above the last one's, and a client
	 * coming back with the old process's id is told it may have missed
	 * frames. */
	usleep(2000);
	next = started_hub(8);
	old = z2;
	expect_resumed(next, &plugin_a, "a", "u", id_text(last, sizeof last, old),
	               missed_text(missed, sizeof missed, old, old, "restart"));
	z = publish_id(next, &plugin_a, "a", "u", "z");
	assert_true(z > old);
	stream_hub_free(next);
	stream_hub_free(hub);
}

static void test_resume_past_the_queue_says_too_many(void **st)
{
	stream_hub *hub = started_hub(8);
	char want[256], last[32], *got;
	uint64_t l, ids[STREAM_REPLAY_MAX + 1];
	stream *s;
	(void)st;

	l = publish_id(hub, &plugin_a, "a", "u", "l");
	for (int i = 0; i < STREAM_REPLAY_MAX; i++)
		assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "m", 1), 0);
	/* Exactly as many as a resume replays: all of them, no notice. */
	got = resumed(hub, &plugin_a, "a", "u", id_text(last, sizeof last, l));
	assert_int_equal(ids_in(got, ids, STREAM_REPLAY_MAX + 1), STREAM_REPLAY_MAX);
	for (int i = 0; i < STREAM_REPLAY_MAX; i++)
		assert_true(ids[i] == l + 1 + (uint64_t)i);
	assert_null(strstr(got, STREAM_MISSED_EVENT));
	free(got);

	/* One more: the notice alone, with the newest id. */
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "m", 1), 0);
	s = resume_ok(hub, &plugin_a, "a", "u", id_text(last, sizeof last, l));
	got = take(s, 0, NULL);
	assert_string_equal(got, missed_text(want, sizeof want, l + STREAM_REPLAY_MAX + 1, l,
	                                     "too-many"));
	free(got);
	/* The stream goes on with the live frames. */
	assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "m", 1), 1);
	got = take(s, 1000, NULL);
	assert_int_equal(id_of(got), l + STREAM_REPLAY_MAX + 2);
	free(got);
	stream_release(s);
	/* A restart gap with too much after it: that notice, alone. */
	expect_resumed(hub, &plugin_a, "a", "u", "1",
	               missed_text(want, sizeof want, l + STREAM_REPLAY_MAX + 2, 1, "restart"));
	stream_hub_free(hub);
}

/* Bytes too, not only frames: three frames of 64 KiB of line breaks (each
 * a "data: " line, about 450 KiB a frame) pass STREAM_QUEUE_BYTES, where 64
 * of them held 28 MiB for a client that stopped reading. */
static void test_slow_reader_is_dropped_by_bytes(void **st)
{
	stream_hub *hub = started_hub(4);
	stream *slow = open_ok(hub, &plugin_a, "u"), *other = open_ok(hub, &plugin_a, "u");
	char *big = malloc(STREAM_DATA_MAX), *got;
	size_t queued = 0;
	stream_wait_result r;
	int i;
	(void)st;

	assert_non_null(big);
	memset(big, '\n', STREAM_DATA_MAX);
	for (i = 0; i < STREAM_QUEUE_MAX; i++) {
		int n = stream_publish(hub, &plugin_a, "a", "u", NULL, big, STREAM_DATA_MAX);
		got = take(other, 0, NULL); /* `other` keeps up */
		assert_true(strlen(got) > 6 * STREAM_DATA_MAX);
		if (n == 1) /* `slow` is dropped, not waited for */
			break;
		assert_int_equal(n, 2);
		queued += strlen(got);
		free(got);
		got = NULL;
	}
	free(got);
	assert_true(i > 0 && i < 4);
	assert_true(queued <= STREAM_QUEUE_BYTES);
	got = take(slow, 1000, &r);
	assert_int_equal(r, STREAM_CLOSED);
	assert_string_equal(got, ": dropped: client too slow\n\n");
	free(got);
	stream_release(slow);
	stream_release(other);

	/* A resume replays no more than STREAM_REPLAY_BYTES: two such frames
	 * missed are the notice alone, "too-many", with the newest id. */
	{
		char want[256], last[32];
		uint64_t l = publish_id(hub, &plugin_a, "a", "v", "l");
		for (int k = 0; k < 2; k++)
			assert_int_equal(stream_publish(hub, &plugin_a, "a", "v", NULL, big,
			                                STREAM_DATA_MAX),
			                 0);
		expect_resumed(hub, &plugin_a, "a", "v", id_text(last, sizeof last, l),
		               missed_text(want, sizeof want, l + 2, l, "too-many"));
	}
	free(big);
	stream_hub_free(hub);
}

static void test_resume_ignores_malformed_ids(void **st)
{
	static const char *const bad[] = {
	    "", " ", "abc", "-1", "+1", "1x", "x1", "0x10", "1 2", "1.0", "1e3", "1,2",
	    "18446744073709551616", "99999999999999999999999", "\v1", "1\n",
	};
	stream_hub *hub = started_hub(8);
	char want[512], missed[160], last[40];
	uint64_t x, y;
	(void)st;

	x = publish_id(hub, &plugin_a, "a", "u", "x");
	y = publish_id(hub, &plugin_a, "a", "u", "y");
	/* Each would replay something, or a notice, if it were read as a number. */
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		expect_resumed(hub, &plugin_a, "a", "u", bad[i], "");
	/* Blanks around a number are fine. */
	expect_resumed(hub, &plugin_a, "a", "u",
	               text(last, sizeof last, " \t%llu \t", (unsigned long long)x),
	               frame_n(want, sizeof want, y, "y"));
	/* Leading zeros too: 1, from before this hub. */
	missed_text(missed, sizeof missed, 1, 1, "restart");
	expect_resumed(hub, &plugin_a, "a", "u", " 0001",
	               text(want, sizeof want,
	                    "%sid: %llu\nevent: n\ndata: x\n\nid: %llu\nevent: n\ndata: y\n\n",
	                    missed, (unsigned long long)x, (unsigned long long)y));
	stream_hub_free(hub);
}

/* Publishing races streams that open with the last id they saw: each must
 * get every frame after that id exactly once, in order. A burst is short
 * enough that a stream's replay never passes STREAM_REPLAY_MAX (which would
 * rightly give a notice instead). */
struct racer {
	stream_hub *hub;
	int frames;
	atomic_int done;   /* frames published so far */
	atomic_int failed; /* a publish returned an error */
};

static void *race_publish(void *arg)
{
	struct racer *r = arg;
	for (int i = 0; i < r->frames; i++) {
		if (stream_publish(r->hub, &plugin_a, "a", "u", NULL, "r", 1) < 0)
			atomic_store(&r->failed, 1);
		atomic_store(&r->done, i + 1);
	}
	return NULL;
}

static void test_resume_races_publishing(void **st)
{
	enum { ROUNDS = 150, BURST = STREAM_REPLAY_MAX - 4, OPENS = 3 };
	stream_hub *hub = started_hub(OPENS + 1);
	uint64_t base, total = 0;
	(void)st;

	base = publish_id(hub, &plugin_a, "a", "u", "start");
	/* So that every round's ids are of this hub. */
	for (; total < 4; total++)
		assert_int_equal(stream_publish(hub, &plugin_a, "a", "u", NULL, "r", 1), 0);
	for (int round = 0; round < ROUNDS; round++) {
		struct racer r = {hub, BURST, 0, 0};
		stream *s[OPENS];
		uint64_t from[OPENS], newest, ids[BURST + 8];
		int start = round % BURST;
		double deadline = now_s() + 10;
		pthread_t t;

		assert_int_equal(pthread_create(&t, NULL, race_publish, &r), 0);
		/* Open at a different point of the burst each round. */
		while (atomic_load(&r.done) < start && now_s() < deadline)
			;
		for (int k = 0; k < OPENS; k++) {
			char last[32];
			/* The newest published frame, or one a little older. */
			from[k] = base + total + (uint64_t)atomic_load(&r.done) - (uint64_t)(k == 1) * 2;
			s[k] = resume_ok(hub, &plugin_a, "a", "u", id_text(last, sizeof last, from[k]));
		}
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(atomic_load(&r.failed), 0);
		total += BURST;
		newest = base + total;
		for (int k = 0; k < OPENS; k++) {
			stream_wait_result res;
			char *got = take(s[k], 0, &res);
			size_t n = ids_in(got, ids, BURST + 8);
			assert_int_equal(n, newest - from[k]);
			assert_int_equal(res, n ? STREAM_FRAMES : STREAM_IDLE);
			for (size_t i = 0; i < n; i++)
				assert_true(ids[i] == from[k] + 1 + i);
			assert_null(strstr(got, STREAM_MISSED_EVENT));
			free(got);
			stream_release(s[k]);
		}
	}
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ sockets */

static void test_find_and_watch_socket(void **st)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof a;
	int lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = socket(AF_INET, SOCK_STREAM, 0), sfd;
	int server_port, client_port;
	(void)st;

	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	server_port = ntohs(a.sin_port);
	assert_int_equal(connect(cfd, (struct sockaddr *)&a, sizeof a), 0);
	sfd = accept(lfd, NULL, NULL);
	assert_true(sfd >= 0);
	alen = sizeof a;
	assert_int_equal(getsockname(cfd, (struct sockaddr *)&a, &alen), 0);
	client_port = ntohs(a.sin_port);

	/* The server's side of the connection, not the client's or the listener. */
	assert_int_equal(stream_find_socket("127.0.0.1", client_port, server_port), sfd);
	assert_int_equal(stream_find_socket("127.0.0.2", client_port, server_port), -1);
	assert_int_equal(stream_find_socket("127.0.0.1", client_port, server_port + 1), -1);

	assert_int_equal(stream_peer_gone(sfd), 0);
	assert_int_equal(write(cfd, "GET", 3), 3); /* more input is not a departure */
	assert_int_equal(stream_peer_gone(sfd), 0);
	close(cfd);
	usleep(20 * 1000);
	assert_int_equal(stream_peer_gone(sfd), 1);
	assert_int_equal(stream_peer_gone(-1), 0);
	close(sfd);
	close(lfd);
}

/* An owner writing to a client that never reads: a blocking send of the
 * stream's socket until it fails (at most 20 s each: SO_SNDTIMEO), then
 * the release, as the HTTP worker does. */
struct writer {
	stream *s;
	int fd;
	int err; /* errno of the send that failed */
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	static char buf[65536];
	while (send(w->fd, buf, sizeof buf, MSG_NOSIGNAL) > 0)
		;
	w->err = errno;
	stream_release(w->s);
	return NULL;
}

/* A connected pair over loopback: *server (its sends giving up after 20 s)
 * and *client, which the test never reads. */
static void loopback_pair(int *server, int *client)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof a;
	struct timeval tv = {20, 0};
	int lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = socket(AF_INET, SOCK_STREAM, 0), sfd;

	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&a, sizeof a), 0);
	sfd = accept(lfd, NULL, NULL);
	assert_true(sfd >= 0);
	assert_int_equal(setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
	close(lfd);
	*server = sfd;
	*client = cfd;
}

/* A stream's socket gets its user timeout: a client that vanished (no FIN,
 * no reset) is dropped once what it was sent stays unacknowledged that
 * long, not after the kernel's 15 minutes of retransmissions. */
static void test_a_streams_socket_gets_its_user_timeout(void **st)
{
	int cfd, sfd;
	unsigned int ms = 1;
	socklen_t len = sizeof ms;
	stream_hub *hub = started_hub(4);
	stream *s = open_ok(hub, &plugin_a, "u");
	(void)st;

	loopback_pair(&sfd, &cfd);
	assert_int_equal(getsockopt(sfd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, &len), 0);
	assert_int_equal(ms, 0); /* the kernel's default */
	stream_set_socket(s, sfd);
	assert_int_equal(getsockopt(sfd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, &len), 0);
	assert_int_equal(ms, 0); /* none set on the hub: left to the kernel */
	stream_release(s);
	/* [http] stream_unacked_timeout's, for the streams opened after it is set */
	stream_hub_set_unacked_ms(hub, 5000);
	s = open_ok(hub, &plugin_a, "u");
	stream_set_socket(s, sfd);
	assert_int_equal(getsockopt(sfd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, &len), 0);
	assert_int_equal(ms, 5000);
	stream_release(s);
	stream_hub_free(hub);
	close(sfd);
	close(cfd);
}

static void test_stop_cuts_a_stream_stuck_writing(void **st)
{
	int cfd, sfd;
	stream_hub *hub = started_hub(4);
	stream *quiet = open_ok(hub, &plugin_a, "u"); /* no socket known: left alone */
	struct writer w = {open_ok(hub, &plugin_b, "u"), -1, 0};
	pthread_t t;
	char *got;
	(void)st;

	loopback_pair(&sfd, &cfd);
	w.fd = sfd;
	stream_set_socket(w.s, sfd);
	stream_set_socket(quiet, -1);
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);

	/* Its plugin stops (the stream is closed, no longer the hub's to
	 * close), then the daemon: the stop's grace passes with the writer
	 * still at it. */
	assert_int_equal(stream_close_owner(hub, &plugin_b), 1);
	assert_int_equal(stream_hub_stop(hub), 1);
	got = take(quiet, 0, NULL);
	free(got);
	stream_release(quiet);
	assert_int_equal(stream_hub_wait_idle(hub, 100), 1);
	/* Cut: its send fails at once (not at SO_SNDTIMEO), and it lets go. */
	assert_int_equal(stream_hub_cut(hub), 1);
	assert_int_equal(stream_hub_wait_idle(hub, 10000), 0);
	pthread_join(t, NULL);
	assert_int_equal(w.err, EPIPE);
	/* The client sees the end of the connection. */
	{
		char buf[65536];
		ssize_t n;
		while ((n = read(cfd, buf, sizeof buf)) > 0)
			;
		assert_int_equal(n, 0);
	}
	/* Nothing held, nothing cut. */
	assert_int_equal(stream_hub_cut(hub), 0);
	close(sfd);
	close(cfd);
	stream_hub_free(hub);
}

static stream_hub_stats stats_of(stream_hub *hub)
{
	stream_hub_stats st;
	memset(&st, 0xff, sizeof st);
	stream_hub_stats_get(hub, &st);
	return st;
}

/* A plugin reload closes a stream whose owner waits in a write to a client
 * that stopped reading. It kept its place under max_streams until that
 * write gave up ([http] request_timeout: 20 s here, up to an hour, and
 * restarted by every byte a trickling client takes), and every new client got
 * 503 meanwhile. Now a new stream that finds the hub full cuts it once it
 * has been closed for STREAM_CLOSE_GRACE_MS, and takes its place. */
static void test_a_closed_stream_stuck_writing_gives_up_its_place(void **st)
{
	stream_hub *hub = started_hub(1);
	struct writer w = {open_ok(hub, &plugin_b, "u"), -1, 0};
	stream *next = NULL, *quiet;
	stream_hub_stats now;
	pthread_t t;
	double t0;
	int cfd, rc = EVH_EBUSY;
	(void)st;

	loopback_pair(&w.fd, &cfd);
	stream_set_socket(w.s, w.fd);
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	now = stats_of(hub);
	assert_int_equal(now.max_streams, 1);
	assert_int_equal(now.open, 1);
	assert_int_equal(now.counted, 1);
	assert_int_equal(now.closing, 0);
	assert_int_equal(stream_owner_count(hub, &plugin_b), 1);
	assert_int_equal(stream_owner_count(hub, &plugin_a), 0);

	assert_int_equal(stream_close_owner(hub, &plugin_b), 1);
	now = stats_of(hub);
	assert_int_equal(now.open, 0);
	assert_int_equal(now.closing, 1);
	assert_int_equal(now.counted, 1);
	assert_int_equal(stream_owner_count(hub, &plugin_b), 0);

	/* New clients: refused within the grace, then one takes the place
	 * (well before the writer's 20 s). */
	t0 = now_s();
	while (rc == EVH_EBUSY && now_s() - t0 < 10) {
		rc = stream_open(hub, &plugin_a, "a", "u", NULL, &next);
		if (rc == EVH_EBUSY)
			usleep(50 * 1000);
	}
	assert_int_equal(rc, EVH_OK);
	assert_non_null(next);
	/* Its connection was cut: the writer's send failed, and it let go. */
	pthread_join(t, NULL);
	assert_int_equal(w.err, EPIPE);
	assert_int_equal(stream_hub_count(hub), 1);
	now = stats_of(hub);
	assert_int_equal(now.open, 1);
	assert_int_equal(now.closing, 0);
	assert_int_equal(now.counted, 1);
	assert_int_equal(stream_owner_count(hub, &plugin_a), 1);
	{
		char buf[65536];
		ssize_t n;
		while ((n = read(cfd, buf, sizeof buf)) > 0)
			;
		assert_int_equal(n, 0);
	}
	close(cfd);
	close(w.fd);

	/* A closed stream whose socket is not known keeps its place until its
	 * owner lets go: nothing could make that owner's write fail. */
	assert_int_equal(stream_close_owner(hub, &plugin_a), 1);
	usleep((STREAM_CLOSE_GRACE_MS + 200) * 1000);
	quiet = NULL;
	assert_int_equal(stream_open(hub, &plugin_a, "a", "u", NULL, &quiet), EVH_EBUSY);
	assert_null(quiet);
	assert_int_equal(stats_of(hub).closing, 1);
	stream_release(next);
	quiet = open_ok(hub, &plugin_a, "u");
	stream_release(quiet);
	now = stats_of(hub);
	assert_int_equal(now.counted, 0);
	assert_int_equal(now.open, 0);
	assert_int_equal(now.closing, 0);
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ SDK */

static int fake_resp_stream(evh_response *resp, const char *channel)
{
	(void)resp;
	return channel && !strcmp(channel, "u") ? 42 : EVH_EINVAL;
}

static int fake_publish(evh_plugin *p, const char *channel, const char *event, const char *data)
{
	(void)p;
	(void)event;
	return channel && data ? 3 : EVH_EINVAL;
}

static void test_sdk_wrappers_on_old_and_new_hosts(void **st)
{
	evh_api api;
	(void)st;

	memset(&api, 0, sizeof api);
	api.resp_stream = fake_resp_stream;
	api.stream_publish = fake_publish;
	evh__api = &api;
	/* A 1.0 host's table ends before the streaming calls. */
	api.struct_size = (uint32_t)offsetof(evh_api, resp_stream);
	assert_int_equal(evh_resp_stream(NULL, "u"), EVH_EUNSUPPORTED);
	assert_int_equal(evh_stream_publish(NULL, "u", "e", "{}"), EVH_EUNSUPPORTED);
	api.struct_size = (uint32_t)sizeof api;
	assert_int_equal(evh_resp_stream(NULL, "u"), 42);
	assert_int_equal(evh_stream_publish(NULL, "u", "e", "{}"), 3);
	assert_true(EVH_ABI_MINOR >= 1);
	evh__api = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frame_single_line),
	    cmocka_unit_test(test_frame_multi_line),
	    cmocka_unit_test(test_frame_holds_what_it_says),
	    cmocka_unit_test(test_fan_out_by_plugin_and_channel),
	    cmocka_unit_test(test_slow_reader_is_dropped),
	    cmocka_unit_test(test_slow_reader_is_dropped_by_bytes),
	    cmocka_unit_test(test_plugin_stop_closes_its_streams),
	    cmocka_unit_test(test_max_streams),
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_resume_replays_only_what_was_missed),
	    cmocka_unit_test(test_resume_after_reload_matches_by_name),
	    cmocka_unit_test(test_resume_after_eviction_says_history),
	    cmocka_unit_test(test_resume_from_an_earlier_process_says_restart),
	    cmocka_unit_test(test_resume_past_the_queue_says_too_many),
	    cmocka_unit_test(test_resume_ignores_malformed_ids),
	    cmocka_unit_test(test_resume_races_publishing),
	    cmocka_unit_test(test_find_and_watch_socket),
	    cmocka_unit_test(test_a_streams_socket_gets_its_user_timeout),
	    cmocka_unit_test(test_stop_cuts_a_stream_stuck_writing),
	    cmocka_unit_test(test_a_closed_stream_stuck_writing_gives_up_its_place),
	    cmocka_unit_test(test_sdk_wrappers_on_old_and_new_hosts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
