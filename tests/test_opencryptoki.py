"""Issue 9, the opencryptoki profile: the 2012 demo's "fake HSM", opencryptoki's soft token behind a
pkcsslotd in the sandbox `bindpkcs11 opencryptoki sandbox` runs (a private mount + IPC namespace).

End to end: an RSA KSK made on the soft token, software RSA ZSKs (the zone has one algorithm, and
RSA keygen takes no outside randomness), a `ksk presign` ceremony signing each period's DNSKEY
RRset on the token, then the sandbox stopped (the token is offline) and `signer run` publishing
a zone that validates and that named serves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype

from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import Cli, clean_env, one_line_error
from namedproc import NamedProcess, alive
from occ_fixtures import (  # noqa: F401 - fixtures
    OCC_TOKEN,
    in_sandbox,
    needs_opencryptoki,
    oc,
    occ_cli,
    occ_token,
    sandbox_pid,
)
from test_signer_offline_ksk import dnssec_verify, validate_signed_zone

ZONE = "example.test"
ORIGIN = dns.name.from_text(ZONE)
PERIOD = 300
PASSPHRASE = "opencryptoki ceremony passphrase"
EXIT_NOT_RUNNING = 3

pytestmark = needs_opencryptoki


def test_keygen_presign_and_signer_run_on_the_soft_token(occ_token: Cli, tmp_path: Path):
    cli = occ_token
    ksk = oc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "8", "--token", OCC_TOKEN,
             "--json")
    ksk = json.loads(ksk.stdout)
    shown = oc(cli, "token", "show", "--label", OCC_TOKEN).stdout
    assert ksk["object_label"] in shown and "IBM SoftTok" in shown and "2048 bits" in shown
    start = int(time.time()) - 60
    zsks = tmp_path / "zsks"
    zsk = ["keygen", ZONE, "--role", "zsk", "--algorithm", "8", "--software", "--key-dir",
           str(zsks)]
    old = json.loads(cli(*zsk, "--publish", str(start - 3600),
                        "--activate", str(start - 3600), "--inactive", str(start + PERIOD),
                        "--delete", str(start + 2 * PERIOD), "--json").stdout)
    new = json.loads(cli(*zsk, "--publish", str(start),
                        "--activate", str(start + PERIOD), "--json").stdout)
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE)
    passphrase.chmod(0o600)
    out = tmp_path / "bundles"
    result = json.loads(oc(cli, "ksk", "presign", ZONE, "--ksk", ksk["object_label"],
                           "--token", OCC_TOKEN, "--zsk-dir", str(zsks), "--start", str(start),
                           "--periods", "2", "--test-timings", "--passphrase-file",
                           str(passphrase), "--out", str(out), "--yes", "--json").stdout)
    assert result["token_signatures"] == 2
    assert not (cli.state_dir / "softhsm").exists()  # the token really was opencryptoki's

    oc(cli, "opencryptoki", "sandbox", "stop")  # the KSK goes back into the safe
    unsigned = tmp_path / "example.test.db"
    unsigned.write_text(sample_zone_text(ORIGIN, hosts=20))
    signed = tmp_path / "example.test.signed"
    online = Cli(tmp_path / "online-state", clean_env())
    published = online.json("signer", "run", ZONE, "--unsigned", str(unsigned), "--bundles",
                            str(out), "--out", str(signed), "--once", "--now",
                            str(start + 10), "--test-timings", "--passphrase-file",
                            str(passphrase))
    assert published["published"] and published["zsk_tags"] == [old["tag"]]
    assert validate_signed_zone(signed, start + 10, ksk["tag"]) == {old["tag"]}
    dnssec_verify(signed)
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        query = dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True)
        answer = dns.query.udp(query, "127.0.0.1", port=named.port, timeout=2)
        keys = answer.find_rrset(dns.message.ANSWER, ORIGIN, dns.rdataclass.IN,
                                 dns.rdatatype.DNSKEY)
        assert {dns.dnssec.key_id(key) for key in keys} == {ksk["tag"], old["tag"], new["tag"]}
        sigs = answer.find_rrset(dns.message.ANSWER, ORIGIN, dns.rdataclass.IN,
                                 dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
        assert [sig.key_tag for sig in sigs] == [ksk["tag"]]
        dns.dnssec.validate(keys, sigs, {ORIGIN: keys}, now=start + 10)


def test_sandbox_start_status_stop_leaves_the_host_untouched(occ_cli: Cli):
    host_store = sorted(Path("/var/lib/opencryptoki").rglob("*"))
    pid = sandbox_pid(occ_cli)
    assert alive(pid)
    assert "running, pkcsslotd pid" in occ_cli("opencryptoki", "sandbox", "status").stdout
    again = occ_cli("opencryptoki", "sandbox", "start", "--json").stdout
    assert json.loads(again)["started"] is False and json.loads(again)["pid"] == pid
    oc(occ_cli, "token", "init", "--label", OCC_TOKEN, "--generate-pins")
    assert (occ_cli.state_dir / "opencryptoki" / "lib" / "swtok" / "NVTOK.DAT").exists()
    assert sorted(Path("/var/lib/opencryptoki").rglob("*")) == host_store
    assert "swtok" in in_sandbox(occ_cli, "ls", "/var/lib/opencryptoki").stdout
    occ_cli("opencryptoki", "sandbox", "stop")
    assert not alive(pid)
    status = occ_cli("opencryptoki", "sandbox", "status", check=False)
    assert status.returncode == EXIT_NOT_RUNNING and "not running" in status.stdout
    occ_cli("opencryptoki", "sandbox", "start")  # the token survives a restart
    assert "dnssec" in oc(occ_cli, "token", "list").stdout


def test_init_replaces_the_factory_so_pin_and_erase_needs_the_new_one(occ_token: Cli,
                                                                       tmp_path: Path):
    cli = occ_token
    oc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "8", "--token", OCC_TOKEN)
    factory = tmp_path / "factory-so-pin"
    factory.write_text("87654321\n")
    factory.chmod(0o600)
    refused = oc(cli, "token", "erase", "--label", OCC_TOKEN, "--so-pin-file", str(factory),
                 "--force", "--yes", "--destroy-active-keys", check=False)
    assert "wrong SO PIN" in one_line_error(refused)
    assert "ksk" in oc(cli, "token", "show", "--label", OCC_TOKEN).stdout
    oc(cli, "token", "erase", "--label", OCC_TOKEN, "--force", "--yes", "--destroy-active-keys")
    shown = oc(cli, "token", "show", "--label", OCC_TOKEN).stdout
    assert "ksk" not in shown.split("flags:", 1)[1]
