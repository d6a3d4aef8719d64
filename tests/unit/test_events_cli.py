"""``caraway events``: the frame it draws, camera loading, and --dump on the memory broker."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from click.testing import CliRunner

from caraway.app import Caraway
from caraway.cli.context import CliState
from caraway.cli.events import events, load_camera, render
from caraway.events.dispatcher import EventDispatcher
from caraway.events.state import State
from caraway.exceptions import ImproperlyConfigured

SHOTS: list[int] = []


def camera(state: State) -> None:
    SHOTS.append(state.event_count)


def test_frame_shows_workers_with_status_and_recent_tasks() -> None:
    state = State()
    now = time.time()
    state.event(
        {
            "type": "worker-heartbeat",
            "hostname": "w1@h",
            "freq": 2.0,
            "active": 1,
            "processed": 9,
            "loadavg": [0.5, 0.25, 0.0],
            "local_received": now,
            "timestamp": now,
        }
    )
    state.event({"type": "task-received", "uuid": "u-1", "name": "proj.add", "hostname": "w1@h"})
    state.event({"type": "task-succeeded", "uuid": "u-1", "runtime": 0.25, "hostname": "w1@h"})
    frame = render(state, broker="redis://:secret@localhost:6379/0", now=now)
    assert "secret" not in frame
    assert "workers: 1 online / 1 known" in frame
    worker_line = next(line for line in frame.splitlines() if line.startswith("w1@h"))
    assert "online" in worker_line and "0.50 0.25 0.00" in worker_line
    task_line = next(line for line in frame.splitlines() if line.startswith("u-1"))
    assert "proj.add" in task_line and "SUCCESS" in task_line and "0.250s" in task_line


def test_camera_is_loaded_by_either_spelling() -> None:
    assert load_camera("tests.unit.test_events_cli:camera") is camera
    assert load_camera("tests.unit.test_events_cli.camera") is camera
    with pytest.raises(ImproperlyConfigured, match="cannot load camera"):
        load_camera("tests.unit.nope:camera")


def test_dump_json_prints_each_event_as_a_json_line() -> None:
    app = Caraway("evcli", broker=f"memory://cli-{uuid.uuid4().hex}")
    dispatcher = EventDispatcher(app, hostname="w9@h")
    stop = threading.Event()

    def beat() -> None:
        # the command subscribes at some point after it starts; keep sending until then
        while not stop.wait(0.1):
            dispatcher.send("worker-heartbeat", freq=2.0, processed=3)

    sender = threading.Thread(target=beat)
    sender.start()
    try:
        result = CliRunner().invoke(
            events, ["--dump", "--json", "--timeout", "1.5"], obj=CliState(preset=app)
        )
    finally:
        stop.set()
        sender.join(5)
        dispatcher.close()
        app.close()
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines and all(e["type"] == "worker-heartbeat" for e in lines)
    assert lines[0]["hostname"] == "w9@h" and lines[0]["processed"] == 3


def test_view_calls_the_camera_each_tick() -> None:
    app = Caraway("evcli", broker=f"memory://cli-{uuid.uuid4().hex}")
    SHOTS.clear()
    try:
        result = CliRunner().invoke(
            events,
            ["--camera", "tests.unit.test_events_cli:camera", "-F", "0.2", "--timeout", "0.9"],
            obj=CliState(preset=app),
        )
    finally:
        app.close()
    assert result.exit_code == 0, result.output
    assert len(SHOTS) >= 2


def test_view_prints_frames_without_ansi_when_not_a_terminal() -> None:
    app = Caraway("evcli", broker=f"memory://cli-{uuid.uuid4().hex}")
    try:
        result = CliRunner().invoke(
            events, ["-F", "0.2", "--timeout", "0.5"], obj=CliState(preset=app)
        )
    finally:
        app.close()
    assert result.exit_code == 0, result.output
    assert "caraway events  memory://" in result.output and "\x1b[2J" not in result.output
