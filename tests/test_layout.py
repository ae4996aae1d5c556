"""The README's Layout section is the package's layering: every module is listed, and each imports
only from its own layer and the ones listed before it (function-level imports included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "freqd"
ENTRY_POINTS = {"__init__", "__main__"}  # the package root and `python -m freqd` may import anything


def layers() -> list[str]:
    """The top-level modules and subpackages of the README's Layout block, bottom layer first."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    return [m.group(1) for m in re.finditer(r"^  ([a-z_]+)(?:\.py|/)", block, re.M)]


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, top-level freqd component) of every absolute freqd import in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"freqd.{a.name}" for a in node.names] if node.module == "freqd" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names
                  if name.split(".")[0] == "freqd" and "." in name]
    return found


def component(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_module_is_listed_once():
    listed = layers()
    on_disk = {component(p) for p in PACKAGE.iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").is_file() or p.name == "properties")} - ENTRY_POINTS
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == on_disk


def test_imports_follow_the_layers():
    rank = {name: i for i, name in enumerate(layers())}
    upward = [f"{path.relative_to(REPO)}:{line} imports freqd.{target}"
              for path in sorted(PACKAGE.rglob("*.py")) if component(path) not in ENTRY_POINTS
              for line, target in imported(path) if rank[target] > rank[component(path)]]
    assert upward == []


def test_the_checker_sees_function_level_and_root_imports(tmp_path):
    """The scan is not vacuous: a nested import and a ``from freqd import x`` are both found."""
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom freqd import cli\n\ndef f():\n    from freqd.serving import Recommender\n"
                      "    import freqd.io\n    from . import sibling\n")
    assert sorted(imported(source)) == [(2, "cli"), (5, "serving"), (6, "io")]
