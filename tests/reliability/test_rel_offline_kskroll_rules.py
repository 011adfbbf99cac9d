"""Bad schedules and bad steps of an offline-KSK rollover are refused with the rule named, in one
line, before the token signs anything, and nothing is written or changed.

The schedules below start from a real `rollover ksk --ksk-dir` (successor on a SoftHSM token) and
are then edited by hand (keytiming.set_times, as an operator with dnssec-settime would), so that
each ceremony rule of dnssec/kskpolicy.py meets the schedule it exists to refuse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bindpkcs11.dnssec import keytiming
from bindpkcs11.dnssec.bundles import bundles_in
from bindpkcs11.dnssec.keyfile import KeyPairFiles, read_key_pair
from conftest import Cli, clean_env, one_line_error
from test_rollover_offline_ksk import offline_zone
from test_signer_offline_ksk import PASSPHRASE, PERIOD, ZONE


@dataclass
class Roll:
    """A zone after step 1 of an offline KSK rollover at start + PERIOD."""

    cli: Cli
    start: int
    old: KeyPairFiles
    new: KeyPairFiles
    labels: list[str]
    zsks: Path
    passphrase: Path
    out: Path

    def presign(self, *ksks: str, periods: int = 4, start: int | None = None):
        args = ["ksk", "presign", ZONE, "--zsk-dir", str(self.zsks), "--start",
                str(self.start if start is None else start), "--periods", str(periods),
                "--test-timings", "--passphrase-file", str(self.passphrase), "--out",
                str(self.out), "--yes"]
        for label in ksks or self.labels:
            args += ["--ksk", label]
        return self.cli(*args, check=False)

    def roll(self, *extra: str):
        return self.cli("rollover", "ksk", ZONE, "--ksk-dir", str(self.cli.key_dir),
                        "--test-timings", *extra, check=False)

    def key_bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.cli.key_dir.glob("K*"))}


@pytest.fixture
def roll(tmp_path) -> Roll:
    cli, start, old, zsks = offline_zone(tmp_path)
    step1 = cli.json("rollover", "ksk", ZONE, "--ksk-dir", str(cli.key_dir), "--at",
                     str(start + PERIOD), "--test-timings")
    pair = lambda tag: read_key_pair(next(cli.key_dir.glob(f"K{ZONE}.+013+{tag:05d}.key")))  # noqa: E731
    new = pair(step1["successor"])
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE)
    passphrase.chmod(0o600)
    return Roll(cli, start, pair(old["tag"]), new,
                [old["object_label"], new.label_uri.split("object=")[1].split(";")[0]],
                zsks, passphrase, tmp_path / "out")


def refused(roll: Roll, result, rule: str, *words: str) -> str:
    error = one_line_error(result)
    assert result.returncode == 12, result.stderr
    assert f"policy {rule} violated" in error, error
    for word in words:
        assert word in error, error
    assert not bundles_in(roll.out), "a refused ceremony wrote bundles"
    log = next(roll.out.glob("ceremony-*.log")).read_text()
    assert "SIGNED" not in log and "PASSPHRASE" not in log  # refused before the token signed
    return error


def test_a_gap_between_the_old_ksks_retirement_and_the_new_ones_activation(roll):
    keytiming.set_times(roll.new, publish=roll.start + 3 * PERIOD, activate=roll.start + 3 * PERIOD)
    keytiming.set_times(roll.old, inactive=roll.start + 2 * PERIOD, delete=roll.start + 2 * PERIOD)
    refused(roll, roll.presign(), "KSK-SIGNS-EVERY-PERIOD", "period 2", "gap")


def test_the_old_ksk_withdrawn_before_the_new_ds_was_confirmed(roll):
    """The old KSK retired by hand while the parent still has only its DS: refused."""
    keytiming.set_times(roll.old, inactive=roll.start + 2 * PERIOD, delete=roll.start + 2 * PERIOD)
    refused(roll, roll.presign(), "DS-MATCHES-SIGNING-KSK", f"KSK {roll.new.tag}",
            "--ds-published")


def test_the_old_ksk_withdrawn_while_resolvers_may_still_hold_only_its_ds(roll):
    """DS confirmed 30 s before period 3; parent DS TTL 60 + 5 s: the old KSK must sign period 3."""
    confirmed = roll.start + 3 * PERIOD - 30
    step2 = roll.roll("--ds-published", "--at", str(confirmed))
    assert step2.returncode == 0, step2.stderr
    keytiming.set_times(roll.old, inactive=roll.start + 3 * PERIOD, delete=roll.start + 3 * PERIOD)
    refused(roll, roll.presign(), "DS-MATCHES-SIGNING-KSK", f"only the DS of KSK {roll.old.tag}",
            "keep that KSK signing until")
    # the schedule the command wrote (retire at confirmed + 65 s -> from period 4) is accepted
    keytiming.set_times(roll.old, inactive=confirmed + 65, delete=confirmed + 65)
    accepted = roll.presign(periods=5)
    assert accepted.returncode == 0, accepted.stderr
    assert len(bundles_in(roll.out)) == 5


def test_cds_for_the_new_ksk_before_its_dnskey_can_be_cached(roll):
    keytiming.set_times(roll.new, sync_publish=roll.start + PERIOD)
    keytiming.set_times(roll.old, sync_delete=roll.start + PERIOD)
    refused(roll, roll.presign(), "CDS-AFTER-DNSKEY-CACHED", f"KSK {roll.new.tag}", "SyncPublish")


def test_the_same_ksk_twice_or_three_ksks(roll):
    refused(roll, roll.presign(roll.labels[0], roll.labels[0]), "KSK-COUNT")
    three = roll.presign(roll.labels[0], roll.labels[1], roll.labels[0])
    assert "--ksk at most twice" in one_line_error(three)


def test_rollover_steps_out_of_order_change_nothing(roll, tmp_path):
    before = roll.key_bytes()
    # the parent may switch its DS only once every cache can hold the new DNSKEY (start + 2P)
    early = roll.roll("--ds-published", "--at", str(roll.start + PERIOD + 30))
    assert "RFC 7583 double-KSK rule" in one_line_error(early)
    again = roll.roll("--at", str(roll.start + 2 * PERIOD))
    assert "rollover is under way" in one_line_error(again)
    future = roll.cli("rollover", "ksk", ZONE, "--ksk-dir", str(roll.cli.key_dir),
                      "--ds-published", "--at", "now+1d", check=False)
    assert "in the future" in one_line_error(future)
    missing = roll.roll("--ksk-dir", str(tmp_path / "nowhere"))
    assert "is not a directory" in one_line_error(missing)
    assert roll.key_bytes() == before
    done = roll.roll("--ds-published", "--at", str(roll.start + 2 * PERIOD + 30))
    assert done.returncode == 0, done.stderr
    twice = roll.roll("--ds-published", "--at", str(roll.start + 2 * PERIOD + 40))
    assert "no KSK rollover is waiting" in one_line_error(twice)


def test_a_given_successor_is_adopted_and_a_wrong_one_refused(tmp_path):
    cli = Cli(tmp_path / "state", clean_env())
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    start = int(time.time()) + 60
    old = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--no-backup",
                   "--publish", "now-1h", "--activate", "now-1h")
    other = tmp_path / "made-elsewhere"
    zsk = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                   "--key-dir", str(other))
    stranger = cli.json("keygen", "other.test", "--role", "ksk", "--algorithm", "13",
                        "--no-backup", "--key-dir", str(other))
    before = sorted(p.name for p in cli.key_dir.glob("K*"))
    for wrong, words in ((zsk, "is not a token KSK"), (stranger, "is not a token KSK")):
        result = cli("rollover", "ksk", ZONE, "--ksk-dir", str(cli.key_dir), "--new-ksk",
                     wrong["key_file"], "--at", str(start), "--test-timings", check=False)
        assert words in one_line_error(result)
    assert sorted(p.name for p in cli.key_dir.glob("K*")) == before
    given = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--no-backup",
                     "--key-dir", str(other))
    step1 = cli.json("rollover", "ksk", ZONE, "--ksk-dir", str(cli.key_dir), "--new-ksk",
                     given["key_file"], "--at", str(start), "--test-timings")
    assert (step1["predecessor"], step1["successor"]) == (old["tag"], given["tag"])
    adopted = read_key_pair(cli.key_dir / Path(given["key_file"]).name)
    assert adopted.timing.publish == adopted.timing.activate == start
    assert keytiming.private_time(adopted, "sync_publish") == start + PERIOD
