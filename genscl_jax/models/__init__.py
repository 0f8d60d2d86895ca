"""Model zoo: ResNet encoders, projection / classifier heads and the contrastive wrapper; the builder that makes
the networks a config asks for (model_builder), and PyTorch weight conversion (torch_conversion).

It imports no other part of genscl_jax: flax and jax only (torch only inside torch_conversion, lazily)."""

from genscl_jax.models.batch_norm import BatchNormGroups, GhostBatchNorm
from genscl_jax.models.contrastive import ContrastiveModel
from genscl_jax.models.heads import HEAD_KINDS, LinearClassifier, ProjectionHead, l2_normalize
from genscl_jax.models.resnet import (
    MODEL_NAMES,
    REMAT,
    STEMS,
    BasicBlock,
    BottleneckBlock,
    ResNet,
    create_resnet,
    feature_dim,
    max_pool_3x3_s2,
    stage_widths,
)

__all__ = [
    "MODEL_NAMES",
    "REMAT",
    "STEMS",
    "HEAD_KINDS",
    "BasicBlock",
    "BatchNormGroups",
    "BottleneckBlock",
    "ContrastiveModel",
    "GhostBatchNorm",
    "LinearClassifier",
    "ProjectionHead",
    "ResNet",
    "create_resnet",
    "feature_dim",
    "l2_normalize",
    "max_pool_3x3_s2",
    "stage_widths",
]
