#!/usr/bin/env python3
"""Reports import cycles between the modules of each crate of the workspace.

A crate's top-level modules (`src/<name>.rs` or `src/<name>/mod.rs`) are the nodes; a file that
names `crate::<other>` (in a `use` or a path) makes an edge from its top-level module to
`<other>`. Inside a folder module, its child modules are checked among themselves the same way
(`super::<sibling>` and `crate::<folder>::<sibling>`). A strongly connected component of more
than one module is a cycle: the script prints it and exits 1. `lib.rs` and `main.rs` are roots,
not nodes.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["api-service", "ws-gateway", "shared-proto", "shared-auth", "shared-redis", "bench"]
COMMENT = re.compile(r"//[^\n]*")


def top_modules(src):
    """Modules declared by files in `src`: `<name>.rs`, `<name>/mod.rs`, or both `<name>.rs` and
    a `<name>/` folder of children. Maps each name to its files."""
    mods = {}
    for p in src.iterdir():
        if p.suffix == ".rs" and p.stem not in ("lib", "main", "mod"):
            mods.setdefault(p.stem, []).append(p)
        elif p.is_dir() and ((p / "mod.rs").exists() or (src / (p.name + ".rs")).exists()):
            mods.setdefault(p.name, []).extend(sorted(p.rglob("*.rs")))
    return mods


def names_after(text, prefix):
    """First path segments after `prefix::`, including each item of a `prefix::{a, b::c}` group."""
    names = set()
    for m in re.finditer(r"\b" + prefix + r"::", text):
        i = m.end()
        if text.startswith("{", i):
            depth, item, j = 0, "", i + 1
            while j < len(text):
                ch = text[j]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    if depth == 0:
                        break
                    depth -= 1
                elif ch == "," and depth == 0:
                    names.update(re.findall(r"^\s*([a-z_][a-z0-9_]*)", item))
                    item = ""
                    j += 1
                    continue
                item += ch
                j += 1
            names.update(re.findall(r"^\s*([a-z_][a-z0-9_]*)", item))
        else:
            names.update(re.findall(r"^([a-z_][a-z0-9_]*)", text[i:]))
    return names


def code(path):
    return COMMENT.sub("", path.read_text())


def sccs(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def edges_between(nodes, refs_of):
    graph = {m: set() for m in nodes}
    for m, paths in nodes.items():
        for p in paths:
            for other in refs_of(p):
                if other in nodes and other != m:
                    graph[m].add(other)
    return graph


def main():
    bad = 0
    for crate in CRATES:
        src = ROOT / crate / "src"
        if not src.is_dir():
            continue
        nodes = top_modules(src)
        graph = edges_between(nodes, lambda p: names_after(code(p), "crate"))
        for comp in sccs(graph):
            bad += 1
            print(f"{crate}: import cycle between modules: {' -> '.join(sorted(comp))}")
        for m in nodes:
            folder = src / m
            if not folder.is_dir():
                continue
            children = top_modules(folder)
            prefix = r"(?:super|crate::" + m + r")"
            graph = edges_between(children, lambda f, x=prefix: names_after(code(f), x))
            for comp in sccs(graph):
                bad += 1
                print(f"{crate}: import cycle inside `{m}`: {' -> '.join(sorted(comp))}")
    if bad:
        sys.exit(1)
    print("module-cycles: no import cycle between the modules of any crate")


if __name__ == "__main__":
    main()
