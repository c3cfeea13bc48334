import pytest
import torch

from paa_core.modeling.matcher import Matcher

# 3 GTs x 6 anchors
QUALITY = torch.tensor(
    [
        [0.90, 0.45, 0.10, 0.20, 0.00, 0.05],
        [0.30, 0.60, 0.20, 0.20, 0.00, 0.05],
        [0.10, 0.10, 0.35, 0.20, 0.00, 0.30],
    ]
)


def test_thresholds_without_low_quality():
    m = Matcher(0.5, 0.4, allow_low_quality_matches=False)
    out = m(QUALITY.clone())
    # anchor 0: best GT 0 (0.9); 1: GT 1 (0.6); 2: 0.35 < 0.4; 3: 0.2 (tie, below);
    # 4: 0; 5: 0.3 below.
    assert out.tolist() == [0, 1, -1, -1, -1, -1]
    assert out.dtype == torch.int64


def test_between_thresholds():
    m = Matcher(0.5, 0.3, allow_low_quality_matches=False)
    out = m(QUALITY.clone())
    assert out.tolist() == [0, 1, Matcher.BETWEEN_THRESHOLDS, -1, -1, Matcher.BETWEEN_THRESHOLDS]


def test_low_quality_matches_restore_best_anchor_of_each_gt():
    m = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    out = m(QUALITY.clone())
    # GT 2's best anchor is 2 (0.35): restored to its own best GT, which is 2.
    assert out.tolist() == [0, 1, 2, -1, -1, -1]


def test_low_quality_ties_and_own_best_gt():
    q = torch.tensor(
        [
            [0.05, 0.05, 0.02, 0.00],  # GT 0: anchors 0 and 1 tie for best
            [0.00, 0.08, 0.01, 0.00],  # GT 1: anchor 1 is best
        ]
    )
    out = Matcher(0.1, 0.1, allow_low_quality_matches=True)(q)
    # anchor 0 -> GT 0; anchor 1 is a best anchor of GT 0 but its own best GT is 1.
    assert out.tolist() == [0, 1, -1, -1]
    out = Matcher(0.1, 0.1, allow_low_quality_matches=False)(q)
    assert out.tolist() == [-1, -1, -1, -1]


def test_paa_pre_assignment_setting():
    # high == low == 0.1: no BETWEEN_THRESHOLDS can appear.
    q = torch.tensor([[0.10, 0.09, 0.50, 0.00], [0.00, 0.00, 0.20, 0.05]])
    out = Matcher(0.1, 0.1, True)(q)
    # anchor 0 reaches 0.1; anchor 1 is below; anchor 2 is the best anchor of both GTs
    # and keeps its own best GT 0; GT 1's best anchor is 2, so anchor 3 stays negative.
    assert out.tolist() == [0, -1, 0, -1]


def test_no_gt_gives_all_background():
    out = Matcher(0.5, 0.4, True)(torch.zeros(0, 5))
    assert out.tolist() == [-1] * 5
    assert out.dtype == torch.int64


def test_no_anchor_gives_empty():
    assert Matcher(0.5, 0.4, True)(torch.zeros(3, 0)).numel() == 0


def test_input_not_modified_and_bad_shapes():
    q = QUALITY.clone()
    Matcher(0.5, 0.4, True)(q)
    assert torch.equal(q, QUALITY)
    with pytest.raises(ValueError, match=r"\[G, A\].*\(6,\)"):
        Matcher(0.5, 0.4)(torch.zeros(6))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.5)
