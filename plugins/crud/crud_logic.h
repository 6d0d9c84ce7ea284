/* The crud service's pure rules: collection and field names, per-collection
 * field rules (required fields, field types), JSON merge patch (RFC 7396),
 * entity tags, media types, and list filters from the query string. No SDK
 * calls, so tests/unit/test_crud_logic.c compiles this file in directly. */
#ifndef EVH_CRUD_LOGIC_H
#define EVH_CRUD_LOGIC_H
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define CRUD_NAME_MAX 64      /* collection and field names */
#define CRUD_RULES_MAX 32     /* entries per required/types list */
#define CRUD_FILTERS_MAX 8    /* FIELD=VALUE filters per list request */
#define CRUD_FILTER_VALUE_MAX 512
#define CRUD_PATH_MAX (CRUD_NAME_MAX + 3) /* "$." + name */

typedef enum crud_type {
	CRUD_T_ANY = 0, /* no declared type */
	CRUD_T_STRING,
	CRUD_T_NUMBER,
	CRUD_T_INTEGER,
	CRUD_T_BOOLEAN,
	CRUD_T_OBJECT,
	CRUD_T_ARRAY,
} crud_type;

typedef struct crud_field {
	char name[CRUD_NAME_MAX + 1];
	crud_type type;
} crud_field;

/* What a collection's documents must satisfy. */
typedef struct crud_rules {
	char required[CRUD_RULES_MAX][CRUD_NAME_MAX + 1];
	size_t nrequired;
	crud_field types[CRUD_RULES_MAX];
	size_t ntypes;
} crud_rules;

/* A field name usable in rules and filters: [A-Za-z0-9_]{1,64}. */
int crud_field_name_ok(const char *s);
/* A collection name: [A-Za-z0-9_-]{1,64} (it appears in URLs, topics and
 * configuration keys, so no dots). */
int crud_collection_name_ok(const char *s);
const char *crud_type_name(crud_type t);

/* Parse collection.NAME.required ("name, price") and collection.NAME.types
 * ("name:string, price:number"); either may be NULL. Returns 0, or -1 with
 * a message in `err` that begins with the list it is about ("required: ",
 * "types: "). */
int crud_rules_parse(crud_rules *r, const char *required, const char *types, char *err,
                     size_t errlen);
/* The declared type of `field`, or CRUD_T_ANY. */
crud_type crud_rules_type_of(const crud_rules *r, const char *field);
/* Check a document (a JSON object) against the rules: required fields must
 * be present and not null, typed fields when present must have their type.
 * Returns 0, or -1 with *field (borrowed from `r`) and `detail` set. */
int crud_rules_check(const crud_rules *r, const cJSON *doc, const char **field, char *detail,
                     size_t dlen);

/* RFC 7396: apply `patch` to `target` (consumed) and return the result, or
 * NULL when out of memory. */
cJSON *crud_merge_patch(cJSON *target, const cJSON *patch);
/* Make "id" the document's first member with value `id`, replacing any. */
int crud_doc_set_id(cJSON *doc, const char *id);
/* Whether the document's "id" member is absent or equals `id`. */
int crud_doc_id_compatible(const cJSON *doc, const char *id);

/* Whether an If-Match (weak = 0: strong comparison) or If-None-Match
 * (weak = 1) header value matches the entity tag "<version>": 1 when one
 * of its tags does (or it is "*"), 0 when none does (an empty list
 * included), -1 when it is no list of entity tags ("3", W/"3", *): a tag
 * unquoted or unclosed, or anything between two but a comma. */
int crud_etag_matches(const char *header, int64_t version, int weak);
/* Whether a Content-Type header names media type `type` (parameters and
 * case ignored). */
int crud_media_type_is(const char *content_type, const char *type);


typedef enum crud_filter_kind {
	CRUD_F_TEXT = 1,
	CRUD_F_INT,
	CRUD_F_REAL,
	CRUD_F_BOOL,
} crud_filter_kind;

/* One FIELD=VALUE equality filter, ready to bind. */
typedef struct crud_filter {
	char path[CRUD_PATH_MAX + 1]; /* "$.field": a JSON path for json_extract */
	crud_filter_kind kind;
	const char *json_type; /* the json_type() the field must have */
	const char *json_type_alt;
	char text[CRUD_FILTER_VALUE_MAX + 1];
	int64_t i; /* CRUD_F_INT; also CRUD_F_BOOL: 1 or 0 */
	double r;
} crud_filter;

/* Build a filter on `field` (a valid field name) for `value`. A declared
 * type decides how the value is read (string: as text; number, integer:
 * must be a JSON number; boolean: true or false; object, array: refused);
 * without one, "true"/"false" are booleans, JSON numbers are numbers, and
 * anything else is text; a JSON number beyond a double's range (1e400) is
 * refused either way. Returns 0, or -1 with *why set. */
int crud_filter_make(crud_filter *f, const char *field, const char *value, crud_type declared,
                     const char **why);
/* The SQL condition each filter adds; binds: path, json_type, json_type_alt,
 * path, value. */
#define CRUD_FILTER_SQL " AND json_type(doc, ?) IN (?, ?) AND json_extract(doc, ?) = ?"
#define CRUD_FILTER_BINDS 5
#endif
