"""The tpm2 profile on a real (software) TPM: swtpm + tpm2-abrmd started by `tpm2 simulator`,
tokens made by tpm2-pkcs11's own C_InitToken, keys generated inside the TPM."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import one_line_error
from namedproc import alive
from tpm2_fixtures import (  # noqa: F401 - fixtures
    MODULE,
    TPM_TOKEN,
    record,
    tp,
    tpm2_cli,
    tpm2_token,
)


def test_simulator_start_status_stop(tpm2_cli):
    rec = record(tpm2_cli)
    status = tpm2_cli("tpm2", "simulator", "status")
    for name in ("swtpm", "dbus-daemon", "tpm2-abrmd"):
        assert f"{name}: pid" in status.stdout and "gone" not in status.stdout
    report = json.loads(tpm2_cli("tpm2", "simulator", "status", "--json").stdout)
    assert report["running"] and report["tcti"] == "tabrmd:bus_type=session"
    # swtpm listens on loopback only, on the ports it recorded (server and server+1).
    listening = Path("/proc/net/tcp").read_text()
    for port in (rec["port"], rec["ctrl_port"]):
        assert f"0100007F:{port:04X}" in listening
        assert f"00000000:{port:04X}" not in listening
    again = tpm2_cli("tpm2", "simulator", "start")
    assert "already running" in again.stdout and record(tpm2_cli) == rec
    stopped = tpm2_cli("tpm2", "simulator", "stop")
    assert "stopped" in stopped.stdout
    assert not any(alive(rec[key]) for key in ("swtpm_pid", "dbus_pid", "abrmd_pid"))
    assert not Path(rec["bus"]).exists() and record(tpm2_cli) is None
    after = tpm2_cli("tpm2", "simulator", "status", check=False)
    assert after.returncode == 3 and "not running" in after.stdout


def test_token_init_list_show_rng_and_pins_never_on_a_command_line(tpm2_cli, tmp_path):
    """Every program the CLI runs is wrapped by a recorder that logs its argv and runs the real
    one: the PINs appear in none (tpm2_ptool addtoken would want them as arguments)."""
    log = tmp_path / "argv.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for tool in ("tpm2_ptool", "tpm2_create", "tpm2_createprimary", "tpm2_evictcontrol"):
        real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        wrapper = wrappers / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    env = {"PATH": f"{wrappers}:{os.environ['PATH']}"}
    tp(tpm2_cli, "token", "init", "--label", TPM_TOKEN, "--generate-pins", env=env)
    tokens = json.loads(tp(tpm2_cli, "token", "list", "--json").stdout)
    made = [t for t in tokens if t["label"] == TPM_TOKEN]
    assert len(made) == 1 and made[0]["flags"]["initialized"] and made[0]["flags"]["user_pin_initialized"]
    assert (tpm2_cli.state_dir / "tpm2" / "store" / "tpm2_pkcs11.sqlite3").exists()
    pin_file = tpm2_cli.state_dir / "pins" / f"{TPM_TOKEN}.pin"
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    shown = json.loads(tp(tpm2_cli, "token", "show", "--label", TPM_TOKEN, "--json").stdout)
    assert shown["token"]["manufacturer"] == "IBM" and shown["objects"] == []
    rng = tp(tpm2_cli, "token", "rng", "--label", TPM_TOKEN, "--bytes", "32", "--json")
    assert len(bytes.fromhex(json.loads(rng.stdout)["hex"])) == 32
    # erase: SO PIN proven once, then `tpm2_ptool rmtoken` (no PIN) and a fresh C_InitToken
    tp(tpm2_cli, "keygen", "example.test", "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
       "--token", TPM_TOKEN)
    tp(tpm2_cli, "token", "erase", "--label", TPM_TOKEN, "--force", "--yes", "--destroy-active-keys",
       env=env)
    shown = json.loads(tp(tpm2_cli, "token", "show", "--label", TPM_TOKEN, "--json").stdout)
    assert shown["objects"] == []
    pins = [tpm2_cli.pin(TPM_TOKEN),
            (tpm2_cli.state_dir / "pins" / f"{TPM_TOKEN}.so-pin").read_text().strip()]
    recorded = log.read_text()
    assert "tpm2_ptool rmtoken" in recorded
    assert "addtoken" not in recorded
    for pin in pins:
        assert pin not in recorded


def test_keygen_ecdsa_p256_p384_and_rsa_inside_the_tpm(tpm2_token):
    made = {}
    for algorithm in ("ECDSAP256SHA256", "ECDSAP384SHA384", "RSASHA256"):
        result = tp(tpm2_token, "keygen", "example.test", "--role", "zsk", "--algorithm", algorithm,
                    "--token", TPM_TOKEN)
        assert "generating" in result.stderr  # progress is shown while the TPM works
        made[algorithm] = result.stdout.split()[0]
    shown = json.loads(tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--json").stdout)
    private = [(item["object"], item["dnssec"]) for item in shown["objects"]
               if item["object"]["object_class"] == "private"]
    assert len(private) == 3
    for obj, dnssec in private:
        assert obj["sensitive"] and not obj["extractable"]
        assert dnssec and dnssec["matches_token"]
    curves = sorted(obj["curve"] or f"rsa{obj['size']}" for obj, _ in private)
    assert curves == ["rsa2048", "secp256r1", "secp384r1"]
    for stem in made.values():
        text = (tpm2_token.key_dir / f"{stem}.private").read_text()
        assert "PrivateKey" not in text and "Label:" in text
    # token delete: one object at a time, an active key's private half only with --force twice
    label = next(obj["label"] for obj, _ in private if obj["curve"] == "secp384r1")
    refused = tp(tpm2_token, "token", "delete", "--label", TPM_TOKEN, "--object", label,
                 "--type", "private", "--force", check=False)
    assert refused.returncode == 7
    for kind, force in (("private", ["--force", "--force"]), ("public", ["--force"])):
        tp(tpm2_token, "token", "delete", "--label", TPM_TOKEN, "--object", label, "--type", kind,
           *force)
    shown = json.loads(tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--json").stdout)
    assert label not in [item["object"]["label"] for item in shown["objects"]]
    assert len(shown["objects"]) == 4


def test_named_environment_comes_from_the_profile(tpm2_token):
    """What named gets (module_env): the module, the store, the TCTI and the simulator's bus."""
    code = ("import json,sys; from bindpkcs11.state import StateDir; "
            "from bindpkcs11.token.profiles import get_profile; "
            "print(json.dumps(get_profile('tpm2', StateDir.open(sys.argv[1])).module_env()))")
    out = subprocess.run([sys.executable, "-c", code,
                          str(tpm2_token.state_dir)], capture_output=True, text=True,
                         env=tpm2_token.env, check=True).stdout
    env = json.loads(out)
    rec = record(tpm2_token)
    assert env == {
        "TPM2_PKCS11_TCTI": "tabrmd:bus_type=session",
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={rec['bus']}",
        "TPM2_PKCS11_STORE": str(tpm2_token.state_dir / "tpm2" / "store"),
        "TPM2_PKCS11_BACKEND": "esysdb",
        "PKCS11_LIBRARY_PATH": MODULE,
    }


def test_explicit_tcti_wins_and_an_unreachable_one_is_one_line(tpm2_token):
    rec = record(tpm2_token)
    listed = tp(tpm2_token, "--tcti", "tabrmd:bus_type=session", "token", "list", "--json",
                env={"DBUS_SESSION_BUS_ADDRESS": f"unix:path={rec['bus']}"})
    assert TPM_TOKEN in [t["label"] for t in json.loads(listed.stdout)]
    bad = tp(tpm2_token, "--tcti", "device:/dev/no-such-tpm", "token", "list", check=False)
    assert "/dev/no-such-tpm" in one_line_error(bad) and bad.returncode == 3
