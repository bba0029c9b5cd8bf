"""Two models on one image: which class each one explains.

A class index names the same class in two models only when they were trained on the same
classes, and the only thing both models say about that is their number of outputs. So:

* **same number of classes** (e.g. a retrained ``vgg_defect`` against ``resnet_defect``,
  both clean/defective): both explain the chosen class index;
* **different numbers of classes** (e.g. a defect model against an ImageNet model): the
  indices do not correspond, so model B explains its own top-1 class and model A the
  chosen one.

    >>> pair_classes(1, 2, 2, top1_b=0).class_b
    1
    >>> pair_classes(1, 2, 1000, top1_b=417).class_b
    417
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClassPairing", "pair_classes"]


@dataclass(frozen=True)
class ClassPairing:
    """The class each model explains, and whether it is the same index for both."""

    class_a: int
    class_b: int
    same_index: bool

    def describe(self, name_a: str, name_b: str) -> str:
        """One sentence for the user, e.g. "Both models explain class 1 (defective)."."""
        if self.same_index:
            names = name_a if name_a == name_b else f"A calls it {name_a}, B {name_b}"
            return f"Both models explain class {self.class_a} ({names}): they have the same number of classes."
        return (f"The models have different numbers of classes, so class indices do not correspond: "
                f"A explains the chosen class ({name_a}), B its own top-1 ({name_b}).")


def pair_classes(class_a: int, n_classes_a: int, n_classes_b: int, top1_b: int) -> ClassPairing:
    """The classes two models explain on one image (see the module docstring): ``class_a``
    for A; for B the same index when both have ``n_classes`` outputs, else B's ``top1_b``."""
    class_a, n_classes_a, n_classes_b, top1_b = int(class_a), int(n_classes_a), int(n_classes_b), int(top1_b)
    if not 0 <= class_a < n_classes_a:
        raise ValueError(f"class {class_a} is not one of model A's {n_classes_a} classes")
    if not 0 <= top1_b < n_classes_b:
        raise ValueError(f"top-1 class {top1_b} is not one of model B's {n_classes_b} classes")
    if n_classes_a == n_classes_b:
        return ClassPairing(class_a, class_a, True)
    return ClassPairing(class_a, top1_b, False)
