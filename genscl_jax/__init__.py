"""genscl_jax: Generalized Supervised Contrastive Learning (GenSCL) in JAX/Flax.

Importing the package has no side effects: TensorFlow is imported lazily by the input pipeline only.
"""

__version__ = "0.1.0"
