/* A strcmp of the test program's own that counts its calls, for tests that
 * bound the work of a lookup without timing it: quadratic code shows as
 * N^2/2 comparisons where N log N was meant. Exported (tests/CMakeLists.txt
 * links the program with --export-dynamic-symbol=strcmp), it comes before
 * glibc's for the shared libraries too: cJSON's lookups by name
 * (cJSON_GetObjectItemCaseSensitive, cJSON_DeleteItemFromObjectCaseSensitive)
 * are counted with the code compiled in. Single-threaded programs only. */
#ifndef EVHOST_TEST_STRCMP_COUNT_H
#define EVHOST_TEST_STRCMP_COUNT_H
#include <stddef.h>

static size_t strcmp_calls;

__attribute__((visibility("default"))) int strcmp(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;

	strcmp_calls++;
	while (*x && *x == *y) {
		x++;
		y++;
	}
	return (*x > *y) - (*x < *y);
}

#endif
