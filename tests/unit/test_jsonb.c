/* jsonb_print and jsonb_number: every number printed reads back as exactly
 * the same double (cJSON_PrintUnformatted's 15 digits did not: it printed
 * 9007199254740991 as 9.00719925474099e+15, and 1.7976931348623157e308 as a
 * number beyond a double's range), and everything else is printed as cJSON
 * prints it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jsonb.h"

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* `v` printed alone and inside a document: the text `want` (NULL: any),
 * which strtod and cJSON both read back as exactly `v`. */
static void expect_number(double v, const char *want)
{
	char num[JSONB_NUMBER_MAX], *doc;
	cJSON *o = cJSON_CreateObject(), *back;
	size_t n = jsonb_number(v, num);

	assert_int_equal(n, strlen(num));
	if (want && strcmp(num, want) != 0)
		fail_msg("%.17g printed as %s, expected %s", v, num, want);
	if (!same_double(strtod(num, NULL), v))
		fail_msg("%.17g printed as %s, which reads back as %.17g", v, num, strtod(num, NULL));
	assert_non_null(cJSON_AddNumberToObject(o, "n", v));
	doc = jsonb_print(o);
	assert_non_null(doc);
	/* what the host lets through as event data, and cJSON reads back */
	assert_int_equal(json_check(doc, strlen(doc), JSON_MAX_DEPTH, NULL), JSON_OK);
	back = cJSON_Parse(doc);
	assert_non_null(back);
	if (!same_double(cJSON_GetObjectItem(back, "n")->valuedouble, v))
		fail_msg("%.17g in %s read back by cJSON as %.17g", v, doc,
		         cJSON_GetObjectItem(back, "n")->valuedouble);
	cJSON_Delete(back);
	cJSON_Delete(o);
	free(doc);
}

static void test_numbers_exact(void **state)
{
	(void)state;
	expect_number(9007199254740991.0, "9007199254740991");
	expect_number(-9007199254740991.0, "-9007199254740991");
	expect_number(8000000000000001.0, "8000000000000001");
	expect_number(1e15, "1000000000000000"); /* cJSON: 1e+15 */
	expect_number(123, "123");
	expect_number(-7, "-7");
	expect_number(0, "0");
	expect_number(1.5, "1.5");
	expect_number(0.1, "0.1");
	expect_number(0.30000000000000004, "0.30000000000000004");
	expect_number(1e21, "1e+21");
	expect_number(9007199254740992.0, "9007199254740992");
	expect_number(18446744073709551616.0, NULL);
	expect_number(5e-324, NULL);
	expect_number(DBL_MIN, NULL);
	expect_number(DBL_MAX, "1.7976931348623157e+308");
	expect_number(-DBL_MAX, "-1.7976931348623157e+308");
	expect_number(-0.0, "-0");
	expect_number(1.0 / 3.0, NULL);
	expect_number(2.0 / 3.0 * 1e-300, NULL);
	/* a spread of doubles with all 17 digits in use */
	for (int i = 1; i < 2000; i++)
		expect_number(i * 0.1 + 1.0 / i, NULL);
}

static void test_numbers_cjson_printed_exactly_unchanged(void **state)
{
	/* What cJSON already printed exactly prints as before. */
	static const double same[] = {0,       1,    -1,  123,     2147483647, 1.5,      0.1,
	                              -2.5e-3, 3.25, 1e300, 1e-300, 0.2,       123.456, 4294967296.0};
	(void)state;
	for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
		cJSON *v = cJSON_CreateNumber(same[i]);
		char *ours = jsonb_print(v), *theirs = cJSON_PrintUnformatted(v);
		assert_non_null(ours);
		assert_non_null(theirs);
		assert_string_equal(ours, theirs);
		free(ours);
		cJSON_free(theirs);
		cJSON_Delete(v);
	}
}

static void test_not_numbers(void **state)
{
	char num[JSONB_NUMBER_MAX];
	(void)state;
	/* as cJSON prints them (the host refuses such numbers on the way in) */
	jsonb_number(NAN, num);
	assert_string_equal(num, "null");
	jsonb_number(INFINITY, num);
	assert_string_equal(num, "null");
	jsonb_number(-INFINITY, num);
	assert_string_equal(num, "null");
}

/* Apart from numbers, the text is cJSON_PrintUnformatted's, byte for byte. */
static void test_like_cjson(void **state)
{
	static const char doc[] =
	    "{\"a\":1,\"b\":[true,false,null,\"\",[],{}],\"c\":{\"d\":\"e\",\"f\":[[1],[2,[3]]]},"
	    "\"s\":\"quote \\\" backslash \\\\ slash \\/ \\b\\f\\n\\r\\t \\u0001\\u001f\\u007f "
	    "\\u00e9 \xe2\x82\xac \\ud83d\\ude00\",\"k\\\"\\n\\u0002\":\"v\",\"dup\":1,\"dup\":2,"
	    "\"neg\":-12,\"frac\":2.5,\"\":0}";
	char ctl[40], *ours, *theirs;
	cJSON *v = cJSON_Parse(doc), *raw;
	(void)state;
	assert_non_null(v);
	for (int i = 0; i < 39; i++) /* every control character, and some after */
		ctl[i] = (char)(i + 1);
	ctl[39] = '\0';
	assert_non_null(cJSON_AddStringToObject(v, "ctl", ctl));
	raw = cJSON_CreateRaw("12345678901234567890");
	assert_non_null(raw);
	assert_true(cJSON_AddItemToObject(v, "raw", raw));
	ours = jsonb_print(v);
	theirs = cJSON_PrintUnformatted(v);
	assert_non_null(ours);
	assert_non_null(theirs);
	assert_string_equal(ours, theirs);
	free(ours);
	cJSON_free(theirs);
	cJSON_Delete(v);

	/* a top-level scalar, and a document much larger than the first buffer */
	v = cJSON_CreateString("x");
	ours = jsonb_print(v);
	assert_string_equal(ours, "\"x\"");
	free(ours);
	cJSON_Delete(v);
	v = cJSON_CreateArray();
	for (int i = 0; i < 5000; i++)
		assert_true(cJSON_AddItemToArray(v, cJSON_CreateString("0123456789")));
	ours = jsonb_print(v);
	theirs = cJSON_PrintUnformatted(v);
	assert_non_null(ours);
	assert_string_equal(ours, theirs);
	free(ours);
	cJSON_free(theirs);
	cJSON_Delete(v);
}

/* The defect as a client saw it: a document parsed and printed again. */
static void test_document_round_trip(void **state)
{
	static const char in[] = "{\"n\":9007199254740991,\"m\":[-9007199254740991,8000000000000001,"
	                         "0.30000000000000004,1.7976931348623157e308,5e-324,1e21]}";
	static const char want[] = "{\"n\":9007199254740991,\"m\":[-9007199254740991,8000000000000001,"
	                           "0.30000000000000004,1.7976931348623157e+308,"
	                           "4.94065645841247e-324,1e+21]}";
	cJSON *v = cJSON_Parse(in);
	char *out;
	(void)state;
	assert_non_null(v);
	out = jsonb_print(v);
	assert_non_null(out);
	assert_string_equal(out, want);
	free(out);
	cJSON_Delete(v);
}

/* What cJSON_PrintUnformatted refuses, jsonb_print refuses. */
static void test_unprintable(void **state)
{
	cJSON *raw = cJSON_CreateRaw("1"), *arr = cJSON_CreateArray(), bad;
	(void)state;
	assert_null(jsonb_print(NULL));
	memset(&bad, 0, sizeof bad); /* cJSON_Invalid */
	assert_null(jsonb_print(&bad));
	assert_non_null(raw);
	free(raw->valuestring);
	raw->valuestring = NULL;
	assert_null(cJSON_PrintUnformatted(raw));
	assert_true(cJSON_AddItemToArray(arr, raw));
	assert_null(jsonb_print(arr));
	cJSON_Delete(arr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_numbers_exact),
	    cmocka_unit_test(test_numbers_cjson_printed_exactly_unchanged),
	    cmocka_unit_test(test_not_numbers),
	    cmocka_unit_test(test_like_cjson),
	    cmocka_unit_test(test_document_round_trip),
	    cmocka_unit_test(test_unprintable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
