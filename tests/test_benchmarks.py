"""The benchmark scripts' helpers (tools/benchmarks): the TARGET and CHECK lines that
dev/check_gpu.sh reads, the alternating timer, and the premise of the NMS check (whole-pixel
boxes and distinct scores: two correct NMS keep the same indices)."""

import os
import sys
import time

import pytest
import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "benchmarks"))
import common  # noqa: E402
import ops  # noqa: E402

from paa_core.layers import nms  # noqa: E402


def test_target_line_format_and_verdict():
    line = common.target_line("nms 5000 boxes, ours/torchvision", 0.834, "<=", 1.0)
    assert line == "TARGET nms 5000 boxes, ours/torchvision | <= 1.0 | 0.83 | yes"
    assert common.target_line("x", 1.2, "<=", 1.05).endswith("| <= 1.05 | 1.20 | no")
    assert common.target_line("amp", 1.49, ">=", 1.5, "x") == "TARGET amp | >= 1.5x | 1.49x | no"
    assert common.target_line("share", 4.0, "<=", 5, "%") == "TARGET share | <= 5% | 4.00% | yes"


def test_failed_check_makes_finish_exit_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(common, "failed_checks", [])
    common.check(True, "a", "fine")
    common.finish("x.py")  # nothing failed: returns
    common.check(False, "nms 20000 boxes", "kept 10 (ours), 11 (torchvision)")
    assert capsys.readouterr().out.splitlines() == [
        "CHECK a | fine | ok",
        "CHECK nms 20000 boxes | kept 10 (ours), 11 (torchvision) | FAILED",
    ]
    with pytest.raises(SystemExit) as stop:
        common.finish("x.py")
    assert stop.value.code == "x.py: failed checks: nms 20000 boxes"


def test_time_calls_alternates_and_skips_the_warmup():
    order = []
    calls = {"a": lambda: order.append("a") or len(order), "b": lambda: order.append("b")}
    times, outputs = common.time_calls(calls, repeats=3, device="cpu", warmup=2)
    assert order == ["a", "b"] * 5
    assert [len(t) for t in times.values()] == [3, 3]
    assert outputs == {"a": 9, "b": None}


def test_cpu_clock_leaves_out_waiting():
    """A call that sleeps 50 ms takes that long on the wall clock and next to no CPU time."""
    calls = {"sleep": lambda: time.sleep(0.05)}
    wall, _ = common.time_calls(calls, repeats=1, device="cpu", warmup=0)
    cpu, _ = common.time_calls(calls, repeats=1, device="cpu", warmup=0, clock="cpu")
    assert wall["sleep"][0] >= 0.05 and cpu["sleep"][0] < 0.02


def test_milliseconds_and_spread():
    assert common.milliseconds(0.000123) == "0.123"
    assert common.milliseconds(0.0456) == "45.6"
    assert common.milliseconds(1.4449) == "1445"
    assert common.spread([0.002, 0.001, 0.004]) == "2 ms (1-4)"


def test_whole_pixel_boxes_make_nms_agree_with_torchvision():
    generator = torch.Generator().manual_seed(3)
    boxes = ops.random_boxes(3000, generator)
    sides = boxes[:, 2:] - boxes[:, :2]
    assert torch.equal(boxes, boxes.round()) and sides.min() >= 8 and sides.max() <= 256
    scores = torch.randperm(3000, generator=generator).float() / 3000
    for threshold in (0.3, 0.5, 0.7):
        keep = nms(boxes, scores, threshold, offset=0)
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, threshold))


def test_relative_error_is_the_worst_pair():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5])
    assert ops.relative_error([a, a], [a, b]) == pytest.approx(0.2)
