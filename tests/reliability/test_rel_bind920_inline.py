"""BIND 9.20 patched route under faults: signing resumes by itself when the token comes back
(patches/bind-9.20-zz-rss-retry.patch, as for 9.18), and a wrong --bind-version is one line."""

from __future__ import annotations

import tarfile
import time

from conftest import one_line_error
from test_inline import ZONE, inline_cli, poll, setup  # noqa: F401 (fixture)
from test_inline920 import serve_920, validated_or_none
from test_rel_health_faults import TOKEN_GONE, add_record, remove_token_dir

RESUME_BOUND = 60 + 15  # the rss-retry patch's longest back-off, plus slack for a loaded machine


def test_patched_920_resumes_signing_when_the_token_returns(inline_cli, patched_bind_920, tmp_path):
    """patches/bind-9.20-zz-rss-retry.patch: the change made during the outage is signed within a
    minute of the token's return, without `rndc sign`."""
    zone_file, _ = serve_920(inline_cli, tmp_path)
    port = inline_cli.ports[0]
    away = remove_token_dir(inline_cli)
    add_record(zone_file, "during-outage")
    error = one_line_error(inline_cli("named", "reload", ZONE, check=False))
    assert TOKEN_GONE in error, error
    assert validated_or_none(port, "during-outage") is None
    tokens = away.with_name("tokens")
    if tokens.exists():
        tokens.rmdir()
    away.rename(tokens)
    returned = time.monotonic()
    rrset, _ = poll(lambda: validated_or_none(port, "during-outage"), deadline=RESUME_BOUND,
                    what="the change signed after the token returned")
    print(f"signing resumed {time.monotonic() - returned:.1f} s after the token returned")
    assert rrset[0].address == "127.0.0.9"
    log = (inline_cli.state_dir / "instances" / ZONE / "named.log").read_text()
    assert "received control channel command 'sign " not in log
    assert "bindpkcs11: retrying the sync with the unsigned zone" in log


def test_an_unknown_bind_version_is_one_line(inline_cli):
    result = setup(inline_cli, "--bind-version", "9.19", check=False)
    assert result.returncode == 2 and "invalid choice: '9.19'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (inline_cli.state_dir / "instances").exists()


def test_a_918_tarball_for_a_920_build_is_one_line_and_builds_nothing(cli, tmp_path):
    fake_dir = tmp_path / "bind-9.18.49"
    fake_dir.mkdir()
    (fake_dir / "README").write_text("9.18\n")
    tarball = tmp_path / "bind-9.18.49.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(fake_dir, arcname="bind-9.18.49")
    result = cli("bind", "build", "--version", "9.20", "--source", str(tarball), check=False)
    assert result.returncode == 2
    assert "not BIND 9.20.x" in one_line_error(result)
    assert not (cli.state_dir / "bind-9.20").exists() and not (cli.state_dir / "bind").exists()


def test_bind_env_for_a_920_not_built_names_the_command(cli):
    result = cli("bind", "env", "--version", "9.20", check=False)
    assert result.returncode != 0
    assert "bind build --version 9.20" in one_line_error(result)
