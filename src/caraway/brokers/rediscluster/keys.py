"""Key names of the Redis Cluster broker: every key of one queue shares the hash tag
``{<queue>}``, so each queue lives in one slot (on one master) and every script on it is
one command there; different queues spread over the cluster.

Per queue ``q`` (``<prefix>caraway:{q}`` = *base*): *base* (list of ready messages, each
``<32-hex tag><kombu envelope>``, pushed left, popped right), ``:held`` (tag -> envelope),
``:lease`` (tag -> lease end), ``:owner`` (tag -> owner), ``:count`` (tag -> deliveries),
``:parked`` (tag -> due time), ``:parkedmsg`` (tag -> envelope) and ``:wake`` (the sharded
pub/sub channel a push onto an empty queue is announced on). Beside them: ``{owner:<o>}``
(the queues an owner claimed from), ``{dead}`` (dead letters) and ``{revoked}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from caraway.clients.rediscluster import hash_tag

#: a message tag: uuid4().hex, so the list item splits without parsing the envelope
TAG_LENGTH = 32


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue, all in its slot."""

    ready: str
    held: str
    lease: str
    owner: str
    count: str
    parked: str
    parkedmsg: str
    wake: str


def queue_keys(prefix: str, queue: str) -> QueueKeys:
    base = f"{prefix}caraway:{{{hash_tag(queue)}}}"
    return QueueKeys(
        ready=base,
        held=f"{base}:held",
        lease=f"{base}:lease",
        owner=f"{base}:owner",
        count=f"{base}:count",
        parked=f"{base}:parked",
        parkedmsg=f"{base}:parkedmsg",
        wake=f"{base}:wake",
    )


def owner_key(prefix: str, owner: str) -> str:
    """The set of queues ``owner`` claimed from (renew and recover visit each)."""
    return f"{prefix}caraway:{{owner:{hash_tag(owner)}}}"


def dead_keys(prefix: str) -> tuple[str, str]:
    """(hash id -> dead letter, sorted set id -> failed at), in one slot."""
    return f"{prefix}caraway:{{dead}}:letters", f"{prefix}caraway:{{dead}}:order"


def revoked_key(prefix: str) -> str:
    return f"{prefix}caraway:{{revoked}}"


def queue_of_parked(prefix: str, key: str) -> str | None:
    """The queue name in a ``...caraway:{q}:parked`` key found by SCAN (None for a digest)."""
    head = f"{prefix}caraway:{{"
    if not (key.startswith(head) and key.endswith("}:parked")):
        return None
    return key[len(head) : -len("}:parked")]
