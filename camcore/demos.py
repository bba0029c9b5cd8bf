"""The bundled demo models: DAGM-style defect classifiers trained by ``camcore.train_demo``.

Each model is ``assets/models/<name>.keras`` with a card ``assets/models/<name>.json``
that records how to feed it (input size, channels, preprocessing), its class
names, the layer to explain by default and how well it did on held-out data.

    >>> demo = load_demo("vgg_defect")
    >>> x = demo.preprocess(uint8_image)     # any size, gray or RGB
    >>> demo.model.predict(x)                # [[p_clean, p_defective]]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camcore.preprocess import preprocess_image

MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
DEFAULT_DEMO = "vgg_defect"


@dataclass(frozen=True)
class Demo:
    """A loaded demo model and what is needed to use it."""

    name: str
    model: Any  # keras.Model
    class_names: list[str]
    layer: str
    input_size: tuple[int, int]
    channels: int
    preprocessing: str
    card: dict = field(repr=False)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 gray or RGB image of any size → the model's input batch (1, H, W, C)."""
        return preprocess_image(image, self.input_size, self.channels, self.preprocessing)


def read_card(name: str, directory: Path = MODELS_DIR) -> dict:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown demo model {name!r}; available: {list_demos(directory)}")
    return json.loads(path.read_text())


def list_demos(directory: Path = MODELS_DIR) -> list[str]:
    """Names of the demo models shipped in ``assets/models`` (card and weights present), default first."""
    directory = Path(directory)
    names = sorted(p.stem for p in directory.glob("*.json") if (directory / f"{p.stem}.keras").is_file())
    return sorted(names, key=lambda n: n != DEFAULT_DEMO)


def load_demo(name: str = DEFAULT_DEMO, directory: Path = MODELS_DIR) -> Demo:
    """Load a demo model in Keras safe mode, with its card."""
    import keras

    card = read_card(name, directory)
    model = keras.models.load_model(Path(directory) / card["file"], compile=False, safe_mode=True)
    return Demo(
        name=name,
        model=model,
        class_names=list(card["class_names"]),
        layer=card["layer"],
        input_size=tuple(card["input_size"]),
        channels=int(card["channels"]),
        preprocessing=card["preprocessing"],
        card=card,
    )
