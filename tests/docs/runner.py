"""Runs a documentation page as a reader would: its files, its commands, its sessions.

A page is read top to bottom, block by block, in a fresh working directory:

- a ``python`` block with ``title="proj/tasks.py"`` is written to that file;
- a ``python`` block without a title runs in the page's interpreter namespace;
- a ``pycon`` block (``>>>`` lines) runs in that namespace as a doctest, its output
  compared with what the page shows;
- a ``console`` block's ``$ ...`` lines run (``caraway`` and ``python`` commands); a
  ``caraway ... worker`` line starts the worker in the background (as in a second terminal)
  and its output on the page must appear, in order, in what the worker printed by the end
  of the page; any other command's output must match what the page shows;
- any other block (``text``, ``ini``, ``sh``...) is for reading only.

``<!-- test: ... -->`` comments (not rendered) steer the run: ``skip`` (the next block is
not run, say why on the same line), ``setup PAGE`` (the files PAGE wrote, as a reader
who followed it has them), ``worker-log`` (the next block shows lines the last
worker started prints, checked as its banner is), ``stop-workers`` (what the reader does
with Ctrl+C).

Outputs are compared after :func:`normalize`: ids, addresses, times, host names and the
working directory differ on every run and are masked on both sides, nothing else.
"""

from __future__ import annotations

import contextlib
import doctest
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import wait_until

#: the working directory the pages show ("an empty directory of your own")
DOC_DIR = "/home/you/tutorial"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)(?P<info>[^\n`]*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')
_DIRECTIVE = re.compile(r"^\s*<!-- test: (?P<what>[\w-]+)(?P<rest>.*?)-->\s*$")
_SKIPPED_COMMANDS = ("pip", "cd", "mkdir", "redis-server", "rabbitmq-server", "docker")


@dataclass
class Block:
    lang: str
    title: str | None
    body: str
    line: int
    directives: list[str] = field(default_factory=list)


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of a page, with the ``<!-- test: ... -->`` lines just before each."""
    found: list[Block] = []
    lines = markdown.splitlines()
    pending: list[str] = []
    index = 0
    while index < len(lines):
        directive = _DIRECTIVE.match(lines[index])
        if directive:
            pending.append(directive["what"])
            if directive["what"] in ("stop-workers", "setup"):
                body = directive["rest"].strip()
                found.append(Block(directive["what"], None, body, index + 1))
                pending.pop()
            index += 1
            continue
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        indent = len(fence["indent"])
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:])
            index += 1
        title = _TITLE.search(fence["info"])
        found.append(
            Block(
                fence["lang"],
                title["title"] if title else None,
                "\n".join(body) + "\n",
                start + 1,
                pending,
            )
        )
        pending = []
        index += 1
    return found


_MASKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"0x[0-9a-f]+"), "0x<addr>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?"), "<time>"),
    (re.compile(r"^(--- \*\*\*\*\* ----- )\S+", re.M), r"\1<platform>"),
    (re.compile(r"(@[\w-]+) v\d+\.\d+\.\d+\S*"), r"\1 v<version>"),
    (re.compile(r"(\w@)(?!localhost\b)[\w-]+(?:\.[\w-]+)*"), r"\1<host>"),
    (re.compile(r"\bin \d+(?:\.\d+)?(?:e-\d+)?s\b"), "in <secs>s"),
    (re.compile(r"(concurrency: )\d+"), r"\1<n>"),
    (re.compile(r"ForkPoolWorker-\d+"), "ForkPoolWorker-<n>"),
    (re.compile(r"(\bpid:? |-> )\d+"), r"\1<pid>"),
]


def normalize(text: str) -> str:
    """Mask what differs on every run (ids, times, hosts, pids), strip line ends."""
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _line_pattern(line: str) -> re.Pattern[str]:
    """A shown line as a pattern: ``...`` inside it stands for anything."""
    return re.compile("^" + ".*?".join(re.escape(part) for part in line.split("...")) + "$")


def matches_in_order(shown: str, printed: str) -> str | None:
    """None if every shown line appears in ``printed``, in order; else the first missing."""
    printed_lines = normalize(printed).splitlines()
    position = 0
    for line in normalize(shown).splitlines():
        if line.strip() == "...":
            continue
        pattern = _line_pattern(line)
        while position < len(printed_lines) and not pattern.match(printed_lines[position]):
            position += 1
        if position == len(printed_lines):
            return line
        position += 1
    return None


def matches_exactly(shown: str, printed: str) -> bool:
    """Line by line; a line ``...`` alone stands for any number of lines."""
    regex = ""
    for line in normalize(shown).splitlines():
        if line.strip() == "...":
            regex += r"(?:[^\n]*\n)*?"
        else:
            regex += _line_pattern(line).pattern[1:-1] + r"\n"
    return re.fullmatch(regex, normalize(printed) + "\n") is not None


class _Checker(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if super().check_output(want, got, optionflags):
            return True
        return super().check_output(normalize(want) + "\n", normalize(got) + "\n", optionflags)


@dataclass
class Page:
    """One run of a page: its directory, the workers it started, its interpreter state."""

    path: Path
    workdir: Path
    #: what the page shows -> what this machine uses (a private Redis db, a vhost...)
    substitutions: dict[str, str] = field(default_factory=dict)
    #: environment for the page's commands (the runner drops the caller's CARAWAY_*)
    env: dict[str, str] = field(default_factory=dict)
    #: [process, log file, what the page shows it prints]
    workers: list[list[Any]] = field(default_factory=list)
    namespace: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    # -- what the page shows <-> what runs here ---------------------------------------
    def _here(self, text: str) -> str:
        for shown, actual in self.substitutions.items():
            text = text.replace(shown, actual)
        return text

    def _shown(self, text: str) -> str:
        for shown, actual in self.substitutions.items():
            text = text.replace(actual, shown)
        return text.replace(str(self.workdir), DOC_DIR)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARAWAY_", "TEST_"))}
        env["PYTHONPATH"] = str(self.workdir)
        env["COLUMNS"] = "100"
        return {**env, **self.env}

    # -- running ----------------------------------------------------------------------
    def run(self) -> list[str]:
        for block in blocks(self.path.read_text()):
            if "skip" not in block.directives:
                self._run_block(block, f"{self.path.name}:{block.line}")
        for process, log, shown in self.workers:
            self._check_worker(process, log, shown)
        return self.failures

    def _check_worker(self, process: subprocess.Popen[bytes], log: Path, shown: str) -> None:
        def printed() -> str:
            return self._shown(log.read_text(errors="replace"))

        # what a worker logs after a result is stored (a callback, the next beat tick)
        # may come a moment later: wait for it, with a deadline
        with contextlib.suppress(AssertionError):
            wait_until(lambda: matches_in_order(shown, printed()) is None, timeout=10)
        missing = matches_in_order(shown, printed())
        if missing is not None:
            self.failures.append(
                f"worker {process.args!r}: the page shows a line it never printed:\n"
                f"  {missing}\nit printed:\n{printed()}"
            )

    def _run_block(self, block: Block, where: str) -> None:
        if "worker-log" in block.directives:
            assert self.workers, f"{where}: a worker-log block before any worker"
            self.workers[-1][2] += "\n" + block.body
        elif block.lang == "stop-workers":
            self.stop_workers()
        elif block.lang == "setup":  # the files another page made, as the reader has them
            for made in blocks((self.path.parent / block.body).read_text()):
                if made.lang == "python" and made.title:
                    self._write(made.title, made.body)
        elif block.lang == "python" and block.title:
            self._write(block.title, block.body)
        elif block.lang == "python":
            exec(compile(self._here(block.body), where, "exec"), self.namespace)
        elif block.lang == "pycon":
            self._doctest(block, where)
        elif block.lang == "console":
            self._console(block, where)

    def _write(self, name: str, text: str) -> None:
        target = self.workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self._here(text))
        forget_modules(name.split("/", maxsplit=1)[0].removesuffix(".py"))

    def _doctest(self, block: Block, where: str) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(
            self._here(block.body), self.namespace, where, str(self.path), block.line
        )
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        runner = doctest.DocTestRunner(checker=_Checker(), optionflags=flags)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        self.namespace.update(test.globs)  # DocTest copies its globals: keep what it set
        if runner.failures:
            self.failures.append(self._shown("".join(report)))

    def _console(self, block: Block, where: str) -> None:
        for command, shown in _commands(block.body):
            argv = shlex.split(self._here(command))
            if argv[0] in _SKIPPED_COMMANDS:
                continue
            if argv[0] == "caraway":
                argv = [sys.executable, "-m", "caraway", *argv[1:]]
            elif argv[0] in ("python", "python3"):
                argv = [sys.executable, *argv[1:]]
            else:
                raise AssertionError(f"{where}: the runner does not know {argv[0]!r}")
            if "worker" in argv and "multi" not in argv:
                self._start_worker(argv, shown, where)
                continue
            done = subprocess.run(
                argv,
                cwd=self.workdir,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            printed = self._shown(done.stdout + done.stderr)
            if not matches_exactly(shown, printed):
                self.failures.append(
                    f"{where}: $ {command}\nthe page shows:\n{shown}\nit printed:\n{printed}"
                )

    def _start_worker(self, argv: list[str], shown: str, where: str) -> None:
        log = self.workdir / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append([process, log, shown])

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{where}: the worker exited:\n{log.read_text()}")
            return " ready." in log.read_text(errors="replace")

        wait_until(ready, timeout=30, message=f"{where}: the worker to be ready")

    def stop_workers(self) -> None:
        """What Ctrl+C does: a warm shutdown, waited for; then the page's pidfiles."""
        for process, _log, _shown in self.workers:
            _stop(process.pid, lambda p=process: p.poll() is not None)  # type: ignore[misc]
        for pidfile in self.workdir.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().strip())
                _stop(pid, lambda pid=pid: not _alive(pid))  # type: ignore[misc]


def _commands(body: str) -> Iterator[tuple[str, str]]:
    """``$ command`` lines with the output shown under each."""
    command: str | None = None
    output: list[str] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            if command is not None:
                yield command, "\n".join(output)
            command, output = line[2:], []
        elif command is not None:
            output.append(line)
    if command is not None:
        yield command, "\n".join(output)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int, gone: Callable[[], bool]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not gone():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def forget_modules(package: str) -> None:
    """Drop a page's project from ``sys.modules``: the next import reads its files again."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
