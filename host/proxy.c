/* [http] trusted_proxies and X-Forwarded-For: see proxy.h. */
#include "proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define TOKEN_MAX 64 /* an address with a prefix or a port, with room to spare */

/* An address in text ("192.0.2.1", "2001:db8::1", an IPv4-mapped IPv6
 * address counting as its IPv4 one) into `a` with a full-length prefix. */
static int parse_addr(const char *text, proxy_net *a)
{
	memset(a, 0, sizeof *a);
	if (inet_pton(AF_INET, text, a->addr) == 1) {
		a->family = AF_INET;
		a->prefix = 32;
		return 0;
	}
	if (inet_pton(AF_INET6, text, a->addr) != 1)
		return -1;
	a->family = AF_INET6;
	a->prefix = 128;
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (!memcmp(a->addr, mapped, sizeof mapped)) {
		memmove(a->addr, a->addr + 12, 4);
		memset(a->addr + 4, 0, 12);
		a->family = AF_INET;
		a->prefix = 32;
	}
	return 0;
}

/* Whether `a` lies in `net`. */
static int in_net(const proxy_net *net, const proxy_net *a)
{
	int full = net->prefix / 8, rest = net->prefix % 8;
	if (net->family != a->family || memcmp(net->addr, a->addr, (size_t)full))
		return 0;
	if (!rest)
		return 1;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (a->addr[full] & mask);
}

/* One entry of the list: an address, or an address "/" a prefix length
 * whose host bits are zero; with `loose`, host bits set are cleared. */
static int parse_net(const char *tok, proxy_net *out, int loose, char *err, size_t errlen)
{
	char text[TOKEN_MAX];
	const char *slash = strchr(tok, '/');
	size_t len = slash ? (size_t)(slash - tok) : strlen(tok);
	if (len >= sizeof text) {
		snprintf(err, errlen, "'%.*s...': not an address", 20, tok);
		return -1;
	}
	memcpy(text, tok, len);
	text[len] = '\0';
	if (parse_addr(text, out) != 0) {
		snprintf(err, errlen, "'%s': not an IPv4 or IPv6 address", tok);
		return -1;
	}
	if (slash) {
		char *end = NULL;
		long p = strtol(slash + 1, &end, 10);
		int max = out->family == AF_INET ? 32 : 128;
		proxy_net masked;
		if (out->family == AF_INET && strchr(text, ':')) {
			snprintf(err, errlen, "'%s': write an IPv4 network in IPv4 notation", tok);
			return -1;
		}
		if (!slash[1] || !end || *end || p < 0 || p > max) {
			snprintf(err, errlen, "'%s': the prefix length must be 0 to %d", tok, max);
			return -1;
		}
		masked = *out;
		masked.prefix = (int)p;
		memset(masked.addr, 0, sizeof masked.addr);
		for (int i = 0; i < (int)p; i++)
			masked.addr[i / 8] |= (uint8_t)(out->addr[i / 8] & (0x80 >> (i % 8)));
		if (loose)
			*out = masked;
		else if (memcmp(masked.addr, out->addr, sizeof out->addr)) {
			snprintf(err, errlen, "'%s': has bits set after the first %ld (a network is "
			                      "written with them zero, e.g. 10.0.0.0/8)", tok, p);
			return -1;
		}
		out->prefix = (int)p;
	}
	return 0;
}

int proxy_list_parse(const char *text, proxy_list *out, char *err, size_t errlen)
{
	const char *p = text;
	memset(out, 0, sizeof *out);
	while (p && *p) {
		char tok[TOKEN_MAX];
		size_t len;
		proxy_net net, *grown;
		p += strspn(p, ", \t");
		len = strcspn(p, ", \t");
		if (!len)
			break;
		if (len >= sizeof tok) {
			snprintf(err, errlen, "'%.*s...': not an address", 20, p);
			goto fail;
		}
		memcpy(tok, p, len);
		tok[len] = '\0';
		p += len;
		if (parse_net(tok, &net, 0, err, errlen) != 0)
			goto fail;
		grown = realloc(out->v, (out->n + 1) * sizeof *out->v);
		if (!grown) {
			snprintf(err, errlen, "out of memory");
			proxy_list_free(out);
			return -2;
		}
		out->v = grown;
		out->v[out->n++] = net;
	}
	if (!out->n) {
		snprintf(err, errlen, "expected addresses or networks, e.g. 127.0.0.1, ::1, 10.0.0.0/8");
		goto fail;
	}
	return 0;
fail:
	proxy_list_free(out);
	return -1;
}

void proxy_list_free(proxy_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int trusted(const proxy_list *l, const proxy_net *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (in_net(&l->v[i], a))
			return 1;
	return 0;
}

int proxy_list_has(const proxy_list *l, const char *addr)
{
	proxy_net a;
	return parse_addr(addr, &a) == 0 && trusted(l, &a);
}

int proxy_net_has(const char *net, const char *addr)
{
	proxy_net n, a;
	char err[128];
	return parse_net(net, &n, 1, err, sizeof err) == 0 && parse_addr(addr, &a) == 0 &&
	       in_net(&n, &a);
}

/* One X-Forwarded-For entry (spaces around it, maybe a port: "192.0.2.1:
 * 4711", "[2001:db8::1]:443") into `a`. An IPv4 address written as IPv6
 * ("::ffff:192.0.2.1", as proxies listening on both families write their
 * IPv4 clients) has more than one colon and no port. */
static int parse_hop(const char *p, size_t len, proxy_net *a)
{
	char text[TOKEN_MAX];
	while (len && (*p == ' ' || *p == '\t'))
		p++, len--;
	while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	if (len && *p == '[') { /* [IPv6]:port */
		const char *close = memchr(p, ']', len);
		if (!close)
			return -1;
		len = (size_t)(close - p - 1);
		p++;
	} else if (len && memchr(p, '.', len)) { /* IPv4, maybe with :port */
		const char *colon = memchr(p, ':', len);
		if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - p)))
			len = (size_t)(colon - p);
	}
	if (!len || len >= sizeof text)
		return -1;
	memcpy(text, p, len);
	text[len] = '\0';
	return parse_addr(text, a);
}

static void addr_text(const proxy_net *a, char *out, size_t n)
{
	if (!inet_ntop(a->family, a->addr, out, (socklen_t)n))
		snprintf(out, n, "?");
}

int proxy_client_addr(const proxy_list *l, const char *peer, const char *xff, char *out,
                      size_t n)
{
	proxy_net at;
	size_t end;
	int from_header = 0;
	snprintf(out, n, "%s", peer ? peer : "");
	if (!l || !l->n || !peer || !xff || parse_addr(peer, &at) != 0 || !trusted(l, &at))
		return 0;
	/* From the right: each entry is the peer of the hop after it. At most
	 * 64 hops, whatever the header's length. */
	end = strlen(xff);
	for (int hops = 0; hops < 64 && trusted(l, &at); hops++) {
		size_t start = end;
		proxy_net hop;
		while (start > 0 && xff[start - 1] != ',')
			start--;
		if (parse_hop(xff + start, end - start, &hop) != 0)
			break; /* not an address: the last trusted hop is what is known */
		at = hop;
		from_header = 1;
		if (start == 0)
			break;
		end = start - 1;
	}
	if (from_header)
		addr_text(&at, out, n);
	return from_header;
}
