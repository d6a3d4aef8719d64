"""Randomised nested canvases on one real worker (SQLite), checked against plain Python.

Hypothesis builds trees of chains, groups and chords over add/mul/xsum, typed so every
step gets the kind of value it takes (an int, or the list a group or chord header makes).
The one thing to know: each tree is both a canvas to run and a Python expression to
evaluate; a failing example prints the tree (``note``) so it can be replayed by hand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

from tests.e2e.test_canvas import CANVAS_APP
from tests.helpers import PROJ_TASKS, Worker, write_project

Kind = Literal["none", "int", "list"]


@dataclass(frozen=True)
class Leaf:
    """One task: ``add``/``mul`` partial on an int, ``xsum`` on a list, or ``add.si``."""

    task: str
    args: tuple[int, ...]
    immutable: bool = False

    def build(self, tasks: Any) -> Any:
        sig = getattr(tasks, self.task)
        return sig.si(*self.args) if self.immutable else sig.s(*self.args)

    def evaluate(self, value: Any) -> Any:
        args: tuple[Any, ...] = (
            self.args if self.immutable or value is None else (value, *self.args)
        )
        if self.task == "add":
            return args[0] + args[1]
        if self.task == "mul":
            return args[0] * args[1]
        numbers: list[int] = args[0]
        return sum(numbers)

    def __repr__(self) -> str:
        return f"{self.task}.{'si' if self.immutable else 's'}{self.args!r}".replace(",)", ")")


@dataclass(frozen=True)
class Chain:
    steps: tuple[Any, ...]

    def build(self, tasks: Any) -> Any:
        from caraway.canvas import chain

        return chain(*(step.build(tasks) for step in self.steps))

    def evaluate(self, value: Any) -> Any:
        for step in self.steps:
            value = step.evaluate(value)
        return value

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.steps))})"


@dataclass(frozen=True)
class Group:
    members: tuple[Any, ...]

    def build(self, tasks: Any) -> Any:
        from caraway.canvas import group

        return group([member.build(tasks) for member in self.members])

    def evaluate(self, value: Any) -> Any:
        return [member.evaluate(value) for member in self.members]

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.members))}])"


@dataclass(frozen=True)
class Chord:
    header: tuple[Any, ...]
    body: Any

    def build(self, tasks: Any) -> Any:
        from caraway.canvas import chord

        return chord([member.build(tasks) for member in self.header], self.body.build(tasks))

    def evaluate(self, value: Any) -> Any:
        return self.body.evaluate([member.evaluate(value) for member in self.header])

    def __repr__(self) -> str:
        return f"chord([{', '.join(map(repr, self.header))}], {self.body!r})"


SMALL = st.integers(min_value=0, max_value=9)


@st.composite
def leaf(draw: st.DrawFn, given_kind: Kind) -> Leaf:
    """A task taking ``given_kind`` (or nothing) and making an int."""
    if given_kind == "none" or draw(st.integers(0, 5)) == 0:
        return Leaf("add", (draw(SMALL), draw(SMALL)), immutable=given_kind != "none")
    if given_kind == "list":
        return Leaf("xsum", ())
    return Leaf(draw(st.sampled_from(["add", "mul"])), (draw(SMALL),))


@st.composite
def to_int(draw: st.DrawFn, given_kind: Kind, depth: int) -> Any:
    """A canvas taking ``given_kind`` and making an int: a leaf, chain or chord."""
    shape = draw(st.sampled_from(["leaf", "chain", "chord"])) if depth > 0 else "leaf"
    if shape == "leaf":
        return draw(leaf(given_kind))
    if shape == "chord":
        header = draw(st.lists(to_int(given_kind, depth - 1), min_size=0, max_size=3))
        return Chord(tuple(header), draw(to_int("list", depth - 1)))
    return draw(chain_of(given_kind, "int", depth))


@st.composite
def chain_of(draw: st.DrawFn, given_kind: Kind, makes: Kind, depth: int) -> Chain:
    """Two or three steps; a step may be a group, whose list the next step takes."""
    length = draw(st.integers(2, 3))
    steps: list[Any] = []
    kind = given_kind
    for position in range(length):
        last = position == length - 1
        if (not last or makes == "list") and draw(st.booleans()):
            steps.append(draw(to_list(kind, depth - 1)))
            kind = "list"
        else:
            steps.append(draw(to_int(kind, depth - 1)))
            kind = "int"
    if kind != makes:
        steps.append(draw(to_list(kind, 0)) if makes == "list" else draw(leaf(kind)))
    return Chain(tuple(steps))


@st.composite
def to_list(draw: st.DrawFn, given_kind: Kind, depth: int) -> Group:
    members = draw(st.lists(to_int(given_kind, max(depth, 0)), min_size=1, max_size=3))
    return Group(tuple(members))


@st.composite
def canvases(draw: st.DrawFn) -> tuple[Any, int | None]:
    """A top-level tree and the partial argument it is called with (or None)."""
    start: int | None = draw(st.one_of(st.none(), SMALL))
    kind: Kind = "none" if start is None else "int"
    makes: Kind = draw(st.sampled_from(["int", "list"]))
    shape = draw(st.sampled_from(["chain", "other"]))
    if shape == "chain":
        return draw(chain_of(kind, makes, 2)), start
    tree = draw(to_list(kind, 1)) if makes == "list" else draw(to_int(kind, 2))
    return tree, start


def _drop_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def proj_tasks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `proj` project and one worker (-c 2) for every example of the module."""
    base = write_project(tmp_path_factory.mktemp("canvas-random"), CANVAS_APP, PROJ_TASKS)
    here = os.getcwd()
    os.chdir(base)  # the default SQLite file is made absolute from the cwd
    sys.path.insert(0, str(base))
    _drop_proj()
    worker = Worker(base, "-c", "2")
    try:
        worker.wait_ready()
        import proj.tasks  # type: ignore[import-not-found]  # written by write_project

        yield proj.tasks
    finally:
        worker.stop()
        _drop_proj()
        sys.path.remove(str(base))
        os.chdir(here)


@settings(
    max_examples=40,
    deadline=None,  # each example is bounded by get(timeout=...) instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
    print_blob=True,
    # a broken canvas hangs until get() times out, so shrinking would take minutes
    phases=[Phase.explicit, Phase.generate],
)
@given(case=canvases())
# found by this test: a chord in a chord header, with a composite body, never completed
@example(
    case=(
        Chord(
            (Chord((Leaf("add", (0, 2)),), Chain((Leaf("xsum", ()), Leaf("add", (9, 0), True)))),),
            Leaf("xsum", ()),
        ),
        None,
    )
)
def test_random_nested_canvases_give_what_plain_python_gives(
    proj_tasks: Any, case: tuple[Any, int | None]
) -> None:
    tree, start = case
    note(f"tree: {tree!r}, called with {start!r}")
    expected = tree.evaluate(start)
    canvas = tree.build(proj_tasks)
    result = canvas.apply_async(() if start is None else (start,))
    assert result.get(timeout=10) == expected, f"{tree!r} called with {start!r}"


def test_the_python_evaluator_agrees_with_the_seed_examples() -> None:
    add2 = Leaf("add", (2,))
    chord_tree = Chord(tuple(Leaf("add", (i, i)) for i in range(10)), Leaf("xsum", ()))
    assert chord_tree.evaluate(None) == 90
    assert Chain((Leaf("add", (4,)), Leaf("mul", (8,)))).evaluate(4) == 64
    assert Group((add2, Leaf("mul", (3,)))).evaluate(10) == [12, 30]
    assert Leaf("add", (1, 1), immutable=True).evaluate(99) == 2
    assert repr(Chain((add2, Leaf("xsum", ())))) == "chain(add.s(2), xsum.s())"
