"""Bad input to the custody ceremonies: one clear line each, nothing left behind on any token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TRUST_MODULE, Cli, one_line_error
from test_backup_ceremony import import_share, make_shares

ZONE = "example.test"


def objects(cli: Cli, label: str) -> list[tuple[str, str]]:
    report = cli.json("token", "show", "--label", label)
    return sorted((o["object"]["object_class"], o["object"]["label"]) for o in report["objects"])


@pytest.fixture
def two_tokens(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    cli("token", "init", "--label", "B", "--generate-pins")
    return cli


@pytest.fixture
def wrapped(two_tokens: Cli, tmp_path: Path):
    """KEK on A and B, a --backup KSK on A, wrapped to ksk.wrap."""
    cli = two_tokens
    shares, pws, kcv = make_shares(cli, tmp_path)
    for token in ("A", "B"):
        import_share(cli, shares[0], pws[0], token)
        import_share(cli, shares[1], pws[1], token)
    ksk = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--token", "A", "--backup")
    wrap = tmp_path / "ksk.wrap"
    cli("backup", "wrap", "--token", "A", "--object", ksk["object_label"], "--out", str(wrap))
    return cli, wrap, ksk, shares, pws


def test_wrong_share_password_imports_nothing(two_tokens: Cli, tmp_path: Path):
    shares, pws, _ = make_shares(two_tokens, tmp_path)
    result = import_share(two_tokens, shares[0], pws[1], "A", check=False)
    assert "wrong password for share" in one_line_error(result)
    assert not list((two_tokens.state_dir / "backup").glob("pending-shares-*"))
    assert objects(two_tokens, "A") == []


def test_share_of_another_kek_is_refused(two_tokens: Cli, tmp_path: Path):
    shares, pws, _ = make_shares(two_tokens, tmp_path)
    other, other_pws, _ = make_shares(two_tokens, tmp_path, out="other")
    import_share(two_tokens, shares[0], pws[0], "A")
    error = one_line_error(import_share(two_tokens, other[1], other_pws[1], "A", check=False))
    assert "belongs to KEK" in error and "import shares of one KEK only" in error
    assert objects(two_tokens, "A") == []


def test_one_of_two_shares_makes_no_kek_and_wrap_says_so(two_tokens: Cli, tmp_path: Path):
    shares, pws, _ = make_shares(two_tokens, tmp_path)
    assert "1 of 2" in import_share(two_tokens, shares[0], pws[0], "A").stdout
    assert objects(two_tokens, "A") == []
    result = two_tokens("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--token", "A",
                        "--backup", check=False)
    assert "holds no KEK" in one_line_error(result)
    assert objects(two_tokens, "A") == []


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_wrap_file_is_refused_and_nothing_unwrapped(wrapped, tmp_path: Path, damage: str):
    cli, wrap, ksk, _, _ = wrapped
    data = wrap.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        fields = json.loads(data)
        blob = bytearray(fields["wrapped"].encode())
        blob[10] = ord("A") if blob[10] != ord("A") else ord("B")
        fields["wrapped"] = blob.decode()
        data = json.dumps(fields).encode()
    bad = tmp_path / f"{damage}.wrap"
    bad.write_bytes(data)
    before = objects(cli, "B")
    for args in (("backup", "verify", str(bad)), ("backup", "unwrap", str(bad), "--token", "B")):
        error = one_line_error(cli(*args, check=False))
        assert ("damaged or truncated" in error) if damage == "truncate" else ("SHA-256" in error)
    assert objects(cli, "B") == before


def test_tampered_wrapped_bytes_with_fixed_digest_fail_on_unwrap_and_leave_nothing(wrapped, tmp_path):
    """A wrap file whose digest was recomputed still fails AES key wrap's integrity check."""
    import hashlib

    cli, wrap, ksk, _, _ = wrapped
    fields = json.loads(wrap.read_bytes())
    fields.pop("sha256")
    blob = bytearray(fields["wrapped"].encode())
    blob[12] = ord("A") if blob[12] != ord("A") else ord("B")
    fields["wrapped"] = blob.decode()
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    fields["sha256"] = hashlib.sha256(canonical).hexdigest()
    bad = tmp_path / "forged.wrap"
    bad.write_text(json.dumps(fields))
    before = objects(cli, "B")
    error = one_line_error(cli("backup", "unwrap", str(bad), "--token", "B", check=False))
    assert "refused to unwrap" in error and "nothing was stored" in error
    assert objects(cli, "B") == before


def test_kek_mismatch_is_refused(wrapped, tmp_path: Path):
    cli, wrap, _, _, _ = wrapped
    cli("token", "init", "--label", "C", "--generate-pins")
    other, other_pws, other_kcv = make_shares(cli, tmp_path, out="other")
    import_share(cli, other[0], other_pws[0], "C")
    import_share(cli, other[1], other_pws[1], "C")
    error = one_line_error(cli("backup", "unwrap", str(wrap), "--token", "C", check=False))
    assert "was wrapped under KEK" in error and f"holds KEK {other_kcv}" in error
    assert [c for c, _ in objects(cli, "C")] == ["secret-key"]


def test_non_wrappable_key_is_refused(wrapped, tmp_path: Path):
    cli, _, _, _, _ = wrapped
    plain = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--token", "A")
    out = tmp_path / "plain.wrap"
    error = one_line_error(cli("backup", "wrap", "--token", "A", "--object", plain["object_label"],
                               "--out", str(out), check=False))
    assert "cannot be wrapped" in error and "keygen --backup" in error
    assert not out.exists()


def test_token_without_c_wrapkey_says_so(two_tokens: Cli, tmp_path: Path):
    shares, pws, _ = make_shares(two_tokens, tmp_path)
    result = two_tokens("backup", "import-share", str(shares[0]), "--module", TRUST_MODULE,
                        "--token", "System Trust", "--password-file", str(pws[0]), check=False)
    error = one_line_error(result)
    assert "cannot wrap keys" in error and "key import" in error
    assert not list((two_tokens.state_dir / "backup").glob("pending-shares-*"))


def test_ksk_without_backup_warns_once_unless_no_backup(token_cli: Cli):
    result = token_cli("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    assert result.stderr.count("is the only copy of this key") == 1
    quiet = token_cli("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--no-backup")
    assert "only copy" not in quiet.stderr
    zsk = token_cli("keygen", ZONE, "--role", "zsk", "--algorithm", "13")
    assert "only copy" not in zsk.stderr
    shown = token_cli("token", "show", "--label", "bindpkcs11").stdout
    assert "1 copy (token bindpkcs11), ONLY COPY" in shown


def test_backup_key_of_an_algorithm_the_token_cannot_wrap_is_refused_and_removed(wrapped):
    """SoftHSM 2.6.1 cannot wrap Ed25519: keygen --backup says so instead of making a key that
    could never be backed up."""
    cli, _, _, _, _ = wrapped
    before = objects(cli, "A")
    result = cli("keygen", ZONE, "--role", "ksk", "--algorithm", "ED25519", "--token", "A",
                 "--backup", check=False)
    error = one_line_error(result)
    assert "cannot wrap ED25519 keys" in error and "key import" in error
    assert objects(cli, "A") == before
    assert not list(cli.key_dir.glob("*+015+*"))


def test_same_share_twice_and_a_damaged_share_are_refused(two_tokens: Cli, tmp_path: Path):
    shares, pws, _ = make_shares(two_tokens, tmp_path)
    import_share(two_tokens, shares[0], pws[0], "A")
    error = one_line_error(import_share(two_tokens, shares[0], pws[0], "A", check=False))
    assert "already imported" in error and "different share" in error
    damaged = tmp_path / "damaged.share"
    data = bytearray(shares[1].read_bytes())
    data[-5] = ord("0") if data[-5] != ord("0") else ord("1")
    damaged.write_bytes(bytes(data))
    error = one_line_error(import_share(two_tokens, damaged, pws[1], "A", check=False))
    assert "modified or is damaged" in error
    truncated = tmp_path / "truncated.share"
    truncated.write_bytes(shares[1].read_bytes()[:40])
    error = one_line_error(import_share(two_tokens, truncated, pws[1], "A", check=False))
    assert "damaged or truncated" in error
    assert objects(two_tokens, "A") == []


def test_make_shares_never_overwrites_shares(two_tokens: Cli, tmp_path: Path):
    shares, _, _ = make_shares(two_tokens, tmp_path)
    before = [path.read_bytes() for path in shares]
    args = ["backup", "make-shares", "--shares", "3", "--threshold", "2", "--out",
            str(tmp_path / "shares")] + sum((["--password-file", str(tmp_path / f"pw{i}")]
                                             for i in (1, 2, 3)), [])
    assert "already exists" in one_line_error(two_tokens(*args, check=False))
    assert [path.read_bytes() for path in shares] == before
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    result = two_tokens("backup", "make-shares", "--shares", "2", "--out", str(tmp_path / "new"),
                        "--password-file", str(short), "--password-file", str(short), check=False)
    assert "at least 8 characters" in one_line_error(result)
    assert not (tmp_path / "new").exists()
