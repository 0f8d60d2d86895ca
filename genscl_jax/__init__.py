"""genscl_jax: Generalized Supervised Contrastive Learning (GenSCL) in JAX/Flax.

Importing the package has no side effects: TensorFlow is imported lazily by the input pipeline only, and
`genscl_jax.load_encoder` (workdirs.trained_network.load_encoder) imports JAX, Flax and orbax on first access.
`from genscl_jax import losses, mixing` gives the pure maths (genscl_jax.objectives), which never imports
TensorFlow either.
"""

__version__ = "0.1.0"


def __getattr__(name):
    """Module-level attributes resolved on first use (PEP 562), so `import genscl_jax` stays cheap."""
    if name == "load_encoder":
        from genscl_jax.workdirs.trained_network import load_encoder

        return load_encoder
    if name == "losses":
        from genscl_jax.objectives import losses

        return losses
    if name == "mixing":
        from genscl_jax.objectives import mixing

        return mixing
    raise AttributeError(f"module 'genscl_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "load_encoder", "losses", "mixing"])
