"""Batched two-component 1-D Gaussian mixture fitted by EM, in torch.

PAA fits one mixture per GT box to the scores of its candidate anchors (SPEC 4.4).
The reference calls scikit-learn once per GT; here all GTs of a batch are fitted
together as padded rows [B, L] with a validity mask, on the input's device. The
loop mirrors `sklearn.mixture.GaussianMixture.fit` step for step (E-step, M-step,
lower bound, `|change| < tol`), and each row stops updating once it has converged,
so every row ends with the parameters scikit-learn would have given it.
"""
import math
from collections import namedtuple

import torch

GMMResult = namedtuple(
    "GMMResult", ["components", "log_likelihood", "means", "variances", "weights", "n_iter"]
)

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# scikit-learn adds 10 * machine epsilon to the soft counts so that no component is empty.
_NK_EPS = 10 * torch.finfo(torch.float64).eps


def _weighted_log_prob(x, params):
    """log(w_k) + log N(x | mu_k, var_k) -> [B, L, 2] for x [B, L, 1] and params [B, 3, 2]
    (rows: means, variances, weights), through the precision Cholesky factor
    1 / sqrt(var) as scikit-learn computes it."""
    means, variances, weights = params.unbind(dim=1)
    prec_chol = torch.rsqrt(variances)
    log_const = torch.log(weights * prec_chol) - _HALF_LOG_2PI
    y = (x - means[:, None, :]) * prec_chol[:, None, :]
    return torch.addcmul(log_const[:, None, :], y, y, value=-0.5)


def fit_gmm_2(x, mask, tol=1e-3, reg_covar=1e-6, max_iter=100):
    """Fit B independent two-component mixtures to the valid entries of each row.

    x: [B, L] samples, mask: [B, L] bool (at least 2 valid entries per row).
    Initialisation (SPEC 4.4): means (min, max) of the row, variances 1, weights 0.5.
    Returns a `GMMResult` in float64: `components` [B, L] int64 (argmax of the
    posterior, scikit-learn's `predict`), `log_likelihood` [B, L] (`score_samples`),
    `means`, `variances`, `weights` [B, 2] and `n_iter` [B]; padded entries of the
    per-sample outputs are meaningless.
    """
    if x.dim() != 2 or mask.shape != x.shape:
        raise ValueError(
            "fit_gmm_2: x and mask must both be [B, L], got {} and {}".format(
                tuple(x.shape), tuple(mask.shape)
            )
        )
    mask = mask.bool()
    counts = mask.sum(dim=1)
    if bool((counts < 2).any()):
        raise ValueError("fit_gmm_2: every row needs at least 2 valid samples (got a row with fewer)")

    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    x = torch.where(mask, x.double(), zero)
    inf = torch.full_like(x, float("inf"))
    first = torch.where(mask, x, inf).amin(dim=1)
    last = torch.where(mask, x, -inf).amax(dim=1)
    batch = x.shape[0]
    params = torch.stack(
        (
            torch.stack((first, last), dim=1),
            torch.ones((batch, 2), dtype=torch.float64, device=x.device),
            torch.full((batch, 2), 0.5, dtype=torch.float64, device=x.device),
        ),
        dim=1,
    )  # [B, 3, 2]: means, variances, weights

    valid = mask.double()
    valid3 = valid[:, :, None]  # [B, L, 1]
    x3 = x[:, :, None]
    x_row = x[:, None, :]  # [B, 1, L]
    n = counts.double()
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(batch, dtype=torch.int64, device=x.device)
    lower_bound = torch.full((batch,), float("-inf"), dtype=torch.float64, device=x.device)
    # The loop is bound by per-op overhead (rows are short), hence the fused forms
    # (logaddexp, softmax, bmm, vecdot) of scikit-learn's formulas.
    for _ in range(max_iter):
        # E-step with the current parameters; its mean log-likelihood is the lower bound.
        weighted = _weighted_log_prob(x3, params)
        log_norm = torch.logaddexp(weighted[:, :, 0], weighted[:, :, 1])  # [B, L]
        resp = torch.softmax(weighted, dim=2) * valid3
        new_bound = torch.linalg.vecdot(log_norm, valid) / n
        # M-step (scikit-learn's _estimate_gaussian_parameters, 1-D).
        nk = resp.sum(dim=1) + _NK_EPS  # [B, 2]
        means = torch.bmm(x_row, resp).squeeze(1) / nk
        diff = x3 - means[:, None, :]
        variances = (resp * diff * diff).sum(dim=1) / nk + reg_covar
        weights = nk / nk.sum(dim=1, keepdim=True)

        # Rows that converged earlier keep their parameters (scikit-learn stopped there);
        # their lower bound is never looked at again.
        params = torch.where(
            active[:, None, None], torch.stack((means, variances, weights), dim=1), params
        )
        n_iter += active
        active &= (new_bound - lower_bound).abs() >= tol
        lower_bound = new_bound
        if not bool(active.any()):
            break

    weighted = _weighted_log_prob(x3, params)
    means, variances, weights = params.unbind(dim=1)
    return GMMResult(
        components=weighted.argmax(dim=2),
        log_likelihood=torch.logsumexp(weighted, dim=2),
        means=means,
        variances=variances,
        weights=weights,
        n_iter=n_iter,
    )


def select_positives_by_gmm(scores, mask, tol=1e-3, reg_covar=1e-6, max_iter=100):
    """Number of positives per row under PAA's rule (SPEC 4.4).

    scores: [B, L] candidate scores sorted ascending along each row (valid entries
    first), mask: [B, L] bool with at least 1 valid entry per row. A row with one
    candidate keeps it; otherwise, with j the sorted position of the component-0
    sample of highest log-likelihood (first such position on ties), the first j + 1
    candidates are positive, or all of them when no sample falls in component 0.
    Returns [B] int64.
    """
    mask = mask.bool()
    counts = mask.sum(dim=1)
    num_pos = counts.clone()
    fit_rows = torch.nonzero(counts >= 2).squeeze(1)
    if fit_rows.numel() == 0:
        return num_pos
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
    return num_pos
