#!/usr/bin/env python3
"""Fails when a Rust module imports a module that imports it back.

For every library crate of the workspace (each `*/src/lib.rs`), the module tree is read
from the file layout (`a.rs` or `a/mod.rs` is module `a`, `a/b.rs` is `a::b`), and every
reference one module makes to another is collected: `use crate::…` trees (braces
included), `crate::x::y` paths in code, and `super::…`/`self::…` paths. Two modules that
are siblings (the same parent) depend on each other when anything in one's subtree refers
to anything in the other's. A cycle among siblings, at any level of the tree (the crate
root's children included), is an error; a child using its parent (`super::Type`) is not,
since a parent owns its children.

    python3 tools/check_module_cycles.py [CRATE_DIR ...]   # default: every workspace crate

Prints each cycle as `crate: a -> b -> a (a/x.rs uses crate::b::…)` and exits 1 if any.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strip_comments_and_strings(src):
    """Source without comments, string literals or char literals (kept the same length)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", src[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", src[i : j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:]):
            m = re.match(r"'(\\.|[^\\'])'", src[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_files(src_dir):
    """{module path tuple: file} for every module file under `src_dir` (lib.rs = ())."""
    mods = {}
    for dirpath, _, files in os.walk(src_dir):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src_dir)
            parts = rel[:-3].split(os.sep)
            if parts == ["lib"]:
                mods[()] = os.path.join(dirpath, f)
            elif parts == ["main"] or parts[0] == "bin":
                continue
            elif parts[-1] == "mod":
                mods[tuple(parts[:-1])] = os.path.join(dirpath, f)
            else:
                mods[tuple(parts)] = os.path.join(dirpath, f)
    return mods


IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def parse_use_tree(text, i, prefix, out):
    """Parses a use tree at text[i:], appending full paths (lists) to `out`; returns the end."""
    path = list(prefix)
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            i += 1
            while True:
                while i < len(text) and text[i] in " \t\r\n,":
                    i += 1
                if i >= len(text) or text[i] == "}":
                    return i + 1
                i = parse_use_tree(text, i, path, out)
        m = re.compile(IDENT + r"|\*").match(text, i)
        if not m:
            out.append(path)
            return i
        path = path + [m.group(0)]
        i = m.end()
        while i < len(text) and text[i].isspace():
            i += 1
        if text.startswith("::", i):
            i += 2
            continue
        out.append(path)
        # `as alias` or the end of this tree.
        m = re.compile(r"\s*as\s+" + IDENT).match(text, i)
        return m.end() if m else i


def references(module, text):
    """Absolute module-path lists this module's text refers to (unresolved tails included)."""
    refs = []
    for m in re.finditer(r"\buse\s+", text):
        start = m.end()
        tree = []
        parse_use_tree(text, start, [], tree)
        refs.extend(tree)
    for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:crate|super|self)(?:\s*::\s*(?:" + IDENT + r"))+)", text):
        refs.append(re.split(r"\s*::\s*", m.group(1)))
    absolute = []
    for r in refs:
        if not r:
            continue
        base = list(module)
        parts = list(r)
        if parts[0] == "crate":
            base, parts = [], parts[1:]
        elif parts[0] in ("super", "self"):
            while parts and parts[0] in ("super", "self"):
                if parts[0] == "super":
                    base = base[:-1]
                parts = parts[1:]
        else:
            continue  # an external crate or a local name
        absolute.append(tuple(base + parts))
    return absolute


def resolve(path, mods):
    """The longest module path that `path` starts with."""
    for k in range(len(path), -1, -1):
        if tuple(path[:k]) in mods:
            return tuple(path[:k])
    return ()


def check_crate(crate_dir):
    src = os.path.join(crate_dir, "src")
    mods = module_files(src)
    if () not in mods:
        return []
    # edges[parent][(a, b)] = an example (file, referenced path) of a's subtree using b's.
    edges = defaultdict(dict)
    for module, file in mods.items():
        text = strip_comments_and_strings(open(file, encoding="utf-8").read())
        for ref in references(module, text):
            target = resolve(ref, mods)
            # The sibling pair under the deepest common ancestor.
            k = 0
            while k < len(module) and k < len(target) and module[k] == target[k]:
                k += 1
            if k == len(module) or k == len(target):
                continue  # ancestor/descendant: a parent owns its children
            parent, a, b = module[:k], module[k], target[k]
            edges[parent].setdefault((a, b), (os.path.relpath(file, crate_dir), "::".join(ref)))
    problems = []
    name = os.path.basename(os.path.abspath(crate_dir))
    for parent, pairs in sorted(edges.items()):
        graph = defaultdict(set)
        for a, b in pairs:
            graph[a].add(b)
        for cycle in strongly_connected(graph):
            members = sorted(cycle)
            where = "::".join(parent) or "crate"
            example = "; ".join(
                f"{a} -> {b} ({pairs[(a, b)][0]} uses {pairs[(a, b)][1]})"
                for a in members
                for b in members
                if (a, b) in pairs
            )
            problems.append(f"{name}: in {where}: {' <-> '.join(members)}: {example}")
    return problems


def strongly_connected(graph):
    """Tarjan's SCCs of size > 1 (or self-loops)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    crates = sys.argv[1:] or sorted(
        os.path.join(ROOT, d)
        for d in os.listdir(ROOT)
        if os.path.isfile(os.path.join(ROOT, d, "Cargo.toml")) and os.path.isdir(os.path.join(ROOT, d, "src"))
    )
    problems = [p for c in crates for p in check_crate(c)]
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} module cycle(s): make one side a leaf module both can use")
        return 1
    print(f"no module cycles in {', '.join(os.path.basename(c) for c in crates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
