"""COCO box evaluation: write `bbox.json`, run pycocotools' COCOeval, check expected numbers."""

import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import PLUS_ONE_OFFSET, box_iou

from .analysis import report_analysis

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def prepare_for_coco_detection(predictions, dataset):
    """COCO result records from one BoxList per dataset index (in the network input's frame).

    Boxes are rescaled to the original image size and written as [x, y, w, h] with the
    "+1" widths (w = x2 - x1 + 1) of the reference; labels map back to json category ids.
    """
    category_map = np.zeros(max(dataset.contiguous_category_id_to_json_id) + 1, dtype=np.int64)
    for contiguous_id, json_id in dataset.contiguous_category_id_to_json_id.items():
        category_map[contiguous_id] = json_id
    coco_results = []
    for image_idx, prediction in enumerate(predictions):
        if len(prediction) == 0:
            continue
        img_info = dataset.get_img_info(image_idx)
        prediction = prediction.resize((img_info["width"], img_info["height"])).convert("xywh")
        image_id = int(dataset.id_to_img_map[image_idx])
        boxes = prediction.bbox.tolist()
        scores = prediction.get_field("scores").tolist()
        categories = category_map[prediction.get_field("labels").numpy()].tolist()
        coco_results.extend(
            {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
            for b, s, c in zip(boxes, scores, categories)
        )
    return coco_results


def evaluate_predictions_on_coco(coco_gt, coco_results, json_result_file, iou_type="bbox"):
    """Run COCOeval on `coco_results` (also written to `json_result_file`); returns the COCOeval."""
    with open(json_result_file, "w") as f:
        json.dump(coco_results, f)
    if coco_results:
        coco_dt = coco_gt.loadRes(json_result_file)
    else:
        # loadRes rejects an empty list; an empty result set must score 0, not crash.
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": coco_gt.dataset["images"],
            "categories": coco_gt.dataset["categories"],
            "annotations": [],
        }
        coco_dt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class COCOResults:
    """The six summary numbers per IoU type, and their printout."""

    def __init__(self, *iou_types):
        self.results = OrderedDict((t, OrderedDict((m, -1.0) for m in METRICS)) for t in iou_types)

    def update(self, coco_eval):
        iou_type = coco_eval.params.iouType
        for metric, value in zip(METRICS, coco_eval.stats[: len(METRICS)]):
            self.results[iou_type][metric] = float(value)

    def table(self):
        """A fixed-width table: one row per IoU type, one column per metric."""
        lines = ["| task | " + " | ".join(f"{m:>6}" for m in METRICS) + " |"]
        lines.append("|------|" + "|".join("-" * 8 for _ in METRICS) + "|")
        for task, metrics in self.results.items():
            # pycocotools reports -1 for an area range without ground truth.
            cells = [f"{100 * v:6.2f}" if v >= 0 else f"{'n/a':>6}" for v in metrics.values()]
            lines.append(f"| {task:<4} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def check_expected_results(results, expected_results, sigma_tol):
    """Log PASS/FAIL for each (task, metric, mean, std): PASS when within mean +- sigma_tol*std.

    Returns True when every check passes.
    """
    logger = logging.getLogger("paa_core.inference")
    all_ok = True
    for task, metric, mean, std in expected_results:
        actual = results[task][metric]
        lo, hi = mean - sigma_tol * std, mean + sigma_tol * std
        ok = lo < actual < hi
        all_ok &= ok
        msg = (
            f"{task} > {metric}: expected {mean}, sigma {std}, tolerance {sigma_tol}, "
            f"range ({lo:.4f}, {hi:.4f}), got {actual:.4f}"
        )
        if ok:
            logger.info("PASS: %s", msg)
        else:
            logger.error("FAIL: %s", msg)
    return all_ok


# COCO object-size ranges (on the annotation's "area") for proposal recall.
PROPOSAL_AREAS = {
    "all": (0, 1e10),
    "small": (0, 32**2),
    "medium": (32**2, 96**2),
    "large": (96**2, 1e10),
}
PROPOSAL_LIMITS = (100, 1000)


def _match_overlaps(iou):
    """Greedy one-to-one cover of GTs by proposals: repeatedly take the GT whose best
    remaining proposal overlaps it most, record that IoU and remove both. iou [G, P] -> [G]."""
    iou = iou.clone()
    overlaps = iou.new_zeros(iou.shape[0])
    for _ in range(min(iou.shape)):
        best_per_gt, best_proposal = iou.max(dim=1)
        gt = int(best_per_gt.argmax())
        overlaps[gt] = best_per_gt[gt]
        iou[:, best_proposal[gt]] = -1
        iou[gt, :] = -1
    return overlaps


def evaluate_box_proposals(predictions, dataset, area="all", limit=None):
    """Average recall of the proposals ("objectness" field, best first) over IoU
    thresholds 0.5:0.95:0.05, for the non-crowd GTs whose annotation area is in
    PROPOSAL_AREAS[area]; each image contributes its best `limit` proposals."""
    low, high = PROPOSAL_AREAS[area]
    overlaps = []
    for image_idx, prediction in enumerate(predictions):
        img_info = dataset.get_img_info(image_idx)
        prediction = prediction.resize((img_info["width"], img_info["height"])).convert("xyxy")
        order = prediction.get_field("objectness").argsort(descending=True)
        boxes = prediction.bbox[order][:limit]
        anns = dataset.coco.imgToAnns.get(int(dataset.id_to_img_map[image_idx]), [])
        anns = [a for a in anns if a.get("iscrowd", 0) == 0 and low <= a["area"] <= high]
        if not anns:
            continue
        gt = (
            BoxList(
                torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4),
                (img_info["width"], img_info["height"]),
                mode="xywh",
            )
            .convert("xyxy")
            .bbox
        )
        if len(boxes) == 0:
            overlaps.append(gt.new_zeros(len(gt)))
            continue
        overlaps.append(_match_overlaps(box_iou(gt, boxes, offset=PLUS_ONE_OFFSET)))
    overlaps = torch.cat(overlaps) if overlaps else torch.zeros(0)
    thresholds = torch.arange(0.5, 0.95 + 1e-5, 0.05)
    recalls = (overlaps[None, :] >= thresholds[:, None]).float().mean(dim=1)
    return {
        "ar": float(recalls.mean()) if len(overlaps) else 0.0,
        "recalls": recalls,
        "num_pos": len(overlaps),
    }


def proposal_recall_results(predictions, dataset):
    """{"AR@100", "ARs@100", "ARm@100", "ARl@100", "AR@1000", ...} for PROPOSAL_LIMITS."""
    results = OrderedDict()
    for limit in PROPOSAL_LIMITS:
        for area, suffix in (("all", ""), ("small", "s"), ("medium", "m"), ("large", "l")):
            results[f"AR{suffix}@{limit}"] = evaluate_box_proposals(
                predictions, dataset, area, limit
            )["ar"]
    return results


def do_coco_evaluation(
    dataset,
    predictions,
    output_folder,
    iou_types,
    expected_results,
    expected_results_sigma_tol,
    box_only=False,
):
    """Evaluate the predictions (one BoxList per dataset index) and return the results dict:
    {"bbox": {AP...}}, or with `box_only` (proposals) {"box_proposal": {AR...}}."""
    logger = logging.getLogger("paa_core.inference")
    if box_only:
        results = {"box_proposal": proposal_recall_results(predictions, dataset)}
        logger.info(
            "Proposal recall:\n%s",
            "\n".join(f"{k:>8}: {100 * v:6.2f}" for k, v in results["box_proposal"].items()),
        )
        check_expected_results(results, expected_results, expected_results_sigma_tol)
        return results
    if tuple(iou_types) != ("bbox",):
        raise ValueError(
            f"paa_core evaluates boxes only; iou_types must be ('bbox',), got {iou_types}"
        )
    coco_results = prepare_for_coco_detection(predictions, dataset)
    logger.info("Evaluating %d detections on %d images", len(coco_results), len(predictions))
    results = COCOResults("bbox")
    json_file = os.path.join(output_folder, "bbox.json") if output_folder else "bbox.json"
    coco_eval = evaluate_predictions_on_coco(dataset.coco, coco_results, json_file, "bbox")
    results.update(coco_eval)
    logger.info("COCO results:\n%s", results.table())
    report_analysis(coco_eval, output_folder)
    check_expected_results(results.results, expected_results, expected_results_sigma_tol)
    return results.results
