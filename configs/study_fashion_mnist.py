"""The evidence study (genscl_jax/tools/study.py): when do soft labels pay off against SupCon and CE at one budget?

    python -m genscl_jax.study --config configs/study_fashion_mnist.py --workdir runs/study

`get_config` is the run recipe every method shares (the quickstart's network and optimizer, with the paper's
crop + flip views); `get_study` is the method table the study module reads: what each method changes, the seeds,
the budget, the strong teacher and the re-probes. Each run is `python -m genscl_jax.main --config
configs/study_fashion_mnist.py --config.KEY=VALUE ...`, so results.json records a command that reproduces it.
`:tiny` shrinks everything to a seconds-long smoke test on synthetic data (tests/test_study.py); `:runlocal` is
every recipe's one-minute local version; `:longer` adds the longer-budget check (2x and 4x the steps, seed 0).
`:scarce` is the third round (200 labelled images per class, many epochs; see SCARCE_EPOCHS) with its epoch curve;
`:scarce,tiny` its smoke test.
"""

from configs import quickstart
from genscl_jax.config import recipes

# Pretraining steps of batch 128 for every method (CE sees the same source images, one view each): 0.85 epochs
# of Fashion-MNIST. With the strong teacher and the re-probes, 8 methods x 3 seeds take about 90 minutes on 2
# shared CPU cores (RESULTS.md); the longer-budget check (`:longer`, 20 more minutes) is off by default.
STEPS = 400
# The strong KD teacher: one CE run with 8x the students' steps (6.8 epochs), shared by every seed, so it is clearly
# better than every student; the same-seed CE run (the "genscl_mix_kd" row) is the weak teacher.
TEACHER_BUDGET = 8
# BatchNorm recalibration before the probe: 200 clean training batches of 128 (25,600 images, 0.43 epoch).
RECALIBRATION_BATCHES = 200


# The third round, `:scarce` (issue 32): the paper's regime of many epochs over data an encoder can memorise. Every
# method pretrains on the same 200 labelled images of each class (config.train_subset; 2,000 in all, one subset
# seed for every run) for SCARCE_EPOCHS epochs, and the linear probe trains on those 2,000 images only and is tested
# on the full 10,000-image test set. RESULTS.md says how the number of epochs was chosen (a pilot).
SCARCE_PER_CLASS = 200
SCARCE_EPOCHS = 24
SCARCE_TEACHER_BUDGET = 3  # the teacher: CE on the same subset for 3x the epochs
# The epoch curve: SupCon and GenSCL + Mixup/CutMix, seed 0, at these multiples of SCARCE_EPOCHS (1x is the table).
SCARCE_CURVE = (0.25, 0.5, 2.0)


def _arg(arg):
    return recipes.parse_arg(arg, tiny=False, runlocal=False, longer=False, scarce=False)


def _scarce_steps(epochs: float, tiny: bool) -> int:
    """Pretraining steps of batch 128 for `epochs` passes over the 2,000-image subset (15 steps each); `:tiny`: 4
    steps for SCARCE_EPOCHS."""
    per_epoch = 4 / SCARCE_EPOCHS if tiny else SCARCE_PER_CLASS * 10 // 128
    return max(int(round(epochs * per_epoch)), 1)


def get_config(arg: str = ""):
    arg = _arg(arg)
    config = quickstart.get_config()  # the quickstart's network, optimizer and probe; what differs follows
    # The paper's views are random resized crops (scale 0.2-1) + flips + colour jitter; colour means little on
    # one grayscale channel, so every method (CE included) trains on crop + flip.
    config.augment = "crop_flip"
    config.num_train_steps = STEPS
    config.mix.alpha = 1.0
    config.checkpoint_every_steps = 200
    # Pretraining's own evaluation keeps the online probe's test top-1 (one pass over the test set); the kNN vote
    # (a 10k-image bank and the test set, twice a run) is off: the linear probe is the study's number.
    config.knn.enabled = False
    # The same probe for every method: a linear classifier on precomputed frozen features, evaluated every epoch.
    config.linear_eval.num_epochs = 15  # half the quickstart's: 21 probes have to fit in the budget too
    config.linear_eval.decay_epochs = (10, 13)
    if arg.scarce:
        config.train_subset = SCARCE_PER_CLASS
        config.num_train_steps = _scarce_steps(SCARCE_EPOCHS, tiny=False)
        # Few features to probe (2,000): more probe epochs cost little and let every probe converge.
        config.linear_eval.num_epochs = 30
        config.linear_eval.decay_epochs = (20, 25)
    if arg.tiny:
        _shrink(config)
        if arg.scarce:  # 3 synthetic images per class, and the steps that get_study's curve scales
            config.train_subset, config.num_train_steps = 3, _scarce_steps(SCARCE_EPOCHS, tiny=True)
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
    (the weak teacher; its linear probe reads it too), "{teacher}" that of the strong teacher. Methods run in this
    order, so a method's CE run is done first; each re-probe reads the encoder its method ("of") trained for the
    same seed and changes only the linear evaluation."""
    arg = _arg(arg)
    if arg.scarce:
        return _scarce_study(arg.tiny)
    steps = 2 if arg.tiny else STEPS
    mix = {"mix.kind": "mixup_cutmix"}
    strong_kd = {"kd.alpha": 1.0, "kd.teacher": "{teacher}"}
    recalibrated = {"linear_eval.recalibrate_batch_stats": 2 if arg.tiny else RECALIBRATION_BATCHES}
    return {
        "teacher": {"keys": {"mode": "supervised", "num_train_steps": TEACHER_BUDGET * steps}, "seed": 0},
        "methods": {
            "ce": {"mode": "supervised"},
            "supcon": {},
            "genscl_mix": mix,
            "genscl_mix_kd": {**mix, "kd.alpha": 1.0, "kd.teacher": "{ce}"},
            # Distillation is the paper's largest gain: the strong teacher's labels alone, then with mixing.
            "genscl_kd_strong": strong_kd,
            "genscl_mix_kd_strong": {**mix, **strong_kd},
            # Mixing every view may be too strong at a short budget: half of them, as timm-style recipes do.
            "genscl_mix_half": {**mix, "mix.prob": 0.5},
        },
        # The CE run's features get the same linear probe as the contrastive encoders.
        "ce_probe": {"mode": "linear_eval", "linear_eval.pretrained_workdir": "{ce}"},
        # Are the mixed encoders' BatchNorm statistics (of mixed views) what costs accuracy? The same encoders,
        # probed after recomputing them on clean images; SupCon too, so the comparison is like for like.
        "reprobes": {
            "supcon_bn_recalibrated": {"of": "supcon", "keys": recalibrated},
            "genscl_mix_bn_recalibrated": {"of": "genscl_mix", "keys": recalibrated},
        },
        "seeds": [0] if arg.tiny else [0, 1, 2],
        # `:longer`: does a longer budget change the ordering? One seed, twice and four times the steps.
        "longer": {"methods": ["supcon", "genscl_mix"], "seeds": [0], "num_train_steps": [2 * steps, 4 * steps]}
        if arg.longer else None,
    }


def _scarce_study(tiny: bool):
    """The third round's table: the six rows of issue 32, three seeds, and the epoch curve (phase "longer")."""
    steps = _scarce_steps(SCARCE_EPOCHS, tiny)
    mix = {"mix.kind": "mixup_cutmix"}
    kd = {"kd.alpha": 1.0, "kd.teacher": "{teacher}"}
    return {
        "teacher": {"keys": {"mode": "supervised", "num_train_steps": SCARCE_TEACHER_BUDGET * steps}, "seed": 0},
        "methods": {
            "ce": {"mode": "supervised"},
            "supcon": {},
            "genscl_mix": mix,
            "genscl_mix_half": {**mix, "mix.prob": 0.5},
            "genscl_kd_strong": kd,
            "genscl_mix_kd_strong": {**mix, **kd},
        },
        "ce_probe": {"mode": "linear_eval", "linear_eval.pretrained_workdir": "{ce}"},
        "seeds": [0] if tiny else [0, 1, 2],
        "longer": {"methods": ["supcon", "genscl_mix"], "seeds": [0],
                   # `:tiny` runs one point of the curve: its smoke test is ten runs, not fourteen.
                   "num_train_steps": [_scarce_steps(SCARCE_EPOCHS * f, tiny)
                                       for f in (SCARCE_CURVE[:1] if tiny else SCARCE_CURVE)]},
    }
