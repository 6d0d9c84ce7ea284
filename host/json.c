/* JSON syntax check without allocation (see json.h). One pass, no
 * recursion: the open objects and arrays are a stack of bytes. The same pass
 * can also find a member named twice (json_check_members), keeping the names
 * of the objects open; and the same check on a tree cJSON parsed. */
#include "json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a part of the text is: well formed (1), or why not. */
enum { PART_OK = 1, BAD_SYNTAX = 0, BAD_RANGE = -1, BAD_NUL = -2 };

static json_status status_of(int part)
{
	return part == BAD_RANGE ? JSON_RANGE : part == BAD_NUL ? JSON_NUL : JSON_SYNTAX;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* The four hex digits at s[i..i+4) as a UTF-16 code unit, or -1. */
static long hex4(const char *s, size_t n, size_t i)
{
	long v = 0;
	if (n < 4 || i > n - 4)
		return -1;
	for (size_t k = i; k < i + 4; k++) {
		char c = s[k];
		int d = is_digit(c)               ? c - '0'
		        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
		        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
		                                 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* Are the 8 bytes in `w` plain string text: no quote, no backslash, no
 * control character? Word-at-a-time: (x - 0x01 each) & ~x has a bit 7 set
 * if and only if some byte of x is zero, and (w - 0x20 each) & ~w if and
 * only if some byte of w is below 0x20 (a borrow may mark the bytes above
 * one that matched, never a word with none). */
static int plain8(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
	uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
	uint64_t hit = ((quote - ones) & ~quote) | ((slash - ones) & ~slash) |
	               ((w - ones * 0x20) & ~w);
	return !(hit & high);
}

/* A string whose opening quote is s[*i]: PART_OK with *i past its closing
 * quote, or BAD_SYNTAX (BAD_NUL for a \u0000) with *bad at the offending
 * byte. A \u escape must not leave half of a surrogate pair alone (such a
 * string has no UTF-8 form, and cJSON refuses it). */
static int string(const char *s, size_t n, size_t *i, size_t *bad)
{
	size_t k = *i + 1;
	while (k < n) {
		unsigned char c;
		long u, lo;
		uint64_t w;
		/* Most of a string is plain text: 8 bytes a step while it is. */
		while (n - k >= 8 && (memcpy(&w, s + k, 8), plain8(w)))
			k += 8;
		if (k >= n)
			break;
		c = (unsigned char)s[k];
		if (c == '"') {
			*i = k + 1;
			return 1;
		}
		if (c < 0x20)
			break;
		if (c != '\\') {
			k++;
			continue;
		}
		if (k + 1 >= n) {
			k = n;
			break;
		}
		if (strchr("\"\\/bfnrt", s[k + 1]) && s[k + 1] != '\0') {
			k += 2;
			continue;
		}
		if (s[k + 1] != 'u' || (u = hex4(s, n, k + 2)) < 0 || (u >= 0xdc00 && u <= 0xdfff))
			break;
		if (u == 0) { /* cJSON would end the C string there */
			*bad = k;
			return BAD_NUL;
		}
		k += 6;
		if (u >= 0xd800 && u <= 0xdbff) { /* a low surrogate must follow */
			if (k + 1 >= n || s[k] != '\\' || s[k + 1] != 'u' ||
			    (lo = hex4(s, n, k + 2)) < 0xdc00 || lo > 0xdfff) {
				k -= 6; /* report the high one */
				break;
			}
			k += 6;
		}
	}
	*bad = k < n ? k : n;
	return 0;
}

/* Does the number s[k..end) (JSON's grammar, already checked) lie beyond
 * a double's range, so that strtod, and so cJSON, reads it as infinity
 * (which cJSON then writes as null)? Decided by its decimal magnitude, and
 * at 10^308 by strtod on its first 310 significant digits: the line
 * (2^1024 - 2^970, half way from DBL_MAX to 2^1024, which rounds up) is an
 * integer of 309 digits, so the digits after them cannot carry a number
 * over it. Written without a decimal point, so no locale can misread it. */
static int beyond_double(const char *s, size_t k, size_t end)
{
	char digits[320];
	size_t nd = 0, lead = 0;
	long mag = -1, exp = 0;
	int in_frac = 0, esign = 1;

	if (s[k] == '-')
		k++;
	for (; k < end && s[k] != 'e' && s[k] != 'E'; k++) {
		if (s[k] == '.') {
			in_frac = 1;
			continue;
		}
		if (nd == 0 && s[k] == '0') { /* a leading zero: "0" or "0.00..." */
			lead += in_frac;
			continue;
		}
		if (nd == 0)
			mag = in_frac ? -(long)lead - 1 : 0;
		else if (!in_frac)
			mag++;
		if (nd < sizeof digits - 8)
			digits[nd++] = s[k];
		else
			nd++; /* counted, not kept: past the 310th, they cannot matter */
	}
	if (nd == 0)
		return 0; /* zero */
	if (k < end) {
		k++;
		if (s[k] == '+' || s[k] == '-')
			esign = s[k++] == '-' ? -1 : 1;
		for (; k < end; k++)
			if (exp < 100000)
				exp = exp * 10 + (s[k] - '0');
	}
	mag += esign * exp; /* the number is in [10^mag, 10^(mag + 1)) */
	if (mag != 308)
		return mag > 308;
	if (nd > sizeof digits - 8)
		nd = sizeof digits - 8;
	snprintf(digits + nd, sizeof digits - nd, "e%ld", 308 - (long)(nd - 1));
	return isinf(strtod(digits, NULL));
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? at s[*i]: PART_OK,
 * BAD_SYNTAX, or BAD_RANGE when beyond a double's range (*bad: where). */
static int number(const char *s, size_t n, size_t *i, size_t *bad)
{
	size_t k = *i, int_digits = 0;
	int exponent = 0;
	if (k < n && s[k] == '-')
		k++;
	if (k < n && s[k] == '0') {
		k++;
	} else if (k < n && s[k] >= '1' && s[k] <= '9') {
		while (k < n && is_digit(s[k]))
			k++, int_digits++;
	} else {
		*bad = k;
		return 0;
	}
	if (k < n && s[k] == '.') {
		if (++k >= n || !is_digit(s[k])) {
			*bad = k;
			return 0;
		}
		while (k < n && is_digit(s[k]))
			k++;
	}
	if (k < n && (s[k] == 'e' || s[k] == 'E')) {
		exponent = 1;
		if (++k < n && (s[k] == '+' || s[k] == '-'))
			k++;
		if (k >= n || !is_digit(s[k])) {
			*bad = k;
			return 0;
		}
		while (k < n && is_digit(s[k]))
			k++;
	}
	/* Most numbers: no exponent and under 10^308. */
	if ((exponent || int_digits > 308) && beyond_double(s, *i, k)) {
		*bad = *i;
		return BAD_RANGE;
	}
	*i = k;
	return PART_OK;
}

static int literal(const char *s, size_t n, size_t *i, size_t *bad, const char *word)
{
	size_t len = strlen(word);
	if (n - *i < len || memcmp(s + *i, word, len)) {
		*bad = *i;
		return 0;
	}
	*i += len;
	return 1;
}

/* A string, number or literal at s[*i]: PART_OK, or why not. */
static int scalar(const char *s, size_t n, size_t *i, size_t *bad)
{
	if (*i >= n) {
		*bad = n;
		return 0;
	}
	switch (s[*i]) {
	case '"':
		return string(s, n, i, bad);
	case 't':
		return literal(s, n, i, bad, "true");
	case 'f':
		return literal(s, n, i, bad, "false");
	case 'n':
		return literal(s, n, i, bad, "null");
	default:
		return number(s, n, i, bad);
	}
}

/* The member names of the objects a scan is inside, for json_check_members:
 * a stack of them, each object's above a mark, popped when it closes. An
 * object's names are compared when it closes, as json_tree_duplicate_member
 * compares a tree's children: up to 8 pairwise (the first name given again
 * later), more sorted (the least name given twice, by strcmp). Of the
 * objects that have a duplicate, the walk reports the first to open: one
 * that closes later wins only if it encloses the one found, and those are
 * the objects still open at fewer levels than any object closed since. */
struct member {
	const char *name; /* decoded; NULL for an object's mark */
	size_t len;       /* a mark's: the index of the enclosing object's mark */
	size_t at;        /* its place in the document: a sort keeps names in it */
};

#define NAMES_LOCAL 32 /* entries before the first allocation */

struct names {
	struct member *v, local[NAMES_LOCAL];
	size_t top, cap;
	size_t mark;    /* the innermost open object's, SIZE_MAX outside all */
	unsigned level; /* objects open */
	/* names with escapes, decoded: allocated at the first such name, at
	 * s[i], with n - i bytes, as no name after it decodes longer than it
	 * is written */
	char *dec;
	size_t dec_top;
	int found, oom;
	const char *dup; /* the name to report, when found */
	size_t duplen;
	unsigned dup_level; /* the fewest objects open since: one closing
	                       inside fewer encloses the one found */
};

static void names_init(struct names *nm)
{
	nm->v = nm->local;
	nm->cap = NAMES_LOCAL;
	nm->top = 0;
	nm->mark = SIZE_MAX;
	nm->level = 0;
	nm->dec = NULL;
	nm->dec_top = 0;
	nm->found = nm->oom = 0;
	nm->dup = NULL;
	nm->duplen = 0;
	nm->dup_level = 0;
}

static void names_free(struct names *nm)
{
	if (nm->v != nm->local)
		free(nm->v);
	free(nm->dec);
}

static void names_push(struct names *nm, const char *name, size_t len)
{
	if (nm->top == nm->cap) {
		struct member *v;
		size_t cap = nm->cap * 2;
		if (nm->v == nm->local) {
			if ((v = malloc(cap * sizeof *v)))
				memcpy(v, nm->local, sizeof nm->local);
		} else {
			v = realloc(nm->v, cap * sizeof *v);
		}
		if (!v) {
			nm->oom = 1;
			return;
		}
		nm->v = v;
		nm->cap = cap;
	}
	nm->v[nm->top].name = name;
	nm->v[nm->top].at = nm->top;
	nm->v[nm->top++].len = len;
}

static void names_open(struct names *nm)
{
	if (nm->oom)
		return;
	names_push(nm, NULL, nm->mark);
	nm->mark = nm->top - 1;
	nm->level++;
}

/* A string's text s[0..len) (checked: its escapes are whole) decoded into
 * out as cJSON decodes it; the decoded length, at most len. */
static size_t unescape(const char *s, size_t len, char *out)
{
	size_t o = 0, k = 0;
	while (k < len) {
		long u;
		if (s[k] != '\\') {
			out[o++] = s[k++];
			continue;
		}
		switch (s[k + 1]) {
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u':
			u = hex4(s, len, k + 2);
			k += 6;
			if (u >= 0xd800 && u <= 0xdbff) { /* and its low half */
				u = 0x10000 + ((u & 0x3ff) << 10 | (hex4(s, len, k + 2) & 0x3ff));
				k += 6;
			}
			if (u < 0x80) {
				out[o++] = (char)u;
			} else if (u < 0x800) {
				out[o++] = (char)(0xc0 | u >> 6);
				out[o++] = (char)(0x80 | (u & 0x3f));
			} else if (u < 0x10000) {
				out[o++] = (char)(0xe0 | u >> 12);
				out[o++] = (char)(0x80 | (u >> 6 & 0x3f));
				out[o++] = (char)(0x80 | (u & 0x3f));
			} else {
				out[o++] = (char)(0xf0 | u >> 18);
				out[o++] = (char)(0x80 | (u >> 12 & 0x3f));
				out[o++] = (char)(0x80 | (u >> 6 & 0x3f));
				out[o++] = (char)(0x80 | (u & 0x3f));
			}
			continue;
		default: out[o++] = s[k + 1]; /* " \\ / */
		}
		k += 2;
	}
	return o;
}

/* A member name, the string s[q..end) (quotes included) of the text s[0..n). */
static void names_member(struct names *nm, const char *s, size_t n, size_t q, size_t end)
{
	const char *name = s + q + 1;
	size_t len = end - q - 2;
	if (nm->oom)
		return;
	if (memchr(name, '\\', len)) {
		if (!nm->dec && !(nm->dec = malloc(n - q))) {
			nm->oom = 1;
			return;
		}
		len = unescape(name, len, nm->dec + nm->dec_top);
		name = nm->dec + nm->dec_top;
		nm->dec_top += len;
	}
	names_push(nm, name, len);
}

static int same_name(const struct member *a, const struct member *b)
{
	return a->len == b->len && !memcmp(a->name, b->name, a->len);
}

/* strcmp's order: no name holds a NUL (json_check refuses \u0000 and raw
 * control characters), so a proper prefix is the lesser; one name's
 * members in document order. */
static int member_cmp(const void *pa, const void *pb)
{
	const struct member *a = pa, *b = pb;
	int c = memcmp(a->name, b->name, a->len < b->len ? a->len : b->len);
	if (!c)
		c = (a->len > b->len) - (a->len < b->len);
	return c ? c : (a->at > b->at) - (a->at < b->at);
}

/* The name json_tree_duplicate_member's twice_in reports among the k
 * members m[0..k) (reordered), or NULL: of the names given twice, the one
 * given first. */
static const struct member *twice(struct member *m, size_t k)
{
	const struct member *first = NULL;
	if (k <= 8) {
		for (size_t i = 0; i < k; i++)
			for (size_t j = i + 1; j < k; j++)
				if (same_name(&m[i], &m[j]))
					return &m[i];
		return NULL;
	}
	qsort(m, k, sizeof *m, member_cmp);
	for (size_t i = 1; i < k; i++)
		if (same_name(&m[i - 1], &m[i]) && (i < 2 || !same_name(&m[i - 2], &m[i - 1])) &&
		    (!first || m[i - 1].at < first->at))
			first = &m[i - 1];
	return first;
}

static void names_close(struct names *nm)
{
	size_t mark = nm->mark;
	const struct member *d;
	if (nm->oom)
		return;
	nm->level--; /* now the objects around this one */
	if (!nm->found || nm->level < nm->dup_level) {
		if ((d = twice(nm->v + mark + 1, nm->top - mark - 1))) {
			nm->found = 1;
			nm->dup = d->name;
			nm->duplen = d->len;
		}
		nm->dup_level = nm->level;
	}
	nm->top = mark;
	nm->mark = nm->v[mark].len;
}

/* An object member's name and colon at s[*i]; *i is left at its value.
 * PART_OK, or why not. With nm, the name joins the innermost object's. */
static inline __attribute__((always_inline)) int member_name(const char *s, size_t n, size_t *i,
                                                             size_t *bad, struct names *nm)
{
	size_t q = *i;
	int part;
	if (*i >= n || s[*i] != '"') {
		*bad = *i < n ? *i : n;
		return 0;
	}
	if ((part = string(s, n, i, bad)) != PART_OK)
		return part;
	if (nm)
		names_member(nm, s, n, q, *i);
	*i = skip_ws(s, n, *i);
	if (*i >= n || s[*i] != ':') {
		*bad = *i < n ? *i : n;
		return 0;
	}
	*i = skip_ws(s, n, *i + 1);
	return 1;
}

static char closer(char open) { return open == '{' ? '}' : ']'; }

/* json_check; with nm, json_check_members (the names tracked in *nm). Inlined
 * into both, so that json_check tests no nm. */
static inline __attribute__((always_inline)) json_status scan(const char *s, size_t n,
                                                              int max_depth, size_t *at,
                                                              struct names *nm)
{
	char open[JSON_MAX_DEPTH]; /* '{' or '[' for each level entered */
	int depth = 0, max = max_depth < 0 ? 0 : max_depth, r;
	size_t i = skip_ws(s, n, 0), bad = 0;
	json_status st = JSON_SYNTAX;

	if (max > JSON_MAX_DEPTH)
		max = JSON_MAX_DEPTH;
	for (;;) {
		/* A value begins at s[i]. */
		if (i < n && (s[i] == '{' || s[i] == '[')) {
			if (depth >= max) {
				st = JSON_TOO_DEEP;
				bad = i;
				break;
			}
			open[depth++] = s[i];
			i = skip_ws(s, n, i + 1);
			if (i < n && s[i] == closer(open[depth - 1])) {
				depth--; /* empty: a complete value */
				i++;
			} else if (open[depth - 1] == '[') {
				continue; /* its first element */
			} else {
				if (nm)
					names_open(nm);
				if ((r = member_name(s, n, &i, &bad, nm)) == PART_OK)
					continue; /* its first member's value */
				st = status_of(r);
				break;
			}
		} else if ((r = scalar(s, n, &i, &bad)) != PART_OK) {
			st = status_of(r);
			break;
		}
		/* After a value: close what it completes, then expect the next
		 * element of the innermost container, or the end. */
		for (;;) {
			i = skip_ws(s, n, i);
			if (depth == 0 || i >= n || s[i] != closer(open[depth - 1]))
				break;
			depth--;
			i++;
			if (nm && open[depth] == '{')
				names_close(nm);
		}
		if (depth == 0) {
			if (i == n)
				return JSON_OK;
			bad = i;
			break;
		}
		if (i >= n || s[i] != ',') {
			bad = i < n ? i : n;
			break;
		}
		i = skip_ws(s, n, i + 1);
		if (open[depth - 1] == '{' && (r = member_name(s, n, &i, &bad, nm)) != PART_OK) {
			st = status_of(r);
			break;
		}
	}
	if (at)
		*at = bad;
	return st;
}

json_status json_check(const char *s, size_t n, int max_depth, size_t *at)
{
	return scan(s, n, max_depth, at, NULL);
}

json_status json_check_members(const char *s, size_t n, int max_depth, size_t *at, int *dup,
                               char *name, size_t namelen)
{
	struct names nm;
	json_status st;
	names_init(&nm);
	st = scan(s, n, max_depth, at, &nm);
	*dup = 0;
	if (st == JSON_OK && nm.oom) {
		*dup = -1;
	} else if (st == JSON_OK && nm.found) {
		*dup = 1;
		if (namelen) {
			size_t k = nm.duplen < namelen - 1 ? nm.duplen : namelen - 1;
			memcpy(name, nm.dup, k);
			name[k] = '\0';
		}
	}
	names_free(&nm);
	return st;
}

char *json_utf8_scrub(const char *s, int *oom)
{
	size_t n = strlen(s), o = 0;
	long bad = json_utf8_error(s, n);
	char *out;

	if (bad < 0)
		return NULL;
	/* Each byte becomes at most three. */
	if (n > (SIZE_MAX - 1) / 3 || !(out = malloc(n * 3 + 1))) {
		*oom = 1;
		return NULL;
	}
	while (bad >= 0) {
		memcpy(out + o, s, (size_t)bad);
		o += (size_t)bad;
		memcpy(out + o, "\xef\xbf\xbd", 3);
		o += 3;
		s += bad + 1;
		n -= (size_t)bad + 1;
		bad = json_utf8_error(s, n);
	}
	memcpy(out + o, s, n + 1);
	return out;
}

int json_surrogate_at(const char *s, size_t n, size_t at)
{
	char hex[5];
	unsigned long u;

	if (at >= n || n - at < 6 || s[at] != '\\' || s[at + 1] != 'u')
		return 0;
	memcpy(hex, s + at + 2, 4);
	hex[4] = '\0';
	if (strspn(hex, "0123456789abcdefABCDEF") != 4)
		return 0;
	u = strtoul(hex, NULL, 16);
	return u >= 0xd800 && u <= 0xdfff;
}

size_t json_utf8_cut(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n <= max)
		return n;
	/* Back over the continuation bytes (top two bits 10) of the character
	 * that s[max] is part of: the cut falls where it begins. */
	for (n = max; n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; n--)
		;
	return n;
}

void json_duplicate_sentence(const char *name, char *out, size_t size)
{
	size_t n = json_utf8_cut(name, JSON_NAME_SHOWN);

	snprintf(out, size,
	         "the member name \"%.*s\"%s appears twice in one object (parsers disagree on "
	         "which value counts)",
	         (int)n, name, name[n] ? " (shortened)" : "");
}

long json_utf8_error(const char *text, size_t n)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0;
	while (i < n) {
		unsigned c, need, min, cp;
		uint64_t w;
		/* ASCII, 8 bytes a step while it lasts */
		while (n - i >= 8 && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080u)))
			i += 8;
		if (i >= n)
			break;
		c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			need = 1, min = 0x80, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2, min = 0x800, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3, min = 0x10000, cp = c & 0x07;
		else
			return (long)i;
		if (i + need >= n)
			return (long)i;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return (long)i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return (long)i;
		i += need + 1;
	}
	return -1;
}

struct tree_name {
	const char *s;
	size_t at; /* its member's place in the object */
};

static int tree_name_cmp(const void *pa, const void *pb)
{
	const struct tree_name *a = pa, *b = pb;
	int c = strcmp(a->s, b->s);
	return c ? c : (a->at > b->at) - (a->at < b->at);
}

/* Of the member names given twice among the children of `o`, the one
 * given first, or NULL; *oom set when the sort needed memory it did not
 * get. */
static const char *twice_in(const cJSON *o, int *oom)
{
	struct tree_name *names;
	const char *dup = NULL;
	size_t k = 0, i = 0, dup_at = 0;
	const cJSON *c;
	for (c = o->child; c; c = c->next)
		k++;
	if (k <= 8) { /* the usual body: a few members, no allocation */
		for (c = o->child; c && !dup; c = c->next)
			for (const cJSON *d = c->next; d && !dup; d = d->next)
				if (!strcmp(c->string, d->string))
					dup = c->string;
		return dup;
	}
	if (!(names = malloc(k * sizeof *names))) {
		*oom = 1;
		return NULL;
	}
	for (c = o->child; c; c = c->next, i++)
		names[i] = (struct tree_name){c->string, i};
	qsort(names, k, sizeof *names, tree_name_cmp);
	for (i = 1; i < k; i++)
		if (!strcmp(names[i - 1].s, names[i].s) &&
		    (i < 2 || strcmp(names[i - 2].s, names[i - 1].s)) &&
		    (!dup || names[i - 1].at < dup_at)) {
			dup = names[i - 1].s;
			dup_at = names[i - 1].at;
		}
	free(names);
	return dup;
}

#define STACK_MAX (2 * (JSON_MAX_DEPTH + 2))

int json_duplicate_member(const char *s, size_t n, char *name, size_t namelen)
{
	int dup;
	if (json_check_members(s, n, JSON_MAX_DEPTH, NULL, &dup, name, namelen) != JSON_OK)
		return -1; /* not a text json_check accepts: no answer */
	return dup;
}

int json_tree_duplicate_member(const struct cJSON *root, char *name, size_t namelen)
{
	const cJSON **stack;
	size_t top = 0;
	int rc = 0, oom = 0;
	/* Depth-first without recursion (a worker's stack is small). A popped
	 * node pushes its next sibling and its first child: at most two
	 * entries per level of nesting wait at a time. */
	if (!(stack = malloc(STACK_MAX * sizeof *stack)))
		return -1;
	stack[top++] = root;
	while (top && !rc && !oom) {
		const cJSON *v = stack[--top];
		const char *dup;
		if (cJSON_IsObject(v) && (dup = twice_in(v, &oom))) {
			snprintf(name, namelen, "%s", dup);
			rc = 1;
		}
		/* The next sibling waits under the first child. */
		if (v != root && v->next && top < STACK_MAX)
			stack[top++] = v->next;
		if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && v->child && top < STACK_MAX)
			stack[top++] = v->child;
	}
	free(stack);
	return oom ? -1 : rc;
}
