"""HTTPS served by evhostd itself ([http] tls_listen and tls_certificate), over
real sockets, with a certificate chain made by openssl (root CA, intermediate,
server): a user created over HTTPS gets the welcome mail through real Kafka
and a real SMTP server; the plain listener beside it serves the same API; a
client that speaks plain HTTP to the HTTPS port is refused and does no harm.
Also what an admin sees when it is set up wrong: --check-config names the
key's file and line for a file without a key or a certificate, with an
encrypted key, or missing; a key that does not match its certificate stops
the start with civetweb's reason; and without evhost's TLS libraries the
start says where they belong."""

import shutil
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib
from test_notifications import PASSWORD, Env, welcome_to


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, timeout=60)


def ec_key(d, name, *extra):
    openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            *extra, "-out", f"{name}.key")


def sign(d, name, subject, ca, ext):
    """A certificate for `name`.key signed by `ca` (.crt and .key in d)."""
    openssl(d, "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    (d / f"{name}.ext").write_text(ext)
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")


def chain(directory):
    """root CA -> intermediate CA -> server certificate (127.0.0.1, localhost)
    in `directory`. Returns (the root's certificate, the server's PEM file:
    its key, its certificate, the intermediate's), so a client that trusts
    only the root verifies the server only if the intermediate is sent."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec_key(d, "root")
    openssl(d, "req", "-x509", "-new", "-key", "root.key", "-out", "root.crt", "-days", "2",
            "-subj", "/CN=evhost HTTPS test root", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    ec_key(d, "inter")
    sign(d, "inter", "/CN=evhost HTTPS test intermediate", "root",
         "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
    ec_key(d, "server")
    sign(d, "server", "/CN=localhost", "inter",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    pem = d / "server.pem"
    pem.write_text("".join((d / f).read_text() for f in ("server.key", "server.crt", "inter.crt")))
    return d / "root.crt", pem


def https_conf(port, pem):
    return {"tls_listen": f"127.0.0.1:{port}", "tls_certificate": str(pem)}


def test_user_created_over_https_gets_the_welcome_mail(evhostd, tmp_path, unique_name,
                                                        kafka_bootstrap, smtp_server):
    root, pem = chain(tmp_path / "pki")
    port = lib.free_port()
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              extra={"http": https_conf(port, pem)})
    assert f"https on 127.0.0.1:{port}" in env.d.log_text()
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

    # Plain HTTP sent to the HTTPS port gets no answer, and harms nothing.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert requests.get(base + "/healthz", verify=str(root), timeout=10).status_code == 200
    env.d.wait_for_log("a TLS handshake failed")


@pytest.mark.parametrize("case, needle", [
    ("certificate only", "has no private key"),
    ("key only", "has no certificate"),
    ("encrypted key", "has an encrypted private key"),
    ("missing", "cannot read"),
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
    assert "cannot load OpenSSL for civetweb" in text and "evhost's TLS libraries belong in" in text
    daemon.expect_exit_code = None
