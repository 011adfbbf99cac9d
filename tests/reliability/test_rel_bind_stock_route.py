"""Issue 11 part 1: bad input and missing pieces on the stock route (BIND >= 9.20 + pkcs11-provider).

Each case ends in one line saying what to do, a non-zero exit, and nothing created: no token,
no instance files, no named, and never a system install.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from conftest import Cli, clean_env, one_line_error
from namedproc import free_port
from test_inline import ZONE, named_pid

from bindpkcs11.bind import backports, stock


def _system_has_stock() -> bool:
    return stock.usable(Path("/usr"), "system") is not None


@pytest.fixture
def bare_cli(tmp_path: Path) -> Cli:
    """A CLI whose private stock directory is empty (nothing extracted)."""
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-nostock-"))
    base.chmod(0o711)
    cli = Cli(base / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(base / "no-stock")})
    cli.ports = (free_port(), free_port())
    yield cli
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(_system_has_stock(), reason="/usr has a BIND >= 9.20 with pkcs11-provider")
def test_bind_stock_without_a_920_says_what_to_install_and_creates_nothing(bare_cli):
    port, rndc_port = bare_cli.ports
    result = bare_cli("setup-inline", ZONE, "--bind", "stock", "--port", str(port),
                      "--rndc-port", str(rndc_port), check=False)
    error = one_line_error(result)
    assert "No BIND >= 9.20 with pkcs11-provider found" in error
    assert "install-backports" in error and "extract-backports" in error
    assert "pkcs11-provider" in error and "/usr/sbin/named is BIND 9.18" in error
    assert not (bare_cli.state_dir / "instances" / ZONE / "named.conf").exists()
    assert not list((bare_cli.state_dir / "softhsm").glob("tokens/*"))
    assert named_pid(bare_cli) is None


@pytest.mark.skipif(_system_has_stock(), reason="/usr has a BIND >= 9.20 with pkcs11-provider")
def test_default_route_stays_patched_when_only_debian_12s_918_is_there(bare_cli):
    """/usr/sbin/named 9.18 has no PKCS#11: the default must not pick it."""
    assert bare_cli.json("bind", "status")["default"] == "patched"
    assert bare_cli.json("bind", "status")["stock"] is None


def test_an_unknown_route_is_refused_by_the_parser(bare_cli):
    result = bare_cli("setup-inline", ZONE, "--bind", "vendor", check=False)
    assert result.returncode == 2 and "invalid choice: 'vendor'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_path_openssl_would_misread_is_refused_before_the_token_is_touched(tmp_path):
    """OpenSSL's config syntax expands `$` and cuts values at `#`: such a state dir is refused
    before a token, a key or an instance file exists."""
    from bindtools import ensure_stock_bind

    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-dollar$HOME-"))
    base.chmod(0o711)
    try:
        cli = Cli(base / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(ensure_stock_bind())})
        result = cli("setup-inline", ZONE, "--bind", "stock", "--port", str(free_port()),
                     "--rndc-port", str(free_port()), check=False)
        error = one_line_error(result)
        assert "cannot be written into an OpenSSL config" in error and "'$'" in error
        assert not (cli.state_dir / "instances" / ZONE / "named.conf").exists()
        assert not list((cli.state_dir / "softhsm").glob("tokens/*"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_install_backports_without_a_terminal_installs_nothing(bare_cli):
    if backports.SOURCES_FILE.exists():
        pytest.skip("this machine already has bookworm-backports configured")
    result = bare_cli("bind", "install-backports", check=False, stdin="yes\n")
    error = one_line_error(result)
    assert "nothing installed" in error and "--yes" in error
    for line in backports.INSTALL_LINES:
        assert line in result.stderr  # what it would have run is shown before it asks
    assert not backports.SOURCES_FILE.exists()


def test_install_backports_print_only_shows_the_apt_lines(bare_cli):
    result = bare_cli("bind", "install-backports", "--print")
    assert "apt-get install -t bookworm-backports bind9 bind9-utils bind9-dnsutils pkcs11-provider" \
        in result.stderr


def test_bind_env_for_the_stock_route_needs_a_pin_file(tmp_path):
    from bindtools import ensure_stock_bind

    cli = Cli(tmp_path / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(ensure_stock_bind())})
    error = one_line_error(cli("bind", "env", "--bind", "stock", check=False))
    assert "no PIN file" in error and "--pin-file" in error
    assert not list(cli.state_dir.glob("openssl-*.cnf"))


def test_stock_named_after_a_token_loss_says_to_restart_and_a_restart_signs_again(tmp_path):
    """Token removal on the stock route (BIND 9.20 + pkcs11-provider + SoftHSM): named keeps
    serving the old signed zone, reload names the fault and says a restart is needed (a stock
    named keeps failing with `crypto failure` after the token is back, unlike the patched one);
    stop + start with the token back serves the change signed by the same ZSK."""
    from bindtools import ensure_stock_bind
    from test_inline import validated
    from test_rel_health_faults import add_record

    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-stockfault-"))
    base.chmod(0o711)
    cli = Cli(base / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(ensure_stock_bind())})
    port, rndc_port = free_port(), free_port()
    try:
        zone_file = tmp_path / "zone.db"
        zone_file.write_text("$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n"
                             "ns1 A 127.0.0.1\nwww A 127.0.0.2\n")
        report = cli.json("setup-inline", ZONE, "--bind", "stock", "--zone-file", str(zone_file),
                          "--port", str(port), "--rndc-port", str(rndc_port))
        zsk = next(k["tag"] for k in report["keys"] if k["role"] == "zsk")
        tokens = cli.state_dir / "softhsm" / "tokens"
        away = tokens.with_name("tokens.away")
        tokens.rename(away)
        add_record(zone_file, "during-outage")
        error = one_line_error(cli("named", "reload", ZONE, check=False))
        assert "named cannot sign" in error and "crypto failure" in error
        assert "restart named" in error and "retries by itself" not in error
        assert validated(ZONE, "SOA", port)[1] == {zsk}  # the old signed zone is still served
        if tokens.exists():  # the CLI may have re-created an empty tokens dir meanwhile
            tokens.rmdir()
        away.rename(tokens)
        cli("named", "stop", ZONE)
        cli("named", "start", ZONE)
        assert validated(ZONE, "A", port, f"during-outage.{ZONE}")[1] == {zsk}
    finally:
        for pid_file in (cli.state_dir / "instances").glob("*/named.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        shutil.rmtree(base, ignore_errors=True)


def test_stock_named_start_with_a_wrong_pin_in_the_instance_file_is_one_line_and_no_named(tmp_path):
    """pkcs11-provider logs no reason for a wrong PIN (named says only `receive_secure_serial:
    not found`): named start proves the instance's PIN file with one login first, names the file
    and starts nothing. Fails on the code before this check (the error named no PIN)."""
    from bindtools import ensure_stock_bind

    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-stockpin-"))
    base.chmod(0o711)
    cli = Cli(base / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(ensure_stock_bind())})
    cli.ports = (free_port(), free_port())
    try:
        cli("setup-inline", ZONE, "--bind", "stock", "--port", str(cli.ports[0]),
            "--rndc-port", str(cli.ports[1]))
        cli("named", "stop", ZONE)
        pin_file = cli.state_dir / "instances" / ZONE / "token.pin"
        good = pin_file.read_text()
        with pin_file.open("w") as handle:  # keeps the file's owner and mode
            handle.write("wrong-pin-1\n")
        result = cli("named", "start", ZONE, check=False)
        error = one_line_error(result)
        assert result.returncode == 5
        assert "wrong user PIN" in error and str(pin_file) in error and "not started" in error
        assert named_pid(cli) is None
        with pin_file.open("w") as handle:
            handle.write(good)
        assert cli.json("named", "start", ZONE)["running"]
    finally:
        for pid_file in (cli.state_dir / "instances").glob("*/named.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        shutil.rmtree(base, ignore_errors=True)
