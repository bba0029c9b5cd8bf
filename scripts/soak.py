"""Soak: seeded random widget changes on the Compare page, through Streamlit's AppTest.

    python -m scripts.soak [--changes 300] [--seed 0] [--json out.json]

One session, ``--changes`` changes drawn from a seeded generator: the demo model, the
layer, the image (texture, sample, or an uploaded image), the class, the method set, max_N,
the threshold, the colormap and the overlay opacity - each to a value the widget offers at
that moment. After every change the page must have raised nothing and shown no error; at
the end it must still draw the full grid. Prints the counts by kind, the time per change
(p50 / p95 / max), the process RSS at the start and the end, its growth over the last
``min(1000, changes // 3)`` changes (the plateau check: a leak keeps growing there, bounded
caches have filled), and every problem; exit status 1 when there is one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
KINDS = ("model", "layer", "texture", "sample", "upload", "class", "methods", "max_n", "threshold", "colormap",
         "alpha")


def _change(at, kind: str, rng: np.random.Generator) -> str:
    """Apply one change of ``kind`` to a value the widget offers now; describe it."""
    from camcore.methods import METHODS
    from camcore.visualize import COLORMAPS, png_bytes

    if kind == "model":
        box = at.selectbox(key="demo_name")
        value = str(rng.choice(box.options))
        box.select(value)
        return f"model {value}"
    if kind == "layer":
        box = at.selectbox(key="layer")
        value = str(rng.choice(box.options)).split(" · ")[0]
        box.set_value(value)
        return f"layer {value}"
    if kind in ("texture", "sample"):
        if at.radio(key="image_source").value != "sample":
            at.radio(key="image_source").set_value("sample").run()
        if kind == "texture":
            value = str(rng.choice(at.selectbox(key="texture").options)).lower()
            at.selectbox(key="texture").select(value)
            return f"texture {value}"
        radio = at.radio(key="sample")
        value = str(rng.choice(list(radio.options)))
        # the radio shows labels ("clean", "scratch"); its values are the sample names
        index = list(radio.options).index(value)
        names = [info.name for info in _group(at)]
        radio.set_value(names[index])
        return f"sample {names[index]}"
    if kind == "upload":
        at.radio(key="image_source").set_value("upload").run()
        size = (int(rng.integers(48, 400)), int(rng.integers(48, 400)))
        gray = bool(rng.random() < 0.3)
        pixels = rng.integers(0, 256, size if gray else (*size, 3), dtype=np.uint8)
        name = f"soak_{int(rng.integers(1e9))}.png"
        at.file_uploader(key="image_file").upload(name, png_bytes(pixels), "image/png")
        return f"upload {name} {size}{' gray' if gray else ''}"
    if kind == "class":
        box = at.selectbox(key="class")
        value = int(rng.integers(0, len(box.options)))
        box.set_value(value)
        return f"class {value}"
    if kind == "methods":
        keys = list(METHODS)
        chosen = [k for k in keys if rng.random() < 0.4] or [str(rng.choice(keys))]
        at.button_group(key="methods").set_value(chosen)
        return f"methods {chosen}"
    if kind == "max_n":
        slider = at.slider(key="max_n")
        value = int(rng.integers(slider.min, slider.max + 1))
        slider.set_value(value)
        return f"max_N {value}"
    if kind == "threshold":
        value = round(float(rng.integers(0, 21)) * 0.05, 2)
        at.slider(key="threshold").set_value(value)
        return f"threshold {value}"
    if kind == "colormap":
        value = str(rng.choice(list(COLORMAPS)))
        at.selectbox(key="colormap").select(value)
        return f"colormap {value}"
    value = round(float(rng.integers(0, 21)) * 0.05, 2)
    at.slider(key="alpha").set_value(value)
    return f"opacity {value}"


def _group(at) -> list:
    from dashboard import state

    texture = at.selectbox(key="texture").value
    group = [info for info in state.sample_index() if info.texture == texture]
    return sorted(group, key=lambda info: not info.defective)


def _available(at, kind: str) -> bool:
    """Whether the widget of ``kind`` is on the page now."""
    try:
        if kind == "model":
            at.selectbox(key="demo_name")
        elif kind == "layer":
            at.selectbox(key="layer")
        elif kind == "class":
            at.selectbox(key="class")
        elif kind == "max_n":
            slider = at.slider(key="max_n")  # disabled (as for a user) without a max_N method
            return slider.max > slider.min and not slider.disabled
        elif kind in ("methods",):
            at.button_group(key="methods")
    except KeyError:
        return False
    return True


def grid_images(at) -> int:
    return sum(1 for image in at.main.image if image.captions and image.captions[0].strip())


def soak(changes: int = 300, seed: int = 0, log=print) -> dict:
    """Run the soak; returns its figures (``problems`` empty when everything held)."""
    from streamlit.testing.v1 import AppTest

    process = psutil.Process()
    rng = np.random.default_rng(seed)
    at = AppTest.from_file(APP, default_timeout=600).run()
    rss_start = process.memory_info().rss / 2**20
    problems: list[str] = []
    durations: list[float] = []
    counts: Counter = Counter()
    rss_by_change: dict[int, float] = {}
    for number in range(1, changes + 1):
        kind = str(rng.choice([k for k in KINDS if _available(at, k)]))
        start = time.perf_counter()
        what = _change(at, kind, rng)
        at.run()
        durations.append(time.perf_counter() - start)
        counts[kind] += 1
        raised = [e.value for e in at.exception]
        shown = [e.value for e in at.error]
        if raised or shown:
            problems.append(f"change {number} ({what}): exceptions {raised} errors {shown}")
        if number % 25 == 0:
            rss_by_change[number] = process.memory_info().rss / 2**20
        if number % 25 == 0 or raised or shown:
            log(f"{number:4d} {what:60.60s} {durations[-1]:6.2f} s, RSS {process.memory_info().rss / 2**20:.0f} MB"
                + (" PROBLEM" if raised or shown else ""))
    # back to a full default grid: the page still renders it
    at.button_group(key="methods").set_value(["grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam"])
    at.run()
    final = grid_images(at)
    if at.exception or final < 4 * 5:
        problems.append(f"the final page draws {final} grid images, exceptions {[e.value for e in at.exception]}")
    ordered = sorted(durations)
    tail = min(1000, changes // 3)
    rss_end = process.memory_info().rss / 2**20
    rss_tail_start = rss_by_change.get(changes - tail - (changes - tail) % 25, rss_start)
    return {
        "changes": changes, "seed": seed, "by_kind": dict(counts), "problems": problems,
        "seconds_p50": ordered[len(ordered) // 2], "seconds_p95": ordered[int(len(ordered) * 0.95) - 1],
        "seconds_max": ordered[-1], "total_s": sum(durations), "final_grid_images": final,
        "rss_start_mb": round(rss_start), "rss_end_mb": round(rss_end),
        "tail_changes": tail, "rss_tail_start_mb": round(rss_tail_start),
        "rss_tail_growth_pct": round(100 * (rss_end / rss_tail_start - 1), 2),
        "rss_tail_growth_windowed_pct": _windowed_growth(rss_by_change, changes - tail, changes),
        "rss_every_25_mb": {n: round(v) for n, v in rss_by_change.items()},
    }


def _windowed_growth(rss_by_change: dict[int, float], start: int, end: int, window: int = 250) -> float | None:
    """Growth between the median RSS of the tail's first ``window`` changes and of its last:
    adjacent samples swing by ±70 MB (the allocator returns memory in steps), so two single
    samples can show growth a plateau does not have, or hide some it has."""
    first = [v for n, v in rss_by_change.items() if start <= n < start + window]
    last = [v for n, v in rss_by_change.items() if end - window < n <= end]
    if not first or not last:
        return None
    return round(100 * (statistics.median(last) / statistics.median(first) - 1), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = soak(args.changes, args.seed)
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
