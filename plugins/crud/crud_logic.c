/* See crud_logic.h. */
#include "crud_logic.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CRUD_INT_EXACT 9007199254740992.0 /* 2^53: beyond it doubles skip integers */

static const char *const type_names[] = {
    [CRUD_T_ANY] = "any",         [CRUD_T_STRING] = "string", [CRUD_T_NUMBER] = "number",
    [CRUD_T_INTEGER] = "integer", [CRUD_T_BOOLEAN] = "boolean", [CRUD_T_OBJECT] = "object",
    [CRUD_T_ARRAY] = "array",
};

const char *crud_type_name(crud_type t)
{
	return (unsigned)t < sizeof type_names / sizeof type_names[0] ? type_names[t] : "?";
}

static int name_ok(const char *s, const char *extra)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (!isalnum((unsigned char)s[n]) && s[n] != '_' && !(extra && strchr(extra, s[n])))
			return 0;
	return n >= 1 && n <= CRUD_NAME_MAX;
}

int crud_field_name_ok(const char *s) { return s && name_ok(s, NULL); }

int crud_collection_name_ok(const char *s) { return s && name_ok(s, "-"); }

/* ------------------------------------------------------------------ rules */

/* The next comma-separated word of *p, trimmed, into buf. 1: a word, 0: the
 * end, -1: empty or too long. */
static int next_word(const char **p, char *buf, size_t size)
{
	const char *s = *p, *e;
	size_t n;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s)
		return 0;
	e = s + strcspn(s, ",");
	*p = *e ? e + 1 : e;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	n = (size_t)(e - s);
	if (n == 0 || n >= size)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return 1;
}

static crud_type type_from_name(const char *s)
{
	size_t i;

	for (i = CRUD_T_STRING; i < sizeof type_names / sizeof type_names[0]; i++)
		if (!strcmp(s, type_names[i]))
			return (crud_type)i;
	return CRUD_T_ANY;
}

/* A field a rule of list `list` ("required" or "types") names; the reason
 * begins with the list's name, like every reason of crud_rules_parse, so
 * that it is said at that key. */
static int check_rule_name(const char *list, const char *name, char *err, size_t errlen)
{
	if (!crud_field_name_ok(name)) {
		snprintf(err, errlen, "%s: '%s' is not a field name ([A-Za-z0-9_], at most 64)", list,
		         name);
		return -1;
	}
	if (!strcmp(name, "id")) {
		snprintf(err, errlen, "%s: 'id' is assigned by the server and takes no rules", list);
		return -1;
	}
	return 0;
}

static int is_required(const crud_rules *r, const char *field)
{
	for (size_t i = 0; i < r->nrequired; i++)
		if (!strcmp(r->required[i], field))
			return 1;
	return 0;
}

static int parse_required(crud_rules *r, const char *list, char *err, size_t errlen)
{
	char word[CRUD_NAME_MAX + 2];
	int got;

	while (list && (got = next_word(&list, word, sizeof word)) != 0) {
		if (got < 0 || r->nrequired == CRUD_RULES_MAX) {
			snprintf(err, errlen, "required: an empty or overlong entry, or more than %d",
			         CRUD_RULES_MAX);
			return -1;
		}
		if (check_rule_name("required", word, err, errlen))
			return -1;
		/* As types refuses a field declared twice: a repeat is a typo for
		 * another field, which would go unrequired without a word. */
		if (is_required(r, word)) {
			snprintf(err, errlen, "required: '%s' is listed twice", word);
			return -1;
		}
		memcpy(r->required[r->nrequired++], word, strlen(word) + 1); /* checked: fits */
	}
	return 0;
}

static int parse_types(crud_rules *r, const char *list, char *err, size_t errlen)
{
	char word[CRUD_NAME_MAX + 16], *colon;
	int got;

	while (list && (got = next_word(&list, word, sizeof word)) != 0) {
		crud_field *f;

		if (got < 0 || r->ntypes == CRUD_RULES_MAX) {
			snprintf(err, errlen, "types: an empty or overlong entry, or more than %d",
			         CRUD_RULES_MAX);
			return -1;
		}
		if (!(colon = strchr(word, ':'))) {
			snprintf(err, errlen, "types: '%s' is not field:type", word);
			return -1;
		}
		*colon = '\0';
		if (check_rule_name("types", word, err, errlen))
			return -1;
		f = &r->types[r->ntypes];
		if ((f->type = type_from_name(colon + 1)) == CRUD_T_ANY) {
			snprintf(err, errlen, "types: '%s' is not one of string, number, integer, "
			                      "boolean, object, array", colon + 1);
			return -1;
		}
		if (crud_rules_type_of(r, word) != CRUD_T_ANY) {
			snprintf(err, errlen, "types: '%s' is declared twice", word);
			return -1;
		}
		memcpy(f->name, word, strlen(word) + 1); /* checked: fits */
		r->ntypes++;
	}
	return 0;
}

int crud_rules_parse(crud_rules *r, const char *required, const char *types, char *err,
                     size_t errlen)
{
	memset(r, 0, sizeof *r);
	if (parse_required(r, required, err, errlen) || parse_types(r, types, err, errlen))
		return -1;
	return 0;
}

crud_type crud_rules_type_of(const crud_rules *r, const char *field)
{
	size_t i;

	for (i = 0; i < r->ntypes; i++)
		if (!strcmp(r->types[i].name, field))
			return r->types[i].type;
	return CRUD_T_ANY;
}

static int has_type(const cJSON *v, crud_type t)
{
	switch (t) {
	case CRUD_T_STRING:
		return cJSON_IsString(v);
	case CRUD_T_NUMBER:
		return cJSON_IsNumber(v);
	case CRUD_T_INTEGER:
		/* the range check comes first: it makes the cast defined (and fails NaN);
		 * 2^53 itself is refused, since 2^53 + 1 was read as it too */
		return cJSON_IsNumber(v) && fabs(v->valuedouble) < CRUD_INT_EXACT &&
		       (double)(int64_t)v->valuedouble == v->valuedouble;
	case CRUD_T_BOOLEAN:
		return cJSON_IsBool(v);
	case CRUD_T_OBJECT:
		return cJSON_IsObject(v);
	case CRUD_T_ARRAY:
		return cJSON_IsArray(v);
	case CRUD_T_ANY:
		break;
	}
	return 1;
}

int crud_rules_check(const crud_rules *r, const cJSON *doc, const char **field, char *detail,
                     size_t dlen)
{
	size_t i;

	for (i = 0; i < r->nrequired; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, r->required[i]);
		if (!v || cJSON_IsNull(v)) {
			*field = r->required[i];
			snprintf(detail, dlen, "%s is required", r->required[i]);
			return -1;
		}
	}
	for (i = 0; i < r->ntypes; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, r->types[i].name);
		if (v && !has_type(v, r->types[i].type)) {
			*field = r->types[i].name;
			snprintf(detail, dlen, "%s must be of type %s", r->types[i].name,
			         crud_type_name(r->types[i].type));
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ merge patch */

static int merge_object(cJSON *target, const cJSON *patch);

/* Apply one member of a patch object to the object `target`. *cur is the
 * target's member of its name (NULL: none), kept up to date for a later
 * member of the same name. */
static int merge_member(cJSON *target, const cJSON *m, cJSON **cur)
{
	cJSON *val;

	if (cJSON_IsNull(m)) {
		if (*cur)
			cJSON_Delete(cJSON_DetachItemViaPointer(target, *cur));
		*cur = NULL;
		return 0;
	}
	if (cJSON_IsObject(m) && cJSON_IsObject(*cur))
		return merge_object(*cur, m);
	/* Named as m is. An object onto a non-object is merged into a copy
	 * without members, {}, so that its nested nulls are dropped. */
	val = cJSON_Duplicate(m, !cJSON_IsObject(m));
	if (val && cJSON_IsObject(m) && merge_object(val, m) != 0) {
		cJSON_Delete(val);
		val = NULL;
	}
	if (!val)
		return -1;
	if (*cur ? !cJSON_ReplaceItemViaPointer(target, *cur, val) /* in its place */
	         : !cJSON_AddItemToObject(target, m->string, val)) {
		cJSON_Delete(val);
		return -1;
	}
	*cur = val;
	return 0;
}

/* A member as merge_object sorts them: by name, then by place, so that the
 * first of a name comes first. */
typedef struct {
	const char *name;
	size_t at;
	/* the target's: this member; the patch's first of a name: the
	 * target's member of that name as the merge goes (NULL: none) */
	cJSON *item;
} merge_name;

static int merge_name_cmp(const void *a, const void *b)
{
	const merge_name *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : (x->at > y->at) - (x->at < y->at);
}

static size_t members_of(const cJSON *o)
{
	size_t n = 0;

	for (const cJSON *m = o->child; m; m = m->next)
		n++;
	return n;
}

/* The members of `o` into v[0..n), sorted; with themselves as items when
 * `items`, else none. */
static void sort_members(const cJSON *o, merge_name *v, size_t n, int items)
{
	size_t i = 0;

	for (cJSON *m = o->child; m; m = m->next, i++)
		v[i] = (merge_name){m->string, i, items ? m : NULL};
	qsort(v, n, sizeof *v, merge_name_cmp);
}

/* Apply the members of `patch`, in its order. Each name's member in the
 * target is found once, walking the target's members and the patch's, both
 * sorted: a lookup in the target's list per member made a patch naming K
 * members K^2/2 comparisons (131072 names: 45 s in crud's write
 * transaction). A member the merge adds is not looked up again; a later
 * member of the same name (a patch naming one twice, which the host
 * refuses in a body) finds it through its name's entry, as the lookup did.
 * Of a name a target gives twice (no stored document does), the first. */
static int merge_object(cJSON *target, const cJSON *patch)
{
	size_t nt = members_of(target), np = members_of(patch), t = 0, g, j;
	merge_name *tv, *pv;
	size_t *first; /* the patch's member at i: its name's first in pv */
	const cJSON *m;
	int rc = 0;

	if (!np)
		return 0;
	tv = calloc(nt + np, sizeof *tv);
	first = calloc(np, sizeof *first);
	if (!tv || !first) {
		free(tv);
		free(first);
		return -1;
	}
	pv = tv + nt;
	sort_members(target, tv, nt, 1);
	sort_members(patch, pv, np, 0);
	for (g = 0; g < np; g = j) {
		while (t < nt && strcmp(tv[t].name, pv[g].name) < 0)
			t++;
		if (t < nt && !strcmp(tv[t].name, pv[g].name))
			pv[g].item = tv[t].item;
		for (j = g; j < np && !strcmp(pv[j].name, pv[g].name); j++)
			first[pv[j].at] = g;
	}
	for (j = 0, m = patch->child; !rc && m; m = m->next, j++)
		rc = merge_member(target, m, &pv[first[j]].item);
	free(first);
	free(tv);
	return rc;
}

cJSON *crud_merge_patch(cJSON *target, const cJSON *patch)
{
	if (!cJSON_IsObject(patch)) {
		cJSON_Delete(target);
		return cJSON_Duplicate(patch, 1);
	}
	if (!cJSON_IsObject(target)) {
		cJSON_Delete(target);
		if (!(target = cJSON_CreateObject()))
			return NULL;
	}
	if (merge_object(target, patch) != 0) {
		cJSON_Delete(target);
		return NULL;
	}
	return target;
}

int crud_doc_set_id(cJSON *doc, const char *id)
{
	cJSON *holder, *item;

	while (cJSON_GetObjectItemCaseSensitive(doc, "id"))
		cJSON_DeleteItemFromObjectCaseSensitive(doc, "id");
	/* cJSON names an item only when adding it to an object; borrow one */
	holder = cJSON_CreateObject();
	if (!holder || !cJSON_AddStringToObject(holder, "id", id)) {
		cJSON_Delete(holder);
		return -1;
	}
	item = cJSON_DetachItemFromObjectCaseSensitive(holder, "id");
	cJSON_Delete(holder);
	if (!cJSON_InsertItemInArray(doc, 0, item)) {
		cJSON_Delete(item);
		return -1;
	}
	return 0;
}

int crud_doc_id_compatible(const cJSON *doc, const char *id)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "id");

	return !v || (cJSON_IsString(v) && !strcmp(v->valuestring, id));
}

/* ------------------------------------------------------- HTTP conditions */

int crud_etag_matches(const char *header, int64_t version, int weak)
{
	char want[24];
	size_t wn = (size_t)snprintf(want, sizeof want, "%lld", (long long)version);
	const char *p = header, *end;
	int match = 0;

	for (;;) {
		int is_weak = 0;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			return match;
		if (*p == '*') {
			match = 1;
			p++;
		} else {
			if (p[0] == 'W' && p[1] == '/') {
				is_weak = 1;
				p += 2;
			}
			if (*p != '"' || !(end = strchr(p + 1, '"')))
				return -1;
			if ((weak || !is_weak) && (size_t)(end - p - 1) == wn && !memcmp(p + 1, want, wn))
				match = 1;
			p = end + 1;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p && *p != ',')
			return -1;
	}
}

int crud_media_type_is(const char *content_type, const char *type)
{
	size_t n = strlen(type);

	if (!content_type)
		return 0;
	while (*content_type == ' ' || *content_type == '\t')
		content_type++;
	if (strncasecmp(content_type, type, n) != 0)
		return 0;
	content_type += n;
	return !*content_type || *content_type == ';' || *content_type == ' ' ||
	       *content_type == '\t';
}

/* ---------------------------------------------------------------- filters */

static const char *skip_digits(const char *p)
{
	while (isdigit((unsigned char)*p))
		p++;
	return p;
}

/* A JSON number (RFC 8259 grammar) into f as INT when it is a plain integer
 * that fits, else REAL. -1 when `s` is not a JSON number, -2 when it is one
 * beyond a double's range (1e400), as no stored number is. */
static int parse_number(const char *s, crud_filter *f)
{
	const char *p = s + (*s == '-');
	int integral = 1;
	long long v;
	char *end;

	if (*p == '0')
		p++;
	else if (isdigit((unsigned char)*p))
		p = skip_digits(p);
	else
		return -1;
	if (*p == '.') {
		integral = 0;
		if (!isdigit((unsigned char)p[1]))
			return -1;
		p = skip_digits(p + 1);
	}
	if (*p == 'e' || *p == 'E') {
		integral = 0;
		p += 1 + (p[1] == '+' || p[1] == '-');
		if (!isdigit((unsigned char)*p))
			return -1;
		p = skip_digits(p);
	}
	if (*p)
		return -1;
	errno = 0;
	v = integral ? strtoll(s, &end, 10) : 0;
	/* Exact only below 2^53: a larger integer was stored as the double
	 * the body's parser read it as, so it is looked for as that double. */
	if (integral && errno != ERANGE && fabs((double)v) < CRUD_INT_EXACT) {
		f->kind = CRUD_F_INT;
		f->i = v;
	} else { /* fractions, exponents and integers past 2^53 */
		f->kind = CRUD_F_REAL;
		f->r = strtod(s, NULL);
		if (!isfinite(f->r))
			return -2;
	}
	f->json_type = "integer";
	f->json_type_alt = "real";
	return 0;
}

static int parse_bool(const char *s, crud_filter *f)
{
	if (strcmp(s, "true") && strcmp(s, "false"))
		return -1;
	f->kind = CRUD_F_BOOL;
	f->i = !strcmp(s, "true");
	f->json_type = f->json_type_alt = f->i ? "true" : "false";
	return 0;
}

static void set_text(const char *s, crud_filter *f)
{
	f->kind = CRUD_F_TEXT;
	snprintf(f->text, sizeof f->text, "%s", s);
	f->json_type = f->json_type_alt = "text";
}

/* parse_number for a filter: 0, or -1 with *why set (`not_number`, or the
 * number out of range); `text_else`: a value that is no JSON number is text. */
static int number_filter(const char *value, crud_filter *f, const char **why,
                         const char *not_number, int text_else)
{
	switch (parse_number(value, f)) {
	case 0:
		return 0;
	case -2: /* a number: not its text, which would match a string "1e400" */
		*why = "the filter value is a JSON number beyond the range of stored numbers (a "
		       "double, about 1.8e308): no document holds it";
		return -1;
	default:
		if (!text_else) {
			*why = not_number;
			return -1;
		}
		set_text(value, f);
		return 0;
	}
}

int crud_filter_make(crud_filter *f, const char *field, const char *value, crud_type declared,
                     const char **why)
{
	memset(f, 0, sizeof *f);
	if (!crud_field_name_ok(field)) {
		*why = "filter names must be field names ([A-Za-z0-9_], at most 64)";
		return -1;
	}
	if (strlen(value) > CRUD_FILTER_VALUE_MAX) {
		*why = "filter values must be at most 512 bytes";
		return -1;
	}
	snprintf(f->path, sizeof f->path, "$.%s", field);
	switch (declared) {
	case CRUD_T_STRING:
		set_text(value, f);
		return 0;
	case CRUD_T_NUMBER:
	case CRUD_T_INTEGER:
		return number_filter(value, f, why,
		                     "this field is a number: the filter value must be a JSON number",
		                     0);
	case CRUD_T_BOOLEAN:
		*why = "this field is a boolean: the filter value must be true or false";
		return parse_bool(value, f);
	case CRUD_T_OBJECT:
	case CRUD_T_ARRAY:
		*why = "object and array fields cannot be filtered on";
		return -1;
	case CRUD_T_ANY:
		break;
	}
	return parse_bool(value, f) == 0 ? 0 : number_filter(value, f, why, NULL, 1);
}
