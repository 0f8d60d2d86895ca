"""genscl_jax: Generalized Supervised Contrastive Learning (GenSCL) in JAX/Flax.

Importing the package has no side effects: TensorFlow is imported lazily by the input pipeline only, and
`genscl_jax.load_encoder` (workdirs.trained_network.load_encoder) imports JAX, Flax and orbax on first access.
"""

__version__ = "0.1.0"

_LAZY = {"load_encoder": "genscl_jax.workdirs.trained_network"}


def __getattr__(name):
    """Module-level attributes resolved on first use (PEP 562), so `import genscl_jax` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genscl_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
