"""Reading the imports of Python files (for the tests of the package's and the
test suite's layout)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _import_nodes(tree: ast.AST, runtime_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if runtime_only and _is_type_checking(node):
            assert isinstance(node, ast.If)
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), runtime_only)
            continue
        yield from _import_nodes(node, runtime_only)


def imported_modules(source: str, package: str, *, runtime_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, at any depth (inside
    functions too), relative ones resolved against ``package``. ``from a import
    b`` counts as importing ``a`` and ``a.b``: ``b`` may be a module.
    ``runtime_only`` leaves out the imports under ``if TYPE_CHECKING:``, which
    never run."""
    found = []
    for node in _import_nodes(ast.parse(source), runtime_only):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        else:
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def modules_under(folder: Path) -> dict[str, Path]:
    """Every module of the package in ``folder``, by dotted name (a package by
    its own name, for its ``__init__.py``)."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def package_of(name: str, path: Path) -> str:
    """The package that relative imports in module ``name`` start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]
