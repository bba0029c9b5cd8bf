"""Which class each of two models explains (camcore.pair_classes)."""

from __future__ import annotations

import pytest

import camcore
from camcore.pairing import pair_classes


def test_same_number_of_classes_means_the_same_index():
    pairing = camcore.pair_classes(1, 2, 2, top1_b=0)
    assert (pairing.class_a, pairing.class_b, pairing.same_index) == (1, 1, True)
    assert pairing.describe("defective", "defective") == (
        "Both models explain class 1 (defective): they have the same number of classes.")
    assert "A calls it defective, B NG" in pairing.describe("defective", "NG")


def test_different_numbers_of_classes_let_b_explain_its_own_top1():
    pairing = pair_classes(1, 2, 1000, top1_b=417)
    assert (pairing.class_a, pairing.class_b, pairing.same_index) == (1, 417, False)
    assert "B its own top-1 (balloon)" in pairing.describe("defective", "balloon")
    # index 1 exists in B too, but it is not the same class: B still explains its top-1
    assert pair_classes(1, 2, 3, top1_b=2).class_b == 2


@pytest.mark.parametrize("args", [(2, 2, 2, 0), (-1, 2, 2, 0), (0, 2, 3, 3)])
def test_classes_out_of_range_are_refused(args):
    with pytest.raises(ValueError, match="class"):
        pair_classes(*args)
