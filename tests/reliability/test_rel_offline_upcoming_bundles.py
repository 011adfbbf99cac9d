"""Issue 8, bad-input bullet: a corrupted bundle or a wrong passphrase was only noticed at the next
re-sign. `signer run` now decrypts and checks every bundle it needs within --warn when it starts
(test timings: --warn 10 minutes = the next two periods): one line naming the bundle, a non-zero
exit, and the last good zone untouched.
"""

from __future__ import annotations

from bindpkcs11.dnssec import bundles
from bindpkcs11.dnssec.bundles import Unlocker, open_bundle
from conftest import one_line_error
import test_signer_offline_ksk
from test_signer_offline_ksk import PASSPHRASE, Online

offline = test_signer_offline_ksk.offline  # the fixture, reused
online = test_signer_offline_ksk.online  # the fixture, reused


def reseal(path, passphrase: str) -> None:
    """Seal the bundle again under another passphrase (a copy from another ceremony's key)."""
    bundle = open_bundle(path, Unlocker(PASSPHRASE))
    bundles.write_bundle(path, bundles.seal(bundle.header, bundle.content, Unlocker(passphrase).new_key()))


def published_state(online: Online) -> tuple[bytes, bytes]:
    return online.out.read_bytes(), online.out.with_name(online.out.name + ".signer.json").read_bytes()


def test_a_damaged_future_bundle_stops_the_signer_at_start(online):
    offline = online.offline
    assert online.publish(offline.at(0))["published"]
    before = published_state(online)
    future = online.bundle_dir / offline.bundles[2].name
    good = future.read_bytes()
    future.write_bytes(good[:-30] + bytes([good[-30] ^ 0x40]) + good[-29:])
    error = one_line_error(online.run(offline.at(0, 30)))
    assert future.name in error and "modified or is corrupted" in error and "--warn" in error
    assert published_state(online) == before

    future.write_bytes(good)
    reseal(future, "another ceremony's passphrase")
    error = one_line_error(online.run(offline.at(0, 30)))
    assert future.name in error and "wrong passphrase" in error
    assert published_state(online) == before


def test_bundles_beyond_warn_are_not_opened(online):
    """Only what the signer needs within --warn is checked: a bad bundle far ahead is the
    runway warning's business, not a reason to stop signing today."""
    offline = online.offline
    future = online.bundle_dir / offline.bundles[2].name
    reseal(future, "another ceremony's passphrase")
    assert online.publish(offline.at(0), "--warn", "2mi")["published"]
