/* Query strings as list routes read them. evh_req_query treats a pair whose
 * percent-encoding is broken as absent, which for a filter means a list
 * without it (every recipient's notifications for ?recipient=%zz) and for a
 * cursor the first page: a route that reads parameters that way refuses
 * such a query string first. Pure, no SDK calls. */
#ifndef EVH_PLUGINS_QUERY_H
#define EVH_PLUGINS_QUERY_H

/* Whether every '%' in `qs` (NULL: none) starts an escape of two hex
 * digits, none of them %00 (a NUL would end the value early). */
int query_escapes_ok(const char *qs);

/* What a malformed percent-escape is, for the answers that say where one is. */
#define QUERY_ESCAPE_RULE "each % must be followed by two hex digits, and %00 is not allowed"
/* What a route answers (422, the body) when query_escapes_ok fails. */
#define QUERY_ESCAPES_BAD "the query string has a malformed percent-escape (" QUERY_ESCAPE_RULE ")"
#endif
