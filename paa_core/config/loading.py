"""Reading the files a config names: the config file itself (with the command line's
overrides) and the dataset/model catalog of PATHS_CATALOG."""

import os
import re

import yaml
from yacs.config import CfgNode as CN

from paa_core.utils.errors import InputError
from paa_core.utils.imports import import_file

from .reference import check_reference_switches


def _rephrase_yacs_error(error, where):
    """yacs' KeyError/AssertionError/ValueError text as a message naming the key and where it was set."""
    text = str(error.args[0]) if error.args else str(error)
    unknown = re.match(r"Non-existent (?:config )?key: (\S+)", text)
    if unknown:
        return f"{where}: unknown config key {unknown.group(1)}"
    return f"{where}: {text}"


def _ints_as_floats(defaults, loaded):
    """`loaded` with whole numbers given for float keys made floats (the reference's tree
    has `WEIGHT_DECAY_BIAS: 0`, ours 0.0; yacs would refuse either in the other)."""
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, CN) else None
        if isinstance(value, CN):
            _ints_as_floats(default, value)
        elif isinstance(default, float) and type(value) is int:
            loaded[key] = float(value)
    return loaded


def _ints_as_floats_in_opts(defaults, opts):
    """Command-line KEY VALUE pairs, whole numbers for float keys written as floats."""
    opts = list(opts)
    for i in range(0, len(opts) - 1, 2):
        node = defaults
        for name in str(opts[i]).split("."):
            node = node.get(name) if isinstance(node, CN) else None
        if isinstance(node, float) and str(opts[i + 1]).lstrip("-").isdigit():
            opts[i + 1] = str(float(opts[i + 1]))
    return opts


def load_config(cfg, config_file, opts):
    """Merge `config_file` and then `opts` into `cfg` (not frozen), as one-line InputErrors.

    Files written for the reference implementation load as they are; one that switches
    on a part paa_core leaves out (MODEL.MASK_ON True, ...) is refused here."""
    if not os.path.isfile(config_file):
        raise InputError(f"config file not found: {config_file}")
    try:
        with open(config_file) as f:
            loaded = cfg.load_cfg(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise InputError(f"{config_file}: cannot parse: {where}{e.problem or e.context}") from None
    except Exception as e:  # another YAML or file error, whatever its class
        raise InputError(f"{config_file}: cannot parse: {str(e).splitlines()[0]}") from None
    try:
        cfg.merge_from_other_cfg(_ints_as_floats(cfg, loaded))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        raise InputError(_rephrase_yacs_error(e, config_file)) from None
    try:
        cfg.merge_from_list(_ints_as_floats_in_opts(cfg, opts))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        raise InputError(_rephrase_yacs_error(e, "command line")) from None
    check_reference_switches(cfg)


def load_catalog(cfg):
    """The module of cfg.PATHS_CATALOG (its DatasetCatalog and ModelCatalog), importable
    as `paa_core.config.paths_catalog` from then on (DataLoader workers re-import it)."""
    return import_file("paa_core.config.paths_catalog", cfg.PATHS_CATALOG, True)
