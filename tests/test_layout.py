"""The tests' own layout: helpers shared between test modules live in ``tests/_<what>.py``
modules named for what they hold, fixtures shared between them in ``conftest.py`` (pytest finds
those without an import). So no module under tests/ imports from a ``test_*`` module or from
``conftest``: a test module is never a library, and conftest is never imported."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_names(node: ast.AST) -> list[str]:
    """The dotted names an import statement reaches: ``import a.b`` -> a.b; ``from a import b``
    -> a and, where ``a`` is the tests package or relative, a.b (``b`` may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        names = [base] if base else []
        if node.level or base.split(".")[0] == "tests":
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        return names
    return []


def cross_imports(path: Path, root: Path = TESTS.parent) -> list[str]:
    """Each import statement in ``path`` (top level or inside a function) that reaches a
    ``test_*`` module or ``conftest``, as ``file:line: name``, in line order."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        bad = [name for name in _imported_names(node)
               if any(part.startswith("test_") or part == "conftest" for part in name.split("."))]
        if bad:
            found.append((node.lineno, f"{path.relative_to(root)}:{node.lineno}: {bad[0]}"))
    return [hit for _, hit in sorted(found)]


def test_no_module_imports_from_a_test_module_or_conftest():
    found = [hit for path in _modules() for hit in cross_imports(path)]
    assert found == [], "move what these import into a tests/_<what>.py module " \
                        "(or, for a fixture, into conftest.py):\n" + "\n".join(found)


def test_the_check_sees_each_kind_of_cross_import(tmp_path):
    path = tmp_path / "test_example.py"
    path.write_text("from tests.test_workflow import _checkout\n"
                    "from tests import test_slurm_ddp as ddp\n"
                    "from tests.conftest import tiny_spec\n"
                    "from .test_extract import is_extracted\n"
                    "from . import conftest\n"
                    "def f():\n"
                    "    import conftest\n"
                    "from tests._archives import make_tar\n"
                    "import tests._checkout\n"
                    "from tests import _polling\n")
    assert [h.split(": ", 1)[1] for h in cross_imports(path, tmp_path)] == [
        "tests.test_workflow", "tests.test_slurm_ddp", "tests.conftest", "test_extract", "conftest", "conftest"]


def test_conftest_holds_only_fixtures():
    """Plain helpers belong in a tests/_<what>.py module, where an import can reach them."""
    for path in TESTS.rglob("conftest.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("pytest_"):
                assert any("fixture" in ast.unparse(d) for d in node.decorator_list), \
                    f"{path.relative_to(TESTS.parent)}: {node.name} is not a fixture"
