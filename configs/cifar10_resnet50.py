"""GenSCL on CIFAR-10, the authors' recipe (docs/method.md "Training recipe"): ResNet-50 with the CIFAR
stem, batch 1024, 500 epochs, SGD lr 0.5, Mixup-CutMix soft labels. Target: 97.3 top-1 (97.6 with a teacher).

Add a teacher (GenSCL +KD): --config.kd.alpha=1 --config.kd.teacher=WORKDIR_OF_A_SUPERVISED_RUN
Shrunk for a laptop: --config configs/cifar10_resnet50.py:runlocal
"""

from genscl_jax.config import defaults, recipes


def get_config(arg: str = ""):
    arg = recipes.parse_arg(arg, runlocal=False)
    config = defaults.base_config()
    config.mode = "pretrain_and_eval"
    config.dataset = "cifar10"
    config.image_size = 32
    config.model = "resnet50"
    config.stem = "cifar"
    config.head.kind = "mlp"
    config.head.hidden_dim = 2048
    config.head.output_dim = 128
    config.batch_size = 1024
    config.num_epochs = 500
    config.optimizer = "sgd"
    config.learning_rate = 0.5
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.warmup_epochs = 10.0
    config.warmup_start_lr = 0.01
    config.min_lr_factor = 1e-3
    config.temperature = 0.1
    config.augment = "simclr"
    config.mix.kind = "mixup_cutmix"
    config.mix.alpha = 1.0
    config.checkpoint_every_steps = 2000
    config.log_every_steps = 100
    if arg.runlocal:
        recipes.apply_runlocal(config)
    return config
