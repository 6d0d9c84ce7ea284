/* libFuzzer: what notifications.so builds from untrusted text. A user's name
 * (from POST /users, carried by USER_CREATED) and a broadcast's subject and
 * message (from POST /notifications/broadcast) go into mail headers and
 * bodies; paging cursors come back from clients as query parameters.
 *
 * The input is split at NUL bytes into: the recipient's display name, the
 * subject, the text body, the HTML body (absent: a text-only mail), the
 * sender's display name. Checked on the built message:
 *   - every line ends with CRLF, and no CR or LF stands alone;
 *   - the header block holds exactly the headers the builder writes, each
 *     once, in printable ASCII (non-ASCII text is RFC 2047-encoded), with
 *     only folded continuation lines between them: no text can add one;
 *   - no line is longer than RFC 5322's 998 characters, and quoted-printable
 *     lines keep to 76;
 *   - a multipart body has exactly its two part boundaries and its closing
 *     one, so no text can open or close a part.
 * And for the same bytes as a cursor: the notifications log's and the
 * user/crud lists' cursor decoders never crash, and what they accept
 * encodes back to itself (the same text); the ?limit= readers take exactly
 * the numbers in their range; base64url round-trips any bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/common/paging.c"
#include "../../plugins/notifications/notif_buf.c"
#include "../../plugins/notifications/notif_mail.c"
#include "../../plugins/notifications/notif_util.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIELDS 5
#define BOUNDARY "=_evhost_fuzz.1"

#define CHECK(cond)                                                                            \
	do {                                                                                   \
		if (!(cond))                                                                   \
			__builtin_trap();                                                      \
	} while (0)

static const char *const header_names[] = {
    "Date",         "From",           "To",
    "Subject",      "Message-ID",     "MIME-Version",
    "Auto-Submitted", "Content-Type", "Content-Transfer-Encoding",
};
#define NHEADERS (sizeof header_names / sizeof header_names[0])

/* Lines of msg[0..len): each ends with CRLF (checked). Calls fn for each,
 * without its CRLF. */
static void each_line(const char *msg, size_t len, void (*fn)(const char *, size_t, void *),
                      void *ctx)
{
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		if (msg[i] == '\r') {
			CHECK(i + 1 < len && msg[i + 1] == '\n');
			fn(msg + start, i - start, ctx);
			i++;
			start = i + 1;
		} else {
			CHECK(msg[i] != '\n');
		}
	}
	CHECK(start == len); /* the message ends with CRLF */
}

struct headers {
	int count[NHEADERS];
	int lines;
};

static void header_line(const char *line, size_t n, void *ctx)
{
	struct headers *h = ctx;
	CHECK(n <= 998);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)line[i] >= 0x20 && (unsigned char)line[i] < 0x7f);
	if (h->lines++ && n && (line[0] == ' ' || line[0] == '\t'))
		return; /* a folded continuation of the header before */
	for (size_t k = 0; k < NHEADERS; k++) {
		size_t nl = strlen(header_names[k]);
		if (n > nl + 1 && !memcmp(line, header_names[k], nl) && line[nl] == ':' &&
		    line[nl + 1] == ' ') {
			h->count[k]++;
			return;
		}
	}
	__builtin_trap(); /* a header line the builder never writes */
}

struct body {
	int parts, closes;
};

static void body_line(const char *line, size_t n, void *ctx)
{
	struct body *b = ctx;
	static const char open[] = "--" BOUNDARY, close[] = "--" BOUNDARY "--";
	CHECK(n <= 998);
	if (n == sizeof open - 1 && !memcmp(line, open, n))
		b->parts++;
	else if (n == sizeof close - 1 && !memcmp(line, close, n))
		b->closes++;
	else /* RFC 2046: a delimiter line may end in whitespace; nothing else starts so */
		CHECK(n < sizeof open - 1 || memcmp(line, open, sizeof open - 1) != 0);
}

/* A text-only body is all quoted-printable: lines of at most 76. */
static void qp_line_len(const char *line, size_t n, void *ctx)
{
	(void)line;
	(void)ctx;
	CHECK(n <= 76);
}

static void check_mail(const char *f[FIELDS], int has_html)
{
	notif_mail m = {
	    .from_name = f[4],
	    .from_addr = "noreply@example.org",
	    .to_name = f[0],
	    .to_addr = "ada@example.org",
	    .subject = f[1],
	    .text = f[2],
	    .html = has_html ? f[3] : NULL,
	    .date = 1764000000,
	    .unique = "fuzz.1",
	};
	struct headers h = {{0}, 0};
	struct body b = {0, 0};
	char *msg;
	size_t len;
	const char *sep;

	if (notif_mail_build(&m, &msg, &len) != 0)
		return; /* out of memory: nothing to check */
	CHECK(strlen(msg) == len);
	sep = strstr(msg, "\r\n\r\n");
	CHECK(sep);
	each_line(msg, (size_t)(sep - msg) + 2, header_line, &h);
	for (size_t k = 0; k < NHEADERS; k++) {
		int want = !strcmp(header_names[k], "Content-Transfer-Encoding") ? !has_html : 1;
		CHECK(h.count[k] == want);
	}
	each_line(sep + 4, len - (size_t)(sep + 4 - msg), body_line, &b);
	CHECK(has_html ? b.parts == 2 && b.closes == 1 : b.parts == 0 && b.closes == 0);
	if (!has_html)
		each_line(sep + 4, len - (size_t)(sep + 4 - msg), qp_line_len, NULL);
	free(msg);
}

static void check_cursors(const char *s)
{
	char created[NOTIF_TIME_LEN], created2[NOTIF_TIME_LEN], *id = NULL, *id2 = NULL, *enc;
	char page[PAGING_CURSOR_MAX];
	int64_t seq, seq2;

	if (notif_cursor_decode(s, created, &id) == 0) {
		CHECK(notif_rfc3339_valid(created) && id && *id);
		enc = notif_cursor_encode(created, id);
		if (enc) {
			CHECK(notif_cursor_decode(enc, created2, &id2) == 0);
			CHECK(!strcmp(created, created2) && !strcmp(id, id2));
			free(id2);
			free(enc);
		}
		free(id);
	}
	if (paging_cursor_decode(s, &seq) == 0) {
		CHECK(seq > 0);
		CHECK(paging_cursor_encode(seq, page, sizeof page) == 0);
		CHECK(paging_cursor_decode(page, &seq2) == 0 && seq2 == seq);
		CHECK(!strcmp(page, s)); /* one spelling per position */
	}
}

/* ?limit= (paging_limit_parse, as user.so and crud.so read it, and
 * notif_parse_limit, as notifications.so does): taken exactly when it is
 * plain decimal digits for a number from 1 to max, and then that number. */
static void check_limits(const char *s)
{
	static const int maxes[] = {1, 100, 1000, 999999, 2147483647};
	size_t digits = strspn(s, "0123456789");
	for (size_t k = 0; k < sizeof maxes / sizeof maxes[0]; k++) {
		int out = -1, out2 = -1;
		double v = digits && !s[digits] ? strtod(s, NULL) : -1; /* leading zeros too */
		int want = v >= 1 && v <= maxes[k];
		int rc = paging_limit_parse(s, 7, maxes[k], &out);
		int rc2 = notif_parse_limit(s, 7, maxes[k], &out2);
		/* paging's: at most six digits (the largest page is far below) */
		CHECK((rc == 0) == (want && digits <= 6) && (rc || out == (int)v));
		CHECK((rc2 == 0) == want && (rc2 || out2 == (int)v));
	}
	CHECK(paging_limit_parse(NULL, 7, 100, &(int){0}) == 0);
}

static void check_base64url(const uint8_t *data, size_t size)
{
	nbuf b;
	char *enc;
	unsigned char *dec;
	size_t n;

	nbuf_init(&b);
	notif_base64url(&b, data, size);
	enc = nbuf_take(&b, NULL);
	if (!enc)
		return;
	dec = notif_base64url_decode(enc, &n);
	CHECK(dec && n == size && (size == 0 || !memcmp(dec, data, size)));
	free(dec);
	free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);
	const char *f[FIELDS];
	size_t at = 0;
	int nf = 0;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	/* Fields are the NUL-separated pieces; missing ones are empty. */
	while (nf < FIELDS) {
		f[nf++] = copy + at;
		at += strlen(copy + at);
		if (at >= size)
			break;
		at++;
	}
	for (int i = nf; i < FIELDS; i++)
		f[i] = "";
	check_mail(f, nf > 3);
	check_cursors(copy);
	check_limits(copy);
	check_base64url(data, size);
	free(copy);
	return 0;
}
