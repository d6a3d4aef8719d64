"""Fail on any import cycle in a package: between layers or inside one, at any depth.

Import-linter's layers contract only sees imports that cross a layer boundary the wrong
way; two modules of one layer importing each other pass it. This check reads the same
graph (grimp's: imports inside functions and under TYPE_CHECKING count, since each is a
module naming another) and reports every strongly connected set of modules, each with one
cycle through it, so a reader sees which import closes the loop.

Usage: python .ci/check_cycles.py [package ...]   (default: caraway)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

import grimp


def strongly_connected(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The sets of two or more modules that all reach each other (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return found


def one_cycle(edges: Mapping[str, Iterable[str]], members: list[str]) -> list[str]:
    """A shortest path from the first member back to itself, inside ``members``."""
    inside = set(members)
    start = members[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child not in inside:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return members


def import_edges(*packages: str) -> dict[str, set[str]]:
    graph = grimp.build_graph(*packages, cache_dir=None)
    return {
        module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules
    }


def main(argv: list[str]) -> int:
    packages = argv or ["caraway"]
    edges = import_edges(*packages)
    cycles = strongly_connected(edges)
    for members in cycles:
        path = " -> ".join(one_cycle(edges, members))
        print(f"import cycle among {len(members)} modules: {path}", file=sys.stderr)
    if not cycles:
        print(f"no import cycle in {', '.join(packages)} ({len(edges)} modules)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
