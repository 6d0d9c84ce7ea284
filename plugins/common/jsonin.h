/* JSON a plugin is given (a request body, an event's data), parsed with
 * cJSON, which answers NULL both for text that is not JSON and when it runs
 * out of memory. The two need different answers: a 422 or a dead letter for
 * the first, a 500 or a retry for the second (an event would otherwise be
 * dead-lettered, its e-mail never sent, for want of memory for a moment).
 * The host's allocation-free check (host/json.c, compiled into the plugins
 * that use this) tells them apart: what it accepts, cJSON parses (fuzz_json
 * checks that), so a NULL for text it accepts is a failed allocation. */
#ifndef EVH_PLUGINS_JSONIN_H
#define EVH_PLUGINS_JSONIN_H
#include <stddef.h>

#include <cjson/cJSON.h>

/* text[0..len) parsed; NULL when it is not one JSON value, or (*oom set)
 * when it is but cJSON could not allocate. */
cJSON *jsonin_parse(const char *text, size_t len, int *oom);
#endif
