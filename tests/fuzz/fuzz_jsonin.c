/* libFuzzer: arbitrary bytes as consumed event data through
 * jsonin_parse_strict (plugins/common/jsonin.c). Checked properties: what it
 * accepts passes each of the host's checks of an HTTP body (no NUL byte,
 * UTF-8, json_check, no member named twice) and is the tree cJSON parses;
 * what it refuses has a reason that begins with what was parsed, is UTF-8
 * without control characters (it becomes a Kafka header and a log line),
 * and points inside the input; it never claims to be out of memory here.
 * And for an accepted object, jsonin_member_text finds each member's value:
 * that text, parsed alone, is the member. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/common/jsonin.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                            \
	do {                                                                                   \
		if (!(cond))                                                                   \
			__builtin_trap();                                                      \
	} while (0)

static void check_reason(const char *why, size_t size)
{
	const char *at = strstr(why, " at byte ");
	size_t n = strlen(why);

	CHECK(!strncmp(why, "event data ", 11));
	CHECK(json_utf8_error(why, n) < 0);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)why[i] >= 0x20 && why[i] != 0x7f);
	if (at && !strstr(why, " names member "))
		CHECK(strtoull(at + 9, NULL, 10) <= size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char why[256], name[64];
	int oom = -1;
	cJSON *v = jsonin_parse_strict(s, size, "event data", &oom, why, sizeof why), *plain;

	CHECK(oom == 0);
	if (!v) {
		check_reason(why, size);
		return 0;
	}
	CHECK(!memchr(s, '\0', size) && json_utf8_error(s, size) < 0);
	CHECK(json_check(s, size, JSON_MAX_DEPTH, NULL) == JSON_OK);
	CHECK(json_duplicate_member(s, size, name, sizeof name) == 0);
	plain = cJSON_ParseWithLength(s, size);
	CHECK(plain && cJSON_Compare(plain, v, 1));
	cJSON_Delete(plain);
	for (const cJSON *c = cJSON_IsObject(v) ? v->child : NULL; c; c = c->next) {
		size_t n = 0;
		const char *t = jsonin_member_text(s, size, v, c, &n);
		cJSON *alone;
		CHECK(t && t >= s && n <= size - (size_t)(t - s));
		alone = cJSON_ParseWithLength(t, n);
		CHECK(alone && cJSON_Compare(alone, c, 1));
		cJSON_Delete(alone);
	}
	cJSON_Delete(v);
	return 0;
}
