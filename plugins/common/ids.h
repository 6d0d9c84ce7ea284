/* Identifiers and timestamps for the records plugins keep. Pure functions
 * (libsodium's randombytes for uuids, the clock for times) with no SDK
 * calls, so unit tests can compile ids.c in directly. Thread-safe. */
#ifndef EVH_PLUGINS_IDS_H
#define EVH_PLUGINS_IDS_H

#define IDS_UUID_LEN 36 /* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */
#define IDS_TIME_LEN 24 /* "2026-01-02T03:04:05.678Z" */

/* A random (version 4) UUID, lowercase, NUL-terminated. Call sodium_init()
 * once before first use. */
void ids_uuid_v4(char out[IDS_UUID_LEN + 1]);
/* A time-ordered (version 7) UUID: 48 bits of Unix milliseconds, then 74
 * random bits. Rows keyed by it are appended near the end of their index
 * instead of dirtying a random page each; it tells when the id was made. */
void ids_uuid_v7(char out[IDS_UUID_LEN + 1]);
/* The current UTC time, RFC 3339 with milliseconds. */
void ids_now_rfc3339(char out[IDS_TIME_LEN + 1]);
#endif
