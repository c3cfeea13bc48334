"""The GPU check's first table, in a few seconds: the machine, its Python stack against the
one paa_core was prepared for (dev/gpu_stack.txt), the build tools a compile would need,
the prebuilt library carried along, and the commit. Written first, so that a report whose
later steps fail or run out of time still says where they ran.

    python dev/gpu_preflight.py [--mode "full"]     # prints a markdown table

Every probe has a 5 s limit and answers 'n/a' (or 'missing') instead of failing.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig

import cuda_lib  # dev/, beside this file
import torch
import torchvision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_line(command):
    """The first non-empty line `command` prints, or 'n/a' when it is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if done.returncode == 0 and lines else "n/a"


def commit():
    """git's HEAD where the tree has .git, else PAA_COMMIT (the GPU machine gets no .git)."""
    if os.path.exists(os.path.join(REPO, ".git")):
        head = first_line(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"])
        if head != "n/a":
            return head
    given = os.environ.get("PAA_COMMIT")
    return f"{given[:12]} (PAA_COMMIT)" if given else "n/a (no .git, PAA_COMMIT unset)"


def gpu():
    if not torch.cuda.is_available():
        return "none visible"
    p = torch.cuda.get_device_properties(0)
    return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs"


def stack_against(path):
    """'as <file>' when this interpreter has the file's pins, else what differs."""
    wanted = [line.strip().split("==") for line in open(path) if "==" in line and line[0] != "#"]
    found = {
        "python": "{}.{}".format(*sys.version_info[:2]),
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
    }
    differs = []
    for name, version in wanted:
        if name not in found:
            spec = importlib.util.find_spec(name)
            found[name] = "missing"
            if spec is not None:
                from importlib.metadata import version as installed

                found[name] = installed(name)
        if found[name] != version:
            differs.append(f"{name} {found[name]} (prepared for {version})")
    relative = os.path.relpath(path, REPO)
    return (
        f"as {relative}" if not differs else f"**differs** from {relative}: " + ", ".join(differs)
    )


def nvcc():
    path, version = cuda_lib.nvcc()
    if version == "missing":
        return f"missing ({path}): no build possible, only the carried library can run"
    return f"{version} ({path})"


def compiler():
    name = os.environ.get("CXX", "c++")
    return f"{first_line([name, '--version'])} ({shutil.which(name) or 'not on PATH'})"


def python_headers():
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return header if os.path.exists(header) else f"missing ({header}): a build would fail"


def carried():
    path = os.path.join(REPO, "gpu_carry", "manifest.json")
    if not os.path.exists(path):
        return "none (gpu_carry/manifest.json absent: the library is built here)"
    with open(path) as f:
        m = json.load(f)
    return (
        f"{m['library']} for sm_{m['cuda_arch'].replace('.', '')}, torch {m['torch']}, commit {m['commit'][:12]}, "
        f"packed {m['built_utc']} UTC; wheels: {', '.join(m['wheels']) or 'none'}"
    )


def probe(function):
    """`function()`, or what went wrong in one line: one failed probe spoils no other row."""
    try:
        return function()
    except Exception as e:  # any failure is a finding to report, not a crash
        return f"n/a ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="full", help="printed in the table")
    args = parser.parse_args()
    rows = [
        ("date (UTC)", lambda: f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"),
        ("mode", lambda: args.mode),
        ("commit", commit),
        ("GPU", gpu),
        (
            "driver",
            lambda: first_line(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            ),
        ),
        ("Python", lambda: f"{platform.python_version()} ({sys.executable})"),
        (
            "torch",
            lambda: (
                f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
            ),
        ),
        ("torchvision", lambda: torchvision.__version__),
        ("stack", lambda: stack_against(os.path.join(REPO, "dev", "gpu_stack.txt"))),
        ("nvcc", nvcc),
        ("ninja", lambda: first_line(["ninja", "--version"])),
        ("compiler", compiler),
        ("Python headers", python_headers),
        ("carried library", carried),
        ("pytest-timeout", lambda: "yes" if importlib.util.find_spec("pytest_timeout") else "no"),
        ("CPU threads", lambda: f"{torch.get_num_threads()} of {os.cpu_count()} cores"),
    ]
    print("| | |\n|---|---|")
    for name, function in rows:
        print(f"| {name} | {probe(function)} |")


if __name__ == "__main__":
    main()
