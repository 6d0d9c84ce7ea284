/* libFuzzer: URLs as messages show them (redact_url), any C string. Checked
 * against an independent walk of the same rules (redact.h): the scheme, the
 * host, the port and the path come out unchanged, the userinfo as "***", and
 * each query parameter as NAME=*** or *** (empty ones empty), so that no byte
 * of a password or of a query value gets out; and, not relying on that walk,
 * that no non-empty value of the input's query stands verbatim after its
 * '=' in the output's query. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_modes.h"
#include "redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where the authority starts: after a "://" that ends the first part of the
 * URL (no '/', '?' or '#' before it), else at 0 ("kc:pw@host/p"). A "://"
 * further on is a path's or a query's (a redirect target in a value). */
static size_t authority_start(const char *u, size_t n)
{
	for (size_t i = 0; i + 2 < n; i++) {
		if (u[i] == '/' || u[i] == '?' || u[i] == '#')
			return 0;
		if (u[i] == ':' && u[i + 1] == '/' && u[i + 2] == '/')
			return i + 3;
	}
	return 0;
}

/* The redacted form, built index by index; *qfrom where the query is
 * looked for (past the authority, or past the userinfo a password cut
 * short ends). */
static char *expected(const char *u, size_t n, size_t *qfrom)
{
	/* Each parameter grows by at most 3 ("=" -> "=***", "" after "&" ->
	 * "": n + 1 parameters at most), the userinfo by 3 ("@h" -> "***@h"). */
	char *out = malloc(4 * n + 8);
	size_t o = 0, s = authority_start(u, n), a = s, at = n, q = n, i;
	if (!out)
		return NULL;
	while (a < n && u[a] != '/' && u[a] != '?' && u[a] != '#') {
		if (u[a] == '@')
			at = a;
		a++;
	}
	/* No '@' in the authority, but a ':' in it followed by more than a
	 * port's digits (not an IPv6 address's, in brackets): a password cut
	 * short by a '/', '?' or '#', ended by the text's last '@'. */
	if (at == n && s < a && u[s] != '[') {
		size_t colon = s, digits = 0;
		while (colon < a && u[colon] != ':')
			colon++;
		while (colon < a && colon + 1 + digits < a && u[colon + 1 + digits] >= '0' &&
		       u[colon + 1 + digits] <= '9')
			digits++;
		if (colon < a && colon + 1 + digits < a)
			for (i = a; i < n; i++)
				if (u[i] == '@')
					at = i;
	}
	*qfrom = at < n && at > a ? at : a;
	for (i = *qfrom; i < n; i++)
		if (u[i] == '?') {
			q = i;
			break;
		}
	memcpy(out, u, s);
	o = s;
	if (at < n) {
		memcpy(out + o, "***", 3);
		o += 3;
		i = at;
	} else {
		i = s;
	}
	memcpy(out + o, u + i, q - i);
	o += q - i;
	if (q < n) {
		out[o++] = '?';
		i = q + 1;
		for (;;) {
			size_t start = i, eq = n;
			while (i < n && u[i] != '&') {
				if (u[i] == '=' && eq == n)
					eq = i;
				i++;
			}
			if (eq < n) {
				memcpy(out + o, u + start, eq + 1 - start);
				o += eq + 1 - start;
			}
			if (eq < n || i > start) {
				memcpy(out + o, "***", 3);
				o += 3;
			}
			if (i >= n)
				break;
			out[o++] = '&';
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

/* Each non-empty value of the query uq (after the first '=' of a
 * parameter, up to '&') is not, verbatim and whole, the value of the same
 * parameter in got's query (which has as many parameters). */
static void check_values_hidden(const char *uq, const char *gq)
{
	while (uq && gq) {
		size_t ul = strcspn(uq, "&"), gl = strcspn(gq, "&");
		const char *ue = memchr(uq, '=', ul), *ge = memchr(gq, '=', gl);
		if (ue) {
			size_t vl = ul - (size_t)(ue + 1 - uq);
			CHECK(ge != NULL);
			size_t gvl = gl - (size_t)(ge + 1 - gq);
			if (vl && !(vl == 3 && memcmp(ue + 1, "***", 3) == 0))
				CHECK(!(gvl == vl && memcmp(ge + 1, ue + 1, vl) == 0));
		}
		uq = uq[ul] ? uq + ul + 1 : NULL;
		gq = gq[gl] ? gq + gl + 1 : NULL;
	}
	CHECK(!uq && !gq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *u, *got, *want;
	size_t qfrom = 0;
	if (memchr(data, '\0', size)) /* callers pass C strings */
		return 0;
	u = malloc(size + 1);
	if (!u)
		return 0;
	memcpy(u, data, size);
	u[size] = '\0';
	got = redact_url(u);
	want = expected(u, size, &qfrom);
	if (got && want) {
		size_t s = authority_start(u, size);
		const char *uq = strchr(u + qfrom, '?');
		CHECK(strcmp(got, want) == 0);
		/* The scheme verbatim at the front; the query's values hidden. */
		CHECK(strncmp(got, u, s) == 0);
		if (uq) {
			const char *gq = strchr(got + s, '?');
			CHECK(gq != NULL);
			check_values_hidden(uq + 1, gq + 1);
		}
	}
	free(want);
	free(got);
	free(u);
	return 0;
}
