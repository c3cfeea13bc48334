"""Assign each prediction (anchor) to at most one ground-truth box by IoU."""

import torch
from torch import Tensor


class Matcher:
    """maskrcnn-benchmark's matcher.

    For a quality matrix [G, A] (e.g. IoU of GT g with anchor a), each anchor gets
    the index of its best GT when that quality is >= `high_threshold`,
    `BETWEEN_THRESHOLDS` when it lies in [low, high), `BELOW_LOW_THRESHOLD` below
    `low_threshold`. With `allow_low_quality_matches`, every anchor that reaches the
    highest quality of some GT (ties included) keeps its own best GT whatever its
    quality. With no GT (G = 0) every anchor is `BELOW_LOW_THRESHOLD`, so callers
    treat it as background.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False
    ):
        if low_threshold > high_threshold:
            raise ValueError(
                f"Matcher low_threshold {low_threshold} exceeds high_threshold {high_threshold}"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """[G, A] float -> [A] int64 of GT indices or the negative codes above."""
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"Matcher expects a [G, A] matrix, got shape {tuple(match_quality_matrix.shape)}"
            )
        num_gt, num_anchors = match_quality_matrix.shape
        if num_gt == 0 or num_anchors == 0:
            return torch.full(
                (num_anchors,),
                self.BELOW_LOW_THRESHOLD,
                dtype=torch.int64,
                device=match_quality_matrix.device,
            )

        matched_vals, matches = match_quality_matrix.max(dim=0)
        all_matches = matches.clone() if self.allow_low_quality_matches else None

        below_low = matched_vals < self.low_threshold
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[below_low] = self.BELOW_LOW_THRESHOLD
        matches[between] = self.BETWEEN_THRESHOLDS

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(matches, all_matches, match_quality_matrix)
        return matches

    def set_low_quality_matches_(
        self, matches: Tensor, all_matches: Tensor, match_quality_matrix: Tensor
    ) -> None:
        """Give back their best GT to anchors that are a best anchor of some GT.

        Args:
            matches: [A] the thresholded matches, changed in place.
            all_matches: [A] each anchor's best GT before thresholding.
            match_quality_matrix: [G, A].
        """
        highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)
        is_best = match_quality_matrix == highest_quality_foreach_gt[:, None]
        best_anchor = is_best.any(dim=0)
        matches[best_anchor] = all_matches[best_anchor]
