"""The documentation pages, run as a reader would follow them (tests/docs/runner.py).

A page whose example breaks, or whose shown output is no longer what caraway prints,
fails here. The Redis parts run on db 4 (ours alone) and the RabbitMQ parts on a queue
of their own, so what another test sends never shows up on a page.
"""

from __future__ import annotations

import ast
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.conftest import delete_amqp_queues
from tests.docs.runner import Page, blocks, forget_modules, matches_exactly, normalize

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: the pages run end to end; every other page's Python blocks are at least compiled
RUN = [
    "getting-started/first-steps.md",
    "getting-started/next-steps.md",
    "getting-started/brokers.md",
    "userguide/tasks.md",
    "userguide/calling.md",
    "userguide/canvas.md",
    "userguide/routing.md",
    "periodic-tasks.md",
]

REDIS_SHOWN = "redis://localhost:6379/0"
REDIS_HERE = "redis://localhost:6379/4"
AMQP_SHOWN = "amqp://guest:guest@localhost:5672//"


@pytest.fixture
def page_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    workdir = tmp_path / "tutorial"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    for name in list(os.environ):
        if name.startswith("CARAWAY_"):
            monkeypatch.delenv(name, raising=False)
    forget_modules("proj")
    forget_modules("tasks")
    yield workdir
    forget_modules("proj")
    forget_modules("tasks")


@pytest.mark.parametrize("name", RUN)
def test_page_runs_as_shown(name: str, page_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / name
    text = path.read_text()
    page = Page(path, page_dir)
    queue = None
    if REDIS_SHOWN in text:
        import redis

        redis.Redis.from_url(REDIS_HERE).flushdb()
        page.substitutions[REDIS_SHOWN] = REDIS_HERE
    if AMQP_SHOWN in text:
        # the machine's RabbitMQ is shared: the page's tasks go to a queue of its own
        # (a vhost of its own would cost three slow rabbitmqctl calls)
        queue = f"docs-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("CARAWAY_TASK_DEFAULT_QUEUE", queue)
        page.env["CARAWAY_TASK_DEFAULT_QUEUE"] = queue
    try:
        failures = page.run()
    finally:
        page.stop_workers()
        if queue is not None:
            delete_amqp_queues([queue])
    assert not failures, "\n\n".join(failures)


#: Chinese pages -> the English page whose run covers them: they show the same blocks
TRANSLATIONS = {
    "zh/getting-started/first-steps.md": "getting-started/first-steps.md",
    "zh/getting-started/next-steps.md": "getting-started/next-steps.md",
    "zh/getting-started/brokers.md": "getting-started/brokers.md",
}


@pytest.mark.parametrize("name", sorted(TRANSLATIONS))
def test_a_translated_page_shows_the_blocks_its_english_page_runs(name: str) -> None:
    """So the Chinese pages cannot rot either, without running every example twice."""

    def shown(page: str) -> list[tuple[str, str | None, str, list[str]]]:
        found = blocks((DOCS / page).read_text())
        return [(b.lang, b.title, b.body, b.directives) for b in found]

    assert shown(name) == shown(TRANSLATIONS[name])


def test_every_page_to_run_exists_and_has_blocks_that_run() -> None:
    for name in RUN:
        kinds = {block.lang for block in blocks((DOCS / name).read_text())}
        assert kinds & {"pycon", "console"}, f"{name} has nothing the runner checks"


@pytest.mark.parametrize(
    "name", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")), ids=str
)
def test_every_python_block_of_every_page_compiles(name: str) -> None:
    for block in blocks((DOCS / name).read_text()):
        if block.lang == "python" and "skip" not in block.directives:
            # snippets of asyncio code may await at the top, as in an asyncio REPL
            compile(block.body, f"{name}:{block.line}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_masks_hide_what_changes_between_runs_and_nothing_else() -> None:
    shown = (
        " -------------- caraway@laptop v0.1.0\n"
        "[2026-12-06 10:00:00,123: INFO/MainProcess] Task proj.tasks.add"
        "[9d2ad3b0-7c4e-4b0e-9a3c-2f3a1c5b7e11] succeeded in 0.0012s: 4"
    )
    printed = (
        " -------------- caraway@ci-host v0.2.0\n"
        "[2027-01-01 23:59:59,999: INFO/MainProcess] Task proj.tasks.add"
        "[0f2ad3b0-7c4e-4b0e-9a3c-2f3a1c5b7e99] succeeded in 0.5s: 4"
    )
    assert normalize(shown) == normalize(printed)
    assert not matches_exactly(shown, printed.replace(": 4", ": 5"))
    assert "guest@localhost" in normalize("amqp://guest@localhost//")


def test_the_migration_guide_lists_every_refused_setting_and_difference() -> None:
    """Its tables are the compatibility page's rows; after that page changes, run
    ``python -m tests.docs.compat_tables`` to write them again."""
    from tests.docs.compat_tables import MIGRATING, render, rows

    text = MIGRATING.read_text()
    assert len(rows("refused")) > 100 and len(rows("difference")) > 20
    assert text == render(text), "run: python -m tests.docs.compat_tables"


def test_the_readme_links_pages_that_exist_in_both_languages() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert "docs/index.md" in targets and "docs/zh/index.md" in targets
    missing = [target for target in targets if not (DOCS.parent / target).exists()]
    assert not missing
    assert readme.index("./scripts/demo") < readme.index("./scripts/test") < 600


#: nav entries whose page another branch is writing (mkdocs.yml reports them as info only)
PENDING_PAGES = {"security.md"}


def test_every_page_the_nav_names_exists_but_the_pending_ones() -> None:
    config = (DOCS.parent / "mkdocs.yml").read_text()
    nav = re.findall(r"^\s*- [^:\n]+: (\S+\.md)\s*$", config, re.M)
    assert len(nav) > 30
    missing = {page for page in nav if not (DOCS / page).exists()}
    assert missing <= PENDING_PAGES, f"the nav names pages that do not exist: {missing}"
