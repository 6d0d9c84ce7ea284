/* crud.so's pure rules (plugins/crud/crud_logic.c) and the pagination
 * helpers it shares with user.so (plugins/common/paging.c), and the topic
 * names every plugin's check takes (host/topics.c), compiled in
 * directly: they make no SDK calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/common/paging.c"
#include "../../plugins/common/query.c"
#include "../../host/topics.c"
#include "../../plugins/crud/crud_logic.c"
#include "strcmp_count.h"

static int setup_sodium(void **state)
{
	(void)state;
	return sodium_init() < 0 ? -1 : 0;
}

static void assert_json_equal(const cJSON *got, const char *want_text)
{
	cJSON *want = cJSON_Parse(want_text);
	char *text = cJSON_PrintUnformatted(got);

	assert_non_null(want);
	if (!cJSON_Compare(got, want, 1))
		fail_msg("got %s, want %s", text ? text : "(null)", want_text);
	cJSON_free(text);
	cJSON_Delete(want);
}

/* ------------------------------------------------------------------ names */

static void test_names(void **state)
{
	(void)state;
	assert_true(crud_field_name_ok("price_2"));
	assert_false(crud_field_name_ok(""));
	assert_false(crud_field_name_ok("a.b"));
	assert_false(crud_field_name_ok("a-b"));
	assert_false(crud_field_name_ok("a b"));
	assert_false(crud_field_name_ok("$"));
	assert_false(crud_field_name_ok("x\"]"));
	assert_false(crud_field_name_ok(NULL));
	assert_true(crud_field_name_ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
	assert_false(crud_field_name_ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
	assert_true(crud_collection_name_ok("order-lines_2"));
	assert_false(crud_collection_name_ok("a.b"));
	assert_false(crud_collection_name_ok("a/b"));
}

/* ------------------------------------------------------------------ rules */

static void test_rules_parse(void **state)
{
	crud_rules r;
	char err[256];
	(void)state;

	assert_int_equal(crud_rules_parse(&r, " name, price ",
	                                  "name:string, price:number,qty:integer, tags:array,"
	                                  "meta:object, ok:boolean",
	                                  err, sizeof err),
	                 0);
	assert_int_equal(r.nrequired, 2);
	assert_string_equal(r.required[1], "price");
	assert_int_equal(r.ntypes, 6);
	assert_int_equal(crud_rules_type_of(&r, "price"), CRUD_T_NUMBER);
	assert_int_equal(crud_rules_type_of(&r, "qty"), CRUD_T_INTEGER);
	assert_int_equal(crud_rules_type_of(&r, "ok"), CRUD_T_BOOLEAN);
	assert_int_equal(crud_rules_type_of(&r, "nope"), CRUD_T_ANY);

	assert_int_equal(crud_rules_parse(&r, NULL, NULL, err, sizeof err), 0);
	assert_int_equal(r.nrequired + r.ntypes, 0);
	assert_int_equal(crud_rules_parse(&r, "", "", err, sizeof err), 0);

	assert_int_equal(crud_rules_parse(&r, "bad!", NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "bad!"));
	assert_int_equal(crud_rules_parse(&r, "id", NULL, err, sizeof err), -1);
	assert_int_equal(crud_rules_parse(&r, "a,,b", NULL, err, sizeof err), -1);
	assert_int_equal(crud_rules_parse(&r, NULL, "x:float", err, sizeof err), -1);
	assert_non_null(strstr(err, "float"));
	assert_int_equal(crud_rules_parse(&r, NULL, "x", err, sizeof err), -1);
	assert_int_equal(crud_rules_parse(&r, NULL, "a:string,a:number", err, sizeof err), -1);
	assert_non_null(strstr(err, "twice"));
	assert_int_equal(crud_rules_parse(&r, NULL, "id:string", err, sizeof err), -1);
}

/* Each reason begins with the list it is about: crud.c says it at that key
 * (collection.NAME.types, not .required, for a bad name in types). */
static void test_rules_parse_names_the_list(void **state)
{
	crud_rules r;
	char err[256];
	(void)state;

	assert_int_equal(crud_rules_parse(&r, NULL, "na-me:string", err, sizeof err), -1);
	assert_string_equal(err, "types: 'na-me' is not a field name ([A-Za-z0-9_], at most 64)");
	assert_int_equal(crud_rules_parse(&r, "name", "id:string", err, sizeof err), -1);
	assert_string_equal(err, "types: 'id' is assigned by the server and takes no rules");
	assert_int_equal(crud_rules_parse(&r, "na-me", NULL, err, sizeof err), -1);
	assert_string_equal(err, "required: 'na-me' is not a field name ([A-Za-z0-9_], at most 64)");
	assert_int_equal(crud_rules_parse(&r, "id", NULL, err, sizeof err), -1);
	assert_string_equal(err, "required: 'id' is assigned by the server and takes no rules");
	/* a field required twice is refused, as one typed twice is */
	assert_int_equal(crud_rules_parse(&r, "name, price, name", NULL, err, sizeof err), -1);
	assert_string_equal(err, "required: 'name' is listed twice");
	assert_int_equal(crud_rules_parse(&r, "name, names", NULL, err, sizeof err), 0);
}

static void test_topic_names(void **state)
{
	char longest[TOPICS_NAME_MAX + 2];
	const char *four[] = {"a", "b", "a", "b"};
	const char *gaps[] = {NULL, "x", NULL, "x"};
	(void)state;

	assert_true(topics_name_ok("USER_CREATED"));
	assert_true(topics_name_ok("crud.products-2_x"));
	assert_true(topics_name_ok("..."));
	assert_false(topics_name_ok(NULL));
	assert_false(topics_name_ok(""));
	assert_false(topics_name_ok("."));
	assert_false(topics_name_ok(".."));
	assert_false(topics_name_ok("has space"));
	assert_false(topics_name_ok("a/b"));
	assert_false(topics_name_ok("caf\xc3\xa9"));
	memset(longest, 'a', TOPICS_NAME_MAX);
	longest[TOPICS_NAME_MAX] = '\0';
	assert_true(topics_name_ok(longest));
	longest[TOPICS_NAME_MAX] = 'a';
	longest[TOPICS_NAME_MAX + 1] = '\0';
	assert_false(topics_name_ok(longest));

	assert_int_equal(topics_same_before(four, 0), 0);
	assert_int_equal(topics_same_before(four, 1), 1);
	assert_int_equal(topics_same_before(four, 2), 0);
	assert_int_equal(topics_same_before(four, 3), 1);
	assert_int_equal(topics_same_before(gaps, 2), 2); /* NULL is no topic */
	assert_int_equal(topics_same_before(gaps, 3), 1);
}

static void test_rules_parse_limit(void **state)
{
	char list[512] = "";
	crud_rules r;
	char err[256];
	int i;
	(void)state;

	for (i = 0; i < CRUD_RULES_MAX; i++)
		snprintf(list + strlen(list), sizeof list - strlen(list), "%sf%d", i ? "," : "", i);
	assert_int_equal(crud_rules_parse(&r, list, NULL, err, sizeof err), 0);
	strcat(list, ",one_more");
	assert_int_equal(crud_rules_parse(&r, list, NULL, err, sizeof err), -1);
}

static int check(const crud_rules *r, const char *doc_text, const char **field)
{
	char detail[160];
	cJSON *doc = cJSON_Parse(doc_text);
	int rc;

	assert_non_null(doc);
	*field = NULL;
	rc = crud_rules_check(r, doc, field, detail, sizeof detail);
	cJSON_Delete(doc);
	return rc;
}

static void test_rules_check(void **state)
{
	const char *field;
	crud_rules r;
	char err[256];
	(void)state;

	assert_int_equal(crud_rules_parse(&r, "name,price",
	                                  "name:string,price:number,qty:integer,ok:boolean,"
	                                  "tags:array,meta:object",
	                                  err, sizeof err),
	                 0);
	assert_int_equal(check(&r, "{\"name\":\"lamp\",\"price\":12.5}", &field), 0);
	assert_int_equal(check(&r, "{\"name\":\"lamp\",\"price\":1,\"qty\":2,\"ok\":false,"
	                           "\"tags\":[],\"meta\":{},\"extra\":null}",
	                       &field),
	                 0);
	assert_int_equal(check(&r, "{\"price\":1}", &field), -1);
	assert_string_equal(field, "name");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":null}", &field), -1);
	assert_string_equal(field, "price");
	assert_int_equal(check(&r, "{\"name\":3,\"price\":1}", &field), -1);
	assert_string_equal(field, "name");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":\"1\"}", &field), -1);
	assert_string_equal(field, "price");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"qty\":2.5}", &field), -1);
	assert_string_equal(field, "qty");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"qty\":2.0}", &field), 0);
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"qty\":1e300}", &field), -1);
	/* Exact integers only: 2^53 - 1 passes; 2^53 + 1, read as 2^53, does not
	 * (it would be stored changed), and neither does 2^53. */
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"qty\":-9007199254740991}",
	                       &field),
	                 0);
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"qty\":9007199254740993}",
	                       &field),
	                 -1);
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"qty\":9007199254740992}",
	                       &field),
	                 -1);
	assert_string_equal(field, "qty");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"ok\":1}", &field), -1);
	assert_string_equal(field, "ok");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"tags\":{}}", &field), -1);
	assert_string_equal(field, "tags");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"meta\":[]}", &field), -1);
	assert_string_equal(field, "meta");
	assert_int_equal(check(&r, "{\"name\":\"x\",\"price\":1,\"meta\":null}", &field), -1);
}

/* ------------------------------------------------------------ merge patch */

/* RFC 7396, Appendix A, every example; then a few of our own. */
static const char *const merge_cases[][3] = {
    {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
    {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
    {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
    {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
    {"{\"a\":\"foo\"}", "null", "null"},
    {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
    {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
    {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
    {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
    /* ours: deep merge keeps siblings; a nested object onto a scalar drops its nulls */
    {"{\"a\":{\"x\":1,\"y\":{\"z\":2}}}", "{\"a\":{\"y\":{\"w\":3}}}",
     "{\"a\":{\"x\":1,\"y\":{\"z\":2,\"w\":3}}}"},
    {"{\"a\":5}", "{\"a\":{\"b\":null,\"c\":1}}", "{\"a\":{\"c\":1}}"},
    {"{\"a\":1}", "{}", "{\"a\":1}"},
    {"{\"a\":1}", "{\"missing\":null}", "{\"a\":1}"},
    /* a name given twice (the host refuses such a body): both apply, in order */
    {"{}", "{\"a\":1,\"a\":2}", "{\"a\":2}"},
    {"{\"a\":0}", "{\"a\":1,\"a\":null}", "{}"},
    {"{\"a\":0}", "{\"a\":null,\"a\":1}", "{\"a\":1}"},
    {"{}", "{\"a\":{\"x\":1},\"a\":{\"y\":2,\"x\":null}}", "{\"a\":{\"y\":2}}"},
    {"{\"a\":{\"x\":1}}", "{\"a\":5,\"a\":{\"y\":2}}", "{\"a\":{\"y\":2}}"},
};

static void test_merge_patch_rfc7396(void **state)
{
	size_t i;
	(void)state;

	for (i = 0; i < sizeof merge_cases / sizeof merge_cases[0]; i++) {
		cJSON *target = cJSON_Parse(merge_cases[i][0]);
		cJSON *patch = cJSON_Parse(merge_cases[i][1]);
		cJSON *result;

		assert_non_null(target);
		assert_non_null(patch);
		result = crud_merge_patch(target, patch);
		assert_non_null(result);
		assert_json_equal(result, merge_cases[i][2]);
		cJSON_Delete(result);
		cJSON_Delete(patch);
	}
}

static void test_merge_keeps_member_order(void **state)
{
	cJSON *doc = cJSON_Parse("{\"id\":\"x\",\"a\":1,\"b\":2}");
	cJSON *patch = cJSON_Parse("{\"a\":3}");
	char *text;
	(void)state;

	doc = crud_merge_patch(doc, patch);
	text = cJSON_PrintUnformatted(doc);
	assert_string_equal(text, "{\"id\":\"x\",\"a\":3,\"b\":2}");
	cJSON_free(text);
	cJSON_Delete(doc);
	cJSON_Delete(patch);
}

/* Replaced members stay in their place, deleted ones go, added ones come
 * last in the patch's order. */
static void test_merge_member_order(void **state)
{
	static const char *const cases[][3] = {
	    {"{\"a\":1,\"b\":2,\"c\":3}", "{\"d\":4,\"b\":null,\"a\":{\"x\":1},\"e\":5}",
	     "{\"a\":{\"x\":1},\"c\":3,\"d\":4,\"e\":5}"},
	    {"{\"z\":{\"q\":1,\"p\":2},\"y\":0}", "{\"y\":[1],\"z\":{\"r\":3,\"p\":{\"s\":null}}}",
	     "{\"z\":{\"q\":1,\"p\":{},\"r\":3},\"y\":[1]}"},
	    {"{\"b\":1,\"a\":2}", "{\"c\":3,\"b\":null,\"b\":4}", "{\"a\":2,\"c\":3,\"b\":4}"},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cJSON *doc = cJSON_Parse(cases[i][0]), *patch = cJSON_Parse(cases[i][1]);
		char *text;

		doc = crud_merge_patch(doc, patch);
		text = cJSON_PrintUnformatted(doc);
		assert_string_equal(text, cases[i][2]);
		cJSON_free(text);
		cJSON_Delete(doc);
		cJSON_Delete(patch);
	}
}

#define BIG_MERGE 20000 /* names in the big merge's target, top and inner */

static void big_name(char *out, size_t size, char prefix, int i)
{
	snprintf(out, size, "%c%05d", prefix, i);
}

/* A patch naming every member of a big document, at the top and in an
 * object inside, and adding as many again: the same result member by
 * member, with about log2(N) name comparisons a member (two sorts). Looking
 * each name up in the target's list took N/2 (4 * 10^8 here; 131072 names
 * in a request took 45 s). Patched in reverse order: i % 4 == 0 deleted,
 * 1 replaced by -i, 2 by an object whose null is dropped, 3 left. */
static void test_merge_big_patch(void **state)
{
	cJSON *doc = cJSON_CreateObject(), *patch = cJSON_CreateObject(), *inner, *pinner, *m;
	char name[16];
	size_t calls, members = 0;
	int i;
	(void)state;

	assert_non_null(doc);
	assert_non_null(patch);
	for (i = 0; i < BIG_MERGE; i++) {
		big_name(name, sizeof name, 'k', i);
		assert_non_null(cJSON_AddNumberToObject(doc, name, i));
	}
	assert_non_null(inner = cJSON_AddObjectToObject(doc, "inner"));
	for (i = 0; i < BIG_MERGE; i++) {
		big_name(name, sizeof name, 'k', i);
		assert_non_null(cJSON_AddNumberToObject(inner, name, i));
	}
	for (i = BIG_MERGE - 1; i >= 0; i--) {
		big_name(name, sizeof name, 'k', i);
		if (i % 4 == 0)
			assert_non_null(cJSON_AddNullToObject(patch, name));
		else if (i % 4 == 1)
			assert_non_null(cJSON_AddNumberToObject(patch, name, -i));
		else if (i % 4 == 2)
			assert_non_null((m = cJSON_AddObjectToObject(patch, name)) &&
			                cJSON_AddNullToObject(m, "x") && cJSON_AddNumberToObject(m, "y", i));
	}
	assert_non_null(pinner = cJSON_AddObjectToObject(patch, "inner"));
	for (i = 0; i < BIG_MERGE; i++) {
		big_name(name, sizeof name, 'k', i);
		assert_non_null(cJSON_AddNumberToObject(pinner, name, -i));
		big_name(name, sizeof name, 'n', i);
		assert_non_null(cJSON_AddNumberToObject(patch, name, i));
	}

	calls = strcmp_calls;
	doc = crud_merge_patch(doc, patch);
	calls = strcmp_calls - calls;
	assert_non_null(doc);

	m = doc->child;
	for (i = 0; i < BIG_MERGE; i++) {
		if (i % 4 == 0)
			continue;
		big_name(name, sizeof name, 'k', i);
		assert_non_null(m);
		assert_string_equal(m->string, name);
		if (i % 4 == 2) {
			assert_true(cJSON_IsObject(m) && m->child && !m->child->next);
			assert_string_equal(m->child->string, "y");
			assert_int_equal(m->child->valueint, i);
		} else {
			assert_int_equal(m->valueint, i % 4 == 1 ? -i : i);
		}
		m = m->next;
	}
	assert_non_null(m);
	assert_string_equal(m->string, "inner");
	inner = m->child;
	for (i = 0; i < BIG_MERGE; i++, inner = inner->next) {
		big_name(name, sizeof name, 'k', i);
		assert_non_null(inner);
		assert_string_equal(inner->string, name);
		assert_int_equal(inner->valueint, -i);
	}
	assert_null(inner);
	for (i = 0, m = m->next; i < BIG_MERGE; i++, m = m->next) {
		big_name(name, sizeof name, 'n', i);
		assert_non_null(m);
		assert_string_equal(m->string, name);
		assert_int_equal(m->valueint, i);
	}
	assert_null(m);

	/* the members of both documents, each sorted once (about 15
	 * comparisons a name at 20000) and walked once */
	members = (size_t)cJSON_GetArraySize(patch) + 3 * BIG_MERGE + 1;
	if (calls > 64 * members)
		fail_msg("%zu name comparisons for %zu members", calls, members);
	cJSON_Delete(doc);
	cJSON_Delete(patch);
}

static void expect_set_id(const char *in, const char *want)
{
	cJSON *doc = cJSON_Parse(in);
	char *text;

	assert_non_null(doc);
	assert_int_equal(crud_doc_set_id(doc, "u-1"), 0);
	text = cJSON_PrintUnformatted(doc);
	assert_string_equal(text, want);
	cJSON_free(text);
	cJSON_Delete(doc);
}

static void test_doc_id(void **state)
{
	cJSON *doc;
	(void)state;

	expect_set_id("{}", "{\"id\":\"u-1\"}");
	expect_set_id("{\"a\":1}", "{\"id\":\"u-1\",\"a\":1}");
	expect_set_id("{\"a\":1,\"id\":\"other\"}", "{\"id\":\"u-1\",\"a\":1}");
	expect_set_id("{\"id\":1,\"a\":1,\"id\":2}", "{\"id\":\"u-1\",\"a\":1}");

	doc = cJSON_Parse("{\"a\":1}");
	assert_true(crud_doc_id_compatible(doc, "u-1"));
	cJSON_Delete(doc);
	doc = cJSON_Parse("{\"id\":\"u-1\"}");
	assert_true(crud_doc_id_compatible(doc, "u-1"));
	cJSON_Delete(doc);
	doc = cJSON_Parse("{\"id\":\"u-2\"}");
	assert_false(crud_doc_id_compatible(doc, "u-1"));
	cJSON_Delete(doc);
	doc = cJSON_Parse("{\"id\":null}");
	assert_false(crud_doc_id_compatible(doc, "u-1"));
	cJSON_Delete(doc);
}

/* ------------------------------------------------------- HTTP conditions */

static void test_etags(void **state)
{
	(void)state;
	assert_int_equal(crud_etag_matches("\"3\"", 3, 0), 1);
	assert_int_equal(crud_etag_matches(" \"3\" ", 3, 0), 1);
	assert_int_equal(crud_etag_matches("\"3\"", 4, 0), 0);
	assert_int_equal(crud_etag_matches("\"30\"", 3, 0), 0);
	assert_int_equal(crud_etag_matches("\"\"", 3, 0), 0);
	assert_int_equal(crud_etag_matches("\"1\", \"2\",\"3\"", 3, 0), 1);
	assert_int_equal(crud_etag_matches("*", 3, 0), 1);
	assert_int_equal(crud_etag_matches("*", 3, 1), 1);
	/* weak tags never match strongly (If-Match), but do weakly (If-None-Match) */
	assert_int_equal(crud_etag_matches("W/\"3\"", 3, 0), 0);
	assert_int_equal(crud_etag_matches("W/\"3\"", 3, 1), 1);
	assert_int_equal(crud_etag_matches("\"3\"", 3, 1), 1);
	/* an empty list: nothing matches */
	assert_int_equal(crud_etag_matches("", 3, 0), 0);
	assert_int_equal(crud_etag_matches(" , ,", 3, 1), 0);
	/* no list of entity tags: -1, wherever the fault, a tag matching or not */
	assert_int_equal(crud_etag_matches("3", 3, 0), -1);
	assert_int_equal(crud_etag_matches("\"3", 3, 0), -1);
	assert_int_equal(crud_etag_matches("\"0\", x, \"3\"", 3, 1), -1);
	assert_int_equal(crud_etag_matches("\"3\", x", 3, 1), -1);
	assert_int_equal(crud_etag_matches("\"3\" \"4\"", 3, 0), -1);
	assert_int_equal(crud_etag_matches("W/3", 3, 1), -1);
	assert_int_equal(crud_etag_matches("*x", 3, 1), -1);
	assert_int_equal(crud_etag_matches("\"1\", *", 3, 0), 1);
	assert_int_equal(crud_etag_matches(" \"1\" ,\"3\" ", 3, 0), 1);
}

static void test_media_types(void **state)
{
	(void)state;
	assert_true(crud_media_type_is("application/merge-patch+json",
	                               "application/merge-patch+json"));
	assert_true(crud_media_type_is("Application/JSON; charset=utf-8", "application/json"));
	assert_true(crud_media_type_is(" application/json", "application/json"));
	assert_false(crud_media_type_is("application/json-patch+json", "application/json"));
	assert_false(crud_media_type_is("application/jsonx", "application/json"));
	assert_false(crud_media_type_is(NULL, "application/json"));
}

/* ---------------------------------------------------------- query string */

static void test_query_string(void **state)
{
	const char *qs = "a=1&&b=hello+world&c=%41%2b%c3%A9&d&limit=5&e=";
	char name[16], value[32];
	(void)state;

	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "a");
	assert_string_equal(value, "1");
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "b");
	assert_string_equal(value, "hello world");
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "c");
	assert_string_equal(value, "A+\xc3\xa9");
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "d");
	assert_string_equal(value, "");
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "limit");
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "e");
	assert_string_equal(value, "");
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 0);
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 0);

	/* A bad value: its name is decoded, for the 422 to name the parameter. */
	qs = "x=%zz";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "x");
	qs = "x%79=%00";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "xy");
	qs = "x=%4";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_VALUE_ESCAPE);
	qs = "x=%";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_VALUE_ESCAPE);
	qs = "x=0123456789012345678901234567890123456789";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_VALUE_LENGTH);
	assert_string_equal(name, "x");
	qs = "%zz=1";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_NAME_ESCAPE);
	qs = "a%00=1";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_NAME_ESCAPE);
	qs = "averyveryverylongname=1";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value),
	                 QUERY_BAD_NAME_LENGTH);
	/* ...and the next pair is read after any of them */
	qs = "%zz=1&b=2";
	assert_true(query_next(&qs, name, sizeof name, value, sizeof value) < 0);
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 1);
	assert_string_equal(name, "b");
	qs = "";
	assert_int_equal(query_next(&qs, name, sizeof name, value, sizeof value), 0);
}

/* The refusal crud's filters and notifications' recipient share. */
static void test_query_value_not_utf8(void **state)
{
	char detail[QUERY_DETAIL_MAX];
	(void)state;

	strcpy(detail, "untouched");
	assert_int_equal(query_value_not_utf8("name", "caf\xc3\xa9", detail, sizeof detail), 0);
	assert_int_equal(query_value_not_utf8("name", "", detail, sizeof detail), 0);
	assert_string_equal(detail, "untouched");
	assert_int_equal(query_value_not_utf8("name", "caf\xe9!", detail, sizeof detail), 1);
	assert_string_equal(detail, "the value of query parameter 'name' is not UTF-8 once "
	                            "percent-decoded (byte 0xE9 at offset 3): percent-encode the "
	                            "UTF-8 bytes of the text");
	/* an overlong encoding and a lone continuation byte are not UTF-8 either */
	assert_int_equal(query_value_not_utf8("n", "\xc0\xaf", detail, sizeof detail), 1);
	assert_non_null(strstr(detail, "(byte 0xC0 at offset 0)"));
	assert_int_equal(query_value_not_utf8("n", "ab\x80", detail, sizeof detail), 1);
	assert_non_null(strstr(detail, "(byte 0x80 at offset 2)"));
}

/* ---------------------------------------------------------------- filters */

static void test_filters_inferred(void **state)
{
	crud_filter f;
	const char *why;
	(void)state;

	assert_int_equal(crud_filter_make(&f, "active", "true", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_BOOL);
	assert_int_equal(f.i, 1);
	assert_string_equal(f.json_type, "true");
	assert_string_equal(f.path, "$.active");
	assert_int_equal(crud_filter_make(&f, "active", "false", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.i, 0);
	assert_string_equal(f.json_type_alt, "false");

	assert_int_equal(crud_filter_make(&f, "qty", "42", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_INT);
	assert_int_equal(f.i, 42);
	assert_string_equal(f.json_type, "integer");
	assert_string_equal(f.json_type_alt, "real");
	assert_int_equal(crud_filter_make(&f, "qty", "-1.5e3", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_REAL);
	assert_true(f.r == -1500.0);
	assert_int_equal(crud_filter_make(&f, "qty", "99999999999999999999", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_REAL);
	/* Past 2^53 a body's integer is stored as the nearest double: the
	 * filter looks for that double, not for the exact integer no document
	 * holds. Below it, exact. */
	assert_int_equal(crud_filter_make(&f, "qty", "9007199254740993", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_REAL);
	assert_true(f.r == 9007199254740992.0);
	assert_int_equal(crud_filter_make(&f, "qty", "-9223372036854775807", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_REAL);
	assert_int_equal(crud_filter_make(&f, "qty", "-9007199254740991", CRUD_T_ANY, &why), 0);
	assert_int_equal(f.kind, CRUD_F_INT);
	assert_true(f.i == -9007199254740991LL);
	/* a JSON number no double holds: refused, never compared as its text */
	for (int declared = 0; declared < 2; declared++) {
		why = NULL;
		assert_int_equal(crud_filter_make(&f, "qty", "-1e400",
		                                  declared ? CRUD_T_NUMBER : CRUD_T_ANY, &why),
		                 -1);
		assert_non_null(why);
		assert_non_null(strstr(why, "beyond the range of stored numbers"));
	}

	/* not JSON numbers or booleans: compared as text */
	static const char *const texts[] = {"lamp", "042", "1.", ".5", "+1", "0x10", "1e",
	                                    "True", "inf", "nan", " 1", ""};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		assert_int_equal(crud_filter_make(&f, "name", texts[i], CRUD_T_ANY, &why), 0);
		assert_int_equal(f.kind, CRUD_F_TEXT);
		assert_string_equal(f.text, texts[i]);
		assert_string_equal(f.json_type, "text");
	}
}

static void test_filters_declared(void **state)
{
	char big[CRUD_FILTER_VALUE_MAX + 2];
	crud_filter f;
	const char *why;
	(void)state;

	assert_int_equal(crud_filter_make(&f, "code", "42", CRUD_T_STRING, &why), 0);
	assert_int_equal(f.kind, CRUD_F_TEXT);
	assert_int_equal(crud_filter_make(&f, "code", "true", CRUD_T_STRING, &why), 0);
	assert_int_equal(f.kind, CRUD_F_TEXT);
	assert_int_equal(crud_filter_make(&f, "price", "12.5", CRUD_T_NUMBER, &why), 0);
	assert_int_equal(f.kind, CRUD_F_REAL);
	assert_int_equal(crud_filter_make(&f, "price", "cheap", CRUD_T_NUMBER, &why), -1);
	assert_int_equal(crud_filter_make(&f, "qty", "3", CRUD_T_INTEGER, &why), 0);
	assert_int_equal(crud_filter_make(&f, "ok", "yes", CRUD_T_BOOLEAN, &why), -1);
	assert_int_equal(crud_filter_make(&f, "ok", "false", CRUD_T_BOOLEAN, &why), 0);
	assert_int_equal(crud_filter_make(&f, "meta", "x", CRUD_T_OBJECT, &why), -1);
	assert_int_equal(crud_filter_make(&f, "tags", "x", CRUD_T_ARRAY, &why), -1);

	assert_int_equal(crud_filter_make(&f, "a.b", "x", CRUD_T_ANY, &why), -1);
	assert_int_equal(crud_filter_make(&f, "a') OR 1=1 --", "x", CRUD_T_ANY, &why), -1);
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_int_equal(crud_filter_make(&f, "name", big, CRUD_T_ANY, &why), -1);
	big[sizeof big - 2] = '\0';
	assert_int_equal(crud_filter_make(&f, "name", big, CRUD_T_ANY, &why), 0);
}

/* ------------------------------------------------------------- pagination */

static void test_cursor_round_trip(void **state)
{
	static const int64_t seqs[] = {1, 9, 10, 12345, 999999999999999999LL};
	char cursor[PAGING_CURSOR_MAX];
	int64_t seq;
	size_t i;
	(void)state;

	for (i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
		assert_int_equal(paging_cursor_encode(seqs[i], cursor, sizeof cursor), 0);
		assert_null(strpbrk(cursor, "+/=")); /* URL-safe, no padding */
		assert_int_equal(paging_cursor_decode(cursor, &seq), 0);
		assert_int_equal(seq, seqs[i]);
	}
	assert_int_equal(paging_cursor_encode(12345, cursor, sizeof cursor), 0);
	assert_string_equal(cursor, "MTIzNDU"); /* base64url("12345") */
	assert_int_equal(paging_cursor_encode(0, cursor, sizeof cursor), -1);
	assert_int_equal(paging_cursor_encode(-4, cursor, sizeof cursor), -1);
	assert_int_equal(paging_cursor_encode(12345, cursor, 4), -1);
}

static void test_cursor_rejects_foreign(void **state)
{
	int64_t seq;
	(void)state;

	assert_int_equal(paging_cursor_decode("", &seq), -1);
	assert_int_equal(paging_cursor_decode(NULL, &seq), -1);
	assert_int_equal(paging_cursor_decode("!!!!", &seq), -1);
	assert_int_equal(paging_cursor_decode("YWJj", &seq), -1);      /* "abc" */
	assert_int_equal(paging_cursor_decode("MA", &seq), -1);        /* "0" */
	assert_int_equal(paging_cursor_decode("MDE", &seq), -1);       /* "01" */
	assert_int_equal(paging_cursor_decode("LTE", &seq), -1);       /* "-1" */
	assert_int_equal(paging_cursor_decode("MTIzNDU=", &seq), -1);  /* padded */
	assert_int_equal(paging_cursor_decode("MTIz NDU", &seq), -1);
	/* 19 digits: beyond what a cursor ever holds */
	assert_int_equal(paging_cursor_decode("OTk5OTk5OTk5OTk5OTk5OTk5OQ", &seq), -1);
	assert_int_equal(paging_cursor_decode("MTIzNDU", &seq), 0);
	assert_int_equal(seq, 12345);
}

static void test_limit(void **state)
{
	int v = 0;
	(void)state;

	assert_int_equal(paging_limit_parse(NULL, 20, 100, &v), 0);
	assert_int_equal(v, 20);
	assert_int_equal(paging_limit_parse("1", 20, 100, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(paging_limit_parse("100", 20, 100, &v), 0);
	assert_int_equal(v, 100);
	assert_int_equal(paging_limit_parse("0", 20, 100, &v), -1);
	assert_int_equal(paging_limit_parse("101", 20, 100, &v), -1);
	assert_int_equal(paging_limit_parse("-1", 20, 100, &v), -1);
	assert_int_equal(paging_limit_parse("ten", 20, 100, &v), -1);
	assert_int_equal(paging_limit_parse("", 20, 100, &v), -1);
	assert_int_equal(paging_limit_parse("5 ", 20, 100, &v), -1);
	assert_int_equal(paging_limit_parse("99999999999", 20, 100, &v), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_rules_parse),
	    cmocka_unit_test(test_rules_parse_names_the_list),
	    cmocka_unit_test(test_topic_names),
	    cmocka_unit_test(test_rules_parse_limit),
	    cmocka_unit_test(test_rules_check),
	    cmocka_unit_test(test_merge_patch_rfc7396),
	    cmocka_unit_test(test_merge_keeps_member_order),
	    cmocka_unit_test(test_merge_member_order),
	    cmocka_unit_test(test_merge_big_patch),
	    cmocka_unit_test(test_doc_id),
	    cmocka_unit_test(test_etags),
	    cmocka_unit_test(test_media_types),
	    cmocka_unit_test(test_query_string),
	    cmocka_unit_test(test_query_value_not_utf8),
	    cmocka_unit_test(test_filters_inferred),
	    cmocka_unit_test(test_filters_declared),
	    cmocka_unit_test(test_cursor_round_trip),
	    cmocka_unit_test(test_cursor_rejects_foreign),
	    cmocka_unit_test(test_limit),
	};
	return cmocka_run_group_tests(tests, setup_sodium, NULL);
}
