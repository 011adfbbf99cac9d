"""The full custody ceremony of issue 10 on two real SoftHSM tokens, driven through the CLI.

3 KEK shares (threshold 2), 2 imported into token A and 2 into token B, a KSK made on A with
--backup, wrapped, unwrapped into B; token A then removed entirely, and `ksk presign` with the copy
on B makes bundles that `signer run` publishes as a zone that validates with A's original
DNSKEY (the DS computed when A made the key).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.zone

from bindpkcs11.dnssec.bundles import bundles_in
from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import Cli
from test_signer_offline_ksk import dnssec_verify, validate_signed_zone

ZONE = "example.test"
PASSPHRASE = "bundle passphrase 1"  # noqa: S105


def password_files(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for index in range(1, count + 1):
        path = tmp_path / f"pw{index}"
        path.write_text(f"share password {index}\n")
        path.chmod(0o600)
        paths.append(path)
    return paths


def make_shares(cli: Cli, tmp_path: Path, out: str = "shares", count: int = 3, threshold: int = 2):
    pws = password_files(tmp_path, count)
    args = ["backup", "make-shares", "--shares", str(count), "--threshold", str(threshold),
            "--out", str(tmp_path / out)]
    for path in pws:
        args += ["--password-file", str(path)]
    result = cli.json(*args)
    return [Path(f["path"]) for f in result["files"]], pws, result["kcv"]


def import_share(cli: Cli, share: Path, pw: Path, token: str, check: bool = True):
    return cli("backup", "import-share", str(share), "--token", token, "--password-file", str(pw),
               check=check)


def remove_token(cli: Cli, label: str) -> None:
    """The token is lost: its SoftHSM directory is deleted."""
    tokendir = cli.state_dir / "softhsm" / "tokens"
    for directory in tokendir.iterdir():
        if label.encode().ljust(32) in (directory / "token.object").read_bytes():
            shutil.rmtree(directory)
            return
    raise AssertionError(f"no token directory for {label}")


def test_full_ceremony_shares_kek_wrap_unwrap_then_presign_from_the_copy(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    cli("token", "init", "--label", "B", "--generate-pins")
    shares, pws, kcv = make_shares(cli, tmp_path)
    assert len(shares) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in shares)
    first = import_share(cli, shares[0], pws[0], "A")
    assert "1 of 2" in first.stdout
    pending = list((cli.state_dir / "backup").glob("pending-shares-*.json"))
    assert len(pending) == 1 and pending[0].stat().st_mode & 0o777 == 0o600
    assert "created on token 'A'" in import_share(cli, shares[1], pws[1], "A").stdout
    assert not list((cli.state_dir / "backup").glob("pending-shares-*.json"))
    import_share(cli, shares[2], pws[2], "B")
    assert "created on token 'B'" in import_share(cli, shares[0], pws[0], "B").stdout

    ksk = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--token", "A", "--backup")
    original_ds = ksk["ds"]
    wrap = tmp_path / "ksk.wrap"
    cli("backup", "wrap", "--token", "A", "--object", ksk["object_label"], "--out", str(wrap))
    assert "intact" in cli("backup", "verify", str(wrap)).stdout
    copy = cli.json("backup", "unwrap", str(wrap), "--token", "B")
    assert copy["tag"] == ksk["tag"]
    shown = cli("token", "show", "--label", "B").stdout
    assert "3 copies (token A, token B, wrap file ksk.wrap), backed up" in shown

    remove_token(cli, "A")
    present = [token["label"] for token in cli.json("token", "list")]
    assert "A" not in present and "B" in present
    zsks = tmp_path / "zsks"
    cli("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software", "--key-dir", str(zsks),
        "--publish", "now-1h", "--activate", "now-1h")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    out = tmp_path / "bundles"
    cli("ksk", "presign", ZONE, "--token", "B", "--ksk", copy["key_file"], "--zsk-dir", str(zsks),
        "--start", str(int(time.time()) - 60), "--periods", "2", "--test-timings",
        "--passphrase-file", str(passphrase), "--out", str(out), "--yes")
    assert len(bundles_in(out)) == 2
    signed = tmp_path / "example.test.signed"
    unsigned = tmp_path / "example.test.db"
    unsigned.write_text(sample_zone_text(dns.name.from_text(ZONE), hosts=5))
    now = int(time.time())
    cli("signer", "run", ZONE, "--unsigned", str(unsigned), "--bundles", str(out), "--out",
        str(signed), "--once", "--now", str(now), "--test-timings",
        "--passphrase-file", str(passphrase))
    validate_signed_zone(signed, now, ksk["tag"])
    dnssec_verify(signed)
    zone = dns.zone.from_file(str(signed), origin=ZONE + ".", relativize=False)
    ksks = [rd for rd in zone.get_rdataset(ZONE + ".", "DNSKEY") if rd.flags == 257]
    assert len(ksks) == 1
    ds = dns.dnssec.make_ds(ZONE + ".", ksks[0], "SHA256")
    assert original_ds.endswith(ds.digest.hex().upper())
    log = (cli.state_dir / "backup" / "ceremony.log").read_text()
    for event in ("make-shares", "import-share", "wrap token=A", "unwrap", "PROOF", "WROTE"):
        assert event in log
