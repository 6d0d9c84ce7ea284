/* Small SDK-free helpers: random tokens, UUIDs and timestamps, the
 * GET /notifications paging inputs (limit, opaque keyset cursor), and the
 * form of smtp_url. */
#ifndef NOTIF_UTIL_H
#define NOTIF_UTIL_H
#include <stddef.h>

#include "notif_transport.h"

#define NOTIF_TIME_LEN 32 /* "2026-01-02T03:04:05.678Z" + NUL, with room */

/* `nbytes` random bytes as 2*nbytes lowercase hex (out holds 2*nbytes+1).
 * Returns 0, or -1 when the kernel's random source failed. */
int notif_random_hex(char *out, size_t nbytes);
/* A random UUIDv4 string (36 chars + NUL). 0 or -1 as above. */
int notif_uuid4(char out[37]);
/* The Message-ID's local part (and the MIME boundary's) of the mail a
 * delivery sends: 32 lowercase hex digits of a BLAKE2b hash (libsodium's
 * generichash; sodium_init first) of the delivery's key (its log id: a
 * welcome's event id, "<broadcast>:<user>"), its recipient and sender.
 * The same at every attempt and redrive of that delivery, so that a
 * receiver can drop a copy sent again after an unknown outcome; another
 * delivery's differs. Neither id can be read back from it. */
void notif_delivery_unique(const char *key, const char *to_addr, const char *from_addr,
                           char out[33]);
/* Current UTC time as RFC 3339 with milliseconds. These strings sort in
 * time order, which the log's keyset pagination relies on. */
void notif_now_rfc3339(char out[NOTIF_TIME_LEN]);
/* Whether `s` has exactly the shape notif_now_rfc3339 writes. */
int notif_rfc3339_valid(const char *s);
/* The UTC time `seconds` ago, in notif_now_rfc3339's form. */
void notif_ago_rfc3339(long seconds, char out[NOTIF_TIME_LEN]);

/* Versions order a user's updates: "YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ/SEQ",
 * the event's ce_time in UTC with nine fraction digits, then its evhost_seq
 * as 19 digits (0 without one): strcmp (and SQLite's BINARY collation) sorts
 * them by time, then seq, as the host's ordered dispatch does. */
#define NOTIF_VERSION_LEN 64
/* The version of an event whose ce_time and evhost_seq headers are
 * `ce_time` and `seq` (NULL when absent). Without a usable ce_time (absent,
 * not RFC 3339, or outside the years 0000-9999 in UTC), the event counts as
 * of `now` (notif_now_rfc3339's form: when it is handled). Returns 1 when
 * ce_time was used, 0 when `now` was. */
int notif_event_version(const char *ce_time, const char *seq, const char *now,
                        char out[NOTIF_VERSION_LEN]);

/* Parse a decimal page size: NULL gives `dflt`; otherwise an integer in
 * [1, max]. Returns 0, or -1 for anything else ("" too). */
int notif_parse_limit(const char *s, int dflt, int max, int *out);

/* Whether `url` is what smtp_url takes: smtp:// or smtps://, an optional
 * user@, a host (a name, or an IPv6 address in brackets), an optional :port
 * from 1 to 65535, then nothing or a path. 0, or -1 with what is wrong in
 * `why` (never the user part, which may hold a password). */
int notif_smtp_url_check(const char *url, char *why, size_t size);

/* Whether credentials sent to the server of `url` (smtp_user, or a user@
 * in the URL) would go out in clear: an smtp:// URL without STARTTLS
 * (`starttls` 0) to a host that is not this host's loopback (localhost,
 * 127.0.0.0/8, ::1), the rule the daemon holds http:// JWKS URLs to. The
 * host (without brackets) goes to `host`, "" when not smtp://. For a URL
 * notif_smtp_url_check took. */
int notif_smtp_url_in_clear(const char *url, int starttls, char *host, size_t hostlen);
/* Whether `url` has a user@ (maybe user:password@) before its host. */
int notif_url_has_user(const char *url);

/* The SMTP server's reply line in[0..n) (the end of a multi-line reply: its
 * last line) as it may go into a log line, a notifications_log row and a
 * dead letter's header: the line ending dropped, bytes other than printable
 * ASCII as '?', and each word holding an '@' (an address, which servers
 * echo: "<bob@example.com>: Recipient address rejected") as "<address>",
 * for these hold no personal data. Cut to fit `out`; "" for an empty line. */
void notif_smtp_reply_clean(const char *in, size_t n, char *out, size_t outlen);

/* The RFC 3463 enhanced status code that opens the text of the SMTP reply
 * line in[0..n) (the last line of a multi-line reply), as RFC 2034 has a
 * server say it: after the three-digit reply code and a space or '-' (more
 * spaces let through), class.subject.detail, then a space or the end of the
 * line. The class is the reply code's first digit (2, 4 or 5); subject and
 * detail are numbers of one to three digits, without a leading zero.
 * Returns 1 with class, subject and detail in num[0..2], or 0 when the line
 * has none: no code, or not one of that form ("5.1", "5.x.1", "5.1.1:", a
 * "4.2.2" after a 550). */
int notif_smtp_enhanced_code(const char *in, size_t n, int num[3]);

/* What a 5xx reply to RCPT TO (the reply line in[0..n), as above) says of
 * the mail, by its enhanced code alone (never its free text, worded as
 * each server likes): NOTIF_SEND_PERMANENT when it refuses this recipient
 * (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10, 5.2.x) or has no enhanced code;
 * NOTIF_SEND_DOWN when it refuses the sender (5.1.7, 5.1.8), as a 5xx to
 * MAIL FROM does; NOTIF_SEND_TRANSIENT for any other code (5.7.x policy or
 * relay denied, 5.5.x, 5.3.x, 5.4.x, 5.1.0 ...), which may be about the
 * setup as well as the recipient. notif_smtp.c's classify says why. */
notif_send_result notif_smtp_rcpt_refused(const char *in, size_t n);

/* What a 5xx reply to DATA or to the message's data says of the mail, by
 * its enhanced code: NOTIF_SEND_PERMANENT when the content or the size is
 * refused (5.6.x, 5.3.4); otherwise as notif_smtp_rcpt_refused (a 5.7.x
 * policy, such as a sender's SPF or DMARC failing, is TRANSIENT). */
notif_send_result notif_smtp_data_refused(const char *in, size_t n);

/* The keyset cursor: base64url of "<created_at>|<event_id>". */
char *notif_cursor_encode(const char *created_at, const char *event_id);
/* Returns 0 with created_at copied and *event_id malloc'd, or -1 when the
 * cursor was not one we issued (bad base64, shape or timestamp). */
int notif_cursor_decode(const char *cursor, char created_at[NOTIF_TIME_LEN], char **event_id);
#endif
