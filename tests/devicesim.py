"""One start-and-always-stop for the emulated devices the tests run through the CLI: the TPM
simulator (`tpm2 simulator`), the OpenPGP card simulator (`card simulator`) and the opencryptoki
sandbox (`opencryptoki sandbox`).

Each device used to have its own copy of this in its fixtures module; they differed only in the
command, the environment the device sets for itself and the daemons to kill if the CLI's stop
left them. A state dir lives under /tmp itself (mode 0711 above it): named runs as `bind` when
the tests run as root, and pytest's own temp root is private to root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from conftest import Cli, clean_env
from namedproc import alive, free_port, kill_instance_nameds


@dataclass(frozen=True)
class EmulatedDevice:
    """How the CLI starts and stops one emulated device, and what is left to kill if it fails."""

    command: tuple[str, ...]  # the CLI command before start|stop, e.g. ("tpm2", "simulator")
    start_timeout: float
    daemon_pids: Callable[[Cli], Iterable[int | None]]  # read before the CLI's stop
    own_env: tuple[str, ...] = ()  # variables the device sets itself; a caller's would mislead

    def cli_in(self, base: Path, extra_env: dict | None = None) -> Cli:
        """A CLI on base/state with two free ports, the device's own variables removed."""
        env = clean_env() | (extra_env or {})
        for variable in self.own_env:
            env.pop(variable, None)
        cli = Cli(base / "state", env)
        cli.ports = (free_port(), free_port())
        return cli

    def start(self, cli: Cli) -> None:
        cli(*self.command, "start", timeout=self.start_timeout)

    def stop(self, cli: Cli) -> None:
        """named first (it holds a session on the device), then the device through the CLI;
        whatever is still alive after that is killed, so a failed test leaves no daemon."""
        kill_instance_nameds(cli.state_dir)
        pids = [pid for pid in self.daemon_pids(cli) if pid]
        cli(*self.command, "stop", check=False, timeout=60)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def state_dir(self, prefix: str, extra_env: dict | None = None,
                  started: bool = True) -> Iterator[Cli]:
        """A CLI on a fresh state dir with the device running (unless `started` is False);
        the device and any named are stopped and the dir removed after, pass or fail."""
        base = Path(tempfile.mkdtemp(prefix=prefix))
        base.chmod(0o711)
        cli = self.cli_in(base, extra_env)
        try:
            if started:
                self.start(cli)
            yield cli
        finally:
            self.stop(cli)
            shutil.rmtree(base, ignore_errors=True)


def bind_dir_env(request) -> dict:
    """`BINDPKCS11_BIND_DIR` for a test that also asks for the `patched_bind` fixture."""
    if "patched_bind" in request.fixturenames:
        return {"BINDPKCS11_BIND_DIR": str(request.getfixturevalue("patched_bind"))}
    return {}
