"""Small file-system helpers shared by the tools and the checkpointer."""

import errno
import glob
import os
import tempfile

from .errors import InputError

# atomic_write's temporary files: "." + final name + "." + random + TMP_SUFFIX.
TMP_SUFFIX = ".tmp"


def mkdir(path):
    """`mkdir -p`: no error when the directory already exists."""
    try:
        os.makedirs(path)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


def atomic_write(path, write_fn, mode="wb"):
    """Write `path` through `write_fn(file)` so that readers never see a partial file.

    Writes a temporary file in the same directory, then `os.replace`s it over `path`;
    on any failure the temporary file is removed and `path` is left untouched. A full
    disk is reported as an InputError naming `path`. A process killed while writing
    leaves the temporary file; `remove_temporaries` cleans it up at the next start.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=TMP_SUFFIX
    )
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"no space left on device while writing {path}") from None
        raise


def remove_temporaries(directory):
    """Delete what `atomic_write`s killed mid-write left in `directory`; returns their paths."""
    leftovers = sorted(glob.glob(os.path.join(glob.escape(directory), ".*" + TMP_SUFFIX)))
    for path in leftovers:
        os.remove(path)
    return leftovers


def save_config(cfg, path):
    """Write a yacs config as YAML (atomically)."""
    atomic_write(path, lambda f: f.write(cfg.dump()), mode="w")


def refuse_overwriting_inputs(option, targets, inputs):
    """One-line InputError, before anything is written, when a file a tool would write
    (`targets`) is one of the files it reads (`inputs`: {path: what it is}); `option` names
    the tool's flag and value, e.g. "--output x.onnx"."""
    read = {os.path.realpath(path): what for path, what in inputs.items() if path}
    for target in targets:
        what = read.get(os.path.realpath(target))
        if what is not None:
            raise InputError(f"{option}: writing {target} would overwrite {what}")
