"""Eigen-CAM (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN 2020, https://arxiv.org/abs/2008.00299).

The map is the layer's activations projected on their first principal component:
with X the (h·w, K) activations, each channel (column) centred on its mean, and
X = U S V^T its SVD (computed through the smaller Gram matrix, X X^T or X^T X),

    M = ReLU( X v_1 ),     v_1 the first right singular vector

No gradient and no class: the map shows what the layer responds to most, whatever
the class asked for (the dashboard says so). The engine applies the ReLU and the
[0, 1] scaling.

**Sign.** A principal component has no sign of its own (v_1 and -v_1 are equally
valid), and the SVD's choice is arbitrary, so the ReLU could keep the object or its
background from one image to the next (pytorch-grad-cam leaves the sign to the SVD).
Here the sign is fixed so that the projection correlates positively with the
channel-mean activation map mean_k A^k, i.e. "strong where the layer is strongly
active". That correlation is proportional to sum_k v_1k, so the rule also reads
"v_1 points into the positive orthant on balance". When it is exactly zero (e.g. the
channel mean is constant over the map) the tie is broken by making the projection's
largest-magnitude value (the first, on equal magnitudes) positive.

Degenerate inputs give zeros, never NaN: all-zero or per-channel constant
activations have nothing to project (constant channels are centred to exact zeros,
not to rounding noise the decomposition would pick up), and a 1×1 map has no spatial
variation.

    >>> import numpy as np
    >>> blob = np.array([[0.0, 1.0], [0.0, 2.0]])                 # (2, 2) spatial pattern
    >>> activations = np.stack([blob, 3.0 * blob], axis=-1)     # two channels, one pattern
    >>> np.round(eigen_cam_map(activations) / np.sqrt(10.0), 4)  # the centred pattern, sign kept
    array([[-0.75,  0.25],
           [-0.75,  1.25]])
"""

from __future__ import annotations

import numpy as np

from camcore._blas import one_blas_thread
from camcore.methods._checks import activation_maps, as_float32
from camcore.methods.base import CamInputs, MethodSpec


def eigen_cam_map(activations: np.ndarray) -> np.ndarray:
    """Projection of the channel-centred (h·w, K) activations on their first principal
    component, signed to correlate positively with the channel-mean map: (h, w) float32,
    before the ReLU (Muhammad & Yeasin 2020)."""
    a = activation_maps(activations)
    height, width, channels = a.shape
    flat = a.reshape(height * width, channels)
    centred = flat - flat.mean(axis=0)
    centred[:, flat.max(axis=0) == flat.min(axis=0)] = 0.0
    if not centred.any():
        return np.zeros((height, width), np.float32)
    projection = _first_component_projection(centred)
    channel_mean = flat.mean(axis=1)
    agreement = float(projection @ (channel_mean - channel_mean.mean()))
    if agreement == 0.0:
        agreement = float(projection[np.argmax(np.abs(projection))])
    if agreement < 0.0:
        projection = -projection
    return as_float32(projection.reshape(height, width), "Eigen-CAM map")


def _first_component_projection(centred: np.ndarray) -> np.ndarray:
    """X v_1 for the SVD X = U S V^T, from the eigendecomposition of the smaller of the
    two Gram matrices: the same vector (up to sign) as a full SVD, about ten times
    faster on VGG-sized layers, and accurate in float64 unless the top two singular
    values nearly tie (when the component itself is ill-defined)."""
    positions, channels = centred.shape
    with one_blas_thread():
        if positions <= channels:
            eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)  # X X^T = U S^2 U^T
            return vectors[:, -1] * np.sqrt(max(float(eigenvalues[-1]), 0.0))  # X v_1 = s_1 u_1
        _, vectors = np.linalg.eigh(centred.T @ centred)  # X^T X = V S^2 V^T
        return centred @ vectors[:, -1]


def _cam(inputs: CamInputs) -> np.ndarray:
    return eigen_cam_map(inputs.activations)


SPEC = MethodSpec(
    key="eigen_cam",
    label="Eigen-CAM",
    family="activation",
    cam=_cam,
    needs=frozenset({"activations"}),
    reference="Muhammad & Yeasin, IJCNN 2020",
    definition="ReLU of the activations' projection on their first principal component (class-agnostic)",
    url="https://arxiv.org/abs/2008.00299",
    class_specific=False,
)
