"""The Redis broker's key names, Celery 5.7/kombu 5.7's layout (docs/protocol.md section 2)
plus caraway's own keys, shared by the transport and the admin.

Owns names only, never a command's meaning. The one thing to know: a queue is one list per
priority bucket (``<queue>``, ``<queue>\\x06\\x163`` ...), every key takes the
``global_keyprefix``, and kombu's binding tables say which queue an exchange routes to.
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
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
        priority = max(0, min(9, priority))
        return max((s for s in self.priority_steps if s <= priority), default=0)

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

    def binding(self, queue: str, exchange: str, routing_key: str) -> list[Command]:
        """The binding-table entries Celery 5.7 writes when it declares ``queue`` (§2.4).

        Celery declares a queue on an exchange of its own name; a message sent to the
        default exchange "" is routed by queue name and needs no other binding.
        """
        bind_exchange = exchange or queue
        bind_key = routing_key if exchange else queue
        member = f"{bind_key}{self.sep}{self.sep}{queue}"
        return [
            ("SADD", self.k(f"_kombu.binding.{bind_exchange}"), member),
            ("SADD", self.k(f"_kombu.binding_permanent.{bind_exchange}"), member),
        ]


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
