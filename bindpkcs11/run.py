"""The one subprocess helper: list arguments, captured output, failures carry command and output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Mapping, Sequence

from bindpkcs11.errors import ToolFailed

_TAIL_LINES = 12
# Secrets bindpkcs11 may read from its own environment; no child process gets them (named reads
# its PIN from a 0600 file, softhsm2-util gets PINs at its prompts).
SECRET_VARIABLES = ("PKCS11_LIBRARY_PIN", "PKCS11_SO_PIN", "BINDPKCS11_PASSPHRASE")


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours) without the secret variables."""
    return {k: v for k, v in (os.environ if env is None else env).items()
            if k not in SECRET_VARIABLES}


def run_tool(args: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
             input_text: str | None = None, timeout: float | None = None,
             what: str | None = None) -> subprocess.CompletedProcess:
    """Run `args` and return the result; ToolFailed (with the output's tail) on a non-zero exit."""
    try:
        result = subprocess.run(list(args), cwd=cwd, env=child_env(env),
                                input=input_text, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ToolFailed(f"{args[0]} not found: run scripts/setup.sh to install it") from None
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{what or args[0]} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise ToolFailed(f"{what or ' '.join(args[:2])} failed (exit {result.returncode}): "
                         f"{tail(result.stdout + result.stderr)}")
    return result


def stream_tool(args: Sequence[str], on_line: Callable[[str], None], *, cwd: Path | None = None,
                env: Mapping[str, str] | None = None, what: str | None = None,
                log_path: Path | None = None) -> None:
    """Run a long tool (configure, make), passing each output line to `on_line` for progress.

    The full output goes to `log_path` so a failure can be diagnosed; the error shows its tail.
    """
    lines: list[str] = []
    log = open(log_path, "w") if log_path else None
    try:
        process = subprocess.Popen(list(args), cwd=cwd, env=child_env(env),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            if log:
                log.write(line)
            lines.append(line)
            del lines[:-_TAIL_LINES * 4]
            on_line(line.rstrip("\n"))
        code = process.wait()
    finally:
        if log:
            log.close()
    if code != 0:
        where = f" (full log: {log_path})" if log_path else ""
        raise ToolFailed(f"{what or args[0]} failed (exit {code}){where}: {tail(''.join(lines))}")


def tail(output: str, count: int = _TAIL_LINES) -> str:
    """The last meaningful lines of tool output, joined into one line."""
    kept = [line.strip() for line in output.splitlines() if line.strip()][-count:]
    return " | ".join(kept) or "no output"
