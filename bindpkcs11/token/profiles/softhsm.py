"""The embedded default: a SoftHSM2 token whose token directory and config live in the state dir.

softhsm2-util is the only way to C_InitToken here (python-pkcs11 has no init call). It takes PINs on
the command line if given there, so it is driven with pexpect through its prompts instead: a PIN
must never appear in a process list.
"""

from __future__ import annotations

import shutil

import pexpect

from bindpkcs11.errors import ModuleMissing, TokenExists, ToolFailed
from bindpkcs11.fileio import ensure_private_dir, write_atomic
from bindpkcs11.state import StateDir
from bindpkcs11.run import child_env
from bindpkcs11.token import library
from bindpkcs11.token.profiles import DeviceTraits, TokenPins

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
_PROMPT_TIMEOUT = 60
# Rates through the shim inside the patched dnssec-signzone, -n 1, -P (docs/benchmarks.md,
# bench_signing): P-256 17,800/s, RSA-2048 1,690/s.
SOFTHSM_TRAITS = DeviceTraits(signatures_per_second=17800, rsa_signatures_per_second=1690)


class SoftHsmProfile:
    """SoftHSM2 with a private token directory (`<state>/softhsm/tokens`)."""

    name = "softhsm"
    traits = SOFTHSM_TRAITS

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.module_path = DEFAULT_MODULE
        self.conf_path = state.softhsm_dir / "softhsm2.conf"
        self.token_dir = state.softhsm_dir / "tokens"

    def activate(self) -> None:
        self._ensure_conf()
        library.module_env_ready("SOFTHSM2_CONF", str(self.conf_path))

    def module_env(self) -> dict[str, str]:
        self._ensure_conf()
        return {"SOFTHSM2_CONF": str(self.conf_path), "PKCS11_LIBRARY_PATH": self.module_path}

    def init_token(self, label: str, pins: TokenPins) -> None:
        self.activate()
        if any(info.label == label for info in library.list_tokens(self.module_path)):
            raise TokenExists(
                f"token '{label}' already exists in {self.token_dir}; refusing to re-initialise it "
                "(use 'bindpkcs11 token erase' to wipe it)"
            )
        self._run_init(["--init-token", "--free", "--label", label], pins, existing=False)
        library.refresh(self.module_path)

    def erase_token(self, label: str, pins: TokenPins) -> None:
        self.activate()
        info = library.token_info(self.module_path, label)
        self._run_init(
            ["--init-token", "--slot", str(info.slot_id), "--label", label], pins, existing=True
        )
        library.refresh(self.module_path)

    def _run_init(self, args: list[str], pins: TokenPins, existing: bool) -> None:
        tool = shutil.which("softhsm2-util")
        if not tool:
            raise ModuleMissing("softhsm2-util not found: install the softhsm2 package")
        env = child_env() | {"SOFTHSM2_CONF": str(self.conf_path)}
        child = pexpect.spawn(tool, args, env=env, encoding="utf-8", timeout=_PROMPT_TIMEOUT)
        child.delaybeforesend = None
        transcript = []
        try:
            while True:
                index = child.expect(
                    [r"(?i)reenter SO PIN:", r"(?i)enter SO PIN:", r"(?i)reenter user PIN:",
                     r"(?i)enter user PIN:", pexpect.EOF]
                )
                transcript.append(child.before or "")
                if index == 4:
                    break
                child.sendline({0: pins.so, 1: pins.so, 2: pins.user, 3: pins.user}[index])
        except pexpect.TIMEOUT:
            child.close(force=True)
            raise ToolFailed("softhsm2-util did not finish initialising the token in time") from None
        child.close()
        output = " ".join(line.strip() for line in "".join(transcript).splitlines() if line.strip())
        if child.exitstatus != 0:
            raise ToolFailed(f"softhsm2-util {args[0]} failed: {output or 'no output'}")

    def _ensure_conf(self) -> None:
        """Write softhsm2.conf (file backend, private token dir) once."""
        ensure_private_dir(self.state.softhsm_dir)
        ensure_private_dir(self.token_dir)
        wanted = (
            f"# written by bindpkcs11: the embedded SoftHSM2 token store\n"
            f"directories.tokendir = {self.token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        if not self.conf_path.exists() or self.conf_path.read_text() != wanted:
            write_atomic(self.conf_path, wanted, mode=0o600)

