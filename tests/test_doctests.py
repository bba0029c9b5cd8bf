"""Every docstring example in ``camcore`` runs, against the bundled demo model: the examples
are the first code a newcomer copies, so they must be true."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import camcore

pytestmark = pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")


def _modules_with_examples() -> list[str]:
    names = ["camcore"]
    for info in pkgutil.walk_packages(camcore.__path__, "camcore."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and ">>>" in Path(spec.origin).read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(set(names))


MODULES = _modules_with_examples()


@pytest.fixture(scope="module")
def namespace(tmp_path_factory, demo_onnx_exports):
    """What the examples call ``model``, ``x``, ``image``, ``data``..., and a working folder
    holding the files they name (part1.png, mine.keras, vgg_defect.onnx)."""
    import shutil

    from camcore.samples import load_sample, load_sample_index
    from camcore.visualize import png_bytes

    folder = tmp_path_factory.mktemp("doctest")
    demo = camcore.load_demo("vgg_defect")
    defective = [info for info in load_sample_index() if info.defective]
    image, other = (load_sample(info)[0] for info in defective[:2])
    (folder / "part1.png").write_bytes(png_bytes(image))
    model_file = camcore.assets.assets_dir() / "models" / "vgg_defect.keras"
    shutil.copy(model_file, folder / "mine.keras")
    shutil.copy(demo_onnx_exports["vgg_defect"], folder / "vgg_defect.onnx")
    return folder, {
        "camcore": camcore, "np": np, "Path": Path, "model": demo.model, "x": demo.preprocess(image),
        "image": image, "uint8_image": image, "image_array": other, "images": [image, other],
        "data": model_file.read_bytes(),
    }


def test_the_examples_were_found():
    assert {"camcore.explainer", "camcore.autoprecision", "camcore.loading", "camcore.localize"} <= set(MODULES)
    assert len(MODULES) >= 20


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name, namespace, monkeypatch):
    folder, globs = namespace
    monkeypatch.chdir(folder)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [test for test in finder.find(module, name, globs={**vars(module), **globs}) if test.examples]
    assert tests, f"{name} has '>>>' in its source but no example was found"
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
    os.chdir(folder)  # the examples may have changed directory
