"""paa_core.layers.nms / ml_nms against a plain greedy +1 NMS and torchvision, on every
device (the `device` fixture); on CUDA also against our CPU kernel on the same inputs."""

import numpy as np
import pytest
import torch
import torchvision

from paa_core._ops import ops
from paa_core.layers import ml_nms, nms


def greedy_nms_oracle(boxes, scores, threshold):
    """Textbook greedy NMS, +1 widths, strict '>' test, stable descending-score order.

    Arithmetic is done in the boxes' own precision, in the same order as the kernels.
    """
    boxes = np.asarray(boxes)
    dtype = boxes.dtype.type
    one, thr = dtype(1), dtype(threshold)
    order = np.argsort(-np.asarray(scores), kind="stable")
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    area = (x2 - x1 + one) * (y2 - y1 + one)
    alive = np.ones(len(order), dtype=bool)
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(len(order)):
            if not alive[i]:
                continue
            keep.append(order[i])
            w = np.maximum(np.minimum(x2[i], x2) - np.maximum(x1[i], x1) + one, dtype(0))
            h = np.maximum(np.minimum(y2[i], y2) - np.maximum(y1[i], y1) + one, dtype(0))
            inter = w * h
            iou = inter / (area[i] + area - inter)
            later = np.arange(len(order)) > i
            alive &= ~(later & (iou > thr))
    return np.array(keep, dtype=np.int64)


def per_class_oracle(boxes, scores, labels, threshold):
    kept = [
        np.flatnonzero(labels == c)[
            greedy_nms_oracle(boxes[labels == c], scores[labels == c], threshold)
        ]
        for c in np.unique(labels)
    ]
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    # Output order: descending score, lower index first on ties.
    return kept[np.lexsort((kept, -scores[kept]))]


def random_case(rng, n):
    """Boxes mixing integer corners (exact IoU ties), float corners and degenerate boxes."""
    xy = rng.integers(0, 40, size=(n, 2)).astype(np.float32)
    wh = rng.integers(-2, 25, size=(n, 2)).astype(np.float32)  # w + 1 <= 0 happens: degenerate
    if rng.random() < 0.5:
        xy += rng.random((n, 2), dtype=np.float32) * 3
        wh += rng.random((n, 2), dtype=np.float32) * 3
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    if rng.random() < 0.5:
        scores = rng.integers(0, 5, size=n).astype(np.float32) / 4  # many score ties
    else:
        scores = rng.random(n, dtype=np.float32)
    return boxes, scores


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_greedy_oracle(threshold, device):
    rng = np.random.default_rng(int(threshold * 10))
    for _ in range(120):
        boxes, scores = random_case(rng, int(rng.integers(1, 80)))
        keep = nms(
            torch.from_numpy(boxes).to(device), torch.from_numpy(scores).to(device), threshold
        )
        assert keep.dtype == torch.int64 and keep.device.type == device.type
        np.testing.assert_array_equal(
            keep.cpu().numpy(), greedy_nms_oracle(boxes, scores, threshold)
        )


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_ml_nms_matches_per_class_oracle(threshold, device):
    rng = np.random.default_rng(100 + int(threshold * 10))
    for _ in range(100):
        n = int(rng.integers(1, 80))
        boxes, scores = random_case(rng, n)
        labels = rng.integers(1, 4, size=n)
        inputs = [torch.from_numpy(a).to(device) for a in (boxes, scores, labels)]
        keep = ml_nms(*inputs, threshold)
        assert keep.device.type == device.type
        np.testing.assert_array_equal(
            keep.cpu().numpy(), per_class_oracle(boxes, scores, labels, threshold)
        )


def test_nms_iou_equal_to_threshold_is_kept_and_plus_one_is_used():
    # +1 areas: 10x10=100 and 10x20=200, intersection 100 -> IoU exactly 0.5.
    boxes = torch.tensor([[0.0, 0, 9, 19], [0, 0, 9, 9]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]
    # Without +1 these touching unit boxes would not overlap; with it, IoU = 1/3.
    touching = torch.tensor([[0.0, 0, 1, 0], [1, 0, 2, 0]])
    assert nms(touching, scores, 0.3).tolist() == [0]
    assert nms(touching, scores, 0.34).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nms_matches_torchvision_with_shifted_corners(device, dtype):
    # torchvision (on the same device) has no +1: feeding it (x1, y1, x2 + 1, y2 + 1) gives
    # the same IoUs. Off the CPU, our CPU kernel must keep the same boxes too.
    gen = torch.Generator().manual_seed(0)
    for threshold in (0.3, 0.5, 0.7):
        xy = torch.rand(2000, 2, generator=gen, dtype=torch.float64) * 500
        wh = 5 + torch.rand(2000, 2, generator=gen, dtype=torch.float64) * 150
        boxes = torch.cat([xy, xy + wh], dim=1).to(dtype)
        scores = torch.rand(2000, generator=gen, dtype=torch.float64).to(dtype)
        boxes_d, scores_d = boxes.to(device), scores.to(device)
        shift = torch.tensor([0.0, 0, 1, 1], dtype=dtype, device=device)
        expected = torchvision.ops.nms(boxes_d + shift, scores_d, threshold)
        keep = nms(boxes_d, scores_d, threshold)
        assert 100 < len(keep) < 2000
        assert torch.equal(keep, expected)
        if device.type != "cpu":
            assert torch.equal(keep.cpu(), nms(boxes, scores, threshold))
            labels = torch.randint(1, 4, (2000,), generator=gen)
            assert torch.equal(
                ml_nms(boxes_d, scores_d, labels.to(device), threshold).cpu(),
                ml_nms(boxes, scores, labels, threshold),
            )


def test_offset_zero_is_torchvision_convention():
    # offset=0 (detectron2's widths x2 - x1) keeps exactly what torchvision keeps, for both ops.
    gen = torch.Generator().manual_seed(1)
    for threshold in (0.3, 0.5, 0.7):
        xy = torch.rand(1500, 2, generator=gen) * 400
        boxes = torch.cat([xy, xy + 2 + torch.rand(1500, 2, generator=gen) * 120], dim=1)
        scores = torch.rand(1500, generator=gen)
        labels = torch.randint(0, 5, (1500,), generator=gen)
        keep = nms(boxes, scores, threshold, offset=0)
        assert 100 < len(keep) < 1500
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, threshold))
        keep = ml_nms(boxes, scores, labels, threshold, offset=0)
        assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, threshold))
    # Touching unit-wide boxes overlap only under +1: IoU 1/3 there, 0 here.
    touching = torch.tensor([[0.0, 0, 1, 1], [1, 0, 2, 1]])
    assert nms(touching, torch.tensor([0.9, 0.8]), 0.3, offset=1).tolist() == [0]
    assert nms(touching, torch.tensor([0.9, 0.8]), 0.0, offset=0).tolist() == [0, 1]


def test_ml_nms_only_suppresses_same_label(device):
    boxes = torch.tensor(
        [[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], device=device
    )
    scores = torch.tensor([0.5, 0.9, 0.7, 0.1], device=device)
    labels = torch.tensor([1, 2, 2, 1], device=device)
    assert ml_nms(boxes, scores, labels, 0.5).tolist() == [1, 0, 3]
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    # Whole-number float labels, as the reference passed them, behave the same.
    assert ml_nms(boxes, scores, labels.float(), 0.5).tolist() == [1, 0, 3]


def test_empty_input_and_half_precision(device):
    empty = torch.zeros(0, 4, device=device)
    for keep in (
        nms(empty, torch.zeros(0, device=device), 0.5),
        ml_nms(
            empty,
            torch.zeros(0, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
            0.5,
        ),
    ):
        assert keep.shape == (0,) and keep.dtype == torch.int64
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], device=device)
    scores = torch.tensor([0.2, 0.9, 0.5], device=device)
    assert (
        nms(boxes.half(), scores.half(), 0.5).tolist() == nms(boxes, scores, 0.5).tolist() == [1, 2]
    )


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: nms(torch.zeros(3, 5), torch.zeros(3), 0.5), RuntimeError),
        (lambda: nms(torch.zeros(4), torch.zeros(1), 0.5), RuntimeError),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(2), 0.5), RuntimeError),
        (lambda: nms(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3), 0.5), RuntimeError),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(3, 1), 0.5), RuntimeError),
        (
            lambda: ml_nms(torch.zeros(3, 4), torch.zeros(3), torch.tensor([1.0, 1.5, 2.0]), 0.5),
            ValueError,
        ),
        (
            lambda: ml_nms(torch.zeros(3, 4), torch.zeros(3), torch.ones(3, dtype=torch.bool), 0.5),
            RuntimeError,
        ),
        (
            lambda: ml_nms(
                torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5
            ),
            RuntimeError,
        ),
        (lambda: ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5, 1.0), RuntimeError),
        (
            lambda: ops.ml_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 0.5, 1.0),
            RuntimeError,
        ),
    ],
)
def test_bad_input_raises_clear_error(call, error):
    with pytest.raises(error, match="nms"):
        call()


def bitmask_greedy_nms(boxes, scores, labels, threshold, offset):
    """csrc/cuda/nms.cu's algorithm step for step, in NumPy and Python ints, so that its word
    and bit indexing is checked here too (the kernel itself runs only on a GPU).

    Mask: row i (score order) word c >= i // 64 holds bit k when box 64c + k > i overlaps
    box i; the words left of the diagonal are garbage, as in the kernel's uninitialised
    buffer. Greedy pass: word by word, the lowest remaining candidate is kept and clears
    the boxes of its own word it overlaps; the kept rows are then ORed into later words."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dtype = boxes.dtype.type
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    off, thr = dtype(offset), dtype(threshold)
    w = np.maximum(
        np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]) + off,
        dtype(0),
    )
    h = np.maximum(
        np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]) + off,
        dtype(0),
    )
    inter = w * h
    area = (b[:, 2] - b[:, 0] + off) * (b[:, 3] - b[:, 1] + off)
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = inter / (area[:, None] + area[None, :] - inter) > thr
    if labels is not None:
        hit &= labels[order][:, None] == labels[order][None, :]
    hit &= np.arange(n)[None, :] > np.arange(n)[:, None]  # only later boxes

    words = (n + 63) // 64
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :n] = hit
    packed = np.packbits(padded, axis=1, bitorder="little").view("<u8")  # [n, words]
    garbage = np.random.default_rng(n).integers(0, 2**63, size=(n, words), dtype=np.uint64)
    mask = [
        [int(packed[i, c]) if c >= i // 64 else int(garbage[i, c]) for c in range(words)]
        for i in range(n)
    ]

    removed = [0] * words
    diagonal = [0] * 64
    for t in range(min(n, 64)):
        diagonal[t] = mask[t][0]
    keep = np.full(n, -1, dtype=np.int64)
    count = 0
    for word in range(words):
        first = word * 64
        size = min(n - first, 64)
        candidates = ~removed[word] & ((1 << size) - 1)
        kept = 0
        while candidates:
            k = (candidates & -candidates).bit_length() - 1  # lowest set bit
            kept |= 1 << k
            candidates &= ~(diagonal[k] | (1 << k))
        for t in range(size):
            if kept >> t & 1:
                keep[count + (kept & ((1 << t) - 1)).bit_count()] = order[first + t]
        count += kept.bit_count()
        for later in range(word + 1, words):
            for k in range(64):
                if kept >> k & 1:
                    removed[later] |= mask[first + k][later]
        for t in range(min(n - first - 64, 64)):
            diagonal[t] = mask[first + 64 + t][word + 1]
    assert (keep[count:] == -1).all() and (keep[:count] >= 0).all()
    return keep[:count]


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 129, 1000])
def test_bitmask_greedy_pass_matches_cpu_kernel(n):
    rng = np.random.default_rng(n)
    for threshold, offset in ((0.3, 1), (0.5, 0), (0.7, 1)):
        boxes, scores = random_case(rng, n)
        # Spread 1000 boxes wider, so that many survive across words.
        boxes = boxes * np.float32(max(1.0, n / 200))
        labels = rng.integers(0, 3, size=n)
        expected = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold, offset)
        keep = bitmask_greedy_nms(boxes, scores, None, threshold, offset)
        np.testing.assert_array_equal(keep, expected.numpy())
        if n == 1000:
            assert 64 < len(keep) < 900  # kept boxes in many words, many suppressed
        expected = ml_nms(
            torch.from_numpy(boxes),
            torch.from_numpy(scores),
            torch.from_numpy(labels),
            threshold,
            offset,
        )
        keep = bitmask_greedy_nms(boxes, scores, labels, threshold, offset)
        np.testing.assert_array_equal(keep, expected.numpy())


def clustered_boxes(n, clusters, seed):
    """n boxes of 40-60 px around `clusters` centres: most of a cluster is suppressed."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(clusters, 2, generator=g) * 1500
    which = torch.randint(0, clusters, (n,), generator=g)
    xy = centres[which] + torch.rand(n, 2, generator=g) * 16
    wh = 40 + torch.rand(n, 2, generator=g) * 20
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


@pytest.mark.parametrize("device", ["cuda"], indirect=True)
def test_many_mask_words_match_cpu_kernel(device):
    """20,000 boxes (313 mask words, about half of them kept: set bits in every word) and
    70,000 in clusters (1,094 words: more than the greedy pass's 1,024 threads)."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20_000, 2, generator=g) * 560
    spread = torch.cat([xy, xy + 5 + torch.rand(20_000, 2, generator=g) * 60], dim=1)
    cases = [(spread, torch.rand(20_000, generator=g)), clustered_boxes(70_000, 1000, 1)]
    for boxes, scores in cases:
        for offset in (1, 0):
            expected = nms(boxes, scores, 0.5, offset)
            keep = nms(boxes.to(device), scores.to(device), 0.5, offset)
            assert keep.device.type == "cuda" and 1000 < len(expected) < len(boxes) * 0.6
            assert torch.equal(keep.cpu(), expected)
    boxes, scores = spread[:5000], cases[0][1][:5000]
    labels = torch.randint(0, 3, (5000,), generator=g)
    expected = ml_nms(boxes, scores, labels, 0.5)
    keep = ml_nms(boxes.to(device), scores.to(device), labels.to(device), 0.5)
    assert torch.equal(keep.cpu(), expected)


@pytest.mark.parametrize("device", ["cuda"], indirect=True)
def test_greedy_pass_beyond_default_shared_memory(device):
    """400,000 boxes: the greedy pass's shared memory ((64 + 1 + 6,250 words) x 8 = 50,520
    bytes) passes the 48 KiB a kernel gets without opting in. The mask takes 20 GB."""
    free, _ = torch.cuda.mem_get_info(device)
    if free < 24e9:
        pytest.skip(f"needs 24 GB of free GPU memory for the mask, {free / 1e9:.0f} GB free")
    boxes, scores = clustered_boxes(400_000, 200, 2)
    expected = nms(boxes, scores, 0.5)
    keep = nms(boxes.to(device), scores.to(device), 0.5)
    assert 200 < len(expected) < 2000
    assert torch.equal(keep.cpu(), expected)
