"""Issue 8, bad-input bullet: `signer run --now T` for a future T failed with "No self-signed
DNSKEY found".

The cause: dnssec-signzone's post-sign self-check judges the signatures by the real clock, and the
signer asked for an inception of T - 1 h, still in the real future, so no signature was valid yet.
The key timing metadata was not involved (the bundle names the signing ZSKs, and here the ZSK that
signs the rehearsed period has an Activate in the real future). Hour-long periods put the rehearsed
period two hours ahead, past the one-hour back-dating.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import Cli, clean_env, one_line_error
from test_signer_offline_ksk import ORIGIN, PASSPHRASE, ZONE, validate_signed_zone

HOUR = 3600


@pytest.fixture(scope="module")
def hourly(tmp_path_factory) -> dict:
    """A ceremony of three one-hour periods with a ZSK rollover at period 2; the token removed."""
    base = tmp_path_factory.mktemp("hourly")
    cli = Cli(base / "state", clean_env())
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    ksk = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    start = int(time.time()) - 60
    zsk = ["keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
           "--key-dir", str(base / "zsks")]
    old = cli.json(*zsk, "--publish", str(start - HOUR), "--activate", str(start - HOUR),
                   "--inactive", str(start + 2 * HOUR), "--delete", str(start + 3 * HOUR))
    new = cli.json(*zsk, "--publish", str(start + HOUR), "--activate", str(start + 2 * HOUR))
    passphrase = base / "passphrase"
    passphrase.write_text(PASSPHRASE)
    passphrase.chmod(0o600)
    cli("ksk", "presign", ZONE, "--ksk", ksk["object_label"], "--zsk-dir", str(base / "zsks"),
        "--start", str(start), "--periods", "3", "--period", "1h", "--overlap", "1h",
        "--test-timings", "--passphrase-file", str(passphrase), "--out", str(base / "out"), "--yes")
    shutil.rmtree(cli.state_dir / "softhsm")
    return {"start": start, "ksk": ksk["tag"], "old": old["tag"], "new": new["tag"],
            "bundles": base / "out", "passphrase": passphrase}


def test_rehearsal_two_hours_ahead_publishes_a_zone_valid_then(hourly, tmp_path):
    (tmp_path / "zone.db").write_text(sample_zone_text(ORIGIN, hosts=20))
    cli = Cli(tmp_path / "online", clean_env())
    when = hourly["start"] + 2 * HOUR + 10
    assert when - HOUR > time.time()  # the inception the old code asked for is in the real future
    args = ["signer", "run", ZONE, "--unsigned", str(tmp_path / "zone.db"), "--bundles",
            str(hourly["bundles"]), "--out", str(tmp_path / "signed"), "--passphrase-file",
            str(hourly["passphrase"]), "--once", "--now", str(when), "--test-timings", "--warn", "1h"]
    result = cli(*args, "--json", check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["published"] and report["period_index"] == 2 and report["zsk_tags"] == [hourly["new"]]
    assert validate_signed_zone(tmp_path / "signed", when, hourly["ksk"]) == {hourly["new"]}
    # --full-verify runs dnssec-verify, which reads the real clock: refused for a rehearsal.
    error = one_line_error(cli(*args, "--full-verify", check=False))
    assert "--full-verify" in error and "rehearsal" in error
