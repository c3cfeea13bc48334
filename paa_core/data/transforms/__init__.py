from .build import build_test_transforms, build_transforms, check_train_sizes
from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor

__all__ = [
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
    "build_test_transforms",
    "build_transforms",
    "check_train_sizes",
]
