"""The compiled batched EM (op `gmm2_fit` behind `fit_gmm_2`) against scikit-learn's
GaussianMixture, set by set, on every device (the `device` fixture; on CUDA also against
the CPU kernel), and the op's own input checks."""

import numpy as np
import pytest
import torch
from oracles import sklearn_gmm, sklearn_num_pos

from paa_core._ops import ops
from paa_core.config import get_cfg
from paa_core.modeling.paa_assigner import fit_gmm_2, make_paa_assigner, select_positives_by_gmm
from paa_core.utils.errors import InputError

NUM_SETS = 1050


def _make_sets(seed=0):
    """Sorted float32-valued candidate-score sets of size 2..45 with varied shapes."""
    rng = np.random.default_rng(seed)
    kinds = ["exponential", "bimodal", "uniform", "ties", "near_constant", "all_equal", "outlier"]
    sets = []
    for i in range(NUM_SETS):
        n = int(rng.integers(2, 46))
        kind = kinds[i % len(kinds)]
        if kind == "exponential":
            x = rng.exponential(rng.uniform(0.05, 2.0), n) + rng.uniform(0, 0.5)
        elif kind == "bimodal":
            k = int(rng.integers(1, n))
            x = np.concatenate(
                [
                    rng.normal(0.3, rng.uniform(0.01, 0.3), k),
                    rng.normal(rng.uniform(0.8, 3), 0.4, n - k),
                ]
            )
        elif kind == "uniform":
            x = rng.uniform(0, rng.uniform(0.01, 3.0), n)
        elif kind == "ties":
            x = rng.choice(rng.uniform(0.1, 2.0, int(rng.integers(1, 4))), n)
        elif kind == "near_constant":
            x = 0.7 + rng.normal(0, 1e-4, n)
        elif kind == "all_equal":
            x = np.full(n, rng.uniform(0.0, 2.0))
        else:
            x = np.concatenate([rng.normal(0.5, 0.05, n - 1), [rng.uniform(5, 20)]])
        sets.append(np.sort(np.abs(x).astype(np.float32)).astype(np.float64))
    return sets


def _pad(sets):
    width = max(len(s) for s in sets)
    x = torch.zeros(len(sets), width, dtype=torch.float64)
    mask = torch.zeros(len(sets), width, dtype=torch.bool)
    for i, s in enumerate(sets):
        x[i, : len(s)] = torch.from_numpy(s)
        mask[i, : len(s)] = True
    return x, mask


def _to_cpu(result):
    return type(result)(*(t.cpu() for t in result))


@pytest.fixture(scope="module")
def sklearn_fits():
    sets = _make_sets()
    return sets, [sklearn_gmm(s) for s in sets]


@pytest.fixture(scope="module")
def fitted(device, sklearn_fits):  # device first: a skipped device fits nothing
    """All sets fitted in one batched call on `device` (results on the CPU), with sklearn's fits."""
    sets, theirs = sklearn_fits
    x, mask = _pad(sets)
    ours = _to_cpu(fit_gmm_2(x.to(device), mask.to(device)))
    return sets, x, mask, ours, theirs


@pytest.mark.parametrize("device", ["cuda"], indirect=True, scope="session")
def test_cuda_fit_matches_cpu_kernel(fitted):
    """The CUDA kernel may fuse multiply-adds (last bits only): components and n_iter must be
    identical on >= 99.9% of the sets, the parameters equal to 1e-9 relative where they are."""
    sets, x, mask, ours, _ = fitted
    cpu = fit_gmm_2(x, mask)
    same = [
        torch.equal(ours.components[i, : len(s)], cpu.components[i, : len(s)])
        and ours.n_iter[i] == cpu.n_iter[i]
        for i, s in enumerate(sets)
    ]
    assert np.mean(same) >= 0.999, f"only {np.mean(same):.4f} of sets agree"
    rows = torch.tensor(same)
    for field in ("means", "variances", "weights"):
        torch.testing.assert_close(
            getattr(ours, field)[rows], getattr(cpu, field)[rows], rtol=1e-9, atol=1e-15
        )
    valid = mask & rows[:, None]
    torch.testing.assert_close(
        ours.log_likelihood[valid], cpu.log_likelihood[valid], rtol=1e-9, atol=1e-12
    )


def test_components_match_sklearn(fitted):
    sets, _, _, ours, theirs = fitted
    same = [
        np.array_equal(ours.components[i, : len(s)].numpy(), gmm.predict(s[:, None]))
        for i, (s, gmm) in enumerate(zip(sets, theirs))
    ]
    assert np.mean(same) >= 0.995, f"only {np.mean(same):.4f} of sets agree"


def test_parameters_and_likelihoods_match_sklearn(fitted):
    # Relative 1e-4. The absolute floors only matter for values near zero: weights of
    # a collapsed component are ~1e-15 (sklearn's 10*eps count floor) and means of
    # scores near 0; float64 summation-order noise on <= 45 O(1) samples is ~1e-14,
    # so 1e-9 is loose for noise yet far below anything that moves an assignment.
    # Variances are >= reg_covar = 1e-6, so their floor is 1e-12.
    sets, _, _, ours, theirs = fitted
    mismatched_iters = 0
    for i, (s, gmm) in enumerate(zip(sets, theirs)):
        if ours.n_iter[i].item() != gmm.n_iter_:
            mismatched_iters += 1
            continue
        np.testing.assert_allclose(ours.means[i].numpy(), gmm.means_.ravel(), rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(
            ours.variances[i].numpy(), gmm.covariances_.ravel(), rtol=1e-4, atol=1e-12
        )
        np.testing.assert_allclose(ours.weights[i].numpy(), gmm.weights_, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(
            ours.log_likelihood[i, : len(s)].numpy(),
            gmm.score_samples(s[:, None]),
            rtol=1e-4,
            atol=1e-9,
        )
    assert mismatched_iters <= 0.005 * len(sets)


def test_positive_selection_matches_sklearn_loop(fitted, device):
    sets, x, mask, _, theirs = fitted
    ours = select_positives_by_gmm(x.to(device), mask.to(device)).num_pos.tolist()
    reference = [sklearn_num_pos(s, gmm) for s, gmm in zip(sets, theirs)]
    agree = np.mean([a == b for a, b in zip(ours, reference)])
    assert agree >= 0.995, f"only {agree:.4f} of sets agree"
    # The selection is not trivial on this data: both "some" and "all" occur.
    assert any(0 < a < len(s) for a, s in zip(ours, sets))


def test_spread_variances_match_sklearn_started_from_the_scores_variance(sklearn_fits):
    """MODEL.PAA.GMM_INIT_VARIANCE "spread" (an ablation's departure): the cut equals
    scikit-learn's, started from each set's variance instead of 1, and the mixtures come
    back in the scores' units."""
    sets = [s for s in sklearn_fits[0] if s.var() > 1e-6]
    x, mask = _pad(sets)
    selection = select_positives_by_gmm(x, mask, spread_variances=True)
    reference = [sklearn_num_pos(s, sklearn_gmm(s, precision=1 / s.var())) for s in sets]
    agree = np.mean([a == b for a, b in zip(selection.num_pos.tolist(), reference)])
    assert agree >= 0.99, f"only {agree:.4f} of sets agree"
    unit = [sklearn_num_pos(s) for s in sets]
    assert np.mean([a == b for a, b in zip(unit, reference)]) < 0.9  # the start matters
    means = selection.fit.means.numpy()
    theirs = np.array([sklearn_gmm(s, precision=1 / s.var()).means_.ravel() for s in sets[:50]])
    np.testing.assert_allclose(means[:50], theirs, rtol=1e-3, atol=1e-6)


def test_known_answers():
    # Two modes; the positive mode has mean 0.5, so its most likely sample is the
    # first 0.5 (position 2): 3 positives, although 0.8 and 0.9 are component 0 too.
    two_modes = torch.tensor(
        [[0.1, 0.2, 0.5, 0.5, 0.5, 0.5, 0.8, 0.9, 5.0, 5.1]], dtype=torch.float64
    )
    full = torch.ones_like(two_modes, dtype=torch.bool)
    assert select_positives_by_gmm(two_modes, full).num_pos.item() == 3
    assert fit_gmm_2(two_modes, full).components[0].tolist() == [0] * 8 + [1] * 2
    # All equal: both components coincide, everything is component 0 with equal
    # likelihood, so the first sample alone (j = 0) is positive.
    equal = torch.full((1, 5), 0.4, dtype=torch.float64)
    assert (
        select_positives_by_gmm(equal, torch.ones_like(equal, dtype=torch.bool)).num_pos.item() == 1
    )
    # Rows with a single valid entry keep it; padding is ignored.
    single = torch.tensor([[0.3, 99.0], [0.2, 0.25]], dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True]])
    num_pos = select_positives_by_gmm(single, mask).num_pos
    assert num_pos[0].item() == 1
    pair = single[1].numpy()
    assert num_pos[1].item() == sklearn_num_pos(pair, sklearn_gmm(pair))


def test_converged_rows_stop_updating():
    # Batched fit of a fast- and a slow-converging row equals fitting each alone.
    sets = _make_sets(seed=1)[:40]
    x, mask = _pad(sets)
    batched = fit_gmm_2(x, mask)
    assert batched.n_iter.min() < batched.n_iter.max()
    for i in (int(batched.n_iter.argmin()), int(batched.n_iter.argmax())):
        alone = fit_gmm_2(x[i : i + 1, : len(sets[i])], mask[i : i + 1, : len(sets[i])])
        assert alone.n_iter.item() == batched.n_iter[i].item()
        torch.testing.assert_close(alone.means[0], batched.means[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone.variances[0], batched.variances[i], rtol=0, atol=1e-12)


def test_bad_input():
    with pytest.raises(RuntimeError, match="at least 2"):
        fit_gmm_2(torch.zeros(2, 3), torch.tensor([[True, True, False], [True, False, False]]))
    with pytest.raises(RuntimeError, match=r"\[B, L\]"):
        fit_gmm_2(torch.zeros(3), torch.ones(3, dtype=torch.bool))


def test_row_result_does_not_depend_on_its_batch():
    # The same samples fitted alone, or among other rows with padding after them, or
    # spread over a wider row between padding, give bit-identical outputs.
    sets = _make_sets(seed=2)[:30]
    x, mask = _pad(sets)
    i = int(fit_gmm_2(x, mask).n_iter.argmax())
    n = len(sets[i])
    alone = fit_gmm_2(x[i : i + 1, :n], mask[i : i + 1, :n])
    spread_x = torch.full((1, 2 * x.shape[1]), 99.0, dtype=torch.float64)
    spread_mask = torch.zeros(spread_x.shape, dtype=torch.bool)
    spread_x[0, 1 : 2 * n : 2] = x[i, :n]
    spread_mask[0, 1 : 2 * n : 2] = True
    batched = fit_gmm_2(
        torch.cat([torch.cat([x, torch.zeros_like(x)], dim=1), spread_x]),
        torch.cat([torch.cat([mask, torch.zeros_like(mask)], dim=1), spread_mask]),
    )
    assert alone.n_iter.item() > 2
    for row, columns in ((i, slice(0, n)), (len(sets), slice(1, 2 * n, 2))):
        for field in ("means", "variances", "weights", "n_iter"):
            assert torch.equal(getattr(batched, field)[row], getattr(alone, field)[0]), field
        assert torch.equal(batched.components[row, columns], alone.components[0])
        assert torch.equal(batched.log_likelihood[row, columns], alone.log_likelihood[0])


_X = torch.zeros(2, 3, dtype=torch.float64)
_MASK = torch.ones(2, 3, dtype=torch.bool)


@pytest.mark.parametrize(
    "x, mask, max_iter, message",
    [
        (_X.float(), _MASK, 100, "x must be float64, got Float"),
        (_X[0], _MASK[0], 100, r"x must be \[B, L\], got \[3\]"),
        (_X, _MASK[:, :2], 100, r"mask must have x's shape \[2, 3\], got \[2, 2\]"),
        (_X, _MASK.double(), 100, "mask must be bool, got Double"),
        (_X, _MASK.to("meta"), 100, "mask is on meta, x on cpu"),
        (_X, _MASK, -1, "max_iter must be >= 0, got -1"),
    ],
)
def test_op_rejects_bad_input_in_one_line(x, mask, max_iter, message):
    with pytest.raises(RuntimeError, match="^gmm2_fit: " + message) as info:
        ops.gmm2_fit(x, mask, 1e-3, 1e-6, max_iter)
    assert "\n" not in str(info.value)


def test_gmm_init_variance_key():
    cfg = get_cfg()
    assert make_paa_assigner(cfg).spread_variances is False  # the paper's unit variances
    cfg.merge_from_list(["MODEL.PAA.GMM_INIT_VARIANCE", "spread"])
    assert make_paa_assigner(cfg).spread_variances is True
    cfg.merge_from_list(["MODEL.PAA.GMM_INIT_VARIANCE", "sample"])
    with pytest.raises(InputError, match=r"MODEL.PAA.GMM_INIT_VARIANCE: unknown value 'sample'"):
        make_paa_assigner(cfg)
