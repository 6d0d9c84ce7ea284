/* plugins/common/jsonin.c: jsonin_parse_strict, the parse of JSON nobody
 * checked (consumed event data), refusing what the host refuses in an HTTP
 * body with a reason that says what and where and never quotes a value;
 * and jsonin_member_text, where a member's value is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/common/jsonin.c"

/* Refused, not for memory, with exactly `want`. */
static void refused_n(const char *text, size_t len, const char *want)
{
	char why[256] = "";
	int oom = -1;
	cJSON *v = jsonin_parse_strict(text, len, "event data", &oom, why, sizeof why);
	if (v) {
		cJSON_Delete(v);
		fail_msg("accepted '%.60s'", text ? text : "(null)");
	}
	assert_int_equal(oom, 0);
	if (strcmp(why, want))
		fail_msg("'%.60s': reason \"%s\", expected \"%s\"", text ? text : "(null)", why, want);
}

static void refused(const char *text, const char *want) { refused_n(text, strlen(text), want); }

static cJSON *accepted(const char *text)
{
	char why[256] = "";
	int oom = -1;
	cJSON *v = jsonin_parse_strict(text, strlen(text), "event data", &oom, why, sizeof why);
	if (!v)
		fail_msg("refused '%.60s': %s", text, why);
	assert_int_equal(oom, 0);
	return v;
}

static void test_accepts_json(void **state)
{
	cJSON *v;
	(void)state;
	v = accepted("{\"id\":\"u-1\",\"name\":\"Zo\xc3\xab \\ud83d\\ude00\",\"email\":\"z@x.org\"}");
	assert_string_equal(cJSON_GetObjectItem(v, "name")->valuestring, "Zo\xc3\xab \xf0\x9f\x98\x80");
	cJSON_Delete(v);
	/* not an object is the caller's business; the same name in two objects is fine */
	cJSON_Delete(accepted(" [1, 2.5e300, \"x\", null] "));
	cJSON_Delete(accepted("{\"a\":{\"x\":1},\"b\":{\"x\":2},\"c\":[{\"x\":3},{\"x\":4}]}"));
	cJSON_Delete(accepted("123456789012345678901234567890"));
}

static void test_bytes_and_characters(void **state)
{
	static const char nul[] = "{\"name\":\"Al\0ice\"}";
	(void)state;
	refused_n(NULL, 0, "event data is empty");
	refused("", "event data is empty");
	refused_n(nul, sizeof nul - 1, "event data is not valid JSON: a NUL byte at byte 11");
	refused("{\"name\":\"Al\xffice\"}", "event data is not valid JSON: invalid UTF-8 at byte 11");
	refused("{\"name\":\"\xc3\"}", "event data is not valid JSON: invalid UTF-8 at byte 9");
	refused("{\"name\":\"\xc0\xaf\"}", "event data is not valid JSON: invalid UTF-8 at byte 9");
	refused("{\"name\":\"\xed\xa0\x80\"}", "event data is not valid JSON: invalid UTF-8 at byte 9");
}

static void test_grammar(void **state)
{
	char deep[2001];
	(void)state;
	refused("{\"name\":\"Al\\u0000ice\"}",
	        "event data is not valid JSON: \\u0000 in a string at byte 11");
	refused("{\"id\":1e400}", "event data is not valid JSON: a number out of range at byte 6");
	refused("{\"id\":-2e308}", "event data is not valid JSON: a number out of range at byte 6");
	refused("{\"n\":\"\\ud800\"}", "event data is not valid JSON: a lone surrogate escape at byte 6");
	refused("{\"n\":\"ab\\uDC00\"}",
	        "event data is not valid JSON: a lone surrogate escape at byte 8");
	refused("{\"n\":\"\\ud800\\u0041\"}",
	        "event data is not valid JSON: a lone surrogate escape at byte 6");
	refused("{\"n\":\"\\ud80\"}", "event data is not valid JSON: malformed at byte 6");
	refused("this is { not JSON", "event data is not valid JSON: malformed at byte 0");
	refused("{\"a\":1,}", "event data is not valid JSON: malformed at byte 7");
	refused("{\"a\":01}", "event data is not valid JSON: malformed at byte 6");
	refused("{\"a\":1} x", "event data is not valid JSON: malformed at byte 8");
	memset(deep, '[', 1001);
	deep[1001] = '\0';
	refused(deep, "event data is not valid JSON: nested deeper than 1000 levels at byte 1000");
	/* 1000 levels are cJSON's own limit, and accepted */
	memset(deep, '[', 1000);
	memset(deep + 1000, ']', 1000);
	deep[2000] = '\0';
	cJSON_Delete(accepted(deep));
}

static void test_duplicate_members(void **state)
{
	char many[512], name[200], want[256];
	size_t o = 0;
	(void)state;
	refused("{\"id\":\"u\",\"email\":\"a@x.org\",\"email\":\"b@x.org\"}",
	        "event data names member \"email\" twice");
	/* one name after its escapes are decoded */
	refused("{\"email\":\"a@x.org\",\"\\u0065mail\":\"b@x.org\"}",
	        "event data names member \"email\" twice");
	refused("{\"a\":[{\"k\":1,\"k\":2}]}", "event data names member \"k\" twice");
	/* more than 8 members: the sorted path */
	o += (size_t)snprintf(many + o, sizeof many - o, "{");
	for (int i = 0; i < 12; i++)
		o += (size_t)snprintf(many + o, sizeof many - o, "\"m%d\":%d,", i, i);
	snprintf(many + o, sizeof many - o, "\"m7\":0}");
	refused(many, "event data names member \"m7\" twice");
	/* quotes and control characters in a name are not copied into a reason */
	refused("{\"a\\\"b\\n\":1,\"a\\\"b\\n\":2}", "event data names member \"a?b?\" twice");
	/* a long name is cut, where a character begins */
	memset(name, 'x', 63);
	memcpy(name + 63, "\xc3\xa9", 2);
	memset(name + 65, 'y', 20);
	name[85] = '\0';
	snprintf(many, sizeof many, "{\"%s\":1,\"%s\":2}", name, name);
	snprintf(want, sizeof want, "event data names member \"%.63s\" twice", name);
	refused(many, want);
}

/* Reasons name places and members, never values (personal data). */
static void test_reasons_hold_no_values(void **state)
{
	static const char *const bad[] = {
	    "{\"email\":\"secret@x.org\",\"email\":\"secret@x.org\"}",
	    "{\"email\":\"secret@x.org\",\"name\":\"secret\xff\"}",
	    "{\"email\":\"secret@x.org\",\"name\":\"secret\\u0000\"}",
	    "{\"email\":\"secret@x.org\",\"n\":9e999}",
	    "{\"email\":\"secret@x.org\",\"n\":secret}",
	};
	char why[256];
	int oom;
	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_null(jsonin_parse_strict(bad[i], strlen(bad[i]), "event data", &oom, why,
		                                sizeof why));
		assert_false(oom);
		if (strstr(why, "secret"))
			fail_msg("reason quotes a value: %s", why);
	}
	/* a short buffer cuts the reason, still a string */
	assert_null(jsonin_parse_strict(bad[0], strlen(bad[0]), "event data", &oom, why, 10));
	assert_string_equal(why, "event dat");
}

/* Each member's text, parsed alone, is the member's value. */
static void check_member_texts(const char *text)
{
	cJSON *root = accepted(text);
	for (const cJSON *c = root->child; c; c = c->next) {
		size_t n = 0;
		const char *t = jsonin_member_text(text, strlen(text), root, c, &n);
		cJSON *alone;
		if (!t)
			fail_msg("no text for member \"%s\" of %s", c->string, text);
		alone = cJSON_ParseWithLength(t, n);
		if (!alone || !cJSON_Compare(alone, c, 1))
			fail_msg("member \"%s\" of %s: text '%.*s'", c->string, text, (int)n, t);
		cJSON_Delete(alone);
	}
	cJSON_Delete(root);
}

static void test_member_text(void **state)
{
	static const char text[] = " {\"id\" : 12345 , \"n\":-0,\"x\":1.5e3}\n";
	cJSON *root, *other;
	size_t n = 0;
	const char *t;
	(void)state;
	root = accepted(text);
	t = jsonin_member_text(text, strlen(text), root, cJSON_GetObjectItem(root, "id"), &n);
	assert_non_null(t);
	assert_int_equal(n, 5);
	assert_memory_equal(t, "12345", 5);
	t = jsonin_member_text(text, strlen(text), root, cJSON_GetObjectItem(root, "x"), &n);
	assert_non_null(t);
	assert_int_equal(n, 5);
	assert_memory_equal(t, "1.5e3", 5);
	/* not a member of root: nested, another tree's, or root itself */
	other = cJSON_Parse("{\"id\":1}");
	assert_null(jsonin_member_text(text, strlen(text), root, other->child, &n));
	assert_null(jsonin_member_text(text, strlen(text), root, root, &n));
	assert_null(jsonin_member_text("[1]", 3, other, other->child, &n));
	cJSON_Delete(other);
	cJSON_Delete(root);

	check_member_texts("{\"a\":\"}],{[\\\"\\\\\",\"b\":[1,{\"c\":\"]\"},[]],\"c\":{},"
	                   "\"d\":true,\"e\":null,\"\\u0069d\":-12,\"f\":{\"g\":[\"x\"]}}");
	check_member_texts("{ \"a\" :\t[ ] ,\n\"b\"\r: { } , \"c\" : \"\" , \"d\" : 0 }");
	check_member_texts("{\"\":\"\\\\\",\"k\":\"\\\\\\\"\"}");
	check_member_texts("{}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepts_json),
	    cmocka_unit_test(test_bytes_and_characters),
	    cmocka_unit_test(test_grammar),
	    cmocka_unit_test(test_duplicate_members),
	    cmocka_unit_test(test_reasons_hold_no_values),
	    cmocka_unit_test(test_member_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
