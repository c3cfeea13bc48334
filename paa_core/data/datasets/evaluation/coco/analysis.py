"""What a COCO box evaluation says per category, and what the false positives are.

Everything is read from a finished `COCOeval` (evaluate + accumulate, default params)
and written under the inference folder by `report_analysis`:

- `per_class_ap.json`, and a printed table: per category AP (IoU .50:.95), AP50, AP75:
  the numbers pycocotools' summarize() gives when the evaluation is restricted to that
  category (all areas, 100 detections per image; -1 when it has no ground truth).
- `pr_curves.json` / `.png`: per category, precision at pycocotools' 101 recall
  thresholds (all areas, 100 detections) at IoU .50, at .75 and averaged over .50:.95.
- `false_positives.json` / `.png`: the class-confusion summary (`false_positive_summary`).
"""

import json
import logging
import os

import numpy as np
from pycocotools import mask as mask_utils

from paa_core.visualization.plotting import INSTALL_HINT, PlottingUnavailable, pyplot, save_figure

FP_KINDS = ("duplicate", "poor_localisation", "wrong_class", "background")
LOC_IOU = 0.1  # overlap that still points at an object (localisation and class errors)


def _category_names(coco_eval):
    return [coco_eval.cocoGt.cats[c]["name"] for c in coco_eval.params.catIds]


def _max_dets_index(coco_eval, max_dets=100):
    return list(coco_eval.params.maxDets).index(max_dets)


def per_class_ap(coco_eval):
    """[{"category", "AP", "AP50", "AP75"}] per category, in `params.catIds` order (in [0, 1])."""
    precision = coco_eval.eval["precision"][:, :, :, 0, _max_dets_index(coco_eval)]  # [T, R, K]
    iou = coco_eval.params.iouThrs
    rows = []
    for k, name in enumerate(_category_names(coco_eval)):
        row = {"category": name, "category_id": int(coco_eval.params.catIds[k])}
        for metric, p in (
            ("AP", precision[:, :, k]),
            ("AP50", precision[np.isclose(iou, 0.5), :, k]),
            ("AP75", precision[np.isclose(iou, 0.75), :, k]),
        ):
            valid = p[p > -1]
            row[metric] = float(valid.mean()) if valid.size else -1.0
        rows.append(row)
    return rows


def per_class_table(rows):
    width = max([len("category")] + [len(r["category"]) for r in rows])
    lines = [
        f"| {'category':<{width}} |     AP |   AP50 |   AP75 |",
        f"|{'-' * (width + 2)}|--------|--------|--------|",
    ]
    for r in rows:
        cells = [
            f"{100 * r[m]:6.2f}" if r[m] >= 0 else f"{'n/a':>6}" for m in ("AP", "AP50", "AP75")
        ]
        lines.append(f"| {r['category']:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pr_curves(coco_eval):
    """{"recall": [R], "categories": {name: {"iou_0.50", "iou_0.75", "iou_0.50:0.95": [R] or None}}}."""
    precision = coco_eval.eval["precision"][:, :, :, 0, _max_dets_index(coco_eval)]
    iou = coco_eval.params.iouThrs
    curves = {}
    for k, name in enumerate(_category_names(coco_eval)):
        p = precision[:, :, k]
        if (p == -1).all():
            curves[name] = None
            continue
        curves[name] = {
            "iou_0.50": p[np.isclose(iou, 0.5)][0].tolist(),
            "iou_0.75": p[np.isclose(iou, 0.75)][0].tolist(),
            "iou_0.50:0.95": p.mean(axis=0).tolist(),
        }
    return {"recall": coco_eval.params.recThrs.tolist(), "categories": curves}


def false_positive_summary(coco_eval, score_threshold=0.3):
    """Counts, per category, of the detections with score >= `score_threshold`.

    Detections are those COCOeval kept (at most 100 per image and category, all areas),
    matched by COCOeval at IoU 0.50. A detection of category c is a true positive when
    it matched a GT; it is ignored when it matched a crowd region; every other one is a
    false positive of exactly one kind, the first that applies:

    1. duplicate: IoU >= 0.5 with a non-crowd GT of category c (so that GT was already
       matched by a higher-scoring detection);
    2. poor_localisation: IoU in [0.1, 0.5) with a non-crowd GT of category c;
    3. wrong_class: IoU >= 0.1 with a non-crowd GT of another category; `confusion`
       counts it under (c, the category of the other GT of highest IoU);
    4. background: IoU < 0.1 with every non-crowd GT of the image.

    IoU is COCO's (boxes [x, y, w, h], no +1). `missed` counts, per category, the
    non-crowd GTs that no detection above the threshold matched (false negatives; a
    prefix of the score-sorted detections matches as the whole list did).
    Returns {"score_threshold", "categories": {name: {"true_positives", "missed",
    "false_positives": {kind: n}}}, "confusion": {"labels": [names], "counts": [[n]]}}
    with confusion rows = detected category, columns = GT category.
    """
    params = coco_eval.params
    names = _category_names(coco_eval)
    num_images, num_areas = len(params.imgIds), len(params.areaRng)
    t50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    summary = {
        n: {"true_positives": 0, "missed": 0, "false_positives": dict.fromkeys(FP_KINDS, 0)}
        for n in names
    }
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    gts_of_image = _non_crowd_gts(coco_eval)
    for k, name in enumerate(names):
        counts = summary[name]
        for i, img_id in enumerate(params.imgIds):
            e = coco_eval.evalImgs[k * num_areas * num_images + i]  # area "all" comes first
            if e is None:
                continue
            fp_ids = _count_matches(e, t50, score_threshold, counts)
            if len(fp_ids) == 0:
                continue
            boxes = np.array([coco_eval.cocoDt.anns[d]["bbox"] for d in fp_ids], dtype=np.float64)
            kind, confused_with = _false_positive_kinds(boxes, *gts_of_image[img_id], k)
            for j, n in enumerate(np.bincount(kind, minlength=len(FP_KINDS))):
                counts["false_positives"][FP_KINDS[j]] += int(n)
            np.add.at(confusion[k], confused_with, 1)
    return {
        "score_threshold": score_threshold,
        "categories": summary,
        "confusion": {"labels": names, "counts": confusion.tolist()},
    }


def _non_crowd_gts(coco_eval):
    """{image id: (boxes [G, 4] as COCO's x, y, w, h; their category columns [G], -1 for a
    category outside the evaluation)}: what a false positive can overlap."""
    column = {c: k for k, c in enumerate(coco_eval.params.catIds)}
    gts_of_image = {}
    for img_id in coco_eval.params.imgIds:
        anns = [a for a in coco_eval.cocoGt.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        gts_of_image[img_id] = (
            np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
            np.array([column.get(a["category_id"], -1) for a in anns], dtype=np.int64),
        )
    return gts_of_image


def _count_matches(e, t50, score_threshold, counts):
    """Adds one image's true positives and missed GTs of one category (COCOeval's matches
    `e` at IoU .50) to `counts`; returns the ids of its false positives above the threshold."""
    scores = np.asarray(e["dtScores"])
    keep = scores >= score_threshold
    matched = np.asarray(e["dtMatches"][t50]) > 0
    ignored = np.asarray(e["dtIgnore"][t50]).astype(bool)
    counts["true_positives"] += int((keep & matched & ~ignored).sum())
    gt_ignored = np.asarray(e["gtIgnore"]).astype(bool)
    kept_ids = {d for d, s in zip(e["dtIds"], scores) if s >= score_threshold}
    gt_hit = np.array([m in kept_ids for m in e["gtMatches"][t50]], dtype=bool)
    counts["missed"] += int((~gt_ignored & ~gt_hit).sum())
    return np.asarray(e["dtIds"])[keep & ~matched & ~ignored]


def _false_positive_kinds(boxes, gt_boxes, gt_cols, k):
    """Each false positive of category column `k` (`boxes` [D, 4], x, y, w, h) as an index
    into FP_KINDS, by its IoUs with the image's non-crowd GTs; and for the wrong-class ones
    the column of the other-category GT each overlaps most."""
    iou = (
        mask_utils.iou(boxes.tolist(), gt_boxes.tolist(), [0] * len(gt_boxes))
        if len(gt_boxes)
        else np.zeros((len(boxes), 0))
    )
    iou = np.asarray(iou).reshape(len(boxes), len(gt_boxes))
    same = np.where(gt_cols == k, iou, 0.0).max(axis=1, initial=0.0)
    other = np.where(gt_cols != k, iou, 0.0)
    other_best = other.max(axis=1, initial=0.0)
    kind = np.select([same >= 0.5, same >= LOC_IOU, other_best >= LOC_IOU], [0, 1, 2], default=3)
    wrong = kind == 2
    confused_with = gt_cols[other[wrong].argmax(axis=1)] if wrong.any() else gt_cols[:0]
    return kind, confused_with


def report_analysis(coco_eval, output_folder, score_threshold=0.3):
    """Log the per-category AP table; with `output_folder`, write the JSON files and, when
    matplotlib is installed, the pictures. Returns the per-category AP rows."""
    logger = logging.getLogger("paa_core.inference")
    rows = per_class_ap(coco_eval)
    logger.info("Per-category box AP:\n%s", per_class_table(rows))
    if not output_folder:
        return rows
    curves = pr_curves(coco_eval)
    fps = false_positive_summary(coco_eval, score_threshold)
    for name, data in (("per_class_ap", rows), ("pr_curves", curves), ("false_positives", fps)):
        with open(os.path.join(output_folder, name + ".json"), "w") as f:
            json.dump(data, f, indent=1)
    try:
        plot_pr_curves(curves, rows, os.path.join(output_folder, "pr_curves.png"))
        plot_false_positives(fps, os.path.join(output_folder, "false_positives.png"))
    except PlottingUnavailable:
        logger.info(
            "Per-category AP, PR curves and false positives are in %s/*.json; "
            "for their pictures install matplotlib: %s",
            output_folder,
            INSTALL_HINT,
        )
    return rows


def plot_pr_curves(curves, rows, path, max_cols=4):
    plt = pyplot()
    names = list(curves["categories"])
    cols = max(1, min(max_cols, len(names)))
    grid_rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(
        grid_rows, cols, figsize=(3.6 * cols, 3.1 * grid_rows + 0.9), dpi=90, squeeze=False
    )
    fig.suptitle("precision-recall per category (all areas, 100 detections per image)")
    ap = {r["category"]: r for r in rows}
    recall = curves["recall"]
    for ax, name in zip(axes.flat, names):
        c = curves["categories"][name]
        if c is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(name, fontsize=10)
        else:
            ax.plot(recall, c["iou_0.50"], color="tab:blue", label="IoU .50")
            ax.plot(recall, c["iou_0.75"], color="tab:orange", label="IoU .75")
            ax.plot(
                recall,
                c["iou_0.50:0.95"],
                color="black",
                linestyle="--",
                label="mean over IoU .50:.95",
            )
            r = ap[name]
            ax.set_title(
                f"{name}: AP {100 * r['AP']:.1f}, AP50 {100 * r['AP50']:.1f}, AP75 {100 * r['AP75']:.1f}",
                fontsize=9,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles = [h for ax in axes.flat for h in [ax.get_legend_handles_labels()] if h[0]]
    if handles:
        fig.legend(*handles[0], loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, path)


def plot_false_positives(summary, path):
    """`false_positive_summary` as a picture: each category's true positives and kinds of
    false positive as stacked bars, and the wrong-class confusion matrix beside them."""
    plt = pyplot()
    names = list(summary["categories"])
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(14, max(4.5, 0.45 * len(names) + 2.5)),
        dpi=90,
        gridspec_kw={"width_ratios": [1.3, 1]},
    )
    fig.suptitle(
        f"detections with score >= {summary['score_threshold']}: what each category's "
        "false positives are (IoU .50 matching)"
    )
    _draw_fp_bars(left, summary["categories"])
    _draw_confusion(fig, right, np.array(summary["confusion"]["counts"]), names)
    fig.tight_layout()
    save_figure(fig, path)


def _draw_fp_bars(ax, cats):
    """Per category (`cats`: the summary's), its true positives and each kind of false
    positive stacked in one bar, its missed GTs as a cross."""
    names = list(cats)
    y = np.arange(len(names))
    start = np.zeros(len(names))
    colours = {
        "true positives": "#4c9a4c",
        "duplicate": "#e0a030",
        "poor_localisation": "#d06030",
        "wrong_class": "#9050b0",
        "background": "#808080",
    }
    parts = [("true positives", [cats[n]["true_positives"] for n in names])]
    parts += [(kind, [cats[n]["false_positives"][kind] for n in names]) for kind in FP_KINDS]
    for label, values in parts:
        ax.barh(y, values, left=start, color=colours[label], label=label.replace("_", " "))
        start += values
    ax.scatter(
        [cats[n]["missed"] for n in names],
        y,
        marker="x",
        color="black",
        zorder=3,
        label="missed GTs (count)",
    )
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("detections (count)")
    ax.set_title("true and false positives per detected category", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3)
    ax.grid(axis="x", alpha=0.3)


def _draw_confusion(fig, ax, counts, names):
    """The wrong-class false positives, detected category against the overlapped GT's
    category (`counts` [C, C]), each non-zero cell written out."""
    from matplotlib import ticker

    image = ax.imshow(counts, cmap="Purples")
    y = np.arange(len(names))
    ax.set_xticks(y, names, rotation=45, ha="right")
    ax.set_yticks(y, names)
    ax.set_xlabel("category of the overlapped GT")
    ax.set_ylabel("detected category")
    ax.set_title("wrong-class false positives", fontsize=10)
    for (r, c), n in np.ndenumerate(counts):
        if n:
            ax.text(
                c,
                r,
                str(n),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if n > counts.max() / 2 else "black",
            )
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="detections (count)")
    bar.locator = ticker.MaxNLocator(integer=True)
    bar.update_ticks()
