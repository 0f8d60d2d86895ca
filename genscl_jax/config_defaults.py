"""Every configuration key the project knows, with its default.

Each file in configs/ starts from `base_config()` and overrides what its recipe changes, so sweeps, scripts and
notebooks can rely on one set of keys, and validation can reject any key that is not here.
"""

from __future__ import annotations

import ml_collections

MODES = ("pretrain", "linear_eval", "supervised", "pretrain_and_eval")
CPU_CONVOLUTIONS = ("eigen", "ynnpack")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "pretrain"

    # Data. "synthetic" is generated on device and needs no TensorFlow.
    c.dataset = "cifar10"
    c.data_dir = ""  # "" -> tfds default (~/tensorflow_datasets or $TFDS_DATA_DIR)
    c.image_size = 32
    c.channels = 0  # 0 -> the dataset's own channel count
    c.augment = "simclr"  # simclr | randaugment | crop_flip | none
    c.device_color_augment = False  # colour jitter/grayscale on the accelerator; the host only crops and flips
    c.num_views = 2

    # Model.
    c.model = "resnet50"
    c.stem = "auto"  # cifar | imagenet | auto (cifar below 64 px)
    c.width_multiplier = 1.0
    c.zero_init_last_bn = False
    c.dtype = "float32"  # compute dtype of the network; parameters and the loss stay float32
    c.head = ml_collections.ConfigDict(dict(kind="mlp", hidden_dim=0, output_dim=128))  # hidden 0 -> feature dim

    # Schedule and optimizer. batch_size is GLOBAL (all devices, all hosts).
    c.batch_size = 1024
    c.num_epochs = 500.0
    c.num_train_steps = 0  # 0 -> derive from num_epochs
    c.optimizer = "sgd"  # sgd | lars | adamw
    c.learning_rate = 0.5
    c.lr_batch_scaling = False  # True -> learning_rate * batch_size / 256
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    c.warmup_epochs = 10.0
    c.warmup_start_lr = 0.01  # absolute learning rate at step 0 of the warm-up
    c.min_lr_factor = 1e-3  # cosine decays to learning_rate * min_lr_factor
    c.grad_clip_norm = 0.0  # 0 -> no clipping

    # Loss.
    c.temperature = 0.1
    c.base_temperature = 0.07
    c.loss_normalization = "label_sum"  # label_sum (authors' code) | count
    # > 0: compute the loss in blocks of this many anchor rows (same result, a fraction of the memory; see
    # BENCHMARKS.md: 8192 anchors vs 8192 + 65536 contrasts plan 9.35 GiB dense, 1.81 GiB in blocks).
    c.loss_block_size = 0

    c.mix = ml_collections.ConfigDict(dict(kind="none", alpha=1.0))
    # Knowledge distillation: alpha 0 = off, inf = teacher labels only.
    c.kd = ml_collections.ConfigDict(dict(
        alpha=0.0, temperature=1.0, teacher="", teacher_model="resnet50", teacher_stem="auto",
        teacher_width_multiplier=1.0, teacher_dtype="float32"))
    # MoCo-style EMA key encoder and key queue.
    c.moco = ml_collections.ConfigDict(dict(
        enabled=False, queue_size=8192, momentum=0.999, momentum_cosine=False))

    # Linear evaluation (paper's recipe).
    c.linear_eval = ml_collections.ConfigDict(dict(
        pretrained_workdir="", batch_size=512, num_epochs=100.0, learning_rate=5.0, momentum=0.9,
        weight_decay=0.0, warmup_epochs=5.0, decay_epochs=(60, 75, 90), decay_factor=0.2,
        augment="crop_flip", precompute_features=False))
    # Weighted kNN monitor on backbone features (0 = off).
    c.knn = ml_collections.ConfigDict(dict(every_steps=0, k=200, temperature=0.1, max_train_examples=0))
    # Supervised cross-entropy training.
    c.label_smoothing = 0.0

    # CPU only: which library runs the convolutions (compile_utils.py; BENCHMARKS.md section 1.3). "eigen": 1.15x
    # to 2x faster steps than "ynnpack", jaxlib 0.10's default. Accelerators ignore it.
    c.cpu_convolutions = "eigen"

    c.seed = 0
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.log_every_steps = 50
    c.eval_batch_size = 512
    c.eval_every_steps = 0  # supervised mode: test accuracy every N steps (0 = at the end only)
    return c


def apply_runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """big_vision's `runlocal`: the same recipe, shrunk to run for a minute on a laptop (`--config file.py:runlocal`).

    Everything that is not size (loss, mixing, MoCo, teacher, optimizer) stays as the recipe has it, so the local
    run exercises the same code path as the real one.
    """
    config.model = "resnet18"
    config.width_multiplier = 0.125
    config.image_size = min(config.image_size, 32)
    config.batch_size = 32
    config.num_train_steps = 20
    config.checkpoint_every_steps = 10
    config.log_every_steps = 5
    config.eval_batch_size = 64
    config.dtype = "float32"
    config.head.hidden_dim = 0
    config.moco.queue_size = 4 * config.num_views * config.batch_size
    config.linear_eval.num_epochs = 1
    config.linear_eval.batch_size = 64
    return config
