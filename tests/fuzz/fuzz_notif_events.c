/* libFuzzer: the events notifications.so consumes (notif_events.c): what it
 * reads of USER_CREATED / USER_UPDATED / USER_DELETED (parse_user_event:
 * "id", "email", "name", the id falling back to the Kafka key) and of
 * NOTIFICATION_BROADCAST (parse_broadcast), past jsonin_parse_strict's
 * checks (fuzz_jsonin). Any producer may write to these topics. The static
 * functions are reached by compiling notif_events.c in, with a fake host
 * API table (as tests/unit/test_reply.c does).
 *
 * Input: a mode byte (0: an event that needs no email, 1: a welcome's,
 * which does, 2: a broadcast), a key length byte (0xff: no key), the key,
 * then the event's data (any bytes). Checked, on what is taken:
 *   - a user id is 1 to ID_MAX bytes: the "id" string, or a number as
 *     written, digits only (and a sign), exact in a double, or else the key
 *     when "id" is absent;
 *   - an email is one notif_addr_valid takes (it goes into an SMTP envelope
 *     and a To header), present when needed;
 *   - a broadcast has a usable id and string subject and message;
 * on what is refused: a reason, which never holds the email or name sent
 * (personal data: it goes to logs and dead-letter headers). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_modes.h"
#include "../../plugins/common/jsonin.c"
#include "../../plugins/notifications/notif_buf.c"
#include "../../plugins/notifications/notif_mail.c"
#include "../../plugins/notifications/notif_pending.c"
#include "../../plugins/notifications/notif_util.c"
#include "../../plugins/notifications/notif_events.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const evh_api *evh__api;

/* Never called: the parsers send nothing. */
notif_send_result notif_deliver(notif_state *st, const notif_content *c, const char *key,
                                const char *to_addr, const char *to_name, char *err,
                                size_t errlen)
{
	(void)st, (void)c, (void)key, (void)to_addr, (void)to_name, (void)err, (void)errlen;
	__builtin_trap();
}

/* The event: its key (NULL: none) and data. */
static struct {
	const char *key, *data;
	size_t key_len, data_len;
} the_event;

static const char *ev_key(const evh_event *ev, size_t *len)
{
	(void)ev;
	*len = the_event.key_len;
	return the_event.key;
}

static const char *ev_data(const evh_event *ev, size_t *len)
{
	(void)ev;
	*len = the_event.data_len;
	return the_event.data;
}

static evh_api api;

/* The value of the string member `name` of the object in data, if any. */
static const char *member(const cJSON *root, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void check_user(int need_email, const cJSON *shadow)
{
	user_event u;
	char why[512] = "";
	const evh_event *ev = (const evh_event *)&the_event;
	int rc = parse_user_event(ev, need_email, &u, why, sizeof why);
	if (rc == 0) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(u.root, "id");
		size_t n = strlen(u.id);
		CHECK(n >= 1 && n <= ID_MAX);
		if (cJSON_IsString(id) && id->valuestring[0] && strlen(id->valuestring) <= ID_MAX) {
			CHECK(!strcmp(u.id, id->valuestring));
		} else if (cJSON_IsNumber(id)) {
			size_t sign = u.id[0] == '-';
			char *end;
			double d = strtod(u.id, &end);
			CHECK(n > sign && strspn(u.id + sign, "0123456789") == n - sign && !*end);
			CHECK(d == id->valuedouble && fabs(d) <= ID_NUMBER_MAX);
		} else {
			CHECK(!id || cJSON_IsNull(id) || cJSON_IsString(id) || cJSON_IsBool(id) ||
			      cJSON_IsObject(id) || cJSON_IsArray(id));
			CHECK(the_event.key && n == the_event.key_len &&
			      !memcmp(u.id, the_event.key, n));
		}
		if (u.email)
			CHECK(notif_addr_valid(u.email));
		CHECK(!need_email || u.email);
		user_event_free(&u);
		return;
	}
	CHECK(rc == PARSE_BAD && why[0] && strnlen(why, sizeof why) < sizeof why);
	/* No value sent: an email or name (each long enough not to be a word
	 * of the reason by chance), unless the reason names a member given
	 * twice, by its name. */
	if (shadow && !strstr(why, "twice")) {
		const char *e = member(shadow, "email"), *nm = member(shadow, "name");
		CHECK(!e || strlen(e) < 6 || !strstr(why, e));
		CHECK(!nm || strlen(nm) < 6 || !strstr(why, nm));
	}
}

static void check_broadcast(void)
{
	broadcast b;
	char why[512] = "";
	const evh_event *ev = (const evh_event *)&the_event;
	if (parse_broadcast(ev, &b, why, sizeof why) == 0) {
		CHECK(b.root && b.id && b.id[0] && strlen(b.id) <= ID_MAX && b.subject && b.message);
		cJSON_Delete(b.root);
		return;
	}
	CHECK(!b.root && why[0] && strnlen(why, sizeof why) < sizeof why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t at = 2;
	char *copy;
	cJSON *shadow;
	if (size < 2)
		return 0;
	api.struct_size = sizeof api;
	api.ev_key = ev_key;
	api.ev_data = ev_data;
	evh__api = &api;
	the_event.key = NULL;
	the_event.key_len = 0;
	if (data[1] != 0xff) {
		if (data[1] > size - 2)
			return 0;
		the_event.key = (const char *)data + 2;
		the_event.key_len = data[1];
		at += data[1];
	}
	/* The data in a buffer of its own, so that ASan sees any read past it. */
	copy = malloc(size > at ? size - at : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + at, size - at);
	the_event.data = copy;
	the_event.data_len = size - at;
	shadow = cJSON_ParseWithLength(copy, size - at);
	if (data[0] % 3 == 2)
		check_broadcast();
	else
		check_user(data[0] % 3, shadow);
	cJSON_Delete(shadow);
	free(copy);
	return 0;
}
