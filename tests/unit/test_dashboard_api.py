"""The dashboard's ASGI app: JSON API, OpenAPI, /metrics, the live stream, actions, auth.

Driven in-process by a small ASGI client (no server, no broker); remote control is a
recording fake.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from caraway.dashboard.auth import Auth
from caraway.dashboard.guard import Csrf, HostAllowlist
from caraway.dashboard.model import Cluster
from caraway.dashboard.web import Dashboard


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            self.calls.append((name, args, kwargs))
            return [{"w1@h": {"ok": name}}]

        return record


CSRF = Csrf("test-csrf-token")


@dataclass
class Harness:
    cluster: Cluster = field(default_factory=Cluster)
    control: FakeControl = field(default_factory=FakeControl)
    auth: Auth = field(default_factory=Auth)
    hosts: HostAllowlist = field(default_factory=HostAllowlist)

    @property
    def app(self) -> Dashboard:
        return Dashboard(
            SimpleNamespace(control=self.control, admin=lambda: FakeAdmin([])),
            self.cluster,
            auth=self.auth,
            hosts=self.hosts,
            csrf=CSRF,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Response:
        sent = {"host": "127.0.0.1:5555", **(headers or {})}
        return asyncio.run(_call(self.app, method, path, query, sent, body))

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def act(self, path: str, body: Any = None, **headers: str) -> Response:
        sent = {"x-csrf-token": CSRF.token, "content-type": "application/json", **headers}
        return self.request("POST", path, headers=sent, body=body or {})


async def _call(
    app: Dashboard, method: str, path: str, query: str, headers: dict[str, str], body: Any
) -> Response:
    raw = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[MutableMapping[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return Response(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in sent[1:]),
    )


def event(kind: str, uuid: str, **fields: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "hostname": "w1@h", "timestamp": 1.0, **fields}


@pytest.fixture
def harness() -> Harness:
    h = Harness()
    h.cluster.event({"type": "worker-online", "hostname": "w1@h", "freq": 2.0, "timestamp": 1.0})
    h.cluster.event(event("received", "t-ok", name="proj.add", args="(2, 2)", root_id="t-ok"))
    h.cluster.event(event("succeeded", "t-ok", result="4", runtime=0.01))
    h.cluster.event(event("received", "t-bad", name="proj.boom", args="('kaboom',)"))
    h.cluster.event(event("failed", "t-bad", exception="ValueError('kaboom')", traceback="Tb..."))
    h.cluster.set_queue_lengths({"celery": 3})
    h.cluster.set_worker_info("w1@h", {"rejected": 2}, freq=2.0)
    return h


def test_workers_endpoint_lists_the_online_worker_with_counts(harness: Harness) -> None:
    [worker] = harness.get("/api/workers").json()
    assert (worker["hostname"], worker["status"]) == ("w1@h", "online")
    assert (worker["succeeded"], worker["failed"]) == (1, 1)


def test_tasks_endpoint_filters_by_query_string(harness: Harness) -> None:
    assert [t["uuid"] for t in harness.get("/api/tasks").json()["tasks"]] == ["t-bad", "t-ok"]
    failed = harness.get("/api/tasks", query="state=FAILURE").json()["tasks"]
    assert [t["uuid"] for t in failed] == ["t-bad"]
    found = harness.get("/api/tasks", query="search=2%2C+2").json()["tasks"]
    assert [t["uuid"] for t in found] == ["t-ok"]


def test_tasks_are_sorted_paged_and_counted(harness: Harness) -> None:
    for index in range(5):
        harness.cluster.event(event("received", f"t-{index}", name="proj.n", timestamp=10 + index))
        harness.cluster.event(event("succeeded", f"t-{index}", runtime=index / 10, timestamp=20))
    page = harness.get("/api/tasks", query="name=proj.n&sort=runtime&order=asc&limit=2&offset=1")
    body = page.json()
    assert body["total"] == 5 and body["offset"] == 1
    assert [t["uuid"] for t in body["tasks"]] == ["t-1", "t-2"]
    by_name = harness.get("/api/tasks", query="sort=name&order=desc").json()["tasks"]
    assert [t["name"] for t in by_name][-2:] == ["proj.add", "proj.boom"][::-1]
    assert harness.get("/api/tasks", query="search=kaboom").json()["total"] == 1  # exception
    assert harness.get("/api/tasks", query="sort=args").status == 400
    assert harness.get("/api/tasks", query="limit=nan").status == 400


def test_charts_endpoint_gives_rates_percentiles_and_failure_types(harness: Harness) -> None:
    charts = harness.get("/api/charts", query="seconds=86400").json()
    assert charts["tasks"] == ["proj.add", "proj.boom"]
    assert charts["failures"] == {"ValueError": 1}
    assert sum(point["count"] for point in charts["points"]) == 2
    one = harness.get("/api/charts", query="seconds=86400&task=proj.add").json()
    assert one["failures"] == {} and one["points"][-1]["runtime"]["p50"] == 0.01


class FakeAdmin:
    def __init__(self, letters: list[Any]) -> None:
        self.letters = {str(letter.id): letter for letter in letters}
        self.closed = 0

    def dead_letters(self, *, limit: int = 100) -> list[Any]:
        return list(self.letters.values())[:limit]

    def requeue_dead_letters(self, ids: list[str]) -> int:
        return sum(1 for i in ids if self.letters.pop(i, None) is not None)

    purge_dead_letters = requeue_dead_letters

    def close(self) -> None:
        self.closed += 1


def test_dead_letters_are_listed_replayed_and_discarded(harness: Harness) -> None:
    from caraway.brokers.contracts import DeadLetter
    from caraway.protocol.message import Message

    message = Message(body=b"[[1], {}, {}]", headers={"id": "t-x", "task": "proj.add"})
    admin = FakeAdmin([DeadLetter(i, "celery", "bad header", message, 5.0) for i in (1, 2, 3)])
    app = SimpleNamespace(control=harness.control, admin=lambda: admin)
    dashboard = Dashboard(app, harness.cluster, csrf=CSRF)

    def call(method: str, path: str, body: Any = None) -> Response:
        headers = {"host": "localhost", "x-csrf-token": CSRF.token}
        headers["content-type"] = "application/json"
        return asyncio.run(_call(dashboard, method, path, "", headers, body))

    [first, *_] = call("GET", "/api/dead-letters").json()
    assert (first["id"], first["reason"], first["task"], first["body"]) == (
        "1",
        "bad header",
        "proj.add",
        "[[1], {}, {}]",
    )
    assert call("POST", "/api/dead-letters/replay", {"ids": ["1"]}).json()["count"] == 1
    assert call("POST", "/api/dead-letters/discard", {"ids": ["2", "3", "9"]}).json()["count"] == 2
    assert call("POST", "/api/dead-letters/discard", {"ids": []}).status == 400
    assert call("POST", "/api/dead-letters/discard", {}).status == 400
    assert admin.letters == {} and admin.closed == 3


def test_beat_page_says_why_it_has_nothing_rather_than_inventing_entries(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caraway.dashboard import actions

    # a caraway without beat
    monkeypatch.setattr(actions, "BEAT_STATUS_MODULE", "caraway.no_such_beat.status")
    beat = harness.get("/api/beat").json()
    assert beat["enabled"] is False and beat["entries"] == []
    assert "not enabled" in beat["reason"]
    # a beat whose status cannot be read (here: an app that is not one)
    monkeypatch.setattr(actions, "BEAT_STATUS_MODULE", "caraway.beat.status")
    beat = harness.get("/api/beat").json()
    assert beat["enabled"] is False and "could not be read" in beat["reason"]


def test_beat_page_reads_beats_own_status(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shape of caraway.beat.status's answer, faked here (the browser suite runs the
    real one against a worker with -B)."""
    import sys
    import types

    from caraway.dashboard import actions

    status: dict[str, Any] = {
        "namespace": "proj",
        "timezone": "UTC",
        "leader": {"node": "beat@h", "holder": "x", "since": 5.0, "renewed": 6.0},
        "entries": [{"name": "tick", "task": "proj.add", "schedule": "<freq: 10s>",
                     "last_run": "2026-01-01T00:00:00+00:00", "next_run": None,
                     "total_run_count": 3}],
    }  # fmt: skip
    module = types.ModuleType("fake_beat_status")
    module.beat_status = lambda app: SimpleNamespace(as_dict=lambda: status)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_beat_status", module)
    monkeypatch.setattr(actions, "BEAT_STATUS_MODULE", "fake_beat_status")
    beat = harness.get("/api/beat").json()
    assert beat["enabled"] is True and beat["leader"]["node"] == "beat@h"
    assert [entry["name"] for entry in beat["entries"]] == ["tick"]
    status["leader"] = None
    beat = harness.get("/api/beat").json()
    assert beat["enabled"] is False and "no beat leads" in beat["reason"]
    assert beat["entries"][0]["total_run_count"] == 3, "entries still shown without a leader"


def test_worker_page_asks_the_node_and_404s_for_strangers(harness: Harness) -> None:
    body = harness.get("/api/workers/w1@h").json()
    assert body["worker"]["hostname"] == "w1@h"
    assert harness.get("/api/workers/nobody@x").status == 404


def test_time_limit_and_autoscale_actions_reach_remote_control(harness: Harness) -> None:
    assert harness.act("/api/workers/w1@h/time-limit", {"task_name": "a", "hard": 5}).status == 200
    assert harness.act("/api/workers/w1@h/pool/autoscale", {"max": 4, "min": 1}).status == 200
    assert harness.act("/api/workers/w1@h/time-limit", {"task_name": "a", "soft": -1}).status == 400
    assert harness.act("/api/workers/w1@h/pool/autoscale", {"max": 2, "min": 3}).status == 400
    names = [call[0] for call in harness.control.calls]
    assert names == ["time_limit", "broadcast"]
    assert harness.control.calls[1][1] == ("autoscale",)


def test_bad_filter_value_is_a_400_naming_the_field(harness: Harness) -> None:
    response = harness.get("/api/tasks", query="since=yesterday")
    assert response.status == 400
    assert "since" in response.json()["error"]


def test_task_by_id_has_traceback_and_unknown_id_is_404(harness: Harness) -> None:
    task = harness.get("/api/tasks/t-bad").json()
    assert (task["state"], task["traceback"]) == ("FAILURE", "Tb...")
    assert harness.get("/api/tasks/nope").status == 404


def test_queues_and_throughput_endpoints(harness: Harness) -> None:
    harness.cluster.set_queue_unacked({"celery": 2})
    [queue] = harness.get("/api/queues").json()
    assert queue == {"name": "celery", "length": 3, "unacked": 2, "consumers": []}
    assert 'caraway_queue_unacked{queue="celery"} 2' in harness.get("/metrics").body.decode()
    points = harness.get("/api/throughput", query="seconds=5").json()
    assert len(points) == 5
    assert sum(p["succeeded"] for p in points) == 1
    assert sum(p["failed"] for p in points) == 1


def test_openapi_describes_every_route_the_app_serves(harness: Harness) -> None:
    doc = harness.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/workers", "/api/tasks", "/api/tasks/{task_id}", "/api/queues", "/metrics"):
        assert path in doc["paths"]
    for path, item in doc["paths"].items():
        concrete = path.replace("{hostname}", "w1@h").replace("{task_id}", "t-ok")
        if "post" in item:
            body = {"n": 1, "queue": "q", "task_name": "t", "max": 2, "ids": ["1"]}
            assert harness.act(concrete, body).status == 200, path
        elif path != "/api/stream":
            assert harness.get(concrete).status == 200, path


def test_metrics_are_prometheus_text(harness: Harness) -> None:
    response = harness.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    assert 'caraway_worker_online{worker="w1@h"} 1' in text
    assert 'caraway_tasks{state="FAILURE"} 1' in text
    assert 'caraway_queue_length{queue="celery"} 3' in text
    assert 'caraway_events_total{type="task-succeeded"} 1' in text
    assert 'caraway_task_runtime_seconds_count{task="proj.add"} 1' in text
    assert 'caraway_worker_rejected_total{worker="w1@h"} 2' in text


def test_page_and_static_assets_are_served(harness: Harness) -> None:
    page = harness.get("/")
    assert page.status == 200
    assert b"/static/app.js" in page.body
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert harness.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert harness.get("/static/../web.py").status == 404


def test_revoke_and_terminate_call_remote_control(harness: Harness) -> None:
    assert harness.act("/api/tasks/t-ok/revoke").json()["ok"] is True
    assert harness.act("/api/tasks/t-ok/terminate", {"signal": "SIGKILL"}).status == 200
    [(name, args, kwargs), (_, _, terminate)] = harness.control.calls
    assert (name, args, kwargs["terminate"]) == ("revoke", ("t-ok",), False)
    assert (terminate["terminate"], terminate["signal"]) == (True, "SIGKILL")


def test_worker_actions_are_sent_to_that_worker_only(harness: Harness) -> None:
    harness.act("/api/workers/w1@h/pool/grow", {"n": 2})
    harness.act("/api/workers/w1@h/queues/add", {"queue": "hipri"})
    harness.act("/api/workers/w1@h/rate-limit", {"task_name": "proj.add", "rate_limit": "5/s"})
    harness.act("/api/workers/w1@h/shutdown")
    calls = [(name, args) for name, args, _ in harness.control.calls]
    assert calls == [
        ("pool_grow", (2,)),
        ("add_consumer", ("hipri",)),
        ("rate_limit", ("proj.add", "5/s")),
        ("shutdown", ()),
    ]
    assert all(kw["destination"] == ["w1@h"] for _, _, kw in harness.control.calls)


def test_action_with_missing_or_bad_arguments_is_a_400(harness: Harness) -> None:
    assert harness.act("/api/workers/w1@h/queues/add", {}).status == 400
    assert harness.act("/api/workers/w1@h/pool/shrink", {"n": 0}).status == 400
    assert harness.control.calls == []


def test_action_without_the_csrf_token_is_refused(harness: Harness) -> None:
    # what a form on another site could send: no token, no JSON content type
    response = harness.request(
        "POST", "/api/tasks/t-ok/revoke", headers={"content-type": "text/plain"}, body={}
    )
    assert response.status == 403
    wrong = {"x-csrf-token": "guessed", "content-type": "application/json"}
    assert harness.request("POST", "/api/tasks/t-ok/revoke", headers=wrong, body={}).status == 403
    other_site = {"sec-fetch-site": "cross-site"}
    assert harness.act("/api/tasks/t-ok/revoke", {}, **other_site).status == 403
    response = harness.request(
        "POST",
        "/api/tasks/t-ok/revoke",
        headers={"x-csrf-token": CSRF.token, "content-type": "text/plain"},
        body={},
    )
    assert response.status == 415
    assert harness.control.calls == []


def test_session_hands_out_the_csrf_token(harness: Harness) -> None:
    assert harness.get("/api/session").json() == {"csrf": CSRF.token, "auth": False}


@pytest.mark.parametrize(
    "host", ["rebound.test", "rebound.test:5555", "127.0.0.2.nip.io", "", "[::2]:80"]
)
def test_a_host_not_on_the_allowlist_is_refused(harness: Harness, host: str) -> None:
    response = harness.get("/api/workers", headers={"host": host})
    assert response.status == 421
    assert "not served here" in response.json()["error"]


@pytest.mark.parametrize("host", ["localhost:5555", "127.0.0.1", "[::1]:5555", "LOCALHOST"])
def test_loopback_host_names_are_served_by_default(harness: Harness, host: str) -> None:
    assert harness.get("/api/workers", headers={"host": host}).status == 200


def test_the_allowlist_takes_the_bound_address_and_extra_names() -> None:
    hosts = HostAllowlist.build("10.1.2.3", ["dash.example.com", " "])
    assert hosts.allows("10.1.2.3:5555") and hosts.allows("dash.example.com")
    assert hosts.allows("localhost") and not hosts.allows("evil.example.com")
    assert not HostAllowlist.build("0.0.0.0").allows("0.0.0.0")
    assert HostAllowlist.build("0.0.0.0", ["*"]).allows("anything")


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("path", ["/", "/api/workers", "/api/tasks/t-ok", "/metrics"])
def test_basic_auth_refuses_reads_without_credentials(harness: Harness, path: str) -> None:
    harness.auth = Auth(basic=("admin", "s3cret"))
    response = harness.get(path)
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert harness.get(path, headers=basic("admin", "wrong")).status == 401
    assert harness.get(path, headers=basic("admin", "s3cret")).status == 200


def test_basic_auth_refuses_actions_without_credentials(harness: Harness) -> None:
    harness.auth = Auth(basic=("admin", "s3cret"))
    assert harness.act("/api/tasks/t-ok/revoke").status == 401
    assert harness.act("/api/workers/w1@h/shutdown").status == 401
    assert harness.control.calls == []
    assert harness.act("/api/tasks/t-ok/revoke", **basic("admin", "s3cret")).status == 200


def test_token_auth_accepts_bearer_header_and_cookie_and_sets_the_cookie(harness: Harness) -> None:
    harness.auth = Auth(token="tok-1")
    assert harness.get("/api/tasks").status == 401
    assert harness.get("/api/tasks", query="token=tok-1").status == 401  # page only
    assert harness.get("/api/tasks", headers={"authorization": "Bearer tok-1"}).status == 200
    assert harness.get("/api/tasks", headers={"cookie": "caraway_token=tok-1"}).status == 200
    assert harness.get("/api/tasks", headers={"cookie": "caraway_token=tok-2"}).status == 401
    page = harness.get("/", query="token=tok-1")
    assert page.status == 200
    assert "caraway_token=tok-1" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"]
    assert harness.act("/api/tasks/t-ok/revoke").status == 401
    assert harness.control.calls == []


def test_auth_parse_rejects_both_kinds_and_malformed_basic() -> None:
    with pytest.raises(ValueError, match="not both"):
        Auth.parse("a:b", "t")
    with pytest.raises(ValueError, match="user:password"):
        Auth.parse("nopassword", None)
    assert Auth.parse(None, None).enabled is False
    assert Auth.parse("a:b:c", None).basic == ("a", "b:c")


def test_stream_sends_changed_tasks_as_server_sent_events(harness: Harness) -> None:
    async def scenario() -> bytes:
        app = Dashboard(SimpleNamespace(control=None), harness.cluster, stream_interval=0.01)
        start = harness.cluster.changes_since(0)[0]
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/stream",
            "query_string": b"",
            "headers": [(b"host", b"localhost")],
        }
        chunks: list[bytes] = []
        disconnect = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            chunks.append(message.get("body", b""))
            if b"event: tasks" in message.get("body", b""):
                disconnect.set()

        serving = asyncio.create_task(app(scope, receive, send))
        await asyncio.sleep(0.05)
        assert harness.cluster.changes_since(0)[0] == start
        harness.cluster.event(event("received", "t-new", name="proj.mul"))
        await asyncio.wait_for(serving, 5)
        return b"".join(chunks)

    body = asyncio.run(scenario())
    frame = body.split(b"event: tasks\n", 1)[1]
    data = json.loads(frame.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert [t["uuid"] for t in data["tasks"]] == ["t-new"]
