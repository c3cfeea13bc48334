import functools

import pytest
import torch
from helpers import tiny_dataset


@pytest.fixture(scope="module")
def one_thread():
    """For modules of whole-model tests: their tensors are small, so a second intra-op
    thread costs more than it saves, and on a machine shared with other jobs it
    thrashes. (Op tests keep the default threads, so parallel kernels run threaded.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny dataset and PAA config the tools' end-to-end tests run on (`tiny_dataset`)."""
    return tiny_dataset(str(tmp_path_factory.mktemp("tiny")))


@functools.cache
def cuda_unusable_reason():
    """Why the CUDA cases cannot run here, or None when they can: a GPU must be visible
    and paa_core's ops built with CUDA (asked through the public NMS, which refuses
    CUDA tensors in a CPU-only build)."""
    if not torch.cuda.is_available():
        return "no CUDA device visible"
    from paa_core.layers import nms

    try:
        nms(torch.zeros(1, 4, device="cuda"), torch.ones(1, device="cuda"), 0.5)
    except RuntimeError as e:
        return f"paa_core ops do not run on CUDA: {str(e).splitlines()[0]}"
    return None


@pytest.fixture(scope="session", params=["cpu", "cuda"])
def device(request):
    """The one device parametrisation of the op and model tests: every case runs on the
    CPU, and on CUDA when `cuda_unusable_reason()` is None (else it is reported skipped).

    On CUDA, TF32 is switched off: the cases compare float32 results with CPU kernels and
    torchvision at float32 tolerances."""
    if request.param == "cuda":
        reason = cuda_unusable_reason()
        if reason:
            pytest.skip(reason)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(request.param)
