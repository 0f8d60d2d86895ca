"""Teachers: PyTorch ResNets converted exactly, files read without running pickled code, our own supervised runs."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torchvision
from conftest import make_tiny_config
from helpers import jit_init
from safetensors.torch import save_file

from genscl_jax import models, runner
from genscl_jax.models import torch_conversion
from genscl_jax.trainers import teachers
from genscl_jax.training import checkpointing
from genscl_jax.training.train_state import TrainState
from genscl_jax.workdirs import run_config


def randomized_torchvision(name, num_classes=10, seed=0):
    """A torchvision ResNet in eval mode whose BatchNorms are far from identity, so a wrong mapping shows."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, name)(num_classes=num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.num_batches_tracked.fill_(7)
    return net.eval()


def kd_config(path, model, **overrides):
    return make_tiny_config(**{"kd.teacher": str(path), "kd.teacher_model": model, "kd.alpha": 1.0, **overrides})


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_converted_torchvision_resnet_gives_torchs_logits(name, tmp_path):
    net = randomized_torchvision(name)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(images).numpy()
    torch.save(net.state_dict(), tmp_path / "teacher.pth")
    save_file(net.state_dict(), str(tmp_path / "teacher.safetensors"))

    teacher = teachers.load_teacher(kd_config(tmp_path / "teacher.pth", name), num_classes=10, channels=3)
    assert teacher.module.stem == "imagenet"  # "auto" means the stem the PyTorch weights were trained with
    nhwc = jax.numpy.asarray(images.numpy().transpose(0, 2, 3, 1))
    logits = np.asarray(jax.jit(teacher.logits)(teacher.variables, nhwc))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)

    # The .safetensors route (no torch needed to read) yields the very same variables.
    from_safetensors = teachers.load_teacher(kd_config(tmp_path / "teacher.safetensors", name), 10, 3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_safetensors.variables, teacher.variables)


@pytest.fixture(scope="module")
def resnet18_state_dict():
    return {k: v.numpy() for k, v in randomized_torchvision("resnet18").state_dict().items()}


def test_wrong_number_of_classes_names_fc(tmp_path):
    torch.save(randomized_torchvision("resnet18", num_classes=10).state_dict(), tmp_path / "teacher.pt")
    with pytest.raises(teachers.TeacherError,
                       match=r"fc\.weight has shape \(10, 512\), the model expects \(1000, 512\).*classes"):
        teachers.load_teacher(kd_config(tmp_path / "teacher.pt", "resnet18"), num_classes=1000, channels=3)


@pytest.mark.parametrize("edit, model, message", [
    (lambda sd: sd.pop("bn1.running_var"), "resnet18", r"bn1\.running_var is missing"),
    (lambda sd: sd.update({"head.weight": np.zeros(3)}), "resnet18", r"unexpected key head\.weight"),
    (lambda sd: None, "resnet50", r"looks like a resnet18.*teacher_model=resnet18"),
    (lambda sd: sd.update({"conv1.weight": np.zeros((64, 1, 7, 7))}), "resnet18",
     r"conv1\.weight has shape \(64, 1, 7, 7\), the model expects \(64, 3, 7, 7\)"),
])
def test_mismatches_name_the_layer(resnet18_state_dict, edit, model, message):
    state_dict = dict(resnet18_state_dict)
    edit(state_dict)
    module = models.create_resnet(model, stem="imagenet", num_classes=10)
    with pytest.raises(torch_conversion.ConversionError, match=message):
        torch_conversion.convert_resnet(state_dict, module)


class _RunsCode:
    """Unpickling this calls exec(): what a malicious .pth would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pth_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(teachers.TeacherError, match="weights_only=True"):
        teachers.load_teacher(kd_config(path, "resnet18"), num_classes=10, channels=3)
    assert not marker.exists()
    # The payload is live: an unrestricted load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_without_torch_a_pth_fails_with_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "teacher.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(torch_conversion.ConversionError, match="requirements-torch.txt.*safetensors"):
        torch_conversion.load_state_dict(str(path))


@pytest.mark.slow
def test_teacher_from_a_supervised_run_end_to_end(tmp_path):
    teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
    runner.run(make_tiny_config(mode="supervised", num_train_steps=2), teacher_dir)
    # kd.teacher_model / teacher_width_multiplier stay at their defaults (resnet50, 1.0): the workdir's recorded
    # config says resnet10 at width 0.0625, and that is what is built.
    config = make_tiny_config(**{"kd.teacher": teacher_dir, "kd.alpha": 1.0, "num_train_steps": 2})
    assert (config.kd.teacher_model, config.kd.teacher_width_multiplier) == ("resnet50", 1.0)
    summary = runner.run(config, student_dir)
    assert np.isfinite(summary["final_metrics"]["loss_teacher"])

    # The student's checkpoint is the student's state only: the teacher (the one network with "fc", beside the
    # student's online probe) is absent.
    manager = ocp.CheckpointManager(os.path.abspath(checkpointing.checkpoint_dir(student_dir)),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    saved = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
    manager.close()
    assert set(saved) <= {f.name for f in TrainState.__dataclass_fields__.values()}
    assert set(saved["params"]) == {"encoder", "head"}
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(saved)[0]]
    assert not [p for p in paths if ("fc" in p and "probe" not in p) or "teacher" in p]


def fake_teacher_workdir(workdir, recorded_config, variables):
    """A workdir as runner.run leaves it: config.json (unless recorded_config is None) and a checkpoint."""
    if recorded_config is not None:
        run_config.write(str(workdir), recorded_config)
    checkpointer = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)))
    checkpointer.save(1, {"step": np.int32(1), **variables})
    checkpointer.close()


def tiny_classifier_variables(num_classes):
    module = models.create_resnet("resnet10", stem="cifar", width_multiplier=0.0625, num_classes=num_classes)
    return jax.tree_util.tree_map(np.asarray, dict(jit_init(module, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3)),
                                                               train=False)))


@pytest.mark.slow
def test_a_teacher_for_other_classes_is_refused_naming_both(tmp_path):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    fake_teacher_workdir(teacher_dir, make_tiny_config(mode="supervised", dataset="cifar100"),
                         tiny_classifier_variables(100))
    config = make_tiny_config(**{"kd.teacher": str(teacher_dir), "kd.alpha": 1.0})
    message = (r"teacher .*/teacher predicts 100 classes \(its dataset cifar100\), this run's dataset synthetic has "
               r"10: use a teacher trained on synthetic$")
    with pytest.raises(teachers.TeacherError, match=message) as error:
        teachers.load_teacher(config, num_classes=10, channels=3)
    assert len(str(error.value).splitlines()) == 1
    with pytest.raises(runner.RunError, match=message):
        runner.run(config, str(student_dir))
    assert (student_dir / "config.json").exists()  # recorded when the run started, before it failed


@pytest.mark.parametrize("recorded, message", [
    (None, r"not a genscl_jax workdir \(no config.json or summary.json\), so its architecture is unknown"),
    (make_tiny_config(mode="pretrain"), r"a pretrain run has no classifier; a teacher is the workdir of a "
                                        r"supervised run"),
])
def test_a_workdir_without_a_known_classifier_is_refused(tmp_path, recorded, message):
    fake_teacher_workdir(tmp_path / "teacher", recorded, tiny_classifier_variables(10))
    config = make_tiny_config(**{"kd.teacher": str(tmp_path / "teacher"), "kd.alpha": 1.0})
    with pytest.raises(teachers.TeacherError, match=message):
        teachers.load_teacher(config, num_classes=10, channels=3)
