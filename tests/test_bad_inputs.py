"""Every key of defaults.base_config(), given a value of the wrong type and (numeric keys) one out of its range,
through genscl_jax.main's own parsing and validation: one line naming the key, no traceback.

Two ways a value arrives: a --config.KEY=VALUE override (parsed by absl and ml_collections), and a config file
whose get_config() sets it. Both run in this process (main.parse_flags, then what runner.run validates first), a
few milliseconds per case, so the walk covers every key; tests/test_main.py checks the same lines end to end.
"""

import sys

import pytest
from absl import flags

from genscl_jax import main
from genscl_jax.config import defaults, keys, validation

KEYS = keys.flatten(defaults.base_config())
# Command-line text that no parser of the key's type accepts. A string key takes any text, and a tuple key any
# comma-separated text: for those a wrong value is one their validation rejects (an unknown choice, a word where a
# number belongs); free-text keys (paths, split names) can be given a wrong type only by a config file.
WRONG_TEXT = {int: "many", float: "lots", bool: "maybe", tuple: "abc"}
# Values of another type, as a config file's get_config() could set them.
WRONG_PYTHON = {int: "8", float: "0.5", bool: "yes", str: 3, tuple: 5}


# Tuple keys whose values have bounds (validation._check_views), given a value out of them.
OUT_OF_RANGE_TUPLES = {"crop_scale": "0.0,1.0", "linear_eval.crop_scale": "0.5,0.2", "color_jitter": "0.4,0.4,0.4,0.9"}


def out_of_range(allowed):
    if allowed.low is not None:
        return allowed.low - 1 if allowed.low_inclusive else allowed.low
    return allowed.high + 1


def bad_overrides():
    cases = []
    for key, default in KEYS.items():
        kind = type(default)
        if kind in WRONG_TEXT:
            cases.append((key, WRONG_TEXT[kind]))
        elif key in validation.CHOICES:
            cases.append((key, "no_such_choice"))
        if key in validation.RANGES:
            bad = out_of_range(validation.RANGES[key])
            cases.append((key, str(int(bad) if kind is int else float(bad))))
        if key in OUT_OF_RANGE_TUPLES:
            cases.append((key, OUT_OF_RANGE_TUPLES[key]))
    return cases


@pytest.fixture
def parse(monkeypatch, capsys):
    """parse(argv) -> the one line main prints for it (or None when it is accepted), as the command line would."""
    def run(*args, recipe="configs/quickstart.py"):
        argv = ["genscl_jax.main", "--config", recipe, "--workdir", "/nonexistent/run", *args]
        monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv
        for name in [name for name in flags.FLAGS if name.startswith("config.")]:
            delattr(flags.FLAGS, name)  # each parse defines the overrides it sees
        flags.FLAGS.unparse_flags()
        try:
            main.parse_flags(argv)
            validation.validate(main._CONFIG.value, num_devices=1)
        except SystemExit as e:
            assert e.code == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
            return err.strip()
        except validation.ConfigError as e:
            return f"config error: {e}"  # what main prints for it
        return None

    return run


def test_every_key_with_a_wrong_or_out_of_range_value_from_the_command_line(parse):
    cases = bad_overrides()
    for key, value in cases:
        line = parse(f"--config.{key}={value}")
        assert line is not None, f"--config.{key}={value} was accepted"
        assert line.startswith("config error: ") and key in line and "\n" not in line, (key, value, line)
    assert len(cases) >= 2 * len(validation.RANGES)
    print(f"{len(cases)} bad command-line values")


def test_every_key_with_a_value_of_the_wrong_type_from_a_config_file(parse, tmp_path):
    count = 0
    for key, default in KEYS.items():
        wrong = WRONG_PYTHON[type(default)]
        recipe = tmp_path / f"wrong_{count}.py"
        recipe.write_text("from genscl_jax.config import defaults\n\n\ndef get_config():\n"
                          "    c = defaults.base_config()\n"
                          f"    c.{key} = {wrong!r}\n    return c\n")
        line = parse(recipe=str(recipe))
        assert line is not None and line.startswith("config error: "), (key, wrong, line)
        assert f"config.{key}" in line, (key, wrong, line)
        count += 1
    assert count == len(KEYS)
    print(f"{count} wrong types from a config file")


def test_every_numeric_key_has_a_range():
    numeric = {k for k, v in KEYS.items() if type(v) in (int, float)}
    assert numeric == set(validation.RANGES), sorted(numeric ^ set(validation.RANGES))


def test_nan_is_in_no_range(parse):
    assert parse("--config.temperature=nan") == "config error: config.temperature=nan: must be > 0"
    assert parse("--config.moco.momentum=nan") == "config error: config.moco.momentum=nan: must be in [0, 1]"
