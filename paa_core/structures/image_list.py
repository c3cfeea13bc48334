"""`ImageList`: a zero-padded batch of images plus each image's true size."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class ImageList:
    """`tensors` is [B, C, H, W]; `image_sizes[i]` is the (h, w) of image i before padding."""

    def __init__(self, tensors: Tensor, image_sizes: list[tuple[int, int]]):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, *args, **kwargs) -> "ImageList":
        return ImageList(self.tensors.to(*args, **kwargs), self.image_sizes)


def to_image_list(
    tensors: ImageList | Tensor | Sequence[Tensor], size_divisible: int = 0
) -> ImageList:
    """Batch images into an ImageList, padding H and W up to multiples of `size_divisible`.

    Accepts an ImageList (returned as is), a [C, H, W] or [B, C, H, W] tensor, or a
    list/tuple of [C, H, W] tensors with the same C.
    """
    if isinstance(tensors, ImageList):
        return tensors
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() == 3:
            tensors = tensors[None]
        if tensors.dim() != 4:
            raise ValueError(
                f"to_image_list expects a [C, H, W] or [B, C, H, W] tensor, got shape {tuple(tensors.shape)}"
            )
        tensors = list(tensors.unbind(0))
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise TypeError(
            "to_image_list expects a tensor, an ImageList or a non-empty list of tensors, "
            f"got {type(tensors).__name__}"
        )
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                "to_image_list: every image must be a [C, H, W] tensor with the same C, "
                "got shapes {}".format([tuple(getattr(x, "shape", ())) for x in tensors])
            )

    max_h = max(int(t.shape[1]) for t in tensors)
    max_w = max(int(t.shape[2]) for t in tensors)
    if size_divisible > 0:
        max_h = int(math.ceil(max_h / size_divisible) * size_divisible)
        max_w = int(math.ceil(max_w / size_divisible) * size_divisible)

    first = tensors[0]
    batched = first.new_zeros((len(tensors), first.shape[0], max_h, max_w))
    for img, pad_img in zip(tensors, batched):
        pad_img[:, : img.shape[1], : img.shape[2]].copy_(img)
    image_sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
    return ImageList(batched, image_sizes)
