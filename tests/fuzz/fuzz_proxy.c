/* libFuzzer: [http] trusted_proxies lists and X-Forwarded-For headers
 * (proxy.c). The input is "LIST\nHEADER". Checks what callers rely on: a
 * list is taken whole or refused empty; the client address is the peer
 * unless it came from the header, and then it is an address in text form
 * (never the header's bytes) that is not a trusted proxy, or the leftmost
 * entry. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_address(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *xff, err[256], out[PROXY_ADDR_LEN];
	static const char *const peers[] = {"127.0.0.1", "::1", "10.1.2.3", "::ffff:127.0.0.1",
	                                    "198.51.100.2"};
	proxy_list l;
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	xff = strchr(text, '\n');
	if (xff)
		*xff++ = '\0';
	if (proxy_list_parse(text, &l, err, sizeof err) != 0) {
		if (l.n || l.v || !err[0])
			__builtin_trap();
		/* Refused lists trust nobody: the header is never read. */
	} else if (!l.n) {
		__builtin_trap();
	}
	for (size_t i = 0; i < sizeof peers / sizeof peers[0]; i++) {
		int from = proxy_client_addr(&l, peers[i], xff, out, sizeof out);
		if (!from && strcmp(out, peers[i]))
			__builtin_trap();
		if (from && (!xff || !is_address(out)))
			__builtin_trap();
	}
	proxy_list_free(&l);
	free(text);
	return 0;
}
