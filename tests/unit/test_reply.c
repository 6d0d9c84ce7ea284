/* The answers user.so and crud.so share (plugins/common/reply.c) to a call
 * that failed, against a fake host: a change refused as too big is a 413
 * that names what was too large (the stored value, the event, or the event
 * the storage could not keep), with the sizes and the limit known; a read
 * refused as too big is not a 413 (left to the host); a full outbox is a 503. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/common/jsonin.c"
#include "../../plugins/common/paging.c"
#include "../../plugins/common/reply.c"
#include "../../plugins/common/routes.c"

const evh_api *evh__api;

/* What the fake host was asked: the answer made, the last line logged, the
 * transaction rolled back. */
static struct {
	int status;
	char type[64], detail[512], retry_after[16];
	int has_field;
	evh_log_level level;
	char line[1024];
	int rolled_back;
	size_t max;        /* evh_publish_max_bytes */
	size_t stored_max; /* evh_store_max_bytes */
} host;

static int fake_problem(evh_response *resp, int status, const char *type, const char *title,
                        const char *detail, const char *field)
{
	(void)resp;
	(void)title;
	host.status = status;
	snprintf(host.type, sizeof host.type, "%s", type);
	snprintf(host.detail, sizeof host.detail, "%s", detail ? detail : "");
	host.has_field = field != NULL;
	return EVH_OK;
}

static int fake_header(evh_response *resp, const char *name, const char *value)
{
	(void)resp;
	if (!strcmp(name, "Retry-After"))
		snprintf(host.retry_after, sizeof host.retry_after, "%s", value);
	return EVH_OK;
}

static void fake_log(evh_plugin *p, evh_log_level level, const char *msg)
{
	(void)p;
	host.level = level;
	snprintf(host.line, sizeof host.line, "%s", msg);
}

static const char *fake_strerror(int status)
{
	return status == EVH_ETOOBIG ? "too big" : "other";
}

static const char *fake_tx_error(evh_tx *tx)
{
	(void)tx;
	return "string or blob too big";
}

static void fake_rollback(evh_tx *tx)
{
	(void)tx;
	host.rolled_back = 1;
}

static size_t fake_max(evh_plugin *p)
{
	(void)p;
	return host.max;
}

static size_t fake_stored_max(evh_plugin *p)
{
	(void)p;
	return host.stored_max;
}

/* The host's refusal of a route: said (the last line, the one init's
 * refusal quotes), then EVH_EINVAL. */
static int fake_route(evh_plugin *p, const evh_route *r)
{
	char line[256];
	snprintf(line, sizeof line, "route %s %s already registered by plugin 'orders'", r->method,
	         r->pattern);
	fake_log(p, EVH_LOG_ERROR, line);
	return EVH_EINVAL;
}

/* A host of ABI 1.9 with the calls reply.c makes. */
static const evh_api host_api = {
    .struct_size = (uint32_t)sizeof(evh_api),
    .strerror = fake_strerror,
    .log = fake_log,
    .resp_header = fake_header,
    .resp_problem = fake_problem,
    .tx_rollback = fake_rollback,
    .tx_error = fake_tx_error,
    .publish_max_bytes = fake_max,
    .store_max_bytes = fake_stored_max,
    .http_route = fake_route,
};
static evh_api api; /* host_api, which a test may make older */
static int plugin;  /* only its address matters */
#define P ((evh_plugin *)&plugin)
#define TX ((evh_tx *)&plugin)

/* Events may be 1024 bytes of key and data (message.max.bytes at its least). */
static int setup(void **state)
{
	(void)state;
	memset(&host, 0, sizeof host);
	host.max = 1024;
	api = host_api;
	evh__api = &api;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	evh__api = NULL;
	return 0;
}

/* Change `ch`, refused as too big, is answered 413 with `detail`. */
static void assert_413(const reply_change *ch, const char *detail)
{
	host.status = 0;
	assert_int_equal(reply_change_failure(P, NULL, ch, EVH_ETOOBIG), EVH_OK);
	assert_int_equal(host.status, 413);
	assert_string_equal(host.type, "payload-too-large");
	assert_false(host.has_field);
	assert_string_equal(host.detail, detail);
}

static void test_a_stored_value_too_large_is_named_with_its_size(void **state)
{
	reply_change ch = {.step = REPLY_STEP_STORE, .stored = "the document",
	                   .stored_bytes = 100055, .event = "the event announcing the new document",
	                   .event_bytes = 0};
	(void)state;
	assert_413(&ch, "the document is 100055 bytes as it would be stored, more than the "
	                "storage of this service takes");
	/* the event's limit is not the storage's: not said */
	assert_null(strstr(host.detail, "1024"));
	ch.stored_bytes = 0;
	assert_413(&ch, "the document is larger than the storage of this service takes");
	/* a host that tells the storage's limit (ABI 1.9): said */
	host.stored_max = 65536;
	assert_413(&ch, "the document is larger than the storage of this service takes (65536 "
	                "bytes a value or row)");
	ch.stored_bytes = 100055;
	assert_413(&ch, "the document is 100055 bytes as it would be stored, more than the "
	                "storage of this service takes (65536 bytes a value or row)");
}

static void test_an_event_larger_than_a_kafka_message_is_named_with_the_limit(void **state)
{
	reply_change ch = {.step = REPLY_STEP_PUBLISH, .stored = "the user", .stored_bytes = 1235,
	                   .event = "the event announcing the new user", .event_bytes = 1191};
	(void)state;
	assert_413(&ch, "the event announcing the new user is 1191 bytes (its key and data); an "
	                "event may be at most 1024 bytes, since it must fit one Kafka message");
	ch.event_bytes = 0;
	assert_413(&ch, "the event announcing the new user is larger than an event may be: at "
	                "most 1024 bytes (its key and data), since it must fit one Kafka message");
}

static void test_an_event_within_the_limit_was_refused_by_the_storage(void **state)
{
	/* Its row in the log, where it waits to be sent, past SQLite's limit. */
	reply_change ch = {.step = REPLY_STEP_PUBLISH, .stored = "the document",
	                   .stored_bytes = 65416, .event = "the event announcing the new document",
	                   .event_bytes = 65452};
	(void)state;
	host.max = 998976;
	assert_413(&ch, "the event announcing the new document is 65452 bytes (its key and data),"
	                " more than the storage of this service takes to keep it until it is sent");
	host.stored_max = 65536;
	assert_413(&ch, "the event announcing the new document is 65452 bytes (its key and data),"
	                " more than the storage of this service takes to keep it until it is sent"
	                " (65536 bytes a row)");
}

static void test_an_event_on_a_host_that_tells_no_limit(void **state)
{
	reply_change ch = {.step = REPLY_STEP_PUBLISH, .event = "the event announcing the deletion",
	                   .event_bytes = 81};
	(void)state;
	/* a 1.7 host: its table ends before publish_max_bytes */
	api.struct_size = (uint32_t)offsetof(evh_api, publish_max_bytes);
	assert_413(&ch, "the event announcing the deletion is 81 bytes (its key and data), more "
	                "than this service takes for one event");
	ch.event_bytes = 0;
	assert_413(&ch, "the event announcing the deletion is larger than this service takes for "
	                "one event");
	/* without a plugin (no host to ask) alike */
	host.status = 0;
	assert_int_equal(reply_change_failure(NULL, NULL, &ch, EVH_ETOOBIG), EVH_OK);
	assert_int_equal(host.status, 413);
}

static void test_too_big_outside_a_changes_store_or_publish_is_not_a_413(void **state)
{
	/* begin, a read, commit, a delete's statement: a value the storage
	 * cannot read (its limit lowered since), the service's failure. No
	 * answer here: the code goes back to the host, which noted the read
	 * and answers 500 with an ERROR line (test_store, test_crud.py). */
	reply_change ch = {.step = REPLY_STEP_OTHER, .stored = "the document",
	                   .event = "the event announcing the change"};
	(void)state;
	assert_int_equal(reply_change_failure(P, NULL, &ch, EVH_ETOOBIG), EVH_ETOOBIG);
	assert_int_equal(reply_failure(NULL, EVH_ETOOBIG), EVH_ETOOBIG);
	assert_int_equal(reply_tx_failure(P, NULL, TX, EVH_ETOOBIG, "get document"), EVH_ETOOBIG);
	assert_int_equal(host.status, 0);
	assert_true(host.rolled_back);
	assert_string_equal(host.line, "get document failed: too big: string or blob too big");
}

static void test_other_failures_of_a_change_are_answered_as_before(void **state)
{
	reply_change ch = {.step = REPLY_STEP_STORE, .stored = "the user", .stored_bytes = 300};
	(void)state;
	/* a full outbox: try later */
	assert_int_equal(reply_change_failure(P, NULL, &ch, EVH_EFULL), EVH_OK);
	assert_int_equal(host.status, 503);
	assert_string_equal(host.type, "unavailable");
	assert_string_equal(host.retry_after, REPLY_RETRY_AFTER);
	/* anything else is the host's to answer */
	host.status = 0;
	assert_int_equal(reply_change_failure(P, NULL, &ch, EVH_ESTORE), EVH_ESTORE);
	assert_int_equal(reply_change_failure(P, NULL, &ch, EVH_ENOMEM), EVH_ENOMEM);
	assert_int_equal(host.status, 0);
}

static void test_the_tx_form_logs_a_refusal_as_a_warning_and_rolls_back(void **state)
{
	reply_change ch = {.step = REPLY_STEP_STORE, .stored = "the user", .stored_bytes = 1235};
	(void)state;
	assert_int_equal(reply_tx_change_failure(P, NULL, TX, &ch, EVH_ETOOBIG, "update user"),
	                 EVH_OK);
	assert_int_equal(host.status, 413);
	assert_true(host.rolled_back);
	assert_int_equal(host.level, EVH_LOG_WARN);
	assert_string_equal(host.line, "update user failed: too big: string or blob too big");
}

/* A begin or a commit that failed leaves no transaction to ask its storage
 * message of: the line says where the host said it ("commit failed:
 * storage error" said nothing of why). */
static void test_a_storage_error_without_its_tx_points_to_the_hosts_lines(void **state)
{
	(void)state;
	assert_int_equal(reply_log_failure(P, NULL, EVH_ESTORE, "create user: commit"), EVH_ESTORE);
	assert_int_equal(host.level, EVH_LOG_ERROR);
	assert_string_equal(host.line, "create user: commit failed: other (the host's lines of this "
	                               "request or event say why)");
	/* with its transaction, the storage's own message */
	assert_int_equal(reply_log_failure(P, TX, EVH_EBUSY, "create user"), EVH_EBUSY);
	assert_string_equal(host.line, "create user failed: other: string or blob too big");
}

/* routes_register (routes.c) leaves a refused route's reason as the host
 * said it: it is the last line, the one a failed init's refusal quotes
 * ("cannot register POST /users: invalid argument" took its place). */
static void test_a_refused_route_keeps_the_hosts_reason(void **state)
{
	const routes_entry table[] = {{"POST", "/users", NULL, 0, NULL}};
	(void)state;
	assert_int_equal(routes_register(P, table, 1, NULL), EVH_EINVAL);
	assert_int_equal(host.level, EVH_LOG_ERROR);
	assert_string_equal(host.line, "route POST /users already registered by plugin 'orders'");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_a_refused_route_keeps_the_hosts_reason, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_stored_value_too_large_is_named_with_its_size,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_an_event_larger_than_a_kafka_message_is_named_with_the_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_an_event_within_the_limit_was_refused_by_the_storage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_an_event_on_a_host_that_tells_no_limit, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_too_big_outside_a_changes_store_or_publish_is_not_a_413, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_failures_of_a_change_are_answered_as_before,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_the_tx_form_logs_a_refusal_as_a_warning_and_rolls_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_a_storage_error_without_its_tx_points_to_the_hosts_lines, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
