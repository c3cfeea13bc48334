"""The lr each training iteration uses, pinned by the reference's order: the schedule steps
after the optimizer, so iteration i (from 1) trains with the schedule's lr at i - 1."""

import json

import pytest
import torch
from helpers import ToyDetector, ToyLoader

from paa_core.checkpoint.checkpoint import Checkpointer
from paa_core.engine import trainer
from paa_core.engine.trainer import TrainOptions, do_train
from paa_core.solver import WarmupMultiStepLR

BASE_LR = 0.1
MAX_ITER = 8

# Written from the rule, not from the code: warm-up over 3 iterations from factor 1/4,
# milestones 5 and 7 with gamma 0.1. Iteration i uses the schedule at e = i - 1:
#   linear warm-up factor at e < 3: 1/4 + (3/4) * e / 3 -> 0.25, 0.5, 0.75; then 1
#   milestones count when m <= e: e = 5, 6 -> 0.1; e = 7 -> 0.01
EXPECTED = {
    "linear": [0.025, 0.05, 0.075, 0.1, 0.1, 0.01, 0.01, 0.001],
    "constant": [0.025, 0.025, 0.025, 0.1, 0.1, 0.01, 0.01, 0.001],
}

OPTIMIZERS = {
    "SGD": lambda params: torch.optim.SGD(params, lr=BASE_LR, momentum=0.9),
    "AdamW": lambda params: torch.optim.AdamW(params, lr=BASE_LR, weight_decay=0.05),
}


def run(save_dir, max_iter, optimizer_name, warmup_method, period=100):
    """Train (or resume) a toy run to `max_iter`; returns the lr each optimizer step used
    and the run's metrics lines."""
    model = ToyDetector()
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    scheduler = WarmupMultiStepLR(
        optimizer, (5, 7), 0.1, warmup_factor=0.25, warmup_iters=3, warmup_method=warmup_method
    )
    used = []
    optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
    checkpointer = Checkpointer(model, optimizer, scheduler, save_dir, save_to_disk=True)
    arguments = {"iteration": 0}
    arguments.update(checkpointer.load())
    loader = ToyLoader(max_iter, arguments["iteration"])
    options = TrainOptions(torch.device("cpu"), period)
    do_train(model, loader, optimizer, scheduler, checkpointer, arguments, options)
    return used, model


def logged_lrs(save_dir):
    """{iteration: lr} from metrics.jsonl (the last line per iteration)."""
    with open(save_dir / "metrics.jsonl") as f:
        return {r["iteration"]: r["lr"] for r in map(json.loads, f)}


@pytest.fixture
def log_every_iteration(monkeypatch):
    monkeypatch.setattr(trainer, "LOG_PERIOD", 1)


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
@pytest.mark.parametrize("warmup_method", ["linear", "constant"])
def test_iteration_i_trains_with_the_schedule_at_i_minus_1(
    tmp_path, log_every_iteration, optimizer_name, warmup_method
):
    used, _ = run(tmp_path, MAX_ITER, optimizer_name, warmup_method)
    want = EXPECTED[warmup_method]
    assert used == pytest.approx(want, rel=1e-12)
    # The first iteration uses exactly the warm-up factor; the full lr first at iteration
    # WARMUP_ITERS + 1 = 4; milestone 5 at iteration 6, milestone 7 at iteration 8.
    assert used[0] == pytest.approx(0.25 * BASE_LR) and used[3] == pytest.approx(BASE_LR)
    assert used[4] == pytest.approx(BASE_LR) and used[5] == pytest.approx(0.1 * BASE_LR)
    # The log and metrics.jsonl report the lr each iteration trained with.
    logged = logged_lrs(tmp_path)
    assert [logged[i] for i in range(1, MAX_ITER + 1)] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
@pytest.mark.parametrize("stop_at", [2, 5], ids=["mid-warm-up", "at-milestone"])
def test_resumed_run_uses_the_uninterrupted_lr_sequence(
    tmp_path, log_every_iteration, optimizer_name, stop_at
):
    full, full_model = run(tmp_path / "full", MAX_ITER, optimizer_name, "linear")
    first, _ = run(tmp_path / "split", stop_at, optimizer_name, "linear")
    second, model = run(tmp_path / "split", MAX_ITER, optimizer_name, "linear")
    assert first + second == full == pytest.approx(EXPECTED["linear"], rel=1e-12)
    logged = logged_lrs(tmp_path / "split")
    assert [logged[i] for i in range(1, MAX_ITER + 1)] == full
    for a, b in zip(full_model.parameters(), model.parameters()):
        assert torch.equal(a, b)
