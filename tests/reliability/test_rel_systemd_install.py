"""`bindpkcs11 systemd install`: bad input gives one line, a non-zero exit and no unit file."""

from __future__ import annotations

from conftest import one_line_error
from test_inline import ZONE, inline_cli, setup  # noqa: F401  (fixture)


def test_no_instance_is_one_line_and_nothing_written(cli, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    result = cli("systemd", "install", ZONE, "--unit-dir", str(units), check=False)
    assert "run 'bindpkcs11 setup-inline ZONE' first" in one_line_error(result)
    assert list(units.iterdir()) == []


def test_some_signer_options_without_the_others_are_refused(cli, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    result = cli("systemd", "install", ZONE, "--unit-dir", str(units),
                 "--signer-out", str(tmp_path / "o.db"), check=False)
    assert "needs all of --signer-unsigned" in one_line_error(result)
    assert list(units.iterdir()) == []


def test_missing_unit_dir_and_missing_passphrase_file_are_refused(inline_cli, tmp_path):
    setup(inline_cli)
    result = inline_cli("systemd", "install", ZONE, "--unit-dir", str(tmp_path / "nope"), check=False)
    assert "unit directory" in one_line_error(result) and not (tmp_path / "nope").exists()
    result = inline_cli("systemd", "install", ZONE, "--unit-dir", str(tmp_path),
                        "--signer-unsigned", str(tmp_path / "u.db"), "--signer-bundles", str(tmp_path),
                        "--signer-out", str(tmp_path / "o.db"),
                        "--signer-passphrase-file", str(tmp_path / "absent"), check=False)
    assert "passphrase file" in one_line_error(result)
    assert list(tmp_path.glob("*.service")) == []


def test_unsafe_path_is_refused_and_nothing_written(inline_cli, tmp_path):
    setup(inline_cli)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    secret = tmp_path / "pass phrase"
    secret.write_text("x\n")
    result = inline_cli("systemd", "install", ZONE, "--unit-dir", str(unit_dir),
                        "--signer-unsigned", str(tmp_path / "u.db"), "--signer-bundles", str(tmp_path),
                        "--signer-out", str(tmp_path / "o.db"), "--signer-passphrase-file", str(secret),
                        check=False)
    assert "cannot be written into a systemd unit" in one_line_error(result)
    assert list(unit_dir.iterdir()) == []
