#!/usr/bin/env python3
"""Lists import cycles between the source files (top-level modules) of each crate.

A file's module is its top-level module under `src/` (`src/pretrain/train.rs` belongs to
`pretrain`); an edge `a -> b` is a `crate::b` path in a file of `a`. Exits 1 when a cycle
exists. Run from the repository root: `python3 tools/import_cycles.py`.
"""
import pathlib
import re
import sys

def modules(src):
    edges = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).parts
        if rel[0] in ("lib.rs", "main.rs"):
            continue
        name = rel[0][:-3] if rel[0].endswith(".rs") else rel[0]
        text = f.read_text()
        # Items used from other top-level modules: `crate::x` paths and `use crate::{x, ...}`.
        used = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"use crate::\{([^}]*)\}", text, re.S):
            used |= set(re.findall(r"(?:^|[,\s])([a-z_][a-z0-9_]*)::", group))
        edges.setdefault(name, set()).update(u for u in used if u != name)
    return edges

def cycles(edges):
    found, state = [], {}
    def visit(n, path):
        state[n] = 1
        for m in sorted(edges.get(n, ())):
            if m not in edges:
                continue
            if state.get(m) == 1:
                found.append(path[path.index(m):] + [m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2
    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    return found

bad = False
for src in sorted(pathlib.Path("crates").glob("*/src")):
    for c in cycles(modules(src)):
        bad = True
        print(f"{src.parent.name}: " + " -> ".join(c))
if not bad:
    print("no import cycles")
sys.exit(1 if bad else 0)
