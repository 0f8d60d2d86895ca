"""Pretraining's periodic evaluation, every config.eval_every_steps and at the end: the kNN vote's and the online
probe's test top-1 / top-5, from one eval-mode pass of the encoder over the test split, and the best of each so far.

- kNN (config.knn): InstDisc's weighted vote (knn.py) over a memory bank of training features. The bank holds at
  most config.knn.max_train_examples examples of the training split (0: all of it), a class-balanced or evenly
  spread sample (DataSource.bank_batches);
  `knn_bank_size` says how many it held, so a bounded bank's accuracy reads as what it is.
- Online probe (config.online_probe): its classifier, trained inside the step, on the test features.

Metrics: knn_top1, knn_top5, knn_bank_size, probe_top1, probe_top5, and knn_best_top1 ... probe_best_top5. The
linear evaluation of pretrain_and_eval stays the run's authoritative number; these show the way there.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax.sharding import Mesh

from genscl_jax import data, models
from genscl_jax.data import device_preprocess
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.trainers import knn
from genscl_jax.trainers.online_probe import OnlineProbe
from genscl_jax.training import metrics


class PretrainEvaluator:
    """The Trainer.periodic_eval hook (state, step) -> metrics, with `resume` for the bests."""

    def __init__(self, config: Any, mesh: Mesh, model: models.ContrastiveModel, source: data.DataSource,
                 probe: OnlineProbe | None):
        self.config, self.mesh, self.source, self.probe = config, mesh, source, probe
        self.with_knn = config.knn.enabled
        self.best = metrics.BestSoFar()
        replicated = parallel.replicated(mesh)
        options = compile_options.model_jit_options(config, parallel.mesh_platform(mesh))
        preprocessing = source.eval_preprocessing()

        def encode(state, images):  # uint8 views from the host: normalised here, on the device
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            inputs = device_preprocess.normalize(images, preprocessing)
            return model.apply(variables, inputs, train=False, method=models.ContrastiveModel.encode)

        # Gathered (replicated) outputs: the bank is needed whole by every query. (Compiler options are only allowed
        # on top-level jits, so test_counts calls the plain `encode`.)
        self._bank_features = jax.jit(lambda state, images: models.l2_normalize(encode(state, images)),
                                      out_shardings=replicated, **options)

        @functools.partial(jax.jit, out_shardings=replicated, **options)
        def test_counts(state, bank, batch):
            features, counts = encode(state, batch["image"]), {}
            if bank is not None:
                scores = knn.neighbour_class_scores(models.l2_normalize(features), *bank,
                                                    num_classes=source.info.num_classes, k=config.knn.k,
                                                    temperature=config.knn.temperature)
                counts["knn"] = metrics.accuracy_counts(scores, batch["label"], batch["mask"])
            if probe is not None:
                logits = probe.logits(state.probe["params"], features)
                counts["probe"] = metrics.accuracy_counts(logits, batch["label"], batch["mask"])
            return counts

        self._test_counts = test_counts

    def __call__(self, state: Any, step: int) -> dict[str, float]:
        del step
        bank, results = self._memory_bank(state) if self.with_knn else None, {}
        test = self.source.eval_batches(self.mesh, batch_size=self.config.eval_batch_size, split="test")
        # {"knn": counts, "probe": counts}, summed over the test batches (an empty split gives no metrics).
        totals = metrics.sum_counts(self._test_counts(state, bank, batch) for batch in test)
        for name, counts in totals.items():
            if isinstance(counts, dict):
                results.update(metrics.top1_top5(counts, prefix=f"{name}_"))
        if bank is not None:
            results["knn_bank_size"] = int(jax.device_get(bank[2].sum()))
        return self.best.update(results)

    def _memory_bank(self, state):
        train = self.source.bank_batches(self.mesh, batch_size=self.config.eval_batch_size,
                                         max_examples=self.config.knn.max_train_examples)
        return knn.build_memory_bank(state, self._bank_features, train, self.config.knn.max_train_examples)

    def resume(self, saved_metrics: dict[str, float]) -> None:
        self.best.resume(saved_metrics)


def make_evaluator(config: Any, mesh: Mesh, model: models.ContrastiveModel, source: data.DataSource,
                   probe: OnlineProbe | None) -> PretrainEvaluator | None:
    """The evaluation hook, or None when neither the kNN nor the probe is on."""
    if not config.knn.enabled and probe is None:
        return None
    return PretrainEvaluator(config, mesh, model, source, probe)
