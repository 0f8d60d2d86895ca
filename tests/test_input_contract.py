"""The input contract travels with the encoder: the same images give the same features through the trainer's
evaluation path, load_encoder(...).features and torchvision loading the exported .safetensors with the transform
and conv1 the export prints. One tiny real run (1 channel, width 1 so torchvision has the shapes) serves them all."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torchvision
from conftest import make_tiny_config
from safetensors import safe_open
from safetensors.torch import load_file

import genscl_jax
from genscl_jax import data, runner
from genscl_jax.data import device_preprocess
from genscl_jax.runtime import parallel
from genscl_jax.workdirs import encoder, export, input_contract

pytestmark = pytest.mark.slow  # trains a run or starts a process


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("contract") / "run")
    config = make_tiny_config(mode="pretrain", width_multiplier=1.0, channels=1, num_train_steps=1)
    runner.run(config, path)
    return path, config


@pytest.fixture(scope="module")
def pixels(workdir):
    """uint8 test images of the run's data, and their features through the trainer's evaluation path (the eval
    batches normalised by device_preprocess with the source's statistics, then the encoder)."""
    _, config = workdir
    source = data.resolve(config)
    batch = next(source.eval_batches(parallel.create_mesh(), batch_size=config.eval_batch_size))
    images = np.asarray(batch["image"])[:6]
    module, variables = genscl_jax.load_encoder(workdir[0])
    normalised = device_preprocess.normalize(images, source.eval_preprocessing())
    return images, np.asarray(module.apply(variables, normalised, train=False))


def test_the_workdir_and_its_summary_record_the_contract(workdir):
    path, _ = workdir
    recorded = input_contract.read(path)
    assert (recorded.channels, recorded.mean, recorded.std, recorded.image_size, recorded.feature_dim) == (
        1, (0.5,), (0.125,), 8, 512)
    assert recorded.model == {"model": "resnet10", "stem": "cifar", "width_multiplier": 1.0}
    with open(os.path.join(path, "summary.json")) as f:
        summary = json.load(f)
    assert summary["data_mean"] == [0.5] and summary["data_std"] == [0.125] and summary["data_channels"] == 1
    assert summary["input_contract"] == recorded.to_dict() | {"mean": [0.5], "std": [0.125]}


def test_features_from_pixels_equal_the_trainers_evaluation_path(workdir, pixels):
    images, expected = pixels
    encoder_ = genscl_jax.load_encoder(workdir[0])
    np.testing.assert_allclose(encoder_.features(images), expected, atol=1e-5, rtol=0)
    as_unit = images.astype(np.float32) / 255
    np.testing.assert_allclose(encoder_.features(as_unit), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder_.features(images.astype(np.float32), pixel_max=255), expected, atol=1e-5,
                               rtol=0)
    with pytest.raises(encoder.ContractError, match="float pixels are read as \\[0, 1\\]; pass pixel_max=255"):
        encoder_.features(images.astype(np.float32))
    with pytest.raises(encoder.ContractError, match=r"images \(6, 8, 8, 3\): .* 1 channel"):
        encoder_.features(np.repeat(images, 3, axis=-1))


def test_module_apply_refuses_raw_pixels(workdir, pixels):
    module, variables = genscl_jax.load_encoder(workdir[0])
    with pytest.raises(ValueError, match=r"got uint8 images .*load_encoder\(workdir\)\.features\(images\)"):
        module.apply(variables, pixels[0], train=False)


def test_torchvision_with_the_printed_transform_and_conv1_gives_the_same_features(workdir, pixels, tmp_path, capsys):
    output = str(tmp_path / "encoder.safetensors")
    assert export.main(["--workdir", workdir[0], "--output", output]) == 0
    notes = capsys.readouterr().err
    transform = eval(re.search(r"in torchvision: (transforms\.Compose\(.*?\]\)\]\))", notes).group(1),
                     {"transforms": torchvision.transforms})
    net = eval(re.search(r"build it as (torchvision\.models\.resnet\.ResNet\(.*?\]\))", notes).group(1),
               {"torchvision": torchvision})
    conv1_hint = re.search(r"in torchvision set (model\.conv1 = .*?) and (model\.maxpool = .*?\))", notes)
    for statement in conv1_hint.groups():
        exec(statement, {"torch": torch, "model": net})
    assert "Conv2d(1, 64, 3, 1, 1" in conv1_hint.group(1)
    net.fc = torch.nn.Identity()
    net.load_state_dict(load_file(output))
    images, expected = pixels
    batch = torch.stack([transform(np.array(image)) for image in images])  # HWC uint8, as PIL images would be
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(batch).numpy(), expected, atol=1e-4, rtol=0)
    with safe_open(output, "np") as f:
        assert json.loads(f.metadata()[input_contract.METADATA_KEY]) == input_contract.read(workdir[0]).to_dict() | {
            "mean": [0.5], "std": [0.125]}


def test_npz_and_orbax_exports_carry_the_contract(workdir, tmp_path):
    recorded = input_contract.read(workdir[0])
    export.export(workdir[0], str(tmp_path / "encoder.npz"))
    with np.load(tmp_path / "encoder.npz") as npz:
        assert input_contract.InputContract.from_dict(json.loads(str(npz[input_contract.METADATA_KEY]))) == recorded
    export.export(workdir[0], str(tmp_path / "encoder"))
    assert input_contract.read(str(tmp_path / "encoder")) == recorded
    assert set(ocp.StandardCheckpointer().restore(str(tmp_path / "encoder"))) == {"params", "batch_stats"}


def test_a_workdir_from_before_the_contract_says_how_to_record_it(workdir, pixels, tmp_path):
    old = str(tmp_path / "old")
    shutil.copytree(workdir[0], old)
    os.remove(os.path.join(old, input_contract.CONTRACT_FILE))
    encoder_ = genscl_jax.load_encoder(old)
    assert encoder_.contract is None
    with pytest.raises(encoder.ContractError, match="has no input_contract.json: .*rerun its training command once"):
        encoder_.features(pixels[0])
    notes = export.export(old, str(tmp_path / "old.npz"))
    assert notes[0].startswith("no input_contract.json in the workdir")


def test_export_and_load_encoder_print_no_library_warning_unless_verbose(workdir, tmp_path):
    # A fresh process, as a user's: orbax's read-only manager would log three WARNING:absl lines on each.
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
    export_command = [sys.executable, "-m", "genscl_jax.export", "--workdir", workdir[0], "--output"]
    quiet = subprocess.run(export_command + [str(tmp_path / "e.npz")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.splitlines() == [f"wrote {tmp_path}/e.npz (encoder of {workdir[0]})"]
    assert "WARNING" not in quiet.stderr and "read_only" not in quiet.stderr, quiet.stderr
    assert [line.split(":")[0] for line in quiet.stderr.splitlines()] == ["note"], quiet.stderr
    verbose = subprocess.run(export_command + [str(tmp_path / "v.npz"), "--verbose"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert verbose.returncode == 0 and "read_only" in verbose.stderr, verbose.stderr
    script = (f"import genscl_jax, numpy as np; e = genscl_jax.load_encoder({workdir[0]!r}); "
              "print(e.features(np.zeros((2, 8, 8, 1), np.uint8)).shape)")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout == "(2, 512)\n", loaded.stderr
    assert "WARNING" not in loaded.stderr, loaded.stderr
