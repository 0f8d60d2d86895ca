"""The rerun policy: which keys a rerun in a workdir may change from the config its checkpoints were trained with
(defaults.RERUN_MAY_CHANGE, and the settings of features that are off in both runs), and the one-line error that
names the others.
"""

from __future__ import annotations

import json
from typing import Any

from genscl_jax.config import defaults, features
from genscl_jax.config.keys import ConfigError, flatten


def rerun_changes(recorded: Any, config: Any) -> dict[str, tuple[Any, Any]]:
    """{key: (recorded, new)} for every key in which `config` differs from the config a workdir's checkpoints were
    trained with (its config.json), when all of them are keys a rerun may change (defaults.RERUN_MAY_CHANGE);
    ConfigError naming the others, with both values, when not."""
    old, new = flatten(_as_json(recorded)), flatten(_as_json(config))
    changed = {k: (old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]}
    refused = {k: v for k, v in changed.items() if not _may_change(k, recorded, config)}
    if refused:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise ConfigError(f"this workdir's checkpoints were trained with another config: {listed} (its config.json); "
                          "these keys change what is trained, so use a new --workdir (or rerun with the recorded "
                          "values)")
    return changed


def _as_json(config: Any) -> dict[str, Any]:
    """The config as config.json records it (tuples as lists, other values as their text), for comparing."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def _may_change(key: str, recorded: Any, config: Any) -> bool:
    """A key a rerun may change: run length, logging, checkpointing, evaluation and where the data is; or a
    setting of a feature that is off in both runs (a teacher with kd.alpha 0, the queue without MoCo, linear
    evaluation in a mode that has none)."""
    if any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in defaults.RERUN_MAY_CHANGE):
        return True
    group = key.split(".", 1)[0]
    unused_in = {"kd": lambda c: not features.distillation(c), "moco": lambda c: not features.moco(c),
                 "linear_eval": lambda c: not features.linear_evaluation(c)}
    return group in unused_in and all(unused_in[group](c) for c in (recorded, config))
