/* Building a cJSON document without losing a part of it: cJSON's Add and
 * Create functions return NULL (or false) when an allocation fails, and a
 * document with a member missing prints as a smaller, well-formed one (an
 * admin answer without its plugins; a redrive request without its
 * "offsets", which asks for every dead letter). Each helper adds to `to`, an
 * object (under `name`) or an array (`name` NULL), and clears *ok when it
 * cannot, deleting what it was given; a NULL `to` or item clears it too, so
 * a document can be built without a test per call and checked once, at the
 * end, before it is used. */
#ifndef EVHOST_JSONB_H
#define EVHOST_JSONB_H
#include <cjson/cJSON.h>

/* Add `item` (consumed; NULL: a failed Create). */
void jsonb_put(cJSON *to, const char *name, cJSON *item, int *ok);
/* A string; NULL `v` adds null. */
void jsonb_put_str(cJSON *to, const char *name, const char *v, int *ok);
void jsonb_put_num(cJSON *to, const char *name, double v, int *ok);
void jsonb_put_bool(cJSON *to, const char *name, int v, int *ok);
/* A new object or array added to `to`, or NULL (and *ok cleared). */
cJSON *jsonb_put_object(cJSON *to, const char *name, int *ok);
cJSON *jsonb_put_array(cJSON *to, const char *name, int *ok);

#endif
