"""Match a weight file's keys to a model's state dict and load them, with a clear report."""

import logging

# How many offending keys an error message lists.
MAX_LISTED = 4


class WeightMismatchError(RuntimeError):
    """A weight file whose keys or shapes do not fit the model."""


def _listing(items):
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (", ..." if len(items) > MAX_LISTED else "")


def strip_prefix_if_present(state_dict, prefix):
    """Drop `prefix` (e.g. "module." from DistributedDataParallel) when every key has it."""
    keys = list(state_dict.keys())
    if not keys or not all(key.startswith(prefix) for key in keys):
        return state_dict
    return type(state_dict)((key[len(prefix) :], value) for key, value in state_dict.items())


def match_keys_by_suffix(model_keys, loaded_keys):
    """For each model key, the longest loaded key that is a suffix of it at a '.' boundary.

    Returns {model_key: loaded_key}. This lets a backbone file with keys such as
    `layer1.0.conv1.weight` fill `backbone.body.layer1.0.conv1.weight`; a loaded key
    used by two model keys is ambiguous and is not matched to either.
    """
    matches = {}
    for model_key in model_keys:
        best = None
        for loaded_key in loaded_keys:
            fits = model_key == loaded_key or model_key.endswith("." + loaded_key)
            if fits and (best is None or len(loaded_key) > len(best)):
                best = loaded_key
        if best is not None:
            matches[model_key] = best
    used = {}
    for model_key, loaded_key in matches.items():
        used.setdefault(loaded_key, []).append(model_key)
    return {m: k for m, k in matches.items() if len(used[k]) == 1}


def detector_kind(keys):
    """Which detector a state dict's keys belong to, from parts only one of them has (the
    one-stage head's towers; the Faster R-CNN RPN's shared conv and ROI heads), or None."""
    keys = list(keys)
    if any(k.startswith("rpn.head.cls_tower.") for k in keys):
        return "one-stage PAA detector"
    if any(k.startswith(("rpn.head.conv.", "roi_heads.")) for k in keys):
        return "Faster R-CNN"
    return None


def align_and_update_state_dicts(
    model_state_dict, loaded_state_dict, source="weights", strict=False
):
    """Copy matching tensors of `loaded_state_dict` into `model_state_dict` (in place).

    Raises WeightMismatchError, naming `source`, when the file holds the other kind of
    detector (one-stage PAA vs Faster R-CNN), when a matched key has another shape,
    when nothing matches, when a loaded key fits no model key, or (with `strict`, for
    whole-detector checkpoints) when a model key is missing from the file.
    Returns the list of model keys that were filled.
    """
    _check_same_detector(model_state_dict, loaded_state_dict, source)
    matches = match_keys_by_suffix(list(model_state_dict.keys()), list(loaded_state_dict.keys()))
    missing = _check_matches(model_state_dict, loaded_state_dict, matches, source, strict)
    logger = logging.getLogger(__name__)
    for model_key, loaded_key in matches.items():
        model_state_dict[model_key] = loaded_state_dict[loaded_key]
        logger.debug(
            "%s loaded from %s of shape %s",
            model_key,
            loaded_key,
            tuple(loaded_state_dict[loaded_key].shape),
        )
    logger.info(
        "Loaded %d of %d model tensors from %s", len(matches), len(model_state_dict), source
    )
    if missing:
        logger.info(
            "%d model tensors keep their initialisation (not in %s): %s",
            len(missing),
            source,
            _listing(missing),
        )
    return list(matches)


def _check_same_detector(model_state_dict, loaded_state_dict, source):
    """A file of the other detector (one-stage PAA vs Faster R-CNN) is refused by name,
    before the key mismatches that would follow say less."""
    file_kind, model_kind = detector_kind(loaded_state_dict), detector_kind(model_state_dict)
    if file_kind and model_kind and file_kind != model_kind:
        raise WeightMismatchError(
            f"{source}: holds the weights of a {file_kind} but the config builds a {model_kind} "
            "(MODEL.PAA_ON): give the config the checkpoint was trained with"
        )


def _check_matches(model_state_dict, loaded_state_dict, matches, source, strict):
    """Raises WeightMismatchError when `matches` ({model key: loaded key}) cannot be loaded:
    a shape differs, nothing matched, a loaded key is left over, or (`strict`) a model key
    is missing. Returns the missing model keys, which keep their initialisation."""
    bad_shapes = [
        f"{k} {list(loaded_state_dict[k].shape)} vs model {m} {list(model_state_dict[m].shape)}"
        for m, k in matches.items()
        if loaded_state_dict[k].shape != model_state_dict[m].shape
    ]
    if bad_shapes:
        raise WeightMismatchError(
            f"{source}: {len(bad_shapes)} keys have a shape that does not fit the model: {_listing(bad_shapes)}"
        )
    if not matches:
        raise WeightMismatchError(
            f"{source}: none of its {len(loaded_state_dict)} keys fit the model "
            f"(file keys: {_listing(list(loaded_state_dict))}; model keys: {_listing(list(model_state_dict))})"
        )
    used = set(matches.values())
    unexpected = [key for key in loaded_state_dict if key not in used]
    if unexpected:
        raise WeightMismatchError(
            f"{source}: {len(unexpected)} keys fit no model key: {_listing(unexpected)}"
        )
    missing = [key for key in model_state_dict if key not in matches]
    if strict and missing:
        raise WeightMismatchError(
            f"{source}: {len(missing)} model keys are missing from the file: {_listing(missing)}"
        )
    return missing


def drop_parts(loaded_state_dict, parts, source="weights"):
    """`loaded_state_dict` without the keys under the top-level modules `parts` (parts of a
    detector the model leaves out), said in one log line."""
    dropped = [key for key in loaded_state_dict if key.split(".", 1)[0] in parts]
    if not dropped:
        return loaded_state_dict
    found = sorted({key.split(".", 1)[0] for key in dropped})
    logging.getLogger(__name__).info(
        "%s: leaving unused its %s (%d tensors): this model has no such part",
        source,
        ", ".join(found),
        len(dropped),
    )
    return {k: v for k, v in loaded_state_dict.items() if k.split(".", 1)[0] not in parts}


def load_state_dict(model, loaded_state_dict, source="weights", strict=False, unused_parts=()):
    """Load a (possibly `module.`-prefixed) state dict into `model` by suffix matching;
    keys under the top-level modules `unused_parts` are left unused."""
    model_state_dict = model.state_dict()
    loaded_state_dict = strip_prefix_if_present(loaded_state_dict, prefix="module.")
    loaded_state_dict = drop_parts(loaded_state_dict, unused_parts, source)
    align_and_update_state_dicts(model_state_dict, loaded_state_dict, source=source, strict=strict)
    model.load_state_dict(model_state_dict)
