/* See jsonin.h. */
#include "jsonin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/json.h"

#define NAME_SHOWN 64 /* bytes of a member name a reason quotes */
#define STR_(x) #x
#define STR(x) STR_(x)

cJSON *jsonin_parse(const char *text, size_t len, int *oom)
{
	cJSON *v = text && len ? cJSON_ParseWithLength(text, len) : NULL;
	*oom = !v && text && len && json_check(text, len, JSON_MAX_DEPTH, NULL) == JSON_OK;
	return v;
}

static cJSON *not_json(char *why, size_t whylen, const char *what, const char *problem, size_t at)
{
	snprintf(why, whylen, "%s is not valid JSON: %s at byte %zu", what, problem, at);
	return NULL;
}

static cJSON *no_memory(char *why, size_t whylen, const char *what, int *oom)
{
	*oom = 1;
	snprintf(why, whylen, "out of memory parsing the %s", what);
	return NULL;
}

/* `name` as a reason quotes it: at most NAME_SHOWN bytes, cut where a
 * character begins; quotes, backslashes and control characters as '?'. */
static void name_shown(const char *name, char out[NAME_SHOWN + 1])
{
	size_t n = json_utf8_cut(name, NAME_SHOWN);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		out[i] = c < 0x20 || c == 0x7f || c == '"' || c == '\\' ? '?' : (char)c;
	}
	out[n] = '\0';
}

cJSON *jsonin_parse_strict(const char *text, size_t len, const char *what, int *oom, char *why,
                           size_t whylen)
{
	char name[256], shown[NAME_SHOWN + 1];
	const char *nul;
	size_t at = 0;
	long bad;
	cJSON *v;

	*oom = 0;
	if (!text || len == 0) {
		snprintf(why, whylen, "%s is empty", what);
		return NULL;
	}
	/* The host's order for a body: bytes, characters, then grammar. */
	if ((nul = memchr(text, '\0', len)))
		return not_json(why, whylen, what, "a NUL byte", (size_t)(nul - text));
	if ((bad = json_utf8_error(text, len)) >= 0)
		return not_json(why, whylen, what, "invalid UTF-8", (size_t)bad);
	switch (json_check(text, len, JSON_MAX_DEPTH, &at)) {
	case JSON_OK: break;
	case JSON_NUL: return not_json(why, whylen, what, "\\u0000 in a string", at);
	case JSON_RANGE: return not_json(why, whylen, what, "a number out of range", at);
	case JSON_TOO_DEEP:
		return not_json(why, whylen, what, "nested deeper than " STR(JSON_MAX_DEPTH) " levels",
		                at);
	default:
		return not_json(why, whylen, what,
		                json_surrogate_at(text, len, at) ? "a lone surrogate escape" : "malformed",
		                at);
	}
	/* What json_check accepts cJSON parses: NULL is a failed allocation. */
	if (!(v = cJSON_ParseWithLength(text, len)))
		return no_memory(why, whylen, what, oom);
	switch (json_tree_duplicate_member(v, name, sizeof name)) {
	case 0: return v;
	case 1:
		cJSON_Delete(v);
		name_shown(name, shown);
		snprintf(why, whylen, "%s names member \"%s\" twice", what, shown);
		return NULL;
	default: cJSON_Delete(v); return no_memory(why, whylen, what, oom);
	}
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && is_ws(s[i]))
		i++;
	return i;
}

/* The end of the value that begins at s[i], in a text json_check accepted. */
static size_t value_end(const char *s, size_t n, size_t i)
{
	int depth = 0, in_string = 0;

	for (; i < n; i++) {
		char c = s[i];
		if (in_string) {
			if (c == '\\') {
				i++; /* the escaped character, a quote maybe */
			} else if (c == '"') {
				in_string = 0;
				if (depth == 0)
					return i + 1;
			}
		} else if (c == '"') {
			in_string = 1;
		} else if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return i; /* the container around a number or literal ends */
			if (--depth == 0)
				return i + 1;
		} else if (depth == 0 && (c == ',' || is_ws(c))) {
			return i;
		}
	}
	return n;
}

const char *jsonin_member_text(const char *text, size_t len, const cJSON *root,
                               const cJSON *member, size_t *vlen)
{
	size_t i = skip_ws(text, len, 0), end;

	if (!cJSON_IsObject(root) || i >= len || text[i] != '{')
		return NULL;
	i++;
	/* cJSON keeps the members in the order of the text. */
	for (const cJSON *c = root->child; c; c = c->next) {
		i = skip_ws(text, len, i);                           /* at the name */
		i = skip_ws(text, len, value_end(text, len, i)) + 1; /* past the ':' */
		i = skip_ws(text, len, i);                           /* at the value */
		if (i >= len)
			return NULL;
		end = value_end(text, len, i);
		if (c == member) {
			*vlen = end - i;
			return text + i;
		}
		i = skip_ws(text, len, end) + 1; /* ',' */
	}
	return NULL;
}
