"""Image + target transforms. Each takes and returns `(image, target)`; target may be None."""

import random

import torch
from torchvision.transforms import functional as F

from paa_core.structures.bounding_box import FLIP_LEFT_RIGHT


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target=None):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self):
        lines = [f"    {t}" for t in self.transforms]
        return "{}(\n{}\n)".format(self.__class__.__name__, "\n".join(lines))


def _image_size(image):
    """(w, h) of a PIL image or of a [..., H, W] tensor."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return image.size


class Resize:
    """Shorter side to a size picked at random from `min_size`, longer side <= `max_size`.

    The size rule and rounding are maskrcnn-benchmark's, so image sizes (and with
    them anchors and results) match the reference exactly.
    """

    def __init__(self, min_size, max_size):
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        if len(min_size) == 0:
            raise ValueError("Resize needs at least one min_size")
        self.min_size = tuple(min_size)
        self.max_size = max_size

    def get_size(self, image_size):
        """(h, w) of the output for an image of size (w, h)."""
        w, h = image_size
        size = random.choice(self.min_size)
        if self.max_size is not None:
            short, long = float(min(w, h)), float(max(w, h))
            if long / short * size > self.max_size:
                size = int(round(self.max_size * short / long))
        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def __call__(self, image, target=None):
        image = F.resize(image, list(self.get_size(_image_size(image))))
        if target is not None:
            target = target.resize(_image_size(image))
        return image, target

    def __repr__(self):
        return "Resize(min_size={}, max_size={})".format(
            self.min_size
            if len(self.min_size) <= 4
            else f"{self.min_size[0]}..{self.min_size[-1]} ({len(self.min_size)} values)",
            self.max_size,
        )


class RandomHorizontalFlip:
    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, image, target=None):
        if random.random() < self.prob:
            image = F.hflip(image)
            if target is not None:
                target = target.transpose(FLIP_LEFT_RIGHT)
        return image, target

    def __repr__(self):
        return f"RandomHorizontalFlip(prob={self.prob})"


class ToTensor:
    """PIL RGB image -> float tensor [3, H, W] in [0, 1]."""

    def __call__(self, image, target=None):
        return F.to_tensor(image), target

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """(x - mean) / std per channel; with `to_bgr255` the RGB [0, 1] input becomes BGR [0, 255] first."""

    def __init__(self, mean, std, to_bgr255=True):
        self.mean = list(mean)
        self.std = list(std)
        self.to_bgr255 = to_bgr255

    def __call__(self, image, target=None):
        if self.to_bgr255:
            image = image[[2, 1, 0]] * 255
        return F.normalize(image, mean=self.mean, std=self.std), target

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std}, to_bgr255={self.to_bgr255})"
