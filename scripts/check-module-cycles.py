#!/usr/bin/env python3
"""Fail when modules of a crate depend on each other in a cycle.

    scripts/check-module-cycles.py              # every lib and bin target of the workspace
    scripts/check-module-cycles.py crates/sink  # only the targets under these directories
    scripts/check-module-cycles.py --nesting    # parent <-> child references count too

Why a script and not `cargo modules dependencies --acyclic`: cargo-modules
links rust-analyzer and took over 30 minutes to install on the 2-core CI
machine (it never finished), which is too much for scripts/test.sh.

What counts as a dependency of module A on module B: A names an item that
is defined in B, through a `use` declaration or an inline path starting
with `crate::`, `super::`, `self::` or the name of one of A's child modules.
Re-exports are followed to the module that defines the item, so a facade
(`mod.rs` with `pub use child::Thing`) is not mistaken for the definition.
A module does not depend on the modules it declares just by declaring them
(ownership is not use), and references between a module and its own
ancestors or descendants are not counted: a child using what its parent
defines, and a parent calling into its children (the crate root included),
is the module tree itself; `--nesting` counts them too. The cycles this
finds are between modules neither of which contains the other, such as
`config -> stages -> config` or `hook -> plan::referee -> hook`.
`#[cfg(test)]` modules are skipped: test code may
look at everything. Items are told apart from modules by name only; macros,
`#[path]`-less `include!` and items produced by macros are not seen.

Each cycle is printed with one concrete path through it and, for every
step, the file, line and path text that creates the dependency. Exit
status: 0 no cycles, 1 cycles found, 2 usage or input errors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORD_ROOTS = ("crate", "super", "self")


@dataclass
class Module:
    """One module of a crate: its path segments, file and the references it makes."""

    path: tuple[str, ...]
    file: str
    children: dict[str, "Module"] = field(default_factory=dict)
    # (segments, is_glob, line, text) for every `use` and inline path.
    refs: list[tuple[list[str], bool, int, str]] = field(default_factory=list)
    # Re-exported name -> target segments (relative to this module).
    reexports: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "::".join(self.path) if self.path else "crate"


def strip_comments_and_strings(src: str) -> str:
    """Blanks comments, string and char literals, keeping newlines (for line numbers)."""
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
        elif (m := re.match(r'b?r(#*)"', src[i:i + 260])) and (i == 0 or not re.match(r"\w", src[i - 1])):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + re.sub(r"[^\n]", " ", src[i + 2:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('"' + re.sub(r"[^\n]", " ", src[i + 1:j]) + '"')
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:i + 12])
            if m:
                out.append("' '" + " " * (m.end() - 3))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_use_tree(text: str) -> list[tuple[list[str], bool, str | None]]:
    """Expands `a::{b, c::{d as e, *}}` into (segments, is_glob, alias) triples."""
    tokens = re.findall(rf"::|[{{}},*]|{IDENT}", text)
    pos = 0

    def tree(prefix: list[str]) -> list[tuple[list[str], bool, str | None]]:
        nonlocal pos
        segs = list(prefix)
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == "{":
                pos += 1
                items = []
                while pos < len(tokens) and tokens[pos] != "}":
                    if tokens[pos] == ",":
                        pos += 1
                        continue
                    items += tree(segs)
                pos += 1  # the closing brace
                return items
            if tok == "*":
                pos += 1
                return [(segs, True, None)]
            if tok == "::":
                pos += 1
                continue
            if tok in (",", "}"):
                break
            if tok == "as":
                alias = tokens[pos + 1] if pos + 1 < len(tokens) else None
                pos += 2
                return [(segs, False, alias)]
            if tok == "self" and segs:
                pos += 1  # `a::{self}` is `a`
                continue
            segs.append(tok)
            pos += 1
        return [(segs, False, None)]

    return tree([])


MOD_RE = re.compile(
    rf"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+({IDENT})\s*([;{{])"
)
USE_RE = re.compile(rf"\b(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]+);")
PATH_RE = re.compile(rf"(?<![\w:])((?:{IDENT}\s*::\s*)+{IDENT})")


def matching_brace(src: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(src)):
        if src[j] == "{":
            depth += 1
        elif src[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(src) - 1


class Crate:
    """The module tree of one crate target, built from its root file."""

    def __init__(self, root_file: str):
        self.errors: list[str] = []
        self.root = Module((), root_file)
        self.load_file(self.root, root_file, mod_rs=True)

    def load_file(self, module: Module, path: str, mod_rs: bool) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                src = strip_comments_and_strings(f.read())
        except OSError as e:
            self.errors.append(f"{path}: {e}")
            return
        # Where `mod x;` in this file looks for x.rs: next to a mod.rs/lib.rs,
        # or in a directory named after a non-mod-rs file.
        base = os.path.dirname(path) if mod_rs else os.path.splitext(path)[0]
        self.load_body(module, path, src, 0, len(src), base)

    def load_body(self, module: Module, path: str, src: str, start: int, end: int, base: str) -> None:
        blanked = list(src[start:end])
        pos = start
        while (m := MOD_RE.search(src, pos, end)) is not None:
            attrs, name, kind = m.group(1), m.group(2), m.group(3)
            pos = m.end()
            is_test = re.search(r"cfg\s*\(\s*test\s*\)", attrs) is not None
            if kind == "{":
                close = matching_brace(src, m.end() - 1)
                if not is_test:
                    child = module.children.setdefault(name, Module(module.path + (name,), path))
                    self.load_body(child, path, src, m.end(), close, os.path.join(base, name))
                for k in range(m.start(), close + 1):
                    if blanked[k - start] != "\n":
                        blanked[k - start] = " "
                pos = close + 1
                continue
            if is_test:
                continue
            explicit = re.search(r'path\s*=\s*"([^"]*)"', attrs)
            if explicit:
                # The literal was blanked: read it from the original file.
                with open(path, encoding="utf-8") as f:
                    raw = f.read()[m.start():m.end()]
                rel = re.search(r'path\s*=\s*"([^"]*)"', raw)
                candidates = [os.path.join(os.path.dirname(path), rel.group(1))] if rel else []
            else:
                candidates = [os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")]
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                self.errors.append(f"{path}: module `{name}` not found (looked at {', '.join(candidates)})")
                continue
            child = Module(module.path + (name,), found)
            module.children[name] = child
            self.load_file(child, found, mod_rs=os.path.basename(found) == "mod.rs" or explicit is not None)
        body = "".join(blanked)
        line_of = lambda offset: src.count("\n", 0, start + offset) + 1  # noqa: E731
        use_spans = []
        for m in USE_RE.finditer(body):
            use_spans.append((m.start(), m.end()))
            for segs, glob, alias in parse_use_tree(m.group(2)):
                if not segs:
                    continue
                module.refs.append((segs, glob, line_of(m.start()), "use " + " ".join(m.group(2).split())))
                if m.group(1) and not glob:
                    module.reexports[alias or segs[-1]] = segs
        for m in PATH_RE.finditer(body):
            if any(a <= m.start() < b for a, b in use_spans):
                continue
            segs = [s.strip() for s in m.group(1).split("::")]
            module.refs.append((segs, False, line_of(m.start()), m.group(1)))

    def modules(self) -> list[Module]:
        out, stack = [], [self.root]
        while stack:
            m = stack.pop()
            out.append(m)
            stack.extend(m.children.values())
        return out

    def resolve(self, at: Module, segs: list[str], depth: int = 0) -> Module | None:
        """The module defining what `segs` names from `at`, or None (external, local name)."""
        if depth > 16 or not segs:
            return None
        first = segs[0]
        if first == "crate":
            cur, rest = self.root, segs[1:]
        elif first in ("super", "self"):
            cur, rest = at, segs
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    cur = self.parent(cur)
                    if cur is None:
                        return None
                rest = rest[1:]
        elif first in at.children:
            cur, rest = at.children[first], segs[1:]
        else:
            return None
        while rest:
            seg = rest[0]
            if seg in cur.children:
                cur, rest = cur.children[seg], rest[1:]
            elif seg in cur.reexports:
                target = self.resolve(cur, cur.reexports[seg] + rest[1:], depth + 1)
                return target or cur
            else:
                break
        return cur

    def parent(self, m: Module) -> Module | None:
        if not m.path:
            return None
        cur = self.root
        for seg in m.path[:-1]:
            cur = cur.children[seg]
        return cur

    def edges(self, nesting: bool = False) -> dict[str, dict[str, tuple[str, int, str]]]:
        """module -> {module it depends on -> (file, line, text) of the first reference}.

        Without `nesting`, references between a module and its ancestors or
        descendants are left out (see the module docs)."""
        out: dict[str, dict[str, tuple[str, int, str]]] = {}
        for m in self.modules():
            deps = out.setdefault(m.name, {})
            for segs, _glob, line, text in m.refs:
                target = self.resolve(m, segs)
                if target is None or target is m:
                    continue
                if not nesting and is_nested(m.path, target.path):
                    continue
                deps.setdefault(target.name, (m.file, line, text))
        return out


def is_nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True when one module path contains the other."""
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def cycles(edges: dict[str, dict[str, object]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def one_cycle(edges: dict[str, dict[str, object]], comp: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a module list."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, {})):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [start]


def check_target(label: str, root_file: str, repo_root: str, nesting: bool = False) -> tuple[int, list[str]]:
    crate = Crate(root_file)
    edges = crate.edges(nesting)
    lines = [f"error: {e}" for e in crate.errors]
    comps = cycles(edges)
    for comp in comps:
        path = one_cycle(edges, comp)
        lines.append(f"{label}: module cycle {' -> '.join(path)}")
        if len(comp) > len(path) - 1:
            lines.append(f"  (all modules in this cycle group: {', '.join(comp)})")
        for a, b in zip(path, path[1:]):
            file, line, text = edges[a][b]
            lines.append(f"  {a} -> {b}: {os.path.relpath(file, repo_root)}:{line}: {text}")
    return len(comps) + (1 if crate.errors else 0), lines


def workspace_targets(repo_root: str) -> list[tuple[str, str]]:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
            cwd=repo_root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    out = []
    for pkg in meta["packages"]:
        for t in pkg["targets"]:
            if {"lib", "bin", "rlib", "proc-macro"} & set(t["kind"]):
                out.append((f"{pkg['name']} ({'/'.join(t['kind'])} {t['name']})", t["src_path"]))
    return out


def main(argv: list[str]) -> int:
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nesting = "--nesting" in argv
    argv = [a for a in argv if a != "--nesting"]
    if any(a.startswith("-") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        targets = workspace_targets(repo_root)
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        print(f"error: cannot list the workspace targets with cargo metadata: {e}", file=sys.stderr)
        return 2
    if argv:
        dirs = [os.path.abspath(a) + os.sep for a in argv]
        targets = [t for t in targets if any(t[1].startswith(d) for d in dirs)]
        if not targets:
            print(f"error: no lib or bin target under {', '.join(argv)}", file=sys.stderr)
            return 2
    problems = 0
    for label, root_file in targets:
        n, lines = check_target(label, root_file, repo_root, nesting)
        problems += n
        print("\n".join(lines) if lines else f"{label}: no module cycles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
