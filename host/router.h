/* HTTP routing: method + pattern ("/users/{id}") to a target. Literal
 * segments win over captures. Thread-safe: lookups take a read lock, so
 * routes can be added and removed while the server runs (plugin reload). */
#ifndef EVHOST_ROUTER_H
#define EVHOST_ROUTER_H
#include <stddef.h>

#define ROUTER_MAX_PARAMS 8

typedef struct router router;

typedef enum router_result {
	ROUTER_FOUND = 0,
	ROUTER_NOT_FOUND = 1,
	ROUTER_METHOD_NOT_ALLOWED = 2,
	ROUTER_NO_MEMORY = 3, /* out of memory: no answer about the path either way */
} router_result;

/* (The type is route_match; router_match() is the lookup.) */
typedef struct route_match {
	void *target;
	size_t nparams;
	char *names[ROUTER_MAX_PARAMS];  /* owned by the match; route_match_free */
	char *values[ROUTER_MAX_PARAMS]; /* URL-decoded */
} route_match;

router *router_new(void);
void router_free(router *r);
/* Add a route. `owner` groups routes for router_remove_owner. Returns 0, or
 * with `err` set -1 (bad pattern, duplicate method+pattern) or -2 (out of
 * memory). */
int router_add(router *r, const char *method, const char *pattern, void *target, void *owner,
               char *err, size_t errlen);
void router_remove_owner(router *r, void *owner);
/* Replace the route `old_owner` holds for `method` and a pattern of the
 * same shape as `pattern` (captures may be named otherwise) by `pattern`,
 * `target` and `owner`, in one step: no lookup finds the path unrouted in
 * between. 0; -1 with `err` set when old_owner holds no such route; -2 out
 * of memory, the old route left in place. */
int router_replace(router *r, const char *method, const char *pattern, void *old_owner,
                   void *target, void *owner, char *err, size_t errlen);
/* Match a request path (without query string). On METHOD_NOT_ALLOWED,
 * `allow` gets "GET, POST" (the methods that would match). */
router_result router_match(router *r, const char *method, const char *path, route_match *m,
                           char *allow, size_t allowlen);
void route_match_free(route_match *m);
/* Validate a pattern; NULL when fine, else a static message. */
const char *router_pattern_error(const char *pattern);
/* Validate a method and a pattern as router_add does; NULL when fine, else
 * a static message. */
const char *router_route_error(const char *method, const char *pattern);
/* The owner of the route that router_add would refuse `method` and a valid
 * `pattern` for (the same method at the same path, captures named in any
 * way), or NULL when there is none. */
void *router_holder(router *r, const char *method, const char *pattern);
/* The value of a hex digit (either case), or -1. */
int router_hexval(char c);
#endif
