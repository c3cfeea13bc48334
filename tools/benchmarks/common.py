"""What every benchmark script shares: the set-up and header, timing, the checks against the
baseline and the TARGET lines.

Float32 means true float32: `setup` switches TF32 off for matmuls and cuDNN convolutions (on
Ampere and later GPUs cuDNN uses TF32 by default, which would make every float32 row, and the
mixed-precision speed-up over it, something else), and the header says so.

Output contract (dev/check_gpu.sh reads it): every target is one line
`TARGET <what> | <target> | <measured> | <yes|no>`; every check of the results (ours against
the baseline's, or both models' losses and inputs) is one line `CHECK <what> | <detail> |
<ok|FAILED>`, and a script with a failed check exits non-zero after its last benchmark, with
one line naming the failed checks.

Clocks: wall time by default. On a CPU shared with other work, `--clock cpu` times the
process's CPU time instead, the work each model does, which the other work disturbs far
less than the wall time of threads that wait for each other; run it with
OMP_WAIT_POLICY=PASSIVE, so that waiting threads sleep instead of spinning.
"""

import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torchvision

from paa_core.utils.metrics_file import METRICS_FILE, read_metrics

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
failed_checks = []


def run_tool(args, log, env=None):
    """Run a repository tool (`args` after the interpreter) with this Python, its output to
    `log`; a failure ends the benchmark in one line naming the log."""
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"error: {' '.join(args[:3])} failed (exit {done.returncode}); see {log}")


def metrics_records(folder):
    """(training lines, evaluation lines) of a run's metrics file, none if it has none."""
    path = os.path.join(folder, METRICS_FILE)
    return read_metrics(path) if os.path.isfile(path) else ([], [])


def add_model_arguments(parser, images, per):
    """The whole-model benchmarks' shared options: device, input size, images per `per`
    (an iteration, a forward call) with default `images`, and CPU threads."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=images, help=f"images per {per}")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall", help="what is timed (module docstring)"
    )


def setup(script, args):
    """Threads, seed and TF32 off; prints the header and returns the torch device. A
    `--clock cpu` on a GPU is refused: the GPU's work is not in the process's CPU time."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    if getattr(args, "clock", "wall") == "cpu" and device.type != "cpu":
        sys.exit(f"{script}: --clock cpu times CPU work; a GPU's is not in it")
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"# {script} on {device}{name}, {args.threads} CPU threads, Python "
        f"{platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}",
        flush=True,
    )
    print(f"# {tf32_state()}; arguments: {vars(args)}", flush=True)
    return device


def tf32_state():
    on_off = {True: "on", False: "off"}
    return (
        f"TF32 matmul {on_off[torch.backends.cuda.matmul.allow_tf32]}, "
        f"TF32 cuDNN {on_off[torch.backends.cudnn.allow_tf32]}"
    )


def synchronize(device):
    """Wait for the GPU's queued work, so wall-clock times cover it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(calls, repeats, device, warmup=1, clock="wall"):
    """Times (by `clock`, a key of CLOCKS) of each of `calls` (name -> function), `warmup`
    untimed then `repeats` timed rounds; the calls alternate within a round, so a change in
    load hits all alike. Returns ({name: [seconds]}, {name: the last call's output})."""
    times = {name: [] for name in calls}
    outputs = {}
    for round_ in range(warmup + repeats):
        for name, fn in calls.items():
            synchronize(device)
            start = CLOCKS[clock]()
            outputs[name] = fn()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(CLOCKS[clock]() - start)
    return times, outputs


def median(times):
    return statistics.median(times)


def milliseconds(seconds):
    """At least 3 significant digits, no exponent."""
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def spread(times):
    """`median ms (min-max)` of a list of seconds."""
    return (
        f"{milliseconds(median(times))} ms ({milliseconds(min(times))}-{milliseconds(max(times))})"
    )


def check(ok, what, detail):
    """One CHECK line; a failure is also remembered for `finish`."""
    print(f"CHECK {what} | {detail} | {'ok' if ok else 'FAILED'}", flush=True)
    if not ok:
        failed_checks.append(what)


def target_line(what, measured, relation, limit, unit=""):
    """The TARGET line for `measured <relation> limit` (relation "<=" or ">=")."""
    met = measured <= limit if relation == "<=" else measured >= limit
    return f"TARGET {what} | {relation} {limit}{unit} | {measured:.2f}{unit} | {'yes' if met else 'no'}"


def target(what, measured, relation, limit, unit=""):
    print(target_line(what, measured, relation, limit, unit), flush=True)


def finish(script):
    """Exit non-zero with one line when a check failed."""
    if failed_checks:
        sys.exit(f"{script}: failed checks: {', '.join(failed_checks)}")
