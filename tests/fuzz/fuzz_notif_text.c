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
 *      of the template's text, terminated and bounded. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *text = fuzz_rest(data, size, &len);
	if (!text)
		return 0;
	if (data[0] % 2 == 0) {
		reply_mode(text, len);
	} else {
		size_t tlen = strlen(text);
		const char *value = tlen < len ? text + tlen + 1 : "";
		template_mode(text, tlen, value);
	}
	free(text);
	return 0;
}
