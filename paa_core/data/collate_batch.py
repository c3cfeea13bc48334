"""Collate (image, target, idx) samples into batches."""

from paa_core.structures.image_list import to_image_list


class BatchCollator:
    """-> (ImageList padded to multiples of `size_divisible`, targets tuple, indices tuple)."""

    def __init__(self, size_divisible=0):
        self.size_divisible = size_divisible

    def __call__(self, batch):
        images, targets, img_ids = zip(*batch)
        return to_image_list(images, self.size_divisible), targets, img_ids


class BBoxAugCollator:
    """-> (images, targets, indices) tuples, untouched: test-time augmentation resizes
    and batches the raw images itself, once per scale and flip."""

    def __call__(self, batch):
        return tuple(zip(*batch))
