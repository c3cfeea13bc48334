"""One picture of a training run from its metrics file (paa_core/utils/metrics_file.py)."""

import os

from paa_core.utils.metrics_file import METRICS_FILE, read_metrics

from .plotting import pyplot, save_figure

PLOT_FILE = "training_curves.png"
# What an evaluation line holds: box AP, or for a proposal-only model the proposal recall.
EVAL_CURVES = {
    "AP": (("AP", "o"), ("AP50", "s"), ("AP75", "^")),
    "AR@100": (("AR@100", "o"), ("AR@1000", "s")),
}


def plot_training(output_dir, path=None):
    """Losses, lr, positives per GT and AP (AR for a proposal-only model) over iterations of
    the run in `output_dir`, drawn into `path` (default OUTPUT_DIR/training_curves.png);
    returns the path."""
    metrics = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"no {METRICS_FILE} in {output_dir}: is it a training OUTPUT_DIR?")
    train, evals = read_metrics(metrics)
    path = path or os.path.join(output_dir, PLOT_FILE)
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=90)
    fig.suptitle(f"training of {os.path.basename(os.path.abspath(output_dir))} ({METRICS_FILE})")
    _plot_losses(axes[0, 0], train)
    _plot_lr(axes[0, 1], train)
    _plot_positives(axes[1, 0], train)
    _plot_evaluations(axes[1, 1], evals)
    it = [r["iteration"] for r in train]
    if it:
        for ax in axes.flat:
            ax.set_xlim(0, max(it + [r["iteration"] for r in evals]) * 1.02)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _plot_losses(ax, train):
    """Every loss logged, the total first: PAA's loss_cls, loss_reg, ... or Faster R-CNN's
    RPN and box-head ones."""
    losses = sorted(
        {k for r in train for k in r if k.startswith("loss")}, key=lambda k: (k != "loss", k)
    )
    for name in losses:
        ax.plot(
            [r["iteration"] for r in train if name in r],
            [r[name] for r in train if name in r],
            label="total" if name == "loss" else name,
            linewidth=2 if name == "loss" else 1.2,
        )
    _labels(ax, "losses (median over the logging window)", "loss")
    ax.legend(fontsize=8)


def _plot_lr(ax, train):
    """The lr each logged iteration trained with: warm-up and steps show here."""
    ax.plot(
        [r["iteration"] for r in train],
        [r.get("lr") for r in train],
        color="tab:purple",
        label="lr",
    )
    _labels(ax, "learning rate", "lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.legend(fontsize=8)


def _plot_positives(ax, train):
    """PAA's positives per GT, when the run logged them (a Faster R-CNN without PAA labels
    has none: the panel stays empty)."""
    if any("pos_per_gt" in r for r in train):
        ax.plot(
            [r["iteration"] for r in train if "pos_per_gt" in r],
            [r["pos_per_gt"] for r in train if "pos_per_gt" in r],
            color="tab:red",
            label="positives per GT",
        )
        ax.legend(fontsize=8)
    _labels(ax, "PAA positive anchors per GT box", "anchors")


def _plot_evaluations(ax, evals):
    """AP per evaluated dataset over iterations, or AR for a proposal-only model (titled as
    such when every evaluation is one); a note while there is none."""
    kinds = set()
    for dataset in sorted({r["dataset"] for r in evals}):
        for kind, curves in EVAL_CURVES.items():
            rows = [r for r in evals if r["dataset"] == dataset and kind in r]
            if rows:
                kinds.add(kind)
            for metric, marker in curves:
                ax.plot(
                    [r["iteration"] for r in rows if metric in r],
                    [100 * r[metric] for r in rows if metric in r],
                    marker=marker,
                    label=f"{metric} {dataset}",
                )
    if evals:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "no evaluation yet\n(train_net.py or test_net.py writes AP here)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="gray",
        )
    if kinds == {"AR@100"}:
        _labels(ax, "proposal recall of evaluated checkpoints", "AR (%)")
    else:
        _labels(ax, "COCO box AP of evaluated checkpoints", "AP (%)")


def _labels(ax, title, ylabel):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
