"""Bad input for migration from BIND 9.18's engine route: a PIN in the key's label (issue 14).

libp11 also takes the PIN from the URI (`;pin-value=` or `;pin-source=`), and the engine build of
9.18 then stores that label, PIN included, base64 in the `.private`. The patched tools refuse such
a file with one line naming the attribute, where the PIN belongs and the key's tag, without echoing
the PIN or signing anything; the same token key given a file made without the PIN in its label
(PIN in libp11's config) signs. Real engine-route build, real SoftHSM token; nothing is mocked.
"""

from __future__ import annotations

import pytest

from bindpkcs11.dnssec.keyfile import read_key_pair
from bindpkcs11.errors import KeyFileError
from enginebind import engine_config, engine_keyfromlabel, ensure_engine_bind
from fromlabel_tools import (ZONE, decoded, made_key, pkcs11_tool_keypair, private_fields,
                             signzone, stock_verify, write_zone)

URI = f"pkcs11:token=bindpkcs11;object={ZONE}-zsk"


@pytest.fixture(scope="session")
def engine_bind():
    return ensure_engine_bind()


@pytest.mark.parametrize("attribute", ["pin-value", "pin-source"])
def test_engine_key_file_with_pin_in_label_is_refused_then_remade_without(
        engine_bind, token_cli, patched_bind, tmp_path, attribute):
    pin = token_cli.pin()
    # libp11 reads a pin-source file as it is: a trailing newline would become part of the PIN.
    pin_file = tmp_path / "libp11.pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    secret = pin if attribute == "pin-value" else f"file:{pin_file}"
    keys = tmp_path / "keys"
    # A KSK made the clean way (PIN in libp11's config), so the zone can be complete.
    pkcs11_tool_keypair(token_cli, "ECDSAP256SHA256", f"{ZONE}-ksk", "4b534b")
    with_pin = engine_config(tmp_path / "e2", pin)
    made_key(engine_keyfromlabel(engine_bind, token_cli, with_pin, keys, "ECDSAP256SHA256",
                                 f"pkcs11:token=bindpkcs11;object={ZONE}-ksk", "-f", "KSK"), keys)
    pkcs11_tool_keypair(token_cli, "ECDSAP256SHA256", f"{ZONE}-zsk", "5a534b")
    # The label is the only place the PIN is: libp11's config has none.
    result = engine_keyfromlabel(engine_bind, token_cli, engine_config(tmp_path / "e1", None),
                                 keys, "ECDSAP256SHA256", f"{URI};{attribute}={secret}")
    key_file = made_key(result, keys)
    assert decoded(private_fields(key_file)["Label"]) == f"{URI};{attribute}={secret}\0".encode()

    with pytest.raises(KeyFileError) as error:  # bindpkcs11's own reader
        read_key_pair(key_file)
    assert f"'{attribute}'" in str(error.value) and pin not in str(error.value)

    zone = write_zone(tmp_path / "sign")
    signed = zone.with_suffix(".signed")
    result = signzone(patched_bind, token_cli, keys, zone, "-E", "pkcs11")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "bindpkcs11:" in line]
    assert len(lines) == 1, result.stderr
    assert f"'{attribute}' is not allowed in a key's URI" in lines[0]
    assert "PKCS11_LIBRARY_PIN_FILE" in lines[0] and "the key file's Label" in lines[0]
    assert f"(key id {int(key_file.stem.rsplit('+', 1)[1])})" in lines[0]
    assert pin not in result.stderr and str(pin_file) not in result.stderr
    assert not signed.exists()

    # The fix: make the file again without the PIN in the label, the PIN in libp11's config.
    for path in (key_file, key_file.with_suffix(".private")):
        path.unlink()
    result = engine_keyfromlabel(engine_bind, token_cli, with_pin, keys, "ECDSAP256SHA256", URI)
    assert made_key(result, keys).name == key_file.name  # same token key, same tag and name
    result = signzone(patched_bind, token_cli, keys, zone, "-E", "pkcs11")
    assert result.returncode == 0, result.stderr
    stock_verify(signed)
