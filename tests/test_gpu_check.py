"""dev/check_gpu.sh's parts that run without a GPU: its list of test files, the targets
table read back from its log, its budget, and dev/cuda_lib.py's checks of a prebuilt
library (a GPU run is rare and short, so these must be right before it)."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "dev"))

import cuda_lib  # noqa: E402
import gpu_check_targets  # noqa: E402

CHECK_GPU = os.path.join(REPO, "dev", "check_gpu.sh")


def listed_test_files():
    done = subprocess.run(
        ["bash", CHECK_GPU, "--list-tests"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def runs_on_cuda(path):
    """True when a test module has cases on CUDA: a function taking the `device` fixture, or
    the fixture's skip rule (`cuda_unusable_reason`) used directly."""
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and "device" in [a.arg for a in node.args.args]:
            return True
        if isinstance(node, ast.Name) and node.id == "cuda_unusable_reason":
            return True
    return False


def test_listed_test_files_exist_and_cover_every_cuda_test_module():
    listed = listed_test_files()
    assert len(listed) == len(set(listed)), listed
    assert [f for f in listed if not os.path.isfile(os.path.join(REPO, f))] == []
    on_cuda = sorted(
        f"tests/{name}"
        for name in os.listdir(os.path.join(REPO, "tests"))
        if name.startswith("test_")
        and name.endswith(".py")
        and runs_on_cuda(os.path.join(REPO, "tests", name))
    )
    # Today's seven at least; a new module with CUDA cases must join the script's list.
    assert len(on_cuda) >= 7
    assert sorted(set(on_cuda) - set(listed)) == []


SAMPLE_LOG = """\
== step preflight: started, limit 30 s
| GPU | NVIDIA H200 |
== step preflight: passed in 4 s
== step benchmark ops.py: started, limit 45 s
nms 5000 boxes: ours 1.20 ms, torchvision 1.45 ms, ratio 0.83
TARGET nms 5000 boxes ours/torchvision | <= 1.0 | 0.83 | yes
TARGET modulated deform conv ours/torchvision | <= 1.0 | 1.12 | no
TARGET focal loss | <= 1.0 | 0.9
== step benchmark ops.py: passed in 31 s
== step benchmark assign.py: started, limit 30 s
  TARGET assignment + GMM share of the step | <= 5% | 3.1% | yes
== step benchmark assign.py: passed in 12 s
== step benchmark train.py: started, limit 80 s
float32 (TF32 off): PAA 410 ms, RetinaNet 395 ms
== step benchmark detector.py: skipped, needs 15 s and 3 s are left of the 420 s budget
"""
# train.py was killed in its step (no end marker); faster_rcnn.py was never reached.
EXPECTED = [
    f"benchmark {b}" for b in ("ops.py", "assign.py", "train.py", "detector.py", "faster_rcnn.py")
]


def test_targets_table_from_a_log():
    steps = gpu_check_targets.read_log(SAMPLE_LOG)
    assert steps.targets == [
        gpu_check_targets.Target(
            "benchmark ops.py", "nms 5000 boxes ours/torchvision", "<= 1.0", "0.83", True
        ),
        gpu_check_targets.Target(
            "benchmark ops.py", "modulated deform conv ours/torchvision", "<= 1.0", "1.12", False
        ),
        gpu_check_targets.Target(
            "benchmark assign.py", "assignment + GMM share of the step", "<= 5%", "3.1%", True
        ),
    ]
    assert steps.malformed == ["TARGET focal loss | <= 1.0 | 0.9"]
    text = gpu_check_targets.targets_markdown(steps, EXPECTED)
    assert "| ops.py | nms 5000 boxes ours/torchvision | <= 1.0 | 0.83 | yes |" in text
    assert "| ops.py | modulated deform conv ours/torchvision | <= 1.0 | 1.12 | **no** |" in text
    assert "\n2 of 3 targets met.\n" in text
    assert "- train.py: started, never ended (the check was killed in it)" in text
    assert "- detector.py: skipped, needs 15 s and 3 s are left of the 420 s budget" in text
    assert "- faster_rcnn.py: never reached: the check ended before it" in text
    assert "- ops.py" not in text and "- assign.py" not in text
    assert "- `TARGET focal loss | <= 1.0 | 0.9`" in text


def test_a_steps_output_from_the_log(tmp_path):
    log = tmp_path / "gpu_check.log"
    log.write_text(SAMPLE_LOG)
    script = os.path.join(REPO, "dev", "gpu_check_targets.py")
    tail = subprocess.run(
        [sys.executable, script, str(log), "--section", "benchmark ops.py", "--tail", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        tail.stdout
        == "TARGET modulated deform conv ours/torchvision | <= 1.0 | 1.12 | no\nTARGET focal loss | <= 1.0 | 0.9\n"
    )
    killed = subprocess.run(
        [sys.executable, script, str(log), "--section", "benchmark train.py"],
        capture_output=True,
        text=True,
    )
    assert killed.stdout == "float32 (TF32 off): PAA 410 ms, RetinaNet 395 ms\n"
    missing = subprocess.run(
        [sys.executable, script, str(log), "--section", "benchmark faster_rcnn.py"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"{log}: no step named 'benchmark faster_rcnn.py' started"


def test_budget_bounds_the_whole_check(tmp_path):
    """With a 25 s budget no step may run past it: the tests step (30 s at least) is skipped
    with its line (unless the preflight, slow on a loaded machine, already used the budget
    up), every limit is cut to what is left, and the report still closes with its tables."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, BUDGET_S="25", PYTHONPATH=REPO)
    start = time.monotonic()
    done = subprocess.run(
        ["bash", CHECK_GPU, "--smoke"], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stdout + done.stderr
    assert elapsed < 25 + 10  # the budget, a 5 s kill grace, start-up
    assert sorted(os.listdir(tmp_path)) == ["gpu_check.log", "gpu_check.md"]
    log = (tmp_path / "gpu_check.log").read_text()
    states = dict(re.findall(r"^== step (.+?): (started|skipped)", log, re.M))
    assert states["preflight"] == "started"
    for need, left in re.findall(
        r"skipped, needs (\d+) s and (-?\d+) s are left of the 25 s budget", log
    ):
        assert int(left) < int(need)
    for cap in re.findall(r"started, limit (\d+) s", log):
        assert int(cap) <= 20  # 25 s less the 5 s kept for the closing tables
    report = (tmp_path / "gpu_check.md").read_text()
    assert report.startswith("# paa_core GPU check: smoke (CPU, tiny sizes)\n")
    assert "\n## Steps\n\nBudget 25 s;" in report
    assert "\n## Targets\n" in report
    for step in states:
        assert f"\n| {step} | " in report, step
    if "stopped at its" not in log:  # the preflight left time for the rest
        assert states["tests"] == "skipped"
        assert f"| torch | {torch.__version__}" in report
        assert all(f"| {step} | " in report for step in EXPECTED)


def write_manifest(folder, library, **changes):
    manifest = {
        "library": os.path.basename(library),
        "python": sys.version.split()[0],
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "torch": torch.__version__,
        "sources_sha256": cuda_lib.sources_sha256(REPO)[0],
        "cuda_arch": "9.0",
        "commit": "0" * 40,
        "built_utc": "2026-12-06 00:00",
    }
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_verify_refuses_a_library_that_does_not_fit(tmp_path, capsys):
    """Each mismatch is named in one line, and the first one ends the check."""

    def verify(folder):
        usable = cuda_lib.verify(str(folder))
        return usable, capsys.readouterr().out.splitlines()

    library = tmp_path / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    shutil.copy(os.path.join(REPO, "paa_core", library.name), library)
    write_manifest(tmp_path, library, torch="1.0.0")
    usable, lines = verify(tmp_path)
    assert not usable
    assert lines[-1] == f"no: built against torch 1.0.0, this machine has {torch.__version__}"
    write_manifest(tmp_path, library, sources_sha256="0" * 64)
    assert (
        verify(tmp_path)[1][-1]
        == "no: built from other sources: setup.py or csrc/ changed since it was packed"
    )
    write_manifest(tmp_path, library)
    if not torch.cuda.is_available():
        assert (
            verify(tmp_path)[1][-1] == "no: has machine code for sm_90 only, and no GPU is visible"
        )
    assert verify(tmp_path / "absent") == (
        False,
        [f"{tmp_path / 'absent' / 'manifest.json'} not found (dev/prepare_gpu_run.sh makes it)"],
    )


def test_sources_hash_follows_every_source_file(tmp_path):
    (tmp_path / "csrc" / "cuda").mkdir(parents=True)
    (tmp_path / "setup.py").write_text("setup()\n")
    (tmp_path / "csrc" / "nms.h").write_text("int nms();\n")
    (tmp_path / "csrc" / "cuda" / "nms.cu").write_text("__global__ void k() {}\n")
    total, per_file = cuda_lib.sources_sha256(str(tmp_path))
    assert sorted(per_file) == ["csrc/cuda/nms.cu", "csrc/nms.h", "setup.py"]
    (tmp_path / "csrc" / "cuda" / "nms.cu").write_text("__global__ void k() { }\n")
    changed = cuda_lib.sources_sha256(str(tmp_path))[0]
    assert changed != total
    (tmp_path / "csrc" / "cuda" / "nms.cu").rename(tmp_path / "csrc" / "cuda" / "nms2.cu")
    assert cuda_lib.sources_sha256(str(tmp_path))[0] not in (total, changed)
