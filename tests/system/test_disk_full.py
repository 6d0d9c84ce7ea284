"""A full disk under the state directory, for real: the state directory is a
small tmpfs mounted for the test (root only), filled up with a file, and
freed again. Against the real daemon, real Apache Kafka and a real SMTP
server:

- a create while the disk is full answers 503 with Retry-After and says why
  (not 500), stores nothing and publishes nothing; the log names the database;
- an event that arrives while the notifications plugin cannot write is not
  dead-lettered however long the disk stays full: it waits, and its welcome
  mail goes out once there is room;
- a restart while the disk is full stops cleanly, starts, serves reads and
  says storage full; the waiting event waits on;
- after the space comes back, writes succeed again without a restart, and
  nothing acknowledged before is missing.
"""

import errno
import os
import re
import resource
import subprocess
import time
from pathlib import Path

import pytest

import evhost_testlib as lib
from test_delivery import Stack, admin, db_rows, welcome_counts
from test_metrics import Scrape, scrape_value

FS_SIZE = "24m"


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of FS_SIZE at tmp_path/state, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for the state directory needs root")
    mnt = tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tmpfs",
                    str(mnt)], check=True)
    try:
        yield mnt
    finally:
        # The daemon may still run (a failed test; the evhostd fixture stops it
        # after this): detach the mount now, freed once its files are closed.
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def fill(fs):
    """Write a file until the filesystem is full; return its path."""
    path = Path(fs) / ("filler" if not (Path(fs) / "filler").exists() else "filler2")
    with open(path, "wb", buffering=0) as f:
        # Big writes, then small ones for the last bytes; each loop ends at ENOSPC.
        for size in (64 * 1024, 512):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return path


@pytest.mark.slow
def test_disk_full_answers_503_keeps_events_waiting_and_recovers(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, small_fs):
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               state_dir=small_fs,
               kafka={"retry.max_attempts": 2, "retry.backoff_ms": 200,
                      "retry.backoff_max_ms": 400})
    before = st.create_users("before", 3)
    smtp_server.wait_for_count(3, timeout=60)
    # A welcome reaches the SMTP server before its handler's transaction
    # commits: one still uncommitted when the disk fills waits too, and says
    # so, beside the event below (seen once in an ASan pass).
    lib.wait_until(lambda: set(before) <= set(st.recipients()), timeout=30,
                   message="the three welcomes' transactions committed")

    filler = fill(small_fs)
    # Writes fail now: every create answers 503 with Retry-After, none 500.
    for i in range(3):
        r = st.create_user(f"Full {i}", f"full{i}@example.org")
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "storage of service 'user' is full" in r.json()["detail"], r.text
    r = st.d.get("/readyz")
    assert r.status_code == 503 and r.json()["storage"] == "full", r.text
    assert scrape_value(st.d, "evhost_store_full", plugin="user") == 1
    assert st.d.get("/admin/plugins/user", headers=admin()).json()["storage"] == "full"
    log = st.d.log_text()
    assert "database or disk is full" in log
    assert str(small_fs / "user.db") in log
    # Each of them is in the access log; the failure itself is said once a
    # minute, by the host and by the plugin (a line each was thousands a
    # minute at load, and spent the plugin's log budget).
    host_lines = [x for x in log.splitlines() if "(route /users of plugin 'user') failed" in x]
    plugin_lines = [x for x in log.splitlines() if "[user] create user" in x and "failed" in x]
    assert len(host_lines) == 1 and len(plugin_lines) <= 1, (host_lines, plugin_lines)

    # An event for notifications while its database cannot take it either:
    # a user created elsewhere, as its USER_CREATED event.
    uid = "0b1f8e52-6c9a-4c44-9d7e-5a4c2b1d0e99"
    lib.kafka_produce(st.topics["created"],
                      '{"id": "%s", "name": "Outside", "email": "outside@example.org"}' % uid,
                      key=uid, brokers=kafka_bootstrap, headers={
                          "ce_specversion": "1.0", "ce_type": "user.created",
                          "ce_source": "/test", "ce_id": f"outside-{uid}",
                          "ce_time": "2026-11-30T05:00:00Z",
                          "content-type": "application/json"})
    st.d.wait_for_log("waits: its database is full or read-only", timeout=60)
    # A broadcast, whose event notifications cannot store either: 503 with
    # Retry-After as for a create, not the 500 "storage error" it built.
    token = lib.sign_token((tmp_path / "jwt.key").read_bytes(), "operator", roles=("admin",))
    r = st.d.post("/notifications/broadcast", json={"subject": "S", "message": "M"},
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) > 0
    assert "storage of service 'notifications' is full" in r.json()["detail"], r.text
    # Far longer than two attempts with their backoff: it must still wait. (Its
    # mail may have left already, in the attempt whose commit failed; the
    # plugin remembers that, and the retries do not send it again.)
    time.sleep(5)
    assert not [u for u, in db_rows(st.d, "notifications",
                                    "SELECT user_id FROM recipients WHERE user_id = ?", (uid,))]
    r = st.d.get("/admin/plugins/notifications/dlq", headers=admin(), timeout=30)
    assert r.status_code == 200 and r.json()["messages"] == [], r.text
    # Its waits (one every 400 ms) are said once, not one by one (they were).
    starts = [ln for ln in st.d.log_text().splitlines()
              if "notifications: " in ln and "waits: its database is full or read-only (" in ln]
    assert len(starts) == 1, "\n".join(starts)

    # A restart on the full disk: it stops cleanly, starts, serves reads, says
    # storage full, and the waiting event (its offset not committed) waits on.
    assert st.d.stop() == 0
    assert re.search(r"notifications: the consumer stops, its events still waiting; \d+ more "
                     r"waits? for a full or read-only database in the [\d.]+ s since",
                     st.d.log_text())
    # As at the first start of a version that keeps the events in hand, or
    # with that file lost: it is made again on the full disk. The start died
    # of SIGBUS, with no line (its first store into a page of the mapping
    # had no block); it goes on without the file now, said.
    inhand = st.d.state_dir / "evhostd.inhand"
    inhand.unlink()
    more = fill(st.d.state_dir)  # what that file held is taken too
    st.restart()
    assert "cannot keep the events in hand in" in st.d.log_text()
    r = st.d.get("/readyz")
    assert r.status_code == 503 and r.json()["storage"] == "full", r.text
    assert "writes may fail for want of room" in st.d.log_text()
    uid0 = next(iter(before))
    assert st.d.get(f"/users/{uid0}").status_code == 200
    assert st.create_user("Full again", "full0@example.org").status_code == 503

    os.unlink(more)
    os.unlink(filler)
    # Room again: the waiting event is handled, and creates succeed.
    lib.wait_until(lambda: db_rows(st.d, "notifications",
                                   "SELECT user_id FROM recipients WHERE user_id = ?", (uid,)),
                   timeout=60, message="the waiting event handled")
    smtp_server.wait_for(lambda m: m.envelope_to == ["outside@example.org"], timeout=60)
    assert "notifications.db: writes succeed again" in st.d.log_text()
    lib.wait_until(lambda: st.d.get("/readyz").status_code == 200, timeout=30,
                   message="ready again")
    assert scrape_value(st.d, "evhost_store_full", plugin="user") == 0
    assert scrape_value(st.d, "evhost_store_full", plugin="notifications") == 0
    assert st.d.get("/admin/plugins/user", headers=admin()).json()["storage"] == "ok"
    after = st.create_users("after", 2)
    lib.wait_until(lambda: all(welcome_counts(smtp_server)[a] for a in after.values()),
                   timeout=60, message="the welcome mails of the users created after")
    counts = welcome_counts(smtp_server)
    for addr in list(before.values()) + list(after.values()):
        assert counts[addr] == 1, (addr, counts)
    # Its mail may have left before the first failed commit; the restart lost
    # notifications' memory of that, so it may have left twice (at least once,
    # as after a crash: docs/operations.md, "A full disk").
    assert counts["outside@example.org"] in (1, 2), counts
    for i in range(3):
        assert counts[f"full{i}@example.org"] == 0
    r = st.d.get("/admin/plugins/notifications/dlq", headers=admin(), timeout=30)
    assert r.status_code == 200 and r.json()["messages"] == [], r.text
    assert st.d.stop() == 0


def produce_created(st, uid, name, addr, brokers):
    """A user created elsewhere, as its USER_CREATED event."""
    lib.kafka_produce(st.topics["created"],
                      '{"id": "%s", "name": "%s", "email": "%s"}' % (uid, name, addr),
                      key=uid, brokers=brokers, headers={
                          "ce_specversion": "1.0", "ce_type": "user.created",
                          "ce_source": "/test", "ce_id": f"outside-{uid}",
                          "ce_time": "2026-11-30T05:00:00Z",
                          "content-type": "application/json"})


def maildir_files(box, addr):
    return [f for f in (box / "new").iterdir() if addr.encode() in f.read_bytes()]


@pytest.mark.slow
def test_maildir_on_a_full_disk_waits_and_mails_once_there_is_room(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, small_fs):
    # The shipped default, a Maildir under state_dir. Its file system fills
    # while notifications.db has room left in its WAL (its commits go
    # through): the welcome mail's write fails with ENOSPC. The event waits,
    # using up no attempt, however long (it was dead-lettered after its
    # attempts, the disk unseen by /readyz), says so once, naming the
    # Maildir and the error, and the mail goes out once there is room.
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
               state_dir=small_fs, notif={"transport": "maildir"},
               kafka={"retry.max_attempts": 2, "retry.backoff_ms": 200,
                      "retry.backoff_max_ms": 400})
    box = small_fs / "notifications" / "maildir"
    # Welcomes that leave frames in notifications.db's WAL, then a
    # checkpoint of all of them: the next commits write over those frames
    # from the start, needing no new room, as a WAL in use for a while does.
    for i in range(20):
        produce_created(st, f"6f4c7a0e-3d1b-4b8e-9a55-0c1d2e3f4b{i:02d}", f"Before {i}",
                        f"before{i}@example.org", kafka_bootstrap)
    lib.wait_until(lambda: db_rows(st.d, "notifications",
                                   "SELECT COUNT(*) FROM notifications_log WHERE status = 'sent'"
                                   )[0][0] == 20,
                   timeout=60, message="the first welcomes sent and committed")
    wal = small_fs / "notifications.db-wal"
    db_rows(st.d, "notifications", "PRAGMA wal_checkpoint(RESTART)")
    assert wal.stat().st_size > 64 * 1024, wal.stat().st_size

    filler = fill(small_fs)
    uid = "6f4c7a0e-3d1b-4b8e-9a55-0c1d2e3f4a02"
    produce_created(st, uid, "Full", "full@example.org", kafka_bootstrap)
    st.d.wait_for_log("waits: a handler's write met a full disk (maildir: cannot write "
                      f"{box}/tmp/", timeout=60)
    # Far longer than two attempts with their backoff: it must still wait.
    time.sleep(5)
    r = st.d.get("/admin/plugins/notifications/dlq", headers=admin(), timeout=30)
    assert r.status_code == 200 and r.json()["messages"] == [], r.text
    log = st.d.log_text()
    waits = [ln for ln in log.splitlines() if "notifications: " in ln and " waits: " in ln]
    assert len(waits) == 1, "\n".join(waits)
    assert "No space left on device); not counted as an attempt" in waits[0], waits[0]
    assert "dead_lettered" not in log and "dead-letter topic" not in log
    assert not maildir_files(box, "full@example.org")
    assert list((box / "tmp").iterdir()) == []
    # Readiness looks at the databases (they take writes); the gauge says it.
    assert st.d.get("/readyz").json()["storage"] == "writable"
    assert Scrape(st.d).get("notifications_maildir_full", plugin="notifications") == 1

    os.unlink(filler)
    lib.wait_until(lambda: maildir_files(box, "full@example.org"), timeout=60,
                   message="the waiting welcome written once there is room")
    st.d.wait_for_log("notifications: the handlers' writes go through again", timeout=30)
    lib.wait_until(lambda: db_rows(st.d, "notifications",
                                   "SELECT status FROM notifications_log WHERE recipient = ?",
                                   ("full@example.org",)) == [("sent",)],
                   timeout=30, message="its row says sent")
    assert len(maildir_files(box, "full@example.org")) == 1
    assert Scrape(st.d).get("notifications_maildir_full", plugin="notifications") == 0
    r = st.d.get("/admin/plugins/notifications/dlq", headers=admin(), timeout=30)
    assert r.status_code == 200 and r.json()["messages"] == [], r.text
    assert st.d.stop() == 0


@pytest.fixture
def ext4_fs(tmp_path):
    """An ext4 image of 32 MiB on a loop device, mounted at tmp_path/state
    with errors=remount-ro; yields (mount point, image, sysfs trigger of a
    file system error). Unmounted and detached after the test."""
    if os.geteuid() != 0:
        pytest.skip("a loop device for the state directory needs root")
    img, mnt = tmp_path / "state.img", tmp_path / "state"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)

    def mount():
        r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(img), str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount an ext4 image on a loop device: {r.stderr.strip()}")
        dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True,
                             text=True, check=True).stdout.strip()
        return Path("/sys/fs/ext4") / os.path.basename(dev) / "trigger_fs_error"

    trigger = mount()
    if not trigger.exists():
        subprocess.run(["umount", str(mnt)], check=True)
        pytest.skip("this kernel's ext4 has no trigger_fs_error")
    try:
        yield mnt, img, mount
    finally:
        # Lazy: a daemon still running (a failed test) keeps its files open;
        # the loop device goes with the last of them (autoclear).
        subprocess.run(["umount", "--lazy", str(mnt)])


@pytest.mark.slow
def test_a_state_dir_gone_read_only_is_not_writable_and_says_why(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, ext4_fs):
    # The state directory's file system turns read-only under the daemon (an
    # ext4 error with errors=remount-ro). Readiness said "writable" (BEGIN
    # touches nothing in WAL mode), the log said only "storage error", and a
    # create answered 500: now /readyz says not writable, the log names the
    # database and the OS's reason, and writes answer 503 with Retry-After as
    # on a full disk. Once the file system is mended (fsck, mounted again)
    # and the daemon started, writes go through and it is ready again. (This
    # kernel's ext4 cannot be made writable again while files are open.)
    mnt, img, mount = ext4_fs
    st = Stack(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, state_dir=mnt)
    st.create_users("before", 1)
    assert st.d.get("/readyz").json()["storage"] == "writable"

    dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True,
                         text=True, check=True).stdout.strip()
    (Path("/sys/fs/ext4") / os.path.basename(dev) / "trigger_fs_error").write_text("test\n")
    r = st.create_user("Read Only", "ro@example.org")
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) > 0
    assert "storage of service 'user' cannot be written" in r.json()["detail"], r.text
    log = st.d.log_text()
    assert re.search(re.escape(str(mnt / "user.db")) +
                     r": cannot write: disk I/O error \(Read-only file system\): writes fail "
                     r"\(HTTP 503, events wait unhandled\)", log), st.d.log_tail()
    assert "database or disk is full" not in log
    r = st.d.get("/readyz")
    assert r.status_code == 503 and r.json()["storage"] == "not writable", r.text
    # Still so at the next look: its look's own write fails too.
    r = st.d.get("/readyz")
    assert r.status_code == 503 and r.json()["storage"] == "not writable", r.text

    st.d.stop()
    subprocess.run(["umount", str(mnt)], check=True)
    assert subprocess.run(["e2fsck", "-f", "-y", str(img)], capture_output=True).returncode in (
        0, 1)
    mount()
    st.restart()
    lib.wait_until(lambda: st.d.get("/readyz").status_code == 200, timeout=30,
                   message="ready again")
    assert st.d.get("/readyz").json()["storage"] == "writable"
    st.create_users("after", 1)
    assert st.d.stop() == 0


def test_a_file_size_limit_answers_503_and_does_not_kill(evhostd, tmp_path):
    # Under a file size limit (systemd's LimitFSIZE=, ulimit -f) the first
    # write past it raised SIGXFSZ, which killed evhostd. Now the write fails
    # with EFBIG, which the store takes as a want of room: 503 with
    # Retry-After, the daemon alive and serving. (No root needed: the limit
    # is lowered on the running daemon.)
    d = evhostd({"plugin.crud": {"collections": "blobs"}})
    r = d.post("/crud/blobs", json={"n": 0})
    assert r.status_code == 201, r.text
    sizes = [p.stat().st_size for p in Path(d.state_dir).iterdir() if p.is_file()]
    limit = max(sizes + [d.log_file.stat().st_size]) + (1 << 20)
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    blob = "x" * (200 * 1024)
    for i in range(1, 40):  # 8 MB at most, past the 1 MiB left below the limit
        r = d.post("/crud/blobs", json={"n": i, "blob": blob}, timeout=30)
        if r.status_code != 201:
            break
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) > 0
    assert "storage of service 'crud' is full" in r.json()["detail"], r.text
    assert d.proc.poll() is None
    d.wait_for_log("crud.db: file too large (past the daemon's file size limit", timeout=10)
    assert d.get("/readyz").json()["storage"] == "full"
    assert d.get("/crud/blobs").status_code == 200
    # The limit raised: writes go through again, without a restart.
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    r = d.post("/crud/blobs", json={"n": "after"})
    assert r.status_code == 201, r.text
    assert d.get("/readyz").json()["storage"] == "writable"
    assert d.stop() == 0
