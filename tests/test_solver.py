"""WarmupMultiStepLR values against the closed-form schedule; optimizer parameter groups; AMP."""

import re

import pytest
import torch
from torch import nn

from paa_core.config import get_cfg
from paa_core.layers import DFConv2d
from paa_core.solver import (
    WarmupMultiStepLR,
    check_solver,
    make_amp_dtype,
    make_grad_scaler,
    make_lr_scheduler,
    make_optimizer,
)
from paa_core.utils.errors import InputError

BASE_LR = 0.01


def expected_lr(it, milestones, gamma, factor, warmup_iters, method):
    """By hand from docs/DESIGN.md §8: warm-up factor, then gamma per passed milestone."""
    if it < warmup_iters:
        warm = factor if method == "constant" else factor + (1 - factor) * it / warmup_iters
    else:
        warm = 1.0
    passed = sum(1 for m in milestones if m <= it)
    return BASE_LR * warm * gamma**passed


def lrs_over(scheduler, optimizer, n):
    """lr at last_epoch 0..n-1 (entry e is the lr that training iteration e + 1 uses)."""
    out = [optimizer.param_groups[0]["lr"]]
    for _ in range(n - 1):
        optimizer.step()
        scheduler.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("method", ["constant", "linear"])
def test_warmup_multistep_values(method):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE_LR)
    sched = WarmupMultiStepLR(
        opt, (10, 20), 0.1, warmup_factor=1 / 3, warmup_iters=5, warmup_method=method
    )
    got = lrs_over(sched, opt, 26)
    want = [expected_lr(i, (10, 20), 0.1, 1 / 3, 5, method) for i in range(26)]
    assert got == pytest.approx(want, rel=1e-9)
    # A few points spelled out.
    assert got[0] == pytest.approx(BASE_LR / 3)
    assert got[5] == pytest.approx(BASE_LR)
    assert got[10] == pytest.approx(BASE_LR * 0.1)
    assert got[25] == pytest.approx(BASE_LR * 0.01)
    if method == "linear":
        assert got[2] == pytest.approx(BASE_LR * (1 / 3 * 0.6 + 0.4))
    else:
        assert got[4] == pytest.approx(BASE_LR / 3)


def test_bad_arguments_are_rejected_clearly():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    with pytest.raises(ValueError, match="warmup_method.*'cosine'"):
        WarmupMultiStepLR(opt, (10,), warmup_method="cosine")
    with pytest.raises(ValueError, match=r"milestones.*\[20, 10\]"):
        WarmupMultiStepLR(opt, (20, 10))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Conv2d(1, 2, 1)
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3, 1, bias=False)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def test_param_groups_and_schedule_from_cfg():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.STEPS = (3, 6)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.WARMUP_METHOD = "linear"
    model = Toy()
    opt = make_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.SGD)
    groups = {id(g["params"][0]): g for g in opt.param_groups}
    assert len(groups) == 3  # frozen conv's weight and bias are left out
    assert id(model.frozen.weight) not in groups and id(model.frozen.bias) not in groups
    for p, lr, wd in [
        (model.conv.weight, 0.02, 1e-4),
        (model.conv.bias, 0.04, 0.0),
        (model.fc.weight, 0.02, 1e-4),
    ]:
        g = groups[id(p)]
        assert (
            g["lr"] == pytest.approx(lr)
            and g["weight_decay"] == pytest.approx(wd)
            and g["momentum"] == 0.9
        )

    sched = make_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(8):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # The bias group follows the same schedule at twice the lr.
    factors = [1 / 3, 1 / 3 * 0.5 + 0.5, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    for got, f in zip(lrs, factors):
        assert got == pytest.approx([0.02 * f, 0.04 * f, 0.02 * f])


def test_adamw_from_cfg_keeps_the_group_rules_and_decouples_weight_decay():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.BETAS = (0.8, 0.99)
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    model = Toy()
    opt = make_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["fused"] for g in opt.param_groups)
    groups = {id(g["params"][0]): g for g in opt.param_groups}
    for p, lr, wd in [(model.conv.weight, 0.001, 0.05), (model.conv.bias, 0.002, 0.0)]:
        g = groups[id(p)]
        assert g["lr"] == pytest.approx(lr) and g["weight_decay"] == pytest.approx(wd)
        assert g["betas"] == (0.8, 0.99)
    # Decoupled decay: with a zero gradient, one step only shrinks the weight by lr * wd.
    before = model.conv.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    assert torch.allclose(model.conv.weight, before * (1 - 0.001 * 0.05), rtol=0, atol=1e-9)


def test_deformable_offsets_get_their_lr_factor():
    """SOLVER.DCONV_OFFSETS_LR_FACTOR scales the lr of every DFConv2d's offset conv, bias
    included (after its BIAS_LR_FACTOR), and nothing else."""
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.DCONV_OFFSETS_LR_FACTOR = 0.1
    model = nn.Sequential(DFConv2d(2, 4, with_modulated_dcn=True, bias=True), nn.Conv2d(4, 1, 1))
    lrs = {
        name: g["lr"]
        for g in make_optimizer(cfg, model).param_groups
        for name, p in model.named_parameters()
        if p is g["params"][0]
    }
    assert lrs == pytest.approx(
        {
            "0.offset.weight": 0.001,
            "0.offset.bias": 0.002,
            "0.conv.weight": 0.01,
            "0.conv.bias": 0.02,
            "1.weight": 0.01,
            "1.bias": 0.02,
        }
    )


def test_unknown_optimizer_is_named():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "Adam"
    with pytest.raises(
        InputError,
        match=r"^SOLVER.OPTIMIZER: unknown optimizer 'Adam', expected one of AdamW, SGD$",
    ):
        make_optimizer(cfg, Toy())


def test_schedule_keys_are_named_together_before_any_optimizer_exists():
    """What WarmupMultiStepLR would refuse as arguments, the config edge refuses by key,
    every bad key in one line."""
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.WARMUP_METHOD", "cosine", "SOLVER.STEPS", (20, 10)])
    message = (
        "SOLVER.WARMUP_METHOD: unknown method 'cosine', expected constant or linear; "
        "SOLVER.STEPS=(20, 10): must be in increasing order"
    )
    with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
        check_solver(cfg)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
        make_lr_scheduler(cfg, opt)
    cfg.merge_from_list(["SOLVER.WARMUP_METHOD", "constant", "SOLVER.STEPS", (10, 10, 20)])
    check_solver(cfg)  # repeated milestones are accepted, as by WarmupMultiStepLR
    assert make_lr_scheduler(cfg, opt).milestones == [10, 10, 20]


def test_fused_adamw_steps_like_the_per_tensor_loop():
    """The fused AdamW of make_optimizer and torch's per-tensor loop over the same groups
    agree within float32 rounding after several steps."""
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    models = [Toy(), Toy()]
    models[1].load_state_dict(models[0].state_dict())
    fused = make_optimizer(cfg, models[0])
    groups = [
        {k: v for k, v in g.items() if k != "fused"}
        for g in make_optimizer(cfg, models[1]).param_groups
    ]
    loop = torch.optim.AdamW(groups, foreach=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=gen) for p in models[0].parameters()]
        for model, opt in zip(models, (fused, loop)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone() if p.requires_grad else None
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "avx512_bf16, amx, auto",
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)],
)
def test_amp_setting_to_autocast_dtype(monkeypatch, avx512_bf16, amx, auto):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cfg = get_cfg()
    cpu = torch.device("cpu")
    assert make_amp_dtype(cfg, cpu) is None  # float32 unless asked for
    for amp, dtype in (("off", None), ("bf16", torch.bfloat16), ("auto", auto)):
        cfg.SOLVER.AMP = amp
        assert make_amp_dtype(cfg, cpu) is dtype, amp
    cfg.SOLVER.AMP = "fp16"
    assert make_amp_dtype(cfg, cpu) is torch.float16
    cfg.SOLVER.AMP = "fp32"
    with pytest.raises(
        InputError, match=r"^SOLVER.AMP: unknown value 'fp32', expected off, bf16, fp16 or auto$"
    ):
        make_amp_dtype(cfg, cpu)


@pytest.mark.parametrize("bf16", [True, False])
def test_amp_auto_on_gpus_and_the_float16_scaler(monkeypatch, bf16):
    # "auto" on a GPU: bf16 where it has it, else fp16 with a gradient scaler.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    cfg = get_cfg()
    cfg.SOLVER.AMP = "auto"
    assert make_amp_dtype(cfg, torch.device("cuda")) is (torch.bfloat16 if bf16 else torch.float16)
    for amp, scaled in (("off", False), ("bf16", False), ("fp16", True)):
        cfg.SOLVER.AMP = amp
        cpu = torch.device("cpu")
        scaler = make_grad_scaler(make_amp_dtype(cfg, cpu), cpu)
        assert isinstance(scaler, torch.amp.GradScaler) if scaled else scaler is None, amp
