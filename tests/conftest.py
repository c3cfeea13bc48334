import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """For modules of whole-model tests: their tensors are small, so a second intra-op
    thread costs more than it saves, and on a machine shared with other jobs it
    thrashes. (Op tests keep the default threads, so parallel kernels run threaded.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
