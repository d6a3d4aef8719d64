"""The pure model behind ``caraway multi``: argv in, one fully expanded Node per worker out.

Parsing follows ``celery multi``: positionals are node names (or one count), short options
take the next token as value unless it starts with '-', long options take a value only with
'=', and ``-opt:selector`` applies an option to nodes by index, range, list or name.
No I/O happens here; paths are made absolute only against the ``cwd`` the caller passes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from caraway.exceptions import CarawayError

__all__ = [
    "DEFAULT_LOGFILE",
    "DEFAULT_PIDFILE",
    "DEFAULT_START_TIMEOUT",
    "Cluster",
    "MultiOptions",
    "MultiUsageError",
    "Node",
    "expand_template",
    "parse_argv",
]

DEFAULT_PIDFILE = "%n.pid"
# %I stays literal: the worker expands it per child (empty for the main process).
DEFAULT_LOGFILE = "%n%I.log"
DEFAULT_RANGE_PREFIX = "celery"
DEFAULT_CMD = "-m caraway worker"
DEFAULT_START_TIMEOUT = 30.0

# Options Celery's multi strips from argv before parsing: they are flags, and parsing them
# as short options would swallow the next token as their value.
_RESERVED_FLAGS = {
    "--nosplash": "nosplash",
    "--quiet": "quiet",
    "-q": "quiet",
    "--verbose": "verbose",
    "--no-color": "no_color",
}
_PIDFILE_KEYS = ("--pidfile", "-p")
_LOGFILE_KEYS = ("--logfile", "-f")
_HOSTNAME_KEYS = ("--hostname", "-n")
# Consumed by multi itself; never passed to a worker (the worker gets its own -n/--detach).
_MULTI_KEYS = frozenset(
    {
        *_PIDFILE_KEYS,
        *_LOGFILE_KEYS,
        *_HOSTNAME_KEYS,
        "--range-prefix",
        "--executable",
        "--cmd",
        "--start-timeout",
        "--detach",
    }
)
# Options of the top-level ``caraway`` command: they must come before the ``worker``
# subcommand, as with Celery 5 where --app is global only.
_GLOBAL_KEYS = frozenset({"-A", "--app", "-b", "--broker", "--result-backend", "--workdir"})
_TEMPLATE = re.compile(r"%([A-Za-z])")


class MultiUsageError(CarawayError, ValueError):
    """The ``caraway multi`` command line cannot be understood; nothing was started."""


@dataclass(frozen=True)
class MultiOptions:
    """Settings of the multi command itself (not passed to any worker)."""

    quiet: bool = False
    verbose: bool = False
    nosplash: bool = False
    no_color: bool = False
    start_timeout: float = DEFAULT_START_TIMEOUT


@dataclass(frozen=True)
class Node:
    """One worker node: its name, the exact command that starts it, and its files.

    ``pidfile`` and ``logfile`` are expanded (absolute when a cwd was given), except that
    ``%i``/``%I`` stay literal in ``logfile`` for the worker to expand per child process.
    """

    name: str
    shortname: str
    hostname: str
    index: int
    argv: tuple[str, ...]
    pidfile: str
    logfile: str
    options: tuple[tuple[str, str | None], ...] = ()

    @property
    def main_logfile(self) -> str:
        """The log file of the node's main process (%I is empty there, %i is 0)."""
        return self.logfile.replace("%I", "").replace("%i", "0")

    @property
    def command_line(self) -> str:
        """``argv`` as one shell-quoted line, for show/get/dryrun."""
        return shlex.join(self.argv)

    def expand(self, template: str) -> str:
        """Expand %p %n %N %h %d in ``template`` for this node; %i and %I stay literal."""
        return expand_template(template, _node_keys(self.name, self.shortname, self.hostname))


@dataclass(frozen=True)
class Cluster:
    """The nodes one ``caraway multi`` command line describes, in command-line order."""

    nodes: tuple[Node, ...]
    options: MultiOptions = field(default_factory=MultiOptions)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def find(self, wanted: str) -> Node:
        """The node called ``wanted`` (full name ``w1@host``, short name, or index).

        Raises MultiUsageError naming the known nodes when none matches.
        """
        for node in self.nodes:
            if wanted in (node.name, node.shortname):
                return node
        if wanted.isdigit() and 1 <= int(wanted) <= len(self.nodes):
            return self.nodes[int(wanted) - 1]
        raise MultiUsageError(f"unknown node {wanted!r}; nodes are {', '.join(self.names)}")


@dataclass(frozen=True)
class _NamespacedOption:
    key: str
    value: str | None
    selector: str
    spelled: str  # as typed, for error messages


@dataclass
class _Parsed:
    names: list[str] = field(default_factory=list)
    options: dict[str, str | None] = field(default_factory=dict)
    namespaced: list[_NamespacedOption] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)


def expand_template(template: str, keys: Mapping[str, str]) -> str:
    """Replace each ``%x`` whose letter is in ``keys``; leave any other ``%x`` as typed."""
    return _TEMPLATE.sub(lambda m: keys.get(m.group(1), m.group(0)), template)


def _host_keys(host: str) -> dict[str, str]:
    # As the worker's -n: %h full hostname, %n the part before the first dot, %d the domain.
    short, _, domain = host.partition(".")
    return {"h": host, "n": short, "d": domain}


def _node_keys(nodename: str, shortname: str, host: str) -> dict[str, str]:
    # As the worker's --pidfile/--logfile (%p full node name, %n node name, %h its host,
    # %d its domain); %N is Celery 3's spelling of %n. %i/%I are absent on purpose.
    _, _, domain = host.partition(".")
    return {"p": nodename, "n": shortname, "N": shortname, "h": host, "d": domain}


def _split_tokens(argv: Sequence[str]) -> tuple[list[str], list[str], dict[str, bool]]:
    flags = {name: False for name in _RESERVED_FLAGS.values()}
    tokens: list[str] = []
    passthrough: list[str] = []
    for position, arg in enumerate(argv):
        if arg == "--":
            passthrough = list(argv[position + 1 :])
            break
        if arg in _RESERVED_FLAGS:
            flags[_RESERVED_FLAGS[arg]] = True
        elif arg:
            tokens.append(arg)
    return tokens, passthrough, flags


def _add_option(parsed: _Parsed, spelled: str, value: str | None) -> None:
    name, sep, selector = spelled.partition(":")
    if not sep:
        parsed.options[name] = value
        return
    if ":" in selector or not selector or name in ("-", "--"):
        raise MultiUsageError(f"malformed option {spelled!r}; write e.g. -c:1-3 or -c:w1")
    parsed.namespaced.append(_NamespacedOption(name, value, selector, spelled))


def _tokenize(argv: Sequence[str]) -> _Parsed:
    tokens, passthrough, flags = _split_tokens(argv)
    parsed = _Parsed(passthrough=passthrough, flags=flags)
    position = 0
    while position < len(tokens):
        arg = tokens[position]
        if arg.startswith("--"):
            spelled, sep, value = arg.partition("=")
            _add_option(parsed, spelled, value if sep else None)
        elif arg.startswith("-") and len(arg) > 1:
            following = tokens[position + 1] if position + 1 < len(tokens) else None
            if following is not None and not following.startswith("-"):
                position += 1
                _add_option(parsed, arg, following)
            else:
                _add_option(parsed, arg, None)
        else:
            parsed.names.append(arg)
        position += 1
    return parsed


def _first(options: Mapping[str, str | None], keys: Sequence[str]) -> str | None:
    for key in keys:
        if options.get(key):
            return options[key]
    return None


def _node_identities(names: Sequence[str], *, prefix: str, host: str) -> list[tuple[str, str, str]]:
    """(full name, short name, host) per node: a single count N means prefix1..prefixN."""
    if not names:
        raise MultiUsageError("no nodes given; name them (w1 w2) or give a count (3)")
    if len(names) == 1 and names[0].isdigit():
        count = int(names[0])
        if count < 1:
            raise MultiUsageError(f"node count must be at least 1, got {names[0]}")
        names = [f"{prefix}{number}" for number in range(1, count + 1)]
    identities = []
    for name in names:
        if "@" in name:
            short, _, node_host = expand_template(name, _host_keys(host)).partition("@")
        else:
            short, node_host = name, host
        if not short or not node_host:
            raise MultiUsageError(f"malformed node name {name!r}; write name or name@host")
        identities.append((f"{short}@{node_host}", short, node_host))
    full_names = [identity[0] for identity in identities]
    duplicates = sorted({name for name in full_names if full_names.count(name) > 1})
    if duplicates:
        raise MultiUsageError(f"node named more than once: {', '.join(duplicates)}")
    return identities


def _select(
    option: _NamespacedOption, shortnames: Sequence[str], fullnames: Sequence[str]
) -> set[int]:
    """Indexes (0-based) of the nodes a selector such as ``1-3,7`` or ``w1,w2`` names."""
    chosen: set[int] = set()
    for part in option.selector.split(","):
        if part in shortnames:
            chosen.add(shortnames.index(part))
        elif part in fullnames:
            chosen.add(fullnames.index(part))
        else:
            chosen.update(_select_by_index(part, option, len(shortnames), shortnames))
    return chosen


def _select_by_index(
    part: str, option: _NamespacedOption, count: int, shortnames: Sequence[str]
) -> range:
    start_text, dash, stop_text = part.partition("-")
    if not (start_text.isdigit() and (not dash or stop_text.isdigit())):
        raise MultiUsageError(
            f"unknown node {part!r} in {option.spelled}; nodes are {', '.join(shortnames)}"
        )
    start = int(start_text)
    stop = int(stop_text) if dash else start
    if dash and stop < start:
        raise MultiUsageError(
            f"malformed range {part!r} in {option.spelled}: {start} is after {stop}"
        )
    if start < 1 or stop > count:
        raise MultiUsageError(
            f"no node at index {part!r} in {option.spelled}: indexes run from 1 to {count}"
        )
    return range(start - 1, stop)


def _node_options(
    parsed: _Parsed, selections: Sequence[set[int]], index: int
) -> dict[str, str | None]:
    # Later options win; an override keeps the position of the default it replaces.
    options = dict(parsed.options)
    for option, chosen in zip(parsed.namespaced, selections, strict=True):
        if index in chosen:
            options[option.key] = option.value
    return options


def _format_options(options: Mapping[str, str | None], expand: Mapping[str, str]) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        if value is None:
            argv.append(key)
        elif key.startswith("--"):
            argv.append(f"{key}={expand_template(value, expand)}")
        else:
            argv.extend((key, expand_template(value, expand)))
    return argv


def _absolute(path: str, cwd: str | None) -> str:
    if cwd is None or path.startswith("/"):
        return path
    return f"{cwd.rstrip('/')}/{path}"


def _build_argv(
    options: Mapping[str, str | None],
    parsed: _Parsed,
    *,
    name: str,
    keys: Mapping[str, str],
    pidfile: str,
    logfile: str,
    executable: str,
) -> tuple[str, ...]:
    global_options = {k: v for k, v in options.items() if k in _GLOBAL_KEYS}
    worker_options = {
        k: v for k, v in options.items() if k not in _GLOBAL_KEYS and k not in _MULTI_KEYS
    }
    cmd = shlex.split(_first(options, ("--cmd",)) or DEFAULT_CMD)
    # Global options go right after the program name so ``caraway`` parses them, not
    # ``worker``; a custom --cmd without ``caraway`` in it gets them after its last word.
    at = cmd.index("caraway") + 1 if "caraway" in cmd else len(cmd)
    cmd[at:at] = _format_options(global_options, keys)
    return (
        executable,
        *cmd,
        "-n",
        name,
        "--detach",
        f"--pidfile={pidfile}",
        f"--logfile={logfile}",
        *_format_options(worker_options, keys),
        *(expand_template(arg, keys) for arg in parsed.passthrough),
    )


def _multi_options(parsed: _Parsed) -> MultiOptions:
    timeout_text = _first(parsed.options, ("--start-timeout",))
    timeout = DEFAULT_START_TIMEOUT
    if timeout_text is not None:
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise MultiUsageError(
                f"--start-timeout must be a positive number of seconds, got {timeout_text!r}"
            )
    return MultiOptions(start_timeout=timeout, **parsed.flags)


def parse_argv(
    argv: Sequence[str],
    *,
    hostname: str,
    executable: str = "python",
    cwd: str | None = None,
) -> Cluster:
    """Build the Cluster a ``caraway multi <command>`` argument list describes.

    ``argv`` is what follows the subcommand (``w1 w2 -A proj -c:w1 4``); ``hostname`` is
    this machine's, used for ``%h`` and for nodes named without ``@``; ``executable`` is
    the Python that runs ``-m caraway`` (``--executable`` overrides it); with ``cwd``,
    relative pid and log files are made absolute against it, since a detached worker may
    change directory. Raises MultiUsageError on bad input, before anything is built.
    """
    parsed = _tokenize(argv)
    host = expand_template(_first(parsed.options, _HOSTNAME_KEYS) or hostname, _host_keys(hostname))
    prefix = _first(parsed.options, ("--range-prefix",)) or DEFAULT_RANGE_PREFIX
    identities = _node_identities(parsed.names, prefix=prefix, host=host)
    # The index names a node as the user typed it: `-c:1` is the first, also for named nodes.
    shortnames = [short for _, short, _ in identities]
    fullnames = [full for full, _, _ in identities]
    selections = [_select(option, shortnames, fullnames) for option in parsed.namespaced]
    executable = _first(parsed.options, ("--executable",)) or executable
    nodes = []
    for index, (full, short, node_host) in enumerate(identities):
        options = _node_options(parsed, selections, index)
        keys = _node_keys(full, short, node_host)
        pidfile = _absolute(
            expand_template(_first(options, _PIDFILE_KEYS) or DEFAULT_PIDFILE, keys), cwd
        )
        logfile = _absolute(
            expand_template(_first(options, _LOGFILE_KEYS) or DEFAULT_LOGFILE, keys), cwd
        )
        node_argv = _build_argv(
            options,
            parsed,
            name=full,
            keys=keys,
            pidfile=pidfile,
            logfile=logfile,
            executable=executable,
        )
        worker_options = tuple((k, v) for k, v in options.items() if k not in _MULTI_KEYS)
        nodes.append(
            Node(full, short, node_host, index + 1, node_argv, pidfile, logfile, worker_options)
        )
    return Cluster(tuple(nodes), _multi_options(parsed))
