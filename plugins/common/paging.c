/* See paging.h. */
#include "paging.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#define SEQ_DIGITS_MAX 18 /* keeps the value below INT64_MAX without overflow checks */

int paging_cursor_encode(int64_t seq, char *out, size_t outlen)
{
	char digits[24];
	int n = snprintf(digits, sizeof digits, "%lld", (long long)seq);
	size_t need = sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

	if (seq <= 0 || outlen < need)
		return -1;
	sodium_bin2base64(out, outlen, (const unsigned char *)digits, (size_t)n,
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return 0;
}

int paging_cursor_decode(const char *cursor, int64_t *seq)
{
	unsigned char digits[SEQ_DIGITS_MAX + 1];
	size_t n, i;
	int64_t v = 0;

	if (!cursor || !*cursor || strlen(cursor) >= PAGING_CURSOR_MAX)
		return -1;
	if (sodium_base642bin(digits, sizeof digits, cursor, strlen(cursor), NULL, &n, NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return -1;
	if (n == 0 || n > SEQ_DIGITS_MAX || digits[0] == '0')
		return -1;
	for (i = 0; i < n; i++) {
		if (digits[i] < '0' || digits[i] > '9')
			return -1;
		v = v * 10 + (digits[i] - '0');
	}
	*seq = v;
	return 0;
}

int paging_limit_parse(const char *s, int dflt, int max, int *out)
{
	long v = 0;
	size_t i;

	if (!s) {
		*out = dflt;
		return 0;
	}
	if (!*s || strlen(s) > 6)
		return -1;
	for (i = 0; s[i]; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > max)
		return -1;
	*out = (int)v;
	return 0;
}
