"""Time PAA's loss evaluator and its GMM stage against a per-GT scikit-learn loop.

COCO-like batch: 2 images padded to 800 x 1216 (P3-P7, ~20k anchors per image),
3-20 GTs per image, 80 classes, random head outputs (`--size`, `--images`, `--max-gts`). The baseline is the same
evaluator given an assigner that does the candidate selection and mixture fitting the
reference's way: loops over GTs and levels and one `sklearn.mixture.GaussianMixture` per GT.

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/assign.py [--device cuda] [--repeats 7] [--threads 1] [--size 800 1216]`.
Times are the best of `--repeats` runs after one warm-up call (the least disturbed by
other load on the machine). Checks: both evaluators give the same losses, and the batched GMM
the same number of positives per GT as scikit-learn.
"""

import argparse
import warnings

import numpy as np
import torch
from common import check, finish, setup, time_calls  # beside this script
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from paa_core.config import get_cfg
from paa_core.layers import sigmoid_focal_loss
from paa_core.modeling.anchor_generator import make_anchor_generator_paa
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.paa.loss import PAALossComputation
from paa_core.modeling.paa_assigner import (
    ProbabilisticAnchorAssigner,
    candidate_sets,
    select_positives_by_gmm,
)
from paa_core.structures.bounding_box import BoxList


def sklearn_num_pos(sorted_scores):
    """The reference's per-GT fit and positive rule on one ascending score vector."""
    x = sorted_scores.reshape(-1, 1)
    gmm = GaussianMixture(
        2,
        weights_init=[0.5, 0.5],
        means_init=[[x.min()], [x.max()]],
        precisions_init=[[[1.0]], [[1.0]]],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    components, log_lik = gmm.predict(x), gmm.score_samples(x)
    fg = components == 0
    if not fg.any():
        return len(x)
    return int(np.nonzero(fg & (log_lik == log_lik[fg].max()))[0].min()) + 1


class LoopAssigner(ProbabilisticAnchorAssigner):
    """Baseline: per-GT, per-level top-k and one scikit-learn fit per GT."""

    def __call__(self, cand_gt, cand_level, cand_score, num_gt, num_levels):
        positives = []
        for g in range(num_gt):
            selected = []
            for level in range(num_levels):
                idx = torch.nonzero((cand_gt == g) & (cand_level == level)).squeeze(1)
                if idx.numel() > 0:
                    k = min(self.topk, idx.numel())
                    selected.append(idx[cand_score[idx].topk(k, largest=False).indices])
            if not selected:
                continue
            selected = torch.cat(selected)
            scores, order = cand_score[selected].sort()
            num_pos = 1 if len(selected) == 1 else sklearn_num_pos(scores.double().cpu().numpy())
            positives.append(selected[order[:num_pos]])
        if not positives:
            return cand_gt.new_zeros((0,))
        return torch.cat(positives)


class RecordingAssigner(ProbabilisticAnchorAssigner):
    """Keeps the arguments of its last call (to time the GMM alone)."""

    def __call__(self, *args):
        self.last_args = args
        return super().__call__(*args)


def make_batch(cfg, device, height=800, width=1216, num_images=2, max_gts=20, seed=0):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    padded = [-(-x // 32) * 32 for x in (height, width)]
    strides = cfg.MODEL.PAA.ANCHOR_STRIDES
    feats = [torch.zeros(num_images, 1, -(-padded[0] // s), -(-padded[1] // s)) for s in strides]
    anchors = [a.to(device) for a in make_anchor_generator_paa(cfg)(feats)]
    targets = []
    largest = min(600, 0.9 * min(height, width))
    for _ in range(num_images):
        n = int(rng.integers(min(3, max_gts), max_gts + 1))
        sizes = np.exp(rng.uniform(np.log(16), np.log(largest), (n, 2)))
        x1 = rng.uniform(0, width - sizes[:, 0])
        y1 = rng.uniform(0, height - sizes[:, 1])
        boxes = np.stack([x1, y1, x1 + sizes[:, 0] - 1, y1 + sizes[:, 1] - 1], axis=1)
        t = BoxList(torch.tensor(boxes, dtype=torch.float32, device=device), (width, height))
        t.add_field("labels", torch.tensor(rng.integers(1, 81, n), device=device))
        targets.append(t)
    shapes = [f.shape[-2:] for f in feats]
    box_cls = [torch.randn(num_images, 80, h, w, device=device) - 4.6 for h, w in shapes]
    box_reg = [torch.randn(num_images, 4, h, w, device=device) * 0.3 for h, w in shapes]
    iou_pred = [torch.randn(num_images, 1, h, w, device=device) for h, w in shapes]
    return box_cls, box_reg, iou_pred, targets, anchors


def timed(fn, repeats, device):
    """Best wall time of `fn()` over `repeats` runs after one warm-up, and its output."""
    times, outputs = time_calls({"fn": fn}, repeats, device)
    return min(times["fn"]), outputs["fn"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--max-gts", type=int, default=20, help="GTs per image: 3 to this many")
    args = parser.parse_args(argv)
    device = setup("assign.py", args)
    cfg = get_cfg()
    coder = BoxCoder(cfg.MODEL.PAA.BBOX_REG_WEIGHTS)
    batch = make_batch(cfg, device, *args.size, args.images, args.max_gts)
    print(
        f"anchors per image: {sum(len(a) for a in batch[4])}, GTs per image: {[len(t) for t in batch[3]]}"
    )

    p = cfg.MODEL.PAA
    kwargs = dict(
        iou_threshold=p.IOU_THRESHOLD,
        gamma=p.LOSS_GAMMA,
        alpha=p.LOSS_ALPHA,
        reg_loss_weight=p.REG_LOSS_WEIGHT,
        iou_loss_weight=p.IOU_LOSS_WEIGHT,
        box_coder=coder,
    )
    recording = RecordingAssigner(p.TOPK)
    ours = PAALossComputation(assigner=recording, **kwargs)
    baseline = PAALossComputation(assigner=LoopAssigner(p.TOPK), **kwargs)

    with torch.no_grad():
        t_ours, losses_ours = timed(lambda: ours(*batch), args.repeats, device)
        t_base, losses_base = timed(lambda: baseline(*batch), args.repeats, device)
        # The classification loss over every anchor, which both evaluators compute alike.
        cls_all = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, 80) for c in batch[0]])
        background = torch.zeros(len(cls_all), dtype=torch.int64, device=device)
        t_focal, _ = timed(
            lambda: sigmoid_focal_loss(cls_all, background, 2.0, 0.25).sum(), args.repeats, device
        )
    same = all(torch.allclose(a, b, rtol=1e-5) for a, b in zip(losses_ours, losses_base))

    cand_gt, cand_level, cand_score, num_gt, num_levels = recording.last_args
    scores, mask, _, _, _ = candidate_sets(
        cand_gt, cand_level, cand_score, num_gt, num_levels, p.TOPK
    )
    rows = [scores[g, : int(mask[g].sum())].double().cpu().numpy() for g in range(num_gt)]

    def sklearn_loop():
        return [len(r) if len(r) < 2 else sklearn_num_pos(r) for r in rows]

    t_gmm, selection = timed(lambda: select_positives_by_gmm(scores, mask), args.repeats, device)
    t_gmm_base, num_pos_base = timed(sklearn_loop, args.repeats, device)
    agree = np.mean([a == b for a, b in zip(selection.num_pos.tolist(), num_pos_base)])

    print(f"best of {args.repeats} runs")
    print(
        f"(a) loss evaluator: batched {1e3 * t_ours:.1f} ms, per-GT sklearn loop {1e3 * t_base:.1f} ms, ratio {t_ours / t_base:.3f}, speed-up {t_base / t_ours:.1f}x "
        f"(losses equal: {same})"
    )
    print(
        f"    of which the shared focal loss over all anchors: {1e3 * t_focal:.1f} ms; without it: "
        f"{1e3 * (t_ours - t_focal):.1f} ms vs {1e3 * (t_base - t_focal):.1f} ms, speed-up {(t_base - t_focal) / (t_ours - t_focal):.1f}x"
    )
    print(
        f"(b) GMM stage ({num_gt} GTs, {int(mask.sum())} candidates): batched {1e3 * t_gmm:.1f} ms, sklearn loop {1e3 * t_gmm_base:.1f} ms, "
        f"speed-up {t_gmm_base / t_gmm:.1f}x (positive counts agree on {agree:.1%} of GTs)"
    )
    check(
        same,
        "loss evaluator",
        f"losses of the batched and the per-GT sklearn evaluator equal: {same}",
    )
    check(agree == 1, "GMM stage", f"positives per GT equal scikit-learn's for {agree:.1%} of GTs")
    finish("assign.py")


if __name__ == "__main__":
    main()
