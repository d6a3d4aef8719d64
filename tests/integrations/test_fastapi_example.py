"""examples/fastapi_app, as docs/fastapi.md runs it: the FastAPI service (through an ASGI
test client, lifespan included) sending to a worker for the example's own app."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caraway.testing import start_worker
from tests.helpers import ROOT, wait_until

EXAMPLE = ROOT / "examples" / "fastapi_app"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path}/broker.sqlite3"
    monkeypatch.setenv("CARAWAY_BROKER_URL", url)
    monkeypatch.setenv("CARAWAY_RESULT_BACKEND", url)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("api", "tasks"):
        sys.modules.pop(name, None)
    try:
        api: Any = importlib.import_module("api")
        with start_worker(sys.modules["tasks"].app), TestClient(api.api) as test_client:
            yield test_client
    finally:
        for name in ("api", "tasks"):
            sys.modules.pop(name, None)


def test_the_service_sends_tasks_and_reports_their_results(client: TestClient) -> None:
    task_id = client.post("/add", params={"x": 2, "y": 3}).json()["task_id"]

    def state() -> Any:
        found = client.get(f"/tasks/{task_id}").json()
        return found if found["state"] == "SUCCESS" else None

    assert wait_until(state, timeout=10)["result"] == 5
    assert client.post("/count", json={"text": "to be or not"}).json() == {"words": 4}


def test_a_task_that_outlasts_the_wait_is_a_504(client: TestClient) -> None:
    reply = client.post("/count", params={"wait": 0}, json={"text": "x"})
    assert reply.status_code in (200, 504)  # 0 s: usually not done yet, never a 500


def test_the_guide_shows_the_example_files_as_they_are() -> None:
    guide = (ROOT / "docs" / "fastapi.md").read_text()
    for name in ("tasks.py", "api.py"):
        assert f"```python\n{(EXAMPLE / name).read_text()}```" in guide, name
