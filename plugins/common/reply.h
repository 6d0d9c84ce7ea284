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
/* reply_body_object in two steps, for a handler that answers other
 * questions first: the body as a JSON object, or NULL (*oom: cJSON ran out
 * of memory); then the answer to such a NULL (a handler's return value). */
cJSON *reply_body_parse(evh_request *req, int *oom);
int reply_body_refused(evh_response *resp, int oom);
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
 * with the storage engine's message (not EVH_EFULL: the host says a full
 * outbox, once a minute with a count; an EVH_ESTORE line the same as the
 * last one said, once a minute with a count, as a disk full or failing
 * fails every request alike), roll `tx` back, and return `rc`. */
int reply_log_failure(evh_plugin *p, evh_tx *tx, int rc, const char *what);
/* Answer a failed call that neither stores nor publishes what the request
 * carried (begin, a read, commit): 503 + Retry-After when the outbox is
 * full (EVH_EFULL); otherwise return `rc` for the host's answer. EVH_ETOOBIG
 * from a read (a stored value past the storage's limit, lowered since) is
 * a 500 there: the host tells a read from a write. Changes answer with
 * reply_change_failure. */
int reply_failure(evh_response *resp, int rc);
/* Both of the above: the usual end of a handler whose call failed. */
int reply_tx_failure(evh_plugin *p, evh_response *resp, evh_tx *tx, int rc, const char *what);

/* The call of a change under way when it failed: a storage call writing
 * what the request stores, evh_publish of the event announcing it, or
 * another (begin, a read, commit, a delete's statement), where what the
 * request carried was not too large. */
typedef enum reply_step {
	REPLY_STEP_OTHER = 0,
	REPLY_STEP_STORE,
	REPLY_STEP_PUBLISH,
} reply_step;

/* A change a handler stores and announces, as far as it got, for the 413
 * that says which of the two was too large. The nouns are the client's
 * words ("the document", "the event announcing the new user"); a size of 0
 * is one not known. */
typedef struct reply_change {
	reply_step step;     /* the call under way */
	const char *stored;  /* what the change stores */
	size_t stored_bytes; /* its size as stored */
	const char *event;   /* the event announcing it */
	size_t event_bytes;  /* its key and data together, as evh_publish counts them */
} reply_change;

/* Answer a change that failed with `rc` at c->step. EVH_ETOOBIG from its
 * storage call or from evh_publish is a 413 naming what was too large, with
 * the sizes known: the stored value (more than the storage takes: a limit
 * the host does not tell plugins), or the event, more than an event may be
 * (the limit when `p`'s host tells it, evh_publish_max_bytes) or, within
 * that, more than the storage takes to keep it until it is sent. Anything
 * else as reply_failure. */
int reply_change_failure(evh_plugin *p, evh_response *resp, const reply_change *c, int rc);
/* reply_log_failure, then reply_change_failure. */
int reply_tx_change_failure(evh_plugin *p, evh_response *resp, evh_tx *tx,
                            const reply_change *c, int rc, const char *what);
#endif
