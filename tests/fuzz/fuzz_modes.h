/* For fuzzers whose first input byte picks what the rest is. */
#ifndef EVH_FUZZ_MODES_H
#define EVH_FUZZ_MODES_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A failed property: libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* The input after its mode byte, NUL-terminated (NULs inside kept), or NULL
 * when there is no mode byte or no memory. *len: its length. */
static inline char *fuzz_rest(const uint8_t *data, size_t size, size_t *len)
{
	char *text = size ? malloc(size) : NULL;
	if (!text)
		return NULL;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	*len = size - 1;
	return text;
}
#endif
