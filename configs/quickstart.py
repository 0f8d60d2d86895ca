"""The embedded default: GenSCL on offline Fashion-MNIST, then linear evaluation, on a laptop CPU in minutes.

    python -m genscl_jax.main --config configs/quickstart.py --workdir runs/quickstart

Reads the original Fashion-MNIST files from the Debian/Ubuntu package dataset-fashion-mnist (nothing is
downloaded). A small ResNet-18 with the CIFAR stem, SupCon-style labels with Mixup on, then a linear classifier on
precomputed frozen features. Prints and writes the test top-1 to runs/quickstart/summary.json.
"""

from genscl_jax import config_defaults


def get_config(arg: str = ""):
    config = config_defaults.base_config()
    config.mode = "pretrain_and_eval"
    config.dataset = "fashion_mnist"
    config.image_size = 32
    config.channels = 1
    config.model = "resnet18"
    config.stem = "cifar"
    config.width_multiplier = 0.25
    config.head.hidden_dim = 128
    config.head.output_dim = 64
    config.augment = "crop_flip"
    config.batch_size = 256
    config.num_epochs = 1
    config.num_train_steps = 0
    config.optimizer = "sgd"
    config.learning_rate = 0.3
    config.weight_decay = 1e-4
    config.warmup_epochs = 0.1
    config.warmup_start_lr = 0.01
    config.temperature = 0.1
    config.mix.kind = "none"
    config.checkpoint_every_steps = 100
    config.log_every_steps = 20
    config.eval_batch_size = 500
    config.linear_eval.augment = "none"
    config.linear_eval.precompute_features = True
    config.linear_eval.batch_size = 256
    config.linear_eval.num_epochs = 30
    config.linear_eval.learning_rate = 1.0
    config.linear_eval.warmup_epochs = 1.0
    config.linear_eval.decay_epochs = (20, 25)
    if arg == "runlocal":
        config_defaults.apply_runlocal(config)
    return config
