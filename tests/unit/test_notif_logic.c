/* Pure logic of notifications.so: template rendering and escaping, RFC 5322
 * message building (headers, RFC 2047, quoted-printable, MIME), address
 * checks, paging cursors, the in-memory delivery state and Maildir
 * delivery. The plugin keeps these in SDK-free files, included here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc_faults.h"

#include "../../plugins/notifications/notif_buf.c"
#include "../../plugins/notifications/notif_maildir.c"
#include "../../plugins/notifications/notif_mail.c"
#include "../../plugins/notifications/notif_pending.c"
#include "../../plugins/notifications/notif_template.c"
#include "../../plugins/notifications/notif_util.c"

/* ------------------------------------------------------------ helpers */

static char *render(const char *tmpl, notif_escape esc)
{
	static const notif_var vars[] = {{"name", "Ada <Lovelace> & \"friends\" 'x'"},
	                                 {"email", "ada@example.com"},
	                                 {"id", "42"}};
	char *s = notif_render(tmpl, strlen(tmpl), vars, 3, esc, NULL);
	assert_non_null(s);
	return s;
}

/* Decode standard base64 via the url-safe decoder. */
static char *b64_decode(const char *s, size_t n, size_t *outlen)
{
	char *t = malloc(n + 1);
	unsigned char *out;

	assert_non_null(t);
	for (size_t i = 0; i < n; i++)
		t[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
	t[n] = '\0';
	out = notif_base64url_decode(t, outlen);
	free(t);
	assert_non_null(out);
	return (char *)out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Quoted-printable decoder (strict: uppercase hex), CRLF hard breaks to LF. */
static char *qp_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	size_t o = 0;

	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
			i += 2;
		} else if (s[i] == '=') {
			assert_true(i + 2 < n);
			assert_true(hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0);
			out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
			out[o++] = '\n';
			i++;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

static char *qp(const char *s)
{
	nbuf b;
	char *r;

	nbuf_init(&b);
	notif_qp_encode(&b, s, strlen(s));
	r = nbuf_take(&b, NULL);
	assert_non_null(r);
	return r;
}

/* Every line ends in CRLF (no bare CR or LF) and is at most `max` long. */
static void assert_crlf_lines(const char *s, size_t max)
{
	size_t col = 0;

	for (const char *p = s; *p; p++) {
		if (*p == '\r') {
			assert_int_equal(p[1], '\n');
			assert_true(col <= max);
			col = 0;
			p++;
			continue;
		}
		assert_int_not_equal(*p, '\n');
		col++;
	}
	assert_int_equal(col, 0);
}

/* Decode a header value made of RFC 2047 B words (folded), checking that
 * every word is complete UTF-8 on its own. */
static char *decode_words(const char *v)
{
	nbuf b;
	const char *p = v;

	nbuf_init(&b);
	while ((p = strstr(p, "=?UTF-8?B?")) != NULL) {
		const char *start = p + 10, *end = strstr(start, "?=");
		size_t n;
		char *d;

		assert_non_null(end);
		d = b64_decode(start, (size_t)(end - start), &n);
		assert_true(n > 0);
		assert_int_not_equal((unsigned char)d[0] & 0xC0, 0x80);
		nbuf_add(&b, d, n);
		free(d);
		p = end + 2;
	}
	return nbuf_take(&b, NULL);
}

/* The value of header `name` in `msg`, unfolded (CRLF SP removed). */
static char *header_value(const char *msg, const char *name)
{
	char key[64];
	const char *p, *end;
	nbuf b;

	snprintf(key, sizeof key, "\r\n%s: ", name);
	if (!strncmp(msg, key + 2, strlen(key) - 2))
		p = msg + strlen(key) - 2;
	else {
		p = strstr(msg, key);
		if (!p)
			return NULL;
		p += strlen(key);
	}
	nbuf_init(&b);
	for (;;) {
		end = strstr(p, "\r\n");
		assert_non_null(end);
		nbuf_add(&b, p, (size_t)(end - p));
		if (end[2] != ' ' && end[2] != '\t')
			break;
		p = end + 2;
	}
	return nbuf_take(&b, NULL);
}

/* ------------------------------------------------------------ templates */

static void test_render_substitutes(void **state)
{
	char *s = render("Welcome, {{name}}! id={{ id }} mail={{email}}", NOTIF_ESC_NONE);
	(void)state;
	assert_string_equal(s, "Welcome, Ada <Lovelace> & \"friends\" 'x'! id=42 "
	                       "mail=ada@example.com");
	free(s);
}

static void test_render_html_escapes_values_not_template(void **state)
{
	char *s = render("<p>{{name}}</p>", NOTIF_ESC_HTML);
	(void)state;
	assert_string_equal(s, "<p>Ada &lt;Lovelace&gt; &amp; &quot;friends&quot; &#39;x&#39;</p>");
	free(s);
}

static void test_render_edge_cases(void **state)
{
	char *s;
	(void)state;
	s = render("{{unknown}}|{{name|{{ {{id}}|}}|{{}}|{{id}}{{id}}", NOTIF_ESC_NONE);
	/* unknown → empty; unclosed and nested "{{" copied as written */
	assert_string_equal(s, "|{{name|{{ 42|}}||4242");
	free(s);
	s = render("", NOTIF_ESC_NONE);
	assert_string_equal(s, "");
	free(s);
	s = render("no placeholders at all {", NOTIF_ESC_HTML);
	assert_string_equal(s, "no placeholders at all {");
	free(s);
}

static void test_template_check(void **state)
{
	static const char *const names[] = {"name", "email", "id"};
	const char *ok = "Hi {{ name }} <{{email}}> {{id}}";
	const char *typo = "Hi {{name}} {{ nmae }}";
	char bad[64];
	(void)state;
	assert_int_equal(notif_template_check(ok, strlen(ok), names, 3, bad, sizeof bad), 0);
	assert_int_equal(notif_template_check(typo, strlen(typo), names, 3, bad, sizeof bad), 1);
	assert_string_equal(bad, "nmae");
}

/* ------------------------------------------------------------ addresses */

static void test_smtp_reply_clean(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"451 4.7.1 greylisted, try again later\r\n", "451 4.7.1 greylisted, try again later"},
	    /* a multi-line reply: its last line */
	    {"250-first\r\n250 last\r\n", "250 last"},
	    /* addresses are personal data: never said */
	    {"550 5.1.1 <bob@example.com>: Recipient address rejected\r\n",
	     "550 5.1.1 <address> Recipient address rejected"},
	    {"452 too many for x@y", "452 too many for <address>"},
	    /* control bytes and bytes past ASCII */
	    {"421 bye\x1b[31m\xc3\xa9\r\n", "421 bye?[31m??"},
	    {"\r\n", ""},
	    {"", ""},
	};
	char out[64], tiny[6];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		notif_smtp_reply_clean(cases[i].in, strlen(cases[i].in), out, sizeof out);
		if (strcmp(out, cases[i].want))
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, out, cases[i].want);
	}
	notif_smtp_reply_clean("451 4.7.1 greylisted", 20, tiny, sizeof tiny);
	assert_string_equal(tiny, "451 4");
	notif_smtp_reply_clean("550 a@b", 7, tiny, sizeof tiny);
	assert_string_equal(tiny, "550 <");
}

static void test_addr_valid(void **state)
{
	(void)state;
	assert_true(notif_addr_valid("ada@example.com"));
	assert_true(notif_addr_valid("a.b+tag@sub.example.org"));
	assert_true(notif_addr_valid("noreply@localhost"));
	assert_false(notif_addr_valid(NULL));
	assert_false(notif_addr_valid(""));
	assert_false(notif_addr_valid("no-at-sign"));
	assert_false(notif_addr_valid("@example.com"));
	assert_false(notif_addr_valid("ada@"));
	assert_false(notif_addr_valid("a@b@c"));
	assert_false(notif_addr_valid("ada @example.com"));
	assert_false(notif_addr_valid("ada@example.com\r\nBcc: evil@example.com"));
	assert_false(notif_addr_valid("<ada@example.com>"));
	assert_false(notif_addr_valid("ada@example..com"));
	assert_false(notif_addr_valid("ada@.example.com"));
	assert_false(notif_addr_valid("ada@example.com."));
	assert_false(notif_addr_valid(".a.@example.com"));
	assert_false(notif_addr_valid(".ada@example.com"));
	assert_false(notif_addr_valid("ada.@example.com"));
	assert_false(notif_addr_valid("a..da@example.com"));
	/* RFC 5322 atext, as the user plugin takes it */
	assert_true(notif_addr_valid("a!b%c#d$e&f'g*h/i=j?k^l_m`n{o|p}q~r-s@example.com"));
	assert_false(notif_addr_valid("\"q\"@example.com"));
	assert_false(notif_addr_valid("ad\xc3\xa4@example.com"));
}

static void test_mailbox_parse(void **state)
{
	char name[64], addr[NOTIF_ADDR_MAX + 1];
	(void)state;
	assert_int_equal(notif_mailbox_parse("evhost <noreply@localhost>", name, sizeof name, addr,
	                                     sizeof addr), 0);
	assert_string_equal(name, "evhost");
	assert_string_equal(addr, "noreply@localhost");
	assert_int_equal(notif_mailbox_parse("\"Ops, Team\" <ops@example.com> ", name, sizeof name,
	                                     addr, sizeof addr), 0);
	assert_string_equal(name, "Ops, Team");
	assert_string_equal(addr, "ops@example.com");
	assert_int_equal(notif_mailbox_parse(" ops@example.com ", name, sizeof name, addr,
	                                     sizeof addr), 0);
	assert_string_equal(name, "");
	assert_string_equal(addr, "ops@example.com");
	assert_int_equal(notif_mailbox_parse("<ops@example.com>", name, sizeof name, addr,
	                                     sizeof addr), 0);
	assert_string_equal(name, "");
	assert_int_equal(notif_mailbox_parse("Ops <ops@example.com", name, sizeof name, addr,
	                                     sizeof addr), -1);
	assert_int_equal(notif_mailbox_parse("Ops <not an address>", name, sizeof name, addr,
	                                     sizeof addr), -1);
	/* An address longer than NOTIF_ADDR_MAX is refused, not cut to one that
	 * would pass: 64 + "@" + 300 bytes, whose first 320 are valid. */
	{
		char longer[400], named[420];
		memset(longer, 'a', 64);
		longer[64] = '@';
		memset(longer + 65, 'b', 300);
		longer[365] = '\0';
		assert_int_equal(notif_mailbox_parse(longer, name, sizeof name, addr, sizeof addr),
		                 -1);
		snprintf(named, sizeof named, "Ops <%s>", longer);
		assert_int_equal(notif_mailbox_parse(named, name, sizeof name, addr, sizeof addr),
		                 -1);
	}
	/* A display name that does not fit is refused (-2), not cut: a cut could
	 * end inside a character. 63 bytes fit in name[64]; 64 do not. */
	{
		char named[100];
		snprintf(named, sizeof named, "%.*s <ops@example.com>", 63,
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
		assert_int_equal(notif_mailbox_parse(named, name, sizeof name, addr, sizeof addr), 0);
		assert_int_equal(strlen(name), 63);
		snprintf(named, sizeof named, "x%.*s <ops@example.com>", 63,
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
		         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
		assert_int_equal(notif_mailbox_parse(named, name, sizeof name, addr, sizeof addr), -2);
	}
}

/* ------------------------------------------------------------ encodings */

static void test_rfc5322_date(void **state)
{
	char d[40];
	(void)state;
	notif_rfc5322_date(0, d);
	assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 +0000");
	notif_rfc5322_date(1700000000, d);
	assert_string_equal(d, "Tue, 14 Nov 2023 22:13:20 +0000");
}

static void test_base64_vectors(void **state)
{
	static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
	                                  "Zm9vYmFy"};
	(void)state;
	for (size_t i = 0; i < 7; i++) {
		nbuf b;
		char *s;
		nbuf_init(&b);
		notif_base64(&b, (const unsigned char *)in[i], strlen(in[i]));
		s = nbuf_take(&b, NULL);
		assert_string_equal(s, out[i]);
		free(s);
	}
}

static void test_base64url_roundtrip_and_garbage(void **state)
{
	const unsigned char raw[] = {0xfb, 0xff, 0x00, 0x3e, 0x3f, 'a'};
	unsigned char *dec;
	size_t n;
	nbuf b;
	char *s;
	(void)state;
	nbuf_init(&b);
	notif_base64url(&b, raw, sizeof raw);
	s = nbuf_take(&b, NULL);
	assert_null(strpbrk(s, "+/="));
	dec = notif_base64url_decode(s, &n);
	assert_non_null(dec);
	assert_int_equal(n, sizeof raw);
	assert_memory_equal(dec, raw, sizeof raw);
	free(dec);
	free(s);
	assert_null(notif_base64url_decode("a", &n));
	assert_null(notif_base64url_decode("ab+/", &n));
	assert_null(notif_base64url_decode("ab c", &n));
}

static void test_qp_basic(void **state)
{
	char *s;
	(void)state;
	s = qp("a=b");
	assert_string_equal(s, "a=3Db\r\n");
	free(s);
	s = qp("trailing \nspace\t\r\nkept in middle");
	assert_string_equal(s, "trailing=20\r\nspace=09\r\nkept in middle\r\n");
	free(s);
	s = qp("caf\xc3\xa9");
	assert_string_equal(s, "caf=C3=A9\r\n");
	free(s);
	s = qp("");
	assert_string_equal(s, "\r\n");
	free(s);
}

static void test_qp_long_lines_roundtrip(void **state)
{
	char in[600], *enc, *dec;
	size_t k = 0;
	(void)state;
	/* Mixed ASCII, '=' and multi-byte UTF-8 so escapes straddle the limit. */
	while (k < 500) {
		const char *piece = (k % 7) ? "abc=d " : "\xc3\xa9\xe2\x82\xac";
		size_t pl = strlen(piece);
		memcpy(in + k, piece, pl);
		k += pl;
	}
	memcpy(in + k, "\nend \n", 7);
	enc = qp(in);
	assert_crlf_lines(enc, 76);
	dec = qp_decode(enc, strlen(enc));
	assert_memory_equal(dec, in, strlen(in));
	free(enc);
	free(dec);
}

/* ------------------------------------------------------------ headers */

static char *header(const char *name, const char *value)
{
	nbuf b;
	char *s;

	nbuf_init(&b);
	notif_header_text(&b, name, value);
	s = nbuf_take(&b, NULL);
	assert_non_null(s);
	return s;
}

static void test_subject_ascii_plain(void **state)
{
	char *s = header("Subject", "Welcome, Ada!");
	(void)state;
	assert_string_equal(s, "Subject: Welcome, Ada!\r\n");
	free(s);
}

static void test_subject_injection_neutralized(void **state)
{
	char *s = header("Subject", "Hi\r\nBcc: evil@example.com");
	(void)state;
	assert_string_equal(s, "Subject: Hi  Bcc: evil@example.com\r\n");
	free(s);
}

static void test_subject_utf8_rfc2047(void **state)
{
	const char *subj = "Willkommen, J\xc3\xbcrgen \xe2\x80\x94 "
	                   "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xa7"
	                   "\xe3\x82\x88\xe3\x81\x86\xe3\x81\x93\xe3\x81\x9d\xef\xbc\x81 "
	                   "\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89 "
	                   "and some more words to force folding";
	char *s = header("Subject", subj), *v, *d;
	(void)state;
	assert_int_equal(strncmp(s, "Subject: =?UTF-8?B?", 19), 0);
	assert_non_null(strstr(s, "\r\n ")); /* long: folded */
	assert_crlf_lines(s, 76);
	v = header_value(s, "Subject");
	d = decode_words(v);
	assert_string_equal(d, subj);
	free(s);
	free(v);
	free(d);
}

static void test_subject_never_splits_a_character(void **state)
{
	/* 4-byte characters: no word size (39, 45 bytes) is a multiple of 4. */
	char subj[4 * 30 + 1], *s, *d;
	(void)state;
	for (int i = 0; i < 30; i++)
		memcpy(subj + 4 * i, "\xf0\x9f\x8e\x89", 4);
	subj[120] = '\0';
	s = header("Subject", subj);
	assert_crlf_lines(s, 76);
	d = decode_words(s + 9); /* asserts each word starts on a character */
	assert_string_equal(d, subj);
	free(s);
	free(d);
}

static void test_subject_looking_encoded_is_encoded(void **state)
{
	/* ASCII that a reader would decode as an encoded-word must be encoded. */
	char *s = header("Subject", "=?UTF-8?B?SGk=?=");
	char *d;
	(void)state;
	d = decode_words(s + 9);
	assert_string_equal(d, "=?UTF-8?B?SGk=?=");
	free(s);
	free(d);
}

static void test_mailbox_header(void **state)
{
	nbuf b;
	char *s, *d;
	(void)state;
	nbuf_init(&b);
	notif_header_mailbox(&b, "To", "Ada \"The\" Count\\ess", "ada@example.com");
	notif_header_mailbox(&b, "Cc", "", "x@example.com");
	notif_header_mailbox(&b, "From", "J\xc3\xbcrgen", "j@example.com");
	s = nbuf_take(&b, NULL);
	assert_non_null(strstr(s, "To: \"Ada \\\"The\\\" Count\\\\ess\" <ada@example.com>\r\n"));
	assert_non_null(strstr(s, "Cc: x@example.com\r\n"));
	assert_non_null(strstr(s, "From: =?UTF-8?B?"));
	assert_non_null(strstr(s, "?= <j@example.com>\r\n"));
	d = decode_words(strstr(s, "From: "));
	assert_string_equal(d, "J\xc3\xbcrgen");
	free(d);
	free(s);
}

/* ------------------------------------------------------------ messages */

static notif_mail sample_mail(void)
{
	notif_mail m;
	memset(&m, 0, sizeof m);
	m.from_name = "evhost";
	m.from_addr = "noreply@example.org";
	m.to_name = "Zo\xc3\xab";
	m.to_addr = "zoe@example.com";
	m.subject = "Welcome, Zo\xc3\xab!";
	m.text = "Hello Zo\xc3\xab,\nwelcome = aboard.\n";
	m.html = "<p>Hello Zo&euml;,</p>\n<p>welcome</p>\n";
	m.date = 1700000000;
	m.unique = "abc123.def";
	return m;
}

static void test_message_multipart(void **state)
{
	notif_mail m = sample_mail();
	char *msg = NULL, *v, *d, *text_part, *html_part, *ctype;
	size_t len;
	(void)state;
	assert_int_equal(notif_mail_build(&m, &msg, &len), 0);
	assert_int_equal(strlen(msg), len);
	assert_crlf_lines(msg, 998);

	v = header_value(msg, "Date");
	assert_string_equal(v, "Tue, 14 Nov 2023 22:13:20 +0000");
	free(v);
	v = header_value(msg, "Message-ID");
	assert_string_equal(v, "<abc123.def@example.org>");
	free(v);
	v = header_value(msg, "MIME-Version");
	assert_string_equal(v, "1.0");
	free(v);
	v = header_value(msg, "From");
	assert_string_equal(v, "\"evhost\" <noreply@example.org>");
	free(v);
	v = header_value(msg, "To");
	assert_non_null(strstr(v, "<zoe@example.com>"));
	d = decode_words(v);
	assert_string_equal(d, "Zo\xc3\xab");
	free(d);
	free(v);
	v = header_value(msg, "Subject");
	d = decode_words(v);
	assert_string_equal(d, "Welcome, Zo\xc3\xab!");
	free(d);
	free(v);

	ctype = header_value(msg, "Content-Type");
	assert_string_equal(ctype, "multipart/alternative; boundary=\"=_evhost_abc123.def\"");
	free(ctype);
	/* Headers end at the first blank line; no body line before that. */
	assert_non_null(strstr(msg, "\r\n\r\nThis is a multi-part message in MIME format."));

	text_part = strstr(msg, "--=_evhost_abc123.def\r\n"
	                        "Content-Type: text/plain; charset=UTF-8\r\n"
	                        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	                        "Hello Zo=C3=AB,\r\nwelcome =3D aboard.\r\n");
	assert_non_null(text_part);
	html_part = strstr(msg, "--=_evhost_abc123.def\r\n"
	                        "Content-Type: text/html; charset=UTF-8\r\n"
	                        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	                        "<p>Hello Zo&euml;,</p>\r\n");
	assert_non_null(html_part);
	assert_true(html_part > text_part);
	assert_int_equal(strcmp(msg + len - strlen("--=_evhost_abc123.def--\r\n"),
	                        "--=_evhost_abc123.def--\r\n"), 0);
	free(msg);
}

static void test_message_text_only_and_invalid(void **state)
{
	notif_mail m = sample_mail();
	char *msg = NULL, *v;
	size_t len;
	(void)state;
	m.html = NULL;
	assert_int_equal(notif_mail_build(&m, &msg, &len), 0);
	v = header_value(msg, "Content-Type");
	assert_string_equal(v, "text/plain; charset=UTF-8");
	free(v);
	assert_null(strstr(msg, "multipart"));
	free(msg);

	m = sample_mail();
	m.to_addr = "zoe@example.com\r\nBcc: evil@example.com";
	assert_int_equal(notif_mail_build(&m, &msg, &len), -1);
	m = sample_mail();
	m.unique = "has space";
	assert_int_equal(notif_mail_build(&m, &msg, &len), -1);
	m = sample_mail();
	m.from_addr = "nobody";
	assert_int_equal(notif_mail_build(&m, &msg, &len), -1);
}

static void test_message_name_injection(void **state)
{
	notif_mail m = sample_mail();
	char *msg = NULL;
	size_t len;
	(void)state;
	m.to_name = "Eve\r\nBcc: victim@example.com";
	m.subject = "x\nX-Injected: 1";
	assert_int_equal(notif_mail_build(&m, &msg, &len), 0);
	assert_null(strstr(msg, "\r\nBcc:"));
	assert_null(strstr(msg, "\r\nX-Injected:"));
	free(msg);
}

/* ------------------------------------------------------------ paging */

static void test_limit(void **state)
{
	int v;
	(void)state;
	assert_int_equal(notif_parse_limit(NULL, 50, 500, &v), 0);
	assert_int_equal(v, 50);
	/* ?limit= is refused (422), as user's and crud's paging refuses it */
	assert_int_equal(notif_parse_limit("", 50, 500, &v), -1);
	assert_int_equal(notif_parse_limit("1", 50, 500, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(notif_parse_limit("500", 50, 500, &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(notif_parse_limit("0", 50, 500, &v), -1);
	assert_int_equal(notif_parse_limit("501", 50, 500, &v), -1);
	assert_int_equal(notif_parse_limit("-1", 50, 500, &v), -1);
	assert_int_equal(notif_parse_limit("+5", 50, 500, &v), -1);
	assert_int_equal(notif_parse_limit("10x", 50, 500, &v), -1);
	assert_int_equal(notif_parse_limit("99999999999999999999", 50, 500, &v), -1);
}

static void test_smtp_url(void **state)
{
	static const char *const good[] = {
	    "smtp://127.0.0.1:25", "smtps://mail.example.com", "smtp://mail.example.com:587/",
	    "smtp://user:p%40ss@mail.example.com:465", "smtp://[::1]:25", "smtps://[2001:db8::1]",
	    "smtp://mail.example.com/helo.example.org", "smtp://x:65535", "smtp://x:1",
	};
	static const struct {
		const char *url, *why;
	} bad[] = {
	    {NULL, "must start with smtp:// or smtps://"},
	    {"http://x", "must start with smtp:// or smtps://"},
	    {"smtp://", "names no host (smtp://host:port or smtps://host:port)"},
	    {"smtps://:25", "names no host"},
	    {"smtp://user:secret@", "names no host"},
	    {"smtp:///path", "names no host"},
	    {"smtp://x:99999999", "has port \"99999999\": a port is a number from 1 to 65535"},
	    {"smtp://x:65536", "has port \"65536\""},
	    {"smtp://x:0", "has port \"0\""},
	    {"smtp://x:", "has port \"\""},
	    {"smtp://x:25x", "has port \"25x\""},
	    {"smtp://x:-1", "has port \"-1\""},
	    {"smtp://mail example.com", "has a host that is not a name"},
	    {"smtp://[::1", "has a host in [ ] that is not an IPv6 address"},
	    {"smtp://[]:25", "has a host in [ ] that is not an IPv6 address"},
	    {"smtp://[::1]x", "has \"x\" after the host"},
	};
	char why[160];
	(void)state;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (notif_smtp_url_check(good[i], why, sizeof why) != 0)
			fail_msg("%s: refused (%s)", good[i], why);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why[0] = '\0';
		if (notif_smtp_url_check(bad[i].url, why, sizeof why) != -1 ||
		    !strstr(why, bad[i].why))
			fail_msg("%s: got \"%s\", want \"%s\"", bad[i].url ? bad[i].url : "(null)", why,
			         bad[i].why);
	}
	/* The user part may hold a password: never said. */
	assert_int_equal(notif_smtp_url_check("smtp://me:secret@host:99999", why, sizeof why), -1);
	assert_null(strstr(why, "secret"));
	assert_int_equal(notif_smtp_url_check("http://me:secret@host", why, sizeof why), -1);
	assert_string_equal(why, "must start with smtp:// or smtps:// (got \"http://...\")");
	assert_int_equal(notif_smtp_url_check("me:secret@host", why, sizeof why), -1);
	assert_null(strstr(why, "secret"));
	/* A password with a '/', '?', '#' or '@' not percent-encoded ends the
	 * host part early or moves it: nothing of the URL is quoted then. */
	static const char *const leaky[] = {
	    "smtp://mailer:secret/x@relay.example:25", "smtp://mailer:secret?x@relay.example",
	    "smtp://mailer:secret#x@relay.example",    "smtps://mailer:p@secret@relay.example",
	    "smtps://mailer:secret@@relay.example:99999", "smtp://secret/x@relay.example:bad",
	    "smtp://relay.example/helo@secret",
	};
	for (size_t i = 0; i < sizeof leaky / sizeof leaky[0]; i++) {
		why[0] = '\0';
		if (notif_smtp_url_check(leaky[i], why, sizeof why) != -1 || strstr(why, "secret") ||
		    !strstr(why, "not shown: it may hold a password"))
			fail_msg("%s: got \"%s\"", leaky[i], why);
	}
	/* Percent-encoded, they are fine. */
	assert_int_equal(notif_smtp_url_check("smtp://mailer:a%2Fb%40c@relay.example:25", why,
	                                      sizeof why),
	                 0);
}

static void test_smtp_login_in_clear(void **state)
{
	static const struct {
		const char *url;
		int starttls, clear;
		const char *host;
	} cases[] = {
	    {"smtp://relay.example:25", 0, 1, "relay.example"},
	    {"smtp://relay.example", 0, 1, "relay.example"},
	    {"smtp://u:p@relay.example:25/helo", 0, 1, "relay.example"},
	    {"smtp://[2001:db8::1]:25", 0, 1, "2001:db8::1"},
	    {"smtp://10.0.0.1", 0, 1, "10.0.0.1"},
	    {"smtp://127.0.0.1.example", 0, 1, "127.0.0.1.example"},
	    {"smtp://relay.example:25", 1, 0, ""},
	    {"smtps://relay.example", 0, 0, ""},
	    {"smtp://127.0.0.1:25", 0, 0, "127.0.0.1"},
	    {"smtp://127.200.0.9", 0, 0, "127.200.0.9"},
	    {"smtp://localhost:25", 0, 0, "localhost"},
	    {"smtp://LOCALHOST", 0, 0, "LOCALHOST"},
	    {"smtp://u:p@[::1]:25", 0, 0, "::1"},
	};
	char host[256];
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int got = notif_smtp_url_in_clear(cases[i].url, cases[i].starttls, host, sizeof host);
		if (got != cases[i].clear || strcmp(host, cases[i].host))
			fail_msg("%s (starttls %d): got %d \"%s\", want %d \"%s\"", cases[i].url,
			         cases[i].starttls, got, host, cases[i].clear, cases[i].host);
	}
	assert_true(notif_url_has_user("smtp://u:p@relay.example"));
	assert_true(notif_url_has_user("smtps://u@relay.example:465/x"));
	assert_false(notif_url_has_user("smtp://relay.example"));
	assert_false(notif_url_has_user("smtp://relay.example/a@b"));
	assert_false(notif_url_has_user(NULL));
}

static void test_cursor_roundtrip_and_rejects(void **state)
{
	char created[NOTIF_TIME_LEN], *id = NULL, *c;
	nbuf b;
	char *forged;
	(void)state;
	c = notif_cursor_encode("2026-01-02T03:04:05.678Z", "b1d:user|7");
	assert_non_null(c);
	assert_int_equal(notif_cursor_decode(c, created, &id), 0);
	assert_string_equal(created, "2026-01-02T03:04:05.678Z");
	assert_string_equal(id, "b1d:user|7");
	free(id);
	free(c);
	assert_int_equal(notif_cursor_decode("!!!", created, &id), -1);
	assert_int_equal(notif_cursor_decode("", created, &id), -1);
	nbuf_init(&b);
	notif_base64url(&b, (const unsigned char *)"yesterday|x", 11);
	forged = nbuf_take(&b, NULL);
	assert_int_equal(notif_cursor_decode(forged, created, &id), -1);
	free(forged);
	nbuf_init(&b);
	notif_base64url(&b, (const unsigned char *)"2026-01-02T03:04:05.678Z|", 25);
	forged = nbuf_take(&b, NULL);
	assert_int_equal(notif_cursor_decode(forged, created, &id), -1);
	free(forged);
}

static void test_time_and_ids(void **state)
{
	char now[NOTIF_TIME_LEN], uuid[37], hex[33];
	(void)state;
	notif_now_rfc3339(now);
	assert_true(notif_rfc3339_valid(now));
	assert_false(notif_rfc3339_valid("2026-01-02T03:04:05Z"));
	assert_false(notif_rfc3339_valid("2026-01-02T03:04:05.678Zx"));
	assert_int_equal(notif_uuid4(uuid), 0);
	assert_int_equal(strlen(uuid), 36);
	assert_int_equal(uuid[14], '4');
	assert_non_null(strchr("89ab", uuid[19]));
	assert_int_equal(notif_random_hex(hex, 16), 0);
	assert_int_equal(strspn(hex, "0123456789abcdef"), 32);
}

/* Versions of user events: the event's ce_time in UTC, then evhost_seq;
 * strcmp orders them as the events were published. */
static void test_event_versions(void **state)
{
	static const char now[] = "2026-12-05T15:00:09.500Z";
	char v[NOTIF_VERSION_LEN], w[NOTIF_VERSION_LEN];
	int64_t secs;
	long ns;
	(void)state;

	assert_int_equal(notif_event_version("2026-12-05T15:00:00.123Z", "42", now, v), 1);
	assert_string_equal(v, "2026-12-05T15:00:00.123000000Z/0000000000000000042");
	/* Other offsets, case and precision read as the same instant. */
	assert_int_equal(notif_event_version("2026-12-05t16:30:00.123+01:30", "42", now, w), 1);
	assert_string_equal(v, w);
	assert_int_equal(notif_event_version("2026-12-05T14:00:00.1230000009-01:00", "42", now, w),
	                 1);
	assert_string_equal(v, w);
	assert_int_equal(notif_event_version("2026-12-06T00:30:00z", NULL, now, w), 1);
	assert_string_equal(w, "2026-12-06T00:30:00.000000000Z/0000000000000000000");
	/* As the host reads RFC 3339 (rfc3339_parse): a blank for the T, and
	 * a leap second as the next minute's first instant. */
	assert_int_equal(notif_event_version("2026-12-05 15:00:00.123Z", "42", now, w), 1);
	assert_string_equal(v, w);
	assert_int_equal(notif_event_version("2016-12-31T23:59:60Z", "1", now, w), 1);
	assert_string_equal(w, "2017-01-01T00:00:00.000000000Z/0000000000000000001");

	/* Order: by time, then seq (9 before 10: the digits are padded). */
	notif_event_version("2026-12-05T15:00:00.123Z", "9", now, v);
	notif_event_version("2026-12-05T15:00:00.123Z", "10", now, w);
	assert_true(strcmp(v, w) < 0);
	notif_event_version("2026-12-05T15:00:00.122Z", "999", now, v);
	assert_true(strcmp(v, w) < 0);
	notif_event_version("2026-12-05T16:00:00.000+02:00", "999", now, v); /* 14:00 UTC */
	assert_true(strcmp(v, w) < 0);

	/* No usable ce_time: the event counts as of `now`. */
	assert_int_equal(notif_event_version(NULL, "7", now, v), 0);
	assert_string_equal(v, "2026-12-05T15:00:09.500000000Z/0000000000000000007");
	static const char *const bad[] = {
	    "",
	    "yesterday",
	    "2026-12-05",
	    "2026-12-05T15:00:00",          /* no offset */
	    "2026-12-05T15:00:00.Z",        /* no fraction digits */
	    "2026-12-05_15:00:00Z",         /* not T */
	    "2026-04-31T00:00:00Z",         /* no such day */
	    "2026-02-29T00:00:00Z",         /* not a leap year */
	    "2026-13-01T00:00:00Z",
	    "2026-12-05T24:00:00Z",
	    "2026-12-05T15:00:00+24:00",
	    "2026-12-05T15:00:00+0100",
	    "2026-12-05T15:00:00Zjunk",
	    "0000-01-01T00:30:00+01:00", /* before the year 0 in UTC */
	    "9999-12-31T23:30:00-01:00", /* after 9999 in UTC */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(notif_event_version(bad[i], NULL, now, v), 0);
		assert_string_equal(v, "2026-12-05T15:00:09.500000000Z/0000000000000000000");
	}
	assert_int_equal(rfc3339_parse("2024-02-29T00:00:00Z", &secs, &ns), 0);
	assert_int_equal(secs, 1709164800LL);
	assert_int_equal(ns, 0);
	/* evhost_seq as the host reads it: 1 to 18 digits, else none. */
	static const char *const bad_seq[] = {"", "-1", "12a", "1234567890123456789", " 1"};
	for (size_t i = 0; i < sizeof bad_seq / sizeof bad_seq[0]; i++) {
		notif_event_version("2026-12-05T15:00:00Z", bad_seq[i], now, v);
		assert_string_equal(v, "2026-12-05T15:00:00.000000000Z/0000000000000000000");
	}
	notif_event_version("2026-12-05T15:00:00Z", "123456789012345678", now, v);
	assert_string_equal(v, "2026-12-05T15:00:00.000000000Z/0123456789012345678");
}

/* ------------------------------------------------------------ pending */

static void test_pending_state(void **state)
{
	notif_pending pd;
	notif_entry e, *page;
	int n;
	(void)state;
	assert_int_equal(notif_pending_init(&pd, 8), 0);
	assert_int_equal(notif_pending_put(&pd, "ev1", "a@x.io", "welcome", NOTIF_RETRYING, 1,
	                                   "smtp: timeout", "2026-01-01T00:00:01.000Z"), 0);
	assert_int_equal(notif_pending_put(&pd, "ev2", "b@x.io", "welcome", NOTIF_SENT, 1, NULL,
	                                   "2026-01-01T00:00:02.000Z"), 0);
	assert_int_equal(notif_pending_put(&pd, "ev3", "a@x.io", "broadcast", NOTIF_FAILED, 3,
	                                   "smtp: 550", "2026-01-01T00:00:03.000Z"), 0);
	/* An update keeps created_at and moves updated_at. */
	assert_int_equal(notif_pending_put(&pd, "ev1", "a@x.io", "welcome", NOTIF_RETRYING, 2,
	                                   "smtp: refused", "2026-01-01T00:00:09.000Z"), 0);
	assert_int_equal(notif_pending_get(&pd, "ev1", &e), 1);
	assert_string_equal(e.created_at, "2026-01-01T00:00:01.000Z");
	assert_string_equal(e.updated_at, "2026-01-01T00:00:09.000Z");
	assert_int_equal(e.attempts, 2);
	assert_string_equal(e.last_error, "smtp: refused");
	notif_entry_clear(&e);
	assert_int_equal(notif_pending_get(&pd, "nope", &e), 0);
	/* No memory for the copy is not "no entry": a "sent" one would be sent
	 * again (deliver_once retries instead). */
	for (long k = 0; k < 4; k++) {
		alloc_faults_arm(k, ALLOC_THIS_THREAD);
		assert_int_equal(notif_pending_get(&pd, "ev3", &e), -1);
		assert_true(alloc_faults_disarm());
	}
	assert_int_equal(notif_pending_get(&pd, "ev3", &e), 1);
	notif_entry_clear(&e);

	/* Pages hide "sent", order newest first, filter and honour the cursor. */
	n = notif_pending_page(&pd, NULL, NULL, NULL, 10, &page);
	assert_int_equal(n, 2);
	assert_string_equal(page[0].event_id, "ev3");
	assert_string_equal(page[1].event_id, "ev1");
	notif_entries_free(page, (size_t)n);
	n = notif_pending_page(&pd, "b@x.io", NULL, NULL, 10, &page);
	assert_int_equal(n, 0);
	notif_entries_free(page, 0);
	n = notif_pending_page(&pd, NULL, "2026-01-01T00:00:03.000Z", "ev3", 10, &page);
	assert_int_equal(n, 1);
	assert_string_equal(page[0].event_id, "ev1");
	notif_entries_free(page, (size_t)n);
	n = notif_pending_page(&pd, NULL, NULL, NULL, 1, &page);
	assert_int_equal(n, 1);
	assert_string_equal(page[0].event_id, "ev3");
	notif_entries_free(page, (size_t)n);
	notif_pending_destroy(&pd);
}

static void test_pending_eviction_prefers_failed_then_sent(void **state)
{
	notif_pending pd;
	notif_entry e;
	char id[16], t[NOTIF_TIME_LEN];
	(void)state;
	assert_int_equal(notif_pending_init(&pd, 3), 0);
	notif_pending_put(&pd, "retry-old", "a@x.io", "welcome", NOTIF_RETRYING, 1, "e",
	                  "2026-01-01T00:00:00.000Z");
	notif_pending_put(&pd, "sent-new", "a@x.io", "welcome", NOTIF_SENT, 1, NULL,
	                  "2026-01-01T00:00:05.000Z");
	notif_pending_put(&pd, "failed", "a@x.io", "welcome", NOTIF_FAILED, 1, "e",
	                  "2026-01-01T00:00:01.000Z");
	notif_pending_put(&pd, "x", "a@x.io", "welcome", NOTIF_RETRYING, 1, "e",
	                  "2026-01-01T00:00:06.000Z");
	assert_int_equal(notif_pending_get(&pd, "failed", &e), 0);
	assert_int_equal(notif_pending_get(&pd, "sent-new", &e), 1);
	notif_entry_clear(&e);
	assert_int_equal(notif_pending_get(&pd, "retry-old", &e), 1);
	notif_entry_clear(&e);
	notif_pending_put(&pd, "y", "a@x.io", "welcome", NOTIF_RETRYING, 1, "e",
	                  "2026-01-01T00:00:07.000Z");
	assert_int_equal(notif_pending_get(&pd, "sent-new", &e), 0);
	/* Many more: bounded, never above max. */
	for (int i = 0; i < 50; i++) {
		snprintf(id, sizeof id, "n%d", i);
		snprintf(t, sizeof t, "2026-01-01T00:01:%02d.000Z", i);
		assert_int_equal(notif_pending_put(&pd, id, "a@x.io", "welcome", NOTIF_RETRYING, 1,
		                                   "e", t), 0);
		assert_true(pd.n <= 3);
	}
	assert_int_equal(notif_pending_get(&pd, "n49", &e), 1);
	notif_entry_clear(&e);
	notif_pending_destroy(&pd);

	/* A table full of "failed" entries (they stay until evicted): a part's
	 * "sent" ones, newer, push them out, never each other. */
	assert_int_equal(notif_pending_init(&pd, 100), 0);
	for (int i = 0; i < 100; i++) {
		snprintf(id, sizeof id, "f%d", i);
		notif_pending_put(&pd, id, "a@x.io", "welcome", NOTIF_FAILED, 1, "e",
		                  "2026-01-01T00:00:00.000Z");
	}
	for (int i = 0; i < 50; i++) {
		snprintf(id, sizeof id, "s%d", i);
		notif_pending_put(&pd, id, "a@x.io", "broadcast", NOTIF_SENT, 1, NULL,
		                  "2026-01-01T00:00:09.000Z");
	}
	for (int i = 0; i < 50; i++) {
		snprintf(id, sizeof id, "s%d", i);
		assert_int_equal(notif_pending_get(&pd, id, &e), 1);
		notif_entry_clear(&e);
	}
	notif_pending_destroy(&pd);

	/* Mails given up at a last attempt ("dead_lettered", a broadcast may
	 * give up thousands), newer than a part's "sent" ones, go before them;
	 * "retrying" ones stay. */
	assert_int_equal(notif_pending_init(&pd, 10), 0);
	notif_pending_put(&pd, "r", "a@x.io", "broadcast", NOTIF_RETRYING, 1, "e",
	                  "2026-01-01T00:00:00.000Z");
	for (int i = 0; i < 3; i++) {
		snprintf(id, sizeof id, "s%d", i);
		notif_pending_put(&pd, id, "a@x.io", "broadcast", NOTIF_SENT, 1, NULL,
		                  "2026-01-01T00:00:01.000Z");
	}
	for (int i = 0; i < 50; i++) {
		snprintf(id, sizeof id, "d%d", i);
		snprintf(t, sizeof t, "2026-01-01T00:01:%02d.000Z", i);
		notif_pending_put(&pd, id, "a@x.io", "broadcast", NOTIF_DEAD_LETTERED, 1, "e", t);
		assert_true(pd.n <= 10);
	}
	for (int i = 0; i < 3; i++) {
		snprintf(id, sizeof id, "s%d", i);
		assert_int_equal(notif_pending_get(&pd, id, &e), 1);
		notif_entry_clear(&e);
	}
	assert_int_equal(notif_pending_get(&pd, "r", &e), 1);
	notif_entry_clear(&e);
	assert_int_equal(notif_pending_get(&pd, "d49", &e), 1);
	notif_entry_clear(&e);
	notif_pending_destroy(&pd);
}

/* ------------------------------------------------------------ maildir */

static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void test_maildir_delivery(void **state)
{
	char root[] = "/tmp/notif-maildir-XXXXXX", dir[256], path[1024], name[256], err[256];
	char buf[256];
	notif_maildir m;
	FILE *f;
	size_t n;
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof dir, "%s/deep/er/box", root);
	assert_int_equal(notif_maildir_open(&m, dir, err, sizeof err), 0);
	assert_int_equal(notif_maildir_deliver(&m, "Subject: a\r\n\r\nbody\r\n", 21, name,
	                                       sizeof name, err, sizeof err), NOTIF_SEND_OK);
	assert_int_equal(notif_maildir_deliver(&m, "Subject: b\r\n\r\nx\r\n", 18, NULL, 0, err,
	                                       sizeof err), NOTIF_SEND_OK);
	snprintf(path, sizeof path, "%s/new", dir);
	assert_int_equal(count_files(path), 2);
	snprintf(path, sizeof path, "%s/tmp", dir);
	assert_int_equal(count_files(path), 0);
	snprintf(path, sizeof path, "%s/cur", dir);
	assert_int_equal(count_files(path), 0);
	assert_null(strchr(name, '/'));
	assert_null(strchr(name, ':'));
	snprintf(path, sizeof path, "%s/new/%s", dir, name);
	f = fopen(path, "rb");
	assert_non_null(f);
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	assert_string_equal(buf, "Subject: a\n\nbody\n");
	notif_maildir_close(&m);
	/* A path under a regular file cannot become a Maildir. */
	snprintf(path, sizeof path, "%s/new/%s/sub", dir, name);
	assert_int_equal(notif_maildir_open(&m, path, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot create directory"));
	snprintf(path, sizeof path, "rm -rf '%s'", root);
	assert_int_equal(system(path), 0);
}

static void make_file(const char *path)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fclose(f), 0);
}

/* Files in `dir`/`sub`. */
static int files_in(const char *dir, const char *sub)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, sub);
	return count_files(path);
}

/* A Maildir removed under the running daemon, whole or its tmp/ or new/, is
 * made again and the mail written; one whose tmp/ or new/ is a file cannot
 * be, and the mail is tried again with nothing left behind. Each step runs
 * `change` with $D the Maildir, then delivers one mail. */
static void test_maildir_removed_or_broken(void **state)
{
	static const struct {
		const char *change;
		notif_send_result want;
		const char *failed; /* the subdirectory said in the error */
	} steps[] = {
	    {"rmdir \"$D/tmp\"", NOTIF_SEND_OK, NULL},
	    {"rm -r \"$D/new\"", NOTIF_SEND_OK, NULL},
	    {"rm -r \"$D\"", NOTIF_SEND_OK, NULL},
	    {"rm -r \"$D/new\" && touch \"$D/new\"", NOTIF_SEND_TRANSIENT, "new"},
	    {"rm \"$D/new\" && mkdir \"$D/new\" && rmdir \"$D/tmp\" && touch \"$D/tmp\"",
	     NOTIF_SEND_TRANSIENT, "tmp"},
	};
	static const char mail[] = "Subject: a\r\n\r\nx\r\n";
	char root[] = "/tmp/notif-maildir-XXXXXX"; /* mkdtemp's template */
	char dir[256], cmd[1024], err[256];
	unsigned remade = 0;
	notif_maildir m;
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof dir, "%s/box", root);
	assert_int_equal(notif_maildir_open(&m, dir, err, sizeof err), 0);
	for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
		snprintf(cmd, sizeof cmd, "D='%s'; %s", dir, steps[i].change);
		assert_int_equal(system(cmd), 0);
		assert_int_equal(
		    notif_maildir_deliver(&m, mail, sizeof mail - 1, NULL, 0, err, sizeof err),
		    steps[i].want);
		if (steps[i].want == NOTIF_SEND_OK) {
			assert_int_equal(m.remade, ++remade);
			assert_int_equal(files_in(dir, "new"), 1);
			assert_int_equal(files_in(dir, "cur"), 0);
			continue;
		}
		assert_int_equal(m.remade, remade);
		snprintf(cmd, sizeof cmd, "maildir: cannot write %s/%s/", dir, steps[i].failed);
		assert_memory_equal(err, cmd, strlen(cmd));
		assert_non_null(strstr(err, ": Not a directory"));
		/* nothing left behind in the other one */
		assert_int_equal(files_in(dir, strcmp(steps[i].failed, "new") ? "new" : "tmp"), 0);
	}
	notif_maildir_close(&m);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* A mail larger than the process's file size limit (EFBIG) never fits,
 * however long it waits: NOTIF_SEND_TRANSIENT, retried and then
 * dead-lettered, not NOTIF_SEND_NO_ROOM (a full disk's or a quota's wait,
 * which would hold its partition for good). Nothing is left behind, and
 * the mail is written once the limit is raised. */
static void test_maildir_past_the_size_limit_fails(void **state)
{
	static const char mail[] = "Subject: a\r\n\r\nno room for this body\r\n";
	char root[] = "/tmp/notif-maildir-XXXXXX", dir[256], cmd[300], err[512];
	struct rlimit was, small;
	void (*old_xfsz)(int);
	notif_maildir m;
	notif_send_result res;
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof dir, "%s/box", root);
	assert_int_equal(notif_maildir_open(&m, dir, err, sizeof err), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
	small = was;
	small.rlim_cur = 8; /* past it, write fails with EFBIG (SIGXFSZ ignored) */
	old_xfsz = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	res = notif_maildir_deliver(&m, mail, sizeof mail - 1, NULL, 0, err, sizeof err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
	signal(SIGXFSZ, old_xfsz);
	assert_int_equal(res, NOTIF_SEND_TRANSIENT);
	snprintf(cmd, sizeof cmd, "maildir: cannot write %s/tmp/", dir);
	assert_memory_equal(err, cmd, strlen(cmd));
	assert_non_null(strstr(err, strerror(EFBIG)));
	assert_int_equal(files_in(dir, "tmp"), 0);
	assert_int_equal(files_in(dir, "new"), 0);
	assert_int_equal(notif_maildir_deliver(&m, mail, sizeof mail - 1, NULL, 0, err, sizeof err),
	                 NOTIF_SEND_OK);
	assert_int_equal(files_in(dir, "new"), 1);
	notif_maildir_close(&m);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* An error that names a long path is cut to the caller's buffer, and ends
 * with "..." to say so. */
static void test_maildir_error_about_a_long_path_is_cut(void **state)
{
	char root[] = "/tmp/notif-maildir-XXXXXX", dir[512], path[600], err[128];
	notif_maildir m;
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof dir, "%s/%0200d", root, 0);
	assert_int_equal(notif_maildir_open(&m, dir, err, sizeof err), 0);
	snprintf(path, sizeof path, "%s/tmp", dir);
	assert_int_equal(rmdir(path), 0);
	make_file(path); /* the message cannot be written now: tried again */
	assert_int_equal(notif_maildir_deliver(&m, "Subject: a\r\n\r\nx\r\n", 18, NULL, 0, err,
	                                       sizeof err),
	                 NOTIF_SEND_TRANSIENT);
	assert_int_equal(strlen(err), sizeof err - 1);
	assert_memory_equal(err, "maildir: cannot write /tmp/notif-maildir-", 41);
	assert_string_equal(err + sizeof err - 4, "...");
	notif_maildir_close(&m);
	snprintf(path, sizeof path, "rm -rf '%s'", root);
	assert_int_equal(system(path), 0);
}

enum { FINAL = NOTIF_SEND_PERMANENT, SETUP = NOTIF_SEND_DOWN, RETRY = NOTIF_SEND_TRANSIENT };

typedef struct refusal_case {
	const char *reply;
	int want;
} refusal_case;

/* Each reply as `judge` reads it, against what it should be. */
static void check_refusals(notif_send_result (*judge)(const char *, size_t),
                           const refusal_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int got = judge(cases[i].reply, strlen(cases[i].reply));
		if (got != cases[i].want)
			fail_msg("case %zu \"%s\": got %d, want %d", i, cases[i].reply, got,
			         cases[i].want);
	}
}

/* A 5xx to RCPT TO judged by its RFC 3463 enhanced code (notif_util.c):
 * the recipient's for good, the sender's (the setup), or either (retried);
 * a reply without a code of that form as before, final. */
static void test_smtp_rcpt_refused(void **state)
{
	static const refusal_case cases[] = {
	    /* this recipient, for good */
	    {"550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown\r\n", FINAL},
	    {"550 5.1.2 bad destination system", FINAL},
	    {"501 5.1.3 Bad recipient address syntax", FINAL},
	    {"551 5.1.6 moved", FINAL},
	    {"556 5.1.10 null MX", FINAL},
	    {"552 5.2.2 mailbox full", FINAL},
	    {"550 5.2.1 mailbox disabled", FINAL},
	    {"552 5.2.3 too big for the mailbox", FINAL},
	    {"550 5.2.0 other", FINAL},
	    {"550 5.1.1", FINAL}, /* the code alone */
	    /* no enhanced code, or none of RFC 3463's form: as before */
	    {"550 No such user here", FINAL},
	    {"550 5.1 short", FINAL},
	    {"554 5.x.1 letters", FINAL},
	    {"554 5.7.1: a colon", FINAL},
	    {"554 5.7.1234 too long", FINAL},
	    {"554 5.07.1 a leading zero", FINAL},
	    {"554 4.7.1 class not the reply's", FINAL},
	    {"554 3.7.1 no such class", FINAL},
	    {"554\t5.7.1 a tab", FINAL},
	    {"554", FINAL},
	    {"", FINAL},
	    /* the sender: the setup's, as at MAIL FROM */
	    {"553 5.1.7 <noreply@localhost>: bad sender", SETUP},
	    {"550 5.1.8 <noreply@example.org>: Sender address rejected: Domain not found", SETUP},
	    /* the setup's or this recipient's: retried */
	    {"554 5.7.1 <bob@example.com>: Relay access denied", RETRY},
	    {"504 5.5.2 <noreply@localhost>: Sender address rejected: need fully-qualified "
	     "address", RETRY},
	    {"554 5.3.0 other mail system problem", RETRY},
	    {"554 5.4.4 unable to route", RETRY},
	    {"550 5.1.0 <x@y>: Sender address rejected: User unknown", RETRY},
	    {"550 5.1.4 ambiguous", RETRY},
	    {"550 5.6.0 media", RETRY},
	    {"550 5.9.999 unknown subject", RETRY},
	    /* spaces before the code, a multi-line reply's lines */
	    {"554  5.7.1 two spaces", RETRY},
	    {"550   5.1.1 three spaces", FINAL},
	    {"554-5.7.1 a continuation line", RETRY},
	    {"550-5.7.1 first\r\n550 5.1.1 last\r\n", FINAL},
	    {"550-5.1.1 first\r\n554 5.7.1 last\n", RETRY},
	};

	(void)state;
	check_refusals(notif_smtp_rcpt_refused, cases, sizeof cases / sizeof cases[0]);
	{
		int num[3] = {0, 0, 0};
		assert_int_equal(notif_smtp_enhanced_code("250 2.1.5 ok", 12, num), 1);
		assert_int_equal(num[0], 2);
		assert_int_equal(num[1], 1);
		assert_int_equal(num[2], 5);
		assert_int_equal(notif_smtp_enhanced_code("556 5.1.10", 10, num), 1);
		assert_int_equal(num[2], 10);
		/* n bounds the line: nothing past it is read */
		assert_int_equal(notif_smtp_enhanced_code("550 5.1.1", 8, num), 0);
		assert_int_equal(notif_smtp_enhanced_code("550 5.1.1x", 9, num), 1);
	}
}

/* A 5xx to DATA or the data, by its enhanced code too: final when the
 * content or the size is refused, or about the recipient, or without a
 * code; a policy (the sender's SPF or DMARC failing) retried. */
static void test_smtp_data_refused(void **state)
{
	static const refusal_case cases[] = {
	    {"554 5.6.0 Message content rejected", FINAL},
	    {"550 5.6.1 media not supported", FINAL},
	    {"552 5.3.4 Message size exceeds fixed limit", FINAL},
	    {"552 5.2.2 mailbox full", FINAL},
	    {"550 5.1.1 Mailbox unavailable", FINAL},
	    {"554 Transaction failed", FINAL},
	    {"550 5.1.8 sender domain not found", SETUP},
	    {"550 5.7.26 Unauthenticated email from example.org is not accepted due to domain's "
	     "DMARC policy",
	     RETRY},
	    {"550 5.7.23 SPF validation failed", RETRY},
	    {"550-5.7.1 first\r\n550 5.7.1 Message rejected as spam\r\n", RETRY},
	    {"554 5.3.0 other mail system problem", RETRY},
	    {"554 5.4.4 unable to route", RETRY},
	};

	(void)state;
	check_refusals(notif_smtp_data_refused, cases, sizeof cases / sizeof cases[0]);
}

/* A delivery's Message-ID is the same at each attempt, and its own: no
 * other key, recipient or sender gives it, nor the same parts split
 * otherwise. */
static void test_delivery_unique(void **state)
{
	char a[33], b[33];
	(void)state;
	assert_int_equal(sodium_init() >= 0, 1);
	notif_delivery_unique("b-1:u-1", "u@example.com", "noreply@example.org", a);
	assert_int_equal(strlen(a), 32);
	assert_int_equal(strspn(a, "0123456789abcdef"), 32);
	notif_delivery_unique("b-1:u-1", "u@example.com", "noreply@example.org", b);
	assert_string_equal(a, b);
	notif_delivery_unique("b-1:u-2", "u@example.com", "noreply@example.org", b);
	assert_string_not_equal(a, b);
	notif_delivery_unique("b-1:u-1", "v@example.com", "noreply@example.org", b);
	assert_string_not_equal(a, b);
	notif_delivery_unique("b-1:u-1", "u@example.com", "other@example.org", b);
	assert_string_not_equal(a, b);
	notif_delivery_unique("b-1:u-1u", "@example.com", "noreply@example.org", b);
	assert_string_not_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_render_substitutes),
	    cmocka_unit_test(test_render_html_escapes_values_not_template),
	    cmocka_unit_test(test_render_edge_cases),
	    cmocka_unit_test(test_template_check),
	    cmocka_unit_test(test_addr_valid),
	    cmocka_unit_test(test_smtp_rcpt_refused),
	    cmocka_unit_test(test_smtp_data_refused),
	    cmocka_unit_test(test_delivery_unique),
	    cmocka_unit_test(test_mailbox_parse),
	    cmocka_unit_test(test_rfc5322_date),
	    cmocka_unit_test(test_base64_vectors),
	    cmocka_unit_test(test_base64url_roundtrip_and_garbage),
	    cmocka_unit_test(test_qp_basic),
	    cmocka_unit_test(test_qp_long_lines_roundtrip),
	    cmocka_unit_test(test_subject_ascii_plain),
	    cmocka_unit_test(test_subject_injection_neutralized),
	    cmocka_unit_test(test_subject_utf8_rfc2047),
	    cmocka_unit_test(test_subject_never_splits_a_character),
	    cmocka_unit_test(test_subject_looking_encoded_is_encoded),
	    cmocka_unit_test(test_mailbox_header),
	    cmocka_unit_test(test_message_multipart),
	    cmocka_unit_test(test_message_text_only_and_invalid),
	    cmocka_unit_test(test_message_name_injection),
	    cmocka_unit_test(test_limit),
	    cmocka_unit_test(test_smtp_url),
	    cmocka_unit_test(test_smtp_reply_clean),
	    cmocka_unit_test(test_smtp_login_in_clear),
	    cmocka_unit_test(test_cursor_roundtrip_and_rejects),
	    cmocka_unit_test(test_time_and_ids),
	    cmocka_unit_test(test_event_versions),
	    cmocka_unit_test(test_pending_state),
	    cmocka_unit_test(test_pending_eviction_prefers_failed_then_sent),
	    cmocka_unit_test(test_maildir_delivery),
	    cmocka_unit_test(test_maildir_removed_or_broken),
	    cmocka_unit_test(test_maildir_past_the_size_limit_fails),
	    cmocka_unit_test(test_maildir_error_about_a_long_path_is_cut),
	};
	return cmocka_run_group_tests_name("notif_logic", tests, NULL, NULL);
}
