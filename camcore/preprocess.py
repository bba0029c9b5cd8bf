"""Reading user images and turning them into a model's input batch.

Preprocessing modes are plain arithmetic that works on NumPy arrays and
TensorFlow tensors alike, so Score-CAM can re-apply them inside its compiled
masked passes when masking the raw image.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np

# mode -> what it does (shown in the UI when a model's preprocessing must be asked for)
PREPROCESSING_MODES: dict[str, str] = {
    "unit": "scale 0..255 to [0, 1]",
    "symmetric": "scale 0..255 to [-1, 1] (MobileNet, Xception, Inception)",
    "caffe": "RGB→BGR, subtract the ImageNet mean per channel (VGG16, ResNet50)",
    "torch": "scale to [0, 1], subtract the ImageNet mean, divide by its std (DenseNet)",
    "none": "feed 0..255 as is (models with their own Rescaling layer, EfficientNet)",
}

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

INPUT_RANGE: dict[str, float] = {"unit": 1.0, "symmetric": 2.0, "none": 255.0, "caffe": 255.0, "torch": 1.0 / 0.226}
"""Width of the model-input value range each mode produces from 0..255 pixels (``torch``:
1 over the mean of its standard deviations), for quantities stated relative to it (e.g.
ROAD's imputation noise, 1 % of the range)."""


def apply_preprocessing(batch: Any, mode: str) -> Any:
    """Apply ``mode`` to a float batch (N, H, W, C) of 0..255 values (NumPy or TF)."""
    if mode == "unit":
        return batch / 255.0
    if mode == "symmetric":
        return batch / 127.5 - 1.0
    if mode == "none":
        return batch
    if mode in ("caffe", "torch"):
        channels = int(batch.shape[-1])
        if channels != 3:
            raise ValueError(f"{mode!r} preprocessing needs 3 channels, got {channels}")
        if mode == "caffe":
            return batch[..., ::-1] - np.array(_CAFFE_MEAN_BGR, np.float32)
        return (batch / 255.0 - np.array(_TORCH_MEAN, np.float32)) / np.array(_TORCH_STD, np.float32)
    raise ValueError(f"unknown preprocessing {mode!r}; choose one of {sorted(PREPROCESSING_MODES)}")


# A 2 MB PNG can declare 20000 x 20000 16-bit pixels: decoding it took 2 minutes and 11 GB
# of RAM. Images are refused above this size from their header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 40_000_000


def _declared_size(data: bytes) -> str | None:
    """"W×H pixels" from the file's header when it declares more than ``MAX_IMAGE_PIXELS``
    (Pillow reads only the header here), else None; OpenCV reports unreadable headers."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = (int(v) for v in image.size)
    except Image.DecompressionBombError:  # Pillow's own ceiling, far above ours
        ceiling = Image.MAX_IMAGE_PIXELS  # set, or Pillow would not have raised (None disables it)
        return f"over {2 * ceiling // 1_000_000} megapixels" if ceiling is not None else "over Pillow's pixel limit"
    except Exception:  # noqa: BLE001 - an unreadable header is OpenCV's to report
        return None
    return f"{width}×{height} pixels" if width * height > MAX_IMAGE_PIXELS else None


def read_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF bytes to uint8 (H, W) grayscale or (H, W, 3) RGB.

    16-bit images are scaled to 8 bits; an alpha channel is dropped. Images of more than
    ``MAX_IMAGE_PIXELS`` pixels are refused from their header, before decoding.
    Raises ValueError with a readable message for anything that is not a usable image.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ValueError("empty file: expected PNG, JPEG, BMP or TIFF image data")
    data = bytes(data)
    too_large = _declared_size(data)
    if too_large is not None:
        raise ValueError(
            f"image is too large ({too_large}; at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels): "
            "downscale it before uploading"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. a header beyond OpenCV's own pixel limit
        image = None
    if image is None or image.size == 0:
        raise ValueError("could not decode the file as an image (PNG, JPEG, BMP or TIFF expected)")
    return to_uint8_image(image, bgr=True)


def to_uint8_image(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Normalize any decoded image array to uint8 (H, W) or (H, W, 3) RGB."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"unsupported image shape {image.shape}: expected gray, RGB or RGBA")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"image is too small ({image.shape[1]}×{image.shape[0]} pixels)")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
    elif image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            finite = np.nan_to_num(image.astype(np.float32))
            peak = 1.0 if finite.max() <= 1.0 else 255.0
            image = finite / peak * 255.0
        image = np.clip(image, 0, 255)
    image = image.astype(np.uint8)
    if image.ndim == 3 and bgr:
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def preprocess_image(
    image: np.ndarray, size: tuple[int, int], channels: int, mode: str
) -> np.ndarray:
    """uint8 gray/RGB image of any size → float32 model input (1, height, width, channels).

    Resizes with area interpolation (the right filter for shrinking 512² textures),
    converts gray↔RGB to the model's channel count, then applies ``mode``.
    """
    resized = resize_for_model(image, size, channels)
    return apply_preprocessing(resized[None].astype(np.float32), mode).astype(np.float32)


def resize_for_model(image: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """uint8 image → uint8 (height, width, channels) at the model's input size."""
    image = to_uint8_image(image)
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] != (height, width):
        shrinking = image.shape[0] >= height and image.shape[1] >= width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interpolation)
    if channels == 1:
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return image[..., None]
    if channels == 3:
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        return image
    raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
