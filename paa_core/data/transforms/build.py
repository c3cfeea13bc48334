"""cfg -> the train or test transform pipeline."""

from paa_core.utils.errors import InputError

from . import transforms as T


def check_train_sizes(cfg):
    """One-line InputError for training sizes `Resize` cannot draw from."""
    lo, hi = cfg.INPUT.MIN_SIZE_RANGE_TRAIN
    if lo > 0 and hi > 0:
        if lo > hi:
            raise InputError(
                f"INPUT.MIN_SIZE_RANGE_TRAIN must be (lo, hi) with lo <= hi, got {(lo, hi)}"
            )
    elif not cfg.INPUT.MIN_SIZE_TRAIN:
        raise InputError("INPUT.MIN_SIZE_TRAIN is empty: give at least one size")


def build_transforms(cfg, is_train=True):
    if not is_train:
        return build_test_transforms(cfg)
    check_train_sizes(cfg)
    lo, hi = cfg.INPUT.MIN_SIZE_RANGE_TRAIN
    if lo > 0 and hi > 0:
        # every integer in [lo, hi] equally likely
        min_size = tuple(range(lo, hi + 1))
    else:
        min_size = cfg.INPUT.MIN_SIZE_TRAIN
    return _pipeline(cfg, min_size, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN)


def build_test_transforms(cfg, min_size=None, max_size=None, hflip=False):
    """The test pipeline at INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, or at another size and
    mirrored, as test-time augmentation runs it."""
    min_size = cfg.INPUT.MIN_SIZE_TEST if min_size is None else min_size
    max_size = cfg.INPUT.MAX_SIZE_TEST if max_size is None else max_size
    return _pipeline(cfg, min_size, max_size, 1.0 if hflip else 0.0)


def _pipeline(cfg, min_size, max_size, flip_prob):
    return T.Compose(
        [
            T.Resize(min_size, max_size),
            T.RandomHorizontalFlip(flip_prob),
            T.ToTensor(),
            T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255),
        ]
    )
