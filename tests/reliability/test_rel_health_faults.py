"""Issue 8 item 8: the tool sees what named sees when it cannot sign.

One test per fault (token directory gone, a key file's Label naming a missing key, a wrong
token.pin, a missing token.pin): `named reload`, `named start`, `named status` and `monitor`
each report the failure with named's own reason (the shim's log line), where they all said "ok"
before. Real SoftHSM token, real patched named on loopback high ports.
"""

from __future__ import annotations

import base64
from pathlib import Path

from conftest import one_line_error
from test_inline import ZONE, inline_cli, named_pid, poll, setup, validated  # noqa: F401 (fixture)

UNSIGNED = "$TTL 300\n@ IN SOA ns1 hostmaster 10 3600 600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
TOKEN_GONE = "token 'bindpkcs11' (module /usr/lib/softhsm/libsofthsm2.so) not found"
KEY_GONE = "key 'no-such-key' on token 'bindpkcs11' not found"
WRONG_PIN = "PIN incorrect"
NO_PIN = "cannot read PIN file"


def instance_dir(cli) -> Path:
    return cli.state_dir / "instances" / ZONE


def serve(cli, tmp_path: Path) -> Path:
    """setup-inline with an operator zone file; returns that file."""
    zone_file = tmp_path / f"{ZONE}.zone"
    zone_file.write_text(UNSIGNED)
    setup(cli, "--zone-file", str(zone_file))
    return zone_file


def add_record(zone_file: Path, name: str) -> None:
    with zone_file.open("a") as handle:
        handle.write(f"{name} IN A 127.0.0.9\n")


def remove_token_dir(cli) -> Path:
    tokens = cli.state_dir / "softhsm" / "tokens"
    away = tokens.with_name("tokens.away")
    tokens.rename(away)
    return away


def point_zsk_label_at_a_missing_key(cli, target: bytes = b"no-such-key") -> None:
    label = base64.b64encode(b"pkcs11:token=bindpkcs11;object=" + target + b"\0").decode()
    for key in (instance_dir(cli) / "keys").glob("*.key"):
        if " DNSKEY 256 " in key.read_text():
            private = key.with_suffix(".private")
            lines = [f"Label: {label}" if line.startswith("Label:") else line
                     for line in private.read_text().splitlines()]
            private.write_text("\n".join(lines) + "\n")
            return
    raise AssertionError("no ZSK key file")


def assert_status_reports(cli, reason: str) -> None:
    status = cli("named", "status", ZONE, check=False)
    assert status.returncode == 1, status.stdout
    assert reason in status.stdout, status.stdout


def assert_monitor_reports(cli, reason: str, code: int) -> str:
    """monitor (instance mode, tiny lag periods) reaches exit `code` naming named's reason."""

    def reported():
        result = cli("monitor", ZONE, "--once", "--lag-warning", "1", "--lag-critical", "2",
                     check=False)
        return result if result.returncode == code and reason in result.stdout else None

    return poll(reported, deadline=20, what=f"monitor exit {code} with '{reason}'").stdout


def assert_running_fault_reported(cli, zone_file: Path, reason: str) -> None:
    """reload, status, monitor, then stop + start: each fails naming `reason`."""
    add_record(zone_file, "added")
    error = one_line_error(cli("named", "reload", ZONE, check=False))
    assert reason in error and "loaded, but named cannot sign" in error, error
    assert_status_reports(cli, reason)
    text = assert_monitor_reports(cli, reason, 2)
    assert "serial lag" in text and "not signed yet" in text, text
    cli("named", "stop", ZONE)
    error = one_line_error(cli("named", "start", ZONE, check=False))
    assert reason in error and "stopped named" in error, error
    assert named_pid(cli) is None
    assert_status_reports(cli, reason)


def test_token_directory_gone_is_reported_by_reload_status_monitor_and_start(inline_cli, tmp_path):
    zone_file = serve(inline_cli, tmp_path)
    remove_token_dir(inline_cli)
    assert_running_fault_reported(inline_cli, zone_file, TOKEN_GONE)


def test_label_naming_a_missing_key_is_reported_by_reload_status_monitor_and_start(inline_cli,
                                                                                   tmp_path):
    zone_file = serve(inline_cli, tmp_path)
    point_zsk_label_at_a_missing_key(inline_cli)
    assert_running_fault_reported(inline_cli, zone_file, KEY_GONE)


def test_label_naming_the_wrong_key_is_reported_by_reload_status_and_monitor(inline_cli, tmp_path):
    """The token holds the key the Label names, but it is the KSK: named signs without an error
    and serves RRSIGs that do not validate. reload, status and monitor say so."""
    zone_file = serve(inline_cli, tmp_path)
    ksk = next(p for p in (instance_dir(inline_cli) / "keys").glob("*.key")
               if " DNSKEY 257 " in p.read_text())
    ksk_object = base64.b64decode(next(line for line in ksk.with_suffix(".private").read_text()
                                       .splitlines() if line.startswith("Label:"))[7:])
    point_zsk_label_at_a_missing_key(inline_cli, ksk_object.rstrip(b"\0").split(b"object=")[1])
    add_record(zone_file, "wrong")
    error = one_line_error(inline_cli("named", "reload", ZONE, check=False))
    assert "not served signed" in error and "signature does not verify" in error, error
    status = inline_cli("named", "status", ZONE, check=False)
    assert status.returncode == 1 and "signature does not verify" in status.stdout
    monitor = inline_cli("monitor", ZONE, "--once", "--check", "wrong/A", check=False)
    assert monitor.returncode == 2 and "signature does not verify" in monitor.stdout


def _pin_fault_reported(cli, zone_file: Path, break_pin, reason: str) -> None:
    """A running named is logged in already (the shim reads the PIN once): a bad token.pin
    matters at the next start, which must fail with named's reason instead of serving the old
    signatures as if all were well."""
    pin_file = instance_dir(cli) / "token.pin"
    good = pin_file.read_text()
    break_pin(pin_file)
    add_record(zone_file, "while-running")
    cli("named", "reload", ZONE)  # named signs with its login: true success
    validated(ZONE, "A", cli.ports[0], f"while-running.{ZONE}")
    cli("named", "stop", ZONE)
    error = one_line_error(cli("named", "start", ZONE, check=False))
    assert reason in error and "stopped named" in error, error
    assert named_pid(cli) is None
    assert_status_reports(cli, reason)
    text = assert_monitor_reports(cli, reason, 2)
    assert "no answer" in text, text
    pin_file.write_text(good)
    cli("named", "start", ZONE)
    assert cli("named", "status", ZONE).returncode == 0


def test_wrong_pin_file_is_reported_by_start_status_and_monitor(inline_cli, tmp_path):
    zone_file = serve(inline_cli, tmp_path)
    _pin_fault_reported(inline_cli, zone_file, lambda path: path.write_text("wrong-pin-0000\n"),
                        WRONG_PIN)


def test_missing_pin_file_is_reported_by_start_status_and_monitor(inline_cli, tmp_path):
    zone_file = serve(inline_cli, tmp_path)
    _pin_fault_reported(inline_cli, zone_file, lambda path: path.unlink(), NO_PIN)


def test_healthy_reload_and_start_wait_for_the_signed_change(inline_cli, tmp_path):
    """The other side: with the token present, reload returns only once the change is served
    signed, and status/monitor are clean."""
    zone_file = serve(inline_cli, tmp_path)
    add_record(zone_file, "fresh")
    result = inline_cli("named", "reload", ZONE)
    assert "loaded and signed" in result.stdout
    _, tags = validated(ZONE, "A", inline_cli.ports[0], f"fresh.{ZONE}")  # no polling needed
    zsk = {k["tag"] for k in inline_cli.json("named", "status", ZONE)["signing"] if k["role"] == "zsk"}
    assert tags == zsk
    health = inline_cli.json("named", "status", ZONE)["health"]
    assert not health["pending"] and not health["errors"] and health["last_signed"]
    assert inline_cli("monitor", ZONE, "--once").returncode == 0
    inline_cli("named", "stop", ZONE)
    assert "validates" in inline_cli("named", "start", ZONE).stdout
    assert inline_cli("named", "status", ZONE).returncode == 0
