"""cfg -> the train or test transform pipeline."""
from . import transforms as T


def build_transforms(cfg, is_train=True):
    if is_train:
        lo, hi = cfg.INPUT.MIN_SIZE_RANGE_TRAIN
        if lo > 0 and hi > 0:
            if lo > hi:
                raise ValueError(
                    "INPUT.MIN_SIZE_RANGE_TRAIN must be (lo, hi) with lo <= hi, got {}".format(
                        (lo, hi)
                    )
                )
            # every integer in [lo, hi] equally likely
            min_size = tuple(range(lo, hi + 1))
        else:
            min_size = cfg.INPUT.MIN_SIZE_TRAIN
        max_size = cfg.INPUT.MAX_SIZE_TRAIN
        flip_prob = cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN
    else:
        min_size = cfg.INPUT.MIN_SIZE_TEST
        max_size = cfg.INPUT.MAX_SIZE_TEST
        flip_prob = 0.0

    return T.Compose(
        [
            T.Resize(min_size, max_size),
            T.RandomHorizontalFlip(flip_prob),
            T.ToTensor(),
            T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255),
        ]
    )
