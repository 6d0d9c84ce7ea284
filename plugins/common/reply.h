/* HTTP answers shared by the user and crud plugins, over the SDK: JSON
 * bodies from cJSON values and the problem+json answers both plugins give
 * for the same situations. Call from HTTP handlers only. */
#ifndef EVH_PLUGINS_REPLY_H
#define EVH_PLUGINS_REPLY_H
#include <cjson/cJSON.h>
#include <evhost/evhost.h>

/* Seconds a client is told to wait when the outbox is full. */
#define REPLY_RETRY_AFTER "5"

/* Parse the request body as a JSON object. Returns it (free with
 * cJSON_Delete), or NULL after answering 422 when the body is not an
 * object (503 with Retry-After when it is JSON but cJSON ran out of memory:
 * nothing was done); *rc is what the handler should return then. */
cJSON *reply_body_object(evh_request *req, evh_response *resp, int *rc);
/* Answer `status` with `body` rendered as application/json. */
int reply_json(evh_response *resp, int status, const cJSON *body);
/* A list page: {"items": items, "next_cursor": the cursor after last_seq
 * when `more`, else null}. Consumes `items`. */
int reply_page(evh_response *resp, cJSON *items, int more, int64_t last_seq);
/* 422 type "validation" naming the offending `field` (NULL: the body). */
int reply_invalid(evh_response *resp, const char *field, const char *detail);
/* 404 type "not-found". */
int reply_not_found(evh_response *resp, const char *detail);
/* A storage call on `tx` (may be NULL) failed with `rc`: log what failed
 * with the storage engine's message, roll `tx` back, and return `rc`. */
int reply_log_failure(evh_plugin *p, evh_tx *tx, int rc, const char *what);
/* Answer a failed storage call: 503 + Retry-After when the outbox is full
 * (EVH_EFULL), 413 when something is too big (EVH_ETOOBIG: mostly from
 * evh_publish, an event larger than a Kafka message may be; the answer says
 * that limit in bytes when `p`'s host tells it, evh_publish_max_bytes);
 * otherwise return `rc` so the host answers 500. */
int reply_failure(evh_plugin *p, evh_response *resp, int rc);
/* Both of the above: the usual end of a handler whose write failed. */
int reply_tx_failure(evh_plugin *p, evh_response *resp, evh_tx *tx, int rc, const char *what);
#endif
