"""Bearer tokens of another issuer (an identity provider such as Keycloak):
[auth] jwt_public_key_file's RSA and EC public keys check RS256 and ES256
tokens signed with real keys (made here with python3-cryptography), beside
evhost's own HS256 tokens; their issuer and audience are required, their
roles read where the provider puts them; every other token is refused with
the reason; a reload swaps the keys; a bad key file is said at its line. The
keys come as PEM or as the provider's JWKS."""

import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

import evhost_testlib as lib
from test_reload import fixture_plugin, reload

ISSUER = "https://idp.example/realms/shop"


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def sign(key, alg, claims, header=None):
    """A compact JWS of `claims` (a dict, or the JSON text as bytes), signed
    as `alg` says with `key` (a private key; bytes for HS256)."""
    head = b64(json.dumps(header or {"alg": alg, "typ": "JWT", "kid": "k1"}).encode())
    body = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    data = head + b"." + b64(body)
    if alg == "RS256":
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":  # JWS wants r || s, 32 bytes each, not DER
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "HS256":
        sig = hmac.new(key, data, hashlib.sha256).digest()
    else:
        sig = b""
    return (data + b"." + b64(sig)).decode()


def claims(**changes):
    """What the provider issues for Ada (None removes a claim)."""
    now = int(time.time())
    c = {"iss": ISSUER, "sub": "f:0c5e:ada", "aud": ["account", "shop-api"], "iat": now,
         "exp": now + 300, "realm_access": {"roles": ["offline_access", "admin"]}}
    c.update(changes)
    return {k: v for k, v in c.items() if v is not None}


def pem(private):
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "other": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


def probe(build_dir):
    return (f"[plugin.probe]\npath = {fixture_plugin(build_dir, 'probe')}\n"
            f"topic = probe.auth\nsubscribe = false\n")


def test_a_token_nested_deep_is_refused_and_the_daemon_goes_on(evhostd, build_dir, tmp_path):
    # A token's header is parsed before any signature is checked, on the HTTP
    # worker's stack: one nested 600 deep (1.7 KB) overflowed it and ended the
    # daemon, sent by anyone. Past 32 levels a part is malformed: 401.
    secret = tmp_path / "jwt.key"
    secret.write_text("k" * 48)
    d = evhostd({"auth": {"jwt_secret_file": str(secret)}},
                dropins={"20-probe.conf": probe(build_dir)}, brokers="embedded")
    for depth in (600, 1000):
        header = b'{"alg":"HS256","x":' + b"[" * depth + b"]" * depth + b"}"
        token = b".".join((b64(header), b64(b"{}"), b64(b"x" * 32))).decode()
        r = d.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["detail"] == "malformed token header", r.text
    assert d.get("/probe/whoami", headers={
        "Authorization": f"Bearer {lib.sign_token(secret.read_bytes(), 'bob')}"}).text == "bob"


def test_tokens_of_another_issuer(evhostd, build_dir, tmp_path, keys):
    key_file, secret = tmp_path / "idp.pem", tmp_path / "jwt.key"
    key_file.write_bytes(pem(keys["rsa"]) + pem(keys["ec"]))
    secret.write_text("k" * 48)
    d = evhostd({"auth": {"jwt_secret_file": str(secret), "jwt_public_key_file": str(key_file),
                          "jwt_public_key_issuer": ISSUER,
                          "jwt_public_key_audience": "shop-api",
                          "jwt_public_key_roles_claim": "realm_access.roles"}},
                dropins={"20-probe.conf": probe(build_dir)}, brokers="embedded")
    assert (f"[auth] tokens of {ISSUER} are checked with the key(s) in {key_file} "
            f"(1 RSA for RS256, 1 EC for ES256); audience shop-api") in d.log_text()
    assert "jwt_public_key_audience is not set" not in d.log_text()

    def get(path, token):
        return d.get(path, headers={"Authorization": f"Bearer {token}"})

    for alg, key in (("RS256", keys["rsa"]), ("ES256", keys["ec"])):
        token = sign(key, alg, claims())
        r = get("/probe/whoami", token)
        assert r.status_code == 200 and r.text == "f:0c5e:ada", (alg, r.text)
        assert get("/probe/admin", token).status_code == 200, alg
    # Roles where the provider puts them: without "admin" there, 403; a
    # "roles" claim of its own does not count.
    r = get("/probe/admin", sign(keys["rsa"], "RS256",
                                 claims(realm_access={"roles": ["user"]}, roles=["admin"])))
    assert r.status_code == 403, r.text
    # evhost's own tokens are checked as before.
    assert get("/probe/whoami", lib.sign_token(secret.read_bytes(), "bob")).text == "bob"

    now = int(time.time())
    refused = (
        (sign(keys["other"], "RS256", claims()), "bad signature"),
        (sign(keys["rsa"], "RS256", claims(iss="https://elsewhere.example")),
         "wrong token issuer"),
        (sign(keys["rsa"], "RS256", claims(iss=None)), "wrong token issuer"),
        (sign(keys["ec"], "ES256", claims(aud="other-api")), "not for this audience"),
        (sign(keys["ec"], "ES256", claims(aud=None)), "not for this audience"),
        (sign(keys["rsa"], "RS256", claims(exp=now - 600)), "token expired"),
        (sign(keys["rsa"], "RS256", claims(sub=None)), "token has no sub"),
        # The ES256 key's signature labelled RS256, and the other way round.
        (sign(keys["ec"], "ES256", claims(), header={"alg": "RS256"}), "bad signature"),
        (sign(keys["rsa"], "RS256", claims(), header={"alg": "ES256"}), "bad signature"),
        # An HMAC keyed with the public key's PEM (the classic confusion):
        # HS256 is checked with the secret only.
        (sign(pem(keys["rsa"]), "HS256", claims()), "bad signature"),
        (sign(None, "none", claims()), "token algorithm is not HS256, RS256 or ES256"),
        (sign(keys["rsa"], "RS256", claims(realm_access={"roles": "admin"}), header={
            "alg": "RS256", "crit": ["exp"]}), "critical extensions"),
        # A claim named twice: evhostd's parser would read the first "aud",
        # others the last (RFC 7519 section 4); and a sub cut at \u0000.
        (sign(keys["rsa"], "RS256", json.dumps(claims(aud="shop-api")).replace(
            '"aud": "shop-api"', '"aud": "shop-api", "aud": "other-api"').encode()),
         "token payload names a claim twice"),
        (sign(keys["rsa"], "RS256", json.dumps(claims(exp=now + 300)).replace(
            '"exp"', '"exp": %d, "exp"' % (now - 3600)).encode()),
         "token payload names a claim twice"),
        (sign(keys["rsa"], "RS256", claims(sub="f:0c5e:ada\u0000admin")),
         "malformed token payload"),
    )
    for token, why in refused:
        r = get("/probe/whoami", token)
        assert r.status_code == 401 and why in r.text, (why, r.status_code, r.text)
    # The access log says why each was refused, after the client's address
    # (each line is written after its answer was sent: not always in the
    # requests' order); the 403 (no role) too.
    access = lib.wait_until(lambda: (lambda a: a if len(a) == len(refused) else None)(
        [l.partition(" ms, from 127.0.0.1: ")[2] for l in d.log_text().splitlines()
         if "GET /probe/whoami 401 " in l]))
    for why in sorted((w for _, w in refused), key=len, reverse=True):
        line = next((l for l in access if why in l), None)
        assert line, (why, access)
        access.remove(line)
    d.wait_for_log(" ms, from 127.0.0.1: this needs the role 'admin'")

    # A reload swaps the keys: the RSA key alone now, another one.
    key_file.write_bytes(pem(keys["other"]))
    mark = len(d.log_text())
    reload(d, "reload done")
    assert (f"reload: [auth] tokens of {ISSUER} are now checked with the 1 key(s) in "
            f"{key_file}") in d.log_text()[mark:]
    assert get("/probe/whoami", sign(keys["other"], "RS256", claims())).status_code == 200
    r = get("/probe/whoami", sign(keys["rsa"], "RS256", claims()))
    assert r.status_code == 401 and "bad signature" in r.text
    r = get("/probe/whoami", sign(keys["ec"], "ES256", claims()))
    assert r.status_code == 401 and "token algorithm is not HS256 or RS256" in r.text

    # A reload without jwt_secret_file: this host's tokens are refused, the
    # provider's still checked (not "every request refused").
    kept = [l for l in d.config_file.read_text().splitlines()
            if not l.startswith("jwt_secret_file")]
    d.config_file.write_text("\n".join(kept) + "\n")
    mark = len(d.log_text())
    reload(d, "reload done")
    assert (f"reload: [auth] no jwt_secret_file: this host's tokens are refused, {ISSUER}'s "
            "are checked as before") in d.log_text()[mark:]
    assert get("/probe/whoami", sign(keys["other"], "RS256", claims())).status_code == 200
    assert get("/probe/whoami", lib.sign_token(secret.read_bytes(), "bob")).status_code == 401


def jwk(private, kid, **members):
    """The JSON Web Key of private's public half, as a provider's JWKS lists it."""
    def b64int(i, size=None):
        return b64(i.to_bytes(size or (i.bit_length() + 7) // 8, "big")).decode()
    if isinstance(private, rsa.RSAPrivateKey):
        nums = private.public_key().public_numbers()
        key = {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64int(nums.n),
               "e": b64int(nums.e)}
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        nums = private.public_key().public_numbers()
        key = {"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64int(nums.x, 32),
               "y": b64int(nums.y, 32)}
    else:
        key = {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(private.public_key()
               .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()}
    key.update(members)
    return key


def test_a_providers_jwks_as_it_publishes_it(evhostd, build_dir, tmp_path, keys):
    # What a provider's jwks_uri answers (Keycloak's lists an encryption key
    # too): its signing keys check its tokens, the others are left out.
    key_file = tmp_path / "jwks.json"
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_text(json.dumps({"keys": [
        jwk(keys["other"], "enc-1", use="enc", alg="RSA-OAEP"),
        jwk(keys["rsa"], "rsa-1"),
        jwk(ed25519.Ed25519PrivateKey.generate(), "ed-1"),
        jwk(keys["ec"], "ec-1"),
        jwk(second, "rsa-2")]}, indent=2))
    d = evhostd({"auth": {"jwt_public_key_file": str(key_file), "jwt_public_key_issuer": ISSUER}},
                dropins={"20-probe.conf": probe(build_dir)}, brokers="embedded")
    log = d.log_text()
    assert (f"[auth] tokens of {ISSUER} are checked with the key(s) in {key_file} "
            f"(2 RSA for RS256, 1 EC for ES256)") in log
    assert f"[auth] 2 key(s) of the JWKS in {key_file} left out" in log
    # No audience: the provider's tokens for any of its applications are
    # taken, 'admin' role and all; said at start.
    assert (f"[auth] jwt_public_key_audience is not set: tokens of {ISSUER} are accepted "
            f"whatever application they were issued for, with the roles they carry") in log

    def whoami(token):
        return d.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"})

    def token(key, alg, kid):
        return sign(key, alg, claims(), header={"alg": alg, "typ": "JWT", "kid": kid})

    for alg, key, kid in (("RS256", keys["rsa"], "rsa-1"), ("ES256", keys["ec"], "ec-1"),
                          ("RS256", second, "rsa-2"),
                          ("RS256", second, None)):  # no kid: every RSA key is tried
        r = whoami(token(key, alg, kid) if kid else sign(key, alg, claims(), header={
            "alg": alg}))
        assert r.status_code == 200 and r.text == "f:0c5e:ada", (alg, kid, r.text)
    # The key its kid names checks it, no other; the encryption key checks nothing.
    for tok, why in ((token(second, "RS256", "rsa-1"), "bad signature"),
                     (token(keys["other"], "RS256", "enc-1"),
                      "token signed with an unknown key (kid)"),
                     (token(keys["rsa"], "RS256", "rsa-0"),
                      "token signed with an unknown key (kid)")):
        r = whoami(tok)
        assert r.status_code == 401 and why in r.text, (why, r.text)

    # The provider rotates: a reload reads the new set.
    key_file.write_text(json.dumps({"keys": [jwk(keys["other"], "rsa-3")]}))
    mark = len(d.log_text())
    reload(d, "reload done")
    assert (f"reload: [auth] tokens of {ISSUER} are now checked with the 1 key(s) in "
            f"{key_file}") in d.log_text()[mark:]
    assert whoami(token(keys["other"], "RS256", "rsa-3")).status_code == 200
    # A token of the key rotated out says so; the log told the operator once
    # (three such tokens within the minute).
    r = whoami(token(keys["rsa"], "RS256", "rsa-1"))
    assert r.status_code == 401 and "unknown key (kid)" in r.text, r.text
    assert d.log_text().count("a token names a key (kid) that jwt_public_key_file does not "
                              "have: if the provider rotated its keys, save its JWKS "
                              "again and reload") == 1, d.log_tail()

    # A set cut short (a download that failed half way): the reload is
    # refused and the keys stay.
    key_file.write_text('{"keys": [{"kty": "RSA", "n": "')
    mark = len(d.log_text())
    reload(d, "reload refused")
    assert (f"reload refused: {d.config_file}:" in d.log_text()[mark:] and
            f"[auth] jwt_public_key_file '{key_file}': not a JWKS: invalid JSON at line 1"
            in d.log_text()[mark:]), d.log_text()[mark:]
    assert whoami(token(keys["other"], "RS256", "rsa-3")).status_code == 200


def test_bad_key_files_are_said_at_their_line(evhostd, tmp_path, keys):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    cases = {
        "weak.pem": (pem(weak), "block 1 is an RSA key of fewer than 2048 bits"),
        "p384.pem": (pem(keys["ec"]) + pem(p384), "block 2 is an EC key not on P-256"),
        "private.pem": (keys["rsa"].private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()),
                        "block 1 is a PRIVATE KEY, not a PUBLIC KEY"),
        "empty.pem": (b"nothing here\n", "no PEM block"),
        "ed25519.pem": (pem(ed25519.Ed25519PrivateKey.generate()),
                        "block 1 is neither an RSA nor an EC key"),
        "seventeen.pem": (pem(keys["ec"]) * 17, "more than 16 keys"),
        "broken.pem": (b"-----BEGIN PUBLIC KEY-----\nnot base64 at all!\n"
                       b"-----END PUBLIC KEY-----\n", "block 1: "),
        # JWKS: the key is named by its place and kid.
        "off-curve.json": (json.dumps({"keys": [jwk(keys["rsa"], "r"), jwk(
            keys["ec"], "moved", y=b64(bytes(31) + b"\1").decode())]}).encode(),
            "JWKS key 2 (kid 'moved') is not a public key OpenSSL can read"),
        "weak.json": (json.dumps({"keys": [jwk(weak, "old")]}).encode(),
                      "JWKS key 1 (kid 'old'): an RSA key of fewer than 2048 bits"),
        "enc-only.json": (json.dumps({"keys": [jwk(keys["rsa"], "e", use="enc")]}).encode(),
                          "no RS256 or ES256 signing key among its 1 key(s)"),
        "truncated.json": (b'{"keys": [\n  {"kty": "RSA",\n',
                           "not a JWKS: invalid JSON at line 3, column 1"),
    }
    for name, (data, want) in cases.items():
        f = tmp_path / name
        f.write_bytes(data)
        p = evhostd.run(["--check-config"],
                        config={"auth": {"jwt_public_key_file": str(f),
                                         "jwt_public_key_issuer": ISSUER}},
                        brokers="embedded")
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert f"[auth] jwt_public_key_file '{f}': {want}" in out, out
    good = tmp_path / "good.pem"
    good.write_bytes(pem(keys["rsa"]))
    p = evhostd.run(["--check-config"], config={"auth": {"jwt_public_key_file": str(good)}},
                    brokers="embedded")
    assert p.returncode != 0
    assert "[auth] jwt_public_key_file needs jwt_public_key_issuer" in p.stdout + p.stderr


def test_a_providers_subject_is_not_a_local_user(evhostd, build_dir, tmp_path, keys,
                                                 unique_name):
    # User ids are user.so's own, named only by the tokens this host signs. A
    # provider's token whose sub happens to be a local user's id is another
    # person: it may not change that user (nor set their password and log in
    # as them), nor listen to their notifications. The provider's admins
    # still act through role admin, and the user's own token still works.
    from test_sse import Sse, new_user, notif_config
    config = notif_config(tmp_path, unique_name, build_dir)
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(pem(keys["rsa"]))
    config["auth"].update({"jwt_public_key_file": str(key_file),
                           "jwt_public_key_issuer": ISSUER,
                           "jwt_public_key_audience": "shop-api",
                           "jwt_public_key_roles_claim": "realm_access.roles"})
    d = evhostd(config, brokers="embedded")
    uid, addr, own = new_user(d, "Alice")

    def as_provider(roles):
        return {"Authorization": "Bearer " + sign(keys["rsa"], "RS256", claims(
            sub=uid, realm_access={"roles": roles}))}

    r = d.patch(f"/users/{uid}", json={"password": "attacker password"},
                headers=as_provider(["user"]))
    assert r.status_code == 403, r.text
    r = d.post("/auth/login", json={"email": addr, "password": "attacker password"})
    assert r.status_code == 401, r.text
    r = d.delete(f"/users/{uid}", headers=as_provider(["user"]))
    assert r.status_code == 403, r.text
    s = Sse(d.port, token=as_provider(["user"])["Authorization"][7:])
    assert s.status == 403, s.headers
    # The user's own token, and the provider's admin.
    r = d.patch(f"/users/{uid}", json={"name": "Alice B."},
                headers={"Authorization": f"Bearer {own}"})
    assert r.status_code == 200, r.text
    r = d.patch(f"/users/{uid}", json={"name": "Alice C."}, headers=as_provider(["admin"]))
    assert r.status_code == 200, r.text
    s = Sse(d.port, token=own)
    assert s.status == 200, s.headers
