"""Run a detector over a test loader, gather the predictions of all processes and evaluate them."""

import datetime
import logging
import os
import time

import torch
from tqdm import tqdm

from paa_core.data.datasets.evaluation import evaluate
from paa_core.utils.comm import all_gather, get_world_size, is_main_process, synchronize


def compute_on_dataset(model, data_loader, device, bbox_aug=None):
    """{dataset index: BoxList on CPU} for the images this process sees.

    `bbox_aug(model, images, device)`, when given, replaces the single forward pass
    (test-time augmentation; the loader then yields untransformed images).
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


def _accumulate_predictions_from_multiple_gpus(predictions_per_gpu, num_images):
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
    model,
    data_loader,
    dataset_name,
    iou_types=("bbox",),
    box_only=False,
    device="cuda",
    expected_results=(),
    expected_results_sigma_tol=4,
    output_folder=None,
    bbox_aug=None,
):
    """Evaluate `model` on `data_loader`'s dataset; returns the results dict on the main
    process ({"bbox": {"AP": ..., ...}}, or with `box_only`, for a model that outputs
    proposals, {"box_proposal": {"AR@100": ..., ...}}) and None on the others.

    Writes `predictions.pth` and `bbox.json` to `output_folder` when given.
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
