/* Event handlers: the recipients read model (USER_CREATED / USER_UPDATED /
 * USER_DELETED), welcome mails, and broadcasts.
 *
 * Delivery state. Writes go through the handler's `tx`, which the host
 * commits with the inbox record on OK and rolls back on RETRY and REJECT.
 * So outcomes that end an event's handling are written to the
 * notifications_log table: "sent", and "failed" when the server refused
 * for good (5xx); the handler returns OK. When the last attempt fails for
 * a reason that may pass (server down, timeout, 4xx), the row says
 * "dead_lettered" and the handler returns KEEP_AND_DEAD_LETTER: the rows
 * and the recipient the event carried commit, and the event waits in the
 * dead-letter topic until an operator redrives it; the redriven copy sends
 * what is still unsent. An undeliverable mail is not a poison event:
 * returning REJECT would also roll back the recipient the same event
 * carried, and the "sent" rows of a broadcast. A broadcast with mails left
 * to retry returns KEEP_AND_RETRY: the rows of those settled commit (the
 * retry, even after a restart, sends only the others), but not "retrying".
 * A welcome mail to retry returns KEEP_AND_RETRY too, so that its
 * recipient commits (a broadcast meanwhile reaches the user; a deletion
 * meanwhile is kept, deleted_recipients). "retrying" lives in memory
 * (notif_pending.h); memory also remembers mails that left while their row
 * was not yet committed (a commit that failed), so a retry does not send
 * them twice. REJECT is kept for events whose data is unusable: they go to
 * the dead-letter topic.
 *
 * Order. A user's creation, updates and deletion travel on three topics,
 * and a dead letter is redriven after newer events: they may be handled in
 * another order than they were published. The recipient's email and name
 * each keep the version of the update that set them (its ce_time, then
 * evhost_seq: notif_event_version), and an update sets a field only when it
 * is not older. The creation, older than any update of its user, fills in
 * only the fields no update set; the deletion is final (deleted_recipients).
 * So the newest data wins whatever the order. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/jsonin.h"
#include "notif_plugin.h"
#include "notif_util.h"

#define ID_MAX 256 /* longest user or broadcast id we accept */

/* ------------------------------------------------------------ log table */

/* 1 with the row's status copied, 0 when there is no row, -1 on error. */
static int log_status(evh_tx *tx, const char *log_id, char status[NOTIF_STATUS_LEN])
{
	evh_value arg = EVH_TEXT(log_id);
	evh_rows *rows;
	int rc;

	if (evh_query(tx, "SELECT status FROM notifications_log WHERE event_id = ?", &arg, 1,
	              &rows) != EVH_OK)
		return -1;
	rc = evh_rows_next(rows);
	if (rc == 1)
		snprintf(status, NOTIF_STATUS_LEN, "%s", evh_rows_text(rows, 0, NULL));
	evh_rows_close(rows);
	return rc < 0 ? -1 : rc;
}

static int log_write(evh_tx *tx, const char *log_id, const char *recipient, const char *tmpl,
                     const char *status, int attempts, const char *last_error,
                     const char *created_at, const char *updated_at)
{
	evh_value args[8] = {
	    EVH_TEXT(log_id),  EVH_TEXT(recipient), EVH_TEXT(tmpl),       EVH_TEXT(status),
	    EVH_INT(attempts), EVH_NULL(),          EVH_TEXT(created_at), EVH_TEXT(updated_at),
	};

	if (last_error)
		args[5] = EVH_TEXT(last_error);
	return evh_exec(tx,
	                "INSERT INTO notifications_log (event_id, recipient, template, status,"
	                " attempts, last_error, created_at, updated_at)"
	                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
	                " ON CONFLICT (event_id) DO UPDATE SET recipient = excluded.recipient,"
	                " status = excluded.status,"
	                " attempts = excluded.attempts, last_error = excluded.last_error,"
	                " updated_at = excluded.updated_at",
	                args, 8, NULL);
}

/* ------------------------------------------------------------ delivery */

typedef enum deliv_outcome {
	DELIV_SENT,    /* sent now; "sent" row written */
	DELIV_ALREADY, /* an earlier attempt or delivery settled it; nothing sent */
	DELIV_RETRY,   /* transient failure, attempts remain; in memory only */
	DELIV_FAILED,  /* refused for good; "failed" row written */
	DELIV_PARKED,  /* transient failure at the last attempt; "dead_lettered" row written */
	DELIV_GIVEN_UP, /* parked by an earlier part of this last attempt; nothing tried */
	DELIV_UNTRIED, /* not_tried before the last attempt: unsettled, nothing recorded */
	DELIV_CUT,     /* a stop cut the send short: unsettled, nothing recorded */
	DELIV_DBERR,   /* storage failed; `err` says how */
	DELIV_NO_ROOM, /* the Maildir's disk is full: the event waits, no attempt used */
} deliv_outcome;

typedef struct delivery {
	const char *log_id;
	const char *to_addr, *to_name;
	const notif_content *content;
	int event_attempt; /* evh_event_attempt() */
	int last_attempt;  /* no retry follows a transient failure */
	/* Not NULL: do not send, fail temporarily with this error (the server
	 * was found unreachable for an earlier recipient of this attempt); what
	 * is settled already is still told apart (DELIV_ALREADY). */
	const char *not_tried;
	/* An earlier part of this last attempt, committed, went past this
	 * recipient: a "dead_lettered" row is its giving the mail up, which
	 * stands (DELIV_GIVEN_UP). */
	int part_before;
	/* out */
	int down; /* the failure was the server's, not this mail's (NOTIF_SEND_DOWN) */
	char err[512];
	int attempts;
	char created_at[NOTIF_TIME_LEN];
	/* The row written, if any: its status and updated_at (with attempts). */
	const char *wrote_status;
	char wrote_at[NOTIF_TIME_LEN];
} delivery;

static deliv_outcome db_error(evh_tx *tx, delivery *d, const char *what)
{
	const char *e = evh_tx_error(tx);
	snprintf(d->err, sizeof d->err, "storage: %s: %s", what, e ? e : "unknown error");
	return DELIV_DBERR;
}

static void remember(notif_state *st, const delivery *d, const char *status, const char *err)
{
	char now[NOTIF_TIME_LEN];

	notif_now_rfc3339(now);
	if (notif_pending_put(&st->pending, d->log_id, d->to_addr, d->content->tmpl_name, status,
	                      d->attempts, err, now) < 0)
		evh_log(st->p, EVH_LOG_WARN, "out of memory recording delivery %s as %s", d->log_id,
		        status);
}

/* d's row, with `status`, its `recipient` and `err`; noted in d (wrote_*). */
static int log_write_d(evh_tx *tx, delivery *d, const char *recipient, const char *status,
                       const char *err)
{
	char now[NOTIF_TIME_LEN];

	notif_now_rfc3339(now);
	if (log_write(tx, d->log_id, recipient, d->content->tmpl_name, status, d->attempts, err,
	              d->created_at, now) != EVH_OK)
		return -1;
	d->wrote_status = status;
	memcpy(d->wrote_at, now, sizeof now);
	return 0;
}

/* Send one message unless the log or memory says it already left; record
 * what happened. */
static deliv_outcome deliver_once(notif_state *st, evh_tx *tx, delivery *d)
{
	char found[NOTIF_STATUS_LEN], now[NOTIF_TIME_LEN];
	const char *status;
	notif_entry mem;
	notif_send_result res;
	int have, rc;

	d->err[0] = '\0';
	rc = log_status(tx, d->log_id, found);
	if (rc < 0)
		return db_error(tx, d, "reading notifications_log");
	if (rc == 1 && (!strcmp(found, NOTIF_SENT) || !strcmp(found, NOTIF_FAILED)))
		return DELIV_ALREADY;
	notif_now_rfc3339(now);
	have = notif_pending_get(&st->pending, d->log_id, &mem);
	if (have < 0) {
		/* It may say sent: nothing is sent until it can be read. */
		snprintf(d->err, sizeof d->err,
		         "out of memory reading what an earlier attempt of delivery %s did", d->log_id);
		return DELIV_RETRY;
	}
	snprintf(d->created_at, sizeof d->created_at, "%s", have ? mem.created_at : now);
	if (have && (!strcmp(mem.status, NOTIF_SENT) || !strcmp(mem.status, NOTIF_FAILED))) {
		/* Settled by an attempt whose row did not commit: write it now,
		 * with the address that attempt mailed (the user's may have
		 * changed since). */
		d->attempts = mem.attempts;
		rc = log_write_d(tx, d, mem.recipient ? mem.recipient : d->to_addr,
		                 !strcmp(mem.status, NOTIF_SENT) ? NOTIF_SENT : NOTIF_FAILED,
		                 mem.last_error);
		notif_entry_clear(&mem);
		if (rc < 0)
			return db_error(tx, d, "writing notifications_log");
		return DELIV_ALREADY;
	}
	/* After memory: a mail that left in a part whose commit failed gets its
	 * row above, whatever row an older delivery left. */
	if (d->part_before && rc == 1 && !strcmp(found, NOTIF_DEAD_LETTERED)) {
		if (have)
			notif_entry_clear(&mem);
		return DELIV_GIVEN_UP;
	}
	d->attempts = have ? mem.attempts + 1 : (d->event_attempt > 0 ? d->event_attempt : 1);
	if (have)
		notif_entry_clear(&mem);

	/* Not tried: nothing in memory, which a large broadcast would fill,
	 * pushing out what says "sent"; the event's next attempt tries it. */
	if (d->not_tried && !d->last_attempt) {
		snprintf(d->err, sizeof d->err, "%s", d->not_tried);
		return DELIV_UNTRIED;
	}
	if (d->not_tried) {
		/* At the last attempt the row lets a redrive send it. */
		snprintf(d->err, sizeof d->err, "%s", d->not_tried);
		res = NOTIF_SEND_DOWN;
	} else {
		res = notif_deliver(st, d->content, d->log_id, d->to_addr, d->to_name, d->err,
		                    sizeof d->err);
	}
	/* Left for the event's delivery after the start, as the mails a stop
	 * leaves untried: no attempt used, nothing dead-lettered, even at the
	 * last attempt (the server may have it: then sent again, with its
	 * Message-ID). */
	if (res == NOTIF_SEND_CUT)
		return DELIV_CUT;
	/* A full disk under the Maildir: tried again once there is room, at
	 * the last attempt too (a wait uses none up), never given up. */
	if (res == NOTIF_SEND_NO_ROOM) {
		remember(st, d, NOTIF_RETRYING, d->err);
		return DELIV_NO_ROOM;
	}
	d->down = res == NOTIF_SEND_DOWN;
	if (d->down)
		res = NOTIF_SEND_TRANSIENT;
	if (res == NOTIF_SEND_TRANSIENT && !d->last_attempt) {
		remember(st, d, NOTIF_RETRYING, d->err);
		return DELIV_RETRY;
	}
	if (res == NOTIF_SEND_TRANSIENT) {
		/* Nothing left: unlike the outcomes below, a redo of this attempt
		 * (should the commit fail) must try to send again, as it does when
		 * memory has nothing: memory's "dead_lettered" goes first when it
		 * is full (notif_pending.c), so that mails given up, however many,
		 * never push out what says "sent". */
		if (!d->not_tried)
			remember(st, d, NOTIF_DEAD_LETTERED, d->err);
		if (log_write_d(tx, d, d->to_addr, NOTIF_DEAD_LETTERED, d->err) < 0)
			return db_error(tx, d, "writing notifications_log");
		return DELIV_PARKED;
	}
	status = res == NOTIF_SEND_OK ? NOTIF_SENT : NOTIF_FAILED;
	/* Before the row: should the write fail, the retry must not resend. */
	remember(st, d, status, res == NOTIF_SEND_OK ? NULL : d->err);
	if (log_write_d(tx, d, d->to_addr, status, res == NOTIF_SEND_OK ? NULL : d->err) < 0)
		return db_error(tx, d, "writing notifications_log");
	return res == NOTIF_SEND_OK ? DELIV_SENT : DELIV_FAILED;
}

/* Tell the user's open streams (GET /notifications/stream) about an
 * outcome: "sent" or "failed" (final), or "dead_lettered" (the last attempt
 * failed for a reason that may pass: the mail waits for a redrive, which
 * pushes "sent" or "failed" then); never "retrying". It is pushed while the
 * handler's transaction is still open, because the SDK has no after-commit
 * hook. That is safe for a final outcome, which cannot change: should the
 * commit fail, the redelivered event finds it in memory (notif_pending),
 * writes the row and returns DELIV_ALREADY, which pushes nothing. A
 * "dead_lettered" whose commit fails is followed by the retried attempt's
 * own outcome. So the latest pushed outcome is the log's, but a client that
 * re-reads GET /notifications the instant an event arrives may get there
 * a few milliseconds before the row. `subject` is NULL when it is rendered
 * from a template (welcome mails). */
static void push_outcome(notif_state *st, const char *user_id, const delivery *d,
                         const char *status, const char *subject)
{
	char now[NOTIF_TIME_LEN], *json = NULL;
	cJSON *o = cJSON_CreateObject();
	int rc;

	notif_now_rfc3339(now);
	if (!o || !cJSON_AddStringToObject(o, "event_id", d->log_id) ||
	    !cJSON_AddStringToObject(o, "template", d->content->tmpl_name) ||
	    !cJSON_AddStringToObject(o, "status", status) ||
	    !cJSON_AddStringToObject(o, "user_id", user_id) ||
	    !cJSON_AddStringToObject(o, "recipient", d->to_addr) ||
	    (subject && !cJSON_AddStringToObject(o, "subject", subject)) ||
	    !cJSON_AddNumberToObject(o, "attempts", d->attempts) ||
	    !cJSON_AddStringToObject(o, "time", now) || !(json = cJSON_PrintUnformatted(o))) {
		evh_log(st->p, EVH_LOG_WARN, "out of memory: notification %s not streamed",
		        d->log_id);
		goto out;
	}
	rc = evh_stream_publish(st->p, user_id, "notification", json);
	if (rc < 0 && rc != EVH_EUNSUPPORTED)
		evh_log(st->p, EVH_LOG_WARN, "notification %s not streamed: %s", d->log_id,
		        evh_strerror(rc));
out:
	cJSON_Delete(o);
	free(json);
}

/* When the subscription's max_attempts is known, whether this is the last. */
static int is_last_attempt(const notif_state *st, const evh_event *ev)
{
	return st->max_attempts > 0 && evh_event_attempt(ev) >= st->max_attempts;
}

/* The log's key for an event: its CloudEvents id, or where it sat. */
static void event_log_id(const evh_event *ev, char *out, size_t outlen)
{
	const char *id = evh_event_id(ev);

	if (id && *id)
		snprintf(out, outlen, "%s", id);
	else
		snprintf(out, outlen, "%s/%d/%lld", evh_event_topic(ev),
		         (int)evh_event_partition(ev), (long long)evh_event_offset(ev));
}

/* ------------------------------------------------------------ user events */

typedef struct user_event {
	cJSON *root;
	char *id;          /* malloc'd */
	const char *email; /* borrowed from root; NULL when absent */
	const char *name;  /* borrowed from root; NULL when absent */
} user_event;

static void user_event_free(user_event *u)
{
	cJSON_Delete(u->root);
	free(u->id);
	memset(u, 0, sizeof *u);
}

/* A copy of `s`; out of memory, NULL with *oom set. */
static char *dup_id(const char *s, int *oom)
{
	char *id = strdup(s);
	if (!id)
		*oom = 1;
	return id;
}

/* The largest integer a numeric id may be, in magnitude: 2^53 - 1, the
 * last of the run of integers a double holds exactly, so that every
 * consumer (JavaScript's too) reads the same id. */
#define ID_NUMBER_MAX 9007199254740991.0

/* The "id" of `root`, which jsonin_parse_strict read from data[0..len): a
 * string as it is; a number as written, when it is written as an integer
 * within ID_NUMBER_MAX (beyond, readers that hold numbers in doubles round
 * it; 1.5, 1e2 or 1.0000000000000000001 is no id, and the double cJSON read
 * would print as something else than was sent), -0 as 0 (the one integer
 * JSON can write two ways: a reader of numbers sees 0, and one user must
 * not be two recipients, "0" and "-0"). NULL when there is no
 * usable one, with *bad_number set for a number that is not such an
 * integer, or *oom. */
static char *id_from_json(const cJSON *root, const char *data, size_t len, int *bad_number,
                          int *oom)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "id");
	const char *text;
	size_t n = 0, sign;
	char *id;

	if (cJSON_IsString(v) && v->valuestring[0] && strlen(v->valuestring) <= ID_MAX)
		return dup_id(v->valuestring, oom);
	if (!cJSON_IsNumber(v))
		return NULL;
	text = jsonin_member_text(data, len, root, v, &n);
	sign = text && n && text[0] == '-';
	if (!text || n == sign || strspn(text + sign, "0123456789") != n - sign ||
	    fabs(v->valuedouble) > ID_NUMBER_MAX) {
		*bad_number = 1;
		return NULL;
	}
	if (n == 2 && !memcmp(text, "-0", 2))
		text++, n--;
	if (!(id = strndup(text, n)))
		*oom = 1;
	return id;
}

static char *id_from_key(const evh_event *ev, int *oom)
{
	size_t n = 0;
	const char *k = evh_event_key(ev, &n);
	char *id;

	if (!k || n == 0 || n > ID_MAX || memchr(k, '\0', n))
		return NULL;
	id = malloc(n + 1);
	if (!id) {
		*oom = 1;
		return NULL;
	}
	memcpy(id, k, n);
	id[n] = '\0';
	return id;
}

/* What parsing an event's data came to, when not 0. */
enum { PARSE_BAD = -1, PARSE_OOM = -2 };

/* The event's data as a JSON object in *root, or PARSE_BAD / PARSE_OOM with
 * `why` saying so. The host checks what plugins publish, not what other
 * producers write to a topic: the data is held to what the host asks of an
 * HTTP body (jsonin_parse_strict), so that nothing is read otherwise than
 * it was written (a name cut at a \u0000, an id of 1e400 as "inf", a
 * member given twice read as another consumer would not). */
static int parse_object(const evh_event *ev, cJSON **root, char *why, size_t whylen)
{
	size_t len = 0;
	const char *data = evh_event_data(ev, &len);
	int oom = 0;

	*root = jsonin_parse_strict(data, len, "event data", &oom, why, whylen);
	if (oom)
		return PARSE_OOM;
	if (!*root)
		return PARSE_BAD;
	if (!cJSON_IsObject(*root)) {
		snprintf(why, whylen, "event data is not a JSON object");
		return PARSE_BAD;
	}
	return 0;
}

/* An event that could not be parsed: dead-lettered when its data is bad,
 * retried when memory ran out (it would be lost to the dead letters). */
static evh_event_result not_parsed(const evh_event *ev, int rc, const char *why)
{
	evh_event_set_error(ev, why);
	return rc == PARSE_OOM ? EVH_EVENT_RETRY : EVH_EVENT_REJECT;
}

/* How parse_user_event takes "email": required, optional (checked when
 * there), or not read at all (a deletion needs only the id: an address it
 * would not use must not turn it away, nor keep the user a recipient). */
enum { EMAIL_NEEDED = 1, EMAIL_OPTIONAL = 0, EMAIL_UNUSED = -1 };

/* Parse {"id","email","name"}; id falls back to the Kafka key. Returns 0,
 * or PARSE_BAD / PARSE_OOM with `why` saying what is wrong with the data
 * (never its values: they are personal data and `why` goes to logs and DLQ
 * headers). */
static int parse_user_event(const evh_event *ev, int need_email, user_event *u, char *why,
                            size_t whylen)
{
	const cJSON *email, *name;
	size_t len = 0;
	const char *data = evh_event_data(ev, &len);
	int rc, oom = 0, bad_number = 0;

	memset(u, 0, sizeof *u);
	if ((rc = parse_object(ev, &u->root, why, whylen)) != 0)
		goto bad;
	rc = PARSE_BAD;
	u->id = id_from_json(u->root, data, len, &bad_number, &oom);
	if (!u->id && !oom && !bad_number)
		u->id = id_from_key(ev, &oom);
	if (oom) {
		snprintf(why, whylen, "out of memory reading the user id");
		rc = PARSE_OOM;
		goto bad;
	}
	if (bad_number) {
		snprintf(why, whylen, "event data's \"id\" is a number but not an integer of at most "
		                      "2^53 - 1 (9007199254740991) in magnitude: send it as a string");
		goto bad;
	}
	if (!u->id) {
		snprintf(why, whylen, "event data has no usable \"id\" (string or number)");
		goto bad;
	}
	email = need_email == EMAIL_UNUSED ? NULL
	                                   : cJSON_GetObjectItemCaseSensitive(u->root, "email");
	if (email && !cJSON_IsNull(email)) {
		if (!cJSON_IsString(email) || !notif_addr_valid(email->valuestring)) {
			snprintf(why, whylen, "\"email\" is not a valid e-mail address");
			goto bad;
		}
		u->email = email->valuestring;
	}
	if (need_email == EMAIL_NEEDED && !u->email) {
		snprintf(why, whylen, "event data has no \"email\"");
		goto bad;
	}
	name = cJSON_GetObjectItemCaseSensitive(u->root, "name");
	if (cJSON_IsString(name))
		u->name = name->valuestring;
	return 0;
bad:
	user_event_free(u);
	return rc;
}

static evh_event_result retry_db(const evh_event *ev, evh_tx *tx, const char *what)
{
	char msg[512];
	const char *e = evh_tx_error(tx);

	snprintf(msg, sizeof msg, "storage: %s: %s", what, e ? e : "unknown error");
	evh_event_set_error(ev, msg);
	return EVH_EVENT_RETRY;
}

/* 1 when user `id` was deleted (USER_DELETED handled), 0 if not, -1 when
 * storage failed. Its creation or update may be handled after its deletion:
 * retried (the welcome mail greylisted) while the deletion, on another
 * topic, went ahead; without this, it would be a recipient again, mailed by
 * every broadcast, and get a welcome mail for an account it closed. */
static int recipient_was_deleted(evh_tx *tx, const char *id)
{
	evh_value arg = EVH_TEXT(id);
	evh_rows *rows;
	int rc;

	if (evh_query(tx, "SELECT 1 FROM deleted_recipients WHERE user_id = ?", &arg, 1, &rows) !=
	    EVH_OK)
		return -1;
	rc = evh_rows_next(rows);
	evh_rows_close(rows);
	return rc;
}

/* Waiting recipients (an update without an address handled before the
 * creation: email NULL) whose creation has not come for this long are
 * dropped, a batch at a time, so ids that are never created do not pile
 * up. Dropped, a creation coming later still makes the recipient, with
 * its own name. */
#define WAITING_KEEP_SECONDS (30L * 24 * 3600)
#define WAITING_PRUNE_BATCH 100

static int waiting_prune(evh_tx *tx)
{
	char cutoff[NOTIF_TIME_LEN];
	evh_value a[2];

	notif_ago_rfc3339(WAITING_KEEP_SECONDS, cutoff);
	a[0] = EVH_TEXTN(cutoff, strlen(cutoff));
	a[1] = EVH_INT(WAITING_PRUNE_BATCH);
	return evh_exec(tx,
	                "DELETE FROM recipients WHERE user_id IN (SELECT user_id FROM recipients"
	                " WHERE email IS NULL AND updated_at < ? ORDER BY updated_at LIMIT ?)",
	                a, 2, NULL);
}

/* An update's fields where they are newer than what the recipient has:
 * each field is set when the update carries it and its version is not
 * older than the one that set the field (any is newer than the
 * creation's, NULL). A user not known yet is added, without an address
 * when the update carries none (not mailed until the creation, or an
 * update, gives one). Returns what evh_exec does. */
static int recipient_update(evh_tx *tx, const user_event *u, const char *version)
{
	char now[NOTIF_TIME_LEN];
	evh_value a[6];
	int rc;

	if (!u->email && !u->name)
		return EVH_OK;
	notif_now_rfc3339(now);
	a[0] = EVH_TEXT(u->id);
	a[1] = u->email ? EVH_TEXT(u->email) : EVH_NULL();
	a[2] = u->name ? EVH_TEXT(u->name) : EVH_NULL();
	a[3] = EVH_TEXTN(now, strlen(now));
	a[4] = u->email ? EVH_TEXT(version) : EVH_NULL();
	a[5] = u->name ? EVH_TEXT(version) : EVH_NULL();
#define NEWER(f)                                                                           \
	"(excluded." f "_version IS NOT NULL AND (recipients." f "_version IS NULL OR"        \
	" excluded." f "_version >= recipients." f "_version))"
	rc = evh_exec(tx,
	              "INSERT INTO recipients (user_id, email, name, updated_at, email_version,"
	              " name_version) VALUES (?, ?, COALESCE(?, ''), ?, ?, ?)"
	              " ON CONFLICT (user_id) DO UPDATE SET"
	              " email = CASE WHEN " NEWER("email") " THEN excluded.email ELSE"
	              " recipients.email END,"
	              " email_version = CASE WHEN " NEWER("email") " THEN excluded.email_version"
	              " ELSE recipients.email_version END,"
	              " name = CASE WHEN " NEWER("name") " THEN excluded.name ELSE"
	              " recipients.name END,"
	              " name_version = CASE WHEN " NEWER("name") " THEN excluded.name_version"
	              " ELSE recipients.name_version END,"
	              " updated_at = excluded.updated_at"
	              " WHERE " NEWER("email") " OR " NEWER("name"),
	              a, 6, NULL);
#undef NEWER
	if (rc == EVH_OK && !u->email)
		rc = waiting_prune(tx);
	return rc;
}

static char *col_dup(evh_rows *rows, int col)
{
	const char *s = evh_rows_text(rows, col, NULL);
	return strdup(s ? s : "");
}

/* A creation's recipient: its fields where no update set them. The user
 * may be a recipient already: an earlier attempt of the same event
 * committed it (KEEP_AND_RETRY), or the user's update, on another topic,
 * was handled first. An update is newer than the creation, whatever the
 * order they were handled in: its address or name stays. */
static int recipient_create(evh_tx *tx, const user_event *u)
{
	char now[NOTIF_TIME_LEN];

	notif_now_rfc3339(now);
	evh_value a[4] = {EVH_TEXT(u->id), EVH_TEXT(u->email), EVH_TEXT(u->name ? u->name : ""),
	                  EVH_TEXTN(now, strlen(now))};
	return evh_exec(tx,
	                "INSERT INTO recipients (user_id, email, name, updated_at)"
	                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
	                " email = CASE WHEN recipients.email_version IS NULL THEN excluded.email"
	                " ELSE recipients.email END,"
	                " name = CASE WHEN recipients.name_version IS NULL THEN excluded.name"
	                " ELSE recipients.name END,"
	                " updated_at = excluded.updated_at"
	                " WHERE (recipients.email_version IS NULL"
	                " AND recipients.email IS NOT excluded.email)"
	                " OR (recipients.name_version IS NULL AND recipients.name IS NOT excluded.name)",
	                a, 4, NULL);
}

/* The recipient's address and name as they are now, malloc'd into *email
 * and *name: 0, or -1 when storage failed or memory ran out (*oom set). */
static int recipient_read(evh_tx *tx, const char *id, char **email, char **name, int *oom)
{
	evh_value arg = EVH_TEXT(id);
	evh_rows *rows;
	int rc;

	*email = *name = NULL;
	if (evh_query(tx, "SELECT email, name FROM recipients WHERE user_id = ?", &arg, 1, &rows) !=
	    EVH_OK)
		return -1;
	rc = evh_rows_next(rows);
	if (rc == 1) {
		*email = col_dup(rows, 0);
		*name = col_dup(rows, 1);
		if (!*email || !*name) {
			*oom = 1;
			rc = -1;
		}
	} else if (rc == 0) {
		rc = -1; /* inserted above, in this transaction */
	}
	evh_rows_close(rows);
	if (rc < 0) {
		free(*email);
		free(*name);
		*email = *name = NULL;
		return -1;
	}
	return 0;
}

evh_event_result notif_on_user_created(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	notif_state *st = ud;
	char why[256], log_id[512];
	char *email = NULL, *cur_name = NULL;
	const char *name;
	user_event u;
	delivery d;
	notif_content c;
	evh_event_result result = EVH_EVENT_OK;
	int parsed, deleted, oom = 0;

	(void)p;
	if ((parsed = parse_user_event(ev, EMAIL_NEEDED, &u, why, sizeof why)) != 0)
		return not_parsed(ev, parsed, why);
	if ((deleted = recipient_was_deleted(tx, u.id)) != 0) {
		if (deleted < 0)
			result = retry_db(ev, tx, "reading deleted_recipients");
		else {
			/* An earlier attempt's "retrying" would stay in the log for
			 * good. Gone before the line says so. */
			event_log_id(ev, log_id, sizeof log_id);
			notif_pending_forget_retrying(&st->pending, log_id, 0);
			evh_log(st->p, EVH_LOG_INFO,
			        "user %s was deleted before its welcome mail went out: not sent", u.id);
		}
		goto out;
	}
	if (recipient_create(tx, &u) != EVH_OK) {
		result = retry_db(ev, tx, "writing recipients");
		goto out;
	}
	/* The welcome goes to the address the user has now: changed (a typo
	 * mended) while the mail was retried, it goes to the new one. */
	if (recipient_read(tx, u.id, &email, &cur_name, &oom) < 0) {
		if (oom) {
			evh_event_set_error(ev, "out of memory reading the recipient");
			result = EVH_EVENT_RETRY;
		} else {
			result = retry_db(ev, tx, "reading recipients");
		}
		goto out;
	}
	/* With no name, greet the address rather than nobody. */
	name = *cur_name ? cur_name : email;
	notif_var vars[] = {{"name", name}, {"email", email}, {"id", u.id}};
	memset(&c, 0, sizeof c);
	c.tmpl_name = "welcome";
	c.subject_tpl = &st->tpl.welcome_subject;
	c.txt = &st->tpl.welcome_txt;
	c.html = &st->tpl.welcome_html;
	c.vars = vars;
	c.nvars = 3;
	event_log_id(ev, log_id, sizeof log_id);
	memset(&d, 0, sizeof d);
	d.log_id = log_id;
	d.to_addr = email;
	d.to_name = cur_name;
	d.content = &c;
	d.event_attempt = evh_event_attempt(ev);
	d.last_attempt = is_last_attempt(st, ev);
	switch (deliver_once(st, tx, &d)) {
	case DELIV_SENT:
		evh_log(st->p, EVH_LOG_INFO, "welcome mail for user %s sent (attempt %d)", u.id,
		        d.attempts);
		push_outcome(st, u.id, &d, NOTIF_SENT, NULL);
		break;
	case DELIV_ALREADY:
	case DELIV_GIVEN_UP: /* broadcasts only (part_before) */
	case DELIV_UNTRIED:  /* broadcasts only (not_tried) */
		break;
	case DELIV_FAILED:
		evh_log(st->p, EVH_LOG_WARN,
		        "welcome mail for user %s failed after %d attempt(s): %s", u.id, d.attempts,
		        d.err);
		push_outcome(st, u.id, &d, NOTIF_FAILED, NULL);
		break;
	case DELIV_PARKED:
		evh_log(st->p, EVH_LOG_WARN,
		        "welcome mail for user %s not sent after %d attempt(s): %s; the event goes "
		        "to the dead-letter topic: redrive it once the mail server is back",
		        u.id, d.attempts, d.err);
		push_outcome(st, u.id, &d, NOTIF_DEAD_LETTERED, NULL);
		evh_event_set_error(ev, d.err);
		result = EVH_EVENT_KEEP_AND_DEAD_LETTER;
		break;
	case DELIV_RETRY:
	case DELIV_CUT: /* a retry asked while stopping is never dead-lettered */
		/* The recipient commits: a broadcast sent while the welcome is
		 * retried (greylisted) reaches the user too. */
		evh_event_set_error(ev, d.err);
		result = EVH_EVENT_KEEP_AND_RETRY;
		break;
	case DELIV_NO_ROOM: /* the recipient commits, as for a retry */
		evh_event_set_error(ev, d.err);
		result = EVH_EVENT_KEEP_AND_WAIT;
		break;
	case DELIV_DBERR:
		evh_event_set_error(ev, d.err);
		result = EVH_EVENT_RETRY;
		break;
	}
out:
	free(email);
	free(cur_name);
	user_event_free(&u);
	return result;
}

evh_event_result notif_on_user_updated(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	char why[256], now[NOTIF_TIME_LEN], version[NOTIF_VERSION_LEN];
	user_event u;
	evh_event_result result = EVH_EVENT_OK;
	int parsed, deleted;

	(void)p;
	(void)ud;
	if ((parsed = parse_user_event(ev, EMAIL_OPTIONAL, &u, why, sizeof why)) != 0)
		return not_parsed(ev, parsed, why);
	notif_now_rfc3339(now);
	notif_event_version(evh_event_time(ev), evh_event_header(ev, "evhost_seq"), now, version);
	if ((deleted = recipient_was_deleted(tx, u.id)) < 0)
		result = retry_db(ev, tx, "reading deleted_recipients");
	else if (!deleted && recipient_update(tx, &u, version) != EVH_OK)
		result = retry_db(ev, tx, "writing recipients");
	user_event_free(&u);
	return result;
}

evh_event_result notif_on_user_deleted(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	char why[256], now[NOTIF_TIME_LEN];
	user_event u;
	evh_value arg, tomb[2];
	evh_event_result result = EVH_EVENT_OK;
	int parsed;

	(void)p;
	(void)ud;
	if ((parsed = parse_user_event(ev, EMAIL_UNUSED, &u, why, sizeof why)) != 0)
		return not_parsed(ev, parsed, why);
	notif_now_rfc3339(now);
	tomb[0] = EVH_TEXT(u.id);
	tomb[1] = EVH_TEXTN(now, strlen(now));
	arg = EVH_TEXT(u.id);
	if (evh_exec(tx, "DELETE FROM recipients WHERE user_id = ?", &arg, 1, NULL) != EVH_OK)
		result = retry_db(ev, tx, "deleting from recipients");
	else if (evh_exec(tx,
	                  "INSERT INTO deleted_recipients (user_id, deleted_at) VALUES (?, ?)"
	                  " ON CONFLICT (user_id) DO NOTHING",
	                  tomb, 2, NULL) != EVH_OK)
		result = retry_db(ev, tx, "writing deleted_recipients");
	user_event_free(&u);
	return result;
}

/* ------------------------------------------------------------ broadcasts */

typedef struct recipient {
	char *id, *email, *name;
} recipient;

static void recipients_free(recipient *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].id);
		free(v[i].email);
		free(v[i].name);
	}
	free(v);
}

/* Recipients are walked a page at a time, never all in memory: a part
 * loads those after where the one before it stopped (keyset), and a walk
 * from the first (a new attempt, a redo, a restart) page after page. */
#define BROADCAST_PAGE_MAX 1024

/* The next page of recipients in user_id order: at most `max`, those after
 * `after` (NULL: from the first); copied out, so no cursor stays open while
 * mail is sent. */
static int recipients_page(evh_tx *tx, const char *after, size_t max, recipient **out, size_t *n)
{
	evh_value args[2] = {EVH_TEXT(after ? after : ""), EVH_INT((int64_t)max)};
	evh_rows *rows;
	recipient *v;
	int rc = 0;

	*n = 0;
	if (!(*out = v = calloc(max, sizeof *v)))
		return -1;
	if (evh_query(tx, after ? "SELECT user_id, email, name FROM recipients"
	                          " WHERE email IS NOT NULL AND user_id > ?"
	                          " ORDER BY user_id LIMIT ?"
	                        : "SELECT user_id, email, name FROM recipients"
	                          " WHERE email IS NOT NULL ORDER BY user_id LIMIT ?",
	              after ? args : args + 1, after ? 2 : 1, &rows) != EVH_OK)
		return -1;
	while (*n < max && (rc = evh_rows_next(rows)) == 1) {
		v[*n].id = col_dup(rows, 0);
		v[*n].email = col_dup(rows, 1);
		v[*n].name = col_dup(rows, 2);
		(*n)++;
		if (!v[*n - 1].id || !v[*n - 1].email || !v[*n - 1].name) {
			rc = -1;
			break;
		}
	}
	evh_rows_close(rows);
	return rc < 0 ? -1 : 0;
}

typedef struct broadcast {
	cJSON *root;
	const char *id, *subject, *message; /* borrowed from root */
} broadcast;

static int parse_broadcast(const evh_event *ev, broadcast *b, char *why, size_t whylen)
{
	const cJSON *id, *subject, *message;
	int rc;

	memset(b, 0, sizeof *b);
	if ((rc = parse_object(ev, &b->root, why, whylen)) != 0)
		goto bad;
	rc = PARSE_BAD;
	id = cJSON_GetObjectItemCaseSensitive(b->root, "broadcast_id");
	subject = cJSON_GetObjectItemCaseSensitive(b->root, "subject");
	message = cJSON_GetObjectItemCaseSensitive(b->root, "message");
	if (!cJSON_IsString(id) || !id->valuestring[0] || strlen(id->valuestring) > ID_MAX) {
		snprintf(why, whylen, "broadcast has no usable \"broadcast_id\"");
		goto bad;
	}
	if (!cJSON_IsString(subject) || !cJSON_IsString(message)) {
		snprintf(why, whylen, "broadcast needs string \"subject\" and \"message\"");
		goto bad;
	}
	b->id = id->valuestring;
	b->subject = subject->valuestring;
	b->message = message->valuestring;
	return 0;
bad:
	cJSON_Delete(b->root);
	b->root = NULL;
	return rc;
}

typedef struct broadcast_tally {
	int sent, already, failed, retry;
	int parked;      /* given up for a redrive, in this call or (GIVEN_UP) before */
	int parked_here; /* ...of which given up in this call: a row written */
	/* Not offered (the server was found down for an earlier one) and not
	 * settled before; at the last attempt, also those its earlier parts
	 * gave up so (GIVEN_UP from down_from on). */
	int untried;
	int down;    /* the server could not be talked to: try no more in this attempt */
	/* ...from this recipient on (rs's, or an earlier part's: last_parts);
	 * those before it were tried, or settled before. */
	const char *down_from;
	int stopping; /* the plugin is winding down (evh_stopping): the rest not offered */
	int no_room;  /* the Maildir's disk is full: the event waits (broadcast_one's -1) */
	int left;     /* ...how many, for the event's next delivery */
	char last_err[512];
	char down_err[NOTIF_DOWN_ERR_LEN]; /* why the rest were not tried: their error */
	size_t seen; /* recipients walked in this attempt (before this part's too, keyset) */
	/* The last delivery log row this call wrote (mark_id "" when none):
	 * the next part finds it as written once this one has committed. */
	char mark_id[2 * ID_MAX + 2];
	const char *mark_status;
	int mark_attempts;
	char mark_at[NOTIF_TIME_LEN];
} broadcast_tally;

/* One recipient of a broadcast; not offered, but failed temporarily with
 * t->down_err as the error, from t->down_from on. At the last attempt,
 * `part_end` not NULL: the recipients before it were gone past by the
 * parts committed before (delivery's part_before). Returns -1 when storage
 * failed (the whole event is retried) or the Maildir's disk is full (the
 * event waits, the rows of this part kept: t->no_room), 0 otherwise. */
static int broadcast_one(notif_state *st, evh_tx *tx, const evh_event *ev, const broadcast *b,
                         const recipient *r, const char *part_end, broadcast_tally *t)
{
	int beyond_down = t->down && t->down_from && strcmp(r->id, t->down_from) >= 0;
	const char *not_tried = beyond_down ? t->down_err : NULL;
	char log_id[2 * ID_MAX + 2];
	const char *name = *r->name ? r->name : r->email;
	notif_var vars[] = {{"name", name},
	                    {"email", r->email},
	                    {"id", r->id},
	                    {"subject", b->subject},
	                    {"message", b->message}};
	notif_content c;
	delivery d;

	memset(&c, 0, sizeof c);
	c.tmpl_name = "broadcast";
	c.subject = b->subject;
	c.txt = &st->tpl.broadcast_txt;
	c.html = &st->tpl.broadcast_html;
	c.vars = vars;
	c.nvars = 5;
	snprintf(log_id, sizeof log_id, "%s:%s", b->id, r->id);
	memset(&d, 0, sizeof d);
	d.log_id = log_id;
	d.to_addr = r->email;
	d.to_name = r->name;
	d.content = &c;
	d.event_attempt = evh_event_attempt(ev);
	d.last_attempt = is_last_attempt(st, ev);
	d.not_tried = not_tried;
	d.part_before = part_end && strcmp(r->id, part_end) < 0;
	deliv_outcome outcome = deliver_once(st, tx, &d);
	if (d.wrote_status) {
		snprintf(t->mark_id, sizeof t->mark_id, "%s", log_id);
		t->mark_status = d.wrote_status;
		t->mark_attempts = d.attempts;
		memcpy(t->mark_at, d.wrote_at, sizeof t->mark_at);
	}
	switch (outcome) {
	case DELIV_SENT:
		t->sent++;
		push_outcome(st, r->id, &d, NOTIF_SENT, b->subject);
		return 0;
	case DELIV_ALREADY: t->already++; return 0;
	case DELIV_RETRY:
		t->retry++;
		snprintf(t->last_err, sizeof t->last_err, "%s", d.err);
		break;
	case DELIV_FAILED:
		t->failed++;
		snprintf(t->last_err, sizeof t->last_err, "%s", d.err);
		push_outcome(st, r->id, &d, NOTIF_FAILED, b->subject);
		return 0;
	case DELIV_PARKED:
		t->parked++;
		t->parked_here++;
		if (not_tried)
			t->untried++;
		else
			snprintf(t->last_err, sizeof t->last_err, "%s", d.err);
		push_outcome(st, r->id, &d, NOTIF_DEAD_LETTERED, b->subject);
		break;
	case DELIV_GIVEN_UP: /* pushed when it was given up */
		t->parked++;
		t->untried += beyond_down;
		return 0;
	case DELIV_UNTRIED: t->untried++; return 0;
	case DELIV_CUT: /* with the rest a stop leaves (the loop sees evh_stopping next) */
		t->stopping = 1;
		t->left++;
		return 0;
	case DELIV_NO_ROOM:
		t->no_room = 1;
		/* fall through */
	case DELIV_DBERR:
		snprintf(t->last_err, sizeof t->last_err, "%s", d.err);
		return -1;
	}
	if (d.down && !not_tried) {
		t->down = 1;
		snprintf(t->down_err, sizeof t->down_err,
		         "not tried: the mail server could not be reached for an earlier recipient "
		         "(%s)",
		         d.err);
	}
	return 0;
}

void notif_last_parts_clear(notif_last_parts *lp)
{
	free(lp->topic);
	free(lp->next_id);
	free(lp->down_from);
	free(lp->after_id);
	free(lp->mark_id);
	memset(lp, 0, sizeof *lp);
}

/* Whether this call is the next part of an attempt: st->last_parts names
 * this event at this attempt. */
static int last_parts_match(const notif_state *st, const evh_event *ev)
{
	const notif_last_parts *lp = &st->last_parts;

	return lp->topic && !strcmp(lp->topic, evh_event_topic(ev)) &&
	       lp->partition == evh_event_partition(ev) && lp->offset == evh_event_offset(ev) &&
	       lp->attempt == evh_event_attempt(ev);
}

/* This event's attempt has gone past the recipients before `next_id`, up to
 * `after_id`, in parts committed (or about to be), with `t`'s tallies and
 * error and, the server found down, where the mails not tried begin. With
 * none of them left to retry, and a row written to tell this part's commit
 * by, the next part goes on after after_id (keyset). Out of memory nothing
 * is kept: the next part walks the list from the first, and at the last
 * attempt tries the mails given up before once more (a try more, never a
 * mail twice). */
static void last_parts_set(notif_state *st, const evh_event *ev, const char *next_id,
                           const char *after_id, const broadcast_tally *t)
{
	notif_last_parts *lp = &st->last_parts;

	notif_last_parts_clear(lp);
	lp->topic = strdup(evh_event_topic(ev));
	lp->next_id = strdup(next_id);
	if (t->down && t->down_from)
		lp->down_from = strdup(t->down_from);
	if (!lp->topic || !lp->next_id || (t->down && t->down_from && !lp->down_from)) {
		notif_last_parts_clear(lp);
		evh_log(st->p, EVH_LOG_WARN,
		        "out of memory recording where a broadcast goes on: its next part walks "
		        "the recipients from the first, and tries the mails given up again");
		return;
	}
	lp->partition = evh_event_partition(ev);
	lp->offset = evh_event_offset(ev);
	lp->attempt = evh_event_attempt(ev);
	snprintf(lp->last_err, sizeof lp->last_err, "%s", t->last_err);
	snprintf(lp->down_err, sizeof lp->down_err, "%s", t->down_err);
	/* A mail to retry (memory unreadable, the last attempt going on) is
	 * before next_id, unsettled: the next part walks from the first. */
	if (t->retry || !t->mark_id[0] || !after_id)
		return;
	lp->after_id = strdup(after_id);
	lp->mark_id = strdup(t->mark_id);
	if (!lp->after_id || !lp->mark_id)
		return; /* the next part walks from the first */
	snprintf(lp->mark_status, sizeof lp->mark_status, "%s", t->mark_status);
	lp->mark_attempts = t->mark_attempts;
	memcpy(lp->mark_at, t->mark_at, sizeof lp->mark_at);
	lp->seen = t->seen;
	/* The next part's walk from the first would find these done. */
	lp->already = t->already + t->sent + t->failed;
	lp->parked = t->parked;
	lp->untried = t->untried;
	lp->keyset = 1;
}

/* 1 when the part `lp` tells of committed: its last row is as it wrote it
 * (a commit that failed took it back, and a redo of the part walks from the
 * first); 0 if not, -1 when storage failed. */
static int part_committed(evh_tx *tx, const notif_last_parts *lp)
{
	evh_value arg = EVH_TEXT(lp->mark_id);
	evh_rows *rows;
	int rc;

	if (evh_query(tx,
	              "SELECT status, attempts, updated_at FROM notifications_log"
	              " WHERE event_id = ?",
	              &arg, 1, &rows) != EVH_OK)
		return -1;
	rc = evh_rows_next(rows);
	if (rc == 1) {
		const char *status = evh_rows_text(rows, 0, NULL);
		const char *at = evh_rows_text(rows, 2, NULL);
		rc = status && at && !strcmp(status, lp->mark_status) &&
		     evh_rows_int(rows, 1) == lp->mark_attempts && !strcmp(at, lp->mark_at);
	}
	evh_rows_close(rows);
	return rc < 0 ? -1 : rc;
}

/* Where this call begins: the next part of the attempt `before` tells of
 * (its tallies taken on) after where it stopped, when it left nothing
 * unsettled behind it and committed; else the first recipient (*after
 * NULL). -1 when storage failed. */
static int part_start(evh_tx *tx, const notif_last_parts *before, broadcast_tally *t,
                      const char **after)
{
	int rc;

	*after = NULL;
	if (!before->topic || !before->keyset)
		return 0;
	if ((rc = part_committed(tx, before)) <= 0)
		return rc;
	*after = before->after_id;
	t->seen = before->seen;
	t->already = before->already;
	t->parked = before->parked;
	t->untried = before->untried;
	return 0;
}

evh_event_result notif_on_broadcast(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	notif_state *st = ud;
	char why[1024], given_up[96] = "";
	broadcast b;
	broadcast_tally t;
	recipient *rs = NULL;
	size_t n = 0, i = 0, page;
	char *cursor = NULL, *down_from = NULL; /* copies: pages go */
	const char *after;
	evh_event_result result = EVH_EVENT_OK;
	const char *next_id = NULL; /* recipients left to a next call: this part commits first */
	/* A next part of this attempt: where the ones before ended (its
	 * next_id), and what they found. */
	notif_last_parts before;
	int parsed, last;

	(void)p;
	if ((parsed = parse_broadcast(ev, &b, why, sizeof why)) != 0)
		return not_parsed(ev, parsed, why);
	memset(&t, 0, sizeof t);
	memset(&before, 0, sizeof before);
	last = is_last_attempt(st, ev);
	if (last_parts_match(st, ev)) {
		before = st->last_parts;
		memset(&st->last_parts, 0, sizeof st->last_parts);
		snprintf(t.last_err, sizeof t.last_err, "%s", before.last_err);
		if (before.down_from) {
			t.down = 1;
			t.down_from = before.down_from;
			snprintf(t.down_err, sizeof t.down_err, "%s", before.down_err);
		}
	}
	notif_last_parts_clear(&st->last_parts);
	if (part_start(tx, &before, &t, &after) < 0) {
		result = retry_db(ev, tx, "reading notifications_log");
		goto out;
	}
	page = st->commit_every > 0 && st->commit_every < BROADCAST_PAGE_MAX
	           ? (size_t)st->commit_every
	           : BROADCAST_PAGE_MAX;
	for (;;) {
		if (recipients_page(tx, after, page, &rs, &n) < 0) {
			result = retry_db(ev, tx, "reading recipients");
			goto out;
		}
		evh_log(st->p, EVH_LOG_DEBUG, "broadcast %s: %zu recipient(s) loaded %s%s", b.id, n,
		        after ? "after " : "from the first", after ? after : "");
		for (i = 0; i < n; i++) {
			/* The first after the one the server was found down at:
			 * from it on, none is tried in this attempt. */
			if (t.down && !t.down_from) {
				if (!(down_from = strdup(rs[i].id))) {
					evh_event_set_error(ev, "out of memory walking a broadcast");
					result = EVH_EVENT_RETRY;
					goto out;
				}
				t.down_from = down_from;
			}
			/* A stop, or a reload's drain, would wait for every mail
			 * left (thousands at the server's pace, past the stop's
			 * deadline, when the daemon gives up and the rows of the
			 * mails sent go with the transaction, to be sent twice).
			 * The rest wait for the event's next delivery, after the
			 * start or in the new instance; the rows of those sent
			 * commit. Not parked, even at the last attempt: the host
			 * leaves an event cut short so for the start, not the DLQ. */
			if (t.stopping || (!t.down && evh_stopping(st->p))) {
				t.stopping = 1;
				break;
			}
			/* Every broadcast_commit_every mails tried or given up the
			 * part done commits: a failure later in a long list (a full
			 * disk, a crash) does not undo, and mail again, what went
			 * before; the transaction does not hold the database for
			 * the whole list; memory remembers every mail of an
			 * uncommitted part (notif_pending), which it could not for
			 * more than it holds. The rest comes in the event's next
			 * call at once (KEEP_AND_CONTINUE, no attempt used), which
			 * loads the recipients after those this part went past
			 * (st->last_parts), or, with mails to retry in this part,
			 * in its next attempt after the backoff, from the first.
			 * The last attempt too, once a mail is given up in it: its
			 * next part knows where this one ended, and does not try
			 * again what this one gave up. Once the server is found
			 * down (each try would wait out smtp_timeout_ms, holding
			 * the SMTP connection and the consumer), the rest are not
			 * tried in this attempt: they wait for the next, which the
			 * backoff spaces out, with nothing written for them (a part
			 * needs no end); at the last attempt each still unsent gets
			 * its dead_lettered row, for the redrive, in parts too
			 * (tens of thousands of rows would hold the database as
			 * long in one transaction), whose later ones do not wait on
			 * the server again. */
			if ((last || !t.down) && st->commit_every > 0 &&
			    t.sent + t.failed + t.retry + t.parked_here >= st->commit_every) {
				next_id = rs[i].id;
				break;
			}
			t.seen++;
			if (broadcast_one(st, tx, ev, &b, &rs[i], last ? before.next_id : NULL, &t) <
			    0) {
				/* No room for the Maildir: the mails settled in this
				 * part keep their rows, the rest wait (in the same
				 * attempt, which finds where the parts before ended). */
				evh_event_set_error(ev, t.last_err);
				result = t.no_room ? EVH_EVENT_KEEP_AND_WAIT : EVH_EVENT_RETRY;
				goto out;
			}
		}
		if (next_id || t.stopping || n < page)
			break;
		/* The page walked: the next one after its last. */
		free(cursor);
		if (!(cursor = strdup(rs[n - 1].id))) {
			evh_event_set_error(ev, "out of memory walking a broadcast");
			result = EVH_EVENT_RETRY;
			goto out;
		}
		after = cursor;
		recipients_free(rs, n);
		rs = NULL;
		n = 0;
	}
	if (next_id) {
		/* The last attempt goes on with mails to retry (memory could not
		 * be read): a retry would dead-letter the event, the rest untried.
		 * Unless the part settled none: going on would not get anywhere. */
		int go_on = !t.retry || (last && t.sent + t.failed + t.parked_here > 0);
		if (t.parked && t.untried)
			snprintf(given_up, sizeof given_up,
			         ", %d given up for a redrive, %d of them not tried", t.parked,
			         t.untried);
		else if (t.parked)
			snprintf(given_up, sizeof given_up, ", %d given up for a redrive", t.parked);
		evh_log(st->p, EVH_LOG_INFO,
		        "broadcast %s: a part done (%d sent, %d already done, %d failed, %d to "
		        "retry%s); %zu recipient(s) gone past, the rest left for the %s (attempt %d)",
		        b.id, t.sent, t.already, t.failed, t.retry, given_up, t.seen,
		        go_on ? "next part, once this one commits" : "event's next attempt",
		        evh_event_attempt(ev));
		if (go_on)
			last_parts_set(st, ev, next_id, i > 0 ? rs[i - 1].id : after, &t);
		if (!go_on)
			snprintf(why, sizeof why,
			         "%d deliveries to retry, %zu recipient(s) gone past, the rest not tried "
			         "yet; last error: %s",
			         t.retry, t.seen, t.last_err);
		else
			snprintf(why, sizeof why,
			         "a part done: %zu recipient(s) gone past, the rest left", t.seen);
		evh_event_set_error(ev, why);
		result = go_on ? EVH_EVENT_KEEP_AND_CONTINUE : EVH_EVENT_KEEP_AND_RETRY;
		goto out;
	}
	if (!t.stopping && !t.retry && !(t.untried && !last)) {
		/* Settled (no attempt comes): a recipient deleted since an earlier
		 * attempt left its mail "retrying" keeps no such entry (the others'
		 * entries are settled). Gone before the line says the broadcast's
		 * outcome. */
		char prefix[ID_MAX + 2];
		snprintf(prefix, sizeof prefix, "%s:", b.id);
		notif_pending_forget_retrying(&st->pending, prefix, 1);
	}
	evh_log(st->p, t.parked || t.untried ? EVH_LOG_WARN : EVH_LOG_INFO,
	        "broadcast %s: %d sent, %d already done, %d failed, %d to retry, %d given up "
	        "for a redrive (attempt %d)",
	        b.id, t.sent, t.already, t.failed, t.retry + (last ? 0 : t.untried) + t.left,
	        t.parked, evh_event_attempt(ev));
	if (t.stopping) {
		evh_log(st->p, EVH_LOG_INFO,
		        "broadcast %s: stopping: %zu recipient(s) gone past, the rest left for the "
		        "event's next delivery (after the start, or to the restarted plugin)",
		        b.id, t.seen - (size_t)t.left);
		if (t.parked) {
			/* The last attempt: those given up before the stop wait for
			 * the redrive, which serves those left too. */
			snprintf(why, sizeof why,
			         "%d deliveries not sent after the last attempt, the rest left at a "
			         "stop; last error: %s",
			         t.parked, t.last_err);
			result = EVH_EVENT_KEEP_AND_DEAD_LETTER;
		} else {
			snprintf(why, sizeof why,
			         "stopping: %zu recipient(s) gone past, the rest left for the event's "
			         "next delivery",
			         t.seen - (size_t)t.left);
			result = EVH_EVENT_KEEP_AND_RETRY;
		}
		evh_event_set_error(ev, why);
		goto out;
	}
	if (t.untried)
		evh_log(st->p, EVH_LOG_WARN,
		        "broadcast %s: the mail server could not be reached (%s): %d of %zu "
		        "recipient(s) not tried in attempt %d, %s",
		        b.id, t.last_err, t.untried, t.seen, evh_event_attempt(ev),
		        last ? "given up for a redrive (those not sent before)"
		             : "left to the event's next attempt");
	if (t.retry || (t.untried && !last)) {
		if (t.untried && !last)
			snprintf(why, sizeof why,
			         "%d of %zu deliveries to retry, %d of them not tried: the mail server "
			         "could not be reached; last error: %s",
			         t.retry + t.untried, t.seen, t.untried, t.last_err);
		else
			snprintf(why, sizeof why, "%d of %zu deliveries to retry; last error: %s",
			         t.retry, t.seen, t.last_err);
		evh_event_set_error(ev, why);
		/* The rows of the mails settled commit: the retry, and the event
		 * delivered again after a restart, skip them. */
		result = EVH_EVENT_KEEP_AND_RETRY;
	} else if (t.parked) {
		/* The sent rows commit; the redriven copy serves the others. */
		snprintf(why, sizeof why, "%d of %zu deliveries not sent after the last attempt; "
		         "last error: %s", t.parked, t.seen, t.last_err);
		evh_event_set_error(ev, why);
		result = EVH_EVENT_KEEP_AND_DEAD_LETTER;
	}
out:
	/* This part ends the attempt, or is done again should it not commit:
	 * a redo of it (after a failed commit, at the same attempt) still
	 * knows where the parts committed before ended, and what they found. */
	if (before.topic && !st->last_parts.topic)
		st->last_parts = before;
	else
		notif_last_parts_clear(&before);
	recipients_free(rs, n);
	free(cursor);
	free(down_from);
	cJSON_Delete(b.root);
	return result;
}
