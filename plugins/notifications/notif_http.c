/* HTTP routes: GET /notifications (the delivery log, newest first, keyset
 * pages), POST /notifications/broadcast (admin only; queues one event
 * that the plugin's own subscription turns into mails) and
 * GET /notifications/stream (the caller's new notifications, live). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/json.h"
#include "../../host/jsonb.h"
#include "../common/jsonin.h"
#include "../common/query.h"
#include "notif_plugin.h"
#include "notif_util.h"

#define PAGE_DEFAULT 20
#define PAGE_MAX 100

static int problem_422(evh_response *resp, const char *detail, const char *field)
{
	return evh_resp_problem(resp, 422, "validation", "Invalid request", detail, field);
}

/* Answer `body` (consumed); 500 when a part of it could not be built (`ok`
 * false, see jsonb.h) or it cannot be printed: `done` (or NULL) says what
 * was done all the same. */
static int reply_json(evh_response *resp, int status, cJSON *body, int ok, const char *done)
{
	char *s = body && ok ? cJSON_PrintUnformatted(body) : NULL;
	int rc;

	cJSON_Delete(body);
	if (!s)
		return evh_resp_problem(resp, 500, "internal", "Out of memory",
		                        done ? done : "could not render the response", NULL);
	rc = evh_resp_json(resp, status, s, strlen(s));
	free(s);
	return rc;
}

/* ------------------------------------------------------------ the log */

static char *col_dup(evh_rows *rows, int col)
{
	const char *s = evh_rows_text(rows, col, NULL);
	return s ? strdup(s) : NULL;
}

static int row_to_entry(evh_rows *rows, notif_entry *e)
{
	const char *s;

	memset(e, 0, sizeof *e);
	e->event_id = col_dup(rows, 0);
	e->recipient = col_dup(rows, 1);
	e->tmpl = col_dup(rows, 2);
	s = evh_rows_text(rows, 3, NULL);
	snprintf(e->status, sizeof e->status, "%s", s ? s : "");
	e->attempts = (int)evh_rows_int(rows, 4);
	if (evh_rows_type(rows, 5) != EVH_VAL_NULL)
		e->last_error = col_dup(rows, 5);
	s = evh_rows_text(rows, 6, NULL);
	snprintf(e->created_at, sizeof e->created_at, "%s", s ? s : "");
	s = evh_rows_text(rows, 7, NULL);
	snprintf(e->updated_at, sizeof e->updated_at, "%s", s ? s : "");
	return e->event_id && e->recipient && e->tmpl ? 0 : -1;
}

/* Up to `max` rows of the table after the cursor, newest first. 0; -1
 * with `err` set; EVH_EBUSY when the store stayed held by a long
 * transaction (an event handler's mail in flight) past its busy wait: the
 * host answers that 503 with Retry-After. */
static int table_page(notif_state *st, const char *recipient, const char *after_created,
                      const char *after_id, int max, notif_entry **out, size_t *n, char *err,
                      size_t errlen)
{
	char sql[512];
	evh_value args[4];
	size_t nargs = 0;
	evh_tx *tx = NULL;
	evh_rows *rows = NULL;
	notif_entry *v;
	int rc;

	*out = NULL;
	*n = 0;
	v = calloc((size_t)max, sizeof *v);
	if (!v) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(sql, sizeof sql,
	         "SELECT event_id, recipient, template, status, attempts, last_error, created_at,"
	         " updated_at FROM notifications_log WHERE 1 = 1%s%s"
	         " ORDER BY created_at DESC, event_id DESC LIMIT ?",
	         recipient ? " AND recipient = ?" : "",
	         after_created ? " AND (created_at, event_id) < (?, ?)" : "");
	if (recipient)
		args[nargs++] = EVH_TEXT(recipient);
	if (after_created) {
		args[nargs++] = EVH_TEXT(after_created);
		args[nargs++] = EVH_TEXT(after_id);
	}
	args[nargs++] = EVH_INT(max);
	/* A read transaction: what is committed, at once, where a write one
	 * waited for a mail in flight (its handler holds the writer). */
	rc = evh_tx_begin_read(st->p, &tx);
	if (rc != EVH_OK) {
		snprintf(err, errlen, "cannot begin a transaction: %s", evh_strerror(rc));
		free(v);
		return rc == EVH_EBUSY ? EVH_EBUSY : -1;
	}
	rc = evh_query(tx, sql, args, nargs, &rows);
	if (rc != EVH_OK) {
		const char *e = evh_tx_error(tx);
		snprintf(err, errlen, "reading notifications_log: %s", e ? e : evh_strerror(rc));
		goto fail;
	}
	while (*n < (size_t)max && (rc = evh_rows_next(rows)) == 1) {
		if (row_to_entry(rows, &v[*n]) < 0) {
			notif_entry_clear(&v[*n]);
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		(*n)++;
	}
	if (rc < 0) {
		snprintf(err, errlen, "reading notifications_log: %s", evh_strerror(rc));
		goto fail;
	}
	evh_rows_close(rows);
	evh_tx_rollback(tx); /* read only */
	*out = v;
	return 0;
fail:
	if (rows)
		evh_rows_close(rows);
	evh_tx_rollback(tx);
	notif_entries_free(v, *n);
	*n = 0;
	return -1;
}

static int in_table(const notif_entry *t, size_t nt, const char *event_id)
{
	for (size_t i = 0; i < nt; i++)
		if (!strcmp(t[i].event_id, event_id))
			return 1;
	return 0;
}

static cJSON *entry_json(const notif_entry *e, int *ok)
{
	cJSON *o = cJSON_CreateObject();

	jsonb_put_str(o, "event_id", e->event_id, ok);
	jsonb_put_str(o, "recipient", e->recipient, ok);
	jsonb_put_str(o, "template", e->tmpl, ok);
	jsonb_put_str(o, "status", e->status, ok);
	jsonb_put_num(o, "attempts", e->attempts, ok);
	jsonb_put_str(o, "last_error", e->last_error, ok);
	jsonb_put_str(o, "created_at", e->created_at, ok);
	jsonb_put_str(o, "updated_at", e->updated_at, ok);
	return o;
}

/* Merge table rows and in-memory entries (both newest first) into one page
 * of at most `limit` items; a row in the table wins over memory. *ok is
 * cleared when a part of it could not be built (see jsonb.h). */
static cJSON *merge_page(const notif_entry *t, size_t nt, const notif_entry *m, size_t nm,
                         int limit, int *ok)
{
	cJSON *body = cJSON_CreateObject(), *items = jsonb_put_array(body, "items", ok);
	const notif_entry *last = NULL;
	size_t i = 0, j = 0;
	int count = 0, more = 0;

	if (!items)
		return body;
	while (i < nt || j < nm) {
		const notif_entry *e;
		if (j < nm && in_table(t, nt, m[j].event_id)) {
			j++;
			continue;
		}
		if (j >= nm || (i < nt && notif_key_cmp(t[i].created_at, t[i].event_id,
		                                        m[j].created_at, m[j].event_id) > 0))
			e = &t[i++];
		else
			e = &m[j++];
		if (count == limit) {
			more = 1;
			break;
		}
		jsonb_put(items, NULL, entry_json(e, ok), ok);
		last = e;
		count++;
	}
	if (more && last) {
		char *c = notif_cursor_encode(last->created_at, last->event_id);
		if (!c)
			*ok = 0;
		else
			jsonb_put_str(body, "next_cursor", c, ok);
		free(c);
	} else {
		jsonb_put_str(body, "next_cursor", NULL, ok);
	}
	return body;
}

int notif_http_list(evh_request *req, evh_response *resp, void *ud)
{
	notif_state *st = ud;
	const char *recipient = evh_req_query(req, "recipient");
	const char *cursor = evh_req_query(req, "cursor"), *field;
	char after_created[NOTIF_TIME_LEN], err[512];
	char name[QUERY_NAME_MAX], detail[QUERY_DETAIL_MAX];
	char *after_id = NULL;
	notif_entry *t = NULL, *m = NULL;
	size_t nt = 0;
	int limit, nm = 0, rc, ok = 1;
	cJSON *page;

	if ((rc = query_find_bad_escape(evh_req_query_string(req), name, sizeof name)) != 0) {
		field = query_escape_problem(rc, name, detail, sizeof detail);
		return problem_422(resp, detail, field);
	}
	if ((field = query_find_repeated(evh_req_query_string(req),
	                                 (const char *const[]){"limit", "cursor", "recipient",
	                                                       NULL}))) {
		snprintf(detail, sizeof detail, "%s is given twice: give it once", field);
		return problem_422(resp, detail, field);
	}
	if (notif_parse_limit(evh_req_query(req, "limit"), PAGE_DEFAULT, PAGE_MAX, &limit) < 0)
		return problem_422(resp, "limit must be an integer from 1 to 100", "limit");
	/* Given empty, a parameter is refused, as user and crud refuse theirs:
	 * read as absent, ?cursor= would start over at the first page and
	 * ?recipient= list every recipient's mails. */
	if (cursor && notif_cursor_decode(cursor, after_created, &after_id) < 0)
		return problem_422(resp, "cursor is not a next_cursor this service returned",
		                   "cursor");
	if (recipient && !*recipient) {
		free(after_id);
		return problem_422(resp,
		                   "recipient is empty: give the address to list, or leave the "
		                   "parameter out",
		                   "recipient");
	}
	/* Every stored address is UTF-8: bytes that are not could only give an
	 * empty page, as if nobody had been written to. */
	if (recipient && query_value_not_utf8("recipient", recipient, detail, sizeof detail)) {
		free(after_id);
		return problem_422(resp, detail, "recipient");
	}
	/* One more than asked on each side tells whether another page exists. */
	rc = table_page(st, recipient, after_id ? after_created : NULL, after_id, limit + 1, &t,
	                &nt, err, sizeof err);
	if (rc == EVH_EBUSY) /* the host says it: 503, Retry-After */
		goto out;
	if (rc < 0) {
		evh_log(st->p, EVH_LOG_ERROR, "GET /notifications: %s", err);
		rc = evh_resp_problem(resp, 500, "storage", "Storage error", err, NULL);
		goto out;
	}
	nm = notif_pending_page(&st->pending, recipient, after_id ? after_created : NULL, after_id,
	                        (size_t)limit + 1, &m);
	if (nm < 0) {
		nm = 0;
		rc = evh_resp_problem(resp, 500, "internal", "Out of memory",
		                      "could not read the delivery state", NULL);
		goto out;
	}
	page = merge_page(t, nt, m, (size_t)nm, limit, &ok);
	rc = reply_json(resp, 200, page, ok, NULL);
out:
	notif_entries_free(t, nt);
	notif_entries_free(m, m ? (size_t)nm : 0);
	free(after_id);
	return rc;
}

/* ------------------------------------------------------------ broadcast */

static int blank(const char *s)
{
	for (; *s; s++)
		if (!strchr(" \t\r\n", *s))
			return 0;
	return 1;
}

/* 413 for a broadcast whose event evh_publish refused as too big: its key
 * and data are `size` bytes. Says the size and the limit when the host
 * tells the limit (evh_publish_max_bytes), as the host's log line does. */
static int reply_too_big(notif_state *st, evh_response *resp, size_t size)
{
	size_t max = evh_publish_max_bytes(st->p);
	char detail[256];

	if (!max || size <= max)
		return evh_resp_problem(resp, 413, "payload-too-large", "Content Too Large",
		                        "the broadcast's event would be larger than a Kafka message "
		                        "may be",
		                        "message");
	snprintf(detail, sizeof detail,
	         "the broadcast's event would be %zu bytes (the subject and message as JSON, with "
	         "the broadcast's id and who asked for it); an event may be at most %zu bytes, "
	         "since it must fit one Kafka message",
	         size, max);
	return evh_resp_problem(resp, 413, "payload-too-large", "Content Too Large", detail,
	                        "message");
}

int notif_http_broadcast(evh_request *req, evh_response *resp, void *ud)
{
	notif_state *st = ud;
	size_t len = 0;
	const char *body = evh_req_body(req, &len);
	int oom = 0, ok = 1, rc;
	cJSON *root = jsonin_parse(body, len, &oom), *data = NULL, *reply;
	const cJSON *subject, *message;
	char id[37], done[128], *json = NULL;
	const char *who = evh_req_auth_subject(req);

	subject = cJSON_GetObjectItemCaseSensitive(root, "subject");
	message = cJSON_GetObjectItemCaseSensitive(root, "message");
	if (oom) { /* the host checked it is JSON (EVH_ROUTE_JSON); nothing done yet */
		evh_resp_header(resp, "Retry-After", "1");
		rc = evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
		                      "out of memory reading the request body; try again", NULL);
		goto out;
	}
	if (!cJSON_IsObject(root)) {
		rc = problem_422(resp, "the body must be a JSON object", NULL);
		goto out;
	}
	if (!cJSON_IsString(subject) || blank(subject->valuestring)) {
		rc = problem_422(resp, "subject is required: a non-empty string", "subject");
		goto out;
	}
	if (strlen(subject->valuestring) > NOTIF_SUBJECT_MAX) {
		rc = problem_422(resp, "subject is longer than 998 bytes", "subject");
		goto out;
	}
	if (!cJSON_IsString(message) || blank(message->valuestring)) {
		rc = problem_422(resp, "message is required: a non-empty string", "message");
		goto out;
	}
	if (notif_uuid4(id) < 0) {
		rc = evh_resp_problem(resp, 500, "internal", "No randomness",
		                      "could not generate a broadcast id", NULL);
		goto out;
	}
	/* Each member or none: an event without its message would be
	 * dead-lettered by the consumer after a 202 here. */
	data = cJSON_CreateObject();
	jsonb_put_str(data, "broadcast_id", id, &ok);
	jsonb_put_str(data, "subject", subject->valuestring, &ok);
	jsonb_put_str(data, "message", message->valuestring, &ok);
	if (who)
		jsonb_put_str(data, "requested_by", who, &ok);
	if (ok)
		json = cJSON_PrintUnformatted(data);
	if (!json) {
		rc = evh_resp_problem(resp, 500, "internal", "Out of memory",
		                      "could not build the broadcast event", NULL);
		goto out;
	}
	rc = evh_publish(st->p, NULL, st->topic_broadcast, id, NOTIF_BROADCAST_TYPE, json,
	                 strlen(json));
	if (rc == EVH_EFULL) {
		evh_resp_header(resp, "Retry-After", "5");
		rc = evh_resp_problem(resp, 503, "outbox-full", "Try again shortly",
		                      "too many events are waiting to be published", NULL);
		goto out;
	}
	if (rc == EVH_ETOOBIG) {
		rc = reply_too_big(st, resp, strlen(id) + strlen(json));
		goto out;
	}
	/* The store held past its busy wait, or a storage failure: the host's
	 * answer, which logs the store's reason and, when the database is full,
	 * is a 503 with Retry-After (a 500 here said to give up). */
	if (rc == EVH_EBUSY || rc == EVH_ESTORE)
		goto out;
	if (rc != EVH_OK) {
		evh_log(st->p, EVH_LOG_ERROR, "broadcast %s: publish failed: %s", id,
		        evh_strerror(rc));
		rc = evh_resp_problem(resp, 500, "publish", "Could not queue the broadcast",
		                      evh_strerror(rc), NULL);
		goto out;
	}
	evh_log(st->p, EVH_LOG_INFO, "broadcast %s queued by %s", id, who ? who : "(unknown)");
	reply = cJSON_CreateObject();
	jsonb_put_str(reply, "broadcast_id", id, &ok);
	snprintf(done, sizeof done, "broadcast %s was queued, but the answer could not be written",
	         id);
	rc = reply_json(resp, 202, reply, ok, done);
out:
	cJSON_Delete(root);
	cJSON_Delete(data);
	free(json);
	return rc;
}

/* ------------------------------------------------------------ live stream */

/* GET /notifications/stream: the caller's own notifications as they are
 * recorded (notif_events.c publishes them), as Server-Sent Events. The
 * channel is the token's subject, the user id the user events carry, so a
 * token only ever hears about its own user. */
int notif_http_stream(evh_request *req, evh_response *resp, void *ud)
{
	const char *who = evh_req_auth_subject(req);
	int rc;

	(void)ud;
	if (!who || !*who)
		return evh_resp_problem(resp, 401, "unauthorized", "Unauthorized",
		                        "the token has no subject", NULL);
	/* The channels are user ids, which only this host's tokens name: an
	 * identity provider's subject equal to one is another person. */
	if (!evh_req_auth_local(req))
		return evh_resp_problem(resp, 403, "forbidden", "Forbidden",
		                        "notifications are streamed to the users this server "
		                        "signs tokens for, not to another issuer's",
		                        NULL);
	rc = evh_resp_stream(resp, who);
	if (rc == EVH_EUNSUPPORTED)
		return evh_resp_problem(resp, 501, "not-implemented", "Not Implemented",
		                        "this evhost has no event streams", NULL);
	/* EVH_EBUSY (no place), EVH_ESTATE (the server is stopping): the host
	 * has already answered 503 with Retry-After. Returned on, EVH_ESTATE
	 * got a WARN line per request in a stop ("returned EVH_ESTATE after
	 * making its 503 answer"). */
	return rc == EVH_EBUSY || rc == EVH_ESTATE ? EVH_OK : rc;
}
