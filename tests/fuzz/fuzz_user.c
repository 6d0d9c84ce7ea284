/* libFuzzer: what user.so reads from clients (plugins/user/user_logic.c):
 * the name, email and password of POST /users, and the role lists it keeps.
 * The first input byte picks a mode; the rest is the text:
 *   0: an email address;
 *   1: a name;
 *   2: raw bytes (NULs included) counted as UTF-8, and as a password;
 *   3: "LIST\nROLE", a stored role list and a role to look for.
 * Checked: an accepted email is its own normal form, lowercase, plain and
 * short enough, and one notifications.so can send to (the welcome email of
 * USER_CREATED must never fail on an address user.so took); an accepted
 * name is a trimmed, non-empty slice of the input of at most 200 characters
 * of valid UTF-8 with no control characters; the code point count, and the
 * host's UTF-8 check (json_utf8_error), agree with a decoder written from
 * RFC 3629's table of well-formed sequences; a
 * role list says it has exactly the roles it splits into. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_modes.h"
#include "json.h"
#include "../../plugins/notifications/notif_buf.c"
#include "../../plugins/notifications/notif_mail.c"
#include "../../plugins/user/user_logic.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 3629 section 4: the well-formed byte sequences, as ranges. Returns the
 * length of the sequence at s, or 0; *cp its code point. */
static size_t rfc3629_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
	static const struct {
		unsigned char lo[4], hi[4];
		size_t len;
	} rows[] = {
	    {{0x00}, {0x7f}, 1},
	    {{0xc2, 0x80}, {0xdf, 0xbf}, 2},
	    {{0xe0, 0xa0, 0x80}, {0xe0, 0xbf, 0xbf}, 3},
	    {{0xe1, 0x80, 0x80}, {0xec, 0xbf, 0xbf}, 3},
	    {{0xed, 0x80, 0x80}, {0xed, 0x9f, 0xbf}, 3},
	    {{0xee, 0x80, 0x80}, {0xef, 0xbf, 0xbf}, 3},
	    {{0xf0, 0x90, 0x80, 0x80}, {0xf0, 0xbf, 0xbf, 0xbf}, 4},
	    {{0xf1, 0x80, 0x80, 0x80}, {0xf3, 0xbf, 0xbf, 0xbf}, 4},
	    {{0xf4, 0x80, 0x80, 0x80}, {0xf4, 0x8f, 0xbf, 0xbf}, 4},
	};
	for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
		size_t i, len = rows[r].len;
		if (len > n)
			continue;
		for (i = 0; i < len && s[i] >= rows[r].lo[i] && s[i] <= rows[r].hi[i]; i++)
			;
		if (i < len)
			continue;
		*cp = len == 1 ? s[0] : (uint32_t)(s[0] & (0xff >> (len + 1)));
		for (i = 1; i < len; i++)
			*cp = *cp << 6 | (s[i] & 0x3f);
		return len;
	}
	return 0;
}

/* Code points in s[0..n), or -1; *control: whether one is C0, DEL or C1. */
static long ref_chars(const unsigned char *s, size_t n, int *control)
{
	long count = 0;
	*control = 0;
	while (n) {
		uint32_t cp;
		size_t len = rfc3629_seq(s, n, &cp);
		if (!len)
			return -1;
		*control |= cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
		s += len;
		n -= len;
		count++;
	}
	return count;
}

static int ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void fuzz_email(const char *in)
{
	char out[USER_EMAIL_MAX + 1], again[USER_EMAIL_MAX + 1];
	const char *why = NULL, *at;

	if (user_email_normalize(in, out, &why) != 0) {
		CHECK(why && *why);
		return;
	}
	CHECK(strlen(out) >= 3 && strlen(out) <= USER_EMAIL_MAX);
	for (const char *p = out; *p; p++)
		CHECK(*p > ' ' && *p < 0x7f && !(*p >= 'A' && *p <= 'Z'));
	at = strchr(out, '@');
	CHECK(at && at > out && !strchr(at + 1, '@') && strchr(at + 1, '.'));
	CHECK(user_email_normalize(out, again, &why) == 0 && !strcmp(again, out));
	CHECK(notif_addr_valid(out));
}

static void fuzz_name(const char *in)
{
	const char *start = NULL, *why = NULL;
	size_t len = 0, n = strlen(in);
	int control;
	long chars;

	if (user_name_check(in, &start, &len, &why) != 0) {
		CHECK(why && *why);
		return;
	}
	CHECK(start >= in && len > 0 && start + len <= in + n);
	CHECK(!ws(start[0]) && !ws(start[len - 1]));
	for (const char *p = in; p < start; p++)
		CHECK(ws(*p));
	for (const char *p = start + len; *p; p++)
		CHECK(ws(*p));
	chars = ref_chars((const unsigned char *)start, len, &control);
	CHECK(chars >= 1 && chars <= USER_NAME_MAX_CHARS && !control);
}

static void fuzz_utf8(const char *bytes, size_t n)
{
	int control;
	long want = ref_chars((const unsigned char *)bytes, n, &control);
	size_t zlen = strnlen(bytes, n);
	const char *why = NULL;

	CHECK(user_utf8_chars(bytes, n) == want);
	/* the host's check of bodies and published data agrees, and says where */
	{
		long at = json_utf8_error(bytes, n);
		size_t ok = 0;
		uint32_t cp;
		for (size_t len; ok < n && (len = rfc3629_seq((const unsigned char *)bytes + ok,
		                                              n - ok, &cp)) != 0;)
			ok += len;
		CHECK(want < 0 ? at == (long)ok : at == -1);
	}
	/* A password is read up to its first NUL, as a C string. */
	want = ref_chars((const unsigned char *)bytes, zlen, &control);
	for (long min = 0; min <= 3; min++) {
		int ok = zlen <= USER_PASSWORD_MAX_BYTES && want >= min;
		CHECK((user_password_check(bytes, min, &why) == 0) == ok);
	}
}

static void fuzz_roles(char *text)
{
	char roles[USER_ROLES_MAX][USER_ROLE_LEN];
	char *role = strchr(text, '\n');
	size_t n;

	if (role)
		*role++ = '\0';
	n = user_roles_split(text, roles, USER_ROLES_MAX);
	CHECK(n <= USER_ROLES_MAX);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(roles[i]);
		CHECK(len > 0 && len < USER_ROLE_LEN && !strchr(roles[i], ','));
		/* a role kept whole is found in the list it came from */
		if (len < USER_ROLE_LEN - 1)
			CHECK(user_roles_has(text, roles[i]));
	}
	if (role) {
		int has = user_roles_has(text, role);
		if (strchr(role, ',') || !*role)
			CHECK(!has);
		/* Within the split's bounds, "has" is "among the split roles". */
		if (!strchr(role, ',') && strlen(role) < USER_ROLE_LEN - 1 && n < USER_ROLES_MAX) {
			int found = 0;
			for (size_t i = 0; i < n; i++)
				found |= !strcmp(roles[i], role);
			CHECK(has == found);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *text = fuzz_rest(data, size, &len);

	if (!text)
		return 0;
	switch (data[0] % 4) {
	case 0:
		fuzz_email(text);
		break;
	case 1:
		fuzz_name(text);
		break;
	case 2:
		fuzz_utf8(text, len);
		break;
	default:
		fuzz_roles(text);
	}
	free(text);
	return 0;
}
