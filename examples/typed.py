"""Typed tasks: what a type checker sees of ``@app.task`` (checked by ``mypy --strict`` in CI).

``@app.task`` returns a ``Task[P, R]``: calls and ``delay()`` are held to the function's
parameters (after ``self`` with ``bind=True``), and ``delay(...).get()`` is the function's
return type. ``add.s(...)`` is a ``Signature[R]``: its partial arguments are not checked (a
signature may be completed later, by a chain's previous result), but what it returns is:
``sig.delay().get()``, ``sig.apply().get()``, ``sig()`` and ``~sig`` are R. The lines
marked ``type: ignore[...]`` are mistakes the checker must catch: under ``--strict`` an
ignore that catches nothing is itself an error, so this file fails the check if typing
ever stops catching them.

Run it: ``python examples/typed.py`` (eager mode, no broker needed).
"""

from __future__ import annotations

from caraway import AsyncResult, Caraway, Signature, Task

app = Caraway("typed", broker="memory://typed")
app.conf.task_always_eager = True


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, max_retries=3)
def greet(self: Task, name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation} (try {self.request.retries})"


def main() -> None:
    total: int = add(2, 3)
    sent: AsyncResult[int] = add.delay(2, 3)
    later: int = sent.get(timeout=10)
    text: str = greet.delay("ada", punctuation="?").get()
    sig: Signature[int] = add.s(2, 3).set(countdown=0)
    from_sig: int = sig.delay().get(timeout=10) + sig.apply_async().get(timeout=10)
    here: int = sig() + (~add.si(1, 1)) + add.s(1).apply(args=(1,)).get()
    print(total, later, text, from_sig, here)


def _mistakes() -> None:
    """Never called: each line is an error the checker reports (and run time would too)."""
    add.delay("2", 3)  # type: ignore[arg-type]
    add.delay(2)  # type: ignore[call-arg]
    greet.delay(name=1)  # type: ignore[arg-type]
    wrong: str = add.delay(1, 1).get()  # type: ignore[assignment]
    wrong = add.s(1, 1).delay().get()  # type: ignore[assignment]
    wrong = add.s(1).apply_async((1,)).get()  # type: ignore[assignment]
    wrong = add.si(1, 1).clone().stamp(tag="a")()  # type: ignore[assignment]
    del wrong


if __name__ == "__main__":
    main()
