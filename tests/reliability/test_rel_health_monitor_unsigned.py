"""Issue 8 item 8: `monitor --unsigned FILE` checks that the served serial follows the unsigned one.

Stock named serves a zone signed by stock dnssec-signzone; the operator's unsigned file moves on
to a newer serial. monitor keeps no state, so it dates the lag from the file's mtime: ok within
--lag-warning, warning after it, critical after --lag-critical. Before, monitor said ok forever.
"""

from __future__ import annotations

import json
import os
import time

import dns.name
import pytest

from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import one_line_error
from namedproc import NamedProcess, free_port
from test_monitor import SERIAL, ZONE, keys, sign  # noqa: F401 (fixture)


def unsigned_file(tmp_path, serial: int, age: int):
    path = tmp_path / "unsigned.zone"
    path.write_text(sample_zone_text(dns.name.from_text(ZONE), serial=serial))
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def monitor(cli, port: int, unsigned, *extra: str):
    result = cli("monitor", ZONE, "--server", "127.0.0.1", "--port", str(port), "--once", "--json",
                 "--unsigned", str(unsigned), *extra, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_served_serial_behind_the_unsigned_file_warns_then_turns_critical(cli, keys, tmp_path):
    signed = sign(tmp_path, keys)
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        code, same = monitor(cli, named.port, unsigned_file(tmp_path, SERIAL, 3600))
        assert code == 0 and not same["serial_lag"]["lagging"], same
        code, fresh = monitor(cli, named.port, unsigned_file(tmp_path, SERIAL + 1, 10))
        assert code == 0 and fresh["serial_lag"]["lagging"] and fresh["problems"] == [], fresh
        code, late = monitor(cli, named.port, unsigned_file(tmp_path, SERIAL + 1, 600))
        assert code == 1 and late["status"] == "warning", late
        assert any(p.startswith("serial lag: served serial 2026112701 behind unsigned serial "
                                "2026112702") for p in late["problems"]), late
        code, stale = monitor(cli, named.port, unsigned_file(tmp_path, SERIAL + 1, 7200))
        assert code == 2 and stale["status"] == "critical", stale
        code, relaxed = monitor(cli, named.port, unsigned_file(tmp_path, SERIAL + 1, 7200),
                                "--lag-warning", "3h", "--lag-critical", "4h")
        assert code == 0, relaxed
        code, older = monitor(cli, named.port, unsigned_file(tmp_path, SERIAL - 1, 7200))
        assert code == 0 and not older["serial_lag"]["lagging"], older


@pytest.mark.parametrize("make, extra, message", [
    (lambda d: d / "missing.zone", [], "cannot read zone file"),
    (lambda d: (os.mkfifo(d / "fifo"), d / "fifo")[1], [], "is a FIFO"),
    (lambda d: (d / "junk.zone").write_text("not a zone\n") and d / "junk.zone", [],
     "has no usable SOA"),
    (lambda d: unsigned_file(d, SERIAL, 0), ["--lag-warning", "1h", "--lag-critical", "5mi"],
     "--lag-critical 5mi is shorter than --lag-warning 1h"),
    (lambda d: unsigned_file(d, SERIAL, 0), ["--lag-warning", "0"], "invalid --lag-warning '0'"),
])
def test_bad_unsigned_input_is_one_line_exit_2(cli, tmp_path, make, extra, message):
    path = make(tmp_path)
    result = cli("monitor", ZONE, "--port", str(free_port()), "--once", "--unsigned", str(path),
                 *extra, check=False, timeout=20)
    assert result.returncode == 2
    assert message in one_line_error(result)
