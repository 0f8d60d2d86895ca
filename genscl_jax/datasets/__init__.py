"""Offline TFDS builders.

Modules here subclass tfds builders, so they import tensorflow_datasets when imported. This package
therefore imports nothing eagerly: `import genscl_jax.datasets` stays free of TensorFlow, and callers
import `genscl_jax.datasets.fashion_mnist_offline` only when they actually build a dataset.
"""
