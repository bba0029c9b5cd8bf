import atexit
import contextlib
import os
import shutil
import tempfile

import pytest

# the `downloads` fixture (a page's download buttons as files) for the AppTest page tests
pytest_plugins = ["page_downloads"]

# camcore and dashboard are imported from the installed project (`pip install -e .`, done by `make test`).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# auto precision's measured verdicts go to a folder of this run (servers started by the tests
# inherit it), never to the user's ~/.cache: a test must not read what another machine measured.
# Removed when this process exits (each pytest process, xdist's workers too, makes its own: 538
# of them had piled up in /tmp by 2026-12-07).
_CACHE_DIR = tempfile.mkdtemp(prefix="camstudio-test-cache-")
os.environ["CAMSTUDIO_CACHE_DIR"] = _CACHE_DIR
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
# a developer's forced verdict must not change what the tests see
os.environ.pop("CAMSTUDIO_AUTO_PRECISION", None)


# `make test` runs two pytest-xdist workers with `--dist loadfile`, scheduled by the scheduler
# below: each test file is one unit of work, so a module's fixtures are built once, on one worker;
# the files that start a Ray cluster are one unit, so they run one after another (two clusters
# started at once on 2 cores starve each other's raylets); the browser files are one unit, so one
# worker starts the dashboard server they share (`dashboard_server` is per process: two units on
# two workers started two servers, each importing TensorFlow and computing the demo models' maps).
# The longest units go first, so that the two workers finish together instead of one waiting on a
# long file handed out last.
# (Not `--dist loadgroup` with xdist_group markers: xdist 3.8 groups by rewriting a node's
# `_nodeid`, which pytest 9 no longer reads, so every test became a unit of its own.)
_RAY_FILES = ("test_evaluate_ray.py", "test_ray_passes.py", "test_ray_lost_results.py")
_LONGEST_FIRST = ("browser", "ray", "test_hardening_evaluation.py", "test_hardening_memory.py",
                  "test_dataset_page.py", "test_evaluate_pair.py")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: "ray" for the Ray files, "browser" for the files
    that drive Chromium, else its file."""
    path = nodeid.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if name in _RAY_FILES:
        return "ray"
    return "browser" if name.startswith("test_browser") else path


def pytest_collection_modifyitems(config, items):
    rank = {unit: position for position, unit in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid).rsplit("/", 1)[-1], len(rank)))  # stable


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order, not most-tests-first
    return ByWorkUnit(config, log)


_STOP_RAY_CLUSTER = pytest.StashKey()


@pytest.fixture(scope="session")
def ray_cluster(request):
    """One head and one worker node, one CPU each, on 127.0.0.1 with token authentication, for
    every Ray test file: they are one unit of work (above), and the cluster stops after the
    last test of that unit (``pytest_runtest_teardown`` below), not at the end of the session,
    so it does not idle on the cores the rest of the suite needs."""
    from ray_cluster import local_cluster

    stack = contextlib.ExitStack()
    cluster = stack.enter_context(local_cluster(nodes=2, cpus=1))
    request.config.stash[_STOP_RAY_CLUSTER] = stack.close
    request.addfinalizer(stack.close)  # a second close does nothing
    return cluster


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    if work_unit(item.nodeid) == "ray" and (nextitem is None or work_unit(nextitem.nodeid) != "ray"):
        stop = item.config.stash.get(_STOP_RAY_CLUSTER, None)
        if stop is not None:
            stop()


@pytest.fixture(autouse=True, scope="session")
def pages_compiled_once():
    """AppTest runs compile each page once, as a server does, and their sessions start with
    the grid painted, as a browser reports it (tests/streamlit_harness.py)."""
    from streamlit_harness import compile_pages_once, sessions_with_grid_painted

    compile_pages_once()
    sessions_with_grid_painted()


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to fetch a file fails the test loudly."""
    import keras
    from keras.src.utils import file_utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    # keras.applications call file_utils.get_file through the module attribute
    monkeypatch.setattr(file_utils, "get_file", refuse)
    monkeypatch.setattr(keras.utils, "get_file", refuse)


@pytest.fixture(scope="session")
def dashboard_server():
    """One dashboard server (``streamlit run dashboard/app.py`` on a free port) for the
    browser tests: each opens its own browser sessions, so they share only the server's
    model caches, as real users do. Starting a server and compiling the demo models'
    passes took 8-10 s per test. Yields (URL, the server's TMPDIR): whatever the server
    leaves in its temporary folder is visible there."""
    import shutil
    import tempfile
    from pathlib import Path

    import browser_helpers as browser
    from browser_checks import require_browser

    from camcore.demos import list_demos

    require_browser()
    missing = {"vgg_defect", "resnet_defect"} - set(list_demos())
    if missing:
        pytest.fail(f"demo models missing from assets/models: {sorted(missing)} (run `make train-demos`)")
    server_tmp = Path(tempfile.mkdtemp(prefix="camstudio-server-tmp-"))
    try:
        with browser.serve(env={"TMPDIR": str(server_tmp)}) as url:
            yield url, server_tmp
    finally:
        shutil.rmtree(server_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def dashboard_url(dashboard_server) -> str:
    return dashboard_server[0]


@pytest.fixture(scope="session")
def demo_onnx_exports(tmp_path_factory):
    """Both demo models exported with Keras 3's ``model.export(..., format="onnx")`` (tf2onnx),
    once per test run: {name: path}."""
    import numpy as np

    import camcore

    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name in ("vgg_defect", "resnet_defect"):
        demo = camcore.load_demo(name)
        demo.model(np.zeros((1, *demo.input_size, demo.channels), np.float32))  # export needs a called model
        paths[name] = folder / f"{name}.onnx"
        demo.model.export(str(paths[name]), format="onnx", verbose=False)
    return paths
