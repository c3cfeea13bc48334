"""Download weight files named by URL into a local cache, once."""

import logging
import os
from urllib.parse import urlparse

import torch

from paa_core.utils.comm import is_main_process, synchronize
from paa_core.utils.miscellaneous import mkdir


def default_cache_dir():
    """`$PAA_CACHE_DIR`, else `<torch hub dir>/checkpoints` (honours `$TORCH_HOME`)."""
    return os.environ.get("PAA_CACHE_DIR") or os.path.join(torch.hub.get_dir(), "checkpoints")


def cache_file_name(url):
    """Local name of a URL's file; Detectron's many `model_final.pkl` get their path spelled out."""
    path = urlparse(url).path
    filename = os.path.basename(path)
    if filename == "model_final.pkl":
        filename = path.strip("/").replace("/", "_")
    return filename


def cache_url(url, model_dir=None, progress=True):
    """Return the local path of `url`'s file, downloading it first if it is not cached.

    Only the main process downloads (to a temporary name, then renamed, so an
    interrupted download never leaves a file that looks complete); the others wait.
    """
    model_dir = model_dir or default_cache_dir()
    cached = os.path.join(model_dir, cache_file_name(url))
    if is_main_process() and not os.path.exists(cached):
        mkdir(model_dir)
        logging.getLogger(__name__).info("Downloading %s to %s", url, cached)
        torch.hub.download_url_to_file(url, cached, progress=progress)
    synchronize()
    return cached
