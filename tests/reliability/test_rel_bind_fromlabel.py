"""Bad input and faults for the patched dnssec-keyfromlabel (issue 14), on 9.18 and 9.20 (issue 11).

Each refusal is one clear line from BIND's log ("bindpkcs11: ..." saying what was wrong and what
to do) plus dnssec-keyfromlabel's own fatal line, a non-zero exit, no key file written, and no PIN
echoed. Real SoftHSM token, real pkcs11-tool key pairs, real patched BIND; nothing is mocked.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from bindtools import tool_env
from conftest import SOFTHSM_MODULE
from fromlabel_tools import (ZONE, keyfromlabel, made_key, pkcs11_tool_keypair, series_bind,
                             signzone, write_zone)  # noqa: F401 (series_bind: fixture)

URI = "pkcs11:token=bindpkcs11;object=example.test-zsk"


@pytest.fixture
def ec_pair(token_cli):
    pkcs11_tool_keypair(token_cli, "ECDSAP256SHA256", "example.test-zsk", "01")
    return token_cli


def refused(result: subprocess.CompletedProcess, key_dir: Path, *expected: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "dnssec-keyfromlabel: fatal: failed to get key" in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not list(key_dir.glob("K*")), list(key_dir.iterdir())
    return result.stderr


@pytest.mark.parametrize("label", [
    f"{URI};pin-value=PINPIN",
    f"{URI}?pin-value=PINPIN",
    "token=bindpkcs11;object=example.test-zsk;pin-source=/tmp/PINPIN.txt",  # the ARM's form
    f"{URI}?module-path=/tmp/PINPIN.so",
])
def test_a_label_naming_a_pin_or_module_is_refused(ec_pair, series_bind, tmp_path, label):
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256", label)
    stderr = refused(result, keys, "is not allowed in a key's URI",
                     "PKCS11_LIBRARY_PIN or PKCS11_LIBRARY_PIN_FILE")
    assert "PINPIN" not in stderr and ec_pair.pin() not in stderr


def test_a_missing_object_is_named(ec_pair, series_bind, tmp_path):
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256",
                          "token=bindpkcs11;object=no-such-key")
    refused(result, keys, "bindpkcs11: key 'no-such-key' on token 'bindpkcs11' not found")


def test_a_missing_token_is_named(ec_pair, series_bind, tmp_path):
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256",
                          "token=elsewhere;object=example.test-zsk")
    refused(result, keys, "token 'elsewhere'", "not found")


@pytest.mark.parametrize("algorithm, named", [("RSASHA256", "an ECDSA P-256 key"),
                                              ("ECDSAP384SHA384", "an ECDSA P-256 key"),
                                              ("ED25519", "an ECDSA P-256 key")])
def test_an_algorithm_that_does_not_fit_the_key_is_refused(ec_pair, series_bind, tmp_path,
                                                           algorithm, named):
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, algorithm, URI)
    refused(result, keys, f"the token key is {named}, which algorithm", "cannot use")


def test_another_engine_is_refused(ec_pair, series_bind, tmp_path):
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256", URI, "-E", "gost")
    assert result.returncode != 0 and "no engine" in result.stderr, result.stderr
    assert not keys.exists() or not list(keys.glob("K*"))


def test_without_a_pin_the_private_key_stays_hidden_and_that_is_said(ec_pair, series_bind,
                                                                       tmp_path):
    keys = tmp_path / "keys"
    env = tool_env(ec_pair, series_bind.prefix)
    del env["PKCS11_LIBRARY_PIN_FILE"]
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256", URI, env=env)
    refused(result, keys, "no PIN is configured")


def test_a_wrong_pin_is_reported_and_not_echoed(ec_pair, series_bind, tmp_path):
    keys = tmp_path / "keys"
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("WRONG-PIN-4711\n")
    result = keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256", URI,
                          env=tool_env(ec_pair, series_bind.prefix, wrong))
    stderr = refused(result, keys, "PIN incorrect")
    assert "WRONG-PIN-4711" not in stderr


def test_an_ec_pair_without_its_public_key_object_is_refused_rsa_still_works(token_cli,
                                                                             series_bind,
                                                                             tmp_path):
    """An EC point lives only in the public object; RSA's modulus is on the private key too."""
    pkcs11_tool_keypair(token_cli, "ECDSAP256SHA256", "lonely-ec", "0e")
    pkcs11_tool_keypair(token_cli, "RSASHA256", "lonely-rsa")
    env = {**token_cli.env, "SOFTHSM2_CONF": str(token_cli.softhsm_conf),
           "BINDPKCS11_TEST_TOKEN_PIN": token_cli.pin()}
    for label in ("lonely-ec", "lonely-rsa"):
        subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "bindpkcs11",
                        "--login", "--pin", "env:BINDPKCS11_TEST_TOKEN_PIN", "--delete-object",
                        "--type", "pubkey", "--label", label], check=True, capture_output=True,
                       env=env, timeout=60)
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, token_cli, keys, "ECDSAP256SHA256",
                          "token=bindpkcs11;object=lonely-ec")
    refused(result, keys, "the token holds no public key with the same CKA_ID or label")
    made_key(keyfromlabel(series_bind.prefix, token_cli, keys, "RSASHA256",
                          "token=bindpkcs11;object=lonely-rsa"), keys)


def test_two_private_keys_with_one_label_are_refused(token_cli, series_bind, tmp_path):
    pkcs11_tool_keypair(token_cli, "ECDSAP256SHA256", "twin", "01")
    pkcs11_tool_keypair(token_cli, "ECDSAP256SHA256", "twin", "02")
    keys = tmp_path / "keys"
    result = keyfromlabel(series_bind.prefix, token_cli, keys, "ECDSAP256SHA256",
                          "token=bindpkcs11;object=twin")
    refused(result, keys, "matches more than one private key; add id=")
    made_key(keyfromlabel(series_bind.prefix, token_cli, keys, "ECDSAP256SHA256",
                          "token=bindpkcs11;object=twin;id=%02"), keys)


def test_an_engine_build_key_file_with_the_pin_in_its_label_is_refused_when_loaded(
        ec_pair, series_bind, tmp_path):
    """The ARM told operators to put pin-value/pin-source in the label, and an engine build
    copied it into the .private. The patched tools refuse such a file when they read it, name
    the key by its tag and say where the PIN belongs; the PIN is never printed."""
    keys = tmp_path / "keys"
    key = made_key(keyfromlabel(series_bind.prefix, ec_pair, keys, "ECDSAP256SHA256", URI), keys)
    pin = ec_pair.pin()
    private = key.with_suffix(".private")
    label = base64.b64encode(f"{URI};pin-value={pin}".encode() + b"\0").decode()
    private.write_text("\n".join(f"Label: {label}" if line.startswith("Label:") else line
                                 for line in private.read_text().splitlines()) + "\n")
    zone = write_zone(tmp_path / "sign")
    result = signzone(series_bind.prefix, ec_pair, keys, zone, "-E", "pkcs11")
    assert result.returncode != 0
    tag = int(key.name.rsplit("+", 1)[1].split(".")[0])
    assert f"bindpkcs11: URI: 'pin-value' is not allowed in a key's URI" in result.stderr
    assert f"(key id {tag})" in result.stderr, result.stderr
    assert pin not in result.stdout + result.stderr
    assert not zone.with_suffix(".signed").exists()
