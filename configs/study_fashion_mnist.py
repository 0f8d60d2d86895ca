"""The evidence study (genscl_jax/tools/study.py): CE, SupCon, GenSCL + Mixup/CutMix and + KD at one equal budget.

    python -m genscl_jax.study --config configs/study_fashion_mnist.py --workdir runs/study

`get_config` is the run recipe every method shares (the quickstart's network and optimizer, with the paper's
crop + flip views); `get_study` is the method table the study module reads: what each method changes, the seeds
and the budget. Each run is `python -m genscl_jax.main --config configs/study_fashion_mnist.py --config.KEY=VALUE
...`, so results.json records a command that reproduces it. `:tiny` shrinks everything to a seconds-long smoke
test on synthetic data (tests/test_study.py); `:runlocal` is every recipe's one-minute local version.
"""

from configs import quickstart
from genscl_jax.config import recipes

# Pretraining steps of batch 128 for every method (CE sees the same source images, one view each): 0.85 epochs
# of Fashion-MNIST, sized so 4 methods x 3 seeds and the longer check fit in about 75 minutes on 2 shared CPU
# cores (RESULTS.md).
STEPS = 400


def _arg(arg):
    return recipes.parse_arg(arg, tiny=False, runlocal=False)


def get_config(arg: str = ""):
    arg = _arg(arg)
    config = quickstart.get_config()  # the quickstart's network, optimizer and probe; what differs follows
    # The paper's views are random resized crops (scale 0.2-1) + flips + colour jitter; colour means little on
    # one grayscale channel, so every method (CE included) trains on crop + flip.
    config.augment = "crop_flip"
    config.num_train_steps = STEPS
    config.mix.alpha = 1.0
    config.checkpoint_every_steps = 200
    # The same probe for every method: a linear classifier on precomputed frozen features, evaluated every epoch.
    config.linear_eval.num_epochs = 15  # half the quickstart's: 12 probes have to fit in the budget too
    config.linear_eval.decay_epochs = (10, 13)
    if arg.tiny:
        _shrink(config)
    if arg.runlocal:
        recipes.apply_runlocal(config)
    return config


def _shrink(config):
    """The tiny config (recipes.shrink_to_tiny) on three channels, two steps and a two-epoch probe."""
    recipes.shrink_to_tiny(config)
    config.channels = 3
    config.num_train_steps = 2
    config.linear_eval.num_epochs = 2
    config.linear_eval.decay_epochs = (1,)


def get_study(arg: str = ""):
    """The method table: name -> the config keys it changes. "{ce}" is the workdir of the CE run of the same seed
    (the teacher; its linear probe reads it too). Methods run in this order, so a method's CE run is done first."""
    arg = _arg(arg)
    steps = 2 if arg.tiny else STEPS
    mix = {"mix.kind": "mixup_cutmix"}
    return {
        "methods": {
            "ce": {"mode": "supervised"},
            "supcon": {},
            "genscl_mix": mix,
            "genscl_mix_kd": {**mix, "kd.alpha": 1.0, "kd.teacher": "{ce}"},
        },
        # The CE run's features get the same linear probe as the contrastive encoders.
        "ce_probe": {"mode": "linear_eval", "linear_eval.pretrained_workdir": "{ce}"},
        "seeds": [0] if arg.tiny else [0, 1, 2],
        # After the main table: does a longer budget change the ordering? One seed, twice and four times the steps.
        "longer": {"methods": ["supcon", "genscl_mix"], "seeds": [0], "num_train_steps": [2 * steps, 4 * steps]},
    }
