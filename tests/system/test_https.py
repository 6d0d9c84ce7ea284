"""HTTPS served by evhostd itself ([http] tls_listen and tls_certificate), over
real sockets, with a certificate chain made by openssl (root CA, intermediate,
server): a user created over HTTPS gets the welcome mail through real Kafka
and a real SMTP server; the plain listener beside it serves the same API; a
client that speaks plain HTTP to the HTTPS port is refused and does no harm.
Also what an admin sees when it is set up wrong: --check-config names the
key's file and line for a file without a key or a certificate, with an
encrypted key, or missing; a key that does not match its certificate stops
the start with OpenSSL's reason; and without evhost's TLS libraries the
start says where they belong. A renewed certificate is served after a
reload (new handshakes get it, open connections keep theirs, a wrong file
refuses the reload), also while handshakes are under way; its expiry is on
/metrics and in the shipped alerts. tls_ciphers and tls_ciphersuites narrow
what TLS 1.2 and TLS 1.3 clients negotiate, and a list OpenSSL cannot use is
refused at its line."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

import evhost_testlib as lib
from test_notifications import PASSWORD, Env, welcome_to
from test_reload import probe_dropin

ALERTS = lib.REPO_ROOT / "packaging" / "prometheus" / "evhost-alerts.yml"
DASHBOARD = lib.REPO_ROOT / "packaging" / "grafana" / "evhost.json"


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, timeout=60)


def ec_key(d, name, *extra):
    openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            *extra, "-out", f"{name}.key")


def rsa_key(d, name):
    openssl(d, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", f"{name}.key")


def sign(d, name, subject, ca, ext, days=2):
    """A certificate for `name`.key signed by `ca` (.crt and .key in d)."""
    openssl(d, "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    (d / f"{name}.ext").write_text(ext)
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", str(days), "-out", f"{name}.crt", "-extfile",
            f"{name}.ext")


def chain(directory, days=2, server_key=ec_key, inter_days=None):
    """root CA -> intermediate CA -> server certificate (127.0.0.1, localhost)
    in `directory`, each valid for `days` (the intermediate `inter_days`, if
    given). Returns (the root's certificate,
    the server's PEM file: its key, its certificate, the intermediate's), so
    a client that trusts only the root verifies the server only if the
    intermediate is sent."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec_key(d, "root")
    openssl(d, "req", "-x509", "-new", "-key", "root.key", "-out", "root.crt", "-days",
            str(days), "-subj", "/CN=evhost HTTPS test root",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    ec_key(d, "inter")
    sign(d, "inter", "/CN=evhost HTTPS test intermediate", "root",
         "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
         inter_days or days)
    server_key(d, "server")
    sign(d, "server", "/CN=localhost", "inter",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", days)
    pem = d / "server.pem"
    pem.write_text("".join((d / f).read_text() for f in ("server.key", "server.crt", "inter.crt")))
    return d / "root.crt", pem


def https_conf(port, pem):
    return {"tls_listen": f"127.0.0.1:{port}", "tls_certificate": str(pem)}


def test_user_created_over_https_gets_the_welcome_mail(evhostd, tmp_path, unique_name,
                                                        kafka_bootstrap, smtp_server):
    root, pem = chain(tmp_path / "pki")
    pem.chmod(0o644)  # the private key in it: said at start
    port = lib.free_port()
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              extra={"http": https_conf(port, pem)})
    assert f"https on 127.0.0.1:{port}" in env.d.log_text()
    assert (f"[http] tls_certificate: '{pem}' is readable by every local account (mode 0644)"
            in env.d.log_text()), env.d.log_tail()
    base = f"https://localhost:{port}"

    # The handshake: the root alone verifies the server, so the
    # intermediate came with it (wrap_socket raises otherwise).
    ctx = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost"):
            pass

    lib.wait_until(lambda: requests.get(base + "/readyz", verify=str(root),
                                        timeout=10).status_code == 200,
                   timeout=30, message="/readyz over HTTPS never became 200")
    addr = f"https.{uuid.uuid4().hex[:8]}@example.com"
    r = requests.post(base + "/users", verify=str(root), timeout=30,
                      json={"name": "Hattie", "email": addr, "password": PASSWORD})
    assert r.status_code == 201, r.text
    user = r.json()
    smtp_server.wait_for(welcome_to(addr), timeout=60)

    # One daemon, one API, two listeners: a token issued over HTTPS renames
    # the user over the plain listener, and HTTPS reads the new name.
    r = requests.post(base + "/auth/login", verify=str(root), timeout=30,
                      json={"email": addr, "password": PASSWORD})
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    r = env.d.patch(f"/users/{user['id']}", headers=auth, json={"name": "Hattie H."})
    assert r.status_code == 200, r.text
    r = requests.get(f"{base}/users/{user['id']}", verify=str(root), timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "Hattie H.", r.text

    # Plain HTTP sent to the HTTPS port is told so in plain HTTP (civetweb
    # closed it without a word: "Empty reply from server"), and harms nothing.
    r = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["detail"] == ("this port speaks HTTPS, and the request came in plain HTTP: "
                                  "use https://"), r.text
    assert requests.get(base + "/healthz", verify=str(root), timeout=10).status_code == 200
    env.d.wait_for_log("a TLS handshake failed: sslize error: error:0A00009C:SSL routines::http "
                       "request")


@pytest.mark.inputs
@pytest.mark.parametrize("case, needle", [
    ("certificate only", "has no private key"),
    ("key only", "has no certificate"),
    ("encrypted key", "has an encrypted private key"),
    ("missing", "cannot read"),
    # read_pem reads regular files only: a FIFO blocked the start (and a
    # reload) reading it, a directory was "read error"
    ("a directory", "': a directory, not a PEM file"),
    ("a named pipe", "': not a regular file"),
    ("another key", "the private key does not match the certificate (/CN=localhost)"),
    ("intermediate first", "the private key belongs to certificate 2 (/CN=localhost), not to "
                           "the first: the server's certificate must come first"),
    ("damaged key", "its private key cannot be read"),
    ("damaged certificate", "a certificate cannot be read (OpenSSL: "),
])
def test_a_wrong_certificate_file_is_said_at_its_line(evhostd, tmp_path, case, needle):
    root, pem = chain(tmp_path / "pki")
    d = pem.parent
    wrong = tmp_path / "wrong.pem"
    if case == "certificate only":
        wrong.write_text((d / "server.crt").read_text())
    elif case == "key only":
        wrong.write_text((d / "server.key").read_text())
    elif case == "encrypted key":
        ec_key(d, "locked", "-aes-256-cbc", "-pass", "pass:secret")
        wrong.write_text((d / "locked.key").read_text() + (d / "server.crt").read_text())
    elif case == "another key":
        wrong.write_text((d / "inter.key").read_text() + (d / "server.crt").read_text())
    elif case == "intermediate first":
        wrong.write_text("".join((d / f).read_text()
                                 for f in ("server.key", "inter.crt", "server.crt")))
    elif case == "damaged key":
        key = (d / "server.key").read_text().splitlines()
        key[1] = key[1][:10] + "AAAA" + key[1][14:]  # still base64, no longer a key
        wrong.write_text("\n".join(key) + "\n" + (d / "server.crt").read_text())
    elif case == "a directory":
        wrong.mkdir()
    elif case == "a named pipe":
        os.mkfifo(wrong)
    elif case == "damaged certificate":
        crt = (d / "server.crt").read_text().splitlines()
        del crt[3]  # the DER's lengths no longer add up
        wrong.write_text((d / "server.key").read_text() + "\n".join(crt) + "\n")
    r = evhostd.run(["--check-config"],
                    dropins={"20-https.conf": {"http": https_conf(lib.free_port(), wrong)}})
    assert r.returncode == 1, r.stdout + r.stderr
    line = [ln for ln in r.stdout.splitlines() if "tls_certificate" in ln]
    assert line and "conf.d/20-https.conf:3:" in line[0] and needle in line[0], r.stdout
    assert str(wrong) in line[0]


def test_tls_keys_need_each_other(evhostd, tmp_path):
    _, pem = chain(tmp_path / "pki")
    r = evhostd.run(["--check-config"], dropins={
        "20-https.conf": {"http": {"tls_listen": f"127.0.0.1:{lib.free_port()}"}}})
    assert r.returncode == 1 and "tls_listen needs tls_certificate" in r.stdout, r.stdout
    r = evhostd.run(["--check-config"], dropins={
        "20-https.conf": {"http": {"tls_certificate": str(pem)}}})
    assert r.returncode == 1 and "tls_certificate is set but tls_listen is not" in r.stdout
    r = evhostd.run(["--check-config"], dropins={
        "20-https.conf": {"http": {"tls_listen": "localhost:8443", "tls_certificate": str(pem)}}})
    assert r.returncode == 1 and "conf.d/20-https.conf:2:" in r.stdout, r.stdout
    assert "[http] tls_listen: expected IP:port" in r.stdout


def test_a_key_that_is_not_the_certificates_stops_the_start(evhostd, tmp_path):
    _, pem = chain(tmp_path / "pki")
    d = pem.parent
    mixed = tmp_path / "mixed.pem"
    mixed.write_text((d / "inter.key").read_text() + (d / "server.crt").read_text())
    daemon = evhostd({"http": https_conf(lib.free_port(), mixed)}, wait=False)
    assert daemon.wait(timeout=30) == 1
    text = daemon.log_text()
    assert f"[http] tls_certificate '{mixed}'" in text and "mismatch" in text, text
    daemon.expect_exit_code = None


def served(port, cafile):
    """The certificate (DER) a new HTTPS connection gets, verified against
    `cafile` alone (so the intermediate must come with it)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def der(crt):
    return ssl.PEM_cert_to_DER_cert(Path(crt).read_text())


def not_after(crt):
    out = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-enddate"], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=30).stdout
    return ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])


def earliest(pki):
    """The earliest notAfter of a chain() directory's served certificates
    (the intermediate, made first, may end a second before the server's)."""
    return min(not_after(pki / "server.crt"), not_after(pki / "inter.crt"))


def expiry_metric(d):
    r = d.get("/metrics")
    assert r.status_code == 200
    m = re.search(r"^evhost_tls_certificate_expiry_timestamp_seconds (\d+)$", r.text, re.M)
    return int(m.group(1)) if m else None


def reload(d, needle):
    before = d.log_text().count(needle)
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: d.log_text().count(needle) > before, timeout=30,
                   message=f"no '{needle}' in the log after SIGHUP")
    return d.log_text()


def test_a_renewed_certificate_is_served_after_a_reload(evhostd, tmp_path):
    """What certbot's renewal does: the file is replaced, evhostd reloaded.
    New connections get the new chain (another key type, another CA, so an
    old certificate left beside the new one would show); open ones keep
    theirs; a wrong file is refused and the running one stays."""
    old_root, old_pem = chain(tmp_path / "old")
    # The new intermediate ends first: the metric is the earliest end.
    new_root, new_pem = chain(tmp_path / "new", days=40, server_key=rsa_key, inter_days=20)
    pem = tmp_path / "live.pem"
    shutil.copy(old_pem, pem)
    port = lib.free_port()
    d = evhostd(dropins={"20-https.conf": {"http": https_conf(port, pem)}}, brokers="embedded")
    text = d.log_text()
    assert (f"https on 127.0.0.1:{port}: serving /CN=localhost issued by /CN=evhost HTTPS test "
            f"intermediate, 1 intermediate, expires ") in text, text
    # Two days left: said at start.
    assert f"[http] tls_certificate {pem}: a certificate in it expires on " in text
    assert served(port, old_root) == der(old_pem.parent / "server.crt")
    assert expiry_metric(d) == earliest(old_pem.parent)
    # The shipped alerts on it fire on this two-day certificate.
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"]
             for r in g["rules"]}
    for name, days in (("EvhostTLSCertificateExpiresSoon", 14), ("EvhostTLSCertificateExpiring", 3)):
        assert rules[name]["expr"] == (f"evhost_tls_certificate_expiry_timestamp_seconds - time() "
                                       f"< {days} * 86400")
    assert expiry_metric(d) - time.time() < 3 * 86400
    dashboard = json.loads(DASHBOARD.read_text())
    assert [p for p in dashboard["panels"] if "evhost_tls_certificate_expiry_timestamp_seconds"
            in "".join(t["expr"] for t in p.get("targets", []))], "no dashboard panel"

    # A kept-alive connection opened before the renewal.
    kept = http.client.HTTPSConnection(
        "localhost", port, timeout=10, context=ssl.create_default_context(cafile=str(old_root)))
    kept.request("GET", "/healthz")
    assert kept.getresponse().read() and kept.sock.getpeercert(True) == der(
        old_pem.parent / "server.crt")

    tmp = tmp_path / "live.pem.new"
    shutil.copy(new_pem, tmp)
    os.replace(tmp, pem)
    text = reload(d, "reload done")
    # At once: civetweb closes a connection idle for 500 ms (keep_alive_timeout_ms),
    # which the checks below can take under a sanitizer.
    kept.request("GET", "/healthz")
    assert kept.getresponse().status == 200
    assert kept.sock.getpeercert(True) == der(old_pem.parent / "server.crt")
    kept.close()
    assert (f"reload: [http] tls_certificate {pem}: serving /CN=localhost issued by "
            f"/CN=evhost HTTPS test intermediate, 1 intermediate, expires ") in text
    assert "needs a restart" not in text
    assert served(port, new_root) == der(new_pem.parent / "server.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        served(port, old_root)
    assert expiry_metric(d) == not_after(new_pem.parent / "inter.crt") == earliest(new_pem.parent)
    assert expiry_metric(d) - time.time() > 19 * 86400
    assert "a certificate in it expires on" not in text.split("reloading")[-1]

    # A renewal gone wrong (the key of another certificate) is refused
    # whole, at its line; the certificate in use stays.
    mixed = tmp_path / "new" / "inter.key"
    pem.write_text(mixed.read_text() + (tmp_path / "new" / "server.crt").read_text())
    text = reload(d, "the running configuration stays")
    assert f"reload refused: " in text and "the private key does not match" in text, text
    assert served(port, new_root) == der(new_pem.parent / "server.crt")

    # Another file named by the reload is served too; a new tls_listen
    # needs a restart (and is said so).
    moved = tmp_path / "moved.pem"
    shutil.copy(old_pem, moved)
    other = lib.free_port()
    lib.write_ini(d.config_dir / "conf.d" / "20-https.conf",
                  {"http": https_conf(other, moved)})
    text = reload(d, "reload done")
    assert f"reload: [http] tls_certificate {moved}: serving /CN=localhost" in text
    assert "[http] tls_listen changed" in text and "needs a restart, not applied" in text
    assert "[http] tls_certificate changed" not in text
    assert served(port, old_root) == der(old_pem.parent / "server.crt")
    with pytest.raises(OSError):
        served(other, old_root)


TLS_DIRS = ("/usr/lib/evhost/tls", "/usr/local/lib/evhost/tls",
            "/usr/lib/x86_64-linux-gnu/evhost/tls")


@pytest.mark.skipif(any(Path(p).exists() for p in TLS_DIRS),
                    reason="evhost's TLS libraries are installed on this machine")
def test_without_the_tls_libraries_the_start_says_where_they_belong(evhostd, tmp_path):
    _, pem = chain(tmp_path / "pki")
    alone = tmp_path / "bin"
    alone.mkdir()
    shutil.copy2(evhostd.binary, alone / "evhostd")  # no tls/ beside this copy
    evhostd.binary = alone / "evhostd"
    daemon = evhostd({"http": https_conf(lib.free_port(), pem)}, wait=False)
    assert daemon.wait(timeout=30) == 1
    text = daemon.log_text()
    assert "cannot load OpenSSL: " in text and "evhost's TLS libraries belong in" in text
    daemon.expect_exit_code = None


def test_handshakes_during_reloads_all_succeed(evhostd, tmp_path):
    """Reloads swap the certificate under handshakes in flight: every
    handshake gets one whole chain or the other, never a failure (and, in
    the sanitizer passes, no race or use after free)."""
    roots, pems = zip(*(chain(tmp_path / name, server_key=key)
                        for name, key in (("a", ec_key), ("b", rsa_key))))
    both = tmp_path / "roots.pem"
    both.write_text("".join(Path(r).read_text() for r in roots))
    wanted = {der(Path(p).parent / "server.crt") for p in pems}
    pem = tmp_path / "live.pem"
    shutil.copy(pems[0], pem)
    port = lib.free_port()
    d = evhostd(dropins={"20-https.conf": {"http": https_conf(port, pem)}}, brokers="embedded")
    seen, errors, stop = [], [], threading.Event()

    def handshakes():
        deadline = time.monotonic() + 120  # bounded even if the main thread dies
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                seen.append(served(port, both))
            except (OSError, ssl.SSLError) as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=handshakes, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 9):
            tmp = tmp_path / "live.pem.new"
            shutil.copy(pems[i % 2], tmp)
            os.replace(tmp, pem)
            reload(d, "reload done")
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors[:5]
    assert set(seen) == wanted and len(seen) > 50, len(seen)
    assert served(port, both) == der(Path(pems[0]).parent / "server.crt")


def test_ports_the_system_chose_are_named_where_they_are_said(evhostd, tmp_path):
    # With port 0 the system chooses: the HTTPS line said ":0", and so did
    # systemd's STATUS=, which named the configured listen address.
    _, pem = chain(tmp_path / "pki")
    notify = lib.NotifySocket()
    try:
        d = evhostd(dropins={"20-ports.conf": {"http": {
                        "listen": "127.0.0.1:0", "tls_listen": "127.0.0.1:0",
                        "tls_certificate": str(pem)}}},
                    brokers="embedded", wait=False, env={"NOTIFY_SOCKET": notify.path})
        d.wait_for_log(" ready: ", timeout=30)
        ready = re.search(r"http on 127\.0\.0\.1:(\d+), https on 127\.0\.0\.1:(\d+)",
                          d.log_text())
        assert ready and "0" not in ready.groups(), d.log_text()
        assert f"https on 127.0.0.1:{ready[2]}: serving " in d.log_text(), d.log_text()
        (_, text), = notify.wait_for("READY=1")
        assert f"STATUS=serving 0 plugins on 127.0.0.1:{ready[1]}" in text, text
    finally:
        notify.close()


def test_admin_https_by_a_reload_without_an_https_listener_says_it_waits(evhostd, tmp_path):
    # A reload adding tls_listen (a restart's) and [admin] https = true said
    # "the admin API is served over HTTPS too" while nothing listened there.
    root, pem = chain(tmp_path / "pki")
    (tmp_path / "admin.token").write_text("t0ken-" + uuid.uuid4().hex + "\n")
    d = evhostd(dropins={"20-admin.conf": {"admin": {"token_file": str(tmp_path / "admin.token")}}},
                brokers="embedded")
    lib.write_ini(d.config_dir / "conf.d" / "20-admin.conf",
                  {"http": https_conf(lib.free_port(), pem),
                   "admin": {"token_file": str(tmp_path / "admin.token"), "https": True}})
    text = reload(d, "reload done")
    assert "[http] tls_listen set" in text and "needs a restart, not applied" in text, text
    assert ("reload: [admin] https = true: the admin API is served over HTTPS too once [http] "
            "tls_listen is served (it needs a restart)") in text, text


def test_admin_and_metrics_stay_off_https_unless_asked(evhostd, tmp_path):
    """The HTTPS listener is the public one: the admin API and /metrics
    answer 404 there (saying where they are) unless [admin] https or
    [metrics] https says otherwise; the plain listener serves them either
    way. [admin] https applies on reload."""
    root, pem = chain(tmp_path / "pki")
    token = "t0ken-" + uuid.uuid4().hex
    (tmp_path / "admin.token").write_text(token + "\n")
    port = lib.free_port()
    dropin = {"http": https_conf(port, pem), "admin": {"token_file": str(tmp_path / "admin.token")}}
    d = evhostd(dropins={"20-https.conf": dropin}, brokers="embedded")
    base = f"https://localhost:{port}"
    auth = {"Authorization": f"Bearer {token}"}

    def tls_get(path, **kw):
        return requests.get(base + path, verify=str(root), timeout=10, **kw)

    r = tls_get("/admin/plugins", headers=auth)
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == ("the admin API is not served over HTTPS: use [http] listen "
                                  "([admin] https = false)")
    r = tls_get("/metrics")
    assert r.status_code == 404 and "[metrics] https = false" in r.json()["detail"], r.text
    assert tls_get("/healthz").status_code == 200
    assert d.get("/admin/plugins", headers=auth).status_code == 200
    assert d.get("/metrics").status_code == 200

    # [admin] https = true, by a reload: over HTTPS too, the token still needed.
    dropin["admin"]["https"] = True
    lib.write_ini(d.config_dir / "conf.d" / "20-https.conf", dropin)
    text = reload(d, "reload done")
    assert "reload: [admin] https = true: the admin API is served over HTTPS too" in text
    assert "needs a restart" not in text
    assert tls_get("/admin/plugins", headers=auth).status_code == 200
    assert tls_get("/admin/plugins").status_code == 401
    assert tls_get("/metrics").status_code == 404
    dropin["admin"]["https"] = False
    lib.write_ini(d.config_dir / "conf.d" / "20-https.conf", dropin)
    reload(d, "the admin API is no longer served over HTTPS")
    assert tls_get("/admin/plugins", headers=auth).status_code == 404

    # [metrics] https = true (a restart): scraped over HTTPS, the
    # certificate's expiry with the rest.
    d.stop()
    dropin["metrics"] = {"https": True}
    evhostd(dropins={"20-https.conf": dropin}, brokers="embedded")
    r = requests.get(f"https://localhost:{port}/metrics", verify=str(root), timeout=10)
    assert r.status_code == 200, r.text
    assert "evhost_tls_certificate_expiry_timestamp_seconds " in r.text



def http_connections(d):
    r = d.get("/metrics")
    assert r.status_code == 200, r.text
    return int(re.search(r"^evhost_http_connections (\d+)$", r.text, re.M).group(1))


def handshakes_failed(d):
    r = d.get("/metrics")
    assert "# TYPE evhost_https_handshakes_failed_total counter" in r.text
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^evhost_https_handshakes_failed_total\{reason="([a-z_]+)"\} (\d+)$', r.text, re.M)}


def wait_failed(d, counts):
    """Until evhost_https_handshakes_failed_total is `counts` (0 for the
    reasons not named)."""
    want = dict.fromkeys(("plain_http", "protocol_version", "no_shared_cipher",
                          "certificate_refused", "client_certificate", "incomplete", "other"),
                         0) | counts
    lib.wait_until(lambda: handshakes_failed(d) == want, timeout=30,
                   message=f"evhost_https_handshakes_failed_total at {want}")


# A TLS record header (handshake, TLS 1.0 on the record layer, 512 bytes)
# and the first bytes of a ClientHello: half a record, the rest never sent.
HALF_RECORD = bytes.fromhex("1603010200" "010001fc" "0303")


def test_connections_in_their_tls_handshake_count_as_held(evhostd, tmp_path):
    """civetweb gives each HTTPS connection a worker from its handshake on,
    but tells evhostd of it only once the handshake is done: clients that
    connect and send nothing, or half a ClientHello, held workers that
    evhost_http_connections (and the EvhostHttpWorkersBusy alert on it) did
    not show. They count from the handshake's start, and are counted off
    however it ends: the client gone, a handshake that fails, one done."""
    root, pem = chain(tmp_path / "pki")
    port = lib.free_port()
    # Held connections stay until this test closes them.
    http = {**https_conf(port, pem), "threads": 8, "request_timeout": "1m"}
    d = evhostd(dropins={"20-https.conf": {"http": http}}, brokers="embedded")
    lib.wait_until(lambda: http_connections(d) == 1, timeout=30,
                   message="evhost_http_connections at 1 (the scrape's own)")
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        stalled[1].sendall(HALF_RECORD)
        stalled[2].sendall(HALF_RECORD[:3])
        lib.wait_until(lambda: http_connections(d) >= 4, timeout=30,
                       message="3 connections in their TLS handshake counted")
    finally:
        for s in stalled:
            s.close()
    lib.wait_until(lambda: http_connections(d) == 1, timeout=30,
                   message="the stalled handshakes counted off once their clients left")

    # Failed handshakes (plain HTTP, garbage, TLS 1.1 only) and a whole one.
    tls11 = bytes.fromhex("16030100" "2f" "0100002b" "0302") + bytes(32) + bytes.fromhex(
        "00" "0004" "c013c014" "0100")
    for payload in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\xff" * 300, tls11):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(payload)
            answer = b""
            while chunk := s.recv(4096):  # then closed by evhostd
                answer += chunk
        if payload.startswith(b"GET"):
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
        else:  # an alert, or nothing
            assert not answer.startswith(b"HTTP"), answer
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ssl.create_default_context(cafile=str(root)).wrap_socket(
                raw, server_hostname="localhost"):
            pass
    # A client that refuses the certificate (it trusts another CA).
    other_root, _ = chain(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        served(port, other_root)
    lib.wait_until(lambda: http_connections(d) == 1, timeout=30,
                   message="evhost_http_connections back at 1 after the handshakes")
    text = d.log_text()
    for why in ("http request", "wrong version number", "unsupported protocol"):
        assert f"DEBUG [http] a TLS handshake failed: sslize error: " in text and why in text, why

    # The failures by reason, at info level's reach: the 3 stalled
    # connections left mid-handshake ("incomplete").
    wait_failed(d, {"plain_http": 1, "protocol_version": 1, "certificate_refused": 1,
                    "incomplete": 3, "other": 1})


def test_stalled_tls_handshakes_are_closed_at_request_timeout(evhostd, tmp_path):
    """A client that opens TLS and never sends a ClientHello, or sends half a
    record and stalls, holds a worker (civetweb's model) until [http]
    request_timeout ends its handshake, then is closed without a word.
    With every worker held so, HTTPS clients and the plain listener's
    probes and /metrics (the same workers) wait, and are served once the
    timeout frees them (operations.md, "Slow and idle clients")."""
    root, pem = chain(tmp_path / "pki")
    port = lib.free_port()
    http = {**https_conf(port, pem), "threads": 2, "request_timeout": "2s"}
    d = evhostd(dropins={"20-https.conf": {"http": http}}, brokers="embedded")
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
    try:
        stalled[0].sendall(HALF_RECORD)
        r = requests.get(f"https://localhost:{port}/readyz", verify=str(root), timeout=60)
        assert r.status_code == 200, r.text
        assert d.get("/readyz", timeout=60).status_code == 200
        assert d.get("/metrics", timeout=60).status_code == 200
        for s in stalled:  # closed by evhostd, not left for the client to give up on
            assert s.recv(100) == b""
    finally:
        for s in stalled:
            s.close()


def client_cert(d, name, ca, cn):
    """A client certificate for `cn`, signed by `ca` (in directory d)."""
    ec_key(d, name)
    sign(d, name, f"/CN={cn}", ca, "extendedKeyUsage=clientAuth\n")
    return d / f"{name}.crt", d / f"{name}.key"


def test_client_certificates_from_the_given_ca_only(evhostd, tmp_path, build_dir):
    """[http] tls_client_ca: mutual TLS. A client certificate issued under
    that CA gets in (named in the access log, and to plugins by
    evh_req_client_cert); none, or one from another CA, does not, even when
    the system trusts that other CA (its store would admit any publicly
    trusted certificate)."""
    root, pem = chain(tmp_path / "pki")
    pki = pem.parent
    good = client_cert(pki, "alice", "inter", "alice")
    other_root, other_pem = chain(tmp_path / "other")
    stranger = client_cert(other_pem.parent, "mallory", "inter", "mallory")
    # The CA file: the root; the intermediate comes with the client's chain.
    port = lib.free_port()
    alice = tmp_path / "alice-chain.crt"
    alice.write_text(good[0].read_text() + (pki / "inter.crt").read_text())
    mallory = tmp_path / "mallory-chain.crt"
    mallory.write_text(stranger[0].read_text() + (other_pem.parent / "inter.crt").read_text())
    # OpenSSL's default store, as the daemon would see it: the other CA.
    d = evhostd(dropins={"20-https.conf": {"http": {**https_conf(port, pem),
                                                    "tls_client_ca": str(root)}},
                         "30-probe.conf": probe_dropin(build_dir)},
                brokers="embedded", env={"SSL_CERT_FILE": str(other_root)})
    assert f"clients need a certificate issued by a CA in {root}" in d.log_text()
    url = f"https://localhost:{port}/healthz"
    r = requests.get(url, verify=str(root), cert=(str(alice), str(good[1])), timeout=10)
    assert r.status_code == 200, r.text
    d.wait_for_log(", from 127.0.0.1, client /CN=alice")
    # The plugin's view (SDK, ABI 1.5): the verified subject over HTTPS,
    # nothing on the plain listener.
    r = requests.get(f"https://localhost:{port}/probe/client", verify=str(root),
                     cert=(str(alice), str(good[1])), timeout=10)
    assert r.status_code == 200 and r.text == "/CN=alice", r.text
    assert d.get("/probe/client").status_code == 404
    for cert in (None, (str(mallory), str(stranger[1]))):
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(url, verify=str(root), cert=cert, timeout=10)
    wait_failed(d, {"client_certificate": 2})
    # The plain listener asks nothing of its clients.
    assert d.get("/healthz").status_code == 200


def test_tls_min_version(evhostd, tmp_path):
    """Default: TLS 1.2 and 1.3. tls_min_version = 1.3: a client that
    speaks at most 1.2 is refused."""
    root, pem = chain(tmp_path / "pki")

    def handshake(port, max_version=None):
        ctx = ssl.create_default_context(cafile=str(root))
        if max_version:
            ctx.maximum_version = max_version
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()

    port = lib.free_port()
    d = evhostd(dropins={"20-https.conf": {"http": https_conf(port, pem)}}, brokers="embedded")
    assert handshake(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(port) == "TLSv1.3"
    d.stop()
    d = evhostd(dropins={"20-https.conf": {"http": {**https_conf(port, pem),
                                                    "tls_min_version": "1.3"}}},
                brokers="embedded")
    assert ", TLS 1.3 only" in d.log_text()
    assert handshake(port) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(port, ssl.TLSVersion.TLSv1_2)
    # Failed handshakes let their workers go too (evhost_http_connections).
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP to the TLS port
            raw.recv(100)
    lib.wait_until(lambda: re.search(r"^evhost_http_connections 1$", d.get("/metrics").text,
                                     re.M), timeout=10, message="only the scrape's connection")
    wait_failed(d, {"protocol_version": 1, "plain_http": 3})


def test_tls_ciphers_and_ciphersuites(evhostd, tmp_path):
    """tls_ciphers limits what a TLS 1.2 client may negotiate (by default
    forward secrecy and AEAD only), and tls_ciphersuites what a TLS 1.3 one
    gets (the server's certificate is ECDSA, then RSA)."""
    root, pem = chain(tmp_path / "pki")

    def handshake(port, version, ciphers=None, cafile=root):
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.minimum_version = ctx.maximum_version = version
        if ciphers:
            ctx.set_ciphers(ciphers)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.cipher()[0]

    port = lib.free_port()
    # The defaults first: the client's choice among the forward-secret AEAD
    # TLS 1.2 ciphers is taken (CBC with SHA-1 is not offered), and TLS 1.3
    # gets OpenSSL's first suite.
    d = evhostd(dropins={"20-https.conf": {"http": https_conf(port, pem)}}, brokers="embedded")
    assert handshake(port, ssl.TLSVersion.TLSv1_2,
                     "ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"
    with pytest.raises(ssl.SSLError):
        handshake(port, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA")
    assert handshake(port, ssl.TLSVersion.TLSv1_3) == "TLS_AES_256_GCM_SHA384"
    wait_failed(d, {"no_shared_cipher": 1})
    d.stop()
    # With an RSA certificate: no RSA key exchange (no forward secrecy).
    rsa_root, rsa_pem = chain(tmp_path / "rsa", server_key=rsa_key)
    d = evhostd(dropins={"20-https.conf": {"http": https_conf(port, rsa_pem)}},
                brokers="embedded")
    with pytest.raises(ssl.SSLError):
        handshake(port, ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256", cafile=rsa_root)
    assert handshake(port, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256",
                     cafile=rsa_root) == "ECDHE-RSA-AES128-GCM-SHA256"
    d.stop()

    d = evhostd(dropins={"20-https.conf": {"http": {
        **https_conf(port, pem),
        "tls_ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305:NOT-A-CIPHER",
        "tls_ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"}}}, brokers="embedded")
    with pytest.raises(ssl.SSLError):
        handshake(port, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert handshake(port, ssl.TLSVersion.TLSv1_2) == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert handshake(port, ssl.TLSVersion.TLSv1_3) == "TLS_CHACHA20_POLY1305_SHA256"
    # The API is served over it.
    r = requests.get(f"https://localhost:{port}/healthz", verify=str(root), timeout=10)
    assert r.status_code == 200


@pytest.mark.inputs
@pytest.mark.parametrize("keys, needle", [
    ({"tls_min_version": "1.1"}, "[http] tls_min_version: expected 1.2 or 1.3"),
    ({"tls_ciphers": "NOPE:ALSO-NOPE"},
     "[http] tls_ciphers: 'NOPE:ALSO-NOPE' leaves no TLS 1.2 cipher OpenSSL knows"),
    ({"tls_ciphersuites": "TLS_AES_256_GCM_SHA384:TLS_AES_257_GCM"},
     "[http] tls_ciphersuites: 'TLS_AES_257_GCM' is not a TLS 1.3 cipher suite OpenSSL knows"),
    ({"tls_ciphersuites": ":"}, "[http] tls_ciphersuites: ':' has an empty name"),
    ({"tls_ciphersuites": "TLS_AES_256_GCM_SHA384::TLS_CHACHA20_POLY1305_SHA256"},
     "[http] tls_ciphersuites: 'TLS_AES_256_GCM_SHA384::TLS_CHACHA20_POLY1305_SHA256' has "
     "an empty name (a ':' at an end, or two in a row)"),
    ({"tls_ciphersuites": "TLS_AES_256_GCM_SHA384:"}, "has an empty name"),
    ({"tls_ciphersuites": "TLS_AES_256_GCM_SHA384:TLS_AES_256_GCM_SHA384"},
     "[http] tls_ciphersuites: 'TLS_AES_256_GCM_SHA384' is listed twice"),
    ({"tls_client_ca": "MISSING"}, "[http] tls_client_ca 'MISSING': cannot read"),
    ({"tls_client_ca": "KEY"}, "has no certificate"),
])
def test_tls_policy_keys_are_checked_at_their_line(evhostd, tmp_path, keys, needle):
    _, pem = chain(tmp_path / "pki")
    paths = {"MISSING": str(tmp_path / "missing.pem"), "KEY": str(pem.parent / "server.key")}
    keys = {k: paths.get(v, v) for k, v in keys.items()}
    needle = needle.replace("MISSING", paths["MISSING"])
    r = evhostd.run(["--check-config"], dropins={
        "20-https.conf": {"http": {**https_conf(lib.free_port(), pem), **keys}}})
    assert r.returncode == 1, r.stdout
    line = [ln for ln in r.stdout.splitlines() if needle in ln]
    assert line and "conf.d/20-https.conf:4:" in line[0], r.stdout
    # Without an HTTPS listener they are refused too.
    r = evhostd.run(["--check-config"], dropins={"20-https.conf": {"http": keys}})
    assert r.returncode == 1 and "is set but tls_listen is not" in r.stdout, r.stdout


def test_an_expired_certificate_is_served_and_said(evhostd, tmp_path):
    """A certificate that has expired still starts (clients decide), but the
    start says so, and /metrics has its end in the past."""
    _, pem = chain(tmp_path / "pki")
    d = pem.parent
    (d / "old.cnf").write_text("[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\n"
                               "new_certs_dir = .\ndefault_md = sha256\npolicy = p\n"
                               "serial = old.serial\n[p]\ncommonName = supplied\n")
    (d / "index.txt").write_text("")
    (d / "old.serial").write_text("01\n")
    openssl(d, "ca", "-batch", "-notext", "-config", "old.cnf", "-cert", "inter.crt",
            "-keyfile", "inter.key", "-in", "server.csr", "-out", "old.crt",
            "-startdate", "20200101000000Z", "-enddate", "20200102000000Z")
    expired = tmp_path / "expired.pem"
    expired.write_text("".join((d / f).read_text() for f in ("server.key", "old.crt", "inter.crt")))
    daemon = evhostd(dropins={"20-https.conf": {"http": https_conf(lib.free_port(), expired)}},
                     brokers="embedded")
    assert (f"[http] tls_certificate {expired}: a certificate in it expired on "
            f"2020-01-02 00:00:00 UTC; clients refuse it") in daemon.log_text()
    assert expiry_metric(daemon) == 1577923200
