"""LayerCAM (Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class
Activation Maps for Localization", IEEE Transactions on Image Processing 30, 2021,
https://ieeexplore.ieee.org/document/9462463).

Each activation is weighted by the positive part of its *own* gradient instead of
one weight per channel (sec. 3, the map M^c):

    M^c = ReLU( sum_k ReLU(G^k) ⊙ A^k ),     G^k = dy^c / dA^k

One weight per channel (Grad-CAM's mean gradient) treats every position of a channel
alike; channels of shallow layers respond all over the image, so their Grad-CAM
spreads over the background. Keeping only the positions whose own gradient raises
the class score is what makes the maps of earlier, finer layers usable, and fusing
several layers worthwhile (:mod:`camcore.methods.fusion`). The paper also scales shallow-layer maps
by tanh(2 M / max M) before fusing; camcore does not (see the fusion module).

:func:`layer_cam_map` returns the sum before the outer ReLU; the engine applies the
ReLU and the [0, 1] scaling.

    >>> import numpy as np
    >>> activations = np.array([[[1.0, 2.0], [3.0, 0.0]]])   # (h=1, w=2, K=2)
    >>> gradients = np.array([[[0.5, -1.0], [2.0, 4.0]]])
    >>> layer_cam_map(activations, gradients)                  # the -1 gradient is dropped
    array([[0.5, 6. ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from camcore.methods._checks import activations_and_gradients, as_float32
from camcore.methods.base import CamInputs, MethodSpec


def layer_cam_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """sum_k ReLU(G^k) ⊙ A^k: (h, w) float32, before the outer ReLU (Jiang et al. 2021)."""
    a, g = activations_and_gradients(activations, gradients)
    return as_float32((np.maximum(g, 0.0) * a).sum(axis=-1), "LayerCAM map")


def _cam(inputs: CamInputs) -> np.ndarray:
    return layer_cam_map(inputs.activations, inputs.gradients)


SPEC = MethodSpec(
    key="layer_cam",
    label="LayerCAM",
    family="gradient",
    cam=_cam,
    needs=frozenset({"activations", "gradients"}),
    reference="Jiang et al., IEEE TIP 2021",
    definition="ReLU(Σ_k ReLU(∂y_c/∂A^k) ⊙ A^k): each position weighted by its own positive gradient",
    url="https://ieeexplore.ieee.org/document/9462463",
)
