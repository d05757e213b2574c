"""The test suite's own layout: test modules take shared helpers from
tests/helpers/ and fixtures from tests/conftest.py, never from another test
module (importing one runs its module-level code again under another name and
hides the helper where nobody looks for it)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.imports import imported_modules

TESTS = Path(__file__).resolve().parent


def is_test_module(name: str) -> bool:
    """Whether a dotted module name is one of our test modules (tests/test_*.py)."""
    *package, last = name.split(".")
    return last.startswith("test_") and package in ([], ["tests"])


def imports_of_test_modules(tests: Path) -> list[str]:
    """Every import of a test module in any Python file under ``tests``, as
    "path:line imports module"."""
    offences = []
    for path in sorted(tests.rglob("*.py")):
        package = ".".join([tests.name, *path.relative_to(tests).parent.parts])
        for line, module in imported_modules(path.read_text(), package):
            if is_test_module(module):
                offences.append(f"{path.relative_to(tests.parent)}:{line} imports {module}")
    return offences


def test_test_modules_are_told_from_helpers() -> None:
    assert is_test_module("tests.test_engine") and is_test_module("test_engine")
    assert not is_test_module("tests.helpers.workers") and not is_test_module("tests.testapp.jobs")
    assert not is_test_module("tests") and not is_test_module("django.test")


def test_every_form_of_import_is_seen() -> None:
    source = (
        "from tests.test_engine import q\n"
        "import tests.test_worker\n"
        "from tests import test_admin\n"
        "def f():\n"
        "    from .test_tasks import drain\n"
        "from .helpers.clock import Clock\n"
    )
    seen = {module for _line, module in imported_modules(source, "tests")}
    assert {"tests.test_engine", "tests.test_worker", "tests.test_admin", "tests.test_tasks"} <= seen
    assert "tests.helpers.clock" in seen
    assert [m for _line, m in imported_modules("from ..test_engine import q\n", "tests.helpers")] == [
        "tests.test_engine",
        "tests.test_engine.q",
    ]


def test_no_test_module_imports_another_test_module() -> None:
    offences = imports_of_test_modules(TESTS)
    assert offences == [], "move what they share to tests/helpers/ or tests/conftest.py:\n" + "\n".join(offences)
