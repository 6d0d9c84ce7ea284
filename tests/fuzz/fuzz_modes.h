/* For the fuzzers: properties checked, inputs whose first byte picks what
 * the rest is, and inputs read a field at a time. */
#ifndef EVH_FUZZ_MODES_H
#define EVH_FUZZ_MODES_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Inputs read a field at a time (fuzz_dlq, fuzz_kafka_event: a Kafka
 * message's key, value and headers): one length byte, then that many
 * bytes, fewer when the input ends; length FUZZ_NULL: NULL, no bytes. */
#define FUZZ_NULL 255

typedef struct fuzz_in {
	const uint8_t *p;
	size_t n;
} fuzz_in;

/* The next field: its bytes (a copy, NUL-terminated) and *len, or NULL
 * for a NULL field or none left (*len 0). Aborts out of memory. */
static inline char *fuzz_field(fuzz_in *in, size_t *len)
{
	size_t n;
	char *out;
	*len = 0;
	if (!in->n)
		return NULL;
	n = in->p[0];
	in->p++, in->n--;
	if (n == FUZZ_NULL)
		return NULL;
	if (n > in->n)
		n = in->n;
	if (!(out = malloc(n + 1)))
		abort();
	memcpy(out, in->p, n);
	out[n] = '\0';
	in->p += n, in->n -= n;
	*len = n;
	return out;
}
/* A name of the fuzzer's own in the temporary directory ($TMPDIR, else
 * /tmp), made unique: a directory (mkdtemp) or, with `file`, a file made
 * empty (mkstemp), its path into out[cap]. Aborts when none can be made:
 * the fuzzer could check nothing. */
static inline void fuzz_temp(char *out, size_t cap, const char *name, int file)
{
	const char *tmp = getenv("TMPDIR");
	int fd;
	if ((size_t)snprintf(out, cap, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", name) >= cap)
		abort();
	if (!file) {
		if (!mkdtemp(out))
			abort();
		return;
	}
	if ((fd = mkstemp(out)) < 0)
		abort();
	close(fd);
}

#endif
