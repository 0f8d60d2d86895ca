"""GenSCL on CIFAR-100: the CIFAR-10 recipe (configs/cifar10_resnet50.py) with the 100-class dataset.
Target: 82.8 top-1 (84.7 with a teacher: --config.kd.alpha=1 --config.kd.teacher=WORKDIR_OF_A_SUPERVISED_RUN).

Shrunk for a laptop: --config configs/cifar100_resnet50.py:runlocal
"""

from configs import cifar10_resnet50


def get_config(arg: str = ""):
    config = cifar10_resnet50.get_config(arg)
    config.dataset = "cifar100"
    return config
