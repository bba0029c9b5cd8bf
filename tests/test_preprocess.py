"""Reading uploaded images and preprocessing them for a model."""

import cv2
import numpy as np
import pytest

from camcore.preprocess import apply_preprocessing, preprocess_image, read_image


def encode(image, ext=".png"):
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def test_reads_gray_rgb_rgba_and_16_bit():
    gray = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    np.testing.assert_array_equal(read_image(encode(gray)), gray)
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    rgb = read_image(encode(bgr))
    assert rgb.shape == (20, 30, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    bgra = np.dstack([bgr, np.full((20, 30), 128, np.uint8)])
    assert read_image(encode(bgra)).shape == (20, 30, 3)
    deep = (gray.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(encode(deep)), gray)
    assert read_image(encode(gray, ".bmp")).shape == (32, 64)
    assert read_image(encode(gray, ".tiff")).shape == (32, 64)
    assert read_image(encode(gray, ".jpg")).shape == (32, 64)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50])
def test_corrupt_or_empty_files_raise_clear_errors(data):
    with pytest.raises(ValueError, match="image|empty"):
        read_image(data)


def test_preprocess_modes_and_channels():
    image = np.full((50, 40), 255, np.uint8)
    unit = preprocess_image(image, (32, 32), 1, "unit")
    assert unit.shape == (1, 32, 32, 1) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, 1.0)
    sym = preprocess_image(image, (16, 16), 3, "symmetric")
    assert sym.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(sym, 1.0)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    caffe = preprocess_image(rgb, (8, 8), 3, "caffe")
    np.testing.assert_allclose(caffe[0, 0, 0], [-103.939, -116.779, 255 - 123.68], atol=1e-4)
    torch = apply_preprocessing(np.full((1, 2, 2, 3), 255.0, np.float32), "torch")
    np.testing.assert_allclose(
        torch[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5
    )
    with pytest.raises(ValueError, match="unknown preprocessing"):
        apply_preprocessing(np.zeros((1, 2, 2, 3)), "bogus")
    with pytest.raises(ValueError, match="3 channels"):
        apply_preprocessing(np.zeros((1, 2, 2, 1)), "caffe")
