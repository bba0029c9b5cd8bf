import os

import pytest

# camcore and dashboard are imported from the installed project (`pip install -e .`, done by `make test`).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
def dashboard_url():
    """One dashboard server (``streamlit run dashboard/app.py`` on a free port) for the
    browser tests that need no special server: each opens its own browser sessions, so
    they share only the server's model caches, as real users do. Starting a server and
    compiling the demo model's passes took 8-10 s per test."""
    import browser_helpers as browser
    from browser_checks import require_browser

    from camcore.demos import list_demos

    require_browser()
    missing = {"vgg_defect", "resnet_defect"} - set(list_demos())
    if missing:
        pytest.fail(f"demo models missing from assets/models: {sorted(missing)} (run `make train-demos`)")
    with browser.serve() as url:
        yield url
