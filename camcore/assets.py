"""Where the bundled demo models and sample images are: one folder with ``models/`` and ``samples/``.

Looked up in this order:

1. ``$CAMSTUDIO_ASSETS``, when set (e.g. a folder of retrained models);
2. ``camcore/_bundled``: the copy an installed wheel carries (``pip install .``);
3. ``assets/`` of the source tree (a checkout, or ``pip install -e .``), the source of truth.

    >>> (assets_dir() / "models" / "vgg_defect.keras").is_file()
    True
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS_ENV = "CAMSTUDIO_ASSETS"
_PACKAGED = Path(__file__).resolve().parent / "_bundled"
_SOURCE_TREE = Path(__file__).resolve().parent.parent / "assets"


def assets_dir() -> Path:
    """The assets folder, by the rules of the module docstring. It may not exist (a
    checkout without assets); callers then find no demo model and no sample."""
    override = os.environ.get(ASSETS_ENV)
    if override:
        return Path(override).expanduser().resolve()
    # a wheel holds _bundled and no source tree; a checkout never has _bundled
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE_TREE
