"""evhostd against a secured Apache Kafka: the user -> USER_CREATED -> welcome
mail flow over mutual TLS and over SASL_SSL (PLAIN), with the settings the
configuration reference shows, on the test broker's TLS listeners
(scripts/kafka makes its CA and certificates). Also what an admin sees when
they are wrong: --check-config, the start and a reload name the key's file and
line; an untrusted broker certificate is logged, readiness says Kafka is
unreachable, and the events wait in the outbox until a restart with the right
CA sends them.

librdkafka before 2.6.1 (Debian 12 ships 2.0.2) cannot authenticate with
SCRAM against Kafka 4; evhostd warns of it, and a test pins down what happens."""

import ctypes
import re
import signal
import time
import uuid
from pathlib import Path

import requests

import evhost_testlib as lib
from test_notifications import Env, welcome_to


def librdkafka_version():
    """rd_kafka_version() of the librdkafka evhostd links (0xMMmmrrpp)."""
    lib_ = ctypes.CDLL("librdkafka.so.1")
    lib_.rd_kafka_version.restype = ctypes.c_int
    return lib_.rd_kafka_version()


SCRAM_BROKEN = librdkafka_version() < 0x02060100
SCRAM_WARNING = "fails SCRAM authentication with Apache Kafka 4 brokers"


def mutual_tls(tls, ca=None):
    return {
        "rdkafka.security.protocol": "SSL",
        "rdkafka.ssl.ca.location": str(ca or tls.dir / "ca.crt"),
        "rdkafka.ssl.certificate.location": str(tls.dir / "client.crt"),
        "rdkafka.ssl.key.location": str(tls.dir / "client.key"),
    }


def sasl_ssl(tls, mechanism):
    return {
        "rdkafka.security.protocol": "SASL_SSL",
        "rdkafka.sasl.mechanisms": mechanism,
        "rdkafka.sasl.username": "evhost",
        "rdkafka.sasl.password_file": str(tls.dir / "sasl.password"),
        "rdkafka.ssl.ca.location": str(tls.dir / "ca.crt"),
    }


def ready(d):
    r = d.get("/readyz")
    return r.json() if r.status_code == 200 else None


def check_flow(env, smtp_server):
    """A user created over HTTP is greeted by mail, through the broker."""
    lib.wait_until(lambda: ready(env.d), timeout=30, message="/readyz never became 200")
    addr = f"tls.{uuid.uuid4().hex[:8]}@example.com"
    user = env.create_user("Tess", addr)
    smtp_server.wait_for(welcome_to(addr), timeout=60)
    # The event went through the real broker: read it back over plain text.
    got = lib.kafka_consume(env.topics["created"], timeout=30)
    assert any(user["id"] in (m["value"] or "") for m in got), got


def test_welcome_mail_over_mutual_tls(evhostd, tmp_path, unique_name, kafka_tls, smtp_server):
    token = tmp_path / "admin.token"
    token.write_text("admin-token-for-tls-tests-0123\n")
    env = Env(evhostd, tmp_path, unique_name, kafka_tls.ssl,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              extra={"kafka": mutual_tls(kafka_tls), "admin": {"token_file": str(token)}})
    check_flow(env, smtp_server)
    # The admin API's dead-letter reader is a client of its own, over TLS too.
    r = env.d.get("/admin/plugins/notifications/dlq", timeout=30,
                  headers={"Authorization": "Bearer admin-token-for-tls-tests-0123"})
    assert r.status_code == 200, r.text
    assert r.json()["messages"] == []


def test_welcome_mail_over_sasl_plain_and_tls(evhostd, tmp_path, unique_name, kafka_tls,
                                              smtp_server):
    env = Env(evhostd, tmp_path, unique_name, kafka_tls.sasl,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              extra={"kafka": sasl_ssl(kafka_tls, "PLAIN")})
    check_flow(env, smtp_server)


def test_untrusted_broker_is_reported_and_its_events_wait(evhostd, tmp_path, unique_name,
                                                          kafka_tls, smtp_server):
    notif = {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"}
    # The broker's certificate is not signed by the CA evhostd is told to trust.
    env = Env(evhostd, tmp_path, unique_name, kafka_tls.ssl, notif,
              extra={"kafka": mutual_tls(kafka_tls, ca=kafka_tls.dir / "other-ca.crt"),
                     "host": {"stop_timeout": "1s"}})
    env.d.wait_for_log("certificate verify failed", timeout=30)
    r = env.d.get("/readyz")
    assert r.status_code == 503 and r.json()["kafka"] == "unreachable", r.text

    # Users are still created; their events wait in the outbox.
    addr = f"waiting.{uuid.uuid4().hex[:8]}@example.com"
    user = env.create_user("Wanda", addr)
    time.sleep(2)
    assert not [m for m in smtp_server.messages if welcome_to(addr)(m)]
    assert env.d.stop() == 0

    # Restarted with the right CA on the same state: the event goes out.
    config = dict(env.config, kafka=mutual_tls(kafka_tls))
    evhostd(config, brokers=kafka_tls.ssl, state_dir=env.d.state_dir)
    msg = smtp_server.wait_for(welcome_to(addr), timeout=60)
    assert user["id"] in lib.mail_body(msg)


def test_check_config_asks_librdkafka(evhostd, tmp_path, kafka_tls):
    def check(kafka, brokers="192.0.2.1:9"):
        # A broker address nothing answers on: --check-config contacts none.
        return evhostd.run(["--check-config"], config={"kafka": dict(kafka, brokers=brokers)})

    # A misspelt property: the file and line of the key.
    r = check({"rdkafka.ssl.ca.locatoin": "/x"})
    assert r.returncode == 1, r.stdout
    assert "evhost.conf:" in r.stdout
    assert '[kafka] rdkafka.ssl.ca.locatoin: No such configuration property: ' \
           '"ssl.ca.locatoin"' in r.stdout
    # A bad value.
    r = check({"rdkafka.security.protocol": "TLS"})
    assert r.returncode == 1 and "[kafka] rdkafka.security.protocol: " in r.stdout, r.stdout
    # What only making a client finds: a CA file that is not there.
    r = check(mutual_tls(kafka_tls, ca=tmp_path / "no-such-ca.pem"))
    assert r.returncode == 1, r.stdout
    # Said at the line of the setting librdkafka names.
    m = re.search(r"^(\S+):(\d+): \[kafka\] rdkafka\.ssl\.ca\.location: librdkafka cannot "
                  r"make a client of the rdkafka\.\* settings: ssl\.ca\.location failed",
                  r.stdout, re.M)
    assert m, r.stdout
    line = Path(m.group(1)).read_text().splitlines()[int(m.group(2)) - 1]
    assert line.startswith("rdkafka.ssl.ca.location"), line
    # SASL without a user.
    settings = sasl_ssl(kafka_tls, "PLAIN")
    del settings["rdkafka.sasl.username"], settings["rdkafka.sasl.password_file"]
    r = check(settings)
    assert r.returncode == 1 and "sasl.username and sasl.password must be set" in r.stdout
    # The settings of the flow tests pass.
    for good in (mutual_tls(kafka_tls), sasl_ssl(kafka_tls, "PLAIN")):
        r = check(good)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "configuration OK" in r.stdout
    # Not with the embedded broker, which speaks plain text only.
    r = check(mutual_tls(kafka_tls), brokers="embedded")
    assert r.returncode == 1 and "brokers = embedded speaks plain text only" in r.stdout
    # SCRAM: a warning where this librdkafka cannot do it with Kafka 4.
    r = check(sasl_ssl(kafka_tls, "SCRAM-SHA-512"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (SCRAM_WARNING in r.stderr) == SCRAM_BROKEN, r.stderr


def test_bad_rdkafka_key_stops_the_start_with_its_line(evhostd):
    r = evhostd.run([], config={"kafka": {"rdkafka.linger.ms": "soon"}}, timeout=30)
    assert r.returncode == 1
    assert "evhost.conf:" in r.stderr and "[kafka] rdkafka.linger.ms: " in r.stderr, r.stderr


def test_rdkafka_keys_go_to_the_clients_they_are_for(evhostd, build_dir, unique_name):
    """A consumer's property is not handed to the producer, nor a
    producer's to the consumers: librdkafka would warn at every start that
    it ignores them (CONFWARN), though each is meant for the other kind."""
    d = evhostd({
        "kafka": {"rdkafka.linger.ms": "7", "rdkafka.max.poll.interval.ms": "400000",
                  "rdkafka.fetch.wait.max.ms": "200"},
        "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                         "topic": unique_name("kinds"), "group": unique_name("g")},
    })
    d.wait_for_log("probe: consumer started", timeout=30)
    log = d.log_text()
    # librdkafka: "Configuration property P is a consumer property and will
    # be ignored by this producer instance"
    assert "will be ignored by this" not in log, log
    assert d.get("/healthz").status_code == 200


def test_reload_with_a_bad_rdkafka_key_is_refused(evhostd):
    d = evhostd({"kafka": {"rdkafka.linger.ms": "5"}})
    (d.config_dir / "conf.d" / "50-local.conf").write_text(
        "[kafka]\nrdkafka.linger.ms = soon\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload refused: ", timeout=20)
    assert "50-local.conf:2: [kafka] rdkafka.linger.ms: " in d.log_text()
    assert d.get("/healthz").status_code == 200


def test_scram_against_kafka_4(evhostd, tmp_path, unique_name, kafka_tls, smtp_server):
    notif = {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"}
    env = Env(evhostd, tmp_path, unique_name, kafka_tls.sasl, notif,
              extra={"kafka": sasl_ssl(kafka_tls, "SCRAM-SHA-512"),
                     "host": {"stop_timeout": "1s"}})
    if not SCRAM_BROKEN:
        check_flow(env, smtp_server)
        assert SCRAM_WARNING not in env.d.log_text()
        return
    # This librdkafka: the warning at start, the broker's refusal in the log,
    # and readiness says Kafka is unreachable; nothing pretends to work.
    assert SCRAM_WARNING in env.d.log_text()
    env.d.wait_for_log("invalid credentials", timeout=30)
    r = env.d.get("/readyz")
    assert r.status_code == 503 and r.json()["kafka"] == "unreachable", r.text
    try:
        requests.get(env.d.url + "/healthz", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        raise AssertionError(f"evhostd stopped serving: {exc}") from None
