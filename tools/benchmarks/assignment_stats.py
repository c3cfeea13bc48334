"""What PAA's assignment does over a set of training images, for a config and its checkpoints:
how many GT boxes get no candidate anchor at all (by COCO size), positives per GT, and how
often the two-component fit degenerates.

    python tools/benchmarks/assignment_stats.py --config-file configs/paa/paa_quick_shapes.yaml \
        --weights "" output/run/model_0000600.pth output/run/model_final.pth [KEY VALUE ...]

Candidates come from the IoU pre-assignment alone (anchors vs boxes, `MODEL.PAA.IOU_THRESHOLD`,
each GT's best anchor kept unless another GT overlaps that anchor more), so the "no
candidate" shares depend on the config, not on the weights. Each weight file ("" = the
initial random weights, seed SEED) then runs the training loss evaluator on the same images
(resized to the first training size, no flip, SOLVER.AMP as in training) and reports, over
the GTs with at least two candidates (the ones whose scores get a mixture):

- positives per GT, and candidates per GT after the top-k per level;
- degenerate fits: the two fitted means closer than `--degenerate` (default 0.25) times the
  standard deviation of the GT's candidate scores. Started from means (min, max) with unit
  variances, EM on a few dozen scores with a spread well below 1 can pull both components
  onto nearly the same mean; the cut then rests on tiny differences of the posteriors;
- what the cut does on those: the share of degenerate fits that keep all candidates, or one.
"""

import argparse
from collections import defaultdict

import torch

from paa_core.checkpoint.checkpoint import DetectronCheckpointer
from paa_core.config import get_cfg
from paa_core.config.loading import load_catalog, load_config
from paa_core.data.build import build_dataset
from paa_core.data.transforms import build_transforms
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import make_amp_dtype
from paa_core.structures.box_ops import PLUS_ONE_OFFSET, box_area
from paa_core.structures.image_list import to_image_list
from paa_core.utils.events import listen

SIZES = ("small", "medium", "large")


def size_class(boxes):
    """COCO's size classes of xyxy (+1) boxes: 0 small (< 32^2), 1 medium (< 96^2), 2 large."""
    area = box_area(boxes, offset=PLUS_ONE_OFFSET)
    return (area >= 32**2).long() + (area >= 96**2).long()


def batches(cfg, num_images, batch_size):
    """(ImageList, targets) of the first `num_images` training images, resized as `cfg`'s
    test transform does (main sets it to the training size)."""
    catalog = load_catalog(cfg).DatasetCatalog
    dataset = build_dataset(cfg.DATASETS.TRAIN[:1], build_transforms(cfg, False), catalog, True)[0]
    count = min(num_images, len(dataset))
    for start in range(0, count, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, count))]
        images = to_image_list([im for im, _, _ in items], cfg.DATALOADER.SIZE_DIVISIBILITY)
        yield images, [target for _, target, _ in items]


def candidate_recall(model, data):
    """Per size class: [GTs, GTs without any candidate], from the IoU pre-assignment."""
    counts = defaultdict(lambda: [0, 0])
    evaluator = model.rpn.loss_evaluator
    for images, targets in data:
        features = model.backbone(images.tensors)
        anchors = model.rpn.anchor_generator(features)
        pre = evaluator.prepare_iou_based_targets(targets, anchors)
        has_candidate = torch.zeros(len(pre.gt_boxes), dtype=torch.bool)
        has_candidate[pre.matched[pre.matched >= 0]] = True
        sizes = size_class(pre.gt_boxes)
        for s in range(3):
            counts[SIZES[s]][0] += int((sizes == s).sum())
            counts[SIZES[s]][1] += int(((sizes == s) & ~has_candidate).sum())
    return dict(counts)


def row_std(values, row, num_rows):
    """Sample standard deviation and count of `values` grouped by `row` ([num_rows] each)."""
    count = torch.bincount(row, minlength=num_rows).double()
    total = torch.zeros(num_rows, dtype=torch.float64).index_add_(0, row, values)
    squares = torch.zeros(num_rows, dtype=torch.float64).index_add_(0, row, values**2)
    variance = (squares - total**2 / count.clamp(min=1)) / (count - 1).clamp(min=1)
    return variance.clamp(min=0).sqrt(), count


def fit_statistics(model, data, amp_dtype, degenerate):
    """Positives and candidates per fitted GT, and the degenerate fits and their cuts."""
    totals = defaultdict(float)
    for images, targets in data:
        with (
            listen() as published,
            torch.no_grad(),
            torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None),
        ):
            model(images, targets)
        gmm = published["paa_gmm"]
        if gmm["gmm"] is None:
            continue
        rows = gmm["fit_rows"]
        num_pos = gmm["num_pos"][rows].double()
        scores = published["paa_candidates"]["score"][gmm["selected"]].double()
        gt_of = published["paa_candidates"]["gt"][gmm["selected"]]
        std, counts = row_std(scores, gt_of, len(gmm["num_pos"]))
        std, counts = std[rows], counts[rows]
        means = gmm["gmm"].means
        is_degenerate = (means[:, 0] - means[:, 1]).abs() < degenerate * std
        totals["fits"] += len(rows)
        totals["positives"] += float(num_pos.sum())
        totals["candidates"] += float(counts.sum())
        totals["degenerate"] += int(is_degenerate.sum())
        totals["degenerate keeps all"] += int((is_degenerate & (num_pos == counts)).sum())
        totals["degenerate keeps one"] += int((is_degenerate & (num_pos == 1)).sum())
        totals["degenerate positives"] += float(num_pos[is_degenerate].sum())
    return dict(totals)


def print_recall(recall):
    print("| GTs without a candidate | small | medium | large | all |")
    print("|---|---|---|---|---|")
    cells = [f"{m} of {n} ({m / max(n, 1):.1%})" for n, m in (recall[s] for s in SIZES)]
    n, m = (sum(recall[s][i] for s in SIZES) for i in (0, 1))
    print("| | " + " | ".join(cells) + f" | {m} of {n} ({m / max(n, 1):.1%}) |")


def print_fits(rows):
    print("| weights | fitted GTs | candidates / GT | positives / GT | degenerate fits |")
    print("|---|---|---|---|---|")
    for name, t in rows:
        fits = max(t["fits"], 1)
        deg = max(t["degenerate"], 1)
        print(
            f"| {name} | {int(t['fits'])} | {t['candidates'] / fits:.1f} | "
            f"{t['positives'] / fits:.1f} | {t['degenerate'] / fits:.1%}: all kept "
            f"{t['degenerate keeps all'] / deg:.0%}, one kept {t['degenerate keeps one'] / deg:.0%}, "
            f"{t['degenerate positives'] / deg:.1f} positives / GT |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", nargs="*", default=[""], help='checkpoints ("" = initial)')
    parser.add_argument("--images", type=int, default=400, help="training images to use")
    parser.add_argument("--degenerate", type=float, default=0.25, help="|mean gap| / std below")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_cfg()
    load_config(cfg, args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    # the images at the scale training assigns them at, which may differ from the test size
    cfg.INPUT.MIN_SIZE_TEST = cfg.INPUT.MIN_SIZE_TRAIN[0]
    cfg.INPUT.MAX_SIZE_TEST = cfg.INPUT.MAX_SIZE_TRAIN
    cfg.freeze()
    torch.manual_seed(cfg.SEED)
    model = build_detection_model(cfg).train()
    with torch.no_grad():
        recall = candidate_recall(model, batches(cfg, args.images, 8))
    print(f"# {args.config_file} {' '.join(args.opts)}: {args.images} training images")
    print_recall(recall)
    rows = []
    amp_dtype = make_amp_dtype(cfg, torch.device("cpu"))
    for weights in args.weights:
        torch.manual_seed(cfg.SEED)
        model = build_detection_model(cfg).train()
        if weights:
            DetectronCheckpointer(cfg, model).load(weights, use_latest=False)
        stats = fit_statistics(model, batches(cfg, args.images, 8), amp_dtype, args.degenerate)
        rows.append((weights or "initial", stats))
    print_fits(rows)


if __name__ == "__main__":
    main()
