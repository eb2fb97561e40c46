"""An import inside a function says why it is not at the module's top (docs/ARCHITECTURE.md, issue 21).

Only two reasons keep an import in a function: it keeps `ftflow --help` (or importing a light module)
free of a heavy library, or it keeps an optional dependency optional. The reason is a comment on the
import's line, or one comment line directly above the run of import statements it belongs to, e.g.
`# heavy (torch): loaded when training runs, so ftflow --help stays light`. Read with ast and tokenize:
nothing is imported.

Whether an import of our own package could simply move to the top is not decided here (that needs the
import graph and what each module loads); a reviewer checks the stated reason.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks", "flows", "deploy")


Import = ast.Import | ast.ImportFrom


def comment_lines(source: str) -> tuple[set[int], set[int]]:
    """(lines holding a comment anywhere, lines that are only a comment)."""
    anywhere, whole = set(), set()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            anywhere.add(row)
            if lines[row - 1].lstrip().startswith("#"):
                whole.add(row)
    return anywhere, whole


def import_runs(tree: ast.AST) -> list[list[Import]]:
    """Runs of consecutive import statements inside function bodies (nested blocks included)."""
    runs: list[list[Import]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not in_function:
                continue
            run: list[Import] = []
            for stmt in body:
                if isinstance(stmt, Import):
                    run.append(stmt)
                    continue
                if run:
                    runs.append(run)
                run = []
            if run:
                runs.append(run)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return runs


def unexplained_imports(source: str, filename: str = "<source>") -> list[int]:
    """Line numbers of function-level imports without a reason comment."""
    anywhere, whole = comment_lines(source)
    missing = []
    for run in import_runs(ast.parse(source, filename)):
        block_reason = run[0].lineno - 1 in whole
        for node in run:
            own_reason = any(row in anywhere for row in range(node.lineno, (node.end_lineno or node.lineno) + 1))
            if not (block_reason or own_reason):
                missing.append(node.lineno)
    return sorted(missing)


def test_the_check_sees_a_missing_reason():
    source = (
        "import os\n"
        "def f():\n"
        "    # heavy (torch): loaded when training runs\n"
        "    import torch\n"
        "    import numpy\n"
        "\n"
        "    import pandas  # heavy (pandas): likewise\n"
        "    x = 1\n"
        "    import json\n"
        "    def g():\n"
        "        from tasks import io\n"
        "    if x:\n"
        "        # optional: only for plots\n"
        "        import matplotlib\n"
    )
    assert unexplained_imports(source) == [9, 11]


def test_every_function_level_import_says_why():
    missing = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            lines = unexplained_imports(path.read_text(), rel)
            if lines:
                missing[rel] = lines
    assert not missing, f"function-level imports without a reason comment (heavy / optional): {missing}"
