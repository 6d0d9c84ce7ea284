/* orders: a small order service, written from docs/sdk.md and the SDK header only.
 *
 * POST /orders             (local token)  {"item":"book","quantity":2} -> 201 {"id":...}
 *                                          stored and ORDER_PLACED published in one transaction
 * GET  /orders/{id}        (local token)  the order, to its owner; any token with admin_role
 * GET  /orders             (admin_role)   every order
 * GET  /orders-feed        (local token)  Server-Sent Events: the caller's orders as they change
 * An order's owner is the token's subject, which is unique only within its
 * issuer: the routes that go by it take only tokens this host signed
 * (evh_req_auth_local). An identity provider's user whose `sub` equals one
 * of our users' ids would otherwise read, and be told of, that user's orders.
 * consumes `payments_topic`: {"order_id":"...","result":R} where R is
 *   "paid"      -> the order is paid, ORDER_PAID published (OK)
 *   "flaky"     -> RETRY on the first attempt, then as "paid"
 *   "partial"   -> first attempt records a step and answers KEEP_AND_RETRY; the next one
 *                  sees the step and finishes (OK)
 *   "give-up"   -> records a step and answers KEEP_AND_DEAD_LETTER
 *   anything else, or data that is not such an object -> REJECT (dead-lettered)
 * An event id already handled is not handed to us again (the host's inbox).
 *
 * Build outside the evhost tree with only the installed SDK:
 *   cc -shared -fPIC -Wl,--no-undefined orders.c $(pkg-config --cflags evhost-sdk libcjson) \
 *      $(pkg-config --libs libcjson) -o orders.so
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <evhost/evhost.h>

static const evh_config_key orders_config[] = {
    {"topic", EVH_CFG_STRING, "orders", 0, "topic order events are published to"},
    {"payments_topic", EVH_CFG_STRING, "payments", 0, "topic payment results are read from"},
    {"max_quantity", EVH_CFG_INT, "100", 0, "largest quantity one order may ask for"},
    {"admin_role", EVH_CFG_STRING, "orders-admin", 0, "role that may list every order"},
    {"retry.max_attempts", EVH_CFG_INT, "3", 0, "attempts per payment event"},
    {"retry.backoff_ms", EVH_CFG_INT, "100", 0, "first retry's delay"},
    {NULL, 0, NULL, 0, NULL},
};

static const evh_migration orders_migrations[] = {
    {1, "CREATE TABLE orders(id TEXT PRIMARY KEY, owner TEXT NOT NULL, item TEXT NOT NULL,"
        " quantity INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'new');"
        "CREATE TABLE payment_steps(order_id TEXT NOT NULL, step TEXT NOT NULL,"
        " attempt INTEGER NOT NULL, PRIMARY KEY(order_id, step));"},
};

typedef struct orders_settings {
	const char *topic;
	const char *payments_topic;
	const char *admin_role;
	int64_t max_quantity;
	int64_t max_attempts;
	int64_t backoff_ms;
} orders_settings;

typedef struct orders {
	evh_plugin *p;
	orders_settings s;
	evh_metric *placed;   /* NULL when refused: the update calls then do nothing */
	evh_metric *payments; /* by result */
	evh_metric *handling; /* histogram, seconds */
} orders;

static int topic_name_ok(const char *t)
{
	size_t n = t ? strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
	             : 0;

	return n > 0 && n <= 249 && t[n] == '\0' && strcmp(t, ".") && strcmp(t, "..");
}

/* Pure: reads the values, says what is wrong at each key, keeps nothing. */
static int orders_values(evh_plugin *p, orders_settings *s)
{
	int rc = EVH_OK;

	s->topic = evh_config_str(p, "topic");
	s->payments_topic = evh_config_str(p, "payments_topic");
	s->admin_role = evh_config_str(p, "admin_role");
	s->max_quantity = evh_config_int(p, "max_quantity", 100);
	s->max_attempts = evh_config_int(p, "retry.max_attempts", 3);
	s->backoff_ms = evh_config_int(p, "retry.backoff_ms", 100);
	if (!topic_name_ok(s->topic)) {
		evh_config_error(p, "topic", "'%s' is not a Kafka topic name", s->topic ? s->topic : "");
		rc = EVH_EINVAL;
	}
	if (!topic_name_ok(s->payments_topic)) {
		evh_config_error(p, "payments_topic", "'%s' is not a Kafka topic name",
		                 s->payments_topic ? s->payments_topic : "");
		rc = EVH_EINVAL;
	}
	/* A role rides in a token: at most 31 bytes (evh_auth_sign's limit). */
	if (!s->admin_role || !*s->admin_role || strlen(s->admin_role) > 31) {
		evh_config_error(p, "admin_role", "must be 1 to 31 bytes");
		rc = EVH_EINVAL;
	}
	if (s->max_quantity < 1 || s->max_quantity > 1000000) {
		evh_config_error(p, "max_quantity", "must be between 1 and 1000000 (got %" PRId64 ")",
		                 s->max_quantity);
		rc = EVH_EINVAL;
	}
	if (s->max_attempts < 1 || s->max_attempts > EVH_RETRY_ATTEMPTS_MAX) {
		evh_config_error(p, "retry.max_attempts", "must be between 1 and %d (got %" PRId64 ")",
		                 EVH_RETRY_ATTEMPTS_MAX, s->max_attempts);
		rc = EVH_EINVAL;
	}
	if (s->backoff_ms < 1 || s->backoff_ms > EVH_RETRY_BACKOFF_MS_MAX) {
		evh_config_error(p, "retry.backoff_ms", "must be between 1 and %d (got %" PRId64 ")",
		                 EVH_RETRY_BACKOFF_MS_MAX, s->backoff_ms);
		rc = EVH_EINVAL;
	}
	return rc;
}

static int orders_check(evh_plugin *p)
{
	orders_settings scratch;

	return orders_values(p, &scratch);
}

/* cJSON answers NULL both for bad text and for want of memory; the host has
 * checked the body of an EVH_ROUTE_JSON route, so NULL here is the latter. */
static int unavailable(evh_response *resp)
{
	evh_resp_header(resp, "Retry-After", "1");
	return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
	                        "out of memory; nothing was done", NULL);
}

/* The owner-scoped routes' refusal of another issuer's token (see the top):
 * the SDK tells whether a token is this host's, not whose it is, so an
 * owner cannot be stored with its issuer. */
static int foreign_token(evh_response *resp)
{
	return evh_resp_problem(resp, 403, "forbidden", "Forbidden",
	                        "a token of this host is needed", NULL);
}

static int new_order_id(char out[17])
{
	unsigned char raw[8];

	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		return -1;
	for (size_t i = 0; i < sizeof raw; i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

static int place_order(evh_request *req, evh_response *resp, void *ud)
{
	orders *o = ud;
	const char *subject = evh_req_auth_subject(req);
	size_t len = 0;
	const char *body = evh_req_body(req, &len);
	cJSON *doc, *item, *qty, *event = NULL, *answer = NULL;
	char *event_json = NULL, *answer_json = NULL;
	char id[17];
	evh_tx *tx = NULL;
	int rc;

	if (!evh_req_auth_local(req))
		return foreign_token(resp);
	if (!(doc = cJSON_ParseWithLength(body, len)))
		return unavailable(resp);
	item = cJSON_GetObjectItemCaseSensitive(doc, "item");
	qty = cJSON_GetObjectItemCaseSensitive(doc, "quantity");
	if (!cJSON_IsString(item) || !*item->valuestring || strlen(item->valuestring) > 64) {
		rc = evh_resp_problem(resp, 422, "validation", "Invalid order",
		                      "item must be a string of 1 to 64 bytes", "item");
		goto out;
	}
	if (!cJSON_IsNumber(qty) || qty->valuedouble != (double)(int64_t)qty->valuedouble ||
	    qty->valuedouble < 1 || qty->valuedouble > (double)o->s.max_quantity) {
		char detail[96];
		snprintf(detail, sizeof detail, "quantity must be a whole number from 1 to %" PRId64,
		         o->s.max_quantity);
		rc = evh_resp_problem(resp, 422, "validation", "Invalid order", detail, "quantity");
		goto out;
	}
	if (new_order_id(id) != 0) {
		rc = EVH_ERR;
		goto out;
	}
	/* Everything that can fail for want of memory before the transaction. */
	event = cJSON_CreateObject();
	answer = cJSON_CreateObject();
	if (!event || !answer || !cJSON_AddStringToObject(event, "id", id) ||
	    !cJSON_AddStringToObject(event, "owner", subject) ||
	    !cJSON_AddStringToObject(event, "item", item->valuestring) ||
	    !cJSON_AddNumberToObject(event, "quantity", qty->valuedouble) ||
	    !cJSON_AddStringToObject(answer, "id", id) ||
	    !cJSON_AddStringToObject(answer, "status", "new") ||
	    !(event_json = cJSON_PrintUnformatted(event)) ||
	    !(answer_json = cJSON_PrintUnformatted(answer))) {
		rc = unavailable(resp);
		goto out;
	}

	if ((rc = evh_tx_begin(o->p, &tx)) != EVH_OK)
		goto out; /* EVH_EBUSY: the host answers 503 with Retry-After */
	evh_value args[] = {EVH_TEXT(id), EVH_TEXT(subject), EVH_TEXT(item->valuestring),
	                    EVH_INT(qty->valuedouble)};
	rc = evh_exec(tx, "INSERT INTO orders(id, owner, item, quantity) VALUES(?, ?, ?, ?)", args,
	              4, NULL);
	if (rc == EVH_OK)
		rc = evh_publish(o->p, tx, o->s.topic, id, "ORDER_PLACED", event_json,
		                 strlen(event_json));
	if (rc != EVH_OK) {
		evh_tx_rollback(tx);
		goto out; /* EVH_EFULL, EVH_ETOOBIG, EVH_EBUSY: the host answers them */
	}
	/* The answer's text was built before the transaction (out of memory there,
	 * nothing is stored); it is set only once the commit said EVH_OK: a body set
	 * before is an answer, and the host would send that 201 even if the commit
	 * then failed. A status alone is not: a failed commit is answered 500. */
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		goto out;
	/* Out of memory here the host answers 500 saying the order was stored. */
	char location[32];
	snprintf(location, sizeof location, "/orders/%s", id);
	evh_resp_header(resp, "Location", location); /* a copy it lost: treated as a lost body */
	rc = evh_resp_json(resp, 201, answer_json, strlen(answer_json));
	evh_metric_add(o->placed, item->valuestring[0] == '#' ? "special" : "normal", 1);
	/* On disk now: the owner's streams may hear of it. */
	evh_stream_publish(o->p, subject, "order", answer_json);
	evh_log(o->p, EVH_LOG_INFO, "order %s placed", id);
out:
	cJSON_Delete(doc);
	cJSON_Delete(event);
	cJSON_Delete(answer);
	cJSON_free(event_json);
	cJSON_free(answer_json);
	return rc;
}

static int get_order(evh_request *req, evh_response *resp, void *ud)
{
	orders *o = ud;
	const char *id = evh_req_param(req, "id");
	const char *subject = evh_req_auth_subject(req);
	int admin = evh_req_auth_has_role(req, o->s.admin_role);
	evh_tx *tx;
	char *json = NULL;
	size_t len = 0;
	int rc;

	/* A role counts from any issuer the admin configured (GET /orders goes by
	 * it alone); a subject names one of our owners only in a token of ours. */
	if (!admin && !evh_req_auth_local(req))
		return foreign_token(resp);
	if ((rc = evh_tx_begin(o->p, &tx)) != EVH_OK)
		return rc;
	evh_value args[] = {EVH_TEXT(id), EVH_TEXT(subject), EVH_INT(admin)};
	rc = evh_query_json(tx,
	                    "SELECT id, owner, item, quantity, status FROM orders"
	                    " WHERE id = ? AND (owner = ? OR ?)",
	                    args, 3, &json, &len);
	evh_tx_rollback(tx);
	if (rc != EVH_OK)
		return rc;
	if (len <= 2) /* "[]" */
		rc = evh_resp_problem(resp, 404, "not-found", "Not Found", "no such order", NULL);
	else /* one row: strip the array's brackets */
		rc = evh_resp_json(resp, 200, json + 1, len - 2);
	evh_free(json);
	return rc;
}

static int list_orders(evh_request *req, evh_response *resp, void *ud)
{
	orders *o = ud;
	evh_tx *tx;
	char *json = NULL;
	size_t len = 0;
	int rc;

	(void)req;
	if ((rc = evh_tx_begin(o->p, &tx)) != EVH_OK)
		return rc;
	rc = evh_query_json(tx, "SELECT id, owner, item, quantity, status FROM orders ORDER BY id",
	                    NULL, 0, &json, &len);
	evh_tx_rollback(tx);
	if (rc != EVH_OK)
		return rc;
	rc = evh_resp_json(resp, 200, json, len);
	evh_free(json);
	return rc;
}

static int orders_feed(evh_request *req, evh_response *resp, void *ud)
{
	(void)ud;
	/* The channel is the caller's subject: only a token of this host names our users. */
	if (!evh_req_auth_local(req))
		return foreign_token(resp);
	int rc = evh_resp_stream(resp, evh_req_auth_subject(req));
	/* EVH_EBUSY, EVH_ESTATE: the host has answered 503 + Retry-After already. */
	return rc == EVH_EBUSY || rc == EVH_ESTATE ? EVH_OK : rc;
}

/* Records that `step` of `order_id` was done; 1 when it was done before. */
static int step_once(evh_tx *tx, const char *order_id, const char *step, int attempt, int *before)
{
	int64_t changes = 0;
	evh_value args[] = {EVH_TEXT(order_id), EVH_TEXT(step), EVH_INT(attempt)};
	int rc = evh_exec(tx,
	                  "INSERT INTO payment_steps(order_id, step, attempt) VALUES(?, ?, ?)"
	                  " ON CONFLICT DO NOTHING",
	                  args, 3, &changes);
	*before = changes == 0;
	return rc;
}

static evh_event_result mark_paid(orders *o, const evh_event *ev, evh_tx *tx,
                                  const char *order_id)
{
	evh_rows *rows = NULL;
	char owner[128] = "";
	int64_t changes = 0;
	evh_value args[] = {EVH_TEXT(order_id)};
	int rc = evh_exec(tx, "UPDATE orders SET status = 'paid' WHERE id = ?", args, 1, &changes);

	if (rc != EVH_OK)
		return EVH_EVENT_RETRY;
	if (changes == 0) {
		evh_event_set_error(ev, "payment for an order this service does not have");
		return EVH_EVENT_REJECT;
	}
	if (evh_query(tx, "SELECT owner FROM orders WHERE id = ?", args, 1, &rows) == EVH_OK &&
	    evh_rows_next(rows) == 1) {
		const char *t = evh_rows_text(rows, 0, NULL);
		snprintf(owner, sizeof owner, "%s", t ? t : "");
	}
	evh_rows_close(rows);
	char json[128];
	snprintf(json, sizeof json, "{\"id\":\"%s\",\"status\":\"paid\"}", order_id);
	if (evh_publish(o->p, tx, o->s.topic, order_id, "ORDER_PAID", json, strlen(json)) !=
	    EVH_OK)
		return EVH_EVENT_RETRY;
	/* Not committed yet: the consumer's group commit comes after we return. */
	if (*owner)
		evh_stream_publish(o->p, owner, "order", json);
	return EVH_EVENT_OK;
}

static evh_event_result on_payment(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	orders *o = ud;
	size_t len = 0;
	const char *data = evh_event_data(ev, &len);
	int attempt = evh_event_attempt(ev);
	struct timespec t0, t1;
	evh_event_result res = EVH_EVENT_REJECT;
	const char *result_name = "rejected";
	cJSON *doc, *oid, *result;
	int before = 0;

	(void)p;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Not strict RFC 8259 (the SDK has no checker): we only take plain strings of
	 * hex ids and a known word, so what cJSON reads loosely cannot reach storage. */
	doc = cJSON_ParseWithLength(data, len);
	oid = doc ? cJSON_GetObjectItemCaseSensitive(doc, "order_id") : NULL;
	result = doc ? cJSON_GetObjectItemCaseSensitive(doc, "result") : NULL;
	if (!cJSON_IsString(oid) || strlen(oid->valuestring) != 16 ||
	    strspn(oid->valuestring, "0123456789abcdef") != 16 || !cJSON_IsString(result)) {
		evh_event_set_error(ev, "not a payment result (order_id, result)");
		goto out;
	}
	if (!strcmp(result->valuestring, "paid")) {
		res = mark_paid(o, ev, tx, oid->valuestring);
		result_name = "paid";
	} else if (!strcmp(result->valuestring, "flaky")) {
		if (attempt == 1) {
			evh_event_set_error(ev, "payment gateway busy");
			res = EVH_EVENT_RETRY;
			result_name = "retried";
		} else {
			res = mark_paid(o, ev, tx, oid->valuestring);
			result_name = "paid";
		}
	} else if (!strcmp(result->valuestring, "partial")) {
		if (step_once(tx, oid->valuestring, "receipt", attempt, &before) != EVH_OK) {
			res = EVH_EVENT_RETRY;
		} else if (!before) {
			evh_event_set_error(ev, "receipt sent, ledger not yet");
			res = EVH_EVENT_KEEP_AND_RETRY;
			result_name = "kept";
		} else {
			res = mark_paid(o, ev, tx, oid->valuestring);
			result_name = "paid";
		}
	} else if (!strcmp(result->valuestring, "give-up")) {
		if (step_once(tx, oid->valuestring, "refund-requested", attempt, &before) != EVH_OK) {
			res = EVH_EVENT_RETRY;
		} else {
			evh_event_set_error(ev, "refund requested, ledger unreachable");
			res = EVH_EVENT_KEEP_AND_DEAD_LETTER;
			result_name = "dead-lettered";
		}
	} else {
		evh_event_set_error(ev, "unknown payment result");
	}
out:
	cJSON_Delete(doc);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	evh_metric_add(o->payments, result_name, 1);
	evh_metric_observe(o->handling, NULL,
	                   (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return res;
}

static int orders_init(evh_plugin *p, void **state)
{
	orders *o = calloc(1, sizeof *o);
	int rc;

	*state = o;
	if (!o)
		return EVH_ENOMEM;
	o->p = p;
	if ((rc = orders_values(p, &o->s)) != EVH_OK)
		return rc;
	if ((rc = evh_migrate(p, orders_migrations,
	                      sizeof orders_migrations / sizeof orders_migrations[0])) != EVH_OK) {
		evh_log(p, EVH_LOG_ERROR, "migrations failed: %s", evh_strerror(rc));
		return rc;
	}
	o->placed = evh_metric_new(p, EVH_METRIC_COUNTER, "orders_placed_total",
	                           "Orders placed, by kind.", "kind");
	o->payments = evh_metric_new(p, EVH_METRIC_COUNTER, "orders_payment_events_total",
	                             "Payment events handled, by outcome.", "result");
	o->handling = evh_metric_new(p, EVH_METRIC_HISTOGRAM, "orders_payment_handling_seconds",
	                             "Time to handle one payment event, in seconds.", NULL);

	const evh_route routes[] = {
	    {.struct_size = sizeof(evh_route), .method = "POST", .pattern = "/orders",
	     .handler = place_order, .ud = o, .flags = EVH_ROUTE_JSON | EVH_ROUTE_AUTH},
	    {.struct_size = sizeof(evh_route), .method = "GET", .pattern = "/orders/{id}",
	     .handler = get_order, .ud = o, .flags = EVH_ROUTE_AUTH},
	    {.struct_size = sizeof(evh_route), .method = "GET", .pattern = "/orders",
	     .handler = list_orders, .ud = o, .flags = EVH_ROUTE_AUTH, .role = o->s.admin_role},
	    {.struct_size = sizeof(evh_route), .method = "GET", .pattern = "/orders-feed",
	     .handler = orders_feed, .ud = o, .flags = EVH_ROUTE_AUTH},
	};
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if ((rc = evh_http_route_ex(p, &routes[i])) != EVH_OK) {
			evh_log(p, EVH_LOG_ERROR, "route %s %s: %s", routes[i].method, routes[i].pattern,
			        evh_strerror(rc));
			return rc;
		}

	evh_subscription sub = {.struct_size = sizeof sub, .topic = o->s.payments_topic,
	                        .type = NULL, .handler = on_payment, .ud = o,
	                        .max_attempts = (int)o->s.max_attempts,
	                        .backoff_ms = (int)o->s.backoff_ms,
	                        .backoff_max_ms = (int)o->s.backoff_ms * 10};
	if ((rc = evh_subscribe(p, &sub)) != EVH_OK) {
		evh_log(p, EVH_LOG_ERROR, "subscribe to %s: %s", o->s.payments_topic, evh_strerror(rc));
		return rc;
	}
	evh_log(p, EVH_LOG_INFO, "orders ready: publishing to %s, reading %s", o->s.topic,
	        o->s.payments_topic);
	return EVH_OK;
}

static void orders_fini(evh_plugin *p, void *state)
{
	(void)p;
	free(state);
}

/* The routes orders_init registers (ABI 1.12): the host checks them against
 * every other enabled plugin's before any init, and at --check-config, and
 * refuses a registration of one not listed here. */
static const char *const orders_routes[] = {
    "POST /orders", "GET /orders/{id}", "GET /orders", "GET /orders-feed", NULL,
};

EVH_PLUGIN_ROUTES("orders", "0.1.0", "Orders, payments and their events", orders_config,
                  orders_check, orders_routes, orders_init, orders_fini)
