"""Issue 10 faults on opencryptoki's soft token (CKM_AES_CBC_PAD, unauthenticated by itself): a
wrap file re-sealed around changed wrapped bytes, a key made without --backup, and a second KEK:
one clear line each, and the token's objects are as before."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bindpkcs11.backup import wrapfile
from conftest import one_line_error
from occ_fixtures import OCC_TOKEN, needs_opencryptoki, oc, occ_cli, occ_token  # noqa: F401
from test_backup_ceremony import make_shares
from test_backup_opencryptoki import objects, second_sandbox

pytestmark = needs_opencryptoki
ZONE = "example.test"


def test_opencryptoki_wrap_faults_leave_the_token_as_it_was(occ_token, tmp_path: Path):
    shares, pws, _ = make_shares(occ_token, tmp_path)
    for index in (0, 1):
        oc(occ_token, "backup", "import-share", str(shares[index]), "--token", OCC_TOKEN,
           "--password-file", str(pws[index]))
    plain = occ_token.json("--profile", "opencryptoki", "keygen", ZONE, "--role", "ksk",
                           "--algorithm", "8", "--bits", "2048", "--token", OCC_TOKEN,
                           "--no-backup")
    error = one_line_error(oc(occ_token, "backup", "wrap", "--token", OCC_TOKEN, "--object",
                              plain["object_label"], "--out", str(tmp_path / "p.wrap"),
                              check=False))
    assert "cannot be wrapped" in error and "keygen --backup" in error
    assert not (tmp_path / "p.wrap").exists()

    ksk = occ_token.json("--profile", "opencryptoki", "keygen", ZONE, "--role", "ksk",
                         "--algorithm", "8", "--bits", "2048", "--token", OCC_TOKEN, "--backup")
    wrap = tmp_path / "ksk.wrap"
    oc(occ_token, "backup", "wrap", "--token", OCC_TOKEN, "--object", ksk["object_label"],
       "--out", str(wrap))
    record = wrapfile.decode(wrap, wrap.read_bytes())
    # the label is new to the token, so only a damaged key could stop the unwrap
    moved = dataclasses.replace(record, label="moved-copy")
    before = objects(occ_token, OCC_TOKEN)
    # CBC-PAD is not authenticated: what guards the key is the unwrap and the signature proof
    # (a changed byte in d or in the padding can still give a copy that signs right)
    for position in (40, 100):  # inside the PKCS#8 header and the modulus
        damaged = bytearray(moved.wrapped)
        damaged[position] ^= 0x55
        path = tmp_path / f"damaged-{position}.wrap"
        path.write_bytes(wrapfile.encode(dataclasses.replace(moved, wrapped=bytes(damaged))))
        error = one_line_error(oc(occ_token, "backup", "unwrap", str(path), "--token", OCC_TOKEN,
                                  "--key-dir", str(tmp_path / f"keys-{position}"), check=False))
        assert "nothing was stored" in error or "copy was removed" in error, error
        assert objects(occ_token, OCC_TOKEN) == before

    other = tmp_path / "other"
    other.mkdir()
    other_shares, other_pws, other_kcv = make_shares(occ_token, other, out="other")
    with second_sandbox() as second:
        for index in (0, 1):
            oc(second, "backup", "import-share", str(other_shares[index]), "--token", "other",
               "--password-file", str(other_pws[index]))
        before_second = objects(second, "other")
        error = one_line_error(oc(second, "backup", "unwrap", str(wrap), "--token", "other",
                                  check=False))
        assert f"holds KEK {other_kcv}" in error
        assert objects(second, "other") == before_second
