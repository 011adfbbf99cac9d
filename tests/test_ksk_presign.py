"""The offline-KSK ceremony on a real SoftHSM token: bundles, audit log, SKR export, policy rules."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.rrset
import dns.zone
import pytest

from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle
from conftest import Cli, one_line_error

ZONE = "example.test"
PERIOD = 300
PASSPHRASE = "correct horse battery staple"


@dataclass
class Ceremony:
    """A token with a KSK, a ZSK dir and a passphrase file; `presign` runs the real CLI."""

    cli: Cli
    ksk: dict
    zsk_dir: Path
    out: Path
    passphrase_file: Path
    start: int

    def zsk(self, **times: int | None) -> dict:
        """A software ZSK; times are offsets in seconds from the ceremony start."""
        args = ["keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                "--key-dir", str(self.zsk_dir)]
        for name, offset in times.items():
            if offset is not None:
                args += [f"--{name}", str(self.start + offset)]
        return self.cli.json(*args)

    def rollover_zsks(self) -> tuple[dict, dict]:
        """ZSK 1 signs periods 0-1, ZSK 2 is published in period 1 and signs from period 2."""
        first = self.zsk(publish=-3600, activate=-3600, inactive=2 * PERIOD, delete=3 * PERIOD)
        second = self.zsk(publish=PERIOD, activate=2 * PERIOD)
        return first, second

    def presign(self, *extra: str, periods: int = 3, yes: bool = True, check: bool = True,
                stdin: str | None = None, ksk: str | None = None):
        args = ["ksk", "presign", ZONE, "--ksk", ksk or self.ksk["object_label"],
                "--zsk-dir", str(self.zsk_dir), "--start", str(self.start), "--periods", str(periods),
                "--test-timings", "--passphrase-file", str(self.passphrase_file), "--out", str(self.out),
                *(["--yes"] if yes else []), *extra]
        return self.cli(*args, check=check, stdin=stdin)

    def log_text(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.out.glob("ceremony-*.log")))


@pytest.fixture
def ceremony(token_cli: Cli, tmp_path: Path) -> Ceremony:
    ksk = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    return Ceremony(token_cli, ksk, tmp_path / "zsks", tmp_path / "out", passphrase_file,
                    int(time.time()) - 60)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ceremony_presigns_every_period_with_one_token_signature_each(ceremony):
    first, second = ceremony.rollover_zsks()
    skr = ceremony.out / "example.skr"
    presigned = ceremony.presign("--json", "--skr", str(skr))
    result = json.loads(presigned.stdout)
    # 5-minute bundles would make a stock named 9.20 re-sign in a loop: said, not refused
    assert "warning: the SKR's signatures outlive their period by 300 s" in presigned.stderr
    bundles = [Path(p) for p in result["bundles"]]
    assert result["token_signatures"] == len(bundles) == 3
    assert bundles == bundles_in(ceremony.out)
    unlocker = Unlocker(PASSPHRASE)
    published = [{ceremony.ksk["tag"], first["tag"]},
                 {ceremony.ksk["tag"], first["tag"], second["tag"]},
                 {ceremony.ksk["tag"], first["tag"], second["tag"]}]
    signing = [(first["tag"],), (first["tag"],), (second["tag"],)]
    for index, path in enumerate(bundles):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        bundle = open_bundle(path, unlocker)
        start = ceremony.start + index * PERIOD
        assert (bundle.header.index, bundle.header.period_start, bundle.header.period_end) == \
            (index, start, start + PERIOD)
        assert (bundle.header.inception, bundle.header.expiration) == (start - 3600, start + 2 * PERIOD)
        rrset = dns.rrset.from_text_list(ZONE + ".", 60, "IN", "DNSKEY", [
            line.split(None, 4)[4] for line in bundle.content.dnskey_rrset.splitlines()])
        assert {dns.dnssec.key_id(rdata) for rdata in rrset} == published[index]
        assert bundle.content.signing_tags == signing[index]
        # Only the ZSKs that sign in the period travel, never a KSK.
        assert tuple(z.tag for z in bundle.content.zsks) == signing[index]
        assert all("Engine" not in z.private_text and "Label" not in z.private_text
                   for z in bundle.content.zsks)
        rrsigs = dns.rrset.from_text_list(ZONE + ".", 60, "IN", "RRSIG", [
            line.split(None, 4)[4] for line in bundle.content.rrsigs.splitlines()])
        assert [r.key_tag for r in rrsigs] == [ceremony.ksk["tag"]]
        dns.dnssec.validate(rrset, rrsigs, {rrset.name: rrset}, now=start)
    log = ceremony.log_text()
    for key_file in [ceremony.cli.key_dir / Path(ceremony.ksk["key_file"]).name,
                     *ceremony.zsk_dir.glob("K*")]:
        key_file = key_file.resolve()
        assert f"READ {key_file} bytes={key_file.stat().st_size} sha256={sha256(key_file)}" in log
    for path in [*bundles, skr]:
        assert f"WROTE {path.resolve()} bytes={path.stat().st_size} sha256={sha256(path)}" in log
    serial = ceremony.cli.json("token", "list")[0]["serial"]
    assert f"TOKEN label=bindpkcs11 serial={serial}" in log
    assert "CONFIRM --yes given" in log and "SIGNED 3 on-token signatures for 3 bundles" in log
    for rule in ("NO-VALIDITY-GAP", "OVERLAP-COVERS-DNSKEY-TTL", "MAX-SIGNATURE-VALIDITY",
                 "SIGNING-ZSK-PUBLISHED", "ALGORITHM-ALLOWED", "KEY-SIZE-ALLOWED",
                 "KSK-MATCHES-TOKEN", "ZSK-PREPUBLISHED"):
        assert f"RULE {rule} ok" in log
    assert PASSPHRASE not in log and ceremony.cli.pin() not in log
    check_skr(skr, ceremony.start, ceremony.ksk["tag"])


def test_an_skr_whose_signatures_outlive_bind_920s_refresh_gets_no_warning(ceremony):
    ceremony.zsk(publish=-3600, activate=-3600)
    skr = ceremony.out / "example.skr"
    presigned = ceremony.presign("--skr", str(skr), "--overlap", "6d2h", "--max-validity", "7d",
                                 periods=1)
    assert "warning" not in presigned.stderr and skr.is_file()


def check_skr(skr: Path, start: int, ksk_tag: int) -> None:
    """The SKR export: one header per period and RRsets whose KSK RRSIG validates (public data)."""
    text = skr.read_text()
    headers = re.findall(r"^;; SignedKeyResponse 1\.0 (\d{14}) \(", text, re.M)
    assert len(headers) == 3
    assert text.rstrip().splitlines()[-1].startswith(";; SignedKeyResponse 1.0 generated at ")
    for block in text.split(";; SignedKeyResponse 1.0 ")[1:4]:
        zone = dns.zone.from_text("\n".join(block.splitlines()[1:]), origin=ZONE + ".",
                                  relativize=False, check_origin=False)
        dnskeys = zone.find_rrset(ZONE + ".", "DNSKEY")
        rrsigs = zone.find_rrset(ZONE + ".", "RRSIG", "DNSKEY")
        assert [r.key_tag for r in rrsigs] == [ksk_tag]
        dns.dnssec.validate(dnskeys, rrsigs, {dnskeys.name: dnskeys}, now=start)
    assert "Private" not in text


def test_signing_needs_an_exact_typed_yes(ceremony):
    ceremony.rollover_zsks()
    error = one_line_error(ceremony.presign(yes=False, check=False, stdin="Yes\n"))
    assert "not confirmed" in error and "'Yes'" in error
    assert not bundles_in(ceremony.out)
    assert "CONFIRM operator answered 'Yes'" in ceremony.log_text()
    assert "SIGNED" not in ceremony.log_text()
    result = ceremony.presign(yes=False, stdin="yes\n")
    assert "on-token signatures: 3" in result.stdout
    assert "CONFIRM operator answered 'yes'" in ceremony.log_text()
    error = one_line_error(ceremony.presign(check=False))
    assert "already exists" in error


def test_no_passphrase_and_no_terminal_is_one_clear_line(ceremony):
    ceremony.rollover_zsks()
    ceremony.passphrase_file = ceremony.passphrase_file.with_name("missing")
    error = one_line_error(ceremony.presign(check=False))
    assert "cannot read passphrase file" in error
    args = ["ksk", "presign", ZONE, "--ksk", ceremony.ksk["object_label"], "--zsk-dir",
            str(ceremony.zsk_dir), "--start", str(ceremony.start), "--periods", "3",
            "--test-timings", "--out", str(ceremony.out), "--yes"]
    error = one_line_error(ceremony.cli(*args, check=False))
    assert "no bundle passphrase" in error and "--passphrase-file" in error
    short = ceremony.cli(*args, check=False, env={"BINDPKCS11_PASSPHRASE": "short"})
    assert "at least 8 characters" in one_line_error(short)
    assert not bundles_in(ceremony.out)


def _gap(c: Ceremony):
    c.rollover_zsks()
    return ["--period", "2h", "--validity", "30mi"]


def _overlap(c: Ceremony):
    c.rollover_zsks()
    return ["--overlap", "30"]


def _max_validity(c: Ceremony):
    c.rollover_zsks()
    return ["--max-validity", "30mi"]


def _no_active_zsk(c: Ceremony):
    c.zsk(publish=-3600, activate=86400)
    return []


def _signer_unpublished(c: Ceremony):
    c.zsk(publish=-3600, activate=-3600, delete=PERIOD)
    return []


def _not_prepublished(c: Ceremony):
    c.zsk(publish=-3600, activate=-3600, inactive=2 * PERIOD, delete=3 * PERIOD)
    c.zsk(publish=2 * PERIOD, activate=2 * PERIOD)
    return []


def _removed_early(c: Ceremony):
    c.zsk(publish=-3600, activate=-3600, inactive=2 * PERIOD, delete=2 * PERIOD)
    c.zsk(publish=PERIOD, activate=2 * PERIOD)
    return []


def _algorithm(c: Ceremony):
    c.rollover_zsks()
    return ["--algorithms", "RSASHA256,ED25519"]


def _token_zsk(c: Ceremony):
    c.cli("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--key-dir", str(c.zsk_dir))
    return []


def _software_ksk(c: Ceremony):
    c.rollover_zsks()
    soft = c.cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--software",
                      "--key-dir", str(c.zsk_dir.parent / "softksk"))
    return ["--ksk", soft["key_file"]]


def _other_public_key(c: Ceremony):
    """The KSK file keeps its Label but carries another token key's DNSKEY (a swapped file)."""
    c.rollover_zsks()
    other = c.cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    mine = c.cli.key_dir / Path(c.ksk["key_file"]).name
    theirs = c.cli.key_dir / Path(other["key_file"]).name
    forged = c.zsk_dir.parent / "forged" / theirs.name
    forged.parent.mkdir()
    forged.write_text(theirs.read_text())
    forged.with_suffix(".private").write_text(mine.with_suffix(".private").read_text())
    return ["--ksk", str(forged)]


RULE_CASES = {
    "NO-VALIDITY-GAP": _gap,
    "OVERLAP-COVERS-DNSKEY-TTL": _overlap,
    "MAX-SIGNATURE-VALIDITY": _max_validity,
    "ZSK-SIGNS-EVERY-PERIOD": _no_active_zsk,
    "SIGNING-ZSK-PUBLISHED": _signer_unpublished,
    "ZSK-PREPUBLISHED": _not_prepublished,
    "ZSK-POSTPUBLISHED": _removed_early,
    "ALGORITHM-ALLOWED": _algorithm,
    "ZSK-IS-SOFTWARE": _token_zsk,
    "KSK-ON-TOKEN": _software_ksk,
    "KSK-MATCHES-TOKEN": _other_public_key,
}


@pytest.mark.parametrize("rule", RULE_CASES)
def test_each_policy_rule_stops_the_ceremony_before_anything_is_signed(ceremony, rule):
    extra = RULE_CASES[rule](ceremony)
    ksk = None
    if "--ksk" in extra:
        ksk = extra[extra.index("--ksk") + 1]
        extra = extra[:extra.index("--ksk")] + extra[extra.index("--ksk") + 2:]
    error = one_line_error(ceremony.presign(*extra, check=False, ksk=ksk))
    assert f"policy {rule} violated" in error
    assert not bundles_in(ceremony.out)
    log = ceremony.log_text()
    assert "ABORT" in log and "SIGNED" not in log


def test_rsa_key_sizes_are_checked(token_cli, tmp_path):
    ksk = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256")
    token_cli("keygen", ZONE, "--role", "zsk", "--algorithm", "RSASHA256", "--bits", "1024",
              "--software", "--key-dir", str(tmp_path / "zsks"), "--publish", "now-1h",
              "--activate", "now-1h")
    (tmp_path / "pass").write_text(PASSPHRASE)
    (tmp_path / "pass").chmod(0o600)
    result = token_cli("ksk", "presign", ZONE, "--ksk", ksk["key_file"], "--zsk-dir",
                       str(tmp_path / "zsks"), "--start", "now", "--periods", "2", "--test-timings",
                       "--passphrase-file", str(tmp_path / "pass"), "--out", str(tmp_path / "out"),
                       "--yes", check=False)
    error = one_line_error(result)
    assert "policy KEY-SIZE-ALLOWED violated" in error and "RSA-1024" in error
    result = token_cli("ksk", "presign", ZONE, "--ksk", ksk["key_file"], "--zsk-dir",
                       str(tmp_path / "zsks"), "--start", "now", "--periods", "2", "--test-timings",
                       "--passphrase-file", str(tmp_path / "pass"), "--out", str(tmp_path / "out"),
                       "--min-rsa-bits", "1024", "--yes", "--json")
    assert json.loads(result.stdout)["token_signatures"] == 2
