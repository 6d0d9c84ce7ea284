/* libFuzzer: an HTTP server's answer as evhostd reads it (httpc.c,
 * httpc_parse_answer: the JWKS fetcher's GETs). Checks what callers rely
 * on: a parsed answer has a three-digit status and a body inside the buffer
 * (a chunked body decoded in place, never longer than what came); a refused
 * one says why; the Location kept is a C string. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), err[256];
	httpc_answer a;
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	err[0] = '\0';
	if (httpc_parse_answer(buf, size, &a, err, sizeof err) == 0) {
		if (a.status < 100 || a.status > 999 || !a.body || a.body < buf ||
		    a.body_len > size || a.body + a.body_len > buf + size)
			__builtin_trap();
	} else if (!err[0]) {
		__builtin_trap();
	}
	if (strnlen(a.location, sizeof a.location) == sizeof a.location)
		__builtin_trap();
	free(buf);
	return 0;
}
