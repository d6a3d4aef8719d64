"""Keep the bottom layers from reaching up: protocol, clients and broker plug-ins import only
what lies below them (docs: /work/plan/layers.md, ARCHITECTURE.md "Layers").

A broker folder (``caraway/brokers/<name>/``) may import its own modules, the clients, the
plug-in contracts, the protocol, exceptions and states; never another broker folder, never
the registry (``caraway.brokers`` itself), never the core.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "caraway"
BASE = ("caraway.exceptions", "caraway.states", "caraway._version", "caraway.utils.log")
PROTOCOL = ("caraway.protocol", *BASE)
CLIENTS = ("caraway.clients", *PROTOCOL)
CONTRACTS = ("caraway.brokers.contracts", *CLIENTS)
#: files or folders under src/caraway -> the import prefixes they may use
ALLOWED = {
    "protocol": PROTOCOL,
    "clients": CLIENTS,
    "brokers/contracts.py": PROTOCOL,
    "brokers/__init__.py": CONTRACTS,
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
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append("<relative import>")
    return found


def rules() -> dict[Path, tuple[str, ...]]:
    """Every checked file and what it may import."""
    checked: dict[Path, tuple[str, ...]] = {}
    for name, allowed in ALLOWED.items():
        target = ROOT / name
        paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in paths:
            checked[path] = allowed
    for folder in sorted(p for p in (ROOT / "brokers").iterdir() if p.is_dir()):
        if folder.name.startswith("__"):
            continue
        own = f"caraway.brokers.{folder.name}"
        for path in sorted(folder.rglob("*.py")):
            checked[path] = (own, *CONTRACTS)
    return checked


def allowed_import(name: str, allowed: tuple[str, ...]) -> bool:
    if name == "<relative import>":
        return False
    if name != "caraway" and not name.startswith("caraway."):
        return True  # the standard library and third-party clients
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in allowed)


def main() -> int:
    bad = [
        f"{path.relative_to(ROOT.parent)} imports {name}"
        for path, allowed in rules().items()
        for name in imports(path)
        if not allowed_import(name, allowed)
    ]
    for line in bad:
        print(f"import direction: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
