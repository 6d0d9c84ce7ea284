/* See routes.h. */
#include "routes.h"

#include <string.h>

int routes_register(evh_plugin *p, const routes_entry *table, size_t n, void *ud)
{
	for (size_t i = 0; i < n; i++) {
		evh_route r;
		int rc;

		memset(&r, 0, sizeof r);
		r.struct_size = sizeof r;
		r.method = table[i].method;
		r.pattern = table[i].pattern;
		r.handler = table[i].handler;
		r.ud = ud;
		r.flags = table[i].flags;
		r.role = table[i].role;
		/* A refusal is said by the host (which route holds it, what is
		 * wrong with it), and is the reason quoted when init fails: a line
		 * of ours here became that reason instead, "invalid argument". */
		if ((rc = evh_http_route_ex(p, &r)) != EVH_OK)
			return rc;
	}
	return EVH_OK;
}
