"""Writing a benchmark's measured table into README.md, between its two markers (shared by the benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_readme(text: str, start: str, end: str, readme: Path = README) -> None:
    """Replace what stands between the markers ``start`` and ``end`` by ``text``, atomically (a temporary file
    beside the README, then ``replace``); refuse, writing nothing, when a marker is missing."""
    content = readme.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{readme}: markers {start} / {end} not found; nothing written")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    temporary = readme.with_suffix(".md.tmp")
    temporary.write_text(head + start + "\n" + text + "\n" + end + tail)
    temporary.replace(readme)


def publish(text: str, *, quick: bool, write: bool, start: str, end: str) -> None:
    """Print the table; with ``write``, put it into the README — unless it comes from a ``--quick`` smoke run."""
    print(text)
    if write:
        if quick:
            print("--quick results are a smoke run; the README is not written", file=sys.stderr)
        else:
            write_readme(text, start, end)
