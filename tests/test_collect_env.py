"""python -m paa_core.utils.collect_env: versions and the compiled ops with their devices."""

import os
import platform
import re
import subprocess
import sys

import torch
import torchvision

from paa_core.utils.collect_env import (
    DISPATCH_KEYS,
    dispatcher_ops,
    extension_ops,
    library_compilers,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A library defined for the whole session: on torch 2.11 a library freed after its test
# leaves an op with no overloads behind, which breaks every later listing of the
# decompositions (torch.compile, ONNX export).
ENVTEST_LIB = torch.library.Library("paa_core_envtest", "DEF")


def test_command_prints_versions_and_ops():
    out = subprocess.run(
        [sys.executable, "-m", "paa_core.utils.collect_env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())
    assert rows["Python"].startswith(platform.python_version())
    assert rows["PyTorch"].startswith(torch.__version__ + " (built with ")
    assert rows["torchvision"] == torchvision.__version__
    assert rows["CUDA available"] == str(torch.cuda.is_available())
    ext = extension_ops()
    assert rows["paa_core._C"] == ext.path and os.path.isfile(ext.path)
    # The core ops are listed with their dispatch keys.
    ops_text = "\n".join(line for line in out.splitlines() if "torch.ops" in line)
    for op in ("nms", "ml_nms", "gmm2_fit"):
        assert op in ops_text


def test_dispatcher_ops_report_the_keys_registered():
    ENVTEST_LIB.define("twice(Tensor x) -> Tensor")
    ENVTEST_LIB.impl("twice", lambda x: x * 2, "CPU")
    torch.library.register_fake(
        "paa_core_envtest::twice", lambda x: torch.empty_like(x), lib=ENVTEST_LIB
    )
    assert dispatcher_ops("paa_core_envtest") == {"twice": ["CPU", "Meta"]}
    assert torch.ops.paa_core_envtest.twice(torch.ones(2)).tolist() == [2.0, 2.0]
    vision = dispatcher_ops("torchvision")
    assert {"CPU", "Meta"} <= set(vision["nms"]) and "Autograd" in vision["roi_align"]
    assert all(keys == [k for k in DISPATCH_KEYS if k in keys] for keys in vision.values())


def test_extension_ops_and_compilers():
    ext = extension_ops()
    assert ext.error == "" and ext.path.startswith(os.path.join(ROOT, "paa_core"))
    if sys.platform.startswith("linux"):
        assert any(name.startswith(("GCC", "clang")) for name in library_compilers(ext.path))
    missing = extension_ops("paa_core.no_such_module")
    assert missing.path is None and "no_such_module" in missing.error
