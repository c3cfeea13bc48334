"""Random-number states: saved with checkpoints so a resumed run draws what an
uninterrupted one would, and fixed per sample so data augmentation does not depend
on which process or DataLoader worker loads an image."""

import contextlib
import random

import numpy as np
import torch

from .comm import all_gather, get_rank


def get_rng_state():
    """Python's, NumPy's and torch's (CPU and, once initialised, CUDA) global states,
    in types that `torch.load(weights_only=True)` reads back."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"], state=dict(state["numpy"]["state"]))
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ProcessRNG:
    """Every process's global RNG states as one checkpoint entry (a list indexed by
    rank): `state_dict` is collective, so every rank must call it."""

    def state_dict(self):
        return all_gather(get_rng_state())

    def load_state_dict(self, states):
        rank = get_rank()
        if rank < len(states):
            set_rng_state(states[rank])


@contextlib.contextmanager
def seeded(seed):
    """Run the block with Python's, NumPy's and torch's CPU generators seeded by `seed`,
    then put their previous states back (CUDA generators are not touched)."""
    python_state, numpy_state, torch_state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
