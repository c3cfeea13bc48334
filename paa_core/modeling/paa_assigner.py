"""Probabilistic anchor assignment (docs/DESIGN.md §4.3-4.4), the paper's idea, shared by
the one-stage PAA loss and the Faster R-CNN RPN with PAA labels; the IoU `Matcher` beside
it makes the candidates.

Each GT's candidates are cut to the `topk` lowest scores per level, and a two-component
1-D Gaussian mixture fitted by EM (op `torch.ops.paa_core.gmm2_fit`) to their scores
splits them into positives and negatives.

The reference calls scikit-learn once per GT; here all GTs of a batch are fitted in one
call as padded rows [B, L] with a validity mask, on the input's device. Each row is a
short sequential EM loop in C++/CUDA that mirrors `sklearn.mixture.GaussianMixture.fit`
step for step (E-step, M-step, lower bound, `|change| < tol`): rows hold a few dozen
samples, so an eager torch loop was bound by per-op dispatch overhead.
"""

from typing import NamedTuple

import torch
from torch import Tensor

from paa_core._ops import ops
from paa_core.config.detector import PAA, detector_kind
from paa_core.utils.errors import InputError
from paa_core.utils.events import listening, publish

# MODEL.PAA.GMM_INIT_VARIANCE: "unit" is the paper's initialisation, "spread" a departure
# (each GT's candidate-score variance) kept for ablations (docs/DESIGN.md §9).
GMM_INIT_VARIANCES = ("unit", "spread")


class GMMResult(NamedTuple):
    components: Tensor
    log_likelihood: Tensor
    means: Tensor
    variances: Tensor
    weights: Tensor
    n_iter: Tensor


def fit_gmm_2(
    x: Tensor, mask: Tensor, tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100
) -> GMMResult:
    """Fit B independent two-component mixtures to the valid entries of each row.

    x: [B, L] samples, mask: [B, L] bool (at least 2 valid entries per row).
    Initialisation (docs/DESIGN.md §4.4): means (min, max) of the row, variances 1, weights 0.5.
    Returns a `GMMResult` in float64: `components` [B, L] int64 (argmax of the
    posterior, scikit-learn's `predict`), `log_likelihood` [B, L] (`score_samples`),
    `means`, `variances`, `weights` [B, 2] and `n_iter` [B]; padded entries of the
    per-sample outputs are meaningless. The op checks its arguments (`RuntimeError`).
    """
    fit = ops.gmm2_fit(x.double(), mask.bool(), float(tol), float(reg_covar), int(max_iter))
    return GMMResult(*fit)


class GMMSelection(NamedTuple):
    """`select_positives_by_gmm`'s answer."""

    num_pos: Tensor  # [B] int64
    fit_rows: Tensor  # [F] the rows with at least 2 candidates
    fit: GMMResult | None  # their mixtures, None when F = 0


def select_positives_by_gmm(
    scores: Tensor,
    mask: Tensor,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    spread_variances: bool = False,
) -> GMMSelection:
    """Number of positives per row under PAA's cut (docs/DESIGN.md §4.4).

    scores: [B, L] candidate scores sorted ascending along each row (valid entries
    first), mask: [B, L] bool with at least 1 valid entry per row. A row with one
    candidate keeps it; otherwise, with j the sorted position of the component-0
    sample of highest log-likelihood (first such position on ties), the first j + 1
    candidates are positive, or all of them when no sample falls in component 0.
    `spread_variances` starts each row's variances at its scores' variance instead of 1
    (a departure from the paper, for ablations: §9).
    Returns the counts with the fitted rows and their mixtures (for the assignment view).
    """
    mask = mask.bool()
    counts = mask.sum(dim=1)
    num_pos = counts.clone()
    fit_rows = torch.nonzero(counts >= 2).squeeze(1)
    if fit_rows.numel() == 0:
        return GMMSelection(num_pos, fit_rows, None)
    sub_mask = mask[fit_rows]
    sub_scores = scores[fit_rows]
    if spread_variances:
        std = standardise_rows(sub_scores, sub_mask)
        gmm = unscale_fit(fit_gmm_2(sub_scores / std, sub_mask, tol, reg_covar, max_iter), std)
    else:
        gmm = fit_gmm_2(sub_scores, sub_mask, tol, reg_covar, max_iter)

    fg = (gmm.components == 0) & sub_mask
    fg_ll = torch.where(fg, gmm.log_likelihood, torch.full_like(gmm.log_likelihood, float("-inf")))
    best = fg_ll.amax(dim=1, keepdim=True)
    is_best = fg & (fg_ll == best)
    # argmax over a bool row returns its first True position.
    j = is_best.long().argmax(dim=1)
    has_fg = fg.any(dim=1)
    num_pos[fit_rows] = torch.where(has_fg, j + 1, counts[fit_rows])
    return GMMSelection(num_pos, fit_rows, gmm)


def standardise_rows(scores: Tensor, mask: Tensor) -> Tensor:
    """Each row's standard deviation over its valid entries [B, 1] (1 where it is 0).

    Fitting `scores / std` from unit variances is fitting `scores` from variances std^2:
    EM, the components, the posteriors and the ordering of the log-likelihoods within a
    row do not change under that scaling (only `reg_covar` scales with it)."""
    valid = mask.to(scores.dtype)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (scores * valid).sum(dim=1, keepdim=True) / count
    variance = (((scores - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    std = variance.sqrt()
    return torch.where(std > 0, std, torch.ones_like(std))


def unscale_fit(fit: GMMResult, std: Tensor) -> GMMResult:
    """The mixture fitted to `scores / std` [F, 1] in the scores' own units."""
    std = std.double()
    return fit._replace(
        means=fit.means * std,
        variances=fit.variances * std**2,
        log_likelihood=fit.log_likelihood - std.log(),
    )


class CandidateSets(NamedTuple):
    """Each GT's candidates as padded rows (see `candidate_sets`)."""

    scores: Tensor  # [G, L] ascending along each row
    mask: Tensor  # [G, L] valid entries
    order: Tensor  # [S] index into the candidate arrays of each selected candidate
    gt_of: Tensor  # [S] its GT (row)
    column: Tensor  # [S] its column


def _group_sort(group: Tensor, score: Tensor) -> Tensor:
    """Permutation sorting by group, then by score within a group (both stable)."""
    by_score = torch.argsort(score, stable=True)
    return by_score[torch.argsort(group[by_score], stable=True)]


def _rank_in_group(sorted_group: Tensor) -> Tensor:
    """Position of each element within its run of a sorted group vector."""
    first = torch.searchsorted(sorted_group, sorted_group)
    return torch.arange(sorted_group.numel(), device=sorted_group.device) - first


def candidate_sets(
    cand_gt: Tensor, cand_level: Tensor, cand_score: Tensor, num_gt: int, num_levels: int, topk: int
) -> CandidateSets:
    """Each GT's `topk` lowest-score candidates per level (docs/DESIGN.md §4.3), padded rows.

    Returns scores [G, L] ascending along each row, mask [G, L], and for every
    selected candidate its index (into the candidate arrays), GT and column.
    """
    # TOPK lowest scores per (GT, level): sort by score, then stably by group.
    group = cand_gt * num_levels + cand_level
    order = _group_sort(group, cand_score)
    selected = order[_rank_in_group(group[order]) < topk]

    # Each GT's selected candidates in ascending score order.
    order = selected[_group_sort(cand_gt[selected], cand_score[selected])]
    gt_of = cand_gt[order]
    column = _rank_in_group(gt_of)
    width = int(column.max()) + 1
    scores = cand_score.new_zeros((num_gt, width))
    mask = torch.zeros((num_gt, width), dtype=torch.bool, device=scores.device)
    scores[gt_of, column] = cand_score[order]
    mask[gt_of, column] = True
    return CandidateSets(scores, mask, order, gt_of, column)


class ProbabilisticAnchorAssigner:
    """Picks the positives among the IoU-matched candidates of a whole batch, on their
    device: each GT's `topk` lowest-cost candidates per level, cut by its mixture.

    Built once per model (`make_paa_assigner`) and handed to the loss that needs it;
    `tools/benchmarks/assign.py` hands in its per-GT scikit-learn loop instead.
    """

    def __init__(self, topk: int, spread_variances: bool = False):
        self.topk = topk
        self.spread_variances = spread_variances

    def __call__(
        self, cand_gt: Tensor, cand_level: Tensor, cand_score: Tensor, num_gt: int, num_levels: int
    ) -> Tensor:
        """cand_gt (index into the batch's GTs), cand_level, cand_score: [K] per candidate
        (an anchor that some GT pre-assigned). Returns the indices (into the candidate
        arrays) of the positive candidates; each keeps its GT.
        """
        if cand_score.numel() == 0:
            return cand_gt.new_zeros((0,))
        scores, mask, order, gt_of, column = candidate_sets(
            cand_gt, cand_level, cand_score, num_gt, num_levels, self.topk
        )
        num_pos, fit_rows, gmm = select_positives_by_gmm(
            scores, mask, spread_variances=self.spread_variances
        )
        if listening():
            # The selected candidates (indices into the candidate arrays, by GT then
            # ascending score) and each GT's mixture, for tools/visualize_assignment.py.
            publish(
                "paa_gmm",
                {"selected": order, "num_pos": num_pos, "fit_rows": fit_rows, "gmm": gmm},
            )
        return order[column < num_pos[gt_of]]


def make_paa_assigner(cfg) -> ProbabilisticAnchorAssigner:
    """The assigner of the model `cfg` builds: MODEL.PAA.TOPK and MODEL.PAA.GMM_INIT_VARIANCE
    for the one-stage detector, MODEL.RPN.PAA_TOPK (and the paper's unit variances) for an
    RPN with PAA labels."""
    if detector_kind(cfg) != PAA:
        return ProbabilisticAnchorAssigner(cfg.MODEL.RPN.PAA_TOPK)
    problems = assigner_problems(cfg)
    if problems:
        raise InputError("; ".join(problems))
    return ProbabilisticAnchorAssigner(
        cfg.MODEL.PAA.TOPK, spread_variances=cfg.MODEL.PAA.GMM_INIT_VARIANCE == "spread"
    )


def assigner_problems(cfg) -> list[str]:
    """The one-stage assigner's keys that `make_paa_assigner` cannot use (modeling/checks.py
    lists them before anything is built)."""
    init = cfg.MODEL.PAA.GMM_INIT_VARIANCE
    if init in GMM_INIT_VARIANCES:
        return []
    return [
        f"MODEL.PAA.GMM_INIT_VARIANCE: unknown value {init!r}, expected "
        + " or ".join(GMM_INIT_VARIANCES)
    ]
