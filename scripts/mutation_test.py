#!/usr/bin/env python3
"""Mutation testing of camcore's pure-numpy code with mutmut (not part of ``make test``).

    .venv/bin/python scripts/mutation_test.py                 # metrics + the methods' weights
    .venv/bin/python scripts/mutation_test.py --max-children 1 --keep

mutmut makes small deliberate bugs (mutants) in the code - a ``<`` becomes ``<=``, a
constant changes, an argument is dropped - and runs the tests that execute the mutated
function against each one. A mutant no test notices *survives*: either the tests miss
something, or the change cannot alter behaviour (an equivalent mutant).

Scope: the metrics (``camcore/metrics.py`` or the ``camcore/metrics/`` package) and the
modules of ``camcore/methods/`` that hold the CAM weights (Grad-CAM, Grad-CAM++,
Score-CAM weights and channel planning): the pure numpy code. Only the tests that
execute a mutated function run against it (mutmut records which ones do).
Everything happens in a temporary copy of ``camcore/`` and ``tests/``: the working
tree is never edited. Tests that already fail on the unmutated copy are deselected
(and listed), since mutmut refuses to start otherwise.

Prints the mutation score (killed / mutants tested) and every surviving mutant's diff.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Default scope (about 10 min on 2 idle cores): the metric definitions and the modules that
# hold the CAM weights of the four original methods; camcore/metrics.py and the earlier
# methods/gradient.py and methods/score.py are matched too, for older checkouts.
MUTATE = (
    "camcore/metrics.py",
    "camcore/metrics/_common.py",
    "camcore/metrics/localization.py",
    "camcore/metrics/faithfulness.py",
    "camcore/metrics/controls.py",
    "camcore/methods/gradient.py",
    "camcore/methods/grad_cam.py",
    "camcore/methods/grad_cam_plus_plus.py",
    "camcore/methods/score.py",
    "camcore/methods/score_cam.py",
)
# Fast and exact first: with -x a mutant stops at its first failing test (see ORDER_HOOK).
TESTS = (
    "tests/test_localization.py",
    "tests/test_metrics.py",
    "tests/test_safety_net_metrics.py",
    "tests/test_safety_net_weights.py",
    "tests/test_safety_net_gradient.py",
    "tests/test_safety_net_score.py",
    "tests/test_gradient_cams.py",
    "tests/test_score_cam.py",
)
# --all adds ROAD's imputation solver, the sanity check, the map helpers and every other
# method's weights (far longer than the default: most of ROAD's mutants are in the
# multigrid preconditioner, which changes how fast CG converges, rarely the result).
MUTATE_ALL = ("camcore/metrics/*.py", "camcore/maps.py", "camcore/methods/*.py")
TESTS_ALL = TESTS + ("tests/test_field_methods.py", "tests/test_sanity.py", "tests/test_safety_net_passes.py")
SKIP = ("*/__init__.py",)  # registries and re-exports: no logic to mutate
# Appended to the copy's conftest.py: run the selected test files in the order given, so
# that the cheap exact tests get the first chance to kill a mutant.
ORDER_HOOK = """

def pytest_collection_modifyitems(items):  # added by scripts/mutation_test.py
    order = {ORDER!r}
    items.sort(key=lambda item: order.index(item.path.name) if item.path.name in order else len(order))
"""


def copy_tree(work: Path, tests: list[str]) -> None:
    shutil.copytree(ROOT / "camcore", work / "camcore", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (work / "tests").mkdir()
    helpers = [p for p in (ROOT / "tests").glob("*.py") if not p.name.startswith("test_")]  # conftest, toy models
    for path in [*helpers, *(ROOT / name for name in tests)]:
        shutil.copy2(path, work / "tests" / path.name)
    with (work / "tests" / "conftest.py").open("a") as handle:
        handle.write(ORDER_HOOK.replace("{ORDER!r}", repr([Path(name).name for name in tests])))


def failing_tests(work: Path, python: str, tests: list[str], env: dict[str, str]) -> list[str]:
    """Node ids of the selected tests that fail on the unmutated copy."""
    report = work / "preflight.txt"
    subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *tests],
        cwd=work, env=env, stdout=report.open("w"), stderr=subprocess.STDOUT, check=False,
    )
    found = re.findall(r"^(?:FAILED|ERROR) (\S+)", report.read_text(), flags=re.MULTILINE)
    return sorted(set(found))


def write_config(work: Path, mutate: list[str], tests: list[str], deselect: list[str]) -> None:
    def toml_list(values) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    # -x: a mutant is caught at its first failing test, no need to run the others
    args = ["-p", "no:cacheprovider", "-q", "-x", "-W", "ignore::DeprecationWarning"]
    for node in deselect:
        args += ["--deselect", node]
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["camcore"]\n'
        f"only_mutate = {toml_list(mutate)}\n"
        f"do_not_mutate = {toml_list(SKIP)}\n"
        f"pytest_add_cli_args = {toml_list(args)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        "use_git_change_detection = false\n"
        # TensorFlow's thread pools do not survive a fork of a process that already ran
        # ops (the forked test deadlocks): fork each mutant from a server that has only
        # collected the tests.
        'process_isolation = "forkserver"\n'
        'forkserver_warmup = "collect"\n'
        "\n[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'markers = ["browser: real-browser tests"]\n'
    )


def mutmut(work: Path, python: str, env: dict[str, str], *args: str, log: Path | None = None) -> str:
    command = [python, "-m", "mutmut", *args]
    if log is None:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
        return done.stdout + done.stderr
    with log.open("w") as handle:
        subprocess.run(command, cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    return log.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel (default 2)")
    parser.add_argument("--all", action="store_true", help="the whole metrics package and every method (slow)")
    parser.add_argument("--mutate", nargs="+", default=None, help="glob patterns of the files to mutate")
    parser.add_argument("--tests", nargs="+", default=None, help="test files mutmut may run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (to run `mutmut browse` in it)")
    args = parser.parse_args(argv)

    python = sys.executable
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    work = Path(tempfile.mkdtemp(prefix="camstudio-mutmut-"))
    start = time.perf_counter()
    try:
        mutate = args.mutate or list(MUTATE_ALL if args.all else MUTATE)
        tests = [t for t in (args.tests or (TESTS_ALL if args.all else TESTS)) if (ROOT / t).is_file()]
        copy_tree(work, tests)
        print(f"copy: {work}\nmutating: {', '.join(mutate)}\ntests: {', '.join(tests)}")
        deselect = failing_tests(work, python, tests, env)
        if deselect:
            print("deselected (already failing without any mutation):\n  " + "\n  ".join(deselect))
        write_config(work, mutate, tests, deselect)
        log = work / "mutmut.log"
        output = mutmut(work, python, env, "run", "--max-children", str(args.max_children), log=log)
        mutmut(work, python, env, "export-cicd-stats")
        stats_file = work / "mutants" / "mutmut-cicd-stats.json"
        if not stats_file.is_file():
            print(output[-4000:])
            print("mutmut did not finish; see the log above")
            return 1
        stats = json.loads(stats_file.read_text())
        survivors = re.findall(r"^\s+(\S+): survived$", mutmut(work, python, env, "results"), flags=re.MULTILINE)
        # a mutant that hangs (timeout) or crashes the interpreter (segfault) is caught too
        caught = stats["killed"] + stats.get("timeout", 0) + stats.get("segfault", 0)
        tested = caught + stats["survived"] + stats.get("suspicious", 0)
        minutes = (time.perf_counter() - start) / 60
        print(f"\nmutants: {stats['total']} (no covering test: {stats.get('no_tests', 0)}, "
              f"skipped: {stats.get('skipped', 0)}), tested {tested} in {minutes:.1f} min")
        print(f"killed {stats['killed']}, timeout {stats.get('timeout', 0)}, crashed {stats.get('segfault', 0)}, "
              f"survived {stats['survived']}, suspicious {stats.get('suspicious', 0)}")
        print(f"mutation score: {caught / max(tested, 1):.1%} of tested mutants caught")
        for name in survivors:
            print("\n" + mutmut(work, python, env, "show", name).strip())
        return 0
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
