"""The configuration's reference stays whole: every key evhostd's parser
takes (host/config.c's key tables) is documented in docs/configuration.md
and in evhost.conf(5). A key added without its documentation fails here."""

import re

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
