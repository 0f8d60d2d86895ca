"""The online linear probe: a linear classifier trained beside pretraining, in the same compiled step, on the
stop-gradient pooled encoder features of the step's views and their ground-truth labels (after mixing: a
soft-label cross-entropy), as solo-learn's online classifier. Its parameters and optimizer state are the train
state's `probe` field, so they are checkpointed and resumed with it. It never reaches the encoder's gradients.

Its training top-1 (against each view's dominant class) is a step metric; its test top-1 comes from the periodic
evaluation (pretrain_eval.py), on eval-mode features of the test split.

No TensorFlow and no config library: the benchmark builds the step that uses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from genscl_jax import models
from genscl_jax.objectives import diagnostics, losses
from genscl_jax.training import optimizers


@dataclasses.dataclass(frozen=True)
class OnlineProbe:
    num_classes: int
    feature_dim: int
    tx: optax.GradientTransformation

    @property
    def classifier(self) -> models.LinearClassifier:
        return models.LinearClassifier(num_classes=self.num_classes)

    def init(self, key: jax.Array) -> dict[str, Any]:
        """The probe's part of the train state: {"params", "opt_state"}."""
        params = self.classifier.init(key, jnp.zeros((1, self.feature_dim), jnp.float32))["params"]
        return {"params": params, "opt_state": self.tx.init(params)}

    def logits(self, params: Any, features: jax.Array) -> jax.Array:
        return self.classifier.apply({"params": params}, features)

    def update(self, probe_state: dict[str, Any], features: jax.Array, targets: jax.Array):
        """One optimizer step on `features` [N, F] against label distributions `targets` [N, C]; returns the new
        probe state and {"probe_loss", "probe_train_top1"} (top-1 against each row's dominant class)."""
        features = jax.lax.stop_gradient(features).astype(jnp.float32)

        def loss_fn(params):
            logits = self.logits(params, features)
            return losses.soft_cross_entropy(logits, targets), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(probe_state["params"])
        updates, opt_state = self.tx.update(grads, probe_state["opt_state"], probe_state["params"])
        params = optax.apply_updates(probe_state["params"], updates)
        top1 = diagnostics.dominant_class_agreement(logits, targets)
        return {"params": params, "opt_state": opt_state}, {"probe_loss": loss, "probe_train_top1": top1}


def from_config(config: Any, num_classes: int) -> OnlineProbe | None:
    """config.online_probe's probe on the pooled features of config.model, or None when it is switched off.
    A constant learning rate: the features it reads keep changing, so it must keep adapting to the end."""
    settings = config.online_probe
    if not settings.enabled:
        return None
    tx = optimizers.create_optimizer(name=settings.optimizer, learning_rate=settings.learning_rate,
                                     momentum=settings.momentum, nesterov=False,
                                     weight_decay=settings.weight_decay)
    return OnlineProbe(num_classes=num_classes, feature_dim=models.feature_dim(config.model, config.width_multiplier),
                       tx=tx)
