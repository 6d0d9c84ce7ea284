/* json_check: what is JSON (RFC 8259) and what is not, where an error is
 * reported, and the nesting bound. Every text it accepts must also parse
 * with cJSON (what plugins and the host read JSON with). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static json_status check(const char *s, size_t *at)
{
	return json_check(s, strlen(s), JSON_MAX_DEPTH, at);
}

static void expect_ok(const char *s)
{
	size_t at = 12345;
	cJSON *j;
	if (check(s, &at) != JSON_OK)
		fail_msg("refused valid JSON at byte %zu: %s", at, s);
	j = cJSON_ParseWithLength(s, strlen(s));
	if (!j)
		fail_msg("accepted what cJSON cannot parse: %s", s);
	cJSON_Delete(j);
}

/* Refused as `want`, reported at byte `where`. */
static void expect_refused(const char *s, json_status want, size_t where)
{
	size_t at = 12345;
	json_status got = check(s, &at);
	if (got != want)
		fail_msg("'%.60s': status %d, expected %d", s, got, want);
	if (at != where)
		fail_msg("error in '%.60s' reported at byte %zu, expected %zu", s, at, where);
}

static void expect_error(const char *s, size_t where) { expect_refused(s, JSON_SYNTAX, where); }

static void test_valid(void **state)
{
	static const char *const ok[] = {
	    "0", "-0", "1", "-12", "3.25", "1e9", "1E+9", "2.5e-3", "-0.0e0", "123456789012345678901234567890",
	    "true", "false", "null", "\"\"", "\"a\"", "\" \\\" \\\\ \\/ \\b \\f \\n \\r \\t \"",
	    "\"\\u00e9\\u20AC\"", "\"\\ud83d\\ude00\"", "\"\\u0001\\u0100\"", "\"\xc3\xa9\"", "[]", "{}",
	    "[1,2,3]", "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
	    " \t\r\n[ 1 , { \"a\" : [ ] } ]\n ", "[[[[[[[[[[]]]]]]]]]]", "{\"\":{\"\":{}}}",
	    "[\"]\",\"}\",\"[\",\"{\"]", "{\"a\":1}\n",
	};
	(void)state;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		expect_ok(ok[i]);
}

static void test_invalid_and_where(void **state)
{
	(void)state;
	expect_error("", 0);
	expect_error("   ", 3);
	expect_error("{\"a\": tru}", 6); /* the word that is not a literal */
	expect_error("{\"a\":1} x", 8);  /* after the value */
	expect_error("[1,]", 3);        /* trailing comma */
	expect_error("{\"a\":1,}", 7);
	expect_error("[1 2]", 3);
	expect_error("{\"a\" 1}", 5);
	expect_error("{1:2}", 1);
	expect_error("{\"a\":}", 5);
	expect_error("[", 1);
	expect_error("[1", 2);
	expect_error("{\"a\":1", 6);
	expect_error("]", 0);
	expect_error("[1]]", 3);
	expect_error("[}", 1);
	expect_error("01", 1); /* leading zero: 0, then junk */
	expect_error("+1", 0);
	expect_error(".5", 0);
	expect_error("1.", 2);
	expect_error("1.e3", 2);
	expect_error("1e", 2);
	expect_error("1e+", 3);
	expect_error("-", 1);
	expect_error("- 1", 1);
	expect_error("nul", 0);
	expect_error("True", 0);
	expect_error("\"abc", 4);       /* unterminated */
	expect_error("\"a\tb\"", 2);    /* a raw control character */
	expect_error("\"\\x\"", 1);     /* an unknown escape */
	expect_error("\"\\u12g4\"", 1); /* not four hex digits */
	expect_error("\"\\u12", 1);
	expect_error("\"\\", 2);
	expect_error("\"\\ud800\"", 1);        /* a high surrogate alone */
	expect_error("\"\\ud800\\u0041\"", 1); /* followed by no low one */
	expect_error("\"\\udc00\"", 1);        /* a low surrogate alone */
	expect_error("\xef\xbb\xbf{}", 0);     /* a byte order mark */
	expect_error("[1]/* no */", 3);
	expect_error("{'a':1}", 1);
}

static void test_nul_inside(void **state)
{
	static const char text[] = "{\"a\":\"x\0y\"}";
	size_t at = 0;
	(void)state;
	assert_int_equal(json_check(text, sizeof text - 1, 10, &at), JSON_SYNTAX);
	assert_int_equal(at, 7);
	/* and the length is the bound, not a terminator */
	assert_int_equal(json_check("[1]xyz", 3, 10, &at), JSON_OK);
	assert_int_equal(json_check("[1]xyz", 2, 10, &at), JSON_SYNTAX);
	assert_int_equal(at, 2);
}

/* Strings are scanned 8 bytes a step while plain: a quote, a backslash or
 * a control character must be seen at every offset of a step, and at the
 * short tail, with the error at its byte. */
static void test_string_every_offset(void **state)
{
	char buf[128];
	(void)state;
	for (size_t len = 0; len <= 40; len++) {
		for (size_t at = 0; at <= len; at++) {
			/* "aaaa<X>aaaa" with X a control character: refused there */
			for (const char *bad = "\x01\x1f\n\t"; *bad; bad++) {
				int n = snprintf(buf, sizeof buf, "\"%.*s%c%.*s\"", (int)at,
				                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", *bad,
				                 (int)(len - at), "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
				assert_true(n > 0 && (size_t)n < sizeof buf);
				expect_error(buf, at + 1);
			}
			/* an escape there: accepted */
			snprintf(buf, sizeof buf, "\"%.*s\\n%.*s\"", (int)at,
			         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", (int)(len - at),
			         "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
			expect_ok(buf);
			/* a bad escape there: refused at its backslash */
			snprintf(buf, sizeof buf, "\"%.*s\\x%.*s\"", (int)at,
			         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", (int)(len - at),
			         "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
			expect_error(buf, at + 1);
			/* a quote there ends the string: what follows is the error */
			snprintf(buf, sizeof buf, "[\"%.*s\"%.*sb\"]", (int)at,
			         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", (int)(len - at),
			         "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
			expect_error(buf, at + 3);
		}
		/* unterminated: the error is at the end of the text */
		snprintf(buf, sizeof buf, "\"%.*s", (int)len,
		         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
		expect_error(buf, len + 1);
		/* bytes of UTF-8 (bit 7 set) are plain text */
		snprintf(buf, sizeof buf, "\"%.*s\"", (int)(len / 2 * 2),
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
		expect_ok(buf);
	}
}

/* \u0000 is JSON, but cJSON would end the C string there: "a\u0000b" would
 * be read as "a". Refused, at its backslash, in keys and values. */
static void expect_nul(const char *s, size_t where) { expect_refused(s, JSON_NUL, where); }

static void test_nul_escape(void **state)
{
	(void)state;
	expect_nul("\"\\u0000\"", 1);
	expect_nul("{\"name\":\"lamp\\u0000 hidden\"}", 13);
	expect_nul("{\"k\\u0000\":1}", 3);
	expect_nul("[\"abcdefghijklmnopq\\u0000\"]", 19); /* after a plain run */
	expect_nul("[\"\\n\", \"\\u0000\"]", 8);
	/* an escaped backslash, then the text u0000: no NUL */
	expect_ok("\"\\\\u0000\"");
	expect_ok("\"a\\u0030\""); /* other escapes of control characters pass */
}

static void test_utf8(void **state)
{
	static const struct {
		const char *s;
		long at;
	} cases[] = {
	    {"plain ascii", -1},
	    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", -1},
	    {"ab\xc3", 2},                 /* cut short by the end */
	    {"ab\xe2\x82", 2},
	    {"a\xc3(", 1},                 /* no continuation byte */
	    {"a\x80", 1},                  /* a continuation byte alone */
	    {"a\xc0\xaf", 1},              /* overlong '/' */
	    {"a\xe0\x80\xaf", 1},          /* overlong, three bytes */
	    {"a\xed\xa0\x80", 1},          /* a surrogate */
	    {"a\xf4\x90\x80\x80", 1},      /* past U+10FFFF */
	    {"a\xff", 1},
	};
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (json_utf8_error(cases[i].s, strlen(cases[i].s)) != cases[i].at)
			fail_msg("case %zu: expected %ld", i, cases[i].at);
	/* at every offset of the 8-byte ASCII steps and of the tail */
	for (size_t k = 0; k < 24; k++) {
		char buf[40];
		memset(buf, 'a', sizeof buf);
		buf[k] = (char)0xff;
		assert_int_equal(json_utf8_error(buf, 32), (long)k);
		buf[k] = (char)0xc3;
		buf[k + 1] = (char)0xa9;
		assert_int_equal(json_utf8_error(buf, 32), -1);
		assert_int_equal(json_utf8_error(buf, k + 1), (long)k);
	}
	/* the length bounds the scan: a sequence the bound cuts is cut short */
	assert_int_equal(json_utf8_error("a\xc3\xa9", 2), 1);
	assert_int_equal(json_utf8_error("a\xc3\xa9", 3), -1);
}

/* Whether every number in `j` is finite, as cJSON read it. */
static int all_finite(const cJSON *j)
{
	if (cJSON_IsNumber(j) && !isfinite(j->valuedouble))
		return 0;
	for (const cJSON *c = j ? j->child : NULL; c; c = c->next)
		if (!all_finite(c))
			return 0;
	return 1;
}

static void expect_finite(const char *s)
{
	cJSON *j;
	expect_ok(s);
	j = cJSON_Parse(s);
	if (!all_finite(j))
		fail_msg("accepted a number cJSON reads as infinite: %.60s", s);
	cJSON_Delete(j);
}

/* Refused as out of range at byte `where`; cJSON agrees it is infinite. */
static void expect_range(const char *s, size_t where)
{
	cJSON *j;
	expect_refused(s, JSON_RANGE, where);
	j = cJSON_Parse(s);
	if (!j || all_finite(j))
		fail_msg("refused a number cJSON reads as finite: %.60s", s);
	cJSON_Delete(j);
}

/* Half way from DBL_MAX to 2^1024 (2^1024 - 2^970): this and above round to
 * infinity, below it to DBL_MAX. */
static const char halfway[] =
    "1797693134862315807937289714053034150799341327100378269361737789804449"
    "6829276475094664901797758720709633028641669288791094655554785194040263"
    "0657488671505820681908902000708383676273854845817711531764475730270069"
    "8555713669596228429148198608349364752927190741684443655107043427115596"
    "99508093042880177904174497792";

static void test_number_range(void **state)
{
	char buf[700];
	(void)state;
	expect_finite("1e308");
	expect_finite("-1.7976931348623157e308"); /* DBL_MAX */
	expect_finite("1.7976931348623158e308");  /* below half way: DBL_MAX */
	expect_finite("0.00001e313");
	expect_finite("1e-400"); /* too small: 0, as doubles round */
	expect_finite("0e99999999999999999999");
	expect_finite("-0.0E+400");
	expect_range("1.797693134862315808e308", 0);
	expect_range("1e309", 0);
	expect_range("{\"price\":-1e309}", 9);
	expect_range("[1,2,3E400]", 5);
	expect_range("0.00001e314", 0);
	expect_range("123e99999999999999999999", 0);
	/* 10^308 written out is finite, 10^309 is not */
	snprintf(buf, sizeof buf, "1%0308d", 0);
	expect_finite(buf);
	snprintf(buf, sizeof buf, "[1%0309d]", 0);
	expect_range(buf, 1);
	/* at the line, digit by digit: the 309 digits decide, whatever follows */
	expect_range(halfway, 0);
	snprintf(buf, sizeof buf, "%.308s1.99999999", halfway); /* ...791.999...: below */
	expect_finite(buf);
	snprintf(buf, sizeof buf, "%.308s1%0300d", halfway, 0); /* ...791 and 300 zeros: x10^300 */
	expect_range(buf, 0);
	snprintf(buf, sizeof buf, "0.%s1e309", halfway); /* 0.<halfway>1 x 10^309: above */
	expect_range(buf, 0);
	snprintf(buf, sizeof buf, "0.%.308s1999e309", halfway); /* ...7911999: below */
	expect_finite(buf);
	snprintf(buf, sizeof buf, "%.1s.%se308", halfway, halfway + 1); /* 1.797...e308, exact */
	expect_range(buf, 0);
}

static int dup_of(const char *s, char *name)
{
	return json_duplicate_member(s, strlen(s), name, 64);
}

static void test_duplicate_members(void **state)
{
	char name[64], *deep, *wide;
	size_t n = 0;
	(void)state;
	assert_int_equal(dup_of("{\"a\":1,\"b\":2,\"c\":{\"a\":3}}", name), 0);
	assert_int_equal(dup_of("[{\"a\":1},{\"a\":2}]", name), 0);
	assert_int_equal(dup_of("\"x\"", name), 0);
	assert_int_equal(dup_of("{\"name\":\"x\",\"price\":1,\"price\":\"free\"}", name), 1);
	assert_string_equal(name, "price");
	/* one name, however it is written */
	assert_int_equal(dup_of("{\"a\":1,\"\\u0061\":2}", name), 1);
	assert_string_equal(name, "a");
	/* deeper, and after the first member of an array */
	assert_int_equal(dup_of("{\"l\":[1,{\"k\":{\"z\":1,\"y\":2,\"z\":3}}]}", name), 1);
	assert_string_equal(name, "z");
	/* many members (sorted, not compared pairwise): the last one again */
	wide = malloc(20 * 16 + 32);
	assert_non_null(wide);
	n += (size_t)sprintf(wide, "{");
	for (int i = 0; i < 20; i++)
		n += (size_t)sprintf(wide + n, "\"m%d\":%d,", i, i);
	sprintf(wide + n, "\"m19\":0}");
	assert_int_equal(dup_of(wide, name), 1);
	assert_string_equal(name, "m19");
	wide[n - 1] = '}';
	wide[n] = '\0';
	assert_int_equal(dup_of(wide, name), 0);
	free(wide);
	/* at the bottom of JSON_MAX_DEPTH levels, beside siblings at each */
	deep = malloc(JSON_MAX_DEPTH * 12 + 64);
	assert_non_null(deep);
	n = 0;
	for (int i = 0; i < JSON_MAX_DEPTH - 1; i++)
		n += (size_t)sprintf(deep + n, "[1,");
	n += (size_t)sprintf(deep + n, "{\"q\":1,\"q\":2}");
	for (int i = 0; i < JSON_MAX_DEPTH - 1; i++)
		deep[n++] = ']';
	deep[n] = '\0';
	assert_int_equal(json_check(deep, n, JSON_MAX_DEPTH, NULL), JSON_OK);
	assert_int_equal(dup_of(deep, name), 1);
	assert_string_equal(name, "q");
	free(deep);
}

static void test_depth(void **state)
{
	char *deep = malloc(2 * JSON_MAX_DEPTH + 3);
	size_t at = 0;
	(void)state;
	assert_int_equal(json_check("[[[[1]]]]", 9, 4, &at), JSON_OK);
	assert_int_equal(json_check("[[[[[1]]]]]", 11, 4, &at), JSON_TOO_DEEP);
	assert_int_equal(at, 4);
	assert_int_equal(json_check("{\"a\":{\"b\":[]}}", 14, 2, &at), JSON_TOO_DEEP);
	assert_int_equal(at, 10);
	assert_int_equal(json_check("1", 1, 0, &at), JSON_OK);
	assert_int_equal(json_check("[]", 2, 0, &at), JSON_TOO_DEEP);
	/* deeper bounds than cJSON's own count as cJSON's */
	assert_non_null(deep);
	for (int k = 0; k < JSON_MAX_DEPTH; k++) {
		deep[k] = '[';
		deep[JSON_MAX_DEPTH + 1 + k] = ']';
	}
	deep[JSON_MAX_DEPTH] = '1';
	assert_int_equal(json_check(deep, 2 * JSON_MAX_DEPTH + 1, 1 << 20, &at), JSON_OK);
	memmove(deep + 1, deep, 2 * JSON_MAX_DEPTH + 1);
	deep[0] = '[';
	deep[2 * JSON_MAX_DEPTH + 2] = ']';
	assert_int_equal(json_check(deep, 2 * JSON_MAX_DEPTH + 3, 1 << 20, &at), JSON_TOO_DEEP);
	assert_int_equal(at, JSON_MAX_DEPTH);
	free(deep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),
	    cmocka_unit_test(test_invalid_and_where),
	    cmocka_unit_test(test_nul_inside),
	    cmocka_unit_test(test_string_every_offset),
	    cmocka_unit_test(test_depth),
	    cmocka_unit_test(test_duplicate_members),
	    cmocka_unit_test(test_number_range),
	    cmocka_unit_test(test_nul_escape),
	    cmocka_unit_test(test_utf8),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
