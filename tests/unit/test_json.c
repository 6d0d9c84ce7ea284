/* json_check: what is JSON (RFC 8259) and what is not, where an error is
 * reported, and the nesting bound. Every text it accepts must also parse
 * with cJSON (what plugins and the host read JSON with). And the duplicate
 * member check of the same scan, against cJSON's tree walked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_oracle.h"

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

/* Bytes that are not UTF-8 become U+FFFD, one each; well-formed text is
 * left alone (NULL). */
static void test_utf8_scrub(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"/crud/\xff", "/crud/\xef\xbf\xbd"},
	    {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
	    {"a\xc3(b", "a\xef\xbf\xbd(b"},
	    {"caf\xc3\xa9\xed\xa0\x80!", "caf\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"},
	    {"end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd"},
	};
	int oom = 0;
	(void)state;
	assert_null(json_utf8_scrub("caf\xc3\xa9 \xf0\x9f\x98\x80", &oom));
	assert_null(json_utf8_scrub("", &oom));
	assert_int_equal(oom, 0);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *s = json_utf8_scrub(cases[i].in, &oom);
		assert_non_null(s);
		assert_string_equal(s, cases[i].out);
		assert_int_equal(json_utf8_error(s, strlen(s)), -1);
		free(s);
	}
	assert_int_equal(oom, 0);
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

/* A cut falls where a character begins, at every length of every width of
 * character; and the text it leaves is UTF-8. */
static void test_utf8_cut(void **state)
{
	static const char *const chars[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
	char s[128], sentence[256];
	(void)state;
	assert_int_equal(json_utf8_cut("", 0), 0);
	assert_int_equal(json_utf8_cut("abc", 3), 3);
	assert_int_equal(json_utf8_cut("abc", 100), 3);
	assert_int_equal(json_utf8_cut("abc", 2), 2);
	for (size_t c = 0; c < sizeof chars / sizeof chars[0]; c++) {
		size_t w = strlen(chars[c]);
		s[0] = '\0';
		for (size_t i = 0; i < 10; i++)
			strcat(s, chars[c]);
		for (size_t max = 0; max <= 10 * w; max++) {
			size_t n = json_utf8_cut(s, max);
			assert_true(n <= max && max - n < w && n % w == 0);
			assert_true(json_utf8_error(s, n) < 0);
		}
	}

	/* The one sentence for a name given twice, cut the same way. */
	json_duplicate_sentence("a", sentence, sizeof sentence);
	assert_string_equal(sentence, "the member name \"a\" appears twice in one object "
	                              "(parsers disagree on which value counts)");
	memset(s, 'x', 99);
	memcpy(s + 99, "\xc3\xa9z", 4); /* byte 100 is inside the "é" */
	json_duplicate_sentence(s, sentence, sizeof sentence);
	assert_true(json_utf8_error(sentence, strlen(sentence)) < 0);
	assert_non_null(strstr(sentence, "xx\" (shortened) appears twice"));
	s[101] = '\0'; /* 101 bytes, whole characters: still more than is shown */
	json_duplicate_sentence(s, sentence, sizeof sentence);
	assert_non_null(strstr(sentence, "xx\" (shortened) appears twice"));
	s[99] = '\0'; /* 99 bytes: whole */
	json_duplicate_sentence(s, sentence, sizeof sentence);
	assert_non_null(strstr(sentence, "xx\" appears twice"));
}

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

/* ------------------------------------------- duplicate names, in the scan */


/* s[0..n) through json_check_members and json_check alike (status, error
 * offset) at a few depth bounds; and when json_check accepts it, the scan's
 * duplicate against the tree's, with room for the whole name and for a
 * piece. The scan's answer. */
static int same_as_tree(const char *s, size_t n)
{
	static const int depths[] = {JSON_MAX_DEPTH, 0, 1, 3};
	static const size_t lens[] = {256, 3, 1};
	char name[256], want[256];
	int dup = 7, rc = 0;
	for (size_t d = 0; d < sizeof depths / sizeof *depths; d++) {
		size_t at1 = 11, at2 = 22;
		json_status st = json_check(s, n, depths[d], &at1);
		assert_int_equal(json_check_members(s, n, depths[d], &at2, &dup, name, sizeof name), st);
		if (st != JSON_OK) {
			assert_int_equal(at1, at2);
			assert_int_equal(dup, 0);
		}
	}
	if (json_check(s, n, JSON_MAX_DEPTH, NULL) != JSON_OK)
		return 0;
	for (size_t l = 0; l < sizeof lens / sizeof *lens; l++) {
		memset(name, 'x', sizeof name);
		memset(want, 'y', sizeof want);
		rc = json_duplicate_member(s, n, name, lens[l]);
		if (rc != dup_by_tree(s, n, want, lens[l]))
			fail_msg("the scan says %d, the tree %d: %.*s", rc, dup_by_tree(s, n, want, lens[l]),
			         (int)n, s);
		if (rc == 1 && strcmp(name, want))
			fail_msg("the scan names \"%s\", the tree \"%s\": %.*s", name, want, (int)n, s);
		assert_int_equal(json_check_members(s, n, JSON_MAX_DEPTH, NULL, &dup, want, lens[l]),
		                 JSON_OK);
		assert_int_equal(dup, rc);
		if (rc == 1)
			assert_string_equal(want, name);
	}
	return rc;
}

static int same_as_tree_str(const char *s)
{
	return same_as_tree(s, strlen(s));
}

static void expect_dup(const char *s, const char *name)
{
	char got[64];
	assert_int_equal(same_as_tree_str(s), name ? 1 : 0);
	if (name) {
		assert_int_equal(dup_of(s, got), 1);
		assert_string_equal(got, name);
	}
}

/* A text of `count` members named "m0", "m1", ..., then `extra` as is
 * (",\"m5\":0" say), in one object: malloc'd. */
static char *wide_object(int count, const char *extra)
{
	char *s = malloc((size_t)count * 24 + strlen(extra) + 8);
	size_t n = 1;
	assert_non_null(s);
	s[0] = '{';
	for (int i = 0; i < count; i++)
		n += (size_t)sprintf(s + n, "%s\"m%d\":%d", i ? "," : "", i, i);
	sprintf(s + n, "%s}", extra);
	return s;
}

static void test_duplicate_members_scan(void **state)
{
	char name[64], *s;
	int dup;
	size_t at;
	(void)state;
	/* escapes: one name however written, compared decoded */
	expect_dup("{\"\\u00e9\":1,\"\xc3\xa9\":2}", "\xc3\xa9");
	expect_dup("{\"\\u00E9t\\u00e9\":1,\"\xc3\xa9t\xc3\xa9\":2}", "\xc3\xa9t\xc3\xa9");
	expect_dup("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", "\xf0\x9f\x98\x80");
	expect_dup("{\"\\u20ac\":1,\"\xe2\x82\xac\":2}", "\xe2\x82\xac");
	expect_dup("{\"a\\nb\":1,\"a\\u000ab\":2}", "a\nb");
	expect_dup("{\"\\/\":1,\"/\":2}", "/");
	expect_dup("{\"\\\"\":1,\"\\u0022\":2}", "\"");
	expect_dup("{\"\\\\\":1,\"\\u005C\":2}", "\\");
	expect_dup("{\"\\b\\f\\r\\t\":1,\"\\u0008\\u000c\\u000d\\u0009\":2}", "\b\f\r\t");
	expect_dup("{\"\\u00e9\":1,\"\\u00e8\":2,\"\\u00e7\":3}", NULL);
	expect_dup("{\"a\\\\\":1,\"a\\\\\\\\\":2,\"a\":3}", NULL);
	/* a prefix is another name, pairwise and sorted */
	expect_dup("{\"ab\":1,\"a\":2,\"abc\":3,\"\":4}", NULL);
	expect_dup("{\"\":1,\"\":2}", "");
	s = wide_object(12, ",\"m1\\u0032\":0,\"m1\\u0031x\":0,\"\":0");
	expect_dup(s, NULL);
	free(s);
	s = wide_object(12, ",\"m1\\u0030\":0");
	expect_dup(s, "m10");
	free(s);
	s = wide_object(12, ",\"\":0,\"\":1");
	expect_dup(s, "");
	free(s);
	/* in one object, of the names given twice the one given first, whatever
	 * the object's size (up to 8 members compared pairwise, more sorted) */
	expect_dup("{\"b\":1,\"a\":1,\"a\":2,\"b\":2}", "b");
	expect_dup("{\"b\":1,\"a\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"b\":2,\"a\":2}", "b");
	expect_dup("{\"b\":1,\"a\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"g\":1,\"b\":2,\"a\":2}", "b");
	s = wide_object(12, ",\"m7\":0,\"m10\":0");
	expect_dup(s, "m7");
	free(s);
	s = wide_object(12, ",\"m10\":0,\"m3\":0,\"m3\":1,\"m10\":1");
	expect_dup(s, "m3");
	free(s);
	/* between objects: the first to open that has one (the tree's walk, depth
	 * first), not the first to close */
	expect_dup("{\"x\":{\"a\":1,\"a\":2},\"x\":3}", "x");
	expect_dup("{\"p\":{\"a\":1,\"a\":2},\"q\":{\"b\":1,\"b\":2}}", "a");
	expect_dup("[{\"b\":1,\"b\":2},{\"a\":1,\"a\":2}]", "b");
	expect_dup("[{\"k\":{\"a\":1,\"a\":2}},{\"z\":1,\"z\":2}]", "a");
	expect_dup("[{\"k\":[{\"a\":1,\"a\":2}]},[{\"z\":1,\"z\":2}]]", "a");
	expect_dup("{\"o\":{\"k\":[{\"a\":1,\"a\":2}],\"m\":{\"b\":1,\"b\":2}},\"o\":1}", "o");
	expect_dup("{\"o\":{\"k\":[{\"a\":1,\"a\":2}],\"m\":{\"b\":1,\"b\":2},\"k\":1}}", "k");
	expect_dup("{\"o\":{\"k\":{\"c\":{}},\"m\":{\"b\":1,\"b\":2}},\"p\":{\"a\":1,\"a\":2}}", "b");
	/* arrays of objects: each its own names */
	expect_dup("[{\"a\":1},{\"a\":2},[{\"a\":{\"a\":{}}}],{}]", NULL);
	expect_dup("[[],{},[{\"a\":[{}],\"b\":{},\"a\":{}}]]", "a");
	/* whitespace around names and colons */
	expect_dup(" { \"a\" : 1 , \"b\" :{ \"a\" :2 } ,\n\t\"a\"\r: 3 } ", "a");
	/* names cut to the room given */
	assert_int_equal(json_duplicate_member("{\"price\":1,\"price\":2}", 21, name, 3), 1);
	assert_string_equal(name, "pr");
	name[0] = 'x';
	assert_int_equal(json_duplicate_member("{\"price\":1,\"price\":2}", 21, name, 0), 1);
	assert_int_equal(name[0], 'x');
	/* a \u0000 name is refused by the check before any comparison */
	s = "{\"a\\u0000\":1,\"a\":2}";
	dup = 5;
	assert_int_equal(json_check_members(s, strlen(s), JSON_MAX_DEPTH, &at, &dup, name, 64),
	                 JSON_NUL);
	assert_int_equal(at, 3);
	assert_int_equal(dup, 0);
	assert_int_equal(dup_of(s, name), -1);
	/* a refused text: no answer, whatever its names */
	s = "{\"a\":1,\"a\":2";
	assert_int_equal(json_check_members(s, strlen(s), JSON_MAX_DEPTH, &at, &dup, name, 64),
	                 JSON_SYNTAX);
	assert_int_equal(dup, 0);
	s = "{\"a\":{\"b\":1,\"b\":2},\"a\":2}";
	assert_int_equal(json_check_members(s, strlen(s), 1, &at, &dup, name, 64), JSON_TOO_DEEP);
	assert_int_equal(at, 5);
	assert_int_equal(dup, 0);
	assert_int_equal(json_check_members(s, strlen(s), 2, &at, &dup, name, 64), JSON_OK);
	assert_int_equal(dup, 1);
	assert_string_equal(name, "a");
}

/* An attacker's object of 100k members, 100k nested objects and a
 * hundred objects of 2k members open at once: answered, and as the tree. */
/* The sanitizers' builds run these ten times slower or more: there the wide
 * objects are a fifth as wide and a fifth of the random texts are made (the
 * plain build runs them all; under ThreadSanitizer the whole test took over
 * its 120 s in a loaded CI run). */
#ifdef EVHOST_TEST_SANITIZED
#define SANITIZED_SHARE 5
#else
#define SANITIZED_SHARE 1
#endif

static void test_duplicate_members_many(void **state)
{
	enum { MANY = 100000 / SANITIZED_SHARE };
	char name[64], last[32], extra[64], *s, *p;
	size_t n;
	(void)state;
	s = wide_object(MANY, "");
	expect_dup(s, NULL);
	free(s);
	snprintf(last, sizeof last, "m%d", MANY - 2);
	snprintf(extra, sizeof extra, ",\"%s\":0", last);
	s = wide_object(MANY, extra);
	expect_dup(s, last);
	free(s);
	s = wide_object(MANY, ",\"m\\u0039\":0");
	expect_dup(s, "m9");
	free(s);
	/* every name escaped (room for the levels below too) */
	s = malloc((size_t)100000 * 32);
	assert_non_null(s);
	n = (size_t)sprintf(s, "{");
	for (int i = 0; i < MANY; i++)
		n += (size_t)sprintf(s + n, "%s\"\\u006d%d\":%d", i ? "," : "", i, i);
	strcpy(s + n, ",\"m77\":1}");
	assert_int_equal(dup_of(s, name), 1);
	assert_string_equal(name, "m77");
	s[n] = '}';
	s[n + 1] = '\0';
	assert_int_equal(dup_of(s, name), 0);
	/* objects in objects, each with a member before and after */
	p = s;
	for (int i = 0; i < 900; i++)
		p += sprintf(p, "{\"a\":1,\"b%d\":", i);
	p += sprintf(p, "{\"z\":1,\"z\":2}");
	for (int i = 0; i < 900; i++)
		p += sprintf(p, ",\"c\":%d}", i);
	expect_dup(s, "z");
	/* a hundred levels of 2000 members each, the innermost with a duplicate,
	 * the outermost too: the outermost's (it opens first) */
	p = s;
	for (int i = 0; i < 100; i++) {
		p += sprintf(p, "{");
		for (int k = 0; k < 2000; k++)
			p += sprintf(p, "\"n%d\":0,", k);
		p += sprintf(p, "\"in\":");
	}
	p += sprintf(p, "{\"q\":1,\"q\":2}");
	for (int i = 0; i < 100; i++)
		p += sprintf(p, i == 99 ? ",\"n5\":0}" : "}");
	expect_dup(s, "n5");
	free(s);
}

/* Random texts, built so that names meet again often (one name written in
 * several ways), objects of a few members and of more than 8, nested;
 * and random bytes in JSON's alphabet. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static unsigned rnd(unsigned below)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (unsigned)(rng_state % below);
}

static const char *const pool[] = {
    "a", "\\u0061", "b", "ab", "a\\u0062", "\\u0061b", "", "aa", "A",
    "\xc3\xa9", "\\u00e9", "\\u00E9", "\xf0\x9f\x98\x80", "\\ud83d\\ude00", "\\uD83D\\uDE00",
    "\\n", "\\u000a", "\\/", "/", "\\\\", "\\u005c", "\\\"", "\\u0022", "m1", "m10", "m2",
    "\xe2\x82\xac", "\\u20ac", "\\u20AC", "z", "zz",
};

static void gen_value(char *s, size_t *n, size_t cap, int depth);

static void gen_object(char *s, size_t *n, size_t cap, int depth)
{
	unsigned k = rnd(4) ? rnd(6) : rnd(24);
	s[(*n)++] = '{';
	for (unsigned i = 0; i < k && *n < cap - 64; i++) {
		if (i)
			s[(*n)++] = ',';
		*n += (size_t)snprintf(s + *n, cap - *n, "%s\"%s\":", rnd(8) ? "" : " ",
		                       pool[rnd(sizeof pool / sizeof *pool)]);
		gen_value(s, n, cap, depth + 1);
	}
	s[(*n)++] = '}';
}

static void gen_value(char *s, size_t *n, size_t cap, int depth)
{
	unsigned what = depth > 5 || *n > cap - 128 ? 2 + rnd(2) : rnd(6);
	if (what == 0 || what == 4) {
		gen_object(s, n, cap, depth);
	} else if (what == 1) {
		unsigned k = rnd(5);
		s[(*n)++] = '[';
		for (unsigned i = 0; i < k && *n < cap - 64; i++) {
			if (i)
				s[(*n)++] = ',';
			gen_value(s, n, cap, depth + 1);
		}
		s[(*n)++] = ']';
	} else {
		*n += (size_t)snprintf(s + *n, cap - *n, "%s", what == 2 ? "1" : "\"v\"");
	}
}

static void test_duplicate_members_random(void **state)
{
	static const char alphabet[] = "{}[]:,\" a\\u0\xc3\xa9";
	enum { CAP = 4096 };
	char *s = malloc(CAP);
	long dups = 0, unique = 0;
	(void)state;
	assert_non_null(s);
	for (int t = 0; t < 10000 / SANITIZED_SHARE; t++) {
		size_t n = 0;
		gen_object(s, &n, CAP, 0);
		s[n] = '\0';
		if (same_as_tree(s, n))
			dups++;
		else
			unique++;
		/* and cut short, or with a byte changed: mostly refused, alike */
		same_as_tree(s, rnd((unsigned)n + 1));
		s[rnd((unsigned)n)] = alphabet[rnd(sizeof alphabet - 1)];
		same_as_tree(s, n);
	}
	for (int t = 0; t < 100000 / SANITIZED_SHARE; t++) {
		size_t n = rnd(24);
		for (size_t i = 0; i < n; i++)
			s[i] = alphabet[rnd(sizeof alphabet - 1)];
		same_as_tree(s, n);
	}
	/* both answers well represented */
	assert_true(dups > 3000 / SANITIZED_SHARE);
	assert_true(unique > 3000 / SANITIZED_SHARE);
	free(s);
}

/* Every input of the fuzzers' corpora (those of the JSON fuzzers are JSON
 * texts; the others' mostly not, and are compared all the same), and each
 * one cut at every length. */
static void test_duplicate_members_corpus(void **state)
{
	const char *root = EVHOST_TEST_SRCDIR "/tests/fuzz/corpus";
	DIR *top = opendir(root), *dir;
	struct dirent *e, *f;
	char path[4096];
	long files = 0, json = 0;
	(void)state;
	assert_non_null(top);
	while ((e = readdir(top))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", root, e->d_name);
		if (!(dir = opendir(path)))
			continue;
		while ((f = readdir(dir))) {
			FILE *fp;
			char *text;
			size_t n;
			if (f->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "%s/%s/%s", root, e->d_name, f->d_name);
			if (!(fp = fopen(path, "rb")))
				continue;
			text = malloc(1 << 20);
			assert_non_null(text);
			n = fread(text, 1, 1 << 20, fp);
			fclose(fp);
			files++;
			json += json_check(text, n, JSON_MAX_DEPTH, NULL) == JSON_OK;
			for (size_t k = 0; k <= n && k <= 4096; k++)
				same_as_tree(text, k);
			same_as_tree(text, n);
			free(text);
		}
		closedir(dir);
	}
	closedir(top);
	assert_true(files >= 4);
	assert_true(json >= 4);
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
	    cmocka_unit_test(test_duplicate_members_scan),
	    cmocka_unit_test(test_duplicate_members_many),
	    cmocka_unit_test(test_duplicate_members_random),
	    cmocka_unit_test(test_duplicate_members_corpus),
	    cmocka_unit_test(test_number_range),
	    cmocka_unit_test(test_nul_escape),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_utf8_scrub),
	    cmocka_unit_test(test_utf8_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
