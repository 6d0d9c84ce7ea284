#ifndef EVHOST_RFC3339_H
#define EVHOST_RFC3339_H
#include <stdint.h>

/* RFC 3339 date-time ("2026-01-02T03:04:05.678Z", "...+02:00"; 'T', 't' or
 * ' ' between date and time; 'Z' or 'z') to seconds since the epoch and
 * nanoseconds (the first nine fraction digits; a leap second, :60, reads as
 * the next minute's first). Returns 0, or -1 when it is not one (a day that
 * does not exist, 2026-02-30, included). */
int rfc3339_parse(const char *rfc3339, int64_t *secs, long *nanos);
/* rfc3339_parse in ms since the epoch (the fraction cut to milliseconds). */
int rfc3339_parse_ms(const char *rfc3339, int64_t *ms);

#endif
