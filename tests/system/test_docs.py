"""The configuration's reference stays whole: every key evhostd's parser
takes (host/config.c's key tables) is documented in docs/configuration.md
and in evhost.conf(5). A key added without its documentation fails here.
And the commands the guides tell an admin to run exist: every `evhostctl
COMMAND` in README.md and docs/*.md is one of those `evhostctl --help` lists.
The same for the other lists the docs keep: the bundled plugins' keys
(services.md, against their schemas), the ranges the key tables state
(against evhostd --check-config), the metric families (operations.md's
tables, against the source and a running daemon's /metrics; every family the
docs, the dashboard and the alert rules name), the admin routes (against
admin.c's route() and the daemon), the threads, the host's source files
(architecture.md, README.md) and sdk.md's "since ABI" column (evhost.h)."""

import re
import subprocess

import requests

import evhost_testlib as lib
import test_metrics

CONFIG_C = lib.REPO_ROOT / "host" / "config.c"
REFERENCE = lib.REPO_ROOT / "docs" / "configuration.md"
MAN = lib.REPO_ROOT / "packaging" / "man" / "evhost.conf.5"


def parser_keys():
    """The names in config.c's tables: {"name", k_handler}."""
    keys = set(re.findall(r'^\s*\{"([a-z_.]+)", k_\w+\}', CONFIG_C.read_text(), re.M))
    assert len(keys) > 40, keys  # the tables are found at all
    return keys


def test_every_key_is_in_the_reference_and_the_man_page():
    reference, man = REFERENCE.read_text(), MAN.read_text()
    missing = sorted(k for k in parser_keys() if f"| `{k}` |" not in reference)
    assert not missing, f"keys without a row in docs/configuration.md: {missing}"
    # In the man page, each key opens a .TP entry: ".BR key " (type...)"".
    missing = sorted(k for k in parser_keys()
                     if not re.search(rf'^\.BR {re.escape(k)}\b', man, re.M))
    assert not missing, f"keys without an entry in evhost.conf(5): {missing}"


SERVICES = lib.REPO_ROOT / "docs" / "services.md"
CFG_TYPES = {"STRING": "string", "INT": "integer", "BOOL": "boolean", "LIST": "list",
             "PATH": "path", "FILE": "path", "DIR": "path"}


def plugin_schema(plugin):
    """A bundled plugin's declared keys ({"key", EVH_CFG_TYPE, default, ...}
    in plugins/NAME/*.c): {key: (type, default or None)}; a default given by
    a macro (a build-time path) is None too. `*` in a key is NAME."""
    keys = {}
    entry = re.compile(r'\{"([a-z0-9_.*]+)", EVH_CFG_([A-Z]+), (NULL|"[^"]*"|\w+),')
    for src in sorted((lib.REPO_ROOT / "plugins" / plugin).glob("*.c")):
        for key, kind, dflt in entry.findall(src.read_text()):
            keys[key.replace("*", "NAME")] = (CFG_TYPES[kind],
                                              dflt[1:-1] if dflt.startswith('"') else None)
    return keys


def test_every_plugin_key_is_in_services_md_with_its_type_and_default():
    """Each bundled plugin's schema and its `### Configuration [plugin.NAME]`
    table in docs/services.md agree: the same keys, each with the type the
    schema declares (a path for FILE and DIR) and, where the schema gives a
    default, that default."""
    text = SERVICES.read_text()
    problems = []
    for plugin in ("user", "crud", "notifications"):
        schema = plugin_schema(plugin)
        assert len(schema) >= 5, (plugin, schema)
        part = text.split(f"### Configuration `[plugin.{plugin}]`", 1)[1]
        table = part.split("| key | type | default | meaning |", 1)[1].split("\n\n")[0]
        rows = {}
        for row in table.splitlines()[2:]:
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            m = re.fullmatch(r"`([a-zA-Z0-9_.]+)`", cells[0])
            assert m, (plugin, row)
            rows[m.group(1)] = cells[1], cells[2]
        for key in sorted(set(schema) - set(rows)):
            problems.append(f"[plugin.{plugin}] {key}: declared, no row in services.md")
        for key in sorted(set(rows) - set(schema)):
            problems.append(f"[plugin.{plugin}] {key}: in services.md, not declared")
        for key in sorted(set(rows) & set(schema)):
            kind, dflt = schema[key]
            if not rows[key][0].startswith(kind):
                problems.append(f"[plugin.{plugin}] {key}: type {kind}, services.md says "
                                f"{rows[key][0]!r}")
            if dflt is not None and f"`{dflt}`" not in rows[key][1]:
                problems.append(f"[plugin.{plugin}] {key}: default {dflt!r}, services.md says "
                                f"{rows[key][1]!r}")
    assert not problems, problems


_UNIT_MS = {"": 1000, "ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
_UNIT_BYTES = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_RANGE = re.compile(r"^(integer|size|duration|number)\W*(0 or )?([0-9.]+[a-zA-Z]*) ?(?:-|to) ?"
                    r"([0-9.]+[a-zA-Z]*)\b")


def documented_ranges():
    """Every key whose type cell in docs/configuration.md or in services.md's
    plugin tables states a range ("integer 1-256", "size 4K-1M", "duration
    (1s-1h)", "duration, 1s to 1h", "number 0-1", "integer, 0 or 1-1000"):
    [(where, section, key, kind, low, high, zero_too, whole_seconds)],
    durations in ms and sizes in bytes; whole_seconds: the row says the
    duration is "whole seconds"."""
    out = []
    for doc in (REFERENCE, SERVICES):
        section = None
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("#"):  # a heading: "## [http]", "### Configuration `[plugin.user]`"
                m = re.match(r"#+ .*\[([a-z.]+)\]", line)
                section = m.group(1) if m else None
            if not line.startswith("| `") or section is None:
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            key = re.fullmatch(r"`([a-z0-9_.]+)`", cells[0])
            m = _RANGE.match(cells[1].strip("( "))
            if not key or not m:
                continue
            kind, zero, low, high = m.groups()

            def amount(text):
                num, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text).groups()
                if kind == "duration":
                    return int(num) * _UNIT_MS[unit]
                if kind == "size":
                    return int(num) * _UNIT_BYTES[unit.lower()]
                assert not unit, (doc.name, n, text)
                return float(num) if kind == "number" else int(num)
            out.append((f"{doc.name}:{n}", section, key.group(1), kind, amount(low), amount(high),
                        bool(zero), "whole seconds" in line))
    return out


def test_the_documented_ranges_are_the_codes(evhostd):
    """For each key whose documented type states a range, evhostd
    --check-config takes both ends (and 0 where the docs say "0 or") and
    refuses a value just outside each, at the key's line; a duration said
    to be in whole seconds refuses one with 500 ms more. One run a value,
    the key alone in its section (with the notifications' templates, whose
    default directory is not installed here, and its SMTP transport for the
    smtp_* keys, checked only then)."""
    ranges = documented_ranges()
    assert len(ranges) > 25, ranges
    templates = str(lib.REPO_ROOT / "plugins" / "notifications" / "templates")
    problems = []

    def render(kind, v):
        return f"{v}ms" if kind == "duration" else (f"{v:g}" if kind == "number" else str(v))

    for where, section, key, kind, low, high, zero, whole in ranges:
        step = 0.001 if kind == "number" else 1
        cases = [(low, True), (high, True), (high + step, False)]
        cases += [(low + 500, False)] if whole else []
        cases += [(0, True)] if zero else []
        if low - step >= 0 and not (zero and low - step == 0):
            cases.append((low - step, False))
        for value, ok in cases:
            conf = {section: {key: render(kind, value)}}
            if section == "plugin.notifications":
                conf[section]["templates_dir"] = templates
                if key.startswith("smtp_"):  # read with transport = smtp only
                    conf[section].update(transport="smtp", smtp_url="smtp://127.0.0.1:25")
            r = evhostd.run(["--check-config"], conf)
            refused = [ln for ln in r.stdout.splitlines()
                       if f"] {key}: " in ln and re.search(r"got '|\(got ", ln)]
            if ok and refused:
                problems.append(f"{where}: [{section}] {key} = {render(kind, value)} refused: "
                                f"{refused}")
            if not ok and not refused:
                problems.append(f"{where}: [{section}] {key} = {render(kind, value)} taken "
                                f"(rc {r.returncode}): {r.stdout.strip()[-300:]}")
    assert not problems, "\n".join(problems)


def evhostctl_commands(build_dir):
    """The commands of `evhostctl --help`: the first word of each line of its
    "Commands:" part, and the words after a "|" (enable NAME | disable NAME)."""
    out = subprocess.run([str(build_dir / "host" / "evhostctl"), "--help"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    part = out.split("Commands:", 1)[1].split("Options:", 1)[0]
    commands = set(re.findall(r"^  ([a-z][a-z-]*)", part, re.M))
    commands |= set(re.findall(r"\| ([a-z][a-z-]*) [A-Z]", part))
    assert {"status", "enable", "disable", "replay", "backup"} <= commands, out
    return commands


def test_every_evhostctl_command_in_the_guides_exists(build_dir):
    commands = evhostctl_commands(build_dir)
    named = []
    for doc in [lib.REPO_ROOT / "README.md", *sorted((lib.REPO_ROOT / "docs").glob("*.md"))]:
        in_code = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
                continue
            # `evhostctl X ...` in prose; "$ evhostctl X" or "evhostctl X" in a shell block.
            spans = re.findall(r"`(?:\$ )?evhostctl ([^`]*)`", line)
            if in_code:
                spans += re.findall(r"^\s*(?:\$ )?evhostctl (.*)", line)
            for span in spans:
                # Options before the command: -c FILE, --url URL, --token-file F, --json.
                words = span.split()
                while words and words[0].startswith("-"):
                    words = words[1 if words[0] == "--json" else 2:]
                if words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
                    named.append((f"{doc.name}:{n}", words[0]))
    assert len(named) > 10, named  # the guides' commands are found at all
    unknown = [f"{where}: evhostctl {cmd}" for where, cmd in named if cmd not in commands]
    assert not unknown, (f"commands evhostctl --help does not list ({sorted(commands)}): "
                         f"{unknown}")


# ------------------------------------------------------------------ metrics

METRICS_C = lib.REPO_ROOT / "host" / "metrics.c"
OPERATIONS = lib.REPO_ROOT / "docs" / "operations.md"
ADMIN_C = lib.REPO_ROOT / "host" / "admin.c"
ADMIN_TOKEN = "admin-token-for-the-docs-test-0123"
# Names in the docs shaped like a metric's that are not one: civetweb's function.
NOT_METRICS = {"process_new_connection"}


def code_families():
    """The families the code can expose, read from the source: metrics.c's
    names ("evhost_...", "process_...": it renders every host family from
    a literal) and each plugin's evh_metric_new(p, EVH_METRIC_TYPE, "name")
    with its type. Returns {family: type or None (not read statically)}."""
    text = METRICS_C.read_text()
    families = {name: None for name in re.findall(r'"((?:evhost|process)_[a-z_]+)"', text)}
    for name, kind in re.findall(r'put_head\(\w+, "([a-z_]+)", "(\w+)"', text):
        families[name] = kind
    for src in sorted((lib.REPO_ROOT / "plugins").rglob("*.c")):
        for kind, name in re.findall(r'evh_metric_new\(\s*\w+,\s*EVH_METRIC_([A-Z]+),\s*'
                                     r'"([a-z_]+)"', src.read_text()):
            families[name] = kind.lower()
    assert len(families) > 30 and "user_logins_total" in families, families
    return families


def kafka_header_names():
    """The evhost_* Kafka headers the host writes (dead letters, redrives)."""
    text = "".join(p.read_text() for p in sorted((lib.REPO_ROOT / "host").glob("*.c")))
    names = set(re.findall(r'header_addf?\(\w+, "(evhost_[a-z_]+)"', text))
    assert "evhost_dlq_topic" in names, names
    return names


def admin_routes_in_code():
    """host/admin.c's route(): [(METHOD, "/admin/a/{}/b")]. Each route is an
    `if (n == K && !strcmp(seg[I], "lit") ...)` (inside an `if (...) {`
    block whose conditions hold too) answered by `method ? handler :
    method_not_allowed(resp, method, "METHOD")` ("GET, HEAD" for a GET); a segment no strcmp names
    is a parameter, `{}`."""
    text = ADMIN_C.read_text()
    body = text[text.index("static int route(host *h"):]
    body = body[:body.index("\n}\n")]
    routes, blocks, parsed = [], [], 0  # blocks: (condition, end offset)

    def closing(s, i, open_, close):
        depth = 0
        for j in range(i, len(s)):
            depth += {open_: 1, close: -1}.get(s[j], 0)
            if depth == 0:
                return j
        raise AssertionError(f"unbalanced {open_} in route() at {i}")

    for m in re.finditer(r"\bif \(", body):
        end = closing(body, m.end() - 1, "(", ")")
        cond, rest = body[m.end():end], body[end + 1:].lstrip()
        blocks = [(c, e) for c, e in blocks if e > m.start()]
        if rest.startswith("{"):
            blocks.append((cond, closing(body, end + 1 + body[end + 1:].index("{"), "{", "}")))
            continue
        # "GET, HEAD": a GET route (HEAD goes with every GET)
        allowed = re.match(r'return [^;]*method_not_allowed\(resp, method, "([A-Z]+)(?:, HEAD)?"\);',
                           rest, re.S)
        if not allowed:
            continue  # the query check's 422
        parsed += 1
        conds = [c for c, _ in blocks] + [cond]
        lits = {int(i): s for c in conds
                for i, s in re.findall(r'seg\[(\d)\], "([^"]+)"', c)}
        counts = [int(k) for k in re.findall(r"\bn == (\d)", cond)]
        assert counts, f"route() condition without n == K: {cond}"
        for k in counts:
            routes.append((allowed.group(1),
                           "/admin/" + "/".join(lits.get(i, "{}") for i in range(k))))
    # Every method_not_allowed of route() was read as a route.
    statements = body.count("method_not_allowed(resp, method,")
    assert statements >= 8 and parsed == statements, (statements, parsed, routes)
    return routes


def admin_routes_in_docs():
    """Every `METHOD /admin/...` the guides, README and man pages name:
    [(where, METHOD, path without its query)]."""
    named = []
    docs = [lib.REPO_ROOT / "README.md", *sorted((lib.REPO_ROOT / "docs").glob("*.md")),
            *sorted((lib.REPO_ROOT / "packaging" / "man").glob("*.[0-9]"))]
    for doc in docs:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for method, path in re.findall(
                    r"\b(GET|HEAD|POST|PUT|PATCH|DELETE) (/admin[^\s`?\"]*)", line):
                named.append((f"{doc.name}:{n}", method, path.rstrip(".,;:)")))
    return named


def route_matches(route, method, path):
    """A documented METHOD /admin/x/NAME/y against a code route: the same
    method and segments, a parameter taking any segment."""
    want, pattern = route
    segs, pat = path.strip("/").split("/"), pattern.strip("/").split("/")
    return want == method and len(segs) == len(pat) and all(
        p == "{}" or p == s for p, s in zip(pat, segs))


def test_admin_routes_are_read_from_the_code():
    routes = admin_routes_in_code()
    assert ("POST", "/admin/reload") in routes and ("GET", "/admin/plugins/{}") in routes, routes
    assert ("POST", "/admin/plugins/{}/dlq/redrive") in routes, routes


def test_every_admin_route_is_documented_and_every_documented_one_served():
    """host/admin.c's routes and the docs' agree: each route is a row of
    operations.md's admin API table, and every `METHOD /admin/...` anywhere
    in README.md, docs/*.md and the man pages is a route the daemon serves
    (the daemon's side: see test_metrics_and_admin_routes_of_a_running_daemon)."""
    routes = admin_routes_in_code()
    text = OPERATIONS.read_text()
    table = text.split("## Admin API", 1)[1].split("| route | what |", 1)[1].split("\n\n")[0]
    in_table = [(m, p) for row in table.splitlines()[2:]
                for m, p in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/admin[^`?]*)", row)]
    undocumented = [r for r in routes if not any(route_matches(r, m, p) for m, p in in_table)]
    assert not undocumented, f"admin routes without a row in operations.md's table: {undocumented}"
    named = admin_routes_in_docs()
    assert len(named) > 15, named
    unknown = [f"{where}: {m} {p}" for where, m, p in named
               if not any(route_matches(r, m, p) for r in routes)]
    assert not unknown, f"admin routes the guides name that admin.c does not serve: {unknown}"


def test_every_metric_family_named_in_the_docs_and_packaging_exists():
    """Every evhost_*/process_* name in README.md, docs/*.md (but the
    benchmarks' history) and the man pages, and every family the Grafana
    dashboard and the alert rules (and their promtool tests) query, is one
    the code exposes, or a Kafka header the host writes; and operations.md's
    tables list exactly the families the code has, with the type the code
    gives them where the source says it plainly."""
    families = code_families()
    documented = test_metrics.documented_families() | test_metrics.documented_families(
        plugins=True)
    assert not set(families) - set(documented), \
        f"in the code, not in operations.md's tables: {sorted(set(families) - set(documented))}"
    assert not set(documented) - set(families), \
        f"in operations.md's tables, not in the code: {sorted(set(documented) - set(families))}"
    wrong = [(f, kind, documented[f][0]) for f, kind in families.items()
             if kind and documented[f][0] != kind]
    assert not wrong, f"(family, type in the code, type in operations.md): {wrong}"

    headers = kafka_header_names()

    def unknown_names(text):
        out = set()
        for name in re.findall(r"\b((?:evhost|process|notifications|user)_[a-z_]+)\b", text):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in families or documented.get(base, ("",))[0] == "histogram":
                continue
            if name.startswith(("evhost_", "process_")):
                if name not in headers and name != "evhost_dlq_" and name not in NOT_METRICS:
                    out.add(name)
            elif re.search(r"_(total|seconds|bytes|bucket|sum|count|info)$", name):
                out.add(name)  # user_* / notifications_*: only what looks like a metric
        return out

    problems = []
    docs = [lib.REPO_ROOT / "README.md",
            *(p for p in sorted((lib.REPO_ROOT / "docs").glob("*.md"))
              if p.name != "benchmarks.md"),
            *sorted((lib.REPO_ROOT / "packaging" / "man").glob("*.[0-9]")),
            test_metrics.DASHBOARD, test_metrics.ALERTS,
            test_metrics.ALERTS.with_name("evhost-alerts.test.yml")]
    for doc in docs:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            problems += [f"{doc.relative_to(lib.REPO_ROOT)}:{n}: {name}"
                         for name in sorted(unknown_names(line))]
    assert not problems, f"metric names no code exposes: {problems}"


def test_metrics_and_admin_routes_of_a_running_daemon(evhostd, tmp_path):
    """One daemon with the three bundled plugins, the admin API, HTTPS and a
    backup taken (so that all but the JWKS families are there): every family
    its GET /metrics exposes is in operations.md's tables with its type and
    labels, and in the code's list (code_families); every documented family
    but the JWKS fetch's is exposed. Each route read from admin.c answers
    another method 405 naming its own: the static reading is the daemon's."""
    certs = lib.TlsCerts(tmp_path / "certs")
    pem = tmp_path / "server.pem"
    pem.write_text(certs.server_key.read_text() + certs.server_crt.read_text())
    pem.chmod(0o600)
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    conf = test_metrics.config()
    conf["plugin.crud"] = {"collections": "things"}
    conf["admin"] = {"token_file": str(token)}
    conf["http"] = {"tls_listen": f"127.0.0.1:{lib.free_port()}", "tls_certificate": str(pem)}
    d = evhostd(conf, brokers="embedded")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = d.post("/admin/backup", json={}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text

    scrape = test_metrics.Scrape(d)
    exposed = set(scrape.types)
    families = code_families()
    assert not exposed - set(families), \
        f"exposed, not found in the code by code_families(): {sorted(exposed - set(families))}"
    wrong = [(f, families[f], scrape.types[f]) for f in exposed
             if families[f] and families[f] != scrape.types[f]]
    assert not wrong, f"(family, type read from the code, type exposed): {wrong}"
    test_metrics.check_documented(scrape)  # types and labels as documented
    documented = test_metrics.documented_families() | test_metrics.documented_families(
        plugins=True)
    jwks = {f for f in documented if f.startswith("evhost_jwks_")}  # need a provider's keys
    assert not set(documented) - exposed - jwks, \
        f"documented, not exposed: {sorted(set(documented) - exposed - jwks)}"

    for method, pattern in admin_routes_in_code():
        path = pattern.replace("{}", "user")
        other = "POST" if method == "GET" else "GET"
        r = requests.request(other, d.url + path, headers=auth, timeout=10)
        allow = "GET, HEAD" if method == "GET" else method
        assert r.status_code == 405 and r.headers.get("Allow") == allow, \
            (method, pattern, r.status_code, r.headers.get("Allow"), r.text)


# ------------------------------------------------------------ threads, files

ARCHITECTURE = lib.REPO_ROOT / "docs" / "architecture.md"


def test_every_thread_the_host_names_is_in_the_threads_table():
    """The names the host gives its threads (log_thread_name("evh-x", ...),
    a plugin's name after a prefix ending in ":") are rows of operations.md's
    "Threads" table, and each evh-* row is a name the host gives."""
    text = "".join(p.read_text() for p in sorted((lib.REPO_ROOT / "host").glob("*.c")))
    given = set(re.findall(r'log_thread_name\("([a-z-]+:?)"', text))
    assert {"evh-relay", "evh-c:"} <= given, given
    table = OPERATIONS.read_text().split("## Threads", 1)[1].split("| thread | what it does |",
                                                                   1)[1].split("\n\n")[0]
    rows = {re.sub(r"<[a-z]+>[a-z.]*$", "", name)
            for name in re.findall(r"`(evh-[a-z:<>.-]+)`", table)}
    assert not given - rows, f"threads not in operations.md's table: {sorted(given - rows)}"
    assert not rows - given, f"rows of operations.md's table no thread has: {sorted(rows - given)}"


def test_every_host_source_file_is_in_the_architecture_and_the_readme():
    """docs/architecture.md's table of files has a row for each host/*.c and
    host/tls/*.c, and README.md's layout names each host/*.c."""
    sources = sorted(p.relative_to(lib.REPO_ROOT).as_posix()
                     for p in [*(lib.REPO_ROOT / "host").glob("*.c"),
                               *(lib.REPO_ROOT / "host" / "tls").glob("*.c")])
    assert len(sources) > 30, sources
    arch = ARCHITECTURE.read_text()
    rows = [ln for ln in arch.splitlines() if ln.startswith("| `host/")]
    missing = [s for s in sources if not any(f"`{s}`" in row for row in rows)]
    assert not missing, f"host sources without a row in architecture.md's table: {missing}"
    layout = (lib.REPO_ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    missing = [s for s in sources if s.count("/") == 1 and
               not re.search(rf"\b{re.escape(s.split('/')[1])}\b", layout)]
    assert not missing, f"host sources README.md's layout does not name: {missing}"


# ---------------------------------------------------------------- SDK table

HEADER = lib.REPO_ROOT / "sdk" / "include" / "evhost" / "evhost.h"
SDK_GUIDE = lib.REPO_ROOT / "docs" / "sdk.md"


def api_minors():
    """{evh_function: the ABI minor that brought the API table members its
    inline wrapper calls}: the members of struct evh_api after a "(ABI 1.N)"
    comment are 1.N's, those before any such comment 1.0's."""
    text = HEADER.read_text()
    end = text.index("} evh_api;")
    body = text[text.rindex("struct evh_api {", 0, end):end]
    minor, members = 0, {}
    for line in body.splitlines():
        m = re.search(r"\(ABI 1\.(\d+)\)", line)
        minor = int(m.group(1)) if m else minor
        m = re.search(r"\(\*(\w+)\)\(", line)
        if m:
            members[m.group(1)] = minor
    assert "metric" in members and members["metric"] == 9, members
    wrappers = {}
    for m in re.finditer(r"static inline [^{;]*?\b(evh_\w+)\([^)]*\)\s*\{(.*?)\}\s*$", text,
                         re.S | re.M):
        used = {a or b for a, b in re.findall(r"evh__api->(\w+)|EVH_API_HAS\((\w+)\)",
                                              m.group(2))}
        if used & set(members):
            wrappers[m.group(1)] = max(members[u] for u in used & set(members))
    return wrappers


def test_the_sdk_references_since_abi_column_is_the_headers():
    """docs/sdk.md's reference gives each call the ABI minor that brought it
    ("since ABI"); for each inline wrapper of evhost.h it is the minor under
    which the API table's members it calls were added."""
    minors = api_minors()
    assert len(minors) > 50, minors
    rows = re.findall(r"^\| `(evh_\w+)\(.*\| 1\.(\d+) \|$", SDK_GUIDE.read_text(), re.M)
    assert len(rows) > 50, rows
    wrong = [f"{name}: sdk.md 1.{v}, evhost.h 1.{minors[name]}" for name, v in rows
             if name in minors and minors[name] != int(v)]
    assert not wrong, wrong
    checked = {name for name, _ in rows if name in minors}
    assert len(checked) > 50, sorted(set(minors) - checked)
