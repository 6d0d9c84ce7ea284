/* libFuzzer: RFC 3339 date-times as evhostd reads them from clients (the
 * admin replay's "from") and from outbox rows (rfc3339_parse_ms). Checked:
 * what it accepts is a time that, written back in UTC with milliseconds, is
 * accepted again as the same instant (no day that does not exist is read as
 * another one); a text with anything after an accepted one is refused. */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz_modes.h"
#include "rfc3339.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 2), again[64];
	int64_t ms, ms2;
	if (!s || memchr(data, '\0', size)) { /* callers pass C strings */
		free(s);
		return 0;
	}
	memcpy(s, data, size);
	s[size] = '\0';
	if (rfc3339_parse_ms(s, &ms) == 0) {
		time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
		struct tm tm;
		if (gmtime_r(&t, &tm) && tm.tm_year + 1900 >= 0 && tm.tm_year + 1900 <= 9999) {
			snprintf(again, sizeof again, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			         tm.tm_sec, (int)(ms - (int64_t)t * 1000));
			CHECK(rfc3339_parse_ms(again, &ms2) == 0 && ms2 == ms);
		}
		s[size] = 'x';
		s[size + 1] = '\0';
		CHECK(rfc3339_parse_ms(s, &ms2) != 0);
	}
	free(s);
	return 0;
}
