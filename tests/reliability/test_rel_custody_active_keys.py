"""Issue 8 item 3: the token guard sees every key directory bindpkcs11 manages.

`token delete`/`erase` used to look only in `<state>/keys`: one `--force` destroyed the live ZSK of
a setup-inline instance (`<state>/instances/<zone>/keys`) or of a key made with `keygen --key-dir`,
and `token erase` never looked at all. Now the guard consults the default dir, every instance's,
every recorded `--key-dir`, and matches key files to token objects by label, CKA_ID and public key.
"""

from __future__ import annotations

import json

from conftest import TOKEN, one_line_error, run_python

ZONE = "example.test"

# Relabel only the private key object, as `pkcs11-tool --set-attribute` or a vendor tool would.
_RELABEL_PRIVATE = """
import sys
import pkcs11
from pkcs11 import Attribute, ObjectClass
lib = pkcs11.lib("/usr/lib/softhsm/libsofthsm2.so")
token = lib.get_token(token_label=sys.argv[1])
with token.open(user_pin=sys.argv[2], rw=True) as session:
    (key,) = session.get_objects({Attribute.LABEL: sys.argv[3], Attribute.CLASS: ObjectClass.PRIVATE_KEY})
    key[Attribute.LABEL] = sys.argv[4]
"""


def _objects(cli) -> dict[tuple[str, str], dict]:
    report = cli.json("token", "show", "--label", TOKEN)
    return {(o["object"]["label"], o["object"]["object_class"]): o for o in report["objects"]}


def _instance_keys(cli, zone: str = ZONE):
    """A setup-inline-like layout without named: the instance key dir written by keygen --key-dir."""
    key_dir = cli.state_dir / "instances" / zone / "keys"
    ksk = cli.json("keygen", zone, "--role", "ksk", "--algorithm", "13", "--key-dir", str(key_dir))
    zsk = cli.json("keygen", zone, "--role", "zsk", "--algorithm", "13", "--key-dir", str(key_dir))
    return ksk, zsk


def test_delete_refuses_an_instance_zsk_with_one_force_and_names_the_instance(token_cli):
    _, zsk = _instance_keys(token_cli)
    label = zsk["object_label"]
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", label,
                                     "--type", "private", "--force", check=False))
    assert "active key" in error and "instance example.test" in error and "--force twice" in error
    assert (label, "private") in _objects(token_cli)


def test_delete_refuses_a_key_made_with_a_key_dir_outside_the_state_dir(token_cli, tmp_path):
    elsewhere = tmp_path / "zone-keys"
    key = token_cli.json("keygen", "other.test", "--role", "zsk", "--algorithm", "13",
                         "--key-dir", str(elsewhere))
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", key["object_label"],
                                     "--type", "private", "--force", check=False))
    assert "keygen --key-dir" in error and str(elsewhere) in error and "other.test" in error
    assert (key["object_label"], "private") in _objects(token_cli)
    registry = json.loads((token_cli.state_dir / "key-dirs.json").read_text())
    assert str(elsewhere.resolve()) in registry["key_dirs"]


def test_a_relabelled_private_key_is_still_recognised_by_its_public_key(token_cli):
    _, zsk = _instance_keys(token_cli)
    run_python(_RELABEL_PRIVATE, token_cli.env | {"SOFTHSM2_CONF": str(token_cli.softhsm_conf)},
               TOKEN, token_cli.pin(), zsk["object_label"], "renamed")
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", "renamed",
                                     "--type", "private", "--force", check=False))
    assert "active key" in error and f"+{zsk['tag']:05d}" in error and "instance example.test" in error
    objects = _objects(token_cli)
    assert objects[("renamed", "private")]["dnssec"]["tag"] == zsk["tag"]
    assert objects[("renamed", "private")]["dnssec"]["used_by"] == "instance example.test"


def test_erase_refuses_while_active_keys_of_any_dir_use_the_token(token_cli, tmp_path):
    _instance_keys(token_cli)
    token_cli("keygen", "other.test", "--role", "zsk", "--algorithm", "13",
              "--key-dir", str(tmp_path / "zone-keys"))
    before = _objects(token_cli)
    assert len(before) == 6
    error = one_line_error(token_cli("token", "erase", "--label", TOKEN, "--force", "--yes",
                                     check=False))
    assert "3 active key file(s)" in error and "--destroy-active-keys" in error
    assert "instance example.test" in error
    assert _objects(token_cli).keys() == before.keys()
    result = token_cli("token", "erase", "--label", TOKEN, "--force", "--yes", "--destroy-active-keys")
    assert "3 key file(s)" in result.stdout
    assert _objects(token_cli) == {}


def test_a_damaged_key_dir_registry_fails_closed(token_cli, tmp_path):
    key = token_cli.json("keygen", "other.test", "--role", "zsk", "--algorithm", "13",
                         "--key-dir", str(tmp_path / "zone-keys"))
    registry = token_cli.state_dir / "key-dirs.json"
    intact = registry.read_text()
    registry.write_text("{not json")
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", key["object_label"],
                                     "--type", "private", "--force", check=False))
    assert "key-dirs.json" in error and "damaged" in error
    registry.write_text(intact)
    assert (key["object_label"], "private") in _objects(token_cli)
