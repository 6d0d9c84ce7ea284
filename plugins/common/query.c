/* See query.h. */
#include "query.h"

#include <ctype.h>

int query_escapes_ok(const char *qs)
{
	for (const char *p = qs; p && *p; p++) {
		if (*p != '%')
			continue;
		if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]) ||
		    (p[1] == '0' && p[2] == '0'))
			return 0;
		p += 2;
	}
	return 1;
}
