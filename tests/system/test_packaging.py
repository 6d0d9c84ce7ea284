"""The Debian packages, end to end.

packaging/build-debs builds evhost and evhost-dev (or EVHOST_TEST_DEBS names a
directory that already holds them). They are installed with `dpkg --root` into
a fresh root that holds nothing but a shell, the few tools the maintainer
scripts use (copied with their libraries), an empty dpkg database and
recording stand-ins for adduser and the systemd helpers; dpkg runs the
maintainer scripts chrooted into that root, so they act on it alone (this
needs root, as CI and scripts/test run). Then the installed evhostd checks its
configuration, runs against real Kafka with the installed plugins and
templates (POST /users -> welcome mail in the maildir), loads the example
plugin built against the installed evhost-dev, and the packages are removed
and purged, leaving the root as it was.

Also here: lintian, shellcheck of the maintainer scripts, `systemd-analyze
verify` and `security` on the units, sd_notify (READY, STATUS, WATCHDOG,
STOPPING), and the units' sandboxes (system call filter, address families,
W^X memory) checked against everything evhostd, and evhostctl taking the
backup timer's backup, do under strace.
"""

import email
import email.header
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

# One pytest-xdist worker runs the module: the packages are built once for it.
pytestmark = pytest.mark.xdist_group("packaging")

REPO = lib.REPO_ROOT
BUILD_DEBS = REPO / "packaging" / "build-debs"
UNIT_SOURCE = REPO / "packaging" / "systemd" / "evhostd.service"
BACKUP_SERVICE_SOURCE = REPO / "packaging" / "systemd" / "evhost-backup.service"
BACKUP_TIMER_SOURCE = REPO / "packaging" / "systemd" / "evhost-backup.timer"
UNIT_SOURCES = (UNIT_SOURCE, BACKUP_SERVICE_SOURCE, BACKUP_TIMER_SOURCE)
PASSWORD = "correct horse battery"

# lintian warnings that do not apply to packages built outside the Debian
# archive (docs/operations.md explains each); any other warning fails.
LINTIAN_ALLOWED_WARNINGS = {
    # An archive upload's first changelog entry closes an ITP bug; ours has none.
    "initial-upload-closes-no-bugs",
}
# The exposure score `systemd-analyze security` gives the services (docs/operations.md).
MAX_EXPOSURE = 1.5


def project_version():
    text = (REPO / "CMakeLists.txt").read_text()
    return re.search(r"project\(evhost VERSION ([0-9.]+)", text).group(1)


def run(cmd, timeout=120, check=True, **kw):
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {r.returncode}\n"
                             f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def need(tool, why):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (scripts/deps installs it); needed for {why}")


# --------------------------------------------------------------- packages


# The packages are built here, without sanitizers, whatever the build tree
# under test is: no test here takes build_dir, so the sanitized passes leave
# them to the plain one (conftest.py).


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """{"evhost": Path, "evhost-dev": Path}."""
    given = os.environ.get("EVHOST_TEST_DEBS")
    if given:
        files = sorted(Path(given).glob("*.deb"))
    else:
        for tool in ("dpkg-buildflags", "dpkg-shlibdeps", "cpack"):
            need(tool, "building the packages")
        out = tmp_path_factory.mktemp("deb-build")
        r = run([BUILD_DEBS, out / "build"], timeout=900)
        files = [Path(line) for line in r.stdout.split()]
    found = {run(["dpkg-deb", "-f", f, "Package"]).stdout.strip(): f for f in files}
    assert set(found) == {"evhost", "evhost-dev"}, f"packages found: {files}"
    return found


def deb_files(deb):
    """Absolute paths of everything a .deb installs (directories included)."""
    listing = run(["dpkg-deb", "-c", deb]).stdout
    paths = {line.split(None, 5)[5].split(" -> ")[0].lstrip(".").rstrip("/")
             for line in listing.splitlines()}
    return paths - {""}


def test_package_metadata_and_contents(debs):
    version = project_version()
    rt, dev = debs["evhost"], debs["evhost-dev"]

    def field(deb, name):
        return run(["dpkg-deb", "-f", deb, name]).stdout.strip()

    for deb in (rt, dev):
        assert re.fullmatch(rf"{re.escape(version)}-[0-9]+", field(deb, "Version"))
        assert field(deb, "Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip()
        assert field(deb, "Maintainer")
    # dpkg-shlibdeps computed the libraries; adduser is for postinst.
    depends = field(rt, "Depends")
    for pkg in ("adduser", "libc6", "librdkafka1", "libcivetweb1", "libsqlite3-0", "libsodium23",
                "libcjson1", "libinih1", "libcurl4", "libsystemd0", "libssl3"):
        assert re.search(rf"(^|, ){re.escape(pkg)}( |,|$)", depends), (pkg, depends)
    assert field(dev, "Depends") == ""
    assert field(rt, "Recommends") == "ca-certificates"  # TLS's default trust store

    multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
    files = deb_files(rt)
    for path in ("/usr/sbin/evhostd", "/etc/evhost/evhost.conf",
                 "/etc/evhost/conf.d/10-user.conf", "/etc/evhost/conf.d/20-crud.conf",
                 "/etc/evhost/conf.d/30-notifications.conf", "/lib/systemd/system/evhostd.service",
                 "/usr/share/man/man8/evhostd.8.gz", "/usr/share/man/man5/evhost.conf.5.gz",
                 "/usr/bin/evhostctl", "/usr/share/man/man1/evhostctl.1.gz",
                 "/usr/share/evhost/grafana/evhost.json",
                 "/usr/share/evhost/prometheus/evhost-alerts.yml",
                 "/usr/share/evhost/templates/welcome.subject",
                 "/usr/share/doc/evhost/copyright", "/usr/share/doc/evhost/changelog.Debian.gz"):
        assert path in files, path
    plugins = sorted(Path(p).name for p in files if "/evhost/plugins/" in p)
    assert plugins == ["crud.so", "notifications.so", "user.so"]
    assert f"/usr/lib/{multiarch}/evhost/plugins/user.so" in files
    # HTTPS: the two libraries civetweb's OpenSSL loader is given (host/tls_compat.c).
    tls = sorted(Path(p).name for p in files if p.startswith(f"/usr/lib/{multiarch}/evhost/tls/"))
    assert tls == ["libcrypto.so", "libssl.so"], tls
    # The example plugin is only the SDK's source, never a binary here.
    assert not any(p.endswith("hello.so") for p in files)

    conffiles = run(["dpkg-deb", "--info", rt, "conffiles"]).stdout.split()
    assert sorted(conffiles) == sorted(p for p in files if p.startswith("/etc/") and
                                       p.endswith(".conf"))

    dev_files = deb_files(dev)
    for path in ("/usr/include/evhost/evhost.h", "/usr/share/doc/evhost-dev/examples/hello/hello.c",
                 "/usr/share/doc/evhost-dev/copyright"):
        assert path in dev_files, path
    assert f"/usr/lib/{multiarch}/pkgconfig/evhost-sdk.pc" in dev_files
    assert f"/usr/lib/{multiarch}/cmake/evhost-sdk/evhost-sdk-config.cmake" in dev_files
    # No file in both packages (directories aside), so both install together.
    dirs = {p for p in files | dev_files if any(q.startswith(p + "/") for q in files | dev_files)}
    assert not (files & dev_files) - dirs


def test_lintian_finds_no_errors(debs):
    need("lintian", "checking the packages")
    r = run(["lintian", "--pedantic", "--tag-display-limit", "0", debs["evhost"],
             debs["evhost-dev"]], timeout=300, check=False)
    tags = re.findall(r"^([EWIPX]): (\S+?): (\S+)(.*)$", r.stdout, re.M)
    print("\n" + r.stdout)
    errors = [t for t in tags if t[0] == "E"]
    warnings = [t for t in tags if t[0] == "W" and t[2] not in LINTIAN_ALLOWED_WARNINGS]
    assert not errors, f"lintian errors:\n{r.stdout}"
    assert not warnings, f"new lintian warnings (fix, or explain in docs/operations.md):\n{r.stdout}"
    assert r.returncode == 0, r.stdout + r.stderr


def test_maintainer_scripts_pass_shellcheck(debs, tmp_path):
    need("shellcheck", "checking the maintainer scripts")
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", debs["evhost"], control])
    scripts = [control / s for s in ("postinst", "prerm", "postrm")]
    for s in scripts:
        assert s.exists() and os.access(s, os.X_OK), s
        assert s.read_text().startswith("#!/bin/sh\n")
    run(["shellcheck", "-s", "sh", *scripts])
    run(["shellcheck", "-x", BUILD_DEBS], cwd=REPO)


# ------------------------------------------------------------- the unit


def unit_settings(text):
    """{key: [values...]} of a unit file (all sections together)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_hardened_as_documented():
    u = unit_settings(UNIT_SOURCE.read_text())
    expect = {
        "Type": "notify", "ExecStart": "/usr/sbin/evhostd -c /etc/evhost/evhost.conf",
        "ExecReload": "/bin/kill -HUP $MAINPID", "User": "evhost", "Group": "evhost",
        "DynamicUser": "no", "StateDirectory": "evhost", "ConfigurationDirectory": "evhost",
        "RuntimeDirectory": "evhost", "WatchdogSec": "30s", "Restart": "on-failure",
        "TimeoutStartSec": "10min", "TimeoutStopSec": "60s",
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "MemoryDenyWriteExecute": "yes", "UMask": "0027",
        "LimitNOFILE": "65536", "ProtectProc": "invisible", "ProcSubset": "pid",
        "WantedBy": "multi-user.target", "Wants": "network-online.target",
        "After": "network-online.target time-sync.target",
    }
    for key, value in expect.items():
        assert u.get(key) == [value], (key, u.get(key))
    assert u["SystemCallFilter"][0] == "@system-service"
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
                "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality"):
        assert u.get(key) == ["yes"], key


def test_backup_timer_units_are_as_documented():
    s = unit_settings(BACKUP_SERVICE_SOURCE.read_text())
    expect = {
        "Type": "oneshot", "User": "evhost", "Group": "evhost",
        "ExecStart": "/usr/bin/evhostctl -c /etc/evhost/evhost.conf backup --keep "
                     "${EVHOST_BACKUP_KEEP}",
        "Environment": "EVHOST_BACKUP_KEEP=7", "After": "evhostd.service",
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expect.items():
        assert s.get(key) == [value], (key, s.get(key))
    # The same system call filter as the daemon's (the sandbox test checks
    # evhostctl's calls against it); started by the timer only.
    assert s["SystemCallFilter"] == unit_settings(UNIT_SOURCE.read_text())["SystemCallFilter"]
    assert "WantedBy" not in s
    t = unit_settings(BACKUP_TIMER_SOURCE.read_text())
    assert (t["OnCalendar"], t["Persistent"], t["WantedBy"]) == (["daily"], ["yes"],
                                                                 ["timers.target"])


def test_unit_passes_systemd_analyze(root, tmp_path):
    need("systemd-analyze", "checking the unit")
    # The installed units, with their binaries looked up in the package root
    # (the rest of what verify checks, /bin/kill and the targets, is the host's).
    units = []
    for source in UNIT_SOURCES:
        text = (root.path / "lib/systemd/system" / source.name).read_text()
        assert text == source.read_text()
        for binary in ("/usr/sbin/evhostd", "/usr/bin/evhostctl"):
            text = text.replace(binary, str(root.path / binary.lstrip("/")))
        units.append(tmp_path / source.name)
        units[-1].write_text(text)
    env = dict(os.environ, MANPATH=str(root.path / "usr/share/man"))
    man = [] if shutil.which("man") else ["--man=no"]
    r = run(["systemd-analyze", "verify", *man, *units], env=env, check=False)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr

    for unit in units:
        if unit.suffix != ".service":
            continue
        r = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit],
                check=False)
        m = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9.]+)",
                      r.stdout)
        assert m, r.stdout + r.stderr
        print(f"\nsystemd-analyze security {unit.name}: exposure {m.group(1)}")
        assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout


# ------------------------------------------------------ the package root


class PackageRoot:
    """A fresh root for `dpkg --root` (see the module docstring)."""

    TOOLS = ("sh", "rm", "install", "getent")
    STANDINS = {
        # adduser records its arguments and adds the user to this root only.
        "usr/sbin/adduser": """#!/bin/sh
echo "adduser $*" >> /standins.log
for a; do name=$a; done
echo "$name:x:998:998:evhost daemon:/var/lib/evhost:/usr/sbin/nologin" >> /etc/passwd
echo "$name:x:998:" >> /etc/group
""",
        # deb-systemd-helper records its arguments and keeps as much state as
        # the maintainer scripts ask of it: whether a unit was installed
        # (debian-installed) and enabled (was-enabled, true for a unit never
        # seen), in /standins.state.
        "usr/bin/deb-systemd-helper": """#!/bin/sh
echo "deb-systemd-helper $*" >> /standins.log
[ "$1" = --quiet ] && shift
cmd=$1
shift
install -d /standins.state
for u; do
	case $cmd in
	debian-installed) [ -e "/standins.state/$u.known" ] || exit 1 ;;
	was-enabled) [ ! -e "/standins.state/$u.known" ] || [ -e "/standins.state/$u.enabled" ] ||
		exit 1 ;;
	enable) : >"/standins.state/$u.known"; : >"/standins.state/$u.enabled" ;;
	disable) rm -f "/standins.state/$u.enabled" ;;
	update-state) : >"/standins.state/$u.known" ;;
	purge) rm -f "/standins.state/$u.known" "/standins.state/$u.enabled" ;;
	esac
done
""",
        "usr/bin/deb-systemd-invoke": '#!/bin/sh\necho "deb-systemd-invoke $*" >> /standins.log\n',
        "usr/bin/systemctl": '#!/bin/sh\necho "systemctl $*" >> /standins.log\n',
    }

    def __init__(self, path):
        self.path = Path(path)

    def create(self):
        r = self.path
        for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc", "dev", "tmp",
                  "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers",
                  "var/log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        for link in ("bin", "sbin", "lib", "lib64"):  # merged /usr, as on Debian 12
            (r / link).symlink_to(f"usr/{link}")
        (r / "var/lib/dpkg/available").touch()
        (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (r / "etc/group").write_text("root:x:0:\n")
        (r / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\n")
        for tool in self.TOOLS:
            self._copy_binary(shutil.which(tool), f"usr/bin/{tool}")
        try:
            os.mknod(r / "dev/null", 0o20666, os.makedev(1, 3))
        except PermissionError:
            # No CAP_MKNOD: a plain file swallows ">/dev/null" just as well.
            (r / "dev/null").touch(0o666)
        for rel, text in self.STANDINS.items():
            (r / rel).write_text(text)
            (r / rel).chmod(0o755)
        self._register_base()
        return self

    def _register_base(self):
        # On a real system base-files, libc6 & co. own /lib, /usr/lib ...
        # too, so removing evhost never takes them (nor the /lib -> usr/lib
        # symlink) away. Say the same here, as one installed package.
        (self.path / "var/lib/dpkg/status").write_text(
            "Package: test-root-base\nStatus: install ok installed\nPriority: required\n"
            "Section: admin\nMaintainer: evhost tests <tests@evhost.example>\n"
            "Architecture: all\nVersion: 1\nDescription: the package root's own files\n\n")
        paths = ["/."] + sorted("/" + str(p.relative_to(self.path))
                                for p in self.path.rglob("*")
                                if not str(p.relative_to(self.path)).startswith("var/lib/dpkg"))
        (self.path / "var/lib/dpkg/info/test-root-base.list").write_text("\n".join(paths) + "\n")

    def _copy_binary(self, src, rel):
        shutil.copy2(os.path.realpath(src), self.path / rel)
        out = run(["ldd", src]).stdout
        for lib_path in re.findall(r"(/\S+) \(0x", out):
            dest = self.path / lib_path.lstrip("/")
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib_path), dest)

    def dpkg(self, *args, check=True):
        return run(["dpkg", f"--root={self.path}", "--force-depends", *args], timeout=120,
                   check=check)

    def standins(self):
        log = self.path / "standins.log"
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return calls

    def snapshot(self):
        out = {}
        for p in self.path.rglob("*"):
            rel = str(p.relative_to(self.path))
            out[rel] = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
        return out

    def multiarch_dir(self, rel):
        """The one existing path matching usr/lib/*/REL."""
        found = sorted(self.path.glob(f"usr/lib/*/{rel}"))
        assert len(found) == 1, (rel, found)
        return found[0]


def need_root_for_dpkg_root():
    if os.geteuid() != 0:
        pytest.skip("installing into a package root runs the maintainer scripts chrooted: "
                    "needs root (CI and scripts/test run as root)")
    need("dpkg", "installing the packages")


@pytest.fixture(scope="module")
def root(debs, tmp_path_factory):
    """A PackageRoot with evhost and evhost-dev installed."""
    need_root_for_dpkg_root()
    r = PackageRoot(tmp_path_factory.mktemp("pkgroot") / "root").create()
    r.dpkg("-i", debs["evhost"], debs["evhost-dev"])
    r.standins()
    return r


def test_install_upgrade_remove_purge(debs, tmp_path):
    need_root_for_dpkg_root()
    r = PackageRoot(tmp_path / "root").create()
    before = r.snapshot()

    # First install: the system user, its state directory, the unit enabled,
    # the backup timer not; systemd is not running in this root, so nothing
    # is started.
    r.dpkg("-i", debs["evhost"], debs["evhost-dev"])
    calls = r.standins()
    assert ("adduser --quiet --system --group --home /var/lib/evhost --no-create-home "
            "--gecos evhost daemon evhost") in calls
    assert "deb-systemd-helper enable evhostd.service" in calls
    assert "deb-systemd-helper update-state evhost-backup.timer" in calls
    assert "deb-systemd-helper enable evhost-backup.timer" not in calls
    for unit in ("evhostd.service", "evhost-backup.service", "evhost-backup.timer"):
        assert (r.path / "lib/systemd/system" / unit).is_file(), unit
    assert not [c for c in calls if c.startswith(("systemctl", "deb-systemd-invoke"))], calls
    state = r.path / "var/lib/evhost"
    st = state.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 998, 998)
    assert run(["dpkg", f"--root={r.path}", "-s", "evhost"]).stdout.count("Status: install ok "
                                                                        "installed") == 1
    # The daemon would keep its databases here; purge must take them away.
    (state / "user.db").write_text("state")

    # Again with systemd running: the user is not added twice, and the
    # daemon is reloaded into and restarted as for an upgrade. The timer
    # stays off...
    (r.path / "run/systemd/system").mkdir(parents=True)  # what "systemd is running" means
    r.dpkg("-i", debs["evhost"])
    calls = r.standins()
    assert not [c for c in calls if c.startswith("adduser")], calls
    assert "systemctl --system daemon-reload" in calls
    assert "deb-systemd-invoke restart evhostd.service" in calls
    assert "deb-systemd-helper enable evhost-backup.timer" not in calls
    # ... until an admin turns it on (systemctl enable): then upgrades keep
    # it on. (deb-systemd-invoke restarts only enabled units.)
    (r.path / "standins.state" / "evhost-backup.timer.enabled").touch()
    r.dpkg("-i", debs["evhost"])
    calls = r.standins()
    assert "deb-systemd-helper enable evhost-backup.timer" in calls
    assert "deb-systemd-invoke restart evhost-backup.timer" in calls

    # Remove: the daemon stops first, the conffiles and the state stay.
    r.dpkg("-r", "evhost-dev", "evhost")
    calls = r.standins()
    assert "deb-systemd-invoke stop evhostd.service" in calls
    assert "deb-systemd-invoke stop evhost-backup.timer evhost-backup.service" in calls
    assert "deb-systemd-helper mask evhostd.service" in calls
    assert "deb-systemd-helper mask evhost-backup.timer" in calls
    assert not (r.path / "usr/sbin/evhostd").exists()
    assert not (r.path / "usr/include/evhost").exists()
    assert (r.path / "etc/evhost/evhost.conf").exists()
    assert (state / "user.db").exists()

    # Purge: the configuration and the state go too.
    shutil.rmtree(r.path / "run")
    r.dpkg("--purge", "evhost")
    calls = r.standins()
    assert "deb-systemd-helper purge evhostd.service evhost-backup.timer" in calls
    assert not list((r.path / "standins.state").iterdir())
    assert not (r.path / "etc/evhost").exists()
    assert not state.exists()

    # Nothing but dpkg's own records (and the system user, which Debian keeps)
    # differs from the empty root.
    after = r.snapshot()
    gone = set(before) - set(after)
    added = {p for p in set(after) - set(before)
             if not p.startswith(("var/lib/dpkg/", "var/log/dpkg.log", "standins.state"))}
    assert not gone and not added, (gone, added)
    assert "evhost:x:998" in (r.path / "etc/passwd").read_text()


# ------------------------------------------------ the installed daemon


class InstalledDaemon(lib.Daemon):
    """lib.Daemon whose command line may start with a wrapper (strace), and
    which signals the daemon itself rather than the wrapper."""

    def __init__(self, *args, wrapper=(), **kw):
        super().__init__(*args, **kw)
        self.wrapper = list(wrapper)

    def command(self):
        return [*self.wrapper, *super().command()]

    def daemon_pid(self):
        if not self.wrapper:
            return self.proc.pid

        def child():
            try:
                text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            except FileNotFoundError:
                return None
            return int(text.split()[0]) if text.split() else None
        return lib.wait_until(child, 10, message="the wrapped evhostd's pid")

    def send_signal(self, sig):
        self.signalled = True
        os.kill(self.daemon_pid(), sig)

    def stop(self, signal=signal.SIGTERM, timeout=30.0):
        if self.proc is not None and self.proc.poll() is None:
            self.send_signal(signal)
        return super().stop(signal, timeout)


@pytest.fixture
def daemons():
    started = []
    yield started
    problems = []
    for d in started:
        was_running, unasked = d.running(), d.exited_unasked()
        code = d.stop(timeout=60)
        if unasked:
            problems.append(f"evhostd exited with {code} during the test, which did not "
                            f"wait for it\n{d.log_tail()}")
        if was_running and code != 0:
            problems.append(f"evhostd exited with {code} on SIGTERM\n{d.log_tail()}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def installed_config(root, base, port, brokers, sections=None, packaged=True):
    """A configuration directory for the installed daemon: the packaged
    evhost.conf and conf.d (when `packaged`), plus a drop-in 90-test.conf
    that points every path into the package root and the test's own
    directory. Returns (config_dir, state_dir)."""
    conf, state = Path(base) / "etc-evhost", Path(base) / "state"
    if packaged:
        shutil.copytree(root.path / "etc/evhost", conf)
    else:
        (conf / "conf.d").mkdir(parents=True)
        (conf / "evhost.conf").write_text("")
    state.mkdir(parents=True, exist_ok=True)
    dropin = {
        "host": {"plugin_dir": str(root.multiarch_dir("evhost/plugins")),
                 "state_dir": str(state)},
        "http": {"listen": f"127.0.0.1:{port}"},
        "kafka": {"brokers": brokers},
        "log": {"format": "text", "level": "debug"},
    }
    if packaged:
        dropin["plugin.notifications"] = {
            "templates_dir": str(root.path / "usr/share/evhost/templates")}
    for name, keys in (sections or {}).items():
        dropin.setdefault(name, {}).update(keys)
    lib.write_ini(conf / "conf.d" / "90-test.conf", dropin)
    return conf, state


def test_installed_daemon_checks_its_configuration(root, tmp_path):
    evhostd = root.path / "usr/sbin/evhostd"
    r = run([evhostd, "--version"])
    assert r.stdout.startswith(f"evhostd {project_version()} (plugin ABI 1.")

    conf, _ = installed_config(root, tmp_path, lib.free_port(), "127.0.0.1:9")
    r = run([evhostd, "--check-config", "-c", conf / "evhost.conf"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{conf}/evhost.conf: configuration OK (3 plugins)"

    bad = conf / "conf.d" / "95-bad.conf"
    bad.write_text("[plugin.notifications]\nsmtp_timeout_ms = soon\n[plugin.crud]\ncolections = x\n")
    r = run([evhostd, "-t", "-c", conf / "evhost.conf"], check=False)
    assert r.returncode == 1
    assert f"{bad}:2:" in r.stdout and f"{bad}:4:" in r.stdout, r.stdout
    assert "2 problems found" in r.stdout


@pytest.fixture(scope="module")
def hello_so(root, tmp_path_factory):
    """The SDK example, built from the installed evhost-dev with pkg-config."""
    need("pkg-config", "building the example plugin")
    out = tmp_path_factory.mktemp("hello") / "hello.so"
    src = root.path / "usr/share/doc/evhost-dev/examples/hello/hello.c"
    # Only the package root's .pc files: nothing from the build machine.
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(root.multiarch_dir("pkgconfig")))
    env.pop("PKG_CONFIG_PATH", None)
    cflags = run(["pkg-config", "--cflags", "evhost-sdk"], env=env).stdout.split()
    assert cflags and all(str(root.path) in f for f in cflags if f.startswith("-I")), cflags
    assert Path(cflags[0][2:]).resolve() == (root.path / "usr/include").resolve()
    plugindir = run(["pkg-config", "--variable=plugindir", "evhost-sdk"], env=env).stdout.strip()
    assert Path(plugindir).resolve() == root.multiarch_dir("evhost/plugins").resolve()
    run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-Wl,--no-undefined", src,
         *cflags, "-o", out])
    return out


def test_example_plugin_builds_with_installed_cmake_package(root, tmp_path):
    need("cmake", "building the example plugin with CMake")
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(root.path / "usr/share/doc/evhost-dev/examples/hello/hello.c", proj)
    (proj / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.20)\nproject(hello C)\n"
        f"find_package(evhost-sdk {project_version()} REQUIRED)\n"
        "add_library(hello MODULE hello.c)\n"
        "set_target_properties(hello PROPERTIES PREFIX \"\")\n"
        "target_link_libraries(hello PRIVATE evhost::sdk)\n"
        "target_link_options(hello PRIVATE -Wl,--no-undefined)\n"
        "message(STATUS \"plugin dir: ${EVHOST_SDK_PLUGIN_DIR}\")\n")
    r = run(["cmake", "-S", proj, "-B", proj / "build", f"-DCMAKE_PREFIX_PATH={root.path}/usr",
             "-DCMAKE_FIND_USE_CMAKE_SYSTEM_PATH=OFF"])
    assert f"plugin dir: {root.path}/usr/lib/" in r.stdout, r.stdout
    run(["cmake", "--build", proj / "build"])
    assert (proj / "build" / "hello.so").exists()


def maildir_messages(box):
    out = []
    for f in sorted((Path(box) / "new").glob("*")) if (Path(box) / "new").is_dir() else []:
        out.append(email.message_from_bytes(f.read_bytes()))
    return out


def decoded(value):
    return str(email.header.make_header(email.header.decode_header(value or "")))


def user_flow_sections(hello_so, tag):
    topics = {k: f"{k}.{tag}" for k in ("created", "updated", "deleted", "broadcast")}
    return topics, {
        "plugin.user": {"topic.created": topics["created"], "topic.updated": topics["updated"],
                        "topic.deleted": topics["deleted"], "argon2_opslimit": "min",
                        "argon2_memlimit": "min"},
        "plugin.notifications": {
            **lib.notifications_topics(topics), "group": f"evhost.notifications.{tag}", "from": "Evhost <noreply@example.org>"},
        "plugin.hello": {"path": str(hello_so), "topic": f"hello.{tag}",
                         "greeting_topic": f"hello.greeted.{tag}"},
    }


def create_user_and_wait_for_mail(d, state, name, smtp=None, timeout=60):
    """POST /users, then wait for the welcome mail: in the default maildir
    under `state`, or at `smtp` (a lib.SmtpSink). Returns (user, address,
    [messages to that address])."""
    addr = f"pkg.{uuid.uuid4().hex[:8]}@example.com"
    r = d.post("/users", json={"name": name, "email": addr, "password": PASSWORD})
    assert r.status_code == 201, r.text
    box = state / "notifications" / "maildir"

    def welcome():
        msgs = smtp.messages if smtp else maildir_messages(box)
        return [m for m in msgs if addr in (m.get("To") or "")]
    where = f"at {smtp.host}:{smtp.port}" if smtp else f"in {box}"
    try:
        msgs = lib.wait_until(welcome, timeout, 0.2, message=f"a welcome mail to {addr} {where}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- evhostd log ---\n{d.log_tail(80)}") from None
    return r.json(), addr, msgs


def test_installed_daemon_serves_users_and_mails_welcome(root, hello_so, tmp_path, daemons,
                                                         kafka_bootstrap):
    tag = uuid.uuid4().hex[:10]
    port = lib.free_port()
    topics, sections = user_flow_sections(hello_so, tag)
    conf, state = installed_config(root, tmp_path, port, kafka_bootstrap, sections)
    d = InstalledDaemon(root.path / "usr/sbin/evhostd", conf, state, port)
    daemons.append(d)
    d.start().wait_healthy(lib.health_timeout())

    ready = lib.wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        d.get("/readyz")), 30, message="GET /readyz == 200", ignore=(requests.RequestException,))
    assert ready.json()["plugins"] == {"user": "running", "crud": "running",
                                       "notifications": "running", "hello": "running"}

    user, addr, msgs = create_user_and_wait_for_mail(d, state, "Ada Lovelace")
    assert len(msgs) == 1
    subject_template = (root.path / "usr/share/evhost/templates/welcome.subject").read_text()
    assert decoded(msgs[0]["Subject"]) == subject_template.strip().replace("{{name}}",
                                                                          "Ada Lovelace")
    assert "noreply@example.org" in msgs[0]["From"]
    # The event went through Kafka: it is on the topic, as the old stack sent it.
    events = lib.kafka_consume(topics["created"], count=1, timeout=20, brokers=kafka_bootstrap)
    assert events and f'"{user["id"]}"' in events[0]["value"]

    # The example plugin built against the installed SDK serves too.
    assert d.get("/hello/ada").json() == {"hello": "ada", "greeted": 1}
    assert d.get("/hello/ada").json() == {"hello": "ada", "greeted": 2}


# ---------------------------------------------------------- sd_notify


def test_sd_notify_ready_status_watchdog_stopping(root, tmp_path, daemons):
    notify = lib.NotifySocket()
    try:
        port = lib.free_port()
        conf, state = installed_config(root, tmp_path, port, "embedded", packaged=False)
        env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="300000")
        env.pop("WATCHDOG_PID", None)
        d = InstalledDaemon(root.path / "usr/sbin/evhostd", conf, state, port, env=env)
        daemons.append(d)
        d.start()
        (t_ready, text), = notify.wait_for("READY=1")
        assert text.splitlines() == ["READY=1", f"STATUS=serving 0 plugins on 127.0.0.1:{port}"]
        # READY only once HTTP answers.
        assert d.get("/healthz").status_code == 200

        # Half the watchdog interval: a ping every 150 ms.
        time.sleep(1.5)
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1" and t > t_ready]
        assert 6 <= len(pings) <= 14, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.3, gaps

        # SIGHUP: RELOADING=1 with the monotonic time, then READY=1 again.
        n_ready = len([m for _, m in notify.messages if m.startswith("READY=1")])
        d.send_signal(signal.SIGHUP)
        (_, text), = notify.wait_for("RELOADING=1", timeout=10)
        lines = text.splitlines()
        assert lines[0] == "RELOADING=1" and "STATUS=reloading the configuration" in lines
        assert [l for l in lines if l.startswith("MONOTONIC_USEC=") and l[15:].isdigit()]
        lib.wait_until(lambda: len([m for _, m in notify.messages
                                    if m.startswith("READY=1")]) == n_ready + 1, timeout=10,
                       message="READY=1 after the reload")

        assert d.stop() == 0
        (_, text), = notify.wait_for("STOPPING=1", timeout=5)
        assert text.startswith("STOPPING=1\nSTATUS=stopping")
    finally:
        notify.close()


def test_no_notifications_outside_systemd(root, tmp_path, daemons):
    # Without NOTIFY_SOCKET the daemon sends nothing and still waits for signals.
    port = lib.free_port()
    conf, state = installed_config(root, tmp_path, port, "embedded", packaged=False)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    d = InstalledDaemon(root.path / "usr/sbin/evhostd", conf, state, port, env=env)
    daemons.append(d)
    d.start().wait_healthy(lib.health_timeout())
    time.sleep(1.2)  # longer than the 1 s wait slice
    assert d.running()
    assert d.stop() == 0


# ------------------------------------------------- the unit's sandbox


def syscall_groups():
    """{"@group": [members...]} from systemd-analyze (members may be groups)."""
    out = run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
    return groups


def expand(groups, names):
    out = set()
    for n in names:
        out |= expand(groups, groups.get(n, [])) if n.startswith("@") else {n}
    return out


def unit_syscall_allow_list(groups, source=UNIT_SOURCE):
    """What a unit's SystemCallFilter= lines leave allowed."""
    allowed = set()
    for value in unit_settings(source.read_text())["SystemCallFilter"]:
        if value.startswith("~"):
            allowed -= expand(groups, value[1:].split())
        else:
            allowed |= expand(groups, value.split())
    return allowed


def strace_calls(text):
    """strace -f output with every call on one line: an "<unfinished ...>"
    line joined with its "<... NAME resumed>" continuation."""
    pending, out = {}, []
    for line in text.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[:-len("<unfinished ...>")]
            continue
        m = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        if m and pid in pending:
            rest = pending.pop(pid) + m.group(1)
        out.append(f"{pid} {rest}")
    return "\n".join(out)


def check_sandboxed_calls(who, trace, allowed, writable):
    """The system calls in `trace` (strace -f -o) pass a unit's sandbox:
    `allowed` by its filter, its address families, no W^X mapping, files
    changed only below `writable` (None: none at all), only its own /proc."""
    text = strace_calls(trace.read_text())
    calls = re.findall(r"^\d+\s+([a-z_0-9]+)\(", text, re.M)
    assert calls[0] == "execve" and "connect" in calls, calls[:5]
    used = set(calls)
    print(f"\n{who} made {len(calls)} system calls of {len(used)} kinds")
    assert not used - allowed, f"not allowed by SystemCallFilter=: {sorted(used - allowed)}"

    families = set(re.findall(r"^\d+\s+socket\((AF_[A-Z0-9]+),", text, re.M))
    assert families - {"AF_NETLINK"} <= {"AF_INET", "AF_INET6", "AF_UNIX"}, families
    # The one exception: getaddrinfo(AI_ADDRCONFIG) asks the kernel for the
    # host's addresses over netlink (librdkafka resolving a broker). Under
    # RestrictAddressFamilies= that socket() fails, and glibc then assumes
    # both IPv4 and IPv6 are there (check_pf.c), so resolving still works.
    # Nothing else may use netlink.
    netlink = re.findall(r"^\d+\s+socket\(AF_NETLINK, .*NETLINK_ROUTE", text, re.M)
    requests_sent = re.findall(r"^\d+\s+send(?:to|msg)\(\d+, .*?nlmsg_type=(\w+)", text, re.M)
    assert set(requests_sent) <= {"RTM_GETADDR"}, requests_sent
    assert len(netlink) == len(requests_sent), (netlink, requests_sent)

    # MemoryDenyWriteExecute=yes: no mapping both writable and executable.
    wx = re.findall(r"^\d+\s+(?:mmap|mprotect|pkey_mprotect)\(.*PROT_WRITE\|PROT_EXEC.*$",
                    text, re.M)
    wx += re.findall(r"^\d+\s+(?:mmap|mprotect|pkey_mprotect)\(.*PROT_EXEC\|PROT_WRITE.*$",
                     text, re.M)
    assert not wx, wx

    # ProtectSystem=strict: the daemon changes files only below its state
    # directory (the unit's StateDirectory=); evhostctl changes none. Failed
    # calls (mkdir of an existing parent) change nothing.
    written = re.findall(r'^\d+ open(?:at)?\((?:AT_FDCWD, )?"([^"]+)", [^)]*'
                         r'O_(?:WRONLY|RDWR|CREAT).*= \d+$', text, re.M)
    written += re.findall(r'^\d+ (?:mkdir|unlink|rename|rmdir)(?:at)?\((?:AT_FDCWD, )?"([^"]+)"'
                          r'.*= 0$', text, re.M)
    if writable is None:
        assert not [w for w in written if w != "/dev/null"], written
    else:
        assert written, "no writes seen: the pattern is wrong"
        outside = [w for w in written if not Path(w).is_relative_to(writable)]
        assert not outside, outside

    # ProcSubset=pid: only the process's own /proc entries exist.
    proc = re.findall(r'^\d+ open(?:at)?\(.*?"(/proc/[^"]*)".*= \d+$', text, re.M)
    foreign = [p for p in proc if not re.match(r"/proc/(self|thread-self|\d+)(/|$)", p)]
    assert not foreign, foreign


@pytest.mark.parametrize("transport", ["maildir", "smtp"])
def test_unit_sandbox_permits_what_evhostd_does(transport, debs, root, hello_so, tmp_path,
                                                daemons, kafka_bootstrap, request):
    need("strace", "tracing the daemon's system calls")
    need("systemd-analyze", "reading systemd's system call groups")
    allowed = unit_syscall_allow_list(syscall_groups())
    assert "openat" in allowed and "setuid" not in allowed and "setrlimit" not in allowed

    # The evhost package unpacked where an unprivileged user can read it, and
    # a state directory only that user writes: as under the unit's User=.
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="evh-sandbox-"))
    collector = None
    try:
        base.chmod(0o755)
        pkg = base / "pkg"
        run(["dpkg-deb", "-x", debs["evhost"], pkg])
        shutil.copy(hello_so, base / "hello.so")
        sandbox_root = PackageRoot(pkg)
        port = lib.free_port()
        tag = uuid.uuid4().hex[:10]
        _, sections = user_flow_sections(base / "hello.so", tag)
        smtp = request.getfixturevalue("smtp_server") if transport == "smtp" else None
        if smtp:
            sections["plugin.notifications"].update(transport="smtp",
                                                    smtp_url=f"smtp://{smtp.host}:{smtp.port}")
            # Spans to an https collector: the exporter's TLS (the packaged
            # libssl.so) under the sandbox too.
            certs = lib.TlsCerts(base / "certs")
            # Unpacked, not installed: the packaged TLS libraries where
            # evhostd looks first, beside itself.
            multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
            (pkg / "usr/sbin/tls").symlink_to(pkg / f"usr/lib/{multiarch}/evhost/tls")
            for p in [base / "certs", *(base / "certs").iterdir()]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            collector = lib.Collector(tmp_path / "otelcol",
                                      tls=(certs.server_crt, certs.server_key)).start()
            sections["tracing"] = {"otlp_endpoint": collector.endpoint,
                                   "otlp_ca_file": str(certs.ca_crt), "export_interval": "100ms"}
        token = base / "admin.token"
        token.write_text("sandbox-admin-token-0123456789\n")
        token.chmod(0o600)
        os.chown(token, nobody.pw_uid, nobody.pw_gid)
        sections["admin"] = {"token_file": str(token)}
        conf, state = installed_config(sandbox_root, base, port, kafka_bootstrap, sections)
        for p in [state, *state.rglob("*")]:
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        trace = tmp_path / "strace.out"
        d = InstalledDaemon(pkg / "usr/sbin/evhostd", conf, state, port,
                            wrapper=["strace", "-f", "-qq", "-u", "nobody", "-o", str(trace)])
        daemons.append(d)
        d.start().wait_healthy(lib.health_timeout() * 2)
        assert d.get("/hello/ada").status_code == 200
        create_user_and_wait_for_mail(d, state, "Grace Hopper", smtp=smtp)
        if collector:
            collector.wait_spans(lambda sp: sp["name"] == "POST /users", timeout=30)
        # Two backups, the older removed by the second, taken as the backup
        # timer's unit takes it: the packaged evhostctl, as the daemon's user.
        admin = {"Authorization": "Bearer sandbox-admin-token-0123456789"}
        first = d.post("/admin/backup", json={}, headers=admin, timeout=60)
        assert first.status_code == 200, first.text
        ctl_trace = tmp_path / "strace-evhostctl.out"
        exec_start = unit_settings(BACKUP_SERVICE_SOURCE.read_text())["ExecStart"][0].split()
        assert exec_start[:3] == ["/usr/bin/evhostctl", "-c", "/etc/evhost/evhost.conf"]
        ctl = run(["strace", "-f", "-qq", "-u", "nobody", "-o", ctl_trace,
                   pkg / "usr/bin/evhostctl", "-c", conf / "evhost.conf", "backup", "--keep", "1"],
                  timeout=90)
        assert f"removed the older backup {first.json()['dir']}" in ctl.stdout, ctl.stdout
        second = Path(re.search(r"^backup in (\S+),", ctl.stdout, re.M).group(1))
        assert (second / "user.db").is_file() and not Path(first.json()["dir"]).exists()
        # A reload that drains and stops one plugin.
        (conf / "conf.d" / "95-reload.conf").write_text("[plugin.crud]\nenabled = false\n")
        d.send_signal(signal.SIGHUP)
        d.wait_for_log("reload done", timeout=30)
        assert d.get("/crud/products").status_code == 404
        assert d.stop() == 0
    finally:
        if collector:
            collector.close()
        shutil.rmtree(base, ignore_errors=True)

    check_sandboxed_calls("evhostd", trace, allowed, writable=state)
    # evhostctl under the backup unit's filter: it reads and talks HTTP, and
    # writes nothing at all.
    check_sandboxed_calls("evhostctl", ctl_trace,
                          unit_syscall_allow_list(syscall_groups(), BACKUP_SERVICE_SOURCE),
                          writable=None)
