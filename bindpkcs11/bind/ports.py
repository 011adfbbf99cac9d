"""Which ports an instance may listen on: its own, never another instance's, never a busy one.

named sets SO_REUSEPORT, so a second named on a port that one already serves does not fail: the
two silently share the queries and each answers REFUSED for the other's zone. So every port is
checked against every instance of the state dir (running or not: a stopped one must be able to
start again) and probed with a real bind(), except the ports the instance's own running named
already holds.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from typing import Iterator

from bindpkcs11 import locks
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.errors import UsageError
from bindpkcs11.state import StateDir


def require_ports(state: StateDir, instance: Instance, listen: str, port: int, rndc_port: int,
                  current: InstanceSettings | None) -> None:
    """The ports are free: not another instance's (running or not), and no socket bound there.

    The instance's own running named is the only listener allowed on the ports it already has
    (`current`, its settings while it runs); every other port is probed, always: named sets
    SO_REUSEPORT, so two named on one port would silently share the queries.
    """
    if port == rndc_port:
        raise UsageError(f"--port and --rndc-port are both {port}: choose two ports")
    for other, theirs in other_instances(state, instance):
        for mine, address, what in ((port, listen, "--port"), (rndc_port, "127.0.0.1", "--rndc-port")):
            taken = [(theirs.port, theirs.listen), (theirs.rndc_port, "127.0.0.1")]
            if any(mine == p and _overlap(address, a) for p, a in taken):
                raise UsageError(f"{what} {mine} on {address} belongs to the instance of "
                                 f"{theirs.zone} ({other.root}): choose another {what}")
    if not (current and current.listen == listen and current.port == port):
        require_free_port(listen, port)
    if not (current and current.rndc_port == rndc_port):
        require_free_port("127.0.0.1", rndc_port)


def other_instances(state: StateDir, instance: Instance) -> list[tuple[Instance, InstanceSettings]]:
    """Every other instance in the state dir with readable settings."""
    found = []
    for settings_file in sorted((state.root / "instances").glob("*/instance.json")):
        other = Instance(settings_file.parent)
        if other.root == instance.root:
            continue
        try:
            found.append((other, other.load_settings()))
        except (UsageError, ValueError, TypeError, KeyError):
            continue
    return found


def _overlap(first: str, second: str) -> bool:
    """Two listen addresses collide: the same, or one is the wildcard of the same family."""
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(second)
    return a == b or (a.version == b.version and (a.is_unspecified or b.is_unspecified))


def require_free_port(address: str, port: int) -> None:
    """UsageError when `address:port` is taken (UDP or TCP): named would fail to listen there."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((address, port))
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL:
                    raise UsageError(f"{address} is not an address of this machine: choose one it "
                                     "has with --listen (e.g. 127.0.0.1)") from None
                raise UsageError(
                    f"{address} port {port} is in use ({error.strerror}): choose another with "
                    "--port/--rndc-port or stop what listens there"
                ) from None


@contextlib.contextmanager
def assignment_locked(state: StateDir, wait: float = locks.DEFAULT_WAIT) -> Iterator[None]:
    """The state dir's port lock, held from the check of an instance's ports until its settings
    are saved (setup-inline) or its named listens (named start): two instances of different
    zones checked at the same moment could otherwise both find the same port free."""
    with locks.held(locks.lock_path(state, "ports"), f"port assignment in {state.root}", wait):
        yield
