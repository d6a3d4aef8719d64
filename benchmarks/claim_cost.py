"""Redis's own time per claim and per ack script, as a drain runs them, from its SLOWLOG.

    .venv/bin/python -m benchmarks.claim_cost [--n 8000] [--redis-db 6] [--variant FILE.lua]

Queues N ``add`` tasks with caraway, then claims them four at a time (a prefork child's
batch at the default prefetch) and acks each batch, as a draining worker does, with
Redis's SLOWLOG logging every command: the median duration of each script is Redis's
CPU for it, without the client's round trip. ``--variant`` runs a changed claim script
(same KEYS and ARGV) in alternation with the shipped one, so both see the same machine:
how a scratch variant that leaves a part out says what that part costs. The SLOWLOG
settings are restored afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from pathlib import Path

import redis

from caraway import Caraway
from caraway.brokers.redis.transport import RedisTransport

QUEUE = "claim-cost"
OWNER = "claim-cost@bench/1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--redis-db", type=int, default=6)
    parser.add_argument("--variant", type=Path, help="a claim script to run beside the shipped one")
    args = parser.parse_args()
    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    client = redis.Redis.from_url(url)
    if client.dbsize():
        sys.exit(f"db {args.redis_db} is not empty; pick another with --redis-db")
    app = Caraway("claim_cost", broker=url, backend=url)
    app.conf.task_default_queue = QUEUE
    add = app.task(name="claim_cost.add")(lambda x, y: x + y)
    with app.publishing_batch():
        for i in range(args.n):
            add.delay(i, i)
    transport = RedisTransport(url)
    names = {transport._claim: "claim (shipped)", transport._ack: "ack"}
    variant = transport._held.script(args.variant.read_text()) if args.variant else None
    if variant is not None:
        names[variant] = f"claim ({args.variant.name})"
    _, keys, _, _ = transport._prepare_claim([], [QUEUE])
    ack_keys = [
        *transport.keys.bookkeeping(),
        transport.keys.deliveries,
        transport.keys.owner(OWNER),
    ]
    saved = client.config_get("slowlog-*")
    try:
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 4 * args.n)
        client.slowlog_reset()
        batch = 0
        while True:
            claim = list(transport._claim_command(keys, 4, OWNER, uuid.uuid4().hex, False))
            if variant is not None and batch % 2:
                claim[1] = variant
            batch += 1
            reply = transport._held.run([tuple(claim)])[0]
            tags = [tag.decode() for tag in reply[5::4]]
            if not tags:
                break
            transport._held.run([transport._held.evalsha(transport._ack, ack_keys, tags)])
        log = client.slowlog_get(4 * args.n)
    finally:
        for name, value in saved.items():
            client.config_set(name, value)
        client.flushdb()
        transport.close()
        client.close()
    took: dict[str, list[int]] = {}
    for entry in log:
        command = entry["command"].split()
        if command[:1] == [b"EVALSHA"] and command[1].decode() in names:
            took.setdefault(names[command[1].decode()], []).append(int(entry["duration"]))
    for name, durations in took.items():
        print(
            f"{name}: {len(durations)} calls, median {statistics.median(durations):.0f} us, "
            f"mean {statistics.mean(durations):.1f} us"
        )


if __name__ == "__main__":
    main()
