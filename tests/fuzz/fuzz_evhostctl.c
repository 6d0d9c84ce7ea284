/* libFuzzer: what evhostctl reads (evhostctl.c): the admin API's answers,
 * which carry what producers and plugins sent, and the drop-in it rewrites
 * for enable and disable, which an admin may have edited. evhostctl.c is
 * compiled in (its main renamed) for its static functions; no daemon, no
 * curl request: the answer's bytes are the input.
 *
 * The input: a mode byte, then the rest. Mode 0 mod 3: the rest is an
 * answer (parse_whole, scrub_json) printed as `dlq show` prints a dead
 * letter (show_one) and `plugins` its list (print_plugins). 1: the rest is
 * the drop-in as found, rewritten (dropin_text) to enable (mode bit 2) or
 * disable plugin "a" or "b.c" (bit 3). 2: the rest is a dead-letter id as
 * `dlq redrive` takes it (parse_id).
 *
 * Checked: an answer is taken exactly when it is one JSON value with only
 * white space after it (strict JSON always is); what is printed from it is
 * UTF-8 with no control character but the newline (a terminal must not run
 * what a producer sent). A rewritten drop-in read back (cfg_load_string)
 * sets the plugin's `enabled` to the new value, and every other key as the
 * old file did, when the old one read whole. An id taken reads back as the
 * topic, partition and offset it names. */
#define _GNU_SOURCE /* as evhostctl.c */
#define main evhostctl_main
int evhostctl_main(int argc, char **argv);
#include "../../host/evhostctl.c"
#undef main

#include "fuzz_modes.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char outfile[512];

static void cleanup(void) { unlink(outfile); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_temp(outfile, sizeof outfile, "fuzz_evhostctl", 1);
	atexit(cleanup);
	return 0;
}

/* What the printers write for j, caught from stdout (NUL-terminated; *n
 * its length). */
static char *printed(const cJSON *j, size_t *n)
{
	int fd = open(outfile, O_RDWR | O_TRUNC | O_CLOEXEC), saved = dup(1);
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "plugins");
	char *text;
	long len;
	if (fd < 0 || saved < 0 || fflush(stdout) != 0 || dup2(fd, 1) < 0)
		abort();
	if (cJSON_IsObject(j))
		show_one(j);
	print_plugins(cJSON_IsArray(list) ? list : j);
	if (fflush(stdout) != 0 || dup2(saved, 1) < 0)
		abort();
	close(saved);
	if ((len = lseek(fd, 0, SEEK_END)) < 0 || !(text = malloc((size_t)len + 1)) ||
	    pread(fd, text, (size_t)len, 0) != len)
		abort();
	text[len] = '\0';
	close(fd);
	*n = (size_t)len;
	return text;
}

static void answer(const char *body, size_t len)
{
	cJSON *j = parse_whole(body, len);
	const char *end = NULL;
	cJSON *alone = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	size_t at, n, i = alone ? (size_t)(end - body) : 0;
	char *out;
	/* Taken exactly when one value and white space after it. */
	while (alone && i < len && body[i] && strchr(" \t\r\n", body[i]))
		i++;
	CHECK(!j == !(alone && i == len));
	cJSON_Delete(alone);
	if (json_check(body, len, 64, &at) == JSON_OK)
		CHECK(j);
	if (!j)
		return;
	scrub_json(j);
	out = printed(j, &n);
	CHECK(strlen(out) == n && json_utf8_error(out, n) < 0);
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)out[k];
		CHECK(c == '\n' || (c >= 0x20 && c != 0x7f));
		CHECK(!(c == 0xc2 && k + 1 < n && (unsigned char)out[k + 1] <= 0x9f));
	}
	free(out);
	cJSON_Delete(j);
}

/* The entries of text read alone; NULL when it does not read whole. */
static cfg *read_ini(const char *text, size_t len)
{
	cfg *c = calloc(1, sizeof *c);
	diag d = {0};
	int rc;
	if (!c)
		abort();
	rc = memchr(text, '\0', len) ? -1 : cfg_load_string(c, text, "/etc/evhost/conf.d/x.conf", &d);
	diag_free(&d);
	if (rc != 0) {
		cfg_free(c);
		free(c);
		return NULL;
	}
	return c;
}

static void rewrite(const char *old, size_t len, const char *name, int enable)
{
	dropin d = {.path = (char *)"/etc/evhost/conf.d/90-evhostctl-x.conf",
	            .old = (char *)old,
	            .old_len = len};
	char section[64], *text;
	cfg *before = read_ini(old, len), *after;
	const char *v;
	snprintf(section, sizeof section, "plugin.%s", name);
	text = dropin_text(&d, name, section, enable);
	CHECK(text);
	after = read_ini(text, strlen(text));
	if (before) {
		CHECK(after);
		v = cfg_get(after, section, "enabled");
		CHECK(v && !strcmp(v, enable ? "true" : "false"));
		for (size_t i = 0; i < before->n; i++) {
			const cfg_entry *e = &before->v[i];
			if (!strcmp(e->section, section) && !strcmp(e->key, "enabled"))
				continue;
			CHECK((v = cfg_get(after, e->section, e->key)) && !strcmp(v, e->value));
		}
		CHECK(after->n == before->n + !cfg_find(before, section, "enabled"));
	}
	if (before)
		cfg_free(before);
	if (after)
		cfg_free(after);
	free(before);
	free(after);
	free(text);
}

/* An id taken names what it says: TOPIC:P:O, P:O or O, the numbers in
 * range (leading zeros allowed). */
static void id(const char *s)
{
	int ok = 1;
	cJSON *o = parse_id(s, &ok);
	const char *last = strrchr(s, ':'), *first = strchr(s, ':');
	char *end;
	if (!o)
		return;
	CHECK(ok);
	CHECK((double)strtoll(last ? last + 1 : s, &end, 10) ==
	      (cJSON_IsNumber(o) ? o->valuedouble : json_num(o, "offset")));
	CHECK(!*end && (last ? last[1] : s[0]) >= '0');
	if (!last) {
		CHECK(cJSON_IsNumber(o) && o->valuedouble <= ID_OFFSET_MAX);
	} else {
		const char *p = first == last ? s : first + 1;
		double part = json_num(o, "partition");
		CHECK(part == (double)strtoll(p, NULL, 10) && part <= INT32_MAX);
		CHECK(json_num(o, "offset") <= ID_OFFSET_MAX);
		if (first != last)
			CHECK(first > s && strlen(json_str(o, "topic")) == (size_t)(first - s) &&
			      !memcmp(json_str(o, "topic"), s, (size_t)(first - s)));
		else
			CHECK(!cJSON_GetObjectItemCaseSensitive(o, "topic"));
	}
	cJSON_Delete(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *rest;
	if (size > 65536 || !(rest = fuzz_rest(data, size, &len)))
		return 0;
	switch (data[0] % 3) {
	case 0:
		answer(rest, len);
		break;
	case 1:
		rewrite(rest, len, data[0] & 8 ? "b.c" : "a", data[0] & 4);
		break;
	default:
		id(rest);
	}
	free(rest);
	return 0;
}
