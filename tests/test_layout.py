"""ARCHITECTURE.md's import rules, read from the source: addon, backend and blender_render import
only `shared` of each other, and `shared` imports only the standard library."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("addon", "backend", "blender_render", "shared")
FORBIDDEN = {"addon": {"backend", "blender_render"}, "backend": {"addon", "blender_render"},
             "blender_render": {"addon", "backend"}}


def imported_tops(path: Path, package: str) -> set[str]:
    """Top-level names of every import in a module, nested ones included; relative imports resolve
    to their own package."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            tops.add(package if node.level else node.module.split(".")[0])
    return tops


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_sides_import_only_shared_of_each_other(package):
    bad = {str(p.relative_to(ROOT)): sorted(imported_tops(p, package) & FORBIDDEN[package]) for p in modules(package)}
    assert {k: v for k, v in bad.items() if v} == {}


# The only exceptions: the batch tools' optional engines, imported inside the functions that use
# them (never at module import), so `import shared.anything` still needs the standard library
# alone. Both sides need them and may not import each other (shared/raypool.py says why).
LAZY = {"shared/raypool.py": {"ray"}, "shared/storage.py": {"fsspec"}}


def module_level_tops(path: Path, package: str) -> set[str]:
    """Like imported_tops, but leaving out imports inside function bodies."""
    tree = ast.parse(path.read_text(), str(path))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    tops = set()
    for node in ast.walk(tree):
        if id(node) in nested:
            continue
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            tops.add(package if node.level else node.module.split(".")[0])
    return tops


def test_shared_is_stdlib_only():
    allowed = set(sys.stdlib_module_names) | {"shared", "__future__"}
    bad = {}
    for p in modules("shared"):
        name = p.relative_to(ROOT).as_posix()
        lazy = LAZY.get(name, set())
        bad[name] = sorted((imported_tops(p, "shared") - allowed - lazy) | (module_level_tops(p, "shared") & lazy))
    assert {k: v for k, v in bad.items() if v} == {}
