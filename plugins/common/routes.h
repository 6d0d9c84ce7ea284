/* Route tables shared by the user and crud plugins: each registers its
 * routes from a static table with this, over the SDK's evh_http_route_ex. */
#ifndef EVH_PLUGINS_ROUTES_H
#define EVH_PLUGINS_ROUTES_H
#include <stddef.h>
#include <stdint.h>
#include <evhost/evhost.h>

typedef struct routes_entry {
	const char *method, *pattern;
	evh_http_handler handler;
	uint32_t flags; /* EVH_ROUTE_* */
	const char *role; /* with EVH_ROUTE_AUTH: the role a token needs, or NULL */
} routes_entry;

/* Register the n routes of `table`, each with user data `ud`. Stops at the
 * first the host refuses, logs which and why, and returns that code;
 * EVH_OK when all are routed. */
int routes_register(evh_plugin *p, const routes_entry *table, size_t n, void *ud);
#endif
