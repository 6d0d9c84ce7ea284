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
 * when it is but cJSON could not allocate. For request bodies of
 * EVH_ROUTE_JSON routes, which the host has checked as strictly as
 * jsonin_parse_strict does before the handler runs. */
cJSON *jsonin_parse(const char *text, size_t len, int *oom);

/* text[0..len) parsed after the checks the host makes of an HTTP body, for
 * JSON nobody checked: an event's data (the host checks what plugins
 * publish, not what other producers write to a topic). Refused, NULL with
 * `why` saying what and where (a byte offset, or the name of a member given
 * twice; never a value, which may be personal data), each reason beginning
 * with `what` ("event data"):
 *   "WHAT is empty"
 *   "WHAT is not valid JSON: a NUL byte at byte N"
 *   "WHAT is not valid JSON: invalid UTF-8 at byte N"
 *   "WHAT is not valid JSON: \u0000 in a string at byte N" (cJSON's string
 *       would end there)
 *   "WHAT is not valid JSON: a number out of range at byte N" (beyond a
 *       double's, which cJSON reads as infinity)
 *   "WHAT is not valid JSON: a lone surrogate escape at byte N"
 *   "WHAT is not valid JSON: nested deeper than 1000 levels at byte N"
 *   "WHAT is not valid JSON: malformed at byte N"
 *   "WHAT names member \"NAME\" twice" (parsers disagree on which counts;
 *       the name cut to 64 bytes, quotes, backslashes and control
 *       characters in it shown as '?')
 * Out of memory, NULL with *oom set and `why` saying so: the caller retries
 * rather than rejects. */
cJSON *jsonin_parse_strict(const char *text, size_t len, const char *what, int *oom, char *why,
                           size_t whylen);

/* Where the value of `member`, a member of the object `root` that
 * jsonin_parse_strict (or jsonin_parse of checked text) read from
 * text[0..len), is written in that text: its first byte, with its length in
 * *vlen; NULL when `member` is not one of root's own members. For what a
 * tree does not keep: the digits of a number as written. */
const char *jsonin_member_text(const char *text, size_t len, const cJSON *root,
                               const cJSON *member, size_t *vlen);
#endif
