"""Smoke tests of the test harness itself: the real Kafka broker through the
kcat helpers, the SMTP sink, and the evhostd fixture's configuration. If
these fail, every other system test's result means little."""

import configparser
import os
import signal
import smtplib
import socket
import subprocess
import threading
import time
from email.message import EmailMessage

import pytest

import evhost_testlib as lib


def test_produce_consume_with_key_and_headers(kafka_bootstrap, unique_name):
    topic = unique_name("smoke")
    lib.kafka_produce(topic, {"id": "42", "name": "Ada"}, key="42",
                      headers={"ce_type": "USER_CREATED", "ce_id": "e-1"})
    lib.kafka_produce(topic, "line one\nline two", key="42")

    msgs = lib.kafka_consume(topic, count=2, timeout=30)

    assert [m["value"] for m in msgs] == ['{"id": "42", "name": "Ada"}', "line one\nline two"]
    assert msgs[0]["key"] == "42"
    assert msgs[0]["headers"] == {"ce_type": "USER_CREATED", "ce_id": "e-1"}
    assert msgs[1]["headers"] == {}
    # Same key, same partition, in order.
    assert msgs[0]["partition"] == msgs[1]["partition"]
    assert msgs[1]["offset"] == msgs[0]["offset"] + 1


def test_tombstone_has_null_value(kafka_bootstrap, unique_name):
    topic = unique_name("smoke")
    lib.kafka_produce(topic, None, key="gone")
    [m] = lib.kafka_consume(topic, count=1, timeout=30)
    assert m["key"] == "gone"
    assert m["value"] is None


def test_consumer_group_commits_offsets(kafka_bootstrap, unique_name):
    topic, group = unique_name("smoke"), unique_name("group")
    for i in range(3):
        lib.kafka_produce(topic, f"m{i}", key=f"k{i}")

    first = lib.kafka_consume(topic, count=3, timeout=60, group=group)
    assert sorted(m["value"] for m in first) == ["m0", "m1", "m2"]

    lib.kafka_produce(topic, "m3", key="k3")
    # The group resumes after its committed offsets: only the new message.
    second = lib.kafka_consume(topic, count=1, timeout=60, group=group)
    assert [m["value"] for m in second] == ["m3"]
    # A new group starts from the beginning.
    assert len(lib.kafka_consume(topic, count=4, timeout=60, group=unique_name("g"))) == 4


def test_consume_waits_for_a_topic_created_later(kafka_bootstrap, unique_name):
    topic = unique_name("late")
    t = threading.Timer(1.5, lib.kafka_produce, args=(topic, "late"))
    t.start()
    try:
        msgs = lib.kafka_consume(topic, count=1, timeout=30)
    finally:
        t.join()
    assert [m["value"] for m in msgs] == ["late"]
    assert topic in lib.kafka_topics()


def test_consume_returns_what_arrived_within_timeout(kafka_bootstrap, unique_name):
    topic = unique_name("short")
    lib.kafka_produce(topic, "only")
    started = time.monotonic()
    msgs = lib.kafka_consume(topic, count=5, timeout=3)
    assert [m["value"] for m in msgs] == ["only"]
    assert time.monotonic() - started < 15


def _mail(to, subject, body):
    m = EmailMessage()
    m["From"] = "noreply@example.test"
    m["To"] = to
    m["Subject"] = subject
    m.set_content(body)
    return m


def test_kafka_script_names_the_variable_that_moves_a_port_in_use(tmp_path):
    # Often a broker an earlier run left: the message says how to stop it or
    # which variable moves the port, before anything is fetched or started.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        env = dict(os.environ, KAFKA_PORT=str(port), EVHOST_KAFKA_DIR=str(tmp_path / "kafka"))
        r = subprocess.run([str(lib.KAFKA_SCRIPT), "start"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"127.0.0.1:{port} (KAFKA_PORT) is already in use" in r.stderr, r.stderr
    assert "scripts/test: EVHOST_TEST_KAFKA_PORT" in r.stderr, r.stderr
    assert not (tmp_path / "kafka").exists()


def test_smtp_server_collects_mail(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as s:
        s.send_message(_mail("ada@example.test", "Welcome Ada", "Hello Ada"),
                       to_addrs=["ada@example.test", "audit@example.test"])

    m = smtp_server.wait_for(lambda m: m["Subject"] == "Welcome Ada", timeout=10)
    assert m["To"] == "ada@example.test"
    assert m.envelope_to == ["ada@example.test", "audit@example.test"]
    assert lib.mail_body(m).strip() == "Hello Ada"
    with pytest.raises(AssertionError):
        smtp_server.wait_for(lambda m: m["Subject"] == "never sent", timeout=0.3)


def test_smtp_server_down_and_up_on_same_port(smtp_server):
    port = smtp_server.port
    smtp_server.stop()
    with pytest.raises(OSError):
        smtplib.SMTP(smtp_server.host, port, timeout=5)

    smtp_server.start()
    assert smtp_server.port == port
    with smtplib.SMTP(smtp_server.host, port, timeout=10) as s:
        s.send_message(_mail("bob@example.test", "back", "again"))
    assert smtp_server.wait_for_count(1, timeout=10)[0]["Subject"] == "back"


def test_smtp_server_can_refuse_temporarily(smtp_server):
    smtp_server.reply = "451 4.3.0 try again later"
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as s:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.send_message(_mail("c@example.test", "refused", "x"))
    assert exc.value.smtp_code == 451
    assert smtp_server.messages == []


def test_smtp_server_with_auth():
    sink = lib.SmtpSink(auth=("evhost", "s3cret")).start()
    try:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as s:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login("evhost", "wrong")
            s.login("evhost", "s3cret")
            s.send_message(_mail("d@example.test", "authed", "x"))
        assert sink.wait_for_count(1)[0]["Subject"] == "authed"
    finally:
        sink.stop()


def test_wait_until_returns_value_and_times_out():
    calls = []
    assert lib.wait_until(lambda: calls.append(1) or len(calls) >= 3, timeout=5,
                          interval=0.01)
    with pytest.raises(AssertionError, match="timed out"):
        lib.wait_until(lambda: False, timeout=0.2, interval=0.05)


def test_free_port_is_bindable():
    import socket

    port = lib.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_config_writer_fills_test_defaults(tmp_path):
    factory = lib.DaemonFactory(tmp_path / "build", tmp_path)
    config_dir, state_dir, port = factory.write_config(
        {"kafka": {"retry.max_attempts": 2}, "plugin.user": {"enabled": True}},
        {"10-user.conf": {"plugin.user": {"enabled": False}}}, brokers="127.0.0.1:1")

    main = configparser.ConfigParser()
    main.read(config_dir / "evhost.conf")
    assert main["host"]["plugin_dir"] == str(tmp_path / "build" / "plugins")
    assert main["host"]["state_dir"] == str(state_dir)
    assert main["http"]["listen"] == f"127.0.0.1:{port}"
    assert main["kafka"]["brokers"] == "127.0.0.1:1"
    assert main["kafka"]["retry.max_attempts"] == "2"
    assert main["plugin.user"]["enabled"] == "true"
    dropin = configparser.ConfigParser()
    dropin.read(config_dir / "conf.d" / "10-user.conf")
    assert dropin["plugin.user"]["enabled"] == "false"


def test_evhostd_accepts_the_fixture_config(evhostd):
    r = evhostd.run(["--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_evhostd_starts_serves_health_and_stops_cleanly(evhostd):
    d = evhostd()
    assert d.get("/healthz").status_code == 200
    assert d.stop(signal.SIGTERM, timeout=30) == 0
    assert d.sanitizer_report() is None
