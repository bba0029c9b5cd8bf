"""``python -m camcore.evaluate``: batch evaluation of CAM methods (see :mod:`camcore.evaluation`).

The code lives in the :mod:`camcore.evaluation` package; this module keeps the command
and the ``camcore.evaluate.X`` names that scripts and the dashboard use.
"""

from __future__ import annotations

import os
import sys

from camcore.dagm import DagmFormatError
from camcore.evaluation import *  # noqa: F403 - the public names, re-exported
from camcore.evaluation import __all__ as _evaluation_names
from camcore.evaluation.cli import main

__all__ = [*_evaluation_names, "DagmFormatError", "main"]

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
