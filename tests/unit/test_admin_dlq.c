/* How GET /admin/plugins/NAME/dlq shows a dead letter (host/admin.c's
 * dlq_msg_json, compiled in as fuzz_admin does): its headers, text ones in
 * "headers" and the others in base64 in "headers_base64", the last of a
 * name winning in its place, and how many name comparisons that takes
 * (strcmp_count.h) for a message of many headers. */
#define _GNU_SOURCE /* as admin.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../host/admin.c"
#include "strcmp_count.h"

/* A dead letter of `n` headers with these names and values (NULL: none),
 * text values' lengths taken as strlen. */
static dlq_msg message(size_t n, char **names, char **values, size_t *lens)
{
	dlq_msg m = {.topic = "t.p.dlq", .partition = 0, .offset = 7, .timestamp_ms = -1};
	m.nheaders = n;
	m.hname = names;
	m.hvalue = values;
	m.hlen = lens;
	return m;
}

static char *shown(const dlq_msg *m)
{
	int ok = 1;
	cJSON *o = dlq_msg_json(m, 0, 1, &ok);
	char *text;

	assert_true(ok);
	assert_non_null(o);
	text = cJSON_PrintUnformatted(o);
	assert_non_null(text);
	cJSON_Delete(o);
	return text;
}

/* As before the names were sorted (checked on that code): each name once,
 * where its last header is; a binary value in "headers_base64" under its
 * own name; names that are not UTF-8 scrubbed, and alike once scrubbed. */
static void test_headers_shown(void **state)
{
	char *names[] = {"a", "b", "c", "a", "x_base64", "x", "\xff", "\xfe", "b"};
	char *values[] = {"1", "\xff", NULL, "2", "t", "\x00", "n1", "n2", "text"};
	size_t lens[] = {1, 1, 0, 1, 1, 1, 2, 2, 4};
	dlq_msg m = message(9, names, values, lens);
	char *text = shown(&m);
	(void)state;

	assert_string_equal(text, "{\"topic\":\"t.p.dlq\",\"partition\":0,\"offset\":7,\"key\":null,"
	                          "\"value\":null,\"value_size\":0,\"headers\":{\"c\":null,\"a\":\"2\","
	                          "\"x_base64\":\"t\",\"\xef\xbf\xbd\":\"n2\",\"b\":\"text\"},"
	                          "\"headers_base64\":{\"x\":\"AA==\"},\"redriven\":false}");
	cJSON_free(text);

	m.nheaders = 0;
	text = shown(&m);
	assert_non_null(strstr(text, "\"headers\":{},\"redriven\""));
	cJSON_free(text);
}

#define MANY_HEADERS 20000

/* A message of 20000 header names and 2000 of them again at the end:
 * those are shown there, the others in their order; about log2(N) name
 * comparisons a header (a sort). Taking the name out of the answer's
 * object before each header took N/2 (2 * 10^8 here; 60000 names made a
 * listing take 15 s). */
static void test_many_headers(void **state)
{
	enum { N = MANY_HEADERS, AGAIN = MANY_HEADERS / 10 };
	char **names = calloc(N + AGAIN, sizeof *names), **values = calloc(N + AGAIN, sizeof *values);
	size_t *lens = calloc(N + AGAIN, sizeof *lens), calls, i;
	dlq_msg m = message(N + AGAIN, names, values, lens);
	cJSON *o, *h, *bin;
	char want[32];
	int ok = 1;
	(void)state;

	assert_true(names && values && lens);
	for (i = 0; i < N + AGAIN; i++) {
		size_t at = i < N ? i : (i - N) * 10;
		assert_true(asprintf(&names[i], "h%05zu", at) > 0);
		/* every 7th first value is binary: in base64 unless given again */
		assert_true(asprintf(&values[i], i < N && at % 7 == 0 ? "\xff%zu" : "v%zu", i) > 0);
		lens[i] = strlen(values[i]);
	}

	calls = strcmp_calls;
	o = dlq_msg_json(&m, 0, 1, &ok);
	calls = strcmp_calls - calls;
	assert_true(ok);
	h = cJSON_GetObjectItemCaseSensitive(o, "headers")->child;
	bin = cJSON_GetObjectItemCaseSensitive(o, "headers_base64")->child;
	for (i = 0; i < N + AGAIN; i++) {
		size_t at = i < N ? i : (i - N) * 10;
		cJSON **in = i < N && at % 7 == 0 ? &bin : &h;
		if (i < N && at % 10 == 0)
			continue; /* given again */
		snprintf(want, sizeof want, "h%05zu", at);
		assert_non_null(*in);
		assert_string_equal((*in)->string, want);
		if (in == &h) {
			snprintf(want, sizeof want, "v%zu", i);
			assert_string_equal(h->valuestring, want);
		}
		*in = (*in)->next;
	}
	assert_null(h);
	assert_null(bin);
	if (calls > 64 * (size_t)(N + AGAIN))
		fail_msg("%zu name comparisons for %d headers", calls, N + AGAIN);

	cJSON_Delete(o);
	for (i = 0; i < N + AGAIN; i++) {
		free(names[i]);
		free(values[i]);
	}
	free(names);
	free(values);
	free(lens);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_headers_shown),
	    cmocka_unit_test(test_many_headers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
