/* Query strings as list routes read them. evh_req_query treats a pair whose
 * percent-encoding is broken as absent, which for a filter means a list
 * without it (every recipient's notifications for ?recipient=%zz) and for a
 * cursor the first page: a route refuses such a query string first (422,
 * naming the parameter whose value it is). Pure, no SDK calls (host/json.c
 * for UTF-8). */
#ifndef EVH_PLUGINS_QUERY_H
#define EVH_PLUGINS_QUERY_H
#include <stddef.h>

/* What a part of a query string that cannot be decoded is: a malformed %XX
 * or a %00 (an escape) in a name or a value, or more than its buffer holds
 * (a length). */
#define QUERY_BAD_NAME_ESCAPE (-1)
#define QUERY_BAD_NAME_LENGTH (-2)
#define QUERY_BAD_VALUE_ESCAPE (-3)
#define QUERY_BAD_VALUE_LENGTH (-4)

/* Iterate a raw query string: decode the next name=value pair ('+' and
 * %XX decoded) into the buffers and advance *qs. Returns 1 for a pair, 0 at
 * the end, or a QUERY_BAD_* for a part that cannot be decoded (*qs then
 * moves past its pair). For a bad value the name has been decoded, so the
 * answer can name it. */
int query_next(const char **qs, char *name, size_t nlen, char *value, size_t vlen);

/* For routes that read known parameters with evh_req_query: the first pair
 * of `qs` (NULL: none) with a malformed escape. 0 when there is none,
 * QUERY_BAD_NAME_ESCAPE for its name's, QUERY_BAD_VALUE_ESCAPE for its
 * value's with the name decoded into `name` (nlen bytes; "" when it does
 * not fit). Values and names of any length are taken. */
int query_find_bad_escape(const char *qs, char *name, size_t nlen);

/* The first of `names` (NULL-ended, at most 8) that `qs` gives more than
 * once, or NULL. evh_req_query takes the first of a repeated parameter:
 * ?limit=5&limit=abc would drop the second without a word, and a client
 * and a proxy that each read another one would disagree. Names compare
 * decoded; a name that cannot be decoded is skipped (query_find_bad_escape
 * says of it). */
const char *query_find_repeated(const char *qs, const char *const *names);

/* What a malformed percent-escape is, for the answers that say where one is. */
#define QUERY_ESCAPE_RULE "each % must be followed by two hex digits, and %00 is not allowed"
/* A name buffer for query_find_bad_escape, and room for the detail
 * query_escape_problem writes with a name that fitted it. */
#define QUERY_NAME_MAX 256
#define QUERY_DETAIL_MAX (QUERY_NAME_MAX + 160)

/* The 422 for QUERY_BAD_NAME_ESCAPE or QUERY_BAD_VALUE_ESCAPE (`bad`) from
 * either call above: its detail into `detail` (size bytes), and the field to
 * name, returned: the parameter `name` for a value's escape (NULL when the
 * name is empty, was not decoded or is not UTF-8), NULL for a name's. */
const char *query_escape_problem(int bad, const char *name, char *detail, size_t size);

/* For a parameter whose value is compared with stored JSON text (a filter,
 * a recipient): 1, with the 422's detail naming `name` and the first byte
 * that is not UTF-8 written into `detail` (size bytes), when `value`'s
 * decoded bytes are not UTF-8 (%FF, a Latin-1 %E9), which could only give
 * an empty page, as if nothing matched; 0 when they are. */
int query_value_not_utf8(const char *name, const char *value, char *detail, size_t size);
#endif
