"""The one way a config reaches a training step: a frozen settings class whose fields each say where in the config
they come from (`from_config`), read by one function (`read`). A new setting is one field line where the step reads
it (plus its default in config/defaults.py and, for a number, its range in config/validation.py).

Fields that are not the config's (the class count, the step count, the device preprocessing) are given by the
trainer to `read` by name.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable


def from_config(source: str | Callable[[Any], Any], convert: Callable[[Any], Any] | None = None) -> Any:
    """A settings field read from the config: `source` is a dotted key ("kd.alpha") or a function of the config
    (config.features' flags); `convert` (float, tuple, ...) applies to the value read."""
    return dataclasses.field(metadata={"from_config": source, "convert": convert})


def _value(config: Any, source: str | Callable[[Any], Any]) -> Any:
    if callable(source):
        return source(config)
    return functools.reduce(lambda node, part: node[part], source.split("."), config)


def read(cls: type, config: Any, **given: Any) -> Any:
    """An instance of the settings class `cls`: each from_config field read from `config`, the others from `given`."""
    values = {}
    for field in dataclasses.fields(cls):
        if "from_config" not in field.metadata:
            continue
        value = _value(config, field.metadata["from_config"])
        convert = field.metadata["convert"]
        values[field.name] = convert(value) if convert else value
    return cls(**values, **given)
