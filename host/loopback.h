/* Whether a host name or address of a URL is this host's loopback:
 * "localhost", 127.0.0.0/8, ::1. Header-only: config.c (shared with
 * evhostctl) and httpc.c both ask. */
#ifndef EVHOST_LOOPBACK_H
#define EVHOST_LOOPBACK_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>

static inline int loopback_host(const char *name)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (!strcasecmp(name, "localhost"))
		return 1;
	if (inet_pton(AF_INET, name, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}
#endif
