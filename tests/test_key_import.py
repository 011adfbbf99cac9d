"""`key import`: an offline software KSK into two SoftHSM tokens, each copy proven; presign from
either token gives the same DNSKEY RRset."""

from __future__ import annotations

import time
from pathlib import Path

from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle
from conftest import Cli, one_line_error

ZONE = "example.test"
PASSPHRASE = "bundle passphrase 1"


def software_ksk(cli: Cli, tmp_path: Path) -> Path:
    cli("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--software", "--key-dir",
        str(tmp_path / "offline"))
    return next((tmp_path / "offline").glob("*.private"))


def labels(cli: Cli, token: str) -> list[str]:
    return sorted(o["object"]["label"] for o in cli.json("token", "show", "--label", token)["objects"])


def presign(cli: Cli, tmp_path: Path, token: str, key_file: str, out: str) -> list:
    zsks = tmp_path / "zsks"
    if not zsks.exists():
        cli("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software", "--key-dir",
            str(zsks), "--publish", "now-1h", "--activate", "now-1h")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    cli("ksk", "presign", ZONE, "--token", token, "--ksk", key_file, "--zsk-dir", str(zsks),
        "--start", str(int(time.time()) // 60 * 60 - 60), "--periods", "1", "--test-timings",
        "--passphrase-file", str(passphrase), "--out", str(tmp_path / out), "--yes")
    return [open_bundle(path, Unlocker(PASSPHRASE)) for path in bundles_in(tmp_path / out)]


def test_import_into_two_tokens_then_presign_from_either(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    cli("token", "init", "--label", "B", "--generate-pins")
    private = software_ksk(cli, tmp_path)
    result = cli.json("key", "import", str(private), "--token", "A", "--token", "B",
                      "--destroy-source", stdin="destroy\n")
    assert result["tokens"] == ["A", "B"] and result["source_destroyed"]
    assert not private.exists()
    label = result["label"]
    assert labels(cli, "A") == [label, label] and labels(cli, "B") == [label, label]
    show = cli.json("token", "show", "--label", "A")
    private_obj = next(o for o in show["objects"] if o["object"]["object_class"] == "private")
    assert private_obj["object"]["sensitive"] and not private_obj["object"]["extractable"]
    assert "2 copies (token A, token B), backed up" in private_obj["dnssec"]["custody"]
    key_a, key_b = [k for k in result["key_files"] if k.endswith(".key")]
    from_a = presign(cli, tmp_path, "A", key_a, "from-a")
    from_b = presign(cli, tmp_path, "B", key_b, "from-b")
    assert from_a[0].content.dnskey_rrset == from_b[0].content.dnskey_rrset
    log = (cli.state_dir / "backup" / "ceremony.log").read_text()
    assert "PROOF token=A" in log and "PROOF token=B" in log and "DESTROYED" in log
    assert "operator answered 'destroy'" in log


def test_source_kept_without_destroy_source(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    private = software_ksk(cli, tmp_path)
    before = private.read_bytes()
    result = cli("key", "import", str(private), "--token", "A")
    assert "still at" in result.stdout and "--destroy-source" in result.stdout
    assert private.read_bytes() == before


def test_import_in_place_rewrites_the_key_files_and_keeps_the_software_key_aside(token_cli: Cli):
    """A software key in the key dir itself: its files now name the token, the software private
    key waits in `.private.software` until --destroy-source."""
    token_cli("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--software")
    private = next(token_cli.key_dir.glob("*.private"))
    software = private.read_bytes()
    token_cli("key", "import", str(private), "--token", "bindpkcs11")
    assert b"Label:" in private.read_bytes() and b"PrivateKey:" not in private.read_bytes()
    aside = private.with_suffix(".private.software")
    assert aside.read_bytes() == software and aside.stat().st_mode & 0o777 == 0o600
    assert not list(token_cli.key_dir.glob("*.key.software"))
    shown = token_cli("token", "show", "--label", "bindpkcs11").stdout
    assert "1 copy (token bindpkcs11), ONLY COPY" in shown


def test_destroy_source_needs_the_typed_word(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    private = software_ksk(cli, tmp_path)
    result = cli("key", "import", str(private), "--token", "A", "--destroy-source", stdin="yes\n")
    assert "still at" in result.stdout and private.exists()
    log = (cli.state_dir / "backup" / "ceremony.log").read_text()
    assert "operator answered 'yes'" in log and "DESTROYED" not in log


def test_failure_on_second_token_leaves_nothing_on_the_first(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    private = software_ksk(cli, tmp_path)
    result = cli("key", "import", str(private), "--token", "A", "--token", "missing",
                 "--destroy-source", check=False)
    assert "token 'missing' not found" in one_line_error(result)
    assert labels(cli, "A") == []
    assert private.exists()
    assert not list(cli.key_dir.glob("*.key"))


def test_token_key_file_is_refused(token_cli: Cli, tmp_path: Path):
    ksk = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--no-backup")
    error = one_line_error(token_cli("key", "import", ksk["private_file"], "--token", "bindpkcs11",
                                     check=False))
    assert "only software keys can be imported" in error
