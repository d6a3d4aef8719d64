"""Run the quick-start tutorial's examples against real caraway workers.

Starts two workers on the embedded SQLite default (one for the default queue, one for
`lopri`), runs each example of the seed that caraway supports, prints what it returns,
and stops the workers. Run it with `./scripts/demo` from the repository root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE / "run"


def start_worker(name: str, *extra: str) -> subprocess.Popen[bytes]:
    RUN.mkdir(exist_ok=True)
    pidfile = RUN / f"{name}.pid"
    pidfile.unlink(missing_ok=True)
    log = open(RUN / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the worker's life
    command = [
        sys.executable,
        "-m",
        "caraway",
        "-A",
        "proj",
        "worker",
        "--loglevel=info",
        "-n",
        f"{name}@%h",
        f"--pidfile={pidfile}",
        *extra,
    ]
    print("$", " ".join(["caraway", *command[3:]]))
    process = subprocess.Popen(command, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not pidfile.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print((RUN / f"{name}.log").read_text())
            raise SystemExit(f"worker {name} did not start")
        time.sleep(0.05)
    return process


def show(label: str, value: object) -> None:
    print(f">>> {label}")
    print(value if isinstance(value, (str, int, bool)) else repr(value))


def examples() -> None:
    from proj.caraway import app
    from proj.tasks import add

    show("add.delay(2, 2)", add.delay(2, 2))
    show("add.apply_async((2, 2))", add.apply_async((2, 2)))
    lopri = add.apply_async((2, 2), queue="lopri", countdown=10)
    show("add.apply_async((2, 2), queue='lopri', countdown=10)", lopri)
    show("add(2, 2)", add(2, 2))
    res = add.delay(2, 2)
    show("res = add.delay(2, 2); res.get(timeout=1)", res.get(timeout=1))
    show("res.id", repr(res.id))
    try:
        add.delay(2)
    except TypeError as exc:
        show("add.delay(2)  # raises at call time", f"TypeError: {exc}")
    res = add.delay(2, "a")
    try:
        res.get(timeout=5)
    except TypeError as exc:
        show("res = add.delay(2, 'a'); res.get(timeout=5)", f"TypeError: {exc}")
    show("res.get(propagate=False)", repr(res.get(propagate=False)))
    show("res.failed()", res.failed())
    show("res.successful()", res.successful())
    show("res.state", repr(res.state))
    show(
        "app.AsyncResult('this-id-does-not-exist').state",
        repr(app.AsyncResult("this-id-does-not-exist").state),
    )
    workflows()
    started = time.monotonic()
    value = lopri.get(timeout=30)
    waited = time.monotonic() - started
    show(f"lopri result, run by the lopri worker after its countdown (waited {waited:.1f}s)", value)


def workflows() -> None:
    """The seed's "designing workflows" section."""
    from proj.tasks import add, mul, xsum

    from caraway import chain, chord, group

    show("add.signature((2, 2), countdown=10)", add.signature((2, 2), countdown=10))
    show("add.s(2, 2)", add.s(2, 2))
    s1 = add.s(2, 2)
    show("s1 = add.s(2, 2); s1.delay().get()", s1.delay().get(timeout=10))
    s2 = add.s(2)
    show("s2 = add.s(2); s2", s2)
    show("s2.delay(8).get()", s2.delay(8).get(timeout=10))
    g1 = group(add.s(i, i) for i in range(5))
    show("g1 = group(add.s(i, i) for i in range(5)); g1", g1)
    show("g1().get()", g1().get(timeout=10))
    g = group(add.s(i) for i in range(10))
    show("group(add.s(i) for i in range(10))(10).get()", g(10).get(timeout=10))
    show("chain(add.s(4, 4) | mul.s(8))().get()", chain(add.s(4, 4) | mul.s(8))().get(timeout=10))
    show("chain(add.s(4) | mul.s(8))(4).get()", chain(add.s(4) | mul.s(8))(4).get(timeout=10))
    show("(add.s(4, 4) | mul.s(8))().get()", (add.s(4, 4) | mul.s(8))().get(timeout=10))
    show(
        "chord((add.s(i, i) for i in range(10)), xsum.s())().get()",
        chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=10),
    )
    show(
        "(group(add.s(i, i) for i in range(10)) | xsum.s())().get()",
        (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=10),
    )


def multi_examples() -> None:
    """The seed's "running in the background" section, with `caraway multi`."""
    print("\n# caraway multi")
    base = [sys.executable, "-m", "caraway", "multi"]
    for args in (
        [
            "start",
            "w1",
            "-A",
            "proj",
            "-l",
            "info",
            f"--pidfile={RUN}/%n.pid",
            f"--logfile={RUN}/%n%I.log",
        ],
        [
            "restart",
            "w1",
            "-A",
            "proj",
            "-l",
            "info",
            f"--pidfile={RUN}/%n.pid",
            f"--logfile={RUN}/%n%I.log",
        ],
        [
            "stopwait",
            "w1",
            "-A",
            "proj",
            "-l",
            "info",
            f"--pidfile={RUN}/%n.pid",
            f"--logfile={RUN}/%n%I.log",
        ],
        [
            "show",
            "10",
            "-A",
            "proj",
            "-l",
            "info",
            "-Q:1-3",
            "images,video",
            "-Q:4,5",
            "data",
            "-Q",
            "default",
            "-l:4,5",
            "debug",
        ],
    ):
        print("$ caraway multi " + " ".join(args))
        done = subprocess.run(
            base + args, cwd=HERE, capture_output=True, text=True, timeout=120, check=False
        )
        print((done.stdout + done.stderr).rstrip())


def main() -> None:
    os.chdir(HERE)
    sys.path.insert(0, str(HERE))
    for stale in (HERE / "proj").glob("caraway.sqlite3*"):  # beside proj/caraway.py
        stale.unlink()
    workers = [start_worker("w1", "-c", "2"), start_worker("lopri", "-Q", "lopri", "-c", "1")]
    try:
        print((RUN / "w1.log").read_text())
        examples()
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(timeout=30)
        print("workers stopped")
    multi_examples()


if __name__ == "__main__":
    main()
