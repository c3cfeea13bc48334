"""Logging set-up: the main process logs to stdout and to `<save_dir>/log.txt`."""

import logging
import os
import sys

FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logger(name, save_dir, distributed_rank, filename="log.txt"):
    """Configure logger `name`; non-main processes only log warnings and errors to stderr.

    Every rank writes DEBUG records to `save_dir/log.txt` (rank r > 0 to `log_rank{r}.txt`),
    so per-process details such as the image ids each rank saw are kept on disk.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)

    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(logging.INFO if distributed_rank == 0 else logging.WARNING)
    console.setFormatter(formatter)
    logger.addHandler(console)

    if save_dir:
        if distributed_rank > 0:
            root, ext = os.path.splitext(filename)
            filename = f"{root}_rank{distributed_rank}{ext}"
        file_handler = logging.FileHandler(os.path.join(save_dir, filename))
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger
