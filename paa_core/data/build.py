"""cfg -> datasets, samplers and DataLoaders for training and testing."""

import atexit
import bisect
import logging
import multiprocessing
import os
import signal

import torch
from torch.utils.data import DataLoader
from torch.utils.data.sampler import BatchSampler

from paa_core.config.detector import ClassCount, class_count
from paa_core.config.loading import load_catalog
from paa_core.utils.comm import get_rank, get_world_size
from paa_core.utils.errors import InputError

from . import datasets as D
from . import samplers
from .collate_batch import BatchCollator, BBoxAugCollator
from .transforms import build_transforms


def dataset_args(dataset_catalog, key, names):
    """The COCODataset arguments of each dataset that DATASETS.`key` `names`, from the
    catalog; a one-line InputError naming the key for an empty list, a name the catalog
    does not know or an entry that is not COCO json."""
    if not isinstance(names, (list, tuple)) or len(names) == 0:
        raise InputError(f"DATASETS.{key} is empty: name at least one dataset")
    found = []
    for name in names:
        try:
            data = dataset_catalog.get(name)
        except (KeyError, RuntimeError, ValueError) as e:  # a catalog's own lookup error
            raise InputError(f"DATASETS.{key}: {e}") from None
        # A catalog written for the reference may still name a dataset class.
        if data.get("factory", "COCODataset") != "COCODataset":
            raise InputError(
                f"DATASETS.{key}: {name!r}: the catalog names {data['factory']!r}, but "
                f"paa_core reads COCO-format json only (COCODataset)"
            )
        found.append(data["args"])
    return found


def build_dataset(dataset_list, transforms, dataset_catalog, is_train=True):
    """One dataset per name for testing; for training, all names concatenated into one."""
    key = "TRAIN" if is_train else "TEST"
    datasets = []
    for name, args in zip(dataset_list, dataset_args(dataset_catalog, key, dataset_list)):
        # training skips images without a usable box; testing keeps every image
        dataset = D.COCODataset(
            **args, remove_images_without_annotations=is_train, transforms=transforms
        )
        if is_train and len(dataset) == 0:
            raise InputError(
                f"DATASETS.TRAIN: {name}: no image has a usable box "
                "(non-crowd, wider and taller than 1 pixel): nothing to train on"
            )
        if not is_train:
            _check_test_set(dataset, name)
        datasets.append(dataset)
    if not is_train:
        return datasets
    return [datasets[0] if len(datasets) == 1 else D.ConcatDataset(datasets)]


def _check_test_set(dataset, name):
    """A test set needs images; without annotations it still gets its bbox.json (e.g. for a
    benchmark server) but no AP."""
    if len(dataset) == 0:
        raise InputError(f"DATASETS.TEST: {name}: it lists no images: nothing to evaluate")
    if not dataset.coco.anns:
        logging.getLogger("paa_core.data").warning(
            "DATASETS.TEST: %s has no annotations: its detections are written, its APs are n/a",
            name,
        )


def check_num_classes(dataset, name, classes: ClassCount):
    """The detector's class count (`classes`) must leave a label for every category of
    the dataset `name`, plus the background."""
    parts = getattr(dataset, "datasets", [dataset])
    needed = max(len(d.categories) for d in parts) + 1
    if classes.num_classes < needed:
        raise InputError(
            f"{classes.key} is {classes.num_classes} but {name} has {needed - 1} categories: "
            f"set it to {needed} (categories + background)"
        )


def _leave_stop_signals_to_main(worker_id):
    """DataLoader workers move to a process group of their own, so that Ctrl-C and a
    SIGTERM sent to the training's process group (by a terminal, `kill -- -PGID`, a
    launcher) reach only the main process, which saves a checkpoint and then shuts the
    workers down; they also exit by themselves when the main process is gone. A
    scheduler that signals every process by pid reaches the workers too: they ignore
    SIGINT/SIGTERM, since a worker killed by one would end the main process with an
    error wherever it is instead of letting it save and stop."""
    os.setpgrp()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _end_workers_at_exit():
    """At interpreter exit multiprocessing stops its daemonic children, DataLoader workers
    included, with SIGTERM and waits for them; workers ignore SIGTERM (above), so a tool
    leaving on an error while a loader runs would wait forever. They are killed instead
    (a loader that finished has shut its workers down already), without PyTorch's SIGCHLD
    handler, which would report each killed worker as a crash."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


# Registered after multiprocessing's own exit handler (imported with torch), so it runs first.
atexit.register(_end_workers_at_exit)


def make_data_sampler(dataset, shuffle, distributed):
    """A set_epoch-able sampler: this process's share when distributed, everything otherwise."""
    if distributed:
        return samplers.DistributedSampler(
            dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=shuffle
        )
    return samplers.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle)


def _compute_aspect_ratios(dataset):
    ratios = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        ratios.append(float(info["height"]) / float(info["width"]))
    return ratios


def make_batch_data_sampler(
    dataset, sampler, aspect_grouping, images_per_batch, num_iters=None, start_iter=0
):
    """Batches grouped by aspect ratio (bins `aspect_grouping`, e.g. [1]: h < w vs h >= w)."""
    if aspect_grouping:
        bins = sorted(aspect_grouping)
        group_ids = [bisect.bisect_right(bins, r) for r in _compute_aspect_ratios(dataset)]
        batch_sampler = samplers.GroupedBatchSampler(
            sampler, group_ids, images_per_batch, drop_uneven=False
        )
    else:
        batch_sampler = BatchSampler(sampler, images_per_batch, drop_last=False)
    if num_iters is not None:
        batch_sampler = samplers.IterationBasedBatchSampler(batch_sampler, num_iters, start_iter)
    return batch_sampler


def make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0):
    """Training: one DataLoader of SOLVER.MAX_ITER batches (resumed at `start_iter`).
    Testing: a list with one DataLoader per name in DATASETS.TEST, in order.

    SOLVER.IMS_PER_BATCH / TEST.IMS_PER_BATCH are global batch sizes, split evenly
    over the processes.
    """
    num_gpus = get_world_size() if is_distributed else 1
    if is_train:
        key, images_per_batch = "SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH
        shuffle, num_iters = True, cfg.SOLVER.MAX_ITER
    else:
        key, images_per_batch = "TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH
        shuffle, num_iters, start_iter = False, None, 0
    if images_per_batch <= 0 or images_per_batch % num_gpus != 0:
        raise InputError(
            f"{key} ({images_per_batch}) must be a positive multiple of the number of processes ({num_gpus})"
        )
    images_per_gpu = images_per_batch // num_gpus

    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []
    paths_catalog = load_catalog(cfg)
    dataset_list = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    # Test-time augmentation transforms the raw images itself, once per scale and flip.
    bbox_aug = not is_train and cfg.TEST.BBOX_AUG.ENABLED
    transforms = None if bbox_aug else build_transforms(cfg, is_train)
    datasets = build_dataset(dataset_list, transforms, paths_catalog.DatasetCatalog, is_train)

    collator = BBoxAugCollator() if bbox_aug else BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY)
    loaders = []
    classes = class_count(cfg)
    for name, dataset in zip(dataset_list, datasets):
        if classes is not None:  # a proposal-only model ignores the labels
            check_num_classes(dataset, name, classes)
        sampler = make_data_sampler(dataset, shuffle, is_distributed)
        batch_sampler = make_batch_data_sampler(
            dataset, sampler, aspect_grouping, images_per_gpu, num_iters, start_iter
        )
        if is_train:
            # Augmentation seeded per sample, so a resumed run sees the same images.
            dataset = samplers.SeededDataset(dataset)
            batch_sampler = samplers.SeededBatchSampler(
                batch_sampler, cfg.SEED, get_rank(), start_iter
            )
        loaders.append(
            DataLoader(
                dataset,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
                batch_sampler=batch_sampler,
                collate_fn=collator,
                worker_init_fn=_leave_stop_signals_to_main,
                # Its own generator, so that starting the loader leaves the global RNG alone.
                generator=torch.Generator().manual_seed(cfg.SEED),
            )
        )
    return loaders[0] if is_train else loaders
