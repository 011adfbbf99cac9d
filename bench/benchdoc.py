"""The one place benchmarks write docs/benchmarks.md: each script owns a section between
`<!-- name -->` and `<!-- /name -->` and replaces it when rerun, leaving the others alone."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nMeasured results of the scripts in `bench/` on real tokens and real BIND "
          "builds. Every figure says how it was obtained; the generated sections are replaced when "
          "their script is rerun.\n")


def replace_section(name: str, body: str) -> None:
    """Put `body` between the section's markers (appending the section if it is new)."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = DOC.read_text() if DOC.exists() else HEADER
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        text = text[:start] + block + text[stop + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
