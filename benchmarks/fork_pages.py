"""Which pages a prefork worker's processes still share: ``python -m benchmarks.fork_pages PID``.

For the worker whose supervisor is PID (and its children), reads ``/proc/<pid>/pagemap``
(as root: without it the kernel hides the frame numbers) and sorts every resident page of
their private writable mappings by which processes map the same physical frame. W5's PSS
is mostly these pages: one shared by all three counts once, one each child copied counts
three times (the supervisor keeps the original). Prints MiB per group and mapping kind,
then each process's PSS split into anonymous memory and file pages.

Example, after a drain: ``0,1,2: 20.2`` (shared by all), ``0 | 1 | 2: 7.1`` (copied by each
child), ``0 | 1,2: 1.2`` (written by the supervisor alone after the fork).
"""

from __future__ import annotations

import struct
import sys
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.procs import _descendants, _rollup

PAGE = 4096
_PRESENT = 1 << 63
_FRAME = (1 << 55) - 1


def _writable_private(pid: int) -> list[tuple[int, int, str]]:
    maps = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if "w" in parts[1] and parts[1].endswith("p"):
            maps.append((start, end, parts[5].strip() if len(parts) > 5 else ""))
    return maps


def _kind(name: str) -> str:
    if not name:
        return "anonymous"
    if name.startswith("["):
        return name
    return "library data" if ".so" in name else "other"


def frames(pid: int) -> dict[int, tuple[int, str]]:
    """Virtual page -> (physical frame, mapping kind) for ``pid``'s resident pages."""
    found: dict[int, tuple[int, str]] = {}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, name in _writable_private(pid):
            pagemap.seek(start // PAGE * 8)
            data = pagemap.read((end - start) // PAGE * 8)
            for index in range(len(data) // 8):
                (entry,) = struct.unpack_from("<Q", data, index * 8)
                if entry & _PRESENT and entry & _FRAME:
                    found[start + index * PAGE] = (entry & _FRAME, _kind(name))
    return found


def classify(pids: list[int]) -> dict[str, Counter[str]]:
    """Sharing group ("0,1,2", "0 | 1 | 2", ...; 0 is ``pids[0]``) -> pages by mapping kind."""
    per_process = [frames(pid) for pid in pids]
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for address in set().union(*per_process):
        by_frame: dict[int, list[str]] = defaultdict(list)
        kind = ""
        for index, mapped in enumerate(per_process):
            if address in mapped:
                frame, kind = mapped[address]
                by_frame[frame].append(str(index))
        group = " | ".join(sorted(",".join(members) for members in by_frame.values()))
        groups[group][kind] += 1
    return groups


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not argv[0].isdigit():
        raise SystemExit("usage: python -m benchmarks.fork_pages SUPERVISOR_PID")
    root = int(argv[0])
    pids = [root, *sorted(_descendants(root))]
    print("processes:", ", ".join(f"{i}={pid}" for i, pid in enumerate(pids)), "(0: supervisor)")
    groups = classify(pids)
    for group, kinds in sorted(groups.items(), key=lambda item: -sum(item[1].values())):
        detail = ", ".join(f"{kind} {n * PAGE / 2**20:.2f}" for kind, n in kinds.most_common())
        print(f"  {group:12s} {sum(kinds.values()) * PAGE / 2**20:7.2f} MiB  ({detail})")
    for index, pid in enumerate(pids):
        fields = _rollup(pid)
        print(
            f"  {index}: PSS {fields.get('Pss', 0) / 1024:.1f} MiB = anonymous "
            f"{fields.get('Pss_Anon', 0) / 1024:.1f} + files {fields.get('Pss_File', 0) / 1024:.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
