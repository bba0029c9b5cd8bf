"""Synthetic DAGM-2007-style surface images: 13 textures in 9 families, five defect kinds.

The DAGM 2007 benchmark (512x512 8-bit grayscale, defective vs clean) cannot be
downloaded here, so the project generates look-alike data. Every image is a
texture chosen from :data:`TEXTURES` with random orientation, scale, brightness
and contrast; a defective image additionally carries one defect from
:data:`DEFECTS`, placed fully inside the image, together with its exact pixel mask
and a DAGM-style weak label: an :class:`Ellipse` that contains the whole mask.

The textures are procedural look-alikes of commonly inspected surfaces: cloudy
noise and blotches, wood grain, granular surfaces (speckle, gravel, sandblasted
metal), woven cloth or mesh at several scales, brushed metal, masonry (brick, tile),
fibrous material (grass, paper, felt), cast metal and painted sheet. Look-alikes
share a *family* (:data:`FAMILIES`, :attr:`Sample.family`), so a family can be held
out of training as a whole (``generate(..., families=...)``). So that "an edge" does
not mean "a defect", :data:`STRUCTURE_RATE` of the surfaces, clean or defective,
carry normal structure: seams, part edges, holes or rivets, uneven lighting.

Generation is deterministic: :func:`make_sample` depends only on its arguments, and
sample ``i`` of :func:`generate` depends only on ``(seed, i)``. The background
texture, its structure and the defect use independent random streams, so
``make_sample(s, t, None)`` is exactly the clean version of ``make_sample(s, t, kind)``.

Geometry conventions (shared by :class:`Ellipse`, :func:`ellipse_mask` and
:func:`fit_ellipse`): x is the column and y the row, pixel centres sit at integer
coordinates, and an ellipse's ``angle`` is in degrees from the +x axis towards +y,
i.e. clockwise as displayed (y points down). That is OpenCV's convention, so
``cv2.ellipse(img, (round(cx), round(cy)), (round(a), round(b)), angle, 0, 360,
255, -1)`` draws the same ellipse.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np

TEXTURES: tuple[str, ...] = (
    "fractal",
    "grain",
    "blotch",
    "speckle",
    "woven",
    "brushed",
    "brick",
    "tile",
    "gravel",
    "sandblasted",
    "fibrous",
    "cast",
    "painted",
)
DEFECTS: tuple[str, ...] = ("scratch", "spot", "crack", "stain", "missing")
# Look-alike textures share a family, so that holding a family out of training
# (leave-one-family-out) leaves no close relative of the test surfaces behind.
FAMILIES: dict[str, tuple[str, ...]] = {
    "cloudy": ("fractal", "blotch"),
    "wood": ("grain",),
    "granular": ("speckle", "gravel", "sandblasted"),
    "woven": ("woven",),
    "brushed": ("brushed",),
    "masonry": ("brick", "tile"),
    "fibrous": ("fibrous",),
    "cast": ("cast",),
    "painted": ("painted",),
}
_FAMILY_OF: dict[str, str] = {texture: family for family, members in FAMILIES.items() for texture in members}

MIN_SIZE = 32
# Share of defects drawn with reduced contrast: realistic, but few enough that a
# small CNN still reaches high accuracy on the default data.
SUBTLE_RATE = 0.1
# Share of surfaces carrying normal structure (seams, part edges, holes, uneven light).
STRUCTURE_RATE = 0.6
# Typical defects must survive the 512→224 shrink the demo models see; this gain on
# every defect's contrast keeps them visible there (tuned with scripts/train_demos.py).
DEFECT_CONTRAST_GAIN = 1.3
# fit_ellipse grows the containing ellipse by this factor plus FIT_MARGIN_PX so the
# weak label is a little generous, like DAGM's hand-drawn ellipses.
FIT_SCALE = 1.05
FIT_MARGIN_PX = 1.0
_SUBPIXEL_BITS = 4  # cv2 drawing with 1/16-pixel precision
_SUBPIXEL = float(1 << _SUBPIXEL_BITS)


# --------------------------------------------------------------------------- ellipse


@dataclass(frozen=True)
class Ellipse:
    """A weak-label ellipse: centre (cx, cy) in pixels, semi-axes a >= b > 0 in pixels,
    ``angle`` of the a-axis in degrees from +x towards +y, normalised to [0, 180).

    Passing a < b is accepted and normalised (axes swapped, angle turned by 90).
    """

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def __post_init__(self) -> None:
        values = [float(v) for v in (self.cx, self.cy, self.a, self.b, self.angle)]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"ellipse parameters must be finite, got {values}")
        cx, cy, a, b, angle = values
        if a <= 0 or b <= 0:
            raise ValueError(f"ellipse semi-axes must be positive, got a={a}, b={b}")
        if a < b:
            a, b, angle = b, a, angle + 90.0
        angle %= 180.0
        if angle >= 180.0:  # -1e-17 % 180.0 rounds to 180.0
            angle -= 180.0
        for name, value in zip(("cx", "cy", "a", "b", "angle"), (cx, cy, a, b, angle)):
            object.__setattr__(self, name, value)

    @property
    def area(self) -> float:
        """Area pi * a * b in square pixels."""
        return math.pi * self.a * self.b

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly ``{"cx", "cy", "a", "b", "angle"}``."""
        return {"cx": self.cx, "cy": self.cy, "a": self.a, "b": self.b, "angle": self.angle}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ellipse:
        """Inverse of :meth:`to_dict`; raises ValueError on missing or bad keys."""
        try:
            return cls(*(float(data[key]) for key in ("cx", "cy", "a", "b", "angle")))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an ellipse dict (need cx, cy, a, b, angle): {data!r}") from exc

    def scaled(self, sx: float, sy: float | None = None) -> Ellipse:
        """The ellipse in an image resized by (sx, sy) (``sy`` defaults to ``sx``), using
        the pixel-centre mapping of cv2.resize: ``x' = (x + 0.5) * sx - 0.5``."""
        sy = sx if sy is None else sy
        if sx <= 0 or sy <= 0:
            raise ValueError(f"scale factors must be positive, got ({sx}, {sy})")
        # Non-uniform scaling of a rotated ellipse changes its axes and angle: transform
        # the quadratic form M (p^T M p <= 1) and re-read axes from its eigenvectors.
        theta = math.radians(self.angle)
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        form = rotation @ np.diag([self.a**-2, self.b**-2]) @ rotation.T
        inverse_scale = np.diag([1.0 / sx, 1.0 / sy])
        eigenvalues, eigenvectors = np.linalg.eigh(inverse_scale @ form @ inverse_scale)
        major = eigenvectors[:, 0]  # smallest eigenvalue <-> longest axis
        return Ellipse(
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            a=float(eigenvalues[0] ** -0.5),
            b=float(eigenvalues[1] ** -0.5),
            angle=math.degrees(math.atan2(major[1], major[0])),
        )


def ellipse_mask(ellipse: Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres lie inside ``ellipse``."""
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), bool)
    theta = math.radians(ellipse.angle)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    # Only evaluate the ellipse's bounding box: labels are small relative to images.
    half_w = math.hypot(ellipse.a * cos_t, ellipse.b * sin_t)
    half_h = math.hypot(ellipse.a * sin_t, ellipse.b * cos_t)
    x0, x1 = max(0, math.floor(ellipse.cx - half_w)), min(width, math.ceil(ellipse.cx + half_w) + 1)
    y0, y1 = max(0, math.floor(ellipse.cy - half_h)), min(height, math.ceil(ellipse.cy + half_h) + 1)
    if x0 >= x1 or y0 >= y1:
        return mask
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - ellipse.cx
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - ellipse.cy
    along = dx * cos_t + dy * sin_t
    across = dy * cos_t - dx * sin_t
    mask[y0:y1, x0:x1] = (along / ellipse.a) ** 2 + (across / ellipse.b) ** 2 <= 1.0
    return mask


def fit_ellipse(mask: np.ndarray) -> Ellipse:
    """Weak-label ellipse that contains the centre of every True pixel of ``mask``.

    Two candidates, the smaller one wins: the mask's second-moment ellipse scaled until
    the farthest pixel is inside (tight for blobs), and the ellipse through the corners
    of the minimum-area rotated rectangle (tight for thin, branching lines). The result
    is grown by ``FIT_SCALE`` and ``FIT_MARGIN_PX``. Raises ValueError for an empty or
    non-2-D mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot fit an ellipse to an empty mask")
    points = np.stack([cols, rows], axis=1).astype(np.float64)
    center = points.mean(axis=0)
    offsets = points - center
    # A pixel is a unit square, whose own variance (1/12 per axis) keeps one-pixel-wide
    # masks from giving a zero-length axis.
    covariance = offsets.T @ offsets / len(points) + np.eye(2) / 12.0
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    major, minor = eigenvectors[:, 1], eigenvectors[:, 0]
    a0, b0 = math.sqrt(eigenvalues[1]), math.sqrt(eigenvalues[0])
    radius = float(np.sqrt(((offsets @ major / a0) ** 2 + ((offsets @ minor) / b0) ** 2).max()))
    moments_angle = math.degrees(math.atan2(major[1], major[0]))
    by_moments = (float(center[0]), float(center[1]), a0 * radius, b0 * radius, moments_angle)

    # The smallest ellipse around a w x h rectangle has semi-axes w/sqrt(2), h/sqrt(2).
    (rect_x, rect_y), (rect_w, rect_h), rect_angle = cv2.minAreaRect(points.astype(np.float32))
    by_rectangle = (rect_x, rect_y, rect_w / math.sqrt(2.0), rect_h / math.sqrt(2.0), rect_angle)

    cx, cy, a, b, angle = min(by_moments, by_rectangle, key=lambda candidate: candidate[2] * candidate[3])
    return Ellipse(
        cx=cx,
        cy=cy,
        a=a * FIT_SCALE + FIT_MARGIN_PX,
        b=b * FIT_SCALE + FIT_MARGIN_PX,
        angle=angle,
    )


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields with == is ambiguous
class Sample:
    """One synthetic image: uint8 (H, W) ``image``, bool (H, W) ``mask`` (all False when
    clean), the weak-label ``ellipse`` (None when clean), ``texture`` and ``defect``;
    ``family`` names the texture's family."""

    image: np.ndarray
    mask: np.ndarray
    ellipse: Ellipse | None
    texture: str
    defect: str | None

    @property
    def defective(self) -> bool:
        """True when the image carries a defect."""
        return self.defect is not None

    @property
    def family(self) -> str:
        """The texture's family (see :data:`FAMILIES`); the texture name itself for a
        texture this module does not know."""
        return _FAMILY_OF.get(self.texture, self.texture)


def family_of(texture: str) -> str:
    """The family of ``texture`` (see :data:`FAMILIES`); ValueError for an unknown texture."""
    _check_name(texture, TEXTURES, "texture")
    return _FAMILY_OF[texture]


def textures_of(families: Sequence[str]) -> tuple[str, ...]:
    """The textures of ``families``, in :data:`TEXTURES` order; ValueError for an
    unknown family or an empty list."""
    pool = _check_pool(families, tuple(FAMILIES), "family")
    return tuple(texture for texture in TEXTURES if _FAMILY_OF[texture] in pool)


def make_sample(seed: int, texture: str, defect: str | None, size: int = 512, *, structure: bool = True) -> Sample:
    """One ``size`` x ``size`` sample of ``texture`` with a ``defect`` kind (None: clean).

    Deterministic in its arguments; the defective image equals the clean one with the
    same seed outside the defect. ``structure=False`` leaves out the seams, part edges,
    holes and uneven lighting that :data:`STRUCTURE_RATE` of the surfaces carry, and
    changes nothing else (they have their own random stream).
    """
    return make_pair(seed, texture, defect, size, structure=structure)[0]


def make_pair(
    seed: int, texture: str, defect: str | None, size: int = 512, *, structure: bool = True
) -> tuple[Sample, Sample]:
    """``(make_sample(seed, texture, defect, size), make_sample(seed, texture, None, size))``
    for the price of one: the texture is drawn once and the defect painted on a copy."""
    seed = _check_seed(seed)
    _check_name(texture, TEXTURES, "texture")
    if defect is not None:
        _check_name(defect, DEFECTS, "defect")
    size = _check_size(size)
    # spawn(3)'s first two children are spawn(2)'s: the texture and defect streams did not
    # change when the structure stream was added
    texture_seq, defect_seq, structure_seq = np.random.SeedSequence(seed).spawn(3)
    texture_rng = np.random.default_rng(texture_seq)
    field = _TEXTURE_MAKERS[texture](texture_rng, size)
    field = (field - field.mean()) / max(float(field.std()), 1e-6)
    if structure:
        field = _add_structure(np.random.default_rng(structure_seq), field)
    brightness = texture_rng.uniform(80.0, 170.0)
    contrast = texture_rng.uniform(14.0, 28.0)
    clean_canvas = (brightness + contrast * field).astype(np.float32)
    clean = Sample(image=_to_uint8(clean_canvas), mask=np.zeros((size, size), bool), ellipse=None,
                   texture=texture, defect=None)
    if defect is None:
        return clean, clean

    canvas = clean_canvas.copy()
    mask = np.zeros((size, size), bool)
    defect_rng = np.random.default_rng(defect_seq)
    alpha = _DEFECT_MAKERS[defect](defect_rng, size)
    top, left = _place(defect_rng, alpha.shape, size)
    window = (slice(top, top + alpha.shape[0]), slice(left, left + alpha.shape[1]))
    canvas[window] = _DEFECT_EFFECTS[defect](defect_rng, canvas[window], alpha, contrast)
    local_mask = alpha >= 0.5
    if not local_mask.any():  # cannot happen for size >= MIN_SIZE, kept as a guard
        local_mask = alpha >= 0.5 * float(alpha.max())
    mask[window] = local_mask
    defective = Sample(image=_to_uint8(canvas), mask=mask, ellipse=fit_ellipse(mask), texture=texture, defect=defect)
    return defective, clean


def _to_uint8(canvas: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def generate(
    n: int,
    seed: int = 0,
    size: int = 512,
    defect_rate: float = 0.5,
    textures: Sequence[str] | None = None,
    defects: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
) -> Iterator[Sample]:
    """Yield ``n`` samples; the texture is drawn uniformly from ``textures``, a defect is
    present with probability ``defect_rate`` and its kind is uniform over ``defects``.
    ``families`` keeps only the textures of those families (e.g. every family but one,
    to hold that one out of training).

    Sample ``i`` depends only on ``(seed, i)``, so ``generate(10, s)`` is a prefix of
    ``generate(20, s)``, identical in any process.
    """
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for index in range(n):
        yield sample_at(index, seed, size, defect_rate, textures, defects, families)


def sample_at(
    index: int,
    seed: int = 0,
    size: int = 512,
    defect_rate: float = 0.5,
    textures: Sequence[str] | None = None,
    defects: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
) -> Sample:
    """Sample ``index`` of :func:`generate` with the same arguments, without making the
    ones before it (random access, e.g. to reopen image 250 of an evaluated set)."""
    index = operator.index(index)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    seed = _check_seed(seed)
    size = _check_size(size)
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    texture_pool = _check_pool(textures, TEXTURES, "texture")
    if families is not None:
        in_families = textures_of(families)
        texture_pool = tuple(texture for texture in texture_pool if texture in in_families)
        if not texture_pool:
            raise ValueError(f"no texture is both in {list(textures or ())} and in families {list(families)}")
    defect_pool = _check_pool(defects, DEFECTS, "defect")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    texture = texture_pool[int(rng.integers(len(texture_pool)))]
    defective = bool(rng.random() < defect_rate)
    # Always draw the kind so the stream layout does not depend on defect_rate.
    kind = defect_pool[int(rng.integers(len(defect_pool)))]
    sample_seed = int(rng.integers(0, 2**63))
    return make_sample(sample_seed, texture, kind if defective else None, size)


def _check_seed(seed: int) -> int:
    seed = operator.index(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


def _check_size(size: int) -> int:
    size = operator.index(size)
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    return size


def _check_name(name: object, valid: tuple[str, ...], what: str) -> None:
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")


def _check_pool(names: Sequence[str] | None, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    if names is None:
        return valid
    pool = tuple(names)
    if not pool:
        raise ValueError(f"need at least one {what}; valid: {', '.join(valid)}")
    for name in pool:
        _check_name(name, valid, what)
    return pool


# --------------------------------------------------------------------------- textures
# Each maker returns a float32 (size, size) field; make_sample standardises it and
# applies a random brightness and contrast. Feature sizes are relative to ``size`` so a
# 224-pixel sample looks like a downscaled 512-pixel one.


def _directional_noise(
    rng: np.random.Generator, size: int, angle: float, along: float, across: float
) -> np.ndarray:
    """Smooth Gaussian noise with correlation length ``along`` px in direction ``angle``
    (radians) and ``across`` px perpendicular to it."""
    along, across = max(along, 0.5), max(across, 0.5)
    diagonal = size * math.sqrt(2.0)
    rows = int(math.ceil(diagonal / along)) + 4
    cols = int(math.ceil(diagonal / across)) + 4
    grid = rng.standard_normal((rows, cols), dtype=np.float32)
    cos_t, sin_t = math.cos(angle), math.sin(angle)
    center = (size - 1) / 2.0
    # Inverse map: output pixel -> grid coordinate; grid rows run along `angle`.
    matrix = np.array(
        [
            [-sin_t / across, cos_t / across, (cols - 1) / 2.0 - (-sin_t + cos_t) * center / across],
            [cos_t / along, sin_t / along, (rows - 1) / 2.0 - (cos_t + sin_t) * center / along],
        ],
        np.float64,
    )
    # Cubic interpolation only pays off when the grid is stretched a lot; fine noise
    # looks the same with linear interpolation at a third of the cost.
    interpolation = cv2.INTER_CUBIC if min(along, across) >= 6.0 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        grid, matrix, (size, size), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )


def _octaves(rng: np.random.Generator, size: int, coarsest: float, finest: float, persistence: float) -> np.ndarray:
    """Fractal sum of isotropic noise octaves from ``coarsest`` to ``finest`` px."""
    # Octaves with cells of >= 12 px are summed at quarter resolution and upsampled
    # once: they are smooth there, and it makes the texture several times cheaper.
    reduced = max(MIN_SIZE // 4, size // 4)
    shrink = reduced / size
    coarse = np.zeros((reduced, reduced), np.float32)
    fine = np.zeros((size, size), np.float32)
    cell, weight, any_coarse = coarsest, 1.0, False
    while cell >= finest:
        turn = rng.uniform(0, math.pi)
        if cell * shrink >= 3.0:
            coarse += weight * _directional_noise(rng, reduced, turn, cell * shrink, cell * shrink)
            any_coarse = True
        else:
            fine += weight * _directional_noise(rng, size, turn, cell, cell)
        cell, weight = cell / 2.0, weight * persistence
    if any_coarse:
        fine += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return fine


def _coordinates(size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``angle``: (along, across) relative to the centre."""
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    cos_t, sin_t = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    along = axis[None, :] * cos_t + axis[:, None] * sin_t
    across = axis[:, None] * cos_t - axis[None, :] * sin_t
    return along, across


def _texture_fractal(rng: np.random.Generator, size: int) -> np.ndarray:
    # Cloudy multi-scale noise; strong fine octaves so smoothing (a "missing" patch) shows.
    scale = size / 512.0
    return _octaves(rng, size, rng.uniform(80, 130) * scale, 2.0, rng.uniform(0.7, 0.8))


def _texture_grain(rng: np.random.Generator, size: int) -> np.ndarray:
    # Wood-like wavy stripes: a sine across the grain, its phase bent by smooth noise.
    scale = size / 512.0
    angle = rng.uniform(0, math.pi)
    period = max(4.0, rng.uniform(14, 26) * scale)
    _, across = _coordinates(size, angle)
    bend = _octaves(rng, size, 160 * scale, 40 * scale, 0.5) * np.float32(period * rng.uniform(0.4, 0.8))
    stripes = np.sin((across + bend) * np.float32(2 * math.pi / period))
    fibres = _directional_noise(rng, size, angle, 40 * scale, 1.2 * scale)
    return stripes + np.float32(0.35) * fibres


def _texture_blotch(rng: np.random.Generator, size: int) -> np.ndarray:
    # Large patches with fairly sharp edges (saturated low-frequency noise), mottled inside.
    scale = size / 512.0
    coarse = _octaves(rng, size, rng.uniform(70, 110) * scale, 25 * scale, 0.5)
    coarse /= max(float(coarse.std()), 1e-6)
    patches = np.tanh(coarse * np.float32(rng.uniform(2.0, 3.5)))
    mottle = _octaves(rng, size, 12 * scale, 2.0, 0.6)
    mottle /= max(float(mottle.std()), 1e-6)
    return patches + np.float32(0.3) * mottle


def _texture_speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    # Fine grain plus sparse bright and dark dots of 2-4 px.
    scale = size / 512.0
    noise = rng.standard_normal((size, size), dtype=np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), 0.8)
    dots = rng.random((size, size), dtype=np.float32)
    density = rng.uniform(0.004, 0.012)
    bright = (dots < density * 0.7).astype(np.float32) - (dots > 1.0 - density * 0.3).astype(np.float32)
    bright = cv2.GaussianBlur(bright, (0, 0), max(0.7, 1.2 * scale)) * np.float32(12.0)
    return grain * np.float32(0.8) + bright


def _texture_woven(rng: np.random.Generator, size: int) -> np.ndarray:
    # Cloth or wire mesh at scales from fine to coarse: threads alternate over and under
    # in a plain, twill or basket pattern of cells.
    scale = size / 512.0
    angle = rng.uniform(0, math.pi)
    period = max(4.0, math.exp(rng.uniform(math.log(8.0), math.log(44.0))) * scale)
    along, across = _coordinates(size, angle)
    wobble = _octaves(rng, size, 120 * scale, 30 * scale, 0.5) * np.float32(period * 0.15)
    u = (along + wobble) / np.float32(period)
    v = (across - wobble) / np.float32(period)
    cell_u, cell_v = np.floor(u), np.floor(v)
    # Thread cross-sections: a parabola is as good as a sine here and much cheaper.
    profile_u = u - cell_u
    profile_u *= 4.0 - 4.0 * profile_u
    profile_v = v - cell_v
    profile_v *= 4.0 - 4.0 * profile_v
    iu, iv = cell_u.astype(np.int32), cell_v.astype(np.int32)
    pattern = int(rng.integers(3))
    if pattern == 0:  # plain
        over = ((iu + iv) & 1) == 0
    elif pattern == 1:  # 2/1 twill: the diagonal rib
        over = np.mod(iu + iv, 3) != 0
    else:  # basket: pairs of threads
        over = (((iu >> 1) + (iv >> 1)) & 1) == 0
    weave = np.where(over, profile_v * (0.55 + 0.45 * profile_u), profile_u * (0.55 + 0.45 * profile_v))
    noise = _directional_noise(rng, size, angle, 3.0 * scale, 3.0 * scale)
    return weave.astype(np.float32) + np.float32(0.12) * noise


def _texture_brushed(rng: np.random.Generator, size: int) -> np.ndarray:
    # Long straight random streaks of two widths under a broad lighting gradient.
    scale = size / 512.0
    angle = rng.uniform(0, math.pi)
    fine = _directional_noise(rng, size, angle, 80 * scale, 1.0 * scale)
    wide = _directional_noise(rng, size, angle, 140 * scale, 3.5 * scale)
    along, across = _coordinates(size, rng.uniform(0, 2 * math.pi))
    lighting = along * np.float32(rng.uniform(0.4, 1.0) / size)
    return fine + np.float32(0.6) * wide + lighting


def _emboss(height: np.ndarray, light: float) -> np.ndarray:
    """Shading of a height field lit from direction ``light`` (radians): the slope
    along the light, which is what makes a bumpy surface look three-dimensional."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    return gx * np.float32(math.cos(light)) + gy * np.float32(math.sin(light))


def _cell_shades(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, spread: float) -> np.ndarray:
    """A random shade per (row, col) cell of a lattice, from a wrapped lookup table."""
    table = rng.normal(0.0, spread, (61, 67)).astype(np.float32)  # co-prime sides: no visible repeat
    return table[np.mod(rows, 61).astype(np.intp), np.mod(cols, 67).astype(np.intp)]


def _masonry(
    rng: np.random.Generator, size: int, cell_h: float, cell_w: float, joint: float, bond: float, shade: float
) -> np.ndarray:
    """Rectangular cells (bricks, tiles) separated by recessed joints ``joint`` px wide;
    every other course is shifted by ``bond`` of a cell."""
    angle = float(rng.choice([0.0, math.pi / 2])) + rng.normal(0.0, 0.03)
    along, across = _coordinates(size, angle)
    across = across + np.float32(rng.uniform(0, cell_h))
    along = along + np.float32(rng.uniform(0, cell_w))
    row = np.floor(across / np.float32(cell_h))
    shifted = along + (np.mod(row, 2.0) * np.float32(bond * cell_w))
    col = np.floor(shifted / np.float32(cell_w))
    v = across - row * np.float32(cell_h)
    u = shifted - col * np.float32(cell_w)
    to_joint = np.minimum(np.minimum(u, np.float32(cell_w) - u), np.minimum(v, np.float32(cell_h) - v))
    # Recessed joint with a soft shoulder: 1 inside the joint, 0 on the face.
    recess = np.clip(1.0 - (to_joint - np.float32(joint / 2)) / np.float32(max(1.0, joint * 0.6)), 0.0, 1.0)
    faces = _cell_shades(rng, row, col, shade)
    return faces * (1.0 - recess) - np.float32(2.2) * recess


def _texture_brick(rng: np.random.Generator, size: int) -> np.ndarray:
    # Bricks in running bond: mortar joints are long straight edges that are not defects.
    scale = size / 512.0
    course = rng.uniform(30, 64) * scale
    field = _masonry(
        rng, size, course, course * rng.uniform(2.0, 3.2), max(2.0, rng.uniform(0.1, 0.2) * course), 0.5, 0.6
    )
    rough = _octaves(rng, size, 24 * scale, 1.5, 0.7)
    return field + np.float32(0.35 / max(float(rough.std()), 1e-6)) * rough


def _texture_tile(rng: np.random.Generator, size: int) -> np.ndarray:
    # Square tiles on a grid with thin grout lines, each tile a slightly different shade.
    scale = size / 512.0
    side = rng.uniform(40, 128) * scale
    field = _masonry(rng, size, side, side, max(1.5, rng.uniform(2.0, 5.0) * scale), 0.0, 0.35)
    glaze = _octaves(rng, size, 60 * scale, 3.0, 0.5)
    return field + np.float32(0.15 / max(float(glaze.std()), 1e-6)) * glaze


def _texture_gravel(rng: np.random.Generator, size: int) -> np.ndarray:
    # Packed stones of varied size and shade with dark gaps, each shaded like a dome.
    scale = size / 512.0
    radius = rng.uniform(6, 18) * scale
    count = int(1.6 * size * size / (math.pi * radius * radius))
    ids = np.zeros((size, size), np.int32)
    centres = rng.uniform(-radius, size + radius, (count, 2))
    radii = radius * rng.uniform(0.6, 1.4, (count, 2))
    turns = rng.uniform(0, 180, count)
    for k in range(count):
        cv2.ellipse(
            ids, (int(centres[k, 0]), int(centres[k, 1])), (max(1, int(radii[k, 0])), max(1, int(radii[k, 1]))),
            float(turns[k]), 0, 360, k + 1, -1,
        )
    shades = np.concatenate([[0.0], rng.normal(0.0, 0.7, count)]).astype(np.float32)
    # Boundaries between stones (id changes) become gaps; the distance to the nearest gap
    # gives each stone a rounded profile.
    edges = (ids != np.roll(ids, 1, 0)) | (ids != np.roll(ids, 1, 1)) | (ids == 0)
    distance = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)
    dome = np.sqrt(np.minimum(distance / np.float32(max(radius * 0.6, 1.0)), 1.0))
    return shades[ids] + np.float32(1.6) * dome + np.float32(0.15) * rng.standard_normal((size, size), dtype=np.float32)


def _texture_sandblasted(rng: np.random.Generator, size: int) -> np.ndarray:
    # Matte blasted metal: dense fine pits lit from one side, faint large-scale waviness.
    scale = size / 512.0
    pits = cv2.GaussianBlur(
        rng.standard_normal((size, size), dtype=np.float32), (0, 0), rng.uniform(0.8, 1.6) * max(scale, 0.5)
    )
    lit = _emboss(pits, rng.uniform(0, 2 * math.pi))
    lit /= max(float(lit.std()), 1e-6)
    wave = _octaves(rng, size, 150 * scale, 40 * scale, 0.5)
    return lit + np.float32(rng.uniform(0.2, 0.5) / max(float(wave.std()), 1e-6)) * wave


def _texture_fibrous(rng: np.random.Generator, size: int) -> np.ndarray:
    # Grass, paper or felt: many short thin strokes around a dominant direction, whose
    # alignment ranges from loose (felt) to strong (grass).
    scale = size / 512.0
    length = rng.uniform(12, 50) * scale
    count = int(rng.uniform(3.0, 6.0) * size * size / (length * 6.0 * scale + 1.0))
    main = rng.uniform(0, math.pi)
    spread = rng.uniform(0.15, 1.2)
    canvas = np.zeros((size, size), np.float32)
    starts = rng.uniform(-length, size + length, (count, 2))
    headings = main + rng.normal(0.0, spread, count)
    lengths = length * rng.uniform(0.5, 1.5, count)
    values = rng.normal(0.0, 1.0, count)
    widths = np.maximum(1, np.rint(rng.uniform(0.6, 3.0, count) * scale)).astype(int)
    ends = starts + lengths[:, None] * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    for k in range(count):
        cv2.line(
            canvas, (int(starts[k, 0]), int(starts[k, 1])), (int(ends[k, 0]), int(ends[k, 1])),
            float(values[k]), int(widths[k]), cv2.LINE_AA,
        )
    base = _octaves(rng, size, 80 * scale, 10 * scale, 0.6)
    return canvas + np.float32(0.3 / max(float(base.std()), 1e-6)) * base


def _texture_cast(rng: np.random.Generator, size: int) -> np.ndarray:
    # Sand-cast metal: a lit, undulating rough surface with scattered small pores.
    scale = size / 512.0
    height = _octaves(rng, size, rng.uniform(20, 40) * scale, 2.0, 0.6)
    lit = _emboss(height, rng.uniform(0, 2 * math.pi))
    lit /= max(float(lit.std()), 1e-6)
    pores = np.zeros((size, size), np.float32)
    count = int(rng.uniform(20, 120) * scale * scale) + 1
    for x, y, r in zip(
        rng.uniform(0, size, count), rng.uniform(0, size, count), rng.uniform(1.0, 3.5, count) * max(scale, 0.4)
    ):
        cv2.circle(pores, (int(x), int(y)), max(1, int(round(r))), -2.5, -1, cv2.LINE_AA)
    return lit + pores


def _texture_painted(rng: np.random.Generator, size: int) -> np.ndarray:
    # Painted sheet: orange-peel bumps lit from one side, with faint brush marks.
    scale = size / 512.0
    peel = _directional_noise(
        rng, size, rng.uniform(0, math.pi), rng.uniform(4, 10) * scale, rng.uniform(4, 10) * scale
    )
    lit = _emboss(peel, rng.uniform(0, 2 * math.pi))
    lit /= max(float(lit.std()), 1e-6)
    angle = rng.uniform(0, math.pi)
    marks = _directional_noise(rng, size, angle, 120 * scale, rng.uniform(2, 6) * scale)
    tone = _octaves(rng, size, 200 * scale, 50 * scale, 0.5)
    return lit + np.float32(rng.uniform(0.3, 0.9)) * marks + np.float32(0.6 / max(float(tone.std()), 1e-6)) * tone


_TEXTURE_MAKERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "fractal": _texture_fractal,
    "grain": _texture_grain,
    "blotch": _texture_blotch,
    "speckle": _texture_speckle,
    "woven": _texture_woven,
    "brushed": _texture_brushed,
    "brick": _texture_brick,
    "tile": _texture_tile,
    "gravel": _texture_gravel,
    "sandblasted": _texture_sandblasted,
    "fibrous": _texture_fibrous,
    "cast": _texture_cast,
    "painted": _texture_painted,
}


# --------------------------------------------------------------------------- structure
# Inspected parts are not endless texture: panels meet at seams, parts have edges,
# sheets carry rivets or perforations, and lighting falls off. These are normal,
# defect-free structure, added to clean and defective images alike (from the texture's
# random stream), so that a model cannot take "a strong edge" for "a defect". Each
# maker returns an additive field in units of the texture's standard deviation.


def _line_coordinate(rng: np.random.Generator, size: int) -> np.ndarray:
    """Signed distance in px to a random straight line crossing the image; half the
    lines are near-axis-aligned, as seams and part edges usually are."""
    if rng.random() < 0.5:
        angle = float(rng.choice([0.0, math.pi / 2])) + rng.normal(0.0, 0.02)
    else:
        angle = rng.uniform(0, math.pi)
    _, across = _coordinates(size, angle)
    return across - np.float32(rng.uniform(-0.4, 0.4) * size)


def _structure_seam(rng: np.random.Generator, size: int) -> np.ndarray:
    # A groove or weld line running edge to edge, with a highlight on one shoulder.
    scale = size / 512.0
    distance = _line_coordinate(rng, size)
    width = max(0.8, rng.uniform(1.0, 4.0) * scale)
    depth = rng.uniform(1.5, 3.5) * (-1.0 if rng.random() < 0.7 else 1.0)
    groove = np.exp(-((distance / np.float32(width)) ** 2))
    shoulder = np.exp(-(((distance - np.float32(1.8 * width)) / np.float32(width)) ** 2))
    return np.float32(depth) * (groove - np.float32(0.4) * shoulder)


def _structure_edge(rng: np.random.Generator, size: int) -> np.ndarray:
    # The boundary between two surfaces of different tone: straight, or the arc of a
    # large round part.
    if rng.random() < 0.6:
        distance = _line_coordinate(rng, size)
    else:
        radius = rng.uniform(0.6, 2.0) * size
        heading = rng.uniform(0, 2 * math.pi)
        reach = radius + rng.uniform(-0.35, 0.35) * size
        cx = size / 2.0 + reach * math.cos(heading)
        cy = size / 2.0 + reach * math.sin(heading)
        axis = np.arange(size, dtype=np.float32)
        distance = (
            np.sqrt((axis[None, :] - np.float32(cx)) ** 2 + (axis[:, None] - np.float32(cy)) ** 2) - np.float32(radius)
        )
    width = max(0.5, rng.uniform(0.6, 3.0) * size / 512.0)
    step = rng.uniform(0.8, 2.5) * (-1.0 if rng.random() < 0.5 else 1.0)
    # tanh rather than a logistic: the same sigmoid without overflow far from the edge
    return np.float32(step / 2.0) * (1.0 + np.tanh(distance / np.float32(2.0 * width)))


def _structure_holes(rng: np.random.Generator, size: int) -> np.ndarray:
    # A perforated sheet (a lattice of holes) or a row of rivets along a line.
    scale = size / 512.0
    angle = rng.uniform(0, math.pi)
    along, across = _coordinates(size, angle)
    radius = rng.uniform(2.5, 8.0) * scale
    pitch = rng.uniform(3.5, 8.0) * radius
    du = np.mod(along + np.float32(rng.uniform(0, pitch)), np.float32(pitch)) - np.float32(pitch / 2)
    if rng.random() < 0.5:  # lattice
        dv = np.mod(across + np.float32(rng.uniform(0, pitch)), np.float32(pitch)) - np.float32(pitch / 2)
    else:  # one row
        dv = across - np.float32(rng.uniform(-0.4, 0.4) * size)
    distance = np.sqrt(du * du + dv * dv)
    soft = np.float32(max(0.6, 0.15 * radius))
    inside = np.clip((np.float32(radius) - distance) / soft + 0.5, 0.0, 1.0)
    rim = np.exp(-(((distance - np.float32(radius)) / soft) ** 2))
    depth = rng.uniform(1.5, 3.0) * (-1.0 if rng.random() < 0.8 else 1.0)
    return np.float32(depth) * inside - np.float32(0.5 * depth) * rim


def _structure_lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    # Uneven illumination: a ramp across the image or a broad hot spot.
    axis = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / np.float32(size)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * math.pi)
        ramp = axis[None, :] * np.float32(math.cos(angle)) + axis[:, None] * np.float32(math.sin(angle))
        return np.float32(rng.uniform(1.0, 3.0)) * ramp
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    sigma = rng.uniform(0.2, 0.5)
    spot = np.exp(
        -((axis[None, :] - np.float32(cx)) ** 2 + (axis[:, None] - np.float32(cy)) ** 2) / np.float32(2 * sigma * sigma)
    )
    return np.float32(rng.uniform(0.6, 1.6) * (-1.0 if rng.random() < 0.3 else 1.0)) * spot


_STRUCTURE_MAKERS: tuple[Callable[[np.random.Generator, int], np.ndarray], ...] = (
    _structure_seam,
    _structure_edge,
    _structure_holes,
    _structure_lighting,
)


def _add_structure(rng: np.random.Generator, field: np.ndarray) -> np.ndarray:
    """``field`` (standardised texture) with zero to two structures from
    :data:`_STRUCTURE_MAKERS`; :data:`STRUCTURE_RATE` of the surfaces get at least one."""
    size = field.shape[0]
    count = 0
    if rng.random() < STRUCTURE_RATE:
        count = 1 + int(rng.random() < 0.35)
    for _ in range(count):
        field = field + _STRUCTURE_MAKERS[int(rng.integers(len(_STRUCTURE_MAKERS)))](rng, size)
    return field


# --------------------------------------------------------------------------- defects
# Each shape maker returns a local float32 alpha patch in [0, 1] (the defect footprint,
# padded so it fades to 0 at the border); make_sample places it and applies the effect.
# Sizes are fractions of the image side so the defect stays visible after downscaling.


def _strength(rng: np.random.Generator, low: float, high: float) -> float:
    """Defect contrast in units of the texture's contrast; occasionally subtle."""
    value = rng.uniform(low, high) * DEFECT_CONTRAST_GAIN
    return value * rng.uniform(0.5, 0.7) if rng.random() < SUBTLE_RATE else value


def _render(
    polygons: Sequence[np.ndarray],
    pad: float,
    *,
    closed: bool,
    thicknesses: Sequence[int] = (),
    blur: float = 0.0,
) -> np.ndarray:
    """Rasterise point lists (N, 2) as filled polygons (``closed``) or polylines into
    a tight local patch with ``pad`` px of room, optionally blurred."""
    stacked = np.concatenate(polygons, axis=0)
    low = stacked.min(axis=0) - pad
    extent = np.ceil(stacked.max(axis=0) + pad - low).astype(int) + 1
    patch = np.zeros((int(extent[1]), int(extent[0])), np.uint8)
    fixed = [np.round((points - low) * _SUBPIXEL).astype(np.int32) for points in polygons]
    if closed:
        cv2.fillPoly(patch, fixed, 255, cv2.LINE_AA, _SUBPIXEL_BITS)
    else:
        for points, thickness in zip(fixed, thicknesses):
            cv2.polylines(patch, [points], False, 255, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
    alpha = patch.astype(np.float32) / np.float32(255.0)
    if blur > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
        alpha /= max(float(alpha.max()), 1e-6)
    return alpha


def _blob_outline(rng: np.random.Generator, radius: float) -> np.ndarray:
    """Irregular closed outline: a rotated ellipse with a wobbly radius."""
    angles = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    wobble = np.ones_like(angles)
    for harmonic in (2, 3, 4, 5):
        wobble += rng.uniform(0.0, 0.12) * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
    aspect = rng.uniform(0.55, 1.0)
    x = radius * wobble * np.cos(angles)
    y = radius * aspect * wobble * np.sin(angles)
    turn = rng.uniform(0, math.pi)
    cos_t, sin_t = math.cos(turn), math.sin(turn)
    return np.stack([x * cos_t - y * sin_t, x * sin_t + y * cos_t], axis=1)


def _shape_scratch(rng: np.random.Generator, size: int) -> np.ndarray:
    # A straight or gently curved line, 10-20% of the side long.
    scale = size / 512.0
    length = rng.uniform(0.10, 0.20) * size
    direction = rng.uniform(0, math.pi)
    t = np.linspace(-0.5, 0.5, 24)[:, None]
    bow = rng.uniform(-0.12, 0.12) * length * (1.0 - 4.0 * t**2)
    unit = np.array([[math.cos(direction), math.sin(direction)]])
    normal = np.array([[-math.sin(direction), math.cos(direction)]])
    points = t * length * unit + bow * normal
    thickness = max(1, int(round(rng.uniform(4.0, 7.0) * scale)))
    return _render([points], thickness + 2.0, closed=False, thicknesses=[thickness], blur=0.5 * scale)


def _shape_spot(rng: np.random.Generator, size: int) -> np.ndarray:
    # A compact blob, 4-9% of the side across, with a slightly soft edge.
    radius = rng.uniform(0.03, 0.055) * size
    blur = max(0.5, 0.12 * radius)
    return _render([_blob_outline(rng, radius)], 3 * blur + 1, closed=True, blur=blur)


def _shape_crack(rng: np.random.Generator, size: int) -> np.ndarray:
    # A jagged random walk around a main direction, with one to three thinner branches.
    scale = size / 512.0
    length = rng.uniform(0.10, 0.18) * size
    step = max(1.5, rng.uniform(4.0, 7.0) * scale)
    main_direction = rng.uniform(0, 2 * math.pi)

    def walk(start: np.ndarray, direction: float, distance: float) -> np.ndarray:
        steps = max(2, int(distance / step))
        headings = direction + rng.normal(0.0, 0.55, steps)
        moves = step * np.stack([np.cos(headings), np.sin(headings)], axis=1)
        return np.vstack([start[None, :], start + np.cumsum(moves, axis=0)])

    trunk = walk(np.zeros(2), main_direction, length)
    paths, thicknesses = [trunk], [max(1, int(round(rng.uniform(3.0, 5.0) * scale)))]
    for _ in range(int(rng.integers(1, 4))):
        origin = trunk[int(rng.integers(1, len(trunk) - 1))]
        side = rng.choice([-1.0, 1.0])
        paths.append(walk(origin, main_direction + side * rng.uniform(0.5, 1.2), length * rng.uniform(0.25, 0.5)))
        thicknesses.append(max(1, thicknesses[0] - 1))
    return _render(paths, thicknesses[0] + 2.0, closed=False, thicknesses=thicknesses, blur=0.4 * scale)


def _shape_stain(rng: np.random.Generator, size: int) -> np.ndarray:
    # A larger blob (10-18% of the side) with a very soft edge.
    radius = rng.uniform(0.05, 0.09) * size
    # soft, but with an edge: a fully blurred blob is indistinguishable from cloudy texture
    blur = 0.12 * radius
    return _render([_blob_outline(rng, radius)], 3 * blur + 1, closed=True, blur=blur)


def _shape_missing(rng: np.random.Generator, size: int) -> np.ndarray:
    # A patch (10-17% of the side) where the texture will be flattened.
    radius = rng.uniform(0.05, 0.085) * size
    blur = max(0.6, 0.08 * radius)
    return _render([_blob_outline(rng, radius)], 3 * blur + 1, closed=True, blur=blur)


def _smooth(window: np.ndarray, sigma: float) -> np.ndarray:
    """Heavy Gaussian smoothing, done at reduced resolution because sigma is large."""
    height, width = window.shape
    factor = max(1, int(sigma / 3.0))
    small = cv2.resize(
        window, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / factor), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _amplitude(
    rng: np.random.Generator, window: np.ndarray, alpha: np.ndarray, magnitude: float, dark_share: float
) -> float:
    """Signed intensity change: dark with probability ``dark_share``, but turned the other
    way when the surface under the defect has no headroom, so clipping at 0 or 255
    cannot erase the defect."""
    sign = -1.0 if rng.random() < dark_share else 1.0
    weights = alpha / max(float(alpha.sum()), 1e-6)
    local_mean = float((window * weights).sum())
    headroom = local_mean if sign < 0 else 255.0 - local_mean
    if headroom < magnitude and (255.0 - local_mean if sign < 0 else local_mean) > headroom:
        sign = -sign
    return sign * magnitude


def _effect_scratch(rng: np.random.Generator, window: np.ndarray, alpha: np.ndarray, contrast: float) -> np.ndarray:
    amplitude = _amplitude(rng, window, alpha, _strength(rng, 2.2, 3.8) * contrast, dark_share=0.6)
    return window + np.float32(amplitude) * alpha


def _effect_spot(rng: np.random.Generator, window: np.ndarray, alpha: np.ndarray, contrast: float) -> np.ndarray:
    amplitude = _amplitude(rng, window, alpha, _strength(rng, 2.4, 3.4) * contrast, dark_share=0.65)
    # A spot partly covers the texture underneath instead of only shifting it.
    cover = np.float32(rng.uniform(0.3, 0.7)) * alpha
    flat = _smooth(window, max(1.0, 0.1 * max(window.shape)))
    return window + cover * (flat - window) + np.float32(amplitude) * alpha


def _effect_crack(rng: np.random.Generator, window: np.ndarray, alpha: np.ndarray, contrast: float) -> np.ndarray:
    # Cracks are shadows, dark unless the surface is already too dark to show one.
    amplitude = _amplitude(rng, window, alpha, _strength(rng, 2.5, 4.0) * contrast, dark_share=1.0)
    return window + np.float32(amplitude) * alpha


def _effect_stain(rng: np.random.Generator, window: np.ndarray, alpha: np.ndarray, contrast: float) -> np.ndarray:
    amplitude = _amplitude(rng, window, alpha, _strength(rng, 2.4, 3.4) * contrast, dark_share=0.6)
    # A smudge also dulls the texture a little.
    dull = np.float32(rng.uniform(0.2, 0.5)) * alpha
    flat = _smooth(window, max(1.0, 0.12 * max(window.shape)))
    return window + dull * (flat - window) + np.float32(amplitude) * alpha


def _effect_missing(rng: np.random.Generator, window: np.ndarray, alpha: np.ndarray, contrast: float) -> np.ndarray:
    flat = _smooth(window, max(1.5, 0.25 * max(window.shape)))
    offset = _amplitude(rng, flat, alpha, _strength(rng, 1.3, 2.2) * contrast, dark_share=0.5)
    return window + alpha * (flat + np.float32(offset) - window)


_DEFECT_MAKERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "scratch": _shape_scratch,
    "spot": _shape_spot,
    "crack": _shape_crack,
    "stain": _shape_stain,
    "missing": _shape_missing,
}
_DEFECT_EFFECTS: dict[str, Callable[[np.random.Generator, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "scratch": _effect_scratch,
    "spot": _effect_spot,
    "crack": _effect_crack,
    "stain": _effect_stain,
    "missing": _effect_missing,
}


def _place(rng: np.random.Generator, patch_shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """Top-left corner putting the patch fully inside the image, away from the border."""
    margin = max(1, int(round(0.03 * size)))
    corners = []
    for extent in patch_shape[:2]:
        if extent > size:
            raise ValueError(f"defect patch of {extent} px does not fit a {size}-px image")
        room = size - extent
        low = min(margin, room // 2)
        corners.append(int(rng.integers(low, room - low + 1)))
    return corners[0], corners[1]
