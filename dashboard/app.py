"""CAM Studio: the Streamlit entry point.

    cam-studio run                                        # 127.0.0.1:8501
    cam-studio run --server.port 8600 --server.address 0.0.0.0
    make run PORT=8600 ADDRESS=0.0.0.0                    # the same from a checkout
    streamlit run dashboard/app.py --server.port 8600     # after pip install -e .

The ``camcore`` and ``dashboard`` packages are imported from the installation (``pip
install -e .`` in a checkout), never from a path this script adds. The server settings
are in ``dashboard/.streamlit/config.toml``, which Streamlit reads next to this script.

Two pages: "Compare" (the CAM comparison grid, default) and "Dataset".
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

st.set_page_config(page_title="CAM Studio", page_icon="🔥", layout="wide")

from dashboard.state import freeze_long_lived_objects, keep_compiled_passes_across_reruns  # noqa: E402

# once per process: reruns no longer pay a full garbage collection, nor re-instantiate
# every compiled pass
freeze_long_lived_objects()
keep_compiled_passes_across_reruns()

# Less empty space above the title, so the whole grid fits a 1000-pixel-high screen.
# Panel captions stay on one line (ellipsis when a narrow column cuts them), so the rows of
# the grid stay aligned however many method columns there are; so do the column headers of
# the comparison with a second model (containers keyed "pair_<method>").
st.html(
    "<style>[data-testid=stMainBlockContainer]{padding-top:2.2rem;padding-bottom:2rem}"
    "[data-testid=stImageCaption]{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}"
    "[class*=st-key-pair_] [data-testid=stCaptionContainer]{white-space:nowrap;overflow:hidden;"
    "text-overflow:ellipsis}</style>"
)

navigation = st.navigation(
    [
        st.Page("views/compare.py", title="Compare", icon=":material/compare:", default=True),
        st.Page("views/dataset.py", title="Dataset", icon=":material/dataset:"),
    ]
)
navigation.run()
