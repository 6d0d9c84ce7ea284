/* RFC 3339 date-times, read by evhostd (replay's from, an outbox row's
 * time), by evhostctl (replay --from, checked before it is sent) and by
 * notifications.so (a user event's ce_time, which orders its updates). */
#include "rfc3339.h"

#include <string.h>
#include <time.h>

static int digits(const char **s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++, (*s)++) {
		if (**s < '0' || **s > '9')
			return -1;
		v = v * 10 + (**s - '0');
	}
	return v;
}

static int days_in_month(int y, int mo)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) ? 29 : days[mo - 1];
}

/* A day that does not exist (2026-02-30) is refused, not read as the one
 * timegm would make of it (March 2nd). */
int rfc3339_parse(const char *s, int64_t *secs, long *nanos)
{
	struct tm tm;
	int y, mo, d, hh, mi, ss, tz = 0;
	long frac = 0;
	time_t t;
	memset(&tm, 0, sizeof tm);
	if ((y = digits(&s, 4)) < 0 || *s++ != '-' || (mo = digits(&s, 2)) < 1 || mo > 12 ||
	    *s++ != '-' || (d = digits(&s, 2)) < 1 || d > days_in_month(y, mo) ||
	    (*s != 'T' && *s != 't' && *s != ' '))
		return -1;
	s++;
	if ((hh = digits(&s, 2)) < 0 || hh > 23 || *s++ != ':' || (mi = digits(&s, 2)) < 0 ||
	    mi > 59 || *s++ != ':' || (ss = digits(&s, 2)) < 0 || ss > 60)
		return -1;
	if (*s == '.') {
		int n = 0;
		for (s++; *s >= '0' && *s <= '9'; s++, n++)
			if (n < 9)
				frac = frac * 10 + (*s - '0');
		if (!n)
			return -1;
		for (; n < 9; n++)
			frac *= 10;
	}
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		int sign = *s++ == '-' ? -1 : 1, th, tm_;
		if ((th = digits(&s, 2)) < 0 || th > 23 || *s++ != ':' ||
		    (tm_ = digits(&s, 2)) < 0 || tm_ > 59)
			return -1;
		tz = sign * (th * 3600 + tm_ * 60);
	} else {
		return -1;
	}
	if (*s)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = hh;
	tm.tm_min = mi;
	tm.tm_sec = ss;
	t = timegm(&tm);
	*secs = (int64_t)t - tz;
	*nanos = frac;
	return 0;
}

int rfc3339_parse_ms(const char *s, int64_t *ms)
{
	int64_t secs;
	long nanos;
	if (rfc3339_parse(s, &secs, &nanos) != 0)
		return -1;
	*ms = secs * 1000 + nanos / 1000000;
	return 0;
}
