/* events.c: uuid/time/traceparent formats, CloudEvents header round trip,
 * missing and oversized headers; plus kafka.c's retry backoff (pure). */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "events.h"
#include "kafka.h"

static int is_hex_lower(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return 0;
	return 1;
}

static void test_uuid_format(void **state)
{
	char a[37], b[37];
	(void)state;
	events_uuid(a);
	events_uuid(b);
	assert_int_equal(strlen(a), 36);
	assert_true(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
	assert_true(is_hex_lower(a, 8) && is_hex_lower(a + 9, 4) && is_hex_lower(a + 14, 4) &&
	            is_hex_lower(a + 19, 4) && is_hex_lower(a + 24, 12));
	assert_int_equal(a[14], '7');                   /* version 7 */
	assert_non_null(strchr("89ab", a[19]));         /* RFC 9562 variant */
	assert_string_not_equal(a, b);
}

/* UUIDv7: the first 48 bits are the Unix time in milliseconds, so ids made
 * later sort after (or, within a millisecond, next to) earlier ones. */
static void test_uuid_time_ordered(void **state)
{
	char first[37], id[37], hex[13];
	struct timespec ts, pause = {0, 3 * 1000 * 1000};
	unsigned long long ms, stamp;
	(void)state;
	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (unsigned long long)ts.tv_sec * 1000u + (unsigned long long)ts.tv_nsec / 1000000u;
	events_uuid(first);
	memcpy(hex, first, 8);
	memcpy(hex + 8, first + 9, 4);
	hex[12] = '\0';
	stamp = strtoull(hex, NULL, 16);
	assert_true(stamp >= ms && stamp < ms + 5000);
	for (int i = 0; i < 2000; i++) {
		events_uuid(id);
		assert_true(strncmp(id, first, 13) >= 0);
	}
	nanosleep(&pause, NULL);
	events_uuid(id);
	assert_true(strcmp(id, first) > 0);
}

static void test_time_format(void **state)
{
	char t[40];
	int y, mo, d, h, mi, s, ms;
	char z;
	(void)state;
	events_now_rfc3339(t);
	assert_int_equal(strlen(t), 24);
	assert_int_equal(
	    sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h, &mi, &s, &ms, &z), 8);
	assert_true(y >= 2024 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31);
	assert_true(h < 24 && mi < 60 && s <= 60 && ms < 1000);
	assert_int_equal(z, 'Z');
}

/* Trace and span ids: lowercase hex, never all zero, different each time. */
static void test_random_hex(void **state)
{
	char a[33], b[33], s[17];
	(void)state;
	events_random_hex(a, 16);
	events_random_hex(b, 16);
	events_random_hex(s, 8);
	assert_int_equal(strlen(a), 32);
	assert_int_equal(strlen(s), 16);
	assert_true(is_hex_lower(a, 32) && is_hex_lower(s, 16));
	assert_string_not_equal(a, b);
	assert_memory_not_equal(a, "00000000000000000000000000000000", 32);
}

/* A traceparent's parts: ids in lower case, the flags as a number; a
 * later version's extra fields are allowed, version 00's are not. */
static void test_traceparent_parse(void **state)
{
	char t[33], sp[17];
	int flags = -1;
	(void)state;
	assert_int_equal(events_traceparent_parse(
	                     "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", t, sp, &flags),
	                 0);
	assert_string_equal(t, "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_string_equal(sp, "00f067aa0ba902b7");
	assert_int_equal(flags, 1);
	assert_int_equal(events_traceparent_parse(
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", t, sp, &flags),
	                 0);
	assert_int_equal(flags, 0);
	assert_int_equal(events_traceparent_parse(
	                     "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-xyz", NULL,
	                     NULL, &flags),
	                 0);
	assert_int_equal(flags, 3);
	assert_int_equal(events_traceparent_parse(
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", t, sp,
	                     &flags),
	                 -1);
	assert_int_equal(events_traceparent_parse(
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", t, sp, &flags),
	                 -1);
	assert_int_equal(events_traceparent_parse(
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", t, sp, &flags),
	                 -1);
}

/* The trace id of a caller's or a Kafka header's traceparent, in lower
 * case; anything else is refused and leaves `out` alone. */
static void test_trace_id_of_traceparent(void **state)
{
	const char *bad[] = {NULL,
	                     "",
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
	                     "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	                     "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	                     "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
	                     "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
	                     "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
	                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01"};
	char out[33];
	(void)state;
	assert_int_equal(
	    events_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", out), 0);
	assert_string_equal(out, "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_int_equal(
	    events_trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", out), 0);
	assert_string_equal(out, "4bf92f3577b34da6a3ce929d0e0e4736");
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		strcpy(out, "untouched");
		if (events_trace_id(bad[i], out) != -1 || strcmp(out, "untouched"))
			fail_msg("accepted: %s", bad[i] ? bad[i] : "(null)");
	}
}

static void test_round_trip(void **state)
{
	ce_meta in, out;
	rd_kafka_headers_t *h = rd_kafka_headers_new(8);
	const void *v;
	size_t n;
	(void)state;
	memset(&in, 0, sizeof in);
	events_uuid(in.id);
	strcpy(in.type, "USER_CREATED");
	strcpy(in.source, "evhost://host1/user");
	events_now_rfc3339(in.time);
	strcpy(in.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	assert_int_equal(events_headers_encode(&in, h), 0);
	/* defaults filled in; empty fields skipped */
	assert_int_equal(rd_kafka_header_cnt(h), 7);
	assert_int_equal(rd_kafka_header_get_last(h, "ce_specversion", &v, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(v, "1.0", 3);
	assert_int_equal(rd_kafka_header_get_last(h, "content-type", &v, &n), 0);
	assert_memory_equal(v, "application/json", n);

	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_string_equal(out.id, in.id);
	assert_string_equal(out.type, in.type);
	assert_string_equal(out.source, in.source);
	assert_string_equal(out.time, in.time);
	assert_string_equal(out.traceparent, in.traceparent);
	assert_string_equal(out.specversion, "1.0");
	assert_string_equal(out.content_type, "application/json");
	rd_kafka_headers_destroy(h);
}

static void test_skips_empty(void **state)
{
	ce_meta in, out;
	rd_kafka_headers_t *h = rd_kafka_headers_new(8);
	const void *v;
	size_t n;
	(void)state;
	memset(&in, 0, sizeof in);
	strcpy(in.id, "id-1");
	strcpy(in.type, "T");
	assert_int_equal(events_headers_encode(&in, h), 0);
	assert_int_equal(rd_kafka_header_cnt(h), 4); /* id, type, specversion, content-type */
	assert_int_not_equal(rd_kafka_header_get_last(h, "ce_source", &v, &n), 0);
	assert_int_not_equal(rd_kafka_header_get_last(h, "traceparent", &v, &n), 0);
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_string_equal(out.source, "");
	rd_kafka_headers_destroy(h);
}

static void test_missing_headers(void **state)
{
	ce_meta out;
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);
	(void)state;
	assert_int_equal(events_headers_decode(NULL, &out), -1);
	assert_string_equal(out.id, "");
	assert_int_equal(events_headers_decode(h, &out), -1);
	rd_kafka_header_add(h, "ce_id", -1, "abc", 3);
	assert_int_equal(events_headers_decode(h, &out), -1); /* no ce_type */
	assert_string_equal(out.id, "abc");
	assert_string_equal(out.type, "");
	rd_kafka_header_add(h, "ce_type", -1, "X", 1);
	assert_int_equal(events_headers_decode(h, &out), 0);
	rd_kafka_headers_destroy(h);
}

static void test_untrusted_values(void **state)
{
	ce_meta out;
	char big[1000];
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);
	(void)state;
	memset(big, 'x', sizeof big);
	rd_kafka_header_add(h, "ce_id", -1, big, sizeof big);          /* no terminator */
	rd_kafka_header_add(h, "ce_type", -1, "AB\0CD", 5);            /* embedded NUL */
	rd_kafka_header_add(h, "ce_source", -1, NULL, 0);              /* null value */
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_int_equal(strlen(out.id), sizeof out.id - 1);
	assert_true(out.id_cut); /* so not an identity (kafka.c) */
	assert_string_equal(out.type, "AB");
	assert_string_equal(out.source, "");
	/* the last header of a name wins, its length too: 255 bytes fit whole */
	rd_kafka_header_add(h, "ce_type", -1, "LAST", 4);
	rd_kafka_header_add(h, "ce_id", -1, big, sizeof out.id - 1);
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_string_equal(out.type, "LAST");
	assert_int_equal(strlen(out.id), sizeof out.id - 1);
	assert_false(out.id_cut);
	rd_kafka_header_add(h, "ce_id", -1, "A\0B", 3); /* a NUL cuts it too */
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_string_equal(out.id, "A");
	assert_true(out.id_cut);
	assert_false(out.type_cut);
	rd_kafka_header_add(h, "ce_type", -1, big, sizeof out.type); /* one byte too many */
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_int_equal(strlen(out.type), sizeof out.type - 1);
	assert_true(out.type_cut); /* so dead-lettered, not dispatched (kafka.c) */
	/* source and time: read as absent when cut (kafka_ev_source, kafka_ev_time) */
	assert_false(out.source_cut);
	assert_false(out.time_cut);
	rd_kafka_header_add(h, "ce_source", -1, big, sizeof out.source - 1);
	rd_kafka_header_add(h, "ce_time", -1, "2026-12-01T00:00:00.000000000+00:00", -1);
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_false(out.source_cut);
	assert_false(out.time_cut);
	rd_kafka_header_add(h, "ce_source", -1, big, sizeof out.source);
	rd_kafka_header_add(h, "ce_time", -1, big, sizeof out.time);
	assert_int_equal(events_headers_decode(h, &out), 0);
	assert_true(out.source_cut);
	assert_true(out.time_cut);
	rd_kafka_headers_destroy(h);
}

static void test_retry_delay(void **state)
{
	(void)state;
	/* full jitter: 0 .. min(cap, base * 2^(attempt-1)) */
	assert_int_equal(kafka_retry_delay_ms(100, 10000, 1, 0), 0);
	assert_int_equal(kafka_retry_delay_ms(100, 10000, 1, 100), 100);
	assert_int_equal(kafka_retry_delay_ms(100, 10000, 1, 101), 0);
	assert_int_equal(kafka_retry_delay_ms(100, 10000, 3, 400), 400);
	assert_int_equal(kafka_retry_delay_ms(100, 10000, 3, 401), 0);
	assert_int_equal(kafka_retry_delay_ms(100, 1000, 30, 1000), 1000); /* capped */
	assert_int_equal(kafka_retry_delay_ms(100, 1000, 1000, 1001), 0);
	assert_int_equal(kafka_retry_delay_ms(0, 0, 1, 1), 1);             /* sane floor */
	for (uint32_t r = 0; r < 5000; r += 7)
		assert_true(kafka_retry_delay_ms(1000, 60000, 5, r * 2654435761u) <= 16000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_uuid_format),      cmocka_unit_test(test_uuid_time_ordered),      cmocka_unit_test(test_time_format),
	    cmocka_unit_test(test_random_hex),
	    cmocka_unit_test(test_traceparent_parse), cmocka_unit_test(test_trace_id_of_traceparent),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_skips_empty),      cmocka_unit_test(test_missing_headers),
	    cmocka_unit_test(test_untrusted_values), cmocka_unit_test(test_retry_delay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
