"""Issue 8 item 2: a token's PIN files are its own; no label can make another token lose them.

Earlier versions mapped labels to PIN file names lossily ('a b' and 'a_b' both became a_b.pin),
so creating the second token overwrote the first one's PINs and its keys became unusable.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bindpkcs11.errors import UsageError
from bindpkcs11.pins import SO, USER, stored_pin_path
from bindpkcs11.state import StateDir
from conftest import one_line_error

MAX_LABEL_BYTES = 32  # CK_TOKEN_INFO.label
STATE = StateDir(root=Path("/state"))
SAFE = set(string.ascii_letters + string.digits + "._-%")


def _short_labels():
    return st.text(max_size=MAX_LABEL_BYTES).filter(
        lambda text: len(text.encode("utf-8", "surrogatepass")) <= MAX_LABEL_BYTES)


@settings(max_examples=500, deadline=None)
@given(_short_labels(), _short_labels())
@example("a b", "a_b")
@example("", ".")
@example(".", "..")
@example("%", "%25")
@example("a/b", "a%2Fb")
@example("é" * 16, "\u00e9")
@example("x" * 32, "x" * 31)
def test_label_to_file_name_is_injective_and_one_safe_component(first, second):
    state = STATE
    for label in (first, second):
        for kind in (USER, SO):
            path = stored_pin_path(state, label, kind)
            assert path.parent == state.pin_dir
            name = path.name
            assert name not in ("", ".", "..") and "/" not in name and "\0" not in name
            assert set(name) <= SAFE and len(name.encode()) <= 255
    if first != second:
        assert {stored_pin_path(state, first, k) for k in (USER, SO)}.isdisjoint(
            {stored_pin_path(state, second, k) for k in (USER, SO)})
    assert stored_pin_path(state, first, USER) != stored_pin_path(state, first, SO)


@pytest.mark.parametrize("label", ["x" * 33, "é" * 17, "€" * 11])
def test_labels_longer_than_a_token_holds_are_refused_not_mapped(label):
    with pytest.raises(UsageError, match="at most 32 bytes"):
        stored_pin_path(STATE, label, USER)


def test_labels_that_were_already_safe_keep_their_file_names():
    state = STATE
    for label in ("bindpkcs11", "a_b", "zone-1.example", "A.b-c_d"):
        assert stored_pin_path(state, label, USER).name == f"{label}.pin"
        assert stored_pin_path(state, label, SO).name == f"{label}.so-pin"


def test_similar_labels_keep_their_own_pins_and_keys(cli):
    """'a b' then 'a_b': both tokens stay usable with the PINs bindpkcs11 stored for them."""
    cli("token", "init", "--label", "a b", "--generate-pins")
    first_pins = sorted(p.read_text() for p in (cli.state_dir / "pins").iterdir())
    key = cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", "a b")
    cli("token", "init", "--label", "a_b", "--generate-pins")
    pin_files = sorted(p.name for p in (cli.state_dir / "pins").iterdir())
    assert pin_files == ["a%20b.pin", "a%20b.so-pin", "a_b.pin", "a_b.so-pin"]
    assert sorted((cli.state_dir / "pins" / n).read_text() for n in pin_files[:2]) == first_pins
    report = cli.json("token", "show", "--label", "a b")
    assert key["object_label"] in {o["object"]["label"] for o in report["objects"]}
    cli("keygen", "example.test", "--role", "ksk", "--algorithm", "13", "--token", "a b")
    cli("keygen", "example.test", "--role", "ksk", "--algorithm", "13", "--token", "a_b")


def test_init_refuses_to_overwrite_an_existing_pin_file(cli):
    """A PIN file left without its token (or written by an earlier version) is never replaced."""
    pin_dir = cli.state_dir / "pins"
    pin_dir.mkdir(parents=True, mode=0o700)
    (pin_dir / "orphan.so-pin").write_text("only-copy-of-a-pin\n")
    error = one_line_error(cli("token", "init", "--label", "orphan", "--generate-pins", check=False))
    assert "orphan.so-pin" in error and "already exists" in error
    assert (pin_dir / "orphan.so-pin").read_text() == "only-copy-of-a-pin\n"
    assert not (pin_dir / "orphan.pin").exists()
    assert "orphan" not in {t["label"] for t in cli.json("token", "list")}


def test_labels_a_token_cannot_hold_are_refused_before_anything_is_made(cli):
    for label in ("", "x" * 33, "é" * 17, "tab\there", "trailing "):
        error = one_line_error(cli("token", "init", "--label", label, "--generate-pins", check=False))
        assert "--label" in error
    assert not (cli.state_dir / "pins").exists() or not list((cli.state_dir / "pins").iterdir())
    assert {t["label"] for t in cli.json("token", "list")} <= {""}


def test_pin_files_of_non_ascii_labels_from_earlier_versions_are_still_found(cli):
    """Earlier versions wrote 'café' as café.pin; that name can only be café's, so it is read."""
    pin_file = cli.state_dir / "pins" / "café.pin"
    cli("token", "init", "--label", "café", env={"PKCS11_LIBRARY_PIN": "1234-cafe", "PKCS11_SO_PIN": "5678"})
    pin_file.parent.mkdir(mode=0o700, exist_ok=True)
    pin_file.write_text("1234-cafe\n")
    pin_file.chmod(0o600)
    cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", "café")
