/* libFuzzer: the rest of the untrusted text notifications.so handles.
 * The first input byte picks a mode; the rest is:
 *   0: an SMTP server's reply (notif_smtp_reply_clean, as notif_smtp.c
 *      calls it on what libcurl saw, at most 512 bytes), cleaned into
 *      buffers of several sizes. Checked: the result is terminated inside
 *      the buffer, printable ASCII only (it goes into a log line and an
 *      error), and holds no '@' (addresses are replaced);
 *   1: "TEMPLATE\0VALUE": a mail template rendered (notif_render) with one
 *      variable set to VALUE (text a client sent) and one unset, plain and
 *      HTML-escaped, and checked at load time (notif_template_check).
 *      Checked: the length given is the string's; with an empty value the
 *      result is never longer than the template; the HTML rendering holds
 *      no '<' or '"' the template did not have; a name said unknown is one
 *      of the template's text, terminated and bounded;
 *   2: a configured sender, [notifications] from ("Name <addr>" or an
 *      address: notif_mailbox_parse), into buffers of several sizes.
 *      Checked: one taken gives an address notif_addr_valid takes, that
 *      fits its buffer whole and is the input's text, and a terminated
 *      name; the From header built of them is one header (CRLF only at its
 *      line ends, folded lines starting with a blank);
 *   3: an smtp_url (notif_smtp_url_check), and the checks made of one it
 *      takes (notif_smtp_url_in_clear, notif_url_has_user). Checked: one
 *      taken starts smtp:// or smtps:// and names a host; one refused says
 *      why, terminated in any buffer; and what it says never depends on
 *      the password (the text between the user's ':' and the last '@'):
 *      the same URL with its password's letters and digits changed is
 *      refused or taken alike, with the same words;
 *   first byte 0xF0 or above: "CE_TIME\0SEQ", a user update's ce_time and
 *      evhost_seq headers (notif_event_version, the host's rfc3339_parse).
 *      Checked: the version is terminated in its buffer; one made of
 *      ce_time has the fixed form (so strcmp orders versions), and reads
 *      back (its time part) as the same instant; one refused gives the
 *      version of the handling time given, as no ce_time does. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_modes.h"
#include "../../plugins/notifications/notif_buf.c"
#include "../../plugins/notifications/notif_mail.c"
#include "../../plugins/notifications/notif_template.c"
#include "../../plugins/notifications/notif_util.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reply_mode(const char *in, size_t n)
{
	static const size_t sizes[] = {1, 2, 9, 16, 300};
	char out[300];
	if (n > 512)
		n = 512;
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		size_t len;
		memset(out, 'X', sizeof out);
		notif_smtp_reply_clean(in, n, out, sizes[k]);
		len = strnlen(out, sizes[k]);
		CHECK(len < sizes[k]);
		for (size_t i = 0; i < len; i++)
			CHECK(out[i] >= 0x20 && out[i] < 0x7f && out[i] != '@');
	}
}

static size_t count(const char *s, size_t n, char c)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += s[i] == c;
	return k;
}

static int contains(const char *s, size_t n, const char *w, size_t wn)
{
	for (size_t i = 0; i + wn <= n; i++)
		if (!memcmp(s + i, w, wn))
			return 1;
	return 0;
}

static void template_mode(const char *tmpl, size_t len, const char *value)
{
	static const char *const names[] = {"name", "unset"};
	const notif_var vars[] = {{"name", value}, {"unset", NULL}};
	const notif_var empty[] = {{"name", ""}, {"unset", NULL}};
	char bad[8];
	size_t n;
	char *out;

	out = notif_render(tmpl, len, vars, 2, NOTIF_ESC_NONE, &n);
	if (out) {
		CHECK(strlen(out) == n);
		free(out);
	}
	out = notif_render(tmpl, len, vars, 2, NOTIF_ESC_HTML, &n);
	if (out) {
		CHECK(strlen(out) == n);
		CHECK(count(out, n, '<') <= count(tmpl, len, '<'));
		CHECK(count(out, n, '"') <= count(tmpl, len, '"'));
		free(out);
	}
	out = notif_render(tmpl, len, empty, 2, NOTIF_ESC_HTML, &n);
	if (out) {
		CHECK(n <= len);
		free(out);
	}
	memset(bad, 'X', sizeof bad);
	if (notif_template_check(tmpl, len, names, 2, bad, sizeof bad)) {
		size_t b = strnlen(bad, sizeof bad);
		CHECK(b < sizeof bad);
		CHECK(!b || contains(tmpl, len, bad, b));
	}
}

static void mailbox_mode(const char *in)
{
	static const size_t sizes[][2] = {{1, 1}, {2, 8}, {64, 16}, {256, NOTIF_ADDR_MAX + 1}};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		char name[256], addr[NOTIF_ADDR_MAX + 1];
		size_t nl = sizes[k][0], al = sizes[k][1];
		nbuf b;
		char *h;
		memset(name, 'X', sizeof name);
		memset(addr, 'X', sizeof addr);
		if (notif_mailbox_parse(in, name, nl, addr, al) != 0)
			continue;
		CHECK(strnlen(name, nl) < nl && strnlen(addr, al) < al);
		CHECK(notif_addr_valid(addr) && strstr(in, addr));
		nbuf_init(&b);
		notif_header_mailbox(&b, "From", name, addr);
		h = nbuf_take(&b, NULL);
		if (!h)
			continue;
		for (char *p = h; *p; p++) {
			if (*p == '\r')
				CHECK(p[1] == '\n' && (!p[2] || p[2] == ' ' || p[2] == '\t'));
			else if (*p == '\n')
				CHECK(p > h && p[-1] == '\r');
		}
		CHECK(strlen(h) >= 2 && !strcmp(h + strlen(h) - 2, "\r\n"));
		free(h);
	}
}

/* The password of `url`, as the check must not show it: [*from, *to) */
static int password_span(const char *url, size_t *from, size_t *to)
{
	const char *sep = strstr(url, "://"), *at = strrchr(url, '@'), *colon;
	if (!sep || !at || at < sep + 3)
		return 0;
	colon = memchr(sep + 3, ':', (size_t)(at - (sep + 3)));
	if (!colon || colon + 1 == at)
		return 0;
	*from = (size_t)(colon + 1 - url);
	*to = (size_t)(at - url);
	return 1;
}

static void smtp_url_mode(const char *url)
{
	static const size_t sizes[] = {1, 16, 512};
	char why[512], why2[512], host[256];
	size_t from, to;
	int rc = notif_smtp_url_check(url, why, sizeof why);
	if (rc == 0) {
		CHECK(!strncmp(url, "smtp://", 7) || !strncmp(url, "smtps://", 8));
		(void)notif_url_has_user(url);
		for (int tls = 0; tls < 2; tls++) {
			memset(host, 'X', sizeof host);
			(void)notif_smtp_url_in_clear(url, tls, host, sizeof host);
			CHECK(strnlen(host, sizeof host) < sizeof host);
			CHECK(tls || strncmp(url, "smtp://", 7) || host[0]); /* host: for smtp:// */
		}
	} else {
		CHECK(rc == -1 && why[0] && strnlen(why, sizeof why) < sizeof why);
		for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
			memset(why2, 'X', sizeof why2);
			CHECK(notif_smtp_url_check(url, why2, sizes[k]) == -1);
			CHECK(strnlen(why2, sizes[k]) < sizes[k]);
		}
	}
	if (password_span(url, &from, &to)) {
		char *other = strdup(url);
		int rc2;
		if (!other)
			return;
		for (size_t i = from; i < to; i++) {
			char c = other[i];
			if (c >= 'a' && c <= 'z')
				other[i] = (char)('a' + (c - 'a' + 7) % 26);
			else if (c >= 'A' && c <= 'Z')
				other[i] = (char)('A' + (c - 'A' + 7) % 26);
			else if (c >= '0' && c <= '9')
				other[i] = (char)('0' + (c - '0' + 7) % 10);
		}
		rc2 = notif_smtp_url_check(other, why2, sizeof why2);
		CHECK(rc2 == rc && (rc == 0 || !strcmp(why, why2)));
		free(other);
	}
}

static void version_mode(const char *ce_time, const char *seq)
{
	static const char now[] = "2026-12-05T15:00:00.000Z";
	char v[NOTIF_VERSION_LEN], again[NOTIF_VERSION_LEN];
	int64_t secs, secs2;
	long nanos, nanos2;
	memset(v, 'X', sizeof v);
	if (!notif_event_version(ce_time, seq, now, v)) {
		CHECK(strnlen(v, sizeof v) < sizeof v);
		CHECK(!notif_event_version(NULL, seq, now, again) && !strcmp(v, again));
		return;
	}
	/* YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ/ then 19 digits */
	CHECK(strlen(v) == 50 && v[29] == 'Z' && v[30] == '/' &&
	      strspn(v + 31, "0123456789") == 19);
	CHECK(rfc3339_parse(ce_time, &secs, &nanos) == 0);
	memcpy(again, v, 30);
	again[30] = '\0';
	CHECK(rfc3339_parse(again, &secs2, &nanos2) == 0 && secs2 == secs &&
	      nanos2 == nanos);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *text = fuzz_rest(data, size, &len);
	if (!text)
		return 0;
	if (data[0] >= 0xF0) {
		size_t tlen = strlen(text);
		version_mode(text, tlen < len ? text + tlen + 1 : NULL);
	} else if (data[0] % 4 == 2) {
		mailbox_mode(text);
	} else if (data[0] % 4 == 3) {
		smtp_url_mode(text);
	} else if (data[0] % 2 == 0) {
		reply_mode(text, len);
	} else {
		size_t tlen = strlen(text);
		const char *value = tlen < len ? text + tlen + 1 : "";
		template_mode(text, tlen, value);
	}
	free(text);
	return 0;
}
