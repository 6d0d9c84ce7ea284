/* [http] trusted_proxies: the reverse proxies whose X-Forwarded-For header
 * is believed, and the client address a request then has. */
#ifndef EVHOST_PROXY_H
#define EVHOST_PROXY_H
#include <stddef.h>
#include <stdint.h>

/* An address or a network: IPv4 or IPv6, with a prefix length. */
typedef struct proxy_net {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order; the first 4 bytes for IPv4 */
	int prefix;       /* 0-32 or 0-128 */
} proxy_net;

typedef struct proxy_list {
	proxy_net *v;
	size_t n;
} proxy_list;

/* Addresses and networks separated by commas or spaces ("127.0.0.1, ::1,
 * 10.0.0.0/8"). 0, or -1 with the reason (the entry, and why) in err, or
 * -2 out of memory (err says so); `out` is then empty. */
int proxy_list_parse(const char *text, proxy_list *out, char *err, size_t errlen);
void proxy_list_free(proxy_list *l);

/* Is `addr` (an address in text form) in one of l's networks? A name: no. */
int proxy_list_has(const proxy_list *l, const char *addr);

/* Is `addr` (an address in text form) the address, or in the network,
 * that `net` names ("10.0.0.7", "10.0.0.0/8", "fd00::/8")? A network
 * written with host bits set ("10.1.2.3/8") is the one with them cleared
 * (10.0.0.0/8), as curl and Go read no_proxy's; an entry that is not an
 * address or a network, or a name, is no. */
int proxy_net_has(const char *net, const char *addr);

/* Longest address text proxy_client_addr writes, with its NUL. */
#define PROXY_ADDR_LEN 46

/* The client's address: `peer` unless `peer` is in `l` and `xff` (the
 * request's X-Forwarded-For, or NULL) names hops before it. Then the
 * entries are taken from the right while the address reached is a trusted
 * proxy: the first one that is not, is the client (the proxies in front
 * add their peers to the right; what the client wrote on the left is not
 * believed). An entry that is not an address ends the walk at the last
 * trusted hop. The result is an address in its usual text form (never the
 * header's bytes), written into out (PROXY_ADDR_LEN). Returns 1 when it
 * came from the header, 0 when it is the peer. */
int proxy_client_addr(const proxy_list *l, const char *peer, const char *xff, char *out,
                      size_t n);

#endif
