/* Kafka topic names: the one rule the host (evh_publish, evh_subscribe) and
 * the plugins' configuration checks (a topic key whose value Kafka would
 * refuse is said at its line, not found by a start that fails to subscribe
 * or by every publish failing) hold names to. Pure, no SDK calls: plugins
 * and unit tests compile topics.c in, as they do json.c. */
#ifndef EVHOST_TOPICS_H
#define EVHOST_TOPICS_H
#include <stddef.h>

#define TOPICS_NAME_MAX 249 /* Kafka's limit */
/* What a topic name may be, for the message that refuses one. */
#define TOPICS_NAME_RULE "1 to 249 of a-z A-Z 0-9 . _ -, not . or .."

/* Whether `t` is a name Kafka takes for a topic: 1 to TOPICS_NAME_MAX of
 * [A-Za-z0-9._-], other than "." and "..". NULL is not one. */
int topics_name_ok(const char *t);

/* The first of t[0..i) that is the topic t[i] is, or i when none is (NULL
 * entries are none): for a plugin that tells its events apart by their
 * topic, which refuses a key that names another key's topic. */
size_t topics_same_before(const char *const *t, size_t i);
#endif
