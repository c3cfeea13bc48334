"""Small file-system helpers shared by the tools and the checkpointer."""
import errno
import os
import tempfile


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
    on any failure the temporary file is removed and `path` is left untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_config(cfg, path):
    """Write a yacs config as YAML (atomically)."""
    atomic_write(path, lambda f: f.write(cfg.dump()), mode="w")
