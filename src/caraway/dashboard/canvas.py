"""A task's whole canvas as a tree: chains as paths, groups and chords as nodes of their own.

Events link a task to its ``parent_id`` and ``root_id``; caraway's workers also say which
``group`` a task belongs to. A chord's header tasks each start a canvas of their own (their
root is themselves when the chord was called from a client), and its callback names the
header's group: so the canvas is the closure over root, parent and group links, and a group
is drawn as one node holding its members, with its progress (n of m done). A Celery
fleet sends no group, so there the tree is what parent links say. Pure: no I/O, no locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caraway import states

#: how many tasks one canvas may gather (a runaway closure stops here)
MAX_MEMBERS = 2000
MAX_DEPTH = 64


@dataclass
class Member:
    """What the tree needs of one task."""

    uuid: str
    name: str | None
    state: str
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    group_index: int | None = None


@dataclass
class Index:
    """Lookups over the history, built once per request: by root, by parent, by group."""

    members: Mapping[str, Member]
    by_root: dict[str, list[str]] = field(default_factory=dict)
    by_parent: dict[str, list[str]] = field(default_factory=dict)
    by_group: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for uuid, member in self.members.items():
            if member.root_id:
                self.by_root.setdefault(member.root_id, []).append(uuid)
            if member.parent_id and member.parent_id != uuid:
                self.by_parent.setdefault(member.parent_id, []).append(uuid)
            if member.group:
                self.by_group.setdefault(member.group, []).append(uuid)

    def neighbours(self, uuid: str) -> list[str]:
        member = self.members[uuid]
        found = [*self.by_root.get(uuid, ()), *self.by_parent.get(uuid, ())]
        for link in (member.root_id, member.parent_id):
            if link and link in self.members:
                found.append(link)
        if member.group:
            found.extend(self.by_group.get(member.group, ()))
        return found


def gather(index: Index, start: str) -> set[str]:
    """Every task linked to ``start`` by root, parent or group, at most MAX_MEMBERS."""
    seen = {start}
    todo = [start]
    while todo and len(seen) < MAX_MEMBERS:
        for uuid in index.neighbours(todo.pop()):
            if uuid not in seen:
                seen.add(uuid)
                todo.append(uuid)
    return seen


def tree(members: Mapping[str, Member], start: str) -> dict[str, Any] | None:
    """The canvas ``start`` belongs to, as nested nodes; None when ``start`` is unknown.

    A node is ``{"kind": "task", uuid, name, state, children}`` or ``{"kind": "group",
    "group", "done", "total", "children"}`` (a chord's header); a canvas with several
    roots hangs under one ``{"kind": "canvas"}`` node.
    """
    if start not in members:
        return None
    index = Index(members)
    canvas = gather(index, start)
    return _Builder(index, canvas).build()


class _Builder:
    def __init__(self, index: Index, canvas: set[str]) -> None:
        self.index = index
        self.canvas = canvas
        self.members = index.members
        self.drawn: set[str] = set()

    def build(self) -> dict[str, Any]:
        roots = sorted(
            (uuid for uuid in self.canvas if not self._parent_in_canvas(uuid)),
            key=self._order,
        )
        nodes = self._siblings(roots, 0)
        if len(nodes) == 1:
            return nodes[0]
        return {"kind": "canvas", "children": nodes}

    def _parent_in_canvas(self, uuid: str) -> bool:
        parent = self.members[uuid].parent_id
        return bool(parent) and parent != uuid and parent in self.canvas

    def _order(self, uuid: str) -> tuple[int, str]:
        member = self.members[uuid]
        return (member.group_index if member.group_index is not None else 1 << 30, uuid)

    def _siblings(self, uuids: list[str], depth: int) -> list[dict[str, Any]]:
        """Draw ``uuids``: members of one group that are header tasks become a group node."""
        nodes: list[dict[str, Any]] = []
        groups: dict[str, list[str]] = {}
        for uuid in uuids:
            group = self.members[uuid].group
            if group and self._is_header(uuid):
                if group not in groups:
                    groups[group] = []
                    nodes.append({"kind": "group", "group": group})
                groups[group].append(uuid)
            else:
                nodes.append({"kind": "task", "uuid": uuid})
        drawn: list[dict[str, Any]] = []
        for node in nodes:
            if node["kind"] == "group":
                drawn.extend(self._group(node["group"], depth))
            elif node["uuid"] not in self.drawn:
                drawn.append(self._task(node["uuid"], depth))
        return drawn

    def _is_header(self, uuid: str) -> bool:
        # a chord's callback carries the header's group too, but no index and a parent
        # inside that group; a group member has an index (or no parent in the group)
        member = self.members[uuid]
        if member.group_index is not None:
            return True
        parent = self.members.get(member.parent_id or "")
        return parent is None or parent.group != member.group

    def _group(self, group: str, depth: int) -> list[dict[str, Any]]:
        uuids = [u for u in self.index.by_group.get(group, ()) if u in self.canvas]
        headers = sorted((u for u in uuids if self._is_header(u)), key=self._order)
        callbacks = [u for u in uuids if not self._is_header(u)]
        done = sum(1 for u in headers if self.members[u].state in states.READY_STATES)
        failed = sum(1 for u in headers if self.members[u].state in states.PROPAGATE_STATES)
        node = {
            "kind": "group",
            "group": group,
            "done": done,
            "failed": failed,
            "total": len(headers),
            "chord": bool(callbacks),
            "children": [self._task(u, depth + 1, skip=set(callbacks)) for u in headers],
        }
        # the callback hangs under the group it joins, not under whichever header was last
        return [node, *(self._task(u, depth) for u in callbacks if u not in self.drawn)]

    def _task(self, uuid: str, depth: int, skip: set[str] | None = None) -> dict[str, Any]:
        self.drawn.add(uuid)
        member = self.members[uuid]
        kids = [
            kid
            for kid in self.index.by_parent.get(uuid, ())
            if kid in self.canvas and kid not in self.drawn and kid not in (skip or ())
        ]
        children = self._siblings(sorted(kids, key=self._order), depth + 1)
        return {
            "kind": "task",
            "uuid": uuid,
            "name": member.name,
            "state": member.state,
            "children": children if depth < MAX_DEPTH else [],
        }
