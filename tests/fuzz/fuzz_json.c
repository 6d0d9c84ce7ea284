/* libFuzzer: arbitrary bytes through json_check, the host's allocation-free
 * JSON check (request bodies, published event data). Checked properties:
 * what it accepts, cJSON (what the plugins parse with) parses too, whole,
 * with every number finite; what it refuses as out of range, cJSON reads
 * with an infinite number (so the line is strtod's, not an estimate); it
 * accepts no \u0000 in a string, and points at the one it refuses; an
 * error is reported inside the input; a text accepted at some depth bound
 * is accepted at every larger one, and one refused as too deep is refused
 * at every smaller one. And json_check_members, the same scan keeping the
 * member names: it says what json_check says (status and offset, at both
 * bounds), and for a text accepted the duplicate name that cJSON's tree
 * walked finds (json_tree_duplicate_member), the same name cut alike. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../unit/json_oracle.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A \u0000 escape inside a string of the valid JSON text s[0..n). */
static int has_nul_escape(const char *s, size_t n)
{
	int in = 0;
	for (size_t i = 0; i < n; i++) {
		if (!in)
			in = s[i] == '"';
		else if (s[i] == '"')
			in = 0;
		else if (s[i] == '\\' && i + 1 < n && s[++i] == 'u' && n - i > 4 &&
		         !memcmp(s + i + 1, "0000", 4))
			return 1;
	}
	return 0;
}

static int all_finite(const cJSON *j)
{
	if (cJSON_IsNumber(j) && !isfinite(j->valuedouble))
		return 0;
	for (const cJSON *c = j ? j->child : NULL; c; c = c->next)
		if (!all_finite(c))
			return 0;
	return 1;
}


/* json_check_members against json_check at the bound `depth`, and when the
 * text is accepted at cJSON's bound, against the tree's duplicate check. */
static void same_members(const char *s, size_t size, int depth, size_t namelen)
{
	char name[64], want[64];
	size_t at1 = (size_t)-1, at2 = (size_t)-2;
	json_status st = json_check(s, size, depth, &at1);
	int dup = 7, rc;
	if (json_check_members(s, size, depth, &at2, &dup, name, namelen) != st)
		__builtin_trap();
	if (st != JSON_OK) {
		if (at1 != at2 || dup != 0)
			__builtin_trap();
		return;
	}
	if (depth < JSON_MAX_DEPTH)
		return;
	rc = dup_by_tree(s, size, want, namelen);
	if (dup != rc || (rc == 1 && namelen && strcmp(name, want)))
		__builtin_trap();
}

static int only_whitespace(const char *p, const char *end)
{
	for (; p < end; p++)
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *end = NULL;
	int depth = size ? data[0] % 8 : 0; /* a small bound, from the input */
	size_t at = (size_t)-1;
	json_status full = json_check(s, size, JSON_MAX_DEPTH, &at), small;
	cJSON *j;

	if (full != JSON_OK && at > size)
		__builtin_trap();
	if (full == JSON_OK) {
		j = cJSON_ParseWithLengthOpts(s, size, &end, 0);
		if (!j || !end || end > s + size || !only_whitespace(end, s + size) || !all_finite(j) ||
		    has_nul_escape(s, size))
			__builtin_trap();
		cJSON_Delete(j);
	}
	if (full == JSON_NUL && (size - at < 6 || memcmp(s + at, "\\u0000", 6)))
		__builtin_trap();
	if (full == JSON_RANGE) {
		j = cJSON_ParseWithLengthOpts(s, size, &end, 0);
		/* cJSON may stop at a later error; what it read up to the number
		 * holds an infinite one unless the error came first */
		if (j && only_whitespace(end, s + size) && all_finite(j))
			__builtin_trap();
		cJSON_Delete(j);
	}
	/* the names kept whole, or cut to a few bytes (from the input) */
	same_members(s, size, JSON_MAX_DEPTH, 64);
	same_members(s, size, JSON_MAX_DEPTH, size ? data[size - 1] % 5 : 0);
	same_members(s, size, depth, 64);
	at = (size_t)-1;
	small = json_check(s, size, depth, &at);
	if (small == JSON_OK && full != JSON_OK)
		__builtin_trap();
	if (small != JSON_OK && at > size)
		__builtin_trap();
	/* a syntax error is found whatever the bound, unless the bound stops
	 * the check first */
	if (full == JSON_SYNTAX && small == JSON_OK)
		__builtin_trap();
	return 0;
}
