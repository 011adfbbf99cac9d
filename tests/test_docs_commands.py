"""The guide cannot drift from the code: every command in README.md and docs/*.md is checked.

(a) Every `bindpkcs11 ...` line in a code block parses with the real CLI parser (the subcommand
    and every option must exist; placeholders such as DOMAIN or T are fine: parse, do not run).
(b) The blocks marked `<!-- run: NAME -->` are executed in RUN_ORDER in one sandbox: a temporary
    state dir, a SoftHSM token, named on a free loopback port, the shared patched BIND builds.
    Each `$ ` line must exit 0 (the docs write an expected failure as `cmd || echo "exit $?"`)
    and every output line the doc shows must appear (`...` matches anything).
(c) Other tools in code blocks (dig, delv, systemctl ...) are run by some runnable block, or
    listed in NOT_RUN with the reason they cannot run here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from docs_blocks import (Block, bindpkcs11_commands, code_blocks, inline_commands, logical_lines,
                         normalised, output_pattern, steps, synopsis_argv)
from namedproc import free_port, kill_instance_nameds

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# The walkthroughs of docs/walkthrough.md and docs/operations.md, in the order they build on
# each other (one zone, one token).
RUN_ORDER = ("first-zone", "rollover", "token-lost", "token-back", "pin-reset", "pin-named",
             "upgrade-bind", "offline-ksk", "offline-signer")
BLOCK_TIMEOUT = 300.0  # token-back waits for named's retry (at most 60 s after the token returns)

# Lines that are not a command but the general shape of one.
NOT_A_COMMAND = {
    "bindpkcs11 [--state-dir DIR] [--json] [--debug] [--pin-file F] [--so-pin-file F] "
    "[--profile P] [--tcti T] COMMAND": "docs/commands.md's synopsis of the global options",
}
# A placeholder where the parser converts the value (int, a choice) is parsed as a sample value:
# `--threshold T` and `--confirm TAG` as 2, `--type T` as the option's first choice.
PLACEHOLDER = re.compile(r"(?:invalid (?:int value|float value|choice): |a key tag is a number "
                         r"0-65535, not )'([A-Z][A-Z0-9_]*)'"
                         r"(?: \(choose from '([^']+)')?")
PARTIAL = re.compile(r"the following arguments are required")

# Tools the docs show that the runnable blocks do not run, and why.
EXTERNAL_TOOLS = ("dig", "delv", "systemctl", "journalctl", "rndc", "named", "dnssec-signzone",
                  "dnssec-verify", "dnssec-keyfromlabel", "dnssec-settime", "pkcs11-tool",
                  "softhsm2-util", "tpm2_ptool", "tpm2_dictionarylockout", "tpm2_getcap",
                  "pkcs15-tool", "pcsc_scan", "docker", "podman", "python", "python3", "pip",
                  "adduser", "eval", "printf", "ls")
NOT_RUN = {
    "systemctl": "systemd is not PID 1 on the test machine; tests/test_docker_systemd.py runs the "
                 "units under systemd in a container (-m docker), tests/test_systemd_units.py verifies them",
    "rndc": "`rndc skr -import` on a hand-written BIND 9.20 offline-KSK config: "
            "tests/test_stock_offline_ksk.py runs it; setup-inline's named is driven by `bindpkcs11 rndc`",
    "dnssec-signzone": "the ARM mapping (docs/bind-pkcs11-arm.md) and the stock 9.20 route: "
                       "tests/test_bind_signing.py runs them on 9.18 and 9.20",
    "dnssec-keyfromlabel": "BIND's own PKCS#11 workflow (docs/bind-pkcs11-arm.md, docs/bind920.md): "
                           "tests/test_bind_fromlabel.py runs it on 9.18 and 9.20, with and without -E",
    "named": "`named [-E pkcs11] -c named.conf` by hand: tests/test_bind_fromlabel.py starts it so on "
             "9.18 and 9.20; setup-inline's named is started by `bindpkcs11 named start`",
    "eval": "`eval \"$(bindpkcs11 bind env)\"` changes the caller's shell: tests/test_bind_signing.py "
            "runs the tools with bind env's exports",
    "python": "`python -m build`: tests/test_package.py builds the sdist and wheel",
    "python3": "`python3 -m venv` + pip install of the wheel: tests/test_package.py, outside the checkout",
}


# --- (a) every bindpkcs11 line parses -------------------------------------------------------


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in code_blocks(path)]


@functools.lru_cache(maxsize=1)
def build_parser() -> argparse.ArgumentParser:
    """The CLI's own parser (bindpkcs11.cli.build_parser), built once."""
    from bindpkcs11 import cli

    return cli.build_parser()


def parse_error(command: str, partial: bool = False) -> str | None:
    """None when `command` parses with the real parser, else argparse's message. `partial`: a
    prose mention (`bindpkcs11 named reload`) may leave out required arguments, but its
    subcommand and options must exist."""
    try:
        argv = synopsis_argv(command)
    except ValueError as error:  # shlex: an unclosed quote
        return f"not a shell command line: {error}"
    for _ in range(len(argv) + 1):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(argv)
            return unknown_options(build_parser(), argv)  # argparse took `--test-timing` too
        except SystemExit as exit:
            if not exit.code:
                return None
        message = stderr.getvalue().strip() or "parse failed"
        placeholder = PLACEHOLDER.search(message)
        if placeholder and placeholder.group(1) in argv:
            argv[argv.index(placeholder.group(1))] = placeholder.group(2) or "2"
            continue
        if partial and PARTIAL.search(message):
            return unknown_options(build_parser(), argv)
        return message
    return "parse failed"


def unknown_options(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """Every `--option` must exist, spelled in full, on the subcommand the words lead to (argparse
    accepts any unambiguous prefix, so a doc could keep a shortened or renamed option unseen);
    also the check for a mention that leaves out required arguments."""
    values_left = 0  # the words that are the previous option's value
    for word in argv:
        if word == "--":
            break
        if values_left:
            values_left -= 1
            continue
        subparsers = [action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction)]
        if word.startswith("--"):
            action = parser._option_string_actions.get(word.split("=", 1)[0])
            if action is None:
                return f"unrecognized option {word} for '{parser.prog}'"
            if "=" not in word and action.nargs is None:
                values_left = 1
            elif "=" not in word and isinstance(action.nargs, int):
                values_left = action.nargs
        elif subparsers and word in subparsers[0].choices:
            parser = subparsers[0].choices[word]
    return None

def documented_commands() -> list[tuple[str, str]]:
    """Code-block lines, inline `bindpkcs11 ...` spans, and docs/commands.md's command table."""
    subcommands = set(next(action for action in build_parser()._actions
                           if action.dest == "command").choices)
    found = [(block.where, command) for block in all_blocks() for command in bindpkcs11_commands(block)]
    found += [(f"{where} (prose)", command) for path in DOCS
              for where, command in inline_commands(path, subcommands)]
    return [(where, command) for where, command in found if command not in NOT_A_COMMAND]


def test_every_bindpkcs11_command_in_the_docs_parses_with_the_real_parser():
    commands = documented_commands()
    assert len(commands) >= 60, f"only {len(commands)} commands found: the extractor broke"
    for name in ("commands.md", "walkthrough.md", "operations.md", "offline-ksk.md", "rollover.md"):
        assert any(where.startswith(name + ":") for where, _ in commands), name
    failures = [f"{where}: {command}\n    {error}" for where, command in commands
                if (error := parse_error(command, partial=where.endswith("(prose)")
                                         or " ... " in command))]
    assert not failures, "doc commands the CLI does not accept:\n" + "\n".join(failures)


def test_a_doc_naming_a_removed_option_or_command_fails():
    """The check itself: what would break it if the docs drifted."""
    assert parse_error("bindpkcs11 setup-inline example.test --port 53") is None
    assert "--zsk-on-token" in parse_error("bindpkcs11 setup-inline example.test --zsk-on-token")
    assert "--test-timing" in parse_error("bindpkcs11 rollover zsk example.test --test-timing")
    assert "invalid choice" in parse_error("bindpkcs11 token wipe --label dnssec")
    assert "required" in parse_error("bindpkcs11 ksk presign example.test --ksk K --zsk-dir z")
    assert parse_error("bindpkcs11 named reload", partial=True) is None  # a prose mention
    assert "--no-such" in parse_error("bindpkcs11 named reload --no-such", partial=True)
    assert parse_error("bindpkcs11 backup make-shares --shares N --threshold T --out DIR") is None
    block = Block(Path("x.md"), 1, ['eval "$(bindpkcs11 bind env --token t)"',
                                    "$ bindpkcs11 monitor example.test --once || echo \"exit $?\"",
                                    "bindpkcs11 rollover zsk DOMAIN --zsk-dir DIR [--at T] \\",
                                    "    [--rng-from-token [--token LABEL]] [--validity D | --overlap 7d]"])
    assert bindpkcs11_commands(block) == [
        "bindpkcs11 bind env --token t", "bindpkcs11 monitor example.test --once",
        "bindpkcs11 rollover zsk DOMAIN --zsk-dir DIR [--at T] [--rng-from-token [--token LABEL]] "
        "[--validity D | --overlap 7d]"]
    assert synopsis_argv(bindpkcs11_commands(block)[2]) == [
        "rollover", "zsk", "DOMAIN", "--zsk-dir", "DIR", "--at", "T", "--rng-from-token",
        "--token", "LABEL", "--validity", "D"]


# --- (c) other tools ----------------------------------------------------------------------------


def tools_in(blocks: list[Block]) -> dict[str, str]:
    """First words of command lines that name a tool of EXTERNAL_TOOLS, with where they are."""
    found: dict[str, str] = {}
    for block in blocks:
        if block.marker and block.marker[0] == "file":
            continue
        run = block.marker is not None and block.marker[0] == "run"
        for text, prompt in logical_lines(block.lines):
            if run and not prompt:
                continue  # output shown under a command
            words = text.split()
            while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0])  # VAR=value cmd
                             or words[0] in ("sudo", "(umask", "077;")):
                words = words[1:]
            if words and words[0] in EXTERNAL_TOOLS:
                found.setdefault(words[0], block.where)
    return found


def test_every_other_tool_in_the_docs_is_run_or_listed_with_the_reason_it_cannot_run():
    blocks = all_blocks()
    runnable = [b for b in blocks if b.marker and b.marker[0] == "run"]
    run_here = tools_in(runnable)
    shown = tools_in([b for b in blocks if b not in runnable])
    assert {"dig", "delv", "pkcs11-tool", "dnssec-verify"} <= set(run_here)
    missing = {tool: where for tool, where in shown.items() if tool not in run_here
               and tool not in NOT_RUN}
    assert not missing, f"tools in the docs neither run nor listed in NOT_RUN: {missing}"
    stale = set(NOT_RUN) - set(shown)
    assert not stale, f"NOT_RUN lists tools the docs no longer show: {stale}"


# --- (b) the runnable walkthroughs ----------------------------------------------------------------


@dataclass
class Sandbox:
    """Where the walkthrough runs, and how the doc's values map to it."""

    base: Path
    port: int
    rndc_port: int
    patched_bind: Path
    failed: list[str] = field(default_factory=list)

    state = property(lambda self: self.base / "state")
    work = property(lambda self: self.base / "work")
    bin = property(lambda self: self.base / "bin")

    def substitutions(self) -> list[tuple[str, str]]:
        """The doc's real-machine values (patterns) -> the sandbox's, applied to commands and
        to the output the doc shows."""
        return [
            (r"/var/lib/bindpkcs11\b", str(self.state)),  # root's default state dir
            (r"--rndc-port 953\b", f"--rndc-port {self.rndc_port}"),
            (r"\bport 53\b", f"port {self.port}"),  # --port 53, and "on 127.0.0.1 port 53"
            (r"@127\.0\.0\.1 ", f"@127.0.0.1 -p {self.port} "),  # dig against the instance
        ]

    def mapped(self, text: str) -> str:
        for doc_value, sandbox_value in self.substitutions():
            text = re.sub(doc_value, lambda _: sandbox_value, text)
        return text

    def env(self) -> dict:
        """clean_env (no PIN variables) + the state dir, the shared BIND builds (9.18 and its
        -9.20 sibling), and `bindpkcs11` on PATH running this checkout's code."""
        return clean_env() | {
            "BINDPKCS11_STATE_DIR": str(self.state),
            "BINDPKCS11_BIND_DIR": str(self.patched_bind),
            "PATH": f"{self.bin}:{os.environ['PATH']}",
        }


@pytest.fixture(scope="module")
def sandbox(patched_bind, patched_bind_920):
    # Under /tmp itself and 0711: named runs as `bind` when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-docs-"))
    base.chmod(0o711)
    box = Sandbox(base, free_port(), free_port(), patched_bind)
    box.work.mkdir()
    box.bin.mkdir()
    wrapper = box.bin / "bindpkcs11"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m bindpkcs11 \"$@\"\n")
    wrapper.chmod(0o755)
    for block in all_blocks():
        if block.marker and block.marker[0] == "file":
            (box.work / block.marker[1]).write_text("\n".join(block.lines) + "\n")
    yield box
    kill_instance_nameds(box.state)
    shutil.rmtree(base, ignore_errors=True)


def runnable_blocks() -> dict[str, Block]:
    blocks: dict[str, Block] = {}
    for block in all_blocks():
        if block.marker and block.marker[0] == "run":
            assert block.marker[1] not in blocks, f"{block.where}: run name used twice"
            blocks[block.marker[1]] = block
    return blocks


def test_every_runnable_block_is_in_the_run_order():
    assert set(runnable_blocks()) == set(RUN_ORDER)


def token_goes_away(box: Sandbox) -> None:
    """The fault of "When the token fails": SoftHSM's token directory disappears (as a card is
    pulled out), as in tests/reliability/test_rel_health_faults.py."""
    tokens = box.state / "softhsm" / "tokens"
    tokens.rename(tokens.with_name("tokens.away"))


def token_comes_back(box: Sandbox) -> None:
    tokens = box.state / "softhsm" / "tokens"
    if tokens.exists():  # a command may have left an empty one behind meanwhile
        tokens.rmdir()
    tokens.with_name("tokens.away").rename(tokens)


BEFORE = {"token-lost": token_goes_away, "token-back": token_comes_back}
END = "@@docs-step-end"


def run_block(box: Sandbox, block: Block) -> list[tuple[str, int, list[str]]]:
    """One bash for the block (so `export` carries to the next step); each step's exit status
    and output (stdout and stderr together), in order. Stops at the first non-zero step."""
    script = []
    for number, step in enumerate(steps(block)):
        script += [box.mapped(step.command), f"__rc=$?; printf '\\n{END} {number} %d\\n' $__rc",
                   "[ $__rc -eq 0 ] || exit 97"]
    process = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=box.work, env=box.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"{block.where}: not done within {BLOCK_TIMEOUT} s:\n{output}")
    results = []
    chunk: list[str] = []
    for line in output.splitlines():
        if line.startswith(END):
            _, number, status = line.split()
            results.append((steps(block)[int(number)].command, int(status), chunk))
            chunk = []
        elif line.strip():
            chunk.append(line)
    if chunk:
        results.append(("(after the last step)", -1, chunk))
    return results


@pytest.mark.parametrize("name", RUN_ORDER)
def test_walkthrough_block_runs_and_prints_what_the_doc_shows(sandbox, name):
    if sandbox.failed:
        pytest.skip(f"an earlier block failed ({sandbox.failed[0]}); this one builds on it")
    block = runnable_blocks()[name]
    sandbox.failed.append(name)  # until proven otherwise
    if name in BEFORE:
        BEFORE[name](sandbox)
    results = run_block(sandbox, block)
    shown = steps(block)
    assert len(results) == len(shown), f"{block.where}: stopped early:\n{results}"
    for step, (command, status, output) in zip(shown, results):
        report = f"{block.where}: $ {command}\n" + "\n".join(output)
        assert status == 0, f"exit {status}\n{report}"
        lines = [normalised(line) for line in output]
        for expected in step.expected:
            pattern = output_pattern(sandbox.mapped(expected))
            assert any(pattern.fullmatch(line) for line in lines), \
                f"the doc shows {expected!r}, not printed:\n{report}"
    assert "Traceback" not in "\n".join(line for _, _, out in results for line in out)
    sandbox.failed.remove(name)
