/* Outbox relay: one thread that moves rows from every plugin's evh_outbox to
 * Kafka, woken by store commits (no polling delay), in seq order per plugin,
 * deleting each row only when its delivery report says it was acknowledged. */
#ifndef EVHOST_OUTBOX_H
#define EVHOST_OUTBOX_H
#include "kafka.h"
#include "plugins.h"

typedef struct outbox outbox;

/* Under load a plugin's rows go out in waves (see outbox.c): from
 * OUTBOX_WAVE_ENTER rows in flight at once, the rows pending (at most
 * OUTBOX_WAVE_MAX) only once the previous wave is acknowledged; a wave of
 * fewer than OUTBOX_WAVE_EXIT rows ends that. */
#define OUTBOX_WAVE_ENTER 64
#define OUTBOX_WAVE_EXIT 8
#define OUTBOX_WAVE_MAX 5000

int outbox_start(outbox **o, kafka *k, const char *source);
/* Start relaying this plugin's store (hooks its commits). 0, or -1 out of
 * memory: the plugin must not run, its events would never leave. */
int outbox_add_plugin(outbox *o, evh_plugin *p);
void outbox_remove_plugin(outbox *o, evh_plugin *p);
/* Wake the relay (commit hook). */
void outbox_wake(void *o);
/* Stop: relay what is pending until empty or timeout_ms, then join. Returns
 * the number of rows left undelivered across plugins. */
int64_t outbox_stop(outbox *o, int timeout_ms);
/* For tests: how long an idle relay sleeps between looks at the outbox when
 * no commit wakes it (500 ms; <= 0 restores that). Lengthened, it shows
 * that no row waits for that look. */
void outbox_set_idle_wait_ms(int ms);
/* For tests: how long the relay waits in the producer's poll for delivery
 * reports while events are in flight (10 ms; <= 0 restores that).
 * Lengthened, it shows that a commit cuts that wait short. */
void outbox_set_inflight_poll_ms(int ms);
/* For tests: how long the relay waits before it reads the outbox again
 * after an error (a failed read, a row it could not produce, a failed
 * delivery: 1000 ms; <= 0 restores that). */
void outbox_set_resend_delay_ms(int ms);
/* For tests: the messages the relay has produced and had no delivery report
 * for yet, every plugin's together. (The producer's rd_kafka_outq_len also
 * counts events queued for the application, such as an error report.) */
int64_t outbox_inflight(outbox *o);
/* For tests: the delivery report of outbox row `seq` (of any plugin) is
 * taken as a failure ("refused by a test (row SEQ)") its next `times` times (-1:
 * every time); at most 8 rows at once. A negative `seq` clears them all. */
void outbox_test_refuse(int64_t seq, int times);
/* For tests: how many reports outbox_test_refuse turned into failures. */
int outbox_test_refused(void);
#endif
