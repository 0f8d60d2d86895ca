"""Every configuration key the project knows, with its default.

Each file in configs/ starts from `base_config()` and overrides what its recipe changes, so sweeps, scripts and
notebooks can rely on one set of keys, and validation can reject any key that is not here.
"""

from __future__ import annotations

import ml_collections

MODES = ("pretrain", "linear_eval", "supervised", "pretrain_and_eval")  # runner.run dispatches on these
# What a rerun of a workdir that has checkpoints may change: how long it trains, how often it logs, checkpoints
# and evaluates, and where it reads its data. Any other key changes what the checkpoints hold or how they were
# trained, so a rerun with another value stops and asks for a new workdir (config/rerun.py: rerun_changes).
RERUN_MAY_CHANGE = ("num_train_steps", "num_epochs", "linear_eval.num_epochs", "log_every_steps",
                    "checkpoint_every_steps", "keep_checkpoints", "preemption_check_every_steps", "eval_batch_size",
                    "eval_every_steps", "knn.*", "data_dir", "cpu_convolutions")


def base_config() -> ml_collections.ConfigDict:
    """All keys with their defaults. A key with a fixed set of values lists them as "one of: a | b"; the lists
    live with the code that implements them, config/validation.py checks against those, and a test checks that
    these comments still say the same."""
    c = ml_collections.ConfigDict()
    c.mode = "pretrain"  # one of: pretrain | linear_eval | supervised | pretrain_and_eval

    # Data. "synthetic" is generated on device and needs no TensorFlow. image_folder: your own images in
    # data_dir/train/CLASS/*.jpg (.jpeg, .png) and data_dir/test/CLASS/... (or val/). tfds:NAME: any tfds dataset.
    # one of: cifar10 | cifar100 | imagenet2012 | fashion_mnist | synthetic | image_folder; or tfds:NAME
    c.dataset = "cifar10"
    c.data_dir = ""  # "" -> tfds default (~/tensorflow_datasets or $TFDS_DATA_DIR); image_folder: its folder
    # True (every recipe's `:runlocal`): a dataset read through tfds that is not prepared here, and could only be
    # prepared with a download, is replaced by "synthetic" for this run, with a console line saying so.
    c.synthetic_if_unprepared = False
    # image_folder and tfds:NAME only: the splits to train and evaluate on ("" -> train; test, else val /
    # validation); for tfds any split expression ("train[:90%]").
    c.train_split = ""
    c.test_split = ""
    # Normalisation statistics per channel on the 0-1 scale, instead of the dataset's; () -> the dataset's (image
    # folders and tfds:NAME: measured once on the training images and stored with the data).
    c.data_mean = ()
    c.data_std = ()
    c.image_size = 32
    c.channels = 0  # 0 -> the dataset's own channel count
    # > 0: train on a labelled subset of this many training examples of each class (every training mode, the probes
    # and the kNN bank read only it; epochs are passes over it), drawn with train_subset_seed, not the run's seed,
    # so every method and run gets the same images. 0: the whole training split.
    c.train_subset = 0
    c.train_subset_seed = 0  # also picks a bounded kNN bank's examples (knn.max_train_examples)
    c.augment = "simclr"  # one of: simclr | autoaugment | randaugment | crop_flip | none (data/views.py says what)
    # The random resized crop's area range, as fractions of the image's (every policy but none): MoCo v2's and
    # SupCon's PyTorch code's (0.2, 1); torchvision's default is (0.08, 1).
    c.crop_scale = (0.2, 1.0)
    # simclr's colour jitter (torchvision's ColorJitter strengths: brightness, contrast, saturation, hue), applied
    # with color_jitter_prob, then grayscale with grayscale_prob: SimCLR's and SupCon's values.
    c.color_jitter = (0.4, 0.4, 0.4, 0.1)
    c.color_jitter_prob = 0.8
    c.grayscale_prob = 0.2
    # simclr's colour jitter, grayscale and blur in the compiled step (every training mode); the host only decodes,
    # crops and flips, half its CPU per ImageNet image (BENCHMARKS.md section 7)
    c.device_color_augment = False
    c.num_views = 2

    # Model.
    c.model = "resnet50"  # one of: resnet10 | resnet18 | resnet34 | resnet50 | resnet101 | resnet152 | resnet200
    c.stem = "auto"  # one of: auto | cifar | imagenet (auto: cifar below 64 px)
    c.width_multiplier = 1.0
    c.zero_init_last_bn = False
    c.dtype = "float32"  # one of: float32 | bfloat16 (the network's compute; parameters and loss stay float32)
    c.head = ml_collections.ConfigDict()
    c.head.kind = "mlp"  # one of: mlp | linear
    c.head.hidden_dim = 0  # 0 -> the encoder's feature dim
    c.head.output_dim = 128

    # Schedule and optimizer. batch_size is GLOBAL (all devices, all hosts).
    c.batch_size = 1024
    # Memory (pretrain and supervised; BENCHMARKS.md section 9, README "Fits on"). micro_batch_size > 0: the
    # networks run over micro-batches of this many source images (global, a divisor of batch_size and a multiple
    # of the device count), the trained one recomputed in the backward pass, so activations grow with the
    # micro-batch, not the batch; the loss still spans the whole batch. Train-mode BatchNorm then normalises each
    # micro-batch with its own statistics (ghost BatchNorm). 0: the dense step.
    c.micro_batch_size = 0
    # Train-mode BatchNorm statistics per group of this many source images (strided: image r in group
    # r mod (batch_size / bn_group_size)) on the dense step: the same function as micro_batch_size = this. 0: the
    # micro-batch when micro-batching, else the whole batch.
    c.bn_group_size = 0
    c.remat = "none"  # one of: none | blocks (blocks: each residual block recomputed in the backward pass)
    c.num_epochs = 500.0
    c.num_train_steps = 0  # 0 -> derive from num_epochs
    c.optimizer = "sgd"  # one of: sgd | lars | adamw
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
    c.loss_normalization = "label_sum"  # one of: label_sum | count (label_sum: the authors' code)
    # > 0: compute the loss in blocks of this many anchor rows: the same result in a fraction of the memory
    # (BENCHMARKS.md section 2).
    c.loss_block_size = 0

    c.mix = ml_collections.ConfigDict()
    c.mix.kind = "none"  # one of: none | mixup | cutmix | mixup_cutmix
    c.mix.alpha = 1.0
    c.mix.prob = 1.0  # the chance that a view (a batch of one view per image) is mixed at all; 1: always (paper)

    # Knowledge distillation: alpha 0 = off, inf = teacher labels only.
    c.kd = ml_collections.ConfigDict()
    c.kd.alpha = 0.0
    c.kd.temperature = 1.0
    c.kd.teacher = ""  # a supervised run's workdir, or a .pth/.pt/.safetensors ResNet state dict
    # one of: resnet10 | resnet18 | resnet34 | resnet50 | resnet101 | resnet152 | resnet200
    c.kd.teacher_model = "resnet50"
    c.kd.teacher_stem = "auto"  # one of: auto | cifar | imagenet
    c.kd.teacher_width_multiplier = 1.0
    c.kd.teacher_dtype = "float32"  # one of: float32 | bfloat16

    # MoCo-style EMA key encoder and key queue.
    c.moco = ml_collections.ConfigDict()
    c.moco.enabled = False
    c.moco.queue_size = 8192
    c.moco.momentum = 0.999
    c.moco.momentum_cosine = False  # True: BYOL's cosine ramp of the momentum to 1

    # Linear evaluation (paper's recipe).
    c.linear_eval = ml_collections.ConfigDict()
    c.linear_eval.pretrained_workdir = ""
    c.linear_eval.batch_size = 512
    c.linear_eval.num_epochs = 100.0
    c.linear_eval.learning_rate = 5.0
    c.linear_eval.momentum = 0.9
    c.linear_eval.weight_decay = 0.0
    c.linear_eval.warmup_epochs = 5.0
    c.linear_eval.decay_epochs = (60, 75, 90)
    c.linear_eval.decay_factor = 0.2
    c.linear_eval.augment = "crop_flip"  # one of: simclr | autoaugment | randaugment | crop_flip | none
    c.linear_eval.crop_scale = (0.2, 1.0)  # as crop_scale, for linear evaluation's training views
    c.linear_eval.precompute_features = False
    # > 0: before features are extracted, the frozen encoder's BatchNorm running statistics are recomputed on this
    # many un-augmented training batches (batch_size images each, train mode, no gradient): the statistics it
    # trained with come from augmented (and maybe mixed) views, the features are taken of clean images. 0: off.
    c.linear_eval.recalibrate_batch_stats = 0
    # Watching pretraining (README "Watching a run"). Every eval_every_steps (below) and at the end: the kNN vote's
    # test top-1 on the encoder's features, against a bank of at most knn.max_train_examples training examples (a
    # class-balanced or evenly spread sample; 0: the whole training split), and the online probe's test top-1.
    c.knn = ml_collections.ConfigDict()
    c.knn.enabled = True
    c.knn.k = 200
    c.knn.temperature = 0.1
    c.knn.max_train_examples = 0
    # A linear classifier trained in the pretraining step on the detached pooled features (constant learning rate).
    c.online_probe = ml_collections.ConfigDict()
    c.online_probe.enabled = True
    c.online_probe.optimizer = "adamw"  # one of: sgd | lars | adamw
    c.online_probe.learning_rate = 1e-3
    c.online_probe.momentum = 0.9  # sgd and lars
    c.online_probe.weight_decay = 0.0
    # The GenSCL diagnostics among the step's metrics (positive mass, target entropy, alignment, uniformity, ...).
    c.diagnostics = True
    # Supervised cross-entropy training.
    c.label_smoothing = 0.0

    # CPU only: which library runs the convolutions (runtime/compile_options.py; BENCHMARKS.md section 1.3).
    # Accelerators ignore it.
    c.cpu_convolutions = "eigen"  # one of: eigen | ynnpack (ynnpack: jaxlib 0.10's default)

    c.seed = 0
    c.checkpoint_every_steps = 1000
    # Several processes: every N steps they agree whether any got SIGTERM (one coordinator round trip per check,
    # no device sync; preemption.py). A stop comes at most N - 1 steps after the signal.
    c.preemption_check_every_steps = 1
    c.keep_checkpoints = 3
    c.log_every_steps = 50
    c.eval_batch_size = 512
    # Pretraining: kNN and the online probe; supervised: test accuracy. Every N steps and at the end (0: the end only).
    c.eval_every_steps = 1000
    return c
