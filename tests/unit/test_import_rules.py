"""The import rules CI holds the tree to fail when broken: shown on small packages made here.

CI runs ``lint-imports`` (the layer contracts in pyproject.toml) and ``.ci/check_cycles.py``
on src/; these tests break each rule on purpose and see the check fail, naming the culprit.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_cycles", ROOT / ".ci" / "check_cycles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))


def test_strongly_connected_sets_are_found_with_a_cycle_through_them() -> None:
    check = _checker()
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert check.strongly_connected(edges) == [["a", "b", "c"]]
    assert check.one_cycle(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_an_import_under_type_checking_closes_a_cycle_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _package(
        tmp_path,
        "cyclepkg",
        {
            "low": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from cyclepkg.high import High
            """,
            "high": "from cyclepkg import low\nclass High: ...\n",
            "alone": "import json\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _checker().main(["cyclepkg"]) == 1
    err = capsys.readouterr().err
    assert "import cycle among 2 modules: cyclepkg.high -> cyclepkg.low -> cyclepkg.high" in err


def test_an_acyclic_package_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _package(tmp_path, "finepkg", {"low": "X = 1\n", "high": "from finepkg.low import X\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _checker().main(["finepkg"]) == 0
    assert "no import cycle in finepkg" in capsys.readouterr().out


def test_a_lower_layer_importing_a_higher_one_breaks_the_layers_contract(tmp_path: Path) -> None:
    _package(
        tmp_path,
        "layerpkg",
        {"core": "def run() -> None: ...\n", "app": "from layerpkg import core\n"},
    )
    config = tmp_path / "contracts.toml"
    config.write_text(
        textwrap.dedent(
            """
            [tool.importlinter]
            root_package = "layerpkg"

            [[tool.importlinter.contracts]]
            name = "layers"
            type = "layers"
            containers = ["layerpkg"]
            layers = ["app", "core"]
            """
        )
    )

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(tmp_path)},
            timeout=60,
            check=False,
        )

    assert lint().returncode == 0, "downward only: the contract holds"
    upward = "def run() -> None:\n    from layerpkg import app\n"
    (tmp_path / "layerpkg" / "core.py").write_text(upward)
    broken = lint()
    assert broken.returncode == 1
    assert "layerpkg.core -> layerpkg.app" in broken.stdout
