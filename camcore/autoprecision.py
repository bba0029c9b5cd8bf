"""``precision="auto"``: bf16 only where it is measured to be faster *and* faithful, for
this model, layer and input shape, on this CPU.

CPU flags say an instruction exists, not that it is fast. Measured on this project's
machines (VGG16 forward, ms/image, batch 16, fp32 vs a bf16 copy):

* AMD EPYC, AVX2 only: no bf16 instruction; oneDNN emulates bf16, 3.8-8x *slower*;
* Xeon with ``avx512_bf16`` but no AMX: native ``avx512_core_bf16`` kernels, yet 105.2 vs
  192.8 (1.83x *slower*; ResNet50 1.79x slower);
* Xeon with AMX-BF16: 121.6 vs 19.2 (6.3x *faster*).

So flags may rule bf16 out (no bf16 flag: fp32 at once, nothing measured) but never in.
Where they allow it, the first forward-only pass of a (model, layer, input shape) runs
a small probe: a few of Score-CAM's masked passes of the current image at fp32 and at bf16,
interleaved, the minimum of repeats, bounded to about 5 % of a full Score-CAM
(:data:`BUDGET_FRACTION`). bf16 is chosen only if it is at least :data:`MIN_SPEEDUP` times
faster *and* its scores agree with fp32's (:class:`Fidelity`). The verdict is kept for the
process and in a JSON file (:class:`VerdictStore`), keyed by the CPU (model name and flags),
the TensorFlow version, a fingerprint of the model, the layer and the input shape, so a
restarted server does not measure again.

    >>> verdict = decide(fp32_seconds=0.1052, bf16_seconds=0.1928, fidelity=Fidelity(0.01, 1.0, 1.0))
    >>> verdict.precision, verdict.summary()
    ('fp32', 'fp32 — bf16 measured 1.83× slower on this CPU')
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

MIN_SPEEDUP = 1.3
"""bf16 must take at most 1/1.3 of fp32's time per pass: a smaller gain is within the noise
of these shared machines and does not pay for the lost mantissa bits."""
MAX_RELATIVE_ERROR = 0.05
"""Largest |bf16 - fp32| of the probe's class scores, relative to the largest |fp32| score
(bf16 keeps 8 mantissa bits: ~1e-2 was measured on VGG16's logits)."""
MIN_TOP1_AGREEMENT = 0.9
"""Share of the probe's inputs whose top class must be the same at both precisions."""
MIN_TOPK_OVERLAP = 0.9
BUDGET_FRACTION = 0.05
"""The probe stops adding repeats once it has spent this share of a full Score-CAM's
estimated time (every channel's masked pass at fp32)."""
MIN_BUDGET_SECONDS = 0.25
"""Models whose whole Score-CAM takes a few seconds may spend this much."""
MIN_SAMPLE_SECONDS = 0.02
MIN_WORTH_SECONDS = 1.0
"""A model whose full Score-CAM takes less than this at fp32 keeps fp32 without a probe."""
TIMED_REPEATS = 3

FORCE_ENV = "CAMSTUDIO_AUTO_PRECISION"
""""fp32" or "bf16": auto's verdict without measuring (tests run the bf16 path on any CPU)."""
CACHE_ENV = "CAMSTUDIO_CACHE_DIR"
"""Folder of the verdict file (default ``$XDG_CACHE_HOME/cam-studio`` or ``~/.cache/cam-studio``)."""
VERDICT_FILE = "precision-verdicts.json"

__all__ = [
    "BUDGET_FRACTION", "FORCE_ENV", "MIN_SPEEDUP", "Fidelity", "Verdict", "VerdictStore", "decide",
    "default_store", "fidelity_of", "forced_verdict", "machine_fingerprint", "model_fingerprint",
    "probe", "verdict_key",
]


@dataclass(frozen=True)
class Fidelity:
    """How closely the bf16 passes reproduce the fp32 ones on the probe's inputs."""

    relative_error: float  # max |bf16 - fp32| / max |fp32| over every score of the probe
    top1_agreement: float  # share of inputs whose top class is the same
    topk_overlap: float  # mean share of fp32's top-k classes also in bf16's top-k

    @property
    def faithful(self) -> bool:
        return (
            self.relative_error <= MAX_RELATIVE_ERROR
            and self.top1_agreement >= MIN_TOP1_AGREEMENT
            and self.topk_overlap >= MIN_TOPK_OVERLAP
        )


def fidelity_of(fp32_scores: np.ndarray, bf16_scores: np.ndarray, k: int = 5) -> Fidelity:
    """:class:`Fidelity` of two (n, classes) score arrays of the same inputs."""
    a = np.asarray(fp32_scores, np.float64)
    b = np.asarray(bf16_scores, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected two equal (n, classes) score arrays, got {a.shape} and {b.shape}")
    if not np.all(np.isfinite(b)):
        return Fidelity(float("inf"), 0.0, 0.0)
    scale = max(float(np.abs(a).max()), 1e-12)
    relative = float(np.abs(a - b).max()) / scale
    top1 = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    k = min(k, a.shape[1])
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)]))
    return Fidelity(relative, top1, overlap)


@dataclass(frozen=True)
class Verdict:
    """What auto chose and why. ``speedup`` = fp32 time / bf16 time per pass (above 1: bf16
    faster), None when nothing was measured; ``source``: "measured", "flags" (ruled out by
    the CPU's flags), "forced" (:data:`FORCE_ENV`), "fallback" (no bf16 copy of the model)."""

    precision: str
    reason: str
    speedup: float | None = None
    fidelity: Fidelity | None = None
    probe_seconds: float = 0.0
    source: str = "measured"

    def summary(self) -> str:
        """One line for headers and charts, e.g. "fp32 — bf16 measured 1.83× slower on this CPU"."""
        return f"{self.precision} — {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        fields = dict(data)
        if fields.get("fidelity") is not None:
            fields["fidelity"] = Fidelity(**fields["fidelity"])
        verdict = cls(**fields)
        if verdict.precision not in ("fp32", "bf16"):
            raise ValueError(f"bad precision {verdict.precision!r}")
        return verdict


def _ratio_text(speedup: float) -> str:
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def decide(fp32_seconds: float, bf16_seconds: float, fidelity: Fidelity, probe_seconds: float = 0.0) -> Verdict:
    """The verdict from per-pass times and the fidelity of the same passes: bf16 only if at
    least :data:`MIN_SPEEDUP` times faster *and* faithful, else fp32."""
    speedup = fp32_seconds / bf16_seconds if bf16_seconds > 0 else float("inf")
    measured = f"bf16 measured {_ratio_text(speedup)} on this CPU"
    if speedup < MIN_SPEEDUP:
        reason = measured if speedup < 1 else f"{measured}, below the {MIN_SPEEDUP}× that pays for it"
        return Verdict("fp32", reason, speedup, fidelity, probe_seconds)
    if not fidelity.faithful:
        return Verdict(
            "fp32",
            f"{measured}, but not faithful (score error {fidelity.relative_error:.1%}, "
            f"top-1 agreement {fidelity.top1_agreement:.0%})",
            speedup, fidelity, probe_seconds,
        )
    return Verdict("bf16", measured, speedup, fidelity, probe_seconds)


def forced_verdict(environ: Mapping[str, str] | None = None) -> Verdict | None:
    """Auto's verdict set by :data:`FORCE_ENV` ("fp32" or "bf16"), else None."""
    value = (os.environ if environ is None else environ).get(FORCE_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("fp32", "bf16"):
        raise ValueError(f"{FORCE_ENV} must be fp32 or bf16, got {value!r}")
    return Verdict(value, f"set by {FORCE_ENV}", source="forced")


# --------------------------------------------------------------------- the probe
Clock = Callable[[], float]
Run = Callable[[int, int], np.ndarray]
"""``run(i, batch)``: scores (batch, classes) of the i-th batch of ``batch`` masked inputs."""


def probe(
    fp32: Run,
    bf16: Run,
    *,
    full_passes: int,
    max_batch: int = 16,
    repeats: int = TIMED_REPEATS,
    clock: Clock = time.perf_counter,
) -> Verdict:
    """Time ``fp32`` against ``bf16`` on the same masked inputs, interleaved, and decide.

    1. Two fp32 inputs, the second timed. If a full Score-CAM (``full_passes`` of them) would
       take less than :data:`MIN_WORTH_SECONDS`, fp32 at once: no bf16 copy is built for a
       model where it could save nothing (measured on the demo models: bf16 2.40 vs fp32
       2.31 ms/image even with AMX).
    2. The same two inputs through the bf16 copy, untimed (its tracing and first kernels).
       The batch of the timed passes is chosen so that each takes at least
       :data:`MIN_SAMPLE_SECONDS` (a 3 ms pass alone is mostly per-call overhead), at most
       ``max_batch`` (the real passes' batch).
    3. Up to ``repeats`` timed pairs on new inputs; the minimum of each side is kept. The
       probe stops early once it has spent :data:`BUDGET_FRACTION` of a full Score-CAM
       (``full_passes`` fp32 passes), or once a pair leaves no doubt either way.

    Fidelity is judged on every input both precisions ran.
    """
    start = clock()
    fp32_scores = [fp32(0, 1)]
    begin = clock()
    fp32_scores.append(fp32(1, 1))
    one_pass = max(clock() - begin, 1e-6)
    if full_passes * one_pass < MIN_WORTH_SECONDS:
        return Verdict(
            "fp32",
            f"a full Score-CAM takes ~{full_passes * one_pass * 1000:.0f} ms here: too little for bf16 to "
            "matter (not measured)",
            probe_seconds=clock() - start,
        )
    bf16_scores = [bf16(0, 1), bf16(1, 1)]
    batch = int(min(max(np.ceil(MIN_SAMPLE_SECONDS / one_pass), 1), max_batch))
    budget = max(BUDGET_FRACTION * full_passes * one_pass, MIN_BUDGET_SECONDS)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for i in range(2, repeats + 2):
        for name, run, scores in (("fp32", fp32, fp32_scores), ("bf16", bf16, bf16_scores)):
            begin = clock()
            scores.append(run(i, batch))
            best[name] = min(best[name], (clock() - begin) / batch)
        speedup = best["fp32"] / best["bf16"] if best["bf16"] > 0 else float("inf")
        if clock() - start >= budget or speedup < 1 / MIN_SPEEDUP or speedup > 2 * MIN_SPEEDUP:
            break
    fidelity = fidelity_of(np.concatenate(fp32_scores), np.concatenate(bf16_scores))
    return decide(best["fp32"], best["bf16"], fidelity, probe_seconds=clock() - start)


# --------------------------------------------------------------------- the keys
def _cpu_identity(cpuinfo: str) -> tuple[str, list[str]]:
    model = "unknown"
    flags: list[str] = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "CPU part") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = sorted(f for f in value.split() if "bf16" in f or f.startswith(("amx", "avx512")))
    return model, flags


@functools.cache
def machine_fingerprint() -> str:
    """The CPU (model name, its bf16/AMX/AVX-512 flags), TensorFlow's version and the oneDNN
    settings: what a verdict holds for."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            model, flags = _cpu_identity(handle.read())
    except OSError:
        import platform

        model, flags = platform.processor() or platform.machine(), []
    import tensorflow as tf

    onednn = {k: os.environ.get(k, "") for k in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    return json.dumps({"cpu": model, "flags": flags, "tf": tf.__version__, "onednn": onednn}, sort_keys=True)


def model_fingerprint(model: Any) -> str:
    """A hash of the model's architecture, its weights' shapes and a corner of each weight:
    cheap on VGG16's 138M parameters, and different for another model or a retrained one."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        digest.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    except Exception:  # a config Keras cannot serialize: the layer list says enough
        digest.update(repr([(type(layer).__name__, layer.name) for layer in model.layers]).encode())
    for variable in model.weights:
        shape = tuple(variable.shape)
        digest.update(repr((variable.path, shape, str(variable.dtype))).encode())
        corner = tuple(slice(0, 2) for _ in shape)
        digest.update(np.asarray(variable.value[corner] if shape else variable.value, np.float32).tobytes())
    return digest.hexdigest()


def verdict_key(model_hash: str, layer: str, input_shape: tuple[int, ...], machine: str | None = None) -> str:
    """The key of a verdict: machine, model, layer, input shape."""
    machine = machine_fingerprint() if machine is None else machine
    return json.dumps({"machine": machine, "model": model_hash, "layer": layer, "shape": list(input_shape)},
                      sort_keys=True)


# --------------------------------------------------------------------- the store
class VerdictStore:
    """Verdicts by key: kept for the process and, with a ``path``, in a JSON file that a
    restarted server reads back. Thread-safe; concurrent first calls for one key measure
    once (the others wait for that measurement)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._verdicts: dict[str, Verdict] = {}
        self._loaded = False
        self._lock = threading.Lock()
        self._measuring: dict[str, threading.Lock] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None or not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            for key, value in data.items():
                self._verdicts.setdefault(key, Verdict.from_json(value))
        except (OSError, ValueError, TypeError):
            pass  # a damaged file is measured again and rewritten

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            data = {key: verdict.to_json() for key, verdict in self._verdicts.items() if verdict.source == "measured"}
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home: the verdict still holds for this process

    def lookup(self, key: str) -> Verdict | None:
        with self._lock:
            self._load()
            return self._verdicts.get(key)

    def get_or_measure(self, key: str, measure: Callable[[], Verdict]) -> Verdict:
        """The verdict of ``key``, measured by ``measure()`` the first time only."""
        with self._lock:
            self._load()
            found = self._verdicts.get(key)
            if found is not None:
                return found
            gate = self._measuring.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                found = self._verdicts.get(key)
            if found is not None:
                return found
            verdict = measure()
            with self._lock:
                self._verdicts[key] = verdict
                self._measuring.pop(key, None)
                self._save()
            return verdict


def default_path() -> Path:
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "cam-studio")
    return Path(folder) / VERDICT_FILE


_stores: dict[Path, VerdictStore] = {}
_stores_lock = threading.Lock()


def default_store() -> VerdictStore:
    """The process's store for :func:`default_path` (one per path, so explainers share it)."""
    path = default_path()
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = VerdictStore(path)
        return store


# --------------------------------------------------------------------- on a backend
class _NoLowPrecisionCopy(Exception):
    pass


def measure_backend(backend: Any, x: np.ndarray, layer: str, activations: np.ndarray, max_batch: int = 16) -> Verdict:
    """:func:`probe` on ``backend``'s own masked passes: the input ``x`` masked by its channels
    of ``layer`` in decreasing-std order (constant ones left out), at fp32 and bf16. A model
    whose bf16 copy cannot be built gets fp32 with the reason."""
    from camcore.passes.masked import plan_channels

    start = time.perf_counter()
    plan = plan_channels(activations)
    channels = plan.order[~plan.constant[plan.order]]
    channels = channels if channels.size else plan.order
    maps = np.moveaxis(activations, -1, 0)
    failure: list[str] = []

    def runner(precision: str) -> Run:
        def run(i: int, batch: int) -> np.ndarray:
            if precision != "fp32" and not failure:
                note = backend.prepare_precision(precision)  # the copy is built only if needed
                if note is not None:
                    failure.append(note)
            if failure and precision != "fp32":
                raise _NoLowPrecisionCopy
            picked = channels[np.arange(i * batch, (i + 1) * batch) % channels.size]
            return backend.masked_scores(x, layer, maps[picked], None, precision)

        return run

    try:
        verdict = probe(runner("fp32"), runner("bf16"), full_passes=int(channels.size), max_batch=max_batch)
    except _NoLowPrecisionCopy:
        return Verdict("fp32", f"no bf16 copy of this model: {failure[0]}", source="fallback")
    return replace(verdict, probe_seconds=time.perf_counter() - start)
