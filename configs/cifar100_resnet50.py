"""GenSCL on CIFAR-100: the CIFAR-10 recipe (configs/cifar10_resnet50.py) with the 100-class dataset.
Target: 82.8 top-1 (84.7 with a teacher: --config.kd.alpha=1 --config.kd.teacher=WORKDIR_OF_A_SUPERVISED_RUN).

Shrunk for a laptop: --config configs/cifar100_resnet50.py:runlocal
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "cifar10_resnet50", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_resnet50.py"))
_cifar10 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cifar10)


def get_config(arg: str = ""):
    config = _cifar10.get_config(arg)
    config.dataset = "cifar100"
    return config
