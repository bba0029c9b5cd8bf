"""auto precision decides by measuring: the probe's logic driven by injected timings (among
them the figures recorded on the three kinds of CPU this project runs on), its budget, the
verdict store (per process, on disk, keyed, measured once under concurrency), and the
Explainer's use of it (no flag: no probe)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from toy_models import small_convnet

import camcore
import camcore.autoprecision as auto
import camcore.precision as precision
from camcore.autoprecision import Fidelity, Verdict, VerdictStore, decide, fidelity_of, probe

FAITHFUL = Fidelity(relative_error=0.01, top1_agreement=1.0, topk_overlap=1.0)


class FakeClock:
    """A clock that only moves when a fake pass 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_runs(clock: FakeClock, fp32_per_pass: float, bf16_per_pass: float, bf16_error: float = 0.0,
              first_call_extra: float = 0.5, classes: int = 4):
    """fp32/bf16 runs that advance ``clock`` by a per-pass time (the first call of each also by
    ``first_call_extra``: tracing) and return scores; bf16's are off by ``bf16_error`` relative."""
    calls = {"fp32": [], "bf16": []}

    def make(name: str, per_pass: float):
        def run(i: int, batch: int) -> np.ndarray:
            clock.now += per_pass * batch + (first_call_extra if not calls[name] else 0.0)
            calls[name].append((i, batch))
            rows = np.arange(i * batch, (i + 1) * batch)
            scores = np.stack([np.linspace(3.0, 0.0, classes) + 0.01 * r for r in rows])
            if name == "bf16":
                scores = scores + bf16_error * np.abs(scores).max() * np.cos(np.arange(classes))
            return scores.astype(np.float32)

        return run

    return make("fp32", fp32_per_pass), make("bf16", bf16_per_pass), calls


# ------------------------------------------------------------------ decide / probe
@pytest.mark.parametrize(
    "case, fp32_ms, bf16_ms, expected",
    [
        # benchmarking.md / issue figures, VGG16 forward ms/image at batch 16
        ("avx512_bf16 without AMX, VGG16", 105.2, 192.8, "fp32"),
        ("avx512_bf16 without AMX, VGG16, second run", 124.2, 197.2, "fp32"),
        ("avx512_bf16 without AMX, ResNet50", 36.5, 65.5, "fp32"),
        ("AMX, VGG16 (oneDNN auto-mixed bf16)", 121.6, 32.2, "bf16"),
        ("AMX, VGG16 (mixed_bfloat16 copy)", 121.6, 19.2, "bf16"),
        ("AVX2 only, emulated bf16", 256.0, 256.0 * 3.8, "fp32"),
        ("demo model, AMX", 2.31, 2.40, "fp32"),
    ],
)
def test_recorded_timings_give_the_verdict_each_cpu_needs(case, fp32_ms, bf16_ms, expected):
    clock = FakeClock()
    fp32, bf16, _ = fake_runs(clock, fp32_ms / 1000, bf16_ms / 1000, bf16_error=0.01)
    verdict = probe(fp32, bf16, full_passes=512, clock=clock)
    assert verdict.precision == expected, (case, verdict)
    assert verdict.speedup == pytest.approx(fp32_ms / bf16_ms, rel=1e-6) or verdict.speedup is None
    if expected == "fp32" and bf16_ms > fp32_ms and verdict.speedup is not None:
        assert f"{bf16_ms / fp32_ms:.2f}× slower" in verdict.summary()


def test_faster_and_faithful_is_bf16_slower_is_fp32_unfaithful_is_fp32():
    assert decide(1.0, 0.5, FAITHFUL).precision == "bf16"
    assert decide(1.0, 1.5, FAITHFUL).precision == "fp32"
    # faster, but below the 1.3x that pays for the lost precision
    assert decide(1.0, 1.0 / 1.2, FAITHFUL).precision == "fp32"
    unfaithful = Fidelity(relative_error=0.2, top1_agreement=0.5, topk_overlap=1.0)
    verdict = decide(1.0, 0.2, unfaithful)
    assert verdict.precision == "fp32" and "not faithful" in verdict.reason and verdict.speedup == 5.0


def test_a_probe_with_unfaithful_bf16_scores_keeps_fp32():
    clock = FakeClock()
    fp32, bf16, _ = fake_runs(clock, 0.1, 0.02, bf16_error=0.3)
    verdict = probe(fp32, bf16, full_passes=512, clock=clock)
    assert verdict.precision == "fp32" and verdict.speedup == pytest.approx(5.0)
    assert verdict.fidelity is not None and not verdict.fidelity.faithful


def test_fidelity_figures():
    a = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    same = fidelity_of(a, a)
    assert same == Fidelity(0.0, 1.0, 1.0) and same.faithful
    swapped = fidelity_of(a, a[:, ::-1])
    assert swapped.top1_agreement == 0.0 and swapped.relative_error == pytest.approx(1.0)
    assert not fidelity_of(a, np.full_like(a, np.nan)).faithful
    with pytest.raises(ValueError):
        fidelity_of(a, a[:1])


def test_the_probe_stays_within_its_budget_of_a_full_score_cam():
    """VGG16-like: 512 channels, bf16 1.83x slower. The probe's passes (tracing excluded)
    must cost at most ~5 % of the 512 fp32 passes."""
    clock = FakeClock()
    fp32, bf16, calls = fake_runs(clock, 0.1052, 0.1928, first_call_extra=0.0)
    verdict = probe(fp32, bf16, full_passes=512, clock=clock)
    full = 512 * 0.1052
    assert verdict.precision == "fp32"
    assert verdict.probe_seconds <= 0.05 * full, (verdict.probe_seconds, calls)
    # the timed pairs interleave and run the same inputs at both precisions
    assert [c for c in calls["fp32"] if c[0] >= 2] == [c for c in calls["bf16"] if c[0] >= 2]


def test_a_clear_result_stops_after_one_timed_pair_and_a_close_one_repeats():
    clock = FakeClock()
    fp32, bf16, calls = fake_runs(clock, 0.1, 0.3)
    probe(fp32, bf16, full_passes=10_000, clock=clock)
    assert len([c for c in calls["bf16"] if c[0] >= 2]) == 1
    clock = FakeClock()
    fp32, bf16, calls = fake_runs(clock, 0.1, 0.08)
    probe(fp32, bf16, full_passes=10_000, clock=clock)
    assert len([c for c in calls["bf16"] if c[0] >= 2]) == auto.TIMED_REPEATS


def test_a_model_too_small_to_gain_keeps_fp32_without_running_bf16():
    clock = FakeClock()
    fp32, bf16, calls = fake_runs(clock, 0.0024, 0.0001, first_call_extra=0.0)  # demo-sized: 32 ch x 2.4 ms
    verdict = probe(fp32, bf16, full_passes=32, clock=clock)
    assert verdict.precision == "fp32" and "too little" in verdict.reason
    assert calls["bf16"] == []  # no bf16 copy built, nothing run


def test_the_timed_batch_grows_for_fast_passes_and_is_capped():
    clock = FakeClock()
    fp32, bf16, calls = fake_runs(clock, 0.002, 0.001, first_call_extra=0.0)
    probe(fp32, bf16, full_passes=5_000, max_batch=8, clock=clock)
    assert {batch for i, batch in calls["fp32"] if i >= 2} == {8}
    clock = FakeClock()
    fp32, bf16, calls = fake_runs(clock, 0.2, 0.4, first_call_extra=0.0)
    probe(fp32, bf16, full_passes=5_000, clock=clock)
    assert {batch for i, batch in calls["fp32"] if i >= 2} == {1}


# ------------------------------------------------------------------ the store
def _verdict(p: str = "fp32") -> Verdict:
    return Verdict(p, "test", speedup=0.5, fidelity=FAITHFUL, probe_seconds=0.1)


def test_store_measures_once_and_keeps_the_verdict_on_disk(tmp_path):
    path = tmp_path / "v.json"
    store = VerdictStore(path)
    measured = []
    verdict = store.get_or_measure("k1", lambda: measured.append(1) or _verdict("bf16"))
    assert store.get_or_measure("k1", lambda: measured.append(1) or _verdict("fp32")) is verdict
    assert measured == [1]
    # a restarted server reads it back, no measurement
    again = VerdictStore(path)
    assert again.get_or_measure("k1", lambda: pytest.fail("measured again")) == verdict
    # another key is measured
    assert again.get_or_measure("k2", lambda: _verdict("fp32")).precision == "fp32"
    assert set(json.loads(path.read_text())) == {"k1", "k2"}


def test_a_damaged_verdict_file_is_measured_again(tmp_path):
    path = tmp_path / "v.json"
    path.write_text("{not json")
    store = VerdictStore(path)
    assert store.get_or_measure("k", lambda: _verdict("bf16")).precision == "bf16"
    assert json.loads(path.read_text())["k"]["precision"] == "bf16"
    path.write_text(json.dumps({"k": {"precision": "fp8", "reason": "x"}}))
    assert VerdictStore(path).get_or_measure("k", lambda: _verdict("fp32")).precision == "fp32"


def test_concurrent_first_calls_measure_once():
    store = VerdictStore(None)
    started, release = threading.Event(), threading.Event()
    measured = []

    def measure():
        measured.append(1)
        started.set()
        release.wait(5)
        return _verdict("bf16")

    results = []
    threads = [threading.Thread(target=lambda: results.append(store.get_or_measure("k", measure))) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert started.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert measured == [1] and len(results) == 4 and all(r.precision == "bf16" for r in results)


def test_the_key_changes_with_machine_model_layer_and_shape():
    base = auto.verdict_key("m1", "conv", (16, 16, 3), machine="cpu A")
    assert auto.verdict_key("m1", "conv", (16, 16, 3), machine="cpu A") == base
    for other in (auto.verdict_key("m2", "conv", (16, 16, 3), machine="cpu A"),
                  auto.verdict_key("m1", "conv2", (16, 16, 3), machine="cpu A"),
                  auto.verdict_key("m1", "conv", (32, 32, 3), machine="cpu A"),
                  auto.verdict_key("m1", "conv", (16, 16, 3), machine="cpu B")):
        assert other != base
    assert '"flags"' in auto.machine_fingerprint() and '"tf"' in auto.machine_fingerprint()


def test_model_fingerprint_follows_architecture_and_weights():
    a = small_convnet(size=16, channels=6, classes=3, seed=2)
    b = small_convnet(size=16, channels=6, classes=3, seed=3)  # same architecture, other weights
    c = small_convnet(size=16, channels=8, classes=3, seed=2)
    assert auto.model_fingerprint(a) == auto.model_fingerprint(a)
    assert len({auto.model_fingerprint(m) for m in (a, b, c)}) == 3


def test_forced_verdict_from_the_environment():
    assert auto.forced_verdict({}) is None
    assert auto.forced_verdict({auto.FORCE_ENV: "bf16"}).precision == "bf16"
    with pytest.raises(ValueError, match=auto.FORCE_ENV):
        auto.forced_verdict({auto.FORCE_ENV: "fp16"})


# ------------------------------------------------------------------ the Explainer
@pytest.fixture(scope="module")
def convnet():
    return small_convnet(size=16, channels=6, classes=3, seed=2)


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)


def test_no_bf16_flag_means_fp32_at_once_and_no_probe(monkeypatch, convnet):
    monkeypatch.delenv(auto.FORCE_ENV, raising=False)
    monkeypatch.setattr(precision, "detect_bf16", lambda: precision.Bf16Support(False, "no bf16 flag here"))
    monkeypatch.setattr(auto, "probe", lambda *a, **k: pytest.fail("probed although the flags rule bf16 out"))
    explainer = camcore.Explainer(convnet, precision="auto", verdicts=VerdictStore(None))
    camcore_result = explainer.compute("score_cam", _x(), "conv2", 1)
    verdict = explainer.verdict(_x(), "conv2")
    assert verdict.precision == "fp32" and verdict.source == "flags" and "no bf16 flag here" in verdict.reason
    assert camcore_result.cam.shape == (16, 16)


def test_flags_never_rule_bf16_in_a_measurement_decides(monkeypatch, convnet):
    monkeypatch.delenv(auto.FORCE_ENV, raising=False)
    monkeypatch.setattr(precision, "detect_bf16", lambda: precision.Bf16Support(True, "cpu flags avx512_bf16"))
    store = VerdictStore(None)
    calls = []

    def slower(fp32, bf16, **kwargs):
        calls.append(kwargs)
        return Verdict("fp32", "bf16 measured 1.83× slower on this CPU", speedup=1 / 1.83, fidelity=FAITHFUL)

    monkeypatch.setattr(auto, "probe", slower)
    explainer = camcore.Explainer(convnet, precision="auto", verdicts=store)
    exact = camcore.Explainer(convnet, precision="fp32")
    a = explainer.compute("score_cam", _x(1), "conv2", 1)
    np.testing.assert_array_equal(a.cam, exact.compute("score_cam", _x(1), "conv2", 1).cam)
    assert explainer.precision == "fp32" and "1.83× slower" in explainer.precision_note
    # one probe for the layer, whatever runs next; another explainer of the model reads the store
    explainer.compute("ablation_cam", _x(2), "conv2", 1)
    camcore.Explainer(convnet, precision="auto", verdicts=store).compute("score_cam", _x(3), "conv2", 1)
    assert len(calls) == 1 and 0 < calls[0]["full_passes"] <= 6
    # another layer is a new key: measured again
    explainer.compute("score_cam", _x(1), "conv1", 1)
    assert len(calls) == 2

    monkeypatch.setattr(auto, "probe", lambda *a, **k: Verdict("bf16", "bf16 measured 6.30× faster", 6.3, FAITHFUL))
    fast = camcore.Explainer(convnet, precision="auto", verdicts=VerdictStore(None))
    fast.compute("score_cam", _x(1), "conv2", 1)
    assert fast.precision == "bf16" and fast.backend.bf16_model is not None


def test_the_real_probe_runs_on_a_model_and_reports_what_it_measured(monkeypatch, convnet):
    """The probe through the Explainer's own passes (tiny model: fp32 without a bf16 run)."""
    monkeypatch.delenv(auto.FORCE_ENV, raising=False)
    monkeypatch.setattr(precision, "detect_bf16", lambda: precision.Bf16Support(True, "test"))
    explainer = camcore.Explainer(convnet, precision="auto", verdicts=VerdictStore(None))
    verdict = explainer.verdict(_x(), "conv2")
    assert verdict.precision == "fp32" and verdict.source == "measured" and verdict.probe_seconds > 0
    assert explainer.backend.bf16_model is None  # too small to matter: no copy was built
    # with the worth-it floor lowered the bf16 side runs too, on the same inputs
    monkeypatch.setattr(auto, "MIN_WORTH_SECONDS", 0.0)
    measured = camcore.Explainer(convnet, precision="auto", verdicts=VerdictStore(None)).verdict(_x(), "conv1")
    assert measured.speedup is not None and measured.speedup > 0 and measured.fidelity.faithful


def test_forced_auto_runs_the_bf16_path_on_any_cpu(monkeypatch, convnet):
    monkeypatch.setenv(auto.FORCE_ENV, "bf16")
    explainer = camcore.Explainer(convnet, precision="auto")
    assert explainer.verdict(_x(), "conv2").source == "forced"
    cam = explainer.compute("score_cam", _x(), "conv2", 1).cam
    assert explainer.precision == "bf16" and explainer.backend.bf16_model is not None
    float32_cam = camcore.Explainer(convnet).compute("score_cam", _x(), "conv2", 1).cam
    assert camcore.metrics.map_correlation(cam, float32_cam) > 0.99
