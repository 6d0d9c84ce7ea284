/* The /crud/{collection} routes. Every change is stored together with the
 * event that announces it; every read and write carries the document's
 * version as its ETag so clients can update without losing others' work. */
#include "crud.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/json.h"
#include "../../host/jsonb.h"
#include "../common/ids.h"
#include "../common/paging.h"
#include "../common/query.h"
#include "../common/reply.h"
#include "../common/routes.h"

#define CRUD_PAGE_DEFAULT 20
#define CRUD_PAGE_MAX 100
#define CRUD_QUERY_NAME_MAX QUERY_NAME_MAX

static const crud_collection *collection_of(crud_state *st, evh_request *req,
                                            evh_response *resp, int *rc)
{
	const crud_collection *c = crud_find_collection(st, evh_req_param(req, "collection"));

	if (!c)
		*rc = reply_not_found(resp, "no such collection");
	return c;
}

static void set_etag(evh_response *resp, int64_t version)
{
	char etag[32];

	snprintf(etag, sizeof etag, "\"%lld\"", (long long)version);
	evh_resp_header(resp, "ETag", etag);
}

static int reply_doc(evh_response *resp, int status, int64_t version, const char *json)
{
	set_etag(resp, version);
	return evh_resp_json(resp, status, json, strlen(json));
}

static int reply_id_conflict(evh_response *resp)
{
	return reply_invalid(resp, "id", "id is assigned by the server and cannot be changed");
}

/* The preconditions of a request on a document that exists at `version`
 * (RFC 9110 13.2.2: If-Match, then If-None-Match; absent, unconditional):
 * If-Match with a strong comparison, false: 412; If-None-Match with a weak
 * one, false when it names the document's tag or is `*`: for a GET
 * (`read`) 304, for a write 412 (a client's "do not overwrite"). Either
 * header that is no list of entity tags is a 400 naming it: read as
 * matching nothing, a malformed If-None-Match let the write it was to stop
 * go through. 0 when the request may go on; else it has been answered. */
static int check_preconditions(evh_request *req, evh_response *resp, int64_t version, int read,
                               int *rc)
{
	static const char *const names[] = {"If-Match", "If-None-Match"};
	int match[2];
	char detail[160];
	const char *why;

	for (int i = 0; i < 2; i++) {
		const char *h = evh_req_header(req, names[i]);
		match[i] = h ? crud_etag_matches(h, version, i) : i ? 0 : 1;
		if (match[i] < 0) {
			snprintf(detail, sizeof detail,
			         "%s is not a list of entity tags (\"3\", W/\"3\") or *", names[i]);
			*rc = evh_resp_problem(resp, 400, "bad-request", "Bad Request", detail, NULL);
			return -1;
		}
	}
	if (!match[0])
		why = "the document has changed: If-Match does not match its ETag";
	else if (match[1] && !read)
		why = "the document exists with a tag If-None-Match names (or it is *): not changed";
	else if (match[1]) {
		set_etag(resp, version);
		evh_resp_status(resp, 304);
		*rc = EVH_OK;
		return -1;
	} else
		return 0;
	set_etag(resp, version);
	*rc = evh_resp_problem(resp, 412, "precondition-failed", "Precondition Failed", why, NULL);
	return -1;
}

/* The rules of `c` for `doc`; 0 when they hold, else the 422 is answered. */
static int check_rules(const crud_collection *c, const cJSON *doc, evh_response *resp, int *rc)
{
	const char *field;
	char detail[160];

	if (crud_rules_check(&c->rules, doc, &field, detail, sizeof detail) == 0)
		return 0;
	*rc = reply_invalid(resp, field, detail);
	return -1;
}

static int publish(crud_state *st, evh_tx *tx, const crud_collection *c, const char *type,
                   const char *id, const char *json)
{
	return evh_publish(st->p, tx, c->topic, id, type, json, strlen(json));
}

/* Answer a create or update of document `id` (stored as `json`; NULL when
 * it could not be printed) that failed with `rc` at `step`, the change
 * announced by `event`. An event evh_publish refused as larger than a Kafka
 * message is a 413 that says how large the document is and how large it
 * may be: the event's limit less its key, the id, what the client can act
 * on. Anything else as reply_change_failure, which names a document larger
 * than the storage takes, or an event it cannot keep. */
static int reply_doc_failure(crud_state *st, evh_response *resp, int rc, reply_step step,
                             const char *event, const char *id, const char *json)
{
	size_t max = evh_publish_max_bytes(st->p), idlen = strlen(id), len = json ? strlen(json) : 0;
	reply_change ch = {.step = step, .stored = "the document", .stored_bytes = len,
	                   .event = event, .event_bytes = json ? len + idlen : 0};
	char detail[256];

	if (rc != EVH_ETOOBIG || step != REPLY_STEP_PUBLISH || !json || max <= idlen ||
	    len + idlen <= max)
		return reply_change_failure(st->p, resp, &ch, rc); /* no limit known, or not Kafka's */
	snprintf(detail, sizeof detail,
	         "the document is %zu bytes as it would be stored (with its id); a document may "
	         "be at most %zu bytes, since the event announcing each change must fit one "
	         "Kafka message",
	         len, max - idlen);
	return evh_resp_problem(resp, 413, "payload-too-large", "Content Too Large", detail, NULL);
}

/* ------------------------------------------------------------------ create */

/* Store document `id` and announce it; *step says which call failed. */
static int insert_tx(crud_state *st, const crud_collection *c, const char *id, const char *json,
                     reply_step *step)
{
	char now[IDS_TIME_LEN + 1];
	evh_tx *tx;
	int rc;

	ids_now_rfc3339(now);
	*step = REPLY_STEP_OTHER;
	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return reply_log_failure(st->p, NULL, rc, "create document: begin");
	*step = REPLY_STEP_STORE;
	if ((rc = crud_db_insert(tx, c->name, id, json, now)) == EVH_OK) {
		*step = REPLY_STEP_PUBLISH;
		rc = publish(st, tx, c, c->type_created, id, json);
	}
	if (rc != EVH_OK)
		return reply_log_failure(st->p, tx, rc, "create document");
	*step = REPLY_STEP_OTHER;
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return reply_log_failure(st->p, NULL, rc, "create document: commit");
	return EVH_OK;
}

static int create_doc(evh_request *req, evh_response *resp, void *ud)
{
	crud_state *st = ud;
	char id[IDS_UUID_LEN + 1], location[CRUD_NAME_MAX + IDS_UUID_LEN + 16], *json = NULL;
	reply_step step;
	int rc = EVH_OK;
	const crud_collection *c = collection_of(st, req, resp, &rc);
	cJSON *doc = c ? reply_body_object(req, resp, &rc) : NULL;

	if (!doc)
		return rc;
	if (cJSON_GetObjectItemCaseSensitive(doc, "id")) {
		rc = reply_id_conflict(resp);
		goto out;
	}
	if (check_rules(c, doc, resp, &rc) != 0)
		goto out;
	ids_uuid_v7(id); /* time-ordered: new documents append to the index */
	if (crud_doc_set_id(doc, id) != 0 || !(json = jsonb_print(doc))) {
		rc = EVH_ENOMEM;
		goto out;
	}
	if ((rc = insert_tx(st, c, id, json, &step)) != EVH_OK) {
		rc = reply_doc_failure(st, resp, rc, step, "the event announcing the new document", id,
		                       json);
		goto out;
	}
	snprintf(location, sizeof location, "/crud/%s/%s", c->name, id);
	evh_resp_header(resp, "Location", location);
	rc = reply_doc(resp, 201, 1, json);
out:
	free(json);
	cJSON_Delete(doc);
	return rc;
}

/* -------------------------------------------------------------------- read */

static int get_doc(evh_request *req, evh_response *resp, void *ud)
{
	crud_state *st = ud;
	const char *id = evh_req_param(req, "id");
	int rc = EVH_OK;
	const crud_collection *c = collection_of(st, req, resp, &rc);
	int64_t version = 0;
	char *json = NULL;
	evh_tx *tx;

	if (!c)
		return rc;
	/* A read transaction: it neither waits for writes (nor an event
	 * handler's batch) nor holds them up. */
	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "get document: begin");
	rc = crud_db_get(tx, c->name, id, &version, &json);
	if (rc != EVH_OK && rc != EVH_ENOTFOUND)
		return reply_tx_failure(st->p, resp, tx, rc, "get document");
	evh_tx_rollback(tx);
	if (rc == EVH_ENOTFOUND)
		return reply_not_found(resp, "no document with this id in this collection");
	if (check_preconditions(req, resp, version, 1, &rc) == 0)
		rc = reply_doc(resp, 200, version, json);
	free(json);
	return rc;
}

/* ------------------------------------------------------ replace and patch */

/* The document as it will be stored: `body` itself (PUT; consumed, *body
 * set to NULL) or `current` with `body` merged in (PATCH). NULL: no memory. */
static cJSON *next_doc(const char *current, cJSON **body, int merge, const char *id)
{
	cJSON *doc;

	if (merge) {
		cJSON *cur = cJSON_Parse(current);
		doc = cur ? crud_merge_patch(cur, *body) : NULL;
	} else {
		doc = *body;
		*body = NULL;
	}
	if (doc && crud_doc_set_id(doc, id) != 0) {
		cJSON_Delete(doc);
		doc = NULL;
	}
	return doc;
}

/* Within `tx`: read the document, check the preconditions, the request's
 * *body (NULL: it was no JSON object) and the rules on its new state, store
 * and announce that state, and answer. Ends `tx`. */
static int write_tx(crud_state *st, evh_request *req, evh_response *resp, evh_tx *tx,
                    const crud_collection *c, cJSON **body, int merge)
{
	const char *id = evh_req_param(req, "id");
	char now[IDS_TIME_LEN + 1], *current = NULL, *json = NULL;
	reply_step step = REPLY_STEP_OTHER;
	int64_t version = 0;
	cJSON *doc = NULL;
	/* A replacement does not need the current document (next_doc). */
	int rc = crud_db_get(tx, c->name, id, &version, merge ? &current : NULL);

	if (rc == EVH_ENOTFOUND) {
		evh_tx_rollback(tx);
		return reply_not_found(resp, "no document with this id in this collection");
	}
	if (rc != EVH_OK)
		return reply_tx_failure(st->p, resp, tx, rc, "update document: read");
	if (check_preconditions(req, resp, version, 0, &rc) != 0) {
		evh_tx_rollback(tx);
		goto out;
	}
	/* What is wrong with the body, once the document is found and the
	 * preconditions hold (RFC 9110 13.2.1: before the content). */
	if (!*body || !crud_doc_id_compatible(*body, id)) {
		evh_tx_rollback(tx);
		rc = *body ? reply_id_conflict(resp) : reply_body_refused(resp, 0);
		goto out;
	}
	doc = next_doc(current, body, merge, id);
	if (doc && check_rules(c, doc, resp, &rc) != 0) {
		evh_tx_rollback(tx);
		goto out;
	}
	ids_now_rfc3339(now);
	rc = doc && (json = jsonb_print(doc)) ? EVH_OK : EVH_ENOMEM;
	if (rc == EVH_OK) {
		step = REPLY_STEP_STORE;
		rc = crud_db_update(tx, c->name, id, json, now);
	}
	if (rc == EVH_OK) {
		step = REPLY_STEP_PUBLISH;
		rc = publish(st, tx, c, c->type_updated, id, json);
	}
	if (rc != EVH_OK) {
		rc = reply_doc_failure(st, resp, reply_log_failure(st->p, tx, rc, "update document"),
		                       step, "the event announcing the change", id, json);
		goto out;
	}
	if ((rc = evh_tx_commit(tx)) != EVH_OK) {
		rc = reply_tx_failure(st->p, resp, NULL, rc, "update document: commit");
		goto out;
	}
	rc = reply_doc(resp, 200, version + 1, json);
out:
	free(json);
	cJSON_Delete(doc);
	free(current);
	return rc;
}

static int write_doc(evh_request *req, evh_response *resp, crud_state *st, int merge)
{
	const char *ct = evh_req_header(req, "Content-Type");
	int rc = EVH_OK, oom = 0;
	const crud_collection *c = collection_of(st, req, resp, &rc);
	cJSON *body;
	evh_tx *tx;

	if (!c)
		return rc;
	if (merge && !crud_media_type_is(ct, "application/merge-patch+json") &&
	    !crud_media_type_is(ct, "application/json"))
		return evh_resp_problem(resp, 415, "unsupported-media-type", "Unsupported Media Type",
		                        "PATCH takes a JSON merge patch (application/merge-patch+json"
		                        " or application/json)",
		                        NULL);
	/* A patch is no document: stored as one, it would drop every field it
	 * leaves out. */
	if (!merge && (crud_media_type_is(ct, "application/merge-patch+json") ||
	               crud_media_type_is(ct, "application/json-patch+json")))
		return evh_resp_problem(resp, 415, "unsupported-media-type", "Unsupported Media Type",
		                        "PUT takes the whole document (application/json); send a "
		                        "merge patch by PATCH",
		                        NULL);
	if (!(body = reply_body_parse(req, &oom)) && oom)
		return reply_body_refused(resp, oom); /* nothing done: try again */
	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		rc = reply_tx_failure(st->p, resp, NULL, rc, "update document: begin");
	else
		rc = write_tx(st, req, resp, tx, c, &body, merge);
	cJSON_Delete(body);
	return rc;
}

static int put_doc(evh_request *req, evh_response *resp, void *ud)
{
	return write_doc(req, resp, ud, 0);
}

static int patch_doc(evh_request *req, evh_response *resp, void *ud)
{
	return write_doc(req, resp, ud, 1);
}

/* ------------------------------------------------------------------ delete */

/* {"id": id} (free with cJSON_free), escaped by cJSON. */
static char *id_json(const char *id)
{
	cJSON *o = cJSON_CreateObject();
	char *json = o && cJSON_AddStringToObject(o, "id", id) ? cJSON_PrintUnformatted(o) : NULL;

	cJSON_Delete(o);
	return json;
}

static int delete_doc(evh_request *req, evh_response *resp, void *ud)
{
	crud_state *st = ud;
	const char *id = evh_req_param(req, "id");
	int rc = EVH_OK;
	const crud_collection *c = collection_of(st, req, resp, &rc);
	int64_t version = 0;
	char *data = NULL;
	evh_tx *tx;
	/* It stores nothing: only its event can be too large. */
	reply_change ch = {.event = "the event announcing the deletion"};

	if (!c)
		return rc;
	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "delete document: begin");
	rc = crud_db_get(tx, c->name, id, &version, NULL);
	if (rc == EVH_ENOTFOUND) {
		evh_tx_rollback(tx);
		return reply_not_found(resp, "no document with this id in this collection");
	}
	if (rc == EVH_OK && check_preconditions(req, resp, version, 0, &rc) != 0) {
		evh_tx_rollback(tx);
		return rc;
	}
	if (rc == EVH_OK && !(data = id_json(id)))
		rc = EVH_ENOMEM;
	if (rc == EVH_OK && (rc = crud_db_delete(tx, c->name, id)) == EVH_OK) {
		ch.step = REPLY_STEP_PUBLISH;
		ch.event_bytes = strlen(data) + strlen(id);
		rc = publish(st, tx, c, c->type_deleted, id, data);
	}
	cJSON_free(data);
	if (rc != EVH_OK)
		return reply_tx_change_failure(st->p, resp, tx, &ch, rc, "delete document");
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "delete document: commit");
	evh_resp_status(resp, 204);
	return EVH_OK;
}

/* -------------------------------------------------------------------- list */

/* 422 for a value longer than a filter takes. One answer whether the value
 * was too long for query_next's buffer or only for the filter. */
static int reply_value_too_long(evh_response *resp, const char *name)
{
	char detail[QUERY_DETAIL_MAX];

	snprintf(detail, sizeof detail, "the value of query parameter '%s' is longer than %d bytes",
	         name, CRUD_FILTER_VALUE_MAX);
	return reply_invalid(resp, name, detail);
}

/* Add one FIELD=VALUE filter; 0, or -1 after answering 422. */
static int add_filter(const crud_collection *c, const char *name, const char *value,
                      crud_filter *f, size_t *n, evh_response *resp, int *rc)
{
	const char *why;
	char detail[QUERY_DETAIL_MAX];

	if (strlen(value) > CRUD_FILTER_VALUE_MAX) { /* crud_filter_make's reason names nothing */
		*rc = reply_value_too_long(resp, name);
		return -1;
	}
	/* Before the type's reason (a number field's "must be a JSON number"):
	 * the bytes are wrong whatever the field. A name that is no field name
	 * is crud_filter_make's to refuse, and is not put in the answer. */
	if (crud_field_name_ok(name) && query_value_not_utf8(name, value, detail, sizeof detail)) {
		*rc = reply_invalid(resp, name, detail);
		return -1;
	}
	if (*n == CRUD_FILTERS_MAX) {
		*rc = reply_invalid(resp, name, "at most 8 filters per request");
		return -1;
	}
	if (crud_filter_make(&f[*n], name, value, crud_rules_type_of(&c->rules, name), &why)) {
		/* (A name that is not UTF-8 is left out of `field` by the host.) */
		*rc = reply_invalid(resp, name,
		                    json_utf8_error(name, strlen(name)) >= 0
		                        ? "filter names must be field names: a query parameter's "
		                          "name is not UTF-8 once percent-decoded"
		                        : why);
		return -1;
	}
	(*n)++;
	return 0;
}

/* 422 for a query parameter query_next could not decode (`bad`), naming
 * it (`field`, and in the detail) when its name could be decoded. */
static int reply_bad_query(evh_response *resp, int bad, const char *name)
{
	char detail[QUERY_DETAIL_MAX];
	const char *field;

	switch (bad) {
	case QUERY_BAD_NAME_LENGTH:
		snprintf(detail, sizeof detail,
		         "a parameter name in the query string is longer than %d bytes (a filter "
		         "names a field of at most %d)",
		         CRUD_QUERY_NAME_MAX - 1, CRUD_NAME_MAX);
		return reply_invalid(resp, NULL, detail);
	case QUERY_BAD_VALUE_LENGTH:
		return reply_value_too_long(resp, name);
	default: /* an escape, the name's or the value's */
		field = query_escape_problem(bad, name, detail, sizeof detail);
		return reply_invalid(resp, field, detail);
	}
}

/* Every query parameter but limit and cursor is a filter. On a host that
 * cannot list them, only the declared (typed) fields can be asked for. */
static int read_filters(evh_request *req, evh_response *resp, const crud_collection *c,
                        crud_filter *f, size_t *n, int *rc)
{
	char name[CRUD_QUERY_NAME_MAX], value[CRUD_FILTER_VALUE_MAX + 2];
	const char *qs = evh_req_query_string(req), *v;
	size_t i;
	int got;

	*n = 0;
	if (!EVH_API_HAS(req_query_string)) {
		for (i = 0; i < c->rules.ntypes; i++)
			if ((v = evh_req_query(req, c->rules.types[i].name)) &&
			    add_filter(c, c->rules.types[i].name, v, f, n, resp, rc))
				return -1;
		return 0;
	}
	while (qs && (got = query_next(&qs, name, sizeof name, value, sizeof value))) {
		if (got < 0) {
			*rc = reply_bad_query(resp, got, name);
			return -1;
		}
		if (strcmp(name, "limit") && strcmp(name, "cursor") &&
		    add_filter(c, name, value, f, n, resp, rc))
			return -1;
	}
	return 0;
}

static int list_docs(evh_request *req, evh_response *resp, void *ud)
{
	crud_state *st = ud;
	const char *cursor = evh_req_query(req, "cursor"), *twice;
	crud_filter filters[CRUD_FILTERS_MAX];
	int rc = EVH_OK, limit, more = 0;
	const crud_collection *c = collection_of(st, req, resp, &rc);
	int64_t after = 0, last = 0;
	size_t nfilters = 0;
	cJSON *items;
	evh_tx *tx;

	if (!c)
		return rc;
	if ((twice = query_find_repeated(evh_req_query_string(req),
	                                 (const char *const[]){"limit", "cursor", NULL}))) {
		char detail[64];
		snprintf(detail, sizeof detail, "%s is given twice: give it once", twice);
		return reply_invalid(resp, twice, detail);
	}
	if (paging_limit_parse(evh_req_query(req, "limit"), CRUD_PAGE_DEFAULT, CRUD_PAGE_MAX,
	                       &limit) != 0)
		return reply_invalid(resp, "limit", "limit must be a whole number from 1 to 100");
	if (cursor && paging_cursor_decode(cursor, &after) != 0)
		return reply_invalid(resp, "cursor", "cursor is not one this service returned");
	if (read_filters(req, resp, c, filters, &nfilters, &rc) != 0)
		return rc;
	if (!(items = cJSON_CreateArray()))
		return EVH_ENOMEM;
	/* A read transaction, as get_doc's: a filtered page scans up to
	 * CRUD_SCAN_MAX documents or CRUD_SCAN_BYTES of them while writes go on. */
	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK) {
		cJSON_Delete(items);
		return reply_tx_failure(st->p, resp, NULL, rc, "list documents: begin");
	}
	rc = crud_db_page(tx, c->name, after, limit, filters, nfilters, items, &more, &last);
	if (rc != EVH_OK) {
		cJSON_Delete(items);
		return reply_tx_failure(st->p, resp, tx, rc, "list documents");
	}
	evh_tx_rollback(tx);
	return reply_page(resp, items, more, last);
}

/* The routes, for the registration and the declaration (routes.h). */
#define CRUD_ROUTES(X)                                                                     \
	X("POST", "/crud/{collection}", create_doc, EVH_ROUTE_JSON | write, st->write_role)    \
	X("GET", "/crud/{collection}", list_docs, read, st->read_role)                         \
	X("GET", "/crud/{collection}/{id}", get_doc, read, st->read_role)                      \
	X("PUT", "/crud/{collection}/{id}", put_doc, EVH_ROUTE_JSON | write, st->write_role)   \
	X("PATCH", "/crud/{collection}/{id}", patch_doc, EVH_ROUTE_JSON | write,               \
	  st->write_role)                                                                      \
	X("DELETE", "/crud/{collection}/{id}", delete_doc, write, st->write_role)

const char *const crud_routes_declared[] = {CRUD_ROUTES(ROUTES_DECLARED) NULL};

int crud_routes_register(crud_state *st)
{
	/* Without a role set, a route is open to anyone who reaches the
	 * listener, as the old CrudService was (services.md says so). */
	const uint32_t read = st->read_role ? EVH_ROUTE_AUTH : 0,
	               write = st->write_role ? EVH_ROUTE_AUTH : 0;
	const routes_entry routes[] = {CRUD_ROUTES(ROUTES_ENTRY)};
	return routes_register(st->p, routes, sizeof routes / sizeof routes[0], st);
}
