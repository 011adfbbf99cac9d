"""Starting, stopping and finding one instance's named (the patched build or a stock BIND >= 9.20)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

from bindpkcs11 import processes
from bindpkcs11.bind.instance import Instance
from bindpkcs11.bind.programs import lib_dirs
from bindpkcs11.errors import BindPkcs11Error, ToolFailed
from bindpkcs11.run import child_env, tail

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
_POLL = 0.05
# OPENSSL_CONF with the libp11 engine breaks every BIND binary (facts.md); secrets never reach
# named: its PIN goes through a 0600 file.
_NOT_FOR_NAMED = ("OPENSSL_CONF",)
_RNDC_NOISE = "received control channel command"


def named_env(prefix: Path, module_env: dict[str, str], pin_file: Path) -> dict[str, str]:
    """named's environment: the token module and its config, and the PIN *file* for the shim."""
    env = {k: v for k, v in child_env().items() if k not in _NOT_FOR_NAMED}
    env.update(module_env)
    env["PKCS11_LIBRARY_PIN_FILE"] = str(pin_file)
    dirs = lib_dirs(prefix)
    if dirs:
        env["LD_LIBRARY_PATH"] = ":".join(map(str, dirs))
    return env


def running_pid(instance: Instance) -> int | None:
    """The pid in named.pid if that process is alive and is a named; else None."""
    try:
        pid = int(instance.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"named" in cmdline and str(instance.named_conf).encode() in cmdline else None


def start(instance: Instance, prefix: Path, env: dict[str, str], user: str | None,
          ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> int:
    """Start named in its own session and wait (polling, with a deadline) until `ready()`.

    named runs in the foreground of a new session (`-f`), so its pid is known at once and an early
    death (bad config, port taken, token trouble) is reported with its log instead of a timeout.
    """
    args = [str(prefix / "sbin" / "named"), "-f", "-c", str(instance.named_conf)]
    if user:
        args += ["-u", user]
    with open(instance.stdio_log, "ab") as stdio:
        process = subprocess.Popen(args, cwd=instance.root, env=env, stdin=subprocess.DEVNULL,
                                   stdout=stdio, stderr=stdio, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ToolFailed(f"named exited at start-up (exit {process.returncode}): "
                                 f"{log_tail(instance)}")
            if ready():
                return process.pid
            time.sleep(_POLL)
    except BindPkcs11Error as error:
        if process.poll() is not None:
            raise
        processes.terminate(process.pid, STOP_TIMEOUT)  # a start that failed leaves no named behind
        raise type(error)(f"{error}; stopped named: fix the cause, then start it again") from None
    except BaseException:
        processes.terminate(process.pid, STOP_TIMEOUT)
        raise
    processes.terminate(process.pid, STOP_TIMEOUT)
    why = getattr(ready, "why_not", None)
    raise ToolFailed(f"named did not serve a signed zone within {timeout:.0f} s; stopped it: "
                     + (f"{why()}; named's log: " if why else "") + log_tail(instance))


def stop(instance: Instance, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the instance's named (SIGTERM, then SIGKILL after `timeout`); False if none ran."""
    pid = running_pid(instance)
    if pid is None:
        return False
    processes.terminate(pid, timeout)
    instance.pid_file.unlink(missing_ok=True)
    return True


def log_tail(instance: Instance, lines: int = 4) -> str:
    """The last lines of named's logs, for one-line errors."""
    text = ""
    for path in (instance.stdio_log, instance.log_file):
        try:
            text += path.read_text(errors="replace")
        except OSError:
            continue
    # rndc polling (status, readiness checks) logs a line per command: not news
    text = "\n".join(line for line in text.splitlines() if _RNDC_NOISE not in line)
    return tail(text, lines) if text else "no log output"


def require_stopped(instance: Instance) -> None:
    pid = running_pid(instance)
    if pid is not None:
        raise BindPkcs11Error(f"named for this zone is already running (pid {pid})")
