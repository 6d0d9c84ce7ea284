#include "notif_util.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../../host/loopback.h"
#include "../../host/rfc3339.h"
#include "notif_buf.h"
#include "notif_mail.h"

static int random_bytes(unsigned char *p, size_t n)
{
	while (n) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int notif_random_hex(char *out, size_t nbytes)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[64];

	if (nbytes > sizeof raw || random_bytes(raw, nbytes) < 0)
		return -1;
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * nbytes] = '\0';
	return 0;
}

void notif_delivery_unique(const char *key, const char *to_addr, const char *from_addr,
                           char out[33])
{
	static const char what[] = "evhost notifications Message-ID 1";
	crypto_generichash_state h;
	unsigned char sum[16];

	/* Each part with its NUL: "a" + "bc" is not "ab" + "c". */
	crypto_generichash_init(&h, NULL, 0, sizeof sum);
	crypto_generichash_update(&h, (const unsigned char *)what, sizeof what);
	crypto_generichash_update(&h, (const unsigned char *)key, strlen(key) + 1);
	crypto_generichash_update(&h, (const unsigned char *)to_addr, strlen(to_addr) + 1);
	crypto_generichash_update(&h, (const unsigned char *)from_addr, strlen(from_addr) + 1);
	crypto_generichash_final(&h, sum, sizeof sum);
	sodium_bin2hex(out, 2 * sizeof sum + 1, sum, sizeof sum);
}

int notif_uuid4(char out[37])
{
	unsigned char u[16];

	if (random_bytes(u, sizeof u) < 0)
		return -1;
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	snprintf(out, 37,
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
	         u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
	         u[14], u[15]);
	return 0;
}

void notif_now_rfc3339(char out[NOTIF_TIME_LEN])
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, NOTIF_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, NOTIF_TIME_LEN - n, ".%03dZ", (int)(ts.tv_nsec / 1000000 % 1000));
}

int notif_rfc3339_valid(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	size_t i;

	for (i = 0; shape[i]; i++) {
		if (!s[i])
			return 0;
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return 0;
	}
	return s[i] == '\0';
}

void notif_ago_rfc3339(long seconds, char out[NOTIF_TIME_LEN])
{
	time_t t = time(NULL) - seconds;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, NOTIF_TIME_LEN, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

/* The version of (secs, nanos, seq) into out; -1 when the time, in UTC, is
 * not within the years 0000 to 9999 (the form would not sort). */
static int version_format(int64_t secs, long nanos, unsigned long long seq,
                          char out[NOTIF_VERSION_LEN])
{
	time_t t = (time_t)secs;
	struct tm tm;

	if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return -1;
	snprintf(out, NOTIF_VERSION_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ/%019llu",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         nanos, seq);
	return 0;
}

int notif_event_version(const char *ce_time, const char *seq, const char *now,
                        char out[NOTIF_VERSION_LEN])
{
	unsigned long long n = 0;
	int64_t secs;
	long nanos;
	size_t len = seq ? strlen(seq) : 0;

	/* The host's own reading of evhost_seq: 1 to 18 digits, else none. */
	if (len >= 1 && len <= 18 && strspn(seq, "0123456789") == len)
		n = strtoull(seq, NULL, 10);
	if (ce_time && rfc3339_parse(ce_time, &secs, &nanos) == 0 &&
	    version_format(secs, nanos, n, out) == 0)
		return 1;
	if (rfc3339_parse(now, &secs, &nanos) < 0 || version_format(secs, nanos, n, out) < 0)
		snprintf(out, NOTIF_VERSION_LEN, "%s/%019llu", now, n);
	return 0;
}

int notif_parse_limit(const char *s, int dflt, int max, int *out)
{
	char *end;
	long v;

	if (!s) {
		*out = dflt;
		return 0;
	}
	if (*s < '0' || *s > '9') /* "" too: ?limit= is refused, as user and crud refuse it */
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

/* A host name's bytes: letters, digits, '.', '-', '_', and UTF-8 (libcurl
 * turns an international name into its xn-- form). */
static int host_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_' || c >= 0x80;
}

/* The authority of `url` past its "://": [*h, *end), up to the path, query
 * or fragment; *at the '@' ending a user part in it, or NULL. 0, or -1 when
 * url has no "://". */
static int url_authority(const char *url, const char **h, const char **end, const char **at)
{
	const char *sep = url ? strstr(url, "://") : NULL;

	if (!sep)
		return -1;
	*h = sep + 3;
	*end = *h + strcspn(*h, "/?#");
	*at = memchr(*h, '@', (size_t)(*end - *h));
	return 0;
}

int notif_smtp_url_check(const char *url, char *why, size_t size)
{
	const char *h, *end, *at, *port = NULL;
	size_t n;
	long v;

	if (!url || (strncmp(url, "smtp://", 7) && strncmp(url, "smtps://", 8))) {
		/* Only up to "://": what follows may hold user:password@. */
		const char *sep = url ? strstr(url, "://") : NULL;
		size_t shown = !url ? 0 : sep ? (size_t)(sep - url) + 3 : strcspn(url, ":@/");
		snprintf(why, size, "must start with smtp:// or smtps:// (got \"%.*s%s\")", (int)shown,
		         url ? url : "", url && url[shown] ? "..." : "");
		return -1;
	}
	url_authority(url, &h, &end, &at);
	/* Past here, parts of the URL are quoted: never one that may hold a
	 * password. A password with a '/', '?' or '#' not percent-encoded ends
	 * the host part early ("smtp://me:pa/ss@relay" names host "me", port
	 * "pa"), and one with an '@' moves the host into it: refused without
	 * quoting anything. An SMTP URL has no use for an '@' past its host. */
	if (strchr(end, '@')) {
		snprintf(why, size, "has an @ after a / ? or # (not shown: it may hold a "
		                    "password); in a user or password, write / ? # @ as "
		                    "%%2F %%3F %%23 %%40");
		return -1;
	}
	if (at) {
		if (memchr(at + 1, '@', (size_t)(end - at - 1))) {
			snprintf(why, size, "has more than one @ before the host (not shown: it may "
			                    "hold a password); in a user or password, write @ as %%40");
			return -1;
		}
		h = at + 1;
	}
	if (*h == '[') { /* an IPv6 address: its colons are not the port's */
		n = strspn(h + 1, "0123456789abcdefABCDEF:.");
		if (n == 0 || h[1 + n] != ']') {
			snprintf(why, size, "has a host in [ ] that is not an IPv6 address");
			return -1;
		}
		n += 2;
	} else {
		for (n = 0; h + n < end && h[n] != ':'; n++)
			if (!host_char_ok((unsigned char)h[n])) {
				snprintf(why, size, "has a host that is not a name (\"%.*s\")",
				         (int)(end - h), h);
				return -1;
			}
	}
	if (n == 0) {
		snprintf(why, size, "names no host (smtp://host:port or smtps://host:port)");
		return -1;
	}
	if (h + n < end && h[n] == ':')
		port = h + n + 1;
	else if (h + n != end) {
		snprintf(why, size, "has \"%.*s\" after the host where a :port or a path may be",
		         (int)(end - h - n), h + n);
		return -1;
	}
	if (port) {
		n = (size_t)(end - port);
		v = n && n <= 5 && strspn(port, "0123456789") >= n ? strtol(port, NULL, 10) : 0;
		if (v < 1 || v > 65535) {
			snprintf(why, size, "has port \"%.*s\": a port is a number from 1 to 65535",
			         (int)(n > 32 ? 32 : n), port);
			return -1;
		}
	}
	return 0;
}

int notif_smtp_url_in_clear(const char *url, int starttls, char *host, size_t hostlen)
{
	const char *h, *end, *at;
	size_t n;

	host[0] = '\0';
	if (!url || strncmp(url, "smtp://", 7) || starttls)
		return 0;
	url_authority(url, &h, &end, &at);
	if (at)
		h = at + 1;
	if (*h == '[') { /* [::1]: the address is inside */
		h++;
		n = strcspn(h, "]");
	} else {
		n = strcspn(h, ":/?#");
	}
	if (h + n > end)
		n = (size_t)(end - h);
	snprintf(host, hostlen, "%.*s", (int)n, h);
	return !loopback_host(host);
}

int notif_url_has_user(const char *url)
{
	const char *h, *end, *at;

	return url_authority(url, &h, &end, &at) == 0 && at;
}

char *notif_cursor_encode(const char *created_at, const char *event_id)
{
	nbuf raw, enc;
	char *r;
	size_t rl;

	nbuf_init(&raw);
	nbuf_addf(&raw, "%s|%s", created_at, event_id);
	r = nbuf_take(&raw, &rl);
	if (!r)
		return NULL;
	nbuf_init(&enc);
	notif_base64url(&enc, (const unsigned char *)r, rl);
	free(r);
	return nbuf_take(&enc, NULL);
}

int notif_cursor_decode(const char *cursor, char created_at[NOTIF_TIME_LEN], char **event_id)
{
	size_t n;
	unsigned char *raw = notif_base64url_decode(cursor, &n);
	char *bar;

	if (!raw)
		return -1;
	bar = memchr(raw, '|', n);
	if (!bar || strlen((char *)raw) != n || (size_t)(bar - (char *)raw) >= NOTIF_TIME_LEN ||
	    bar[1] == '\0')
		goto bad;
	*bar = '\0';
	if (!notif_rfc3339_valid((char *)raw))
		goto bad;
	strcpy(created_at, (char *)raw);
	*event_id = strdup(bar + 1);
	free(raw);
	return *event_id ? 0 : -1;
bad:
	free(raw);
	return -1;
}

/* The last line of the reply in[0..n), without its line end: from *start
 * to the returned length. */
static size_t reply_last_line(const char *in, size_t n, size_t *start)
{
	while (n && (in[n - 1] == '\r' || in[n - 1] == '\n'))
		n--;
	for (*start = n; *start && in[*start - 1] != '\n'; --*start)
		;
	return n;
}

void notif_smtp_reply_clean(const char *in, size_t n, char *out, size_t outlen)
{
	size_t o = 0, i, start;

	if (!outlen)
		return;
	n = reply_last_line(in, n, &start);
	for (i = start; i < n && o + 1 < outlen;) {
		size_t w = i;
		int addr = 0;

		if (in[i] == ' ') {
			out[o++] = ' ';
			i++;
			continue;
		}
		while (w < n && in[w] != ' ')
			addr |= in[w++] == '@';
		if (addr) {
			static const char tag[] = "<address>";
			for (size_t k = 0; tag[k] && o + 1 < outlen; k++)
				out[o++] = tag[k];
			i = w;
			continue;
		}
		for (; i < w && o + 1 < outlen; i++)
			out[o++] = in[i] > 0x20 && in[i] < 0x7f ? in[i] : '?';
	}
	out[o] = '\0';
}

int notif_smtp_enhanced_code(const char *in, size_t n, int num[3])
{
	size_t i, start;

	n = reply_last_line(in, n, &start);
	in += start;
	n -= start;
	if (n < 4 || (in[3] != ' ' && in[3] != '-'))
		return 0;
	for (i = 0; i < 3; i++)
		if (in[i] < '0' || in[i] > '9')
			return 0;
	for (i = 4; i < n && in[i] == ' '; i++)
		;
	for (int k = 0; k < 3; k++) {
		size_t first = i;
		int v = 0;

		for (; i < n && i - first < 3 && in[i] >= '0' && in[i] <= '9'; i++)
			v = v * 10 + (in[i] - '0');
		if (i == first || (in[first] == '0' && i - first > 1))
			return 0;
		if (k == 0 && (i - first != 1 || in[first] != in[0] ||
		               (v != 2 && v != 4 && v != 5)))
			return 0;
		/* A dot after the class and the subject; after the detail a space
		 * or the end ("5.1.1234" and "5.1.1:" are no code). */
		if (k < 2) {
			if (i >= n || in[i] != '.')
				return 0;
			i++;
		} else if (i < n && in[i] != ' ') {
			return 0;
		}
		num[k] = v;
	}
	return 1;
}

notif_send_result notif_smtp_rcpt_refused(const char *in, size_t n)
{
	int num[3];

	if (!notif_smtp_enhanced_code(in, n, num) || num[0] != 5)
		return NOTIF_SEND_PERMANENT;
	if (num[1] == 2)
		return NOTIF_SEND_PERMANENT;
	if (num[1] == 1) {
		switch (num[2]) {
		case 1:
		case 2:
		case 3:
		case 6:
		case 10: return NOTIF_SEND_PERMANENT;
		case 7:
		case 8: return NOTIF_SEND_DOWN;
		default: break;
		}
	}
	return NOTIF_SEND_TRANSIENT;
}

notif_send_result notif_smtp_data_refused(const char *in, size_t n)
{
	int num[3];

	if (notif_smtp_enhanced_code(in, n, num) && num[0] == 5 &&
	    (num[1] == 6 || (num[1] == 3 && num[2] == 4)))
		return NOTIF_SEND_PERMANENT;
	return notif_smtp_rcpt_refused(in, n);
}
