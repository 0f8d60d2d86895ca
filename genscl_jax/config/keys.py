"""The config's keys, for validation and the command line: a config flattened to dotted keys, the error a key that
does not exist gets (with the closest keys), and the keys a leaf name can mean.

Every failure of a config, here or in genscl_jax.config.validation / .rerun, is one `ConfigError` line.
"""

from __future__ import annotations

import difflib
from typing import Any

from genscl_jax.config import defaults


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key and the fix."""


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    items = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            items.update(flatten(value, name + "."))
        else:
            items[name] = value
    return items


# Keys that were replaced, and by what: their error says where the setting went.
_MOVED = {"knn.every_steps": "config.eval_every_steps (one schedule for the kNN and the online probe; "
                             "config.knn.enabled switches the kNN)"}


def keys_named(leaf: str) -> list[str]:
    """The dotted keys whose last part is `leaf` ("alpha" -> ["mix.alpha", "kd.alpha"])."""
    return [k for k in flatten(defaults.base_config()) if k.rsplit(".", 1)[-1] == leaf]


def unknown_key_error(name: str) -> ConfigError | None:
    """None if `name` ("linear_eval.batch_size") is a config key, else the one-line error, with the closest keys."""
    known = list(flatten(defaults.base_config()))
    if name in known:
        return None
    if name in _MOVED:
        return ConfigError(f"config.{name}: no longer a key; use {_MOVED[name]}")
    leaf = name.rsplit(".", 1)[-1]
    # The right key under another parent, else the closest spelling.
    close = [k for k in known if k.rsplit(".", 1)[-1] == leaf] or difflib.get_close_matches(name, known, n=1,
                                                                                          cutoff=0.6)
    hint = f" (did you mean {' or '.join(close[:2])}?)" if close else ""
    return ConfigError(f"config.{name}: unknown key{hint}; see genscl_jax/config/defaults.py for all keys")
