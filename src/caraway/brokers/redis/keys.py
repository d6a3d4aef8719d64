"""The Redis broker's key names, Celery 5.7/kombu 5.7's layout (docs/design/protocol.md section 2)
plus caraway's own keys, shared by the transport and the admin.

Owns names only, never a command's meaning. The one thing to know: a queue is one list per
priority bucket (``<queue>``, ``<queue>\\x06\\x163`` ...), every key takes the
``global_keyprefix``, and kombu's binding tables say which queue an exchange routes to.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from caraway.clients.redis import to_int
from caraway.protocol.message import Message

DEFAULT_SEP = "\x06\x16"
DEFAULT_STEPS = (0, 3, 6, 9)

Command = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one ``global_keyprefix``, ``sep`` and ``priority_steps``."""

    prefix: str = ""
    sep: str = DEFAULT_SEP
    priority_steps: tuple[int, ...] = DEFAULT_STEPS
    # fixed keys, prefixed once here rather than on every command
    unacked: str = field(init=False)
    unacked_index: str = field(init=False)
    unacked_mutex: str = field(init=False)
    claims: str = field(init=False)
    deliveries: str = field(init=False)
    schedule: str = field(init=False)
    revoked: str = field(init=False)
    dead: str = field(init=False)
    dead_index: str = field(init=False)
    dead_seq: str = field(init=False)
    #: the bucket of each priority 0-9, worked out once (every publish asks)
    buckets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps = self.priority_steps
        buckets = tuple(max((s for s in steps if s <= p), default=0) for p in range(10))
        object.__setattr__(self, "buckets", buckets)
        for name, key in (
            ("unacked", "unacked"),
            ("unacked_index", "unacked_index"),
            ("unacked_mutex", "unacked_mutex"),
            ("claims", "caraway.claims"),
            ("deliveries", "caraway.deliveries"),
            ("schedule", "caraway.schedule"),
            ("revoked", "caraway.revoked"),
            ("dead", "caraway.dead"),
            ("dead_index", "caraway.dead.index"),
            ("dead_seq", "caraway.dead.seq"),
        ):
            object.__setattr__(self, name, self.prefix + key)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Keys:
        """Celery's ``global_keyprefix``, ``sep`` and ``priority_steps`` transport options."""
        return cls(
            prefix=str(options.get("global_keyprefix", "") or ""),
            sep=str(options.get("sep", DEFAULT_SEP)),
            priority_steps=tuple(
                sorted(int(s) for s in options.get("priority_steps", DEFAULT_STEPS))
            ),
        )

    def k(self, name: str) -> str:
        """``name`` with the prefix."""
        return self.prefix + name

    def queue_key(self, queue: str, priority: int = 0) -> str:
        """The (unprefixed) list a message of ``priority`` on ``queue`` lives in (kombu's
        bucket rule)."""
        step = self.bucket(priority)
        return f"{queue}{self.sep}{step}" if step else queue

    def bucket(self, priority: int) -> int:
        """The step (of ``priority_steps``) whose list holds messages of ``priority``."""
        return self.buckets[0 if priority < 0 else 9 if priority > 9 else priority]

    def queue_keys(self, queue: str) -> list[str]:
        """Every bucket's (unprefixed) list of ``queue``."""
        return [self.queue_key(queue, step) for step in self.priority_steps]

    def queue_of(self, key: str) -> str:
        """The queue an (unprefixed) list key belongs to."""
        head, sep, step = key.rpartition(self.sep)
        if sep and step.isdigit() and int(step) in self.priority_steps:
            return head
        return key

    def owner(self, owner: str) -> str:
        """The set of delivery tags ``owner`` holds."""
        return self.prefix + f"caraway.owner.{owner}"

    def bookkeeping(self) -> list[str]:
        """Where a claim is recorded: kombu's ``unacked``/``unacked_index`` and ours."""
        return [self.unacked, self.unacked_index, self.claims]

    def dead_keys(self) -> list[str]:
        return [self.dead, self.dead_index, self.dead_seq]

    def binding(
        self, queue: str, exchange: str, routing_key: str, exchange_type: str = "direct"
    ) -> list[Command]:
        """The binding-table entries Celery 5.7 writes when it declares ``queue`` (§2.4).

        Celery declares a queue on an exchange of its own name; a message sent to the
        default exchange "" is routed by queue name and needs no other binding. A member is
        ``<binding key><sep><pattern><sep><queue>``, the pattern being kombu's regex for a
        topic binding (:func:`topic_pattern`; kombu's producers match with it) and empty
        otherwise.
        """
        bind_exchange = exchange or queue
        member = self.member(queue, exchange, routing_key, exchange_type)
        return [
            ("SADD", self.k(f"_kombu.binding.{bind_exchange}"), member),
            ("SADD", self.k(f"_kombu.binding_permanent.{bind_exchange}"), member),
        ]

    def member(
        self, queue: str, exchange: str, routing_key: str, exchange_type: str = "direct"
    ) -> str:
        """One binding-table member (see :meth:`binding`)."""
        bind_key = routing_key if exchange else queue
        pattern = topic_pattern(bind_key) if exchange and exchange_type == "topic" else ""
        return f"{bind_key}{self.sep}{pattern}{self.sep}{queue}"

    def unbinding(self, queue: str, exchange: str, routing_key: str) -> list[Command]:
        """Remove ``queue``'s direct and topic members for ``routing_key`` from both sets."""
        members = {self.member(queue, exchange, routing_key, kind) for kind in ("direct", "topic")}
        return [
            ("SREM", self.k(f"{table}.{exchange}"), *sorted(members))
            for table in ("_kombu.binding", "_kombu.binding_permanent")
        ]


def topic_pattern(binding_key: str) -> str:
    """kombu 5.7's regex for a topic binding key (``TopicExchange.key_to_pattern``), written
    as kombu writes it so both see one member: ``*`` is one word, ``#`` any run of
    characters (``a.#`` does not match ``a``, unlike AMQP), other characters escaped."""
    words = binding_key.split(".")
    return "^" + r"\.".join(_WILDCARDS.get(word) or _escape(word) for word in words) + "$"


_WILDCARDS = {"*": r"[^\.]+", "#": r".*?"}


def _escape(word: str) -> str:
    # kombu's escape_regex(key, '.#*'): '#' and '*' inside a word stay as they are
    return "".join(
        char if char.isalnum() or char in "#*" else ("\\000" if char == "\0" else "\\" + char)
        for char in word
    )


@functools.lru_cache(maxsize=1024)
def _compiled(binding_key: str) -> re.Pattern[str]:
    return re.compile(topic_pattern(binding_key))


def kombu_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether kombu's Redis transport routes ``routing_key`` to a binding of ``binding_key``:
    equal keys for a direct exchange, :func:`topic_pattern` for a topic one. caraway routes
    by the same rule on Redis, so a message goes where a Celery producer would send it."""
    if exchange_type == "topic":
        return _compiled(binding_key).match(routing_key) is not None
    return binding_key == routing_key


def bound_queue(keys: Keys, members: Any, routing_key: str) -> str:
    """The queue kombu's binding ``members`` (of one exchange) route ``routing_key`` to, as
    kombu resolves it (a member with a pattern is a topic binding); the first of several,
    so a message taken back never becomes copies; the routing key itself when none matches."""
    for member in sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members):
        key, pattern, queue = member.split(keys.sep, 2)
        if kombu_matches("topic" if pattern else "direct", key, routing_key):
            return queue
    return routing_key


def fanout_key(keys: Keys, exchange: str) -> str:
    """caraway's set of the queues a fanout exchange copies to. Not kombu's binding table:
    kombu fans out by pub/sub, so its table's fanout members are queues nobody reads as
    lists; ours are nodes' broadcast queues, each a list its node reads."""
    return keys.k(f"caraway.fanout.{exchange}")


def priority_of(message: Message) -> int:
    """The message's priority clamped to kombu's 0-9; 0 when it has none."""
    priority = message.properties.get("priority")
    if priority is None:
        return 0  # most messages: no exception to raise and catch in to_int
    return max(0, min(9, to_int(priority)))
