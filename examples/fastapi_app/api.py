"""The web side: a FastAPI service that sends tasks without blocking its event loop.

Run it with ``uvicorn api:api`` in this directory (docs/fastapi.md). ``await
add.adelay(...)`` hands the broker round trip to the app's sender thread, so the loop
serves other requests meanwhile; ``await result.aget(...)`` waits the same way.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from tasks import add, word_count
from tasks import app as caraway_app

from caraway.exceptions import TimeoutError as TaskTimeout


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    caraway_app.close()  # the sender thread and this process's broker connections


api = FastAPI(lifespan=lifespan)


class Text(BaseModel):
    text: str


@api.post("/add")
async def start_add(x: int, y: int) -> dict[str, str]:
    """Send the task and answer at once with its id."""
    result = await add.adelay(x, y)
    return {"task_id": result.id}


@api.post("/count")
async def count_words(body: Text, wait: float = 10.0) -> dict[str, int]:
    """Send the task and wait for its result, up to ``wait`` seconds."""
    result = await word_count.adelay(body.text)
    try:
        return {"words": await result.aget(timeout=wait)}
    except TaskTimeout:
        raise HTTPException(504, f"task {result.id} is still running") from None


@api.get("/tasks/{task_id}")
async def task_state(task_id: str) -> dict[str, object]:
    """A task's state and, once it succeeded, its result."""
    result = caraway_app.AsyncResult(task_id)
    # reading the result store is a (short) blocking call: off the loop too
    state = await asyncio.to_thread(lambda: result.state)
    value = result.result if state == "SUCCESS" else None
    return {"task_id": task_id, "state": state, "result": value}
