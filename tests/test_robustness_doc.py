"""docs/ROBUSTNESS.md lists every kind of bad input the tests try, as ``python -m tests.corpus``
prints it, and each kind names a test that exists: the list cannot drift from the tests."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from .corpus import all_kinds, markdown_table

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- kinds:start (python -m tests.corpus) -->", "<!-- kinds:end -->"


def test_the_doc_lists_exactly_the_kinds_the_tests_try():
    text = (ROOT / "docs" / "ROBUSTNESS.md").read_text(encoding="utf-8")
    assert START in text and END in text
    listed = text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert listed == markdown_table(), "regenerate it: python -m tests.corpus"
    kinds = all_kinds()
    assert len({(k.name, k.what) for k in kinds}) == len(kinds) >= 60


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_kind_names_a_test_that_exists():
    defined = {p.name: _tests_in(p) for p in (ROOT / "tests").glob("test_*.py")}
    for kind in all_kinds():
        current = None
        for ref in kind.test.split(", "):
            file, _, func = ref.partition("::")
            current = file or current
            func = re.sub(r"\[.*\]$", "", func)
            assert current in defined and func in defined[current], (kind.name, ref)
