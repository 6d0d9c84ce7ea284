#include "notif_mail.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_CHARS 76 /* RFC 2047 encoded-word lines and RFC 2045 QP lines */
#define HEADER_HARD_MAX 998 /* RFC 5322 2.1.1 */

/* ------------------------------------------------------------ addresses */

static int addr_char_ok(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return 0;
	return !strchr("\"(),:;<>[]\\", c);
}

int notif_addr_valid(const char *addr)
{
	const char *at, *p;
	size_t len, local, domain;

	if (!addr)
		return 0;
	len = strlen(addr);
	at = strchr(addr, '@');
	if (!at || strchr(at + 1, '@') || len > NOTIF_ADDR_MAX)
		return 0;
	local = (size_t)(at - addr);
	domain = len - local - 1;
	if (local == 0 || local > 64 || domain == 0 || domain > 255)
		return 0;
	for (p = addr; *p; p++)
		if (*p != '@' && !addr_char_ok((unsigned char)*p))
			return 0;
	/* A dot-atom on both sides (RFC 5321 4.1.2): no dot at either end of
	 * the local part or the domain, none doubled. Such a local part is sent
	 * by no well-behaved producer (the user plugin refuses it) and relays
	 * answer it differently: refused here, the same for every relay. */
	if (addr[0] == '.' || at[-1] == '.' || at[1] == '.' || addr[len - 1] == '.' ||
	    strstr(addr, ".."))
		return 0;
	return 1;
}

/* s[0..n) without surrounding blanks and quotes into dst, cut to fit;
 * -1 when it was cut. */
static int copy_trimmed(char *dst, size_t dstlen, const char *s, size_t n)
{
	int fits;

	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		s++;
		n -= 2;
	}
	fits = n < dstlen;
	if (!fits)
		n = dstlen - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return fits ? 0 : -1;
}

int notif_mailbox_parse(const char *mailbox, char *name, size_t namelen, char *addr,
                        size_t addrlen)
{
	const char *lt = strrchr(mailbox, '<');
	size_t n = strlen(mailbox);

	name[0] = '\0';
	if (!lt) /* an address cut to fit could pass for a valid one: refused */
		return copy_trimmed(addr, addrlen, mailbox, n) < 0 || !notif_addr_valid(addr) ? -1 : 0;
	while (n && (mailbox[n - 1] == ' ' || mailbox[n - 1] == '\t'))
		n--;
	if (!n || mailbox[n - 1] != '>' || mailbox + n - 1 <= lt)
		return -1;
	if (copy_trimmed(addr, addrlen, lt + 1, (size_t)(mailbox + n - 1 - (lt + 1))) < 0)
		return -1;
	if (!notif_addr_valid(addr))
		return -1;
	return copy_trimmed(name, namelen, mailbox, (size_t)(lt - mailbox)) < 0 ? -2 : 0;
}

/* ----------------------------------------------------------------- date */

void notif_rfc5322_date(time_t t, char out[40])
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
	         months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* --------------------------------------------------------------- base64 */

static void base64_with(nbuf *b, const unsigned char *s, size_t n, const char *alphabet, int pad)
{
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
		char q[4] = {alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63],
		             alphabet[v & 63]};
		nbuf_add(b, q, 4);
	}
	if (i < n) {
		unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
		nbuf_addc(b, alphabet[v >> 18]);
		nbuf_addc(b, alphabet[(v >> 12) & 63]);
		if (i + 1 < n)
			nbuf_addc(b, alphabet[(v >> 6) & 63]);
		else if (pad)
			nbuf_addc(b, '=');
		if (pad)
			nbuf_addc(b, '=');
	}
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void notif_base64(nbuf *b, const unsigned char *s, size_t n) { base64_with(b, s, n, B64, 1); }

void notif_base64url(nbuf *b, const unsigned char *s, size_t n)
{
	base64_with(b, s, n, B64URL, 0);
}

static int b64url_value(char c)
{
	const char *p = c ? strchr(B64URL, c) : NULL;
	return p ? (int)(p - B64URL) : -1;
}

unsigned char *notif_base64url_decode(const char *s, size_t *outlen)
{
	size_t n = strlen(s), i, o = 0;
	unsigned char *out;
	unsigned acc = 0;
	int bits = 0;

	while (n && s[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return NULL;
	out = malloc(n * 3 / 4 + 1);
	if (!out)
		return NULL;
	for (i = 0; i < n; i++) {
		int v = b64url_value(s[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6 | (unsigned)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/* ------------------------------------------------------ quoted-printable */

static void qp_line(nbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char tok[3];
		size_t tl = 1;
		int ws = c == ' ' || c == '\t';

		/* Whitespace ending a line is encoded: transports may strip it. */
		if ((c >= 33 && c <= 126 && c != '=') || (ws && i + 1 < n)) {
			tok[0] = (char)c;
		} else {
			tok[0] = '=';
			tok[1] = hex[c >> 4];
			tok[2] = hex[c & 15];
			tl = 3;
		}
		/* Keep room for the "=" of a soft break: lines stay within 76. */
		if (col + tl > LINE_MAX_CHARS - 1) {
			nbuf_add(b, "=\r\n", 3);
			col = 0;
		}
		nbuf_add(b, tok, tl);
		col += tl;
	}
	nbuf_add(b, "\r\n", 2);
}

void notif_qp_encode(nbuf *b, const char *s, size_t n)
{
	size_t start = 0;

	while (start < n) {
		const char *nl = memchr(s + start, '\n', n - start);
		size_t end = nl ? (size_t)(nl - s) : n;
		size_t line_end = end;

		if (line_end > start && s[line_end - 1] == '\r')
			line_end--;
		qp_line(b, s + start, line_end - start);
		start = end + 1;
	}
	if (n == 0)
		nbuf_add(b, "\r\n", 2);
}

/* -------------------------------------------------------------- headers */

static char *sanitize_header_text(const char *s)
{
	size_t n = strlen(s);
	char *c = malloc(n + 1);

	if (!c)
		return NULL;
	for (size_t i = 0; i <= n; i++) {
		unsigned char ch = (unsigned char)s[i];
		c[i] = (i < n && (ch < 0x20 || ch == 0x7f)) ? ' ' : (char)ch;
	}
	return c;
}

static int is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

/* Write `s` as "=?UTF-8?B?...?=" words starting at column `col`, folding
 * so no line exceeds 76, never splitting a UTF-8 sequence. Returns the
 * column after the last word. */
static size_t encoded_words(nbuf *b, const char *s, size_t col)
{
	size_t n = strlen(s), i = 0;
	const size_t overhead = 12; /* "=?UTF-8?B?" + "?=" */

	while (i < n) {
		size_t avail, raw, take;

		if (col + overhead + 4 > LINE_MAX_CHARS) {
			nbuf_add(b, "\r\n ", 3);
			col = 1;
		}
		avail = LINE_MAX_CHARS - col - overhead;
		raw = avail / 4 * 3;
		take = n - i < raw ? n - i : raw;
		while (take > 0 && i + take < n && ((unsigned char)s[i + take] & 0xC0) == 0x80)
			take--;
		if (take == 0) /* a sequence longer than the room (bad UTF-8): cut anyway */
			take = raw;
		nbuf_adds(b, "=?UTF-8?B?");
		notif_base64(b, (const unsigned char *)s + i, take);
		nbuf_adds(b, "?=");
		col += overhead + (take + 2) / 3 * 4;
		i += take;
		if (i < n) {
			nbuf_add(b, "\r\n ", 3);
			col = 1;
		}
	}
	return col;
}

void notif_header_text(nbuf *b, const char *name, const char *value)
{
	char *v = sanitize_header_text(value ? value : "");
	size_t col = strlen(name) + 2;

	if (!v) {
		b->oom = 1;
		return;
	}
	nbuf_addf(b, "%s: ", name);
	if (is_ascii(v) && !strstr(v, "=?") && col + strlen(v) <= HEADER_HARD_MAX)
		nbuf_adds(b, v);
	else
		encoded_words(b, v, col);
	nbuf_add(b, "\r\n", 2);
	free(v);
}

void notif_header_mailbox(nbuf *b, const char *hname, const char *display, const char *addr)
{
	char *v = sanitize_header_text(display ? display : "");
	size_t col = strlen(hname) + 2;

	if (!v) {
		b->oom = 1;
		return;
	}
	nbuf_addf(b, "%s: ", hname);
	if (!*v) {
		nbuf_adds(b, addr);
	} else {
		if (is_ascii(v) && !strstr(v, "=?") && col + strlen(v) + 2 <= HEADER_HARD_MAX / 2) {
			nbuf_addc(b, '"');
			for (const char *p = v; *p; p++) {
				if (*p == '"' || *p == '\\')
					nbuf_addc(b, '\\');
				nbuf_addc(b, *p);
			}
			nbuf_addc(b, '"');
			col += strlen(v) + 2;
		} else {
			col = encoded_words(b, v, col);
		}
		if (col + 1 + strlen(addr) + 2 > LINE_MAX_CHARS)
			nbuf_add(b, "\r\n", 2);
		nbuf_addf(b, " <%s>", addr);
	}
	nbuf_add(b, "\r\n", 2);
	free(v);
}

/* -------------------------------------------------------------- message */

static int unique_valid(const char *u)
{
	if (!u || !*u || strlen(u) > 100)
		return 0;
	for (; *u; u++)
		if (!((*u >= 'A' && *u <= 'Z') || (*u >= 'a' && *u <= 'z') ||
		      (*u >= '0' && *u <= '9') || *u == '.'))
			return 0;
	return 1;
}

static void mime_part(nbuf *b, const char *boundary, const char *type, const char *body)
{
	nbuf_addf(b, "--%s\r\n", boundary);
	nbuf_addf(b, "Content-Type: %s; charset=UTF-8\r\n", type);
	nbuf_adds(b, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	notif_qp_encode(b, body, strlen(body));
	nbuf_add(b, "\r\n", 2);
}

int notif_mail_build(const notif_mail *m, char **out, size_t *len)
{
	char date[40], boundary[128];
	nbuf b;

	if (!notif_addr_valid(m->from_addr) || !notif_addr_valid(m->to_addr) ||
	    !unique_valid(m->unique) || !m->text)
		return -1;
	/* "=_" never occurs in quoted-printable output ('=' is always "=3D"
	 * there, or followed by hex or CRLF), so the boundary cannot collide. */
	snprintf(boundary, sizeof boundary, "=_evhost_%s", m->unique);
	notif_rfc5322_date(m->date, date);
	nbuf_init(&b);
	nbuf_addf(&b, "Date: %s\r\n", date);
	notif_header_mailbox(&b, "From", m->from_name, m->from_addr);
	notif_header_mailbox(&b, "To", m->to_name, m->to_addr);
	notif_header_text(&b, "Subject", m->subject);
	nbuf_addf(&b, "Message-ID: <%s@%s>\r\n", m->unique, strchr(m->from_addr, '@') + 1);
	nbuf_adds(&b, "MIME-Version: 1.0\r\n");
	/* RFC 3834: tells autoresponders not to answer. */
	nbuf_adds(&b, "Auto-Submitted: auto-generated\r\n");
	if (!m->html) {
		nbuf_adds(&b, "Content-Type: text/plain; charset=UTF-8\r\n");
		nbuf_adds(&b, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
		notif_qp_encode(&b, m->text, strlen(m->text));
	} else {
		nbuf_addf(&b, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n",
		          boundary);
		nbuf_adds(&b, "This is a multi-part message in MIME format.\r\n\r\n");
		mime_part(&b, boundary, "text/plain", m->text);
		mime_part(&b, boundary, "text/html", m->html);
		nbuf_addf(&b, "--%s--\r\n", boundary);
	}
	*out = nbuf_take(&b, len);
	return *out ? 0 : -2;
}
