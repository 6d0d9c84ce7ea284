"""Helpers for evhost's black-box system tests: the real daemon, real Kafka
(through kcat, which is built on the same librdkafka as evhostd), and a real
SMTP server. Everything listens on 127.0.0.1 and every wait is bounded.

The pytest fixtures in conftest.py are thin wrappers around these classes, so
a test that needs something unusual (two daemons, an SMTP server with AUTH)
can build it from here directly.
"""

import asyncio
import base64
import collections
import contextlib
import email
import email.message
import fcntl
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import re
import selectors
import shutil
import signal
import socketserver
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "plugins" / "notifications" / "templates"  # notifications.so's
KAFKA_SCRIPT = REPO_ROOT / "scripts" / "kafka"
KCAT = "kcat"

# Bootstrap servers used by kafka_consume/kafka_produce when none are given;
# the kafka_bootstrap fixture sets it for the session.
default_brokers = os.environ.get("EVHOST_TEST_KAFKA")


def _ephemeral_range():
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


# Ports held by reserve_port(): a lock file per port under this directory, shared
# by every test run on the machine, locked (flock) for as long as it is held.
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "evhost-test-ports"
_reserved = {}  # port -> the open lock file that holds it
_handed_out = collections.deque(maxlen=512)  # what free_port() gave lately, newest last


def _port_taken_by_a_reservation(port, keep):
    """True if another process (another test run) holds `port`; else False, and
    with keep=True the port is now held by this process (_reserved)."""
    # A port never reserved has no file: only a reservation makes one (and
    # leaves it, empty: removing it could let two processes lock two files).
    try:
        if keep:
            PORT_LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
            fd = os.open(PORT_LOCK_DIR / str(port), os.O_RDWR | os.O_CREAT, 0o666)
        else:
            fd = os.open(PORT_LOCK_DIR / str(port), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return True
    if keep:
        _reserved[port] = fd
    else:
        os.close(fd)  # and with it the lock
    return False


def free_port(reserve=False):
    """A TCP port on 127.0.0.1 that nothing listens on right now and that no
    test run holds with reserve_port().

    Taken below the kernel's ephemeral range: a port the kernel hands out
    for bind(0) (the embedded broker's listener, outgoing connections) could
    otherwise be given away again before the daemon binds this one. Under
    pytest-xdist each worker draws from its own slice of that range, so two
    tests running side by side never pick the same port; two test runs at
    once can, which only matters for a port left unbound for a while (a
    broker stopped and started again): reserve_port() is for those."""
    lo, _ = _ephemeral_range()
    top = lo - 1 if lo > 12000 else 65535
    bottom = 10000
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if workers > 1 and worker[2:].isdigit():
        width = (top - bottom + 1) // workers
        bottom += int(worker[2:]) * width
        top = bottom + width - 1
    for attempt in range(400):
        port = random.randint(bottom, top)
        if 19000 <= port < 19400:  # scripts/kafka and scripts/bench brokers
            continue
        # A port handed out lately may not be bound yet: a test that takes
        # two (an HTTPS listener's, then the daemon's own) got the same one
        # twice about once in 2800, and the daemon did not start. Given
        # again only when the slice has no other (a narrow one).
        if attempt < 200 and port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port in _reserved or _port_taken_by_a_reservation(port, reserve):
            continue
        _handed_out.append(port)
        return port
    raise RuntimeError("no free TCP port on 127.0.0.1 below the ephemeral range")


def reserve_port():
    """A free_port() held for this process until release_port(port) (or its
    exit): no other test, in this run or another on the machine, is given it
    by free_port() meanwhile, even while nothing listens on it."""
    return free_port(reserve=True)


def release_port(port):
    fd = _reserved.pop(port, None)
    if fd is not None:
        os.close(fd)


def peak_rss_kb(d):
    """The daemon's peak resident memory so far (VmHWM), in KiB."""
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def sanitizer(build_dir):
    """"asan" (AddressSanitizer and UBSan), "tsan" (ThreadSanitizer) or None: how the
    CMake build tree build_dir was configured."""
    cache = Path(build_dir) / "CMakeCache.txt"
    text = cache.read_text() if cache.exists() else ""
    if "EVHOST_SANITIZE:BOOL=ON" in text:
        return "asan"
    if "EVHOST_TSAN:BOOL=ON" in text:
        return "tsan"
    return None


def oom_stride(build_dir, plain):
    """How many allocations an out-of-memory sweep steps over at a time:
    EVH_OOM_STRIDE, else `plain`, three times that under ASan (its runs are
    slower; the plain pass tries the others), nine times under ThreadSanitizer
    (which looks for races in the failures' teardowns, the same after most
    allocations: a tenth of its pass's CPU was these sweeps at three)."""
    if os.environ.get("EVH_OOM_STRIDE"):
        return int(os.environ["EVH_OOM_STRIDE"])
    return plain * {"asan": 3, "tsan": 9}.get(sanitizer(build_dir), 1)


def notifications_topics(topics):
    """[plugin.notifications]'s topic keys for `topics`, the names of its
    "created", "updated", "deleted" and "broadcast" topics."""
    return {"topic.user_created": topics["created"], "topic.user_updated": topics["updated"],
            "topic.user_deleted": topics["deleted"], "topic.broadcast": topics["broadcast"]}


def run_failing(cmd, n, timeout=60):
    """cmd, a tests/fixtures/*_faults program (tests/fixtures/alloc_at.c) and
    its arguments, with its Nth allocation failed (none for n=None); returns
    (the CompletedProcess, whether one failed), the fixture's own stderr
    lines ("evh-fault: ...") taken off."""
    env = dict(os.environ)
    env.pop("EVH_FAULT_ALLOC_AT", None)
    if n is not None:
        env["EVH_FAULT_ALLOC_AT"] = str(n)
    r = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    *rest, last = r.stderr.splitlines() or [""]
    assert last.startswith("evh-fault: "), (n, cmd, r.returncode, r.stdout, r.stderr)
    r.stderr = "".join(line + "\n" for line in rest if not line.startswith("evh-fault: "))
    return r, last == f"evh-fault: allocation {n} failed"


def faults_preloaded(build_dir, **faults):
    """evhostd's environment with tests/fixtures/faults.so preloaded and its
    EVH_FAULT_* settings; skipped in sanitized builds, whose runtime must be
    the first library loaded."""
    if sanitizer(build_dir):
        pytest.skip("a preloaded library comes before the sanitizer's runtime")
    return {"LD_PRELOAD": str(Path(build_dir) / "tests" / "fixtures" / "faults.so"),
            **{f"EVH_FAULT_{k.upper()}": str(v) for k, v in faults.items()}}


def wait_until(fn, timeout=10.0, interval=0.1, message=None, ignore=()):
    """Call fn() until it returns something truthy and return that value.

    Exceptions of the types in `ignore` count as "not yet"; others propagate.
    Raises AssertionError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except ignore as exc:  # noqa: PERF203 - retried on purpose
            last_exc = exc
        if time.monotonic() >= deadline:
            what = message or getattr(fn, "__name__", "condition")
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------- Kafka


class KafkaTls:
    """A broker's TLS listeners (see scripts/kafka): `ssl` (client
    certificates required), `sasl` (SASL_SSL, PLAIN and SCRAM-SHA-512, user
    "evhost"), and `dir` with ca.crt, client.crt, client.key, other-ca.crt and
    sasl.password."""

    def __init__(self, line):
        # The directory last, and whole: $TMPDIR may hold a space.
        parts = line.strip().split(maxsplit=2)
        if len(parts) != 3:
            raise RuntimeError(f"scripts/kafka tls printed {line!r}")
        self.ssl, self.sasl, d = parts
        self.dir = Path(d)


def kafka_tls(env=None):
    """The TLS listeners of the scripts/kafka broker that `env` (KAFKA_PORT,
    EVHOST_KAFKA_DIR) names."""
    r = subprocess.run([str(KAFKA_SCRIPT), "tls"], env=env, timeout=30, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/kafka tls failed ({r.returncode}):\n{r.stderr}")
    return KafkaTls(r.stdout)


class KafkaBroker:
    """A broker started by scripts/kafka on its own ports and data dir;
    auto_create=False: one that creates no topic on first use. The ports it
    picks are reserved (reserve_port) until stop() without keep: a broker
    stopped with keep=True and started again comes back on the same ones."""

    def __init__(self, data_dir, port=None, controller_port=None, auto_create=True):
        self.auto_create = auto_create
        self._held = []
        self.port = port or self._reserve()
        self.controller_port = controller_port or self._reserve()
        self.ssl_port = self._reserve()
        self.sasl_port = self._reserve()
        self.data_dir = Path(data_dir)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _env(self):
        env = dict(os.environ)
        env["KAFKA_PORT"] = str(self.port)
        env["KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        env["KAFKA_SSL_PORT"] = str(self.ssl_port)
        env["KAFKA_SASL_PORT"] = str(self.sasl_port)
        env["EVHOST_KAFKA_DIR"] = str(self.data_dir)
        env["KAFKA_AUTO_CREATE_TOPICS"] = "true" if self.auto_create else "false"
        return env

    def _run(self, *args, timeout):
        return subprocess.run([str(KAFKA_SCRIPT), *args], env=self._env(), timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def start(self, timeout=900):
        # The first start may download the broker from Maven Central.
        r = self._run("start", timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/kafka start failed ({r.returncode}):\n{r.stderr}")
        return self.bootstrap

    def _reserve(self):
        port = reserve_port()
        self._held.append(port)
        return port

    def stop(self, keep=False, timeout=60):
        r = self._run("stop", *(["--keep"] if keep else []), timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/kafka stop failed ({r.returncode}):\n{r.stderr}")
        if not keep:
            for port in self._held:
                release_port(port)
            self._held = []

    def running(self):
        return self._run("status", timeout=30).returncode == 0

    def tls(self):
        return kafka_tls(self._env())


def _brokers(brokers):
    b = brokers or default_brokers
    if not b:
        raise RuntimeError("no Kafka bootstrap servers: pass brokers= or use the kafka_bootstrap "
                           "fixture (or set EVHOST_TEST_KAFKA)")
    return b


def _headers_dict(raw):
    """kcat -J gives headers as a flat [name, value, name, value, ...] list."""
    if not raw:
        return {}
    return {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}


def _parse_kcat_json(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        m = json.loads(line)
        out.append({
            "topic": m.get("topic"),
            "partition": m.get("partition"),
            "offset": m.get("offset"),
            "key": m.get("key"),
            "value": m.get("payload"),
            "headers": _headers_dict(m.get("headers")),
            "header_list": m.get("headers") or [],
            "ts": m.get("ts"),
        })
    return out


def _unknown_topic(stderr):
    return "Unknown topic" in stderr or "UNKNOWN_TOPIC" in stderr


def sign_token(secret, subject, ttl=300, issuer="evhost", roles=()):
    """An HS256 token as user.so would issue it (with `roles`), for a subject
    of our choosing, signed with `secret` (bytes)."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": subject, "roles": list(roles), "iat": now, "exp": now + ttl,
                           "iss": issuer}).encode())
    sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def kafka_consume(topic, count=None, timeout=10.0, group=None, from_beginning=True,
                  brokers=None, extra=()):
    """Read messages from `topic` with kcat and return them as dicts
    {topic, partition, offset, key, value, headers, header_list, ts}
    (value and key are str or None; headers a dict, last value per name wins).

    count=None reads what is there now (until the end of every partition);
    count=N returns as soon as N messages arrived, or what arrived within
    `timeout` seconds (possibly fewer: assert on the length). A topic that does
    not exist yet is waited for. With `group`, kcat joins that consumer group
    and commits what it read (when it stops after `count` messages).
    """
    b = _brokers(brokers)
    cmd = [KCAT, "-b", b, "-J", "-u", "-q"]
    if group:
        reset = "earliest" if from_beginning else "latest"
        cmd += ["-G", group, "-X", f"auto.offset.reset={reset}",
                "-X", "topic.metadata.refresh.interval.ms=500"]
    else:
        cmd += ["-C", "-t", topic, "-o", "beginning" if from_beginning else "end"]
    if count is not None:
        cmd += ["-c", str(count)]
    if count is None:
        cmd += ["-e"]
    cmd += list(extra)
    if group:
        cmd += [topic]

    deadline = time.monotonic() + timeout
    while True:
        left = max(0.5, deadline - time.monotonic())
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=left)
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
            return _parse_kcat_json(partial or "")
        if r.returncode == 0:
            return _parse_kcat_json(r.stdout)
        if _unknown_topic(r.stderr) and time.monotonic() < deadline:
            time.sleep(0.3)
            continue
        if _unknown_topic(r.stderr):
            return []
        raise RuntimeError(f"kcat consume from {topic} failed ({r.returncode}): {r.stderr.strip()}")


def kafka_produce(topic, value, key=None, headers=None, brokers=None, timeout=30.0):
    """Produce one message (value: bytes, str, or anything JSON-serialisable;
    None sends a tombstone) with an optional key and headers {name: value}.
    Returns after the broker acknowledged it (acks=all)."""
    b = _brokers(brokers)
    cmd = [KCAT, "-P", "-b", b, "-t", topic, "-q", "-X", "acks=all"]
    for name, hv in (headers or {}).items():
        cmd += ["-H", f"{name}={hv}"]
    if value is None:
        # kcat sends nothing for an empty file, so a tombstone goes through
        # stdin as "key<US>" with -Z turning the empty value into NULL.
        r = subprocess.run(cmd + ["-K", "\x1f", "-Z"], input=(key or "") + "\x1f",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
    else:
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, bytes):
            value = json.dumps(value).encode()
        if key is not None:
            cmd += ["-k", key]
        # A file argument makes kcat send the whole file as one message, so
        # values may contain newlines.
        with tempfile.NamedTemporaryFile(prefix="evhost-msg-") as f:
            f.write(value)
            f.flush()
            r = subprocess.run(cmd + [f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=timeout)
    if r.returncode != 0 or "Delivery failed" in r.stderr:
        raise RuntimeError(f"kcat produce to {topic} failed ({r.returncode}): {r.stderr.strip()}")


def _admin(brokers):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=_brokers(brokers), api_version_auto_timeout_ms=10000)


def create_topics(topics, brokers=None, partitions=3, configs=None):
    """Create `topics` (kafka-python's admin client), each with `partitions`
    and the topic configs `configs`."""
    from kafka.admin import NewTopic
    a = _admin(brokers)
    try:
        a.create_topics([NewTopic(t, partitions, 1, topic_configs=dict(configs or {}))
                         for t in topics])
    finally:
        a.close()


def kafka_produce_many(records, brokers=None):
    """Send `records` (each a dict of KafkaProducer.send's keyword arguments)
    and wait until the broker acknowledged every one: a refused send raises
    here, never lost without a word. A topic created a moment ago may not have
    its partitions' leaders yet (NotLeaderForPartition): such sends are
    retried, one batch in flight at a time so each partition keeps the order
    given (tests count on a record's offset)."""
    from kafka import KafkaProducer
    prod = KafkaProducer(bootstrap_servers=_brokers(brokers), linger_ms=20,
                         batch_size=256 * 1024, retries=20, retry_backoff_ms=250,
                         max_in_flight_requests_per_connection=1)
    try:
        sent = [prod.send(**r) for r in records]
        prod.flush(timeout=120)
        for f in sent:
            f.get(timeout=60)
    finally:
        prod.close()


def add_partitions(topic, total, brokers=None):
    """Give `topic` `total` partitions (kafka-python's admin client)."""
    from kafka.admin import NewPartitions
    a = _admin(brokers)
    try:
        a.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        a.close()


def alter_topic(topic, configs, brokers=None):
    """Set `topic`'s configs (all of them: those not given go back to the
    broker's defaults)."""
    from kafka.admin import ConfigResource, ConfigResourceType
    a = _admin(brokers)
    try:
        a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        a.close()


def delete_topics(topics, brokers=None):
    """Delete `topics` (kafka-python's admin client)."""
    a = _admin(brokers)
    try:
        a.delete_topics(list(topics))
    finally:
        a.close()


def committed_offsets(group, brokers=None):
    """{(topic, partition): offset} the consumer group `group` has committed."""
    a = _admin(brokers)
    try:
        return {(tp.topic, tp.partition): om.offset
                for tp, om in a.list_consumer_group_offsets(group).items()}
    finally:
        a.close()


def delete_records(topic, offsets, brokers=None, timeout=30.0):
    """Delete the records of `topic` below {partition: offset} (Kafka's
    DeleteRecords, as kafka-delete-records.sh: Debian's python3-kafka has no
    admin call for it, and the test broker's jars no CLI tool): the
    partitions' log start moves up to those offsets. Raises on a partition
    the broker refused."""
    from kafka import KafkaClient, TopicPartition
    from kafka.protocol.api import Request, Response
    from kafka.protocol.types import Array, Int16, Int32, Int64, Schema, String

    class DeleteRecordsResponse(Response):
        API_KEY, API_VERSION = 21, 0
        SCHEMA = Schema(("throttle_time_ms", Int32),
                        ("topics", Array(("name", String("utf-8")),
                                         ("partitions", Array(("partition", Int32),
                                                              ("low_watermark", Int64),
                                                              ("error_code", Int16))))))

    class DeleteRecordsRequest(Request):
        API_KEY, API_VERSION, RESPONSE_TYPE = 21, 0, DeleteRecordsResponse
        SCHEMA = Schema(("topics", Array(("name", String("utf-8")),
                                         ("partitions", Array(("partition", Int32),
                                                              ("offset", Int64))))),
                        ("timeout_ms", Int32))

    c = KafkaClient(bootstrap_servers=_brokers(brokers), api_version_auto_timeout_ms=10000)
    try:
        c.poll(future=c.cluster.request_update())
        # One broker in these tests: the leader of partition 0 leads them all.
        node = c.cluster.leader_for_partition(TopicPartition(topic, min(offsets)))
        deadline = time.monotonic() + timeout
        while not c.ready(node):
            if time.monotonic() > deadline:
                raise RuntimeError(f"delete-records: broker {node} not ready")
            c.poll(timeout_ms=100)
        f = c.send(node, DeleteRecordsRequest([(topic, sorted(offsets.items()))],
                                              int(timeout * 1000)))
        c.poll(future=f, timeout_ms=int(timeout * 1000))
        if not f.succeeded():
            raise RuntimeError(f"delete-records on {topic} failed: {f.exception}")
        for _, parts in f.value.topics:
            for part, _, code in parts:
                if code:
                    raise RuntimeError(f"delete-records on {topic} [{part}]: error {code}")
    finally:
        c.close()


def kafka_topics(brokers=None, timeout=15.0):
    """Names of the topics the cluster knows about."""
    r = subprocess.run([KCAT, "-L", "-J", "-b", _brokers(brokers), "-m", str(int(timeout))],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout + 5)
    if r.returncode != 0:
        raise RuntimeError(f"kcat -L failed ({r.returncode}): {r.stderr.strip()}")
    return sorted(t["topic"] for t in json.loads(r.stdout).get("topics", []))


# ---------------------------------------------------------------------- SMTP


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sink.mail_reply:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_reply or self.sink.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self.sink.reply or next(
            (self.sink.replies[a] for a in envelope.rcpt_tos if a in self.sink.replies), None)
        if reply:
            with self.sink._cond:
                self.sink.refused.update(envelope.rcpt_tos)
            return reply
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        msg = email.message_from_bytes(raw)
        # Where the SMTP envelope said it goes (Bcc lives only there).
        msg.envelope_from = envelope.mail_from
        msg.envelope_to = list(envelope.rcpt_tos)
        # Whether it came over TLS (STARTTLS, or TLS from the first byte).
        msg.tls = (session.ssl is not None
                   or server.transport.get_extra_info("ssl_object") is not None)
        self.sink._add(msg)
        if self.sink.on_kept:
            self.sink.on_kept(msg)
        return "250 OK"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every mail it accepts as an
    email.message.Message (with .envelope_from and .envelope_to added).

    stop() and start() again reuse the same port, for "mail server down"
    tests; set `reply` (e.g. "451 4.3.0 try again later") to make it refuse
    messages with that answer instead of keeping them, or `replies`
    {address: reply} to refuse only those to an address, or `mail_reply`
    to answer MAIL FROM (the sender) so. `rcpt_reply` answers RCPT TO so
    (every recipient), `rcpt_replies` {address: reply} only that address's.
    `on_kept`, when set, is called with each message kept, before the client
    hears 250 for it. `refused` counts, by address, the messages refused with
    `reply` or `replies`.

    tls="starttls" offers and requires STARTTLS (AUTH only after it);
    tls="implicit" is TLS from the first byte (smtps://). Both use `certs`
    (a TlsCerts). Each kept message has .tls set.
    """

    def __init__(self, port=None, auth=None, tls=None, certs=None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.auth = auth  # (user, password) to require AUTH, or None
        if tls not in (None, "starttls", "implicit") or (tls and certs is None):
            raise ValueError("tls is None, 'starttls' or 'implicit' (with certs)")
        self.tls = tls
        self.certs = certs
        self.reply = None
        self.replies = {}
        self.mail_reply = None
        self.rcpt_reply = None
        self.rcpt_replies = {}
        self.on_kept = None
        self.refused = collections.Counter()
        self._messages = []
        self._cond = threading.Condition()
        self._controller = None

    def _authenticator(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and self.auth is not None
              and auth_data.login.decode() == self.auth[0]
              and auth_data.password.decode() == self.auth[1])
        return AuthResult(success=ok, handled=False)

    def start(self):
        from aiosmtpd.controller import Controller

        if self._controller:
            return self
        kwargs = {}
        if self.auth:
            kwargs = {"authenticator": self._authenticator, "auth_required": True,
                      "auth_require_tls": self.tls == "starttls"}
        if self.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.certs.server_crt, self.certs.server_key)
            if self.tls == "starttls":
                kwargs.update(tls_context=ctx, require_starttls=True)
            else:
                kwargs.update(ssl_context=ctx)
        # A fresh loop each time: Controller closes the one it ran on when stopped.
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      loop=asyncio.new_event_loop(), ready_timeout=10,
                                      **kwargs)
        self._controller.start()
        return self

    def stop(self):
        if self._controller:
            self._controller.stop()
            self._controller = None

    @property
    def running(self):
        return self._controller is not None

    def _add(self, msg):
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    @property
    def messages(self):
        with self._cond:
            return list(self._messages)

    def clear(self):
        with self._cond:
            self._messages.clear()

    def wait_for(self, predicate=lambda m: True, timeout=10.0):
        """The first kept message for which predicate(message) is true,
        waiting up to `timeout` seconds for it. Raises AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._messages:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    subjects = [m.get("Subject") for m in self._messages]
                    raise AssertionError(f"no matching mail within {timeout:g}s; "
                                         f"received {len(subjects)}: {subjects}")
                self._cond.wait(left)

    def wait_for_count(self, n, timeout=10.0):
        """Wait until at least n messages were kept; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} mails within {timeout:g}s, "
                                         f"got {len(self._messages)}")
                self._cond.wait(left)
            return list(self._messages)


class TlsCerts:
    """scripts/test-certs's throwaway CA and certificates in `directory`:
    ca_crt, server_crt and server_key (for 127.0.0.1 and localhost),
    client_crt and client_key (CN=evhost), elsewhere_crt and elsewhere_key
    (for elsewhere.example only), and other_ca_crt, a CA that signed nothing
    here."""

    def __init__(self, directory):
        d = Path(directory)
        r = subprocess.run([str(REPO_ROOT / "scripts" / "test-certs"), str(d)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/test-certs failed ({r.returncode}):\n{r.stderr}")
        self.ca_crt, self.other_ca_crt = d / "ca.crt", d / "other-ca.crt"
        self.server_crt, self.server_key = d / "server.crt", d / "server.key"
        self.client_crt, self.client_key = d / "client.crt", d / "client.key"
        self.elsewhere_crt, self.elsewhere_key = d / "elsewhere.crt", d / "elsewhere.key"


def mail_body(msg):
    """The text of a mail: the first text/plain part, decoded."""
    for part in msg.walk() if msg.is_multipart() else [msg]:
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True) or b""
            return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


# ------------------------------------------------------------------- evhostd


def ini_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(ini_value(x) for x in v)
    return str(v)


def write_ini(path, sections):
    """Write {"section": {key: value}} as an INI file (None values are left out)."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for k, v in (keys or {}).items():
            if v is not None:
                lines.append(f"{k} = {ini_value(v)}")
        lines.append("")
    Path(path).write_text("\n".join(lines))


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", ": runtime error: ",
                     "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


# librdkafka 2.0.2 (Debian 12's) may never end the destroy of a consumer one
# of whose partitions was removed from the cluster while it consumed it (an
# operation of the partition's fetch queue keeps it: librdkafka#4724, fixed
# in 2.5.0). evhostd waits KAFKA_DESTROY_WAIT_MS (5 s) for it, says the
# client is left running, and its stop goes on (status 0); should the stop
# guard fire first (the destroy began late in the stop), it ends the daemon
# after [host] stop_timeout and 10 s more, saying so, with status 3.
LIBRDKAFKA_DESTROY_LEFT = ("plugin '{}': its consumer's Kafka client did not end within "
                           "5000 ms: librdkafka's destroy waits for a reference")
LIBRDKAFKA_DESTROY_HUNG = ("still waiting for plugin '{}': its consumer's Kafka client ending "
                           "(librdkafka's threads); exiting now (status 3)")


def librdkafka_destroy_hung(d, code, plugin):
    """Whether `d`, stopped with exit code `code`, met that bug in the destroy
    of `plugin`'s consumer (above): status 0 with the line that left its
    client running, or status 3 with the stop guard's line for it. Its
    ThreadSanitizer report of the librdkafka threads left at the exit, if
    any, is then forgiven at teardown."""
    text = d.log_text()
    hung = ((code == 0 and LIBRDKAFKA_DESTROY_LEFT.format(plugin) in text) or
            (code == 3 and LIBRDKAFKA_DESTROY_HUNG.format(plugin) in text))
    d.librdkafka_hung = d.librdkafka_hung or hung
    return hung


def _only_librdkafka_thread_leaks(text):
    """Whether every sanitizer report in `text` is ThreadSanitizer's thread
    leak of one of librdkafka's threads (named rdk:...)."""
    if any(m in text for m in SANITIZER_MARKERS if m != "ThreadSanitizer"):
        return False
    leaks = re.findall(r"WARNING: ThreadSanitizer: thread leak \(pid=\d+\)\n\s*"
                       r"Thread T\d+ '(rdk:[^']*)'", text)
    return len(leaks) == text.count("WARNING: ThreadSanitizer:")


def lsan_tracer_crashed(code, log):
    """Whether a process that aborted did so because LeakSanitizer's own
    tracer crashed at exit ("Tracer caught signal 11", google/sanitizers
    issue 1353: a sanitizer-runtime bug, seen once in the ASan pass under
    load), with no sanitizer report: its leak check could not run, which
    says nothing about the code. Warned about, not failed."""
    if code != -signal.SIGABRT or "Tracer caught signal" not in log or \
            "LeakSanitizer has encountered a fatal error" not in log or \
            any(marker in log for marker in SANITIZER_MARKERS):
        return False
    warnings.warn("LeakSanitizer's tracer crashed at exit (google/sanitizers#1353); "
                  "that process's leak check did not run")
    return True


class Child:
    """A process the tests started (self.proc), its output in self.log_file
    (self._log while it runs)."""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self):
        log = getattr(self, "_log", None)
        if log and not log.closed:
            log.close()

    def _signal_and_wait(self, sig, timeout):
        """Send `sig` unless it has exited, wait up to `timeout` s, then
        SIGKILL it. True when it exited by itself."""
        if self.proc.poll() is not None:
            return True
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return False

    def log_text(self):
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        """The log's last `lines` lines, leaving out the access log's lines
        for successful requests (a test that polls an endpoint would fill
        the tail with them and hide what went wrong); says how many."""
        kept, left_out = [], 0
        for line in self.log_text().splitlines():
            if _ROUTINE_ACCESS.match(line):
                left_out += 1
            else:
                kept.append(line)
        head = (f"({left_out} access log lines of 2xx/3xx answers left out)\n"
                if left_out else "")
        return head + "\n".join(kept[-lines:])


# An access log line of a request answered 2xx or 3xx (log_tail leaves it out).
_ROUTINE_ACCESS = re.compile(r"^\S+ INFO  \[http\] [A-Z]+ \S+ [23]\d\d ")


class _Proc(subprocess.Popen):
    """A Popen that remembers whether its exit was waited for: a daemon that
    exited while nobody asked (no wait(), no signal sent through the Daemon)
    died during its test, which the fixture's teardown reports."""
    waited = False

    def wait(self, timeout=None):
        code = super().wait(timeout)
        self.waited = True
        return code


class Daemon(Child):
    """One evhostd process with its own config dir, state dir, port and log."""

    def __init__(self, binary, config_dir, state_dir, port, env=None):
        self.binary = Path(binary)
        self.config_dir = Path(config_dir)
        self.state_dir = Path(state_dir)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config_file = self.config_dir / "evhost.conf"
        self.log_file = self.config_dir / "evhostd.log"
        self.env = env
        self.proc = None
        # Exit code expected when the fixture stops the daemon at teardown;
        # None: do not check.
        self.expect_exit_code = 0
        self.librdkafka_hung = False  # librdkafka_destroy_hung

    def command(self):
        return [str(self.binary), "-c", str(self.config_file)]

    def start(self):
        self._log = open(self.log_file, "ab")
        self.proc = _Proc(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                          stderr=subprocess.STDOUT, env=self.env)
        self.signalled = False
        return self

    def exited_unasked(self):
        """Has it exited while nobody asked (no wait(), no signal sent
        through this object)? Then it died during its test."""
        return (self.proc is not None and self.proc.poll() is not None
                and not self.proc.waited and not self.signalled)

    def wait_healthy(self, timeout=30.0):
        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"evhostd exited with {self.proc.returncode} during start:\n"
                                     f"{self.log_tail()}")
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        try:
            wait_until(healthy, timeout, 0.1, message=f"GET {self.url}/healthz == 200")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- evhostd log ---\n{self.log_tail()}") from None
        return self

    def wait_for_log(self, needle, timeout=10.0):
        """Wait until `needle` (a str) appears in the daemon's log."""
        return wait_until(lambda: needle in self.log_text(), timeout,
                          message=f"{needle!r} in the evhostd log")

    def send_signal(self, sig):
        self.signalled = True
        self.proc.send_signal(sig)

    def wait(self, timeout=30.0):
        """Wait for the process to exit on its own; return its exit code."""
        return self.proc.wait(timeout)

    def stop(self, signal=signal.SIGTERM, timeout=30.0):
        """Send `signal`, wait up to `timeout` s (then SIGKILL) and return the
        exit code as Popen reports it (negative: killed by that signal)."""
        if self.proc is None:
            return None
        exited = self._signal_and_wait(signal, timeout)
        self._close_log()
        if not exited:
            raise AssertionError(f"evhostd did not exit within {timeout:g}s of {signal!r}; "
                                 f"killed it\n{self.log_tail()}")
        return self.proc.returncode

    def sanitizer_report(self):
        text = self.log_text()
        if self.librdkafka_hung and _only_librdkafka_thread_leaks(text):
            return None
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200):i + 4000]
        return None

    # HTTP conveniences
    def get(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.get(self.url + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.post(self.url + path, **kw)

    def head(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.head(self.url + path, **kw)

    def put(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.put(self.url + path, **kw)

    def patch(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.patch(self.url + path, **kw)

    def delete(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.delete(self.url + path, **kw)

    def get_raw(self, path, headers=None):
        """GET `path` sent as it is (requests would re-encode a bad escape
        into a good one): (status, Content-Type, parsed JSON body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
        return resp.status, resp.getheader("Content-Type"), body


class DaemonFactory:
    """Writes configurations and starts daemons for one test (the `evhostd`
    fixture). Call it: evhostd(config, dropins, brokers=..., wait=True)."""

    def __init__(self, build_dir, tmp_path, default_brokers=None):
        self.build_dir = Path(build_dir)
        self.binary = self.build_dir / "host" / "evhostd"
        self.plugin_dir = self.build_dir / "plugins"
        self.tmp_path = Path(tmp_path)
        self.default_brokers = default_brokers
        self.daemons = []
        self._n = 0

    def write_config(self, config=None, dropins=None, *, config_dir=None, state_dir=None,
                     port=None, brokers=None):
        """Write evhost.conf (+ conf.d/NAME from `dropins`) with test defaults
        filled in; return (config_dir, state_dir, port)."""
        self._n += 1
        config_dir = Path(config_dir or self.tmp_path / f"evhost{self._n}")
        state_dir = Path(state_dir or config_dir / "state")
        config_dir.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()

        sections = {name: dict(keys or {}) for name, keys in (config or {}).items()}
        host = sections.setdefault("host", {})
        host.setdefault("plugin_dir", str(self.plugin_dir))
        host.setdefault("state_dir", str(state_dir))
        sections.setdefault("http", {}).setdefault("listen", f"127.0.0.1:{port}")
        # 8 HTTP workers rather than the default 32: as many as any test keeps
        # busy at once (one that needs more says so), and each thread started
        # costs a sanitized daemon (ThreadSanitizer's: a quarter of the CPU of
        # test_crud's tests with 32).
        sections["http"].setdefault("threads", 8)
        kafka = sections.setdefault("kafka", {})
        kafka.setdefault("brokers", brokers or self.default_brokers or "embedded")
        # Plain text logs are easier to read in a failed test's output.
        sections.setdefault("log", {}).setdefault("format", "text")
        sections["log"].setdefault("level", "debug")
        write_ini(config_dir / "evhost.conf", sections)

        confd = config_dir / "conf.d"
        confd.mkdir(exist_ok=True)
        for name, content in (dropins or {}).items():
            if isinstance(content, str):
                (confd / name).write_text(content)
            else:
                write_ini(confd / name, content)
        return config_dir, state_dir, port

    def __call__(self, config=None, dropins=None, *, brokers=None, wait=True, timeout=None,
                 env=None, state_dir=None, port=None, config_dir=None):
        if not self.binary.exists():
            raise AssertionError(f"{self.binary} does not exist: build first "
                                 f"(or set EVHOST_BUILD_DIR)")
        config_dir, state_dir, port = self.write_config(config, dropins, config_dir=config_dir,
                                                        state_dir=state_dir, port=port,
                                                        brokers=brokers)
        d = Daemon(self.binary, config_dir, state_dir, port,
                   env=dict(os.environ, **(env or {})))
        self.daemons.append(d)
        d.start()
        if wait:
            d.wait_healthy(timeout or health_timeout())
        return d

    def run(self, args, config=None, dropins=None, timeout=60, env=None, **kw):
        """Run evhostd once with `args` (e.g. ["--check-config"]) against a
        freshly written configuration (and `env` added to the environment);
        return the CompletedProcess."""
        config_dir, _, _ = self.write_config(config, dropins, **kw)
        run_env = dict(os.environ, **(env or {}))

        def once():
            return subprocess.run([str(self.binary), "-c", str(config_dir / "evhost.conf"),
                                   *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout,
                                  env=run_env)
        r = once()
        # LeakSanitizer's tracer crashed at exit: it met a stale thread-local
        # block of a plugin --check-config loaded and unloaded ("DTLS ... at
        # 0x...cb", google/sanitizers#1353), the same again on every run of
        # that configuration. The run (it changes nothing) once more without
        # the leak check gives its own verdict; the warning says it was skipped.
        if "--check-config" in args and lsan_tracer_crashed(r.returncode, r.stderr):
            run_env["ASAN_OPTIONS"] = ":".join(
                o for o in (run_env.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
            r = once()
        return r

    def teardown(self):
        """Stop every daemon still running; return a list of problems found
        (unexpected exit codes, sanitizer reports)."""
        problems = []
        for d in self.daemons:
            if d.proc is None:
                continue
            was_running = d.running()
            unasked = d.exited_unasked()
            try:
                code = d.stop(timeout=30)
            except AssertionError as exc:
                problems.append(str(exc))
                continue
            if unasked:
                problems.append(f"evhostd ({d.config_dir}) exited with {code} during the test, "
                                f"which did not wait for it\n{d.log_tail()}")
            if (was_running and d.expect_exit_code is not None and code != d.expect_exit_code
                    and not lsan_tracer_crashed(code, d.log_text())):
                problems.append(f"evhostd ({d.config_dir}) exited with {code} on SIGTERM, "
                                f"expected {d.expect_exit_code}\n{d.log_tail()}")
            report = d.sanitizer_report()
            if report:
                problems.append(f"sanitizer report from evhostd ({d.config_dir}):\n{report}")
        return problems


def health_timeout():
    # Sanitizer builds start several times slower.
    return float(os.environ.get("EVHOST_TEST_START_TIMEOUT", "30"))


# ------------------------------------------------------ OpenTelemetry Collector

OTELCOL_SCRIPT = REPO_ROOT / "scripts" / "otelcol"

# scripts/otelcol build's outcome in this process (the one begun by scripts/test,
# or the process's own): (path, None) or (None, error).
_otelcol_build = None


def otelcol_pending(prefix, timeout=900.0):
    """The binary's path from a build scripts/test has begun in the background
    (its files PREFIX.rc, written last, PREFIX.path and PREFIX.log), once it
    has ended: waits up to `timeout` s. Raises RuntimeError when it failed or
    did not end in time."""
    rc_file, deadline = Path(prefix + ".rc"), time.monotonic() + timeout
    while not rc_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"scripts/test's build of the test OpenTelemetry Collector "
                               f"had not ended after {timeout:.0f} s ({prefix}.log)")
        time.sleep(0.5)
    rc = rc_file.read_text().strip()
    if rc != "0":
        log = Path(prefix + ".log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"scripts/test's build of the test OpenTelemetry Collector failed "
                           f"(scripts/otelcol build exited {rc}):\n{log}")
    lines = [line for line in Path(prefix + ".path").read_text().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def otelcol_binary():
    """The test collector's binary (tests/otelcol): $EVHOST_OTELCOL as
    scripts/test exports it, or once the build it has begun in the background
    ends ($EVHOST_OTELCOL_PENDING), else what `scripts/otelcol build` builds
    (once per process; a minute or two the first time, then cached). Raises
    RuntimeError saying why when there is none."""
    global _otelcol_build
    given = os.environ.get("EVHOST_OTELCOL")
    if given is None and os.environ.get("EVHOST_OTELCOL_PENDING"):
        if _otelcol_build is None:  # waited for once per process, failed or not
            try:
                _otelcol_build = (otelcol_pending(os.environ["EVHOST_OTELCOL_PENDING"]), None)
            except (OSError, RuntimeError) as exc:
                _otelcol_build = (None, str(exc))
        given, error = _otelcol_build
        if error:
            raise RuntimeError(error)
    if given is not None:
        if not given:
            raise RuntimeError("EVHOST_OTELCOL is empty: scripts/test could not build the test "
                               "OpenTelemetry Collector (see 'scripts/otelcol build' in its "
                               "output), or unset it to have the tests build it")
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RuntimeError(f"EVHOST_OTELCOL={given} is not an executable file "
                               f"(scripts/otelcol build prints the right path)")
        return path
    if _otelcol_build is None:
        try:
            r = subprocess.run([str(OTELCOL_SCRIPT), "build"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=1200)
            out = r.stdout.strip().splitlines()
            if r.returncode == 0 and out and Path(out[-1]).is_file():
                _otelcol_build = (Path(out[-1]), None)
            else:
                _otelcol_build = (None, f"scripts/otelcol build failed ({r.returncode}):\n"
                                        f"{r.stderr.strip()}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            _otelcol_build = (None, f"scripts/otelcol build failed: {exc}")
    path, error = _otelcol_build
    if error:
        raise RuntimeError(f"no test OpenTelemetry Collector: {error}")
    return path


def otlp_value(v):
    """An OTLP JSON AnyValue as a Python value (intValue comes as a string)."""
    if not v:
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])  # also "NaN", "Infinity" as protojson writes them
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    if "arrayValue" in v:
        return [otlp_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return attrs((v["kvlistValue"] or {}).get("values", []))
    raise ValueError(f"unknown OTLP value {v!r}")


def attrs(kvs):
    """OTLP JSON attributes [{"key": k, "value": {"stringValue": v}}, ...] as
    {k: v} (ints as int, booleans as bool, doubles as float)."""
    return {kv["key"]: otlp_value(kv.get("value")) for kv in (kvs or [])}


def otlp_spans(lines):
    """The spans in OTLP JSON trace export requests, one request per item of
    `lines` (str), as a flat list of dicts: each span's OTLP JSON with its
    "attributes" (and its events' "attributes") flattened by attrs(), plus
    "resource" (its resource's attributes, flattened) and "scope" (the
    instrumentation scope's dict)."""
    out = []
    for line in lines:
        for rs in json.loads(line).get("resourceSpans") or []:
            resource = attrs((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or []:
                scope = ss.get("scope") or {}
                for span in ss.get("spans") or []:
                    s = dict(span)
                    s["attributes"] = attrs(span.get("attributes"))
                    if span.get("events"):
                        s["events"] = [dict(e, attributes=attrs(e.get("attributes")))
                                       for e in span["events"]]
                    s["resource"] = resource
                    s["scope"] = scope
                    out.append(s)
    return out


class Collector(Child):
    """A real OpenTelemetry Collector (tests/otelcol, see scripts/otelcol)
    receiving OTLP/HTTP on 127.0.0.1 (`endpoint`, e.g. "http://127.0.0.1:PORT";
    traces go to endpoint + "/v1/traces") and writing every batch it receives
    as a line of OTLP JSON to a file, which spans() reads back.

    Its config, spans file and log live in `directory` (a temporary one,
    removed by close(), when none is given). stop() and start() again reuse
    the same port, for "collector down" tests; the spans file is appended to,
    so spans from before a restart stay. Also a context manager: started on
    entry, stopped and closed on exit.

    tls=(cert, key[, client_ca]): OTLP over HTTPS (`endpoint` is then
    "https://..."); with client_ca, clients must show a certificate it signed;
    bearer_token: requests without "Authorization: Bearer <token>" are refused
    with 401 (the contrib bearertokenauth extension).
    """

    def __init__(self, directory=None, port=None, binary=None, tls=None, bearer_token=None):
        self.tls = tls
        self.bearer_token = bearer_token
        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="evhost-otelcol-")
            directory = self._tmp.name
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = Path(binary) if binary else None
        self.config_file = self.dir / "otelcol.yaml"
        self.spans_file = self.dir / "spans.jsonl"
        self.log_file = self.dir / "otelcol.log"
        self.proc = None
        self._log = None

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def traces_url(self):
        return self.endpoint + "/v1/traces"

    def _write_config(self):
        q = json.dumps  # a JSON string is a valid YAML scalar, whatever the path holds
        http = f"""\
        endpoint: {q(f"127.0.0.1:{self.port}")}
"""
        if self.tls:
            http += f"""\
        tls:
          cert_file: {q(str(self.tls[0]))}
          key_file: {q(str(self.tls[1]))}
"""
            if len(self.tls) > 2:
                http += f"""\
          client_ca_file: {q(str(self.tls[2]))}
"""
        extensions, service_extensions = "", ""
        if self.bearer_token:
            http += """\
        auth:
          authenticator: bearertokenauth
"""
            extensions = f"""\
extensions:
  bearertokenauth:
    token: {q(self.bearer_token)}
"""
            service_extensions = "  extensions: [bearertokenauth]\n"
        self.config_file.write_text(f"""\
{extensions}receivers:
  otlp:
    protocols:
      http:
{http}exporters:
  file:
    path: {q(str(self.spans_file))}
    format: json
    append: true
    flush_interval: 100ms
service:
{service_extensions}  telemetry:
    metrics:
      level: none
    logs:
      level: info
      encoding: console
      output_paths: [{q(str(self.log_file))}]
      error_output_paths: [{q(str(self.log_file))}]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
""")

    def start(self, timeout=30.0):
        """Start it and wait (up to `timeout` s) until its port accepts
        connections. Raises RuntimeError (no binary) or AssertionError (it did
        not come up; with its log's tail)."""
        if self.running():
            return self
        if self.binary is None:
            self.binary = otelcol_binary()
        # Else the wait below would take that listener for the collector.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            raise AssertionError(f"something else listens on 127.0.0.1:{self.port} already; "
                                 f"not starting the OpenTelemetry Collector there")
        except OSError:
            pass
        self._write_config()
        self.spans_file.touch()
        # Errors before its logger exists (a bad config) go to stderr: same file.
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config_file)],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._close_log()
                raise AssertionError(f"the OpenTelemetry Collector exited with {code} during "
                                     f"start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise AssertionError(f"the OpenTelemetry Collector did not accept connections "
                                     f"on {self.endpoint} within {timeout:g}s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout=15.0):
        """Stop it (SIGTERM, then SIGKILL after `timeout` s); it flushes
        what it received to the spans file first. Returns the exit code."""
        if self.proc is None:
            return None
        self._signal_and_wait(signal.SIGTERM, timeout)
        self._close_log()
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self, timeout=30.0):
        self.stop()
        return self.start(timeout)

    def close(self):
        """Stop it and remove its temporary directory (if it made one)."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


    def spans(self):
        """Every span received so far (see otlp_spans), in arrival order. A
        last line still being written is left for the next call."""
        try:
            data = self.spans_file.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        complete, last = lines[:-1], lines[-1]
        texts = [ln.decode("utf-8", "replace") for ln in complete if ln.strip()]
        if last.strip():
            # No newline after it yet: whole if it parses, else half-written.
            try:
                json.loads(last)
                texts.append(last.decode("utf-8", "replace"))
            except ValueError:
                pass
        return otlp_spans(texts)

    def wait_spans(self, pred=lambda s: True, count=1, timeout=30.0):
        """Wait until at least `count` received spans satisfy pred(span);
        return those spans. Raises AssertionError, naming the spans seen,
        after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.spans()
            matching = [s for s in seen if pred(s)]
            if len(matching) >= count:
                return matching
            if time.monotonic() >= deadline:
                names = [s.get("name") for s in seen]
                state = "" if self.running() else " (the collector is not running)"
                raise AssertionError(f"expected {count} matching span(s) within {timeout:g}s, "
                                     f"got {len(matching)}{state}; received {len(seen)}: "
                                     f"{names}")
            time.sleep(0.1)


def consumer_lag(d, topic):
    """evhost_consumer_lag of `topic` on d's /metrics: {partition: lag}."""
    found = {}
    for labels, v in re.findall(r'^evhost_consumer_lag\{([^}]*)\} (\S+)$',
                                d.get("/metrics").text, re.M):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("topic") == topic:
            found[int(lab["partition"])] = float(v)
    return found


def probe_seen(d):
    """The events the probe fixture plugin (tests/fixtures/probe.c) handled."""
    return d.get("/probe/seen").json()


def probe_wait_seen(d, n, timeout=30):
    """Wait until the probe has handled `n` events; return them. Raises
    AssertionError naming how many it handled and what the daemon's
    metrics said of its outbox, lag, retries and dead letters."""
    try:
        return wait_until(lambda: (lambda r: r if len(r) >= n else None)(probe_seen(d)),
                          timeout=timeout, message=f"probe saw {n} events")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: it saw {len(probe_seen(d))}\n"
                             f"{_delivery_metrics(d)}") from None


# The /metrics series that say where events are on their way to a handler.
_DELIVERY_SERIES = ("evhost_outbox_pending", "evhost_outbox_last_delivery", "evhost_consumer_lag",
                    "evhost_events_published_total", "evhost_events_handled_total",
                    "evhost_dlq_messages_total")


def _delivery_metrics(d):
    """The daemon's delivery series (non-zero lags only), for a failure's
    message."""
    try:
        text = d.get("/metrics", timeout=10).text
    except requests.RequestException as exc:
        return f"(no /metrics: {exc!r})"
    lines = [ln for ln in text.splitlines() if ln.startswith(_DELIVERY_SERIES) and
             not (ln.startswith("evhost_consumer_lag") and ln.endswith(" 0"))]
    return "\n".join(lines) or "(no delivery series in /metrics)"


def probe_slow_handler(d, ms):
    """One event handled by the probe ({"n": 0}), then one whose handler
    sleeps `ms` ms ({"n": 1}): returns once that handler has begun, holding
    its plugin's database."""
    assert d.post("/probe/publish?key=k", json={"n": 0}).status_code == 200
    probe_wait_seen(d, 1)
    assert d.post("/probe/publish?key=k", json={"n": 1, "sleep_ms": ms}).status_code == 200
    d.wait_for_log(f"probe: handler sleeping {ms} ms", timeout=30)
    time.sleep(0.2)


@contextlib.contextmanager
def probe_held_handler(d, hold):
    """As probe_slow_handler, but the second handler holds its plugin's
    database until the block ends (while the file `hold`, made here,
    exists; a minute at most): a test waits for what it needs to, not for a
    handler's fixed time."""
    hold = Path(hold)
    hold.write_text("")
    held = f"probe: event held while {hold} exists"
    # A second use in one test finds the first's line in the log: this
    # one's is the next (the redrive test met the first's, and went on
    # before the handler held the database).
    before = d.log_text().count(held)
    try:
        assert d.post("/probe/publish?key=k", json={"n": 0}).status_code == 200
        probe_wait_seen(d, 1)
        assert d.post("/probe/publish?key=k",
                      json={"n": 1, "hold_while": str(hold)}).status_code == 200
        wait_until(lambda: d.log_text().count(held) > before, timeout=30,
                   message=f"'{held}' in the log")
        time.sleep(0.2)
        yield
    finally:
        hold.unlink()


def count_rows(state_dir, plugin, table):
    """Rows of `table` in a plugin's database under the daemon's state dir."""
    db = sqlite3.connect(str(Path(state_dir) / f"{plugin}.db"))
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def outbox_count(state_dir, plugin):
    """A plugin's events not yet acknowledged by Kafka."""
    return count_rows(state_dir, plugin, "evh_outbox")


# ------------------------------------------------------------ JWKS provider

class JwksRequest:
    """One request a JwksServer received: method, target (path and query as
    sent), version ("HTTP/1.1"), headers ({lower-case name: value}), time
    (time.monotonic() when it came), accepted (when its connection was
    accepted, before any TLS handshake, whose time varies), done (when its
    answer was written, or failed to be) and answer (what it was given, e.g.
    "200 chunked", "500", "200 truncated")."""

    def __init__(self, method, target, version, headers, when, accepted=None):
        self.method, self.target, self.version = method, target, version
        self.headers = headers
        self.time = when
        self.accepted = when if accepted is None else accepted
        self.done = None
        self.answer = None

    def __repr__(self):
        return f"<{self.method} {self.target} {self.version} -> {self.answer}>"


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.owner._answer(self)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format, *args):  # noqa: A002 - quiet, the requests are recorded
        pass


class _JwksHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner, address, family):
        self.owner = owner
        self.address_family = family
        self.accepted = threading.local()  # the connection's accept time, per thread
        self._accept_times = {}  # socket: when accepted, until its thread takes it
        super().__init__(address, _JwksHandler)

    def process_request(self, request, client_address):
        # On the accepting thread: its time, before the connection's thread
        # starts and shakes hands.
        with self.owner._lock:
            self._accept_times[request] = time.monotonic()
        super().process_request(request, client_address)

    def server_bind(self):
        # HTTPServer's would look the address up with getfqdn(): not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread: a TLS handshake that fails or
        # stalls holds up no other connection.
        owner = self.owner
        with owner._lock:
            self.accepted.at = self._accept_times.pop(request, None)
            owner.connections += 1
        request.settimeout(10)
        tls = owner.tls
        conn = request
        if owner.handshake_delay:
            owner._stopping.wait(owner.handshake_delay)
        if tls:
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(str(tls[0]), str(tls[1]))
                conn = ctx.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                with owner._lock:
                    owner.tls_failures.append(repr(exc))
                return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except OSError:
            pass  # the client went away: nothing to answer
        finally:
            if conn is not request:
                try:
                    conn.unwrap()  # close_notify: the end of a close-delimited answer
                except (OSError, ValueError):
                    pass
                conn.close()

    def handle_error(self, request, client_address):
        # Quiet (a test asserts on what was recorded), but a fault of the
        # server itself is kept for the one reading `errors`.
        import traceback
        with self.owner._lock:
            self.owner.errors.append(traceback.format_exc())


class JwksServer:
    """An identity provider's jwks_uri on 127.0.0.1 (or host="localhost",
    then also on ::1 when this machine has it, same port): answers GET
    `path` (with its query, if any, compared as sent) with the JSON of the
    mutable dict `jwks`; other targets get 404.

    tls=(cert, key) for https (the default when given; may be changed while
    running: each new connection uses the pair set then), None for plain
    http. `url` is what evhostd's jwt_jwks_url takes.

    Settable at any time, for every later answer:
      framing  "length" (Content-Length), "chunked" (Transfer-Encoding:
               chunked, several chunks written apart), "close" (no length:
               the body ends with the connection, written in pieces)
      status   an HTTP status to answer instead (with `headers`, e.g.
               {"Location": ...}, and a short text body)
      body     raw bytes to send instead of the JSON of `jwks`
      truncate True: announce a Content-Length larger than the body sent,
               then close
      delay    seconds to wait before answering (stop() ends the wait)
      hold     seconds the connection stays open after the answer, before
               it is closed (stop() ends the wait): with framing "close",
               a client has the whole answer but cannot tell it is whole
      handshake_delay
               seconds a new connection waits, before its TLS handshake
               (or its request, over http), for anything from the server
    answer_next(**how) queues a one-off answer (the same names, plus jwks)
    for the next request; queued ones are used in order before the
    standing settings.

    Records every request in `requests` (JwksRequest), the connections it
    accepted in `connections`, failed TLS handshakes in `tls_failures` and
    its own faults (tracebacks) in `errors`.
    stop() and start() again reuse the same port (for "provider down"
    tests); a context manager: started on entry, stopped on exit.
    """

    def __init__(self, jwks=None, *, tls=None, path="/realms/shop/protocol/openid-connect/certs",
                 port=None, host="127.0.0.1"):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("JwksServer listens on loopback only: 127.0.0.1 or localhost")
        self.jwks = jwks if jwks is not None else {"keys": []}
        self.tls = tls
        self.path = path
        self.host = host
        self.port = port or free_port()
        self.framing = "length"
        self.status = None
        self.headers = {}
        self.body = None
        self.truncate = False
        self.delay = 0
        self.hold = 0
        self.handshake_delay = 0
        self._requests = []
        self.connections = 0
        self.tls_failures = []
        self.errors = []
        self._queue = []
        self._lock = threading.Lock()
        self._servers = []
        self._threads = []
        self._stopping = threading.Event()

    # -- addresses
    @property
    def scheme(self):
        return "https" if self.tls else "http"

    def url_for(self, target):
        return f"{self.scheme}://{self.host}:{self.port}{target}"

    @property
    def url(self):
        return self.url_for(self.path)

    # -- what it answers
    def answer_next(self, **how):
        allowed = {"framing", "status", "headers", "body", "truncate", "delay", "hold", "jwks"}
        if set(how) - allowed:
            raise ValueError(f"answer_next takes {sorted(allowed)}, not {sorted(set(how))}")
        with self._lock:
            self._queue.append(how)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def wait_requests(self, n, timeout=10.0):
        """Wait until at least n requests came; return them all."""
        def enough():
            got = self.requests
            return got if len(got) >= n else None
        try:
            return wait_until(enough, timeout, 0.05)
        except AssertionError:
            raise AssertionError(f"expected {n} request(s) at {self.url} within {timeout:g}s, "
                                 f"got {self.requests}") from None

    def _answer(self, h):
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = JwksRequest(h.command, h.path, h.request_version, headers, time.monotonic(),
                          getattr(h.server.accepted, "at", None))
        with self._lock:
            how = self._queue.pop(0) if self._queue else {}
            self._requests.append(req)
            framing = how.get("framing", self.framing)
            status = how.get("status", self.status)
            extra = dict(how.get("headers", self.headers) or {})
            body = how.get("body", self.body)
            truncate = how.get("truncate", self.truncate)
            delay = how.get("delay", self.delay)
            hold = how.get("hold", self.hold)
            jwks = how.get("jwks", self.jwks)
            body_json = json.dumps(jwks, indent=2).encode() if body is None else None
        h.close_connection = True
        if delay:
            self._stopping.wait(delay)
        if status is None and (h.command != "GET" or h.path != self.path):
            status = 404 if h.command == "GET" else 405
            body = None
        if status is not None:
            payload = body if body is not None else f"{status}\n".encode()
            ctype = "text/plain"
            req.answer = str(status)
        else:
            payload = body if body is not None else body_json
            ctype = "application/json"
            req.answer = f"200 {'truncated' if truncate else framing}"
        head = [f"HTTP/1.1 {status or 200} {_reason(status or 200)}",
                f"Content-Type: {ctype}", "Cache-Control: max-age=300",
                "Connection: close"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        pieces = [payload]
        if truncate:
            head.append(f"Content-Length: {len(payload) + 1000}")
            pieces = [payload[:len(payload) // 2]]
        elif framing == "chunked" and status is None:
            head.append("Transfer-Encoding: chunked")
            cuts = sorted({0, 1, 8, len(payload) // 3, len(payload) // 2, len(payload)})
            chunks = [payload[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
            pieces = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]
        elif framing == "close" and status is None:
            third = max(1, len(payload) // 3)
            pieces = [payload[:third], payload[third:2 * third], payload[2 * third:]]
        else:
            head.append(f"Content-Length: {len(payload)}")
        try:
            h.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode())
            for i, piece in enumerate(pieces):
                if i:
                    h.wfile.flush()
                    time.sleep(0.01)  # apart: the reader gets them in separate reads
                h.wfile.write(piece)
            h.wfile.flush()
        except OSError:
            req.answer += " (the client had gone)"
            raise
        finally:
            req.done = time.monotonic()
        if hold:
            self._stopping.wait(hold)

    # -- running
    def start(self):
        if self._servers:
            return self
        self._stopping.clear()
        addresses = [(socket.AF_INET, ("127.0.0.1", self.port))]
        if self.host == "localhost":
            addresses.append((socket.AF_INET6, ("::1", self.port)))
        for family, address in addresses:
            try:
                server = _JwksHttpServer(self, address, family)
            except OSError:
                if family == socket.AF_INET6:
                    continue  # no ::1 here: localhost is 127.0.0.1 alone
                self.stop()
                raise
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"jwks-{address[0]}:{self.port}", daemon=True)
            t.start()
            self._servers.append(server)
            self._threads.append(t)
        return self

    def stop(self):
        """Stop listening (the port is free again at once); answers held by a
        delay are let go."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=10)
        self._servers, self._threads = [], []

    @property
    def running(self):
        return bool(self._servers)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _reason(status):
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Whatever"


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1: it tunnels (CONNECT), as corporate proxies
    do for HTTPS, and forwards plain requests whose target names the server
    ("POST http://HOST:PORT/PATH"), as they do for HTTP. `routes` maps a
    requested host name to the address it really goes to, so that a client
    can ask for a name no DNS knows while every byte stays on loopback.
    Records each CONNECT's target (`connects`), each forwarded request's
    method and target (`forwards`) and the Proxy-Authorization of both
    (`auths`); `refuse` ("407 Proxy Authentication Required", say) answers
    CONNECT or a plain request with that status instead; `raw` (bytes)
    answers CONNECT with those bytes as they are, then closes."""

    def __init__(self, routes=None):
        self.routes = dict(routes or {})
        self.connects, self.forwards, self.auths = [], [], []
        self.refuse = None
        self.raw = None
        self.port = None
        self._sock = None
        self._threads = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def __enter__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stopping.set()
        for t in list(self._threads):
            t.join(timeout=5)
        if self._sock:
            self._sock.close()
            self._sock = None

    def _accept(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, conn):
        upstream = None
        try:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            raw_head, rest = head.split(b"\r\n\r\n", 1)
            lines = raw_head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in
                       (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            with self._lock:
                (self.connects if method == "CONNECT" else self.forwards).append(
                    target if method == "CONNECT" else (method, target))
                self.auths.append(headers.get("proxy-authorization"))
            if method != "CONNECT" and target.startswith("http://") and self.refuse:
                conn.sendall(f"HTTP/1.1 {self.refuse}\r\nContent-Length: 0\r\n\r\n".encode())
                return
            if method != "CONNECT" and target.startswith("http://"):
                authority, _, path = target[len("http://"):].partition("/")
                host, port = authority.rsplit(":", 1)
                upstream = socket.create_connection(
                    (self.routes.get(host.strip("[]"), host.strip("[]")), int(port)), timeout=10)
                kept = [ln for ln in lines[1:]
                        if not ln.lower().startswith("proxy-authorization:")]
                upstream.sendall("\r\n".join([f"{method} /{path} {version}", *kept])
                                 .encode("latin-1") + b"\r\n\r\n" + rest)
                self._relay(conn, upstream)
                return
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.refuse:
                conn.sendall(f"HTTP/1.1 {self.refuse}\r\nContent-Length: 0\r\n\r\n".encode())
                return
            if self.raw is not None:
                conn.sendall(self.raw)
                return
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((self.routes.get(host, host), int(port)),
                                                timeout=10)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._relay(conn, upstream)
        except OSError:
            pass
        finally:
            conn.close()
            if upstream:
                upstream.close()

    def _relay(self, a, b):
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while not self._stopping.is_set():
            for key, _ in sel.select(timeout=0.2):
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)


class NotifySocket:
    """What systemd listens on for Type=notify services: an AF_UNIX datagram
    socket; each datagram is one notification (newline-separated KEY=VALUE)."""

    def __init__(self):
        # sun_path holds 108 bytes: keep it short, away from pytest's deep dirs.
        self.dir = tempfile.mkdtemp(prefix="evh-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, text)
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, needle, timeout=30):
        return wait_until(lambda: [m for m in self.messages if needle in m[1]], timeout,
                              message=f"notification {needle!r} (got {self.texts()})")

    def texts(self):
        return [m[1] for m in self.messages]

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
