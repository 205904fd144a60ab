#!/usr/bin/env python3
"""Tests of scripts/check-module-cycles.py on small crates written to a temp dir.

    python3 scripts/test_check_module_cycles.py
"""

import importlib.util
import os
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("cycles", os.path.join(HERE, "check-module-cycles.py"))
cycles = importlib.util.module_from_spec(spec)
# dataclasses look their module up in sys.modules.
sys.modules["cycles"] = cycles
spec.loader.exec_module(cycles)


class CrateTest(unittest.TestCase):
    def crate(self, files: dict) -> str:
        """Writes `files` (path -> source) under a temp src/ and returns lib.rs."""
        tmp = tempfile.mkdtemp(prefix="modcycles-")
        self.addCleanup(lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
        for rel, text in files.items():
            path = os.path.join(tmp, "src", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text))
        return os.path.join(tmp, "src", "lib.rs")

    def report(self, files: dict, nesting: bool = False):
        lib = self.crate(files)
        n, lines = cycles.check_target("t", lib, os.path.dirname(lib), nesting)
        return n, "\n".join(lines)

    def test_sibling_cycle_is_reported_with_its_path(self):
        n, out = self.report({
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::Bee;\npub struct Ay;\n",
            "b.rs": "\n\npub struct Bee(crate::a::Ay);\n",
        })
        self.assertEqual(n, 1, out)
        self.assertIn("module cycle a -> b -> a", out)
        self.assertIn("a -> b: a.rs:1: use crate::b::Bee", out)
        self.assertIn("b -> a: b.rs:3: crate::a::Ay", out)

    def test_one_way_dependencies_are_fine(self):
        n, out = self.report({
            "lib.rs": "mod a;\nmod b;\nmod c;\n",
            "a.rs": "use crate::b::Bee;\nuse crate::c;\n",
            "b.rs": "use super::c::{self, Cee};\n",
            "c.rs": "pub struct Cee;\n",
        })
        self.assertEqual(n, 0, out)

    def test_three_module_cycle_through_nested_use_trees_and_super(self):
        n, out = self.report({
            "lib.rs": "pub mod config;\npub mod stages;\npub mod policy;\n",
            "config.rs": "use crate::{stages::{Stage as S, other}, x};\n",
            "stages.rs": "fn f() { let _ = super::policy::inner::run(); }\n",
            "policy/mod.rs": "pub mod inner;\n",
            "policy/inner.rs": "use crate::config::*;\n",
        })
        self.assertEqual(n, 1, out)
        self.assertIn("config -> stages -> policy::inner -> config", out)

    def test_reexports_lead_to_the_defining_module(self):
        # `auth` is a facade: sasl uses `super::Users`, defined in users.
        files = {
            "lib.rs": "mod auth;\n",
            "auth/mod.rs": "mod sasl;\nmod users;\npub use sasl::Exchange;\npub use users::Users;\n",
            "auth/sasl.rs": "use super::Users;\npub struct Exchange;\n",
            "auth/users.rs": "pub struct Users;\n",
            "other.rs": "",
        }
        self.assertEqual(self.report(files, nesting=True)[0], 0)
        # A sibling reached through the facade still counts.
        files["lib.rs"] = "mod auth;\nmod session;\n"
        files["auth/users.rs"] = "pub struct Users(crate::session::S);\n"
        files["session.rs"] = "use crate::auth::Users;\npub struct S;\n"
        n, out = self.report(files)
        self.assertEqual(n, 1, out)
        self.assertIn("auth::users -> session -> auth::users", out)

    def test_parent_child_references_count_only_with_nesting(self):
        files = {
            "lib.rs": "pub mod data;\npub struct Status;\n",
            "data.rs": "mod simd;\npub struct State;\nfn f() { simd::detect(); }\n",
            "data/simd.rs": "use super::State;\nuse crate::Status;\npub fn detect() {}\n",
        }
        self.assertEqual(self.report(files)[0], 0)
        n, out = self.report(files, nesting=True)
        self.assertEqual(n, 1, out)
        self.assertIn("data -> data::simd -> data", out)

    def test_test_modules_comments_and_strings_are_ignored(self):
        n, out = self.report({
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::Bee;\n",
            "b.rs": textwrap.dedent('''\
                // use crate::a::X;
                /* crate::a::Y /* nested */ crate::a::Z */
                const S: &str = "crate::a::W";
                const R: &str = r#"use crate::a::V;"#;
                const C: char = '"'; fn f<'a>(x: &'a str) {}
                pub struct Bee;
                #[cfg(test)]
                mod tests {
                    use crate::a::*;
                }
                #[cfg(test)]
                mod more_tests;
            '''),
        })
        self.assertEqual(n, 0, out)

    def test_inline_modules_and_path_attributes(self):
        n, out = self.report({
            "lib.rs": 'mod a;\n#[path = "elsewhere/bee.rs"]\nmod b;\n',
            "a.rs": "pub mod inner {\n    use crate::b::Bee;\n}\n",
            "elsewhere/bee.rs": "pub struct Bee(crate::a::inner::I);\n",
        })
        self.assertEqual(n, 1, out)
        self.assertIn("a::inner -> b -> a::inner", out)

    def test_missing_module_file_is_an_error(self):
        n, out = self.report({"lib.rs": "mod gone;\n"})
        self.assertEqual(n, 1)
        self.assertIn("module `gone` not found", out)

    def test_use_tree_parsing(self):
        self.assertEqual(
            cycles.parse_use_tree("crate::{a::{self, B as C}, d::*, e}"),
            [(["crate", "a"], False, None), (["crate", "a", "B"], False, "C"),
             (["crate", "d"], True, None), (["crate", "e"], False, None)],
        )


if __name__ == "__main__":
    unittest.main()
