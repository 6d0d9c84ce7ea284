/* libFuzzer: a dead letter as GET /admin/plugins/NAME/dlq shows it
 * (admin.c: dlq_msg_json, add_bytes, add_header). Any producer to a
 * consumed topic chooses its key, value and headers, so every byte here
 * is the input's. admin.c is compiled in (as fuzz_admin does) for its
 * static functions; no server, no Kafka: the message is built as dlq.c's
 * msg_copy keeps one read for that page (the first VALUE_SHOW_MAX + 1
 * bytes of the value, or none with ?values=false).
 *
 * The input: a flags byte, then fields of one length byte and that many
 * bytes (fewer when the input ends; length 255: NULL, no bytes): the key,
 * the value, then header name and value pairs to the end (a name ends at
 * its first NUL, as Kafka's C names do). Flags: bit 0 ?values=true, bit 1
 * "redriven", bit 2 a long value: VALUE_SHOW_MAX - K bytes of 'a' (K: bits
 * 3-5) before the value's bytes, so that the cut at VALUE_SHOW_MAX falls
 * among them.
 *
 * Checked: the answer (as reply_json prints it) is UTF-8, one strict JSON
 * text (json_check) that names no member twice, and parses; the key and
 * the value are null when absent, else shown once, as text or as base64:
 * text is a prefix of the real bytes (the whole, or the shown part less at
 * most the 3 bytes of a character the cut split), base64 decodes to
 * exactly the shown part, and text that could be shown is; value_size is
 * the real size, value_shortened is there when the value was cut; each
 * header name (as shown: U+FFFD for stray bytes) once, in "headers" or
 * "headers_base64", with the value of the last header of that name. */
#define _GNU_SOURCE /* as admin.c */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_modes.h"
#include "../../host/admin.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_HEADERS 64 /* at most; the rest of the input is left over */

/* base64 text decoded; *n its length. Aborts on a malformed one: the
 * answer's base64 is sodium's, which must read it back. */
static unsigned char *fz_unbase64(const char *b64, size_t *n)
{
	size_t len = strlen(b64), cap = len / 4 * 3 + 1;
	unsigned char *out = malloc(cap);
	CHECK(out);
	CHECK(sodium_base642bin(out, cap, b64, len, NULL, n, NULL,
	                        sodium_base64_VARIANT_ORIGINAL) == 0);
	return out;
}

static const cJSON *fz_get(const cJSON *o, const char *name)
{
	return o ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
}

static int fz_is_text(const char *p, size_t n)
{
	return json_utf8_error(p, n) < 0 && !memchr(p, 0, n);
}

/* NAME or NAME_base64 in o: the bytes real[0..n) (NULL: absent), of which
 * at most max are shown (0: all). */
static void fz_check_bytes(const cJSON *o, const char *name, const char *real, size_t n,
                           size_t max)
{
	char key[64];
	const cJSON *t = fz_get(o, name), *b;
	size_t shown = max && n > max ? max : n, len;
	snprintf(key, sizeof key, "%s_base64", name);
	b = fz_get(o, key);
	if (!real) {
		CHECK(cJSON_IsNull(t) && !b);
		return;
	}
	CHECK(!t != !b);
	if (t) {
		CHECK(cJSON_IsString(t));
		len = strlen(t->valuestring);
		CHECK(len <= shown && !memcmp(t->valuestring, real, len));
		CHECK(len == shown || (shown < n && shown - len <= 3));
	} else {
		unsigned char *bytes;
		CHECK(cJSON_IsString(b));
		/* Whole bytes that are text are shown as text. (A cut value is
		 * judged by what is left after the cut, which a stray byte past
		 * it may move back into a character.) */
		CHECK(shown < n || !fz_is_text(real, n));
		bytes = fz_unbase64(b->valuestring, &len);
		CHECK(len == shown && !memcmp(bytes, real, len));
		free(bytes);
	}
}

/* Header i's name as the answer shows it (malloc'd). */
static char *fz_shown_name(const dlq_msg *m, size_t i)
{
	int oom = 0;
	char *s = json_utf8_scrub(m->hname[i], &oom);
	if (oom)
		abort();
	if (!s && !(s = strdup(m->hname[i])))
		abort();
	return s;
}

static void fz_check_headers(const cJSON *o, const dlq_msg *m)
{
	const cJSON *h = fz_get(o, "headers"), *hb = fz_get(o, "headers_base64");
	char **names = calloc(m->nheaders + 1, sizeof *names);
	size_t winners = 0;
	CHECK(names && cJSON_IsObject(h) && (!hb || cJSON_IsObject(hb)));
	for (size_t i = 0; i < m->nheaders; i++)
		names[i] = fz_shown_name(m, i);
	for (size_t i = 0; i < m->nheaders; i++) {
		const cJSON *t = fz_get(h, names[i]), *b = fz_get(hb, names[i]);
		size_t j = i + 1;
		while (j < m->nheaders && strcmp(names[j], names[i]))
			j++;
		if (j < m->nheaders)
			continue; /* a later header of this name wins */
		winners++;
		CHECK(!t != !b);
		if (!m->hvalue[i]) {
			CHECK(cJSON_IsNull(t));
		} else if (t) {
			CHECK(cJSON_IsString(t) && fz_is_text(m->hvalue[i], m->hlen[i]));
			CHECK(strlen(t->valuestring) == m->hlen[i] &&
			      !memcmp(t->valuestring, m->hvalue[i], m->hlen[i]));
		} else {
			size_t len;
			unsigned char *bytes;
			CHECK(cJSON_IsString(b) && !fz_is_text(m->hvalue[i], m->hlen[i]));
			bytes = fz_unbase64(b->valuestring, &len);
			CHECK(len == m->hlen[i] && !memcmp(bytes, m->hvalue[i], len));
			free(bytes);
		}
	}
	/* Nothing else: no header shown twice, none made up. */
	CHECK((size_t)cJSON_GetArraySize(h) + (hb ? (size_t)cJSON_GetArraySize(hb) : 0) ==
	      winners);
	for (size_t i = 0; i < m->nheaders; i++)
		free(names[i]);
	free(names);
}

/* The answer's JSON for m, checked. `value`[0..len): the whole value. */
static void fz_check(const dlq_msg *m, const char *value, size_t len, int redriven, int values)
{
	int ok = 1, dup = 0;
	cJSON *o = dlq_msg_json(m, redriven, values, &ok), *parsed;
	char *json = o && ok ? jsonb_print(o) : NULL, name[64];
	const cJSON *size, *cut;
	size_t n, at;
	CHECK(json);
	n = strlen(json);
	CHECK(json_utf8_error(json, n) < 0);
	CHECK(json_check_members(json, n, 8, &at, &dup, name, sizeof name) == JSON_OK && !dup);
	parsed = cJSON_ParseWithLength(json, n);
	CHECK(parsed);
	fz_check_bytes(parsed, "key", m->key, m->key_len, 0);
	if (values)
		fz_check_bytes(parsed, "value", value, len, VALUE_SHOW_MAX);
	else
		CHECK(!fz_get(parsed, "value") && !fz_get(parsed, "value_base64"));
	size = fz_get(parsed, "value_size");
	CHECK(cJSON_IsNumber(size) && size->valuedouble == (double)len);
	cut = fz_get(parsed, "value_shortened");
	CHECK(values && len > VALUE_SHOW_MAX ? cJSON_IsTrue(cut) : !cut);
	CHECK(cJSON_IsBool(fz_get(parsed, "redriven")) &&
	      !cJSON_IsTrue(fz_get(parsed, "redriven")) == !redriven);
	fz_check_headers(parsed, m);
	cJSON_Delete(parsed);
	cJSON_Delete(o);
	free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data + 1, size ? size - 1 : 0};
	dlq_msg m;
	char *value, *whole;
	size_t vlen, len, pad, kept;
	int values, redriven;
	if (!size)
		return 0;
	values = data[0] & 1;
	redriven = (data[0] >> 1) & 1;
	pad = data[0] & 4 ? VALUE_SHOW_MAX - (size_t)((data[0] >> 3) & 7) : 0;
	memset(&m, 0, sizeof m);
	m.topic = (char *)"orders.evhost.f.dlq";
	m.partition = 3;
	m.offset = 42;
	m.timestamp_ms = 1700000000000;
	m.key = fuzz_field(&in, &m.key_len);
	value = fuzz_field(&in, &vlen);
	/* The whole value, and what a read for the page keeps of it. */
	len = value ? pad + vlen : 0;
	whole = value ? malloc(len + 1) : NULL;
	if (value && !whole)
		abort();
	if (whole) {
		memset(whole, 'a', pad);
		memcpy(whole + pad, value, vlen + 1);
	}
	kept = values ? (len < VALUE_SHOW_MAX + 1 ? len : VALUE_SHOW_MAX + 1) : 0;
	if (whole && (kept || !len)) {
		if (!(m.value = malloc(kept + 1)))
			abort();
		memcpy(m.value, whole, kept);
		m.value[kept] = '\0';
	}
	m.value_len = len;
	m.hname = calloc(FZ_HEADERS, sizeof *m.hname);
	m.hvalue = calloc(FZ_HEADERS, sizeof *m.hvalue);
	m.hlen = calloc(FZ_HEADERS, sizeof *m.hlen);
	if (!m.hname || !m.hvalue || !m.hlen)
		abort();
	while (in.n && m.nheaders < FZ_HEADERS) {
		size_t i = m.nheaders++, nlen;
		m.hname[i] = fuzz_field(&in, &nlen);
		if (!m.hname[i] && !(m.hname[i] = strdup("")))
			abort();
		m.hvalue[i] = fuzz_field(&in, &m.hlen[i]);
	}
	fz_check(&m, whole, len, redriven, values);
	for (size_t i = 0; i < m.nheaders; i++) {
		free(m.hname[i]);
		free(m.hvalue[i]);
	}
	free(m.hname);
	free(m.hvalue);
	free(m.hlen);
	free(m.key);
	free(m.value);
	free(value);
	free(whole);
	return 0;
}
