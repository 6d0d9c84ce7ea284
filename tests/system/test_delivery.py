"""Delivery guarantees under faults, against the real daemon, real Apache
Kafka and a real SMTP server (issue 4):

1. kill -9 in the middle of a burst of concurrent creates: every create that
   got a 2xx has its event on Kafka, and its user exactly one welcome mail;
2. the broker stopped for 30 s under steady load: writes answer 201, or 503
   with Retry-After once the outbox bound is hit, never another 5xx; nothing
   acknowledged is missing afterwards; on a cluster that creates no topic on
   first use, events (and dead letters) wait for their topics, the log says
   to create them, and nothing is lost or sent twice once they exist;
3. SMTP down: retries with backoff, then the dead-letter topic; SMTP back,
   redrive: every mail delivered once;
4. poison messages (not JSON, not an object, missing or bad fields, 1 MiB of
   garbage, broadcasts without their fields, a type no
   handler takes) each end in the DLQ with their headers, the messages after
   them are processed, the daemon keeps running;
5. handlers slower in total than max.poll.interval.ms across a batch, and a
   dead-letter topic that refuses messages for longer than that: no
   rebalance, no duplicate processing, only the dead letter's partition waits;
6. replay from the beginning rebuilds notifications' recipients table.

Each prints its counts (sent, acknowledged, delivered, duplicates, lost);
run with -s to see them. The admin API (redrive, replay) needs its token.
"""

import base64
import collections
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

TEMPLATES = lib.TEMPLATES
PASSWORD = "correct horse battery"
ADMIN_TOKEN = "delivery-admin-token-0123456789"
# The own broker's port: a free one (reserved for the module's life) unless given.
OWN_BROKER_PORT = int(os.environ.get("EVHOST_TEST_FAULT_KAFKA_PORT", "0")) or None


def report(test, **counts):
    print(f"\n[{test}] " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


def admin(token=ADMIN_TOKEN):
    return {"Authorization": f"Bearer {token}"}


def db_rows(d, plugin, sql, args=()):
    con = sqlite3.connect(str(Path(d.state_dir) / f"{plugin}.db"), timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def outbox_pending(d, plugin):
    return db_rows(d, plugin, "SELECT COUNT(*) FROM evh_outbox")[0][0]


def read_topic(topic, brokers, timeout=30):
    """Everything on `topic` now (kcat, to the end of every partition)."""
    return lib.kafka_consume(topic, timeout=timeout, brokers=brokers)


def dead_letters(d, plugin, n, timeout=60):
    """The plugin's dead letters (admin API: it copes with binary values)
    once there are at least n."""
    def read():
        r = d.get(f"/admin/plugins/{plugin}/dlq", headers=admin(), timeout=30)
        assert r.status_code == 200, r.text
        msgs = r.json()["messages"]
        return msgs if len(msgs) >= n else None
    return lib.wait_until(read, timeout=timeout, interval=0.5, message=f"{n} dead letters")


def welcome_counts(smtp):
    """Welcome mails per recipient address."""
    return collections.Counter(a for m in smtp.messages
                               if (m.get("Subject") or "").startswith("Welcome")
                               for a in m.envelope_to)


class Stack:
    """evhostd with user.so and notifications.so (SMTP to the sink) on topics
    of their own, and the admin API on."""

    def __init__(self, evhostd, tmp_path, unique_name, brokers, smtp, kafka=None, notif=None,
                 config=None, topics=None, state_dir=None):
        self.evhostd, self.brokers = evhostd, brokers
        self.topics = topics or {k: unique_name(k)
                                 for k in ("created", "updated", "deleted", "broadcast")}
        token = tmp_path / "admin.token"
        token.write_text(ADMIN_TOKEN + "\n")
        secret = tmp_path / "jwt.key"
        secret.write_text(secrets.token_urlsafe(48))
        notif_conf = {
            "transport": "smtp",
            "smtp_url": f"smtp://{smtp.host}:{smtp.port}",
            "smtp_timeout_ms": 3000,
            "templates_dir": str(TEMPLATES),
            "from": "Evhost Tests <noreply@example.org>",
            "group": unique_name("g"),
            **lib.notifications_topics(self.topics),
        }
        notif_conf.update(notif or {})
        self.config = {
            "admin": {"token_file": str(token)},
            "auth": {"jwt_secret_file": str(secret)},
            "kafka": dict(kafka or {}),
            "plugin.user": {
                "topic.created": self.topics["created"],
                "topic.updated": self.topics["updated"],
                "topic.deleted": self.topics["deleted"],
                "argon2_opslimit": "min",
                "argon2_memlimit": "min",
                # Every worker may wait for a hashing turn: these tests are
                # about delivery, and a burst's 503s would be noise.
                "hash_queue": 256,
            },
            "plugin.notifications": notif_conf,
        }
        for section, keys in (config or {}).items():
            self.config.setdefault(section, {}).update(keys)
        self.d = evhostd(self.config, brokers=brokers, state_dir=state_dir)

    def restart(self):
        old = self.d
        self.d = self.evhostd(self.config, brokers=self.brokers, config_dir=old.config_dir,
                              state_dir=old.state_dir, port=old.port)
        return self.d

    def create_user(self, name, addr, session=None):
        return (session or requests).post(self.d.url + "/users", timeout=30, json={
            "name": name, "email": addr, "password": PASSWORD})

    def create_users(self, label, n):
        """n users with fresh addresses: {user id: address}."""
        run = secrets.token_hex(3)
        users = {}
        for i in range(n):
            addr = f"{label}{i}.{run}@example.org"
            r = self.create_user(f"{label.capitalize()} {i}", addr)
            assert r.status_code == 201, r.text
            users[r.json()["id"]] = addr
        return users

    def recipients(self):
        return {r[0]: (r[1], r[2]) for r in
                db_rows(self.d, "notifications", "SELECT user_id, email, name FROM recipients")}


# ------------------------------------------------------ 1: kill -9 in a burst


BURST = 2400
BURST_WORKERS = 32


def test_kill_9_during_burst_loses_nothing_and_mails_once(evhostd, tmp_path, unique_name,
                                                           kafka_bootstrap, smtp_server):
    # The killed daemon's consumer stays in its group until its session times
    # out, and the restarted one waits for that to be assigned anything: 6 s,
    # not librdkafka's 45 s (which made this test take 50 s).
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               config={"http": {"threads": 16},
                       "kafka": {"rdkafka.session.timeout.ms": 6000,
                                 "rdkafka.heartbeat.interval.ms": 1000}})
    run = secrets.token_hex(3)
    # Acknowledged creates by address: a 201 whose body the kill cut off
    # still counts (the client saw a 2xx), its id is just not known.
    acked, lock, killed = set(), threading.Lock(), threading.Event()
    errors = collections.Counter()
    local = threading.local()

    def create(i):
        if not hasattr(local, "s"):
            local.s = requests.Session()
        addr = f"burst{i}.{run}@example.org"
        try:
            r = st.create_user(f"Burst {i}", addr, local.s)
        except requests.RequestException:
            errors["connection"] += 1
            return
        if 200 <= r.status_code < 300:
            with lock:
                acked.add(addr)
        else:
            errors[r.status_code] += 1

    def killer():
        # Mid-burst: once a third of the creates were acknowledged.
        lib.wait_until(lambda: len(acked) >= BURST // 3 or killed.is_set(), timeout=120)
        st.d.proc.send_signal(signal.SIGKILL)
        killed.set()

    k = threading.Thread(target=killer)
    k.start()
    with ThreadPoolExecutor(BURST_WORKERS) as pool:
        list(pool.map(create, range(BURST)))
    killed.set()
    k.join()
    st.d.proc.wait(10)
    assert st.d.proc.returncode == -signal.SIGKILL
    assert 0 < len(acked) < BURST, "the kill did not land in the middle of the burst"
    # The welcome mails the server took before the kill, in order.
    before_kill = [a for m in smtp_server.messages
                   if (m.get("Subject") or "").startswith("Welcome")
                   for a in m.envelope_to if a.endswith(f".{run}@example.org")]
    assert set(errors) <= {"connection"}, errors  # no 5xx before the kill

    st.restart()
    # Every acknowledged create's event reaches Kafka (the relay resumes
    # from what the outbox kept).
    topic = st.topics["created"]

    def all_on_kafka():
        msgs = read_topic(topic, kafka_bootstrap)
        return msgs if acked <= {json.loads(m["value"])["email"] for m in msgs} else None
    msgs = lib.wait_until(all_on_kafka, timeout=90, interval=2,
                          message="every acknowledged user's USER_CREATED on Kafka")
    per_event = collections.Counter(m["headers"]["ce_id"] for m in msgs)
    per_addr = collections.Counter(json.loads(m["value"])["email"] for m in msgs)
    kafka_dups = sum(n - 1 for n in per_event.values())
    # A user's event may be on Kafka twice (sent, killed before its row left
    # the outbox, sent again) but always under the same ce_id and key.
    ids_of = collections.defaultdict(set)
    for m in msgs:
        ids_of[json.loads(m["value"])["email"]].add((m["headers"]["ce_id"], m["key"]))
    assert all(len(v) == 1 for v in ids_of.values())
    unacked_committed = set(per_addr) - acked

    # Every such user gets exactly one welcome mail.
    lib.wait_until(lambda: acked <= set(welcome_counts(smtp_server)), timeout=120, interval=1,
                   message="a welcome mail for every acknowledged user")
    time.sleep(3)  # late duplicates would arrive now
    counts = welcome_counts(smtp_server)
    mail_dups = {a: n for a, n in counts.items() if n > 1}
    lost_events = acked - set(per_addr)
    lost_mails = acked - set(counts)
    report("kill-9 burst", sent=BURST, acknowledged=len(acked),
           failed_connection=errors["connection"],
           committed_unacknowledged=len(unacked_committed),
           delivered=len(acked & set(per_addr)), kafka_duplicates=kafka_dups,
           mails=sum(counts.values()), mail_duplicates=sum(n - 1 for n in mail_dups.values()),
           lost=len(lost_events) + len(lost_mails))
    assert not lost_events
    assert not lost_mails
    # SMTP has no transactions: mails the server accepted before their "sent"
    # rows committed are sent again (notifications documents this
    # at-least-once window). Those rows commit with their batch of events
    # (one storage transaction for the events handled within a few
    # milliseconds), and one consumer thread sends one mail at a time, so
    # what may come twice is the uncommitted batch at the kill: the last
    # mails before it, all of them, once more. A duplicate of any earlier
    # mail, or a mail sent three times, would be a bug.
    assert all(n == 2 for n in mail_dups.values()), mail_dups
    last = before_kill[len(before_kill) - len(mail_dups):] if mail_dups else []
    assert set(mail_dups) == set(last), \
        f"welcome mails sent again that were not the last before the kill: {mail_dups}, " \
        f"last before it: {before_kill[-8:]}"
    st.d.expect_exit_code = 0


# --------------------------------------------- 2: broker down for 30 seconds


# The tests using it run on one pytest-xdist worker: one broker (a JVM) for them all.
OWN_BROKER = pytest.mark.xdist_group("own_broker")


# librdkafka tries a broker that went away again after a backoff doubled up
# to reconnect.backoff.max.ms (10 s): with 1 s the daemon is back within a
# second or so of the broker, not ten.
QUICK_RECONNECT = {"rdkafka.reconnect.backoff.max.ms": 1000}


@pytest.fixture(scope="module")
def own_broker():
    """A broker of our own, for the slow tests that stop it or need it to
    create no topic on first use (as many production clusters do): each
    creates the topics it needs."""
    data = Path(f"/tmp/evhost-kafka-delivery-{os.getpid()}")
    broker = lib.KafkaBroker(data, port=OWN_BROKER_PORT,
                             controller_port=OWN_BROKER_PORT and OWN_BROKER_PORT + 1,
                             auto_create=False)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.slow
@OWN_BROKER
def test_broker_outage_writes_get_201_or_503_and_nothing_acknowledged_is_lost(
        evhostd, tmp_path, unique_name, own_broker):
    topic = unique_name("crud.orders")
    lib.create_topics([topic], own_broker.bootstrap)
    d = evhostd({"plugin.crud": {"collections": "orders", "collection.orders.topic": topic},
                 "store": {"outbox_max_rows": 200}, "kafka": QUICK_RECONNECT},
                brokers=own_broker.bootstrap)
    acked, statuses, stop = [], collections.Counter(), threading.Event()
    missing_retry_after = []

    def load():
        s = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = s.post(d.url + "/crud/orders", json={"n": i}, timeout=10)
            except requests.RequestException as exc:
                statuses[f"error:{type(exc).__name__}"] += 1
                continue
            statuses[r.status_code] += 1
            if r.status_code == 201:
                acked.append(r.json()["id"])
            elif r.status_code == 503 and not r.headers.get("Retry-After"):
                missing_retry_after.append(r.text)
            time.sleep(0.02)

    t = threading.Thread(target=load)
    t.start()
    try:
        lib.wait_until(lambda: len(acked) >= 50, timeout=60, interval=0.1,
                       message="writes acknowledged before the outage")
        before = len(acked)
        own_broker.stop(keep=True)
        down_at = len(acked)
        # Down until the outbox is full (writes answered 503), and a while after.
        lib.wait_until(lambda: statuses[503] > 0, timeout=60, interval=0.5,
                       message="a 503 once the outbox bound (200) is reached")
        lib.wait_until(lambda: statuses[503] >= 50, timeout=60, interval=0.1,
                       message="writes answered at the outbox bound")
        during = len(acked) - down_at
        full_during = statuses[503]
        own_broker.start()
        back_at = len(acked)
        # Back: the outbox drains below its bound and writes are taken again.
        lib.wait_until(lambda: len(acked) >= back_at + 20, timeout=60, interval=0.1,
                       message="writes acknowledged again once the broker is back")
    finally:
        stop.set()
        t.join()
    lib.wait_until(lambda: outbox_pending(d, "crud") == 0, timeout=90, interval=1,
                   message="the outbox to drain after the broker came back")
    msgs = read_topic(topic, own_broker.bootstrap)
    on_kafka = collections.Counter(m["key"] for m in msgs)
    lost = [i for i in acked if i not in on_kafka]
    report("broker outage", sent=sum(statuses.values()), acknowledged=len(acked),
           acknowledged_before=before, acknowledged_while_down=during,
           answered_503=statuses[503], delivered=len(set(acked) & set(on_kafka)),
           duplicates=sum(n - 1 for n in on_kafka.values()), lost=len(lost),
           statuses=dict(statuses))
    assert set(statuses) <= {201, 503}, statuses
    assert not missing_retry_after
    assert during > 0, "writes stopped while the broker was down"
    assert full_during > 0, "the outbox bound (200) was never reached"
    assert not lost
    assert d.get("/healthz").status_code == 200


@pytest.mark.slow
@OWN_BROKER
def test_a_replay_while_kafka_is_unreachable_is_refused_at_once(evhostd, build_dir, tmp_path,
                                                                 unique_name, own_broker):
    # librdkafka 2.0's offset look-ups wait for an unreachable leader past
    # their timeout: a replay asked during an outage held the request and
    # the consumer for minutes, then ran on an assignment lost meanwhile,
    # after forgetting the inbox. Refused now with 502, nothing changed; it
    # runs once the broker is back.
    topic = unique_name("replayed")
    lib.create_topics([topic], own_broker.bootstrap, partitions=1)
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    d = evhostd({"admin": {"token_file": str(token)}, "kafka": QUICK_RECONNECT,
                 "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                                  "topic": topic, "group": unique_name("g")}},
                brokers=own_broker.bootstrap)
    assert d.post("/probe/publish?key=k&n=3", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 3, timeout=60)) == 3
    lib.wait_until(lambda: "probe: assigned" in d.log_text(), timeout=30)
    inbox = db_rows(d, "probe", "SELECT COUNT(*) FROM evh_inbox")[0][0]
    assert inbox == 3
    own_broker.stop(keep=True)
    try:
        asked = time.monotonic()
        r = d.post("/admin/plugins/probe/replay", headers=admin(), json={"from": "beginning"},
                   timeout=60)
        took = time.monotonic() - asked
        assert r.status_code == 502, r.text
        assert r.json()["type"].endswith("kafka"), r.text
        assert r.json()["detail"] == ("Kafka is unreachable: nothing was rewound; replay "
                                      "again once it is back"), r.text
        assert took < 15, took
        assert db_rows(d, "probe", "SELECT COUNT(*) FROM evh_inbox")[0][0] == inbox
    finally:
        own_broker.start()
    r = lib.wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        d.post("/admin/plugins/probe/replay", headers=admin(), json={"from": "beginning"},
               timeout=60)), timeout=120, interval=0.5, message="the replay once Kafka is back")
    assert r.json()["inbox_deleted"] == 3, r.text
    assert len(lib.probe_wait_seen(d, 6, timeout=90)) == 6


NO_TOPIC = "no such topic, and the cluster does not create topics on first use: create it"


@pytest.mark.slow
def test_a_topic_refusing_an_event_holds_back_its_outbox_until_fixed(evhostd, unique_name,
                                                                     kafka_bootstrap):
    """A topic whose max.message.bytes is below an event's size (the
    producer's limit, checked when publishing, is above it) refuses it for
    good: the event and its plugin's later ones wait in the outbox, in order;
    the log says why and what to do once a minute, not at every resend; once
    the topic takes it, all go out in order, each once.

    The later event is published once the refusal is known: one already
    handed to the producer when it comes (published within milliseconds of
    the refused one) can be delivered ahead of it (docs/operations.md)."""
    topic = unique_name("crud.notes")
    lib.create_topics([topic], kafka_bootstrap, partitions=1,
                      configs={"max.message.bytes": "600"})
    d = evhostd({"plugin.crud": {"collections": "notes", "collection.notes.topic": topic}},
                brokers=kafka_bootstrap)
    def note(text):
        r = d.post("/crud/notes", json={"text": text})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    ids = [note("x" * 1000)]
    lib.wait_until(lambda: "max.message.bytes is smaller than this message; raise it" in
                   d.log_text(), timeout=30, message="the log to say why the topic refuses")
    ids.append(note("small"))
    time.sleep(4)  # resent every second or so meanwhile
    warned = d.log_text().count("WARN  [outbox] crud: delivery of outbox row 1 failed")
    pending = outbox_pending(d, "crud")
    lib.alter_topic(topic, {"max.message.bytes": "1048588"}, kafka_bootstrap)
    lib.wait_until(lambda: outbox_pending(d, "crud") == 0, timeout=30,
                   message="the outbox to drain once the topic takes the event")
    keys = [m["key"] for m in read_topic(topic, kafka_bootstrap)]
    report("topic refusing an event", published=2, waited=pending, warnings=warned,
           delivered=len(keys))
    assert pending == 2 and warned == 1
    assert keys == ids


def test_an_event_without_a_key_to_a_compacted_topic_is_said_so(evhostd, build_dir,
                                                                 unique_name, kafka_bootstrap):
    # A compacted topic refuses a message without a key ("failed to validate
    # record", nothing more): the event waits in the outbox, and the log said
    # no more than librdkafka's words. It names the cause and the way out now;
    # once the topic takes it, it goes out.
    topic = unique_name("compacted")
    lib.create_topics([topic], kafka_bootstrap, partitions=1,
                      configs={"cleanup.policy": "compact"})
    d = evhostd({"plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                                  "topic": topic, "subscribe": "false"}},
                brokers=kafka_bootstrap)
    assert d.post("/probe/publish?nokey=1", json={"x": 1}).status_code == 200
    lib.wait_until(lambda: "a compacted topic (cleanup.policy=compact) takes no message "
                   "without a key" in d.log_text(), timeout=30,
                   message="the log to say why the topic refuses the event")
    assert outbox_pending(d, "probe") == 1
    lib.alter_topic(topic, {"cleanup.policy": "delete"}, kafka_bootstrap)
    lib.wait_until(lambda: outbox_pending(d, "probe") == 0, timeout=30,
                   message="the event to go out once the topic takes it")
    assert [m["key"] for m in read_topic(topic, kafka_bootstrap)] == [None]


@pytest.mark.slow
def test_a_refused_event_holds_back_its_outbox_across_a_restart(evhostd, unique_name,
                                                                kafka_bootstrap):
    """The event a topic refuses, and the later ones behind it, are still
    held back after evhostd restarts: the restarted relay sends the oldest
    event alone, the others once it is delivered. Sent with it in one go,
    those landing in a batch of their own (another partition here) were
    delivered ahead of it. (The topic takes a batch of the small ones:
    max.message.bytes bounds a batch.)"""
    topic = unique_name("crud.notes")
    lib.create_topics([topic], kafka_bootstrap, partitions=2,
                      configs={"max.message.bytes": "4000"})
    d = evhostd({"plugin.crud": {"collections": "notes", "collection.notes.topic": topic}},
                brokers=kafka_bootstrap)
    refused = "WARN  [outbox] crud: delivery of outbox row 1 failed"
    def note(text):
        r = d.post("/crud/notes", json={"text": text})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    ids = [note("x" * 8000)]
    lib.wait_until(lambda: refused in d.log_text(), timeout=30,
                   message="the topic to refuse the event")
    ids += [note(f"small {i}") for i in range(6)]
    assert d.stop() == 0, d.log_tail()
    d.start()
    d.wait_healthy(lib.health_timeout())
    lib.wait_until(lambda: d.log_text().count(refused) >= 2, timeout=30,
                   message="the restarted relay to have the event refused again")
    time.sleep(3)  # resent every second or so meanwhile
    pending = outbox_pending(d, "crud")
    early = len(read_topic(topic, kafka_bootstrap))
    lib.alter_topic(topic, {"max.message.bytes": "1048588"}, kafka_bootstrap)
    lib.wait_until(lambda: outbox_pending(d, "crud") == 0, timeout=30,
                   message="the outbox to drain once the topic takes the event")
    delivered = read_topic(topic, kafka_bootstrap)
    report("refused event across a restart", published=len(ids), waited=pending,
           delivered_early=early, delivered=len(delivered),
           partitions="".join(str(m["partition"]) for m in delivered))
    assert (pending, early) == (len(ids), 0)
    assert sorted(m["key"] for m in delivered) == sorted(ids)
    order = collections.defaultdict(list)  # each partition's notes, as published
    for m in sorted(delivered, key=lambda m: (m["partition"], m["offset"])):
        order[m["partition"]].append(ids.index(m["key"]))
    assert all(v == sorted(v) for v in order.values()), dict(order)


@pytest.mark.slow
@OWN_BROKER
def test_cluster_creating_no_topics_holds_events_until_they_exist(evhostd, tmp_path,
                                                                  unique_name, own_broker,
                                                                  smtp_server):
    """On a cluster that creates no topic on first use, a user created
    before its topics exist is answered 201, its USER_CREATED waits in the
    outbox and the log says to create the topic; once it exists the welcome
    mail goes out, once. A dead letter whose topic does not exist waits the
    same way (only its partition), and is written once the topic exists.

    With a message.timeout.ms below librdkafka's 30 s wait for a topic to
    appear, the host lowers that wait: the log says the topic is missing,
    not "Message timed out"."""
    st = Stack(evhostd, tmp_path, unique_name, own_broker.bootstrap, smtp_server,
               kafka={"rdkafka.message.timeout.ms": 4000, "retry.backoff_max_ms": 2000})
    created, run = st.topics["created"], secrets.token_hex(3)
    early = f"early.{run}@example.org"
    assert st.create_user("Early", early).status_code == 201
    lib.wait_until(lambda: f"to {created} ({NO_TOPIC}" in st.d.log_text(), timeout=30,
                   message="the log to say the topic must be created")
    for t in st.topics.values():
        assert f"WARN  [kafka] notifications: subscribed topic {t} does not exist" in (
            st.d.log_text())
    assert outbox_pending(st.d, "user") == 1 and not welcome_counts(smtp_server)
    lib.create_topics(list(st.topics.values()), own_broker.bootstrap)
    smtp_server.wait_for(lambda m: m.envelope_to == [early], timeout=60)
    lib.wait_until(lambda: outbox_pending(st.d, "user") == 0, timeout=30,
                   message="the outbox to drain")

    dlq = created + ".notifications.dlq"
    lib.kafka_produce(created, "not json", key="poison", brokers=own_broker.bootstrap)
    lib.wait_until(lambda: f"dead letter to {dlq} failed ({NO_TOPIC})" in st.d.log_text(),
                   timeout=30, message="the dead letter to wait for its topic")
    later = f"later.{run}@example.org"
    assert st.create_user("Later", later).status_code == 201
    lib.create_topics([dlq], own_broker.bootstrap)
    letters = dead_letters(st.d, "notifications", 1)
    smtp_server.wait_for(lambda m: m.envelope_to == [later], timeout=60)
    time.sleep(1)
    counts = welcome_counts(smtp_server)
    report("cluster creating no topics", users=2, delivered=len(counts),
           duplicates=sum(n - 1 for n in counts.values()), dead_letters=len(letters))
    assert counts == {early: 1, later: 1}
    assert len(letters) == 1 and letters[0]["key"] == "poison"
    assert letters[0]["headers"]["evhost_dlq_error"] == (
        "event data is not valid JSON: malformed at byte 0")


def test_full_outbox_answers_503_with_retry_after(evhostd, tmp_path, unique_name):
    """The bound itself, for user.so and crud.so, with no broker to drain it."""
    d = evhostd({"store": {"outbox_max_rows": 3},
                 "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"},
                 "plugin.crud": {"collections": "things"}},
                brokers="127.0.0.1:1")  # nothing listens: the outboxes only fill
    run = secrets.token_hex(3)
    for path, body in (("/users", lambda i: {"name": f"N{i}", "password": PASSWORD,
                                             "email": f"full{i}.{run}@example.org"}),
                       ("/crud/things", lambda i: {"n": i})):
        codes = [d.post(path, json=body(i)).status_code for i in range(3)]
        assert codes == [201, 201, 201], (path, codes)
        r = d.post(path, json=body(3))
        assert r.status_code == 503, (path, r.text)
        assert r.headers["Retry-After"] == "5"
        assert r.headers["Content-Type"] == "application/problem+json"
    # Nothing of the refused writes was kept.
    assert len(d.get("/users", params={"limit": 100}).json()["items"]) == 3
    assert len(d.get("/crud/things", params={"limit": 100}).json()["items"]) == 3
    assert outbox_pending(d, "user") == 3 and outbox_pending(d, "crud") == 3
    report("outbox bound", sent=8, acknowledged=6, answered_503=2, lost=0)
    # A clean stop would spend its 30 s trying to flush to the missing broker.
    d.stop(signal.SIGKILL)
    d.expect_exit_code = None
    assert outbox_pending(d, "user") == 3  # kept for the next start


# ------------------------------------- 3: SMTP down, dead letters, redrive


def restart_smtp_and_redrive(st, smtp_server, users):
    """Bring the mail server back, redrive the plugin's dead letters (one
    per user) and wait for every user's welcome mail. The redrive's answer."""
    smtp_server.start()
    r = st.d.post("/admin/plugins/notifications/dlq/redrive", headers=admin(), timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["redriven"] == len(users) and answer["failed"] == 0
    lib.wait_until(lambda: set(users.values()) <= set(welcome_counts(smtp_server)),
                   timeout=30, message="the welcome mails after the redrive")
    return answer


def test_smtp_down_retries_then_dlq_then_redrive_mails_once(evhostd, tmp_path, unique_name,
                                                             kafka_bootstrap, smtp_server):
    # The plugin's own retry.max_attempts is left unset on purpose: then a
    # mail that keeps failing is a dead letter ([kafka] attempts), which is
    # what this test is about. With it set (the packaged conf.d does), the
    # plugin dead-letters the event itself and keeps the recipient (next test).
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               kafka={"retry.max_attempts": 3, "retry.backoff_ms": 300,
                      "retry.backoff_max_ms": 1200})
    smtp_server.stop()
    users = st.create_users("down", 5)

    letters = dead_letters(st.d, "notifications", 5)
    assert {m["key"] for m in letters} == set(users)
    for m in letters:
        h = m["headers"]
        assert h["evhost_dlq_topic"] == st.topics["created"]
        assert h["evhost_dlq_plugin"] == "notifications"
        assert h["evhost_dlq_attempts"] == "3"
        assert h["evhost_dlq_error"]
        assert m["topic"] == st.topics["created"] + ".notifications.dlq"
    log = st.d.log_text()
    retries = [line for line in log.splitlines() if "attempt " in line and "retry in" in line
               and st.topics["created"] in line]
    assert len(retries) == 5 * 2, retries  # attempts 1 and 2 each scheduled a retry
    assert not smtp_server.messages

    first = restart_smtp_and_redrive(st, smtp_server, users)
    # Redriving again sends nothing: every dead letter is recorded as redriven.
    r = st.d.post("/admin/plugins/notifications/dlq/redrive", headers=admin(), timeout=60)
    second = r.json()
    assert second["redriven"] == 0 and second["skipped"] == 5
    time.sleep(2)
    counts = welcome_counts(smtp_server)
    dups = sum(n - 1 for n in counts.values())
    sent = db_rows(st.d, "notifications",
                   "SELECT COUNT(*) FROM notifications_log WHERE status = 'sent'")[0][0]
    report("smtp down", sent=len(users), dead_lettered=len(letters),
           redriven=first["redriven"], redriven_again=second["redriven"],
           delivered=len(set(counts) & set(users.values())), duplicates=dups,
           lost=len(set(users.values()) - set(counts)))
    assert dups == 0
    assert sent == 5
    assert set(st.recipients()) == set(users)


def test_a_broadcast_with_undelivered_recipients_is_dead_lettered_for_them_alone(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # Three recipients: one served, one refused for good (550), one the
    # server keeps putting off (451) through the plugin's last attempt. The
    # event is dead-lettered for that one; the others' outcomes commit (the
    # first attempt's, rolled back with its retry, are written from memory),
    # and the redrive serves only the one left: nobody gets it twice.
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               notif={"retry.max_attempts": 2, "retry.backoff_ms": 200,
                      "retry.backoff_max_ms": 400})
    users = st.create_users("bcast", 3)
    lib.wait_until(lambda: set(users.values()) <= set(welcome_counts(smtp_server)),
                   timeout=60, message="the welcome mails")
    (ok_id, ok), (gone_id, gone), (later_id, later) = users.items()
    smtp_server.replies.update({gone: "550 5.1.1 mailbox unavailable",
                                later: "451 4.3.0 try again later"})
    bid = str(uuid.uuid4())
    lib.kafka_produce(st.topics["broadcast"], {"broadcast_id": bid, "subject": f"News {bid}",
                                               "message": "m", "requested_by": "t"},
                      key=bid, brokers=kafka_bootstrap,
                      headers={"ce_id": bid, "ce_type": "NOTIFICATION_BROADCAST"})
    try:
        (letter,) = dead_letters(st.d, "notifications", 1)
    finally:
        smtp_server.replies.clear()
    h = letter["headers"]
    assert h["ce_id"] == bid and h["evhost_dlq_attempts"] == "2", h
    assert h["evhost_dlq_error"].startswith(
        "1 of 3 deliveries not sent after the last attempt; last error: "), h
    assert "451" in h["evhost_dlq_error"], h

    def statuses():
        return dict(db_rows(st.d, "notifications", "SELECT event_id, status FROM "
                            "notifications_log WHERE event_id LIKE ?", (bid + ":%",)))
    assert statuses() == {f"{bid}:{ok_id}": "sent", f"{bid}:{gone_id}": "failed",
                          f"{bid}:{later_id}": "dead_lettered"}

    def news():
        return collections.Counter(a for m in smtp_server.messages
                                   if m.get("Subject") == f"News {bid}" for a in m.envelope_to)
    assert news() == {ok: 1}
    r = st.d.post("/admin/plugins/notifications/dlq/redrive", headers=admin(), timeout=60)
    assert r.status_code == 200 and r.json()["redriven"] == 1, r.text
    lib.wait_until(lambda: statuses()[f"{bid}:{later_id}"] == "sent", timeout=30,
                   message="the redriven broadcast's last delivery")
    time.sleep(1)  # a second mail to anyone shows up now
    assert news() == {ok: 1, later: 1}
    assert statuses()[f"{bid}:{gone_id}"] == "failed"


def test_smtp_down_at_the_plugins_last_attempt_keeps_the_recipient(evhostd, tmp_path,
                                                                    unique_name, kafka_bootstrap,
                                                                    smtp_server):
    # As packaged, the plugin knows its retry.max_attempts: at the last
    # attempt it records the mail as dead_lettered and returns
    # KEEP_AND_DEAD_LETTER, so the recipient and the row commit while the
    # event waits in the dead-letter topic for a redrive.
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               notif={"retry.max_attempts": 2, "retry.backoff_ms": 200,
                      "retry.backoff_max_ms": 400})
    smtp_server.stop()
    users = st.create_users("parked", 3)

    letters = dead_letters(st.d, "notifications", 3)
    assert {m["key"] for m in letters} == set(users)
    for m in letters:
        assert m["headers"]["evhost_dlq_attempts"] == "2"
        assert "smtp" in m["headers"]["evhost_dlq_error"].lower()
    # Kept although the event was dead-lettered: the recipients and the rows.
    assert set(st.recipients()) == set(users)
    rows = db_rows(st.d, "notifications",
                   "SELECT recipient, status, attempts, last_error IS NOT NULL"
                   " FROM notifications_log")
    assert sorted(rows) == sorted((a, "dead_lettered", 2, 1) for a in users.values())
    assert "redrive it once the mail server is back" in st.d.log_text()
    assert not smtp_server.messages

    restart_smtp_and_redrive(st, smtp_server, users)
    lib.wait_until(lambda: db_rows(st.d, "notifications",
                                   "SELECT COUNT(*) FROM notifications_log"
                                   " WHERE status = 'sent'")[0][0] == 3,
                   timeout=10, message="the rows to say sent")
    time.sleep(1)
    counts = welcome_counts(smtp_server)
    report("smtp down at the plugin's last attempt", users=len(users),
           dead_lettered=len(letters), recipients_kept=len(st.recipients()),
           delivered=len(set(counts) & set(users.values())),
           duplicates=sum(n - 1 for n in counts.values()))
    assert all(counts[a] == 1 for a in users.values())


def test_a_redriven_welcome_is_logged_to_the_address_it_went_to(evhostd, tmp_path, unique_name,
                                                                 kafka_bootstrap, smtp_server):
    # Dead-lettered to a mistyped address; the admin mends the address, then
    # redrives: the mail goes to the new one, and the log's row said the old
    # one (sent, to an address never mailed; ?recipient= of the new one found
    # nothing), while the stream pushed the new one.
    pw = tmp_path / "root.password"
    pw.write_text("root-password-1\n")
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               notif={"retry.max_attempts": 2, "retry.backoff_ms": 200,
                      "retry.backoff_max_ms": 400},
               config={"plugin.user": {"admin_email": "root@example.org",
                                       "admin_password_file": str(pw)}})
    smtp_server.stop()
    ((uid, typo),) = st.create_users("typo", 1).items()
    dead_letters(st.d, "notifications", 2)  # root's welcome too
    fixed = "mended." + typo
    token = st.d.post("/auth/login", json={"email": "root@example.org",
                                           "password": "root-password-1"}).json()["token"]
    r = st.d.patch(f"/users/{uid}", json={"email": fixed},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    lib.wait_until(lambda: st.recipients().get(uid, ("",))[0] == fixed, timeout=30,
                   message="the new address in notifications' recipients")
    smtp_server.start()
    r = st.d.post("/admin/plugins/notifications/dlq/redrive", headers=admin(), timeout=60)
    assert r.status_code == 200 and r.json()["redriven"] == 2, r.text
    lib.wait_until(lambda: db_rows(st.d, "notifications", "SELECT recipient, status FROM "
                                   "notifications_log WHERE recipient != 'root@example.org'")
                   == [(fixed, "sent")],
                   timeout=30, message="the row to say sent, to the new address")
    assert welcome_counts(smtp_server).get(fixed) == 1
    assert typo not in welcome_counts(smtp_server)


# -------------------------------------------------------- 4: poison messages


def create_topic(topic, brokers, max_message_bytes):
    """A topic that takes big messages."""
    lib.create_topics([topic], brokers, configs={"max.message.bytes": str(max_message_bytes)})


def produce_big(topic, value, key, brokers):
    with tempfile.NamedTemporaryFile() as f:
        f.write(value)
        f.flush()
        r = subprocess.run(["kcat", "-P", "-b", brokers, "-t", topic, "-k", key, "-q",
                            "-X", "message.max.bytes=4000000", "-X", "acks=all", f.name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=60)
    assert r.returncode == 0 and "Delivery failed" not in r.stderr, r.stderr


def test_the_sdk_example_dead_letters_data_it_cannot_store(evhostd, build_dir, unique_name,
                                                           kafka_bootstrap):
    """hello.c, which third parties copy, stored any event data in a column
    GET /hello-seen embeds as JSON: one event that was not JSON made every
    later listing fail. It rejects such data now (to the dead-letter topic,
    with its reason) and the listing goes on."""
    topic = unique_name("hello.events")
    lib.create_topics([topic], kafka_bootstrap, partitions=1)
    d = evhostd({"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so"),
                                  "topic": topic}}, brokers=kafka_bootstrap)
    lib.kafka_produce(topic, b"not json {", key="k", brokers=kafka_bootstrap)
    lib.kafka_produce(topic, b"{}\x00", key="k", brokers=kafka_bootstrap)
    lib.kafka_produce(topic, {"good": 1}, key="k", brokers=kafka_bootstrap)
    seen = lib.wait_until(lambda: (lambda r: r.status_code == 200 and r.json())(
        d.get("/hello-seen")), timeout=60, message="the good event listed")
    assert [e["data"] for e in seen] == [{"good": 1}], seen
    letters = [m["value"] for m in read_topic(topic + ".hello.dlq", kafka_bootstrap)]
    assert letters[:2] == ["not json {", "{}\x00"], letters
    text = d.log_text()
    assert "hello: event data is not JSON" in text
    assert "hello: event data is not JSON (none, or a NUL byte)" in text


def test_the_sdk_example_dead_letters_json_its_listing_cannot_embed(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    """hello.c kept what SQLite's json_valid() takes, and GET /hello-seen
    embeds it through evh_query_json, which refuses more (a number beyond a
    double, a \\u0000 or a lone surrogate in a string, nesting deeper than
    128): one such event made every later listing a 500. It checks the data
    as the listing reads it now, and dead-letters what fails, with why."""
    topic = unique_name("hello.events")
    lib.create_topics([topic], kafka_bootstrap, partitions=1)
    d = evhostd({"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so"),
                                  "topic": topic}}, brokers=kafka_bootstrap)
    poison = [b'{"n":1e400}', b'["\\u0000"]', b'["\\ud800"]', b"[" * 129 + b"]" * 129]
    lib.kafka_produce(topic, {"first": 1}, key="k", brokers=kafka_bootstrap)
    for value in poison:
        lib.kafka_produce(topic, value, key="k", brokers=kafka_bootstrap)
    lib.kafka_produce(topic, {"last": [[1]] * 2, "n": 1e300}, key="k", brokers=kafka_bootstrap)
    # One partition, in order: the last event's handling follows the others'.
    d.wait_for_log(f" event {topic}/0/{len(poison) + 1} ", timeout=60)
    r = d.get("/hello-seen")
    assert r.status_code == 200, r.text
    assert [e["data"] for e in r.json()] == [{"first": 1}, {"last": [[1], [1]], "n": 1e300}]
    letters = lib.wait_until(
        lambda: (lambda m: m if len(m) >= len(poison) else None)(
            read_topic(topic + ".hello.dlq", kafka_bootstrap)),
        timeout=60, interval=0.5, message="the poison events dead-lettered")
    assert [m["value"].encode() for m in letters] == poison
    assert d.log_text().count("hello: event data is not JSON GET /hello-seen can list") \
        >= len(poison)


def test_a_dead_letter_over_the_producers_limit_says_which_key_to_raise(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    """A rejected message under 64 KiB (not cut) whose dead letter, with its
    headers, passes the daemon's own message.max.bytes waits for a new
    limit; the log said only "message larger than message.max.bytes". It
    says the sizes and the key now."""
    topic = unique_name("hello.big")
    lib.create_topics([topic], kafka_bootstrap, partitions=1)
    d = evhostd({"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so"),
                                  "topic": topic},
                 "kafka": {"rdkafka.message.max.bytes": "4096"}}, brokers=kafka_bootstrap)
    lib.kafka_produce(topic, b"x" * 4000, key="k", brokers=kafka_bootstrap)
    d.wait_for_log("the dead letter (4000 bytes and its headers) is larger than "
                   "message.max.bytes (4096): raise [kafka] rdkafka.message.max.bytes and "
                   "restart); retrying in", timeout=60)
    assert d.get("/hello-seen").json() == []


def test_poison_messages_are_dead_lettered_and_the_rest_flows(evhostd, tmp_path, unique_name,
                                                              kafka_bootstrap, smtp_server):
    topics = {k: unique_name(k) for k in ("created", "updated", "deleted", "broadcast")}
    # The source topic takes 1 MiB messages; its dead-letter topic is made
    # by the broker with the default limit (1 MiB minus a little).
    create_topic(topics["created"], kafka_bootstrap, 4 * 1024 * 1024)
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, topics=topics)
    created, bcast = topics["created"], topics["broadcast"]
    # Not a NUL first: the text's reason names byte 0, the garbage's another.
    garbage = b"\x01" + os.urandom(1024 * 1024 - 1)
    # All on one key: one partition, so the good event after them can only be
    # handled if the poison did not stop the partition.
    lib.kafka_produce(created, b"\x00\x01 not json {", key="poison", brokers=kafka_bootstrap)
    lib.kafka_produce(created, {"name": "no id, no email"}, key=None, brokers=kafka_bootstrap)
    lib.kafka_produce(created, {"name": "no email", "id": "u-1"}, key="poison",
                      brokers=kafka_bootstrap)
    produce_big(created, garbage, "poison", kafka_bootstrap)
    for data in ([1, 2], {"id": "u-3", "email": "not an address"},
                 {"id": 1.5, "email": "half@example.org"}):
        lib.kafka_produce(created, data, key="poison", brokers=kafka_bootstrap)
    for n, data in enumerate(({"subject": "x", "message": "y"},
                              {"broadcast_id": "b-1", "subject": "x", "message": 7}), 2):
        lib.kafka_produce(bcast, data, key="poison",
                          headers={"ce_id": f"bogus-{n}", "ce_type": "NOTIFICATION_BROADCAST",
                                   "ce_specversion": "1.0"}, brokers=kafka_bootstrap)
    lib.kafka_produce(bcast, {"subject": "x", "message": "y"}, key="poison",
                      headers={"ce_id": "bogus-1", "ce_type": "NOTIFICATION_EXPLODE",
                               "ce_specversion": "1.0"}, brokers=kafka_bootstrap)
    lib.kafka_produce(created, {"id": "poison", "email": "after@example.org", "name": "After"},
                      key="poison", brokers=kafka_bootstrap)
    smtp_server.wait_for(lambda m: m.envelope_to == ["after@example.org"], timeout=60)

    every = dead_letters(st.d, "notifications", 10)
    letters = [m for m in every if m["topic"] == created + ".notifications.dlq"]
    assert len(letters) == 7
    errors = {}
    for m in letters:
        h = m["headers"]
        assert h["evhost_dlq_topic"] == created and h["evhost_dlq_plugin"] == "notifications"
        assert h["evhost_dlq_attempts"] == "1" and h["evhost_dlq_time"].endswith("Z")
        assert int(h["evhost_dlq_partition"]) >= 0 and int(h["evhost_dlq_offset"]) >= 0
        errors[h["evhost_dlq_offset"] + "/" + h["evhost_dlq_partition"]] = h
    by_error = collections.Counter(h["evhost_dlq_error"] for h in errors.values())
    # The reason says where the data broke: the text's NUL, and the 1 MiB's
    # first NUL byte (or, should it have none, its first byte not UTF-8).
    assert by_error["event data is not valid JSON: a NUL byte at byte 0"] == 1
    nul = garbage.find(b"\0")
    if nul >= 0:
        assert by_error[f"event data is not valid JSON: a NUL byte at byte {nul}"] == 1
    else:
        assert sum(n for why, n in by_error.items()
                   if why.startswith("event data is not valid JSON: invalid UTF-8 at byte ")) == 1
    assert by_error['event data has no usable "id" (string or number)'] == 1
    assert by_error['event data has no "email"'] == 1
    assert by_error["event data is not a JSON object"] == 1
    assert by_error['"email" is not a valid e-mail address'] == 1  # never the address itself
    assert by_error['event data\'s "id" is a number but not an integer of at most 2^53 - 1 '
                    '(9007199254740991) in magnitude: send it as a string'] == 1
    # bytes that are not text (a NUL, or not UTF-8) are shown as base64, text as is
    poison = base64.b64encode(b"\x00\x01 not json {").decode()
    assert [m.get("value_base64") for m in letters].count(poison) == 1
    assert {"name": "no email", "id": "u-1"} in [
        json.loads(m["value"]) for m in letters if "value" in m]
    big = [m for m in letters if "evhost_dlq_truncated" in m["headers"]]
    assert len(big) == 1 and big[0]["headers"]["evhost_dlq_truncated"] == str(len(garbage))
    assert big[0]["value_size"] == 65536 and "value_base64" in big[0]
    # A cut dead letter is not sent back (it would be another event), said so.
    r = st.d.post("/admin/plugins/notifications/dlq/redrive", headers=admin(), timeout=60,
                  json={"offsets": [{k: big[0][k] for k in ("topic", "partition", "offset")}]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["redriven"], res["skipped"], res["failed"]) == (0, 1, 0), res
    assert res["results"][0]["error"] == ("its value was truncated when it was dead-lettered; "
                                          "it cannot be redriven"), res
    broadcasts = {m["headers"]["ce_id"]: m["headers"]["evhost_dlq_error"]
                  for m in every if m["topic"] == bcast + ".notifications.dlq"}
    assert broadcasts == {
        "bogus-1": f"no handler for ce_type 'NOTIFICATION_EXPLODE' on topic {bcast}",
        "bogus-2": 'broadcast has no usable "broadcast_id"',
        "bogus-3": 'broadcast needs string "subject" and "message"'}, broadcasts
    assert st.d.running() and st.d.get("/healthz").status_code == 200
    assert st.recipients() == {"poison": ("after@example.org", "After")}
    report("poison", sent=11, dead_lettered=len(letters) + len(broadcasts), delivered=1,
           daemon_running=st.d.running(), duplicates=0, lost=0)


# ------------------------------------------- 5: slow handlers, no rebalance


def probe_polling_within(evhostd, build_dir, unique_name, kafka_bootstrap, topic, max_poll_ms,
                         **kafka):
    """evhostd with the probe plugin on `topic`, its consumer's
    max.poll.interval.ms and session.timeout.ms at `max_poll_ms`."""
    return evhostd({
        "kafka": {"rdkafka.max.poll.interval.ms": max_poll_ms,
                  "rdkafka.session.timeout.ms": max_poll_ms,
                  "rdkafka.heartbeat.interval.ms": max_poll_ms // 6, **kafka},
        "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                         "topic": topic, "group": unique_name("g")},
    }, brokers=kafka_bootstrap)


def create_again(topic, brokers, partitions):
    """Delete `topic` and create it again with `partitions`: its offsets start
    at 0 again."""
    lib.delete_topics([topic], brokers=brokers)
    try:  # the broker may create it again at once (auto.create.topics.enable)
        lib.wait_until(lambda: topic not in lib.kafka_topics(brokers), timeout=10)
        lib.create_topics([topic], brokers=brokers, partitions=partitions)
    except Exception as e:
        if not re.search("TopicAlreadyExists|timed out", type(e).__name__ + str(e)):
            raise


def test_offsets_are_committed_after_a_topic_is_deleted_and_created_again(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    # librdkafka's commit of the stored offsets skips those not above the
    # committed ones it knows (fetched at the assignment, or its own). A
    # topic deleted and created again starts its offsets at 0 again: nothing
    # was committed until they passed the old topic's, and a restart handled
    # all of it again (a consumer with another inbox: twice). The handled
    # offsets are committed by name now. Six keys spread the events over the
    # three partitions the same way both times, fewer the second time.
    topic, group = unique_name("recreated"), unique_name("g")
    keys = [f"k{i}" for i in range(6)]
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=3)
    d = evhostd({"plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                                  "topic": topic, "group": group}}, brokers=kafka_bootstrap)

    def committed():
        return sum(o for (t, _), o in lib.committed_offsets(group, kafka_bootstrap).items()
                   if t == topic and o > 0)

    for k in keys:
        assert d.post(f"/probe/publish?key={k}&n=5", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 30, timeout=60)) == 30
    lib.wait_until(lambda: committed() == 30, timeout=20, message="30 offsets committed")

    create_again(topic, kafka_bootstrap, 3)
    for k in keys:
        assert d.post(f"/probe/publish?key={k}", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 36, timeout=90)) == 36
    lib.wait_until(lambda: committed() == 6, timeout=20,
                   message="the new topic's 6 offsets committed (not the old topic's 30)")
    # A clean stop, or (librdkafka's own bug, lib.librdkafka_destroy_hung) a
    # consumer whose destroy never ended: left running, or the stop guard's
    # end of the daemon.
    code = d.stop()
    lib.librdkafka_destroy_hung(d, code, "probe")
    assert code == 0 or d.librdkafka_hung, (code, d.log_tail())


def test_messages_known_by_position_are_handled_after_a_topic_is_created_again(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    # A message without a ce_id (a plain producer's) is known to the inbox by
    # its position, TOPIC/PARTITION/OFFSET. A topic deleted and created again
    # starts its offsets at 0 again: each new message found the old one's
    # inbox record (kept for inbox_retention), was skipped as handled and
    # committed past: lost, with a debug line only. The inbox keeps such a
    # message's Kafka timestamp: one of another time is another message.
    # Fewer messages the second time, so the consumer's position past the
    # old ones is out of the new topic's range and goes back to its start.
    topic = unique_name("plainagain")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=1)
    d = evhostd({"plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                                  "topic": topic, "group": unique_name("g")}},
                brokers=kafka_bootstrap)

    def produce(gen, n):
        lib.kafka_produce_many([{"topic": topic, "partition": 0,
                                 "value": json.dumps({"gen": gen, "n": i}).encode()}
                                for i in range(n)], brokers=kafka_bootstrap)

    produce(1, 4)
    first = lib.probe_wait_seen(d, 4, timeout=60)
    assert [r["event_id"] for r in first] == [f"{topic}/0/{i}" for i in range(4)], first

    create_again(topic, kafka_bootstrap, 1)
    produce(2, 3)
    rows = lib.probe_wait_seen(d, 7, timeout=60)[4:]
    assert [(r["event_id"], r["data"]["gen"]) for r in rows] == [
        (f"{topic}/0/{i}", 2) for i in range(3)], rows
    code = d.stop()  # as in the test above: librdkafka's own destroy bug
    lib.librdkafka_destroy_hung(d, code, "probe")
    assert code == 0 or d.librdkafka_hung, (code, d.log_tail())


def test_a_replay_from_a_time_does_not_skip_an_event_being_retried(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # The mail server is down: a user's welcome is being retried. A replay
    # "from now" found that partition's first message at or after now past
    # it (its end), moved there, dropped the retry and committed past it:
    # the welcome was never sent. A replay rewinds; it never skips.
    smtp_server.stop()
    try:
        st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
                   notif={"retry.max_attempts": 1000, "retry.backoff_ms": 200,
                          "retry.backoff_max_ms": 400, "smtp_timeout_ms": 1000})
        addr = f"late.{secrets.token_hex(3)}@example.org"
        assert st.create_user("Late", addr).status_code == 201
        st.d.wait_for_log("attempt 2/1000 failed", timeout=60)
        time.sleep(1.1)  # "now" after every message on the topic
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        r = st.d.post("/admin/plugins/notifications/replay", headers=admin(), timeout=60,
                      json={"from": now, "topics": [st.topics["created"]]})
        assert r.status_code == 200, r.text
        moved = [p for p in r.json()["partitions"]
                 if p["previous"] is not None and p["offset"] > p["previous"]]
        assert not moved, r.json()
    finally:
        smtp_server.start()
    lib.wait_until(lambda: welcome_counts(smtp_server)[addr] >= 1, timeout=60,
                   message="the welcome mail of the event being retried at the replay")
    assert "not yet handled: replayed from there" in st.d.log_text()


LAG_SERIES = re.compile(r'^evhost_consumer_lag\{([^}]*)\} (\S+)$', re.M)


def topic_lags(d, topic):
    """evhost_consumer_lag of `topic` on d's /metrics: {partition: lag}."""
    found = {}
    for labels, v in LAG_SERIES.findall(d.get("/metrics").text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("topic") == topic:
            found[lab["partition"]] = float(v)
    return found


def test_consumer_lag_is_said_after_a_restart_of_partitions_already_handled(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    # Partitions assigned at their end, with messages before it and nothing
    # new: librdkafka knows no position until a message comes, so their
    # evhost_consumer_lag series were missing after every restart (and a
    # dashboard showed gaps). Their committed offset says where they are.
    topic, group = unique_name("lagged"), unique_name("g")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=3)
    config = {"plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                               "topic": topic, "group": group}}
    d = evhostd(config, brokers=kafka_bootstrap)
    for k in ("a", "b", "c", "d", "e", "f"):
        assert d.post(f"/probe/publish?key={k}&n=2", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 12, timeout=60)) == 12
    lib.wait_until(lambda: sum(o for (t, _), o in lib.committed_offsets(
        group, kafka_bootstrap).items() if t == topic) == 12, timeout=20,
        message="12 offsets committed")
    holding = {str(p) for (t, p), o in lib.committed_offsets(group, kafka_bootstrap).items()
               if t == topic and o > 0}
    assert d.stop() == 0, d.log_tail()
    d = evhostd(config, brokers=kafka_bootstrap, config_dir=d.config_dir,
                state_dir=d.state_dir, port=d.port)
    def lags():
        found = topic_lags(d, topic)
        return found if holding <= set(found) else None
    found = lib.wait_until(lags, timeout=20, interval=0.5,
                           message=f"evhost_consumer_lag of {topic}'s partitions {holding}")
    assert all(v == 0 for v in found.values()), found
    assert d.stop() == 0, d.log_tail()


def test_consumer_lag_of_a_held_partition_counts_what_came_since(
        evhostd, build_dir, unique_name, kafka_bootstrap, tmp_path):
    # A partition held by a retry is paused, and librdkafka caches the
    # watermarks of fetch responses only: evhost_consumer_lag stood at what
    # the last fetch before the pause said while events came in behind the
    # retried one (a backoff lasts up to a day, a full disk's wait until it
    # has room), and the lag alert saw none of them. Its end is asked of the
    # cluster meanwhile. (Two partitions: the other is fetched all along, as
    # a plugin's partitions that flow are.)
    topic, group = unique_name("held"), unique_name("g")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=2)
    down = tmp_path / "down"
    down.write_text("")
    config = {"plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                               "topic": topic, "group": group,
                               "retry.max_attempts": 1000, "retry.backoff_ms": 1000}}
    d = evhostd(config, brokers=kafka_bootstrap)
    assert d.post("/probe/publish?key=a", json={"fail_while": str(down)}).status_code == 200
    lib.wait_until(lambda: "attempt 1/1000 failed" in d.log_text(), timeout=60,
                   message="the first attempt to fail")
    # The fetch in flight at the pause has returned by then (a broker holds
    # one up to fetch.wait.max.ms, 500 ms), and the partition's end it said:
    # the events below come after the last end a fetch told.
    time.sleep(1)
    assert d.post("/probe/publish?key=a&n=10", json={}).status_code == 200
    lib.wait_until(lambda: sum(topic_lags(d, topic).values()) == 11, timeout=30, interval=0.5,
                   message=f"evhost_consumer_lag of {topic} to count the 11 events held")
    down.unlink()
    assert len(lib.probe_wait_seen(d, 11, timeout=60)) == 11
    lib.wait_until(lambda: (lambda v: len(v) == 2 and sum(v.values()) == 0)(topic_lags(d, topic)),
                   timeout=20, interval=0.5, message=f"evhost_consumer_lag of {topic} back to 0")
    assert d.stop() == 0, d.log_tail()


def test_consumer_lag_of_a_new_group_starting_at_the_end_is_zero(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    # rdkafka.auto.offset.reset = latest: a new group starts its partitions
    # at their end, past the messages already there. Nothing committed and
    # no message since: the lag series counted from the partitions' start
    # (as for the default, earliest) and said the old messages were waiting
    # while nothing would ever handle them.
    topic, group = unique_name("late"), unique_name("g")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=3)
    for k in ("a", "b", "c", "d", "e", "f"):
        lib.kafka_produce(topic, '{"n":1}', key=k, brokers=kafka_bootstrap)
    config = {"kafka": {"rdkafka.auto.offset.reset": "latest"},
              "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                               "topic": topic, "group": group}}
    d = evhostd(config, brokers=kafka_bootstrap)
    def lags():
        found = topic_lags(d, topic)
        return found if len(found) == 3 else None
    found = lib.wait_until(lags, timeout=30, interval=0.5,
                           message=f"evhost_consumer_lag of {topic}'s 3 partitions")
    assert all(v == 0 for v in found.values()), found
    # A message published now is handled (the group did start at the end).
    assert d.post("/probe/publish?key=z", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 1, timeout=60)) == 1
    time.sleep(1)
    assert len(lib.probe_seen(d)) == 1, lib.probe_seen(d)
    assert d.stop() == 0, d.log_tail()


def test_consumer_lag_of_a_committed_offset_below_the_log_start_under_latest(
        evhostd, build_dir, unique_name, kafka_bootstrap):
    # The group's committed offset fell below the partition's log start
    # (retention, delete-records): out of range, and auto.offset.reset =
    # latest starts the partition at its end, past the event still kept
    # (operations.md says so). Its lag was the end minus that stale offset
    # until a new event came: events waiting that nothing would handle.
    topic, group = unique_name("stale"), unique_name("g")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=1)
    config = {"plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                               "topic": topic, "group": group}}
    d = evhostd(config, brokers=kafka_bootstrap)
    assert d.post("/probe/publish?key=a&n=2", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 2, timeout=60)) == 2
    lib.wait_until(lambda: lib.committed_offsets(group, kafka_bootstrap).get((topic, 0)) == 2,
                   timeout=20, message="offset 2 committed")
    assert d.stop() == 0, d.log_tail()
    for k in "xyz":  # offsets 2, 3, 4
        lib.kafka_produce(topic, '{"n":1}', key=k, brokers=kafka_bootstrap)
    lib.delete_records(topic, {0: 4}, brokers=kafka_bootstrap)
    config["kafka"] = {"rdkafka.auto.offset.reset": "latest"}
    d = evhostd(config, brokers=kafka_bootstrap)
    lib.wait_until(lambda: topic_lags(d, topic) or None, timeout=30, interval=0.5,
                   message=f"evhost_consumer_lag of {topic}")
    time.sleep(2)  # a few more reports: the value holds
    assert topic_lags(d, topic) == {"0": 0}, d.log_tail()
    assert lib.probe_seen(d) == []  # offset 4 skipped: latest
    assert d.post("/probe/publish?key=z", json={}).status_code == 200
    assert len(lib.probe_wait_seen(d, 1, timeout=60)) == 1
    assert d.stop() == 0, d.log_tail()


@pytest.mark.slow
def test_slow_handlers_cause_no_rebalance_or_duplicates(evhostd, build_dir, unique_name,
                                                        kafka_bootstrap):
    # 6 s, not 3: each handler's 1.5 s then leaves a loaded CI host 4.5 s of
    # stall before the consumer would miss its poll, which is not under test.
    d = probe_polling_within(evhostd, build_dir, unique_name, kafka_bootstrap,
                             unique_name("slow"), 6000)
    n, each_ms = 8, 1500  # 12 s in all, twice max.poll.interval.ms
    assert d.post(f"/probe/publish?key=one&n={n}",
                  data=f'{{"sleep_ms":{each_ms}}}',
                  headers={"Content-Type": "application/json"}).status_code == 200
    started = time.monotonic()
    rows = lib.wait_until(lambda: (lambda r: r if len(r) >= n else None)(
        d.get("/probe/seen").json()), timeout=60, interval=0.5, message=f"{n} slow events")
    took = time.monotonic() - started
    time.sleep(3)  # a rebalance (session.timeout.ms) would redeliver now
    rows = d.get("/probe/seen").json()
    ids = collections.Counter(r["event_id"] for r in rows)
    log = d.log_text()
    assigned = log.count("probe: assigned ")
    revoked = log.count("revoked")
    # librdkafka: "Application maximum poll interval (6000ms) exceeded by N ms"
    maxpoll = sum(1 for line in log.splitlines()
                  if "maximum poll interval" in line or "MAXPOLL" in line)
    report("slow handler", sent=n, handled=len(rows),
           duplicates=sum(v - 1 for v in ids.values()), lost=n - len(ids),
           seconds=round(took, 1), assignments=assigned, revocations=revoked,
           max_poll_warnings=maxpoll)
    assert took > 11.5, "the handlers were not twice as slow as max.poll.interval.ms in total"
    assert len(rows) == n and len(ids) == n
    assert all(r["attempt"] == 1 for r in rows)
    assert assigned == 1 and revoked == 0 and maxpoll == 0


def test_a_handler_near_max_poll_interval_is_said(evhostd, build_dir, unique_name,
                                                 kafka_bootstrap):
    """A handler call longer than half of max.poll.interval.ms is said, with
    how long and what it was (a batch's or a retry's), before librdkafka's
    MAXPOLL (which names neither) would take the consumer out of its group."""
    d = probe_polling_within(evhostd, build_dir, unique_name, kafka_bootstrap,
                             unique_name("busy"), 3000)
    assert d.post("/probe/publish?key=one", data='{"sleep_ms":1800}',
                  headers={"Content-Type": "application/json"}).status_code == 200
    line = lib.wait_until(lambda: next((ln for ln in d.log_text().splitlines()
                                        if "without polling Kafka" in ln), None),
                          timeout=60, message="the warning of a long handler")
    m = re.search(r"probe: (\d+) ms without polling Kafka, (\d+) ms of it handling a batch "
                  r"of events; max\.poll\.interval\.ms is 3000: past it the consumer leaves "
                  r"its group", line)
    assert m, line
    assert int(m.group(1)) >= int(m.group(2)) >= 1800, line
    assert len(d.get("/probe/seen").json()) == 1
    # A retry's attempt runs between polls too, and is named as such (its
    # first attempt is the batch's: quick, so that the retry is the longest
    # step whether or not a poll comes between them).
    assert d.post("/probe/publish?key=two",
                  data='{"sleep_ms":1800,"sleep_from":2,"fail":"retry","succeed_on":"2"}',
                  headers={"Content-Type": "application/json"}).status_code == 200
    line = lib.wait_until(lambda: next((ln for ln in d.log_text().splitlines()
                                        if "on a retry or a dead letter" in ln), None),
                          timeout=60, message="the warning of a long retry")
    m = re.search(r"probe: (\d+) ms without polling Kafka, (\d+) ms of it on a retry or a "
                  r"dead letter; max\.poll\.interval\.ms is 3000", line)
    assert m, line
    assert int(m.group(1)) >= int(m.group(2)) >= 1800, line
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 2, timeout=30,
                   message="the retried event to be handled")
    # Both slow: when no poll comes between the batch and the retry, the
    # warning names both, the longest first (else each its own, as above).
    before = len(d.log_text().splitlines())
    assert d.post("/probe/publish?key=three",
                  data='{"sleep_ms":1800,"fail":"retry","succeed_on":"2"}',
                  headers={"Content-Type": "application/json"}).status_code == 200
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 3, timeout=60,
                   message="the third event to be handled")
    # Said at the poll after the attempts, which may come after the handler
    # recorded the event: waited for.
    lines = lib.wait_until(
        lambda: [ln for ln in d.log_text().splitlines()[before:] if "without polling Kafka" in ln],
        timeout=30, message="a warning for two slow attempts")
    for line in lines:
        both = re.search(r"probe: (\d+) ms without polling Kafka, (\d+) ms of it "
                         r"(handling a batch of events|on a retry or a dead letter) and (\d+) ms "
                         r"(handling a batch of events|on a retry or a dead letter); ", line)
        one = re.search(r"probe: (\d+) ms without polling Kafka, (\d+) ms of it "
                        r"(handling a batch of events|on a retry or a dead letter); ", line)
        assert both or one, line
        if both:
            gap, first, second = int(both.group(1)), int(both.group(2)), int(both.group(4))
            assert both.group(3) != both.group(5), line
            assert gap >= first + second and first >= second >= 1800, line


@pytest.mark.slow
def test_dead_letter_topic_refusing_holds_only_its_partition(evhostd, build_dir, unique_name,
                                                             kafka_bootstrap):
    """A dead-letter topic that refuses messages (here: its max.message.bytes
    too small for any) holds back only the partition of the message being
    dead-lettered: the plugin's other partitions are handled meanwhile, the
    consumer keeps polling (no rebalance however long it lasts), and once the
    topic takes messages again the dead letter is written once and the
    partition goes on in order."""
    topic = unique_name("dlqwait")
    dlq = topic + ".probe.dlq"
    lib.create_topics([topic], kafka_bootstrap)
    lib.create_topics([dlq], kafka_bootstrap, partitions=1, configs={"max.message.bytes": "64"})
    # 6 s, not less: a CI host once held a sanitized daemon's consumer thread
    # past 3 s (the rebalance that follows is not what this test is about).
    max_poll_ms = 6000
    d = probe_polling_within(evhostd, build_dir, unique_name, kafka_bootstrap, topic,
                             max_poll_ms, **{"retry.backoff_max_ms": 1000})
    post = lambda key, body: d.post(f"/probe/publish?key={key}", data=json.dumps(body),
                                    headers={"Content-Type": "application/json"})
    assert post("poison", {"fail": "reject"}).status_code == 200
    lib.wait_until(lambda: f"dead letter to {dlq} failed" in d.log_text(), timeout=30,
                   message="the dead-letter topic to refuse the dead letter")
    refused_at = time.monotonic()
    keys = [f"k{i}" for i in range(12)]
    for i, k in enumerate(keys):
        assert post(k, {"i": i}).status_code == 200
    on_topic = lib.kafka_consume(topic, count=len(keys) + 1, timeout=30,
                                 brokers=kafka_bootstrap)
    part = {m["key"]: m["partition"] for m in on_topic}
    behind = {k for k in keys if part[k] == part["poison"]}
    others = set(keys) - behind
    assert others, "every key went to the poison's partition"

    def seen_keys():
        return {r["key"] for r in d.get("/probe/seen").json()}
    # The other partitions go on while the dead letter waits...
    lib.wait_until(lambda: others <= seen_keys(), timeout=20,
                   message="the events of the other partitions to be handled")
    # ... for more than twice max.poll.interval.ms, without a rebalance.
    time.sleep(max(0.0, 2 * max_poll_ms / 1000 + 1 - (time.monotonic() - refused_at)))
    assert not (behind & seen_keys()), "an event overtook the one being dead-lettered"
    lib.alter_topic(dlq, {"max.message.bytes": "1048588"}, kafka_bootstrap)
    lib.wait_until(lambda: set(keys) <= seen_keys(), timeout=30,
                   message="the events behind the dead letter to be handled")
    time.sleep(2)  # a duplicate dead letter or a redelivery would show now
    letters = lib.kafka_consume(dlq, timeout=10, brokers=kafka_bootstrap)
    rows = d.get("/probe/seen").json()
    log = d.log_text()
    counts = collections.Counter(r["key"] for r in rows)
    maxpoll = sum(1 for line in log.splitlines()
                  if "maximum poll interval" in line or "MAXPOLL" in line)
    report("dead-letter topic refusing", sent=len(keys) + 1, handled=len(rows) + 1,
           dead_letters=len(letters), duplicates=sum(n - 1 for n in counts.values()),
           assignments=log.count("probe: assigned "), revocations=log.count("revoked"),
           max_poll_warnings=maxpoll)
    assert log.count("probe: assigned ") == 1 and "revoked" not in log and maxpoll == 0, \
        "the consumer left its group (its log follows the test)"
    assert len(letters) == 1 and letters[0]["key"] == "poison"
    assert letters[0]["headers"]["evhost_dlq_error"] == "probe: rejected on request"
    assert "evhost_dlq_truncated" not in letters[0]["headers"]
    assert sorted(counts) == sorted(keys) and set(counts.values()) == {1}
    order = [r["key"] for r in rows]
    assert [k for k in order if k in behind] == sorted(behind, key=keys.index)


@pytest.mark.slow
@OWN_BROKER
def test_dead_letter_on_its_way_at_a_rebalance_is_written_once(evhostd, build_dir, unique_name,
                                                               own_broker):
    """A second daemon joins the group while a dead letter of the first is
    on its way (its topic does not exist yet, on a cluster that creates no
    topics): the first one's revocation waits for it and commits its offset,
    so neither daemon handles the message again or writes a second dead
    letter once the topic exists."""
    first, second, letters, handled = dead_letter_at_a_rebalance(evhostd, build_dir, unique_name,
                                                                 own_broker, topic_late=False)
    assert handled == 1 and len(letters) == 1 and letters[0]["key"] == "poison"
    assert "partition revoked: the dead letter of" in first.log_text()
    assert "pending dead letter dropped" not in first.log_text() + second.log_text()


@pytest.mark.slow
@OWN_BROKER
def test_dead_letter_still_on_its_way_after_the_rebalance_wait_is_dropped(
        evhostd, build_dir, unique_name, own_broker):
    """...but only for 5 s: one still not acknowledged then is said and
    dropped, the rebalance goes on, and the message is handled again by the
    partition's next owner (at least once: two dead letters, once the topic
    exists)."""
    first, second, letters, handled = dead_letter_at_a_rebalance(evhostd, build_dir, unique_name,
                                                                 own_broker, topic_late=True)
    line = next(ln for ln in first.log_text().splitlines() if "partition revoked: the dead "
                "letter of" in ln)
    assert line.endswith(" is not acknowledged within 5000 ms; the message is handled again "
                         "by the partition's next owner"), line
    assert handled == 2 and len(letters) == 2, (handled, letters)


@pytest.mark.slow
@OWN_BROKER
def test_dead_letter_refused_during_the_rebalance_wait_is_said(evhostd, build_dir, unique_name,
                                                               own_broker):
    """The dead-letter topic, created as the revocation begins, refuses the
    dead letter (too large for it): the revocation says so, and the
    partition's next owner handles the message again, its dead letter
    waiting for the topic to take it."""
    first, second, letters, handled = dead_letter_at_a_rebalance(
        evhostd, build_dir, unique_name, own_broker, topic_late=False, refusing=True)
    line = next(ln for ln in first.log_text().splitlines() if "partition revoked: the dead "
                "letter of" in ln)
    assert re.search(r" failed \(.*\); the message is handled again by the partition's next "
                     r"owner$", line), line
    assert handled == 2 and letters == [], (handled, letters)


def dead_letter_at_a_rebalance(evhostd, build_dir, unique_name, own_broker, topic_late,
                               refusing=False):
    """A daemon's dead letter waits for its topic (which does not exist; the
    cluster creates no topics) when a second daemon joins its group. The
    topic is created as the first one's revocation begins, or (`topic_late`)
    once that revocation has given up waiting; `refusing`: too small for any
    message. Returns both daemons, the dead letters on the topic and how
    many times the poison was handled."""
    topic = unique_name("dlqjoin")
    dlq = topic + ".probe.dlq"
    group = unique_name("g")
    lib.create_topics([topic], own_broker.bootstrap, partitions=2)
    config = {
        "kafka": {"rdkafka.session.timeout.ms": 6000, "rdkafka.heartbeat.interval.ms": 500,
                  # the dead letter waits for its topic this long before failing
                  "rdkafka.topic.metadata.propagation.max.ms": 60000},
        "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                         "topic": topic, "group": group},
    }
    first = evhostd(config, brokers=own_broker.bootstrap)
    r = first.post("/probe/publish?key=poison", data='{"fail":"reject"}',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    first.wait_for_log(f"the dead letter to {dlq} is not acknowledged yet", timeout=30)
    second = evhostd(config, brokers=own_broker.bootstrap)
    first.wait_for_log("probe: 2 partition(s) revoked", timeout=30)
    if topic_late:
        first.wait_for_log("is not acknowledged within 5000 ms", timeout=15)
    lib.create_topics([dlq], own_broker.bootstrap, partitions=1,
                      configs={"max.message.bytes": "64"} if refusing else None)
    second.wait_for_log("probe: assigned 1 partition(s)", timeout=30)
    first.wait_for_log("probe: assigned 1 partition(s)", timeout=30)
    want = 2 if topic_late or refusing else 1
    lib.wait_until(lambda: (first.log_text() + second.log_text()).count(
        f"dead-lettered to {dlq} after") >= want, timeout=30, message="the poison handled")
    time.sleep(3)  # a redelivery of the poison (or a second dead letter) would come now
    letters = lib.kafka_consume(dlq, timeout=10, brokers=own_broker.bootstrap)
    handled = (first.log_text() + second.log_text()).count(f"dead-lettered to {dlq} after")
    report("dead letter at a rebalance" + (", topic late" if topic_late else ""),
           dead_letters=len(letters), poison_handled=handled)
    return first, second, letters, handled


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
def test_group_members_coming_and_going_handle_each_event_once(evhostd, build_dir, unique_name,
                                                                kafka_bootstrap, strategy):
    """Two daemons in one consumer group while events flow: the second joins
    (the partitions are shared out), then the first stops (they all go to
    the second). Offsets are committed at each revocation, so across both
    every event is handled, and once: with librdkafka's default eager
    assignors and with cooperative-sticky, whose incremental (un)assignments
    take another path through the consumer."""
    topic, group = unique_name("members"), unique_name("g")
    lib.create_topics([topic], kafka_bootstrap, partitions=4)
    config = {
        "kafka": {"rdkafka.session.timeout.ms": 6000, "rdkafka.heartbeat.interval.ms": 500,
                  "rdkafka.partition.assignment.strategy": strategy},
        "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                         "topic": topic, "group": group},
    }
    first = evhostd(config, brokers=kafka_bootstrap)
    first.wait_for_log("probe: assigned 4 partition(s)", timeout=30)
    sent = 0

    def publish(d, rounds):
        nonlocal sent
        for i in range(rounds):
            r = d.post(f"/probe/publish?n=10&key=k{sent}", json={"i": sent})
            assert r.status_code == 200, r.text
            sent += 10
    publish(first, 10)
    second = evhostd(config, brokers=kafka_bootstrap, wait=False)
    for _ in range(40):  # while the second joins
        publish(first, 1)
        time.sleep(0.05)
    second.wait_healthy()
    lib.wait_until(lambda: "probe: assigned" in second.log_text(), timeout=30,
                   message="the second daemon's share of the partitions")
    publish(first, 10)
    lib.wait_until(lambda: outbox_pending(first, "probe") == 0, timeout=30,
                   message="the first daemon's events on the topic")
    # Each says that it shares the group (a plugin keeping state from its
    # events would see only its share), a while after its assignment.
    shared = f"probe: consumer group {group} has 2 members"
    for d in (first, second):
        d.wait_for_log(shared, timeout=20)
    assert first.stop() == 0
    publish(second, 10)

    def handled():
        rows = db_rows(first, "probe", "SELECT event_id FROM seen")
        return rows + second.get("/probe/seen").json()
    lib.wait_until(lambda: len({r[0] if isinstance(r, tuple) else r["event_id"]
                                for r in handled()}) >= sent, timeout=60,
                   message=f"all {sent} events handled")
    time.sleep(2)  # a duplicate would come now
    ids = [r[0] if isinstance(r, tuple) else r["event_id"] for r in handled()]
    counts = collections.Counter(ids)
    log = first.log_text() + second.log_text()
    report(f"group members coming and going ({strategy})", sent=sent, handled=len(ids),
           duplicates=sum(n - 1 for n in counts.values()),
           assignments=log.count("probe: assigned "), revocations=log.count("revoked"))
    assert len(counts) == sent, f"{sent - len(counts)} event(s) never handled"
    # librdkafka before 2.10 takes a member's whole assignment for lost when
    # a commit meets a rebalance's next generation (ILLEGAL_GENERATION,
    # librdkafka#4059): what it handled since its last commit goes to the
    # other member, handled again (at least once; configuration.md). evhost
    # holds its periodic commits through a cooperative rebalance's second
    # round, where that was seen (TSan pass, a loaded machine); a commit
    # retried across a rebalance's start can still meet it. Any other
    # duplicate fails.
    lost = ("offset commit failed: Broker: Specified group generation id is not valid" in log
            and "revoked (lost)" in log)
    assert set(counts.values()) == {1} or lost, counts.most_common(3)
    assert "revoked" in first.log_text(), first.log_tail()


# --------------------------------------------------- 6: replay rebuilds state


def test_replay_from_beginning_rebuilds_recipients(evhostd, tmp_path, unique_name,
                                                   kafka_bootstrap, smtp_server):
    pw = tmp_path / "root.password"
    pw.write_text("root-password-1\n")
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               config={"plugin.user": {"admin_email": "root@example.org",
                                       "admin_password_file": str(pw)}})
    token = st.d.post("/auth/login", json={"email": "root@example.org",
                                           "password": "root-password-1"}).json()["token"]
    root = {"Authorization": f"Bearer {token}"}
    run = secrets.token_hex(3)
    want, ids = {}, []
    for i in range(20):
        addr = f"replay{i}.{run}@example.org"
        r = st.create_user(f"Replay {i}", addr)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        want[ids[-1]] = (addr, f"Replay {i}")
    # Each user's events are spread over three topics (the old stack's
    # layout); only timestamp-ordered dispatch keeps them in order when they
    # are consumed as a backlog, which a replay is.
    for i in range(10):
        r = st.d.patch(f"/users/{ids[i]}", json={"name": f"Renamed {i}"}, headers=root)
        assert r.status_code == 200, r.text
        want[ids[i]] = (want[ids[i]][0], f"Renamed {i}")
    for i in range(5, 10):
        assert st.d.delete(f"/users/{ids[i]}", headers=root).status_code == 204
        del want[ids[i]]

    def users_only():
        return {k: v for k, v in st.recipients().items() if v[0] != "root@example.org"}
    lib.wait_until(lambda: users_only() == want, timeout=30, message="the recipients table")
    lib.wait_until(lambda: len(welcome_counts(smtp_server)) == 21, timeout=30,
                   message="21 welcome mails")
    before = st.recipients()
    full_before = db_rows(st.d, "notifications", "SELECT * FROM recipients ORDER BY user_id")
    mails_before = len(smtp_server.messages)

    con = sqlite3.connect(str(Path(st.d.state_dir) / "notifications.db"), timeout=30)
    con.execute("DELETE FROM recipients")
    con.commit()
    con.close()
    assert st.recipients() == {}

    r = st.d.post("/admin/plugins/notifications/replay", headers=admin(),
                  json={"from": "beginning"}, timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["inbox_deleted"] == 21 + 10 + 5
    created = [p for p in res["partitions"] if p["topic"] == st.topics["created"]]
    assert created and all(p["offset"] == 0 for p in created)
    lib.wait_until(lambda: st.recipients() == before, timeout=30,
                   message="the recipients table rebuilt by the replay")
    time.sleep(2)  # nothing more arrives: no second welcome mail either
    after = st.recipients()
    full_after = db_rows(st.d, "notifications", "SELECT * FROM recipients ORDER BY user_id")
    mails = len(smtp_server.messages) - mails_before
    report("replay", events=21 + 10 + 5, recipients_before=len(before),
           recipients_after=len(after), identical=after == before,
           identical_with_updated_at=full_after == full_before,
           inbox_deleted=res["inbox_deleted"], mails_during_replay=mails, duplicates=mails,
           lost=len(set(before) - set(after)))
    assert after == before
    assert mails == 0, "the replay sent welcome mails again"
