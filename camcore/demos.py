"""The bundled demo models: DAGM-style defect classifiers trained by ``scripts/train_demos.py``.

Each model is ``models/<name>.keras`` in the assets folder (see :mod:`camcore.assets`) with
a card ``models/<name>.json`` that records how to feed it (input size, channels,
preprocessing), its class names, the layer to explain by default and how well it did on
held-out data.

    >>> demo = load_demo("vgg_defect")       # a camcore.LoadedModel
    >>> x = demo.preprocess(uint8_image)     # any size, gray or RGB
    >>> demo.model.predict(x, verbose=0).shape, demo.class_names     # [[p_clean, p_defective]]
    ((1, 2), ('clean', 'defective'))
"""

from __future__ import annotations

import json
from pathlib import Path

from camcore.assets import assets_dir
from camcore.models import LoadedModel, demo_key, from_keras, load_model_bytes

MODELS_DIR = assets_dir() / "models"  # $CAMSTUDIO_ASSETS is read once, at import
DEFAULT_DEMO = "vgg_defect"


def read_card(name: str, directory: Path = MODELS_DIR) -> dict:
    """The card of demo model ``name``; ValueError naming the available ones if there is none."""
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown demo model {name!r}; available: {list_demos(directory)}")
    return json.loads(path.read_text())


def list_demos(directory: Path = MODELS_DIR) -> list[str]:
    """Names of the demo models in the assets (card and weights present), default first."""
    directory = Path(directory)
    names = sorted(p.stem for p in directory.glob("*.json") if (directory / f"{p.stem}.keras").is_file())
    return sorted(names, key=lambda n: n != DEFAULT_DEMO)


def card_note(card: dict) -> str:
    """One line for the user: the architecture and the held-out accuracy the card records."""
    parts = [str(card["architecture"])] if card.get("architecture") else []
    heldout = card.get("heldout") or {}
    if isinstance(heldout.get("accuracy"), (int, float)):
        parts.append(
            f"held-out accuracy {heldout['accuracy']:.1%} on {heldout.get('images', '?')} synthetic images"
        )
    return "; ".join(parts)


def load_demo(name: str = DEFAULT_DEMO, directory: Path = MODELS_DIR) -> LoadedModel:
    """Load a demo model in Keras safe mode, fed and explained as its card says."""
    card = read_card(name, directory)
    path = Path(directory) / card["file"]
    model = load_model_bytes(path.read_bytes(), path.name)
    return from_keras(
        model,
        name,
        card["preprocessing"],
        card["class_names"],
        tuple(card["input_size"]),  # checked against the model's own
        layer=card["layer"],
        source="demo",
        key=demo_key(name),
        note=card_note(card),
        card=card,
    )
