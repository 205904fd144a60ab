#!/usr/bin/env python3
"""Check that the README's recipe code blocks are the files that run.

A block marked `<!-- recipe: PATH -->` on the line before its opening fence
must hold exactly the content of PATH (relative to the repo root), so the
code people copy from "Using the sink in your tests" is the code that
scripts/test.sh runs.

    scripts/check-readme-recipes.py         # exit 1 naming each stale block
    scripts/check-readme-recipes.py --fix   # rewrite the blocks from the files
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- recipe: (\S+) -->$")


def sync(text):
    """The README with every marked block replaced by its file; the paths
    of all marked blocks; those of the stale ones."""
    lines = text.split("\n")
    out, paths, stale, i = [], [], [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        m = MARKER.match(line)
        if not m:
            continue
        path = m.group(1)
        paths.append(path)
        if i >= len(lines) or not lines[i].startswith("```"):
            sys.exit(f"README.md:{i}: `{line}` must be followed by a ``` fence")
        out.append(lines[i])
        start = i = i + 1
        while i < len(lines) and lines[i] != "```":
            i += 1
        if i == len(lines):
            sys.exit(f"README.md:{start}: the block for {path} is not closed")
        body = "\n".join(lines[start:i])
        want = (ROOT / path).read_text().rstrip("\n")
        if body != want:
            stale.append(path)
        out.extend(want.split("\n"))
    return "\n".join(out), paths, stale


def main():
    readme = ROOT / "README.md"
    text = readme.read_text()
    fixed, paths, stale = sync(text)
    if not paths:
        print("README.md: no recipe blocks found", file=sys.stderr)
        return 1
    if "--fix" in sys.argv[1:]:
        readme.write_text(fixed)
        print(f"README.md: {len(stale)} recipe block(s) rewritten")
        return 0
    for path in stale:
        print(f"README.md: the block for {path} differs from the file; "
              "run scripts/check-readme-recipes.py --fix", file=sys.stderr)
    if not stale:
        print(f"README.md: {len(paths)} recipe blocks match their files")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
