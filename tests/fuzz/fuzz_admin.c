/* libFuzzer: what the admin API reads from its callers (admin.c), through
 * a real server (civetweb and http.c, as fuzz_http) with the admin token
 * set and no plugin running. admin.c is compiled in here (as tests/unit
 * does with other files' static functions) for parse_dlq_after, which a
 * request only reaches with a plugin whose dead letters are then read from
 * Kafka: a route of the fuzzer's calls it on the request's ?after=.
 *
 * The first input byte picks the request, the rest is its variable part:
 *   0: POST /admin/plugins/p/replay       the body (parse_replay, parse_offsets)
 *   1: POST /admin/plugins/p/dlq/redrive  the body (parse_picks, "after")
 *   2: POST /admin/sign-out               the body ("subject")
 *   3: POST /admin/backup                 the body ("keep")
 *   4: GET /admin/events?REST             the query (limit, after, plugin)
 *   5: GET /admin/plugins/p/dlq?REST      the query (limit, after)
 *   6: GET /f/after?n=N&after=REST        a dead letter's id, percent-encoded,
 *                                         for a plugin of N dead-letter topics
 *   7: METHOD /admin/REST                 any method and path (routing)
 * (query strings and paths with their spaces, CR, LF, '#' and NUL as '_').
 * Every request carries the token. Checked: the answer is well-formed HTTP
 * with a body as long as its Content-Length, never a 500 (bad input is the
 * client's error: only the sign-out, which this fuzzer's host cannot save,
 * answers 500 once it took the body), and a refusal is a problem document
 * (JSON, UTF-8, with a detail). A body is taken or refused whole: a body
 * refused says so (422), one taken gets to the plugin's lookup (404: no
 * plugin "p"), or for a backup, to the plugins' list (409: none runs);
 * one that is not a JSON text json_check_members takes whole (a member
 * named twice, a \u0000 in a string) is refused. A
 * dead letter's id taken is TOPIC:PARTITION:OFFSET with each part in its
 * range, and written back that way is taken again as the same position. */
#define _GNU_SOURCE /* memmem, as admin.c */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz_modes.h"
#include "fuzz_net.h"
#include "../../host/admin.c"
#include "router.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TOKEN "fuzz-admin-token-0123456789abcdef"

static host the_host;
static evh_plugin plugin;
static http_server *server;
static int port;
static char listen_at[64];

/* GET /f/after: parse_dlq_after on ?after=, for ?n= dead-letter topics. */
static int after_route(evh_request *req, evh_response *resp, void *ud)
{
	static char *topics[] = {(char *)"orders.evhost.p.dlq", (char *)"users.evhost.p.dlq"};
	const char *v = http_req_query(req, "after"), *n = http_req_query(req, "n");
	size_t ntopics = n && *n == '2' ? 2 : 1;
	char *topic = NULL, *again_topic = NULL, text[700];
	dlq_pos pos, again;
	(void)ud;
	if (!v)
		return http_resp_body(resp, "text/plain", "-", 1);
	if (parse_dlq_after(v, resp, topics, ntopics, &pos, &topic) != 0) {
		CHECK(!topic);
		return EVH_OK; /* answered */
	}
	CHECK(pos.topic && pos.partition >= 0 && pos.offset >= 0 &&
	      (double)pos.offset <= OFFSET_MAX);
	CHECK(topic ? pos.topic == topic : pos.topic == topics[0] && ntopics == 1);
	CHECK(!topic || (*topic && !strncmp(v, topic, strlen(topic)) && v[strlen(topic)] == ':'));
	snprintf(text, sizeof text, "%s:%" PRId32 ":%" PRId64, pos.topic, pos.partition, pos.offset);
	CHECK(parse_dlq_after(text, resp, topics, ntopics, &again, &again_topic) == 0);
	CHECK(!strcmp(again.topic, pos.topic) && again.partition == pos.partition &&
	      again.offset == pos.offset);
	free(again_topic);
	free(topic);
	return http_resp_body(resp, "text/plain", text, strlen(text));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	log_setup(EVH_LOG_ERROR, LOG_FORMAT_TEXT); /* not a line per request */
	port = fuzz_host_setup(&the_host, &plugin, listen_at, sizeof listen_at);
	the_host.set.http_threads = 2;
	the_host.set.max_body_bytes = 16384;
	the_host.set.json_max_depth = 16;
	the_host.set.http_max_head_bytes = 16384;
	the_host.set.admin_token_file = (char *)"token";
	the_host.set.admin_token = strdup(TOKEN);
	if (admin_start(&the_host) != 0)
		abort();
	fuzz_route(&the_host, &plugin, "fuzz_admin", "GET", "/f/after", after_route, 0);
	port = fuzz_http_start(&server, &the_host, listen_at, sizeof listen_at, port, "fuzz_admin");
	return 0;
}

/* The text as one piece of a request line: what would end it as '_'. */
static void fz_flatten(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == ' ' || s[i] == '\r' || s[i] == '\n' || s[i] == '#' || s[i] == '\0' ||
		    s[i] == '\t')
			s[i] = '_';
}

/* Whether s[0..n) has U+FFFD, raw or as an escape (\\ufffd, any case). */
static int fz_has_fffd(const char *s, size_t n)
{
	if (memmem(s, n, "\xef\xbf\xbd", 3))
		return 1;
	for (size_t i = 0; i + 6 <= n; i++)
		if (s[i] == '\\' && s[i + 1] == 'u' && !strncasecmp(s + i + 2, "fffd", 4))
			return 1;
	return 0;
}

/* Check the answer; its status, or -1 for no answer at all. problem: an
 * error must be a problem document (not for a path that may leave /admin/:
 * "/admin/../readyz" is /readyz, whose 503 is its JSON status). */
static int fz_check(const char *out, size_t n, int head, int problem)
{
	const char *end = memmem(out, n, "\r\n\r\n", 4), *cl, *body;
	long status, length;
	if (!n)
		return -1; /* civetweb closes some requests without an answer */
	CHECK(end && n >= 13 && !memcmp(out, "HTTP/1.1 ", 9));
	status = strtol(out + 9, NULL, 10);
	CHECK(status >= 200 && status <= 599);
	cl = strcasestr(out, "\r\nContent-Length: ");
	CHECK(cl && cl < end);
	length = strtol(cl + 18, NULL, 10);
	body = end + 4;
	if (head)
		return (int)status; /* a length and no body */
	CHECK((long)(n - (size_t)(body - out)) == length);
	if (status >= 400 && problem) {
		cJSON *doc = cJSON_ParseWithLength(body, (size_t)length);
		const cJSON *detail = cJSON_GetObjectItemCaseSensitive(doc, "detail");
		CHECK(strcasestr(out, "\r\nContent-Type: application/problem+json") < end);
		CHECK(json_utf8_error(body, (size_t)length) < 0);
		CHECK(doc && cJSON_IsString(detail) && detail->valuestring[0]);
		cJSON_Delete(doc);
	}
	return (int)status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const bodies[] = {"/admin/plugins/p/replay", "/admin/plugins/p/dlq/redrive",
	                                     "/admin/sign-out", "/admin/backup"};
	size_t len, n, cap;
	char *rest = fuzz_rest(data, size, &len), *req, *out;
	int mode, status, at;
	if (!rest)
		return 0;
	if (len > 12000) {
		free(rest);
		return 0;
	}
	mode = data[0] % 8;
	cap = 3 * len + 512;
	req = malloc(cap);
	CHECK(req);
	if (mode < 4) {
		at = snprintf(req, cap,
		              "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
		              "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
		              "Connection: close\r\n\r\n",
		              bodies[mode], len);
		memcpy(req + at, rest, len);
		at += (int)len;
	} else if (mode == 6) {
		at = snprintf(req, cap, "GET /f/after?n=%d&after=", data[0] & 8 ? 2 : 1);
		for (size_t i = 0; i < len; i++)
			at += snprintf(req + at, cap - (size_t)at, "%%%02X", (unsigned char)rest[i]);
		at += snprintf(req + at, cap - (size_t)at,
		               " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	} else {
		static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "HEAD"};
		const char *path = mode == 4 ? "/admin/events?" : mode == 5 ? "/admin/plugins/p/dlq?"
		                                                             : "/admin/";
		fz_flatten(rest, len);
		/* POST /admin/reload would signal the process: not from here */
		if (mode == 7 && strstr(rest, "reload")) {
			free(req);
			free(rest);
			return 0;
		}
		at = snprintf(req, cap, "%s %s%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
		                        "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		              mode == 7 ? methods[(data[0] >> 3) % 5] : "GET", path, rest);
	}
	out = fuzz_exchange("fuzz_admin", port, req, (size_t)at, 5, &n, NULL);
	status = fz_check(out, n, mode == 7 && (data[0] >> 3) % 5 == 4,
	                  mode != 7 || !strstr(rest, ".."));
	if (mode < 4 && status >= 0) {
		/* taken: the plugin's lookup (404) or, for a backup, its list (409) */
		int want = mode == 3 ? 409 : 404, dup = 0;
		size_t pos;
		char name[128];
		/* A member named twice, or a string cut by a \u0000, is read as
		 * other parsers would not: refused, as the host refuses it in a
		 * plugin's JSON body. */
		if (len && (json_check_members(rest, len, JSON_MAX_DEPTH, &pos, &dup, name,
		                               sizeof name) != JSON_OK ||
		            dup))
			CHECK(status == 422 || status == 413 || status == 400);
		/* Nor are bytes that are not UTF-8 taken (cJSON would). */
		if (json_utf8_error(rest, len) >= 0)
			CHECK(status == 422 || status == 413 || status == 400);
		/* A name the answer quotes is cut where a character begins: no
		 * U+FFFD stands for a cut one (unless the body has one). */
		if (!fz_has_fffd(rest, len))
			CHECK(!memmem(out, n, "\xef\xbf\xbd", 3));
		if (mode == 2)
			CHECK(status == 422 || status == 500 || status == 413 || status == 400);
		else
			CHECK(status == 422 || status == want || status == 413 || status == 400);
	} else if (status >= 0) {
		CHECK(status != 500);
	}
	free(out);
	free(req);
	free(rest);
	return 0;
}
