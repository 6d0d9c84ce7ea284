/* HTTP routing as a tree of path segments. Each node has literal children
 * and at most one capture child; routes hang off the node their pattern
 * ends at, one per method. Patterns that differ only in capture names end at
 * the same node, which is how duplicates are caught. A lookup walks the tree
 * depth first, literal child before capture child, and stops at the first
 * node that has a route for the method; that gives "literal wins" with
 * backtracking (GET /users/me and DELETE /users/{id} can coexist). */
#include "router.h"
#include "json.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTER_MAX_METHOD 16
#define ROUTER_MAX_PATTERN 1024
#define ROUTER_MAX_SEGMENTS 32
#define ROUTER_MAX_PATH 8192

typedef struct rroute {
	char method[ROUTER_MAX_METHOD + 1];
	char *pattern;
	void *target;
	void *owner;
	size_t nnames;
	char *names[ROUTER_MAX_PARAMS]; /* in segment order */
	struct rroute *next;
} rroute;

typedef struct rnode {
	char *lit; /* NULL for the root and capture nodes */
	struct rnode **kids;
	size_t nkids;
	struct rnode *cap;
	rroute *routes;
} rnode;

struct router {
	pthread_rwlock_t lock;
	rnode root;
};

/* A request path split into decoded segments (pointers into buf). */
typedef struct rpath {
	char *buf;
	char *seg[ROUTER_MAX_SEGMENTS];
	size_t nseg;
} rpath;

router *router_new(void)
{
	router *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	if (pthread_rwlock_init(&r->lock, NULL) != 0) {
		free(r);
		return NULL;
	}
	return r;
}

static void route_free(rroute *rt)
{
	for (size_t i = 0; i < rt->nnames; i++)
		free(rt->names[i]);
	free(rt->pattern);
	free(rt);
}

static void node_clear(rnode *n)
{
	while (n->routes) {
		rroute *next = n->routes->next;
		route_free(n->routes);
		n->routes = next;
	}
	for (size_t i = 0; i < n->nkids; i++) {
		node_clear(n->kids[i]);
		free(n->kids[i]);
	}
	free(n->kids);
	n->kids = NULL;
	n->nkids = 0;
	if (n->cap) {
		node_clear(n->cap);
		free(n->cap);
		n->cap = NULL;
	}
	free(n->lit);
	n->lit = NULL;
}

void router_free(router *r)
{
	if (!r)
		return;
	node_clear(&r->root);
	pthread_rwlock_destroy(&r->lock);
	free(r);
}

/* ------------------------------------------------------------ patterns */

static int is_name_start(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

/* Characters a literal segment may not hold: they would never arrive
 * decoded in a path, or they belong to URL syntax rather than the path. */
static int is_bad_literal_char(unsigned char c)
{
	return c <= 0x20 || c == 0x7f || c == '{' || c == '}' || c == '%' || c == '?' ||
	       c == '#';
}

/* Check one segment [s, s+len). Returns NULL or a static message; sets
 * *is_cap for a {name} segment. */
static const char *segment_error(const char *s, size_t len, int *is_cap)
{
	*is_cap = 0;
	if (len == 0)
		return "empty path segment (double or trailing '/')";
	if (s[0] == '{') {
		if (len < 3 || s[len - 1] != '}')
			return "capture must be a whole segment written {name}";
		if (!is_name_start(s[1]))
			return "capture name must match [A-Za-z_][A-Za-z0-9_]*";
		for (size_t i = 2; i < len - 1; i++)
			if (!is_name_char(s[i]))
				return "capture name must match [A-Za-z_][A-Za-z0-9_]*";
		*is_cap = 1;
		return NULL;
	}
	for (size_t i = 0; i < len; i++)
		if (is_bad_literal_char((unsigned char)s[i]))
			return "literal segment contains a space, a control character or "
			       "one of {}%?#";
	return NULL;
}

/* Whether the capture [s, s+len) ("{name}") names the same as an earlier one. */
static int capture_repeats(const char *pattern, const char *s, size_t len)
{
	const char *p = pattern;
	while (p < s) {
		const char *open = strchr(p, '{');
		if (!open || open >= s)
			return 0;
		const char *close = strchr(open, '}');
		if ((size_t)(close - open + 1) == len && !memcmp(open, s, len))
			return 1;
		p = close + 1;
	}
	return 0;
}

const char *router_pattern_error(const char *pattern)
{
	size_t ncap = 0, nseg = 0;
	if (!pattern || pattern[0] != '/')
		return "pattern must start with '/'";
	if (strlen(pattern) > ROUTER_MAX_PATTERN)
		return "pattern is longer than 1024 characters";
	/* It is the route label of /metrics, which Prometheus refuses whole
	 * for one label that is not UTF-8 (say, a Latin-1 source's "/café"). */
	if (json_utf8_error(pattern, strlen(pattern)) >= 0)
		return "pattern is not UTF-8";
	if (!strcmp(pattern, "/"))
		return NULL;
	const char *s = pattern + 1;
	for (;;) {
		const char *slash = strchr(s, '/');
		size_t len = slash ? (size_t)(slash - s) : strlen(s);
		int is_cap;
		const char *e = segment_error(s, len, &is_cap);
		if (e)
			return e;
		if (++nseg > ROUTER_MAX_SEGMENTS)
			return "pattern has more than 32 segments";
		if (is_cap) {
			if (++ncap > ROUTER_MAX_PARAMS)
				return "pattern has more than 8 captures";
			if (capture_repeats(pattern, s, len))
				return "capture name used twice in one pattern";
		}
		if (!slash)
			return NULL;
		s = slash + 1;
	}
}

static const char *method_error(const char *method)
{
	size_t n;
	if (!method || !*method)
		return "method is empty";
	n = strlen(method);
	if (n > ROUTER_MAX_METHOD)
		return "method is longer than 16 characters";
	for (size_t i = 0; i < n; i++)
		if (method[i] < 'A' || method[i] > 'Z')
			return "method must be upper-case letters (GET, POST, ...)";
	return NULL;
}

const char *router_route_error(const char *method, const char *pattern)
{
	const char *e = method_error(method);
	return e ? e : router_pattern_error(pattern);
}

/* ----------------------------------------------------------------- add */

static rnode *kid_literal(rnode *n, const char *lit, size_t len)
{
	for (size_t i = 0; i < n->nkids; i++)
		if (strlen(n->kids[i]->lit) == len && !memcmp(n->kids[i]->lit, lit, len))
			return n->kids[i];
	return NULL;
}

static rnode *kid_get_or_add(rnode *n, const char *seg, size_t len, int is_cap)
{
	rnode *k, **kids;
	if (is_cap) {
		if (!n->cap)
			n->cap = calloc(1, sizeof *n->cap);
		return n->cap;
	}
	k = kid_literal(n, seg, len);
	if (k)
		return k;
	kids = realloc(n->kids, (n->nkids + 1) * sizeof *kids);
	if (!kids)
		return NULL;
	n->kids = kids;
	k = calloc(1, sizeof *k);
	if (!k)
		return NULL;
	k->lit = strndup(seg, len);
	if (!k->lit) {
		free(k);
		return NULL;
	}
	n->kids[n->nkids++] = k;
	return k;
}

/* Remove nodes left without routes or children (after a failed add or a
 * removal). Returns 1 when `n` itself is now empty. */
static int node_prune(rnode *n)
{
	size_t w = 0;
	for (size_t i = 0; i < n->nkids; i++) {
		if (node_prune(n->kids[i])) {
			free(n->kids[i]->lit);
			free(n->kids[i]);
		} else {
			n->kids[w++] = n->kids[i];
		}
	}
	n->nkids = w;
	if (w == 0) {
		free(n->kids);
		n->kids = NULL;
	}
	if (n->cap && node_prune(n->cap)) {
		free(n->cap);
		n->cap = NULL;
	}
	return !n->routes && !n->nkids && !n->cap;
}

static rroute *route_new(const char *method, const char *pattern, void *target, void *owner)
{
	rroute *rt = calloc(1, sizeof *rt);
	const char *s = pattern;
	if (!rt)
		return NULL;
	snprintf(rt->method, sizeof rt->method, "%s", method);
	rt->target = target;
	rt->owner = owner;
	rt->pattern = strdup(pattern);
	if (!rt->pattern)
		goto fail;
	while ((s = strchr(s, '{')) != NULL) {
		const char *close = strchr(s, '}');
		rt->names[rt->nnames] = strndup(s + 1, (size_t)(close - s - 1));
		if (!rt->names[rt->nnames])
			goto fail;
		rt->nnames++;
		s = close + 1;
	}
	return rt;
fail:
	route_free(rt);
	return NULL;
}

static rroute *node_route(rnode *n, const char *method)
{
	for (rroute *rt = n->routes; rt; rt = rt->next)
		if (!strcmp(rt->method, method))
			return rt;
	return NULL;
}

/* Walk the nodes of a valid pattern, creating those missing with
 * `create`. NULL on allocation failure, or (without `create`) when a node
 * is missing. */
static rnode *node_for_pattern(rnode *root, const char *pattern, int create)
{
	rnode *n = root;
	const char *s = pattern + 1;
	if (!strcmp(pattern, "/"))
		return root;
	for (;;) {
		const char *slash = strchr(s, '/');
		size_t len = slash ? (size_t)(slash - s) : strlen(s);
		if (create)
			n = kid_get_or_add(n, s, len, s[0] == '{');
		else
			n = s[0] == '{' ? n->cap : kid_literal(n, s, len);
		if (!n || !slash)
			return n;
		s = slash + 1;
	}
}

void *router_holder(router *r, const char *method, const char *pattern)
{
	rnode *n;
	rroute *rt;
	void *owner = NULL;

	pthread_rwlock_rdlock(&r->lock);
	n = node_for_pattern(&r->root, pattern, 0);
	if (n && (rt = node_route(n, method)))
		owner = rt->owner;
	pthread_rwlock_unlock(&r->lock);
	return owner;
}

int router_add(router *r, const char *method, const char *pattern, void *target, void *owner,
               char *err, size_t errlen)
{
	const char *e = method_error(method);
	rnode *n;
	rroute *rt, *dup;
	int rc = -1;
	if (e) {
		snprintf(err, errlen, "route %s %s: %s", method ? method : "(null)",
		         pattern ? pattern : "(null)", e);
		return -1;
	}
	e = router_pattern_error(pattern);
	if (e) {
		snprintf(err, errlen, "route %s %s: %s", method, pattern ? pattern : "(null)", e);
		return -1;
	}
	pthread_rwlock_wrlock(&r->lock);
	n = node_for_pattern(&r->root, pattern, 1);
	if (!n) {
		snprintf(err, errlen, "route %s %s: out of memory", method, pattern);
		rc = -2;
		goto out;
	}
	dup = node_route(n, method);
	if (dup) {
		if (!strcmp(dup->pattern, pattern))
			snprintf(err, errlen, "route %s %s already registered", method, pattern);
		else
			snprintf(err, errlen, "route %s %s conflicts with %s %s (same path)",
			         method, pattern, method, dup->pattern);
		goto out;
	}
	rt = route_new(method, pattern, target, owner);
	if (!rt) {
		snprintf(err, errlen, "route %s %s: out of memory", method, pattern);
		rc = -2;
		goto out;
	}
	rt->next = n->routes;
	n->routes = rt;
	rc = 0;
out:
	if (rc != 0)
		node_prune(&r->root);
	pthread_rwlock_unlock(&r->lock);
	return rc;
}

int router_replace(router *r, const char *method, const char *pattern, void *old_owner,
                   void *target, void *owner, char *err, size_t errlen)
{
	rroute *rt, **pp;
	rnode *n;
	int rc = -1;
	if (method_error(method) || router_pattern_error(pattern)) {
		snprintf(err, errlen, "route %s %s: not a route", method ? method : "(null)",
		         pattern ? pattern : "(null)");
		return -1;
	}
	/* Made before anything changes: what follows cannot fail for memory. */
	if (!(rt = route_new(method, pattern, target, owner))) {
		snprintf(err, errlen, "route %s %s: out of memory", method, pattern);
		return -2;
	}
	pthread_rwlock_wrlock(&r->lock);
	/* The old route's nodes exist: the walk finds them, creating none. */
	n = node_for_pattern(&r->root, pattern, 1);
	for (pp = n ? &n->routes : NULL; pp && *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->method, method) && (*pp)->owner == old_owner) {
			rroute *old = *pp;
			rt->next = old->next;
			*pp = rt;
			route_free(old);
			rt = NULL;
			rc = 0;
			break;
		}
	}
	if (rc != 0) {
		node_prune(&r->root);
		snprintf(err, errlen, "route %s %s: nothing to replace", method, pattern);
	}
	pthread_rwlock_unlock(&r->lock);
	if (rt)
		route_free(rt);
	return rc;
}

static void node_remove_owner(rnode *n, void *owner)
{
	rroute **pp = &n->routes;
	while (*pp) {
		rroute *rt = *pp;
		if (rt->owner == owner) {
			*pp = rt->next;
			route_free(rt);
		} else {
			pp = &rt->next;
		}
	}
	for (size_t i = 0; i < n->nkids; i++)
		node_remove_owner(n->kids[i], owner);
	if (n->cap)
		node_remove_owner(n->cap, owner);
}

void router_remove_owner(router *r, void *owner)
{
	pthread_rwlock_wrlock(&r->lock);
	node_remove_owner(&r->root, owner);
	node_prune(&r->root);
	pthread_rwlock_unlock(&r->lock);
}

/* --------------------------------------------------------------- match */

int router_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode in place. -1 on a bad escape or an encoded NUL. */
static int decode_inplace(char *s)
{
	char *w = s;
	for (const char *p = s; *p; p++) {
		if (*p != '%') {
			*w++ = *p;
			continue;
		}
		int hi = router_hexval(p[1]), lo = hi < 0 ? -1 : router_hexval(p[2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			return -1;
		*w++ = (char)(hi * 16 + lo);
		p += 2;
	}
	*w = '\0';
	return 0;
}

/* Split a request path into decoded segments. One trailing '/' is
 * tolerated; other empty segments make the path unroutable (-1); -2: out
 * of memory. */
static int path_split(const char *path, rpath *rp)
{
	size_t len;
	char *s;
	rp->nseg = 0;
	rp->buf = NULL;
	if (!path || path[0] != '/')
		return -1;
	len = strlen(path);
	if (len > ROUTER_MAX_PATH)
		return -1;
	rp->buf = strdup(path + 1);
	if (!rp->buf)
		return -2;
	len = strlen(rp->buf);
	if (len > 0 && rp->buf[len - 1] == '/')
		rp->buf[--len] = '\0';
	if (len == 0)
		return 0;
	s = rp->buf;
	for (;;) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = '\0';
		if (!*s || rp->nseg == ROUTER_MAX_SEGMENTS || decode_inplace(s) < 0)
			return -1;
		rp->seg[rp->nseg++] = s;
		if (!slash)
			return 0;
		s = slash + 1;
	}
}

static rroute *route_for_method(rnode *n, const char *method)
{
	rroute *rt = node_route(n, method);
	if (!rt && !strcmp(method, "HEAD"))
		rt = node_route(n, "GET");
	return rt;
}

/* Depth-first search in precedence order. Returns the first route for
 * `method`; sets *path_hit when any node with routes matched the whole path. */
static rroute *search(rnode *n, const rpath *rp, size_t i, const char *method, int *path_hit)
{
	rnode *k;
	rroute *rt;
	if (i == rp->nseg) {
		if (n->routes)
			*path_hit = 1;
		return route_for_method(n, method);
	}
	k = kid_literal(n, rp->seg[i], strlen(rp->seg[i]));
	if (k && (rt = search(k, rp, i + 1, method, path_hit)) != NULL)
		return rt;
	if (n->cap)
		return search(n->cap, rp, i + 1, method, path_hit);
	return NULL;
}

/* Collect the methods of every node that matches the whole path. */
static void collect_methods(rnode *n, const rpath *rp, size_t i, const char **methods,
                            size_t *nm, size_t cap)
{
	rnode *k;
	if (i == rp->nseg) {
		for (rroute *rt = n->routes; rt; rt = rt->next) {
			size_t j;
			for (j = 0; j < *nm && strcmp(methods[j], rt->method); j++)
				;
			if (j == *nm && *nm < cap)
				methods[(*nm)++] = rt->method;
		}
		return;
	}
	k = kid_literal(n, rp->seg[i], strlen(rp->seg[i]));
	if (k)
		collect_methods(k, rp, i + 1, methods, nm, cap);
	if (n->cap)
		collect_methods(n->cap, rp, i + 1, methods, nm, cap);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void allow_list(rnode *root, const rpath *rp, char *allow, size_t allowlen)
{
	const char *methods[64];
	size_t nm = 0, used = 0;
	if (!allow || allowlen == 0)
		return;
	allow[0] = '\0';
	collect_methods(root, rp, 0, methods, &nm, sizeof methods / sizeof *methods);
	/* A GET route answers HEAD too (route_for_method): say so (RFC 9110
	 * section 10.2.1 lists every method the resource supports). */
	for (size_t j = 0; j < nm; j++)
		if (!strcmp(methods[j], "GET")) {
			size_t k;
			for (k = 0; k < nm && strcmp(methods[k], "HEAD"); k++)
				;
			if (k == nm && nm < sizeof methods / sizeof *methods)
				methods[nm++] = "HEAD";
			break;
		}
	qsort(methods, nm, sizeof *methods, cmp_str);
	for (size_t j = 0; j < nm; j++) {
		int w = snprintf(allow + used, allowlen - used, "%s%s", j ? ", " : "", methods[j]);
		if (w < 0 || (size_t)w >= allowlen - used) {
			allow[used] = '\0'; /* keep whole method names only */
			return;
		}
		used += (size_t)w;
	}
}

/* Which segments of `pattern` are captures, in order. */
static size_t capture_positions(const char *pattern, size_t *pos)
{
	size_t n = 0, seg = 0;
	for (const char *s = pattern + 1; *s; seg++) {
		if (*s == '{')
			pos[n++] = seg;
		s = strchr(s, '/');
		if (!s)
			break;
		s++;
	}
	return n;
}

static int fill_params(const rroute *rt, const rpath *rp, route_match *m)
{
	size_t pos[ROUTER_MAX_PARAMS];
	size_t n = capture_positions(rt->pattern, pos);
	for (size_t i = 0; i < n && i < rt->nnames; i++) {
		m->names[i] = strdup(rt->names[i]);
		m->values[i] = strdup(rp->seg[pos[i]]);
		m->nparams = i + 1;
		if (!m->names[i] || !m->values[i])
			return -1;
	}
	return 0;
}

router_result router_match(router *r, const char *method, const char *path, route_match *m,
                           char *allow, size_t allowlen)
{
	rpath rp = {0};
	rroute *rt;
	int path_hit = 0;
	router_result res = ROUTER_NOT_FOUND;
	int split = 0;
	memset(m, 0, sizeof *m);
	if (allow && allowlen)
		allow[0] = '\0';
	if (!method || (split = path_split(path, &rp)) < 0) {
		free(rp.buf);
		return split == -2 ? ROUTER_NO_MEMORY : ROUTER_NOT_FOUND;
	}
	pthread_rwlock_rdlock(&r->lock);
	rt = search(&r->root, &rp, 0, method, &path_hit);
	if (rt) {
		m->target = rt->target;
		/* Out of memory while copying params: say so rather than hand
		 * the handler a half-filled match (or the client a 404). */
		if (fill_params(rt, &rp, m) == 0) {
			res = ROUTER_FOUND;
		} else {
			route_match_free(m);
			res = ROUTER_NO_MEMORY;
		}
	} else if (path_hit) {
		allow_list(&r->root, &rp, allow, allowlen);
		res = ROUTER_METHOD_NOT_ALLOWED;
	}
	pthread_rwlock_unlock(&r->lock);
	free(rp.buf);
	return res;
}

void route_match_free(route_match *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nparams; i++) {
		free(m->names[i]);
		free(m->values[i]);
	}
	memset(m, 0, sizeof *m);
}
