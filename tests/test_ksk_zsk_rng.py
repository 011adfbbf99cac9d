"""Software ZSKs for the offline-KSK mode with token randomness mixed in (keygen --rng-from-token)."""

from __future__ import annotations

import subprocess

import pytest

from bindpkcs11.dnssec import algorithms, software
from conftest import one_line_error

ZONE = "example.test"


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "ECDSAP384SHA384", "ED25519"])
def test_token_random_bytes_determine_the_key_together_with_the_os(monkeypatch, algorithm):
    """With the OS source pinned, the key changes exactly when the token's bytes change."""
    monkeypatch.setattr(software.os, "urandom", lambda count: bytes(count))
    chosen = algorithms.lookup(algorithm)
    with software.extra_entropy(b"a" * 64):
        first, _ = software.generate(chosen)
        again, _ = software.generate(chosen)
    with software.extra_entropy(b"b" * 64):
        other, _ = software.generate(chosen)
    assert first == again and first != other
    plain_one, _ = software.generate(chosen)
    assert plain_one != first  # outside the block: cryptography's own generator


def test_rng_from_token_zsk_signs_a_zone_bind_verifies(token_cli, tmp_path):
    key = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                         "--rng-from-token", "--key-dir", str(tmp_path))
    assert key["extra"]["rng"] == "os+token:bindpkcs11"
    ksk = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--software",
                         "--key-dir", str(tmp_path))
    zone = tmp_path / "zone.db"
    zone.write_text(f"$ORIGIN {ZONE}.\n$TTL 300\n@ SOA ns1 hm 1 3600 600 86400 300\n@ NS ns1\n"
                    "ns1 A 127.0.0.1\n")
    stems = [tmp_path / k["key_file"].split("/")[-1].removesuffix(".key") for k in (key, ksk)]
    subprocess.run(["dnssec-signzone", "-S", "-K", str(tmp_path), "-o", ZONE, "-f",
                    str(tmp_path / "signed"), str(zone), *map(str, stems)], check=True,
                   capture_output=True, cwd=tmp_path)
    subprocess.run(["dnssec-verify", "-o", ZONE, str(tmp_path / "signed")], check=True,
                   capture_output=True)


def test_rng_from_token_refuses_rsa_and_token_keys(token_cli, tmp_path):
    error = one_line_error(token_cli("keygen", ZONE, "--role", "zsk", "--algorithm", "RSASHA256",
                                     "--software", "--rng-from-token", "--key-dir", str(tmp_path),
                                     check=False))
    assert "RSA key generation takes no outside randomness" in error
    error = one_line_error(token_cli("keygen", ZONE, "--role", "zsk", "--algorithm", "13",
                                     "--rng-from-token", check=False))
    assert "--rng-from-token is for --software keys" in error
    assert not list(tmp_path.glob("K*"))
