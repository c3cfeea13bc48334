"""End to end: tools/train_net.py under torchrun (2 CPU processes, gloo), resume after a stop,
tools/test_net.py on the checkpoint, and the one-line errors for bad input."""

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from helpers import TEST_NET, TOOL_ENV, TRAIN_NET, run_tool

from paa_core.config import get_cfg
from paa_core.config.loading import load_config
from paa_core.engine.cli import InputError, make_parser, run_cli


def start(args, cwd):
    return subprocess.Popen(
        args, cwd=cwd, env=TOOL_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def images_per_iteration(log_file, rank):
    """{iteration: [dataset indices]} from the trainer's per-rank debug lines."""
    seen = {}
    for line in open(log_file):
        m = re.search(rf"iteration (\d+) rank {rank}/2 images \[([\d, ]*)\]", line)
        if m:
            seen[int(m.group(1))] = [int(i) for i in m.group(2).split(",")]
    return seen


@pytest.fixture(scope="module")
def torchrun_output(tiny):
    """Two iterations of tools/train_net.py on 2 CPU processes, with the final evaluation."""
    out = os.path.join(tiny["root"], "out")
    result = run_tool(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            TRAIN_NET,
            "--config-file",
            tiny["config"],
            "OUTPUT_DIR",
            out,
        ],
        cwd=tiny["root"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_torchrun_two_processes_then_test_net(tiny, torchrun_output, tmp_path):
    out, result = torchrun_output
    assert "no GPU is visible: using the CPU" in result.stderr + result.stdout
    log = open(os.path.join(out, "log.txt")).read()
    assert "Using 2 process(es), device cpu" in log
    # Each rank trained on its own half of the 8 images: 2 iterations x 2 images, no overlap.
    rank0 = images_per_iteration(os.path.join(out, "log.txt"), 0)
    rank1 = images_per_iteration(os.path.join(out, "log_rank1.txt"), 1)
    assert sorted(rank0) == sorted(rank1) == [1, 2]
    assert all(len(v) == 2 for v in list(rank0.values()) + list(rank1.values()))
    seen0 = {i for v in rank0.values() for i in v}
    seen1 = {i for v in rank1.values() for i in v}
    assert not seen0 & seen1 and seen0 | seen1 == set(range(8))
    # The final evaluation ran over both processes' predictions for all 4 val images.
    assert "| bbox |" in log
    assert (
        len(
            torch.load(
                os.path.join(out, "inference", "tiny_val", "predictions.pth"), weights_only=False
            )
        )
        == 4
    )
    assert os.path.isfile(os.path.join(out, "config.yml"))
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])

    result = run_tool(
        [
            sys.executable,
            TEST_NET,
            "--config-file",
            tiny["config"],
            "--ckpt",
            os.path.join(out, "model_final.pth"),
            "OUTPUT_DIR",
            str(tmp_path / "eval"),
        ],
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = re.search(
        r"\| task \|\s+AP \|\s+AP50 \|\s+AP75 \|\s+APs \|\s+APm \|\s+APl \|\n.*\n"
        r"\| bbox \|( +([\d.]+|n/a) \|){6}",
        result.stdout,
    )
    assert table, result.stdout[-2000:]
    assert os.path.isfile(tmp_path / "eval" / "inference" / "tiny_val" / "bbox.json")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_together(tiny, tmp_path):
    """README's multi-node launch, with this machine playing two nodes of one process each:
    two torchrun launchers meet at 127.0.0.1 (gloo on the CPU) and split the data."""
    out, port = str(tmp_path / "out"), free_port()
    nodes = [
        start(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node_rank={rank}",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                TRAIN_NET,
                "--config-file",
                tiny["config"],
                "--skip-test",
                "OUTPUT_DIR",
                out,
                "MODEL.DEVICE",
                "cpu",
            ],
            cwd=str(tmp_path),
        )
        for rank in (0, 1)
    ]
    for rank, node in enumerate(nodes):
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, (rank, stderr[-3000:])
    assert "Using 2 process(es), device cpu" in open(os.path.join(out, "log.txt")).read()
    rank0 = images_per_iteration(os.path.join(out, "log.txt"), 0)
    rank1 = images_per_iteration(os.path.join(out, "log_rank1.txt"), 1)
    assert sorted(rank0) == sorted(rank1) == [1, 2]
    seen0 = {i for v in rank0.values() for i in v}
    seen1 = {i for v in rank1.values() for i in v}
    assert not seen0 & seen1 and seen0 | seen1 == set(range(8))
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 2


@pytest.mark.slow
def test_stopped_run_resumes(tiny, torchrun_output, tmp_path):
    """The 2-iteration run counts as stopped; a restart with MAX_ITER 4 (on one process) continues it
    when asked to with --resume-changed."""
    out = str(tmp_path / "out")
    shutil.copytree(torchrun_output[0], out)
    # Iteration 2 trains with the schedule at 1: linear warm-up 1/3 + 2/3 * 1/10 of 0.01.
    assert re.search(r"iter: 2 .*lr: 0\.004000", torchrun_output[1].stdout)
    second = run_tool(
        [
            sys.executable,
            TRAIN_NET,
            "--config-file",
            tiny["config"],
            "--skip-test",
            "OUTPUT_DIR",
            out,
            "SOLVER.MAX_ITER",
            "4",
            "--resume-changed",
        ],
        cwd=str(tmp_path),
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "with changed settings (--resume-changed): SOLVER.MAX_ITER 2 (now 4)" in second.stdout
    assert "Resuming from " + os.path.join(out, "model_final.pth") in second.stdout
    # Iterations 3 and 4 follow the schedule: 4 trains with it at 3, warm-up 1/3 + 2/3 * 3/10,
    # times 0.1 (the step at 3 has passed).
    assert re.search(r"iter: 4 .*lr: 0\.000533", second.stdout)
    assert re.findall(
        r"iteration (\d+) rank 0/1 images", open(os.path.join(out, "log.txt")).read()
    ) == ["3", "4"]
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 4 and ckpt["scheduler"]["last_epoch"] == 4


@pytest.mark.slow
def test_bad_input_gives_one_line(tiny, tmp_path):
    """Each tool run ends with exactly one `error:` line and exit code 1, no traceback."""
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("MODEL:\n  PAA:\n    NUM_CLASES: 3\n")
    wrong_weights = tmp_path / "wrong.pth"
    torch.save(
        {"model": {"backbone.body.stem.conv1.weight": torch.zeros(1, 2, 3, 3)}}, wrong_weights
    )
    missing_ann = tiny["train"].rsplit(":", 1)[0] + ":" + str(tmp_path / "none.json")
    cases = {
        "key in file": (
            [TRAIN_NET, "--config-file", str(bad_key)],
            r"error: .*bad_key\.yaml: unknown config key MODEL\.PAA\.NUM_CLASES",
        ),
        "dataset name": (
            [TRAIN_NET, "--config-file", tiny["config"], "DATASETS.TRAIN", "('coco_2099_train',)"],
            r"error: DATASETS\.TRAIN: unknown dataset 'coco_2099_train'; known: coco_2014_minival, .*",
        ),
        "annotation file": (
            [
                TRAIN_NET,
                "--config-file",
                tiny["config"],
                "--skip-test",
                "DATASETS.TRAIN",
                f"('{missing_ann}',)",
                "OUTPUT_DIR",
                str(tmp_path / "o1"),
            ],
            r"error: COCODataset: annotation file not found: .*none\.json",
        ),
        "weights": (
            [
                TEST_NET,
                "--config-file",
                tiny["config"],
                "MODEL.WEIGHT",
                str(wrong_weights),
                "OUTPUT_DIR",
                str(tmp_path / "o2"),
            ],
            r"error: .*wrong\.pth: 1 keys have a shape that does not fit the model: "
            r"backbone\.body\.stem\.conv1\.weight \[1, 2, 3, 3\] vs model .*\[8, 3, 7, 7\]",
        ),
    }
    procs = {
        name: start([sys.executable] + args, cwd=str(tmp_path)) for name, (args, _) in cases.items()
    }
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, (name, stderr[-2000:])
        assert "Traceback" not in stderr, (name, stderr[-2000:])
        last = stderr.strip().splitlines()[-1]
        assert re.fullmatch(cases[name][1], last), (name, last)
        assert sum(line.startswith("error:") for line in stderr.splitlines()) == 1, name


def test_config_errors_are_rephrased(tmp_path, capsys):
    def fails(config_file, opts):
        with pytest.raises(InputError) as e:
            load_config(get_cfg(), str(config_file), opts)
        return str(e.value)

    good = tmp_path / "good.yaml"
    good.write_text("SOLVER:\n  MAX_ITER: 7\n")
    assert fails(tmp_path / "nope.yaml", []) == f"config file not found: {tmp_path / 'nope.yaml'}"
    assert (
        fails(good, ["SOLVER.MAX_ITRE", "3"]) == "command line: unknown config key SOLVER.MAX_ITRE"
    )
    assert fails(good, ["SOLVER.MAX_ITER"]).startswith("command line: Override list has odd length")
    assert "SOLVER.MAX_ITER" in fails(good, ["SOLVER.MAX_ITER", "'many'"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("SOLVER: [\n")
    assert fails(broken, []).startswith(f"{broken}: cannot parse")

    def main():
        raise InputError("DATASETS.TEST: unknown dataset 'x'")

    with pytest.raises(SystemExit) as e:
        run_cli(main)
    assert e.value.code == 1
    assert capsys.readouterr().err == "error: DATASETS.TEST: unknown dataset 'x'\n"


@pytest.mark.parametrize("argv", [["--local-rank=1"], ["--local_rank", "1"], ["--local-rank", "1"]])
def test_launcher_rank_arguments(argv):
    args = make_parser("t").parse_args(
        ["--config-file", "x.yaml"] + argv + ["SOLVER.MAX_ITER", "5"]
    )
    assert args.local_rank == 1 and args.opts == ["SOLVER.MAX_ITER", "5"]
