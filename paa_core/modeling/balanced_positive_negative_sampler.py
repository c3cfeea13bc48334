"""Per-image random subsampling of positive and negative training examples."""

import torch
from torch import Tensor


class BalancedPositiveNegativeSampler:
    """Keeps at most `batch_size_per_image` examples per image, of which at most
    `positive_fraction` are positive; negatives fill the rest. Chosen uniformly at random.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels_per_image: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Draw the examples of each image.

        Args:
            labels_per_image: per image an int tensor [K_i] with 1 (positive), 0
                (negative), -1 (ignored).
        Returns:
            Two lists of bool masks [K_i]: the sampled positives, the sampled negatives.
        """
        pos_masks, neg_masks = [], []
        for labels in labels_per_image:
            positive = torch.nonzero(labels >= 1).squeeze(1)
            negative = torch.nonzero(labels == 0).squeeze(1)
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos_pick = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
            neg_pick = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
            pos_mask = torch.zeros_like(labels, dtype=torch.bool)
            neg_mask = torch.zeros_like(labels, dtype=torch.bool)
            pos_mask[pos_pick] = True
            neg_mask[neg_pick] = True
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
