"""What the dashboard's HTTP API says about itself: the OpenAPI document and /metrics.

Pure: builds a dict and a Prometheus text exposition from Cluster snapshots. The
routes themselves live in web.py; keep the two in step (a unit test walks both).
"""

from __future__ import annotations

from typing import Any

from caraway._version import __version__
from caraway.dashboard.model import Cluster

_TASK_FILTERS = [
    ("state", "string", "PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED..."),
    ("name", "string", "substring of the task name"),
    ("worker", "string", "hostname of the node that ran it"),
    ("since", "number", "only tasks first seen at or after this UNIX time"),
    ("until", "number", "only tasks first seen at or before this UNIX time"),
    ("search", "string", "substring of the id, args, kwargs, result or exception"),
    (
        "sort",
        "string",
        "timestamp (default), received, started, succeeded, name, state, runtime or worker",
    ),
    ("order", "string", "desc (default) or asc"),
    ("offset", "integer", "skip this many (paging)"),
    ("limit", "integer", "at most this many (default 200, at most 10000)"),
]

#: (method, path, summary, request body fields) for every action; all answer ActionResult
ACTIONS: list[tuple[str, str, dict[str, str]]] = [
    ("/api/workers/{hostname}/shutdown", "Shut the node down (warm)", {}),
    ("/api/workers/{hostname}/pool/grow", "Add pool processes", {"n": "integer"}),
    ("/api/workers/{hostname}/pool/shrink", "Remove pool processes", {"n": "integer"}),
    (
        "/api/workers/{hostname}/pool/autoscale",
        "Set the autoscaler's bounds (nodes started with --autoscale)",
        {"max": "integer", "min": "integer"},
    ),
    ("/api/workers/{hostname}/queues/add", "Start consuming a queue", {"queue": "string"}),
    ("/api/workers/{hostname}/queues/cancel", "Stop consuming a queue", {"queue": "string"}),
    (
        "/api/workers/{hostname}/rate-limit",
        "Set a task's rate limit on the node",
        {"task_name": "string", "rate_limit": "string"},
    ),
    (
        "/api/workers/{hostname}/time-limit",
        "Set a task's soft and hard time limits (seconds) on the node",
        {"task_name": "string", "soft": "number", "hard": "number"},
    ),
    ("/api/tasks/{task_id}/revoke", "Revoke the task (it will not run)", {}),
    ("/api/tasks/{task_id}/terminate", "Revoke and kill the task if running", {"signal": "string"}),
    ("/api/dead-letters/replay", "Publish dead letters back to their queues", {"ids": "array"}),
    ("/api/dead-letters/discard", "Delete dead letters for good", {"ids": "array"}),
]

_SCHEMAS: dict[str, Any] = {
    "Worker": {
        "type": "object",
        "properties": {
            "hostname": {"type": "string"},
            "status": {"type": "string", "enum": ["online", "offline"]},
            "pool": {"type": "string", "nullable": True},
            "concurrency": {"type": "integer", "nullable": True},
            "processed": {"type": "integer", "description": "succeeded + failed, since 'since'"},
            "succeeded": {"type": "integer", "description": "seen since /api/status 'since'"},
            "failed": {"type": "integer"},
            "retried": {"type": "integer"},
            "processed_total": {
                "type": "integer",
                "nullable": True,
                "description": "the node's own count since it started",
            },
            "rejected": {
                "type": "integer",
                "nullable": True,
                "description": "messages the node dead-lettered undecoded since it started "
                "(null for nodes that do not say: Celery's)",
            },
            "active": {"type": "integer"},
            "loadavg": {"type": "array", "items": {"type": "number"}, "nullable": True},
            "queues": {"type": "array", "items": {"type": "string"}},
            "active_tasks": {"type": "array", "items": {"type": "object"}},
            "last_seen": {"type": "number", "nullable": True},
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "uuid": {"type": "string"},
            "name": {"type": "string", "nullable": True},
            "state": {"type": "string"},
            "args": {"type": "string", "nullable": True, "description": "repr, as in events"},
            "kwargs": {"type": "string", "nullable": True},
            "result": {"type": "string", "nullable": True},
            "exception": {"type": "string", "nullable": True},
            "traceback": {"type": "string", "nullable": True},
            "runtime": {"type": "number", "nullable": True},
            "retries": {"type": "integer"},
            "worker": {"type": "string", "nullable": True},
            "parent_id": {"type": "string", "nullable": True},
            "root_id": {"type": "string", "nullable": True},
            "children": {"type": "array", "items": {"type": "string"}},
            "timestamp": {"type": "number"},
            "times": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    },
    "TaskDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/Task"},
            {"type": "object", "properties": {"tree": {"$ref": "#/components/schemas/Node"}}},
        ]
    },
    "Node": {
        "type": "object",
        "properties": {
            "uuid": {"type": "string"},
            "name": {"type": "string", "nullable": True},
            "state": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
        },
    },
    "Queue": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "length": {"type": "integer", "nullable": True},
            "unacked": {
                "type": "integer",
                "nullable": True,
                "description": "held by consumers, not acked; null where the broker cannot count",
            },
            "consumers": {"type": "array", "items": {"type": "string"}},
        },
    },
    "TaskPage": {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "offset": {"type": "integer"},
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
        },
    },
    "Point": {
        "type": "object",
        "properties": {
            "t": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
        },
    },
    "ActionResult": {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "replies": {"type": "array"}},
    },
}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _action(summary: str, fields: dict[str, str], path: str) -> dict[str, Any]:
    parameters = [
        {"name": part.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
        for part in path.split("/")
        if part.startswith("{")
    ]
    body = {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in fields.items()},
    }
    return {
        "post": {
            "summary": summary,
            "description": "Needs the token of GET /api/session in the X-CSRF-Token "
            "header (so no other site can trigger it) and, when auth is on, credentials.",
            "parameters": parameters,
            "requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": {**_ok(_ref("ActionResult")), "401": {"description": "no credentials"}},
        }
    }


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 description served at /openapi.json."""
    filters = [
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": d}
        for name, kind, d in _TASK_FILTERS
    ]
    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {
        "/api/workers": {"get": {"summary": "Worker nodes", "responses": _ok(_list("Worker"))}},
        "/api/tasks": {
            "get": {
                "summary": "Tasks, filtered, sorted and paged, with how many match",
                "parameters": filters,
                "responses": _ok(_ref("TaskPage")),
            }
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "One task with its canvas tree",
                "parameters": [task_id],
                "responses": {**_ok(_ref("TaskDetail")), "404": {"description": "unknown id"}},
            }
        },
        "/api/workers/{hostname}": {
            "get": {
                "summary": "One node: its worker record and what remote control tells "
                "(stats, active_queues, active, reserved, scheduled, revoked, registered, conf)",
                "parameters": [
                    {
                        "name": "hostname",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "{worker, detail}"},
                    "404": {"description": "unknown"},
                },
            }
        },
        "/api/queues": {
            "get": {"summary": "Queue lengths and consumers", "responses": _ok(_list("Queue"))}
        },
        "/api/charts": {
            "get": {
                "summary": "Throughput, runtime and wait percentiles, queue depth, failures by "
                "exception type, per bucket (kept across restarts)",
                "parameters": [
                    {"name": "seconds", "in": "query", "schema": {"type": "integer"}},
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "{step, task, tasks, points, failures, queues}"}
                },
            }
        },
        "/api/dead-letters": {
            "get": {
                "summary": "The dead-letter store, oldest first: reason and raw message",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "[{id, queue, reason, task, headers, body}]"}},
            }
        },
        "/api/beat": {
            "get": {
                "summary": "Periodic tasks: entries, next and last run, leader (when beat is on)",
                "responses": {"200": {"description": "{enabled, reason, entries, leader}"}},
            }
        },
        "/api/throughput": {
            "get": {
                "summary": "Tasks succeeded and failed per second",
                "parameters": [{"name": "seconds", "in": "query", "schema": {"type": "integer"}}],
                "responses": _ok(_list("Point")),
            }
        },
        "/api/session": {
            "get": {
                "summary": "The CSRF token actions must send in X-CSRF-Token",
                "responses": {"200": {"description": "{csrf, auth}"}},
            }
        },
        "/api/status": {
            "get": {
                "summary": "Whether events are captured and the broker connected",
                "responses": {"200": {"description": "{events, connected, auth}"}},
            }
        },
        "/api/stream": {
            "get": {
                "summary": "Server-sent events: 'tasks' with changed tasks, 'reset'",
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
    }
    for path, summary, fields in ACTIONS:
        paths[path] = _action(summary, fields, path)
    return {
        "openapi": "3.0.3",
        "info": {"title": "caraway dashboard", "version": __version__},
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


#: (metric, type, help, worker dict key)
_PER_WORKER = [
    ("worker_online", "gauge", "1 when the node is online.", "status"),
    ("worker_active_tasks", "gauge", "Tasks running now.", "active"),
    ("worker_succeeded_total", "counter", "Tasks succeeded.", "succeeded"),
    ("worker_failed_total", "counter", "Tasks failed.", "failed"),
]


def metrics(cluster: Cluster) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines = [
        "# HELP caraway_events_total Events received, by type.",
        "# TYPE caraway_events_total counter",
    ]
    for kind, count in sorted(cluster.event_counts.items()):
        lines.append(f"caraway_events_total{{type={_label(kind)}}} {count}")
    lines += ["# HELP caraway_tasks Tasks in the history, by state.", "# TYPE caraway_tasks gauge"]
    for state, count in sorted(cluster.state_counts().items()):
        lines.append(f"caraway_tasks{{state={_label(state)}}} {count}")
    workers = cluster.workers()
    for name, kind, help_text, key in _PER_WORKER:
        lines += [f"# HELP caraway_{name} {help_text}", f"# TYPE caraway_{name} {kind}"]
        for worker in workers:
            value = worker["status"] == "online" if key == "status" else worker[key]
            sample = int(value or 0)
            lines.append(f"caraway_{name}{{worker={_label(worker['hostname'])}}} {sample}")
    lines += [
        "# HELP caraway_worker_rejected_total Messages the node dead-lettered undecoded.",
        "# TYPE caraway_worker_rejected_total counter",
    ]
    for worker in workers:
        if worker.get("rejected") is not None:
            sample = int(worker["rejected"])
            lines.append(
                f"caraway_worker_rejected_total{{worker={_label(worker['hostname'])}}} {sample}"
            )
    lines += ["# HELP caraway_queue_length Messages waiting.", "# TYPE caraway_queue_length gauge"]
    for queue, length in sorted(cluster.queue_lengths.items()):
        lines.append(f"caraway_queue_length{{queue={_label(queue)}}} {length}")
    lines += [
        "# HELP caraway_queue_unacked Messages held by consumers, not yet acknowledged.",
        "# TYPE caraway_queue_unacked gauge",
    ]
    for queue, held in sorted((cluster.queue_unacked or {}).items()):
        lines.append(f"caraway_queue_unacked{{queue={_label(queue)}}} {held}")
    lines += [
        "# HELP caraway_queue_consumers Nodes consuming the queue.",
        "# TYPE caraway_queue_consumers gauge",
    ]
    for queue, nodes in sorted(cluster.queue_consumers.items()):
        lines.append(f"caraway_queue_consumers{{queue={_label(queue)}}} {len(nodes)}")
    lines += [
        "# HELP caraway_task_runtime_seconds Runtime of finished tasks in the history.",
        "# TYPE caraway_task_runtime_seconds summary",
    ]
    for task, (count, total) in sorted(cluster.runtimes().items()):
        lines.append(f"caraway_task_runtime_seconds_sum{{task={_label(task)}}} {total:.6f}")
        lines.append(f"caraway_task_runtime_seconds_count{{task={_label(task)}}} {count}")
    return "\n".join(lines) + "\n"
