"""What PAA's anchor assignment did on a batch, as numbers (JSON-ready records) and as a
picture.

The numbers are those of the training loss evaluator itself: it publishes its
candidates, scores, mixtures and positives (`paa_core.utils.events`) and this module
only regroups them per image and GT. Per GT a record holds:

- `iou_candidates_per_level`: anchors whose IoU pre-assignment picked this GT;
- `candidates_per_level`, `candidates`: the `TOPK` lowest-score ones per level, the set
  the mixture is fitted to, in ascending score (score = focal loss summed over classes
  + GIoU loss of the anchor's prediction, or for the PAA RPN objectness BCE + L1 of its
  deltas, as the record's `score_name` says; lower is better), each with its anchor index
  within the image, level, box (x1, y1, x2, y2 in the network input's pixels) and
  whether it became positive;
- `gmm`: the fitted two-component mixture (component 0 starts at the lowest score: the
  positive mode), its EM iterations, or None when the GT has fewer than 2 candidates;
- `num_positives`, `positives_per_level` and `cut`: the highest positive score.
"""

import math

import numpy as np
import torch

from paa_core.utils.events import listen

from .plotting import pyplot, save_figure


def assignment_records(model, images, targets, categories=None, amp_dtype=None):
    """Run `model` forward as in training (train mode, no gradients) on an ImageList and
    its per-image target BoxLists ("labels" 1..C); one record per image.

    categories: {label: name} for the records. Train mode matters only for BatchNorm
    bodies, whose running statistics this forward updates like a training step does.
    """
    was_training = model.training
    model.train()
    device = images.tensors.device
    try:
        with (
            torch.no_grad(),
            listen() as published,
            torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
        ):
            model(images, targets)
    finally:
        model.train(was_training)
    if "paa_candidates" not in published:
        raise RuntimeError("the model published no PAA assignment: is its head PAA?")
    return _records(
        published["paa_candidates"],
        published.get("paa_gmm"),
        targets,
        images.image_sizes,
        categories or {},
    )


def _records(cand, gmm_part, targets, image_sizes, categories):
    """One record per image from what the loss evaluator published for the whole batch
    (candidates flat over the batch's anchors, `gt` indexing the batch's GTs)."""
    per_image, num_levels = cand["anchors_per_image"], cand["num_levels"]
    score_name = cand["score_name"]
    cand = {k: v.cpu() for k, v in cand.items() if torch.is_tensor(v)}
    selected, num_pos, gmm_of_gt = _mixture_stage(gmm_part, sum(len(t) for t in targets))
    records, first_gt = [], 0
    for image, target in enumerate(targets):
        target = target.convert("xyxy")
        boxes, labels = target.bbox.tolist(), target.get_field("labels").tolist()
        gts = []
        for j, (box, label) in enumerate(zip(boxes, labels)):
            gt = first_gt + j
            npos = int(num_pos[gt])
            in_set = selected[cand["gt"][selected] == gt]  # ascending score
            candidates = _candidates(cand, in_set, npos, image * per_image)
            gts.append(
                {
                    "gt": j,
                    "box": box,
                    "label": label,
                    "category": categories.get(label),
                    **_counts(cand["level"][cand["gt"] == gt], candidates, npos, num_levels),
                    "gmm": gmm_of_gt.get(gt),
                    "candidates": candidates,
                }
            )
        h, w = image_sizes[image]
        records.append(
            {"image_size": [w, h], "num_levels": num_levels, "score_name": score_name, "gts": gts}
        )
        first_gt += len(target)
    return records


def _mixture_stage(gmm_part, num_gt):
    """What the assigner published (None when no GT had a candidate): the selected
    candidates by GT in ascending score, positives per GT, and {GT: its fitted mixture}."""
    if gmm_part is None:
        return torch.zeros(0, dtype=torch.long), torch.zeros(num_gt, dtype=torch.long), {}
    gmm_of_gt = {}
    g = gmm_part["gmm"]
    if g is not None:  # None: no GT had the 2 candidates a mixture needs
        for row, gt in enumerate(gmm_part["fit_rows"].tolist()):
            gmm_of_gt[gt] = {
                "means": g.means[row].tolist(),
                "variances": g.variances[row].tolist(),
                "weights": g.weights[row].tolist(),
                "iterations": int(g.n_iter[row]),
            }
    return gmm_part["selected"].cpu(), gmm_part["num_pos"].cpu(), gmm_of_gt


def _candidates(cand, in_set, npos, first_anchor):
    """One GT's candidate set (`in_set`: indices into `cand`, ascending score) as dicts; the
    first `npos` are its positives. Anchor indices count from the image's `first_anchor`."""
    return [
        {
            "anchor_index": int(cand["anchor_index"][c]) - first_anchor,
            "level": int(cand["level"][c]),
            "box": cand["box"][c].tolist(),
            "score": float(cand["score"][c]),
            "positive": rank < npos,
        }
        for rank, c in enumerate(in_set.tolist())
    ]


def _counts(iou_levels, candidates, npos, num_levels):
    """One GT's record fields that count: per level its IoU candidates (`iou_levels`: their
    levels), candidate set and positives; the set's size, the positives and the cut."""
    return {
        "iou_candidates_per_level": np.bincount(iou_levels.numpy(), minlength=num_levels).tolist(),
        "candidates_per_level": _per_level(candidates, num_levels),
        "positives_per_level": _per_level([c for c in candidates if c["positive"]], num_levels),
        "num_candidates": len(candidates),
        "num_positives": npos,
        "cut": candidates[npos - 1]["score"] if npos else None,
    }


def _per_level(candidates, num_levels):
    counts = [0] * num_levels
    for c in candidates:
        counts[c["level"]] += 1
    return counts


def _normal_pdf(x, mean, var):
    return np.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def plot_assignment(image, record, path, title, max_histograms=6):
    """Draw `record` (one image of `assignment_records`) over `image` (H x W x 3 uint8 RGB,
    the network input) and a histogram per GT (the first `max_histograms`) into PNG `path`."""
    plt = pyplot()
    shown = record["gts"][:max_histograms]
    fig, grid, cols = _figure(plt, len(shown))
    _draw_image(plt, fig, fig.add_subplot(grid[:, 0]), image, record, title)
    _draw_histograms(fig, grid, cols, shown, len(record["gts"]))
    save_figure(fig, path)


def _figure(plt, num_histograms):
    """The figure: the image in its first column, the histograms in up to two columns
    beside it. Returns the figure, its grid and the number of histogram columns."""
    cols = 2 if num_histograms > 1 else 1
    rows = max(1, math.ceil(num_histograms / cols))
    fig = plt.figure(figsize=(9 + 4.2 * cols, max(7.5, 2.9 * rows)), dpi=90)
    grid = fig.add_gridspec(
        rows, 1 + cols, width_ratios=[9] + [4.2] * cols, wspace=0.35, hspace=0.75
    )
    return fig, grid, cols


def _draw_image(plt, fig, ax, image, record, title):
    """The image with every GT's candidates coloured on one score scale (its colour bar
    beside) and the GT boxes on top of their candidates."""
    from matplotlib import cm, colors

    ax.imshow(image)
    ax.set_title(
        f"{title}\ncandidate anchors coloured by score, positives outlined red, GTs dashed white",
        fontsize=10,
    )
    ax.set_xlabel("x (px, network input)")
    ax.set_ylabel("y (px)")
    scores = [c["score"] for g in record["gts"] for c in g["candidates"]]
    norm = colors.Normalize(min(scores, default=0.0), max(scores, default=1.0))
    cmap = plt.get_cmap("viridis_r")
    for g in record["gts"]:
        _draw_candidates(ax, g["candidates"], lambda score: cmap(norm(score)))
        _draw_gt(ax, g)
    w, h = record["image_size"]
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(f"anchor score ({record['score_name']}, lower = better)")


def _draw_candidates(ax, candidates, colour_of):
    """One GT's candidate boxes in `colour_of(score)`. Negatives first, high scores first,
    so the best candidates are drawn on top; a positive gets a red outline around its colour."""
    from matplotlib import patches

    for c in sorted(candidates, key=lambda c: (c["positive"], -c["score"])):
        x1, y1, x2, y2 = c["box"]
        if c["positive"]:
            ax.add_patch(
                patches.Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=3.4
                )
            )
        ax.add_patch(
            patches.Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                linewidth=1.3,
                edgecolor=colour_of(c["score"]),
                alpha=1.0 if c["positive"] else 0.7,
            )
        )


def _draw_gt(ax, g):
    """A GT box, dashed white with a black outline to show on any image, and its name."""
    from matplotlib import patches, patheffects

    x1, y1, x2, y2 = g["box"]
    outline = [patheffects.withStroke(linewidth=3.5, foreground="black")]
    ax.add_patch(
        patches.Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            edgecolor="white",
            linewidth=1.6,
            linestyle="--",
            path_effects=outline,
        )
    )
    ax.text(
        x1,
        y1 - 2,
        f"#{g['gt']} {g['category'] or g['label']}",
        color="black",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.85, "pad": 1, "edgecolor": "none"},
    )


def _draw_histograms(fig, grid, cols, shown, num_gts):
    """A histogram per shown GT, one legend for them all, and a note when the record has
    more GTs than are shown."""
    for k, g in enumerate(shown):
        hax = fig.add_subplot(grid[k // cols, 1 + k % cols])
        _histogram(hax, g)
        if k == 0:
            fig.legend(
                *hax.get_legend_handles_labels(),
                loc="lower right",
                fontsize=8,
                ncol=3,
                bbox_to_anchor=(0.98, 0.0),
            )
    if num_gts > len(shown):
        fig.text(
            0.4,
            0.0,
            f"histograms of {len(shown)} of {num_gts} GTs; the JSON has all",
            ha="left",
            va="bottom",
            fontsize=8,
        )


def _histogram(ax, g):
    """Candidate scores of one GT, the fitted mixture and the cut."""
    from matplotlib import ticker

    scores = np.array([c["score"] for c in g["candidates"]])
    positive = np.array([c["positive"] for c in g["candidates"]], dtype=bool)
    name = g["category"] or g["label"]
    iters = (
        f", {g['gmm']['iterations']} EM iterations" if g["gmm"] else ", no mixture (< 2 candidates)"
    )
    ax.set_title(
        f"#{g['gt']} {name}: {g['num_positives']} of {g['num_candidates']} positive{iters}",
        fontsize=9,
    )
    ax.set_xlabel("anchor score (loss)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
    if len(scores) == 0:
        return
    lo, hi = float(scores.min()), float(scores.max())
    pad = max(0.05 * (hi - lo), 1e-3)
    bins = np.linspace(lo - pad, hi + pad, 16)
    heights, _, _ = ax.hist(
        [scores[positive], scores[~positive]],
        bins=bins,
        density=False,
        stacked=True,
        color=["#e05050", "#9a9a9a"],
        label=["positive candidates", "negative candidates"],
    )
    # Densities of the mixture in counts per bin, so bars and curves share one axis.
    scale = len(scores) * (bins[1] - bins[0])
    top = max(float(np.max(heights)), 1.0)
    if g["gmm"]:
        x = np.linspace(lo - pad, hi + pad, 300)
        m, v, wts = g["gmm"]["means"], g["gmm"]["variances"], g["gmm"]["weights"]
        parts = [wts[i] * _normal_pdf(x, m[i], v[i]) * scale for i in range(2)]
        ax.plot(x, parts[0], color="tab:blue", label="component 0 (positive mode)")
        ax.plot(x, parts[1], color="tab:orange", label="component 1")
        ax.plot(x, parts[0] + parts[1], color="black", linestyle="--", linewidth=1, label="mixture")
    if g["cut"] is not None:
        ax.axvline(g["cut"], color="red", linewidth=1.2, label="cut (highest positive score)")
    ax.set_ylim(0, top * 1.35)
    ax.set_ylabel("candidates per bin", fontsize=8)
