/* Durations as the configuration writes them ("7d", "30m", "500ms"): the
 * one syntax the host's duration keys and the plugins' (notifications.so's
 * log_retention) take. Pure, no SDK calls: plugins and unit tests compile
 * duration.c in, as they do topics.c. */
#ifndef EVHOST_DURATION_H
#define EVHOST_DURATION_H
#include <stdint.h>

/* `v` as milliseconds into *ms: a whole number with a unit ms, s, m, h or
 * d, or a bare number (seconds). 0, or -1 on anything else (a sign, a
 * space, a fraction, an unknown unit, more than int64 milliseconds). The
 * range is each key's to check. */
int duration_parse_ms(const char *v, int64_t *ms);
#endif
