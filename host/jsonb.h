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

/* Printing. cJSON_PrintUnformatted writes a number with 15 significant
 * digits whenever they read back as *nearly* the same double (a relative
 * epsilon), so 9007199254740991 came out as 9.00719925474099e+15,
 * 0.30000000000000004 as 0.3, and 1.7976931348623157e308 as
 * 1.79769313486232e+308, beyond a double's range. These print every number
 * exactly. */

/* The largest integer a JSON number read as a double holds exactly, with
 * every integer below it: 2^53 - 1. From 2^53 on, neighbours read alike
 * (2^53 + 1 reads as 2^53): a bound for integers a request may name. */
#define JSONB_EXACT_INT_MAX 9007199254740991LL

/* Room for any jsonb_number text and its NUL. */
#define JSONB_NUMBER_MAX 32
/* `v` as JSON number text in `out`: an integer of magnitude below 2^53 in
 * plain digits ("-0" for negative zero); otherwise the first of %.15g,
 * %.16g and %.17g that strtod reads back as exactly `v` (so the numbers
 * cJSON already printed exactly print as before); "null" for NaN and the
 * infinities, as cJSON. '.' whatever the locale. Returns the length. */
size_t jsonb_number(double v, char out[JSONB_NUMBER_MAX]);
/* `item` as JSON text without whitespace: cJSON_PrintUnformatted's text
 * (member order, string escapes, raw items verbatim), numbers by
 * jsonb_number. NULL when out of memory, or for what cJSON would not print
 * either (an invalid item, a raw one without text). Free with free(). */
char *jsonb_print(const cJSON *item);

#endif
