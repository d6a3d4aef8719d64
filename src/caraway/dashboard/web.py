"""The dashboard's ASGI application: the page, its JSON API, live updates and actions.

A plain ASGI callable with a small router, no framework: a few dozen routes do not
need one. Every request passes the Host allowlist, then ``Auth``; every action is a POST
that must also carry the session's CSRF token in ``X-CSRF-Token`` and a JSON body, which a
page on another site can neither read nor send (guard.py says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from caraway.dashboard import actions, api
from caraway.dashboard.auth import TOKEN_COOKIE, Auth
from caraway.dashboard.feed import Monitor
from caraway.dashboard.guard import CSRF_HEADER, Csrf, HostAllowlist, cross_site
from caraway.dashboard.model import SORT_KEYS, Cluster, TaskQuery

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("caraway.dashboard")

_MAX_BODY = 64 * 1024
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:",
    ),
]
_WORKER_ACTION = re.compile(
    r"^/api/workers/([^/]+)/(shutdown|pool/grow|pool/shrink|pool/autoscale|queues/add"
    r"|queues/cancel|rate-limit|time-limit)$"
)
_TASK_ACTION = re.compile(r"^/api/tasks/([^/]+)/(revoke|terminate)$")
_DEAD_ACTION = re.compile(r"^/api/dead-letters/(replay|discard)$")
_TASK = re.compile(r"^/api/tasks/([^/]+)$")
_WORKER = re.compile(r"^/api/workers/([^/]+)$")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """What a handler needs from the ASGI scope."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = {
            k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()
        }
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }

    async def json(self) -> dict[str, Any]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            body = message.get("body", b"")
            size += len(body)
            if size > _MAX_BODY:
                raise HTTPError(413, "request body too large")
            chunks.append(body)
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        if not raw:
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HTTPError(400, "body must be a JSON object")
        return data


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *_SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


async def _json(send: Send, value: Any, status: int = 200) -> None:
    await _respond(send, status, _dumps(value), "application/json")


def _number(query: dict[str, str], key: str) -> float | None:
    raw = query.get(key)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise HTTPError(400, f"{key} must be a number, got {raw!r}") from exc


def _count(query: dict[str, str], key: str, default: int, most: int) -> int:
    value = _number(query, key)
    if value is None:
        return default
    if not 0 <= value <= most:  # also refuses nan
        raise HTTPError(400, f"{key} must be between 0 and {most}, got {query[key]!r}")
    return int(value)


def task_query(query: dict[str, str]) -> TaskQuery:
    """Read the task list's filters from a query string; raises HTTPError(400)."""
    sort = query.get("sort") or "timestamp"
    if sort not in SORT_KEYS:
        raise HTTPError(400, f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise HTTPError(400, f"order must be asc or desc, got {order!r}")
    return TaskQuery(
        state=query.get("state") or None,
        name=query.get("name") or None,
        worker=query.get("worker") or None,
        since=_number(query, "since"),
        until=_number(query, "until"),
        search=query.get("search") or None,
        limit=_count(query, "limit", 200, 10_000),
        offset=_count(query, "offset", 0, 10_000_000),
        sort=sort,
        descending=order == "desc",
    )


class Dashboard:
    """The ASGI app. ``monitor`` (optional) is started and stopped with the server."""

    def __init__(
        self,
        app: Any,
        cluster: Cluster,
        *,
        auth: Auth | None = None,
        monitor: Monitor | None = None,
        stream_interval: float = 0.25,
        hosts: HostAllowlist | None = None,
        csrf: Csrf | None = None,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self.auth = auth or Auth()
        self.hosts = hosts or HostAllowlist()
        self.csrf = csrf or Csrf()
        self.monitor = monitor
        self.stream_interval = stream_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            host = request.headers.get("host")
            if not self.hosts.allows(host):
                # DNS rebinding: a hostile name that resolves to this address
                raise HTTPError(421, f"host {host!r} is not served here (see --allowed-hosts)")
            if not self._authorized(request):
                await self._unauthorized(send)
                return
            await self._route(request, send)
        except HTTPError as exc:
            await _json(send, {"error": exc.message}, exc.status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.monitor is not None:
                    self.monitor.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.monitor is not None:
                    await asyncio.to_thread(self.monitor.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorized(self, request: Request) -> bool:
        # the token may ride in the query string only to open the page (then a cookie)
        query_token = request.query.get("token") if request.path == "/" else None
        return self.auth.allows(
            authorization=request.headers.get("authorization"),
            cookie=request.headers.get("cookie"),
            query_token=query_token,
        )

    async def _unauthorized(self, send: Send) -> None:
        challenge = self.auth.challenge()
        extra = [(b"www-authenticate", challenge.encode())] if challenge else []
        body = _dumps({"error": "authentication required"})
        await _respond(send, 401, body, "application/json", extra)

    async def _route(self, request: Request, send: Send) -> None:
        if request.method == "POST":
            await self._action(request, send)
            return
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, f"{request.method} is not allowed here")
        path = request.path
        if path == "/":
            await self._index(request, send)
        elif path.startswith("/static/"):
            await self._static(path.removeprefix("/static/"), send)
        elif path == "/api/stream":
            await self._stream(request, send)
        elif path == "/metrics":
            text = api.metrics(self.cluster).encode()
            await _respond(send, 200, text, "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/api/dead-letters":
            limit = _count(request.query, "limit", 100, 1000)
            await _json(send, await self._blocking(lambda: actions.dead_letters(self.app, limit)))
        elif path == "/api/beat":
            await _json(send, await self._blocking(lambda: actions.beat_status(self.app)))
        elif _WORKER.match(path):
            await _json(send, await self._worker(unquote(path.split("/")[3])))
        else:
            await _json(send, self._get(path, request.query))

    async def _blocking(self, call: Callable[[], Any]) -> Any:
        """Run a broker call in a thread; its failure is a 502 that says what failed."""
        try:
            return await asyncio.to_thread(call)
        except actions.ActionError as exc:
            raise HTTPError(400, str(exc)) from exc
        except Exception as exc:
            logger.warning("broker call failed: %s", exc)
            raise HTTPError(502, f"the broker call failed: {exc}") from exc

    async def _worker(self, hostname: str) -> dict[str, Any]:
        known = [w for w in self.cluster.workers() if w["hostname"] == hostname]
        monitor = self.monitor
        detail = (
            await self._blocking(lambda: monitor.node_detail(hostname))
            if monitor is not None
            else {}
        )
        if not known and not any(detail.values()):
            raise HTTPError(404, f"no worker {hostname!r} seen or answering")
        return {"worker": known[0] if known else {"hostname": hostname}, "detail": detail}

    def _get(self, path: str, query: dict[str, str]) -> Any:
        cluster = self.cluster
        if path == "/api/workers":
            return cluster.workers()
        if path == "/api/tasks":
            task_filter = task_query(query)
            total, page = cluster.page(task_filter)
            return {"total": total, "offset": task_filter.offset, "tasks": page}
        if path == "/api/queues":
            return cluster.queues()
        if path == "/api/charts":
            window = _count(query, "seconds", 900, 7 * 24 * 3600)
            since = cluster.clock() - window
            return cluster.history.series(since=since, task=query.get("task") or None)
        if path == "/api/throughput":
            return cluster.throughput(max(_count(query, "seconds", 120, 600), 1))
        if path == "/api/session":
            return {"csrf": self.csrf.token, "auth": self.auth.enabled}
        if path == "/api/status":
            monitor = self.monitor
            store = monitor.store if monitor is not None else None
            return {
                "events": monitor is not None and monitor.source is not None,
                "connected": monitor is not None and monitor.connected,
                "auth": self.auth.enabled,
                "polled": cluster.polled,
                "since": cluster.since,
                "history": store is not None and store.available,
                "restored": monitor is not None and monitor.restored,
            }
        if path == "/openapi.json":
            return api.openapi()
        match = _TASK.match(path)
        if match:
            task = cluster.task(unquote(match.group(1)))
            if task is None:
                raise HTTPError(404, f"no task {unquote(match.group(1))!r} in the history")
            return task
        raise HTTPError(404, f"no route {path!r}")

    async def _index(self, request: Request, send: Send) -> None:
        page = resources.files("caraway.dashboard").joinpath("static/index.html").read_bytes()
        extra = []
        token = request.query.get("token")
        if token and self.auth.token is not None:
            cookie = f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            extra.append((b"set-cookie", cookie.encode()))
        await _respond(send, 200, page, "text/html; charset=utf-8", extra)

    async def _static(self, name: str, send: Send) -> None:
        if name not in _STATIC:
            raise HTTPError(404, f"no static file {name!r}")
        body = resources.files("caraway.dashboard").joinpath(f"static/{name}").read_bytes()
        await _respond(send, 200, body, _STATIC[name])

    async def _stream(self, request: Request, send: Send) -> None:
        """Server-sent events: ``tasks`` (changed task dicts) and ``reset``."""
        since = _number(request.query, "since")
        seq = int(since) if since is not None else self.cluster.changes_since(1 << 62)[0]
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(request.receive, gone))
        try:
            await send({"type": "http.response.body", "body": b": hello\n\n", "more_body": True})
            while not gone.is_set():
                seq = await self._stream_once(seq, send)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(gone.wait(), self.stream_interval)
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream_once(self, seq: int, send: Send) -> int:
        latest, tasks, reset = self.cluster.changes_since(seq)
        if reset:
            payload = b"event: reset\ndata: {}\n\n"
        elif tasks:
            data = _dumps({"seq": latest, "tasks": tasks})
            payload = b"event: tasks\nid: " + str(latest).encode() + b"\ndata: " + data + b"\n\n"
        else:
            return latest
        await send({"type": "http.response.body", "body": payload, "more_body": True})
        return latest

    async def _action(self, request: Request, send: Send) -> None:
        if cross_site(request.headers) or not self.csrf.allows(request.headers.get(CSRF_HEADER)):
            raise HTTPError(
                403, "actions need the token of GET /api/session in the X-CSRF-Token header"
            )
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            raise HTTPError(415, "actions take a JSON body (Content-Type: application/json)")
        body = await request.json()
        match = _DEAD_ACTION.match(request.path)
        if match:
            try:
                run = actions.dead_letter_action(self.app, match.group(1), body)
            except actions.ActionError as exc:
                raise HTTPError(400, str(exc)) from exc
            count = await self._blocking(run)
            await _json(send, {"ok": True, "count": count, "replies": []})
            return
        try:
            call = self._action_call(request.path, body)
        except actions.ActionError as exc:
            raise HTTPError(400, str(exc)) from exc
        try:
            replies = await asyncio.to_thread(call)
        except Exception as exc:
            logger.warning("action %s failed: %s", request.path, exc)
            raise HTTPError(502, f"remote control failed: {exc}") from exc
        await _json(send, {"ok": True, "replies": replies or []})

    def _action_call(self, path: str, body: dict[str, Any]) -> Callable[[], Any]:
        control = self.app.control
        match = _TASK_ACTION.match(path)
        if match:
            task_id, verb = unquote(match.group(1)), match.group(2)
            signal = str(body.get("signal") or "SIGTERM")
            terminate = verb == "terminate"

            def revoke() -> Any:
                replies = control.revoke(
                    task_id, terminate=terminate, signal=signal, reply=True, timeout=1.0
                )
                self.cluster.revoke_sent(task_id)
                return replies

            return revoke
        match = _WORKER_ACTION.match(path)
        if not match:
            raise HTTPError(404, f"no action {path!r}")
        return actions.worker_action(control, unquote(match.group(1)), match.group(2), body)


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
