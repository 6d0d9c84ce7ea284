"""The configuration's reference stays whole: every key evhostd's parser
takes (host/config.c's key tables) is documented in docs/configuration.md
and in evhost.conf(5). A key added without its documentation fails here.
And the commands the guides tell an admin to run exist: every `evhostctl
COMMAND` in README.md and docs/*.md is one of those `evhostctl --help` lists."""

import re
import subprocess

import evhost_testlib as lib

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
