"""Issue 8 item 10: a signer killed mid-round leaves no decrypted ZSK behind.

The round's ZSK private keys live in <state>/signer-work/<pid>-<start>-<random> (0700), never in
/tmp. SIGTERM (what systemd sends) unwinds through the round's finally blocks in --once and in
loop mode; after SIGKILL, the next signer start sweeps the dead owner's directory. The zone is
big enough (10,000 hosts, about 2 s of signing) that the test catches the round with the keys on
disk by polling for them, then sends the signal.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import REPO
import test_signer_offline_ksk
from test_signer_offline_ksk import (DEADLINE, ORIGIN, ZONE, Online, poll_until,
                                     validate_signed_zone)

BIG_ZONE_HOSTS = 10_000

offline = test_signer_offline_ksk.offline  # the fixture, reused
online = test_signer_offline_ksk.online  # the fixture, reused


def start_signer(online: Online, log: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "bindpkcs11", "--state-dir", str(online.cli.state_dir), "signer",
               "run", ZONE, "--unsigned", str(online.unsigned), "--bundles", str(online.bundle_dir),
               "--out", str(online.out), "--passphrase-file", str(online.offline.passphrase_file),
               "--now", str(online.offline.at(0)), "--test-timings", *extra]
    with open(log, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**online.cli.env, "TMPDIR": str(online.scratch)})


def work_root(online: Online) -> Path:
    return online.cli.state_dir / "signer-work"


def decrypted_keys(online: Online) -> list[Path]:
    root = work_root(online)
    return sorted(root.glob("*/keys/*.private")) if root.is_dir() else []


def catch_mid_round(online: Online, process: subprocess.Popen, log: Path) -> list[Path]:
    """Poll until the round has written the decrypted ZSKs (the signer still busy signing)."""
    poll_until(lambda: decrypted_keys(online) or process.poll() is not None, deadline=60)
    keys = decrypted_keys(online)
    assert keys and process.poll() is None, log.read_text()
    work = keys[0].parent.parent
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert stat.S_IMODE(work_root(online).stat().st_mode) == 0o700
    assert work.name.startswith(f"{process.pid}-")
    return keys


def assert_no_key_material_left(online: Online) -> None:
    assert not decrypted_keys(online)
    assert not list(work_root(online).iterdir())
    assert not list(online.scratch.iterdir()), "the signer wrote to $TMPDIR"


@pytest.fixture
def big_online(online: Online) -> Online:
    online.unsigned.write_text(sample_zone_text(ORIGIN, hosts=BIG_ZONE_HOSTS))
    return online


@pytest.mark.parametrize("mode", ["once", "loop"])
def test_sigterm_mid_round_removes_the_decrypted_zsks(big_online, tmp_path, mode):
    online = big_online
    log = tmp_path / "signer.log"
    extra = ["--once"] if mode == "once" else ["--interval", "3600"]
    process = start_signer(online, log, *extra)
    try:
        catch_mid_round(online, process, log)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert "Traceback" not in output, output
    if mode == "once":
        assert process.returncode == 143, output
        assert "Stopped by SIGTERM" in output and output.count("bindpkcs11: error:") == 1, output
    else:
        assert process.returncode == 0, output
    assert not online.out.exists(), "a round cut short must not publish"
    assert_no_key_material_left(online)


def test_sigkill_mid_round_leaves_keys_that_the_next_start_sweeps(big_online, tmp_path):
    online = big_online
    log = tmp_path / "signer.log"
    process = start_signer(online, log, "--once")
    try:
        keys = catch_mid_round(online, process, log)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert all(key.exists() for key in keys)  # SIGKILL cannot be caught: the keys are still there
    live = work_root(online) / f"{os.getpid()}-0-live"  # a live owner's dir is kept
    live.mkdir(mode=0o700)
    result = online.publish(online.offline.at(0))
    assert result["published"]
    assert not decrypted_keys(online) and [p.name for p in work_root(online).iterdir()] == [live.name]
    validate_signed_zone(online.out, online.offline.at(0), online.offline.ksk_tag)
