"""Compiled sigmoid focal loss against a direct float64 torch formula and torchvision.ops,
on every device (the `device` fixture); on CUDA also against our CPU kernel."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from paa_core.layers import sigmoid_focal_loss


def focal_loss_formula(logits, targets, gamma, alpha):
    """RetinaNet focal loss per element; column c is label c + 1, target < 0 ignores the row."""
    classes = torch.arange(1, logits.shape[1] + 1, device=logits.device)
    pos = (targets[:, None] == classes).to(logits.dtype)
    neg = ((targets[:, None] != classes) & (targets[:, None] >= 0)).to(logits.dtype)
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    pos_loss = -alpha * q**gamma * F.logsigmoid(logits)
    neg_loss = -(1 - alpha) * p**gamma * F.logsigmoid(-logits)
    return pos * pos_loss + neg * neg_loss


def random_inputs(seed, n=40, num_classes=7, scale=3.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, num_classes, generator=gen) * scale).to(dtype)
    targets = torch.randint(-1, num_classes + 1, (n,), generator=gen)  # -1 ignore, 0 background
    return logits, targets


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.75), (3.0, 0.1)])
@pytest.mark.parametrize("scale", [3.0, 40.0])
def test_forward_and_gradient_match_formula(gamma, alpha, scale, device):
    logits, targets = random_inputs(int(gamma * 10 + scale), scale=scale)
    logits, targets = logits.to(device), targets.to(device)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(ours_in, targets, gamma, alpha)
    ref = focal_loss_formula(ref_in, targets, gamma, alpha)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    upstream = torch.rand_like(logits)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-9, atol=1e-12)


def test_gradcheck(device):
    logits, targets = random_inputs(7, n=6, num_classes=4)
    logits, targets = logits.to(device), targets.to(device)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets, 2.0, 0.25), (logits,))


def test_matches_torchvision_and_cpu_kernel_in_float32(device):
    """torchvision's formula takes one-hot targets and has no ignored rows: those are zeroed."""
    logits, targets = random_inputs(21, n=512, num_classes=80, scale=3.0, dtype=torch.float32)
    targets[targets > 0] = torch.randint(
        1, 81, (int((targets > 0).sum()),), generator=torch.Generator().manual_seed(2)
    )
    upstream = torch.rand(logits.shape, generator=torch.Generator().manual_seed(3))
    logits, targets, upstream = logits.to(device), targets.to(device), upstream.to(device)

    def loss_and_grad(fn, x):
        x = x.clone().requires_grad_()
        loss = fn(x)
        return loss.detach(), torch.autograd.grad(loss, x, upstream.to(x.device))[0]

    ours = loss_and_grad(lambda x: sigmoid_focal_loss(x, targets, 2.0, 0.25), logits)
    one_hot = (targets[:, None] == torch.arange(1, 81, device=device)).float()
    kept = (targets >= 0).float()[:, None]
    theirs = loss_and_grad(
        lambda x: (
            torchvision.ops.sigmoid_focal_loss(x, one_hot, 0.25, 2.0, reduction="none") * kept
        ),
        logits,
    )
    for a, b in zip(ours, theirs):
        assert a.device.type == device.type
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if device.type != "cpu":
        cpu = loss_and_grad(lambda x: sigmoid_focal_loss(x, targets.cpu(), 2.0, 0.25), logits.cpu())
        for a, b in zip(ours, cpu):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-7)


def test_label_maps_to_column_minus_one_and_ignored_rows():
    logits = torch.tensor([[0.3, -1.2, 2.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    loss = sigmoid_focal_loss(logits, torch.tensor([3, -1]), 2.0, 0.25)
    p = torch.sigmoid(logits[0])
    expected_row = torch.stack(
        [
            -0.75 * p[0] ** 2 * torch.log(1 - p[0]),
            -0.75 * p[1] ** 2 * torch.log(1 - p[1]),
            -0.25 * (1 - p[2]) ** 2 * torch.log(p[2]),
        ]
    )
    torch.testing.assert_close(loss[0], expected_row)
    assert loss[1].tolist() == [0.0, 0.0, 0.0]


def test_float32_is_finite_and_accurate_for_huge_logits():
    logits = torch.tensor([[100.0, -100.0, 30.0, -30.0, 0.0]] * 2, requires_grad=True)
    targets = torch.tensor([1, 0], dtype=torch.int32)
    loss = sigmoid_focal_loss(logits, targets, 2.0, 0.25)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    ref = focal_loss_formula(logits.detach().double(), targets.long(), 2.0, 0.25)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-30)
    # A confidently wrong positive (x = -100 would be the worst) costs about alpha * |x|.
    wrong = sigmoid_focal_loss(torch.tensor([[-100.0]]), torch.tensor([1]), 2.0, 0.25)
    torch.testing.assert_close(wrong, torch.tensor([[25.0]]))


def test_bad_inputs_raise():
    with pytest.raises(RuntimeError, match="logits must be"):
        sigmoid_focal_loss(torch.zeros(5), torch.zeros(5, dtype=torch.long), 2.0, 0.25)
    with pytest.raises(RuntimeError, match="targets must be"):
        sigmoid_focal_loss(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long), 2.0, 0.25)
    with pytest.raises(RuntimeError, match="integer"):
        sigmoid_focal_loss(torch.zeros(5, 3), torch.zeros(5), 2.0, 0.25)


def float32_case(seed, gamma):
    """Logits up to |100| in rows of 81 classes (not a multiple of any SIMD width)."""
    logits, targets = random_inputs(seed, n=64, num_classes=81, scale=30.0, dtype=torch.float32)
    logits = logits.clamp(-100.0, 100.0)
    upstream = torch.rand(logits.shape, generator=torch.Generator().manual_seed(seed + 1))
    return logits, targets, upstream, gamma


def float32_loss_and_grad(logits, targets, upstream, gamma):
    logits = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss(logits, targets, gamma, 0.25)
    (grad,) = torch.autograd.grad(loss, logits, upstream)
    return loss.detach(), grad


def assert_float32_correctly_rounded(case, loss, grad):
    """Within one float32 ulp of the float64 formula (denormal results: one denormal step)."""
    logits, targets, upstream, gamma = case
    ref_in = logits.double().requires_grad_()
    ref = focal_loss_formula(ref_in, targets, gamma, 0.25)
    (ref_grad,) = torch.autograd.grad(ref, ref_in, upstream.double())
    for ours, exact in ((loss, ref.detach()), (grad, ref_grad)):
        torch.testing.assert_close(ours.double(), exact, rtol=2.0**-23, atol=2.0**-149)


@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_float32_is_correctly_rounded(gamma):
    case = float32_case(11, gamma)
    assert_float32_correctly_rounded(case, *float32_loss_and_grad(*case))


def test_baseline_kernel_without_avx2_is_correctly_rounded(tmp_path):
    """The CPU kernel has an AVX2 copy picked at run time; ATEN_CPU_CAPABILITY=default forces
    the baseline x86-64 copy, run here in a child process."""
    case = float32_case(12, 2.0)
    torch.save(case, tmp_path / "case.pt")
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]);"
        "from test_focal_loss import float32_loss_and_grad;"
        "torch.save(float32_loss_and_grad(*torch.load(sys.argv[2])), sys.argv[3])"
    )
    repo = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        ATEN_CPU_CAPABILITY="default",
        PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(Path(__file__).parent),
            str(tmp_path / "case.pt"),
            str(tmp_path / "out.pt"),
        ],
        env=env,
        check=True,
    )
    assert_float32_correctly_rounded(case, *torch.load(tmp_path / "out.pt"))


@pytest.mark.parametrize(
    "dtype, tolerance", [(torch.bfloat16, 0.01), (torch.float16, 0.002)], ids=["bf16", "fp16"]
)
def test_autocast_matches_float32(dtype, tolerance, device):
    """Logits from a linear layer under autocast arrive in `dtype`; the loss runs in float32
    on them. Loss and the layer's gradient stay within `tolerance` (relative Frobenius
    error, measured ~4x below) of the float32 run."""

    def run(autocast):
        torch.manual_seed(0)
        head = torch.nn.Linear(16, 81).to(device)
        g = torch.Generator().manual_seed(1)
        features = torch.randn(256, 16, generator=g).to(device)
        targets = torch.randint(-1, 82, (256,), generator=g).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            logits = head(features)
            loss = sigmoid_focal_loss(logits, targets, 2.0, 0.25)
        assert logits.dtype == (dtype if autocast else torch.float32)
        assert loss.dtype == torch.float32
        loss.sum().backward()
        return loss.detach(), head.weight.grad

    for name, low, ref in zip(["loss", "grad weight"], run(True), run(False)):
        assert bool(torch.isfinite(low).all()), name
        error = float((low - ref).norm() / ref.norm())
        assert error < tolerance, f"{name}: relative error {error:.2e} >= {tolerance}"
