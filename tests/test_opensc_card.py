"""Issue 9, the opensc profile end to end on the emulated OpenPGP card (jcecard behind vsmartcard's
vpcd in a private pcscd, started by `bindpkcs11 card simulator`): token init, keygen on the card,
ksk presign, and a small inline-signed zone validated by delv and monitor. Everything started is
stopped, pass or fail."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

from card_fixtures import (  # noqa: F401 - fixtures
    CARD_KEY,
    CARD_TOKEN,
    card_cli,
    card_token,
    record,
    sc,
    stored_pin,
)
from test_tpm2_inline import delv, delv_anchor, named_environ

ZONE = "example.test"


def test_simulator_start_status_stop_and_the_card_state_survives(card_cli):
    status = json.loads(card_cli("card", "simulator", "status", "--json").stdout)
    assert status["running"] and set(status["processes"]) == {"pcscd", "card"}
    assert status["socket"] == str(card_cli.state_dir / "card" / "run" / "pcscd.comm")
    again = json.loads(card_cli("card", "simulator", "start", "--json").stdout)
    assert again["started"] is False  # found running, nothing doubled
    # pcscd sees only the emulated reader, in its own network namespace
    pid = record(card_cli)["pcscd_pid"]
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    listed = json.loads(sc(card_cli, "token", "list", "--json").stdout)
    assert [t["label"] for t in listed] == [CARD_TOKEN, "OpenPGP card (User PIN (sig))"]
    stopped = json.loads(card_cli("card", "simulator", "stop", "--json").stdout)
    assert sorted(stopped["stopped"]) == ["card", "pcscd"]
    gone = card_cli("card", "simulator", "status", check=False)
    assert gone.returncode == 3 and "not running" in gone.stdout
    assert not (card_cli.state_dir / "card" / "run" / "pcscd.comm").exists()


def test_token_init_keygen_with_progress_and_pins_never_on_a_command_line(card_cli, tmp_path):
    """The vendor tools run through a recorder that logs their argv: the PINs appear in none."""
    log = tmp_path / "argv.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for tool in ("openpgp-tool", "pkcs15-tool"):
        real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        wrapper = wrappers / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    env = {"PATH": f"{wrappers}:{os.environ['PATH']}"}
    sc(card_cli, "token", "init", "--label", CARD_TOKEN, "--generate-pins", env=env, timeout=180)
    pins = [stored_pin(card_cli), stored_pin(card_cli, "so-pin")]
    recorded = log.read_text()
    assert "openpgp-tool --erase" in recorded and "pkcs15-tool --change-pin" in recorded
    assert all(pin not in recorded for pin in pins)
    pin_file = card_cli.state_dir / "pins" / "OpenPGP%20card%20%28User%20PIN%29.pin"
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    # keygen logs in with the new SO (admin) PIN, token show with the new user PIN
    # keygen on the card: slow, so it shows progress; the card names the key itself
    result = sc(card_cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256",
                "--token", CARD_TOKEN, timeout=180)
    assert "generating RSASHA256 KSK on token" in result.stderr
    shown = json.loads(sc(card_cli, "token", "show", "--label", CARD_TOKEN, "--json").stdout)
    private = [o["object"] for o in shown["objects"] if o["object"]["object_class"] == "private"]
    assert len(private) == 1 and private[0]["label"] == CARD_KEY
    key_file = next(card_cli.key_dir.glob("K*.private")).read_text()
    assert "PrivateKey" not in key_file and "Label:" in key_file
    rng = sc(card_cli, "token", "rng", "--label", CARD_TOKEN, "--bytes", "32", "--json")
    assert len(bytes.fromhex(json.loads(rng.stdout)["hex"])) == 32
    # a second token init would wipe that key: refused
    again = sc(card_cli, "token", "init", "--label", CARD_TOKEN, "--generate-pins", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_ksk_presign_a_year_of_weekly_bundles_on_the_card(card_token, tmp_path):
    cli = card_token
    sc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256", "--token", CARD_TOKEN,
       timeout=180)
    zsk_dir = tmp_path / "zsks"
    cli("keygen", ZONE, "--role", "zsk", "--algorithm", "RSASHA256", "--software",
        "--key-dir", str(zsk_dir))
    passphrase = tmp_path / "pass"
    passphrase.write_text("a bundle passphrase\n")
    passphrase.chmod(0o600)
    out = tmp_path / "bundles"
    started = time.monotonic()
    result = sc(cli, "ksk", "presign", ZONE, "--token", CARD_TOKEN, "--ksk", CARD_KEY,
                "--zsk-dir", str(zsk_dir), "--start", str(int(time.time())), "--periods", "52",
                "--passphrase-file", str(passphrase), "--out", str(out), "--yes", "--json",
                timeout=600)
    seconds = time.monotonic() - started
    report = json.loads(result.stdout)
    assert len(list(out.glob("*.bundle"))) == 52
    print(f"presign 52 weekly bundles on the emulated card: {seconds:.1f} s; {report.get('signatures')}")


def test_setup_inline_on_the_card_validates_with_delv_and_monitor(card_token, patched_bind, tmp_path):
    """KSK on the card (one key per token), ZSK in software; named (as bind when root) signs the
    DNSKEY RRset through the shim, which reaches the private pcscd through PCSCLITE_CSOCK_NAME."""
    cli = card_token
    port, rndc_port = cli.ports
    result = sc(cli, "setup-inline", ZONE, "--token", CARD_TOKEN, "--algorithm", "RSASHA256",
                "--port", str(port), "--rndc-port", str(rndc_port), "--json", timeout=300)
    report = json.loads(result.stdout)
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    ksk = next(key for key in report["keys"] if key["role"] == "ksk")
    assert ksk["uri"] == "pkcs11:token=OpenPGP%20card%20(User%20PIN);object=Authentication%20key"
    zsk = next(key for key in report["keys"] if key["role"] == "zsk")
    assert zsk["uri"] == ""  # the card holds only the KSK: the ZSK is made in software
    key_dir = Path(report["instance_dir"]) / "keys"
    ksk_file = next(p for p in key_dir.glob("*.key") if f"+{tags['ksk']:05d}" in p.name)
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_file))
    for name, rdtype in ((ZONE, "SOA"), (ZONE, "DNSKEY"), (f"www.{ZONE}", "A")):
        checked = delv(anchors, port, name, rdtype)
        assert checked.returncode == 0 and "; fully validated" in checked.stdout, checked
    assert f" {tags['ksk']} {ZONE}." in delv(anchors, port, ZONE, "DNSKEY").stdout  # card-signed
    monitor = json.loads(sc(cli, "monitor", ZONE, "--port", str(port), "--once", "--json").stdout)
    assert monitor["status"] == "ok"
    pid = int((Path(report["instance_dir"]) / "named.pid").read_text())
    env = named_environ(pid)
    assert env["PCSCLITE_CSOCK_NAME"] == str(cli.state_dir / "card" / "run" / "pcscd.comm")
    assert "PKCS11_LIBRARY_PIN" not in env


def test_bench_measures_the_cards_own_key_and_leaves_it(card_token):
    """An OpenPGP card has one key per token: bench has no room for a temporary key, so it
    measures the card's key (through the shim's signing worker) and never destroys it."""
    cli = card_token
    empty = sc(cli, "bench", "--token", CARD_TOKEN, "--algorithm", "RSASHA256", check=False)
    assert empty.returncode != 0 and "generate its key" in empty.stderr
    key = json.loads(sc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256",
                        "--token", CARD_TOKEN, "--json", timeout=180).stdout)
    result = json.loads(sc(cli, "bench", "--token", CARD_TOKEN, "--algorithm", "RSASHA256",
                           "--sessions", "1,2", "--seconds", "2", "--json", timeout=300).stdout)
    assert [r["sessions"] for r in result["rates"]] == [1, 2]
    assert all(r["per_second"] > 0 for r in result["rates"])
    shown = json.loads(sc(cli, "token", "show", "--label", CARD_TOKEN, "--json").stdout)
    tags = [o["dnssec"]["tag"] for o in shown["objects"] if o["dnssec"]]
    assert key["tag"] in tags
