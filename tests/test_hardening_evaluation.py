"""Evaluation faults: ``python -m camcore.evaluate`` killed with SIGKILL at 5 seeded points
and resumed, a corrupt image in the data set, an output that cannot be written.

The killed runs are real child processes of the command line on a DAGM-layout folder with
one corrupt image; after the fifth kill the same command finishes the set. Every image
must then be in the journal and the results exactly once, and the summary must equal
that of an uninterrupted run (timings aside).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from camcore import evaluation as ev

KILL_SEED = 13
KILLS = 5
N_IMAGES = 10
SIZE = 64
TIMING = ("seconds", "metric_seconds")


def _tiny_model():
    import keras

    keras.utils.set_random_seed(21)
    inputs = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    _tiny_model().save(path)
    return path


@pytest.fixture(scope="module")
def dagm_root(tmp_path_factory) -> tuple[Path, str]:
    """A DAGM-layout folder of N_IMAGES generated images, one of them corrupt; (root, its id)."""
    from camcore.dagm import write_dagm
    from camcore.synth import generate

    root = tmp_path_factory.mktemp("data") / "dagm"
    write_dagm(root, generate(N_IMAGES, seed=17, size=SIZE, defect_rate=0.5))
    items = ev.dagm_items(root)
    assert len(items) == N_IMAGES
    broken = items[3]
    Path(broken.path).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG signature and nothing else
    return root, broken.id


def _arguments(model_file: Path, root: Path, out: Path) -> list[str]:
    # --road: ~0.4 s per image here, so that seeded kill delays land inside the run
    return ["--model", str(model_file), "--preprocessing", "unit", "--data", str(root), "--methods",
            "grad_cam", "faster_score_cam", "--max-n", "3", "--steps", "4", "--road", "--workers", "1",
            "--out", str(out)]


def _command(arguments: list[str]) -> list[str]:
    return [sys.executable, "-m", "camcore.evaluate", *arguments]


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _finished(journal: Path) -> int:
    """Images recorded in the journal (complete lines after the header)."""
    if not journal.exists():
        return 0
    return max(journal.read_bytes().count(b"\n") - 1, 0)


def _journal_ids(journal: Path, kind: str = "rows") -> list[str]:
    """Ids of the journal's records of ``kind``: "rows" (evaluated) or "error" (unreadable)."""
    import json

    records = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    return [record["id"] for record in records if kind in record]


def _without_timings(table: pd.DataFrame) -> pd.DataFrame:
    dropped = [c for c in table.columns if c in TIMING or str(c).startswith("seconds")]
    return table.drop(columns=dropped)


def _sorted_rows(table: pd.DataFrame) -> pd.DataFrame:
    rows = _without_timings(table).sort_values(["image_id", "method"], na_position="first")
    return rows.reset_index(drop=True)


def test_kill_9_at_five_seeded_points_then_resume_gives_the_uninterrupted_result(model_file, dagm_root, tmp_path):
    root, broken = dagm_root
    reference_out = tmp_path / "reference.parquet"
    assert ev.main(_arguments(model_file, root, reference_out)) == 0
    reference = ev.read_results(reference_out)

    out = tmp_path / "killed.parquet"
    journal = ev.journal_path(out)
    rng = np.random.default_rng(KILL_SEED)
    # kill once the journal holds k images, then after a random part of an image's time:
    # before the first image, inside one, during a journal write
    points = sorted(int(k) for k in rng.choice(np.arange(0, N_IMAGES - 1), KILLS, replace=False))
    delays = rng.uniform(0.0, 0.4, KILLS)
    kills = []
    for k, delay in zip(points, delays):
        child = subprocess.Popen(_command(_arguments(model_file, root, out)), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=_env())
        deadline = time.monotonic() + 180
        while _finished(journal) < max(k, 0) or (k == 0 and not journal.exists()):
            assert child.poll() is None, f"the run ended by itself before kill point {k}"
            assert time.monotonic() < deadline, f"kill point {k} not reached"
            time.sleep(0.005)
        time.sleep(float(delay))
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
        data = journal.read_bytes()
        kills.append((k, _finished(journal), not data.endswith(b"\n")))
    assert _finished(journal) < N_IMAGES, kills  # the set was not finished before the resume

    done = subprocess.run(_command(_arguments(model_file, root, out)), capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the corrupt image is reported by name and skipped
    assert "1 image(s) could not be read and were skipped" in done.stdout and broken in done.stdout

    # each image evaluated exactly once; the unreadable one is retried by every run (by design:
    # it may have been fixed in between) and its last record is the one the results keep
    evaluated = _journal_ids(journal, "rows")
    assert Counter(evaluated) == Counter(item.id for item in ev.dagm_items(root) if item.id != broken), kills
    assert set(_journal_ids(journal, "error")) == {broken}
    resumed = ev.read_results(out)
    assert ev.errors(resumed)["image_id"].tolist() == [broken]
    per_image = ev.results_only(resumed).groupby(["image_id", "method"]).size()
    assert per_image.eq(1).all() and per_image.index.get_level_values(0).nunique() == N_IMAGES - 1

    pd.testing.assert_frame_equal(_sorted_rows(resumed), _sorted_rows(reference), check_exact=True)
    pd.testing.assert_frame_equal(_without_timings(ev.summarize(resumed)),
                                  _without_timings(ev.summarize(reference)), check_exact=True)
    print(f"\nkill points (journal images at the signal, torn last line): {kills}")


# ------------------------------------------------------------------ unwritable output
def _no_model_loading(monkeypatch):
    """The command line must refuse the output before loading the model or the data."""
    from camcore.evaluation import cli

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(cli, "load_model_spec", refuse)
    monkeypatch.setattr(cli, "open_data", refuse)


def test_an_unwritable_output_is_refused_before_any_work(model_file, dagm_root, tmp_path, monkeypatch, capsys):
    root, _ = dagm_root
    _no_model_loading(monkeypatch)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file, not a folder")
    a_folder = tmp_path / "results.csv"
    a_folder.mkdir()
    cases = {
        a_file / "results.csv": "it is a file, not a folder",
        a_folder: "it is a folder",
        Path("/proc/camstudio/results.parquet"): "",  # a read-only system folder
    }
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases[locked / "results.csv"] = "Permission denied"
    for out, reason in cases.items():
        start = time.perf_counter()
        assert ev.main(_arguments(model_file, root, out)) == 2, out
        message = capsys.readouterr().err
        named = out.parent if reason != "it is a folder" else out
        assert message.startswith(f"error: cannot write the results to {named}")
        assert reason in message, message
        assert "Traceback" not in message and time.perf_counter() - start < 5
        assert not ev.journal_path(out).exists()


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` at ``folder``: a real small disk (mounting needs CAP_SYS_ADMIN;
    yields False where that is not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_refused_before_any_work(model_file, dagm_root, tmp_path, monkeypatch, capsys):
    root, _ = dagm_root
    _no_model_loading(monkeypatch)
    full = tmp_path / "full"
    with _tmpfs(full, "256k") as mounted:
        if not mounted:
            pytest.skip("cannot mount a small tmpfs here (the run-time case below covers a full disk)")
        with open(full / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(bytes(4096))
        out = full / "results.parquet"
        assert ev.main(_arguments(model_file, root, out)) == 2
        message = capsys.readouterr().err
        assert message.startswith(f"error: cannot write the results to {full}: No space left on device"), message
        assert not ev.journal_path(out).exists()


def _small_file_limit(limit: int):
    def apply() -> None:
        # files may not grow past `limit` bytes: writes fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def test_a_disk_that_fills_up_during_the_run_stops_cleanly_and_the_run_resumes(model_file, dagm_root, tmp_path,
                                                                               capsys):
    """Room for the pre-flight probe (64 KiB) but not for the whole journal (~15 KB an image
    here): a 72 KiB tmpfs (or, where mounting is not allowed, a child process whose files may
    not grow past 66 KiB: EFBIG, as on a full disk). The run stops with a message saying what
    is saved and what to do; given room, the same command finishes every image once."""
    root, broken = dagm_root
    small = tmp_path / "small"
    with _tmpfs(small, "72k") as mounted:
        out = small / "results.csv"
        arguments = [*_arguments(model_file, root, out), "--steps", "40"]  # longer curves: ~15 KB an image
        if mounted:
            code, errors = ev.main(arguments), capsys.readouterr().err
            reason = "No space left on device"
        else:
            stopped = subprocess.run(_command(arguments), capture_output=True, text=True, env=_env(),
                                     timeout=300, preexec_fn=_small_file_limit(66 * 1024))
            code, errors, reason = stopped.returncode, stopped.stderr, "File too large"
        assert code == 2, errors[-2000:]
        last = errors.strip().splitlines()[-1]
        assert last.startswith(f"error: {reason}") and "make room and run the same command again" in last, last
        assert "Traceback" not in errors
        saved = _finished(ev.journal_path(out))
        assert 0 < saved < N_IMAGES

        if mounted:
            subprocess.run(["mount", "-o", "remount,size=4m", str(small)], check=True)
            assert ev.main(arguments) == 0
        else:
            finished = subprocess.run(_command(arguments), capture_output=True, text=True, env=_env(), timeout=300)
            assert finished.returncode == 0, finished.stderr[-2000:]
        assert Counter(_journal_ids(ev.journal_path(out))) == Counter(
            item.id for item in ev.dagm_items(root) if item.id != broken
        )
        assert ev.results_only(pd.read_csv(out)).groupby(["image_id", "method"]).size().eq(1).all()
