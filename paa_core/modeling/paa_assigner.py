"""Batched two-component 1-D Gaussian mixture fitted by EM (op `torch.ops.paa_core.gmm2_fit`).

PAA fits one mixture per GT box to the scores of its candidate anchors (docs/DESIGN.md §4.4).
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


def select_positives_by_gmm(
    scores: Tensor,
    mask: Tensor,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    return_fit: bool = False,
):
    """Number of positives per row under PAA's cut (docs/DESIGN.md §4.4).

    scores: [B, L] candidate scores sorted ascending along each row (valid entries
    first), mask: [B, L] bool with at least 1 valid entry per row. A row with one
    candidate keeps it; otherwise, with j the sorted position of the component-0
    sample of highest log-likelihood (first such position on ties), the first j + 1
    candidates are positive, or all of them when no sample falls in component 0.
    Returns [B] int64; with `return_fit`, (that, the fitted rows [F] (rows with
    at least 2 candidates), their `GMMResult` or None when F = 0).
    """
    mask = mask.bool()
    counts = mask.sum(dim=1)
    num_pos = counts.clone()
    fit_rows = torch.nonzero(counts >= 2).squeeze(1)
    if fit_rows.numel() == 0:
        return (num_pos, fit_rows, None) if return_fit else num_pos
    sub_mask = mask[fit_rows]
    gmm = fit_gmm_2(scores[fit_rows], sub_mask, tol, reg_covar, max_iter)

    fg = (gmm.components == 0) & sub_mask
    fg_ll = torch.where(fg, gmm.log_likelihood, torch.full_like(gmm.log_likelihood, float("-inf")))
    best = fg_ll.amax(dim=1, keepdim=True)
    is_best = fg & (fg_ll == best)
    # argmax over a bool row returns its first True position.
    j = is_best.long().argmax(dim=1)
    has_fg = fg.any(dim=1)
    num_pos[fit_rows] = torch.where(has_fg, j + 1, counts[fit_rows])
    return (num_pos, fit_rows, gmm) if return_fit else num_pos
