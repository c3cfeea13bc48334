"""The config tree. Callers take their own copy with `get_cfg()`; `cfg` itself (the
defaults, importable as in maskrcnn-benchmark) is never changed by paa_core."""

from .defaults import _C as cfg


def get_cfg():
    """A fresh, unfrozen clone of the defaults: merge files and options into it freely."""
    return cfg.clone()
