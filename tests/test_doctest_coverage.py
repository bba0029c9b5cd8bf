"""``tests/test_doctests.py`` finds camcore's docstring examples by walking the package, which
skips quietly what it cannot import (a subpackage whose import fails, a folder without an
``__init__.py``). Here the source files themselves say which modules have examples, so
none is left out of ``make test`` unnoticed."""

from __future__ import annotations

from pathlib import Path

from test_doctests import MODULES

import camcore

PACKAGE = Path(camcore.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_with_an_example_is_run():
    with_examples = {
        _module_name(path) for path in PACKAGE.rglob("*.py") if ">>>" in path.read_text(encoding="utf-8")
    }
    assert with_examples - set(MODULES) == set(), "examples not run by tests/test_doctests.py"
    assert set(MODULES) <= with_examples
