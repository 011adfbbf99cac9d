"""systemd units for an instance: named, the offline-KSK signer, the monitor (`bindpkcs11 systemd install`).

Units are rendered from the package's templates/systemd/ and written atomically into a unit
directory (default /etc/systemd/system). Secrets reach the services only as files systemd hands
over (LoadCredential=, read from $CREDENTIALS_DIRECTORY via %d): an Environment= line would show
the PIN to anyone who can read the unit or `systemctl show` it. Every value goes into a unit line
unquoted, so values with whitespace, quotes, backslashes, '%' (a systemd specifier) or control
characters are refused rather than escaped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import dns.name
import jinja2

from bindpkcs11 import resources
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import privileges
from bindpkcs11.bind.instance import Instance
from bindpkcs11.dnssec.dnskey import zone_label_text
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.output import printable
from bindpkcs11.state import StateDir

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
MONITOR_INTERVAL = "5min"
_UNSAFE = frozenset(" \t\"'\\%;$`") | frozenset(map(chr, range(0x20))) | {"\x7f"}
# Profiles whose token is a file in the state dir: named needs no device node at all.
_FILE_TOKENS = {"softhsm"}


class UnsafeUnitValue(UsageError):
    """A value cannot be written into a systemd unit."""


@dataclass(frozen=True)
class SignerUnitRequest:
    """The offline-KSK signer's inputs, as `signer run` takes them; the passphrase only as a file."""

    unsigned: Path
    bundles: Path
    out: Path
    passphrase_file: Path


def unit_value(value: object) -> object:
    """jinja2's `finalize`: every rendered value is checked here (see the module docstring)."""
    text = str(value)
    bad = sorted(set(text) & _UNSAFE)
    if bad:
        raise UnsafeUnitValue(f"'{printable(text)}' cannot be written into a systemd unit: it contains "
                              f"{', '.join(repr(c) for c in bad)}; use a path without spaces, quotes or '%'")
    return value


def command_line() -> str:
    """How a unit runs this bindpkcs11: the console script beside this interpreter (a venv or
    /usr/local/bin install), else the interpreter with `-m`."""
    script = Path(sys.executable).parent / "bindpkcs11"
    return str(script) if script.exists() else f"{sys.executable} -m bindpkcs11"


def _environment() -> jinja2.Environment:
    return resources.template_environment(unit_value)


def render(state: StateDir, zone: dns.name.Name,
           signer: SignerUnitRequest | None = None) -> dict[str, str]:
    """{unit file name: text} for the zone's instance (made by setup-inline) and, when asked, its signer."""
    instance = Instance.for_zone(state, zone)
    settings = instance.load_settings()
    label = zone_label_text(zone)
    env = _environment()
    common = {"zone": label, "state_dir": state.root, "command": command_line(),
              "protect_home": "read-only" if _under(state.root, _HOMES) else "yes",
              "private_tmp": not _under(state.root, _TMPS)}
    units: dict[str, str] = {}
    named_unit = f"bindpkcs11-named@{label}.service"
    module_env = TokenAccess.build(state, settings.profile, settings.token).profile.module_env()
    units[named_unit] = env.get_template("systemd/named.service.j2").render(
        common, unit=named_unit, user=privileges.DEFAULT_USER, instance_dir=instance.root,
        prefix=state.bind_dir, module_env=sorted(module_env.items()),
        read_write=[instance.root, state.softhsm_dir] if settings.profile in _FILE_TOKENS else [instance.root],
        private_devices=settings.profile in _FILE_TOKENS)
    monitor_service = f"bindpkcs11-monitor@{label}.service"
    monitor_timer = f"bindpkcs11-monitor@{label}.timer"
    units[monitor_service] = env.get_template("systemd/monitor.service.j2").render(
        common, unit=monitor_service, timer=monitor_timer, user=privileges.DEFAULT_USER, read_write=[],
        private_devices=True)
    units[monitor_timer] = env.get_template("systemd/monitor.timer.j2").render(
        common, unit=monitor_timer, service=monitor_service, interval=MONITOR_INTERVAL)
    if signer is not None:
        signer_unit = f"bindpkcs11-signer@{label}.service"
        units[signer_unit] = env.get_template("systemd/signer.service.j2").render(
            common, unit=signer_unit, unsigned=signer.unsigned.resolve(),
            bundles=signer.bundles.resolve(), out=signer.out.resolve(),
            passphrase_file=signer.passphrase_file.resolve(),
            read_write=sorted({state.root, signer.out.resolve().parent}), private_devices=False)
    return units


def install(state: StateDir, zone: dns.name.Name, unit_dir: Path,
            signer: SignerUnitRequest | None = None) -> list[Path]:
    """Render every unit first (nothing is written if one fails), then write each atomically."""
    units = render(state, zone, signer)
    if signer is not None and not signer.passphrase_file.is_file():
        raise UsageError(f"passphrase file {printable(str(signer.passphrase_file))} does not exist: "
                         "the signer unit hands it to the signer with LoadCredential=")
    if not unit_dir.is_dir():
        raise UsageError(f"unit directory {printable(str(unit_dir))} does not exist: create it or "
                         "give --unit-dir")
    written = []
    for name, text in units.items():
        write_atomic(unit_dir / name, text, mode=0o644)
        written.append(unit_dir / name)
    return written


_HOMES = (Path("/home"), Path("/root"), Path("/run/user"))
_TMPS = (Path("/tmp"), Path("/var/tmp"))


def _under(path: Path, tops: tuple[Path, ...]) -> bool:
    """Whether the state dir sits where ProtectHome=yes or PrivateTmp=yes would hide it from the unit."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(top) for top in tops)
