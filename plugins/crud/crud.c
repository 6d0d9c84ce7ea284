/* crud.so: generic JSON document collections over HTTP (create, read,
 * replace, merge-patch, delete, list with filters), optimistic concurrency
 * through ETag/If-Match, and a crud.<collection>.* event in the same
 * transaction as every change. This file: configuration and init/fini. */
#include "crud.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static const evh_config_key crud_config[] = {
    {"collections", EVH_CFG_LIST, "products", 0, "the collections served under /crud/NAME"},
    {"collection.*.required", EVH_CFG_LIST, NULL, 0,
     "fields every document of that collection must have (not null)"},
    {"collection.*.types", EVH_CFG_LIST, NULL, 0,
     "field:type pairs (string, number, integer, boolean, object, array)"},
    {"collection.*.topic", EVH_CFG_STRING, NULL, 0,
     "topic of that collection's events (default crud.NAME)"},
    {"read_role", EVH_CFG_STRING, NULL, 0,
     "role a bearer token needs to read documents (unset: anyone may)"},
    {"write_role", EVH_CFG_STRING, NULL, 0,
     "role a bearer token needs to create, change and delete documents (unset: anyone may)"},
    {NULL, 0, NULL, 0, NULL},
};

#define CRUD_COLLECTIONS_MAX 64

const crud_collection *crud_find_collection(const crud_state *st, const char *name)
{
	size_t i;

	for (i = 0; name && i < st->ncolls; i++)
		if (!strcmp(st->colls[i].name, name))
			return &st->colls[i];
	return NULL;
}

static const char *coll_key(const char *coll, const char *what, char *buf, size_t size)
{
	snprintf(buf, size, "collection.%s.%s", coll, what);
	return buf;
}

/* crud_rules_parse's reason begins "required: " or "types: ": said at that
 * key of the collection, without it. */
static void rules_error(evh_plugin *p, const char *coll, const char *err)
{
	char key[CRUD_NAME_MAX + 32];
	const char *what = !strncmp(err, "types: ", 7) ? "types" : "required";
	size_t n = strlen(what);

	if (!strncmp(err, what, n) && err[n] == ':' && err[n + 1] == ' ')
		err += n + 2;
	evh_config_error(p, coll_key(coll, what, key, sizeof key), "%s", err);
}

static int configure_collection(crud_state *st, crud_collection *c)
{
	char key[CRUD_NAME_MAX + 32], err[256];
	const char *topic = evh_config_str(st->p, coll_key(c->name, "topic", key, sizeof key));
	const char *required = evh_config_str(st->p, coll_key(c->name, "required", key, sizeof key));
	const char *types = evh_config_str(st->p, coll_key(c->name, "types", key, sizeof key));
	int rc = EVH_OK;

	if (crud_rules_parse(&c->rules, required, types, err, sizeof err) != 0) {
		rules_error(st->p, c->name, err);
		rc = EVH_EINVAL;
	}
	/* The value is checked, not its copy: one longer than c->topic would
	 * pass cut to its first 249 characters. */
	if (topic && !topics_name_ok(topic)) {
		/* Empty too: not taken as the default, which leaving the key out
		 * gives (the line may have lost its value by mistake). */
		evh_config_error(st->p, coll_key(c->name, "topic", key, sizeof key),
		                 "'%s' is not a Kafka topic name (" TOPICS_NAME_RULE
		                 "); leave the key out for crud.%s",
		                 topic, c->name);
		rc = EVH_EINVAL;
	} else if (topic) {
		snprintf(c->topic, sizeof c->topic, "%s", topic);
	} else {
		snprintf(c->topic, sizeof c->topic, "crud.%s", c->name); /* a name makes a good one */
	}
	snprintf(c->type_created, sizeof c->type_created, "crud.%s.created", c->name);
	snprintf(c->type_updated, sizeof c->type_updated, "crud.%s.updated", c->name);
	snprintf(c->type_deleted, sizeof c->type_deleted, "crud.%s.deleted", c->name);
	return rc;
}

/* One collection name from the `collections` list: valid and not repeated.
 * EVH_ERR: no more can be taken. */
static int add_collection(crud_state *st, const char *name, size_t len)
{
	crud_collection *c;

	if (len > CRUD_NAME_MAX || st->ncolls == CRUD_COLLECTIONS_MAX) {
		evh_config_error(st->p, "collections",
		                 "a name over 64 characters, or more than 64 collections");
		return EVH_ERR;
	}
	c = &st->colls[st->ncolls];
	memcpy(c->name, name, len);
	c->name[len] = '\0';
	if (!crud_collection_name_ok(c->name)) {
		evh_config_error(st->p, "collections",
		                 "'%s' is not a collection name ([A-Za-z0-9_-])", c->name);
		return EVH_EINVAL;
	}
	if (crud_find_collection(st, c->name)) {
		evh_config_error(st->p, "collections", "'%s' is listed twice", c->name);
		return EVH_EINVAL;
	}
	st->ncolls++;
	return configure_collection(st, c);
}

/* Each collection.NAME.* key names a listed collection: a rule for one that
 * is not (a typo, collection.prodcts.required) would apply to nothing, the
 * collection it was meant for left without it. Hosts before ABI 1.10 do
 * not list the keys: not checked there. */
static int rules_listed(crud_state *st)
{
	const char *k;
	int rc = EVH_OK;

	for (size_t i = 0; (k = evh_config_key_at(st->p, i)) != NULL; i++) {
		const char *name = k + strlen("collection."), *dot;
		char coll[CRUD_NAME_MAX + 1];

		if (strncmp(k, "collection.", 11) || !(dot = strrchr(name, '.')))
			continue;
		snprintf(coll, sizeof coll, "%.*s", (int)(dot - name), name);
		if ((size_t)(dot - name) <= CRUD_NAME_MAX && crud_find_collection(st, coll))
			continue;
		evh_config_error(st->p, k,
		                 "'%.*s' is not one of collections (%s): this rule would apply to "
		                 "nothing",
		                 (int)(dot - name), name, evh_config_str(st->p, "collections"));
		rc = EVH_EINVAL;
	}
	return rc;
}

/* The collections and their rules and topics, into `st` (a scratch one for
 * the descriptor's check): every value init checks, none needing files or
 * the network, each problem said at its key. The check and init both run it. */
static int read_config(crud_state *st)
{
	const char *list = evh_config_str(st->p, "collections");
	int rc = EVH_OK, one;

	st->colls = calloc(CRUD_COLLECTIONS_MAX, sizeof *st->colls);
	if (!st->colls) {
		evh_log(st->p, EVH_LOG_ERROR, "out of memory");
		return EVH_ENOMEM;
	}
	while (list && *list) {
		size_t len;

		list += strspn(list, " \t,");
		len = strcspn(list, " \t,");
		if (len && (one = add_collection(st, list, len)) != EVH_OK) {
			rc = EVH_EINVAL;
			if (one == EVH_ERR)
				break;
		}
		list += len;
	}
	if (st->ncolls == 0 && rc == EVH_OK) {
		evh_config_error(st->p, "collections", "name at least one collection");
		return EVH_EINVAL;
	}
	if (rc == EVH_OK)
		rc = rules_listed(st);
	return rc;
}

/* The descriptor's check (ABI 1.7): read_config into a scratch state. */
static int crud_check(evh_plugin *p)
{
	crud_state scratch = {.p = p};
	int rc = read_config(&scratch);

	free(scratch.colls);
	return rc;
}

static void crud_fini(evh_plugin *p, void *state)
{
	crud_state *st = state;

	if (!st)
		return;
	free(st->colls);
	free(st);
}

static int crud_init(evh_plugin *p, void **state)
{
	crud_state *st;
	int rc;

	if (sodium_init() < 0) { /* document ids come from its random generator */
		evh_log(p, EVH_LOG_ERROR, "libsodium failed to initialise");
		return EVH_ERR;
	}
	if (!(st = calloc(1, sizeof *st))) {
		evh_log(p, EVH_LOG_ERROR, "out of memory");
		return EVH_ENOMEM;
	}
	st->p = p;
	st->read_role = evh_config_str(p, "read_role");
	st->write_role = evh_config_str(p, "write_role");
	if (st->read_role && !*st->read_role)
		st->read_role = NULL;
	if (st->write_role && !*st->write_role)
		st->write_role = NULL;
	/* read_config checks again: a host older than ABI 1.7 never ran crud_check. */
	if ((rc = read_config(st)) == EVH_OK &&
	    (rc = evh_migrate(p, crud_migrations, crud_nmigrations)) == EVH_OK)
		rc = crud_routes_register(st);
	if (rc != EVH_OK) {
		crud_fini(p, st);
		return rc;
	}
	if (!EVH_API_HAS(req_query_string))
		evh_log(p, EVH_LOG_WARN, "this host cannot list query parameters: list filters "
		                         "work on fields named in collection.*.types only");
	*state = st;
	return EVH_OK;
}

EVH_PLUGIN_ROUTES("crud", "1.0.0", "JSON document collections with ETags and crud.* events",
                  crud_config, crud_check, crud_routes_declared, crud_init, crud_fini)
