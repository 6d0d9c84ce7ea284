/* Where rendered messages go: an SMTP server through libcurl (one easy
 * handle kept for connection reuse, behind a mutex), or a Maildir (tmp/
 * then rename into new/, so readers never see a partial file). Both report
 * whether a failure is worth retrying. Neither uses the SDK. */
#ifndef NOTIF_TRANSPORT_H
#define NOTIF_TRANSPORT_H
#include <pthread.h>
#include <stddef.h>

typedef enum notif_send_result {
	NOTIF_SEND_OK = 0,
	NOTIF_SEND_TRANSIENT = 1, /* try again later: connection, timeout, 4xx, disk full */
	NOTIF_SEND_PERMANENT = 2, /* retrying will not help: a 5xx to the mail, a bad message */
	/* As TRANSIENT, and the server could not be talked to at all (no
	 * connection, no greeting, no answer in time before the end of the
	 * message's data, TLS or login refused, 421): the next recipient would
	 * fare no better, so a broadcast stops there. */
	NOTIF_SEND_DOWN = 3,
	/* The plugin stopping cut the send short (notif_smtp_config's
	 * stopping): no verdict, no attempt used; tried again after the start,
	 * as a mail a stop left. */
	NOTIF_SEND_CUT = 4,
	/* The Maildir's file system has no room (ENOSPC, EDQUOT): not
	 * the mail's fault nor a setup to mend; the event waits for room,
	 * using up no attempt, as it does when the database is full. */
	NOTIF_SEND_NO_ROOM = 5,
} notif_send_result;

/* ---- Maildir ---- */

typedef struct notif_maildir {
	char *dir;
	char host[64];   /* this host's name, made safe for file names */
	unsigned remade; /* times the Maildir, or part of it, was found removed and
	                  * made again (read with __atomic_load_n) */
} notif_maildir;

/* Create `dir` (and parents) with cur/ new/ tmp/. 0, or -1 with `err` set
 * (-2 when that is out of memory). */
int notif_maildir_open(notif_maildir *m, const char *dir, char *err, size_t errlen);
void notif_maildir_close(notif_maildir *m);
/* Write `msg` to tmp/<unique>, fsync, rename to new/<unique> where unique
 * is <seconds>.M<micros>P<pid>R<random>.<host>, fsync new/. CRLF becomes LF,
 * as Maildir readers expect. The file name goes to `name` when non-NULL. A
 * Maildir (or its tmp/ or new/) removed since it was opened is made again
 * (counted in `remade`); a full file system (ENOSPC, EDQUOT) is
 * NOTIF_SEND_NO_ROOM, any other failure (EFBIG too) NOTIF_SEND_TRANSIENT,
 * with nothing left behind. */
notif_send_result notif_maildir_deliver(notif_maildir *m, const char *msg, size_t len, char *name,
                                        size_t namelen, char *err, size_t errlen);

/* ---- SMTP (libcurl) ---- */

typedef struct notif_smtp_config {
	const char *url;      /* smtp://host:port or smtps://host:port */
	const char *user;     /* NULL: no AUTH */
	const char *password; /* with user */
	int starttls;         /* require STARTTLS (CURLUSESSL_ALL) */
	const char *ca_file;  /* PEM CA certificates to verify the server; NULL: the system's */
	long timeout_ms;      /* connecting, and each wait until the data is out */
	long data_timeout_ms; /* the wait for the reply to the end of the data */
	const char *from_addr; /* envelope sender */
	/* 1 once the plugin winds down (evh_stopping): a send under way gets
	 * timeout_ms more, then is cut short (NULL: never). */
	int (*stopping)(void *ud);
	void *stopping_ud;
} notif_smtp_config;

typedef struct notif_smtp {
	pthread_mutex_t mu;
	/* CURL *, kept across sends so the connection is reused; made anew after
	 * a failed send (NULL when that ran out of memory: made at the next). */
	void *curl;
	char *url, *user, *password, *from_addr, *ca_file;
	int starttls;
	long timeout_ms, data_timeout_ms;
	/* The send under way's clock (CLOCK_MONOTONIC, ms; under mu), which
	 * smtp_progress holds it to: when it began, when libcurl had the whole
	 * message (0: not yet; then `replies` was replies_at_data_end) and when
	 * libcurl said QUIT. timed_out: smtp_progress ended it. */
	long long began_ms, data_end_ms, quit_ms;
	int replies_at_data_end, timed_out;
	/* The config's stopping; when the send under way first saw it say 1
	 * (0: not yet), and cut: smtp_progress ended the send for it, timeout_ms
	 * later (under mu). */
	int (*stopping)(void *ud);
	void *stopping_ud;
	long long stop_seen_ms;
	int cut;
	/* The server's last reply line of the send under way (under mu), raw,
	 * for the error of a failed one: libcurl says only its code. Only a
	 * reply to the last command (or the message) sent: emptied when one is
	 * sent, and the reply to libcurl's own QUIT after a failure not kept. */
	char reply[512];
	size_t reply_len;
	/* The verb of the last command sent in the send under way ("" before
	 * any: the greeting), and whether it was QUIT: a 5xx is about this
	 * message only as the reply to RCPT (by its enhanced code), DATA or
	 * the data. */
	char verb[12];
	int quitting;
	/* Replies the send under way got: none on a kept connection means the
	 * server took nothing of it (notif_smtp_send then tries a new one). */
	int replies;
	/* With a user: whether this connection's session logged in (AUTH sent
	 * since its last EHLO), and whether a mail sent without (the server
	 * offered no AUTH: libcurl then goes on without a word) is said
	 * already, until a login succeeds again; news for
	 * notif_smtp_no_auth_news. */
	int session_auth, no_auth_said, no_auth_news;
	int logs_in; /* a user: smtp_user, or one in the URL (libcurl logs in with either) */
} notif_smtp;

/* Check the URL scheme and libcurl's SMTP support, create the handle (the
 * host checked that ca_file is readable: an EVH_CFG_FILE key).
 * Calls curl_global_init. 0, or -1 with `err` set (-2 when that is out of
 * memory). */
int notif_smtp_open(notif_smtp *s, const notif_smtp_config *c, char *err, size_t errlen);
/* Close the handle (and the connection: QUIT, its reply not awaited),
 * wipe the password. */
void notif_smtp_close(notif_smtp *s);
/* Send one message to `rcpt`. Safe from any thread (serialized). After a
 * failure the connection is dropped, never reused: after a timeout the
 * server's late answer would be read as the next message's. So is a kept
 * one the server spoke on (an idle timeout's 421) or closed meanwhile.
 * Until the data is out, the send is held to timeout_ms; then the reply
 * to its end to data_timeout_ms. No reply to the end (a timeout, the
 * connection lost) leaves the outcome unknown: NOTIF_SEND_TRANSIENT,
 * never DOWN, with `err` saying so. */
notif_send_result notif_smtp_send(notif_smtp *s, const char *rcpt, const char *msg, size_t len,
                                  char *err, size_t errlen);
/* 1 once after a send with a user (smtp_user, or smtp_url's user@) went
 * out without logging in, because the server offered no AUTH (its EHLO
 * listed none): said once until a login happens again. Safe from any
 * thread. */
int notif_smtp_no_auth_news(notif_smtp *s);
#endif
