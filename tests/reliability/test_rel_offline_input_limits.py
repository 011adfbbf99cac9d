"""Issue 8, bad-input bullets, for `signer run` and `ksk presign`: inputs an operator names are read
with limits (a FIFO, /dev/zero or a huge file is one clear line, not a hang or a memory blow-up),
and messages name the operator's file, never a temporary copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bindpkcs11.dnssec.bundles import bundles_in
from conftest import one_line_error
import test_ksk_presign
from test_ksk_presign import Ceremony
import test_signer_offline_ksk
from test_signer_offline_ksk import Online

TIMEOUT = 60  # a read that blocks or runs away fails the test instead of hanging it
HUGE_BYTES = 4 << 30  # above the signer's limit for an unsigned zone

ceremony = test_ksk_presign.ceremony  # the fixture, reused
offline = test_signer_offline_ksk.offline  # the fixture, reused
online = test_signer_offline_ksk.online  # the fixture, reused


def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def huge(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.truncate(HUGE_BYTES)  # sparse: costs no disk


UNSIGNED = {"fifo": (fifo, "is a FIFO"), "dev-zero": (dev_zero, "is a character device"),
            "huge": (huge, f"is {HUGE_BYTES} bytes, more than")}


@pytest.mark.parametrize("kind", UNSIGNED)
def test_unsigned_zone_that_is_not_a_plain_file_is_refused(online: Online, kind: str):
    offline = online.offline
    make, expected = UNSIGNED[kind]
    make(online.unsigned)
    result = online.cli(*run_args(online, offline.at(0)), check=False, timeout=TIMEOUT)
    error = one_line_error(result)
    assert str(online.unsigned) in error and expected in error, error
    assert not online.out.exists()


def run_args(online: Online, now: int) -> list[str]:
    return ["signer", "run", "example.test", "--unsigned", str(online.unsigned), "--bundles",
            str(online.bundle_dir), "--out", str(online.out), "--once", "--now", str(now),
            "--test-timings", "--passphrase-file", str(online.offline.passphrase_file)]


def test_signer_refuses_a_fifo_bundle_and_a_fifo_out(online: Online, tmp_path):
    offline = online.offline
    bundle = online.bundle_dir / "example.test.29990101000000.bundle"
    os.mkfifo(bundle)
    error = one_line_error(online.cli(*run_args(online, offline.at(0)), check=False, timeout=TIMEOUT))
    assert bundle.name in error and "is a FIFO" in error
    bundle.unlink()
    os.mkfifo(online.out)
    error = one_line_error(online.cli(*run_args(online, offline.at(0)), check=False, timeout=TIMEOUT))
    assert str(online.out) in error and "not a regular file" in error


def test_signer_errors_name_the_operators_zone_file(online: Online):
    offline = online.offline
    online.unsigned.write_text(online.unsigned.read_text() + "broken IN A 999.1.1.1\n")
    error = one_line_error(online.run(offline.at(0)))
    assert f"{online.unsigned}:" in error and "bad dotted quad" in error
    assert "unsigned.in" not in error and "signer-work" not in error


def test_presign_reads_key_files_with_limits_and_names_them(ceremony: Ceremony, tmp_path):
    first, _ = ceremony.rollover_zsks()
    zsk = ceremony.zsk_dir / Path(first["key_file"]).name
    original = zsk.read_text()
    zsk.write_text("; not a key\nexample.test. IN DNSKEY 256 3 13 !!!\n")
    error = one_line_error(ceremony.presign(check=False))
    assert str(zsk) in error and "not a DNSKEY line" in error
    assert "bindpkcs11-ceremony-" not in error
    zsk.write_text(original)
    private = zsk.with_suffix(".private")
    saved = private.read_bytes()
    for make, expected in ((fifo, "is a FIFO"), (dev_zero, "is a character device")):
        make(private)
        error = one_line_error(ceremony.presign(check=False))
        assert str(private) in error and expected in error, error
    private.unlink()
    private.write_bytes(saved)
    private.chmod(0o600)
    ksk = ceremony.cli.key_dir / Path(ceremony.ksk["key_file"]).name
    moved = tmp_path / "ksk" / ksk.name
    moved.parent.mkdir()
    shutil.copy(ksk, moved)
    fifo(moved.with_suffix(".private"))
    error = one_line_error(ceremony.presign(check=False, ksk=str(moved)))
    assert str(moved.with_suffix(".private")) in error and "is a FIFO" in error
    assert not bundles_in(ceremony.out)
    log = tmp_path / "ceremony.fifo"
    os.mkfifo(log)
    error = one_line_error(ceremony.presign("--log", str(log), check=False))
    assert str(log) in error and "not a regular file" in error
    assert not bundles_in(ceremony.out)


def test_presign_checks_its_outputs_before_the_token_signs(ceremony: Ceremony, tmp_path):
    ceremony.rollover_zsks()
    log = tmp_path / "ceremony.log"
    missing = tmp_path / "missing" / "example.skr"
    error = one_line_error(ceremony.presign("--log", str(log), "--skr", str(missing), check=False))
    assert str(missing) in error and "does not exist" in error
    ceremony.out.parent.mkdir(parents=True, exist_ok=True)
    ceremony.out.write_text("a file, not a directory\n")
    error = one_line_error(ceremony.presign("--log", str(log), check=False))
    assert str(ceremony.out) in error and "not a directory" in error
    assert "SIGNED" not in log.read_text()


def test_signer_expands_includes_beside_the_zone_and_refuses_others(online: Online):
    """Before: named-compilezone ran as root on the operator's zone and followed any $INCLUDE
    (an include of /etc/passwd was read; a FIFO include hung it); edits to an included file
    were not seen as a change of the zone."""
    offline = online.offline
    included = online.unsigned.parent / "hosts.inc"
    included.write_text("included IN A 127.0.0.13\n")
    base = online.unsigned.read_text()
    online.unsigned.write_text(base + "$INCLUDE hosts.inc\n")
    online.publish(offline.at(0))
    assert "included.example.test." in online.out.read_text()
    included.write_text("included IN A 127.0.0.14\n")
    online.publish(offline.at(0) + 1)
    assert "127.0.0.14" in online.out.read_text()
    published = online.out.read_bytes()
    online.unsigned.write_text(base + "$INCLUDE /etc/passwd\n")
    error = one_line_error(online.run(offline.at(0) + 2))
    assert "outside the zone file's directory" in error and "root:" not in error
    assert online.out.read_bytes() == published


def test_a_state_file_that_is_not_a_record_means_resign(online: Online):
    """Before: a state file holding `[1]` made every round fail with "unexpected error"."""
    offline = online.offline
    online.publish(offline.at(0))
    state = online.out.with_name(online.out.name + ".signer.json")
    state.write_text("[1]\n")
    online.publish(offline.at(0) + 1)
    assert isinstance(__import__("json").loads(state.read_text()), dict)
