"""The worker's side: a caraway app and its tasks.

Run a worker with ``caraway -A tasks worker -l info`` in this directory. The broker is
CARAWAY_BROKER_URL (e.g. redis://localhost:6379/0), or the embedded SQLite file.
"""

from caraway import Caraway

app = Caraway("tasks")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def word_count(text: str) -> int:
    return len(text.split())
