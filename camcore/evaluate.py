"""``python -m camcore.evaluate``: the command line of the batch evaluation.

Only the entry point lives here; every name of the evaluation is in :mod:`camcore.evaluation`
(``from camcore.evaluation import evaluate, summarize, ...``).
"""

from __future__ import annotations

import os
import sys

from camcore.evaluation.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
