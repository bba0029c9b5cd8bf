"""CAM Studio: the Streamlit entry point.

    make run                                  # 127.0.0.1:8501
    make run PORT=8600 ADDRESS=0.0.0.0        # or any streamlit --server.* option
    streamlit run dashboard/app.py --server.port 8600

Two pages: "Compare" (the CAM comparison grid, default) and "Dataset".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

st.set_page_config(page_title="CAM Studio", page_icon="🔥", layout="wide")

# Less empty space above the title, so the whole grid fits a 1000-pixel-high screen.
st.html("<style>[data-testid=stMainBlockContainer]{padding-top:2.2rem;padding-bottom:2rem}</style>")

navigation = st.navigation(
    [
        st.Page("views/compare.py", title="Compare", icon=":material/compare:", default=True),
        st.Page("views/dataset.py", title="Dataset", icon=":material/dataset:"),
    ]
)
navigation.run()
