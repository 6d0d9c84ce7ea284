/* libFuzzer: arbitrary bytes as a configuration file, through the parser,
 * the host settings, and schema validation of every plugin section. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cfg c = {0};
	settings s;
	diag d = {0};
	char *text;

	/* *_file keys make settings_from_cfg read the named file; a fuzzer
	 * that finds "/dev/stdin" would hang, and reading files is not the
	 * parsing under test. */
	if (memmem(data, size, "_file", 5))
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	cfg_load_string(&c, text, "/etc/evhost/fuzz.conf", &d);
	settings_from_cfg(&c, &s, &d);
	for (size_t i = 0; i < c.nsections; i++) {
		if (!strncmp(c.sections[i], "plugin.", 7))
			cfg_validate_section(&c, c.sections[i], fuzz_schema, fuzz_skip, &d);
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
