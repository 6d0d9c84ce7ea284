/* Keyset pagination shared by the user and crud plugins: list routes take
 * ?limit=N&cursor=C and answer {"items":[...],"next_cursor":C|null}. A
 * cursor is opaque to clients: base64url (no padding) of the last row's
 * sequence number, so a page never skips or repeats rows when others are
 * inserted or deleted meanwhile. Pure functions, no SDK calls. */
#ifndef EVH_PLUGINS_PAGING_H
#define EVH_PLUGINS_PAGING_H
#include <stddef.h>
#include <stdint.h>

#define PAGING_CURSOR_MAX 32 /* buffer size that fits any encoded cursor */

/* Encode `seq` (> 0). Returns 0, or -1 when `out` is too small. */
int paging_cursor_encode(int64_t seq, char *out, size_t outlen);
/* Decode a client's cursor. Returns 0 with *seq > 0, or -1 when it is not
 * one this code produced. */
int paging_cursor_decode(const char *cursor, int64_t *seq);
/* Parse ?limit: NULL gives `dflt`; otherwise plain decimal digits in
 * 1..max. Returns 0, or -1 when invalid. */
int paging_limit_parse(const char *s, int dflt, int max, int *out);
#endif
