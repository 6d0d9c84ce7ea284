/* notifications.so: sends a welcome mail when a user is created, keeps its
 * own table of recipients from the user events, sends admin broadcasts to
 * every known recipient, and logs each delivery. This file: configuration,
 * templates, transports, init/fini. */
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../../host/duration.h"
#include "../../host/json.h"
#include "../../host/topics.h"
#include "../common/routes.h"
#include "notif_plugin.h"
#include "notif_util.h"

#ifndef NOTIF_DEFAULT_TEMPLATES_DIR
#define NOTIF_DEFAULT_TEMPLATES_DIR "/usr/share/evhost/templates"
#endif

#define TEMPLATE_MAX_BYTES (1024 * 1024)
#define SECRET_MAX_BYTES 4096
/* The delivery memory's bound (notif_pending.h); tests build a copy of the
 * plugin with a smaller one (CMakeLists.txt). */
#ifndef PENDING_MAX_ENTRIES
#define PENDING_MAX_ENTRIES 16384
#endif

static const evh_config_key notif_config[] = {
    {"topic.user_created", EVH_CFG_STRING, "USER_CREATED", 0, "topic of user creations"},
    {"topic.user_updated", EVH_CFG_STRING, "USER_UPDATED", 0, "topic of user updates"},
    {"topic.user_deleted", EVH_CFG_STRING, "USER_DELETED", 0, "topic of user deletions"},
    {"topic.broadcast", EVH_CFG_STRING, "notifications.broadcast", 0,
     "topic the broadcast requests travel on"},
    {"transport", EVH_CFG_STRING, "maildir", 0, "smtp or maildir"},
    {"smtp_url", EVH_CFG_STRING, NULL, 0, "smtp://host:port or smtps://host:port"},
    {"smtp_user", EVH_CFG_STRING, NULL, 0, "SMTP AUTH user name; unset: no AUTH"},
    {"smtp_password_file", EVH_CFG_FILE, NULL, 0, "file holding the SMTP password"},
    {"smtp_starttls", EVH_CFG_BOOL, "false", 0, "require STARTTLS on smtp:// URLs"},
    {"smtp_ca_file", EVH_CFG_FILE, NULL, 0,
     "PEM CA certificates to verify the SMTP server with; unset: the system's"},
    {"smtp_timeout_ms", EVH_CFG_INT, "10000", 0,
     "timeout per mail, from connecting until its data is out"},
    {"smtp_data_timeout_ms", EVH_CFG_INT, "120000", 0,
     "wait for the reply to a mail's end of data (at least smtp_timeout_ms)"},
    {"from", EVH_CFG_STRING, "evhost <noreply@localhost>", 0, "From: mailbox"},
    {"maildir", EVH_CFG_PATH, NULL, 0, "Maildir for transport = maildir; default <state>/maildir"},
    {"templates_dir", EVH_CFG_DIR, NOTIF_DEFAULT_TEMPLATES_DIR, 0,
     "directory of welcome.* and broadcast.* templates"},
    {"list_role", EVH_CFG_STRING, "admin", 0,
     "role a bearer token needs for GET /notifications; empty: no token needed"},
    {"broadcast_commit_every", EVH_CFG_INT, "500", 0,
     "a broadcast commits what it sent every this many mails, and goes on"},
    {"log_retention", EVH_CFG_STRING, "90d", 0,
     "how long delivery log rows and deleted users are kept: 90d, 36h...; 0: forever"},
    {"retry.max_attempts", EVH_CFG_INT, NULL, 0, "attempts per event; 0: host default"},
    {"retry.backoff_ms", EVH_CFG_INT, NULL, 0, "first retry delay; 0: host default"},
    {"retry.backoff_max_ms", EVH_CFG_INT, NULL, 0, "largest retry delay; 0: host default"},
    {NULL, 0, NULL, 0, NULL},
};

static const evh_migration notif_migrations[] = {
    {1, "CREATE TABLE recipients ("
        " user_id TEXT PRIMARY KEY,"
        " email TEXT NOT NULL,"
        " name TEXT NOT NULL DEFAULT '',"
        " updated_at TEXT NOT NULL);"
        "CREATE TABLE notifications_log ("
        " event_id TEXT PRIMARY KEY,"
        " recipient TEXT NOT NULL,"
        " template TEXT NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN ('sent', 'retrying', 'failed')),"
        " attempts INTEGER NOT NULL,"
        " last_error TEXT,"
        " created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL);"
        "CREATE INDEX notifications_log_page ON notifications_log (created_at, event_id);"
        "CREATE INDEX notifications_log_recipient"
        " ON notifications_log (recipient, created_at, event_id);"},
    /* "dead_lettered": the last attempt failed for a reason that may pass;
     * the event waits in the dead-letter topic for a redrive. SQLite cannot
     * change a CHECK constraint in place: the table is rebuilt. */
    {2, "CREATE TABLE notifications_log_v2 ("
        " event_id TEXT PRIMARY KEY,"
        " recipient TEXT NOT NULL,"
        " template TEXT NOT NULL,"
        " status TEXT NOT NULL"
        "  CHECK (status IN ('sent', 'retrying', 'failed', 'dead_lettered')),"
        " attempts INTEGER NOT NULL,"
        " last_error TEXT,"
        " created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL);"
        "INSERT INTO notifications_log_v2 (event_id, recipient, template, status, attempts,"
        " last_error, created_at, updated_at)"
        " SELECT event_id, recipient, template, status, attempts, last_error, created_at,"
        " updated_at FROM notifications_log;"
        "DROP TABLE notifications_log;"
        "ALTER TABLE notifications_log_v2 RENAME TO notifications_log;"
        "CREATE INDEX notifications_log_page ON notifications_log (created_at, event_id);"
        "CREATE INDEX notifications_log_recipient"
        " ON notifications_log (recipient, created_at, event_id);"},
    /* Users deleted: their creation or update handled later (retried, or
     * on another topic's partition) must not bring them back. */
    {3, "CREATE TABLE deleted_recipients ("
        " user_id TEXT PRIMARY KEY,"
        " deleted_at TEXT NOT NULL);"},
    /* A user's events may be handled out of order (notif_events.c): each
     * field keeps the version of the event that set it (NULL: the
     * creation's; '': set before versions were kept, newer than any
     * creation, older than any versioned update), and an update handled
     * before the creation is kept even without an address (email NULL: not
     * mailed until one is known). NOT NULL cannot be dropped in place: the
     * table is rebuilt. */
    {4, "CREATE TABLE recipients_v4 ("
        " user_id TEXT PRIMARY KEY,"
        " email TEXT,"
        " name TEXT NOT NULL DEFAULT '',"
        " updated_at TEXT NOT NULL,"
        " email_version TEXT,"
        " name_version TEXT);"
        "INSERT INTO recipients_v4 (user_id, email, name, updated_at, email_version,"
        " name_version)"
        " SELECT user_id, email, name, updated_at, '', '' FROM recipients;"
        "DROP TABLE recipients;"
        "ALTER TABLE recipients_v4 RENAME TO recipients;"
        "CREATE INDEX recipients_waiting ON recipients (updated_at) WHERE email IS NULL;"},
    /* log_retention (notif_prune.c): the deleted users by age, and a
     * broadcast's dead-lettered mails by the part of their row's id before
     * its first ':' (the broadcast id, or its start), so that the settled
     * rows of a broadcast that waits for a redrive are found to stay. */
    {5, "CREATE INDEX deleted_recipients_age ON deleted_recipients (deleted_at);"
        "CREATE INDEX notifications_log_parked ON notifications_log"
        " (substr(event_id, 1, instr(event_id, ':')), updated_at)"
        " WHERE status = 'dead_lettered' AND template = 'broadcast';"},
};

/* ------------------------------------------------------------- files */

/* Read a whole file (at most `max` bytes) into a NUL-terminated buffer.
 * EVH_OK, or EVH_ENOMEM or EVH_EINVAL (what was wrong in `err`). `mode`,
 * when not NULL, gets the file's mode (that of the file read: fstat), or 0
 * if it cannot be had. */
static int read_file(const char *path, size_t max, notif_text *out, mode_t *mode, char *err,
                     size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	struct stat st;
	size_t n;

	if (!f) {
		int e = errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
		return e == ENOMEM ? EVH_ENOMEM : EVH_EINVAL;
	}
	if (mode)
		*mode = fstat(fileno(f), &st) == 0 ? st.st_mode : 0;
	buf = malloc(max + 1);
	if (!buf) {
		snprintf(err, errlen, "out of memory reading %s", path);
		fclose(f);
		return EVH_ENOMEM;
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f) || n > max) {
		snprintf(err, errlen, ferror(f) ? "cannot read %s" : "%s is larger than %zu bytes",
		         path, max);
		free(buf);
		fclose(f);
		return EVH_EINVAL;
	}
	fclose(f);
	buf[n] = '\0';
	if (memchr(buf, '\0', n)) {
		snprintf(err, errlen, "%s contains a NUL byte", path);
		free(buf);
		return EVH_EINVAL;
	}
	out->p = buf;
	out->n = n;
	return 0;
}

/* A secret as the host reads its own: one trailing newline (LF or CRLF)
 * dropped, which editors add; anything else, spaces too, is the secret. */
static void strip_newline(notif_text *t)
{
	if (t->n && t->p[t->n - 1] == '\n')
		t->p[--t->n] = '\0';
	if (t->n && t->p[t->n - 1] == '\r')
		t->p[--t->n] = '\0';
}

static void strip_trailing_space(notif_text *t)
{
	while (t->n && strchr(" \t\r\n", t->p[t->n - 1]))
		t->p[--t->n] = '\0';
}

static void text_free(notif_text *t)
{
	free(t->p);
	t->p = NULL;
	t->n = 0;
}

static const char *const welcome_vars[] = {"name", "email", "id"};
static const char *const broadcast_vars[] = {"name", "email", "id", "subject", "message"};

static int load_template(evh_plugin *p, const char *dir, const char *file,
                         const char *const *names, size_t nnames, notif_text *out)
{
	char path[4096], err[512], bad[64];
	long at, bom = 0;
	int rc;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	if ((rc = read_file(path, TEMPLATE_MAX_BYTES, out, NULL, err, sizeof err)) != EVH_OK) {
		evh_log(p, EVH_LOG_ERROR, "templates_dir: %s", err);
		return rc;
	}
	/* A byte order mark some editors write would be sent as the mail's
	 * first character (the subject's too); bytes that are not UTF-8 (a file
	 * saved as Latin-1) would go out labelled UTF-8 and show as stray
	 * characters, the message cut in odd places. */
	if (out->n >= 3 && !memcmp(out->p, "\xEF\xBB\xBF", 3)) {
		memmove(out->p, out->p + 3, (out->n -= 3) + 1);
		bom = 3;
	}
	if ((at = json_utf8_error(out->p, out->n)) >= 0) {
		evh_log(p, EVH_LOG_ERROR, "%s: invalid UTF-8 at byte %ld (save the file as UTF-8)",
		        path, at + bom);
		text_free(out);
		return EVH_EINVAL;
	}
	if (notif_template_check(out->p, out->n, names, nnames, bad, sizeof bad)) {
		evh_log(p, EVH_LOG_ERROR, "%s: unknown placeholder {{%s}}", path, bad);
		text_free(out);
		return EVH_EINVAL;
	}
	return EVH_OK;
}

/* EVH_OK, or the first template's error (said in the log). */
static int load_templates(notif_state *st)
{
	const char *dir = evh_config_str(st->p, "templates_dir");
	notif_templates *t = &st->tpl;
	int rc;

	if (!dir || !*dir) {
		evh_log(st->p, EVH_LOG_ERROR, "templates_dir is empty");
		return EVH_EINVAL;
	}
	if ((rc = load_template(st->p, dir, "welcome.subject", welcome_vars, 3,
	                        &t->welcome_subject)) ||
	    (rc = load_template(st->p, dir, "welcome.txt", welcome_vars, 3, &t->welcome_txt)) ||
	    (rc = load_template(st->p, dir, "welcome.html", welcome_vars, 3, &t->welcome_html)) ||
	    (rc = load_template(st->p, dir, "broadcast.txt", broadcast_vars, 5,
	                        &t->broadcast_txt)) ||
	    (rc = load_template(st->p, dir, "broadcast.html", broadcast_vars, 5,
	                        &t->broadcast_html)))
		return rc;
	strip_trailing_space(&t->welcome_subject);
	return EVH_OK;
}

static void free_templates(notif_templates *t)
{
	text_free(&t->welcome_subject);
	text_free(&t->welcome_txt);
	text_free(&t->welcome_html);
	text_free(&t->broadcast_txt);
	text_free(&t->broadcast_html);
}

/* ---------------------------------------------------------- transports */

/* The host of an smtp:// or smtps:// URL: after "//" and any "user@", up
 * to a port, path or the end; "" when there is none. */
static void url_host(const char *url, char *out, size_t outlen)
{
	const char *h = url ? strstr(url, "//") : NULL, *at, *end;
	size_t n;
	out[0] = '\0';
	if (!h)
		return;
	h += 2;
	end = h + strcspn(h, "/?#");
	if ((at = memchr(h, '@', (size_t)(end - h))))
		h = at + 1;
	if (*h == '[')
		n = strcspn(h, "]") + (h[strcspn(h, "]")] == ']');
	else
		n = strcspn(h, ":/?#");
	if (h + n > end)
		n = (size_t)(end - h);
	snprintf(out, outlen, "%.*s", (int)n, h);
}

/* notif_smtp_config's stopping. */
static int smtp_stopping(void *ud) { return evh_stopping(ud); }

static int open_smtp(notif_state *st)
{
	const char *user = evh_config_str(st->p, "smtp_user");
	const char *pwfile = evh_config_str(st->p, "smtp_password_file");
	int64_t timeout = evh_config_int(st->p, "smtp_timeout_ms", 10000);
	int64_t data_timeout = evh_config_int(st->p, "smtp_data_timeout_ms", 120000);
	notif_text pw = {NULL, 0};
	mode_t mode = 0;
	notif_smtp_config c;
	char err[512];
	int rc;

	if (user && !*user)
		user = NULL;
	if (user) {
		/* The message names the file, never its contents. */
		if ((rc = read_file(pwfile, SECRET_MAX_BYTES, &pw, &mode, err, sizeof err)) != EVH_OK) {
			evh_log(st->p, EVH_LOG_ERROR, "smtp_password_file: %s", err);
			return rc;
		}
		/* As the host says of its own secret files: not refused (a test
		 * machine may mean it), but said. */
		if (S_ISREG(mode) && (mode & S_IROTH))
			evh_log(st->p, EVH_LOG_WARN,
			        "smtp_password_file: '%s' is readable by every local account (mode "
			        "%04o): chmod o-r it",
			        pwfile, (unsigned)(mode & 07777));
		strip_newline(&pw);
	}
	memset(&c, 0, sizeof c);
	c.url = evh_config_str(st->p, "smtp_url");
	url_host(c.url, st->server_address, sizeof st->server_address);
	c.user = user;
	c.password = pw.p;
	c.starttls = evh_config_bool(st->p, "smtp_starttls", 0);
	c.ca_file = evh_config_str(st->p, "smtp_ca_file");
	if (c.ca_file && !*c.ca_file)
		c.ca_file = NULL;
	c.timeout_ms = (long)timeout;
	c.data_timeout_ms = (long)data_timeout;
	c.from_addr = st->from_addr;
	c.stopping = smtp_stopping;
	c.stopping_ud = st->p;
	rc = notif_smtp_open(&st->smtp, &c, err, sizeof err);
	if (pw.p)
		explicit_bzero(pw.p, pw.n);
	text_free(&pw);
	if (rc < 0) {
		evh_log(st->p, EVH_LOG_ERROR, "%s", err);
		return rc == -2 ? EVH_ENOMEM : EVH_EINVAL;
	}
	return EVH_OK;
}

static int open_maildir(notif_state *st)
{
	const char *dir = evh_config_str(st->p, "maildir");
	char fallback[4096], err[512];
	int rc;

	if (!dir || !*dir) {
		snprintf(fallback, sizeof fallback, "%s/maildir", evh_state_dir(st->p));
		dir = fallback;
	}
	if ((rc = notif_maildir_open(&st->maildir, dir, err, sizeof err)) < 0) {
		evh_log(st->p, EVH_LOG_ERROR, "maildir: %s", err);
		return rc == -2 ? EVH_ENOMEM : EVH_EINVAL;
	}
	return EVH_OK;
}

/* After check_values: st->use_smtp says which. EVH_OK, or why not (said in
 * the log). */
static int open_transport(notif_state *st)
{
	return st->use_smtp ? open_smtp(st) : open_maildir(st);
}

static void close_transport(notif_state *st)
{
	if (st->use_smtp)
		notif_smtp_close(&st->smtp);
	else
		notif_maildir_close(&st->maildir);
}

notif_send_result notif_deliver(notif_state *st, const notif_content *c, const char *key,
                                const char *to_addr, const char *to_name, char *err,
                                size_t errlen)
{
	char *subject = NULL, *text = NULL, *html = NULL, *msg = NULL;
	char unique[33];
	evh_span *span;
	struct timespec t0, t1;
	notif_send_result res = NOTIF_SEND_TRANSIENT;
	notif_mail m;
	size_t len;

	if (c->subject_tpl)
		subject = notif_render(c->subject_tpl->p, c->subject_tpl->n, c->vars, c->nvars,
		                       NOTIF_ESC_NONE, NULL);
	text = notif_render(c->txt->p, c->txt->n, c->vars, c->nvars, NOTIF_ESC_NONE, NULL);
	html = notif_render(c->html->p, c->html->n, c->vars, c->nvars, NOTIF_ESC_HTML, NULL);
	if ((c->subject_tpl && !subject) || !text || !html) {
		snprintf(err, errlen, "out of memory rendering %s", c->tmpl_name);
		goto out;
	}
	notif_delivery_unique(key, to_addr, st->from_addr, unique);
	memset(&m, 0, sizeof m);
	m.from_name = st->from_name;
	m.from_addr = st->from_addr;
	m.to_name = to_name;
	m.to_addr = to_addr;
	m.subject = subject ? subject : c->subject;
	m.text = text;
	m.html = html;
	m.date = time(NULL);
	m.unique = unique;
	switch (notif_mail_build(&m, &msg, &len)) {
	case 0: break;
	case -2:
		/* Memory may come back: tried again with the event, not failed. */
		snprintf(err, errlen, "out of memory building the message");
		goto out;
	default:
		snprintf(err, errlen, "cannot build the message to <%s>", to_addr);
		res = NOTIF_SEND_PERMANENT;
		goto out;
	}
	/* A span of the plugin's own in the event's trace: the send is what
	 * takes time, and what fails. No recipient in it (spans leave the
	 * host): libcurl's and the Maildir's errors name codes and files. */
	span = st->use_smtp ? evh_span_begin(st->p, EVH_SPAN_CLIENT, "smtp send")
	                    : evh_span_begin(st->p, EVH_SPAN_INTERNAL, "maildir write");
	evh_span_set(span, "evhost.notification.template", c->tmpl_name);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (st->use_smtp) {
		evh_span_set(span, "server.address", st->server_address);
		res = notif_smtp_send(&st->smtp, to_addr, msg, len, err, errlen);
		if (notif_smtp_no_auth_news(&st->smtp))
			evh_log(st->p, EVH_LOG_WARN,
			        "smtp: %s, but %s offered no AUTH (its EHLO listed none), so mail "
			        "goes out without logging in; a server that offers AUTH only over "
			        "TLS needs smtp_starttls = true (said once until a login happens "
			        "again)",
			        st->smtp.user ? "smtp_user is set" : "smtp_url names a user",
			        st->server_address);
	} else {
		unsigned remade = __atomic_load_n(&st->maildir.remade, __ATOMIC_RELAXED);
		res = notif_maildir_deliver(&st->maildir, msg, len, NULL, 0, err, errlen);
		/* Until a write goes through: the waiting events say nothing to
		 * /metrics, and evhost_store_full is the database's alone. */
		if (res == NOTIF_SEND_OK || res == NOTIF_SEND_NO_ROOM)
			evh_metric_set(st->maildir_full, NULL, res == NOTIF_SEND_NO_ROOM);
		if (__atomic_load_n(&st->maildir.remade, __ATOMIC_RELAXED) != remade)
			evh_log(st->p, EVH_LOG_WARN,
			        "maildir: %s, or its tmp/ or new/, was removed: made again",
			        st->maildir.dir);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	evh_metric_observe(st->send_time, NULL,
	                   (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	evh_span_end(span, res == NOTIF_SEND_OK ? NULL : err);
out:
	/* Every message that was due, by what became of it (a failed one is
	 * tried again, with its event: counted at each try). */
	if (res != NOTIF_SEND_CUT) /* a stop's: no outcome */
		evh_metric_add(st->mails,
		               res == NOTIF_SEND_OK          ? "sent"
		               : res == NOTIF_SEND_PERMANENT ? "refused"
		                                             : "failed",
		               1);
	free(subject);
	free(text);
	free(html);
	free(msg);
	return res;
}

/* ------------------------------------------------------------ init/fini */

static int subscribe(notif_state *st, const char *topic, const char *type,
                     evh_event_handler handler)
{
	evh_subscription sub;
	int rc;

	memset(&sub, 0, sizeof sub);
	sub.struct_size = sizeof sub;
	sub.topic = topic;
	sub.type = type;
	sub.handler = handler;
	sub.ud = st;
	sub.max_attempts = st->max_attempts;
	sub.backoff_ms = (int)evh_config_int(st->p, "retry.backoff_ms", 0);
	sub.backoff_max_ms = (int)evh_config_int(st->p, "retry.backoff_max_ms", 0);
	rc = evh_subscribe(st->p, &sub);
	if (rc != EVH_OK)
		evh_log(st->p, EVH_LOG_ERROR, "cannot subscribe to topic %s: %s", topic,
		        evh_strerror(rc));
	return rc;
}

static int route(notif_state *st, const char *method, const char *pattern,
                 evh_http_handler handler, uint32_t flags, const char *role)
{
	evh_route r;

	memset(&r, 0, sizeof r);
	r.struct_size = sizeof r;
	r.method = method;
	r.pattern = pattern;
	r.handler = handler;
	r.ud = st;
	r.flags = flags;
	r.role = role;
	/* A refusal is said by the host, and is what a failed init quotes. */
	return evh_http_route_ex(st->p, &r);
}

/* `from`: a mailbox whose display name is UTF-8 (a Latin-1 file's "ó"
 * would go out in a header labelled UTF-8, shown as a stray character) and
 * fits, whole, in from_name. */
static int check_from(evh_plugin *p, notif_state *st, const char *from)
{
	long bad = from ? json_utf8_error(from, strlen(from)) : -1;
	int r;
	if (bad >= 0) {
		evh_config_error(p, "from", "invalid UTF-8 at byte %ld (save the file as UTF-8)",
		                 bad);
		return -1;
	}
	r = from ? notif_mailbox_parse(from, st->from_name, sizeof st->from_name, st->from_addr,
	                               sizeof st->from_addr)
	         : -1;
	if (r == -2)
		evh_config_error(p, "from", "the display name is longer than %zu bytes",
		                 sizeof st->from_name - 1);
	else if (r < 0)
		evh_config_error(p, "from",
		                 "must be \"Name <local@domain>\" or \"local@domain\" (got \"%s\")",
		                 from ? from : "");
	return r < 0 ? -1 : 0;
}

/* The subscription's retry policy: the ranges of the host's [kafka] retry.*
 * (0 here takes the host's value), and backoff_max_ms not below backoff_ms
 * when both are set (the host refuses the subscription otherwise). */
static int check_retry_keys(evh_plugin *p, notif_state *st)
{
	static const struct {
		const char *key;
		int64_t max;
	} keys[] = {
	    {"retry.max_attempts", EVH_RETRY_ATTEMPTS_MAX},
	    {"retry.backoff_ms", EVH_RETRY_BACKOFF_MS_MAX},
	    {"retry.backoff_max_ms", EVH_RETRY_BACKOFF_MAX_MS_MAX},
	};
	int64_t backoff, backoff_max;
	int rc = 0;
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		int64_t v = evh_config_int(p, keys[i].key, 0);
		if (v < 0 || v > keys[i].max) {
			evh_config_error(p, keys[i].key,
			                 "must be 0 (the host's [kafka] %s) or between 1 and %" PRId64
			                 " (got %" PRId64 ")",
			                 keys[i].key, keys[i].max, v);
			rc = -1;
		}
	}
	backoff = evh_config_int(p, "retry.backoff_ms", 0);
	backoff_max = evh_config_int(p, "retry.backoff_max_ms", 0);
	if (backoff > 0 && backoff_max > 0 && backoff_max < backoff) {
		evh_config_error(p, "retry.backoff_max_ms",
		                 "%" PRId64 " must not be below retry.backoff_ms (%" PRId64 ")",
		                 backoff_max, backoff);
		rc = -1;
	}
	st->max_attempts = (int)evh_config_int(p, "retry.max_attempts", 0);
	return rc;
}

/* broadcast_commit_every: how many mails a broadcast settles in one
 * transaction before it commits them and goes on (1..PENDING_MAX_ENTRIES /
 * 4, so that memory's "sent" entries of one transaction are never pushed
 * out by its own later ones: notif_pending). */
static int check_commit_every(evh_plugin *p, notif_state *st)
{
	int64_t v = evh_config_int(p, "broadcast_commit_every", 500);
	if (v < 1 || v > PENDING_MAX_ENTRIES / 4) {
		evh_config_error(p, "broadcast_commit_every",
		                 "must be between 1 and %d (got %" PRId64 ")",
		                 PENDING_MAX_ENTRIES / 4, v);
		return -1;
	}
	st->commit_every = (int)v;
	return 0;
}

/* transport, and for smtp the keys that need neither the network nor the
 * password file: the URL's scheme, host and port, the timeout, user and
 * password together. */
static int check_transport(evh_plugin *p, notif_state *st)
{
	const char *t = evh_config_str(p, "transport"), *url, *user, *pwfile;
	char why[256], host[256];
	int rc = 0;

	if (t && !strcmp(t, "maildir"))
		return 0;
	if (!t || strcmp(t, "smtp")) {
		evh_config_error(p, "transport", "must be smtp or maildir (got \"%s\")", t ? t : "");
		return -1;
	}
	st->use_smtp = 1;
	/* The host and port too: libcurl reads the URL only when it sends, so
	 * one without a host, or with a port out of range, would start and then
	 * fail every mail. */
	url = evh_config_str(p, "smtp_url");
	user = evh_config_str(p, "smtp_user");
	pwfile = evh_config_str(p, "smtp_password_file");
	if (notif_smtp_url_check(url, why, sizeof why) < 0) {
		evh_config_error(p, "smtp_url", "%s", why);
		rc = -1;
	} else if (((user && *user) || notif_url_has_user(url)) &&
	           notif_smtp_url_in_clear(url, evh_config_bool(p, "smtp_starttls", 0), host,
	                                   sizeof host)) {
		/* libcurl logs in whenever it has a user, with AUTH PLAIN or LOGIN
		 * if the server offers them: on smtp:// without STARTTLS, the
		 * password in clear, for anyone on the way to read. */
		evh_config_error(p, user && *user ? "smtp_user" : "smtp_url",
		                 "%s, but smtp_url is smtp:// to %s without smtp_starttls = true: the "
		                 "password would go out in clear; use smtps:// or set smtp_starttls = "
		                 "true (a login in clear is allowed only to a loopback address: "
		                 "localhost, 127.0.0.0/8, ::1)",
		                 user && *user ? "is set" : "names a user", host);
		rc = -1;
	}
	if (user && *user && (!pwfile || !*pwfile)) {
		evh_config_error(p, "smtp_user", "is set but smtp_password_file is not");
		rc = -1;
	}
	for (size_t i = 0; i < 2; i++) {
		static const char *const keys[] = {"smtp_timeout_ms", "smtp_data_timeout_ms"};
		static const int64_t dflt[] = {10000, 120000};
		int64_t timeout = evh_config_int(p, keys[i], dflt[i]);
		if (timeout < 1 || timeout > 24 * 3600 * 1000) {
			evh_config_error(p, keys[i], "must be between 1 and 86400000 (got %" PRId64 ")",
			                 timeout);
			rc = -1;
		}
	}
	return rc;
}

/* log_retention, as the host's [store] inbox_retention is written
 * (duration.h). Under a day is refused: a broadcast's rows are what keeps
 * its retries, and its redrive, from mailing again those it reached, and
 * its retries may last hours. At most a century, so the cutoff is a date. */
#define LOG_RETENTION_MIN_MS (86400000LL)
#define LOG_RETENTION_MAX_MS (36500LL * 86400000)

static int check_log_retention(evh_plugin *p, notif_state *st)
{
	const char *v = evh_config_str(p, "log_retention");
	int64_t ms;

	if (!v || duration_parse_ms(v, &ms) != 0) {
		evh_config_error(p, "log_retention",
		                 "must be a duration such as 90d, 36h or 2160h, or 0 to keep forever "
		                 "(got \"%s\")",
		                 v ? v : "");
		return -1;
	}
	if (ms != 0 && (ms < LOG_RETENTION_MIN_MS || ms > LOG_RETENTION_MAX_MS)) {
		evh_config_error(p, "log_retention",
		                 "must be 0 (keep forever) or from 1d to 36500d (got \"%s\"): the "
		                 "rows of a broadcast are what keeps its retries and redrive from "
		                 "mailing again those it reached",
		                 v);
		return -1;
	}
	st->log_retention_ms = ms;
	return 0;
}

static const char *const topic_keys[] = {"topic.user_created", "topic.user_updated",
                                          "topic.user_deleted", "topic.broadcast"};

/* Every value init checks that needs neither files nor the network, into
 * `st` (a scratch one for the descriptor's check): topics, from, retry.*,
 * transport and its smtp_* keys, log_retention. Each problem is said at its key; -1 when
 * there was one. Pure: the check and init both run it. */
static int check_values(evh_plugin *p, notif_state *st)
{
	const char *from = evh_config_str(p, "from");
	const char **topics[] = {&st->topic_created, &st->topic_updated, &st->topic_deleted,
	                         &st->topic_broadcast};
	const char *names[4];
	size_t same;
	int rc = 0;

	/* Each is subscribed to, and a name Kafka refuses names no topic: said
	 * here, at its key, before anything starts. The user handlers
	 * subscribe without a type filter (plain producers send none), so the
	 * topic is what tells the events apart: the four must differ. */
	for (size_t i = 0; i < 4; i++) {
		*topics[i] = names[i] = evh_config_str(p, topic_keys[i]);
		if (!names[i] || !*names[i]) {
			evh_config_error(p, topic_keys[i], "must not be empty");
			rc = -1;
		} else if (!topics_name_ok(names[i])) {
			evh_config_error(p, topic_keys[i],
			                 "'%s' is not a Kafka topic name (" TOPICS_NAME_RULE ")", names[i]);
			rc = -1;
		} else if ((same = topics_same_before(names, i)) < i) {
			evh_config_error(p, topic_keys[i],
			                 "'%s' is %s's topic too: topic.user_created, "
			                 "topic.user_updated, topic.user_deleted and "
			                 "topic.broadcast must differ",
			                 names[i], topic_keys[same]);
			rc = -1;
		}
	}
	if (check_from(p, st, from) < 0)
		rc = -1;
	if (check_retry_keys(p, st) < 0)
		rc = -1;
	if (check_commit_every(p, st) < 0)
		rc = -1;
	if (check_transport(p, st) < 0)
		rc = -1;
	if (check_log_retention(p, st) < 0)
		rc = -1;
	return rc;
}

/* The descriptor's check (ABI 1.7): check_values on a scratch state (the
 * main thread's stack; nothing in it is opened). */
static int notif_check(evh_plugin *p)
{
	notif_state scratch;

	memset(&scratch, 0, sizeof scratch);
	return check_values(p, &scratch) < 0 ? EVH_EINVAL : EVH_OK;
}

/* The routes, for the registration and the declaration (routes.h). */
#define NOTIF_ROUTES(X)                                                                    \
	X("GET", "/notifications", notif_http_list, list_auth ? EVH_ROUTE_AUTH : 0u,           \
	  list_auth ? list_role : NULL)                                                        \
	X("POST", "/notifications/broadcast", notif_http_broadcast,                            \
	  EVH_ROUTE_JSON | EVH_ROUTE_AUTH, "admin")                                            \
	X("GET", "/notifications/stream", notif_http_stream, EVH_ROUTE_AUTH, NULL)

static const char *const notif_routes[] = {NOTIF_ROUTES(ROUTES_DECLARED) NULL};

/* EVH_OK, or the first refusal's error (said in the log). */
static int register_all(notif_state *st)
{
	const char *list_role = evh_config_str(st->p, "list_role");
	int list_auth = list_role && *list_role, rc;

	if ((rc = subscribe(st, st->topic_created, NULL, notif_on_user_created)) ||
	    (rc = subscribe(st, st->topic_updated, NULL, notif_on_user_updated)) ||
	    (rc = subscribe(st, st->topic_deleted, NULL, notif_on_user_deleted)) ||
	    (rc = subscribe(st, st->topic_broadcast, NOTIF_BROADCAST_TYPE, notif_on_broadcast)))
		return rc;
	const routes_entry routes[] = {NOTIF_ROUTES(ROUTES_ENTRY)};

	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if ((rc = route(st, routes[i].method, routes[i].pattern, routes[i].handler,
		                routes[i].flags, routes[i].role)))
			return rc;
	return EVH_OK;
}

static int notif_init(evh_plugin *p, void **state)
{
	notif_state *st;
	int transport_open = 0, rc;

	if (sodium_init() < 0) { /* the Message-IDs are its hashes (notif_delivery_unique) */
		evh_log(p, EVH_LOG_ERROR, "libsodium failed to initialise");
		return EVH_ERR;
	}
	if (!(st = calloc(1, sizeof *st))) {
		evh_log(p, EVH_LOG_ERROR, "out of memory");
		return EVH_ENOMEM;
	}
	st->p = p;
	/* check_values again: a host older than ABI 1.7 never ran notif_check. */
	rc = EVH_EINVAL;
	if (check_values(p, st) < 0 || (rc = load_templates(st)) != EVH_OK)
		goto fail;
	if ((rc = open_transport(st)) != EVH_OK)
		goto fail;
	transport_open = 1;
	if (notif_pending_init(&st->pending, PENDING_MAX_ENTRIES) < 0) {
		evh_log(p, EVH_LOG_ERROR, "out of memory");
		rc = EVH_ENOMEM;
		goto fail;
	}
	rc = evh_migrate(p, notif_migrations, sizeof notif_migrations / sizeof notif_migrations[0]);
	if (rc != EVH_OK) {
		evh_log(p, EVH_LOG_ERROR, "schema migration failed: %s", evh_strerror(rc));
		goto fail;
	}
	if ((rc = register_all(st)) != EVH_OK)
		goto fail;
	/* Not a reason to refuse to start: the host's log says why. */
	st->mails = evh_metric_new(p, EVH_METRIC_COUNTER, "notifications_mails_total",
	                           "Messages due to a recipient, by result: sent, failed (tried "
	                           "again later, counted at each try) or refused (not retried).",
	                           "result");
	/* Each result there at 0 from the start: Prometheus takes a series
	 * first seen at 1 for one that was always 1 (increase() misses it). */
	evh_metric_add(st->mails, "sent", 0);
	evh_metric_add(st->mails, "failed", 0);
	evh_metric_add(st->mails, "refused", 0);
	st->send_time = evh_metric_new(p, EVH_METRIC_HISTOGRAM, "notifications_send_seconds",
	                               "Time to hand one message to the SMTP server, or to write "
	                               "it to the Maildir, in seconds.",
	                               NULL);
	/* Declared with SMTP too, at 0: a reload that leaves the Maildir does
	 * not leave its last value behind. */
	st->maildir_full = evh_metric_new(p, EVH_METRIC_GAUGE, "notifications_maildir_full",
	                                  "1 while the Maildir (transport = maildir) has no room "
	                                  "for a mail (a full disk, a quota): its events wait.",
	                                  NULL);
	evh_metric_set(st->maildir_full, NULL, 0);
	evh_log(p, EVH_LOG_INFO, "sending mail via %s as <%s>", st->use_smtp ? "smtp" : "maildir",
	        st->from_addr);
	/* Last: fail: has no thread to stop. */
	if ((rc = notif_prune_start(st)) != EVH_OK)
		goto fail;
	*state = st;
	return EVH_OK;
fail:
	if (transport_open)
		close_transport(st);
	notif_pending_destroy(&st->pending);
	free_templates(&st->tpl);
	free(st);
	return rc;
}

static void notif_fini(evh_plugin *p, void *state)
{
	notif_state *st = state;

	(void)p;
	if (!st)
		return;
	notif_prune_stop(st); /* first: its transactions use the database */
	close_transport(st);
	notif_pending_destroy(&st->pending);
	notif_last_parts_clear(&st->last_parts);
	free_templates(&st->tpl);
	free(st);
}

EVH_PLUGIN_ROUTES("notifications", "1.0.0", "Welcome mails, broadcasts and a delivery log",
                  notif_config, notif_check, notif_routes, notif_init, notif_fini)
