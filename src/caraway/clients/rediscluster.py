"""The Redis Cluster client of the cluster plug-ins: ``redis+cluster://`` URLs -> a redis-py
``RedisCluster``, hash tags, and retries for what is safe to repeat.

URL: ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for
TLS); one reachable node is enough, the others are discovered. The one thing to know: a
cluster has only db 0 and refuses a command whose keys live in different hash slots, so
every key of one queue (or one chord, one reply box) carries the same ``{tag}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from caraway.clients import redis as redis_client
from caraway.exceptions import BrokerConnectionError, ImproperlyConfigured

T = TypeVar("T")

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
#: what a retry after a new look at the cluster may cure (a failover in progress)
RETRYABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)
#: redis-py's node type (untyped there)
_NODE: Any = ClusterNode
_CLIENT_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive")


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """The startup nodes and credentials a ``redis+cluster://`` URL names."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    query: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"{'rediss' if self.tls else 'redis'}+cluster://{hosts}"


def parse_cluster_url(url: str) -> ClusterTarget:
    """Parse ``redis+cluster://h1:p1,h2:p2``; ImproperlyConfigured for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ImproperlyConfigured(
            f"not a Redis Cluster URL: {url!r}; write redis+cluster://h:p,h:p"
        )
    rest, _, query = rest.partition("?")
    userinfo, at, location = rest.rpartition("@")
    hosts, _, path = location.partition("/")
    if not hosts:
        raise ImproperlyConfigured(f"{url!r} names no node; write redis+cluster://host:port")
    if path.strip("/") not in ("", "0"):
        raise ImproperlyConfigured(f"{url!r}: a Redis Cluster has only db 0, not {path!r}")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    return ClusterTarget(
        nodes=tuple(_node(part, url) for part in hosts.split(",") if part),
        username=username,
        password=password,
        tls=SCHEMES[scheme.lower()],
        query=dict(parse_qsl(query)),
    )


def _node(spec: str, url: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    if not host:
        host, port = spec, "6379"
    try:
        return host, int(port)
    except ValueError:
        raise ImproperlyConfigured(f"bad node {spec!r} in {url!r}; write host:port") from None


def connect_cluster(url: str, options: dict[str, Any] | None = None) -> Any:
    """A ``RedisCluster`` for ``url``; it follows MOVED/ASK and refreshes its slot map itself."""
    options = dict(options or {})
    target = parse_cluster_url(url)
    kwargs: dict[str, Any] = {key: options[key] for key in _CLIENT_OPTIONS if key in options}
    kwargs.setdefault("socket_connect_timeout", 2.0)
    kwargs.setdefault("socket_timeout", 10.0)
    if target.tls or options.get("ssl"):
        kwargs["ssl"] = True
    try:
        return RedisCluster(
            startup_nodes=[_NODE(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            **kwargs,
        )
    except redis.RedisError as exc:
        raise BrokerConnectionError(
            f"Redis Cluster at {target.redacted()} unreachable: {exc}; check broker_url"
        ) from exc


def key_prefix(url: str, options: dict[str, Any]) -> str:
    """Celery's ``global_keyprefix``: from the options, else the URL's query."""
    given = options.get("global_keyprefix") or parse_cluster_url(url).query.get("global_keyprefix")
    return str(given or "")


def hash_tag(name: str) -> str:
    """What goes between the braces of a key of ``name`` (a queue, a group id...).

    The name itself when it has no brace (readable keys), else a digest of it: a brace in
    the name would end the tag early and scatter the keys over slots.
    """
    if "{" in name or "}" in name:
        return hashlib.sha1(name.encode()).hexdigest()
    return name


def retrying(what: str, fn: Callable[[], T], *, where: str, retries: int) -> T:
    """:func:`caraway.clients.redis.retrying`, also retrying what a failover in progress
    raises (the cluster is looked at anew before each attempt)."""
    return redis_client.retrying(
        what, fn, where=where, retries=retries, retryable=RETRYABLE, server="Redis Cluster"
    )
