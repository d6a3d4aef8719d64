"""The migration guide's tables, made from the compatibility page, so they cannot drift.

``docs/userguide/migrating.md`` holds, between ``<!-- generated: KIND -->`` and
``<!-- end generated -->``, every row of ``docs/celery-compat.md`` whose status is KIND
(``refused``, or ``difference`` for "supported, with a difference"). The test compares
them; ``python -m tests.docs.compat_tables`` rewrites them after the compatibility page
changed.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
COMPAT = DOCS / "celery-compat.md"
MIGRATING = DOCS / "userguide" / "migrating.md"

_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)
_STATUS = {"refused": "refused", "difference": "supported, with a difference"}


def rows(kind: str) -> list[tuple[str, str, str]]:
    """(section, name, what caraway does) for each row of ``kind`` on the compat page."""
    section = ""
    found: list[tuple[str, str, str]] = []
    for line in COMPAT.read_text().splitlines():
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        status, _, said = cells[1].partition(":")  # "supported, with a difference: why"
        if status.strip().startswith(_STATUS[kind]):
            what = " | ".join([said.strip(), *cells[2:]] if said else cells[2:])
            found.append((section, cells[0], what))
    return found


def table(kind: str) -> str:
    lines = ["| where | name | what caraway does |", "|---|---|---|"]
    for section, name, what in rows(kind):
        short = section.split(" (")[0]
        lines.append(f"| {short} | {name} | {what} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` with every generated block made again from the compatibility page."""
    return _BLOCK.sub(lambda m: m[1] + table(m[2]) + m[4], text)


if __name__ == "__main__":
    MIGRATING.write_text(render(MIGRATING.read_text()))
