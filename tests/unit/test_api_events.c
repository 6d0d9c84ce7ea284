/* The event calls of the API table handed to plugins, given NULL where the
 * host would give an event (or a plugin): a plugin's bug, such as an event
 * pointer kept past its handler and cleared, or a helper called without
 * one. Each answers as for nothing there (NULL, -1, 0, a length of 0,
 * EVH_EINVAL) and touches no memory, called through the table and through
 * the SDK's wrappers as a plugin calls them; without the NULL tests in
 * kafka.c's accessors each would read through a NULL pointer. And the SDK's
 * evh_tx_begin_read on a host older than it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <evhost/evhost.h>

#include "host.h"

const evh_api *evh__api;

/* What a length out-parameter holds before the call: the call must set it. */
#define UNSET ((size_t)12345)

static void test_table_with_null_event(void **st)
{
	const evh_api *api = host_api();
	size_t len;
	(void)st;

	assert_null(api->ev_id(NULL));
	assert_null(api->ev_type(NULL));
	assert_null(api->ev_source(NULL));
	assert_null(api->ev_time(NULL));
	assert_null(api->ev_topic(NULL));
	assert_int_equal(api->ev_partition(NULL), -1);
	assert_int_equal(api->ev_offset(NULL), -1);
	assert_int_equal(api->ev_attempt(NULL), 0);
	len = UNSET;
	assert_null(api->ev_key(NULL, &len));
	assert_int_equal(len, 0);
	assert_null(api->ev_key(NULL, NULL));
	len = UNSET;
	assert_null(api->ev_data(NULL, &len));
	assert_int_equal(len, 0);
	assert_null(api->ev_data(NULL, NULL));
	assert_null(api->ev_header(NULL, "traceparent"));
	assert_null(api->ev_header(NULL, NULL));
	api->ev_set_error(NULL, "why");
	api->ev_set_error(NULL, NULL);
	/* and the plugin-side calls of events, without a plugin */
	assert_int_equal(api->subscribe(NULL, NULL), EVH_EINVAL);
	assert_int_equal(api->publish(NULL, NULL, "t", "k", "x.created", "{}", 2), EVH_EINVAL);
	assert_int_equal(api->publish_max_bytes(NULL), 0);
}

/* The same through the SDK's static inline wrappers, with the host's table
 * where the plugin's entry would have stored it. */
static void test_sdk_with_null_event(void **st)
{
	size_t len;
	(void)st;

	evh__api = host_api();
	assert_null(evh_event_id(NULL));
	assert_null(evh_event_type(NULL));
	assert_null(evh_event_source(NULL));
	assert_null(evh_event_time(NULL));
	assert_null(evh_event_topic(NULL));
	assert_int_equal(evh_event_partition(NULL), -1);
	assert_int_equal(evh_event_offset(NULL), -1);
	assert_int_equal(evh_event_attempt(NULL), 0);
	len = UNSET;
	assert_null(evh_event_key(NULL, &len));
	assert_int_equal(len, 0);
	len = UNSET;
	assert_null(evh_event_data(NULL, &len));
	assert_int_equal(len, 0);
	assert_null(evh_event_header(NULL, "ce_id"));
	evh_event_set_error(NULL, "why");
	assert_int_equal(evh_publish_max_bytes(NULL), 0);
	evh__api = NULL;
}

/* evh_tx_begin_read (ABI 1.15) through the SDK: the host's own call on a
 * host that has it; on an older host (a 1.14 table ends before it), the
 * evh_tx_begin that was there, never a read past the table's end. */
static int begins_seen;
static int begin_counted(evh_plugin *p, evh_tx **tx)
{
	(void)p;
	*tx = NULL;
	begins_seen++;
	return EVH_EBUSY;
}

static void test_sdk_read_transaction_on_an_older_host(void **st)
{
	evh_api old = *host_api();
	evh_tx *tx = (evh_tx *)&old;
	(void)st;

	evh__api = host_api();
	assert_true(EVH_API_HAS(tx_begin_read));
	assert_int_equal(evh_tx_begin_read(NULL, &tx), EVH_EINVAL); /* no plugin: the host's */
	old.tx_begin = begin_counted;
	old.struct_size = (uint32_t)offsetof(evh_api, tx_begin_read);
	evh__api = &old;
	assert_false(EVH_API_HAS(tx_begin_read));
	assert_int_equal(evh_tx_begin_read(NULL, &tx), EVH_EBUSY);
	assert_int_equal(begins_seen, 1);
	assert_null(tx);
	evh__api = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table_with_null_event),
	    cmocka_unit_test(test_sdk_with_null_event),
	    cmocka_unit_test(test_sdk_read_transaction_on_an_older_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
