"""GenSCL on ImageNet at paper scale (docs/method.md, "Momentum Contrast"): ResNet-50 at 224 px, MoCo-style
EMA key encoder and a 65536-key queue, Mixup-CutMix soft labels, a teacher, global batch 4096, LARS, bfloat16.
Target: 77.3 top-1.

Every value names its source. The GenSCL paper does not publish its ImageNet recipe (docs/method.md,
"Momentum Contrast"), so where it is silent the values are SupCon's ImageNet ResNet-50 run as its authors released it:
google-research/google-research supcon/scripts/supcon_imagenet_resnet50.sh (the flags it sets), the flag defaults
it leaves alone in supcon/hparams_flags.py, and supcon/utils.py (optimizer and schedule). The MoCo values are
MoCo v2's defaults (docs/method.md). "Our choice" marks what no source fixes for this setting.

The teacher is required by this recipe: --config.kd.teacher=WORKDIR (a supervised run of this project); to run
without one, --config.kd.alpha=0. ImageNet must be prepared for tfds first (see README, "Data").
Shrunk for a laptop: --config configs/imagenet_resnet50.py:runlocal
The paper's batch on one 8-GPU node: --config configs/imagenet_resnet50.py:gpu8 (micro-batches, README "Fits on")
"""

from genscl_jax.config import defaults, recipes

# Short names for the sources cited below.
#   GENSCL: the GenSCL paper / its authors' code, as docs/method.md restates them.
#   SUPCON_SH: google-research supcon/scripts/supcon_imagenet_resnet50.sh (+ configs.sh flag groups it includes).
#   SUPCON_FLAGS: google-research supcon/hparams_flags.py defaults the script does not override.
#   SUPCON_UTILS: google-research supcon/utils.py (build_optimizer, build_learning_rate_schedule).
#   MOCO_V2: MoCo v2 defaults, docs/method.md "Momentum Contrast".


def get_config(arg: str = ""):
    arg = recipes.parse_arg(arg, runlocal=False, gpu8=False)
    config = defaults.base_config()
    config.mode = "pretrain_and_eval"  # our choice: pretrain, then the linear evaluation below
    config.dataset = "imagenet2012"  # GENSCL: the ImageNet-1k result (77.3 top-1)
    config.image_size = 224  # SUPCON_SH (configs.sh IMAGENET_FLAGS --image_size=224)
    config.model = "resnet50"  # GENSCL: ResNet-50
    config.stem = "imagenet"  # SUPCON_SH (IMAGENET_FLAGS: 7x7 stride-2 first conv + initial max-pool)
    config.zero_init_last_bn = True  # google-research supcon/blocks.py: Bottleneck third_bn init_zero=True
    config.dtype = "bfloat16"  # SUPCON_SH (configs.sh TPU_FLAGS --allow_mixed_precision=True: bf16 on TPU)
    config.head.kind = "mlp"  # GENSCL: Linear(2048, 2048)-ReLU-Linear(2048, 128), = MOCO_V2's 2048-2048-128 head
    config.head.hidden_dim = 2048  # GENSCL / MOCO_V2 (SupCon's ImageNet script used one 128-unit layer instead)
    config.head.output_dim = 128  # GENSCL / MOCO_V2 / SUPCON_SH (--projection_head_layers=128)

    # Our choice: SupCon ran 6144 on a 128-core TPU. 4096 is the batch this project plans for (8192 anchor
    # views per step, the loss in 1024-row blocks; see loss_block_size); with the queue the contrasts no longer
    # come from the batch alone. The peak lr follows SupCon's linear rule below, so it scales with this number.
    config.batch_size = 4096
    config.num_epochs = 350  # SUPCON_SH --stage_1_epochs=350 (GenSCL states no ImageNet epochs)
    config.optimizer = "lars"  # SUPCON_SH --stage_1_optimizer=LARS
    config.learning_rate = 0.4  # SUPCON_SH --stage_1_base_learning_rate=0.4 (per 256 examples)
    config.lr_batch_scaling = True  # SUPCON_FLAGS: "true learning rate is multiplied by batch_size/256": 6.4
    config.momentum = 0.9  # SUPCON_UTILS build_optimizer(momentum=0.9), passed to the LARS optimizer
    config.nesterov = False  # SUPCON_UTILS: LARSOptimizer with plain momentum
    config.weight_decay = 1e-3  # SUPCON_SH --stage_1_weight_decay=1e-3 (applied inside LARS)
    config.warmup_epochs = 12.0  # SUPCON_FLAGS stage_1_warmup_epochs=12.0
    config.warmup_start_lr = 0.0  # SUPCON_UTILS maybe_add_warmup_to_lr: linear from 0 to the peak
    config.min_lr_factor = 0.0  # SUPCON_UTILS cosine_decay: tf.train.cosine_decay down to 0 (decay COSINE default)
    config.temperature = 0.1  # GENSCL (tau 0.1) and SUPCON_SH --temperature=0.1
    config.base_temperature = 0.07  # GENSCL authors' code: loss x tau / 0.07
    config.loss_normalization = "label_sum"  # GENSCL authors' code: divide by sum_j s_ij
    config.loss_block_size = 1024  # our choice: memory only (same loss); 8192 x 73728 dense would not fit in 8 GB
    # SUPCON_SH --augmentation_type=AUTOAUGMENT, after crop + flip, no colour jitter or blur (SupCon blurs only
    # its SIMCLR/STACKED_RANDAUGMENT types). The table is torchvision's ImageNet policy (see augment.py).
    config.augment = "autoaugment"
    config.crop_scale = (0.08, 1.0)  # SUPCON_FLAGS crop_area_range default (0.08, 1.0)
    config.mix.kind = "mixup_cutmix"  # GENSCL: Mixup or CutMix per batch, 1/2 each
    config.mix.alpha = 1.0  # GENSCL: lambda ~ Beta(1, 1)
    config.kd.alpha = 1.0  # GENSCL: alpha_kd = 1
    config.kd.temperature = 1.0  # GENSCL: T_kd = 1
    config.kd.teacher = ""  # required: set on the command line
    config.kd.teacher_model = "resnet50"  # our choice: GenSCL names no ImageNet teacher; a supervised ResNet-50
    config.kd.teacher_dtype = "bfloat16"  # our choice: the teacher runs without gradient; bf16 halves its cost
    config.moco.enabled = True  # GENSCL latest version: 77.3 is the run with Momentum Contrast
    config.moco.queue_size = 65536  # MOCO_V2: queue 65536
    config.moco.momentum = 0.999  # MOCO_V2: key-encoder momentum 0.999 (GenSCL: "~0.999")
    config.moco.momentum_cosine = False  # MOCO_V2: the momentum stays constant

    # Linear evaluation: GENSCL's protocol (docs/method.md "Linear evaluation").
    # (SupCon's TF stage 2 used RMSProp with exponential decay, which this project's linear evaluation lacks.)
    config.linear_eval.batch_size = 512  # GENSCL
    config.linear_eval.num_epochs = 100  # GENSCL
    config.linear_eval.learning_rate = 5.0  # GENSCL
    config.linear_eval.momentum = 0.9  # GENSCL
    config.linear_eval.weight_decay = 0.0  # GENSCL
    config.linear_eval.warmup_epochs = 5.0  # GENSCL
    config.linear_eval.decay_epochs = (60, 75, 90)  # GENSCL: lr x0.2 at each
    config.linear_eval.decay_factor = 0.2  # GENSCL
    config.linear_eval.augment = "crop_flip"  # GENSCL: random resized crop + flip; test images resize + centre crop
    config.linear_eval.crop_scale = (0.08, 1.0)  # our choice: torchvision's RandomResizedCrop default, as before

    config.checkpoint_every_steps = 2000  # our choice: ~6.4 epochs (313 steps per epoch)
    config.log_every_steps = 100  # our choice
    config.eval_batch_size = 1024  # our choice: throughput only
    config.eval_every_steps = 2000  # our choice: kNN and the online probe's test top-1 with every checkpoint
    # Our choice: a 100k-image kNN bank (0.8 GB of float32 features on every device instead of 10 GB for the whole
    # split); tfds writes ImageNet's training split in a shuffled order, so its first 100k images span the classes.
    config.knn.max_train_examples = 100_000
    if arg.gpu8:
        # Our choice: batch 4096 on one node of 8 GPUs (512 images each). The encoders run in micro-batches of 32
        # images per GPU (256 in all; BatchNorm normalises each micro-batch, i.e. 64 views, across the 8 GPUs), the
        # trained one recomputed in the backward pass; the loss still spans all 8192 views and the queue, in
        # 1024-row blocks. README "Fits on" gives the plans behind it and the micro-batch (a multiple of 8 dividing
        # 4096) and remat for other GPU memories: a larger micro-batch where memory allows, for speed.
        config.micro_batch_size = 256
        config.loss_block_size = 1024  # our choice, as above: the [rows, 73728] loss matrices a block at a time
    if arg.runlocal:
        recipes.apply_runlocal(config)
        config.dataset = "synthetic"
    return config
