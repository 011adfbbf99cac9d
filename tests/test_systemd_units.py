"""`bindpkcs11 systemd install`: the units for a real setup-inline instance, checked by systemd itself.

`systemd-analyze verify` parses every rendered unit as systemd would load it (unknown or misspelled
directives, bad values, missing executables). Starting them needs systemd as PID 1, which this
machine does not run: tests/test_docker_systemd.py boots one in a container and starts them there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_inline import ZONE, inline_cli, setup  # noqa: F401  (fixture)

UNITS = {f"bindpkcs11-named@{ZONE}.service", f"bindpkcs11-monitor@{ZONE}.service",
         f"bindpkcs11-monitor@{ZONE}.timer", f"bindpkcs11-signer@{ZONE}.service"}


def verify(unit_dir: Path, names: list[str]) -> list[str]:
    """What `systemd-analyze verify` says about the units: its exit status and every line naming
    one of them. It exits 0 after a directive it ignores ("Failed to parse ..., ignoring"), so
    those lines count as failures too."""
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(unit_dir / n) for n in names)],
                            capture_output=True, text=True, timeout=120, env=env)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if str(unit_dir) in line
                or any(name in line for name in names)]
    return problems + ([f"exit {result.returncode}"] if result.returncode else [])


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze (Debian systemd)")
def test_units_for_an_instance_pass_systemd_analyze_verify(inline_cli, tmp_path):
    setup(inline_cli)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    secret = tmp_path / "passphrase"
    secret.write_text("s3cret-Passphrase-42\n")
    secret.chmod(0o600)
    pin = inline_cli.pin()
    result = inline_cli("systemd", "install", ZONE, "--unit-dir", str(unit_dir),
                        "--signer-unsigned", str(tmp_path / "example.test.db"),
                        "--signer-bundles", str(tmp_path / "bundles"),
                        "--signer-out", str(tmp_path / "signed.db"),
                        "--signer-passphrase-file", str(secret))
    assert {p.name for p in unit_dir.iterdir()} == UNITS, result.stdout
    texts = {name: (unit_dir / name).read_text() for name in UNITS}
    named = texts[f"bindpkcs11-named@{ZONE}.service"]
    instance = inline_cli.state_dir / "instances" / ZONE
    for line in ("User=bind", "ProtectSystem=strict", f"ReadWritePaths={instance}",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "LimitCORE=0",
                 f"LoadCredential=token.pin:{instance}/token.pin",
                 "Environment=PKCS11_LIBRARY_PIN_FILE=%d/token.pin"):
        assert line in named.splitlines(), line
    signer = texts[f"bindpkcs11-signer@{ZONE}.service"]
    assert f"LoadCredential=passphrase:{secret}" in signer and "--passphrase-file %d/passphrase" in signer
    assert "monitor example.test --once" in texts[f"bindpkcs11-monitor@{ZONE}.service"]
    # No secret in any unit: not the PIN, not the passphrase, not in an Environment= line.
    for name, text in texts.items():
        assert pin not in text and "s3cret-Passphrase-42" not in text, name
        assert not any(l.startswith("Environment=") and ("PIN=" in l or "PASSPHRASE" in l)
                       for l in text.splitlines()), name
    assert verify(unit_dir, sorted(UNITS)) == []
    # A unit systemd would reject is caught by the same check (the check can fail).
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bindpkcs11-named@x.service").write_text(named.replace("ProtectSystem=strict", "ProtectSystem=bogus"))
    assert any("bogus" in line for line in verify(broken, ["bindpkcs11-named@x.service"]))
    # (tests/test_package.py runs the monitor unit's command as its user from an installed wheel.)
    assert "User=bind" in texts[f"bindpkcs11-monitor@{ZONE}.service"].splitlines()
    # Re-running rewrites the same units (idempotent).
    inline_cli("systemd", "install", ZONE, "--unit-dir", str(unit_dir))
    assert (unit_dir / f"bindpkcs11-named@{ZONE}.service").read_text() == named

