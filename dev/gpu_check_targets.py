"""Reads dev/check_gpu.sh's log back: the targets table of its report, and one step's output.

The log holds every step between two marker lines that check_gpu.sh writes,
`== step <name>: started, ...` and `== step <name>: <result> in <n> s` (or one line
`== step <name>: skipped, ...`). A benchmark states each of its targets as one line

    TARGET <what> | <target> | <measured> | <yes|no>

e.g. `TARGET nms 5000 boxes ours/torchvision | <= 1.0 | 0.83 | yes`; the benchmark judges,
this file only gathers, so a target's wording and threshold live in one place.

    python dev/gpu_check_targets.py LOG --expect "benchmark ops.py" ...   # targets table
    python dev/gpu_check_targets.py LOG --section NAME [--tail 40]       # a step's output

With --expect, a named step that printed no target (skipped, stopped at its limit, failed,
or never reached) is listed under the table with what happened to it.
"""

import argparse
import re
import sys
from typing import NamedTuple

MARKER = re.compile(r"^== step (?P<name>.+?): (?P<state>.*)$")
TARGET = re.compile(r"^\s*TARGET\s+(?P<fields>.*)$")


class Target(NamedTuple):
    step: str
    what: str
    target: str
    measured: str
    met: bool


class Steps(NamedTuple):
    targets: list  # Target, in log order
    outcome: dict  # step name -> its last marker's state ("passed in 12 s", "skipped, ...")
    output: dict  # step name -> its output lines
    malformed: list  # TARGET lines that are not four '|'-separated fields ending in yes/no


def read_log(text):
    """Splits the log into steps and gathers their TARGET lines."""
    steps = Steps([], {}, {}, [])
    current = None
    for line in text.splitlines():
        marker = MARKER.match(line)
        if marker:
            name, state = marker.group("name"), marker.group("state")
            steps.outcome[name] = state
            current = name if state.startswith("started") else None
            if current:
                steps.output[name] = []
            continue
        if current:
            steps.output[current].append(line)
        target = TARGET.match(line)
        if target:
            fields = [f.strip() for f in target.group("fields").split("|")]
            if len(fields) != 4 or fields[3] not in ("yes", "no") or not all(fields):
                steps.malformed.append(line.strip())
                continue
            steps.targets.append(
                Target(current or "(outside a step)", *fields[:3], fields[3] == "yes")
            )
    return steps


def silent_steps(steps, expected):
    """(step, what happened) for each expected step that printed no TARGET line."""
    speaking = {t.step for t in steps.targets}
    silent = []
    for name in expected:
        if name in speaking:
            continue
        state = steps.outcome.get(name, "never reached: the check ended before it")
        if state.startswith("started"):
            state = "started, never ended (the check was killed in it)"
        silent.append((name, state))
    return silent


def targets_markdown(steps, expected):
    """The report's targets section."""
    lines = ["## Targets", ""]
    if steps.targets:
        lines += ["| benchmark | what | target | measured | met |", "|---|---|---|---|---|"]
        for t in steps.targets:
            step = t.step.removeprefix("benchmark ")
            lines.append(
                f"| {step} | {t.what} | {t.target} | {t.measured} | {'yes' if t.met else '**no**'} |"
            )
        lines += ["", f"{sum(t.met for t in steps.targets)} of {len(steps.targets)} targets met."]
    else:
        lines.append("No benchmark printed a target.")
    silent = silent_steps(steps, expected)
    if silent:
        lines += ["", "Printed no target:"]
        lines += [f"- {name.removeprefix('benchmark ')}: {state}" for name, state in silent]
    if steps.malformed:
        lines += [
            "",
            "TARGET lines not of the form `TARGET <what> | <target> | <measured> | <yes|no>`:",
        ]
        lines += [f"- `{line}`" for line in steps.malformed]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--expect", nargs="*", default=[], help="steps that should print targets")
    parser.add_argument("--section", help="print this step's output instead")
    parser.add_argument("--tail", type=int, default=0, help="with --section: its last N lines only")
    args = parser.parse_args()
    with open(args.log, errors="replace") as f:
        steps = read_log(f.read())
    if args.section is None:
        print(targets_markdown(steps, args.expect))
        return
    if args.section not in steps.output:
        sys.exit(f"{args.log}: no step named '{args.section}' started")
    output = steps.output[args.section]
    print("\n".join(output[-args.tail :] if args.tail else output))


if __name__ == "__main__":
    main()
