"""Print the markdown table of docs/reliability.md from the JSON lines a ledger run wrote
(``CARAWAY_LEDGER_REPORT``): ``python -m tests.chaos.ledger_table ledger.jsonl``."""

from __future__ import annotations

import json
import sys
from typing import Any

HEADER = (
    "| scenario | fleet | broker | acks | tasks | faults | lost | ran twice: interrupted "
    "| ran twice: had finished | never finished | poison dead-lettered |\n"
    "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|"
)


def row(line: dict[str, Any]) -> str:
    fleet, broker, acks, *extra = str(line["scenario"]).split("-")
    faults = ", ".join(f"{name} {count}" for name, count in sorted(line.get("faults", {}).items()))
    twice = len(line["finished_twice"])
    interrupted = line["more"] - twice
    poison = f"{line.get('dead_lettered_poison', 0)}/{line.get('poison', 0)}"
    return (
        f"| {' '.join(extra) or '-'} | {fleet} | {broker} | {acks} | {line['acknowledged']} "
        f"| {faults or 'none'} | {len(line['never'])} | {interrupted} | {twice} "
        f"| {len(line['never_finished'])} | {poison} |"
    )


def main(path: str) -> None:
    with open(path) as handle:
        lines = [json.loads(text) for text in handle if text.strip()]
    print(HEADER)
    for line in lines:
        print(row(line))


if __name__ == "__main__":
    main(sys.argv[1])
