/* The event calls of the API table handed to plugins, given NULL where the
 * host would give an event (or a plugin): a plugin's bug, such as an event
 * pointer kept past its handler and cleared, or a helper called without
 * one. Each answers as for nothing there (NULL, -1, 0, a length of 0,
 * EVH_EINVAL) and touches no memory, called through the table and through
 * the SDK's wrappers as a plugin calls them; without the NULL tests in
 * kafka.c's accessors each would read through a NULL pointer. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table_with_null_event),
	    cmocka_unit_test(test_sdk_with_null_event),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
