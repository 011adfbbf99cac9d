"""The package as a new user gets it: `python -m build`, the wheel in a fresh venv outside the checkout.

The wheel must carry everything bindpkcs11 looks up at run time (templates, BIND patches, the shim's
C source); a lookup relative to the checkout would pass every other test and fail here, because the
venv lives in a temp dir and the checkout is on no path the installed command sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from namedproc import free_port, kill_instance_nameds
from test_inline import validated

ZONE = "example.test"
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGE_DATA = ["bindpkcs11/templates/named.conf.j2", "bindpkcs11/templates/zone.conf.j2",
                "bindpkcs11/templates/systemd/named.service.j2",
                "bindpkcs11/patches/bind-9.18-pkcs11-shim.patch", "bindpkcs11/shim/bp11.c",
                "bindpkcs11/shim/bp11.h"]


def outside_env() -> dict:
    """The tests' environment without anything that points into the checkout."""
    env = clean_env()
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def dist() -> Path:
    """sdist + wheel from `python -m build` (isolated: its own setuptools and cffi, from pyproject.toml).

    The wheel is built from the sdist, so a file missing from the sdist fails the wheel build.
    """
    out = Path(tempfile.mkdtemp(prefix="bindpkcs11-dist-"))
    try:
        result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                                capture_output=True, text=True, timeout=900, cwd=out, env=outside_env())
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_build_makes_an_sdist_and_a_wheel_carrying_the_package_data(dist):
    [sdist] = dist.glob("bindpkcs11-*.tar.gz")
    [wheel] = dist.glob("bindpkcs11-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert set(PACKAGE_DATA) <= names
    assert any(name.startswith("bindpkcs11/_shim") and name.endswith(".so") for name in names)
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {*PACKAGE_DATA, "pyproject.toml", "setup.py", "bindpkcs11/shim/build_shim.py"} <= members


@pytest.fixture
def installed(dist) -> Path:
    """A fresh venv in a temp dir with the wheel installed (not editable); removed after.

    Made from the system's Python (Debian's python3, as an operator would) when there is one: the
    units run the venv's command as `bind`, which cannot reach an interpreter under /root.
    """
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-venv-"))
    base.chmod(0o711)
    python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable
    try:
        subprocess.run([python, "-m", "venv", str(base / "venv")], check=True, timeout=300)
        [wheel] = dist.glob("bindpkcs11-*.whl")
        result = subprocess.run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                                 str(wheel)], capture_output=True, text=True, timeout=900, cwd=base,
                                env=outside_env())
        assert result.returncode == 0, result.stderr[-3000:]
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_wheel_in_a_fresh_venv_outside_the_checkout_runs_setup_inline(installed, patched_bind):
    venv = installed / "venv"
    # A copy of the tests' BIND build, readable by all as an installed BIND is: the monitor unit
    # below runs as `bind`, and the shared build under the checkout's .cache is private to root.
    bind_dir = installed / "bind"
    shutil.copytree(patched_bind, bind_dir, symlinks=True)
    env = outside_env() | {"BINDPKCS11_BIND_DIR": str(bind_dir)}
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import bindpkcs11, bindpkcs11.resources as r; "
                            "print(bindpkcs11.__file__); print(r.templates_dir()); print(r.patches_dir())"],
                           capture_output=True, text=True, env=env, cwd=installed, check=True)
    for line in where.stdout.splitlines():
        assert Path(line).is_relative_to(venv) and not Path(line).is_relative_to(REPO), line
    state = installed / "state"
    port, rndc_port = free_port(), free_port()
    try:
        result = subprocess.run(
            [str(venv / "bin" / "bindpkcs11"), "--state-dir", str(state), "setup-inline", ZONE,
             "--port", str(port), "--rndc-port", str(rndc_port), "--json"],
            capture_output=True, text=True, env=env, cwd=installed, timeout=300)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        tags = {key["role"]: key["tag"] for key in report["keys"]}
        _, soa_tags = validated(ZONE, "SOA", port)
        _, dnskey_tags = validated(ZONE, "DNSKEY", port)
        assert tags["zsk"] in soa_tags and tags["ksk"] in dnskey_tags
        # named.conf came from the installed templates.
        assert (Path(report["instance_dir"]) / "named.conf").read_text().count(ZONE) >= 1
        # The installed systemd templates: the monitor unit's own command, run as its user, finds
        # the zone served and signed (exit 0). systemd itself cannot run here (test_systemd_units.py).
        units = installed / "units"
        units.mkdir()
        subprocess.run([str(venv / "bin" / "bindpkcs11"), "--state-dir", str(state), "systemd", "install",
                        ZONE, "--unit-dir", str(units)], check=True, capture_output=True, env=env, cwd=installed)
        monitor = (units / f"bindpkcs11-monitor@{ZONE}.service").read_text().splitlines()
        command = next(line for line in monitor if line.startswith("ExecStart=")).split("=", 1)[1].split()
        assert command[0] == str(venv / "bin" / "bindpkcs11")
        user = next(line for line in monitor if line.startswith("User=")).split("=", 1)[1]
        as_unit = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
        checked = subprocess.run([*as_unit, *command], capture_output=True, text=True, timeout=120,
                                 env=env, cwd="/")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        kill_instance_nameds(state)


def test_p11kit_header_comes_from_pkg_config_and_falls_back_to_the_debian_path(tmp_path, monkeypatch):
    from bindpkcs11.shim import p11kit

    found = p11kit.include_dirs()
    assert any((Path(d) / "p11-kit" / "pkcs11.h").exists() for d in found), found
    # A pkg-config that knows another location is believed ...
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pkg-config").write_text("#!/bin/sh\necho -I/opt/p11/include\n")
    (fake / "pkg-config").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert p11kit.include_dirs() == ["/opt/p11/include"]
    # ... and one that does not know p11-kit-1 leaves the Debian path.
    (fake / "pkg-config").write_text("#!/bin/sh\nexit 1\n")
    assert p11kit.include_dirs() == [p11kit.FALLBACK_INCLUDE]


def test_package_data_is_found_inside_the_package():
    from bindpkcs11 import resources

    package = Path(__import__("bindpkcs11").__file__).parent
    assert resources.templates_dir() == package / "templates"
    assert (resources.patches_dir() / "bind-9.18-pkcs11-shim.patch").is_file()
    assert (resources.shim_dir() / "bp11.c").is_file()
