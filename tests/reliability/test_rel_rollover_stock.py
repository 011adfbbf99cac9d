"""Bad input and faults for `rollover zsk|ksk` on a stock-route instance (BIND 9.20 + pkcs11-
provider, named's key manager rolls): each is refused in one line before named is asked
anything, and nothing changes: the same key files and .state files, the same token objects, the
same named process serving the zone signed by the same keys.

Real SoftHSM token, the privately extracted stock BIND 9.20.23, a real named on loopback high
ports; the unreachable rndc is a real rndc.conf naming a port nothing listens on.
"""

from __future__ import annotations

import json

from conftest import one_line_error
from namedproc import free_port
from test_inline import ZONE, named_pid, setup, validated
from test_stock_inline import stock_bind, stock_cli  # noqa: F401 - fixtures


def _snapshot(cli) -> tuple:
    """Everything a refused rollover must leave as it was."""
    keys = cli.state_dir / "instances" / ZONE / "keys"
    files = {p.name: p.read_text() for p in keys.iterdir() if p.is_file()}
    shown = cli.json("token", "show", "--label", "bindpkcs11")
    objects = sorted(o["object"]["label"] for o in shown["objects"])
    return files, objects, named_pid(cli), validated(ZONE, "SOA", cli.ports[0])[1]


def _stock_instance(cli, *extra: str) -> dict:
    report = json.loads(setup(cli, "--bind", "stock", "--json", *extra).stdout)
    return {key["role"]: key["tag"] for key in report["keys"]}


def test_stock_rollover_bad_input_is_refused_in_one_line_and_changes_nothing(stock_cli):
    tags = _stock_instance(stock_cli)
    before = _snapshot(stock_cli)
    assert before[3] == {tags["zsk"]}
    cases = [
        # a zone without an instance
        (("rollover", "zsk", "nosuch.test"), "no instance in"),
        (("rollover", "ksk", "nosuch.test"), "no instance in"),
        # a key tag that is not the zone's, or not of the role rolled
        (("rollover", "zsk", ZONE, "--key", "1"), "key 1 is not a ZSK of example.test."),
        (("rollover", "zsk", ZONE, "--key", str(tags["ksk"])),
         f"key {tags['ksk']} is not a ZSK of example.test. (its ZSKs: {tags['zsk']})"),
        (("rollover", "ksk", ZONE, "--key", str(tags["zsk"])),
         f"key {tags['zsk']} is not a KSK of example.test. (its KSKs: {tags['ksk']})"),
        # timings named's policy owns
        (("rollover", "zsk", ZONE, "--delete", "now+1d"), "--delete does not apply to a stock"),
        (("rollover", "zsk", ZONE, "--propagation-delay", "1h"),
         "--propagation-delay does not apply to a stock"),
        (("rollover", "ksk", ZONE, "--parent-ds-ttl", "1h"), "--parent-ds-ttl does not apply"),
        (("rollover", "zsk", ZONE, "--test-timings"),
         "setup-inline --bind stock --test-timings"),
        (("rollover", "zsk", ZONE, "--at", "20200101000000"), "--at is in the past"),
        # step 2 of a KSK roll that never started
        (("rollover", "ksk", ZONE, "--ds-published"), "no KSK rollover is waiting for its DS"),
    ]
    for args, expected in cases:
        error = one_line_error(stock_cli(*args, check=False))
        assert expected in error, (args, error)
    assert _snapshot(stock_cli) == before
    assert "dnssec -rollover" not in (stock_cli.state_dir / "instances" / ZONE /
                                      "named.log").read_text()


def test_stock_rollover_with_rndc_unreachable_is_one_line_and_changes_nothing(stock_cli):
    tags = _stock_instance(stock_cli)
    rndc_conf = stock_cli.state_dir / "instances" / ZONE / "rndc.conf"
    original = rndc_conf.read_text()
    before = _snapshot(stock_cli)
    dead_port = free_port()
    rndc_conf.write_text(original.replace(f"default-port {stock_cli.ports[1]};",
                                          f"default-port {dead_port};"))
    try:
        for role in ("zsk", "ksk"):
            error = one_line_error(stock_cli("rollover", role, ZONE, check=False))
            assert "rndc dnssec -status failed" in error and "nothing was changed" in error
            assert "named status" in error
    finally:
        rndc_conf.write_text(original)
    assert _snapshot(stock_cli) == before
    assert before[3] == {tags["zsk"]}


def test_stock_rollover_with_named_stopped_is_refused(stock_cli):
    _stock_instance(stock_cli)
    stock_cli("named", "stop", ZONE)
    keys = stock_cli.state_dir / "instances" / ZONE / "keys"
    files = {p.name: p.read_text() for p in keys.iterdir()}
    for role in ("zsk", "ksk"):
        error = one_line_error(stock_cli("rollover", role, ZONE, check=False))
        assert "named for example.test. is not running" in error
        assert "'bindpkcs11 named start example.test.'" in error
    assert {p.name: p.read_text() for p in keys.iterdir()} == files
