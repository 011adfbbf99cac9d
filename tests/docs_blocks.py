"""Reading the guide's code blocks: which lines are commands, which blocks are runnable.

tests/test_docs_commands.py uses this to parse every `bindpkcs11 ...` line of README.md and
docs/*.md with the real CLI parser, and to run the blocks marked `<!-- run: NAME -->` (their
expected output) or write the ones marked `<!-- file: NAME -->`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"^<!--\s*(run|file):\s*(\S+)\s*-->$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
BINDPKCS11 = re.compile(r"(?:^|(?<=[\s;|&(\"]))bindpkcs11(?=\s|$)")
# Where a bindpkcs11 command line ends inside a longer shell line.
SHELL_END = re.compile(r"\s+#|\s\|\|\s|\s&&\s|;\s|\s;|\s\|\s|\s>|\s2>|\s<\s")


@dataclass
class Block:
    """One code block: where it is, its lines, and its marker (run/file NAME) if any."""

    path: Path
    line: int  # 1-based line of the block's first content line
    lines: list[str]
    marker: tuple[str, str] | None = None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass
class Step:
    """One `$ command` of a runnable block and the output lines shown under it."""

    command: str
    expected: list[str] = field(default_factory=list)


def code_blocks(path: Path) -> list[Block]:
    """Fenced blocks (with the marker on the nearest non-blank line before the fence) and
    indented blocks (four spaces, after a blank line, outside fences)."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence:
            indent = len(fence.group(1))
            end = index + 1
            while end < len(lines) and not FENCE.match(lines[end]):
                end += 1
            body = [line[indent:] if line[:indent].isspace() else line for line in lines[index + 1:end]]
            blocks.append(Block(path, index + 2, body, _marker_before(lines, index)))
            index = end + 1
            continue
        if lines[index].startswith("    ") and (index == 0 or not lines[index - 1].strip()):
            end = index
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                if FENCE.match(lines[end]):
                    break
                end += 1
            blocks.append(Block(path, index + 1, [line[4:] for line in lines[index:end]]))
            index = end
            continue
        index += 1
    return blocks


def _marker_before(lines: list[str], fence_index: int) -> tuple[str, str] | None:
    for previous in reversed(lines[:fence_index]):
        if previous.strip():
            match = MARKER.match(previous.strip())
            return (match.group(1), match.group(2)) if match else None
    return None


def logical_lines(block_lines: list[str]) -> list[tuple[str, bool]]:
    """The block's lines with `\\` continuations joined; each with whether it began with `$ `."""
    joined: list[tuple[str, bool]] = []
    pending = ""
    prompt = False
    for raw in block_lines:
        text = raw.strip()
        if not pending:
            prompt = text.startswith("$ ")
            text = text[2:] if prompt else text
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        joined.append((pending + text, prompt))
        pending = ""
    if pending:
        joined.append((pending.rstrip(), prompt))
    return joined


def bindpkcs11_commands(block: Block) -> list[str]:
    """Every `bindpkcs11 ...` command in the block, cut where the shell line goes on (`||`, `>`,
    a comment, the end of `$(...)`)."""
    found = []
    for text, _ in logical_lines(block.lines):
        for match in BINDPKCS11.finditer(text):
            rest = text[match.start():]
            if text[:match.start()].endswith("$("):  # command substitution: up to its ")"
                rest = rest.split(")", 1)[0]
            ends = [end.start() for end in SHELL_END.finditer(rest)
                    if rest[:end.start()].count("[") == rest[:end.start()].count("]")]
            found.append((rest[:ends[0]] if ends else rest).strip())  # `[a | b]`: synopsis
    return found


_ALTERNATIVES = re.compile(r"\[([^\[\]|]*?)\s\\?\|\s[^\[\]]*\]")


def synopsis_argv(command: str) -> list[str]:
    """argv for a command line, synopsis notation reduced to one concrete line: optional parts
    `[...]` included, the first of `a|b` alternatives taken, `...` (repeat) dropped."""
    text = re.sub(r"(?<=\S)\[[^\[\]\s]*\]", "", command.replace("\\|", "|"))  # HOST[:PORT]
    while True:
        reduced = _ALTERNATIVES.sub(r"[\1]", text)
        if reduced == text:
            break
        text = reduced
    text = text.replace("[", " ").replace("]", " ")
    argv = []
    for word in shlex.split(text):
        if word == "...":
            continue
        if "|" in word and not word.startswith("pkcs11:"):
            word = word.split("|", 1)[0]
        if re.fullmatch(r"[a-z-]+(/[a-z-]+)+", word):  # prose: start/stop/status
            word = word.split("/", 1)[0]
        argv.append(word)
    return argv[1:]  # without "bindpkcs11"


def steps(block: Block) -> list[Step]:
    """A runnable block as steps: each `$ ` line a command, the lines after it its output."""
    result: list[Step] = []
    for text, prompt in logical_lines(block.lines):
        if prompt:
            result.append(Step(text))
        elif text.strip():
            assert result, f"{block.where}: output before the first '$ ' command"
            result[-1].expected.append(text)
    return result


def output_pattern(expected: str) -> re.Pattern:
    """A shown output line as a pattern: `...` matches anything, any run of blanks any other."""
    parts = [r"\s+".join(re.escape(word) for word in piece.split()) for piece in
             expected.strip().split("...")]
    return re.compile(r"\s*" + ".*".join(parts) + r"\s*")


def normalised(line: str) -> str:
    return " ".join(line.split())


INLINE = re.compile(r"(?<!`)`(bindpkcs11 [^`]+)`(?!`)")
COMMAND_TABLE = "commands.md"  # the reference: one row per command, its synopsis first
TABLE_CELL = re.compile(r"`([a-z][a-z0-9-]*(?: [^`]*)?)`")


def inline_commands(path: Path, subcommands: set[str]) -> list[tuple[str, str]]:
    """`bindpkcs11 ...` in inline code spans of prose, and in docs/commands.md the command
    table's first column (spans that start with a subcommand, written without `bindpkcs11`)."""
    found = []
    in_fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        if in_fence or line.startswith("    "):
            continue
        where = f"{path.name}:{number}"
        found += [(where, span) for span in INLINE.findall(line)]
        if path.name == COMMAND_TABLE and line.startswith("| `"):
            first_cell = re.split(r"(?<!\\)\|", line)[1]
            found += [(where, f"bindpkcs11 {span}") for span in TABLE_CELL.findall(first_cell)
                      if span.split()[0] in subcommands]
    return found
