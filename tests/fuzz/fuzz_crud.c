/* libFuzzer: what crud.so reads from clients (plugins/crud/crud_logic.c,
 * plugins/common/query.c).
 * The first input byte picks a mode; the rest is:
 *   0: a query string, walked with query_next and each pair made a
 *      filter under every declared type, and the first bad escape found
 *      (query_find_bad_escape) as user.so and notifications.so do;
 *   1: an If-Match / If-None-Match header, matched against versions;
 *   2: a Content-Type header;
 *   3: "TARGET\0PATCH", two JSON texts (as the host's check lets in) for an
 *      RFC 7396 merge patch.
 * Checked are the properties crud_routes.c relies on: the walk always moves
 * on and gives terminated, bounded, decoded names and values; a filter is
 * built exactly when its name and value are acceptable, and then says what
 * the value was; the entity tag "<v>" always matches v and only tags that
 * spell v (or "*") do; a merge patch keeps what the patch does not name,
 * drops what it nulls, takes what it sets, and applied twice is applied once.
 */
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_modes.h"
#include "json.h"
#include "../../plugins/common/query.c"
#include "../../plugins/crud/crud_logic.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The routes' buffer sizes (crud_routes.c: read_filters). */
#define NAME_CAP 256
#define VALUE_CAP (CRUD_FILTER_VALUE_MAX + 2)

static int hexdigit(char c) { return isxdigit((unsigned char)c) != 0; }

/* A strict reading of one query part, written independently of url_decode:
 * the decoded length, or -1 when it holds a bad or NUL escape. */
static long decoded_len(const char *s, const char *e)
{
	long n = 0;
	for (; s < e; s++, n++) {
		if (*s != '%')
			continue;
		if (e - s < 3 || !hexdigit(s[1]) || !hexdigit(s[2]) || (s[1] == '0' && s[2] == '0'))
			return -1;
		s += 2;
	}
	return n;
}

/* A JSON number as RFC 8259 has it, read with a regular-expression-like
 * walk of its own. */
static int json_number(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		while (isdigit((unsigned char)*s))
			s++;
	else
		return 0;
	if (*s == '.') {
		if (!isdigit((unsigned char)*++s))
			return 0;
		while (isdigit((unsigned char)*s))
			s++;
	}
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!isdigit((unsigned char)*s))
			return 0;
		while (isdigit((unsigned char)*s))
			s++;
	}
	return *s == '\0';
}

/* A number a filter can hold: JSON's grammar, and finite as a double. */
static int number_ok(const char *s) { return json_number(s) && isfinite(strtod(s, NULL)); }

static void check_filter(const char *name, const char *value)
{
	static const crud_type types[] = {CRUD_T_ANY,     CRUD_T_STRING,  CRUD_T_NUMBER, CRUD_T_INTEGER,
	                                  CRUD_T_BOOLEAN, CRUD_T_OBJECT, CRUD_T_ARRAY};
	int name_ok = crud_field_name_ok(name), short_enough = strlen(value) <= CRUD_FILTER_VALUE_MAX;
	int is_bool = !strcmp(value, "true") || !strcmp(value, "false");

	for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
		crud_filter f;
		const char *why = NULL;
		int rc = crud_filter_make(&f, name, value, types[t], &why), want;

		switch (types[t]) {
		case CRUD_T_NUMBER:
		case CRUD_T_INTEGER:
			want = number_ok(value);
			break;
		case CRUD_T_BOOLEAN:
			want = is_bool;
			break;
		case CRUD_T_OBJECT:
		case CRUD_T_ARRAY:
			want = 0;
			break;
		case CRUD_T_ANY: /* a JSON number no double holds (1e400) is refused */
			want = !json_number(value) || number_ok(value);
			break;
		default:
			want = 1;
		}
		want = want && name_ok && short_enough;
		CHECK(rc == (want ? 0 : -1));
		if (rc) {
			CHECK(why && *why);
			continue;
		}
		/* The JSON path bound for json_extract is "$." and the valid name alone. */
		CHECK(!strncmp(f.path, "$.", 2) && !strcmp(f.path + 2, name));
		switch (f.kind) {
		case CRUD_F_TEXT:
			CHECK(types[t] == CRUD_T_STRING ||
			      (types[t] == CRUD_T_ANY && !is_bool && !json_number(value)));
			CHECK(!strcmp(f.text, value));
			break;
		case CRUD_F_BOOL:
			CHECK(is_bool && f.i == !strcmp(value, "true"));
			break;
		case CRUD_F_INT: {
			char back[32];
			CHECK(number_ok(value) && !strpbrk(value, ".eE"));
			snprintf(back, sizeof back, "%lld", (long long)f.i);
			/* "-0" reads as 0; every other integer prints back as sent */
			CHECK(!strcmp(back, value) || (!strcmp(value, "-0") && f.i == 0));
			break;
		}
		case CRUD_F_REAL:
			CHECK(number_ok(value) && isfinite(f.r));
			break;
		default:
			CHECK(0);
		}
	}
}

static void fuzz_query(const char *qs)
{
	char name[NAME_CAP], value[VALUE_CAP], bad_name[NAME_CAP], detail[QUERY_DETAIL_MAX];
	const char *p = qs, *field;
	size_t steps = 0;
	int got, expect = 0, bad = query_find_bad_escape(qs, bad_name, sizeof bad_name);

	while ((got = query_next(&p, name, sizeof name, value, sizeof value)) != 0) {
		const char *start, *end, *eq;
		long nl, vl;

		CHECK(++steps <= strlen(qs) + 1);
		/* This pair is what lies between the '&'s before p. */
		for (end = p, start = end; start > qs && start[-1] != '&'; start--)
			;
		CHECK(end > start && (*end == '\0' || *end == '&'));
		eq = memchr(start, '=', (size_t)(end - start));
		nl = decoded_len(start, eq ? eq : end);
		vl = eq ? decoded_len(eq + 1, end) : 0;
		/* query_find_bad_escape said the first pair with a bad escape, and
		 * for a value's its name as decoded here (when it fits) */
		if (!expect && (nl < 0 || vl < 0)) {
			expect = nl < 0 ? QUERY_BAD_NAME_ESCAPE : QUERY_BAD_VALUE_ESCAPE;
			CHECK(bad == expect);
			if (bad == QUERY_BAD_VALUE_ESCAPE)
				CHECK(nl < NAME_CAP ? strcmp(bad_name, name) == 0 : !*bad_name);
		}
		if (got < 0) {
			/* refused: a bad escape, or a part longer than its buffer;
			 * for a bad value, the name decoded (the 422 names it) */
			if (nl < 0 || nl >= NAME_CAP) {
				CHECK(got == QUERY_BAD_NAME_LENGTH ||
				      (nl < 0 && got == QUERY_BAD_NAME_ESCAPE));
			} else {
				CHECK(vl < 0 || vl >= VALUE_CAP);
				CHECK(got == QUERY_BAD_VALUE_LENGTH ||
				      (vl < 0 && got == QUERY_BAD_VALUE_ESCAPE));
				CHECK(strlen(name) == (size_t)nl);
			}
			continue;
		}
		CHECK(got == 1 && nl >= 0 && vl >= 0 && nl < NAME_CAP && vl < VALUE_CAP);
		CHECK(strlen(name) == (size_t)nl && strlen(value) == (size_t)vl);
		check_filter(name, value);
	}
	CHECK(*p == '\0');
	CHECK(bad == expect);
	if (!bad)
		return;
	/* the 422: a name only for a value's escape, in UTF-8; the detail whole */
	field = query_escape_problem(bad, bad_name, detail, sizeof detail);
	CHECK(!field || (field == bad_name && bad == QUERY_BAD_VALUE_ESCAPE && *field &&
	                 json_utf8_error(field, strlen(field)) < 0));
	CHECK(strlen(detail) + 1 < sizeof detail && detail[strlen(detail) - 1] == ')');
}

static void fuzz_etag(const char *header, const uint8_t *data, size_t size)
{
	int64_t versions[4] = {0, 1, 42, INT64_MAX};
	char tag[64];

	if (size >= 8)
		memcpy(&versions[0], data, 8);
	for (size_t i = 0; i < 4; i++) {
		int64_t v = versions[i];
		char digits[24];
		int strong = crud_etag_matches(header, v, 0), weak = crud_etag_matches(header, v, 1);

		snprintf(digits, sizeof digits, "%lld", (long long)v);
		/* 1 match, 0 none, -1 no list of entity tags: that last whatever
		 * the version and the comparison. */
		CHECK(strong >= -1 && strong <= 1 && weak >= -1 && weak <= 1);
		CHECK((strong < 0) == (weak < 0));
		/* Weak comparison accepts all that strong comparison accepts. */
		CHECK(strong != 1 || weak == 1);
		/* A match needs the version's digits, quoted, or a '*'. */
		if (weak == 1) {
			snprintf(tag, sizeof tag, "\"%s\"", digits);
			CHECK(strstr(header, tag) || strchr(header, '*'));
		}
		/* Only blanks and commas: an empty list, which matches nothing. */
		if (!header[strspn(header, " \t,")])
			CHECK(strong == 0 && weak == 0);
		snprintf(tag, sizeof tag, "\"%s\"", digits);
		CHECK(crud_etag_matches(tag, v, 0) == 1 && crud_etag_matches(tag, v, 1) == 1);
		snprintf(tag, sizeof tag, "W/\"%s\"", digits);
		CHECK(crud_etag_matches(tag, v, 0) == 0 && crud_etag_matches(tag, v, 1) == 1);
	}
}

static void fuzz_media_type(const char *ct)
{
	static const char *const types[] = {"application/json", "application/merge-patch+json"};
	for (size_t i = 0; i < 2; i++) {
		const char *p = ct;
		size_t n = strlen(types[i]);
		int is = crud_media_type_is(ct, types[i]);
		while (*p == ' ' || *p == '\t')
			p++;
		CHECK(is == (!strncasecmp(p, types[i], n) && strchr("; \t", p[n]) != NULL));
	}
}

/* Whether an object (at any depth) names a member twice: documents stored
 * that way (as sent) have no single merge result to compare with. */
static int has_duplicates(const cJSON *v)
{
	for (const cJSON *a = v ? v->child : NULL; a; a = a->next) {
		if (has_duplicates(a))
			return 1;
		if (!cJSON_IsObject(v))
			continue;
		for (const cJSON *b = a->next; b; b = b->next)
			if (!strcmp(a->string, b->string))
				return 1;
	}
	return 0;
}

/* RFC 7396 section 2, member by member, against the result. */
static void check_merged(const cJSON *before, const cJSON *patch, const cJSON *after)
{
	if (!cJSON_IsObject(patch)) {
		CHECK(cJSON_Compare(after, patch, 1));
		return;
	}
	CHECK(cJSON_IsObject(after));
	for (const cJSON *m = patch->child; m; m = m->next) {
		const cJSON *got = cJSON_GetObjectItemCaseSensitive(after, m->string);
		const cJSON *had = cJSON_IsObject(before)
		                       ? cJSON_GetObjectItemCaseSensitive(before, m->string)
		                       : NULL;
		if (cJSON_IsNull(m))
			CHECK(!got);
		else if (!cJSON_IsObject(m))
			CHECK(got && cJSON_Compare(got, m, 1));
		else
			check_merged(cJSON_IsObject(had) ? had : NULL, m, got);
	}
	if (!cJSON_IsObject(before))
		return;
	for (const cJSON *t = before->child; t; t = t->next)
		if (!cJSON_GetObjectItemCaseSensitive(patch, t->string))
			CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(after, t->string), t, 1));
}

static void fuzz_merge(const char *text, size_t len)
{
	const char *patch_text = memchr(text, '\0', len) ? text + strlen(text) + 1 : NULL;
	cJSON *target, *patch, *before, *once, *twice;

	/* Only what the host's check let in reaches crud.so (stored documents
	 * came in the same way): no number beyond a double's range, say. */
	if (!patch_text || json_check(text, strlen(text), JSON_MAX_DEPTH, NULL) != JSON_OK ||
	    json_check(patch_text, strlen(patch_text), JSON_MAX_DEPTH, NULL) != JSON_OK)
		return;
	target = cJSON_Parse(text);
	patch = cJSON_Parse(patch_text);
	if (!target || !patch || has_duplicates(target)) {
		cJSON_Delete(target);
		cJSON_Delete(patch);
		return;
	}
	before = cJSON_Duplicate(target, 1);
	once = crud_merge_patch(target, patch); /* consumes target */
	if (before && once) {
		/* A patch naming a member twice applies both, in order: only the
		 * idempotence below is checked for it. */
		if (!has_duplicates(patch))
			check_merged(before, patch, once);
		twice = crud_merge_patch(cJSON_Duplicate(once, 1), patch);
		CHECK(!twice || cJSON_Compare(twice, once, 1));
		cJSON_Delete(twice);
		/* The id the routes then set is the document's first member. */
		if (cJSON_IsObject(once) && crud_doc_set_id(once, "0190f0aa-0000-7000-8000-000000000000") == 0) {
			CHECK(once->child && !strcmp(once->child->string, "id"));
			CHECK(crud_doc_id_compatible(once, "0190f0aa-0000-7000-8000-000000000000"));
			CHECK(!crud_doc_id_compatible(once, "other"));
		}
	}
	cJSON_Delete(before);
	cJSON_Delete(once);
	cJSON_Delete(patch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *text = fuzz_rest(data, size, &len);

	if (!text)
		return 0;
	switch (data[0] % 4) {
	case 0:
		fuzz_query(text);
		break;
	case 1:
		fuzz_etag(text, data + 1, len);
		break;
	case 2:
		fuzz_media_type(text);
		break;
	default:
		fuzz_merge(text, len);
	}
	free(text);
	return 0;
}
