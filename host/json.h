/* A JSON syntax check that allocates nothing, for text the host only has to
 * vouch for (request bodies before a plugin parses them, event data before
 * it enters the outbox): parsing it into a tree just to delete it cost an
 * allocation per value, on every request and every publish. The duplicate
 * member check of request bodies rides on the same scan. */
#ifndef EVHOST_JSON_H
#define EVHOST_JSON_H
#include <stddef.h>

/* Deepest nesting json_check can follow (cJSON's own limit). */
#define JSON_MAX_DEPTH 1000
/* Deepest a text may nest that cJSON parses on an HTTP worker's stack
 * (civetweb's, 100 KiB): cJSON recurses once per level, and about 550
 * levels overflowed it (the daemon ended on a SIGSEGV); 128 leave room for
 * the caller's own frames, and for sanitizer builds. */
#define JSON_WORKER_DEPTH 128

typedef enum json_status {
	JSON_OK = 0,
	JSON_SYNTAX,   /* not one JSON text (RFC 8259) */
	JSON_TOO_DEEP, /* objects and arrays nested deeper than max_depth */
	JSON_RANGE,    /* a number beyond a double's range (about 1.8e308 in magnitude),
	                  which cJSON would read as infinity and write as null */
	JSON_NUL,      /* \u0000 in a string: cJSON's C strings would end there */
} json_status;

/* Is s[0..n) exactly one JSON value, with optional whitespace around it,
 * nested at most max_depth levels (an object or array is one level; a
 * max_depth above JSON_MAX_DEPTH counts as JSON_MAX_DEPTH)? Strict RFC 8259 grammar:
 * no leading zeros, '+' signs, bare '.5', trailing commas, comments, raw
 * control characters or NUL bytes in strings, nor \u0000 escapes (cJSON
 * would cut the string short there); and no number a double cannot
 * hold (RFC 8259 section 6 lets a parser limit them): the plugins parse with
 * cJSON, which would turn one silently into null. Numbers too small for a
 * double become 0, as any double's rounding. UTF-8 is not checked. On an
 * error, *at (optional) gets the offset of the byte where it was found. */
json_status json_check(const char *s, size_t n, int max_depth, size_t *at);

/* Offset of the first byte of s[0..n) that is not well-formed UTF-8 (RFC
 * 3629: no overlong forms, surrogates or code points past U+10FFFF, no
 * sequence cut short by the end), or -1. JSON exchanged between systems
 * must be UTF-8 (RFC 8259 section 8.1). */
long json_utf8_error(const char *s, size_t n);

/* A copy of the string `s` with each byte that is not part of well-formed
 * UTF-8 replaced by U+FFFD, for text that goes into JSON (RFC 8259 wants
 * UTF-8; a client's parser may refuse the whole document otherwise). NULL
 * when `s` is well-formed (use it as it is), or out of memory (*oom set). */
char *json_utf8_scrub(const char *s, int *oom);

/* The length of the string `s` cut to at most `max` bytes where a character
 * begins, so that a name quoted in an answer stays UTF-8 (a cut inside a
 * character would leave bytes an answer's JSON cannot carry): strlen(s)
 * when that is at most `max`. */
size_t json_utf8_cut(const char *s, size_t max);

/* Whether s[at], where json_check stopped (its *at), is the escape of half
 * a surrogate pair standing without its other half (\ud800): a clearer
 * reason to give than "malformed". */
int json_surrogate_at(const char *s, size_t n, size_t at);

/* Bytes of a member name an answer quotes (json_utf8_cut), marked
 * " (shortened)" when it is longer. */
#define JSON_NAME_SHOWN 100

/* The sentence that refuses a text naming member `name` twice (what
 * json_check_members found), into out[0..size): one sentence for the host's
 * 400 on a plugin's body and the admin API's 422, so they cannot drift. */
void json_duplicate_sentence(const char *name, char *out, size_t size);

/* Does s[0..n), a text json_check accepted, have an object that names a
 * member twice (compared after decoding escapes: "a" and "\u0061" are one
 * name)? RFC 8259 leaves what that means to each parser, and parsers
 * disagree (cJSON takes the first, most others the last): a check made on
 * one value would not hold for the other. 1 with the name copied to `name`
 * (cut to namelen), 0 when every name is unique, -1 out of memory (or for
 * a text json_check refuses). The name is the one json_tree_duplicate_member
 * reports for the tree cJSON parses from s: in the first object (in document
 * order of their opening braces) that has a duplicate, the first name given
 * again later (of the names given twice, the one given first). Scans the
 * text, no tree: allocates only when the objects open at one time hold more
 * than a few dozen names, and for names with escapes (memory linear in the
 * text's length, time n log n at worst). */
int json_duplicate_member(const char *s, size_t n, char *name, size_t namelen);

/* json_check and json_duplicate_member in the one scan: returns what
 * json_check returns (and sets *at alike); when that is JSON_OK, *dup gets
 * what json_duplicate_member returns (the name in `name`), else 0. */
json_status json_check_members(const char *s, size_t n, int max_depth, size_t *at, int *dup,
                               char *name, size_t namelen);

struct cJSON;
/* The same for a tree cJSON already parsed (from such a text: a tree
 * deeper than JSON_MAX_DEPTH is not walked whole), so that a caller that
 * keeps the tree parses once. Allocates (its walk's stack, a sort of the
 * names of an object of more than 8 members): -1 when that fails. */
int json_tree_duplicate_member(const struct cJSON *root, char *name, size_t namelen);

#endif
