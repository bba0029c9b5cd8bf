"""Bad input everywhere: seeded fuzz of image and model bytes, then bad layers, classes,
max_N values and non-finite model outputs.

The fuzz runs in a child process (this file run as a script), one case after the other,
reporting each as a JSON line; the parent watches the clock and the child's exit code, so
a hang or a crash of a decoder (OpenCV, libpng, HDF5) is caught and named, never taken
for a pass. Every case must end in success or a ``ValueError`` with a readable message
within ``CASE_SECONDS``. ``CAMSTUDIO_FUZZ_CASES`` raises the number of mutations per base
file (the README's figures: 300).
"""

from __future__ import annotations

import io
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

# "Within seconds", per case. A model file declaring a weight tensor larger than the memory
# takes ~10 s to refuse: TensorFlow's allocator retries for 10 s before reporting the OOM.
CASE_SECONDS = {"images": 10.0, "models": 30.0, "hang": 2.0, "crash": 2.0}
DEFAULT_CASES = 12  # mutations per base file in `make test`
FUZZ_SEED = 1307
MAX_MESSAGE = 600


# ------------------------------------------------------------------ base files
def _base_images() -> dict[str, bytes]:
    """One small file per format and pixel layout a user may upload."""
    import cv2

    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (36, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (36, 40, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (36, 40, 3), dtype=np.uint16)

    def encode(ext: str, image: np.ndarray) -> bytes:
        ok, buffer = cv2.imencode(ext, image)
        assert ok, ext
        return buffer.tobytes()

    return {
        "gray.png": encode(".png", gray),
        "rgb.png": encode(".png", rgb),
        "rgba.png": encode(".png", rgba),
        "rgb16.png": encode(".png", deep),
        "rgb.jpg": encode(".jpg", rgb),
        "gray.jpg": encode(".jpg", gray),
        "rgb.bmp": encode(".bmp", rgb),
        "rgb.tif": encode(".tif", rgb),
        "rgba16.tif": encode(".tif", np.dstack([deep, deep[..., :1]])),
    }


def _tiny_classifier():
    """A model the dashboard loads without questions (its own Rescaling: preprocessing known)."""
    import keras

    keras.utils.set_random_seed(11)
    inputs = keras.Input((24, 24, 3), name="image")
    h = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inputs, outputs, name="tiny")


def saved_bytes(model, suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model{suffix}"
        model.save(path)
        return path.read_bytes()


def _base_models() -> dict[str, bytes]:
    model = _tiny_classifier()
    return {"tiny.keras": saved_bytes(model, ".keras"), "tiny.h5": saved_bytes(model, ".h5")}


# ------------------------------------------------------------------- mutations
def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _declare_dimensions(data: bytes, rng: np.random.Generator) -> bytes:
    """A header that declares another width × height (PNG with a valid CRC, so the
    decoder believes it; BMP's fields; other formats: bytes 16..24 overwritten)."""
    width, height = (int(v) for v in rng.choice([0, 1, 7, 8, 65535, 30000, 60000, 2**31 - 1], 2))
    if data.startswith(b"\x89PNG") and data[12:16] == b"IHDR":
        ihdr = struct.pack(">II", width, height) + data[24:29]
        return data[:8] + _png_chunk(b"IHDR", ihdr) + data[33:]
    if data.startswith(b"BM"):
        return data[:18] + struct.pack("<ii", width, height) + data[26:]
    return data[:16] + struct.pack(">II", width, height) + data[24:]


def _bytes_mutation(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One seeded byte-level mutation: bit flips, truncation, overwrite, insertion,
    deletion, a scrambled header, duplicated tail."""
    buffer = bytearray(data)
    size = len(buffer)
    kind = str(rng.choice(["flip", "truncate", "overwrite", "insert", "delete", "header", "duplicate"]))
    if kind == "flip":
        for position in rng.integers(0, size, int(rng.integers(1, 9))):
            buffer[int(position)] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncate":
        buffer = buffer[: int(rng.integers(0, size))]
    elif kind == "overwrite":
        start = int(rng.integers(0, size))
        run = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        buffer[start : start + len(run)] = run
    elif kind == "insert":
        start = int(rng.integers(0, size))
        buffer[start:start] = rng.integers(0, 256, int(rng.integers(1, 257)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        start = int(rng.integers(0, size))
        del buffer[start : start + int(rng.integers(1, 257))]
    elif kind == "header":
        end = min(64, size)
        for position in rng.integers(0, end, int(rng.integers(1, 6))):
            buffer[int(position)] = int(rng.integers(0, 256))
    else:
        start = int(rng.integers(0, size))
        buffer += buffer[start:]
    return kind, bytes(buffer)


def image_cases(n: int, seed: int = FUZZ_SEED) -> Iterator[tuple[str, str, bytes]]:
    """(case id, filename, bytes): ``n`` seeded mutations of each base image."""
    rng = np.random.default_rng(seed)
    for name, data in _base_images().items():
        yield f"{name}/original", name, data
        for i in range(n):
            if i % 6 == 5:
                kind, mutated = "dimensions", _declare_dimensions(data, rng)
            else:
                kind, mutated = _bytes_mutation(data, rng)
            yield f"{name}/{i}:{kind}", name, mutated


def _mutate_archive_member(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """A valid zip whose config.json or weights file is damaged, so the damage reaches
    Keras' own readers instead of stopping at the zip's checksums."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    target = "config.json" if rng.random() < 0.6 else next(m for m in members if m.endswith(".h5"))
    text = members[target]
    if target == "config.json" and rng.random() < 0.5:
        # a number of the configuration changed (units, filters, kernel size, shapes)
        import re

        numbers = list(re.finditer(rb"(?<![\w.])\d+(?![\w.])", text))
        found = numbers[int(rng.integers(0, len(numbers)))]
        value = str(int(rng.choice([-1, 0, 1, 2, 3, 64, 4096, 10**6, 10**9, 2**31 - 1, 2**31]))).encode()
        kind, mutated = f"config-number {found.group().decode()}->{value.decode()}", (
            text[: found.start()] + value + text[found.end() :]
        )
    else:
        kind, mutated = _bytes_mutation(text, rng)
        kind = f"{target}:{kind}"
    members[target] = mutated
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return kind, out.getvalue()


def model_cases(n: int, seed: int = FUZZ_SEED + 1) -> Iterator[tuple[str, str, bytes]]:
    """(case id, filename, bytes): ``n`` seeded mutations of a .keras and a .h5 file."""
    rng = np.random.default_rng(seed)
    for name, data in _base_models().items():
        yield f"{name}/original", name, data
        for i in range(n):
            if name.endswith(".keras") and i % 3 != 2:
                kind, mutated = _mutate_archive_member(data, rng)
            else:
                kind, mutated = _bytes_mutation(data, rng)
            yield f"{name}/{i}:{kind}", name, mutated


# ------------------------------------------------------------ the child process
def _try_image(filename: str, data: bytes) -> str:
    from camcore import read_image

    image = read_image(data)
    assert image.dtype == np.uint8 and image.ndim in (2, 3), (image.dtype, image.shape)
    return f"decoded {image.shape}"


def _try_model(filename: str, data: bytes) -> str:
    """The dashboard's path: load the upload, prepare the explainer, run the model and a CAM."""
    from camcore import Explainer, load_model

    loaded = load_model(data, filename=filename)
    explainer = Explainer(loaded.model)
    x = loaded.preprocess(np.full((24, 24, 3), 128, np.uint8))
    explainer.top_classes(x, loaded.model.output_shape[-1])
    cam = explainer.compute("grad_cam", x, loaded.layer).cam
    assert np.isfinite(cam).all()
    return f"loaded, CAM {cam.shape}"


def _stuck(filename: str, data: bytes) -> str:
    """For the harness's own test: the second case hangs, the third kills the process."""
    if data == b"2":
        time.sleep(3600)
    if data == b"3":
        os.abort()
    return "fine"


_KINDS: dict[str, tuple[Callable[[int], Iterator[tuple[str, str, bytes]]], Callable[[str, bytes], str]]] = {
    "images": (image_cases, _try_image),
    "models": (model_cases, _try_model),
    "hang": (lambda n: ((f"case {i}", "x", str(i).encode()) for i in range(1, 3)), _stuck),
    "crash": (lambda n: ((f"case {i}", "x", str(i).encode()) for i in (1, 3)), _stuck),
}


def _child(kind: str, n: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cases, attempt = _KINDS[kind]
    for case, filename, data in cases(n):
        print(json.dumps({"start": case}), flush=True)
        start = time.perf_counter()
        try:
            outcome, detail = "ok", attempt(filename, data)
        except ValueError as exc:
            outcome, detail = "ValueError", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            outcome, detail = type(exc).__name__, str(exc)[:2000]
        print(json.dumps({"case": case, "outcome": outcome, "detail": detail,
                          "seconds": time.perf_counter() - start}), flush=True)


def run_fuzz(kind: str, n: int) -> list[dict]:
    """Run the fuzz of ``kind`` ("images" or "models") in a child; the finished cases.
    Fails naming the case when the child hangs on it or dies on it."""
    case_seconds = CASE_SECONDS[kind]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    child = subprocess.Popen([sys.executable, __file__, kind, str(n)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line)
        lines.put(None)  # the child's output ended: it finished or died

    threading.Thread(target=read, daemon=True).start()
    results, current, startup = [], None, 60.0  # the first case pays for importing TensorFlow
    try:
        while True:
            try:
                line = lines.get(timeout=startup if current is None and not results else case_seconds)
            except queue.Empty:
                pytest.fail(f"{kind} fuzz: no answer within {case_seconds:.0f} s on case {current!r} (a hang)")
            if line is None:
                break
            record = json.loads(line)
            if "start" in record:
                current = record["start"]
            else:
                results.append(record)
                current = None
    finally:
        try:
            child.wait(10 if current is None else 0.1)  # a hung child is not waited for
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
    if child.returncode != 0:
        pytest.fail(f"{kind} fuzz: the process died (exit {child.returncode}) on case {current!r} (a crash)")
    return results


def readable(message: str) -> bool:
    """One plain sentence for a person: no traceback, no temporary path, not empty, not a wall."""
    return (
        0 < len(message.strip()) <= MAX_MESSAGE
        and "Traceback" not in message
        and "camcore-upload-" not in message
        and tempfile.gettempdir() + "/" not in message
        and "{{function_node" not in message  # TensorFlow's op names
        and "/io/opencv" not in message  # OpenCV's source paths
    )


def _check(kind: str, results: list[dict], expected: int) -> dict[str, int]:
    if os.environ.get("CAMSTUDIO_FUZZ_REPORT"):  # every case, for a closer look
        Path(os.environ["CAMSTUDIO_FUZZ_REPORT"] + f".{kind}.json").write_text(json.dumps(results, indent=1))
    assert len(results) == expected, f"{kind} fuzz: {len(results)} of {expected} cases reported"
    wrong = [r for r in results if r["outcome"] not in ("ok", "ValueError")]
    assert not wrong, f"{kind}: exceptions other than ValueError: " + json.dumps(wrong[:5], indent=1)
    unclear = [r for r in results if r["outcome"] == "ValueError" and not readable(r["detail"])]
    assert not unclear, f"{kind}: unreadable messages: " + json.dumps(unclear[:5], indent=1)
    slow = [r for r in results if r["seconds"] > CASE_SECONDS[kind]]
    assert not slow, f"{kind}: cases slower than {CASE_SECONDS[kind]} s: " + json.dumps(slow[:5], indent=1)
    originals = [r for r in results if r["case"].endswith("/original")]
    assert originals and all(r["outcome"] == "ok" for r in originals), originals
    counts = {"ok": 0, "ValueError": 0}
    for record in results:
        counts[record["outcome"]] += 1
    return counts


def fuzz_cases() -> int:
    return int(os.environ.get("CAMSTUDIO_FUZZ_CASES", DEFAULT_CASES))


# ------------------------------------------------------------------ fuzz tests
def test_mutated_images_decode_or_raise_a_readable_value_error():
    n = fuzz_cases()
    results = run_fuzz("images", n)
    counts = _check("images", results, len(_base_images()) * (n + 1))
    assert counts["ValueError"] > 0 and counts["ok"] > len(_base_images())  # both outcomes are exercised
    print(f"\nimage fuzz: {len(results)} cases, {counts}, slowest {max(r['seconds'] for r in results):.2f} s")


def test_mutated_model_files_load_or_raise_a_readable_value_error():
    n = fuzz_cases()
    results = run_fuzz("models", n)
    counts = _check("models", results, 2 * (n + 1))
    assert counts["ValueError"] > 0
    print(f"\nmodel fuzz: {len(results)} cases, {counts}, slowest {max(r['seconds'] for r in results):.2f} s")


def _png_header_only(width: int, height: int, depth: int = 16) -> bytes:
    """A PNG that declares width × height RGB pixels and carries only a few compressed rows:
    the header is what a decompression bomb lies about."""
    row = b"\x00" * (1 + width * 3 * depth // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(16)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))


def test_the_fuzz_harness_names_a_hanging_or_crashing_case():
    with pytest.raises(pytest.fail.Exception, match=r"no answer within 2 s on case 'case 2' \(a hang\)"):
        run_fuzz("hang", 0)
    with pytest.raises(pytest.fail.Exception, match=r"died \(exit -6\) on case 'case 3' \(a crash\)"):
        run_fuzz("crash", 0)


def test_a_decompression_bomb_is_refused_from_its_header():
    """A 20000 × 20000 16-bit RGB PNG compresses to ~2 MB but decodes to 2.4 GB; before this
    check reading one took two minutes and 11 GB of RAM. Refused before any pixel is decoded."""
    from camcore import read_image
    from camcore.preprocess import MAX_IMAGE_PIXELS

    for width, height, declared in ((20000, 20000, r"over \d+ megapixels"), (8000, 6000, "8000×6000 pixels")):
        start = time.perf_counter()
        with pytest.raises(ValueError, match=rf"image is too large \({declared}; at most 40 megapixels\)"):
            read_image(_png_header_only(width, height))
        assert time.perf_counter() - start < 1.0
    assert 6000 * 6000 <= MAX_IMAGE_PIXELS  # just below the limit: decoded (this one is truncated)
    with pytest.raises(ValueError, match="could not decode"):
        read_image(_png_header_only(6000, 6000, 8))


# --------------------------------------------------------------- through the UI
def test_a_sample_of_fuzzed_files_through_the_ui_shows_errors_not_tracebacks():
    from camcore.demos import list_demos

    assert "vgg_defect" in list_demos(), (
        "the shipped demo model vgg_defect is missing (the models are part of the repository)"
    )
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    from camcore import read_image

    images = list(image_cases(6, seed=FUZZ_SEED + 5))
    bad_images = []
    for case, name, data in images:
        try:
            read_image(data)
        except ValueError as exc:
            bad_images.append((case, name, data, str(exc)))
    assert len(bad_images) >= 4
    at = AppTest.from_file(app, default_timeout=120).run()
    at.radio(key="image_source").set_value("upload").run()
    for case, name, data, message in bad_images[::3][:4]:
        at.file_uploader(key="image_file").upload(name, data, "application/octet-stream").run()
        assert not at.exception, (case, [e.value for e in at.exception])
        shown = [e.value for e in at.error]
        assert any(message in text and name in text for text in shown), (case, message, shown)
        assert not at.get("plotly_chart")  # no grid for an unreadable image

    at.radio(key="model_source").set_value("upload").run()
    checked = 0
    for case, name, data in model_cases(4, seed=FUZZ_SEED + 6):
        if case.endswith("/original"):
            continue
        at.file_uploader(key="model_file").upload(name, data, "application/octet-stream").run()
        assert not at.exception, (case, [e.value for e in at.exception])
        assert all(readable(e.value) for e in at.error), (case, [e.value for e in at.error])
        checked += 1
    assert checked == 8


# ------------------------------------------------ layers, classes, max_N, NaN/inf
@pytest.fixture(scope="module")
def tiny():
    from camcore import Explainer

    model = _tiny_classifier()
    x = np.random.default_rng(0).random((1, 24, 24, 3)).astype(np.float32) * 255
    return Explainer(model), x


def test_layers_without_a_spatial_map_are_refused_by_name(tiny):
    explainer, x = tiny
    with pytest.raises(ValueError, match=r"layer 'gap' has a 1×1 map|layer 'gap' has output shape .*no spatial map"):
        explainer.compute("grad_cam", x, "gap")
    with pytest.raises(ValueError, match=r"layer 'predictions' .*no spatial map"):
        explainer.compute("score_cam", x, "predictions")
    with pytest.raises(
        ValueError, match=r"layer 'nope' not found in model 'tiny'; layers with spatial maps include: .*conv"
    ):
        explainer.compute("grad_cam", x, "nope")
    with pytest.raises(TypeError, match="layer must be"):
        explainer.compute("grad_cam", x, [])


@pytest.mark.parametrize("index", [3, -1, 10**9])
def test_class_indices_out_of_range_name_the_range(tiny, index):
    explainer, x = tiny
    with pytest.raises(ValueError, match=rf"class_index {index} out of range: the model has 3 classes \(0\.\.2\)"):
        explainer.compute("grad_cam", x, "conv", index)


def test_class_index_of_the_wrong_type_says_so(tiny):
    explainer, x = tiny
    for bad in (1.0, True, "1"):
        with pytest.raises(TypeError, match="class_index must be an int"):
            explainer.compute("grad_cam", x, "conv", bad)


def test_max_n_zero_is_refused_and_more_than_the_channels_is_clamped(tiny):
    explainer, x = tiny
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"max_n must be >= 1, got {bad}"):
            explainer.compute("faster_score_cam", x, "conv", 0, max_n=bad)
    with pytest.raises(TypeError, match="max_n must be an int"):
        explainer.compute("faster_score_cam", x, "conv", 0, max_n=2.5)
    wide = explainer.compute("faster_score_cam", x, "conv", 0, max_n=10_000)
    full = explainer.compute("score_cam", x, "conv", 0)
    assert wide.max_n == 6  # the layer's channel count, and said so in the result
    np.testing.assert_allclose(wide.cam, full.cam, atol=1e-6)


def _poisoned(value: float):
    """The tiny classifier whose output layer's bias is ``value`` (NaN or ±inf), so every
    class score it gives is NaN or infinite."""
    model = _tiny_classifier()
    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, np.full_like(bias, value)])
    return model


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_model_outputs_give_a_clear_message_for_every_method(value):
    from camcore import METHODS, Explainer

    explainer = Explainer(_poisoned(value))
    x = np.full((1, 24, 24, 3), 200.0, np.float32)
    with pytest.raises(ValueError, match="model's output .* NaN or infinite"):
        explainer.top_classes(x, 3)
    for method in METHODS:
        fresh = Explainer(explainer.model)  # nothing cached: each method meets the scores itself
        with pytest.raises(ValueError, match="model's output .* NaN or infinite"):
            fresh.compute(method, x, "conv", 0, max_n=2)


def test_a_model_with_nan_output_shows_a_clear_error_in_the_ui():
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.session_state["model_source"] = "upload"
    at.run()
    at.file_uploader(key="model_file").upload("nan.keras", saved_bytes(_poisoned(np.nan), ".keras"),
                                             "application/octet-stream").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [e.value for e in at.error]
    assert any("Could not run the model" in e and "NaN or infinite" in e for e in shown), shown
    assert not at.get("plotly_chart")


def test_out_of_range_widget_state_is_reset_not_crashed():
    """A session whose remembered class, max_N or layer no longer exist (another model,
    another layer) gets valid defaults."""
    from camcore.demos import list_demos

    assert "vgg_defect" in list_demos(), (
        "the shipped demo model vgg_defect is missing (the models are part of the repository)"
    )
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    for key, value in {"max_n": 0, "class": 99, "layer": "no_such_layer", "threshold": 0.5,
                       "methods": ["faster_score_cam"]}.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert 1 <= at.slider(key="max_n").value <= at.slider(key="max_n").max
    assert at.selectbox(key="class").value in (0, 1)
    assert not at.error
    at.session_state["max_n"] = 10**6
    at.run()
    assert not at.exception and at.slider(key="max_n").value <= at.slider(key="max_n").max


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
