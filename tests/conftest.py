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
