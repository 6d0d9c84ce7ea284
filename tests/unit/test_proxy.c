/* [http] trusted_proxies and X-Forwarded-For (proxy.c): which entries the
 * list takes, and which address a request is said to come from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "proxy.h"

static proxy_list list(const char *text)
{
	proxy_list l;
	char err[256];
	if (proxy_list_parse(text, &l, err, sizeof err) != 0)
		fail_msg("'%s' refused: %s", text, err);
	return l;
}

static void refused(const char *text, const char *why)
{
	proxy_list l;
	char err[256] = "";
	assert_int_equal(proxy_list_parse(text, &l, err, sizeof err), -1);
	assert_int_equal(l.n, 0);
	if (!strstr(err, why))
		fail_msg("'%s': expected '%s' in '%s'", text, why, err);
}

static void test_list(void **state)
{
	proxy_list l = list("127.0.0.1, ::1\t10.0.0.0/8,,192.168.1.0/24 fd00::/8");
	(void)state;
	assert_int_equal(l.n, 5);
	proxy_list_free(&l);
	assert_null(l.v);
	l = list("0.0.0.0/0");
	assert_int_equal(l.n, 1);
	proxy_list_free(&l);

	refused("", "expected addresses");
	refused(" , ", "expected addresses");
	refused("localhost", "'localhost': not an IPv4 or IPv6 address");
	refused("10.0.0.1/8", "'10.0.0.1/8': has bits set after the first 8");
	refused("10.0.0.0/33", "the prefix length must be 0 to 32");
	refused("fd00::/129", "the prefix length must be 0 to 128");
	refused("10.0.0.0/", "the prefix length");
	refused("10.0.0.0/8x", "the prefix length");
	refused("::ffff:10.0.0.0/104", "write an IPv4 network in IPv4 notation");
	refused("127.0.0.1, 1.2.3", "'1.2.3': not an IPv4 or IPv6 address");
	refused("1111111111111111111111111111111111111111111111111111111111111111111111",
	        "not an address");
}

/* The address proxy_client_addr gives, and whether from the header. */
static void expect(const proxy_list *l, const char *peer, const char *xff, const char *want,
                   int from_header)
{
	char out[PROXY_ADDR_LEN];
	int got = proxy_client_addr(l, peer, xff, out, sizeof out);
	if (strcmp(out, want) || got != from_header)
		fail_msg("peer %s, X-Forwarded-For '%s': got %s (%d), want %s (%d)", peer,
		         xff ? xff : "(none)", out, got, want, from_header);
}

static void test_client_address(void **state)
{
	proxy_list l = list("127.0.0.1, 10.0.0.0/8, 2001:db8:1::/48");
	proxy_list none = {0};
	(void)state;
	/* No proxy trusted, or the peer is not one: the header is not read. */
	expect(&none, "127.0.0.1", "203.0.113.9", "127.0.0.1", 0);
	expect(&l, "198.51.100.2", "203.0.113.9", "198.51.100.2", 0);
	expect(&l, "127.0.0.1", NULL, "127.0.0.1", 0);
	/* One proxy: the entry it added. */
	expect(&l, "127.0.0.1", "203.0.113.9", "203.0.113.9", 1);
	expect(&l, "127.0.0.1", " 203.0.113.9 ", "203.0.113.9", 1);
	/* What the client wrote on the left is not believed: the first
	 * untrusted address from the right is the client. */
	expect(&l, "127.0.0.1", "6.6.6.6, 203.0.113.9", "203.0.113.9", 1);
	expect(&l, "127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3", "203.0.113.9", 1);
	/* All trusted: the leftmost. */
	expect(&l, "127.0.0.1", "10.0.0.5, 10.0.0.6", "10.0.0.5", 1);
	/* IPv6, ports, an IPv4-mapped peer. */
	expect(&l, "127.0.0.1", "2001:db8:2::7", "2001:db8:2::7", 1);
	expect(&l, "127.0.0.1", "[2001:db8:2::7]:443, 2001:db8:1::5", "2001:db8:2::7", 1);
	expect(&l, "127.0.0.1", "203.0.113.9:4711", "203.0.113.9", 1);
	expect(&l, "::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9", 1);
	expect(&l, "::ffff:198.51.100.2", "203.0.113.9", "::ffff:198.51.100.2", 0);
	/* IPv4 written as IPv6 in the header (a proxy on both families): taken
	 * whole, not cut at its first colon as if that began a port. */
	expect(&l, "127.0.0.1", "::ffff:203.0.113.9", "203.0.113.9", 1);
	expect(&l, "127.0.0.1", "::ffff:203.0.113.9, ::ffff:10.0.0.5", "203.0.113.9", 1);
	expect(&l, "127.0.0.1", "64:ff9b::203.0.113.9", "64:ff9b::cb00:7109", 1);
	expect(&l, "127.0.0.1", "[::ffff:203.0.113.9]:80", "203.0.113.9", 1);
	/* Normalised: never the header's own bytes. */
	expect(&l, "127.0.0.1", "2001:DB8:0:0::7", "2001:db8::7", 1);
	/* An entry that is not an address ends the walk at the last trusted
	 * hop; an empty one too. */
	expect(&l, "127.0.0.1", "203.0.113.9, <script>", "127.0.0.1", 0);
	expect(&l, "127.0.0.1", "<script>, 10.0.0.5", "10.0.0.5", 1);
	expect(&l, "127.0.0.1", "203.0.113.9,", "127.0.0.1", 0);
	expect(&l, "127.0.0.1", "", "127.0.0.1", 0);
	expect(&l, "127.0.0.1", "[2001:db8::1", "127.0.0.1", 0);
	proxy_list_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_list),
	    cmocka_unit_test(test_client_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
