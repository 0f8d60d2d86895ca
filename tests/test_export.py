"""A trained encoder used elsewhere: load_encoder in Flax, export to torchvision names / .npz / orbax.

The torchvision checks use full-width networks (torchvision has no other widths) with random weights and
BatchNorms far from identity, written as a workdir's checkpoint: a wrong name or layout changes the features.
Tiny real runs check that every mode's workdir gives its encoder.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torchvision
from conftest import make_tiny_config
from safetensors.numpy import load_file

import genscl_jax
from genscl_jax.training import checkpointing
from genscl_jax.workdirs import trained_network, export, run_config
from genscl_jax.trainers import linear_eval
from genscl_jax import models, runner
from genscl_jax.models import torch_conversion

ROOT = os.path.join(os.path.dirname(__file__), "..")


def randomized(module, size, seed=0):
    """Variables of module's shapes, drawn in NumPy (no init to compile: the ResNet-18's took 7 s): He-normal kernels,
    and every BatchNorm's statistics, scale and bias drawn far from identity."""
    shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.PRNGKey(seed),
                            jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
    rng = np.random.default_rng(seed)
    draws = {"mean": lambda s: rng.normal(0.0, 0.2, s), "var": lambda s: rng.uniform(0.5, 2.0, s),
             "scale": lambda s: rng.uniform(0.5, 1.5, s),
             "kernel": lambda s: rng.normal(0.0, (2 / np.prod(s[:-1])) ** 0.5, s)}

    def draw(path, leaf):
        names = [p.key for p in path]
        if names[-1] in draws:
            return draws[names[-1]](leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)  # biases: BatchNorm's and the classifier's

    return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def fake_workdir(workdir, config, variables):
    """A workdir as runner.run leaves it: config.json and a checkpoint whose params/batch_stats are `variables`."""
    run_config.write(str(workdir), config)
    checkpointer = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)))
    checkpointer.save(1, {"step": np.int32(1), **variables})
    checkpointer.close()


def nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def test_exported_resnet18_gives_torchvisions_features_and_logits(tmp_path):
    # 32 px: the ImageNet stem's stride 4 and the four stages leave 1x1 before the pooling, as 224 px leaves 7x7.
    config = make_tiny_config(mode="supervised", model="resnet18", width_multiplier=1.0, stem="imagenet",
                              image_size=32)
    fake_workdir(tmp_path / "run", config, randomized(models.create_resnet("resnet18", num_classes=10), 32))
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)

    module, variables = genscl_jax.load_encoder(str(tmp_path / "run"))
    assert module.num_classes is None and "fc" not in variables["params"]
    # Jitted: one compile of the network, where op by op compiles each of its layers' ops.
    features = np.asarray(jax.jit(functools.partial(module.apply, train=False))(variables, images))
    assert export.main(["--workdir", str(tmp_path / "run"), "--output", str(tmp_path / "encoder.safetensors")]) == 0
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(tmp_path / "encoder.safetensors").items()})
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(nchw(images)).numpy(), features, atol=1e-4, rtol=0)

    # --with-head: the whole classifier, fc included, loads strictly into torchvision's resnet18.
    trained = trained_network.load_trained(str(tmp_path / "run"), with_head=True)
    fc = trained.variables["params"]["fc"]  # the classifier is the encoder's features through fc (no recompile)
    logits = features @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
    export.export(str(tmp_path / "run"), str(tmp_path / "classifier.safetensors"), with_head=True)
    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(tmp_path / "classifier.safetensors").items()})
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(nchw(images)).numpy(), logits, atol=1e-4, rtol=0)


def test_cifar_stem_loads_into_torchvision_as_the_note_says(tmp_path):
    config = make_tiny_config(model="resnet18", width_multiplier=1.0, stem="cifar", image_size=8)
    encoder = models.create_resnet("resnet18", stem="cifar")
    variables = randomized(encoder, 8)
    fake_workdir(tmp_path / "run", config, {"params": {"encoder": variables["params"]},
                                            "batch_stats": {"encoder": variables["batch_stats"]}})
    notes = export.export(str(tmp_path / "run"), str(tmp_path / "encoder.safetensors"))
    # A workdir made by hand records no input contract (the first note says so), then the stem's note.
    assert len(notes) == 2 and "model.maxpool = torch.nn.Identity()" in notes[1]
    assert "Conv2d(3, 64, 3, 1, 1" in notes[1]
    net = torchvision.models.resnet18()
    # What the note tells the user to do:
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(tmp_path / "encoder.safetensors").items()})
    images = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
    features = jax.jit(functools.partial(encoder.apply, train=False))(variables, images)
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(nchw(images)).numpy(), np.asarray(features), atol=1e-4, rtol=0)


def test_resnet50_names_load_into_torchvision_and_convert_back_identically():
    module = models.create_resnet("resnet50", num_classes=None)
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                                       dict(torch_conversion.expected_variables(module, (1, 32, 32, 3))))
    state_dict = torch_conversion.to_state_dict(variables)
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv3.weight", "layer4.0.downsample.0.weight",
            "layer4.0.downsample.1.running_var", "layer4.2.bn3.num_batches_tracked"} <= set(state_dict)
    net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})  # strict: every name and shape
    back = torch_conversion.convert_resnet(state_dict, module)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, variables)


@pytest.fixture(scope="module")
def pretrain_and_eval_dir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pretrain_and_eval"))
    runner.run(make_tiny_config(mode="pretrain_and_eval", num_train_steps=2, eval_batch_size=256,
                                **{"linear_eval.batch_size": 256, "linear_eval.num_epochs": 0.05}), workdir)
    return workdir


@pytest.mark.slow
def test_every_format_holds_the_pretrained_encoder(pretrain_and_eval_dir, tmp_path):
    module, variables = genscl_jax.load_encoder(pretrain_and_eval_dir)
    # The encoder linear evaluation trained on: the pretrain/ checkpoint's encoder subtree.
    frozen = linear_eval.load_frozen_encoder(os.path.join(pretrain_and_eval_dir, "pretrain")).variables
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, frozen)
    images = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype(np.float32)
    assert module.apply(variables, images, train=False).shape == (4, models.feature_dim("resnet10", 0.0625))

    export.export(pretrain_and_eval_dir, str(tmp_path / "encoder.npz"))
    with np.load(tmp_path / "encoder.npz") as npz:
        assert set(npz.files) == set(export.flat_arrays(variables)) | {"genscl_jax.input_contract"}
        np.testing.assert_array_equal(npz["params/stage4_block0/conv2/kernel"],
                                      variables["params"]["stage4_block0"]["conv2"]["kernel"])
    export.export(pretrain_and_eval_dir, str(tmp_path / "encoder"))
    restored = ocp.StandardCheckpointer().restore(str(tmp_path / "encoder"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, variables)

    # --with-head: encoder and projection head, in the contrastive model's layout and as head.* torch names.
    export.export(pretrain_and_eval_dir, str(tmp_path / "with_head.npz"), with_head=True)
    with np.load(tmp_path / "with_head.npz") as npz:
        assert "params/head/dense1/kernel" in npz and "params/encoder/conv_init/kernel" in npz
    export.export(pretrain_and_eval_dir, str(tmp_path / "with_head.safetensors"), with_head=True)
    names = load_file(tmp_path / "with_head.safetensors")
    assert names["head.dense1.weight"].shape == (16, 32) and "conv1.weight" in names


@pytest.mark.slow
def test_a_supervised_encoder_is_the_network_without_fc(tmp_path):
    runner.run(make_tiny_config(mode="supervised", num_train_steps=2), str(tmp_path))
    module, variables = genscl_jax.load_encoder(str(tmp_path))
    saved = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)), read_only=True).restore_subtree(
        ("params", "batch_stats"))
    assert set(saved["params"]) - set(variables["params"]) == {"fc"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"],
                           {k: v for k, v in saved["params"].items() if k != "fc"})
    assert module.num_classes is None


@pytest.mark.slow
def test_an_unfinished_run_is_read_from_its_config_json(tmp_path):
    config = make_tiny_config(num_train_steps=2)
    runner.run(config, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        assert json.load(f) == json.loads(json.dumps(config.to_dict()))  # recorded whole at the start
    summary = tmp_path / "summary.json"
    os.rename(summary, tmp_path / "summary.moved")  # as a preempted run leaves it: no summary.json
    module, variables = genscl_jax.load_encoder(str(tmp_path))
    assert module.stem == "cifar" and module.width_multiplier == 0.0625
    # A workdir from before config.json: the config inside summary.json.
    os.rename(tmp_path / "summary.moved", summary)
    os.remove(tmp_path / "config.json")
    assert trained_network.recorded_config(str(tmp_path)).model == "resnet10"


@pytest.mark.parametrize("setup, output, message", [
    ("none", "e.npz", r"/absent: no such directory: give the workdir of a pretrain, supervised or pretrain_and_eval"),
    ("empty", "e.npz", r"/run: not a genscl_jax workdir \(no config.json or summary.json\)"),
    ("config_only", "e.npz", r"/run: no complete checkpoint in .*/run/checkpoints: train first"),
    ("linear_eval", "e.npz", r"a linear_eval run holds only its linear classifier: use its "
                             r"config.linear_eval.pretrained_workdir \(/elsewhere/pre\)"),
    ("config_only", "e.pt", r"unknown extension \.pt; use \.safetensors .*\.npz .*orbax"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, setup, output, message):
    workdir = tmp_path / ("absent" if setup == "none" else "run")
    if setup != "none":
        workdir.mkdir()
    if setup in ("config_only", "linear_eval"):
        run_config.write(str(workdir), make_tiny_config(**{"mode": setup if setup == "linear_eval" else "pretrain",
                                                           "linear_eval.pretrained_workdir": "/elsewhere/pre"}))
    assert export.main(["--workdir", str(workdir), "--output", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("export error: "), err
    assert __import__("re").search(message, err), err


@pytest.mark.slow
def test_the_command_line_and_a_cheap_import(tmp_path):
    # `python -m genscl_jax.export` rejects a bad name before importing JAX; `import genscl_jax` imports nothing.
    proc = subprocess.run([sys.executable, "-m", "genscl_jax.export", "--workdir", str(tmp_path), "--output",
                           "x.onnx"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("export error: --output x.onnx: unknown extension")
    probe = ("import sys, genscl_jax; heavy = [m for m in ('jax', 'flax', 'orbax', 'torch') if m in sys.modules]; "
             "assert not heavy, heavy; from genscl_jax.workdirs import trained_network; "
             "assert genscl_jax.load_encoder is trained_network.load_encoder")
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, timeout=120)


@pytest.mark.slow
def test_linear_evaluation_reads_every_workdir_kind_load_encoder_reads(pretrain_and_eval_dir, tmp_path):
    """A pretrain_and_eval workdir (its encoder is in pretrain/) is a pretrained_workdir like any other, read with
    the architecture it recorded: here the probe's own config names another model, which plays no part."""
    probe = make_tiny_config(mode="linear_eval", model="resnet18", width_multiplier=0.125, eval_batch_size=256, **{
        "linear_eval.pretrained_workdir": pretrain_and_eval_dir, "linear_eval.augment": "none",
        "linear_eval.precompute_features": True, "linear_eval.batch_size": 256, "linear_eval.num_epochs": 0.05})
    summary = runner.run(probe, str(tmp_path / "probe"))
    assert 0.0 <= summary["linear_eval_top1"] <= 1.0
    frozen = linear_eval.load_frozen_encoder(pretrain_and_eval_dir)
    _, variables = genscl_jax.load_encoder(pretrain_and_eval_dir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, frozen.variables, variables)
    assert frozen.config.model == "resnet10" and frozen.module.width_multiplier == 0.0625


def test_without_safetensors_the_export_says_what_to_install(tmp_path, capsys, monkeypatch):
    fake_workdir(tmp_path / "run", make_tiny_config(mode="supervised"),
                 randomized(models.create_resnet("resnet10", stem="cifar", width_multiplier=0.0625, num_classes=10), 8))
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # `from safetensors.numpy import save` fails
    assert export.main(["--workdir", str(tmp_path / "run"), "--output", str(tmp_path / "e.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"export error: --output {tmp_path}/e.safetensors: writing .safetensors needs the safetensors "
                   "package: pip install safetensors (or write .npz)")
