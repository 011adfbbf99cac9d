"""Issue 8 item 3 with a real setup-inline instance: its live keys survive `token delete --force`
and `token erase`, and named keeps signing with them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import TOKEN, Cli, clean_env, one_line_error
from namedproc import free_port, kill_instance_nameds

ZONE = "example.test"


@pytest.fixture
def inline_cli(patched_bind: Path):
    """A CLI on an empty state dir under /tmp (named runs as `bind` when tests run as root)."""
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-custody-"))
    base.chmod(0o711)
    cli = Cli(base / "state", clean_env() | {"BINDPKCS11_BIND_DIR": str(patched_bind)})
    yield cli
    kill_instance_nameds(cli.state_dir)
    shutil.rmtree(base, ignore_errors=True)


def _soa_signed_by(port: int) -> set[int]:
    response = dns.query.udp(dns.message.make_query(ZONE, "SOA", want_dnssec=True), "127.0.0.1",
                             port=port, timeout=2)
    return {rr.key_tag for rrset in response.answer if rrset.rdtype == dns.rdatatype.RRSIG
            for rr in rrset}


def test_live_instance_keys_are_protected_from_delete_and_erase(inline_cli):
    port, rndc_port = free_port(), free_port()
    result = inline_cli.json("setup-inline", ZONE, "--port", str(port), "--rndc-port", str(rndc_port))
    zsk = next(k for k in result["keys"] if k["role"] == "zsk")
    object_label = zsk["uri"].split("object=")[1].split(";")[0]
    assert zsk["tag"] in _soa_signed_by(port)

    error = one_line_error(inline_cli("token", "delete", "--label", TOKEN, "--object", object_label,
                                      "--type", "private", "--force", check=False))
    assert "active key" in error and f"instance {ZONE}" in error
    error = one_line_error(inline_cli("token", "erase", "--label", TOKEN, "--force", "--yes",
                                      check=False))
    assert "2 active key file(s)" in error and f"instance {ZONE}" in error

    report = inline_cli.json("token", "show", "--label", TOKEN)
    users = {o["dnssec"]["used_by"] for o in report["objects"] if o["dnssec"]}
    assert users == {f"instance {ZONE}"} and len(report["objects"]) == 4
    assert (object_label, "private") in {(o["object"]["label"], o["object"]["object_class"])
                                         for o in report["objects"]}
    assert zsk["tag"] in _soa_signed_by(port)
