"""bench/soak.py (scripts/bench --soak), briefly: the tool runs the daemon
under its mixed load against real Kafka, samples it and checks for lost
mails, and says so in its exit status and results. Its figures are for
reading (docs/benchmarks.md), not judged here; a lost mail, an unexpected
answer or a dead daemon fail it."""

import json
import subprocess

import pytest

import evhost_testlib as lib

SOAK = lib.REPO_ROOT / "bench" / "soak.py"


def test_a_short_soak_runs_and_reports(build_dir, kafka_bootstrap, tmp_path):
    if lib.sanitizer(build_dir):
        pytest.skip("a measuring tool: the plain build's run says what it can")
    out = tmp_path / "soak.json"
    run = subprocess.run(["/usr/bin/python3", str(SOAK), "--minutes", "0.4",
                          "--build-dir", str(build_dir.resolve()), "--brokers", kafka_bootstrap,
                          "--work", str(tmp_path), "--out", str(out)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    doc = json.loads(out.read_text())
    fig = doc["figures"]
    assert fig["users"] > 0 and fig["docs"] > 0 and fig["reloads"] == 0, fig
    assert fig["welcome_missing"] == 0 and fig["daemon_died"] is False, fig
    assert fig["exit_code"] == 0 and doc["unexpected"] == [], doc["unexpected"]
    # The daemon's log outlives scripts/bench's work directory, removed after a pass.
    copy = out.with_suffix(".evhostd.log")
    assert copy.read_bytes() == (tmp_path / "evhostd-soak.log").read_bytes() != b""
    assert len(doc["samples"]) >= 2 and all(s["rss_kb"] > 0 for s in doc["samples"])
    assert "unexpected (not while crud was being turned on or off): 0" in run.stdout
