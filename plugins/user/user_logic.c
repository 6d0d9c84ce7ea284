/* See user_logic.h. */
#include "user_logic.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int reject(const char **why, const char *msg)
{
	*why = msg;
	return -1;
}

/* RFC 5322 atext: the characters of an unquoted local part besides dots. */
static int is_atext(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+/=?^_`{|}~-", c));
}

static int local_part_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > USER_EMAIL_LOCAL_MAX || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] == '.' && s[i + 1] == '.')
			return 0;
		if (s[i] != '.' && !is_atext((unsigned char)s[i]))
			return 0;
	}
	return 1;
}

/* One DNS label: 1..63 of [a-z0-9-], no hyphen at either end. */
static int label_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return 0;
	return 1;
}

static int domain_ok(const char *s)
{
	const char *label = s, *dot;
	size_t labels = 0, n = 0, i, digits = 0;

	for (;;) {
		dot = strchr(label, '.');
		n = dot ? (size_t)(dot - label) : strlen(label);
		if (!label_ok(label, n))
			return 0;
		labels++;
		if (!dot)
			break;
		label = dot + 1;
	}
	for (i = 0; i < n; i++)
		digits += isdigit((unsigned char)label[i]) != 0;
	/* label is the top-level one: "example.123" is an address, not a domain */
	return labels >= 2 && n >= 2 && digits < n;
}

int user_email_normalize(const char *in, char out[USER_EMAIL_MAX + 1], const char **why)
{
	const char *end, *at;
	size_t n, i;

	while (is_ws(*in))
		in++;
	end = in + strlen(in);
	while (end > in && is_ws(end[-1]))
		end--;
	n = (size_t)(end - in);
	if (n == 0)
		return reject(why, "email must not be empty");
	if (n > USER_EMAIL_MAX)
		return reject(why, "email must be at most 254 characters");
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c <= ' ' || c >= 0x7f)
			return reject(why, "email must be plain ASCII without spaces");
		out[i] = (char)tolower(c);
	}
	out[n] = '\0';
	at = strchr(out, '@');
	if (!at || strchr(at + 1, '@'))
		return reject(why, "email must have the form local@domain.tld");
	if (!local_part_ok(out, (size_t)(at - out)))
		return reject(why, "email has an invalid part before the '@'");
	if (!domain_ok(at + 1))
		return reject(why, "email has an invalid domain (expected domain.tld)");
	return 0;
}

/* Length of the UTF-8 sequence at s (n bytes left) and its code point, or 0
 * when malformed. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len, i;
	uint32_t v;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, v = s[0] & 0x1fu;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, v = s[0] & 0x0fu;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, v = s[0] & 0x07u;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3fu);
	}
	if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

long user_utf8_chars(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	long count = 0;
	uint32_t cp;

	while (n) {
		size_t len = utf8_decode(p, n, &cp);
		if (!len)
			return -1;
		p += len;
		n -= len;
		count++;
	}
	return count;
}

static int has_control(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	uint32_t cp;

	while (n) {
		size_t len = utf8_decode(p, n, &cp);
		if (!len || cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
			return 1;
		p += len;
		n -= len;
	}
	return 0;
}

int user_name_check(const char *in, const char **start, size_t *len, const char **why)
{
	const char *end;
	size_t n;
	long chars;

	while (is_ws(*in))
		in++;
	end = in + strlen(in);
	while (end > in && is_ws(end[-1]))
		end--;
	n = (size_t)(end - in);
	if (n == 0)
		return reject(why, "name must not be empty");
	chars = user_utf8_chars(in, n);
	if (chars < 0)
		return reject(why, "name must be valid UTF-8");
	if (chars > USER_NAME_MAX_CHARS)
		return reject(why, "name must be at most 200 characters");
	if (has_control(in, n))
		return reject(why, "name must not contain control characters");
	*start = in;
	*len = n;
	return 0;
}

int user_password_check(const char *pw, long min_chars, const char **why)
{
	size_t n = strlen(pw);
	long chars;

	if (n > USER_PASSWORD_MAX_BYTES)
		return reject(why, "password must be at most 1024 bytes");
	chars = user_utf8_chars(pw, n);
	if (chars < 0)
		return reject(why, "password must be valid UTF-8");
	if (chars < min_chars)
		return reject(why, "password is shorter than the minimum length");
	return 0;
}

/* A decimal number with an optional k/M/G suffix (x1024); -1 when malformed
 * or beyond what an unsigned long long holds. */
static int parse_scaled(const char *s, unsigned long long *out)
{
	unsigned long long v = 0, mul = 1;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (~0ULL - 9) / 10)
			return -1;
		v = v * 10 + (unsigned long long)(*p - '0');
	}
	if (*p == 'k' || *p == 'K')
		mul = 1024ULL, p++;
	else if (*p == 'M')
		mul = 1024ULL * 1024, p++;
	else if (*p == 'G')
		mul = 1024ULL * 1024 * 1024, p++;
	if (*p || v > ~0ULL / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int user_argon2_opslimit(const char *s, unsigned long long *out, const char **why)
{
	unsigned long long v;

	if (!s || !strcmp(s, "interactive"))
		v = crypto_pwhash_OPSLIMIT_INTERACTIVE;
	else if (!strcmp(s, "min"))
		v = crypto_pwhash_OPSLIMIT_MIN;
	else if (!strcmp(s, "moderate"))
		v = crypto_pwhash_OPSLIMIT_MODERATE;
	else if (!strcmp(s, "sensitive"))
		v = crypto_pwhash_OPSLIMIT_SENSITIVE;
	else if (parse_scaled(s, &v) != 0)
		return reject(why, "argon2_opslimit: expected min, interactive, moderate, sensitive "
		                 "or a number");
	if (v < crypto_pwhash_OPSLIMIT_MIN || v > crypto_pwhash_OPSLIMIT_MAX)
		return reject(why, "argon2_opslimit: outside libsodium's bounds (1..4294967295)");
	*out = v;
	return 0;
}

int user_argon2_memlimit(const char *s, size_t *out, const char **why)
{
	unsigned long long v;

	if (!s || !strcmp(s, "interactive"))
		v = crypto_pwhash_MEMLIMIT_INTERACTIVE;
	else if (!strcmp(s, "min"))
		v = crypto_pwhash_MEMLIMIT_MIN;
	else if (!strcmp(s, "moderate"))
		v = crypto_pwhash_MEMLIMIT_MODERATE;
	else if (!strcmp(s, "sensitive"))
		v = crypto_pwhash_MEMLIMIT_SENSITIVE;
	else if (parse_scaled(s, &v) != 0)
		return reject(why, "argon2_memlimit: expected min, interactive, moderate, sensitive "
		                 "or a size in bytes (k/M/G suffixes allowed)");
	if (v < crypto_pwhash_MEMLIMIT_MIN || v > crypto_pwhash_MEMLIMIT_MAX)
		return reject(why, "argon2_memlimit: outside libsodium's bounds (8k..4T)");
	*out = (size_t)v;
	return 0;
}

int user_hash_memory_fits(size_t memlimit, long long concurrency, unsigned long long phys,
                          char *why, size_t size)
{
	char each[32], all[32], have[32];
	unsigned long long n = (unsigned long long)concurrency, total;

	if (!phys || !memlimit || concurrency <= 0 || n <= phys / memlimit)
		return 0;
	total = n > ULLONG_MAX / memlimit ? ULLONG_MAX : n * memlimit;
	user_size_text(memlimit, each, sizeof each);
	user_size_text(total, all, sizeof all);
	user_size_text(phys, have, sizeof have);
	snprintf(why, size,
	         "%lld hashes at once of %s each (argon2_memlimit) may take %s, more than this "
	         "machine's memory (%s): lower hash_concurrency or argon2_memlimit",
	         concurrency, each, all, have);
	return -1;
}

long long user_hash_concurrency_default(long long cores, size_t memlimit,
                                        unsigned long long phys)
{
	unsigned long long fit;

	if (cores < 1)
		cores = 1;
	if (cores > USER_HASH_CONCURRENCY_MAX)
		cores = USER_HASH_CONCURRENCY_MAX;
	if (!phys || !memlimit)
		return cores;
	fit = phys / memlimit;
	if (fit < 1)
		return 1;
	return (unsigned long long)cores > fit ? (long long)fit : cores;
}

void user_size_text(unsigned long long bytes, char *out, size_t size)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	unsigned long long unit = 1;
	size_t u = 0;

	while (u + 1 < sizeof units / sizeof units[0] && bytes / unit >= 1024)
		unit *= 1024, u++;
	/* (bytes % unit) * 10 stays below 2^64: unit is at most 2^60 */
	if (bytes % unit == 0)
		snprintf(out, size, "%llu %s", bytes / unit, units[u]);
	else
		snprintf(out, size, "%llu.%llu %s", bytes / unit, (bytes % unit) * 10 / unit,
		         units[u]);
}

int user_argon2_memlimit_fits(const char *s, size_t memlimit, unsigned long long phys, char *why,
                              size_t size)
{
	char want[32], have[32];
	size_t n;

	if (!phys || memlimit <= phys)
		return 0;
	if (!s)
		s = "interactive";
	n = strlen(s);
	user_size_text(memlimit, want, sizeof want);
	user_size_text(phys, have, sizeof have);
	/* A preset or a count of bytes is said with its size too; 99G says its own. */
	if (n && strchr("kKMG", s[n - 1]))
		snprintf(why, size,
		         "%s is more than this machine's memory (%s): each password hash needs that "
		         "much",
		         s, have);
	else
		snprintf(why, size,
		         "%s (%s) is more than this machine's memory (%s): each password hash needs "
		         "that much",
		         s, want, have);
	return -1;
}

size_t user_roles_split(const char *list, char roles[][USER_ROLE_LEN], size_t max)
{
	size_t n = 0;

	while (list && *list && n < max) {
		size_t len = strcspn(list, ",");
		if (len) {
			size_t keep = len < USER_ROLE_LEN - 1 ? len : USER_ROLE_LEN - 1;
			memcpy(roles[n], list, keep);
			roles[n][keep] = '\0';
			n++;
		}
		list += len;
		if (*list == ',')
			list++;
	}
	return n;
}

int user_roles_has(const char *list, const char *role)
{
	size_t rl = strlen(role);

	if (!rl) /* empty items are skipped, as user_roles_split does */
		return 0;
	while (list && *list) {
		size_t len = strcspn(list, ",");
		if (len == rl && !memcmp(list, role, rl))
			return 1;
		list += len;
		if (*list == ',')
			list++;
	}
	return 0;
}
