/* See reply.h. */
#include "reply.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/clock.h"
#include "../../host/jsonb.h"
#include "jsonin.h"
#include "paging.h"

cJSON *reply_body_parse(evh_request *req, int *oom)
{
	size_t len = 0;
	const char *body = evh_req_body(req, &len);
	cJSON *obj;

	*oom = 0;
	if (cJSON_IsObject(obj = jsonin_parse(body, len, oom)))
		return obj;
	cJSON_Delete(obj);
	return NULL;
}

int reply_body_refused(evh_response *resp, int oom)
{
	if (!oom)
		return reply_invalid(resp, NULL, "the request body must be a JSON object");
	/* nothing done yet: the client may simply try again */
	evh_resp_header(resp, "Retry-After", "1");
	return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
	                        "out of memory reading the request body; try again", NULL);
}

cJSON *reply_body_object(evh_request *req, evh_response *resp, int *rc)
{
	int oom;
	cJSON *obj = reply_body_parse(req, &oom);

	if (!obj)
		*rc = reply_body_refused(resp, oom);
	return obj;
}

int reply_json(evh_response *resp, int status, const cJSON *body)
{
	char *text = jsonb_print(body); /* numbers exact: cJSON's may not be */
	int rc;

	if (!text)
		return EVH_ENOMEM;
	rc = evh_resp_json(resp, status, text, strlen(text));
	free(text);
	return rc;
}

int reply_page(evh_response *resp, cJSON *items, int more, int64_t last_seq)
{
	char cursor[PAGING_CURSOR_MAX];
	cJSON *o = cJSON_CreateObject(), *next;
	int rc = EVH_ENOMEM;

	if (!o || !cJSON_AddItemToObject(o, "items", items)) {
		cJSON_Delete(items);
		goto out;
	}
	if (more && paging_cursor_encode(last_seq, cursor, sizeof cursor) != 0) {
		rc = EVH_ERR;
		goto out;
	}
	next = more ? cJSON_CreateString(cursor) : cJSON_CreateNull();
	if (next && cJSON_AddItemToObject(o, "next_cursor", next))
		rc = reply_json(resp, 200, o);
	else
		cJSON_Delete(next);
out:
	cJSON_Delete(o);
	return rc;
}

int reply_invalid(evh_response *resp, const char *field, const char *detail)
{
	return evh_resp_problem(resp, 422, "validation", "Invalid request", detail, field);
}

int reply_not_found(evh_response *resp, const char *detail)
{
	return evh_resp_problem(resp, 404, "not-found", "Not Found", detail, NULL);
}

/* Whether storage failure `line` is to be said now: the same line as the
 * last one said (this plugin's, any thread) is said once a minute, *unsaid
 * getting how many were not since; another line is said at once. A disk
 * full or failing fails every request alike: a line each was thousands a
 * minute, and spent the plugin's log budget (its other lines dropped). */
static int storage_failure_due(const char *line, int64_t *unsaid)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static char last[512];
	static int64_t last_ms, skipped;
	int64_t now = clock_mono_ms();
	int same, due;
	pthread_mutex_lock(&mu);
	same = !strncmp(last, line, sizeof last - 1);
	due = !same || now - last_ms >= 60000;
	if (due) {
		*unsaid = same ? skipped : 0;
		skipped = 0;
		snprintf(last, sizeof last, "%s", line);
		last_ms = now;
	} else {
		skipped++;
	}
	pthread_mutex_unlock(&mu);
	return due;
}

int reply_log_failure(evh_plugin *p, evh_tx *tx, int rc, const char *what)
{
	const char *why = tx ? evh_tx_error(tx) : NULL;
	int64_t unsaid = 0;
	char line[512];

	/* A full outbox is the host's to say (once a minute, with a count):
	 * a line per refused request would flood the log in a burst. Without
	 * the transaction (it failed to begin, or a commit released it) the SDK
	 * has no message to give; the host says it, in its lines of the same
	 * request or event: this one says where to look. */
	snprintf(line, sizeof line, "%s failed: %s%s%s%s", what, evh_strerror(rc),
	         why && *why ? ": " : "", why ? why : "",
	         !why && rc == EVH_ESTORE ? " (the host's lines of this request or event say why)"
	                                  : "");
	if (rc != EVH_EFULL && (rc != EVH_ESTORE || storage_failure_due(line, &unsaid))) {
		if (unsaid > 0)
			evh_log(p, EVH_LOG_ERROR, "%s (and %" PRId64 " more since the last such line)",
			        line, unsaid);
		else
			evh_log(p, rc == EVH_ETOOBIG ? EVH_LOG_WARN : EVH_LOG_ERROR, "%s", line);
	}
	if (tx)
		evh_tx_rollback(tx);
	return rc;
}

int reply_failure(evh_response *resp, int rc)
{
	if (rc != EVH_EFULL)
		return rc;
	evh_resp_header(resp, "Retry-After", REPLY_RETRY_AFTER);
	return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
	                        "too many events are waiting to be sent; retry later", NULL);
}

int reply_tx_failure(evh_plugin *p, evh_response *resp, evh_tx *tx, int rc, const char *what)
{
	return reply_failure(resp, reply_log_failure(p, tx, rc, what));
}

/* What a value of `bytes` (0: not known) was larger than: `limit`. */
static void too_big_sized(char *detail, size_t size, const char *what, size_t bytes,
                          const char *unit, const char *limit)
{
	if (bytes)
		snprintf(detail, size, "%s is %zu bytes%s, more than %s", what, bytes, unit, limit);
	else
		snprintf(detail, size, "%s is larger than %s", what, limit);
}

/* The detail of the 413 for change `c`, refused as too big; `max` is the
 * most bytes of key and data an event may have, `stored_max` the most one
 * value or row of the storage may have (each 0: not known). */
static void too_big_detail(const reply_change *c, size_t max, size_t stored_max, char *detail,
                           size_t size)
{
	const char *event = c->event ? c->event : "the event announcing this change";
	char storage[128], keep[160];

	if (stored_max) {
		snprintf(storage, sizeof storage,
		         "the storage of this service takes (%zu bytes a value or row)", stored_max);
		snprintf(keep, sizeof keep,
		         "the storage of this service takes to keep it until it is sent (%zu bytes "
		         "a row)",
		         stored_max);
	} else { /* a host before ABI 1.9: the limit is its own */
		snprintf(storage, sizeof storage, "the storage of this service takes");
		snprintf(keep, sizeof keep,
		         "the storage of this service takes to keep it until it is sent");
	}
	if (c->step == REPLY_STEP_STORE) {
		too_big_sized(detail, size, c->stored ? c->stored : "this change", c->stored_bytes,
		              " as it would be stored", storage);
	} else if (!max) { /* a host before ABI 1.8: which of its limits, it does not say */
		too_big_sized(detail, size, event, c->event_bytes, " (its key and data)",
		              "this service takes for one event");
	} else if (c->event_bytes && c->event_bytes <= max) {
		/* Within Kafka's limit: the storage refused the event's row, in
		 * which it waits to be sent. */
		too_big_sized(detail, size, event, c->event_bytes, " (its key and data)", keep);
	} else if (c->event_bytes) {
		snprintf(detail, size,
		         "%s is %zu bytes (its key and data); an event may be at most %zu bytes, "
		         "since it must fit one Kafka message",
		         event, c->event_bytes, max);
	} else {
		snprintf(detail, size,
		         "%s is larger than an event may be: at most %zu bytes (its key and data), "
		         "since it must fit one Kafka message",
		         event, max);
	}
}

int reply_change_failure(evh_plugin *p, evh_response *resp, const reply_change *c, int rc)
{
	char detail[320];

	if (rc != EVH_ETOOBIG || c->step == REPLY_STEP_OTHER)
		return reply_failure(resp, rc);
	too_big_detail(c, p ? evh_publish_max_bytes(p) : 0, p ? evh_store_max_bytes(p) : 0, detail,
	               sizeof detail);
	return evh_resp_problem(resp, 413, "payload-too-large", "Content Too Large", detail, NULL);
}

int reply_tx_change_failure(evh_plugin *p, evh_response *resp, evh_tx *tx,
                            const reply_change *c, int rc, const char *what)
{
	return reply_change_failure(p, resp, c, reply_log_failure(p, tx, rc, what));
}
