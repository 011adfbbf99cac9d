"""Issue 10: custody is visible beyond `token show`: keygen says how many copies of the new key
bindpkcs11 knows of (text and --json), with the same words token show uses, and a wrap adds the
wrap file to what every listing then says. (`named status DOMAIN` is checked in test_inline.py.)"""

from __future__ import annotations

from pathlib import Path

from conftest import Cli
from test_backup_ceremony import import_share, make_shares

ZONE = "example.test"


def private_custody(cli: Cli, token: str) -> str:
    shown = cli.json("token", "show", "--label", token)
    return next(o["dnssec"]["custody"] for o in shown["objects"]
                if o["object"]["object_class"] == "private" and o.get("dnssec"))


def test_keygen_and_token_show_say_the_same_custody(cli: Cli, tmp_path: Path):
    cli("token", "init", "--label", "A", "--generate-pins")
    plain = cli("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--token", "A")
    assert "custody: 1 copy (token A), ONLY COPY" in plain.stdout
    assert "only copy of this key" in plain.stderr  # the warning, once

    shares, pws, _ = make_shares(cli, tmp_path)
    cli("token", "init", "--label", "B", "--generate-pins")
    for index in (0, 1):
        import_share(cli, shares[index], pws[index], "B")
    made = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--token", "B",
                    "--backup")
    assert made["extra"]["custody"] == "1 copy (token B), ONLY COPY"
    assert private_custody(cli, "B") == made["extra"]["custody"]
    cli("backup", "wrap", "--token", "B", "--object", made["object_label"], "--out",
        str(tmp_path / "b.wrap"))
    assert private_custody(cli, "B") == "2 copies (token B, wrap file b.wrap), backed up"
