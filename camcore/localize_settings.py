"""The settings file of ``cam-studio localize``: the (model, method, layer, threshold, max_N,
class) chosen on the Compare or Dataset page, as a small JSON object.

Schema (version 1; ``null`` or a missing optional field takes the default)::

    {
      "version": 1,                    optional; only 1 exists
      "model": "demo:vgg_defect",      required: a demo name, a model key (demo:, app:, file:)
                                       or a .keras / .h5 / .hdf5 path (relative paths are read
                                       from the settings file's folder)
      "method": "grad_cam",            required: a key of camcore.METHODS
      "layer": "top_down56",           the layer to explain (default: the model's)
      "fused_layers": [],              layers a fusable method averages (default: none)
      "threshold": 0.30,               required: a pixel is defect where the [0, 1] map >= it
      "max_n": 10,                     Faster-Score-CAM's channels (default 10)
      "class_index": 1,                the explained class (default: "defective", else 1)
      "preprocessing": "unit",         for a model file that does not say (see PREPROCESSING_MODES)
      "input_size": [224, 224],        for a model that accepts any size: [height, width]
      "precision": "fp32",             forward-only passes: "fp32" (default), "bf16" or "auto"
      "regions_for": "predicted",      "predicted": regions only for images the model assigns
                                       to the explained class; "all": for every image
      "min_area": 0                    regions smaller than this many image pixels are dropped
    }

The Compare page's "Settings (JSON)" download is accepted too when it names one method
(``"methods": ["grad_cam"]``); its display fields (image, colormap ...) are ignored. Any
other field is refused, so that a misspelt one ("treshold") is not silently dropped.
Malformed settings raise :class:`SettingsError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SCHEMA_VERSION = 1
REGIONS_FOR = ("predicted", "all")
PRECISIONS = ("fp32", "bf16", "auto")
# fields of the Compare page's settings download that say nothing about localization
DISPLAY_FIELDS = frozenset({"image", "image_sha", "class_name", "colormap", "overlay_opacity", "methods"})


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the field."""


@dataclass(frozen=True)
class LocalizeSettings:
    """Validated localization settings (see the module docstring for each field)."""

    model: str
    method: str
    threshold: float
    layer: str | None = None
    fused_layers: tuple[str, ...] = ()
    max_n: int | None = None
    class_index: int | None = None
    preprocessing: str | None = None
    input_size: tuple[int, int] | None = None
    precision: str = "fp32"
    regions_for: str = "predicted"
    min_area: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready, with the schema version first."""
        fields = dataclasses.asdict(self)
        fields["fused_layers"] = list(self.fused_layers)
        fields["input_size"] = None if self.input_size is None else list(self.input_size)
        return {"version": SCHEMA_VERSION, **fields}


FIELDS = ("version", *(f.name for f in dataclasses.fields(LocalizeSettings)))


def _fail(name: str, problem: str) -> SettingsError:
    return SettingsError(f"settings field {name!r}: {problem}")


def _text(raw: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise _fail(name, "missing (required)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(name, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _integer(raw: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], name: str, choices: tuple[str, ...] | list[str], default: str | None) -> str | None:
    value = raw.get(name)
    if value is None:
        return default
    if value not in choices:
        raise _fail(name, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _threshold(raw: Mapping[str, Any]) -> float:
    value = raw.get("threshold")
    if value is None:
        raise _fail("threshold", "missing (required): the map value in [0, 1] at and above which a pixel is defect")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise _fail("threshold", f"expected a number in [0, 1], got {value!r}")
    return float(value)


def _method(raw: Mapping[str, Any]) -> str:
    from camcore.methods import METHODS

    method = _text(raw, "method")
    if method is None:
        listed = raw.get("methods")
        if isinstance(listed, list) and len(listed) == 1 and isinstance(listed[0], str):
            method = listed[0]
        elif isinstance(listed, list) and listed:
            raise _fail("method", f"missing: the file lists {len(listed)} methods ({', '.join(map(str, listed))}); "
                        "add \"method\" with the one to use")
        else:
            raise _fail("method", "missing (required)")
    if method not in METHODS:
        raise _fail("method", f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def _layers(raw: Mapping[str, Any]) -> tuple[str, ...]:
    value = raw.get("fused_layers")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail("fused_layers", f"expected a list of layer names, got {value!r}")
    return tuple(value)


def _input_size(raw: Mapping[str, Any]) -> tuple[int, int] | None:
    value = raw.get("input_size")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 2048 for v in value):
        raise _fail("input_size", f"expected [height, width], each 8 to 2048, got {value!r}")
    return int(value[0]), int(value[1])


def _model(raw: Mapping[str, Any], base: Path | None) -> str:
    model = _text(raw, "model", required=True)
    assert model is not None
    if model.startswith("upload:"):
        raise _fail("model", f"{model!r} names a file uploaded to the dashboard, which only the dashboard holds; "
                    "give the model file's path instead")
    if base is not None and Path(model).suffix.lower() in (".keras", ".h5", ".hdf5") and not Path(model).is_absolute():
        return str((base / model).resolve())
    return model


def parse_settings(raw: Any, *, base: str | os.PathLike[str] | None = None) -> LocalizeSettings:
    """Validate a settings mapping (the JSON object); ``base`` is the folder relative model
    paths are read from. Raises :class:`SettingsError` naming the first bad field."""
    if isinstance(raw, LocalizeSettings):
        return raw
    if not isinstance(raw, Mapping):
        raise SettingsError(f"settings must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS) - DISPLAY_FIELDS)
    if unknown:
        raise SettingsError(f"unknown settings field(s) {', '.join(map(repr, unknown))}; known: {', '.join(FIELDS)}")
    if raw.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise _fail("version", f"this camcore reads version {SCHEMA_VERSION}, got {raw.get('version')!r}")
    from camcore.preprocess import PREPROCESSING_MODES

    return LocalizeSettings(
        model=_model(raw, Path(base) if base is not None else None),
        method=_method(raw),
        threshold=_threshold(raw),
        layer=_text(raw, "layer"),
        fused_layers=_layers(raw),
        max_n=_integer(raw, "max_n", 1),
        class_index=_integer(raw, "class_index", 0),
        preprocessing=_choice(raw, "preprocessing", list(PREPROCESSING_MODES), None),
        input_size=_input_size(raw),
        precision=_choice(raw, "precision", PRECISIONS, "fp32") or "fp32",
        regions_for=_choice(raw, "regions_for", REGIONS_FOR, "predicted") or "predicted",
        min_area=_integer(raw, "min_area", 0) or 0,
    )


def read_settings(path: str | os.PathLike[str]) -> LocalizeSettings:
    """The settings file at ``path`` (relative model paths are read from its folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read the settings file {path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{path.name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    try:
        return parse_settings(raw, base=path.resolve().parent)
    except SettingsError as exc:
        raise SettingsError(f"{path.name}: {exc}") from None


def settings_json(settings: Mapping[str, Any] | LocalizeSettings) -> str:
    """The settings file's text for ``settings`` (a mapping as the Compare and Dataset pages
    hold it, validated here, or :class:`LocalizeSettings`): every field, indented."""
    return json.dumps(parse_settings(settings).to_dict(), indent=2) + "\n"


def write_settings(path: str | os.PathLike[str], settings: Mapping[str, Any] | LocalizeSettings) -> Path:
    """Write :func:`settings_json` to ``path``; return it."""
    path = Path(path)
    path.write_text(settings_json(settings), encoding="utf-8")
    return path
