"""Shared pieces of the benchmark scripts: the CPU model and the sections of the page.

Each script replaces its own section of docs/benchmarks.md, which starts
with ``<!-- bench:NAME -->`` and ends with ``<!-- /bench:NAME -->``.
"""

from __future__ import annotations

import platform
from pathlib import Path

PAGE_HEADER = "# Benchmarks\n\nMeasured numbers, each with the script and machine behind it.\n"


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_section(page: Path, name: str, section: str) -> None:
    """Replace the section ``name`` of ``page`` with ``section``, or append it.

    Parameters
    ----------
    page : Path
        The Markdown page; created with a title when missing.
    name : str
        Section name, as in ``<!-- bench:NAME -->``.
    section : str
        The new section, its two marks included.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = page.read_text(encoding="utf-8") if page.is_file() else PAGE_HEADER
    section = section.strip("\n")
    if start in text and end in text:
        before = text[: text.index(start)]
        after = text[text.index(end) + len(end) :].strip("\n")
        text = before + section + ("\n\n" + after if after else "") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
