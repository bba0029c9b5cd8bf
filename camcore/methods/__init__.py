"""The registry of CAM methods the UI iterates over.

Adding a method: write its weights in a module beside this one, expose it on
the Explainer, and add one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    key: str  # Explainer method and plain-function name
    label: str  # column title in the UI
    uses_max_n: bool  # Faster-Score-CAM: the max_N slider applies
    reference: str


METHODS: dict[str, MethodSpec] = {
    spec.key: spec
    for spec in (
        MethodSpec("grad_cam", "Grad-CAM", False, "Selvaraju et al., ICCV 2017"),
        MethodSpec("grad_cam_plus_plus", "Grad-CAM++", False, "Chattopadhyay et al., WACV 2018"),
        MethodSpec("score_cam", "Score-CAM", False, "Wang et al., CVPR-W 2020"),
        MethodSpec("faster_score_cam", "Faster-Score-CAM", True, "Score-CAM on the max_N channels of largest std, 2019"),
    )
}
