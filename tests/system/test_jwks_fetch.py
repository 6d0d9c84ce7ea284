"""Bearer tokens of an identity provider whose keys evhostd fetches itself:
[auth] jwt_jwks_url names the provider's JWKS (https, checked against
jwt_jwks_ca_file; http to loopback only) and evhostd GETs it at start, on a
token naming a kid it lacks (at most once every 5 s) and every
jwt_jwks_refresh. Proven here, against a real HTTPS server (JwksServer):

- the request it sends, and the set used as jwt_public_key_file's would be
  (issuer, audience, roles claim; keys for other uses left out and said);
  the URL's query logged and cached without its values;
- keys of the set it cannot use (malformed, too weak, off their curve, no
  kty, beyond the first 16) left out and each said once, the others used;
  a set with nothing else has no usable key;
- an answer framed by Content-Length, by chunks or by the connection's
  close is read whole;
- a rotated key is found by the unknown-kid fetch (the request waits for it)
  and by the periodic refresh, and the log says the set changed;
- a provider's rotation as it happens: the new key used before the refresh
  after one fetch, the withdrawn one refused from the next (after a restart
  from the cache too), a kid given other key material; keys sharing a kid,
  keys without one; a set with no usable key withdraws the keys in use;
- tokens with made-up kids, many at once: one fetch, few workers held;
  tokens checked while sets are swapped and while reloads replace the
  fetcher, never answered 5xx;
- a failed fetch (HTTP error, redirect, not a JWKS, no usable key, an
  answer cut short, a certificate for another name or of an unknown CA, a
  provider that does not answer) says why, keeps the keys it had and is
  retried 1 s, 2 s, 4 s ... later, never later than the refresh;
- with no keys at all, tokens of that issuer are answered 503 with
  Retry-After while evhost's own tokens work, until a retry succeeds;
- the last good set is kept in the state dir and used when the provider is
  down at a later start (for the same URL only);
- a reload that names another provider fetches from it, and the cache is
  its set from then on (a fetch of the replaced provider that ends later is
  not kept);
- --check-config says each wrong key at its file:line, and fetches nothing.
"""

import base64
import hashlib
import json
import re
import socket
import subprocess
import threading
import time
from datetime import datetime

import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import evhost_testlib as lib
from test_auth import ISSUER, b64, claims, jwk, pem, probe, sign
from test_metrics import ALERTS, DASHBOARD, scrape_value
from test_reload import reload

IDP_DROPIN = "30-idp.conf"
NOT_FETCHED = "the identity provider's keys are not fetched yet"
UNKNOWN_KID = "token signed with an unknown key (kid)"


@pytest.fixture(scope="module")
def k():
    """The provider's private keys (their JWKs are what JwksServer serves)."""
    def rsa_key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {"rsa": rsa_key(), "rsa2": rsa_key(), "rsa3": rsa_key(), "other": rsa_key(),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate()}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return lib.TlsCerts(tmp_path_factory.mktemp("certs"))


def server_tls(certs):
    return (certs.server_crt, certs.server_key)


def idp_conf(**keys):
    """An [auth] drop-in with the keys in the order given: the i-th (from 0)
    is at line i + 2."""
    return "[auth]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())


def jwks_auth(idp, certs=None, **more):
    auth = {"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": idp.url}
    if idp.tls:
        auth["jwt_jwks_ca_file"] = str(certs.ca_crt)
    auth.update(more)
    return auth


def start(evhostd, build_dir, auth, **kw):
    return evhostd(dropins={"20-probe.conf": probe(build_dir), IDP_DROPIN: idp_conf(**auth)},
                   brokers="embedded", **kw)


def token(key, kid, **changes):
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    return sign(key, alg, claims(**changes), header={"alg": alg, "typ": "JWT", "kid": kid})


def whoami(d, tok):
    return d.get("/probe/whoami", headers={"Authorization": f"Bearer {tok}"})


def ok(d, tok):
    r = whoami(d, tok)
    return r.status_code == 200 and r.text == "f:0c5e:ada"


def assert_ok(d, tok, what=""):
    r = whoami(d, tok)
    assert r.status_code == 200 and r.text == "f:0c5e:ada", (what, r.status_code, r.text,
                                                             d.log_tail(20))


def assert_refused(d, tok, why):
    r = whoami(d, tok)
    assert r.status_code == 401 and why in r.text, (why, r.status_code, r.text)


def assert_not_fetched_yet(d, tok):
    r = whoami(d, tok)
    assert r.status_code == 503 and NOT_FETCHED in r.text, (r.status_code, r.text)
    assert r.headers.get("Retry-After", "").isdigit(), r.headers


def shown(url):
    """url as the log and the cache show it: its query's values as ***."""
    def hidden(param):
        name, eq, _ = param.partition("=")
        return name + "=***" if eq else "***" if param else ""
    base, _, query = url.partition("?")
    return base + "?" + "&".join(map(hidden, query.split("&"))) if query else url


def unusable(url, note):
    return f"[auth] the JWKS from {url} has a key evhost cannot use, left out: {note}"


def fetched(url, nrsa, nec):
    return (f"[auth] tokens of {ISSUER} are checked with the key(s) fetched from {url} "
            f"({nrsa} RSA for RS256, {nec} EC for ES256)")


def cannot(url, why=""):
    return f"[auth] cannot fetch the JWKS from {url}: {why}"


def changed(url, n):
    return f"[auth] the JWKS from {url} changed: {n} key(s) now"


def line_with(d, needle):
    return next((ln for ln in d.log_text().splitlines() if needle in ln), None)


def wait_count(d, needle, n, timeout):
    lib.wait_until(lambda: d.log_text().count(needle) >= n, timeout,
                   message=f"{n} x {needle!r} in the evhostd log")


def wait_past(t):
    """Sleep until time.monotonic() reaches t (no longer)."""
    time.sleep(max(0.0, t - time.monotonic()))


def gaps(requests):
    return [round(b.time - a.time, 2) for a, b in zip(requests, requests[1:])]


def version(build_dir):
    out = subprocess.run([str(build_dir / "host" / "evhostd"), "--version"],
                         capture_output=True, text=True, timeout=10).stdout
    return out.split()[1]  # "evhostd 0.1.0 (plugin ABI 1.5)"


# ------------------------------------------------------------------ fetching


def test_keys_fetched_at_start_check_the_providers_tokens(evhostd, build_dir, tmp_path, certs,
                                                          k):
    secret = tmp_path / "jwt.key"
    secret.write_text("k" * 48)
    jwks = {"keys": [jwk(k["other"], "enc-1", use="enc", alg="RSA-OAEP"),
                     jwk(k["rsa"], "rsa-1"), jwk(k["ed"], "ed-1"), jwk(k["ec"], "ec-1")]}
    target = "/realms/shop/protocol/openid-connect/certs?client=evhost"
    with lib.JwksServer(jwks, tls=server_tls(certs), path=target) as idp:
        d = start(evhostd, build_dir, jwks_auth(
            idp, certs, jwt_public_key_audience="shop-api",
            jwt_public_key_roles_claim="realm_access.roles", jwt_secret_file=str(secret)))
        # One GET, as an HTTP/1.1 client that asks for JSON and no more.
        reqs = idp.requests
        assert len(reqs) == 1, reqs
        r = reqs[0]
        assert (r.method, r.target, r.version) == ("GET", target, "HTTP/1.1"), r
        assert r.headers.get("host") == f"127.0.0.1:{idp.port}", r.headers
        assert r.headers.get("accept") == "application/json", r.headers
        assert r.headers.get("connection", "").lower() == "close", r.headers
        assert r.headers.get("user-agent") == f"evhost/{version(build_dir)}", r.headers

        # The URL's query is logged without its values (they may be a key).
        url = shown(idp.url)
        assert url.endswith("/certs?client=***"), url
        line = line_with(d, fetched(url, 1, 1))
        assert line and "refreshed every 3600 s" in line, d.log_tail()
        assert f"[auth] 2 key(s) of the JWKS from {url} left out" in d.log_text()
        assert "client=evhost" not in d.log_text(), d.log_tail()
        assert "cannot use" not in d.log_text(), d.log_tail()
        cache = d.state_dir / "jwks-cache.json"
        lib.wait_until(lambda: cache.exists() and url in cache.read_text(), timeout=5,
                       message=f"{cache} naming {url}")
        assert "client=evhost" not in cache.read_text()

        for key, kid in ((k["rsa"], "rsa-1"), (k["ec"], "ec-1")):
            assert_ok(d, token(key, kid), kid)
            r = d.get("/probe/admin", headers={"Authorization": f"Bearer {token(key, kid)}"})
            assert r.status_code == 200, (kid, r.text)
        # Issuer, audience and roles claim apply as to jwt_public_key_file's keys.
        r = d.get("/probe/admin", headers={"Authorization": "Bearer " + token(
            k["rsa"], "rsa-1", realm_access={"roles": ["user"]}, roles=["admin"])})
        assert r.status_code == 403, r.text
        assert_refused(d, token(k["rsa"], "rsa-1", iss="https://elsewhere.example"),
                       "wrong token issuer")
        assert_refused(d, token(k["ec"], "ec-1", aud="other-api"), "not for this audience")
        assert_refused(d, token(k["rsa2"], "rsa-1"), "bad signature")
        # evhost's own tokens work beside them.
        r = whoami(d, lib.sign_token(secret.read_bytes(), "bob"))
        assert r.status_code == 200 and r.text == "bob", r.text
        # Tokens of known kids asked for nothing more.
        assert len(idp.requests) == 1, idp.requests
        # The encryption key left out checks nothing.
        assert_refused(d, token(k["other"], "enc-1"), UNKNOWN_KID)


@pytest.mark.inputs
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_the_answer_may_be_framed_any_way(evhostd, build_dir, certs, k, framing):
    # A set of some size (a provider's with certificates runs to kilobytes),
    # written in pieces: read across several reads, whole.
    jwks = {"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["rsa2"], "rsa-2"), jwk(k["rsa3"], "rsa-3"),
                     jwk(k["ec"], "ec-1"), jwk(k["other"], "enc-1", use="enc", alg="RSA-OAEP")]}
    with lib.JwksServer(jwks, tls=server_tls(certs)) as idp:
        idp.framing = framing
        idp.body = (json.dumps(jwks, indent=2) + " " * 20000 + "\n").encode()
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        assert [r.answer for r in idp.requests] == [f"200 {framing}"], idp.requests
        assert line_with(d, fetched(idp.url, 3, 1)), d.log_tail()
        for key, kid in ((k["rsa"], "rsa-1"), (k["rsa3"], "rsa-3"), (k["ec"], "ec-1")):
            assert_ok(d, token(key, kid), kid)


def test_an_unknown_kid_fetches_the_set_again_at_most_every_5_s(evhostd, build_dir, certs, k):
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        assert_ok(d, token(k["rsa"], "rsa-1"))
        # The provider rotates in a new key; evhostd may ask again 5 s after it last did.
        idp.jwks = {"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["rsa2"], "rsa-2")]}
        wait_past(idp.requests[-1].done + 5.3)
        idp.delay = 1.0  # the token's request waits for the fetch
        assert_ok(d, token(k["rsa2"], "rsa-2"), "kid of the new key")
        assert len(idp.requests) == 2, idp.requests
        d.wait_for_log(changed(idp.url, 2), timeout=2)
        idp.delay = 0

        # Within 5 s of that fetch, another unknown kid asks for nothing.
        last = idp.requests[-1]
        assert_refused(d, token(k["rsa3"], "rsa-9"), UNKNOWN_KID)
        assert time.monotonic() - last.done < 4.5, "too slow to see the 5 s rule"
        assert len(idp.requests) == 2, idp.requests
        # After them, it asks again; the set lacks that kid still.
        wait_past(last.done + 5.3)
        assert_refused(d, token(k["rsa3"], "rsa-9"), UNKNOWN_KID)
        assert len(idp.requests) == 3, idp.requests
        # The same set again is no change.
        assert d.log_text().count(f"[auth] the JWKS from {idp.url} changed") == 1, d.log_tail()
        assert_ok(d, token(k["rsa"], "rsa-1"), "the key kept")
        # A key of a kind the set had none of (the provider moved to ES256):
        # fetched again the same way.
        idp.jwks = {"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["ec"], "ec-1")]}
        wait_past(idp.requests[-1].done + 5.3)
        assert_ok(d, token(k["ec"], "ec-1"), "an ES256 key added")
        assert len(idp.requests) == 4, idp.requests


def test_the_set_is_fetched_again_every_refresh(evhostd, build_dir, certs, k):
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        line = line_with(d, fetched(idp.url, 1, 0))
        assert line and "refreshed every 5 s" in line, d.log_tail()
        # The provider rotates: the old key out, a new one in (beside a key
        # evhostd cannot use, said once for this set).
        idp.jwks = {"keys": [jwk(k["rsa2"], "rsa-2"),
                             {"kty": "EC", "kid": "bad", "crv": "P-256", "x": "AA", "y": "AA"}]}
        reqs = idp.wait_requests(2, timeout=9)
        assert 4.5 <= gaps(reqs)[0] <= 7, gaps(reqs)
        d.wait_for_log(changed(idp.url, 1), timeout=3)
        assert unusable(idp.url, "JWKS key 2 (kid 'bad'): its x and y are not 32 bytes") \
            in d.log_text(), d.log_tail()
        # Used at once: no token with the new kid was needed to find it.
        assert_ok(d, token(k["rsa2"], "rsa-2"), "the rotated key")
        assert len(idp.requests) == 2, idp.requests
        cache = d.state_dir / "jwks-cache.json"
        first = json.loads(cache.read_text())["fetched_at"]
        reqs = idp.wait_requests(3, timeout=9)
        assert 4.5 <= gaps(reqs)[1] <= 7, gaps(reqs)
        assert_refused(d, token(k["rsa"], "rsa-1"), UNKNOWN_KID)
        # The same set again: the cache says when it was last fetched; the
        # key left out is not said again.
        lib.wait_until(lambda: json.loads(cache.read_text())["fetched_at"] > first, timeout=3,
                       message="the cache's fetched_at moved on")
        lib.wait_until(lambda: scrape_value(d, "evhost_jwks_fetches_total", result="ok") == 3,
                       timeout=3, message="the third fetch done")
        assert d.log_text().count("has a key evhost cannot use") == 1, d.log_tail()


# ------------------------------------------------------------------ rotation


def token_without_kid(key, **changes):
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    return sign(key, alg, claims(**changes), header={"alg": alg, "typ": "JWT"})


def without_kid(key_jwk):
    return {m: v for m, v in key_jwk.items() if m != "kid"}


def test_a_refresh_in_ms_is_kept_as_given(evhostd, build_dir, certs, k):
    # 5500ms is 5.5 s, not cut to 5 s (nor would 500ms have been 0: the
    # least is 5 s, --check-config's test above).
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5500ms"))
        line = line_with(d, fetched(idp.url, 1, 0))
        assert line and "refreshed every 5.5 s" in line, d.log_tail()
        idp.wait_requests(2, timeout=12)
        assert_ok(d, token(k["rsa"], "rsa-1"))


def test_a_rotation_brings_the_new_key_and_drops_the_withdrawn_one_also_after_a_restart(
        evhostd, build_dir, tmp_path, certs, k):
    """A provider's rotation as it happens: the new key published and used
    before evhostd's refresh, then the old one withdrawn; the same kid later
    given other key material. A restart while the provider is down uses the
    set kept in the cache, without the withdrawn key."""
    state = tmp_path / "state"
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        auth = jwks_auth(idp, certs)
        d = start(evhostd, build_dir, auth, state_dir=state)
        assert_ok(d, token(k["rsa"], "rsa-1"))
        # The new key is published and signs at once: its first token is
        # accepted after one fetch (5 s after the last, at the earliest), also
        # when the set has a key evhostd cannot use beside it.
        broken = {"kty": "RSA", "kid": "broken", "use": "sig", "e": "AQAB"}
        idp.jwks = {"keys": [jwk(k["rsa"], "rsa-1"), broken, jwk(k["rsa2"], "rsa-2")]}
        wait_past(idp.requests[-1].done + 5.3)
        assert_ok(d, token(k["rsa2"], "rsa-2"), "the new key's first token")
        assert len(idp.requests) == 2, idp.requests
        assert unusable(idp.url, "JWKS key 2 (kid 'broken'): its n is missing") in d.log_text()
        assert_ok(d, token(k["rsa"], "rsa-1"), "the old key, still published")
        # The old key is withdrawn; the next fetch (here a token naming a
        # kid the set lacks) drops it.
        idp.jwks = {"keys": [jwk(k["rsa2"], "rsa-2")]}
        wait_past(idp.requests[-1].done + 5.3)
        assert_refused(d, token(k["rsa3"], "rsa-3"), UNKNOWN_KID)
        assert len(idp.requests) == 3, idp.requests
        d.wait_for_log(changed(idp.url, 1), timeout=3)
        assert_refused(d, token(k["rsa"], "rsa-1"), UNKNOWN_KID)
        assert_ok(d, token(k["rsa2"], "rsa-2"))
        # The same kid given other key material: tokens of the new material
        # are refused until the next fetch has it (a kid the set has asks
        # for none), those of the old one from then on.
        idp.jwks = {"keys": [jwk(k["rsa3"], "rsa-2")]}
        assert_refused(d, token(k["rsa3"], "rsa-2"), "bad signature")
        assert len(idp.requests) == 3, idp.requests
        wait_past(idp.requests[-1].done + 5.3)
        assert_refused(d, token(k["other"], "rsa-9"), UNKNOWN_KID)  # fetches again
        assert len(idp.requests) == 4, idp.requests
        assert_ok(d, token(k["rsa3"], "rsa-2"), "the kid's new material")
        assert_refused(d, token(k["rsa2"], "rsa-2"), "bad signature")
        assert d.stop() == 0
    # The provider is down: the cache has the last set, not the withdrawn keys.
    d2 = start(evhostd, build_dir, auth, state_dir=state)
    d2.wait_for_log(f"[auth] using the keys fetched from {idp.url} at ", timeout=5)
    assert_ok(d2, token(k["rsa3"], "rsa-2"), "the cached key")
    assert_refused(d2, token(k["rsa2"], "rsa-2"), "bad signature")
    assert_refused(d2, token(k["rsa"], "rsa-1"), UNKNOWN_KID)


def test_keys_sharing_a_kid_each_check_their_tokens(evhostd, build_dir, certs, k):
    """A provider may list two keys under one kid: an RSA and an EC key, or
    an old and a new key of a rotation. Each checks its tokens."""
    jwks = {"keys": [jwk(k["rsa"], "k1"), jwk(k["ec"], "k1"), jwk(k["rsa2"], "k2"),
                     jwk(k["rsa3"], "k2")]}
    with lib.JwksServer(jwks, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        for key, kid in ((k["rsa"], "k1"), (k["ec"], "k1"), (k["rsa2"], "k2"),
                         (k["rsa3"], "k2")):
            assert_ok(d, token(key, kid), kid)
        # Another key under a kid of the set is not one of them.
        assert_refused(d, token(k["other"], "k1"), "bad signature")
        assert_refused(d, token(k["rsa"], "k2"), "bad signature")
        assert len(idp.requests) == 1, idp.requests


def test_keys_without_a_kid_beside_keys_with_one(evhostd, build_dir, certs, k):
    """A set whose keys do not all have a kid: a token without a kid is
    checked with every key of its kind; one with a kid, with the key of
    that kid, else only with the keys that have none (never with a key of
    another kid); a kid the set lacks is fetched again, as with any set."""
    jwks = {"keys": [jwk(k["rsa"], "rsa-1"), without_kid(jwk(k["rsa2"], None)),
                     without_kid(jwk(k["ec"], None))]}
    with lib.JwksServer(jwks, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        assert_ok(d, token_without_kid(k["rsa"]), "no kid, a key with one")
        assert_ok(d, token_without_kid(k["rsa2"]), "no kid, a key without one")
        assert_ok(d, token_without_kid(k["ec"]), "no kid, an EC key")
        assert_ok(d, token(k["rsa"], "rsa-1"), "its kid")
        assert_ok(d, token(k["rsa2"], "rsa-9"), "a kid no key has: the keys without one")
        assert_refused(d, token(k["rsa2"], "rsa-1"), "bad signature")
        # Signed by the key of kid rsa-1, naming another kid: not its key.
        assert_refused(d, token(k["rsa"], "rsa-9"), UNKNOWN_KID)
        assert_refused(d, token_without_kid(k["other"]), "bad signature")
        assert len(idp.requests) == 1, idp.requests
        # The provider adds a key: its first token fetches the set again.
        idp.jwks = {"keys": jwks["keys"] + [jwk(k["rsa3"], "rsa-3")]}
        wait_past(idp.requests[-1].done + 5.3)
        assert_ok(d, token(k["rsa3"], "rsa-3"), "the key added")
        assert len(idp.requests) == 2, idp.requests


def test_a_set_with_no_usable_key_withdraws_the_keys_in_use(evhostd, build_dir, tmp_path, certs,
                                                           k):
    """The provider answers a well-formed set with no key evhostd can use
    (none left, only encryption keys, only Ed25519): it withdrew its keys,
    and they are no longer used (kept, a key it withdrew because it leaked
    would be accepted as long as the set stays so). Its tokens are refused
    (401, not 503), the set is kept in the cache, so that a restart while
    the provider is down does not bring the withdrawn keys back, and a key
    published again is found as any new key is."""
    state = tmp_path / "state"
    cache = state / "jwks-cache.json"
    withdrawn = {"keys": [jwk(k["other"], "enc-1", use="enc", alg="RSA-OAEP"),
                          jwk(k["ed"], "ed-1")]}
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        auth = jwks_auth(idp, certs, jwt_jwks_refresh="5s")
        d = start(evhostd, build_dir, auth, state_dir=state)
        assert_ok(d, token(k["rsa"], "rsa-1"))
        lib.wait_until(lambda: cache.exists() and "rsa-1" in cache.read_text(), timeout=5,
                       message=f"{cache} with rsa-1")
        # The refresh brings the set without usable keys; the one after it
        # fails, and its retry (1 s later, not a refresh later) brings an
        # empty set.
        idp.answer_next(jwks=withdrawn)
        idp.answer_next(status=500)
        idp.jwks = {"keys": []}
        d.wait_for_log(f"[auth] the JWKS from {idp.url} has no key evhost can use (no RS256 or "
                       f"ES256 signing key among its 2 key(s)): tokens of {ISSUER} are refused "
                       "until it publishes an RS256 or ES256 signing key; the keys fetched "
                       "before are no longer used", timeout=9)
        assert_refused(d, token(k["rsa"], "rsa-1"), UNKNOWN_KID)
        assert_refused(d, token(k["ec"], "ec-1"), UNKNOWN_KID)
        lib.wait_until(lambda: "rsa-1" not in cache.read_text(), timeout=3,
                       message=f"{cache} without rsa-1")
        assert json.loads(cache.read_text())["jwks"] == withdrawn
        assert scrape_value(d, "evhost_jwks_fetches_total", result="failed") == 0
        # A failed fetch meanwhile says the tokens stay refused.
        d.wait_for_log(cannot(idp.url, "answered 500"), timeout=9)
        assert "; tokens of its issuer are still refused (its last set had no key evhost can " \
            "use), next try in 1 s" in line_with(d, cannot(idp.url, "answered 500")), d.log_tail()
        # An empty set is the same set: no change said again.
        lib.wait_until(lambda: scrape_value(d, "evhost_jwks_fetches_total", result="ok") == 3,
                       timeout=5, message="the retry's fetch of the empty set")
        assert d.log_text().count("has no key evhost can use") == 1, d.log_tail()
        lib.wait_until(lambda: json.loads(cache.read_text())["jwks"] == {"keys": []},
                       timeout=3, message=f"{cache} with the empty set")
        assert_refused(d, token(k["rsa"], "rsa-1"), UNKNOWN_KID)
        assert d.stop() == 0
        # The provider is down at a restart: the withdrawn keys are not taken
        # from the cache.
        idp.stop()
        d2 = start(evhostd, build_dir, auth, state_dir=state)
        d2.wait_for_log(f"the keys in {cache} are not used: no RS256 or ES256 signing key among "
                        "its 0 key(s)", timeout=5)
        assert "using the keys fetched from" not in d2.log_text(), d2.log_tail()
        assert_not_fetched_yet(d2, token(k["rsa"], "rsa-1"))
        # A key published again: found as any new key (here by the retry).
        idp.jwks = {"keys": [jwk(k["rsa2"], "rsa-2")]}
        idp.start()
        lib.wait_until(lambda: ok(d2, token(k["rsa2"], "rsa-2")), timeout=12, interval=0.3,
                       message="the key published again accepted")
        assert_refused(d2, token(k["rsa"], "rsa-1"), UNKNOWN_KID)


def test_a_start_with_a_set_without_usable_keys_refuses_the_tokens(evhostd, build_dir, certs, k):
    """Such a set at the start: the provider's tokens are refused, not
    answered 503 as while no set has come."""
    with lib.JwksServer({"keys": []}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        d.wait_for_log(f"[auth] the JWKS from {idp.url} has no key evhost can use (no RS256 or "
                       f"ES256 signing key among its 0 key(s)): tokens of {ISSUER} are refused "
                       "until it publishes an RS256 or ES256 signing key", timeout=5)
        assert "the keys fetched before" not in d.log_text(), d.log_tail()
        assert_refused(d, token(k["rsa"], "rsa-1"), UNKNOWN_KID)
        assert_refused(d, token_without_kid(k["ec"]), UNKNOWN_KID)
        assert scrape_value(d, "evhost_jwks_fetches_total", result="ok") == 1
        # Nothing but keys it cannot use is the same: each said, the set in
        # use (not a failed fetch that would wait for the provider to mend it).
        bad = broken_keys(k)
        idp.jwks = {"keys": [key for key, _ in bad]}
        d2 = start(evhostd, build_dir, jwks_auth(idp, certs))
        d2.wait_for_log(f"[auth] the JWKS from {idp.url} has no key evhost can use (no RS256 or "
                        f"ES256 signing key evhost can use among its {len(bad)} key(s): "
                        f"{len(bad)} could not be used): tokens of {ISSUER} are refused", timeout=5)
        for i, (_, why) in enumerate(bad):
            assert unusable(idp.url, f"JWKS key {i + 1} ({why}") in d2.log_text(), d2.log_tail()
        assert_refused(d2, token(k["rsa"], "rsa-1"), UNKNOWN_KID)
        assert scrape_value(d2, "evhost_jwks_fetches_total", result="failed") == 0
        assert scrape_value(d2, "evhost_jwks_keys_unusable") == len(bad)


# ------------------------------------------------- keys evhost cannot use


def broken_keys(k):
    """Keys of a kind evhostd takes that it cannot use, each with what the
    log says of it (RFC 7517, 5: ignored, not a reason to refuse the set)."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return [
        ({"kty": "RSA", "kid": "broken", "use": "sig", "e": "AQAB"},
         "kid 'broken'): its n is missing, not base64url, or over 16384 bits"),
        (jwk(weak, "weak"), "kid 'weak'): an RSA key of fewer than 2048 bits"),
        (jwk(k["ec"], "off-curve", y=b64(bytes(31) + b"\1").decode()),
         "kid 'off-curve') is not a public key OpenSSL can read"),
        ({"kid": "no-kty", "use": "sig"}, "kid 'no-kty') is not a JSON Web Key (no kty)"),
    ]


def test_keys_evhost_cannot_use_are_left_out_and_the_others_used(evhostd, build_dir, certs,
                                                                   k):
    """A set with keys evhostd cannot use (malformed, too weak, a point off
    its curve, no kty) beside good ones: the good ones are used, each bad
    one is said at WARN with its place, kid and why, and /metrics counts
    them. (Said once for a set, not at every fetch of the same set:
    test_the_set_is_fetched_again_every_refresh.)"""
    bad = broken_keys(k)
    jwks = {"keys": [jwk(k["rsa"], "rsa-1")] + [key for key, _ in bad] +
            [jwk(k["other"], "enc-1", use="enc", alg="RSA-OAEP"), jwk(k["ec"], "ec-1")]}
    with lib.JwksServer(jwks, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        assert line_with(d, fetched(idp.url, 1, 1)), d.log_tail()
        for i, (_, why) in enumerate(bad):
            line = line_with(d, unusable(idp.url, f"JWKS key {i + 2} ({why}"))
            assert line and " WARN " in line, (why, d.log_tail())
        assert f"[auth] 1 key(s) of the JWKS from {idp.url} left out: not for" in d.log_text()
        assert_ok(d, token(k["rsa"], "rsa-1"))
        assert_ok(d, token(k["ec"], "ec-1"))
        assert_refused(d, token(k["ec"], "off-curve"), UNKNOWN_KID)
        assert scrape_value(d, "evhost_jwks_keys_unusable") == len(bad)
        assert scrape_value(d, "evhost_jwks_fetches_total", result="failed") == 0


def test_keys_beyond_the_first_16_are_left_out_and_said(evhostd, build_dir, certs):
    """More usable keys than evhostd takes (16: each is tried for a token
    without kid): the first 16 of the set are used, the others said at WARN."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(18)]
    with lib.JwksServer({"keys": [jwk(key, f"ec-{i}") for i, key in enumerate(keys)]},
                        tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        assert line_with(d, fetched(idp.url, 0, 16)), d.log_tail()
        for i in (16, 17):
            assert unusable(idp.url, f"JWKS key {i + 1} (kid 'ec-{i}'): beyond the first 16 "
                                     "RS256 or ES256 keys, the ones used") in d.log_text()
        assert_ok(d, token(keys[0], "ec-0"))
        assert_ok(d, token(keys[15], "ec-15"))
        assert_refused(d, token(keys[16], "ec-16"), UNKNOWN_KID)
        assert scrape_value(d, "evhost_jwks_keys_unusable") == 2


def test_a_flood_of_unknown_kids_fetches_once_and_holds_few_workers(evhostd, build_dir, certs,
                                                                     k):
    """Tokens naming made-up kids, many at once, while the provider is slow
    to answer: one fetch for them all, and the HTTP workers are not all held
    waiting for it (health checks and good tokens are answered meanwhile);
    again and again, at most one fetch every 5 s."""
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        wait_past(idp.requests[-1].done + 5.3)
        idp.delay = 4.0
        flood = [token(k["other"], f"made-up-{i}") for i in range(40)]
        answers = []

        def send(tok):
            try:
                r = whoami(d, tok)
                answers.append((r.status_code, r.text, time.monotonic()))
            except Exception as e:  # noqa: BLE001: said in the assertion below
                answers.append((None, repr(e), time.monotonic()))

        threads = [threading.Thread(target=send, args=(t,)) for t in flood]
        for t in threads:
            t.start()
        idp.wait_requests(2, timeout=5)  # the flood's fetch, under way
        time.sleep(0.5)  # the rest of the flood in evhostd's hands
        health = d.get("/healthz")
        good = whoami(d, token(k["rsa"], "rsa-1"))
        answered = time.monotonic()
        for t in threads:
            t.join(timeout=15)
        fetch = idp.requests[1]
        assert health.status_code == 200 and good.status_code == 200, (health.text, good.text)
        assert fetch.done is not None and answered < fetch.done, \
            "requests waited behind the tokens waiting for the provider"
        assert len(answers) == 40 and all(
            a[0] == 401 and UNKNOWN_KID in a[1] for a in answers), answers
        # Most were answered without waiting for the fetch.
        assert sum(a[2] < fetch.done for a in answers) >= 40 - 4, answers
        assert len(idp.requests) == 2, idp.requests
        idp.delay = 0
        # Made-up kids, one after another, for 7 s: at most one more fetch
        # every 5 s.
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 7:
            assert_refused(d, token(k["other"], f"again-{n}"), UNKNOWN_KID)
            n += 1
        fetched_since = [r for r in idp.requests[2:]]
        assert n > 20 and len(fetched_since) <= 2, (n, fetched_since)
        # Timed when the provider accepted each connection, before its TLS
        # handshake, whose time varies by a few tenths of a second in a
        # loaded TSan run (request times 4.86 s apart were seen); the daemon
        # counts its 5 s from before it connects. 4.5 s still tells one
        # fetch per 5 s from one per token.
        accepted = [fetch.accepted] + [r.accepted for r in fetched_since]
        assert all(b - a >= 4.5 for a, b in zip(accepted, accepted[1:])), \
            [round(b - a, 3) for a, b in zip(accepted, accepted[1:])]


def test_tokens_checked_while_the_set_is_swapped(evhostd, build_dir, certs, k):
    """Requests checking tokens from several threads while the set is
    swapped under them (every fetch brings another set): a key in every set
    is never refused, and a key that comes and goes is accepted or refused,
    never answered 5xx (run under ASan too)."""
    with_b = {"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["ec"], "ec-1"), jwk(k["rsa2"], "rsa-2")]}
    without_b = {"keys": [jwk(k["ec"], "ec-1"), jwk(k["rsa"], "rsa-1")]}
    with lib.JwksServer(with_b, tls=server_tls(certs)) as idp:
        for i in range(6):
            idp.answer_next(jwks=without_b if i % 2 == 0 else with_b)
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        stays = [token(k["rsa"], "rsa-1"), token(k["ec"], "ec-1")]
        comes_and_goes = token(k["rsa2"], "rsa-2")
        bad = []
        seen = set()

        def hammer():
            s = requests.Session()
            while len(idp.requests) < 4 and not bad:
                for tok in stays:
                    r = s.get(d.url + "/probe/whoami", timeout=10,
                              headers={"Authorization": f"Bearer {tok}"})
                    if r.status_code != 200:
                        bad.append((r.status_code, r.text))
                r = s.get(d.url + "/probe/whoami", timeout=10,
                          headers={"Authorization": f"Bearer {comes_and_goes}"})
                seen.add(r.status_code)
                if r.status_code not in (200, 401):
                    bad.append((r.status_code, r.text))

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=40)
        assert not any(t.is_alive() for t in threads)
        assert not bad, bad[:5]
        assert seen == {200, 401}, seen
        assert d.log_text().count(f"[auth] the JWKS from {idp.url} changed") >= 3, d.log_tail()


def test_a_reload_to_another_provider_while_a_fetch_is_under_way(evhostd, build_dir, certs, k):
    """The old provider's fetch under way is given up; the new provider's
    keys are used, and it is its set that the cache keeps."""
    with lib.JwksServer({"keys": [jwk(k["rsa"], "a-1")]}, tls=server_tls(certs)) as a, \
            lib.JwksServer({"keys": [jwk(k["ec"], "b-1")]}, tls=server_tls(certs)) as b:
        d = start(evhostd, build_dir, jwks_auth(a, certs, jwt_jwks_refresh="5s"))
        a.answer_next(delay=30)
        a.wait_requests(2, timeout=9)  # the refresh: waiting for its answer
        (d.config_dir / "conf.d" / IDP_DROPIN).write_text(
            idp_conf(**jwks_auth(b, certs, jwt_jwks_refresh="5s")))
        reload(d, "reload done", timeout=15)
        assert line_with(d, f"the fetch of the JWKS from {a.url} under way is given up"), \
            d.log_tail()
        assert_ok(d, token(k["ec"], "b-1"))
        assert_refused(d, token(k["rsa"], "a-1"), UNKNOWN_KID)
        cache = d.state_dir / "jwks-cache.json"
        lib.wait_until(lambda: json.loads(cache.read_text())["url"] == b.url, timeout=3,
                       message=f"{cache} naming {b.url}")
        b.wait_requests(2, timeout=9)  # the new fetcher's refresh
        assert len(a.requests) == 2, a.requests
        assert json.loads(cache.read_text())["url"] == b.url


def test_tokens_checked_across_reloads_that_replace_the_fetcher(evhostd, build_dir, certs, k):
    """Reloads that replace the fetcher (another refresh period; with
    token_ttl_max changed too, which is written to disk before the new keys
    are in use) while requests check the provider's tokens: none of them is
    answered 503 meanwhile, the keys stay in use from one fetcher to the
    next."""
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        tok = token(k["rsa"], "rsa-1")
        bad, done, count = [], threading.Event(), [0]

        def hammer():
            s = requests.Session()
            while not done.is_set() and len(bad) < 5:
                r = s.get(d.url + "/probe/whoami", timeout=10,
                          headers={"Authorization": f"Bearer {tok}"})
                count[0] += 1
                if r.status_code != 200:
                    bad.append((r.status_code, r.text))

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            for i in range(20):
                (d.config_dir / "conf.d" / IDP_DROPIN).write_text(idp_conf(**jwks_auth(
                    idp, certs, jwt_jwks_refresh=f"{60 + i}s", token_ttl_max=f"{20 + i}d")))
                reload(d, "reload done", timeout=15)
                if bad:
                    break
        finally:
            done.set()
            for t in threads:
                t.join(timeout=15)
        assert not bad, (bad, count[0])
        assert len(idp.requests) >= 2, idp.requests


# ------------------------------------------------------------------- failing


def test_a_failed_fetch_keeps_the_keys_and_backs_off(evhostd, build_dir, certs, k):
    good = {"keys": [jwk(k["rsa"], "rsa-1")]}
    with lib.JwksServer(good, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        assert_ok(d, token(k["rsa"], "rsa-1"))
        cache = d.state_dir / "jwks-cache.json"
        lib.wait_until(cache.exists, timeout=5, message=f"{cache}")
        # The next four answers fail, each its own way. (A set without a key
        # evhostd can use is no failure: the provider withdrew its keys.)
        idp.answer_next(status=500)
        idp.answer_next(jwks={"keys": {"kid": "rsa-2"}})
        idp.answer_next(body=b"<html><body>Maintenance</body></html>")
        idp.answer_next(truncate=True)
        steps = ((cannot(idp.url, "answered 500"), 1),
                 (cannot(idp.url, 'not a JWKS: no "keys" array'), 1),
                 (cannot(idp.url, "not a JWKS: invalid JSON at line 1, column 1"), 1),
                 (cannot(idp.url, "the answer ended after"), 1))
        for needle, n in steps:
            wait_count(d, needle, n, timeout=8)
            assert_ok(d, token(k["rsa"], "rsa-1"), f"keys kept after {needle!r}")
        reqs = idp.requests
        assert [r.answer for r in reqs] == ["200 length", "500", "200 length", "200 length",
                                            "200 truncated"], reqs
        # The refresh, then retries 1 s, 2 s and 4 s after each failure.
        g = gaps(reqs)
        assert 4.5 <= g[0] <= 7 and 0.8 <= g[1] <= 2.5 and 1.6 <= g[2] <= 3.5 and \
            3.2 <= g[3] <= 5.5, g
        # The set kept is still the good one.
        text = cache.read_text()
        assert idp.url in text and "rsa-1" in text and "rsa-2" not in text, text
        # What /metrics tells the operator: the good fetches (the start's, and
        # the retry after the four if it came), the failed ones, and when the
        # last good one ended.
        assert scrape_value(d, "evhost_jwks_fetches_total", result="ok") in (1, 2)
        assert scrape_value(d, "evhost_jwks_fetches_total", result="failed") >= 4
        last = scrape_value(d, "evhost_jwks_last_success_timestamp_seconds")
        assert time.time() - 60 < last <= time.time(), last
        # The shipped alert on failing fetches, and the dashboard's panel, read
        # those families.
        rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"]
                 for r in g["rules"]}
        assert set(re.findall(r"\bevhost_[a-z_]+\b", rules["EvhostJwksFetchFailing"]["expr"])) \
            == {"evhost_jwks_fetches_total"}
        panel = [" ".join(t["expr"] for t in p.get("targets", []))
                 for p in json.loads(DASHBOARD.read_text())["panels"]
                 if "evhost_jwks_" in json.dumps(p.get("targets", []))]
        assert panel and set(re.findall(r"\bevhost_[a-z_]+\b", panel[0])) == {
            "evhost_jwks_fetches_total", "evhost_jwks_last_success_timestamp_seconds"}, panel


def test_an_answer_too_large_or_a_cache_that_cannot_be_written_is_said(evhostd, build_dir,
                                                                      certs, k, tmp_path):
    state = tmp_path / "state"
    # Where the cache goes, a directory it cannot be renamed over.
    (state / "jwks-cache.json").mkdir(parents=True)
    (state / "jwks-cache.json" / "keep").write_text("")
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        idp.answer_next(body=b" " * (1024 * 1024 + 1) + b"{}")
        d = start(evhostd, build_dir, jwks_auth(idp, certs), state_dir=state)
        d.wait_for_log(cannot(idp.url, "the answer is larger than 1048576 bytes"), timeout=5)
        # The retry gets the set; keeping it fails, and says why; the keys work.
        d.wait_for_log(fetched(idp.url, 1, 0), timeout=8)
        d.wait_for_log(f"cannot keep the JWKS in {state}/jwks-cache.json: cannot rename ",
                       timeout=3)
        assert_ok(d, token(k["rsa"], "rsa-1"))
        assert [p.name for p in state.iterdir() if p.name.startswith(".jwks-cache")] == []


def test_no_keys_answers_503_until_a_retry_succeeds(evhostd, build_dir, certs, k):
    jwks = {"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["ec"], "ec-1")]}
    with lib.JwksServer(jwks, tls=server_tls(certs)) as idp:
        idp.answer_next(status=301, headers={"Location": idp.url_for("/moved")})
        idp.answer_next(body=b"<html><body>Service temporarily unavailable</body></html>")
        idp.answer_next(jwks={"kid": "x", "kty": "RSA"})  # a key, not a set
        idp.answer_next(status=500)
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        d.wait_for_log(cannot(idp.url, f"answered 301, a redirect to {idp.url_for('/moved')}"),
                       timeout=5)
        assert (f"[auth] no keys for the tokens of {ISSUER} yet: they are answered 503 until "
                f"a fetch from {idp.url} succeeds") in d.log_text(), d.log_tail()
        assert_not_fetched_yet(d, token(k["rsa"], "rsa-1"))
        wait_count(d, cannot(idp.url, "not a JWKS"), 2, timeout=6)
        d.wait_for_log(cannot(idp.url, "answered 500"), timeout=6)
        assert_not_fetched_yet(d, token(k["ec"], "ec-1"))
        # The fifth try, 5 s after the fourth (the refresh caps the backoff),
        # gets the keys. (No token meanwhile: one might fetch too.)
        d.wait_for_log(fetched(idp.url, 1, 1), timeout=8)
        assert_ok(d, token(k["rsa"], "rsa-1"))
        assert_ok(d, token(k["ec"], "ec-1"))
        reqs = idp.requests
        # The redirect was not followed.
        assert len(reqs) == 5 and all(r.target == idp.path for r in reqs), reqs
        g = gaps(reqs)
        assert 0.8 <= g[0] <= 2.5 and 1.6 <= g[1] <= 3.5 and 3.2 <= g[2] <= 5.5 and \
            4.0 <= g[3] <= 6.5, g


def test_a_redirect_is_said_without_its_password_or_query_values(evhostd, build_dir, k):
    # A redirect is not followed, and where it leads is said: without the
    # USER:PASSWORD@ part or the query's values it may carry.
    pw = "redirpw-" + "5" * 8
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}) as idp:
        idp.answer_next(status=302, headers={
            "Location": f"https://kc:{pw}@sso.example/realms/x/certs?client_secret={pw}&a=b"})
        d = start(evhostd, build_dir, jwks_auth(idp))
        d.wait_for_log(cannot(idp.url, "answered 302, a redirect to https://***@sso.example/"
                                       "realms/x/certs?client_secret=***&a=***: set "
                                       "jwt_jwks_url to where it leads"), timeout=5)
        d.wait_for_log(fetched(idp.url, 1, 0), timeout=5)
        assert pw not in d.log_text(), d.log_tail()


def test_provider_down_at_the_first_start(evhostd, build_dir, tmp_path, k):
    # Plain http, to a loopback address; nothing listens there yet.
    secret = tmp_path / "jwt.key"
    secret.write_text("k" * 48)
    idp = lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["ec"], "ec-1")]})
    try:
        d = start(evhostd, build_dir, jwks_auth(idp, jwt_secret_file=str(secret)))
        d.wait_for_log(cannot(idp.url, "cannot connect to"), timeout=5)
        assert (f"[auth] no keys for the tokens of {ISSUER} yet: they are answered 503 until "
                f"a fetch from {idp.url} succeeds") in d.log_text(), d.log_tail()
        assert not (d.state_dir / "jwks-cache.json").exists()
        lib.wait_until(lambda: d.get("/readyz").status_code == 200, timeout=20,
                       message="readyz 200")
        assert_not_fetched_yet(d, token(k["rsa"], "rsa-1"))
        assert_not_fetched_yet(d, token(k["ec"], "ec-1"))
        r = whoami(d, lib.sign_token(secret.read_bytes(), "bob"))
        assert r.status_code == 200 and r.text == "bob", r.text
        # The provider comes up: a retry within the backoff finds it.
        idp.start()
        lib.wait_until(lambda: ok(d, token(k["rsa"], "rsa-1")), timeout=15, interval=0.3,
                       message="a token accepted once the provider is up")
        assert fetched(idp.url, 1, 1) in d.log_text(), d.log_tail()
        assert_ok(d, token(k["ec"], "ec-1"))
        assert idp.requests[0].headers.get("host") == f"127.0.0.1:{idp.port}"
    finally:
        idp.stop()


def test_a_provider_that_does_not_answer_holds_the_start_5_s_at_most(evhostd, build_dir,
                                                                      certs, k):
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        idp.answer_next(delay=20)  # accepted, never answered in time
        d = start(evhostd, build_dir, jwks_auth(idp, certs), timeout=15)
        d.wait_for_log(cannot(idp.url), timeout=8)
        assert (f"[auth] no keys for the tokens of {ISSUER} yet: they are answered 503 until "
                f"a fetch from {idp.url} succeeds") in d.log_text(), d.log_tail()
        lib.wait_until(lambda: ok(d, token(k["rsa"], "rsa-1")), timeout=10,
                       message="a token accepted once the provider answers")
        assert len(idp.requests) >= 2, idp.requests


def test_the_providers_certificate_is_checked(evhostd, build_dir, tmp_path, certs, k):
    # A certificate for elsewhere.example, from the CA that jwt_jwks_ca_file trusts.
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, host="localhost",
                        tls=(certs.elsewhere_crt, certs.elsewhere_key)) as idp:
        tls_failed = cannot(idp.url, f"TLS with localhost:{idp.port} failed: ")
        d = start(evhostd, build_dir, jwks_auth(idp, certs))
        d.wait_for_log(tls_failed, timeout=5)
        assert idp.requests == [], "asked over a connection that failed the check"
        assert_not_fetched_yet(d, token(k["rsa"], "rsa-1"))
        # The right certificate: a retry gets the keys.
        idp.tls = server_tls(certs)
        lib.wait_until(lambda: ok(d, token(k["rsa"], "rsa-1")), timeout=15, interval=0.3,
                       message="a token accepted once the certificate is right")
        assert idp.requests[0].headers.get("host") == f"localhost:{idp.port}"

        # Without jwt_jwks_ca_file, the system's CAs: they know no test CA.
        n = len(idp.requests)
        auth = jwks_auth(idp, certs)
        del auth["jwt_jwks_ca_file"]
        d2 = start(evhostd, build_dir, auth)
        d2.wait_for_log(tls_failed, timeout=5)
        assert_not_fetched_yet(d2, token(k["rsa"], "rsa-1"))
        # A jwt_jwks_ca_file of another CA: that one is what the certificate is checked against.
        ca_file = tmp_path / "idp-ca.crt"
        ca_file.write_bytes(certs.other_ca_crt.read_bytes())
        d3 = start(evhostd, build_dir, dict(auth, jwt_jwks_ca_file=str(ca_file)))
        d3.wait_for_log(tls_failed, timeout=5)
        assert_not_fetched_yet(d3, token(k["rsa"], "rsa-1"))
        assert len(idp.requests) == n, idp.requests
        # The file is read at every fetch: the right CA put in its place is
        # used by the next retry, without a reload.
        ca_file.write_bytes(certs.ca_crt.read_bytes())
        lib.wait_until(lambda: ok(d3, token(k["rsa"], "rsa-1")), timeout=15, interval=0.3,
                       message="a token accepted once the CA file is right")
        assert len(idp.requests) == n + 1, idp.requests


def test_an_unknown_kid_does_not_wait_for_a_provider_that_failed(evhostd, build_dir, certs, k):
    # A provider that fails may hang until the fetch's timeout: requests with
    # an unknown kid then get their answer at once (they would hold HTTP
    # workers), and still ask for a fetch.
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        idp.answer_next(status=503)
        idp.wait_requests(2, timeout=9)
        d.wait_for_log(cannot(idp.url, "answered 503"), timeout=3)
        # The provider rotates, and its next answer takes 3 s.
        idp.jwks = {"keys": [jwk(k["rsa"], "rsa-1"), jwk(k["rsa2"], "rsa-2")]}
        idp.delay = 3.0
        wait_past(idp.requests[-1].done + 0.2)
        t0 = time.monotonic()
        assert_refused(d, token(k["rsa2"], "rsa-2"), UNKNOWN_KID)
        assert time.monotonic() - t0 < 1.5, "the request waited for the provider"
        assert_ok(d, token(k["rsa"], "rsa-1"), "the keys kept")
        # The fetch it asked for (or the 1 s retry) brings the new key.
        idp.wait_requests(3, timeout=5)
        idp.delay = 0
        d.wait_for_log(changed(idp.url, 2), timeout=8)
        assert_ok(d, token(k["rsa2"], "rsa-2"), "the new key")


def log_time(line):
    """The time (s since the epoch) of an evhostd log line."""
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()


def test_a_stop_does_not_wait_for_a_fetch_under_way(evhostd, build_dir, certs, k):
    """A provider slow to answer the periodic fetch does not hold up a stop
    until the fetch's 5 s timeout: the fetch is given up at once, and said
    so, not as a failure."""
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        # The start's fetch fails: its retry, 1 s later (not a refresh
        # later), is the fetch under way.
        idp.answer_next(status=500)
        idp.answer_next(delay=30)
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        idp.wait_requests(2, timeout=5)  # the retry: waiting for its answer
        stop_gives_the_fetch_up(d, idp)


def stop_gives_the_fetch_up(d, idp):
    """Stop d: its fetch from idp under way is given up within 2 s of the
    SIGTERM, said so, and not as a failed fetch."""
    assert d.stop() == 0
    log = d.log_text()
    stopping = line_with(d, "SIGTERM: stopping")
    given_up = line_with(d, f"the fetch of the JWKS from {idp.url} under way is given up: "
                            "its fetcher stops")
    assert stopping and given_up, log
    assert log_time(given_up) - log_time(stopping) < 2, (stopping, given_up)
    assert "cannot fetch the JWKS" not in log[log.index(stopping):], log


def test_a_stop_does_not_wait_for_a_tls_handshake_under_way(evhostd, build_dir, certs, k):
    """Nor for a provider that accepted the connection and has not answered
    the TLS handshake."""
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        # The start's fetch and its retry (1 s later) fail; the next retry,
        # 2 s after that rather than a refresh later, meets the slow server.
        idp.answer_next(status=500)
        idp.answer_next(status=500)
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        idp.wait_requests(2, timeout=5)
        assert idp.connections == 2
        idp.handshake_delay = 30
        lib.wait_until(lambda: idp.connections == 3, timeout=5,
                       message="the second retry's connection")
        time.sleep(0.5)  # its ClientHello sent, the handshake waiting for the server
        stop_gives_the_fetch_up(d, idp)
        assert len(idp.requests) == 2  # the start's and the first retry's; the next sent none


def test_a_stop_does_not_wait_for_a_connection_under_way(evhostd, build_dir, k):
    """Nor for a connection the provider's host has not accepted: here a
    listener whose queue is full, so the kernel drops the refresh's SYN."""
    idp = lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}).start()
    try:
        d = start(evhostd, build_dir, jwks_auth(idp, jwt_jwks_refresh="5s"))
        started = time.monotonic()
        assert len(idp.requests) == 1
    finally:
        idp.stop()
    with socket.socket() as full:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        full.bind(("127.0.0.1", idp.port))
        full.listen(0)  # never accepted: fills after a connection or two
        fillers = []
        try:
            for _ in range(4):  # until the queue is full and a SYN is dropped
                s = socket.socket()
                fillers.append(s)
                s.settimeout(1.0)
                try:
                    s.connect(("127.0.0.1", idp.port))
                except socket.timeout:
                    break
            else:
                pytest.fail("a listen queue that does not fill")
            time.sleep(max(0.0, started + 6.5 - time.monotonic()))  # the refresh connecting
            stop_gives_the_fetch_up(d, idp)
            assert "cannot connect" not in d.log_text(), d.log_tail()
        finally:
            for s in fillers:
                s.close()


def test_a_reload_does_not_wait_for_the_replaced_fetchers_fetch(evhostd, build_dir, certs, k):
    """Nor a reload that replaces the fetcher (here: a new refresh period):
    the old one's fetch under way is given up, the new one fetches."""
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        # The start's fetch fails; its retry (after 1 s) is kept waiting.
        idp.answer_next(status=500)
        idp.answer_next(delay=30)
        d = start(evhostd, build_dir, jwks_auth(idp, certs, jwt_jwks_refresh="5s"))
        idp.wait_requests(2, timeout=5)  # the retry: waiting for its answer
        (d.config_dir / "conf.d" / IDP_DROPIN).write_text(
            idp_conf(**jwks_auth(idp, certs, jwt_jwks_refresh="7s")))
        t0 = time.monotonic()
        reload(d, "reload done", timeout=15)
        took = time.monotonic() - t0
        assert line_with(d, f"the fetch of the JWKS from {idp.url} under way is given up"), \
            d.log_tail()
        assert took < 3.5, f"the reload took {took:.1f} s"
        assert len(idp.requests) == 3, idp.requests  # the new fetcher's first
        assert_ok(d, token(k["rsa"], "rsa-1"))


def test_keys_fetched_through_the_environments_proxy(evhostd, build_dir, certs, k):
    # A host that reaches the provider only through its network's proxy
    # (HTTPS_PROXY, as curl takes it): a CONNECT tunnel to the provider's
    # name, which only the proxy resolves (here to 127.0.0.1), the
    # certificate checked for that name.
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]},
                        tls=(certs.elsewhere_crt, certs.elsewhere_key)) as idp, \
            lib.ConnectProxy(routes={"elsewhere.example": "127.0.0.1"}) as proxy:
        url = f"https://elsewhere.example:{idp.port}/realms/shop/protocol/openid-connect/certs"
        auth = {"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": url,
                "jwt_jwks_ca_file": str(certs.ca_crt), "jwt_jwks_refresh": "5s"}
        env = {"HTTPS_PROXY": f"http://ada:s%40cr3t@127.0.0.1:{proxy.port}",
               "NO_PROXY": "internal.corp"}
        d = start(evhostd, build_dir, auth, env=env)
        log = d.log_text()
        assert (f"outgoing HTTPS (the identity provider's keys) goes through the proxy "
                f"127.0.0.1:{proxy.port} (HTTPS_PROXY, with its credentials); direct to "
                f"no_proxy's 'internal.corp'") in log, d.log_tail()
        assert "s%40cr3t" not in log and "s@cr3t" not in log
        assert line_with(d, fetched(url, 1, 0)), d.log_tail()
        assert proxy.connects == [f"elsewhere.example:{idp.port}"], proxy.connects
        assert proxy.auths == ["Basic " + base64.b64encode(b"ada:s@cr3t").decode()], proxy.auths
        assert idp.requests[0].headers.get("host") == f"elsewhere.example:{idp.port}"
        assert_ok(d, token(k["rsa"], "rsa-1"))

        # The proxy refusing the tunnel, answering what is not HTTP, more than
        # its answer, or nothing, then gone: each said, the keys kept.
        proxy.refuse = "407 Proxy Authentication Required"
        d.wait_for_log(cannot(url, f"the proxy 127.0.0.1:{proxy.port} (HTTPS_PROXY) refused "
                                   f"the tunnel to elsewhere.example:{idp.port}: 407 Proxy "
                                   f"Authentication Required"), timeout=9)
        proxy.refuse = None
        the_proxy = f"the proxy 127.0.0.1:{proxy.port} (HTTPS_PROXY)"
        for raw, why in ((b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "gave no HTTP answer to CONNECT"),
                         (b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01",
                          "sent bytes after its answer to CONNECT"),
                         (b"", "gave no answer to CONNECT: the connection was closed")):
            proxy.raw = raw
            d.wait_for_log(cannot(url, f"{the_proxy} {why}"), timeout=9)
        assert_ok(d, token(k["rsa"], "rsa-1"), "the keys kept")
        proxy.stop()
        d.wait_for_log(cannot(url, f"the proxy (HTTPS_PROXY): cannot connect to "
                                   f"127.0.0.1:{proxy.port}"), timeout=9)
        assert_ok(d, token(k["rsa"], "rsa-1"), "the keys kept")


def test_a_malformed_proxy_is_said_by_check_config(evhostd, tmp_path):
    url = "https://idp.example/realms/shop/protocol/openid-connect/certs"
    p = evhostd.run(["--check-config"], brokers="embedded",
                    dropins={IDP_DROPIN: idp_conf(jwt_public_key_issuer=ISSUER,
                                                  jwt_jwks_url=url)},
                    env={"https_proxy": "socks5://127.0.0.1:1080"})
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert ("evhost.conf: environment: https_proxy 'socks5://127.0.0.1:1080': only an http:// "
            "proxy is supported (CONNECT)") in out, out


# ----------------------------------------------------------- cache and reload


def test_a_later_start_uses_the_cached_set_when_the_provider_is_down(evhostd, build_dir,
                                                                     tmp_path, certs, k):
    state = tmp_path / "state"
    cache = state / "jwks-cache.json"
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        auth = jwks_auth(idp, certs)
        d1 = start(evhostd, build_dir, auth, state_dir=state)
        lib.wait_until(lambda: cache.exists() and idp.url in cache.read_text(), timeout=5,
                       message=f"{cache} naming {idp.url}")
        assert_ok(d1, token(k["rsa"], "rsa-1"))
        assert d1.stop() == 0
    # The provider is down now.
    d2 = start(evhostd, build_dir, auth, state_dir=state)
    d2.wait_for_log(f"[auth] using the keys fetched from {idp.url} at ", timeout=5)
    line = line_with(d2, f"[auth] using the keys fetched from {idp.url} at ")
    assert line and f", kept in {cache}" in line, d2.log_tail()
    assert cannot(idp.url) in d2.log_text(), d2.log_tail()
    assert_ok(d2, token(k["rsa"], "rsa-1"), "a cached key")
    assert_refused(d2, token(k["rsa2"], "rsa-1"), "bad signature")
    assert d2.stop() == 0
    # Kept for that URL only: another provider's tokens wait for its keys.
    other = dict(auth, jwt_jwks_url=idp.url_for("/realms/other/protocol/openid-connect/certs"))
    d3 = start(evhostd, build_dir, other, state_dir=state)
    d3.wait_for_log(cannot(other["jwt_jwks_url"]), timeout=5)
    assert "using the keys fetched from" not in d3.log_text(), d3.log_tail()
    assert f"{cache} holds the keys of {idp.url}, not of {other['jwt_jwks_url']}: not used" \
        in d3.log_text(), d3.log_tail()
    assert_not_fetched_yet(d3, token(k["rsa"], "rsa-1"))
    assert d3.stop() == 0
    # Kept longer ago than jwt_jwks_cache_max_age (7 days by default): not
    # used, the provider may have withdrawn a key since; younger, it is.
    kept = json.loads(cache.read_text())
    kept["fetched_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                       time.gmtime(time.time() - 8 * 86400))
    cache.write_text(json.dumps(kept))
    d5 = start(evhostd, build_dir, auth, state_dir=state)
    d5.wait_for_log(cannot(idp.url), timeout=5)
    assert (f"{cache} holds the keys fetched from {idp.url} at {kept['fetched_at']}, longer "
            "ago than [auth] jwt_jwks_cache_max_age (604800 s) allows: not used") \
        in d5.log_text(), d5.log_tail()
    assert_not_fetched_yet(d5, token(k["rsa"], "rsa-1"))
    assert d5.stop() == 0
    d6 = start(evhostd, build_dir, dict(auth, jwt_jwks_cache_max_age="9d"), state_dir=state)
    d6.wait_for_log(f"[auth] using the keys fetched from {idp.url} at ", timeout=5)
    assert_ok(d6, token(k["rsa"], "rsa-1"), "a cached key, 8 days old")
    assert d6.stop() == 0
    # A cache damaged, too large to be one, or whose set has no key evhostd can
    # use: said, not used, nothing else changes.
    no_keys = dict(kept, fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   jwks={"keys": [{"kty": "oct", "kid": "hs", "k": "c2VjcmV0"}]})
    for content, why in ((b'{"url": "' + idp.url.encode() + b'", "jwks": {"ke', "is not a "
                          "JWKS cache evhostd wrote: not used"),
                         (b"", "is not a JWKS cache evhostd wrote: not used"),
                         (json.dumps(no_keys).encode(), f"the keys in {cache} are not used: "
                          "no RS256 or ES256 signing key among its 1 key(s)"),
                         (b" " * (1024 * 1024 + 8192), "cannot read " + str(cache) +
                          ": too large: not used")):
        cache.write_bytes(content)
        d4 = start(evhostd, build_dir, auth, state_dir=state)
        d4.wait_for_log(cannot(idp.url), timeout=5)
        assert why in d4.log_text(), d4.log_tail()
        assert_not_fetched_yet(d4, token(k["rsa"], "rsa-1"))
        assert d4.stop() == 0


def test_a_reload_to_another_provider_fetches_from_it(evhostd, build_dir, certs, k):
    with lib.JwksServer({"keys": [jwk(k["rsa"], "a-1")]}, tls=server_tls(certs)) as a, \
            lib.JwksServer({"keys": [jwk(k["ec"], "b-1")]}, tls=server_tls(certs)) as b:
        d = start(evhostd, build_dir, jwks_auth(a, certs))
        assert_ok(d, token(k["rsa"], "a-1"))
        # No EC key at a: a key it may add, fetched again (not within 5 s).
        assert_refused(d, token(k["ec"], "b-1"), UNKNOWN_KID)
        assert b.requests == []

        (d.config_dir / "conf.d" / IDP_DROPIN).write_text(idp_conf(**jwks_auth(b, certs)))
        asked_a = len(a.requests)
        reload(d, "reload done", timeout=15)
        b.wait_requests(1, timeout=5)
        lib.wait_until(lambda: ok(d, token(k["ec"], "b-1")), timeout=5,
                       message="the new provider's token accepted")
        # The old provider's key is gone, and a is not asked again.
        assert_refused(d, token(k["rsa"], "a-1"), UNKNOWN_KID)
        assert len(a.requests) == asked_a, a.requests
        # No provider at all: its series go with it (frozen, the last good
        # fetch's time aged past any watch on it, for good).
        assert scrape_value(d, "evhost_jwks_fetches_total", result="ok") >= 2
        (d.config_dir / "conf.d" / IDP_DROPIN).write_text("[auth]\n")
        reload(d, "reload done", timeout=15)
        text = d.get("/metrics").text
        assert "evhost_jwks_" not in text, text


def test_a_fetch_of_the_replaced_provider_ending_late_does_not_take_the_cache_back(
        evhostd, build_dir, tmp_path, certs, k):
    """After a reload that names another provider, the cache keeps the new
    provider's set: a fetch of the replaced fetcher that ends after the new
    one kept its set (here the old provider's answer came whole, but on a
    connection it holds open, so it is taken when the reload gives the
    fetch up) does not put the old provider's keys back. A restart while
    the new provider is down then uses its keys, not a cache of another
    URL."""
    state = tmp_path / "state"
    cache = state / "jwks-cache.json"

    def kept_for():
        kept = json.loads(cache.read_text())
        return kept["url"], kept["url_sha256"]

    with lib.JwksServer({"keys": [jwk(k["rsa"], "a-1")]}, tls=server_tls(certs)) as a, \
            lib.JwksServer({"keys": [jwk(k["ec"], "b-1")]}, tls=server_tls(certs)) as b:
        d = start(evhostd, build_dir, jwks_auth(a, certs, jwt_jwks_refresh="5s"),
                  state_dir=state)
        lib.wait_until(lambda: cache.exists() and kept_for()[0] == a.url, timeout=5,
                       message=f"{cache} naming {a.url}")
        a.answer_next(framing="close", hold=30)
        refresh = a.wait_requests(2, timeout=9)[1]
        lib.wait_until(lambda: refresh.done is not None, timeout=5,
                       message="the refresh's answer written (its connection held open)")
        (d.config_dir / "conf.d" / IDP_DROPIN).write_text(idp_conf(**jwks_auth(b, certs)))
        # The reload joins the replaced fetcher: its fetch has ended by then.
        reload(d, "reload done", timeout=15)
        assert line_with(d, f"[auth] the JWKS fetched from {a.url} is not kept in {cache}: "
                            "a reload replaced its fetcher"), d.log_tail()
        assert kept_for() == (b.url, hashlib.sha256(b.url.encode()).hexdigest()), \
            cache.read_text()
        assert_ok(d, token(k["ec"], "b-1"))
        assert d.stop() == 0
    # Both providers are down now.
    d2 = start(evhostd, build_dir, jwks_auth(b, certs), state_dir=state)
    d2.wait_for_log(f"[auth] using the keys fetched from {b.url} at ", timeout=10)
    assert_ok(d2, token(k["ec"], "b-1"), "the new provider's cached key")
    assert d2.stop() == 0


# -------------------------------------------------------------- check-config


def test_check_config_says_each_wrong_key_at_its_line(evhostd, tmp_path, certs, k):
    pem_file = tmp_path / "idp.pem"
    pem_file.write_bytes(pem(k["rsa"]))
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("no certificate here\n")
    url = "https://idp.example/realms/shop/protocol/openid-connect/certs"

    def check(**keys):
        p = evhostd.run(["--check-config"], dropins={IDP_DROPIN: idp_conf(**keys)},
                        brokers="embedded")
        return p.returncode, p.stdout + p.stderr

    def at(key, keys):
        return f"conf.d/{IDP_DROPIN}:{list(keys).index(key) + 2}: "

    def refused(keys, key, message):
        code, out = check(**keys)
        assert code != 0, (keys, out)
        assert at(key, keys) + message in out, (keys, message, out)

    for bad in ("ftp://x", "https://", "http://idp.example/certs",
                "http://localhost.idp.example/certs", "http://127.0.0.1.idp.example/certs"):
        keys = {"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": bad}
        refused(keys, "jwt_jwks_url",
                "[auth] jwt_jwks_url: expected https://HOST[:PORT][/PATH], or http:// to a "
                "loopback address (keys fetched in clear from elsewhere could be forged), "
                f"got '{bad}'")

    # Said with its query's values hidden, their names kept, as the log
    # says URLs.
    bad = "http://idp.example/certs?api_key=k3y-" + "7" * 8 + "&tenant=shop"
    code, out = check(jwt_public_key_issuer=ISSUER, jwt_jwks_url=bad)
    assert code != 0 and "k3y-" not in out, out
    refused({"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": bad}, "jwt_jwks_url",
            "[auth] jwt_jwks_url: expected https://HOST[:PORT][/PATH], or http:// to a "
            "loopback address (keys fetched in clear from elsewhere could be forged), "
            "got 'http://idp.example/certs?api_key=***&tenant=***'")

    keys = {"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": url,
            "jwt_public_key_file": str(pem_file)}
    code, out = check(**keys)
    assert code != 0, out
    message = "[auth] jwt_jwks_url and jwt_public_key_file are both set: keep one"
    assert (at("jwt_jwks_url", keys) + message in out
            or at("jwt_public_key_file", keys) + message in out), out

    refused({"jwt_jwks_url": url}, "jwt_jwks_url",
            "[auth] jwt_jwks_url needs jwt_public_key_issuer")
    refused({"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": "http://127.0.0.1:8080/certs",
             "jwt_jwks_ca_file": str(certs.ca_crt)}, "jwt_jwks_ca_file",
            "[auth] jwt_jwks_ca_file is set but jwt_jwks_url is http://, without TLS")
    refused({"jwt_jwks_ca_file": str(certs.ca_crt)}, "jwt_jwks_ca_file",
            "[auth] jwt_jwks_ca_file is set but jwt_jwks_url is not")
    refused({"jwt_jwks_refresh": "15m"}, "jwt_jwks_refresh",
            "[auth] jwt_jwks_refresh is set but jwt_jwks_url is not")
    for bad in ("1s", "4s", "4999ms", "500ms", "2d", "25h", "86400001ms", "soon"):
        refused({"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": url, "jwt_jwks_refresh": bad},
                "jwt_jwks_refresh",
                "[auth] jwt_jwks_refresh: expected a duration from 5s to 24h, such as 15m or "
                f"1h, got '{bad}'")
    refused({"jwt_public_key_issuer": ISSUER, "jwt_jwks_url": url,
             "jwt_jwks_ca_file": str(not_pem)}, "jwt_jwks_ca_file", "[auth] jwt_jwks_ca_file: ")
    refused({"jwt_public_key_issuer": ISSUER}, "jwt_public_key_issuer",
            "[auth] jwt_public_key_issuer is set but neither jwt_public_key_file nor "
            "jwt_jwks_url is")

    # Good ones pass, and --check-config asks no provider for its keys, not
    # even one that answers.
    with lib.JwksServer({"keys": [jwk(k["rsa"], "rsa-1")]}, tls=server_tls(certs)) as idp:
        goods = (
            {"jwt_jwks_url": idp.url, "jwt_jwks_ca_file": str(certs.ca_crt),
             "jwt_jwks_refresh": "5s", "jwt_public_key_audience": "shop-api",
             "jwt_public_key_roles_claim": "realm_access.roles"},
            {"jwt_jwks_url": url + "?client=evhost", "jwt_jwks_refresh": "24h"},
            {"jwt_jwks_url": "https://idp.example", "jwt_jwks_refresh": "15m"},
            {"jwt_jwks_url": "https://idp.example:8443/certs", "jwt_jwks_refresh": "1h"},
            {"jwt_jwks_url": f"http://127.0.0.1:{idp.port}/certs"},
            {"jwt_jwks_url": "http://127.10.0.1:8080/certs"},
            {"jwt_jwks_url": "http://localhost/certs"},
            {"jwt_jwks_url": "http://[::1]:8080/certs"},
        )
        for good in goods:
            code, out = check(jwt_public_key_issuer=ISSUER, **good)
            assert code == 0 and "configuration OK" in out, (good, out)
        assert idp.connections == 0 and idp.requests == [], idp.requests

