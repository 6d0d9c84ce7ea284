/* See topics.h. */
#include "topics.h"

#include <string.h>

int topics_name_ok(const char *t)
{
	size_t n = t ? strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
	             : 0;

	return n > 0 && n <= TOPICS_NAME_MAX && t[n] == '\0' && strcmp(t, ".") && strcmp(t, "..");
}

size_t topics_same_before(const char *const *t, size_t i)
{
	for (size_t j = 0; t[i] && j < i; j++)
		if (t[j] && !strcmp(t[j], t[i]))
			return j;
	return i;
}
