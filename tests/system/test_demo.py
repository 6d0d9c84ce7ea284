"""scripts/demo, the README's first command, as a newcomer runs it.

It runs evhostd of the build under test (bringing it up to date first if a
source is newer, as for a newcomer) with the three plugins on the embedded
broker, creates a user over HTTP and shows its USER_CREATED event where the
broker put it (evhostctl events), the welcome mail and the notifications log. It must end by itself, with status 0, and stop the daemon
it started.
"""

import os
import re
import socket
import subprocess

import evhost_testlib as lib

DEMO = lib.REPO_ROOT / "scripts" / "demo"


def test_demo_shows_the_flow_and_stops(build_dir, tmp_path):
    port = lib.free_port()
    # A build dir relative to the repository, as the README's EVHOST_BUILD_DIR=build,
    # from another working directory: it is taken from the repository's root.
    rel = os.path.relpath(build_dir.resolve(), lib.REPO_ROOT.resolve())
    env = dict(os.environ, EVHOST_BUILD_DIR=rel, EVHOST_DEMO_PORT=str(port))
    run = subprocess.run([str(DEMO), "--once"], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, f"scripts/demo exited {run.returncode}:\n{out}\n{run.stderr}"
    # The user made over HTTP, its welcome mail, and the log saying it was sent.
    assert re.search(r"HTTP/1\.1 201", out), out
    email = re.search(r"ada\.\d+@example\.com", out).group(0)
    # Its USER_CREATED event, keyed by its id, on the topic (topic/partition/offset).
    user_id = re.search(r'^\{"id":"([0-9a-f-]{36})"', out, re.M).group(1)
    assert re.search(rf"^\S+\s+user\s+user\.created\s+{user_id}\s+USER_CREATED/\d+/\d+\s",
                     out, re.M), f"no USER_CREATED event of {user_id} in the output:\n{out}"
    assert "Subject:" in out and "Welcome, Ada Lovelace!" in out, out
    log = re.search(r'^\{"items":.*$', out, re.M)
    assert log, f"no notifications log in the output:\n{out}"
    assert f'"recipient":"{email}"' in log.group(0) and '"status":"sent"' in log.group(0)
    # The daemon it started is gone: nothing listens on its port any more.
    assert "== evhostd stopped" in out, out
    # Nor is its scratch dir left (state, the admin password, the JWT secret).
    work = re.search(r"^== starting evhostd \(config in (\S+)\)$", out, re.M).group(1)
    assert not os.path.exists(work), f"scripts/demo left {work}"
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served after the demo"


def test_demo_refuses_a_port_another_program_listens_on(build_dir):
    """Another server on the port would answer the demo's requests in evhostd's
    place (another demo's daemon answers /readyz too): the demo says so and
    stops before starting anything."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        env = dict(os.environ, EVHOST_BUILD_DIR=str(build_dir.resolve()),
                   EVHOST_DEMO_PORT=str(port))
        run = subprocess.run([str(DEMO), "--once"], env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, f"scripts/demo exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert (f"127.0.0.1:{port} is in use by another program: set EVHOST_DEMO_PORT"
            in run.stderr), run.stderr
    assert "starting evhostd" not in run.stdout, run.stdout
