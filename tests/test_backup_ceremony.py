"""The full custody ceremony of issue 10 on two real SoftHSM tokens, driven through the CLI.

3 KEK shares (threshold 2), 2 imported into token A and 2 into token B, a KSK made on A with
--backup, wrapped, unwrapped into B; token A then removed entirely, and `ksk presign` with the copy
on B makes bundles whose KSK is A's original DNSKEY (same DS).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rrset

from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle
from conftest import Cli

ZONE = "example.test"
PASSPHRASE = "bundle passphrase 1"


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
        if label.encode() in (directory / "token.object").read_bytes():
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
    assert "'A'" not in cli("token", "list").stdout
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
    paths = bundles_in(out)
    assert len(paths) == 2
    bundle = open_bundle(paths[0], Unlocker(PASSPHRASE))
    lines = [line for line in bundle.content.dnskey_rrset.splitlines() if line.strip()]
    rrset = dns.rrset.from_text(*lines[0].split(maxsplit=4)[:1], 60, "IN", "DNSKEY",
                                *[line.split(maxsplit=4)[4] for line in lines])
    ksks = [rd for rd in rrset if rd.flags == 257]
    ds = dns.dnssec.make_ds(ZONE + ".", ksks[0], "SHA256")
    assert ds.digest.hex().upper() in original_ds
    sigs = dns.rrset.from_text(*bundle.content.rrsigs.split(maxsplit=4)[:1], 60, "IN", "RRSIG",
                               *[line.split(maxsplit=4)[4] for line in
                                 bundle.content.rrsigs.splitlines() if line.strip()])
    dns.dnssec.validate(rrset, sigs, {dns.name.from_text(ZONE + "."): rrset},
                        now=bundle.header.inception + 1)
    log = (cli.state_dir / "backup" / "ceremony.log").read_text()
    for event in ("make-shares", "import-share", "wrap token=A", "unwrap", "PROOF", "WROTE"):
        assert event in log
