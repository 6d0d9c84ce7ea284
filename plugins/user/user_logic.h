/* The user service's pure rules: what a valid name, email and password are,
 * how emails are normalised, the Argon2 cost settings and role lists. No SDK
 * calls, so tests/unit/test_user_logic.c compiles this file in directly.
 * Every check returns 0 when fine, else -1 with *why set to a static
 * sentence fit for a problem+json detail. */
#ifndef EVH_USER_LOGIC_H
#define EVH_USER_LOGIC_H
#include <stddef.h>
#include <stdint.h>

#define USER_EMAIL_MAX 254       /* RFC 5321 path limit */
#define USER_EMAIL_LOCAL_MAX 64
#define USER_NAME_MAX_CHARS 200
#define USER_NAME_MAX_BYTES (USER_NAME_MAX_CHARS * 4)
#define USER_PASSWORD_MAX_BYTES 1024
#define USER_ROLES_MAX 8 /* what a token carries (host's JWT_MAX_ROLES) */
#define USER_ROLE_LEN 32

/* Trim surrounding whitespace, lowercase, and check local@domain.tld:
 * ASCII only, no spaces, one '@', local part of RFC 5322 atom characters
 * and inner dots, domain of LDH labels with a non-numeric top label, at most
 * 254 characters. `out` needs USER_EMAIL_MAX + 1 bytes. */
int user_email_normalize(const char *in, char out[USER_EMAIL_MAX + 1], const char **why);

/* Trim surrounding whitespace; then non-empty, valid UTF-8 without control
 * characters, at most 200 characters. On success *start and *len give the
 * trimmed name inside `in`. */
int user_name_check(const char *in, const char **start, size_t *len, const char **why);

/* At least `min_chars` characters (code points) and at most 1024 bytes of
 * valid UTF-8. */
int user_password_check(const char *pw, long min_chars, const char **why);

/* Number of code points in `n` bytes of UTF-8, or -1 when malformed
 * (overlong forms, surrogates and values past U+10FFFF are malformed). */
long user_utf8_chars(const char *s, size_t n);

/* Argon2id cost settings: "min", "interactive", "moderate", "sensitive"
 * (libsodium's presets) or a number (memlimit in bytes, k/M/G suffixes
 * meaning x1024), within libsodium's bounds. */
int user_argon2_opslimit(const char *s, unsigned long long *out, const char **why);
int user_argon2_memlimit(const char *s, size_t *out, const char **why);
/* Whether `memlimit`, read from `s` (NULL: the default) by
 * user_argon2_memlimit, fits in `phys` bytes, the machine's memory (0:
 * unknown, taken as fitting). Within libsodium's bounds is not enough: a
 * hash cannot have more memory than there is, so the start would fail
 * hashing the dummy password. 0 when it fits; else -1 with the reason,
 * which names the value as written and the machine's memory, in `why`
 * (size bytes; not a static sentence, unlike the checks above). */
int user_argon2_memlimit_fits(const char *s, size_t memlimit, unsigned long long phys, char *why,
                              size_t size);
/* Whether `concurrency` hashes of `memlimit` bytes each, all at once (what
 * hash_concurrency allows), fit in `phys` bytes, the machine's memory (0:
 * unknown, taken as fitting). 0 when they do; else -1 with the reason in
 * `why` (size bytes), naming both values, their product and the memory. */
int user_hash_memory_fits(size_t memlimit, long long concurrency, unsigned long long phys,
                          char *why, size_t size);
/* hash_concurrency's highest value. */
#define USER_HASH_CONCURRENCY_MAX 256
/* hash_concurrency's default: `cores`, but no more hashes than fit in
 * `phys` bytes at `memlimit` each (0 for either: not bounded), nor than
 * USER_HASH_CONCURRENCY_MAX; at least 1. */
long long user_hash_concurrency_default(long long cores, size_t memlimit,
                                        unsigned long long phys);
/* `bytes` in binary units for a message ("23.4 GiB", "64 MiB", "900 B"):
 * a tenth at most, cut rather than rounded, so that a size is never shown
 * as the larger one it falls short of. */
void user_size_text(unsigned long long bytes, char *out, size_t size);

/* Split a stored comma list ("admin,user") into at most USER_ROLES_MAX
 * roles; returns how many. Empty items are skipped, long ones truncated. */
size_t user_roles_split(const char *list, char roles[][USER_ROLE_LEN], size_t max);
/* Whether comma list `list` contains `role` (never an empty one). */
int user_roles_has(const char *list, const char *role);
#endif
