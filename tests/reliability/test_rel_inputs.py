"""Issue 8, bad input: one clear line, a documented exit code, nothing created or lost.

Each test would fail on the code before (a hang, a traceback-free but wrong "unexpected error"
exit 70, keys made before the input was checked, a raw escape sequence on the terminal ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SOFTHSM_MODULE, SPY_MODULE, TOKEN, one_line_error
from test_inline import ZONE, inline_cli, setup, validated  # noqa: F401

EXIT_IO = 74
EXIT_USAGE = 2


def token_objects(cli) -> list:
    return cli.json("token", "show", "--label", TOKEN)["objects"]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO nobody writes to: reading it would block forever. Unblocked after the test."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    # If the code under test opened it for reading and hung, open it for writing to release it.
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK) if _has_reader(path) else None
    if fd is not None:
        os.close(fd)


def _has_reader(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("source", ["fifo", "/dev/zero", "directory"])
def test_pin_file_that_is_not_a_regular_file_is_refused_at_once(token_cli, fifo, tmp_path, source):
    """Before: a FIFO blocked forever; /dev/zero was read to the size limit by st_size (0)."""
    path = {"fifo": str(fifo), "/dev/zero": "/dev/zero", "directory": str(tmp_path)}[source]
    result = token_cli("token", "show", "--label", TOKEN, "--pin-file", path, check=False, timeout=20)
    error = one_line_error(result)
    assert path in error and "regular file" in error


@pytest.mark.parametrize("source", ["fifo", "/dev/zero", "huge", "binary"])
def test_zone_file_that_cannot_be_a_zone_is_refused_before_anything_is_made(inline_cli, fifo,
                                                                            tmp_path, source):
    huge = tmp_path / "huge.zone"
    if source == "huge":
        with huge.open("wb") as handle:  # sparse: st_size says 600 MB, the limit is 512 MiB
            handle.truncate(600 << 20)
    binary = tmp_path / "latin1.zone"
    binary.write_bytes(b"$TTL 300\n@ IN SOA ns1 h 1 3600 600 1209600 300\n@ TXT \"caf\xe9\"\n")
    path = {"fifo": str(fifo), "/dev/zero": "/dev/zero", "huge": str(huge), "binary": str(binary)}[source]
    result = setup(inline_cli, "--zone-file", path, check=False, timeout=60)
    error = one_line_error(result)
    assert path in error
    assert result.returncode == EXIT_USAGE
    assert not (inline_cli.state_dir / "instances").exists()


def test_include_outside_the_zone_directory_is_refused_before_any_key_exists(inline_cli, tmp_path):
    """Before: named-checkzone ran as root on the operator's file and followed the $INCLUDE; keys
    were generated before the zone was known to load."""
    inline_cli("token", "init", "--label", TOKEN, "--generate-pins")
    zone_dir = tmp_path / "zones"
    zone_dir.mkdir()
    zone = zone_dir / "example.test.zone"
    zone.write_text("$TTL 300\n@ IN SOA ns1 h 1 3600 600 1209600 300\n@ NS ns1\n"
                    "ns1 A 127.0.0.1\n$INCLUDE /etc/passwd\n")
    error = one_line_error(setup(inline_cli, "--zone-file", str(zone), check=False))
    assert "outside the zone file's directory" in error and "root:" not in error
    assert token_objects(inline_cli) == []
    assert not (inline_cli.state_dir / "instances" / ZONE / "keys").exists() or \
        not list((inline_cli.state_dir / "instances" / ZONE / "keys").iterdir())


def test_include_inside_the_zone_directory_is_served_signed(inline_cli, tmp_path):
    """Before: the served copy kept a relative $INCLUDE that named resolved from its own
    directory, so the zone did not load."""
    zone_dir = tmp_path / "zones"
    (zone_dir / "parts").mkdir(parents=True)
    (zone_dir / "parts" / "hosts.inc").write_text("included IN A 127.0.0.9\n")
    (zone_dir / "parts" / "sub.inc").write_text("deep IN A 127.0.0.10\n")
    zone = zone_dir / "example.test.zone"
    zone.write_text("$TTL 300\n@ IN SOA ns1 h 1 3600 600 1209600 300\n@ NS ns1\nns1 A 127.0.0.1\n"
                    "$INCLUDE parts/hosts.inc\n$INCLUDE parts/sub.inc sub\nafter IN A 127.0.0.11\n")
    setup(inline_cli, "--zone-file", str(zone))
    port = inline_cli.ports[0]
    assert validated(ZONE, "A", port, f"included.{ZONE}")[0][0].address == "127.0.0.9"
    assert validated(ZONE, "A", port, f"deep.sub.{ZONE}")[0][0].address == "127.0.0.10"
    assert validated(ZONE, "A", port, f"after.{ZONE}")[0][0].address == "127.0.0.11"


def test_bad_secondary_is_refused_before_the_token_is_touched(inline_cli):
    inline_cli("token", "init", "--label", TOKEN, "--generate-pins")
    error = one_line_error(setup(inline_cli, "--secondary", "not-an-address:53", check=False))
    assert "invalid --secondary" in error
    assert token_objects(inline_cli) == []


@pytest.mark.parametrize("content", ["1234 \n", " 1234\n", "1234\nsecond line\n", "1234\t\n"])
def test_pin_file_with_stray_whitespace_or_lines_costs_no_login(token_cli, tmp_path, content):
    """Before: the PIN with its whitespace was sent to the token and burnt a login attempt."""
    pin_file = tmp_path / "user.pin"
    pin_file.write_text(content)
    pin_file.chmod(0o600)
    log = tmp_path / "spy.log"
    env = {"PKCS11SPY": SOFTHSM_MODULE, "PKCS11SPY_OUTPUT": str(log)}
    error = one_line_error(token_cli("token", "show", "--label", TOKEN, "--pin-file", str(pin_file),
                                     "--module", SPY_MODULE, check=False, env=env))
    assert str(pin_file) in error and "1234" not in error
    assert not log.exists() or "C_Login" not in log.read_text()


def test_group_readable_pin_file_gets_a_warning(token_cli, tmp_path):
    pin_file = tmp_path / "user.pin"
    pin_file.write_text(token_cli.pin() + "\n")
    pin_file.chmod(0o644)
    result = token_cli("token", "show", "--label", TOKEN, "--pin-file", str(pin_file))
    assert f"{pin_file} is readable by group or others" in result.stderr and "chmod 600" in result.stderr
    pin_file.chmod(0o600)
    assert "readable by group" not in token_cli("token", "show", "--label", TOKEN, "--pin-file",
                                                str(pin_file)).stderr


def test_control_characters_in_a_domain_are_escaped(cli):
    """Before: the escape sequence was echoed raw (it could clear the screen or forge lines)."""
    result = cli("setup-inline", "ex\x1b[2Jample\n.test", check=False)
    error = one_line_error(result)
    assert "\x1b" not in result.stderr and "\\x1b[2J" in error and "\\n" in error


def test_zone_errors_name_the_operators_file_not_a_temporary_copy(inline_cli, tmp_path):
    zone = tmp_path / "mine.zone"
    zone.write_text("$TTL 300\n@ IN SOA ns1 h 1 3600 600 1209600 300\n@ NS ns1\nbad A 999.1.1.1\n")
    error = one_line_error(setup(inline_cli, "--zone-file", str(zone), check=False))
    assert str(zone) in error and "/tmp/tmp" not in error


def test_checker_deprecation_warnings_do_not_lead_the_error(patched_bind, tmp_path):
    from bindpkcs11.bind import config
    from bindpkcs11.errors import ToolFailed

    conf = tmp_path / "named.conf"
    conf.write_text('options { directory "/tmp"; };\nzone "x.test" { type primary; file "x.db"; '
                    'inline-signing yes; auto-dnssec maintain; };\nzone "x.test" { type primary; file "y.db"; };\n')
    with pytest.raises(ToolFailed) as failure:
        config.check_config(patched_bind, conf)
    assert "deprecated" not in str(failure.value) and "already exists" in str(failure.value)


def test_state_dir_that_is_a_file(cli, tmp_path):
    """Before: 'unexpected error' (exit 70) with a FileExistsError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("--state-dir", str(blocker), "token", "list", check=False)
    error = one_line_error(result)
    assert "is not a directory" in error and result.returncode == EXIT_USAGE


def test_out_in_a_missing_directory(token_cli, tmp_path):
    target = tmp_path / "missing" / "random.bin"
    result = token_cli("token", "rng", "--label", TOKEN, "--bytes", "16", "--out", str(target),
                       check=False)
    error = one_line_error(result)
    assert str(target) in error and "no such file or directory" in error
    assert result.returncode == EXIT_IO


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                            str(path)], capture_output=True).returncode != 0:
        pytest.skip("needs root and mount(2) to make a small tmpfs (a full / read-only disk)")


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_full_or_read_only_disk(token_cli, tmp_path, fault):
    """Before: 'unexpected error' (exit 70). Now one line naming the file, and nothing replaced."""
    disk = tmp_path / "disk"
    _tmpfs(disk, "64k")
    try:
        target = disk / "random.bin"
        target.write_bytes(b"previous")
        if fault == "full":
            fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass  # ENOSPC: the disk is full now
            finally:
                os.close(fd)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        result = token_cli("token", "rng", "--label", TOKEN, "--bytes", "65536", "--out", str(target),
                           check=False)
        error = one_line_error(result)
        assert str(target) in error and result.returncode == EXIT_IO
        assert ("no space left" in error) if fault == "full" else ("read-only" in error)
        assert target.read_bytes() == b"previous"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_closed_stdin_is_a_refusal_not_a_crash(token_cli):
    """Started with stdin closed (`<&-`): Python's sys.stdin is None."""
    command = [sys.executable, "-m", "bindpkcs11", "--state-dir", str(token_cli.state_dir),
               "token", "erase", "--label", TOKEN, "--force"]
    result = subprocess.run(command, env=token_cli.env, cwd=REPO, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: os.close(0))
    error = one_line_error(result)
    assert "no terminal to confirm on" in error
    assert token_cli.json("token", "list")  # the token is still there
