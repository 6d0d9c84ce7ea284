/* libFuzzer: request paths through the router, and patterns through the
 * pattern checker. The first input byte picks a method and a mode; the rest
 * is a path (mode 0) or a pattern that is added and then matched against
 * itself (mode 1). Checks the invariants callers rely on: a FOUND match has
 * a target and terminated params, an accepted pattern is routable, and a
 * 405 always comes with an allow list. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "get", ""};
static const char *const patterns[] = {"/",           "/users",          "/users/{id}",
                                       "/users/me",   "/users/{id}/posts", "/c/{a}/{b}/x",
                                       "/c/{a}/y/{b}", "/a%b",            NULL};
static int targets[8];
static router *fixed;

static router *fixed_router(void)
{
	char err[256];
	if (fixed)
		return fixed;
	fixed = router_new();
	if (!fixed)
		abort();
	for (size_t i = 0; patterns[i]; i++) {
		/* "/a%b" is invalid on purpose: it must be refused. */
		int rc = router_add(fixed, i % 2 ? "POST" : "GET", patterns[i], &targets[i % 8],
		                    NULL, err, sizeof err);
		if ((rc == 0) != (router_pattern_error(patterns[i]) == NULL))
			__builtin_trap();
	}
	return fixed;
}

static void check_match(router_result res, const route_match *m, const char *allow)
{
	if (res == ROUTER_FOUND) {
		if (!m->target || m->nparams > ROUTER_MAX_PARAMS)
			__builtin_trap();
		for (size_t i = 0; i < m->nparams; i++)
			if (!m->names[i] || !m->values[i])
				__builtin_trap();
	} else if (res == ROUTER_METHOD_NOT_ALLOWED && !allow[0]) {
		__builtin_trap();
	}
}

/* An accepted pattern, with captures filled in, must route to itself. */
static void pattern_roundtrip(const char *method, const char *pattern)
{
	router *r = router_new();
	char err[256], allow[128], *path, *w;
	route_match m;
	int t;
	if (!r)
		abort();
	if (router_add(r, method, pattern, &t, NULL, err, sizeof err) == 0) {
		path = malloc(strlen(pattern) + 1);
		if (!path)
			abort();
		w = path;
		for (const char *s = pattern; *s; s++) {
			if (*s == '{') {
				*w++ = 'v';
				s = strchr(s, '}');
			} else {
				*w++ = *s;
			}
		}
		*w = '\0';
		if (router_match(r, method, path, &m, allow, sizeof allow) != ROUTER_FOUND ||
		    m.target != &t)
			__builtin_trap();
		route_match_free(&m);
		free(path);
	}
	router_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s, allow[128];
	const char *method;
	route_match m;
	router_result res;
	if (size < 1)
		return 0;
	method = methods[data[0] & 7];
	s = malloc(size);
	if (!s)
		abort();
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if (data[0] & 0x80) {
		if (method[0] >= 'A' && method[0] <= 'Z')
			pattern_roundtrip(method, s);
	} else {
		res = router_match(fixed_router(), method, s, &m, allow, sizeof allow);
		check_match(res, &m, allow);
		route_match_free(&m);
	}
	free(s);
	return 0;
}
