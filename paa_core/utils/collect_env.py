"""The environment a bug report needs: `python -m paa_core.utils.collect_env`.

Prints the versions of Python, PyTorch, torchvision, CUDA and the compilers, the GPUs,
and which compiled ops paa_core has and for which devices: the extension `paa_core._C`
registers them with PyTorch's dispatcher (`torch.ops.paa_core.*`, one kernel per
dispatch key).
"""

import glob
import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import NamedTuple

import torch

# Dispatch keys worth reporting for an op: its device kernels, the fake (meta) kernel
# that torch.compile and torch.export trace with, autograd and autocast rules.
DISPATCH_KEYS = ("CPU", "CUDA", "Meta", "Autograd", "AutocastCPU", "AutocastCUDA")


class ExtensionInfo(NamedTuple):
    path: str | None  # the loaded library, None when there is none
    error: str  # why it could not be loaded


def _output_line(command: list[str], containing: str = "") -> str | None:
    """The first non-empty stdout line of `command` that contains `containing`; None when
    the command cannot run or fails."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [
        line.strip() for line in result.stdout.splitlines() if line.strip() and containing in line
    ]
    return lines[0] if result.returncode == 0 and lines else None


def torch_build_compiler() -> str | None:
    """The compiler PyTorch was built with, as `torch.__config__.show()` names it."""
    match = re.search(r"^\s*-\s*((?:GCC|clang|MSVC)[^\n]*)$", torch.__config__.show(), re.M)
    return match.group(1).strip() if match else None


def library_compilers(path: str) -> list[str]:
    """Compilers named in a shared library's `.comment` strings ("GCC: (Debian 12.2.0) 12.2.0")."""
    with open(path, "rb") as f:
        data = f.read()
    found = re.findall(rb"(?:GCC: \([^)]*\) [\w.\-]+|clang version [\w.\-]+)", data)
    return sorted({name.decode("ascii", "replace") for name in found})


def dispatcher_ops(namespace: str = "paa_core") -> dict[str, list[str]]:
    """{op name: dispatch keys with a kernel} for the ops registered under `namespace`."""
    ops = {}
    for name in sorted(torch._C._dispatch_get_all_op_names()):
        if name.startswith(namespace + "::"):
            ops[name.split("::", 1)[1]] = [
                key
                for key in DISPATCH_KEYS
                if torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
            ]
    return ops


def extension_ops(module_name: str = "paa_core._C") -> ExtensionInfo:
    """Load the extension module (or, when it does not import, its library: either
    registers the ops with the dispatcher) and say where it is."""
    try:
        module = importlib.import_module(module_name)
        path = getattr(module, "__file__", None)
    except Exception as e:  # not built, built against another torch, or an ops-only library
        package, _, leaf = module_name.rpartition(".")
        folder = os.path.dirname(importlib.import_module(package).__file__)
        libraries = sorted(
            glob.glob(os.path.join(folder, leaf + ".*.so"))
            + glob.glob(os.path.join(folder, leaf + ".*.pyd"))
        )
        if not libraries:
            return ExtensionInfo(None, f"{type(e).__name__}: {e}")
        path = libraries[0]
        try:
            torch.ops.load_library(path)
        except Exception as load_error:
            return ExtensionInfo(None, f"{type(load_error).__name__}: {load_error}")
    return ExtensionInfo(path, "")


def _versions() -> list[tuple[str, str]]:
    compiler = torch_build_compiler() or "an unknown compiler"
    rows = [
        ("Python", sys.version.replace("\n", " ")),
        ("Platform", platform.platform()),
        (
            "PyTorch",
            f"{torch.__version__} (built with {compiler}, CUDA {torch.version.cuda or 'none'})",
        ),
    ]
    try:
        import torchvision

        rows.append(("torchvision", torchvision.__version__))
    except ImportError as e:
        rows.append(("torchvision", f"not importable ({e})"))
    rows.append(("CUDA available", str(torch.cuda.is_available())))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append(
                (
                    f"GPU {i}",
                    f"{p.name}, compute capability {p.major}.{p.minor}, "
                    f"{p.total_memory / 2**30:.1f} GiB",
                )
            )
        if torch.backends.cudnn.is_available():
            rows.append(("cuDNN", str(torch.backends.cudnn.version())))
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else shutil.which("nvcc")
    rows.append(("nvcc", (nvcc and _output_line([nvcc, "--version"], "release")) or "not found"))
    cxx = os.environ.get("CXX", "c++")
    rows.append(("C++ compiler", _output_line([cxx, "--version"]) or "not found"))
    return rows


def _ops() -> list[tuple[str, str]]:
    import paa_core

    rows = [("paa_core", os.path.dirname(os.path.abspath(paa_core.__file__)))]
    ext = extension_ops()
    if ext.path is None:
        rows.append(("paa_core._C", f"not built or not loadable: {ext.error}"))
    else:
        rows.append(("paa_core._C", ext.path))
        rows.append(("  built by", ", ".join(library_compilers(ext.path)) or "unknown"))
    ops = dispatcher_ops()
    for name, keys in ops.items():
        rows.append((f"  torch.ops.paa_core.{name}", ", ".join(keys) or "no kernel"))
    if not ops:
        rows.append(("  torch.ops.paa_core", "no ops registered"))
    return rows


def collect_env() -> list[tuple[str, str]]:
    """(name, value) rows, in the order they are printed."""
    return _versions() + _ops()


def format_env(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main():
    print(format_env(collect_env()))


if __name__ == "__main__":
    main()
