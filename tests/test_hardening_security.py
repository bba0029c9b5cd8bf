"""Security: uploads never land on disk for longer than one load, no widget reaches a server
path, safe mode refuses code in model files and says what to do, and the server listens
on 127.0.0.1 unless told otherwise.

(The Dataset page's uploaded data sets have their own per-session folder, removed with the
session: ``tests/test_archives.py``. The browser load test checks a real server's temporary
folder after uploads: ``tests/test_browser_load.py``.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

from camcore.models import load_model_bytes

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")


def _tiny(extra_layer=None):
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    if extra_layer is not None:
        h = extra_layer(h)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    return keras.Model(inputs, outputs, name="tiny")


def _saved(model, folder: Path, suffix: str) -> Path:
    path = folder / f"model{suffix}"
    model.save(path)
    return path


# -------------------------------------------------------------------- uploads
class _TemporaryFolders:
    """Records where Keras is asked to read a model from, and whether that folder still
    exists once the loader has returned."""

    def __init__(self, monkeypatch) -> None:
        import keras

        self.read_from: list[Path] = []
        real = keras.models.load_model

        def spy(path, *args, **kwargs):
            self.read_from.append(Path(path))
            assert Path(path).is_file()  # the bytes are there while Keras reads them
            return real(path, *args, **kwargs)

        monkeypatch.setattr(keras.models, "load_model", spy)


def test_an_uploaded_model_is_read_from_a_private_temporary_folder_that_is_removed(tmp_path, monkeypatch):
    folders = _TemporaryFolders(monkeypatch)
    import io
    import zipfile

    good = _saved(_tiny(), tmp_path, ".keras").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a sound archive that Keras cannot read
        archive.writestr("config.json", "{not json")
    damaged = buffer.getvalue()
    load_model_bytes(good, "good.keras")
    with pytest.raises(ValueError):
        load_model_bytes(damaged, "damaged.keras")
    assert len(folders.read_from) == 2
    for path in folders.read_from:
        assert path.parent.name.startswith("camcore-upload-")
        assert path.parent.parent == Path(tempfile.gettempdir())
        assert not path.parent.exists()  # removed after a success and after a failure
        assert "good" not in path.name and "damaged" not in path.name  # the user's name is never a path


def test_the_compare_page_keeps_uploads_in_memory(tmp_path, monkeypatch):
    """A model and an image uploaded through the page leave nothing in the temporary folder
    (every temporary file of this process goes to an empty folder watched here)."""
    from streamlit.testing.v1 import AppTest

    from camcore.visualize import png_bytes

    model = _saved(_tiny(), tmp_path, ".keras").read_bytes()  # saving uses temporary files itself
    image = png_bytes(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    seen: set[str] = set()
    watching = threading.Event()

    def watch() -> None:  # what appears there while the page loads the upload
        while not watching.is_set():
            seen.update(os.listdir(private))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["model_source"] = "upload"
        at.run()
        at.file_uploader(key="model_file").upload("mine.keras", model, "application/octet-stream").run()
        at.radio(key="image_source").set_value("upload").run()
        at.file_uploader(key="image_file").upload("part.png", image, "image/png").run()
    finally:
        watching.set()
        watcher.join(5)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("mine.keras" in m.value and "part.png" in m.value for m in at.main.markdown)
    assert all(name.startswith("camcore-upload-") for name in seen), seen  # only the loader's folder
    assert os.listdir(private) == []  # and it is gone


# ---------------------------------------------------------------- server paths
_WATCHED: list[str] = []  # sentinel strings: any file event naming one is recorded
_EVENTS: list[tuple[str, str]] = []


def _audit(event: str, args: tuple) -> None:
    if _WATCHED and event in ("open", "os.listdir", "os.scandir", "os.remove", "os.rename", "shutil.rmtree",
                              "os.mkdir", "glob.glob"):
        text = " ".join(str(a) for a in args)
        if any(sentinel in text for sentinel in _WATCHED):
            _EVENTS.append((event, text))


@pytest.fixture(scope="module")
def audited():
    sys.addaudithook(_audit)  # cannot be removed: it only records while _WATCHED is set
    return _EVENTS


def test_no_widget_takes_a_server_path(tmp_path, audited):
    """Hostile names and values everywhere a browser can put text - upload file names, the
    URL's query parameters, a results file's source and path columns, a model key naming a
    file - never make the server open, list or write that path; and the pages have no
    free-text field at all (any that appears must be reviewed here)."""
    from streamlit.testing.v1 import AppTest

    from camcore.demos import list_demos

    assert "vgg_defect" in list_demos(), (
        "the shipped demo model vgg_defect is missing (the models are part of the repository)"
    )
    secret = tmp_path / "secret_sentinel"
    secret.mkdir()
    planted = _saved(_tiny(), secret, ".keras")
    hostile = [str(secret), "../../secret_sentinel", "/etc/passwd_sentinel"]
    _WATCHED[:] = ["secret_sentinel", "passwd_sentinel"]
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["texture"] = hostile[1]
        at.query_params["sample"] = hostile[0]
        at.session_state["open_in_compare"] = {
            "name": hostile[0], "image": np.zeros((32, 32), np.uint8), "mask": None,
            "model": f"file:{planted}", "layer": None,
        }
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("unknown model" in e.value for e in at.error)  # the file key is refused, by name only
        at.radio(key="model_source").set_value("upload").run()
        at.file_uploader(key="model_file").upload(f"{secret}/../{planted.name}", b"garbage",
                                                  "application/octet-stream").run()
        assert not at.exception and any("Could not load the model" in e.value for e in at.error)
        at.radio(key="model_source").set_value("demo").run()
        at.radio(key="image_source").set_value("upload").run()
        at.file_uploader(key="image_file").upload("/etc/passwd_sentinel.png", b"root:x:0:0", "image/png").run()
        assert not at.exception and any("Could not read" in e.value for e in at.error)
        free_text = [w for w in (*at.text_input, *at.text_area, *at.chat_input)]
        assert not free_text, [getattr(w, "label", w) for w in free_text]

        dataset = AppTest.from_file(APP, default_timeout=120)
        dataset.switch_page("views/dataset.py").run()
        assert not dataset.exception, [e.value for e in dataset.exception]
        free_text = [w for w in (*dataset.text_input, *dataset.text_area, *dataset.chat_input)]
        assert not free_text, [getattr(w, "label", w) for w in free_text]
    finally:
        _WATCHED.clear()
    assert not audited, audited[:5]
    assert sorted(p.name for p in secret.iterdir()) == [planted.name]


def test_a_results_file_cannot_point_the_server_at_a_folder(tmp_path):
    """A results file's ``source`` is a DAGM folder for rows of the command line: opening
    its image is refused outside the configured data folder, by the library itself."""
    from camcore import evaluation as ev

    with pytest.raises(PermissionError, match="outside the configured data folder"):
        ev.open_result_image("/etc", "passwd", 0, allowed_roots=[tmp_path])
    with pytest.raises(PermissionError, match="outside the configured data folder"):
        ev.open_result_image(str(tmp_path / ".." / ".."), "x.png", 0, allowed_roots=[tmp_path])
    with pytest.raises(PermissionError):
        ev.open_result_image(str(tmp_path), "x.png", 0, allowed_roots=[])


# ------------------------------------------------------------------- safe mode
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_safe_mode_refuses_a_lambda_layer_without_running_it_and_says_what_to_do(tmp_path, suffix):
    import keras

    marker = tmp_path / "the_lambda_ran"

    # a lambda travels as bytecode in the file; its side effect anyone can see: a file appears
    # (the path is a constant of its code: Keras cannot restore a lambda's default arguments)
    touch = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307
    path = _saved(_tiny(keras.layers.Lambda(touch, name="sneaky")), tmp_path, suffix)
    marker.unlink()  # building the model ran it once, here, on purpose
    with pytest.raises(ValueError) as refused:
        load_model_bytes(path.read_bytes(), f"upload{suffix}")
    message = str(refused.value)
    assert "Lambda layer or custom code" in message and "safe mode" in message  # why
    assert "re-save the model without Lambda layers" in message  # what to do
    assert f"upload{suffix}" in message and str(tmp_path) not in message
    assert not marker.exists()  # its code never ran
    # the control: the same file loaded without safe mode runs the code
    keras.models.load_model(path, compile=False, safe_mode=False)
    assert marker.exists()


def test_safe_mode_refusal_reaches_the_page_as_a_message(tmp_path):
    import keras
    from streamlit.testing.v1 import AppTest

    path = _saved(_tiny(keras.layers.Lambda(lambda t: t * 2.0, name="double")), tmp_path, ".keras")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "upload"
    at.run()
    at.file_uploader(key="model_file").upload("lambda.keras", path.read_bytes(), "application/octet-stream").run()
    assert not at.exception
    shown = [e.value for e in at.error]
    assert any("re-save the model without Lambda layers" in e and "lambda.keras" in e for e in shown), shown


# --------------------------------------------------------------------- binding
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(command: list[str], port: int, cwd: Path):
    log = tempfile.TemporaryFile()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (log.seek(0), log.read().decode(errors="replace"))[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _listening(process: subprocess.Popen, port: int) -> set[str]:
    """Local addresses the server (or a child of it) listens on at ``port``."""
    addresses = set()
    for proc in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
        for connection in proc.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                addresses.add(connection.laddr.ip)
    return addresses


def test_the_server_listens_on_localhost_unless_told_otherwise(tmp_path):
    script = Path(sys.executable).parent / "cam-studio"
    launchers = {
        # the documented commands, with only a port: the address comes from the defaults
        "cam-studio run": [str(script), "run"] if script.is_file() else [sys.executable, "-m", "dashboard.cli", "run"],
        # plain streamlit from another folder: dashboard/.streamlit/config.toml still applies
        "streamlit run": [sys.executable, "-m", "streamlit", "run", APP],
    }
    for name, command in launchers.items():
        port = _free_port()
        with _server([*command, "--server.port", str(port), "--server.headless", "true"], port, tmp_path) as server:
            assert _listening(server, port) == {"127.0.0.1"}, name
    port = _free_port()  # told otherwise: all interfaces (the check sees a non-local address)
    told = [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port), "--server.address", "0.0.0.0",
            "--server.headless", "true"]
    with _server(told, port, tmp_path) as server:
        assert _listening(server, port) & {"0.0.0.0", "::"}
