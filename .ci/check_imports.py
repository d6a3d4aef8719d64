"""Keep plug-ins from reaching into the core: transports and backends may import only
their own package's base, the pure protocol package, exceptions and states."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "caraway"
ALLOWED = {
    "transports": ("caraway.transports", "caraway.protocol", "caraway.exceptions",
                   "caraway.states"),
    # backends may share a transport's connection helpers (URL parsing, SQLite setup)
    "backends": ("caraway.backends", "caraway.transports", "caraway.protocol",
                 "caraway.exceptions", "caraway.states"),
    "protocol": ("caraway.protocol", "caraway.exceptions", "caraway.states"),
}


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "caraway":
            found.extend(f"caraway.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def main() -> int:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imports(path):
                if name == "caraway" or (name.startswith("caraway.")
                                         and not name.startswith(allowed)):
                    bad.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    for line in bad:
        print(f"import direction: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
