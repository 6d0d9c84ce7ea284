#include "notif_transport.h"
#include "notif_util.h"

#include <curl/curl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "../../host/clock.h"

static int curl_has_protocol(const char *proto)
{
	const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);

	for (const char *const *p = vi->protocols; p && *p; p++)
		if (!strcmp(*p, proto))
			return 1;
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	return *out ? 0 : -1;
}

/* libcurl's trace: what the server said (CURLINFO_HEADER_IN, one reply
 * line a call), kept so that a failure can say it, and the verb of each
 * command sent (CURLINFO_HEADER_OUT), which tells a reply about the
 * message from one about the session. A command or the message's data
 * going out empties the reply: a command that times out has none, and the
 * one before it (a "250 ok") must not be quoted as the server's answer.
 * After a failure libcurl says QUIT itself: its "221" is not kept either,
 * or it would hide the reply that failed the mail. The commands also tell
 * whether a session with a user logged in: libcurl skips AUTH without a
 * word when the server's EHLO offers none. */
static int smtp_trace(CURL *c, curl_infotype type, char *data, size_t size, void *ud)
{
	notif_smtp *s = ud;
	size_t n;

	(void)c;
	if (type == CURLINFO_HEADER_IN && !s->quitting) {
		n = size < sizeof s->reply ? size : sizeof s->reply;
		memcpy(s->reply, data, n);
		s->reply_len = n;
		s->replies++;
	} else if (type == CURLINFO_HEADER_OUT) {
		char verb[sizeof s->verb];
		for (n = 0; n < size && n + 1 < sizeof verb &&
		            ((data[n] >= 'A' && data[n] <= 'Z') || (data[n] >= 'a' && data[n] <= 'z'));
		     n++)
			verb[n] = (char)(data[n] & ~0x20);
		verb[n] = '\0';
		if (!strcmp(verb, "QUIT")) {
			s->quitting = 1;
			s->quit_ms = clock_mono_ms();
		} else {
			if (!strcmp(verb, "EHLO") || !strcmp(verb, "HELO")) {
				s->session_auth = 0; /* a new session (or the one after STARTTLS) */
			} else if (!strcmp(verb, "AUTH")) {
				s->session_auth = 1;
				s->no_auth_said = 0;
			} else if (!strcmp(verb, "MAIL") && s->logs_in && !s->session_auth &&
			           !s->no_auth_said) {
				s->no_auth_said = 1;
				s->no_auth_news = 1;
			}
			memcpy(s->verb, verb, n + 1);
			s->reply_len = 0;
		}
	} else if (type == CURLINFO_DATA_OUT) {
		s->reply_len = 0;
	}
	return 0;
}

/* libcurl's progress callback, called about once a second while it waits
 * (CURLOPT_XFERINFOFUNCTION), whatever it waits for: the one place that
 * knows where the send is, and so which bound holds. Until the whole
 * message is handed over, the send as a whole is held to timeout_ms; then
 * the reply to the end of the data gets data_timeout_ms of its own: a
 * server with a before-queue filter or milter may take minutes over it
 * (RFC 5321 4.5.3.2.6 has a client wait 10), and a mail given up in that
 * wait is one the server may have queued. libcurl's own limits cannot
 * tell the two apart: CURLOPT_TIMEOUT_MS bounds the whole transfer and
 * CURLOPT_SERVER_RESPONSE_TIMEOUT every reply alike; they are backstops,
 * the one at the sum of the two bounds, the other at the larger. libcurl's
 * QUIT after a failure, whose reply only CURLOPT_SERVER_RESPONSE_TIMEOUT
 * would bound, gets timeout_ms. */
static int smtp_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                         curl_off_t ulnow)
{
	notif_smtp *s = ud;
	long long limit;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	/* The daemon stopping (or a reload retiring the plugin): the send under
	 * way gets timeout_ms more at most, as every send had before
	 * data_timeout_ms: a wait of up to that would outlast stop_timeout,
	 * and the stop's guard end the process with the event's work lost.
	 * Not cut at once: a server about to answer would have the mail, sent
	 * again after the start. Cut short, it is left for then (classify). */
	if (!s->quitting && s->stopping && s->stopping(s->stopping_ud)) {
		long long now = clock_mono_ms();
		if (!s->stop_seen_ms)
			s->stop_seen_ms = now;
		if (now >= s->stop_seen_ms + s->timeout_ms) {
			s->cut = 1;
			return 1;
		}
	}
	if (s->quitting)
		limit = s->quit_ms + s->timeout_ms;
	else if (s->data_end_ms)
		limit = s->data_end_ms + s->data_timeout_ms;
	else
		limit = s->began_ms + s->timeout_ms;
	if (clock_mono_ms() < limit)
		return 0;
	if (!s->quitting)
		s->timed_out = 1;
	return 1;
}

/* Options that stay the same for every message. */
static int smtp_setup_handle(notif_smtp *s, char *err, size_t errlen)
{
	CURL *c = s->curl;
	CURLcode rc = CURLE_OK;
	char from[320 + 3];
	long longest = s->timeout_ms > s->data_timeout_ms ? s->timeout_ms : s->data_timeout_ms;

	snprintf(from, sizeof from, "<%s>", s->from_addr);
	rc |= curl_easy_setopt(c, CURLOPT_URL, s->url);
	rc |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	/* Never through a proxy (ALL_PROXY, smtp_proxy in the daemon's
	 * environment): libcurl would tunnel the session, the login with it,
	 * through one (evhostd(8): SMTP never uses a proxy). */
	rc |= curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	rc |= curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
	rc |= curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
	rc |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* we run on host threads */
	/* The trace goes to smtp_trace only (not stderr): the server's replies. */
	rc |= curl_easy_setopt(c, CURLOPT_DEBUGFUNCTION, smtp_trace);
	rc |= curl_easy_setopt(c, CURLOPT_DEBUGDATA, s);
	rc |= curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
	/* The bounds are smtp_progress's; the timeouts below are backstops. */
	rc |= curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	rc |= curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, smtp_progress);
	rc |= curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
	rc |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->timeout_ms + s->data_timeout_ms);
	rc |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->timeout_ms);
	rc |= curl_easy_setopt(c, CURLOPT_SERVER_RESPONSE_TIMEOUT, (longest + 999) / 1000);
	rc |= curl_easy_setopt(c, CURLOPT_USE_SSL, s->starttls ? (long)CURLUSESSL_ALL
	                                                        : (long)CURLUSESSL_NONE);
	if (s->ca_file)
		rc |= curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
	if (s->user) {
		rc |= curl_easy_setopt(c, CURLOPT_USERNAME, s->user);
		rc |= curl_easy_setopt(c, CURLOPT_PASSWORD, s->password ? s->password : "");
	}
	if (rc != CURLE_OK) {
		snprintf(err, errlen,
		         "smtp: libcurl refused an option (is it built without SMTP?)");
		return -1;
	}
	return 0;
}

/* A new easy handle in s->curl, set up; 0, or -1 with `err` set and
 * s->curl NULL. */
static int smtp_new_handle(notif_smtp *s, char *err, size_t errlen)
{
	s->curl = curl_easy_init();
	if (!s->curl) {
		snprintf(err, errlen, "smtp: curl_easy_init failed");
		return -1;
	}
	if (smtp_setup_handle(s, err, errlen) < 0) {
		curl_easy_cleanup(s->curl);
		s->curl = NULL;
		return -1;
	}
	return 0;
}

int notif_smtp_open(notif_smtp *s, const notif_smtp_config *c, char *err, size_t errlen)
{
	int smtps, rc = -1;

	memset(s, 0, sizeof *s);
	if (!c->url || (strncmp(c->url, "smtp://", 7) && strncmp(c->url, "smtps://", 8))) {
		snprintf(err, errlen, "smtp_url must start with smtp:// or smtps:// (got \"%s\")",
		         c->url ? c->url : "");
		return -1;
	}
	smtps = !strncmp(c->url, "smtps://", 8);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "smtp: curl_global_init failed");
		return -1;
	}
	if (!curl_has_protocol(smtps ? "smtps" : "smtp")) {
		snprintf(err, errlen, "smtp: this libcurl does not support %s",
		         smtps ? "smtps" : "smtp");
		goto fail_global;
	}
	if (dup_opt(c->url, &s->url) || dup_opt(c->user, &s->user) ||
	    dup_opt(c->password, &s->password) || dup_opt(c->from_addr, &s->from_addr) ||
	    dup_opt(c->ca_file, &s->ca_file)) {
		snprintf(err, errlen, "out of memory");
		rc = -2;
		goto fail;
	}
	s->logs_in = s->user || notif_url_has_user(s->url);
	s->starttls = c->starttls;
	s->timeout_ms = c->timeout_ms;
	s->data_timeout_ms = c->data_timeout_ms > c->timeout_ms ? c->data_timeout_ms : c->timeout_ms;
	s->stopping = c->stopping;
	s->stopping_ud = c->stopping_ud;
	if (smtp_new_handle(s, err, errlen) < 0)
		goto fail;
	if (pthread_mutex_init(&s->mu, NULL) != 0) {
		snprintf(err, errlen, "smtp: cannot create a mutex");
		goto fail;
	}
	return 0;
fail:
	if (s->curl)
		curl_easy_cleanup(s->curl);
	if (s->password)
		explicit_bzero(s->password, strlen(s->password));
	free(s->url);
	free(s->user);
	free(s->password);
	free(s->from_addr);
	free(s->ca_file);
	memset(s, 0, sizeof *s);
fail_global:
	curl_global_cleanup();
	return rc;
}

void notif_smtp_close(notif_smtp *s)
{
	curl_socket_t sock = CURL_SOCKET_BAD;

	if (!s->url) /* never opened, or closed: s->curl may be NULL while open */
		return;
	if (s->curl) {
		/* Closing the kept connection says QUIT, then waits for the
		 * reply up to smtp_timeout_ms (smtp_progress):
		 * a server gone silent (a firewall that dropped the idle
		 * connection) would hold the daemon's stop, or a reload, that
		 * long. The reading side is shut first: the QUIT still goes out,
		 * and its reply is not waited for. */
		if (curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &sock) == CURLE_OK &&
		    sock != CURL_SOCKET_BAD)
			shutdown(sock, SHUT_RD);
		curl_easy_cleanup(s->curl);
	}
	pthread_mutex_destroy(&s->mu);
	if (s->password)
		explicit_bzero(s->password, strlen(s->password));
	free(s->url);
	free(s->user);
	free(s->password);
	free(s->from_addr);
	free(s->ca_file);
	memset(s, 0, sizeof *s);
	curl_global_cleanup();
}

typedef struct upload {
	notif_smtp *s;
	const char *p;
	size_t left;
} upload;

static size_t upload_read(char *buf, size_t size, size_t nitems, void *ud)
{
	upload *u = ud;
	size_t n = size * nitems;

	if (n > u->left)
		n = u->left;
	if (n == 0 && !u->s->data_end_ms) { /* libcurl has it all: the end goes out */
		u->s->data_end_ms = clock_mono_ms();
		u->s->replies_at_data_end = u->s->replies;
	}
	memcpy(buf, u->p, n);
	u->p += n;
	u->left -= n;
	return n;
}

/* The 5xx replies about the session rather than the mail: 530
 * (authentication or STARTTLS required), 534 (mechanism too weak), 535
 * (login denied), 538 (encryption required for the mechanism). */
static int session_code(long code)
{
	return code == 530 || code == 534 || code == 535 || code == 538;
}

/* Of the temporary failures, those where the server could not be talked to
 * at all: no connection, no reply in time (whatever was said before), TLS
 * or the login refused, a 421 (the server closing the session), or no
 * reply code at all (a greeting that is none). Not a reply about this
 * message (a 4xx to MAIL, RCPT or the data), nor one missing after the end
 * of the data (classify). */
static int server_down(CURLcode rc, long code)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_USE_SSL_FAILED:
	case CURLE_LOGIN_DENIED: return 1;
	default: return code == 0 || code == 421 || session_code(code);
	}
}

/* A failed send that had handed libcurl the whole message and got no
 * reply since: whether the server took it is not known. */
static int smtp_outcome_unknown(const notif_smtp *s)
{
	return s->data_end_ms && s->replies == s->replies_at_data_end;
}

/* Only the server's verdict on the message is final: a 5xx reply to its
 * recipient or its content (to RCPT, DATA or the data), by its enhanced
 * code. Whatever is wrong
 * with the connection or the setup is temporary: retried, and
 * dead-lettered at the last attempt, so a redrive sends the mail once it is
 * mended. That is a certificate not trusted, no STARTTLS offered, the
 * session's 5xx replies (session_code), a 5xx before any command of the
 * message (a greeting such as "554 no SMTP service here" or a refused
 * HELO), and a 5xx to MAIL FROM: it names only the configured sender (no
 * SIZE is sent), so "553 sender address rejected" turns every mail away
 * alike, whoever it is for.
 *
 * A 5xx to RCPT is not always about the recipient either. Postfix (with
 * smtpd_delay_reject, its default) says a client, HELO or sender refused
 * only at RCPT TO ("504 5.5.2 <noreply@localhost>: Sender address rejected:
 * need fully-qualified address"), and a relay refuses to pass on a mail
 * without the login ("554 5.7.1 <bob@example.com>: Relay access denied"):
 * failed for good, every mail would be lost alike. The reply's RFC 3463
 * enhanced code tells them apart (notif_smtp_rcpt_refused), never its
 * wording, which is each server's own. Final, about this recipient: 5.1.1,
 * 5.1.2, 5.1.3 and 5.1.6 (no such mailbox or domain, a bad address, one
 * that moved), 5.1.10 (a null MX), 5.2.x (the mailbox disabled or full, the
 * mail too big for it), and a reply with no enhanced code, as before codes
 * were read. The sender refused (5.1.7, 5.1.8) is the setup's, as at MAIL
 * FROM. Any other code (5.7.x: a policy, relay denied, a login required;
 * 5.5.x, 5.3.x, 5.4.x, 5.1.0 ...) may be the setup's or this recipient's:
 * retried, which loses nothing (a mail that keeps failing is dead-lettered
 * at its last attempt, for a redrive), as TRANSIENT rather than DOWN. DOWN
 * stops a broadcast at that recipient, in the same order at each attempt
 * and redrive: a refusal that is that recipient's own ("554 5.7.1 <x>:
 * Recipient address rejected: Access denied") would leave every recipient
 * after it never tried.
 *
 * A 5xx to DATA or to the data likewise (notif_smtp_data_refused): final
 * when the content or the size is refused (5.6.x, 5.3.4), or about this
 * recipient as at RCPT, or when it has no enhanced code; a 5.7.x is a
 * policy, and the sender's authentication (SPF, DKIM, DMARC: RFC 7372's
 * 5.7.20-5.7.26) fails every mail alike until DNS is mended: retried.
 *
 * No reply to the end of the data (smtp_data_timeout_ms ran out, the
 * connection was lost) leaves the outcome unknown: the server has the whole
 * message and may have queued it. Retried (RFC 5321 6.1 has a client take
 * such a mail as not sent), with the same Message-ID, so that a receiver
 * can drop a copy; TRANSIENT, not DOWN, for the server did talk: a
 * broadcast goes on to the next recipient rather than mailing this one
 * again at every attempt and those after it never. */
static notif_send_result classify(const notif_smtp *s, CURLcode rc, long code)
{
	if (s->cut)
		return NOTIF_SEND_CUT;
	if (smtp_outcome_unknown(s))
		return NOTIF_SEND_TRANSIENT;
	if (rc == CURLE_LOGIN_DENIED || session_code(code))
		return NOTIF_SEND_DOWN;
	if (code >= 500 && code < 600) {
		if (!strcmp(s->verb, "RCPT"))
			return notif_smtp_rcpt_refused(s->reply, s->reply_len);
		if (!strcmp(s->verb, "DATA"))
			return notif_smtp_data_refused(s->reply, s->reply_len);
		return NOTIF_SEND_DOWN;
	}
	return server_down(rc, code) ? NOTIF_SEND_DOWN : NOTIF_SEND_TRANSIENT;
}

/* Drop s->curl and its connection, and make a fresh handle (NULL when that
 * ran out of memory: made again at the next send, which says why if not).
 * Closing says QUIT and waits for the reply, which CURLOPT_TIMEOUT does
 * not bound (only the server response timeout does): on a server that
 * stopped answering, that would hold the mutex, and the consumer, in vain.
 * The socket is shut first, so the QUIT fails at once. */
static void smtp_drop_connection(notif_smtp *s)
{
	curl_socket_t sock = CURL_SOCKET_BAD;
	char ebuf[CURL_ERROR_SIZE];

	if (curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &sock) == CURLE_OK &&
	    sock != CURL_SOCKET_BAD)
		shutdown(sock, SHUT_RDWR);
	curl_easy_cleanup(s->curl);
	s->curl = NULL;
	if (smtp_new_handle(s, ebuf, sizeof ebuf) < 0)
		s->curl = NULL;
}

/* Whether the connection s->curl keeps between mails has something to read
 * (a reply nobody asked for, or its end): 0 when there is none open. */
static int smtp_idle_connection_spoke(notif_smtp *s)
{
	curl_socket_t sock = CURL_SOCKET_BAD;
	struct pollfd pfd;

	if (curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &sock) != CURLE_OK ||
	    sock == CURL_SOCKET_BAD)
		return 0;
	pfd.fd = sock;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR));
}

/* What failed a send, into err: libcurl's words, or, for a wait that
 * smtp_progress cut short (libcurl says only "Callback aborted"), which
 * wait and its bound; and whether the server may have the mail. */
static void smtp_failure_text(const notif_smtp *s, CURLcode rc, const char *ebuf, char *err,
                              size_t errlen)
{
	int unknown = smtp_outcome_unknown(s);
	long os_errno = 0;
	size_t used;

	if (s->cut)
		snprintf(err, errlen,
		         "smtp: cut short at %s: the plugin is stopping, and the send was not done "
		         "within %ld ms (smtp_timeout_ms) of that",
		         s->verb[0] ? s->verb : "the greeting", s->timeout_ms);
	else if (s->timed_out && unknown)
		snprintf(err, errlen,
		         "smtp: %s: no reply to the end of the message within %ld ms "
		         "(smtp_data_timeout_ms)",
		         curl_easy_strerror(rc), s->data_timeout_ms);
	else if (s->timed_out)
		snprintf(err, errlen, "smtp: %s: not done within %ld ms (smtp_timeout_ms), at %s",
		         curl_easy_strerror(rc), s->timeout_ms,
		         s->verb[0] ? s->verb : "the greeting");
	else
		snprintf(err, errlen, "smtp: %s%s%s", curl_easy_strerror(rc), ebuf[0] ? ": " : "",
		         ebuf);
	used = strlen(err);
	/* A connection that failed on this side (no descriptor left: EMFILE)
	 * reads as the server's fault in libcurl's words: the OS's reason. */
	if (rc == CURLE_COULDNT_CONNECT && s->curl &&
	    curl_easy_getinfo(s->curl, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno &&
	    !strstr(err, strerror((int)os_errno)))
		snprintf(err + used, errlen > used ? errlen - used : 0, " (%s)",
		         strerror((int)os_errno));
	used = strlen(err);
	if (unknown)
		snprintf(err + used, errlen > used ? errlen - used : 0,
		         "; the server had the whole message and may have queued it: a retry "
		         "sends it with the same Message-ID");
}

int notif_smtp_no_auth_news(notif_smtp *s)
{
	int news;
	pthread_mutex_lock(&s->mu);
	news = s->no_auth_news;
	s->no_auth_news = 0;
	pthread_mutex_unlock(&s->mu);
	return news;
}

notif_send_result notif_smtp_send(notif_smtp *s, const char *rcpt, const char *msg, size_t len,
                                  char *err, size_t errlen)
{
	char to[320 + 3], ebuf[CURL_ERROR_SIZE];
	struct curl_slist *rcpts;
	upload u = {s, msg, len};
	notif_send_result res = NOTIF_SEND_OK;
	CURLcode rc;
	long code = 0;

	snprintf(to, sizeof to, "<%s>", rcpt);
	rcpts = curl_slist_append(NULL, to);
	if (!rcpts) {
		snprintf(err, errlen, "smtp: out of memory");
		return NOTIF_SEND_TRANSIENT;
	}
	ebuf[0] = '\0';
	pthread_mutex_lock(&s->mu);
	/* An idle connection the server has spoken on, or closed, is done
	 * with: what it said unasked can only be its end (a "421 4.4.2 idle
	 * timeout" before it hangs up, as a busy Postfix does after 10 s of
	 * quiet). libcurl would reuse it and read that 421 as the answer to
	 * MAIL, failing a mail the server never saw. */
	if (s->curl && smtp_idle_connection_spoke(s))
		smtp_drop_connection(s);
	if (!s->curl && smtp_new_handle(s, err, errlen) < 0) {
		pthread_mutex_unlock(&s->mu);
		curl_slist_free_all(rcpts);
		return NOTIF_SEND_TRANSIENT;
	}
	for (int fresh_tried = 0;; fresh_tried = 1) {
		long opened = -1;
		curl_easy_setopt(s->curl, CURLOPT_MAIL_RCPT, rcpts);
		curl_easy_setopt(s->curl, CURLOPT_READFUNCTION, upload_read);
		curl_easy_setopt(s->curl, CURLOPT_READDATA, &u);
		curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, ebuf);
		s->reply_len = 0;
		s->replies = 0;
		s->verb[0] = '\0';
		s->quitting = 0;
		s->began_ms = clock_mono_ms();
		s->data_end_ms = s->quit_ms = 0;
		s->timed_out = s->cut = 0;
		s->stop_seen_ms = 0;
		u.p = msg;
		u.left = len;
		rc = curl_easy_perform(s->curl);
		if (rc == CURLE_ABORTED_BY_CALLBACK && s->timed_out)
			rc = CURLE_OPERATION_TIMEDOUT; /* smtp_progress's bound, as libcurl's */
		/* A kept connection that failed before any reply to this send (a
		 * firewall or NAT that dropped it while idle, without a word:
		 * MAIL then waits for nothing, or meets a reset) carried nothing
		 * the server took, its data least of all (that goes after a 354):
		 * once more on a new connection, rather than a retry of the whole
		 * event, or, in a broadcast, every recipient left untried. */
		if (rc == CURLE_OK || fresh_tried || s->replies || s->cut ||
		    curl_easy_getinfo(s->curl, CURLINFO_NUM_CONNECTS, &opened) != CURLE_OK ||
		    opened != 0)
			break;
		smtp_drop_connection(s);
		if (!s->curl && smtp_new_handle(s, err, errlen) < 0) {
			pthread_mutex_unlock(&s->mu);
			curl_slist_free_all(rcpts);
			return NOTIF_SEND_TRANSIENT;
		}
		ebuf[0] = '\0';
	}
	if (rc != CURLE_OK) {
		char said[300] = "";
		curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
		res = classify(s, rc, code);
		smtp_failure_text(s, rc, ebuf, err, errlen);
		/* The reply's text tells a greylisting from a full mailbox or a
		 * policy: said when it is the reply of that code. None came to
		 * the last command (a timeout): none is said. */
		if (code > 0 && s->reply_len > 0) {
			char num[24];
			size_t used = strlen(err);
			snprintf(num, sizeof num, "%ld", code);
			notif_smtp_reply_clean(s->reply, s->reply_len, said, sizeof said);
			if (!said[0] || strncmp(said, num, strlen(num)))
				snprintf(err + used, errlen > used ? errlen - used : 0,
				         " (server replied %s)", num);
			else
				snprintf(err + used, errlen > used ? errlen - used : 0,
				         " (server replied \"%s\")", said);
		}
		/* libcurl keeps the connection of a failed transfer, even one that
		 * timed out waiting for a reply: the next message would then be sent
		 * on it and read the reply still due to this one (a late 554 failing
		 * a mail never offered, a late 250 read as the answer to MAIL FROM).
		 * Dropping the handle closes its connections; the next send, a retry
		 * of this one included, starts on a fresh one. */
		smtp_drop_connection(s);
	} else {
		/* The handle outlives these locals: leave no pointers to them behind. */
		curl_easy_setopt(s->curl, CURLOPT_MAIL_RCPT, NULL);
		curl_easy_setopt(s->curl, CURLOPT_READDATA, NULL);
		curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, NULL);
	}
	pthread_mutex_unlock(&s->mu);
	curl_slist_free_all(rcpts);
	return res;
}
