"""Builds paa_core and its compiled ops `paa_core._C`.

The C++ CPU sources are always built. The CUDA sources are added when a CUDA device
is visible or FORCE_CUDA=1 (then set CUDA_HOME and TORCH_CUDA_ARCH_LIST when there
is no GPU to query). torch must already be installed: use
`pip install -e . --no-build-isolation`.
"""

import glob
import os
import warnings

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

# The torch minor versions paa_core is tested with: the GPU machine's stack
# (dev/gpu_stack.txt, 2.11) up to requirements.txt's pin (2.14). INSTALL.md says the same.
TESTED_TORCH = ((2, 11), (2, 14))


def warn_untested_torch(version):
    """Outside the tested range the ops may still compile, against an ATen API that has
    moved: say so before the compiler does, without refusing."""
    minor = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    low, high = TESTED_TORCH
    if not low <= minor <= high:
        warnings.warn(
            f"setup.py: torch {version} is outside the tested range {low[0]}.{low[1]}-"
            f"{high[0]}.{high[1]} (INSTALL.md); if the build or the tests fail, install a torch "
            "in that range",
            stacklevel=1,
        )


def with_cuda():
    """True when the CUDA sources should be compiled too."""
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def get_extensions():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
    sources = glob.glob(os.path.join(root, "*.cpp")) + glob.glob(os.path.join(root, "cpu", "*.cpp"))
    extension, define_macros = CppExtension, []
    # -fno-trapping-math lets GCC turn float selects (x >= 0 ? a : b) into SIMD blends, which
    # the sigmoid focal loss loops need to vectorise; results are unchanged.
    extra_compile_args = {"cxx": ["-O3", "-fno-trapping-math"]}
    if with_cuda():
        extension = CUDAExtension
        sources += glob.glob(os.path.join(root, "cuda", "*.cu"))
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
    return [
        extension(
            "paa_core._C",
            sorted(sources),
            include_dirs=[root],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
        )
    ]


warn_untested_torch(torch.__version__)
setup(
    name="paa_core",
    version="0.1.0",
    description="Probabilistic Anchor Assignment (PAA) object detection in PyTorch",
    packages=find_packages(exclude=("configs", "tests", "tools", "demo")),
    # Runs on CPython 3.11 (CPU machines, CI) and 3.12 (GPU machine); ruff targets py311.
    python_requires=">=3.11",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
