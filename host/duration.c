#include "duration.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int duration_parse_ms(const char *v, int64_t *ms)
{
	char *end = NULL;
	long long n = 0;
	int64_t mult;

	errno = 0;
	if (isdigit((unsigned char)*v))
		n = strtoll(v, &end, 10);
	if (!end || errno)
		return -1;
	/* "ms" too, for every duration key (the range is each key's): "2000ms"
	 * for a stop_timeout was refused where "500ms" for keep_alive_timeout
	 * was taken. */
	if (!strcmp(end, "ms")) {
		*ms = n;
		return 0;
	}
	switch (*end) {
	case '\0':
	case 's': mult = 1000; break;
	case 'm': mult = 60000; break;
	case 'h': mult = 3600000; break;
	case 'd': mult = 86400000; break;
	default: return -1;
	}
	if ((*end && end[1]) || n > INT64_MAX / mult)
		return -1;
	*ms = n * mult;
	return 0;
}
