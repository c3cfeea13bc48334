"""Builds paa_core and its compiled ops `paa_core._C`.

The C++ CPU sources are always built. The CUDA sources are added when a CUDA device
is visible or FORCE_CUDA=1 (then set CUDA_HOME and TORCH_CUDA_ARCH_LIST when there
is no GPU to query). torch must already be installed: use
`pip install -e . --no-build-isolation`.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


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
