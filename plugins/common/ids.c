/* See ids.h. */
#include "ids.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <sodium.h>

static void uuid_format(const unsigned char b[16], char out[IDS_UUID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0x0f];
	}
	out[o] = '\0';
}

void ids_uuid_v4(char out[IDS_UUID_LEN + 1])
{
	unsigned char b[16];
	randombytes_buf(b, sizeof b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	uuid_format(b, out);
}

void ids_uuid_v7(char out[IDS_UUID_LEN + 1])
{
	unsigned char b[16];
	struct timespec ts;
	uint64_t ms;
	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	randombytes_buf(b + 6, sizeof b - 6);
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x70); /* version 7 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
	uuid_format(b, out);
}

void ids_now_rfc3339(char out[IDS_TIME_LEN + 1])
{
	struct timespec ts;
	struct tm tm;
	char date[20];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, IDS_TIME_LEN + 1, "%.19s.%03uZ", date,
	         (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}
