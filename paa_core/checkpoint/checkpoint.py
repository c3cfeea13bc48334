"""Save and restore training state; initialise a model from local files, URLs or catalog names."""

import io
import logging
import os

import torch

from paa_core.config.loading import load_catalog
from paa_core.utils.errors import InputError
from paa_core.utils.miscellaneous import atomic_write, mkdir

from .c2_model_loading import load_c2_format
from .d2_model_loading import convert_detectron2_weights, is_detectron2_state_dict
from .model_serialization import load_state_dict
from .model_zoo import cache_url

LAST_CHECKPOINT = "last_checkpoint"
URL_SCHEMES = ("http://", "https://", "file://")
CATALOG_PREFIX = "catalog://"


def catalog_url(cfg, name, key=None):
    """The URL that the ModelCatalog of cfg.PATHS_CATALOG gives the `catalog://` weight
    `name`; a one-line InputError (naming `key`, where it was set) if the catalog does
    not know it."""
    try:
        return load_catalog(cfg).ModelCatalog.get(name[len(CATALOG_PREFIX) :])
    except (KeyError, RuntimeError, ValueError) as e:  # a catalog's own lookup error
        raise InputError(f"{key + ' ' if key else ''}{name}: {e}") from None


def _is_torchvision_resnet(state_dict):
    return "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict


def rename_torchvision_resnet(state_dict):
    """torchvision ResNet names -> our body names: the stem's conv1/bn1 move under `stem.`,
    the classifier and BN step counters are dropped, `layerX.Y.*` is already ours."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("conv1.", "bn1.")):
            key = "stem." + key
        renamed[key] = value
    return renamed


def _unreadable(path, kind, error):
    """The one-line error for a weight file that cannot be decoded (text, truncated, ...)."""
    reason = (
        str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    )
    return InputError(
        f"{path}: not a readable {kind} weight file (truncated or another format?): {reason}"
    )


class Checkpointer:
    """Writes `<save_dir>/<name>.pth` (model, optimizer, scheduler, extra state) and
    `<save_dir>/last_checkpoint`; `load` resumes from the latter when it exists.

    `states` names further objects with `state_dict`/`load_state_dict` (e.g. the
    random-number generators) that are saved and, on resume, restored with the model.
    Their `state_dict` may be collective, so `save` is called on every process.
    """

    def __init__(
        self,
        model,
        optimizer=None,
        scheduler=None,
        save_dir="",
        save_to_disk=None,
        logger=None,
        states=None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger(__name__)
        self.states = dict(states or {})

    def save(self, name, **extra):
        """Write `<name>.pth` atomically, then point `last_checkpoint` at it; returns its path."""
        data = {key: obj.state_dict() for key, obj in self.states.items()}
        path = os.path.join(self.save_dir, f"{name}.pth")
        if not self.save_dir or not self.save_to_disk:
            return path
        model = self.model.module if hasattr(self.model, "module") else self.model
        data["model"] = model.state_dict()
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        data.update(extra)
        mkdir(self.save_dir)
        self.logger.info("Saving checkpoint to %s", path)
        # Serialised in memory first: torch.save's zip writer reports a failed file write
        # (e.g. a full disk) without its cause, a plain write names it.
        buffer = io.BytesIO()
        torch.save(data, buffer)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))
        atomic_write(
            os.path.join(self.save_dir, LAST_CHECKPOINT), lambda f: f.write(f"{name}.pth"), mode="w"
        )
        return path

    def load(self, f=None, use_latest=True):
        """Resume from `last_checkpoint` if present (returns the saved extra state, e.g.
        {"iteration": ...}); otherwise initialise the model from `f` and return {}."""
        if use_latest and self.has_checkpoint():
            path = self.get_checkpoint_file()
            self.logger.info("Resuming from %s", path)
            checkpoint, _ = self._load_file(path)
            load_state_dict(self.model, checkpoint.pop("model"), source=path, strict=True)
            optimizer_state = checkpoint.pop("optimizer", None)
            scheduler_state = checkpoint.pop("scheduler", None)
            if optimizer_state is not None and self.optimizer is not None:
                self.optimizer.load_state_dict(optimizer_state)
            if scheduler_state is not None and self.scheduler is not None:
                self.scheduler.load_state_dict(scheduler_state)
            for key, obj in self.states.items():
                if key in checkpoint:
                    obj.load_state_dict(checkpoint.pop(key))
            return checkpoint
        if not f:
            self.logger.info(
                "No checkpoint found and no weights given: the model keeps its initialisation"
            )
            return {}
        # A weight file initialises the model; the optimizer state and iteration it may
        # hold belong to another run and are not restored.
        self.logger.info("Loading weights from %s", f)
        checkpoint, whole_model = self._load_file(f)
        load_state_dict(
            self.model,
            checkpoint["model"],
            source=f,
            strict=whole_model,
            unused_parts=getattr(self.model, "parts_left_out", ()),
        )
        return {}

    def has_checkpoint(self):
        return bool(self.save_dir) and os.path.exists(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def last_checkpoint(self):
        """The file a restart would resume from, or None."""
        return self.get_checkpoint_file() if self.has_checkpoint() else None

    def get_checkpoint_file(self):
        """Path recorded in `last_checkpoint` (a name relative to save_dir, or an absolute path)."""
        with open(os.path.join(self.save_dir, LAST_CHECKPOINT)) as fh:
            name = fh.read().strip()
        return name if os.path.isabs(name) else os.path.join(self.save_dir, name)

    def _load_file(self, f):
        """Read a `.pth` file: (checkpoint dict with a "model" state dict, whole_model).

        `whole_model` is True for checkpoint dicts (ours or the reference's), which must
        fill every model key; bare state dicts, e.g. a torchvision ResNet, may cover
        only part of the model.
        """
        if not os.path.isfile(f):
            raise FileNotFoundError(f"weight file not found: {f}")
        try:
            loaded = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # whatever the unpickler or zip reader trips over
            raise _unreadable(f, "PyTorch", e) from None
        if not isinstance(loaded, dict):
            raise InputError(
                f"{f}: expected a state dict or a checkpoint dict, found {type(loaded).__name__}"
            )
        if "model" in loaded:
            return loaded, True
        if _is_torchvision_resnet(loaded):
            loaded = rename_torchvision_resnet(loaded)
        return {"model": loaded}, False


class DetectronCheckpointer(Checkpointer):
    """Checkpointer that also reads `catalog://` names, URLs, Caffe2 `.pkl` backbones and
    detectron2 checkpoints (`.pkl` or `.pth`, e.g. the authors' Faster R-CNN fork's)."""

    def __init__(
        self,
        cfg,
        model,
        optimizer=None,
        scheduler=None,
        save_dir="",
        save_to_disk=None,
        logger=None,
        states=None,
    ):
        super().__init__(model, optimizer, scheduler, save_dir, save_to_disk, logger, states)
        self.cfg = cfg

    def _load_file(self, f):
        if f.startswith(CATALOG_PREFIX):
            url = catalog_url(self.cfg, f)
            self.logger.info("%s points to %s", f, url)
            f = url
        if f.startswith(URL_SCHEMES):
            f = cache_url(f)
        if f.endswith(".pkl"):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"weight file not found: {f}")
            try:
                return load_c2_format(f), False
            except Exception as e:
                raise _unreadable(f, "Caffe2 .pkl", e) from None
        checkpoint, whole_model = super()._load_file(f)
        if whole_model and is_detectron2_state_dict(checkpoint["model"]):
            return {"model": convert_detectron2_weights(checkpoint["model"])}, True
        return checkpoint, whole_model
