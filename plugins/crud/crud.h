/* crud.so internals. crud.c: descriptor, configuration, init/fini.
 * crud_store.c: the documents table. crud_routes.c: /crud handlers. */
#ifndef EVH_CRUD_H
#define EVH_CRUD_H
#include <stdint.h>

#include <cjson/cJSON.h>
#include <evhost/evhost.h>

#include "../../host/topics.h"
#include "crud_logic.h"

#define CRUD_TOPIC_MAX TOPICS_NAME_MAX
#define CRUD_EVENT_TYPE_MAX (CRUD_NAME_MAX + 16)

/* One configured collection. */
typedef struct crud_collection {
	char name[CRUD_NAME_MAX + 1];
	char topic[CRUD_TOPIC_MAX + 1];
	/* CloudEvents types: crud.<name>.created / .updated / .deleted */
	char type_created[CRUD_EVENT_TYPE_MAX], type_updated[CRUD_EVENT_TYPE_MAX],
	    type_deleted[CRUD_EVENT_TYPE_MAX];
	crud_rules rules;
} crud_collection;

typedef struct crud_state {
	evh_plugin *p;
	crud_collection *colls;
	size_t ncolls;
	/* [plugin.crud] read_role, write_role: the role a token needs, or NULL
	 * (no token needed) */
	const char *read_role, *write_role;
} crud_state;

/* The collection named `name`, or NULL. */
const crud_collection *crud_find_collection(const crud_state *st, const char *name);

/* ---- crud_store.c: evh_status results; EVH_ENOTFOUND for no such document. */
extern const evh_migration crud_migrations[];
extern const size_t crud_nmigrations;
/* The document's JSON (*json: free with free()) and version; json may be NULL
 * when only the version is wanted. */
int crud_db_get(evh_tx *tx, const char *coll, const char *id, int64_t *version, char **json);
int crud_db_insert(evh_tx *tx, const char *coll, const char *id, const char *json,
                   const char *now);
/* Replace the document, bumping its version. */
int crud_db_update(evh_tx *tx, const char *coll, const char *id, const char *json,
                   const char *now);
int crud_db_delete(evh_tx *tx, const char *coll, const char *id);
/* Documents a filtered page examines at most (each one's JSON parsed):
 * bounds the time the page holds a read transaction (and the WAL back). */
#define CRUD_SCAN_MAX 10000
/* And bytes of documents (their text), for large ones: the count alone let
 * a page parse 10,000 documents of 900 KB (9 GB, about 10 s). 8 MiB is the
 * count's worth of documents of about 800 bytes: smaller ones page as
 * before (the count comes first), and a page over larger ones takes about
 * as long as one over 10,000 of those, some tens of milliseconds
 * (docs/benchmarks.md). The matches are among the bytes examined, so it
 * bounds a page's body too (to that plus a document), unfiltered pages'
 * as well. The document that reaches it is examined whole: a page always
 * examines one, however large. */
#define CRUD_SCAN_BYTES (8u << 20)
/* Up to `limit` documents of `coll` with seq > after_seq matching every
 * filter, in seq order, appended to `items`; *more: rows remain, to be
 * asked for after *last_seq. Only the documents after after_seq up to
 * CRUD_SCAN_BYTES of their text are examined, and with filters up to
 * CRUD_SCAN_MAX of them: the page may then be short (or empty, filtered)
 * with *more set. */
int crud_db_page(evh_tx *tx, const char *coll, int64_t after_seq, int limit,
                 const crud_filter *filters, size_t nfilters, cJSON *items, int *more,
                 int64_t *last_seq);

/* ---- crud_routes.c */
int crud_routes_register(crud_state *st);
/* The routes crud_routes_register registers, for the descriptor (ABI 1.12). */
extern const char *const crud_routes_declared[];
#endif
