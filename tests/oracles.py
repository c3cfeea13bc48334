"""Oracles the tests compare the vectorised code against: plain-Python box arithmetic and
scikit-learn's fit of PAA's two-component mixture with the reference's cut."""

import math
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture


def iou_plus1(a, b):
    """IoU of two xyxy boxes [x1, y1, x2, y2] with the legacy +1 widths."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)

    def area(x):
        return (x[2] - x[0] + 1) * (x[3] - x[1] + 1)

    return inter / (area(a) + area(b) - inter)


def iou_continuous(a, b):
    """IoU of two xyxy boxes with detectron2's widths (x2 - x1, no +1)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def d2_deltas(anchor, gt):
    """detectron2's get_deltas with weights (1, 1, 1, 1) for one anchor and one GT box."""
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    wg, hg = gt[2] - gt[0], gt[3] - gt[1]
    cxa, cya = anchor[0] + 0.5 * wa, anchor[1] + 0.5 * ha
    cxg, cyg = gt[0] + 0.5 * wg, gt[1] + 0.5 * hg
    return [(cxg - cxa) / wa, (cyg - cya) / ha, math.log(wg / wa), math.log(hg / ha)]


def d2_decode(anchor, deltas, weights=(1.0, 1.0, 1.0, 1.0), clip=math.log(1000.0 / 16)):
    """detectron2's apply_deltas for one anchor: centre shift, clamped log-size change."""
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cxa, cya = anchor[0] + 0.5 * wa, anchor[1] + 0.5 * ha
    dx, dy, dw, dh = (d / w for d, w in zip(deltas, weights))
    cx, cy = dx * wa + cxa, dy * ha + cya
    w, h = math.exp(min(dw, clip)) * wa, math.exp(min(dh, clip)) * ha
    return [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]


def sklearn_gmm(scores, dtype=np.float64, precision=1.0):
    """scikit-learn's fit of the reference's mixture to one set of candidate scores: two
    components, weights 1/2, means at the lowest and highest score, precisions 1
    (docs/DESIGN.md §4.4), or `precision`. `dtype` is what scikit-learn computes in."""
    x = np.asarray(scores, dtype=dtype).reshape(-1, 1)
    gmm = GaussianMixture(
        2,
        weights_init=[0.5, 0.5],
        means_init=[[x.min()], [x.max()]],
        precisions_init=[[[precision]], [[precision]]],
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        # All of weights, means and precisions are given, so init_params only decides what
        # is computed and then replaced; "random_from_data" skips the k-means cost.
        init_params="random_from_data",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # sets that hit max_iter
        return gmm.fit(x)


def sklearn_cuts(scores, gmm=None, tie_rtol=0.0, dtype=np.float64):
    """The numbers of positives the reference's cut admits on scikit-learn's fit of the
    ascending `scores`: the cut follows the component-0 sample of highest density (all of
    them when component 0 is empty). With `tie_rtol` 0 the ties are exact; above 0 every
    component-0 sample within `tie_rtol * |best|` of the best density also counts (two
    samples symmetric around the mean tie only up to rounding). `gmm` is the fit, when the
    caller has it already."""
    x = np.asarray(scores, dtype=dtype).reshape(-1, 1)
    gmm = sklearn_gmm(x, dtype) if gmm is None else gmm
    fg = gmm.predict(x) == 0
    if not fg.any():
        return {len(x)}
    density = gmm.score_samples(x)
    best = density[fg].max()
    return {int(i) + 1 for i in np.nonzero(fg & (density >= best - tie_rtol * abs(best)))[0]}


def sklearn_num_pos(scores, gmm=None):
    """The reference's number of positives: its cut at the first component-0 sample of
    highest density (`sklearn_cuts` with exact ties)."""
    return min(sklearn_cuts(scores, gmm))
