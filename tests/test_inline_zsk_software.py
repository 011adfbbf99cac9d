"""setup-inline --zsk-on software: the KSK on the token, the ZSK in software seeded by the token
(the mode for slow tokens), served by the patched named and validated."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import one_line_error
from test_inline import ZONE, inline_cli, named_pid, setup, validated  # noqa: F401


def test_software_zsk_signs_the_zone_and_only_the_ksk_is_on_the_token(inline_cli):
    report = json.loads(setup(inline_cli, "--zsk-on", "software", "--json").stdout)
    keys = {key["role"]: key for key in report["keys"]}
    assert keys["ksk"]["uri"].startswith("pkcs11:token=bindpkcs11;") and keys["zsk"]["uri"] == ""
    zsk_private = Path(keys["zsk"]["key_file"]).with_suffix(".private").read_text()
    assert "PrivateKey:" in zsk_private and "Label:" not in zsk_private
    port = inline_cli.ports[0]
    assert validated(ZONE, "SOA", port)[1] == {keys["zsk"]["tag"]}
    assert keys["ksk"]["tag"] in validated(ZONE, "DNSKEY", port)[1]
    labels = [o["object"]["label"] for o in
              inline_cli.json("token", "show", "--label", "bindpkcs11")["objects"]]
    assert labels and all("-ksk-" in label for label in labels)
    settings = json.loads((inline_cli.state_dir / "instances" / ZONE / "instance.json").read_text())
    assert settings["zsk_on"] == "software"
    pid = named_pid(inline_cli)
    again = setup(inline_cli)  # no --zsk-on: the instance keeps its software ZSK
    assert "nothing changed" in again.stdout and named_pid(inline_cli) == pid
    status = inline_cli.json("named", "status", ZONE)
    assert status["running"] and not status["problem"]


def test_software_zsk_with_rsa_uses_os_randomness(inline_cli):
    result = setup(inline_cli, "--zsk-on", "software", "--algorithm", "RSASHA256")
    assert "RSA key generation takes no token randomness" in result.stderr
    validated(ZONE, "SOA", inline_cli.ports[0])


def test_bad_zsk_on_is_one_line(inline_cli):
    error = one_line_error(setup(inline_cli, "--zsk-on", "disk", check=False))
    assert "--zsk-on" in error
    assert not (inline_cli.state_dir / "instances").exists()
