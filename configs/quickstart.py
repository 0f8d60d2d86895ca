"""The embedded default: GenSCL on offline Fashion-MNIST, then linear evaluation, on a laptop CPU in minutes.

    python -m genscl_jax.main --config configs/quickstart.py --workdir runs/quickstart

Reads the original Fashion-MNIST files from the Debian/Ubuntu package dataset-fashion-mnist (nothing is
downloaded). A ResNet-10 at 1/8 width with the CIFAR stem, trained with the GenSCL loss on one-hot labels (SupCon)
and AdamW, then a linear classifier on precomputed frozen features. On a CPU the convolutions run in Eigen
(config.cpu_convolutions="eigen", the default; BENCHMARKS.md section 1.3 has the speed-up).
Prints and writes the test top-1 to runs/quickstart/summary.json.
"""

from genscl_jax.config import defaults, recipes


def get_config(arg: str = ""):
    arg = recipes.parse_arg(arg, runlocal=False)
    config = defaults.base_config()
    config.mode = "pretrain_and_eval"
    config.dataset = "fashion_mnist"
    config.image_size = 28  # native Fashion-MNIST size; the CIFAR stem keeps it
    config.channels = 0  # the dataset's own: 1 for Fashion-MNIST, and an RGB image folder (README) works as is
    config.model = "resnet10"
    config.stem = "cifar"
    config.width_multiplier = 0.125
    config.head.hidden_dim = 128
    config.head.output_dim = 64
    config.augment = "none"  # labels carry the signal here; crops cost accuracy at this tiny budget
    config.batch_size = 128
    config.num_epochs = 1.0
    config.num_train_steps = 600
    config.optimizer = "adamw"  # converges in far fewer steps than SGD, which is what a CPU budget needs
    config.learning_rate = 0.003
    config.weight_decay = 0.05
    config.warmup_epochs = 0.05
    config.warmup_start_lr = 0.0
    config.temperature = 0.1
    config.mix.kind = "none"
    config.checkpoint_every_steps = 100
    config.log_every_steps = 20
    config.eval_batch_size = 500
    # kNN and the online probe's test top-1 at steps 200, 400 and 600; the kNN bank is 10k of the 60k training
    # images, which costs a fifth of the whole split (README, "Watching a run").
    config.eval_every_steps = 200
    config.knn.max_train_examples = 10_000
    config.linear_eval.augment = "none"
    config.linear_eval.precompute_features = True
    config.linear_eval.batch_size = 256
    config.linear_eval.num_epochs = 30
    config.linear_eval.learning_rate = 5.0  # the paper's linear-eval lr
    config.linear_eval.warmup_epochs = 1.0
    config.linear_eval.decay_epochs = (20, 25)
    if arg.runlocal:
        recipes.apply_runlocal(config)
    return config
