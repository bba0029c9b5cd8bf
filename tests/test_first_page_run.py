"""The warm-up of ``cam-studio run`` pays what a process's first page run paid once: the
page's modules, Streamlit's emoji catalog, Python's map from loaded modules to their files
(built at the first call-stack walk, which Streamlit does at its first element). Measured
on 2026-12-07: that first run took 1.17 s against 0.26 s for the runs after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import gc, sys, time, inspect
from dashboard import state, warmup
state.freeze_long_lived_objects()  # TensorFlow, as the warm-up's first step
# every rerun ends in a full collection: the heavy libraries a page run uses must all be
# frozen by now, leaving the collector a small remainder (a freeze before TensorFlow's import
# once left it 240k objects, 0.15-0.44 s with the GIL held after every rerun)
import tensorflow, keras, plotly.graph_objects, pandas, pyarrow, camcore.backends.keras
frozen, tracked = gc.get_freeze_count(), len(gc.get_objects())
assert frozen > 300_000 and tracked < frozen / 10, (frozen, tracked)
start = time.perf_counter()
warmup.prepay_first_page_run()
prepaid = time.perf_counter() - start
page = {"dashboard.components.analysis", "dashboard.components.pair", "dashboard.components.sidebar"}
assert page <= set(sys.modules), page - set(sys.modules)
assert "streamlit.emojis" in sys.modules
start = time.perf_counter()
inspect.stack()  # what Streamlit's first element does
print(prepaid, time.perf_counter() - start)
"""


def test_the_warm_up_leaves_a_cheap_first_stack_walk_to_the_page() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    prepaid, walk = map(float, done.stdout.split()[-2:])
    # with TensorFlow loaded the first walk maps thousands of modules (~0.5 s); later walks ~10 ms
    assert walk < prepaid / 5, (prepaid, walk)
