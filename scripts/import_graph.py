"""The import structure of phi_hig, read from the source with `ast` (nothing is imported or run).

    python scripts/import_graph.py                 # rooms, floors, arrows, circles, upward arrows; then the floors
    python scripts/import_graph.py --dot graph.dot # also a Graphviz file of the rooms and arrows
    python scripts/import_graph.py --root OTHER/phi_hig

A *room* is a top-level module of the package or one of its subpackages (all its modules together); an *arrow*
is "room A imports something of room B" (any import statement, also inside a function); a *circle* is a set of
rooms that import each other round; the *floor* of a room is the length of the longest chain of arrows below it
(floor 0 imports nothing of the package); an *upward arrow* points from a floor to a higher one, which only a
circle allows. The layering rule of the house (`LAYERS`, `allowed`) is checked by tests/test_import_structure.py.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Dict, Iterator, List, Set, Tuple

PACKAGE = 'phi_hig'
BASE = {'errors', 'checks', 'backend', 'files', 'rundir', 'cache', 'nets', 'convert', 'processes', 'cli', '_version',
        '_moved'}
"""The shared base: modules at the top of the package that every part may use."""
LAYERS = {
    'base': {'base'},
    'hig': {'base'},
    'physics': {'base'},
    'sip': {'base', 'hig'},
    'experiments': {'base', 'physics', 'sip'},
    'training': {'base', 'hig', 'sip', 'experiments'},
    'report': {'base', 'experiments'},
    'bench': {'base', 'hig', 'experiments', 'training'},
    'gui': {'base', 'experiments', 'training', 'report'},
    'entry': {'base', 'hig', 'sip', 'physics', 'experiments', 'training', 'report', 'bench'},
}
"""Which parts each part may import (besides itself). 'entry': the package root, the command line (`__main__`) and
the demos' shared options (`demo`); they load the dashboard (`gui`) lazily, inside a function, and nothing else may
import it (DESIGN.md: "anything → gui" never)."""
ENTRY = {'__init__', '__main__', 'demo'}


def default_root() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def modules(root: str) -> Iterator[Tuple[str, bool, ast.Module]]:
    """(dotted module name, is a package ``__init__``, parsed tree) of every source file below ``root``."""
    top = os.path.dirname(os.path.abspath(root))
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        for file in sorted(files):
            if file.endswith('.py'):
                path = os.path.join(folder, file)
                parts = os.path.relpath(path, top)[:-3].split(os.sep)
                package = parts[-1] == '__init__'
                with open(path, encoding='utf-8') as f:
                    yield '.'.join(parts[:-1] if package else parts), package, ast.parse(f.read(), path)


def imports(name: str, package: bool, tree: ast.Module) -> Iterator[Tuple[str, str, bool]]:
    """(imported module, imported name or None, whether the import sits inside a function) of every import."""
    base = name.split('.') if package else name.split('.')[:-1]

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, None, in_function
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    stem = base[:len(base) - child.level + 1]
                    module = '.'.join(stem + ([child.module] if child.module else []))
                else:
                    module = child.module or ''
                for alias in child.names:
                    yield module, alias.name, in_function
            yield from walk(child, inside)
    yield from walk(tree, False)


def room_of(module: str) -> str:
    """The room of a dotted module name of the package: its subpackage or top-level module (``'__init__'`` for the
    package itself)."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else '__init__'


def part_of(room: str) -> str:
    """The part of the house a room belongs to (a key of `LAYERS`)."""
    if room in BASE:
        return 'base'
    if room in ENTRY:
        return 'entry'
    return room


def arrows(root: str) -> Dict[str, Dict[str, List[Tuple[str, bool]]]]:
    """``{room: {imported room: [(importing module, lazily), …]}}`` for every import of one room by another."""
    found: Dict[str, Dict[str, List[Tuple[str, bool]]]] = {}
    names = {name for name, _, _ in modules(root)}
    for name, package, tree in modules(root):
        src = room_of(name)
        found.setdefault(src, {})
        for module, imported, lazy in imports(name, package, tree):
            if not module or module.split('.')[0] != PACKAGE:
                continue
            target = f'{module}.{imported}' if imported and f'{module}.{imported}' in names else module
            dst = room_of(target)
            if dst != src and target != PACKAGE:
                found[src].setdefault(dst, []).append((name, lazy))
    return found


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected sets of more than one room (Tarjan's algorithm)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def floors(graph: Dict[str, Set[str]]) -> Dict[str, int]:
    """The floor of every room: the longest chain of arrows below it (the rooms of one circle share a floor)."""
    group_of = {v: frozenset([v]) for v in set(graph) | {w for ws in graph.values() for w in ws}}
    for group in circles(graph):
        for v in group:
            group_of[v] = frozenset(group)
    memo: Dict[frozenset, int] = {}

    def floor(group: frozenset) -> int:
        if group not in memo:
            below = {group_of[w] for v in group for w in graph.get(v, ()) if group_of[w] != group}
            memo[group] = max((floor(g) + 1 for g in below), default=0)
        return memo[group]
    return {v: floor(g) for v, g in group_of.items()}


def violations(found) -> List[str]:
    """Arrows that break `LAYERS` (and any import of ``gui`` that is not lazy in an entry module)."""
    bad = []
    for src, targets in found.items():
        for dst, places in targets.items():
            src_part, dst_part = part_of(src), part_of(dst)
            if dst_part == 'gui' and src_part != 'gui':
                eager = [m for m, lazy in places if not (lazy and src_part == 'entry')]
                if eager:
                    bad.append(f"{', '.join(sorted(set(eager)))} imports the dashboard (gui)")
                continue
            if src_part == dst_part or src_part not in LAYERS:
                continue
            if dst_part not in LAYERS[src_part]:
                bad.append(f"{', '.join(sorted({m for m, _ in places}))} ({src_part}) imports {dst} ({dst_part})")
    return bad


def describe(root: str) -> dict:
    """Rooms, arrows, circles, floors and upward arrows of the package at ``root``."""
    found = arrows(root)
    graph = {src: set(t) for src, t in found.items()}
    level = floors(graph)
    upward = sorted((a, b) for a, targets in graph.items() for b in targets if level.get(b, 0) > level[a])
    lines = {name: sum(1 for _ in open(_path(root, name), encoding='utf-8')) for name in graph if _path(root, name)}
    return dict(rooms=sorted(graph), arrows=sorted((a, b) for a, t in graph.items() for b in t), circles=circles(graph),
                floors=level, upward=upward, violations=violations(found), lines=lines)


def _path(root: str, room: str):
    for candidate in (os.path.join(root, room), os.path.join(root, f'{room}.py')):
        if os.path.isdir(candidate):
            return None
        if os.path.exists(candidate):
            return candidate
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default=default_root(), help='the package folder (default: this checkout\'s phi_hig)')
    parser.add_argument('--dot', help='also write a Graphviz file of the rooms and arrows')
    args = parser.parse_args(argv)
    d = describe(args.root)
    n_floors = max(d['floors'].values(), default=-1) + 1
    print(f"{len(d['rooms'])} rooms on {n_floors} floors, {len(d['arrows'])} arrows, {len(d['circles'])} circle(s), "
          f"{len(d['upward'])} upward arrow(s), {len(d['violations'])} layering violation(s)")
    for group in d['circles']:
        print('circle: ' + ' <-> '.join(group))
    for a, b in d['upward']:
        print(f'upward: {a} -> {b}')
    for v in d['violations']:
        print(f'violation: {v}')
    for f in range(n_floors - 1, -1, -1):
        rooms = sorted(r for r, lv in d['floors'].items() if lv == f)
        print(f"floor {f:2d}: " + ', '.join(f"{r}{'/' if _path(args.root, r) is None and r != '__init__' else ''}"
                                            for r in rooms))
    if args.dot:
        with open(args.dot, 'w') as f:
            f.write('digraph phi_hig {\n  rankdir=BT;\n')
            for a, b in d['arrows']:
                f.write(f'  "{a}" -> "{b}";\n')
            f.write('}\n')
        print(f'wrote {args.dot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
