"""GenSCL on ImageNet at paper scale (PAPER.md, "latest version"): ResNet-50 at 224 px, MoCo-style EMA key encoder
and a 65536-key queue, Mixup-CutMix soft labels, a teacher, global batch 4096, LARS, bfloat16. Target: 77.3 top-1.

The teacher is required by this recipe: --config.kd.teacher=WORKDIR (a supervised run of this project); to run
without one, --config.kd.alpha=0. ImageNet must be prepared for tfds first (see README, "Data").
Shrunk for a laptop: --config configs/imagenet_resnet50.py:runlocal
"""

from genscl_jax import config_defaults


def get_config(arg: str = ""):
    config = config_defaults.base_config()
    config.mode = "pretrain_and_eval"
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.model = "resnet50"
    config.stem = "imagenet"
    config.zero_init_last_bn = True
    config.dtype = "bfloat16"
    config.head.kind = "mlp"
    config.head.hidden_dim = 2048
    config.head.output_dim = 128
    config.batch_size = 4096
    config.num_epochs = 350
    config.optimizer = "lars"
    config.learning_rate = 0.3
    config.lr_batch_scaling = True  # 0.3 * 4096 / 256 = 4.8 peak
    config.momentum = 0.9
    config.weight_decay = 1e-6
    config.warmup_epochs = 10.0
    config.warmup_start_lr = 0.0
    config.min_lr_factor = 0.0
    config.temperature = 0.1
    config.loss_block_size = 1024  # 8192 anchors x 73728 contrasts would not fit dense in 8 GB
    config.augment = "randaugment"
    config.device_color_augment = False
    config.mix.kind = "mixup_cutmix"
    config.mix.alpha = 1.0
    config.kd.alpha = 1.0
    config.kd.teacher = ""  # required: set on the command line
    config.kd.teacher_model = "resnet50"
    config.kd.teacher_dtype = "bfloat16"
    config.moco.enabled = True
    config.moco.queue_size = 65536
    config.moco.momentum = 0.999
    config.moco.momentum_cosine = True
    config.linear_eval.batch_size = 4096
    config.linear_eval.learning_rate = 0.1
    config.linear_eval.num_epochs = 90
    config.linear_eval.decay_epochs = (60, 75, 85)
    config.checkpoint_every_steps = 2000
    config.log_every_steps = 100
    config.eval_batch_size = 1024
    if arg == "runlocal":
        config_defaults.apply_runlocal(config)
        config.dataset = "synthetic"
    return config
