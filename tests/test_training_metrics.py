"""The metrics file: written by the trainer and the evaluations, read back into the
training-curves picture; the per-category outputs of an evaluation."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, TEST_NET, TRAIN_NET, run_tool

from paa_core.utils.errors import InputError
from paa_core.utils.metrics_file import (
    METRICS_FILE,
    append_evaluation,
    append_metrics,
    read_metrics,
)

PLOT = os.path.join(REPO, "tools", "plot_training.py")


@pytest.mark.slow
def test_round_trip_into_the_plot(tmp_path, caplog):
    out = str(tmp_path)
    for it, loss in ((20, 2.0), (40, 1.5), (40, 1.4), (60, 1.1)):  # 40 twice: a resumed run
        append_metrics(
            out,
            {"iteration": it, "lr": 0.01, "loss": loss, "loss_cls": loss / 2, "pos_per_gt": 6.5},
        )
    append_evaluation(
        out, 60, {"shapes_val:/x:/y.json": {"bbox": {"AP": 0.3, "AP50": 0.5, "AP75": 0.25}}}
    )
    train, evals = read_metrics(os.path.join(out, METRICS_FILE))
    assert [(r["iteration"], r["loss"]) for r in train] == [(20, 2.0), (40, 1.4), (60, 1.1)]
    assert evals == [
        {"iteration": 60, "dataset": "shapes_val", "AP": 0.3, "AP50": 0.5, "AP75": 0.25}
    ]

    pytest.importorskip("matplotlib")
    from paa_core.visualization.training_plot import plot_training

    path = plot_training(out)
    assert path == os.path.join(out, "training_curves.png") and os.path.getsize(path) > 10000

    # A run killed while writing leaves a partial line: the next record starts its own line,
    # the partial one is skipped with a warning naming it.
    with open(os.path.join(out, METRICS_FILE), "a") as f:
        f.write('{"iteration": 80, "lo')
    append_metrics(out, {"iteration": 80, "lr": 0.01, "loss": 0.9})
    with caplog.at_level("WARNING"):
        train, _ = read_metrics(os.path.join(out, METRICS_FILE))
    assert [(r["iteration"], r["loss"]) for r in train][-2:] == [(60, 1.1), (80, 0.9)]
    assert "metrics.jsonl: skipped what is not a metrics record: line 6 (" in caplog.text
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n")
    with pytest.raises(InputError, match=r"garbage.jsonl: not a metrics file: no record, line 1"):
        read_metrics(str(garbage))
    result = subprocess.run(
        [sys.executable, PLOT, str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 1 and result.stderr.startswith("error: no metrics.jsonl in ")


@pytest.mark.slow
def test_train_and_test_write_metrics_curves_and_per_class_results(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "out")
    train = run_tool(
        [sys.executable, TRAIN_NET, "--config-file", tiny["config"], "OUTPUT_DIR", out],
        cwd=str(tmp_path),
    )
    assert train.returncode == 0, train.stderr[-3000:]
    train_lines, evals = read_metrics(os.path.join(out, METRICS_FILE))
    assert [r["iteration"] for r in train_lines] == [2]  # logged at the last iteration
    line = train_lines[0]
    assert {
        "lr",
        "loss",
        "loss_cls",
        "loss_reg",
        "loss_iou_pred",
        "pos_per_gt",
        "time",
        "data",
    } <= set(line)
    assert line["pos_per_gt"] >= 1  # every GT keeps at least one positive anchor
    assert [(e["iteration"], e["dataset"]) for e in evals] == [(2, "tiny_val")]
    assert os.path.isfile(os.path.join(out, "training_curves.png"))
    assert "Per-category box AP:" in train.stdout and "| red " in train.stdout
    inference = os.path.join(out, "inference", "tiny_val")
    for name in (
        "per_class_ap.json",
        "pr_curves.json",
        "pr_curves.png",
        "false_positives.json",
        "false_positives.png",
    ):
        assert os.path.isfile(os.path.join(inference, name)), name
    with open(os.path.join(inference, "per_class_ap.json")) as f:
        assert [r["category"] for r in json.load(f)] == ["red", "blue"]

    # test_net on the final checkpoint adds its APs at the checkpoint's iteration.
    test = run_tool(
        [
            sys.executable,
            TEST_NET,
            "--config-file",
            tiny["config"],
            "--ckpt",
            os.path.join(out, "model_final.pth"),
            "OUTPUT_DIR",
            out,
        ],
        cwd=str(tmp_path),
    )
    assert test.returncode == 0, test.stderr[-3000:]
    with open(os.path.join(out, METRICS_FILE)) as f:
        assert [json.loads(x).get("dataset") for x in f] == [None, "tiny_val", "tiny_val"]
    plot = run_tool(
        [sys.executable, PLOT, out, "--output", str(tmp_path / "c.png")], cwd=str(tmp_path)
    )
    assert plot.returncode == 0 and os.path.getsize(tmp_path / "c.png") > 10000
