/* libFuzzer: arbitrary bytes as a configuration file, through the parser,
 * the host settings, and schema validation of every plugin section; and as
 * a [tracing] otlp_headers_file. */
#define _GNU_SOURCE /* memmem */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "diag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const evh_config_key fuzz_schema[] = {
    {"topic", EVH_CFG_STRING, "T", 0, NULL},
    {"limit", EVH_CFG_INT, "10", 0, NULL},
    {"flag", EVH_CFG_BOOL, NULL, 0, NULL},
    {"roles", EVH_CFG_LIST, NULL, 0, NULL},
    {"db", EVH_CFG_PATH, NULL, 1, NULL},
    {"collection.*.fields", EVH_CFG_LIST, NULL, 0, NULL},
    {"*.*", EVH_CFG_STRING, NULL, 0, NULL},
    {NULL, 0, NULL, 0, NULL},
};

static const char *const fuzz_skip[] = {"enabled", "required", "path", "group", NULL};

/* The same bytes as [tracing] otlp_headers_file: refused with a reason, or
 * header lines that cannot split or add a request line: each "Name: value"
 * with a token name, ending in CRLF, no other control character than tab. */
static void headers(const char *text)
{
	char why[256] = "";
	char *h = settings_otlp_headers(text, why, sizeof why);
	if (!h) {
		if (!why[0])
			abort();
		return;
	}
	for (const char *p = h; *p;) {
		const char *end = strstr(p, "\r\n"), *colon = strchr(p, ':');
		if (!end || !colon || colon == p || colon > end || colon[1] != ' ')
			abort();
		for (const char *q = p; q < colon; q++)
			if (!strchr("!#$%&'*+-.^_`|~", *q) && !((*q >= '0' && *q <= '9') ||
			                                       (*q >= 'a' && *q <= 'z') ||
			                                       (*q >= 'A' && *q <= 'Z')))
				abort();
		for (const char *q = colon; q < end; q++)
			if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
				abort();
		p = end + 2;
	}
	free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cfg c = {0};
	settings s;
	diag d = {0};
	char *text;

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* *_file keys make settings_from_cfg read the named file; a fuzzer
	 * that finds "/dev/stdin" would hang, and reading files is not the
	 * parsing under test. Such a key is made an unknown one ("_fil?"),
	 * not the whole input dropped: the rest of it (every other key of a
	 * full configuration) is still parsed. */
	for (char *f = text; (f = memmem(f, size - (size_t)(f - text), "_file", 5)); f += 5)
		f[4] = '?';
	headers(text);
	cfg_load_string(&c, text, "/etc/evhost/fuzz.conf", &d);
	settings_from_cfg(&c, &s, &d);
	for (size_t i = 0; i < c.nsections; i++) {
		if (!strncmp(c.sections[i].name, "plugin.", 7))
			cfg_validate_section(&c, c.sections[i].name, fuzz_schema, fuzz_skip, &d);
	}
	for (size_t i = 0; i < d.n; i++) {
		if (!d.msgs[i][0])
			abort(); /* every diagnostic says something */
	}
	settings_free(&s);
	cfg_free(&c);
	diag_free(&d);
	free(text);
	return 0;
}
