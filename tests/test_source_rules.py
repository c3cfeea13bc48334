"""The project's rules on paa_core's own source, read with `ast`: no function longer than
MAX_LINES lines, so that a long computation reads as named steps."""

import ast
import os

from helpers import REPO

MAX_LINES = 60


def long_functions(source, max_lines=MAX_LINES):
    """[(name, line of its `def`, its length)] of the functions and methods of `source`
    longer than `max_lines`, counted from `def` to the last line of the body (decorators
    left out); a nested function counts within its parent and on its own."""
    return [
        (node.name, node.lineno, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > max_lines
    ]


def test_length_runs_from_def_to_the_last_line_of_the_body():
    source = (
        "@decorator\n"
        "def outer(x):\n"
        '    """Doc."""\n'
        "    async def inner():\n"
        "        pass\n"
        "\n"
        "    return (\n"
        "        x\n"
        "    )\n"
        "# a comment after the body\n"
    )
    assert long_functions(source, max_lines=7) == [("outer", 2, 8)]
    assert long_functions(source, max_lines=1) == [("outer", 2, 8), ("inner", 4, 2)]
    assert long_functions(source, max_lines=8) == []


def test_no_function_of_paa_core_is_longer_than_60_lines():
    found = []
    for folder, _, names in sorted(os.walk(os.path.join(REPO, "paa_core"))):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path) as f:
                found += [
                    f"{os.path.relpath(path, REPO)}:{line} {function} ({length} lines)"
                    for function, line, length in long_functions(f.read())
                ]
    assert not found, f"over {MAX_LINES} lines, split into named steps: " + "; ".join(found)
