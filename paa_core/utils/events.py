"""Side results of a forward pass (statistics, intermediate tensors) for whoever asks.

A model part `publish`es a named value; code that wants those values runs the forward
inside `with listen() as published:` and reads the dict afterwards. Without a listener
nothing is kept, so publishing costs nothing in normal use. The trainer listens for
float statistics (logged with the losses); `tools/visualize_assignment.py` listens for
the PAA assignment's candidates and mixtures.
"""

from contextlib import contextmanager

_listeners = []


def listening():
    """True inside a `listen()` block: worth building a value that only a listener reads."""
    return bool(_listeners)


def publish(name, value):
    for published in _listeners:
        published[name] = value


@contextmanager
def listen():
    """Collect what is published inside the block into the yielded dict (last value per name)."""
    published = {}
    _listeners.append(published)
    try:
        yield published
    finally:
        _listeners.remove(published)
