"""Runs the tools as forked children of one process that has imported torch and paa_core
already: the fault suite starts dozens of short tool runs, and importing torchvision
alone takes seconds of CPU each time.

Each child is a real process, leading its own process group as a shell job would, with
its own exit code, stdout and stderr, signals and DataLoader workers; only the imports
are shared. Protocol: one JSON line per run on
stdin, {"argv": [script, args...], "cwd": dir, "out": prefix}; the server answers with
the child's pid on a line of stdout. The child writes its stdout and stderr to
`prefix.out` / `prefix.err` and, when it exits by itself, its exit code to `prefix.code`.
"""

import json
import os
import runpy
import signal
import sys
import traceback

import cv2  # noqa: F401
import torch

import paa_core.checkpoint.checkpoint  # noqa: F401
import paa_core.data  # noqa: F401
import paa_core.engine.cli  # noqa: F401
import paa_core.engine.trainer  # noqa: F401
import paa_core.modeling.detector  # noqa: F401
import paa_core.solver  # noqa: F401


def exit_code(e):
    """What the interpreter would exit with for SystemExit `e` (printing a message code)."""
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=sys.stderr)
    return 1


def run_child(argv, cwd, prefix):
    code = 1
    try:
        os.setpgrp()  # a job of its own, as a shell would start it
        os.chdir(cwd)
        for fd, suffix in ((1, ".out"), (2, ".err")):
            os.dup2(os.open(prefix + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.stdin = open(os.devnull)
        for s in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as e:
            code = exit_code(e)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        with open(prefix + ".code.tmp", "w") as f:
            f.write(str(code))
        os.replace(prefix + ".code.tmp", prefix + ".code")
    finally:
        os._exit(code)


def main():
    torch.set_num_threads(1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request["argv"], request["cwd"], request["out"])
        print(pid, flush=True)


if __name__ == "__main__":
    main()
