"""A TPM (tpm2 profile, emulated by swtpm) cannot wrap: every backup command says so in one line,
before the device is touched, and points to `key import` into two devices."""

from __future__ import annotations

from pathlib import Path

from conftest import one_line_error
from test_backup_ceremony import make_shares
from tpm2_fixtures import TPM_TOKEN, tp, tpm2_cli, tpm2_token  # noqa: F401 - fixtures


def test_tpm2_refuses_backup_commands_and_points_to_key_import(tpm2_token, tmp_path: Path):
    shares, pws, _ = make_shares(tpm2_token, tmp_path)
    attempts = [
        ("backup", "import-share", str(shares[0]), "--token", TPM_TOKEN, "--password-file", str(pws[0])),
        ("keygen", "example.test", "--role", "ksk", "--algorithm", "13", "--token", TPM_TOKEN,
         "--backup"),
        ("backup", "wrap", "--token", TPM_TOKEN, "--object", "x", "--out", str(tmp_path / "w")),
    ]
    for args in attempts:
        error = one_line_error(tp(tpm2_token, *args, check=False))
        assert "tpm2 device cannot wrap keys" in error and "key import" in error, error
    shown = tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--json").stdout
    assert '"object_class"' not in shown
    assert not list((tpm2_token.state_dir / "backup").glob("pending-shares-*"))
