/* Where the last EVH_ETOOBIG on this thread came from. The code means "too
 * big" wherever it arises, but the answer to a route handler that returns
 * it depends on what was: a 413 tells the client to send less, right when
 * what the request carried was too large for Kafka or for the storage, and
 * wrong when the plugin went past a limit of its own (more response
 * headers than the host keeps, a stream event over 64 KiB). The host notes
 * the source where it returns the code, http.c clears the note before each
 * handler and reads it after. A thread-local int: nothing on the hot path
 * but a store. */
#ifndef EVHOST_TOOBIG_H
#define EVHOST_TOOBIG_H

typedef enum toobig_source {
	TOOBIG_UNKNOWN = 0, /* none noted: the plugin's own code, for all the host knows */
	TOOBIG_EVENT,       /* evh_publish: key and data more than a Kafka message carries */
	TOOBIG_STORED,      /* SQLite (SQLITE_TOOBIG): a string or blob over its length limit */
	TOOBIG_READ,        /* the same from a statement that only reads: a stored value past
	                     * the limit (the service's failure, a 500) */
	TOOBIG_HEADERS,     /* evh_resp_header: more headers than a response may have */
	TOOBIG_STREAM,      /* evh_stream_publish: data over STREAM_DATA_MAX */
} toobig_source;

/* Say where the EVH_ETOOBIG about to be returned on this thread came from. */
void toobig_note(toobig_source from);
/* Forget the note (before a handler runs): TOOBIG_UNKNOWN until the next. */
void toobig_clear(void);
/* The last note on this thread since toobig_clear. */
toobig_source toobig_last(void);
#endif
