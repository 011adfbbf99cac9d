"""The bundle file format: authenticated header, scrypt + AES-GCM, one clear error per failure."""

from __future__ import annotations

import json
import stat
import struct

import pytest

from bindpkcs11.dnssec import bundles
from bindpkcs11.dnssec.bundles import (
    BundleContent,
    BundleHeader,
    BundleTampered,
    BundleTruncated,
    NotABundle,
    Unlocker,
    UnsupportedBundleVersion,
    WrongPassphrase,
    ZskMaterial,
    open_bundle,
    read_header,
)

SECRET = "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: c2VjcmV0\n"


@pytest.fixture(scope="module")
def unlocker() -> Unlocker:
    return Unlocker("a long enough passphrase")


def make(unlocker: Unlocker, tmp_path, **overrides):
    header = BundleHeader(zone="example.test.", index=1, period_start=1000, period_end=1300,
                          inception=1000 - 3600, expiration=1600, ksk_tags=(12345,), ds_tags=(12345,), ceremony="c1",
                          kdf=None, check=b"", nonce=b"", payload_length=0)  # type: ignore[arg-type]
    content = BundleContent("example.test. 60 IN DNSKEY 257 3 13 AAAA\n",
                            "example.test. 60 IN RRSIG DNSKEY ...\n", (4242,),
                            (ZskMaterial(4242, "key text", SECRET),))
    data = bundles.seal(header, content, unlocker.new_key())
    path = tmp_path / overrides.get("name", "b.bundle")
    bundles.write_bundle(path, data)
    return path, data


def test_round_trip_and_secrets_stay_out_of_repr(unlocker, tmp_path):
    path, data = make(unlocker, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SECRET.encode() not in data and b"PrivateKey" not in data
    bundle = open_bundle(path, unlocker)
    assert bundle.header.index == 1 and bundle.header.covers(1000, 1600)
    assert not bundle.header.covers(1000, 1601)
    assert bundle.content.zsks[0].private_text == SECRET
    assert "c2VjcmV0" not in repr(bundle) and "long enough" not in repr(unlocker)
    header, _ = read_header(path)
    assert header == bundle.header
    fields = json.loads(data[len(bundles.MAGIC) + 4:][:struct.unpack(">I", data[12:16])[0]])
    assert fields["version"] == 2 and fields["ksk_tags"] == [12345] and fields["kdf"]["name"] == "scrypt"
    assert fields["kdf"]["n"] == 1 << 15 and fields["cipher"] == "AES-256-GCM"


def test_wrong_passphrase(unlocker, tmp_path):
    path, _ = make(unlocker, tmp_path)
    with pytest.raises(WrongPassphrase, match="wrong passphrase for bundle b.bundle"):
        open_bundle(path, Unlocker("another passphrase!"))


def _rewrite_header(data: bytes, change) -> bytes:
    length = struct.unpack(">I", data[12:16])[0]
    fields = json.loads(data[16:16 + length])
    change(fields)
    raw = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return data[:12] + struct.pack(">I", len(raw)) + raw + data[16 + length:]


@pytest.mark.parametrize("change", [
    lambda f: f.update(zone="example.org."),
    lambda f: f.update(index=2),
    lambda f: f.update(expiration=f["expiration"] + 86400),
])
def test_header_is_authenticated(unlocker, tmp_path, change):
    path, data = make(unlocker, tmp_path)
    path.write_bytes(_rewrite_header(data, change))
    with pytest.raises(BundleTampered, match="modified or is corrupted"):
        open_bundle(path, unlocker)


def test_flipped_ciphertext_byte_is_detected(unlocker, tmp_path):
    path, data = make(unlocker, tmp_path)
    path.write_bytes(data[:-20] + bytes([data[-20] ^ 1]) + data[-19:])
    with pytest.raises(BundleTampered):
        open_bundle(path, unlocker)


@pytest.mark.parametrize("keep", [5, 14, 40, -1])
def test_truncation_is_reported_as_such(unlocker, tmp_path, keep):
    path, data = make(unlocker, tmp_path)
    path.write_bytes(data[:keep])
    with pytest.raises(BundleTruncated, match="truncated"):
        open_bundle(path, unlocker)


def test_trailing_data_unknown_version_and_foreign_files(unlocker, tmp_path):
    path, data = make(unlocker, tmp_path)
    path.write_bytes(data + b"x")
    with pytest.raises(BundleTampered, match="trailing data"):
        open_bundle(path, unlocker)
    path.write_bytes(_rewrite_header(data, lambda f: f.update(version=3)))
    with pytest.raises(UnsupportedBundleVersion, match="format version 3"):
        read_header(path)
    path.write_bytes(b"$ORIGIN example.test.\n")
    with pytest.raises(NotABundle, match="not a bindpkcs11 bundle"):
        read_header(path)
    path.write_bytes(_rewrite_header(data, lambda f: f["kdf"].update(n=1 << 30)))
    with pytest.raises(BundleTampered, match="unreasonable scrypt"):
        read_header(path)


def test_one_scrypt_per_salt(unlocker, tmp_path, monkeypatch):
    first, _ = make(unlocker, tmp_path, name="1.bundle")
    calls = []
    original = bundles.derive_key
    monkeypatch.setattr(bundles, "derive_key", lambda *a: calls.append(1) or original(*a))
    fresh = Unlocker("a long enough passphrase")
    open_bundle(first, fresh)
    open_bundle(first, fresh)
    assert len(calls) == 1
