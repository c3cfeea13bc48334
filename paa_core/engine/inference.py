"""Run a detector over a test loader, gather the predictions of all processes and evaluate them."""

import datetime
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from paa_core.data.datasets.evaluation import evaluate
from paa_core.structures.bounding_box import BoxList
from paa_core.utils.comm import all_gather, get_world_size, is_main_process, synchronize


def compute_on_dataset(
    model: nn.Module,
    data_loader: Iterable,
    device: torch.device,
    bbox_aug: Callable | None = None,
) -> dict[int, BoxList]:
    """The detections of the images this process sees.

    Args:
        model: the detector (set to eval mode here).
        data_loader: yields `(images, targets, dataset indices)`.
        device: where the model runs.
        bbox_aug: `bbox_aug(model, images, device)`, when given, replaces the single
            forward pass (test-time augmentation; the loader then yields untransformed images).

    Returns:
        {dataset index: BoxList on the CPU}.
    """
    model.eval()
    results = {}
    cpu = torch.device("cpu")
    for images, _, image_ids in tqdm(data_loader, disable=not is_main_process()):
        with torch.no_grad():
            if bbox_aug is not None:
                output = bbox_aug(model, images, device)
            else:
                output = model(images.to(device))
        results.update({int(i): o.to(cpu) for i, o in zip(image_ids, output)})
    return results


def _accumulate_predictions_from_multiple_gpus(
    predictions_per_gpu: dict[int, BoxList], num_images: int
) -> list[BoxList] | None:
    """On the main process: one BoxList per dataset index, in index order; None elsewhere."""
    all_predictions = all_gather(predictions_per_gpu)
    if not is_main_process():
        return None
    predictions = {}
    for p in all_predictions:
        predictions.update(p)
    missing = sorted(set(range(num_images)) - set(predictions))
    if missing:
        raise RuntimeError(
            f"no predictions for {len(missing)} of {num_images} images "
            f"(dataset indices {missing[:5]}...): the test sampler did not cover the dataset"
        )
    return [predictions[i] for i in range(num_images)]


def inference(
    model: nn.Module,
    data_loader: DataLoader,
    dataset_name: str,
    iou_types: tuple[str, ...] = ("bbox",),
    box_only: bool = False,
    device: str | torch.device = "cuda",
    expected_results: Sequence = (),
    expected_results_sigma_tol: float = 4,
    output_folder: str | None = None,
    bbox_aug: Callable | None = None,
) -> dict | None:
    """Evaluate `model` on `data_loader`'s dataset. Writes `predictions.pth` and `bbox.json`
    to `output_folder` when given.

    Args:
        model, data_loader, device, bbox_aug: as for `compute_on_dataset`.
        dataset_name: named in the log.
        iou_types: only ("bbox",).
        box_only: the model outputs proposals; evaluate their recall.
        expected_results, expected_results_sigma_tol: APs to check (TEST.EXPECTED_RESULTS).
        output_folder: where the results go, or None.

    Returns:
        On the main process the results dict ({"bbox": {"AP": ..., ...}}, or with
        `box_only` {"box_proposal": {"AR@100": ..., ...}}); None on the others.
    """
    logger = logging.getLogger("paa_core.inference")
    device = torch.device(device)
    dataset = data_loader.dataset
    logger.info("Start evaluation on %s dataset (%d images)", dataset_name, len(dataset))
    start_time = time.time()
    predictions = compute_on_dataset(model, data_loader, device, bbox_aug)
    synchronize()
    total_time = time.time() - start_time
    num_devices = get_world_size()
    logger.info(
        "Total inference time: %s (%.4f s / img per device, on %d devices)",
        datetime.timedelta(seconds=int(total_time)),
        total_time * num_devices / max(len(dataset), 1),
        num_devices,
    )

    predictions = _accumulate_predictions_from_multiple_gpus(predictions, len(dataset))
    if not is_main_process():
        return None
    if output_folder:
        torch.save(predictions, os.path.join(output_folder, "predictions.pth"))
    return evaluate(
        dataset=dataset,
        predictions=predictions,
        output_folder=output_folder,
        iou_types=iou_types,
        box_only=box_only,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
    )
