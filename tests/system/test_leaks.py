"""Secrets and personal data in everything evhost writes.

The docs promise that logs, dead-letter headers and traces carry no personal
data and no secrets (operations.md: logging, tracing, dead letters;
services.md). These tests run real daemons with user.so, notifications.so and
crud.so on real Kafka, a real SMTP server and a real OpenTelemetry Collector,
with `[log] level = debug` and every access log line, drive sign-ups, logins
(right and wrong), password changes, failed mails, poison events, dead
letters, a redrive and a replay, configuration errors, evhostctl and
/metrics, then look for the passwords, tokens, secrets and addresses used in
everything written: the log, stderr, dead-letter headers read back from
Kafka, the spans, evhostctl's output and the files in state_dir that are not
the plugins' own data."""

import json
import secrets
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

TEMPLATES = lib.TEMPLATES


def ctl(build_dir, d, *args, timeout=120):
    cmd = [str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file), *args]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def where(needles, texts):
    """[(needle name, source)] for each needle found in a text."""
    found = []
    for source, text in texts.items():
        for name, value in needles.items():
            if value and value in text:
                found.append((name, source))
    return found


def nearby(value, text, width=160):
    i = text.find(value)
    return text[max(0, i - width):i + len(value) + width] if i >= 0 else ""


class Secrets:
    """Every secret and personal value a test uses, each unique to it."""

    def __init__(self, tmp_path):
        tag = uuid.uuid4().hex[:8]
        self.values = {
            "jwt secret": "jwtsecret-" + secrets.token_hex(24),
            "admin token": "admintoken-" + secrets.token_hex(16),
            "admin password": "adminpw-" + secrets.token_hex(8),
            "user password": "userpw-" + secrets.token_hex(8),
            "wrong password": "wrongpw-" + secrets.token_hex(8),
            "new password": "newpw-" + secrets.token_hex(8),
            "smtp password": "smtppw-" + secrets.token_hex(8),
            "admin email": f"root.{tag}@admins.example.com",
            "user email": f"ada.{tag}@example.com",
            "new email": f"ada.king.{tag}@example.com",
            "stranger email": f"nobody.{tag}@example.com",
            "poison email": f"poison.{tag}@example.com",
            "refused email": f"refused.{tag}@example.com",
            "user name": f"Lovelace{tag}",
            "new name": f"Byron{tag}",
        }
        self.tmp = tmp_path

    def __getitem__(self, k):
        return self.values[k]

    def file(self, name, key, newline="\n"):
        p = self.tmp / name
        p.write_text(self.values[key] + newline)
        p.chmod(0o600)
        return p


def sources(d, extra=None):
    """name -> text of everything a daemon wrote outside its plugins' own
    data: the log (stderr), and the text files in state_dir (crash reports,
    markers) but not the SQLite databases, which hold the users by design."""
    texts = {"log": d.log_text()}
    for p in Path(d.state_dir).rglob("*"):
        if p.is_file() and not p.name.endswith((".db", ".db-wal", ".db-shm", ".db-journal")):
            texts[f"state_dir/{p.relative_to(d.state_dir)}"] = p.read_bytes().decode(
                "utf-8", "replace")
    texts.update(extra or {})
    return texts


def test_a_day_of_traffic_leaves_no_secret_and_no_address_behind(
        evhostd, build_dir, tmp_path, unique_name, kafka_bootstrap, smtp_server, otel_collector):
    s = Secrets(tmp_path)
    topics = {k: unique_name(k) for k in ("created", "updated", "deleted", "broadcast")}
    lib.create_topics(list(topics.values()), brokers=kafka_bootstrap)
    sink = lib.SmtpSink(auth=("mailer", s["smtp password"])).start()
    config = {
        "auth": {"jwt_secret_file": str(s.file("jwt.key", "jwt secret"))},
        "admin": {"token_file": str(s.file("admin.token", "admin token"))},
        "log": {"level": "debug", "access": "all"},
        "tracing": {"otlp_endpoint": otel_collector.endpoint, "export_interval": "100ms"},
        "plugin.user": {
            "topic.created": topics["created"], "topic.updated": topics["updated"],
            "topic.deleted": topics["deleted"],
            "admin_email": s["admin email"],
            "admin_password_file": str(s.file("admin.password", "admin password")),
            "argon2_opslimit": "min", "argon2_memlimit": "min",
        },
        "plugin.notifications": {
            **lib.notifications_topics(topics), "templates_dir": str(TEMPLATES),
            "group": unique_name("g"), "from": "Evhost Tests <noreply@example.org>",
            "transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{sink.port}",
            "smtp_user": "mailer", "smtp_password_file": str(s.file("smtp.pw", "smtp password")),
            "retry.max_attempts": 2, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200,
            "list_role": "",
        },
        "plugin.crud": {"collections": "contacts",
                        "collection.contacts.required": "email",
                        "collection.contacts.types": "email:string"},
    }
    extra = {}
    try:
        d = evhostd(config, brokers=kafka_bootstrap)
        # Sign up, the welcome mail over SMTP AUTH.
        r = d.post("/users", json={"name": s["user name"], "email": s["user email"],
                                   "password": s["user password"]})
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        sink.wait_for(lambda m: m.envelope_to == [s["user email"]], timeout=60)
        # A second sign-up of the address: 409 (the answer may say the address: the
        # client sent it).
        r = d.post("/users", json={"name": "x", "email": s["user email"],
                                   "password": s["user password"]})
        assert r.status_code == 409, r.text
        # Bad sign-ups.
        answers = []
        for body in ({"name": s["user name"], "email": "not-an-address " + s["stranger email"],
                      "password": s["user password"]},
                     {"name": s["user name"], "email": s["stranger email"], "password": "x"},
                     {"name": s["user name"], "email": s["stranger email"],
                      "password": 12},
                     {"name": s["user name"], "email": s["stranger email"],
                      "password": s["user password"] + "\u0000"},
                     {"name": s["user name"], "email": s["stranger email"],
                      "password": s["user password"] * 200},
                     {"name": s["user name"], "email": s["stranger email"],
                      "password": s["user password"], "extra": s["user password"]}):
            answers.append(d.post("/users", json=body).text)
        answers.append(d.post("/users", data='{"email": "' + s["stranger email"]
                              + '", "password": "' + s["user password"] + '",',
                              headers={"Content-Type": "application/json"}).text)
        answers.append(d.post("/users", data='{"email": "' + s["stranger email"]
                              + '", "password": "' + s["user password"] + '\x01"}',
                              headers={"Content-Type": "application/json"}).text)
        # Logins: right, wrong, unknown.
        r = d.post("/auth/login", json={"email": s["user email"], "password": s["user password"]})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        extra["user token"] = token
        assert d.post("/auth/login", json={"email": s["user email"],
                                           "password": s["wrong password"]}).status_code == 401
        assert d.post("/auth/login", json={"email": s["stranger email"],
                                           "password": s["wrong password"]}).status_code == 401
        answers.append(d.post("/auth/login", data='{"email":"' + s["stranger email"]
                              + '","password":"' + s["wrong password"] + '"',
                              headers={"Content-Type": "application/json"}).text)
        answers.append(d.post("/auth/login", json={"email": s["stranger email"],
                                                   "password": [s["wrong password"]]}).text)
        r = d.post("/auth/login", json={"email": s["admin email"],
                                        "password": s["admin password"]})
        assert r.status_code == 200, r.text
        admin_jwt = r.json()["token"]
        # Tokens in the wrong places: a query string, a broken header.
        d.get(f"/users/{uid}?access_token={token}")
        d.get(f"/users/{uid}", headers={"Authorization": f"Bearer {token}x"})
        d.get(f"/users/{uid}", headers={"Authorization": f"Basic {token}"})
        d.get("/admin/plugins", headers={"Authorization": f"Bearer {s['admin token']}x"})
        d.get("/admin/plugins", headers={"Authorization": f"Bearer {token}"})
        # Password change: wrong current one, then right.
        r = d.patch(f"/users/{uid}", headers={"Authorization": f"Bearer {token}"},
                    json={"password": s["new password"], "current_password": s["wrong password"]})
        assert r.status_code == 403, r.text
        r = d.patch(f"/users/{uid}", headers={"Authorization": f"Bearer {token}"},
                    json={"password": s["new password"], "email": s["new email"],
                          "name": s["new name"], "current_password": s["user password"]})
        assert r.status_code == 200, r.text
        # The old token is refused now (signed out by the change).
        d.get(f"/users/{uid}", headers={"Authorization": f"Bearer {token}"})
        # crud with an address in the data and in a query.
        d.post("/crud/contacts", json={"email": s["user email"]})
        d.post("/crud/contacts", json={"email": 5, "x": s["user email"]})
        d.get("/crud/contacts", params={"email": s["user email"]})
        # A poison event holding an address: dead-lettered at once.
        lib.kafka_produce(topics["created"], '{"id": "u-poison", "email": "' + s["poison email"]
                          + '", "name": ', key="u-poison", brokers=kafka_bootstrap,
                          headers={"ce_id": "poison-1", "ce_type": "user.created"})
        lib.kafka_produce(topics["created"], {"id": "u-poison2", "email": s["poison email"],
                                              "name": 7},
                          key="u-poison2", brokers=kafka_bootstrap,
                          headers={"ce_id": "poison-2", "ce_type": "user.created"})
        lib.kafka_produce(topics["created"], {"id": "u-poison3",
                                              "email": "bad " + s["poison email"], "name": "P"},
                          key="u-poison3", brokers=kafka_bootstrap,
                          headers={"ce_id": "poison-3", "ce_type": "user.created"})
        # A 550 refusal naming the address, then SMTP down: dead-lettered.
        sink.replies = {s["refused email"]: f"550 5.1.1 <{s['refused email']}>: user unknown"}
        lib.kafka_produce(topics["created"], {"id": "u-refused", "email": s["refused email"],
                                              "name": "R"},
                          key="u-refused", brokers=kafka_bootstrap,
                          headers={"ce_id": "refused-1", "ce_type": "user.created"})
        lib.wait_until(lambda: any(i["event_id"] == "refused-1" and i["status"] == "failed"
                                   for i in d.get("/notifications").json()["items"]),
                       timeout=60, message="refused-1 failed")
        sink.stop()
        lib.kafka_produce(topics["created"], {"id": "u-down", "email": s["stranger email"],
                                              "name": "D"},
                          key="u-down", brokers=kafka_bootstrap,
                          headers={"ce_id": "down-1", "ce_type": "user.created"})
        dlq = lib.kafka_consume(f"{topics['created']}.notifications.dlq", count=3, timeout=60,
                                brokers=kafka_bootstrap)
        extra["dlq headers"] = json.dumps([m["headers"] for m in dlq])
        # evhostctl: dead letters (their values are the events: by design), a
        # redrive with the server back, a replay, the plugins.
        sink.start()
        for args in (["plugins"], ["dlq", "list", "notifications"], ["status"],
                     ["dlq", "redrive", "notifications", "--all"],
                     ["replay", "notifications", "--from", "beginning"],
                     ["events", "--limit", "50"]):
            r = ctl(build_dir, d, *args)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
            extra["evhostctl " + " ".join(args)] = r.stdout + r.stderr
        r = ctl(build_dir, d, "dlq", "show", "notifications")
        extra["evhostctl dlq show (stderr)"] = r.stderr
        # The admin API's answers, /metrics.
        adm = {"Authorization": f"Bearer {s['admin token']}"}
        for path in ("/admin/plugins", "/admin/plugins/notifications/dlq", "/readyz",
                     "/healthz"):
            extra["GET " + path] = d.get(path, headers=adm).text
        extra["metrics"] = d.get("/metrics").text
        # Delete the user (a token alone), then stop, so everything is flushed.
        r = d.post("/auth/login", json={"email": s["new email"], "password": s["new password"]})
        assert r.status_code == 200, r.text
        extra["user token 2"] = r.json()["token"]
        d.delete(f"/users/{uid}", headers={"Authorization": f"Bearer {r.json()['token']}"})
        lib.wait_until(lambda: len(otel_collector.spans()) > 20, timeout=30)
        d.stop()
        extra["spans"] = otel_collector.spans_file.read_text(errors="replace")
    finally:
        sink.stop()
    needles = dict(s.values)
    needles["user token"] = extra.pop("user token")
    needles["user token 2"] = extra.pop("user token 2")
    needles["admin jwt"] = admin_jwt
    texts = sources(d, extra)
    # By design: a dead letter's value is the event as it came (the admin API
    # and evhostctl show it to the admin). The first administrator's address
    # is not logged either: the log names that account by its id.
    texts["GET /admin/plugins/notifications/dlq"] = ""
    leaks = where(needles, texts)
    # The client's own answers may say its address back; never a password.
    leaks += where({k: v for k, v in needles.items() if "email" not in k and "name" not in k},
                   {f"answer {i}": a for i, a in enumerate(answers)})
    texts.update({f"answer {i}": a for i, a in enumerate(answers)})
    report = "\n".join(f"{n} in {src}: ...{nearby(needles[n], texts[src])}..." for n, src in leaks)
    assert not leaks, report


def test_a_refused_smtp_login_says_no_password(evhostd, tmp_path, unique_name, kafka_bootstrap):
    # The server refuses the login (535): the mail is dead-lettered once the
    # retries are spent; neither the password sent nor the one the server
    # wanted is in the log, the delivery log or the dead letter's headers.
    s = Secrets(tmp_path)
    topics = {k: unique_name(k) for k in ("created", "updated", "deleted", "broadcast")}
    lib.create_topics(list(topics.values()), brokers=kafka_bootstrap)
    sink = lib.SmtpSink(auth=("mailer@example.org", s["admin password"])).start()
    try:
        d = evhostd({"plugin.notifications": {
            **lib.notifications_topics(topics), "templates_dir": str(TEMPLATES),
            "group": unique_name("g"), "from": "Evhost Tests <noreply@example.org>",
            "transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{sink.port}",
            "smtp_user": "mailer@example.org",
            "smtp_password_file": str(s.file("smtp.pw", "smtp password")),
            "retry.max_attempts": 2, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200,
            "list_role": "",
        }}, brokers=kafka_bootstrap)
        lib.kafka_produce(topics["created"], {"id": "u-1", "email": s["user email"],
                                              "name": s["user name"]},
                          key="u-1", brokers=kafka_bootstrap,
                          headers={"ce_id": "e-1", "ce_type": "user.created"})
        dlq = lib.kafka_consume(f"{topics['created']}.notifications.dlq", count=1, timeout=60,
                                brokers=kafka_bootstrap)
        assert [m["headers"]["ce_id"] for m in dlq] == ["e-1"], dlq
        texts = {"dlq headers": json.dumps(dlq[0]["headers"]),
                 "GET /notifications": json.dumps(
                     [{k: v for k, v in i.items() if k != "recipient"}
                      for i in d.get("/notifications").json()["items"]])}
        d.stop()
    finally:
        sink.stop()
    texts = sources(d, texts)
    needles = {k: s[k] for k in ("smtp password", "admin password", "user email", "user name")}
    leaks = where(needles, texts)
    assert not leaks, "\n".join(f"{n} in {src}: ...{nearby(needles[n], texts[src])}..."
                                for n, src in leaks)


URL_KEYS = [("tracing", "otlp_endpoint", "http://evhost:{pw}@127.0.0.1:4318"),
            ("tracing", "otlp_endpoint", "https://{pw}@otel.example.net/"),
            ("auth", "jwt_jwks_url", "https://kc:{pw}@idp.example.net/certs"),
            ("auth", "jwt_jwks_url", "https://kc:p@{pw}@idp.example.net:8443/certs"),
            # A '/' or '#' in the password ends the host part early: the
            # value was quoted whole, as a bad port's.
            ("auth", "jwt_jwks_url", "https://kc:s3/{pw}@idp.example.net/certs"),
            ("tracing", "otlp_endpoint", "http://evhost:top#{pw}@127.0.0.1:4318")]


def test_a_url_holding_a_password_is_refused_without_saying_it(evhostd, build_dir, tmp_path):
    # No URL key takes USER:PASSWORD@; one given anyway is refused at its
    # line, by --check-config and at start, without the password: that output
    # goes to terminals, CI logs and the journal.
    pw = "urlpw-" + secrets.token_hex(8)
    config = {}
    for section, key, url in URL_KEYS[:1] + URL_KEYS[2:3]:
        config.setdefault(section, {})[key] = url.format(pw=pw)
    for run in (evhostd.run(["--check-config"], config),
                evhostd.run([], config, timeout=30)):
        out = run.stdout + run.stderr
        assert run.returncode != 0, out
        assert pw not in out, out
        assert "otlp_endpoint: a user or password in the URL is not supported, got " \
               "'http://***@127.0.0.1:4318'" in out, out
        assert "jwt_jwks_url: a user or password in the URL is not supported, got " \
               "'https://***@idp.example.net/certs'" in out, out
    for section, key, url in URL_KEYS[1:2] + URL_KEYS[3:]:
        run = evhostd.run(["--check-config"], {section: {key: url.format(pw=pw)}})
        out = run.stdout + run.stderr
        assert run.returncode == 1 and pw not in out and "***@" in out, out


def test_a_key_in_the_jwks_urls_query_is_not_written(evhostd, build_dir, tmp_path):
    # Some providers take an API key in the jwks_uri's query. The log (a
    # fetch refused with a redirect that carries the query on, the keys
    # fetched, a key left out, a token of an unknown kid, a reload, a start
    # from the cache while the provider is down), the cache in state_dir and
    # --check-config's errors show the query with its values as ***.
    from cryptography.hazmat.primitives.asymmetric import rsa
    from test_auth import ISSUER, claims, jwk, probe, sign
    from test_reload import reload
    pw = "urlkey-" + secrets.token_hex(8)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    broken = {"kty": "RSA", "kid": "broken", "use": "sig", "e": "AQAB"}
    state = tmp_path / "state"

    def dropins(refresh):
        return {"20-probe.conf": probe(build_dir),
                "30-idp.conf": f"[auth]\njwt_public_key_issuer = {ISSUER}\n"
                               f"jwt_jwks_url = {idp.url}\njwt_jwks_refresh = {refresh}\n"}

    idp = lib.JwksServer({"keys": [jwk(key, "rsa-1"), broken]},
                         path=f"/certs?tenant=shop&api_key={pw}")
    shown = idp.url_for("/certs?tenant=***&api_key=***")
    with idp:
        idp.answer_next(status=302, headers={"Location": idp.url_for(f"/v2/certs?key={pw}")})
        d = evhostd({"log": {"level": "debug"}}, dropins("1h"), brokers="embedded",
                    state_dir=state)
        d.wait_for_log(f"[auth] tokens of {ISSUER} are checked with the key(s) fetched from "
                       f"{shown} (1 RSA", timeout=10)
        tok = sign(key, "RS256", claims(), header={"alg": "RS256", "typ": "JWT", "kid": "k9"})
        r = d.get("/probe/whoami", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401, r.text
        d.wait_for_log(f"[auth] a token names a key (kid) the JWKS from {shown} does not have",
                       timeout=5)
        (d.config_dir / "conf.d" / "30-idp.conf").write_text(dropins("2h")["30-idp.conf"])
        reload(d, "reload done", timeout=15)
        d.wait_for_log(f"the keys fetched from {shown}", timeout=5)
        assert d.stop() == 0
    d2 = evhostd({"log": {"level": "debug"}}, dropins("2h"), brokers="embedded", state_dir=state)
    d2.wait_for_log(f"[auth] using the keys fetched from {shown} at ", timeout=10)
    assert d2.stop() == 0
    for said in (f"cannot fetch the JWKS from {shown}: answered 302, a redirect to "
                 f"{idp.url_for('/v2/certs?key=***')}",
                 f"until a fetch from {shown} succeeds",
                 f"the JWKS from {shown} has a key evhost cannot use, left out: JWKS key 2 "
                 "(kid 'broken')"):
        assert said in d.log_text(), (said, d.log_tail())
    assert f"cannot fetch the JWKS from {shown}: cannot connect" in d2.log_text(), d2.log_tail()
    texts = sources(d)
    texts.update({f"restart: {k}": v for k, v in sources(d2).items()})
    for url, want in ((f"http://idp.example/certs?api_key={pw}",
                       "got 'http://idp.example/certs?api_key=***'"),
                      (f"https://kc:x@idp.example/certs?api_key={pw}",
                       "got 'https://***@idp.example/certs?api_key=***'")):
        run = evhostd.run(["--check-config"], {"auth": {"jwt_jwks_url": url,
                                                        "jwt_public_key_issuer": ISSUER}})
        texts[f"--check-config {want}"] = run.stdout + run.stderr
        assert run.returncode == 1 and want in run.stdout + run.stderr, run.stdout + run.stderr
    assert "state_dir/jwks-cache.json" in texts, sorted(texts)
    leaks = where({"url key": pw}, texts)
    assert not leaks, "\n".join(f"{n} in {src}: ...{nearby(pw, texts[src])}..." for n, src in leaks)


@pytest.mark.parametrize("site", ["http", "event"])
def test_a_crash_report_names_no_token_and_no_address(evhostd, build_dir, tmp_path, site):
    # The last line of a crashed daemon, the crash record in state_dir and
    # the next start's word about it name the request (method, path) or the
    # event (topic, offset, id), never its query, headers or data.
    if lib.sanitizer(build_dir):
        pytest.skip("sanitizer runtimes report fatal signals themselves")
    s = Secrets(tmp_path)
    probe = {"enabled": "true", "path": str(build_dir / "tests" / "fixtures" / "probe.so"),
             "subscribe": str(site == "event").lower()}
    d = evhostd({"plugin.probe": probe})
    headers = {"Authorization": f"Bearer {s['admin token']}"}
    if site == "http":
        with pytest.raises(requests.ConnectionError):
            d.post(f"/probe/publish?crash=16&access_token={s['jwt secret']}", headers=headers,
                   json={"email": s["user email"], "password": s["user password"]}, timeout=10)
    else:
        d.wait_for_log("probe: assigned", timeout=30)
        r = d.post(f"/probe/publish?key={s['new email']}", headers=headers,
                   json={"crash": 16, "email": s["user email"], "password": s["user password"]})
        assert r.status_code == 200, r.text
    assert d.wait(timeout=30) == -signal.SIGSEGV, d.log_tail()
    assert "evhostd: FATAL: SIGSEGV" in d.log_text(), d.log_tail()
    texts = sources(d)
    needles = {k: s[k] for k in ("admin token", "jwt secret", "user email", "new email",
                                 "user password")}
    leaks = where(needles, texts)
    assert not leaks, "\n".join(f"{n} in {src}: ...{nearby(needles[n], texts[src])}..."
                                for n, src in leaks)


def test_check_config_names_secret_files_not_their_contents(evhostd, tmp_path):
    # Each secret file refused (too short, a bad line, set twice), and
    # inline secrets at lines with errors: --check-config says the file and
    # line, never what the file or the value holds.
    s = Secrets(tmp_path)
    short = tmp_path / "short.secret"
    short.write_text("shortpw-" + secrets.token_hex(2) + "\n")
    headers = tmp_path / "otlp.headers"
    headers.write_text(f"Authorization: Bearer {s['admin token']}\nX-Key {s['jwt secret']}\n")
    config = {
        "auth": {"jwt_secret_file": str(short)},
        "admin": {"token_file": str(short)},
        "tracing": {"otlp_endpoint": "http://127.0.0.1:4318",
                    "otlp_headers_file": str(headers)},
        "kafka": {"rdkafka.sasl.password": s["smtp password"],
                  "rdkafka.sasl.password_file": str(s.file("kafka.pw", "user password")),
                  "rdkafka.ssl.key.password": s["new password"],
                  "rdkafka.sasl.pasword": s["wrong password"]},
    }
    run = evhostd.run(["--check-config"], config)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    for said in ("jwt_secret_file", "token_file", "otlp_headers_file", "line 2",
                 "'sasl.password' is set twice", "sasl.pasword"):
        assert said in out, (said, out)
    needles = dict(s.values, short=short.read_text().strip())
    assert not where(needles, {"--check-config": out}), out



def test_otlp_headers_in_clear_to_another_host_are_said(evhostd, tmp_path):
    # otlp_headers_file's headers (most often an API key) over http:// to a
    # collector that is not this host go in clear: allowed, and said at
    # start. Nothing is exported (sample_ratio 0): no packet leaves loopback.
    headers = tmp_path / "otlp.headers"
    headers.write_text("Authorization: Bearer " + secrets.token_hex(16) + "\n")
    warn = "otlp_headers_file's headers (an API key?) go in clear with every export to "
    for endpoint, said in (("http://192.0.2.7:4318", True), ("http://127.0.0.1:4318", False)):
        d = evhostd({"tracing": {"otlp_endpoint": endpoint, "otlp_headers_file": str(headers),
                                 "sample_ratio": "0"}}, brokers="embedded")
        assert (warn + endpoint in d.log_text()) == said, d.log_text()
        assert d.stop() == 0


def test_a_key_in_the_otlp_endpoints_query_is_not_written(evhostd):
    # otlp_endpoint takes no query (an API key goes in otlp_headers_file):
    # one given is refused, and the error shows the query as ***.
    pw = "otlpkey-" + secrets.token_hex(8)
    run = evhostd.run(["--check-config"], {"tracing": {
        "otlp_endpoint": f"http://127.0.0.1:4318/v1/traces?api_key={pw}"}},
        brokers="embedded")
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "otlp_endpoint: expected a path without query, fragment " \
        "or spaces, got 'http://127.0.0.1:4318/v1/traces?api_key=***'" in out, out
    assert pw not in out, out
