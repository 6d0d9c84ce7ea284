/* router.c: matching, captures, precedence, 405 allow lists, duplicates,
 * pattern validation, percent-decoding and removal by owner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

static int owner_a, owner_b;
static int t_list, t_create, t_get, t_me, t_delete, t_root, t_posts, t_comment;

static int setup(void **state)
{
	router *r = router_new();
	char err[256];
	if (!r)
		return -1;
	if (router_add(r, "GET", "/users", &t_list, &owner_a, err, sizeof err) ||
	    router_add(r, "POST", "/users", &t_create, &owner_a, err, sizeof err) ||
	    router_add(r, "GET", "/users/{id}", &t_get, &owner_a, err, sizeof err) ||
	    router_add(r, "GET", "/users/me", &t_me, &owner_b, err, sizeof err) ||
	    router_add(r, "DELETE", "/users/{uid}", &t_delete, &owner_a, err, sizeof err) ||
	    router_add(r, "GET", "/", &t_root, &owner_b, err, sizeof err) ||
	    router_add(r, "GET", "/users/{id}/posts", &t_posts, &owner_b, err, sizeof err) ||
	    router_add(r, "PUT", "/c/{coll}/{id}/comments/{cid}", &t_comment, &owner_b, err,
	               sizeof err)) {
		fprintf(stderr, "setup: %s\n", err);
		router_free(r);
		return -1;
	}
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	router_free(*state);
	return 0;
}

static router_result match(router *r, const char *method, const char *path, void *expect)
{
	route_match m;
	char allow[64];
	router_result res = router_match(r, method, path, &m, allow, sizeof allow);
	if (res == ROUTER_FOUND)
		assert_ptr_equal(m.target, expect);
	route_match_free(&m);
	return res;
}

static void test_literal_match(void **state)
{
	router *r = *state;
	assert_int_equal(match(r, "GET", "/users", &t_list), ROUTER_FOUND);
	assert_int_equal(match(r, "POST", "/users", &t_create), ROUTER_FOUND);
	assert_int_equal(match(r, "GET", "/users/", &t_list), ROUTER_FOUND);
	assert_int_equal(match(r, "GET", "/", &t_root), ROUTER_FOUND);
	assert_int_equal(match(r, "GET", "/nope", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/1/posts/x", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "users", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "", NULL), ROUTER_NOT_FOUND);
	/* Only one trailing slash is tolerated; empty inner segments never match. */
	assert_int_equal(match(r, "GET", "/users//", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "//users", NULL), ROUTER_NOT_FOUND);
	/* Methods are exact and upper-case. */
	assert_int_equal(match(r, "get", "/users", NULL), ROUTER_METHOD_NOT_ALLOWED);
}

static void test_params(void **state)
{
	router *r = *state;
	route_match m;
	assert_int_equal(router_match(r, "PUT", "/c/books/42/comments/7/", &m, NULL, 0),
	                 ROUTER_FOUND);
	assert_ptr_equal(m.target, &t_comment);
	assert_int_equal(m.nparams, 3);
	assert_string_equal(m.names[0], "coll");
	assert_string_equal(m.values[0], "books");
	assert_string_equal(m.names[1], "id");
	assert_string_equal(m.values[1], "42");
	assert_string_equal(m.names[2], "cid");
	assert_string_equal(m.values[2], "7");
	route_match_free(&m);
	assert_int_equal(m.nparams, 0);

	/* Capture names belong to the route, not the shared path node. */
	assert_int_equal(router_match(r, "DELETE", "/users/9", &m, NULL, 0), ROUTER_FOUND);
	assert_int_equal(m.nparams, 1);
	assert_string_equal(m.names[0], "uid");
	assert_string_equal(m.values[0], "9");
	route_match_free(&m);
	assert_int_equal(router_match(r, "GET", "/users/9", &m, NULL, 0), ROUTER_FOUND);
	assert_string_equal(m.names[0], "id");
	route_match_free(&m);
}

static void test_precedence(void **state)
{
	router *r = *state;
	route_match m;
	assert_int_equal(match(r, "GET", "/users/me", &t_me), ROUTER_FOUND);
	assert_int_equal(match(r, "GET", "/users/mex", &t_get), ROUTER_FOUND);
	/* /users/me has no DELETE: the search backtracks to /users/{uid}. */
	assert_int_equal(router_match(r, "DELETE", "/users/me", &m, NULL, 0), ROUTER_FOUND);
	assert_ptr_equal(m.target, &t_delete);
	assert_string_equal(m.values[0], "me");
	route_match_free(&m);
	/* /users/me/posts: the literal branch dead-ends, the capture one matches. */
	assert_int_equal(router_match(r, "GET", "/users/me/posts", &m, NULL, 0), ROUTER_FOUND);
	assert_ptr_equal(m.target, &t_posts);
	assert_string_equal(m.values[0], "me");
	route_match_free(&m);
}

static void test_head_matches_get(void **state)
{
	router *r = *state;
	char err[128];
	int t_head;
	assert_int_equal(match(r, "HEAD", "/users/1", &t_get), ROUTER_FOUND);
	assert_int_equal(match(r, "HEAD", "/users", &t_list), ROUTER_FOUND);
	/* An explicit HEAD route wins over GET. */
	assert_int_equal(router_add(r, "HEAD", "/users", &t_head, &owner_a, err, sizeof err), 0);
	assert_int_equal(match(r, "HEAD", "/users", &t_head), ROUTER_FOUND);
}

static void test_method_not_allowed(void **state)
{
	router *r = *state;
	route_match m;
	char allow[64], tiny[8];
	assert_int_equal(router_match(r, "PATCH", "/users", &m, allow, sizeof allow),
	                 ROUTER_METHOD_NOT_ALLOWED);
	assert_null(m.target);
	assert_string_equal(allow, "GET, HEAD, POST"); /* a GET route answers HEAD too */
	/* The union over every route the path matches, sorted. */
	assert_int_equal(router_match(r, "POST", "/users/me", &m, allow, sizeof allow),
	                 ROUTER_METHOD_NOT_ALLOWED);
	assert_string_equal(allow, "DELETE, GET, HEAD");
	assert_int_equal(router_match(r, "POST", "/", &m, allow, sizeof allow),
	                 ROUTER_METHOD_NOT_ALLOWED);
	assert_string_equal(allow, "GET, HEAD");
	/* A short buffer keeps whole names only. */
	assert_int_equal(router_match(r, "PATCH", "/users", &m, tiny, sizeof tiny),
	                 ROUTER_METHOD_NOT_ALLOWED);
	assert_string_equal(tiny, "GET");
	/* Not-found clears allow. */
	assert_int_equal(router_match(r, "PATCH", "/zzz", &m, allow, sizeof allow),
	                 ROUTER_NOT_FOUND);
	assert_string_equal(allow, "");
}

static void test_duplicates(void **state)
{
	router *r = *state;
	char err[256] = "";
	int t;
	assert_int_equal(router_add(r, "GET", "/users", &t, &owner_b, err, sizeof err), -1);
	assert_string_equal(err, "route GET /users already registered");
	assert_int_equal(router_add(r, "GET", "/users/{key}", &t, &owner_b, err, sizeof err), -1);
	assert_string_equal(err,
	                    "route GET /users/{key} conflicts with GET /users/{id} (same path)");
	/* The failed adds changed nothing. */
	assert_int_equal(match(r, "GET", "/users/5", &t_get), ROUTER_FOUND);
	/* Same path, other method: fine. */
	assert_int_equal(router_add(r, "PUT", "/users/{key}", &t, &owner_b, err, sizeof err), 0);
	assert_int_equal(match(r, "PUT", "/users/5", &t), ROUTER_FOUND);
}

/* A route replaced in place: its new target, owner and capture names; the
 * other methods of the path and other owners' routes untouched. */
static void test_replace(void **state)
{
	router *r = *state;
	char err[256] = "", allow[64];
	route_match m;
	int t, owner_c;
	assert_int_equal(router_replace(r, "GET", "/users/{uid}", &owner_a, &t, &owner_c, err,
	                                sizeof err),
	                 0);
	assert_int_equal(router_match(r, "GET", "/users/5", &m, allow, sizeof allow), ROUTER_FOUND);
	assert_ptr_equal(m.target, &t);
	assert_int_equal(m.nparams, 1);
	assert_string_equal(m.names[0], "uid");
	route_match_free(&m);
	assert_int_equal(match(r, "DELETE", "/users/5", &t_delete), ROUTER_FOUND);
	/* The new owner's now: the old one's removal leaves it, its own takes it. */
	router_remove_owner(r, &owner_a);
	assert_int_equal(match(r, "GET", "/users/5", &t), ROUTER_FOUND);
	router_remove_owner(r, &owner_c);
	assert_int_equal(match(r, "GET", "/users/5", NULL), ROUTER_NOT_FOUND);
	/* Nothing of that owner's there: -1, nothing changed. */
	assert_int_equal(router_replace(r, "GET", "/users/me", &owner_a, &t, &owner_c, err,
	                                sizeof err),
	                 -1);
	assert_string_equal(err, "route GET /users/me: nothing to replace");
	assert_int_equal(match(r, "GET", "/users/me", &t_me), ROUTER_FOUND);
	assert_int_equal(router_replace(r, "GET", "/no/such", &owner_b, &t, &owner_c, err,
	                                sizeof err),
	                 -1);
	assert_int_equal(match(r, "GET", "/no/such", NULL), ROUTER_NOT_FOUND);
}

static void test_bad_patterns(void **state)
{
	router *r = *state;
	char err[256];
	int t;
	static const char *const bad[] = {
	    "",           "users",         "//",          "/users/",   "/a//b",
	    "/{",         "/{}",           "/{1a}",       "/{a-b}",    "/x{id}",
	    "/{id}x",     "/a b",          "/a%20b",      "/a?b",      "/{a}/{a}",
	    "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}",
	    "/caf\xe9/{id}", /* Latin-1: /metrics' route label must be UTF-8 */
	};
	assert_null(router_pattern_error("/"));
	assert_null(router_pattern_error("/caf\xc3\xa9/{id}"));
	assert_null(router_pattern_error("/a/{b_1}/c-d.e~f/{_x}"));
	assert_null(router_pattern_error("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}"));
	assert_non_null(router_pattern_error(NULL));
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *e = router_pattern_error(bad[i]);
		if (!e)
			fail_msg("pattern \"%s\" was accepted", bad[i]);
		assert_int_equal(router_add(r, "GET", bad[i], &t, &owner_a, err, sizeof err), -1);
		assert_non_null(strstr(err, e));
	}
	assert_int_equal(router_add(r, "get", "/x", &t, &owner_a, err, sizeof err), -1);
	assert_string_equal(err,
	                    "route get /x: method must be upper-case letters (GET, POST, ...)");
	assert_int_equal(router_add(r, NULL, "/x", &t, &owner_a, err, sizeof err), -1);
	assert_int_equal(router_add(r, "", "/x", &t, &owner_a, err, sizeof err), -1);
}

static void test_decode(void **state)
{
	router *r = *state;
	route_match m;
	assert_int_equal(router_match(r, "GET", "/users/a%20b%2Fc%C3%A9", &m, NULL, 0),
	                 ROUTER_FOUND);
	assert_ptr_equal(m.target, &t_get);
	assert_string_equal(m.values[0], "a b/c\xc3\xa9");
	route_match_free(&m);
	/* '+' is literal in paths. */
	assert_int_equal(router_match(r, "GET", "/users/a+b", &m, NULL, 0), ROUTER_FOUND);
	assert_string_equal(m.values[0], "a+b");
	route_match_free(&m);
	/* Literal segments compare decoded. */
	assert_int_equal(match(r, "GET", "/%75sers/me", &t_me), ROUTER_FOUND);
	assert_int_equal(match(r, "GET", "/users/%00", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/a%", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/a%2", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/a%zz", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/%g0", NULL), ROUTER_NOT_FOUND);
}

static void test_remove_owner(void **state)
{
	router *r = *state;
	char err[256];
	int t;
	router_remove_owner(r, &owner_b);
	assert_int_equal(match(r, "GET", "/", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/1/posts", NULL), ROUTER_NOT_FOUND);
	/* /users/me now falls through to owner_a's capture route. */
	assert_int_equal(match(r, "GET", "/users/me", &t_get), ROUTER_FOUND);
	assert_int_equal(match(r, "GET", "/users", &t_list), ROUTER_FOUND);
	/* Their patterns are free again. */
	assert_int_equal(router_add(r, "GET", "/users/me", &t, &owner_a, err, sizeof err), 0);
	assert_int_equal(match(r, "GET", "/users/me", &t), ROUTER_FOUND);
	router_remove_owner(r, &owner_a);
	assert_int_equal(match(r, "GET", "/users", NULL), ROUTER_NOT_FOUND);
	assert_int_equal(match(r, "GET", "/users/me", NULL), ROUTER_NOT_FOUND);
	/* Removing an unknown owner is harmless. */
	router_remove_owner(r, &t);
}

/* A declared route's check (plugins.c, ABI 1.12): router_route_error says
 * what router_add would refuse a method and pattern for, and router_holder
 * whose route router_add would refuse one for, by the same rule (the same
 * method at the same path, captures named in any way), creating nothing. */
static void test_route_error_and_holder(void **state)
{
	router *r = *state;
	char err[256];

	assert_null(router_route_error("GET", "/users/{id}"));
	assert_string_equal(router_route_error("get", "/x"),
	                    "method must be upper-case letters (GET, POST, ...)");
	assert_string_equal(router_route_error("", "/x"), "method is empty");
	assert_string_equal(router_route_error("GET", "x"), "pattern must start with '/'");
	assert_string_equal(router_route_error("GET", "/a//b"),
	                    "empty path segment (double or trailing '/')");

	assert_ptr_equal(router_holder(r, "GET", "/users/{x}"), &owner_a);
	assert_ptr_equal(router_holder(r, "DELETE", "/users/{id}"), &owner_a);
	assert_ptr_equal(router_holder(r, "GET", "/users/me"), &owner_b);
	assert_ptr_equal(router_holder(r, "GET", "/"), &owner_b);
	assert_ptr_equal(router_holder(r, "PUT", "/c/{a}/{b}/comments/{c}"), &owner_b);
	assert_null(router_holder(r, "POST", "/users/{id}"));
	assert_null(router_holder(r, "GET", "/users/{id}/posts/{p}"));
	assert_null(router_holder(r, "GET", "/nowhere/{x}"));
	assert_null(router_holder(r, "GET", "/c/{a}"));
	/* Each one router_add refuses, and only those. */
	assert_int_equal(router_add(r, "GET", "/users/{x}", &t_get, &owner_b, err, sizeof err), -1);
	assert_int_equal(router_add(r, "POST", "/users/{id}", &t_get, &owner_b, err, sizeof err), 0);
	assert_ptr_equal(router_holder(r, "POST", "/users/{other}"), &owner_b);
	/* Nothing was made by the look-ups: the removal leaves the tree empty. */
	router_remove_owner(r, &owner_a);
	router_remove_owner(r, &owner_b);
	assert_null(router_holder(r, "GET", "/users"));
	assert_null(router_holder(r, "GET", "/"));
}

static void test_empty_router(void **state)
{
	router *r = router_new();
	route_match m;
	char allow[16] = "junk";
	(void)state;
	assert_non_null(r);
	assert_int_equal(router_match(r, "GET", "/", &m, allow, sizeof allow), ROUTER_NOT_FOUND);
	assert_string_equal(allow, "");
	assert_int_equal(router_match(r, NULL, "/", &m, allow, sizeof allow), ROUTER_NOT_FOUND);
	assert_int_equal(router_match(r, "GET", NULL, &m, allow, sizeof allow), ROUTER_NOT_FOUND);
	router_free(r);
	router_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_literal_match, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_params, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_head_matches_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_patterns, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_decode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remove_owner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_route_error_and_holder, setup, teardown),
	    cmocka_unit_test(test_empty_router),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
