/* Building RFC 5322 messages: headers (Date, Message-ID, From, To, Subject
 * encoded per RFC 2047 when not plain ASCII), a MIME multipart/alternative
 * body with quoted-printable UTF-8 text and HTML parts, plus the address
 * checks that keep event data from injecting headers. SDK-free, pure: time
 * and randomness are passed in. */
#ifndef NOTIF_MAIL_H
#define NOTIF_MAIL_H
#include <stddef.h>
#include <time.h>
#include "notif_buf.h"

#define NOTIF_ADDR_MAX 320 /* RFC 5321: 64 local + @ + 255 domain */

typedef struct notif_mail {
	const char *from_name; /* display name, UTF-8, may be NULL or "" */
	const char *from_addr; /* addr-spec, checked with notif_addr_valid */
	const char *to_name;
	const char *to_addr;
	const char *subject; /* UTF-8; CR/LF and other controls become spaces */
	const char *text;    /* UTF-8 plain-text body */
	const char *html;    /* UTF-8 HTML body; NULL sends text only */
	time_t date;
	const char *unique; /* [A-Za-z0-9.]+ token: Message-ID local part and boundary */
} notif_mail;

/* Whether `addr` is a plain addr-spec we are willing to put in a header and
 * an SMTP envelope: local@domain, printable ASCII, no spaces, quotes,
 * brackets, commas or controls, non-empty parts, at most NOTIF_ADDR_MAX. */
int notif_addr_valid(const char *addr);

/* Split a configured mailbox "Display Name <local@domain>" or
 * "local@domain" into its parts. Returns 0, -1 when the address part is
 * not valid or does not fit in addrlen - 1 bytes, or -2 when the name does
 * not fit in namelen - 1 bytes (cut, it could end inside a character).
 * `name` may come back empty. */
int notif_mailbox_parse(const char *mailbox, char *name, size_t namelen, char *addr,
                        size_t addrlen);

/* RFC 5322 date-time in UTC, e.g. "Thu, 28 Nov 2024 04:44:00 +0000".
 * Locale-independent. */
void notif_rfc5322_date(time_t t, char out[40]);

/* Base64 (RFC 4648 section 4) of `n` bytes appended to `b`. */
void notif_base64(nbuf *b, const unsigned char *s, size_t n);
/* Base64url without padding (section 5), appended to `b`. */
void notif_base64url(nbuf *b, const unsigned char *s, size_t n);
/* Decode base64url (padding optional). Returns a malloc'd NUL-terminated
 * buffer and its length, or NULL on bad input or out of memory. */
unsigned char *notif_base64url_decode(const char *s, size_t *outlen);

/* Quoted-printable (RFC 2045 section 6.7) of a UTF-8 text with LF or CRLF
 * line ends: CRLF hard breaks, lines of at most 76 characters, trailing
 * whitespace encoded. Ends with CRLF. */
void notif_qp_encode(nbuf *b, const char *s, size_t n);

/* Append a header "Name: value\r\n". `value` is UTF-8 text: controls become
 * spaces; when it is not plain ASCII (or too long for one line) it is
 * written as RFC 2047 "B" encoded-words, folded to lines of at most 76. */
void notif_header_text(nbuf *b, const char *name, const char *value);

/* Append a header "Name: display <addr>\r\n" with the display name quoted,
 * or RFC 2047-encoded when not ASCII; just "Name: addr" when the name is
 * empty. The caller has checked `addr` with notif_addr_valid. */
void notif_header_mailbox(nbuf *b, const char *hname, const char *display, const char *addr);

/* Build the whole message (CRLF line ends). Returns 0 with *out malloc'd,
 * -1 when an address or `unique` is invalid (the message can never be
 * built), or -2 when memory ran out (it may be, another time). */
int notif_mail_build(const notif_mail *m, char **out, size_t *len);
#endif
