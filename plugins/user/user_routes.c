/* The /users routes: register, read, list, change and delete accounts, each
 * change stored together with the event that announces it. */
#include "user.h"

#include <stdio.h>
#include <string.h>

#include "../common/paging.h"
#include "../common/query.h"
#include "../common/reply.h"
#include "../common/routes.h"

#define USER_PAGE_DEFAULT 20
#define USER_PAGE_MAX 100

/* CloudEvents types (ce_type) of the events this plugin publishes. */
#define USER_TYPE_CREATED "user.created"
#define USER_TYPE_UPDATED "user.updated"
#define USER_TYPE_DELETED "user.deleted"

cJSON *user_to_json(const user_rec *u)
{
	cJSON *o = cJSON_CreateObject();

	if (o && cJSON_AddStringToObject(o, "id", u->id) &&
	    cJSON_AddStringToObject(o, "name", u->name) &&
	    cJSON_AddStringToObject(o, "email", u->email) &&
	    cJSON_AddStringToObject(o, "created_at", u->created_at) &&
	    cJSON_AddStringToObject(o, "updated_at", u->updated_at))
		return o;
	cJSON_Delete(o);
	return NULL;
}

/* Publish `data` (consumed) keyed by the user's id within `tx`; *bytes
 * gets the event's size (key and data), for the answer to a refusal. */
static int publish(user_state *st, evh_tx *tx, const char *topic, const char *type,
                   const char *id, cJSON *data, size_t *bytes)
{
	char *json = data ? cJSON_PrintUnformatted(data) : NULL;
	int rc;

	cJSON_Delete(data);
	if (!json)
		return EVH_ENOMEM;
	*bytes = strlen(json) + strlen(id);
	rc = evh_publish(st->p, tx, topic, id, type, json, strlen(json));
	cJSON_free(json);
	return rc;
}

/* The data of created/updated events: what the old stack sent. */
static cJSON *profile_event(const user_rec *u)
{
	cJSON *o = cJSON_CreateObject();

	if (o && cJSON_AddStringToObject(o, "id", u->id) &&
	    cJSON_AddStringToObject(o, "name", u->name) &&
	    cJSON_AddStringToObject(o, "email", u->email))
		return o;
	cJSON_Delete(o);
	return NULL;
}

/* A change that stores user `u` and is announced by `event`, before its
 * first call. */
static reply_change user_change(const user_rec *u, const char *event)
{
	reply_change ch = {.stored = "the user", .stored_bytes = user_db_bytes(u), .event = event};

	return ch;
}

int user_create_tx(user_state *st, const user_rec *u, const char *admin_email,
                   reply_change *ch)
{
	evh_tx *tx;
	int rc;

	*ch = user_change(u, "the event announcing the new user");
	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return reply_log_failure(st->p, NULL, rc, "create user: begin");
	ch->step = REPLY_STEP_STORE;
	rc = user_db_insert(tx, u);
	if (rc == EVH_ECONSTRAINT) { /* the email is taken: an answer, not a failure */
		evh_tx_rollback(tx);
		return rc;
	}
	if (rc == EVH_OK && admin_email)
		rc = user_db_admin_record(tx, admin_email, u->id, u->created_at);
	if (rc == EVH_OK) {
		ch->step = REPLY_STEP_PUBLISH;
		rc = publish(st, tx, st->topic_created, USER_TYPE_CREATED, u->id, profile_event(u),
		             &ch->event_bytes);
	}
	if (rc != EVH_OK)
		return reply_log_failure(st->p, tx, rc, "create user");
	ch->step = REPLY_STEP_OTHER;
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return reply_log_failure(st->p, NULL, rc, "create user: commit");
	return EVH_OK;
}

static int reply_email_taken(evh_response *resp)
{
	return evh_resp_problem(resp, 409, "conflict", "Conflict",
	                        "a user with this email already exists", "email");
}

/* A string member: 0 absent, 1 present (*out set), -1 present but not a string. */
static int body_string(const cJSON *body, const char *name, const char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);

	if (!v)
		return 0;
	if (!cJSON_IsString(v))
		return -1;
	*out = v->valuestring;
	return 1;
}

/* Validate the profile fields present in `body` into `u`; `all` requires
 * every one (registration). *password is set when one was given. Returns
 * 0, or the 422 answer's status with *answered set. */
static int read_profile(user_state *st, const cJSON *body, int all, user_rec *u,
                        const char **password, evh_response *resp, int *answered)
{
	static const char *const fields[] = {"name", "email", "password"};
	const char *val[3] = {NULL, NULL, NULL}, *why = NULL, *start;
	size_t i, len;
	char detail[96];

	*answered = 1;
	/* Field by field, in this order: the first that breaks a rule (absent,
	 * not a string, or its value) is the one reported, as services.md says. */
	for (i = 0; i < 3; i++) {
		int has = body_string(body, fields[i], &val[i]);
		if (has < 0 || (all && has == 0)) {
			snprintf(detail, sizeof detail, "%s %s", fields[i],
			         has < 0 ? "must be a string" : "is required");
			return reply_invalid(resp, fields[i], detail);
		}
		if (has && ((i == 0 && user_name_check(val[0], &start, &len, &why) != 0) ||
		            (i == 1 && user_email_normalize(val[1], u->email, &why) != 0) ||
		            (i == 2 && user_password_check(val[2], st->password_min, &why) != 0)))
			return reply_invalid(resp, fields[i], why);
	}
	if (val[0]) {
		memcpy(u->name, start, len);
		u->name[len] = '\0';
	}
	*password = val[2];
	*answered = 0;
	return EVH_OK;
}

static int reply_user(evh_response *resp, int status, const user_rec *u)
{
	cJSON *o = user_to_json(u);
	int rc = o ? reply_json(resp, status, o) : EVH_ENOMEM;

	cJSON_Delete(o);
	return rc;
}

/* The user as the answer's JSON text (free with cJSON_free), rendered
 * before the change is committed: out of memory then, nothing is stored and
 * the 500 is true. (Copying it into the answer can still fail after the
 * commit; the host then answers 500 saying the request was carried out.) */
static char *user_text(const user_rec *u)
{
	cJSON *o = user_to_json(u);
	char *json = o ? cJSON_PrintUnformatted(o) : NULL;

	cJSON_Delete(o);
	return json;
}

/* Answer `status` with `json` (consumed; see user_text). */
static int reply_text(evh_response *resp, int status, char *json)
{
	int rc = evh_resp_json(resp, status, json, strlen(json));

	cJSON_free(json);
	return rc;
}

static int create_user(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	const char *password = NULL;
	char location[64], *json = NULL;
	int rc = EVH_OK, answered = 0;
	cJSON *body = reply_body_object(req, resp, &rc);
	reply_change ch;
	user_rec u;

	if (!body)
		return rc;
	memset(&u, 0, sizeof u);
	rc = read_profile(st, body, 1, &u, &password, resp, &answered);
	if (answered)
		goto out;
	if ((rc = user_password_hash(st, password, u.password_hash)) != EVH_OK) {
		rc = user_hash_failure(st, resp, rc);
		goto out;
	}
	ids_uuid_v4(u.id);
	ids_now_rfc3339(u.created_at);
	memcpy(u.updated_at, u.created_at, sizeof u.updated_at);
	snprintf(u.roles, sizeof u.roles, "%s", USER_ROLES_DEFAULT);
	if (!(json = user_text(&u))) {
		rc = EVH_ENOMEM;
		goto out;
	}
	rc = user_create_tx(st, &u, NULL, &ch);
	if (rc == EVH_ECONSTRAINT) {
		rc = reply_email_taken(resp);
		goto out;
	}
	if (rc != EVH_OK) {
		rc = reply_change_failure(st->p, resp, &ch, rc);
		goto out;
	}
	snprintf(location, sizeof location, "/users/%s", u.id);
	evh_resp_header(resp, "Location", location);
	rc = reply_text(resp, 201, json);
	json = NULL;
out:
	sodium_memzero(u.password_hash, sizeof u.password_hash);
	cJSON_free(json);
	cJSON_Delete(body);
	return rc;
}

static int get_user(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	const char *id = evh_req_param(req, "id");
	evh_tx *tx;
	user_rec u;
	int rc;

	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK) /* waits for no write */
		return reply_tx_failure(st->p, resp, NULL, rc, "get user: begin");
	rc = user_db_get(tx, id, &u);
	if (rc != EVH_OK && rc != EVH_ENOTFOUND)
		return reply_tx_failure(st->p, resp, tx, rc, "get user");
	evh_tx_rollback(tx);
	if (rc == EVH_ENOTFOUND)
		return reply_not_found(resp, "no user has this id");
	return reply_user(resp, 200, &u);
}

static int list_users(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	const char *cursor = evh_req_query(req, "cursor"), *field;
	char name[QUERY_NAME_MAX], detail[QUERY_DETAIL_MAX];
	int64_t after = 0, last = 0;
	int limit, more = 0, rc;
	cJSON *items;
	evh_tx *tx;

	if ((rc = query_find_bad_escape(evh_req_query_string(req), name, sizeof name)) != 0) {
		field = query_escape_problem(rc, name, detail, sizeof detail);
		return reply_invalid(resp, field, detail);
	}
	if ((field = query_find_repeated(evh_req_query_string(req),
	                                 (const char *const[]){"limit", "cursor", NULL}))) {
		snprintf(detail, sizeof detail, "%s is given twice: give it once", field);
		return reply_invalid(resp, field, detail);
	}
	if (paging_limit_parse(evh_req_query(req, "limit"), USER_PAGE_DEFAULT, USER_PAGE_MAX,
	                       &limit) != 0)
		return reply_invalid(resp, "limit", "limit must be a whole number from 1 to 100");
	if (cursor && paging_cursor_decode(cursor, &after) != 0)
		return reply_invalid(resp, "cursor", "cursor is not one this service returned");
	if (!(items = cJSON_CreateArray()))
		return EVH_ENOMEM;
	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK) {
		cJSON_Delete(items);
		return reply_tx_failure(st->p, resp, NULL, rc, "list users: begin");
	}
	rc = user_db_page(tx, after, limit, items, &more, &last);
	if (rc != EVH_OK) {
		cJSON_Delete(items);
		return reply_tx_failure(st->p, resp, tx, rc, "list users");
	}
	evh_tx_rollback(tx);
	return reply_page(resp, items, more, last);
}

static int reply_forbidden(evh_response *resp)
{
	return evh_resp_problem(resp, 403, "forbidden", "Forbidden",
	                        "only the user themself or an admin may change this user", NULL);
}

/* Apply the validated change `in` to the stored `u`. Returns the names of
 * the fields that now differ as a JSON array (NULL: out of memory). */
static cJSON *apply_change(user_rec *u, const user_rec *in, int new_password)
{
	const char *names[3];
	int n = 0;

	if (in->name[0] && strcmp(in->name, u->name)) {
		memcpy(u->name, in->name, sizeof u->name);
		names[n++] = "name";
	}
	if (in->email[0] && strcmp(in->email, u->email)) {
		memcpy(u->email, in->email, sizeof u->email);
		names[n++] = "email";
	}
	if (new_password) {
		memcpy(u->password_hash, in->password_hash, sizeof u->password_hash);
		names[n++] = "password";
	}
	return cJSON_CreateStringArray(names, n);
}

/* {"id","name","email","changed":[...]}; consumes `changed`. */
static cJSON *updated_event(const user_rec *u, cJSON *changed)
{
	cJSON *data = profile_event(u);

	if (data && cJSON_AddItemToObject(data, "changed", changed))
		return data;
	cJSON_Delete(changed);
	cJSON_Delete(data);
	return NULL;
}

static int reply_password_changed(evh_response *resp)
{
	return evh_resp_problem(resp, 409, "conflict", "Conflict",
	                        "the password was changed while current_password was being "
	                        "checked; nothing was changed: send it again with the password "
	                        "as it is now",
	                        "current_password");
}

/* Store the change to user `id` and its event; answer with the user.
 * `verified` (empty: none) is the hash current_password was checked
 * against: read before the check, outside this transaction, so a password
 * changed since (by another request of the user's, or an admin) refuses
 * the change the old password proved. With `stale`, such a hash is not
 * refused but said: nothing is done or answered, *stale is set and
 * `verified` gets the hash stored now, for the caller to check
 * current_password against (a login may have stored the same password at
 * the current cost). `email_as_read`: in->email was let through without
 * current_password for being the email the user had when checked; if it
 * is another by now (changed meanwhile), the change is refused: it would
 * set the email back with no password proven. */
static int update_tx(user_state *st, evh_response *resp, const char *id, const user_rec *in,
                     int new_password, int email_as_read, char verified[crypto_pwhash_STRBYTES],
                     int *stale, user_rec *u)
{
	cJSON *changed = NULL;
	char *json = NULL;
	reply_change ch = {.step = REPLY_STEP_OTHER};
	evh_tx *tx;
	int rc;

	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "update user: begin");
	rc = user_db_get(tx, id, u);
	if (rc == EVH_ENOTFOUND) {
		evh_tx_rollback(tx);
		return reply_not_found(resp, "no user has this id");
	}
	if (rc == EVH_OK && verified[0] && strcmp(verified, u->password_hash)) {
		evh_tx_rollback(tx);
		if (!stale)
			return reply_password_changed(resp);
		memcpy(verified, u->password_hash, crypto_pwhash_STRBYTES);
		*stale = 1;
		return EVH_OK;
	}
	if (rc == EVH_OK && email_as_read && strcmp(in->email, u->email)) {
		evh_tx_rollback(tx);
		return evh_resp_problem(resp, 409, "conflict", "Conflict",
		                        "the email was changed while this request was checked; nothing "
		                        "was changed: to set this email, send current_password",
		                        "email");
	}
	if (rc == EVH_OK && !(changed = apply_change(u, in, new_password)))
		rc = EVH_ENOMEM;
	if (rc == EVH_OK && cJSON_GetArraySize(changed) == 0) { /* nothing to store or announce */
		cJSON_Delete(changed);
		evh_tx_rollback(tx);
		return reply_user(resp, 200, u);
	}
	if (rc == EVH_OK) {
		ids_now_rfc3339(u->updated_at);
		ch = user_change(u, "the event announcing the change");
		ch.step = REPLY_STEP_STORE;
		rc = user_db_update(tx, u);
	}
	if (rc == EVH_ECONSTRAINT) {
		cJSON_Delete(changed);
		evh_tx_rollback(tx);
		return reply_email_taken(resp);
	}
	if (rc == EVH_OK) {
		ch.step = REPLY_STEP_PUBLISH;
		rc = publish(st, tx, st->topic_updated, USER_TYPE_UPDATED, u->id,
		             updated_event(u, changed), &ch.event_bytes);
	} else {
		cJSON_Delete(changed);
	}
	if (rc == EVH_OK && !(json = user_text(u)))
		rc = EVH_ENOMEM;
	if (rc != EVH_OK)
		return reply_tx_change_failure(st->p, resp, tx, &ch, rc, "update user");
	/* Tokens signed before a new password are refused (the one this
	 * request came with too): who held one without the password holds
	 * nothing now. Before the commit: see user_sign_out. */
	if (new_password) {
		int answered;
		rc = user_sign_out(st, resp, tx, u->id, &answered);
		if (answered) {
			cJSON_free(json);
			return rc;
		}
	}
	if ((rc = evh_tx_commit(tx)) != EVH_OK) {
		cJSON_free(json);
		return reply_tx_failure(st->p, resp, NULL, rc, "update user: commit");
	}
	if (new_password)
		user_sign_out_after(st, u->id);
	return reply_text(resp, 200, json);
}

/* The current password of user `id`: needed for a change of its password
 * (or of its email to another) unless `needs` is clear, and checked
 * whenever it is given. 422 without it when needed (or not a string), 404
 * without the user, 403 when it is wrong (see user_verify_current).
 * *answered clear: go on, with `verified` the hash it was checked against
 * (empty when none was given). */
static int check_current(user_state *st, evh_request *req, evh_response *resp,
                         const cJSON *body, const char *id, const user_rec *in,
                         int new_password, int needs, char verified[crypto_pwhash_STRBYTES],
                         int *answered)
{
	const char *current = NULL;
	int has = body_string(body, "current_password", &current);
	user_rec u;
	evh_tx *tx;
	int rc;

	*answered = 1;
	verified[0] = '\0';
	if (has < 0)
		return reply_invalid(resp, "current_password", "current_password must be a string");
	if (!has && !needs) {
		*answered = 0;
		return EVH_OK;
	}
	/* Only a read: the update's own transaction reads the user again. */
	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "update user: begin");
	rc = user_db_get(tx, id, &u);
	evh_tx_rollback(tx);
	if (rc == EVH_ENOTFOUND)
		return reply_not_found(resp, "no user has this id");
	if (rc != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "update user: read user");
	if (has) {
		/* A new password is hashed at the current cost anyway. */
		rc = user_verify_current(st, req, resp, &u, current, !new_password, verified,
		                         answered);
	} else if (!new_password && !strcmp(in->email, u.email)) {
		*answered = 0; /* the email it has: no change */
		rc = EVH_OK;
	} else {
		rc = reply_invalid(resp, "current_password",
		                   "current_password is required to change the password or the "
		                   "email");
	}
	sodium_memzero(u.password_hash, sizeof u.password_hash);
	return rc;
}

static int patch_user(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	const char *id = evh_req_param(req, "id"), *password = NULL;
	char verified[crypto_pwhash_STRBYTES];
	int rc = EVH_OK, answered = 0, email_as_read;
	user_rec in, u;
	cJSON *body;

	if (!user_may_modify(req, id))
		return reply_forbidden(resp);
	if (!(body = reply_body_object(req, resp, &rc)))
		return rc;
	memset(&in, 0, sizeof in);
	memset(&u, 0, sizeof u);
	rc = read_profile(st, body, 0, &in, &password, resp, &answered);
	if (answered)
		goto out;
	/* The user themself changing the password or the email (what a login
	 * needs) proves they know the current password: a token alone (stolen,
	 * or left signed in) must not take the account over. An admin need not.
	 * A current_password that is given is checked all the same, whoever
	 * sends it and whatever the change: ignored, a wrong one would look
	 * accepted. */
	rc = check_current(st, req, resp, body, id, &in, password != NULL,
	                   (password || in.email[0]) && !evh_req_auth_has_role(req, USER_ROLE_ADMIN),
	                   verified, &answered);
	if (answered)
		goto out;
	if (password && (rc = user_password_hash(st, password, in.password_hash)) != EVH_OK) {
		rc = user_hash_failure(st, resp, rc);
		goto out;
	}
	/* A hash other than the one current_password was found to match may
	 * hold the same password (another login stored it at the current cost
	 * meanwhile): checked against that, the change goes on; twice at most
	 * (each such store is an upgrade, and there is one cost). */
	/* An email let through for being the user's own (check_current), with
	 * nothing proven. */
	email_as_read = in.email[0] && !verified[0] && !evh_req_auth_has_role(req, USER_ROLE_ADMIN);
	for (int again = 2;; again--) {
		int stale = 0, same = 0;
		const char *current = NULL;
		rc = update_tx(st, resp, id, &in, password != NULL, email_as_read, verified,
		               again ? &stale : NULL, &u);
		if (!stale)
			break;
		body_string(body, "current_password", &current); /* there: verified was set */
		if ((rc = user_password_still(st, verified, current, &same)) != EVH_OK) {
			rc = user_hash_failure(st, resp, rc);
			break;
		}
		if (!same) {
			rc = reply_password_changed(resp);
			break;
		}
	}
out:
	sodium_memzero(verified, sizeof verified);
	sodium_memzero(in.password_hash, sizeof in.password_hash);
	sodium_memzero(u.password_hash, sizeof u.password_hash);
	cJSON_Delete(body);
	return rc;
}

static int delete_user(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	const char *id = evh_req_param(req, "id");
	/* It stores nothing: only its event can be too large. */
	reply_change ch = {.event = "the event announcing the deletion"};
	cJSON *data;
	evh_tx *tx;
	int rc, answered;

	if (!user_may_modify(req, id))
		return reply_forbidden(resp);
	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "delete user: begin");
	rc = user_db_delete(tx, id);
	if (rc == EVH_ENOTFOUND) {
		evh_tx_rollback(tx);
		return reply_not_found(resp, "no user has this id");
	}
	if (rc == EVH_OK) {
		data = cJSON_CreateObject();
		if (data && !cJSON_AddStringToObject(data, "id", id)) {
			cJSON_Delete(data);
			data = NULL;
		}
		ch.step = REPLY_STEP_PUBLISH;
		rc = publish(st, tx, st->topic_deleted, USER_TYPE_DELETED, id, data, &ch.event_bytes);
	}
	if (rc != EVH_OK)
		return reply_tx_change_failure(st->p, resp, tx, &ch, rc, "delete user");
	/* A deleted user's tokens must not go on working on other services. */
	rc = user_sign_out(st, resp, tx, id, &answered);
	if (answered)
		return rc;
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return reply_tx_failure(st->p, resp, NULL, rc, "delete user: commit");
	user_sign_out_after(st, id);
	evh_resp_status(resp, 204);
	return EVH_OK;
}

/* The routes, for the registration and the declaration (routes.h). */
#define USER_ROUTES(X)                                                                     \
	X("POST", "/users", create_user, EVH_ROUTE_JSON, NULL)                                 \
	X("GET", "/users", list_users, read, st->read_role)                                    \
	X("GET", "/users/{id}", get_user, read, st->read_role)                                 \
	X("PATCH", "/users/{id}", patch_user, EVH_ROUTE_JSON | EVH_ROUTE_AUTH, NULL)           \
	X("DELETE", "/users/{id}", delete_user, EVH_ROUTE_AUTH, NULL)                          \
	X("POST", "/auth/login", user_login, EVH_ROUTE_JSON, NULL)                             \
	X("POST", "/auth/logout", user_logout, EVH_ROUTE_AUTH, NULL)

const char *const user_routes_declared[] = {USER_ROUTES(ROUTES_DECLARED) NULL};

int user_routes_register(user_state *st)
{
	const uint32_t read = st->read_role ? EVH_ROUTE_AUTH : 0;
	const routes_entry routes[] = {USER_ROUTES(ROUTES_ENTRY)};
	return routes_register(st->p, routes, sizeof routes / sizeof routes[0], st);
}
