/* stream.c: SSE framing (multi-line data, CR/LF/CRLF), fan-out by plugin
 * and channel, the per-stream bound (a slow reader is dropped, the
 * publisher is not held up), closing on plugin stop and daemon stop, the
 * max_streams limit, argument checks, finding and watching a connection's
 * socket; and the SDK wrappers on a host that predates streaming. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <evhost/evhost.h>

#include "stream.h"

const evh_api *evh__api;

static int plugin_a, plugin_b; /* owners: only their addresses matter */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
	assert_int_equal(stream_open(hub, owner, "test", channel, &s), EVH_OK);
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

static void test_fan_out_by_plugin_and_channel(void **st)
{
	stream_hub *hub = started_hub(8);
	stream *a1 = open_ok(hub, &plugin_a, "user-1"), *a1b = open_ok(hub, &plugin_a, "user-1");
	stream *a2 = open_ok(hub, &plugin_a, "user-2"), *b1 = open_ok(hub, &plugin_b, "user-1");
	stream_wait_result r;
	char *got;
	(void)st;

	assert_int_equal(stream_publish(hub, &plugin_a, "user-1", "n", "hello", 5), 2);
	got = take(a1, 1000, &r);
	assert_int_equal(r, STREAM_FRAMES);
	assert_string_equal(got, "id: 1\nevent: n\ndata: hello\n\n");
	free(got);
	got = take(a1b, 1000, &r);
	assert_string_equal(got, "id: 1\nevent: n\ndata: hello\n\n");
	free(got);
	/* Same channel name under another plugin, another channel: nothing. */
	got = take(a2, 20, &r);
	assert_int_equal(r, STREAM_IDLE);
	assert_string_equal(got, "");
	free(got);
	got = take(b1, 20, &r);
	assert_int_equal(r, STREAM_IDLE);
	free(got);
	assert_int_equal(stream_publish(hub, &plugin_a, "nobody", NULL, "x", 1), 0);

	/* Ids keep increasing across channels; queued frames come out together. */
	assert_int_equal(stream_publish(hub, &plugin_b, "user-1", NULL, "b", 1), 1);
	assert_int_equal(stream_publish(hub, &plugin_b, "user-1", NULL, "c", 1), 1);
	got = take(b1, 1000, &r);
	assert_string_equal(got, "id: 3\ndata: b\n\nid: 4\ndata: c\n\n");
	free(got);

	stream_release(a1);
	assert_int_equal(stream_publish(hub, &plugin_a, "user-1", NULL, "y", 1), 1);
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
		assert_int_equal(stream_publish(hub, &plugin_a, "u", NULL, "x", 1), 2);
		if (i % 8 == 0) /* `other` keeps up */
			free(take(other, 0, NULL));
	}
	free(take(other, 0, NULL));
	/* `slow` is full: the next publish drops it instead of waiting. */
	t0 = now_s();
	assert_int_equal(stream_publish(hub, &plugin_a, "u", NULL, "x", 1), 1);
	assert_true(now_s() - t0 < 0.5);
	got = take(slow, 1000, &r);
	assert_int_equal(r, STREAM_CLOSED);
	assert_string_equal(got, ": dropped: client too slow\n\n");
	free(got);
	assert_string_equal(stream_close_reason(slow), "dropped: client too slow");
	/* It no longer receives, and still counts until its owner lets go. */
	assert_int_equal(stream_publish(hub, &plugin_a, "u", NULL, "x", 1), 1);
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
	char *got;
	(void)st;

	assert_int_equal(stream_publish(hub, &plugin_a, "u", "n", "last", 4), 1);
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
	assert_string_equal(got, "id: 1\nevent: n\ndata: last\n\n: service stopping\n\n");
	free(got);
	assert_int_equal(stream_publish(hub, &plugin_a, "u", NULL, "x", 1), 0);
	/* The other plugin's stream is untouched. */
	assert_int_equal(stream_publish(hub, &plugin_b, "u", NULL, "x", 1), 1);
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
	assert_int_equal(stream_open(hub, &plugin_a, "test", "u", &a), EVH_ESTATE);
	assert_null(a);
	stream_hub_free(hub);
}

/* ------------------------------------------------------------ limits */

static void test_max_streams(void **st)
{
	stream_hub *hub = stream_hub_new();
	stream *s1, *s2, *s3 = NULL;
	(void)st;

	assert_int_equal(stream_open(hub, &plugin_a, "t", "u", &s1), EVH_ESTATE); /* not started */
	stream_hub_start(hub, 2);
	s1 = open_ok(hub, &plugin_a, "u");
	s2 = open_ok(hub, &plugin_b, "w");
	assert_int_equal(stream_open(hub, &plugin_a, "t", "u", &s3), EVH_EBUSY);
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
	assert_int_equal(stream_open(hub, &plugin_a, "t", "", &s), EVH_EINVAL);
	assert_int_equal(stream_open(hub, &plugin_a, "t", chan, &s), EVH_EINVAL);
	assert_int_equal(stream_open(hub, NULL, "t", "u", &s), EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "u", "bad\nname", "x", 1), EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "u", "", "x", 1), EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "", "n", "x", 1), EVH_EINVAL);
	assert_int_equal(stream_publish(hub, &plugin_a, "u", "n", big, STREAM_DATA_MAX + 1),
	                 EVH_ETOOBIG);
	assert_int_equal(stream_publish(hub, &plugin_a, "u", "n", big, STREAM_DATA_MAX), 0);
	free(big);
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
	assert_int_equal(EVH_ABI_MINOR, 1);
	evh__api = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frame_single_line),
	    cmocka_unit_test(test_frame_multi_line),
	    cmocka_unit_test(test_fan_out_by_plugin_and_channel),
	    cmocka_unit_test(test_slow_reader_is_dropped),
	    cmocka_unit_test(test_plugin_stop_closes_its_streams),
	    cmocka_unit_test(test_max_streams),
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_find_and_watch_socket),
	    cmocka_unit_test(test_sdk_wrappers_on_old_and_new_hosts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
