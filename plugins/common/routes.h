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
 * first the host refuses (the host logs which and why), and returns that code;
 * EVH_OK when all are routed. */
int routes_register(evh_plugin *p, const routes_entry *table, size_t n, void *ud);

/* A plugin's routes written once, as a list macro TABLE(X) of entries
 * X(method, pattern, handler, flags, role): TABLE(ROUTES_DECLARED) NULL
 * makes the descriptor's declaration (ABI 1.12, EVH_PLUGIN_ROUTES), and
 * TABLE(ROUTES_ENTRY) the table routes_register takes, so that the two
 * cannot disagree. Flags and roles may name the registering function's
 * locals (they depend on the configuration): the declaration drops them. */
#define ROUTES_DECLARED(method, pattern, handler, flags, role) method " " pattern,
#define ROUTES_ENTRY(method, pattern, handler, flags, role) {method, pattern, handler, flags, role},
#endif
